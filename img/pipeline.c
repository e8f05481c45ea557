/* The parallel copy engine: see pipeline.h. */
#include "img/pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct run {
	const struct img_pipeline *p;
	atomic_uint_fast64_t next;
	atomic_int failed;
	pthread_mutex_t lock;      /* err, progress */
	struct vt_error err;
	uint64_t done;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void set_error(struct run *run, const struct vt_error *e)
{
	pthread_mutex_lock(&run->lock);
	if (!atomic_exchange(&run->failed, 1))
		run->err = *e;
	pthread_mutex_unlock(&run->lock);
}

static void *worker(void *arg)
{
	struct run *run = arg;
	const struct img_pipeline *p = run->p;
	uint8_t *bufs[IMG_PIPELINE_MAX_BUFS] = { 0 };
	struct vt_error err = { 0 };

	for (unsigned i = 0; i < p->nbufs; i++) {
		if (posix_memalign((void **)&bufs[i], 4096, p->chunk)) {
			vt_error_set(&err, ENOMEM, "", "allocate buffers", NULL);
			set_error(run, &err);
			goto out;
		}
	}
	for (;;) {
		uint64_t off = atomic_fetch_add(&run->next, 1) * p->chunk;
		if (off >= p->total || atomic_load(&run->failed) || interrupted)
			break;
		uint64_t n = p->chunk < p->total - off ? p->chunk : p->total - off;
		if (p->work(p->opaque, off, n, bufs, &err) < 0) {
			set_error(run, &err);
			break;
		}
		if (p->progress) {
			pthread_mutex_lock(&run->lock);
			run->done += n;
			vt_progress_update(p->progress, run->done);
			pthread_mutex_unlock(&run->lock);
		}
	}
out:
	for (unsigned i = 0; i < p->nbufs; i++)
		free(bufs[i]);
	return NULL;
}

int img_pipeline_run(const struct img_pipeline *p, struct vt_error *err)
{
	struct run run = { .p = p };
	struct sigaction sa = { .sa_handler = on_signal }, old_int, old_term;
	pthread_t tids[IMG_PIPELINE_MAX_WORKERS];
	unsigned n = p->workers < 1 ? 1 : p->workers > IMG_PIPELINE_MAX_WORKERS
	                                     ? IMG_PIPELINE_MAX_WORKERS : p->workers;
	unsigned started = 1;

	if (p->nbufs > IMG_PIPELINE_MAX_BUFS || !p->chunk)
		return vt_error_set(err, EINVAL, "", "copy", "bad pipeline parameters");
	pthread_mutex_init(&run.lock, NULL);
	interrupted = 0;
	if (p->catch_signals) {
		sigaction(SIGINT, &sa, &old_int);
		sigaction(SIGTERM, &sa, &old_term);
	}
	for (unsigned i = 1; i < n; i++)
		if (pthread_create(&tids[i], NULL, worker, &run) == 0)
			started++;
		else
			break;
	/* Worker slots that could not start just mean fewer workers. */
	worker(&run);
	for (unsigned i = 1; i < started; i++)
		pthread_join(tids[i], NULL);
	if (p->catch_signals) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
	}
	pthread_mutex_destroy(&run.lock);
	if (atomic_load(&run.failed)) {
		if (err)
			*err = run.err;
		return run.err.code ? -run.err.code : -EIO;
	}
	if (interrupted)
		return vt_error_set(err, EINTR, "", "copy", "interrupted");
	return 0;
}

bool img_all_zero(const void *buf, size_t n)
{
	const uint8_t *p = buf;
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

int img_write_sparse(struct blk *dst, uint64_t off, const uint8_t *buf, uint64_t n,
                     uint64_t sparse, bool target_zero, struct vt_error *err)
{
	uint64_t g = sparse ? sparse : n, i = 0;
	while (i < n) {
		uint64_t len = g - (off + i) % g;
		if (len > n - i)
			len = n - i;
		bool zero = sparse && img_all_zero(buf + i, len);
		uint64_t j = i + len;
		/* Extend the run over following blocks of the same kind. */
		while (j < n) {
			uint64_t l2 = g < n - j ? g : n - j;
			if ((sparse && img_all_zero(buf + j, l2)) != zero)
				break;
			j += l2;
		}
		int r = 0;
		if (!zero)
			r = blk_pwrite(dst, off + i, buf + i, j - i, err);
		else if (!target_zero)
			r = blk_write_zeroes(dst, off + i, j - i, BLK_MAY_UNMAP, err);
		if (r < 0)
			return r;
		i = j;
	}
	return 0;
}
