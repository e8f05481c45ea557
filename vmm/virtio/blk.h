/* virtio-blk on the virtio-pci transport, serving a vm_disk. */
#ifndef VTOOL_VMM_VIRTIO_BLK_H
#define VTOOL_VMM_VIRTIO_BLK_H

#include "util/error.h"

struct vm;
struct vm_disk;

int virtio_blk_add(struct vm *vm, struct vm_disk *disk, struct vt_error *err);

#endif
