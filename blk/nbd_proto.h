/* The NBD protocol on the wire (NetworkBlockDevice/nbd doc/proto.md): magic numbers,
 * option, command and reply codes, and the fixed-size messages with explicit big-endian
 * encoders and decoders. Shared by the client driver (blk/nbd.c) and the server behind
 * `vtool img serve` (img/nbd_server*.c); nothing here does I/O.
 *
 * Every message is described by a packed struct whose size is asserted, and converted
 * field by field (never by casting a received buffer), so a peer's bytes are only ever
 * read through these decoders. Also the one hook blk.c needs: which file names are NBD
 * addresses rather than local files. */
#ifndef VTOOL_BLK_NBD_PROTO_H
#define VTOOL_BLK_NBD_PROTO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_DEFAULT_PORT 10809

/* Handshake. */
#define NBD_MAGIC           0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC      0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_CLISERV_MAGIC   0x0000420281861253ull /* oldstyle */
#define NBD_REP_MAGIC       0x0003e889045565a9ull /* option replies */

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)  /* handshake flags (server) */
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)  /* client flags */
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME      1u
#define NBD_OPT_ABORT            2u
#define NBD_OPT_LIST             3u
#define NBD_OPT_STARTTLS         5u
#define NBD_OPT_INFO             6u
#define NBD_OPT_GO               7u
#define NBD_OPT_STRUCTURED_REPLY 8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT 10u

/* Option replies; errors have bit 31 set. */
#define NBD_REP_ACK              1u
#define NBD_REP_SERVER           2u
#define NBD_REP_INFO             3u
#define NBD_REP_META_CONTEXT     4u
#define NBD_REP_FLAG_ERROR       (1u << 31)
#define NBD_REP_ERR_UNSUP        (NBD_REP_FLAG_ERROR | 1u)
#define NBD_REP_ERR_POLICY       (NBD_REP_FLAG_ERROR | 2u)
#define NBD_REP_ERR_INVALID      (NBD_REP_FLAG_ERROR | 3u)
#define NBD_REP_ERR_PLATFORM     (NBD_REP_FLAG_ERROR | 4u)
#define NBD_REP_ERR_TLS_REQD     (NBD_REP_FLAG_ERROR | 5u)
#define NBD_REP_ERR_UNKNOWN      (NBD_REP_FLAG_ERROR | 6u)
#define NBD_REP_ERR_SHUTDOWN     (NBD_REP_FLAG_ERROR | 7u)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8u)
#define NBD_REP_ERR_TOO_BIG      (NBD_REP_FLAG_ERROR | 9u)

/* NBD_REP_INFO payload types. */
#define NBD_INFO_EXPORT      0u
#define NBD_INFO_NAME        1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE  3u

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Requests. */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_CMD_READ         0u
#define NBD_CMD_WRITE        1u
#define NBD_CMD_DISC         2u
#define NBD_CMD_FLUSH        3u
#define NBD_CMD_TRIM         4u
#define NBD_CMD_CACHE        5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u

#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Replies. */
#define NBD_SIMPLE_REPLY_MAGIC     0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBD_REPLY_FLAG_DONE        (1u << 0)
#define NBD_REPLY_TYPE_NONE         0u
#define NBD_REPLY_TYPE_OFFSET_DATA  1u
#define NBD_REPLY_TYPE_OFFSET_HOLE  2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR_BIT    (1u << 15)
#define NBD_REPLY_TYPE_ERROR        (NBD_REPLY_TYPE_ERROR_BIT | 1u)
#define NBD_REPLY_TYPE_ERROR_OFFSET (NBD_REPLY_TYPE_ERROR_BIT | 2u)

/* base:allocation flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)
/* qemu:dirty-bitmap:NAME flags. */
#define NBD_STATE_DIRTY (1u << 0)

/* Error values (the protocol's own, not the host's errno numbering). */
#define NBD_EPERM      1u
#define NBD_EIO        5u
#define NBD_ENOMEM     12u
#define NBD_EINVAL     22u
#define NBD_ENOSPC     28u
#define NBD_EOVERFLOW  75u
#define NBD_ENOTSUP    95u
#define NBD_ESHUTDOWN  108u

