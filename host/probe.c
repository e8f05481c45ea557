/* The probe VM: how fast does this host run guest code at CPL0 and at CPL3?
 *
 * On ordinary KVM hosts both run natively. On nested hosts such as PVM, guest kernel code
 * (CPL0) is emulated at about a million instructions per second while 64-bit user code
 * (CPL3) runs natively; boots there take minutes. One vCPU in 64-bit long mode with
 * paging runs a counted loop (dec rcx; jnz) that ends in a store to an address no memory
 * slot covers, so every run ends in KVM_EXIT_MMIO. The loop runs first at CPL0, then, after
 * an iretq the guest does itself, at CPL3; each phase grows its count until one run takes
 * 5 ms and keeps the fastest of three such runs. A 2-second alarm ends any KVM_RUN that
 * does not come back. The one memory slot logs dirty pages; the guest's stack pushes must show up.
 *
 * Guest-physical (= virtual) layout, one 64 KiB slot at 0, mapped by a 2 MiB page:
 *   0x1000 PML4, 0x2000 PDPT, 0x3000 PD, 0x4000 GDT, 0x5000 kernel stack page (rsp 0x6000),
 *   0x6000 user stack page (rsp 0x7000), 0x8000 code; 0x100000 the exit store (no slot). */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "host/host.h"

#define MEM_SIZE     0x10000u
#define PML4         0x1000u
#define PDPT         0x2000u
#define PD           0x3000u
#define GDT          0x4000u
#define KSTACK_TOP   0x6000u
#define KSTACK_PAGE  5u
#define CODE         0x8000u
#define ENTER_USER   0x8010u
#define EXIT_ADDR    0x100000u
#define TARGET_NS    5000000ull
#define ALARM_S      2

/* 64-bit code; see the comments for the instructions. */
static const uint8_t loop_code[] = {
	0x48, 0xff, 0xc9,                         /* 0x8000: dec rcx */
	0x75, 0xfb,                               /*         jnz 0x8000 */
	0x88, 0x04, 0x25, 0x00, 0x00, 0x10, 0x00, /*         mov [0x100000], al */
	0xeb, 0xfe,                               /*         jmp $ */
};
static const uint8_t enter_user_code[] = {
	0x6a, 0x1b,                               /* 0x8010: push 0x1b     (user SS) */
	0x68, 0x00, 0x70, 0x00, 0x00,             /*         push 0x7000   (user RSP) */
	0x6a, 0x02,                               /*         push 2        (RFLAGS) */
	0x6a, 0x23,                               /*         push 0x23     (user CS) */
	0x68, 0x00, 0x80, 0x00, 0x00,             /*         push 0x8000   (the loop) */
	0x48, 0xcf,                               /*         iretq */
};
/* null, kernel code 0x08, kernel data 0x10, user data 0x18 (|3), user code 0x20 (|3) */
static const uint64_t gdt[] = { 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull,
                                0x00cff3000000ffffull, 0x00affb000000ffffull };

struct probe {
	int vm_fd, vcpu_fd;
	uint8_t *mem;
	struct kvm_run *run;
	size_t run_size;
};

static void on_alarm(int sig)
{
	(void)sig; /* only here to make KVM_RUN return EINTR */
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int probe_cpuid(int kvm_fd, int vcpu_fd, struct vt_error *err)
{
	/* The table's size is not known in advance: grow it until KVM stops saying E2BIG. */
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return vt_error_set(err, ENOMEM, "probe VM", "KVM_GET_SUPPORTED_CPUID", NULL);
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			int ret = ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
			free(c);
			return ret ? vt_error_set(err, -ret, "probe VM", "KVM_SET_CPUID2", NULL) : 0;
		}
		int e = errno;
		free(c);
		if (e != E2BIG)
			return vt_error_set(err, e, "probe VM", "KVM_GET_SUPPORTED_CPUID", NULL);
	}
	return vt_error_set(err, E2BIG, "probe VM", "KVM_GET_SUPPORTED_CPUID", NULL);
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	*s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
	                           .present = 1, .dpl = (uint8_t)(sel & 3), .s = 1,
	                           .l = code, .db = !code, .g = 1 };
}

