/* VM creation, guest memory, the device table and the machine's lifecycle. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmm/boot/boot.h"
#include "vmm/disk.h"
#include "vmm/hw/ide.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/net.h"
#include "vmm/hw/devices.h"
#include "vmm/hw/fw_cfg.h"
#include "vmm/irq.h"
#include "vmm/keep.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

/* Where VMX keeps its real-mode helpers (qemu's addresses): an identity page table and,
 * right after it, a three-page TSS, reserved in the memory map. */
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ull
#define KVM_TSS_ADDR          0xfeffd000ull
#define KVM_HELPERS_SIZE      0x4000ull
#define VM_MIN_RAM            (2ull << 20)
#define VGA_WINDOW            0xa0000ull
#define VGA_WINDOW_END        0xc0000ull

/* Creation order; vm_destroy frees in reverse. */
static const struct {
	const char *name;
	int (*init)(struct vm *vm, struct vt_error *err);
} vm_device_table[] = {
	{ "pci", pci_init },
	{ "vga", vga_init },     /* 00:02.0, as in qemu's pc machine */
	{ "serial", serial_init },
	{ "i8042", i8042_init },
	{ "rtc", rtc_init },
	{ "sysctl", sysctl_init },
	{ "acpi-pm", acpi_pm_init },
	{ "debug-exit", debug_exit_init },
	{ "debugcon", debugcon_init },
	{ "fw_cfg", fw_cfg_init },
	{ "ide", ide_init },
};

static void vm_disk_free(void *opaque)
{
	disk_close(opaque);
	free(opaque);
}

/* Open every -drive/-hda/-cdrom through the block layer and plug it into its
 * controller. IDE drives without an index take the free ones in order, as in qemu. */
