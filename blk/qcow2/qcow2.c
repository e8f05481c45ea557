/* The qcow2 driver: open/close, flush (the crash-safe write-back order of qcow2.h), info,
 * and the vtable blk.c dispatches to. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int qcow2_load_table(struct qcow2 *s, uint64_t off, uint64_t n, uint64_t **out,
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

uint64_t qcow2_io_begin(struct qcow2 *s)
{
	pthread_mutex_lock(&s->io_lock);
	uint64_t epoch = s->io_epoch;
	s->io_count[epoch & 1]++;
	pthread_mutex_unlock(&s->io_lock);
	return epoch;
}

void qcow2_io_end(struct qcow2 *s, uint64_t epoch)
{
	pthread_mutex_lock(&s->io_lock);
	if (--s->io_count[epoch & 1] == 0)
		pthread_cond_broadcast(&s->io_done);
	pthread_mutex_unlock(&s->io_lock);
}

/* Wait for the unlocked transfers that started before now (they may still target a
 * cluster that is about to be released). Later ones looked the mapping up after the
 * frees were made, so they cannot. The previous epoch was drained by the last call. */
void qcow2_io_drain(struct qcow2 *s)
{
	pthread_mutex_lock(&s->io_lock);
	uint64_t old = s->io_epoch++;
	while (s->io_count[old & 1])
		pthread_cond_wait(&s->io_done, &s->io_lock);
	pthread_mutex_unlock(&s->io_lock);
}

int qcow2_mark_dirty(struct qcow2 *s, struct vt_error *err)
{
	if (s->incompat & QCOW2_INCOMPAT_DIRTY)
		return 0;
	s->incompat |= QCOW2_INCOMPAT_DIRTY;
	int r = qcow2_write_be64_field(s, QCOW2_OFF_INCOMPAT, s->incompat, err);
	return r < 0 ? r : blk_file_flush(s->b->file, err);
}

/* Ends with the file synced, whatever there was to write. */
int qcow2_flush_metadata(struct qcow2 *s, struct vt_error *err)
{
	int r;
	if (!qcow2_cache_dirty(s->l2c) && !qcow2_cache_dirty(s->rbc) && !s->l1_any_dirty &&
	    !s->nfrees)
		return blk_file_flush(s->b->file, err);
	/* Refcounts and data, then L2 tables (the cache dependencies order these two), then
	 * the L1 entries of new L2 tables. */
	if ((r = qcow2_cache_write(s->l2c, err)) < 0 || (r = qcow2_cache_write(s->rbc, err)) < 0)
		return r;
	if (s->l1_any_dirty &&
	    ((r = blk_file_flush(s->b->file, err)) < 0 || (r = qcow2_write_l1(s, err)) < 0))
		return r;
	if ((r = blk_file_flush(s->b->file, err)) < 0 || !s->nfrees)
		return r;
	/* Nothing durable points at the freed clusters any more: release them. */
	qcow2_io_drain(s);
	if ((r = qcow2_release_frees(s, err)) < 0 || (r = qcow2_cache_write(s->rbc, err)) < 0)
		return r;
	return blk_file_flush(s->b->file, err);
}

/* Lazy refcounts: the refcounts are durable now, so the image is clean again. */
static int mark_clean(struct qcow2 *s, struct vt_error *err)
{
	if (!(s->incompat & QCOW2_INCOMPAT_DIRTY))
		return 0;
	int r = qcow2_flush_metadata(s, err);
	if (r == 0) {
		s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
		r = qcow2_write_be64_field(s, QCOW2_OFF_INCOMPAT, s->incompat, err);
	}
	return r < 0 ? r : blk_file_flush(s->b->file, err);
}

void qcow2_close_internal(struct blk *b);
void qcow2_close_internal(struct blk *b)
{
	struct qcow2 *s = b->opaque;
	if (!s)
		return;
	if (s->lazy_refcounts && b->writable)
		mark_clean(s, NULL);
	qcow2_cache_destroy(s->l2c);
	qcow2_cache_destroy(s->rbc);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->io_lock);
	pthread_cond_destroy(&s->io_done);
	free(s->l1);
	free(s->l1_dirty);
	free(s->rt);
	free(s->cbuf);
	free(s->frees);
	free(s->meta);
	qcow2_snapshots_free(s->snapshots, s->nb_snapshots);
	qcow2_bitmaps_free(s);
	qcow2_decrypt_free(s);
	free(s);
	b->opaque = NULL;
}

