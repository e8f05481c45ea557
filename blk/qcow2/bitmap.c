/* Persistent dirty bitmaps (specs/qcow2.md §9): the bitmap directory read and validated
 * at open with qemu's rules, loading, tracking, storing, and the qemu-img bitmap
 * operations.
 *
 * Crash safety: a read-write open marks every consistent bitmap in use (one in-place
 * write of the directory, synced) before the handle changes anything else, so a crash
 * at any later point leaves bitmaps that say they are inconsistent, never stale ones
 * that look valid. Close writes the new bitmap data, tables and directory to free
 * clusters, makes them durable, switches the header extension to them with one write
 * (hdrupdate.c) and only then releases the old clusters: a crash leaks, never corrupts.
 * The bits live in memory between the two: ceil(size / granularity) bits per bitmap
 * (16 KiB for 8 GiB at 64 KiB). */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define BME_MAX_TABLE_SIZE 0x8000000u
#define BME_MAX_PHYS_SIZE  0x20000000ull
#define BME_MAX_NAME       1023
#define BME_RESERVED_FLAGS 0xfffffffcu  /* qemu stores in_use and auto only */
#define BME_ENTRY_RESERVED 0xff000000000001feull
#define BME_ENTRY_OFFSET   0x00fffffffffffe00ull
#define BME_ENTRY_ALL_ONES 1ull

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static uint64_t dir_entry_size(uint64_t name_len, uint64_t extra)
{
	return (24 + name_len + extra + 7) & ~7ull;
}

static uint64_t nbits_of(uint64_t size, unsigned gran_bits)
{
	return div_up(size, 1ull << gran_bits);
}

/* Data clusters a bitmap of a disk of size bytes takes (its table's entries). */
static uint64_t table_entries(const struct qcow2 *s, uint64_t size, unsigned gran_bits)
{
	return div_up(div_up(nbits_of(size, gran_bits), 8), s->cs);
}

static void free_list(struct qcow2_bitmap *bm, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		free(bm[i].name);
		free(bm[i].bits);
	}
	free(bm);
}

void qcow2_bitmaps_free(struct qcow2 *s)
{
	free_list(s->bm, s->nbm);
	s->bm = NULL;
	s->nbm = 0;
}

/* qemu's check_dir_entry: the constraints every entry meets. */
static bool entry_ok(const struct qcow2 *s, const struct qcow2_bitmap *e, uint8_t type,
                     uint32_t name_len)
{
	uint64_t phys = (uint64_t)e->table_size * s->cs;
	if (!e->table_size || !e->table_offset || e->table_offset % s->cs ||
	    e->table_size > BME_MAX_TABLE_SIZE || e->gran_bits > 31 || e->gran_bits < 9 ||
	    (e->flags & BME_RESERVED_FLAGS) || name_len > BME_MAX_NAME || type != 1 ||
	    phys > BME_MAX_PHYS_SIZE)
		return false;
	/* A consistent bitmap's table covers the disk (an inconsistent one may be from
	 * before a resize). */
	return (e->flags & QCOW2_BME_IN_USE) || s->b->size <= (phys * 8) << e->gran_bits;
}

/* Decode a directory of size bytes holding nb entries. */
static int dir_decode(struct qcow2 *s, const uint8_t *dir, uint64_t size, uint32_t nb,
                      struct qcow2_bitmap **out, struct vt_error *err)
{
	const char *fn = s->b->filename;
	struct qcow2_bitmap *bm = calloc(nb ? nb : 1, sizeof(*bm));
	uint64_t off = 0;
	uint32_t n = 0;
	int r = 0;

