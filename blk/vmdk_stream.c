/* streamOptimized grains: each is a 12-byte marker (guest LBA, compressed size) and a
 * zlib stream, padded to a sector, appended at the end of the extent file. Reads inflate
 * a grain; writes deflate whole grains (runs of them at once) and append them. Both run
 * without the image lock, on whatever thread calls, so convert's workers inflate and
 * deflate on every core.
 *
 * Unlike qemu (which refuses to touch a grain twice), any write works: a partly written
 * grain is completed from the old grain, the backing file or zeros. Such grains wait in
 * a small pending table -- convert writes a grain in pieces when it skips zero runs
 * inside it -- and are compressed once: when a write reaches the grain's end, when the
 * table is full (the oldest goes), or at flush. A rewritten grain is appended and the
 * old copy is left unreferenced, as a crash would leave it. */
#include "blk/vmdk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

/* ---- per-thread scratch and zlib state ---------------------------------------------- */

struct vmdk_tls {
	uint8_t *buf[3];
	size_t cap[3];
	z_stream inf, def, store;
	bool has_inf, has_def, has_store;
	ZSTD_CCtx *probe;
};

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p)
{
	struct vmdk_tls *t = p;
	for (int i = 0; i < 3; i++)
		free(t->buf[i]);
	if (t->has_inf)
		inflateEnd(&t->inf);
	if (t->has_def)
		deflateEnd(&t->def);
	if (t->has_store)
		deflateEnd(&t->store);
	ZSTD_freeCCtx(t->probe);
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

/* The whole zlib stream in, exactly: anything but a clean end within cap is an error. */
static int inflate_buf(const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
                       size_t *out_len)
{
	struct vmdk_tls *t = tls();
	if (!t)
		return -ENOMEM;
	if (!t->has_inf) {
		if (inflateInit(&t->inf) != Z_OK)
			return -ENOMEM;
		t->has_inf = true;
	} else if (inflateReset(&t->inf) != Z_OK) {
		return -EIO;
	}
	t->inf.next_in = (Bytef *)in;
	t->inf.avail_in = (uInt)in_len;
	t->inf.next_out = out;
	t->inf.avail_out = (uInt)cap;
	if (inflate(&t->inf, Z_FINISH) != Z_STREAM_END)
		return -EIO;
	*out_len = cap - t->inf.avail_out;
	return 0;
}

/* Deflate spends as long failing on incompressible data as it does succeeding on text.
 * zstd's fastest level (many times faster) says when there is nothing to win: if it
 * cannot save 1/64 of the grain, deflate cannot either, and the grain goes into the
 * stream as stored deflate blocks (still a zlib stream; no larger than level 6 makes). */
static bool incompressible(struct vmdk_tls *t, const uint8_t *in, size_t len, uint8_t *out,
                           size_t cap)
{
	if (!t->probe && !(t->probe = ZSTD_createCCtx()))
		return false;
	size_t room = len - len / 64;
	size_t n = ZSTD_compressCCtx(t->probe, out, room < cap ? room : cap, in, len, 1);
	return ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall;
}

/* zlib format at qemu's level (compress(): the default), so the output is alike. */
static int deflate_buf(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
	struct vmdk_tls *t = tls();
	if (!t)
		return -ENOMEM;
	bool store = len >= 4096 && incompressible(t, in, len, out, cap);
	z_stream *z = store ? &t->store : &t->def;
	bool *has = store ? &t->has_store : &t->has_def;
	if (!*has) {
		if (deflateInit(z, store ? Z_NO_COMPRESSION : Z_DEFAULT_COMPRESSION) != Z_OK)
			return -ENOMEM;
		*has = true;
	} else if (deflateReset(z) != Z_OK) {
		return -EIO;
	}
	z->next_in = (Bytef *)in;
	z->avail_in = (uInt)len;
	z->next_out = out;
	z->avail_out = (uInt)cap;
	if (deflate(z, Z_FINISH) != Z_STREAM_END)
		return -EIO;
	*out_len = cap - z->avail_out;
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

static struct vmdk_pending *find_pending(struct vmdk *s, const struct vmdk_extent *e,
                                         uint64_t g)
{
	for (int i = 0; i < s->n_pending; i++)
		if (s->pending[i].ext == e && s->pending[i].grain == g)
			return &s->pending[i];
	return NULL;
}

bool vmdk_stream_pending(struct vmdk *s, const struct vmdk_extent *e, uint64_t g)
{
	return find_pending(s, e, g) != NULL;
}

uint8_t *vmdk_stream_pending_buf(struct vmdk *s, const struct vmdk_extent *e, uint64_t g)
{
	struct vmdk_pending *p = find_pending(s, e, g);
	return p ? p->buf : NULL;
}

/* Take a pending grain out of the table (its buffer becomes the caller's). */
static uint8_t *take_pending(struct vmdk *s, struct vmdk_pending *p)
{
	uint8_t *buf = p->buf;
	*p = s->pending[--s->n_pending];
	return buf;
}

/* The pointer to [skip, skip + n) of an iovec if it is one piece of memory. */
static uint8_t *iov_contig(const struct iovec *iov, int iovcnt, size_t skip, size_t n)
{
	for (int i = 0; i < iovcnt; i++) {
		if (skip < iov[i].iov_len)
			return iov[i].iov_len - skip >= n ? (uint8_t *)iov[i].iov_base + skip : NULL;
		skip -= iov[i].iov_len;
	}
	return NULL;
}

int vmdk_stream_read(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                     const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                     struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	while (len) {
		uint64_t g = off / gb, in = off % gb, n = len < gb - in ? len : gb - in;
		struct vmdk_map m = { 0 };
		int r = 0;
		pthread_mutex_lock(&s->lock);
		vmdk_inflight_wait(s, e, g, g + 1);
		struct vmdk_pending *p = find_pending(s, e, g);
		if (p)
			vt_iov_from_buf(iov, iovcnt, skip, p->buf + in, n);
		else if ((r = vmdk_lookup(s, e, g, &m, err)) == 0 && m.state == VMDK_UNALLOC)
			r = vmdk_check_parent_cid(s, err);
		pthread_mutex_unlock(&s->lock);
		if (r < 0)
			return r;
		if (p)
			;
		else if (m.state == VMDK_UNALLOC)
			r = vmdk_backing_iov(s, e->start * VMDK_SECTOR + off, iov, iovcnt, skip, n, err);
		else if (m.state == VMDK_ZEROED)
			vt_iov_memset(iov, iovcnt, skip, 0, n);
		else {
			/* A whole grain into one piece of the caller's memory: inflate right there. */
			uint8_t *direct = in == 0 && n == gb ? iov_contig(iov, iovcnt, skip, n) : NULL;
			uint8_t *out = direct ? direct : vmdk_scratch(2, gb);
			size_t got = 0;
			if (!out)
				return vt_error_set(err, ENOMEM, s->b->filename, "read", NULL);
			if ((r = vmdk_stream_read_grain(s, e, g, m.sector, out, &got, err)) < 0)
				return r;
			if (in + n > got)
				return vt_error_set(err, EIO, s->b->filename, "read",
				                    "the grain for sector %llu inflates to %zu bytes only",
				                    (unsigned long long)(e->start + g * e->grain_sectors), got);
			if (!direct)
				vt_iov_from_buf(iov, iovcnt, skip, out + in, n);
		}
		if (r < 0)
			return r;
		off += n;
		skip += n;
		len -= n;
	}
	return 0;
}

/* ---- writing ------------------------------------------------------------------------- */

/* Compress grains [g, g + k) -- from flat (whole grains back to back) or from the iovec
 * at skip -- and append them as one write; then point the grain tables at them. The
 * range is in flight (the caller's); released here, whatever happens. */
static int commit(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint64_t k,
                  const uint8_t *flat, const struct iovec *iov, int iovcnt, size_t skip,
                  struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e), sector = 0;
	/* Room for one grain's record: marker, the worst deflate output, sector padding. */
	size_t rec_cap = (size_t)compressBound((uLong)gb) + 12 + VMDK_SECTOR - 1;
	rec_cap &= ~(size_t)(VMDK_SECTOR - 1);
	uint8_t *out = vmdk_scratch(1, k * rec_cap);
	uint64_t rel[VMDK_MAX_RUN];
	size_t used = 0;
	int r = out ? 0 : vt_error_set(err, ENOMEM, s->b->filename, "write", NULL);
	for (uint64_t i = 0; r == 0 && i < k; i++) {
		size_t glen = (size_t)vmdk_grain_len(e, g + i), clen;
		const uint8_t *src = flat ? flat + i * gb : iov_contig(iov, iovcnt, skip + i * gb, glen);
		if (!src) {
			uint8_t *tmp = vmdk_scratch(2, gb);
			if (!tmp) {
				r = vt_error_set(err, ENOMEM, s->b->filename, "write", NULL);
				break;
			}
			vt_iov_to_buf(iov, iovcnt, skip + i * gb, tmp, glen);
			src = tmp;
		}
		uint8_t *rec = out + used;
		if (deflate_buf(src, glen, rec + 12, rec_cap - 12, &clen) < 0) {
			r = vt_error_set(err, EIO, s->b->filename, "write", "deflate failed");
			break;
		}
		vmdk_put_le64(rec + offsetof(struct vmdk_grain_marker, lba),
		              e->start + (g + i) * e->grain_sectors);
		vmdk_put_le32(rec + offsetof(struct vmdk_grain_marker, size), (uint32_t)clen);
		size_t n = (12 + clen + VMDK_SECTOR - 1) & ~(size_t)(VMDK_SECTOR - 1);
		memset(rec + 12 + clen, 0, n - 12 - clen);
		rel[i] = used / VMDK_SECTOR;
		used += n;
	}
	if (r == 0) {
		pthread_mutex_lock(&s->lock);
		r = vmdk_alloc(s, e, used / VMDK_SECTOR, &sector, err);
		pthread_mutex_unlock(&s->lock);
	}
	if (r == 0)
		r = blk_file_pwrite(e->file, sector * VMDK_SECTOR, out, used, err);
	if (r == 0)
		r = blk_file_flush(e->file, err); /* the grains, before anything points at them */
	pthread_mutex_lock(&s->lock);
	for (uint64_t i = 0; r == 0 && i < k; i++)
		r = vmdk_set_gte(s, e, g + i, (uint32_t)(sector + rel[i]), err);
	vmdk_inflight_del(s, e, g, g + k);
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* Make room in the pending table: compress and append the oldest grains (lock held;
 * dropped while they are written). */
static int evict_pending(struct vmdk *s, int keep, struct vt_error *err)
{
	int r = 0;
	while (r == 0 && s->n_pending > keep) {
		struct vmdk_pending *old = &s->pending[0];
		for (int i = 1; i < s->n_pending; i++)
			if (s->pending[i].seq < old->seq)
				old = &s->pending[i];
		struct vmdk_extent *e = old->ext;
		uint64_t g = old->grain;
		uint8_t *buf = take_pending(s, old);
		if ((r = vmdk_inflight_add(s, e, g, g + 1, err)) < 0) {
			free(buf);
			break;
		}
		pthread_mutex_unlock(&s->lock);
		r = commit(s, e, g, 1, buf, NULL, 0, 0, err);
		free(buf);
		pthread_mutex_lock(&s->lock);
	}
	return r;
}

int vmdk_stream_flush(struct vmdk *s, struct vt_error *err)
{
	pthread_mutex_lock(&s->lock);
	int r = evict_pending(s, 0, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}

void vmdk_stream_drop_pending(struct vmdk *s)
{
	while (s->n_pending)
		free(take_pending(s, &s->pending[0]));
}

/* Part of grain g: merged into its pending copy, or into a new one made from the old
 * grain, the backing file or zeros. A grain written up to its end is committed. */
static int write_partial(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint64_t in,
                         uint64_t n, const struct iovec *iov, int iovcnt, size_t skip,
                         struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e), glen = vmdk_grain_len(e, g);
	bool complete = in + n >= glen;
	struct vmdk_map m;
	uint8_t *buf;
	size_t got = 0;
	int r;

	pthread_mutex_lock(&s->lock);
	vmdk_inflight_wait(s, e, g, g + 1);
	struct vmdk_pending *p = find_pending(s, e, g);
	if (p) {
		vt_iov_to_buf(iov, iovcnt, skip, p->buf + in, n);
		if (!complete) {
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
		buf = take_pending(s, p);
		r = vmdk_inflight_add(s, e, g, g + 1, err);
		pthread_mutex_unlock(&s->lock);
		if (r == 0)
			r = commit(s, e, g, 1, buf, NULL, 0, 0, err);
		free(buf);
		return r;
	}
	if ((r = vmdk_lookup(s, e, g, &m, err)) == 0 && !m.has_gt)
		r = vt_error_set(err, ENOTSUP, s->b->filename, "write",
		                 "grain %llu of %s has no grain table (vtool does not add grain "
		                 "tables to an image)", (unsigned long long)g, e->path);
	if (r == 0)
		r = vmdk_check_parent_cid(s, err);
	if (r == 0)
		r = vmdk_inflight_add(s, e, g, g + 1, err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;

	if (!(buf = malloc(gb)))
		r = vt_error_set(err, ENOMEM, s->b->filename, "write", NULL);
	else if (m.state == VMDK_COMPRESSED && (r = vmdk_stream_read_grain(s, e, g, m.sector, buf,
	                                                                     &got, err)) == 0)
		memset(buf + got, 0, gb - got);
	else if (m.state == VMDK_UNALLOC)
		r = vmdk_read_backing(s, (e->start + g * e->grain_sectors) * VMDK_SECTOR, buf, gb, err);
	else if (m.state == VMDK_ZEROED)
		memset(buf, 0, gb);
	if (r == 0) {
		vt_iov_to_buf(iov, iovcnt, skip, buf + in, n);
		if (complete) {
			r = commit(s, e, g, 1, buf, NULL, 0, 0, err);
			free(buf);
			return r;
		}
	}
	pthread_mutex_lock(&s->lock);
	if (r == 0)
		r = evict_pending(s, VMDK_MAX_PENDING - 1, err);
	if (r == 0) {
		s->pending[s->n_pending++] = (struct vmdk_pending){
			.ext = e, .grain = g, .seq = ++s->pending_seq, .buf = buf };
		buf = NULL;
	}
	vmdk_inflight_del(s, e, g, g + 1);
	pthread_mutex_unlock(&s->lock);
	free(buf);
	return r;
}

int vmdk_stream_write(struct vmdk *s, struct vmdk_extent *e, uint64_t off,
                      const struct iovec *iov, int iovcnt, size_t skip, uint64_t len,
                      struct vt_error *err)
{
	uint64_t gb = vmdk_grain_bytes(e);
	while (len) {
		uint64_t g = off / gb, in = off % gb, glen = vmdk_grain_len(e, g);
		uint64_t n = len < glen - in ? len : glen - in, k = 1, run = n;
		int r = 0;
		if (in || n < glen) {
			r = write_partial(s, e, g, in, n, iov, iovcnt, skip, err);
		} else {
			/* Whole grains: a run of them is compressed and appended together. */
			while (k < VMDK_MAX_RUN && (g + k) * gb < e->sectors * VMDK_SECTOR &&
			       len - run >= vmdk_grain_len(e, g + k))
				run += vmdk_grain_len(e, g + k++);
			pthread_mutex_lock(&s->lock);
			vmdk_inflight_wait(s, e, g, g + k);
			for (uint64_t i = 0; r == 0 && i < k; i++) {
				struct vmdk_map m;
				struct vmdk_pending *p = find_pending(s, e, g + i);
				if (p)
					free(take_pending(s, p)); /* wholly rewritten */
				if ((r = vmdk_lookup(s, e, g + i, &m, err)) == 0 && !m.has_gt)
					r = vt_error_set(err, ENOTSUP, s->b->filename, "write",
					                 "grain %llu of %s has no grain table (vtool does not "
					                 "add grain tables to an image)",
					                 (unsigned long long)(g + i), e->path);
			}
			if (r == 0)
				r = vmdk_check_parent_cid(s, err);
			if (r == 0)
				r = vmdk_inflight_add(s, e, g, g + k, err);
			pthread_mutex_unlock(&s->lock);
			if (r == 0)
				r = commit(s, e, g, k, NULL, iov, iovcnt, skip, err);
		}
		if (r < 0)
			return r;
		off += run;
		skip += run;
		len -= run;
	}
	return 0;
}
