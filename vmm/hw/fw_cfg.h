/* qemu's firmware configuration device (docs/specs/fw_cfg.txt): the selector port 0x510,
 * the data port 0x511 and the DMA address register 0x514..0x51b. Items are byte strings
 * under a 16-bit key; named files get keys from 0x20 up and are listed in the directory
 * (key 0x19). Reads past an item's end, and of absent items, return zeros. Items are
 * added before the vCPUs start and never change afterwards; nothing is guest-writable
 * (a DMA write sets the ERROR bit). boot/firmware.c fills it. */
#ifndef VTOOL_VMM_HW_FW_CFG_H
#define VTOOL_VMM_HW_FW_CFG_H

#include <stdint.h>

#include "util/error.h"

struct vm;
struct fw_cfg;

#define FW_CFG_SIGNATURE   0x00
#define FW_CFG_ID          0x01
#define FW_CFG_UUID        0x02
#define FW_CFG_RAM_SIZE    0x03
#define FW_CFG_NOGRAPHIC   0x04
#define FW_CFG_NB_CPUS     0x05
#define FW_CFG_MACHINE_ID  0x06
#define FW_CFG_BOOT_MENU   0x0e
#define FW_CFG_MAX_CPUS    0x0f
#define FW_CFG_FILE_DIR    0x19
#define FW_CFG_FILE_FIRST  0x20
#define FW_CFG_IRQ0_OVERRIDE 0x8002

#define FW_CFG_NAME_MAX    56

/* Create the device and register its ports; it is then vm_device(vm, "fw_cfg"). */
int fw_cfg_init(struct vm *vm, struct vt_error *err);
/* Add (a copy of) an item under a fixed key, or a named file. */
int fw_cfg_add(struct fw_cfg *f, uint16_t key, const void *data, uint32_t len,
               struct vt_error *err);
int fw_cfg_add_file(struct fw_cfg *f, const char *name, const void *data, uint32_t len,
                    struct vt_error *err);

/* Counters for benchmarks: how the firmware read its data. */
struct fw_cfg_stats {
	uint64_t selects, port_reads, dma_kicks, dma_bytes;
};
void fw_cfg_get_stats(struct fw_cfg *f, struct fw_cfg_stats *out);

#endif
