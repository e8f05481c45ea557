/* vtool img create: qemu-img create's options and output. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "util/size.h"

static const char create_help[] =
	"Usage: vtool img create [-q] [-f fmt] [-b backing_file -F backing_fmt] [-u]\n"
	"                        [-o options] filename [size]\n"
	"\n"
	"Create a disk image (qemu-img create compatible).\n"
	"\n"
	"  -f fmt            image format: qcow2 or raw (default raw)\n"
	"  -b backing_file   create a copy-on-write overlay of backing_file\n"
	"  -F backing_fmt    format of the backing file (required with -b)\n"
	"  -u                do not open the backing file (size must be given)\n"
	"  -o options        format options as key=value,...; '-o help' lists them\n"
	"  -q                quiet: print nothing on success\n"
	"  size              bytes, or with a k, M, G, T, P or E suffix (powers of 1024);\n"
	"                    optional with -b (the backing file's size is used)\n"
	"\n"
	"Example:\n"
	"  vtool img create -f qcow2 disk.img 8G\n";

static int create_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct blk_create_opts co = { 0 };
	char *options = NULL;
	bool quiet = false;
	int c;

	while ((c = getopt_long(argc, argv, "hf:b:F:uo:q", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': co.format = optarg; break;
		case 'b': co.backing_file = optarg; break;
		case 'F': co.backing_format = optarg; break;
		case 'u': co.no_backing_open = true; break;
		case 'q': quiet = true; break;
		case 'o':
			/* Several -o are joined, as qemu-img does. */
			if (options) {
				char *joined = malloc(strlen(options) + strlen(optarg) + 2);
				if (!joined)
					return 1;
				sprintf(joined, "%s,%s", options, optarg);
				free(options);
				options = joined;
			} else {
				options = strdup(optarg);
			}
			break;
		default:
			free(options);
			return vt_usage_hint(argv[0]);
		}
	}
	const char *fmt = co.format ? co.format : "raw";
	if (options && (!strcmp(options, "help") || !strcmp(options, "?"))) {
		const char *h = blk_create_help(fmt);
		free(options);
		if (!h)
			return vt_usage_error(argv[0], "Unknown file format '%s'", fmt);
		fputs(h, stdout);
		return 0;
	}
	co.options = options;
	if (optind >= argc) {
		free(options);
		return vt_usage_error(argv[0], "Expecting image file name");
	}
	const char *filename = argv[optind++];
	if (optind < argc) {
		uint64_t size;
		int r = vt_size_parse(argv[optind], 1, &size);
		if (r < 0) {
			free(options);
			fprintf(stderr, "%s: %s\n", argv[0],
			        r == -ERANGE ? VT_SIZE_ERANGE_MSG : VT_SIZE_EINVAL_MSG);
			return 1;
		}
		co.size = size;
		co.size_given = true;
		optind++;
	}
	if (optind < argc) {
		free(options);
		return vt_usage_error(argv[0], "Unexpected argument: %s", argv[optind]);
	}
	struct vt_error err = { 0 };
	char *formatting = NULL;
	int r = blk_create(filename, &co, &formatting, &err);
	free(options);
	if (r < 0)
		return img_fail(&err);
	if (!quiet)
		printf("Formatting '%s', %s\n", filename, formatting ? formatting : "");
	free(formatting);
	return 0;
}

const struct vt_command vt_cmd_img_create = {
	.group = "img",
	.name = "create",
	.summary = "create a new disk image (qcow2 or raw)",
	.help = create_help,
	.main = create_main,
};
