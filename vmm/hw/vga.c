/* The std VGA: PCI function, BARs, the legacy register ports (sequencer, graphics
 * controller, CRTC, attribute controller, DAC, misc output, input status) and the frame
 * entry vga_render(). See vga.h for the device and vga_int.h for the state. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "vmm/boot/boot.h"
#include "vmm/hw/devices.h"
#include "vmm/hw/vga_int.h"
#include "vmm/ui/surface.h"
#include "vmm/vm.h"

#define VGA_PORT_BASE  0x3b0
#define VGA_PORT_LEN   0x30
#define DISPI_PORT     0x1ce
#define WINDOW_BASE    0xa0000
#define WINDOW_LEN     0x20000
#define BAR2_SIZE      0x1000
#define BAR2_EDID      0x000
#define BAR2_PORTS     0x400     /* ports 0x3c0..0x3df */
#define BAR2_DISPI     0x500     /* DISPI register i at 0x500 + 2 * i */
#define BAR2_QEXT      0x600     /* qemu extension: size, byte order */
#define QEXT_SIZE      8
#define QEXT_LITTLE    0x1e1e1e1eu
#define VGA_DEVFN      (2 << 3)

/* Writable bits of the sequencer and graphics controller registers. */
static const uint8_t sr_mask[8] = { 0x03, 0x3d, 0x0f, 0x3f, 0x0e, 0x00, 0x00, 0xff };
static const uint8_t gr_mask[16] = { 0x0f, 0x0f, 0x0f, 0x1f, 0x03, 0x7b, 0x0f, 0x0f, 0xff };

/* A port in the other (mono or colour) range than the misc register selects. */
static bool port_invalid(const struct vga *v, unsigned port)
{
	if (v->r.misc & 1)
		return port >= 0x3b0 && port <= 0x3bf;
	return port >= 0x3d0 && port <= 0x3df;
}

static uint8_t port_read(struct vga *v, unsigned port)
{
	if (port_invalid(v, port))
		return 0xff;
	switch (port) {
	case 0x3c0:
		return v->ar_flip ? 0 : v->r.ar_index;
	case 0x3c1: {
		unsigned i = v->r.ar_index & 0x1f;
		return i < sizeof(v->r.ar) ? v->r.ar[i] : 0;
	}
	case 0x3c2: return 0;                     /* input status 0 */
	case 0x3c4: return v->sr_index;
	case 0x3c5: return v->r.sr[v->sr_index];
	case 0x3c6: return v->r.dac_mask;
	case 0x3c7: return v->dac_state;
	case 0x3c8: return v->dac_write;
	case 0x3c9: {
		uint8_t val = v->r.palette[v->dac_read * 3 + v->dac_sub];
		if (++v->dac_sub == 3) {
			v->dac_sub = 0;
			v->dac_read++;
		}
		return val;
	}
	case 0x3ca: return v->fcr;
	case 0x3cc: return v->r.misc;
	case 0x3ce: return v->gr_index;
	case 0x3cf: return v->r.gr[v->gr_index];
	case 0x3b4: case 0x3d4: return v->cr_index;
	case 0x3b5: case 0x3d5: return v->r.cr[v->cr_index];
	case 0x3ba: case 0x3da:
		/* Input status 1: toggle retrace and display-enable so polling loops end; the
		 * read also resets the attribute controller to its index state. */
		v->st01 ^= 0x09;
		v->ar_flip = false;
		return v->st01;
	default:
		return 0;
	}
}

