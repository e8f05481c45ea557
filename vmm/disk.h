/* A guest disk: one -drive / -hda / -cdrom opened through the block layer (blk.h, the
 * same code `vtool img` uses) with qemu's rules on top: format probing with the raw
 * warning (writes to sector 0 of a probed raw image are refused), read-only media,
 * cache modes, and -snapshot's throw-away qcow2 overlay. Devices (virtio-blk, IDE) do
 * their I/O through these functions from their own threads. */
#ifndef VTOOL_VMM_DISK_H
#define VTOOL_VMM_DISK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/error.h"
#include "vmm/config.h"

struct blk;

struct vm_disk {
	const struct vm_drive *drive;
	struct blk *blk;
	uint64_t size;             /* bytes */
	bool readonly;
	bool probed_raw;           /* format guessed as raw: sector 0 is write-protected */
	bool discard;              /* discard=unmap */
	char serial[21];
};

int disk_open(struct vm_disk *d, const struct vm_drive *drive, bool snapshot,
              struct vt_error *err);
void disk_close(struct vm_disk *d);

int disk_readv(struct vm_disk *d, uint64_t off, const struct iovec *iov, int n,
               struct vt_error *err);
int disk_writev(struct vm_disk *d, uint64_t off, const struct iovec *iov, int n,
                struct vt_error *err);
int disk_flush(struct vm_disk *d, struct vt_error *err);
int disk_discard(struct vm_disk *d, uint64_t off, uint64_t len, struct vt_error *err);
int disk_write_zeroes(struct vm_disk *d, uint64_t off, uint64_t len, bool unmap,
                      struct vt_error *err);

#endif
