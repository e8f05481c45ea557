/* streamOptimized grains: each is a 12-byte marker (guest LBA, compressed size) and a
 * zlib stream, padded to a sector. Reads inflate a grain without the image lock, on
 * whatever thread calls, so convert's workers inflate on every core. */
#include "blk/vmdk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- per-thread scratch ----------------------------------------------------------------- */

struct vmdk_tls {
	uint8_t *buf[3];
	size_t cap[3];
};

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p)
{
	struct vmdk_tls *t = p;
	for (int i = 0; i < 3; i++)
		free(t->buf[i]);
	free(t);
}

static void tls_init(void)
{
	pthread_key_create(&tls_key, tls_free);
}

static struct vmdk_tls *tls(void)
{
	pthread_once(&tls_once, tls_init);
	struct vmdk_tls *t = pthread_getspecific(tls_key);
	if (!t && (t = calloc(1, sizeof(*t))) && pthread_setspecific(tls_key, t)) {
		free(t);
		t = NULL;
	}
	return t;
}

uint8_t *vmdk_scratch(int which, size_t n)
{
	struct vmdk_tls *t = tls();
	if (!t)
		return NULL;
	if (t->cap[which] < n) {
		void *p;
		size_t cap = (n + 65535) & ~(size_t)65535;
		if (posix_memalign(&p, 4096, cap))
			return NULL;
		free(t->buf[which]);
		t->buf[which] = p;
		t->cap[which] = cap;
	}
	return t->buf[which];
}

/* The whole zlib stream in, exactly (qemu's uncompress()): anything but a clean end
 * within cap is an error. */
static int inflate_buf(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                       size_t *out_len)
{
	uLongf n = cap;
	if (uncompress(out, &n, in, (uLong)in_len) != Z_OK)
		return -EIO;
	*out_len = n;
	return 0;
}

/* ---- reading ------------------------------------------------------------------------- */

/* First read of a marked grain: most grains (and their marker) fit in this. */
#define FIRST_READ 16384u

int vmdk_stream_read_grain(struct vmdk *s, struct vmdk_extent *e, uint64_t g,
                           uint64_t sector, uint8_t *out, size_t *out_len,
                           struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e), pos = sector * VMDK_SECTOR;
	uint8_t *buf = vmdk_scratch(0, 2 * gb + 2 * VMDK_SECTOR);
	const uint8_t *data;
	size_t in_len;
	int r;
	if (!buf)
		return vt_error_set(err, ENOMEM, s->b->filename, "read", NULL);
	if (e->has_marker) {
		size_t first = gb + 12 < FIRST_READ ? (size_t)gb + 12 : FIRST_READ;
		if ((r = blk_file_pread(e->file, pos, buf, first, err)) < 0)
			return r;
		uint32_t size = vmdk_le32(buf + offsetof(struct vmdk_grain_marker, size));
		if (size == 0 || size > 2 * gb)
			return vt_error_set(err, EIO, s->b->filename, "read",
			                    "invalid compressed grain for sector %llu (%u bytes)",
			                    (unsigned long long)(e->start + g * e->grain_sectors), size);
		if (12 + (size_t)size > first &&
		    (r = blk_file_pread(e->file, pos + first, buf + first, 12 + size - first, err)) < 0)
			return r;
		data = buf + 12;
		in_len = size;
	} else {
		/* No marker: a bare zlib stream of unknown length (qemu hands it a grain's
		 * worth). */
		if ((r = blk_file_pread(e->file, pos, buf, gb, err)) < 0)
			return r;
		data = buf;
		in_len = gb;
	}
	if (inflate_buf(data, in_len, out, gb, out_len) < 0)
		return vt_error_set(err, EIO, s->b->filename, "read",
		                    "bad deflate stream in the grain for sector %llu",
		                    (unsigned long long)(e->start + g * e->grain_sectors));
	return 0;
}

int vmdk_stream_read(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                     const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                     struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	while (len) {
		uint64_t g = off / gb, in = off % gb, n = len < gb - in ? len : gb - in;
		struct vmdk_map m = { 0 };
		pthread_mutex_lock(&s->lock);
		vmdk_inflight_wait(s, e, g, g + 1);
		int r = vmdk_lookup(s, e, g, &m, err);
		if (r == 0 && m.state == VMDK_UNALLOC)
			r = vmdk_check_parent_cid(s, err);
		pthread_mutex_unlock(&s->lock);
		if (r < 0)
			return r;
		if (m.state == VMDK_UNALLOC)
			r = vmdk_backing_iov(s, e->start * VMDK_SECTOR + off, iov, iovcnt, skip, n, err);
		else if (m.state == VMDK_ZEROED)
			blk_iov_memset(iov, iovcnt, skip, 0, n);
		else {
			uint8_t *out = vmdk_scratch(2, gb);
			size_t got = 0;
			if (!out)
				return vt_error_set(err, ENOMEM, s->b->filename, "read", NULL);
			if ((r = vmdk_stream_read_grain(s, e, g, m.sector, out, &got, err)) < 0)
				return r;
			if (in + n > got)
				return vt_error_set(err, EIO, s->b->filename, "read",
				                    "the grain for sector %llu inflates to %zu bytes only",
				                    (unsigned long long)(e->start + g * e->grain_sectors), got);
			blk_iov_from_buf(iov, iovcnt, skip, out + in, n);
		}
		if (r < 0)
			return r;
		off += n;
		skip += n;
		len -= n;
	}
	return 0;
}
