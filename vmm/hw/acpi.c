/* ACPI: the PM1 register block (power-off through S5, the PM timer) and the tables a
 * guest needs to find the CPUs, the interrupt controllers and how to power off:
 * RSDP -> RSDT/XSDT -> FADT (-> FACS, DSDT with \_S5), MADT, built as two blobs
 * (boot/tables.h): copied to the legacy BIOS area (0xe0000) for a direct kernel boot,
 * where guests that are not told the RSDP's address scan for it, or handed to SeaBIOS
 * through fw_cfg. */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/boot/tables.h"
#include "vmm/hw/devices.h"
#include "vmm/vm.h"

#define PM_BASE        0x600
#define PM1_EVT        0x00   /* status (2) + enable (2) */
#define PM1_CNT        0x04
#define PM_TMR         0x08
#define PM_LEN         0x0c
#define PM1_CNT_SCI_EN 0x0001
#define PM1_PWRBTN     0x0100 /* PM1 status and enable: the power button */
#define PM1_CNT_SLP_EN 0x2000
#define SLP_TYP_S5     5      /* the value \_S5 in the DSDT names */
#define SCI_IRQ        9
#define RESET_PORT     0xcf9
#define RESET_VALUE    0x06
#define IOAPIC_ADDR    0xfec00000u
#define LAPIC_ADDR     0xfee00000u

struct acpi_pm {
	struct vm *vm;
	pthread_mutex_t lock;
	uint16_t sts, en, cnt;
	bool sci;                     /* the level on SCI_IRQ */
};

struct __attribute__((packed)) acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem_id[6], oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
};
_Static_assert(sizeof(struct acpi_header) == 36, "ACPI table header");

