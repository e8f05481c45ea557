/* The VMDK driver (VMware's "Virtual Disk Format 5.0"; qemu's vmdk driver is the
 * reference for behaviour): open (a sparse file with its embedded descriptor, or a text
 * descriptor naming extent files), request routing over the extents, flush, block
 * status, info and check, and the vtable blk.c dispatches to. Internals: vmdk.h. */
#include "blk/vmdk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers shared by the vmdk files --------------------------------------------------- */

int vmdk_file_iov(struct blk_file *f, bool write, uint64_t foff, const struct iovec *iov,
                  int iovcnt, size_t skip, uint64_t len, struct vt_error *err)
{
	for (int i = 0; i < iovcnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t n = iov[i].iov_len - skip;
		if (n > len)
			n = (size_t)len;
		char *p = (char *)iov[i].iov_base + skip;
		int r = write ? blk_file_pwrite(f, foff, p, n, err) : blk_file_pread(f, foff, p, n, err);
		if (r < 0)
			return r;
		foff += n;
		len -= n;
		skip = 0;
	}
	return 0;
}

int vmdk_read_backing(struct vmdk *s, uint64_t guest_off, void *buf, size_t len,
                      struct vt_error *err)
{
	return blk_read_backing(s->b, guest_off, buf, len, err);
}

int vmdk_backing_iov(struct vmdk *s, uint64_t guest_off, const struct iovec *iov, int iovcnt,
                     size_t skip, uint64_t len, struct vt_error *err)
{
	for (int i = 0; i < iovcnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t n = iov[i].iov_len - skip;
		if (n > len)
			n = (size_t)len;
		int r = blk_read_backing(s->b, guest_off, (char *)iov[i].iov_base + skip, n, err);
		if (r < 0)
			return r;
		guest_off += n;
		len -= n;
		skip = 0;
	}
	return 0;
}

int vmdk_check_parent_cid(struct vmdk *s, struct vt_error *err)
{
	struct blk *p = s->b->backing;
	if (!p || s->cid_checked)
		return 0;
	if (p->drv != &blk_driver_vmdk)
		return vt_error_set(err, EINVAL, s->b->filename, "read backing file",
		                    "the parent is not a vmdk image, so parentCID cannot match");
	const struct vmdk *ps = p->opaque;
	if (ps->cid != s->parent_cid)
		return vt_error_set(err, EINVAL, s->b->filename, "read backing file",
		                    "the parent changed since this image was made: its CID is %x, "
		                    "parentCID here is %x", ps->cid, s->parent_cid);
	s->cid_checked = true;
	return 0;
}

bool vmdk_inflight_busy(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1)
{
	for (int i = 0; i < s->n_inflight; i++) {
		const struct vmdk_inflight *x = &s->inflight[i];
		if (x->ext == e && x->g0 < g1 && g0 < x->g1)
			return true;
	}
	return false;
}

void vmdk_inflight_wait(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1)
{
	while (vmdk_inflight_busy(s, e, g0, g1))
		pthread_cond_wait(&s->cond, &s->lock);
}

int vmdk_inflight_add(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1,
                      struct vt_error *err)
{
	if (s->n_inflight == VMDK_MAX_INFLIGHT)
		return vt_error_set(err, EBUSY, s->b->filename, "write",
		                    "more than %d grain allocations at once", VMDK_MAX_INFLIGHT);
	s->inflight[s->n_inflight++] = (struct vmdk_inflight){ e, g0, g1 };
	return 0;
}

void vmdk_inflight_del(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1)
{
	for (int i = 0; i < s->n_inflight; i++) {
		struct vmdk_inflight *x = &s->inflight[i];
		if (x->ext == e && x->g0 == g0 && x->g1 == g1) {
			*x = s->inflight[--s->n_inflight];
			break;
		}
	}
	pthread_cond_broadcast(&s->cond);
}

/* ---- open / close ------------------------------------------------------------------- */

