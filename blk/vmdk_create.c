/* VMDK image creation, laid out as qemu-img 7.2 lays it out: monolithicSparse and
 * streamOptimized are one sparse file (header, descriptor at sector 1, redundant grain
 * directory and tables, grain directory and tables, grains from a 64 KiB boundary);
 * monolithicFlat and twoGbMaxExtent* are a descriptor file and extent files named
 * <name>-flat.vmdk, <name>-s001.vmdk, <name>-f001.vmdk... (2 GiB each when split). The
 * descriptor text is qemu's, key for key, with a random CID. */
#include "blk/vmdk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

const struct blk_optdesc vmdk_create_opts[] = {
	{ "adapter_type", BLK_OPT_STRING,
	  "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX" },
	{ "backing_file", BLK_OPT_STRING, "File name of a base image" },
	{ "backing_fmt", BLK_OPT_STRING, "Must be 'vmdk' if present" },
	{ "compat6", BLK_OPT_BOOL, "VMDK version 6 image" },
	{ "extent_size_hint", BLK_OPT_SIZE, "Extent size hint for the image file, 0 to disable" },
	{ "hwversion", BLK_OPT_STRING, "VMDK hardware version" },
	{ "nocow", BLK_OPT_BOOL, "Turn off copy-on-write (valid only on btrfs)" },
	{ "preallocation", BLK_OPT_STRING, "Preallocation mode (allowed values: off, falloc, full)" },
	{ "size", BLK_OPT_SIZE, "Virtual disk size" },
	{ "subformat", BLK_OPT_STRING,
	  "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | "
	  "twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} " },
	{ "toolsversion", BLK_OPT_STRING, "VMware guest tools version" },
	{ "zeroed_grain", BLK_OPT_BOOL,
	  "Enable efficient zero writes using the zeroed-grain GTE feature" },
	{ NULL, 0, NULL },
};

#define CBAD(...) vt_error_set(err, EINVAL, filename, "create", __VA_ARGS__)
#define SPLIT_SIZE 0x80000000ull  /* twoGbMaxExtent*: VMDK's fixed extent size */
#define GRAIN 128u                /* sectors */
#define GTES 512u

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* The layout qemu gives a new sparse extent of `sectors` sectors. */
struct layout {
	uint64_t gt_count, gd_sectors, rgd, gd, overhead;
};

static void sparse_layout(uint64_t sectors, struct layout *l)
{
	uint64_t grains = div_up(sectors, GRAIN), gt_sectors = GTES * 4 / VMDK_SECTOR;
	l->gt_count = div_up(grains, GTES);
	l->gd_sectors = div_up(l->gt_count * 4, VMDK_SECTOR);
	l->rgd = 1 + 20; /* after the header and a 20-sector descriptor */
	l->gd = l->rgd + l->gd_sectors + l->gt_count * gt_sectors;
	l->overhead = div_up(l->gd + l->gd_sectors + l->gt_count * gt_sectors, GRAIN) * GRAIN;
}

/* Can a sparse extent of this size be described with 32-bit sector numbers? */
static bool sparse_fits(uint64_t bytes)
{
	struct layout l;
	sparse_layout(bytes / VMDK_SECTOR, &l);
	return div_up(bytes / VMDK_SECTOR, GRAIN) <= UINT32_MAX && l.overhead < (1ull << 32);
}

static int write_gd(struct blk_file *f, uint64_t at, const struct layout *l,
                    struct vt_error *err)
{
	size_t n = (size_t)(l->gd_sectors * VMDK_SECTOR);
	uint8_t *buf = calloc(1, n ? n : 1);
	if (!buf)
		return vt_error_set(err, ENOMEM, blk_file_name(f), "create", NULL);
	for (uint64_t i = 0; i < l->gt_count; i++)
		vmdk_put_le32(buf + i * 4, (uint32_t)(at + l->gd_sectors + i * (GTES * 4 / VMDK_SECTOR)));
	int r = n ? blk_file_pwrite(f, at * VMDK_SECTOR, buf, n, err) : 0;
	free(buf);
	return r;
}

