/* qcow2 mapping changes through L2 entries alone: write_zeroes and discard (whole
 * clusters become zero or unallocated entries; partial ones are written as zeros through
 * write.c), preallocation for create and resize (host clusters reserved and made to read
 * as zeros before their entries map them), and dropping the clusters past the end of a
 * shrunk image. The ordering is write.c's: entries that map new clusters wait for their
 * refcounts, what a replaced entry held is freed after the next flush.
 * qcow2_write_zeroes and qcow2_discard take s->lock; the others are called with it held. */
#include "blk/qcow2/qcow2.h"
#include "blk/qcow2/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BITMAP_ALL_ZERO  0xffffffff00000000ull

/* Make a whole guest cluster read as zeros (or, for discard, drop it) through its L2
 * entry alone. */
static int zero_whole_cluster(struct qcow2 *s, uint64_t gc, bool unmap, bool discard,
                              struct vt_error *err)
{
	struct qcow2_mapping m;
	int r;
	if ((r = qcow2_l2_lookup(s, gc, &m, err)) < 0 || (r = qcow2_l2_validate(s, gc, &m, err)) < 0)
		return r;
	enum qcow2_cluster_type t = qcow2_classify(s, m.entry);
	bool empty = t == QCOW2_UNALLOCATED && !(s->extended_l2 && (m.bitmap >> 32));
	if (!s->b->backing && (t == QCOW2_ZERO_PLAIN || (empty && !m.bitmap)))
		return 0; /* already reads as zeros */
	if (s->version < 3 && s->b->backing)
		return discard ? 0 : 1; /* v2 cannot say "zero" over a backing file */
	bool keep = false;
	if (!unmap && (r = qcow2_mapping_owned(s, &m, &keep, err)) < 0)
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
	if ((r = qcow2_l2_for_write(s, gc >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0 ||
	    (r = qcow2_l2_lookup(s, gc, &m, err)) < 0 ||
	    (r = qcow2_l2_set_entry(s, l2_off, m.l2_index, entry, bitmap, false, err)) < 0)
		return r;
	return keep ? 0 : qcow2_release_mapping(s, m.entry, err);
}

static int zero_or_discard(struct blk *b, uint64_t off, uint64_t len, bool unmap,
                           bool discard, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint8_t *scratch = qcow2_cluster_buf(s);
	int r = 0;
	qcow2_bitmaps_mark(s, off, len);
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
			r = qcow2_write_cluster(s, off - in, in, n, NULL, scratch, err);
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
		if ((r = qcow2_l2_for_write(s, gc >> (s->cluster_bits + s->l2_bits), &l2_off, err)) < 0)
			break;
		/* Runs of clusters nothing maps yet, within this L2 table. */
		uint64_t k = 0;
		while (k < n && r == 0) {
			struct qcow2_mapping m;
			uint64_t run = 0;
			while (k + run < n) {
				if ((r = qcow2_l2_lookup(s, gc + (k + run) * s->cs, &m, err)) < 0)
					break;
				enum qcow2_cluster_type t = qcow2_classify(s, m.entry);
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
				r = qcow2_l2_set_entry(s, l2_off, idx,
				                       (data + i * s->cs) | QCOW2_OFLAG_COPIED, 0, true, err);
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
		if ((r = qcow2_l2_offset(s, l1i, &l2_off, err)) < 0)
			break;
		bool any = false;
		for (uint64_t c = first; l2_off && c < next && !any && r == 0; c++) {
			struct qcow2_mapping m;
			if ((r = qcow2_l2_lookup(s, c << s->cluster_bits, &m, err)) == 0)
				any = m.entry || m.bitmap;
		}
		if (r == 0 && any)
			r = qcow2_l2_for_write(s, l1i, &l2_off, err);
		for (uint64_t c = first; any && c < next && r == 0; c++) {
			struct qcow2_mapping m;
			if ((r = qcow2_l2_lookup(s, c << s->cluster_bits, &m, err)) < 0 ||
			    (!m.entry && !m.bitmap))
				continue;
			if ((r = qcow2_l2_set_entry(s, l2_off, m.l2_index, 0, 0, false, err)) == 0)
				r = qcow2_release_mapping(s, m.entry, err);
		}
		first = next;
	}
	return r;
}

