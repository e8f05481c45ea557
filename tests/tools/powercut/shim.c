/* powercut shim: an LD_PRELOAD library that records, for chosen files, every completed
 * write and every durability event, so that tests/tools/powercut/powercut.py can rebuild
 * the states a power cut could leave on the disk.
 *
 * Environment:
 *   POWERCUT_TARGET  colon-separated absolute paths. A path ending in '/' names a
 *                    directory: every regular file directly inside it is a target.
 *                    The directories holding targets are watched too (fsync of a
 *                    directory fd is a durability event for renames and creates).
 *   POWERCUT_LOG     the log file (appended to; one record per write(2) call on it, so
 *                    records of concurrent threads or processes never interleave).
 * Without both variables every call passes straight through.
 *
 * Log format (all integers little-endian, x86-64 host order):
 *   a sequence of records, each a 40-byte header followed by `len` payload bytes:
 *     u32 type, u32 fid, u64 a, u64 b, u32 c, u32 tid, u32 len, u32 pid
 *   fid numbers the files of one process (pid) from 1; fid 0 means "every file".
 *   type                 a, b, c                        payload
 *   1  OPEN              open flags, 1 if created, -    u64 st_dev, u64 st_ino, path
 *   2  WRITE             file offset, flags*, -         the bytes written
 *   3  TRUNC             new size, -, -                 -
 *   4  FALLOC            offset, length, mode**         -
 *   5  SYNC_BEGIN        off, len (0,0 = whole), kind   -
 *   6  SYNC_END          same as its BEGIN              -
 *   7  SYNC_FAIL         same, c = kind, b = errno      -
 *   8  CLOSE             -                              -
 *   9  RENAME            st_dev, st_ino of the source,  "old\0new\0" (absolute)
 *                        c = renameat2 flags
 *   10 UNLINK            st_dev, st_ino                 path
 *   11 DIRSYNC_BEGIN     -                              directory path
 *   12 DIRSYNC_END       -                              directory path
 *   * WRITE flags: bit 0 = synchronous (O_DSYNC/O_SYNC descriptor or RWF_DSYNC/RWF_SYNC):
 *     durable when it completes.
 *   ** FALLOC mode: fallocate(2)'s mode bits (0 for posix_fallocate).
 *   SYNC kind: 0 fsync, 1 fdatasync, 2 sync_file_range (not a durability barrier: it
 *   neither flushes the disk cache nor metadata), 3 syncfs/sync (every file).
 *
 * Writes are logged after the system call returns (completion order) with the bytes
 * actually written; a sync is logged BEGIN before the call and END after it succeeds.
 * Covered calls: open/open64/openat/openat64 (and the _FORTIFY_SOURCE __open*_2 forms),
 * creat/creat64, dup/dup2/dup3, fcntl/fcntl64 (F_DUPFD, F_DUPFD_CLOEXEC), close,
 * pwrite/pwrite64, pwritev/pwritev64/pwritev2/pwritev64v2, write/writev (at the file
 * position), ftruncate/ftruncate64/truncate/truncate64, fallocate/fallocate64,
 * posix_fallocate/posix_fallocate64, copy_file_range (the bytes are read back from the
 * source), fsync/fdatasync/sync_file_range/syncfs/sync, rename/renameat/renameat2,
 * unlink/unlinkat. Not covered: writes through mmap, io_uring or Linux AIO (the
 * writers under test are run with thread-pool or synchronous I/O), stdio streams.
 * Files are identified by (st_dev, st_ino), so two descriptors of one file (vtool opens
 * an O_DIRECT and a buffered one) share one fid, and a sync on either covers both. */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
	PC_OPEN = 1, PC_WRITE, PC_TRUNC, PC_FALLOC, PC_SYNC_BEGIN, PC_SYNC_END, PC_SYNC_FAIL,
	PC_CLOSE, PC_RENAME, PC_UNLINK, PC_DIRSYNC_BEGIN, PC_DIRSYNC_END,
};
enum { SYNC_FSYNC, SYNC_FDATASYNC, SYNC_RANGE, SYNC_ALL };

struct pc_rec {
	uint32_t type, fid;
	uint64_t a, b;
	uint32_t c, tid, len, pid;
};
_Static_assert(sizeof(struct pc_rec) == 40, "log record header is 40 bytes");

