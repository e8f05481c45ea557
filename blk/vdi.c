/* VDI (VirtualBox) images: read, write, create (dynamic and static) and check, with qemu's
 * rules for what it accepts and the same messages.
 *
 * Layout: a 512-byte little-endian header (after 64 bytes of free text), a block map of
 * one 32-bit entry per 1 MiB guest block (the index of its physical block in the data
 * area; 0xffffffff never allocated, 0xfffffffe discarded: both read as zeros), then the
 * data area. Physical blocks are numbered densely in allocation order: the header's
 * blocks_allocated is both the count of mapped blocks and the next free index.
 *
 * Concurrency: one mutex guards the map, the header copy and the allocator; data moves
 * outside it. A writer that finds a block unmapped takes the next physical blocks, writes
 * them without the lock, then records the mapping. Allocations are recorded in the order
 * of their physical blocks (a later one waits for the earlier), so the map on disk always
 * uses exactly the indices below blocks_allocated; other writers of a block whose
 * allocation is in flight wait for it.
 *
 * Crash safety: data reaches the file before the map entry that points to it; the file is
 * grown before it is pointed into. The header's count is written before the map sectors,
 * in one write when both lie in the first 4 KiB (a kill cannot split it); further out a
 * kill between the two writes leaves the count one allocation ahead of the map, which
 * qemu-img check reports, but no two blocks ever share data. */
#include "blk/driver.h"
#include "blk/fmt_common.h"

#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define VDI_SIGNATURE     0xbeda107fu
#define VDI_VERSION_1_1   0x00010001u
#define VDI_TYPE_DYNAMIC  1u
#define VDI_TYPE_STATIC   2u
#define VDI_UNALLOCATED   0xffffffffu
#define VDI_DISCARDED     0xfffffffeu
#define VDI_SECTOR        512u
#define VDI_BLOCK_SHIFT   20
#define VDI_BLOCK_SIZE    (1u << VDI_BLOCK_SHIFT)
/* qemu's limit: the map (4 bytes a block, rounded up to a sector) stays below 2 GiB. */
#define VDI_BLOCKS_MAX    ((0x80000000u - VDI_SECTOR) / 4)
#define VDI_DISK_SIZE_MAX ((uint64_t)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE)
#define VDI_ALLOC_RUN_MAX 16u   /* blocks one allocation takes at most */
#define VDI_TEXT          "<<< QEMU VM Virtual Disk Image >>>\n"

struct vdi_disk_header {
	char text[64];
	uint32_t signature;
	uint32_t version;
	uint32_t header_size;
	uint32_t image_type;
	uint32_t image_flags;
	char description[256];
	uint32_t offset_bmap;
	uint32_t offset_data;
	uint32_t cylinders, heads, sectors; /* legacy geometry, unused */
	uint32_t sector_size;
	uint32_t unused1;
	uint64_t disk_size;
	uint32_t block_size;
	uint32_t block_extra;
	uint32_t blocks_in_image;
	uint32_t blocks_allocated;
	uint8_t uuid_image[16], uuid_last_snap[16], uuid_link[16], uuid_parent[16];
	uint64_t unused2[7];
} __attribute__((packed));
_Static_assert(sizeof(struct vdi_disk_header) == 512, "the VDI header is one sector");

#define HDR(field) offsetof(struct vdi_disk_header, field)

struct vdi {
	pthread_mutex_t lock;
	struct fmt_inflight inflight;   /* guest blocks being allocated */
	uint8_t header[VDI_SECTOR];     /* as on disk: only blocks_allocated is rewritten */
	uint32_t image_type, offset_bmap, offset_data, blocks_in_image, blocks_allocated;
	uint32_t *bmap;                 /* host order, bmap_entries (the sector-rounded map) */
	uint32_t bmap_entries;
	uint32_t next_free;             /* physical block of the next allocation */
	uint32_t commit_next;           /* the allocation that records its mapping next */
	uint64_t file_size;             /* grown by allocations */
	uint64_t zero_from;             /* the file reads zeros from here unless we wrote it */
	int broken;                     /* negative errno: an allocation failed, stop writing */
	const char *no_write;           /* why writing would damage this image, or NULL */
};

static uint8_t zero_block[VDI_BLOCK_SIZE]; /* never written */

