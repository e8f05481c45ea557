/* virtio-blk (virtio 1.x, section 5.2): requests from the queue are executed on the
 * device's I/O thread through vm_disk (the block layer), completed through the used
 * ring and an interrupt. Every request is bounds-checked against the disk's capacity. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/disk.h"
#include "vmm/sandbox.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define VIRTIO_BLK_F_SIZE_MAX     (1ull << 1)
#define VIRTIO_BLK_F_SEG_MAX      (1ull << 2)
#define VIRTIO_BLK_F_GEOMETRY     (1ull << 4)
#define VIRTIO_BLK_F_RO           (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE     (1ull << 6)
#define VIRTIO_BLK_F_FLUSH        (1ull << 9)
#define VIRTIO_BLK_F_TOPOLOGY     (1ull << 10)
#define VIRTIO_BLK_F_DISCARD      (1ull << 13)
#define VIRTIO_BLK_F_WRITE_ZEROES (1ull << 14)

enum { BLK_T_IN = 0, BLK_T_OUT = 1, BLK_T_FLUSH = 4, BLK_T_GET_ID = 8, BLK_T_DISCARD = 11,
       BLK_T_WRITE_ZEROES = 13 };
enum { BLK_S_OK = 0, BLK_S_IOERR = 1, BLK_S_UNSUPP = 2 };

#define QUEUE_SIZE     256
#define SEG_MAX        (QUEUE_SIZE - 2)
#define SIZE_MAX_SEG   (1u << 20)
#define MAX_DISCARD    (1u << 22)   /* sectors per discard / write-zeroes segment: 2 GiB */
#define MAX_DZ_SEGS    32

struct __attribute__((packed)) virtio_blk_config {
	uint64_t capacity;
	uint32_t size_max, seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap, unused1[3];
};
_Static_assert(sizeof(struct virtio_blk_config) == 60, "virtio_blk_config");

struct virtio_blk_req_hdr {
	uint32_t type, ioprio;
	uint64_t sector;
};
_Static_assert(sizeof(struct virtio_blk_req_hdr) == 16, "virtio_blk request header");

struct virtio_blk_dz {
	uint64_t sector;
	uint32_t num_sectors, flags;
};
_Static_assert(sizeof(struct virtio_blk_dz) == 16, "discard/write-zeroes segment");

#define BLK_WORKERS 8

/* A request popped by the I/O thread, executed by a worker. */
struct blk_job {
	struct virtq_elem elem;
	struct blk_job *next;
};

struct virtio_blk {
	struct virtio_dev vdev;
	struct vm_disk *disk;
	struct virtio_blk_config cfg;
	/* The I/O thread pops requests and queues them; BLK_WORKERS threads execute them in
	 * parallel (deep queues on O_DIRECT images need several in flight) and return them
	 * through the used ring under push_lock. */
	pthread_mutex_t lock;
	pthread_cond_t work, idle;
	struct blk_job *queue, *queue_tail, *free;
	int inflight;
	bool stop;
	pthread_mutex_t push_lock;
	pthread_t workers[BLK_WORKERS];
	int nr_workers;
};

static uint64_t blk_features(struct virtio_dev *dev)
{
	struct virtio_blk *b = dev->priv;
	uint64_t f = VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE |
	             VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_TOPOLOGY;

	if (b->disk->readonly)
		f |= VIRTIO_BLK_F_RO;
	else
		f |= VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;
	return f;
}

static void blk_config_access(struct virtio_dev *dev, uint32_t off, uint8_t *data, unsigned len,
                              bool is_write)
{
	struct virtio_blk *b = dev->priv;

	if (!is_write)
		memcpy(data, (uint8_t *)&b->cfg + off, len);
	/* Writes (writeback toggle) are ignored: CONFIG_WCE is not offered. */
}

/* The part of a request's buffers between skip and skip+len, as an iovec array. */
static int iov_slice(const struct iovec *src, int n, size_t skip, size_t len,
                     struct iovec *dst)
{
	int m = 0;
	vt_iov_slice(src, n, skip, len, dst, &m, n);
	return m;
}

static bool blk_range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t cap = b->disk->size >> 9;

	return sector <= cap && bytes / 512 <= cap - sector && !(bytes & 511);
}

static uint8_t blk_discard_or_zero(struct virtio_blk *b, const struct virtq_elem *e,
                                   size_t data_len, bool zero)
{
	struct vt_error err;

	if (data_len == 0 || data_len % sizeof(struct virtio_blk_dz) ||
	    data_len / sizeof(struct virtio_blk_dz) > MAX_DZ_SEGS)
		return BLK_S_UNSUPP;
	for (size_t i = 0; i < data_len / sizeof(struct virtio_blk_dz); i++) {
		struct virtio_blk_dz seg;
		vt_iov_to_buf(e->iov, e->n_out, sizeof(struct virtio_blk_req_hdr) + i * sizeof(seg),
		           &seg, sizeof(seg));
		if (seg.num_sectors > MAX_DISCARD ||
		    !blk_range_ok(b, seg.sector, (uint64_t)seg.num_sectors * 512))
			return BLK_S_IOERR;
		if (!zero && seg.flags)
			return BLK_S_UNSUPP; /* discard takes no flags */
		int ret = zero ? disk_write_zeroes(b->disk, seg.sector * 512,
		                                   (uint64_t)seg.num_sectors * 512, seg.flags & 1, &err)
		               : disk_discard(b->disk, seg.sector * 512,
		                              (uint64_t)seg.num_sectors * 512, &err);
		if (ret)
			return BLK_S_IOERR;
	}
	return BLK_S_OK;
}

