/* VMDK driver internals, shared by the files of blk/vmdk*.c.
 *
 * An image is a list of extents that together make the disk: flat extents (a range of a
 * file, FLAT/VMFS) and sparse extents (a "KDMV" hosted sparse file, or an ESX "COWD"
 * file) that map grains through a grain directory (GD) and grain tables (GT). A
 * monolithicSparse or streamOptimized image is one sparse extent with its descriptor
 * embedded; the other create types are a text descriptor naming extent files.
 * Files: vmdk.c (driver, request routing), vmdk_desc.c (descriptor text: parsing,
 * writing, CID), vmdk_sparse.c (sparse headers, GD/GT, grain mapping and allocation),
 * vmdk_stream.c (compressed grains: inflate, deflate, pending grains), vmdk_create.c.
 *
 * Concurrency: one mutex per image (struct vmdk.lock) guards the grain directories, the
 * GT cache, allocation frontiers, the pending-grain table and the in-flight set. Data
 * I/O and (de)compression run without it. A grain being allocated or rewritten is "in
 * flight": any other request touching it waits on struct vmdk.cond, so two writers of
 * one new grain never both allocate it.
 *
 * Crash ordering: a new grain's bytes are written and flushed (blk_file_flush) before
 * the grain table entry and its redundant copy that point at them. A killed writer
 * leaves at worst grains nothing points at (qemu-img check does not count those); data
 * written and flushed is reachable. */
#ifndef VTOOL_BLK_VMDK_H
#define VTOOL_BLK_VMDK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk/driver.h"

#define VMDK_SECTOR 512u

/* Hosted sparse extent header ("KDMV", VMDK4), the first sector of the file. Little
 * endian; decoded field by field at offsetof(), never cast onto. */
struct vmdk4_header {
	uint8_t magic[4];             /* "KDMV" */
	uint32_t version;             /* 1; 2 with zeroed-grain GTEs; 3 streamOptimized/CBT */
	uint32_t flags;               /* VMDK4_FLAG_* */
	uint64_t capacity;            /* sectors */
	uint64_t granularity;         /* grain size, sectors */
	uint64_t desc_offset;         /* embedded descriptor, sectors (0: none) */
	uint64_t desc_size;           /* sectors */
	uint32_t num_gtes_per_gt;
	uint64_t rgd_offset;          /* redundant grain directory, sectors */
	uint64_t gd_offset;           /* sectors; VMDK4_GD_AT_END: read the footer */
	uint64_t overhead;            /* sectors before the first grain */
	uint8_t unclean_shutdown;
	uint8_t nl_check[4];          /* "\n \r\n": detects text-mode transfers */
	uint16_t compress_algorithm;  /* 0 none, 1 deflate */
	uint8_t pad[433];
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk4_header) == 512, "VMDK4 header is one sector");

#define VMDK4_FLAG_NL_DETECT  (1u << 0)
#define VMDK4_FLAG_RGD        (1u << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK4_FLAG_COMPRESS   (1u << 16)
#define VMDK4_FLAG_MARKER     (1u << 17)
#define VMDK4_GD_AT_END       UINT64_MAX
#define VMDK4_COMPRESS_DEFLATE 1u

/* ESX sparse extent header ("COWD", VMDK3); its grain tables have 4096 entries. */
struct vmdk3_header {
	uint8_t magic[4];             /* "COWD" */
	uint32_t version;
	uint32_t flags;
	uint32_t disk_sectors;
	uint32_t granularity;         /* sectors */
	uint32_t gd_offset;           /* sectors */
	uint32_t gd_entries;
	uint32_t file_sectors;
	uint32_t cylinders, heads, sectors_per_track;
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk3_header) == 44, "VMDK3 header fields are 44 bytes");
#define VMDK3_GTES 4096u

/* streamOptimized: every grain is preceded by this marker (then `size` bytes of zlib
 * data, padded to a sector). */
