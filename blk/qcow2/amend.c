/* qemu-img amend for qcow2 (qemu's qcow2_amend_options, its order and messages):
 * compat=0.10|1.1 (upgrade first, downgrade last: zero clusters expanded, refused where
 * qemu refuses), refcount_bits (a new refcount structure), lazy_refcounts, size;
 * backing_file/backing_fmt only as they are (qemu 7.2 sends changes to rebase);
 * encryption and data-file options refused as qemu refuses them on such images.
 *
 * Crash safety: every change is a complete new structure made durable in free space,
 * then one header write that switches to it, then the old structure freed (leaks at
 * worst). Zero-cluster expansion writes and syncs the zeros before an L2 entry stops
 * saying "zero"; the image stays a valid v3 image until the last header write makes it
 * v2. Callers hold no lock; amend takes s->lock. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* qemu's amend option list (printed sorted, as qemu prints it). */
const struct blk_optdesc qcow2_amend_opts[] = {
	{ "backing_file", BLK_OPT_STRING, "File name of a base image" },
	{ "backing_fmt", BLK_OPT_STRING, "Image format of the base image" },
	{ "compat", BLK_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])" },
	{ "data_file", BLK_OPT_STRING, "File name of an external data file" },
	{ "data_file_raw", BLK_OPT_BOOL,
	  "The external data file must stay valid as a raw image" },
	{ "encrypt.iter-time", BLK_OPT_NUMBER, "Time to spend in PBKDF in milliseconds" },
	{ "encrypt.keyslot", BLK_OPT_NUMBER, "Select a single keyslot to modify explicitly" },
	{ "encrypt.new-secret", BLK_OPT_STRING,
	  "New secret to set in the matching keyslots. Empty string to erase" },
	{ "encrypt.old-secret", BLK_OPT_STRING, "Select all keyslots that match this password" },
	{ "encrypt.state", BLK_OPT_STRING,
	  "Select new state of affected keyslots (active/inactive)" },
	{ "lazy_refcounts", BLK_OPT_BOOL, "Postpone refcount updates" },
	{ "refcount_bits", BLK_OPT_NUMBER, "Width of a reference count entry in bits" },
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ NULL, 0, NULL },
};

#define FAIL(code, ...) vt_error_set(err, code, s->b->filename, "amend", __VA_ARGS__)

struct progress {
	void (*fn)(void *opaque, uint64_t done, uint64_t total);
	void *opaque;
	uint64_t done, total;
};

static void step(struct progress *p)
{
	if (p->fn && p->done < p->total)
		p->fn(p->opaque, ++p->done, p->total);
}

/* ---- walking every L1 table (the active one and the snapshots') ------------------- */

struct l1ref {
	uint64_t off;
	uint32_t size;
	bool active;
	uint64_t disk_size, vm_state_size;
};

/* The active table first, then the snapshots' (snapshot.c read and checked them). */
static int list_l1s(struct qcow2 *s, struct l1ref **out, size_t *n, struct vt_error *err)
{
	struct l1ref *v = calloc((size_t)s->nb_snapshots + 1, sizeof(*v));
	if (!v)
		return FAIL(ENOMEM, NULL);
	v[0] = (struct l1ref){ s->l1_offset, s->l1_size, true, s->b->size, 0 };
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snapshots[i];
		int r = qcow2_snapshot_check_l1(s, sn, err);
		if (r < 0) {
			free(v);
			return r;
		}
		v[i + 1] = (struct l1ref){ sn->l1_offset, sn->l1_size, false, sn->disk_size,
		                           sn->vm_state_size };
	}
	*out = v;
	*n = (size_t)s->nb_snapshots + 1;
	return 0;
}