/* Execute one request; returns the bytes written into the driver's buffers. */
static uint32_t blk_handle(struct virtio_blk *b, struct virtq_elem *e)
{
	struct virtio_blk_req_hdr hdr;
	struct iovec data[VIRTQ_MAX_SIZE];
	struct vt_error err;
	uint8_t status = BLK_S_OK;
	uint32_t written = 0;

	/* At least the header to read and the status byte to write. */
	if (e->out_len < sizeof(hdr) || e->in_len < 1)
		return 0;
	vt_iov_to_buf(e->iov, e->n_out, 0, &hdr, sizeof(hdr));
	const struct iovec *in = e->iov + e->n_out;
	size_t in_data = e->in_len - 1, out_data = e->out_len - sizeof(hdr);
	int n;

	switch (hdr.type) {
	case BLK_T_IN:
		if (!blk_range_ok(b, hdr.sector, in_data)) {
			status = BLK_S_IOERR;
			break;
		}
		n = iov_slice(in, e->n_in, 0, in_data, data);
		if (disk_readv(b->disk, hdr.sector * 512, data, n, &err))
			status = BLK_S_IOERR;
		else
			written = (uint32_t)in_data;
		break;
	case BLK_T_OUT:
		if (!blk_range_ok(b, hdr.sector, out_data)) {
			status = BLK_S_IOERR;
			break;
		}
		n = iov_slice(e->iov, e->n_out, sizeof(hdr), out_data, data);
		if (disk_writev(b->disk, hdr.sector * 512, data, n, &err))
			status = BLK_S_IOERR;
		break;
	case BLK_T_FLUSH:
		if (!virtio_has_feature(&b->vdev, VIRTIO_BLK_F_FLUSH))
			status = BLK_S_UNSUPP;
		else if (disk_flush(b->disk, &err))
			status = BLK_S_IOERR;
		break;
	case BLK_T_GET_ID: {
		char id[20] = { 0 };
		memcpy(id, b->disk->serial, strnlen(b->disk->serial, sizeof(id)));
		written = (uint32_t)vt_iov_from_buf(in, e->n_in, 0, id,
		                                 in_data < sizeof(id) ? in_data : sizeof(id));
		break;
	}
	case BLK_T_DISCARD:
	case BLK_T_WRITE_ZEROES:
		/* Only what the driver negotiated (and a read-only disk offers neither). */
		if (!virtio_has_feature(&b->vdev, hdr.type == BLK_T_DISCARD ? VIRTIO_BLK_F_DISCARD
		                                                             : VIRTIO_BLK_F_WRITE_ZEROES))
			status = BLK_S_UNSUPP;
		else if (b->disk->readonly)
			status = BLK_S_IOERR;
		else
			status = blk_discard_or_zero(b, e, out_data, hdr.type == BLK_T_WRITE_ZEROES);
		break;
	default:
		status = BLK_S_UNSUPP;
	}
	vt_iov_from_buf(in, e->n_in, e->in_len - 1, &status, 1);
	return written + 1;
}

static struct blk_job *job_get(struct virtio_blk *b)
{
	struct blk_job *j;

	pthread_mutex_lock(&b->lock);
	j = b->free;
	if (j)
		b->free = j->next;
	pthread_mutex_unlock(&b->lock);
	return j ? j : malloc(sizeof(*j));
}

static void blk_queue_kick(struct virtio_dev *dev, int q)
{
	struct virtio_blk *b = dev->priv;
	struct virtq *vq = &dev->vqs[q];
	struct vt_error err;
	struct blk_job *j;
	int ret = 0;

	while ((j = job_get(b)) && (ret = virtq_pop(vq, &j->elem, &err)) == 1) {
		pthread_mutex_lock(&b->lock);
		j->next = NULL;
		if (b->queue_tail)
			b->queue_tail->next = j;
		else
			b->queue = j;
		b->queue_tail = j;
		b->inflight++;
		pthread_cond_signal(&b->work);
		pthread_mutex_unlock(&b->lock);
	}
	if (j) {
		pthread_mutex_lock(&b->lock);
		j->next = b->free;
		b->free = j;
		pthread_mutex_unlock(&b->lock);
	}
	if (ret < 0)
		virtio_broken(dev, &err);
}

