/* Address-independent firmware table blobs and the two ways of placing them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/boot/tables.h"
#include "vmm/vm.h"

/* qemu's BIOS linker/loader commands (hw/acpi/bios-linker-loader.c), 128 bytes each. */
enum { LOADER_ALLOCATE = 1, LOADER_ADD_POINTER = 2, LOADER_ADD_CHECKSUM = 3 };
enum { LOADER_ZONE_HIGH = 1, LOADER_ZONE_FSEG = 2 };

struct __attribute__((packed)) loader_entry {
	uint32_t command;
	union {
		struct __attribute__((packed)) {
			char file[FW_TABLES_NAME_MAX];
			uint32_t align;
			uint8_t zone;
		} alloc;
		struct __attribute__((packed)) {
			char dest_file[FW_TABLES_NAME_MAX];
			char src_file[FW_TABLES_NAME_MAX];
			uint32_t offset;
			uint8_t size;
		} pointer;
		struct __attribute__((packed)) {
			char file[FW_TABLES_NAME_MAX];
			uint32_t offset, start, length;
		} cksum;
		uint8_t pad[124];
	};
};
_Static_assert(sizeof(struct loader_entry) == 128, "table-loader command");

int fw_tables_blob(struct fw_tables *t, const char *name, uint32_t align, bool fseg)
{
	if (t->nr_blobs == FW_TABLES_MAX_BLOBS) {
		t->failed = true;
		return -1;
	}
	struct fw_blob *b = &t->blobs[t->nr_blobs];
	*b = (struct fw_blob){ .align = align, .fseg = fseg };
	snprintf(b->name, sizeof(b->name), "%s", name);
	return t->nr_blobs++;
}

uint32_t fw_tables_append(struct fw_tables *t, int blob, const void *data, uint32_t len,
                          uint32_t align)
{
	if (blob < 0 || t->failed)
		return 0;
	struct fw_blob *b = &t->blobs[blob];
	uint32_t off = (b->len + align - 1) & ~(align - 1);
	if ((uint64_t)off + len > b->cap) {
		uint32_t cap = b->cap ? b->cap : 1024;
		while (cap < (uint64_t)off + len)
			cap *= 2;
		uint8_t *p = realloc(b->data, cap);
		if (!p) {
			t->failed = true;
			return 0;
		}
		b->data = p;
		b->cap = cap;
	}
	memset(b->data + b->len, 0, off - b->len);
	if (data)
		memcpy(b->data + off, data, len);
	else
		memset(b->data + off, 0, len);
	b->len = off + len;
	return off;
}

void fw_tables_put(struct fw_tables *t, int blob, uint32_t off, uint64_t value, uint8_t size)
{
	if (blob < 0 || t->failed || (uint64_t)off + size > t->blobs[blob].len)
		return;
	for (uint8_t i = 0; i < size; i++)
		t->blobs[blob].data[off + i] = (uint8_t)(value >> (8 * i));
}

void fw_tables_pointer(struct fw_tables *t, int dst, uint32_t off, uint8_t size, int src)
{
	if (t->nr_ptrs == FW_TABLES_MAX_PTRS || dst < 0 || src < 0) {
		t->failed = true;
		return;
	}
	t->ptrs[t->nr_ptrs++] = (struct fw_pointer){ dst, src, off, size };
}

void fw_tables_checksum(struct fw_tables *t, int blob, uint32_t at, uint32_t start,
                        uint32_t len)
{
	if (t->nr_csums == FW_TABLES_MAX_CSUMS || blob < 0) {
		t->failed = true;
		return;
	}
	t->csums[t->nr_csums++] = (struct fw_checksum){ blob, at, start, len };
}

void fw_tables_free(struct fw_tables *t)
{
	for (int i = 0; i < t->nr_blobs; i++)
		free(t->blobs[i].data);
	*t = (struct fw_tables){ 0 };
}

int fw_tables_place(struct vm *vm, struct fw_tables *t, uint64_t base, uint64_t end,
                    uint64_t *addr, struct vt_error *err)
{
	uint8_t *host[FW_TABLES_MAX_BLOBS];
	uint64_t at = base;

	if (t->failed)
		return vt_error_set(err, ENOMEM, "firmware tables", "build", NULL);
	for (int i = 0; i < t->nr_blobs; i++) {
		struct fw_blob *b = &t->blobs[i];
		at = (at + b->align - 1) & ~(uint64_t)(b->align - 1);
		host[i] = at + b->len <= end ? vm_guest_ptr(vm, at, b->len) : NULL;
		if (!host[i])
			return vt_error_set(err, ENOSPC, b->name, "place firmware tables",
			                    "%u bytes do not fit at 0x%llx", b->len,
			                    (unsigned long long)at);
		memcpy(host[i], b->data, b->len);
		addr[i] = at;
		at += b->len;
	}
	for (int i = 0; i < t->nr_ptrs; i++) {
		uint8_t *p = host[t->ptrs[i].dst] + t->ptrs[i].off;
		uint64_t v = 0;
		memcpy(&v, p, t->ptrs[i].size);
		v += addr[t->ptrs[i].src];
		memcpy(p, &v, t->ptrs[i].size);
	}
	for (int i = 0; i < t->nr_csums; i++) {
		uint8_t *p = host[t->csums[i].blob], sum = 0;
		for (uint32_t k = 0; k < t->csums[i].len; k++)
			sum = (uint8_t)(sum + p[t->csums[i].start + k]);
		p[t->csums[i].at] = (uint8_t)(p[t->csums[i].at] - sum);
	}
	return 0;
}

int fw_tables_loader(const struct fw_tables *t, uint8_t **script, size_t *len)
{
	size_t n = (size_t)(t->nr_blobs + t->nr_ptrs + t->nr_csums);
	struct loader_entry *e = calloc(n ? n : 1, sizeof(*e)), *p = e;

	if (!e || t->failed) {
		free(e);
		return -ENOMEM;
	}
	for (int i = 0; i < t->nr_blobs; i++, p++) {
		p->command = LOADER_ALLOCATE;
		memcpy(p->alloc.file, t->blobs[i].name, FW_TABLES_NAME_MAX);
		p->alloc.align = t->blobs[i].align;
		p->alloc.zone = t->blobs[i].fseg ? LOADER_ZONE_FSEG : LOADER_ZONE_HIGH;
	}
	for (int i = 0; i < t->nr_ptrs; i++, p++) {
		p->command = LOADER_ADD_POINTER;
		memcpy(p->pointer.dest_file, t->blobs[t->ptrs[i].dst].name, FW_TABLES_NAME_MAX);
		memcpy(p->pointer.src_file, t->blobs[t->ptrs[i].src].name, FW_TABLES_NAME_MAX);
		p->pointer.offset = t->ptrs[i].off;
		p->pointer.size = t->ptrs[i].size;
	}
	for (int i = 0; i < t->nr_csums; i++, p++) {
		p->command = LOADER_ADD_CHECKSUM;
		memcpy(p->cksum.file, t->blobs[t->csums[i].blob].name, FW_TABLES_NAME_MAX);
		p->cksum.offset = t->csums[i].at;
		p->cksum.start = t->csums[i].start;
		p->cksum.length = t->csums[i].len;
	}
	*script = (uint8_t *)e;
	*len = n * sizeof(*e);
	return 0;
}