/* Does any L2 entry (of any L1) map a compressed cluster? */
static int has_compressed(struct qcow2 *s, const struct l1ref *l1s, size_t n, bool *yes,
                          struct vt_error *err)
{
	uint8_t *l1 = NULL, *l2 = qcow2_alloc_buf(s->cs);
	int r = l2 ? 0 : FAIL(ENOMEM, NULL);
	*yes = false;
	for (size_t k = 0; k < n && r == 0 && !*yes; k++) {
		free(l1);
		if (!(l1 = malloc((size_t)l1s[k].size * 8 + 8))) {
			r = FAIL(ENOMEM, NULL);
			break;
		}
		if ((r = blk_file_pread(s->b->file, l1s[k].off, l1, (size_t)l1s[k].size * 8, err)) < 0)
			break;
		for (uint32_t i = 0; i < l1s[k].size && r == 0 && !*yes; i++) {
			uint64_t l2_off = qcow2_be64(l1 + (size_t)i * 8) & QCOW2_OFFSET_MASK;
			if (!l2_off)
				continue;
			if ((r = blk_file_pread(s->b->file, l2_off, l2, s->cs, err)) < 0)
				break;
			for (uint64_t j = 0; j < s->l2_entries; j++)
				if (qcow2_be64(l2 + j * s->l2_entry_size) & QCOW2_OFLAG_COMPRESSED)
					*yes = true;
		}
	}
	free(l1);
	free(l2);
	return r;
}

/* Zero clusters become what v2 can say (qemu's qcow2_expand_zero_clusters): without a
 * backing file an unallocated cluster reads zeros; otherwise the cluster gets zeros
 * written into a host cluster, counted once per L1 table that reaches its L2 table. A
 * zero cluster's own host cluster is used only when nothing else maps it: one a snapshot
 * still maps as data keeps that data (qemu 7.2 writes the zeros into it and so changes
 * the snapshot; the active content is the same either way). The zeros and their
 * refcounts are durable before the L2 table changes; references the table gives up are
 * dropped after it is. */
static int expand_zero_clusters(struct qcow2 *s, const struct l1ref *l1s, size_t n,
                                struct vt_error *err)
{
	uint8_t *l1 = NULL, *l2 = qcow2_alloc_buf(s->cs);
	uint64_t *drops = calloc(s->l2_entries, sizeof(*drops));
	int r = l2 && drops ? 0 : FAIL(ENOMEM, NULL);
	bool backing = s->b->backing_file[0];

	for (size_t k = 0; k < n && r == 0; k++) {
		free(l1);
		if (!(l1 = malloc((size_t)l1s[k].size * 8 + 8))) {
			r = FAIL(ENOMEM, NULL);
			break;
		}
		if ((r = blk_file_pread(s->b->file, l1s[k].off, l1, (size_t)l1s[k].size * 8, err)) < 0)
			break;
		for (uint32_t i = 0; i < l1s[k].size && r == 0; i++) {
			uint64_t l2_off = qcow2_be64(l1 + (size_t)i * 8) & QCOW2_OFFSET_MASK, l2_rc;
			size_t ndrops = 0;
			bool changed = false;
			if (!l2_off)
				continue;
			if (l2_off % s->cs) {
				r = qcow2_signal_corruption(s, err, "L2 table offset %#" PRIx64 " unaligned",
				                            l2_off);
				break;
			}
			if ((r = blk_file_pread(s->b->file, l2_off, l2, s->cs, err)) < 0 ||
			    (r = qcow2_get_refcount(s, l2_off >> s->cluster_bits, &l2_rc, err)) < 0)
				break;
			for (uint64_t j = 0; j < s->l2_entries && r == 0; j++) {
				uint8_t *p = l2 + j * s->l2_entry_size;
				uint64_t e = qcow2_be64(p), host = e & QCOW2_OFFSET_MASK, rc = l2_rc;
				if ((e & QCOW2_OFLAG_COMPRESSED) || !(e & QCOW2_OFLAG_ZERO))
					continue;
				if (!host && !backing) {
					qcow2_put_be64(p, 0);
					changed = true;
					continue;
				}
				if (host && (host % s->cs)) {
					r = qcow2_signal_corruption(s, err, "Cluster allocation offset %#"
					                            PRIx64 " unaligned", host);
					break;
				}
				if (host && ((r = qcow2_get_refcount(s, host >> s->cluster_bits, &rc, err)) < 0 ||
				             (r = qcow2_check_overlap(s, host, s->cs, err)) < 0))
					break;
				if (!host || rc > l2_rc) {
					/* A fresh cluster; a shared one is let go below. */
					if (host)
						drops[ndrops++] = host;
					if ((r = qcow2_alloc_clusters(s, 1, &host, err)) < 0)
						break;
					for (uint64_t c = 1; c < l2_rc && r == 0; c++)
						r = qcow2_update_refcount(s, host >> s->cluster_bits, 1, err);
					rc = l2_rc;
				}
				if (r == 0)
					r = blk_file_zero(s->b->file, host, s->cs, false, err);
				qcow2_put_be64(p, host | (l1s[k].active && rc == 1 ? QCOW2_OFLAG_COPIED : 0));
				changed = true;
			}
			if (r < 0 || !changed)
				continue;
			/* Zeros and refcounts first, then the table that maps them. */
			if ((r = qcow2_cache_write(s->rbc, err)) < 0 ||
			    (r = blk_file_flush(s->b->file, err)) < 0 ||
			    (r = blk_file_pwrite(s->b->file, l2_off, l2, s->cs, err)) < 0 ||
			    (r = blk_file_flush(s->b->file, err)) < 0)
				break;
			for (size_t d = 0; d < ndrops && r == 0; d++)
				for (uint64_t c = 0; c < l2_rc && r == 0; c++)
					r = qcow2_update_refcount(s, drops[d] >> s->cluster_bits, -1, err);
		}
	}
	qcow2_cache_forget_all(s->l2c);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
	free(l1);
	free(l2);
	free(drops);
	return r;
}

