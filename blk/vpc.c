/* vpc: Virtual PC / Hyper-V / Azure VHD images, under qemu's driver name "vpc".
 *
 * Layout (all fields big-endian): a 512-byte footer ("conectix") at the end of the file.
 * A fixed VHD is the disk followed by that footer. A dynamic VHD also has a copy of the
 * footer at offset 0, a 1 KiB dynamic header ("cxsparse") it points to, and a block
 * allocation table (BAT) of 32-bit sector numbers; each allocated block is a sector bitmap
 * followed by block_size bytes of data. Unallocated blocks read as zeros.
 *
 * What we follow from qemu 7.2 so that both tools see the same disk: the virtual size is
 * the CHS geometry's unless the creator application is one that sizes by the footer's
 * current_size (or the geometry is the maximum one); the footer checksum must match; the
 * sector bitmaps are not consulted on reads (every sector of an allocated block is data);
 * a differencing VHD is read as a dynamic one without its parent. The probe leaves a
 * fixed VHD (no footer copy at offset 0) to raw, as qemu does; `-f vpc` opens it here.
 *
 * Concurrency: one mutex guards the BAT, the allocation frontier and the footer's place.
 * Data moves outside it. A new block is placed where the footer is: the footer is first
 * written again past the new block (the file grows and always ends with a footer), then
 * the bitmap over the old footer, then the caller's data; after a flush the BAT entry
 * points at it. A writer killed in between leaks at most the block. */
#include "blk/driver.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define VHD_SECTOR          512u
#define VHD_FOOTER_SIZE     512u
#define VHD_DYN_HEADER_SIZE 1024u
#define VHD_TYPE_FIXED      2u
#define VHD_BAT_UNUSED      0xffffffffu
#define VHD_EPOCH           946684800u          /* 2000-01-01 00:00:00 UTC */
#define VHD_MAX_SECTORS     0xff000000ull       /* 2040 GiB, qemu's limit */
#define VHD_CHS_MAX_C       65535u
#define VHD_CHS_MAX_H       16u
#define VHD_CHS_MAX_S       255u
#define VHD_MAX_GEOMETRY    ((uint64_t)VHD_CHS_MAX_C * VHD_CHS_MAX_H * VHD_CHS_MAX_S)
#define VHD_DEFAULT_BLOCK   (2u << 20)

/* The footer. Documents the layout; decoded field by field. */
struct vhd_footer_disk {
	char cookie[8];             /* "conectix" */
	uint32_t features;
	uint32_t version;           /* 0x00010000 */
	uint64_t data_offset;       /* dynamic header, all ones for fixed disks */
	uint32_t timestamp;         /* seconds since 2000-01-01 */
	char creator_app[4];
	uint16_t creator_major, creator_minor;
	char creator_os[4];
	uint64_t orig_size;
	uint64_t current_size;
	uint16_t cyls;
	uint8_t heads;
	uint8_t secs_per_cyl;
	uint32_t type;
	uint32_t checksum;          /* ~(sum of all bytes with this field zero) */
	uint8_t uuid[16];
	uint8_t saved_state;
	uint8_t reserved[427];
} __attribute__((packed));
_Static_assert(sizeof(struct vhd_footer_disk) == VHD_FOOTER_SIZE, "VHD footer is 512 bytes");

struct vhd_parent_locator_disk {
	uint32_t platform, data_space, data_length, reserved;
	uint64_t data_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct vhd_parent_locator_disk) == 24, "parent locator is 24 bytes");

struct vhd_dyn_header_disk {
	char cookie[8];             /* "cxsparse" */
	uint64_t data_offset;       /* unused, all ones */
	uint64_t table_offset;      /* the BAT */
	uint32_t version;
	uint32_t max_table_entries;
	uint32_t block_size;
	uint32_t checksum;
	uint8_t parent_uuid[16];
	uint32_t parent_timestamp;
	uint32_t reserved;
	uint8_t parent_name[512];   /* UTF-16 */
	struct vhd_parent_locator_disk parent_locator[8];
	uint8_t reserved2[256];
} __attribute__((packed));
_Static_assert(sizeof(struct vhd_dyn_header_disk) == VHD_DYN_HEADER_SIZE,
               "VHD dynamic header is 1024 bytes");

