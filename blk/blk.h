/* The block layer: the one API through which vtool reads and writes disk images.
 *
 * `vtool img` commands and the VMM's disk devices call only this header. A `struct blk`
 * is an open image of some format (raw, qcow2) with its backing chain; reads, writes,
 * zeroing and discards take byte offsets and any length (the layer does the
 * read-modify-write that formats and O_DIRECT need). Handles may be used from several
 * threads at once: drivers keep metadata under their own lock and do data I/O outside it.
 * Nothing here prints; failures return a negative errno and fill struct vt_error. */
#ifndef VTOOL_BLK_BLK_H
#define VTOOL_BLK_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/error.h"
#include "util/json.h"

struct blk;

enum blk_cache {
	BLK_CACHE_WRITEBACK,   /* page cache, flush on request (default) */
	BLK_CACHE_NONE,        /* O_DIRECT, flush on request */
	BLK_CACHE_WRITETHROUGH,/* page cache, every write synced */
	BLK_CACHE_DIRECTSYNC,  /* O_DIRECT, every write synced */
	BLK_CACHE_UNSAFE,      /* page cache, flushes ignored */
};
/* qemu's names: none, writeback, writethrough, directsync, unsafe. */
int blk_cache_parse(const char *name, enum blk_cache *out);

struct blk_open_opts {
	const char *format;    /* "raw", "qcow2", or NULL to probe by magic */
	bool writable;
	enum blk_cache cache;
	bool force_share;      /* -U: take no locks that could conflict (read-only only) */
	bool no_backing;       /* do not open the backing chain */
	bool repair;           /* for check -r: open read-write even if marked corrupt */
	bool for_check;        /* opened by `img check` (qemu's BDRV_O_CHECK): damage that
	                          check reports is not refused at open */
	/* Read an internal snapshot instead of the current state (read-only opens; qcow2):
	 * by ID, by name, or by "ID or name" (qemu-img convert -l). */
	const char *snapshot_id, *snapshot_name, *snapshot;
	bool stream;           /* an output written once and synced at the end (convert, dd):
	                          start writeback early (BLK_FILE_STREAM) */
	/* The secret that unlocks an encrypted image (qemu's encrypt.key-secret): its bytes.
	 * Encrypted qcow2 images (LUKS, legacy AES) are then readable, read-only. */
	const uint8_t *key;
	size_t key_len;
};

int blk_open(const char *filename, const struct blk_open_opts *opts, struct blk **out,
             struct vt_error *err);
/* Flushes (if writable) and closes the whole chain; the handle is gone either way. */
int blk_close(struct blk *b, struct vt_error *err);

uint64_t blk_size(const struct blk *b);               /* virtual size in bytes */
const char *blk_format(const struct blk *b);          /* driver name */
const char *blk_filename(const struct blk *b);
struct blk *blk_backing(const struct blk *b);         /* NULL at the chain's end */
bool blk_writable(const struct blk *b);
/* The image file's device and inode (the same file under two names compares equal). */
void blk_identity(const struct blk *b, uint64_t *dev, uint64_t *ino);

int blk_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
               struct vt_error *err);
int blk_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                struct vt_error *err);
int blk_pread(struct blk *b, uint64_t off, void *buf, size_t len, struct vt_error *err);
int blk_pwrite(struct blk *b, uint64_t off, const void *buf, size_t len,
               struct vt_error *err);
int blk_flush(struct blk *b, struct vt_error *err);
/* Flush, and make the result durable even in cache mode unsafe: for a new image written
 * without intermediate syncs that is about to be renamed into place. */
int blk_sync(struct blk *b, struct vt_error *err);

#define BLK_MAY_UNMAP 1u  /* write_zeroes may deallocate instead of writing zeros */
int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                     struct vt_error *err);
/* Write one whole cluster compressed (off cluster-aligned; len = cluster size, or less
 * for the image's last cluster). Stored uncompressed when compression does not pay.
 * -ENOTSUP for formats without compression (raw). */
int blk_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len,
                         struct vt_error *err);
