/* Creating VHDX images with qemu-img's options, defaults and layout: the header section,
 * the log (1 MiB by default) at 1 MiB, the BAT after it, a 1 MiB metadata region, and
 * the payload from 5 MiB past the BAT's end. Dynamic images have no blocks; with
 * block_state_zero (qemu's default) every payload entry says "zero". Fixed images are as
 * large as the disk, their blocks present at 1 MiB-aligned offsets, unless
 * block_state_zero is on (qemu's default), which leaves them in the "zero" state too. */
#include "blk/vhdx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct blk_optdesc vhdx_create_opts[] = {
	{ "block_size", BLK_OPT_SIZE,
	  "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size." },
	{ "block_state_zero", BLK_OPT_BOOL,
	  "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set "
	  "to 'off' when using 'qemu-img convert' with subformat=dynamic." },
	{ "log_size", BLK_OPT_SIZE, "Log size; min 1MB." },
	{ "size", BLK_OPT_SIZE, "Virtual disk size; max of 64TB." },
	{ "subformat", BLK_OPT_STRING,
	  "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'." },
	{ NULL, 0, NULL },
};

struct params {
	uint64_t size, log_size, block_size;
	bool fixed, zero_blocks;
};

static uint64_t round_mib(uint64_t v)
{
	return v > UINT64_MAX - (VHDX_MIB - 1) ? UINT64_MAX & ~(uint64_t)(VHDX_MIB - 1)
	                                       : (v + VHDX_MIB - 1) & ~(uint64_t)(VHDX_MIB - 1);
}

/* qemu's rounding and checks, in its order and words. */
static int get_params(const char *filename, const struct blk_create_opts *o,
                      const struct blk_optlist *opts, struct params *p, struct vt_error *err)
{
	const char *sub = blk_opts_get(opts, "subformat");
	int r;

	p->size = (o->size + 511) & ~511ull;
	p->log_size = VHDX_MIB;
	p->block_size = 0;
	p->zero_blocks = true;
	if ((r = blk_opts_get_size(opts, "log_size", &p->log_size, err)) < 0 ||
	    (r = blk_opts_get_size(opts, "block_size", &p->block_size, err)) < 0 ||
	    (r = blk_opts_get_bool(opts, "block_state_zero", &p->zero_blocks, err)) < 0)
		return r;
	if (sub && strcmp(sub, "dynamic") && strcmp(sub, "fixed"))
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Parameter 'subformat' does not accept value '%s'", sub);
	p->fixed = sub && !strcmp(sub, "fixed");
	p->log_size = round_mib(p->log_size);
	p->block_size = round_mib(p->block_size);
	if (p->block_size > VHDX_BLOCK_MAX)
		p->block_size = VHDX_BLOCK_MAX;
	if (p->size > VHDX_MAX_SIZE)
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Image size too large; max of 64TB");
	if (p->log_size > UINT32_MAX)
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Log size must be smaller than 4 GB");
	if (p->log_size < VHDX_MIB)
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Log size must be a multiple of 1 MB");
	if (p->block_size == 0) /* auto: keeps the BAT small enough to hold in memory */
		p->block_size = p->size > (32ull << 40) ? 64u * VHDX_MIB
		              : p->size > (100ull << 30) ? 32u * VHDX_MIB
		              : p->size > (1ull << 30) ? 16u * VHDX_MIB : 8u * VHDX_MIB;
	if (p->block_size & (p->block_size - 1))
		return vt_error_set(err, EINVAL, filename, "create",
		                    "Block size must be a power of two");
	return 0;
}