/* ---- version changes ---------------------------------------------------------------- */

/* v3 requires snapshots to carry the 64-bit VM state size and the disk size (extra
 * data of 16 bytes and more). When some do not, the table is written anew (qemu's
 * qcow2_upgrade does the same) in free clusters, and the header switches version and
 * table in one write; the old table is freed after it (a crash leaks one of the two). */
static int upgrade(struct qcow2 *s, struct vt_error *err)
{
	struct qcow2_hdr_edit e = { .version = 3, .compression_type = -1, .refcount_order = -1 };
	uint8_t *buf = NULL;
	uint64_t len = 0, off = 0, clusters = 0;
	bool rewrite = false;
	int r;

	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		rewrite |= s->snapshots[i].extra_size < 16;
	if (rewrite) {
		if ((r = qcow2_snapshots_encode(s, s->snapshots, s->nb_snapshots, &buf, &len,
		                                err)) < 0)
			return r;
		clusters = (len + s->cs - 1) / s->cs;
		if ((r = qcow2_alloc_clusters(s, clusters, &off, err)) < 0 ||
		    (r = blk_file_pwrite(s->b->file, off, buf, clusters * s->cs, err)) < 0 ||
		    (r = qcow2_flush_metadata(s, err)) < 0)
			goto out;
		e.set_snapshots = true;
		e.nb_snapshots = s->nb_snapshots;
		e.snapshots_offset = off;
	}
	if ((r = qcow2_edit_header(s, &e, err)) < 0 || !rewrite)
		goto out;
	uint64_t old_off = s->snapshots_offset, old_len = s->snapshots_size;
	s->snapshots_offset = off;
	s->snapshots_size = len;
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		if (s->snapshots[i].extra_size < 24)
			s->snapshots[i].extra_size = 24;
	qcow2_meta_changed(s);
	if (old_len)
		r = qcow2_free_later(s, old_off, old_len, err);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
out:
	free(buf);
	return r;
}

static int mark_clean(struct qcow2 *s, struct vt_error *err)
{
	int r = qcow2_flush_metadata(s, err);
	if (r < 0 || !(s->incompat & QCOW2_INCOMPAT_DIRTY))
		return r;
	s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
	if ((r = qcow2_write_be64_field(s, QCOW2_OFF_INCOMPAT, s->incompat, err)) < 0)
		return r;
	return blk_file_flush(s->b->file, err);
}

