/* What a format driver sees: the open image and the vtable it implements. For blk/ only;
 * everything outside blk/ uses blk.h. */
#ifndef VTOOL_BLK_DRIVER_H
#define VTOOL_BLK_DRIVER_H

#include "blk/blk.h"
#include "blk/file.h"
#include "blk/opts.h"
#include "util/iov.h"

struct blk_driver;

struct blk {
	const struct blk_driver *drv;
	void *opaque;             /* the driver's state */
	struct blk_file *file;    /* the image file */
	struct blk *backing;      /* opened by blk.c from backing_file/backing_format */
	char *filename;
	uint64_t size;            /* virtual size, set by the driver's open */
	bool writable;
	bool repair;              /* opened by check -r */
	enum blk_cache cache;
	/* Filled by the driver's open when the image names a backing file. */
	char backing_file[1024];
	char backing_format[32];
};

/* A format driver. blk.c checks every request (range, writability) before it reaches a
 * driver, and fills in for the optional operations as noted; a driver never sees a
 * request past the end of the image or a write on a read-only handle.
 * Required: name, open, close, preadv, and pwritev + flush for formats that can be
 * opened read-write (blk.c refuses a read-write open when pwritev is NULL). */
struct blk_driver {
	const char *name;
	int (*open)(struct blk *b, const struct blk_open_opts *o, struct vt_error *err);
	void (*close)(struct blk *b);
	int (*preadv)(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
	              struct vt_error *err);
	int (*pwritev)(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
	               struct vt_error *err);
	/* Optional: the last writes of a writable handle before blk_close flushes and closes
	 * it (qcow2 stores its bitmaps); errors reach blk_close's caller. */
	int (*inactivate)(struct blk *b, struct vt_error *err);
	/* Optional: without it, blk_flush flushes the image file. */
	int (*flush)(struct blk *b, struct vt_error *err);
	/* Optional: without it, zeros are written through pwritev. */
	int (*write_zeroes)(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
	                    struct vt_error *err);
	/* Optional: without it, discard does nothing (it is advisory). */
	int (*discard)(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err);
	/* Optional: without it, blk_write_compressed fails with -ENOTSUP. */
	int (*write_compressed)(struct blk *b, uint64_t off, const void *buf, size_t len,
	                        struct vt_error *err);
	/* Optional: the allocation unit (0 without it). */
	uint32_t (*cluster_size)(struct blk *b);
	/* Optional: without it, every byte is allocated data at depth 0. */
	int (*block_status)(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
	                    struct vt_error *err);
	/* Optional: fields of struct blk_info beyond what blk.c fills (format, sizes,
	 * backing file), e.g. cluster size, dirty flag, snapshots. */
	int (*get_info)(struct blk *b, struct blk_info *info, struct vt_error *err);
	/* Optional: qemu's "format-specific" data object for `img info` (the members of
	 * ImageInfoSpecific<Format>, in qemu's names). NULL on allocation failure. */
	struct vt_json *(*format_specific)(struct blk *b);
	/* Optional: without it, resizing fails with -ENOTSUP. */
	int (*truncate)(struct blk *b, uint64_t size, struct vt_error *err);
	/* Optional: blk_resize with preallocation; without it blk_resize calls truncate
	 * (preallocation modes other than off then fail with -ENOTSUP). */
	int (*resize)(struct blk *b, uint64_t size, enum blk_prealloc prealloc,
	              struct vt_error *err);
	/* Optional (internal snapshots): without them the blk_snapshot_* calls fail with
	 * -ENOTSUP. blk.c checks that create, delete and a real goto have a writable
	 * handle. */
	int (*snapshot_create)(struct blk *b, const char *name, struct vt_error *err);
	int (*snapshot_goto)(struct blk *b, const char *id_or_name, bool dry_run,
	                     struct vt_error *err);
	int (*snapshot_delete)(struct blk *b, const char *id, const char *name,
	                       struct vt_error *err);
	/* Optional (persistent dirty bitmaps): without them blk_bitmap_* fail with -ENOTSUP.
	 * blk.c checks that apply has a writable handle. */
	int (*bitmap_list)(struct blk *b, struct blk_bitmap **out, size_t *n,
	                   struct vt_error *err);
	int (*bitmap_read)(struct blk *b, const char *name, struct blk_bitmap_bits *out,
	                   struct vt_error *err);
	int (*bitmap_apply)(struct blk *b, const struct blk_bitmap_op *op, struct vt_error *err);
	/* Optional (formats vtool can only read): create the image in an already created,
	 * empty file. */
	int (*create)(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
	              const struct blk_optlist *opts, char **formatting, struct vt_error *err);
	/* Optional: without it, blk_check fails with -ENOTSUP ("does not support checks"). */
	int (*check)(struct blk *b, unsigned fix, struct blk_check *res,
	             void (*report)(void *opaque, const char *line), void *opaque,
	             struct vt_error *err);
	/* Optional: without it, measure fails with -ENOTSUP. */
	int (*measure)(const struct blk_optlist *opts, uint64_t size, struct blk *src,
	               struct blk_measure *m, struct vt_error *err);
	/* Optional: without it, blk_change_backing_file fails with -ENOTSUP. Called on a
	 * writable handle; file is NULL (never "") to remove the backing file. */
	int (*change_backing_file)(struct blk *b, const char *file, const char *format,
	                           struct vt_error *err);
	/* Optional: without it, blk_make_empty fails with -ENOTSUP. Writable handle. */
	int (*make_empty)(struct blk *b, struct vt_error *err);
	/* Optional: without it, blk_amend fails ("does not support option amendment").
	 * opts were checked against amend_opts; progress may be NULL. Writable handle. */
	int (*amend)(struct blk *b, const struct blk_optlist *opts, bool force,
	             void (*progress)(void *opaque, uint64_t done, uint64_t total),
	             void *opaque, struct vt_error *err);
	const struct blk_optdesc *amend_opts;  /* with amend; terminated by a NULL name */
	/* Optional: the image create makes is several files named after the first (vmdk's
	 * flat and split subformats), so it cannot be made under a temporary name. */
	bool (*creates_several_files)(const struct blk_optlist *opts);
	const struct blk_optdesc *create_opts; /* terminated by a NULL name */
	bool supports_backing;                 /* create accepts -b/-F */
};

/* The drivers, one per file (or folder) of blk/; blk.c lists them. */
extern const struct blk_driver blk_driver_raw;
extern const struct blk_driver blk_driver_qcow2;
extern const struct blk_driver blk_driver_vdi;
extern const struct blk_driver blk_driver_qed;
extern const struct blk_driver blk_driver_vpc;
extern const struct blk_driver blk_driver_vhdx;
extern const struct blk_driver blk_driver_vmdk;
extern const struct blk_driver blk_driver_nbd;   /* nbd.c: a disk on an NBD server */

/* Helpers drivers share. Scatter-gather lists: util/iov.h (vt_iov_*). */
/* Bytes of src that hold data, each range rounded out to whole clusters of cluster_size
 * (what a copy would allocate), as qemu's measure counts them. */
int blk_measure_data(struct blk *src, uint64_t cluster_size, uint64_t *bytes,
                     struct vt_error *err);
/* Read [off, off+len) of the backing chain into buf (zeros past its end or without one). */
int blk_read_backing(struct blk *b, uint64_t off, void *buf, size_t len,
                     struct vt_error *err);

#endif
