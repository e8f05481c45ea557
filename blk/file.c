#include "blk/file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIRECT_ALIGN 4096u

struct blk_file {
	int fd;
	char *path;
	enum blk_cache cache;
	bool direct;
	bool writable;
	bool nolock;              /* force share (-U): no locks taken or checked */
	pthread_mutex_t rmw_lock; /* unaligned O_DIRECT writes read-modify-write a block */
	/* With O_DIRECT: a second, buffered descriptor for requests that are not aligned
	 * (qcow2's metadata updates of a few bytes). Linux keeps the two coherent: a direct
	 * read or write first writes back and drops cached pages of its range. -1 if none. */
	int bfd;
	/* Something was written, cut or allocated since the last sync through this handle
	 * (qemu's write_gen != flushed_gen): a flush with nothing new skips fdatasync. */
	atomic_bool unsynced;
	bool stream;                   /* BLK_FILE_STREAM */
	atomic_uint_fast64_t unkicked; /* bytes written since writeback was last started */
};

#define STREAM_KICK_BYTES (16u << 20)

/* After a change to the file (whether it succeeded or not): set once the change is
 * done, so that a flush begun after it returned is sure to see it. */
static void changed(struct blk_file *f)
{
	atomic_store(&f->unsynced, true);
}

const char *blk_file_name(const struct blk_file *f)
{
	return f->path;
}

bool blk_file_direct(const struct blk_file *f)
{
	return f->direct;
}

/* qemu's lock protocol: byte 100+n held shared = "I use permission n", byte 200+n held
 * shared = "nobody else may use permission n". Permissions: 0 consistent read, 1 write,
 * 2 write unchanged, 3 resize. */
enum { PERM_READ = 0, PERM_WRITE = 1, PERM_RESIZE = 3, PERM_COUNT = 4 };
static const char *const perm_names[PERM_COUNT] = { "consistent read", "write",
                                                    "write unchanged", "resize" };

static int lock_byte(int fd, off_t byte)
{
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

static bool byte_locked_by_other(int fd, off_t byte)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return false;
	return fl.l_type != F_UNLCK;
}

/* Use the permissions in `use` and deny those in `deny` to everyone else (bit masks of
 * 1 << PERM_*), refusing if another process denies what we use or uses what we deny.
 * Locks only ever get added: a handle's permissions grow (see blk_file_deny_writers). */
static int take_locks(struct blk_file *f, unsigned use, unsigned deny, struct vt_error *err)
{
	for (int p = 0; p < PERM_COUNT; p++) {
		if ((use >> p & 1) && byte_locked_by_other(f->fd, 200 + p))
			return vt_error_set(err, EAGAIN, f->path, "open",
			                    "Failed to get \"%s\" lock; is another process using the "
			                    "image?", perm_names[p]);
		if ((deny >> p & 1) && byte_locked_by_other(f->fd, 100 + p))
			return vt_error_set(err, EAGAIN, f->path, "open",
			                    "Failed to get shared \"%s\" lock; is another process "
			                    "using the image?", perm_names[p]);
	}
	for (int p = 0; p < PERM_COUNT; p++) {
		for (int kind = 0; kind < 2; kind++) {
			if (!((kind ? deny : use) >> p & 1))
				continue;
			int r = lock_byte(f->fd, (kind ? 200 : 100) + p);
			if (r == -EINVAL || r == -EOPNOTSUPP)
				return 0; /* file system without OFD locks: proceed like qemu does */
			if (r < 0)
				return vt_error_set(err, -r, f->path, "lock", NULL);
		}
	}
	return 0;
}

int blk_file_deny_writers(struct blk_file *f, struct vt_error *err)
{
	if (f->nolock)
		return 0;
	return take_locks(f, 0, 1u << PERM_WRITE | 1u << PERM_RESIZE, err);
}

