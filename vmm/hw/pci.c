/* PCI configuration mechanism #1, the i440FX host bridge and PIIX3 ISA bridge functions
 * that make bus 0 look like qemu's "pc" machine, BAR placement and relocation, and the
 * PIIX3 reset control register at 0xcf9 that shares the address range. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/hw/devices.h"
#include "vmm/hw/pci.h"
#include "vmm/vm.h"

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_MAX_DEVFN   256
#define PIIX_PIRQ_ROUTE 0x60    /* ISA bridge config: PIRQA..D -> ISA IRQ, bit 7 disables */
#define PIRQ_DISABLED   0x80

struct pci_bus {
	struct vm *vm;
	pthread_mutex_t lock;
	uint32_t config_addr;
	uint8_t reset_control;
	struct pci_dev *devs[PCI_MAX_DEVFN];
	uint32_t next_io, next_mmio;
	struct pci_dev host, isa;
	pthread_mutex_t irq_lock;
	unsigned irq_count[16];        /* functions holding each ISA IRQ high */
};

/* The ISA IRQ a function's INTx pin reaches now, or -1. */
static int pci_intx_route(struct pci_bus *pb, const struct pci_dev *d)
{
	unsigned pin = d->cfg[PCI_INTERRUPT_PIN];

	if (pin < 1 || pin > 4)
		return -1;
	unsigned pirq = ((unsigned)(d->devfn >> 3) + pin - 2) & 3;
	uint8_t route = pb->isa.cfg[PIIX_PIRQ_ROUTE + pirq];
	return (route & PIRQ_DISABLED) || route >= 16 ? -1 : route;
}

void pci_set_irq(struct pci_dev *d, bool level)
{
	struct pci_bus *pb = d->vm ? vm_device(d->vm, "pci") : NULL;

	if (!pb)
		return;
	pthread_mutex_lock(&pb->irq_lock);
	if (level && d->irq_asserted < 0) {
		int irq = pci_intx_route(pb, d);
		if (irq >= 0) {
			d->irq_asserted = irq;
			if (pb->irq_count[irq]++ == 0)
				vm_irq_line(d->vm, (unsigned)irq, true);
		}
	} else if (!level && d->irq_asserted >= 0) {
		int irq = d->irq_asserted;
		d->irq_asserted = -1;
		if (--pb->irq_count[irq] == 0)
			vm_irq_line(d->vm, (unsigned)irq, false);
	}
	pthread_mutex_unlock(&pb->irq_lock);
}

int pci_set_rom(struct vm *vm, struct pci_dev *d, const uint8_t *image, uint32_t len,
                struct vt_error *err)
{
	uint32_t size = 4096;
	int ret;

	while (size < len && size < (1u << 24))
		size <<= 1;
	if (!len || len > size)
		return vt_error_set(err, EFBIG, d->name, "option ROM", "%u bytes", len);
	uint8_t *copy = aligned_alloc(4096, size);
	if (!copy)
		return vt_error_set(err, ENOMEM, d->name, "option ROM", NULL);
	memcpy(copy, image, len);
	memset(copy + len, 0, size - len);
	if ((ret = vm_add_device(vm, "option-rom", copy, free, err)))
		return ret;
	d->rom = copy;
	d->rom_len = len;
	d->rom_size = size;
	return 0;
}

/* Map or unmap the expansion ROM as the ROM BAR and the command register say. */
static void pci_update_rom(struct vm *vm, struct pci_dev *d)
{
	if (!d->rom_size)
		return;
	const char *name = d->rom_region;
	snprintf(d->rom_region, sizeof(d->rom_region), "rom@%02x.%x", d->devfn >> 3, d->devfn & 7);
	uint32_t bar = pci_cfg_get32(d, PCI_ROM_ADDRESS);
	uint32_t addr = bar & ~(d->rom_size - 1) & ~1u;
	bool want = (bar & 1) && (pci_cfg_get16(d, PCI_COMMAND) & PCI_COMMAND_MEM) && addr &&
	            addr != (~(d->rom_size - 1) & ~0x7ffu);
	if (d->rom_addr && (!want || addr != d->rom_addr)) {
		vm_mem_remove(vm, name);
		d->rom_addr = 0;
	}
	if (want && !d->rom_addr) {
		struct vm_region r = { .name = name, .kind = VM_REGION_ROM, .gpa = addr,
		                       .size = d->rom_size, .host = d->rom };
		struct vt_error ignored;
		if (vm_mem_add(vm, &r, true, &ignored) == 0)
			d->rom_addr = addr;
	}
}