#define FOOTER_OFF(f) offsetof(struct vhd_footer_disk, f)
#define DYN_OFF(f)    offsetof(struct vhd_dyn_header_disk, f)

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static void put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}
static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/* One's complement of the byte sum, the checksum field counted as zero. */
static uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t field)
{
	uint32_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += i >= field && i < field + 4 ? 0 : buf[i];
	return ~sum;
}

struct vpc {
	pthread_mutex_t lock;
	pthread_cond_t allocated;   /* signalled when a block allocation ends */
	uint8_t footer[VHD_FOOTER_SIZE]; /* as read: rewritten at the end when the file grows */
	bool passthrough;           /* footer type "fixed": the disk is the file's start */
	uint32_t block_size, bitmap_size;
	uint64_t bat_offset;
	uint32_t bat_entries;
	uint32_t *bat;              /* host order; VHD_BAT_UNUSED for holes */
	uint8_t *bitmap_full;       /* a bit per block: its sector bitmap is all ones */
	uint64_t free_off;          /* the next block goes here (where the footer is) */
	uint64_t stale_end;         /* bytes below may be left over from a crash: zero them */
	uint32_t *pending;          /* blocks being allocated by some thread */
	size_t npending, pending_cap;
};

/* Size in sectors qemu gives the disk: the geometry's, or the footer's current_size for
 * creators that size that way and for the maximum geometry. */
