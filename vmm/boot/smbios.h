/* SMBIOS tables as qemu's "pc" machine gives them to its firmware (etc/smbios/smbios-
 * tables + etc/smbios/smbios-anchor, a 2.1 entry point for SMBIOS 2.8): system (type 1),
 * chassis (3), one processor per socket (4), the memory array (16), its 16 GiB devices (17) and mapped
 * ranges (19), boot status (32) and the end marker (127). SeaBIOS adds its own BIOS
 * information (type 0) and places the entry point, so `dmidecode` in a guest reads them. */
#ifndef VTOOL_VMM_BOOT_SMBIOS_H
#define VTOOL_VMM_BOOT_SMBIOS_H

#include "util/error.h"

struct vm;
struct fw_cfg;

int smbios_add_fw_cfg(struct vm *vm, struct fw_cfg *c, struct vt_error *err);

#endif
