/* vCPU set-up and the exit loop. The loop dispatches port I/O and MMIO to the buses and
 * turns every other exit into a lifecycle event; it never knows a device type. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmm/cpuid.h"
#include "vmm/sandbox.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define VCPU_KICK_SIGNAL SIGUSR1

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE    0x2ff

static void vcpu_kick_handler(int sig)
{
	(void)sig; /* only here to make KVM_RUN return EINTR */
}

void vcpu_init_signals(void)
{
	struct sigaction sa = { .sa_handler = vcpu_kick_handler };

	sigemptyset(&sa.sa_mask);
	sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct kvm_segment flat_segment(uint16_t sel, uint8_t type, bool code64)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
		.dpl = 0, .db = code64 ? 0 : 1, .s = 1, .l = code64 ? 1 : 0, .g = 1,
	};
}

/* Long mode for the Linux 64-bit entry: a GDT with the boot protocol's selectors and an
 * identity map of the first 4 GiB in 2 MiB pages (what the kernel may touch before it
 * builds its own tables). */
static int vcpu_setup_long_mode(struct vcpu *vcpu, struct kvm_sregs *s, struct vt_error *err)
{
	struct vm *vm = vcpu->vm;
	uint64_t *gdt = vm_guest_ptr(vm, VM_LAYOUT_GDT, 4 * 8);
	uint64_t *pml4 = vm_guest_ptr(vm, VM_LAYOUT_PML4, 6 * 4096);

	if (!gdt || !pml4)
		return vt_error_set(err, ENOMEM, "-m", "set up long mode", "RAM too small");
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[2] = 0x00af9b000000ffffull; /* 0x10: 64-bit code */
	gdt[3] = 0x00cf93000000ffffull; /* 0x18: data */
	uint64_t *pdpt = pml4 + 512, *pd = pml4 + 1024;
	memset(pml4, 0, 6 * 4096);
	pml4[0] = (VM_LAYOUT_PML4 + 0x1000) | 0x3;
	for (int i = 0; i < 4; i++)
		pdpt[i] = (VM_LAYOUT_PML4 + 0x2000 + (uint64_t)i * 0x1000) | 0x3;
	for (uint64_t i = 0; i < 4 * 512; i++)
		pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB page */

	s->cs = flat_segment(0x10, 0xb, true);
	s->ds = s->es = s->fs = s->gs = s->ss = flat_segment(0x18, 0x3, false);
	s->gdt.base = VM_LAYOUT_GDT;
	s->gdt.limit = 4 * 8 - 1;
	s->cr3 = VM_LAYOUT_PML4;
	s->cr4 = 0x20;                     /* PAE */
	s->cr0 = 0x80000033;               /* PG | NE | ET | MP | PE */
	s->efer = 0x500;                   /* LME | LMA */
	return 0;
}

/* 32-bit protected mode with paging off: the PVH entry state. */
static int vcpu_setup_protected_mode(struct vcpu *vcpu, struct kvm_sregs *s,
                                     struct vt_error *err)
{
	uint64_t *gdt = vm_guest_ptr(vcpu->vm, VM_LAYOUT_GDT, 4 * 8);

	if (!gdt)
		return vt_error_set(err, ENOMEM, "-m", "set up protected mode", "RAM too small");
	gdt[0] = 0;
	gdt[1] = 0x00cf9b000000ffffull;    /* 0x08: 32-bit code */
	gdt[2] = 0x00cf93000000ffffull;    /* 0x10: data */
	gdt[3] = 0x00008b0000000067ull;    /* 0x18: 32-bit TSS */
	s->cs = flat_segment(0x08, 0xb, false);
	s->ds = s->es = s->fs = s->gs = s->ss = flat_segment(0x10, 0x3, false);
	s->tr = (struct kvm_segment){ .selector = 0x18, .limit = 0x67, .type = 0xb, .present = 1 };
	s->gdt.base = VM_LAYOUT_GDT;
	s->gdt.limit = 4 * 8 - 1;
	s->cr0 = 0x11;                     /* PE | ET */
	s->cr4 = 0;
	s->efer = 0;
	return 0;
}