	if (!bm)
		return vt_error_set(err, ENOMEM, fn, "open", NULL);
	while (off < size) {
		if (size - off < 24) {
			r = vt_error_set(err, EINVAL, fn, "open", "Broken bitmap directory");
			goto fail;
		}
		const uint8_t *e = dir + off;
		uint32_t name_len = (uint32_t)e[18] << 8 | e[19], extra = qcow2_be32(e + 20);
		if (n == nb) {
			r = vt_error_set(err, EINVAL, fn, "open",
			                 "More bitmaps found than specified in header extension");
			goto fail;
		}
		uint64_t esz = dir_entry_size(name_len, extra);
		if (esz > size - off) {
			r = vt_error_set(err, EINVAL, fn, "open", "Broken bitmap directory");
			goto fail;
		}
		if (extra) {
			r = vt_error_set(err, EINVAL, fn, "open", "Bitmap extra data is not supported");
			goto fail;
		}
		struct qcow2_bitmap *b = &bm[n++];
		b->table_offset = qcow2_be64(e);
		b->table_size = qcow2_be32(e + 8);
		b->flags = qcow2_be32(e + 12);
		b->gran_bits = e[17];
		b->inconsistent = b->flags & QCOW2_BME_IN_USE;
		if (!(b->name = strndup((const char *)e + 24, name_len))) {
			r = vt_error_set(err, ENOMEM, fn, "open", NULL);
			goto fail;
		}
		if (!entry_ok(s, b, e[16], name_len)) {
			r = vt_error_set(err, EINVAL, fn, "open",
			                 "Bitmap '%s' doesn't satisfy the constraints", b->name);
			goto fail;
		}
		off += esz;
	}
	if (n != nb) {
		r = vt_error_set(err, EINVAL, fn, "open",
		                 "Less bitmaps found than specified in header extension");
		goto fail;
	}
	*out = bm;
	return 0;
fail:
	free_list(bm, n);
	return r;
}

static int dir_read(struct qcow2 *s, struct qcow2_bitmap **out, struct vt_error *err)
{
	if (!s->bm_dir_size)
		return vt_error_set(err, EINVAL, s->b->filename, "open",
		                    "Requested bitmap directory size is zero");
	uint8_t *dir = malloc(s->bm_dir_size);
	if (!dir)
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	int r = blk_file_pread(s->b->file, s->bm_dir_offset, dir, s->bm_dir_size, err);
	if (r == 0)
		r = dir_decode(s, dir, s->bm_dir_size, s->bm_nb, out, err);
	free(dir);
	return r;
}

/* A bitmap table in host order; its entries are checked where used (table_entry_ok). */
static int table_read(struct qcow2 *s, const struct qcow2_bitmap *b, uint64_t **out,
                      struct vt_error *err)
{
	return qcow2_load_table(s, b->table_offset, b->table_size, out, err);
}

static bool table_entry_ok(const struct qcow2 *s, uint64_t e)
{
	uint64_t off = e & BME_ENTRY_OFFSET;
	return !(e & BME_ENTRY_RESERVED) && !(off && (off % s->cs || (e & BME_ENTRY_ALL_ONES)));
}

/* The bits of a consistent bitmap for a disk of size bytes. */
static int bits_load(struct qcow2 *s, const struct qcow2_bitmap *b, uint64_t size,
                     uint8_t **out, struct vt_error *err)
{
	uint64_t nbytes = div_up(nbits_of(size, b->gran_bits), 8), *t = NULL;
	uint8_t *bits = calloc(nbytes + 1, 1);
	int r = bits ? table_read(s, b, &t, err)
	             : vt_error_set(err, ENOMEM, s->b->filename, "load bitmap", NULL);
	for (uint64_t i = 0; r == 0 && i * s->cs < nbytes; i++) {
		uint64_t len = nbytes - i * s->cs < s->cs ? nbytes - i * s->cs : s->cs;
		uint64_t off = t[i] & BME_ENTRY_OFFSET;
		if (!table_entry_ok(s, t[i]))
			r = vt_error_set(err, EINVAL, s->b->filename, "open",
			                 "Could not read bitmap '%s': invalid bitmap table entry",
			                 b->name);
		else if (off)
			r = blk_file_pread(s->b->file, off, bits + i * s->cs, len, err);
		else if (t[i] & BME_ENTRY_ALL_ONES)
			memset(bits + i * s->cs, 0xff, len);
	}
	/* Bits past the disk's end are not part of the bitmap. */
	uint64_t nbits = nbits_of(size, b->gran_bits);
	if (r == 0 && nbits % 8)
		bits[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
	free(t);
	if (r < 0) {
		free(bits);
		return r;
	}
	*out = bits;
	return 0;
}

/* The directory as it is to be stored (table offsets and sizes from the bitmaps). */
static uint8_t *dir_encode(const struct qcow2_bitmap *bm, uint32_t n, uint64_t *size)
{
	uint64_t len = 0;
	for (uint32_t i = 0; i < n; i++)
		len += dir_entry_size(strlen(bm[i].name), 0);
	uint8_t *dir = calloc(len ? len : 1, 1), *e = dir;
	if (!dir)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		size_t nl = strlen(bm[i].name);
		qcow2_put_be64(e, bm[i].table_offset);
		qcow2_put_be32(e + 8, bm[i].table_size);
		qcow2_put_be32(e + 12, bm[i].flags);
		e[16] = 1;
		e[17] = (uint8_t)bm[i].gran_bits;
		e[18] = (uint8_t)(nl >> 8);
		e[19] = (uint8_t)nl;
		memcpy(e + 24, bm[i].name, nl);
		e += dir_entry_size(nl, 0);
	}
	*size = len;
	return dir;
}