/* qemu's default: enough L2 cache to map the whole disk, up to 32 MiB; a quarter of
 * that for refcount blocks. Slots get memory when first used. */
static int make_caches(struct qcow2 *s, struct vt_error *err)
{
	uint64_t per_table = s->cs * s->l2_entries;
	uint64_t tables = (s->b->size + per_table - 1) / per_table;
	uint64_t max = (32u << 20) / s->cs;
	uint64_t l2 = tables < 16 ? 16 : tables > max ? max : tables;
	uint64_t rb = l2 / 4 < 16 ? 16 : l2 / 4;
	int r = qcow2_cache_create(s, (uint32_t)l2, "L2 table", &s->l2c, err);
	return r < 0 ? r : qcow2_cache_create(s, (uint32_t)rb, "refcount block", &s->rbc, err);
}

int qcow2_open_internal(struct blk *b, struct vt_error *err);
int qcow2_open_internal(struct blk *b, struct vt_error *err)
{
	struct qcow2 *s = calloc(1, sizeof(*s));
	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	s->b = b;
	b->opaque = s;
	s->meta_stale = true;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->io_lock, NULL);
	pthread_cond_init(&s->io_done, NULL);
	int r = qcow2_read_header(s, err);
	if (r == 0)
		r = qcow2_load_table(s, s->l1_offset, s->l1_size, &s->l1, err);
	if (r == 0 && !(s->l1_dirty = calloc(s->l1_size + 1, sizeof(bool))))
		r = vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	if (r == 0)
		r = make_caches(s, err);
	if (r == 0) {
		s->rt_entries = (uint64_t)s->rt_clusters * s->cs / 8;
		r = qcow2_load_table(s, s->rt_offset, s->rt_entries, &s->rt, err);
	}
	if (r == 0 && !(s->cbuf = qcow2_alloc_buf(2 * s->cs)))
		r = vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	if (r == 0 && b->writable && s->crypt_method)
		r = qcow2_crypto_refuse(s, "open for writing", err);
	if (r == 0)
		r = qcow2_snapshots_load(s, err);
	if (r == 0 && b->writable && !b->repair) {
		if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
			r = vt_error_set(err, EACCES, b->filename, "open",
			                 "qcow2: Image is corrupt; cannot be opened read/write");
		else if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
			/* Lazy refcounts left stale: bring them up to date, as qemu does. */
			struct blk_check res = { 0 };
			r = qcow2_check(b, BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS, &res, NULL, NULL, err);
			if (r == 0 && res.corruptions)
				r = vt_error_set(err, EIO, b->filename, "open",
				                 "repairing the dirty image left %llu corruptions",
				                 (unsigned long long)res.corruptions);
		}
		s->lazy_refcounts = s->compat & QCOW2_COMPAT_LAZY;
		s->writethrough = b->cache == BLK_CACHE_WRITETHROUGH ||
		                  b->cache == BLK_CACHE_DIRECTSYNC;
		if (r == 0 && (s->autoclear & ~QCOW2_AUTOCLEAR_BITMAPS) && s->version >= 3) {
			/* Whatever else an autoclear bit guards, we do not maintain: it is stale
			 * from now on, and gone for anyone reading the image after us. */
			s->autoclear &= QCOW2_AUTOCLEAR_BITMAPS;
			r = qcow2_write_be64_field(s, QCOW2_OFF_AUTOCLEAR, s->autoclear, err);
		}
	}
	if (r == 0)
		r = qcow2_bitmaps_open(s, err);
	if (r < 0)
		qcow2_close_internal(b);
	return r;
}

/* Reading a snapshot: its L1 table replaces the current one in this (read-only) handle. */
static int qcow2_load_snapshot(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint64_t *l1;
	int r, i;

	if (b->writable)
		return vt_error_set(err, EINVAL, b->filename, "open snapshot",
		                    "snapshots can only be opened read-only");
	if (o->snapshot)
		i = qcow2_snapshot_find_id_or_name(s, o->snapshot);
	else
		i = qcow2_snapshot_find(s, o->snapshot_id, o->snapshot_name);
	if (i < 0)
		return vt_error_set(err, ENOENT, s->b->filename, "Failed to load snapshot",
		                    "Can't find snapshot");
	const struct qcow2_snapshot *sn = &s->snapshots[i];
	if ((r = qcow2_snapshot_check_l1(s, sn, err)) < 0)
		return r;
	/* The L1 table must cover the snapshot's disk. */
	uint64_t per_l1 = s->cs * s->l2_entries;
	if (sn->disk_size / per_l1 + (sn->disk_size % per_l1 != 0) > sn->l1_size)
		return qcow2_signal_corruption(s, err, "snapshot %s: L1 table too small", sn->id);
	if ((r = qcow2_load_table(s, sn->l1_offset, sn->l1_size, &l1, err)) < 0)
		return r;
	free(s->l1);
	s->l1 = l1;
	qcow2_meta_changed(s);
	s->l1_size = sn->l1_size;
	s->l1_offset = sn->l1_offset;
	b->size = sn->disk_size;
	return 0;
}