/* Whether blk_write_compressed can work on b (qcow2). */
bool blk_supports_compression(const struct blk *b);
/* Copy [soff, soff+len) of src's guest content to dst at doff without passing it
 * through memory (qemu's copy offloading): dst must be raw, and each data range of src
 * must be readable raw from some file of its chain (raw, or plain qcow2 clusters); zero
 * ranges are written as zeros. -ENOTSUP (or the kernel's error) otherwise: the caller
 * copies the usual way. */
int blk_copy_range(struct blk *src, uint64_t soff, struct blk *dst, uint64_t doff,
                   uint64_t len, struct vt_error *err);
/* The allocation unit of the format (qcow2 cluster size), 0 if it has none. */
uint32_t blk_cluster_size(struct blk *b);
/* Advisory: the range's contents become unspecified (zeros or backing data). */
int blk_discard(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err);

/* Block status of [off, off+len): how the first bytes are stored, and for how long. */
#define BLK_STATUS_DATA         0x01u /* bytes are stored in some layer */
#define BLK_STATUS_ZERO         0x02u /* reads as zeros */
#define BLK_STATUS_ALLOCATED    0x04u /* provided by the layer at `depth` (not fall-through) */
#define BLK_STATUS_OFFSET_VALID 0x08u /* host_offset: readable raw at that file offset */
#define BLK_STATUS_COMPRESSED   0x10u
struct blk_status {
	uint64_t len;          /* > 0: bytes from off with this status */
	unsigned flags;
	int depth;             /* layer that decided it (0 = this image); for holes in the
	                          whole chain, the depth of the last layer */
	uint64_t host_offset;  /* with OFFSET_VALID */
	struct blk *layer;     /* the image at `depth` */
};
/* Resolved over the backing chain. */
int blk_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                     struct vt_error *err);
/* This layer only: ALLOCATED clear means "falls through to the backing file". */
int blk_block_status_layer(struct blk *b, uint64_t off, uint64_t len,
                           struct blk_status *st, struct vt_error *err);
/* Does a layer from top down to base (not included; NULL: the whole chain) decide
 * [off, off+len)? *pnum: for how long the answer holds. A layer shorter than off
 * decides: it reads zeros there. (qemu's bdrv_is_allocated_above.) */
int blk_allocated_above(struct blk *top, struct blk *base, uint64_t off, uint64_t len,
                        bool *yes, uint64_t *pnum, struct vt_error *err);

struct blk_snapshot_info {
	char id[128];
	char name[256];
	uint64_t vm_state_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t icount;        /* (uint64_t)-1 when absent */
};

struct blk_info {
	const char *format;
	uint64_t virtual_size;
	uint64_t actual_size;   /* host bytes allocated (st_blocks * 512) */
	uint32_t cluster_size;  /* 0 when the format has none */
	bool dirty;
	bool encrypted;         /* qemu's "encrypted: yes" (the data cannot be read here) */
	bool has_backing;
	char backing_file[1024];       /* as stored in the image */
	char full_backing_file[4096];  /* resolved relative to the image */
	char backing_format[32];       /* empty when not recorded */
	/* qemu's "format-specific" data object, for formats that have one (qcow2, vmdk,
	 * ...): the members in qemu's names. blk_info_free() releases it. */
	struct vt_json *format_specific;
	int nb_snapshots;
	struct blk_snapshot_info *snapshots; /* malloc'd; blk_info_free() releases */
};
int blk_get_info(struct blk *b, struct blk_info *info, struct vt_error *err);
void blk_info_free(struct blk_info *info);

/* Image creation. Options are qemu's `-o key=value,...` (",," is a literal comma);
 * each driver has its own table (blk_create_help lists it). */
struct blk_create_opts {
	const char *format;       /* default "raw" */
	uint64_t size;
	bool size_given;          /* else taken from the backing file */
	const char *backing_file;
	const char *backing_format;
	bool no_backing_open;     /* -u: do not open the backing file */
	const char *options;      /* -o string, may be NULL */
};
/* Creates filename (replacing it). On success *formatting gets qemu's
 * "fmt=... size=..." description (malloc'd) for the "Formatting" line. */