struct vmdk_grain_marker {
	uint64_t lba;                 /* guest sector of the grain */
	uint32_t size;                /* compressed bytes that follow */
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_grain_marker) == 12, "grain marker is 12 bytes");

/* A metadata marker (size 0) announces a grain table, the directory, the footer or the
 * end of the stream; it fills a sector. */
struct vmdk_meta_marker {
	uint64_t num_sectors;
	uint32_t size;                /* 0 */
	uint32_t type;                /* VMDK_MARKER_* */
	uint8_t pad[496];
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_meta_marker) == 512, "metadata marker is one sector");
enum { VMDK_MARKER_EOS = 0, VMDK_MARKER_GT = 1, VMDK_MARKER_GD = 2, VMDK_MARKER_FOOTER = 3 };

/* Limits. qemu refuses grains over 0x200000 sectors and GDs over 32M entries; vtool keeps
 * grains to 16 MiB (whole grains are buffered) and a GD within its file. */
#define VMDK_MAX_GRAIN_SECTORS 32768u
#define VMDK_MAX_GD_ENTRIES    (32u << 20)
#define VMDK_MAX_EXTENTS       16384
#define VMDK_DESC_MAX          ((1u << 20) - 1) /* descriptor bytes read, as qemu */
#define VMDK_DESC_SIZE         (20u * 512)      /* descriptor area for CID/parent lookups */
#define VMDK_EXTENT_MAX_SECTORS (1ull << 32)    /* grain table entries are 32-bit sectors */
#define VMDK_MAX_RUN           16               /* whole grains written together */

struct vmdk_range {
	uint64_t start, end;          /* sectors, [start, end) */
};

struct vmdk_extent {
	struct blk_file *file;
	bool own_file;                /* opened here (closed in close); else the image file */
	char *path;                   /* the name qemu shows in info */
	char type[12];                /* descriptor type: SPARSE, FLAT, VMFS, VMFSSPARSE; "" */
	bool flat;
	uint64_t start, sectors;      /* guest sectors [start, start + sectors) */
	uint64_t flat_offset;         /* flat: bytes into the file where the extent starts */

	/* sparse */
	bool vmdk3;
	int version;
	bool compressed, has_marker, zero_grain;
	bool footer;                  /* header said "GD at end": read-only */
	uint64_t grain_sectors;
	uint32_t gtes;                /* entries per grain table */
	uint32_t gd_entries;
	uint32_t *gd, *rgd;           /* host order; rgd only for writable opens */
	uint64_t gd_offset, rgd_offset; /* sectors */
	uint64_t overhead;            /* sectors: grains start here */
	uint64_t next_sector;         /* allocation frontier */
	uint64_t end_sectors;         /* file end (grows with allocations): entries beyond fail */
	struct vmdk_range *meta;      /* header, descriptor, GD/RGD and tables; sorted */
	size_t n_meta;
};

/* What a guest grain maps to. */
enum vmdk_grain_state { VMDK_UNALLOC, VMDK_ZEROED, VMDK_DATA, VMDK_COMPRESSED };
struct vmdk_map {
	enum vmdk_grain_state state;
	uint64_t sector;              /* DATA/COMPRESSED: where the grain (or marker) is */
	bool has_gt;                  /* UNALLOC: false when the grain table itself is absent */
};

#define VMDK_GT_CACHE 64
struct vmdk_gt_slot {
	const struct vmdk_extent *ext;
	uint64_t sector;              /* where the table is; ext NULL = empty slot */
	uint64_t lru;
	uint32_t *entries;            /* host order */
};

/* streamOptimized: a partly written grain waits here (at most VMDK_MAX_PENDING) until it
 * is complete, evicted or flushed, so that a grain written in pieces (convert skips
 * zero runs inside grains) is compressed and appended once. */
#define VMDK_MAX_PENDING 32
struct vmdk_pending {
	struct vmdk_extent *ext;
	uint64_t grain;
	uint64_t seq;                 /* age: the oldest is evicted first */
	uint8_t *buf;                 /* the whole grain */
};

