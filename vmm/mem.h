/* Guest-physical memory as a table of regions, each backed by host pages and mapped into
 * one KVM memory slot:
 *   RAM     guest RAM (the low part below the PCI hole, the rest above 4 GiB);
 *   ROM     read-only to the guest (the BIOS image under 4 GiB): guest writes exit as MMIO
 *           and are dropped; vm_guest_ptr does not return it, vm_guest_ptr_ro does;
 *   DEVICE  memory a device owns and may move (a frame buffer behind a BAR), optionally
 *           with dirty-page logging.
 * vm_guest_ptr is the one gate for every guest-supplied address: it returns a host
 * pointer only when [gpa, gpa+len) lies wholly inside one writable region. Lookups are
 * lock-free (the table is replaced whole, old tables are kept until the VM goes away), so
 * I/O threads may translate while a vCPU moves a device region. */
#ifndef VTOOL_VMM_MEM_H
#define VTOOL_VMM_MEM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct vm;

enum vm_region_kind { VM_REGION_RAM, VM_REGION_ROM, VM_REGION_DEVICE };

#define VM_REGION_DIRTY_LOG 0x1u

struct vm_region {
	const char *name;
	enum vm_region_kind kind;
	uint64_t gpa, size;       /* page-aligned */
	uint8_t *host;
	unsigned flags;
	int slot;                 /* KVM slot number (set by vm_mem_add) */
};

#define VM_MAX_REGIONS 16

struct vm_mem_table {
	int nr;
	struct vm_region r[VM_MAX_REGIONS];  /* sorted by gpa, non-overlapping */
	struct vm_mem_table *retired;        /* the table this one replaced */
};

struct vm_mem {
	pthread_mutex_t lock;                /* writers only */
	struct vm_mem_table *table;          /* read with __atomic_load_n */
	uint64_t slots;                      /* bitmap of KVM slots in use */
	uint64_t registered;                 /* bitmap of slots KVM knows about */
};

void vm_mem_init(struct vm_mem *mem);
void vm_mem_destroy(struct vm_mem *mem);

/* Add a region. With `now` false it is only entered in the table (the host mapping is
 * usable at once) and KVM learns of it at the next vm_mem_sync. */
int vm_mem_add(struct vm *vm, const struct vm_region *r, bool now, struct vt_error *err);
/* Remove the region named name (its KVM slot is deleted); -ENOENT if absent. */
int vm_mem_remove(struct vm *vm, const char *name);
/* Give KVM every region it does not know yet. */
int vm_mem_sync(struct vm *vm, struct vt_error *err);
/* The region named name, or NULL (a copy is filled in). */
bool vm_mem_find(const struct vm *vm, const char *name, struct vm_region *out);
/* KVM_GET_DIRTY_LOG for a region added with VM_REGION_DIRTY_LOG: one bit per page. */
int vm_mem_dirty_log(struct vm *vm, const char *name, uint64_t *bitmap, struct vt_error *err);

/* Host pointer to [gpa, gpa+len) if it lies wholly in one RAM or device region. */
void *vm_guest_ptr(const struct vm *vm, uint64_t gpa, uint64_t len);
/* The same, ROM included: for reading only. */
const void *vm_guest_ptr_ro(const struct vm *vm, uint64_t gpa, uint64_t len);

#endif
