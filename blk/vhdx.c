/* vhdx: Hyper-V VHDX images (dynamic and fixed; differencing ones are refused, as qemu
 * does). Open (headers, log replay, region table, metadata, BAT), data I/O, info and
 * check. See vhdx.h for the layout and the locking, vhdx-header.c for the header section
 * and vhdx-log.c for the log.
 *
 * Writes: a block that is not yet present gets a new one at the end of the file (1 MiB
 * aligned, the file grown first); the data goes in, and once it is flushed the BAT entry
 * is changed through the log, as the specification asks for metadata. A writer killed
 * at any point leaves at worst an unreferenced block, or a log the next writable open
 * replays. Before the first write of a session both headers get a new data write GUID. */
#include "blk/vhdx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read a metadata item's first bytes (zeros past the end of the file, as qemu reads). */
static int read_item(struct vhdx *s, const uint8_t *entry, void *buf, size_t len,
                     struct vt_error *err)
{
	return blk_file_pread(s->b->file, s->meta_offset + vhdx_le32(entry + 16), buf, len, err);
}

static int open_metadata(struct vhdx *s, struct vt_error *err)
{
	struct blk *b = s->b;
	static const uint8_t *const known[] = { vhdx_guid_file_params, vhdx_guid_virtual_size,
	                                        vhdx_guid_page83, vhdx_guid_logical_sector,
	                                        vhdx_guid_physical_sector,
	                                        vhdx_guid_parent_locator };
	const uint8_t *found[6] = { NULL };
	uint8_t *t = malloc(VHDX_METADATA_TABLE_SIZE);
	uint8_t params[8], vsize[8], lsec[4];
	int r;

	if (!t)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	if ((r = blk_file_pread(b->file, s->meta_offset, t, VHDX_METADATA_TABLE_SIZE, err)) < 0)
		goto out;
	r = -EINVAL;
	if (memcmp(t, "metadata", 8)) {
		vt_error_set(err, EINVAL, b->filename, "open", "VHDX metadata: bad signature");
		goto out;
	}
	uint16_t n = vhdx_le16(t + 10);
	if ((size_t)n * 32 > VHDX_METADATA_TABLE_SIZE - 32) {
		vt_error_set(err, EINVAL, b->filename, "open", "VHDX metadata: %u entries", n);
		goto out;
	}
	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *e = t + 32 + 32 * (size_t)i;
		size_t k = 0;
		while (k < 6 && memcmp(e, known[k], 16))
			k++;
		if (k < 6 && found[k]) {
			vt_error_set(err, EINVAL, b->filename, "open", "VHDX metadata: an item twice");
			goto out;
		}
		if (k < 6)
			found[k] = e;
		else if (vhdx_le32(e + 24) & 4) {
			r = vt_error_set(err, ENOTSUP, b->filename, "open",
			                 "VHDX metadata: a required item vtool does not know");
			goto out;
		}
	}
	if (!found[0] || !found[1] || !found[2] || !found[3] || !found[4]) {
		r = vt_error_set(err, ENOTSUP, b->filename, "open",
		                 "VHDX metadata: a required item is missing");
		goto out;
	}
	if ((r = read_item(s, found[0], params, 8, err)) < 0 ||
	    (r = read_item(s, found[1], vsize, 8, err)) < 0 ||
	    (r = read_item(s, found[3], lsec, 4, err)) < 0)
		goto out;
	r = -EINVAL;
	uint32_t flags = vhdx_le32(params + 4);
	if (flags & 2) {
		r = vt_error_set(err, found[5] ? ENOTSUP : EINVAL, b->filename, "open", "%s",
		                 found[5] ? "differencing VHDX images are not supported"
		                          : "VHDX: has a parent but no parent locator");
		goto out;
	}
	s->fixed = flags & 1;
	s->block_size = vhdx_le32(params);
	if (s->block_size < VHDX_BLOCK_MIN || s->block_size > VHDX_BLOCK_MAX ||
	    (s->block_size & (s->block_size - 1))) {
		vt_error_set(err, EINVAL, b->filename, "open", "VHDX: invalid block size %u",
		             s->block_size);
		goto out;
	}
	if (vhdx_le32(lsec) != 512) {
		r = vt_error_set(err, ENOTSUP, b->filename, "open",
		                 "VHDX: logical sector size %u (only 512 is supported)",
		                 vhdx_le32(lsec));
		goto out;
	}
	s->block_bits = (unsigned)__builtin_ctz(s->block_size);
	s->chunk_ratio = (uint32_t)(((uint64_t)VHDX_MAX_SECTORS_PER_BLOCK * 512) / s->block_size);
	s->chunk_bits = (unsigned)__builtin_ctz(s->chunk_ratio);
	/* qemu counts the disk in whole 512-byte sectors. */
	b->size = vhdx_le64(vsize) & ~511ull;
	r = 0;
