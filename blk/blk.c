/* The generic half of the block layer: format probing, opening a backing chain,
 * dispatch to the format driver, and the operations every driver shares. */
#include "blk/driver.h"
#include "blk/nbd_proto.h"
#include "blk/probe.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct blk_driver *const drivers[] = {
	&blk_driver_qcow2, &blk_driver_raw,
	&blk_driver_vdi,
	&blk_driver_qed,
	&blk_driver_vpc,
	&blk_driver_vhdx,
	&blk_driver_vmdk,
	&blk_driver_nbd,
};

#define MAX_CHAIN_DEPTH 64

static const struct blk_driver *find_driver(const char *name)
{
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (!strcmp(drivers[i]->name, name))
			return drivers[i];
	return NULL;
}

bool blk_format_known(const char *format)
{
	return find_driver(format) != NULL;
}

int blk_cache_parse(const char *name, enum blk_cache *out)
{
	static const struct { const char *n; enum blk_cache c; } t[] = {
		{ "writeback", BLK_CACHE_WRITEBACK }, { "none", BLK_CACHE_NONE },
		{ "off", BLK_CACHE_NONE }, { "writethrough", BLK_CACHE_WRITETHROUGH },
		{ "directsync", BLK_CACHE_DIRECTSYNC }, { "unsafe", BLK_CACHE_UNSAFE },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (!strcmp(name, t[i].n)) {
			*out = t[i].c;
			return 0;
		}
	}
	return -EINVAL;
}

/* Backing names are relative to the directory of the image that names them. */
static char *resolve_backing(const char *image, const char *backing)
{
	if (backing[0] == '/' || !strchr(image, '/'))
		return strdup(backing);
	char *copy = strdup(image);
	if (!copy)
		return NULL;
	char *dir = dirname(copy);
	size_t n = strlen(dir) + strlen(backing) + 2;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", dir, backing);
	free(copy);
	return out;
}

char *blk_full_backing_name(const struct blk *b);
char *blk_full_backing_name(const struct blk *b)
{
	return resolve_backing(b->filename, b->backing_file);
}

/* The files of the chain above the one being opened, to catch a chain that loops. */
struct chain_link {
	uint64_t dev, ino;
	const struct chain_link *up;
};

static int open_depth(const char *filename, const struct blk_open_opts *o, int depth,
                      const struct chain_link *up, struct blk **out, struct vt_error *err);

static int open_backing(struct blk *b, const struct blk_open_opts *o, int depth,
                        const struct chain_link *up, struct vt_error *err)
{
	if (depth >= MAX_CHAIN_DEPTH)
		return vt_error_set(err, ELOOP, b->filename, "open backing file",
		                    "backing chain deeper than %d (a loop?)", MAX_CHAIN_DEPTH);
	/* qemu refuses protocol and json: pseudo file names here; so do we. */
	if (!strncmp(b->backing_file, "json:", 5))
		return vt_error_set(err, EINVAL, b->filename, "open backing file",
		                    "json: backing file names are not supported");
	char *path = resolve_backing(b->filename, b->backing_file);
	if (!path)
		return vt_error_set(err, ENOMEM, b->filename, "open backing file", NULL);
	struct blk_open_opts bo = {
		.format = b->backing_format[0] ? b->backing_format : NULL,
		.writable = false,
		.cache = o->cache,
		.force_share = o->force_share,
	};
	struct vt_error inner = { 0 };
	int r = open_depth(path, &bo, depth + 1, up, &b->backing, &inner);
	if (r == -ELOOP && !strcmp(inner.what, "loop")) {
		vt_error_set(err, ELOOP, b->filename, "open", "Backing file '%s' creates an "
		             "infinite loop.", b->backing_file);
	} else if (r < 0) {
		char msg[sizeof(inner.why) + sizeof(inner.what) + 8];
		snprintf(msg, sizeof(msg), "%s%s%s", inner.what, inner.what[0] ? ": " : "",
		         inner.why);
		vt_error_set(err, -r, b->filename, "Could not open backing file", "%s: %s", path,
		             msg);
	}
	free(path);
	return r;
}

