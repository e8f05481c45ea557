/* qcow2 guest-to-host mapping: L1/L2 lookup, reads, writes with copy-on-write, zeroing,
 * discard, block status, L1 growth and metadata preallocation. Every entry point takes
 * s->lock and drops it only around data transfers. L2 tables live in the L2 cache; an L2
 * entry that maps a new cluster is written back only after the cluster's refcount and
 * contents are durable (the cache dependencies set in set_entry), and a replaced
 * mapping's clusters are freed only after the flush that makes the replacement durable. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SUBCLUSTERS 32
#define BITMAP_ALL_ALLOC 0x00000000ffffffffull
#define BITMAP_ALL_ZERO  0xffffffff00000000ull

static void *cluster_buf(const struct qcow2 *s)
{
	return qcow2_alloc_buf(s->cs);
}

static int l2_load(struct qcow2 *s, uint64_t off, uint8_t **data, struct vt_error *err)
{
	return qcow2_cache_get(s->l2c, off, data, err);
}

/* The L2 table for l1 index i, or *l2_off = 0 if there is none. */
static int l2_offset(struct qcow2 *s, uint64_t i, uint64_t *l2_off, struct vt_error *err)
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

struct mapping {
	uint64_t entry, bitmap;
	uint64_t l2_off;   /* 0: no L2 table */
	uint64_t l2_index;
};

static int lookup(struct qcow2 *s, uint64_t guest, struct mapping *m, struct vt_error *err)
{
	uint64_t l1i = guest >> (s->cluster_bits + s->l2_bits);
	uint8_t *l2;
	int r;

	*m = (struct mapping){ .l2_index = (guest >> s->cluster_bits) & (s->l2_entries - 1) };
	if ((r = l2_offset(s, l1i, &m->l2_off, err)) < 0 || !m->l2_off)
		return r;
	if ((r = l2_load(s, m->l2_off, &l2, err)) < 0)
		return r;
	m->entry = qcow2_be64(l2 + m->l2_index * s->l2_entry_size);
	if (s->extended_l2)
		m->bitmap = qcow2_be64(l2 + m->l2_index * s->l2_entry_size + 8);
	return 0;
}

