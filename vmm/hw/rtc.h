/* The CMOS RTC and NVRAM (hw/rtc.c). Firmware set-up writes the bytes PC firmware reads
 * from NVRAM (the boot order) before the vCPUs start. */
#ifndef VTOOL_VMM_HW_RTC_H
#define VTOOL_VMM_HW_RTC_H

#include <stdint.h>

struct vm;

#define CMOS_BOOT_FLAG1 0x38   /* bits 7:4 third boot device; bit 0 skips the floppy check */
#define CMOS_BOOT_FLAG2 0x3d   /* bits 3:0 first, 7:4 second boot device */

/* Set NVRAM byte index (not a clock register). No-op if there is no RTC. */
void rtc_cmos_set(struct vm *vm, uint8_t index, uint8_t value);

#endif
