/* vtool img convert: qemu-img convert's options, with a parallel pipeline.
 *
 * Worker threads take chunks of the target in turn (-m of them, default 8): each reads its
 * chunk from the concatenated sources (skipping what block status says is zero), finds
 * zero runs (-S), and writes data, zeros or compressed clusters to the target. blk.h
 * handles are thread-safe and qcow2 compresses outside its metadata lock, so compression
 * runs on every core. Writes land out of order (qemu's -W); memory in flight is one chunk
 * per worker. A new target is written under a temporary name in the same directory and
 * renamed when complete: a failed or interrupted convert leaves nothing under the name. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img/img.h"
#include "util/progress.h"
#include "util/size.h"

static const char convert_help[] =
	"Usage: vtool img convert [-f fmt] [-O output_fmt] [-o options] [-B backing_file\n"
	"                         [-F backing_fmt]] [-c] [-p | --progress=json] [-q]\n"
	"                         [-S sparse_size] [-n] [--target-is-zero] [-m num] [-W]\n"
	"                         [-t cache] [-T src_cache] [-U] [-l snapshot_param]\n"
	"                         filename [filename2 [...]]\n"
	"                         output_filename\n"
	"\n"
	"Convert one image, or several concatenated, to output_filename (qemu-img convert\n"
	"compatible).\n"
	"\n"
	"  -f fmt            format of the sources (probed when omitted)\n"
	"  -O fmt            output format: raw (default) or qcow2\n"
	"  -o options        output format options, as for create ('-o help' lists them)\n"
	"  -B backing_file   give the output this backing file; only data that differs from\n"
	"                    it is written\n"
	"  -F backing_fmt    format of -B's file\n"
	"  -c                compress the output (qcow2: zlib or the image's compression_type)\n"
	"  -p                show progress (qemu's format)\n"
	"  --progress=json   one JSON object per line: bytes done, total, rate, eta\n"
	"  -q                quiet\n"
	"  -S sparse_size    zero runs at least this long are not written (default 4k);\n"
	"                    0 writes everything (a fully allocated output)\n"
	"  -n                write into an existing output image (no create, no rename)\n"
	"  --target-is-zero  with -n: the output already reads as zeros\n"
	"  -m num            parallel workers, 1 to 16 (default 8)\n"
	"  -W                allow out-of-order writes (vtool always writes out of order)\n"
	"  -t cache          output cache mode (default: no syncs while copying, then one\n"
	"                    sync before the output appears under its name; -t unsafe skips\n"
	"                    that sync too, which is qemu-img's default)\n"
	"  -T src_cache      source cache mode (default writeback)\n"
	"  -U, --force-share read sources even if another process writes them\n"
	"  -l snapshot_param convert the source's internal snapshot, given as\n"
	"                    'snapshot.id=ID[,snapshot.name=NAME]' or an ID or a name\n"
	"\n"
	"Example:\n"
	"  vtool img convert -c -O qcow2 -o compression_type=zstd disk.raw disk.qcow2\n";

struct convert {
	struct blk **src;
	int nsrc;
	uint64_t *src_start;      /* offset of each source in the concatenation */
	uint64_t total;
	struct blk *dst;
	struct blk *backing;      /* -B: data equal to it is not written */
	bool compress;
	bool target_zero;         /* the output reads as zeros before we start */
	uint64_t sparse;          /* zero-run granularity; 0 = write everything */
	uint64_t chunk;
	atomic_uint_fast64_t next;
	atomic_int failed;
	struct vt_error err;
	pthread_mutex_t lock;     /* err, progress */
	struct vt_progress progress;
	uint64_t done;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void set_error(struct convert *cv, const struct vt_error *e)
{
	pthread_mutex_lock(&cv->lock);
	if (!atomic_exchange(&cv->failed, 1))
		cv->err = *e;
	pthread_mutex_unlock(&cv->lock);
}

/* Status of [off, off+n) across the concatenation: is all of it known to read zeros? */
static int range_is_zero(struct convert *cv, uint64_t off, uint64_t n, bool *zero,
                         struct vt_error *err)
{
	*zero = true;
	for (int k = 0; k < cv->nsrc && n; k++) {
		uint64_t s0 = cv->src_start[k], sz = blk_size(cv->src[k]);
		if (off >= s0 + sz || off + n <= s0)
			continue;
		uint64_t a = off > s0 ? off - s0 : 0, b = off + n - s0 < sz ? off + n - s0 : sz;
		while (a < b) {
			struct blk_status st;
			int r = blk_block_status(cv->src[k], a, b - a, &st, err);
			if (r < 0)
				return r;
			if (!(st.flags & BLK_STATUS_ZERO)) {
				*zero = false;
				return 0;
			}
			a += st.len;
		}
	}
	return 0;
}

