/* A virtio device as the transport sees it. The device (blk.c, net.c) provides its
 * features, configuration space and a queue handler; the transport (pci.c) provides
 * everything PCI: capabilities, feature negotiation, queue set-up, notifications
 * through ioeventfd, interrupts through MSI-X irqfds (or INTx), and one I/O thread per
 * device on which the queue handler runs. A device never touches PCI; the transport
 * never parses a request. */
#ifndef VTOOL_VMM_VIRTIO_VIRTIO_H
#define VTOOL_VMM_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"
#include "vmm/virtio/queue.h"

struct vm;
struct virtio_pci;

#define VIRTIO_MAX_QUEUES 8

#define VIRTIO_F_VERSION_1        (1ull << 32)
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

struct virtio_dev;

struct virtio_dev_ops {
	const char *name;           /* "virtio-blk": thread names and messages */
	uint16_t device_id;         /* virtio device type: 1 net, 2 block */
	uint32_t pci_class;
	int num_queues;
	uint16_t queue_max;
	uint32_t config_size;
	uint64_t (*features)(struct virtio_dev *dev);
	/* Device configuration space access from a vCPU (never blocks). */
	void (*config_access)(struct virtio_dev *dev, uint32_t off, uint8_t *data, unsigned len,
	                      bool is_write);
	/* The driver made buffers available on queue q: runs on the device's I/O thread. */
	void (*queue_kick)(struct virtio_dev *dev, int q);
	/* Optional: extra fds the I/O thread should watch (a tap); called when readable. */
	int (*poll_fd)(struct virtio_dev *dev);
	void (*fd_ready)(struct virtio_dev *dev);
	/* Optional: the driver reset the device (I/O thread quiesced). */
	void (*reset)(struct virtio_dev *dev);
	/* Optional: the VM is going away and the I/O thread has stopped: stop any threads of
	 * the device's own (they may still interrupt the guest until they return). */
	void (*stop)(struct virtio_dev *dev);
	/* Optional: wait until no request is in flight (the machine pauses; dev->lock held). */
	void (*drain)(struct virtio_dev *dev);
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *priv;
	struct vm *vm;
	/* Held by the I/O thread while it runs a handler and by the transport while it
	 * changes queue or device state, so neither sees the other half-done. */
	pthread_mutex_t lock;
	struct virtq vqs[VIRTIO_MAX_QUEUES];
	uint64_t driver_features;
	uint8_t status;
	bool warned;
	struct virtio_pci *transport;
	/* Optional: an expansion ROM image for the PCI function (copied at virtio_pci_add). */
	const uint8_t *rom;
	uint32_t rom_len;
};

/* Plug the device into the PCI bus and start its I/O thread; the transport is freed with
 * the VM. dev must outlive the VM too. */
int virtio_pci_add(struct vm *vm, struct virtio_dev *dev, struct vt_error *err)
	__attribute__((warn_unused_result));

/* Used buffers were returned on queue q: interrupt the driver if it wants one. */
void virtio_notify(struct virtio_dev *dev, int q);

/* The guest broke the rules: stop processing, set NEEDS_RESET, tell the driver through a
 * configuration interrupt, warn once. */
void virtio_broken(struct virtio_dev *dev, const struct vt_error *why);

/* The PCI device/function number the transport got (valid after virtio_pci_add). */
int virtio_pci_devfn(const struct virtio_dev *dev);

bool virtio_has_feature(const struct virtio_dev *dev, uint64_t bit);

#endif
