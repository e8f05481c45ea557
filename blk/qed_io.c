/* QED mapping and data: the L2 page cache, guest-to-file lookups, reads (data, zero
 * clusters, the backing file), allocating and in-place writes, zeroing, block status and
 * the flush that marks the image clean. Locking and ordering rules: blk/qed.h. */
#include "blk/qed.h"

#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define ZERO_BUF (1u << 20)
#define ALLOC_BYTES_MAX (2u << 20)  /* one allocation takes up to this much (>= 1 cluster) */
#define ALLOC_CLUSTERS_MAX 512u     /* and at most this many L2 entries (one 4 KiB write) */

static uint8_t zero_buf[ZERO_BUF]; /* never written */

void qed_cache_drop(struct qed *s)
{
	for (unsigned i = 0; i < QED_L2_CACHE_PAGES; i++)
		s->cache[i].offset = 0;
}

/* The cached piece of an L2 table at file offset page (QED_L2_PAGE aligned; tables are
 * cluster aligned, so a piece never straddles two tables). Lock held. */
static const uint64_t *l2_page(struct qed *s, uint64_t page, struct vt_error *err)
{
	struct qed_l2_page *victim = &s->cache[0];
	for (unsigned i = 0; i < QED_L2_CACHE_PAGES; i++) {
		struct qed_l2_page *p = &s->cache[i];
		if (p->offset == page) {
			p->lru = ++s->lru_clock;
			return p->e;
		}
		if (p->lru < victim->lru)
			victim = p;
	}
	uint8_t raw[QED_L2_PAGE];
	if (blk_file_pread(s->b->file, page, raw, sizeof(raw), err) < 0)
		return NULL;
	for (unsigned i = 0; i < QED_L2_PAGE / 8; i++)
		victim->e[i] = fmt_le64(raw + i * 8);
	victim->offset = page;
	victim->lru = ++s->lru_clock;
	return victim->e;
}

static int l2_entry(struct qed *s, uint64_t l2_off, uint64_t idx, uint64_t *v,
                    struct vt_error *err)
{
	uint64_t at = l2_off + idx * 8;
	const uint64_t *e = l2_page(s, at & ~(uint64_t)(QED_L2_PAGE - 1), err);
	if (!e)
		return -EIO;
	*v = e[(at % QED_L2_PAGE) / 8];
	return 0;
}

struct qed_map {
	enum qed_kind kind;
	uint64_t host;     /* DATA: file offset of pos's cluster */
	uint64_t len;      /* bytes from pos with this mapping, inside one L2 table */
	uint64_t l2_off;   /* 0: the L1 entry is empty */
	uint64_t l2_index; /* pos's entry in that table */
};

static enum qed_kind kind_of(uint64_t e)
{
	return e == 0 ? QED_UNALLOC : e == 1 ? QED_ZERO : QED_DATA;
}

/* Map [pos, pos + max). Like qemu, a data run is found by its first cluster's offset and
 * only that one is validated when reading; writes (strict) validate every cluster they
 * will touch. Lock held. */
static int lookup(struct qed *s, uint64_t pos, uint64_t max, bool strict, struct qed_map *m,
                  struct vt_error *err)
{
	uint64_t cs = s->cluster_size, l1i = pos >> s->l1_shift;
	uint64_t limit = ((l1i + 1) << s->l1_shift) - pos; /* no wrap: pos < the disk size */
	if (limit > max)
		limit = max;
	m->l2_off = s->l1[l1i];
	m->host = 0;
	if (!m->l2_off) {
		m->kind = QED_UNALLOC;
		m->len = limit;
		return 0;
	}
	if (!qed_table_offset_ok(s, m->l2_off))
		return vt_error_set(err, EINVAL, s->b->filename, "map", "L1 entry %" PRIu64
		                    " points to an invalid L2 table offset 0x%" PRIx64, l1i, m->l2_off);
	uint64_t in = pos & (cs - 1), n = (in + limit + cs - 1) >> s->cluster_bits;
	uint64_t first = (pos >> s->cluster_bits) & (s->table_nelems - 1), e0, e;
	int r = l2_entry(s, m->l2_off, first, &e0, err);
	if (r < 0)
		return r;
	m->l2_index = first;
	m->kind = kind_of(e0);
	if (m->kind == QED_DATA && !qed_cluster_offset_ok(s, e0))
		return vt_error_set(err, EINVAL, s->b->filename, "map", "L2 entry for guest offset %"
		                    PRIu64 " points to an invalid cluster offset 0x%" PRIx64, pos, e0);
	uint64_t count = 1;
	for (; count < n; count++) {
		if ((r = l2_entry(s, m->l2_off, first + count, &e, err)) < 0)
			return r;
		if (m->kind == QED_DATA ? e != e0 + count * cs || (strict && !qed_cluster_offset_ok(s, e))
		                        : e != e0)
			break;
	}
	m->host = m->kind == QED_DATA ? e0 : 0;
	m->len = count * cs - in < limit ? count * cs - in : limit;
	return 0;
}

