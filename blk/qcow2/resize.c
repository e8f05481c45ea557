/* qcow2 resize (qemu-img resize, qemu's qcow2_co_truncate rules and messages).
 *
 * Growing: a bigger L1 table first (written, synced, then the header switches to it),
 * then what the new part needs -- zero clusters where a longer backing file would show
 * through, preallocated clusters -- through the ordinary write paths, all durable, and
 * the new size last. Shrinking: the clusters past the new end are dropped (their L2
 * entries cleared, what they mapped released after the tables are durable), then L1
 * entries past the new end, then the new size, then the file loses its unused tail.
 * A crash at any point leaves a consistent image (at worst leaked clusters) of the old
 * size or the new. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static uint64_t l1_entries_for(const struct qcow2 *s, uint64_t size)
{
	uint64_t per = s->cs * s->l2_entries;
	return size / per + (size % per != 0);
}

static int write_size(struct qcow2 *s, uint64_t size, struct vt_error *err)
{
	int r = qcow2_flush_metadata(s, err);
	if (r == 0)
		r = qcow2_write_be64_field(s, 24, size, err);
	if (r == 0)
		r = blk_file_flush(s->b->file, err);
	if (r == 0)
		s->b->size = size;
	return r;
}

static int grow(struct qcow2 *s, uint64_t size, enum blk_prealloc prealloc, struct vt_error *err)
{
	struct blk *b = s->b;
	uint64_t old = b->size, need = l1_entries_for(s, size);
	int r;

	if (need * 8 > QCOW2_MAX_L1_BYTES)
		return vt_error_set(err, EFBIG, b->filename, "", "Failed to grow the L1 table: %s",
		                    strerror(EFBIG));
	if ((r = qcow2_grow_l1(s, need, true, err)) < 0) {
		char why[sizeof(err->why)];
		snprintf(why, sizeof(why), "%s", err ? err->why : "");
		return vt_error_set(err, -r, b->filename, "", "Failed to grow the L1 table: %s", why);
	}
	/* A backing file longer than the old disk would show through the new part: it reads
	 * as zeros instead (zero clusters; explicit zeros for a partial first cluster). */
	if (b->backing && b->backing->size > old && size > old) {
		if (s->version < 3)
			return vt_error_set(err, ENOTSUP, b->filename, "",
			                    "Failed to zero out new clusters: %s", strerror(ENOTSUP));
		b->size = size; /* the zeroing works on the new disk */
		pthread_mutex_unlock(&s->lock);
		r = qcow2_write_zeroes(b, old, size - old, BLK_MAY_UNMAP, err);
		pthread_mutex_lock(&s->lock);
		b->size = old;
		if (r < 0)
			return r;
	}
	/* falloc and full give the new part fresh zeroed clusters, the partial cluster at
	 * the old end included (qemu copies its head into a new cluster): whatever that
	 * cluster held past the old end reads as zeros now. */
	uint64_t head_end = (old + s->cs - 1) & ~(s->cs - 1);
	if (head_end > size)
		head_end = size;
	if ((prealloc == BLK_PREALLOC_FALLOC || prealloc == BLK_PREALLOC_FULL) && head_end > old) {
		b->size = size;
		pthread_mutex_unlock(&s->lock);
		r = qcow2_write_zeroes(b, old, head_end - old, 0, err);
		pthread_mutex_lock(&s->lock);
		b->size = old;
		if (r < 0)
			return r;
	}
	if (prealloc != BLK_PREALLOC_OFF) {
		uint64_t data_end, fsize;
		if ((r = qcow2_preallocate(s, old, size, prealloc, &data_end, err)) < 0 ||
		    (r = blk_file_size(b->file, &fsize, err)) < 0)
			return r;
		if (data_end > fsize && (r = blk_file_truncate(b->file, data_end, err)) < 0)
			return r;
	}
	return write_size(s, size, err);
}

/* The end of the last cluster anything counts, at or below the file's end. */
static int last_used_end(struct qcow2 *s, uint64_t fsize, uint64_t *end, struct vt_error *err)
{
	uint64_t c = (fsize + s->cs - 1) / s->cs, rc = 0;
	while (c > 0) {
		int r = qcow2_get_refcount(s, c - 1, &rc, err);
		if (r < 0)
			return r;
		if (rc)
			break;
		c--;
	}
	*end = c * s->cs;
	return 0;
}

static int shrink(struct qcow2 *s, uint64_t size, struct vt_error *err)
{
	struct blk *b = s->b;
	uint64_t first = (size + s->cs - 1) / s->cs, last = (b->size + s->cs - 1) / s->cs;
	uint64_t keep = l1_entries_for(s, size), fsize, end;
	int r;

	if (first < last && (r = qcow2_drop_clusters(s, first, last - first, err)) < 0) {
		char why[sizeof(err->why)];
		snprintf(why, sizeof(why), "%s", err ? err->why : "");
		return vt_error_set(err, -r, b->filename, "", "Failed to discard cropped clusters: "
		                    "%s", why);
	}
	/* L2 tables wholly past the new end map nothing any more: out of the L1 table
	 * (written after the tables), released after that. */
	for (uint64_t i = keep; i < s->l1_size; i++) {
		uint64_t t = s->l1[i] & QCOW2_OFFSET_MASK;
		if (!s->l1[i])
			continue;
		s->l1[i] = 0;
		qcow2_l1_mark_dirty(s, i);
		qcow2_meta_changed(s);
		if (t && (r = qcow2_free_later(s, t, s->cs, err)) < 0)
			return r;
	}
	if ((r = write_size(s, size, err)) < 0)
		return r;
	/* Nothing counts the clusters at the end of the file any more: cut them off (an
	 * image smaller on disk, as qemu leaves it; failing here costs only space). */
	if ((r = qcow2_arena_release(s, err)) < 0 || (r = qcow2_flush_metadata(s, err)) < 0 ||
	    (r = blk_file_size(b->file, &fsize, err)) < 0 ||
	    (r = last_used_end(s, fsize, &end, err)) < 0)
		return r;
	if (end < fsize)
		blk_file_truncate(b->file, end, NULL);
	return 0;
}

int qcow2_resize(struct blk *b, uint64_t size, enum blk_prealloc prealloc, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int r;

	if (size % 512)
		return vt_error_set(err, EINVAL, b->filename, "", "The new size must be a multiple "
		                    "of 512");
	if (s->nb_snapshots && s->version < 3)
		return vt_error_set(err, ENOTSUP, b->filename, "",
		                    "Can't resize a v2 image which has snapshots");
	if (size < b->size && prealloc != BLK_PREALLOC_OFF)
		return vt_error_set(err, EINVAL, b->filename, "",
		                    "Preallocation can't be used for shrinking an image");
	pthread_mutex_lock(&s->lock);
	uint64_t old = b->size;
	if (size < old) {
		if ((r = shrink(s, size, err)) == 0)
			r = qcow2_bitmaps_resize(s, old, size, err);
	} else if ((r = qcow2_bitmaps_resize(s, old, size, err)) == 0) {
		r = grow(s, size, prealloc, err);
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

int qcow2_truncate(struct blk *b, uint64_t size, struct vt_error *err)
{
	return qcow2_resize(b, size, BLK_PREALLOC_OFF, err);
}