out:
	free(t);
	return r;
}

/* Validate the BAT as qemu's check does (entries past the end of the file, payload
 * blocks on the log, BAT or metadata), plus what writes must never meet: payload blocks
 * in the header section or on each other. Returns the number of problems; each is
 * reported (when report is set) and marked in s->bad (when mark). */
struct placed {
	uint64_t off;
	uint32_t idx;
};

static int cmp_placed(const void *a, const void *b)
{
	const struct placed *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static uint64_t validate_bat(struct vhdx *s, uint64_t fsize, bool mark,
                             void (*report)(void *, const char *), void *opaque,
                             struct vt_error *first)
{
	uint64_t problems = 0, vs = s->b->size;
	char line[256];
	struct placed *starts = NULL;
	size_t nstarts = 0;

#define PROBLEM(i, ...) do { \
		snprintf(line, sizeof(line), __VA_ARGS__); \
		if (report) \
			report(opaque, line); \
		if (first && !problems) \
			vt_error_set(first, EINVAL, s->b->filename, "open", "%s", line); \
		if (mark && s->bad) \
			s->bad[(i) / 8] |= (uint8_t)(1u << ((i) % 8)); \
		problems++; \
	} while (0)

	if (mark && !s->bad)
		s->bad = calloc((size_t)s->bat_entries / 8 + 1, 1);
	starts = malloc(((size_t)s->bat_entries + 1) * sizeof(*starts));
	if (!starts)
		PROBLEM(0, "VHDX BAT: out of memory while checking blocks for overlaps");
	for (uint32_t i = 0; i < s->bat_entries; i++) {
		uint64_t e = s->bat[i], off = e & VHDX_BAT_OFFSET_MASK;
		bool bitmap = (i + 1) % (s->chunk_ratio + 1) == 0;
		if ((e & VHDX_BAT_STATE_MASK) != VHDX_BLOCK_FULLY_PRESENT)
			continue;
		uint64_t payload = i - i / (s->chunk_ratio + 1);
		/* The last block may be cut short (qemu made such files). */
		uint64_t len = bitmap ? VHDX_MIB :
		               payload * s->block_size < vs ? vs - payload * s->block_size : 0;
		if (len > s->block_size)
			len = s->block_size;
		if (off > (uint64_t)INT64_MAX - s->block_size)
			PROBLEM(i, "VHDX BAT entry %u offset overflow.", i);
		if (off >= fsize)
			PROBLEM(i, "VHDX BAT entry %u start offset %llu points after end of file "
			        "(%llu). Image has probably been truncated.", i,
			        (unsigned long long)off, (unsigned long long)fsize);
		else if (off + len > fsize)
			PROBLEM(i, "VHDX BAT entry %u end offset %llu points after end of file "
			        "(%llu). Image has probably been truncated.", i,
			        (unsigned long long)(off + len - 1), (unsigned long long)fsize);
		if (bitmap)
			continue;
		int w;
		if (vhdx_overlaps(s, off, s->block_size, &w))
			PROBLEM(i, "VHDX region %llu-%llu overlaps with region %llu-%.llu",
			        (unsigned long long)off, (unsigned long long)(off + s->block_size),
			        (unsigned long long)s->regions[w].start,
			        (unsigned long long)s->regions[w].end);
		if (off < VHDX_HEADER_SECTION_END)
			PROBLEM(i, "VHDX BAT entry %u points into the header section (%llu)", i,
			        (unsigned long long)off);
		if (starts)
			starts[nstarts++] = (struct placed){ off, i };
	}
	/* Two payload blocks on the same bytes: a write to one would change the other. */
	if (starts && nstarts > 1) {
		qsort(starts, nstarts, sizeof(*starts), cmp_placed);
		for (size_t i = 1; i < nstarts; i++)
			if (starts[i].off - starts[i - 1].off < s->block_size)
				PROBLEM(starts[i].idx, "VHDX BAT entries %u and %u overlap",
				        starts[i - 1].idx, starts[i].idx);
	}
#undef PROBLEM
	free(starts);
	return problems;
}

