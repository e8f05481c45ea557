/* vtool img bitmap: qemu-img bitmap's actions on persistent dirty bitmaps, applied in
 * the order given; the ones before a failure stay done, as in qemu-img. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "img/object.h"
#include "util/size.h"

static const char bitmap_help[] =
	"Usage: vtool img bitmap (--merge SOURCE | --add | --remove | --clear | --enable |\n"
	"                         --disable)... [-b source_file [-F source_fmt]]\n"
	"                         [-g granularity] [--object objectdef]\n"
	"                         [--image-opts | -f fmt] filename bitmap\n"
	"\n"
	"Change the persistent dirty bitmaps of a qcow2 v3 image (qemu-img bitmap\n"
	"compatible). A dirty bitmap records which parts of the disk were written since it\n"
	"was added or last cleared: backup tools read it to copy only what changed. Actions\n"
	"run in the order given; `vtool img info` lists the bitmaps.\n"
	"\n"
	"  --add             create 'bitmap', enabled (it records every write from now on)\n"
	"  --remove          delete 'bitmap'\n"
	"  --clear           reset every bit of 'bitmap' to clean\n"
	"  --enable          'bitmap' records writes again\n"
	"  --disable         'bitmap' stops recording writes (it keeps its bits)\n"
	"  --merge SOURCE    set in 'bitmap' every bit set in bitmap SOURCE (of this image,\n"
	"                    or of source_file with -b); granularities may differ, disk sizes\n"
	"                    may not\n"
	"  -g granularity    bytes each bit covers, for --add: a power of two from 512 to\n"
	"                    2G (default: the cluster size, within 4k..64k)\n"
	"  -b source_file    --merge reads SOURCE from this image (opened read-only)\n"
	"  -F source_fmt     format of source_file (probed when omitted)\n"
	"  -f fmt            format of filename (probed when omitted)\n"
	"  --image-opts      filename is an option string: driver=FMT,file.filename=PATH\n"
	"  --object objdef   accepted for qemu-img compatibility\n"
	"\n"
	"Writes through vtool (run, convert -n, commit, dd, ...) set bits in the enabled\n"
	"bitmaps of the image they write. A bitmap flagged in-use was not saved cleanly (its\n"
	"writer was killed): it can only be removed. Exit status 0 on success, 1 on any\n"
	"failure.\n"
	"\n"
	"Example:\n"
	"  vtool img bitmap --add disk.qcow2 since-monday\n"
	"  vtool img bitmap --disable --add -g 1M disk.qcow2 frozen\n"
	"  vtool img bitmap --merge since-monday disk.qcow2 frozen\n";

enum { OPT_ADD = 256, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE, OPT_MERGE, OPT_OBJECT,
       OPT_IMAGE_OPTS };

struct action {
	enum blk_bitmap_action act;
	const char *src;             /* merge */
};

static const char *const action_names[] = {
	[BLK_BITMAP_ADD] = "add", [BLK_BITMAP_REMOVE] = "remove", [BLK_BITMAP_CLEAR] = "clear",
	[BLK_BITMAP_ENABLE] = "enable", [BLK_BITMAP_DISABLE] = "disable",
	[BLK_BITMAP_MERGE] = "merge",
};

static int usage(const char *argv0, const char *msg)
{
	fprintf(stderr, "%s: %s\n", argv0, msg);
	return 1;
}

/* qemu's cvtnum message for a granularity that is not a size. */
static int parse_granularity(const char *argv0, const char *s, uint64_t *out)
{
	if (s[0] == '-' || vt_size_parse(s, 1, out) < 0) {
		fprintf(stderr, "%s: Invalid granularity specified. You may use k, M, G, T, P or E "
		        "suffixes for\n%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and "
		        "exabytes.\n", argv0, argv0);
		return -1;
	}
	return 0;
}

