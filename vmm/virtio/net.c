/* virtio-net (virtio 1.x, section 5.1) over a tap: frames the driver puts on the TX
 * queue are written to the tap, frames read from the tap fill the driver's RX buffers
 * (several of them per frame with MRG_RXBUF). When the tap speaks virtio-net headers the
 * checksum and segmentation offloads are offered and passed through untouched; otherwise
 * the header is stripped and added here and no offload is offered. All of it runs on
 * the device's I/O thread; the tap fd is watched edge-triggered, so a guest without RX
 * buffers stalls only its own receive path until it posts more. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net/net.h"
#include "vmm/config.h"
#include "vmm/keep.h"
#include "vmm/virtio/net.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define F_CSUM       (1ull << 0)
#define F_GUEST_CSUM (1ull << 1)
#define F_MAC        (1ull << 5)
#define F_GUEST_TSO4 (1ull << 7)
#define F_GUEST_TSO6 (1ull << 8)
#define F_GUEST_ECN  (1ull << 9)
#define F_HOST_TSO4  (1ull << 11)
#define F_HOST_TSO6  (1ull << 12)
#define F_HOST_ECN   (1ull << 13)
#define F_MRG_RXBUF  (1ull << 15)
#define F_STATUS     (1ull << 16)

#define RXQ 0
#define TXQ 1
#define NET_ROM_MAX (1u << 20)
#define QUEUE_SIZE 256
#define FRAME_MAX (65536 + 14 + 4)

struct virtio_net_hdr {
	uint8_t flags, gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers;
};
_Static_assert(sizeof(struct virtio_net_hdr) == 12, "virtio_net_hdr (v1, with num_buffers)");

struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
};
_Static_assert(sizeof(struct virtio_net_config) == 10, "virtio_net_config");

struct virtio_net {
	struct virtio_dev vdev;
	struct virtio_net_config cfg;
	int tap;
	bool vnet_hdr;                 /* the tap reads and writes virtio_net_hdr */
	struct virtq_elem elem;
	uint8_t frame[sizeof(struct virtio_net_hdr) + FRAME_MAX];
	size_t pending;                /* a frame read from the tap, waiting for RX buffers */
	uint64_t offload_features;     /* driver features the tap's offloads were set for */
	struct virtq_elem *rx_elems;   /* chains gathered for one merged frame */
};

static uint64_t net_features(struct virtio_dev *dev)
{
	struct virtio_net *n = dev->priv;
	uint64_t f = F_MAC | F_STATUS | F_MRG_RXBUF;

	if (n->vnet_hdr)
		f |= F_CSUM | F_GUEST_CSUM | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN | F_GUEST_TSO4 |
		     F_GUEST_TSO6 | F_GUEST_ECN;
	return f;
}

static void net_config_access(struct virtio_dev *dev, uint32_t off, uint8_t *data, unsigned len,
                              bool is_write)
{
	struct virtio_net *n = dev->priv;

	if (!is_write)
		memcpy(data, (uint8_t *)&n->cfg + off, len);
}

/* --- transmit ------------------------------------------------------------------------ */

static void net_tx(struct virtio_net *n)
{
	struct virtio_dev *dev = &n->vdev;
	struct virtq *q = &dev->vqs[TXQ];
	struct vt_error err;
	struct iovec iov[VIRTQ_MAX_SIZE];
	bool done = false;
	int ret;

	while ((ret = virtq_pop(q, &n->elem, &err)) == 1) {
		struct virtq_elem *e = &n->elem;
		size_t skip = n->vnet_hdr ? 0 : sizeof(struct virtio_net_hdr);
		int cnt = 0;
		for (int i = 0; i < e->n_out; i++) {
			size_t l = e->iov[i].iov_len;
			if (skip >= l) {
				skip -= l;
				continue;
			}
			iov[cnt++] = (struct iovec){ (uint8_t *)e->iov[i].iov_base + skip, l - skip };
			skip = 0;
		}
		if (e->out_len > sizeof(struct virtio_net_hdr) && e->out_len <= sizeof(n->frame)) {
			/* A full tap drops the frame, like a full wire: TX never blocks. */
			if (writev(n->tap, iov, cnt) < 0 && errno != EAGAIN) {
				/* the tap went away: nothing useful to tell the guest */
			}
		}
		virtq_push(q, e->head, 0);
		done = true;
	}
	if (ret < 0)
		virtio_broken(dev, &err);
	else if (done)
		virtio_notify(dev, TXQ);
}

