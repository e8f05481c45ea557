/* SMBIOS tables as qemu's "pc" machine gives them to its firmware (etc/smbios/smbios-
 * tables + etc/smbios/smbios-anchor, a 2.1 entry point for SMBIOS 2.8): system (type 1),
 * chassis (3), one processor per socket (4), the memory array (16), its 16 GiB devices (17) and mapped
 * ranges (19), boot status (32) and the end marker (127). SeaBIOS adds its own BIOS
 * information (type 0) and places the entry point, so `dmidecode` in a guest reads them;
 * a direct kernel boot gets the same structures in the F segment. */
#ifndef VTOOL_VMM_BOOT_SMBIOS_H
#define VTOOL_VMM_BOOT_SMBIOS_H

#include "util/error.h"

struct vm;
struct fw_cfg;

#include <stdint.h>

/* Firmware boot: the two fw_cfg files. */
int smbios_add_fw_cfg(struct vm *vm, struct fw_cfg *c, struct vt_error *err);
/* Direct boot: the entry point at base (16-byte aligned, in the F segment where guests
 * scan for it), the structures right after it, all within max bytes. */
int smbios_place(struct vm *vm, uint64_t base, uint64_t max, struct vt_error *err);

#endif
