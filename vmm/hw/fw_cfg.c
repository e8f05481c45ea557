/* fw_cfg: items, the file directory, the port interface and DMA. */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/hw/fw_cfg.h"
#include "vmm/vm.h"

#define FW_CFG_PORT_SEL  0x510
#define FW_CFG_PORT_DMA  0x514
#define FW_CFG_MAX_ITEMS 64
#define FW_CFG_MAX_FILES 64

#define DMA_ERROR  0x01u
#define DMA_READ   0x02u
#define DMA_SKIP   0x04u
#define DMA_SELECT 0x08u
#define DMA_WRITE  0x10u

#define FW_CFG_VERSION_TRADITIONAL 0x1u
#define FW_CFG_VERSION_DMA         0x2u

/* One file directory entry, big-endian, as the guest reads it. */
struct __attribute__((packed)) fw_cfg_file {
	uint32_t size;
	uint16_t select;
	uint16_t reserved;
	char name[FW_CFG_NAME_MAX];
};
_Static_assert(sizeof(struct fw_cfg_file) == 64, "fw_cfg directory entry");

/* The DMA descriptor the guest points at, big-endian. */
struct __attribute__((packed)) fw_cfg_dma {
	uint32_t control, length;
	uint64_t address;
};
_Static_assert(sizeof(struct fw_cfg_dma) == 16, "fw_cfg DMA descriptor");

struct fw_cfg_item {
	uint16_t key;
	uint8_t *data;
	uint32_t len;
};

struct fw_cfg {
	struct vm *vm;
	pthread_mutex_t lock;
	struct fw_cfg_item items[FW_CFG_MAX_ITEMS];
	int nr_items;
	struct { char name[FW_CFG_NAME_MAX]; uint8_t *data; uint32_t len; } files[FW_CFG_MAX_FILES];
	int nr_files;                 /* sorted by name; file i is key FW_CFG_FILE_FIRST + i */
	uint8_t *dir;                 /* the directory, rebuilt when a file is added */
	uint32_t dir_len;
	uint16_t cur;                 /* selected key */
	uint32_t offset;              /* read position in it */
	uint64_t dma_addr;
	struct fw_cfg_stats stats;
};

static uint16_t be16(uint16_t v) { return __builtin_bswap16(v); }
static uint32_t be32(uint32_t v) { return __builtin_bswap32(v); }
static uint64_t be64(uint64_t v) { return __builtin_bswap64(v); }

/* The bytes behind a key; absent keys are empty. */
static const uint8_t *fw_cfg_item(const struct fw_cfg *f, uint16_t key, uint32_t *len)
{
	*len = 0;
	if (key == FW_CFG_FILE_DIR) {
		*len = f->dir_len;
		return f->dir;
	}
	if (key >= FW_CFG_FILE_FIRST && key < FW_CFG_FILE_FIRST + f->nr_files) {
		*len = f->files[key - FW_CFG_FILE_FIRST].len;
		return f->files[key - FW_CFG_FILE_FIRST].data;
	}
	for (int i = 0; i < f->nr_items; i++)
		if (f->items[i].key == key) {
			*len = f->items[i].len;
			return f->items[i].data;
		}
	return NULL;
}

static uint8_t *dup_bytes(const void *data, uint32_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	if (p && len)
		memcpy(p, data, len);
	return p;
}

int fw_cfg_add(struct fw_cfg *f, uint16_t key, const void *data, uint32_t len,
               struct vt_error *err)
{
	if (key == FW_CFG_FILE_DIR || (key >= FW_CFG_FILE_FIRST && key < 0x8000))
		return vt_error_set(err, EINVAL, "fw_cfg", "add item", "key 0x%x is reserved", key);
	for (int i = 0; i < f->nr_items; i++)
		if (f->items[i].key == key)
			return vt_error_set(err, EEXIST, "fw_cfg", "add item", "key 0x%x twice", key);
	uint8_t *p = dup_bytes(data, len);
	if (!p || f->nr_items == FW_CFG_MAX_ITEMS) {
		free(p);
		return vt_error_set(err, ENOMEM, "fw_cfg", "add item", "no room for key 0x%x", key);
	}
	f->items[f->nr_items++] = (struct fw_cfg_item){ key, p, len };
	return 0;
}