static bool allocated(uint32_t e)
{
	return e < VDI_DISCARDED;
}

static uint64_t host_offset(const struct vdi *s, uint32_t e, uint64_t in_block)
{
	return s->offset_data + ((uint64_t)e << VDI_BLOCK_SHIFT) + in_block;
}

static bool uuid_is_null(const uint8_t *u)
{
	for (int i = 0; i < 16; i++)
		if (u[i])
			return false;
	return true;
}

/* The map must be safe to write through: in range, one guest block per physical block,
 * not overlapping the header or each other. qemu writes such images anyway; vtool refuses
 * to make a damaged image worse. */
static const char *write_hazard(struct vdi *s, uint64_t bmap_bytes, struct vt_error *err,
                                int *r)
{
	*r = 0;
	if (s->offset_bmap < VDI_SECTOR)
		return "its block map overlaps the header";
	if (s->offset_data < VDI_SECTOR || (uint64_t)s->offset_data < s->offset_bmap + bmap_bytes)
		return "its data area overlaps the header or the block map";
	uint64_t *seen = calloc((s->blocks_in_image + 63) / 64 + 1, 8);
	if (!seen) {
		*r = vt_error_set(err, ENOMEM, NULL, "open", NULL);
		return NULL;
	}
	const char *why = NULL;
	for (uint32_t i = 0; i < s->blocks_in_image && !why; i++) {
		uint32_t e = s->bmap[i];
		if (!allocated(e))
			continue;
		if (e >= s->blocks_in_image)
			why = "a block map entry points past the last block";
		else if (seen[e / 64] & 1ull << (e % 64))
			why = "two blocks share one data block";
		else
			seen[e / 64] |= 1ull << (e % 64);
	}
	free(seen);
	return why;
}

static int vdi_parse_header(struct blk *b, struct vdi *s, uint64_t *disk_size,
                            struct vt_error *err)
{
	const uint8_t *h = s->header;
	uint32_t sig = fmt_le32(h + HDR(signature)), ver = fmt_le32(h + HDR(version));
	uint32_t sector = fmt_le32(h + HDR(sector_size)), bs = fmt_le32(h + HDR(block_size));
	uint64_t size = fmt_le64(h + HDR(disk_size));
	const char *fn = b->filename;

	s->image_type = fmt_le32(h + HDR(image_type));
	s->offset_bmap = fmt_le32(h + HDR(offset_bmap));
	s->offset_data = fmt_le32(h + HDR(offset_data));
	s->blocks_in_image = fmt_le32(h + HDR(blocks_in_image));
	s->blocks_allocated = fmt_le32(h + HDR(blocks_allocated));
	/* Checked in qemu's order, with its words. */
	if (size > VDI_DISK_SIZE_MAX)
		return vt_error_set(err, ENOTSUP, fn, "open", "Unsupported VDI image size (size is "
		                    "0x%" PRIx64 ", max supported is 0x%" PRIx64 ")", size,
		                    VDI_DISK_SIZE_MAX);
	/* VBoxManage convertfromraw makes odd sizes; qemu rounds them up to a sector. */
	size = (size + VDI_SECTOR - 1) & ~(uint64_t)(VDI_SECTOR - 1);
	if (sig != VDI_SIGNATURE)
		return vt_error_set(err, EINVAL, fn, "open",
		                    "Image not in VDI format (bad signature %08" PRIx32 ")", sig);
	if (ver != VDI_VERSION_1_1)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (version %"
		                    PRIu32 ".%" PRIu32 ")", ver >> 16, ver & 0xffff);
	if (s->offset_bmap % VDI_SECTOR)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (unaligned "
		                    "block map offset 0x%" PRIx32 ")", s->offset_bmap);
	if (s->offset_data % VDI_SECTOR)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (unaligned "
		                    "data offset 0x%" PRIx32 ")", s->offset_data);
	if (sector != VDI_SECTOR)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (sector size %"
		                    PRIu32 " is not %u)", sector, VDI_SECTOR);
	if (bs != VDI_BLOCK_SIZE)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (block size %"
		                    PRIu32 " is not %u)", bs, VDI_BLOCK_SIZE);
	if (size > (uint64_t)s->blocks_in_image * VDI_BLOCK_SIZE)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (disk size %"
		                    PRIu64 ", image bitmap has room for %" PRIu64 ")", size,
		                    (uint64_t)s->blocks_in_image * VDI_BLOCK_SIZE);
	if (!uuid_is_null(h + HDR(uuid_link)))
		return vt_error_set(err, ENOTSUP, fn, "open",
		                    "unsupported VDI image (non-NULL link UUID)");
	if (!uuid_is_null(h + HDR(uuid_parent)))
		return vt_error_set(err, ENOTSUP, fn, "open",
		                    "unsupported VDI image (non-NULL parent UUID)");
	if (s->blocks_in_image > VDI_BLOCKS_MAX)
		return vt_error_set(err, ENOTSUP, fn, "open", "unsupported VDI image (too many "
		                    "blocks %" PRIu32 ", max is %u)", s->blocks_in_image,
		                    VDI_BLOCKS_MAX);
	*disk_size = size;
	return 0;
}

