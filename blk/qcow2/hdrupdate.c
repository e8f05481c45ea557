/* Rewriting cluster 0 of a qcow2 image: the backing file name and format, the version,
 * the feature bits, the table pointers and the size. The one header switch of qcow2.h:
 * snapshot operations (shadow.c), amend, make_empty and backing file changes use it.
 *
 * Everything that can change lives in the first bytes of cluster 0: the header, the
 * extension list after it and the backing file name after the end marker (qemu's
 * layout, specs/qcow2.md §4). An edit reads that area back from the file, patches the
 * fields it changes, rebuilds the extension list (the backing format first, the others
 * kept in their order and byte for byte, unknown ones too, as qemu does) and writes it
 * with one pwrite of the bytes that changed. That write is the switch: the caller makes
 * whatever the new header depends on durable before it, and it is synced after. A
 * change of header fields only is one write inside the first sector; within one page
 * (the usual case: header, feature table and a name fit in 4 KiB) a write is
 * all-or-nothing for a killed process and for the page-torn power cuts of README's
 * crash model. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct ext {
	uint32_t type, len;
	const uint8_t *data;
};

#define MAX_EXTS 64

static void put_ext(uint8_t *c0, size_t *off, uint32_t type, const void *data, uint32_t len)
{
	qcow2_put_be32(c0 + *off, type);
	qcow2_put_be32(c0 + *off + 4, len);
	memcpy(c0 + *off + 8, data, len);
	memset(c0 + *off + 8 + len, 0, ((len + 7u) & ~7u) - len);
	*off += 8 + ((len + 7u) & ~7u);
}

int qcow2_edit_header(struct qcow2 *s, const struct qcow2_hdr_edit *e, struct vt_error *err)
{
	const char *fn = s->b->filename;
	uint64_t cs = s->cs;
	uint8_t *old = qcow2_alloc_buf(cs), *nw = qcow2_alloc_buf(cs);
	struct ext exts[MAX_EXTS];
	int next = 0, r;

	if (!old || !nw) {
		r = vt_error_set(err, ENOMEM, fn, "update header", NULL);
		goto out;
	}
	if ((r = blk_file_pread(s->b->file, 0, old, cs, err)) < 0)
		goto out;
	int old_version = (int)qcow2_be32(old + 4);
	uint64_t old_hl = old_version >= 3 ? qcow2_be32(old + 100) : 72;
	uint64_t bk_off = qcow2_be64(old + 8), bk_len = qcow2_be32(old + 16);
	uint64_t ext_end = bk_off ? bk_off : cs, used = old_hl, off = old_hl;
	if (old_hl > cs || bk_off > cs || bk_len > cs - bk_off) {
		r = qcow2_signal_corruption(s, err, "header fields out of range");
		goto out;
	}
	/* The list as it is on disk (validated at open; checked again, it is cheap). */
	while (off + 8 <= ext_end) {
		uint32_t type = qcow2_be32(old + off), len = qcow2_be32(old + off + 4);
		if (type == QCOW2_EXT_END) {
			used = off + 8;
			break;
		}
		if (len > ext_end - off - 8 || next == MAX_EXTS) {
			r = vt_error_set(err, EINVAL, fn, "update header", "Header extension too large");
			goto out;
		}
		exts[next++] = (struct ext){ type, len, old + off + 8 };
		off += 8 + (((uint64_t)len + 7) & ~7ull);
		used = off;
	}
	if (bk_off && bk_off + bk_len > used)
		used = bk_off + bk_len;

	int version = e->version ? e->version : old_version;
	memset(nw, 0, cs);
	size_t pos;
	/* Header fields only: everything after the header stays byte for byte. */
	bool fields_only = !e->backing && !e->set_bitmaps && version == old_version;
	if (fields_only) {
		memcpy(nw, old, used);
		pos = used;
	} else if (version == 2) {
		memcpy(nw, old, 72);
		pos = 72;
	} else if (old_version == 2) {
		/* Upgrade: the v3 fields start out as a fresh v3 image has them. */
		memcpy(nw, old, 72);
		qcow2_put_be32(nw + 96, 4);
		qcow2_put_be32(nw + 100, 112);
		pos = 112;
	} else {
		memcpy(nw, old, old_hl);
		pos = old_hl;
	}
	qcow2_put_be32(nw + 4, (uint32_t)version);
	if (version >= 3 && e->features) {
		qcow2_put_be64(nw + 72, e->incompat);
		qcow2_put_be64(nw + 80, e->compat);
		qcow2_put_be64(nw + 88, e->autoclear);
		if (e->compression_type >= 0)
			nw[104] = (uint8_t)e->compression_type;
	}
	if (version >= 3 && e->refcount_order >= 0)
		qcow2_put_be32(nw + 96, (uint32_t)e->refcount_order);
	if (e->set_size)
		qcow2_put_be64(nw + 24, e->size);
	if (e->set_l1) {
		qcow2_put_be32(nw + 36, e->l1_size);
		qcow2_put_be64(nw + 40, e->l1_offset);
	}
	if (e->set_reftable) {
		qcow2_put_be64(nw + 48, e->rt_offset);
		qcow2_put_be32(nw + 56, e->rt_clusters);
	}
	if (e->set_snapshots) {
		qcow2_put_be32(nw + 60, e->nb_snapshots);
		qcow2_put_be64(nw + 64, e->snapshots_offset);
	}

	/* The backing file: the new one, or the one there was. */
	char name[1024] = "", fmtname[32] = "";
	if (fields_only)
		goto write;
	if (e->backing) {
		if (e->backing_file && strlen(e->backing_file) > 1023) {
			r = vt_error_set(err, EINVAL, fn, "update header", "Invalid argument");
			goto out;
		}
		if (e->backing_format && strlen(e->backing_format) >= 16) {
			r = vt_error_set(err, EINVAL, fn, "update header",
			                 "backing format name '%s' is too long", e->backing_format);
			goto out;
		}
		snprintf(name, sizeof(name), "%s", e->backing_file ? e->backing_file : "");
		if (name[0])
			snprintf(fmtname, sizeof(fmtname), "%s", e->backing_format ? e->backing_format : "");
	} else {
		memcpy(name, old + bk_off, bk_off ? bk_len : 0);
		name[bk_off ? bk_len : 0] = '\0';
		for (int i = 0; i < next; i++)
			if (exts[i].type == QCOW2_EXT_BACKING_FMT && exts[i].len < sizeof(fmtname))
				memcpy(fmtname, exts[i].data, exts[i].len), fmtname[exts[i].len] = '\0';
	}

	/* Extensions: qemu's order (backing format, data file, crypto header, feature table,
	 * bitmaps, then the unknown ones), each at most once. A v2 image has no feature
	 * table, and no bitmaps (their autoclear bit is gone). */
	bool need_table = version >= 3 && old_version == 2 && cs > 4096;
	for (int i = 0; i < next; i++)
		need_table &= exts[i].type != QCOW2_EXT_FEATURES;
	if (fmtname[0])
		put_ext(nw, &pos, QCOW2_EXT_BACKING_FMT, fmtname, (uint32_t)strlen(fmtname));
	bool need_bitmaps = version >= 3 && e->set_bitmaps && e->bm_nb;
	for (int i = 0; i <= next; i++) {
		if (need_table && (i == next || (exts[i].type != QCOW2_EXT_DATA_FILE &&
		                                 exts[i].type != QCOW2_EXT_CRYPTO))) {
			uint8_t t[8 * 48];
			size_t n = qcow2_feature_table(t);
			put_ext(nw, &pos, QCOW2_EXT_FEATURES, t, (uint32_t)n);
			need_table = false;
		}
		if (need_bitmaps && (i == next || (exts[i].type != QCOW2_EXT_DATA_FILE &&
		                                   exts[i].type != QCOW2_EXT_CRYPTO &&
		                                   exts[i].type != QCOW2_EXT_FEATURES))) {
			uint8_t bx[24] = { 0 };
			qcow2_put_be32(bx, e->bm_nb);
			qcow2_put_be64(bx + 8, e->bm_dir_size);
			qcow2_put_be64(bx + 16, e->bm_dir_offset);
			if (pos + 16 + sizeof(bx) > cs) {
				r = vt_error_set(err, ENOSPC, fn, "update header",
				                 "No space left in the file header");
				goto out;
			}
			put_ext(nw, &pos, QCOW2_EXT_BITMAPS, bx, sizeof(bx));
			need_bitmaps = false;
		}
		if (i == next)
			break;
		uint32_t type = exts[i].type;
		if (type == QCOW2_EXT_BACKING_FMT || (e->set_bitmaps && type == QCOW2_EXT_BITMAPS))
			continue;
		if (version == 2 && (type == QCOW2_EXT_FEATURES || type == QCOW2_EXT_BITMAPS))
			continue;
		/* Room for it and the end marker (the feature table and a backing format
		 * always fit: they are what qemu's fresh headers hold). */
		if (pos + 16 + ((exts[i].len + 7ull) & ~7ull) > cs) {
			r = vt_error_set(err, ENOSPC, fn, "update header", "No space left in the file header");
			goto out;
		}
		put_ext(nw, &pos, type, exts[i].data, exts[i].len);
	}
	pos += 8; /* end of extensions */
	size_t nlen = strlen(name);
	if (pos + nlen > cs) {
		r = vt_error_set(err, ENOSPC, fn, "update header", "No space left in the file header");
		goto out;
	}
	qcow2_put_be64(nw + 8, nlen ? pos : 0);
	qcow2_put_be32(nw + 16, (uint32_t)nlen);
	memcpy(nw + pos, name, nlen);
	pos += nlen;

