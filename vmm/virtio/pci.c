/* The modern virtio-pci transport (virtio 1.x, section 4.1): vendor capabilities for the
 * common, notify, ISR and device configuration structures in BAR 0, an MSI-X table in
 * BAR 1, queue notifications through ioeventfd and interrupts through irqfd. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "vmm/hw/pci.h"
#include "vmm/irq.h"
#include "vmm/sandbox.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define BAR0_SIZE      0x4000
#define COMMON_OFF     0x0000
#define COMMON_LEN     0x38
#define ISR_OFF        0x1000
#define DEVCFG_OFF     0x2000
#define NOTIFY_OFF     0x3000
#define NOTIFY_MULT    4
#define BAR1_SIZE      0x1000
#define MSIX_PBA_OFF   0x800
#define NO_VECTOR      0xffff

#define CAP_MSIX       0x40
#define CAP_COMMON     0x50
#define CAP_NOTIFY     0x60
#define CAP_ISR        0x78
#define CAP_DEVICE     0x88

#define MSIX_ENABLE    0x8000
#define MSIX_MASKALL   0x4000

enum { CFG_COMMON = 1, CFG_NOTIFY = 2, CFG_ISR = 3, CFG_DEVICE = 4 };

struct msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
};
_Static_assert(sizeof(struct msix_entry) == 16, "MSI-X table entry");

struct virtio_pci {
	struct pci_dev pci;
	struct virtio_dev *dev;
	struct vm *vm;
	int nvec;                              /* queues + 1 for configuration changes */
	struct msix_entry msix[VIRTIO_MAX_QUEUES + 1];
	uint64_t pba;
	unsigned gsi[VIRTIO_MAX_QUEUES + 1];
	int irqfd[VIRTIO_MAX_QUEUES + 1];
	uint16_t msix_config, queue_vector[VIRTIO_MAX_QUEUES];
	uint32_t dfselect, gfselect;
	uint16_t queue_select;
	uint8_t isr;
	int kickfd[VIRTIO_MAX_QUEUES];
	bool ioeventfd_on;
	uint32_t notify_base;                  /* BAR 0 address the ioeventfds sit at */
	int epfd, stopfd;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t irq_lock;
	bool paused;                           /* under dev->lock: the machine is paused */
	pthread_cond_t unpaused;
};

int virtio_pci_devfn(const struct virtio_dev *dev)
{
	return dev->transport->pci.devfn;
}

bool virtio_has_feature(const struct virtio_dev *dev, uint64_t bit)
{
	return dev->driver_features & bit;
}

/* --- interrupts ---------------------------------------------------------------- */

static bool msix_enabled(const struct virtio_pci *t)
{
	return pci_cfg_get16(&t->pci, CAP_MSIX + 2) & MSIX_ENABLE;
}

static bool msix_masked(const struct virtio_pci *t, int v)
{
	return (pci_cfg_get16(&t->pci, CAP_MSIX + 2) & MSIX_MASKALL) || (t->msix[v].ctrl & 1);
}

static void msix_fire(struct virtio_pci *t, int v)
{
	uint64_t one = 1;

	if (write(t->irqfd[v], &one, sizeof(one)) < 0) {
		/* an eventfd only fails on counter overflow: the interrupt is pending anyway */
	}
}

static void virtio_pci_interrupt(struct virtio_pci *t, uint16_t vector, uint8_t isr_bit)
{
	pthread_mutex_lock(&t->irq_lock);
	if (msix_enabled(t)) {
		if (vector < t->nvec) {
			if (msix_masked(t, vector))
				t->pba |= 1ull << vector;
			else
				msix_fire(t, vector);
		}
	} else {
		t->isr |= isr_bit;
		pci_set_irq(&t->pci, true);
	}
	pthread_mutex_unlock(&t->irq_lock);
}

void virtio_notify(struct virtio_dev *dev, int q)
{
	struct virtio_pci *t = dev->transport;

	if (virtq_should_notify(&dev->vqs[q]))
		virtio_pci_interrupt(t, t->queue_vector[q], 1);
}