void pci_dev_init(struct pci_dev *dev, const char *name, uint16_t vendor, uint16_t device,
                  uint32_t class_code, uint8_t revision)
{
	memset(dev->cfg, 0, sizeof(dev->cfg));
	memset(dev->wmask, 0, sizeof(dev->wmask));
	dev->name = name;
	pci_cfg_set16(dev, PCI_VENDOR_ID, vendor);
	pci_cfg_set16(dev, PCI_DEVICE_ID, device);
	dev->cfg[PCI_REVISION] = revision;
	dev->cfg[PCI_CLASS_PROG] = (uint8_t)class_code;
	dev->cfg[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
	dev->cfg[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
	pci_cfg_set16(dev, PCI_SUBSYS_VENDOR, 0x1af4);
	pci_cfg_set16(dev, PCI_SUBSYS_ID, 0x1100);
	dev->wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEM | PCI_COMMAND_MASTER;
	dev->wmask[PCI_COMMAND + 1] = 0x04; /* INTx disable */
	dev->wmask[PCI_INTERRUPT_LINE] = 0xff;
	dev->wmask[0x0c] = 0xff;            /* cache line size */
	dev->wmask[0x0d] = 0xff;            /* latency timer */
}

static bool pci_bar_enabled(const struct pci_dev *d, const struct pci_bar *b)
{
	uint16_t cmd = pci_cfg_get16(d, PCI_COMMAND);

	return b->io ? (cmd & PCI_COMMAND_IO) : (cmd & PCI_COMMAND_MEM);
}

/* Bring the bus mapping of every BAR in line with config space. */
static void pci_update_mappings(struct vm *vm, struct pci_dev *d)
{
	for (int i = 0; i < 6; i++) {
		struct pci_bar *b = &d->bars[i];
		if (!b->size)
			continue;
		struct bus *bus = b->io ? &vm->pio : &vm->mmio;
		uint32_t mask = b->io ? ~3u : ~15u;
		uint32_t addr = pci_cfg_get32(d, PCI_BAR0 + 4 * i) & mask;
		/* An address of 0 (or all-ones while sizing) is "not placed". */
		bool want = pci_bar_enabled(d, b) && addr != 0 && addr != (mask & ~(b->size - 1));
		if (b->mapped && (!want || addr != b->addr)) {
			bus_unregister(bus, b->addr);
			b->mapped = false;
			if (d->bar_mapped)
				d->bar_mapped(d, i, false, b->addr);
		}
		if (want && !b->mapped) {
			struct vt_error ignored;
			/* A guest that overlaps two BARs gets the first one only. */
			b->mapped = bus_register(bus, addr, b->size, b->fn, b->opaque, &ignored) == 0;
			b->addr = addr;
			if (b->mapped && d->bar_mapped)
				d->bar_mapped(d, i, true, addr);
		}
	}
}

static void pci_config_write(struct pci_bus *pb, struct pci_dev *d, unsigned off,
                             const uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++) {
		unsigned o = off + i;
		if (o >= PCI_BAR0 && o < PCI_BAR0 + 24) {
			struct pci_bar *b = &d->bars[(o - PCI_BAR0) / 4];
			if (!b->size)
				continue;
			/* Size bits read back as zero; the type bits are fixed. */
			uint32_t wm = ~(b->size - 1) & (b->io ? ~3u : ~15u);
			unsigned shift = 8 * ((o - PCI_BAR0) % 4);
			uint8_t m = (uint8_t)(wm >> shift);
			d->cfg[o] = (uint8_t)((d->cfg[o] & ~m) | (data[i] & m));
		} else if (o >= PCI_ROM_ADDRESS && o < PCI_ROM_ADDRESS + 4 && d->rom_size) {
			uint32_t wm = (~(d->rom_size - 1) & ~0x7ffu) | 1u;
			uint8_t m = (uint8_t)(wm >> (8 * (o - PCI_ROM_ADDRESS)));
			d->cfg[o] = (uint8_t)((d->cfg[o] & ~m) | (data[i] & m));
		} else {
			d->cfg[o] = (uint8_t)((d->cfg[o] & ~d->wmask[o]) | (data[i] & d->wmask[o]));
		}
	}
	if ((off < PCI_BAR0 + 24 && off + len > PCI_BAR0) || off <= PCI_COMMAND)
		pci_update_mappings(pb->vm, d);
	if ((off < PCI_ROM_ADDRESS + 4 && off + len > PCI_ROM_ADDRESS) || off <= PCI_COMMAND)
		pci_update_rom(pb->vm, d);
	if (d->config_written)
		d->config_written(d, off, len);
}

static void pci_config_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                          bool is_write)
{
	struct pci_bus *pb = opaque;

	pthread_mutex_lock(&pb->lock);
	if (offset == 0 && len == 4) {
		if (is_write)
			memcpy(&pb->config_addr, data, 4);
		else
			memcpy(data, &pb->config_addr, 4);
	} else if (offset == 1 && len == 1) {
		/* PIIX3 reset control: bit 2 going high performs the reset bit 1 selects. */
		if (!is_write) {
			data[0] = pb->reset_control;
		} else {
			if ((data[0] & 0x04) && !(pb->reset_control & 0x04))
				vm_request_stop(pb->vm, VM_STOP_RESET, 0, NULL);
			pb->reset_control = data[0] & 0x0a;
		}
	} else if (offset >= 4) {
		uint32_t a = pb->config_addr;
		unsigned reg = (a & 0xfc) + (unsigned)(offset - 4);
		unsigned bus = (a >> 16) & 0xff, devfn = (a >> 8) & 0xff;
		struct pci_dev *d = (a & 0x80000000u) && bus == 0 ? pb->devs[devfn] : NULL;
		if (reg + len > 256)
			len = 256 - reg;
		if (!d) {
			if (!is_write)
				memset(data, 0xff, len);
		} else if (is_write) {
			pci_config_write(pb, d, reg, data, len);
		} else {
			memcpy(data, &d->cfg[reg], len);
		}
	} else if (!is_write) {
		memset(data, 0xff, len);
	}
	pthread_mutex_unlock(&pb->lock);
}