int blk_file_open(const char *path, unsigned flags, enum blk_cache cache,
                  struct blk_file **out, struct vt_error *err)
{
	struct blk_file *f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		return vt_error_set(err, ENOMEM, path, "open", NULL);
	}
	f->cache = cache;
	f->writable = flags & (BLK_FILE_WRITE | BLK_FILE_CREATE);
	f->stream = f->writable && (flags & BLK_FILE_STREAM);
	f->direct = cache == BLK_CACHE_NONE || cache == BLK_CACHE_DIRECTSYNC;
	int oflags = O_CLOEXEC | (f->writable ? O_RDWR : O_RDONLY);
	if (flags & BLK_FILE_CREATE)
		oflags |= O_CREAT | O_TRUNC;
	if (cache == BLK_CACHE_WRITETHROUGH || cache == BLK_CACHE_DIRECTSYNC)
		oflags |= O_DSYNC;
	f->fd = open(path, oflags | (f->direct ? O_DIRECT : 0), 0644);
	if (f->fd < 0 && f->direct && errno == EINVAL) {
		/* tmpfs and friends refuse O_DIRECT; fall back, as the data still gets there. */
		f->direct = false;
		f->fd = open(path, oflags, 0644);
	}
	if (f->fd < 0) {
		int e = errno;
		free(f->path);
		free(f);
		return vt_error_set(err, e, path, "open", "Could not open: %s", strerror(e));
	}
	struct stat st;
	if (fstat(f->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(f->fd);
		free(f->path);
		free(f);
		return vt_error_set(err, EISDIR, path, "open", "is a directory");
	}
	pthread_mutex_init(&f->rmw_lock, NULL);
	f->bfd = f->direct ? open(path, oflags & ~(O_CREAT | O_TRUNC), 0644) : -1;
	f->nolock = flags & BLK_FILE_NOLOCK;
	if (!f->nolock) {
		/* A writer uses read, write and resize and shares neither write nor resize. */
		unsigned use = f->writable ? 1u << PERM_READ | 1u << PERM_WRITE | 1u << PERM_RESIZE
		                           : 1u << PERM_READ;
		unsigned deny = f->writable ? 1u << PERM_WRITE | 1u << PERM_RESIZE : 0;
		int r = take_locks(f, use, deny, err);
		if (r < 0) {
			blk_file_close(f);
			return r;
		}
	}
	*out = f;
	return 0;
}

void blk_file_close(struct blk_file *f)
{
	if (!f)
		return;
	close(f->fd); /* drops the OFD locks too */
	if (f->bfd >= 0)
		close(f->bfd);
	pthread_mutex_destroy(&f->rmw_lock);
	free(f->path);
	free(f);
}

static bool aligned(uint64_t off, const void *buf, size_t len)
{
	return off % DIRECT_ALIGN == 0 && len % DIRECT_ALIGN == 0 &&
	       (uintptr_t)buf % DIRECT_ALIGN == 0;
}