static void vmdk_close(struct blk *b)
{
	struct vmdk *s = b->opaque;
	if (!s)
		return;
	vmdk_stream_drop_pending(s);
	vmdk_cache_drop(s);
	for (int i = 0; i < s->n_extents; i++) {
		struct vmdk_extent *e = &s->extents[i];
		vmdk_sparse_close(e);
		if (e->own_file)
			blk_file_close(e->file);
		free(e->path);
	}
	free(s->extents);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
	b->opaque = NULL;
}

/* A monolithic image: the file is the one sparse extent and holds the descriptor. */
static int open_monolithic(struct vmdk *s, const uint8_t *head, bool writable,
                           struct vt_error *err)
{
	struct vmdk_extent *e = calloc(1, sizeof(*e));
	if (!e || !(e->path = strdup(s->b->filename))) {
		free(e);
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	}
	e->file = s->b->file;
	s->extents = e;
	s->n_extents = 1;
	int r = vmdk_sparse_open(e, head, writable, err);
	snprintf(s->create_type, sizeof(s->create_type), "%s",
	         e->compressed ? "streamOptimized" : "monolithicSparse");
	return r;
}

static int vmdk_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct vmdk *s = calloc(1, sizeof(*s));
	char *desc = NULL;
	int r;
	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	s->b = b;
	b->opaque = s;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	bool share = o->force_share;

	/* A sparse header, or else a text descriptor. */
	uint8_t head[512];
	uint64_t fsize;
	if ((r = blk_file_size(b->file, &fsize, err)) < 0)
		goto out;
	if (fsize < 4) {
		r = vt_error_set(err, EINVAL, b->filename, "open", "File is too small, not a valid image");
		goto out;
	}
	if ((r = blk_file_pread(b->file, 0, head, sizeof(head), err)) < 0)
		goto out;
	if (!memcmp(head, "KDMV", 4) || !memcmp(head, "COWD", 4)) {
		uint64_t cap = vmdk_le64(head + offsetof(struct vmdk4_header, capacity));
		uint64_t doff = vmdk_le64(head + offsetof(struct vmdk4_header, desc_offset));
		if (!memcmp(head, "KDMV", 4) && cap == 0 && doff) {
			/* A sparse header in front of a descriptor (and no grains of its own). */
			if (doff > UINT64_MAX / VMDK_SECTOR)
				r = vt_error_set(err, EINVAL, b->filename, "open", "invalid VMDK image descriptor");
			else if ((r = vmdk_desc_read(b->file, doff * VMDK_SECTOR, &desc, err)) == 0)
				r = vmdk_desc_open(s, desc, b->filename, b->writable, share, err);
		} else {
			r = open_monolithic(s, head, b->writable, err);
		}
		s->desc_offset = 0x200;
	} else {
		if ((r = vmdk_desc_read(b->file, 0, &desc, err)) == 0)
			r = vmdk_desc_open(s, desc, b->filename, b->writable, share, err);
		s->desc_offset = 0;
	}
	if (r == 0 && s->n_extents == 0)
		r = vt_error_set(err, EINVAL, b->filename, "open",
		                 "invalid VMDK image descriptor: no usable extent");
	if (r == 0)
		r = vmdk_desc_ids(s, err);
	if (r == 0) {
		const struct vmdk_extent *last = &s->extents[s->n_extents - 1];
		b->size = (last->start + last->sectors) * VMDK_SECTOR;
	}
out:
	free(desc);
	if (r < 0)
		vmdk_close(b);
	return r;
}

/* ---- requests ------------------------------------------------------------------------ */

/* The extent holding guest byte off (extents are in guest order; empty ones are skipped). */
static struct vmdk_extent *find_extent(struct vmdk *s, uint64_t off)
{
	uint64_t sector = off / VMDK_SECTOR;
	int lo = 0, hi = s->n_extents;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (s->extents[mid].start + s->extents[mid].sectors <= sector)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->n_extents ? &s->extents[lo] : NULL;
}

enum op { OP_READ, OP_WRITE, OP_ZERO };