static void *blk_worker(void *arg)
{
	struct virtio_blk *b = arg;

	pthread_setname_np(pthread_self(), "virtio-blk-w");
	sandbox_thread(SANDBOX_IO);
	pthread_mutex_lock(&b->lock);
	for (;;) {
		while (!b->queue && !b->stop)
			pthread_cond_wait(&b->work, &b->lock);
		if (b->stop)
			break;
		struct blk_job *j = b->queue;
		b->queue = j->next;
		if (!b->queue)
			b->queue_tail = NULL;
		pthread_mutex_unlock(&b->lock);

		uint32_t written = blk_handle(b, &j->elem);
		pthread_mutex_lock(&b->push_lock);
		virtq_push(&b->vdev.vqs[0], j->elem.head, written);
		pthread_mutex_unlock(&b->push_lock);

		pthread_mutex_lock(&b->lock);
		j->next = b->free;
		b->free = j;
		bool last = --b->inflight == 0 || !b->queue;
		if (!b->inflight)
			pthread_cond_broadcast(&b->idle);
		pthread_mutex_unlock(&b->lock);
		/* One interrupt per burst: when nothing else is queued behind this request. */
		if (last)
			virtio_notify(&b->vdev, 0);
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/* A driver reset waits for requests in flight: they write into rings about to vanish. */
static void blk_reset(struct virtio_dev *dev)
{
	struct virtio_blk *b = dev->priv;

	pthread_mutex_lock(&b->lock);
	while (b->inflight)
		pthread_cond_wait(&b->idle, &b->lock);
	pthread_mutex_unlock(&b->lock);
}

static void blk_stop(struct virtio_dev *dev);

static const struct virtio_dev_ops virtio_blk_ops = {
	.name = "virtio-blk",
	.device_id = 2,
	.pci_class = 0x018000,
	.num_queues = 1,
	.queue_max = QUEUE_SIZE,
	.config_size = sizeof(struct virtio_blk_config),
	.features = blk_features,
	.config_access = blk_config_access,
	.queue_kick = blk_queue_kick,
	.reset = blk_reset,
	.stop = blk_stop,
	.drain = blk_reset, /* the same wait: requests in flight finish */
};

static void blk_stop_workers(struct virtio_blk *b)
{
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	pthread_cond_broadcast(&b->work);
	pthread_mutex_unlock(&b->lock);
	for (int i = 0; i < b->nr_workers; i++)
		pthread_join(b->workers[i], NULL);
	b->nr_workers = 0;
}

static void blk_stop(struct virtio_dev *dev)
{
	blk_stop_workers(dev->priv);
}

static void virtio_blk_free(void *opaque)
{
	struct virtio_blk *b = opaque;

	blk_stop_workers(b);
	while (b->queue) {
		struct blk_job *j = b->queue;
		b->queue = j->next;
		free(j);
	}
	while (b->free) {
		struct blk_job *j = b->free;
		b->free = j->next;
		free(j);
	}
	pthread_mutex_destroy(&b->lock);
	pthread_mutex_destroy(&b->push_lock);
	pthread_cond_destroy(&b->work);
	pthread_cond_destroy(&b->idle);
	free(b);
}

int virtio_blk_add(struct vm *vm, struct vm_disk *disk, struct vt_error *err)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	int ret;

	if (!b)
		return vt_error_set(err, ENOMEM, "virtio-blk", "create", NULL);
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->push_lock, NULL);
	pthread_cond_init(&b->work, NULL);
	pthread_cond_init(&b->idle, NULL);
	if ((ret = vm_add_device(vm, "virtio-blk-state", b, virtio_blk_free, err)))
		return ret;
	for (; b->nr_workers < BLK_WORKERS; b->nr_workers++)
		if (pthread_create(&b->workers[b->nr_workers], NULL, blk_worker, b))
			return vt_error_set(err, EAGAIN, "virtio-blk", "start workers", NULL);
	b->disk = disk;
	b->vdev.ops = &virtio_blk_ops;
	b->vdev.priv = b;
	b->cfg = (struct virtio_blk_config){
		.capacity = disk->size >> 9, .size_max = SIZE_MAX_SEG, .seg_max = SEG_MAX,
		.blk_size = 512, .num_queues = 1,
		.max_discard_sectors = MAX_DISCARD, .max_discard_seg = MAX_DZ_SEGS,
		.discard_sector_alignment = 1,
		.max_write_zeroes_sectors = MAX_DISCARD, .max_write_zeroes_seg = MAX_DZ_SEGS,
		.write_zeroes_may_unmap = 1,
	};
	/* The CHS geometry firmware shows for the disk (int 13h): 16 heads, 63 sectors, as
	 * qemu guesses for a disk it knows nothing about. */
	uint64_t cyls = (disk->size >> 9) / (16 * 63);
	b->cfg.cylinders = (uint16_t)(cyls > 16383 ? 16383 : cyls < 2 ? 2 : cyls);
	b->cfg.heads = 16;
	b->cfg.sectors = 63;
	if ((ret = virtio_pci_add(vm, &b->vdev, err)))
		return ret;
	int devfn = virtio_pci_devfn(&b->vdev);
	vm_add_boot_path(vm, disk->drive->bootindex, "/pci@i0cf8/scsi@%x%s/disk@0,0", devfn >> 3,
	                 devfn & 7 ? ",?" : "");
	return 0;
}
