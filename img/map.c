/* vtool img map: where each range of the disk comes from (qemu-img map's output). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "util/json.h"
#include "util/size.h"

static const char map_help[] =
	"Usage: vtool img map [-f fmt] [--output=human|json] [--start-offset=O]\n"
	"                     [--max-length=L] [-U] filename\n"
	"\n"
	"Show which ranges of the image hold data, zeros or nothing, and in which file of the\n"
	"backing chain (qemu-img map compatible).\n"
	"\n"
	"  -f fmt            image format\n"
	"  --output=FMT      human (default; ranges with data only) or json (every range)\n"
	"  --start-offset=O  begin at byte O       --max-length=L  stop after L bytes\n"
	"  -U, --force-share open without locks\n"
	"\n"
	"Example:\n"
	"  vtool img map --output=json disk.qcow2\n";

struct entry {
	uint64_t start, length, offset;
	int depth;
	bool present, zero, data, has_offset;
	const char *file;
};

static bool mergeable(const struct entry *a, const struct entry *b)
{
	return a->depth == b->depth && a->present == b->present && a->zero == b->zero &&
	       a->data == b->data && a->has_offset == b->has_offset && a->file == b->file &&
	       (!a->has_offset || a->offset + a->length == b->offset);
}

static int print_entry(const struct entry *e, bool json, bool *first, struct vt_error *err)
{
	if (json) {
		struct vt_strbuf sb = { 0 };
		vt_strbuf_addf(&sb, "%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
		               ", \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
		               *first ? "" : ",\n", e->start, e->length, e->depth,
		               e->present ? "true" : "false", e->zero ? "true" : "false",
		               e->data ? "true" : "false");
		if (e->has_offset)
			vt_strbuf_addf(&sb, ", \"offset\": %" PRIu64, e->offset);
		vt_strbuf_add(&sb, "}", 1);
		if (sb.buf)
			fputs(sb.buf, stdout);
		free(sb.buf);
	} else if (e->data) {
		if (!e->has_offset) {
			vt_error_set(err, 95, e->file, "map",
			             "File contains external, encrypted or compressed clusters.");
			return -1;
		}
		if (!e->zero) {
			char c1[24], c2[24], c3[24];
			snprintf(c1, sizeof(c1), "%#" PRIx64, e->start);
			snprintf(c2, sizeof(c2), "%#" PRIx64, e->length);
			snprintf(c3, sizeof(c3), "%#" PRIx64, e->offset);
			printf("%-16s%-16s%-16s%s\n", e->start ? c1 : "0", e->length ? c2 : "0",
			       e->offset ? c3 : "0", e->file);
		}
	}
	*first = false;
	return 0;
}

static int map_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'O' },
		{ "start-offset", required_argument, NULL, 's' },
		{ "max-length", required_argument, NULL, 'l' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *output = "human";
	uint64_t start = 0, max_len = UINT64_MAX;
	bool share = false;
	int c;

	while ((c = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': output = optarg; break;
		case 's':
			if (vt_size_parse(optarg, 1, &start) < 0)
				return vt_usage_error(argv[0], "Invalid start offset specified! You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
			break;
		case 'l':
			if (vt_size_parse(optarg, 1, &max_len) < 0)
				return vt_usage_error(argv[0], "Invalid length specified! You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
			break;
		case 'U': share = true; break;
		default: return vt_usage_hint(argv[0]);
		}
	}
	bool json = !strcmp(output, "json");
	if (!json && strcmp(output, "human"))
		return vt_usage_error(argv[0], "--output must be used with human or json as argument.");
	if (optind != argc - 1)
		return vt_usage_error(argv[0], "Expecting one image file name");
	struct vt_error err = { 0 };
	struct blk *b;
	struct blk_open_opts o = { .format = fmt, .force_share = share };
	if (blk_open(argv[optind], &o, &b, &err) < 0)
		return img_fail(&err);
	uint64_t size = blk_size(b);
	uint64_t end = start > size ? size : (max_len > size - start ? size : start + max_len);
	struct entry cur = { 0 };
	bool have = false, first = true;
	int rc = 0;

	if (json)
		fputs("[", stdout);
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	for (uint64_t off = start; off < end && rc == 0;) {
		struct blk_status st;
		if (blk_block_status(b, off, end - off, &st, &err) < 0) {
			rc = 1;
			break;
		}
		struct entry e = {
			.start = off, .length = st.len, .depth = st.depth,
			.present = st.flags & BLK_STATUS_ALLOCATED,
			.zero = st.flags & BLK_STATUS_ZERO, .data = st.flags & BLK_STATUS_DATA,
			.has_offset = st.flags & BLK_STATUS_OFFSET_VALID, .offset = st.host_offset,
			.file = blk_filename(st.layer),
		};
		if (have && mergeable(&cur, &e)) {
			cur.length += e.length;
		} else {
			if (have && print_entry(&cur, json, &first, &err) < 0)
				rc = 1;
			cur = e;
			have = true;
		}
		off += st.len;
	}
	/* An empty range is still one (empty, absent) extent to qemu-img. */
	if (!have && rc == 0) {
		cur = (struct entry){ .start = start < size ? start : size, .file = blk_filename(b) };
		have = true;
	}
	if (rc == 0 && have && print_entry(&cur, json, &first, &err) < 0)
		rc = 1;
	if (json)
		fputs("]\n", stdout);
	if (rc)
		img_fail(&err);
	blk_close(b, NULL);
	return rc;
}

const struct vt_command vt_cmd_img_map = {
	.group = "img",
	.name = "map",
	.summary = "show the allocation map of an image and its backing chain",
	.help = map_help,
	.main = map_main,
};