/* Limits both ends apply. */
#define NBD_MAX_STRING     4096u            /* names, descriptions, messages */
#define NBD_MAX_PAYLOAD    (32u << 20)      /* read/write payload, as qemu */
#define NBD_MAX_OPTION_LEN (64u << 10)      /* an option's data we are willing to parse */

/* Wire layouts. Sizes are what the protocol sends; fields are big-endian. */
struct nbd_wire_greeting {      /* S: newstyle greeting */
	uint64_t magic, opts_magic;
	uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_greeting) == 18, "greeting");

struct nbd_wire_option {        /* C: option header, then `length` bytes */
	uint64_t magic;
	uint32_t option, length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_option) == 16, "option header");

struct nbd_wire_option_reply {  /* S: option reply header, then `length` bytes */
	uint64_t magic;
	uint32_t option, type, length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_option_reply) == 20, "option reply header");

struct nbd_wire_export_name_reply { /* S: after NBD_OPT_EXPORT_NAME (+124 zeros) */
	uint64_t size;
	uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_export_name_reply) == 10, "export name reply");

struct nbd_wire_info_export {   /* NBD_INFO_EXPORT payload */
	uint16_t type;
	uint64_t size;
	uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_info_export) == 12, "info export");

struct nbd_wire_info_block_size {
	uint16_t type;
	uint32_t min, preferred, max;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_info_block_size) == 14, "info block size");

struct nbd_wire_request {
	uint32_t magic;
	uint16_t flags, type;
	uint64_t cookie, offset;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_request) == 28, "request");

struct nbd_wire_simple_reply {
	uint32_t magic, error;
	uint64_t cookie;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_simple_reply) == 16, "simple reply");

struct nbd_wire_chunk {         /* structured reply chunk header */
	uint32_t magic;
	uint16_t flags, type;
	uint64_t cookie;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_chunk) == 20, "structured reply chunk");

struct nbd_wire_hole {          /* NBD_REPLY_TYPE_OFFSET_HOLE payload */
	uint64_t offset;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_hole) == 12, "hole chunk");

struct nbd_wire_extent {        /* one block status descriptor */
	uint32_t length, flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_extent) == 8, "extent");

struct nbd_wire_error {         /* NBD_REPLY_TYPE_ERROR payload head, then the message */
	uint32_t error;
	uint16_t message_length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_wire_error) == 6, "error chunk");

/* Big-endian loads and stores on byte buffers. */
static inline uint16_t nbd_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t nbd_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t nbd_get64(const uint8_t *p)
{
	return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4);
}
static inline uint8_t *nbd_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}
static inline uint8_t *nbd_put32(uint8_t *p, uint32_t v)
{
	nbd_put16(p, (uint16_t)(v >> 16));
	nbd_put16(p + 2, (uint16_t)v);
	return p + 4;
}
static inline uint8_t *nbd_put64(uint8_t *p, uint64_t v)
{
	nbd_put32(p, (uint32_t)(v >> 32));
	nbd_put32(p + 4, (uint32_t)v);
	return p + 8;
}

/* Decoded messages (host order) and their codecs; buffers are exactly the wire size. */
struct nbd_request {
	uint16_t flags, type;
	uint64_t cookie, offset;
	uint32_t length;
};
/* false when the magic is wrong (the stream cannot be trusted any further). */
static inline bool nbd_request_decode(const uint8_t b[sizeof(struct nbd_wire_request)],
                                      struct nbd_request *r)
{
	r->flags = nbd_get16(b + 4);
	r->type = nbd_get16(b + 6);
	r->cookie = nbd_get64(b + 8);
	r->offset = nbd_get64(b + 16);
	r->length = nbd_get32(b + 24);
	return nbd_get32(b) == NBD_REQUEST_MAGIC;
}
static inline void nbd_request_encode(uint8_t b[sizeof(struct nbd_wire_request)],
                                      const struct nbd_request *r)
{
	uint8_t *p = nbd_put32(b, NBD_REQUEST_MAGIC);
	p = nbd_put16(p, r->flags);
	p = nbd_put16(p, r->type);
	p = nbd_put64(p, r->cookie);
	p = nbd_put64(p, r->offset);
	nbd_put32(p, r->length);
}