/* Header, an empty (hole) metadata area, both grain directories; the tables are zeros. */
static int init_sparse(struct blk_file *f, uint64_t bytes, bool compress, bool zeroed_grain,
                       struct vt_error *err)
{
	struct layout l;
	uint8_t h[sizeof(struct vmdk4_header)] = { 0 };
	sparse_layout(bytes / VMDK_SECTOR, &l);
#define P32(field, v) vmdk_put_le32(h + offsetof(struct vmdk4_header, field), (v))
#define P64(field, v) vmdk_put_le64(h + offsetof(struct vmdk4_header, field), (v))
	memcpy(h, "KDMV", 4);
	P32(version, compress ? 3 : zeroed_grain ? 2 : 1);
	P32(flags, VMDK4_FLAG_RGD | VMDK4_FLAG_NL_DETECT |
	           (compress ? VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER : 0) |
	           (zeroed_grain ? VMDK4_FLAG_ZERO_GRAIN : 0));
	P64(capacity, bytes / VMDK_SECTOR);
	P64(granularity, GRAIN);
	P64(desc_offset, 1);
	P64(desc_size, 20);
	P32(num_gtes_per_gt, GTES);
	P64(rgd_offset, l.rgd);
	P64(gd_offset, l.gd);
	P64(overhead, l.overhead);
#undef P32
#undef P64
	memcpy(h + offsetof(struct vmdk4_header, nl_check), "\n \r\n", 4);
	vmdk_put_le16(h + offsetof(struct vmdk4_header, compress_algorithm),
	              compress ? VMDK4_COMPRESS_DEFLATE : 0);
	int r = blk_file_pwrite(f, 0, h, sizeof(h), err);
	if (r == 0)
		r = blk_file_truncate(f, l.overhead * VMDK_SECTOR, err);
	if (r == 0)
		r = write_gd(f, l.rgd, &l, err);
	if (r == 0)
		r = write_gd(f, l.gd, &l, err);
	return r;
}

struct params {
	const char *subformat, *adapter, *hwversion, *tools;
	bool compat6, zeroed_grain, flat, split, compress;
};

/* Text that goes between quotes in the descriptor must not end the quote or the line. */
static bool quotable(const char *s)
{
	return !strpbrk(s, "\"\n\r");
}

static int get_params(const char *filename, const struct blk_create_opts *o,
                      const struct blk_optlist *opts, struct params *p, struct vt_error *err)
{
	static const char *const subformats[] = { "monolithicSparse", "monolithicFlat",
	                                          "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
	                                          "streamOptimized" };
	static const char *const adapters[] = { "ide", "buslogic", "lsilogic", "legacyESX" };
	const char *v;
	int r;
	*p = (struct params){ .subformat = "monolithicSparse", .adapter = "ide" };
	if (o->backing_format && strcmp(o->backing_format, "vmdk"))
		return CBAD("backing_file must be a vmdk image");
	if ((v = blk_opts_get(opts, "adapter_type"))) {
		bool ok = false;
		for (size_t i = 0; i < sizeof(adapters) / sizeof(adapters[0]); i++)
			ok |= !strcmp(v, adapters[i]);
		if (!ok)
			return CBAD("invalid parameter value: %s", v);
		p->adapter = v;
	}
	if ((v = blk_opts_get(opts, "subformat"))) {
		bool ok = false;
		for (size_t i = 0; i < sizeof(subformats) / sizeof(subformats[0]); i++)
			ok |= !strcmp(v, subformats[i]);
		if (!ok)
			return CBAD("invalid parameter value: %s", v);
		p->subformat = v;
	}
	if ((v = blk_opts_get(opts, "preallocation")) && strcmp(v, "off") && strcmp(v, "falloc") &&
	    strcmp(v, "full"))
		return CBAD("invalid parameter value: %s", v);
	if ((r = blk_opts_get_bool(opts, "compat6", &p->compat6, err)) < 0 ||
	    (r = blk_opts_get_bool(opts, "zeroed_grain", &p->zeroed_grain, err)) < 0)
		return r;
	p->hwversion = blk_opts_get(opts, "hwversion");
	if (p->hwversion && !strcmp(p->hwversion, "undefined"))
		p->hwversion = NULL;
	p->tools = blk_opts_get(opts, "toolsversion");
	if (p->compat6 && p->hwversion)
		return CBAD("compat6 cannot be enabled with hwversion set");
	if (!p->hwversion)
		p->hwversion = p->compat6 ? "6" : "4";
	if (!p->tools)
		p->tools = "2147483647";
	if (!quotable(p->hwversion) || !quotable(p->tools) ||
	    (o->backing_file && !quotable(o->backing_file)))
		return CBAD("hwversion, toolsversion and the backing file name must not contain "
		            "quotes or line breaks");
	p->split = strstr(p->subformat, "twoGb") != NULL;
	p->flat = strstr(p->subformat, "Flat") != NULL;
	p->compress = !strcmp(p->subformat, "streamOptimized");
	if (p->flat && o->backing_file)
		return CBAD("Flat image can't have backing file");
	if (p->flat && p->zeroed_grain)
		return CBAD("Flat image can't enable zeroed grain");
	uint64_t size = (o->size + VMDK_SECTOR - 1) / VMDK_SECTOR * VMDK_SECTOR;
	if (!p->flat && !sparse_fits(p->split ? (size < SPLIT_SIZE ? size : SPLIT_SIZE) : size))
		return CBAD("The image size is too large for file format 'vmdk' (a sparse extent "
		            "holds less than 256 TiB)");
	return 0;
}

