/* qcow2 guest-to-host mapping, the read side: a guest cluster's L2 entry (L1 index, the
 * L2 table in the L2 cache, the entry and, with extended L2, its subcluster bitmap),
 * entries refused as qemu refuses them, reads and block status. Reads of plain data go
 * as one transfer over every host-contiguous cluster, straight into the caller's
 * buffers; zero and backing-file clusters likewise by runs. The entry points take
 * s->lock; reads drop it only around data transfers (counted by qcow2_io_begin). What
 * changes the mapping: l1.c, write.c, zero.c; map.h has the helpers they share. */
#include "blk/qcow2/qcow2.h"
#include "blk/qcow2/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SUBCLUSTERS 32

/* The L2 table for l1 index i, or *l2_off = 0 if there is none. */
int qcow2_l2_offset(struct qcow2 *s, uint64_t i, uint64_t *l2_off, struct vt_error *err)
{
	*l2_off = 0;
	if (i >= s->l1_size)
		return 0;
	uint64_t off = s->l1[i] & QCOW2_OFFSET_MASK;
	if (off % s->cs)
		return qcow2_signal_corruption(s, err, "L2 table offset %#llx unaligned (L1 index: "
		                               "%#llx)", (unsigned long long)off,
		                               (unsigned long long)i);
	*l2_off = off;
	return 0;
}

int qcow2_l2_lookup(struct qcow2 *s, uint64_t guest, struct qcow2_mapping *m,
                    struct vt_error *err)
{
	uint64_t l1i = guest >> (s->cluster_bits + s->l2_bits);
	uint8_t *l2;
	int r;

	*m = (struct qcow2_mapping){ .l2_index = (guest >> s->cluster_bits) & (s->l2_entries - 1) };
	if ((r = qcow2_l2_offset(s, l1i, &m->l2_off, err)) < 0 || !m->l2_off)
		return r;
	if ((r = qcow2_l2_load(s, m->l2_off, &l2, err)) < 0)
		return r;
	m->entry = qcow2_be64(l2 + m->l2_index * s->l2_entry_size);
	if (s->extended_l2)
		m->bitmap = qcow2_be64(l2 + m->l2_index * s->l2_entry_size + 8);
	return 0;
}

int qcow2_l2_validate(struct qcow2 *s, uint64_t guest, const struct qcow2_mapping *m,
                      struct vt_error *err)
{
	enum qcow2_cluster_type t = qcow2_classify(s, m->entry);
	uint64_t off = m->entry & QCOW2_OFFSET_MASK;
	if (t == QCOW2_COMPRESSED)
		return 0;
	if ((t == QCOW2_ZERO_PLAIN || t == QCOW2_ZERO_ALLOC) && s->version < 3)
		return qcow2_signal_corruption(s, err, "Zero cluster entry found in pre-v3 image "
		                               "(guest offset: %#llx)", (unsigned long long)guest);
	if (off % s->cs)
		return qcow2_signal_corruption(s, err, "Cluster allocation offset %#llx unaligned "
		                               "(guest offset: %#llx)", (unsigned long long)off,
		                               (unsigned long long)guest);
	if (s->extended_l2) {
		uint32_t alloc = (uint32_t)m->bitmap, zero = (uint32_t)(m->bitmap >> 32);
		if ((alloc & zero) || (alloc && !off))
			return qcow2_signal_corruption(s, err, "Invalid cluster entry found (L2 "
			                               "offset: %#llx, L2 index: %#llx)",
			                               (unsigned long long)m->l2_off,
			                               (unsigned long long)m->l2_index);
	}
	return 0;
}

