/* Interrupt routing: the GSI table KVM uses to turn irqfd signals and line changes into
 * PIC/IOAPIC pins or MSI messages. KVM_SET_GSI_ROUTING replaces the whole table, so it
 * is kept here and committed whole; ISA lines keep their pins (GSI 0, the PIT, lands on
 * IOAPIC pin 2 as the ACPI override says), MSI routes are added per device vector. */
#ifndef VTOOL_VMM_IRQ_H
#define VTOOL_VMM_IRQ_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct vm;

int irq_init(struct vm *vm, struct vt_error *err);
void irq_destroy(struct vm *vm);

/* Reserve a GSI for an MSI vector (initially routed nowhere useful: address 0). */
int irq_msi_alloc(struct vm *vm, unsigned *gsi, struct vt_error *err);
/* Point an MSI GSI at (addr, data) and commit the table. */
int irq_msi_route(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data);
/* Attach (or detach) an eventfd: a write to it raises the GSI. */
int irq_irqfd(struct vm *vm, int fd, unsigned gsi, bool assign);

#endif