static uint64_t footer_sectors(const uint8_t *f)
{
	const uint8_t *app = f + FOOTER_OFF(creator_app);
	uint64_t chs = (uint64_t)be16(f + FOOTER_OFF(cyls)) * f[FOOTER_OFF(heads)] *
	               f[FOOTER_OFF(secs_per_cyl)];
	bool by_size = !memcmp(app, "win ", 4) || !memcmp(app, "qem2", 4) ||
	               !memcmp(app, "d2v ", 4) || !memcmp(app, "CTXS", 4) ||
	               !memcmp(app, "tap", 4);
	if (by_size || chs == VHD_MAX_GEOMETRY)
		return be64(f + FOOTER_OFF(current_size)) / VHD_SECTOR;
	return chs;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Blocks must lie in the file, off the metadata and apart from each other: anything else
 * would have writes to one block land in the headers, the BAT or another block. */
static int check_blocks(struct blk *b, struct vpc *s, uint64_t dyn_off, uint64_t fsize,
                        struct vt_error *err)
{
	uint64_t span = (uint64_t)s->bitmap_size + s->block_size, bat_end = s->bat_offset +
	                (uint64_t)s->bat_entries * 4;
	uint32_t *sorted = malloc(((size_t)s->bat_entries + 1) * 4);
	size_t n = 0;
	int r = 0;

	if (!sorted)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	for (uint32_t i = 0; i < s->bat_entries; i++) {
		uint64_t start = (uint64_t)s->bat[i] * VHD_SECTOR, end = start + span;
		if (s->bat[i] == VHD_BAT_UNUSED)
			continue;
		if (end > fsize) {
			r = vt_error_set(err, EINVAL, b->filename, "open",
			                 "block-vpc: free_data_block_offset points after the end of "
			                 "file. The image has been truncated.");
			break;
		}
		if (start < VHD_FOOTER_SIZE || (start < dyn_off + VHD_DYN_HEADER_SIZE &&
		                                 end > dyn_off) ||
		    (start < bat_end && end > s->bat_offset)) {
			r = vt_error_set(err, EINVAL, b->filename, "open",
			                 "BAT entry %u (sector %u) points into the image's headers "
			                 "or BAT", i, s->bat[i]);
			break;
		}
		sorted[n++] = s->bat[i];
	}
	if (r == 0 && n > 1) {
		qsort(sorted, n, 4, cmp_u32);
		for (size_t i = 1; i < n && r == 0; i++)
			if ((uint64_t)(sorted[i] - sorted[i - 1]) * VHD_SECTOR < span)
				r = vt_error_set(err, EINVAL, b->filename, "open",
				                 "BAT entries for sectors %u and %u overlap", sorted[i - 1],
				                 sorted[i]);
	}
	free(sorted);
	return r;
}

static int open_dynamic(struct blk *b, struct vpc *s, uint64_t fsize, struct vt_error *err)
{
	uint8_t h[VHD_DYN_HEADER_SIZE];
	uint64_t dyn_off = be64(s->footer + FOOTER_OFF(data_offset)), sectors = b->size / 512;
	int r;

	/* Past the end of the file reads as zeros: then the magic is wrong, as in qemu. */
	memset(h, 0, sizeof(h));
	if (dyn_off < fsize &&
	    (r = blk_file_pread(b->file, dyn_off, h,
	                        fsize - dyn_off < sizeof(h) ? (size_t)(fsize - dyn_off)
	                                                    : sizeof(h), err)) < 0)
		return r;
	if (memcmp(h, "cxsparse", 8))
		return vt_error_set(err, EINVAL, b->filename, "open", "Invalid header magic");
	s->block_size = be32(h + DYN_OFF(block_size));
	if (s->block_size < VHD_SECTOR || (s->block_size & (s->block_size - 1)))
		return vt_error_set(err, EINVAL, b->filename, "open", "Invalid block size %u",
		                    s->block_size);
	s->bitmap_size = (s->block_size / (8 * VHD_SECTOR) + 511) & ~511u;
	s->bat_entries = be32(h + DYN_OFF(max_table_entries));
	if (sectors * VHD_SECTOR / s->block_size > 0xffffffffu)
		return vt_error_set(err, EINVAL, b->filename, "open", "Too many blocks");
	if ((uint64_t)s->bat_entries * s->block_size < sectors * VHD_SECTOR)
		return vt_error_set(err, EINVAL, b->filename, "open", "Page table too small");
	if (s->bat_entries > 0x7fffffffu / 4)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "Max Table Entries too large (%d)", (int32_t)s->bat_entries);
	s->bat_offset = be64(h + DYN_OFF(table_offset));
	uint64_t bat_bytes = (uint64_t)s->bat_entries * 4;
	/* The table must be in the file: this also bounds what we allocate for it. */
	if (s->bat_offset > fsize || bat_bytes > fsize - s->bat_offset)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "block-vpc: free_data_block_offset points after the end of "
		                    "file. The image has been truncated.");
	uint8_t *raw = malloc(bat_bytes + 1);
	s->bat = malloc(bat_bytes + 4);
	s->bitmap_full = calloc(s->bat_entries / 8 + 1, 1);
	if (!raw || !s->bat || !s->bitmap_full) {
		free(raw);
		return vt_error_set(err, ENOMEM, b->filename, "open",
		                    "Unable to allocate memory for page table");
	}
	r = bat_bytes ? blk_file_pread(b->file, s->bat_offset, raw, bat_bytes, err) : 0;
	s->free_off = (s->bat_offset + bat_bytes + 511) & ~511ull;
	for (uint32_t i = 0; r == 0 && i < s->bat_entries; i++) {
		s->bat[i] = be32(raw + 4 * (size_t)i);
		uint64_t end = (uint64_t)s->bat[i] * VHD_SECTOR + s->bitmap_size + s->block_size;
		if (s->bat[i] != VHD_BAT_UNUSED && end > s->free_off)
			s->free_off = end;
	}
	free(raw);
	if (r < 0)
		return r;
	if (s->free_off > fsize)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "block-vpc: free_data_block_offset points after the end of "
		                    "file. The image has been truncated.");
	s->stale_end = fsize;
	return check_blocks(b, s, dyn_off, fsize, err);
}

static void vpc_close(struct blk *b)
{
	struct vpc *s = b->opaque;
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->allocated);
	free(s->bat);
	free(s->bitmap_full);
	free(s->pending);
	free(s);
	b->opaque = NULL;
}

