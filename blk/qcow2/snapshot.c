/* qcow2 internal snapshots (specs/qcow2.md §8): the snapshot table, read and validated
 * once at open with qemu's rules and messages, and the three operations qemu-img snapshot
 * has -- create, apply (goto), delete. Each operation is one metadata switch (shadow.c):
 * the reference counts of everything a snapshot reaches, the COPIED flags of the active
 * tables that must agree with them, a new L1 table and a new snapshot table all become
 * current with one header write, so that a crash leaves either the old image or the new
 * one. Callers of the operations hold nothing; they take s->lock. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SNAP_HEADER_SIZE   40u
#define SNAP_EXTRA_KNOWN   24u          /* vm state size, disk size, icount */
#define SNAP_MAX_EXTRA     1024u
#define SNAP_MAX_TABLE     (1024ull * 65536)
#define READ_WINDOW        (64u << 10)

/* ---- the table ------------------------------------------------------------------- */

void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t n)
{
	if (!sn)
		return;
	for (uint32_t i = 0; i < n; i++) {
		free(sn[i].id);
		free(sn[i].name);
		free(sn[i].extra_unknown);
	}
	free(sn);
}

/* Reads of the table go through a window, so that many small entries cost few reads. */
struct reader {
	struct qcow2 *s;
	uint8_t *buf;
	uint64_t start, len;
};

static int rd(struct reader *r, uint64_t off, void *dst, uint64_t n, struct vt_error *err)
{
	if (!n)
		return 0;
	if (off < r->start || off + n > r->start + r->len) {
		uint64_t want = n > READ_WINDOW ? n : READ_WINDOW;
		uint8_t *b = realloc(r->buf, want);
		if (!b)
			return vt_error_set(err, ENOMEM, r->s->b->filename, "open", NULL);
		r->buf = b;
		int e = blk_file_pread(r->s->b->file, off, b, want, err);
		if (e < 0)
			return vt_error_set(err, -e, r->s->b->filename, "open",
			                    "Failed to read snapshot table: %s", strerror(-e));
		r->start = off;
		r->len = want;
	}
	memcpy(dst, r->buf + (off - r->start), n);
	return 0;
}

static int rd_str(struct reader *r, uint64_t off, uint16_t n, char **out, struct vt_error *err)
{
	char *p = malloc((size_t)n + 1);
	if (!p)
		return vt_error_set(err, ENOMEM, r->s->b->filename, "open", NULL);
	int e = rd(r, off, p, n, err);
	if (e < 0) {
		free(p);
		return e;
	}
	p[n] = '\0';
	*out = p;
	return 0;
}

