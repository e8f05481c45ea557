/* The terminal side of `-serial stdio` / `-nographic`: raw mode while the VM runs (always
 * restored, on every exit path), a reader thread that hands typed bytes to the guest's
 * serial port, and qemu's Ctrl-A escapes with -nographic (Ctrl-A x quits, Ctrl-A h helps,
 * Ctrl-A Ctrl-A sends a Ctrl-A). */
#ifndef VTOOL_VMM_CONSOLE_H
#define VTOOL_VMM_CONSOLE_H

#include <stdbool.h>

struct vm;

/* Put the terminal in raw mode (if stdin is one) and start reading. escapes: handle
 * Ctrl-A sequences (else Ctrl-C stays a signal, as with qemu's -serial stdio). */
int console_start(bool escapes);
/* Route input to this machine (NULL while none runs, e.g. across a reboot). */
void console_attach(struct vm *vm);
/* Stop reading and restore the terminal. Idempotent; safe to call at exit. */
void console_stop(void);
/* Restore the terminal only: async-signal-safe, for fatal signal handlers. */
void console_restore_terminal(void);

#endif
