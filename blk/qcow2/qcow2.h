/* qcow2 driver internals, shared by the files of blk/qcow2/. Format facts: specs/qcow2.md.
 *
 * Concurrency: one mutex per image (s->lock) guards all metadata (L1, the L2 and refcount
 * caches, the allocator, header fields). Data transfers to and from clusters run without
 * it; like a disk, requests that overlap in time and space complete in no particular
 * order. A transfer that runs unlocked is counted (io_begin/io_end) so that a cluster
 * freed meanwhile is not handed out again before the transfer is over.
 *
 * Crash consistency (a killed process or a power cut, where writes after the last flush
 * land in any order): L2 tables and refcount blocks live in write-back caches (cache.c)
 * and reach the file in this order, each step durable (fdatasync) before the next:
 *   1. a new cluster's refcount, and the cluster's data (guest data or COW copy);
 *   2. the L2 entry that maps it;
 *   3. the L1 entry of a new L2 table.
 * Clusters that lose a reference (discard, COW of a shared cluster, a replaced L2 table)
 * are not released at once: their refcounts drop only after the metadata that no longer
 * points at them is durable (the next flush), so until then they cannot be reused and no
 * durable table can point at a cluster that holds something else. Structural changes
 * (new refcount blocks, a bigger refcount table or L1 table) are written and synced
 * before anything points at them. The worst a crash leaves is leaked clusters. */
#ifndef VTOOL_BLK_QCOW2_H
#define VTOOL_BLK_QCOW2_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "blk/driver.h"

#define QCOW2_MAGIC 0x514649fbu

/* The on-disk header through the compression type byte and its padding (v3, 112 bytes).
 * Big-endian on disk; decoded field by field, never cast onto. */
struct qcow2_disk_header {
	uint32_t magic;
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
	uint8_t padding[7];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_header) == 112, "qcow2 v3 header is 112 bytes");

/* Header field offsets we rewrite in place (never the whole header: extensions we do not
 * know must survive). */
#define QCOW2_OFF_L1_SIZE        36  /* l1_size (4) + l1_table_offset (8) */
#define QCOW2_OFF_REFTABLE       48  /* offset (8) + clusters (4) */
#define QCOW2_OFF_INCOMPAT       72
#define QCOW2_OFF_AUTOCLEAR      88

#define QCOW2_INCOMPAT_DIRTY     (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT   (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESS  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2     (1ull << 4)
#define QCOW2_INCOMPAT_MASK      0x1full
#define QCOW2_COMPAT_LAZY        (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS  (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW (1ull << 1)

#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FMT    0xe2792acau
#define QCOW2_EXT_FEATURES       0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO         0x0537be77u
#define QCOW2_EXT_DATA_FILE      0x44415441u

#define QCOW2_OFLAG_COPIED       (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED   (1ull << 62)
#define QCOW2_OFLAG_ZERO         (1ull << 0)
#define QCOW2_OFFSET_MASK        0x00fffffffffffe00ull
#define QCOW2_L1_RESERVED        0x7f000000000001ffull
#define QCOW2_L2_RESERVED        0x3f000000000001feull
#define QCOW2_REFT_OFFSET_MASK   0xfffffffffffffe00ull

#define QCOW2_MAX_L1_BYTES       (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS      65536u

enum qcow2_cluster_type {
	QCOW2_UNALLOCATED,
	QCOW2_ZERO_PLAIN,
	QCOW2_ZERO_ALLOC,
	QCOW2_NORMAL,
	QCOW2_COMPRESSED,
};

struct qcow2_cache;

#define QCOW2_MAX_BITMAPS        65535
#define QCOW2_MAX_BITMAP_DIR     (1024 * QCOW2_MAX_BITMAPS)
#define QCOW2_BME_IN_USE         1u  /* not stored cleanly: inconsistent */
#define QCOW2_BME_AUTO           2u  /* enabled: tracks every write */

/* One persistent dirty bitmap (specs/qcow2.md §9). Bit n covers guest bytes
 * [n << gran_bits, (n + 1) << gran_bits). */
