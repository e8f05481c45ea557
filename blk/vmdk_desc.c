/* VMDK text descriptors: the create type, the extent lines (opening the extent files),
 * CID / parentCID / parentFileNameHint, the in-place CID update, and the text qemu writes
 * for a new image. The descriptor is untrusted: every line is bounded, numbers are
 * range-checked, and the extent lines are matched exactly as qemu's sscanf pattern
 * matches them (including its habit of reading on across line ends), so that vtool
 * accepts and refuses the same descriptors.
 *
 * Extent paths: relative names are resolved against the descriptor's directory and
 * absolute names are used as they are -- what qemu allows (VMware descriptors on ESX use
 * absolute paths). Beyond qemu, an extent must be a regular file or a block device:
 * FIFOs, sockets, character devices and directories are refused before open, so a
 * hostile descriptor cannot make vtool block on a pipe or read /dev/urandom forever; and
 * nothing under /proc (this process's own open files through /proc/self/fd). */
#include "blk/vmdk.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#define BAD(...) vt_error_set(err, EINVAL, s->b->filename, "open", __VA_ARGS__)

int vmdk_desc_read(struct blk_file *f, uint64_t off, char **out, struct vt_error *err)
{
	uint64_t size;
	int r = blk_file_size(f, &size, err);
	if (r < 0)
		return r;
	/* Both a descriptor and a sparse extent are much larger than 4 bytes. */
	if (size < 4)
		return vt_error_set(err, EINVAL, blk_file_name(f), "open",
		                    "File is too small, not a valid image");
	size_t n = size < VMDK_DESC_MAX ? (size_t)size : VMDK_DESC_MAX;
	char *buf = malloc(n + 1);
	if (!buf)
		return vt_error_set(err, ENOMEM, blk_file_name(f), "open", NULL);
	if ((r = blk_file_pread(f, off, buf, n, err)) < 0) {
		free(buf);
		return r;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* `key="value"`: the value after the first occurrence of key, skipping two characters
 * (qemu's rule, so `key = "v"` reads differently, as it does in qemu). */
static bool desc_value(const char *desc, const char *key, char *buf, size_t cap)
{
	const char *end = desc + strlen(desc);
	const char *p = strstr(desc, key);
	if (!p)
		return false;
	p += strlen(key) + 2;
	if (p >= end)
		return false;
	const char *q = strchr(p, '"');
	if (!q || (size_t)(q - p) + 1 > cap)
		return false;
	memcpy(buf, p, (size_t)(q - p));
	buf[q - p] = '\0';
	return true;
}

/* ---- one extent line, matched like sscanf("%10s %ld %10s \"%511[^\n\r\"]\" %ld") ---- */

struct extent_line {
	int matches;
	char access[11], type[11], fname[512];
	int64_t sectors, offset;
};

static const char *skip_space(const char *p)
{
	while (*p && isspace((unsigned char)*p))
		p++;
	return p;
}

static const char *scan_word(const char *p, char *out, size_t max)
{
	size_t n = 0;
	p = skip_space(p);
	while (*p && !isspace((unsigned char)*p) && n < max)
		out[n++] = *p++;
	out[n] = '\0';
	return n ? p : NULL;
}

/* %ld: optional sign, decimal digits; saturates like strtoll. */
static const char *scan_int(const char *p, int64_t *v)
{
	p = skip_space(p);
	bool neg = *p == '-';
	if (*p == '-' || *p == '+')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	uint64_t x = 0;
	bool big = false;
	for (; isdigit((unsigned char)*p); p++) {
		if (x > (UINT64_MAX - 9) / 10)
			big = true;
		else
			x = x * 10 + (uint64_t)(*p - '0');
	}
	if (big || x > (uint64_t)INT64_MAX)
		*v = neg ? INT64_MIN : INT64_MAX;
	else
		*v = neg ? -(int64_t)x : (int64_t)x;
	return p;
}

static void scan_extent_line(const char *p, struct extent_line *l)
{
	memset(l, 0, sizeof(*l));
	if (!(p = scan_word(p, l->access, 10)))
		return;
	l->matches = 1;
	if (!(p = scan_int(p, &l->sectors)))
		return;
	l->matches = 2;
	if (!(p = scan_word(p, l->type, 10)))
		return;
	l->matches = 3;
	p = skip_space(p);
	if (*p++ != '"')
		return;
	size_t n = 0;
	while (*p && *p != '\n' && *p != '\r' && *p != '"' && n < 511)
		l->fname[n++] = *p++;
	if (!n)
		return;
	l->fname[n] = '\0';
	l->matches = 4;
	if (*p++ != '"')
		return;
	if (scan_int(p, &l->offset))
		l->matches = 5;
}

static const char *next_line(const char *p)
{
	const char *nl = strchr(p, '\n');
	return nl ? nl + 1 : p + strlen(p);
}

static int add_extent(struct vmdk *s, struct vmdk_extent **e, struct vt_error *err)
{
	if (s->n_extents >= VMDK_MAX_EXTENTS)
		return BAD("more than %d extents", VMDK_MAX_EXTENTS);
	struct vmdk_extent *x = realloc(s->extents, (size_t)(s->n_extents + 1) * sizeof(*x));
	if (!x)
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	s->extents = x;
	*e = &x[s->n_extents];
	memset(*e, 0, sizeof(**e));
	(*e)->start = s->n_extents ? x[s->n_extents - 1].start + x[s->n_extents - 1].sectors : 0;
	return 0;
}

static char *extent_path(const char *desc_path, const char *fname)
{
	if (fname[0] == '/')
		return strdup(fname);
	const char *slash = strrchr(desc_path, '/');
	size_t dir = slash ? (size_t)(slash - desc_path) + 1 : 0;
	char *p = malloc(dir + strlen(fname) + 1);
	if (p) {
		memcpy(p, desc_path, dir);
		strcpy(p + dir, fname);
	}
	return p;
}

static int open_extent_file(struct vmdk *s, const char *path, bool writable, bool share,
                            struct blk_file **f, struct vt_error *err)
{
	/* /proc/<pid>/fd/N (also reached as /dev/fd/N, or relative to a descriptor opened
	 * through /proc) is whatever this process has open: its output, a socket, the image
	 * itself. Fuzzing found a descriptor that made vtool write into its own log. */
	char *dir = strdup(path), *real = NULL;
	if (!dir)
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	real = realpath(slash ? dir : ".", NULL);
	bool in_proc = real && (!strcmp(real, "/proc") || !strncmp(real, "/proc/", 6));
	free(dir);
	free(real);
	if (in_proc)
		return vt_error_set(err, EPERM, s->b->filename, "open",
		                    "Could not open '%s': extents under /proc are refused", path);
	struct stat st;
	if (stat(path, &st) < 0)
		return vt_error_set(err, errno, s->b->filename, "open", "Could not open '%s': %s",
		                    path, strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return vt_error_set(err, EINVAL, s->b->filename, "open",
		                    "Could not open '%s': an extent must be a regular file or a "
		                    "block device", path);
	unsigned flags = (writable ? BLK_FILE_WRITE : 0) | (share && !writable ? BLK_FILE_NOLOCK : 0);
	struct vt_error inner = { 0 };
	int r = blk_file_open(path, flags, s->b->cache, f, &inner);
	if (r < 0)
		return vt_error_set(err, -r, s->b->filename, "open", "Could not open '%s': %s",
		                    path, strerror(-r));
	return 0;
}

static bool known_type(const char *t)
{
	return !strcmp(t, "FLAT") || !strcmp(t, "SPARSE") || !strcmp(t, "VMFS") ||
	       !strcmp(t, "VMFSSPARSE") || !strcmp(t, "SESPARSE");
}

/* One accepted extent line: open its file and add the extent. */
static int open_line_extent(struct vmdk *s, const struct extent_line *l, const char *desc_path,
                            bool writable, bool share, struct vt_error *err)
{
	bool flat = !strcmp(l->type, "FLAT") || !strcmp(l->type, "VMFS");
	if (!strcmp(l->type, "SESPARSE"))
		return vt_error_set(err, ENOTSUP, s->b->filename, "open",
		                    "seSparse extents are not supported by vtool");
	if (flat && ((uint64_t)l->offset > INT64_MAX / VMDK_SECTOR ||
	             (uint64_t)l->sectors > INT64_MAX / VMDK_SECTOR))
		return BAD("Invalid extent line: offset or size too large");
	char *path = extent_path(desc_path, l->fname);
	if (!path)
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	struct blk_file *f;
	int r = open_extent_file(s, path, writable, share, &f, err);
	struct vmdk_extent *e = NULL;
	if (r == 0 && (r = add_extent(s, &e, err)) < 0)
		blk_file_close(f);
	if (r < 0) {
		free(path);
		return r;
	}
	e->file = f;
	e->own_file = true;
	e->path = path;
	snprintf(e->type, sizeof(e->type), "%s", l->type);
	if (flat) {
		e->flat = true;
		e->sectors = (uint64_t)l->sectors;
		e->flat_offset = (uint64_t)l->offset * VMDK_SECTOR;
		s->n_extents++;
		return 0;
	}
	/* SPARSE and VMFSSPARSE: a KDMV or COWD file; its header gives the size. */
	uint8_t head[512];
	uint64_t fsize;
	if ((r = blk_file_size(f, &fsize, err)) < 0)
		goto fail;
	if (fsize < 4) {
		r = vt_error_set(err, EINVAL, path, "open", "File is too small, not a valid image");
		goto fail;
	}
	if ((r = blk_file_pread(f, 0, head, sizeof(head), err)) < 0)
		goto fail;
	if (memcmp(head, "KDMV", 4) && memcmp(head, "COWD", 4)) {
		r = vt_error_set(err, EINVAL, path, "open", "Image not in VMDK format");
		goto fail;
	}
	if (!memcmp(head, "KDMV", 4) &&
	    vmdk_le64(head + offsetof(struct vmdk4_header, capacity)) == 0 &&
	    vmdk_le64(head + offsetof(struct vmdk4_header, desc_offset)) != 0) {
		/* qemu would recurse into it (and loop on a self-reference). */
		r = vt_error_set(err, ENOTSUP, path, "open",
		                 "an extent holding a descriptor of its own is not supported");
		goto fail;
	}
	s->n_extents++; /* from here on close() frees it */
	return vmdk_sparse_open(e, head, writable, err);
fail:
	blk_file_close(f);
	free(path);
	return r;
}

int vmdk_desc_open(struct vmdk *s, const char *desc, const char *desc_path, bool writable,
                   bool share, struct vt_error *err)
{
	static const char *const types[] = { "monolithicFlat", "vmfs", "vmfsSparse", "seSparse",
	                                     "twoGbMaxExtentSparse", "twoGbMaxExtentFlat" };
	char ct[128];
	if (!desc_value(desc, "createType", ct, sizeof(ct)))
		return BAD("invalid VMDK image descriptor");
	bool ok = false;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		ok |= !strcmp(ct, types[i]);
	if (!ok)
		return vt_error_set(err, ENOTSUP, s->b->filename, "open", "Unsupported image type '%s'",
		                    ct);
	snprintf(s->create_type, sizeof(s->create_type), "%s", ct);

	for (const char *p = desc; *p; p = next_line(p)) {
		struct extent_line l;
		scan_extent_line(p, &l);
		if (l.matches < 4 || strcmp(l.access, "RW"))
			continue; /* RDONLY and NOACCESS extents are left out, as in qemu */
		bool bad;
		if (!strcmp(l.type, "FLAT"))
			bad = l.matches != 5 || l.offset < 0;
		else if (!strcmp(l.type, "VMFS"))
			bad = l.matches != 4;
		else
			bad = l.matches != 4;
		if (bad) {
			const char *nl = strchr(p, '\n');
			int n = nl ? (int)(nl - p) : (int)strlen(p);
			return BAD("Invalid extent line: %.*s", n > 200 ? 200 : n, p);
		}
		if (l.sectors <= 0 || !known_type(l.type))
			continue;
		int r = open_line_extent(s, &l, desc_path, writable, share, err);
		if (r < 0)
			return r;
		const struct vmdk_extent *e = &s->extents[s->n_extents - 1];
		if (e->start + e->sectors < e->start ||
		    e->start + e->sectors > INT64_MAX / VMDK_SECTOR)
			return BAD("the extents add up to more than 8 EiB");
	}
	return 0;
}

/* ---- CID, parentCID, parentFileNameHint --------------------------------------------- */

/* sscanf("%x") after `key` plus one character: optional space, sign and 0x, hex digits.
 * pos and len locate the digits, for an in-place update. */
static bool scan_hex_after(const char *desc, const char *key, uint32_t *v, size_t *pos,
                           size_t *len)
{
	const char *p = strstr(desc, key);
	if (!p)
		return false;
	p += strlen(key) + 1;
	if ((size_t)(p - desc) > strlen(desc))
		return false;
	p = skip_space(p);
	if (*p == '+')
		p++;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && isxdigit((unsigned char)p[2]))
		p += 2;
	const char *d = p;
	uint64_t x = 0;
	while (isxdigit((unsigned char)*p)) {
		int c = tolower((unsigned char)*p++);
		x = x << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
		if (x > UINT32_MAX)
			x = UINT64_MAX >> 4; /* saturate */
	}
	if (p == d)
		return false;
	*v = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
	if (pos) {
		*pos = (size_t)(d - desc);
		*len = (size_t)(p - d);
	}
	return true;
}

int vmdk_desc_ids(struct vmdk *s, struct vt_error *err)
{
	char *desc = calloc(1, VMDK_DESC_SIZE + 1);
	if (!desc)
		return vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
	int r = blk_file_pread(s->b->file, s->desc_offset, desc, VMDK_DESC_SIZE, err);
	if (r < 0)
		goto out;
	/* parentFileNameHint="name": the backing file, always a vmdk (qemu's rule). */
	const char *p = strstr(desc, "parentFileNameHint");
	if (p) {
		p += strlen("parentFileNameHint") + 2;
		const char *q = p <= desc + strlen(desc) ? strchr(p, '"') : NULL;
		if (!q) {
			r = BAD("Invalid argument: parentFileNameHint is not quoted");
			goto out;
		}
		if ((size_t)(q - p) >= sizeof(s->b->backing_file)) {
			r = BAD("parentFileNameHint is longer than %zu bytes",
			        sizeof(s->b->backing_file) - 1);
			goto out;
		}
		if (memchr(p, '\n', (size_t)(q - p)) || memchr(p, '\r', (size_t)(q - p))) {
			r = BAD("parentFileNameHint is not closed on its line");
			goto out;
		}
		memcpy(s->b->backing_file, p, (size_t)(q - p));
		s->b->backing_file[q - p] = '\0';
		if (s->b->backing_file[0])
			snprintf(s->b->backing_format, sizeof(s->b->backing_format), "vmdk");
	}
	desc[VMDK_DESC_SIZE - 1] = '\0';
	if (!scan_hex_after(desc, "CID", &s->cid, NULL, NULL)) {
		r = BAD("Invalid argument: the descriptor has no CID");
		goto out;
	}
	if (!scan_hex_after(desc, "parentCID", &s->parent_cid, NULL, NULL))
		r = BAD("Invalid argument: the descriptor has no parentCID");
out:
	free(desc);
	return r;
}

int vmdk_desc_new_cid(struct vmdk *s, struct vt_error *err)
{
	char desc[VMDK_DESC_SIZE + 1];
	int r = blk_file_pread(s->b->file, s->desc_offset, desc, VMDK_DESC_SIZE, err);
	if (r < 0)
		return r;
	desc[VMDK_DESC_SIZE - 1] = '\0';
	size_t pos, len;
	uint32_t old;
	if (!scan_hex_after(desc, "CID", &old, &pos, &len) || len > 16)
		return vt_error_set(err, EINVAL, s->b->filename, "update CID",
		                    "the descriptor has no CID");
	/* A value of the same number of digits, written over the old one: one small write
	 * that cannot leave a half-rewritten descriptor behind. */
	uint32_t v;
	char digits[24];
	do {
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			v ^= (uint32_t)rand();
		if (len < 8) {
			uint32_t lo = len == 1 ? 1 : 1u << (4 * (len - 1)), hi = 1u << (4 * len);
			v = lo + v % (hi - lo);
		}
		snprintf(digits, sizeof(digits), "%0*x", (int)len, v);
	} while (v == old || strlen(digits) != len);
	if ((r = blk_file_pwrite(s->b->file, s->desc_offset + pos, digits, len, err)) < 0)
		return r;
	s->cid = v;
	return 0;
}

char *vmdk_desc_build(uint32_t cid, uint32_t parent_cid, const char *create_type,
                      const char *parent_hint, const char *extent_lines, const char *hwversion,
                      uint64_t size, const char *adapter_type, const char *toolsversion)
{
	/* qemu's descriptor, key for key: heads 16 for IDE, 255 otherwise (what VMware uses
	 * for SCSI adapters), 63 sectors per track. */
	unsigned heads = strcmp(adapter_type, "ide") ? 255 : 16;
#define DESC_TEMPLATE \
		"# Disk DescriptorFile\n" \
		"version=1\n" \
		"CID=%x\n" \
		"parentCID=%x\n" \
		"createType=\"%s\"\n" \
		"%s%s%s" \
		"\n" \
		"# Extent description\n" \
		"%s" \
		"\n" \
		"# The Disk Data Base\n" \
		"#DDB\n" \
		"\n" \
		"ddb.virtualHWVersion = \"%s\"\n" \
		"ddb.geometry.cylinders = \"%llu\"\n" \
		"ddb.geometry.heads = \"%u\"\n" \
		"ddb.geometry.sectors = \"63\"\n" \
		"ddb.adapterType = \"%s\"\n" \
		"ddb.toolsVersion = \"%s\"\n"

	unsigned long long cyl = size / (63ull * heads * VMDK_SECTOR);
	const char *pre = parent_hint ? "parentFileNameHint=\"" : "";
	const char *post = parent_hint ? "\"" : "";
	int n = snprintf(NULL, 0, DESC_TEMPLATE, cid, parent_cid, create_type, pre,
	                 parent_hint ? parent_hint : "", post, extent_lines, hwversion, cyl, heads,
	                 adapter_type, toolsversion);
	char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (out)
		snprintf(out, (size_t)n + 1, DESC_TEMPLATE, cid, parent_cid, create_type, pre,
		         parent_hint ? parent_hint : "", post, extent_lines, hwversion, cyl, heads,
		         adapter_type, toolsversion);
	return out;
#undef DESC_TEMPLATE
}