static int read_concat(struct convert *cv, uint64_t off, uint8_t *buf, uint64_t n,
                       struct vt_error *err)
{
	for (int k = 0; k < cv->nsrc; k++) {
		uint64_t s0 = cv->src_start[k], sz = blk_size(cv->src[k]);
		if (off >= s0 + sz || off + n <= s0)
			continue;
		uint64_t a = off > s0 ? off - s0 : 0, b = off + n - s0 < sz ? off + n - s0 : sz;
		int r = blk_pread(cv->src[k], a, buf + (s0 + a - off), b - a, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Write buf (the target's [off, off+n)) skipping or zeroing runs of zeros. */
static int write_sparse(struct convert *cv, uint64_t off, const uint8_t *buf, uint64_t n,
                        struct vt_error *err)
{
	uint64_t g = cv->sparse ? cv->sparse : n, i = 0;
	while (i < n) {
		uint64_t len = g - (off + i) % g;
		if (len > n - i)
			len = n - i;
		bool zero = cv->sparse && all_zero(buf + i, len);
		uint64_t j = i + len;
		/* Extend the run over following blocks of the same kind. */
		while (j < n) {
			uint64_t l2 = g < n - j ? g : n - j;
			if ((cv->sparse && all_zero(buf + j, l2)) != zero)
				break;
			j += l2;
		}
		int r = 0;
		if (!zero)
			r = blk_pwrite(cv->dst, off + i, buf + i, j - i, err);
		else if (!cv->target_zero)
			r = blk_write_zeroes(cv->dst, off + i, j - i, BLK_MAY_UNMAP, err);
		if (r < 0)
			return r;
		i = j;
	}
	return 0;
}

static int convert_chunk(struct convert *cv, uint64_t off, uint64_t n, uint8_t *buf,
                         uint8_t *bbuf, struct vt_error *err)
{
	bool zero;
	int r = range_is_zero(cv, off, n, &zero, err);
	if (r < 0)
		return r;
	if (zero && cv->sparse && !cv->backing) {
		/* Known zeros: never read. */
		return cv->target_zero ? 0 : blk_write_zeroes(cv->dst, off, n, BLK_MAY_UNMAP, err);
	}
	if (zero)
		memset(buf, 0, n);
	else if ((r = read_concat(cv, off, buf, n, err)) < 0)
		return r;
	if (cv->backing) {
		uint64_t bsz = blk_size(cv->backing), in = off < bsz ? (bsz - off < n ? bsz - off : n) : 0;
		if (in && (r = blk_pread(cv->backing, off, bbuf, in, err)) < 0)
			return r;
		memset(bbuf + in, 0, n - in);
		/* Write only the clusters that differ from the new backing file. */
		uint64_t cs = blk_cluster_size(cv->dst);
		for (uint64_t i = 0; i < n && r == 0; i += cs) {
			uint64_t len = cs < n - i ? cs : n - i;
			if (memcmp(buf + i, bbuf + i, len))
				r = cv->compress ? blk_write_compressed(cv->dst, off + i, buf + i, len, err)
				                 : blk_pwrite(cv->dst, off + i, buf + i, len, err);
		}
		return r;
	}
	if (cv->compress) {
		uint64_t cs = blk_cluster_size(cv->dst);
		for (uint64_t i = 0; i < n && r == 0; i += cs) {
			uint64_t len = cs < n - i ? cs : n - i;
			if (all_zero(buf + i, len))
				r = cv->target_zero ? 0 : blk_write_zeroes(cv->dst, off + i, len, BLK_MAY_UNMAP, err);
			else
				r = blk_write_compressed(cv->dst, off + i, buf + i, len, err);
		}
		return r;
	}
	return write_sparse(cv, off, buf, n, err);
}

static void *convert_worker(void *arg)
{
	struct convert *cv = arg;
	struct vt_error err = { 0 };
	uint8_t *buf = NULL, *bbuf = NULL;

	if (posix_memalign((void **)&buf, 4096, cv->chunk) ||
	    posix_memalign((void **)&bbuf, 4096, cv->chunk)) {
		vt_error_set(&err, ENOMEM, blk_filename(cv->dst), "convert", NULL);
		set_error(cv, &err);
		goto out;
	}
	for (;;) {
		uint64_t off = atomic_fetch_add(&cv->next, 1) * cv->chunk;
		if (off >= cv->total || atomic_load(&cv->failed) || interrupted)
			break;
		uint64_t n = cv->chunk < cv->total - off ? cv->chunk : cv->total - off;
		if (convert_chunk(cv, off, n, buf, bbuf, &err) < 0) {
			set_error(cv, &err);
			break;
		}
		pthread_mutex_lock(&cv->lock);
		cv->done += n;
		vt_progress_update(&cv->progress, cv->done);
		pthread_mutex_unlock(&cv->lock);
	}
out:
	free(buf);
	free(bbuf);
	return NULL;
}

static char *temp_name(const char *target)
{
	char *copy = strdup(target), *copy2 = strdup(target);
	char *out = NULL;
	if (copy && copy2) {
		const char *dir = dirname(copy), *base = basename(copy2);
		size_t n = strlen(dir) + strlen(base) + 40;
		if ((out = malloc(n)))
			snprintf(out, n, "%s/.%s.vtool-%ld", dir, base, (long)getpid());
	}
	free(copy);
	free(copy2);
	return out;
}

static char *join_options(char *old, const char *add)
{
	if (!old)
		return strdup(add);
	char *j = malloc(strlen(old) + strlen(add) + 2);
	if (j)
		sprintf(j, "%s,%s", old, add);
	free(old);
	return j;
}

static int convert_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "progress", required_argument, NULL, 'P' },
		{ "target-is-zero", no_argument, NULL, 'Z' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out_fmt = "raw", *backing = NULL, *backing_fmt = NULL;
	const char *cache = "unsafe", *src_cache = "writeback";
	bool explicit_unsafe = false;
	char *options = NULL;
	enum vt_progress_mode pmode = VT_PROGRESS_NONE;
	bool compress = false, quiet = false, no_create = false, target_is_zero = false;
	bool share = false;
	const char *snapshot = NULL;
	uint64_t sparse = 4096, workers = 8;
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "hf:O:o:B:F:cpqS:nm:Wt:T:Ul:", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out_fmt = optarg; break;
		case 'o': options = join_options(options, optarg); break;
		case 'B': backing = optarg; break;
		case 'F': backing_fmt = optarg; break;
		case 'c': compress = true; break;
		case 'p': pmode = VT_PROGRESS_QEMU; break;
		case 'P':
			if (strcmp(optarg, "json")) {
				free(options);
				return vt_usage_error(argv[0], "--progress takes 'json'");
			}
			pmode = VT_PROGRESS_JSON;
			break;
		case 'q': quiet = true; break;
		case 'S':
			if (vt_size_parse(optarg, 1, &sparse) < 0 || (sparse && sparse < 512) ||
			    sparse > (1u << 30)) {
				free(options);
				return vt_usage_error(argv[0], "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 1073741824. Select 0 to disable sparse detection (fully allocates output).");
			}
			sparse &= ~511ull;
			break;
		case 'n': no_create = true; break;
		case 'm':
			if (vt_size_parse(optarg, 1, &workers) < 0 || workers < 1 || workers > 16 ||
			    strpbrk(optarg, ".kKmMgGtTpPeEbB")) {
				free(options);
				return vt_usage_error(argv[0], "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
			}
			break;
		case 'W': break;
		case 't': cache = optarg; explicit_unsafe = !strcmp(optarg, "unsafe"); break;
		case 'T': src_cache = optarg; break;
		case 'U': share = true; break;
		case 'Z': target_is_zero = true; break;
		case 'l':
			snapshot = optarg;
			break;
		default:
			free(options);
			return vt_usage_hint(argv[0]);
		}
	}
	if (quiet)
		pmode = VT_PROGRESS_NONE;
	if (argc - optind < 2) {
		free(options);
		return vt_usage_error(argv[0], "Expecting image file name");
	}
	if (target_is_zero && !no_create) {
		free(options);
		return vt_usage_error(argv[0], "--target-is-zero requires use of -n flag");
	}
	if (no_create && (options || backing)) {
		free(options);
		return vt_usage_error(argv[0], "-n cannot be used with -o or -B");
	}
	enum blk_cache dcache, scache;
	if (blk_cache_parse(cache, &dcache) < 0 || blk_cache_parse(src_cache, &scache) < 0) {
		free(options);
		return vt_usage_error(argv[0], "Invalid cache option: %s",
		                      blk_cache_parse(cache, &dcache) < 0 ? cache : src_cache);
	}
	if (compress && !blk_format_compresses(out_fmt)) {
		free(options);
		return vt_usage_error(argv[0], "Compression not supported for this file format");
	}

	const char *target = argv[argc - 1];
	struct convert cv = { .nsrc = argc - optind - 1, .compress = compress, .sparse = sparse };
	struct vt_error err = { 0 };
	char *tmp = NULL;
	struct blk_file_lock *out_lock = NULL;
	pthread_mutex_init(&cv.lock, NULL);
	cv.src = calloc((size_t)cv.nsrc, sizeof(*cv.src));
	cv.src_start = calloc((size_t)cv.nsrc + 1, sizeof(*cv.src_start));
	if (!cv.src || !cv.src_start) {
		vt_error_set(&err, ENOMEM, target, "convert", NULL);
		goto fail;
	}
	/* -l: "snapshot.id=ID,snapshot.name=NAME" (either or both) or a bare ID-or-name. */
	char snap_id[256] = "", snap_name[1024] = "";
	if (snapshot && (!strncmp(snapshot, "snapshot.id=", 12) || !strncmp(snapshot, "snapshot.name=", 14))) {
		for (const char *p = snapshot; *p;) {
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			if (!strncmp(p, "snapshot.id=", 12) && n - 12 < sizeof(snap_id))
				memcpy(snap_id, p + 12, n - 12);
			else if (!strncmp(p, "snapshot.name=", 14) && n - 14 < sizeof(snap_name))
				memcpy(snap_name, p + 14, n - 14);
			else {
				vt_error_set(&err, EINVAL, snapshot, "convert", "Invalid option for -l");
				goto fail;
			}
			p += n + (comma != NULL);
		}
	}
	if (snapshot && cv.nsrc > 1) {
		vt_error_set(&err, EINVAL, target, "convert",
		             "No support for concatenating multiple snapshot");
		goto fail;
	}
	/* Writing over an input would destroy what is being read (and, renamed over it, its
	 * snapshots and everything else the copy does not carry). */
	struct stat tst;
	if (stat(target, &tst) == 0) {
		for (int k = 0; k < cv.nsrc; k++) {
			struct stat sst;
			if (stat(argv[optind + k], &sst) == 0 && sst.st_dev == tst.st_dev &&
			    sst.st_ino == tst.st_ino) {
				vt_error_set(&err, EINVAL, target, "convert",
				             "the output is also an input (%s); write to another file",
				             argv[optind + k]);
				goto fail;
			}
		}
		/* A file another process uses (a running VM's disk) is not replaced under it:
		 * hold the writer's locks on it until it is. */
		if (!no_create && S_ISREG(tst.st_mode) && blk_lock_file(target, &out_lock, &err) < 0)
			goto fail;
	}
	for (int k = 0; k < cv.nsrc; k++) {
		struct blk_open_opts so = { .format = fmt, .cache = scache, .force_share = share };
		if (snapshot && (snap_id[0] || snap_name[0])) {
			so.snapshot_id = snap_id[0] ? snap_id : NULL;
			so.snapshot_name = snap_name[0] ? snap_name : NULL;
		} else {
			so.snapshot = snapshot;
		}
		if (blk_open(argv[optind + k], &so, &cv.src[k], &err) < 0)
			goto fail;
		cv.src_start[k] = cv.total;
		cv.total += blk_size(cv.src[k]);
	}
	if (backing) {
		struct blk_open_opts bo = { .format = backing_fmt, .force_share = true };
		char *dir = strdup(target), *path = NULL;
		if (dir && backing[0] != '/' && strchr(target, '/')) {
			path = malloc(strlen(dir) + strlen(backing) + 2);
			if (path)
				sprintf(path, "%s/%s", dirname(dir), backing);
		}
		int r = blk_open(path ? path : backing, &bo, &cv.backing, &err);
		free(dir);
		free(path);
		if (r < 0)
			goto fail;
	}

	/* An image of several files (vmdk's flat and split subformats) names its extents
	 * after its descriptor: it is made under its own name, as qemu-img does. */
	bool one_file = blk_create_makes_one_file(out_fmt, options);
	if (!no_create) {
		if (one_file && !(tmp = temp_name(target))) {
			vt_error_set(&err, ENOMEM, target, "convert", NULL);
			goto fail;
		}
		struct blk_create_opts co = { .format = out_fmt, .size = cv.total, .size_given = true,
		                              .backing_file = backing, .options = options,
		                              .backing_format = backing ? (backing_fmt ? backing_fmt : blk_format(cv.backing)) : NULL };
		if (blk_create(tmp ? tmp : target, &co, NULL, &err) < 0) {
			snprintf(err.file, sizeof(err.file), "%s", target);
			goto fail;
		}
	}
	struct blk_open_opts dopt = { .format = out_fmt, .writable = true, .cache = dcache };
	if (blk_open(tmp ? tmp : target, &dopt, &cv.dst, &err) < 0) {
		if (tmp)
			snprintf(err.file, sizeof(err.file), "%s", target);
		goto fail;
	}
	if (no_create && blk_size(cv.dst) < cv.total) {
		vt_error_set(&err, ENOSPC, target, "convert",
		             "output image is smaller than the input (%llu < %llu bytes)",
		             (unsigned long long)blk_size(cv.dst), (unsigned long long)cv.total);
		goto fail;
	}
	/* A fresh image reads zeros, except through a backing file (-B). */
	cv.target_zero = no_create ? target_is_zero : !backing;
	uint64_t cs = blk_cluster_size(cv.dst);
	cv.chunk = cs > (1u << 20) ? cs : 1u << 20;

	struct sigaction sa = { .sa_handler = on_signal }, old_int, old_term;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	vt_progress_init(&cv.progress, pmode, stdout, cv.total);
	pthread_t tids[16];
	uint64_t nthreads = workers;
	for (uint64_t i = 1; i < nthreads; i++)
		pthread_create(&tids[i], NULL, convert_worker, &cv);
	convert_worker(&cv);
	for (uint64_t i = 1; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (atomic_load(&cv.failed)) {
		err = cv.err;
		if (tmp && !strcmp(err.file, tmp))
			snprintf(err.file, sizeof(err.file), "%s", target);
		goto fail;
	}
	if (interrupted) {
		vt_error_set(&err, EINTR, target, "convert", "interrupted; nothing was written "
		             "under the output name");
		rc = 130;
		goto fail;
	}
	/* The new image must be durable before it replaces anything under the name, or a
	 * power cut could leave an empty or half-written file there; the rename itself is
	 * durable once the directory is synced. -t unsafe asks for neither. */
	if (tmp && !explicit_unsafe && blk_sync(cv.dst, &err) < 0)
		goto fail;
	if (blk_close(cv.dst, &err) < 0) {
		cv.dst = NULL;
		goto fail;
	}
	cv.dst = NULL;
	if (tmp && rename(tmp, target) < 0) {
		vt_error_set(&err, errno, target, "rename", NULL);
		goto fail;
	}
	if (tmp && !explicit_unsafe && img_sync_dir(target, &err) < 0) {
		/* The output is complete and in place; only its name may not survive a crash. */
		char line[1200];
		vt_error_format(&err, line, sizeof(line));
		fprintf(stderr, "vtool: warning: %s\n", line);
	}
	vt_progress_finish(&cv.progress);
	rc = 0;
	goto out;
fail:
	if (rc != 130)
		rc = 1;
	if (pmode == VT_PROGRESS_QEMU)
		fputc('\n', stdout);
	img_fail(&err);
out:
	if (cv.dst)
		blk_close(cv.dst, NULL);
	if (tmp && rc != 0)
		unlink(tmp);
	for (int k = 0; cv.src && k < cv.nsrc; k++)
		if (cv.src[k])
			blk_close(cv.src[k], NULL);
	if (cv.backing)
		blk_close(cv.backing, NULL);
	blk_unlock_file(out_lock);
	free(cv.src);
	free(cv.src_start);
	free(tmp);
	free(options);
	pthread_mutex_destroy(&cv.lock);
	return rc;
}

const struct vt_command vt_cmd_img_convert = {
	.group = "img",
	.name = "convert",
	.summary = "convert or copy images, optionally compressed",
	.help = convert_help,
	.main = convert_main,
};