static int open_bat(struct vhdx *s, bool for_check, struct vt_error *err)
{
	struct blk *b = s->b;
	uint64_t fsize;
	int r = blk_file_size(b->file, &fsize, err);
	if (r < 0)
		return r;
	/* Every block of the disk must have its entry: qemu counts blocks in 32 bits. */
	uint64_t blocks = b->size > (uint64_t)INT64_MAX / 2 ? UINT64_MAX
	                : (b->size + s->block_size - 1) / s->block_size;
	if (blocks && blocks + ((blocks - 1) >> s->chunk_bits) > UINT32_MAX)
		return vt_error_set(err, EFBIG, b->filename, "open",
		                    "VHDX virtual disk size %llu is too large",
		                    (unsigned long long)b->size);
	s->bat_entries = vhdx_bat_entries(b->size, s->block_size, s->chunk_bits);
	if (s->bat_entries > s->bat_length / 8)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "VHDX BAT region too small for the disk (%u entries)",
		                    s->bat_entries);
	uint64_t bytes = (uint64_t)s->bat_entries * 8;
	/* Bound what we allocate by what the file holds. */
	if (s->bat_offset > fsize || bytes > fsize - s->bat_offset)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "VHDX BAT extends past the end of the file");
	uint8_t *raw = malloc(bytes + 1);
	s->bat = malloc(bytes + 8);
	if (!raw || !s->bat) {
		free(raw);
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	}
	r = blk_file_pread(b->file, s->bat_offset, raw, bytes, err);
	for (uint32_t i = 0; r == 0 && i < s->bat_entries; i++)
		s->bat[i] = vhdx_le64(raw + 8 * (size_t)i);
	free(raw);
	if (r < 0)
		return r;
	s->file_end = fsize;
	struct vt_error first = { 0 };
	s->bad_entries = (uint32_t)validate_bat(s, fsize, for_check, NULL, NULL, &first);
	if (s->bad_entries && !for_check) {
		*err = first;
		return -EINVAL;
	}
	if (s->bad_entries && !s->bad)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	return 0;
}

static void vhdx_close(struct blk *b)
{
	struct vhdx *s = b->opaque;
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->log_lock);
	pthread_cond_destroy(&s->allocated);
	free(s->regions);
	free(s->bat);
	free(s->bad);
	free(s->pending);
	free(s);
	b->opaque = NULL;
}

static int vhdx_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct vhdx *s = calloc(1, sizeof(*s));
	char sig[8];
	int r;

	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	b->opaque = s;
	s->b = b;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->log_lock, NULL);
	pthread_cond_init(&s->allocated, NULL);
	vhdx_random_guid(s->session_guid);
	if ((r = blk_file_pread(b->file, 0, sig, 8, err)) < 0)
		goto fail;
	if (memcmp(sig, "vhdxfile", 8)) {
		r = vt_error_set(err, EINVAL, b->filename, "open",
		                 "not a VHDX image (no vhdxfile signature)");
		goto fail;
	}
	/* The order is qemu's: the log is replayed before the regions it may change are
	 * read. img check opens without a backing chain, and is the one open that must
	 * get past bad BAT entries to count them (qemu's BDRV_O_CHECK). */
	if ((r = vhdx_open_headers(s, err)) < 0 || (r = vhdx_log_open(s, &s->replayed, err)) < 0 ||
	    (r = vhdx_open_region_table(s, err)) < 0 || (r = open_metadata(s, err)) < 0 ||
	    (r = open_bat(s, o->for_check || o->repair, err)) < 0)
		goto fail;
	return 0;
fail:
	vhdx_close(b);
	return r;
}

static int block_error(struct vhdx *s, uint32_t idx, uint64_t e, struct vt_error *err)
{
	if (s->bad && (s->bad[idx / 8] & (1u << (idx % 8))))
		return vt_error_set(err, EIO, s->b->filename, "I/O",
		                    "VHDX BAT entry %u is damaged (see vtool img check)", idx);
	return vt_error_set(err, EIO, s->b->filename, "I/O",
	                    "VHDX BAT entry %u has state %u (differencing images are not "
	                    "supported)", idx, (unsigned)(e & VHDX_BAT_STATE_MASK));
}

/* BAT index of the payload block holding disk offset off. */
static uint32_t bat_index(const struct vhdx *s, uint64_t off)
{
	uint64_t p = off >> s->block_bits;
	return (uint32_t)(p + (p >> s->chunk_bits));
}

static uint64_t bat_get(struct vhdx *s, uint32_t idx, bool *bad)
{
	pthread_mutex_lock(&s->lock);
	uint64_t e = s->bat[idx];
	*bad = s->bad && (s->bad[idx / 8] & (1u << (idx % 8)));
	pthread_mutex_unlock(&s->lock);
	return e;
}

