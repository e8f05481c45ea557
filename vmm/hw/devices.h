/* The machine's devices, one file each under vmm/hw/. vm.c creates them in the order of
 * its table; each init registers its ranges on a bus and its state with vm_add_device. */
#ifndef VTOOL_VMM_HW_DEVICES_H
#define VTOOL_VMM_HW_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct vm;

int pci_init(struct vm *vm, struct vt_error *err);         /* hw/pci.c */
int serial_init(struct vm *vm, struct vt_error *err);      /* hw/serial.c: COM1 */
int i8042_init(struct vm *vm, struct vt_error *err);       /* hw/i8042.c */
int vga_init(struct vm *vm, struct vt_error *err);         /* hw/vga.c (vga.h) */
int rtc_init(struct vm *vm, struct vt_error *err);         /* hw/rtc.c: CMOS + clock */
int sysctl_init(struct vm *vm, struct vt_error *err);      /* hw/sysctl.c: 0x80, 0x92, APM */
int acpi_pm_init(struct vm *vm, struct vt_error *err);     /* hw/acpi.c: PM1 registers */
/* hw/acpi.c: press the ACPI power button (system_powerdown). Any thread. */
void acpi_press_power_button(struct vm *vm);
int debug_exit_init(struct vm *vm, struct vt_error *err);  /* hw/debug_exit.c */
int debugcon_init(struct vm *vm, struct vt_error *err);    /* hw/debugcon.c: -debugcon */

struct fw_tables;
/* Firmware tables, built after the devices exist. ACPI goes into two blobs ("etc/acpi/rsdp",
 * "etc/acpi/tables"); the MP table into buf (at most max bytes) as it must sit at base.
 * Both return 0 / -errno; mptable_build returns the length. */
int acpi_build(struct vm *vm, struct fw_tables *t);                                /* hw/acpi.c */
int mptable_build(const struct vm *vm, uint64_t base, uint8_t *buf, size_t max); /* hw/mptable.c */

#endif