/* --- receive ---------------------------------------------------------------------------- */

/* Place the pending frame into RX chains: one chain, or as many as it takes with
 * MRG_RXBUF. Returns false when the driver has too few buffers posted (the frame stays
 * pending until it posts more). */
static bool net_rx_deliver(struct virtio_net *n)
{
	struct virtio_dev *dev = &n->vdev;
	struct virtq *q = &dev->vqs[RXQ];
	struct vt_error err;
	bool merge = virtio_has_feature(dev, F_MRG_RXBUF);
	uint16_t start = q->last_avail, used = 0;
	size_t off = 0;

	while (off < n->pending && used < QUEUE_SIZE) {
		struct virtq_elem *e = &n->rx_elems[used];
		int ret = virtq_pop(q, e, &err);
		if (ret < 0) {
			virtio_broken(dev, &err);
			n->pending = 0;
			return true;
		}
		if (ret == 0) {
			q->last_avail = start; /* nothing consumed yet: take the chains back */
			return false;
		}
		used++;
		if (e->n_out || e->in_len < sizeof(struct virtio_net_hdr)) {
			off = n->pending; /* a chain the device cannot write: the frame is dropped */
			e->in_len = 0;
			break;
		}
		off += vt_iov_from_buf(e->iov, e->n_in, 0, n->frame + off, n->pending - off);
		if (!merge)
			break; /* without merging, whatever does not fit in one chain is cut */
	}
	struct virtio_net_hdr *h = n->rx_elems[0].iov[0].iov_len >= sizeof(*h)
	                               ? n->rx_elems[0].iov[0].iov_base : NULL;
	if (h && n->rx_elems[0].in_len)
		h->num_buffers = used;
	size_t done = 0;
	for (uint16_t i = 0; i < used; i++) {
		size_t share = n->rx_elems[i].in_len;
		if (share > n->pending - done)
			share = n->pending - done;
		virtq_push(q, n->rx_elems[i].head, (uint32_t)share);
		done += share;
	}
	n->pending = 0;
	virtio_notify(dev, RXQ);
	return true;
}

/* The tap may hand us frames with checksum or segmentation work left only if the driver
 * agreed to finish it. */
static void net_sync_offloads(struct virtio_net *n)
{
	uint64_t f = n->vdev.driver_features;
	unsigned off = 0;

	if (!n->vnet_hdr || f == n->offload_features)
		return;
	if (f & F_GUEST_CSUM) {
		off |= TUN_F_CSUM;
		if (f & F_GUEST_TSO4)
			off |= TUN_F_TSO4;
		if (f & F_GUEST_TSO6)
			off |= TUN_F_TSO6;
		if ((f & F_GUEST_ECN) && (off & (TUN_F_TSO4 | TUN_F_TSO6)))
			off |= TUN_F_TSO_ECN;
	}
	(void)ioctl(n->tap, TUNSETOFFLOAD, off);
	n->offload_features = f;
}

static void net_rx(struct virtio_net *n)
{
	if (!n->vdev.vqs[RXQ].enabled || !(n->vdev.status & VIRTIO_STATUS_DRIVER_OK))
		return;
	net_sync_offloads(n);
	for (;;) {
		if (n->pending && !net_rx_deliver(n))
			return; /* wait for buffers */
		size_t hdr = n->vnet_hdr ? 0 : sizeof(struct virtio_net_hdr);
		ssize_t r = read(n->tap, n->frame + hdr, sizeof(n->frame) - hdr);
		if (r <= 0)
			return; /* EAGAIN: drained */
		if (!n->vnet_hdr)
			memset(n->frame, 0, sizeof(struct virtio_net_hdr));
		n->pending = (size_t)r + hdr;
	}
}

static void net_queue_kick(struct virtio_dev *dev, int q)
{
	struct virtio_net *n = dev->priv;

	if (q == TXQ)
		net_tx(n);
	else
		net_rx(n);
}

static int net_poll_fd(struct virtio_dev *dev)
{
	return ((struct virtio_net *)dev->priv)->tap;
}

static void net_fd_ready(struct virtio_dev *dev)
{
	net_rx(dev->priv);
}

static void net_reset(struct virtio_dev *dev)
{
	struct virtio_net *n = dev->priv;

	n->pending = 0;
	n->offload_features = 0;
	if (n->vnet_hdr)
		(void)ioctl(n->tap, TUNSETOFFLOAD, 0);
}

