/* nbd: a disk served over NBD (qemu-nbd, nbdkit, nbd-server, vtool img serve), seen as a
 * raw image. Addresses and the handshake are nbd_connect.c; this is transmission.
 *
 * Concurrency: requests from any number of threads share one connection, up to NSLOTS in
 * flight. Senders serialise on send_lock; replies are read by whichever waiting thread
 * takes the reader role (no thread of our own, and no hand-off when one request is in
 * flight), copying each reply's data straight into its requester's buffers. A requester
 * never returns while the reader may still write into its buffers.
 *
 * Everything the server sends is checked: reply magic, the cookie of a request in
 * flight, chunk types and lengths, content chunks inside the request and not overlapping,
 * all of a read covered before "done", block status chunks of our context with non-empty
 * extents. A violation breaks the connection like a network failure.
 *
 * Reconnection (qemu's reconnect-delay=N): when the connection fails, requests in flight
 * and new ones wait up to N seconds from the failure while it is re-established (attempts
 * back off up to 1 s apart; the export must keep its size) and are then sent again. Past
 * that, or with the default N = 0, they fail with EIO; later requests each try one
 * reconnection (at most one a second), so a server that comes back is used again. */
#include "blk/driver.h"
#include "blk/nbd_proto.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NSLOTS 16
#define NCOVER 32                  /* content chunks a read may arrive in */
#define ZERO_CHUNK (1u << 20)
#define STATUS_MAX (1u << 30)      /* block status query length */

struct slot {
	bool busy, done, retry;
	int result;                    /* 0 or negative errno */
	uint64_t cookie, gen, off;
	uint16_t type;
	uint32_t len;
	const struct iovec *iov;
	int iovcnt;
	struct { uint64_t s, e; } cov[NCOVER];
	int ncov;
	uint64_t covered;
	bool bs_got;
	uint32_t bs_len, bs_flags;
	char msg[160];                 /* the server's error message */
	pthread_cond_t cond;
};

struct nbd_state {
	struct nbd_addr a;
	struct nbd_neg n;
	pthread_mutex_t lock, send_lock, rmw_lock;
	pthread_cond_t slot_cond, conn_cond;
	int fd;
	uint64_t gen, seq;
	bool broken, connecting, reader;
	struct timespec broken_at, last_try;
	char why[256];                 /* why the connection broke */
	struct slot slots[NSLOTS];
};

static double since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static int skip_bytes(int fd, uint64_t n)
{
	uint8_t buf[4096];
	while (n) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		int r = nbd_read_full(fd, buf, k);
		if (r < 0)
			return r;
		n -= k;
	}
	return 0;
}

/* Read n bytes of the stream into an iovec at byte `skip`. */
static int read_into_iov(int fd, const struct iovec *iov, int iovcnt, size_t skip, size_t n)
{
	for (int i = 0; i < iovcnt && n; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - skip < n ? iov[i].iov_len - skip : n;
		int r = nbd_read_full(fd, (char *)iov[i].iov_base + skip, k);
		if (r < 0)
			return r;
		n -= k;
		skip = 0;
	}
	return n ? -EPROTO : 0;
}

/* Caller holds s->lock. Only the current connection can break. */
static void conn_broken(struct nbd_state *s, uint64_t gen, const char *why)
{
	if (s->gen != gen || s->broken)
		return;
	s->broken = true;
	clock_gettime(CLOCK_MONOTONIC, &s->broken_at);
	snprintf(s->why, sizeof(s->why), "%s", why);
	shutdown(s->fd, SHUT_RDWR); /* the reader, if any, returns at once */
	for (int i = 0; i < NSLOTS; i++)
		if (s->slots[i].busy)
			pthread_cond_signal(&s->slots[i].cond);
	pthread_cond_broadcast(&s->conn_cond);
}

static struct slot *find_slot(struct nbd_state *s, uint64_t cookie, uint64_t gen)
{
	struct slot *sl = &s->slots[cookie % NSLOTS];
	return sl->busy && !sl->done && sl->cookie == cookie && sl->gen == gen ? sl : NULL;
}

