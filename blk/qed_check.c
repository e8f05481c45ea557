/* QED consistency check, counted as qemu-img check counts it: every table and data
 * cluster the L1/L2 tables name must be a valid offset and be named once (corruptions);
 * clusters past the header that nothing names are leaks. With fix, invalid entries are
 * cleared (corruptions fixed) and an image left consistent loses its "needs check" flag.
 * Leaks are never repaired (QED has no free-space map to return them to). */
#include "blk/qed.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct walk {
	struct qed *s;
	struct blk_check *res;
	bool fix;
	uint64_t nclusters;
	uint64_t *used;     /* one bit per cluster index */
	uint8_t *table;     /* one L2 table, as on disk */
};

/* qemu numbers clusters by offset / (cluster_size - 1), rounded: above cluster_size *
 * (cluster_size - 1) bytes of file this skips indices, which its leak count then
 * reports. Reproduced, so that the counts agree with qemu-img check's. */
static uint64_t cluster_index(const struct qed *s, uint64_t off)
{
	uint64_t cs = s->cluster_size;
	return ((off + cs - 1) & ~(cs - 1)) / (cs - 1);
}

static bool test_and_set(struct walk *w, uint64_t c)
{
	if (c >= w->nclusters)
		return false;
	bool was = w->used[c / 64] & 1ull << (c % 64);
	w->used[c / 64] |= 1ull << (c % 64);
	return was;
}

/* Mark n clusters from off used; each one already used is a corruption. */
static bool set_used(struct walk *w, uint64_t off, uint64_t n)
{
	uint64_t c = cluster_index(w->s, off), dup = 0;
	for (uint64_t i = 0; i < n; i++)
		dup += test_and_set(w, c + i);
	w->res->corruptions += dup;
	return dup == 0;
}

/* One L2 table (in w->table): returns the number of invalid entries (cleared with fix). */
static uint64_t check_l2(struct walk *w)
{
	struct qed *s = w->s;
	uint64_t invalid = 0, last = 0;
	for (uint64_t i = 0; i < s->table_nelems; i++) {
		uint64_t off = fmt_le64(w->table + i * 8);
		if (off == 0 || off == 1)
			continue;
		w->res->allocated_clusters++;
		if (last && last + s->cluster_size != off)
			w->res->fragmented_clusters++;
		last = off;
		if (!qed_cluster_offset_ok(s, off)) {
			if (w->fix) {
				fmt_put_le64(w->table + i * 8, 0);
				w->res->corruptions_fixed++;
			} else {
				w->res->corruptions++;
			}
			invalid++;
			continue;
		}
		set_used(w, off, 1);
	}
	return invalid;
}

static int write_l1(struct qed *s, struct vt_error *err)
{
	uint8_t *raw = malloc(s->table_bytes);
	if (!raw)
		return vt_error_set(err, ENOMEM, s->b->filename, "check", NULL);
	for (uint64_t i = 0; i < s->table_nelems; i++)
		fmt_put_le64(raw + i * 8, s->l1[i]);
	int r = blk_file_pwrite(s->b->file, s->l1_offset, raw, s->table_bytes, err);
	free(raw);
	return r;
}

static int check_l1(struct walk *w, struct vt_error *err)
{
	struct qed *s = w->s;
	uint64_t invalid_l1 = 0;
	int last_error = 0;

	set_used(w, s->l1_offset, s->table_size);
	for (uint64_t i = 0; i < s->table_nelems; i++) {
		uint64_t off = s->l1[i];
		if (!off)
			continue;
		if (!qed_table_offset_ok(s, off)) {
			if (w->fix) {
				s->l1[i] = 0;
				w->res->corruptions_fixed++;
			} else {
				w->res->corruptions++;
			}
			invalid_l1++;
			continue;
		}
		if (!set_used(w, off, s->table_size))
			continue; /* a table shared with something else: not walked again */
		int r = blk_file_pread(s->b->file, off, w->table, s->table_bytes, err);
		if (r == 0 && check_l2(w) && w->fix)
			r = blk_file_pwrite(s->b->file, off, w->table, s->table_bytes, err);
		if (r < 0) {
			w->res->check_errors++;
			last_error = r;
		}
	}
	if (invalid_l1 && w->fix) {
		int r = write_l1(s, err);
		if (r < 0) {
			w->res->check_errors++;
			last_error = r;
		}
	}
	return last_error;
}

/* A consistent (or repaired) image no longer needs a check: fixes reach the disk first. */
static int mark_clean(struct qed *s, struct blk_check *res, struct vt_error *err)
{
	if (res->corruptions || res->check_errors || !(s->features & QED_F_NEED_CHECK))
		return 0;
	int r = blk_file_flush(s->b->file, err);
	if (r == 0) {
		s->features &= ~QED_F_NEED_CHECK;
		r = qed_write_header_u64(s, offsetof(struct qed_disk_header, features), s->features,
		                         err);
	}
	if (r == 0)
		r = blk_file_flush(s->b->file, err);
	return r;
}

int qed_check_locked(struct qed *s, bool fix, struct blk_check *res, struct vt_error *err)
{
	struct walk w = { .s = s, .res = res, .fix = fix };
	w.nclusters = cluster_index(s, s->alloc_end);
	w.used = calloc(w.nclusters / 64 + 1, 8);
	w.table = malloc(s->table_bytes);
	if (!w.used || !w.table) {
		free(w.used);
		free(w.table);
		res->check_errors++;
		return vt_error_set(err, ENOMEM, s->b->filename, "check", NULL);
	}
	res->total_clusters = (s->image_size + s->cluster_size - 1) / s->cluster_size;
	int r = check_l1(&w, err);
	if (r == 0) {
		/* Leaks only count when every table could be read. */
		for (uint64_t c = s->header_size; c < w.nclusters; c++)
			if (!(w.used[c / 64] & 1ull << (c % 64)))
				res->leaks++;
		if (fix)
			r = mark_clean(s, res, err);
	}
	if (fix)
		qed_cache_drop(s);
	free(w.used);
	free(w.table);
	return r;
}

int qed_check(struct blk *b, unsigned fix, struct blk_check *res,
              void (*report)(void *, const char *), void *opaque, struct vt_error *err)
{
	struct qed *s = b->opaque;
	pthread_mutex_lock(&s->lock);
	int r = qed_check_locked(s, fix != 0, res, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}
