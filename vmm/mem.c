/* The guest memory table and its KVM slots. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/mem.h"
#include "vmm/vm.h"

void vm_mem_init(struct vm_mem *mem)
{
	*mem = (struct vm_mem){ 0 };
	pthread_mutex_init(&mem->lock, NULL);
	mem->table = calloc(1, sizeof(*mem->table));
}

void vm_mem_destroy(struct vm_mem *mem)
{
	struct vm_mem_table *t = mem->table;

	while (t) {
		struct vm_mem_table *next = t->retired;
		free(t);
		t = next;
	}
	mem->table = NULL;
	pthread_mutex_destroy(&mem->lock);
}

static int kvm_slot_set(struct vm *vm, const struct vm_region *r, bool present)
{
	struct kvm_userspace_memory_region k = {
		.slot = (uint32_t)r->slot,
		.guest_phys_addr = r->gpa,
		.memory_size = present ? r->size : 0,
		.userspace_addr = (uint64_t)(uintptr_t)r->host,
	};

	if (r->kind == VM_REGION_ROM)
		k.flags |= KVM_MEM_READONLY;
	if (r->flags & VM_REGION_DIRTY_LOG)
		k.flags |= KVM_MEM_LOG_DIRTY_PAGES;
	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &k) < 0 ? -errno : 0;
}

/* Publish a changed copy of the table; readers may still hold the old one. */
static void table_publish(struct vm_mem *mem, struct vm_mem_table *t)
{
	t->retired = mem->table;
	__atomic_store_n(&mem->table, t, __ATOMIC_RELEASE);
}

static struct vm_mem_table *table_copy(const struct vm_mem *mem)
{
	struct vm_mem_table *t = malloc(sizeof(*t));

	if (t)
		*t = *mem->table;
	return t;
}

int vm_mem_add(struct vm *vm, const struct vm_region *r, bool now, struct vt_error *err)
{
	struct vm_mem *mem = &vm->mem;
	int ret = 0;

	if (!r->size || (r->gpa | r->size) & 0xfff || r->gpa + r->size < r->gpa)
		return vt_error_set(err, EINVAL, r->name, "map guest memory",
		                    "0x%llx+0x%llx is not a page-aligned range",
		                    (unsigned long long)r->gpa, (unsigned long long)r->size);
	pthread_mutex_lock(&mem->lock);
	struct vm_mem_table *t = table_copy(mem);
	if (!t) {
		ret = vt_error_set(err, ENOMEM, r->name, "map guest memory", NULL);
		goto out;
	}
	int i = 0;
	for (; i < t->nr && t->r[i].gpa < r->gpa; i++)
		;
	bool overlap = (i > 0 && t->r[i - 1].gpa + t->r[i - 1].size > r->gpa) ||
	               (i < t->nr && r->gpa + r->size > t->r[i].gpa);
	int slot = 0;
	while (slot < 64 && (mem->slots & (1ull << slot)))
		slot++;
	if (overlap || t->nr == VM_MAX_REGIONS || slot == 64) {
		ret = vt_error_set(err, overlap ? EBUSY : ENOSPC, r->name, "map guest memory",
		                   overlap ? "0x%llx+0x%llx overlaps another region"
		                           : "too many memory regions (0x%llx+0x%llx)",
		                   (unsigned long long)r->gpa, (unsigned long long)r->size);
		free(t);
		goto out;
	}
	struct vm_region nr = *r;
	nr.slot = slot;
	if (now && (ret = kvm_slot_set(vm, &nr, true))) {
		ret = vt_error_set(err, -ret, r->name, "KVM_SET_USER_MEMORY_REGION", NULL);
		free(t);
		goto out;
	}
	memmove(&t->r[i + 1], &t->r[i], (size_t)(t->nr - i) * sizeof(t->r[0]));
	t->r[i] = nr;
	t->nr++;
	mem->slots |= 1ull << slot;
	if (now)
		mem->registered |= 1ull << slot;
	table_publish(mem, t);
out:
	pthread_mutex_unlock(&mem->lock);
	return ret;
}