static uint32_t align_up(uint32_t v, uint32_t a)
{
	return (v + a - 1) & ~(a - 1);
}

int pci_add_device(struct vm *vm, struct pci_dev *dev, struct vt_error *err)
{
	struct pci_bus *pb = vm_device(vm, "pci");
	int slot;

	if (!pb)
		return vt_error_set(err, ENODEV, dev->name, "add PCI device", "no PCI bus");

	if (dev->devfn > 0) {
		/* A fixed function (PIIX3 IDE is 00:01.1): it must be free. */
		if (dev->devfn >= PCI_MAX_DEVFN || pb->devs[dev->devfn])
			return vt_error_set(err, EBUSY, dev->name, "add PCI device",
			                    "function %02x.%x is taken", dev->devfn >> 3, dev->devfn & 7);
	} else {
		for (slot = 0; slot < 32 && pb->devs[slot * 8]; slot++)
			;
		if (slot == 32)
			return vt_error_set(err, ENOSPC, dev->name, "add PCI device", "no free slot");
		dev->devfn = slot * 8;
	}
	dev->vm = vm;
	dev->irq_asserted = -1;
	for (int i = 0; i < 6; i++) {
		struct pci_bar *b = &dev->bars[i];
		if (!b->size)
			continue;
		if (b->size & (b->size - 1))
			return vt_error_set(err, EINVAL, dev->name, "add PCI device",
			                    "BAR %d size %u is not a power of two", i, b->size);
		uint32_t *next = b->io ? &pb->next_io : &pb->next_mmio;
		uint32_t addr = align_up(*next, b->size);
		uint64_t end = b->io ? 0x10000 : VM_PCI_MMIO_END;
		if ((uint64_t)addr + b->size > end)
			return vt_error_set(err, ENOSPC, dev->name, "add PCI device",
			                    "no room for BAR %d in the PCI hole", i);
		*next = addr + b->size;
		pci_cfg_set32(dev, PCI_BAR0 + 4 * i, addr | (b->io ? 1 : 0) | (b->prefetch ? 8 : 0));
	}
	uint16_t cmd = pci_cfg_get16(dev, PCI_COMMAND) | PCI_COMMAND_IO | PCI_COMMAND_MEM;
	pci_cfg_set16(dev, PCI_COMMAND, cmd);
	int irq = pci_intx_route(pb, dev);
	if (irq >= 0)
		dev->cfg[PCI_INTERRUPT_LINE] = (uint8_t)irq;
	pthread_mutex_lock(&pb->lock);
	pb->devs[dev->devfn] = dev;
	pci_update_mappings(vm, dev);
	pthread_mutex_unlock(&pb->lock);
	for (int i = 0; i < 6; i++)
		if (dev->bars[i].size && !dev->bars[i].mapped)
			return vt_error_set(err, EBUSY, dev->name, "add PCI device",
			                    "BAR %d overlaps another device", i);
	return 0;
}

