/* The qcow2 driver: open/close, flush, info, resize, and the vtable blk.c dispatches to. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int load_table(struct qcow2 *s, uint64_t off, uint64_t n, uint64_t **out,
                      struct vt_error *err)
{
	uint8_t *raw = malloc(n * 8 + 1);
	uint64_t *t = calloc(n + 1, 8);
	int r = 0;
	if (!raw || !t)
		r = vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	if (r == 0 && n)
		r = blk_file_pread(s->b->file, off, raw, n * 8, err);
	for (uint64_t i = 0; r == 0 && i < n; i++)
		t[i] = qcow2_be64(raw + i * 8);
	free(raw);
	if (r < 0) {
		free(t);
		return r;
	}
	*out = t;
	return 0;
}

void qcow2_close_internal(struct blk *b);
void qcow2_close_internal(struct blk *b)
{
	struct qcow2 *s = b->opaque;
	if (!s)
		return;
	qcow2_l2_cache_drop(s);
	qcow2_refcount_cache_drop(s);
	pthread_mutex_destroy(&s->lock);
	free(s->l1);
	free(s->rt);
	free(s->cbuf);
	free(s);
	b->opaque = NULL;
}

int qcow2_open_internal(struct blk *b, struct vt_error *err);
int qcow2_open_internal(struct blk *b, struct vt_error *err)
{
	struct qcow2 *s = calloc(1, sizeof(*s));
	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	s->b = b;
	b->opaque = s;
	pthread_mutex_init(&s->lock, NULL);
	int r = qcow2_read_header(s, err);
	if (r == 0)
		r = load_table(s, s->l1_offset, s->l1_size, &s->l1, err);
	if (r == 0) {
		s->rt_entries = (uint64_t)s->rt_clusters * s->cs / 8;
		r = load_table(s, s->rt_offset, s->rt_entries, &s->rt, err);
	}
	if (r == 0 && !(s->cbuf = qcow2_alloc_buf(2 * s->cs)))
		r = vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	if (r == 0 && b->writable && !b->repair) {
		if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
			r = vt_error_set(err, EACCES, b->filename, "open",
			                 "qcow2: Image is corrupt; cannot be opened read/write");
		else if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
			/* Lazy refcounts left stale: bring them up to date, as qemu does. */
			struct blk_check res;
			r = qcow2_check(b, BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS, &res, NULL, NULL, err);
			if (r == 0 && res.corruptions)
				r = vt_error_set(err, EIO, b->filename, "open",
				                 "repairing the dirty image left %llu corruptions",
				                 (unsigned long long)res.corruptions);
		}
		if (r == 0 && s->autoclear && s->version >= 3) {
			/* We do not maintain bitmaps or anything else autoclear guards. */
			s->autoclear = 0;
			r = qcow2_write_be64_field(s, QCOW2_OFF_AUTOCLEAR, 0, err);
		}
	}
	if (r < 0)
		qcow2_close_internal(b);
	return r;
}

/* Reading a snapshot: its L1 table replaces the current one in this (read-only) handle. */
static int qcow2_load_snapshot(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint64_t l1_off, disk_size, *l1;
	uint32_t l1_size;
	int r;

	if (b->writable)
		return vt_error_set(err, EINVAL, b->filename, "open snapshot",
		                    "snapshots can only be opened read-only");
	if ((r = qcow2_find_snapshot(s, o->snapshot_id, o->snapshot_name, o->snapshot, &l1_off,
	                             &l1_size, &disk_size, err)) < 0 ||
	    (r = load_table(s, l1_off, l1_size, &l1, err)) < 0)
		return r;
	free(s->l1);
	s->l1 = l1;
	s->l1_size = l1_size;
	s->l1_offset = l1_off;
	b->size = disk_size;
	return 0;
}

static int qcow2_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	int r = qcow2_open_internal(b, err);

	if (r == 0 && (o->snapshot || o->snapshot_id || o->snapshot_name) &&
	    (r = qcow2_load_snapshot(b, o, err)) < 0)
		qcow2_close_internal(b);
	return r;
}

static int qcow2_flush(struct blk *b, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int r = 0;

	/* Metadata is written through; the compressed arena's unused reservation goes back
	 * (so a closed image has no leaks); durability is the file's flush. */
	if (b->writable) {
		pthread_mutex_lock(&s->lock);
		r = qcow2_arena_release(s, err);
		pthread_mutex_unlock(&s->lock);
	}
	return r ? r : blk_file_flush(b->file, err);
}

static int qcow2_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	info->cluster_size = (uint32_t)s->cs;
	info->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
	pthread_mutex_lock(&s->lock);
	int r = qcow2_read_snapshots(s, info, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ImageInfoSpecificQCow2: v2 images have no lazy-refcounts, corrupt or extended-l2. */
static struct vt_json *qcow2_format_specific(struct blk *b)
{
	const struct qcow2 *s = b->opaque;
	bool v3 = s->version >= 3;
	struct vt_json *d = vt_json_object();
	vt_json_set_str(d, "compat", v3 ? "1.1" : "0.10");
	vt_json_set_str(d, "compression-type", s->compression_type ? "zstd" : "zlib");
	if (v3)
		vt_json_set_bool(d, "lazy-refcounts", s->compat & QCOW2_COMPAT_LAZY);
	vt_json_set_int(d, "refcount-bits", (int64_t)s->refcount_bits);
	if (v3) {
		vt_json_set_bool(d, "corrupt", s->incompat & QCOW2_INCOMPAT_CORRUPT);
		vt_json_set_bool(d, "extended-l2", s->extended_l2);
	}
	return d;
}

static int qcow2_truncate(struct blk *b, uint64_t size, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	if (size < b->size)
		return vt_error_set(err, ENOTSUP, b->filename, "resize",
		                    "shrinking qcow2 images is not supported yet");
	if (s->nb_snapshots && s->version < 3)
		return vt_error_set(err, ENOTSUP, b->filename, "resize",
		                    "Can't resize a v2 image which has snapshots");
	size = (size + 511) & ~511ull;
	uint64_t per_l1 = s->cs * s->l2_entries;
	pthread_mutex_lock(&s->lock);
	int r = qcow2_grow_l1(s, size / per_l1 + (size % per_l1 != 0), true, err);
	if (r == 0)
		r = qcow2_write_be64_field(s, 24, size, err);
	if (r == 0)
		b->size = size;
	pthread_mutex_unlock(&s->lock);
	return r;
}

static uint32_t qcow2_cluster_size(struct blk *b)
{
	return (uint32_t)((struct qcow2 *)b->opaque)->cs;
}

int qcow2_measure(const struct blk_optlist *opts, uint64_t size, struct blk *src,
                  struct blk_measure *m, struct vt_error *err);

const struct blk_driver blk_driver_qcow2 = {
	.measure = qcow2_measure,
	.check = qcow2_check,
	.write_compressed = qcow2_write_compressed,
	.cluster_size = qcow2_cluster_size,
	.name = "qcow2",
	.open = qcow2_open,
	.close = qcow2_close_internal,
	.preadv = qcow2_preadv,
	.pwritev = qcow2_pwritev,
	.flush = qcow2_flush,
	.write_zeroes = qcow2_write_zeroes,
	.discard = qcow2_discard,
	.block_status = qcow2_block_status,
	.get_info = qcow2_get_info,
	.format_specific = qcow2_format_specific,
	.supports_backing = true,
	.truncate = qcow2_truncate,
	.create = qcow2_create,
	.create_opts = qcow2_create_opts,
};
