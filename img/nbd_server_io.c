/* The transmission phase of an NBD connection: each request is checked (command, flags
 * against what was advertised, range, alignment, size, writability) before it reaches
 * the block layer, then executed on the calling thread. Refusals use the protocol's
 * error codes (EINVAL, ENOSPC for writes past the end, EPERM for a read-only export) and
 * are reported once per kind per client; only a request with a bad magic ends the
 * session, since the stream can no longer be parsed.
 *
 * Reads: with structured replies, a large read is sent as data and hole chunks following
 * the image's block status (holes cost 20 bytes on the wire); small reads, reads with
 * NBD_CMD_FLAG_DF and simple replies carry the data as it is. Data moves in pieces of
 * NBD_IO_CHUNK, so no request makes the server allocate more than that. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "img/nbd_server_int.h"

#define SPARSE_MIN   (64u << 10)   /* reads from this size on look for holes */
#define MAX_EXTENTS  65536u        /* descriptors in one block status chunk */
#define CACHE_MAX    NBD_MAX_PAYLOAD

static const uint8_t zeros[16];

static int send_chunk(struct nbd_conn *c, uint64_t cookie, uint16_t type, uint16_t flags,
                      const void *a, size_t alen, const void *b, size_t blen)
{
	uint8_t h[sizeof(struct nbd_wire_chunk)];
	struct nbd_chunk ch = { .flags = flags, .type = type, .cookie = cookie,
	                        .length = (uint32_t)(alen + blen) };
	nbd_chunk_encode(h, &ch);
	struct iovec iov[3] = { { h, sizeof(h) }, { (void *)a, alen }, { (void *)b, blen } };
	return nbd_conn_send(c, iov, blen ? 3 : alen ? 2 : 1);
}

static int reply_simple(struct nbd_conn *c, uint64_t cookie, uint32_t error)
{
	uint8_t h[sizeof(struct nbd_wire_simple_reply)];
	nbd_simple_reply_encode(h, error, cookie);
	struct iovec iov = { h, sizeof(h) };
	return nbd_conn_send(c, &iov, 1);
}

/* An error: a structured error chunk (with a message) when negotiated, else simple. */
static int reply_error(struct nbd_conn *c, const struct nbd_request *r, uint32_t error,
                       const char *msg)
{
	if (!c->structured)
		return reply_simple(c, r->cookie, error);
	size_t ml = strlen(msg);
	uint8_t e[sizeof(struct nbd_wire_error)];
	nbd_put16(nbd_put32(e, error), (uint16_t)ml);
	return send_chunk(c, r->cookie, NBD_REPLY_TYPE_ERROR, NBD_REPLY_FLAG_DONE, e, sizeof(e),
	                  msg, ml);
}

/* The outcome of a request that carries no data back. */
static int reply_result(struct nbd_conn *c, const struct nbd_request *r, int ret,
                        const char *what)
{
	if (ret >= 0)
		return reply_simple(c, r->cookie, 0);
	nbd_conn_report(c, NBD_R_IO, "%s at %" PRIu64 "+%" PRIu32 " failed: %s", what,
	                r->offset, r->length, strerror(-ret));
	return reply_error(c, r, nbd_errno_to_wire(-ret), strerror(-ret));
}

static const char *cmd_name(uint16_t t)
{
	static const char *const names[] = { "read", "write", "disconnect", "flush", "trim",
	                                     "cache", "write zeroes", "block status" };
	return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown command";
}

