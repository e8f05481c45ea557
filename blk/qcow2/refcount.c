/* qcow2 reference counts: the two-level refcount table, the cluster allocator, growing
 * the table, and deferred frees. Callers hold s->lock. Refcount blocks live in the
 * refcount cache (written back in order, see qcow2.h); new refcount blocks and a new
 * refcount table are written and synced before the table (or header) points at them. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int rb_get(struct qcow2 *s, uint64_t off, uint8_t **data, struct vt_error *err)
{
	return qcow2_cache_get(s->rbc, off, data, err);
}

static uint64_t rb_entry_get(const struct qcow2 *s, const uint8_t *rb, uint64_t i)
{
	unsigned w = s->refcount_bits;
	if (w < 8)
		return (rb[i * w / 8] >> ((i * w) % 8)) & ((1u << w) - 1);
	uint64_t v = 0;
	for (unsigned k = 0; k < w / 8; k++)
		v = v << 8 | rb[i * (w / 8) + k];
	return v;
}

/* Set entry i in memory; returns the byte range that changed. */
static void rb_entry_set(const struct qcow2 *s, uint8_t *rb, uint64_t i, uint64_t v,
                         uint64_t *boff, unsigned *blen)
{
	unsigned w = s->refcount_bits;
	if (w < 8) {
		uint8_t mask = (uint8_t)(((1u << w) - 1) << ((i * w) % 8));
		uint8_t *p = &rb[i * w / 8];
		*p = (uint8_t)((*p & ~mask) | ((v << ((i * w) % 8)) & mask));
		*boff = i * w / 8;
		*blen = 1;
		return;
	}
	unsigned n = w / 8;
	for (unsigned k = 0; k < n; k++)
		rb[i * n + k] = (uint8_t)(v >> (8 * (n - 1 - k)));
	*boff = i * n;
	*blen = n;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return blen && a < b + blen && b < a + alen;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The host clusters holding L2 tables and refcount blocks, sorted, so that the check
 * below (run for every allocation and in-place write) is a binary search instead of a
 * walk over both tables. Rebuilt after the tables change (qcow2_meta_changed). */
static int meta_index(struct qcow2 *s, struct vt_error *err)
{
	if (!s->meta_stale)
		return 0;
	/* Snapshot L1 clusters: all of them in any sane image; a hostile table of huge ones
	 * is bounded (this index is a second line of defence, the refcounts the first). */
	uint64_t inactive = 0;
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		inactive += ((uint64_t)s->snapshots[i].l1_size * 8 + s->cs - 1) / s->cs;
	if (inactive > (1u << 20))
		inactive = 1u << 20;
	size_t n = 0, cap = (size_t)s->rt_entries + s->l1_size + (size_t)inactive + 1;
	uint64_t *m = realloc(s->meta, cap * sizeof(*m));
	if (!m)
		return vt_error_set(err, ENOMEM, s->b->filename, "index metadata", NULL);
	for (uint64_t i = 0; i < s->rt_entries; i++)
		if (s->rt[i] & QCOW2_REFT_OFFSET_MASK)
			m[n++] = (s->rt[i] & QCOW2_REFT_OFFSET_MASK) >> s->cluster_bits;
	for (uint64_t i = 0; i < s->l1_size; i++)
		if (s->l1[i] & QCOW2_OFFSET_MASK)
			m[n++] = (s->l1[i] & QCOW2_OFFSET_MASK) >> s->cluster_bits;
	/* The snapshots' L1 tables (qemu checks these "inactive L1" tables too). */
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snapshots[i];
		uint64_t c = sn->l1_offset >> s->cluster_bits;
		for (uint64_t k = 0; k < ((uint64_t)sn->l1_size * 8 + s->cs - 1) / s->cs &&
		                    inactive; k++, inactive--)
			m[n++] = c + k;
	}
	qsort(m, n, sizeof(*m), cmp_u64);
	s->meta = m;
	s->nmeta = n;
	s->meta_stale = false;
	return 0;
}