struct qcow2_bitmap {
	char *name;
	uint64_t table_offset;       /* as stored (kept as is for an inconsistent bitmap) */
	uint32_t table_size;
	uint32_t flags;              /* QCOW2_BME_* as stored at open, then as to be stored */
	unsigned gran_bits;
	bool inconsistent;           /* in use at open: never loaded, only removable */
	uint8_t *bits;               /* loaded (read-write handles): ceil(size/granularity) */
};

/* One entry of the snapshot table (specs/qcow2.md §8), decoded. */
struct qcow2_snapshot {
	uint64_t l1_offset;
	uint32_t l1_size;
	char *id, *name;             /* NUL-terminated copies */
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;      /* the 64-bit one when the extra data has it */
	uint64_t disk_size;          /* the image's size when the extra data lacks it */
	uint64_t icount;             /* UINT64_MAX when absent */
	uint32_t extra_size;         /* extra data bytes as stored */
	uint8_t *extra_unknown;      /* extra data past the 24 bytes we know, kept as is */
};

/* A range of host clusters each losing one reference at the next flush. */
struct qcow2_free {
	uint64_t off, len;
};

struct qcow2 {
	struct blk *b;
	pthread_mutex_t lock;

	int version;
	unsigned cluster_bits;
	uint64_t cs;                 /* cluster size */
	uint64_t incompat, compat, autoclear;
	unsigned refcount_order, refcount_bits;
	uint64_t refcount_max;
	uint64_t rb_entries;         /* refcounts per refcount block */
	uint32_t header_length;
	int compression_type;        /* 0 zlib, 1 zstd */
	bool extended_l2;
	unsigned l2_entry_size;      /* 8, or 16 with extended L2 */
	uint64_t l2_entries;         /* entries per L2 table */
	unsigned l2_bits;
	unsigned csize_shift;        /* compressed descriptor: 62 - (cluster_bits - 8) */
	uint64_t csize_mask;

	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t *l1;                /* host byte order */

	uint64_t rt_offset;
	uint32_t rt_clusters;
	uint64_t rt_entries;
	uint64_t *rt;                /* host byte order */

	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t snapshots_size;     /* bytes the table takes on disk */
	struct qcow2_snapshot *snapshots; /* the table, parsed at open (snapshot.c) */
	/* Persistent dirty bitmaps (bitmap.c): the extension as the header has it, when its
	 * autoclear bit says it is valid, and the directory decoded. */
	bool has_bitmaps;            /* the header points at a bitmap directory */
	uint32_t bm_nb;
	uint64_t bm_dir_size, bm_dir_offset;
	struct qcow2_bitmap *bm;     /* the bitmaps, in directory order */
	uint32_t nbm;
	bool bm_store;               /* marked in use on disk: the set is stored at close */

	/* Encryption (crypto.c): the header is described, data cannot be read. */
	uint32_t crypt_method;       /* 0 none, 1 AES, 2 LUKS */
	bool has_crypto_ext;
	uint64_t crypto_off, crypto_len; /* the LUKS header area */
	struct qcow2_decrypt *dec;   /* unlocked (decrypt.c): data can be read */

	uint64_t free_hint;          /* cluster index where free-cluster search starts */
	struct qcow2_cache *l2c;     /* L2 tables */
	struct qcow2_cache *rbc;     /* refcount blocks */
	bool *l1_dirty;              /* L1 entries changed in memory, written at flush */
	bool l1_any_dirty;
	bool lazy_refcounts;         /* refcounts may lag (dirty bit set while they do) */
	bool writethrough;           /* metadata written back after every request */
	struct qcow2_free *frees;    /* references to drop at the next flush */
	size_t nfrees, frees_cap;
	uint64_t *meta;              /* sorted clusters of L2 tables and refcount blocks */
	size_t nmeta;
	bool meta_stale;             /* rebuild before the next overlap check */
	/* Unlocked data transfers in flight, by epoch (see io_begin). */
	pthread_mutex_t io_lock;
	pthread_cond_t io_done;
	uint64_t io_epoch;
	unsigned io_count[2];
	uint8_t *cbuf;               /* two clusters of scratch for (de)compression */
	/* Compressed streams are packed back to back into an arena of host clusters reserved
	 * for them (each with refcount 1 until a stream uses it), so plain clusters written
	 * meanwhile never cut a stream's way: [carena_next, carena_end). Untouched clusters
	 * of the arena are given back at flush; a crash leaks them. */
	uint64_t carena_next, carena_end;
	uint64_t cstreams;           /* compressed streams written: sizes the next arena */
#define QCOW2_ARENA_CLUSTERS 16
};

