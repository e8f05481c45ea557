/* VGA text modes: character cells from planes 0 (character) and 1 (attribute), glyphs
 * from the font the guest loaded into plane 2 (two 8 KiB-aligned maps chosen by the
 * sequencer's character map select and attribute bit 3), 8- or 9-dot cells (the ninth
 * column repeats the eighth for the line-drawing characters 0xb0-0xdf when the
 * attribute controller asks, as qemu draws them), the blinking cursor from the CRTC and,
 * when the attribute controller enables blinking, blinking characters on a dark
 * background. Only cells whose character, attribute, cursor or blink state changed are
 * drawn; each text row's changed span is one rectangle for the client. */
#include <stdlib.h>
#include <string.h>

#include "vmm/hw/vga_int.h"
#include "vmm/ui/surface.h"

#define CURSOR_HALF_PERIOD_NS 266666667ull   /* 16 frames at 60 Hz */
#define VERIFY_NS             5000000000ull  /* the whole screen is compared this often */
#define MAX_CELLS             (256 * 128)

/* 6-bit DAC value to 8 bits: the low bit fills the two new ones (0x3f -> 0xff), as qemu
 * converts, so the two VMMs' screens compare equal. */
static uint32_t c6_to_8(uint8_t v)
{
	v &= 0x3f;
	return (uint32_t)((v << 2) | (v & 1) << 1 | (v & 1));
}

uint32_t vga_dac_color(const struct vga_regs *s, unsigned i)
{
	const uint8_t *p = &s->palette[(i & 0xff) * 3];

	if (s->dac_8bit)
		return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
	return c6_to_8(p[0]) << 16 | c6_to_8(p[1]) << 8 | c6_to_8(p[2]);
}

void vga_palette16(const struct vga_regs *s, uint32_t out[16])
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned v = s->ar[i];
		if (s->ar[0x10] & 0x80)   /* P5-4 from the colour select register */
			v = ((s->ar[0x14] & 0xf) << 4) | (v & 0xf);
		else
			v = ((s->ar[0x14] & 0xc) << 4) | (v & 0x3f);
		out[i] = vga_dac_color(s, v);
	}
}

/* Draw one cell; widens [*lo, *hi] to the scan lines whose pixels changed (only those
 * go to clients: a blinking cursor costs its two lines). Returns whether any did. */
static bool draw_glyph(struct surface *surf, int x0, int y0, int cw, int ch,
                       const uint8_t *font_col, uint32_t fg, uint32_t bg, bool dup9,
                       int cursor_from, int cursor_to, int *lo, int *hi)
{
	uint32_t *row = surf->pixels + (size_t)y0 * (size_t)surf->width + x0;
	bool any = false;

	for (int l = 0; l < ch; l++, row += surf->width) {
		unsigned bits = font_col[(size_t)l * 4];
		bool cur = l >= cursor_from && l <= cursor_to;
		if (cur)
			bits = 0xff;
		uint32_t px[18];
		for (int b = 0; b < 8; b++)
			px[b] = bits & (0x80u >> b) ? fg : bg;
		px[8] = (dup9 || cur) && (bits & 1) ? fg : bg;
		if (cw == 16)
			for (int b = 7; b >= 0; b--)
				px[2 * b] = px[2 * b + 1] = px[b];
		uint32_t diff = 0;
		for (int b = 0; b < cw; b++) {
			diff |= row[b] ^ px[b];
			row[b] = px[b];
		}
		if (diff) {
			any = true;
			if (l < *lo)
				*lo = l;
			if (l > *hi)
				*hi = l;
		}
	}
	return any;
}

bool vga_text_idle(const struct vga *v, uint64_t now)
{
	const struct vga_render_state *rs = &v->rs;

	return rs->mode == VGA_MODE_TEXT &&
	       __atomic_load_n(&v->regs_gen, __ATOMIC_RELAXED) == rs->seen_regs_gen &&
	       __atomic_load_n(&v->mem_gen, __ATOMIC_RELAXED) == rs->seen_mem_gen &&
	       now >= rs->blink_ns && now < rs->blink_ns + CURSOR_HALF_PERIOD_NS &&
	       now >= rs->verify_ns && now < rs->verify_ns + VERIFY_NS;
}

uint64_t vga_text_idle_ns(const struct vga *v, uint64_t now)
{
	const struct vga_render_state *rs = &v->rs;
	if (!vga_text_idle(v, now))
		return 0;
	uint64_t blink = rs->blink_ns + CURSOR_HALF_PERIOD_NS, verify = rs->verify_ns + VERIFY_NS;
	return (blink < verify ? blink : verify) - now;
}

