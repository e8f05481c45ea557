/* PCI bus 0 behind an i440FX host bridge (configuration mechanism #1 at 0xcf8/0xcfc).
 *
 * A PCI function is a struct pci_dev: 256 bytes of configuration space, which bits of it
 * the guest may write, and up to six 32-bit BARs. pci_add_device() places the function
 * in a free slot, assigns its BARs addresses in the PCI hole (no firmware runs before a
 * direct kernel boot) and maps them on the I/O or MMIO bus; a guest that reprograms a
 * BAR or the command register moves or unmaps them. Devices see only their own BAR
 * accesses and, optionally, a hook after config writes (MSI-X enable and the like).
 *
 * INTx: function f of slot s raising pin p (1 = INTA) drives PIIX3 PIRQ (s + p - 2) & 3,
 * which the PIIX3's route registers (ISA bridge config 0x60..0x63) send to an ISA IRQ,
 * level-triggered and shared. The routes start as SeaBIOS programs them (10, 10, 11, 11)
 * so a direct kernel boot sees the same wiring, and INTERRUPT_LINE is filled to match.
 *
 * A function may have an expansion ROM (pci_set_rom): its BAR at 0x30 is sized and
 * placed like the others and maps the image read-only while enabled. */
#ifndef VTOOL_VMM_HW_PCI_H
#define VTOOL_VMM_HW_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"
#include "vmm/bus.h"

struct vm;

#define PCI_VENDOR_ID      0x00
#define PCI_DEVICE_ID      0x02
#define PCI_COMMAND        0x04
#define PCI_STATUS         0x06
#define PCI_REVISION       0x08
#define PCI_CLASS_PROG     0x09
#define PCI_HEADER_TYPE    0x0e
#define PCI_BAR0           0x10
#define PCI_SUBSYS_VENDOR  0x2c
#define PCI_SUBSYS_ID      0x2e
#define PCI_CAP_PTR        0x34
#define PCI_ROM_ADDRESS    0x30
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN  0x3d

#define PCI_COMMAND_IO     0x1
#define PCI_COMMAND_MEM    0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP     0x10

struct pci_bar {
	uint32_t size;          /* power of two; 0 = unused */
	bool io;
	bool prefetch;          /* memory BAR: prefetchable (a frame buffer) */
	bus_io_fn *fn;
	void *opaque;
	uint32_t addr;          /* where it is mapped (when mapped) */
	bool mapped;
};

struct pci_dev {
	const char *name;
	uint8_t cfg[256];
	uint8_t wmask[256];     /* guest-writable bits; BARs are handled separately */
	struct pci_bar bars[6];
	int devfn;              /* 0: pci_add_device picks the next free slot */
	int irq_asserted;       /* the ISA IRQ this function holds high, or -1 */
	uint8_t *rom;           /* expansion ROM image (pci_set_rom), page-aligned */
	char rom_region[16];    /* its name in the memory table */
	uint32_t rom_size, rom_len;  /* BAR size (power of two), bytes of image */
	uint32_t rom_addr;      /* where it is mapped, 0 when not */
	/* Optional: a BAR was mapped at addr or unmapped (ioeventfds follow the BAR). */
	void (*bar_mapped)(struct pci_dev *dev, int bar, bool mapped, uint32_t addr);
	/* Optional: called after the guest wrote [off, off+len) of config space. */
	void (*config_written)(struct pci_dev *dev, unsigned off, unsigned len);
	void *opaque;
	struct vm *vm;
};

/* Fill the identity fields and make the standard writable bits writable. */
void pci_dev_init(struct pci_dev *dev, const char *name, uint16_t vendor, uint16_t device,
                  uint32_t class_code, uint8_t revision);
static inline void pci_cfg_set16(struct pci_dev *d, unsigned off, uint16_t v)
{
	d->cfg[off] = (uint8_t)v;
	d->cfg[off + 1] = (uint8_t)(v >> 8);
}
static inline void pci_cfg_set32(struct pci_dev *d, unsigned off, uint32_t v)
{
	pci_cfg_set16(d, off, (uint16_t)v);
	pci_cfg_set16(d, off + 2, (uint16_t)(v >> 16));
}
static inline uint16_t pci_cfg_get16(const struct pci_dev *d, unsigned off)
{
	return (uint16_t)(d->cfg[off] | d->cfg[off + 1] << 8);
}
static inline uint32_t pci_cfg_get32(const struct pci_dev *d, unsigned off)
{
	return pci_cfg_get16(d, off) | (uint32_t)pci_cfg_get16(d, off + 2) << 16;
}

/* Raise or lower the function's INTx pin (no-op before it is plugged in). */
void pci_set_irq(struct pci_dev *dev, bool level);

/* Give the function an expansion ROM (a copy of image; before pci_add_device). */
int pci_set_rom(struct vm *vm, struct pci_dev *dev, const uint8_t *image, uint32_t len,
                struct vt_error *err);

/* Plug a function into dev->devfn, or the next free slot when that is 0. The pci_dev
 * must outlive the VM. */
int pci_add_device(struct vm *vm, struct pci_dev *dev, struct vt_error *err)
	__attribute__((warn_unused_result));

#endif