static void tell(void (*report)(void *, const char *), void *opaque, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void tell(void (*report)(void *, const char *), void *opaque, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	if (!report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	report(opaque, line);
}

int qcow2_snapshots_read(struct qcow2 *s, bool repair, void (*report)(void *, const char *),
                         void *opaque, uint32_t *reduced, uint32_t *dropped,
                         struct vt_error *err)
{
	struct reader r = { .s = s };
	struct qcow2_snapshot *sn = NULL;
	uint64_t off = s->snapshots_offset, table_len = 0;
	uint32_t n = s->nb_snapshots;
	int e = 0;

	*reduced = *dropped = 0;
	s->snapshots = NULL;
	s->snapshots_size = 0;
	if (!n)
		return 0;
	if (!(sn = calloc(n, sizeof(*sn))))
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	for (uint32_t i = 0; i < n && e == 0; i++) {
		uint8_t h[SNAP_HEADER_SIZE], ex[SNAP_EXTRA_KNOWN] = { 0 };
		struct qcow2_snapshot *x = &sn[i];
		uint64_t entry_start = off;
		bool truncate = false;
		off = (off + 7) & ~7ull;
		table_len = (table_len + 7) & ~7ull;
		if ((e = rd(&r, off, h, sizeof(h), err)) < 0)
			break;
		off += sizeof(h);
		x->l1_offset = qcow2_be64(h);
		x->l1_size = qcow2_be32(h + 8);
		uint16_t id_len = (uint16_t)(h[12] << 8 | h[13]);
		uint16_t name_len = (uint16_t)(h[14] << 8 | h[15]);
		x->date_sec = qcow2_be32(h + 16);
		x->date_nsec = qcow2_be32(h + 20);
		x->vm_clock_nsec = qcow2_be64(h + 24);
		x->vm_state_size = qcow2_be32(h + 32);
		x->extra_size = qcow2_be32(h + 36);
		if (x->extra_size > SNAP_MAX_EXTRA) {
			if (!repair) {
				e = vt_error_set(err, EFBIG, s->b->filename, "open",
				                 "Too much extra metadata in snapshot table entry %u", i);
				break;
			}
			/* qemu's repair: keep the first SNAP_MAX_EXTRA bytes, skip the rest. */
			tell(report, opaque, "Discarding too much extra metadata in snapshot table "
			     "entry %u (%" PRIu32 " > %u)", i, x->extra_size, SNAP_MAX_EXTRA);
			(*dropped)++;
			truncate = true;
		}
		uint32_t known = x->extra_size < SNAP_EXTRA_KNOWN ? x->extra_size : SNAP_EXTRA_KNOWN;
		if ((e = rd(&r, off, ex, known, err)) < 0)
			break;
		off += known;
		if (x->extra_size >= 8)
			x->vm_state_size = qcow2_be64(ex);
		x->disk_size = x->extra_size >= 16 ? qcow2_be64(ex + 8) : s->b->size;
		x->icount = x->extra_size >= 24 ? qcow2_be64(ex + 16) : UINT64_MAX;
		if (x->extra_size > SNAP_EXTRA_KNOWN) {
			uint64_t extra_end = off + x->extra_size - SNAP_EXTRA_KNOWN;
			if (truncate)
				x->extra_size = SNAP_MAX_EXTRA;
			uint32_t unknown = x->extra_size - SNAP_EXTRA_KNOWN;
			if (!(x->extra_unknown = malloc(unknown))) {
				e = vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
				break;
			}
			if ((e = rd(&r, off, x->extra_unknown, unknown, err)) < 0)
				break;
			off = extra_end;
		}
		if ((e = rd_str(&r, off, id_len, &x->id, err)) < 0)
			break;
		off += id_len;
		if ((e = rd_str(&r, off, name_len, &x->name, err)) < 0)
			break;
		off += name_len;
		/* The length as the table will be written again (extra data cut), as qemu
		 * counts it. */
		table_len += SNAP_HEADER_SIZE + x->extra_size + id_len + name_len;
		if (table_len > SNAP_MAX_TABLE || off - s->snapshots_offset > INT_MAX) {
			if (!repair) {
				*reduced = n - i;
				e = vt_error_set(err, EFBIG, s->b->filename, "open",
				                 "Snapshot table is too big");
				break;
			}
			/* qemu's repair: this entry and all after it go; their clusters leak,
			 * which the check then repairs. */
			tell(report, opaque, "Discarding %" PRIu32 " overhanging snapshots (snapshot "
			     "table is too big)", n - i);
			*reduced += n - i;
			free(x->id);
			free(x->name);
			free(x->extra_unknown);
			memset(x, 0, sizeof(*x));
			n = i;
			off = entry_start;
		}
	}
	free(r.buf);
	if (e < 0) {
		qcow2_snapshots_free(sn, n);
		return e;
	}
	s->snapshots = sn;
	s->nb_snapshots = n;
	s->snapshots_size = off - s->snapshots_offset;
	return 0;
}

/* At open. An image opened for check -r is read as the repair reads it (qemu reads no
 * table at all in check mode): the check reads it again, and reports. */
int qcow2_snapshots_load(struct qcow2 *s, struct vt_error *err)
{
	uint32_t reduced, dropped;
	return qcow2_snapshots_read(s, s->b->repair, NULL, NULL, &reduced, &dropped, err);
}

int qcow2_snapshots_encode(struct qcow2 *s, const struct qcow2_snapshot *sn, uint32_t n,
                           uint8_t **out, uint64_t *len, struct vt_error *err)
{
	uint64_t size = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t extra = sn[i].extra_size > SNAP_EXTRA_KNOWN ? sn[i].extra_size
		                                                      : SNAP_EXTRA_KNOWN;
		size = ((size + 7) & ~7ull) + SNAP_HEADER_SIZE + extra + strlen(sn[i].id) +
		       strlen(sn[i].name);
		if (size > SNAP_MAX_TABLE)
			return vt_error_set(err, EFBIG, s->b->filename, "write snapshot table",
			                    "Snapshot table is too big");
	}
	/* Whole clusters, the tail zeroed: the file holds nothing stale after the table. */
	uint64_t alloc = (size + s->cs - 1) & ~(s->cs - 1);
	uint8_t *buf = qcow2_alloc_buf(alloc ? alloc : 1);
	if (!buf)
		return vt_error_set(err, ENOMEM, s->b->filename, "write snapshot table", NULL);
	memset(buf, 0, alloc ? alloc : 1);
	uint64_t off = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct qcow2_snapshot *x = &sn[i];
		uint32_t extra = x->extra_size > SNAP_EXTRA_KNOWN ? x->extra_size : SNAP_EXTRA_KNOWN;
		size_t id_len = strlen(x->id), name_len = strlen(x->name);
		uint8_t *h = buf + ((off + 7) & ~7ull);
		qcow2_put_be64(h, x->l1_offset);
		qcow2_put_be32(h + 8, x->l1_size);
		h[12] = (uint8_t)(id_len >> 8), h[13] = (uint8_t)id_len;
		h[14] = (uint8_t)(name_len >> 8), h[15] = (uint8_t)name_len;
		qcow2_put_be32(h + 16, x->date_sec);
		qcow2_put_be32(h + 20, x->date_nsec);
		qcow2_put_be64(h + 24, x->vm_clock_nsec);
		/* A VM state too big for the old field: older readers see a disk-only snapshot
		 * rather than a truncated state (qemu's rule). */
		qcow2_put_be32(h + 32, x->vm_state_size <= UINT32_MAX ? (uint32_t)x->vm_state_size : 0);
		qcow2_put_be32(h + 36, extra);
		qcow2_put_be64(h + 40, x->vm_state_size);
		qcow2_put_be64(h + 48, x->disk_size);
		qcow2_put_be64(h + 56, x->icount);
		if (extra > SNAP_EXTRA_KNOWN)
			memcpy(h + 64, x->extra_unknown, extra - SNAP_EXTRA_KNOWN);
		memcpy(h + SNAP_HEADER_SIZE + extra, x->id, id_len);
		memcpy(h + SNAP_HEADER_SIZE + extra + id_len, x->name, name_len);
		off = (uint64_t)(h - buf) + SNAP_HEADER_SIZE + extra + id_len + name_len;
	}
	*out = buf;
	*len = size;
	return 0;
}

