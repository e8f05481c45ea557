/* blkio: drive the block layer from integration tests, so that qemu-img/qemu-io can judge
 * the result.
 *
 *   blkio write IMG FMT SHADOW SEED COUNT   random writes and zero-writes through blk.h;
 *                                           the same bytes go to the raw file SHADOW
 *   blkio dump IMG FMT OUT [MAX]            read the image (up to MAX bytes) into OUT
 *   blkio writec IMG FMT SHADOW SEED COUNT  compressed whole-cluster writes (half of them
 *                                           compressible) through blk_write_compressed
 *   blkio hold IMG FMT SECONDS [ro]         keep the image open (read-write, or read-only)
 *                                           for a while
 *   blkio crash IMG FMT SEED                write forever (until killed); used to test
 *                                           what a SIGKILL at a random point leaves
 *
 * Offsets and lengths are random, unaligned and cluster-straddling; a third of the writes
 * are multi-cluster. Exit status 0 on success, 1 with a vtool-style error otherwise. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blk/blk.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int fail(const struct vt_error *e)
{
	vt_error_print(e, stderr);
	return 1;
}

static int do_write(const char *img, const char *fmt, const char *shadow, uint64_t seed,
                    int count)
{
	struct blk_open_opts o = { .format = fmt, .writable = true };
	struct vt_error err = { 0 };
	struct blk *b;
	if (blk_open(img, &o, &b, &err) < 0)
		return fail(&err);
	int sfd = open(shadow, O_RDWR);
	if (sfd < 0) {
		perror(shadow);
		return 1;
	}
	uint64_t size = blk_size(b);
	rng_state = seed * 2654435761u + 1;
	size_t maxlen = 3u << 20;
	uint8_t *buf = malloc(maxlen);
	for (int i = 0; i < count; i++) {
		uint64_t kind = rnd() % 10;
		uint64_t len = kind < 3 ? rnd() % maxlen + 1 : rnd() % 70000 + 1;
		if (len > size)
			len = size;
		uint64_t off = rnd() % (size - len + 1);
		if (rnd() % 4 == 0)
			off &= ~4095ull; /* some aligned requests too */
		if (kind == 9) {
			unsigned flags = rnd() % 2 ? BLK_MAY_UNMAP : 0;
			if (blk_write_zeroes(b, off, len, flags, &err) < 0)
				goto failed;
			memset(buf, 0, len);
		} else {
			uint8_t pat = (uint8_t)(rnd() | 1);
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)(pat + k / 512);
			if (blk_pwrite(b, off, buf, len, &err) < 0)
				goto failed;
		}
		if (pwrite(sfd, buf, len, (off_t)off) != (ssize_t)len) {
			perror("shadow write");
			return 1;
		}
	}
	free(buf);
	close(sfd);
	return blk_close(b, &err) < 0 ? fail(&err) : 0;
failed:
	/* Report the first error; the image is closed without a second message. */
	free(buf);
	close(sfd);
	blk_close(b, NULL);
	return fail(&err);
}

static int do_dump(const char *img, const char *fmt, const char *out, uint64_t max)
{
	struct blk_open_opts o = { .format = fmt };
	struct vt_error err = { 0 };
	struct blk *b;
	if (blk_open(img, &o, &b, &err) < 0)
		return fail(&err);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror(out);
		return 1;
	}
	uint64_t size = blk_size(b) < max ? blk_size(b) : max;
	size_t chunk = 1u << 20;
	uint8_t *buf = malloc(chunk);
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		if (blk_pread(b, off, buf, n, &err) < 0) {
			free(buf);
			close(fd);
			blk_close(b, NULL);
			return fail(&err);
		}
		if (write(fd, buf, n) != (ssize_t)n) {
			perror(out);
			return 1;
		}
	}
	free(buf);
	close(fd);
	blk_close(b, NULL);
	return 0;
}

static int do_writec(const char *img, const char *fmt, const char *shadow, uint64_t seed,
                     int count)
{
	struct blk_open_opts o = { .format = fmt, .writable = true };
	struct vt_error err = { 0 };
	struct blk *b;
	if (blk_open(img, &o, &b, &err) < 0)
		return fail(&err);
	int sfd = open(shadow, O_RDWR);
	if (sfd < 0) {
		perror(shadow);
		blk_close(b, NULL);
		return 1;
	}
	uint64_t cs = blk_cluster_size(b), size = blk_size(b);
	uint64_t clusters = (size + cs - 1) / cs;
	uint8_t *buf = malloc(cs);
	rng_state = seed * 2654435761u + 1;
	int rc = 0;
	for (int i = 0; i < count && rc == 0; i++) {
		uint64_t c = rnd() % clusters, len = c * cs + cs > size ? size - c * cs : cs;
		bool text = rnd() % 2;
		for (uint64_t k = 0; k < len; k++)
			buf[k] = text ? (uint8_t)("vtool compresses "[(k + c) % 17]) : (uint8_t)rnd();
		if (blk_write_compressed(b, c * cs, buf, len, &err) < 0)
			rc = fail(&err);
		else if (pwrite(sfd, buf, len, (off_t)(c * cs)) != (ssize_t)len)
			rc = 1;
	}
	free(buf);
	close(sfd);
	if (blk_close(b, &err) < 0 && rc == 0)
		rc = fail(&err);
	return rc;
}

static int do_hold(const char *img, const char *fmt, int seconds, bool ro)
{
	struct blk_open_opts o = { .format = fmt, .writable = !ro };
	struct vt_error err = { 0 };
	struct blk *b;
	if (blk_open(img, &o, &b, &err) < 0)
		return fail(&err);
	printf("open\n");
	fflush(stdout);
	sleep((unsigned)seconds);
	return blk_close(b, &err) < 0 ? fail(&err) : 0;
}

int main(int argc, char **argv)
{
	if (argc == 7 && !strcmp(argv[1], "writec"))
		return do_writec(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 0), atoi(argv[6]));
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "hold"))
		return do_hold(argv[2], argv[3], atoi(argv[4]), argc == 6 && !strcmp(argv[5], "ro"));
	if (argc == 5 && !strcmp(argv[1], "crash"))
		return do_write(argv[2], argv[3], "/dev/null", strtoull(argv[4], NULL, 0), 1 << 30);
	if (argc == 7 && !strcmp(argv[1], "write"))
		return do_write(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 0), atoi(argv[6]));
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "dump"))
		return do_dump(argv[2], argv[3], argv[4],
		               argc == 6 ? strtoull(argv[5], NULL, 0) : UINT64_MAX);
	fprintf(stderr, "usage: blkio write IMG FMT SHADOW SEED COUNT | blkio dump IMG FMT OUT\n");
	return 2;
}