static int vcpu_setup_boot(struct vcpu *vcpu, struct vt_error *err)
{
	struct vm *vm = vcpu->vm;
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rflags = 0x2 };
	int ret;

	if (vm->entry.mode == VM_ENTRY_RESET)
		return 0; /* KVM's power-on state is the reset state firmware expects */
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return vt_error_set(err, errno, "vCPU 0", "KVM_GET_SREGS", NULL);
	if (vm->entry.mode == VM_ENTRY_LONG64)
		ret = vcpu_setup_long_mode(vcpu, &sregs, err);
	else
		ret = vcpu_setup_protected_mode(vcpu, &sregs, err);
	if (ret)
		return ret;
	regs.rip = vm->entry.rip;
	regs.rsi = vm->entry.rsi;
	regs.rbx = vm->entry.rbx;
	regs.rsp = VM_LAYOUT_STACK_TOP;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return vt_error_set(err, errno, "vCPU 0", "KVM_SET_SREGS", NULL);
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return vt_error_set(err, errno, "vCPU 0", "KVM_SET_REGS", NULL);
	return 0;
}

/* What a CPU has after reset that KVM leaves to the VMM: x87/SSE control words, fast
 * strings, write-back default memory type, and a LAPIC wired for the PIC (LINT0 ExtINT)
 * and NMIs (LINT1). */
static int vcpu_setup_defaults(struct vcpu *vcpu, struct vt_error *err)
{
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
	static const struct kvm_msr_entry msr_defaults[] = {
		{ .index = MSR_IA32_MISC_ENABLE, .data = 1 },
		{ .index = MSR_MTRR_DEF_TYPE, .data = 0xc06 },
	};
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + sizeof(msr_defaults));
	struct kvm_lapic_state lapic;

	if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0)
		return vt_error_set(err, errno, "vCPU", "KVM_SET_FPU", NULL);
	/* Not fatal if the host refuses one: these are conveniences for the guest. */
	if (msrs) {
		msrs->nmsrs = sizeof(msr_defaults) / sizeof(msr_defaults[0]);
		memcpy(msrs->entries, msr_defaults, sizeof(msr_defaults));
		(void)ioctl(vcpu->fd, KVM_SET_MSRS, msrs);
		free(msrs);
	}
	if (ioctl(vcpu->fd, KVM_GET_LAPIC, &lapic) < 0)
		return vt_error_set(err, errno, "vCPU", "KVM_GET_LAPIC", NULL);
	uint32_t lint0 = 0x700, lint1 = 0x400; /* delivery modes ExtINT, NMI */
	memcpy(&lapic.regs[0x350], &lint0, 4);
	memcpy(&lapic.regs[0x360], &lint1, 4);
	if (ioctl(vcpu->fd, KVM_SET_LAPIC, &lapic) < 0)
		return vt_error_set(err, errno, "vCPU", "KVM_SET_LAPIC", NULL);
	return 0;
}

int vcpu_create(struct vcpu *vcpu, struct vm *vm, int id, struct vt_error *err)
{
	*vcpu = (struct vcpu){ .vm = vm, .id = id, .fd = -1 };
	if (getenv("VTOOL_RUN_STATS"))
		vcpu->stats.io_by_port = calloc(65536, sizeof(uint32_t));
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (vcpu->fd < 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_CREATE_VCPU", NULL);
	vcpu->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		return vt_error_set(err, errno, "/dev/kvm", "map kvm_run", NULL);
	}
	struct kvm_cpuid2 *cpuid = cpuid_build(vm->kvm_fd, vm->cfg, err);
	if (!cpuid)
		return -EINVAL;
	cpuid_set_vcpu(cpuid, id, vm->nr_vcpus);
	int ret = ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (ret < 0)
		return vt_error_set(err, errno, "/dev/kvm", "KVM_SET_CPUID2", NULL);
	ret = vcpu_setup_defaults(vcpu, err);
	if (!ret && id == 0)
		ret = vcpu_setup_boot(vcpu, err);
	return ret;
}