/* Split [off, off + len) at extent boundaries and hand each piece to its extent. */
static int route(struct blk *b, enum op op, uint64_t off, const struct iovec *iov,
                 int iovcnt, uint64_t len, unsigned flags, struct vt_error *err)
{
	struct vmdk *s = b->opaque;
	size_t skip = 0;
	while (len) {
		struct vmdk_extent *e = find_extent(s, off);
		if (!e)
			return vt_error_set(err, EIO, b->filename, "access",
			                    "no extent holds offset %llu", (unsigned long long)off);
		uint64_t rel = off - e->start * VMDK_SECTOR;
		uint64_t n = e->sectors * VMDK_SECTOR - rel;
		if (n > len)
			n = len;
		int r;
		if (e->flat && op == OP_ZERO)
			r = blk_file_zero(e->file, e->flat_offset + rel, n, flags & BLK_MAY_UNMAP, err);
		else if (e->flat)
			r = vmdk_file_iov(e->file, op == OP_WRITE, e->flat_offset + rel, iov, iovcnt, skip,
			                  n, err);
		else if (op == OP_ZERO)
			r = vmdk_sparse_zero(s, e, rel, n, err);
		else if (e->compressed)
			r = op == OP_WRITE ? vmdk_stream_write(s, e, rel, iov, iovcnt, skip, n, err)
			                   : vmdk_stream_read(s, e, rel, iov, iovcnt, skip, n, err);
		else
			r = op == OP_WRITE ? vmdk_sparse_write(s, e, rel, iov, iovcnt, skip, n, err)
			                   : vmdk_sparse_read(s, e, rel, iov, iovcnt, skip, n, err);
		if (r < 0)
			return r;
		off += n;
		skip += n;
		len -= n;
	}
	return 0;
}

static int vmdk_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	return route(b, OP_READ, off, iov, iovcnt, vt_iov_size(iov, iovcnt), 0, err);
}

/* The first write of an open gives the image a new CID (as qemu does), so that images
 * made on top of it notice the change. */
static int touch_cid(struct vmdk *s, struct vt_error *err)
{
	int r = 0;
	pthread_mutex_lock(&s->lock);
	if (!s->cid_updated) {
		r = vmdk_desc_new_cid(s, err);
		s->cid_updated = r == 0;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int vmdk_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                        struct vt_error *err)
{
	int r = touch_cid(b->opaque, err);
	return r < 0 ? r : route(b, OP_WRITE, off, iov, iovcnt, vt_iov_size(iov, iovcnt), 0, err);
}

static int vmdk_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                             struct vt_error *err)
{
	int r = touch_cid(b->opaque, err);
	return r < 0 ? r : route(b, OP_ZERO, off, NULL, 0, len, flags, err);
}

/* qemu-img convert -c: streamOptimized grains are compressed anyway; other extents
 * take the data as it is (as qemu's driver does). */
static int vmdk_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len,
                                 struct vt_error *err)
{
	struct iovec iov = { (void *)buf, len };
	return vmdk_pwritev(b, off, &iov, 1, err);
}

static int vmdk_flush(struct blk *b, struct vt_error *err)
{
	struct vmdk *s = b->opaque;
	int r = vmdk_stream_flush(s, err);
	for (int i = 0; r == 0 && i < s->n_extents; i++)
		if (s->extents[i].own_file)
			r = blk_file_flush(s->extents[i].file, err);
	return r < 0 ? r : blk_file_flush(b->file, err);
}

static int vmdk_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                             struct vt_error *err)
{
	struct vmdk *s = b->opaque;
	struct vmdk_extent *e = find_extent(s, off);
	if (!e)
		return vt_error_set(err, EIO, b->filename, "block status", "no extent holds offset %llu",
		                    (unsigned long long)off);
	uint64_t rel = off - e->start * VMDK_SECTOR, n = e->sectors * VMDK_SECTOR - rel;
	if (n > len)
		n = len;
	if (!e->flat)
		return vmdk_sparse_status(s, e, rel, n, st, err);
	/* A flat extent is data where its file is; qemu asks the file about holes and calls
	 * them zero data. */
	bool data;
	int r = blk_file_extent(e->file, e->flat_offset + rel, n, &data, &st->len, err);
	if (r < 0)
		return r;
	st->flags = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID |
	            (data ? 0 : BLK_STATUS_ZERO);
	st->host_offset = e->flat_offset + rel;
	return 0;
}

