/* One NBD client connection: its life, its input buffering, and the fixed-newstyle
 * handshake with option haggling (EXPORT_NAME, ABORT, LIST, STARTTLS refused, INFO, GO,
 * STRUCTURED_REPLY, LIST/SET_META_CONTEXT). Every option's data is parsed with its
 * lengths checked against what the client actually sent; malformed options get
 * NBD_REP_ERR_INVALID and the session goes on, as the protocol asks; only a stream that
 * can no longer be trusted (bad magic, unknown client flags) ends it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/nbd_server_int.h"

#define ID_BASE_ALLOCATION  0u  /* metadata context ids, as qemu numbers them */
#define ID_ALLOCATION_DEPTH 1u
#define ID_DIRTY_BITMAP     2u  /* + the bitmap's index in exp->bitmaps */
#define BITMAP_NS           "qemu:dirty-bitmap:"
static const char ctx_base_name[] = "base:allocation";
static const char ctx_depth_name[] = "qemu:allocation-depth";

struct nbd_conn *nbd_conn_new(const struct nbd_export *exp, const struct nbd_conn_ops *ops,
                              void *opaque)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->in = malloc(NBD_CONN_IN_CAP);
	c->ctx_bitmaps = calloc(exp->nbitmaps + 1, 1);
	if (!c->in || !c->ctx_bitmaps) {
		free(c->in);
		free(c->ctx_bitmaps);
		free(c);
		return NULL;
	}
	c->exp = exp;
	c->ops = ops;
	c->opaque = opaque;
	c->state = NBD_ST_CLIENT_FLAGS;
	return c;
}

void nbd_conn_free(struct nbd_conn *c)
{
	if (!c)
		return;
	free(c->in);
	free(c->buf);
	free(c->ctx_bitmaps);
	free(c);
}

bool nbd_conn_negotiated(const struct nbd_conn *c)
{
	return c->negotiated;
}

void nbd_conn_report(struct nbd_conn *c, enum nbd_report kind, const char *fmt, ...)
{
	if (c->reported & (1u << kind))
		return;
	c->reported |= 1u << kind;
	if (!c->ops->report)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->ops->report(c->opaque, msg);
}

int nbd_conn_send(struct nbd_conn *c, const struct iovec *iov, int iovcnt)
{
	return c->ops->send(c->opaque, iov, iovcnt);
}

uint8_t *nbd_conn_buf(struct nbd_conn *c)
{
	if (!c->buf)
		c->buf = malloc(NBD_IO_CHUNK);
	return c->buf;
}

uint16_t nbd_conn_tflags(const struct nbd_conn *c)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	             NBD_FLAG_SEND_CACHE;
	if (c->structured)
		f |= NBD_FLAG_SEND_DF;
	if (c->exp->readonly)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	if (c->exp->multi_conn)
		f |= NBD_FLAG_CAN_MULTI_CONN;
	return f;
}

int nbd_conn_start(struct nbd_conn *c)
{
	uint8_t g[sizeof(struct nbd_wire_greeting)];
	nbd_put16(nbd_put64(nbd_put64(g, NBD_MAGIC), NBD_OPTS_MAGIC),
	          NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	struct iovec iov = { g, sizeof(g) };
	return nbd_conn_send(c, &iov, 1);
}

/* A client's string, printable, for messages. */
static void printable(char *out, size_t outlen, const uint8_t *s, size_t n)
{
	size_t i, max = outlen - 1 < 64 ? outlen - 1 : 64;
	for (i = 0; i < n && i < max; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
	out[i] = 0;
}

static int send_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
                      size_t len)
{
	uint8_t h[sizeof(struct nbd_wire_option_reply)];
	nbd_option_reply_encode(h, opt, type, (uint32_t)len);
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)data, len } };
	return nbd_conn_send(c, iov, len ? 2 : 1);
}

