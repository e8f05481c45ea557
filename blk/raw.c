/* raw: the image is the disk, byte for byte. */
#include "blk/driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int raw_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	return blk_file_size(b->file, &b->size, err);
}

static void raw_close(struct blk *b)
{
}

static int raw_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                      struct vt_error *err)
{
	return blk_file_preadv(b->file, off, iov, iovcnt, err);
}

static int raw_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	return blk_file_pwritev(b->file, off, iov, iovcnt, err);
}

static int raw_flush(struct blk *b, struct vt_error *err)
{
	return blk_file_flush(b->file, err);
}

static int raw_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                            struct vt_error *err)
{
	return blk_file_zero(b->file, off, len, flags & BLK_MAY_UNMAP, err);
}

static int raw_discard(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err)
{
	return blk_file_zero(b->file, off, len, true, err);
}

static int raw_block_status(struct blk *b, uint64_t off, uint64_t len,
                            struct blk_status *st, struct vt_error *err)
{
	bool data;
	int r = blk_file_extent(b->file, off, len, &data, &st->len, err);
	if (r < 0)
		return r;
	st->flags = BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID |
	            (data ? BLK_STATUS_DATA : BLK_STATUS_ZERO);
	st->host_offset = off;
	return 0;
}

static int raw_truncate(struct blk *b, uint64_t size, struct vt_error *err)
{
	int r = blk_file_truncate(b->file, size, err);
	if (r == 0)
		b->size = size;
	return r;
}

/* qemu-img resize of a raw file: the file is the disk; growing may reserve (falloc) or
 * write (full) the new part. */
static int raw_resize(struct blk *b, uint64_t size, enum blk_prealloc prealloc,
                      struct vt_error *err)
{
	int r = 0;
	if (prealloc == BLK_PREALLOC_METADATA)
		return vt_error_set(err, ENOTSUP, b->filename, "",
		                    "Unsupported preallocation mode: metadata");
	if (size > b->size && prealloc != BLK_PREALLOC_OFF)
		r = blk_file_allocate(b->file, b->size, size - b->size,
		                      prealloc == BLK_PREALLOC_FULL, err);
	return r < 0 ? r : raw_truncate(b, size, err);
}

static int raw_measure(const struct blk_optlist *opts, uint64_t size, struct blk *src,
                       struct blk_measure *m, struct vt_error *err)
{
	/* A raw copy is as long as the disk; qemu reports that for both numbers. */
	m->required = m->fully_allocated = (size + 511) & ~511ull;
	return 0;
}

static const struct blk_optdesc raw_create_opts[] = {
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ "preallocation", BLK_OPT_STRING,
	  "Preallocation mode (allowed values: off, falloc, full)" },
	{ NULL, 0, NULL },
};

static int raw_create(struct blk_file *f, const char *filename,
                      const struct blk_create_opts *o, const struct blk_optlist *opts,
                      char **formatting, struct vt_error *err)
{
	const char *prealloc = blk_opts_get(opts, "preallocation");
	/* The file is a whole number of sectors, as qemu makes it. */
	uint64_t fsize = (o->size + 511) & ~511ull;
	int r;

	if (prealloc && strcmp(prealloc, "off") && strcmp(prealloc, "falloc") &&
	    strcmp(prealloc, "full"))
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Parameter 'preallocation' does not accept value '%s'",
		                    prealloc);
	r = blk_file_truncate(f, fsize, err);
	if (r == 0 && prealloc && strcmp(prealloc, "off") && fsize)
		r = blk_file_allocate(f, 0, fsize, !strcmp(prealloc, "full"), err);
	if (r == 0 && formatting) {
		char buf[128];
		if (prealloc)
			snprintf(buf, sizeof(buf), "fmt=raw size=%llu preallocation=%s",
			         (unsigned long long)o->size, prealloc);
		else
			snprintf(buf, sizeof(buf), "fmt=raw size=%llu", (unsigned long long)o->size);
		*formatting = strdup(buf);
	}
	return r;
}

const struct blk_driver blk_driver_raw = {
	.name = "raw",
	.open = raw_open,
	.close = raw_close,
	.preadv = raw_preadv,
	.pwritev = raw_pwritev,
	.flush = raw_flush,
	.write_zeroes = raw_write_zeroes,
	.discard = raw_discard,
	.block_status = raw_block_status,
	.truncate = raw_truncate,
	.resize = raw_resize,
	.create = raw_create,
	.create_opts = raw_create_opts,
	.measure = raw_measure,
};