static bool reads_zero(uint64_t e)
{
	switch (e & VHDX_BAT_STATE_MASK) {
	case VHDX_BLOCK_NOT_PRESENT: case VHDX_BLOCK_UNDEFINED: case VHDX_BLOCK_ZERO:
	case VHDX_BLOCK_UNMAPPED_OLD: case VHDX_BLOCK_UNMAPPED:
		return true;
	default:
		return false;
	}
}

/* The iovec [skip, skip+len) of iov as a vector in out (at most iovcnt entries). */
static int iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
                     struct iovec *out)
{
	int m = 0;
	vt_iov_slice(iov, iovcnt, skip, len, out, &m, iovcnt);
	return m;
}

static int vhdx_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	struct vhdx *s = b->opaque;
	size_t len = vt_iov_size(iov, iovcnt), done = 0;
	struct iovec small[8], *sub = iovcnt <= 8 ? small : malloc((size_t)iovcnt * sizeof(*sub));
	int r = 0;

	if (!sub)
		return vt_error_set(err, ENOMEM, b->filename, "read", NULL);
	while (done < len && r == 0) {
		uint64_t in = off & (s->block_size - 1);
		size_t n = len - done < s->block_size - in ? len - done : (size_t)(s->block_size - in);
		uint32_t idx = bat_index(s, off);
		bool bad;
		uint64_t e = bat_get(s, idx, &bad);
		if (bad)
			r = block_error(s, idx, e, err);
		else if (reads_zero(e))
			vt_iov_memset(iov, iovcnt, done, 0, n);
		else if ((e & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_FULLY_PRESENT)
			r = blk_file_preadv(b->file, (e & VHDX_BAT_OFFSET_MASK) + in, sub,
			                    iov_slice(iov, iovcnt, done, n, sub), err);
		else
			r = block_error(s, idx, e, err);
		off += n;
		done += n;
	}
	if (sub != small)
		free(sub);
	return r;
}

static bool pending_has(const struct vhdx *s, uint32_t idx)
{
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i] == idx)
			return true;
	return false;
}

static void pending_del(struct vhdx *s, uint32_t idx)
{
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i] == idx) {
			s->pending[i] = s->pending[--s->npending];
			break;
		}
	pthread_cond_broadcast(&s->allocated);
}

/* Under the lock: a new block at the end of the file, 1 MiB aligned, the file grown so
 * that all of it reads as zeros. */
static int reserve_block(struct vhdx *s, uint32_t idx, uint64_t *where, struct vt_error *err)
{
	uint64_t off = (s->file_end + VHDX_MIB - 1) & ~(uint64_t)(VHDX_MIB - 1);
	if (off > (VHDX_BAT_OFFSET_MASK & INT64_MAX) - s->block_size)
		return vt_error_set(err, EFBIG, s->b->filename, "allocate block",
		                    "the image file is too large");
	if (s->npending == s->pending_cap) {
		size_t cap = s->pending_cap ? s->pending_cap * 2 : 16;
		uint32_t *p = realloc(s->pending, cap * sizeof(*p));
		if (!p)
			return vt_error_set(err, ENOMEM, s->b->filename, "allocate block", NULL);
		s->pending = p;
		s->pending_cap = cap;
	}
	int r = blk_file_truncate(s->b->file, off + s->block_size, err);
	if (r < 0)
		return r;
	s->file_end = off + s->block_size;
	s->pending[s->npending++] = idx;
	*where = off;
	return 0;
}

/* Point BAT entry idx at a block written at off, through the log (which merges the
 * entry into the 4 KiB of the BAT around it as they are on disk: commits are serialized
 * by log_lock, so the disk has every committed entry). */
static int commit_block(struct vhdx *s, uint32_t idx, uint64_t off, struct vt_error *err)
{
	uint8_t entry[8];
	vhdx_put_le64(entry, off | VHDX_BLOCK_FULLY_PRESENT);
	pthread_mutex_lock(&s->log_lock);
	int r = vhdx_log_write(s, s->bat_offset + 8ull * idx, entry, 8, err);
	pthread_mutex_lock(&s->lock);
	if (r == 0)
		s->bat[idx] = off | VHDX_BLOCK_FULLY_PRESENT;
	pending_del(s, idx);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->log_lock);
	return r;
}