static int read_compressed(struct qcow2 *s, uint64_t entry, uint8_t *out, struct vt_error *err)
{
	uint64_t coff = entry & ((1ull << s->csize_shift) - 1);
	uint64_t nsect = ((entry >> s->csize_shift) & s->csize_mask) + 1;
	uint64_t clen = nsect * 512 - (coff & 511);
	if (coff > (1ull << 56) || clen > 2 * s->cs)
		return qcow2_signal_corruption(s, err, "compressed cluster descriptor %#llx out of "
		                               "range", (unsigned long long)entry);
	int r = blk_file_pread(s->b->file, coff, s->cbuf, clen, err);
	return r < 0 ? r : qcow2_decompress(s, s->cbuf, clen, out, err);
}

/* Read [in, in+n) of the guest cluster starting at gc into out, per its mapping. */
int qcow2_read_mapped(struct qcow2 *s, uint64_t gc, const struct qcow2_mapping *m,
                      uint64_t in, uint64_t n, uint8_t *out, struct vt_error *err)
{
	enum qcow2_cluster_type t = qcow2_classify(s, m->entry);
	uint64_t host = m->entry & QCOW2_OFFSET_MASK;
	int r;

	if (t == QCOW2_COMPRESSED) {
		uint8_t *tmp = qcow2_alloc_buf(s->cs);
		if (!tmp)
			return vt_error_set(err, ENOMEM, s->b->filename, "read", NULL);
		r = read_compressed(s, m->entry, tmp, err);
		if (r == 0)
			memcpy(out, tmp + in, n);
		free(tmp);
		return r;
	}
	if (!s->extended_l2) {
		switch (t) {
		case QCOW2_ZERO_PLAIN:
		case QCOW2_ZERO_ALLOC:
			memset(out, 0, n);
			return 0;
		case QCOW2_NORMAL:
			return blk_file_pread(s->b->file, host + in, out, n, err);
		default:
			return blk_read_backing(s->b, gc + in, out, n, err);
		}
	}
	uint64_t scs = s->cs / SUBCLUSTERS;
	while (n) {
		unsigned sc = (unsigned)(in / scs);
		bool alloc = m->bitmap >> sc & 1, zero = m->bitmap >> (32 + sc) & 1;
		/* Extend over following subclusters in the same state. */
		uint64_t end = (sc + 1) * scs;
		while (end < in + n && end < s->cs) {
			unsigned k = (unsigned)(end / scs);
			if ((bool)(m->bitmap >> k & 1) != alloc || (bool)(m->bitmap >> (32 + k) & 1) != zero)
				break;
			end += scs;
		}
		uint64_t len = (end < in + n ? end : in + n) - in;
		if (zero)
			memset(out, 0, len);
		else if (alloc)
			r = blk_file_pread(s->b->file, host + in, out, len, err);
		else
			r = blk_read_backing(s->b, gc + in, out, len, err);
		if (r < 0)
			return r;
		out += len;
		in += len;
		n -= len;
	}
	return 0;
}

/* How far from guest offset g (whose cluster maps to host, a NORMAL cluster) the data
 * continues contiguously on the host: following clusters must be NORMAL and sit right
 * after it. Returns the byte count, at most max. */
static int contiguous_run(struct qcow2 *s, uint64_t g, uint64_t host, uint64_t max,
                          uint64_t *run, struct vt_error *err)
{
	uint64_t len = s->cs - (g & (s->cs - 1));
	int r = 0;

	/* The cluster starting len bytes on must sit at host + len. */
	while (len < max && len < QCOW2_RUN_MAX) {
		struct qcow2_mapping m;
		if ((r = qcow2_l2_lookup(s, g + len, &m, err)) < 0 ||
		    (r = qcow2_l2_validate(s, g + len, &m, err)) < 0)
			return r;
		if (qcow2_classify(s, m.entry) != QCOW2_NORMAL ||
		    (m.entry & QCOW2_OFFSET_MASK) != host + len)
			break;
		len += s->cs;
	}
	*run = len < max ? len : max;
	return r;
}

/* How far from g the clusters keep reading from the backing file (unallocated) or as
 * zeros: a run of the same type t, at most max bytes. */