/* Buffers for file I/O are page aligned: with O_DIRECT that spares a bounce copy. */
static inline void *qcow2_alloc_buf(size_t n)
{
	void *p;
	return posix_memalign(&p, 4096, n) ? NULL : p;
}

static inline uint64_t qcow2_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}
static inline uint32_t qcow2_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void qcow2_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline void qcow2_put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* A refcount block's entry i (refcount_bits wide, sub-byte widths LSB first). */
static inline uint64_t qcow2_rb_get(const struct qcow2 *s, const uint8_t *rb, uint64_t i)
{
	unsigned w = s->refcount_bits;
	if (w < 8)
		return (rb[i * w / 8] >> ((i * w) % 8)) & ((1u << w) - 1);
	uint64_t v = 0;
	for (unsigned k = 0; k < w / 8; k++)
		v = v << 8 | rb[i * (w / 8) + k];
	return v;
}
static inline void qcow2_rb_set(const struct qcow2 *s, uint8_t *rb, uint64_t i, uint64_t v)
{
	unsigned w = s->refcount_bits;
	if (w < 8) {
		uint8_t mask = (uint8_t)(((1u << w) - 1) << ((i * w) % 8));
		uint8_t *p = &rb[i * w / 8];
		*p = (uint8_t)((*p & ~mask) | ((v << ((i * w) % 8)) & mask));
		return;
	}
	unsigned n = w / 8;
	for (unsigned k = 0; k < n; k++)
		rb[i * n + k] = (uint8_t)(v >> (8 * (n - 1 - k)));
}

/* cache.c: write-back caches of L2 tables and refcount blocks (see the top of cache.c). */
int qcow2_cache_create(struct qcow2 *s, uint32_t nslots, const char *what,
                       struct qcow2_cache **out, struct vt_error *err);
void qcow2_cache_destroy(struct qcow2_cache *c);
int qcow2_cache_get(struct qcow2_cache *c, uint64_t off, uint8_t **table, struct vt_error *err);
/* A table being created at off: zero-filled, dirty, not read from the file. */
int qcow2_cache_get_empty(struct qcow2_cache *c, uint64_t off, uint8_t **table,
                          struct vt_error *err);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint64_t off);
void qcow2_cache_pin(struct qcow2_cache *c, const uint8_t *table);
void qcow2_cache_unpin(struct qcow2_cache *c, const uint8_t *table);
/* Before any table of c is written, dep's dirty tables must be durable. */
int qcow2_cache_set_dependency(struct qcow2_cache *c, struct qcow2_cache *dep,
                               struct vt_error *err);
/* Before any table of c is written, the file must be synced (data written so far). */
void qcow2_cache_depends_on_flush(struct qcow2_cache *c);
/* Write every dirty table (after what they depend on); no sync at the end. */
int qcow2_cache_write(struct qcow2_cache *c, struct vt_error *err);
bool qcow2_cache_dirty(const struct qcow2_cache *c);
/* Forget a table whose cluster is no longer metadata (its changes are dropped). */
void qcow2_cache_discard(struct qcow2_cache *c, uint64_t off);
/* Forget every table (after check rewrote tables behind the cache's back). */
void qcow2_cache_forget_all(struct qcow2_cache *c);
int qcow2_cache_sync_file(struct qcow2 *s, struct vt_error *err);

/* qcow2.c */
/* n big-endian 64-bit entries at off (L1, refcount, bitmap tables), in host order;
 * malloc'd with one spare entry. */
int qcow2_load_table(struct qcow2 *s, uint64_t off, uint64_t n, uint64_t **out,
                     struct vt_error *err);
/* Write back all metadata in crash-safe order and sync, then release the clusters freed
 * since the last flush. */