static void vdi_close(struct blk *b)
{
	struct vdi *s = b->opaque;
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->inflight.done);
	free(s->bmap);
	free(s);
	b->opaque = NULL;
}

static int vdi_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct vdi *s = calloc(1, sizeof(*s));
	uint64_t size = 0, fsize = 0;
	int r;

	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	b->opaque = s;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->inflight.done, NULL);
	if ((r = blk_file_pread(b->file, 0, s->header, sizeof(s->header), err)) < 0 ||
	    (r = vdi_parse_header(b, s, &size, err)) < 0 ||
	    (r = blk_file_size(b->file, &fsize, err)) < 0)
		goto fail;
	/* The map is bounded by the file that holds it before anything is allocated. */
	uint64_t bmap_bytes = ((uint64_t)s->blocks_in_image * 4 + VDI_SECTOR - 1) &
	                      ~(uint64_t)(VDI_SECTOR - 1);
	if ((uint64_t)s->offset_bmap + bmap_bytes > fsize) {
		r = vt_error_set(err, EINVAL, b->filename, "open", "VDI block map (%" PRIu64
		                 " bytes at offset 0x%" PRIx32 ") extends past the end of the file",
		                 bmap_bytes, s->offset_bmap);
		goto fail;
	}
	s->bmap_entries = (uint32_t)(bmap_bytes / 4);
	uint8_t *raw = malloc(bmap_bytes ? bmap_bytes : 1);
	s->bmap = malloc(bmap_bytes ? bmap_bytes : 1);
	if (!raw || !s->bmap) {
		free(raw);
		r = vt_error_set(err, ENOMEM, b->filename, "open", "block map of %" PRIu64 " bytes",
		                 bmap_bytes);
		goto fail;
	}
	r = bmap_bytes ? blk_file_pread(b->file, s->offset_bmap, raw, bmap_bytes, err) : 0;
	uint64_t next = s->blocks_allocated;
	for (uint32_t i = 0; r == 0 && i < s->bmap_entries; i++) {
		s->bmap[i] = fmt_le32(raw + (size_t)i * 4);
		if (i < s->blocks_in_image && allocated(s->bmap[i]) && s->bmap[i] >= next)
			next = (uint64_t)s->bmap[i] + 1;
	}
	free(raw);
	if (r < 0)
		goto fail;
	/* A crash can leave the count ahead of the map, never behind: the next free block is
	 * past both. */
	s->next_free = s->commit_next = next > UINT32_MAX ? UINT32_MAX : (uint32_t)next;
	s->file_size = s->zero_from = fsize;
	if (b->writable) {
		s->no_write = write_hazard(s, bmap_bytes, err, &r);
		if (r < 0)
			goto fail;
		if (s->no_write && !b->repair) {
			r = vt_error_set(err, EINVAL, b->filename, "open", "cannot write this VDI "
			                 "image safely: %s (vtool img check shows it)", s->no_write);
			goto fail;
		}
	}
	b->size = size;
	return 0;
fail:
	vdi_close(b);
	return r;
}

/* How many bytes from guest offset pos (at most max) share the first block's state:
 * unallocated, or allocated to consecutive physical blocks. Lock held. */