void vga_draw_text(struct vga *v, const struct vga_regs *s, struct surface *surf,
                   bool full, uint64_t now)
{
	struct vga_render_state *rs = &v->rs;
	int cheight = (s->cr[9] & 0x1f) + 1;
	int cw = (s->sr[1] & 0x08) ? 16 : (s->sr[1] & 1) ? 8 : 9;
	int cols = s->cr[1] + 1;
	int vde = s->cr[0x12] | (s->cr[7] & 0x02) << 7 | (s->cr[7] & 0x40) << 3;
	int rows = (vde + 1) / cheight;

	if (cols * rows <= 1 || cols * rows > MAX_CELLS)
		return;
	uint32_t plane_mask = v->vram_size / 4 - 1;
	uint32_t start = (uint32_t)(s->cr[0x0c] << 8 | s->cr[0x0d]);
	uint32_t line_offset = (uint32_t)s->cr[0x13] * 2;
	int line_compare = s->cr[0x18] | (s->cr[7] & 0x10) << 4 | (s->cr[9] & 0x40) << 3;
	unsigned cmap = s->sr[3];
	uint32_t font[2] = {
		(uint32_t)((cmap >> 4 & 1) | (cmap << 1 & 6)) * 8192,   /* attribute bit 3 clear */
		(uint32_t)((cmap >> 5 & 1) | (cmap >> 1 & 6)) * 8192,   /* attribute bit 3 set */
	};
	uint32_t pal[16];
	vga_palette16(s, pal);
	bool blink_attr = s->ar[0x10] & 0x08, dup9_on = s->ar[0x10] & 0x04;

	/* What changes every cell's picture: a new one redraws them all. */
	uint32_t key[16] = { VGA_MODE_TEXT, (uint32_t)cols, (uint32_t)rows, (uint32_t)cw,
	                     (uint32_t)cheight, start, line_offset, (uint32_t)line_compare,
	                     font[0], font[1], blink_attr | dup9_on << 1 };
	if (memcmp(key, rs->key, sizeof(key)) || memcmp(pal, rs->palette, sizeof(pal)) ||
	    __atomic_exchange_n(&v->font_written, false, __ATOMIC_ACQ_REL))
		full = true;
	int w = cols * cw, h = rows * cheight;
	bool resized = surface_resize(surf, w, h) != 0;
	/* Every second the whole screen is drawn again and compared with what clients have:
	 * whatever the cell cache missed would be corrected then. */
	if (resized || now >= rs->verify_ns + VERIFY_NS || now < rs->verify_ns) {
		full = true;
		rs->verify_ns = now;
	}
	if (surf->width != w || surf->height != h)
		return;   /* could not resize */
	if (rs->nr_cells != cols * rows) {
		free(rs->cells);
		rs->cells = calloc((size_t)cols * (size_t)rows, sizeof(*rs->cells));
		rs->nr_cells = rs->cells ? cols * rows : 0;
		if (!rs->cells)
			return;
		full = true;
	}
	memcpy(rs->key, key, sizeof(key));
	memcpy(rs->palette, pal, sizeof(pal));

	/* Cursor and blink phases: the cursor toggles every 16 frames, blinking text every 32. */
	if (now >= rs->blink_ns + CURSOR_HALF_PERIOD_NS || now < rs->blink_ns) {
		rs->blink_ns = now;
		rs->cursor_on = !rs->cursor_on;
		if (rs->cursor_on)
			rs->blink_on = !rs->blink_on;
	}
	int cursor = (int)((uint32_t)(s->cr[0x0e] << 8 | s->cr[0x0f]) - start);
	int cur_from = s->cr[0x0a] & 0x1f, cur_to = s->cr[0x0b] & 0x1f;
	if (cur_to > cheight - 1)
		cur_to = cheight - 1;
	bool cursor_visible = !(s->cr[0x0a] & 0x20) && rs->cursor_on && cur_from <= cur_to;
	int new_cursor = cursor_visible && cursor >= 0 && cursor < cols * rows ? cursor : -1;

	uint32_t addr = start;
	int line = 0;
	for (int row = 0; row < rows; row++) {
		int cmin = cols, cmax = -1, lo = cheight, hi = -1;
		for (int col = 0; col < cols; col++) {
			int i = row * cols + col;
			uint32_t a = (addr + (uint32_t)col) & plane_mask;
			uint8_t chr = v->vram[a * 4], attr = v->vram[a * 4 + 1];
			bool blinks = blink_attr && (attr & 0x80);
			uint32_t cell = (uint32_t)(chr | attr << 8) | (i == new_cursor ? 1u << 16 : 0) |
			                (blinks && rs->blink_on ? 1u << 17 : 0);
			if (!full && rs->cells[i] == cell)
				continue;
			rs->cells[i] = cell;
			uint32_t fg = pal[attr & 0x0f], bg = pal[blink_attr ? (attr >> 4) & 7 : attr >> 4];
			if (blinks && !rs->blink_on)
				fg = bg;
			const uint8_t *glyph = &v->vram[((font[(attr >> 3) & 1] + chr * 32u) & plane_mask) * 4 + 2];
			/* A glyph's 32 rows must stay inside VRAM: fonts sit in the first 64 KiB. */
			if ((size_t)(glyph - v->vram) + 32u * 4 > v->vram_size)
				glyph = v->vram + 2;
			if (!draw_glyph(surf, col * cw, row * cheight, cw, cheight, glyph, fg, bg,
			                dup9_on && chr >= 0xb0 && chr <= 0xdf,
			                i == new_cursor ? cur_from : cheight, i == new_cursor ? cur_to : -1,
			                &lo, &hi) && !resized)
				continue;
			if (col < cmin)
				cmin = col;
			cmax = col;
		}
		if (resized) {
			lo = 0;
			hi = cheight - 1;
		}
		if (cmax >= 0)
			surface_changed(surf, cmin * cw, row * cheight + lo, (cmax - cmin + 1) * cw,
			                hi - lo + 1);
		int next = line + cheight;
		addr += line_offset;
		if (line < line_compare && next >= line_compare)
			addr = 0;
		line = next;
	}
	rs->cursor_cell = new_cursor;
	rs->mode = VGA_MODE_TEXT;
}
