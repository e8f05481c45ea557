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
 *   blkio script IMG FMT SCRIPT [CACHE]     run a powercut workload script (see
 *                                           tests/tools/powercut/powercut.py): guest
 *                                           writes with stamped sectors, zeroes, discards,
 *                                           compressed writes and flushes
 *
 * Offsets and lengths are random, unaligned and cluster-straddling; a third of the writes
 * are multi-cluster. Exit status 0 on success, 1 with a vtool-style error otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
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

/* ---- blkio script: the powercut workload executor ----
 * Script lines: "seed N", "depth N", "write OFF LEN", "zero OFF LEN", "discard OFF LEN",
 * "wcomp OFF LEN" (one compressed cluster), "flush"; '#' starts a comment. Ops are
 * numbered from 0 in file order (seed and depth lines are not ops). The ops between two
 * flushes run on `depth` threads at once; a flush waits for all of them, then flushes.
 * The bytes of a write are those of powercut.py's sector_data(): every 512-byte guest
 * sector gets a 16-byte stamp ("PCw1", op number, sector number; little-endian) and a
 * filler that is pseudo-random (write) or text (wcomp, so that it compresses). */
enum sop { SOP_WRITE, SOP_ZERO, SOP_DISCARD, SOP_WCOMP, SOP_FLUSH };

struct script_op {
	enum sop kind;
	uint64_t off, len;
};

struct script {
	struct blk *b;
	uint64_t seed;
	struct script_op *ops;
	size_t first, end;     /* the batch being run: ops[first, end) */
	atomic_size_t next;
	atomic_int failed;
	pthread_mutex_t lock;
	struct vt_error err;
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static const char powercut_text[] = "power cut test: compressible filler text. ";

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void sector_data(uint64_t seed, uint32_t op, uint64_t sector, bool text, uint8_t *out)
{
	memcpy(out, "PCw1", 4);
	put_le(out + 4, op, 4);
	put_le(out + 8, sector, 8);
	if (text) {
		size_t tl = sizeof(powercut_text) - 1;
		for (size_t k = 16; k < 512; k++)
			out[k] = (uint8_t)powercut_text[(k + op + sector) % tl];
		return;
	}
	uint64_t x = seed ^ ((uint64_t)op * 0xD1B54A32D192ED03ull) ^ (sector * 0x8CB92BA72F3D8DD7ull);
	for (size_t k = 16; k < 512; k += 8)
		put_le(out + k, splitmix(&x), 8);
}

static void op_data(uint64_t seed, uint32_t op, uint64_t off, uint64_t len, bool text,
                    uint8_t *buf)
{
	uint8_t sec[512];
	uint64_t p = off;
	while (p < off + len) {
		uint64_t s = p / 512, in = p % 512;
		uint64_t n = 512 - in < off + len - p ? 512 - in : off + len - p;
		sector_data(seed, op, s, text, sec);
		memcpy(buf + (p - off), sec + in, n);
		p += n;
	}
}

static int run_op(struct script *sc, size_t i, struct vt_error *err)
{
	const struct script_op *o = &sc->ops[i];
	switch (o->kind) {
	case SOP_ZERO:
		return blk_write_zeroes(sc->b, o->off, o->len, 0, err);
	case SOP_DISCARD:
		return blk_discard(sc->b, o->off, o->len, err);
	case SOP_FLUSH:
		return blk_flush(sc->b, err);
	case SOP_WRITE:
	case SOP_WCOMP: {
		void *buf;
		if (posix_memalign(&buf, 4096, o->len ? o->len : 1))
			return vt_error_set(err, ENOMEM, blk_filename(sc->b), "write", NULL);
		op_data(sc->seed, (uint32_t)i, o->off, o->len, o->kind == SOP_WCOMP, buf);
		int r = o->kind == SOP_WCOMP ? blk_write_compressed(sc->b, o->off, buf, o->len, err)
		                             : blk_pwrite(sc->b, o->off, buf, o->len, err);
		free(buf);
		return r;
	}
	}
	return -EINVAL;
}

static void *script_worker(void *arg)
{
	struct script *sc = arg;
	struct vt_error err = { 0 };
	for (;;) {
		size_t i = atomic_fetch_add(&sc->next, 1);
		if (i >= sc->end || atomic_load(&sc->failed))
			break;
		if (run_op(sc, i, &err) < 0) {
			pthread_mutex_lock(&sc->lock);
			if (!atomic_exchange(&sc->failed, 1))
				sc->err = err;
			pthread_mutex_unlock(&sc->lock);
			break;
		}
	}
	return NULL;
}

static int parse_script(const char *path, struct script *sc, size_t *nops, int *depth)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return -1;
	}
	char line[256];
	size_t cap = 0;
	int lineno = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		char word[16];
		unsigned long long a = 0, b = 0;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		int n = sscanf(line, "%15s %llu %llu", word, &a, &b);
		if (n <= 0)
			continue;
		if (!strcmp(word, "seed") && n == 2) {
			sc->seed = a;
			continue;
		}
		if (!strcmp(word, "depth") && n == 2) {
			*depth = a < 1 ? 1 : a > 64 ? 64 : (int)a;
			continue;
		}
		struct script_op o = { .off = a, .len = b };
		if (!strcmp(word, "flush") && n == 1)
			o.kind = SOP_FLUSH;
		else if (!strcmp(word, "write") && n == 3)
			o.kind = SOP_WRITE;
		else if (!strcmp(word, "zero") && n == 3)
			o.kind = SOP_ZERO;
		else if (!strcmp(word, "discard") && n == 3)
			o.kind = SOP_DISCARD;
		else if (!strcmp(word, "wcomp") && n == 3)
			o.kind = SOP_WCOMP;
		else {
			fprintf(stderr, "%s:%d: bad line\n", path, lineno);
			fclose(f);
			return -1;
		}
		if (*nops == cap) {
			cap = cap ? cap * 2 : 64;
			void *p = realloc(sc->ops, cap * sizeof(*sc->ops));
			if (!p) {
				fclose(f);
				return -1;
			}
			sc->ops = p;
		}
		sc->ops[(*nops)++] = o;
	}
	fclose(f);
	return 0;
}

