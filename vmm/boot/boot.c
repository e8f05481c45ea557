/* -kernel / -initrd / -append: read the files, recognise the kernel, place the pieces. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/boot/boot.h"
#include "vmm/boot/smbios.h"
#include "vmm/boot/tables.h"
#include "vmm/hw/devices.h"
#include "vmm/keep.h"
#include "vmm/vm.h"

int boot_read_file(struct boot_file *f, const char *path, struct vt_error *err)
{
	const uint8_t *data;
	size_t size;
	/* Read once per process (keep.h): a reboot inside the sandbox opens nothing. */
	int ret = keep_read(path, &data, &size, err);

	*f = (struct boot_file){ .path = path };
	if (ret)
		return ret;
	f->data = malloc(size ? size : 1);
	if (!f->data)
		return vt_error_set(err, ENOMEM, path, "read", NULL);
	memcpy(f->data, data, size);
	f->size = size;
	return 0;
}

int boot_place_initrd(struct vm *vm, struct boot_images *img, uint64_t min_addr,
                      uint64_t max_end, struct vt_error *err)
{
	const char *path = vm->cfg->initrd;
	struct boot_file f;
	int ret;

	if (!path)
		return 0;
	if ((ret = boot_read_file(&f, path, err)))
		return ret;
	if (max_end > vm->low_ram)
		max_end = vm->low_ram;
	uint64_t addr = max_end > f.size ? (max_end - f.size) & ~0xfffull : 0;
	if (f.size == 0 || addr < min_addr || !vm_guest_ptr(vm, addr, f.size)) {
		free(f.data);
		if (f.size == 0)
			return vt_error_set(err, EINVAL, path, "load initrd", "file is empty");
		return vt_error_set(err, ENOMEM, path, "load initrd",
		                    "%zu bytes do not fit in RAM between the kernel and 0x%llx "
		                    "(raise -m)", f.size, (unsigned long long)max_end);
	}
	memcpy(vm_guest_ptr(vm, addr, f.size), f.data, f.size);
	free(f.data);
	img->initrd_addr = addr;
	img->initrd_size = f.size;
	return 0;
}

/* ACPI at 0xe0000, the MP table at 0xf0000 and SMBIOS at 0xf2000, where guests without
 * firmware scan. */
static int boot_tables(struct vm *vm, uint64_t *rsdp, struct vt_error *err)
{
	struct fw_tables t = { 0 };
	uint64_t addr[FW_TABLES_MAX_BLOBS];
	int ret = acpi_build(vm, &t);

	if (ret)
		ret = vt_error_set(err, -ret, "acpi", "build tables", NULL);
	else
		ret = fw_tables_place(vm, &t, VM_LAYOUT_BIOS_TABLES, VM_LAYOUT_MPTABLE, addr, err);
	fw_tables_free(&t);
	if (ret)
		return ret;
	*rsdp = addr[0];
	uint8_t *mp = vm_guest_ptr(vm, VM_LAYOUT_MPTABLE, VM_MPTABLE_MAX);
	if (!mp || (ret = mptable_build(vm, VM_LAYOUT_MPTABLE, mp, VM_MPTABLE_MAX)) < 0)
		return vt_error_set(err, ENOSPC, "mptable", "build", "does not fit at 0x%llx",
		                    (unsigned long long)VM_LAYOUT_MPTABLE);
	return smbios_place(vm, VM_LAYOUT_SMBIOS, VM_SMBIOS_MAX, err);
}

int boot_load(struct vm *vm, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;
	struct boot_images img = { .cmdline_addr = VM_LAYOUT_CMDLINE };
	const char *cmdline = cfg->append ? cfg->append : "";
	int ret;

	if ((ret = boot_tables(vm, &img.rsdp_addr, err)))
		return ret;
	img.cmdline_len = strlen(cmdline);
	if (img.cmdline_len >= VM_CMDLINE_MAX)
		return vt_error_set(err, E2BIG, "-append", NULL, "command line longer than %llu bytes",
		                    (unsigned long long)VM_CMDLINE_MAX - 1);
	char *dst = vm_guest_ptr(vm, VM_LAYOUT_CMDLINE, img.cmdline_len + 1);
	if (!dst)
		return vt_error_set(err, ENOMEM, "-m", NULL, "RAM too small for the command line");
	memcpy(dst, cmdline, img.cmdline_len + 1);

	if ((ret = boot_read_file(&img.kernel, cfg->kernel, err)))
		return ret;
	if (linux_is_bzimage(&img.kernel))
		ret = linux_load(vm, &img, err);
	else if (pvh_is_elf(&img.kernel))
		ret = pvh_load(vm, &img, err);
	else
		ret = vt_error_set(err, ENOEXEC, cfg->kernel, "load kernel",
		                   "not a Linux bzImage or an ELF kernel");
	free(img.kernel.data);
	return ret;
}
