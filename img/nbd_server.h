/* The NBD server behind `vtool img serve`, in two halves:
 *
 * - struct nbd_conn (nbd_server_neg.c: handshake and options, nbd_server_io.c: requests)
 *   is one client's protocol state. It knows no sockets: bytes go in through
 *   nbd_conn_rx_buffer()/nbd_conn_rx_done() and replies leave through ops->send, so the
 *   fuzz target drives exactly the code the server runs. Every request is validated
 *   before it reaches the block layer, and is executed synchronously on the calling
 *   thread (no hand-off per request).
 * - nbd_server_run() (nbd_server.c) owns the sockets: it accepts clients and serves all
 *   of them with a fixed pool of threads over epoll, one thread per ready connection.
 * - struct nbd_bitmap (nbd_bitmap.c) is a persistent dirty bitmap exported as the
 *   qemu:dirty-bitmap:NAME metadata context (-B).
 *
 * For img/serve.c and tests/fuzz only. */
#ifndef VTOOL_IMG_NBD_SERVER_H
#define VTOOL_IMG_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blk/blk.h"

enum nbd_detect_zeroes { NBD_DZ_OFF, NBD_DZ_ON, NBD_DZ_UNMAP };

struct nbd_bitmap;

/* Look NAME up in b, then down its backing chain (qemu-nbd's order), and read its bits.
 * Errors are qemu-nbd's: "Bitmap 'NAME' is not found", "... is inconsistent and cannot
 * be used". writable: the export takes writes (an enabled bitmap of b then tracks them). */
int nbd_bitmap_open(struct blk *b, const char *name, bool writable, struct nbd_bitmap **out,
                    struct vt_error *err);
void nbd_bitmap_free(struct nbd_bitmap *bm);
const char *nbd_bitmap_context(const struct nbd_bitmap *bm); /* "qemu:dirty-bitmap:NAME" */
bool nbd_bitmap_is(const struct nbd_bitmap *bm, const uint8_t *name, size_t n);
/* A write-type request ran on the export (whatever its outcome). */
void nbd_bitmap_written(struct nbd_bitmap *bm);
/* Hold the bits for one request, read again first if a write made them stale: 0 or a
 * negative errno (then not held). */
int nbd_bitmap_lock(struct nbd_bitmap *bm);
void nbd_bitmap_unlock(struct nbd_bitmap *bm);
/* Held: the run of equal bits from off, as bytes: dirty or not, and its length, at
 * least 1 and at most end - off (off < end). */
void nbd_bitmap_run(const struct nbd_bitmap *bm, uint64_t off, uint64_t end, bool *dirty,
                    uint64_t *len);

/* The one export a server offers (qemu-nbd serves one image per process, too). */
struct nbd_export {
	struct blk *blk;
	const char *name;          /* "" is the default export */
	const char *description;   /* NULL: none */
	uint64_t size;
	bool readonly;
	bool multi_conn;           /* advertise NBD_FLAG_CAN_MULTI_CONN */
	bool discard_unmap;        /* TRIM and zeroing may deallocate (--discard=unmap) */
	enum nbd_detect_zeroes detect_zeroes;
	bool allocation_depth;     /* offer the qemu:allocation-depth context */
	/* qemu:dirty-bitmap: contexts, context id 2 + i, in qemu-nbd's order (the last -B
	 * first); the same name may come twice, as qemu-nbd allows. */
	struct nbd_bitmap *const *bitmaps;
	size_t nbitmaps;
	uint32_t min_block;        /* advertised minimum block size (1 or 512) */
};

struct nbd_conn;

struct nbd_conn_ops {
	/* Send all of iov, or fail with a negative errno (the connection is then dropped). */
	int (*send)(void *opaque, const struct iovec *iov, int iovcnt);
	/* One line about this client's misbehaviour or a failed request; the connection
	 * calls it once per kind of problem, however often the client repeats it. */
	void (*report)(void *opaque, const char *msg);
};

struct nbd_conn *nbd_conn_new(const struct nbd_export *exp, const struct nbd_conn_ops *ops,
                              void *opaque);
void nbd_conn_free(struct nbd_conn *c);
/* Send the greeting. 0 or negative errno. */
int nbd_conn_start(struct nbd_conn *c);
/* Where the next bytes from the client go: never empty while the connection lives. */
void nbd_conn_rx_buffer(struct nbd_conn *c, void **buf, size_t *len);
/* n bytes were received into that buffer: handle every complete message. Returns 0 to
 * go on, 1 when the client ended the session (NBD_CMD_DISC, NBD_OPT_ABORT), or a
 * negative errno when the connection must be dropped (protocol violation, send failure). */
int nbd_conn_rx_done(struct nbd_conn *c, size_t n);
/* The client has entered the transmission phase. */
bool nbd_conn_negotiated(const struct nbd_conn *c);

struct nbd_server_opts {
	int shared;         /* clients served at once (-e); 0: no limit but the pool's */
	bool persistent;    /* -t: do not exit when the last client leaves */
	bool verbose;       /* -v: a line per connection */
	int workers;        /* threads in the pool (0: chosen from the CPU count) */
	int handshake_limit; /* seconds a client may take to reach transmission; 0: any */
	const char *prog;   /* prefix of log lines */
};

/* Serve exp on the listening sockets until SIGTERM/SIGINT/SIGHUP or, unless persistent,
 * until the last client that reached the transmission phase has gone. Those signals
 * must be blocked in the calling thread (the server takes them with signalfd). */
int nbd_server_run(const struct nbd_export *exp, const int *listen_fds, int nfds,
                   const struct nbd_server_opts *o, struct vt_error *err);

#endif
