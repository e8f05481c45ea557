/* tguest display cases (run-vnc.py drives them over VNC).
 *
 *   test=vbe [frames=N]
 *     Finds the std VGA (1234:1111), checks the DISPI ID, then for each mode A 1024x768x32,
 *     B 800x600x16, C 640x480x8 (with a DAC palette), D 320x240x24: sets it through the
 *     DISPI registers with the LFB on, draws its pattern into BAR 0 at CPL3, prints
 *     "TG-VBE <mode> <w>x<h>x<bpp>" and waits for a key on the i8042. With frames=N it
 *     then redraws mode A N times (a band that moves), printing "TG-FRAME n" each time;
 *     with flips=N it then waits for a key N times and each time fills the whole 1024x768
 *     screen with colour n * 0x010307 (printing "TG-FLIP n"): the benchmark's full-screen
 *     change. Then it passes.
 *   test=mouse [packets=N]
 *     Resets the PS/2 mouse behind the i8042's auxiliary port, knocks it into
 *     IntelliMouse mode (rates 200, 100, 80 -> ID 3), enables reporting, prints
 *     "TG-MOUSE ready id=<id>", then prints N packets as "TG-MOUSE b=<buttons> dx= dy= dz=".
 * Patterns (the test computes the same):
 *   A: r = x*255/1023, g = y*255/767, b = (x ^ y) & 255
 *   B: 5:6:5 with r = x*31/799, g = y*63/599, b = ((x ^ y) >> 3) & 31
 *   C: index (x/40 + (y/30)*16) & 255; DAC entry i = (i & 63, (i >> 2) & 63, 63 - (i & 63))
 *   D: bytes b, g, r with r = x*255/319, g = y*255/239, b = (x + y) & 255 */
#include "rt.h"

void test_vbe(void);
void test_mouse(void);

static void dispi(uint16_t index, uint16_t value)
{
	outw(0x1ce, index);
	outw(0x1cf, value);
}

static uint16_t dispi_read(uint16_t index)
{
	outw(0x1ce, index);
	return inw(0x1cf);
}

static uint64_t find_lfb(void)
{
	for (int dev = 0; dev < 32; dev++)
		if (pci_read32(0, dev, 0, 0) == 0x11111234) {
			uint32_t bar = pci_read32(0, dev, 0, 0x10);
			printf("TG-VBE vga 00:%02x.0 bar0=0x%x\n", dev, bar);
			return bar & ~15u;
		}
	fail("vbe", "no std VGA (1234:1111)");
}

/* A key tap from the i8042 (set 1 through the controller's translation): returns at
 * its break code, so each tap is one call. Times out after about a minute. */
static void wait_key(const char *name)
{
	uint64_t start = rdtsc();
	for (;;) {
		while (!(inb(0x64) & 1))
			if (rdtsc() - start > 150000000000ull)
				fail(name, "no key within the time limit");
		uint8_t b = inb(0x60);
		if ((b & 0x80) && b != 0xe0 && b != 0xe1)
			return;
	}
}

struct draw {
	uint8_t *lfb;
	unsigned w, h, bpp, mode, band;
};

static void draw(void *p)
{
	struct draw *d = p;
	for (unsigned y = 0; y < d->h; y++)
		for (unsigned x = 0; x < d->w; x++) {
			uint8_t *px = d->lfb + ((uint64_t)y * d->w + x) * (d->bpp / 8);
			switch (d->mode) {
			case 'A': {
				uint32_t r = x * 255 / 1023, g = y * 255 / 767, b = (x ^ y) & 255;
				if (d->band && y / 16 == d->band % 48)
					r = g = b = 255;
				*(volatile uint32_t *)px = r << 16 | g << 8 | b;
				break;
			}
			case 'B': {
				uint32_t r = x * 31 / 799, g = y * 63 / 599, b = ((x ^ y) >> 3) & 31;
				*(volatile uint16_t *)px = (uint16_t)(r << 11 | g << 5 | b);
				break;
			}
			case 'C':
				*(volatile uint8_t *)px = (uint8_t)(x / 40 + (y / 30) * 16);
				break;
			case 'F':
				*(volatile uint32_t *)px = (d->band * 0x010307u) & 0xffffff;
				break;
			case 'D':
				px[0] = (uint8_t)((x + y) & 255);
				px[1] = (uint8_t)(y * 255 / 239);
				px[2] = (uint8_t)(x * 255 / 319);
				break;
			}
		}
}

static void set_mode(unsigned w, unsigned h, unsigned bpp)
{
	dispi(4, 0);
	dispi(1, (uint16_t)w);
	dispi(2, (uint16_t)h);
	dispi(3, (uint16_t)bpp);
	dispi(4, 0x41);                      /* enabled, LFB */
	if (dispi_read(1) != w || dispi_read(2) != h || dispi_read(3) != bpp ||
	    dispi_read(6) != w)
		fail("vbe", "DISPI registers did not keep the mode");
}

