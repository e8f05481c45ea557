/* Firmware boot (no -kernel): the BIOS image (-bios, default Debian's SeaBIOS) mapped
 * read-only below 4 GiB with its last 128 KiB copied to 0xe0000, what the firmware reads
 * from fw_cfg (memory map, CPUs, boot order and menu, serial console, ACPI through the
 * table loader, SMBIOS) and from CMOS (boot order), and the vCPU left in its reset state. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/boot/boot.h"
#include "vmm/boot/smbios.h"
#include "vmm/boot/tables.h"
#include "vmm/hw/devices.h"
#include "vmm/hw/fw_cfg.h"
#include "vmm/hw/rtc.h"
#include "vmm/vm.h"

#define FIRMWARE_DEFAULT   "/usr/share/seabios/bios-256k.bin"
#define FIRMWARE_PACKAGE   "seabios"
#define FIRMWARE_MAX       (16u << 20)
#define FIRMWARE_LOW_ALIAS (128u << 10)
#define IDENTITY_MAP_ADDR  0xfeffc000ull
#define IDENTITY_MAP_SIZE  0x4000ull
#define COM1_PORT          0x3f8
/* qemu's pc machine under KVM always hands SeaBIOS this option ROM (it offers TPR
 * patching to old guests through port 0x7e, which nothing here answers, so it stays
 * inert). SeaBIOS registers it as a boot connection vector, which puts "Hard Disk" first
 * in its list when no drive is bootable: running it keeps vtool's boot menu and messages
 * the same as qemu's. Optional: without the file nothing else changes. */
#define KVMVAPIC_ROM       "/usr/share/qemu/kvmvapic.bin"

struct __attribute__((packed)) e820_entry {
	uint64_t addr, len;
	uint32_t type;
};
_Static_assert(sizeof(struct e820_entry) == 20, "etc/e820 entry");

/* Read and check the image: a multiple of 64 KiB, and a reset vector (the 16 bytes
 * below 4 GiB) that jumps somewhere. */
static int firmware_read(const char *path, bool is_default, struct boot_file *f,
                         struct vt_error *err)
{
	int ret = boot_read_file(f, path, err);

	if (ret) {
		if (ret == -ENOENT && is_default)
			return vt_error_set(err, ENOENT, path, "load firmware",
			                    "No such file or directory (Debian's package '%s' "
			                    "provides it: apt-get install %s)",
			                    FIRMWARE_PACKAGE, FIRMWARE_PACKAGE);
		snprintf(err->what, sizeof(err->what), "load firmware");
		return ret;
	}
	if (f->size == 0 || f->size % (64u << 10) || f->size > FIRMWARE_MAX) {
		ret = vt_error_set(err, EINVAL, path, "load firmware",
		                   "%zu bytes: a BIOS image is a non-zero multiple of 64 KiB, "
		                   "at most 16 MiB", f->size);
	} else {
		const uint8_t *v = f->data + f->size - 16;
		bool jump = false;
		for (int i = 0; i < 8 && !jump; i++)
			jump = v[i] == 0xea || v[i] == 0xe9 || v[i] == 0xeb;
		if (!jump)
			ret = vt_error_set(err, ENOEXEC, path, "load firmware",
			                   "no jump at the reset vector (the last 16 bytes): not a "
			                   "BIOS image");
	}
	if (ret) {
		free(f->data);
		f->data = NULL;
	}
	return ret;
}

static int firmware_map(struct vm *vm, struct boot_file *f, struct vt_error *err)
{
	uint8_t *rom = aligned_alloc(4096, f->size);
	int ret;

	if (!rom)
		return vt_error_set(err, ENOMEM, f->path, "load firmware", NULL);
	memcpy(rom, f->data, f->size);
	if ((ret = vm_add_device(vm, "bios-image", rom, free, err)))
		return ret;
	struct vm_region r = { .name = "bios", .kind = VM_REGION_ROM,
	                       .gpa = VM_4G - f->size, .size = f->size, .host = rom };
	if ((ret = vm_mem_add(vm, &r, false, err)))
		return ret;
	/* The F and E segments: RAM holding the image's last 128 KiB, as after a shadow copy
	 * (the i440FX PAM registers are only stored). */
	uint32_t alias = f->size < FIRMWARE_LOW_ALIAS ? (uint32_t)f->size : FIRMWARE_LOW_ALIAS;
	uint8_t *low = vm_guest_ptr(vm, 0x100000 - alias, alias);
	if (!low)
		return vt_error_set(err, ENOMEM, "-m", "load firmware", "no RAM below 1 MiB");
	memcpy(low, rom + f->size - alias, alias);
	return 0;
}

static int add_u16(struct fw_cfg *c, uint16_t key, uint16_t v, struct vt_error *err)
{
	return fw_cfg_add(c, key, &v, 2, err);
}

/* qemu's "bootorder": one OpenFirmware path per line, by bootindex; HALT when strict. */
static int firmware_bootorder(struct vm *vm, struct fw_cfg *c, struct vt_error *err)
{
	struct vm_boot_path *p = vm->boot_paths;
	int n = vm->nr_boot_paths;
	char buf[sizeof(vm->boot_paths) + 8];
	size_t len = 0;

	for (int i = 1; i < n; i++) /* stable insertion sort: equal indexes keep their order */
		for (int k = i; k > 0 && p[k - 1].bootindex > p[k].bootindex; k--) {
			struct vm_boot_path t = p[k];
			p[k] = p[k - 1];
			p[k - 1] = t;
		}
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s\n", p[i].path);
	if (vm->cfg->boot.strict)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "HALT\n");
	if (!len)
		return 0;
	buf[len - 1] = '\0'; /* qemu: lines joined by newlines, NUL-terminated */
	return fw_cfg_add_file(c, "bootorder", buf, (uint32_t)len, err);
}

