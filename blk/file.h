/* POSIX access to an image file: whole-length reads and writes (short reads past EOF
 * fill zeros), O_DIRECT alignment through bounce buffers, flush policy by cache mode,
 * sparse-file queries and qemu-compatible OFD locks. For blk/ drivers only. */
#ifndef VTOOL_BLK_FILE_H
#define VTOOL_BLK_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blk/blk.h"

struct blk_file;

#define BLK_FILE_WRITE  0x1u
#define BLK_FILE_CREATE 0x2u  /* create or truncate to 0 */
#define BLK_FILE_NOLOCK 0x4u  /* force share: take no locks */
/* An output written once and synced at the end (convert, dd): writeback of every 16 MiB
 * written is started at once, so that the final sync finds little left to write. */
#define BLK_FILE_STREAM 0x8u

int blk_file_open(const char *path, unsigned flags, enum blk_cache cache,
                  struct blk_file **out, struct vt_error *err);
void blk_file_close(struct blk_file *f);
/* Readers of formats with metadata (everything but raw) must not let anyone write or
 * resize the file under them: take that lock too, as qemu does ("Failed to get shared
 * \"write\" lock" when someone writes). Nothing with BLK_FILE_NOLOCK. */
int blk_file_deny_writers(struct blk_file *f, struct vt_error *err);
const char *blk_file_name(const struct blk_file *f);
/* Opened with O_DIRECT (cache none/directsync, where the file system allows it). */
bool blk_file_direct(const struct blk_file *f);

int blk_file_pread(struct blk_file *f, uint64_t off, void *buf, size_t len,
                   struct vt_error *err);
int blk_file_pwrite(struct blk_file *f, uint64_t off, const void *buf, size_t len,
                    struct vt_error *err);
int blk_file_preadv(struct blk_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                    struct vt_error *err);
int blk_file_pwritev(struct blk_file *f, uint64_t off, const struct iovec *iov,
                     int iovcnt, struct vt_error *err);
/* Durable to disk, unless the cache mode is unsafe. */
int blk_file_flush(struct blk_file *f, struct vt_error *err);
/* Durable to disk whatever the cache mode (a new file about to get its final name). */
int blk_file_sync(struct blk_file *f, struct vt_error *err);
int blk_file_size(struct blk_file *f, uint64_t *size, struct vt_error *err);
int blk_file_truncate(struct blk_file *f, uint64_t size, struct vt_error *err);
/* Reserve (posix_fallocate) or write zeros into [off, off+len). */
int blk_file_allocate(struct blk_file *f, uint64_t off, uint64_t len, bool write_zeros,
                      struct vt_error *err);
/* Make the range read as zeros, deallocating it where the file system can. */
int blk_file_zero(struct blk_file *f, uint64_t off, uint64_t len, bool unmap,
                  struct vt_error *err);
/* Copy [soff, soff+len) of src to doff in dst inside the kernel (copy_file_range: a
 * reflink or an in-kernel copy). -EXDEV, -EOPNOTSUPP, -EINVAL... when the kernel cannot;
 * callers then copy through memory. */
int blk_file_copy_range(struct blk_file *src, uint64_t soff, struct blk_file *dst,
                        uint64_t doff, uint64_t len, struct vt_error *err);
/* Is [off, ...) data or hole? Sets *len to how far that holds (at most len_max). */
int blk_file_extent(struct blk_file *f, uint64_t off, uint64_t len_max, bool *data,
                    uint64_t *len, struct vt_error *err);
uint64_t blk_file_allocated_bytes(struct blk_file *f);
/* Device and inode: the same file under another name compares equal. */
int blk_file_identity(struct blk_file *f, uint64_t *dev, uint64_t *ino);

#endif
