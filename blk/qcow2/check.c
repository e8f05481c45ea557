/* qcow2 consistency check and repair (qemu-img check's classification, specs/qcow2.md
 * §15): count every reference the metadata makes, compare with the stored refcounts, and
 * check the COPIED flags. Repair fixes refcounts in place, or rebuilds the whole refcount
 * structure at the end of the file when blocks are missing or damaged. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_CHECK_CLUSTERS (1ull << 28)

struct walk {
	struct qcow2 *s;
	uint64_t *ref;          /* computed references per host cluster */
	uint64_t nclusters;     /* clusters in the file */
	uint64_t file_size;
	struct blk_check *res;
	void (*report)(void *, const char *);
	void *opaque;
	bool need_rebuild;
	uint64_t next_contiguous;
	bool table_counted;     /* the snapshot table's clusters hold a reference of it */
};

static void say(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct walk *w, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (w->report)
		w->report(w->opaque, line);
}

/* Whether the region was counted (a region a cluster or more past the end is not). */
static bool count(struct walk *w, uint64_t off, uint64_t len)
{
	if (!len)
		return true;
	uint64_t first = off / w->s->cs, last = (off + len - 1) / w->s->cs;
	/* The file's last cluster may be partly written (a compressed stream ends there), so
	 * a region may run past the end of the file by less than a cluster, as qemu allows. */
	if (off + len > w->file_size && off + len - w->file_size >= w->s->cs) {
		say(w, "ERROR: counting reference for region exceeding the end of the file by one "
		       "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64, off, len);
		w->res->corruptions++;
		return false;
	}
	for (uint64_t c = first; c <= last; c++) {
		if (w->ref[c] == w->s->refcount_max) {
			say(w, "ERROR: overflow cluster offset=0x%" PRIx64, c * w->s->cs);
			w->res->corruptions++;
			continue;
		}
		w->ref[c]++;
	}
	return true;
}

static void count_cb(void *w, uint64_t off, uint64_t len)
{
	count(w, off, len);
}

static int read_table(struct qcow2 *s, uint64_t off, uint64_t n, uint8_t **out,
                      struct vt_error *err)
{
	*out = qcow2_alloc_buf(n ? n : 1);
	if (!*out)
		return vt_error_set(err, ENOMEM, s->b->filename, "check", NULL);
	int r = n ? blk_file_pread(s->b->file, off, *out, n, err) : 0;
	if (r < 0)
		free(*out);
	return r;
}

static int walk_l2(struct walk *w, uint64_t l2_off, bool active, struct vt_error *err)
{
	struct qcow2 *s = w->s;
	uint8_t *l2;
	int r = read_table(s, l2_off, s->cs, &l2, err);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < s->l2_entries; i++) {
		uint64_t e = qcow2_be64(l2 + i * s->l2_entry_size);
		uint64_t bitmap = s->extended_l2 ? qcow2_be64(l2 + i * s->l2_entry_size + 8) : 0;
		if (e & QCOW2_OFLAG_COMPRESSED) {
			if (e & QCOW2_OFLAG_COPIED) {
				say(w, "ERROR: coffset=0x%" PRIx64 ": Compressed cluster has COPIED flag",
				    (uint64_t)(e & ((1ull << s->csize_shift) - 1)));
				w->res->corruptions++;
			}
			uint64_t coff = e & ((1ull << s->csize_shift) - 1);
			uint64_t nsect = ((e >> s->csize_shift) & s->csize_mask) + 1;
			count(w, coff & ~511ull, nsect * 512);
			if (active) {
				w->res->allocated_clusters++;
				w->res->compressed_clusters++;
				w->res->fragmented_clusters++;
			}
			continue;
		}
		uint64_t off = e & QCOW2_OFFSET_MASK;
		if (!s->extended_l2 && (e & QCOW2_L2_RESERVED)) {
			say(w, "ERROR found L2 entry with reserved bits set: %" PRIx64, e);
			w->res->corruptions++;
		}
		if (!s->extended_l2 && (e & QCOW2_OFLAG_ZERO) && s->version < 3) {
			say(w, "ERROR: zero cluster entry in a version 2 image: %" PRIx64, e);
			w->res->corruptions++;
		}
		if (s->extended_l2 && (((uint32_t)bitmap & (uint32_t)(bitmap >> 32)) ||
		                       ((uint32_t)bitmap && !off))) {
			say(w, "ERROR: Invalid cluster entry found (L2 offset: 0x%" PRIx64
			       ", L2 index: 0x%" PRIx64 ")", l2_off, i);
			w->res->corruptions++;
		}
		if (!off)
			continue;
		if (off % s->cs) {
			/* Counted all the same, as qemu does: the bytes it covers are in use. */
			say(w, "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; L2 "
			       "entry corrupted.", off);
			w->res->corruptions++;
		}
		count(w, off, s->cs);
		if (active) {
			w->res->allocated_clusters++;
			if (w->next_contiguous && off != w->next_contiguous)
				w->res->fragmented_clusters++;
			w->next_contiguous = off + s->cs;
		}
	}
	free(l2);
	return 0;
}

