/* qcow2 header: parsing and validating an untrusted header (specs/qcow2.md §2-4, §16),
 * in-place field updates, and image creation. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...) vt_error_set(err, EINVAL, s->b->filename, "open", __VA_ARGS__)

int qcow2_write_be64_field(struct qcow2 *s, uint64_t off, uint64_t v, struct vt_error *err)
{
	uint8_t buf[8];
	qcow2_put_be64(buf, v);
	return blk_file_pwrite(s->b->file, off, buf, 8, err);
}

int qcow2_signal_corruption(struct qcow2 *s, struct vt_error *err, const char *fmt, ...)
{
	char why[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (s->b->writable && !(s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
		/* Stop further writes from making it worse, as qemu does. */
		s->incompat |= QCOW2_INCOMPAT_CORRUPT;
		if (s->version >= 3)
			qcow2_write_be64_field(s, QCOW2_OFF_INCOMPAT, s->incompat, NULL);
		s->b->writable = false;
		return vt_error_set(err, EIO, s->b->filename, "Marking image as corrupt", "%s",
		                    why);
	}
	return vt_error_set(err, EIO, s->b->filename, "Image is corrupt", "%s", why);
}

static int parse_extensions(struct qcow2 *s, const uint8_t *c0, uint64_t start, uint64_t end,
                            struct vt_error *err)
{
	uint64_t off = start;

	while (off + 8 <= end) {
		uint32_t type = qcow2_be32(c0 + off);
		uint32_t len = qcow2_be32(c0 + off + 4);
		if (type == QCOW2_EXT_END)
			return 0;
		if (len > end - off - 8)
			return BAD("Header extension too large");
		const uint8_t *data = c0 + off + 8;
		switch (type) {
		case QCOW2_EXT_BACKING_FMT:
			if (len >= sizeof(s->b->backing_format) || len >= 16)
				return BAD("ERROR: ext_backing_format: len=%u too large (>=16)", len);
			memcpy(s->b->backing_format, data, len);
			s->b->backing_format[len] = '\0';
			break;
		case QCOW2_EXT_CRYPTO:
			if (len != 16)
				return BAD("CRYPTO header extension size %u, but expected size 16", len);
			s->crypto_off = qcow2_be64(data);
			s->crypto_len = qcow2_be64(data + 8);
			s->has_crypto_ext = true;
			if (s->crypto_off % s->cs)
				return BAD("Invalid header extension: CRYPTO header offset '%#llx' is not a "
				           "multiple of cluster size '%llu'",
				           (unsigned long long)s->crypto_off, (unsigned long long)s->cs);
			break;
		case QCOW2_EXT_BITMAPS:
			if (len != 24)
				return BAD("bitmaps_ext: Invalid extension length");
			/* qemu loads them only while the autoclear bit says they are valid
			 * (a v2 image cannot have that bit). */
			if (!(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) || s->version < 3)
				break;
			if (qcow2_be32(data + 4))
				return BAD("bitmaps_ext: Reserved field is not zero");
			s->bm_nb = qcow2_be32(data);
			s->bm_dir_size = qcow2_be64(data + 8);
			s->bm_dir_offset = qcow2_be64(data + 16);
			if (s->bm_nb > QCOW2_MAX_BITMAPS)
				return BAD("bitmaps_ext: Image has %" PRIu32 " bitmaps, exceeding the QEMU "
				           "supported maximum of %d", s->bm_nb, QCOW2_MAX_BITMAPS);
			if (s->bm_nb == 0)
				return BAD("found bitmaps extension with zero bitmaps");
			if (s->bm_dir_offset % s->cs)
				return BAD("bitmaps_ext: invalid bitmap directory offset");
			if (s->bm_dir_size > QCOW2_MAX_BITMAP_DIR)
				return BAD("bitmaps_ext: bitmap directory size (%" PRIu64 ") exceeds the "
				           "maximum supported size (%d)", s->bm_dir_size,
				           QCOW2_MAX_BITMAP_DIR);
			s->has_bitmaps = true;
			break;
		default:
			break; /* feature table, bitmaps, unknown: not needed to read the disk */
		}
		off += 8 + (((uint64_t)len + 7) & ~7ull);
	}
	return 0;
}

/* Known incompatible feature names for the error message (qemu's wording). */
static void unsupported_features(uint64_t bits, char *buf, size_t len)
{
	snprintf(buf, len, "Unsupported qcow2 feature(s): Unknown incompatible feature: %llx",
	         (unsigned long long)bits);
}

