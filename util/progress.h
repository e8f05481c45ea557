/* Progress reporting for long commands (convert, compare, rebase, commit).
 *
 * VT_PROGRESS_QEMU is qemu-img's `-p`: "    (PP.PP/100%)" redrawn with '\r' on a
 * terminal; on anything else one such line per whole percent, newline-terminated, so
 * logs stay readable. VT_PROGRESS_JSON is `--progress=json`: one compact JSON object per
 * line with bytes done, total, percent, rate (bytes/s) and eta (s). Updates are
 * throttled (10 per second at most) except the final one. Not thread-safe: one caller
 * reports, others feed it through their own synchronisation. */
#ifndef VTOOL_UTIL_PROGRESS_H
#define VTOOL_UTIL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum vt_progress_mode { VT_PROGRESS_NONE, VT_PROGRESS_QEMU, VT_PROGRESS_JSON };

struct vt_progress {
	enum vt_progress_mode mode;
	FILE *out;
	bool tty;
	uint64_t total;
	uint64_t done;
	double start_s;    /* monotonic clock at init */
	double last_s;     /* when we last printed */
	int last_step;     /* last printed hundredths of a percent (tty) or percent (plain) */
};

void vt_progress_init(struct vt_progress *p, enum vt_progress_mode mode, FILE *out,
                      uint64_t total);
void vt_progress_update(struct vt_progress *p, uint64_t done);
/* Print the 100% state (qemu prints a final newline) and stop. */
void vt_progress_finish(struct vt_progress *p);

#endif