static const struct virtio_dev_ops virtio_net_ops = {
	.name = "virtio-net",
	.device_id = 1,
	.pci_class = 0x020000,
	.num_queues = 2,
	.queue_max = QUEUE_SIZE,
	.config_size = sizeof(struct virtio_net_config),
	.features = net_features,
	.config_access = net_config_access,
	.queue_kick = net_queue_kick,
	.poll_fd = net_poll_fd,
	.fd_ready = net_fd_ready,
	.reset = net_reset,
};

static void virtio_net_free(void *opaque)
{
	struct virtio_net *n = opaque;

	if (n->tap >= 0)
		close(n->tap);
	free(n->rx_elems);
	free(n);
}

/* qemu's option ROM for virtio-net-pci (iPXE, from Debian's ipxe-qemu): firmware runs it,
 * so the NIC can boot (-boot n, bootindex). Returns a malloc'ed image, or NULL. */
static uint8_t *net_read_rom(uint32_t *len)
{
	static const char *const paths[] = { "/usr/lib/ipxe/qemu/efi-virtio.rom",
	                                     "/usr/share/qemu/efi-virtio.rom" };
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		const uint8_t *data;
		size_t n;
		/* Read once per process (keep.h): reboots run where nothing can be opened. */
		if (keep_read(paths[i], &data, &n, NULL) || !n || n > NET_ROM_MAX)
			continue;
		uint8_t *buf = malloc(n);
		if (buf) {
			memcpy(buf, data, n);
			*len = (uint32_t)n;
		}
		return buf;
	}
	return NULL;
}

/* A tap is opened once and kept (keep.h): later boots get a duplicate of it. */
struct kept_tap {
	int fd;
	bool vnet_hdr;
};

static void kept_tap_release(void *obj)
{
	struct kept_tap *k = obj;

	close(k->fd);
	free(k);
}

static int net_open_tap(const char *ifname, int *fd, bool *vnet_hdr, struct vt_error *err)
{
	struct kept_tap *k = keep_get("tap:%s", ifname);
	int ret;

	if (!k) {
		if (!(k = calloc(1, sizeof(*k))))
			return vt_error_set(err, ENOMEM, ifname, "open tap", NULL);
		if ((ret = net_tap_open(ifname, 0, &k->fd, &k->vnet_hdr, err))) {
			free(k);
			return ret;
		}
		if ((ret = keep_put(k, kept_tap_release, "tap:%s", ifname)))
			return vt_error_set(err, -ret, ifname, "open tap", NULL);
	}
	*fd = fcntl(k->fd, F_DUPFD_CLOEXEC, 0);
	*vnet_hdr = k->vnet_hdr;
	return *fd < 0 ? vt_error_set(err, errno, ifname, "open tap", NULL) : 0;
}

int virtio_net_add(struct vm *vm, const struct vm_nic *nic, struct vt_error *err)
{
	const char *ifname = nic->ifname;
	const uint8_t *mac = nic->mac;
	struct virtio_net *n = calloc(1, sizeof(*n));
	int ret;

	if (!n)
		return vt_error_set(err, ENOMEM, "virtio-net", "create", NULL);
	n->tap = -1;
	n->rx_elems = calloc(QUEUE_SIZE, sizeof(*n->rx_elems));
	if (!n->rx_elems) {
		free(n);
		return vt_error_set(err, ENOMEM, "virtio-net", "create", NULL);
	}
	if ((ret = vm_add_device(vm, "virtio-net-state", n, virtio_net_free, err)))
		return ret;
	if ((ret = net_open_tap(ifname, &n->tap, &n->vnet_hdr, err)))
		return ret;
	/* Plain frames until a driver agrees to more (net_sync_offloads). */
	if (n->vnet_hdr && ioctl(n->tap, TUNSETOFFLOAD, 0) < 0)
		n->vnet_hdr = false;
	memcpy(n->cfg.mac, mac, 6);
	n->cfg.status = 1; /* link up */
	n->cfg.max_virtqueue_pairs = 1;
	n->vdev.ops = &virtio_net_ops;
	n->vdev.priv = n;
	uint8_t *rom = vm->cfg->kernel ? NULL : net_read_rom(&n->vdev.rom_len);
	n->vdev.rom = rom;
	ret = virtio_pci_add(vm, &n->vdev, err);
	free(rom);
	n->vdev.rom = NULL;
	if (ret)
		return ret;
	vm_add_boot_path(vm, nic->bootindex, "/pci@i0cf8/ethernet@%x/ethernet-phy@0",
	                 virtio_pci_devfn(&n->vdev) >> 3);
	return 0;
}
