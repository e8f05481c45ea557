/* Pausing the machine (vm.h): stop/cont and -S. vCPUs park outside KVM_RUN on the VM's
 * condition variable, devices quiesce through their hooks, and the guest's kvmclock is
 * saved and restored so a paused guest sees no time pass (as qemu does). */
#include <errno.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

#include "vmm/vcpu.h"
#include "vmm/vm.h"

int vm_add_pause_hook(struct vm *vm, void (*fn)(void *opaque, bool pause), void *opaque,
                      struct vt_error *err)
{
	struct vm_pause *p = &vm->pause;

	if (p->nr_hooks == (int)(sizeof(p->hooks) / sizeof(p->hooks[0])))
		return vt_error_set(err, ENOSPC, "vm", "add pause hook", "too many devices");
	p->hooks[p->nr_hooks++] = (struct vm_pause_hook){ fn, opaque };
	return 0;
}

void vm_vcpu_enter(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->pause.started++;
	pthread_mutex_unlock(&vm->lock);
}

void vm_vcpu_leave(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->pause.started--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

void vm_vcpu_park(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	pthread_mutex_lock(&vm->lock);
	vm->pause.parked++;
	pthread_cond_broadcast(&vm->cond);
	while (vm->pause.requested && vm->stop == VM_RUNNING)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->pause.parked--;
	/* A kick for the pause set immediate_exit; a stop sets vm->stop first, so clearing
	 * here (before the loop looks at vm->stop again) loses no stop. */
	if (vm->stop == VM_RUNNING)
		__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->lock);
}

bool vm_paused(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	bool p = vm->pause.depth > 0;
	pthread_mutex_unlock(&vm->lock);
	return p;
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->pause.depth++ > 0) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	__atomic_store_n(&vm->pause.requested, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; vm->vcpus && i < vm->nr_vcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	pthread_mutex_lock(&vm->lock);
	while (vm->pause.parked < vm->pause.started && vm->stop == VM_RUNNING)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < vm->pause.nr_hooks; i++)
		vm->pause.hooks[i].fn(vm->pause.hooks[i].opaque, true);
	struct kvm_clock_data clock = { 0 };
	vm->pause.clock_saved = ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) == 0;
	vm->pause.clock = clock.clock;
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->pause.depth == 0 || --vm->pause.depth > 0) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	pthread_mutex_unlock(&vm->lock);
	if (vm->pause.clock_saved) {
		struct kvm_clock_data clock = { .clock = vm->pause.clock };
		(void)ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock);
		vm->pause.clock_saved = false;
	}
	for (int i = vm->pause.nr_hooks - 1; i >= 0; i--)
		vm->pause.hooks[i].fn(vm->pause.hooks[i].opaque, false);
	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&vm->pause.requested, false, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}
