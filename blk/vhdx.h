/* VHDX driver internals, shared by blk/vhdx.c (open, I/O, info, check), blk/vhdx-header.c
 * (headers, region table, helpers), blk/vhdx-log.c (the metadata log: replay on open, BAT
 * updates through it) and blk/vhdx-create.c.
 * Format facts: Microsoft's "VHDX Format Specification v1.00"; where qemu 7.2 reads an
 * image differently from the letter of it, we read it as qemu does.
 *
 * Layout: a 1 MiB header section (file identifier "vhdxfile", two 4 KiB headers at 64
 * and 128 KiB of which the valid one with the higher sequence number is current, two
 * copies of the region table at 192 and 256 KiB), then the regions the table and the
 * header name: the log (a circular buffer of 4 KiB sectors), the BAT and the metadata
 * region. All fields are little-endian. The BAT has one 64-bit entry per payload block,
 * with a sector-bitmap entry after every chunk_ratio of them; an entry is a 3-bit state
 * and a file offset in MiB.
 *
 * Concurrency: `lock` guards the in-memory BAT, the allocation frontier and the set of
 * blocks being allocated; it is never held across I/O other than growing the file.
 * `log_lock` orders header updates and log sessions (it is held across their I/O, and
 * taken before `lock` when both are needed). Data moves without either lock. */
#ifndef VTOOL_BLK_VHDX_H
#define VTOOL_BLK_VHDX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk/driver.h"

#define VHDX_MIB                (1u << 20)
#define VHDX_HEADER1_OFF        0x10000u
#define VHDX_HEADER2_OFF        0x20000u
#define VHDX_REGION1_OFF        0x30000u
#define VHDX_REGION2_OFF        0x40000u
#define VHDX_HEADER_SECTION_END VHDX_MIB
#define VHDX_HEADER_SIZE        4096u     /* the checksum covers all of it */
#define VHDX_REGION_SIZE        65536u
#define VHDX_METADATA_TABLE_SIZE 65536u
#define VHDX_LOG_SECTOR         4096u
#define VHDX_LOG_MIN            VHDX_MIB
#define VHDX_BLOCK_MIN          VHDX_MIB
#define VHDX_BLOCK_MAX          (256u * VHDX_MIB)
#define VHDX_MAX_SIZE           (64ull << 40)
#define VHDX_MAX_SECTORS_PER_BLOCK (1u << 23)

/* BAT entry: state in the low 3 bits, file offset in MiB in the top 44. */
#define VHDX_BAT_STATE_MASK     7ull
#define VHDX_BAT_OFFSET_MASK    0xfffffffffff00000ull
#define VHDX_BLOCK_NOT_PRESENT  0
#define VHDX_BLOCK_UNDEFINED    1
#define VHDX_BLOCK_ZERO         2
#define VHDX_BLOCK_UNMAPPED_OLD 3  /* "unmapped" before the 1.0 specification */
#define VHDX_BLOCK_UNMAPPED     5
#define VHDX_BLOCK_FULLY_PRESENT 6
#define VHDX_BLOCK_PARTIALLY_PRESENT 7

/* The current header (first 80 bytes of a 4 KiB block). */
struct vhdx_header_disk {
	char signature[4];          /* "head" */
	uint32_t checksum;          /* CRC-32C of the 4 KiB, this field as zero */
	uint64_t sequence;
	uint8_t file_write_guid[16];
	uint8_t data_write_guid[16];
	uint8_t log_guid[16];       /* zero: no log to replay */
	uint16_t log_version;       /* 0 */
	uint16_t version;           /* 1 */
	uint32_t log_length;        /* a multiple of 1 MiB */
	uint64_t log_offset;        /* a multiple of 1 MiB */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_header_disk) == 80, "VHDX header fields are 80 bytes");
#define VHDX_HDR_OFF(f) offsetof(struct vhdx_header_disk, f)

