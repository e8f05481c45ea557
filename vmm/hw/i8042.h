/* The i8042 keyboard controller's input API: what a display front-end (vmm/ui/vnc.c)
 * calls to type and point. The front-end never sees the controller's state; these
 * functions take its lock, queue bytes on the right PS/2 device and raise IRQ 1 / 12 as
 * the guest configured. Safe from any thread. Find the controller with
 * vm_device(vm, "i8042"). */
#ifndef VTOOL_VMM_HW_I8042_H
#define VTOOL_VMM_HW_I8042_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct i8042;

/* One key event, as the set-2 bytes a PS/2 keyboard sends (E0 prefixes, F0 break
 * prefix). The controller translates to set 1 when the guest set its XLATE bit. Returns
 * false when the event was dropped (keyboard disabled by the guest, or its queue full). */
bool i8042_key(struct i8042 *k, const uint8_t *set2, size_t len);

/* Relative pointer motion (x right, y down, in device counts), wheel steps (+ towards
 * the user) and buttons (bit 0 left, bit 1 right, bit 2 middle). Dropped while the
 * guest has not enabled the mouse. */
void i8042_mouse(struct i8042 *k, int dx, int dy, int dz, uint8_t buttons);

#endif
