/* The QED driver: header validation (qemu's rules and words), open with the need-check
 * repair, create, info, resize, and the vtable blk.c dispatches to. Format and locking
 * notes: blk/qed.h. */
#include "blk/qed.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR(field) offsetof(struct qed_disk_header, field)

static bool cluster_size_ok(uint32_t cs)
{
	return cs >= QED_MIN_CLUSTER_SIZE && cs <= QED_MAX_CLUSTER_SIZE && !(cs & (cs - 1));
}

static bool table_size_ok(uint32_t ts)
{
	return ts >= 1 && ts <= QED_MAX_TABLE_SIZE && !(ts & (ts - 1));
}

/* qemu's limit, including its 64-bit wrap-around: for the largest geometries the product
 * wraps to 0 and only an empty disk is valid. */
static uint64_t max_image_size(uint32_t cs, uint32_t ts)
{
	uint64_t entries = (uint64_t)(uint32_t)(cs * ts) / 8;
	return entries * cs * entries;
}

static bool image_size_ok(uint64_t size, uint32_t cs, uint32_t ts)
{
	return size % 512 == 0 && size <= max_image_size(cs, ts);
}

bool qed_cluster_offset_ok(const struct qed *s, uint64_t off)
{
	return !(off & (s->cluster_size - 1)) &&
	       off >= (uint64_t)s->header_size * s->cluster_size && off < s->alloc_end;
}

bool qed_table_offset_ok(const struct qed *s, uint64_t off)
{
	uint64_t last = off + (uint64_t)(s->table_size - 1) * s->cluster_size;
	/* As in qemu, "last <= off" also refuses every table of a single cluster. */
	return last > off && qed_cluster_offset_ok(s, off) && qed_cluster_offset_ok(s, last);
}

int qed_write_header_u64(struct qed *s, uint64_t field_offset, uint64_t v,
                         struct vt_error *err)
{
	uint8_t buf[8];
	fmt_put_le64(buf, v);
	return blk_file_pwrite(s->b->file, field_offset, buf, sizeof(buf), err);
}

