#include "util/iov.h"

#include <string.h>

size_t vt_iov_size(const struct iovec *iov, int n)
{
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	return total;
}

bool vt_iov_slice(const struct iovec *iov, int n, size_t skip, size_t len,
                  struct iovec *out, int *m, int max)
{
	int k = *m;
	for (int i = 0; i < n && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (k == max)
			return false;
		size_t c = iov[i].iov_len - skip < len ? iov[i].iov_len - skip : len;
		out[k++] = (struct iovec){ (char *)iov[i].iov_base + skip, c };
		len -= c;
		skip = 0;
	}
	*m = k;
	return true;
}

/* The one walk: apply fn to each piece of [skip, skip+len). */
static size_t walk(const struct iovec *iov, int n, size_t skip, size_t len,
                   void (*fn)(char *piece, size_t off, size_t c, void *arg), void *arg)
{
	size_t done = 0;
	for (int i = 0; i < n && done < len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t c = iov[i].iov_len - skip < len - done ? iov[i].iov_len - skip : len - done;
		fn((char *)iov[i].iov_base + skip, done, c, arg);
		done += c;
		skip = 0;
	}
	return done;
}

static void piece_to_buf(char *piece, size_t off, size_t c, void *arg)
{
	memcpy((char *)arg + off, piece, c);
}

static void piece_from_buf(char *piece, size_t off, size_t c, void *arg)
{
	memcpy(piece, (const char *)arg + off, c);
}

static void piece_set(char *piece, size_t off, size_t c, void *arg)
{
	memset(piece, *(const int *)arg, c);
}

size_t vt_iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len)
{
	return walk(iov, n, skip, len, piece_to_buf, buf);
}

size_t vt_iov_from_buf(const struct iovec *iov, int n, size_t skip, const void *buf,
                       size_t len)
{
	return walk(iov, n, skip, len, piece_from_buf, (void *)buf);
}

size_t vt_iov_memset(const struct iovec *iov, int n, size_t skip, int c, size_t len)
{
	return walk(iov, n, skip, len, piece_set, &c);
}