int qcow2_read_header(struct qcow2 *s, struct vt_error *err)
{
	uint8_t h[112];
	int r = blk_file_pread(s->b->file, 0, h, sizeof(h), err);
	if (r < 0)
		return r;
	if (qcow2_be32(h) != QCOW2_MAGIC)
		return BAD("Image is not in qcow2 format");
	s->version = (int)qcow2_be32(h + 4);
	if (s->version != 2 && s->version != 3)
		return BAD("Unsupported qcow2 version %d", s->version);
	uint64_t backing_off = qcow2_be64(h + 8);
	uint32_t backing_len = qcow2_be32(h + 16);
	s->cluster_bits = qcow2_be32(h + 20);
	if (s->cluster_bits < 9 || s->cluster_bits > 21)
		return BAD("Unsupported cluster size: 2^%u", s->cluster_bits);
	s->cs = 1ull << s->cluster_bits;
	s->b->size = qcow2_be64(h + 24);
	uint32_t crypt = qcow2_be32(h + 32);
	s->l1_size = qcow2_be32(h + 36);
	s->l1_offset = qcow2_be64(h + 40);
	s->rt_offset = qcow2_be64(h + 48);
	s->rt_clusters = qcow2_be32(h + 56);
	s->nb_snapshots = qcow2_be32(h + 60);
	s->snapshots_offset = qcow2_be64(h + 64);

	if (s->version == 2) {
		s->incompat = s->compat = s->autoclear = 0;
		s->refcount_order = 4;
		s->header_length = 72;
		s->compression_type = 0;
	} else {
		s->incompat = qcow2_be64(h + 72);
		s->compat = qcow2_be64(h + 80);
		s->autoclear = qcow2_be64(h + 88);
		s->refcount_order = qcow2_be32(h + 96);
		s->header_length = qcow2_be32(h + 100);
		if (s->header_length < 104)
			return BAD("qcow2 header too short");
		if (s->header_length > s->cs)
			return BAD("qcow2 header exceeds cluster size");
		s->compression_type = s->header_length > 104 ? h[104] : 0;
	}
	if (s->incompat & ~QCOW2_INCOMPAT_MASK) {
		char msg[160];
		unsupported_features(s->incompat & ~QCOW2_INCOMPAT_MASK, msg, sizeof(msg));
		return BAD("%s", msg);
	}
	if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return BAD("external data files are not supported");
	if (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW)
		return BAD("data-file-raw requires a data file");
	if ((s->incompat & QCOW2_INCOMPAT_COMPRESS) && s->compression_type == 0)
		return BAD("Compression type incompatible feature bit must not be set");
	if (!(s->incompat & QCOW2_INCOMPAT_COMPRESS) && s->compression_type != 0)
		return BAD("Compression type incompatible feature bit must be set");
	if (s->compression_type > 1)
		return BAD("unknown compression type: %d", s->compression_type);
	if (s->refcount_order > 6)
		return BAD("Reference count entry width too large; may not exceed 64 bits");
	s->refcount_bits = 1u << s->refcount_order;
	s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
	s->rb_entries = s->cs * 8 / s->refcount_bits;
	if (crypt > 2)
		return BAD("Unsupported encryption method %u", crypt);
	s->crypt_method = crypt;

	s->extended_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
	if (s->extended_l2 && s->cluster_bits < 14)
		return BAD("Unsupported subcluster size: %llu",
		           (unsigned long long)(s->cs / 32));
	s->l2_entry_size = s->extended_l2 ? 16 : 8;
	s->l2_entries = s->cs / s->l2_entry_size;
	s->l2_bits = s->cluster_bits - (s->extended_l2 ? 4 : 3);
	s->csize_shift = 62 - (s->cluster_bits - 8);
	s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;

	if (s->rt_clusters == 0)
		return BAD("Image does not contain a reference count table");
	if ((uint64_t)s->rt_clusters * s->cs > QCOW2_MAX_REFTABLE_BYTES)
		return BAD("Reference count table too large");
	if (s->rt_offset % s->cs || s->rt_offset > INT64_MAX - (uint64_t)s->rt_clusters * s->cs)
		return BAD("Reference count table offset invalid");
	if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return BAD("Snapshot table too large");
	if (s->snapshots_offset % s->cs || s->snapshots_offset > INT64_MAX)
		return BAD("Snapshot table offset invalid");
	if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return BAD("Active L1 table too large");
	if (s->l1_offset % s->cs || s->l1_offset > INT64_MAX - (uint64_t)s->l1_size * 8)
		return BAD("Active L1 table offset invalid");
	uint64_t per_l1 = s->cs * s->l2_entries; /* bytes mapped by one L1 entry */
	uint64_t l1_needed = s->b->size / per_l1 + (s->b->size % per_l1 != 0);
	if (l1_needed > INT_MAX)
		return BAD("Image is too big");
	if (l1_needed > s->l1_size)
		return BAD("L1 table is too small");

	/* Cluster 0: extensions and the backing file name. */
	uint8_t *c0 = malloc(s->cs);
	if (!c0)
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	r = blk_file_pread(s->b->file, 0, c0, s->cs, err);
	uint64_t ext_end = s->cs;
	if (r == 0 && backing_off) {
		if (backing_off > s->cs)
			r = BAD("Invalid backing file offset");
		else if (backing_len > 1023 || backing_len > s->cs - backing_off)
			r = BAD("Backing file name too long");
		else {
			memcpy(s->b->backing_file, c0 + backing_off, backing_len);
			s->b->backing_file[backing_len] = '\0';
			if (strlen(s->b->backing_file) != backing_len)
				r = BAD("Backing file name contains a NUL byte");
			ext_end = backing_off;
		}
	}
	if (r == 0)
		r = parse_extensions(s, c0, s->version == 2 ? 72 : s->header_length, ext_end, err);
	free(c0);
	if (r == 0)
		r = qcow2_check_crypto_header(s, err);
	return r;
}