int qcow2_bitmaps_open(struct qcow2 *s, struct vt_error *err)
{
	struct blk *b = s->b;
	int r;

	if (s->has_bitmaps && (r = dir_read(s, &s->bm, err)) < 0)
		return r;
	s->nbm = s->has_bitmaps ? s->bm_nb : 0;
	if (!b->writable || b->repair || s->version < 3)
		return 0;
	/* A read-write handle owns the bitmaps until close. */
	s->bm_store = true;
	bool mark = false;
	for (uint32_t i = 0; i < s->nbm; i++) {
		struct qcow2_bitmap *bm = &s->bm[i];
		if (bm->inconsistent)
			continue;
		if ((r = bits_load(s, bm, b->size, &bm->bits, err)) < 0)
			return r;
		bm->flags |= QCOW2_BME_IN_USE;
		mark = true;
	}
	if (!mark)
		return 0;
	/* In place: only flag words change, each within its own aligned 8 bytes. */
	uint64_t len;
	uint8_t *dir = dir_encode(s->bm, s->nbm, &len);
	if (!dir)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	r = len == s->bm_dir_size
	        ? blk_file_pwrite(b->file, s->bm_dir_offset, dir, len, err)
	        : vt_error_set(err, EINVAL, b->filename, "open", "Broken bitmap directory");
	free(dir);
	return r < 0 ? r : blk_file_flush(b->file, err);
}

/* Set the bits covering [off, off+len) of a disk of size bytes. Atomic: I/O threads
 * mark concurrently. */
static void bits_set(struct qcow2_bitmap *bm, uint64_t size, uint64_t off, uint64_t len)
{
	uint64_t end = off + len > size ? size : off + len;
	for (uint64_t n = off >> bm->gran_bits; n << bm->gran_bits < end; n++)
		__atomic_fetch_or(&bm->bits[n / 8], (uint8_t)(1u << (n % 8)), __ATOMIC_RELAXED);
}

void qcow2_bitmaps_mark(struct qcow2 *s, uint64_t off, uint64_t len)
{
	for (uint32_t i = 0; len && i < s->nbm; i++)
		if (s->bm[i].bits && (s->bm[i].flags & QCOW2_BME_AUTO))
			bits_set(&s->bm[i], s->b->size, off, len);
}

