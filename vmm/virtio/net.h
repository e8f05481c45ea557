/* virtio-net on the virtio-pci transport, backed by a tap (opened through net/). */
#ifndef VTOOL_VMM_VIRTIO_NET_H
#define VTOOL_VMM_VIRTIO_NET_H

#include <stdint.h>

#include "util/error.h"

struct vm;

struct vm_nic;
int virtio_net_add(struct vm *vm, const struct vm_nic *nic, struct vt_error *err);

#endif