void qcow2_meta_changed(struct qcow2 *s)
{
	s->meta_stale = true;
}

int qcow2_check_overlap(struct qcow2 *s, uint64_t off, uint64_t len, struct vt_error *err)
{
	const char *what = NULL;
	int r;
	if (overlaps(off, len, 0, s->cs))
		what = "qcow2_header";
	else if (overlaps(off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
		what = "active L1 table";
	else if (overlaps(off, len, s->rt_offset, (uint64_t)s->rt_clusters * s->cs))
		what = "refcount table";
	else if (s->nb_snapshots &&
	         overlaps(off, len, s->snapshots_offset,
	                  (s->snapshots_size + s->cs - 1) & ~(s->cs - 1)))
		what = "snapshot table";
	if (!what && len) {
		if ((r = meta_index(s, err)) < 0)
			return r;
		uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;
		size_t lo = 0, hi = s->nmeta;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (s->meta[mid] < first)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < s->nmeta && s->meta[lo] <= last) {
			uint64_t c = s->meta[lo] << s->cluster_bits;
			what = "refcount block";
			for (uint64_t i = 0; i < s->l1_size; i++)
				if ((s->l1[i] & QCOW2_OFFSET_MASK) == c)
					what = "active L2 table";
			for (uint32_t i = 0; i < s->nb_snapshots; i++)
				if (overlaps(c, s->cs, s->snapshots[i].l1_offset,
				             (uint64_t)s->snapshots[i].l1_size * 8))
					what = "inactive L1 table";
		}
	}
	if (what)
		return qcow2_signal_corruption(s, err, "Preventing invalid write on metadata "
		                               "(overlaps with %s)", what);
	return 0;
}

static int rt_block(struct qcow2 *s, uint64_t rt_index, uint64_t *off, struct vt_error *err)
{
	*off = 0;
	if (rt_index >= s->rt_entries)
		return 0;
	uint64_t e = s->rt[rt_index];
	if (e & ~QCOW2_REFT_OFFSET_MASK)
		return qcow2_signal_corruption(s, err, "Refblock offset %#llx unaligned (reftable "
		                               "index: %#llx)", (unsigned long long)e,
		                               (unsigned long long)rt_index);
	*off = e & QCOW2_REFT_OFFSET_MASK;
	if (*off == 0)
		return 0;
	if (*off % s->cs)
		return qcow2_signal_corruption(s, err, "Refblock offset %#llx unaligned (reftable "
		                               "index: %#llx)", (unsigned long long)*off,
		                               (unsigned long long)rt_index);
	return 0;
}

int qcow2_get_refcount(struct qcow2 *s, uint64_t cluster, uint64_t *rc, struct vt_error *err)
{
	uint64_t boff;
	uint8_t *rb;
	int r = rt_block(s, cluster / s->rb_entries, &boff, err);
	if (r < 0)
		return r;
	if (!boff) {
		*rc = 0;
		return 0;
	}
	if ((r = rb_get(s, boff, &rb, err)) < 0)
		return r;
	*rc = rb_entry_get(s, rb, cluster % s->rb_entries);
	return 0;
}

static int write_rt_entry(struct qcow2 *s, uint64_t idx, struct vt_error *err)
{
	uint8_t buf[8];
	qcow2_put_be64(buf, s->rt[idx]);
	return blk_file_pwrite(s->b->file, s->rt_offset + idx * 8, buf, 8, err);
}

/* A bigger refcount table, placed with as many new refcount blocks as it takes to count
 * themselves and it, in the range of clusters that no existing block covers (so nothing
 * there is in use): the blocks first, the table after them. Tiny clusters with wide
 * refcounts need several blocks; the usual images need one. */
static int grow_reftable(struct qcow2 *s, uint64_t min_entries, struct vt_error *err)
{
	uint64_t new_idx = s->rt_entries, per_cluster = s->cs / 8, nblocks = 1, entries, clusters;

	for (;;) {
		entries = s->rt_entries * 2;
		if (entries < min_entries)
			entries = min_entries;
		if (entries < new_idx + nblocks)
			entries = new_idx + nblocks;
		clusters = (entries + per_cluster - 1) / per_cluster;
		entries = clusters * per_cluster;
		if (clusters * s->cs > QCOW2_MAX_REFTABLE_BYTES)
			return vt_error_set(err, EFBIG, s->b->filename, "grow refcount table",
			                    "Reference count table too large");
		if (nblocks + clusters <= nblocks * s->rb_entries)
			break;
		nblocks++;
	}
	uint64_t used = nblocks + clusters;
	uint64_t block_off = new_idx * s->rb_entries * s->cs;
	uint64_t table_off = block_off + nblocks * s->cs;

	int r = qcow2_check_overlap(s, block_off, used * s->cs, err);
	if (r < 0)
		return r;
	uint8_t *blocks = calloc(nblocks, s->cs);
	uint64_t *rt = calloc(entries, 8);
	uint8_t *raw = calloc(clusters, s->cs);
	if (!blocks || !rt || !raw) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "grow refcount table", NULL);
		goto out;
	}
	/* Clusters [0, used) of the new range are in use; block j counts [j*rb, (j+1)*rb). */
	for (uint64_t i = 0; i < used; i++) {
		uint64_t bo;
		unsigned bl;
		rb_entry_set(s, blocks + (i / s->rb_entries) * s->cs, i % s->rb_entries, 1, &bo, &bl);
	}
	memcpy(rt, s->rt, s->rt_entries * 8);
	for (uint64_t j = 0; j < nblocks; j++)
		rt[new_idx + j] = block_off + j * s->cs;
	for (uint64_t i = 0; i < entries; i++)
		qcow2_put_be64(raw + i * 8, rt[i]);
	/* Blocks and table first, header pointer last: a crash before the switch leaks. */
	if ((r = blk_file_pwrite(s->b->file, block_off, blocks, nblocks * s->cs, err)) < 0 ||
	    (r = blk_file_pwrite(s->b->file, table_off, raw, clusters * s->cs, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint8_t hdr[12];
	qcow2_put_be64(hdr, table_off);
	qcow2_put_be32(hdr + 8, (uint32_t)clusters);
	if ((r = blk_file_pwrite(s->b->file, QCOW2_OFF_REFTABLE, hdr, 12, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint64_t old_off = s->rt_offset, old_clusters = s->rt_clusters;
	free(s->rt);
	s->rt = rt;
	rt = NULL;
	qcow2_meta_changed(s);
	s->rt_offset = table_off;
	s->rt_clusters = (uint32_t)clusters;
	s->rt_entries = entries;
	/* The old table's clusters are reusable once the header switch is durable (it is:
	 * synced above); still, release them with the other frees at the next flush. */
	r = qcow2_free_later(s, old_off, old_clusters * s->cs, err);
out:
	free(blocks);
	free(rt);
	free(raw);
	return r;
}

/* A new refcount block for table index idx. Usually placed at the first cluster of the
 * range it covers: every cluster there has refcount 0 (no block counted them), so it is
 * free, and the block can count itself. But a run of clusters being allocated, [keep,
 * keep + keep_len), must not lose a cluster to it, or a run as long as a block's range
 * (512-byte clusters with wide refcounts, a big L1 table) could never be found: then
 * the block is allocated like any cluster (counted by another block, that count durable
 * before the table points at it), as qemu places it. */
static int create_refblock(struct qcow2 *s, uint64_t idx, uint64_t keep, uint64_t keep_len,
                           struct vt_error *err)
{
	int r;
	if (idx >= s->rt_entries && (r = grow_reftable(s, idx + 1, err)) < 0)
		return r;
	if (s->rt[idx])
		return 0; /* the table growth placed one here */
	uint64_t off = idx * s->rb_entries * s->cs, self = idx * s->rb_entries;
	bool elsewhere = keep_len > 1 && self >= keep && self < keep + keep_len;
	if (elsewhere) {
		if ((r = qcow2_alloc_clusters(s, 1, &off, err)) < 0)
			return r;
		/* That allocation may have had to make this very block (the first free cluster
		 * was in its range): then the cluster goes back unused. */
		if (s->rt[idx])
			return qcow2_update_refcount(s, off >> s->cluster_bits, -1, err);
		if ((r = qcow2_cache_write(s->rbc, err)) < 0)
			return r;
	} else if ((r = qcow2_check_overlap(s, off, s->cs, err)) < 0) {
		/* Only a corrupt image (a table entry lost) has metadata in an uncounted range. */
		return r;
	}
	uint8_t *block = calloc(1, s->cs);
	if (!block)
		return vt_error_set(err, ENOMEM, s->b->filename, "allocate refcount block", NULL);
	uint64_t bo;
	unsigned bl;
	if (!elsewhere)
		rb_entry_set(s, block, 0, 1, &bo, &bl);
	/* The block (and its own count) durable before the table entry that points at it. */
	r = blk_file_pwrite(s->b->file, off, block, s->cs, err);
	free(block);
	if (r < 0 || (r = blk_file_flush(s->b->file, err)) < 0)
		return r;
	s->rt[idx] = off;
	qcow2_meta_changed(s);
	return write_rt_entry(s, idx, err);
}

int qcow2_update_refcount(struct qcow2 *s, uint64_t cluster, int delta, struct vt_error *err)
{
	uint64_t idx = cluster / s->rb_entries, boff;
	uint8_t *rb;
	int r = rt_block(s, idx, &boff, err);
	if (r < 0)
		return r;
	if (!boff) {
		if (delta < 0)
			return qcow2_signal_corruption(s, err, "refcount of cluster %llu would drop "
			                               "below 0", (unsigned long long)cluster);
		if ((r = create_refblock(s, idx, 0, 0, err)) < 0)
			return r;
		boff = s->rt[idx];
	}
	if ((r = rb_get(s, boff, &rb, err)) < 0)
		return r;
	uint64_t i = cluster % s->rb_entries;
	uint64_t v = rb_entry_get(s, rb, i);
	if (delta < 0 && v < (uint64_t)-delta)
		return qcow2_signal_corruption(s, err, "refcount of cluster %llu would drop below 0",
		                               (unsigned long long)cluster);
	if (delta > 0 && s->refcount_max - v < (uint64_t)delta)
		return vt_error_set(err, ERANGE, s->b->filename, "update refcount",
		                    "refcount of cluster %llu would exceed %llu",
		                    (unsigned long long)cluster, (unsigned long long)s->refcount_max);
	v += (uint64_t)(int64_t)delta;
	/* A freed cluster may be reused for anything: stop appending compressed data to it
	 * (the arena goes on at the next cluster, which is still reserved). */
	if (delta < 0 && v == 0 && (s->carena_next & (s->cs - 1)) &&
	    cluster == s->carena_next >> s->cluster_bits)
		s->carena_next = (s->carena_next | (s->cs - 1)) + 1;
	uint64_t bo;
	unsigned bl;
	rb_entry_set(s, rb, i, v, &bo, &bl);
	qcow2_cache_mark_dirty(s->rbc, boff);
	if (v == 0) {
		/* Nothing may still hold a table of the freed cluster. */
		qcow2_cache_discard(s->l2c, cluster << s->cluster_bits);
		if (cluster < s->free_hint)
			s->free_hint = cluster;
	}
	return 0;
}

/* Refcount 0 -> 1 for clusters [first, first+n), whose refcount blocks all exist: each
 * block's changed bytes are written once. */
static int claim_range(struct qcow2 *s, uint64_t first, uint64_t n, struct vt_error *err)
{
	while (n) {
		uint64_t idx = first / s->rb_entries, i = first % s->rb_entries, boff;
		uint64_t k = s->rb_entries - i < n ? s->rb_entries - i : n;
		uint8_t *rb;
		int r;
		if ((r = rt_block(s, idx, &boff, err)) < 0 || (r = rb_get(s, boff, &rb, err)) < 0)
			return r;
		uint64_t bo;
		unsigned bl;
		for (uint64_t j = 0; j < k; j++) {
			if (rb_entry_get(s, rb, i + j))
				return qcow2_signal_corruption(s, err, "cluster %llu allocated twice",
				                               (unsigned long long)(first + j));
			rb_entry_set(s, rb, i + j, 1, &bo, &bl);
		}
		qcow2_cache_mark_dirty(s->rbc, boff);
		first += k;
		n -= k;
	}
	return 0;
}

int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *off, struct vt_error *err)
{
	int r;
	for (;;) {
		/* First run of n free clusters at or after the hint. */
		uint64_t start = s->free_hint, run = 0, first_free = UINT64_MAX;
		while (run < n) {
			uint64_t rc;
			if ((r = qcow2_get_refcount(s, start + run, &rc, err)) < 0)
				return r;
			if (!rc && first_free == UINT64_MAX)
				first_free = start + run;
			if (rc) {
				start += run + 1;
				run = 0;
			} else {
				run++;
			}
			if (start + run > (1ull << (56 - s->cluster_bits)))
				return vt_error_set(err, EFBIG, s->b->filename, "allocate cluster",
				                    "image file would exceed the format's limit");
		}
		/* Every block that will count the run must exist before we count it; making
		 * one uses free clusters, so search again afterwards. */
		bool made = false;
		for (uint64_t idx = start / s->rb_entries; idx <= (start + n - 1) / s->rb_entries;
		     idx++) {
			if (idx >= s->rt_entries || !s->rt[idx]) {
				if ((r = create_refblock(s, idx, start, n, err)) < 0)
					return r;
				made = true;
				break; /* the search starts over: the run may have moved */
			}
		}
		if (made)
			continue;
		if ((r = qcow2_check_overlap(s, start * s->cs, n * s->cs, err)) < 0 ||
		    (r = claim_range(s, start, n, err)) < 0)
			return r;
		/* Everything before the first free cluster we saw is in use. */
		s->free_hint = first_free < start ? first_free : start + n;
		*off = start * s->cs;
		return 0;
	}
}

int qcow2_free_range(struct qcow2 *s, uint64_t off, uint64_t len, struct vt_error *err)
{
	uint64_t first = off / s->cs, last = (off + len - 1) / s->cs;
	for (uint64_t c = first; len && c <= last; c++) {
		int r = qcow2_update_refcount(s, c, -1, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int qcow2_free_later(struct qcow2 *s, uint64_t off, uint64_t len, struct vt_error *err)
{
	if (!len)
		return 0;
	if (s->nfrees == s->frees_cap) {
		size_t cap = s->frees_cap ? s->frees_cap * 2 : 64;
		struct qcow2_free *f = realloc(s->frees, cap * sizeof(*f));
		if (!f)
			return vt_error_set(err, ENOMEM, s->b->filename, "free clusters", NULL);
		s->frees = f;
		s->frees_cap = cap;
	}
	s->frees[s->nfrees++] = (struct qcow2_free){ off, len };
	/* Keep the backlog (and the space it holds) bounded without a guest flush. */
	if (s->nfrees >= 4096)
		return qcow2_flush_metadata(s, err);
	return 0;
}

int qcow2_release_frees(struct qcow2 *s, struct vt_error *err)
{
	int r = 0;
	size_t i;
	for (i = 0; i < s->nfrees && r == 0; i++)
		r = qcow2_free_range(s, s->frees[i].off, s->frees[i].len, err);
	/* On failure the rest leak; they can no longer be referenced anyway. */
	s->nfrees = 0;
	return r;
}

int qcow2_arena_release(struct qcow2 *s, struct vt_error *err)
{
	uint64_t first = (s->carena_next + s->cs - 1) & ~(s->cs - 1);
	int r = 0;

	for (uint64_t c = first; r == 0 && c < s->carena_end; c += s->cs)
		r = qcow2_update_refcount(s, c >> s->cluster_bits, -1, err);
	s->carena_next = s->carena_end = 0;
	return r;
}
