/* SMBIOS 2.8 structures (DMTF DSP0134) with qemu pc's defaults and handle numbering. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/boot/smbios.h"
#include "vmm/hw/fw_cfg.h"
#include "vmm/vm.h"

#define SMBIOS_MANUFACTURER "QEMU"
#define SMBIOS_PRODUCT      "Standard PC (i440FX + PIIX, 1996)"
#define SMBIOS_VERSION      "pc-i440fx-7.2"
#define SMBIOS_DIMM_MAX     (16ull << 30)   /* qemu splits RAM into 16 GiB DIMMs */
#define SMBIOS_MAX_SIZE     8192

struct __attribute__((packed)) smbios_header {
	uint8_t type, length;
	uint16_t handle;
};

struct __attribute__((packed)) smbios_type1 {
	struct smbios_header h;
	uint8_t manufacturer, product, version, serial;
	uint8_t uuid[16];
	uint8_t wake_up_type, sku, family;
};
_Static_assert(sizeof(struct smbios_type1) == 27, "SMBIOS type 1");

struct __attribute__((packed)) smbios_type3 {
	struct smbios_header h;
	uint8_t manufacturer, type, version, serial, asset_tag;
	uint8_t boot_up_state, power_supply_state, thermal_state, security_status;
	uint32_t oem_defined;
	uint8_t height, power_cords, contained_count, contained_length, sku;
};
_Static_assert(sizeof(struct smbios_type3) == 22, "SMBIOS type 3");

struct __attribute__((packed)) smbios_type4 {
	struct smbios_header h;
	uint8_t socket, processor_type, family, manufacturer;
	uint32_t id[2];
	uint8_t version, voltage;
	uint16_t external_clock, max_speed, current_speed;
	uint8_t status, upgrade;
	uint16_t l1, l2, l3;
	uint8_t serial, asset_tag, part;
	uint8_t core_count, core_enabled, thread_count;
	uint16_t characteristics, family2;
};
_Static_assert(sizeof(struct smbios_type4) == 42, "SMBIOS type 4");

struct __attribute__((packed)) smbios_type16 {
	struct smbios_header h;
	uint8_t location, use, error_correction;
	uint32_t maximum_capacity;
	uint16_t error_handle, devices;
	uint64_t extended_maximum_capacity;
};
_Static_assert(sizeof(struct smbios_type16) == 23, "SMBIOS type 16");

struct __attribute__((packed)) smbios_type17 {
	struct smbios_header h;
	uint16_t array_handle, error_handle, total_width, data_width, size;
	uint8_t form_factor, device_set, locator, bank_locator, memory_type;
	uint16_t type_detail, speed;
	uint8_t manufacturer, serial, asset_tag, part, attributes;
	uint32_t extended_size;
	uint16_t configured_speed, min_voltage, max_voltage, configured_voltage;
};
_Static_assert(sizeof(struct smbios_type17) == 40, "SMBIOS type 17");

struct __attribute__((packed)) smbios_type19 {
	struct smbios_header h;
	uint32_t start, end;
	uint16_t array_handle;
	uint8_t partition_width;
	uint64_t extended_start, extended_end;
};
_Static_assert(sizeof(struct smbios_type19) == 31, "SMBIOS type 19");

struct __attribute__((packed)) smbios_type32 {
	struct smbios_header h;
	uint8_t reserved[6];
	uint8_t boot_status;
};
_Static_assert(sizeof(struct smbios_type32) == 11, "SMBIOS type 32");

/* The 32-bit (2.1) entry point, as qemu 7.2's pc machine gives it (SMBIOS 2.8). */
struct __attribute__((packed)) smbios_21_entry {
	char anchor[4];
	uint8_t checksum, length, major, minor;
	uint16_t max_structure_size;
	uint8_t revision, formatted[5];
	char intermediate_anchor[5];
	uint8_t intermediate_checksum;
	uint16_t table_length;
	uint32_t table_address;
	uint16_t structures;
	uint8_t bcd_revision;
};
_Static_assert(sizeof(struct smbios_21_entry) == 31, "SMBIOS 2.1 entry point");

static uint8_t sum8(const void *p, size_t len)
{
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + ((const uint8_t *)p)[i]);
	return s;
}

struct smbios_buf {
	uint8_t data[SMBIOS_MAX_SIZE];
	size_t len;
	uint16_t count;
	size_t max_structure;
	bool overflow;
};

