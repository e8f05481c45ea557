/* Inside the std VGA (hw/vga*.c only): the device state the register file (vga.c), the
 * 0xa0000 window (vga_mem.c), the Bochs VBE registers (vga_vbe.c) and the renderers
 * (vga_text.c, vga_gfx.c) share.
 *
 * VRAM layout (as on the hardware's 32-bit memory bus): plane p of plane address a is
 * the byte vram[4 * a + p], so chain-4 (mode 13h) and VBE modes see VRAM as linear
 * bytes and the LFB BAR maps it whole. Odd/even (text) mode keeps character and
 * attribute at plane address offset/2 of planes 0 and 1.
 *
 * Locking: vga->lock covers the registers, latches and DAC; vCPU threads take it for
 * every port and window access. VRAM bytes are also written by the guest through the
 * LFB (KVM maps it directly), so the renderer reads VRAM unlocked: a torn read is
 * redrawn on the next frame, because every write marks its page dirty again. */
#ifndef VTOOL_VMM_HW_VGA_INT_H
#define VTOOL_VMM_HW_VGA_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/hw/pci.h"
#include "vmm/hw/vga.h"

#define VGA_PAGE_SHIFT 12

/* Bochs VBE DISPI registers (index port 0x1ce, data 0x1cf; BAR 2 at 0x500 + 2 * index). */
enum {
	VBE_ID, VBE_XRES, VBE_YRES, VBE_BPP, VBE_ENABLE, VBE_BANK, VBE_VIRT_WIDTH,
	VBE_VIRT_HEIGHT, VBE_X_OFFSET, VBE_Y_OFFSET, VBE_NR_REGS,
	VBE_VIDEO_MEMORY_64K = VBE_NR_REGS,
};
#define VBE_ENABLED      0x01
#define VBE_GETCAPS      0x02
#define VBE_8BIT_DAC     0x20
#define VBE_LFB_ENABLED  0x40
#define VBE_NOCLEARMEM   0x80
#define VBE_MAX_XRES     16000
#define VBE_MAX_YRES     12000
#define VBE_MAX_BPP      32

/* The registers the picture depends on: copied under the lock for each frame. */
struct vga_regs {
	uint8_t misc;
	uint8_t sr[8];
	uint8_t gr[16];
	uint8_t cr[256];
	uint8_t ar[21];
	uint8_t ar_index;
	uint8_t dac_mask;
	bool dac_8bit;
	uint8_t palette[768];
	uint16_t vbe[VBE_NR_REGS];
	uint32_t vbe_line_offset, vbe_start;   /* bytes */
};

enum { VGA_MODE_BLANK, VGA_MODE_TEXT, VGA_MODE_GRAPHICS };

/* What the renderer keeps between frames (touched by the display thread only). */
struct vga_render_state {
	int mode;                  /* VGA_MODE_*, or -1: draw everything next time */
	int width, height;
	uint32_t key[16];          /* mode parameters: a change redraws the whole frame */
	uint32_t palette[256];     /* resolved colours, 0x00RRGGBB */
	uint32_t *cells;           /* text: char, attribute, cursor and blink bits last drawn */
	int nr_cells;
	int cursor_cell;           /* text: where the cursor was drawn, -1 none */
	bool cursor_on, blink_on;
	uint64_t blink_ns, verify_ns;
	uint32_t seen_regs_gen, seen_mem_gen;   /* text: nothing changed since then */
};

struct vga {
	struct vm *vm;
	pthread_mutex_t lock;
	struct pci_dev pci;
	uint8_t *vram;
	uint32_t vram_size;          /* power of two, >= 1 MiB */
	uint8_t edid[256];
	char region[16];             /* the LFB's name in the memory table */
	uint32_t lfb_addr;           /* where BAR 0 is mapped (0: not mapped) */

	struct vga_regs r;
	uint8_t sr_index, gr_index, cr_index, fcr, st01;
	bool ar_flip;
	uint8_t dac_state, dac_sub, dac_read, dac_write, dac_cache[3];
	uint32_t latch;
	uint16_t vbe_index;
	uint32_t bank_offset;

	/* Change tracking for the renderer. The window marks VRAM pages here (the LFB's are
	 * in KVM's dirty log); regs_gen counts register writes that can change the picture. */
	uint64_t *dirty;
	uint64_t *dirty_frame, *dirty_kvm;   /* the renderer's copies */
	uint32_t nr_pages;
	uint32_t regs_gen, mem_gen;  /* mem_gen counts writes through the window */
	bool font_written;           /* plane 2 written: the text font may have changed */
	/* A display asleep on an unchanging picture (vga_idle_ns): called once, from the
	 * vCPU that changes it, so the display renders without polling. */
	void (*notify)(void *arg);
	void *notify_arg;
	int notify_armed;

	struct vga_render_state rs;
};

/* A register or the window changed what the picture may show: wake a sleeping display. */
static inline void vga_changed(struct vga *v)
{
	if (__atomic_load_n(&v->notify_armed, __ATOMIC_RELAXED) &&
	    __atomic_exchange_n(&v->notify_armed, 0, __ATOMIC_ACQ_REL))
		v->notify(v->notify_arg);
}

/* vga_mem.c: the 0xa0000-0xbffff window (MMIO bus handler). */
void vga_window_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write);
/* Mark [off, off+len) of VRAM written. */
void vga_mark_dirty(struct vga *v, uint32_t off, uint32_t len);

/* vga_vbe.c: DISPI registers. */
uint16_t vga_vbe_read(struct vga *v);
void vga_vbe_write(struct vga *v, uint16_t val);
void vga_vbe_reset(struct vga *v);
/* The EDID block BAR 2 shows at offset 0 (a 1280x800 preferred mode, as qemu's). */
void vga_edid_build(uint8_t edid[256]);

/* vga_text.c / vga_gfx.c: draw a frame of the current mode (snapshot s) into surf.
 * dirty has one bit per VRAM page written since the last frame. */
struct surface;
void vga_draw_text(struct vga *v, const struct vga_regs *s, struct surface *surf,
                   bool full, uint64_t now_ns);
void vga_draw_graphics(struct vga *v, const struct vga_regs *s, const uint64_t *dirty,
                       struct surface *surf, bool full);
/* Nothing a text frame shows has changed since the last one (no frame is needed). */
bool vga_text_idle(const struct vga *v, uint64_t now);
/* In text mode at rest: ns until the next blink or verification redraw; else 0. */
uint64_t vga_text_idle_ns(const struct vga *v, uint64_t now);
/* The 16 attribute colours (text and planar modes) and the 256 DAC colours. */
void vga_palette16(const struct vga_regs *s, uint32_t out[16]);
uint32_t vga_dac_color(const struct vga_regs *s, unsigned index);

#endif
