/* The machine's devices, one file each under vmm/hw/. vm.c creates them in the order of
 * its table; each init registers its ranges on a bus and its state with vm_add_device. */
#ifndef VTOOL_VMM_HW_DEVICES_H
#define VTOOL_VMM_HW_DEVICES_H

#include <stdint.h>

#include "util/error.h"

struct vm;

int pci_init(struct vm *vm, struct vt_error *err);         /* hw/pci.c */
int serial_init(struct vm *vm, struct vt_error *err);      /* hw/serial.c: COM1 */
int i8042_init(struct vm *vm, struct vt_error *err);       /* hw/i8042.c */
int rtc_init(struct vm *vm, struct vt_error *err);         /* hw/rtc.c: CMOS + clock */
int sysctl_init(struct vm *vm, struct vt_error *err);      /* hw/sysctl.c: 0x80, 0x92, 0xcf9 */
int acpi_pm_init(struct vm *vm, struct vt_error *err);     /* hw/acpi.c: PM1 registers */
int debug_exit_init(struct vm *vm, struct vt_error *err);  /* hw/debug_exit.c */

/* Firmware tables in guest memory, written after the devices exist. */
int acpi_build_tables(struct vm *vm, uint64_t *rsdp, struct vt_error *err); /* hw/acpi.c */
int mptable_build(struct vm *vm, struct vt_error *err);                     /* hw/mptable.c */

#endif
