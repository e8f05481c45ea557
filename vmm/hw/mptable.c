/* Intel MultiProcessor Specification 1.4 tables, for guests that look for CPUs and
 * interrupt routing there instead of in ACPI: a floating pointer in the BIOS area and a
 * configuration table listing the CPUs, the ISA bus, the IOAPIC and how ISA IRQs reach it. */
#include <errno.h>
#include <string.h>

#include "vmm/hw/devices.h"
#include "vmm/vm.h"


struct __attribute__((packed)) mpf_intel {
	char signature[4];
	uint32_t physptr;
	uint8_t length, specification, checksum, feature1, feature2, feature3[3];
};
_Static_assert(sizeof(struct mpf_intel) == 16, "MP floating pointer");

struct __attribute__((packed)) mpc_table {
	char signature[4];
	uint16_t length;
	uint8_t spec, checksum;
	char oem[8], productid[12];
	uint32_t oemptr;
	uint16_t oemsize, oemcount;
	uint32_t lapic;
	uint16_t ext_length;
	uint8_t ext_checksum, reserved;
};
_Static_assert(sizeof(struct mpc_table) == 44, "MP configuration table header");

struct __attribute__((packed)) mpc_cpu {
	uint8_t type, apicid, apicver, cpuflag;
	uint32_t cpufeature, featureflag, reserved[2];
};
struct __attribute__((packed)) mpc_bus {
	uint8_t type, busid;
	char bustype[6];
};
struct __attribute__((packed)) mpc_ioapic {
	uint8_t type, apicid, apicver, flags;
	uint32_t apicaddr;
};
struct __attribute__((packed)) mpc_intsrc {
	uint8_t type, irqtype;
	uint16_t irqflag;
	uint8_t srcbus, srcbusirq, dstapic, dstirq;
};
_Static_assert(sizeof(struct mpc_cpu) == 20 && sizeof(struct mpc_bus) == 8 &&
	       sizeof(struct mpc_ioapic) == 8 && sizeof(struct mpc_intsrc) == 8, "MP entries");

static uint8_t mp_sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

int mptable_build(const struct vm *vm, uint64_t addr, uint8_t *base, size_t max)
{
	int n = vm->nr_vcpus;
	uint8_t ioapic_id = (uint8_t)n;
	size_t need = sizeof(struct mpf_intel) + sizeof(struct mpc_table) +
	              (size_t)n * sizeof(struct mpc_cpu) + sizeof(struct mpc_bus) +
	              sizeof(struct mpc_ioapic) + 18 * sizeof(struct mpc_intsrc);

	if (need > max)
		return -ENOSPC;
	memset(base, 0, need);
	struct mpf_intel *mpf = (struct mpf_intel *)base;
	struct mpc_table *mpc = (struct mpc_table *)(base + sizeof(*mpf));
	uint8_t *p = (uint8_t *)(mpc + 1);
	uint16_t count = 0;

	for (int i = 0; i < n; i++, count++, p += sizeof(struct mpc_cpu)) {
		struct mpc_cpu c = { 0, (uint8_t)i, 0x14, (uint8_t)(1 | (i == 0 ? 2 : 0)),
		                     0x600, 0x201, { 0, 0 } };
		memcpy(p, &c, sizeof(c));
	}
	struct mpc_bus isa = { 1, 0, { 'I', 'S', 'A', ' ', ' ', ' ' } };
	memcpy(p, &isa, sizeof(isa));
	p += sizeof(isa);
	count++;
	struct mpc_ioapic io = { 2, ioapic_id, 0x11, 1, 0xfec00000u };
	memcpy(p, &io, sizeof(io));
	p += sizeof(io);
	count++;
	/* ISA IRQs 0..15 go to the same IOAPIC pins, except IRQ 0 which arrives on pin 2. */
	for (uint8_t irq = 0; irq < 16; irq++, count++, p += sizeof(struct mpc_intsrc)) {
		if (irq == 2) {
			struct mpc_intsrc ext = { 3, 3, 0, 0, 0, ioapic_id, 0 }; /* ExtINT via pin 0 */
			memcpy(p, &ext, sizeof(ext));
			continue;
		}
		struct mpc_intsrc s = { 3, 0, 0, 0, irq, ioapic_id, irq == 0 ? 2 : irq };
		memcpy(p, &s, sizeof(s));
	}
	struct mpc_intsrc lint0 = { 4, 3, 0, 0, 0, 0xff, 0 }; /* ExtINT to every LINT0 */
	struct mpc_intsrc lint1 = { 4, 1, 0, 0, 0, 0xff, 1 }; /* NMI to every LINT1 */
	memcpy(p, &lint0, sizeof(lint0));
	memcpy(p + 8, &lint1, sizeof(lint1));
	p += 16;
	count += 2;

	memcpy(mpc->signature, "PCMP", 4);
	mpc->length = (uint16_t)(p - (uint8_t *)mpc);
	mpc->spec = 4;
	memcpy(mpc->oem, "VTOOL   ", 8);
	memcpy(mpc->productid, "VTOOLVM     ", 12);
	mpc->oemcount = count;
	mpc->lapic = 0xfee00000u;
	mpc->checksum = (uint8_t)-mp_sum((uint8_t *)mpc, mpc->length);

	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)(addr + sizeof(*mpf));
	mpf->length = 1;
	mpf->specification = 4;
	mpf->checksum = (uint8_t)-mp_sum((uint8_t *)mpf, sizeof(*mpf));
	return (int)(p - base);
}