/* The entry points, declared here for the forms glibc's headers hide. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
int fcntl64(int fd, int cmd, ...);

/* ---- the real functions ---- */

#define REAL(name) static __typeof__(&name) real_##name
#define LOAD(name)                                                                   \
	do {                                                                         \
		if (!real_##name) {                                                  \
			union { void *p; __typeof__(real_##name) f; } u_;            \
			u_.p = dlsym(RTLD_NEXT, #name);                              \
			real_##name = u_.f;                                          \
		}                                                                    \
	} while (0)

REAL(open); REAL(open64); REAL(openat); REAL(openat64);
REAL(__open_2); REAL(__open64_2); REAL(__openat_2); REAL(__openat64_2);
REAL(creat); REAL(creat64); REAL(dup); REAL(dup2); REAL(dup3);
REAL(fcntl); REAL(fcntl64); REAL(close);
REAL(pwrite); REAL(pwrite64); REAL(pwritev); REAL(pwritev64); REAL(pwritev2);
REAL(pwritev64v2); REAL(write); REAL(writev);
REAL(ftruncate); REAL(ftruncate64); REAL(truncate); REAL(truncate64);
REAL(fallocate); REAL(fallocate64); REAL(posix_fallocate); REAL(posix_fallocate64);
REAL(copy_file_range); REAL(fsync); REAL(fdatasync); REAL(sync_file_range);
REAL(syncfs); REAL(sync); REAL(rename); REAL(renameat); REAL(renameat2);
REAL(unlink); REAL(unlinkat);

/* ---- state ---- */

#define FDMAX 65536
#define MAXFILES 4096
#define MAXDIRS 64

static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
static int enabled;
static int logfd = -1;
static char **targets;    /* absolute; a trailing '/' marks a directory target */
static int ntargets;
static char *dirs[MAXDIRS]; /* directories holding targets, no trailing '/' */
static int ndirs;
/* fd -> fid (> 0) of a tracked file, -(index + 1) of a watched directory, 0 untracked.
 * Read without the lock: an fd's entry changes only while that fd is being opened or
 * closed, which its owner serialises. */
static int fdtab[FDMAX];
static unsigned char fdsync[FDMAX]; /* opened O_DSYNC/O_SYNC */
static struct { dev_t dev; ino_t ino; } files[MAXFILES + 1];
static int nfiles;

static int tab_get(int fd)
{
	if (fd < 0 || fd >= FDMAX)
		return 0;
	return __atomic_load_n(&fdtab[fd], __ATOMIC_ACQUIRE);
}

static void tab_set(int fd, int v, int sync)
{
	if (fd < 0 || fd >= FDMAX)
		return;
	fdsync[fd] = (unsigned char)sync;
	__atomic_store_n(&fdtab[fd], v, __ATOMIC_RELEASE);
}

static void load_all(void)
{
	LOAD(open); LOAD(open64); LOAD(openat); LOAD(openat64);
	LOAD(__open_2); LOAD(__open64_2); LOAD(__openat_2); LOAD(__openat64_2);
	LOAD(creat); LOAD(creat64); LOAD(dup); LOAD(dup2); LOAD(dup3);
	LOAD(fcntl); LOAD(fcntl64); LOAD(close);
	LOAD(pwrite); LOAD(pwrite64); LOAD(pwritev); LOAD(pwritev64); LOAD(pwritev2);
	LOAD(pwritev64v2); LOAD(write); LOAD(writev);
	LOAD(ftruncate); LOAD(ftruncate64); LOAD(truncate); LOAD(truncate64);
	LOAD(fallocate); LOAD(fallocate64); LOAD(posix_fallocate); LOAD(posix_fallocate64);
	LOAD(copy_file_range); LOAD(fsync); LOAD(fdatasync); LOAD(sync_file_range);
	LOAD(syncfs); LOAD(sync); LOAD(rename); LOAD(renameat); LOAD(renameat2);
	LOAD(unlink); LOAD(unlinkat);
}

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
#define ENSURE() pthread_once(&load_once, load_all)

static void add_dir(const char *d, size_t n)
{
	if (n == 0)
		n = 1; /* "/" */
	for (int i = 0; i < ndirs; i++)
		if (strlen(dirs[i]) == n && !strncmp(dirs[i], d, n))
			return;
	if (ndirs < MAXDIRS)
		dirs[ndirs++] = strndup(d, n);
}

__attribute__((constructor)) static void pc_init(void)
{
	ENSURE();
	const char *t = getenv("POWERCUT_TARGET"), *l = getenv("POWERCUT_LOG");
	if (!t || !*t || !l || !*l)
		return;
	char *copy = strdup(t);
	int cap = 1;
	for (const char *p = t; *p; p++)
		cap += *p == ':';
	targets = calloc((size_t)cap, sizeof(*targets));
	if (!copy || !targets)
		return;
	for (char *save = NULL, *s = strtok_r(copy, ":", &save); s; s = strtok_r(NULL, ":", &save)) {
		if (s[0] != '/')
			continue;
		targets[ntargets++] = s;
		size_t n = strlen(s);
		if (s[n - 1] == '/')
			add_dir(s, n - 1);
		else
			add_dir(s, (size_t)(strrchr(s, '/') - s));
	}
	logfd = real_open(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	enabled = logfd >= 0 && ntargets > 0;
}

/* Is the absolute path p a target file? */
static int match(const char *p)
{
	size_t n = strlen(p);
	for (int i = 0; i < ntargets; i++) {
		size_t m = strlen(targets[i]);
		if (targets[i][m - 1] == '/') {
			if (n > m && !strncmp(p, targets[i], m) && !strchr(p + m, '/'))
				return 1;
		} else if (!strcmp(p, targets[i])) {
			return 1;
		}
	}
	return 0;
}

static int match_dir(const char *p)
{
	for (int i = 0; i < ndirs; i++)
		if (!strcmp(p, dirs[i]))
			return i;
	return -1;
}

/* ---- the log ---- */

struct part {
	const void *p;
	size_t n;
};

static void emit_locked(uint32_t type, uint32_t fid, uint64_t a, uint64_t b, uint32_t c,
                        const struct part *parts, int nparts)
{
	size_t len = 0;
	for (int i = 0; i < nparts; i++)
		len += parts[i].n;
	if (len > UINT32_MAX)
		abort(); /* callers split; a single record never exceeds 4 GiB */
	char *buf = malloc(sizeof(struct pc_rec) + len);
	if (!buf)
		abort();
	struct pc_rec r = { .type = type, .fid = fid, .a = a, .b = b, .c = c,
	                    .tid = (uint32_t)gettid(), .len = (uint32_t)len,
	                    .pid = (uint32_t)getpid() };
	memcpy(buf, &r, sizeof(r));
	size_t off = sizeof(r);
	for (int i = 0; i < nparts; i++) {
		memcpy(buf + off, parts[i].p, parts[i].n);
		off += parts[i].n;
	}
	size_t done = 0;
	while (done < off) {
		ssize_t w = real_write(logfd, buf + done, off - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			abort(); /* a lost record would silently weaken every later verdict */
		done += (size_t)w;
	}
	free(buf);
}

static void emit(uint32_t type, uint32_t fid, uint64_t a, uint64_t b, uint32_t c,
                 const struct part *parts, int nparts)
{
	pthread_mutex_lock(&lk);
	emit_locked(type, fid, a, b, c, parts, nparts);
	pthread_mutex_unlock(&lk);
}

/* fid of (dev, ino), assigned on first sight. Call with lk held. */
static int fid_of(dev_t dev, ino_t ino, int *fresh)
{
	for (int i = 1; i <= nfiles; i++)
		if (files[i].dev == dev && files[i].ino == ino) {
			*fresh = 0;
			return i;
		}
	if (nfiles >= MAXFILES)
		abort();
	nfiles++;
	files[nfiles].dev = dev;
	files[nfiles].ino = ino;
	*fresh = 1;
	return nfiles;
}

static int fd_path(int fd, char *out, size_t n)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t r = readlink(link, out, n - 1);
	if (r < 0 || (size_t)r >= n - 1)
		return -1;
	out[r] = 0;
	return 0;
}

/* out = a + "/" + b, cut short (and so never matching a target) if too long. */
static void join(char *out, size_t n, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la + 1 + lb >= n) {
		out[0] = 0;
		return;
	}
	memcpy(out, a, la);
	out[la] = '/';
	memcpy(out + la + 1, b, lb + 1);
}

/* Absolute path of (dirfd, path) with the directory part resolved. */
static void resolve(int dirfd, const char *path, char *out, size_t n)
{
	char joined[PATH_MAX], base[PATH_MAX], dir[PATH_MAX];
	if (path[0] == '/') {
		join(joined, sizeof(joined), "", path + 1);
	} else {
		if (dirfd == AT_FDCWD) {
			if (!getcwd(base, sizeof(base)))
				base[0] = 0;
		} else if (fd_path(dirfd, base, sizeof(base)) < 0) {
			base[0] = 0;
		}
		join(joined, sizeof(joined), base, path);
	}
	char *slash = strrchr(joined, '/');
	if (!slash) {
		out[0] = 0;
		return;
	}
	*slash = 0;
	const char *leaf = slash + 1;
	if (realpath(joined[0] ? joined : "/", dir))
		join(out, n, strcmp(dir, "/") ? dir : "", leaf);
	else
		join(out, n, joined, leaf);
}

/* After a successful open: track fd if it is a target file or a watched directory. */
static void post_open(int fd, int flags, int created)
{
	char path[PATH_MAX];
	struct stat st;
	if (!enabled || fd < 0 || fd >= FDMAX || fd_path(fd, path, sizeof(path)) < 0 ||
	    fstat(fd, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		int d = match_dir(path);
		if (d >= 0)
			tab_set(fd, -(d + 1), 0);
		return;
	}
	if (!S_ISREG(st.st_mode) || !match(path))
		return;
	pthread_mutex_lock(&lk);
	int fresh;
	int fid = fid_of(st.st_dev, st.st_ino, &fresh);
	uint64_t id[2] = { (uint64_t)st.st_dev, (uint64_t)st.st_ino };
	struct part parts[2] = { { id, sizeof(id) }, { path, strlen(path) } };
	emit_locked(PC_OPEN, (uint32_t)fid, (uint64_t)(unsigned)flags, (uint64_t)created, 0, parts, 2);
	if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY)
		emit_locked(PC_TRUNC, (uint32_t)fid, 0, 0, 0, NULL, 0);
	tab_set(fd, fid, (flags & O_DSYNC) != 0);
	pthread_mutex_unlock(&lk);
}

/* Before an open with O_CREAT: does the file exist already? */
static int pre_exists(int dirfd, const char *path, int flags)
{
	struct stat st;
	if (!enabled || !(flags & O_CREAT))
		return 1;
	return fstatat(dirfd, path, &st, 0) == 0;
}

static int needs_mode(int flags)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

/* ---- open and friends ---- */

#define OPEN_BODY(realcall)                                                          \
	int created_ = !pre_exists(AT_FDCWD, path, flags);                          \
	int fd_ = (realcall);                                                        \
	int e_ = errno;                                                              \
	post_open(fd_, flags, created_);                                             \
	errno = e_;                                                                  \
	return fd_

#define OPENAT_BODY(realcall)                                                        \
	int created_ = !pre_exists(dirfd, path, flags);                             \
	int fd_ = (realcall);                                                        \
	int e_ = errno;                                                              \
	post_open(fd_, flags, created_);                                             \
	errno = e_;                                                                  \
	return fd_

static mode_t va_mode(int flags, va_list ap)
{
	return needs_mode(flags) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_mode(flags, ap);
	va_end(ap);
	ENSURE();
	OPEN_BODY(real_open(path, flags, mode));
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_mode(flags, ap);
	va_end(ap);
	ENSURE();
	OPEN_BODY(real_open64(path, flags, mode));
}

int __open_2(const char *path, int flags)
{
	ENSURE();
	OPEN_BODY(real___open_2(path, flags));
}

int __open64_2(const char *path, int flags)
{
	ENSURE();
	OPEN_BODY(real___open64_2(path, flags));
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_mode(flags, ap);
	va_end(ap);
	ENSURE();
	OPENAT_BODY(real_openat(dirfd, path, flags, mode));
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_mode(flags, ap);
	va_end(ap);
	ENSURE();
	OPENAT_BODY(real_openat64(dirfd, path, flags, mode));
}

int __openat_2(int dirfd, const char *path, int flags)
{
	ENSURE();
	OPENAT_BODY(real___openat_2(dirfd, path, flags));
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	ENSURE();
	OPENAT_BODY(real___openat64_2(dirfd, path, flags));
}

int creat(const char *path, mode_t mode)
{
	int flags = O_CREAT | O_WRONLY | O_TRUNC;
	ENSURE();
	OPEN_BODY(real_creat(path, mode));
}

int creat64(const char *path, mode_t mode)
{
	int flags = O_CREAT | O_WRONLY | O_TRUNC;
	ENSURE();
	OPEN_BODY(real_creat64(path, mode));
}

/* ---- descriptors ---- */

static void inherit(int newfd, int oldfd)
{
	int v = tab_get(oldfd);
	if (newfd >= 0 && v)
		tab_set(newfd, v, fdsync[oldfd]);
}

int dup(int fd)
{
	ENSURE();
	int r = real_dup(fd);
	int e = errno;
	inherit(r, fd);
	errno = e;
	return r;
}

/* dup2/dup3 onto a tracked descriptor closes it: hold the lock so that the number is not
 * reused (and tracked) by another thread before our table says so. */
#define DUP2_BODY(realcall)                                                          \
	int locked_ = enabled && newfd != oldfd && tab_get(newfd) != 0;              \
	if (locked_)                                                                 \
		pthread_mutex_lock(&lk);                                             \
	int old_ = tab_get(newfd);                                                   \
	int r_ = (realcall);                                                         \
	int e_ = errno;                                                              \
	if (r_ >= 0 && newfd != oldfd) {                                             \
		if (old_ > 0)                                                        \
			emit_locked(PC_CLOSE, (uint32_t)old_, 0, 0, 0, NULL, 0);     \
		tab_set(newfd, 0, 0);                                                \
		inherit(newfd, oldfd);                                               \
	}                                                                            \
	if (locked_)                                                                 \
		pthread_mutex_unlock(&lk);                                           \
	errno = e_;                                                                  \
	return r_

int dup2(int oldfd, int newfd)
{
	ENSURE();
	DUP2_BODY(real_dup2(oldfd, newfd));
}

int dup3(int oldfd, int newfd, int flags)
{
	ENSURE();
	DUP2_BODY(real_dup3(oldfd, newfd, flags));
}

static int is_dupfd(int cmd)
{
	return cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC;
}

int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ENSURE();
	int r = real_fcntl(fd, cmd, arg);
	int e = errno;
	if (is_dupfd(cmd))
		inherit(r, fd);
	errno = e;
	return r;
}

int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ENSURE();
	int r = (real_fcntl64 ? real_fcntl64 : real_fcntl)(fd, cmd, arg);
	int e = errno;
	if (is_dupfd(cmd))
		inherit(r, fd);
	errno = e;
	return r;
}

int close(int fd)
{
	ENSURE();
	int v = tab_get(fd);
	if (!v)
		return real_close(fd);
	pthread_mutex_lock(&lk);
	int r = real_close(fd);
	int e = errno;
	tab_set(fd, 0, 0);
	if (v > 0)
		emit_locked(PC_CLOSE, (uint32_t)v, 0, 0, 0, NULL, 0);
	pthread_mutex_unlock(&lk);
	errno = e;
	return r;
}

/* ---- writes ---- */

static int file_fid(int fd)
{
	int v = enabled ? tab_get(fd) : 0;
	return v > 0 ? v : 0;
}

static void log_write(int fd, int fid, uint64_t off, const void *buf, size_t n, int sync)
{
	const char *p = buf;
	uint64_t flags = (uint64_t)(sync || fdsync[fd]);
	while (n) {
		size_t k = n > (1u << 30) ? (1u << 30) : n;
		struct part part = { p, k };
		emit(PC_WRITE, (uint32_t)fid, off, flags, 0, &part, 1);
		p += k;
		off += k;
		n -= k;
	}
}

static void log_writev(int fd, int fid, uint64_t off, const struct iovec *iov, int cnt,
                       size_t n, int sync)
{
	char *buf = malloc(n ? n : 1);
	if (!buf)
		abort();
	size_t got = 0;
	for (int i = 0; i < cnt && got < n; i++) {
		size_t k = iov[i].iov_len < n - got ? iov[i].iov_len : n - got;
		memcpy(buf + got, iov[i].iov_base, k);
		got += k;
	}
	log_write(fd, fid, off, buf, n, sync);
	free(buf);
}

/* The file position after a write of n bytes at the current position, minus n. */
static uint64_t pos_before(int fd, size_t n)
{
	off_t end = lseek(fd, 0, SEEK_CUR);
	return end < 0 ? 0 : (uint64_t)end - n;
}

#define PWRITE_BODY(realcall)                                                        \
	int fid_ = file_fid(fd);                                                     \
	ssize_t r_ = (realcall);                                                     \
	if (fid_ && r_ > 0) {                                                        \
		int e_ = errno;                                                      \
		log_write(fd, fid_, (uint64_t)off, buf, (size_t)r_, 0);              \
		errno = e_;                                                          \
	}                                                                            \
	return r_

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	ENSURE();
	PWRITE_BODY(real_pwrite(fd, buf, n, off));
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	ENSURE();
	PWRITE_BODY(real_pwrite64(fd, buf, n, off));
}