/* An error reply with a message, and the report that goes with it. */
static int reply_err(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int reply_err(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (type != NBD_REP_ERR_UNSUP && type != NBD_REP_ERR_POLICY)
		nbd_conn_report(c, NBD_R_OPTION, "option %u refused: %s", opt, msg);
	return send_reply(c, opt, type, msg, strlen(msg));
}

static bool is_our_export(const struct nbd_conn *c, const uint8_t *name, size_t n)
{
	return strlen(c->exp->name) == n && !memcmp(c->exp->name, name, n);
}

static void enter_transmission(struct nbd_conn *c)
{
	c->negotiated = true;
	c->state = NBD_ST_REQUEST;
}

static int opt_export_name(struct nbd_conn *c, const uint8_t *d, uint32_t n)
{
	if (!is_our_export(c, d, n)) {
		char name[80];
		printable(name, sizeof(name), d, n);
		nbd_conn_report(c, NBD_R_OPTION, "export '%s' not present (NBD_OPT_EXPORT_NAME "
		                "cannot be refused: hanging up)", name);
		return -ENOENT;
	}
	uint8_t r[sizeof(struct nbd_wire_export_name_reply) + 124] = { 0 };
	nbd_put16(nbd_put64(r, c->exp->size), nbd_conn_tflags(c));
	struct iovec iov = { r, c->no_zeroes ? sizeof(struct nbd_wire_export_name_reply)
	                                     : sizeof(r) };
	int ret = nbd_conn_send(c, &iov, 1);
	if (ret == 0)
		enter_transmission(c);
	return ret;
}

static int opt_list(struct nbd_conn *c, uint32_t n)
{
	if (n)
		return reply_err(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
		                 "NBD_OPT_LIST takes no data");
	size_t nl = strlen(c->exp->name);
	size_t dl = c->exp->description ? strlen(c->exp->description) : 0;
	uint8_t *p = malloc(4 + nl + dl);
	if (!p)
		return -ENOMEM;
	nbd_put32(p, (uint32_t)nl);
	memcpy(p + 4, c->exp->name, nl);
	if (dl)
		memcpy(p + 4 + nl, c->exp->description, dl);
	int r = send_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, p, 4 + nl + dl);
	free(p);
	return r ? r : send_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int send_info(struct nbd_conn *c, uint32_t opt, uint16_t type, const void *d,
                     size_t n)
{
	uint8_t buf[2 + NBD_MAX_STRING];
	if (n > NBD_MAX_STRING)
		n = NBD_MAX_STRING;
	nbd_put16(buf, type);
	memcpy(buf + 2, d, n);
	return send_reply(c, opt, NBD_REP_INFO, buf, 2 + n);
}

/* NBD_OPT_INFO and NBD_OPT_GO: 32-bit name length, name, 16-bit count, 16-bit requests. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t n)
{
	if (n < 6)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "option data too short");
	uint32_t nl = nbd_get32(d);
	if (nl > n - 6)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "export name longer than the option");
	if (nl > NBD_MAX_STRING)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "export name too long");
	const uint8_t *name = d + 4;
	uint16_t nreq = nbd_get16(d + 4 + nl);
	if ((uint64_t)4 + nl + 2 + 2ull * nreq != n)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "information request count does not match the option length");
	bool want_name = false, want_desc = false, want_bs = false;
	for (uint16_t i = 0; i < nreq; i++) {
		switch (nbd_get16(d + 4 + nl + 2 + 2u * i)) {
		case NBD_INFO_NAME: want_name = true; break;
		case NBD_INFO_DESCRIPTION: want_desc = true; break;
		case NBD_INFO_BLOCK_SIZE: want_bs = true; break;
		default: break; /* unknown requests are ignored */
		}
	}
	if (!is_our_export(c, name, nl)) {
		char pn[80];
		printable(pn, sizeof(pn), name, nl);
		return reply_err(c, opt, NBD_REP_ERR_UNKNOWN, "export '%s' not present", pn);
	}
	uint8_t e[sizeof(struct nbd_wire_info_export)];
	nbd_put16(nbd_put64(nbd_put16(e, NBD_INFO_EXPORT), c->exp->size), nbd_conn_tflags(c));
	int r = send_reply(c, opt, NBD_REP_INFO, e, sizeof(e));
	if (r == 0 && want_name)
		r = send_info(c, opt, NBD_INFO_NAME, c->exp->name, strlen(c->exp->name));
	if (r == 0 && want_desc && c->exp->description)
		r = send_info(c, opt, NBD_INFO_DESCRIPTION, c->exp->description,
		              strlen(c->exp->description));
	if (r == 0) { /* sent whether asked or not, as qemu does */
		uint8_t b[sizeof(struct nbd_wire_info_block_size)];
		uint8_t *p = nbd_put16(b, NBD_INFO_BLOCK_SIZE);
		p = nbd_put32(p, c->exp->min_block);
		p = nbd_put32(p, 4096);
		nbd_put32(p, NBD_MAX_PAYLOAD);
		r = send_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
	}
	if (r == 0)
		r = send_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (r == 0 && opt == NBD_OPT_GO) {
		/* Alignment is enforced only on clients that asked for the constraints. */
		c->check_align = want_bs && c->exp->min_block > 1;
		enter_transmission(c);
	}
	return r;
}

