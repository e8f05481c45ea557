/* vtool img check: qemu-img check's verdicts, messages, JSON and exit codes
 * (0 clean or repaired, 1 check failed, 2 corruptions, 3 leaks only, 63 no checks). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img/img.h"
#include "util/json.h"

static const char check_help[] =
	"Usage: vtool img check [-f fmt] [--output=human|json] [-r leaks|all] [-q]\n"
	"                       [-T src_cache] [-U] filename\n"
	"\n"
	"Check a qcow2 image's metadata for consistency and optionally repair it (qemu-img\n"
	"check compatible). Diagnostics go to stderr.\n"
	"\n"
	"  -f fmt            image format\n"
	"  -r leaks          repair leaked clusters (wasted space)\n"
	"  -r all            repair corruptions too (rebuilds refcounts when needed)\n"
	"  --output=FMT      human (default) or json\n"
	"  -q                quiet      -T src_cache  cache mode      -U  force share\n"
	"\n"
	"Exit status: 0 consistent, 1 check not completed, 2 corruptions, 3 leaks only,\n"
	"63 the format has nothing to check.\n"
	"\n"
	"Example:\n"
	"  vtool img check -r all disk.qcow2\n";

static void report_line(void *opaque, const char *line)
{
	fprintf(stderr, "%s\n", line);
}

static void print_human(const struct blk_check *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%llu errors were found on the image.\nData may be corrupted, or "
			       "further writes to the image may corrupt it.\n",
			       (unsigned long long)r->corruptions);
		if (r->leaks)
			printf("\n%llu leaked clusters were found on the image.\nThis means waste of "
			       "disk space, but no harm to data.\n", (unsigned long long)r->leaks);
		if (r->check_errors)
			printf("\n%llu internal errors have occurred during the check.\n",
			       (unsigned long long)r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
		       "clusters\n", (unsigned long long)r->allocated_clusters,
		       (unsigned long long)r->total_clusters,
		       100.0 * (double)r->allocated_clusters / (double)r->total_clusters,
		       100.0 * (double)r->fragmented_clusters / (double)r->allocated_clusters,
		       100.0 * (double)r->compressed_clusters / (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

static void print_json(const char *filename, const char *format, const struct blk_check *r)
{
	struct vt_json *o = vt_json_object();
#define OPT(key, v) do { if (v) vt_json_set_int(o, key, (int64_t)(v)); } while (0)
	OPT("image-end-offset", r->image_end_offset);
	OPT("compressed-clusters", r->compressed_clusters);
	OPT("total-clusters", r->total_clusters);
	OPT("corruptions", r->corruptions);
	OPT("corruptions-fixed", r->corruptions_fixed);
	vt_json_set_int(o, "check-errors", (int64_t)r->check_errors);
	OPT("leaks", r->leaks);
	OPT("leaks-fixed", r->leaks_fixed);
	OPT("allocated-clusters", r->allocated_clusters);
	vt_json_set_str(o, "filename", filename);
	vt_json_set_str(o, "format", format);
	OPT("fragmented-clusters", r->fragmented_clusters);
#undef OPT
	vt_json_print(stdout, o, VT_JSON_QEMU);
	vt_json_free(o);
}

static int check_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'O' },
		{ "repair", required_argument, NULL, 'r' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *output = "human", *cache = "writeback";
	unsigned fix = 0;
	bool quiet = false, share = false;
	int c;

	while ((c = getopt_long(argc, argv, "hf:r:qT:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': output = optarg; break;
		case 'r':
			if (!strcmp(optarg, "leaks"))
				fix = BLK_CHECK_FIX_LEAKS;
			else if (!strcmp(optarg, "all"))
				fix = BLK_CHECK_FIX_LEAKS | BLK_CHECK_FIX_ERRORS;
			else
				return vt_usage_error(argv[0], "Unknown option value for -r (expecting "
				                      "'leaks' or 'all'): %s", optarg);
			break;
		case 'q': quiet = true; break;
		case 'T': cache = optarg; break;
		case 'U': share = true; break;
		default: return vt_usage_hint(argv[0]);
		}
	}
	bool json = !strcmp(output, "json");
	if (!json && strcmp(output, "human"))
		return vt_usage_error(argv[0], "--output must be used with human or json as argument.");
	if (optind != argc - 1)
		return vt_usage_error(argv[0], "Expecting one image file name");
	if (fix && share)
		return vt_usage_error(argv[0], "--force-share/-U is not allowed with -r");
	enum blk_cache mode;
	if (blk_cache_parse(cache, &mode) < 0)
		return vt_usage_error(argv[0], "Invalid source cache option: %s", cache);
	const char *filename = argv[optind];
	struct vt_error err = { 0 };
	struct blk *b;
	struct blk_open_opts o = { .format = fmt, .writable = fix != 0, .repair = fix != 0,
	                           .cache = mode, .force_share = share, .no_backing = true,
	                           .for_check = true };
	if (blk_open(filename, &o, &b, &err) < 0)
		return img_fail(&err);

	const char *format = blk_format(b); /* the driver's static name: outlives b */
	struct blk_check res, again;
	int r = blk_check(b, fix, &res, report_line, NULL, &err);
	if (r == -ENOTSUP) {
		fprintf(stderr, "vtool: %s: This image format does not support checks\n", filename);
		blk_close(b, NULL);
		return 63;
	}
	if (r < 0) {
		img_fail(&err);
		blk_close(b, NULL);
		return 1;
	}
	if (fix && (res.leaks_fixed || res.corruptions_fixed)) {
		if (!quiet && !json)
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %llu leaked clusters\n    %llu corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       (unsigned long long)res.leaks_fixed,
			       (unsigned long long)res.corruptions_fixed);
		if ((r = blk_check(b, 0, &again, report_line, NULL, &err)) < 0) {
			img_fail(&err);
			blk_close(b, NULL);
			return 1;
		}
		again.leaks_fixed = res.leaks_fixed;
		again.corruptions_fixed = res.corruptions_fixed;
		res = again;
	}
	if (blk_close(b, &err) < 0)
		img_fail(&err);
	if (json)
		print_json(filename, format, &res);
	else if (!quiet)
		print_human(&res);
	if (res.check_errors)
		return 1;
	if (res.corruptions)
		return 2;
	return res.leaks ? 3 : 0;
}

const struct vt_command vt_cmd_img_check = {
	.group = "img",
	.name = "check",
	.summary = "check an image's metadata for consistency, optionally repair it",
	.help = check_help,
	.main = check_main,
};
