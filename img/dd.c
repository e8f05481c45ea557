/* vtool img dd: qemu-img dd's operands, sizes and messages.
 *
 * qemu's arithmetic, kept as it is: count limits the input to its first count*bs bytes
 * (counted from the start, not from skip), and the output is what is left after
 * skipping skip*bs bytes of that. A skip past it prints "cannot skip to specified
 * offset" and makes an empty output (exit 0), as dd(1) does. The copy itself is not
 * block by block: bs only sizes things, so the data goes through convert's parallel
 * pipeline and zero runs are left sparse. Like convert, a new output is written under a
 * temporary name and renamed when complete. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img/img.h"
#include "img/object.h"
#include "img/pipeline.h"
#include "util/size.h"

static const char dd_help[] =
	"Usage: vtool img dd [--object objectdef] [--image-opts] [-U] [-f fmt]\n"
	"                    [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks]\n"
	"                    if=input of=output\n"
	"\n"
	"Copy part of an image into a new image, dd style (qemu-img dd compatible).\n"
	"\n"
	"  if=input          the image to read (any format vtool reads)\n"
	"  of=output         the image to create (replaced if it exists)\n"
	"  bs=block_size     block size in bytes, k/M/G suffixes (default 512)\n"
	"  count=blocks      read only the first count blocks of the input\n"
	"  skip=blocks       leave out the first skip blocks\n"
	"  -f fmt            format of the input (probed when omitted)\n"
	"  -O output_fmt     format of the output (default raw)\n"
	"  -U, --force-share read the input even if another process writes it\n"
	"  --object objectdef  define a secret (secret,id=ID,data=...|file=...)\n"
	"  --image-opts      if= is an option string: driver=FMT,file.filename=PATH\n"
	"\n"
	"The output holds min(count*bs, input size) - skip*bs bytes (qemu's arithmetic:\n"
	"count counts from the start of the input, not from skip).\n"
	"\n"
	"Example:\n"
	"  vtool img dd -O qcow2 bs=1M skip=1 count=64 if=disk.raw of=part.qcow2\n";

struct dd {
	struct blk *in, *out;
	uint64_t in_off;          /* input offset of output byte 0 */
};

static int dd_chunk(void *opaque, uint64_t off, uint64_t n, uint8_t **bufs,
                    struct vt_error *err)
{
	struct dd *d = opaque;
	struct blk_status st;
	int r = blk_block_status(d->in, d->in_off + off, n, &st, err);
	if (r < 0)
		return r;
	if ((st.flags & BLK_STATUS_ZERO) && st.len >= n)
		return 0; /* a new output reads zeros already */
	if ((r = blk_pread(d->in, d->in_off + off, bufs[0], n, err)) < 0)
		return r;
	return img_write_sparse(d->out, off, bufs[0], n, 4096, true, err);
}