static int open_depth(const char *filename, const struct blk_open_opts *o, int depth,
                      const struct chain_link *up, struct blk **out, struct vt_error *err)
{
	struct blk *b = calloc(1, sizeof(*b));
	int r;

	if (!b || !(b->filename = strdup(filename))) {
		free(b);
		return vt_error_set(err, ENOMEM, filename, "open", NULL);
	}
	b->writable = o->writable;
	b->repair = o->repair;
	b->cache = o->cache;
	if (blk_nbd_is_address(filename) || (o->format && !strcmp(o->format, "nbd"))) {
		/* A disk on an NBD server, not a local file: no file, probing or locks here.
		 * The driver is protocol and raw format in one. */
		if (o->format && strcmp(o->format, "nbd") && strcmp(o->format, "raw"))
			r = vt_error_set(err, ENOTSUP, filename, "open", "vtool reads NBD exports as "
			                 "raw disks; serve the image decoded (-f %s) instead", o->format);
		else if (o->snapshot || o->snapshot_id || o->snapshot_name)
			r = vt_error_set(err, ENOTSUP, filename, "open snapshot",
			                 "internal snapshots exist only in qcow2 images");
		else if ((r = blk_driver_nbd.open(b, o, err)) == 0)
			b->drv = &blk_driver_nbd;
		if (r < 0)
			goto fail;
		*out = b;
		return 0;
	}
	unsigned fflags = (o->writable ? BLK_FILE_WRITE : 0) |
	                  (o->force_share && !o->writable ? BLK_FILE_NOLOCK : 0) |
	                  (o->stream ? BLK_FILE_STREAM : 0);
	r = blk_file_open(filename, fflags, o->cache, &b->file, err);
	if (r < 0)
		goto fail;
	struct chain_link here = { .up = up };
	if (blk_file_identity(b->file, &here.dev, &here.ino) == 0) {
		for (const struct chain_link *l = up; l; l = l->up) {
			if (l->dev == here.dev && l->ino == here.ino) {
				r = vt_error_set(err, ELOOP, filename, "loop", NULL);
				goto fail;
			}
		}
	}
	if (o->format) {
		b->drv = find_driver(o->format);
		if (!b->drv) {
			r = vt_error_set(err, EINVAL, filename, "open", "Unknown driver '%s'",
			                 o->format);
			goto fail;
		}
	} else {
		const char *name;
		if ((r = blk_probe(b->file, &name, err)) < 0)
			goto fail;
		b->drv = find_driver(name);
		if (!b->drv) {
			/* Known, but no driver: refusing beats treating it as a raw disk. */
			r = vt_error_set(err, ENOTSUP, filename, "open",
			                 "a %s image: vtool cannot read this format yet "
			                 "(qemu-img convert -O qcow2 can convert it)",
			                 blk_probe_describe(name));
			goto fail;
		}
	}
	if ((o->snapshot || o->snapshot_id || o->snapshot_name) && b->drv != &blk_driver_qcow2) {
		r = vt_error_set(err, ENOTSUP, filename, "open snapshot",
		                 "internal snapshots exist only in qcow2 images");
		b->drv = NULL;
		goto fail;
	}
	/* A raw image has no metadata to go stale under a reader; every other format does,
	 * so its readers keep writers out, and so do the users of a backing file of any
	 * format (qemu's rules). */
	if (!o->writable && (b->drv != &blk_driver_raw || depth > 0) &&
	    (r = blk_file_deny_writers(b->file, err)) < 0) {
		b->drv = NULL;
		goto fail;
	}
	if (o->writable && !b->drv->pwritev) {
		r = vt_error_set(err, ENOTSUP, filename, "open",
		                 "vtool can read %s images but not write them",
		                 blk_probe_describe(b->drv->name));
		b->drv = NULL;
		goto fail;
	}
	r = b->drv->open(b, o, err);
	if (r < 0) {
		b->drv = NULL;
		goto fail;
	}
	if (b->backing_file[0] && !o->no_backing) {
		r = open_backing(b, o, depth, &here, err);
		if (r < 0)
			goto fail;
	}
	*out = b;
	return 0;
fail:
	if (b->drv)
		b->drv->close(b);
	blk_file_close(b->file);
	free(b->filename);
	free(b);
	return r;
}

int blk_open(const char *filename, const struct blk_open_opts *opts, struct blk **out,
             struct vt_error *err)
{
	return open_depth(filename, opts, 0, NULL, out, err);
}

int blk_close(struct blk *b, struct vt_error *err)
{
	int r = 0;
	if (!b)
		return 0;
	if (b->writable && b->drv->inactivate)
		r = b->drv->inactivate(b, err);
	if (b->writable) {
		int f = blk_flush(b, r < 0 ? NULL : err);
		r = r < 0 ? r : f;
	}
	b->drv->close(b);
	blk_file_close(b->file);
	if (b->backing)
		blk_close(b->backing, NULL);
	free(b->filename);
	free(b);
	return r;
}