/* Room for a slice of the caller's iovec plus a head and a tail. */
struct iov_room {
	struct iovec small[18];
	struct iovec *v;
};

static struct iovec *iov_room(struct iov_room *room, int iovcnt)
{
	room->v = iovcnt + 2 <= 18 ? room->small
	                           : malloc(((size_t)iovcnt + 2) * sizeof(struct iovec));
	return room->v;
}

static void iov_room_free(struct iov_room *room)
{
	if (room->v != room->small)
		free(room->v);
}

/* The backing file's bytes (zeros past its end or without one) into an iovec slice. */
static int read_backing(struct blk *b, uint64_t pos, const struct iovec *v, int cnt,
                        struct vt_error *err)
{
	for (int i = 0; i < cnt; i++) {
		int r = blk_read_backing(b, pos, v[i].iov_base, v[i].iov_len, err);
		if (r < 0)
			return r;
		pos += v[i].iov_len;
	}
	return 0;
}

int qed_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
               struct vt_error *err)
{
	struct qed *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt), done = 0;
	struct iov_room room;
	int r = 0;

	if (!iov_room(&room, iovcnt))
		return vt_error_set(err, ENOMEM, b->filename, "read", NULL);
	pthread_mutex_lock(&s->lock);
	while (r == 0 && done < total) {
		uint64_t pos = off + done;
		struct qed_map m;
		if ((r = lookup(s, pos, total - done, false, &m, err)) < 0)
			break;
		pthread_mutex_unlock(&s->lock);
		int cnt = 0;
		vt_iov_slice(iov, iovcnt, done, m.len, room.v, &cnt, INT_MAX);
		if (m.kind == QED_DATA) /* past the end of the file reads zeros, as in qemu */
			r = blk_file_preadv(b->file, m.host + (pos & (s->cluster_size - 1)), room.v, cnt,
			                    err);
		else if (m.kind == QED_ZERO)
			vt_iov_memset(iov, iovcnt, done, 0, m.len);
		else
			r = read_backing(b, pos, room.v, cnt, err);
		done += m.len;
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	iov_room_free(&room);
	return r;
}

/* New space at the end of the file, [at, at + len): grown first. Returns whether it may
 * hold old bytes (a partial cluster the file ended with), which must then be overwritten.
 * Lock held. */
static int grow(struct qed *s, uint64_t at, uint64_t len, bool *dirty, struct vt_error *err)
{
	*dirty = at < s->zero_from;
	if (at + len > s->file_len) {
		int r = blk_file_truncate(s->b->file, at + len, err);
		if (r < 0)
			return r;
		s->file_len = at + len;
	}
	return 0;
}

static int write_zero_bytes(struct qed *s, uint64_t at, uint64_t len, struct vt_error *err)
{
	int r = 0;
	while (r == 0 && len) {
		uint64_t n = len < ZERO_BUF ? len : ZERO_BUF;
		r = blk_file_pwrite(s->b->file, at, zero_buf, n, err);
		at += n;
		len -= n;
	}
	return r;
}

/* Before the first allocation of an image without a backing file: mark it "needs check"
 * (durably), as qemu does. Lock held. */
static int mark_dirty(struct blk *b, struct qed *s, struct vt_error *err)
{
	if (b->backing || (s->features & QED_F_NEED_CHECK))
		return 0;
	s->features |= QED_F_NEED_CHECK;
	int r = qed_write_header_u64(s, offsetof(struct qed_disk_header, features), s->features, err);
	if (r == 0)
		r = blk_file_flush(b->file, err);
	return r;
}