int qcow2_flush_metadata(struct qcow2 *s, struct vt_error *err);
/* Before the first metadata change of a lazy-refcounts image: set the dirty bit, durably. */
int qcow2_mark_dirty(struct qcow2 *s, struct vt_error *err);
/* Count an unlocked transfer to or from a cluster that some L2 entry maps. */
uint64_t qcow2_io_begin(struct qcow2 *s);
void qcow2_io_end(struct qcow2 *s, uint64_t epoch);
/* Wait for the unlocked transfers that started before now. */
void qcow2_io_drain(struct qcow2 *s);

/* header.c */
int qcow2_read_header(struct qcow2 *s, struct vt_error *err);
int qcow2_write_be64_field(struct qcow2 *s, uint64_t off, uint64_t v, struct vt_error *err);
/* Sets the corrupt bit (when writable) and returns -EIO with the reason. */
int qcow2_signal_corruption(struct qcow2 *s, struct vt_error *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int qcow2_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                 const struct blk_optlist *opts, char **formatting, struct vt_error *err);
extern const struct blk_optdesc qcow2_create_opts[];
/* The feature name table qemu writes (8 entries of 48 bytes); returns its length. */
size_t qcow2_feature_table(uint8_t *t);

/* hdrupdate.c: the one switch every whole-structure change of qcow2 metadata ends with
 * (snapshot operations through shadow.c, amend, make_empty, rebase/commit's backing file
 * change): one edit of cluster 0 (header, extensions, backing file name), written as a
 * single pwrite of the bytes that differ and synced. The caller has made durable what
 * the new header points at. Fields not named keep their on-disk values; unknown
 * extensions survive. Edits of header fields only (tables, size, width) stay within the
 * first 104 bytes: one sector, so the switch is atomic even against torn writes.
 * In memory, the version, feature words and backing names are adopted here; tables,
 * size and refcount width are the caller's to adopt. */
struct qcow2_hdr_edit {
	bool backing;                /* replace the backing file name and format: */
	const char *backing_file;    /*   NULL or "" for none */
	const char *backing_format;  /*   NULL for none recorded */
	int version;                 /* 0 = unchanged, else 2 or 3 */
	bool features;               /* write the three feature words (v3) */
	uint64_t incompat, compat, autoclear;
	int compression_type;        /* -1 = unchanged (with features only) */
	int refcount_order;          /* -1 = unchanged */
	bool set_size;               /* the virtual disk size */
	uint64_t size;
	bool set_l1;                 /* the active L1 table */
	uint32_t l1_size;
	uint64_t l1_offset;
	bool set_reftable;           /* the refcount table */
	uint64_t rt_offset;
	uint32_t rt_clusters;
	bool set_snapshots;          /* the snapshot table */
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	bool set_bitmaps;            /* the bitmaps extension (removed when bm_nb is 0); the */
	uint32_t bm_nb;              /*   autoclear bit follows it */
	uint64_t bm_dir_size, bm_dir_offset;
};
int qcow2_edit_header(struct qcow2 *s, const struct qcow2_hdr_edit *e, struct vt_error *err);
int qcow2_change_backing_file(struct blk *b, const char *file, const char *fmt,
                              struct vt_error *err);

/* snapshot.c: the snapshot table -- read and validated once at open (qemu's rules and
 * messages), listed by info, searched by convert -l, walked by check, rewritten by the
 * snapshot operations -- and the operations themselves (create, apply, delete), each one
 * metadata switch (shadow.c). */
int qcow2_snapshots_load(struct qcow2 *s, struct vt_error *err);
/* The table s->nb_snapshots and s->snapshots_offset describe, read into s->snapshots
 * (s->snapshots_size set), with qemu's rules (qcow2_do_read_snapshots). Without repair, an
 * entry with more than 1 KiB of extra data or a table over 64 MiB fails the read (then
 * *reduced is the number of snapshots from the one that overflows on). With repair, as
 * qemu's check -r all: extra data is cut to 1 KiB (*dropped counts the entries), and the
 * entry that overflows the table and all after it are dropped (*reduced of them;
 * s->nb_snapshots shrinks, the table's size ends before them), each told to report. */
int qcow2_snapshots_read(struct qcow2 *s, bool repair, void (*report)(void *, const char *),
                         void *opaque, uint32_t *reduced, uint32_t *dropped,
                         struct vt_error *err);
