/* The display of `vtool run`: the command-line options that describe it (display_opts.c)
 * and the VNC server that shows the guest's screen and takes its keyboard and mouse
 * (vnc.c). The server outlives reboots: run.c starts it once, attaches each new machine
 * and stops it at the end. */
#ifndef VTOOL_VMM_UI_DISPLAY_H
#define VTOOL_VMM_UI_DISPLAY_H

#include <stdbool.h>
#include <stdint.h>

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

/* --- for the monitors (QMP/HMP), from their thread ---------------------------------- */

/* The screen of vm as it is now: width x height pixels of 0x00RRGGBB, malloc'ed (the
 * caller frees). -ENODEV when vm has no VGA. The VGA's renderer keeps state (what it
 * drew last), so one thread owns it: with a VNC server its thread draws the picture,
 * without one the caller does, under the display's lock. */
int display_snapshot(struct vm *vm, uint32_t **pixels, int *width, int *height);

/* screendump: write vm's screen to path as "ppm" (qemu's default: P6) or "png" (8-bit
 * RGB). Errors in qemu 7.2's words (ui/screendump.c). */
int display_screendump(struct vm *vm, const char *path, const char *format,
                       struct vt_error *err);

/* qemu's VncInfo (query-vnc): the server's address and its connected clients. */
#define DISPLAY_VNC_MAX_CLIENTS 32
struct display_vnc_info {
	bool enabled;
	char host[128], service[16], family[8], auth[8];
	int nr_clients;
	struct display_vnc_client {
		char host[64], service[16], family[8];
	} clients[DISPLAY_VNC_MAX_CLIENTS];
};
void display_vnc_query(struct display_vnc_info *out);

#endif