void virtio_broken(struct virtio_dev *dev, const struct vt_error *why)
{
	char msg[400];

	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	for (int i = 0; i < dev->ops->num_queues; i++)
		dev->vqs[i].enabled = false;
	if (!dev->warned) {
		dev->warned = true;
		vt_error_format(why, msg, sizeof(msg));
		vm_warn(dev->vm, "%s: guest driver error, device stopped until reset: %s",
		        dev->ops->name, msg);
	}
	virtio_pci_interrupt(dev->transport, dev->transport->msix_config, 2);
}

/* Re-route one vector after the guest wrote its table entry, and deliver what was held
 * back while it was masked. Called with irq_lock held. */
static void msix_update(struct virtio_pci *t, int v)
{
	uint64_t addr = (uint64_t)t->msix[v].addr_hi << 32 | t->msix[v].addr_lo;

	irq_msi_route(t->vm, t->gsi[v], addr, t->msix[v].data);
	if (msix_enabled(t) && !msix_masked(t, v) && (t->pba & (1ull << v))) {
		t->pba &= ~(1ull << v);
		msix_fire(t, v);
	}
}

static void msix_bar_io(void *opaque, uint64_t off, uint8_t *data, unsigned len, bool is_write)
{
	struct virtio_pci *t = opaque;
	size_t table_len = (size_t)t->nvec * sizeof(struct msix_entry);

	pthread_mutex_lock(&t->irq_lock);
	if (off + len <= table_len) {
		if (is_write) {
			memcpy((uint8_t *)t->msix + off, data, len);
			msix_update(t, (int)(off / sizeof(struct msix_entry)));
		} else {
			memcpy(data, (uint8_t *)t->msix + off, len);
		}
	} else if (off >= MSIX_PBA_OFF && off + len <= MSIX_PBA_OFF + 8 && !is_write) {
		memcpy(data, (uint8_t *)&t->pba + (off - MSIX_PBA_OFF), len);
	} else if (!is_write) {
		memset(data, 0, len);
	}
	pthread_mutex_unlock(&t->irq_lock);
}

static void virtio_pci_config_written(struct pci_dev *pci, unsigned off, unsigned len)
{
	struct virtio_pci *t = pci->opaque;

	/* MSI-X enable or function mask changed: held-back vectors may go now. */
	if (off <= CAP_MSIX + 3 && off + len > CAP_MSIX + 2) {
		pthread_mutex_lock(&t->irq_lock);
		for (int v = 0; v < t->nvec; v++)
			msix_update(t, v);
		pthread_mutex_unlock(&t->irq_lock);
	}
}

/* --- notifications ---------------------------------------------------------------- */

static void ioeventfd_set(struct virtio_pci *t, uint32_t base, bool assign)
{
	for (int q = 0; q < t->dev->ops->num_queues; q++) {
		struct kvm_ioeventfd ev = {
			.addr = base + NOTIFY_OFF + (uint64_t)q * NOTIFY_MULT, .len = 2,
			.fd = t->kickfd[q], .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
		};
		(void)ioctl(t->vm->vm_fd, KVM_IOEVENTFD, &ev);
	}
}

static void virtio_pci_bar_mapped(struct pci_dev *pci, int bar, bool mapped, uint32_t addr)
{
	struct virtio_pci *t = pci->opaque;

	if (bar != 0)
		return;
	if (t->ioeventfd_on)
		ioeventfd_set(t, t->notify_base, false);
	t->ioeventfd_on = mapped;
	t->notify_base = addr;
	if (mapped)
		ioeventfd_set(t, addr, true);
}

/* --- device reset and the common configuration structure --------------------------- */

static void virtio_pci_reset(struct virtio_pci *t)
{
	struct virtio_dev *dev = t->dev;

	pthread_mutex_lock(&dev->lock);
	for (int q = 0; q < dev->ops->num_queues; q++) {
		virtq_reset(&dev->vqs[q]);
		dev->vqs[q].size = dev->ops->queue_max;
		t->queue_vector[q] = NO_VECTOR;
	}
	dev->driver_features = 0;
	dev->status = 0;
	dev->warned = false;
	t->msix_config = NO_VECTOR;
	t->queue_select = 0;
	if (dev->ops->reset)
		dev->ops->reset(dev);
	pthread_mutex_unlock(&dev->lock);
	pthread_mutex_lock(&t->irq_lock);
	t->isr = 0;
	pci_set_irq(&t->pci, false);
	t->pba = 0;
	pthread_mutex_unlock(&t->irq_lock);
}