int qcow2_bitmaps_resize(struct qcow2 *s, uint64_t old_size, uint64_t size,
                         struct vt_error *err)
{
	for (uint32_t i = 0; i < s->nbm; i++) {
		struct qcow2_bitmap *bm = &s->bm[i];
		if (!bm->bits)
			continue;
		uint64_t old = div_up(nbits_of(old_size, bm->gran_bits), 8);
		uint64_t nbits = nbits_of(size, bm->gran_bits), nbytes = div_up(nbits, 8);
		if (nbytes > old) {
			uint8_t *p = realloc(bm->bits, nbytes + 1);
			if (!p)
				return vt_error_set(err, ENOMEM, s->b->filename, "resize bitmaps", NULL);
			memset(p + old, 0, nbytes - old);
			bm->bits = p;
		} else {
			/* Shrinking keeps the allocation: only bits past the new end go. */
			if (old > nbytes)
				memset(bm->bits + nbytes, 0, old - nbytes);
			if (nbits % 8)
				bm->bits[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
		}
	}
	return 0;
}

/* Write one bitmap's data clusters (all-zero ones stay unallocated) and its table. */
static int store_one(struct qcow2 *s, struct qcow2_bitmap *bm, struct vt_error *err)
{
	uint64_t nbytes = div_up(nbits_of(s->b->size, bm->gran_bits), 8);
	uint64_t n = table_entries(s, s->b->size, bm->gran_bits);
	uint64_t tclusters = div_up(n * 8, s->cs), off;
	uint8_t *buf = qcow2_alloc_buf(s->cs), *table = qcow2_alloc_buf(tclusters * s->cs);
	int r = 0;

	if (!buf || !table) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "store bitmap", NULL);
		goto out;
	}
	memset(table, 0, tclusters * s->cs);
	for (uint64_t i = 0; i < n && r == 0; i++) {
		uint64_t len = nbytes - i * s->cs < s->cs ? nbytes - i * s->cs : s->cs;
		const uint8_t *p = bm->bits + i * s->cs;
		uint64_t k = 0;
		while (k < len && !p[k])
			k++;
		if (k == len)
			continue;
		memset(buf, 0, s->cs);
		memcpy(buf, p, len);
		if ((r = qcow2_alloc_clusters(s, 1, &off, err)) == 0 &&
		    (r = blk_file_pwrite(s->b->file, off, buf, s->cs, err)) == 0)
			qcow2_put_be64(table + i * 8, off);
	}
	if (r == 0 && (r = qcow2_alloc_clusters(s, tclusters, &off, err)) == 0 &&
	    (r = blk_file_pwrite(s->b->file, off, table, tclusters * s->cs, err)) == 0) {
		bm->table_offset = off;
		bm->table_size = (uint32_t)n;
	}
out:
	free(buf);
	free(table);
	return r;
}

/* Drop the references of a stored bitmap's table and data (after the header switch). */
static int free_stored(struct qcow2 *s, const struct qcow2_bitmap *bm, struct vt_error *err)
{
	uint64_t *t;
	int r = table_read(s, bm, &t, err);
	if (r < 0)
		return r;
	for (uint64_t i = 0; r == 0 && i < bm->table_size; i++) {
		uint64_t off = t[i] & BME_ENTRY_OFFSET;
		if (off && table_entry_ok(s, t[i]) &&
		    (r = qcow2_check_overlap(s, off, s->cs, err)) == 0)
			r = qcow2_free_later(s, off, s->cs, err);
	}
	free(t);
	if (r == 0)
		r = qcow2_free_later(s, bm->table_offset, (uint64_t)bm->table_size * 8, err);
	return r;
}