static int opt_structured(struct nbd_conn *c, uint32_t n)
{
	if (n)
		return reply_err(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
		                 "NBD_OPT_STRUCTURED_REPLY takes no data");
	if (c->structured)
		return reply_err(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
		                 "structured replies already negotiated");
	c->structured = true;
	return send_reply(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
}

static bool query_is(const uint8_t *q, uint32_t n, const char *s)
{
	return strlen(s) == n && !memcmp(q, s, n);
}

/* The id is for SET only: LIST replies carry 0, as qemu's do. */
static int send_context(struct nbd_conn *c, uint32_t opt, uint32_t id, const char *name)
{
	uint8_t buf[4 + NBD_MAX_STRING];
	size_t n = strlen(name);
	if (n > NBD_MAX_STRING) /* not from serve.c: bitmap names are at most 1023 bytes */
		n = NBD_MAX_STRING;
	nbd_put32(buf, opt == NBD_OPT_SET_META_CONTEXT ? id : 0);
	memcpy(buf + 4, name, n);
	return send_reply(c, opt, NBD_REP_META_CONTEXT, buf, 4 + n);
}

/* Mark the bitmaps a query names CTX_QUERIED, as qemu does: "qemu:" and
 * "qemu:dirty-bitmap:" list them all (LIST only), a full name picks the first of that
 * name. */
static void query_bitmaps(struct nbd_conn *c, bool set, const uint8_t *q, uint32_t ql)
{
	const struct nbd_export *e = c->exp;
	size_t pl = strlen(BITMAP_NS);
	bool all = !set && (query_is(q, ql, "qemu:") || query_is(q, ql, BITMAP_NS));
	for (size_t i = 0; i < e->nbitmaps; i++) {
		if (all) {
			c->ctx_bitmaps[i] |= CTX_QUERIED;
		} else if (ql > pl && !memcmp(q, BITMAP_NS, pl) &&
		           nbd_bitmap_is(e->bitmaps[i], q + pl, ql - pl)) {
			c->ctx_bitmaps[i] |= CTX_QUERIED;
			return;
		}
	}
}

/* LIST/SET_META_CONTEXT: name length, name, query count, then (length, query) pairs. */
static int opt_meta(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t n)
{
	bool set = opt == NBD_OPT_SET_META_CONTEXT;
	size_t nbm = c->exp->nbitmaps;
	if (set) { /* replaces the selection, even when it fails */
		c->ctx_base = c->ctx_depth = false;
		c->ctx_nbitmaps = 0;
	}
	for (size_t i = 0; i < nbm; i++) /* LIST leaves the selection alone */
		c->ctx_bitmaps[i] &= set ? 0 : (uint8_t)~CTX_QUERIED;
	if (!c->structured)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "structured replies must be negotiated first");
	if (n < 8)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "option data too short");
	uint32_t nl = nbd_get32(d);
	if (nl > n - 8 || nl > NBD_MAX_STRING)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "bad export name length");
	const uint8_t *name = d + 4;
	uint32_t nq = nbd_get32(d + 4 + nl);
	const uint8_t *p = d + 8 + nl;
	uint32_t left = n - 8 - nl;
	if (nq > left / 4)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "more queries than the option holds");
	bool base = false, depth = false;
	for (uint32_t i = 0; i < nq; i++) {
		if (left < 4)
			return reply_err(c, opt, NBD_REP_ERR_INVALID, "query past the end of the option");
		uint32_t ql = nbd_get32(p);
		if (ql > left - 4 || ql > NBD_MAX_STRING)
			return reply_err(c, opt, NBD_REP_ERR_INVALID, "query length past the end of "
			                 "the option");
		const uint8_t *q = p + 4;
		if (query_is(q, ql, ctx_base_name) || (!set && query_is(q, ql, "base:")))
			base = true;
		if (c->exp->allocation_depth && (query_is(q, ql, ctx_depth_name) ||
		                                 (!set && query_is(q, ql, "qemu:"))))
			depth = true;
		query_bitmaps(c, set, q, ql);
		p += 4 + ql;
		left -= 4 + ql;
	}
	if (left)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "data after the last query");
	if (!is_our_export(c, name, nl)) {
		char pn[80];
		printable(pn, sizeof(pn), name, nl);
		return reply_err(c, opt, NBD_REP_ERR_UNKNOWN, "export '%s' not present", pn);
	}
	if (nq == 0 && !set) { /* list everything */
		base = true;
		depth = c->exp->allocation_depth;
		for (size_t i = 0; i < nbm; i++)
			c->ctx_bitmaps[i] |= CTX_QUERIED;
	}
	int r = 0;
	if (base)
		r = send_context(c, opt, ID_BASE_ALLOCATION, ctx_base_name);
	if (r == 0 && depth)
		r = send_context(c, opt, ID_ALLOCATION_DEPTH, ctx_depth_name);
	size_t nsel = 0;
	for (size_t i = 0; i < nbm && r == 0; i++) {
		if (!(c->ctx_bitmaps[i] & CTX_QUERIED))
			continue;
		nsel++;
		r = send_context(c, opt, ID_DIRTY_BITMAP + (uint32_t)i,
		                 nbd_bitmap_context(c->exp->bitmaps[i]));
	}
	if (r == 0)
		r = send_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (r == 0 && set) {
		c->ctx_base = base;
		c->ctx_depth = depth;
		c->ctx_nbitmaps = nsel;
		for (size_t i = 0; i < nbm; i++)
			if (c->ctx_bitmaps[i] & CTX_QUERIED)
				c->ctx_bitmaps[i] = CTX_SELECTED;
	}
	return r;
}