/* qemu's cvtnum messages: a number with k/M/G... suffixes, in [min, max]. */
static int parse_num(const char *argv0, const char *what, const char *s, uint64_t min,
                     uint64_t max, uint64_t *out)
{
	int r = s[0] == '-' ? -EINVAL : vt_size_parse(s, 1, out);
	if (r == -EINVAL) {
		fprintf(stderr, "%s: Invalid %s specified. You may use k, M, G, T, P or E suffixes "
		        "for\n%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and "
		        "exabytes.\n", argv0, what, argv0);
		return -1;
	}
	if (r < 0 || *out < min || *out > max) {
		fprintf(stderr, "%s: Invalid %s specified. Must be between %llu and %llu.\n", argv0,
		        what, (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	return 0;
}

static int dd_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, 'o' },
		{ "image-opts", no_argument, NULL, 'I' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out_fmt = "raw", *in_name = NULL, *out_name = NULL;
	bool share = false, image_opts = false, have_count = false, have_skip = false;
	uint64_t bs = 512, count = 0, skip = 0;
	struct vt_error err = { 0 };
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "hf:O:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out_fmt = optarg; break;
		case 'U': share = true; break;
		case 'I': image_opts = true; break;
		case 'o':
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
	for (int i = optind; i < argc; i++) {
		const char *a = argv[i], *eq = strchr(a, '=');
		size_t k = eq ? (size_t)(eq - a) : 0;
		const char *v = eq ? eq + 1 : NULL;
		int r = 0;
		if (k == 2 && !strncmp(a, "bs", 2))
			r = parse_num(argv[0], "bs", v, 1, 2147483647, &bs);
		else if (k == 5 && !strncmp(a, "count", 5))
			r = parse_num(argv[0], "count", v, 0, INT64_MAX, &count), have_count = true;
		else if (k == 4 && !strncmp(a, "skip", 4))
			r = parse_num(argv[0], "skip", v, 0, INT64_MAX, &skip), have_skip = true;
		else if (k == 2 && !strncmp(a, "if", 2))
			in_name = v;
		else if (k == 2 && !strncmp(a, "of", 2))
			out_name = v;
		else {
			fprintf(stderr, "%s: unrecognized operand %.*s\n", argv[0],
			        (int)(eq ? k : strlen(a)), a);
			r = -1;
		}
		if (r < 0) {
			img_objects_free();
			return 1;
		}
	}
	if (!in_name || !out_name) {
		fprintf(stderr, "%s: Must specify both input and output files\n", argv[0]);
		img_objects_free();
		return 1;
	}

	struct dd d = { 0 };
	struct img_open_spec spec = { 0 };
	struct blk_file_lock *out_lock = NULL;
	char *tmp = NULL;
	if (img_open_spec(in_name, fmt, image_opts, &spec, &err) < 0)
		goto fail;
	struct blk_open_opts io = { .format = spec.format, .force_share = share,
	                            .key = spec.key, .key_len = spec.key_len };
	if (blk_open(spec.filename, &io, &d.in, &err) < 0)
		goto fail;
	if (!blk_format_known(out_fmt)) {
		vt_error_set(&err, EINVAL, "", "", "Unknown file format");
		goto fail;
	}
	uint64_t size = blk_size(d.in);
	if (have_count && count <= INT64_MAX / bs && count * bs < size)
		size = count * bs;
	bool past = have_skip && (skip > INT64_MAX / bs || size < skip * bs);
	uint64_t out_size = past ? 0 : size - skip * bs;
	d.in_off = past ? 0 : skip * bs;

	struct stat tst;
	if (stat(out_name, &tst) == 0) {
		uint64_t dev, ino;
		blk_identity(d.in, &dev, &ino);
		if ((uint64_t)tst.st_dev == dev && (uint64_t)tst.st_ino == ino) {
			vt_error_set(&err, EINVAL, out_name, "dd", "the output is also the input; "
			             "write to another file");
			goto fail;
		}
		if (!S_ISREG(tst.st_mode)) {
			vt_error_set(&err, ENOTSUP, out_name, "dd", "vtool writes outputs to regular "
			             "files only");
			goto fail;
		}
		if (blk_lock_file(out_name, &out_lock, &err) < 0)
			goto fail;
	}
	if (!(tmp = img_temp_name(out_name))) {
		vt_error_set(&err, ENOMEM, out_name, "dd", NULL);
		goto fail;
	}
	struct blk_create_opts co = { .format = out_fmt, .size = out_size, .size_given = true };
	struct vt_error inner = { 0 };
	if (blk_create(tmp, &co, NULL, &inner) < 0) {
		vt_error_set(&err, inner.code, "", "", "%s: error while creating output image: %s",
		             out_name, inner.why);
		goto fail;
	}
	struct blk_open_opts oo = { .format = out_fmt, .writable = true, .cache = BLK_CACHE_UNSAFE,
	                            .stream = true };
	if (blk_open(tmp, &oo, &d.out, &err) < 0)
		goto fail;
	if (past)
		fprintf(stderr, "%s: %s: cannot skip to specified offset\n", argv[0], in_name);
	else if (out_size) {
		uint32_t cs = blk_cluster_size(d.out);
		struct img_pipeline pl = { .total = out_size, .chunk = cs > (1u << 20) ? cs : 1u << 20,
		                           .workers = 8, .nbufs = 1, .work = dd_chunk, .opaque = &d,
		                           .catch_signals = true };
		int r = img_pipeline_run(&pl, &err);
		if (r == -EINTR) {
			vt_error_set(&err, EINTR, out_name, "dd", "interrupted; nothing was written "
			             "under the output name");
			rc = 130;
			goto fail;
		}
		if (r < 0) {
			if (!strcmp(err.file, tmp))
				snprintf(err.file, sizeof(err.file), "%s", out_name);
			goto fail;
		}
	}
	/* Durable under its temporary name before it takes the real one. */
	if (blk_sync(d.out, &err) < 0)
		goto fail;
	int r = blk_close(d.out, &err);
	d.out = NULL;
	if (r < 0)
		goto fail;
	if (rename(tmp, out_name) < 0) {
		vt_error_set(&err, errno, out_name, "rename", NULL);
		goto fail;
	}
	if (img_sync_dir(out_name, &err) < 0)
		img_fail(&err);
	rc = 0;
	goto out;
fail:
	if (rc != 130)
		rc = 1;
	img_fail(&err);
out:
	if (d.out)
		blk_close(d.out, NULL);
	if (tmp && rc != 0)
		unlink(tmp);
	if (d.in)
		blk_close(d.in, NULL);
	blk_unlock_file(out_lock);
	img_open_spec_free(&spec);
	free(tmp);
	img_objects_free();
	return rc;
}

const struct vt_command vt_cmd_img_dd = {
	.group = "img",
	.name = "dd",
	.summary = "copy part of an image into a new image, dd style",
	.help = dd_help,
	.main = dd_main,
};
