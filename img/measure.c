/* vtool img measure: how large a new image would be (qemu-img measure's numbers). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "util/json.h"
#include "util/size.h"

static const char measure_help[] =
	"Usage: vtool img measure [--output=human|json] [-O output_fmt] [-o options]\n"
	"                         [--size N | [-f fmt] [-U] filename]\n"
	"\n"
	"Compute the size a new image needs: for a copy of filename, or for an empty disk of\n"
	"N bytes (qemu-img measure compatible, same formulas).\n"
	"\n"
	"  -O fmt            output format: raw (default) or qcow2\n"
	"  -o options        its create options (cluster_size, refcount_bits, preallocation...)\n"
	"  --size N          measure an empty disk of N bytes instead of an image\n"
	"  -f fmt            format of filename   -U  open without locks\n"
	"  --output=FMT      human (default) or json\n"
	"\n"
	"Example:\n"
	"  vtool img measure -O qcow2 --size 8G\n";

static int measure_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'P' },
		{ "size", required_argument, NULL, 'z' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out_fmt = "raw", *options = NULL, *output = "human";
	uint64_t size = 0;
	bool size_given = false, share = false;
	int c;

	while ((c = getopt_long(argc, argv, "hf:O:o:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out_fmt = optarg; break;
		case 'o': options = optarg; break;
		case 'P': output = optarg; break;
		case 'U': share = true; break;
		case 'z': {
			int r = vt_size_parse(optarg, 1, &size);
			if (r < 0) {
				fprintf(stderr, "%s: %s\n", argv[0],
				        r == -ERANGE ? VT_SIZE_ERANGE_MSG : VT_SIZE_EINVAL_MSG);
				return 1;
			}
			size_given = true;
			break;
		}
		default: return vt_usage_hint(argv[0]);
		}
	}
	bool json = !strcmp(output, "json");
	if (!json && strcmp(output, "human"))
		return vt_usage_error(argv[0], "--output must be used with human or json as argument.");
	if (size_given == (optind < argc))
		return vt_usage_error(argv[0], size_given ? "--size N cannot be used together with a filename."
		                                          : "Either --size N or one filename must be specified.");
	if (optind < argc - 1)
		return vt_usage_error(argv[0], "At most one filename argument is allowed.");
	if (options && (!strcmp(options, "help") || !strcmp(options, "?"))) {
		const char *h = blk_create_help(out_fmt);
		if (!h)
			return vt_usage_error(argv[0], "Unknown file format '%s'", out_fmt);
		fputs(h, stdout);
		return 0;
	}
	struct vt_error err = { 0 };
	struct blk *src = NULL;
	if (!size_given) {
		struct blk_open_opts o = { .format = fmt, .force_share = share };
		if (blk_open(argv[optind], &o, &src, &err) < 0)
			return img_fail(&err);
	}
	struct blk_measure m;
	int r = blk_measure(out_fmt, options, size, src, &m, &err);
	blk_close(src, NULL);
	if (r < 0)
		return img_fail(&err);
	if (json) {
		struct vt_json *o = vt_json_object();
		if (m.has_bitmaps)
			vt_json_set_int(o, "bitmaps", (int64_t)m.bitmaps);
		vt_json_set_int(o, "required", (int64_t)m.required);
		vt_json_set_int(o, "fully-allocated", (int64_t)m.fully_allocated);
		vt_json_print(stdout, o, VT_JSON_QEMU);
		vt_json_free(o);
	} else {
		printf("required size: %llu\nfully allocated size: %llu\n",
		       (unsigned long long)m.required, (unsigned long long)m.fully_allocated);
		if (m.has_bitmaps)
			printf("bitmaps size: %llu\n", (unsigned long long)m.bitmaps);
	}
	return 0;
}

const struct vt_command vt_cmd_img_measure = {
	.group = "img",
	.name = "measure",
	.summary = "compute the size a new image needs",
	.help = measure_help,
	.main = measure_main,
};