/* Give pos's L1 entry a new, empty L2 table. Lock held. */
static int new_l2_table(struct qed *s, uint64_t pos, struct qed_map *m, struct vt_error *err)
{
	uint64_t at = s->alloc_end, l1i = pos >> s->l1_shift;
	bool dirty;
	int r = grow(s, at, s->table_bytes, &dirty, err);
	if (r == 0 && dirty)
		r = write_zero_bytes(s, at, s->table_bytes, err);
	if (r < 0)
		return r;
	s->alloc_end += s->table_bytes;
	if ((r = qed_note_l2_table(s, at)) < 0)
		return vt_error_set(err, ENOMEM, s->b->filename, "write", NULL);
	if ((r = qed_write_header_u64(s, s->l1_offset + l1i * 8, at, err)) < 0)
		return r;
	s->l1[l1i] = at;
	m->l2_off = at;
	m->l2_index = (pos >> s->cluster_bits) & (s->table_nelems - 1);
	return 0;
}

/* Point L2 entries [idx, idx + k) at v, v + cs, ... (or all at v when v is 0 or 1):
 * written through, then the cached pieces. Lock held. */
static int set_l2_entries(struct qed *s, uint64_t l2_off, uint64_t idx, uint64_t k, uint64_t v,
                          struct vt_error *err)
{
	uint8_t buf[ALLOC_CLUSTERS_MAX * 8] = { 0 };
	uint64_t step = v > 1 ? s->cluster_size : 0;
	for (uint64_t i = 0; i < k; i++)
		fmt_put_le64(buf + i * 8, v + i * step);
	int r = blk_file_pwrite(s->b->file, l2_off + idx * 8, buf, k * 8, err);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < k; i++) {
		uint64_t at = l2_off + (idx + i) * 8, page = at & ~(uint64_t)(QED_L2_PAGE - 1);
		for (unsigned c = 0; c < QED_L2_CACHE_PAGES; c++)
			if (s->cache[c].offset == page)
				s->cache[c].e[(at % QED_L2_PAGE) / 8] = v + i * step;
	}
	return 0;
}

/* Fill [pos, pos + n) of a new cluster run from what it showed before: the backing file
 * for unallocated clusters, zeros for zero clusters. */
static int old_contents(struct blk *b, enum qed_kind kind, uint64_t pos, void *buf, size_t n,
                        struct vt_error *err)
{
	if (kind == QED_UNALLOC)
		return blk_read_backing(b, pos, buf, n, err);
	memset(buf, 0, n);
	return 0;
}

/* Allocate k clusters for the run m at pos and write bytes [done, done + n) of the request
 * into them; the rest of the clusters keeps what the guest saw before. Lock held on entry
 * and exit, dropped for the data. */
static int allocate_and_write(struct blk *b, struct qed *s, struct qed_map *m, uint64_t pos,
                              uint64_t k, const struct iovec *iov, int iovcnt, size_t done,
                              size_t n, struct iovec *room, struct vt_error *err)
{
	uint64_t cs = s->cluster_size, c0 = pos >> s->cluster_bits, in = pos & (cs - 1);
	uint64_t len = k * cs, tail = len - in - n;
	bool dirty;
	int r;

	if ((r = mark_dirty(b, s, err)) < 0)
		return r;
	if (!m->l2_off && (r = new_l2_table(s, pos, m, err)) < 0)
		return r;
	uint64_t data = s->alloc_end;
	if ((r = grow(s, data, len, &dirty, err)) < 0)
		return r;
	s->alloc_end += len;
	fmt_inflight_add(&s->inflight, c0, c0 + k);
	pthread_mutex_unlock(&s->lock);

	/* Head and tail: backing data must be copied; zeros only where the file might hold
	 * old bytes (new space past its end reads zeros already). */
	bool copy = m->kind == QED_UNALLOC && b->backing;
	uint8_t *head = NULL, *tailbuf = NULL;
	int cnt = 0;
	uint64_t start = data + in;
	if (in && (copy || dirty)) {
		if (!(head = malloc(in)))
			r = -ENOMEM;
		else if ((r = old_contents(b, m->kind, pos - in, head, in, err)) == 0) {
			room[cnt++] = (struct iovec){ head, in };
			start = data;
		}
	}
	vt_iov_slice(iov, iovcnt, done, n, room, &cnt, INT_MAX);
	if (r == 0 && tail && (copy || dirty)) {
		if (!(tailbuf = malloc(tail)))
			r = -ENOMEM;
		else if ((r = old_contents(b, m->kind, pos + n, tailbuf, tail, err)) == 0)
			room[cnt++] = (struct iovec){ tailbuf, tail };
	}
	if (r == -ENOMEM)
		r = vt_error_set(err, ENOMEM, b->filename, "write", NULL);
	if (r == 0)
		r = blk_file_pwritev(b->file, start, room, cnt, err);
	/* With a backing file there is no check to fall back on: the copied data must be on
	 * disk before the L2 entry can point at it (qemu does the same). */
	if (r == 0 && b->backing)
		r = blk_file_flush(b->file, err);
	free(head);
	free(tailbuf);

	pthread_mutex_lock(&s->lock);
	if (r == 0) /* a failure leaves the clusters unreferenced: leaked, never exposed */
		r = set_l2_entries(s, m->l2_off, m->l2_index, k, data, err);
	fmt_inflight_remove(&s->inflight, c0);
	return r;
}