/* check -r all (check.c, s->lock held, refcounts already repaired): the table in memory
 * -- entries dropped, extra data cut -- written anew and switched in as the snapshot
 * operations switch theirs. The old table's clusters are released only when release_old
 * (the check counted them: a table running a cluster or more past the end of the file
 * was not counted, so its clusters hold no reference of it). */
int qcow2_snapshots_rewrite(struct qcow2 *s, bool release_old, struct vt_error *err);
void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t n);
/* qemu's lookups: by ID and/or name (NULL matches anything); by ID, else by name.
 * The index, or -1. */
int qcow2_snapshot_find(const struct qcow2 *s, const char *id, const char *name);
int qcow2_snapshot_find_id_or_name(const struct qcow2 *s, const char *id_or_name);
/* qemu's validation of a snapshot's L1 table before it is used ("Snapshot L1 table ..."). */
int qcow2_snapshot_check_l1(struct qcow2 *s, const struct qcow2_snapshot *sn,
                            struct vt_error *err);
/* The table as qemu writes it (extra data at least 24 bytes); *len its size. */
int qcow2_snapshots_encode(struct qcow2 *s, const struct qcow2_snapshot *sn, uint32_t n,
                           uint8_t **out, uint64_t *len, struct vt_error *err);
int qcow2_snapshots_info(struct qcow2 *s, struct blk_info *info, struct vt_error *err);
int qcow2_snapshot_create(struct blk *b, const char *name, struct vt_error *err);
int qcow2_snapshot_goto(struct blk *b, const char *id_or_name, bool dry_run,
                        struct vt_error *err);
int qcow2_snapshot_delete(struct blk *b, const char *id, const char *name,
                          struct vt_error *err);

/* bitmap.c: persistent dirty bitmaps. The directory is read and validated at open
 * (qemu's rules). A read-write handle loads every consistent bitmap and marks them all
 * in use on disk before anything else is written, as qemu does; writes then set bits in
 * the enabled ones, and close stores the set beside the old one and switches the header
 * to it (a crash before that leaves them in use: inconsistent, never corrupt). */
int qcow2_bitmaps_open(struct qcow2 *s, struct vt_error *err);
int qcow2_bitmaps_store(struct qcow2 *s, struct vt_error *err);
void qcow2_bitmaps_free(struct qcow2 *s);
/* Guest bytes [off, off+len) changed. */
void qcow2_bitmaps_mark(struct qcow2 *s, uint64_t off, uint64_t len);
/* The disk goes from old_size to size bytes: bits past it are dropped, new ones clean.
 * Called before growing (it allocates) and after shrinking (it cannot fail then). */
int qcow2_bitmaps_resize(struct qcow2 *s, uint64_t old_size, uint64_t size,
                         struct vt_error *err);
/* qemu's "bitmaps" member of the format-specific data (NULL when there are none). */
struct vt_json *qcow2_bitmaps_info(struct qcow2 *s);
/* check: call count for the directory, every bitmap table and data cluster the header's
 * directory references; malformed entries add to *corruptions. */
int qcow2_bitmaps_refs(struct qcow2 *s, void (*count)(void *opaque, uint64_t off,
                                                      uint64_t len),
                       void *opaque, uint64_t *corruptions, struct vt_error *err);
/* measure: bytes the source's bitmaps take in a qcow2 image of cluster size cs. */
int qcow2_bitmaps_measure(struct blk *src, uint64_t cs, uint64_t *bytes, struct vt_error *err);
int qcow2_bitmap_list(struct blk *b, struct blk_bitmap **out, size_t *n, struct vt_error *err);
int qcow2_bitmap_apply(struct blk *b, const struct blk_bitmap_op *op, struct vt_error *err);
int qcow2_bitmap_read(struct blk *b, const char *name, struct blk_bitmap_bits *out,
                      struct vt_error *err);