static void port_write(struct vga *v, unsigned port, uint8_t val)
{
	if (port_invalid(v, port))
		return;
	v->regs_gen++;
	vga_changed(v);
	switch (port) {
	case 0x3c0:
		if (!v->ar_flip) {
			v->r.ar_index = val & 0x3f;
		} else {
			unsigned i = v->r.ar_index & 0x1f;
			if (i < 0x10)
				v->r.ar[i] = val & 0x3f;
			else if (i == 0x10)
				v->r.ar[i] = val & (uint8_t)~0x10;
			else if (i == 0x11)
				v->r.ar[i] = val;
			else if (i == 0x12)
				v->r.ar[i] = val & 0x3f;
			else if (i == 0x13 || i == 0x14)
				v->r.ar[i] = val & 0x0f;
		}
		v->ar_flip = !v->ar_flip;
		break;
	case 0x3c2: v->r.misc = val & (uint8_t)~0x10; break;
	case 0x3c4: v->sr_index = val & 7; break;
	case 0x3c5: v->r.sr[v->sr_index] = val & sr_mask[v->sr_index]; break;
	case 0x3c6: v->r.dac_mask = val; break;
	case 0x3c7:
		v->dac_read = val;
		v->dac_sub = 0;
		v->dac_state = 3;
		break;
	case 0x3c8:
		v->dac_write = val;
		v->dac_sub = 0;
		v->dac_state = 0;
		break;
	case 0x3c9:
		v->dac_cache[v->dac_sub] = val;
		if (++v->dac_sub == 3) {
			memcpy(&v->r.palette[v->dac_write * 3], v->dac_cache, 3);
			v->dac_sub = 0;
			v->dac_write++;
		}
		break;
	case 0x3ce: v->gr_index = val & 0x0f; break;
	case 0x3cf: v->r.gr[v->gr_index] = val & gr_mask[v->gr_index]; break;
	case 0x3b4: case 0x3d4: v->cr_index = val; break;
	case 0x3b5: case 0x3d5:
		/* CR11 bit 7 write-protects CR0-CR7, except CR7's line-compare bit. */
		if ((v->r.cr[0x11] & 0x80) && v->cr_index <= 7) {
			if (v->cr_index == 7)
				v->r.cr[7] = (uint8_t)((v->r.cr[7] & ~0x10) | (val & 0x10));
			break;
		}
		v->r.cr[v->cr_index] = val;
		break;
	case 0x3ba: case 0x3da: v->fcr = val & 0x10; break;
	default: break;
	}
}

/* Ports 0x3b0..0x3df: a word access is two byte accesses (index, then data). */
static void vga_port_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                        bool is_write)
{
	struct vga *v = opaque;

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < len; i++) {
		unsigned port = VGA_PORT_BASE + (unsigned)offset + i;
		if (is_write)
			port_write(v, port, data[i]);
		else
			data[i] = port_read(v, port);
	}
	pthread_mutex_unlock(&v->lock);
}

/* DISPI: 0x1ce index, 0x1cf data, 16-bit (a byte access reads or writes the low byte). */
static void dispi_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write)
{
	struct vga *v = opaque;
	uint16_t val = (uint16_t)(data[0] | (len > 1 ? data[1] << 8 : 0));

	pthread_mutex_lock(&v->lock);
	if (offset == 0) {
		if (is_write)
			v->vbe_index = val;
		else
			val = v->vbe_index;
	} else if (is_write) {
		vga_vbe_write(v, val);
	} else {
		val = vga_vbe_read(v);
	}
	pthread_mutex_unlock(&v->lock);
	if (!is_write)
		for (unsigned i = 0; i < len; i++)
			data[i] = i < 2 ? (uint8_t)(val >> (8 * i)) : 0;
}

/* BAR 2: EDID, the VGA ports, DISPI and qemu's extension registers. */
static void bar2_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write)
{
	struct vga *v = opaque;

	if (!is_write)
		memset(data, 0, len);
	if (offset < BAR2_EDID + sizeof(v->edid)) {
		for (unsigned i = 0; !is_write && i < len && offset + i < sizeof(v->edid); i++)
			data[i] = v->edid[offset + i];
	} else if (offset >= BAR2_PORTS && offset < BAR2_PORTS + 0x20) {
		unsigned n = offset + len > BAR2_PORTS + 0x20 ? (unsigned)(BAR2_PORTS + 0x20 - offset) : len;
		vga_port_io(v, offset - BAR2_PORTS + 0x10, data, n, is_write);
	} else if (offset >= BAR2_DISPI && offset < BAR2_DISPI + 2 * (VBE_NR_REGS + 1) && len >= 2) {
		uint16_t val = (uint16_t)(data[0] | data[1] << 8);
		pthread_mutex_lock(&v->lock);
		v->vbe_index = (uint16_t)((offset - BAR2_DISPI) / 2);
		if (is_write)
			vga_vbe_write(v, val);
		else
			val = vga_vbe_read(v);
		pthread_mutex_unlock(&v->lock);
		if (!is_write) {
			data[0] = (uint8_t)val;
			data[1] = (uint8_t)(val >> 8);
		}
	} else if (offset >= BAR2_QEXT && offset < BAR2_QEXT + QEXT_SIZE && !is_write && len == 4) {
		uint32_t val = offset == BAR2_QEXT ? QEXT_SIZE : QEXT_LITTLE;
		memcpy(data, &val, 4);
	}
	/* Other writes (a big-endian byte order request included) are ignored. */
}