static void pci_destroy(void *opaque)
{
	struct pci_bus *pb = opaque;

	pthread_mutex_destroy(&pb->lock);
	pthread_mutex_destroy(&pb->irq_lock);
	free(pb);
}

int pci_init(struct vm *vm, struct vt_error *err)
{
	struct pci_bus *pb = calloc(1, sizeof(*pb));
	int ret;

	if (!pb)
		return vt_error_set(err, ENOMEM, "pci", "create", NULL);
	pb->vm = vm;
	pb->next_io = VM_PCI_IO_BASE;
	pb->next_mmio = (uint32_t)VM_PCI_MMIO_BASE;
	pthread_mutex_init(&pb->lock, NULL);
	pthread_mutex_init(&pb->irq_lock, NULL);
	if ((ret = vm_add_device(vm, "pci", pb, pci_destroy, err)))
		return ret;

	/* 00:00.0 i440FX host bridge, 00:01.0 PIIX3 ISA bridge: what "pc" guests expect. */
	pci_dev_init(&pb->host, "i440fx", 0x8086, 0x1237, 0x060000, 0x02);
	pci_dev_init(&pb->isa, "piix3-isa", 0x8086, 0x7000, 0x060100, 0x00);
	pb->isa.cfg[PCI_HEADER_TYPE] = 0x80; /* multi-function: IDE etc. live at .1 and up */
	static const uint8_t pirq_routes[4] = { 10, 10, 11, 11 };
	for (int i = 0; i < 4; i++) {
		pb->isa.cfg[PIIX_PIRQ_ROUTE + i] = pirq_routes[i];
		pb->isa.wmask[PIIX_PIRQ_ROUTE + i] = PIRQ_DISABLED | 0x0f;
	}
	/* i440FX PAM0..6 (0x59..0x5f): stored only. C0000-FFFFF is always RAM here; the
	 * BIOS's last 128 KiB are copied to E0000 at power-on instead of shadowed. */
	for (int i = 0x59; i <= 0x5f; i++)
		pb->host.wmask[i] = 0xff;
	pb->host.wmask[0x72] = 0xff; /* SMRAM: stored, no SMM */
	if ((ret = pci_add_device(vm, &pb->host, err)) || (ret = pci_add_device(vm, &pb->isa, err)))
		return ret;
	return bus_register(&vm->pio, PCI_CONFIG_ADDR, 8, pci_config_io, pb, err);
}