#define PWRITEV_BODY(realcall, offexpr, sync)                                        \
	int fid_ = file_fid(fd);                                                     \
	ssize_t r_ = (realcall);                                                     \
	if (fid_ && r_ > 0) {                                                        \
		int e_ = errno;                                                      \
		log_writev(fd, fid_, (offexpr), iov, cnt, (size_t)r_, (sync));       \
		errno = e_;                                                          \
	}                                                                            \
	return r_

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	ENSURE();
	PWRITEV_BODY(real_pwritev(fd, iov, cnt, off), (uint64_t)off, 0);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
	ENSURE();
	PWRITEV_BODY(real_pwritev64(fd, iov, cnt, off), (uint64_t)off, 0);
}

static int rwf_sync(int flags)
{
#ifdef RWF_DSYNC
	if (flags & RWF_DSYNC)
		return 1;
#endif
#ifdef RWF_SYNC
	if (flags & RWF_SYNC)
		return 1;
#endif
	return 0;
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	ENSURE();
	PWRITEV_BODY(real_pwritev2(fd, iov, cnt, off, flags),
	             off == -1 ? pos_before(fd, (size_t)r_) : (uint64_t)off, rwf_sync(flags));
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags)
{
	ENSURE();
	PWRITEV_BODY(real_pwritev64v2(fd, iov, cnt, off, flags),
	             off == -1 ? pos_before(fd, (size_t)r_) : (uint64_t)off, rwf_sync(flags));
}