static int walk_l1(struct walk *w, uint64_t l1_off, uint32_t l1_size, bool active,
                   struct vt_error *err)
{
	struct qcow2 *s = w->s;
	uint8_t *l1;
	if ((uint64_t)l1_size * 8 > QCOW2_MAX_L1_BYTES || l1_off % s->cs) {
		say(w, "ERROR: snapshot L1 table at 0x%" PRIx64 " is invalid", l1_off);
		w->res->corruptions++;
		return 0;
	}
	count(w, l1_off, (uint64_t)l1_size * 8);
	int r = read_table(s, l1_off, (uint64_t)l1_size * 8, &l1, err);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < l1_size && r == 0; i++) {
		uint64_t e = qcow2_be64(l1 + (uint64_t)i * 8);
		if (e & QCOW2_L1_RESERVED) {
			say(w, "ERROR found L1 entry with reserved bits set: %" PRIx64, e);
			w->res->corruptions++;
		}
		uint64_t off = e & QCOW2_OFFSET_MASK;
		if (!off)
			continue;
		if (off % s->cs) {
			/* qemu goes on to read the table where the entry points; so do we, to
			 * classify the damage the same way. */
			say(w, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
			       "corrupted", off);
			w->res->corruptions++;
		}
		count(w, off, s->cs);
		if (off / s->cs < w->nclusters)
			r = walk_l2(w, off, active, err);
	}
	free(l1);
	return r;
}

/* Every snapshot's tree (as qemu: a bad L1 pointer is reported and its tree skipped),
 * then the table itself. */
static int walk_snapshots(struct walk *w, struct vt_error *err)
{
	struct qcow2 *s = w->s;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snapshots[i];
		int r;
		if (sn->l1_offset % s->cs) {
			say(w, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not cluster "
			       "aligned; snapshot table entry corrupted", sn->id, sn->name, sn->l1_offset);
			w->res->corruptions++;
			continue;
		}
		if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
			say(w, "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too large; "
			       "snapshot table entry corrupted", sn->id, sn->name, sn->l1_size);
			w->res->corruptions++;
			continue;
		}
		if ((r = walk_l1(w, sn->l1_offset, sn->l1_size, false, err)) < 0)
			return r;
	}
	w->table_counted = count(w, s->snapshots_offset, s->snapshots_size);
	return 0;
}

/* What the snapshot table's own check found (qemu keeps it apart from the refcount
 * check's result and adds it at the end). */
struct snap_check {
	uint64_t corruptions;   /* dropped extra data, incomplete entries */
	uint64_t dropped;       /* snapshots discarded off the end of the table */
};