static int handle_option(struct nbd_conn *c, uint32_t opt, const uint8_t *d, uint32_t n)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(c, d, n);
	case NBD_OPT_ABORT:
		send_reply(c, opt, NBD_REP_ACK, NULL, 0); /* the client may be gone already */
		c->state = NBD_ST_DONE;
		return 1;
	case NBD_OPT_LIST:
		return opt_list(c, n);
	case NBD_OPT_STARTTLS:
		return reply_err(c, opt, n ? NBD_REP_ERR_INVALID : NBD_REP_ERR_POLICY,
		                 "TLS is not configured on this server");
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(c, opt, d, n);
	case NBD_OPT_STRUCTURED_REPLY:
		return opt_structured(c, n);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta(c, opt, d, n);
	default:
		return reply_err(c, opt, NBD_REP_ERR_UNSUP, "option %u not supported", opt);
	}
}

/* An option too long to be one we parse has been skipped. */
static int option_drained(struct nbd_conn *c)
{
	c->state = NBD_ST_OPTION;
	if (c->option_drained == NBD_OPT_EXPORT_NAME) {
		nbd_conn_report(c, NBD_R_OPTION, "export name too long: hanging up");
		return -EINVAL;
	}
	return reply_err(c, c->option_drained, NBD_REP_ERR_TOO_BIG, "option data too long");
}