ssize_t write(int fd, const void *buf, size_t n)
{
	ENSURE();
	int fid = file_fid(fd);
	ssize_t r = real_write(fd, buf, n);
	if (fid && r > 0) {
		int e = errno;
		log_write(fd, fid, pos_before(fd, (size_t)r), buf, (size_t)r, 0);
		errno = e;
	}
	return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	ENSURE();
	PWRITEV_BODY(real_writev(fd, iov, cnt), pos_before(fd, (size_t)r_), 0);
}

/* ---- size changes ---- */

#define TRUNC_BODY(realcall)                                                         \
	int fid_ = file_fid(fd);                                                     \
	int r_ = (realcall);                                                         \
	if (fid_ && r_ == 0) {                                                       \
		int e_ = errno;                                                      \
		emit(PC_TRUNC, (uint32_t)fid_, (uint64_t)len, 0, 0, NULL, 0);        \
		errno = e_;                                                          \
	}                                                                            \
	return r_

int ftruncate(int fd, off_t len)
{
	ENSURE();
	TRUNC_BODY(real_ftruncate(fd, len));
}

int ftruncate64(int fd, off64_t len)
{
	ENSURE();
	TRUNC_BODY(real_ftruncate64(fd, len));
}

/* truncate(2) by name: the file gets a fid through its (dev, ino). */
static void log_path_trunc(const char *path, uint64_t len)
{
	char abs[PATH_MAX];
	struct stat st;
	resolve(AT_FDCWD, path, abs, sizeof(abs));
	if (!match(abs) || stat(abs, &st) < 0)
		return;
	pthread_mutex_lock(&lk);
	int fresh;
	int fid = fid_of(st.st_dev, st.st_ino, &fresh);
	if (fresh) {
		uint64_t id[2] = { (uint64_t)st.st_dev, (uint64_t)st.st_ino };
		struct part parts[2] = { { id, sizeof(id) }, { abs, strlen(abs) } };
		emit_locked(PC_OPEN, (uint32_t)fid, O_WRONLY, 0, 0, parts, 2);
	}
	emit_locked(PC_TRUNC, (uint32_t)fid, len, 0, 0, NULL, 0);
	pthread_mutex_unlock(&lk);
}