/* Append a formatted structure and its strings (NULL-terminated list; none: "\0\0"). */
static void smbios_add(struct smbios_buf *b, const void *s, size_t len, const char *const *str)
{
	size_t start = b->len, need = len + 2;

	for (int i = 0; str && str[i]; i++)
		need += strlen(str[i]) + 1;
	if (b->len + need > sizeof(b->data)) {
		b->overflow = true;
		return;
	}
	memcpy(b->data + b->len, s, len);
	b->len += len;
	bool any = false;
	for (int i = 0; str && str[i]; i++) {
		size_t n = strlen(str[i]) + 1;
		memcpy(b->data + b->len, str[i], n);
		b->len += n;
		any = true;
	}
	if (!any)
		b->data[b->len++] = 0;
	b->data[b->len++] = 0;
	b->count++;
	if (b->len - start > b->max_structure)
		b->max_structure = b->len - start;
}

/* The guest reads the UUID with its first three fields little-endian (SMBIOS 2.6+). */
static void smbios_uuid(uint8_t out[16], const uint8_t in[16])
{
	static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };

	for (int i = 0; i < 16; i++)
		out[i] = in[order[i]];
}

static void smbios_memory(struct smbios_buf *b, const struct vm *vm)
{
	uint64_t ram = vm->ram_size;
	uint16_t dimms = (uint16_t)((ram + SMBIOS_DIMM_MAX - 1) / SMBIOS_DIMM_MAX);
	uint64_t kib = ram >> 10;

	struct smbios_type16 t16 = {
		.h = { 16, sizeof(t16), 0x1000 }, .location = 0x01, .use = 0x03,
		.error_correction = 0x06, .error_handle = 0xfffe, .devices = dimms,
	};
	if (kib < 0x80000000ull) {
		t16.maximum_capacity = (uint32_t)kib;
	} else {
		t16.maximum_capacity = 0x80000000u;
		t16.extended_maximum_capacity = ram;
	}
	smbios_add(b, &t16, sizeof(t16), NULL);
	for (uint16_t i = 0; i < dimms; i++) {
		uint64_t size = ram - (uint64_t)i * SMBIOS_DIMM_MAX;
		uint64_t mib = (size < SMBIOS_DIMM_MAX ? size : SMBIOS_DIMM_MAX) >> 20;
		char locator[16];
		snprintf(locator, sizeof(locator), "DIMM %u", i);
		struct smbios_type17 t17 = {
			.h = { 17, sizeof(t17), (uint16_t)(0x1100 + i) }, .array_handle = 0x1000,
			.error_handle = 0xfffe, .total_width = 0xffff, .data_width = 0xffff,
			.form_factor = 0x09, .locator = 1, .memory_type = 0x07, .type_detail = 0x02,
			.manufacturer = 2,
		};
		if (mib < 0x7fff) {
			t17.size = (uint16_t)mib;
		} else {
			t17.size = 0x7fff;
			t17.extended_size = (uint32_t)mib;
		}
		const char *str[] = { locator, SMBIOS_MANUFACTURER, NULL };
		smbios_add(b, &t17, sizeof(t17), str);
	}
	/* One mapped range per RAM region: below the PCI hole and above 4 GiB. */
	uint64_t ranges[2][2] = { { 0, vm->low_ram }, { VM_4G, VM_4G + vm->high_ram } };
	for (uint16_t i = 0; i < 2; i++) {
		uint64_t start = ranges[i][0], end = ranges[i][1];
		if (end <= start)
			continue;
		struct smbios_type19 t19 = {
			.h = { 19, sizeof(t19), (uint16_t)(0x1300 + i) }, .array_handle = 0x1000,
			.partition_width = 1,
		};
		if ((end - 1) >> 10 < 0xffffffffull) {
			t19.start = (uint32_t)(start >> 10);
			t19.end = (uint32_t)((end - 1) >> 10);
		} else {
			t19.start = t19.end = 0xffffffffu;
			t19.extended_start = start;
			t19.extended_end = end - 1;
		}
		smbios_add(b, &t19, sizeof(t19), NULL);
	}
}

/* Build the structures and the entry point (table address addr, 0 for the firmware to
 * fill in). Returns the buffer (free it) or NULL with err set. */
static struct smbios_buf *smbios_build(const struct vm *vm, uint32_t addr,
                                       struct smbios_21_entry *ep, struct vt_error *err)
{
	struct smbios_buf *b = calloc(1, sizeof(*b));

