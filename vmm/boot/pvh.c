/* PVH boot of ELF kernels, ELF32 or ELF64 alike (Xen's docs/misc/pvh.pandoc): the
 * PT_LOAD segments go to their physical addresses, a note of type XEN_ELFNOTE_PHYS32_ENTRY gives the 32-bit entry, and
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
	return f->size >= sizeof(Elf32_Ehdr) && !memcmp(f->data, ELFMAG, SELFMAG);
}

/* ELF32 and ELF64 program headers in one shape: the PVH entry is 32-bit either way. */
struct pvh_elf {
	bool is64;
	uint64_t phoff;
	unsigned phnum;
};

struct pvh_phdr {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz;
};

static int pvh_parse(const struct boot_file *f, struct pvh_elf *e)
{
	unsigned char cls = f->data[EI_CLASS];
	uint16_t machine, phentsize;

	if (f->data[EI_DATA] != ELFDATA2LSB || (cls != ELFCLASS32 && cls != ELFCLASS64))
		return -1;
	e->is64 = cls == ELFCLASS64;
	if (e->is64) {
		Elf64_Ehdr h;
		if (f->size < sizeof(h))
			return -1;
		memcpy(&h, f->data, sizeof(h));
		machine = h.e_machine;
		phentsize = h.e_phentsize;
		e->phoff = h.e_phoff;
		e->phnum = h.e_phnum;
		if (machine != EM_X86_64 || phentsize != sizeof(Elf64_Phdr))
			return -1;
	} else {
		Elf32_Ehdr h;
		memcpy(&h, f->data, sizeof(h));
		machine = h.e_machine;
		phentsize = h.e_phentsize;
		e->phoff = h.e_phoff;
		e->phnum = h.e_phnum;
		if ((machine != EM_386 && machine != EM_X86_64) || phentsize != sizeof(Elf32_Phdr))
			return -1;
	}
	return 0;
}

static void pvh_phdr_get(const struct boot_file *f, const struct pvh_elf *e, unsigned i,
                         struct pvh_phdr *ph)
{
	if (e->is64) {
		Elf64_Phdr p;
		memcpy(&p, f->data + e->phoff + (uint64_t)i * sizeof(p), sizeof(p));
		*ph = (struct pvh_phdr){ p.p_type, p.p_offset, p.p_paddr, p.p_filesz, p.p_memsz };
	} else {
		Elf32_Phdr p;
		memcpy(&p, f->data + e->phoff + (uint64_t)i * sizeof(p), sizeof(p));
		*ph = (struct pvh_phdr){ p.p_type, p.p_offset, p.p_paddr, p.p_filesz, p.p_memsz };
	}
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
	struct pvh_elf eh;
	struct pvh_phdr ph;
	uint32_t entry = 0;
	bool have_entry = false;
	uint64_t kernel_end = VM_LAYOUT_KERNEL;

	if (pvh_parse(f, &eh))
		return vt_error_set(err, ENOEXEC, path, "load kernel",
		                    "not an x86 ELF file (32- or 64-bit, little-endian)");
	if (!in_file(f, eh.phoff, (uint64_t)eh.phnum *
	                              (eh.is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr))))
		return vt_error_set(err, ENOEXEC, path, "load kernel", "bad ELF program headers");
	for (unsigned i = 0; i < eh.phnum && !have_entry; i++) {
		pvh_phdr_get(f, &eh, i, &ph);
		if (ph.type == PT_NOTE && in_file(f, ph.offset, ph.filesz))
			have_entry = pvh_find_entry(f, ph.offset, ph.filesz, &entry);
	}
	if (!have_entry)
		return vt_error_set(err, ENOEXEC, path, "load kernel",
		                    "ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
		                    "boot the bzImage instead");
	for (unsigned i = 0; i < eh.phnum; i++) {
		pvh_phdr_get(f, &eh, i, &ph);
		if (ph.type != PT_LOAD || ph.memsz == 0)
			continue;
		if (!in_file(f, ph.offset, ph.filesz) || ph.filesz > ph.memsz)
			return vt_error_set(err, ENOEXEC, path, "load kernel",
			                    "segment %u lies outside the file", i);
		if (ph.paddr < VM_LAYOUT_KERNEL)
			return vt_error_set(err, ENOEXEC, path, "load kernel",
			                    "segment %u at 0x%llx is below 1 MiB", i,
			                    (unsigned long long)ph.paddr);
		uint8_t *dst = vm_guest_ptr(vm, ph.paddr, ph.memsz);
		if (!dst)
			return vt_error_set(err, ENOMEM, path, "load kernel",
			                    "segment %u (0x%llx+0x%llx) is outside guest RAM; raise -m",
			                    i, (unsigned long long)ph.paddr,
			                    (unsigned long long)ph.memsz);
		memcpy(dst, f->data + ph.offset, ph.filesz);
		/* The rest of p_memsz (.bss) is left alone: guest RAM is a fresh anonymous
		 * mapping, already zero, and untouched pages cost no host memory. */
		if (ph.paddr + ph.memsz > kernel_end)
			kernel_end = ph.paddr + ph.memsz;
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
