/* The virtual machine: KVM handles, guest RAM, the two buses, vCPUs and the machine's
 * lifecycle (who asked it to stop, and with which exit status).
 *
 * Guest-physical layout (the i440FX "pc" shape), as regions of the memory table (mem.h):
 *   [0, low_ram)            RAM; low_ram = -m when -m is below 3.5 GiB, else 3 GiB (qemu
 *                           pc's split: vm_low_ram_size()). With firmware, 0xe0000-0xfffff
 *                           holds a copy of the BIOS image's last 128 KiB
 *   [low_ram, 4 GiB)        the PCI hole: device BARs, IOAPIC 0xfec00000, LAPIC 0xfee00000,
 *                           KVM's real-mode helpers at 0xfeffc000, and with firmware the
 *                           BIOS image read-only just below 4 GiB
 *   [4 GiB, 4 GiB+high_ram) the rest of RAM
 * Inside low RAM the VMM keeps fixed places for what it writes before boot (VM_LAYOUT_*). */
#ifndef VTOOL_VMM_VM_H
#define VTOOL_VMM_VM_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"
#include "vmm/bus.h"
#include "vmm/config.h"
#include "vmm/mem.h"

#define VM_4G              0x100000000ull
/* qemu's pc machine: RAM smaller than VM_LOW_RAM_SPLIT stays below 4 GiB entirely; from
 * that size on, low RAM ends at VM_LOW_RAM_ALIGNED (gigabyte aligned) and the rest is above
 * 4 GiB. So low RAM never reaches VM_PCI_MMIO_BASE. */
#define VM_LOW_RAM_SPLIT   0xe0000000ull
#define VM_LOW_RAM_ALIGNED 0xc0000000ull
#define VM_PCI_MMIO_BASE   0xe0000000ull  /* where the VMM places memory BARs */
#define VM_PCI_MMIO_END    0xfec00000ull
#define VM_PCI_IO_BASE     0xc000u        /* where the VMM places I/O BARs */

#define VM_LAYOUT_GDT        0x500ull
#define VM_LAYOUT_START_INFO 0x6000ull    /* PVH hvm_start_info + modules + memory map */
#define VM_LAYOUT_ZERO_PAGE  0x7000ull    /* Linux boot_params */
#define VM_LAYOUT_STACK_TOP  0x8ff0ull
#define VM_LAYOUT_PML4       0x9000ull    /* 0x9000..0xefff: identity map of 4 GiB */
#define VM_LAYOUT_CMDLINE    0x20000ull
#define VM_CMDLINE_MAX       0x10000ull
#define VM_LAYOUT_EBDA       0x9fc00ull   /* reserved up to 1 MiB from here */
#define VM_LAYOUT_BIOS_TABLES 0xe0000ull  /* ACPI tables, scanned by guests */
#define VM_LAYOUT_MPTABLE    0xf0000ull   /* MP floating pointer + table */
#define VM_MPTABLE_MAX       0x2000ull
#define VM_LAYOUT_SMBIOS     0xf2000ull   /* SMBIOS entry point + structures */
#define VM_SMBIOS_MAX        0x4000ull
#define VM_LAYOUT_KERNEL     0x100000ull

enum vm_mem_type { VM_MEM_RAM = 1, VM_MEM_RESERVED = 2 };

struct vm_mem_region {
	uint64_t addr, size;
	enum vm_mem_type type;
};

/* Why the machine stopped; the first reason wins. */
enum vm_stop {
	VM_RUNNING,
	VM_STOP_POWEROFF,   /* ACPI S5: exit 0 */
	VM_STOP_RESET,      /* guest reset: exit 0 with -no-reboot, else boot again */
	VM_STOP_EXIT_CODE,  /* isa-debug-exit: the guest chose the status */
	VM_STOP_QUIT,       /* Ctrl-A x, SIGINT, SIGTERM: exit 0 after a clean shutdown */
	VM_STOP_ERROR,      /* KVM error or unhandled exit: message set, exit 1 */
};

/* How the CPU starts: set by boot/, applied to vCPU 0 by vcpu.c. VM_ENTRY_RESET leaves
 * the power-on state KVM gives a new vCPU (real mode, CS base 0xffff0000, IP 0xfff0):
 * the first instruction is the firmware's reset vector. */
enum vm_entry_mode { VM_ENTRY_RESET, VM_ENTRY_PROTECTED32, VM_ENTRY_LONG64 };

struct vm_entry {
	enum vm_entry_mode mode;
	uint64_t rip, rsi, rbx;
};

struct vcpu;
struct irq_table;

/* Guest serial input: the console hands typed bytes to whichever device registered. */
typedef void vm_input_fn(void *opaque, const uint8_t *buf, size_t len);

struct vm {
	const struct vm_config *cfg;
	int kvm_fd, vm_fd;
	size_t run_size;
	int slow_ret;                 /* vm_create's helper thread: memory slots, PIT */
	struct vt_error slow_err;

	uint8_t *ram;                 /* host mapping of all guest RAM */
	uint64_t ram_size, low_ram, high_ram;
	struct vm_mem mem;            /* mem.c: the regions guests see, and their KVM slots */