int truncate(const char *path, off_t len)
{
	ENSURE();
	int r = real_truncate(path, len);
	int e = errno;
	if (enabled && r == 0)
		log_path_trunc(path, (uint64_t)len);
	errno = e;
	return r;
}

int truncate64(const char *path, off64_t len)
{
	ENSURE();
	int r = real_truncate64(path, len);
	int e = errno;
	if (enabled && r == 0)
		log_path_trunc(path, (uint64_t)len);
	errno = e;
	return r;
}

#define FALLOC_BODY(realcall, ok, modev)                                             \
	int fid_ = file_fid(fd);                                                     \
	int r_ = (realcall);                                                         \
	if (fid_ && (ok)) {                                                          \
		int e_ = errno;                                                      \
		emit(PC_FALLOC, (uint32_t)fid_, (uint64_t)off, (uint64_t)len,        \
		     (uint32_t)(modev), NULL, 0);                                    \
		errno = e_;                                                          \
	}                                                                            \
	return r_

int fallocate(int fd, int mode, off_t off, off_t len)
{
	ENSURE();
	FALLOC_BODY(real_fallocate(fd, mode, off, len), r_ == 0, mode);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	ENSURE();
	FALLOC_BODY(real_fallocate64(fd, mode, off, len), r_ == 0, mode);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
	ENSURE();
	FALLOC_BODY(real_posix_fallocate(fd, off, len), r_ == 0, 0);
}