static enum qcow2_cluster_type classify(const struct qcow2 *s, uint64_t e)
{
	if (e & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_COMPRESSED;
	uint64_t off = e & QCOW2_OFFSET_MASK;
	if (!s->extended_l2 && (e & QCOW2_OFLAG_ZERO))
		return off ? QCOW2_ZERO_ALLOC : QCOW2_ZERO_PLAIN;
	return off ? QCOW2_NORMAL : QCOW2_UNALLOCATED;
}

static int validate_entry(struct qcow2 *s, uint64_t guest, const struct mapping *m,
                          struct vt_error *err)
{
	enum qcow2_cluster_type t = classify(s, m->entry);
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
static int read_mapped(struct qcow2 *s, uint64_t gc, const struct mapping *m, uint64_t in,
                       uint64_t n, uint8_t *out, struct vt_error *err)
{
	enum qcow2_cluster_type t = classify(s, m->entry);
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

/* The part [skip, skip+len) of an iovec array as another one; -1 if it needs more than max
 * entries. */
static int iov_slice(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
                     struct iovec *out, int max)
{
	int m = 0;
	return vt_iov_slice(iov, iovcnt, skip, len, out, &m, max) ? m : -1;
}

#define READ_RUN_MAX (8u << 20)
#define READ_IOV_MAX 64

/* How far from guest offset g (whose cluster maps to host, a NORMAL cluster) the data
 * continues contiguously on the host: following clusters must be NORMAL and sit right
 * after it. Returns the byte count, at most max. */
static int contiguous_run(struct qcow2 *s, uint64_t g, uint64_t host, uint64_t max,
                          uint64_t *run, struct vt_error *err)
{
	uint64_t len = s->cs - (g & (s->cs - 1));
	int r = 0;

	/* The cluster starting len bytes on must sit at host + len. */
	while (len < max && len < READ_RUN_MAX) {
		struct mapping m;
		if ((r = lookup(s, g + len, &m, err)) < 0 || (r = validate_entry(s, g + len, &m, err)) < 0)
			return r;
		if (classify(s, m.entry) != QCOW2_NORMAL ||
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

	while (len < max && len < READ_RUN_MAX) {
		struct mapping m;
		if ((r = lookup(s, g + len, &m, err)) < 0 || (r = validate_entry(s, g + len, &m, err)) < 0)
			return r;
		enum qcow2_cluster_type u = classify(s, m.entry);
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
	struct iovec sub[READ_IOV_MAX];
	uint64_t in = 0;

	if (bk && g < bk->size)
		in = bk->size - g < run ? bk->size - g : run;
	if (in) {
		int cnt = iov_slice(iov, iovcnt, skip, in, sub, READ_IOV_MAX);
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
	struct iovec sub[READ_IOV_MAX];
	int r = 0;

	pthread_mutex_lock(&s->lock);
	while (done < total && r == 0) {
		uint64_t g = off + done, in = g & (s->cs - 1);
		uint64_t n = s->cs - in < total - done ? s->cs - in : total - done;
		struct mapping m;
		if ((r = lookup(s, g, &m, err)) < 0 || (r = validate_entry(s, g, &m, err)) < 0)
			break;
		if (!s->extended_l2 && classify(s, m.entry) == QCOW2_NORMAL) {
			/* Plain data: as one read over every host-contiguous cluster that follows,
			 * straight into the caller's buffers, without holding up other requests. */
			uint64_t host = (m.entry & QCOW2_OFFSET_MASK) + in, run;
			if ((r = contiguous_run(s, g, host, total - done, &run, err)) < 0)
				break;
			int cnt = iov_slice(iov, iovcnt, done, run, sub, READ_IOV_MAX);
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
		enum qcow2_cluster_type t = classify(s, m.entry);
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
		if (!buf && !(buf = cluster_buf(s))) {
			r = vt_error_set(err, ENOMEM, b->filename, "read", NULL);
			break;
		}
		if (!s->extended_l2 && classify(s, m.entry) == QCOW2_NORMAL) {
			uint64_t host = (m.entry & QCOW2_OFFSET_MASK) + in;
			uint64_t epoch = qcow2_io_begin(s);
			pthread_mutex_unlock(&s->lock);
			r = blk_file_pread(s->b->file, host, buf, n, err);
			qcow2_io_end(s, epoch);
			pthread_mutex_lock(&s->lock);
		} else {
			r = read_mapped(s, g - in, &m, in, n, buf, err);
		}
		if (r == 0)
			vt_iov_from_buf(iov, iovcnt, done, buf, n);
		done += n;
	}
	pthread_mutex_unlock(&s->lock);
	free(buf);
	return r;
}

/* ---- writing ---------------------------------------------------------------------- */

/* Change an L2 entry in the cache. A mapping of a cluster that was just allocated (or
 * whose contents were just written: zero-allocated made real) must not reach the file
 * before the cluster's refcount and contents are durable. */
static int set_entry(struct qcow2 *s, uint64_t l2_off, uint64_t idx, uint64_t entry,
                     uint64_t bitmap, bool new_data, struct vt_error *err)
{
	uint8_t *l2;
	int r;
	if (new_data) {
		/* Lazy refcounts: the L2 table may go first, with the dirty bit telling a
		 * later open to recount. */
		if ((r = s->lazy_refcounts ? qcow2_mark_dirty(s, err)
		                           : qcow2_cache_set_dependency(s->l2c, s->rbc, err)) < 0)
			return r;
		qcow2_cache_depends_on_flush(s->l2c);
	}
	if ((r = l2_load(s, l2_off, &l2, err)) < 0)
		return r;
	uint8_t *p = l2 + idx * s->l2_entry_size;
	qcow2_put_be64(p, entry);
	if (s->extended_l2)
		qcow2_put_be64(p + 8, bitmap);
	qcow2_cache_mark_dirty(s->l2c, l2_off);
	return 0;
}

void qcow2_l1_mark_dirty(struct qcow2 *s, uint64_t i)
{
	s->l1_dirty[i] = true;
	s->l1_any_dirty = true;
}

/* Write the changed L1 entries (the caller has made their L2 tables durable). Runs of
 * adjacent entries go out together, never across a 512-byte sector. */
int qcow2_write_l1(struct qcow2 *s, struct vt_error *err)
{
	if (!s->l1_any_dirty)
		return 0;
	for (uint64_t i = 0; i < s->l1_size;) {
		if (!s->l1_dirty[i]) {
			i++;
			continue;
		}
		uint64_t end = i + 1;
		while (end < s->l1_size && s->l1_dirty[end] && end % 64)
			end++;
		uint8_t buf[512];
		for (uint64_t k = i; k < end; k++) {
			qcow2_put_be64(buf + (k - i) * 8, s->l1[k]);
			s->l1_dirty[k] = false;
		}
		int r = blk_file_pwrite(s->b->file, s->l1_offset + i * 8, buf, (end - i) * 8, err);
		if (r < 0)
			return r;
		i = end;
	}
	s->l1_any_dirty = false;
	return 0;
}

/* An L2 table for l1 index i that we own (refcount 1), copying a shared one. The new
 * table is made in the cache; its L1 entry is written at the flush, after the table. */
static int l2_for_write(struct qcow2 *s, uint64_t i, uint64_t *l2_off, struct vt_error *err)
{
	uint64_t old;
	int r = l2_offset(s, i, &old, err);
	if (r < 0)
		return r;
	if (old && (s->l1[i] & QCOW2_OFLAG_COPIED)) {
		*l2_off = old;
		return 0;
	}
	if (s->lazy_refcounts && (r = qcow2_mark_dirty(s, err)) < 0)
		return r;
	uint8_t *copy = NULL, *tab;
	if (old) {
		uint8_t *src;
		if ((r = l2_load(s, old, &src, err)) < 0)
			return r;
		if (!(copy = qcow2_alloc_buf(s->cs)))
			return vt_error_set(err, ENOMEM, s->b->filename, "allocate L2 table", NULL);
		memcpy(copy, src, s->cs);
	}
	uint64_t nw;
	if ((r = qcow2_alloc_clusters(s, 1, &nw, err)) < 0 ||
	    (!s->lazy_refcounts && (r = qcow2_cache_set_dependency(s->l2c, s->rbc, err)) < 0) ||
	    (r = qcow2_cache_get_empty(s->l2c, nw, &tab, err)) < 0) {
		free(copy);
		return r;
	}
	if (copy)
		memcpy(tab, copy, s->cs);
	free(copy);
	s->l1[i] = nw | QCOW2_OFLAG_COPIED;
	qcow2_l1_mark_dirty(s, i);
	qcow2_meta_changed(s);
	if (old && (r = qcow2_free_later(s, old, s->cs, err)) < 0)
		return r;
	*l2_off = nw;
	return 0;
}

/* Host clusters a mapping holds a reference to, released after it is replaced. */
static int release_mapping(struct qcow2 *s, uint64_t entry, struct vt_error *err)
{
	enum qcow2_cluster_type t = classify(s, entry);
	if (t == QCOW2_COMPRESSED) {
		uint64_t coff = entry & ((1ull << s->csize_shift) - 1);
		uint64_t nsect = ((entry >> s->csize_shift) & s->csize_mask) + 1;
		uint64_t first = coff & ~511ull;
		return qcow2_free_later(s, first, nsect * 512, err);
	}
	uint64_t host = entry & QCOW2_OFFSET_MASK;
	if (host && (t == QCOW2_NORMAL || t == QCOW2_ZERO_ALLOC))
		return qcow2_free_later(s, host, s->cs, err);
	return 0;
}

/* Is the data cluster of this mapping ours alone, so it may be written in place? */
static int owned(struct qcow2 *s, const struct mapping *m, bool *yes, struct vt_error *err)
{
	uint64_t host = m->entry & QCOW2_OFFSET_MASK;
	*yes = false;
	if (classify(s, m->entry) == QCOW2_COMPRESSED || !host ||
	    !(m->entry & QCOW2_OFLAG_COPIED))
		return 0;
	uint64_t rc;
	int r = qcow2_get_refcount(s, host >> s->cluster_bits, &rc, err);
	*yes = r == 0 && rc == 1;
	return r;
}

/* -EAGAIN if the guest cluster at gc is no longer mapped by l2_off as *m says (another
 * request changed it while we wrote data unlocked). Called with the lock held. */
static int still_mapped_as(struct qcow2 *s, uint64_t gc, uint64_t l2_off,
                           const struct mapping *m, struct vt_error *err)
{
	uint64_t l2_now;
	struct mapping now;
	int r;

	if ((r = l2_offset(s, gc >> (s->cluster_bits + s->l2_bits), &l2_now, err)) < 0 ||
	    (r = lookup(s, gc, &now, err)) < 0)
		return r;
	if (l2_now != l2_off || now.entry != m->entry || now.bitmap != m->bitmap)
		return -EAGAIN;
	return 0;
}

/* Write data (n bytes at in) into the guest cluster at gc; data == NULL writes zeros.
 * -EAGAIN: the cluster's mapping changed while data was written unlocked; nothing was
 * done (the caller tries again). */
static int write_cluster_once(struct qcow2 *s, uint64_t gc, uint64_t in, uint64_t n,
                              const uint8_t *data, uint8_t *scratch, struct vt_error *err)
{
	uint64_t l1i = gc >> (s->cluster_bits + s->l2_bits), l2_off;
	struct mapping m;
	bool mine;
	int r;

	if ((r = l2_for_write(s, l1i, &l2_off, err)) < 0 || (r = lookup(s, gc, &m, err)) < 0 ||
	    (r = validate_entry(s, gc, &m, err)) < 0 || (r = owned(s, &m, &mine, err)) < 0)
		return r;
	bool full = in == 0 && n == s->cs;
	bool simple = s->extended_l2 ? (uint32_t)m.bitmap == 0xffffffffu
	                             : classify(s, m.entry) == QCOW2_NORMAL;
	uint64_t host = m.entry & QCOW2_OFFSET_MASK;
	uint64_t bitmap = BITMAP_ALL_ALLOC;

	if (mine) {
		if ((r = qcow2_check_overlap(s, host, s->cs, err)) < 0)
			return r;
		if (simple || full) {
			/* The cluster is ours and stays mapped; write without the lock so that
			 * other requests proceed (overlapping requests are unordered anyway). */
			uint64_t epoch = qcow2_io_begin(s);
			pthread_mutex_unlock(&s->lock);
			if (data)
				r = blk_file_pwrite(s->b->file, host + in, data, n, err);
			else
				r = blk_file_zero(s->b->file, host + in, n, false, err);
			qcow2_io_end(s, epoch);
			pthread_mutex_lock(&s->lock);
		} else {
			/* Zero-allocated or partly allocated: the rest of the cluster must be made
			 * real before the whole cluster is marked as data. */
			if ((r = read_mapped(s, gc, &m, 0, s->cs, scratch, err)) < 0)
				return r;
			data ? memcpy(scratch + in, data, n) : memset(scratch + in, 0, n);
			r = blk_file_pwrite(s->b->file, host, scratch, s->cs, err);
		}
		if (r < 0)
			return r;
		uint64_t want = host | QCOW2_OFLAG_COPIED;
		/* Zero-allocated or partly allocated clusters become plain data: the new
		 * contents must be durable before the entry says so. */
		if (m.entry != want || (s->extended_l2 && m.bitmap != bitmap))
			r = set_entry(s, l2_off, m.l2_index, want, bitmap, true, err);
		return r;
	}

	/* Copy on write into a new cluster. */
	uint64_t nw, fsize;
	if ((r = qcow2_alloc_clusters(s, 1, &nw, err)) < 0)
		return r;
	/* A new cluster past the end of the file reads as zeros already: when the copy would
	 * be zeros too (a zero cluster, or nothing below it), only the new bytes are written
	 * (qemu gets there with write_zeroes). They extend the file into the cluster. */
	enum qcow2_cluster_type t = classify(s, m.entry);
	bool zero_cow = !s->extended_l2 && !full &&
	                (t == QCOW2_ZERO_PLAIN || t == QCOW2_ZERO_ALLOC ||
	                 (t == QCOW2_UNALLOCATED &&
	                  (!s->b->backing || gc >= s->b->backing->size)));
	if (zero_cow && (blk_file_size(s->b->file, &fsize, NULL) < 0 || nw < fsize))
		zero_cow = false;
	if (!full && !zero_cow && (r = read_mapped(s, gc, &m, 0, s->cs, scratch, err)) < 0) {
		struct vt_error ignored;
		qcow2_update_refcount(s, nw >> s->cluster_bits, -1, &ignored);
		return r;
	}
	if (full)
		memset(scratch, 0, s->cs);
	if (data)
		memcpy(scratch + in, data, n);
	else
		memset(scratch + in, 0, n);
	/* The new cluster is ours alone until it is mapped: fill it without the lock, so
	 * that other requests allocate and write meanwhile. */
	pthread_mutex_unlock(&s->lock);
	/* O_DIRECT writes that extend the file are serialised by the file system: extend
	 * it over the whole cluster first (a cheap zero-range), so the data write is not. */
	if (zero_cow && blk_file_direct(s->b->file))
		r = blk_file_zero(s->b->file, nw, s->cs, false, err);
	if (zero_cow && r == 0)
		r = blk_file_pwrite(s->b->file, nw + in, scratch + in, n, err);
	else if (!zero_cow)
		r = blk_file_pwrite(s->b->file, nw, scratch, s->cs, err);
	pthread_mutex_lock(&s->lock);
	if (r == 0)
		r = still_mapped_as(s, gc, l2_off, &m, err);
	if (r < 0) {
		/* Failed, or the guest cluster changed meanwhile (-EAGAIN: start over). */
		struct vt_error ignored;
		qcow2_update_refcount(s, nw >> s->cluster_bits, -1, &ignored);
		return r;
	}
	if ((r = set_entry(s, l2_off, m.l2_index, nw | QCOW2_OFLAG_COPIED, bitmap, true, err)) < 0)
		return r;
	return release_mapping(s, m.entry, err);
}

/* Retry while another request changed the cluster's mapping under an unlocked write. */
static int write_cluster(struct qcow2 *s, uint64_t gc, uint64_t in, uint64_t n,
                         const uint8_t *data, uint8_t *scratch, struct vt_error *err)
{
	int r;

	while ((r = write_cluster_once(s, gc, in, n, data, scratch, err)) == -EAGAIN)
		;
	return r;
}

/* Whole clusters that have no host cluster yet (unallocated, or zero without one), in one
 * L2 table: allocated together, their data written with one call straight from the
 * caller's buffers, their L2 entries with one more. Order as for single clusters
 * (refcounts, data, then the mapping): a crash leaks, never corrupts. *done = 0 when the
 * cluster at g does not start such a run of at least two. */
static int write_new_run(struct qcow2 *s, uint64_t g, const struct iovec *iov, int iovcnt,
                         size_t skip, uint64_t max, uint64_t *done, struct vt_error *err)
{
	uint64_t limit = s->rb_entries / 2 < 256 ? s->rb_entries / 2 : 256, l2_off, k = 0, nw;
	uint64_t first = (g >> s->cluster_bits) & (s->l2_entries - 1);
	struct iovec sub[READ_IOV_MAX];
	uint8_t *l2;
	int r;

	*done = 0;
	if (s->extended_l2 || (g & (s->cs - 1)) || max < 2 * s->cs || limit < 2)
		return 0;
	if ((r = l2_for_write(s, g >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0)
		return r;
	while (k < limit && (k + 1) * s->cs <= max && first + k < s->l2_entries) {
		struct mapping m;
		if ((r = lookup(s, g + k * s->cs, &m, err)) < 0 ||
		    (r = validate_entry(s, g + k * s->cs, &m, err)) < 0)
			return r;
		enum qcow2_cluster_type t = classify(s, m.entry);
		if ((t != QCOW2_UNALLOCATED && t != QCOW2_ZERO_PLAIN) || (m.entry & QCOW2_OFFSET_MASK))
			break;
		k++;
	}
	int cnt = k >= 2 ? iov_slice(iov, iovcnt, skip, k * s->cs, sub, READ_IOV_MAX) : -1;
	if (cnt < 0)
		return 0;
	if ((r = qcow2_alloc_clusters(s, k, &nw, err)) < 0)
		return r;
	/* Ours alone until mapped: written without the lock (see write_cluster_once). */
	pthread_mutex_unlock(&s->lock);
	r = blk_file_pwritev(s->b->file, nw, sub, cnt, err);
	pthread_mutex_lock(&s->lock);
	uint64_t l2_now = 0;
	if (r == 0)
		r = l2_offset(s, g >> (s->cluster_bits + s->l2_bits), &l2_now, err);
	for (uint64_t i = 0; r == 0 && i < k; i++) {
		struct mapping m;
		if ((r = lookup(s, g + i * s->cs, &m, err)) == 0 &&
		    (l2_now != l2_off || (m.entry & QCOW2_OFFSET_MASK) ||
		     (classify(s, m.entry) != QCOW2_UNALLOCATED && classify(s, m.entry) != QCOW2_ZERO_PLAIN)))
			r = -EAGAIN;
	}
	if (r < 0) {
		/* Failed, or another request mapped part of the run meanwhile: give the
		 * clusters back; -EAGAIN lets the caller go cluster by cluster. */
		struct vt_error ignored;
		for (uint64_t i = 0; i < k; i++)
			qcow2_update_refcount(s, (nw >> s->cluster_bits) + i, -1, &ignored);
		return r == -EAGAIN ? 0 : r;
	}
	if ((!s->lazy_refcounts && (r = qcow2_cache_set_dependency(s->l2c, s->rbc, err)) < 0) ||
	    (r = l2_load(s, l2_off, &l2, err)) < 0)
		return r;
	qcow2_cache_depends_on_flush(s->l2c);
	for (uint64_t i = 0; i < k; i++)
		qcow2_put_be64(l2 + (first + i) * s->l2_entry_size, (nw + i * s->cs) | QCOW2_OFLAG_COPIED);
	qcow2_cache_mark_dirty(s->l2c, l2_off);
	*done = k * s->cs;
	return 0;
}

/* Is the guest cluster at g plain data that this image alone owns, so that it can be
 * overwritten in place? Its host offset in *host. */
static int overwritable(struct qcow2 *s, uint64_t g, uint64_t *host, bool *yes,
                        struct vt_error *err)
{
	struct mapping m;
	int r;
	*yes = false;
	if ((r = lookup(s, g, &m, err)) < 0 || (r = validate_entry(s, g, &m, err)) < 0)
		return r;
	if (classify(s, m.entry) != QCOW2_NORMAL ||
	    (s->extended_l2 && (uint32_t)m.bitmap != 0xffffffffu) ||
	    (r = owned(s, &m, yes, err)) < 0 || !*yes)
		return r;
	*host = m.entry & QCOW2_OFFSET_MASK;
	return 0;
}

/* Overwrites of clusters the image owns, the common case once a disk is allocated: no
 * metadata changes, so the bytes go straight from the caller's buffers to the file, over
 * every host-contiguous owned cluster that follows, without the lock. *done = 0 when the
 * cluster at g is not such a cluster. */
static int write_in_place_run(struct qcow2 *s, uint64_t g, const struct iovec *iov,
                              int iovcnt, size_t skip, uint64_t max, uint64_t *done,
                              struct vt_error *err)
{
	uint64_t in = g & (s->cs - 1), host, next, len;
	struct iovec sub[READ_IOV_MAX];
	bool yes;
	int r;

	*done = 0;
	if ((r = overwritable(s, g - in, &host, &yes, err)) < 0 || !yes)
		return r;
	len = s->cs - in < max ? s->cs - in : max;
	while (len < max && len < READ_RUN_MAX) {
		if ((r = overwritable(s, g + len, &next, &yes, err)) < 0)
			return r;
		if (!yes || next != host + in + len)
			break;
		len += s->cs < max - len ? s->cs : max - len;
	}
	if ((r = qcow2_check_overlap(s, host, in + len, err)) < 0)
		return r;
	int cnt = iov_slice(iov, iovcnt, skip, len, sub, READ_IOV_MAX);
	if (cnt < 0)
		return 0; /* too scattered: the cluster-by-cluster path copies */
	uint64_t epoch = qcow2_io_begin(s);
	pthread_mutex_unlock(&s->lock);
	r = blk_file_pwritev(s->b->file, host + in, sub, cnt, err);
	qcow2_io_end(s, epoch);
	pthread_mutex_lock(&s->lock);
	if (r == 0)
		*done = len;
	return r;
}

int qcow2_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                  struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt), done = 0;
	uint8_t *buf = NULL, *scratch = NULL;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	while (done < total && r == 0) {
		uint64_t g = off + done, in = g & (s->cs - 1), run;
		if ((r = write_in_place_run(s, g, iov, iovcnt, done, total - done, &run, err)) < 0 ||
		    (!run && (r = write_new_run(s, g, iov, iovcnt, done, total - done, &run, err)) < 0))
			break;
		if (run) {
			done += run;
			continue;
		}
		if (!buf && (!(buf = cluster_buf(s)) || !(scratch = cluster_buf(s)))) {
			r = vt_error_set(err, ENOMEM, b->filename, "write", NULL);
			break;
		}
		uint64_t n = s->cs - in < total - done ? s->cs - in : total - done;
		vt_iov_to_buf(iov, iovcnt, done, buf, n);
		r = write_cluster(s, g - in, in, n, buf, scratch, err);
		done += n;
	}
	if (r == 0 && s->writethrough)
		r = qcow2_flush_metadata(s, err);
	pthread_mutex_unlock(&s->lock);
	free(buf);
	free(scratch);
	return r;
}

int qcow2_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len,
                           struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	if (off % s->cs || (len != s->cs && off + len != b->size))
		return vt_error_set(err, EINVAL, b->filename, "write compressed",
		                    "compressed writes must cover whole clusters");
	uint8_t *in = cluster_buf(s), *out = cluster_buf(s);
	int r = 0;
	if (!in || !out) {
		r = vt_error_set(err, ENOMEM, b->filename, "write compressed", NULL);
		goto out;
	}
	memcpy(in, buf, len);
	memset(in + len, 0, s->cs - len);
	long clen = qcow2_compress(s, in, out, s->cs - 1);
	pthread_mutex_lock(&s->lock);
	if (clen < 0) {
		r = vt_error_set(err, EIO, b->filename, "write compressed", "compression failed");
	} else if (clen == 0) {
		r = write_cluster(s, off, 0, s->cs, in, out, err); /* does not pay: store plain */
	} else {
		uint64_t l2_off, coff = 0, last;
		struct mapping m;
		if ((r = l2_for_write(s, off >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0)
			goto unlock;
		/* Next in the arena; more arena when it is full (contiguous if we can). */
		if (s->carena_next + (uint64_t)clen > s->carena_end) {
			/* Arenas grow with the stream count: a small image reserves (and may leave
			 * unused) little, a big one keeps plain clusters out of the way. Below 64 KiB
			 * clusters a stream rarely shares a cluster: one at a time. */
			uint64_t n = s->cs < 65536 ? 1 : s->cstreams / 8, nw;
			n = n < 1 ? 1 : n > QCOW2_ARENA_CLUSTERS ? QCOW2_ARENA_CLUSTERS : n;
			if ((r = qcow2_alloc_clusters(s, n, &nw, err)) < 0)
				goto unlock;
			if (s->carena_end && nw == s->carena_end) {
				s->carena_end += n * s->cs;
			} else {
				if ((r = qcow2_arena_release(s, err)) < 0)
					goto unlock;
				s->carena_next = nw;
				s->carena_end = nw + n * s->cs;
			}
		}
		s->cstreams++;
		coff = s->carena_next;
		/* A stream starting in a cluster another stream already uses adds a reference;
		 * one starting a fresh cluster (or running into the next) takes its
		 * reservation. */
		if ((coff & (s->cs - 1)) &&
		    (r = qcow2_update_refcount(s, coff >> s->cluster_bits, 1, err)) < 0)
			goto unlock;
		last = coff + (uint64_t)clen;
		s->carena_next = last;
		uint64_t extra = ((coff + (uint64_t)clen - 1) >> 9) - (coff >> 9);
		uint64_t entry = QCOW2_OFLAG_COMPRESSED | extra << s->csize_shift | coff;
		/* The bytes are reserved (counted) and mapped by nobody yet: write them without
		 * the lock, then map them. Whatever maps the guest cluster by then is replaced. */
		pthread_mutex_unlock(&s->lock);
		r = blk_file_pwrite(s->b->file, coff, out, (size_t)clen, err);
		pthread_mutex_lock(&s->lock);
		if (r < 0 ||
		    (r = l2_for_write(s, off >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0 ||
		    (r = lookup(s, off, &m, err)) < 0 ||
		    (r = set_entry(s, l2_off, m.l2_index, entry, 0, true, err)) < 0)
			goto unlock;
		r = release_mapping(s, m.entry, err);
	}
	if (r == 0 && s->writethrough)
		r = qcow2_flush_metadata(s, err);
unlock:
	pthread_mutex_unlock(&s->lock);
out:
	free(in);
	free(out);
	return r;
}

/* Make a whole guest cluster read as zeros (or, for discard, drop it) through its L2
 * entry alone. */
static int zero_whole_cluster(struct qcow2 *s, uint64_t gc, bool unmap, bool discard,
                              struct vt_error *err)
{
	struct mapping m;
	int r;
	if ((r = lookup(s, gc, &m, err)) < 0 || (r = validate_entry(s, gc, &m, err)) < 0)
		return r;
	enum qcow2_cluster_type t = classify(s, m.entry);
	bool empty = t == QCOW2_UNALLOCATED && !(s->extended_l2 && (m.bitmap >> 32));
	if (!s->b->backing && (t == QCOW2_ZERO_PLAIN || (empty && !m.bitmap)))
		return 0; /* already reads as zeros */
	if (s->version < 3 && s->b->backing)
		return discard ? 0 : 1; /* v2 cannot say "zero" over a backing file */
	bool keep = false;
	if (!unmap && (r = owned(s, &m, &keep, err)) < 0)
		return r;
	uint64_t entry, bitmap = 0;
	uint64_t host = m.entry & QCOW2_OFFSET_MASK;
	if (s->version < 3)
		entry = 0;
	else if (s->extended_l2)
		entry = keep ? host | QCOW2_OFLAG_COPIED : 0, bitmap = BITMAP_ALL_ZERO;
	else
		entry = keep ? host | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO : QCOW2_OFLAG_ZERO;
	uint64_t l2_off;
	if ((r = l2_for_write(s, gc >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0 ||
	    (r = lookup(s, gc, &m, err)) < 0 ||
	    (r = set_entry(s, l2_off, m.l2_index, entry, bitmap, false, err)) < 0)
		return r;
	return keep ? 0 : release_mapping(s, m.entry, err);
}

static int zero_or_discard(struct blk *b, uint64_t off, uint64_t len, bool unmap,
                           bool discard, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint8_t *scratch = cluster_buf(s);
	int r = 0;
	if (!scratch)
		return vt_error_set(err, ENOMEM, b->filename, "write zeroes", NULL);
	pthread_mutex_lock(&s->lock);
	while (len && r == 0) {
		uint64_t in = off & (s->cs - 1);
		uint64_t n = s->cs - in < len ? s->cs - in : len;
		/* The image's last cluster may be partial: it counts as whole. */
		bool whole = in == 0 && (n == s->cs || off + n == b->size);
		if (whole)
			r = zero_whole_cluster(s, off, unmap, discard, err);
		else
			r = discard ? 0 : 1;
		if (r == 1)
			r = write_cluster(s, off - in, in, n, NULL, scratch, err);
		off += n;
		len -= n;
	}
	if (r == 0 && s->writethrough)
		r = qcow2_flush_metadata(s, err);
	pthread_mutex_unlock(&s->lock);
	free(scratch);
	return r;
}

int qcow2_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                       struct vt_error *err)
{
	return zero_or_discard(b, off, len, flags & BLK_MAY_UNMAP, false, err);
}

int qcow2_discard(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err)
{
	return zero_or_discard(b, off, len, true, true, err);
}

/* ---- block status ----------------------------------------------------------------- */

/* Status of one subcluster-or-cluster unit: flags and host offset of its start. */
static unsigned unit_status(const struct qcow2 *s, const struct mapping *m, unsigned sc,
                            uint64_t *host)
{
	enum qcow2_cluster_type t = classify(s, m->entry);
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
		struct mapping m;
		if ((r = lookup(s, pos, &m, err)) < 0 || (r = validate_entry(s, pos, &m, err)) < 0)
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
		if (classify(s, m.entry) == QCOW2_COMPRESSED)
			break; /* one compressed cluster at a time: no host offset to continue */
	}
	if (r == 0)
		st->len = pos - off;
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- L1 growth and preallocation --------------------------------------------------- */

int qcow2_grow_l1(struct qcow2 *s, uint64_t n, bool exact, struct vt_error *err)
{
	if (n <= s->l1_size)
		return 0;
	uint64_t size = exact ? n : s->l1_size + s->l1_size / 2;
	if (size < n)
		size = n;
	if (size * 8 > QCOW2_MAX_L1_BYTES)
		return vt_error_set(err, EFBIG, s->b->filename, "grow L1 table",
		                    "Active L1 table too large");
	uint64_t clusters = (size * 8 + s->cs - 1) / s->cs, off;
	uint64_t *l1 = calloc(size, 8);
	uint8_t *raw = calloc(size, 8);
	bool *dirty = calloc(size, sizeof(bool));
	int r;
	if (!l1 || !raw || !dirty) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "grow L1 table", NULL);
		goto out;
	}
	/* The copy is made of durable entries only: everything the current L1 points at is
	 * written first. Then the new table and its refcounts, durable before the header
	 * switches to it. */
	if ((r = qcow2_flush_metadata(s, err)) < 0)
		goto out;
	memcpy(l1, s->l1, (size_t)s->l1_size * 8);
	for (uint64_t i = 0; i < size; i++)
		qcow2_put_be64(raw + i * 8, l1[i]);
	if ((r = qcow2_alloc_clusters(s, clusters, &off, err)) < 0 ||
	    (r = blk_file_pwrite(s->b->file, off, raw, size * 8, err)) < 0 ||
	    (r = qcow2_cache_write(s->rbc, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint8_t hdr[12];
	qcow2_put_be32(hdr, (uint32_t)size);
	qcow2_put_be64(hdr + 4, off);
	if ((r = blk_file_pwrite(s->b->file, QCOW2_OFF_L1_SIZE, hdr, 12, err)) < 0 ||
	    (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	uint64_t old_off = s->l1_offset, old_size = s->l1_size;
	free(s->l1);
	free(s->l1_dirty);
	s->l1 = l1;
	s->l1_dirty = dirty;
	qcow2_meta_changed(s);
	l1 = NULL;
	dirty = NULL;
	s->l1_offset = off;
	s->l1_size = (uint32_t)size;
	if (old_size)
		r = qcow2_free_later(s, old_off, old_size * 8, err);
out:
	free(l1);
	free(raw);
	free(dirty);
	return r;
}

/* Host clusters [off, off+len) just allocated for preallocation must read as zeros before
 * anything maps them (a reused cluster may hold old bytes): below the end of the file
 * they are zeroed (holes for metadata), past it falloc reserves space and full writes
 * zeros; metadata leaves the file to be extended at the end. */
static int prealloc_host(struct qcow2 *s, uint64_t off, uint64_t len, enum blk_prealloc mode,
                         uint64_t fsize, struct vt_error *err)
{
	int r = 0;
	if (off < fsize) {
		uint64_t in = fsize - off < len ? fsize - off : len;
		if (mode == BLK_PREALLOC_FULL)
			r = blk_file_allocate(s->b->file, off, in, true, err);
		else
			r = blk_file_zero(s->b->file, off, in, mode == BLK_PREALLOC_METADATA, err);
		off += in;
		len -= in;
	}
	if (r == 0 && len && mode != BLK_PREALLOC_METADATA)
		r = blk_file_allocate(s->b->file, off, len, mode == BLK_PREALLOC_FULL, err);
	return r;
}

int qcow2_preallocate(struct qcow2 *s, uint64_t start, uint64_t end, enum blk_prealloc mode,
                      uint64_t *data_end, struct vt_error *err)
{
	uint64_t first = start / s->cs, clusters = (end + s->cs - 1) / s->cs, fsize;
	int r = blk_file_size(s->b->file, &fsize, err);
	*data_end = 0;
	for (uint64_t c = first; c < clusters && r == 0;) {
		uint64_t gc = c * s->cs, l2_off, data;
		uint64_t n = s->l2_entries - (c & (s->l2_entries - 1));
		if (n > clusters - c)
			n = clusters - c;
		if ((r = l2_for_write(s, gc >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0)
			break;
		/* Runs of clusters nothing maps yet, within this L2 table. */
		uint64_t k = 0;
		while (k < n && r == 0) {
			struct mapping m;
			uint64_t run = 0;
			while (k + run < n) {
				if ((r = lookup(s, gc + (k + run) * s->cs, &m, err)) < 0)
					break;
				enum qcow2_cluster_type t = classify(s, m.entry);
				if ((m.entry & QCOW2_OFFSET_MASK) || t == QCOW2_COMPRESSED)
					break;
				run++;
			}
			if (r < 0)
				break;
			if (!run) {
				k++;
				continue;
			}
			if ((r = qcow2_alloc_clusters(s, run, &data, err)) < 0 ||
			    (r = prealloc_host(s, data, run * s->cs, mode, fsize, err)) < 0)
				break;
			for (uint64_t i = 0; i < run && r == 0; i++) {
				uint64_t idx = (c + k + i) & (s->l2_entries - 1);
				/* With subclusters qemu leaves the bitmap empty: the cluster is
				 * reserved, and reads from below until written. */
				r = set_entry(s, l2_off, idx, (data + i * s->cs) | QCOW2_OFLAG_COPIED, 0,
				              true, err);
			}
			if (data + run * s->cs > *data_end)
				*data_end = data + run * s->cs;
			k += run;
		}
		c += n;
	}
	return r;
}

/* Guest clusters [first, first+n) become unallocated (entry 0), what they mapped released
 * after the next flush: the cropped part of a shrunk image. Tables that do not exist, or
 * map nothing there, are left alone. */
int qcow2_drop_clusters(struct qcow2 *s, uint64_t first, uint64_t n, struct vt_error *err)
{
	uint64_t end = first + n;
	int r = 0;
	while (first < end && r == 0) {
		uint64_t l1i = first >> s->l2_bits, next = (l1i + 1) << s->l2_bits, l2_off;
		if (next > end)
			next = end;
		if ((r = l2_offset(s, l1i, &l2_off, err)) < 0)
			break;
		bool any = false;
		for (uint64_t c = first; l2_off && c < next && !any && r == 0; c++) {
			struct mapping m;
			if ((r = lookup(s, c << s->cluster_bits, &m, err)) == 0)
				any = m.entry || m.bitmap;
		}
		if (r == 0 && any)
			r = l2_for_write(s, l1i, &l2_off, err);
		for (uint64_t c = first; any && c < next && r == 0; c++) {
			struct mapping m;
			if ((r = lookup(s, c << s->cluster_bits, &m, err)) < 0 || (!m.entry && !m.bitmap))
				continue;
			if ((r = set_entry(s, l2_off, m.l2_index, 0, 0, false, err)) == 0)
				r = release_mapping(s, m.entry, err);
		}
		first = next;
	}
	return r;
}