static void common_image(struct virtio_pci *t, uint8_t *img)
{
	struct virtio_dev *dev = t->dev;
	uint64_t features = dev->ops->features(dev) | VIRTIO_F_VERSION_1;
	uint16_t qs = t->queue_select;
	bool valid = qs < dev->ops->num_queues;
	const struct virtq *q = valid ? &dev->vqs[qs] : NULL;
	uint32_t dfeat = t->dfselect < 2 ? (uint32_t)(features >> (32 * t->dfselect)) : 0;
	uint32_t gfeat = t->gfselect < 2 ? (uint32_t)(dev->driver_features >> (32 * t->gfselect)) : 0;
	uint16_t nq = (uint16_t)dev->ops->num_queues;
	uint16_t qsize = q ? q->size : 0, qvec = valid ? t->queue_vector[qs] : NO_VECTOR;
	uint16_t qen = q ? q->enabled : 0, qnoff = valid ? qs : 0;
	uint64_t z = 0;

	memset(img, 0, COMMON_LEN);
	memcpy(img + 0x00, &t->dfselect, 4);
	memcpy(img + 0x04, &dfeat, 4);
	memcpy(img + 0x08, &t->gfselect, 4);
	memcpy(img + 0x0c, &gfeat, 4);
	memcpy(img + 0x10, &t->msix_config, 2);
	memcpy(img + 0x12, &nq, 2);
	img[0x14] = dev->status;
	img[0x15] = 0; /* config generation: the device config never changes under the driver */
	memcpy(img + 0x16, &qs, 2);
	memcpy(img + 0x18, &qsize, 2);
	memcpy(img + 0x1a, &qvec, 2);
	memcpy(img + 0x1c, &qen, 2);
	memcpy(img + 0x1e, &qnoff, 2);
	memcpy(img + 0x20, q ? &q->desc_gpa : &z, 8);
	memcpy(img + 0x28, q ? &q->avail_gpa : &z, 8);
	memcpy(img + 0x30, q ? &q->used_gpa : &z, 8);
}

static void set_status(struct virtio_pci *t, uint8_t v)
{
	struct virtio_dev *dev = t->dev;

	if (v == 0) {
		virtio_pci_reset(t);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(dev->status & VIRTIO_STATUS_FEATURES_OK)) {
		uint64_t offered = dev->ops->features(dev) | VIRTIO_F_VERSION_1;
		/* Refuse (leave FEATURES_OK clear) what was not offered, and legacy drivers. */
		if ((dev->driver_features & ~offered) ||
		    !(dev->driver_features & VIRTIO_F_VERSION_1))
			v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
	}
	dev->status = (uint8_t)(v | (dev->status & VIRTIO_STATUS_NEEDS_RESET));
}

