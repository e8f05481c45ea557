/* qcow2 guest writes: in place over clusters the image owns (no metadata changes, one
 * unlocked transfer over a host-contiguous run), new clusters for runs that map nothing
 * yet, copy-on-write for the rest (shared, compressed, zero and backing-file clusters;
 * a partial write fills the cluster from what it read as), and compressed writes packed
 * into an arena; and the helpers that change an L2 entry and release what it held, for
 * zero.c too.
 *
 * qcow2_pwritev and qcow2_write_compressed take s->lock and drop it only around data
 * transfers; the helpers in map.h are called with it held. L2 tables live in the L2
 * cache; an L2 entry that maps a new cluster is written back only after the cluster's
 * refcount and contents are durable (the cache dependencies set in qcow2_l2_set_entry),
 * and a replaced mapping's clusters are freed only after the flush that makes the
 * replacement durable (qcow2_release_mapping). A new cluster's contents are written
 * unlocked while nothing maps it; if the guest cluster's mapping changed meanwhile, the
 * write starts over (a run goes cluster by cluster). A crash leaks clusters at worst. */
#include "blk/qcow2/qcow2.h"
#include "blk/qcow2/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BITMAP_ALL_ALLOC 0x00000000ffffffffull

/* Change an L2 entry in the cache. A mapping of a cluster that was just allocated (or
 * whose contents were just written: zero-allocated made real) must not reach the file
 * before the cluster's refcount and contents are durable. */
int qcow2_l2_set_entry(struct qcow2 *s, uint64_t l2_off, uint64_t idx, uint64_t entry,
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
	if ((r = qcow2_l2_load(s, l2_off, &l2, err)) < 0)
		return r;
	uint8_t *p = l2 + idx * s->l2_entry_size;
	qcow2_put_be64(p, entry);
	if (s->extended_l2)
		qcow2_put_be64(p + 8, bitmap);
	qcow2_cache_mark_dirty(s->l2c, l2_off);
	return 0;
}