static uint64_t run_length(const struct vdi *s, uint64_t pos, uint64_t max, uint32_t *entry)
{
	uint32_t blk = (uint32_t)(pos >> VDI_BLOCK_SHIFT), e = s->bmap[blk];
	uint64_t n = VDI_BLOCK_SIZE - (pos & (VDI_BLOCK_SIZE - 1));
	*entry = e;
	/* pos + max is inside the disk, so every block looked at is inside the map. */
	for (uint32_t i = 1; n < max; i++) {
		uint32_t next = s->bmap[blk + i];
		if (allocated(e) ? next != (uint64_t)e + i || !allocated(next) : allocated(next))
			break;
		n += VDI_BLOCK_SIZE;
	}
	return n < max ? n : max;
}

/* Room for a slice of the caller's iovec plus a zero prefix and suffix. */
struct iov_room {
	struct iovec small[18];
	struct iovec *v;
};

static struct iovec *iov_room(struct iov_room *room, int iovcnt)
{
	room->v = iovcnt + 2 <= 18 ? room->small : malloc(((size_t)iovcnt + 2) * sizeof(struct iovec));
	return room->v;
}

static void iov_room_free(struct iov_room *room)
{
	if (room->v != room->small)
		free(room->v);
}

static int vdi_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                      struct vt_error *err)
{
	struct vdi *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt), done = 0;
	struct iov_room room;
	int r = 0;

	if (!iov_room(&room, iovcnt))
		return vt_error_set(err, ENOMEM, b->filename, "read", NULL);
	while (r == 0 && done < total) {
		uint64_t pos = off + done;
		uint32_t e;
		pthread_mutex_lock(&s->lock);
		uint64_t n = run_length(s, pos, total - done, &e);
		pthread_mutex_unlock(&s->lock);
		if (!allocated(e)) {
			vt_iov_memset(iov, iovcnt, done, 0, n);
		} else {
			int cnt = 0;
			vt_iov_slice(iov, iovcnt, done, n, room.v, &cnt, INT_MAX);
			/* Past the end of the file reads zeros, as in qemu. */
			r = blk_file_preadv(b->file, host_offset(s, e, pos & (VDI_BLOCK_SIZE - 1)),
			                    room.v, cnt, err);
		}
		done += n;
	}
	iov_room_free(&room);
	return r;
}

/* Write the header (with the new count) and the map sectors of guest blocks [first, end).
 * Lock held. */
static int write_mapping(struct blk *b, struct vdi *s, uint32_t first, uint32_t end,
                         struct vt_error *err)
{
	uint8_t buf[4096];
	uint64_t lo = (uint64_t)first * 4 / VDI_SECTOR * VDI_SECTOR;
	uint64_t hi = ((uint64_t)end * 4 + VDI_SECTOR - 1) / VDI_SECTOR * VDI_SECTOR;
	fmt_put_le32(s->header + HDR(blocks_allocated), s->blocks_allocated);
	if (s->offset_bmap == VDI_SECTOR && VDI_SECTOR + hi <= sizeof(buf)) {
		/* Header and map in one write inside one page: no kill can split it. */
		memcpy(buf, s->header, VDI_SECTOR);
		for (uint64_t i = 0; i < hi / 4; i++)
			fmt_put_le32(buf + VDI_SECTOR + i * 4, s->bmap[i]);
		return blk_file_pwrite(b->file, 0, buf, VDI_SECTOR + hi, err);
	}
	int r = blk_file_pwrite(b->file, 0, s->header, VDI_SECTOR, err);
	for (uint64_t at = lo; r == 0 && at < hi; at += sizeof(buf)) {
		uint64_t n = hi - at < sizeof(buf) ? hi - at : sizeof(buf);
		for (uint64_t i = 0; i < n / 4; i++)
			fmt_put_le32(buf + i * 4, s->bmap[at / 4 + i]);
		r = blk_file_pwrite(b->file, s->offset_bmap + at, buf, n, err);
	}
	return r;
}

/* Allocate guest blocks [blk, blk + k) and write bytes [done, done + n) of the request
 * into them at in_block; the rest of the blocks reads zeros. Called with the lock held
 * (dropped during the data write). */