/* ---- creation -------------------------------------------------------------------- */

const struct blk_optdesc qcow2_create_opts[] = {
	{ "backing_file", BLK_OPT_STRING, "File name of a base image" },
	{ "backing_fmt", BLK_OPT_STRING, "Image format of the base image" },
	{ "cluster_size", BLK_OPT_SIZE, "qcow2 cluster size" },
	{ "compat", BLK_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])" },
	{ "compression_type", BLK_OPT_STRING,
	  "Compression method used for image cluster compression" },
	{ "data_file", BLK_OPT_STRING, "File name of an external data file" },
	{ "data_file_raw", BLK_OPT_BOOL,
	  "The external data file must stay valid as a raw image" },
	{ "encrypt.cipher-alg", BLK_OPT_STRING, "Name of encryption cipher algorithm" },
	{ "encrypt.cipher-mode", BLK_OPT_STRING, "Name of encryption cipher mode" },
	{ "encrypt.format", BLK_OPT_STRING, "Encrypt the image, format choices: 'aes', 'luks'" },
	{ "encrypt.hash-alg", BLK_OPT_STRING, "Name of encryption hash algorithm" },
	{ "encrypt.iter-time", BLK_OPT_NUMBER, "Time to spend in PBKDF in milliseconds" },
	{ "encrypt.ivgen-alg", BLK_OPT_STRING, "Name of IV generator algorithm" },
	{ "encrypt.ivgen-hash-alg", BLK_OPT_STRING, "Name of IV generator hash algorithm" },
	{ "encrypt.key-secret", BLK_OPT_STRING,
	  "ID of secret providing qcow AES key or LUKS passphrase" },
	{ "encryption", BLK_OPT_BOOL,
	  "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
	{ "extended_l2", BLK_OPT_BOOL, "Extended L2 tables" },
	{ "lazy_refcounts", BLK_OPT_BOOL, "Postpone refcount updates" },
	{ "preallocation", BLK_OPT_STRING,
	  "Preallocation mode (allowed values: off, metadata, falloc, full)" },
	{ "refcount_bits", BLK_OPT_NUMBER, "Width of a reference count entry in bits" },
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ NULL, 0, NULL },
};

struct create_params {
	int version;
	uint64_t cs;
	unsigned cluster_bits;
	unsigned refcount_order;
	int compression_type;
	bool extended_l2, lazy;
	const char *prealloc;
};

#define CBAD(...) vt_error_set(err, EINVAL, filename, "create", __VA_ARGS__)

static int create_params(const char *filename, const struct blk_create_opts *o,
                         const struct blk_optlist *opts, struct create_params *p,
                         struct vt_error *err)
{
	const char *v;
	uint64_t n;
	int r;