static int vpc_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct vpc *s = calloc(1, sizeof(*s));
	uint64_t fsize;
	bool at_end = false;
	int r;

	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	b->opaque = s;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->allocated, NULL);
	if ((r = blk_file_size(b->file, &fsize, err)) < 0)
		goto fail;
	if (fsize < VHD_FOOTER_SIZE) {
		r = vt_error_set(err, EINVAL, b->filename, "open", "File too small for a VHD header");
		goto fail;
	}
	if ((r = blk_file_pread(b->file, 0, s->footer, VHD_FOOTER_SIZE, err)) < 0)
		goto fail;
	if (memcmp(s->footer, "conectix", 8)) {
		/* A fixed disk: the footer is only at the end. */
		if ((r = blk_file_pread(b->file, fsize - VHD_FOOTER_SIZE, s->footer,
		                        VHD_FOOTER_SIZE, err)) < 0)
			goto fail;
		/* Only a fixed disk may lack the copy at offset 0. */
		if (memcmp(s->footer, "conectix", 8) ||
		    be32(s->footer + FOOTER_OFF(type)) != VHD_TYPE_FIXED) {
			r = vt_error_set(err, EINVAL, b->filename, "open", "invalid VPC image");
			goto fail;
		}
		at_end = true;
	}
	if (vhd_checksum(s->footer, VHD_FOOTER_SIZE, FOOTER_OFF(checksum)) !=
	    be32(s->footer + FOOTER_OFF(checksum))) {
		r = vt_error_set(err, EINVAL, b->filename, "open", "Incorrect header checksum");
		goto fail;
	}
	uint64_t sectors = footer_sectors(s->footer);
	if (sectors > VHD_MAX_SECTORS) {
		r = vt_error_set(err, EFBIG, b->filename, "open", NULL);
		goto fail;
	}
	b->size = sectors * VHD_SECTOR;
	s->passthrough = be32(s->footer + FOOTER_OFF(type)) == VHD_TYPE_FIXED;
	/* qemu reads the dynamic header whenever there is a footer copy at offset 0, even
	 * if the footer calls the disk fixed; the type alone decides how data is found. */
	if (!at_end && (r = open_dynamic(b, s, fsize, err)) < 0)
		goto fail;
	if (b->writable) {
		const char *why = NULL;
		if (s->passthrough && !at_end)
			why = "a fixed VHD with a footer copy at offset 0 (writes would overwrite it)";
		else if (s->passthrough && b->size > fsize - VHD_FOOTER_SIZE)
			why = "the fixed VHD's disk is larger than the file (writes would overwrite "
			      "its footer)";
		if (why) {
			r = vt_error_set(err, EINVAL, b->filename, "open", "cannot write %s", why);
			goto fail;
		}
	}
	return 0;
fail:
	vpc_close(b);
	return r;
}

/* The iovec [skip, skip+len) of iov, as a new vector in out (at most iovcnt entries). */
static int iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
                     struct iovec *out)
{
	int m = 0;
	vt_iov_slice(iov, iovcnt, skip, len, out, &m, iovcnt);
	return m;
}

struct sub_iov {
	struct iovec small[8], *v;
};

static int sub_iov_init(struct sub_iov *si, int iovcnt, struct blk *b, struct vt_error *err)
{
	si->v = iovcnt <= 8 ? si->small : malloc((size_t)iovcnt * sizeof(struct iovec));
	return si->v ? 0 : vt_error_set(err, ENOMEM, b->filename, "I/O", NULL);
}

static void sub_iov_free(struct sub_iov *si)
{
	if (si->v != si->small)
		free(si->v);
}

static uint32_t bat_get(struct vpc *s, uint64_t idx)
{
	pthread_mutex_lock(&s->lock);
	uint32_t e = s->bat[idx];
	pthread_mutex_unlock(&s->lock);
	return e;
}

static int vpc_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                      struct vt_error *err)
{
	struct vpc *s = b->opaque;
	size_t len = vt_iov_size(iov, iovcnt), done = 0;
	struct sub_iov si;
	int r;

	if (s->passthrough)
		return blk_file_preadv(b->file, off, iov, iovcnt, err);
	if ((r = sub_iov_init(&si, iovcnt, b, err)) < 0)
		return r;
	while (done < len && r == 0) {
		uint64_t idx = off / s->block_size, in = off % s->block_size;
		size_t n = len - done < s->block_size - in ? len - done : (size_t)(s->block_size - in);
		uint32_t e = bat_get(s, idx);
		if (e == VHD_BAT_UNUSED) {
			vt_iov_memset(iov, iovcnt, done, 0, n);
		} else {
			int cnt = iov_slice(iov, iovcnt, done, n, si.v);
			r = blk_file_preadv(b->file, (uint64_t)e * VHD_SECTOR + s->bitmap_size + in,
			                    si.v, cnt, err);
		}
		off += n;
		done += n;
	}
	sub_iov_free(&si);
	return r;
}