int qed_note_l2_table(struct qed *s, uint64_t off)
{
	if (s->n_l2_tables == s->cap_l2_tables) {
		size_t cap = s->cap_l2_tables ? 2 * s->cap_l2_tables : 64;
		uint64_t *t = realloc(s->l2_tables, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		s->l2_tables = t;
		s->cap_l2_tables = cap;
	}
	size_t i = s->n_l2_tables;
	while (i > 0 && s->l2_tables[i - 1] > off) {
		s->l2_tables[i] = s->l2_tables[i - 1];
		i--;
	}
	s->l2_tables[i] = off;
	s->n_l2_tables++;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The L2 tables the L1 table names (valid offsets only), sorted; and, for writing, a
 * reason to refuse when tables overlap each other or the L1 table. */
static int collect_l2_tables(struct qed *s)
{
	for (uint64_t i = 0; i < s->table_nelems; i++) {
		uint64_t off = s->l1[i];
		if (!off || !qed_table_offset_ok(s, off))
			continue;
		if (s->n_l2_tables == s->cap_l2_tables) {
			size_t cap = s->cap_l2_tables ? 2 * s->cap_l2_tables : 64;
			uint64_t *t = realloc(s->l2_tables, cap * sizeof(*t));
			if (!t)
				return -ENOMEM;
			s->l2_tables = t;
			s->cap_l2_tables = cap;
		}
		s->l2_tables[s->n_l2_tables++] = off;
	}
	if (s->n_l2_tables)
		qsort(s->l2_tables, s->n_l2_tables, sizeof(uint64_t), cmp_u64);
	for (size_t i = 0; i < s->n_l2_tables; i++) {
		uint64_t t = s->l2_tables[i];
		if (i + 1 < s->n_l2_tables && s->l2_tables[i + 1] < t + s->table_bytes)
			s->no_write = "two L2 tables overlap";
		if (t < s->l1_offset + s->table_bytes && s->l1_offset < t + s->table_bytes)
			s->no_write = "an L2 table overlaps the L1 table";
	}
	return 0;
}

static void qed_close(struct blk *b)
{
	struct qed *s = b->opaque;
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->inflight.done);
	free(s->l1);
	free(s->l2_tables);
	free(s->cache);
	free(s);
	b->opaque = NULL;
}

/* Header checks in qemu's order, with its words. */
static int parse_header(struct blk *b, struct qed *s, const uint8_t *h, struct vt_error *err)
{
	const char *fn = b->filename;
	uint64_t flen;
	int r;

	if (fmt_le32(h + HDR(magic)) != QED_MAGIC)
		return vt_error_set(err, EINVAL, fn, "open", "Image not in QED format");
	s->cluster_size = fmt_le32(h + HDR(cluster_size));
	s->table_size = fmt_le32(h + HDR(table_size));
	s->header_size = fmt_le32(h + HDR(header_size));
	s->features = fmt_le64(h + HDR(features));
	s->autoclear = fmt_le64(h + HDR(autoclear_features));
	s->l1_offset = fmt_le64(h + HDR(l1_table_offset));
	s->image_size = fmt_le64(h + HDR(image_size));
	if (s->features & ~QED_FEATURE_MASK)
		return vt_error_set(err, ENOTSUP, fn, "open", "Unsupported QED features: %" PRIx64,
		                    s->features & ~QED_FEATURE_MASK);
	if (!cluster_size_ok(s->cluster_size))
		return vt_error_set(err, EINVAL, fn, "open", "QED cluster size is invalid");
	if ((r = blk_file_size(b->file, &flen, err)) < 0)
		return r;
	s->file_len = s->zero_from = flen;
	/* qemu sees the file in whole sectors (its length rounded up), then whole clusters. */
	s->alloc_end = ((flen + 511) & ~511ull) & ~(uint64_t)(s->cluster_size - 1);
	if (!table_size_ok(s->table_size))
		return vt_error_set(err, EINVAL, fn, "open", "QED table size is invalid");
	if (!image_size_ok(s->image_size, s->cluster_size, s->table_size))
		return vt_error_set(err, EINVAL, fn, "open", "QED image size is invalid");
	if (!qed_table_offset_ok(s, s->l1_offset))
		return vt_error_set(err, EINVAL, fn, "open", "QED table offset is invalid");
	s->cluster_bits = (unsigned)__builtin_ctz(s->cluster_size);
	s->table_bytes = (uint64_t)s->cluster_size * s->table_size;
	s->table_nelems = s->table_bytes / 8;
	s->l1_shift = s->cluster_bits + (unsigned)__builtin_ctzll(s->table_nelems);
	if (s->header_size > UINT32_MAX / s->cluster_size)
		return vt_error_set(err, EINVAL, fn, "open", "QED header size is too large");
	if (s->features & QED_F_BACKING_FILE) {
		uint32_t boff = fmt_le32(h + HDR(backing_filename_offset));
		uint32_t blen = fmt_le32(h + HDR(backing_filename_size));
		if ((uint64_t)boff + blen > (uint64_t)s->cluster_size * s->header_size)
			return vt_error_set(err, EINVAL, fn, "open",
			                    "QED backing filename offset is invalid");
		if (blen >= 4096) /* qemu's PATH_MAX buffer */
			return vt_error_set(err, EINVAL, fn, "open", "Failed to read backing filename");
		if (blen >= sizeof(b->backing_file))
			return vt_error_set(err, ENAMETOOLONG, fn, "open", "the backing file name "
			                    "(%" PRIu32 " bytes) is longer than vtool supports", blen);
		if (blen && (r = blk_file_pread(b->file, boff, b->backing_file, blen, err)) < 0)
			return r;
		b->backing_file[blen] = '\0';
		if (s->features & QED_F_BACKING_FORMAT_NO_PROBE)
			snprintf(b->backing_format, sizeof(b->backing_format), "raw");
	}
	return 0;
}

static int qed_open(struct blk *b, const struct blk_open_opts *o, struct vt_error *err)
{
	struct qed *s = calloc(1, sizeof(*s));
	uint8_t h[sizeof(struct qed_disk_header)];
	int r;

	if (!s)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	s->b = b;
	b->opaque = s;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->inflight.done, NULL);
	if ((r = blk_file_pread(b->file, 0, h, sizeof(h), err)) < 0 ||
	    (r = parse_header(b, s, h, err)) < 0)
		goto fail;
	if (s->autoclear && b->writable) {
		/* We know no autoclear feature: knock them all out, as the format asks. */
		s->autoclear = 0;
		if ((r = qed_write_header_u64(s, HDR(autoclear_features), 0, err)) < 0 ||
		    (r = blk_file_flush(b->file, err)) < 0)
			goto fail;
	}
	if (s->table_bytes > QED_MAX_TABLE_BYTES) {
		r = vt_error_set(err, ENOTSUP, b->filename, "open", "QED tables of %" PRIu64
		                 " bytes are larger than vtool supports", s->table_bytes);
		goto fail;
	}
	uint8_t *raw = malloc(s->table_bytes);
	s->l1 = malloc(s->table_bytes);
	s->cache = calloc(QED_L2_CACHE_PAGES, sizeof(*s->cache));
	if (!raw || !s->l1 || !s->cache) {
		free(raw);
		r = vt_error_set(err, ENOMEM, b->filename, "open", NULL);
		goto fail;
	}
	r = blk_file_pread(b->file, s->l1_offset, raw, s->table_bytes, err);
	for (uint64_t i = 0; r == 0 && i < s->table_nelems; i++)
		s->l1[i] = fmt_le64(raw + i * 8);
	free(raw);
	if (r < 0)
		goto fail;
	if ((s->features & QED_F_NEED_CHECK) && b->writable && !b->repair) {
		/* Not closed cleanly: qemu repairs the image before writing to it. */
		struct blk_check res = { 0 };
		struct vt_error inner = { 0 };
		if (qed_check_locked(s, true, &res, &inner) < 0) {
			r = vt_error_set(err, inner.code ? inner.code : EIO, b->filename, "open",
			                 "Image corrupted");
			goto fail;
		}
	}
	if (collect_l2_tables(s) < 0) {
		r = vt_error_set(err, ENOMEM, b->filename, "open", NULL);
		goto fail;
	}
	if (b->writable && !b->repair && s->no_write) {
		r = vt_error_set(err, EINVAL, b->filename, "open", "cannot write this QED image "
		                 "safely: %s (vtool img check shows it)", s->no_write);
		goto fail;
	}
	b->size = s->image_size;
	return 0;
fail:
	qed_close(b);
	return r;
}