static int same_type_run(struct qcow2 *s, uint64_t g, enum qcow2_cluster_type t, uint64_t max,
                         uint64_t *run, struct vt_error *err)
{
	uint64_t len = s->cs - (g & (s->cs - 1));
	int r = 0;

	while (len < max && len < QCOW2_RUN_MAX) {
		struct qcow2_mapping m;
		if ((r = qcow2_l2_lookup(s, g + len, &m, err)) < 0 ||
		    (r = qcow2_l2_validate(s, g + len, &m, err)) < 0)
			return r;
		enum qcow2_cluster_type u = qcow2_classify(s, m.entry);
		bool zero = t != QCOW2_UNALLOCATED;
		if (zero ? (u != QCOW2_ZERO_PLAIN && u != QCOW2_ZERO_ALLOC) : u != QCOW2_UNALLOCATED)
			break;
		len += s->cs;
	}
	*run = len < max ? len : max;
	return r;
}

/* A run of clusters that fall through to the backing file: one read of the backing file
 * straight into the caller's buffers, zeros past its end. Called unlocked. */
static int read_backing_run(struct qcow2 *s, uint64_t g, const struct iovec *iov, int iovcnt,
                            size_t skip, uint64_t run, struct vt_error *err)
{
	struct blk *bk = s->b->backing;
	struct iovec sub[QCOW2_RUN_IOV_MAX];
	uint64_t in = 0;

	if (bk && g < bk->size)
		in = bk->size - g < run ? bk->size - g : run;
	if (in) {
		int cnt = qcow2_iov_slice(iov, iovcnt, skip, in, sub, QCOW2_RUN_IOV_MAX);
		if (cnt < 0)
			return -E2BIG;
		int r = bk->drv->preadv(bk, g, sub, cnt, err);
		if (r < 0)
			return r;
	}
	vt_iov_memset(iov, iovcnt, skip + in, 0, run - in);
	return 0;
}

int qcow2_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                 struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt), done = 0;
	uint8_t *buf = NULL;
	struct iovec sub[QCOW2_RUN_IOV_MAX];
	int r = 0;

	pthread_mutex_lock(&s->lock);
	while (done < total && r == 0) {
		uint64_t g = off + done, in = g & (s->cs - 1);
		uint64_t n = s->cs - in < total - done ? s->cs - in : total - done;
		struct qcow2_mapping m;
		if ((r = qcow2_l2_lookup(s, g, &m, err)) < 0 || (r = qcow2_l2_validate(s, g, &m, err)) < 0)
			break;
		if (!s->extended_l2 && qcow2_classify(s, m.entry) == QCOW2_NORMAL) {
			/* Plain data: as one read over every host-contiguous cluster that follows,
			 * straight into the caller's buffers, without holding up other requests. */
			uint64_t host = (m.entry & QCOW2_OFFSET_MASK) + in, run;
			if ((r = contiguous_run(s, g, host, total - done, &run, err)) < 0)
				break;
			int cnt = qcow2_iov_slice(iov, iovcnt, done, run, sub, QCOW2_RUN_IOV_MAX);
			if (cnt > 0) {
				uint64_t epoch = qcow2_io_begin(s);
				pthread_mutex_unlock(&s->lock);
				r = blk_file_preadv(s->b->file, host, sub, cnt, err);
				qcow2_io_end(s, epoch);
				pthread_mutex_lock(&s->lock);
				done += run;
				continue;
			}
		}
		enum qcow2_cluster_type t = qcow2_classify(s, m.entry);
		if (!s->extended_l2 && t != QCOW2_NORMAL && t != QCOW2_COMPRESSED) {
			/* Zeros or the backing file, over the whole run of such clusters. */
			uint64_t run;
			if ((r = same_type_run(s, g, t, total - done, &run, err)) < 0)
				break;
			if (t != QCOW2_UNALLOCATED) {
				vt_iov_memset(iov, iovcnt, done, 0, run);
				done += run;
				continue;
			}
			pthread_mutex_unlock(&s->lock);
			r = read_backing_run(s, g, iov, iovcnt, done, run, err);
			pthread_mutex_lock(&s->lock);
			if (r != -E2BIG) {
				done += run;
				continue;
			}
			r = 0; /* too scattered a buffer: one cluster at a time below */
		}
		if (!buf && !(buf = qcow2_cluster_buf(s))) {
			r = vt_error_set(err, ENOMEM, b->filename, "read", NULL);
			break;
		}
		if (!s->extended_l2 && qcow2_classify(s, m.entry) == QCOW2_NORMAL) {
			uint64_t host = (m.entry & QCOW2_OFFSET_MASK) + in;
			uint64_t epoch = qcow2_io_begin(s);
			pthread_mutex_unlock(&s->lock);
			r = blk_file_pread(s->b->file, host, buf, n, err);
			qcow2_io_end(s, epoch);
			pthread_mutex_lock(&s->lock);
		} else {
			r = qcow2_read_mapped(s, g - in, &m, in, n, buf, err);
		}
		if (r == 0)
			vt_iov_from_buf(iov, iovcnt, done, buf, n);
		done += n;
	}
	pthread_mutex_unlock(&s->lock);
	free(buf);
	return r;
}

