/* vtool img rebase: qemu-img rebase's options, messages and exit codes.
 *
 * Unsafe mode (-u) only rewrites the backing file name and format in the header. Safe
 * mode first makes the image independent of what changes: every range the image does
 * not hold itself (it reads through to the old chain) whose content in the old chain
 * differs from the new backing file is copied into the image, from the old chain, so
 * the image reads the same all along; then the header switches to the new backing file
 * in one write, after everything copied is durable. A crash at any point leaves an image
 * that reads what it read before through the header it has. The copy runs on convert's
 * parallel pipeline; ranges that both sides know to be zero are not read. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "img/object.h"
#include "img/pipeline.h"
#include "util/progress.h"

static const char rebase_help[] =
	"Usage: vtool img rebase [--object objectdef] [--image-opts] [-f fmt] [-t cache]\n"
	"                        [-T src_cache] [-p] [-q] [-u] [-U] [-c]\n"
	"                        -b backing_file [-F backing_fmt] filename\n"
	"\n"
	"Change the backing file of an image (qemu-img rebase compatible).\n"
	"\n"
	"  -b backing_file   the new backing file, as it is to be recorded (relative names\n"
	"                    are relative to the image's directory); \"\" removes the backing\n"
	"                    file: the image then holds all of its data itself\n"
	"  -F backing_fmt    format of the new backing file (required with a backing file)\n"
	"  -u                unsafe: only rewrite the name in the header (the old backing\n"
	"                    file need not exist; for a backing file that was moved or\n"
	"                    renamed). Without -u, every cluster whose content differs\n"
	"                    between the old and the new backing file is first copied into\n"
	"                    the image, so that what it reads does not change\n"
	"  -c                compress the clusters copied into the image (qcow2)\n"
	"  -f fmt            format of the image (probed when omitted)\n"
	"  -t cache          cache mode of the image (default writeback)\n"
	"  -T src_cache      cache mode of the old and new backing files (default writeback)\n"
	"  -p                show progress          -q   quiet\n"
	"  -U, --force-share open the new backing file even if another process writes it\n"
	"  --object objectdef  define a secret (secret,id=ID,data=...|file=...)\n"
	"  --image-opts      filename is an option string: driver=FMT,file.filename=PATH\n"
	"\n"
	"Example:\n"
	"  vtool img rebase -b new-base.qcow2 -F qcow2 overlay.qcow2\n";

struct rebase {
	struct blk *img;
	struct blk *old;      /* the old chain (the image's backing file), or NULL */
	struct blk *new;      /* the new backing file, or NULL for none */
	struct blk *prefix;   /* the layer of the old chain that is the new backing file */
	uint64_t cs;          /* the image's cluster size: the unit of comparison */
	bool compress;
};

/* Does all of [off, off+n) of b read as zeros? (NULL and past the end: zeros.) */
static int reads_zero(struct blk *b, uint64_t off, uint64_t n, bool *zero,
                      struct vt_error *err)
{
	*zero = true;
	if (!b || off >= blk_size(b))
		return 0;
	uint64_t end = off + n < blk_size(b) ? off + n : blk_size(b);
	while (off < end) {
		struct blk_status st;
		int r = blk_block_status(b, off, end - off, &st, err);
		if (r < 0)
			return r;
		if (!(st.flags & BLK_STATUS_ZERO)) {
			*zero = false;
			return 0;
		}
		off += st.len;
	}
	return 0;
}

/* Read [off, off+n) of b, zeros past its end (or without b). */
static int read_padded(struct blk *b, uint64_t off, uint8_t *buf, uint64_t n,
                       struct vt_error *err)
{
	uint64_t in = 0;
	if (b && off < blk_size(b))
		in = blk_size(b) - off < n ? blk_size(b) - off : n;
	memset(buf + in, 0, n - in);
	return in ? blk_pread(b, off, buf, in, err) : 0;
}


/* [off, off+n) reads through to the old chain: copy in what the new backing file would
 * read differently, one cluster (clipped to the range) at a time. */
