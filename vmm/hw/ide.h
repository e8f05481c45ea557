/* PIIX3 IDE (PCI 00:01.1): two legacy channels (0x1f0/0x3f6 on IRQ 14, 0x170/0x376 on
 * IRQ 15) with ATA disks and ATAPI CD-ROMs, PIO and bus-master DMA. ide.c is the
 * controller and the ATA command set; atapi.c the SCSI/MMC commands of the CD-ROM.
 *
 * Commands that move data run on one I/O thread per channel: the vCPU that issues them
 * only sets BSY and returns; the thread does the disk I/O, then raises DRQ or completes
 * with an interrupt. */
#ifndef VTOOL_VMM_HW_IDE_H
#define VTOOL_VMM_HW_IDE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct vm;
struct vm_disk;
struct ide_channel;

#define IDE_BUF_SIZE (128 * 1024)

/* One device on a channel. */
struct ide_drive {
	struct vm_disk *disk;          /* NULL: no device */
	bool atapi;
	uint16_t identify[256];
	uint8_t mult_sectors;          /* SET MULTIPLE; 0 = off */
	/* ATAPI state */
	uint8_t sense_key, asc, ascq;
	bool media_event;
};

/* The job an ATAPI command hands back to the controller: data for the host (PIO or DMA),
 * or reading `sectors` 2048-byte blocks from `lba`. */
struct atapi_result {
	bool check_condition;
	uint32_t len;                  /* bytes placed in buf for the host */
	bool read_blocks;
	uint64_t lba;
	uint32_t blocks;
};

/* Execute one 12-byte packet; fill buf (IDE_BUF_SIZE) and res. */
void atapi_command(struct ide_drive *d, const uint8_t *packet, uint8_t *buf,
                   struct atapi_result *res);
/* The IDENTIFY PACKET DEVICE words. */
void atapi_identify(struct ide_drive *d);

int ide_init(struct vm *vm, struct vt_error *err);
/* Put a disk at index 0..3 (primary master, primary slave, secondary master, ...). */
int ide_attach(struct vm *vm, struct vm_disk *disk, int index, struct vt_error *err);

/* ATA strings are stored byte-swapped in 16-bit words, space padded. */
void ide_string(uint16_t *words, const char *s, int nwords);

#endif
