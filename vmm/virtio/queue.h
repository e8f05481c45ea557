/* Split virtqueues (virtio 1.x, section 2.7). Every address, length, index and chain
 * the guest supplies is checked here before a device sees it: rings and buffers must lie
 * wholly in guest RAM, chains must end within the queue size (no loops), device-writable
 * buffers must follow device-readable ones. A violation makes virtq_pop() fail; the
 * device then marks itself broken (NEEDS_RESET) instead of touching anything. */
#ifndef VTOOL_VMM_VIRTIO_QUEUE_H
#define VTOOL_VMM_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/error.h"
#include "util/iov.h"

struct vm;

#define VIRTQ_MAX_SIZE 256

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq descriptor");

struct virtq_used_elem {
	uint32_t id, len;
};
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq used element");

#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct virtq {
	struct vm *vm;
	uint16_t size;               /* 0: queue not set up */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool enabled;
	/* Host views of the rings, valid while enabled. */
	struct virtq_desc *desc;
	volatile uint16_t *avail;    /* flags, idx, ring[size] */
	volatile uint16_t *used_hdr; /* flags, idx */
	struct virtq_used_elem *used_ring;
	uint16_t last_avail, used_idx;
};

/* One request: the head index and its buffers, device-readable ones first. */
struct virtq_elem {
	uint16_t head;
	int n_out, n_in;
	uint32_t out_len, in_len;
	struct iovec iov[VIRTQ_MAX_SIZE];
};

/* Validate the ring addresses the driver gave and make the queue live. */
int virtq_enable(struct virtq *q, struct vt_error *err);
void virtq_reset(struct virtq *q);

/* 1: elem filled; 0: nothing pending; -EINVAL: the guest broke the rules (err says how). */
int virtq_pop(struct virtq *q, struct virtq_elem *elem, struct vt_error *err);
/* Return a buffer with `written` bytes stored into its device-writable part. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);
/* Whether the driver wants an interrupt now (it may suppress them while polling). */
bool virtq_should_notify(struct virtq *q);

/* Copy between a request's buffers and flat memory. */

#endif