int qcow2_bitmaps_store(struct qcow2 *s, struct vt_error *err)
{
	struct qcow2_bitmap *old = NULL;
	uint8_t *dir = NULL;
	uint64_t dir_size = 0, dir_off = 0;
	int r = 0;

	uint32_t old_nb = s->bm_nb;

	if (!s->bm_store)
		return 0;
	s->bm_store = false;
	if (s->version < 3)
		return 0; /* amend made it v2: the extension went with the bitmaps (leaked) */
	if (!s->nbm && !s->has_bitmaps)
		return 0;
	pthread_mutex_lock(&s->lock);
	if (s->has_bitmaps && (r = dir_read(s, &old, err)) < 0)
		goto out;
	for (uint32_t i = 0; i < s->nbm && r == 0; i++) {
		struct qcow2_bitmap *bm = &s->bm[i];
		if (!bm->bits)
			continue; /* inconsistent: kept as it is */
		bm->flags &= ~QCOW2_BME_IN_USE;
		r = store_one(s, bm, err);
	}
	if (r == 0 && s->nbm) {
		if (!(dir = dir_encode(s->bm, s->nbm, &dir_size)))
			r = vt_error_set(err, ENOMEM, s->b->filename, "store bitmaps", NULL);
		else if (dir_size > QCOW2_MAX_BITMAP_DIR)
			r = vt_error_set(err, EFBIG, s->b->filename, "store bitmaps",
			                 "bitmap directory too large");
		else if ((r = qcow2_alloc_clusters(s, div_up(dir_size, s->cs), &dir_off, err)) == 0)
			r = blk_file_pwrite(s->b->file, dir_off, dir, dir_size, err);
	}
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
	if (r == 0) {
		struct qcow2_hdr_edit e = {
			.compression_type = -1, .refcount_order = -1, .features = true,
			.incompat = s->incompat, .compat = s->compat,
			.autoclear = s->nbm ? s->autoclear | QCOW2_AUTOCLEAR_BITMAPS
			                    : s->autoclear & ~QCOW2_AUTOCLEAR_BITMAPS,
			.set_bitmaps = true, .bm_nb = s->nbm, .bm_dir_size = dir_size,
			.bm_dir_offset = dir_off,
		};
		r = qcow2_edit_header(s, &e, err);
	}
	if (r < 0)
		goto out; /* the new clusters leak; the old bitmaps stay marked in use */
	/* The old directory, and what it referenced that the new one does not. */
	for (uint32_t i = 0; old && i < old_nb && r == 0; i++) {
		bool kept = false;
		for (uint32_t k = 0; k < s->nbm; k++)
			kept |= !s->bm[k].bits && s->bm[k].table_offset == old[i].table_offset;
		if (!kept)
			r = free_stored(s, &old[i], err);
	}
	if (r == 0 && old)
		r = qcow2_free_later(s, s->bm_dir_offset, s->bm_dir_size, err);
	s->has_bitmaps = s->nbm > 0;
	s->bm_nb = s->nbm;
	s->bm_dir_size = dir_size;
	s->bm_dir_offset = dir_off;
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
out:
	pthread_mutex_unlock(&s->lock);
	free_list(old, old_nb);
	free(dir);
	return r;
}

struct vt_json *qcow2_bitmaps_info(struct qcow2 *s)
{
	if (!s->nbm)
		return NULL;
	struct vt_json *list = vt_json_array();
	for (uint32_t i = 0; i < s->nbm; i++) {
		/* What is stored: this handle's own in-use marking is not reported. */
		uint32_t flags = s->bm[i].flags & ~(s->bm[i].bits ? QCOW2_BME_IN_USE : 0);
		struct vt_json *o = vt_json_object(), *f = vt_json_array();
		if (flags & QCOW2_BME_IN_USE)
			vt_json_append(f, vt_json_string("in-use"));
		if (flags & QCOW2_BME_AUTO)
			vt_json_append(f, vt_json_string("auto"));
		vt_json_set(o, "flags", f);
		vt_json_set_str(o, "name", s->bm[i].name);
		vt_json_set_int(o, "granularity", (int64_t)1 << s->bm[i].gran_bits);
		vt_json_append(list, o);
	}
	return list;
}

int qcow2_bitmaps_refs(struct qcow2 *s, void (*count)(void *opaque, uint64_t off,
                                                      uint64_t len),
                       void *opaque, uint64_t *corruptions, struct vt_error *err)
{
	struct qcow2_bitmap *bm;
	struct vt_error ignored;

	if (!s->has_bitmaps)
		return 0;
	count(opaque, s->bm_dir_offset, s->bm_dir_size);
	if (dir_read(s, &bm, &ignored) < 0) {
		++*corruptions;
		return 0;
	}
	int r = 0;
	for (uint32_t i = 0; i < s->bm_nb && r == 0; i++) {
		uint64_t *t;
		count(opaque, bm[i].table_offset, (uint64_t)bm[i].table_size * 8);
		if ((r = table_read(s, &bm[i], &t, err)) < 0)
			break;
		for (uint32_t k = 0; k < bm[i].table_size; k++) {
			if (!table_entry_ok(s, t[k]))
				++*corruptions;
			else if (t[k] & BME_ENTRY_OFFSET)
				count(opaque, t[k] & BME_ENTRY_OFFSET, s->cs);
		}
		free(t);
	}
	free_list(bm, s->bm_nb);
	return r;
}