static void complete(struct slot *sl, int result)
{
	if (sl->result == 0)
		sl->result = result;
	sl->done = true;
	pthread_cond_signal(&sl->cond);
}

/* A content chunk [s, e) of a read: inside the request, overlapping nothing before. */
static bool cover(struct slot *sl, uint64_t s, uint64_t e)
{
	if (s < sl->off || e > sl->off + sl->len || s >= e || sl->ncov == NCOVER)
		return false;
	for (int i = 0; i < sl->ncov; i++)
		if (s < sl->cov[i].e && sl->cov[i].s < e)
			return false;
	sl->cov[sl->ncov].s = s;
	sl->cov[sl->ncov++].e = e;
	sl->covered += e - s;
	return true;
}

static int chunk_error(struct nbd_state *s, int fd, struct slot *sl, uint32_t len,
                       uint16_t type)
{
	uint8_t h[sizeof(struct nbd_wire_error)];
	if (len < sizeof(h) || (type == NBD_REPLY_TYPE_ERROR_OFFSET && len < sizeof(h) + 8))
		return -EPROTO;
	int r = nbd_read_full(fd, h, sizeof(h));
	uint32_t e = nbd_get32(h), ml = nbd_get16(h + 4);
	if (r < 0)
		return r;
	if (ml > len - sizeof(h))
		return -EPROTO;
	char msg[sizeof(sl->msg)];
	size_t keep = ml < sizeof(msg) - 1 ? ml : sizeof(msg) - 1;
	if ((r = nbd_read_full(fd, msg, keep)) < 0 || (r = skip_bytes(fd, len - sizeof(h) - keep)))
		return r;
	msg[keep] = 0;
	pthread_mutex_lock(&s->lock);
	if (sl->result == 0) {
		sl->result = -(e ? nbd_wire_to_errno(e) : EIO);
		snprintf(sl->msg, sizeof(sl->msg), "%s", msg);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Read one reply (or one structured chunk) and deliver it. */
static int read_reply(struct nbd_state *s, int fd, uint64_t gen, const char **why)
{
	uint8_t h[20];
	int r = nbd_read_full(fd, h, 4);
	if (r < 0)
		return r;
	uint32_t magic = nbd_get32(h);
	bool simple = magic == NBD_SIMPLE_REPLY_MAGIC;
	if (!simple && (magic != NBD_STRUCTURED_REPLY_MAGIC || !s->n.structured)) {
		*why = "bad reply magic";
		return -EPROTO;
	}
	if ((r = nbd_read_full(fd, h + 4, simple ? 12 : 16)) < 0)
		return r;
	struct nbd_chunk c;
	if (simple) {
		c = (struct nbd_chunk){ .flags = NBD_REPLY_FLAG_DONE, .cookie = nbd_get64(h + 8) };
	} else {
		nbd_chunk_decode_rest(h + 4, &c);
	}
	pthread_mutex_lock(&s->lock);
	struct slot *sl = find_slot(s, c.cookie, gen);
	pthread_mutex_unlock(&s->lock);
	if (!sl) {
		*why = "reply to no request in flight";
		return -EPROTO;
	}
	bool rd = sl->type == NBD_CMD_READ;
	if (simple) {
		uint32_t e = nbd_get32(h + 4);
		if (rd && !e) {
			if (s->n.structured) {
				*why = "simple reply with data after structured replies were agreed";
				return -EPROTO;
			}
			if ((r = read_into_iov(fd, sl->iov, sl->iovcnt, 0, sl->len)) < 0)
				return r;
			sl->covered = sl->len;
		}
		pthread_mutex_lock(&s->lock);
		complete(sl, e ? -nbd_wire_to_errno(e) : 0);
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	*why = "malformed structured reply chunk";
	switch (c.type) {
	case NBD_REPLY_TYPE_NONE:
		if (c.length || !(c.flags & NBD_REPLY_FLAG_DONE))
			return -EPROTO;
		break;
	case NBD_REPLY_TYPE_OFFSET_DATA: {
		uint8_t o[8];
		if (!rd || c.length <= 8 || (r = nbd_read_full(fd, o, 8)) < 0)
			return r < 0 ? r : -EPROTO;
		uint64_t off = nbd_get64(o), n = c.length - 8;
		if (off > UINT64_MAX - n || !cover(sl, off, off + n)) {
			*why = "data chunk outside the read or overlapping";
			return -EPROTO;
		}
		if ((r = read_into_iov(fd, sl->iov, sl->iovcnt, (size_t)(off - sl->off), (size_t)n)) < 0)
			return r;
		break;
	}
	case NBD_REPLY_TYPE_OFFSET_HOLE: {
		uint8_t o[12];
		if (!rd || c.length != 12 || (r = nbd_read_full(fd, o, 12)) < 0)
			return r < 0 ? r : -EPROTO;
		uint64_t off = nbd_get64(o), n = nbd_get32(o + 8);
		if (off > UINT64_MAX - n || !cover(sl, off, off + n)) {
			*why = "hole chunk outside the read or overlapping";
			return -EPROTO;
		}
		vt_iov_memset(sl->iov, sl->iovcnt, (size_t)(off - sl->off), 0, (size_t)n);
		break;
	}
	case NBD_REPLY_TYPE_BLOCK_STATUS: {
		uint8_t d[12];
		if (sl->type != NBD_CMD_BLOCK_STATUS || c.length < 12 || (c.length - 4) % 8 ||
		    (r = nbd_read_full(fd, d, 12)) < 0)
			return r < 0 ? r : -EPROTO;
		uint32_t len = nbd_get32(d + 4);
		if (!len) {
			*why = "empty block status extent";
			return -EPROTO;
		}
		if (nbd_get32(d) == s->n.ctx_id && !sl->bs_got) {
			sl->bs_got = true;
			sl->bs_len = len;
			sl->bs_flags = nbd_get32(d + 8);
		}
		if ((r = skip_bytes(fd, c.length - 12)) < 0) /* more extents: one is enough */
			return r;
		break;
	}
	default:
		if (!(c.type & NBD_REPLY_TYPE_ERROR_BIT))
			return -EPROTO;
		if ((r = chunk_error(s, fd, sl, c.length, c.type)) < 0)
			return r;
		break;
	}
	if (c.flags & NBD_REPLY_FLAG_DONE) {
		int res = 0;
		if (rd && sl->covered != sl->len)
			res = -EIO; /* success claimed without all the data */
		if (sl->type == NBD_CMD_BLOCK_STATUS && !sl->bs_got)
			res = -EIO;
		pthread_mutex_lock(&s->lock);
		complete(sl, res);
		pthread_mutex_unlock(&s->lock);
	}
	return 0;
}

/* Wait for sl's reply, reading replies (anyone's) while no one else does. Holds lock. */
static void wait_reply(struct nbd_state *s, struct slot *sl)
{
	while (!sl->done) {
		if (s->broken || s->gen != sl->gen) {
			if (!s->reader) { /* nobody can still be writing into its buffers */
				sl->done = sl->retry = true;
				sl->result = -EIO;
				break;
			}
		} else if (!s->reader) {
			s->reader = true;
			int fd = s->fd;
			uint64_t gen = s->gen;
			const char *why = NULL;
			pthread_mutex_unlock(&s->lock);
			int r = read_reply(s, fd, gen, &why);
			pthread_mutex_lock(&s->lock);
			s->reader = false;
			if (r < 0) {
				char msg[200];
				snprintf(msg, sizeof(msg), "%s", why && r == -EPROTO ? why : strerror(-r));
				conn_broken(s, gen, msg);
			}
			if (sl->done || r < 0) { /* leaving the reader role: hand it on */
				for (int i = 0; i < NSLOTS; i++) {
					struct slot *o = &s->slots[i];
					if (o->busy && !o->done && o != sl) {
						pthread_cond_signal(&o->cond);
						if (r == 0)
							break; /* one new reader is enough */
					}
				}
				pthread_cond_broadcast(&s->conn_cond);
			}
			continue;
		}
		pthread_cond_wait(&sl->cond, &s->lock);
	}
}

/* Connected, or reconnect within the delay. Holds lock (released while dialing). */
static int ensure_connected(struct blk *b, struct nbd_state *s, struct vt_error *err)
{
	double backoff = 0.05;
	for (;;) {
		if (!s->broken)
			return 0;
		if (s->connecting || s->reader) { /* someone dials, or the old reader leaves */
			pthread_cond_wait(&s->conn_cond, &s->lock);
			continue;
		}
		bool in_delay = since(&s->broken_at) < s->a.reconnect_delay;
		if (!in_delay && since(&s->last_try) < 1.0)
			return vt_error_set(err, EIO, b->filename, "I/O", "connection to the NBD server "
			                    "lost (%s)", s->why);
		s->connecting = true;
		clock_gettime(CLOCK_MONOTONIC, &s->last_try);
		pthread_mutex_unlock(&s->lock);
		struct nbd_neg n;
		struct vt_error e2 = { 0 };
		int fd = -1, r = nbd_connect(b->filename, &s->a, &fd, &n, &e2);
		if (r == 0 && n.size != s->n.size) {
			close(fd);
			r = vt_error_set(&e2, EIO, b->filename, "reconnect", "the export changed size");
		}
		pthread_mutex_lock(&s->lock);
		s->connecting = false;
		pthread_cond_broadcast(&s->conn_cond);
		if (r == 0) {
			pthread_mutex_lock(&s->send_lock);
			close(s->fd);
			s->fd = fd;
			s->n = n;
			s->gen++;
			s->broken = false;
			pthread_mutex_unlock(&s->send_lock);
			return 0;
		}
		if (since(&s->broken_at) >= s->a.reconnect_delay)
			return vt_error_set(err, EIO, b->filename, "I/O", "connection to the NBD server "
			                    "lost (%s); reconnecting failed: %s", s->why, e2.why);
		pthread_mutex_unlock(&s->lock);
		struct timespec ts = { 0, (long)(backoff * 1e9) };
		nanosleep(&ts, NULL);
		backoff = backoff * 2 < 1.0 ? backoff * 2 : 1.0;
		pthread_mutex_lock(&s->lock);
	}
}

struct rq {
	uint16_t type, flags;
	uint64_t off;
	uint32_t len;
	const struct iovec *iov;       /* READ: where data goes; WRITE: the payload */
	int iovcnt;
	uint32_t bs_len, bs_flags;     /* BLOCK_STATUS result */
};

static int request(struct blk *b, struct rq *q, struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	static const char *const what[] = { "read", "write", "disconnect", "flush", "trim",
	                                    "cache", "write zeroes", "block status" };
	pthread_mutex_lock(&s->lock);
	for (;;) {
		int r = ensure_connected(b, s, err);
		if (r < 0) {
			pthread_mutex_unlock(&s->lock);
			return r;
		}
		struct slot *sl = NULL;
		for (int i = 0; i < NSLOTS && !sl; i++)
			if (!s->slots[i].busy)
				sl = &s->slots[i];
		if (!sl) {
			pthread_cond_wait(&s->slot_cond, &s->lock);
			continue;
		}
		uint64_t idx = (uint64_t)(sl - s->slots);
		sl->busy = true;
		sl->done = sl->retry = sl->bs_got = false;
		sl->result = sl->ncov = 0;
		sl->covered = 0;
		sl->bs_len = sl->bs_flags = 0;
		sl->msg[0] = 0;
		sl->gen = s->gen;
		sl->off = q->off;
		sl->type = q->type;
		sl->len = q->len;
		sl->iov = q->iov;
		sl->iovcnt = q->iovcnt;
		sl->cookie = ++s->seq * NSLOTS + idx;
		uint64_t gen = s->gen;
		pthread_mutex_unlock(&s->lock);

		uint8_t h[sizeof(struct nbd_wire_request)];
		struct nbd_request req = { .flags = q->flags, .type = q->type, .cookie = sl->cookie,
		                           .offset = q->off, .length = q->len };
		nbd_request_encode(h, &req);
		struct iovec v[1 + 64];
		int nv = 1;
		v[0] = (struct iovec){ h, sizeof(h) };
		if (q->type == NBD_CMD_WRITE)
			for (int i = 0; i < q->iovcnt && nv < 65; i++)
				v[nv++] = q->iov[i];
		pthread_mutex_lock(&s->send_lock);
		r = s->gen == gen ? nbd_send_iov(s->fd, v, nv) : -ECONNRESET;
		pthread_mutex_unlock(&s->send_lock);

		pthread_mutex_lock(&s->lock);
		if (r < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "send: %s", strerror(-r));
			conn_broken(s, gen, msg);
		}
		wait_reply(s, sl);
		int result = sl->result;
		bool retry = sl->retry;
		char smsg[sizeof(sl->msg)];
		snprintf(smsg, sizeof(smsg), "%s", sl->msg);
		q->bs_len = sl->bs_len;
		q->bs_flags = sl->bs_flags;
		sl->busy = false;
		pthread_cond_signal(&s->slot_cond);
		if (retry && since(&s->broken_at) < s->a.reconnect_delay)
			continue; /* sent again on the new connection */
		pthread_mutex_unlock(&s->lock);
		if (retry)
			return vt_error_set(err, EIO, b->filename, what[q->type], "connection to the NBD "
			                    "server lost (%s)", s->why);
		if (result < 0)
			return vt_error_set(err, -result, b->filename, what[q->type], "%s%s%s",
			                    strerror(-result), smsg[0] ? ": server reported: " : "", smsg);
		return 0;
	}
}

/* Sub-iovec for [skip, skip+len) of iov, in out (capacity cap). */
static int sub_iov(const struct iovec *iov, int iovcnt, size_t skip, size_t len,
                   struct iovec *out, int cap)
{
	int n = 0;
	for (int i = 0; i < iovcnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (n == cap)
			return -1;
		size_t k = iov[i].iov_len - skip < len ? iov[i].iov_len - skip : len;
		out[n++] = (struct iovec){ (char *)iov[i].iov_base + skip, k };
		len -= k;
		skip = 0;
	}
	return n;
}

/* Aligned reads and writes, split at the server's maximum payload. */
static int rw_aligned(struct blk *b, uint16_t type, uint64_t off, const struct iovec *iov,
                      int iovcnt, size_t total, struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	size_t done = 0;
	while (done < total) {
		size_t n = total - done < s->n.max_payload ? total - done : s->n.max_payload;
		struct iovec sub[64], *heap = NULL;
		int cnt = sub_iov(iov, iovcnt, done, n, sub, 64);
		if (cnt < 0) { /* a long scattered iovec: bounce through one buffer */
			heap = malloc(sizeof(*heap));
			void *bb = heap ? malloc(n) : NULL;
			if (!bb) {
				free(heap);
				return vt_error_set(err, ENOMEM, b->filename, "I/O", NULL);
			}
			*heap = (struct iovec){ bb, n };
			if (type == NBD_CMD_WRITE)
				vt_iov_to_buf(iov, iovcnt, done, bb, n);
		}
		struct rq q = { .type = type, .off = off + done, .len = (uint32_t)n,
		                .iov = heap ? heap : sub, .iovcnt = heap ? 1 : cnt };
		int r = request(b, &q, err);
		if (heap) {
			if (r == 0 && type == NBD_CMD_READ)
				vt_iov_from_buf(iov, iovcnt, done, heap->iov_base, n);
			free(heap->iov_base);
			free(heap);
		}
		if (r < 0)
			return r;
		done += n;
	}
	return 0;
}

/* Requests must be multiples of the server's minimum block size (except at the end of
 * an export whose size is not): widen unaligned ones through a bounce buffer. */
static int rw(struct blk *b, uint16_t type, uint64_t off, const struct iovec *iov,
              int iovcnt, struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt);
	uint64_t m = s->n.min_block;
	if (total == 0)
		return 0;
	uint64_t end = off + total;
	bool tail_ok = end % m == 0 || end == b->size;
	if (m == 1 || (off % m == 0 && tail_ok))
		return rw_aligned(b, type, off, iov, iovcnt, total, err);
	uint64_t as = off - off % m, ae = end % m ? end + (m - end % m) : end;
	if (ae > b->size)
		ae = b->size;
	size_t blen = (size_t)(ae - as);
	uint8_t *bb = malloc(blen);
	if (!bb)
		return vt_error_set(err, ENOMEM, b->filename, "I/O", NULL);
	struct iovec bv = { bb, blen };
	int r;
	if (type == NBD_CMD_READ) {
		r = rw_aligned(b, NBD_CMD_READ, as, &bv, 1, blen, err);
		if (r == 0)
			vt_iov_from_buf(iov, iovcnt, 0, bb + (off - as), total);
	} else {
		pthread_mutex_lock(&s->rmw_lock);
		r = rw_aligned(b, NBD_CMD_READ, as, &bv, 1, blen, err);
		if (r == 0) {
			vt_iov_to_buf(iov, iovcnt, 0, bb + (off - as), total);
			r = rw_aligned(b, NBD_CMD_WRITE, as, &bv, 1, blen, err);
		}
		pthread_mutex_unlock(&s->rmw_lock);
	}
	free(bb);
	return r;
}

static int nbd_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                      struct vt_error *err)
{
	return rw(b, NBD_CMD_READ, off, iov, iovcnt, err);
}