static int allocate_and_write(struct blk *b, struct vdi *s, uint32_t blk, uint32_t k,
                              uint64_t in_block, const struct iovec *iov, int iovcnt,
                              size_t done, size_t n, struct iovec *room, struct vt_error *err)
{
	uint32_t first = s->next_free;
	uint64_t start = host_offset(s, first, 0), len = (uint64_t)k << VDI_BLOCK_SHIFT;
	int r = 0;

	if ((uint64_t)first + k > s->blocks_in_image)
		return vt_error_set(err, ENOSPC, b->filename, "write",
		                    "no free block left in the VDI image");
	/* Past what the file held at open, blocks read zeros until written: grow the file
	 * over them first and write only the data. */
	bool fill = start < s->zero_from;
	if (start + len > s->file_size) {
		if ((r = blk_file_truncate(b->file, start + len, err)) < 0)
			return r;
		s->file_size = start + len;
	}
	s->next_free += k;
	fmt_inflight_add(&s->inflight, blk, blk + k);
	pthread_mutex_unlock(&s->lock);

	int cnt = 0;
	uint64_t tail = len - in_block - n;
	if (fill && in_block)
		room[cnt++] = (struct iovec){ zero_block, in_block };
	vt_iov_slice(iov, iovcnt, done, n, room, &cnt, INT_MAX);
	if (fill && tail)
		room[cnt++] = (struct iovec){ zero_block, tail };
	r = blk_file_pwritev(b->file, start + (fill ? 0 : in_block), room, cnt, err);

	pthread_mutex_lock(&s->lock);
	while (s->commit_next != first && !s->broken)
		pthread_cond_wait(&s->inflight.done, &s->lock);
	if (r == 0 && s->broken)
		r = vt_error_set(err, -s->broken, b->filename, "write",
		                 "an earlier allocation in this image failed");
	if (r == 0) {
		for (uint32_t i = 0; i < k; i++)
			s->bmap[blk + i] = first + i;
		s->blocks_allocated += k;
		r = write_mapping(b, s, blk, blk + k, err);
	}
	if (r < 0 && !s->broken)
		s->broken = r; /* later allocations must not be recorded past a gap */
	s->commit_next = first + k;
	fmt_inflight_remove(&s->inflight, blk);
	return r;
}

static int vdi_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	struct vdi *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt), done = 0;
	struct iov_room room;
	int r = 0;

	if (s->no_write)
		return vt_error_set(err, EIO, b->filename, "write",
		                    "cannot write this VDI image safely: %s", s->no_write);
	if (!iov_room(&room, iovcnt))
		return vt_error_set(err, ENOMEM, b->filename, "write", NULL);
	pthread_mutex_lock(&s->lock);
	while (r == 0 && done < total) {
		uint64_t pos = off + done, in = pos & (VDI_BLOCK_SIZE - 1);
		uint32_t blk = (uint32_t)(pos >> VDI_BLOCK_SHIFT), e;
		if (s->broken) {
			r = vt_error_set(err, -s->broken, b->filename, "write",
			                 "an earlier allocation in this image failed");
			break;
		}
		uint64_t n = run_length(s, pos, total - done, &e);
		if (allocated(e)) {
			pthread_mutex_unlock(&s->lock);
			int cnt = 0;
			vt_iov_slice(iov, iovcnt, done, n, room.v, &cnt, INT_MAX);
			r = blk_file_pwritev(b->file, host_offset(s, e, in), room.v, cnt, err);
			pthread_mutex_lock(&s->lock);
			done += n;
			continue;
		}
		if (fmt_inflight_overlaps(&s->inflight, blk, blk + 1) ||
		    fmt_inflight_full(&s->inflight)) {
			pthread_cond_wait(&s->inflight.done, &s->lock);
			continue;
		}
		/* A run of unallocated blocks not being allocated by anyone else. */
		uint64_t end_blk = (pos + n + VDI_BLOCK_SIZE - 1) >> VDI_BLOCK_SHIFT;
		if (end_blk - blk > VDI_ALLOC_RUN_MAX)
			end_blk = blk + VDI_ALLOC_RUN_MAX;
		end_blk = fmt_inflight_next(&s->inflight, blk, end_blk);
		uint32_t k = (uint32_t)(end_blk - blk);
		uint64_t room_bytes = ((uint64_t)k << VDI_BLOCK_SHIFT) - in;
		if (n > room_bytes)
			n = room_bytes;
		r = allocate_and_write(b, s, blk, k, in, iov, iovcnt, done, n, room.v, err);
		done += n;
	}
	pthread_mutex_unlock(&s->lock);
	iov_room_free(&room);
	return r;
}

/* Unallocated blocks already read zeros (VDI has no backing file); mapped ones are
 * overwritten in place. */
