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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img/img.h"
#include "img/object.h"
#include "img/pipeline.h"
#include "util/progress.h"
#include "util/size.h"

static const char convert_help[] =
	"Usage: vtool img convert [--object objectdef] [--image-opts] [--target-image-opts]\n"
	"                         [-f fmt] [-O output_fmt] [-o options] [-B backing_file\n"
	"                         [-F backing_fmt]] [-c] [-C] [-p | --progress=json] [-q]\n"
	"                         [-S sparse_size] [-n] [--target-is-zero] [-m num] [-W]\n"
	"                         [-t cache] [-T src_cache] [-U] [-l snapshot_param]\n"
	"                         [--salvage] [--bitmaps [--skip-broken-bitmaps]] filename\n"
	"                         [filename2 [...]] output_filename\n"
	"\n"
	"Convert one image, or several concatenated, to output_filename (qemu-img convert\n"
	"compatible).\n"
	"\n"
	"  -f fmt            format of the sources (probed when omitted)\n"
	"  -O fmt            output format: raw (default), qcow2, vdi, qed, vpc, vhdx\n"
	"  -o options        output format options, as for create ('-O fmt -o help' lists\n"
	"                    them)\n"
	"  -B backing_file   give the output this backing file; only data that differs from\n"
	"                    it is written\n"
	"  -F backing_fmt    format of -B's file\n"
	"  -c                compress the output (qcow2: zlib or the image's compression_type)\n"
	"  -C                copy offloading: data moves inside the kernel (copy_file_range)\n"
	"                    where the output is raw and the data is stored raw in a file;\n"
	"                    otherwise, or when the kernel cannot, the usual copy\n"
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
	"  --salvage         go on past read errors: what cannot be read (512-byte sectors)\n"
	"                    is written as zeros, with a warning for each\n"
	"  --image-opts      the sources are option strings: driver=FMT,file.filename=PATH\n"
	"  --target-image-opts  the output is an option string too (needs -n)\n"
	"  --object objectdef   define a secret: secret,id=ID,data=STRING|file=PATH\n"
	"                    [,format=raw|base64] (for options such as encrypt.key-secret)\n"
	"  --bitmaps         copy the persistent dirty bitmaps too (qcow2 to qcow2 v3)\n"
	"  --skip-broken-bitmaps  with --bitmaps: skip inconsistent (in-use) bitmaps instead\n"
	"                    of failing\n"
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
	bool salvage;             /* --salvage: unreadable sectors become zeros */
	bool quiet;
	atomic_bool copy_range;   /* -C: copy offloading, until it fails once */
	const char *argv0;
	pthread_mutex_t warn_lock;
};