/* ---- info and check ------------------------------------------------------------------ */

/* qemu gives a cluster size when all extents are alike (all flat, or sparse with one
 * grain size and all compressed or none) and they are not flat. */
static uint32_t vmdk_cluster_size(struct blk *b)
{
	const struct vmdk *s = b->opaque;
	const struct vmdk_extent *a = &s->extents[0];
	for (int i = 1; i < s->n_extents; i++) {
		const struct vmdk_extent *x = &s->extents[i];
		if (x->flat != a->flat || x->compressed != a->compressed ||
		    (!a->flat && x->grain_sectors != a->grain_sectors))
			return 0;
	}
	return a->flat ? 0 : (uint32_t)vmdk_grain_bytes(a);
}

static int vmdk_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	const struct vmdk *s = b->opaque;
	info->cluster_size = vmdk_cluster_size(b);
	for (int i = 0; i < s->n_extents; i++)
		if (s->extents[i].own_file)
			info->actual_size += blk_file_allocated_bytes(s->extents[i].file);
	return 0;
}

static struct vt_json *vmdk_format_specific(struct blk *b)
{
	const struct vmdk *s = b->opaque;
	struct vt_json *d = vt_json_object(), *list = vt_json_array();
	vt_json_set_int(d, "cid", s->cid);
	vt_json_set_int(d, "parent-cid", s->parent_cid);
	vt_json_set_str(d, "create-type", s->create_type);
	for (int i = 0; i < s->n_extents; i++) {
		const struct vmdk_extent *e = &s->extents[i];
		struct vt_json *x = vt_json_object();
		if (e->compressed)
			vt_json_set_bool(x, "compressed", true);
		vt_json_set_int(x, "virtual-size", (int64_t)(e->sectors * VMDK_SECTOR));
		vt_json_set_str(x, "filename", e->path);
		if (!e->flat)
			vt_json_set_int(x, "cluster-size", (int64_t)vmdk_grain_bytes(e));
		vt_json_set_str(x, "format", e->type);
		vt_json_append(list, x);
	}
	vt_json_set(d, "extents", list);
	return d;
}

/* qemu-img check for vmdk: every allocated grain (and flat extent) starts inside its
 * file; the first that does not is one corruption and a failed check. No repairs. */
static int vmdk_check(struct blk *b, unsigned fix, struct blk_check *res,
                      void (*report)(void *, const char *), void *opaque, struct vt_error *err)
{
	struct vmdk *s = b->opaque;
	if (fix)
		return vt_error_set(err, ENOTSUP, b->filename, "check",
		                    "This image format does not support checks");
	for (int i = 0; i < s->n_extents; i++) {
		struct vmdk_extent *e = &s->extents[i];
		int r;
		if (!e->flat) {
			if ((r = vmdk_sparse_check(s, e, res, report, opaque, err)) < 0)
				return r;
			continue;
		}
		uint64_t fsize;
		if ((r = blk_file_size(e->file, &fsize, err)) < 0)
			return r;
		if (e->flat_offset >= fsize) {
			char line[96];
			snprintf(line, sizeof(line), "ERROR: cluster offset for sector %llu points after EOF",
			         (unsigned long long)e->start);
			if (report)
				report(opaque, line);
			res->corruptions++;
			return vt_error_set(err, EINVAL, "", "Check failed", NULL);
		}
	}
	return 0;
}

const struct blk_driver blk_driver_vmdk = {
	.name = "vmdk",
	.open = vmdk_open,
	.close = vmdk_close,
	.preadv = vmdk_preadv,
	.pwritev = vmdk_pwritev,
	.flush = vmdk_flush,
	.write_zeroes = vmdk_write_zeroes,
	.write_compressed = vmdk_write_compressed,
	.cluster_size = vmdk_cluster_size,
	.block_status = vmdk_block_status,
	.get_info = vmdk_get_info,
	.format_specific = vmdk_format_specific,
	.check = vmdk_check,
	.create = vmdk_create,
	.create_opts = vmdk_create_opts,
	.creates_several_files = vmdk_creates_several_files,
	.supports_backing = true,
};