struct vhdx_region_header_disk {
	char signature[4];          /* "regi" */
	uint32_t checksum;          /* CRC-32C of the 64 KiB table */
	uint32_t entry_count;       /* at most 2047 */
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_region_header_disk) == 16, "region table header");

struct vhdx_region_entry_disk {
	uint8_t guid[16];
	uint64_t file_offset;
	uint32_t length;
	uint32_t flags;             /* bit 0: required */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_region_entry_disk) == 32, "region table entry");

struct vhdx_metadata_header_disk {
	char signature[8];          /* "metadata" */
	uint16_t reserved;
	uint16_t entry_count;
	uint32_t reserved2[5];
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_metadata_header_disk) == 32, "metadata table header");

struct vhdx_metadata_entry_disk {
	uint8_t item_id[16];
	uint32_t offset;            /* from the region's start, >= 64 KiB */
	uint32_t length;
	uint32_t flags;             /* 1 user, 2 virtual disk, 4 required */
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_metadata_entry_disk) == 32, "metadata table entry");

struct vhdx_log_entry_header_disk {
	char signature[4];          /* "loge" */
	uint32_t checksum;          /* CRC-32C of the whole entry */
	uint32_t entry_length;      /* a multiple of 4 KiB */
	uint32_t tail;              /* log offset of the sequence's first entry */
	uint64_t sequence;          /* non-zero, +1 per entry */
	uint32_t descriptor_count;
	uint32_t reserved;
	uint8_t log_guid[16];       /* must match the header's */
	uint64_t flushed_file_offset;
	uint64_t last_file_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_log_entry_header_disk) == 64, "log entry header");
#define VHDX_LOGE_OFF(f) offsetof(struct vhdx_log_entry_header_disk, f)

struct vhdx_log_descriptor_disk {
	char signature[4];          /* "desc" (a data sector follows) or "zero" */
	uint32_t trailing_bytes;    /* data: the sector's last 4 bytes; zero: reserved */
	uint64_t leading_bytes;     /* data: the sector's first 8 bytes; zero: length */
	uint64_t file_offset;       /* a multiple of 4 KiB */
	uint64_t sequence;          /* the entry's */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_log_descriptor_disk) == 32, "log descriptor");

struct vhdx_log_data_sector_disk {
	char signature[4];          /* "data" */
	uint32_t sequence_high;
	uint8_t data[4084];         /* bytes 8..4091 of the target sector */
	uint32_t sequence_low;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_log_data_sector_disk) == VHDX_LOG_SECTOR, "log data sector");

struct vhdx_file_parameters_disk {
	uint32_t block_size;
	uint32_t flags;             /* 1 leave blocks allocated (fixed), 2 has parent */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_file_parameters_disk) == 8, "file parameters");

/* Region and metadata item GUIDs, as their bytes lie on disk. */
extern const uint8_t vhdx_guid_bat[16], vhdx_guid_metadata[16];
extern const uint8_t vhdx_guid_file_params[16], vhdx_guid_virtual_size[16],
	vhdx_guid_page83[16], vhdx_guid_logical_sector[16], vhdx_guid_physical_sector[16],
	vhdx_guid_parent_locator[16];

struct vhdx_range {
	uint64_t start, end;
};

struct vhdx {
	struct blk *b;
	pthread_mutex_t lock;
	pthread_cond_t allocated;       /* an allocation finished */
	pthread_mutex_t log_lock;
	uint8_t hdr[2][VHDX_HEADER_SIZE]; /* both headers as read (or last written) */
	int cur;                        /* index of the current header */
	uint64_t log_offset;
	uint32_t log_length;
	/* Log, BAT, metadata and other regions: payload blocks must stay off them. */
	struct vhdx_range *regions;
	int nregions;
	uint64_t bat_offset;
	uint32_t bat_length;
	uint64_t meta_offset;
	uint32_t block_size;
	uint32_t chunk_ratio;           /* payload blocks per sector-bitmap block */
	unsigned block_bits, chunk_bits;
	bool fixed;                     /* "leave blocks allocated" */
	uint64_t *bat;                  /* host order */
	uint32_t bat_entries;           /* as qemu counts them */
	uint64_t file_end;              /* new blocks go at or after this */
	uint32_t *pending;              /* BAT indexes being allocated */
	size_t npending, pending_cap;
	bool data_guid_new;             /* this session renewed the data write GUID */
	uint8_t session_guid[16];       /* our file write GUID */
	uint64_t log_seq;               /* next log entry's sequence number */
	bool replayed;                  /* the log was replayed on open */
	/* BAT entries that point where they must not; only an open for `img check` lets
	 * them through (as qemu's BDRV_O_CHECK does), and I/O to them fails. */
	uint32_t bad_entries;
	uint8_t *bad;                   /* a bit per BAT entry, NULL when none is bad */
};