/* 0 when the request may run, else the NBD error to answer with. */
static uint32_t validate(struct nbd_conn *c, const struct nbd_request *r)
{
	const struct nbd_export *e = c->exp;
	uint16_t allowed = NBD_CMD_FLAG_FUA;
	switch (r->type) {
	case NBD_CMD_READ:
		if (c->structured)
			allowed |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		break;
	case NBD_CMD_WRITE: case NBD_CMD_DISC: case NBD_CMD_FLUSH: case NBD_CMD_TRIM:
	case NBD_CMD_CACHE:
		break;
	default:
		nbd_conn_report(c, NBD_R_COMMAND, "unknown command %u", r->type);
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed) {
		nbd_conn_report(c, NBD_R_FLAGS, "%s with flags 0x%x it may not use", cmd_name(r->type),
		                r->flags);
		return NBD_EINVAL;
	}
	bool writes = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
	              r->type == NBD_CMD_WRITE_ZEROES;
	if (writes && e->readonly) {
		nbd_conn_report(c, NBD_R_READONLY, "%s on the read-only export", cmd_name(r->type));
		return NBD_EPERM;
	}
	if (r->type == NBD_CMD_DISC || r->type == NBD_CMD_FLUSH)
		return 0;
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
	    r->length > NBD_MAX_PAYLOAD) {
		nbd_conn_report(c, NBD_R_SIZE, "%s of %" PRIu32 " bytes, over the maximum payload "
		                "of %u", cmd_name(r->type), r->length, NBD_MAX_PAYLOAD);
		return NBD_EINVAL;
	}
	if (r->offset > e->size || r->length > e->size - r->offset) {
		nbd_conn_report(c, NBD_R_RANGE, "%s at %" PRIu64 "+%" PRIu32 " past the end of the "
		                "export (%" PRIu64 " bytes)", cmd_name(r->type), r->offset,
		                r->length, e->size);
		bool w = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES;
		return w ? NBD_ENOSPC : NBD_EINVAL;
	}
	if (c->check_align && (r->offset % e->min_block ||
	                       (r->length % e->min_block && r->offset + r->length != e->size))) {
		nbd_conn_report(c, NBD_R_ALIGN, "%s at %" PRIu64 "+%" PRIu32 " not aligned to the "
		                "advertised block size %u", cmd_name(r->type), r->offset, r->length,
		                e->min_block);
		return NBD_EINVAL;
	}
	if (r->type == NBD_CMD_BLOCK_STATUS) {
		if (!c->ctx_base && !c->ctx_depth && !c->ctx_nbitmaps) {
			nbd_conn_report(c, NBD_R_CONTEXT, "block status without a negotiated metadata "
			                "context");
			return NBD_EINVAL;
		}
		if (r->length == 0) {
			nbd_conn_report(c, NBD_R_RANGE, "block status of 0 bytes");
			return NBD_EINVAL;
		}
	}
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	if (n < 16)
		return !memcmp(p, zeros, n);
	return !memcmp(p, zeros, 16) && !memcmp(p, p + 16, n - 16);
}

static int write_piece(struct nbd_conn *c, uint64_t off, const uint8_t *d, size_t n)
{
	const struct nbd_export *e = c->exp;
	struct vt_error err;
	if (e->detect_zeroes != NBD_DZ_OFF && all_zero(d, n)) {
		bool unmap = e->detect_zeroes == NBD_DZ_UNMAP && e->discard_unmap;
		return blk_write_zeroes(e->blk, off, n, unmap ? BLK_MAY_UNMAP : 0, &err);
	}
	return blk_pwrite(e->blk, off, d, n, &err);
}

static int flush_if_fua(struct nbd_conn *c, const struct nbd_request *r, int ret)
{
	struct vt_error err;
	if (ret >= 0 && (r->flags & NBD_CMD_FLAG_FUA))
		ret = blk_flush(c->exp->blk, &err);
	return ret;
}

/* A write-type request ran: live dirty bitmaps must look at their bits again. */
static void written(struct nbd_conn *c)
{
	for (size_t i = 0; i < c->exp->nbitmaps; i++)
		nbd_bitmap_written(c->exp->bitmaps[i]);
}

static int finish_write(struct nbd_conn *c)
{
	c->state = NBD_ST_REQUEST;
	written(c);
	return reply_result(c, &c->req, flush_if_fua(c, &c->req, c->write_err), "write");
}

int nbd_io_payload(struct nbd_conn *c, size_t n)
{
	c->buf_fill += n;
	uint64_t total = c->payload_done + c->buf_fill;
	if (c->buf_fill < NBD_IO_CHUNK && total < c->req.length)
		return 0;
	if (c->write_err == 0)
		c->write_err = write_piece(c, c->req.offset + c->payload_done, c->buf, c->buf_fill);
	c->payload_done = total;
	c->buf_fill = 0;
	return total == c->req.length ? finish_write(c) : 0;
}

int nbd_io_drained(struct nbd_conn *c)
{
	c->state = NBD_ST_REQUEST;
	return reply_error(c, &c->req, c->req_error, "request refused");
}