static int vdi_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                            struct vt_error *err)
{
	struct vdi *s = b->opaque;
	int r = 0;

	if (s->no_write)
		return vt_error_set(err, EIO, b->filename, "write",
		                    "cannot write this VDI image safely: %s", s->no_write);
	while (r == 0 && len) {
		uint32_t e;
		pthread_mutex_lock(&s->lock);
		uint64_t n = run_length(s, off, len, &e);
		pthread_mutex_unlock(&s->lock);
		if (n > VDI_BLOCK_SIZE - (off & (VDI_BLOCK_SIZE - 1)))
			n = VDI_BLOCK_SIZE - (off & (VDI_BLOCK_SIZE - 1));
		if (allocated(e))
			r = blk_file_pwrite(b->file, host_offset(s, e, off & (VDI_BLOCK_SIZE - 1)),
			                    zero_block, n, err);
		off += n;
		len -= n;
	}
	return r;
}

static int vdi_block_status(struct blk *b, uint64_t off, uint64_t len,
                            struct blk_status *st, struct vt_error *err)
{
	struct vdi *s = b->opaque;
	uint32_t e;
	pthread_mutex_lock(&s->lock);
	st->len = run_length(s, off, len, &e);
	pthread_mutex_unlock(&s->lock);
	if (!allocated(e)) {
		st->flags = BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
		return 0;
	}
	st->flags = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
	st->host_offset = host_offset(s, e, off & (VDI_BLOCK_SIZE - 1));
	if (s->image_type == VDI_TYPE_STATIC) {
		/* qemu asks the file about static images: holes in it read as zeros. */
		bool data;
		uint64_t n;
		int r = blk_file_extent(b->file, st->host_offset, st->len, &data, &n, err);
		if (r < 0)
			return r;
		if (!data)
			st->flags |= BLK_STATUS_ZERO;
		st->len = n;
	}
	return 0;
}

static int vdi_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	info->cluster_size = VDI_BLOCK_SIZE;
	return 0;
}

static uint32_t vdi_cluster_size(struct blk *b)
{
	return VDI_BLOCK_SIZE;
}

/* qemu-img check for VDI: every mapped block in range and used once, and the header's
 * count equal to the mapped blocks. Nothing is repaired (qemu: not supported). */
static int vdi_check(struct blk *b, unsigned fix, struct blk_check *res,
                     void (*report)(void *, const char *), void *opaque, struct vt_error *err)
{
	struct vdi *s = b->opaque;
	char line[128];

	if (fix)
		return vt_error_set(err, ENOTSUP, b->filename, "check",
		                    "This image format does not support checks");
	uint64_t *used = calloc((s->blocks_in_image + 63) / 64 + 1, 8);
	if (!used) {
		res->check_errors++;
		return vt_error_set(err, ENOMEM, b->filename, "check", NULL);
	}
	uint32_t count = 0;
	pthread_mutex_lock(&s->lock);
	for (uint32_t blk = 0; blk < s->blocks_in_image; blk++) {
		uint32_t e = s->bmap[blk];
		if (!allocated(e))
			continue;
		if (e >= s->blocks_in_image) {
			snprintf(line, sizeof(line), "ERROR: block index %" PRIu32 " too large, is %"
			         PRIu32, blk, e);
			res->corruptions++;
		} else {
			count++;
			if (!(used[e / 64] & 1ull << (e % 64))) {
				used[e / 64] |= 1ull << (e % 64);
				continue;
			}
			/* qemu names the shared physical block twice */
			snprintf(line, sizeof(line), "ERROR: block index %" PRIu32 " also used by %"
			         PRIu32, e, e);
			res->corruptions++;
		}
		if (report)
			report(opaque, line);
	}
	if (count != s->blocks_allocated) {
		snprintf(line, sizeof(line), "ERROR: allocated blocks mismatch, is %" PRIu32
		         ", should be %" PRIu32, count, s->blocks_allocated);
		res->corruptions++;
		if (report)
			report(opaque, line);
	}
	pthread_mutex_unlock(&s->lock);
	free(used);
	return 0;
}

static const struct blk_optdesc vdi_create_opts[] = {
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ "static", BLK_OPT_BOOL, "VDI static (pre-allocated) image" },
	{ NULL, 0, NULL },
};

