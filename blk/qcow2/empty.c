/* Emptying a qcow2 image (what commit does to the image it committed): every guest
 * cluster falls through to the backing file again, and the file shrinks back to its
 * metadata, as qemu's make_empty leaves it.
 *
 * qemu resets the refcount structure in place under the dirty bit; a crash there leaves
 * an image that needs a repair. Here every step keeps qcow2.h's order instead, so a
 * killed or power-cut run leaves, at worst, leaked clusters:
 *   1. an all-zero L1 table is written in free space, its refcount durable;
 *   2. the header switches to it (one write, synced): the image is empty now;
 *   3. the old L1 table, its L2 tables and the data they map lose their references;
 *   4. the empty L1 table moves down to the lowest free clusters (steps 1-3 again), and
 *      refcount blocks that count nothing but themselves leave the refcount table;
 *   5. the file is cut after its last used cluster. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Free one reference of each cluster of [off, off+len) that lies inside the file, at
 * the next flush (the header switch that dropped it is durable by then): a mapping we
 * no longer trust is leaked rather than freed. */
static int drop(struct qcow2 *s, uint64_t off, uint64_t len, uint64_t fsize,
                struct vt_error *err)
{
	if (!len || off >= fsize || len > fsize - off)
		return 0;
	return qcow2_free_later(s, off, len, err);
}

/* Drop the references an L2 table's entries hold, then the table's own. */
static int drop_l2(struct qcow2 *s, uint64_t l2_off, uint64_t fsize, uint8_t *buf,
                   struct vt_error *err)
{
	int r;
	if (l2_off % s->cs || l2_off >= fsize)
		return 0;
	if ((r = blk_file_pread(s->b->file, l2_off, buf, s->cs, err)) < 0)
		return r;
	for (uint64_t i = 0; i < s->l2_entries && r == 0; i++) {
		uint64_t e = qcow2_be64(buf + i * s->l2_entry_size);
		if (e & QCOW2_OFLAG_COMPRESSED) {
			uint64_t coff = e & ((1ull << s->csize_shift) - 1);
			uint64_t nsect = ((e >> s->csize_shift) & s->csize_mask) + 1;
			r = drop(s, coff & ~511ull, nsect * 512, fsize, err);
		} else if ((e & QCOW2_OFFSET_MASK) && !((e & QCOW2_OFFSET_MASK) % s->cs)) {
			r = drop(s, e & QCOW2_OFFSET_MASK, s->cs, fsize, err);
		}
	}
	return r == 0 ? drop(s, l2_off, s->cs, fsize, err) : r;
}

/* Steps 1-3: switch to a new, empty L1 table (placed by the allocator) and drop what the
 * old one referenced. */
static int switch_to_empty_l1(struct qcow2 *s, struct vt_error *err)
{
	uint64_t clusters = ((uint64_t)s->l1_size * 8 + s->cs - 1) / s->cs, off, fsize;
	uint8_t *zeros = qcow2_alloc_buf(clusters * s->cs), *buf = qcow2_alloc_buf(s->cs);
	uint64_t *old = NULL;
	int r;

	if (!zeros || !buf) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "make empty", NULL);
		goto out;
	}
	memset(zeros, 0, clusters * s->cs);
	if ((r = qcow2_alloc_clusters(s, clusters, &off, err)) < 0)
		goto out;
	/* The new table and its refcount durable before the header points at it. */
	if ((r = blk_file_pwrite(s->b->file, off, zeros, clusters * s->cs, err)) < 0 ||
	    (r = qcow2_cache_write(s->rbc, err)) < 0 || (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	struct qcow2_hdr_edit e = { .compression_type = -1, .refcount_order = -1,
	                            .set_l1 = true, .l1_size = s->l1_size, .l1_offset = off };
	if ((r = qcow2_edit_header(s, &e, err)) < 0)
		goto out;
	/* The image is empty now; what the old table reached is referenced by nothing
	 * durable and can go at once. */
	if (!(old = malloc((size_t)s->l1_size * 8 + 8))) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "make empty", NULL);
		goto out;
	}
	memcpy(old, s->l1, (size_t)s->l1_size * 8);
	uint64_t old_off = s->l1_offset;
	memset(s->l1, 0, (size_t)s->l1_size * 8);
	memset(s->l1_dirty, 0, s->l1_size * sizeof(bool));
	s->l1_any_dirty = false;
	s->l1_offset = off;
	qcow2_cache_forget_all(s->l2c);
	qcow2_meta_changed(s);
	if ((r = blk_file_size(s->b->file, &fsize, err)) < 0)
		goto out;
	for (uint32_t i = 0; i < s->l1_size && r == 0; i++)
		if (old[i] & QCOW2_OFFSET_MASK)
			r = drop_l2(s, old[i] & QCOW2_OFFSET_MASK, fsize, buf, err);
	if (r == 0)
		r = drop(s, old_off, clusters * s->cs, fsize, err);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