/* shadow.c: a metadata change made beside the live metadata and switched in with one
 * header write. Snapshot operations change refcounts and the COPIED flags that must agree
 * with them in many clusters at once; qemu-img check calls any state between the two a
 * corruption. So the new refcounts go to copies of the refcount blocks (and a new
 * refcount table), new tables to free clusters, and bytes 24-72 of the header (size,
 * L1, refcount table, snapshot table) switch everything in one sector write, synced
 * before and after: a crash leaves the old image or the new one, never a mix, and the
 * clusters the change releases are free at the very moment nothing points at them.
 * Callers hold s->lock with the metadata flushed (qcow2_shadow_begin does it). */
struct qcow2_shadow;
int qcow2_shadow_begin(struct qcow2 *s, struct qcow2_shadow **out, struct vt_error *err);
void qcow2_shadow_abort(struct qcow2_shadow *sh);
/* A cluster's refcount in the new state. */
int qcow2_shadow_get(struct qcow2_shadow *sh, uint64_t cluster, uint64_t *rc,
                     struct vt_error *err);
/* Add delta to the refcount of each cluster [off, off+len) touches (-ERANGE when it would
 * pass the refcount width, a corruption error below 0). */
int qcow2_shadow_add(struct qcow2_shadow *sh, uint64_t off, uint64_t len, int delta,
                     struct vt_error *err);
/* n contiguous clusters free in the old and the new state, counted once in the new. */
int qcow2_shadow_alloc(struct qcow2_shadow *sh, uint64_t n, uint64_t *off,
                       struct vt_error *err);
/* Write buf (taken over, qcow2_alloc_buf'd) at off, a range qcow2_shadow_alloc gave. */
int qcow2_shadow_write(struct qcow2_shadow *sh, uint64_t off, uint8_t *buf, uint64_t len,
                       struct vt_error *err);
struct qcow2_shadow_header {
	uint64_t size;
	uint32_t l1_size;
	uint64_t l1_offset;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
};
/* Write everything, switch the header, adopt the new state: l1 (l1_size entries, host
 * order) becomes the active L1 table. The shadow is gone either way. */
int qcow2_shadow_commit(struct qcow2_shadow *sh, const struct qcow2_shadow_header *h,
                        uint64_t *l1, struct vt_error *err);

/* refcount.c */
int qcow2_get_refcount(struct qcow2 *s, uint64_t cluster, uint64_t *rc, struct vt_error *err);
int qcow2_update_refcount(struct qcow2 *s, uint64_t cluster, int delta, struct vt_error *err);
/* Allocate n contiguous clusters (refcount 1); returns the host offset in *off. */
int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *off, struct vt_error *err);
/* Give back the compressed arena's untouched clusters. */
int qcow2_arena_release(struct qcow2 *s, struct vt_error *err);
/* Drop one reference from each cluster in [off, off+len) now: only for clusters no
 * table has ever pointed at (an allocation given back). */
int qcow2_free_range(struct qcow2 *s, uint64_t off, uint64_t len, struct vt_error *err);
/* Drop one reference from each cluster in [off, off+len) once the metadata that stopped
 * pointing at them is durable (the next flush). */
int qcow2_free_later(struct qcow2 *s, uint64_t off, uint64_t len, struct vt_error *err);
/* Apply the deferred frees (called by the flush once the metadata is durable). */
int qcow2_release_frees(struct qcow2 *s, struct vt_error *err);
/* Refuse (and mark the image corrupt) when [off, off+len) overlaps metadata we know of:
 * the header, L1, refcount table and blocks, L2 tables, snapshot table, snapshot L1s. A hostile or
 * damaged image can make free-looking clusters or L2 entries point there. */
int qcow2_check_overlap(struct qcow2 *s, uint64_t off, uint64_t len, struct vt_error *err);
/* The L1 or refcount table changed: the overlap check's index is rebuilt. */
void qcow2_meta_changed(struct qcow2 *s);

/* cluster.c: the guest-to-host mapping, reads, block status. */
int qcow2_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                 struct vt_error *err);
int qcow2_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                       struct vt_error *err);

/* write.c: writes with copy-on-write, compressed writes. */
int qcow2_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                  struct vt_error *err);
int qcow2_write_compressed(struct blk *b, uint64_t off, const void *buf, size_t len,
                           struct vt_error *err);