static bool pending_has(const struct vpc *s, uint32_t idx)
{
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i] == idx)
			return true;
	return false;
}

static void pending_del(struct vpc *s, uint32_t idx)
{
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i] == idx) {
			s->pending[i] = s->pending[--s->npending];
			break;
		}
	pthread_cond_broadcast(&s->allocated);
}

/* Under the lock: place block idx at the frontier. The footer moves past it first, so
 * the file always ends with one; then the all-ones bitmap goes over the old footer. */
static int reserve_block(struct blk *b, struct vpc *s, uint32_t idx, uint64_t *where,
                         struct vt_error *err)
{
	uint64_t off = s->free_off, end = off + s->bitmap_size + s->block_size;
	int r;

	if (off / VHD_SECTOR >= VHD_BAT_UNUSED)
		return vt_error_set(err, EFBIG, b->filename, "allocate block",
		                    "the image file is too large for a VHD block table");
	if (s->npending == s->pending_cap) {
		size_t cap = s->pending_cap ? s->pending_cap * 2 : 16;
		uint32_t *p = realloc(s->pending, cap * sizeof(*p));
		if (!p)
			return vt_error_set(err, ENOMEM, b->filename, "allocate block", NULL);
		s->pending = p;
		s->pending_cap = cap;
	}
	uint8_t *bitmap = malloc(s->bitmap_size);
	if (!bitmap)
		return vt_error_set(err, ENOMEM, b->filename, "allocate block", NULL);
	memset(bitmap, 0xff, s->bitmap_size);
	/* Left over from a killed writer, past what the BAT knows: must read as zeros. */
	if (off + s->bitmap_size < s->stale_end &&
	    (r = blk_file_zero(b->file, off + s->bitmap_size,
	                       (end < s->stale_end ? end : s->stale_end) - off - s->bitmap_size,
	                       true, err)) < 0)
		goto out;
	if ((r = blk_file_pwrite(b->file, end, s->footer, VHD_FOOTER_SIZE, err)) < 0 ||
	    (r = blk_file_pwrite(b->file, off, bitmap, s->bitmap_size, err)) < 0)
		goto out;
	s->free_off = end;
	s->pending[s->npending++] = idx;
	*where = off;
out:
	free(bitmap);
	return r;
}

/* Under the lock: point BAT entry idx at the block written at off. */
static int commit_block(struct blk *b, struct vpc *s, uint32_t idx, uint64_t off,
                        struct vt_error *err)
{
	uint8_t e[4];
	put_be32(e, (uint32_t)(off / VHD_SECTOR));
	int r = blk_file_pwrite(b->file, s->bat_offset + 4ull * idx, e, 4, err);
	if (r == 0) {
		s->bat[idx] = (uint32_t)(off / VHD_SECTOR);
		s->bitmap_full[idx / 8] |= (uint8_t)(1u << (idx % 8));
	}
	return r;
}

/* Write n bytes (from iov at skip) at offset `in` of block idx, allocating it if needed. */
static int write_in_block(struct blk *b, struct vpc *s, uint32_t idx, uint64_t in,
                          const struct iovec *iov, int iovcnt, size_t skip, size_t n,
                          struct iovec *sub, struct vt_error *err)
{
	int cnt = iov_slice(iov, iovcnt, skip, n, sub), r = 0;
	uint64_t off = 0;