static int vm_attach_drives(struct vm *vm, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;
	bool used[4] = { false };
	int ret;

	for (int i = 0; i < cfg->nr_drives; i++)
		if (cfg->drives[i].interface == VM_DRIVE_IDE && cfg->drives[i].index >= 0)
			used[cfg->drives[i].index] = true;
	for (int i = 0; i < cfg->nr_drives; i++) {
		const struct vm_drive *drive = &cfg->drives[i];
		/* Opened by the first boot, kept for the later ones (keep.h). */
		struct vm_disk *disk = keep_get("drive:%d", i);
		if (!disk) {
			if (!(disk = calloc(1, sizeof(*disk))))
				return vt_error_set(err, ENOMEM, drive->file, "open", NULL);
			if ((ret = disk_open(disk, drive, cfg->snapshot, err))) {
				vm_disk_free(disk);
				return ret;
			}
			if ((ret = keep_put(disk, vm_disk_free, "drive:%d", i)))
				return vt_error_set(err, -ret, drive->file, "open", NULL);
			if (disk->probed_raw)
				vm_warn(vm, "image format was not specified for '%s' and probing guessed "
				        "raw; writes to sector 0 are refused (give format=raw)", drive->file);
		}
		if (drive->interface == VM_DRIVE_NONE)
			continue; /* if=none without a -device: opened, attached nowhere (as qemu) */
		if (drive->interface == VM_DRIVE_VIRTIO) {
			ret = virtio_blk_add(vm, disk, err);
		} else {
			int index = drive->index;
			for (int k = 0; index < 0 && k < 4; k++)
				if (!used[k]) {
					used[k] = true;
					index = k;
				}
			if (index < 0)
				return vt_error_set(err, ENOSPC, drive->file, "attach",
				                    "all four IDE positions are taken");
			ret = ide_attach(vm, disk, index, err);
		}
		if (ret)
			return ret;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int vm_map_memory(struct vm *vm, struct vt_error *err)
{
	uint64_t size = vm->cfg->ram_size;

	if (size < VM_MIN_RAM)
		return vt_error_set(err, EINVAL, "-m", NULL,
		                    "%llu KiB of RAM is too small (at least 2 MiB)",
		                    (unsigned long long)(size >> 10));
	size = (size + 0xfff) & ~0xfffull;
	vm->ram_size = size;
	vm->low_ram = vm_low_ram_size(size);
	vm->high_ram = size - vm->low_ram;
	/* NORESERVE: guests touch little of what they are given; the rest costs nothing. */
	vm->ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->ram == MAP_FAILED) {
		vm->ram = NULL;
		return vt_error_set(err, errno, "-m", "allocate guest RAM", NULL);
	}
	/* Entered in the table now (boot code writes into it at once); KVM learns of the
	 * slots on the slow-setup thread. */
	struct vm_region low = { .name = "ram-low", .kind = VM_REGION_RAM, .gpa = 0,
	                         .size = vm->low_ram, .host = vm->ram };
	struct vm_region high = { .name = "ram-high", .kind = VM_REGION_RAM, .gpa = VM_4G,
	                          .size = vm->high_ram, .host = vm->ram + vm->low_ram };
	/* A VGA owns 0xa0000-0xbffff (its window traps to hw/vga_mem.c): RAM has a hole. */
	struct vm_region above = { .name = "ram-low-c0000", .kind = VM_REGION_RAM,
	                           .gpa = VGA_WINDOW_END, .size = vm->low_ram - VGA_WINDOW_END,
	                           .host = vm->ram + VGA_WINDOW_END };
	bool hole = vm->cfg->display.vga && vm->low_ram > VGA_WINDOW_END;
	if (hole)
		low.size = VGA_WINDOW;
	int ret = vm_mem_add(vm, &low, false, err);
	if (!ret && hole)
		ret = vm_mem_add(vm, &above, false, err);
	if (!ret && vm->high_ram)
		ret = vm_mem_add(vm, &high, false, err);
	return ret;
}

static int vm_create_kvm(struct vm *vm, struct vt_error *err)
{
	vm->kvm_fd = keep_open("/dev/kvm", O_RDWR, 0, err);
	if (vm->kvm_fd < 0)
		return vt_error_set(err, -vm->kvm_fd, "/dev/kvm", "open",
		                    vm->kvm_fd == -ENOENT ? "KVM is not available on this host "
		                                            "(no /dev/kvm)" : NULL);
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		return vt_error_set(err, ENOTSUP, "/dev/kvm", "check API version",
		                    "unsupported KVM API version");
	int run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_GET_VCPU_MMAP_SIZE", NULL);
	vm->run_size = (size_t)run_size;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_CREATE_VM", NULL);
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_SET_TSS_ADDR", NULL);
	uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_SET_IDENTITY_MAP_ADDR", NULL);
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_CREATE_IRQCHIP", NULL);
	return 0;
}

/* Two set-up steps cost milliseconds inside KVM: creating the PIT (it starts a kernel
 * thread) and, on nested hosts, the first memory slot. They run on a helper thread while
 * the devices, tables and kernel are written into the host mapping of guest RAM, and are
 * joined before any vCPU exists, so no guest instruction runs without them. */
static void *vm_slow_setup(void *arg)
{
	struct vm *vm = arg;
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };

	vm->slow_ret = vm_mem_sync(vm, &vm->slow_err);
	if (!vm->slow_ret && ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		vm->slow_ret = vt_error_set(&vm->slow_err, errno, "/dev/kvm", "KVM_CREATE_PIT2", NULL);
	return NULL;
}

int vm_create(struct vm *vm, const struct vm_config *cfg, int boot_count,
              struct vt_error *err)
{
	int ret;

	*vm = (struct vm){ .cfg = cfg, .kvm_fd = -1, .vm_fd = -1, .nr_vcpus = cfg->nr_vcpus,
	                   .boot_count = boot_count,
	                   .start_ns = now_ns() };
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	vm_mem_init(&vm->mem);
	bus_init(&vm->pio, "I/O port bus");
	bus_init(&vm->mmio, "MMIO bus");

	if ((ret = vm_create_kvm(vm, err)) || (ret = vm_map_memory(vm, err)) ||
	    (ret = irq_init(vm, err)))
		return ret;
	pthread_t slow_thread;
	bool threaded = pthread_create(&slow_thread, NULL, vm_slow_setup, vm) == 0;
	if (!threaded)
		vm_slow_setup(vm);
	for (size_t i = 0; !ret && i < sizeof(vm_device_table) / sizeof(vm_device_table[0]); i++)
		ret = vm_device_table[i].init(vm, err);
	if (!ret)
		ret = vm_attach_drives(vm, err);
	for (int i = 0; !ret && i < cfg->nr_nics; i++)
		if (cfg->nics[i].model)
			ret = virtio_net_add(vm, &cfg->nics[i], err);
	if (!ret)
		ret = cfg->kernel ? boot_load(vm, err) : firmware_load(vm, err);
	if (threaded)
		pthread_join(slow_thread, NULL);
	if (!ret && vm->slow_ret) {
		*err = vm->slow_err;
		ret = vm->slow_ret;
	}
	if (!ret)
		ret = vm_mem_sync(vm, err); /* regions added while the helper ran (firmware) */
	if (ret)
		return ret;
	vm->vcpus = calloc((size_t)vm->nr_vcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return vt_error_set(err, ENOMEM, "vtool run", "allocate vCPUs", NULL);
	for (int i = 0; i < vm->nr_vcpus; i++)
		if ((ret = vcpu_create(&vm->vcpus[i], vm, i, err)))
			return ret;
	return 0;
}

void vm_destroy(struct vm *vm)
{
	if (vm->vcpus) {
		for (int i = 0; i < vm->nr_vcpus; i++)
			if (vm->vcpus[i].vm)
				vcpu_destroy(&vm->vcpus[i]);
		free(vm->vcpus);
	}
	while (vm->nr_devs > 0) {
		struct vm_dev *d = &vm->devs[--vm->nr_devs];
		if (d->destroy)
			d->destroy(d->state);
	}
	irq_destroy(vm);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd); /* first: KVM lets go of the memory before it is unmapped */
	vm->vm_fd = -1;
	vm_mem_destroy(&vm->mem);
	if (vm->ram)
		munmap(vm->ram, vm->ram_size);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	free(vm->stop_message);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	*vm = (struct vm){ .kvm_fd = -1, .vm_fd = -1 };
}

enum vm_stop vm_run(struct vm *vm, struct vt_error *err)
{
	int started = 0;

	for (; started < vm->nr_vcpus; started++)
		if (vcpu_start(&vm->vcpus[started], err)) {
			vm_request_stop(vm, VM_STOP_ERROR, 1, NULL);
			break;
		}
	pthread_mutex_lock(&vm->lock);
	while (vm->stop == VM_RUNNING)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < started; i++)
		vcpu_kick(&vm->vcpus[i]);
	for (int i = 0; i < started; i++)
		vcpu_join(&vm->vcpus[i]);
	return vm->stop;
}

