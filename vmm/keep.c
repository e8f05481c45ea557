/* The table of host resources kept across boots (keep.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/keep.h"

enum keep_kind { KEEP_FD, KEEP_FILE, KEEP_OBJ };

struct keep_entry {
	struct keep_entry *next;
	enum keep_kind kind;
	char *key;
	int fd;                       /* KEEP_FD */
	uint8_t *data;                /* KEEP_FILE: contents, or NULL after a failure */
	size_t size;
	struct vt_error err;          /* KEEP_FILE: the failure, told again each time */
	void *obj;                    /* KEEP_OBJ */
	void (*release)(void *obj);
};

static struct keep_entry *keep_list;

static struct keep_entry *keep_find(enum keep_kind kind, const char *key)
{
	for (struct keep_entry *e = keep_list; e; e = e->next)
		if (e->kind == kind && !strcmp(e->key, key))
			return e;
	return NULL;
}

static struct keep_entry *keep_new(enum keep_kind kind, const char *key)
{
	struct keep_entry *e = calloc(1, sizeof(*e));

	if (!e || !(e->key = strdup(key))) {
		free(e);
		return NULL;
	}
	e->kind = kind;
	e->fd = -1;
	e->next = keep_list;
	keep_list = e;
	return e;
}

int keep_open(const char *path, int flags, mode_t mode, struct vt_error *err)
{
	struct keep_entry *e = keep_find(KEEP_FD, path);

	if (!e) {
		int fd = open(path, flags | O_CLOEXEC, mode);
		if (fd < 0)
			return vt_error_set(err, errno, path, "open", NULL);
		if (!(e = keep_new(KEEP_FD, path))) {
			close(fd);
			return vt_error_set(err, ENOMEM, path, "open", NULL);
		}
		e->fd = fd;
	}
	int fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
	return fd < 0 ? vt_error_set(err, errno, path, "open", NULL) : fd;
}

static int read_whole(const char *path, struct keep_entry *e)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return vt_error_set(&e->err, errno, path, "open", NULL);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int code = S_ISDIR(st.st_mode) ? EISDIR : errno ? errno : EINVAL;
		close(fd);
		return vt_error_set(&e->err, code, path, "open", "not a regular file");
	}
	if ((uint64_t)st.st_size > (1ull << 32)) {
		close(fd);
		return vt_error_set(&e->err, EFBIG, path, "read", "file is larger than 4 GiB");
	}
	e->size = (size_t)st.st_size;
	e->data = malloc(e->size ? e->size : 1);
	if (!e->data) {
		close(fd);
		return vt_error_set(&e->err, ENOMEM, path, "read", NULL);
	}
	for (size_t done = 0; done < e->size;) {
		ssize_t n = pread(fd, e->data + done, e->size - done, (off_t)done);
		if (n <= 0) {
			int code = n < 0 ? errno : EIO;
			close(fd);
			free(e->data);
			e->data = NULL;
			return vt_error_set(&e->err, code, path, "read", n < 0 ? NULL : "file shrank");
		}
		done += (size_t)n;
	}
	close(fd);
	return 0;
}

int keep_read(const char *path, const uint8_t **data, size_t *size, struct vt_error *err)
{
	struct keep_entry *e = keep_find(KEEP_FILE, path);

	if (!e) {
		if (!(e = keep_new(KEEP_FILE, path)))
			return vt_error_set(err, ENOMEM, path, "read", NULL);
		read_whole(path, e);
	}
	if (!e->data) {
		if (err)
			*err = e->err;
		return -e->err.code;
	}
	*data = e->data;
	*size = e->size;
	return 0;
}

void *keep_get(const char *fmt, ...)
{
	char key[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	struct keep_entry *e = keep_find(KEEP_OBJ, key);
	return e ? e->obj : NULL;
}

int keep_put(void *obj, void (*release)(void *obj), const char *fmt, ...)
{
	char key[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	struct keep_entry *e = keep_new(KEEP_OBJ, key);
	if (!e) {
		if (release)
			release(obj);
		return -ENOMEM;
	}
	e->obj = obj;
	e->release = release;
	return 0;
}

void keep_release_all(void)
{
	while (keep_list) {
		struct keep_entry *e = keep_list;
		keep_list = e->next;
		if (e->fd >= 0)
			close(e->fd);
		free(e->data);
		if (e->release)
			e->release(e->obj);
		free(e->key);
		free(e);
	}
}
