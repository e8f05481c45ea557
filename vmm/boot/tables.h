/* Firmware tables (ACPI) built once into address-independent blobs, then either placed
 * in guest RAM by the VMM (direct kernel boot) or handed to the firmware through fw_cfg
 * with qemu's "BIOS linker/loader" script (etc/table-loader), which SeaBIOS executes:
 * allocate each blob, add the blob addresses to the pointer fields, fix the checksums.
 * Either way the guest sees the same tables.
 *
 * A pointer field holds an offset inside its source blob; placing adds the source blob's
 * guest address to it. Checksums are computed after every pointer is patched. */
#ifndef VTOOL_VMM_BOOT_TABLES_H
#define VTOOL_VMM_BOOT_TABLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct vm;

#define FW_TABLES_MAX_BLOBS 4
#define FW_TABLES_MAX_PTRS  64
#define FW_TABLES_MAX_CSUMS 32
#define FW_TABLES_NAME_MAX  56

struct fw_blob {
	char name[FW_TABLES_NAME_MAX];   /* the fw_cfg file name, e.g. "etc/acpi/tables" */
	uint8_t *data;
	uint32_t len, cap;
	uint32_t align;
	bool fseg;                       /* must live in the F segment (an RSDP) */
};

struct fw_pointer {
	int dst, src;
	uint32_t off;
	uint8_t size;
};

struct fw_checksum {
	int blob;
	uint32_t at, start, len;
};

struct fw_tables {
	struct fw_blob blobs[FW_TABLES_MAX_BLOBS];
	int nr_blobs;
	struct fw_pointer ptrs[FW_TABLES_MAX_PTRS];
	int nr_ptrs;
	struct fw_checksum csums[FW_TABLES_MAX_CSUMS];
	int nr_csums;
	bool failed;                     /* out of memory or of table slots */
};

/* Start a blob; returns its index (or -1, and t->failed). */
int fw_tables_blob(struct fw_tables *t, const char *name, uint32_t align, bool fseg);
/* Append len bytes (zeros when data is NULL) at an offset aligned to align; returns the
 * offset. */
uint32_t fw_tables_append(struct fw_tables *t, int blob, const void *data, uint32_t len,
                          uint32_t align);
/* Write size bytes little-endian at off (a value or an offset inside a source blob). */
void fw_tables_put(struct fw_tables *t, int blob, uint32_t off, uint64_t value, uint8_t size);
/* The size-byte field at dst+off holds an offset in src: make it an address. */
void fw_tables_pointer(struct fw_tables *t, int dst, uint32_t off, uint8_t size, int src);
/* Byte at+... of blob: make [start, start+len) sum to zero. */
void fw_tables_checksum(struct fw_tables *t, int blob, uint32_t at, uint32_t start,
                        uint32_t len);
void fw_tables_free(struct fw_tables *t);

/* Direct boot: copy the blobs to guest RAM from base up to end, patch and checksum them;
 * addr[i] receives blob i's address. */
int fw_tables_place(struct vm *vm, struct fw_tables *t, uint64_t base, uint64_t end,
                    uint64_t *addr, struct vt_error *err);
/* Firmware boot: the etc/table-loader script (malloc'ed, 128 bytes per command). */
int fw_tables_loader(const struct fw_tables *t, uint8_t **script, size_t *len);

#endif