/* The payload of a write follows its header in `in`, in full or in part. */
static int start_write(struct nbd_conn *c, uint32_t error)
{
	const struct nbd_request *r = &c->req;
	size_t have = c->len - c->pos;
	uint8_t *buf = error ? NULL : nbd_conn_buf(c);
	if (!error && !buf && have < r->length)
		error = NBD_ENOMEM;
	if (error) { /* skip the payload, then refuse */
		size_t take = have < r->length ? have : r->length;
		c->pos += take;
		c->drain_left = r->length - take;
		c->req_error = error;
		if (c->drain_left > NBD_MAX_DRAIN) {
			nbd_conn_report(c, NBD_R_PROTOCOL, "refused write with %" PRIu32 " bytes of "
			                "payload: hanging up", r->length);
			return -EMSGSIZE;
		}
		if (!c->drain_left)
			return nbd_io_drained(c);
		c->state = NBD_ST_PAYLOAD_DRAIN;
		return 0;
	}
	c->write_err = 0;
	c->payload_done = 0;
	c->buf_fill = 0;
	if (have >= r->length) { /* all here: write it from where it lies */
		c->write_err = r->length ? write_piece(c, r->offset, c->in + c->pos, r->length) : 0;
		c->pos += r->length;
		return finish_write(c);
	}
	memcpy(buf, c->in + c->pos, have); /* have < NBD_CONN_IN_CAP < NBD_IO_CHUNK */
	c->pos += have;
	c->buf_fill = have;
	c->state = NBD_ST_PAYLOAD;
	return 0;
}

/* Send [off, off+len) (at most NBD_IO_CHUNK) as one data chunk. A read failure sets
 * *ioerr (the caller ends the reply with an error chunk); <0 only on send failure. */
static int send_data(struct nbd_conn *c, uint64_t cookie, uint64_t off, size_t len,
                     bool last, int *ioerr)
{
	struct vt_error err;
	uint8_t *buf = nbd_conn_buf(c);
	uint8_t o[8];
	nbd_put64(o, off);
	int r = buf ? blk_pread(c->exp->blk, off, buf, len, &err) : -ENOMEM;
	if (r < 0) {
		*ioerr = r;
		return 0;
	}
	return send_chunk(c, cookie, NBD_REPLY_TYPE_OFFSET_DATA, last ? NBD_REPLY_FLAG_DONE : 0,
	                  o, sizeof(o), buf, len);
}

