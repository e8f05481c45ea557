/* The GSI routing table. */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/irq.h"
#include "vmm/vm.h"

#define IRQ_ISA_PINS    16
#define IRQ_IOAPIC_PINS 24
#define IRQ_MAX_ROUTES  1024

struct irq_table {
	pthread_mutex_t lock;
	unsigned next_gsi;
	uint32_t nr;
	struct kvm_irq_routing_entry e[IRQ_MAX_ROUTES];
};

static int irq_commit(struct vm *vm)
{
	struct irq_table *t = vm->irq;
	size_t size = sizeof(struct kvm_irq_routing) + t->nr * sizeof(struct kvm_irq_routing_entry);
	struct kvm_irq_routing *r = calloc(1, size);

	if (!r)
		return -ENOMEM;
	r->nr = t->nr;
	memcpy(r->entries, t->e, t->nr * sizeof(t->e[0]));
	int ret = ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, r) < 0 ? -errno : 0;
	free(r);
	return ret;
}

static void irq_add_pin(struct irq_table *t, unsigned gsi, unsigned chip, unsigned pin)
{
	t->e[t->nr++] = (struct kvm_irq_routing_entry){
		.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
		.u.irqchip = { .irqchip = chip, .pin = pin },
	};
}

int irq_init(struct vm *vm, struct vt_error *err)
{
	struct irq_table *t = calloc(1, sizeof(*t));

	if (!t)
		return vt_error_set(err, ENOMEM, "irq", "routing table", NULL);
	pthread_mutex_init(&t->lock, NULL);
	vm->irq = t;
	for (unsigned gsi = 0; gsi < IRQ_IOAPIC_PINS; gsi++) {
		if (gsi < IRQ_ISA_PINS)
			irq_add_pin(t, gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
			            gsi % 8);
		if (gsi != 2)
			irq_add_pin(t, gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2 : gsi);
	}
	t->next_gsi = IRQ_IOAPIC_PINS;
	int ret = irq_commit(vm);
	if (ret)
		return vt_error_set(err, -ret, "/dev/kvm", "KVM_SET_GSI_ROUTING", NULL);
	return 0;
}

void irq_destroy(struct vm *vm)
{
	if (vm->irq) {
		pthread_mutex_destroy(&vm->irq->lock);
		free(vm->irq);
		vm->irq = NULL;
	}
}

int irq_msi_alloc(struct vm *vm, unsigned *gsi, struct vt_error *err)
{
	struct irq_table *t = vm->irq;
	int ret = 0;

	pthread_mutex_lock(&t->lock);
	if (t->nr == IRQ_MAX_ROUTES) {
		ret = vt_error_set(err, ENOSPC, "irq", "allocate MSI route", "routing table full");
	} else {
		*gsi = t->next_gsi++;
		t->e[t->nr++] = (struct kvm_irq_routing_entry){ .gsi = *gsi,
		                                                .type = KVM_IRQ_ROUTING_MSI };
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int irq_msi_route(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data)
{
	struct irq_table *t = vm->irq;
	int ret = -ENOENT;

	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->nr; i++) {
		struct kvm_irq_routing_entry *e = &t->e[i];
		if (e->gsi != gsi || e->type != KVM_IRQ_ROUTING_MSI)
			continue;
		if (e->u.msi.address_lo == (uint32_t)addr &&
		    e->u.msi.address_hi == (uint32_t)(addr >> 32) && e->u.msi.data == data) {
			ret = 0; /* unchanged: spare KVM the table rebuild */
			break;
		}
		e->u.msi.address_lo = (uint32_t)addr;
		e->u.msi.address_hi = (uint32_t)(addr >> 32);
		e->u.msi.data = data;
		ret = irq_commit(vm);
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int irq_irqfd(struct vm *vm, int fd, unsigned gsi, bool assign)
{
	struct kvm_irqfd f = { .fd = (uint32_t)fd, .gsi = gsi,
	                       .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN };

	return ioctl(vm->vm_fd, KVM_IRQFD, &f) < 0 ? -errno : 0;
}