/* Registers, segments and the bytes at RIP: what anyone debugging a dead guest needs. */
static void vcpu_describe(struct vcpu *vcpu, const char *what, char *buf, size_t len)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	size_t n = 0;

#define OUT(...) (n += (size_t)snprintf(buf + n, n < len ? len - n : 0, __VA_ARGS__))
	OUT("vCPU %d: %s", vcpu->id, what);
	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &s) < 0) {
		OUT(" (registers unavailable: %s)", strerror(errno));
		return;
	}
	OUT("\n  rip=%016llx rsp=%016llx rflags=%08llx\n", r.rip, r.rsp, r.rflags);
	OUT("  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n", r.rax, r.rbx, r.rcx, r.rdx);
	OUT("  rsi=%016llx rdi=%016llx rbp=%016llx r8 =%016llx\n", r.rsi, r.rdi, r.rbp, r.r8);
	OUT("  r9 =%016llx r10=%016llx r11=%016llx r12=%016llx\n", r.r9, r.r10, r.r11, r.r12);
	OUT("  r13=%016llx r14=%016llx r15=%016llx\n", r.r13, r.r14, r.r15);
	OUT("  cs=%04x (base %llx l=%d db=%d dpl=%d) ss=%04x ds=%04x\n", s.cs.selector,
	    s.cs.base, s.cs.l, s.cs.db, s.cs.dpl, s.ss.selector, s.ds.selector);
	OUT("  cr0=%llx cr2=%llx cr3=%llx cr4=%llx efer=%llx\n", s.cr0, s.cr2, s.cr3, s.cr4,
	    s.efer);
	struct kvm_translation tr = { .linear_address = s.cs.base + r.rip };
	const uint8_t *code = NULL;
	if (ioctl(vcpu->fd, KVM_TRANSLATE, &tr) == 0 && tr.valid)
		code = vm_guest_ptr_ro(vcpu->vm, tr.physical_address, 16);
	if (code) {
		OUT("  code at rip (gpa %llx):", tr.physical_address);
		for (int i = 0; i < 16; i++)
			OUT(" %02x", code[i]);
	} else {
		OUT("  code at rip: not in guest RAM");
	}
#undef OUT
}

static void vcpu_fail(struct vcpu *vcpu, const char *what)
{
	char msg[2048];

	vcpu_describe(vcpu, what, msg, sizeof(msg));
	vm_request_stop(vcpu->vm, VM_STOP_ERROR, 1, msg);
}

static void vcpu_handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	vcpu->stats.io++;
	vcpu->stats.io_elems += run->io.count;
	if (vcpu->stats.io_by_port)
		vcpu->stats.io_by_port[run->io.port]++;
	/* String I/O (rep insw/outsw) arrives as one exit with count elements. */
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
		bus_access(&vcpu->vm->pio, run->io.port, data, run->io.size, is_write);
}

static void vcpu_handle_internal_error(struct vcpu *vcpu)
{
	char what[256];
	struct kvm_run *run = vcpu->run;
	static const char *const names[] = {
		[KVM_INTERNAL_ERROR_EMULATION] = "emulation failure: the host's instruction "
		                                 "emulator cannot execute the instruction at rip",
		[KVM_INTERNAL_ERROR_SIMUL_EX] = "exception while delivering an exception",
		[KVM_INTERNAL_ERROR_DELIVERY_EV] = "failed to deliver an event",
	};
	uint32_t sub = run->internal.suberror;
	const char *name = sub < sizeof(names) / sizeof(names[0]) && names[sub] ? names[sub]
	                                                                        : "unknown";
	snprintf(what, sizeof(what), "KVM internal error (suberror %u: %s)", sub, name);
	vcpu_fail(vcpu, what);
}