/* Data of any length as consecutive chunks of at most NBD_IO_CHUNK. */
static int send_data_range(struct nbd_conn *c, uint64_t cookie, uint64_t off, uint64_t len,
                           bool last, int *ioerr)
{
	while (len && !*ioerr) {
		uint64_t n = len < NBD_IO_CHUNK ? len : NBD_IO_CHUNK;
		int r = send_data(c, cookie, off, (size_t)n, last && n == len, ioerr);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int read_simple(struct nbd_conn *c, const struct nbd_request *r)
{
	struct vt_error err;
	uint8_t *buf = nbd_conn_buf(c);
	if (!buf)
		return reply_simple(c, r->cookie, NBD_ENOMEM);
	uint64_t off = r->offset, left = r->length;
	bool first = true;
	do {
		size_t n = left < NBD_IO_CHUNK ? (size_t)left : NBD_IO_CHUNK;
		int ret = n ? blk_pread(c->exp->blk, off, buf, n, &err) : 0;
		if (ret < 0) {
			nbd_conn_report(c, NBD_R_IO, "read at %" PRIu64 "+%zu failed: %s", off, n,
			                strerror(-ret));
			if (first)
				return reply_simple(c, r->cookie, nbd_errno_to_wire(-ret));
			return -EIO; /* the header promised data: only hanging up can say it failed */
		}
		uint8_t h[sizeof(struct nbd_wire_simple_reply)];
		nbd_simple_reply_encode(h, 0, r->cookie);
		struct iovec iov[2] = { { h, sizeof(h) }, { buf, n } };
		ret = first ? nbd_conn_send(c, iov, 2) : nbd_conn_send(c, iov + 1, 1);
		if (ret < 0)
			return ret;
		first = false;
		off += n;
		left -= n;
	} while (left);
	return 0;
}

static int do_read(struct nbd_conn *c, const struct nbd_request *r)
{
	if (!c->structured)
		return read_simple(c, r);
	if (r->length == 0)
		return send_chunk(c, r->cookie, NBD_REPLY_TYPE_NONE, NBD_REPLY_FLAG_DONE, NULL, 0,
		                  NULL, 0);
	int ioerr = 0, ret;
	bool sparse = r->length >= SPARSE_MIN && !(r->flags & NBD_CMD_FLAG_DF);
	if (!sparse && r->length > NBD_IO_CHUNK && (r->flags & NBD_CMD_FLAG_DF)) {
		/* One content chunk at most: it would not fit our pieces. */
		return reply_error(c, r, NBD_EOVERFLOW, "read too large for NBD_CMD_FLAG_DF");
	}
	if (!sparse) {
		ret = send_data_range(c, r->cookie, r->offset, r->length, true, &ioerr);
	} else {
		uint64_t off = r->offset, end = r->offset + r->length;
		ret = 0;
		while (off < end && ret == 0 && !ioerr) {
			struct blk_status st;
			struct vt_error err;
			if (blk_block_status(c->exp->blk, off, end - off, &st, &err) < 0) {
				st.flags = BLK_STATUS_DATA; /* unknown: send the data */
				st.len = end - off;
			}
			if (st.flags & BLK_STATUS_ZERO) {
				uint8_t h[sizeof(struct nbd_wire_hole)];
				nbd_put32(nbd_put64(h, off), (uint32_t)st.len);
				ret = send_chunk(c, r->cookie, NBD_REPLY_TYPE_OFFSET_HOLE, 0, h, sizeof(h),
				                 NULL, 0);
			} else {
				ret = send_data_range(c, r->cookie, off, st.len, false, &ioerr);
			}
			off += st.len;
		}
		if (ret == 0 && !ioerr)
			ret = send_chunk(c, r->cookie, NBD_REPLY_TYPE_NONE, NBD_REPLY_FLAG_DONE, NULL, 0,
			                 NULL, 0);
	}
	if (ret < 0)
		return ret;
	if (ioerr) {
		nbd_conn_report(c, NBD_R_IO, "read at %" PRIu64 "+%" PRIu32 " failed: %s", r->offset,
		                r->length, strerror(-ioerr));
		return reply_error(c, r, nbd_errno_to_wire(-ioerr), strerror(-ioerr));
	}
	return 0;
}

static uint32_t extent_flags(bool depth_ctx, const struct blk_status *st)
{
	if (depth_ctx)
		return st->flags & BLK_STATUS_ALLOCATED ? (uint32_t)st->depth + 1 : 0;
	return (st->flags & BLK_STATUS_DATA ? 0 : NBD_STATE_HOLE) |
	       (st->flags & BLK_STATUS_ZERO ? NBD_STATE_ZERO : 0);
}

/* One NBD_REPLY_TYPE_BLOCK_STATUS chunk for a context: base:allocation,
 * qemu:allocation-depth (depth_ctx) or a dirty bitmap (bm, held). *ioerr on a block layer
 * failure before any extent was found. */
static int status_chunk(struct nbd_conn *c, const struct nbd_request *r, uint32_t id,
                        bool depth_ctx, const struct nbd_bitmap *bm, bool last, int *ioerr)
{
	uint8_t *buf = nbd_conn_buf(c);
	if (!buf) {
		*ioerr = -ENOMEM;
		return 0;
	}
	uint32_t max = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : MAX_EXTENTS, n = 0;
	uint32_t last_len = 0, last_flags = 0;
	uint64_t off = r->offset, end = r->offset + r->length;
	_Static_assert(4 + 8 * (size_t)MAX_EXTENTS <= NBD_IO_CHUNK, "extents fit the buffer");
	nbd_put32(buf, id);
	while (off < end) {
		struct blk_status st;
		struct vt_error err;
		uint32_t f;
		if (bm) {
			bool dirty;
			nbd_bitmap_run(bm, off, end, &dirty, &st.len);
			f = dirty ? NBD_STATE_DIRTY : 0;
		} else {
			int ret = blk_block_status(c->exp->blk, off, end - off, &st, &err);
			if (ret < 0) {
				if (n == 0) {
					*ioerr = ret;
					return 0;
				}
				break; /* report what we know */
			}
			f = extent_flags(depth_ctx, &st);
		}
		if (n && f == last_flags) {
			last_len += (uint32_t)st.len; /* within the request: fits 32 bits */
			nbd_put32(buf + 4 + 8 * (n - 1), last_len);
		} else {
			if (n == max)
				break;
			last_len = (uint32_t)st.len;
			last_flags = f;
			nbd_put32(nbd_put32(buf + 4 + 8 * n, last_len), f);
			n++;
		}
		off += st.len;
	}
	return send_chunk(c, r->cookie, NBD_REPLY_TYPE_BLOCK_STATUS,
	                  last ? NBD_REPLY_FLAG_DONE : 0, buf, 4 + 8 * (size_t)n, NULL, 0);
}

/* A chunk per selected context, in qemu's order: base:allocation, qemu:allocation-depth,
 * then the dirty bitmaps. */
static int do_block_status(struct nbd_conn *c, const struct nbd_request *r)
{
	int ioerr = 0, ret = 0;
	size_t left = c->ctx_base + c->ctx_depth + c->ctx_nbitmaps;
	if (c->ctx_base)
		ret = status_chunk(c, r, 0, false, NULL, !--left, &ioerr);
	if (ret == 0 && !ioerr && c->ctx_depth)
		ret = status_chunk(c, r, 1, true, NULL, !--left, &ioerr);
	for (size_t i = 0; i < c->exp->nbitmaps && ret == 0 && !ioerr; i++) {
		struct nbd_bitmap *bm = c->exp->bitmaps[i];
		if (!(c->ctx_bitmaps[i] & CTX_SELECTED))
			continue;
		if ((ioerr = nbd_bitmap_lock(bm)) < 0)
			break;
		ret = status_chunk(c, r, 2 + (uint32_t)i, false, bm, !--left, &ioerr);
		nbd_bitmap_unlock(bm);
	}
	if (ret == 0 && ioerr)
		ret = reply_result(c, r, ioerr, "block status");
	return ret;
}

static int do_cache(struct nbd_conn *c, const struct nbd_request *r)
{
	struct vt_error err;
	uint8_t *buf = nbd_conn_buf(c);
	uint64_t off = r->offset, left = r->length < CACHE_MAX ? r->length : CACHE_MAX;
	int ret = buf ? 0 : -ENOMEM;
	while (left && ret == 0) { /* reading pulls it into the host's page cache */
		size_t n = left < NBD_IO_CHUNK ? (size_t)left : NBD_IO_CHUNK;
		ret = blk_pread(c->exp->blk, off, buf, n, &err);
		off += n;
		left -= n;
	}
	return reply_result(c, r, ret, "cache");
}

static int execute(struct nbd_conn *c, const struct nbd_request *r)
{
	const struct nbd_export *e = c->exp;
	struct vt_error err;
	int ret = 0;
	switch (r->type) {
	case NBD_CMD_READ:
		return do_read(c, r);
	case NBD_CMD_DISC:
		c->state = NBD_ST_DONE;
		return 1;
	case NBD_CMD_FLUSH:
		return reply_result(c, r, blk_flush(e->blk, &err), "flush");
	case NBD_CMD_TRIM:
		if (e->discard_unmap && r->length) {
			ret = blk_discard(e->blk, r->offset, r->length, &err);
			written(c);
		}
		return reply_result(c, r, flush_if_fua(c, r, ret), "trim");
	case NBD_CMD_WRITE_ZEROES: {
		unsigned f = e->discard_unmap && !(r->flags & NBD_CMD_FLAG_NO_HOLE) ? BLK_MAY_UNMAP : 0;
		if (r->length) {
			ret = blk_write_zeroes(e->blk, r->offset, r->length, f, &err);
			written(c);
		}
		return reply_result(c, r, flush_if_fua(c, r, ret), "write zeroes");
	}
	case NBD_CMD_CACHE:
		return do_cache(c, r);
	case NBD_CMD_BLOCK_STATUS:
		return do_block_status(c, r);
	default:
		return -EINVAL; /* validate() refused it */
	}
}

int nbd_io_step(struct nbd_conn *c, bool *progress)
{
	if (c->len - c->pos < sizeof(struct nbd_wire_request))
		return 0;
	struct nbd_request r;
	bool ok = nbd_request_decode(c->in + c->pos, &r);
	c->pos += sizeof(struct nbd_wire_request);
	*progress = true;
	if (!ok) {
		nbd_conn_report(c, NBD_R_PROTOCOL, "request with a bad magic: hanging up");
		return -EPROTO;
	}
	c->req = r;
	uint32_t error = validate(c, &r);
	if (r.type == NBD_CMD_WRITE)
		return start_write(c, error);
	if (error)
		return reply_error(c, &r, error, "request refused");
	return execute(c, &r);
}