int qcow2_snapshot_find(const struct qcow2 *s, const char *id, const char *name)
{
	if (!id && !name)
		return -1;
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		if ((!id || !strcmp(s->snapshots[i].id, id)) &&
		    (!name || !strcmp(s->snapshots[i].name, name)))
			return (int)i;
	return -1;
}

int qcow2_snapshot_find_id_or_name(const struct qcow2 *s, const char *id_or_name)
{
	int i = qcow2_snapshot_find(s, id_or_name, NULL);
	return i >= 0 ? i : qcow2_snapshot_find(s, NULL, id_or_name);
}

int qcow2_snapshot_check_l1(struct qcow2 *s, const struct qcow2_snapshot *sn,
                            struct vt_error *err)
{
	if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return vt_error_set(err, EFBIG, s->b->filename, "", "Snapshot L1 table too large");
	if (sn->l1_offset > INT64_MAX - (uint64_t)sn->l1_size * 8 || sn->l1_offset % s->cs)
		return vt_error_set(err, EINVAL, s->b->filename, "",
		                    "Snapshot L1 table offset invalid");
	return 0;
}

int qcow2_snapshots_info(struct qcow2 *s, struct blk_info *info, struct vt_error *err)
{
	if (!s->nb_snapshots)
		return 0;
	info->snapshots = calloc(s->nb_snapshots, sizeof(*info->snapshots));
	if (!info->snapshots)
		return vt_error_set(err, ENOMEM, s->b->filename, "info", NULL);
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *x = &s->snapshots[i];
		struct blk_snapshot_info *o = &info->snapshots[i];
		/* qemu's QEMUSnapshotInfo holds 127 and 255 bytes: longer ones are cut. */
		snprintf(o->id, sizeof(o->id), "%s", x->id);
		snprintf(o->name, sizeof(o->name), "%s", x->name);
		o->vm_state_size = x->vm_state_size;
		o->date_sec = x->date_sec;
		o->date_nsec = x->date_nsec;
		o->vm_clock_nsec = x->vm_clock_nsec;
		o->icount = x->icount;
	}
	info->nb_snapshots = (int)s->nb_snapshots;
	return 0;
}

/* ---- walking trees --------------------------------------------------------------- */

