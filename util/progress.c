#include "util/progress.h"

#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void vt_progress_init(struct vt_progress *p, enum vt_progress_mode mode, FILE *out,
                      uint64_t total)
{
	*p = (struct vt_progress){
		.mode = mode,
		.out = out,
		.tty = out && isatty(fileno(out)),
		.total = total,
		.start_s = now_s(),
		.last_s = -1.0,
		.last_step = -1,
	};
	vt_progress_update(p, 0);
}

static double percent(const struct vt_progress *p)
{
	if (p->total == 0)
		return 100.0;
	double pct = 100.0 * (double)p->done / (double)p->total;
	return pct > 100.0 ? 100.0 : pct;
}

static void print_json(struct vt_progress *p, double t)
{
	double elapsed = t - p->start_s;
	double rate = elapsed > 0 ? (double)p->done / elapsed : 0.0;
	double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0.0;

	fprintf(p->out,
	        "{\"bytes-done\":%llu,\"bytes-total\":%llu,\"percent\":%.2f,"
	        "\"rate\":%.0f,\"elapsed\":%.3f,\"eta\":%.3f}\n",
	        (unsigned long long)p->done, (unsigned long long)p->total, percent(p), rate,
	        elapsed, eta);
}

static void emit(struct vt_progress *p, bool final)
{
	double t = now_s();
	double pct = percent(p);

	if (p->mode == VT_PROGRESS_JSON) {
		if (!final && p->last_s >= 0 && t - p->last_s < 0.1)
			return;
		print_json(p, t);
	} else if (p->tty) {
		int step = (int)(pct * 100.0);
		if (!final && (step == p->last_step || (p->last_s >= 0 && t - p->last_s < 0.1)))
			return;
		p->last_step = step;
		fprintf(p->out, "    (%.2f/100%%)\r", pct);
	} else {
		int step = (int)pct;
		if (step == p->last_step)
			return;
		p->last_step = step;
		fprintf(p->out, "    (%.2f/100%%)\n", pct);
	}
	p->last_s = t;
	fflush(p->out);
}

void vt_progress_update(struct vt_progress *p, uint64_t done)
{
	if (p->mode == VT_PROGRESS_NONE)
		return;
	p->done = done;
	emit(p, false);
}

void vt_progress_finish(struct vt_progress *p)
{
	if (p->mode == VT_PROGRESS_NONE)
		return;
	p->done = p->total;
	emit(p, true);
	if (p->mode == VT_PROGRESS_QEMU && p->tty)
		fputc('\n', p->out);
	fflush(p->out);
	p->mode = VT_PROGRESS_NONE;
}