/* zero.c: zeroing, discard, preallocation, shrinking. */
int qcow2_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                       struct vt_error *err);
int qcow2_discard(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err);
/* Allocate L2 tables and data clusters for the guest clusters of [start, end) that map
 * nothing yet, reading as zeros (preallocation metadata, falloc or full: how the host
 * space is reserved). *data_end: the end of the highest data cluster allocated. */
int qcow2_preallocate(struct qcow2 *s, uint64_t start, uint64_t end, enum blk_prealloc mode,
                      uint64_t *data_end, struct vt_error *err);
/* Guest clusters [first, first+n) (cluster indexes) map nothing afterwards; what they
 * mapped is released after the next flush (resize --shrink). */
int qcow2_drop_clusters(struct qcow2 *s, uint64_t first, uint64_t n, struct vt_error *err);

/* l1.c: the L1 table. */
/* Grow the L1 table to hold at least n entries (resize, create). */
int qcow2_grow_l1(struct qcow2 *s, uint64_t n, bool exact, struct vt_error *err);
/* The L1 entry i changed in memory: written at the next flush. */
void qcow2_l1_mark_dirty(struct qcow2 *s, uint64_t i);
int qcow2_write_l1(struct qcow2 *s, struct vt_error *err);

/* empty.c: commit's make-empty, crash-safe (see the top of empty.c). */
int qcow2_make_empty(struct blk *b, struct vt_error *err);

/* amend.c: qemu-img amend (compat, refcount_bits, lazy_refcounts, size). */
extern const struct blk_optdesc qcow2_amend_opts[];
int qcow2_amend(struct blk *b, const struct blk_optlist *opts, bool force,
                void (*progress)(void *opaque, uint64_t done, uint64_t total), void *opaque,
                struct vt_error *err);

/* crypto.c: encrypted images' headers. */
#define QCOW2_LUKS_SLOTS 8
struct qcow2_luks {
	char cipher[33], mode[33], hash[33], uuid[41];
	char alg[32], cmode[16], ivgen[16], ivhash[16];
	uint32_t payload, key_bytes, mk_iters;
	uint8_t mk_digest[20], mk_salt[32];
	struct { bool active; uint32_t iters, key_off, stripes; uint8_t salt[32]; }
		slot[QCOW2_LUKS_SLOTS];
};
/* Read and check the LUKS1 header at crypto_off (qemu's rules and messages). */
int qcow2_luks_parse(struct qcow2 *s, struct qcow2_luks *l, struct vt_error *err);
/* crypt_method against the CRYPTO extension, as qemu checks them at open. */
int qcow2_check_crypto_header(struct qcow2 *s, struct vt_error *err);
/* qemu's "encrypt" member of the format-specific data; NULL on ENOMEM. */
struct vt_json *qcow2_crypto_info(struct qcow2 *s);
/* The error for a data access to an encrypted image. */
int qcow2_crypto_refuse(struct qcow2 *s, const char *what, struct vt_error *err);
/* decrypt.c: reading encrypted images with the user's key (read-only handles). */
struct qcow2_decrypt;
/* Unlock with key (the secret's bytes): a LUKS key slot, or the legacy AES password. */
int qcow2_decrypt_unlock(struct qcow2 *s, const uint8_t *key, size_t len, struct vt_error *err);
void qcow2_decrypt_free(struct qcow2 *s);
int qcow2_decrypt_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                         struct vt_error *err);
/* resize.c: qemu-img resize (grow with preallocation, shrink). */
int qcow2_resize(struct blk *b, uint64_t size, enum blk_prealloc prealloc, struct vt_error *err);
int qcow2_truncate(struct blk *b, uint64_t size, struct vt_error *err);

/* check.c */
int qcow2_check(struct blk *b, unsigned fix, struct blk_check *res,
                void (*report)(void *, const char *), void *opaque, struct vt_error *err);

/* compress.c */
/* Compress one cluster into out (capacity cs - 1). Returns the compressed length, or 0 if
 * it does not fit (store uncompressed), or a negative errno. */
long qcow2_compress(struct qcow2 *s, const uint8_t *in, uint8_t *out, size_t out_cap);
int qcow2_decompress(struct qcow2 *s, const uint8_t *in, size_t in_len, uint8_t *out,
                     struct vt_error *err);

#endif