static inline uint16_t vhdx_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t vhdx_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t vhdx_le64(const uint8_t *p)
{
	return vhdx_le32(p) | (uint64_t)vhdx_le32(p + 4) << 32;
}
static inline void vhdx_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void vhdx_put_le32(uint8_t *p, uint32_t v)
{
	vhdx_put_le16(p, (uint16_t)v);
	vhdx_put_le16(p + 2, (uint16_t)(v >> 16));
}
static inline void vhdx_put_le64(uint8_t *p, uint64_t v)
{
	vhdx_put_le32(p, (uint32_t)v);
	vhdx_put_le32(p + 4, (uint32_t)(v >> 32));
}

/* vhdx-header.c: helpers, the header section.
 * CRC-32C (Castagnoli), continuing from crc (start with 0xffffffff; the stored value is
 * the final one xor 0xffffffff). */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);
/* The stored checksum of buf with its 4-byte checksum field at `field` taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t field);
void vhdx_random_guid(uint8_t guid[16]);
/* Payload blocks, sector-bitmap blocks and BAT entries for a disk, as qemu counts them
 * (in 32 bits: an empty disk wraps to a large count, and qemu sizes its BAT that way). */
uint32_t vhdx_bat_entries(uint64_t disk_size, uint32_t block_size, unsigned chunk_bits);

/* Write the non-current header from the current one with the next sequence number, a new
 * file write GUID (this session's), optionally a new data write GUID and log GUID (NULL:
 * keep), then make it current. Called with log_lock held (or before others run). */
int vhdx_update_header(struct vhdx *s, bool new_data_guid, const uint8_t *log_guid,
                       struct vt_error *err);
/* Both headers, as the specification asks of a writer. */
int vhdx_update_headers(struct vhdx *s, bool new_data_guid, const uint8_t *log_guid,
                        struct vt_error *err);
/* Before the first change a guest could see: a new data write GUID (once per open). */
int vhdx_user_visible_write(struct vhdx *s, struct vt_error *err);

/* Reads both headers and picks the current one (the valid one with the higher number). */
int vhdx_open_headers(struct vhdx *s, struct vt_error *err);
/* Reads the region table (after the log is replayed): BAT and metadata regions. */
int vhdx_open_region_table(struct vhdx *s, struct vt_error *err);
/* Does [start, start+len) meet a region (the log, the BAT, the metadata, ...)? */
bool vhdx_overlaps(const struct vhdx *s, uint64_t start, uint64_t len, int *which);

/* vhdx-log.c. On open, after the headers: find the active log sequence, if any; replay
 * it on a writable handle (*replayed set), refuse a read-only one. */
int vhdx_log_open(struct vhdx *s, bool *replayed, struct vt_error *err);
/* Write len bytes at file offset off (inside one metadata region) through the log: a log
 * entry, flushed, then the write in place, flushed, then an empty log again. */
int vhdx_log_write(struct vhdx *s, uint64_t off, const void *buf, size_t len,
                   struct vt_error *err);

/* vhdx-create.c */
extern const struct blk_optdesc vhdx_create_opts[];
int vhdx_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                const struct blk_optlist *opts, char **formatting, struct vt_error *err);

#endif
