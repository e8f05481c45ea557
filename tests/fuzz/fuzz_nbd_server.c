/* libFuzzer target: an untrusted NBD client. The input is the byte stream a client
 * sends (handshake, options, requests with payloads), fed to the server's connection
 * state machine (img/nbd_server_neg.c, img/nbd_server_io.c) in pieces whose sizes the
 * input also chooses, against a small raw image in memory. The first byte picks the
 * export's settings (read-only, minimum block size, allocation depth, zero detection,
 * discard). Replies are discarded; the connection must never touch memory out of bounds
 * (ASan/UBSan), allocate without bound or hang, and whatever it accepts must keep the
 * block layer's requests inside the image (blk.c would refuse them, loudly, in tests). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "img/nbd_server.h"

#define IMAGE_SIZE (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink_send(void *opaque, const struct iovec *iov, int iovcnt)
{
	size_t *sent = opaque;
	for (int i = 0; i < iovcnt; i++)
		*sent += iov[i].iov_len;
	return *sent > (256u << 20) ? -EPIPE : 0; /* a reply flood ends the session */
}

static const struct nbd_conn_ops ops = { .send = sink_send, .report = NULL };

static struct blk *image(void)
{
	static struct blk *b;
	if (b)
		return b;
	int fd = memfd_create("fuzz-nbd", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, IMAGE_SIZE) < 0)
		return NULL;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct blk_open_opts o = { .format = "raw", .writable = true };
	struct vt_error err;
	if (blk_open(path, &o, &b, &err) < 0)
		b = NULL;
	return b; /* kept for the whole run, like the server keeps its image */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct blk *b = image();
	if (!b || size < 2)
		return 0;
	uint8_t cfg = data[0], split = data[1];
	struct nbd_export exp = {
		.blk = b, .name = cfg & 0x80 ? "disk" : "", .description = "fuzz",
		.size = IMAGE_SIZE - (cfg & 0x40 ? 1000 : 0), .readonly = cfg & 1,
		.multi_conn = cfg & 2, .discard_unmap = cfg & 4,
		.detect_zeroes = cfg & 8 ? (cfg & 4 ? NBD_DZ_UNMAP : NBD_DZ_ON) : NBD_DZ_OFF,
		.allocation_depth = cfg & 16, .min_block = cfg & 32 ? 512 : 1,
	};
	size_t sent = 0;
	struct nbd_conn *c = nbd_conn_new(&exp, &ops, &sent);
	if (!c)
		return 0;
	data += 2;
	size -= 2;
	int r = nbd_conn_start(c);
	size_t piece = split ? split * 16u : 65536;
	while (r == 0 && size) {
		void *buf;
		size_t room;
		nbd_conn_rx_buffer(c, &buf, &room);
		size_t n = size < room ? size : room;
		if (n > piece)
			n = piece;
		memcpy(buf, data, n);
		data += n;
		size -= n;
		r = nbd_conn_rx_done(c, n);
	}
	nbd_conn_free(c);
	return 0;
}
