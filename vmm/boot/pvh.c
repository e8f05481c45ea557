/* PVH boot of ELF kernels (Xen's docs/misc/pvh.pandoc): the PT_LOAD segments go to their
 * physical addresses, a note of type XEN_ELFNOTE_PHYS32_ENTRY gives the 32-bit entry, and
 * the kernel starts in flat protected mode with EBX pointing at struct hvm_start_info. */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "vmm/boot/boot.h"
#include "vmm/vm.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC          0x336ec578u

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");

struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry layout");

struct hvm_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm_memmap_entry layout");

#define PVH_MODLIST (VM_LAYOUT_START_INFO + 0x40)
#define PVH_MEMMAP  (VM_LAYOUT_START_INFO + 0x80)
#define PVH_MEMMAP_MAX 16

bool pvh_is_elf(const struct boot_file *f)
{
	return f->size >= sizeof(Elf64_Ehdr) && !memcmp(f->data, ELFMAG, SELFMAG);
}

static bool in_file(const struct boot_file *f, uint64_t off, uint64_t len)
{
	return off <= f->size && len <= f->size - off;
}

/* Walk one PT_NOTE segment for the PVH entry. */
static bool pvh_find_entry(const struct boot_file *f, uint64_t off, uint64_t len,
                           uint32_t *entry)
{
	while (len >= 12) {
		uint32_t namesz, descsz, type;
		memcpy(&namesz, f->data + off, 4);
		memcpy(&descsz, f->data + off + 4, 4);
		memcpy(&type, f->data + off + 8, 4);
		uint64_t name_al = ((uint64_t)namesz + 3) & ~3ull;
		uint64_t desc_al = ((uint64_t)descsz + 3) & ~3ull;
		if (12 + name_al + desc_al > len)
			return false;
		const uint8_t *name = f->data + off + 12, *desc = name + name_al;
		if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && !memcmp(name, "Xen", 4) &&
		    descsz >= 4) {
			memcpy(entry, desc, 4); /* 8 bytes in Linux, 4 in Xen's docs: low half */
			return true;
		}
		off += 12 + name_al + desc_al;
		len -= 12 + name_al + desc_al;
	}
	return false;
}

int pvh_load(struct vm *vm, struct boot_images *img, struct vt_error *err)
{
	const struct boot_file *f = &img->kernel;
	const char *path = f->path;
	Elf64_Ehdr eh;
	uint32_t entry = 0;
	bool have_entry = false;
	uint64_t kernel_end = VM_LAYOUT_KERNEL;

	memcpy(&eh, f->data, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64)
		return vt_error_set(err, ENOEXEC, path, "load kernel", "not an x86-64 ELF file");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) ||
	    !in_file(f, eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr)))
		return vt_error_set(err, ENOEXEC, path, "load kernel", "bad ELF program headers");
	for (int i = 0; i < eh.e_phnum && !have_entry; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, f->data + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_NOTE && in_file(f, ph.p_offset, ph.p_filesz))
			have_entry = pvh_find_entry(f, ph.p_offset, ph.p_filesz, &entry);
	}
	if (!have_entry)
		return vt_error_set(err, ENOEXEC, path, "load kernel",
		                    "ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
		                    "boot the bzImage instead");
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, f->data + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (!in_file(f, ph.p_offset, ph.p_filesz) || ph.p_filesz > ph.p_memsz)
			return vt_error_set(err, ENOEXEC, path, "load kernel",
			                    "segment %d lies outside the file", i);
		if (ph.p_paddr < VM_LAYOUT_KERNEL)
			return vt_error_set(err, ENOEXEC, path, "load kernel",
			                    "segment %d at 0x%llx is below 1 MiB", i,
			                    (unsigned long long)ph.p_paddr);
		uint8_t *dst = vm_guest_ptr(vm, ph.p_paddr, ph.p_memsz);
		if (!dst)
			return vt_error_set(err, ENOMEM, path, "load kernel",
			                    "segment %d (0x%llx+0x%llx) is outside guest RAM; raise -m",
			                    i, (unsigned long long)ph.p_paddr,
			                    (unsigned long long)ph.p_memsz);
		memcpy(dst, f->data + ph.p_offset, ph.p_filesz);
		/* The rest of p_memsz (.bss) is left alone: guest RAM is a fresh anonymous
		 * mapping, already zero, and untouched pages cost no host memory. */
		if (ph.p_paddr + ph.p_memsz > kernel_end)
			kernel_end = ph.p_paddr + ph.p_memsz;
	}
	int ret = boot_place_initrd(vm, img, (kernel_end + 0xfff) & ~0xfffull, VM_4G, err);
	if (ret)
		return ret;

	struct hvm_start_info si = {
		.magic = HVM_START_MAGIC, .version = 1, .cmdline_paddr = img->cmdline_addr,
		.rsdp_paddr = img->rsdp_addr, .memmap_paddr = PVH_MEMMAP,
	};
	if (img->initrd_size) {
		struct hvm_modlist_entry mod = { .paddr = img->initrd_addr, .size = img->initrd_size };
		memcpy(vm_guest_ptr(vm, PVH_MODLIST, sizeof(mod)), &mod, sizeof(mod));
		si.nr_modules = 1;
		si.modlist_paddr = PVH_MODLIST;
	}
	struct vm_mem_region map[PVH_MEMMAP_MAX];
	int n = vm_memory_map(vm, map, PVH_MEMMAP_MAX);
	for (int i = 0; i < n; i++) {
		struct hvm_memmap_entry e = { map[i].addr, map[i].size, map[i].type, 0 };
		memcpy(vm_guest_ptr(vm, PVH_MEMMAP + (uint64_t)i * sizeof(e), sizeof(e)), &e,
		       sizeof(e));
	}
	si.memmap_entries = (uint32_t)n;
	memcpy(vm_guest_ptr(vm, VM_LAYOUT_START_INFO, sizeof(si)), &si, sizeof(si));

	vm->entry = (struct vm_entry){ .mode = VM_ENTRY_PROTECTED32, .rip = entry,
	                               .rbx = VM_LAYOUT_START_INFO };
	return 0;
}
