/* Bochs VBE "DISPI" registers (the interface SeaBIOS's VGA BIOS and Linux's bochs-drm
 * program VBE modes through) and the EDID block of BAR 2.
 *
 * The guest can write any value; like the hardware it models, the device cannot fail a
 * write, so every register is brought to the nearest valid value: a known depth, a
 * width that is a multiple of 8, and a mode (with its panning offsets) that fits in VRAM.
 * The renderer then trusts vbe_line_offset and vbe_start. */
#include <string.h>

#include "vmm/hw/vga_int.h"

static unsigned depth_bits(uint16_t bpp)
{
	return bpp == 15 ? 16 : bpp;
}

/* Make the registers describe a mode that fits in VRAM. */
static void vbe_fixup(struct vga *v)
{
	uint16_t *r = v->r.vbe;

	if (!(r[VBE_ENABLE] & VBE_ENABLED))
		return;
	switch (r[VBE_BPP]) {
	case 4: case 8: case 15: case 16: case 24: case 32: break;
	default: r[VBE_BPP] = 8;
	}
	unsigned bits = depth_bits(r[VBE_BPP]);
	r[VBE_XRES] &= (uint16_t)~7u;
	if (!r[VBE_XRES])
		r[VBE_XRES] = 8;
	if (r[VBE_XRES] > VBE_MAX_XRES)
		r[VBE_XRES] = VBE_MAX_XRES;
	r[VBE_VIRT_WIDTH] &= (uint16_t)~7u;
	if (r[VBE_VIRT_WIDTH] > VBE_MAX_XRES)
		r[VBE_VIRT_WIDTH] = VBE_MAX_XRES;
	if (r[VBE_VIRT_WIDTH] < r[VBE_XRES])
		r[VBE_VIRT_WIDTH] = r[VBE_XRES];
	uint32_t line = (uint32_t)r[VBE_VIRT_WIDTH] * bits / 8;
	uint32_t max_y = v->vram_size / line;
	if (!r[VBE_YRES])
		r[VBE_YRES] = 1;
	if (r[VBE_YRES] > VBE_MAX_YRES)
		r[VBE_YRES] = VBE_MAX_YRES;
	if (r[VBE_YRES] > max_y)
		r[VBE_YRES] = (uint16_t)max_y;
	if (r[VBE_X_OFFSET] > VBE_MAX_XRES)
		r[VBE_X_OFFSET] = VBE_MAX_XRES;
	if (r[VBE_Y_OFFSET] > VBE_MAX_YRES)
		r[VBE_Y_OFFSET] = VBE_MAX_YRES;
	uint64_t start = (uint64_t)r[VBE_X_OFFSET] * bits / 8 + (uint64_t)r[VBE_Y_OFFSET] * line;
	uint64_t size = (uint64_t)r[VBE_YRES] * line;
	if (start + size > v->vram_size) {
		r[VBE_Y_OFFSET] = 0;
		start = (uint64_t)r[VBE_X_OFFSET] * bits / 8;
		if (start + size > v->vram_size) {
			r[VBE_X_OFFSET] = 0;
			start = 0;
		}
	}
	r[VBE_VIRT_HEIGHT] = (uint16_t)(max_y > 0xffff ? 0xffff : max_y);
	v->r.vbe_line_offset = line;
	v->r.vbe_start = (uint32_t)start & ~3u;
}

void vga_vbe_reset(struct vga *v)
{
	memset(v->r.vbe, 0, sizeof(v->r.vbe));
	v->r.vbe[VBE_ID] = 0xb0c5;
	v->bank_offset = 0;
}

uint16_t vga_vbe_read(struct vga *v)
{
	unsigned i = v->vbe_index;

	if (i == VBE_VIDEO_MEMORY_64K)
		return (uint16_t)(v->vram_size >> 16);
	if (i >= VBE_NR_REGS)
		return 0;
	if (v->r.vbe[VBE_ENABLE] & VBE_GETCAPS) {
		if (i == VBE_XRES)
			return VBE_MAX_XRES;
		if (i == VBE_YRES)
			return VBE_MAX_YRES;
		if (i == VBE_BPP)
			return VBE_MAX_BPP;
	}
	return v->r.vbe[i];
}

/* What enabling a DISPI mode does to the VGA registers: graphics, the 64 KiB window
 * (banked), chain-4 for packed pixels, no double scan. The window then addresses the
 * mode's bytes linearly. */