static int fw_cfg_rebuild_dir(struct fw_cfg *f)
{
	uint32_t len = 4 + (uint32_t)f->nr_files * sizeof(struct fw_cfg_file);
	uint8_t *dir = calloc(1, len);

	if (!dir)
		return -ENOMEM;
	uint32_t count = be32((uint32_t)f->nr_files);
	memcpy(dir, &count, 4);
	for (int i = 0; i < f->nr_files; i++) {
		struct fw_cfg_file e = { .size = be32(f->files[i].len),
		                         .select = be16((uint16_t)(FW_CFG_FILE_FIRST + i)) };
		memcpy(e.name, f->files[i].name, FW_CFG_NAME_MAX);
		memcpy(dir + 4 + (size_t)i * sizeof(e), &e, sizeof(e));
	}
	free(f->dir);
	f->dir = dir;
	f->dir_len = len;
	return 0;
}

int fw_cfg_add_file(struct fw_cfg *f, const char *name, const void *data, uint32_t len,
                    struct vt_error *err)
{
	if (strlen(name) >= FW_CFG_NAME_MAX)
		return vt_error_set(err, ENAMETOOLONG, name, "add fw_cfg file", NULL);
	int i = 0;
	for (; i < f->nr_files && strcmp(f->files[i].name, name) < 0; i++)
		;
	if (i < f->nr_files && !strcmp(f->files[i].name, name))
		return vt_error_set(err, EEXIST, name, "add fw_cfg file", "file added twice");
	uint8_t *p = dup_bytes(data, len);
	if (!p || f->nr_files == FW_CFG_MAX_FILES) {
		free(p);
		return vt_error_set(err, ENOMEM, name, "add fw_cfg file", "no room");
	}
	memmove(&f->files[i + 1], &f->files[i], (size_t)(f->nr_files - i) * sizeof(f->files[0]));
	memset(f->files[i].name, 0, FW_CFG_NAME_MAX);
	memcpy(f->files[i].name, name, strlen(name));
	f->files[i].data = p;
	f->files[i].len = len;
	f->nr_files++;
	if (fw_cfg_rebuild_dir(f))
		return vt_error_set(err, ENOMEM, name, "add fw_cfg file", NULL);
	return 0;
}

static void fw_cfg_select(struct fw_cfg *f, uint16_t key)
{
	f->cur = key;
	f->offset = 0;
	f->stats.selects++;
}

/* Run the descriptor at dma_addr; every address in it is the guest's and checked. */
static void fw_cfg_dma(struct fw_cfg *f)
{
	struct fw_cfg_dma *d = vm_guest_ptr(f->vm, f->dma_addr, sizeof(*d));

	f->stats.dma_kicks++;
	if (!d)
		return; /* nowhere to report to */
	uint32_t control = be32(d->control), length = be32(d->length);
	uint64_t addr = be64(d->address);
	uint32_t status = 0;

	if (control & DMA_SELECT)
		fw_cfg_select(f, (uint16_t)(control >> 16));
	if (control & DMA_WRITE) {
		status = DMA_ERROR; /* nothing here is writable */
	} else if (control & (DMA_READ | DMA_SKIP)) {
		uint32_t len;
		const uint8_t *item = fw_cfg_item(f, f->cur, &len);
		uint8_t *dst = NULL;
		if ((control & DMA_READ) && length && !(dst = vm_guest_ptr(f->vm, addr, length))) {
			status = DMA_ERROR;
		} else {
			uint32_t avail = f->offset < len ? len - f->offset : 0;
			uint32_t n = length < avail ? length : avail;
			if (dst) {
				if (n)
					memcpy(dst, item + f->offset, n);
				memset(dst + n, 0, length - n); /* past the end: zeros */
				f->stats.dma_bytes += length;
			}
			f->offset = length > UINT32_MAX - f->offset ? UINT32_MAX : f->offset + length;
		}
	}
	/* The data is in place before the guest sees control change (it may be unaligned:
	 * the descriptor is wherever the guest put it). */
	uint32_t done = be32(status);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy((uint8_t *)d + offsetof(struct fw_cfg_dma, control), &done, 4);
}

