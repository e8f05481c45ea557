/* vtool img commit: qemu-img commit's options, messages and exit codes.
 *
 * What the image and the layers between it and the base hold (qemu's "allocated above
 * base") is written into the base, which grows to the image's size when it is smaller;
 * then, unless -d (or -b, which implies it), the image is emptied so that it reads its
 * backing file again. The image's own content never changes on the way: the base only
 * changes where the image or a layer above the base decides what is read, the base is
 * durable before the image is emptied, and emptying is crash-safe (blk_make_empty). The
 * copy runs on convert's parallel pipeline. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "img/img.h"
#include "img/object.h"
#include "img/pipeline.h"
#include "util/progress.h"
#include "util/size.h"

static const char commit_help[] =
	"Usage: vtool img commit [--object objectdef] [--image-opts] [-q] [-f fmt]\n"
	"                        [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename\n"
	"\n"
	"Write the changes an image holds into its backing file (qemu-img commit\n"
	"compatible). The backing file grows to the image's size if it is smaller. Then the\n"
	"image is emptied, so that it reads what its backing file now holds.\n"
	"\n"
	"  -b base           commit into this image of the backing chain instead of the\n"
	"                    immediate backing file: what the layers in between hold goes\n"
	"                    into it too (they are not valid afterwards). Implies -d\n"
	"  -d                do not empty the image afterwards\n"
	"  -r rate_limit     at most this many bytes per second (k, M, G suffixes)\n"
	"  -f fmt            format of the image (probed when omitted)\n"
	"  -t cache          cache mode of the image and the base (default writeback)\n"
	"  -p                show progress          -q   quiet\n"
	"  --object objectdef  define a secret (secret,id=ID,data=...|file=...)\n"
	"  --image-opts      filename is an option string: driver=FMT,file.filename=PATH\n"
	"\n"
	"Prints \"Image committed.\" on success.\n"
	"\n"
	"Example:\n"
	"  vtool img commit overlay.qcow2\n";

struct commit {
	struct blk *top, *base;
	uint64_t rate;            /* bytes per second, 0 = unlimited */
	pthread_mutex_t lock;
	uint64_t copied;
	double start;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* -r: after n more bytes, wait until the average rate is back under the limit. */
static void throttle(struct commit *cm, uint64_t n)
{
	if (!cm->rate || !n)
		return;
	pthread_mutex_lock(&cm->lock);
	cm->copied += n;
	double due = cm->start + (double)cm->copied / (double)cm->rate;
	pthread_mutex_unlock(&cm->lock);
	double wait = due - now_s();
	if (wait > 0) {
		struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
		nanosleep(&ts, NULL);
	}
}


static int commit_chunk(void *opaque, uint64_t off, uint64_t n, uint8_t **bufs,
                        struct vt_error *err)
{
	struct commit *cm = opaque;
	uint64_t end = off + n;
	int r = 0;

	while (off < end && r == 0) {
		bool yes;
		uint64_t len;
		if ((r = blk_allocated_above(cm->top, cm->base, off, end - off, &yes, &len, err)) < 0)
			return r;
		if (yes) {
			struct blk_status st;
			if ((r = blk_block_status(cm->top, off, len, &st, err)) < 0)
				return r;
			len = st.len;
			if (st.flags & BLK_STATUS_ZERO)
				r = blk_write_zeroes(cm->base, off, len, BLK_MAY_UNMAP, err);
			else if ((r = blk_pread(cm->top, off, bufs[0], len, err)) == 0)
				r = img_write_sparse(cm->base, off, bufs[0], len, 4096, false, err);
			throttle(cm, len);
		}
		off += len;
	}
	return r;
}

/* qemu's bdrv_find_backing_image: a layer below the image named by the string its
 * overlay records, or the same file as the name (taken relative to that overlay, or as
 * given). */
static struct blk *find_base(struct blk *top, const char *name)
{
	struct stat given;
	bool have_given = stat(name, &given) == 0;
	for (struct blk *over = top, *l = blk_backing(top); l; over = l, l = blk_backing(l)) {
		struct blk_info in;
		uint64_t dev, ino;
		blk_identity(l, &dev, &ino);
		if (have_given && (uint64_t)given.st_dev == dev && (uint64_t)given.st_ino == ino)
			return l;
		if (blk_get_info(over, &in, NULL) == 0) {
			bool same = in.has_backing && !strcmp(in.backing_file, name);
			blk_info_free(&in);
			if (same)
				return l;
		}
		char *rel = img_resolve_relative(blk_filename(over), name);
		struct stat st;
		bool hit = rel && stat(rel, &st) == 0 && (uint64_t)st.st_dev == dev &&
		           (uint64_t)st.st_ino == ino;
		free(rel);
		if (hit)
			return l;
	}
	return NULL;
}

