/* vtool img info: qemu-img info's human and JSON output (7.2 shapes, same key order). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img/img.h"
#include "util/json.h"
#include "util/size.h"

static const char info_help[] =
	"Usage: vtool img info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename\n"
	"\n"
	"Describe a disk image (qemu-img info compatible; JSON member names and order as\n"
	"qemu-img 7.2).\n"
	"\n"
	"  -f fmt            image format (probed when omitted; pass it for untrusted images)\n"
	"  --output=FMT      human (default) or json\n"
	"  --backing-chain   describe every image of the backing chain\n"
	"  -U, --force-share open without locks even if another process writes the image\n"
	"\n"
	"Example:\n"
	"  vtool img info --output=json disk.img\n";

static struct vt_json *snapshot_json(const struct blk_snapshot_info *sn)
{
	struct vt_json *o = vt_json_object();
	if (sn->icount != UINT64_MAX)
		vt_json_set_int(o, "icount", (int64_t)sn->icount);
	vt_json_set_int(o, "vm-clock-nsec", (int64_t)(sn->vm_clock_nsec % 1000000000ull));
	vt_json_set_str(o, "name", sn->name);
	vt_json_set_int(o, "date-sec", sn->date_sec);
	vt_json_set_int(o, "date-nsec", sn->date_nsec);
	vt_json_set_int(o, "vm-clock-sec", (int64_t)(sn->vm_clock_nsec / 1000000000ull));
	vt_json_set_str(o, "id", sn->id);
	vt_json_set_int(o, "vm-state-size", (int64_t)sn->vm_state_size);
	return o;
}

/* Takes the format-specific object out of *in. */
static struct vt_json *info_json(const char *filename, struct blk_info *in)
{
	struct vt_json *o = vt_json_object();
	if (in->nb_snapshots) {
		struct vt_json *a = vt_json_array();
		for (int i = 0; i < in->nb_snapshots; i++)
			vt_json_append(a, snapshot_json(&in->snapshots[i]));
		vt_json_set(o, "snapshots", a);
	}
	vt_json_set_int(o, "virtual-size", (int64_t)in->virtual_size);
	vt_json_set_str(o, "filename", filename);
	if (in->cluster_size)
		vt_json_set_int(o, "cluster-size", in->cluster_size);
	vt_json_set_str(o, "format", in->format);
	vt_json_set_int(o, "actual-size", (int64_t)in->actual_size);
	if (in->format_specific) {
		struct vt_json *fs = vt_json_object();
		vt_json_set_str(fs, "type", in->format);
		vt_json_set(fs, "data", in->format_specific);
		in->format_specific = NULL;
		vt_json_set(o, "format-specific", fs);
	}
	if (in->has_backing) {
		vt_json_set_str(o, "full-backing-filename", in->full_backing_file);
		vt_json_set_str(o, "backing-filename", in->backing_file);
		if (in->backing_format[0])
			vt_json_set_str(o, "backing-filename-format", in->backing_format);
	}
	vt_json_set_bool(o, "dirty-flag", in->dirty);
	return o;
}

static void print_human(FILE *out, const char *filename, const struct blk_info *in)
{
	char vs[32], ds[32];
	vt_size_to_str(in->virtual_size, vs, sizeof(vs));
	vt_size_to_str(in->actual_size, ds, sizeof(ds));
	fprintf(out, "image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n",
	       filename, in->format, vs, (unsigned long long)in->virtual_size, ds);
	if (in->cluster_size)
		fprintf(out, "cluster_size: %u\n", in->cluster_size);
	if (in->dirty)
		fprintf(out, "cleanly shut down: no\n");
	if (in->has_backing) {
		fprintf(out, "backing file: %s", in->backing_file);
		if (strcmp(in->backing_file, in->full_backing_file))
			fprintf(out, " (actual path: %s)", in->full_backing_file);
		fprintf(out, "\n");
		if (in->backing_format[0])
			fprintf(out, "backing file format: %s\n", in->backing_format);
	}
	if (in->nb_snapshots)
		img_print_snapshots(out, in);
	if (in->format_specific) {
		char *text = vt_json_to_qemu_human(in->format_specific, 1);
		fprintf(out, "Format specific information:\n%s", text ? text : "");
		free(text);
	}
}