int qcow2_bitmaps_measure(struct blk *src, uint64_t cs, uint64_t *bytes, struct vt_error *err)
{
	struct blk_bitmap *l;
	size_t n;
	uint64_t dir = 0, total = 0;
	int r = blk_bitmap_list(src, &l, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		uint64_t data = div_up(div_up(src->size, l[i].granularity), 8);
		uint64_t clusters = div_up(data, cs);
		total += clusters * cs + div_up(clusters * 8, cs) * cs;
		dir += dir_entry_size(strlen(l[i].name), 0);
	}
	*bytes = total + div_up(dir, cs) * cs;
	blk_bitmap_list_free(l, n);
	return 0;
}

/* ---- qemu-img bitmap ---- */

static int find(const struct qcow2 *s, const char *name)
{
	for (uint32_t i = 0; i < s->nbm; i++)
		if (!strcmp(s->bm[i].name, name))
			return (int)i;
	return -1;
}

int qcow2_bitmap_list(struct blk *b, struct blk_bitmap **out, size_t *n, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	if (s->version < 3)
		return vt_error_set(err, ENOTSUP, b->filename, NULL, "Source lacks bitmap support");
	struct blk_bitmap *l = calloc(s->nbm + 1, sizeof(*l));
	if (!l)
		return vt_error_set(err, ENOMEM, b->filename, "list bitmaps", NULL);
	for (uint32_t i = 0; i < s->nbm; i++) {
		l[i].granularity = 1ull << s->bm[i].gran_bits;
		l[i].enabled = s->bm[i].flags & QCOW2_BME_AUTO;
		l[i].in_use = s->bm[i].inconsistent;
		if (!(l[i].name = strdup(s->bm[i].name))) {
			blk_bitmap_list_free(l, i);
			return vt_error_set(err, ENOMEM, b->filename, "list bitmaps", NULL);
		}
	}
	*out = l;
	*n = s->nbm;
	return 0;
}

int qcow2_bitmap_read(struct blk *b, const char *name, struct blk_bitmap_bits *out,
                      struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int i = find(s, name);
	if (i < 0)
		return vt_error_set(err, ENOENT, "", NULL, "Dirty bitmap '%s' not found", name);
	struct qcow2_bitmap *bm = &s->bm[i];
	if (bm->inconsistent)
		return vt_error_set(err, EINVAL, "", NULL,
		                    "Bitmap '%s' is inconsistent and cannot be used", name);
	out->granularity = 1ull << bm->gran_bits;
	out->disk_size = b->size;
	out->nbits = nbits_of(b->size, bm->gran_bits);
	uint64_t nbytes = div_up(out->nbits, 8);
	if (bm->bits) {
		if (!(out->bits = malloc(nbytes + 1)))
			return vt_error_set(err, ENOMEM, b->filename, "read bitmap", NULL);
		/* I/O threads may be setting bits meanwhile (bits_set's atomic OR). */
		for (uint64_t k = 0; k < nbytes; k++)
			out->bits[k] = __atomic_load_n(&bm->bits[k], __ATOMIC_RELAXED);
		return 0;
	}
	return bits_load(s, bm, b->size, &out->bits, err);
}

