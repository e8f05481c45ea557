/* vtool img snapshot: qemu-img snapshot's options, list, messages and exit codes. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"

static const char snapshot_help[] =
	"Usage: vtool img snapshot [-f fmt] [-U] [-q] [-l | -a snapshot | -c snapshot |\n"
	"                          -d snapshot] filename\n"
	"\n"
	"List, create, apply or delete internal snapshots of a qcow2 image (qemu-img snapshot\n"
	"compatible). Each change is atomic: a crash leaves the image as it was before or\n"
	"after, never between.\n"
	"\n"
	"  -l                list the snapshots (ID, tag, VM state size, date, VM clock,\n"
	"                    icount), as qemu-img does\n"
	"  -c snapshot       create a snapshot named 'snapshot' of the current disk; it gets\n"
	"                    the next free numeric ID\n"
	"  -a snapshot       apply a snapshot (by ID, else by name): the disk, and its size,\n"
	"                    become what they were when it was taken\n"
	"  -d snapshot       delete the first snapshot with that name\n"
	"  -f fmt            image format (probed when omitted)\n"
	"  -U, --force-share list without locks even if another process writes the image\n"
	"                    (only with -l)\n"
	"  -q                quiet\n"
	"  --object objdef   accepted for qemu-img compatibility (vtool needs no objects here)\n"
	"\n"
	"Without -l, -c, -a or -d the image is opened for writing and left as it is, as\n"
	"qemu-img does. Exit status 0 on success, 1 on any failure.\n"
	"\n"
	"Example:\n"
	"  vtool img snapshot -c before-upgrade disk.qcow2\n"
	"  vtool img snapshot -l disk.qcow2\n"
	"  vtool img snapshot -a before-upgrade disk.qcow2\n";

enum action { NONE, LIST, CREATE, APPLY, DELETE };

/* "vtool: <file>: <what>: <why>" with qemu's wording in what and why. */
static int fail_with(const char *file, const char *what, const struct vt_error *e)
{
	struct vt_error out = { 0 };
	vt_error_set(&out, e->code ? e->code : EIO, file, what, "%s", e->why);
	return img_fail(&out);
}

static int snapshot_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "object", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *name = NULL;
	enum action act = NONE;
	bool share = false;
	int c;

	while ((c = getopt_long(argc, argv, ":hf:la:c:d:qU", longopts, NULL)) != -1) {
		enum action want = NONE;
		switch (c) {
		case 'h':
			fputs(snapshot_help, stdout);
			return 0;
		case 'f': fmt = optarg; break;
		case 'l': want = LIST; break;
		case 'c': want = CREATE; break;
		case 'a': want = APPLY; break;
		case 'd': want = DELETE; break;
		case 'q': break; /* nothing to silence: only -l prints */
		case 'U': share = true; break;
		case 'o': break;
		case ':':
			return vt_usage_error(argv[0], "missing argument for option '%s'", argv[optind - 1]);
		default:
			return vt_usage_error(argv[0], "unrecognized option '%s'", argv[optind - 1]);
		}
		if (want != NONE) {
			if (act != NONE)
				return vt_usage_error(argv[0], "Cannot mix '-l', '-a', '-c', '-d'");
			act = want;
			name = want == LIST ? NULL : optarg;
		}
	}
	if (optind != argc - 1)
		return vt_usage_error(argv[0], "Expecting one image file name");
	const char *filename = argv[optind];
	struct vt_error err = { 0 };
	char what[1100];

	if (act != LIST && share) {
		snprintf(what, sizeof(what), "Could not open '%s'", filename);
		vt_error_set(&err, EINVAL, "", what, "force-share=on can only be used with "
		             "read-only images");
		return img_fail(&err);
	}
	struct blk_open_opts o = { .format = fmt, .writable = act != LIST, .force_share = share,
	                           .no_backing = true };
	struct blk *b;

	if (act == APPLY) {
		/* What refuses the apply (no such snapshot, persistent bitmaps, ...) refuses it
		 * before the image is opened for writing, so a refusal changes nothing. */
		struct blk_open_opts ro = o;
		ro.writable = false;
		snprintf(what, sizeof(what), "Could not apply snapshot '%s'", name);
		if (blk_open(filename, &ro, &b, &err) < 0) {
			/* A lock refusal: qemu-img opens for writing at once, so the writable open
			 * below reports its error ("write" lock, not the read-only "shared" one). */
			if (err.code != EAGAIN)
				return img_fail(&err);
			vt_error_clear(&err);
		} else {
			int r = blk_snapshot_goto(b, name, true, &err);
			blk_close(b, NULL);
			if (r < 0)
				return fail_with(filename, what, &err);
		}
	}
	if (blk_open(filename, &o, &b, &err) < 0)
		return img_fail(&err);

	int rc = 0;
	struct blk_info in;
	switch (act) {
	case NONE:
		break;
	case LIST:
		if (blk_get_info(b, &in, &err) < 0) {
			rc = img_fail(&err);
			break;
		}
		if (in.nb_snapshots > 0)
			img_print_snapshots(stdout, &in);
		blk_info_free(&in);
		break;
	case CREATE:
		if (blk_snapshot_create(b, name, &err) < 0) {
			/* qemu's form: the errno, negative, and its text. */
			snprintf(what, sizeof(what), "Could not create snapshot '%s'", name);
			vt_error_set(&err, err.code, "", what, "%d (%s)", -err.code, strerror(err.code));
			rc = fail_with(filename, what, &err);
		}
		break;
	case APPLY:
		snprintf(what, sizeof(what), "Could not apply snapshot '%s'", name);
		if (blk_snapshot_goto(b, name, false, &err) < 0)
			rc = fail_with(filename, what, &err);
		break;
	case DELETE:
		/* By name, as qemu-img: the first snapshot that has it. */
		snprintf(what, sizeof(what), "Could not delete snapshot '%s'", name);
		if (blk_get_info(b, &in, &err) < 0) {
			rc = img_fail(&err);
			break;
		}
		int found = -1;
		for (int i = 0; i < in.nb_snapshots && found < 0; i++)
			if (!strcmp(in.snapshots[i].name, name))
				found = i;
		if (found < 0) {
			vt_error_set(&err, ENOENT, "", "", "snapshot not found");
			rc = fail_with(filename, what, &err);
		} else if (blk_snapshot_delete(b, in.snapshots[found].id, in.snapshots[found].name,
		                               &err) < 0) {
			rc = fail_with(filename, what, &err);
		}
		blk_info_free(&in);
		break;
	}
	if (blk_close(b, &err) < 0 && !rc)
		rc = img_fail(&err);
	return rc;
}

const struct vt_command vt_cmd_img_snapshot = {
	.group = "img",
	.name = "snapshot",
	.summary = "list, create, apply or delete internal snapshots of a qcow2 image",
	.help = snapshot_help,
	.main = snapshot_main,
};