	struct bus pio, mmio;
	struct irq_table *irq;        /* irq.c: GSI routing */
	struct vm_entry entry;

	int boot_count;               /* 0 on power-on, +1 at each guest reset (-boot once=) */
	int nr_vcpus;
	struct vcpu *vcpus;
	uint64_t start_ns;            /* CLOCK_MONOTONIC at vm_create, for the start-up figure */

	vm_input_fn *input_fn;
	void *input_opaque;

	/* Devices given a bootindex, with qemu's OpenFirmware path for the "bootorder" file. */
	struct vm_boot_path {
		int bootindex;
		char path[64];
	} boot_paths[VM_MAX_DRIVES + VM_MAX_NICS];
	int nr_boot_paths;

	/* Devices' states, freed by vm_destroy in reverse order of creation. */
	struct vm_dev {
		const char *name;
		void *state;
		void (*destroy)(void *state);
	} devs[32];
	int nr_devs;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vm_stop stop;
	int exit_status;
	char *stop_message;           /* VM_STOP_ERROR: what to print (may be multi-line) */

	/* pause.c: stop/cont. Under lock; vCPUs park on cond. */
	struct vm_pause {
		int depth;                /* nested vm_pause() calls */
		bool requested;           /* vCPUs must park */
		int parked;               /* vCPUs parked now */
		int started;              /* vCPU threads running their loop */
		bool clock_saved;
		uint64_t clock;           /* kvmclock at the pause (KVM_GET_CLOCK) */
		struct vm_pause_hook {
			void (*fn)(void *opaque, bool pause);
			void *opaque;
		} hooks[16];
		int nr_hooks;
	} pause;
};

int vm_create(struct vm *vm, const struct vm_config *cfg, int boot_count,
              struct vt_error *err);
void vm_destroy(struct vm *vm);

/* Run the vCPUs until something stops the machine; returns the stop reason. */
enum vm_stop vm_run(struct vm *vm, struct vt_error *err);

/* Record why the machine must stop (first caller wins) and kick every vCPU out of the
 * guest. Safe from any thread, including vCPU threads. message may be NULL. */
void vm_request_stop(struct vm *vm, enum vm_stop why, int status, const char *message);
bool vm_stopping(struct vm *vm);

/* Pause the machine (pause.c): park every vCPU outside KVM_RUN, let each device's I/O
 * thread finish what is in flight and take no new work (their pause hooks), and freeze
 * the guest's kvmclock. Returns when all of that is done. Calls nest; vm_resume undoes
 * the outermost. Safe from any thread but the vCPUs'. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
bool vm_paused(struct vm *vm);
/* A device's quiesce hook: fn(opaque, true) when the machine pauses (return only when no
 * request is in flight and none will start), fn(opaque, false) when it resumes. Hooks
 * run in registration order on pause, in reverse on resume. */
int vm_add_pause_hook(struct vm *vm, void (*fn)(void *opaque, bool pause), void *opaque,
                      struct vt_error *err);
/* For the vCPU loop (vcpu.c): park here while a pause is requested. */
struct vcpu;
void vm_vcpu_park(struct vcpu *vcpu);
static inline bool vm_pause_requested(struct vm *vm)
{
	return __atomic_load_n(&vm->pause.requested, __ATOMIC_ACQUIRE);
}
/* vCPU threads count themselves in and out (for vm_pause's wait). */
void vm_vcpu_enter(struct vm *vm);
void vm_vcpu_leave(struct vm *vm);

/* How much of RAM_SIZE bytes of RAM lies below 4 GiB (the rest is at 4 GiB), as qemu's
 * "pc" machine splits it (hw/i386/pc_piix.c): all of it below 3.5 GiB, else 3 GiB. */
static inline uint64_t vm_low_ram_size(uint64_t ram_size)
{
	return ram_size >= VM_LOW_RAM_SPLIT ? VM_LOW_RAM_ALIGNED : ram_size;
}

/* The memory map guests see (e820 / PVH memmap); returns the number of regions. */
int vm_memory_map(const struct vm *vm, struct vm_mem_region *out, int max);

/* Drive an interrupt line of the in-kernel PIC/IOAPIC (ISA IRQ or GSI). */
void vm_irq_line(struct vm *vm, unsigned irq, bool level);
/* Pulse an edge-triggered line. */
void vm_irq_pulse(struct vm *vm, unsigned irq);

/* A one-line warning about the guest or a device, printed once by the caller's choice
 * ("vtool: warning: <text>"). The only place below the command front that prints. */
void vm_warn(struct vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keep a device's state so vm_destroy frees it. */
int vm_add_device(struct vm *vm, const char *name, void *state, void (*destroy)(void *),
                  struct vt_error *err);
/* Record that the device at path (printf-style) boots with priority bootindex (< 0: it
 * has none, nothing is recorded). */
void vm_add_boot_path(struct vm *vm, int bootindex, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The state of the first device added under name ("pci", "ide", "fw_cfg"), or NULL.
 * Devices find each other this way; struct vm names none of them. */
void *vm_device(const struct vm *vm, const char *name);

#endif