	*p = (struct create_params){ .version = 3, .cs = 65536, .refcount_order = 4 };
	if ((v = blk_opts_get(opts, "compat"))) {
		if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
			p->version = 2;
		else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
			p->version = 3;
		else
			return CBAD("Parameter 'compat' does not accept value '%s'", v);
	}
	if ((r = blk_opts_get_size(opts, "cluster_size", &n, err)) < 0)
		return r;
	if (r == 0) {
		if (n < 512 || n > (2u << 20) || (n & (n - 1)))
			return CBAD("Cluster size must be a power of two between 512 and 2048k");
		p->cs = n;
	}
	while ((1ull << p->cluster_bits) < p->cs)
		p->cluster_bits++;
	if ((r = blk_opts_get_size(opts, "refcount_bits", &n, err)) < 0)
		return r;
	if (r == 0) {
		if (n == 0 || n > 64 || (n & (n - 1)))
			return CBAD("Refcount width must be a power of two and may not exceed 64 bits");
		p->refcount_order = 0;
		while ((1ull << p->refcount_order) < n)
			p->refcount_order++;
		if (p->version < 3 && n != 16)
			return CBAD("Different refcount widths than 16 bits require compatibility "
			            "level 1.1 or above (use compat=1.1 or greater)");
	}
	if ((v = blk_opts_get(opts, "compression_type"))) {
		if (!strcmp(v, "zlib"))
			p->compression_type = 0;
		else if (!strcmp(v, "zstd"))
			p->compression_type = 1;
		else
			return CBAD("Parameter 'compression_type' does not accept value '%s'", v);
		if (p->compression_type && p->version < 3)
			return CBAD("Non-zlib compression type is only supported with compatibility "
			            "level 1.1 and above (use compat=1.1 or greater)");
	}
	if ((r = blk_opts_get_bool(opts, "extended_l2", &p->extended_l2, err)) < 0)
		return r;
	if (p->extended_l2) {
		if (p->version < 3)
			return CBAD("Extended L2 entries are only supported with compatibility level "
			            "1.1 and above (use compat=1.1 or greater)");
		if (p->cs < 16384)
			return CBAD("Extended L2 entries are only supported with cluster sizes of at "
			            "least 16384 bytes");
	}
	if ((r = blk_opts_get_bool(opts, "lazy_refcounts", &p->lazy, err)) < 0)
		return r;
	if (p->lazy && p->version < 3)
		return CBAD("Lazy refcounts only supported with compatibility level 1.1 and above "
		            "(use compat=1.1 or greater)");
	p->prealloc = blk_opts_get(opts, "preallocation");
	if (p->prealloc && strcmp(p->prealloc, "off") && strcmp(p->prealloc, "metadata") &&
	    strcmp(p->prealloc, "falloc") && strcmp(p->prealloc, "full"))
		return CBAD("Parameter 'preallocation' does not accept value '%s'", p->prealloc);
	if (p->prealloc && strcmp(p->prealloc, "off") && o->backing_file && !p->extended_l2)
		return CBAD("Backing file and preallocation can only be used at the same time if "
		            "extended_l2 is on");
	if (blk_opts_get(opts, "data_file") || blk_opts_get(opts, "data_file_raw"))
		return CBAD("external data files are not supported by vtool");
	bool enc = false;
	if ((r = blk_opts_get_bool(opts, "encryption", &enc, err)) < 0)
		return r;
	for (int i = 0; i < opts->n; i++)
		enc |= !strncmp(opts->items[i].key, "encrypt.", 8);
	if (enc)
		return CBAD("encryption is not supported by vtool");
	if (o->backing_file && strlen(o->backing_file) > 1023)
		return CBAD("Backing file name too long");
	uint64_t l2_entries = p->cs / (p->extended_l2 ? 16 : 8);
	uint64_t per_l1 = p->cs * l2_entries;
	uint64_t size = (o->size + 511) & ~511ull;
	if (size / per_l1 + 1 > QCOW2_MAX_L1_BYTES / 8)
		return CBAD("The image size is too large for file format 'qcow2' (try using a "
		            "larger cluster size)");
	return 0;
}

static void put_ext(uint8_t *c0, size_t *off, uint32_t type, const void *data, uint32_t len)
{
	qcow2_put_be32(c0 + *off, type);
	qcow2_put_be32(c0 + *off + 4, len);
	memcpy(c0 + *off + 8, data, len);
	*off += 8 + ((len + 7u) & ~7u);
}