#define VMDK_MAX_INFLIGHT 64
struct vmdk_inflight {
	const struct vmdk_extent *ext;
	uint64_t g0, g1;              /* grains [g0, g1) */
};

struct vmdk {
	struct blk *b;
	pthread_mutex_t lock;
	pthread_cond_t cond;          /* an in-flight range ended */

	struct vmdk_extent *extents;
	int n_extents;
	char create_type[128];
	uint64_t desc_offset;         /* where the descriptor is in the image file (bytes) */
	uint32_t cid, parent_cid;
	bool cid_updated;             /* the CID was changed for this open (first write) */
	bool cid_checked;             /* the parent's CID was found to match */

	struct vmdk_gt_slot cache[VMDK_GT_CACHE];
	uint64_t lru_clock;
	struct vmdk_pending pending[VMDK_MAX_PENDING];
	int n_pending;
	uint64_t pending_seq;
	struct vmdk_inflight inflight[VMDK_MAX_INFLIGHT];
	int n_inflight;
};

static inline uint16_t vmdk_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t vmdk_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t vmdk_le64(const uint8_t *p)
{
	return (uint64_t)vmdk_le32(p) | (uint64_t)vmdk_le32(p + 4) << 32;
}
static inline void vmdk_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void vmdk_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline void vmdk_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t vmdk_grain_bytes(const struct vmdk_extent *e)
{
	return e->grain_sectors * VMDK_SECTOR;
}
/* Bytes of grain g (the extent's last grain may be short). */
static inline uint64_t vmdk_grain_len(const struct vmdk_extent *e, uint64_t g)
{
	uint64_t gb = vmdk_grain_bytes(e), total = e->sectors * VMDK_SECTOR;
	return total - g * gb < gb ? total - g * gb : gb;
}

extern const struct blk_driver blk_driver_vmdk;

/* vmdk.c */
/* Read or write [skip, skip + len) of an iovec at file offset foff. */
int vmdk_file_iov(struct blk_file *f, bool write, uint64_t foff, const struct iovec *iov,
                  int iovcnt, size_t skip, uint64_t len, struct vt_error *err);
/* The backing file's bytes at guest_off (zeros without one, or past its end). Callers
 * have checked the parent's CID (vmdk_check_parent_cid). */
int vmdk_read_backing(struct vmdk *s, uint64_t guest_off, void *buf, size_t len,
                      struct vt_error *err);
int vmdk_backing_iov(struct vmdk *s, uint64_t guest_off, const struct iovec *iov, int iovcnt,
                     size_t skip, uint64_t len, struct vt_error *err);
/* qemu's rule: data falls through to the parent only while the parent's CID is the
 * parentCID this image recorded (-EINVAL otherwise). Lock held. */
int vmdk_check_parent_cid(struct vmdk *s, struct vt_error *err);
/* In-flight grain ranges (lock held). wait blocks while [g0, g1) of e overlaps one; a
 * thread holds at most two ranges at a time, so the table cannot fill up. */
void vmdk_inflight_wait(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1);
bool vmdk_inflight_busy(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1);
int vmdk_inflight_add(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1,
                      struct vt_error *err);
void vmdk_inflight_del(struct vmdk *s, const struct vmdk_extent *e, uint64_t g0, uint64_t g1);

/* vmdk_desc.c */
/* Read a descriptor (up to VMDK_DESC_MAX bytes from off), NUL-terminated, malloc'd. */
int vmdk_desc_read(struct blk_file *f, uint64_t off, char **out, struct vt_error *err);
/* Parse a text descriptor: create type and extents (opened relative to desc_path). */
int vmdk_desc_open(struct vmdk *s, const char *desc, const char *desc_path, bool writable,
                   bool share, struct vt_error *err);