static int downgrade(struct qcow2 *s, struct progress *pr, struct vt_error *err)
{
	struct l1ref *l1s = NULL;
	size_t n = 0;
	bool compressed;
	int r;

	if (s->refcount_order != 4)
		return FAIL(ENOTSUP, "compat=0.10 requires refcount_bits=16");
	if ((r = list_l1s(s, &l1s, &n, err)) < 0)
		return r;
	for (size_t k = 1; k < n; k++) {
		if (l1s[k].vm_state_size > UINT32_MAX || l1s[k].disk_size != s->b->size) {
			free(l1s);
			return FAIL(ENOTSUP, "Internal snapshots prevent downgrade of image");
		}
	}
	if ((r = mark_clean(s, err)) < 0)
		goto out;
	if (s->incompat & ~QCOW2_INCOMPAT_COMPRESS) {
		r = FAIL(ENOTSUP, "Cannot downgrade an image with incompatible features 0x%" PRIx64
		         " set", (uint64_t)(s->incompat & ~QCOW2_INCOMPAT_COMPRESS));
		goto out;
	}
	if ((r = expand_zero_clusters(s, l1s, n, err)) < 0)
		goto out;
	step(pr);
	if (s->incompat & QCOW2_INCOMPAT_COMPRESS) {
		if ((r = has_compressed(s, l1s, n, &compressed, err)) < 0)
			goto out;
		if (compressed) {
			r = FAIL(ENOTSUP, "Cannot downgrade an image with zstd compression type and "
			         "existing compressed clusters");
			goto out;
		}
	}
	struct qcow2_hdr_edit e = { .version = 2, .compression_type = -1, .refcount_order = -1 };
	if ((r = qcow2_edit_header(s, &e, err)) == 0)
		s->lazy_refcounts = false;
out:
	free(l1s);
	return r;
}

/* ---- refcount width ------------------------------------------------------------------ */

static void put_rc(uint8_t *block, uint64_t k, unsigned bits, uint64_t v)
{
	if (bits < 8) {
		block[k * bits / 8] |= (uint8_t)(v << ((k * bits) % 8));
		return;
	}
	for (unsigned q = 0; q < bits / 8; q++)
		block[k * (bits / 8) + q] = (uint8_t)(v >> (8 * (bits / 8 - 1 - q)));
}

/* The highest cluster with a non-zero refcount, plus one (refcount blocks may count
 * clusters past the end of the file: a compressed stream's tail). */
static int clusters_in_use(struct qcow2 *s, uint64_t *end, struct vt_error *err)
{
	uint64_t rc;
	int r;
	uint64_t c = s->rt_entries * s->rb_entries;
	while (c > 0) {
		uint64_t idx = (c - 1) / s->rb_entries;
		if (!s->rt[idx]) {
			c = idx * s->rb_entries;
			continue;
		}
		if ((r = qcow2_get_refcount(s, c - 1, &rc, err)) < 0)
			return r;
		if (rc)
			break;
		c--;
	}
	*end = c;
	return 0;
}

/* A new refcount structure of the new width, in free space, counting everything the old
 * one counts (itself included, since it is allocated through the old one); then the
 * header switches width and table in one write; then the old blocks and table go. */
static int change_refcount_order(struct qcow2 *s, unsigned order, struct progress *pr,
                                 struct vt_error *err)
{
	unsigned bits = 1u << order;
	uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
	uint64_t rbe = s->cs * 8 / bits, per_table = s->cs / 8;
	uint64_t end, rc, area = 0, nblocks = 0, tclusters = 0, want;
	uint8_t *blocks = NULL, *table = NULL;
	int r;