/* The L2 table of L1 entry e (index i) copied out of the cache, or *l2 = NULL. */
static int load_l2(struct qcow2 *s, uint64_t e, uint64_t i, uint8_t **l2, struct vt_error *err)
{
	uint64_t off = e & QCOW2_OFFSET_MASK;
	uint8_t *t;
	int r;

	*l2 = NULL;
	if (!off)
		return 0;
	if (off % s->cs)
		return qcow2_signal_corruption(s, err, "L2 table offset %#llx unaligned (L1 index: "
		                               "%#llx)", (unsigned long long)off,
		                               (unsigned long long)i);
	if (!(*l2 = qcow2_alloc_buf(s->cs)))
		return vt_error_set(err, ENOMEM, s->b->filename, "read L2 table", NULL);
	if ((r = qcow2_cache_get(s->l2c, off, &t, err)) < 0) {
		free(*l2);
		*l2 = NULL;
		return r;
	}
	memcpy(*l2, t, s->cs);
	return 0;
}

/* Add delta to every cluster an L2 table maps (compressed data: each cluster its sectors
 * touch, as qemu counts them). */
static int l2_refs(struct qcow2_shadow *sh, struct qcow2 *s, const uint8_t *l2,
                   uint64_t l2_off, int delta, struct vt_error *err)
{
	int r = 0;
	for (uint64_t k = 0; k < s->l2_entries && r == 0; k++) {
		uint64_t e = qcow2_be64(l2 + k * s->l2_entry_size);
		if (e & QCOW2_OFLAG_COMPRESSED) {
			uint64_t coff = e & ((1ull << s->csize_shift) - 1);
			uint64_t nsect = ((e >> s->csize_shift) & s->csize_mask) + 1;
			r = qcow2_shadow_add(sh, coff & ~511ull, nsect * 512, delta, err);
			continue;
		}
		uint64_t off = e & QCOW2_OFFSET_MASK;
		if (!off)
			continue;
		if (off % s->cs)
			return qcow2_signal_corruption(s, err, "Cluster allocation offset %#llx unaligned "
			                               "(L2 offset: %#llx, L2 index: %#llx)",
			                               (unsigned long long)off,
			                               (unsigned long long)l2_off,
			                               (unsigned long long)k);
		r = qcow2_shadow_add(sh, off, s->cs, delta, err);
	}
	return r;
}

/* Add delta to every L2 table and data cluster an L1 table reaches. */
static int tree_refs(struct qcow2_shadow *sh, struct qcow2 *s, const uint64_t *l1,
                     uint32_t l1_size, int delta, struct vt_error *err)
{
	int r = 0;
	for (uint32_t i = 0; i < l1_size && r == 0; i++) {
		uint8_t *l2;
		if ((r = load_l2(s, l1[i], i, &l2, err)) < 0 || !l2)
			continue;
		uint64_t off = l1[i] & QCOW2_OFFSET_MASK;
		if ((r = l2_refs(sh, s, l2, off, delta, err)) == 0)
			r = qcow2_shadow_add(sh, off, s->cs, delta, err);
		free(l2);
	}
	return r;
}

/* After every count change: the tables the new active L1 reaches must carry COPIED
 * exactly where the new count is 1. A table whose flags change cannot be changed in
 * place (the old state still uses it): the active L1 gets a copy, which it alone owns. */
static int settle_active(struct qcow2_shadow *sh, struct qcow2 *s, uint64_t *l1,
                         uint32_t l1_size, struct vt_error *err)
{
	int r = 0;
	for (uint32_t i = 0; i < l1_size && r == 0; i++) {
		uint64_t off = l1[i] & QCOW2_OFFSET_MASK, rc;
		uint8_t *l2;
		if ((r = load_l2(s, l1[i], i, &l2, err)) < 0)
			break;
		if (!l2) {
			l1[i] = 0;
			continue;
		}
		bool changed = false;
		for (uint64_t k = 0; k < s->l2_entries && r == 0; k++) {
			uint8_t *p = l2 + k * s->l2_entry_size;
			uint64_t e = qcow2_be64(p), ne = e & ~QCOW2_OFLAG_COPIED;
			uint64_t data = ne & QCOW2_OFFSET_MASK;
			if (!(ne & QCOW2_OFLAG_COMPRESSED) && data) {
				if ((r = qcow2_shadow_get(sh, data >> s->cluster_bits, &rc, err)) < 0)
					break;
				if (rc == 1)
					ne |= QCOW2_OFLAG_COPIED;
			}
			if (ne != e) {
				qcow2_put_be64(p, ne);
				changed = true;
			}
		}
		if (r == 0 && changed) {
			uint64_t nw;
			if ((r = qcow2_shadow_alloc(sh, 1, &nw, err)) == 0 &&
			    (r = qcow2_shadow_add(sh, off, s->cs, -1, err)) == 0) {
				r = qcow2_shadow_write(sh, nw, l2, s->cs, err);
				l2 = NULL;
				l1[i] = nw | QCOW2_OFLAG_COPIED;
			}
		} else if (r == 0) {
			if ((r = qcow2_shadow_get(sh, off >> s->cluster_bits, &rc, err)) == 0)
				l1[i] = off | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
		}
		free(l2);
	}
	return r;
}