static void fw_cfg_port_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                           bool is_write)
{
	struct fw_cfg *f = opaque;

	pthread_mutex_lock(&f->lock);
	if (offset == 0 && len == 2 && is_write) {
		uint16_t key;
		memcpy(&key, data, 2);
		fw_cfg_select(f, key);
	} else if (offset == 1 && !is_write) {
		uint32_t ilen;
		const uint8_t *item = fw_cfg_item(f, f->cur, &ilen);
		for (unsigned i = 0; i < len; i++, f->offset += f->offset < ilen)
			data[i] = f->offset < ilen ? item[f->offset] : 0;
		f->stats.port_reads++;
	} else if (!is_write) {
		memset(data, 0, len);
	}
	pthread_mutex_unlock(&f->lock);
}

static void fw_cfg_dma_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                          bool is_write)
{
	static const char sig[8] = { 'Q', 'E', 'M', 'U', ' ', 'C', 'F', 'G' };
	struct fw_cfg *f = opaque;

	if (!is_write) {
		for (unsigned i = 0; i < len; i++)
			data[i] = offset + i < 8 ? (uint8_t)sig[offset + i] : 0;
		return;
	}
	pthread_mutex_lock(&f->lock);
	/* The address arrives big-endian: the high half at 0x514, the low half at 0x518 (which
	 * starts the transfer), or all of it at once at 0x514. */
	if (offset == 0 && len == 8) {
		uint64_t v;
		memcpy(&v, data, 8);
		f->dma_addr = be64(v);
		fw_cfg_dma(f);
	} else if ((offset == 0 || offset == 4) && len == 4) {
		uint32_t v;
		memcpy(&v, data, 4);
		v = be32(v);
		if (offset == 0) {
			f->dma_addr = (uint64_t)v << 32 | (uint32_t)f->dma_addr;
		} else {
			f->dma_addr = (f->dma_addr & 0xffffffff00000000ull) | v;
			fw_cfg_dma(f);
			f->dma_addr = 0;
		}
	}
	pthread_mutex_unlock(&f->lock);
}

void fw_cfg_get_stats(struct fw_cfg *f, struct fw_cfg_stats *out)
{
	pthread_mutex_lock(&f->lock);
	*out = f->stats;
	pthread_mutex_unlock(&f->lock);
}

static void fw_cfg_destroy(void *opaque)
{
	struct fw_cfg *f = opaque;

	for (int i = 0; i < f->nr_items; i++)
		free(f->items[i].data);
	for (int i = 0; i < f->nr_files; i++)
		free(f->files[i].data);
	free(f->dir);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

int fw_cfg_init(struct vm *vm, struct vt_error *err)
{
	struct fw_cfg *f = calloc(1, sizeof(*f));
	uint32_t id = FW_CFG_VERSION_TRADITIONAL | FW_CFG_VERSION_DMA;
	int ret;

	if (!f)
		return vt_error_set(err, ENOMEM, "fw_cfg", "create", NULL);
	f->vm = vm;
	pthread_mutex_init(&f->lock, NULL);
	if ((ret = vm_add_device(vm, "fw_cfg", f, fw_cfg_destroy, err)))
		return ret;
	if ((ret = fw_cfg_rebuild_dir(f)))
		return vt_error_set(err, -ret, "fw_cfg", "create", NULL);
	if ((ret = fw_cfg_add(f, FW_CFG_SIGNATURE, "QEMU", 4, err)) ||
	    (ret = fw_cfg_add(f, FW_CFG_ID, &id, 4, err)))
		return ret;
	if ((ret = bus_register(&vm->pio, FW_CFG_PORT_SEL, 2, fw_cfg_port_io, f, err)))
		return ret;
	return bus_register(&vm->pio, FW_CFG_PORT_DMA, 8, fw_cfg_dma_io, f, err);
}