void vm_request_stop(struct vm *vm, enum vm_stop why, int status, const char *message)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->stop == VM_RUNNING) {
		vm->exit_status = status;
		if (message)
			vm->stop_message = strdup(message);
		__atomic_store_n(&vm->stop, why, __ATOMIC_SEQ_CST);
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	if (vm->vcpus)
		for (int i = 0; i < vm->nr_vcpus; i++)
			vcpu_kick(&vm->vcpus[i]);
}

bool vm_stopping(struct vm *vm)
{
	return __atomic_load_n(&vm->stop, __ATOMIC_SEQ_CST) != VM_RUNNING;
}

int vm_memory_map(const struct vm *vm, struct vm_mem_region *out, int max)
{
	const struct vm_mem_region map[] = {
		{ 0, VM_LAYOUT_EBDA, VM_MEM_RAM },
		{ VM_LAYOUT_EBDA, 0x100000 - VM_LAYOUT_EBDA, VM_MEM_RESERVED },
		{ 0x100000, vm->low_ram - 0x100000, VM_MEM_RAM },
		{ KVM_IDENTITY_MAP_ADDR, KVM_HELPERS_SIZE, VM_MEM_RESERVED },
		{ 0xfffc0000ull, 0x40000, VM_MEM_RESERVED },
		{ VM_4G, vm->high_ram, VM_MEM_RAM },
	};
	int n = 0;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]) && n < max; i++)
		if (map[i].size && (map[i].type != VM_MEM_RAM || map[i].addr < map[i].addr + map[i].size))
			out[n++] = map[i];
	return n;
}

void vm_irq_line(struct vm *vm, unsigned irq, bool level)
{
	struct kvm_irq_level l = { .irq = irq, .level = level };

	(void)ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
}

void vm_irq_pulse(struct vm *vm, unsigned irq)
{
	vm_irq_line(vm, irq, true);
	vm_irq_line(vm, irq, false);
}

int vm_add_device(struct vm *vm, const char *name, void *state, void (*destroy)(void *),
                  struct vt_error *err)
{
	if (vm->nr_devs == (int)(sizeof(vm->devs) / sizeof(vm->devs[0]))) {
		if (destroy)
			destroy(state);
		return vt_error_set(err, ENOSPC, name, "add device", "too many devices");
	}
	vm->devs[vm->nr_devs++] = (struct vm_dev){ name, state, destroy };
	return 0;
}

void vm_add_boot_path(struct vm *vm, int bootindex, const char *fmt, ...)
{
	va_list ap;
	int max = (int)(sizeof(vm->boot_paths) / sizeof(vm->boot_paths[0]));

	if (bootindex < 0 || vm->nr_boot_paths == max)
		return;
	struct vm_boot_path *b = &vm->boot_paths[vm->nr_boot_paths++];
	b->bootindex = bootindex;
	va_start(ap, fmt);
	vsnprintf(b->path, sizeof(b->path), fmt, ap);
	va_end(ap);
}

void *vm_device(const struct vm *vm, const char *name)
{
	for (int i = 0; i < vm->nr_devs; i++)
		if (!strcmp(vm->devs[i].name, name))
			return vm->devs[i].state;
	return NULL;
}

void vm_warn(struct vm *vm, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	(void)vm;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vtool: warning: %s\n", buf);
}
