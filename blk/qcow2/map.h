/* The guest-to-host cluster mapping, as the files that read and change it share it:
 * cluster.c (L2 lookup, reads, block status), l1.c (L1 table, L2 tables made writable),
 * write.c (writes, copy-on-write, changing an L2 entry) and zero.c (zeroing, discard,
 * preallocation, shrinking). Internal to those files; everything else goes through the
 * qcow2_ entry points in qcow2.h. Callers hold s->lock. */
#ifndef VTOOL_BLK_QCOW2_MAP_H
#define VTOOL_BLK_QCOW2_MAP_H

#include "blk/qcow2/qcow2.h"

/* The longest run of clusters one transfer covers, and the iovec entries it may take. */
#define QCOW2_RUN_MAX (8u << 20)
#define QCOW2_RUN_IOV_MAX 64

static inline void *qcow2_cluster_buf(const struct qcow2 *s)
{
	return qcow2_alloc_buf(s->cs);
}

static inline int qcow2_l2_load(struct qcow2 *s, uint64_t off, uint8_t **data,
                                struct vt_error *err)
{
	return qcow2_cache_get(s->l2c, off, data, err);
}

/* A guest cluster's L2 entry (and subcluster bitmap with extended L2), and where it is. */
struct qcow2_mapping {
	uint64_t entry, bitmap;
	uint64_t l2_off;   /* 0: no L2 table */
	uint64_t l2_index;
};

static inline enum qcow2_cluster_type qcow2_classify(const struct qcow2 *s, uint64_t e)
{
	if (e & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_COMPRESSED;
	uint64_t off = e & QCOW2_OFFSET_MASK;
	if (!s->extended_l2 && (e & QCOW2_OFLAG_ZERO))
		return off ? QCOW2_ZERO_ALLOC : QCOW2_ZERO_PLAIN;
	return off ? QCOW2_NORMAL : QCOW2_UNALLOCATED;
}

/* The part [skip, skip+len) of an iovec array as another one; -1 if it needs more than max
 * entries. */
static inline int qcow2_iov_slice(const struct iovec *iov, int iovcnt, size_t skip,
                                  size_t len, struct iovec *out, int max)
{
	int m = 0;
	return vt_iov_slice(iov, iovcnt, skip, len, out, &m, max) ? m : -1;
}

/* cluster.c */
/* The L2 table for L1 index i, or *l2_off = 0 if there is none. */
int qcow2_l2_offset(struct qcow2 *s, uint64_t i, uint64_t *l2_off, struct vt_error *err);
/* The L2 entry of the guest cluster at guest offset guest; m->l2_off = 0 (and the entry 0)
 * when no L2 table covers it. */
int qcow2_l2_lookup(struct qcow2 *s, uint64_t guest, struct qcow2_mapping *m,
                    struct vt_error *err);
/* Refuse (as a corruption) an entry that qemu would refuse. */
int qcow2_l2_validate(struct qcow2 *s, uint64_t guest, const struct qcow2_mapping *m,
                      struct vt_error *err);
/* Read [in, in+n) of the guest cluster starting at gc into out, per its mapping. */
int qcow2_read_mapped(struct qcow2 *s, uint64_t gc, const struct qcow2_mapping *m,
                      uint64_t in, uint64_t n, uint8_t *out, struct vt_error *err);

/* l1.c */
/* An L2 table we own for L1 index i, made (copying a shared one) when needed. */
int qcow2_l2_for_write(struct qcow2 *s, uint64_t i, uint64_t *l2_off, struct vt_error *err);

/* write.c */
/* Change an L2 entry; new_data: it maps a cluster just allocated or written, so it waits
 * for the cluster's refcount and contents to be durable. */
int qcow2_l2_set_entry(struct qcow2 *s, uint64_t l2_off, uint64_t idx, uint64_t entry,
                       uint64_t bitmap, bool new_data, struct vt_error *err);
/* Drop, at the next flush, the references the replaced L2 entry held. */
int qcow2_release_mapping(struct qcow2 *s, uint64_t entry, struct vt_error *err);
/* Is the mapping's data cluster ours alone (refcount 1, COPIED)? */
int qcow2_mapping_owned(struct qcow2 *s, const struct qcow2_mapping *m, bool *yes,
                        struct vt_error *err);
/* Write n bytes at in of the guest cluster at gc (data NULL: zeros), with COW. scratch:
 * one cluster. */
int qcow2_write_cluster(struct qcow2 *s, uint64_t gc, uint64_t in, uint64_t n,
                        const uint8_t *data, uint8_t *scratch, struct vt_error *err);

#endif
