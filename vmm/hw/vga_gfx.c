/* VGA and VBE graphics modes: 16-colour planar (mode 12h and friends), CGA 4-colour
 * (the shift register's interleave mode), 256-colour chain-4 (mode 13h) with its pixel
 * doubling, and DISPI modes of 4 (planar), 8 (DAC), 15, 16, 24 and 32 bits per pixel,
 * converted to 0x00RRGGBB. A line is drawn only when a VRAM page it reads was written
 * (the window's marks and KVM's dirty log for the LFB) or the mode, palette or scan-out
 * parameters changed; runs of drawn lines go to the client as one rectangle. */
#include <string.h>

#include "vmm/hw/vga_int.h"
#include "vmm/ui/surface.h"

#define MAX_PIXELS (1u << 26)

enum fmt { F_PLANAR4, F_PLANAR4_D2, F_CGA2, F_CGA2_D2, F_8_D2, F_8, F_15, F_16, F_24, F_32 };

static bool page_dirty(const uint64_t *dirty, uint32_t from, uint32_t to)
{
	for (uint32_t p = from >> VGA_PAGE_SHIFT; p <= to >> VGA_PAGE_SHIFT; p++)
		if (dirty[p / 64] & (1ull << (p % 64)))
			return true;
	return false;
}

static uint32_t expand5(uint32_t v) { return (v << 3) | (v >> 2); }
static uint32_t expand6(uint32_t v) { return (v << 2) | (v >> 4); }

/* One scan line of `width` source pixels from VRAM offset addr (masked to VRAM). */
static void draw_line(const struct vga *v, enum fmt f, const uint32_t *pal, uint8_t plane_en,
                      uint32_t addr, int width, uint32_t *d)
{
	const uint8_t *m = v->vram;
	uint32_t mask = v->vram_size - 1;

	switch (f) {
	case F_PLANAR4: case F_PLANAR4_D2:
		for (int x = 0; x < width; x += 8, addr += 4) {
			uint8_t p[4];
			for (int k = 0; k < 4; k++)
				p[k] = m[(addr + (uint32_t)k) & mask];
			for (int b = 7; b >= 0; b--) {
				unsigned c = ((p[0] >> b) & 1) | ((p[1] >> b) & 1) << 1 |
				             ((p[2] >> b) & 1) << 2 | ((p[3] >> b) & 1) << 3;
				uint32_t px = pal[c & plane_en];
				*d++ = px;
				if (f == F_PLANAR4_D2)
					*d++ = px;
			}
		}
		break;
	case F_CGA2: case F_CGA2_D2:
		for (int x = 0; x < width; x += 8, addr += 4) {
			for (int k = 0; k < 2; k++) {
				uint8_t b = m[(addr + (uint32_t)k) & mask];
				for (int s = 6; s >= 0; s -= 2) {
					uint32_t px = pal[(b >> s) & 3 & plane_en];
					*d++ = px;
					if (f == F_CGA2_D2)
						*d++ = px;
				}
			}
		}
		break;
	case F_8_D2:
		for (int x = 0; x < width; x += 2, addr++) {
			uint32_t px = pal[m[addr & mask]];
			*d++ = px;
			*d++ = px;
		}
		break;
	case F_8:
		for (int x = 0; x < width; x++)
			*d++ = pal[m[addr++ & mask]];
		break;
	case F_15: case F_16:
		for (int x = 0; x < width; x++, addr += 2) {
			uint32_t p = m[addr & mask] | m[(addr + 1) & mask] << 8;
			if (f == F_15)
				*d++ = expand5(p >> 10 & 31) << 16 | expand5(p >> 5 & 31) << 8 | expand5(p & 31);
			else
				*d++ = expand5(p >> 11) << 16 | expand6(p >> 5 & 63) << 8 | expand5(p & 31);
		}
		break;
	case F_24:
		for (int x = 0; x < width; x++, addr += 3)
			*d++ = (uint32_t)m[(addr + 2) & mask] << 16 | (uint32_t)m[(addr + 1) & mask] << 8 |
			       m[addr & mask];
		break;
	case F_32:
		if (addr + (uint32_t)width * 4 <= v->vram_size) {
			for (int x = 0; x < width; x++, addr += 4) {
				uint32_t p;
				memcpy(&p, m + addr, 4);
				*d++ = p & 0xffffff;
			}
		} else {
			for (int x = 0; x < width; x++, addr += 4)
				*d++ = (uint32_t)m[(addr + 2) & mask] << 16 |
				       (uint32_t)m[(addr + 1) & mask] << 8 | m[addr & mask];
		}
		break;
	}
}

void vga_draw_graphics(struct vga *v, const struct vga_regs *s, const uint64_t *dirty,
                       struct surface *surf, bool full)
{
	struct vga_render_state *rs = &v->rs;
	bool vbe = s->vbe[VBE_ENABLE] & VBE_ENABLED;
	unsigned shift = (s->gr[5] >> 5) & 3;
	int width, height, disp_width, multi_scan, bits;
	uint32_t start, line_offset;
	int line_compare;
	enum fmt f;
	uint32_t pal[256];