/* CMOS boot order (what -boot order/once set): 1 floppy, 2 disk, 3 CD-ROM, 4 network. */
static void firmware_cmos_order(struct vm *vm)
{
	const char *order = vm->cfg->boot.once[0] && vm->boot_count == 0 ? vm->cfg->boot.once
	                                                                  : vm->cfg->boot.order;
	uint8_t dev[3] = { 0 };

	for (int i = 0; i < 3 && order[i]; i++)
		dev[i] = order[i] == 'c' ? 2 : order[i] == 'd' ? 3 : order[i] == 'n' ? 4 : 1;
	rtc_cmos_set(vm, CMOS_BOOT_FLAG2, (uint8_t)(dev[0] | dev[1] << 4));
	rtc_cmos_set(vm, CMOS_BOOT_FLAG1, (uint8_t)(dev[2] << 4));
}

static int firmware_acpi(struct vm *vm, struct fw_cfg *c, struct vt_error *err)
{
	struct fw_tables t = { 0 };
	uint8_t *script = NULL;
	size_t len = 0;
	int ret = acpi_build(vm, &t);

	if (!ret)
		ret = fw_tables_loader(&t, &script, &len);
	if (ret) {
		fw_tables_free(&t);
		return vt_error_set(err, -ret, "acpi", "build tables", NULL);
	}
	for (int i = 0; !ret && i < t.nr_blobs; i++)
		ret = fw_cfg_add_file(c, t.blobs[i].name, t.blobs[i].data, t.blobs[i].len, err);
	if (!ret)
		ret = fw_cfg_add_file(c, "etc/table-loader", script, (uint32_t)len, err);
	free(script);
	fw_tables_free(&t);
	return ret;
}

static int firmware_fw_cfg(struct vm *vm, struct fw_cfg *c, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;
	uint64_t ram = vm->ram_size;
	uint32_t irq0_override = 1, fail_wait = (uint32_t)cfg->boot.reboot_timeout;
	uint8_t uuid[16] = { 0 };
	int ret;

	struct e820_entry e820[3] = {
		{ 0, vm->low_ram, 1 },
		{ IDENTITY_MAP_ADDR, IDENTITY_MAP_SIZE, 2 },
		{ VM_4G, vm->high_ram, 1 },
	};
	uint32_t n820 = vm->high_ram ? 3 : 2;
	if (cfg->has_uuid)
		memcpy(uuid, cfg->uuid, 16);
	bool sercon = (cfg->nographic || cfg->graphics_off) && cfg->serial != VM_SERIAL_NONE;
	if ((ret = fw_cfg_add(c, FW_CFG_UUID, uuid, 16, err)) ||
	    (ret = fw_cfg_add(c, FW_CFG_RAM_SIZE, &ram, 8, err)) ||
	    (ret = add_u16(c, FW_CFG_NOGRAPHIC, sercon, err)) ||
	    (ret = add_u16(c, FW_CFG_NB_CPUS, (uint16_t)vm->nr_vcpus, err)) ||
	    (ret = add_u16(c, FW_CFG_MAX_CPUS, (uint16_t)vm->nr_vcpus, err)) ||
	    (ret = add_u16(c, FW_CFG_BOOT_MENU, cfg->boot.menu == 1, err)) ||
	    (ret = fw_cfg_add(c, FW_CFG_IRQ0_OVERRIDE, &irq0_override, 4, err)) ||
	    (ret = fw_cfg_add_file(c, "etc/e820", e820, n820 * (uint32_t)sizeof(e820[0]), err)) ||
	    (ret = fw_cfg_add_file(c, "etc/boot-fail-wait", &fail_wait, 4, err)))
		return ret;
	if (cfg->boot.splash_time >= 0) {
		uint16_t wait = (uint16_t)cfg->boot.splash_time;
		if ((ret = fw_cfg_add_file(c, "etc/boot-menu-wait", &wait, 2, err)))
			return ret;
	}
	if (sercon) {
		uint16_t port = COM1_PORT;
		if ((ret = fw_cfg_add_file(c, "etc/sercon-port", &port, 2, err)))
			return ret;
	}
	if ((ret = firmware_bootorder(vm, c, err)) || (ret = firmware_acpi(vm, c, err)))
		return ret;
	struct boot_file rom;
	struct vt_error ignored;
	if (boot_read_file(&rom, KVMVAPIC_ROM, &ignored) == 0) {
		ret = fw_cfg_add_file(c, "genroms/kvmvapic.bin", rom.data, (uint32_t)rom.size, err);
		free(rom.data);
		if (ret)
			return ret;
	}
	return smbios_add_fw_cfg(vm, c, err);
}

int firmware_load(struct vm *vm, struct vt_error *err)
{
	const char *path = vm->cfg->bios ? vm->cfg->bios : FIRMWARE_DEFAULT;
	struct fw_cfg *c = vm_device(vm, "fw_cfg");
	struct boot_file f;
	int ret;

	if (!c)
		return vt_error_set(err, ENODEV, "fw_cfg", "load firmware", "no fw_cfg device");
	if ((ret = firmware_read(path, !vm->cfg->bios, &f, err)))
		return ret;
	ret = firmware_map(vm, &f, err);
	free(f.data);
	if (ret || (ret = firmware_fw_cfg(vm, c, err)))
		return ret;
	firmware_cmos_order(vm);
	vm->entry = (struct vm_entry){ .mode = VM_ENTRY_RESET };
	return 0;
}