/* The parent's CID, read from the backing file (which must be a vmdk). */
static int parent_cid(const char *filename, const char *backing, uint32_t *cid,
                      struct vt_error *err)
{
	const char *slash = strrchr(filename, '/');
	size_t dir = backing[0] != '/' && slash ? (size_t)(slash - filename) + 1 : 0;
	char *path = malloc(dir + strlen(backing) + 1);
	if (!path)
		return vt_error_set(err, ENOMEM, filename, "create", NULL);
	memcpy(path, filename, dir);
	strcpy(path + dir, backing);
	struct blk_open_opts bo = { .force_share = true, .no_backing = true };
	struct blk *bk;
	struct vt_error inner = { 0 };
	int r = blk_open(path, &bo, &bk, &inner);
	free(path);
	if (r < 0)
		return vt_error_set(err, -r, filename, "create", "Could not open backing file: %s",
		                    inner.why);
	if (strcmp(blk_format(bk), "vmdk"))
		r = vt_error_set(err, EINVAL, filename, "create",
		                 "Invalid backing file format: %s. Must be vmdk", blk_format(bk));
	else
		*cid = ((const struct vmdk *)bk->opaque)->cid;
	blk_close(bk, NULL);
	return r;
}

static uint32_t random_cid(void)
{
	uint32_t v;
	if (getrandom(&v, sizeof(v), 0) != sizeof(v))
		v = (uint32_t)rand();
	return v;
}

/* path/prefix/postfix of a name, as qemu splits it: "dir/disk.vmdk" makes extent names
 * "dir/" "disk" "-s001" ".vmdk". */
static void split_name(const char *filename, char *path, char *prefix, char *postfix, size_t n)
{
	const char *base = strrchr(filename, '/');
	base = base ? base + 1 : filename;
	snprintf(path, n, "%.*s", (int)(base - filename), filename);
	const char *dot = strrchr(base, '.');
	snprintf(prefix, n, "%.*s", dot ? (int)(dot - base) : (int)strlen(base), base);
	snprintf(postfix, n, "%s", dot ? dot : "");
}

/* The extent files of a descriptor image; their descriptor lines go to *lines. */
static int create_extents(const char *filename, uint64_t size, const struct params *p,
                          char **lines, char ***made, int *nmade, struct vt_error *err)
{
	char path[4096], prefix[4096], postfix[4096];
	split_name(filename, path, prefix, postfix, sizeof(path));
	uint64_t extent_size = p->split ? SPLIT_SIZE : size, done = 0;
	size_t used = 0;
	int r = 0;
	for (int idx = 1; done < size && r == 0; idx++) {
		uint64_t cur = size - done < extent_size ? size - done : extent_size;
		char rel[8300], full[12400];
		if (p->split)
			snprintf(rel, sizeof(rel), "%s-%c%03d%s", prefix, p->flat ? 'f' : 's', idx, postfix);
		else
			snprintf(rel, sizeof(rel), "%s-flat%s", prefix, postfix);
		snprintf(full, sizeof(full), "%s%s", path, rel);
		if (!quotable(rel))
			return CBAD("the file name must not contain quotes or line breaks");
		char **m2 = realloc(*made, (size_t)(*nmade + 1) * sizeof(*m2));
		if (!m2 || !(m2[*nmade] = strdup(full))) {
			if (m2)
				*made = m2;
			return vt_error_set(err, ENOMEM, filename, "create", NULL);
		}
		*made = m2;
		(*nmade)++;
		struct blk_file *f;
		if ((r = blk_file_open(full, BLK_FILE_CREATE, BLK_CACHE_WRITEBACK, &f, err)) < 0)
			break;
		r = p->flat ? blk_file_truncate(f, cur, err)
		            : init_sparse(f, cur, false, p->zeroed_grain, err);
		if (r == 0)
			r = blk_file_flush(f, err);
		blk_file_close(f);
		char line[8400];
		unsigned long long sectors = div_up(cur, VMDK_SECTOR);
		int n = p->flat ? snprintf(line, sizeof(line), "RW %llu FLAT \"%s\" 0\n", sectors, rel)
		                : snprintf(line, sizeof(line), "RW %llu SPARSE \"%s\"\n", sectors, rel);
		char *l2 = realloc(*lines, used + (size_t)n + 1);
		if (!l2)
			return vt_error_set(err, ENOMEM, filename, "create", NULL);
		memcpy(l2 + used, line, (size_t)n + 1);
		*lines = l2;
		used += (size_t)n;
		done += cur;
	}
	return r;
}

