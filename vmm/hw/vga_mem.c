/* The VGA memory window 0xa0000-0xbffff as the CPU sees it: the graphics controller's
 * memory map select, chain-4 (mode 13h), odd/even (text modes), and the planar path
 * with its latches, read modes 0/1 and write modes 0-3 (rotate, set/reset, logical
 * operation, bit mask, map mask). With DISPI enabled the 64 KiB window is banked.
 * Every plane address is masked to VRAM: no guest value indexes outside it. */
#include <string.h>

#include "vmm/hw/vga_int.h"

/* Byte b replicated into the planes whose bit is set in the 4-bit mask m. */
static uint32_t expand_mask(unsigned m)
{
	return (m & 1 ? 0xffu : 0) | (m & 2 ? 0xff00u : 0) | (m & 4 ? 0xff0000u : 0) |
	       (m & 8 ? 0xff000000u : 0);
}

void vga_mark_dirty(struct vga *v, uint32_t off, uint32_t len)
{
	if (!len || off >= v->vram_size)
		return;
	__atomic_fetch_add(&v->mem_gen, 1, __ATOMIC_RELAXED);
	uint32_t first = off >> VGA_PAGE_SHIFT;
	uint32_t last = (off + len - 1) >> VGA_PAGE_SHIFT;
	for (uint32_t p = first; p <= last && p < v->nr_pages; p++)
		__atomic_fetch_or(&v->dirty[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
	vga_changed(v);
}

/* The window offset (0..0x1ffff) to a VRAM offset under the memory map select;
 * false when the map does not decode it. */
static bool window_offset(const struct vga *v, uint32_t addr, uint32_t *out)
{
	switch ((v->r.gr[6] >> 2) & 3) {
	case 0:
		break;
	case 1:
		if (addr >= 0x10000)
			return false;
		addr += v->bank_offset;
		break;
	case 2:
		if (addr < 0x10000 || addr >= 0x18000)
			return false;
		addr -= 0x10000;
		break;
	default:
		if (addr < 0x18000)
			return false;
		addr -= 0x18000;
		break;
	}
	*out = addr;
	return true;
}

static uint32_t load32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static void store32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint8_t window_read(struct vga *v, uint32_t addr)
{
	uint32_t plane_mask = v->vram_size / 4 - 1;

	if (!window_offset(v, addr, &addr))
		return 0xff;
	if (v->r.sr[4] & 0x08)                        /* chain-4: linear bytes */
		return v->vram[addr & (v->vram_size - 1)];
	if (v->r.gr[5] & 0x10) {                      /* odd/even */
		unsigned plane = (v->r.gr[4] & 2) | (addr & 1);
		return v->vram[(((addr >> 1) & plane_mask) << 2) | plane];
	}
	/* Planar: every read loads the latches from all four planes. */
	v->latch = load32(&v->vram[(addr & plane_mask) << 2]);
	if (!(v->r.gr[5] & 0x08))                     /* read mode 0: one plane */
		return (uint8_t)(v->latch >> (8 * (v->r.gr[4] & 3)));
	/* read mode 1: bits whose (don't-care-masked) colour equals the compare colour */
	uint32_t diff = (v->latch ^ expand_mask(v->r.gr[2])) & expand_mask(v->r.gr[7]);
	diff |= diff >> 16;
	diff |= diff >> 8;
	return (uint8_t)~diff;
}

static void window_write(struct vga *v, uint32_t addr, uint8_t val)
{
	uint32_t plane_mask = v->vram_size / 4 - 1;
	uint8_t map_mask = v->r.sr[2];

	if (!window_offset(v, addr, &addr))
		return;
	if (v->r.sr[4] & 0x08) {                      /* chain-4 */
		unsigned plane = addr & 3;
		if (map_mask & (1u << plane)) {
			addr &= v->vram_size - 1;
			v->vram[addr] = val;
			vga_mark_dirty(v, addr, 1);
			if (plane == 2)
				v->font_written = true;
		}
		return;
	}
	if (v->r.gr[5] & 0x10) {                      /* odd/even */
		unsigned plane = (v->r.gr[4] & 2) | (addr & 1);
		if (map_mask & (1u << plane)) {
			uint32_t off = (((addr >> 1) & plane_mask) << 2) | plane;
			v->vram[off] = val;
			vga_mark_dirty(v, off, 1);
			if (plane == 2)
				v->font_written = true;
		}
		return;
	}
	uint32_t data, bit_mask;
	unsigned rot = v->r.gr[3] & 7;
	switch (v->r.gr[5] & 3) {
	default:
	case 0: {
		uint8_t b = (uint8_t)((val >> rot) | (val << (8 - rot)));
		uint32_t sr_enable = expand_mask(v->r.gr[1]);
		data = b * 0x01010101u;
		data = (data & ~sr_enable) | (expand_mask(v->r.gr[0]) & sr_enable);
		bit_mask = v->r.gr[8];
		break;
	}
	case 1: /* the latches, unchanged */
		data = v->latch;
		bit_mask = 0xff;
		goto write;
	case 2:
		data = expand_mask(val & 0x0f);
		bit_mask = v->r.gr[8];
		break;
	case 3: {
		uint8_t b = (uint8_t)((val >> rot) | (val << (8 - rot)));
		bit_mask = v->r.gr[8] & b;
		data = expand_mask(v->r.gr[0]);
		break;
	}
	}
	switch (v->r.gr[3] >> 3) {
	case 1: data &= v->latch; break;
	case 2: data |= v->latch; break;
	case 3: data ^= v->latch; break;
	default: break;
	}
	bit_mask *= 0x01010101u;
	data = (data & bit_mask) | (v->latch & ~bit_mask);
write:;
	uint32_t off = (addr & plane_mask) << 2;
	uint32_t wm = expand_mask(map_mask);
	store32(&v->vram[off], (load32(&v->vram[off]) & ~wm) | (data & wm));
	vga_mark_dirty(v, off, 4);
	if (map_mask & 4)
		v->font_written = true;
}

void vga_window_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write)
{
	struct vga *v = opaque;

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < len; i++) {
		uint32_t addr = (uint32_t)(offset + i) & 0x1ffff;
		if (is_write)
			window_write(v, addr, data[i]);
		else
			data[i] = window_read(v, addr);
	}
	pthread_mutex_unlock(&v->lock);
}