/* Host range [at, at + len) of a data cluster run must not hold tables. */
static bool hits_metadata(const struct qed *s, uint64_t at, uint64_t len)
{
	if (at < s->l1_offset + s->table_bytes && s->l1_offset < at + len)
		return true;
	size_t lo = 0, hi = s->n_l2_tables;
	while (lo < hi) { /* first table ending after at */
		size_t mid = (lo + hi) / 2;
		if (s->l2_tables[mid] + s->table_bytes <= at)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->n_l2_tables && s->l2_tables[lo] < at + len;
}

/* Wait until guest clusters [c0, c0 + 1) are not being allocated and no flush is
 * clearing the dirty flag. Returns whether it waited (the caller looks again). */
static bool wait_for_allocation(struct qed *s, uint64_t c0)
{
	if (!s->clearing && !fmt_inflight_overlaps(&s->inflight, c0, c0 + 1) &&
	    !fmt_inflight_full(&s->inflight))
		return false;
	pthread_cond_wait(&s->inflight.done, &s->lock);
	return true;
}

int qed_pwritev(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                struct vt_error *err)
{
	struct qed *s = b->opaque;
	size_t total = vt_iov_size(iov, iovcnt), done = 0;
	uint64_t cs = s->cluster_size;
	struct iov_room room;
	int r = 0;

	if (s->no_write)
		return vt_error_set(err, EIO, b->filename, "write",
		                    "cannot write this QED image safely: %s", s->no_write);
	if (!iov_room(&room, iovcnt))
		return vt_error_set(err, ENOMEM, b->filename, "write", NULL);
	pthread_mutex_lock(&s->lock);
	while (r == 0 && done < total) {
		uint64_t pos = off + done, in = pos & (cs - 1), c0 = pos >> s->cluster_bits;
		struct qed_map m;
		if ((r = lookup(s, pos, total - done, true, &m, err)) < 0)
			break;
		if (m.kind == QED_DATA) {
			if (hits_metadata(s, m.host + in, m.len)) {
				r = vt_error_set(err, EIO, b->filename, "write", "refusing to write data "
				                 "over QED metadata at 0x%" PRIx64, m.host + in);
				break;
			}
			pthread_mutex_unlock(&s->lock);
			int cnt = 0;
			vt_iov_slice(iov, iovcnt, done, m.len, room.v, &cnt, INT_MAX);
			r = blk_file_pwritev(b->file, m.host + in, room.v, cnt, err);
			pthread_mutex_lock(&s->lock);
			done += m.len;
			continue;
		}
		if (wait_for_allocation(s, c0))
			continue;
		uint64_t kmax = ALLOC_BYTES_MAX / cs ? ALLOC_BYTES_MAX / cs : 1;
		uint64_t c_end = (pos + m.len + cs - 1) >> s->cluster_bits;
		if (c_end - c0 > kmax)
			c_end = c0 + kmax;
		if (c_end - c0 > ALLOC_CLUSTERS_MAX)
			c_end = c0 + ALLOC_CLUSTERS_MAX;
		c_end = fmt_inflight_next(&s->inflight, c0, c_end);
		uint64_t k = c_end - c0, n = k * cs - in < m.len ? k * cs - in : m.len;
		r = allocate_and_write(b, s, &m, pos, k, iov, iovcnt, done, n, room.v, err);
		done += n;
	}
	pthread_mutex_unlock(&s->lock);
	iov_room_free(&room);
	return r;
}

/* Zeros: data clusters are overwritten in place; unallocated clusters over a backing
 * file become zero clusters (partial ones are written); elsewhere nothing to do. */
int qed_write_zeroes(struct blk *b, uint64_t off, uint64_t len, unsigned flags,
                     struct vt_error *err)
{
	struct qed *s = b->opaque;
	uint64_t cs = s->cluster_size;
	int r = 0;

	if (s->no_write)
		return vt_error_set(err, EIO, b->filename, "write",
		                    "cannot write this QED image safely: %s", s->no_write);
	pthread_mutex_lock(&s->lock);
	while (r == 0 && len) {
		uint64_t in = off & (cs - 1), c0 = off >> s->cluster_bits;
		struct qed_map m;
		if ((r = lookup(s, off, len, true, &m, err)) < 0)
			break;
		uint64_t n = m.len;
		if (m.kind == QED_DATA) {
			if (hits_metadata(s, m.host + in, n)) {
				r = vt_error_set(err, EIO, b->filename, "write", "refusing to write data "
				                 "over QED metadata at 0x%" PRIx64, m.host + in);
				break;
			}
			pthread_mutex_unlock(&s->lock);
			r = write_zero_bytes(s, m.host + in, n, err);
			pthread_mutex_lock(&s->lock);
		} else if (m.kind == QED_UNALLOC && b->backing) {
			if (wait_for_allocation(s, c0))
				continue;
			if (in || n < cs) {
				/* A partial cluster: allocate it with zeros over the backing data. */
				n = cs - in < n ? cs - in : n;
				n = n < ZERO_BUF ? n : ZERO_BUF; /* big clusters: the rest is data next */
				pthread_mutex_unlock(&s->lock);
				struct iovec z = { zero_buf, n };
				r = qed_pwritev(b, off, &z, 1, err);
				pthread_mutex_lock(&s->lock);
			} else {
				n &= ~(cs - 1);
				uint64_t k = n >> s->cluster_bits;
				if (k > ALLOC_CLUSTERS_MAX)
					k = ALLOC_CLUSTERS_MAX;
				k = fmt_inflight_next(&s->inflight, c0, c0 + k) - c0;
				n = k * cs;
				if (!m.l2_off)
					r = new_l2_table(s, off, &m, err);
				if (r == 0)
					r = set_l2_entries(s, m.l2_off, m.l2_index, k, 1, err);
			}
		}
		off += n;
		len -= n;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

int qed_block_status(struct blk *b, uint64_t off, uint64_t len, struct blk_status *st,
                     struct vt_error *err)
{
	struct qed *s = b->opaque;
	struct qed_map m;
	pthread_mutex_lock(&s->lock);
	int r = lookup(s, off, len, false, &m, err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	st->len = m.len;
	if (m.kind == QED_DATA) {
		st->flags = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
		st->host_offset = m.host + (off & (s->cluster_size - 1));
	} else {
		st->flags = m.kind == QED_ZERO ? BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED : 0;
	}
	return 0;
}

/* Durable, then clean: once everything written so far is on disk, the "needs check" flag
 * is cleared (no allocation may run meanwhile). Like qemu, whoever writes an image leaves
 * it unmarked: a flag found at open was acted on by the repair there. */
int qed_flush(struct blk *b, struct vt_error *err)
{
	struct qed *s = b->opaque;
	int r = blk_file_flush(b->file, err);
	if (r < 0 || !b->writable)
		return r;
	pthread_mutex_lock(&s->lock);
	if ((s->features & QED_F_NEED_CHECK) && !s->clearing) {
		s->clearing = true;
		while (s->inflight.n)
			pthread_cond_wait(&s->inflight.done, &s->lock);
		r = blk_file_flush(b->file, err);
		if (r == 0) {
			s->features &= ~QED_F_NEED_CHECK;
			r = qed_write_header_u64(s, offsetof(struct qed_disk_header, features),
			                         s->features, err);
		}
		if (r == 0)
			r = blk_file_flush(b->file, err);
		if (r < 0)
			s->features |= QED_F_NEED_CHECK;
		s->clearing = false;
		pthread_cond_broadcast(&s->inflight.done);
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}