uint64_t blk_size(const struct blk *b) { return b->size; }
const char *blk_format(const struct blk *b) { return b->drv->name; }
const char *blk_filename(const struct blk *b) { return b->filename; }
struct blk *blk_backing(const struct blk *b) { return b->backing; }
bool blk_writable(const struct blk *b) { return b->writable; }

void blk_identity(const struct blk *b, uint64_t *dev, uint64_t *ino)
{
	if (!b->file || blk_file_identity(b->file, dev, ino) < 0)
		*dev = *ino = 0;
}

static int check_range(struct blk *b, uint64_t off, uint64_t len, const char *what,
                       struct vt_error *err)
{
	if (off > b->size || len > b->size - off)
		return vt_error_set(err, EINVAL, b->filename, what,
		                    "request at %llu+%llu is past the end of the image (%llu)",
		                    (unsigned long long)off, (unsigned long long)len,
		                    (unsigned long long)b->size);
	return 0;
}

static int check_writable(struct blk *b, const char *what, struct vt_error *err)
{
	if (!b->writable)
		return vt_error_set(err, EROFS, b->filename, what, "image is opened read-only");
	return 0;
}

int blk_read_backing(struct blk *b, uint64_t off, void *buf, size_t len,
                     struct vt_error *err)
{
	struct blk *bk = b->backing;
	if (!bk) {
		memset(buf, 0, len);
		return 0;
	}
	size_t in = 0;
	if (off < bk->size)
		in = bk->size - off < len ? (size_t)(bk->size - off) : len;
	if (in) {
		struct iovec iov = { buf, in };
		int r = bk->drv->preadv(bk, off, &iov, 1, err);
		if (r < 0)
			return r;
	}
	memset((char *)buf + in, 0, len - in);
	return 0;
}

int blk_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
               struct vt_error *err)
{
	int r = check_range(b, off, vt_iov_size(iov, iovcnt), "read", err);
	return r < 0 ? r : b->drv->preadv(b, off, iov, iovcnt, err);
}

int blk_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                struct vt_error *err)
{
	int r = check_writable(b, "write", err);
	if (r == 0)
		r = check_range(b, off, vt_iov_size(iov, iovcnt), "write", err);
	return r < 0 ? r : b->drv->pwritev(b, off, iov, iovcnt, err);
}

int blk_pread(struct blk *b, uint64_t off, void *buf, size_t len, struct vt_error *err)
{
	struct iovec iov = { buf, len };
	return blk_preadv(b, off, &iov, 1, err);
}

int blk_pwrite(struct blk *b, uint64_t off, const void *buf, size_t len,
               struct vt_error *err)
{
	struct iovec iov = { (void *)buf, len };
	return blk_pwritev(b, off, &iov, 1, err);
}

int blk_flush(struct blk *b, struct vt_error *err)
{
	if (!b->writable)
		return 0;
	return b->drv->flush ? b->drv->flush(b, err) : blk_file_flush(b->file, err);
}

struct blk_file_lock {
	struct blk_file *f;
};

int blk_lock_file(const char *filename, struct blk_file_lock **out, struct vt_error *err)
{
	struct blk_file_lock *l = calloc(1, sizeof(*l));
	if (!l)
		return vt_error_set(err, ENOMEM, filename, "lock", NULL);
	int r = blk_file_open(filename, BLK_FILE_WRITE, BLK_CACHE_WRITEBACK, &l->f, err);
	if (r < 0) {
		free(l);
		return r;
	}
	*out = l;
	return 0;
}

void blk_unlock_file(struct blk_file_lock *l)
{
	if (l) {
		blk_file_close(l->f);
		free(l);
	}
}

int blk_sync(struct blk *b, struct vt_error *err)
{
	int r = blk_flush(b, err);
	return r < 0 || !b->file ? r : blk_file_sync(b->file, err);
}