static int write_in_block(struct vhdx *s, uint32_t idx, uint64_t in, const struct iovec *sub,
                          int cnt, struct vt_error *err)
{
	struct blk *b = s->b;
	uint64_t off = 0;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	while (pending_has(s, idx))
		pthread_cond_wait(&s->allocated, &s->lock);
	uint64_t e = s->bat[idx];
	if (s->bad && (s->bad[idx / 8] & (1u << (idx % 8))))
		r = block_error(s, idx, e, err);
	else if ((e & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_FULLY_PRESENT) {
		pthread_mutex_unlock(&s->lock);
		return blk_file_pwritev(b->file, (e & VHDX_BAT_OFFSET_MASK) + in, sub, cnt, err);
	} else if (!reads_zero(e))
		r = block_error(s, idx, e, err);
	else
		r = reserve_block(s, idx, &off, err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	/* The data, durable before the entry that points at it. On failure the block is
	 * left unreferenced. */
	r = blk_file_pwritev(b->file, off + in, sub, cnt, err);
	if (r == 0)
		r = blk_file_flush(b->file, err);
	if (r == 0)
		return commit_block(s, idx, off, err);
	pthread_mutex_lock(&s->lock);
	pending_del(s, idx);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int first_write(struct vhdx *s, struct vt_error *err)
{
	pthread_mutex_lock(&s->log_lock);
	int r = vhdx_user_visible_write(s, err);
	pthread_mutex_unlock(&s->log_lock);
	return r;
}

static int vhdx_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                        struct vt_error *err)
{
	struct vhdx *s = b->opaque;
	size_t len = vt_iov_size(iov, iovcnt), done = 0;
	struct iovec small[8], *sub = iovcnt <= 8 ? small : malloc((size_t)iovcnt * sizeof(*sub));
	int r = sub ? first_write(s, err) : vt_error_set(err, ENOMEM, b->filename, "write", NULL);

	while (r == 0 && done < len) {
		uint64_t in = off & (s->block_size - 1);
		size_t n = len - done < s->block_size - in ? len - done : (size_t)(s->block_size - in);
		int cnt = iov_slice(iov, iovcnt, done, n, sub);
		r = write_in_block(s, bat_index(s, off), in, sub, cnt, err);
		off += n;
		done += n;
	}
	if (sub && sub != small)
		free(sub);
	return r;
}

/* Blocks that read as zeros stay as they are; present ones get zeros in place. */
static int vhdx_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                             struct vt_error *err)
{
	struct vhdx *s = b->opaque;
	int r = 0;
	bool touched = false;

	while (len && r == 0) {
		uint64_t in = off & (s->block_size - 1);
		uint64_t n = len < s->block_size - in ? len : s->block_size - in;
		uint32_t idx = bat_index(s, off);
		bool bad;
		uint64_t e = bat_get(s, idx, &bad);
		if (bad)
			r = block_error(s, idx, e, err);
		else if ((e & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_FULLY_PRESENT) {
			if (!touched && (r = first_write(s, err)) == 0)
				touched = true;
			if (r == 0)
				r = blk_file_zero(b->file, (e & VHDX_BAT_OFFSET_MASK) + in, n,
				                  flags & BLK_MAY_UNMAP, err);
		} else if (!reads_zero(e))
			r = block_error(s, idx, e, err);
		off += n;
		len -= n;
	}
	return r;
}

static int vhdx_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	info->cluster_size = ((struct vhdx *)b->opaque)->block_size;
	return 0;
}

/* qemu's check: the log replayed by this (writable) open counts as a fixed corruption;
 * damaged BAT entries are corruptions, one line each. Nothing is repaired. */
static int vhdx_check(struct blk *b, unsigned fix, struct blk_check *res,
                      void (*report)(void *opaque, const char *line), void *opaque,
                      struct vt_error *err)
{
	struct vhdx *s = b->opaque;
	uint64_t fsize;
	int r = blk_file_size(b->file, &fsize, err);
	if (r < 0)
		return r;
	if (s->replayed)
		res->corruptions_fixed++;
	pthread_mutex_lock(&s->lock);
	res->corruptions += validate_bat(s, fsize, false, report, opaque, NULL);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

const struct blk_driver blk_driver_vhdx = {
	.name = "vhdx",
	.open = vhdx_open,
	.close = vhdx_close,
	.preadv = vhdx_preadv,
	.pwritev = vhdx_pwritev,
	.write_zeroes = vhdx_write_zeroes,
	.get_info = vhdx_get_info,
	.check = vhdx_check,
	.create = vhdx_create,
	.create_opts = vhdx_create_opts,
};
