/* The qcow2 metadata cache: one instance holds L2 tables, another refcount blocks.
 *
 * Tables are changed in memory and written back later (at a flush, or when a dirty table
 * is evicted), so a burst of allocations costs one write per table instead of one per
 * entry. Write-back is where crash consistency is decided, so each cache carries the
 * ordering its tables need (qemu's rules, specs/qcow2.md §14):
 *   - `depends`: another cache whose dirty tables must be durable before any of ours is
 *     written (an L2 table that maps a new cluster needs the cluster's refcount first;
 *     a refcount block that drops a reference needs the L2 table that dropped it);
 *   - `depends_on_flush`: data written to the file must be durable before any of our
 *     tables is written (an L2 entry must never point at a cluster whose contents did
 *     not make it to the disk).
 * Both are satisfied by writing the dependency and calling fdatasync, then cleared.
 * Callers hold the image lock; a table pointer is valid until the next call that can
 * evict (get, get_empty), unless the table is pinned. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cache_entry {
	uint64_t offset;    /* host offset of the table; 0 = slot unused */
	uint8_t *data;
	int32_t next;       /* hash chain */
	unsigned pins;
	bool dirty;
	bool referenced;    /* CLOCK: used since the hand last passed */
};

struct qcow2_cache {
	struct qcow2 *s;
	const char *what;           /* "L2 table", "refcount block": for messages */
	uint32_t nslots, used, hand;
	struct cache_entry *e;
	int32_t *bucket;            /* heads of the hash chains, -1 = empty */
	uint32_t bucket_mask;
	uint32_t ndirty;
	struct qcow2_cache *depends;
	bool depends_on_flush;
};

static uint32_t hash_offset(const struct qcow2_cache *c, uint64_t off)
{
	uint64_t k = off >> c->s->cluster_bits;
	k *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(k >> 32) & c->bucket_mask;
}

int qcow2_cache_create(struct qcow2 *s, uint32_t nslots, const char *what,
                       struct qcow2_cache **out, struct vt_error *err)
{
	struct qcow2_cache *c = calloc(1, sizeof(*c));
	uint32_t nb = 1;
	while (nb < 2 * nslots)
		nb <<= 1;
	if (c) {
		c->e = calloc(nslots, sizeof(*c->e));
		c->bucket = malloc(nb * sizeof(*c->bucket));
	}
	if (!c || !c->e || !c->bucket) {
		if (c) {
			free(c->e);
			free(c->bucket);
		}
		free(c);
		return vt_error_set(err, ENOMEM, s->b->filename, "open", "no memory for the %s cache",
		                    what);
	}
	memset(c->bucket, 0xff, nb * sizeof(*c->bucket));
	c->s = s;
	c->what = what;
	c->nslots = nslots;
	c->bucket_mask = nb - 1;
	*out = c;
	return 0;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; i < c->used; i++)
		free(c->e[i].data);
	free(c->e);
	free(c->bucket);
	free(c);
}

static struct cache_entry *find(struct qcow2_cache *c, uint64_t off)
{
	for (int32_t i = c->bucket[hash_offset(c, off)]; i >= 0; i = c->e[i].next)
		if (c->e[i].offset == off)
			return &c->e[i];
	return NULL;
}

static void unhash(struct qcow2_cache *c, struct cache_entry *x)
{
	int32_t *p = &c->bucket[hash_offset(c, x->offset)];
	int32_t idx = (int32_t)(x - c->e);
	while (*p >= 0 && *p != idx)
		p = &c->e[*p].next;
	if (*p == idx)
		*p = x->next;
	x->offset = 0;
	x->next = -1;
}

static void rehash(struct qcow2_cache *c, struct cache_entry *x, uint64_t off)
{
	uint32_t h = hash_offset(c, off);
	x->offset = off;
	x->next = c->bucket[h];
	c->bucket[h] = (int32_t)(x - c->e);
}

int qcow2_cache_sync_file(struct qcow2 *s, struct vt_error *err)
{
	return blk_file_flush(s->b->file, err);
}

/* Make what our tables depend on durable. */
static int satisfy_dependencies(struct qcow2_cache *c, struct vt_error *err)
{
	int r;
	if (c->depends) {
		struct qcow2_cache *d = c->depends;
		c->depends = NULL;
		if ((r = qcow2_cache_write(d, err)) < 0)
			return r;
		c->depends_on_flush = true; /* d's writes must be durable too */
	}
	if (c->depends_on_flush) {
		if ((r = qcow2_cache_sync_file(c->s, err)) < 0)
			return r;
		c->depends_on_flush = false;
	}
	return 0;
}

