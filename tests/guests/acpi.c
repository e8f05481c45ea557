/* tguest: just enough ACPI to count CPUs and power off. */
#include "rt.h"

struct sdt {
	char sig[4];
	uint32_t len;
	uint8_t rev, sum;
	char oem[6], table[8];
	uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

static uint64_t find_rsdp(void)
{
	if (boot.rsdp)
		return boot.rsdp;
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
		if (!memcmp((const void *)(uintptr_t)a, "RSD PTR ", 8))
			return a;
	return 0;
}

const void *acpi_find(const char *sig)
{
	uint64_t rsdp = find_rsdp();
	if (!rsdp)
		return NULL;
	const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
	uint32_t rsdt;
	uint64_t xsdt = 0;
	memcpy(&rsdt, r + 16, 4);
	if (r[15] >= 2)
		memcpy(&xsdt, r + 24, 8);
	const struct sdt *t = (const void *)(uintptr_t)(xsdt ? xsdt : rsdt);
	int width = xsdt ? 8 : 4;
	int n = (int)((t->len - sizeof(*t)) / (uint32_t)width);
	for (int i = 0; i < n; i++) {
		uint64_t a = 0;
		memcpy(&a, (const uint8_t *)(t + 1) + i * width, (size_t)width);
		const struct sdt *e = (const void *)(uintptr_t)a;
		if (!memcmp(e->sig, sig, 4))
			return e;
	}
	return NULL;
}

int acpi_count_cpus(void)
{
	const struct sdt *madt = acpi_find("APIC");
	if (!madt)
		return -1;
	const uint8_t *p = (const uint8_t *)madt + 44, *end = (const uint8_t *)madt + madt->len;
	int n = 0;
	while (p + 2 <= end && p[1] >= 2) {
		uint32_t flags;
		memcpy(&flags, p + 4, 4);
		if (p[0] == 0 && (flags & 1))
			n++;
		p += p[1];
	}
	return n;
}

void acpi_poweroff(void)
{
	const struct sdt *fadt = acpi_find("FACP");
	if (!fadt)
		fail("poweroff", "no FADT");
	const uint8_t *f = (const uint8_t *)fadt;
	uint32_t dsdt_addr, pm1a_cnt;
	memcpy(&dsdt_addr, f + 40, 4);
	memcpy(&pm1a_cnt, f + 64, 4);
	const struct sdt *dsdt = (const void *)(uintptr_t)dsdt_addr;
	const uint8_t *p = (const uint8_t *)dsdt, *end = p + dsdt->len;
	int slp_typ = -1;
	/* Name(_S5_, Package(){a, b, ...}): skip PackageOp, PkgLength, NumElements. */
	for (; p + 8 < end; p++) {
		if (memcmp(p, "_S5_", 4) || p[4] != 0x12)
			continue;
		const uint8_t *q = p + 5;
		q += (*q >> 6) + 1;      /* PkgLength: 1 + follow-up bytes */
		q++;                     /* NumElements */
		if (*q == 0x0a)
			slp_typ = q[1];
		else if (*q == 0x00 || *q == 0x01)
			slp_typ = *q;
		break;
	}
	if (slp_typ < 0)
		fail("poweroff", "no \\_S5 in the DSDT");
	printf("TG-POWEROFF pm1a_cnt=0x%x slp_typ=%d\n", pm1a_cnt, slp_typ);
	outw((uint16_t)pm1a_cnt, (uint16_t)(slp_typ << 10 | 1 << 13));
}

/* The power button (system_powerdown), handled as an OS does: SCI routed through the
 * IOAPIC, PWRBTN_EN set; the interrupt's handler (entry.S) acknowledges PWRBTN_STS; then
 * the guest powers off through \_S5. */
volatile uint32_t sci_count;
volatile uint16_t sci_pm1_evt;

void acpi_power_button(void)
{
	const uint8_t *f = acpi_find("FACP");
	if (!f)
		fail("powerbtn", "no FADT");
	uint16_t sci;
	uint32_t evt, flags;
	memcpy(&sci, f + 46, 2);
	memcpy(&evt, f + 56, 4);
	memcpy(&flags, f + 112, 4);
	if (flags & (1u << 4))
		fail("powerbtn", "the FADT says there is no fixed-feature power button");
	sci_pm1_evt = (uint16_t)evt;
	outb(0x21, 0xff);                                  /* PICs masked: IOAPIC only */
	outb(0xa1, 0xff);
	outw((uint16_t)evt, 0x100);                        /* clear a stale PWRBTN_STS */
	outw((uint16_t)(evt + 2), 0x100);                  /* PWRBTN_EN */
	mmio_write32(0xfee000f0, 0x1ff);                   /* LAPIC on */
	mmio_write32(0xfec00000, 0x10 + 2 * sci + 1);      /* IOAPIC: to APIC 0 */
	mmio_write32(0xfec00010, 0);
	mmio_write32(0xfec00000, 0x10 + 2 * sci);          /* vector 0x41, level, active high */
	mmio_write32(0xfec00010, 0x41 | 1u << 15);
	printf("TG-PWRBTN waiting sci=%u pm1a_evt=0x%x\n", sci, evt);
	while (!sci_count)
		__asm__ volatile("sti; hlt; cli");
	printf("TG-PWRBTN pressed sci_count=%u\n", sci_count);
	acpi_poweroff();
	for (;;)
		__asm__ volatile("cli; hlt"); /* the power goes off */
}