static int write_headers(struct blk_file *f, const struct params *p, struct vt_error *err)
{
	uint8_t h[VHDX_HEADER_SIZE] = { 0 };
	uint32_t seq;
	vhdx_random_guid(h); /* 16 random bytes; 4 of them make the first sequence number */
	memcpy(&seq, h, 4);
	memset(h, 0, 16);
	memcpy(h, "head", 4);
	vhdx_put_le64(h + VHDX_HDR_OFF(sequence), seq);
	vhdx_random_guid(h + VHDX_HDR_OFF(file_write_guid));
	vhdx_random_guid(h + VHDX_HDR_OFF(data_write_guid));
	vhdx_put_le16(h + VHDX_HDR_OFF(version), 1);
	vhdx_put_le32(h + VHDX_HDR_OFF(log_length), (uint32_t)p->log_size);
	vhdx_put_le64(h + VHDX_HDR_OFF(log_offset), VHDX_HEADER_SECTION_END);
	for (int i = 0; i < 2; i++) {
		vhdx_put_le64(h + VHDX_HDR_OFF(sequence), (uint64_t)seq + (uint64_t)i);
		vhdx_put_le32(h + VHDX_HDR_OFF(checksum),
		              vhdx_checksum(h, VHDX_HEADER_SIZE, VHDX_HDR_OFF(checksum)));
		int r = blk_file_pwrite(f, i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF, h,
		                        VHDX_HEADER_SIZE, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int write_region_tables(struct blk_file *f, uint64_t bat_off, uint64_t bat_len,
                               uint64_t meta_off, struct vt_error *err)
{
	uint8_t *t = calloc(1, VHDX_REGION_SIZE);
	int r;
	if (!t)
		return vt_error_set(err, ENOMEM, "", "create", NULL);
	memcpy(t, "regi", 4);
	vhdx_put_le32(t + 8, 2);
	memcpy(t + 16, vhdx_guid_bat, 16);
	vhdx_put_le64(t + 32, bat_off);
	vhdx_put_le32(t + 40, (uint32_t)bat_len);
	memcpy(t + 48, vhdx_guid_metadata, 16);
	vhdx_put_le64(t + 64, meta_off);
	vhdx_put_le32(t + 72, VHDX_MIB);
	vhdx_put_le32(t + 4, vhdx_checksum(t, VHDX_REGION_SIZE, 4));
	if ((r = blk_file_pwrite(f, VHDX_REGION1_OFF, t, VHDX_REGION_SIZE, err)) == 0)
		r = blk_file_pwrite(f, VHDX_REGION2_OFF, t, VHDX_REGION_SIZE, err);
	free(t);
	return r;
}

static int write_metadata(struct blk_file *f, const struct params *p, uint64_t meta_off,
                          struct vt_error *err)
{
	static const struct { const uint8_t *guid; uint32_t len, flags; } items[] = {
		{ vhdx_guid_file_params, 8, 4 },        /* required */
		{ vhdx_guid_virtual_size, 8, 6 },       /* required, virtual disk */
		{ vhdx_guid_page83, 16, 6 },
		{ vhdx_guid_logical_sector, 4, 6 },
		{ vhdx_guid_physical_sector, 4, 6 },
	};
	uint8_t table[32 + 5 * 32] = { 0 }, values[40] = { 0 };
	uint32_t at = 64 * 1024;
	int r;

	memcpy(table, "metadata", 8);
	vhdx_put_le16(table + 10, 5);
	for (int i = 0; i < 5; i++) {
		uint8_t *e = table + 32 + 32 * i;
		memcpy(e, items[i].guid, 16);
		vhdx_put_le32(e + 16, at);
		vhdx_put_le32(e + 20, items[i].len);
		vhdx_put_le32(e + 24, items[i].flags);
		at += items[i].len;
	}
	vhdx_put_le32(values, (uint32_t)p->block_size);
	vhdx_put_le32(values + 4, p->fixed ? 1 : 0); /* leave blocks allocated */
	vhdx_put_le64(values + 8, p->size);
	vhdx_random_guid(values + 16);               /* SCSI page 83 identifier */
	vhdx_put_le32(values + 32, 512);
	vhdx_put_le32(values + 36, 512);
	if ((r = blk_file_pwrite(f, meta_off, table, sizeof(table), err)) == 0)
		r = blk_file_pwrite(f, meta_off + 64 * 1024, values, sizeof(values), err);
	return r;
}

/* The BAT, a MiB at a time: entries for every payload block (bitmap entries stay 0). */
static int write_bat(struct blk_file *f, const struct params *p, uint64_t bat_off,
                     uint64_t bat_len, uint64_t data_off, unsigned chunk_bits,
                     struct vt_error *err)
{
	uint64_t blocks = (p->size + p->block_size - 1) / p->block_size;
	unsigned state = p->zero_blocks ? VHDX_BLOCK_ZERO
	               : p->fixed ? VHDX_BLOCK_FULLY_PRESENT : VHDX_BLOCK_NOT_PRESENT;
	uint8_t *buf = malloc(VHDX_MIB);
	int r = buf ? 0 : vt_error_set(err, ENOMEM, "", "create", NULL);

	for (uint64_t at = 0; r == 0 && at < bat_len; at += VHDX_MIB) {
		memset(buf, 0, VHDX_MIB);
		uint64_t first = at / 8, last = first + VHDX_MIB / 8;
		for (uint64_t i = first; i < last; i++) {
			/* BAT index i holds payload block i - i / (chunk_ratio + 1), unless it is
			 * a sector-bitmap entry. */
			uint64_t ratio = 1ull << chunk_bits;
			if ((i + 1) % (ratio + 1) == 0)
				continue;
			uint64_t pb = i - i / (ratio + 1);
			if (pb >= blocks)
				break;
			uint64_t e = state;
			if (state == VHDX_BLOCK_FULLY_PRESENT)
				e |= round_mib(data_off + pb * p->block_size);
			vhdx_put_le64(buf + 8 * (i - first), e);
		}
		r = blk_file_pwrite(f, bat_off + at, buf, VHDX_MIB, err);
	}
	free(buf);
	return r;
}

int vhdx_create(struct blk_file *f, const char *filename, const struct blk_create_opts *o,
                const struct blk_optlist *opts, char **formatting, struct vt_error *err)
{
	struct params p;
	int r = get_params(filename, o, opts, &p, err);
	if (r < 0)
		return r;
	unsigned chunk_bits = (unsigned)__builtin_ctzll(
		(uint64_t)VHDX_MAX_SECTORS_PER_BLOCK * 512 / p.block_size);
	uint64_t entries = vhdx_bat_entries(p.size, (uint32_t)p.block_size, chunk_bits);
	uint64_t bat_off = round_mib(VHDX_HEADER_SECTION_END + p.log_size);
	uint64_t bat_len = round_mib(entries * 8);
	uint64_t meta_off = round_mib(bat_off + bat_len);
	uint64_t data_off = bat_off + bat_len + 5ull * VHDX_MIB; /* room after the metadata */

	/* qemu writes the BAT in one request, which cannot reach 2 GiB (an empty disk with
	 * 256 MiB blocks gets a BAT that large, counted as qemu counts). */
	if ((p.fixed || p.zero_blocks) && bat_len > 0x7ffffe00u)
		return vt_error_set(err, EIO, filename, "create",
		                    "Failed to write the BAT: Input/output error");
	/* File identifier: signature and the creator, in UTF-16. */
	static const char creator[] = "vtool v" VTOOL_VERSION;
	uint8_t id[8 + 2 * sizeof(creator)] = { 0 };
	memcpy(id, "vhdxfile", 8);
	for (size_t i = 0; i + 1 < sizeof(creator); i++)
		id[8 + 2 * i] = (uint8_t)creator[i];
	if ((r = blk_file_pwrite(f, 0, id, 8 + 2 * (sizeof(creator) - 1), err)) < 0 ||
	    (r = write_headers(f, &p, err)) < 0 ||
	    (r = blk_file_truncate(f, data_off + (p.fixed ? p.size : 0), err)) < 0 ||
	    (r = (p.fixed || p.zero_blocks ?
	          write_bat(f, &p, bat_off, bat_len, data_off, chunk_bits, err) : 0)) < 0 ||
	    (r = write_region_tables(f, bat_off, bat_len, meta_off, err)) < 0 ||
	    (r = write_metadata(f, &p, meta_off, err)) < 0) {
		if (err && !err->file[0])
			snprintf(err->file, sizeof(err->file), "%s", filename);
		return r;
	}
	if (formatting) {
		const char *sub = blk_opts_get(opts, "subformat");
		const char *bsz = blk_opts_get(opts, "block_state_zero");
		uint64_t ls = VHDX_MIB, bs = 0;
		blk_opts_get_size(opts, "log_size", &ls, NULL);
		blk_opts_get_size(opts, "block_size", &bs, NULL);
		char buf[512];
		snprintf(buf, sizeof(buf), "fmt=vhdx size=%llu log_size=%llu block_size=%llu%s%.64s%s%.16s",
		         (unsigned long long)o->size, (unsigned long long)ls, (unsigned long long)bs,
		         sub ? " subformat=" : "", sub ? sub : "",
		         bsz ? " block_state_zero=" : "", bsz ? bsz : "");
		if (!(*formatting = strdup(buf)))
			return vt_error_set(err, ENOMEM, filename, "create", NULL);
	}
	return 0;
}