	pthread_mutex_lock(&s->lock);
	while (s->bat[idx] == VHD_BAT_UNUSED && pending_has(s, idx))
		pthread_cond_wait(&s->allocated, &s->lock);
	if (s->bat[idx] != VHD_BAT_UNUSED) {
		off = (uint64_t)s->bat[idx] * VHD_SECTOR;
		/* Sectors whose bitmap bit is clear read as zeros in other tools: set them all
		 * once, as qemu does, before data lands in them. */
		if (!(s->bitmap_full[idx / 8] & (1u << (idx % 8)))) {
			uint8_t *ones = malloc(s->bitmap_size);
			if (!ones)
				r = vt_error_set(err, ENOMEM, b->filename, "write", NULL);
			else {
				memset(ones, 0xff, s->bitmap_size);
				r = blk_file_pwrite(b->file, off, ones, s->bitmap_size, err);
				free(ones);
			}
			if (r == 0)
				s->bitmap_full[idx / 8] |= (uint8_t)(1u << (idx % 8));
		}
		pthread_mutex_unlock(&s->lock);
		return r < 0 ? r : blk_file_pwritev(b->file, off + s->bitmap_size + in, sub, cnt, err);
	}
	r = reserve_block(b, s, idx, &off, err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	/* Data, then (once it and the grown file are durable) the entry that points at it. */
	r = blk_file_pwritev(b->file, off + s->bitmap_size + in, sub, cnt, err);
	if (r == 0)
		r = blk_file_flush(b->file, err);
	pthread_mutex_lock(&s->lock);
	if (r == 0)
		r = commit_block(b, s, idx, off, err);
	pending_del(s, idx);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int vpc_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	struct vpc *s = b->opaque;
	size_t len = vt_iov_size(iov, iovcnt), done = 0;
	struct sub_iov si;
	int r;

	if (s->passthrough)
		return blk_file_pwritev(b->file, off, iov, iovcnt, err);
	if ((r = sub_iov_init(&si, iovcnt, b, err)) < 0)
		return r;
	while (done < len && r == 0) {
		uint64_t idx = off / s->block_size, in = off % s->block_size;
		size_t n = len - done < s->block_size - in ? len - done : (size_t)(s->block_size - in);
		r = write_in_block(b, s, (uint32_t)idx, in, iov, iovcnt, done, n, si.v, err);
		off += n;
		done += n;
	}
	sub_iov_free(&si);
	return r;
}

/* Zeros need no block: unallocated blocks already read as zeros. */
static int vpc_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                            struct vt_error *err)
{
	struct vpc *s = b->opaque;
	int r = 0;

	if (s->passthrough)
		return blk_file_zero(b->file, off, len, flags & BLK_MAY_UNMAP, err);
	while (len && r == 0) {
		uint64_t idx = off / s->block_size, in = off % s->block_size;
		uint64_t n = len < s->block_size - in ? len : s->block_size - in;
		uint32_t e = bat_get(s, idx);
		if (e != VHD_BAT_UNUSED)
			r = blk_file_zero(b->file, (uint64_t)e * VHD_SECTOR + s->bitmap_size + in, n,
			                  flags & BLK_MAY_UNMAP, err);
		off += n;
		len -= n;
	}
	return r;
}

static int vpc_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                            struct vt_error *err)
{
	struct vpc *s = b->opaque;

	if (s->passthrough) {
		/* The disk is the file: holes in it read as zeros (still data, as qemu says). */
		bool data;
		int r = blk_file_extent(b->file, off, len, &data, &st->len, err);
		if (r < 0)
			return r;
		st->flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_OFFSET_VALID |
		            (data ? 0 : BLK_STATUS_ZERO);
		st->host_offset = off;
		return 0;
	}
	st->flags = BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO;
	st->len = 0;
	pthread_mutex_lock(&s->lock);
	while (st->len < len) {
		uint64_t idx = off / s->block_size, in = off % s->block_size;
		uint64_t n = len - st->len < s->block_size - in ? len - st->len : s->block_size - in;
		uint32_t e = s->bat[idx];
		if (e != VHD_BAT_UNUSED) {
			/* A data block ends at its block's end: a bitmap follows. */
			if (st->len == 0) {
				st->len = n;
				st->flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_OFFSET_VALID;
				st->host_offset = (uint64_t)e * VHD_SECTOR + s->bitmap_size + in;
			}
			break;
		}
		st->len += n;
		off += n;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int vpc_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	struct vpc *s = b->opaque;
	if (!s->passthrough)
		info->cluster_size = s->block_size;
	return 0;
}

/* qemu's (and the VHD specification's) CHS geometry for a number of sectors; it may
 * round down. */
static void chs_geometry(uint64_t sectors, uint16_t *cyls, uint8_t *heads, uint8_t *secs)
{
	uint32_t cyls_times_heads;

	if (sectors > VHD_MAX_GEOMETRY)
		sectors = VHD_MAX_GEOMETRY;
	if (sectors >= 65535ull * 16 * 63) {
		*secs = 255;
		*heads = 16;
		cyls_times_heads = (uint32_t)(sectors / *secs);
	} else {
		*secs = 17;
		cyls_times_heads = (uint32_t)(sectors / *secs);
		uint32_t h = (cyls_times_heads + 1023) / 1024;
		if (h < 4)
			h = 4;
		if (cyls_times_heads >= h * 1024 || h > 16) {
			*secs = 31;
			h = 16;
			cyls_times_heads = (uint32_t)(sectors / *secs);
		}
		if (cyls_times_heads >= h * 1024) {
			*secs = 63;
			h = 16;
			cyls_times_heads = (uint32_t)(sectors / *secs);
		}
		*heads = (uint8_t)h;
	}
	*cyls = (uint16_t)(cyls_times_heads / *heads);
}

static const struct blk_optdesc vpc_create_opts[] = {
	{ "force_size", BLK_OPT_BOOL,
	  "Force disk size calculation to use the actual size specified, rather than using "
	  "the nearest CHS-based calculation" },
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ "subformat", BLK_OPT_STRING,
	  "Type of virtual hard disk format. Supported formats are {dynamic (default) | "
	  "fixed} " },
	{ NULL, 0, NULL },
};

