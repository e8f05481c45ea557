/* The CPUID table vCPUs get: KVM_GET_SUPPORTED_CPUID, edited by -cpu's +feat/-feat, with
 * each vCPU's APIC ID patched in. Only "host" (and the names of qemu's common models,
 * which mean the same here) exist: the guest sees what KVM can give. */
#ifndef VTOOL_VMM_CPUID_H
#define VTOOL_VMM_CPUID_H

#include <linux/kvm.h>

#include "util/error.h"
#include "vmm/config.h"

/* Returns a malloc'd table (free() it) or NULL with err filled. */
struct kvm_cpuid2 *cpuid_build(int kvm_fd, const struct vm_config *cfg, struct vt_error *err);
/* Patch the APIC ID and the CPU count into a copy of the table for one vCPU. */
void cpuid_set_vcpu(struct kvm_cpuid2 *cpuid, int apic_id, int nr_vcpus);

#endif
