/* Format detection, in one place. Every image format qemu recognises is recognised here
 * by its magic, whether vtool has a driver for it or not, so that a known container is
 * never taken for a raw disk (writing through a raw view of a VDI would overwrite its
 * header, and converting it would copy the container instead of the disk). The scores
 * follow qemu's: 100 for a magic number, 2 for weak signs, raw is what is left.
 * A file given with an explicit format (-f raw) is never probed. */
#include "blk/probe.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

#define QCOW_MAGIC 0x514649fbu /* "QFI\xfb": qcow (version 1) and qcow2 (2, 3, ...) */

static int probe_qcow2(const uint8_t *b, size_t n)
{
	/* Any version from 2 up: the driver names an unsupported one, as qemu does. */
	return n >= 72 && be32(b) == QCOW_MAGIC && be32(b + 4) >= 2 ? 100 : 0;
}

static int probe_qcow(const uint8_t *b, size_t n)
{
	return n >= 48 && be32(b) == QCOW_MAGIC && be32(b + 4) == 1 ? 100 : 0;
}

static int probe_vdi(const uint8_t *b, size_t n)
{
	/* The signature follows 64 bytes of free text ("<<< Oracle VM VirtualBox ... >>>"). */
	return n >= 512 && le32(b + 64) == 0xbeda107fu ? 100 : 0;
}

static bool starts(const uint8_t *b, size_t n, const char *s, size_t at)
{
	size_t k = strlen(s);
	return n >= at + k && !memcmp(b + at, s, k);
}

/* A version line (after comments and blank lines) starts a text descriptor. */
static bool vmdk_descriptor(const uint8_t *b, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (b[i] == '#') {
			while (i < n && b[i] != '\n')
				i++;
			i++;
			continue;
		}
		if (b[i] == ' ') {
			while (i < n && b[i] == ' ')
				i++;
			if (i < n && b[i] == '\r')
				i++;
			if (i >= n || b[i] != '\n')
				return false;
			i++;
			continue;
		}
		for (char v = '1'; v <= '3'; v++) {
			char line[16];
			snprintf(line, sizeof(line), "version=%c\n", v);
			if (starts(b, n, line, i))
				return true;
			snprintf(line, sizeof(line), "version=%c\r\n", v);
			if (starts(b, n, line, i))
				return true;
		}
		return false;
	}
	return false;
}

static int probe_vmdk(const uint8_t *b, size_t n)
{
	if (n < 4)
		return 0;
	if (starts(b, n, "KDMV", 0) || starts(b, n, "COWD", 0))
		return 100; /* sparse extent (VMDK4), or a VMware 3 COW disk */
	return vmdk_descriptor(b, n) ? 100 : 0;
}

static int probe_vpc(const uint8_t *b, size_t n)
{
	/* Dynamic VHDs start with a copy of the footer. A fixed VHD has the footer only at
	 * its end and is read as raw, exactly as qemu does (the disk is the file's start). */
	return starts(b, n, "conectix", 0) ? 100 : 0;
}

static int probe_vhdx(const uint8_t *b, size_t n)
{
	return starts(b, n, "vhdxfile", 0) ? 100 : 0;
}

static int probe_qed(const uint8_t *b, size_t n)
{
	return n >= 64 && le32(b) == 0x00444551u ? 100 : 0; /* "QED\0" */
}

static int probe_luks(const uint8_t *b, size_t n)
{
	return n >= 8 && !memcmp(b, "LUKS\xba\xbe", 6) && b[6] == 0 && b[7] == 1 ? 100 : 0;
}

static int probe_parallels(const uint8_t *b, size_t n)
{
	return n >= 64 && (starts(b, n, "WithoutFreeSpace", 0) ||
	                   starts(b, n, "WithouFreSpacExt", 0)) && le32(b + 16) == 2 ? 100 : 0;
}

static int probe_bochs(const uint8_t *b, size_t n)
{
	/* magic[32], type[16], subtype[16], version: NUL-terminated strings. */
	if (n < 512 || strncmp((const char *)b, "Bochs Virtual HD Image", 32) ||
	    strncmp((const char *)b + 32, "Redolog", 16) ||
	    strncmp((const char *)b + 48, "Growing", 16))
		return 0;
	uint32_t v = le32(b + 64);
	return v == 0x00020000u || v == 0x00010000u ? 100 : 0;
}

static int probe_cloop(const uint8_t *b, size_t n)
{
	return starts(b, n, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 "
	              "/dev/cloop $1\n", 0) ? 2 : 0;
}

static const struct {
	const char *name;
	const char *what;      /* for messages: what users call it */
	int (*probe)(const uint8_t *buf, size_t len);
} formats[] = {
	{ "qcow2", "qcow2", probe_qcow2 },
	{ "qcow", "qcow (version 1)", probe_qcow },
	{ "vdi", "VirtualBox VDI", probe_vdi },
	{ "vmdk", "VMware VMDK", probe_vmdk },
	{ "vpc", "VHD (vpc)", probe_vpc },
	{ "vhdx", "Hyper-V VHDX", probe_vhdx },
	{ "qed", "QED", probe_qed },
	{ "luks", "LUKS encrypted", probe_luks },
	{ "parallels", "Parallels", probe_parallels },
	{ "bochs", "Bochs", probe_bochs },
	{ "cloop", "cloop", probe_cloop },
};

const char *blk_probe_buffer(const uint8_t *buf, size_t len)
{
	const char *best = "raw";
	int best_score = 1;

	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		int s = formats[i].probe(buf, len);
		if (s > best_score) {
			best_score = s;
			best = formats[i].name;
		}
	}
	return best;
}

const char *blk_probe_describe(const char *format)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (!strcmp(formats[i].name, format))
			return formats[i].what;
	return !strcmp(format, "dmg") ? "Apple DMG" : format;
}

int blk_probe(struct blk_file *f, const char **format, struct vt_error *err)
{
	uint8_t buf[BLK_PROBE_BYTES];
	uint64_t size;
	int r;

	if ((r = blk_file_size(f, &size, err)) < 0)
		return r;
	/* A short file reads as zeros past its end, and the probes see the whole buffer,
	 * as in qemu (a 100-byte file with a VDI signature is a VDI there too). */
	if ((r = blk_file_pread(f, 0, buf, sizeof(buf), err)) < 0)
		return r;
	*format = blk_probe_buffer(buf, sizeof(buf));
	/* A UDIF disk image (.dmg) says what it is in a trailer ("koly") in its last 512
	 * bytes; qemu goes by the file name, which would refuse any raw disk named *.dmg. */
	if (!strcmp(*format, "raw") && size >= 1024) {
		uint8_t tail[4];
		if ((r = blk_file_pread(f, size - 512, tail, 4, err)) < 0)
			return r;
		if (!memcmp(tail, "koly", 4))
			*format = "dmg";
	}
	return 0;
}