/* ---- block status ----------------------------------------------------------------- */

/* Status of one subcluster-or-cluster unit: flags and host offset of its start. */
static unsigned unit_status(const struct qcow2 *s, const struct qcow2_mapping *m,
                            unsigned sc, uint64_t *host)
{
	enum qcow2_cluster_type t = qcow2_classify(s, m->entry);
	*host = m->entry & QCOW2_OFFSET_MASK;
	if (t == QCOW2_COMPRESSED)
		return BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_COMPRESSED;
	if (s->extended_l2) {
		/* qemu reports the host offset of any subcluster of an allocated cluster. */
		unsigned at = *host ? BLK_STATUS_OFFSET_VALID : 0;
		if (m->bitmap >> (32 + sc) & 1)
			return BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO | at;
		if (m->bitmap >> sc & 1)
			return BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_OFFSET_VALID;
		return at;
	}
	switch (t) {
	case QCOW2_NORMAL:
		return BLK_STATUS_ALLOCATED | BLK_STATUS_DATA | BLK_STATUS_OFFSET_VALID;
	case QCOW2_ZERO_ALLOC:
		return BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO | BLK_STATUS_OFFSET_VALID;
	case QCOW2_ZERO_PLAIN:
		return BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO;
	default:
		return 0;
	}
}

int qcow2_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                       struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint64_t unit = s->extended_l2 ? s->cs / SUBCLUSTERS : s->cs;
	uint64_t pos = off, expect_host = 0;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	st->len = 0;
	while (pos < off + len) {
		struct qcow2_mapping m;
		if ((r = qcow2_l2_lookup(s, pos, &m, err)) < 0 || (r = qcow2_l2_validate(s, pos, &m, err)) < 0)
			break;
		uint64_t in = pos & (s->cs - 1), host;
		unsigned flags = unit_status(s, &m, (unsigned)(in / (s->cs / SUBCLUSTERS)), &host);
		uint64_t host_here = host + in;
		if (pos == off) {
			st->flags = flags;
			st->host_offset = host_here;
		} else if (flags != st->flags ||
		           ((flags & BLK_STATUS_OFFSET_VALID) && host_here != expect_host)) {
			break;
		}
		uint64_t step = unit - (pos & (unit - 1));
		if (step > off + len - pos)
			step = off + len - pos;
		pos += step;
		expect_host = host_here + step;
		if (qcow2_classify(s, m.entry) == QCOW2_COMPRESSED)
			break; /* one compressed cluster at a time: no host offset to continue */
	}
	if (r == 0)
		st->len = pos - off;
	pthread_mutex_unlock(&s->lock);
	return r;
}
