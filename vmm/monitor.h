/* The monitors of vtool run: QMP and HMP on listening unix/tcp sockets (-qmp, -monitor,
 * -chardev socket + -mon) or on stdio, and the HMP behind C-a c when the serial port
 * shares the terminal (-nographic, -serial mon:stdio).
 *
 * One thread ("monitor") polls every socket and client. As qemu's socket chardev does,
 * a listening socket serves one client at a time; others wait in the backlog until it
 * leaves. Output is queued per client (at most MON_OUT_MAX bytes; a client that reads
 * nothing while more piles up is dropped), so neither a slow client nor a burst of
 * events ever blocks the thread that emits them. Sockets are opened by monitor_start,
 * before the sandbox, -chroot and -runas take hold. */
#ifndef VTOOL_VMM_MONITOR_H
#define VTOOL_VMM_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "vmm/config.h"

#define MON_OUT_MAX (4u << 20)

/* Open every monitor's socket and start the thread; with wait=on, also wait for that
 * socket's first client (qemu's default for server sockets). */
int monitor_start(const struct vm_config *cfg, struct vt_error *err);
/* Flush what clients have not read yet (briefly), close everything, stop the thread. */
void monitor_stop(void);

/* C-a c (console.c): switch the terminal between the serial port and the HMP; returns
 * true when the HMP has it now. */
bool monitor_mux_toggle(void);
bool monitor_mux_focused(void);
void monitor_mux_input(const uint8_t *buf, size_t len);

#endif