static int write_entry(struct qcow2_cache *c, struct cache_entry *x, struct vt_error *err)
{
	int r;
	if (!x->dirty)
		return 0;
	if ((r = satisfy_dependencies(c, err)) < 0 ||
	    (r = blk_file_pwrite(c->s->b->file, x->offset, x->data, c->s->cs, err)) < 0)
		return r;
	x->dirty = false;
	c->ndirty--;
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	const struct cache_entry *x = *(struct cache_entry *const *)a;
	const struct cache_entry *y = *(struct cache_entry *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

#define WRITE_IOV 64

/* Write every dirty table, in file order, adjacent ones with one call. */
int qcow2_cache_write(struct qcow2_cache *c, struct vt_error *err)
{
	if (!c->ndirty)
		return 0;
	int r = satisfy_dependencies(c, err);
	if (r < 0)
		return r;
	struct cache_entry **d = malloc(c->ndirty * sizeof(*d));
	if (!d)
		return vt_error_set(err, ENOMEM, c->s->b->filename, "write metadata", NULL);
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->used && n < c->ndirty; i++)
		if (c->e[i].offset && c->e[i].dirty)
			d[n++] = &c->e[i];
	qsort(d, n, sizeof(*d), by_offset);
	for (uint32_t i = 0; i < n && r == 0;) {
		struct iovec iov[WRITE_IOV];
		uint32_t k = 0;
		do {
			iov[k] = (struct iovec){ d[i + k]->data, c->s->cs };
			k++;
		} while (i + k < n && k < WRITE_IOV &&
		         d[i + k]->offset == d[i]->offset + k * c->s->cs);
		r = blk_file_pwritev(c->s->b->file, d[i]->offset, iov, (int)k, err);
		for (uint32_t j = 0; r == 0 && j < k; j++)
			d[i + j]->dirty = false;
		if (r == 0)
			c->ndirty -= k;
		i += k;
	}
	free(d);
	return r;
}

bool qcow2_cache_dirty(const struct qcow2_cache *c)
{
	return c->ndirty || c->depends_on_flush;
}

/* A slot for a new table: an unused one, or the CLOCK victim (written back first). */
static int take_slot(struct qcow2_cache *c, struct cache_entry **out, struct vt_error *err)
{
	if (c->used < c->nslots) {
		struct cache_entry *x = &c->e[c->used];
		if (!(x->data = qcow2_alloc_buf(c->s->cs)))
			return vt_error_set(err, ENOMEM, c->s->b->filename, "cache metadata", NULL);
		c->used++;
		x->next = -1;
		*out = x;
		return 0;
	}
	for (uint64_t tries = 0; tries < 2ull * c->nslots + 1; tries++) {
		struct cache_entry *x = &c->e[c->hand];
		c->hand = (c->hand + 1) % c->nslots;
		if (x->pins)
			continue;
		if (x->referenced) {
			x->referenced = false;
			continue;
		}
		int r = write_entry(c, x, err);
		if (r < 0)
			return r;
		if (x->offset)
			unhash(c, x);
		*out = x;
		return 0;
	}
	return vt_error_set(err, ENOSPC, c->s->b->filename, "cache metadata",
	                    "every %s in the cache is in use", c->what);
}

int qcow2_cache_get(struct qcow2_cache *c, uint64_t off, uint8_t **table, struct vt_error *err)
{
	struct cache_entry *x = find(c, off);
	if (x) {
		x->referenced = true;
		*table = x->data;
		return 0;
	}
	int r = take_slot(c, &x, err);
	if (r < 0)
		return r;
	if ((r = blk_file_pread(c->s->b->file, off, x->data, c->s->cs, err)) < 0)
		return r; /* the slot stays free (offset 0) */
	rehash(c, x, off);
	x->referenced = true;
	*table = x->data;
	return 0;
}

int qcow2_cache_get_empty(struct qcow2_cache *c, uint64_t off, uint8_t **table,
                          struct vt_error *err)
{
	struct cache_entry *x = find(c, off);
	int r;
	if (!x) {
		if ((r = take_slot(c, &x, err)) < 0)
			return r;
		rehash(c, x, off);
	}
	memset(x->data, 0, c->s->cs);
	x->referenced = true;
	if (!x->dirty) {
		x->dirty = true;
		c->ndirty++;
	}
	*table = x->data;
	return 0;
}

static struct cache_entry *entry_of(struct qcow2_cache *c, const uint8_t *table)
{
	for (uint32_t i = 0; i < c->used; i++)
		if (c->e[i].data == table)
			return &c->e[i];
	return NULL;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint64_t off)
{
	struct cache_entry *x = find(c, off);
	if (x && !x->dirty) {
		x->dirty = true;
		c->ndirty++;
	}
}

void qcow2_cache_pin(struct qcow2_cache *c, const uint8_t *table)
{
	struct cache_entry *x = entry_of(c, table);
	if (x)
		x->pins++;
}

void qcow2_cache_unpin(struct qcow2_cache *c, const uint8_t *table)
{
	struct cache_entry *x = entry_of(c, table);
	if (x && x->pins)
		x->pins--;
}

int qcow2_cache_set_dependency(struct qcow2_cache *c, struct qcow2_cache *dep,
                               struct vt_error *err)
{
	int r;
	if (c->depends == dep)
		return 0;
	/* Never a cycle: if dep waits for someone, settle that first. */
	if (dep->depends && (r = qcow2_cache_write(dep->depends, err)) < 0)
		return r;
	if (dep->depends) {
		dep->depends = NULL;
		dep->depends_on_flush = true;
	}
	/* One dependency at a time: an older one is settled now. */
	if (c->depends && (r = satisfy_dependencies(c, err)) < 0)
		return r;
	c->depends = dep;
	return 0;
}

void qcow2_cache_depends_on_flush(struct qcow2_cache *c)
{
	c->depends_on_flush = true;
}

void qcow2_cache_discard(struct qcow2_cache *c, uint64_t off)
{
	struct cache_entry *x = find(c, off);
	if (!x)
		return;
	if (x->dirty) {
		x->dirty = false;
		c->ndirty--;
	}
	unhash(c, x);
}

void qcow2_cache_forget_all(struct qcow2_cache *c)
{
	for (uint32_t i = 0; i < c->used; i++) {
		if (c->e[i].offset)
			unhash(c, &c->e[i]);
		c->e[i].dirty = false;
	}
	c->ndirty = 0;
	c->depends = NULL;
	c->depends_on_flush = false;
}