static int qed_get_info(struct blk *b, struct blk_info *info, struct vt_error *err)
{
	struct qed *s = b->opaque;
	/* qemu-img 7.2 reports "dirty-flag": false for QED images even when they are marked
	 * "needs check" (measured); vtool prints what qemu prints. */
	info->cluster_size = s->cluster_size;
	return 0;
}

static uint32_t qed_cluster_size(struct blk *b)
{
	return ((struct qed *)b->opaque)->cluster_size;
}

/* Grow only, as qemu does. */
static int qed_truncate(struct blk *b, uint64_t size, struct vt_error *err)
{
	struct qed *s = b->opaque;
	if (!image_size_ok(size, s->cluster_size, s->table_size))
		return vt_error_set(err, EINVAL, b->filename, "resize", "Invalid image size specified");
	if (size < s->image_size)
		return vt_error_set(err, ENOTSUP, b->filename, "resize",
		                    "Shrinking images is currently not supported");
	pthread_mutex_lock(&s->lock);
	int r = qed_write_header_u64(s, HDR(image_size), size, err);
	if (r == 0) {
		s->image_size = size;
		b->size = size;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* qemu lists them in this order. */
static const struct blk_optdesc qed_create_opts[] = {
	{ "backing_file", BLK_OPT_STRING, "File name of a base image" },
	{ "backing_fmt", BLK_OPT_STRING, "Image format of the base image" },
	{ "cluster_size", BLK_OPT_SIZE, "Cluster size (in bytes)" },
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ "table_size", BLK_OPT_SIZE, "L1/L2 table size (in clusters)" },
	{ NULL, 0, NULL },
};

static int qed_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                      const struct blk_optlist *opts, char **formatting, struct vt_error *err)
{
	uint64_t cs = QED_DEFAULT_CLUSTER_SIZE, ts = QED_DEFAULT_TABLE_SIZE;
	bool ts_given;
	int r;

	if ((r = blk_opts_get_size(opts, "cluster_size", &cs, err)) < 0 ||
	    (r = blk_opts_get_size(opts, "table_size", &ts, err)) < 0)
		return r;
	ts_given = r == 0;
	uint64_t size = (o->size + 511) & ~511ull;
	if (cs > UINT32_MAX || !cluster_size_ok((uint32_t)cs))
		return vt_error_set(err, EINVAL, filename, "create", "QED cluster size must be "
		                    "within range [%u, %u] and power of 2", QED_MIN_CLUSTER_SIZE,
		                    QED_MAX_CLUSTER_SIZE);
	if (ts > UINT32_MAX || !table_size_ok((uint32_t)ts))
		return vt_error_set(err, EINVAL, filename, "create", "QED table size must be "
		                    "within range [1, %u] and power of 2", QED_MAX_TABLE_SIZE);
	if (!image_size_ok(size, (uint32_t)cs, (uint32_t)ts))
		return vt_error_set(err, EINVAL, filename, "create", "QED image size must be a "
		                    "non-zero multiple of cluster size and less than %" PRIu64
		                    " bytes", max_image_size((uint32_t)cs, (uint32_t)ts));
	size_t blen = o->backing_file ? strlen(o->backing_file) : 0;
	if (o->backing_file && (sizeof(struct qed_disk_header) + blen > cs || blen >= 1024))
		return vt_error_set(err, EINVAL, filename, "create", "Backing file name too long");
	/* The header cluster, then a zeroed L1 table (written, as qemu writes it). */
	uint64_t l1_bytes = cs * ts;
	uint8_t *buf = calloc(1, cs + l1_bytes);
	if (!buf)
		return vt_error_set(err, ENOMEM, filename, "create", NULL);
	uint64_t features = 0;
	if (o->backing_file) {
		features |= QED_F_BACKING_FILE;
		if (o->backing_format && !strcmp(o->backing_format, "raw"))
			features |= QED_F_BACKING_FORMAT_NO_PROBE;
		memcpy(buf + sizeof(struct qed_disk_header), o->backing_file, blen);
	}
	fmt_put_le32(buf + HDR(magic), QED_MAGIC);
	fmt_put_le32(buf + HDR(cluster_size), (uint32_t)cs);
	fmt_put_le32(buf + HDR(table_size), (uint32_t)ts);
	fmt_put_le32(buf + HDR(header_size), 1);
	fmt_put_le64(buf + HDR(features), features);
	fmt_put_le64(buf + HDR(l1_table_offset), cs);
	fmt_put_le64(buf + HDR(image_size), size);
	if (o->backing_file) {
		fmt_put_le32(buf + HDR(backing_filename_offset), sizeof(struct qed_disk_header));
		fmt_put_le32(buf + HDR(backing_filename_size), (uint32_t)blen);
	}
	/* qemu writes the header and name, then the L1 table: the header cluster is only as
	 * long as what it holds. */
	r = blk_file_pwrite(f, 0, buf, sizeof(struct qed_disk_header) + blen, err);
	if (r == 0)
		r = blk_file_pwrite(f, cs, buf + cs, l1_bytes, err);
	free(buf);
	if (r == 0 && formatting) {
		char line[1400];
		int n = snprintf(line, sizeof(line), "fmt=qed size=%" PRIu64, o->size);
		if (o->backing_file)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " backing_file=%s backing_fmt=%s",
			              o->backing_file, o->backing_format);
		n += snprintf(line + n, sizeof(line) - (size_t)n, " cluster_size=%" PRIu64, cs);
		if (ts_given)
			snprintf(line + n, sizeof(line) - (size_t)n, " table_size=%" PRIu64, ts);
		if (!(*formatting = strdup(line)))
			r = vt_error_set(err, ENOMEM, filename, "create", NULL);
	}
	return r;
}

const struct blk_driver blk_driver_qed = {
	.name = "qed",
	.open = qed_open,
	.close = qed_close,
	.preadv = qed_preadv,
	.pwritev = qed_pwritev,
	.flush = qed_flush,
	.write_zeroes = qed_write_zeroes,
	.cluster_size = qed_cluster_size,
	.block_status = qed_block_status,
	.get_info = qed_get_info,
	.truncate = qed_truncate,
	.create = qed_create,
	.check = qed_check,
	.create_opts = qed_create_opts,
	.supports_backing = true,
};