size_t qcow2_feature_table(uint8_t *t)
{
	static const struct { uint8_t type, bit; const char *name; } f[] = {
		{ 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
		{ 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
		{ 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
	};
	memset(t, 0, sizeof(f) / sizeof(f[0]) * 48);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		t[i * 48] = f[i].type;
		t[i * 48 + 1] = f[i].bit;
		memcpy(t + i * 48 + 2, f[i].name, strlen(f[i].name));
	}
	return sizeof(f) / sizeof(f[0]) * 48;
}

int qcow2_open_internal(struct blk *b, struct vt_error *err);
void qcow2_close_internal(struct blk *b);

int qcow2_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                 const struct blk_optlist *opts, char **formatting, struct vt_error *err)
{
	struct create_params p;
	int r = create_params(filename, o, opts, &p, err);
	if (r < 0)
		return r;
	uint64_t size = (o->size + 511) & ~511ull;
	uint64_t cs = p.cs;

	/* Clusters 0-2: header, refcount table, one refcount block; L1 is added by growth. */
	uint8_t *buf = calloc(3, cs);
	if (!buf)
		return vt_error_set(err, ENOMEM, filename, "create", NULL);
	uint8_t *h = buf;
	qcow2_put_be32(h, QCOW2_MAGIC);
	qcow2_put_be32(h + 4, (uint32_t)p.version);
	qcow2_put_be32(h + 20, p.cluster_bits);
	/* size 0 until the L1 table for the real size exists (as qemu does) */
	qcow2_put_be64(h + 48, cs);
	qcow2_put_be32(h + 56, 1);
	size_t off = 72;
	if (p.version >= 3) {
		uint64_t incompat = (p.compression_type ? QCOW2_INCOMPAT_COMPRESS : 0) |
		                    (p.extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0);
		qcow2_put_be64(h + 72, incompat);
		qcow2_put_be64(h + 80, p.lazy ? QCOW2_COMPAT_LAZY : 0);
		qcow2_put_be32(h + 96, p.refcount_order);
		qcow2_put_be32(h + 100, 112);
		h[104] = (uint8_t)p.compression_type;
		off = 112;
	}
	if (o->backing_file)
		put_ext(h, &off, QCOW2_EXT_BACKING_FMT, o->backing_format,
		        (uint32_t)strlen(o->backing_format));
	if (cs > 4096) {
		uint8_t t[8 * 48];
		size_t n = qcow2_feature_table(t);
		put_ext(h, &off, QCOW2_EXT_FEATURES, t, (uint32_t)n);
	}
	off += 8; /* end of extensions */
	if (o->backing_file) {
		size_t n = strlen(o->backing_file);
		if (off + n > cs) {
			free(buf);
			return vt_error_set(err, EINVAL, filename, "create", "Backing file name too long");
		}
		qcow2_put_be64(h + 8, off);
		qcow2_put_be32(h + 16, (uint32_t)n);
		memcpy(h + off, o->backing_file, n);
	}
	qcow2_put_be64(buf + cs, 2 * cs);               /* reftable[0] -> cluster 2 */
	/* Refcounts of clusters 0..2 are 1. */
	for (int c = 0; c < 3; c++) {
		unsigned w = 1u << p.refcount_order;
		uint8_t *rb = buf + 2 * cs;
		if (w >= 8)
			rb[(size_t)c * (w / 8) + w / 8 - 1] = 1;
		else
			rb[c * w / 8] |= (uint8_t)(1u << ((c * w) % 8));
	}
	r = blk_file_pwrite(f, 0, buf, 3 * cs, err);
	free(buf);
	if (r < 0)
		return r;

	/* Open what we wrote and let the allocator place the L1 table (and anything else). */
	struct blk tmp = { .file = f, .writable = true, .filename = (char *)filename,
	                   .cache = BLK_CACHE_WRITEBACK };
	r = qcow2_open_internal(&tmp, err);
	if (r < 0)
		return r;
	struct qcow2 *s = tmp.opaque;
	uint64_t per_l1 = cs * s->l2_entries;
	uint64_t l1_needed = size / per_l1 + (size % per_l1 != 0);
	r = qcow2_grow_l1(s, l1_needed, true, err);
	if (r == 0)
		r = qcow2_write_be64_field(s, 24, size, err);
	tmp.size = size;
	if (r == 0 && p.prealloc && strcmp(p.prealloc, "off")) {
		uint64_t data_end = 0, fsize;
		enum blk_prealloc mode;
		blk_prealloc_parse(p.prealloc, &mode);
		r = qcow2_preallocate(s, 0, size, mode, &data_end, err);
		if (r == 0)
			r = blk_file_size(f, &fsize, err);
		/* Metadata preallocation reserves nothing: the file just covers the data. */
		if (r == 0 && data_end > fsize)
			r = blk_file_truncate(f, data_end, err);
		/* The tables are in the caches: to the file, in order, before closing. */
		if (r == 0)
			r = qcow2_flush_metadata(s, err);
	}
	qcow2_close_internal(&tmp);
	if (r < 0)
		return r;

	if (formatting) {
		char line[2600];
		int n = snprintf(line, sizeof(line), "fmt=qcow2 cluster_size=%llu extended_l2=%s",
		                 (unsigned long long)cs, p.extended_l2 ? "on" : "off");
		if (p.prealloc)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " preallocation=%s", p.prealloc);
		n += snprintf(line + n, sizeof(line) - (size_t)n, " compression_type=%s size=%llu",
		              p.compression_type ? "zstd" : "zlib", (unsigned long long)o->size);
		if (o->backing_file)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " backing_file=%s backing_fmt=%s",
			              o->backing_file, o->backing_format);
		if ((p.version == 2 || blk_opts_get(opts, "compat")))
			n += snprintf(line + n, sizeof(line) - (size_t)n, " compat=%s",
			              blk_opts_get(opts, "compat"));
		snprintf(line + n, sizeof(line) - (size_t)n, " lazy_refcounts=%s refcount_bits=%u",
		         p.lazy ? "on" : "off", 1u << p.refcount_order);
		*formatting = strdup(line);
	}
	return 0;
}

