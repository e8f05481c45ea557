/* Split virtqueue processing with guest-input validation. */
#include <errno.h>
#include <string.h>

#include "vmm/virtio/queue.h"
#include "vmm/vm.h"

int virtq_enable(struct virtq *q, struct vt_error *err)
{
	uint16_t n = q->size;

	if (n == 0 || n > VIRTQ_MAX_SIZE || (n & (n - 1)))
		return vt_error_set(err, EINVAL, "virtqueue", "enable", "bad queue size %u", n);
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return vt_error_set(err, EINVAL, "virtqueue", "enable", "misaligned ring address");
	q->desc = vm_guest_ptr(q->vm, q->desc_gpa, 16ull * n);
	q->avail = vm_guest_ptr(q->vm, q->avail_gpa, 6 + 2ull * n);
	q->used_hdr = vm_guest_ptr(q->vm, q->used_gpa, 6 + 8ull * n);
	if (!q->desc || !q->avail || !q->used_hdr) {
		q->desc = NULL;
		q->avail = q->used_hdr = NULL;
		return vt_error_set(err, EFAULT, "virtqueue", "enable",
		                    "ring outside guest RAM (desc 0x%llx avail 0x%llx used 0x%llx)",
		                    (unsigned long long)q->desc_gpa, (unsigned long long)q->avail_gpa,
		                    (unsigned long long)q->used_gpa);
	}
	q->used_ring = (struct virtq_used_elem *)(uintptr_t)(q->used_hdr + 2);
	q->last_avail = 0;
	q->used_idx = 0;
	q->enabled = true;
	return 0;
}

void virtq_reset(struct virtq *q)
{
	struct vm *vm = q->vm;

	*q = (struct virtq){ .vm = vm };
}

int virtq_pop(struct virtq *q, struct virtq_elem *elem, struct vt_error *err)
{
	if (!q->enabled)
		return 0;
	uint16_t avail_idx = __atomic_load_n(&q->avail[1], __ATOMIC_ACQUIRE);
	if (avail_idx == q->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - q->last_avail) > q->size)
		return vt_error_set(err, EINVAL, "virtqueue", "pop",
		                    "available index moved by %u on a queue of %u",
		                    (uint16_t)(avail_idx - q->last_avail), q->size);
	uint16_t head = q->avail[2 + q->last_avail % q->size];
	if (head >= q->size)
		return vt_error_set(err, EINVAL, "virtqueue", "pop", "head index %u >= size %u",
		                    head, q->size);
	*elem = (struct virtq_elem){ .head = head };
	uint16_t i = head;
	for (int count = 0;; count++) {
		if (count == q->size)
			return vt_error_set(err, ELOOP, "virtqueue", "pop",
			                    "descriptor chain from %u is longer than the queue (a loop)",
			                    head);
		struct virtq_desc d;
		memcpy(&d, &q->desc[i], sizeof(d));
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return vt_error_set(err, EINVAL, "virtqueue", "pop",
			                    "indirect descriptor (feature not offered)");
		void *p = d.len ? vm_guest_ptr(q->vm, d.addr, d.len) : NULL;
		if (d.len && !p)
			return vt_error_set(err, EFAULT, "virtqueue", "pop",
			                    "buffer 0x%llx+%u is outside guest RAM",
			                    (unsigned long long)d.addr, d.len);
		bool in = d.flags & VIRTQ_DESC_F_WRITE;
		if (!in && elem->n_in)
			return vt_error_set(err, EINVAL, "virtqueue", "pop",
			                    "device-readable buffer after a device-writable one");
		elem->iov[count] = (struct iovec){ p, d.len };
		if (in) {
			elem->n_in++;
			elem->in_len += d.len;
		} else {
			elem->n_out++;
			elem->out_len += d.len;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		i = d.next;
		if (i >= q->size)
			return vt_error_set(err, EINVAL, "virtqueue", "pop", "next index %u >= size %u",
			                    i, q->size);
	}
	q->last_avail++;
	return 1;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	struct virtq_used_elem e = { head, written };

	memcpy(&q->used_ring[q->used_idx % q->size], &e, sizeof(e));
	q->used_idx++;
	__atomic_store_n(&q->used_hdr[1], q->used_idx, __ATOMIC_RELEASE);
}

bool virtq_should_notify(struct virtq *q)
{
	/* The used index must be visible before the driver's flag is read. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return !(q->avail[0] & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

