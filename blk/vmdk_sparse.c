/* VMDK sparse extents: the KDMV (hosted sparse, streamOptimized) and COWD (ESX) headers,
 * the footer of VMware's streams, the grain directory (and its redundant copy), a cache
 * of grain tables, grain mapping, allocation at the end of the extent file, and reads,
 * writes, zeroing and block status of uncompressed grains. Compressed grains are in
 * vmdk_stream.c.
 *
 * Everything in a header is untrusted: sizes are checked before anything is allocated
 * (the grain directory must lie inside its file, so its size is bounded by the file's),
 * every directory entry must name a table inside the file, and a grain table entry that
 * points past the end of the file or into the header, descriptor, directories or tables
 * is refused when it is used -- qemu would read (and write) there. */
#include "blk/vmdk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...) vt_error_set(err, EINVAL, e->path, "open", __VA_ARGS__)
#define FIELD(h, f) ((h) + offsetof(struct vmdk4_header, f))

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static uint64_t gt_sectors(const struct vmdk_extent *e)
{
	return div_up((uint64_t)e->gtes * 4, VMDK_SECTOR);
}

/* ---- metadata ranges ---------------------------------------------------------------- */

struct range_vec {
	struct vmdk_range *v;
	size_t n, cap;
};

static int range_add(struct range_vec *rv, uint64_t start, uint64_t len)
{
	if (!len)
		return 0;
	if (rv->n == rv->cap) {
		size_t cap = rv->cap ? rv->cap * 2 : 16;
		struct vmdk_range *v = realloc(rv->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rv->v = v;
		rv->cap = cap;
	}
	rv->v[rv->n++] = (struct vmdk_range){ start, start + len < start ? UINT64_MAX : start + len };
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct vmdk_range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Header, embedded descriptor, both directories and every table they name, sorted and
 * merged, so that a grain can be checked against them with one binary search. */
static int build_meta(struct vmdk_extent *e, uint64_t desc_off, uint64_t desc_sectors,
                      struct vt_error *err)
{
	struct range_vec rv = { 0 };
	uint64_t gd_sectors = div_up((uint64_t)e->gd_entries * 4, VMDK_SECTOR);
	int r = range_add(&rv, 0, 1);
	if (r == 0 && desc_off)
		r = range_add(&rv, desc_off, desc_sectors);
	if (r == 0)
		r = range_add(&rv, e->gd_offset, gd_sectors);
	if (r == 0 && e->rgd)
		r = range_add(&rv, e->rgd_offset, gd_sectors);
	for (uint32_t i = 0; r == 0 && i < e->gd_entries; i++) {
		if (e->gd[i])
			r = range_add(&rv, e->gd[i], gt_sectors(e));
		if (r == 0 && e->rgd && e->rgd[i])
			r = range_add(&rv, e->rgd[i], gt_sectors(e));
	}
	if (r < 0) {
		free(rv.v);
		return vt_error_set(err, ENOMEM, e->path, "open", NULL);
	}
	qsort(rv.v, rv.n, sizeof(*rv.v), range_cmp);
	size_t k = 0;
	for (size_t i = 0; i < rv.n; i++) {
		if (k && rv.v[i].start <= rv.v[k - 1].end) {
			if (rv.v[i].end > rv.v[k - 1].end)
				rv.v[k - 1].end = rv.v[i].end;
		} else {
			rv.v[k++] = rv.v[i];
		}
	}
	e->meta = rv.v;
	e->n_meta = k;
	return 0;
}

bool vmdk_grain_ok(const struct vmdk_extent *e, uint64_t sector, uint64_t sectors)
{
	/* The first range that ends after sector must start at or after its end. */
	size_t lo = 0, hi = e->n_meta;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (e->meta[mid].end <= sector)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == e->n_meta || e->meta[lo].start >= sector + sectors;
}

/* ---- opening ------------------------------------------------------------------------- */

/* A grain directory of e->gd_entries at sector off; every entry names a table inside the
 * file or is 0. */
static int load_gd(struct vmdk_extent *e, uint64_t off, uint64_t fsize, const char *what,
                   uint32_t **out, struct vt_error *err)
{
	uint64_t bytes = (uint64_t)e->gd_entries * 4;
	if (off > fsize / VMDK_SECTOR || bytes > fsize - off * VMDK_SECTOR)
		return BAD("%s at sector %llu is past the end of the file", what,
		           (unsigned long long)off);
	uint32_t *gd = malloc(bytes ? bytes : 1);
	if (!gd)
		return vt_error_set(err, ENOMEM, e->path, "open", NULL);
	int r = blk_file_pread(e->file, off * VMDK_SECTOR, gd, bytes, err);
	for (uint32_t i = 0; r == 0 && i < e->gd_entries; i++) {
		gd[i] = vmdk_le32((const uint8_t *)&gd[i]);
		if (gd[i] && (gd[i] + gt_sectors(e)) * VMDK_SECTOR > fsize)
			r = BAD("grain table %u of the %s (sector %u) is past the end of the file", i,
			        what, gd[i]);
	}
	if (r < 0) {
		free(gd);
		return r;
	}
	*out = gd;
	return 0;
}

/* VMware's streams put the real header in a footer: a footer marker, the header, an
 * end-of-stream marker, in the last three sectors. */
static int read_footer(struct vmdk_extent *e, uint64_t fsize, uint8_t *hdr,
                       struct vt_error *err)
{
	uint8_t f[1536];
	uint64_t end = div_up(fsize, VMDK_SECTOR) * VMDK_SECTOR;
	if (end < sizeof(f))
		return BAD("Invalid footer");
	int r = blk_file_pread(e->file, end - sizeof(f), f, sizeof(f), err);
	if (r < 0)
		return r;
	const uint8_t *fm = f, *eos = f + 1024;
#define MK(p, field) ((p) + offsetof(struct vmdk_meta_marker, field))
	if (memcmp(f + 512, "KDMV", 4) || vmdk_le32(MK(fm, size)) != 0 ||
	    vmdk_le32(MK(fm, type)) != VMDK_MARKER_FOOTER || vmdk_le64(MK(eos, num_sectors)) ||
	    vmdk_le32(MK(eos, size)) || vmdk_le32(MK(eos, type)) != VMDK_MARKER_EOS)
		return BAD("Invalid footer");
#undef MK
	memcpy(hdr, f + 512, 512);
	return 0;
}

static int open_vmdk3(struct vmdk_extent *e, const uint8_t *h, struct vt_error *err)
{
#define F3(f) vmdk_le32(h + offsetof(struct vmdk3_header, f))
	e->vmdk3 = true;
	e->version = (int)F3(version);
	e->sectors = F3(disk_sectors);
	e->grain_sectors = F3(granularity);
	e->gd_offset = F3(gd_offset);
	e->gd_entries = F3(gd_entries);
#undef F3
	e->gtes = VMDK3_GTES;
	if (e->grain_sectors == 0 || e->grain_sectors > 0x200000)
		return BAD("Invalid granularity, image may be corrupt");
	if (e->gd_entries > VMDK_MAX_GD_ENTRIES)
		return BAD("L1 size too big");
	return 0;
}

static int open_vmdk4(struct vmdk_extent *e, const uint8_t *head, uint64_t fsize,
                      bool writable, uint64_t *desc_off, uint64_t *desc_sectors,
                      struct vt_error *err)
{
	uint8_t h[512];
	int r;
	memcpy(h, head, sizeof(h));
	if (vmdk_le64(FIELD(h, gd_offset)) == VMDK4_GD_AT_END) {
		if ((r = read_footer(e, fsize, h, err)) < 0)
			return r;
		e->footer = true;
	}
	uint32_t version = vmdk_le32(FIELD(h, version)), flags = vmdk_le32(FIELD(h, flags));
	uint64_t capacity = vmdk_le64(FIELD(h, capacity));
	uint64_t granularity = vmdk_le64(FIELD(h, granularity));
	e->version = (int)version;
	e->compressed = vmdk_le16(FIELD(h, compress_algorithm)) == VMDK4_COMPRESS_DEFLATE;
	if (version > 3)
		return vt_error_set(err, ENOTSUP, e->path, "open", "Unsupported VMDK version %u",
		                    version);
	if (version == 3 && writable && !e->compressed)
		return BAD("VMDK version 3 must be read only");
	e->gtes = vmdk_le32(FIELD(h, num_gtes_per_gt));
	if (e->gtes > 512)
		return BAD("L2 table size too big");
	/* qemu keeps gtes * granularity in 32 bits. */
	uint64_t l1_entry = (uint64_t)e->gtes * granularity;
	if ((uint32_t)l1_entry == 0)
		return BAD("L1 entry size is invalid");
	uint64_t gd_entries = div_up(capacity, l1_entry);
	e->overhead = vmdk_le64(FIELD(h, overhead));
	if (div_up(fsize, VMDK_SECTOR) < e->overhead)
		return BAD("File truncated, expecting at least %llu bytes",
		           (unsigned long long)(e->overhead * VMDK_SECTOR));
	if (granularity > 0x200000)
		return BAD("Invalid granularity, image may be corrupt");
	if (gd_entries > VMDK_MAX_GD_ENTRIES)
		return BAD("L1 size too big");
	if (capacity > INT64_MAX / VMDK_SECTOR)
		return BAD("capacity of %llu sectors is too large", (unsigned long long)capacity);
	e->sectors = capacity;
	e->grain_sectors = granularity;
	e->gd_entries = (uint32_t)gd_entries;
	e->gd_offset = vmdk_le64(FIELD(h, gd_offset));
	e->rgd_offset = flags & VMDK4_FLAG_RGD ? vmdk_le64(FIELD(h, rgd_offset)) : 0;
	e->has_marker = flags & VMDK4_FLAG_MARKER;
	e->zero_grain = flags & VMDK4_FLAG_ZERO_GRAIN;
	*desc_off = vmdk_le64(FIELD(h, desc_offset));
	*desc_sectors = vmdk_le64(FIELD(h, desc_size));
	if (writable && e->footer)
		return vt_error_set(err, ENOTSUP, e->path, "open",
		                    "a streamOptimized image with its grain directory at the end "
		                    "(VMware's layout) can only be read; convert it to write");
	if (writable && e->compressed && !e->has_marker)
		return vt_error_set(err, ENOTSUP, e->path, "open",
		                    "compressed grains without markers can only be read");
	return 0;
}

int vmdk_sparse_open(struct vmdk_extent *e, const uint8_t *head, bool writable,
                     struct vt_error *err)
{
	uint64_t fsize, desc_off = 0, desc_sectors = 0;
	int r = blk_file_size(e->file, &fsize, err);
	if (r < 0)
		return r;
	if (!memcmp(head, "COWD", 4))
		r = open_vmdk3(e, head, err);
	else
		r = open_vmdk4(e, head, fsize, writable, &desc_off, &desc_sectors, err);
	if (r < 0)
		return r;
	if (e->grain_sectors > VMDK_MAX_GRAIN_SECTORS)
		return BAD("grains of %llu sectors are larger than vtool supports (%u)",
		           (unsigned long long)e->grain_sectors, VMDK_MAX_GRAIN_SECTORS);
	if (e->start + e->sectors > INT64_MAX / VMDK_SECTOR)
		return BAD("the extents add up to more than 8 EiB");
	if ((r = load_gd(e, e->gd_offset, fsize, "grain directory", &e->gd, err)) < 0)
		return r;
	if (e->rgd_offset > INT64_MAX / VMDK_SECTOR)
		return BAD("Could not read l1 backup table from extent '%s'", e->path);
	if (e->rgd_offset) {
		/* The redundant copy is only written: a broken one matters only to writers. */
		r = load_gd(e, e->rgd_offset, fsize, "redundant grain directory", &e->rgd, err);
		if (r < 0 && writable)
			return r;
		if (r < 0)
			e->rgd_offset = 0;
	}
	if ((r = build_meta(e, desc_off, desc_sectors, err)) < 0)
		return r;
	e->end_sectors = div_up(fsize, VMDK_SECTOR);
	e->next_sector = div_up(e->end_sectors, e->grain_sectors) * e->grain_sectors;
	return 0;
}

void vmdk_sparse_close(struct vmdk_extent *e)
{
	free(e->gd);
	free(e->rgd);
	free(e->meta);
}

/* ---- grain tables -------------------------------------------------------------------- */

void vmdk_cache_drop(struct vmdk *s)
{
	for (int i = 0; i < VMDK_GT_CACHE; i++) {
		free(s->cache[i].entries);
		s->cache[i] = (struct vmdk_gt_slot){ 0 };
	}
}

static int gt_load(struct vmdk *s, const struct vmdk_extent *e, uint64_t sector,
                   uint32_t **out, struct vt_error *err)
{
	struct vmdk_gt_slot *victim = &s->cache[0];
	for (int i = 0; i < VMDK_GT_CACHE; i++) {
		struct vmdk_gt_slot *c = &s->cache[i];
		if (c->ext == e && c->sector == sector) {
			c->lru = ++s->lru_clock;
			*out = c->entries;
			return 0;
		}
		if (!c->ext || c->lru < victim->lru)
			victim = c;
	}
	if (!victim->entries && !(victim->entries = malloc(VMDK3_GTES * 4)))
		return vt_error_set(err, ENOMEM, e->path, "read grain table", NULL);
	victim->ext = NULL;
	int r = blk_file_pread(e->file, sector * VMDK_SECTOR, victim->entries, (size_t)e->gtes * 4,
	                       err);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < e->gtes; i++)
		victim->entries[i] = vmdk_le32((const uint8_t *)&victim->entries[i]);
	victim->ext = e;
	victim->sector = sector;
	victim->lru = ++s->lru_clock;
	*out = victim->entries;
	return 0;
}

int vmdk_gte(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint32_t *gte,
             struct vt_error *err)
{
	uint64_t i = g / e->gtes;
	uint32_t *t = NULL;
	*gte = 0;
	if (i >= e->gd_entries)
		return vt_error_set(err, EIO, s->b->filename, "map",
		                    "grain %llu of %s is beyond its grain directory",
		                    (unsigned long long)g, e->path);
	if (!e->gd[i])
		return 1;
	int r = gt_load(s, e, e->gd[i], &t, err);
	if (r == 0)
		*gte = t[g % e->gtes];
	return r;
}

int vmdk_lookup(struct vmdk *s, struct vmdk_extent *e, uint64_t g, struct vmdk_map *m,
                struct vt_error *err)
{
	uint32_t gte;
	int r = vmdk_gte(s, e, g, &gte, err);
	*m = (struct vmdk_map){ .state = VMDK_UNALLOC, .has_gt = r == 0 };
	if (r < 0)
		return r;
	if (r == 1 || gte == 0)
		return 0;
	if (gte == 1 && e->zero_grain) {
		m->state = VMDK_ZEROED;
		return 0;
	}
	uint64_t sector = (e->start + g * e->grain_sectors);
	if (gte >= e->end_sectors)
		return vt_error_set(err, EIO, s->b->filename, "read",
		                    "cluster offset for sector %llu points after EOF",
		                    (unsigned long long)sector);
	if (!vmdk_grain_ok(e, gte, e->compressed ? 1 : e->grain_sectors))
		return vt_error_set(err, EIO, s->b->filename, "read",
		                    "cluster offset for sector %llu points into the image's metadata",
		                    (unsigned long long)sector);
	m->state = e->compressed ? VMDK_COMPRESSED : VMDK_DATA;
	m->sector = gte;
	return 0;
}

int vmdk_set_gte(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint32_t value,
                 struct vt_error *err)
{
	uint64_t i = g / e->gtes, idx = g % e->gtes;
	uint8_t b[4];
	if (i >= e->gd_entries || !e->gd[i])
		return vt_error_set(err, EIO, s->b->filename, "write", "grain %llu has no grain table",
		                    (unsigned long long)g);
	vmdk_put_le32(b, value);
	int r = blk_file_pwrite(e->file, e->gd[i] * (uint64_t)VMDK_SECTOR + idx * 4, b, 4, err);
	if (r == 0 && e->rgd && e->rgd[i])
		r = blk_file_pwrite(e->file, e->rgd[i] * (uint64_t)VMDK_SECTOR + idx * 4, b, 4, err);
	for (int k = 0; k < VMDK_GT_CACHE; k++) {
		struct vmdk_gt_slot *c = &s->cache[k];
		if (c->ext == e && (c->sector == e->gd[i] || (e->rgd && c->sector == e->rgd[i])))
			c->entries[idx] = value;
	}
	return r;
}

int vmdk_alloc(struct vmdk *s, struct vmdk_extent *e, uint64_t n, uint64_t *sector,
               struct vt_error *err)
{
	if (e->next_sector + n > VMDK_EXTENT_MAX_SECTORS)
		return vt_error_set(err, ENOSPC, s->b->filename, "write",
		                    "%s is full: grain tables address at most 2 TiB of it", e->path);
	*sector = e->next_sector;
	e->next_sector += n;
	if (e->next_sector > e->end_sectors)
		e->end_sectors = e->next_sector;
	return 0;
}

/* ---- uncompressed grains ------------------------------------------------------------- */

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Following grains that read like grain g (same state; for data, host-contiguous), up to
 * len bytes from `in` in g. Lock held. */
static uint64_t extend_run(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint64_t in,
                           const struct vmdk_map *m, uint64_t len)
{
	uint64_t gb = vmdk_grain_bytes(e), run = min64(len, gb - in);
	for (uint64_t g2 = g + 1; run < len; g2++) {
		struct vmdk_map m2;
		if (vmdk_inflight_busy(s, e, g2, g2 + 1) || vmdk_lookup(s, e, g2, &m2, NULL) < 0 ||
		    m2.state != m->state ||
		    (m->state == VMDK_DATA && m2.sector != m->sector + (g2 - g) * e->grain_sectors) ||
		    (e->compressed && vmdk_stream_pending(s, e, g2)))
			break;
		run += min64(len - run, gb);
	}
	return run;
}

int vmdk_sparse_read(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                     const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                     struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	while (len) {
		uint64_t g = off / gb, in = off % gb, run = 0;
		struct vmdk_map m;
		pthread_mutex_lock(&s->lock);
		vmdk_inflight_wait(s, e, g, g + 1);
		int r = vmdk_lookup(s, e, g, &m, err);
		if (r == 0)
			run = extend_run(s, e, g, in, &m, len);
		if (r == 0 && m.state == VMDK_UNALLOC)
			r = vmdk_check_parent_cid(s, err);
		pthread_mutex_unlock(&s->lock);
		if (r < 0)
			return r;
		if (m.state == VMDK_DATA)
			r = vmdk_file_iov(e->file, false, m.sector * VMDK_SECTOR + in, iov, iovcnt, skip,
			                  run, err);
		else if (m.state == VMDK_UNALLOC)
			r = vmdk_backing_iov(s, (e->start * VMDK_SECTOR) + off, iov, iovcnt, skip, run, err);
		else
			vt_iov_memset(iov, iovcnt, skip, 0, run);
		if (r < 0)
			return r;
		off += run;
		skip += run;
		len -= run;
	}
	return 0;
}

/* Fill and write new grains at sector (allocated, [g, g + k) in flight, by the caller):
 * one partly written grain g (the rest from the backing file or zeros), or k whole ones.
 * The data is flushed before the grain tables point at it. */
static int write_new(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint64_t k,
                     uint64_t sector, uint64_t in, uint64_t n, const struct vmdk_map *m,
                     const struct iovec *iov, int iovcnt, size_t skip, struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	int r = 0;
	if (in == 0 && n == k * gb) {
		r = vmdk_file_iov(e->file, true, sector * VMDK_SECTOR, iov, iovcnt, skip, n, err);
	} else {
		uint8_t *buf = vmdk_scratch(1, gb);
		if (!buf)
			r = vt_error_set(err, ENOMEM, s->b->filename, "write", NULL);
		else if (m->state == VMDK_UNALLOC)
			r = vmdk_read_backing(s, (e->start + g * e->grain_sectors) * VMDK_SECTOR, buf, gb, err);
		else
			memset(buf, 0, gb);
		if (r == 0) {
			vt_iov_to_buf(iov, iovcnt, skip, buf + in, n);
			r = blk_file_pwrite(e->file, sector * VMDK_SECTOR, buf, gb, err);
		}
	}
	if (r == 0)
		r = blk_file_flush(e->file, err);
	pthread_mutex_lock(&s->lock);
	for (uint64_t i = 0; r == 0 && i < k; i++)
		r = vmdk_set_gte(s, e, g + i, (uint32_t)(sector + i * e->grain_sectors), err);
	vmdk_inflight_del(s, e, g, g + k);
	pthread_mutex_unlock(&s->lock);
	return r;
}

int vmdk_sparse_write(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                      const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                      struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	while (len) {
		uint64_t g = off / gb, in = off % gb, n = min64(len, gb - in), run = n;
		struct vmdk_map m;
		pthread_mutex_lock(&s->lock);
		vmdk_inflight_wait(s, e, g, g + 1);
		int r = vmdk_lookup(s, e, g, &m, err);
		if (r == 0 && m.state == VMDK_DATA) {
			run = extend_run(s, e, g, in, &m, len);
			pthread_mutex_unlock(&s->lock);
			r = vmdk_file_iov(e->file, true, m.sector * VMDK_SECTOR + in, iov, iovcnt, skip,
			                  run, err);
		} else if (r == 0 && !m.has_gt) {
			pthread_mutex_unlock(&s->lock);
			r = vt_error_set(err, ENOTSUP, s->b->filename, "write",
			                 "grain %llu of %s has no grain table (vtool does not add grain "
			                 "tables to an image)", (unsigned long long)g, e->path);
		} else if (r == 0 && (r = vmdk_check_parent_cid(s, err)) == 0) {
			uint64_t k = 1;
			if (in == 0 && n == gb) {
				/* Whole new grains: as many as follow, allocated and written together. */
				for (; k < VMDK_MAX_RUN && len >= (k + 1) * gb; k++) {
					struct vmdk_map m2;
					if (vmdk_inflight_busy(s, e, g + k, g + k + 1) ||
					    vmdk_lookup(s, e, g + k, &m2, NULL) < 0 || !m2.has_gt ||
					    (m2.state != VMDK_UNALLOC && m2.state != VMDK_ZEROED))
						break;
				}
				run = k * gb;
			}
			/* Allocated and marked in flight before the lock goes: nobody else can
			 * allocate these grains meanwhile. */
			uint64_t sector = 0;
			r = vmdk_alloc(s, e, k * e->grain_sectors, &sector, err);
			if (r == 0)
				r = vmdk_inflight_add(s, e, g, g + k, err);
			pthread_mutex_unlock(&s->lock);
			if (r == 0)
				r = write_new(s, e, g, k, sector, in, run, &m, iov, iovcnt, skip, err);
		} else {
			pthread_mutex_unlock(&s->lock);
		}
		if (r < 0)
			return r;
		off += run;
		skip += run;
		len -= run;
	}
	return 0;
}

int vmdk_sparse_zero(struct vmdk *s, struct vmdk_extent *e, uint64_t off, uint64_t len,
                     struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	while (len) {
		uint64_t g = off / gb, in = off % gb, glen = vmdk_grain_len(e, g);
		uint64_t n = min64(len, glen - in);
		struct vmdk_map m;
		bool write = false, punch = false;
		pthread_mutex_lock(&s->lock);
		vmdk_inflight_wait(s, e, g, g + 1);
		uint8_t *pend = e->compressed ? vmdk_stream_pending_buf(s, e, g) : NULL;
		int r = 0;
		if (pend)
			memset(pend + in, 0, n); /* still in memory: zero it there */
		else if ((r = vmdk_lookup(s, e, g, &m, err)) < 0)
			;
		else if (in == 0 && n == glen && e->zero_grain && m.has_gt)
			r = m.state == VMDK_ZEROED ? 0 : vmdk_set_gte(s, e, g, 1, err);
		else if (m.state == VMDK_ZEROED || (m.state == VMDK_UNALLOC && !s->b->backing))
			;
		else if (m.state == VMDK_DATA)
			punch = true;
		else
			write = true;
		pthread_mutex_unlock(&s->lock);
		if (r == 0 && punch)
			r = blk_file_zero(e->file, m.sector * VMDK_SECTOR + in, n, true, err);
		if (r == 0 && write) {
			uint8_t *z = calloc(1, n);
			struct iovec zv = { z, n };
			r = !z ? vt_error_set(err, ENOMEM, s->b->filename, "write zeroes", NULL)
			       : e->compressed ? vmdk_stream_write(s, e, off, &zv, 1, 0, n, err)
			                       : vmdk_sparse_write(s, e, off, &zv, 1, 0, n, err);
			free(z);
		}
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

int vmdk_sparse_status(struct vmdk *s, struct vmdk_extent *e, uint64_t off, uint64_t len,
                       struct blk_status *st, struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e), g = off / gb, in = off % gb;
	struct vmdk_map m;
	pthread_mutex_lock(&s->lock);
	int r = 0;
	if (e->compressed && vmdk_stream_pending(s, e, g)) {
		m = (struct vmdk_map){ .state = VMDK_COMPRESSED, .has_gt = true };
		st->len = min64(len, gb - in);
	} else if ((r = vmdk_lookup(s, e, g, &m, err)) == 0) {
		if (!m.has_gt) /* no table: the rest of what it would map is unallocated */
			st->len = min64(len, (e->gtes - g % e->gtes) * gb - in);
		else
			st->len = extend_run(s, e, g, in, &m, min64(len, 1024 * gb));
	}
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	switch (m.state) {
	case VMDK_UNALLOC: st->flags = 0; break;
	case VMDK_ZEROED: st->flags = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED; break;
	case VMDK_DATA:
		st->flags = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
		st->host_offset = m.sector * VMDK_SECTOR + in;
		break;
	case VMDK_COMPRESSED:
		st->flags = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_COMPRESSED;
		break;
	}
	return 0;
}

/* qemu-img check for one sparse extent: every allocated grain must start inside the
 * file (and, beyond qemu, outside the metadata). The first bad grain ends the check. */
int vmdk_sparse_check(struct vmdk *s, struct vmdk_extent *e, struct blk_check *res,
                      void (*report)(void *, const char *), void *opaque, struct vt_error *err)
{
	uint64_t fsize;
	int r = blk_file_size(e->file, &fsize, err);
	if (r < 0)
		return r;
	uint64_t grains = div_up(e->sectors, e->grain_sectors);
	for (uint64_t g = 0; g < grains; g++) {
		uint32_t gte;
		uint64_t sector = e->start + g * e->grain_sectors;
		char line[160];
		pthread_mutex_lock(&s->lock);
		r = vmdk_gte(s, e, g, &gte, NULL);
		pthread_mutex_unlock(&s->lock);
		if (r == 1) { /* no grain table: skip what it would map */
			g = (g / e->gtes + 1) * e->gtes - 1;
			continue;
		}
		if (r >= 0 && (gte == 0 || (gte == 1 && e->zero_grain)))
			continue;
		unsigned long long at = (unsigned long long)sector;
		if (r < 0)
			snprintf(line, sizeof(line), "ERROR: could not get cluster_offset for sector %llu", at);
		else if ((uint64_t)gte * VMDK_SECTOR >= fsize)
			snprintf(line, sizeof(line), "ERROR: cluster offset for sector %llu points after EOF", at);
		else if (!vmdk_grain_ok(e, gte, e->compressed ? 1 : e->grain_sectors))
			snprintf(line, sizeof(line), "ERROR: cluster offset for sector %llu points into the "
			         "image's metadata", at);
		else
			continue;
		if (report)
			report(opaque, line);
		res->corruptions++;
		/* qemu: "Check failed" with the lookup's -1 or -EINVAL. */
		return vt_error_set(err, r < 0 ? EPERM : EINVAL, "", "Check failed", NULL);
	}
	return 0;
}