/* The new active L1 table goes to new clusters when it differs from the live one. */
static int place_l1(struct qcow2_shadow *sh, struct qcow2 *s, const uint64_t *l1,
                    uint32_t l1_size, uint64_t *l1_off, struct vt_error *err)
{
	int r;
	*l1_off = s->l1_offset;
	if (l1_size == s->l1_size && !memcmp(l1, s->l1, (size_t)l1_size * 8))
		return 0;
	if (s->l1_size && (r = qcow2_shadow_add(sh, s->l1_offset, (uint64_t)s->l1_size * 8, -1,
	                                        err)) < 0)
		return r;
	*l1_off = 0;
	if (!l1_size)
		return 0;
	uint64_t bytes = (uint64_t)l1_size * 8, clusters = (bytes + s->cs - 1) / s->cs;
	uint8_t *raw = qcow2_alloc_buf(clusters * s->cs);
	if (!raw)
		return vt_error_set(err, ENOMEM, s->b->filename, "write L1 table", NULL);
	memset(raw, 0, clusters * s->cs);
	for (uint32_t i = 0; i < l1_size; i++)
		qcow2_put_be64(raw + (uint64_t)i * 8, l1[i]);
	if ((r = qcow2_shadow_alloc(sh, clusters, l1_off, err)) < 0) {
		free(raw);
		return r;
	}
	return qcow2_shadow_write(sh, *l1_off, raw, clusters * s->cs, err);
}

/* The snapshot table sn[0..n) goes to new clusters, the old one is released. */
static int place_table(struct qcow2_shadow *sh, struct qcow2 *s, const struct qcow2_snapshot *sn,
                       uint32_t n, bool release, uint64_t *off, struct vt_error *err)
{
	uint8_t *buf;
	uint64_t len;
	int r;
	if (release && s->nb_snapshots && s->snapshots_size &&
	    (r = qcow2_shadow_add(sh, s->snapshots_offset, s->snapshots_size, -1, err)) < 0)
		return r;
	*off = 0;
	if (!n)
		return 0;
	if ((r = qcow2_snapshots_encode(s, sn, n, &buf, &len, err)) < 0)
		return r;
	uint64_t clusters = (len + s->cs - 1) / s->cs;
	if ((r = qcow2_shadow_alloc(sh, clusters, off, err)) < 0) {
		free(buf);
		return r;
	}
	return qcow2_shadow_write(sh, *off, buf, clusters * s->cs, err);
}

/* A copy of an L1 table: the live one, or a snapshot's read from the file, padded with
 * zeros to n entries. */
static int copy_l1(struct qcow2 *s, uint64_t off, uint32_t size, uint32_t n, uint64_t **out,
                   struct vt_error *err)
{
	uint64_t *l1 = calloc(n ? n : 1, 8);
	if (!l1)
		return vt_error_set(err, ENOMEM, s->b->filename, "read L1 table", NULL);
	if (off == s->l1_offset && size == s->l1_size) {
		memcpy(l1, s->l1, (size_t)size * 8);
	} else if (size) {
		uint8_t *raw = qcow2_alloc_buf((size_t)size * 8);
		int r = raw ? blk_file_pread(s->b->file, off, raw, (size_t)size * 8, err)
		            : vt_error_set(err, ENOMEM, s->b->filename, "read L1 table", NULL);
		for (uint32_t i = 0; r == 0 && i < size; i++)
			l1[i] = qcow2_be64(raw + (uint64_t)i * 8);
		free(raw);
		if (r < 0) {
			free(l1);
			return r;
		}
	}
	*out = l1;
	return 0;
}

/* Take ownership of a snapshot entry's strings in a new array of n + grow entries. */
static struct qcow2_snapshot *table_copy(const struct qcow2 *s, uint32_t extra)
{
	struct qcow2_snapshot *t = calloc(s->nb_snapshots + extra + 1, sizeof(*t));
	if (t && s->nb_snapshots)
		memcpy(t, s->snapshots, s->nb_snapshots * sizeof(*t));
	return t;
}

static uint64_t l1_entries_for(const struct qcow2 *s, uint64_t size)
{
	uint64_t per = s->cs * s->l2_entries;
	return size / per + (size % per != 0);
}

