/* Booting: firmware.c runs a BIOS (the default without -kernel); otherwise, direct kernel
 * boot puts -kernel, -initrd and -append into guest memory and says how the boot vCPU
 * starts (vm->entry). boot.c recognises the kernel's format and places the
 * command line and initrd; linux.c speaks the bzImage 64-bit boot protocol, pvh.c the
 * PVH entry of ELF kernels. */
#ifndef VTOOL_VMM_BOOT_BOOT_H
#define VTOOL_VMM_BOOT_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct vm;

/* A file read whole into memory. */
struct boot_file {
	const char *path;
	uint8_t *data;
	size_t size;
};

/* What boot.c has placed before calling a format's loader. */
struct boot_images {
	struct boot_file kernel;
	uint64_t cmdline_addr;      /* NUL-terminated in guest RAM */
	size_t cmdline_len;         /* without the NUL */
	uint64_t initrd_addr, initrd_size;   /* 0 when there is no -initrd */
	uint64_t rsdp_addr;
};

/* Direct boot: write the ACPI and MP tables into the BIOS area, load the kernel, initrd
 * and command line, and set vm->entry. */
int boot_load(struct vm *vm, struct vt_error *err);

/* Firmware boot (boot/firmware.c): map -bios, fill fw_cfg and CMOS, reset entry. */
int firmware_load(struct vm *vm, struct vt_error *err);

/* Read a whole file (at most 4 GiB). */
int boot_read_file(struct boot_file *f, const char *path, struct vt_error *err);

/* Place the initrd page-aligned as high as possible below max_end, above min_addr. */
int boot_place_initrd(struct vm *vm, struct boot_images *img, uint64_t min_addr,
                      uint64_t max_end, struct vt_error *err);

bool linux_is_bzimage(const struct boot_file *f);
int linux_load(struct vm *vm, struct boot_images *img, struct vt_error *err);

bool pvh_is_elf(const struct boot_file *f);
int pvh_load(struct vm *vm, struct boot_images *img, struct vt_error *err);

#endif