struct __attribute__((packed)) acpi_rsdp {
	char signature[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt;
	uint32_t length;
	uint64_t xsdt;
	uint8_t ext_checksum, reserved[3];
};
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");

struct __attribute__((packed)) acpi_gas {
	uint8_t space, bit_width, bit_offset, access_size;
	uint64_t address;
};
_Static_assert(sizeof(struct acpi_gas) == 12, "generic address structure");

/* FADT revision 3 (ACPI 2.0+), 244 bytes. */
struct __attribute__((packed)) acpi_fadt {
	struct acpi_header h;
	uint32_t facs, dsdt;
	uint8_t reserved0, pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt, pm1b_evt, pm1a_cnt, pm1b_cnt, pm2_cnt, pm_tmr, gpe0, gpe1;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len, gpe0_len, gpe1_len,
		gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_facs, x_dsdt;
	struct acpi_gas x_pm1a_evt, x_pm1b_evt, x_pm1a_cnt, x_pm1b_cnt, x_pm2_cnt, x_pm_tmr,
		x_gpe0, x_gpe1;
};
_Static_assert(sizeof(struct acpi_fadt) == 244, "FADT");

struct __attribute__((packed)) acpi_facs {
	char signature[4];
	uint32_t length, hw_signature, waking_vector, global_lock, flags;
	uint64_t x_waking_vector;
	uint8_t version, reserved[31];
};
_Static_assert(sizeof(struct acpi_facs) == 64, "FACS");

struct __attribute__((packed)) madt_lapic {
	uint8_t type, length, processor_id, apic_id;
	uint32_t flags;
};
struct __attribute__((packed)) madt_ioapic {
	uint8_t type, length, id, reserved;
	uint32_t address, gsi_base;
};
struct __attribute__((packed)) madt_override {
	uint8_t type, length, bus, source;
	uint32_t gsi;
	uint16_t flags;
};
_Static_assert(sizeof(struct madt_lapic) == 8 && sizeof(struct madt_ioapic) == 12 &&
	       sizeof(struct madt_override) == 10, "MADT entries");

/* The DSDT's body, compiled by iasl from:
 *   Scope (\_SB) {
 *     Device (KBD) { Name (_HID, EisaId ("PNP0303"))
 *       Name (_CRS, ResourceTemplate () { IO (Decode16, 0x60, 0x60, 1, 1)
 *                                          IO (Decode16, 0x64, 0x64, 1, 1) IRQNoFlags () {1} }) }
 *     Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, One)
 *       Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 0, 8) IRQNoFlags () {4} }) }
 *   }
 *   Name (_S5, Package (4) { 5, 5, 0, 0 })
 * SeaBIOS reads the DSDT too: without a PNP0303 device it skips its PS/2 keyboard set-up. */
static const uint8_t dsdt_aml[] = {
	0x10, 0x42, 0x06, 0x5f, 0x53, 0x42, 0x5f, 0x5b, 0x82, 0x2d, 0x4b, 0x42,
	0x44, 0x5f, 0x08, 0x5f, 0x48, 0x49, 0x44, 0x0c, 0x41, 0xd0, 0x03, 0x03,
	0x08, 0x5f, 0x43, 0x52, 0x53, 0x11, 0x18, 0x0a, 0x15, 0x47, 0x01, 0x60,
	0x00, 0x60, 0x00, 0x01, 0x01, 0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01,
	0x01, 0x22, 0x02, 0x00, 0x79, 0x00, 0x5b, 0x82, 0x2b, 0x43, 0x4f, 0x4d,
	0x31, 0x08, 0x5f, 0x48, 0x49, 0x44, 0x0c, 0x41, 0xd0, 0x05, 0x01, 0x08,
	0x5f, 0x55, 0x49, 0x44, 0x01, 0x08, 0x5f, 0x43, 0x52, 0x53, 0x11, 0x10,
	0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08, 0x22, 0x10,
	0x00, 0x79, 0x00, 0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08, 0x04, 0x0a,
	SLP_TYP_S5, 0x0a, SLP_TYP_S5, 0x00, 0x00,
};

static uint64_t pm_timer_ticks(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* 3.579545 MHz: whole seconds and the fraction separately, so nothing overflows. */
	return (uint64_t)ts.tv_sec * 3579545u + (uint64_t)ts.tv_nsec * 3579545u / 1000000000u;
}

/* The SCI is level-triggered: up while an enabled event's status bit is set. Lock held. */
static void acpi_update_sci(struct acpi_pm *pm)
{
	bool level = (pm->sts & pm->en & PM1_PWRBTN) && (pm->cnt & PM1_CNT_SCI_EN);

	if (level != pm->sci) {
		pm->sci = level;
		vm_irq_line(pm->vm, SCI_IRQ, level);
	}
}

/* system_powerdown: the fixed-feature power button, as a PIIX4 PM's (qemu's
 * acpi_pm1_evt_power_down): PWRBTN_STS set, an SCI if the guest enabled it. A guest
 * without ACPI power-button handling ignores it, as it would on qemu. */
void acpi_press_power_button(struct vm *vm)
{
	struct acpi_pm *pm = vm_device(vm, "acpi-pm");

	if (!pm)
		return;
	pthread_mutex_lock(&pm->lock);
	pm->sts |= PM1_PWRBTN;
	acpi_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static void acpi_pm_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                       bool is_write)
{
	struct acpi_pm *pm = opaque;
	uint8_t regs[PM_LEN];

	pthread_mutex_lock(&pm->lock);
	uint32_t tmr = (uint32_t)(pm_timer_ticks() & 0xffffff);
	memcpy(regs + 0, &pm->sts, 2);
	memcpy(regs + 2, &pm->en, 2);
	memcpy(regs + 4, &pm->cnt, 2);
	memset(regs + 6, 0, 2);
	memcpy(regs + 8, &tmr, 4);
	if (!is_write) {
		memcpy(data, regs + offset, len);
	} else if (offset + len <= 2) {
		uint16_t v = 0;
		memcpy((uint8_t *)&v + offset, data, len);
		pm->sts &= (uint16_t)~v; /* write one to clear */
	} else if (offset >= 2 && offset + len <= 4) {
		memcpy((uint8_t *)&pm->en + (offset - 2), data, len);
	} else if (offset >= 4 && offset + len <= 6) {
		memcpy((uint8_t *)&pm->cnt + (offset - 4), data, len);
		if (pm->cnt & PM1_CNT_SLP_EN) {
			unsigned typ = (pm->cnt >> 10) & 7;
			pm->cnt &= (uint16_t)~PM1_CNT_SLP_EN;
			if (typ == SLP_TYP_S5)
				vm_request_stop(pm->vm, VM_STOP_POWEROFF, 0, NULL);
		}
		pm->cnt |= PM1_CNT_SCI_EN; /* no SMM: ACPI mode is always on */
	}
	if (is_write)
		acpi_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static void acpi_pm_destroy(void *opaque)
{
	struct acpi_pm *pm = opaque;

	pthread_mutex_destroy(&pm->lock);
	free(pm);
}

int acpi_pm_init(struct vm *vm, struct vt_error *err)
{
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	int ret;

	if (!pm)
		return vt_error_set(err, ENOMEM, "acpi", "create", NULL);
	pm->vm = vm;
	pm->cnt = PM1_CNT_SCI_EN;
	pthread_mutex_init(&pm->lock, NULL);
	if ((ret = vm_add_device(vm, "acpi-pm", pm, acpi_pm_destroy, err)))
		return ret;
	return bus_register(&vm->pio, PM_BASE, PM_LEN, acpi_pm_io, pm, err);
}

static void acpi_header_init(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, "VTOOL ", 6);
	memcpy(h->oem_table_id, "VTOOLVM ", 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, "VTL ", 4);
	h->creator_revision = 1;
}

static struct acpi_gas gas_io(uint16_t port, uint8_t bits)
{
	return (struct acpi_gas){ .space = 1, .bit_width = bits, .access_size = bits / 8 > 2 ? 3 : bits / 8,
	                          .address = port };
}

/* Append a finished table (header included) and its checksum fix-up. */
static uint32_t acpi_add(struct fw_tables *t, int blob, const void *table, uint32_t len)
{
	uint32_t off = fw_tables_append(t, blob, table, len, 16);

	fw_tables_checksum(t, blob, off + offsetof(struct acpi_header, checksum), off, len);
	return off;
}

#define FIELD_OFF(type, field) ((uint32_t)offsetof(type, field))

int acpi_build(struct vm *vm, struct fw_tables *t)
{
	int n = vm->nr_vcpus;
	int rb = fw_tables_blob(t, "etc/acpi/rsdp", 16, true);
	int tb = fw_tables_blob(t, "etc/acpi/tables", 64, false);

	/* FACS first: it wants 64-byte alignment. */
	struct acpi_facs facs = { .length = sizeof(facs), .version = 1 };
	memcpy(facs.signature, "FACS", 4);
	uint32_t facs_off = fw_tables_append(t, tb, &facs, sizeof(facs), 64);

	uint8_t dsdt[sizeof(struct acpi_header) + sizeof(dsdt_aml)] = { 0 };
	acpi_header_init((struct acpi_header *)dsdt, "DSDT", sizeof(dsdt), 2);
	memcpy(dsdt + sizeof(struct acpi_header), dsdt_aml, sizeof(dsdt_aml));
	uint32_t dsdt_off = acpi_add(t, tb, dsdt, sizeof(dsdt));

	struct acpi_fadt fadt = { 0 };
	acpi_header_init(&fadt.h, "FACP", sizeof(fadt), 3);
	fadt.facs = facs_off;
	fadt.dsdt = dsdt_off;
	fadt.x_facs = facs_off;
	fadt.x_dsdt = dsdt_off;
	fadt.sci_int = SCI_IRQ;
	fadt.pm1a_evt = PM_BASE + PM1_EVT;
	fadt.pm1a_cnt = PM_BASE + PM1_CNT;
	fadt.pm_tmr = PM_BASE + PM_TMR;
	fadt.pm1_evt_len = 4;
	fadt.pm1_cnt_len = 2;
	fadt.pm_tmr_len = 4;
	fadt.p_lvl2_lat = 101;  /* > 100: no C2 */
	fadt.p_lvl3_lat = 1001; /* > 1000: no C3 */
	fadt.century = 0x32;
	fadt.iapc_boot_arch = 0x3; /* legacy devices, an 8042 */
	/* WBINVD, C1 on all CPUs, a fixed-feature power button (system_powerdown), no sleep
	 * button, reset register supported. */
	fadt.flags = (1u << 0) | (1u << 2) | (1u << 5) | (1u << 10);
	fadt.reset_reg = gas_io(RESET_PORT, 8);
	fadt.reset_value = RESET_VALUE;
	fadt.x_pm1a_evt = gas_io(PM_BASE + PM1_EVT, 32);
	fadt.x_pm1a_cnt = gas_io(PM_BASE + PM1_CNT, 16);
	fadt.x_pm_tmr = gas_io(PM_BASE + PM_TMR, 32);
	uint32_t fadt_off = acpi_add(t, tb, &fadt, sizeof(fadt));
	fw_tables_pointer(t, tb, fadt_off + FIELD_OFF(struct acpi_fadt, facs), 4, tb);
	fw_tables_pointer(t, tb, fadt_off + FIELD_OFF(struct acpi_fadt, dsdt), 4, tb);
	fw_tables_pointer(t, tb, fadt_off + FIELD_OFF(struct acpi_fadt, x_facs), 8, tb);
	fw_tables_pointer(t, tb, fadt_off + FIELD_OFF(struct acpi_fadt, x_dsdt), 8, tb);

	uint8_t madt[sizeof(struct acpi_header) + 8 + VM_MAX_VCPUS * sizeof(struct madt_lapic) +
	             sizeof(struct madt_ioapic) + 2 * sizeof(struct madt_override)];
	uint32_t madt_len = (uint32_t)(sizeof(struct acpi_header) + 8 +
	                               (size_t)n * sizeof(struct madt_lapic) +
	                               sizeof(struct madt_ioapic) + 2 * sizeof(struct madt_override));
	memset(madt, 0, sizeof(madt));
	acpi_header_init((struct acpi_header *)madt, "APIC", madt_len, 3);
	uint32_t lapic_addr = LAPIC_ADDR, pcat_compat = 1;
	memcpy(madt + 36, &lapic_addr, 4);
	memcpy(madt + 40, &pcat_compat, 4);
	uint8_t *p = madt + 44;
	for (int i = 0; i < n; i++, p += sizeof(struct madt_lapic)) {
		struct madt_lapic l = { 0, sizeof(l), (uint8_t)i, (uint8_t)i, 1 };
		memcpy(p, &l, sizeof(l));
	}
	struct madt_ioapic io = { 1, sizeof(io), (uint8_t)n, 0, IOAPIC_ADDR, 0 };
	memcpy(p, &io, sizeof(io));
	p += sizeof(io);
	/* The PIT's IRQ 0 arrives on IOAPIC pin 2; the SCI is level-triggered, active high. */
	struct madt_override irq0 = { 2, sizeof(irq0), 0, 0, 2, 0 };
	struct madt_override sci = { 2, sizeof(sci), 0, SCI_IRQ, SCI_IRQ, 0x000d };
	memcpy(p, &irq0, sizeof(irq0));
	memcpy(p + sizeof(irq0), &sci, sizeof(sci));
	uint32_t madt_off = acpi_add(t, tb, madt, madt_len);

	struct { struct acpi_header h; uint32_t e[2]; } __attribute__((packed)) rsdt = {
		.e = { fadt_off, madt_off } };
	acpi_header_init(&rsdt.h, "RSDT", sizeof(rsdt), 1);
	uint32_t rsdt_off = acpi_add(t, tb, &rsdt, sizeof(rsdt));
	struct { struct acpi_header h; uint64_t e[2]; } __attribute__((packed)) xsdt = {
		.e = { fadt_off, madt_off } };
	acpi_header_init(&xsdt.h, "XSDT", sizeof(xsdt), 1);
	uint32_t xsdt_off = acpi_add(t, tb, &xsdt, sizeof(xsdt));
	for (int i = 0; i < 2; i++) {
		fw_tables_pointer(t, tb, rsdt_off + (uint32_t)sizeof(struct acpi_header) + 4u * (uint32_t)i, 4, tb);
		fw_tables_pointer(t, tb, xsdt_off + (uint32_t)sizeof(struct acpi_header) + 8u * (uint32_t)i, 8, tb);
	}

	struct acpi_rsdp rsdp = { .revision = 2, .rsdt = rsdt_off, .length = sizeof(rsdp),
	                          .xsdt = xsdt_off };
	memcpy(rsdp.signature, "RSD PTR ", 8);
	memcpy(rsdp.oem_id, "VTOOL ", 6);
	fw_tables_append(t, rb, &rsdp, sizeof(rsdp), 16);
	fw_tables_pointer(t, rb, FIELD_OFF(struct acpi_rsdp, rsdt), 4, tb);
	fw_tables_pointer(t, rb, FIELD_OFF(struct acpi_rsdp, xsdt), 8, tb);
	fw_tables_checksum(t, rb, FIELD_OFF(struct acpi_rsdp, checksum), 0, 20);
	fw_tables_checksum(t, rb, FIELD_OFF(struct acpi_rsdp, ext_checksum), 0, sizeof(rsdp));
	return t->failed ? -ENOMEM : 0;
}