void test_vbe(void)
{
	static const struct { char mode; unsigned w, h, bpp; } modes[] = {
		{ 'A', 1024, 768, 32 }, { 'B', 800, 600, 16 }, { 'C', 640, 480, 8 },
		{ 'D', 320, 240, 24 },
	};
	uint8_t *lfb = (uint8_t *)(uintptr_t)find_lfb();

	dispi(0, 0xb0c5);
	uint16_t id = dispi_read(0);
	printf("TG-VBE id=0x%x memory=%uK\n", id, dispi_read(10) * 64);
	if (id != 0xb0c5)
		fail("vbe", "DISPI ID did not read back");
	for (unsigned m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		struct draw d = { lfb, modes[m].w, modes[m].h, modes[m].bpp, (unsigned)modes[m].mode, 0 };
		set_mode(d.w, d.h, d.bpp);
		if (d.mode == 'C') {
			outb(0x3c8, 0);
			for (unsigned i = 0; i < 256; i++) {
				outb(0x3c9, (uint8_t)(i & 63));
				outb(0x3c9, (uint8_t)((i >> 2) & 63));
				outb(0x3c9, (uint8_t)(63 - (i & 63)));
			}
		}
		run_user(draw, &d);
		printf("TG-VBE %c %ux%ux%u\n", modes[m].mode, d.w, d.h, d.bpp);
		wait_key("vbe");
	}
	uint64_t frames = cmdline_u64("frames", 0);
	if (frames) {
		struct draw d = { lfb, 1024, 768, 32, 'A', 0 };
		set_mode(1024, 768, 32);
		for (uint64_t n = 1; n <= frames; n++) {
			d.band = (unsigned)n;
			run_user(draw, &d);
			printf("TG-FRAME %u\n", (unsigned)n);
		}
	}
	uint64_t flips = cmdline_u64("flips", 0);
	if (flips) {
		struct draw d = { lfb, 1024, 768, 32, 'F', 0 };
		set_mode(1024, 768, 32);
		printf("TG-FLIP 0\n");
		for (uint64_t n = 1; n <= flips; n++) {
			wait_key("vbe");
			d.band = (unsigned)n;
			run_user(draw, &d);
			printf("TG-FLIP %u\n", (unsigned)n);
		}
	}
	pass("vbe");
}

/* --- PS/2 mouse ---------------------------------------------------------------------- */

/* The next byte from the auxiliary device (status bit 5), keyboard bytes dropped. */
static int aux_byte(uint64_t cycles)
{
	uint64_t start = rdtsc();
	while (rdtsc() - start < cycles) {
		uint8_t st = inb(0x64);
		if (!(st & 1))
			continue;
		uint8_t b = inb(0x60);
		if (st & 0x20)
			return b;
	}
	return -1;
}

static int mouse_cmd(uint8_t v)
{
	outb(0x64, 0xd4);
	outb(0x60, v);
	return aux_byte(10000000000ull);
}

void test_mouse(void)
{
	outb(0x64, 0xa8);                      /* enable the auxiliary port */
	if (mouse_cmd(0xff) != 0xfa || aux_byte(10000000000ull) != 0xaa ||
	    aux_byte(10000000000ull) != 0x00)
		fail("mouse", "reset: no FA AA 00");
	static const uint8_t knock[3] = { 200, 100, 80 };
	for (int i = 0; i < 3; i++)
		if (mouse_cmd(0xf3) != 0xfa || mouse_cmd(knock[i]) != 0xfa)
			fail("mouse", "set sample rate not acknowledged");
	if (mouse_cmd(0xf2) != 0xfa)
		fail("mouse", "get ID not acknowledged");
	int id = aux_byte(10000000000ull);
	if (mouse_cmd(0xf4) != 0xfa)
		fail("mouse", "enable not acknowledged");
	printf("TG-MOUSE ready id=%d\n", id);
	int size = id == 3 ? 4 : 3;
	uint64_t packets = cmdline_u64("packets", 4);
	for (uint64_t n = 0; n < packets; n++) {
		int b[4] = { 0, 0, 0, 0 };
		for (int i = 0; i < size; i++)
			if ((b[i] = aux_byte(150000000000ull)) < 0)
				fail("mouse", "no packet within the time limit");
		if (!(b[0] & 8))
			fail("mouse", "packet out of sync (bit 3 of the first byte clear)");
		int dx = b[1] - (b[0] & 0x10 ? 256 : 0), dy = b[2] - (b[0] & 0x20 ? 256 : 0);
		int dz = (int8_t)b[3];
		printf("TG-MOUSE b=%d dx=%d dy=%d dz=%d\n", b[0] & 7, dx, dy, dz);
	}
	pass("mouse");
}
