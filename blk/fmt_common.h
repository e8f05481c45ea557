/* Small helpers the VDI and QED drivers share: little-endian fields decoded byte by byte,
 * slices of a caller's iovec, and the set of guest ranges whose allocation is in flight
 * (a writer that meets one waits instead of allocating the same block twice).
 * For blk/vdi.c and blk/qed.c only. */
#ifndef VTOOL_BLK_FMT_COMMON_H
#define VTOOL_BLK_FMT_COMMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

static inline uint32_t fmt_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t fmt_le64(const uint8_t *p)
{
	return (uint64_t)fmt_le32(p) | (uint64_t)fmt_le32(p + 4) << 32;
}

static inline void fmt_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline void fmt_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* Guest ranges [start, end) (in allocation units) being allocated by some thread. Kept
 * under the driver's lock; the condition variable is broadcast when one completes. */
#define FMT_INFLIGHT_MAX 64
struct fmt_inflight {
	uint64_t start[FMT_INFLIGHT_MAX], end[FMT_INFLIGHT_MAX];
	int n;
	pthread_cond_t done;
};

static inline bool fmt_inflight_overlaps(const struct fmt_inflight *f, uint64_t start,
                                         uint64_t end)
{
	for (int i = 0; i < f->n; i++)
		if (f->start[i] < end && start < f->end[i])
			return true;
	return false;
}

/* The first in-flight start above `start` (or `limit`): an allocation run must stop there. */
static inline uint64_t fmt_inflight_next(const struct fmt_inflight *f, uint64_t start,
                                         uint64_t limit)
{
	for (int i = 0; i < f->n; i++)
		if (f->start[i] >= start && f->start[i] < limit)
			limit = f->start[i];
	return limit;
}

static inline bool fmt_inflight_full(const struct fmt_inflight *f)
{
	return f->n == FMT_INFLIGHT_MAX;
}

static inline void fmt_inflight_add(struct fmt_inflight *f, uint64_t start, uint64_t end)
{
	f->start[f->n] = start;
	f->end[f->n] = end;
	f->n++;
}

static inline void fmt_inflight_remove(struct fmt_inflight *f, uint64_t start)
{
	for (int i = 0; i < f->n; i++) {
		if (f->start[i] == start) {
			f->start[i] = f->start[f->n - 1];
			f->end[i] = f->end[f->n - 1];
			f->n--;
			break;
		}
	}
	pthread_cond_broadcast(&f->done);
}

#endif