int posix_fallocate64(int fd, off64_t off, off64_t len)
{
	ENSURE();
	FALLOC_BODY(real_posix_fallocate64(fd, off, len), r_ == 0, 0);
}

ssize_t copy_file_range(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out,
                        size_t len, unsigned int flags)
{
	ENSURE();
	int fid = file_fid(fd_out);
	if (!fid)
		return real_copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
	off_t in_pos = off_in ? *off_in : lseek(fd_in, 0, SEEK_CUR);
	off_t out_pos = off_out ? *off_out : lseek(fd_out, 0, SEEK_CUR);
	ssize_t r = real_copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
	if (r > 0) {
		int e = errno;
		/* Read what was copied through a fresh buffered descriptor (fd_in may be
		 * O_DIRECT, and its position must not move). */
		char link[64];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd_in);
		int rfd = real_open(link, O_RDONLY | O_CLOEXEC);
		char *buf = malloc((size_t)r);
		if (rfd < 0 || !buf || pread(rfd, buf, (size_t)r, in_pos) != r)
			abort();
		real_close(rfd);
		log_write(fd_out, fid, (uint64_t)out_pos, buf, (size_t)r, 0);
		free(buf);
		errno = e;
	}
	return r;
}

/* ---- durability ---- */

static void dir_path_of(int v, struct part *p)
{
	const char *d = dirs[-v - 1];
	p->p = d;
	p->n = strlen(d);
}

