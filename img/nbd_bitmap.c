/* A persistent dirty bitmap exported as the qemu:dirty-bitmap:NAME metadata context
 * (vtool img serve -B NAME), as qemu-nbd 7.2 exports it: the bitmap is looked up in the
 * image, then down its backing chain; a missing or inconsistent (in-use) one refuses to
 * start the server with qemu-nbd's message.
 *
 * The bits are read once when the server starts. That is the whole story for a read-only
 * export, a disabled bitmap, or one found in a backing file (the served layer's writes do
 * not reach it). An enabled bitmap of a writable export tracks writes, as qemu-nbd's
 * does: the qcow2 driver marks its in-memory copy, and the next block status after a
 * write-type request reads that copy again (one copy of ceil(size / granularity / 8)
 * bytes: 2 MiB for 1 TiB at 64 KiB); block status without writes in between costs
 * nothing more. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/nbd_server.h"

#define CONTEXT_PREFIX "qemu:dirty-bitmap:"

struct nbd_bitmap {
	struct blk *src;               /* the layer of the chain that holds it */
	char *name, *context;
	bool live;                     /* tracks the export's writes */
	int stale;                     /* a write-type request ran since the last read */
	pthread_mutex_t lock;          /* live: bits, while a request reads or replaces them */
	struct blk_bitmap_bits bits;
};

/* Where the chain holds NAME: 1 (in *where, with *enabled), 0 when nowhere, or -1. */
static int find(struct blk *b, const char *name, struct blk **where, bool *enabled,
                struct vt_error *err)
{
	for (struct blk *l = b; l; l = blk_backing(l)) {
		struct blk_bitmap *list;
		size_t n;
		struct vt_error lerr = { 0 };
		int r = blk_bitmap_list(l, &list, &n, &lerr);
		if (r == -ENOTSUP)
			continue; /* a format without bitmaps, or qcow2 v2: none here */
		if (r < 0) {
			*err = lerr;
			return -1;
		}
		bool found = false, in_use = false;
		for (size_t i = 0; i < n && !found; i++) {
			if (!strcmp(list[i].name, name)) {
				found = true;
				in_use = list[i].in_use;
				*enabled = list[i].enabled;
			}
		}
		blk_bitmap_list_free(list, n);
		if (in_use)
			return vt_error_set(err, EBUSY, "", NULL,
			                    "Bitmap '%s' is inconsistent and cannot be used", name);
		if (found) {
			*where = l;
			return 1;
		}
	}
	return 0;
}

int nbd_bitmap_open(struct blk *b, const char *name, bool writable, struct nbd_bitmap **out,
                    struct vt_error *err)
{
	struct blk *src = NULL;
	bool enabled = false;
	int r = find(b, name, &src, &enabled, err);
	if (r < 0)
		return r;
	if (r == 0)
		return vt_error_set(err, ENOENT, "", NULL, "Bitmap '%s' is not found", name);
	struct nbd_bitmap *bm = calloc(1, sizeof(*bm));
	size_t cl = sizeof(CONTEXT_PREFIX) + strlen(name);
	if (!bm || !(bm->name = strdup(name)) || !(bm->context = malloc(cl))) {
		nbd_bitmap_free(bm);
		return vt_error_set(err, ENOMEM, "", NULL, "Bitmap '%s'", name);
	}
	snprintf(bm->context, cl, CONTEXT_PREFIX "%s", name);
	bm->src = src;
	bm->live = writable && src == b && enabled;
	pthread_mutex_init(&bm->lock, NULL);
	if (blk_bitmap_read(src, name, &bm->bits, err) < 0) {
		nbd_bitmap_free(bm);
		return -1;
	}
	*out = bm;
	return 0;
}

void nbd_bitmap_free(struct nbd_bitmap *bm)
{
	if (!bm)
		return;
	if (bm->context) /* the lock is initialised with it */
		pthread_mutex_destroy(&bm->lock);
	free(bm->bits.bits);
	free(bm->context);
	free(bm->name);
	free(bm);
}

const char *nbd_bitmap_context(const struct nbd_bitmap *bm)
{
	return bm->context;
}

bool nbd_bitmap_is(const struct nbd_bitmap *bm, const uint8_t *name, size_t n)
{
	return strlen(bm->name) == n && !memcmp(bm->name, name, n);
}

void nbd_bitmap_written(struct nbd_bitmap *bm)
{
	if (bm->live)
		__atomic_store_n(&bm->stale, 1, __ATOMIC_RELEASE);
}

/* Only live bitmaps change: the others' bits are read by every worker without a lock. */
int nbd_bitmap_lock(struct nbd_bitmap *bm)
{
	if (!bm->live)
		return 0;
	pthread_mutex_lock(&bm->lock);
	if (!__atomic_exchange_n(&bm->stale, 0, __ATOMIC_ACQ_REL))
		return 0;
	struct blk_bitmap_bits nb;
	struct vt_error err;
	int r = blk_bitmap_read(bm->src, bm->name, &nb, &err);
	if (r < 0) {
		__atomic_store_n(&bm->stale, 1, __ATOMIC_RELEASE); /* try again next time */
		pthread_mutex_unlock(&bm->lock);
		return r;
	}
	free(bm->bits.bits);
	bm->bits = nb;
	return 0;
}

void nbd_bitmap_unlock(struct nbd_bitmap *bm)
{
	if (bm->live)
		pthread_mutex_unlock(&bm->lock);
}

static bool bit(const struct blk_bitmap_bits *b, uint64_t i)
{
	return i < b->nbits && (b->bits[i / 8] >> (i % 8) & 1);
}

void nbd_bitmap_run(const struct nbd_bitmap *bm, uint64_t off, uint64_t end, bool *dirty,
                    uint64_t *len)
{
	const struct blk_bitmap_bits *b = &bm->bits;
	uint64_t g = b->granularity, n = off / g + 1;
	bool d = bit(b, n - 1);
	uint8_t same = d ? 0xff : 0;
	while (n * g < end) {
		if (n >= b->nbits) { /* past the bitmap (a shorter backing file's): clean */
			if (!d)
				n = (end + g - 1) / g;
			break;
		}
		if (n % 8 == 0 && n + 8 <= b->nbits && b->bits[n / 8] == same)
			n += 8;
		else if (bit(b, n) == d)
			n++;
		else
			break;
	}
	*dirty = d;
	*len = (n * g < end ? n * g : end) - off;
}