int blk_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                     struct vt_error *err)
{
	int r = check_writable(b, "write zeroes", err);
	if (r == 0)
		r = check_range(b, off, len, "write zeroes", err);
	if (r < 0)
		return r;
	if (b->drv->write_zeroes)
		return b->drv->write_zeroes(b, off, len, flags, err);
	/* No cheaper way: write zeros, a megabyte at a time. */
	size_t chunk = len < (1u << 20) ? (size_t)len : 1u << 20;
	void *z = chunk ? calloc(1, chunk) : NULL;
	if (chunk && !z)
		return vt_error_set(err, ENOMEM, b->filename, "write zeroes", NULL);
	while (len && r == 0) {
		size_t n = len < chunk ? (size_t)len : chunk;
		struct iovec iov = { z, n };
		r = b->drv->pwritev(b, off, &iov, 1, err);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

int blk_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len,
                         struct vt_error *err)
{
	int r = check_writable(b, "write compressed", err);
	if (r == 0)
		r = check_range(b, off, len, "write compressed", err);
	if (r == 0 && !b->drv->write_compressed)
		r = vt_error_set(err, ENOTSUP, b->filename, "write compressed",
		                 "format %s does not support compression", b->drv->name);
	return r < 0 ? r : b->drv->write_compressed(b, off, buf, len, err);
}

int blk_copy_range(struct blk *src, uint64_t soff, struct blk *dst, uint64_t doff,
                   uint64_t len, struct vt_error *err)
{
	int r = check_writable(dst, "copy range", err);
	if (r == 0)
		r = check_range(src, soff, len, "copy range", err);
	if (r == 0)
		r = check_range(dst, doff, len, "copy range", err);
	if (r < 0)
		return r;
	if (dst->drv != &blk_driver_raw)
		return vt_error_set(err, ENOTSUP, dst->filename, "copy range",
		                    "copy offloading needs a raw target");
	while (len) {
		struct blk_status st;
		if ((r = blk_block_status(src, soff, len, &st, err)) < 0)
			return r;
		uint64_t n = st.len;
		if (st.flags & BLK_STATUS_ZERO)
			r = blk_write_zeroes(dst, doff, n, BLK_MAY_UNMAP, err);
		else if ((st.flags & BLK_STATUS_OFFSET_VALID) && !(st.flags & BLK_STATUS_COMPRESSED) &&
		         st.layer && (st.layer->drv == &blk_driver_raw ||
		                      st.layer->drv == &blk_driver_qcow2))
			r = blk_file_copy_range(st.layer->file, st.host_offset, dst->file, doff, n, err);
		else
			r = vt_error_set(err, ENOTSUP, src->filename, "copy range",
			                 "data not stored raw");
		if (r < 0)
			return r;
		soff += n;
		doff += n;
		len -= n;
	}
	return 0;
}

bool blk_supports_compression(const struct blk *b)
{
	return b->drv->write_compressed != NULL;
}

uint32_t blk_cluster_size(struct blk *b)
{
	return b->drv->cluster_size ? b->drv->cluster_size(b) : 0;
}

int blk_discard(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err)
{
	int r = check_writable(b, "discard", err);
	if (r == 0)
		r = check_range(b, off, len, "discard", err);
	if (r < 0 || !b->drv->discard)
		return r;
	return b->drv->discard(b, off, len, err);
}

int blk_block_status_layer(struct blk *b, uint64_t off, uint64_t len,
                           struct blk_status *st, struct vt_error *err)
{
	int r = check_range(b, off, len, "block status", err);
	if (r < 0)
		return r;
	if (len == 0)
		return vt_error_set(err, EINVAL, b->filename, "block status", "empty range");
	memset(st, 0, sizeof(*st));
	if (b->drv->block_status) {
		r = b->drv->block_status(b, off, len, st, err);
	} else {
		st->len = len;
		st->flags = BLK_STATUS_ALLOCATED | BLK_STATUS_DATA;
	}
	if (r == 0) {
		st->layer = b;
		if (st->len == 0 || st->len > len)
			st->len = len;
	}
	return r;
}

int blk_allocated_above(struct blk *top, struct blk *base, uint64_t off, uint64_t len,
                        bool *yes, uint64_t *pnum, struct vt_error *err)
{
	*yes = false;
	*pnum = len;
	for (struct blk *l = top; l && l != base; l = blk_backing(l)) {
		if (off >= blk_size(l)) {
			*yes = true;
			return 0;
		}
		uint64_t m = *pnum < blk_size(l) - off ? *pnum : blk_size(l) - off;
		struct blk_status st;
		int r = blk_block_status_layer(l, off, m, &st, err);
		if (r < 0)
			return r;
		*pnum = st.len;
		if (st.flags & BLK_STATUS_ALLOCATED) {
			*yes = true;
			return 0;
		}
	}
	return 0;
}

int blk_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                     struct vt_error *err)
{
	int depth = 0;
	for (;;) {
		int r = blk_block_status_layer(b, off, len, st, err);
		if (r < 0)
			return r;
		st->depth = depth;
		if (!(st->flags & BLK_STATUS_ALLOCATED) && !b->backing)
			st->flags |= BLK_STATUS_ZERO; /* a hole in the whole chain reads as zeros */
		if ((st->flags & BLK_STATUS_ALLOCATED) || !b->backing)
			return 0;
		len = st->len;
		struct blk *bk = b->backing;
		if (off >= bk->size) { /* past the backing file's end: zeros, decided here */
			st->flags = BLK_STATUS_ZERO;
			return 0;
		}
		if (len > bk->size - off)
			len = bk->size - off;
		b = bk;
		depth++;
	}
}