/* One action; a merge reads its source from src (this image when NULL). */
static int apply(struct blk *b, struct blk *src, const char *bitmap, uint64_t granularity,
                 const struct action *a, struct vt_error *err)
{
	struct blk_bitmap_bits bits = { 0 };
	struct blk_bitmap_op op = { .action = a->act, .name = bitmap, .granularity = granularity,
	                            .src = &bits };
	int r = 0;
	if (a->act == BLK_BITMAP_MERGE)
		r = blk_bitmap_read(src ? src : b, a->src, &bits, err);
	if (r == 0)
		r = blk_bitmap_apply(b, &op, err);
	free(bits.bits);
	return r;
}

static int bitmap_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "add", no_argument, NULL, OPT_ADD },
		{ "remove", no_argument, NULL, OPT_REMOVE },
		{ "clear", no_argument, NULL, OPT_CLEAR },
		{ "enable", no_argument, NULL, OPT_ENABLE },
		{ "disable", no_argument, NULL, OPT_DISABLE },
		{ "merge", required_argument, NULL, OPT_MERGE },
		{ "object", required_argument, NULL, OPT_OBJECT },
		{ "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *src_file = NULL, *src_fmt = NULL;
	uint64_t granularity = 0;
	bool image_opts = false, add = false, merge = false;
	struct action *acts = calloc((size_t)argc + 1, sizeof(*acts));
	size_t nacts = 0;
	struct vt_error err = { 0 };
	struct img_open_spec spec = { 0 };
	struct blk *b = NULL, *src = NULL;
	int c, rc = 1;

	if (!acts)
		return 1;
	while ((c = getopt_long(argc, argv, "hf:b:F:g:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(bitmap_help, stdout);
			rc = 0;
			goto out;
		case 'f': fmt = optarg; break;
		case 'b': src_file = optarg; break;
		case 'F': src_fmt = optarg; break;
		case 'g':
			if (parse_granularity(argv[0], optarg, &granularity) < 0)
				goto out;
			break;
		case OPT_ADD: acts[nacts++].act = BLK_BITMAP_ADD; add = true; break;
		case OPT_REMOVE: acts[nacts++].act = BLK_BITMAP_REMOVE; break;
		case OPT_CLEAR: acts[nacts++].act = BLK_BITMAP_CLEAR; break;
		case OPT_ENABLE: acts[nacts++].act = BLK_BITMAP_ENABLE; break;
		case OPT_DISABLE: acts[nacts++].act = BLK_BITMAP_DISABLE; break;
		case OPT_MERGE:
			acts[nacts].act = BLK_BITMAP_MERGE;
			acts[nacts++].src = optarg;
			merge = true;
			break;
		case OPT_OBJECT:
			if (img_object_add(optarg, &err) < 0) {
				img_fail(&err);
				goto out;
			}
			break;
		case OPT_IMAGE_OPTS: image_opts = true; break;
		default:
			rc = vt_usage_hint(argv[0]);
			goto out;
		}
	}
	if (!nacts) {
		usage(argv[0], "Need at least one of --add, --remove, --clear, --enable, --disable, "
		      "or --merge");
		goto out;
	}
	if (granularity && !add) {
		usage(argv[0], "granularity only supported with --add");
		goto out;
	}
	if (src_fmt && !src_file) {
		usage(argv[0], "-F only supported with -b");
		goto out;
	}
	if (src_file && !merge) {
		usage(argv[0], "Merge bitmap source file only supported with --merge");
		goto out;
	}
	if (optind != argc - 2) {
		usage(argv[0], "Expecting filename and bitmap name");
		goto out;
	}
	const char *bitmap = argv[optind + 1];
	if (img_open_spec(argv[optind], fmt, image_opts, &spec, &err) < 0) {
		img_fail(&err);
		goto out;
	}
	struct blk_open_opts o = { .format = spec.format, .writable = true };
	if (blk_open(spec.filename, &o, &b, &err) < 0) {
		img_fail(&err);
		goto out;
	}
	if (src_file) {
		struct blk_open_opts so = { .format = src_fmt };
		if (blk_open(src_file, &so, &src, &err) < 0) {
			img_fail(&err);
			goto out;
		}
	}
	rc = 0;
	for (size_t i = 0; i < nacts; i++) {
		if (apply(b, src, bitmap, granularity, &acts[i], &err) < 0) {
			fprintf(stderr, "%s: Operation %s on bitmap %s failed: %s\n", argv[0],
			        action_names[acts[i].act], bitmap, err.why);
			rc = 1;
			break;
		}
	}
	/* Closing stores the bitmaps: what ran before a failure is kept. */
	int r = blk_close(b, &err);
	b = NULL;
	if (r < 0 && !rc)
		rc = img_fail(&err);
out:
	blk_close(src, NULL);
	if (b)
		blk_close(b, NULL);
	img_open_spec_free(&spec);
	img_objects_free();
	free(acts);
	return rc;
}

int img_bitmaps_check(const char *argv0, struct blk *src, bool skip_broken)
{
	struct vt_error err = { 0 };
	struct blk_bitmap *l;
	size_t n;
	if (blk_bitmap_list(src, &l, &n, &err) < 0) {
		fprintf(stderr, "%s: %s\n", argv0, err.why);
		return -1;
	}
	int r = 0;
	for (size_t i = n; i-- > 0 && !skip_broken && r == 0;) {
		if (l[i].in_use) {
			fprintf(stderr, "%s: Cannot copy inconsistent bitmap '%s'\nTry "
			        "--skip-broken-bitmaps, or use 'vtool img bitmap --remove' to delete it\n",
			        argv0, l[i].name);
			r = -1;
		}
	}
	blk_bitmap_list_free(l, n);
	return r;
}

int img_bitmaps_copy(const char *argv0, struct blk *src, struct blk *dst, bool skip_broken,
                     struct vt_error *err)
{
	struct blk_bitmap *l;
	size_t n;
	int r = blk_bitmap_list(src, &l, &n, err);
	if (r < 0)
		return r;
	struct blk_bitmap *have = NULL;
	size_t nhave = 0;
	if (blk_bitmap_list(dst, &have, &nhave, err) < 0)
		nhave = 0; /* the add below reports it */
	/* qemu-img walks them last to first: its warnings and errors come in that order. */
	for (size_t i = n; i-- > 0 && r == 0;) {
		if (l[i].in_use) {
			fprintf(stderr, "%s: warning: Skipping inconsistent bitmap '%s'\n", argv0,
			        l[i].name);
			continue;
		}
		for (size_t k = 0; k < nhave && r == 0; k++)
			if (!strcmp(have[k].name, l[i].name))
				r = vt_error_set(err, EEXIST, "", NULL,
				                 "Failed to create bitmap %s: Bitmap already exists: %s",
				                 l[i].name, l[i].name);
	}
	blk_bitmap_list_free(have, nhave);
	/* Added first to last, so the directory keeps the source's order. */
	for (size_t i = 0; i < n && r == 0; i++) {
		if (l[i].in_use)
			continue; /* skip_broken: img_bitmaps_check refused them otherwise */
		struct blk_bitmap_op add = { .action = BLK_BITMAP_ADD, .name = l[i].name,
		                             .granularity = l[i].granularity,
		                             .disabled = !l[i].enabled };
		struct action merge = { .act = BLK_BITMAP_MERGE, .src = l[i].name };
		if ((r = blk_bitmap_apply(dst, &add, err)) < 0) {
			char why[sizeof(err->why)];
			snprintf(why, sizeof(why), "%s", err->why);
			vt_error_set(err, -r, "", NULL, "Failed to create bitmap %s: %s", l[i].name, why);
		} else if ((r = apply(dst, src, l[i].name, 0, &merge, err)) < 0) {
			char why[sizeof(err->why)];
			snprintf(why, sizeof(why), "%s", err->why);
			vt_error_set(err, -r, "", NULL, "Failed to populate bitmap %s: %s", l[i].name,
			             why);
		}
	}
	blk_bitmap_list_free(l, n);
	return r;
}

const struct vt_command vt_cmd_img_bitmap = {
	.group = "img",
	.name = "bitmap",
	.summary = "add, remove, clear, enable, disable or merge persistent dirty bitmaps",
	.help = bitmap_help,
	.main = bitmap_main,
};