/* qemu's qcow2_check_read_snapshot_table, before the refcounts are counted. An image
 * opened for repair had its table read leniently at open: it is read again here, from
 * the header, strictly unless errors are to be fixed. Then v3 entries must carry the VM
 * state and disk sizes (16 bytes of extra data). */
static int check_snapshot_table(struct walk *w, unsigned fix, struct snap_check *sc,
                                struct vt_error *err)
{
	struct qcow2 *s = w->s;
	bool repair = fix & BLK_CHECK_FIX_ERRORS;
	if (s->b->repair) {
		uint8_t hb[12];
		int r = blk_file_pread(s->b->file, 60, hb, sizeof(hb), err);
		if (r < 0) {
			w->res->check_errors++;
			say(w, "ERROR failed to read the snapshot table pointer from the image header: "
			    "%s", strerror(-r));
			return r;
		}
		qcow2_snapshots_free(s->snapshots, s->nb_snapshots);
		s->snapshots = NULL;
		s->nb_snapshots = qcow2_be32(hb);
		s->snapshots_offset = qcow2_be64(hb + 4);
		uint32_t reduced = 0, dropped = 0;
		struct vt_error e = { 0 };
		r = qcow2_snapshots_read(s, repair, w->report, w->opaque, &reduced, &dropped, &e);
		if (r < 0) {
			w->res->check_errors++;
			say(w, "ERROR failed to read the snapshot table: %s", e.why);
			if (!strncmp(e.why, "Too much extra", 14))
				say(w, "You can force-remove this extra metadata with vtool img check "
				       "-r all");
			else if (reduced)
				say(w, "You can force-remove all %" PRIu32 " overhanging snapshots with "
				       "vtool img check -r all", reduced);
			/* Nothing was read: nothing of it may be used. */
			s->nb_snapshots = 0;
			s->snapshots_offset = 0;
			return vt_error_set(err, -r, s->b->filename, "Check failed", NULL);
		}
		sc->corruptions += dropped;
		sc->dropped += reduced;
		if (reduced) {
			/* As qemu, at once and alone: the header stops counting the dropped
			 * snapshots (one write of the count; their clusters leak, which the check
			 * repairs next). The table stays where it is. */
			struct qcow2_hdr_edit he = { .compression_type = -1, .refcount_order = -1,
			                             .set_snapshots = true,
			                             .nb_snapshots = s->nb_snapshots,
			                             .snapshots_offset = s->snapshots_offset };
			if ((r = qcow2_edit_header(s, &he, err)) < 0) {
				w->res->check_errors++;
				say(w, "ERROR failed to update the snapshot count in the image header: "
				    "%s", strerror(-r));
				return r;
			}
		}
	}
	if (s->version >= 3)
		for (uint32_t i = 0; i < s->nb_snapshots; i++)
			if (s->snapshots[i].extra_size < 16) {
				say(w, "%s snapshot table entry %" PRIu32 " is incomplete",
				    repair ? "Repairing" : "ERROR", i);
				sc->corruptions++;
			}
	return 0;
}

static void walk_refcount_structure(struct walk *w)
{
	struct qcow2 *s = w->s;
	count(w, s->rt_offset, (uint64_t)s->rt_clusters * s->cs);
	for (uint64_t i = 0; i < s->rt_entries; i++) {
		uint64_t e = s->rt[i], off = e & QCOW2_REFT_OFFSET_MASK;
		if (!e)
			continue;
		if ((e & ~QCOW2_REFT_OFFSET_MASK) || off % s->cs) {
			say(w, "ERROR refcount block %" PRIu64 " is not cluster aligned; refcount "
			       "table entry corrupted", i);
			w->res->corruptions++;
			w->need_rebuild = true;
			continue;
		}
		if (off / s->cs >= w->nclusters) {
			say(w, "ERROR refcount block %" PRIu64 " is outside image", i);
			w->res->corruptions++;
			w->need_rebuild = true;
			continue;
		}
		count(w, off, s->cs);
	}
}

