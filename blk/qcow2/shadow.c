/* qcow2 metadata switches (see qcow2.h): a new state of the refcounts, the L1 table and
 * the snapshot table is built in clusters that the live state leaves free, then one write
 * of header bytes 24-72 makes it current.
 *
 * The new refcounts live in private copies of the refcount blocks they change; blocks
 * that do not change are shared by the old and the new refcount table. Every copy, the
 * new refcount table and whatever the caller writes (tables) go to clusters free in both
 * states, so the live image is never touched before the switch: a crash before it leaves
 * the old image (nothing leaks: those clusters are free there), after it the new one
 * (the old structures are already free in it). The allocator hands out clusters free in
 * both states; the copies are placed last, each counted in the new state like any other
 * cluster, until nothing is left unplaced. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct shadow_write {
	uint64_t off, len;
	uint8_t *buf;
};

struct qcow2_shadow {
	struct qcow2 *s;
	uint64_t nidx;          /* refcount table indexes the arrays below cover */
	uint8_t **copy;         /* new contents of refcount block idx; NULL: unchanged */
	uint64_t *place;        /* where copy idx is written; 0: not placed yet */
	uint64_t hint;          /* clusters below are known to be in use */
	struct shadow_write *w;
	size_t nw, capw;
	uint8_t hdr[72];        /* the live header's first 72 bytes */
};

static void shadow_free(struct qcow2_shadow *sh)
{
	for (uint64_t i = 0; i < sh->nidx; i++)
		free(sh->copy[i]);
	for (size_t i = 0; i < sh->nw; i++)
		free(sh->w[i].buf);
	free(sh->copy);
	free(sh->place);
	free(sh->w);
	free(sh);
}

void qcow2_shadow_abort(struct qcow2_shadow *sh)
{
	if (sh)
		shadow_free(sh);
}

int qcow2_shadow_begin(struct qcow2 *s, struct qcow2_shadow **out, struct vt_error *err)
{
	int r;
	/* The live state on disk is the one in memory, with no deferred frees and no
	 * transfer in flight to a cluster this change may release. */
	if ((r = qcow2_arena_release(s, err)) < 0 || (r = qcow2_flush_metadata(s, err)) < 0)
		return r;
	qcow2_io_drain(s);
	struct qcow2_shadow *sh = calloc(1, sizeof(*sh));
	if (!sh)
		return vt_error_set(err, ENOMEM, s->b->filename, "metadata update", NULL);
	sh->s = s;
	sh->hint = s->free_hint;
	if ((r = blk_file_pread(s->b->file, 0, sh->hdr, sizeof(sh->hdr), err)) < 0) {
		shadow_free(sh);
		return r;
	}
	*out = sh;
	return 0;
}

/* The live refcount block of table index idx (0 if none), validated. */
static int old_block(struct qcow2 *s, uint64_t idx, uint64_t *off, struct vt_error *err)
{
	*off = 0;
	if (idx >= s->rt_entries || !s->rt[idx])
		return 0;
	uint64_t e = s->rt[idx];
	if ((e & ~QCOW2_REFT_OFFSET_MASK) || (e & QCOW2_REFT_OFFSET_MASK) % s->cs)
		return qcow2_signal_corruption(s, err, "Refblock offset %#llx unaligned (reftable "
		                               "index: %#llx)", (unsigned long long)e,
		                               (unsigned long long)idx);
	*off = e & QCOW2_REFT_OFFSET_MASK;
	return 0;
}

static int add_one(struct qcow2_shadow *sh, uint64_t cluster, int delta, struct vt_error *err);

/* A private copy of refcount block idx (a zeroed one for a range that has none). The
 * live block is not part of the new structure: it loses its reference there. */
static int ensure_copy(struct qcow2_shadow *sh, uint64_t idx, struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	int r;
	if (idx >= sh->nidx) {
		uint64_t n = sh->nidx ? sh->nidx : 16;
		while (n <= idx)
			n *= 2;
		if (n * 8 > 2 * (uint64_t)QCOW2_MAX_REFTABLE_BYTES)
			return vt_error_set(err, EFBIG, s->b->filename, "metadata update",
			                    "Reference count table too large");
		uint8_t **c = realloc(sh->copy, n * sizeof(*c));
		if (c)
			sh->copy = c;
		uint64_t *p = c ? realloc(sh->place, n * sizeof(*p)) : NULL;
		if (!c || !p)
			return vt_error_set(err, ENOMEM, s->b->filename, "metadata update", NULL);
		sh->place = p;
		memset(c + sh->nidx, 0, (n - sh->nidx) * sizeof(*c));
		memset(p + sh->nidx, 0, (n - sh->nidx) * sizeof(*p));
		sh->nidx = n;
	}
	if (sh->copy[idx])
		return 0;
	uint64_t boff;
	uint8_t *buf, *live;
	if ((r = old_block(s, idx, &boff, err)) < 0)
		return r;
	if (!(buf = qcow2_alloc_buf(s->cs)))
		return vt_error_set(err, ENOMEM, s->b->filename, "metadata update", NULL);
	if (boff) {
		if ((r = qcow2_cache_get(s->rbc, boff, &live, err)) < 0) {
			free(buf);
			return r;
		}
		memcpy(buf, live, s->cs);
	} else {
		memset(buf, 0, s->cs);
	}
	sh->copy[idx] = buf;
	return boff ? add_one(sh, boff >> s->cluster_bits, -1, err) : 0;
}