static int rebase_range(struct rebase *rb, uint64_t off, uint64_t n, uint8_t *ob,
                        uint8_t *nb, struct vt_error *err)
{
	bool oz, nz;
	int r;
	if ((r = reads_zero(rb->old, off, n, &oz, err)) < 0 ||
	    (r = reads_zero(rb->new, off, n, &nz, err)) < 0)
		return r;
	if (oz && nz)
		return 0;
	if (oz)
		memset(ob, 0, n);
	else if ((r = read_padded(rb->old, off, ob, n, err)) < 0)
		return r;
	if (nz)
		memset(nb, 0, n);
	else if ((r = read_padded(rb->new, off, nb, n, err)) < 0)
		return r;
	uint64_t size = blk_size(rb->img);
	for (uint64_t i = 0; i < n && r == 0;) {
		uint64_t g = off + i, len = rb->cs - g % rb->cs;
		if (len > n - i)
			len = n - i;
		if (memcmp(ob + i, nb + i, len)) {
			bool whole = g % rb->cs == 0 && (len == rb->cs || g + len == size);
			if (img_all_zero(ob + i, len))
				r = blk_write_zeroes(rb->img, g, len, 0, err);
			else if (rb->compress && whole)
				r = blk_write_compressed(rb->img, g, ob + i, len, err);
			else
				r = blk_pwrite(rb->img, g, ob + i, len, err);
		}
		i += len;
	}
	return r;
}

static int rebase_chunk(void *opaque, uint64_t off, uint64_t n, uint8_t **bufs,
                        struct vt_error *err)
{
	struct rebase *rb = opaque;
	uint64_t end = off + n;
	int r = 0;

	while (off < end && r == 0) {
		struct blk_status st;
		if ((r = blk_block_status_layer(rb->img, off, end - off, &st, err)) < 0)
			return r;
		uint64_t len = st.len;
		if (!(st.flags & BLK_STATUS_ALLOCATED)) {
			for (uint64_t p = off; p < off + len && r == 0;) {
				bool yes = true;
				uint64_t m = off + len - p;
				if (rb->prefix && (r = blk_allocated_above(rb->old, rb->prefix, p, m, &yes, &m, err)) < 0)
					return r;
				if (yes)
					r = rebase_range(rb, p, m, bufs[0], bufs[1], err);
				p += m;
			}
		}
		off += len;
	}
	return r;
}