/* Write a new refcount table and blocks after everything, from w->ref. */
static int rebuild_refcounts(struct walk *w, struct vt_error *err)
{
	struct qcow2 *s = w->s;
	/* The old structure stops counting: it becomes free space. */
	for (uint64_t c = s->rt_offset / s->cs; c < s->rt_offset / s->cs + s->rt_clusters; c++)
		if (c < w->nclusters && w->ref[c])
			w->ref[c]--;
	for (uint64_t i = 0; i < s->rt_entries; i++) {
		uint64_t off = s->rt[i] & QCOW2_REFT_OFFSET_MASK;
		if (off && !(s->rt[i] & 0x1ff) && !(off % s->cs) && off / s->cs < w->nclusters &&
		    w->ref[off / s->cs])
			w->ref[off / s->cs]--;
	}
	uint64_t end = w->nclusters, blocks = 0, table = 0, total;
	for (;;) { /* blocks and table must cover the data and themselves */
		total = end + blocks + table;
		uint64_t nb = (total + s->rb_entries - 1) / s->rb_entries;
		uint64_t nt = (nb * 8 + s->cs - 1) / s->cs;
		if (nb == blocks && nt == table)
			break;
		blocks = nb, table = nt;
	}
	if (table * s->cs > QCOW2_MAX_REFTABLE_BYTES)
		return vt_error_set(err, EFBIG, s->b->filename, "rebuild refcounts",
		                    "Reference count table too large");
	say(w, "Rebuilding refcount structure");
	uint8_t *blk = qcow2_alloc_buf(s->cs), *tab = qcow2_alloc_buf(table * s->cs);
	int r = 0;
	if (!blk || !tab) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "rebuild refcounts", NULL);
		goto out;
	}
	memset(tab, 0, table * s->cs);
	for (uint64_t b = 0; b < blocks && r == 0; b++) {
		memset(blk, 0, s->cs);
		for (uint64_t k = 0; k < s->rb_entries; k++) {
			uint64_t c = b * s->rb_entries + k, v;
			if (c < w->nclusters)
				v = w->ref[c];
			else
				v = c < total ? 1 : 0; /* the new blocks and table */
			if (!v)
				continue;
			unsigned wd = s->refcount_bits;
			if (wd < 8)
				blk[k * wd / 8] |= (uint8_t)(v << ((k * wd) % 8));
			else
				for (unsigned q = 0; q < wd / 8; q++)
					blk[k * (wd / 8) + q] = (uint8_t)(v >> (8 * (wd / 8 - 1 - q)));
		}
		uint64_t boff = (end + b) * s->cs;
		qcow2_put_be64(tab + b * 8, boff);
		r = blk_file_pwrite(s->b->file, boff, blk, s->cs, err);
	}
	uint64_t toff = (end + blocks) * s->cs;
	if (r == 0)
		r = blk_file_pwrite(s->b->file, toff, tab, table * s->cs, err);
	if (r == 0)
		r = blk_file_flush(s->b->file, err);
	if (r == 0) {
		uint8_t hdr[12];
		qcow2_put_be64(hdr, toff);
		qcow2_put_be32(hdr + 8, (uint32_t)table);
		r = blk_file_pwrite(s->b->file, QCOW2_OFF_REFTABLE, hdr, 12, err);
	}
	if (r == 0) {
		uint64_t *rt = calloc(table * s->cs / 8, 8);
		if (!rt) {
			r = vt_error_set(err, ENOMEM, s->b->filename, "rebuild refcounts", NULL);
			goto out;
		}
		for (uint64_t i = 0; i < table * s->cs / 8; i++)
			rt[i] = qcow2_be64(tab + i * 8);
		free(s->rt);
		s->rt = rt;
		qcow2_meta_changed(s);
		s->rt_offset = toff;
		s->rt_clusters = (uint32_t)table;
		s->rt_entries = table * s->cs / 8;
		qcow2_cache_forget_all(s->rbc);
		s->free_hint = 0;
	}