/* ---- operations ------------------------------------------------------------------ */

/* After a table rewrite every entry carries at least the 24 known bytes. */
static void table_written(struct qcow2 *s)
{
	uint64_t size = 0;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		struct qcow2_snapshot *x = &s->snapshots[i];
		if (x->extra_size < SNAP_EXTRA_KNOWN)
			x->extra_size = SNAP_EXTRA_KNOWN;
		size = ((size + 7) & ~7ull) + SNAP_HEADER_SIZE + x->extra_size + strlen(x->id) +
		       strlen(x->name);
	}
	s->snapshots_size = size;
}


int qcow2_snapshots_rewrite(struct qcow2 *s, bool release_old, struct vt_error *err)
{
	struct qcow2_shadow *sh;
	uint64_t *l1 = NULL, table_off;
	int r;

	if ((r = qcow2_shadow_begin(s, &sh, err)) < 0)
		return r;
	if ((r = copy_l1(s, s->l1_offset, s->l1_size, s->l1_size, &l1, err)) < 0 ||
	    (r = place_table(sh, s, s->snapshots, s->nb_snapshots, release_old, &table_off,
	                     err)) < 0) {
		qcow2_shadow_abort(sh);
		free(l1);
		return r;
	}
	struct qcow2_shadow_header h = { .size = s->b->size, .l1_size = s->l1_size,
	                                 .l1_offset = s->l1_offset,
	                                 .nb_snapshots = s->nb_snapshots,
	                                 .snapshots_offset = table_off };
	if ((r = qcow2_shadow_commit(sh, &h, l1, err)) < 0)
		return r;
	table_written(s);
	return 0;
}

static int lock_and_begin(struct qcow2 *s, struct qcow2_shadow **sh, struct vt_error *err)
{
	pthread_mutex_lock(&s->lock);
	int r = qcow2_shadow_begin(s, sh, err);
	if (r < 0)
		pthread_mutex_unlock(&s->lock);
	return r;
}

int qcow2_snapshot_create(struct blk *b, const char *name, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	struct qcow2_shadow *sh;
	uint64_t *snap_l1 = NULL, *l1 = NULL, l1_off, snap_l1_off = 0, table_off;
	struct qcow2_snapshot *t = NULL, *x;
	int r;

	if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS)
		return vt_error_set(err, EFBIG, b->filename, "create snapshot", NULL);
	if ((r = lock_and_begin(s, &sh, err)) < 0)
		return r;
	/* The snapshot's L1 table is the active one (flags dropped: they mean nothing in an
	 * inactive table); everything it reaches gains a reference. */
	if ((r = copy_l1(s, s->l1_offset, s->l1_size, s->l1_size, &snap_l1, err)) < 0 ||
	    (r = copy_l1(s, s->l1_offset, s->l1_size, s->l1_size, &l1, err)) < 0)
		goto fail;
	for (uint32_t i = 0; i < s->l1_size; i++)
		snap_l1[i] &= QCOW2_OFFSET_MASK;
	if ((r = tree_refs(sh, s, snap_l1, s->l1_size, 1, err)) < 0) {
		/* qemu's answer when a refcount would overflow (refcount_bits=1, say). */
		if (r == -ERANGE)
			r = vt_error_set(err, EINVAL, b->filename, "create snapshot", NULL);
		goto fail;
	}
	if (s->l1_size) {
		uint64_t bytes = (uint64_t)s->l1_size * 8, clusters = (bytes + s->cs - 1) / s->cs;
		uint8_t *raw = qcow2_alloc_buf(clusters * s->cs);
		if (!raw) {
			r = vt_error_set(err, ENOMEM, b->filename, "create snapshot", NULL);
			goto fail;
		}
		memset(raw, 0, clusters * s->cs);
		for (uint32_t i = 0; i < s->l1_size; i++)
			qcow2_put_be64(raw + (uint64_t)i * 8, snap_l1[i]);
		if ((r = qcow2_shadow_alloc(sh, clusters, &snap_l1_off, err)) < 0) {
			free(raw);
			goto fail;
		}
		if ((r = qcow2_shadow_write(sh, snap_l1_off, raw, clusters * s->cs, err)) < 0)
			goto fail;
	}
	if ((r = settle_active(sh, s, l1, s->l1_size, err)) < 0 ||
	    (r = place_l1(sh, s, l1, s->l1_size, &l1_off, err)) < 0)
		goto fail;

	/* The entry: the next free decimal ID, now, no VM state (qemu-img's snapshots). */
	unsigned long max_id = 0;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		unsigned long v = strtoul(s->snapshots[i].id, NULL, 10);
		if (v > max_id)
			max_id = v;
	}
	char id[32];
	snprintf(id, sizeof(id), "%lu", max_id + 1);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (!(t = table_copy(s, 1))) {
		r = vt_error_set(err, ENOMEM, b->filename, "create snapshot", NULL);
		goto fail;
	}
	x = &t[s->nb_snapshots];
	*x = (struct qcow2_snapshot){
		.l1_offset = snap_l1_off, .l1_size = s->l1_size, .id = strdup(id),
		/* qemu keeps names in 256 bytes: longer ones are cut to 255. */
		.name = strndup(name, 255),
		.date_sec = (uint32_t)now.tv_sec, .date_nsec = (uint32_t)(now.tv_nsec / 1000 * 1000),
		.disk_size = b->size, .icount = 0, .extra_size = SNAP_EXTRA_KNOWN,
	};
	if (!x->id || !x->name) {
		r = vt_error_set(err, ENOMEM, b->filename, "create snapshot", NULL);
		goto fail_entry;
	}
	if ((r = place_table(sh, s, t, s->nb_snapshots + 1, true, &table_off, err)) < 0)
		goto fail_entry;
	struct qcow2_shadow_header h = { .size = b->size, .l1_size = s->l1_size,
	                                 .l1_offset = l1_off, .nb_snapshots = s->nb_snapshots + 1,
	                                 .snapshots_offset = table_off };
	r = qcow2_shadow_commit(sh, &h, l1, err);
	sh = NULL;
	l1 = NULL;
	if (r < 0)
		goto fail_entry;
	free(s->snapshots);
	s->snapshots = t;
	table_written(s);
	pthread_mutex_unlock(&s->lock);
	free(snap_l1);
	return 0;