static int nbd_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct vt_error *err)
{
	return rw(b, NBD_CMD_WRITE, off, iov, iovcnt, err);
}

static int nbd_flush(struct blk *b, struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	struct rq q = { .type = NBD_CMD_FLUSH };
	return s->n.flags & NBD_FLAG_SEND_FLUSH ? request(b, &q, err) : 0;
}

/* The aligned middle of [off, off+len) with a payload-free command, in pieces. */
static int ranged(struct blk *b, uint16_t type, uint16_t flags, uint64_t off, uint64_t len,
                  struct vt_error *err)
{
	while (len) {
		uint64_t n = len < 0x80000000u ? len : 0x80000000u;
		struct rq q = { .type = type, .flags = flags, .off = off, .len = (uint32_t)n };
		int r = request(b, &q, err);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int write_zero_bytes(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err)
{
	size_t chunk = len < ZERO_CHUNK ? (size_t)len : ZERO_CHUNK;
	void *z = calloc(1, chunk ? chunk : 1);
	int r = z ? 0 : vt_error_set(err, ENOMEM, b->filename, "write zeroes", NULL);
	while (len && r == 0) {
		size_t n = len < chunk ? (size_t)len : chunk;
		struct iovec v = { z, n };
		r = rw(b, NBD_CMD_WRITE, off, &v, 1, err);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

static int nbd_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                            struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	uint64_t m = s->n.min_block, end = off + len;
	if (!(s->n.flags & NBD_FLAG_SEND_WRITE_ZEROES))
		return write_zero_bytes(b, off, len, err);
	uint64_t as = (off + m - 1) / m * m, ae = end == b->size ? end : end - end % m;
	if (as >= ae)
		return write_zero_bytes(b, off, len, err);
	uint16_t f = flags & BLK_MAY_UNMAP ? 0 : NBD_CMD_FLAG_NO_HOLE;
	int r = as > off ? write_zero_bytes(b, off, as - off, err) : 0;
	if (r == 0)
		r = ranged(b, NBD_CMD_WRITE_ZEROES, f, as, ae - as, err);
	if (r == 0 && ae < end)
		r = write_zero_bytes(b, ae, end - ae, err);
	return r;
}

static int nbd_discard(struct blk *b, uint64_t off, uint64_t len, struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	uint64_t m = s->n.min_block, end = off + len;
	uint64_t as = (off + m - 1) / m * m, ae = end == b->size ? end : end - end % m;
	if (!(s->n.flags & NBD_FLAG_SEND_TRIM) || as >= ae)
		return 0; /* advisory */
	return ranged(b, NBD_CMD_TRIM, 0, as, ae - as, err);
}

static int nbd_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                            struct vt_error *err)
{
	struct nbd_state *s = b->opaque;
	uint64_t m = s->n.min_block;
	st->flags = BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID; /* raw over the export */
	st->host_offset = off;
	st->len = len;
	if (!s->n.have_ctx || off % m) {
		st->flags |= BLK_STATUS_DATA;
		if (off % m)
			st->len = m - off % m < len ? m - off % m : len;
		return 0;
	}
	uint64_t n = len < STATUS_MAX ? len : STATUS_MAX;
	if (n % m && off + n != b->size)
		n -= n % m;
	if (n == 0) {
		st->flags |= BLK_STATUS_DATA;
		return 0;
	}
	struct rq q = { .type = NBD_CMD_BLOCK_STATUS, .flags = NBD_CMD_FLAG_REQ_ONE, .off = off,
	                .len = (uint32_t)n };
	int r = request(b, &q, err);
	if (r < 0)
		return r;
	st->len = q.bs_len < n ? q.bs_len : n;
	if (!(q.bs_flags & NBD_STATE_HOLE))
		st->flags |= BLK_STATUS_DATA;
	if (q.bs_flags & NBD_STATE_ZERO)
		st->flags |= BLK_STATUS_ZERO;
	return 0;
}

static int nbd_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	info->format = "raw"; /* what qemu-img info says of an NBD export */
	return 0;
}

static void nbd_close(struct blk *b)
{
	struct nbd_state *s = b->opaque;
	if (!s)
		return;
	if (!s->broken) { /* a soft disconnect; no reply comes */
		uint8_t h[sizeof(struct nbd_wire_request)];
		struct nbd_request req = { .type = NBD_CMD_DISC };
		nbd_request_encode(h, &req);
		struct iovec v = { h, sizeof(h) };
		nbd_send_iov(s->fd, &v, 1);
	}
	close(s->fd);
	for (int i = 0; i < NSLOTS; i++)
		pthread_cond_destroy(&s->slots[i].cond);
	pthread_cond_destroy(&s->slot_cond);
	pthread_cond_destroy(&s->conn_cond);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->send_lock);
	pthread_mutex_destroy(&s->rmw_lock);
	free(s);
	b->opaque = NULL;
}