static void common_write(struct virtio_pci *t, uint64_t off, const uint8_t *data, unsigned len)
{
	struct virtio_dev *dev = t->dev;
	uint8_t img[COMMON_LEN];
	uint16_t qs = t->queue_select;
	struct virtq *q = qs < dev->ops->num_queues ? &dev->vqs[qs] : NULL;

	common_image(t, img);
	memcpy(img + off, data, len);
#define FIELD(o, n) (off < (o) + (n) && off + len > (o))
	uint32_t v32;
	uint16_t v16;
	if (FIELD(0x00, 4))
		memcpy(&t->dfselect, img + 0x00, 4);
	if (FIELD(0x08, 4))
		memcpy(&t->gfselect, img + 0x08, 4);
	if (FIELD(0x0c, 4) && t->gfselect < 2 && !(dev->status & VIRTIO_STATUS_FEATURES_OK)) {
		memcpy(&v32, img + 0x0c, 4);
		unsigned sh = 32 * t->gfselect;
		dev->driver_features = (dev->driver_features & ~(0xffffffffull << sh)) |
		                       ((uint64_t)v32 << sh);
	}
	if (FIELD(0x10, 2))
		memcpy(&t->msix_config, img + 0x10, 2);
	if (FIELD(0x14, 1))
		set_status(t, img[0x14]);
	if (FIELD(0x16, 2))
		memcpy(&t->queue_select, img + 0x16, 2);
	if (q && !q->enabled) {
		pthread_mutex_lock(&dev->lock);
		if (FIELD(0x18, 2)) {
			memcpy(&v16, img + 0x18, 2);
			q->size = v16;
		}
		if (FIELD(0x20, 8))
			memcpy(&q->desc_gpa, img + 0x20, 8);
		if (FIELD(0x28, 8))
			memcpy(&q->avail_gpa, img + 0x28, 8);
		if (FIELD(0x30, 8))
			memcpy(&q->used_gpa, img + 0x30, 8);
		if (FIELD(0x1c, 2) && img[0x1c] == 1) {
			struct vt_error err;
			if (q->size > dev->ops->queue_max || virtq_enable(q, &err)) {
				if (q->size > dev->ops->queue_max)
					vt_error_set(&err, EINVAL, "virtqueue", "enable",
					             "queue size %u above the maximum %u", q->size,
					             dev->ops->queue_max);
				pthread_mutex_unlock(&dev->lock);
				virtio_broken(dev, &err);
				pthread_mutex_lock(&dev->lock);
			}
		}
		pthread_mutex_unlock(&dev->lock);
	}
	if (q && FIELD(0x1a, 2))
		memcpy(&t->queue_vector[qs], img + 0x1a, 2);
#undef FIELD
}

static void bar0_io(void *opaque, uint64_t off, uint8_t *data, unsigned len, bool is_write)
{
	struct virtio_pci *t = opaque;
	struct virtio_dev *dev = t->dev;

	if (off < COMMON_OFF + COMMON_LEN) {
		if (off + len > COMMON_LEN)
			len = (unsigned)(COMMON_LEN - off);
		if (is_write) {
			common_write(t, off, data, len);
		} else {
			uint8_t img[COMMON_LEN];
			common_image(t, img);
			memcpy(data, img + off, len);
		}
	} else if (off == ISR_OFF) {
		if (!is_write) {
			/* Reading the ISR acknowledges it and lowers INTx. */
			pthread_mutex_lock(&t->irq_lock);
			data[0] = t->isr;
			t->isr = 0;
			pci_set_irq(&t->pci, false);
			pthread_mutex_unlock(&t->irq_lock);
			memset(data + 1, 0, len - 1);
		}
	} else if (off >= DEVCFG_OFF && off < DEVCFG_OFF + dev->ops->config_size) {
		uint32_t o = (uint32_t)(off - DEVCFG_OFF);
		if (o + len > dev->ops->config_size)
			len = dev->ops->config_size - o;
		dev->ops->config_access(dev, o, data, len, is_write);
	} else if (off >= NOTIFY_OFF && off < NOTIFY_OFF + (uint64_t)dev->ops->num_queues * NOTIFY_MULT) {
		/* Only reached when the ioeventfd did not match (an odd access size). */
		if (is_write) {
			uint64_t one = 1;
			int q = (int)((off - NOTIFY_OFF) / NOTIFY_MULT);
			if (write(t->kickfd[q], &one, sizeof(one)) < 0) {
				/* counter overflow: a kick is pending anyway */
			}
		}
	} else if (!is_write) {
		memset(data, 0, len);
	}
}

/* --- the I/O thread ---------------------------------------------------------------- */

/* Take the device lock once the machine is not paused: a paused machine's devices start
 * no work (kicks and tap input wait, counted in their eventfds and sockets). */
static void virtio_lock_unpaused(struct virtio_pci *t)
{
	pthread_mutex_lock(&t->dev->lock);
	while (t->paused)
		pthread_cond_wait(&t->unpaused, &t->dev->lock);
}

/* The machine pauses (vm_pause): finish what is in flight, start nothing new. */
static void virtio_pci_pause(void *opaque, bool pause)
{
	struct virtio_pci *t = opaque;

	pthread_mutex_lock(&t->dev->lock);
	t->paused = pause;
	if (pause && t->dev->ops->drain)
		t->dev->ops->drain(t->dev);
	if (!pause)
		pthread_cond_broadcast(&t->unpaused);
	pthread_mutex_unlock(&t->dev->lock);
}

