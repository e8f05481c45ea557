/* qcow2 L1 table: kept in memory (host order) with a dirty flag per entry, whose changes
 * reach the file at the flush, after the L2 tables they point at are durable (step 3 of
 * the order in qcow2.h); L2 tables made writable -- an L2 table shared with a snapshot,
 * or a missing one, becomes a new table of our own in the L2 cache, its L1 entry changed
 * in memory only -- and growth of the table: a bigger copy of the durable entries, written
 * and synced, then the header switched to it, then the old table freed after the next
 * flush. Callers hold s->lock (or, as create does, the only handle). */
#include "blk/qcow2/qcow2.h"
#include "blk/qcow2/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void qcow2_l1_mark_dirty(struct qcow2 *s, uint64_t i)
{
	s->l1_dirty[i] = true;
	s->l1_any_dirty = true;
}

/* Write the changed L1 entries (the caller has made their L2 tables durable). Runs of
 * adjacent entries go out together, never across a 512-byte sector. */
int qcow2_write_l1(struct qcow2 *s, struct vt_error *err)
{
	if (!s->l1_any_dirty)
		return 0;
	for (uint64_t i = 0; i < s->l1_size;) {
		if (!s->l1_dirty[i]) {
			i++;
			continue;
		}
		uint64_t end = i + 1;
		while (end < s->l1_size && s->l1_dirty[end] && end % 64)
			end++;
		uint8_t buf[512];
		for (uint64_t k = i; k < end; k++) {
			qcow2_put_be64(buf + (k - i) * 8, s->l1[k]);
			s->l1_dirty[k] = false;
		}
		int r = blk_file_pwrite(s->b->file, s->l1_offset + i * 8, buf, (end - i) * 8, err);
		if (r < 0)
			return r;
		i = end;
	}
	s->l1_any_dirty = false;
	return 0;
}

/* An L2 table for l1 index i that we own (refcount 1), copying a shared one. The new
 * table is made in the cache; its L1 entry is written at the flush, after the table. */
int qcow2_l2_for_write(struct qcow2 *s, uint64_t i, uint64_t *l2_off, struct vt_error *err)
{
	uint64_t old;
	int r = qcow2_l2_offset(s, i, &old, err);
	if (r < 0)
		return r;
	if (old && (s->l1[i] & QCOW2_OFLAG_COPIED)) {
		*l2_off = old;
		return 0;
	}
	if (s->lazy_refcounts && (r = qcow2_mark_dirty(s, err)) < 0)
		return r;
	uint8_t *copy = NULL, *tab;
	if (old) {
		uint8_t *src;
		if ((r = qcow2_l2_load(s, old, &src, err)) < 0)
			return r;
		if (!(copy = qcow2_alloc_buf(s->cs)))
			return vt_error_set(err, ENOMEM, s->b->filename, "allocate L2 table", NULL);
		memcpy(copy, src, s->cs);
	}
	uint64_t nw;
	if ((r = qcow2_alloc_clusters(s, 1, &nw, err)) < 0 ||
	    (!s->lazy_refcounts && (r = qcow2_cache_set_dependency(s->l2c, s->rbc, err)) < 0) ||
	    (r = qcow2_cache_get_empty(s->l2c, nw, &tab, err)) < 0) {
		free(copy);
		return r;
	}
	if (copy)
		memcpy(tab, copy, s->cs);
	free(copy);
	s->l1[i] = nw | QCOW2_OFLAG_COPIED;
	qcow2_l1_mark_dirty(s, i);
	qcow2_meta_changed(s);
	if (old && (r = qcow2_free_later(s, old, s->cs, err)) < 0)
		return r;
	*l2_off = nw;
	return 0;
}

int qcow2_grow_l1(struct qcow2 *s, uint64_t n, bool exact, struct vt_error *err)
{
	if (n <= s->l1_size)
		return 0;
	uint64_t size = exact ? n : s->l1_size + s->l1_size / 2;
	if (size < n)
		size = n;
	if (size * 8 > QCOW2_MAX_L1_BYTES)
		return vt_error_set(err, EFBIG, s->b->filename, "grow L1 table",
		                    "Active L1 table too large");
	uint64_t clusters = (size * 8 + s->cs - 1) / s->cs, off;
	uint64_t *l1 = calloc(size, 8);
	uint8_t *raw = calloc(size, 8);
	bool *dirty = calloc(size, sizeof(bool));
	int r;
	if (!l1 || !raw || !dirty) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "grow L1 table", NULL);
		goto out;
	}
	/* The copy is made of durable entries only: everything the current L1 points at is
	 * written first. Then the new table and its refcounts, durable before the header
	 * switches to it. */
	if ((r = qcow2_flush_metadata(s, err)) < 0)
		goto out;
	memcpy(l1, s->l1, (size_t)s->l1_size * 8);
	for (uint64_t i = 0; i < size; i++)
		qcow2_put_be64(raw + i * 8, l1[i]);
	if ((r = qcow2_alloc_clusters(s, clusters, &off, err)) < 0 ||
	    (r = blk_file_pwrite(s->b->file, off, raw, size * 8, err)) < 0 ||
	    (r = qcow2_cache_write(s->rbc, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint8_t hdr[12];
	qcow2_put_be32(hdr, (uint32_t)size);
	qcow2_put_be64(hdr + 4, off);
	if ((r = blk_file_pwrite(s->b->file, QCOW2_OFF_L1_SIZE, hdr, 12, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint64_t old_off = s->l1_offset, old_size = s->l1_size;
	free(s->l1);
	free(s->l1_dirty);
	s->l1 = l1;
	s->l1_dirty = dirty;
	qcow2_meta_changed(s);
	l1 = NULL;
	dirty = NULL;
	s->l1_offset = off;
	s->l1_size = (uint32_t)size;
	if (old_size)
		r = qcow2_free_later(s, old_off, old_size * 8, err);
out:
	free(l1);
	free(raw);
	free(dirty);
	return r;
}