/* VirtualBox stores UUIDs with the first three fields little-endian. */
static int random_uuid(uint8_t *out, struct vt_error *err, const char *fn)
{
	uint8_t u[16];
	if (getrandom(u, sizeof(u), 0) != (ssize_t)sizeof(u))
		return vt_error_set(err, errno ? errno : EIO, fn, "create", "random UUID");
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	static const uint8_t order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
	for (int i = 0; i < 16; i++)
		out[i] = u[order[i]];
	return 0;
}

static int vdi_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                      const struct blk_optlist *opts, char **formatting, struct vt_error *err)
{
	bool is_static = false;
	int r = blk_opts_get_bool(opts, "static", &is_static, err);
	if (r < 0)
		return r;
	uint64_t size = (o->size + VDI_SECTOR - 1) & ~(uint64_t)(VDI_SECTOR - 1);
	if (size > VDI_DISK_SIZE_MAX)
		return vt_error_set(err, ENOTSUP, filename, "create", "Unsupported VDI image size "
		                    "(size is 0x%" PRIx64 ", max supported is 0x%" PRIx64 ")", size,
		                    VDI_DISK_SIZE_MAX);
	uint32_t blocks = (uint32_t)((size + VDI_BLOCK_SIZE - 1) >> VDI_BLOCK_SHIFT);
	uint64_t bmap_bytes = ((uint64_t)blocks * 4 + VDI_SECTOR - 1) & ~(uint64_t)(VDI_SECTOR - 1);
	uint8_t *buf = calloc(1, VDI_SECTOR + bmap_bytes);
	if (!buf)
		return vt_error_set(err, ENOMEM, filename, "create", NULL);
	memcpy(buf + HDR(text), VDI_TEXT, strlen(VDI_TEXT));
	fmt_put_le32(buf + HDR(signature), VDI_SIGNATURE);
	fmt_put_le32(buf + HDR(version), VDI_VERSION_1_1);
	fmt_put_le32(buf + HDR(header_size), 0x180);
	fmt_put_le32(buf + HDR(image_type), is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
	fmt_put_le32(buf + HDR(offset_bmap), VDI_SECTOR);
	fmt_put_le32(buf + HDR(offset_data), (uint32_t)(VDI_SECTOR + bmap_bytes));
	fmt_put_le32(buf + HDR(sector_size), VDI_SECTOR);
	fmt_put_le64(buf + HDR(disk_size), size);
	fmt_put_le32(buf + HDR(block_size), VDI_BLOCK_SIZE);
	fmt_put_le32(buf + HDR(blocks_in_image), blocks);
	fmt_put_le32(buf + HDR(blocks_allocated), is_static ? blocks : 0);
	if ((r = random_uuid(buf + HDR(uuid_image), err, filename)) < 0 ||
	    (r = random_uuid(buf + HDR(uuid_last_snap), err, filename)) < 0) {
		free(buf);
		return r;
	}
	for (uint32_t i = 0; i < blocks; i++)
		fmt_put_le32(buf + VDI_SECTOR + (size_t)i * 4, is_static ? i : VDI_UNALLOCATED);
	r = blk_file_pwrite(f, 0, buf, VDI_SECTOR + bmap_bytes, err);
	free(buf);
	if (r == 0 && is_static)
		r = blk_file_truncate(f, VDI_SECTOR + bmap_bytes + ((uint64_t)blocks << VDI_BLOCK_SHIFT),
		                      err);
	if (r == 0 && formatting) {
		const char *st = blk_opts_get(opts, "static");
		char line[128];
		snprintf(line, sizeof(line), "fmt=vdi size=%" PRIu64 " static=%s", o->size,
		         st ? st : "off");
		if (!(*formatting = strdup(line)))
			r = vt_error_set(err, ENOMEM, filename, "create", NULL);
	}
	return r;
}

const struct blk_driver blk_driver_vdi = {
	.name = "vdi",
	.open = vdi_open,
	.close = vdi_close,
	.preadv = vdi_preadv,
	.pwritev = vdi_pwritev,
	.write_zeroes = vdi_write_zeroes,
	.cluster_size = vdi_cluster_size,
	.block_status = vdi_block_status,
	.get_info = vdi_get_info,
	.create = vdi_create,
	.check = vdi_check,
	.create_opts = vdi_create_opts,
};