	if (vbe) {
		width = disp_width = s->vbe[VBE_XRES];
		height = s->vbe[VBE_YRES];
		line_offset = s->vbe_line_offset;
		start = s->vbe_start;
		line_compare = 65535;
		multi_scan = 0;
		switch (s->vbe[VBE_BPP]) {
		case 4: f = F_PLANAR4; bits = 4; break;
		case 15: f = F_15; bits = 16; break;
		case 16: f = F_16; bits = 16; break;
		case 24: f = F_24; bits = 24; break;
		case 32: f = F_32; bits = 32; break;
		default: f = F_8; bits = 8; break;
		}
	} else {
		width = disp_width = (s->cr[1] + 1) * 8;
		height = (s->cr[0x12] | (s->cr[7] & 0x02) << 7 | (s->cr[7] & 0x40) << 3) + 1;
		line_offset = (uint32_t)s->cr[0x13] << 3;
		start = (uint32_t)(s->cr[0x0c] << 8 | s->cr[0x0d]) * 4;
		line_compare = s->cr[0x18] | (s->cr[7] & 0x10) << 4 | (s->cr[9] & 0x40) << 3;
		int double_scan = s->cr[9] >> 7;
		multi_scan = shift == 1 ? double_scan : (((s->cr[9] & 0x1f) + 1) << double_scan) - 1;
		bool half = s->sr[1] & 0x08;
		if (shift == 0) {
			f = half ? F_PLANAR4_D2 : F_PLANAR4;
			disp_width = half ? width * 2 : width;
			bits = 4;
		} else if (shift == 1) {
			f = half ? F_CGA2_D2 : F_CGA2;
			disp_width = half ? width * 2 : width;
			bits = 4;
		} else {
			f = F_8_D2;
			bits = 4;
		}
	}
	if (width <= 0 || height <= 0 || (uint64_t)disp_width * (uint64_t)height > MAX_PIXELS)
		return;
	if (f == F_PLANAR4 || f == F_PLANAR4_D2 || f == F_CGA2 || f == F_CGA2_D2)
		vga_palette16(s, pal);
	else
		for (unsigned i = 0; i < 256; i++)
			pal[i] = vga_dac_color(s, i);

	uint32_t key[16] = { VGA_MODE_GRAPHICS, (uint32_t)f, (uint32_t)width, (uint32_t)height,
	                     (uint32_t)disp_width, start, line_offset, (uint32_t)line_compare,
	                     (uint32_t)multi_scan, s->cr[0x17], s->ar[0x12] };
	if (memcmp(key, rs->key, sizeof(key)) || memcmp(pal, rs->palette, sizeof(pal)))
		full = true;
	if (surface_resize(surf, disp_width, height) != 0)
		full = true;
	if (surf->width != disp_width || surf->height != height)
		return;
	memcpy(rs->key, key, sizeof(key));
	memcpy(rs->palette, pal, sizeof(pal));

	uint32_t addr1 = start, bwidth = (uint32_t)((width * bits + 7) / 8);
	uint32_t vmask = v->vram_size - 1;
	int y_start = -1, run = multi_scan, y1 = 0;
	for (int y = 0; y < height; y++) {
		uint32_t addr = addr1;
		if (!vbe && !(s->cr[0x17] & 1)) {      /* CGA: odd rows from the second bank */
			unsigned sh = 14 + ((s->cr[0x17] >> 6) & 1);
			addr = (addr & ~(1u << sh)) | ((uint32_t)(y1 & 1) << sh);
		}
		if (!vbe && !(s->cr[0x17] & 2))
			addr = (addr & ~0x8000u) | ((uint32_t)(y1 & 2) << 14);
		addr &= vmask;
		uint32_t last = addr + bwidth - 1 > vmask ? vmask : addr + bwidth - 1;
		if (full || page_dirty(dirty, addr, last)) {
			if (y_start < 0)
				y_start = y;
			draw_line(v, f, pal, vbe ? 0x0f : s->ar[0x12] & 0x0f, addr, width,
			          surf->pixels + (size_t)y * (size_t)disp_width);
		} else if (y_start >= 0) {
			surface_changed(surf, 0, y_start, disp_width, y - y_start);
			y_start = -1;
		}
		if (!run) {
			unsigned m = (s->cr[0x17] & 3) ^ 3;
			if (vbe || (y1 & m) == m)
				addr1 += line_offset;
			y1++;
			run = multi_scan;
		} else {
			run--;
		}
		if (y == line_compare)
			addr1 = 0;
	}
	if (y_start >= 0)
		surface_changed(surf, 0, y_start, disp_width, height - y_start);
	rs->mode = VGA_MODE_GRAPHICS;
}
