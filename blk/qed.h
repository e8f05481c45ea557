/* QED (QEMU Enhanced Disk) driver internals, shared by blk/qed.c (header, open, create,
 * info), blk/qed_io.c (mapping, reads, writes) and blk/qed_check.c.
 *
 * Format: a little-endian header in the first cluster(s) (magic "QED\0", cluster and table
 * sizes, features, the L1 table's offset, the disk size, an optional backing file name);
 * a fixed L1 table of table_size clusters; L2 tables of the same size allocated on
 * demand; data clusters appended at the end of the file. A table entry is 0 (unallocated:
 * the backing file shows through), 1 (zero cluster, L2 only) or a cluster-aligned offset.
 * There are no reference counts: a cluster nothing points to is a leak.
 *
 * Concurrency: one mutex per image guards the L1 table, the L2 page cache, the allocator
 * and the header fields; data moves without it. A writer that allocates clusters marks
 * their guest range in flight (other writers of that range wait), writes the data, then
 * points the L2 entries at it.
 *
 * Crash safety: new clusters are appended past the end of the file (grown first); data
 * reaches the file before the L2 entry that points to it, a new L2 table before the L1
 * entry. As in qemu, an image without a backing file is marked "needs check" before its
 * first allocation (cleared by a flush), so after a power loss the check on the next
 * read-write open drops entries that point past the end of the file; with a backing file
 * the new data is flushed before the L2 update instead (a cluster filled from the backing
 * file must not be found empty). */
#ifndef VTOOL_BLK_QED_H
#define VTOOL_BLK_QED_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blk/driver.h"
#include "blk/fmt_common.h"

#define QED_MAGIC                 0x00444551u /* "QED\0" */
#define QED_F_BACKING_FILE        UINT64_C(0x01)
#define QED_F_NEED_CHECK          UINT64_C(0x02)
#define QED_F_BACKING_FORMAT_NO_PROBE UINT64_C(0x04)
#define QED_FEATURE_MASK          UINT64_C(0x07)
#define QED_MIN_CLUSTER_SIZE      4096u
#define QED_MAX_CLUSTER_SIZE      (64u << 20)
#define QED_MAX_TABLE_SIZE        16u
#define QED_DEFAULT_CLUSTER_SIZE  65536u
#define QED_DEFAULT_TABLE_SIZE    4u
/* vtool keeps the L1 table in memory and reads whole L2 tables for check: bigger tables
 * only occur with geometries whose disk size must be 0 (qemu's size limit wraps). */
#define QED_MAX_TABLE_BYTES       (64u << 20)
#define QED_L2_PAGE               4096u       /* L2 tables are cached in pieces this big */
#define QED_L2_CACHE_PAGES        64u

struct qed_disk_header {
	uint32_t magic;
	uint32_t cluster_size;
	uint32_t table_size;        /* clusters per L1/L2 table */
	uint32_t header_size;       /* clusters */
	uint64_t features;
	uint64_t compat_features;
	uint64_t autoclear_features;
	uint64_t l1_table_offset;
	uint64_t image_size;
	uint32_t backing_filename_offset;
	uint32_t backing_filename_size;
} __attribute__((packed));
_Static_assert(sizeof(struct qed_disk_header) == 64, "the QED header is 64 bytes");

struct qed_l2_page {
	uint64_t offset;            /* file offset of the cached piece; 0 = empty slot */
	uint64_t lru;
	uint64_t e[QED_L2_PAGE / 8]; /* host order */
};

struct qed {
	struct blk *b;
	pthread_mutex_t lock;
	uint32_t cluster_size, table_size, header_size;
	unsigned cluster_bits, l1_shift;
	uint64_t features, autoclear, l1_offset, image_size;
	uint64_t table_bytes, table_nelems;
	uint64_t *l1;               /* host order */
	uint64_t alloc_end;         /* qemu's file_size: where the next cluster goes */
	uint64_t file_len;          /* the file's length (grown by allocations) */
	uint64_t zero_from;         /* the file reads zeros from here unless we wrote it */
	/* L2 table offsets the L1 table names, sorted: data writes must not land there. */
	uint64_t *l2_tables;
	size_t n_l2_tables, cap_l2_tables;
	const char *no_write;       /* why writing would damage this image, or NULL */
	bool clearing;              /* a flush is clearing NEED_CHECK: allocations wait */
	struct fmt_inflight inflight; /* guest clusters being allocated */
	uint64_t lru_clock;
	struct qed_l2_page *cache;  /* QED_L2_CACHE_PAGES */
};

/* What a guest range maps to. */
enum qed_kind { QED_UNALLOC, QED_ZERO, QED_DATA };

/* qed.c */
int qed_write_header_u64(struct qed *s, uint64_t field_offset, uint64_t v,
                         struct vt_error *err);
bool qed_cluster_offset_ok(const struct qed *s, uint64_t off);
bool qed_table_offset_ok(const struct qed *s, uint64_t off);
/* Insert an L2 table offset into s->l2_tables (kept sorted). */
int qed_note_l2_table(struct qed *s, uint64_t off);

/* qed_io.c */
int qed_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
               struct vt_error *err);
int qed_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                struct vt_error *err);
int qed_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                     struct vt_error *err);
int qed_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                     struct vt_error *err);
int qed_flush(struct blk *b, struct vt_error *err);
void qed_cache_drop(struct qed *s);

/* qed_check.c: qemu-img check's counts; with fix, invalid table entries are cleared and
 * a consistent image is marked clean. Lock held by the caller when called from open. */
int qed_check_locked(struct qed *s, bool fix, struct blk_check *res, struct vt_error *err);
int qed_check(struct blk *b, unsigned fix, struct blk_check *res,
              void (*report)(void *, const char *), void *opaque, struct vt_error *err);

#endif