static void vcpu_handle_system_event(struct vcpu *vcpu)
{
	switch (vcpu->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_stop(vcpu->vm, VM_STOP_POWEROFF, 0, NULL);
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_stop(vcpu->vm, VM_STOP_RESET, 0, NULL);
		break;
	default:
		vcpu_fail(vcpu, "guest crashed (KVM system event)");
	}
}

/* A triple fault resets the machine, as on a PC and in qemu (under -no-reboot the run
 * ends with status 0). Unlike qemu, say so on stderr: a kernel that faults early would
 * otherwise only seem to boot again and again. */
static void vcpu_triple_fault(struct vcpu *vcpu)
{
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0)
		fprintf(stderr, "vtool run: vCPU %d: guest triple fault at rip=%016llx: the machine "
		        "resets\n", vcpu->id, (unsigned long long)regs.rip);
	else
		fprintf(stderr, "vtool run: vCPU %d: guest triple fault: the machine resets\n",
		        vcpu->id);
	vm_request_stop(vcpu->vm, VM_STOP_RESET, 0, NULL);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	sigset_t set;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%d", vcpu->id);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	sandbox_thread(SANDBOX_VCPU);
	vcpu->first_run_ns = now_ns();
	__atomic_store_n(&vcpu->tid, gettid(), __ATOMIC_RELEASE);
	vm_vcpu_enter(vm);

	while (!vm_stopping(vm)) {
		if (vm_pause_requested(vm)) {
			vm_vcpu_park(vcpu); /* stop / -S: parked outside KVM_RUN (pause.c) */
			continue;
		}
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			char what[128];
			snprintf(what, sizeof(what), "KVM_RUN failed: %s", strerror(errno));
			vcpu_fail(vcpu, what);
			break;
		}
		struct kvm_run *run = vcpu->run;
		vcpu->stats.exits++;
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			vcpu_handle_io(vcpu);
			break;
		case KVM_EXIT_MMIO:
			vcpu->stats.mmio++;
			bus_access(&vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
			           run->mmio.is_write);
			break;
		case KVM_EXIT_INTR:
			vcpu->stats.intr++;
			break;
		case KVM_EXIT_HLT:
			vcpu->stats.hlt++;
			break;
		case KVM_EXIT_SHUTDOWN:
			vcpu_triple_fault(vcpu);
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			vcpu_handle_system_event(vcpu);
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			vcpu_handle_internal_error(vcpu);
			break;
		case KVM_EXIT_FAIL_ENTRY: {
			char what[128];
			snprintf(what, sizeof(what), "KVM entry failed (hardware reason 0x%llx)",
			         (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			vcpu_fail(vcpu, what);
			break;
		}
		default: {
			vcpu->stats.other++;
			char what[64];
			snprintf(what, sizeof(what), "unhandled KVM exit %u", run->exit_reason);
			vcpu_fail(vcpu, what);
		}
		}
	}
	vm_vcpu_leave(vm);
	return NULL;
}

int vcpu_start(struct vcpu *vcpu, struct vt_error *err)
{
	int ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);

	if (ret)
		return vt_error_set(err, ret, "vCPU", "start thread", NULL);
	vcpu->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *vcpu)
{
	if (!vcpu->started)
		return;
	/* immediate_exit covers a kick that lands just before KVM_RUN is entered. */
	if (vcpu->run)
		__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *vcpu)
{
	if (vcpu->started)
		pthread_join(vcpu->thread, NULL);
	vcpu->started = false;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, vcpu->vm->run_size);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	free(vcpu->stats.io_by_port);
	vcpu->stats.io_by_port = NULL;
	vcpu->run = NULL;
	vcpu->fd = -1;
}
