/* CPUID for guests: KVM's supported table, -cpu feature edits, per-vCPU APIC IDs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/cpuid.h"

enum reg { EAX, EBX, ECX, EDX };

/* The flags people turn on and off with -cpu, by qemu's names. */
static const struct cpu_feature {
	const char *name;
	uint32_t leaf;
	enum reg reg;
	unsigned bit;
} features[] = {
	{ "sse3", 1, ECX, 0 }, { "pclmulqdq", 1, ECX, 1 }, { "vmx", 1, ECX, 5 },
	{ "ssse3", 1, ECX, 9 }, { "fma", 1, ECX, 12 }, { "cx16", 1, ECX, 13 },
	{ "pcid", 1, ECX, 17 }, { "sse4.1", 1, ECX, 19 }, { "sse4_1", 1, ECX, 19 },
	{ "sse4.2", 1, ECX, 20 }, { "sse4_2", 1, ECX, 20 }, { "x2apic", 1, ECX, 21 },
	{ "movbe", 1, ECX, 22 }, { "popcnt", 1, ECX, 23 }, { "tsc-deadline", 1, ECX, 24 },
	{ "aes", 1, ECX, 25 }, { "xsave", 1, ECX, 26 }, { "avx", 1, ECX, 28 },
	{ "f16c", 1, ECX, 29 }, { "rdrand", 1, ECX, 30 }, { "hypervisor", 1, ECX, 31 },
	{ "mtrr", 1, EDX, 12 }, { "pat", 1, EDX, 16 }, { "ht", 1, EDX, 28 },
	{ "fsgsbase", 7, EBX, 0 }, { "bmi1", 7, EBX, 3 }, { "avx2", 7, EBX, 5 },
	{ "smep", 7, EBX, 7 }, { "bmi2", 7, EBX, 8 }, { "erms", 7, EBX, 9 },
	{ "invpcid", 7, EBX, 10 }, { "avx512f", 7, EBX, 16 }, { "rdseed", 7, EBX, 18 },
	{ "adx", 7, EBX, 19 }, { "smap", 7, EBX, 20 }, { "umip", 7, ECX, 2 },
	{ "pku", 7, ECX, 3 }, { "la57", 7, ECX, 16 }, { "rdpid", 7, ECX, 22 },
	{ "md-clear", 7, EDX, 10 }, { "spec-ctrl", 7, EDX, 26 },
	{ "arch-capabilities", 7, EDX, 29 }, { "ssbd", 7, EDX, 31 },
	{ "lahf-lm", 0x80000001, ECX, 0 }, { "abm", 0x80000001, ECX, 5 },
	{ "nx", 0x80000001, EDX, 20 }, { "pdpe1gb", 0x80000001, EDX, 26 },
	{ "rdtscp", 0x80000001, EDX, 27 }, { "lm", 0x80000001, EDX, 29 },
	{ "invtsc", 0x80000007, EDX, 8 },
	{ "kvmclock", 0x40000001, EAX, 0 }, { "kvm-nopiodelay", 0x40000001, EAX, 1 },
	{ "kvm-mmu", 0x40000001, EAX, 2 }, { "kvmclock2", 0x40000001, EAX, 3 },
	{ "kvm-asyncpf", 0x40000001, EAX, 4 }, { "kvm-steal-time", 0x40000001, EAX, 5 },
	{ "kvm-pv-eoi", 0x40000001, EAX, 6 }, { "kvm-pv-unhalt", 0x40000001, EAX, 7 },
	{ "kvm-pv-tlb-flush", 0x40000001, EAX, 9 }, { "kvm-pv-ipi", 0x40000001, EAX, 11 },
	{ "kvm-poll-control", 0x40000001, EAX, 12 }, { "kvm-pv-sched-yield", 0x40000001, EAX, 13 },
	{ "kvm-asyncpf-int", 0x40000001, EAX, 14 }, { "kvm-msi-ext-dest-id", 0x40000001, EAX, 15 },
};

/* Named models are accepted for command-line compatibility; all mean "what KVM offers". */
static const char *const models[] = { "host", "max", "qemu64", "kvm64", "base" };

static struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == leaf &&
		    (!(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
		     c->entries[i].index == index))
			return &c->entries[i];
	return NULL;
}

static uint32_t *cpuid_reg(struct kvm_cpuid_entry2 *e, enum reg r)
{
	switch (r) {
	case EAX: return &e->eax;
	case EBX: return &e->ebx;
	case ECX: return &e->ecx;
	default: return &e->edx;
	}
}

struct kvm_cpuid2 *cpuid_build(int kvm_fd, const struct vm_config *cfg, struct vt_error *err)
{
	struct kvm_cpuid2 *c = NULL;
	bool known = false;

	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		known |= !strcmp(cfg->cpu_model, models[i]);
	if (!known) {
		vt_error_set(err, EINVAL, "-cpu", NULL, "unknown CPU model '%s' (use host)",
		             cfg->cpu_model);
		return NULL;
	}
	/* The table size is not known in advance: grow until KVM stops saying E2BIG. */
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			break;
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		int e = errno;
		free(c);
		c = NULL;
		if (e != E2BIG) {
			vt_error_set(err, e, "/dev/kvm", "KVM_GET_SUPPORTED_CPUID", NULL);
			return NULL;
		}
	}
	if (!c) {
		vt_error_set(err, ENOMEM, "/dev/kvm", "KVM_GET_SUPPORTED_CPUID", NULL);
		return NULL;
	}
	for (int i = 0; i < cfg->nr_cpu_edits; i++) {
		const struct vm_cpu_edit *ed = &cfg->cpu_edits[i];
		const struct cpu_feature *f = NULL;
		for (size_t k = 0; k < sizeof(features) / sizeof(features[0]); k++)
			if (!strcmp(features[k].name, ed->name))
				f = &features[k];
		if (!f) {
			vt_error_set(err, EINVAL, "-cpu", NULL, "unknown CPU feature '%s'", ed->name);
			free(c);
			return NULL;
		}
		struct kvm_cpuid_entry2 *e = cpuid_find(c, f->leaf, 0);
		if (!e)
			continue; /* the leaf does not exist: the feature is already absent */
		/* Turning a feature on that KVM cannot give would only make the guest crash. */
		if (ed->enable)
			continue;
		*cpuid_reg(e, f->reg) &= ~(1u << f->bit);
	}
	return c;
}

void cpuid_set_vcpu(struct kvm_cpuid2 *c, int apic_id, int nr_vcpus)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, 1, 0);

	if (e) {
		e->ebx = (e->ebx & 0x0000ffffu) | ((uint32_t)apic_id << 24) |
		         ((uint32_t)(nr_vcpus > 255 ? 255 : nr_vcpus) << 16);
		if (nr_vcpus > 1)
			e->edx |= 1u << 28; /* HTT: the logical-processor count field is valid */
	}
	/* Extended topology: one thread per core, nr_vcpus cores in one package. */
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *t = &c->entries[i];
		if (t->function != 0xb && t->function != 0x1f)
			continue;
		t->edx = (uint32_t)apic_id;
		if (t->index == 0) {
			t->eax = 0;
			t->ebx = 1;
			t->ecx = 0x100;
		} else if (t->index == 1) {
			unsigned shift = 0;
			while ((1 << shift) < nr_vcpus)
				shift++;
			t->eax = shift;
			t->ebx = (uint32_t)nr_vcpus;
			t->ecx = 0x201;
		} else {
			t->eax = t->ebx = 0;
			t->ecx = t->index;
		}
	}
	/* Leaf 4's "cores per package" must agree with leaf 1 or Linux warns. */
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *t = &c->entries[i];
		if (t->function == 4 && (t->eax & 0x1f)) {
			unsigned cores = 1;
			while ((int)cores < nr_vcpus)
				cores <<= 1;
			t->eax = (t->eax & 0x03ffffffu) | ((cores - 1) << 26);
			t->eax &= ~(0xfffu << 14); /* one thread shares each cache level */
		}
	}
}