out:
	free(blk);
	free(tab);
	return r;
}

static int check_copied(struct walk *w, unsigned fix, struct vt_error *err)
{
	struct qcow2 *s = w->s;
	for (uint32_t i = 0; i < s->l1_size; i++) {
		uint64_t e = s->l1[i], off = e & QCOW2_OFFSET_MASK, rc;
		if (!off)
			continue;
		int r = qcow2_get_refcount(s, off / s->cs, &rc, err);
		if (r < 0)
			return r;
		if (off % s->cs || off / s->cs >= w->nclusters)
			continue; /* already reported; its table cannot be trusted */
		if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
			say(w, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
			       " refcount=%" PRIu64, fix & BLK_CHECK_FIX_ERRORS ? "Repairing" : "ERROR",
			    i, e, rc);
			if (fix & BLK_CHECK_FIX_ERRORS) {
				s->l1[i] = rc == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
				if ((r = qcow2_write_be64_field(s, s->l1_offset + (uint64_t)i * 8, s->l1[i], err)) < 0)
					return r;
				w->res->corruptions_fixed++;
			} else {
				w->res->corruptions++;
			}
		}
		uint8_t *l2;
		if ((r = read_table(s, off, s->cs, &l2, err)) < 0)
			return r;
		bool dirty = false;
		for (uint64_t k = 0; k < s->l2_entries; k++) {
			uint8_t *p = l2 + k * s->l2_entry_size;
			uint64_t le = qcow2_be64(p), lo = le & QCOW2_OFFSET_MASK;
			if ((le & QCOW2_OFLAG_COMPRESSED) || !lo)
				continue;
			if ((r = qcow2_get_refcount(s, lo / s->cs, &rc, err)) < 0)
				break;
			if ((rc == 1) == !!(le & QCOW2_OFLAG_COPIED))
				continue;
			say(w, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
			    fix & BLK_CHECK_FIX_ERRORS ? "Repairing" : "ERROR", le, rc);
			if (fix & BLK_CHECK_FIX_ERRORS) {
				qcow2_put_be64(p, rc == 1 ? le | QCOW2_OFLAG_COPIED : le & ~QCOW2_OFLAG_COPIED);
				dirty = true;
				w->res->corruptions_fixed++;
			} else {
				w->res->corruptions++;
			}
		}
		if (r == 0 && dirty) {
			r = blk_file_pwrite(s->b->file, off, l2, s->cs, err);
			qcow2_cache_forget_all(s->l2c);
		}
		free(l2);
		if (r < 0)
			return r;
	}
	return 0;
}