	if ((r = qcow2_arena_release(s, err)) < 0 || (r = qcow2_flush_metadata(s, err)) < 0 ||
	    (r = clusters_in_use(s, &end, err)) < 0)
		return r;
	for (uint64_t c = 0; c < end; c++) {
		if ((r = qcow2_get_refcount(s, c, &rc, err)) < 0)
			return r;
		if (rc > max)
			return FAIL(EINVAL, "Cannot decrease refcount entry width to %u bits: Cluster "
			            "at offset %#" PRIx64 " has a refcount of %" PRIu64, bits,
			            c << s->cluster_bits, rc);
	}
	/* Room for the blocks and the table; what the allocation itself adds (its clusters,
	 * maybe an old-width block) may need a bigger area: try again. */
	for (want = 0;;) {
		if ((r = clusters_in_use(s, &end, err)) < 0)
			return r;
		nblocks = (end + rbe - 1) / rbe;
		tclusters = (nblocks + per_table - 1) / per_table;
		if (area && nblocks + tclusters <= want)
			break;
		if (area && (r = qcow2_free_range(s, area, want * s->cs, err)) < 0)
			return r;
		want = nblocks + tclusters + 1;
		if (tclusters * s->cs > QCOW2_MAX_REFTABLE_BYTES)
			return FAIL(EFBIG, "Reference count table too large");
		if ((r = qcow2_alloc_clusters(s, want, &area, err)) < 0)
			return r;
	}
	step(pr);
	/* The new blocks, from the old counts (the area included: it is in use). */
	if (!(blocks = qcow2_alloc_buf(nblocks * s->cs)) ||
	    !(table = qcow2_alloc_buf(tclusters * s->cs))) {
		r = FAIL(ENOMEM, NULL);
		goto out;
	}
	memset(blocks, 0, nblocks * s->cs);
	memset(table, 0, tclusters * s->cs);
	for (uint64_t c = 0; c < end; c++) {
		if ((r = qcow2_get_refcount(s, c, &rc, err)) < 0)
			goto out;
		if (rc)
			put_rc(blocks + (c / rbe) * s->cs, c % rbe, bits, rc);
	}
	uint64_t table_off = area + nblocks * s->cs;
	for (uint64_t j = 0; j < nblocks; j++)
		qcow2_put_be64(table + j * 8, area + j * s->cs);
	if ((r = blk_file_pwrite(s->b->file, area, blocks, nblocks * s->cs, err)) < 0 ||
	    (r = blk_file_pwrite(s->b->file, table_off, table, tclusters * s->cs, err)) < 0 ||
	    (r = qcow2_cache_write(s->rbc, err)) < 0 || (r = blk_file_flush(s->b->file, err)) < 0)
		goto out;
	/* The switch: width and table together, one write of header bytes 48..99. */
	struct qcow2_hdr_edit e = { .compression_type = -1, .refcount_order = (int)order,
	                            .set_reftable = true, .rt_offset = table_off,
	                            .rt_clusters = (uint32_t)tclusters };
	if ((r = qcow2_edit_header(s, &e, err)) < 0)
		goto out;
	step(pr);

	uint64_t *rt = calloc(tclusters * per_table, 8);
	if (!rt) {
		/* The image is right on disk; this handle cannot go on. */
		s->b->writable = false;
		r = FAIL(ENOMEM, NULL);
		goto out;
	}
	uint64_t old_rt = s->rt_offset, old_rt_clusters = s->rt_clusters, *old = s->rt;
	uint64_t old_entries = s->rt_entries;
	for (uint64_t j = 0; j < nblocks; j++)
		rt[j] = area + j * s->cs;
	qcow2_cache_forget_all(s->rbc);
	s->rt = rt;
	s->rt_offset = table_off;
	s->rt_clusters = (uint32_t)tclusters;
	s->rt_entries = tclusters * per_table;
	s->refcount_order = order;
	s->refcount_bits = bits;
	s->refcount_max = max;
	s->rb_entries = rbe;
	s->free_hint = 0;
	qcow2_meta_changed(s);
	/* The old structure is referenced by nothing now: its clusters are free. */
	r = qcow2_free_later(s, old_rt, old_rt_clusters * s->cs, err);
	for (uint64_t i = 0; i < old_entries && r == 0; i++) {
		uint64_t boff = old[i] & QCOW2_REFT_OFFSET_MASK;
		if (boff && !(old[i] & ~QCOW2_REFT_OFFSET_MASK) && !(boff % s->cs))
			r = qcow2_free_later(s, boff, s->cs, err);
	}
	free(old);
	/* Unused clusters at the end of the area (it was sized with a margin). */
	uint64_t used_end = table_off + tclusters * s->cs, area_end = area + want * s->cs;
	if (r == 0 && used_end < area_end)
		r = qcow2_free_range(s, used_end, area_end - used_end, err);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
out:
	free(blocks);
	free(table);
	return r;
}

/* ---- the options ------------------------------------------------------------------- */

static int get_number(const struct blk_optlist *opts, const char *key, uint64_t *v,
                      struct vt_error *err)
{
	return blk_opts_get_size(opts, key, v, err);
}