static int rebase_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "object", required_argument, NULL, 'O' },
		{ "image-opts", no_argument, NULL, 'I' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *base = NULL, *base_fmt = NULL;
	const char *cache = "writeback", *src_cache = "writeback";
	bool unsafe = false, progress = false, quiet = false, share = false, compress = false;
	bool image_opts = false;
	struct vt_error err = { 0 };
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "hf:F:b:upt:T:qUc", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'F': base_fmt = optarg; break;
		case 'b': base = optarg; break;
		case 'u': unsafe = true; break;
		case 'p': progress = true; break;
		case 't': cache = optarg; break;
		case 'T': src_cache = optarg; break;
		case 'q': quiet = true; break;
		case 'U': share = true; break;
		case 'c': compress = true; break;
		case 'I': image_opts = true; break;
		case 'O':
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
	if (quiet)
		progress = false;
	if (optind != argc - 1) {
		img_objects_free();
		return vt_usage_error(argv[0], "Expecting one image file name");
	}
	if (!unsafe && !base) {
		img_objects_free();
		return vt_usage_error(argv[0], "Must specify backing file (-b) or use unsafe mode (-u)");
	}
	const char *filename = argv[optind];
	enum blk_cache dcache, scache;
	if (img_parse_cache(argv[0], "cache", cache, &dcache) < 0 ||
	    img_parse_cache(argv[0], "source cache", src_cache, &scache) < 0) {
		img_objects_free();
		return 1;
	}

	struct rebase rb = { .compress = compress };
	struct img_open_spec spec = { 0 };
	struct vt_progress pr;
	char *path = NULL;
	char what[1200];
	const char *shown = base ? base : "";
	vt_progress_init(&pr, progress ? VT_PROGRESS_QEMU : VT_PROGRESS_NONE, stdout, 100);

	if (img_open_spec(filename, fmt, image_opts, &spec, &err) < 0)
		goto fail;
	struct blk_open_opts o = { .format = spec.format, .writable = true, .cache = dcache,
	                           .no_backing = unsafe };
	if (blk_open(spec.filename, &o, &rb.img, &err) < 0)
		goto fail;
	if (base_fmt && !img_format_name_valid(base_fmt)) {
		vt_error_set(&err, EINVAL, "", "", "Invalid format name: '%s'", base_fmt);
		goto fail;
	}
	snprintf(what, sizeof(what), "Could not change the backing file to '%s'", shown);
	bool new_backing = base && base[0];

	if (!unsafe) {
		rb.old = blk_backing(rb.img);
		if (new_backing) {
			if (!(path = img_resolve_relative(spec.filename, base))) {
				vt_error_set(&err, ENOMEM, filename, "rebase", NULL);
				goto fail;
			}
			struct blk_open_opts bo = { .format = base_fmt, .cache = scache,
			                            .force_share = share };
			struct vt_error inner = { 0 };
			if (blk_open(path, &bo, &rb.new, &inner) < 0) {
				char why[sizeof(inner.why) + sizeof(inner.what) + 8];
				snprintf(why, sizeof(why), "%s%s%s", inner.what, inner.what[0] ? ": " : "",
				         inner.why);
				vt_error_set(&err, inner.code, "", "", "Could not open new backing file "
				             "'%s': Could not open '%s': %s", base, path, why);
				goto fail;
			}
			/* The new backing file in the old chain: only what the layers above it
			 * decide can differ. */
			uint64_t nd, ni;
			blk_identity(rb.new, &nd, &ni);
			for (struct blk *l = rb.old; l && (nd || ni); l = blk_backing(l)) {
				uint64_t d, i;
				blk_identity(l, &d, &i);
				if (d == nd && i == ni) {
					rb.prefix = l;
					break;
				}
			}
		}
	}
	/* Checked before anything is copied (qemu finds out after copying). */
	if (new_backing && !base_fmt) {
		vt_error_set(&err, EINVAL, filename, what, "backing format must be specified");
		goto fail;
	}
	if (compress && !blk_supports_compression(rb.img)) {
		vt_error_set(&err, ENOTSUP, filename, "rebase",
		             "Compression not supported for this file format");
		goto fail;
	}

	if (!unsafe) {
		uint32_t cs = blk_cluster_size(rb.img);
		rb.cs = cs ? cs : 65536;
		uint64_t chunk = rb.cs > (1u << 20) ? rb.cs : 1u << 20;
		pr.total = blk_size(rb.img);
		struct img_pipeline pl = { .total = blk_size(rb.img), .chunk = chunk, .workers = 8,
		                           .nbufs = 2, .work = rebase_chunk, .opaque = &rb,
		                           .progress = &pr, .catch_signals = true };
		int r = img_pipeline_run(&pl, &err);
		if (r == -EINTR) {
			vt_error_set(&err, EINTR, filename, "rebase", "interrupted; the backing file "
			             "was not changed (the image reads as before)");
			blk_flush(rb.img, NULL);
			rc = 130;
			goto fail;
		}
		if (r < 0) {
			if (!err.file[0])
				snprintf(err.file, sizeof(err.file), "%s", filename);
			goto fail;
		}
	}

	struct vt_error inner = { 0 };
	int r = blk_change_backing_file(rb.img, new_backing ? base : NULL, base_fmt, &inner);
	if (r < 0) {
		vt_error_set(&err, inner.code, filename, what, "%s", inner.why);
		goto fail;
	}
	if (blk_close(rb.img, &err) < 0) {
		rb.img = NULL;
		goto fail;
	}
	rb.img = NULL;
	vt_progress_finish(&pr);
	rc = 0;
	goto out;
fail:
	if (progress)
		fputc('\n', stdout);
	img_fail(&err);
out:
	if (rb.new)
		blk_close(rb.new, NULL);
	if (rb.img)
		blk_close(rb.img, NULL);
	img_open_spec_free(&spec);
	free(path);
	img_objects_free();
	return rc;
}

const struct vt_command vt_cmd_img_rebase = {
	.group = "img",
	.name = "rebase",
	.summary = "change the backing file of an image",
	.help = rebase_help,
	.main = rebase_main,
};
