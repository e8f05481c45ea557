/* The Linux x86 boot protocol's 64-bit entry (Documentation/arch/x86/boot.rst): the
 * setup header tells where the protected-mode kernel starts in the file and what the
 * kernel needs; the VMM writes a zero page (struct boot_params) and enters the kernel at
 * load address + 0x200 in long mode with RSI pointing at it. */
#include <errno.h>
#include <string.h>

#include "vmm/boot/boot.h"
#include "vmm/vm.h"

/* struct setup_header as it sits at offset 0x1f1 of a bzImage and of the zero page. */
struct __attribute__((packed)) setup_header {
	uint8_t setup_sects;
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag;
	uint16_t jump;
	uint32_t header;
	uint16_t version;
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t type_of_loader;
	uint8_t loadflags;
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;
	uint32_t ramdisk_size;
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;
	uint8_t ext_loader_ver;
	uint8_t ext_loader_type;
	uint32_t cmd_line_ptr;
	uint32_t initrd_addr_max;
	uint32_t kernel_alignment;
	uint8_t relocatable_kernel;
	uint8_t min_alignment;
	uint16_t xloadflags;
	uint32_t cmdline_size;
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;
	uint32_t payload_length;
	uint64_t setup_data;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t handover_offset;
	uint32_t kernel_info_offset;
};
_Static_assert(sizeof(struct setup_header) == 0x26c - 0x1f1, "setup_header layout");

struct __attribute__((packed)) boot_e820_entry {
	uint64_t addr, size;
	uint32_t type;
};
_Static_assert(sizeof(struct boot_e820_entry) == 20, "e820 entry layout");

#define BP_SIZE            4096
#define BP_ACPI_RSDP_ADDR  0x070
#define BP_EXT_RAMDISK_IMG 0x0c0
#define BP_EXT_RAMDISK_SZ  0x0c4
#define BP_EXT_CMD_LINE    0x0c8
#define BP_E820_ENTRIES    0x1e8
#define BP_SETUP_HEADER    0x1f1
#define BP_E820_TABLE      0x2d0
#define BP_E820_MAX        128

#define HDRS_MAGIC         0x53726448u   /* "HdrS" */
#define XLF_KERNEL_64      (1u << 0)
#define LOADER_UNDEFINED   0xff

bool linux_is_bzimage(const struct boot_file *f)
{
	uint32_t magic;
	uint16_t flag;

	if (f->size < 0x400)
		return false;
	memcpy(&flag, f->data + 0x1fe, 2);
	memcpy(&magic, f->data + 0x202, 4);
	return flag == 0xaa55 && magic == HDRS_MAGIC;
}

int linux_load(struct vm *vm, struct boot_images *img, struct vt_error *err)
{
	const char *path = img->kernel.path;
	const uint8_t *file = img->kernel.data;
	struct setup_header hdr;

	memcpy(&hdr, file + BP_SETUP_HEADER, sizeof(hdr));
	if (hdr.version < 0x020c || !(hdr.xloadflags & XLF_KERNEL_64))
		return vt_error_set(err, ENOEXEC, path, "load kernel",
		                    "boot protocol %u.%02u kernel without a 64-bit entry "
		                    "(needs 2.12+ with XLF_KERNEL_64)",
		                    hdr.version >> 8, hdr.version & 0xff);
	uint64_t setup_size = ((uint64_t)(hdr.setup_sects ? hdr.setup_sects : 4) + 1) * 512;
	if (setup_size >= img->kernel.size)
		return vt_error_set(err, ENOEXEC, path, "load kernel",
		                    "setup_sects %u points past the end of the file", hdr.setup_sects);
	uint64_t kernel_size = img->kernel.size - setup_size;
	uint64_t need = kernel_size > hdr.init_size ? kernel_size : hdr.init_size;
	uint8_t *dst = vm_guest_ptr(vm, VM_LAYOUT_KERNEL, need);
	if (!dst)
		return vt_error_set(err, ENOMEM, path, "load kernel",
		                    "the kernel needs %llu MiB of RAM above 1 MiB; raise -m",
		                    (unsigned long long)((need + (1 << 20) - 1) >> 20));
	memcpy(dst, file + setup_size, kernel_size);

	uint64_t max_end = (uint64_t)hdr.initrd_addr_max + 1;
	int ret = boot_place_initrd(vm, img, VM_LAYOUT_KERNEL + need, max_end, err);
	if (ret)
		return ret;
	if (hdr.cmdline_size && img->cmdline_len > hdr.cmdline_size)
		return vt_error_set(err, E2BIG, "-append", NULL,
		                    "command line of %zu bytes; this kernel takes at most %u",
		                    img->cmdline_len, hdr.cmdline_size);

	uint8_t *bp = vm_guest_ptr(vm, VM_LAYOUT_ZERO_PAGE, BP_SIZE);
	memset(bp, 0, BP_SIZE);
	/* Only the setup header is copied: the sentinel before it must stay zero. */
	size_t hdr_end = 0x202 + (size_t)file[0x201];
	if (hdr_end > BP_SETUP_HEADER + sizeof(hdr))
		hdr_end = BP_SETUP_HEADER + sizeof(hdr);
	memcpy(bp + BP_SETUP_HEADER, file + BP_SETUP_HEADER, hdr_end - BP_SETUP_HEADER);
	struct setup_header *h = (struct setup_header *)(bp + BP_SETUP_HEADER);
	h->type_of_loader = LOADER_UNDEFINED;
	h->cmd_line_ptr = (uint32_t)img->cmdline_addr;
	h->ramdisk_image = (uint32_t)img->initrd_addr;
	h->ramdisk_size = (uint32_t)img->initrd_size;
	h->code32_start = VM_LAYOUT_KERNEL;

	uint64_t rsdp = img->rsdp_addr;
	memcpy(bp + BP_ACPI_RSDP_ADDR, &rsdp, 8);

	struct vm_mem_region map[BP_E820_MAX];
	int n = vm_memory_map(vm, map, BP_E820_MAX);
	for (int i = 0; i < n; i++) {
		struct boot_e820_entry e = { map[i].addr, map[i].size, map[i].type };
		memcpy(bp + BP_E820_TABLE + (size_t)i * sizeof(e), &e, sizeof(e));
	}
	bp[BP_E820_ENTRIES] = (uint8_t)n;

	vm->entry = (struct vm_entry){ .mode = VM_ENTRY_LONG64, .rip = VM_LAYOUT_KERNEL + 0x200,
	                               .rsi = VM_LAYOUT_ZERO_PAGE };
	return 0;
}
