/* Compressed clusters: zlib (raw deflate, as qemu writes it) and zstd. Decompression
 * must produce exactly one cluster from a bounded input: no decompression bombs. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <pthread.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

static int inflate_cluster(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	z_stream z = { 0 };
	if (inflateInit2(&z, -12) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)in_len;
	z.next_out = out;
	z.avail_out = (uInt)out_len;
	int r = inflate(&z, Z_FINISH);
	/* The input may run on into the next cluster's stream: a full output is success. */
	bool ok = (r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) && z.avail_out == 0;
	inflateEnd(&z);
	return ok ? 0 : -EIO;
}

static int zstd_cluster(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	ZSTD_DStream *d = ZSTD_createDStream();
	if (!d)
		return -ENOMEM;
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, out_len, 0 };
	int r = 0;
	while (ob.pos < ob.size) {
		size_t ret = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(ret)) {
			r = -EIO;
			break;
		}
		if (ret == 0 || ib.pos == ib.size) { /* frame ended or input exhausted */
			if (ob.pos < ob.size)
				r = -EIO;
			break;
		}
	}
	ZSTD_freeDStream(d);
	return r;
}

int qcow2_decompress(struct qcow2 *s, const uint8_t *in, size_t in_len, uint8_t *out,
                     struct vt_error *err)
{
	int r = s->compression_type == 1 ? zstd_cluster(in, in_len, out, s->cs)
	                                 : inflate_cluster(in, in_len, out, s->cs);
	if (r < 0)
		return vt_error_set(err, EIO, s->b->filename, "read compressed cluster",
		                    "%s data does not decompress to one cluster",
		                    s->compression_type == 1 ? "zstd" : "zlib");
	return 0;
}

/* One zstd context per thread, reused: creating one per cluster costs more than the
 * compression of many clusters. */
static __thread ZSTD_CCtx *zstd_cctx;

static void zstd_cctx_free(void *p)
{
	ZSTD_freeCCtx(p);
}

static pthread_key_t zstd_key;
static pthread_once_t zstd_once = PTHREAD_ONCE_INIT;

static void zstd_key_init(void)
{
	pthread_key_create(&zstd_key, zstd_cctx_free); /* frees each thread's context at exit */
}

/* Deflate spends as long failing on incompressible data as it does succeeding on text.
 * zstd's fastest level (about ten times faster) says when there is nothing to win: if it cannot save even 1/64 of the cluster, the real compressor cannot get under
 * the cluster size either, and the cluster is stored plain. */
static bool not_worth_compressing(struct qcow2 *s, const uint8_t *in, uint8_t *out,
                                  size_t out_cap)
{
	size_t room = s->cs - s->cs / 64;
	size_t probe = ZSTD_compressCCtx(zstd_cctx, out, room < out_cap ? room : out_cap, in,
	                                 s->cs, 1);
	return ZSTD_isError(probe) && ZSTD_getErrorCode(probe) == ZSTD_error_dstSize_tooSmall;
}

long qcow2_compress(struct qcow2 *s, const uint8_t *in, uint8_t *out, size_t out_cap)
{
	if (!zstd_cctx) {
		pthread_once(&zstd_once, zstd_key_init);
		if (!(zstd_cctx = ZSTD_createCCtx()))
			return -ENOMEM;
		pthread_setspecific(zstd_key, zstd_cctx);
	}
	if (s->compression_type == 1) {
		/* One-shot with the cluster size known: zstd sizes its tables for 64 KiB input,
		 * which is faster than qemu's streaming call and compresses the same. */
		size_t n = ZSTD_compressCCtx(zstd_cctx, out, out_cap, in, s->cs, ZSTD_CLEVEL_DEFAULT);
		if (ZSTD_isError(n))
			return 0; /* does not fit (or failed): the cluster is stored plain */
		return (long)n;
	}
	if (not_worth_compressing(s, in, out, out_cap))
		return 0;
	z_stream z = { 0 };
	/* Raw deflate with a 4 KiB window: what qemu writes and reads. */
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)s->cs;
	z.next_out = out;
	z.avail_out = (uInt)out_cap;
	int r = deflate(&z, Z_FINISH);
	long n = r == Z_STREAM_END ? (long)(out_cap - z.avail_out) : (r == Z_OK || r == Z_BUF_ERROR ? 0 : -EIO);
	deflateEnd(&z);
	return n;
}
