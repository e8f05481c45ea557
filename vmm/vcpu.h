/* A virtual CPU: its KVM fd, its shared kvm_run page, its thread and its exit loop.
 * The loop knows two buses and the lifecycle, nothing about devices. */
#ifndef VTOOL_VMM_VCPU_H
#define VTOOL_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/error.h"

struct vm;

struct vcpu {
	struct vm *vm;
	int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	pid_t tid;               /* the thread's id once it runs (query-cpus-fast) */
	uint64_t first_run_ns;   /* CLOCK_MONOTONIC just before the first KVM_RUN */
	/* Exit counters (written by the vCPU thread only; read after it is joined). */
	struct vcpu_stats {
		uint64_t exits, io, io_elems, mmio, hlt, intr, other;
		uint32_t *io_by_port;    /* 65536 counters, only with VTOOL_RUN_STATS set */
	} stats;
};

/* Create the vCPU, give it CPUID, MSRs, FPU and LAPIC defaults; the boot vCPU (id 0)
 * also gets vm->entry's register state. Other vCPUs wait for INIT/SIPI in the kernel. */
int vcpu_create(struct vcpu *vcpu, struct vm *vm, int id, struct vt_error *err);
int vcpu_start(struct vcpu *vcpu, struct vt_error *err);
/* Make the vCPU leave KVM_RUN soon (it then sees the VM stopping). */
void vcpu_kick(struct vcpu *vcpu);
void vcpu_join(struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);

/* Install the kick signal's handler; once per process, before any vCPU starts. */
void vcpu_init_signals(void);

#endif