out:
	free(zeros);
	free(buf);
	free(old);
	return r;
}

/* Is every counter of the refcount block zero, but the one of the block itself? */
static int block_counts_only_itself(struct qcow2 *s, uint64_t idx, uint64_t boff,
                                    bool *yes, struct vt_error *err)
{
	*yes = false;
	for (uint64_t i = 0; i < s->rb_entries; i++) {
		uint64_t c = idx * s->rb_entries + i, rc;
		int r = qcow2_get_refcount(s, c, &rc, err);
		if (r < 0)
			return r;
		if (rc && !(c == boff >> s->cluster_bits && rc == 1))
			return 0;
	}
	*yes = true;
	return 0;
}

/* Step 4's second half and step 5. */
static int shrink_file(struct qcow2 *s, struct vt_error *err)
{
	uint64_t fsize, rc;
	int r = blk_file_size(s->b->file, &fsize, err);
	if (r < 0)
		return r;
	/* Trailing refcount blocks that count only themselves (never block 0). */
	for (uint64_t idx = s->rt_entries; idx-- > 1;) {
		uint64_t boff = s->rt[idx] & QCOW2_REFT_OFFSET_MASK;
		bool yes;
		if (!s->rt[idx])
			continue;
		if ((s->rt[idx] & ~QCOW2_REFT_OFFSET_MASK) || boff % s->cs ||
		    (r = block_counts_only_itself(s, idx, boff, &yes, err)) < 0 || !yes)
			break;
		s->rt[idx] = 0;
		qcow2_meta_changed(s);
		qcow2_cache_discard(s->rbc, boff);
		uint8_t zero[8] = { 0 };
		if ((r = blk_file_pwrite(s->b->file, s->rt_offset + idx * 8, zero, 8, err)) < 0 ||
		    (r = blk_file_flush(s->b->file, err)) < 0)
			return r;
		/* Counted by another block: that count goes too. */
		if ((boff >> s->cluster_bits) / s->rb_entries != idx &&
		    ((r = qcow2_free_later(s, boff, s->cs, err)) < 0 ||
		     (r = qcow2_flush_metadata(s, err)) < 0))
			return r;
	}
	/* The last cluster anything uses. */
	uint64_t last = (fsize + s->cs - 1) / s->cs;
	while (last > 1) {
		if ((r = qcow2_get_refcount(s, last - 1, &rc, err)) < 0)
			return r;
		if (rc)
			break;
		last--;
	}
	if (last * s->cs < fsize && (r = blk_file_truncate(s->b->file, last * s->cs, err)) < 0)
		return r;
	if (s->free_hint > last)
		s->free_hint = last;
	return blk_file_flush(s->b->file, err);
}

int qcow2_make_empty(struct blk *b, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int r;

	pthread_mutex_lock(&s->lock);
	r = qcow2_arena_release(s, err);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
	if (r == 0 && s->l1_size) {
		r = switch_to_empty_l1(s, err);
		/* Freed space below the table: move it down there (step 4). */
		s->free_hint = 0;
		if (r == 0) {
			uint64_t probe;
			uint64_t clusters = ((uint64_t)s->l1_size * 8 + s->cs - 1) / s->cs;
			if ((r = qcow2_alloc_clusters(s, clusters, &probe, err)) == 0) {
				r = qcow2_free_range(s, probe, clusters * s->cs, err);
				if (r == 0 && probe < s->l1_offset)
					r = switch_to_empty_l1(s, err);
			}
		}
	}
	if (r == 0)
		r = shrink_file(s, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}