static void vbe_vga_compat(struct vga *v)
{
	v->r.gr[6] = (uint8_t)((v->r.gr[6] & ~0x0c) | 0x05);
	v->r.cr[0x17] |= 3;
	v->r.cr[0x09] &= (uint8_t)~0x9f;
	if (v->r.vbe[VBE_BPP] == 4) {
		v->r.sr[1] &= (uint8_t)~0x08;
		v->r.gr[5] &= (uint8_t)~0x60;
	} else {
		v->r.sr[4] |= 0x08;
		v->r.sr[2] |= 0x0f;
		v->r.gr[5] = (uint8_t)((v->r.gr[5] & ~0x60) | 0x40);
	}
}

void vga_vbe_write(struct vga *v, uint16_t val)
{
	uint16_t *r = v->r.vbe;
	unsigned i = v->vbe_index;

	v->regs_gen++;
	vga_changed(v);
	switch (i) {
	case VBE_ID:
		if (val >= 0xb0c0 && val <= 0xb0c5)
			r[i] = val;
		break;
	case VBE_XRES: case VBE_YRES: case VBE_BPP: case VBE_VIRT_WIDTH:
	case VBE_X_OFFSET: case VBE_Y_OFFSET:
		r[i] = val;
		vbe_fixup(v);
		break;
	case VBE_BANK: {
		uint32_t banks = v->vram_size >> 16;
		if (r[VBE_BPP] == 4)
			banks >>= 2;
		r[i] = (uint16_t)(val & (banks - 1));
		v->bank_offset = (uint32_t)r[i] << 16;
		break;
	}
	case VBE_ENABLE:
		if ((val & VBE_ENABLED) && !(r[VBE_ENABLE] & VBE_ENABLED)) {
			r[VBE_VIRT_WIDTH] = r[VBE_X_OFFSET] = r[VBE_Y_OFFSET] = 0;
			r[VBE_ENABLE] |= VBE_ENABLED;
			vbe_fixup(v);
			if (!(val & VBE_NOCLEARMEM)) {
				uint64_t n = (uint64_t)r[VBE_YRES] * v->r.vbe_line_offset;
				memset(v->vram, 0, n);
				vga_mark_dirty(v, 0, (uint32_t)n);
			}
			vbe_vga_compat(v);
		} else if (!(val & VBE_ENABLED)) {
			v->bank_offset = 0;
		}
		v->r.dac_8bit = val & VBE_8BIT_DAC;
		r[i] = val;
		break;
	default:
		break;
	}
}

/* EDID 1.4: "vtool" monitor, 1280x800 preferred (CVT reduced blanking), the 640x480,
 * 800x600 and 1024x768 established modes. */
void vga_edid_build(uint8_t e[256])
{
	static const uint8_t base[128] = {
		0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
		0x5a, 0x8c, 0x34, 0x12, 0x00, 0x00, 0x00, 0x00,  /* "VTL", product 0x1234 */
		0x00, 0x22, 0x01, 0x04,                          /* 2024, EDID 1.4 */
		0x80, 0x1e, 0x13, 0x78, 0x06,                    /* digital, 30x19 cm, 2.2 */
		0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54,  /* sRGB */
		0x21, 0x08, 0x00,                                /* established timings */
		0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
		0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
		/* 1280x800 @ 60 Hz, 71 MHz */
		0xbc, 0x1b, 0x00, 0xa0, 0x50, 0x20, 0x17, 0x30, 0x30, 0x20, 0x36, 0x00,
		0x2c, 0xbe, 0x10, 0x00, 0x00, 0x1a,
		0x00, 0x00, 0x00, 0xfc, 0x00, 'v', 't', 'o', 'o', 'l', '\n',
		' ', ' ', ' ', ' ', ' ', ' ', ' ',
		0x00, 0x00, 0x00, 0xfd, 0x00, 0x32, 0x7d, 0x1e, 0xa0, 0xff, 0x00, 0x0a,
		' ', ' ', ' ', ' ', ' ', ' ',
		0x00, 0x00, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x00, 0x00,
	};
	uint8_t sum = 0;

	memset(e, 0, 256);
	memcpy(e, base, 128);
	for (int i = 0; i < 127; i++)
		sum = (uint8_t)(sum + e[i]);
	e[127] = (uint8_t)(0x100 - sum);
}
