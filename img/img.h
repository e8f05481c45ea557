/* Shared by the `vtool img` command fronts: the command table entries and small helpers
 * for printing block-layer errors the same way everywhere. */
#ifndef VTOOL_IMG_IMG_H
#define VTOOL_IMG_IMG_H

#include <stdio.h>

#include "blk/blk.h"
#include "util/command.h"
#include "util/error.h"

extern const struct vt_command vt_cmd_img_create;
extern const struct vt_command vt_cmd_img_info;
extern const struct vt_command vt_cmd_img_bench;
extern const struct vt_command vt_cmd_img_convert;
extern const struct vt_command vt_cmd_img_compare;
extern const struct vt_command vt_cmd_img_map;
extern const struct vt_command vt_cmd_img_measure;
extern const struct vt_command vt_cmd_img_check;
extern const struct vt_command vt_cmd_img_rebase;
extern const struct vt_command vt_cmd_img_commit;
extern const struct vt_command vt_cmd_img_amend;
extern const struct vt_command vt_cmd_img_dd;
extern const struct vt_command vt_cmd_img_bitmap;

/* A file name given relative to an image (a backing file), as a path to open: relative to
 * the image's directory, as qemu resolves it. Malloc'd; NULL on ENOMEM. */
char *img_resolve_relative(const char *image, const char *name);
/* A format name qemu knows (-F accepts those even where vtool has no driver). */
bool img_format_name_valid(const char *name);
/* Parse a cache mode option; on failure prints qemu's "Invalid <what> option: X". */
int img_parse_cache(const char *argv0, const char *what, const char *mode,
                    enum blk_cache *out);

/* What to open for an image argument: a file name and -f's format, or with --image-opts
 * an option string (driver=FMT,file.filename=PATH[,file.driver=file][,...]). */
struct img_open_spec {
	const char *filename;   /* the file */
	const char *format;     /* NULL: probe */
	const uint8_t *key;     /* encrypt.key-secret's bytes (an --object secret), or NULL */
	size_t key_len;
	char *buf;              /* storage for the two (image-opts) */
};
int img_open_spec(const char *arg, const char *fmt, bool image_opts, struct img_open_spec *s,
                  struct vt_error *err);
void img_open_spec_free(struct img_open_spec *s);

/* A temporary name next to target (same directory: a rename replaces target). */
char *img_temp_name(const char *target);
extern const struct vt_command vt_cmd_img_snapshot;
extern const struct vt_command vt_cmd_img_resize;
extern const struct vt_command vt_cmd_img_serve;

/* convert --bitmaps (bitmap.c). Check, before anything is created, that src can have
 * bitmaps and (unless skip_broken) that none is inconsistent; prints qemu-img's message
 * and returns -1 otherwise. */
int img_bitmaps_check(const char *argv0, struct blk *src, bool skip_broken);
/* After the copy: every consistent bitmap of src added to dst (writable) with its
 * granularity, state and bits; inconsistent ones skipped with a warning. */
int img_bitmaps_copy(const char *argv0, struct blk *src, struct blk *dst, bool skip_broken,
                     struct vt_error *err);

/* Print e as "vtool: <file>: <what>: <why>" and return 1 (the generic failure status). */
int img_fail(const struct vt_error *e);
/* Print the "Snapshot list:" header and table of in, as qemu-img info and snapshot -l. */
void img_print_snapshots(FILE *out, const struct blk_info *in);
/* Sync the directory holding path, so that a rename or create there is durable. */
int img_sync_dir(const char *path, struct vt_error *err);

#endif