static char *formatting_line(const struct blk_create_opts *o, const struct blk_optlist *opts)
{
	/* qemu prints the options that have a value, in its option table's order. */
	static const char *const after[] = { "toolsversion", "subformat", "zeroed_grain", "nocow",
	                                     "preallocation" };
	char line[6000];
	const char *v;
	int n = snprintf(line, sizeof(line), "fmt=vmdk size=%llu", (unsigned long long)o->size);
#define ADD(...) n += snprintf(line + n, sizeof(line) - (size_t)n, __VA_ARGS__)
	if ((v = blk_opts_get(opts, "adapter_type")))
		ADD(" adapter_type=%s", v);
	if (o->backing_file)
		ADD(" backing_file=%s backing_fmt=%s", o->backing_file, o->backing_format);
	v = blk_opts_get(opts, "compat6");
	ADD(" compat6=%s", v ? v : "off");
	v = blk_opts_get(opts, "hwversion");
	ADD(" hwversion=%s", v ? v : "undefined");
	for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++)
		if ((v = blk_opts_get(opts, after[i])) && (size_t)n < sizeof(line))
			ADD(" %s=%s", after[i], v);
	uint64_t hint;
	if (blk_opts_get_size(opts, "extent_size_hint", &hint, NULL) == 0 && (size_t)n < sizeof(line))
		ADD(" extent_size_hint=%llu", (unsigned long long)hint);
#undef ADD
	return strdup(line);
}

int vmdk_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                const struct blk_optlist *opts, char **formatting, struct vt_error *err)
{
	struct params p;
	int r = get_params(filename, o, opts, &p, err);
	if (r < 0)
		return r;
	uint64_t size = (o->size + VMDK_SECTOR - 1) / VMDK_SECTOR * VMDK_SECTOR;
	uint32_t pcid = 0xffffffff;
	if (o->backing_file && (r = parent_cid(filename, o->backing_file, &pcid, err)) < 0)
		return r;
	char *lines = NULL, **made = NULL, *desc = NULL;
	int nmade = 0;
	bool monolithic = !p.split && !p.flat;
	if (monolithic) {
		const char *base = strrchr(filename, '/');
		base = base ? base + 1 : filename;
		if (!quotable(base)) {
			r = CBAD("the file name must not contain quotes or line breaks");
			goto out;
		}
		size_t n = strlen(base) + 64;
		if (!(lines = malloc(n))) {
			r = vt_error_set(err, ENOMEM, filename, "create", NULL);
			goto out;
		}
		snprintf(lines, n, "RW %llu SPARSE \"%s\"\n",
		         (unsigned long long)(size / VMDK_SECTOR), base);
		r = init_sparse(f, size, p.compress, p.zeroed_grain, err);
	} else {
		r = create_extents(filename, size, &p, &lines, &made, &nmade, err);
	}
	if (r < 0)
		goto out;
	desc = vmdk_desc_build(random_cid(), pcid, p.subformat, o->backing_file, lines ? lines : "",
	                       p.hwversion, size, p.adapter, p.tools);
	if (!desc) {
		r = vt_error_set(err, ENOMEM, filename, "create", NULL);
		goto out;
	}
	size_t dlen = strlen(desc);
	if (monolithic && dlen > VMDK_DESC_SIZE) {
		/* It would run into the redundant grain directory. */
		r = CBAD("the descriptor is longer than its 20 sectors");
		goto out;
	}
	r = blk_file_pwrite(f, monolithic ? 0x200 : 0, desc, dlen, err);
	if (r == 0 && !monolithic)
		r = blk_file_truncate(f, dlen, err);
	if (r == 0 && formatting)
		*formatting = formatting_line(o, opts);
out:
	for (int i = 0; i < nmade; i++) {
		if (r < 0)
			unlink(made[i]); /* a failed create leaves no extent behind */
		free(made[i]);
	}
	free(made);
	free(lines);
	free(desc);
	return r;
}

bool vmdk_creates_several_files(const struct blk_optlist *opts)
{
	/* monolithicFlat writes a descriptor and a -flat extent; the twoGb subformats split
	 * the disk into -sNNN / -fNNN extents. */
	const char *v = blk_opts_get(opts, "subformat");
	return v && (strstr(v, "Flat") || strstr(v, "twoGb"));
}