int blk_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	memset(info, 0, sizeof(*info));
	info->format = b->drv->name;
	info->virtual_size = b->size;
	info->actual_size = b->file ? blk_file_allocated_bytes(b->file) : 0;
	if (b->backing_file[0]) {
		info->has_backing = true;
		snprintf(info->backing_file, sizeof(info->backing_file), "%s", b->backing_file);
		char *full = resolve_backing(b->filename, b->backing_file);
		snprintf(info->full_backing_file, sizeof(info->full_backing_file), "%s",
		         full ? full : b->backing_file);
		free(full);
		snprintf(info->backing_format, sizeof(info->backing_format), "%s",
		         b->backing_format);
	}
	int r = b->drv->get_info ? b->drv->get_info(b, info, err) : 0;
	if (r == 0 && b->drv->format_specific &&
	    !(info->format_specific = b->drv->format_specific(b)))
		r = vt_error_set(err, ENOMEM, b->filename, "info", NULL);
	if (r < 0)
		blk_info_free(info); /* nothing for the caller to free on failure */
	return r;
}

void blk_info_free(struct blk_info *info)
{
	free(info->snapshots);
	info->snapshots = NULL;
	vt_json_free(info->format_specific);
	info->format_specific = NULL;
}

int blk_truncate(struct blk *b, uint64_t size, struct vt_error *err)
{
	int r = check_writable(b, "resize", err);
	if (r < 0)
		return r;
	if (!b->drv->truncate)
		return vt_error_set(err, ENOTSUP, b->filename, "resize",
		                    "format %s cannot be resized", b->drv->name);
	return b->drv->truncate(b, size, err);
}

/* What a handle becomes when it could not be reopened: every request fails. */
static int dead_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	return vt_error_set(err, EIO, b->filename, "I/O", "the image could not be reopened");
}

static void dead_close(struct blk *b)
{
}

static const struct blk_driver dead_driver = {
	.name = "none",
	.close = dead_close,
	.preadv = dead_preadv,
};

static int reopen_as(struct blk *b, const struct blk_driver *drv, bool writable,
                     struct vt_error *err)
{
	unsigned fflags = writable ? BLK_FILE_WRITE : 0;
	struct blk_open_opts o = { .format = drv->name, .writable = writable, .cache = b->cache };
	int r = blk_file_open(b->filename, fflags, b->cache, &b->file, err);
	if (r < 0) {
		b->file = NULL;
		return r;
	}
	/* A reader of a backing file keeps writers out, as at open. */
	if (!writable && (r = blk_file_deny_writers(b->file, err)) < 0)
		goto fail;
	b->drv = drv;
	b->writable = writable;
	char keep_file[sizeof(b->backing_file)], keep_fmt[sizeof(b->backing_format)];
	memcpy(keep_file, b->backing_file, sizeof(keep_file));
	memcpy(keep_fmt, b->backing_format, sizeof(keep_fmt));
	if ((r = drv->open(b, &o, err)) < 0)
		goto fail;
	memcpy(b->backing_file, keep_file, sizeof(keep_file));
	memcpy(b->backing_format, keep_fmt, sizeof(keep_fmt));
	return 0;
fail:
	blk_file_close(b->file);
	b->file = NULL;
	b->drv = &dead_driver;
	b->writable = false;
	return r;
}

int blk_reopen(struct blk *b, bool writable, struct vt_error *err)
{
	if (b->writable == writable)
		return 0;
	if (b->drv == &dead_driver)
		return dead_preadv(b, 0, NULL, 0, err);
	if (writable && !b->drv->pwritev)
		return vt_error_set(err, ENOTSUP, b->filename, "reopen",
		                    "vtool can read %s images but not write them", b->drv->name);
	int r = b->writable ? blk_flush(b, err) : 0;
	if (r < 0)
		return r;
	const struct blk_driver *drv = b->drv;
	uint64_t size = b->size;
	drv->close(b);
	blk_file_close(b->file);
	b->file = NULL;
	if ((r = reopen_as(b, drv, writable, err)) == 0)
		return 0;
	/* Back to what it was, if that still works. */
	if (reopen_as(b, drv, !writable, NULL) == 0)
		b->size = size;
	return r;
}