write:;
	/* One write of the bytes that differ, within the old and the new extent of the
	 * area: the switch. */
	size_t len = pos > used ? pos : (size_t)used, first = 0, last = len;
	while (first < len && nw[first] == old[first])
		first++;
	while (last > first && nw[last - 1] == old[last - 1])
		last--;
	if (first < last && ((r = blk_file_pwrite(s->b->file, first, nw + first, last - first,
	                                          err)) < 0 ||
	                     (r = blk_file_flush(s->b->file, err)) < 0))
		goto out;

	s->version = version;
	s->header_length = version >= 3 ? qcow2_be32(nw + 100) : 72;
	if (version >= 3) {
		s->incompat = qcow2_be64(nw + 72);
		s->compat = qcow2_be64(nw + 80);
		s->autoclear = qcow2_be64(nw + 88);
		s->compression_type = s->header_length > 104 ? nw[104] : 0;
	} else {
		s->incompat = s->compat = s->autoclear = 0;
		s->compression_type = 0;
	}
	if (!fields_only) {
		snprintf(s->b->backing_file, sizeof(s->b->backing_file), "%s", name);
		snprintf(s->b->backing_format, sizeof(s->b->backing_format), "%s", fmtname);
	}
out:
	free(old);
	free(nw);
	return r;
}

int qcow2_change_backing_file(struct blk *b, const char *file, const char *fmt,
                              struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	struct qcow2_hdr_edit e = { .backing = true, .backing_file = file,
	                            .backing_format = fmt, .compression_type = -1,
	                            .refcount_order = -1 };
	pthread_mutex_lock(&s->lock);
	/* What the image holds now must be durable before the header says where the rest
	 * of the disk comes from (rebase copied clusters in for that). */
	int r = qcow2_arena_release(s, err);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
	if (r == 0)
		r = qcow2_edit_header(s, &e, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}