int qcow2_check(struct blk *b, unsigned fix, struct blk_check *res,
                void (*report)(void *, const char *), void *opaque, struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint64_t fsize;
	int r = 0;
	if (b->writable) {
		/* The check reads tables from the file: write back what the caches hold. */
		pthread_mutex_lock(&s->lock);
		r = qcow2_flush_metadata(s, err);
		pthread_mutex_unlock(&s->lock);
	}
	if (r < 0 || (r = blk_file_size(b->file, &fsize, err)) < 0)
		return r;
	struct walk w = { .s = s, .res = res, .report = report, .opaque = opaque,
	                  .nclusters = (fsize + s->cs - 1) / s->cs, .file_size = fsize };
	if (w.nclusters > MAX_CHECK_CLUSTERS)
		return vt_error_set(err, EFBIG, b->filename, "check", "image file too large to check");
	w.ref = calloc(w.nclusters + 1, sizeof(*w.ref));
	if (!w.ref)
		return vt_error_set(err, ENOMEM, b->filename, "check", NULL);
	struct snap_check sc = { 0 };
	pthread_mutex_lock(&s->lock);
	if ((r = check_snapshot_table(&w, fix, &sc, err)) < 0)
		goto out;
	res->total_clusters = (b->size + s->cs - 1) / s->cs;
	count(&w, 0, s->cs);
	if (s->has_crypto_ext)
		count(&w, s->crypto_off, s->crypto_len); /* the LUKS header area */
	if ((r = walk_l1(&w, s->l1_offset, s->l1_size, true, err)) < 0 ||
	    (r = walk_snapshots(&w, err)) < 0 ||
	    (r = qcow2_bitmaps_refs(s, count_cb, &w, &res->corruptions, err)) < 0)
		goto out;
	walk_refcount_structure(&w);

	/* Stored refcounts against the references we counted. */
	uint64_t highest = 0;
	bool blocks_bad = w.need_rebuild; /* damaged refcount blocks: stored values unknown */
	/* A compressed stream may reach into the cluster after the file's end (see count). */
	uint64_t compared = w.nclusters + (w.ref[w.nclusters] != 0);
	for (uint64_t c = 0; c < compared; c++) {
		uint64_t rc = 0;
		if (!blocks_bad && (r = qcow2_get_refcount(s, c, &rc, err)) < 0) {
			res->check_errors++;
			goto out;
		}
		if (rc || w.ref[c])
			highest = c + 1;
		if (blocks_bad || rc == w.ref[c])
			continue;
		bool leak = rc > w.ref[c];
		say(&w, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
		    leak ? "Leaked" : "ERROR", c, rc, w.ref[c]);
		if (!leak && rc == 0)
			w.need_rebuild = true; /* the block may be missing: rebuild everything */
		unsigned need = leak ? BLK_CHECK_FIX_LEAKS : BLK_CHECK_FIX_ERRORS;
		if ((fix & need) && !w.need_rebuild) {
			int64_t delta = (int64_t)(w.ref[c] - rc);
			while (delta && r == 0) {
				int step = delta > 0 ? 1 : -1;
				r = qcow2_update_refcount(s, c, step, err);
				delta -= step;
			}
			if (r < 0)
				goto out;
			leak ? res->leaks_fixed++ : res->corruptions_fixed++;
		} else {
			leak ? res->leaks++ : res->corruptions++;
		}
	}
	if (w.need_rebuild && (fix & BLK_CHECK_FIX_ERRORS)) {
		uint64_t before = res->corruptions;
		if ((r = rebuild_refcounts(&w, err)) < 0)
			goto out;
		res->corruptions_fixed += before;
		res->corruptions = 0;
	} else if (w.need_rebuild && fix) {
		say(&w, "ERROR need to rebuild refcount structures");
		r = vt_error_set(err, EIO, b->filename, "Check failed", "Input/output error");
		goto out;
	}
	if ((r = check_copied(&w, fix, err)) < 0)
		goto out;
	/* qemu's qcow2_check_fix_snapshot_table: with the refcounts right, a table with
	 * entries to mend is written anew (crash-safe: new clusters, one header switch). */
	res->corruptions_fixed += sc.dropped;
	if ((fix & BLK_CHECK_FIX_ERRORS) && sc.corruptions) {
		if ((r = qcow2_snapshots_rewrite(s, w.table_counted, err)) < 0) {
			res->check_errors++;
			say(&w, "ERROR failed to update snapshot table: %s", strerror(-r));
			goto out;
		}
		res->corruptions_fixed += sc.corruptions;
	} else {
		res->corruptions += sc.corruptions;
	}
	res->image_end_offset = highest * s->cs;
	if (fix && !res->corruptions &&
	    (s->incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)) && s->version >= 3) {
		s->incompat &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
		r = qcow2_write_be64_field(s, QCOW2_OFF_INCOMPAT, s->incompat, err);
	}
out:
	pthread_mutex_unlock(&s->lock);
	free(w.ref);
	return r;
}
