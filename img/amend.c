/* vtool img amend: qemu-img amend's options, messages and exit codes. The work is the
 * format driver's (blk_amend); this file parses, opens and reports. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "img/object.h"
#include "util/progress.h"

static const char amend_help[] =
	"Usage: vtool img amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt]\n"
	"                       [-t cache] [--force] -o options filename\n"
	"\n"
	"Change format options of an existing image in place (qemu-img amend compatible).\n"
	"qcow2: compat=0.10|1.1 (a downgrade turns zero clusters into data and is refused\n"
	"where version 2 cannot describe the image), refcount_bits=1..64 (the refcount\n"
	"structure is rebuilt), lazy_refcounts=on|off, size. '-o help' lists them.\n"
	"\n"
	"  -o options        key=value,... (several -o are joined)\n"
	"  -f fmt            format of the image (probed when omitted)\n"
	"  -t cache          cache mode (default writeback)\n"
	"  -p                show progress          -q   quiet\n"
	"  --force           allow operations qemu guards with it (LUKS key slots)\n"
	"  --object objectdef  define a secret (secret,id=ID,data=...|file=...)\n"
	"  --image-opts      filename is an option string: driver=FMT,file.filename=PATH\n"
	"\n"
	"Example:\n"
	"  vtool img amend -o compat=0.10 disk.qcow2\n";

static bool has_help_option(const char *options)
{
	const char *p = options;
	while (*p) {
		size_t n = strcspn(p, ",");
		if ((n == 4 && !strncmp(p, "help", 4)) || (n == 1 && *p == '?'))
			return true;
		p += n;
		while (*p == ',')
			p++;
	}
	return false;
}

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct vt_progress *p = opaque;
	p->total = total;
	vt_progress_update(p, done);
}

static int print_help(const char *fmt)
{
	struct vt_error err = { 0 };
	const char *text = blk_amend_help(fmt, &err);
	if (!text)
		return img_fail(&err);
	fputs(text, stdout);
	return 0;
}

static int amend_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, 'O' },
		{ "image-opts", no_argument, NULL, 'I' },
		{ "force", no_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *cache = "writeback";
	bool progress = false, quiet = false, force = false, image_opts = false;
	char *options = NULL;
	struct vt_error err = { 0 };
	struct blk *b = NULL;
	struct img_open_spec spec = { 0 };
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "ho:f:t:pq", longopts, NULL)) != -1) {
		switch (c) {
		case 'o': {
			char *j = options ? malloc(strlen(options) + strlen(optarg) + 2) : strdup(optarg);
			if (j && options)
				sprintf(j, "%s,%s", options, optarg);
			free(options);
			if (!(options = j))
				return 1;
			break;
		}
		case 'f': fmt = optarg; break;
		case 't': cache = optarg; break;
		case 'p': progress = true; break;
		case 'q': quiet = true; break;
		case 'F': force = true; break;
		case 'I': image_opts = true; break;
		case 'O':
			if (img_object_add(optarg, &err) < 0) {
				img_fail(&err);
				goto out;
			}
			break;
		default:
			free(options);
			img_objects_free();
			return vt_usage_hint(argv[0]);
		}
	}
	if (!options) {
		img_objects_free();
		return vt_usage_error(argv[0], "Must specify options (-o)");
	}
	if (quiet)
		progress = false;
	if (fmt && has_help_option(options)) {
		rc = print_help(fmt);
		goto out;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "%s: Expecting one image file name\n", argv[0]);
		goto out;
	}
	const char *filename = argv[optind];
	enum blk_cache mode;
	if (img_parse_cache(argv[0], "cache", cache, &mode) < 0)
		goto out;
	if (img_open_spec(filename, fmt, image_opts, &spec, &err) < 0) {
		img_fail(&err);
		goto out;
	}
	struct blk_open_opts o = { .format = spec.format, .writable = true, .cache = mode };
	if (blk_open(spec.filename, &o, &b, &err) < 0) {
		img_fail(&err);
		goto out;
	}
	if (has_help_option(options)) {
		rc = print_help(blk_format(b));
		goto out;
	}
	struct vt_progress pr;
	vt_progress_init(&pr, progress ? VT_PROGRESS_QEMU : VT_PROGRESS_NONE, stdout, 1);
	int r = blk_amend(b, options, force, on_progress, &pr, &err);
	if (r == 0) {
		r = blk_close(b, &err);
		b = NULL;
	}
	if (r < 0) {
		if (progress)
			fputc('\n', stdout);
		img_fail(&err);
		goto out;
	}
	vt_progress_finish(&pr);
	rc = 0;
out:
	if (b)
		blk_close(b, NULL);
	img_open_spec_free(&spec);
	free(options);
	img_objects_free();
	return rc;
}

const struct vt_command vt_cmd_img_amend = {
	.group = "img",
	.name = "amend",
	.summary = "change format options of an image in place",
	.help = amend_help,
	.main = amend_main,
};
