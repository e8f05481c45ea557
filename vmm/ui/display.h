/* The display of `vtool run`: the command-line options that describe it (display_opts.c)
 * and the VNC server that shows the guest's screen and takes its keyboard and mouse
 * (vnc.c). The server outlives reboots: run.c starts it once, attaches each new machine
 * and stops it at the end. */
#ifndef VTOOL_VMM_UI_DISPLAY_H
#define VTOOL_VMM_UI_DISPLAY_H

#include <stdbool.h>

#include "util/error.h"
#include "vmm/config.h"

struct vm;

/* Defaults: -vga std, 16 MiB of VRAM, no VNC. */
void display_config_init(struct vm_display *d);
/* -vnc, -display, -vga, -k, -object (opt is the option as typed, arg its argument). */
int display_option(struct vm_config *cfg, const char *opt, char *arg, struct vt_error *err);
/* -global DRIVER.PROP=VALUE: 1 if it is not a display property, 0 if taken, -EINVAL. */
int display_global(struct vm_config *cfg, const char *arg, struct vt_error *err);
/* Resolve secrets, apply -nodefaults. */
int display_config_check(struct vm_config *cfg, struct vt_error *err);

/* Listen (no-op without a VNC display) and start the server's thread. Prints where it
 * listens, and a warning when that is beyond this host without a password. A port in
 * use is an error naming it. */
int display_start(const struct vm_config *cfg, struct vt_error *err);
/* Show this machine (NULL: none, before it is destroyed). Safe to call without a
 * display. */
void display_attach(struct vm *vm);
void display_stop(void);

#endif