/* Host clusters a mapping holds a reference to, released after it is replaced. */
int qcow2_release_mapping(struct qcow2 *s, uint64_t entry, struct vt_error *err)
{
	enum qcow2_cluster_type t = qcow2_classify(s, entry);
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
int qcow2_mapping_owned(struct qcow2 *s, const struct qcow2_mapping *m, bool *yes,
                        struct vt_error *err)
{
	uint64_t host = m->entry & QCOW2_OFFSET_MASK;
	*yes = false;
	if (qcow2_classify(s, m->entry) == QCOW2_COMPRESSED || !host ||
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
                           const struct qcow2_mapping *m, struct vt_error *err)
{
	uint64_t l2_now;
	struct qcow2_mapping now;
	int r;

	if ((r = qcow2_l2_offset(s, gc >> (s->cluster_bits + s->l2_bits), &l2_now, err)) < 0 ||
	    (r = qcow2_l2_lookup(s, gc, &now, err)) < 0)
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
	struct qcow2_mapping m;
	bool mine;
	int r;

	if ((r = qcow2_l2_for_write(s, l1i, &l2_off, err)) < 0 ||
	    (r = qcow2_l2_lookup(s, gc, &m, err)) < 0 ||
	    (r = qcow2_l2_validate(s, gc, &m, err)) < 0 ||
	    (r = qcow2_mapping_owned(s, &m, &mine, err)) < 0)
		return r;
	bool full = in == 0 && n == s->cs;
	bool simple = s->extended_l2 ? (uint32_t)m.bitmap == 0xffffffffu
	                             : qcow2_classify(s, m.entry) == QCOW2_NORMAL;
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
			if ((r = qcow2_read_mapped(s, gc, &m, 0, s->cs, scratch, err)) < 0)
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
			r = qcow2_l2_set_entry(s, l2_off, m.l2_index, want, bitmap, true, err);
		return r;
	}

	/* Copy on write into a new cluster. */
	uint64_t nw, fsize;
	if ((r = qcow2_alloc_clusters(s, 1, &nw, err)) < 0)
		return r;
	/* A new cluster past the end of the file reads as zeros already: when the copy would
	 * be zeros too (a zero cluster, or nothing below it), only the new bytes are written
	 * (qemu gets there with write_zeroes). They extend the file into the cluster. */
	enum qcow2_cluster_type t = qcow2_classify(s, m.entry);
	bool zero_cow = !s->extended_l2 && !full &&
	                (t == QCOW2_ZERO_PLAIN || t == QCOW2_ZERO_ALLOC ||
	                 (t == QCOW2_UNALLOCATED &&
	                  (!s->b->backing || gc >= s->b->backing->size)));
	if (zero_cow && (blk_file_size(s->b->file, &fsize, NULL) < 0 || nw < fsize))
		zero_cow = false;
	if (!full && !zero_cow && (r = qcow2_read_mapped(s, gc, &m, 0, s->cs, scratch, err)) < 0) {
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
	if ((r = qcow2_l2_set_entry(s, l2_off, m.l2_index, nw | QCOW2_OFLAG_COPIED, bitmap, true,
	                            err)) < 0)
		return r;
	return qcow2_release_mapping(s, m.entry, err);
}

/* Retry while another request changed the cluster's mapping under an unlocked write. */
int qcow2_write_cluster(struct qcow2 *s, uint64_t gc, uint64_t in, uint64_t n,
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
	struct iovec sub[QCOW2_RUN_IOV_MAX];
	uint8_t *l2;
	int r;

	*done = 0;
	if (s->extended_l2 || (g & (s->cs - 1)) || max < 2 * s->cs || limit < 2)
		return 0;
	if ((r = qcow2_l2_for_write(s, g >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0)
		return r;
	while (k < limit && (k + 1) * s->cs <= max && first + k < s->l2_entries) {
		struct qcow2_mapping m;
		if ((r = qcow2_l2_lookup(s, g + k * s->cs, &m, err)) < 0 ||
		    (r = qcow2_l2_validate(s, g + k * s->cs, &m, err)) < 0)
			return r;
		enum qcow2_cluster_type t = qcow2_classify(s, m.entry);
		if ((t != QCOW2_UNALLOCATED && t != QCOW2_ZERO_PLAIN) || (m.entry & QCOW2_OFFSET_MASK))
			break;
		k++;
	}
	int cnt = k >= 2 ? qcow2_iov_slice(iov, iovcnt, skip, k * s->cs, sub, QCOW2_RUN_IOV_MAX) : -1;
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
		r = qcow2_l2_offset(s, g >> (s->cluster_bits + s->l2_bits), &l2_now, err);
	for (uint64_t i = 0; r == 0 && i < k; i++) {
		struct qcow2_mapping m;
		if ((r = qcow2_l2_lookup(s, g + i * s->cs, &m, err)) == 0 &&
		    (l2_now != l2_off || (m.entry & QCOW2_OFFSET_MASK) ||
		     (qcow2_classify(s, m.entry) != QCOW2_UNALLOCATED &&
		      qcow2_classify(s, m.entry) != QCOW2_ZERO_PLAIN)))
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
	    (r = qcow2_l2_load(s, l2_off, &l2, err)) < 0)
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
	struct qcow2_mapping m;
	int r;
	*yes = false;
	if ((r = qcow2_l2_lookup(s, g, &m, err)) < 0 || (r = qcow2_l2_validate(s, g, &m, err)) < 0)
		return r;
	if (qcow2_classify(s, m.entry) != QCOW2_NORMAL ||
	    (s->extended_l2 && (uint32_t)m.bitmap != 0xffffffffu) ||
	    (r = qcow2_mapping_owned(s, &m, yes, err)) < 0 || !*yes)
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
	struct iovec sub[QCOW2_RUN_IOV_MAX];
	bool yes;
	int r;

	*done = 0;
	if ((r = overwritable(s, g - in, &host, &yes, err)) < 0 || !yes)
		return r;
	len = s->cs - in < max ? s->cs - in : max;
	while (len < max && len < QCOW2_RUN_MAX) {
		if ((r = overwritable(s, g + len, &next, &yes, err)) < 0)
			return r;
		if (!yes || next != host + in + len)
			break;
		len += s->cs < max - len ? s->cs : max - len;
	}
	if ((r = qcow2_check_overlap(s, host, in + len, err)) < 0)
		return r;
	int cnt = qcow2_iov_slice(iov, iovcnt, skip, len, sub, QCOW2_RUN_IOV_MAX);
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

	qcow2_bitmaps_mark(s, off, total);
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
		if (!buf && (!(buf = qcow2_cluster_buf(s)) || !(scratch = qcow2_cluster_buf(s)))) {
			r = vt_error_set(err, ENOMEM, b->filename, "write", NULL);
			break;
		}
		uint64_t n = s->cs - in < total - done ? s->cs - in : total - done;
		vt_iov_to_buf(iov, iovcnt, done, buf, n);
		r = qcow2_write_cluster(s, g - in, in, n, buf, scratch, err);
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
	uint8_t *in = qcow2_cluster_buf(s), *out = qcow2_cluster_buf(s);
	int r = 0;
	qcow2_bitmaps_mark(s, off, len);
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
		r = qcow2_write_cluster(s, off, 0, s->cs, in, out, err); /* does not pay: store plain */
	} else {
		uint64_t l2_off, coff = 0, last;
		struct qcow2_mapping m;
		if ((r = qcow2_l2_for_write(s, off >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0)
			goto unlock;
		/* A cluster whose refcount is at its maximum (refcount_bits=1: one stream) takes
		 * no further stream: the next one starts a cluster of its own, as in qemu. */
		uint64_t rc;
		if ((s->carena_next & (s->cs - 1)) &&
		    ((r = qcow2_get_refcount(s, s->carena_next >> s->cluster_bits, &rc, err)) < 0 ||
		     rc >= s->refcount_max))
			s->carena_next = (s->carena_next | (s->cs - 1)) + 1;
		if (r < 0)
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
		    (r = qcow2_l2_for_write(s, off >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0 ||
		    (r = qcow2_l2_lookup(s, off, &m, err)) < 0 ||
		    (r = qcow2_l2_set_entry(s, l2_off, m.l2_index, entry, 0, true, err)) < 0)
			goto unlock;
		r = qcow2_release_mapping(s, m.entry, err);
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