/* BAR 0 while KVM does not map it (its region could not be added): plain VRAM. */
static void lfb_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write)
{
	struct vga *v = opaque;

	if (offset + len > v->vram_size) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (is_write) {
		memcpy(v->vram + offset, data, len);
		vga_mark_dirty(v, (uint32_t)offset, len);
	} else {
		memcpy(data, v->vram + offset, len);
	}
}

/* BAR 0 moved: KVM maps VRAM at the new place, with dirty logging for the renderer. */
static void vga_bar_mapped(struct pci_dev *d, int bar, bool mapped, uint32_t addr)
{
	struct vga *v = d->opaque;

	if (bar != 0)
		return;
	if (v->lfb_addr) {
		vm_mem_remove(v->vm, v->region);
		v->lfb_addr = 0;
	}
	if (mapped) {
		struct vm_region r = { .name = v->region, .kind = VM_REGION_DEVICE, .gpa = addr,
		                       .size = v->vram_size, .host = v->vram,
		                       .flags = VM_REGION_DIRTY_LOG };
		struct vt_error ignored;
		if (vm_mem_add(v->vm, &r, true, &ignored) == 0)
			v->lfb_addr = addr;
	}
	__atomic_fetch_add(&v->regs_gen, 1, __ATOMIC_RELAXED);
	v->rs.mode = -1;   /* KVM's dirty log starts over: draw everything */
	vga_changed(v);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void draw_blank(struct vga *v, struct surface *s)
{
	if (v->rs.mode == VGA_MODE_BLANK)
		return;
	int w = s->width > 0 ? s->width : 640, h = s->height > 0 ? s->height : 480;
	if (surface_resize(s, w, h) < 0)
		return;
	memset(s->pixels, 0, (size_t)s->width * (size_t)s->height * 4);
	surface_changed(s, 0, 0, s->width, s->height);
	v->rs.mode = VGA_MODE_BLANK;
}

uint64_t vga_idle_ns(struct vga *v, void (*fn)(void *arg), void *arg)
{
	v->notify = fn;
	v->notify_arg = arg;
	__atomic_store_n(&v->notify_armed, 1, __ATOMIC_SEQ_CST);
	/* Armed first: a change from now on calls fn, so checking after cannot miss one. */
	if (v->rs.mode == VGA_MODE_TEXT)
		return vga_text_idle_ns(v, now_ns());
	/* Graphics reach the display through the window (which notifies) and, once the LFB
	 * is mapped, through KVM's dirty log (which must be polled). */
	bool seen = __atomic_load_n(&v->regs_gen, __ATOMIC_RELAXED) == v->rs.seen_regs_gen &&
	            __atomic_load_n(&v->mem_gen, __ATOMIC_RELAXED) == v->rs.seen_mem_gen;
	return v->rs.mode == VGA_MODE_GRAPHICS && !v->lfb_addr && seen ? UINT64_MAX : 0;
}

void vga_render(struct vga *v, struct surface *s, bool full)
{
	struct vga_regs snap;
	uint64_t now = now_ns();

	if (!full && vga_text_idle(v, now))
		return;
	pthread_mutex_lock(&v->lock);
	snap = v->r;
	v->rs.seen_regs_gen = v->regs_gen;
	v->rs.seen_mem_gen = __atomic_load_n(&v->mem_gen, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&v->lock);
	if (full)
		v->rs.mode = -1;

	bool vbe = snap.vbe[VBE_ENABLE] & VBE_ENABLED;
	if (!vbe && !(snap.ar_index & 0x20)) {
		draw_blank(v, s);  /* the attribute controller's palette source is off */
		return;
	}
	if (!vbe && !(snap.gr[6] & 1)) {
		vga_draw_text(v, &snap, s, v->rs.mode != VGA_MODE_TEXT, now);
		return;
	}
	/* Graphics: the window's dirty pages and KVM's for the LFB. */
	uint32_t words = v->nr_pages / 64 + 1;
	uint64_t *dirty = v->dirty_frame, *log = v->dirty_kvm;
	for (uint32_t i = 0; i < words; i++)
		dirty[i] = __atomic_exchange_n(&v->dirty[i], 0, __ATOMIC_ACQ_REL);
	if (v->lfb_addr) {
		struct vt_error ignored;
		memset(log, 0, words * 8);
		if (vm_mem_dirty_log(v->vm, v->region, log, &ignored) == 0)
			for (uint32_t i = 0; i < words; i++)
				dirty[i] |= log[i];
		else
			memset(dirty, 0xff, words * 8);
	}
	vga_draw_graphics(v, &snap, dirty, s, v->rs.mode != VGA_MODE_GRAPHICS);
}

static void vga_destroy(void *opaque)
{
	struct vga *v = opaque;

	if (v->vram)
		munmap(v->vram, v->vram_size);
	free(v->dirty);
	free(v->dirty_frame);
	free(v->dirty_kvm);
	free(v->rs.cells);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static int vga_load_rom(struct vm *vm, struct vga *v, struct vt_error *err)
{
	struct boot_file f;
	int ret = boot_read_file(&f, VGA_ROM_DEFAULT, err);

	if (ret) {
		if (vm->cfg->kernel)
			return 0;   /* a direct kernel boot runs no VGA BIOS */
		return vt_error_set(err, -ret, VGA_ROM_DEFAULT, "load VGA BIOS",
		                    "%s (Debian's package 'seabios' provides it; or give -vga none)",
		                    strerror(-ret));
	}
	ret = f.size > (1u << 20) ? vt_error_set(err, EFBIG, VGA_ROM_DEFAULT, "load VGA BIOS", NULL)
	                          : pci_set_rom(vm, &v->pci, f.data, (uint32_t)f.size, err);
	free(f.data);
	return ret;
}

int vga_init(struct vm *vm, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;
	int ret;

	if (!cfg->display.vga)
		return 0;
	struct vga *v = calloc(1, sizeof(*v));
	if (!v)
		return vt_error_set(err, ENOMEM, "VGA", "create", NULL);
	pthread_mutex_init(&v->lock, NULL);
	v->vm = vm;
	v->vram_size = cfg->display.vgamem_mb << 20;
	v->rs.mode = -1;
	v->rs.cursor_cell = -1;
	snprintf(v->region, sizeof(v->region), "vga-vram");
	if ((ret = vm_add_device(vm, "vga", v, vga_destroy, err)))
		return ret;
	/* NORESERVE: only what the guest draws costs host memory. */
	v->vram = mmap(NULL, v->vram_size, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (v->vram == MAP_FAILED) {
		v->vram = NULL;
		return vt_error_set(err, errno, "VGA", "allocate video memory", NULL);
	}
	v->nr_pages = v->vram_size >> VGA_PAGE_SHIFT;
	v->dirty = calloc(v->nr_pages / 64 + 1, 8);
	v->dirty_frame = calloc(v->nr_pages / 64 + 1, 8);
	v->dirty_kvm = calloc(v->nr_pages / 64 + 1, 8);
	if (!v->dirty || !v->dirty_frame || !v->dirty_kvm)
		return vt_error_set(err, ENOMEM, "VGA", "create", NULL);
	v->r.dac_mask = 0xff;
	vga_vbe_reset(v);
	vga_edid_build(v->edid);

	pci_dev_init(&v->pci, "VGA", 0x1234, 0x1111, 0x030000, 0x02);
	v->pci.devfn = VGA_DEVFN;
	v->pci.opaque = v;
	v->pci.bar_mapped = vga_bar_mapped;
	v->pci.bars[0] = (struct pci_bar){ .size = v->vram_size, .fn = lfb_io, .opaque = v,
	                                   .prefetch = true };
	v->pci.bars[2] = (struct pci_bar){ .size = BAR2_SIZE, .fn = bar2_io, .opaque = v };
	if ((ret = vga_load_rom(vm, v, err)) || (ret = pci_add_device(vm, &v->pci, err)))
		return ret;
	if ((ret = bus_register(&vm->pio, VGA_PORT_BASE, VGA_PORT_LEN, vga_port_io, v, err)) ||
	    (ret = bus_register(&vm->pio, DISPI_PORT, 3, dispi_io, v, err)) ||
	    (ret = bus_register(&vm->mmio, WINDOW_BASE, WINDOW_LEN, vga_window_io, v, err)))
		return ret;
	return 0;
}