int blk_make_empty(struct blk *b, struct vt_error *err)
{
	int r = check_writable(b, "make empty", err);
	if (r < 0)
		return r;
	if (!b->drv->make_empty)
		return vt_error_set(err, ENOTSUP, b->filename, "make empty",
		                    "format %s cannot be emptied", b->drv->name);
	return b->drv->make_empty(b, err);
}

int blk_change_backing_file(struct blk *b, const char *file, const char *format,
                            struct vt_error *err)
{
	int r = check_writable(b, "change backing file", err);
	if (r < 0)
		return r;
	if (!b->drv->change_backing_file)
		return vt_error_set(err, ENOTSUP, b->filename, "change backing file",
		                    "Operation not supported");
	if (file && !file[0])
		file = NULL;
	return b->drv->change_backing_file(b, file, file ? format : NULL, err);
}

/* qemu's option help lines: "  name=<type>", padded to 24 columns, " - help". */
static size_t format_options(char *buf, size_t size, size_t used,
                             const struct blk_optdesc *desc)
{
	static const char *const types[] = { "str", "size", "num", "bool (on/off)" };
	for (const struct blk_optdesc *o = desc; o && o->name; o++) {
		char key[96];
		snprintf(key, sizeof(key), "%s=<%s>", o->name, types[o->type]);
		if (used < size)
			used += (size_t)snprintf(buf + used, size - used, "  %-22s - %s\n", key,
			                         o->help);
	}
	return used;
}

bool blk_create_makes_one_file(const char *format, const char *options)
{
	const struct blk_driver *d = find_driver(format);
	if (!d || !d->creates_several_files)
		return true;
	struct blk_optlist opts = { 0 };
	bool one = true;
	if (blk_opts_parse(options, d->create_opts, &opts, NULL) == 0)
		one = !d->creates_several_files(&opts);
	blk_opts_free(&opts);
	return one;
}

bool blk_format_compresses(const char *format)
{
	const struct blk_driver *d = find_driver(format);
	return d && d->write_compressed;
}

int blk_prealloc_parse(const char *name, enum blk_prealloc *out)
{
	static const char *const names[] = { "off", "metadata", "falloc", "full" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(name, names[i])) {
			*out = (enum blk_prealloc)i;
			return 0;
		}
	}
	return -EINVAL;
}

int blk_resize(struct blk *b, uint64_t size, enum blk_prealloc prealloc, struct vt_error *err)
{
	int r = check_writable(b, "resize", err);
	if (r < 0)
		return r;
	if (b->drv->resize)
		return b->drv->resize(b, size, prealloc, err);
	if (!b->drv->truncate)
		return vt_error_set(err, ENOTSUP, b->filename, "resize",
		                    "format %s cannot be resized", b->drv->name);
	if (prealloc != BLK_PREALLOC_OFF)
		return vt_error_set(err, ENOTSUP, b->filename, "resize",
		                    "Unsupported preallocation mode for format %s", b->drv->name);
	return b->drv->truncate(b, size, err);
}

int blk_snapshot_create(struct blk *b, const char *name, struct vt_error *err)
{
	int r = check_writable(b, "create snapshot", err);
	if (r == 0 && !b->drv->snapshot_create)
		r = vt_error_set(err, ENOTSUP, b->filename, "create snapshot", NULL);
	return r < 0 ? r : b->drv->snapshot_create(b, name, err);
}

int blk_snapshot_goto(struct blk *b, const char *id_or_name, bool dry_run,
                      struct vt_error *err)
{
	int r = dry_run ? 0 : check_writable(b, "apply snapshot", err);
	if (r == 0 && !b->drv->snapshot_goto)
		r = vt_error_set(err, ENOTSUP, b->filename, "",
		                 "Block driver does not support snapshots");
	return r < 0 ? r : b->drv->snapshot_goto(b, id_or_name, dry_run, err);
}

int blk_snapshot_delete(struct blk *b, const char *id, const char *name,
                        struct vt_error *err)
{
	int r = check_writable(b, "delete snapshot", err);
	if (r == 0 && !b->drv->snapshot_delete)
		r = vt_error_set(err, ENOTSUP, b->filename, "delete snapshot", NULL);
	return r < 0 ? r : b->drv->snapshot_delete(b, id, name, err);
}

int blk_bitmap_list(struct blk *b, struct blk_bitmap **out, size_t *n, struct vt_error *err)
{
	*out = NULL;
	*n = 0;
	if (!b->drv->bitmap_list)
		return vt_error_set(err, ENOTSUP, b->filename, NULL, "Source lacks bitmap support");
	return b->drv->bitmap_list(b, out, n, err);
}