struct nbd_chunk {
	uint16_t flags, type;
	uint64_t cookie;
	uint32_t length;
};
static inline void nbd_chunk_encode(uint8_t b[sizeof(struct nbd_wire_chunk)],
                                    const struct nbd_chunk *c)
{
	uint8_t *p = nbd_put32(b, NBD_STRUCTURED_REPLY_MAGIC);
	p = nbd_put16(p, c->flags);
	p = nbd_put16(p, c->type);
	p = nbd_put64(p, c->cookie);
	nbd_put32(p, c->length);
}
/* The 16 bytes after the magic of a structured chunk (the caller read the magic). */
static inline void nbd_chunk_decode_rest(const uint8_t b[16], struct nbd_chunk *c)
{
	c->flags = nbd_get16(b);
	c->type = nbd_get16(b + 2);
	c->cookie = nbd_get64(b + 4);
	c->length = nbd_get32(b + 12);
}

static inline void nbd_simple_reply_encode(uint8_t b[sizeof(struct nbd_wire_simple_reply)],
                                           uint32_t error, uint64_t cookie)
{
	nbd_put64(nbd_put32(nbd_put32(b, NBD_SIMPLE_REPLY_MAGIC), error), cookie);
}

static inline void nbd_option_reply_encode(uint8_t b[sizeof(struct nbd_wire_option_reply)],
                                           uint32_t option, uint32_t type, uint32_t length)
{
	nbd_put32(nbd_put32(nbd_put32(nbd_put64(b, NBD_REP_MAGIC), option), type), length);
}

/* errno (positive) to the protocol's error value and back. */
static inline uint32_t nbd_errno_to_wire(int e)
{
	switch (e) {
	case 0: return 0;
	case EPERM: case EROFS: case EACCES: return NBD_EPERM;
	case ENOMEM: return NBD_ENOMEM;
	case EINVAL: return NBD_EINVAL;
	case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
	case EOVERFLOW: return NBD_EOVERFLOW;
	case ENOTSUP: return NBD_ENOTSUP;
	case ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;
	}
}
static inline int nbd_wire_to_errno(uint32_t e)
{
	switch (e) {
	case NBD_EPERM: return EPERM;
	case NBD_EIO: return EIO;
	case NBD_ENOMEM: return ENOMEM;
	case NBD_ENOSPC: return ENOSPC;
	case NBD_EOVERFLOW: return EOVERFLOW;
	case NBD_ENOTSUP: return ENOTSUP;
	case NBD_ESHUTDOWN: return ESHUTDOWN;
	default: return EINVAL; /* as the protocol asks for values it does not define */
	}
}

/* The client's connection setup (blk/nbd_connect.c), for blk/nbd.c only. */
struct nbd_addr {
	char host[256], port[16], path[108];    /* path: a unix socket instead of host */
	char export_name[NBD_MAX_STRING + 1];
	double reconnect_delay;                 /* seconds (qemu's reconnect-delay) */
	/* The host's address as the first connection resolved it: reconnections dial it
	 * again without a name lookup (which reads files a sandboxed I/O thread may not). */
	unsigned char resolved[128];            /* a struct sockaddr_storage */
	unsigned resolved_len;
	int family, socktype, protocol;
};
struct nbd_neg {                            /* what a handshake established */
	uint64_t size;
	uint16_t flags;                         /* transmission flags */
	bool structured, have_ctx;              /* base:allocation selected as ctx_id */
	uint32_t ctx_id, min_block, max_payload;
};
struct iovec;
struct vt_error;
int nbd_parse_address(const char *filename, struct nbd_addr *a, struct vt_error *err);
/* Dial and negotiate; on success *fd is a blocking socket in the transmission phase. */
int nbd_connect(const char *name, struct nbd_addr *a, int *fd, struct nbd_neg *n,
                struct vt_error *err);
/* Whole reads (-ECONNRESET at end of stream) and writes; negative errno. */
int nbd_read_full(int fd, void *buf, size_t n);
int nbd_send_iov(int fd, struct iovec *v, int cnt);

/* Is this file name an NBD address (nbd://, nbd+tcp://, nbd+unix://, nbds://, qemu's
 * legacy nbd:host:port and nbd:unix:path, or a driver=nbd option string)? blk.c then
 * hands it to the NBD driver instead of opening a local file. */
bool blk_nbd_is_address(const char *filename);

#endif
