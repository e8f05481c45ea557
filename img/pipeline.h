/* The parallel copy engine of `img convert`, shared with rebase, commit and dd.
 *
 * Worker threads (1..16) take chunks of [0, total) in turn and call work() on each with
 * buffers of their own; blk.h handles are thread-safe, and qcow2 compresses and moves
 * data outside its metadata lock, so chunks really proceed in parallel. The first error
 * stops every worker; so does SIGINT/SIGTERM when catch_signals is set (the run then
 * returns -EINTR, and the caller decides what an interruption leaves behind). Progress
 * advances as chunks complete. */
#ifndef VTOOL_IMG_PIPELINE_H
#define VTOOL_IMG_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk/blk.h"
#include "util/progress.h"

#define IMG_PIPELINE_MAX_WORKERS 16
#define IMG_PIPELINE_MAX_BUFS 4

struct img_pipeline {
	uint64_t total;            /* bytes to go through */
	uint64_t chunk;            /* bytes per work item */
	unsigned workers;          /* 1..IMG_PIPELINE_MAX_WORKERS */
	unsigned nbufs;            /* page-aligned buffers of `chunk` bytes per worker */
	/* Called for [off, off+n), n <= chunk; fills err and returns < 0 to stop the run. */
	int (*work)(void *opaque, uint64_t off, uint64_t n, uint8_t **bufs,
	            struct vt_error *err);
	void *opaque;
	struct vt_progress *progress; /* NULL: none */
	bool catch_signals;
};

/* 0, -EINTR (interrupted by a signal), or the first error (err filled). */
int img_pipeline_run(const struct img_pipeline *p, struct vt_error *err);

bool img_all_zero(const void *p, size_t n);

/* Write buf, the target's [off, off+n), leaving out runs of zeros at least `sparse`
 * bytes long (aligned to it): they are skipped when target_zero (the target reads
 * zeros there already), else written as zeros (deallocated where the format can).
 * sparse 0 writes everything as data. */
int img_write_sparse(struct blk *dst, uint64_t off, const uint8_t *buf, uint64_t n,
                     uint64_t sparse, bool target_zero, struct vt_error *err);

#endif