static int do_script(const char *img, const char *fmt, const char *path, const char *cache)
{
	struct script sc = { .seed = 0 };
	size_t nops = 0;
	int depth = 1, rc = 0;
	if (parse_script(path, &sc, &nops, &depth) < 0)
		return 1;
	struct blk_open_opts o = { .format = fmt, .writable = true };
	struct vt_error err = { 0 };
	if (cache && blk_cache_parse(cache, &o.cache) < 0) {
		fprintf(stderr, "blkio: bad cache mode '%s'\n", cache);
		free(sc.ops);
		return 1;
	}
	if (blk_open(img, &o, &sc.b, &err) < 0) {
		free(sc.ops);
		return fail(&err);
	}
	pthread_mutex_init(&sc.lock, NULL);
	for (size_t i = 0; i < nops && rc == 0;) {
		if (sc.ops[i].kind == SOP_FLUSH) {
			if (blk_flush(sc.b, &err) < 0)
				rc = fail(&err);
			i++;
			continue;
		}
		size_t end = i;
		while (end < nops && sc.ops[end].kind != SOP_FLUSH)
			end++;
		sc.first = i;
		sc.end = end;
		atomic_store(&sc.next, i);
		size_t nthreads = end - i < (size_t)depth ? end - i : (size_t)depth;
		pthread_t tids[64];
		for (size_t t = 1; t < nthreads; t++)
			pthread_create(&tids[t], NULL, script_worker, &sc);
		script_worker(&sc);
		for (size_t t = 1; t < nthreads; t++)
			pthread_join(tids[t], NULL);
		if (atomic_load(&sc.failed))
			rc = fail(&sc.err);
		i = end;
	}
	if (blk_close(sc.b, rc ? NULL : &err) < 0 && rc == 0)
		rc = fail(&err);
	pthread_mutex_destroy(&sc.lock);
	free(sc.ops);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc == 7 && !strcmp(argv[1], "writec"))
		return do_writec(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 0), atoi(argv[6]));
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "script"))
		return do_script(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "hold"))
		return do_hold(argv[2], argv[3], atoi(argv[4]), argc == 6 && !strcmp(argv[5], "ro"));
	if (argc == 5 && !strcmp(argv[1], "crash"))
		return do_write(argv[2], argv[3], "/dev/null", strtoull(argv[4], NULL, 0), 1 << 30);
	if (argc == 7 && !strcmp(argv[1], "write"))
		return do_write(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 0), atoi(argv[6]));
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "dump"))
		return do_dump(argv[2], argv[3], argv[4],
		               argc == 6 ? strtoull(argv[5], NULL, 0) : UINT64_MAX);
	fprintf(stderr, "usage: blkio write IMG FMT SHADOW SEED COUNT | blkio dump IMG FMT OUT |\n"
	                "       blkio script IMG FMT SCRIPT [CACHE] | ... (see blkio.c)\n");
	return 2;
}