void blk_bitmap_list_free(struct blk_bitmap *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i].name);
	free(l);
}

int blk_bitmap_read(struct blk *b, const char *name, struct blk_bitmap_bits *out,
                    struct vt_error *err)
{
	if (!b->drv->bitmap_read)
		return vt_error_set(err, ENOENT, b->filename, NULL, "Dirty bitmap '%s' not found",
		                    name);
	return b->drv->bitmap_read(b, name, out, err);
}

int blk_bitmap_apply(struct blk *b, const struct blk_bitmap_op *op, struct vt_error *err)
{
	int r = check_writable(b, "bitmap", err);
	if (r == 0 && !b->drv->bitmap_apply && op->action != BLK_BITMAP_ADD)
		r = vt_error_set(err, ENOENT, b->filename, NULL, "Dirty bitmap '%s' not found",
		                 op->name);
	else if (r == 0 && !b->drv->bitmap_apply)
		r = vt_error_set(err, ENOTSUP, b->filename, NULL,
		                 "Can't store persistent bitmaps to %s: Operation not supported",
		                 b->filename);
	return r < 0 ? r : b->drv->bitmap_apply(b, op, err);
}

const char *blk_create_help(const char *format)
{
	static char buf[8192];
	const struct blk_driver *d = find_driver(format);
	size_t used;

	if (!d)
		return NULL;
	used = (size_t)snprintf(buf, sizeof(buf), "Supported %s options:\n", d->name);
	used = format_options(buf, sizeof(buf), used, d->create_opts);
	if (used < sizeof(buf))
		snprintf(buf + used, sizeof(buf) - used,
		         "\nThe protocol level may support further options.\n"
		         "Specify the target filename to include those options.\n");
	return buf;
}

const char *blk_amend_help(const char *format, struct vt_error *err)
{
	static char buf[8192];
	const struct blk_driver *d = find_driver(format);

	if (!d) {
		vt_error_set(err, EINVAL, "", "", "Unknown file format '%s'", format);
		return NULL;
	}
	if (!d->amend) {
		vt_error_set(err, ENOTSUP, "", "", "Format driver '%s' does not support option "
		             "amendment", format);
		return NULL;
	}
	size_t used = (size_t)snprintf(buf, sizeof(buf), "Amend options for '%s':\n", d->name);
	format_options(buf, sizeof(buf), used, d->amend_opts);
	return buf;
}

int blk_amend(struct blk *b, const char *options, bool force,
              void (*progress)(void *opaque, uint64_t done, uint64_t total), void *opaque,
              struct vt_error *err)
{
	struct blk_optlist opts = { 0 };
	int r = check_writable(b, "amend", err);
	if (r < 0)
		return r;
	if (!b->drv->amend)
		return vt_error_set(err, ENOTSUP, "", "", "Format driver '%s' does not support "
		                    "option amendment", b->drv->name);
	if ((r = blk_opts_parse(options, b->drv->amend_opts, &opts, err)) < 0) {
		/* Valid at creation only? qemu says so. */
		struct blk_optlist co = { 0 };
		if (blk_opts_parse(options, b->drv->create_opts, &co, NULL) == 0 && err)
			snprintf(err->why + strlen(err->why), sizeof(err->why) - strlen(err->why),
			         "\nThis option is only supported for image creation");
		blk_opts_free(&co);
		return r;
	}
	r = b->drv->amend(b, &opts, force, progress, opaque, err);
	blk_opts_free(&opts);
	return r;
}

int blk_create(const char *filename, const struct blk_create_opts *co, char **formatting,
               struct vt_error *err)
{
	const char *fmt = co->format ? co->format : "raw";
	const struct blk_driver *d = find_driver(fmt);
	struct blk_optlist opts = { 0 };
	struct blk_create_opts o = *co;
	struct blk_file *f = NULL;
	int r;