static int nbd_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct nbd_state *s = calloc(1, sizeof(*s));
	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	s->fd = -1;
	int r = nbd_parse_address(b->filename, &s->a, err);
	if (r == 0)
		r = nbd_connect(b->filename, &s->a, &s->fd, &s->n, err);
	if (r == 0 && o->writable && (s->n.flags & NBD_FLAG_READ_ONLY))
		r = vt_error_set(err, EROFS, b->filename, "open", "the NBD export is read-only");
	if (r < 0) {
		if (s->fd >= 0)
			close(s->fd);
		free(s);
		return r;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->send_lock, NULL);
	pthread_mutex_init(&s->rmw_lock, NULL);
	pthread_cond_init(&s->slot_cond, NULL);
	pthread_cond_init(&s->conn_cond, NULL);
	for (int i = 0; i < NSLOTS; i++)
		pthread_cond_init(&s->slots[i].cond, NULL);
	b->opaque = s;
	b->size = s->n.size;
	return 0;
}

const struct blk_driver blk_driver_nbd = {
	.name = "nbd",
	.open = nbd_open,
	.close = nbd_close,
	.preadv = nbd_preadv,
	.pwritev = nbd_pwritev,
	.flush = nbd_flush,
	.write_zeroes = nbd_write_zeroes,
	.discard = nbd_discard,
	.block_status = nbd_block_status,
	.get_info = nbd_get_info,
};