static int info_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'O' },
		{ "backing-chain", no_argument, NULL, 'B' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *output = "human";
	bool chain = false, share = false;
	int c;

	while ((c = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': output = optarg; break;
		case 'B': chain = true; break;
		case 'U': share = true; break;
		default: return vt_usage_hint(argv[0]);
		}
	}
	bool json = !strcmp(output, "json");
	if (!json && strcmp(output, "human"))
		return vt_usage_error(argv[0], "--output must be used with human or json as argument.");
	if (optind != argc - 1)
		return vt_usage_error(argv[0], optind >= argc ? "Expecting one image file name"
		                                              : "Unexpected argument: %s",
		                      argv[argc - 1]);
	/* Each image is opened alone (qemu-img info does the same): an image whose backing
	 * file is missing is still described; --backing-chain then opens the next one, and
	 * stops at a loop. */
	struct blk_open_opts o = { .format = fmt, .force_share = share, .no_backing = true };
	struct vt_error err = { 0 };
	struct blk *b;
	if (blk_open(argv[optind], &o, &b, &err) < 0)
		return img_fail(&err);

	struct vt_json *arr = chain && json ? vt_json_array() : NULL;
	/* Nothing is printed unless the whole chain could be described (as qemu-img). */
	char *text = NULL;
	size_t text_len = 0;
	FILE *out = open_memstream(&text, &text_len);
	if (!out) {
		blk_close(b, NULL);
		vt_error_set(&err, ENOMEM, argv[optind], "info", NULL);
		return img_fail(&err);
	}
	uint64_t seen_dev[64], seen_ino[64];
	int nseen = 0, nth = 0, rc = 0;
	for (struct blk *x = b, *next = NULL; x; x = next) {
		struct blk_info in;
		next = NULL;
		if (blk_get_info(x, &in, &err) < 0) {
			rc = 1;
			blk_close(x, NULL);
			break;
		}
		if (chain && nseen < 64)
			blk_identity(x, &seen_dev[nseen], &seen_ino[nseen]), nseen++;
		if (chain && in.has_backing) {
			struct blk_open_opts bo = { .format = in.backing_format[0] ? in.backing_format
			                                                           : NULL,
			                            .force_share = share, .no_backing = true };
			if (blk_open(in.full_backing_file, &bo, &next, &err) < 0) {
				rc = 1;
				next = NULL;
			} else {
				uint64_t d, i;
				blk_identity(next, &d, &i);
				for (int k = 0; k < nseen && next; k++) {
					if (seen_dev[k] == d && seen_ino[k] == i) {
						vt_error_set(&err, ELOOP, "", "", "Backing file '%s' creates an "
						             "infinite loop.", in.backing_file);
						blk_close(next, NULL);
						next = NULL;
						rc = 1;
					}
				}
			}
		}
		if (json) {
			struct vt_json *j = info_json(blk_filename(x), &in);
			if (arr)
				vt_json_append(arr, j);
			else {
				vt_json_print(out, j, VT_JSON_QEMU);
				vt_json_free(j);
			}
		} else {
			if (nth++)
				fprintf(out, "\n");
			print_human(out, blk_filename(x), &in);
		}
		blk_info_free(&in);
		blk_close(x, NULL);
		if (rc)
			break;
	}
	if (arr && !rc)
		vt_json_print(out, arr, VT_JSON_QEMU);
	vt_json_free(arr);
	fclose(out);
	if (rc)
		img_fail(&err);
	else
		fwrite(text, 1, text_len, stdout);
	free(text);
	return rc;
}

const struct vt_command vt_cmd_img_info = {
	.group = "img",
	.name = "info",
	.summary = "show the format, size, backing chain and snapshots of an image",
	.help = info_help,
	.main = info_main,
};