int blk_create(const char *filename, const struct blk_create_opts *opts, char **formatting,
               struct vt_error *err);
/* Whether creating an image of `format` with `options` makes one file (so it can be
 * made under a temporary name and renamed), and whether the format stores compressed
 * clusters (blk_write_compressed). */
bool blk_create_makes_one_file(const char *format, const char *options);
bool blk_format_compresses(const char *format);
/* "-o help" text for a format. NULL if the format is unknown. */
const char *blk_create_help(const char *format);

int blk_truncate(struct blk *b, uint64_t size, struct vt_error *err);

/* qemu-img amend: change format options of an existing image in place (qcow2: compat,
 * refcount_bits, lazy_refcounts, size). Options a format takes only at creation fail
 * with qemu's "Invalid parameter 'x'" plus "This option is only supported for image
 * creation". progress (may be NULL) hears about the steps. Writable handle. */
int blk_amend(struct blk *b, const char *options, bool force,
              void (*progress)(void *opaque, uint64_t done, uint64_t total), void *opaque,
              struct vt_error *err);
/* "-o help" for amend: qemu's "Amend options for 'FMT':" list; NULL with err filled
 * when the format is unknown or cannot amend. */
const char *blk_amend_help(const char *format, struct vt_error *err);

/* Reopen one image of a chain (b itself or any of its backing files) read-write or
 * read-only, as qemu's bdrv_reopen: commit writes into a backing file. The handle and the
 * chain stay; the file's locks change to a writer's (refused, as in qemu, when another
 * process uses the image) or a reader's. A handle that could not be reopened either way
 * fails every later request (blk_close still releases it). */
int blk_reopen(struct blk *b, bool writable, struct vt_error *err);

/* Drop everything the image holds itself, so that it reads its backing file again
 * (qemu's bdrv_make_empty, what commit does to the committed image). Crash-safe: the
 * image reads either its old content or its backing file's, never a mix of garbage.
 * -ENOTSUP for formats that cannot (then commit leaves the image as it is). */
int blk_make_empty(struct blk *b, struct vt_error *err);

/* Record another backing file in the image's header (qemu's bdrv_change_backing_file):
 * file NULL or "" removes it; format NULL records none. Only the header changes, and
 * only after everything written through b is durable; the chain opened with b stays
 * what it was. -ENOTSUP for formats without backing files (raw), -ENOSPC when the
 * names do not fit in the header, -EINVAL for a name over 1023 bytes. */
int blk_change_backing_file(struct blk *b, const char *file, const char *format,
                            struct vt_error *err);
/* qemu-img resize: the virtual disk becomes `size` bytes. Growing may preallocate the new
 * part (qemu's modes; raw takes off, falloc and full); shrinking drops what lies past
 * the new end. Atomic against crashes where the format allows (qcow2). */
enum blk_prealloc {
	BLK_PREALLOC_OFF,
	BLK_PREALLOC_METADATA,
	BLK_PREALLOC_FALLOC,
	BLK_PREALLOC_FULL,
};
/* "off", "metadata", "falloc", "full"; -EINVAL for anything else. */
int blk_prealloc_parse(const char *name, enum blk_prealloc *out);
int blk_resize(struct blk *b, uint64_t size, enum blk_prealloc prealloc, struct vt_error *err);

/* Internal snapshots (qemu-img snapshot; qcow2 only, -ENOTSUP for other formats). They
 * are listed by blk_get_info. Each operation is one atomic metadata switch: a crash
 * leaves the image as it was before or after, never between.
 * Create: a snapshot of the current disk, named `name` (cut to 255 bytes, as qemu), with
 * the next free decimal ID. */
int blk_snapshot_create(struct blk *b, const char *name, struct vt_error *err);
/* Apply the snapshot with that ID, else the first with that name: the disk becomes what
 * it was when the snapshot was taken, size included. With dry_run (read-only handles
 * too) only what would refuse it is checked, and nothing changes. */