/* CID, parentCID and parentFileNameHint from the descriptor area, as qemu reads them. */
int vmdk_desc_ids(struct vmdk *s, struct vt_error *err);
/* Replace the CID in place with a fresh one of the same length. */
int vmdk_desc_new_cid(struct vmdk *s, struct vt_error *err);
/* The descriptor text qemu writes for a new image (malloc'd). */
char *vmdk_desc_build(uint32_t cid, uint32_t parent_cid, const char *create_type,
                      const char *parent_hint, const char *extent_lines, const char *hwversion,
                      uint64_t size, const char *adapter_type, const char *toolsversion);

/* vmdk_sparse.c */
/* Open a sparse extent from its first bytes (head, at least 512): header, footer, GD. */
int vmdk_sparse_open(struct vmdk_extent *e, const uint8_t *head, bool writable,
                     struct vt_error *err);
void vmdk_sparse_close(struct vmdk_extent *e);
/* Map grain g of e (lock held). Entries pointing past the file or into metadata fail. */
int vmdk_lookup(struct vmdk *s, struct vmdk_extent *e, uint64_t g, struct vmdk_map *m,
                struct vt_error *err);
/* The raw grain table entry (lock held; 0 without a table), for check. */
int vmdk_gte(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint32_t *gte,
             struct vt_error *err);
/* Is the grain at sector (grain_sectors long) outside metadata? */
bool vmdk_grain_ok(const struct vmdk_extent *e, uint64_t sector, uint64_t sectors);
/* Point grain g at value (a sector, or 1 for a zeroed grain), in the GT and its copy. */
int vmdk_set_gte(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint32_t value,
                 struct vt_error *err);
/* Reserve n sectors at the end of e (lock held). */
int vmdk_alloc(struct vmdk *s, struct vmdk_extent *e, uint64_t n, uint64_t *sector,
               struct vt_error *err);
void vmdk_cache_drop(struct vmdk *s);
/* Reads, writes and zeroing of [off, off + len) of one uncompressed sparse extent
 * (offsets relative to the extent). */
int vmdk_sparse_read(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                     const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                     struct vt_error *err);
int vmdk_sparse_write(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                      const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                      struct vt_error *err);
int vmdk_sparse_zero(struct vmdk *s, struct vmdk_extent *e, uint64_t off, uint64_t len,
                     struct vt_error *err);
int vmdk_sparse_status(struct vmdk *s, struct vmdk_extent *e, uint64_t off, uint64_t len,
                       struct blk_status *st, struct vt_error *err);
/* qemu-img check of one sparse extent: the first grain outside its file ends it. */
int vmdk_sparse_check(struct vmdk *s, struct vmdk_extent *e, struct blk_check *res,
                      void (*report)(void *, const char *), void *opaque, struct vt_error *err);

/* vmdk_stream.c */
/* Inflate the compressed grain g at sector into out (grain bytes; a short stream leaves
 * *out_len below that). */
int vmdk_stream_read_grain(struct vmdk *s, struct vmdk_extent *e, uint64_t g,
                           uint64_t sector, uint8_t *out, size_t *out_len,
                           struct vt_error *err);
int vmdk_stream_read(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                     const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                     struct vt_error *err);
int vmdk_stream_write(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                      const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                      struct vt_error *err);
/* Compress and append every pending grain. */
int vmdk_stream_flush(struct vmdk *s, struct vt_error *err);
/* Is grain g of e waiting in the pending table? (lock held) */
bool vmdk_stream_pending(struct vmdk *s, const struct vmdk_extent *e, uint64_t g);
/* Its buffer (NULL if not pending), to zero a range in place (lock held). */
uint8_t *vmdk_stream_pending_buf(struct vmdk *s, const struct vmdk_extent *e, uint64_t g);
void vmdk_stream_drop_pending(struct vmdk *s);
/* A per-thread scratch buffer of at least n bytes (freed at thread exit). */
uint8_t *vmdk_scratch(int which, size_t n);

/* vmdk_create.c */
int vmdk_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                const struct blk_optlist *opts, char **formatting, struct vt_error *err);
extern const struct blk_optdesc vmdk_create_opts[];
bool vmdk_creates_several_files(const struct blk_optlist *opts);

#endif
