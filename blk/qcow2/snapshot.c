/* qcow2 internal snapshots (specs/qcow2.md §8): the snapshot table, read and validated
 * once at open with qemu's rules and messages; the one parser info, convert -l and check
 * use, and the encoder that writes it back as qemu does. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int qcow2_snapshots_load(struct qcow2 *s, struct vt_error *err)
{
	struct reader r = { .s = s };
	struct qcow2_snapshot *sn = NULL;
	uint64_t off = s->snapshots_offset, table_len = 0;
	int e = 0;

	s->snapshots = NULL;
	s->snapshots_size = 0;
	if (!s->nb_snapshots)
		return 0;
	if (!(sn = calloc(s->nb_snapshots, sizeof(*sn))))
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	for (uint32_t i = 0; i < s->nb_snapshots && e == 0; i++) {
		uint8_t h[SNAP_HEADER_SIZE], ex[SNAP_EXTRA_KNOWN] = { 0 };
		struct qcow2_snapshot *x = &sn[i];
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
			e = vt_error_set(err, EFBIG, s->b->filename, "open",
			                 "Too much extra metadata in snapshot table entry %u", i);
			break;
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
			uint32_t n = x->extra_size - SNAP_EXTRA_KNOWN;
			if (!(x->extra_unknown = malloc(n))) {
				e = vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
				break;
			}
			if ((e = rd(&r, off, x->extra_unknown, n, err)) < 0)
				break;
			off += n;
		}
		if ((e = rd_str(&r, off, id_len, &x->id, err)) < 0)
			break;
		off += id_len;
		if ((e = rd_str(&r, off, name_len, &x->name, err)) < 0)
			break;
		off += name_len;
		table_len += SNAP_HEADER_SIZE + x->extra_size + id_len + name_len;
		if (table_len > SNAP_MAX_TABLE || off - s->snapshots_offset > INT_MAX)
			e = vt_error_set(err, EFBIG, s->b->filename, "open", "Snapshot table is too big");
	}
	free(r.buf);
	if (e < 0) {
		qcow2_snapshots_free(sn, s->nb_snapshots);
		return e;
	}
	s->snapshots = sn;
	s->snapshots_size = off - s->snapshots_offset;
	return 0;
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