static void warn(struct convert *cv, const char *what, uint64_t off, int code)
{
	if (cv->quiet)
		return;
	pthread_mutex_lock(&cv->warn_lock);
	fprintf(stderr, "%s: warning: error while reading %soffset %llu: %s\n", cv->argv0, what,
	        (unsigned long long)off, strerror(code));
	pthread_mutex_unlock(&cv->warn_lock);
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
			if (r < 0 && cv->salvage) {
				/* Try to read the data, then. */
				warn(cv, "block status at ", a, err ? err->code : EIO);
				*zero = false;
				return 0;
			}
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
		uint8_t *dst = buf + (s0 + a - off);
		int r = blk_pread(cv->src[k], a, dst, b - a, err);
		/* --salvage: sector by sector, what cannot be read reads as zeros. */
		for (uint64_t i = 0; r < 0 && cv->salvage && i < b - a; i += 512) {
			struct vt_error e = { 0 };
			uint64_t len = b - a - i < 512 ? b - a - i : 512;
			if (blk_pread(cv->src[k], a + i, dst + i, len, &e) < 0) {
				memset(dst + i, 0, len);
				warn(cv, "", a + i, e.code ? e.code : EIO);
			}
			if (i + 512 >= b - a)
				r = 0;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* -C: each source's part of the chunk copied inside the kernel; -1 when that cannot be
 * done (the chunk then goes the usual way, and so does everything after it). */
static int copy_offloaded(struct convert *cv, uint64_t off, uint64_t n)
{
	for (int k = 0; k < cv->nsrc; k++) {
		uint64_t s0 = cv->src_start[k], sz = blk_size(cv->src[k]);
		if (off >= s0 + sz || off + n <= s0)
			continue;
		uint64_t a = off > s0 ? off - s0 : 0, b = off + n - s0 < sz ? off + n - s0 : sz;
		if (blk_copy_range(cv->src[k], a, cv->dst, s0 + a, b - a, NULL) < 0) {
			atomic_store(&cv->copy_range, false);
			return -1;
		}
	}
	return 0;
}

static int convert_chunk(void *opaque, uint64_t off, uint64_t n, uint8_t **bufs,
                         struct vt_error *err)
{
	struct convert *cv = opaque;
	uint8_t *buf = bufs[0], *bbuf = bufs[1];
	bool zero;
	int r = range_is_zero(cv, off, n, &zero, err);
	if (r < 0)
		return r;
	if (zero && cv->sparse && !cv->backing) {
		/* Known zeros: never read. */
		return cv->target_zero ? 0 : blk_write_zeroes(cv->dst, off, n, BLK_MAY_UNMAP, err);
	}
	if (!zero && atomic_load(&cv->copy_range) && copy_offloaded(cv, off, n) == 0)
		return 0;
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
			if (img_all_zero(buf + i, len))
				r = cv->target_zero ? 0 : blk_write_zeroes(cv->dst, off + i, len, BLK_MAY_UNMAP, err);
			else
				r = blk_write_compressed(cv->dst, off + i, buf + i, len, err);
		}
		return r;
	}
	return img_write_sparse(cv->dst, off, buf, n, cv->sparse, cv->target_zero, err);
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

/* Whether a new image of this format and options can hold persistent bitmaps. */
static bool qcow2_v3_options(const char *fmt, const char *options)
{
	if (strcmp(fmt, "qcow2"))
		return false;
	for (const char *p = options; p && (p = strstr(p, "compat=")); p += 7)
		if ((p == options || p[-1] == ',') &&
		    (!strncmp(p + 7, "0.10", 4) || !strncmp(p + 7, "v2", 2)))
			return false;
	return true;
}

static int convert_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "progress", required_argument, NULL, 'P' },
		{ "target-is-zero", no_argument, NULL, 'Z' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "object", required_argument, NULL, 'j' },
		{ "image-opts", no_argument, NULL, 'I' },
		{ "target-image-opts", no_argument, NULL, 'J' },
		{ "salvage", no_argument, NULL, 'V' },
		{ "bitmaps", no_argument, NULL, 'M' },
		{ "skip-broken-bitmaps", no_argument, NULL, 'K' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out_fmt = "raw", *backing = NULL, *backing_fmt = NULL;
	bool out_fmt_given = false, image_opts = false, target_image_opts = false;
	bool salvage = false, copy_range = false, bitmaps = false, skip_broken = false;
	bool printed = false;             /* the error was reported where it happened */
	bool explicit_sparse = false;
	struct vt_error oerr = { 0 };
	const char *cache = "unsafe", *src_cache = "writeback";
	bool explicit_unsafe = false;
	char *options = NULL;
	enum vt_progress_mode pmode = VT_PROGRESS_NONE;
	bool compress = false, quiet = false, no_create = false, target_is_zero = false;
	bool share = false;
	const char *snapshot = NULL;
	uint64_t sparse = 4096, workers = 8;
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "hf:O:o:B:F:cpqS:nm:Wt:T:Ul:C", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out_fmt = optarg; out_fmt_given = true; break;
		case 'C': copy_range = true; break;
		case 'I': image_opts = true; break;
		case 'J': target_image_opts = true; break;
		case 'V': salvage = true; break;
		case 'M': bitmaps = true; break;
		case 'K': skip_broken = true; break;
		case 'j':
			if (img_object_add(optarg, &oerr) < 0) {
				free(options);
				img_objects_free();
				return img_fail(&oerr);
			}
			break;
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
			explicit_sparse = true;
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
			img_objects_free();
			return vt_usage_hint(argv[0]);
		}
	}
	if (quiet)
		pmode = VT_PROGRESS_NONE;
	/* -o help lists the output format's creation options. */
	if (options && (!strcmp(options, "help") || !strcmp(options, "?") ||
	                strstr(options, ",help") || !strncmp(options, "help,", 5))) {
		const char *h = blk_create_help(out_fmt);
		free(options);
		img_objects_free();
		if (!h) {
			fprintf(stderr, "%s: Unknown file format '%s'\n", argv[0], out_fmt);
			return 1;
		}
		fputs(h, stdout);
		return 0;
	}
	const char *bad = NULL;
	if (skip_broken && !bitmaps)
		bad = "Use of --skip-broken-bitmaps requires --bitmaps";
	else if (copy_range && compress)
		bad = "Cannot enable copy offloading when -c is used";
	else if (copy_range && explicit_sparse)
		bad = "Cannot enable copy offloading when -S is used";
	else if (copy_range && salvage)
		bad = "Cannot use copy offloading in salvaging mode";
	else if (image_opts && fmt)
		bad = "--image-opts and --format are mutually exclusive";
	else if (target_image_opts && !no_create)
		bad = "--target-image-opts requires use of -n flag";
	else if (target_image_opts && out_fmt_given)
		bad = "--image-opts and --format are mutually exclusive";
	if (bad) {
		fprintf(stderr, "%s: %s\n", argv[0], bad);
		free(options);
		img_objects_free();
		return 1;
	}
	if (argc - optind < 2) {
		free(options);
		img_objects_free();
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
	struct convert cv = { .nsrc = argc - optind - 1, .compress = compress, .sparse = sparse,
	                      .salvage = salvage, .quiet = quiet, .argv0 = argv[0] };
	atomic_init(&cv.copy_range, copy_range);
	pthread_mutex_init(&cv.warn_lock, NULL);
	struct vt_error err = { 0 };
	struct img_open_spec *specs = calloc((size_t)cv.nsrc, sizeof(*specs));
	struct img_open_spec tspec = { 0 };
	if (!specs) {
		vt_error_set(&err, ENOMEM, target, "convert", NULL);
		free(options);
		img_objects_free();
		return img_fail(&err);
	}
	/* The secret an encryption option names must exist (before anything else fails). */
	const char *ks = options ? strstr(options, "encrypt.key-secret=") : NULL;
	if (ks) {
		char id[256];
		snprintf(id, sizeof(id), "%.*s", (int)strcspn(ks + 19, ","), ks + 19);
		if (!img_secret_find(id)) {
			vt_error_set(&err, EINVAL, "", "", "%s: error while converting %s: No secret with "
			             "id '%s'", target, out_fmt, id);
			free(specs);
			free(options);
			img_objects_free();
			return img_fail(&err);
		}
	}
	if (target_image_opts) {
		if (img_open_spec(target, NULL, true, &tspec, &err) < 0) {
			free(specs);
			free(options);
			img_objects_free();
			return img_fail(&err);
		}
		target = tspec.filename;
		if (tspec.format)
			out_fmt = tspec.format;
	}
	char *tmp = NULL;
	struct blk_file_lock *out_lock = NULL;
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
			struct img_open_spec sp;
			if (img_open_spec(argv[optind + k], fmt, image_opts, &sp, NULL) < 0)
				continue;
			int sr = stat(sp.filename, &sst);
			img_open_spec_free(&sp);
			if (sr == 0 && sst.st_dev == tst.st_dev &&
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
		if (img_open_spec(argv[optind + k], fmt, image_opts, &specs[k], &err) < 0)
			goto fail;
		struct blk_open_opts so = { .format = specs[k].format, .cache = scache,
		                            .key = specs[k].key, .key_len = specs[k].key_len,
		                            .force_share = share };
		if (snapshot && (snap_id[0] || snap_name[0])) {
			so.snapshot_id = snap_id[0] ? snap_id : NULL;
			so.snapshot_name = snap_name[0] ? snap_name : NULL;
		} else {
			so.snapshot = snapshot;
		}
		if (blk_open(specs[k].filename, &so, &cv.src[k], &err) < 0)
			goto fail;
		cv.src_start[k] = cv.total;
		cv.total += blk_size(cv.src[k]);
	}
	if (bitmaps) {
		printed = true;
		if (cv.nsrc > 1) {
			fprintf(stderr, "%s: Copying bitmaps only possible with single source\n", argv[0]);
			goto fail;
		}
		if (img_bitmaps_check(argv[0], cv.src[0], skip_broken) < 0)
			goto fail;
		if (!no_create && !qcow2_v3_options(out_fmt, options)) {
			fprintf(stderr, "%s: Format driver '%s' does not support bitmaps\n", argv[0],
			        out_fmt);
			goto fail;
		}
		printed = false;
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
		if (one_file && !(tmp = img_temp_name(target))) {
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
	struct blk_open_opts dopt = { .format = out_fmt, .writable = true, .cache = dcache,
	                              .stream = tmp && !explicit_unsafe };
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
	struct vt_progress progress;
	vt_progress_init(&progress, pmode, stdout, cv.total);
	struct img_pipeline pl = { .total = cv.total, .chunk = cs > (1u << 20) ? cs : 1u << 20,
	                           .workers = (unsigned)workers, .nbufs = 2,
	                           .work = convert_chunk, .opaque = &cv,
	                           .progress = &progress, .catch_signals = true };
	int pr = img_pipeline_run(&pl, &err);
	if (pr == -EINTR) {
		vt_error_set(&err, EINTR, target, "convert", "interrupted; nothing was written "
		             "under the output name");
		rc = 130;
		goto fail;
	}
	if (pr < 0) {
		if (tmp && !strcmp(err.file, tmp))
			snprintf(err.file, sizeof(err.file), "%s", target);
		goto fail;
	}
	/* The new image must be durable before it replaces anything under the name, or a
	 * power cut could leave an empty or half-written file there; the rename itself is
	 * durable once the directory is synced. -t unsafe asks for neither. */
	if (bitmaps && img_bitmaps_copy(argv[0], cv.src[0], cv.dst, skip_broken, &err) < 0)
		goto fail;
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
	vt_progress_finish(&progress);
	rc = 0;
	goto out;
fail:
	if (rc != 130)
		rc = 1;
	if (pmode == VT_PROGRESS_QEMU)
		fputc('\n', stdout);
	if (!printed)
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
	for (int k = 0; k < cv.nsrc; k++)
		img_open_spec_free(&specs[k]);
	free(specs);
	img_open_spec_free(&tspec);
	img_objects_free();
	pthread_mutex_destroy(&cv.warn_lock);
	return rc;
}

const struct vt_command vt_cmd_img_convert = {
	.group = "img",
	.name = "convert",
	.summary = "convert or copy images, optionally compressed",
	.help = convert_help,
	.main = convert_main,
};