fail_entry:
	free(x->id);
	free(x->name);
fail:
	free(t);
	if (sh)
		qcow2_shadow_abort(sh);
	pthread_mutex_unlock(&s->lock);
	free(snap_l1);
	free(l1);
	return r;
}

int qcow2_snapshot_goto(struct blk *b, const char *id_or_name, bool dry_run,
                        struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	struct qcow2_shadow *sh;
	uint64_t *l1 = NULL, l1_off;
	int r;

	pthread_mutex_lock(&s->lock);
	int i = qcow2_snapshot_find_id_or_name(s, id_or_name);
	const struct qcow2_snapshot *sn = i >= 0 ? &s->snapshots[i] : NULL;
	if (s->nbm)
		r = vt_error_set(err, EBUSY, b->filename, "", "Device has active dirty bitmaps");
	else if (!sn)
		r = vt_error_set(err, ENOENT, b->filename, "", "Failed to load snapshot: %s",
		                 strerror(ENOENT));
	else if ((r = qcow2_snapshot_check_l1(s, sn, err)) < 0)
		;
	else if (sn->disk_size != b->size && s->version < 3)
		r = vt_error_set(err, ENOTSUP, b->filename, "",
		                 "Can't resize a v2 image which has snapshots");
	else if (sn->disk_size % 512)
		r = vt_error_set(err, EINVAL, b->filename, "", "The new size must be a multiple of 512");
	else if (l1_entries_for(s, sn->disk_size) * 8 > QCOW2_MAX_L1_BYTES)
		r = vt_error_set(err, EFBIG, b->filename, "", "Failed to grow the L1 table: %s",
		                 strerror(EFBIG));
	pthread_mutex_unlock(&s->lock);
	if (r < 0 || dry_run)
		return r;
	if (!b->writable)
		return vt_error_set(err, EROFS, b->filename, "", "Failed to load snapshot: %s",
		                    strerror(EROFS));

	if ((r = lock_and_begin(s, &sh, err)) < 0)
		return r;
	/* The table may not have changed since the lookup (we hold no lock between), but
	 * look again. */
	if ((i = qcow2_snapshot_find_id_or_name(s, id_or_name)) < 0) {
		r = vt_error_set(err, ENOENT, b->filename, "", "Failed to load snapshot: %s",
		                 strerror(ENOENT));
		goto fail;
	}
	sn = &s->snapshots[i];
	/* As qemu: the disk takes the snapshot's size, the L1 table is as large as the
	 * biggest of the current one, the one that size needs and the snapshot's. */
	uint64_t n = s->l1_size;
	if (l1_entries_for(s, sn->disk_size) > n)
		n = l1_entries_for(s, sn->disk_size);
	if (sn->l1_size > n)
		n = sn->l1_size;
	if ((r = copy_l1(s, sn->l1_offset, sn->l1_size, (uint32_t)n, &l1, err)) < 0)
		goto fail;
	for (uint64_t k = 0; k < n; k++)
		l1[k] &= QCOW2_OFFSET_MASK;
	/* The snapshot's tree becomes the active one too; the old active tree goes. */
	if ((r = tree_refs(sh, s, l1, (uint32_t)n, 1, err)) < 0 ||
	    (r = tree_refs(sh, s, s->l1, s->l1_size, -1, err)) < 0 ||
	    (r = settle_active(sh, s, l1, (uint32_t)n, err)) < 0 ||
	    (r = place_l1(sh, s, l1, (uint32_t)n, &l1_off, err)) < 0)
		goto fail;
	struct qcow2_shadow_header h = { .size = sn->disk_size, .l1_size = (uint32_t)n,
	                                 .l1_offset = l1_off, .nb_snapshots = s->nb_snapshots,
	                                 .snapshots_offset = s->snapshots_offset };
	r = qcow2_shadow_commit(sh, &h, l1, err);
	pthread_mutex_unlock(&s->lock);
	return r;
fail:
	qcow2_shadow_abort(sh);
	pthread_mutex_unlock(&s->lock);
	free(l1);
	if (r == -ERANGE)
		vt_error_set(err, EINVAL, b->filename, "", "Failed to load snapshot: %s",
		             strerror(EINVAL));
	return r;
}