int qcow2_amend(struct blk *b, const struct blk_optlist *opts, bool force,
                void (*progress)(void *opaque, uint64_t done, uint64_t total), void *opaque,
                struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	int version = s->version;
	bool lazy = s->compat & QCOW2_COMPAT_LAZY;
	uint64_t bits = s->refcount_bits, size = 0;
	bool size_given = false;
	const char *v;
	int r;

	(void)force; /* for LUKS key slots, which vtool cannot open */
	for (int i = 0; i < opts->n; i++) {
		const char *key = opts->items[i].key;
		if (!strncmp(key, "encrypt.", 8))
			return FAIL(EINVAL, "Can't amend encryption options - encryption not present");
	}
	if ((v = blk_opts_get(opts, "compat"))) {
		if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
			version = 2;
		else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
			version = 3;
		else
			return FAIL(EINVAL, "Unknown compatibility level %s", v);
	}
	if ((r = blk_opts_get_size(opts, "size", &size, err)) < 0)
		return r;
	size_given = r == 0;
	if ((r = blk_opts_get_bool(opts, "lazy_refcounts", &lazy, err)) < 0)
		return r;
	if ((r = get_number(opts, "refcount_bits", &bits, err)) < 0)
		return r;
	if (bits == 0 || bits > 64 || (bits & (bits - 1)))
		return FAIL(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
	if (blk_opts_get(opts, "data_file"))
		return FAIL(EINVAL, "data-file can only be set for images that use an external "
		            "data file");
	bool raw = false;
	if ((r = blk_opts_get_bool(opts, "data_file_raw", &raw, err)) < 0)
		return r;
	if (raw)
		return FAIL(EINVAL, "data-file-raw cannot be set on existing images");
	/* qemu 7.2 changes the backing file only through rebase. */
	const char *bf = blk_opts_get(opts, "backing_file"), *bfmt = blk_opts_get(opts, "backing_fmt");
	if ((bf && strcmp(bf, b->backing_file)) || (bfmt && strcmp(bfmt, b->backing_format)) ||
	    ((bf || bfmt) && !b->backing_file[0]))
		return FAIL(EINVAL, "Cannot amend the backing file\nYou can use 'vtool img rebase' "
		            "instead.");

	unsigned order = 0;
	while ((1u << order) < bits)
		order++;
	struct progress pr = { progress, opaque, 0,
	                       (uint64_t)(version != s->version) * 2 +
	                       (uint64_t)(order != s->refcount_order) * 2 + 1 };
	pthread_mutex_lock(&s->lock);
	r = qcow2_arena_release(s, err);
	if (r == 0)
		r = qcow2_flush_metadata(s, err);
	/* Upgrade first: some features need v3. */
	if (r == 0 && version > s->version) {
		r = upgrade(s, err);
		step(&pr);
		step(&pr);
	}
	if (r == 0 && order != s->refcount_order) {
		if (version < 3 && bits != 16)
			r = FAIL(EINVAL, "Refcount widths other than 16 bits require compatibility "
			         "level 1.1 or above (use compat=1.1 or greater)");
		else
			r = change_refcount_order(s, order, &pr, err);
	}
	if (r == 0 && lazy != (bool)(s->compat & QCOW2_COMPAT_LAZY)) {
		if (lazy && version < 3) {
			r = FAIL(EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
			         "and above (use compat=1.1 or greater)");
		} else if (r == 0 && (lazy || (r = mark_clean(s, err)) == 0)) {
			struct qcow2_hdr_edit e = {
				.features = true, .incompat = s->incompat, .autoclear = s->autoclear,
				.compat = lazy ? s->compat | QCOW2_COMPAT_LAZY : s->compat & ~QCOW2_COMPAT_LAZY,
				.compression_type = -1, .refcount_order = -1,
			};
			if ((r = qcow2_edit_header(s, &e, err)) == 0)
				s->lazy_refcounts = lazy;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (r == 0 && size_given && size != b->size)
		r = blk_truncate(b, size, err);
	/* Downgrade last, once nothing needs v3 any more. */
	if (r == 0 && version < s->version) {
		pthread_mutex_lock(&s->lock);
		r = downgrade(s, &pr, err);
		pthread_mutex_unlock(&s->lock);
	}
	if (r == 0 && progress)
		progress(opaque, pr.total, pr.total);
	return r;
}