static int add(struct qcow2 *s, const struct blk_bitmap_op *op, struct vt_error *err)
{
	const char *name = op->name;
	uint64_t g = op->granularity;
	if (!g)
		g = s->cs < 4096 ? 4096 : s->cs > 65536 ? 65536 : s->cs;
	if (!*name)
		return vt_error_set(err, EINVAL, "", NULL, "Bitmap name cannot be empty");
	if (strlen(name) > BME_MAX_NAME)
		return vt_error_set(err, EINVAL, "", NULL,
		                    "Can't make bitmap persistent in '%s': Name length exceeds "
		                    "maximum (1023 characters)", s->b->filename);
	if (g < 512 || (g & (g - 1)) || g > (1ull << 31))
		return vt_error_set(err, EINVAL, "", NULL,
		                    "Granularity must be power of 2 and at least 512");
	if (find(s, name) >= 0)
		return vt_error_set(err, EEXIST, "", NULL, "Bitmap already exists: %s", name);
	if (s->nbm >= QCOW2_MAX_BITMAPS)
		return vt_error_set(err, ENOSPC, "", NULL,
		                    "Can't make bitmap '%s' persistent in '%s': Maximum number of "
		                    "bitmaps is already reached", name, s->b->filename);
	unsigned gb = 0;
	while ((1ull << gb) < g)
		gb++;
	struct qcow2_bitmap *bm = realloc(s->bm, (s->nbm + 1) * sizeof(*bm));
	if (!bm)
		return vt_error_set(err, ENOMEM, s->b->filename, "add bitmap", NULL);
	s->bm = bm;
	bm = &s->bm[s->nbm];
	memset(bm, 0, sizeof(*bm));
	bm->gran_bits = gb;
	bm->flags = op->disabled ? 0 : QCOW2_BME_AUTO;
	bm->name = strdup(name);
	bm->bits = calloc(div_up(nbits_of(s->b->size, gb), 8) + 1, 1);
	if (!bm->name || !bm->bits) {
		free(bm->name);
		free(bm->bits);
		return vt_error_set(err, ENOMEM, s->b->filename, "add bitmap", NULL);
	}
	s->nbm++;
	return 0;
}

/* OR the source's dirty ranges into bm (granularities may differ; sizes may not). */
static int merge(struct qcow2 *s, struct qcow2_bitmap *bm, const struct blk_bitmap_bits *src,
                 struct vt_error *err)
{
	if (src->disk_size != s->b->size)
		return vt_error_set(err, EINVAL, "", NULL,
		                    "Bitmaps are of different sizes (destination size is %" PRIu64
		                    ", source size is %" PRIu64 ") and can't be merged",
		                    s->b->size, src->disk_size);
	for (uint64_t i = 0; i < src->nbits; i++)
		if (src->bits[i / 8] >> (i % 8) & 1)
			bits_set(bm, s->b->size, i * src->granularity, src->granularity);
	return 0;
}

int qcow2_bitmap_apply(struct blk *b, const struct blk_bitmap_op *op, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	if (s->version < 3)
		return vt_error_set(err, ENOTSUP, "", NULL,
		                    "Can't make bitmap '%s' persistent in '%s': Cannot store dirty "
		                    "bitmaps in qcow2 v2 files", op->name, b->filename);
	if (!s->bm_store)
		return vt_error_set(err, EROFS, b->filename, "bitmap", "image is opened read-only");
	if (op->action == BLK_BITMAP_ADD)
		return add(s, op, err);
	int i = find(s, op->name);
	if (i < 0)
		return vt_error_set(err, ENOENT, "", NULL, "Dirty bitmap '%s' not found", op->name);
	struct qcow2_bitmap *bm = &s->bm[i];
	if (op->action == BLK_BITMAP_REMOVE) {
		/* Its clusters are released when the new directory is stored. */
		free(bm->name);
		free(bm->bits);
		memmove(bm, bm + 1, (s->nbm - (uint32_t)i - 1) * sizeof(*bm));
		s->nbm--;
		return 0;
	}
	if (bm->inconsistent)
		return vt_error_set(err, EINVAL, "", NULL,
		                    "Bitmap '%s' is inconsistent and cannot be used\n"
		                    "Try block-dirty-bitmap-remove to delete this bitmap from disk",
		                    op->name);
	switch (op->action) {
	case BLK_BITMAP_CLEAR:
		memset(bm->bits, 0, div_up(nbits_of(b->size, bm->gran_bits), 8));
		return 0;
	case BLK_BITMAP_ENABLE:
		bm->flags |= QCOW2_BME_AUTO;
		return 0;
	case BLK_BITMAP_DISABLE:
		bm->flags &= ~QCOW2_BME_AUTO;
		return 0;
	case BLK_BITMAP_MERGE:
		return merge(s, bm, op->src, err);
	default:
		return vt_error_set(err, EINVAL, "", NULL, "unknown bitmap operation");
	}
}