static int neg_step(struct nbd_conn *c, bool *progress)
{
	const uint8_t *p = c->in + c->pos;
	size_t avail = c->len - c->pos;

	if (c->state == NBD_ST_CLIENT_FLAGS) {
		if (avail < 4)
			return 0;
		uint32_t flags = nbd_get32(p);
		c->pos += 4;
		*progress = true;
		if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
			nbd_conn_report(c, NBD_R_PROTOCOL, "unknown client flags 0x%x: hanging up",
			                flags);
			return -EPROTO;
		}
		c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
		c->state = NBD_ST_OPTION;
		return 0;
	}
	if (avail < sizeof(struct nbd_wire_option))
		return 0;
	if (nbd_get64(p) != NBD_OPTS_MAGIC) {
		nbd_conn_report(c, NBD_R_PROTOCOL, "bad option magic: hanging up");
		return -EPROTO;
	}
	uint32_t opt = nbd_get32(p + 8), n = nbd_get32(p + 12);
	if (n > NBD_MAX_OPTION_LEN) {
		if (n > NBD_MAX_DRAIN) {
			nbd_conn_report(c, NBD_R_PROTOCOL, "option %u with %u bytes of data: "
			                "hanging up", opt, n);
			return -EMSGSIZE;
		}
		size_t take = avail - sizeof(struct nbd_wire_option);
		if (take > n)
			take = n;
		c->pos += sizeof(struct nbd_wire_option) + take;
		*progress = true;
		c->option_drained = opt;
		c->drain_left = n - take;
		c->state = NBD_ST_OPTION_DRAIN;
		return c->drain_left ? 0 : option_drained(c);
	}
	if (avail < sizeof(struct nbd_wire_option) + n)
		return 0;
	c->pos += sizeof(struct nbd_wire_option) + n;
	*progress = true;
	return handle_option(c, opt, p + sizeof(struct nbd_wire_option), n);
}

void nbd_conn_rx_buffer(struct nbd_conn *c, void **buf, size_t *len)
{
	switch (c->state) {
	case NBD_ST_PAYLOAD: {
		uint64_t left = c->req.length - c->payload_done - c->buf_fill;
		size_t room = NBD_IO_CHUNK - c->buf_fill;
		*buf = c->buf + c->buf_fill;
		*len = left < room ? (size_t)left : room;
		return;
	}
	case NBD_ST_OPTION_DRAIN:
	case NBD_ST_PAYLOAD_DRAIN:
		*buf = c->in;
		*len = c->drain_left < NBD_CONN_IN_CAP ? (size_t)c->drain_left : NBD_CONN_IN_CAP;
		return;
	case NBD_ST_DONE:
		*buf = c->in;
		*len = NBD_CONN_IN_CAP;
		return;
	default:
		*buf = c->in + c->len;
		*len = NBD_CONN_IN_CAP - c->len;
		return;
	}
}

int nbd_conn_rx_done(struct nbd_conn *c, size_t n)
{
	int r = 0;
	switch (c->state) {
	case NBD_ST_PAYLOAD:
		r = nbd_io_payload(c, n);
		break;
	case NBD_ST_OPTION_DRAIN:
	case NBD_ST_PAYLOAD_DRAIN:
		c->drain_left -= n;
		if (c->drain_left == 0)
			r = c->state == NBD_ST_OPTION_DRAIN ? option_drained(c) : nbd_io_drained(c);
		break;
	case NBD_ST_DONE:
		return 1;
	default:
		c->len += n;
		break;
	}
	while (r == 0) {
		bool progress = false;
		if (c->state == NBD_ST_CLIENT_FLAGS || c->state == NBD_ST_OPTION)
			r = neg_step(c, &progress);
		else if (c->state == NBD_ST_REQUEST)
			r = nbd_io_step(c, &progress);
		else
			break; /* payload or drain: `in` was emptied into it */
		if (!progress)
			break;
	}
	if (r)
		return r;
	if (c->pos == c->len) {
		c->pos = c->len = 0;
	} else if (c->pos) {
		memmove(c->in, c->in + c->pos, c->len - c->pos);
		c->len -= c->pos;
		c->pos = 0;
	}
	return 0;
}