static int do_sync(int fd, int kind, uint64_t off, uint64_t len, int (*call)(void *), void *arg)
{
	int v = enabled ? tab_get(fd) : 0;
	if (!v)
		return call(arg);
	struct part dp;
	if (v < 0) {
		dir_path_of(v, &dp);
		emit(PC_DIRSYNC_BEGIN, 0, 0, 0, (uint32_t)kind, &dp, 1);
	} else {
		emit(PC_SYNC_BEGIN, (uint32_t)v, off, len, (uint32_t)kind, NULL, 0);
	}
	int r = call(arg);
	int e = errno;
	if (v < 0)
		emit(r == 0 ? PC_DIRSYNC_END : PC_SYNC_FAIL, 0, 0, r == 0 ? 0 : (uint64_t)e,
		     (uint32_t)kind, r == 0 ? &dp : NULL, r == 0);
	else
		emit(r == 0 ? PC_SYNC_END : PC_SYNC_FAIL, (uint32_t)v, off, r == 0 ? len : (uint64_t)e,
		     (uint32_t)kind, NULL, 0);
	errno = e;
	return r;
}

struct sync_args {
	int fd;
	off64_t off, len;
	unsigned flags;
};

static int call_fsync(void *a)
{
	return real_fsync(((struct sync_args *)a)->fd);
}

static int call_fdatasync(void *a)
{
	return real_fdatasync(((struct sync_args *)a)->fd);
}

static int call_sfr(void *a)
{
	struct sync_args *s = a;
	return real_sync_file_range(s->fd, s->off, s->len, s->flags);
}