static int qcow2_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	int r = qcow2_open_internal(b, err);

	struct qcow2 *s = r == 0 ? b->opaque : NULL;
	if (r == 0 && s->crypt_method && o->key &&
	    (r = qcow2_decrypt_unlock(s, o->key, o->key_len, err)) < 0) {
		qcow2_close_internal(b);
		return r;
	}
	if (r == 0 && (o->snapshot || o->snapshot_id || o->snapshot_name) &&
	    (r = qcow2_load_snapshot(b, o, err)) < 0)
		qcow2_close_internal(b);
	return r;
}

static int qcow2_flush(struct blk *b, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int r = 0;

	/* The compressed arena's unused reservation goes back (so a closed image has no
	 * leaks), then all metadata in its crash-safe order; the last step is the sync. */
	if (b->writable) {
		pthread_mutex_lock(&s->lock);
		r = qcow2_arena_release(s, err);
		if (r == 0)
			r = qcow2_flush_metadata(s, err);
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	return 0;
}

/* Encrypted images: described, never read (crypto.c). */
static int qcow2_preadv_plain(struct blk *b, uint64_t off, const struct iovec *iov,
                              int iovcnt, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	if (s->crypt_method)
		return s->dec ? qcow2_decrypt_preadv(b, off, iov, iovcnt, err)
		              : qcow2_crypto_refuse(s, "read", err);
	return qcow2_preadv(b, off, iov, iovcnt, err);
}

static int qcow2_block_status_plain(struct blk *b, uint64_t off, uint64_t len,
                                    struct blk_status *st, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int r = qcow2_block_status(b, off, len, st, err);
	/* Encrypted data is not readable raw at its host offset (qemu says the same). */
	if (r == 0 && s->crypt_method)
		st->flags &= ~BLK_STATUS_OFFSET_VALID;
	return r;
}

static int qcow2_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	info->cluster_size = (uint32_t)s->cs;
	info->encrypted = s->crypt_method != 0;
	info->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
	pthread_mutex_lock(&s->lock);
	int r = qcow2_snapshots_info(s, info, err);
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
	struct vt_json *bitmaps = qcow2_bitmaps_info((struct qcow2 *)s);
	if (bitmaps)
		vt_json_set(d, "bitmaps", bitmaps);
	vt_json_set_int(d, "refcount-bits", (int64_t)s->refcount_bits);
	if (s->crypt_method)
		vt_json_set(d, "encrypt", qcow2_crypto_info((struct qcow2 *)s));
	if (v3) {
		vt_json_set_bool(d, "corrupt", s->incompat & QCOW2_INCOMPAT_CORRUPT);
		vt_json_set_bool(d, "extended-l2", s->extended_l2);
	}
	return d;
}

static int qcow2_inactivate(struct blk *b, struct vt_error *err)
{
	return qcow2_bitmaps_store(b->opaque, err);
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
	.preadv = qcow2_preadv_plain,
	.pwritev = qcow2_pwritev,
	.flush = qcow2_flush,
	.write_zeroes = qcow2_write_zeroes,
	.discard = qcow2_discard,
	.block_status = qcow2_block_status_plain,
	.get_info = qcow2_get_info,
	.format_specific = qcow2_format_specific,
	.supports_backing = true,
	.truncate = qcow2_truncate,
	.change_backing_file = qcow2_change_backing_file,
	.make_empty = qcow2_make_empty,
	.amend = qcow2_amend,
	.amend_opts = qcow2_amend_opts,
	.resize = qcow2_resize,
	.inactivate = qcow2_inactivate,
	.bitmap_list = qcow2_bitmap_list,
	.bitmap_read = qcow2_bitmap_read,
	.bitmap_apply = qcow2_bitmap_apply,
	.snapshot_create = qcow2_snapshot_create,
	.snapshot_goto = qcow2_snapshot_goto,
	.snapshot_delete = qcow2_snapshot_delete,
	.create = qcow2_create,
	.create_opts = qcow2_create_opts,
};