static int full_pread_fd(struct blk_file *f, int fd, uint64_t off, void *buf, size_t len,
                         struct vt_error *err)
{
	char *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return vt_error_set(err, errno, f->path, "read", NULL);
		}
		if (n == 0) {
			memset(p, 0, len); /* past EOF reads as zeros */
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int full_pwrite_fd_once(struct blk_file *f, int fd, uint64_t off, const void *buf,
                               size_t len, struct vt_error *err)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return vt_error_set(err, errno, f->path, "write", NULL);
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int full_pread(struct blk_file *f, uint64_t off, void *buf, size_t len,
                      struct vt_error *err)
{
	return full_pread_fd(f, f->fd, off, buf, len, err);
}

static int full_pwrite_fd(struct blk_file *f, int fd, uint64_t off, const void *buf,
                          size_t len, struct vt_error *err)
{
	int r = full_pwrite_fd_once(f, fd, off, buf, len, err);
	changed(f);
	/* The page cache would hold the whole output until the final fdatasync, which then
	 * waits for all of it (0.45 s of a 0.17 s 1 GiB convert here); started early, the
	 * writeback overlaps the conversion. Asynchronous: this does not wait for the disk. */
	if (f->stream && atomic_fetch_add(&f->unkicked, len) + len >= STREAM_KICK_BYTES) {
		atomic_store(&f->unkicked, 0);
		sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	return r;
}

static int full_pwrite(struct blk_file *f, uint64_t off, const void *buf, size_t len,
                       struct vt_error *err)
{
	return full_pwrite_fd(f, f->fd, off, buf, len, err);
}

/* O_DIRECT with an unaligned request and no buffered descriptor: go through an aligned
 * bounce buffer. */
static int bounce_io(struct blk_file *f, uint64_t off, void *rbuf, const void *wbuf,
                     size_t len, struct vt_error *err)
{
	uint64_t start = off - off % DIRECT_ALIGN;
	uint64_t end = off + len;
	end = (end + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
	size_t blen = (size_t)(end - start);
	void *b;
	int r;

	if (posix_memalign(&b, DIRECT_ALIGN, blen))
		return vt_error_set(err, ENOMEM, f->path, "read", NULL);
	if (wbuf)
		pthread_mutex_lock(&f->rmw_lock);
	r = full_pread(f, start, b, blen, err);
	if (r == 0 && rbuf)
		memcpy(rbuf, (char *)b + (off - start), len);
	if (r == 0 && wbuf) {
		memcpy((char *)b + (off - start), wbuf, len);
		uint64_t fsize;
		r = blk_file_size(f, &fsize, err);
		r = r ? r : full_pwrite(f, start, b, blen, err);
		/* Do not let the aligned write grow the file beyond what was asked. */
		if (r == 0 && end > fsize && off + len < end)
			r = blk_file_truncate(f, fsize > off + len ? fsize : off + len, err);
	}
	if (wbuf)
		pthread_mutex_unlock(&f->rmw_lock);
	free(b);
	return r;
}

int blk_file_pread(struct blk_file *f, uint64_t off, void *buf, size_t len,
                   struct vt_error *err)
{
	if (f->direct && !aligned(off, buf, len))
		return f->bfd >= 0 ? full_pread_fd(f, f->bfd, off, buf, len, err)
		                   : bounce_io(f, off, buf, NULL, len, err);
	return full_pread(f, off, buf, len, err);
}

int blk_file_pwrite(struct blk_file *f, uint64_t off, const void *buf, size_t len,
                    struct vt_error *err)
{
	if (f->direct && !aligned(off, buf, len))
		return f->bfd >= 0 ? full_pwrite_fd(f, f->bfd, off, buf, len, err)
		                   : bounce_io(f, off, NULL, buf, len, err);
	return full_pwrite(f, off, buf, len, err);
}

int blk_file_preadv(struct blk_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                    struct vt_error *err)
{
	for (int i = 0; i < iovcnt; i++) {
		int r = blk_file_pread(f, off, iov[i].iov_base, iov[i].iov_len, err);
		if (r < 0)
			return r;
		off += iov[i].iov_len;
	}
	return 0;
}

int blk_file_pwritev(struct blk_file *f, uint64_t off, const struct iovec *iov,
                     int iovcnt, struct vt_error *err)
{
	for (int i = 0; i < iovcnt; i++) {
		int r = blk_file_pwrite(f, off, iov[i].iov_base, iov[i].iov_len, err);
		if (r < 0)
			return r;
		off += iov[i].iov_len;
	}
	return 0;
}

int blk_file_flush(struct blk_file *f, struct vt_error *err)
{
	if (f->cache == BLK_CACHE_UNSAFE || !f->writable ||
	    !atomic_exchange(&f->unsynced, false))
		return 0;
	int r = blk_file_sync(f, err);
	if (r < 0)
		changed(f);
	return r;
}

int blk_file_sync(struct blk_file *f, struct vt_error *err)
{
	if (!f->writable)
		return 0;
	if (fdatasync(f->fd) < 0)
		return vt_error_set(err, errno, f->path, "flush", NULL);
	return 0;
}

int blk_file_size(struct blk_file *f, uint64_t *size, struct vt_error *err)
{
	struct stat st;
	if (fstat(f->fd, &st) < 0)
		return vt_error_set(err, errno, f->path, "stat", NULL);
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(f->fd, 0, SEEK_END);
		if (end < 0)
			return vt_error_set(err, errno, f->path, "size", NULL);
		*size = (uint64_t)end;
		return 0;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

int blk_file_truncate(struct blk_file *f, uint64_t size, struct vt_error *err)
{
	if (size > INT64_MAX)
		return vt_error_set(err, EFBIG, f->path, "resize", NULL);
	int r = ftruncate(f->fd, (off_t)size);
	int e = errno;
	changed(f);
	if (r < 0)
		return vt_error_set(err, e, f->path, "resize", "Could not resize file: %s",
		                    strerror(e));
	return 0;
}

int blk_file_allocate(struct blk_file *f, uint64_t off, uint64_t len, bool write_zeros,
                      struct vt_error *err)
{
	if (!write_zeros) {
		int r = posix_fallocate(f->fd, (off_t)off, (off_t)len);
		changed(f);
		if (r)
			return vt_error_set(err, r, f->path, "preallocate", NULL);
		return 0;
	}
	size_t chunk = 1u << 20;
	void *z;
	if (posix_memalign(&z, DIRECT_ALIGN, chunk))
		return vt_error_set(err, ENOMEM, f->path, "preallocate", NULL);
	memset(z, 0, chunk);
	int r = 0;
	while (len && r == 0) {
		size_t n = len < chunk ? (size_t)len : chunk;
		r = blk_file_pwrite(f, off, z, n, err);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

int blk_file_zero(struct blk_file *f, uint64_t off, uint64_t len, bool unmap,
                  struct vt_error *err)
{
	int mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
	uint64_t fsize;
	int r = blk_file_size(f, &fsize, err);
	if (r < 0)
		return r;
	if (off >= fsize && unmap)
		return 0; /* past EOF already reads as zeros */
	bool done = fallocate(f->fd, mode, (off_t)off, (off_t)len) == 0 ||
	            (unmap && fallocate(f->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0);
	changed(f);
	if (done)
		return 0;
	return blk_file_allocate(f, off, len, true, err);
}

int blk_file_copy_range(struct blk_file *src, uint64_t soff, struct blk_file *dst,
                        uint64_t doff, uint64_t len, struct vt_error *err)
{
	/* The buffered descriptors: O_DIRECT alignment rules do not apply to the copy. */
	int in = src->bfd >= 0 ? src->bfd : src->fd, out = dst->bfd >= 0 ? dst->bfd : dst->fd;
	while (len) {
		loff_t a = (loff_t)soff, b = (loff_t)doff;
		size_t n = len < (1u << 30) ? (size_t)len : 1u << 30;
		ssize_t got = copy_file_range(in, &a, out, &b, n, 0);
		changed(dst);
		if (got < 0) {
			int e = errno;
			return vt_error_set(err, e, dst->path, "copy_file_range", NULL);
		}
		if (got == 0) /* the source ended: what is left reads as zeros */
			return blk_file_zero(dst, doff, len, true, err);
		soff += (uint64_t)got;
		doff += (uint64_t)got;
		len -= (uint64_t)got;
	}
	return 0;
}

int blk_file_extent(struct blk_file *f, uint64_t off, uint64_t len_max, bool *data,
                    uint64_t *len, struct vt_error *err)
{
	off_t d = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (d < 0) {
		if (errno == ENXIO) { /* no data after off: a hole up to EOF and beyond */
			*data = false;
			*len = len_max;
			return 0;
		}
		*data = true; /* no SEEK_DATA support: report data */
		*len = len_max;
		return 0;
	}
	if ((uint64_t)d > off) {
		*data = false;
		*len = (uint64_t)d - off < len_max ? (uint64_t)d - off : len_max;
		return 0;
	}
	off_t h = lseek(f->fd, (off_t)off, SEEK_HOLE);
	if (h < 0)
		return vt_error_set(err, errno, f->path, "seek hole", NULL);
	*data = true;
	*len = (uint64_t)h - off < len_max ? (uint64_t)h - off : len_max;
	if (*len == 0)
		*len = len_max;
	return 0;
}

uint64_t blk_file_allocated_bytes(struct blk_file *f)
{
	struct stat st;
	if (fstat(f->fd, &st) < 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}

int blk_file_identity(struct blk_file *f, uint64_t *dev, uint64_t *ino)
{
	struct stat st;
	if (fstat(f->fd, &st) < 0)
		return -errno;
	*dev = (uint64_t)st.st_dev;
	*ino = (uint64_t)st.st_ino;
	return 0;
}