int vm_mem_remove(struct vm *vm, const char *name)
{
	struct vm_mem *mem = &vm->mem;
	int ret = -ENOENT;

	pthread_mutex_lock(&mem->lock);
	struct vm_mem_table *t = table_copy(mem);
	for (int i = 0; t && i < t->nr; i++) {
		struct vm_region *r = &t->r[i];
		if (strcmp(r->name, name))
			continue;
		uint64_t bit = 1ull << r->slot;
		if (mem->registered & bit)
			(void)kvm_slot_set(vm, r, false);
		mem->registered &= ~bit;
		mem->slots &= ~bit;
		memmove(r, r + 1, (size_t)(t->nr - i - 1) * sizeof(*r));
		t->nr--;
		table_publish(mem, t);
		t = NULL;
		ret = 0;
	}
	free(t);
	if (ret == -ENOENT && !t)
		ret = -ENOMEM;
	pthread_mutex_unlock(&mem->lock);
	return ret;
}

int vm_mem_sync(struct vm *vm, struct vt_error *err)
{
	struct vm_mem *mem = &vm->mem;
	int ret = 0;

	pthread_mutex_lock(&mem->lock);
	const struct vm_mem_table *t = mem->table;
	for (int i = 0; !ret && i < t->nr; i++) {
		const struct vm_region *r = &t->r[i];
		uint64_t bit = 1ull << r->slot;
		if (mem->registered & bit)
			continue;
		if ((ret = kvm_slot_set(vm, r, true)))
			ret = vt_error_set(err, -ret, r->name, "KVM_SET_USER_MEMORY_REGION", NULL);
		else
			mem->registered |= bit;
	}
	pthread_mutex_unlock(&mem->lock);
	return ret;
}

bool vm_mem_find(const struct vm *vm, const char *name, struct vm_region *out)
{
	const struct vm_mem_table *t = __atomic_load_n(&vm->mem.table, __ATOMIC_ACQUIRE);

	for (int i = 0; i < t->nr; i++)
		if (!strcmp(t->r[i].name, name)) {
			*out = t->r[i];
			return true;
		}
	return false;
}

int vm_mem_dirty_log(struct vm *vm, const char *name, uint64_t *bitmap, struct vt_error *err)
{
	struct vm_region r;

	if (!vm_mem_find(vm, name, &r) || !(r.flags & VM_REGION_DIRTY_LOG))
		return vt_error_set(err, ENOENT, name, "KVM_GET_DIRTY_LOG", "no dirty-logged region");
	struct kvm_dirty_log log = { .slot = (uint32_t)r.slot, .dirty_bitmap = bitmap };
	if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return vt_error_set(err, errno, name, "KVM_GET_DIRTY_LOG", NULL);
	return 0;
}

static const struct vm_region *mem_lookup(const struct vm *vm, uint64_t gpa, uint64_t len)
{
	const struct vm_mem_table *t = __atomic_load_n(&vm->mem.table, __ATOMIC_ACQUIRE);

	if (gpa + len < gpa || !t)
		return NULL;
	/* Few regions: a linear scan beats anything cleverer. */
	for (int i = 0; i < t->nr; i++) {
		const struct vm_region *r = &t->r[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r;
	}
	return NULL;
}

void *vm_guest_ptr(const struct vm *vm, uint64_t gpa, uint64_t len)
{
	const struct vm_region *r = mem_lookup(vm, gpa, len);

	if (!r || r->kind == VM_REGION_ROM)
		return NULL;
	return r->host + (gpa - r->gpa);
}

const void *vm_guest_ptr_ro(const struct vm *vm, uint64_t gpa, uint64_t len)
{
	const struct vm_region *r = mem_lookup(vm, gpa, len);

	return r ? r->host + (gpa - r->gpa) : NULL;
}
