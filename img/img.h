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
extern const struct vt_command vt_cmd_img_snapshot;
extern const struct vt_command vt_cmd_img_resize;

/* Print e as "vtool: <file>: <what>: <why>" and return 1 (the generic failure status). */
int img_fail(const struct vt_error *e);
/* Print the "Snapshot list:" header and table of in, as qemu-img info and snapshot -l. */
void img_print_snapshots(FILE *out, const struct blk_info *in);
/* Sync the directory holding path, so that a rename or create there is durable. */
int img_sync_dir(const char *path, struct vt_error *err);

#endif