static void *virtio_io_thread(void *arg)
{
	struct virtio_pci *t = arg;
	struct virtio_dev *dev = t->dev;
	char name[16];

	snprintf(name, sizeof(name), "%.11s-io", dev->ops->name);
	pthread_setname_np(pthread_self(), name);
	sandbox_thread(SANDBOX_IO);
	for (;;) {
		struct epoll_event ev[8];
		int n = epoll_wait(t->epfd, ev, 8, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < n; i++) {
			int tag = (int)ev[i].data.u32;
			uint64_t cnt;
			if (tag == -1)
				return NULL; /* stop */
			if (tag == -2) {
				virtio_lock_unpaused(t);
				dev->ops->fd_ready(dev);
				pthread_mutex_unlock(&dev->lock);
				continue;
			}
			if (read(t->kickfd[tag], &cnt, sizeof(cnt)) < 0)
				continue;
			virtio_lock_unpaused(t);
			if (dev->vqs[tag].enabled && (dev->status & VIRTIO_STATUS_DRIVER_OK))
				dev->ops->queue_kick(dev, tag);
			pthread_mutex_unlock(&dev->lock);
			sandbox_selftest(SANDBOX_IO);
		}
	}
	return NULL;
}

static void virtio_pci_destroy(void *opaque)
{
	struct virtio_pci *t = opaque;
	uint64_t one = 1;

	if (t->thread_started) {
		if (write(t->stopfd, &one, sizeof(one)) < 0) {
			/* cannot happen on a fresh eventfd */
		}
		pthread_join(t->thread, NULL);
	}
	if (t->dev->ops->stop)
		t->dev->ops->stop(t->dev);
	for (int i = 0; i < VIRTIO_MAX_QUEUES + 1; i++) {
		if (i < VIRTIO_MAX_QUEUES && t->kickfd[i] >= 0)
			close(t->kickfd[i]);
		if (t->irqfd[i] >= 0)
			close(t->irqfd[i]);
	}
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->stopfd >= 0)
		close(t->stopfd);
	pthread_mutex_destroy(&t->irq_lock);
	pthread_mutex_destroy(&t->dev->lock);
	pthread_cond_destroy(&t->unpaused);
	free(t);
}

static void virtio_pci_build_caps(struct virtio_pci *t)
{
	struct pci_dev *p = &t->pci;
	struct {
		unsigned at, next, len, type, bar, off, size;
	} caps[] = {
		{ CAP_COMMON, CAP_NOTIFY, 16, CFG_COMMON, 0, COMMON_OFF, COMMON_LEN },
		{ CAP_NOTIFY, CAP_ISR, 20, CFG_NOTIFY, 0, NOTIFY_OFF,
		  (unsigned)t->dev->ops->num_queues * NOTIFY_MULT },
		{ CAP_ISR, CAP_DEVICE, 16, CFG_ISR, 0, ISR_OFF, 1 },
		{ CAP_DEVICE, 0, 16, CFG_DEVICE, 0, DEVCFG_OFF, t->dev->ops->config_size },
	};

	p->cfg[PCI_CAP_PTR] = CAP_MSIX;
	pci_cfg_set16(p, PCI_STATUS, PCI_STATUS_CAP);
	p->cfg[CAP_MSIX] = 0x11;
	p->cfg[CAP_MSIX + 1] = CAP_COMMON;
	pci_cfg_set16(p, CAP_MSIX + 2, (uint16_t)(t->nvec - 1));
	pci_cfg_set32(p, CAP_MSIX + 4, 1);                   /* table: BAR 1, offset 0 */
	pci_cfg_set32(p, CAP_MSIX + 8, MSIX_PBA_OFF | 1);    /* PBA: BAR 1 */
	p->wmask[CAP_MSIX + 3] = (MSIX_ENABLE | MSIX_MASKALL) >> 8;
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		uint8_t *c = &p->cfg[caps[i].at];
		c[0] = 0x09; /* vendor-specific */
		c[1] = (uint8_t)caps[i].next;
		c[2] = (uint8_t)caps[i].len;
		c[3] = (uint8_t)caps[i].type;
		c[4] = (uint8_t)caps[i].bar;
		pci_cfg_set32(p, caps[i].at + 8, caps[i].off);
		pci_cfg_set32(p, caps[i].at + 12, caps[i].size);
	}
	pci_cfg_set32(p, CAP_NOTIFY + 16, NOTIFY_MULT);
}

