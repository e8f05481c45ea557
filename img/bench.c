/* vtool img bench: qemu-img bench's options and output, I/O through the block layer.
 * Requests are issued by threads doing synchronous I/O: one per core for cached I/O (a
 * hand-off per request would cost more than the I/O, see perf-anchors), `depth` of them
 * for O_DIRECT, where the time is spent waiting on the device. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "img/img.h"
#include "util/size.h"

static const char bench_help[] =
	"Usage: vtool img bench [-c count] [-d depth] [-f fmt] [--flush-interval=n] [-n]\n"
	"                       [--no-drain] [-o offset] [--pattern=p] [-q] [-s size]\n"
	"                       [-S step] [-t cache] [-w] [-U] filename\n"
	"\n"
	"Run a simple I/O benchmark on an image (qemu-img bench compatible).\n"
	"\n"
	"  -c count          number of requests (default 75000)\n"
	"  -d depth          requests in flight (default 64)\n"
	"  -f fmt            image format\n"
	"  -n                bypass the host page cache (same as -t none)\n"
	"  -o offset         offset of the first request (default 0)\n"
	"  -s size           bytes per request (default 4096)\n"
	"  -S step           distance between request offsets (default: size)\n"
	"  -t cache          cache mode: none, writeback, writethrough, directsync, unsafe\n"
	"  -w                write (a buffer of zeros, or --pattern) instead of read\n"
	"  --pattern=p       byte value to write\n"
	"  --flush-interval=n  flush after every n write requests\n"
	"  --no-drain        accepted for compatibility (there is no queue to drain)\n"
	"  -i aio            accepted for compatibility (threads, native, io_uring)\n"
	"  -U, --force-share open without locks (read-only)\n"
	"  -q                quiet\n"
	"\n"
	"Example:\n"
	"  vtool img bench -c 100000 -d 32 -s 4k -S 1048573 disk.qcow2\n";

struct bench {
	struct blk *b;
	bool write;
	uint64_t count, size, step, offset, flush_interval, wrap;
	atomic_uint_fast64_t next;
	atomic_int failed;
	struct vt_error err;
	pthread_mutex_t err_lock;
	int pattern;
};

static void *bench_worker(void *arg)
{
	struct bench *bn = arg;
	void *buf;
	struct vt_error err = { 0 };

	if (posix_memalign(&buf, 4096, bn->size))
		return NULL;
	memset(buf, bn->pattern, bn->size);
	for (;;) {
		uint64_t i = atomic_fetch_add(&bn->next, 1);
		if (i >= bn->count || atomic_load(&bn->failed))
			break;
		uint64_t off = bn->wrap ? (bn->offset + i * bn->step) % bn->wrap : 0;
		int r = bn->write ? blk_pwrite(bn->b, off, buf, bn->size, &err)
		                  : blk_pread(bn->b, off, buf, bn->size, &err);
		if (r == 0 && bn->write && bn->flush_interval && (i + 1) % bn->flush_interval == 0)
			r = blk_flush(bn->b, &err);
		if (r < 0) {
			pthread_mutex_lock(&bn->err_lock);
			if (!atomic_exchange(&bn->failed, 1))
				bn->err = err;
			pthread_mutex_unlock(&bn->err_lock);
			break;
		}
	}
	free(buf);
	return NULL;
}

static int parse_num(const char *argv0, const char *what, const char *s, uint64_t *v,
                     bool size)
{
	if (size ? vt_size_parse(s, 1, v) < 0 : (vt_size_parse(s, 1, v) < 0 || strpbrk(s, ".kKmMgGtTpPeEbB")))
		return vt_usage_error(argv0, "Invalid %s specified", what);
	return 0;
}

static int bench_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "flush-interval", required_argument, NULL, 'F' },
		{ "no-drain", no_argument, NULL, 'D' },
		{ "pattern", required_argument, NULL, 'P' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench bn = { .count = 75000, .size = 4096, .pattern = 0 };
	uint64_t depth = 64, step = 0;
	const char *fmt = NULL, *cache = "writeback";
	bool quiet = false, share = false, step_set = false;
	int c;

	while ((c = getopt_long(argc, argv, "hc:d:f:ni:o:qs:S:t:wU", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': if (parse_num(argv[0], "request count", optarg, &bn.count, false)) return 1; break;
		case 'd': if (parse_num(argv[0], "queue depth", optarg, &depth, false) || !depth) return depth ? 1 : vt_usage_error(argv[0], "Invalid queue depth specified"); break;
		case 'f': fmt = optarg; break;
		case 'n': cache = "none"; break;
		case 'i': break;
		case 'o': if (parse_num(argv[0], "offset", optarg, &bn.offset, true)) return 1; break;
		case 'q': quiet = true; break;
		case 's': if (parse_num(argv[0], "buffer size", optarg, &bn.size, true) || !bn.size) return bn.size ? 1 : vt_usage_error(argv[0], "Invalid buffer size specified"); break;
		case 'S': if (parse_num(argv[0], "step size", optarg, &step, true)) return 1; step_set = true; break;
		case 't': cache = optarg; break;
		case 'w': bn.write = true; break;
		case 'U': share = true; break;
		case 'F': if (parse_num(argv[0], "flush interval", optarg, &bn.flush_interval, false)) return 1; break;
		case 'D': break;
		case 'P': {
			uint64_t p;
			if (parse_num(argv[0], "pattern byte", optarg, &p, false) || p > 255)
				return vt_usage_error(argv[0], "Invalid pattern byte specified");
			bn.pattern = (int)p;
			break;
		}
		default: return vt_usage_hint(argv[0]);
		}
	}
	if (optind != argc - 1)
		return vt_usage_error(argv[0], "Expecting one image file name");
	if (bn.flush_interval && !bn.write)
		return vt_usage_error(argv[0], "--flush-interval is only available in write tests");
	enum blk_cache mode;
	if (blk_cache_parse(cache, &mode) < 0)
		return vt_usage_error(argv[0], "Invalid cache mode '%s'", cache);
	bn.step = step_set ? step : bn.size;

	struct blk_open_opts o = { .format = fmt, .writable = bn.write, .cache = mode,
	                           .force_share = share };
	if (blk_open(argv[optind], &o, &bn.b, &bn.err) < 0)
		return img_fail(&bn.err);
	uint64_t isize = blk_size(bn.b);
	if (bn.size > isize) {
		blk_close(bn.b, NULL);
		return vt_usage_error(argv[0], "Request size %llu is larger than the image",
		                      (unsigned long long)bn.size);
	}
	/* Offsets advance by step modulo (image size - request size), as in qemu-img. */
	bn.wrap = isize - bn.size;
	if (!quiet) {
		printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at "
		       "offset %llu, step size %llu)\n", (unsigned long long)bn.count,
		       bn.write ? "write" : "read", (unsigned long long)bn.size,
		       (unsigned long long)depth, (unsigned long long)bn.offset,
		       (unsigned long long)bn.step);
		if (bn.flush_interval)
			printf("Sending flush every %llu requests\n",
			       (unsigned long long)bn.flush_interval);
	}
	pthread_mutex_init(&bn.err_lock, NULL);
	/* Cached I/O is CPU-bound: one thread per core. O_DIRECT waits on the device: keep
	 * `depth` requests in flight with as many threads. */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t limit = mode == BLK_CACHE_NONE || mode == BLK_CACHE_DIRECTSYNC
	                 ? 64 : (uint64_t)(cpus > 0 ? cpus : 1);
	uint64_t nthreads = depth < limit ? depth : limit;
	pthread_t tids[64];
	if (nthreads > 64)
		nthreads = 64;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t i = 1; i < nthreads; i++)
		pthread_create(&tids[i], NULL, bench_worker, &bn);
	bench_worker(&bn);
	for (uint64_t i = 1; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	int rc = 0;
	if (!atomic_load(&bn.failed) && bn.write && blk_flush(bn.b, &bn.err) < 0)
		atomic_store(&bn.failed, 1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (atomic_load(&bn.failed))
		rc = img_fail(&bn.err);
	else if (!quiet)
		printf("Run completed in %3.3f seconds.\n",
		       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	blk_close(bn.b, NULL);
	return rc;
}

const struct vt_command vt_cmd_img_bench = {
	.group = "img",
	.name = "bench",
	.summary = "run a simple I/O benchmark on an image",
	.help = bench_help,
	.main = bench_main,
};