int qcow2_shadow_get(struct qcow2_shadow *sh, uint64_t cluster, uint64_t *rc,
                     struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	uint64_t idx = cluster / s->rb_entries;
	if (idx < sh->nidx && sh->copy[idx]) {
		*rc = qcow2_rb_get(s, sh->copy[idx], cluster % s->rb_entries);
		return 0;
	}
	return qcow2_get_refcount(s, cluster, rc, err);
}

static int add_one(struct qcow2_shadow *sh, uint64_t cluster, int delta, struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	uint64_t idx = cluster / s->rb_entries, i = cluster % s->rb_entries;
	int r = ensure_copy(sh, idx, err);
	if (r < 0)
		return r;
	uint8_t *rb = sh->copy[idx];
	uint64_t v = qcow2_rb_get(s, rb, i);
	if (delta < 0 && v < (uint64_t)-delta)
		return vt_error_set(err, EIO, s->b->filename, "metadata update",
		                    "refcount of cluster %llu would drop below 0 (the image needs "
		                    "qemu-img check -r all)", (unsigned long long)cluster);
	if (delta > 0 && s->refcount_max - v < (uint64_t)delta)
		return vt_error_set(err, ERANGE, s->b->filename, "metadata update",
		                    "refcount of cluster %llu would exceed %llu",
		                    (unsigned long long)cluster, (unsigned long long)s->refcount_max);
	/* A count that drops to 0 frees nothing the allocator may hand out here: the live
	 * state still uses the cluster until the switch. */
	qcow2_rb_set(s, rb, i, v + (uint64_t)(int64_t)delta);
	return 0;
}