int blk_snapshot_goto(struct blk *b, const char *id_or_name, bool dry_run,
                      struct vt_error *err);
/* Delete the first snapshot with that ID and name (NULL matches any). */
int blk_snapshot_delete(struct blk *b, const char *id, const char *name,
                        struct vt_error *err);

/* Persistent dirty bitmaps (qemu-img bitmap; qcow2 v3 only, -ENOTSUP elsewhere). A
 * read-write handle keeps them: writes set bits in the enabled ones and close stores
 * them. Operations on a read-write handle take effect at close. */
struct blk_bitmap {
	char *name;
	uint64_t granularity;
	bool enabled;                /* qcow2's "auto" flag */
	bool in_use;                 /* inconsistent: not stored cleanly */
};
/* -ENOTSUP when the image cannot have them (not qcow2 v3). */
int blk_bitmap_list(struct blk *b, struct blk_bitmap **out, size_t *n, struct vt_error *err);
void blk_bitmap_list_free(struct blk_bitmap *l, size_t n);
/* A bitmap's bits: bit i (byte i/8, LSB first) covers [i*granularity, (i+1)*granularity)
 * of a disk of disk_size bytes. */
struct blk_bitmap_bits {
	uint8_t *bits;               /* malloc'd */
	uint64_t nbits, granularity, disk_size;
};
int blk_bitmap_read(struct blk *b, const char *name, struct blk_bitmap_bits *out,
                    struct vt_error *err);
enum blk_bitmap_action {
	BLK_BITMAP_ADD, BLK_BITMAP_REMOVE, BLK_BITMAP_CLEAR, BLK_BITMAP_ENABLE,
	BLK_BITMAP_DISABLE, BLK_BITMAP_MERGE,
};
struct blk_bitmap_op {
	enum blk_bitmap_action action;
	const char *name;
	uint64_t granularity;        /* add: 0 for the default (cluster size in [4K, 64K]) */
	bool disabled;               /* add: created disabled */
	const struct blk_bitmap_bits *src; /* merge: what to OR in */
};
/* Errors carry qemu's wording after "Operation <action> on bitmap <name> failed: ". */
int blk_bitmap_apply(struct blk *b, const struct blk_bitmap_op *op, struct vt_error *err);

/* Consistency check (qemu-img check). Counts as qemu classifies them; diagnostics
 * ("Leaked cluster ...", "ERROR ...") go to report(), one line each, no newline. */
#define BLK_CHECK_FIX_LEAKS  1u
#define BLK_CHECK_FIX_ERRORS 2u
struct blk_check {
	uint64_t corruptions, leaks, check_errors, corruptions_fixed, leaks_fixed;
	uint64_t image_end_offset, total_clusters, allocated_clusters;
	uint64_t fragmented_clusters, compressed_clusters;
};
/* -ENOTSUP when the format has nothing to check (raw). Fixing needs a writable handle. */
int blk_check(struct blk *b, unsigned fix, struct blk_check *res,
              void (*report)(void *opaque, const char *line), void *opaque,
              struct vt_error *err);

/* qemu-img measure: bytes a new image of `format` with `options` needs, for a source
 * image src (its allocated data counts) or, with src NULL, an empty disk of `size`.
 * *bitmaps is set when qemu would report a bitmaps size (qcow2 v3 to qcow2 v3). */
struct blk_measure {
	uint64_t required, fully_allocated;
	bool has_bitmaps;
	uint64_t bitmaps;
};
int blk_measure(const char *format, const char *options, uint64_t size, struct blk *src,
                struct blk_measure *m, struct vt_error *err);

/* Take (and hold until blk_unlock_file) the locks a writer of an existing file takes,
 * without reading it: a command that is about to replace the file (convert's output)
 * is refused when another process uses it, as qemu-img is. */
struct blk_file_lock;
int blk_lock_file(const char *filename, struct blk_file_lock **out, struct vt_error *err);
void blk_unlock_file(struct blk_file_lock *l);

/* Format names we know, for messages and probing. */
bool blk_format_known(const char *format);

#endif