int qcow2_snapshot_delete(struct blk *b, const char *id, const char *name, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	struct qcow2_shadow *sh;
	uint64_t *l1 = NULL, *snap_l1 = NULL, l1_off, table_off;
	struct qcow2_snapshot *t = NULL;
	int r;

	if ((r = lock_and_begin(s, &sh, err)) < 0)
		return r;
	int i = qcow2_snapshot_find(s, id, name);
	if (i < 0) {
		r = vt_error_set(err, ENOENT, b->filename, "", "Can't find the snapshot");
		goto fail;
	}
	struct qcow2_snapshot *sn = &s->snapshots[i];
	if ((r = qcow2_snapshot_check_l1(s, sn, err)) < 0 ||
	    (r = copy_l1(s, sn->l1_offset, sn->l1_size, sn->l1_size, &snap_l1, err)) < 0 ||
	    (r = copy_l1(s, s->l1_offset, s->l1_size, s->l1_size, &l1, err)) < 0)
		goto fail;
	/* Everything the snapshot reaches loses its reference, its L1 table goes; the active
	 * tables get COPIED back where a count drops to 1. */
	if ((r = tree_refs(sh, s, snap_l1, sn->l1_size, -1, err)) < 0 ||
	    (sn->l1_size && (r = qcow2_shadow_add(sh, sn->l1_offset, (uint64_t)sn->l1_size * 8,
	                                          -1, err)) < 0) ||
	    (r = settle_active(sh, s, l1, s->l1_size, err)) < 0 ||
	    (r = place_l1(sh, s, l1, s->l1_size, &l1_off, err)) < 0)
		goto fail;
	if (!(t = table_copy(s, 0))) {
		r = vt_error_set(err, ENOMEM, b->filename, "delete snapshot", NULL);
		goto fail;
	}
	memmove(&t[i], &t[i + 1], (s->nb_snapshots - (uint32_t)i - 1) * sizeof(*t));
	if ((r = place_table(sh, s, t, s->nb_snapshots - 1, true, &table_off, err)) < 0)
		goto fail;
	struct qcow2_shadow_header h = { .size = b->size, .l1_size = s->l1_size,
	                                 .l1_offset = l1_off, .nb_snapshots = s->nb_snapshots - 1,
	                                 .snapshots_offset = table_off };
	r = qcow2_shadow_commit(sh, &h, l1, err);
	sh = NULL;
	l1 = NULL;
	if (r < 0)
		goto fail;
	/* The entry's strings were not copied: free them with the old array. */
	free(sn->id);
	free(sn->name);
	free(sn->extra_unknown);
	free(s->snapshots);
	s->snapshots = t;
	table_written(s);
	pthread_mutex_unlock(&s->lock);
	free(snap_l1);
	return 0;
fail:
	free(t);
	if (sh)
		qcow2_shadow_abort(sh);
	pthread_mutex_unlock(&s->lock);
	free(snap_l1);
	free(l1);
	return r;
}