int qcow2_shadow_add(struct qcow2_shadow *sh, uint64_t off, uint64_t len, int delta,
                     struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	if (!len)
		return 0;
	uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;
	for (uint64_t c = first; c <= last; c++) {
		int r = add_one(sh, c, delta, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int qcow2_shadow_alloc(struct qcow2_shadow *sh, uint64_t n, uint64_t *off,
                       struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	uint64_t start = sh->hint, run = 0, first_free = UINT64_MAX;
	int r;

	while (run < n) {
		uint64_t c = start + run, live, now;
		if (c >= (1ull << (56 - s->cluster_bits)))
			return vt_error_set(err, EFBIG, s->b->filename, "allocate cluster",
			                    "image file would exceed the format's limit");
		if ((r = qcow2_get_refcount(s, c, &live, err)) < 0 ||
		    (r = qcow2_shadow_get(sh, c, &now, err)) < 0)
			return r;
		if (!live && !now && first_free == UINT64_MAX)
			first_free = c;
		if (live || now) {
			start = c + 1;
			run = 0;
		} else {
			run++;
		}
	}
	/* Free by the counts yet known metadata: the image is damaged. */
	if ((r = qcow2_check_overlap(s, start * s->cs, n * s->cs, err)) < 0 ||
	    (r = qcow2_shadow_add(sh, start * s->cs, n * s->cs, 1, err)) < 0)
		return r;
	sh->hint = first_free < start ? first_free : start + n;
	*off = start * s->cs;
	return 0;
}

int qcow2_shadow_write(struct qcow2_shadow *sh, uint64_t off, uint8_t *buf, uint64_t len,
                       struct vt_error *err)
{
	if (sh->nw == sh->capw) {
		size_t cap = sh->capw ? sh->capw * 2 : 16;
		struct shadow_write *w = realloc(sh->w, cap * sizeof(*w));
		if (!w) {
			free(buf);
			return vt_error_set(err, ENOMEM, sh->s->b->filename, "metadata update", NULL);
		}
		sh->w = w;
		sh->capw = cap;
	}
	sh->w[sh->nw++] = (struct shadow_write){ off, len, buf };
	return 0;
}

/* Refcount table entries the new structure needs: up to the last block it has. */
static uint64_t entries_needed(const struct qcow2_shadow *sh)
{
	const struct qcow2 *s = sh->s;
	uint64_t n = 0;
	for (uint64_t i = 0; i < s->rt_entries; i++)
		if (s->rt[i])
			n = i + 1;
	for (uint64_t i = n; i < sh->nidx; i++)
		if (sh->copy[i])
			n = i + 1;
	return n;
}

/* Every copied block gets a cluster, and the new table one big enough for them all;
 * placing them changes counts, which may copy more blocks: repeat until stable. */
static int place_structure(struct qcow2_shadow *sh, uint64_t *table_off, uint64_t *clusters,
                           struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	uint64_t per_cluster = s->cs / 8;
	int r;

	*table_off = *clusters = 0;
	for (;;) {
		bool placed = false;
		for (uint64_t i = 0; i < sh->nidx; i++) {
			if (sh->copy[i] && !sh->place[i]) {
				if ((r = qcow2_shadow_alloc(sh, 1, &sh->place[i], err)) < 0)
					return r;
				placed = true;
			}
		}
		if (placed)
			continue;
		uint64_t need = entries_needed(sh);
		if (*clusters && *clusters * per_cluster >= need)
			return 0;
		if (*clusters && (r = qcow2_shadow_add(sh, *table_off, *clusters * s->cs, -1, err)) < 0)
			return r;
		/* Never smaller than the live table; room for a few more blocks. */
		uint64_t want = (need + 8 + per_cluster - 1) / per_cluster;
		if (want < s->rt_clusters)
			want = s->rt_clusters;
		if (want * s->cs > QCOW2_MAX_REFTABLE_BYTES)
			return vt_error_set(err, EFBIG, s->b->filename, "metadata update",
			                    "Reference count table too large");
		*clusters = want;
		if ((r = qcow2_shadow_alloc(sh, want, table_off, err)) < 0)
			return r;
	}
}

static int cmp_write(const void *a, const void *b)
{
	const struct shadow_write *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

int qcow2_shadow_commit(struct qcow2_shadow *sh, const struct qcow2_shadow_header *h,
                        uint64_t *l1, struct vt_error *err)
{
	struct qcow2 *s = sh->s;
	uint64_t table_off, clusters, *rt = NULL;
	uint8_t *raw = NULL;
	bool *l1_dirty = NULL;
	int r;

	/* The live refcount table is not part of the new structure. */
	if ((r = qcow2_shadow_add(sh, s->rt_offset, (uint64_t)s->rt_clusters * s->cs, -1,
	                          err)) < 0 ||
	    (r = place_structure(sh, &table_off, &clusters, err)) < 0)
		goto out;
	uint64_t entries = clusters * s->cs / 8;
	rt = calloc(entries, 8);
	raw = qcow2_alloc_buf(clusters * s->cs);
	l1_dirty = calloc(h->l1_size + 1, sizeof(bool));
	if (!rt || !raw || !l1_dirty) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "metadata update", NULL);
		goto out;
	}
	for (uint64_t i = 0; i < entries; i++) {
		if (i < sh->nidx && sh->copy[i])
			rt[i] = sh->place[i];
		else if (i < s->rt_entries)
			rt[i] = s->rt[i];
		qcow2_put_be64(raw + i * 8, rt[i]);
	}
	/* Everything new, in file order; then durable; then the switch, durable. */
	if (sh->nw)
		qsort(sh->w, sh->nw, sizeof(*sh->w), cmp_write);
	for (size_t i = 0; i < sh->nw && r == 0; i++)
		r = blk_file_pwrite(s->b->file, sh->w[i].off, sh->w[i].buf, sh->w[i].len, err);
	for (uint64_t i = 0; i < sh->nidx && r == 0; i++)
		if (sh->copy[i])
			r = blk_file_pwrite(s->b->file, sh->place[i], sh->copy[i], s->cs, err);
	if (r < 0 || (r = blk_file_pwrite(s->b->file, table_off, raw, clusters * s->cs, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint8_t *p = sh->hdr;
	qcow2_put_be64(p + 24, h->size);
	qcow2_put_be32(p + 36, h->l1_size);
	qcow2_put_be64(p + 40, h->l1_offset);
	qcow2_put_be64(p + 48, table_off);
	qcow2_put_be32(p + 56, (uint32_t)clusters);
	qcow2_put_be32(p + 60, h->nb_snapshots);
	qcow2_put_be64(p + 64, h->snapshots_offset);
	if ((r = blk_file_pwrite(s->b->file, 24, p + 24, 48, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;

	/* The new state is the image: adopt it. No cached table may outlive the clusters
	 * the switch released. */
	free(s->rt);
	s->rt = rt;
	rt = NULL;
	s->rt_offset = table_off;
	s->rt_clusters = (uint32_t)clusters;
	s->rt_entries = entries;
	free(s->l1);
	free(s->l1_dirty);
	s->l1 = l1;
	l1 = NULL;
	s->l1_dirty = l1_dirty;
	l1_dirty = NULL;
	s->l1_any_dirty = false;
	s->l1_size = h->l1_size;
	s->l1_offset = h->l1_offset;
	s->nb_snapshots = h->nb_snapshots;
	s->snapshots_offset = h->snapshots_offset;
	s->b->size = h->size;
	qcow2_cache_forget_all(s->l2c);
	qcow2_cache_forget_all(s->rbc);
	qcow2_meta_changed(s);
	s->free_hint = 0;
out:
	free(rt);
	free(raw);
	free(l1_dirty);
	free(l1);
	shadow_free(sh);
	return r;
}