/* ---- measure (qemu's formulas: specs/qcow2.md §14.5) ------------------------------ */

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

/* Refcount blocks and table clusters for `clusters` clusters plus themselves. */
static uint64_t refcount_metadata(uint64_t clusters, uint64_t cs, unsigned order)
{
	uint64_t per_table_cluster = cs / 8, per_block = cs * 8 / (1u << order);
	uint64_t table = 0, blocks = 0, n = 0, last;
	do {
		last = n;
		blocks = div_up(clusters + table + blocks, per_block);
		table = div_up(blocks, per_table_cluster);
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cs;
}

static uint64_t prealloc_size(uint64_t size, uint64_t cs, unsigned order, bool ext)
{
	uint64_t l2e = ext ? 16 : 8, aligned = div_up(size, cs) * cs, meta = cs;
	uint64_t nl2e = div_up(aligned / cs, cs / l2e) * (cs / l2e);
	meta += nl2e * l2e;
	uint64_t nl1e = div_up(nl2e * l2e / cs, cs / 8) * (cs / 8);
	meta += nl1e * 8;
	meta += refcount_metadata((meta + aligned) / cs, cs, order);
	return meta + aligned;
}

int qcow2_measure(const struct blk_optlist *opts, uint64_t size, struct blk *src,
                  struct blk_measure *m, struct vt_error *err);
int qcow2_measure(const struct blk_optlist *opts, uint64_t size, struct blk *src,
                  struct blk_measure *m, struct vt_error *err)
{
	struct create_params p;
	struct blk_create_opts o = { .size = size };
	int r = create_params("", &o, opts, &p, err);
	if (r < 0)
		return r;
	uint64_t vsize = div_up(size, p.cs) * p.cs, data = 0;
	m->fully_allocated = prealloc_size(vsize, p.cs, p.refcount_order, p.extended_l2);
	if (p.prealloc && strcmp(p.prealloc, "off") && strcmp(p.prealloc, "metadata")) {
		m->required = m->fully_allocated;
	} else {
		if (src && (r = blk_measure_data(src, p.cs, &data, err)) < 0)
			return r;
		m->required = m->fully_allocated - vsize + data;
	}
	if (src && p.version >= 3 && !strcmp(blk_format(src), "qcow2")) {
		const struct qcow2 *ss = src->opaque;
		m->has_bitmaps = ss->version >= 3;
		if (m->has_bitmaps && (r = qcow2_bitmaps_measure(src, p.cs, &m->bitmaps, err)) < 0)
			return r;
	}
	return 0;
}