int fsync(int fd)
{
	ENSURE();
	struct sync_args a = { .fd = fd };
	return do_sync(fd, SYNC_FSYNC, 0, 0, call_fsync, &a);
}

int fdatasync(int fd)
{
	ENSURE();
	struct sync_args a = { .fd = fd };
	return do_sync(fd, SYNC_FDATASYNC, 0, 0, call_fdatasync, &a);
}

int sync_file_range(int fd, off64_t off, off64_t len, unsigned int flags)
{
	ENSURE();
	struct sync_args a = { .fd = fd, .off = off, .len = len, .flags = flags };
	return do_sync(fd, SYNC_RANGE, (uint64_t)off, (uint64_t)len, call_sfr, &a);
}

int syncfs(int fd)
{
	ENSURE();
	if (!enabled)
		return real_syncfs(fd);
	emit(PC_SYNC_BEGIN, 0, 0, 0, SYNC_ALL, NULL, 0);
	int r = real_syncfs(fd);
	int e = errno;
	emit(r == 0 ? PC_SYNC_END : PC_SYNC_FAIL, 0, 0, r == 0 ? 0 : (uint64_t)e, SYNC_ALL, NULL, 0);
	errno = e;
	return r;
}

void sync(void)
{
	ENSURE();
	if (enabled)
		emit(PC_SYNC_BEGIN, 0, 0, 0, SYNC_ALL, NULL, 0);
	real_sync();
	if (enabled)
		emit(PC_SYNC_END, 0, 0, 0, SYNC_ALL, NULL, 0);
}

/* ---- names ---- */

static void log_rename(const char *o, const char *n, const struct stat *st, unsigned flags)
{
	if (!match(o) && !match(n))
		return;
	struct part parts[2] = { { o, strlen(o) + 1 }, { n, strlen(n) + 1 } };
	emit(PC_RENAME, 0, (uint64_t)st->st_dev, (uint64_t)st->st_ino, flags, parts, 2);
}

#define RENAME_BODY(realcall, flagsv)                                                \
	char o_[PATH_MAX], n_[PATH_MAX];                                             \
	struct stat st_ = { 0 };                                                     \
	if (enabled) {                                                               \
		resolve(olddirfd, oldpath, o_, sizeof(o_));                          \
		resolve(newdirfd, newpath, n_, sizeof(n_));                          \
		lstat(o_, &st_);                                                     \
	}                                                                            \
	int r_ = (realcall);                                                         \
	if (enabled && r_ == 0) {                                                    \
		int e_ = errno;                                                      \
		log_rename(o_, n_, &st_, (flagsv));                                  \
		errno = e_;                                                          \
	}                                                                            \
	return r_

int rename(const char *oldpath, const char *newpath)
{
	ENSURE();
	int olddirfd = AT_FDCWD, newdirfd = AT_FDCWD;
	RENAME_BODY(real_rename(oldpath, newpath), 0);
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	ENSURE();
	RENAME_BODY(real_renameat(olddirfd, oldpath, newdirfd, newpath), 0);
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags)
{
	ENSURE();
	RENAME_BODY(real_renameat2(olddirfd, oldpath, newdirfd, newpath, flags), flags);
}

#define UNLINK_BODY(realcall)                                                        \
	char p_[PATH_MAX];                                                           \
	struct stat st_ = { 0 };                                                     \
	int m_ = 0;                                                                  \
	if (enabled) {                                                               \
		resolve(dirfd, path, p_, sizeof(p_));                                \
		m_ = match(p_) && lstat(p_, &st_) == 0;                              \
	}                                                                            \
	int r_ = (realcall);                                                         \
	if (m_ && r_ == 0) {                                                         \
		int e_ = errno;                                                      \
		struct part part_ = { p_, strlen(p_) };                              \
		emit(PC_UNLINK, 0, (uint64_t)st_.st_dev, (uint64_t)st_.st_ino, 0,    \
		     &part_, 1);                                                     \
		errno = e_;                                                          \
	}                                                                            \
	return r_

int unlink(const char *path)
{
	ENSURE();
	int dirfd = AT_FDCWD;
	UNLINK_BODY(real_unlink(path));
}

int unlinkat(int dirfd, const char *path, int flags)
{
	ENSURE();
	UNLINK_BODY(real_unlinkat(dirfd, path, flags));
}
