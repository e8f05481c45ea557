/* The std VGA (qemu's -vga std, "VGA" device): PCI 1234:1111 at 00:02.0 with the
 * linear frame buffer in BAR 0, the MMIO register block in BAR 2 (EDID, the VGA ports,
 * the Bochs DISPI registers, qemu's extension registers) and Debian's
 * vgabios-stdvga.bin behind the expansion ROM BAR; the legacy ports 0x3b0-0x3df, the
 * DISPI ports 0x1ce/0x1cf and the 0xa0000-0xbffff window.
 *
 * Files: vga.c (PCI, ports, register file, frame entry), vga_mem.c (the window: planes,
 * latches, read/write modes, chain-4, odd/even), vga_vbe.c (DISPI, EDID), vga_text.c
 * and vga_gfx.c (renderers). vga_int.h is their shared state.
 *
 * A display front-end calls vga_render() from its own thread to bring a surface up to
 * date; it draws only what changed since the previous call. */
#ifndef VTOOL_VMM_HW_VGA_H
#define VTOOL_VMM_HW_VGA_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct vm;
struct vga;
struct surface;

#define VGA_ROM_DEFAULT "/usr/share/seabios/vgabios-stdvga.bin"

/* Create the device (no-op with -vga none). Found later with vm_device(vm, "vga"). */
int vga_init(struct vm *vm, struct vt_error *err);

/* Draw the guest's screen into s (resizing it to the mode's size). full: redraw
 * everything (a new surface, a new client); otherwise only what changed. */
void vga_render(struct vga *v, struct surface *s, bool full);
/* After vga_render: how long the picture stays as drawn unless the guest changes it
 * (text mode at rest: until the cursor's next blink; UINT64_MAX for a graphics mode the
 * guest can only change through trapped writes), or 0 when it must be polled (KVM's
 * dirty log of the LFB; a change not drawn yet). Until then fn(arg) is called, once and
 * from the guest's thread, at the next change. */
uint64_t vga_idle_ns(struct vga *v, void (*fn)(void *arg), void *arg);

#endif