static void random_uuid(uint8_t uuid[16])
{
	if (getrandom(uuid, 16, 0) != 16) {
		/* No entropy source: still unique enough for an identifier. */
		uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)uuid;
		for (int i = 0; i < 16; i++)
			uuid[i] = (uint8_t)(t >> (i % 8 * 8)) ^ (uint8_t)(i * 37);
	}
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40); /* version 4 */
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static int vpc_create(struct blk_file *f, const char *filename,
                      const struct blk_create_opts *o, const struct blk_optlist *opts,
                      char **formatting, struct vt_error *err)
{
	const char *subfmt = blk_opts_get(opts, "subformat");
	bool force = false, fixed = false;
	uint16_t cyls = 0;
	uint8_t heads = 0, secs = 0;
	int r;

	if ((r = blk_opts_get_bool(opts, "force_size", &force, err)) < 0)
		return r;
	if (subfmt && !strcmp(subfmt, "fixed"))
		fixed = true;
	else if (subfmt && strcmp(subfmt, "dynamic"))
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Parameter 'subformat' does not accept value '%s'", subfmt);
	if (o->size > VHD_MAX_SECTORS * VHD_SECTOR)
		return vt_error_set(err, EFBIG, filename, "create",
		                    "The image size is too large for file format 'vpc'");
	/* The size is rounded up to whole sectors, then (without force_size) up to the
	 * first CHS geometry that holds it; the maximum geometry means "use the size". */
	uint64_t sectors = (o->size + VHD_SECTOR - 1) / VHD_SECTOR;
	if (force) {
		cyls = VHD_CHS_MAX_C;
		heads = VHD_CHS_MAX_H;
		secs = VHD_CHS_MAX_S;
	} else {
		uint64_t want = sectors < VHD_MAX_GEOMETRY ? sectors : VHD_MAX_GEOMETRY;
		for (uint64_t i = 0; want > (uint64_t)cyls * heads * secs; i++)
			chs_geometry(want + i, &cyls, &heads, &secs);
	}
	if ((uint64_t)cyls * heads * secs != VHD_MAX_GEOMETRY)
		sectors = (uint64_t)cyls * heads * secs;
	else if (sectors > VHD_MAX_SECTORS)
		return vt_error_set(err, EFBIG, filename, "create",
		                    "Disk size is too large, max size is 2040 GiB");
	uint64_t size = sectors * VHD_SECTOR;

	uint8_t footer[VHD_FOOTER_SIZE] = { 0 };
	memcpy(footer, "conectix", 8);
	put_be32(footer + FOOTER_OFF(features), 2);
	put_be32(footer + FOOTER_OFF(version), 0x00010000);
	put_be64(footer + FOOTER_OFF(data_offset), fixed ? UINT64_MAX : VHD_FOOTER_SIZE);
	put_be32(footer + FOOTER_OFF(timestamp), (uint32_t)((uint64_t)time(NULL) - VHD_EPOCH));
	memcpy(footer + FOOTER_OFF(creator_app), force ? "qem2" : "qemu", 4);
	put_be16(footer + FOOTER_OFF(creator_major), 5); /* Virtual PC 2007 */
	put_be16(footer + FOOTER_OFF(creator_minor), 3);
	memcpy(footer + FOOTER_OFF(creator_os), "Wi2k", 4);
	put_be64(footer + FOOTER_OFF(orig_size), size);
	put_be64(footer + FOOTER_OFF(current_size), size);
	put_be16(footer + FOOTER_OFF(cyls), cyls);
	footer[FOOTER_OFF(heads)] = heads;
	footer[FOOTER_OFF(secs_per_cyl)] = secs;
	put_be32(footer + FOOTER_OFF(type), fixed ? VHD_TYPE_FIXED : 3);
	random_uuid(footer + FOOTER_OFF(uuid));
	put_be32(footer + FOOTER_OFF(checksum),
	         vhd_checksum(footer, VHD_FOOTER_SIZE, FOOTER_OFF(checksum)));

	if (fixed) {
		/* The disk, sparse, then the footer. */
		if ((r = blk_file_truncate(f, size + VHD_FOOTER_SIZE, err)) < 0 ||
		    (r = blk_file_pwrite(f, size, footer, VHD_FOOTER_SIZE, err)) < 0)
			return r;
	} else {
		uint64_t entries = (sectors + VHD_DEFAULT_BLOCK / VHD_SECTOR - 1) /
		                   (VHD_DEFAULT_BLOCK / VHD_SECTOR);
		uint64_t bat_bytes = (entries * 4 + 511) & ~511ull, bat_off = 3 * VHD_SECTOR;
		uint8_t *bat = malloc(bat_bytes + 1);
		uint8_t dyn[VHD_DYN_HEADER_SIZE] = { 0 };
		if (!bat)
			return vt_error_set(err, ENOMEM, filename, "create", NULL);
		memset(bat, 0xff, bat_bytes);
		memcpy(dyn, "cxsparse", 8);
		/* The specification says 0xFFFFFFFF here; Microsoft's tools want all 64 bits. */
		put_be64(dyn + DYN_OFF(data_offset), UINT64_MAX);
		put_be64(dyn + DYN_OFF(table_offset), bat_off);
		put_be32(dyn + DYN_OFF(version), 0x00010000);
		put_be32(dyn + DYN_OFF(max_table_entries), (uint32_t)entries);
		put_be32(dyn + DYN_OFF(block_size), VHD_DEFAULT_BLOCK);
		put_be32(dyn + DYN_OFF(checksum),
		         vhd_checksum(dyn, VHD_DYN_HEADER_SIZE, DYN_OFF(checksum)));
		if ((r = blk_file_pwrite(f, 0, footer, VHD_FOOTER_SIZE, err)) == 0 &&
		    (r = blk_file_pwrite(f, VHD_FOOTER_SIZE, dyn, VHD_DYN_HEADER_SIZE, err)) == 0 &&
		    (r = blk_file_pwrite(f, bat_off, bat, bat_bytes, err)) == 0)
			r = blk_file_pwrite(f, bat_off + bat_bytes, footer, VHD_FOOTER_SIZE, err);
		free(bat);
		if (r < 0)
			return r;
	}
	if (formatting) {
		char buf[256];
		const char *fs = blk_opts_get(opts, "force_size");
		snprintf(buf, sizeof(buf), "fmt=vpc size=%llu%s%s%s%s", (unsigned long long)o->size,
		         subfmt ? " subformat=" : "", subfmt ? subfmt : "",
		         fs ? " force_size=" : "", fs ? fs : "");
		if (!(*formatting = strdup(buf)))
			return vt_error_set(err, ENOMEM, filename, "create", NULL);
	}
	return 0;
}

const struct blk_driver blk_driver_vpc = {
	.name = "vpc",
	.open = vpc_open,
	.close = vpc_close,
	.preadv = vpc_preadv,
	.pwritev = vpc_pwritev,
	.write_zeroes = vpc_write_zeroes,
	.block_status = vpc_block_status,
	.get_info = vpc_get_info,
	.create = vpc_create,
	.create_opts = vpc_create_opts,
};