	if (!b) {
		vt_error_set(err, ENOMEM, "smbios", "build tables", NULL);
		return NULL;
	}
	struct smbios_type1 t1 = {
		.h = { 1, sizeof(t1), 0x100 }, .manufacturer = 1, .product = 2, .version = 3,
		.wake_up_type = 0x06, /* power switch */
	};
	smbios_uuid(t1.uuid, vm->cfg->uuid);
	const char *s1[] = { SMBIOS_MANUFACTURER, SMBIOS_PRODUCT, SMBIOS_VERSION, NULL };
	smbios_add(b, &t1, sizeof(t1), s1);

	struct smbios_type3 t3 = {
		.h = { 3, sizeof(t3), 0x300 }, .manufacturer = 1, .type = 0x01, .version = 2,
		.boot_up_state = 0x03, .power_supply_state = 0x03, .thermal_state = 0x03,
		.security_status = 0x02,
	};
	const char *s3[] = { SMBIOS_MANUFACTURER, SMBIOS_VERSION, NULL };
	smbios_add(b, &t3, sizeof(t3), s3);

	/* One socket per vCPU, as qemu's default -smp topology. */
	for (int i = 0; i < vm->nr_vcpus; i++) {
		char socket[16];
		snprintf(socket, sizeof(socket), "CPU %d", i);
		struct smbios_type4 t4 = {
			.h = { 4, sizeof(t4), (uint16_t)(0x400 + i) }, .socket = 1,
			.processor_type = 0x03, .family = 0x01, .manufacturer = 2, .version = 3,
			.max_speed = 2000, .current_speed = 2000, .status = 0x41, .upgrade = 0x01,
			.l1 = 0xffff, .l2 = 0xffff, .l3 = 0xffff, .core_count = 1, .core_enabled = 1,
			.thread_count = 1, .characteristics = 0x02, .family2 = 0x01,
		};
		const char *s4[] = { socket, SMBIOS_MANUFACTURER, SMBIOS_VERSION, NULL };
		smbios_add(b, &t4, sizeof(t4), s4);
	}
	smbios_memory(b, vm);
	struct smbios_type32 t32 = { .h = { 32, sizeof(t32), 0x2000 } };
	smbios_add(b, &t32, sizeof(t32), NULL);
	struct smbios_header t127 = { 127, sizeof(t127), 0x7f00 };
	smbios_add(b, &t127, sizeof(t127), NULL);

	if (b->overflow) {
		free(b);
		vt_error_set(err, ENOSPC, "smbios", "build tables", "more than %d bytes",
		             SMBIOS_MAX_SIZE);
		return NULL;
	}
	*ep = (struct smbios_21_entry){
		.anchor = { '_', 'S', 'M', '_' }, .length = sizeof(*ep), .major = 2, .minor = 8,
		.max_structure_size = (uint16_t)b->max_structure,
		.intermediate_anchor = { '_', 'D', 'M', 'I', '_' },
		.table_length = (uint16_t)b->len, .table_address = addr, .structures = b->count,
		.bcd_revision = 0x28,
	};
	ep->intermediate_checksum = (uint8_t)-sum8(&ep->intermediate_anchor, 15);
	ep->checksum = (uint8_t)-sum8(ep, 16);
	return b;
}

int smbios_add_fw_cfg(struct vm *vm, struct fw_cfg *c, struct vt_error *err)
{
	struct smbios_21_entry ep;
	/* The firmware sets the table address and redoes both checksums. */
	struct smbios_buf *b = smbios_build(vm, 0, &ep, err);
	int ret;

	if (!b)
		return -ENOMEM;
	ret = fw_cfg_add_file(c, "etc/smbios/smbios-tables", b->data, (uint32_t)b->len, err);
	if (!ret)
		ret = fw_cfg_add_file(c, "etc/smbios/smbios-anchor", &ep, sizeof(ep), err);
	free(b);
	return ret;
}

int smbios_place(struct vm *vm, uint64_t base, uint64_t max, struct vt_error *err)
{
	struct smbios_21_entry ep;
	uint64_t table = base + 0x20;
	struct smbios_buf *b = smbios_build(vm, (uint32_t)table, &ep, err);

	if (!b)
		return -ENOMEM;
	uint8_t *dst = 0x20 + b->len <= max ? vm_guest_ptr(vm, base, 0x20 + b->len) : NULL;
	if (dst) {
		memcpy(dst, &ep, sizeof(ep));
		memcpy(dst + 0x20, b->data, b->len);
	}
	free(b);
	if (!dst)
		return vt_error_set(err, ENOSPC, "smbios", "place tables", "no room at 0x%llx",
		                    (unsigned long long)base);
	return 0;
}
