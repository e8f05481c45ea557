/* Scatter-gather lists (struct iovec arrays): the one place that walks them, for the
 * block layer's drivers and the devices' virtqueues alike. Lengths are in bytes; `skip`
 * is where in the list an operation starts. */
#ifndef VTOOL_UTIL_IOV_H
#define VTOOL_UTIL_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

size_t vt_iov_size(const struct iovec *iov, int n);

/* Bytes [skip, skip+len) of the list appended as entries to out[*m], out[*m+1], ...
 * (at most max entries in all). False, with *m unchanged, when more are needed. */
bool vt_iov_slice(const struct iovec *iov, int n, size_t skip, size_t len,
                  struct iovec *out, int *m, int max);

/* Copy between the list (from skip on) and flat memory; return the bytes copied (less
 * than len when the list ends first). */
size_t vt_iov_to_buf(const struct iovec *iov, int n, size_t skip, void *buf, size_t len);
size_t vt_iov_from_buf(const struct iovec *iov, int n, size_t skip, const void *buf,
                       size_t len);
size_t vt_iov_memset(const struct iovec *iov, int n, size_t skip, int c, size_t len);

#endif