	if (!d)
		return vt_error_set(err, EINVAL, filename, "create", "Unknown file format '%s'",
		                    fmt);
	r = blk_opts_parse(co->options, d->create_opts, &opts, err);
	if (r < 0) {
		if (err)
			snprintf(err->file, sizeof(err->file), "%s", filename);
		return r;
	}
	/* -o size/backing_file/backing_fmt are the same as the positional forms. */
	uint64_t osize;
	if (blk_opts_get_size(&opts, "size", &osize, err) == 0 && !o.size_given) {
		o.size = osize;
		o.size_given = true;
	}
	if (!o.backing_file)
		o.backing_file = blk_opts_get(&opts, "backing_file");
	if (!o.backing_format)
		o.backing_format = blk_opts_get(&opts, "backing_fmt");
	if (o.backing_file && !o.backing_format) {
		r = vt_error_set(err, EINVAL, filename, "create",
		                 "Backing file specified without backing format");
		goto out;
	}
	if (!d->create) {
		r = vt_error_set(err, ENOTSUP, filename, "create",
		                 "Driver '%s' does not support image creation", fmt);
		goto out;
	}
	if (o.backing_file && !d->supports_backing) {
		r = vt_error_set(err, ENOTSUP, filename, "create",
		                 "Backing file not supported for file format '%s'", fmt);
		goto out;
	}
	if (o.backing_file && (!o.size_given || !o.no_backing_open)) {
		/* Open the backing file to check it and, without a size, inherit its size. */
		struct blk *bk;
		struct blk_open_opts bo = { .format = o.backing_format, .force_share = true };
		char *path = resolve_backing(filename, o.backing_file);
		if (!path) {
			r = vt_error_set(err, ENOMEM, filename, "create", NULL);
			goto out;
		}
		struct vt_error inner = { 0 };
		r = blk_open(path, &bo, &bk, &inner);
		if (r < 0) {
			vt_error_set(err, -r, filename, "create", "Could not open backing file '%s': %s",
			             path, inner.why);
			free(path);
			goto out;
		}
		free(path);
		if (!o.size_given) {
			o.size = blk_size(bk);
			o.size_given = true;
		}
		blk_close(bk, NULL);
	}
	if (!o.size_given) {
		r = vt_error_set(err, EINVAL, filename, "create", "Image creation needs a size parameter");
		goto out;
	}
	if (o.size > INT64_MAX) {
		r = vt_error_set(err, ERANGE, filename, "create",
		                 "Image size must be less than 8 EiB!");
		goto out;
	}
	bool existed = access(filename, F_OK) == 0;
	r = blk_file_open(filename, BLK_FILE_CREATE, BLK_CACHE_WRITEBACK, &f, err);
	if (r < 0)
		goto out;
	r = d->create(f, filename, &o, &opts, formatting, err);
	if (r == 0)
		r = blk_file_flush(f, err);
	blk_file_close(f);
	if (r < 0 && !existed)
		unlink(filename); /* leave nothing half-made behind */
out:
	blk_opts_free(&opts);
	return r;
}

int blk_measure_data(struct blk *src, uint64_t cluster_size, uint64_t *bytes,
                     struct vt_error *err)
{
	uint64_t size = blk_size(src), off = 0;
	*bytes = 0;
	while (off < size) {
		struct blk_status st;
		int r = blk_block_status(src, off, size - off, &st, err);
		if (r < 0)
			return r;
		uint64_t n = st.len;
		if (!(st.flags & BLK_STATUS_ZERO) && (st.flags & BLK_STATUS_DATA)) {
			/* Extend to the end of the cluster; count from the cluster's start. */
			uint64_t end = (off + n + cluster_size - 1) / cluster_size * cluster_size;
			n = (end < size ? end : size) - off;
			*bytes += off % cluster_size + n;
		}
		off += n;
	}
	return 0;
}

int blk_measure(const char *format, const char *options, uint64_t size, struct blk *src,
                struct blk_measure *m, struct vt_error *err)
{
	const struct blk_driver *d = find_driver(format);
	struct blk_optlist opts = { 0 };
	memset(m, 0, sizeof(*m));
	if (!d)
		return vt_error_set(err, EINVAL, "", "measure", "Unknown file format '%s'", format);
	if (!d->measure)
		return vt_error_set(err, ENOTSUP, "", "measure",
		                    "Block driver '%s' does not support size measurement", format);
	int r = blk_opts_parse(options, d->create_opts, &opts, err);
	if (r == 0)
		r = d->measure(&opts, src ? blk_size(src) : size, src, m, err);
	blk_opts_free(&opts);
	return r;
}

int blk_check(struct blk *b, unsigned fix, struct blk_check *res,
              void (*report)(void *opaque, const char *line), void *opaque,
              struct vt_error *err)
{
	memset(res, 0, sizeof(*res));
	if (!b->drv->check)
		return vt_error_set(err, ENOTSUP, b->filename, "check",
		                    "This image format does not support checks");
	if (fix && !b->writable)
		return vt_error_set(err, EROFS, b->filename, "check", "image is opened read-only");
	return b->drv->check(b, fix, res, report, opaque, err);
}