int virtio_pci_add(struct vm *vm, struct virtio_dev *dev, struct vt_error *err)
{
	const struct virtio_dev_ops *ops = dev->ops;
	struct virtio_pci *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return vt_error_set(err, ENOMEM, ops->name, "create", NULL);
	t->dev = dev;
	t->vm = vm;
	t->nvec = ops->num_queues + 1;
	t->epfd = t->stopfd = -1;
	for (int i = 0; i < VIRTIO_MAX_QUEUES + 1; i++) {
		t->irqfd[i] = -1;
		if (i < VIRTIO_MAX_QUEUES)
			t->kickfd[i] = -1;
	}
	pthread_mutex_init(&t->irq_lock, NULL);
	pthread_mutex_init(&dev->lock, NULL);
	pthread_cond_init(&t->unpaused, NULL);
	dev->vm = vm;
	dev->transport = t;
	for (int q = 0; q < ops->num_queues; q++)
		dev->vqs[q].vm = vm;
	if ((ret = vm_add_device(vm, ops->name, t, virtio_pci_destroy, err)) ||
	    (ret = vm_add_pause_hook(vm, virtio_pci_pause, t, err)))
		return ret;
	virtio_pci_reset(t);

	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->stopfd = eventfd(0, EFD_CLOEXEC);
	if (t->epfd < 0 || t->stopfd < 0)
		return vt_error_set(err, errno, ops->name, "create event fds", NULL);
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)-1 };
	epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->stopfd, &ev);
	for (int q = 0; q < ops->num_queues; q++) {
		t->kickfd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->kickfd[q] < 0)
			return vt_error_set(err, errno, ops->name, "create event fds", NULL);
		ev = (struct epoll_event){ .events = EPOLLIN, .data.u32 = (uint32_t)q };
		epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->kickfd[q], &ev);
	}
	if (ops->poll_fd) {
		/* Edge-triggered: a device out of buffers leaves data unread without spinning. */
		ev = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)-2 };
		epoll_ctl(t->epfd, EPOLL_CTL_ADD, ops->poll_fd(dev), &ev);
	}
	for (int v = 0; v < t->nvec; v++) {
		t->irqfd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->irqfd[v] < 0)
			return vt_error_set(err, errno, ops->name, "create event fds", NULL);
		if ((ret = irq_msi_alloc(vm, &t->gsi[v], err)))
			return ret;
		if ((ret = irq_irqfd(vm, t->irqfd[v], t->gsi[v], true)))
			return vt_error_set(err, -ret, ops->name, "KVM_IRQFD", NULL);
		t->msix[v].ctrl = 1; /* masked until the driver programs it */
	}

	struct pci_dev *p = &t->pci;
	pci_dev_init(p, ops->name, 0x1af4, (uint16_t)(0x1040 + ops->device_id), ops->pci_class, 1);
	pci_cfg_set16(p, PCI_SUBSYS_ID, 0x40 + ops->device_id);
	p->opaque = t;
	p->bars[0] = (struct pci_bar){ .size = BAR0_SIZE, .fn = bar0_io, .opaque = t };
	p->bars[1] = (struct pci_bar){ .size = BAR1_SIZE, .fn = msix_bar_io, .opaque = t };
	p->bar_mapped = virtio_pci_bar_mapped;
	p->config_written = virtio_pci_config_written;
	virtio_pci_build_caps(t);
	p->cfg[PCI_INTERRUPT_PIN] = 1; /* INTA, for drivers without MSI-X */
	if (dev->rom && (ret = pci_set_rom(vm, p, dev->rom, dev->rom_len, err)))
		return ret;
	if ((ret = pci_add_device(vm, p, err)))
		return ret;

	if (pthread_create(&t->thread, NULL, virtio_io_thread, t))
		return vt_error_set(err, EAGAIN, ops->name, "start I/O thread", NULL);
	t->thread_started = true;
	return 0;
}
