/* The inside of struct nbd_conn, shared by its two halves: nbd_server_neg.c (the
 * connection's life, input buffering, handshake and options) and nbd_server_io.c (the
 * transmission phase). Nothing else includes this.
 *
 * Input: bytes are appended to `in` (header-sized messages, option data up to
 * NBD_MAX_OPTION_LEN) and consumed from `pos`; a write's payload that is not already in
 * `in` is received straight into `buf`, and bytes to be skipped (an oversized option or
 * a refused write's payload) into `in` as scratch. So a connection never holds more than
 * NBD_CONN_IN_CAP + NBD_IO_CHUNK bytes, whatever lengths the client announces. */
#ifndef VTOOL_IMG_NBD_SERVER_INT_H
#define VTOOL_IMG_NBD_SERVER_INT_H

#include "blk/nbd_proto.h"
#include "img/nbd_server.h"

#define NBD_CONN_IN_CAP (NBD_MAX_OPTION_LEN + 128u)
#define NBD_IO_CHUNK    (1u << 20)  /* a request's data is moved in pieces this big */
/* Drained bytes beyond this make the client a denial of service: hang up instead. */
#define NBD_MAX_DRAIN   (64ull << 20)

enum nbd_conn_state {
	NBD_ST_CLIENT_FLAGS,   /* greeting sent, 4 bytes of client flags expected */
	NBD_ST_OPTION,         /* option header + data expected */
	NBD_ST_OPTION_DRAIN,   /* skipping an option too long to parse, then refuse it */
	NBD_ST_REQUEST,        /* transmission: request header expected */
	NBD_ST_PAYLOAD,        /* receiving a write's payload into buf */
	NBD_ST_PAYLOAD_DRAIN,  /* skipping a refused write's payload, then reply */
	NBD_ST_DONE,           /* the session is over */
};

#define CTX_SELECTED 1u          /* ctx_bitmaps: chosen by NBD_OPT_SET_META_CONTEXT */
#define CTX_QUERIED  2u          /* ctx_bitmaps: matched by the option being handled */

/* Kinds of problems reported once per connection (bit numbers). */
enum nbd_report {
	NBD_R_PROTOCOL,   /* stream out of sync: bad magic, client flags: hang up */
	NBD_R_OPTION,     /* malformed or refused option */
	NBD_R_RANGE,      /* request past the end of the export */
	NBD_R_ALIGN,      /* unaligned to the advertised minimum block size */
	NBD_R_FLAGS,      /* command flags not valid or not advertised */
	NBD_R_COMMAND,    /* unknown command */
	NBD_R_SIZE,       /* length over the maximum payload */
	NBD_R_READONLY,   /* write to a read-only export */
	NBD_R_CONTEXT,    /* block status without negotiating it */
	NBD_R_IO,         /* the block layer failed a request */
};

struct nbd_conn {
	const struct nbd_export *exp;
	const struct nbd_conn_ops *ops;
	void *opaque;
	enum nbd_conn_state state;
	uint8_t *in;
	size_t pos, len;            /* unconsumed bytes: in[pos, len) */
	unsigned reported;          /* enum nbd_report bits already reported */

	/* Negotiated. */
	bool no_zeroes, structured, check_align, negotiated;
	bool ctx_base, ctx_depth;   /* selected metadata contexts for our export */
	uint8_t *ctx_bitmaps;       /* per exp->bitmaps[i]: CTX_SELECTED, CTX_QUERIED */
	size_t ctx_nbitmaps;        /* how many are selected */
	uint32_t option_drained;    /* option being skipped (NBD_ST_OPTION_DRAIN) */
	uint64_t drain_left;

	/* The request whose payload is being received or skipped. */
	struct nbd_request req;
	uint32_t req_error;         /* NBD error to reply after a skipped payload */
	uint64_t payload_done;      /* bytes of the payload handled so far */
	int write_err;              /* first failure while writing pieces (negative errno) */
	uint8_t *buf;               /* I/O buffer, NBD_IO_CHUNK bytes, allocated on use */
	size_t buf_fill;
};

/* Report once per kind: "what" (printf format) through ops->report. */
void nbd_conn_report(struct nbd_conn *c, enum nbd_report kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int nbd_conn_send(struct nbd_conn *c, const struct iovec *iov, int iovcnt);
/* The transmission flags of our export for this client. */
uint16_t nbd_conn_tflags(const struct nbd_conn *c);
/* The I/O buffer (allocated on first use). NULL when out of memory. */
uint8_t *nbd_conn_buf(struct nbd_conn *c);

/* nbd_server_io.c: consume requests from in[pos, len). Returns 0 (need more bytes),
 * 1 (session over) or a negative errno (drop the connection); *progress is set when
 * something was consumed. */
int nbd_io_step(struct nbd_conn *c, bool *progress);
/* n payload bytes were received into buf (NBD_ST_PAYLOAD). */
int nbd_io_payload(struct nbd_conn *c, size_t n);
/* A skipped payload is complete: send the reply. */
int nbd_io_drained(struct nbd_conn *c);

#endif