static int probe_setup(int kvm_fd, struct probe *p, struct vt_error *err)
{
	if ((p->vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0)) < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_CREATE_VM", NULL);
	p->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->mem == MAP_FAILED) {
		p->mem = NULL;
		return vt_error_set(err, errno, "probe VM", "allocate guest memory", NULL);
	}
	uint64_t e;
	e = PDPT | 7; memcpy(p->mem + PML4, &e, 8);
	e = PD | 7;   memcpy(p->mem + PDPT, &e, 8);
	e = 0x87;     memcpy(p->mem + PD, &e, 8);   /* 2 MiB page at 0: P, RW, US, PS */
	memcpy(p->mem + GDT, gdt, sizeof(gdt));
	memcpy(p->mem + CODE, loop_code, sizeof(loop_code));
	memcpy(p->mem + ENTER_USER, enter_user_code, sizeof(enter_user_code));
	struct kvm_userspace_memory_region r = {
		.slot = 0, .flags = KVM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 0,
		.memory_size = MEM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)p->mem,
	};
	if (ioctl(p->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_SET_USER_MEMORY_REGION", NULL);
	if ((p->vcpu_fd = ioctl(p->vm_fd, KVM_CREATE_VCPU, 0)) < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_CREATE_VCPU", NULL);
	int size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size <= 0)
		return vt_error_set(err, errno, "probe VM", "KVM_GET_VCPU_MMAP_SIZE", NULL);
	p->run_size = (size_t)size;
	p->run = mmap(NULL, p->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, p->vcpu_fd, 0);
	if (p->run == MAP_FAILED) {
		p->run = NULL;
		return vt_error_set(err, errno, "probe VM", "map kvm_run", NULL);
	}
	int ret = probe_cpuid(kvm_fd, p->vcpu_fd, err); /* long mode needs the LM bit */
	if (ret)
		return ret;
	struct kvm_sregs s;
	if (ioctl(p->vcpu_fd, KVM_GET_SREGS, &s) < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_GET_SREGS", NULL);
	seg(&s.cs, 0x08, 11, true);
	seg(&s.ds, 0x10, 3, false);
	s.es = s.fs = s.gs = s.ss = s.ds;
	s.gdt.base = GDT;
	s.gdt.limit = sizeof(gdt) - 1;
	s.cr3 = PML4;
	s.cr4 = 0x20;                     /* PAE */
	s.cr0 = 0x80050033;               /* PG WP NE ET MP PE */
	s.efer = 0x500;                   /* LMA LME */
	if (ioctl(p->vcpu_fd, KVM_SET_SREGS, &s) < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_SET_SREGS", NULL);
	return 0;
}

/* One run of n iterations from rip; *ns is how long KVM_RUN took. */
static int probe_once(struct probe *p, uint64_t rip, uint64_t n, uint64_t *ns,
                      struct vt_error *err)
{
	struct kvm_regs regs = { .rip = rip, .rcx = n, .rsp = KSTACK_TOP, .rflags = 2 };

	if (ioctl(p->vcpu_fd, KVM_SET_REGS, &regs) < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_SET_REGS", NULL);
	uint64_t t0 = now_ns();
	int ret = ioctl(p->vcpu_fd, KVM_RUN, 0);
	*ns = now_ns() - t0;
	if (ret < 0)
		return vt_error_set(err, errno, "probe VM", "KVM_RUN",
		                    errno == EINTR ? "no exit within %d s" : NULL, ALARM_S);
	const struct kvm_run *run = p->run;
	if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.phys_addr == EXIT_ADDR)
		return 0;
	if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		return vt_error_set(err, EIO, "probe VM", "KVM_RUN",
		                    "KVM internal error, suberror %u", run->internal.suberror);
	return vt_error_set(err, EIO, "probe VM", "KVM_RUN", "unexpected exit %u",
	                    run->exit_reason);
}

/* Grow the count until one run takes TARGET_NS, then run that count twice more and keep
 * the fastest of the three (the host's other work only ever slows a run down): the
 * instructions per second of that run. */
static int probe_phase(struct probe *p, bool user, double *ips, struct vt_error *err)
{
	uint64_t n = 1000, ns = 0, best = 0;

	for (int round = 0, tail = 0; round < 16 && tail < 3; round++) {
		/* The first CPL3 run enters user mode; later ones are already there. */
		int ret = probe_once(p, user && round == 0 ? ENTER_USER : CODE, n, &ns, err);
		if (ret)
			return ret;
		if (tail || ns >= TARGET_NS || round == 12) {
			best = tail++ && best < ns ? best : ns;
			continue;
		}
		uint64_t scale = ns ? (TARGET_NS * 3 / 2) / ns : 1000;
		n *= scale < 2 ? 2 : scale > 1000 ? 1000 : scale;
	}
	*ips = 2.0 * (double)n * 1e9 / (double)(best ? best : 1);
	return 0;
}

static void probe_dirty_log(struct probe *p, struct host_probe *out)
{
	uint64_t bitmap[(MEM_SIZE / 4096 + 63) / 64] = { 0 };
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = bitmap };

	out->dirty_log_ok = ioctl(p->vm_fd, KVM_GET_DIRTY_LOG, &log) == 0;
	out->dirty_log_seen = out->dirty_log_ok && (bitmap[0] >> KSTACK_PAGE & 1);
}

int host_probe_run(int kvm_fd, struct host_probe *out, struct vt_error *err)
{
	struct probe p = { .vm_fd = -1, .vcpu_fd = -1 };
	struct sigaction sa = { .sa_handler = on_alarm }, old_sa;
	struct itimerval alarm = { .it_value = { .tv_sec = ALARM_S } }, old_alarm, off = { 0 };

	*out = (struct host_probe){ 0 };
	sigemptyset(&sa.sa_mask); /* no SA_RESTART: the alarm interrupts KVM_RUN */
	sigaction(SIGALRM, &sa, &old_sa);
	setitimer(ITIMER_REAL, &alarm, &old_alarm);
	int ret = probe_setup(kvm_fd, &p, err);
	if (!ret)
		ret = probe_phase(&p, false, &out->cpl0_ips, err);
	if (!ret)
		ret = probe_phase(&p, true, &out->cpl3_ips, err);
	if (!ret)
		probe_dirty_log(&p, out);
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old_sa, NULL);
	setitimer(ITIMER_REAL, &old_alarm, NULL);
	if (p.run)
		munmap(p.run, p.run_size);
	if (p.vcpu_fd >= 0)
		close(p.vcpu_fd);
	if (p.vm_fd >= 0)
		close(p.vm_fd);
	if (p.mem)
		munmap(p.mem, MEM_SIZE);
	return ret;
}