static int commit_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, 'O' },
		{ "image-opts", no_argument, NULL, 'I' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *base_name = NULL, *cache = "writeback";
	bool drop = false, progress = false, quiet = false, image_opts = false;
	uint64_t rate = 0;
	struct vt_error err = { 0 };
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "hf:t:b:dpqr:", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 't': cache = optarg; break;
		case 'b': base_name = optarg; drop = true; break;
		case 'd': drop = true; break;
		case 'p': progress = true; break;
		case 'q': quiet = true; break;
		case 'I': image_opts = true; break;
		case 'r':
			if (vt_size_parse(optarg, 1, &rate) < 0) {
				fprintf(stderr, "%s: Invalid rate limit specified. You may use k, M, G, T, "
				        "P or E suffixes for\n%s: kilobytes, megabytes, gigabytes, terabytes, "
				        "petabytes and exabytes.\n", argv[0], argv[0]);
				img_objects_free();
				return 1;
			}
			break;
		case 'O':
			if (img_object_add(optarg, &err) < 0) {
				img_objects_free();
				return img_fail(&err);
			}
			break;
		default:
			img_objects_free();
			return vt_usage_hint(argv[0]);
		}
	}
	if (quiet)
		progress = false;
	if (optind != argc - 1) {
		img_objects_free();
		return vt_usage_error(argv[0], "Expecting one image file name");
	}
	const char *filename = argv[optind];
	enum blk_cache mode;
	if (img_parse_cache(argv[0], "cache", cache, &mode) < 0) {
		img_objects_free();
		return 1;
	}

	struct commit cm = { .rate = rate };
	struct img_open_spec spec = { 0 };
	struct vt_progress pr;
	pthread_mutex_init(&cm.lock, NULL);
	vt_progress_init(&pr, progress ? VT_PROGRESS_QEMU : VT_PROGRESS_NONE, stdout, 100);

	if (img_open_spec(filename, fmt, image_opts, &spec, &err) < 0)
		goto fail;
	struct blk_open_opts o = { .format = spec.format, .writable = true, .cache = mode };
	if (blk_open(spec.filename, &o, &cm.top, &err) < 0)
		goto fail;
	if (base_name) {
		if (!(cm.base = find_base(cm.top, base_name))) {
			vt_error_set(&err, ENOENT, "", "", "Did not find '%s' in the backing chain of '%s'",
			             base_name, filename);
			goto fail;
		}
	} else if (!(cm.base = blk_backing(cm.top))) {
		vt_error_set(&err, EINVAL, "", "", "Image does not have a backing file");
		goto fail;
	}
	if (blk_reopen(cm.base, true, &err) < 0)
		goto fail;
	uint64_t size = blk_size(cm.top);
	if (blk_size(cm.base) < size && blk_truncate(cm.base, size, &err) < 0)
		goto fail;

	uint32_t cs = blk_cluster_size(cm.base);
	pr.total = size;
	cm.start = now_s();
	struct img_pipeline pl = { .total = size, .chunk = cs > (1u << 20) ? cs : 1u << 20,
	                           .workers = rate ? 1 : 8, .nbufs = 1, .work = commit_chunk,
	                           .opaque = &cm, .progress = &pr, .catch_signals = true };
	int r = img_pipeline_run(&pl, &err);
	if (r == -EINTR) {
		vt_error_set(&err, EINTR, filename, "commit", "interrupted; the image was not "
		             "emptied (it reads as before; the base holds part of its data)");
		rc = 130;
		goto fail;
	}
	if (r < 0)
		goto fail;
	/* The base holds everything before the image lets go of it. */
	if (blk_flush(cm.base, &err) < 0)
		goto fail;
	if (!drop) {
		struct vt_error inner = { 0 };
		r = blk_make_empty(cm.top, &inner);
		if (r < 0 && r != -ENOTSUP) {
			err = inner;
			goto fail;
		}
	}
	if (blk_close(cm.top, &err) < 0) {
		cm.top = NULL;
		goto fail;
	}
	cm.top = NULL;
	vt_progress_finish(&pr);
	if (!quiet)
		printf("Image committed.\n");
	rc = 0;
	goto out;
fail:
	if (progress)
		fputc('\n', stdout);
	img_fail(&err);
out:
	if (cm.top)
		blk_close(cm.top, NULL);
	img_open_spec_free(&spec);
	pthread_mutex_destroy(&cm.lock);
	img_objects_free();
	return rc;
}

const struct vt_command vt_cmd_img_commit = {
	.group = "img",
	.name = "commit",
	.summary = "write an overlay's changes into its backing file",
	.help = commit_help,
	.main = commit_main,
};
