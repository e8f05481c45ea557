/* vtool img resize: qemu-img resize's options, size rules, messages and exit codes. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "util/size.h"

static const char resize_help[] =
	"Usage: vtool img resize [--shrink] [--preallocation=mode] [-f fmt] [-q]\n"
	"                        [--object objdef] filename [+|-]size\n"
	"\n"
	"Change the virtual size of a raw or qcow2 image (qemu-img resize compatible).\n"
	"\n"
	"  size              the new size, or +size / -size relative to the current one;\n"
	"                    bytes, or with a k, M, G, T, P or E suffix (powers of 1024)\n"
	"  --shrink          allow a smaller size: everything past the new end is dropped\n"
	"  --preallocation=mode\n"
	"                    how the new part is allocated when growing: off (default),\n"
	"                    metadata (qcow2 only), falloc (reserve host space) or full\n"
	"                    (write zeros)\n"
	"  -f fmt            image format (probed when omitted)\n"
	"  -q                quiet: no 'Image resized.'\n"
	"  --object objdef   accepted for qemu-img compatibility (vtool needs no objects here)\n"
	"\n"
	"qcow2 sizes are multiples of 512; a version 2 (compat=0.10) image with internal\n"
	"snapshots cannot be resized. Exit status 0 on success, 1 on failure.\n"
	"\n"
	"Example:\n"
	"  vtool img resize disk.qcow2 +10G\n";

/* qemu's size parameter: a non-negative number below 2^64. */
static int parse_size(const char *arg, uint64_t *n)
{
	int r = vt_size_parse_max(arg, 1, UINT64_MAX, n);
	if (r == -ERANGE) {
		fprintf(stderr, "vtool: Value '%s' is out of range for parameter 'size'\n", arg);
		return -1;
	}
	if (r < 0) {
		fprintf(stderr, "vtool: Parameter 'size' expects a non-negative number below 2^64\n"
		                "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
		                "tera-, peta-\nand exabytes, respectively.\n");
		return -1;
	}
	return 0;
}

static int resize_main(int argc, char **argv)
{
	enum { OPT_OBJECT = 256, OPT_PREALLOC, OPT_SHRINK };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, OPT_OBJECT },
		{ "preallocation", required_argument, NULL, OPT_PREALLOC },
		{ "shrink", no_argument, NULL, OPT_SHRINK },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL;
	enum blk_prealloc prealloc = BLK_PREALLOC_OFF;
	bool quiet = false, shrink = false;
	int c;

	/* The size is the last argument, taken before the options are read, so that a
	 * negative size is not an option (as qemu-img). */
	if (argc < 3)
		return vt_usage_error(argv[0], "Not enough arguments");
	const char *size_arg = argv[--argc];
	while ((c = getopt_long(argc, argv, ":hf:q", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(resize_help, stdout);
			return 0;
		case 'f': fmt = optarg; break;
		case 'q': quiet = true; break;
		case OPT_OBJECT: break;
		case OPT_SHRINK: shrink = true; break;
		case OPT_PREALLOC:
			if (blk_prealloc_parse(optarg, &prealloc) < 0) {
				fprintf(stderr, "vtool: Invalid preallocation mode '%s'\n", optarg);
				return 1;
			}
			break;
		case ':':
			return vt_usage_error(argv[0], "missing argument for option '%s'", argv[optind - 1]);
		default:
			return vt_usage_error(argv[0], "unrecognized option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return vt_usage_error(argv[0], "Expecting image file name and size");
	const char *filename = argv[optind];
	int relative = 0;
	if (size_arg[0] == '+')
		relative = 1, size_arg++;
	else if (size_arg[0] == '-')
		relative = -1, size_arg++;
	uint64_t n;
	if (parse_size(size_arg, &n) < 0)
		return 1;

	struct vt_error err = { 0 };
	struct blk_open_opts o = { .format = fmt, .writable = true, .no_backing = false };
	struct blk *b;
	if (blk_open(filename, &o, &b, &err) < 0)
		return img_fail(&err);
	uint64_t current = blk_size(b);
	/* qemu computes in signed 64 bits: a result that is not positive is refused. */
	int64_t total = relative ? (int64_t)(current + (uint64_t)relative * n) : (int64_t)n;
	int rc = 0;
	if (total <= 0) {
		fprintf(stderr, "vtool: New image size must be positive\n");
		rc = 1;
	} else if ((uint64_t)total <= current && prealloc != BLK_PREALLOC_OFF) {
		fprintf(stderr, "vtool: Preallocation can only be used for growing images\n");
		rc = 1;
	} else if ((uint64_t)total < current && !shrink) {
		fprintf(stderr, "vtool: Use the --shrink option to perform a shrink operation.\n"
		                "vtool: warning: Shrinking an image will delete all data beyond the "
		                "shrunken image's end. Before performing such an operation, make sure "
		                "there is no important data there.\n");
		rc = 1;
	} else if (blk_resize(b, (uint64_t)total, prealloc, &err) < 0) {
		rc = img_fail(&err);
	}
	if (blk_close(b, rc ? NULL : &err) < 0 && !rc)
		rc = img_fail(&err);
	if (!rc && !quiet)
		printf("Image resized.\n");
	return rc;
}

const struct vt_command vt_cmd_img_resize = {
	.group = "img",
	.name = "resize",
	.summary = "grow or shrink the virtual size of an image",
	.help = resize_help,
	.main = resize_main,
};
