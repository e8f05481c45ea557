/* The VHDX header section: the two headers (choosing the current one, updating them as
 * the specification asks), the region table, and the helpers every part of the driver
 * uses (CRC-32C, GUIDs, the BAT's size). */
#include "blk/vhdx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

const uint8_t vhdx_guid_bat[16] = { 0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
                                    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
const uint8_t vhdx_guid_metadata[16] = { 0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
                                         0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
const uint8_t vhdx_guid_file_params[16] = { 0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
                                            0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };
const uint8_t vhdx_guid_virtual_size[16] = { 0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
                                             0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 };
const uint8_t vhdx_guid_page83[16] = { 0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
                                       0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 };
const uint8_t vhdx_guid_logical_sector[16] = { 0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
                                               0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f };
const uint8_t vhdx_guid_physical_sector[16] = { 0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
                                                0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 };
const uint8_t vhdx_guid_parent_locator[16] = { 0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
                                               0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c };

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	pthread_once(&crc_once, crc_init);
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t field)
{
	static const uint8_t zero[4];
	uint32_t crc = vhdx_crc32c(0xffffffffu, buf, field);
	crc = vhdx_crc32c(crc, zero, 4);
	return vhdx_crc32c(crc, buf + field + 4, len - field - 4) ^ 0xffffffffu;
}

void vhdx_random_guid(uint8_t guid[16])
{
	if (getrandom(guid, 16, 0) != 16) {
		uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)guid;
		for (int i = 0; i < 16; i++)
			guid[i] = (uint8_t)((t >> (i % 8 * 8)) ^ (uint64_t)(i * 151));
	}
	guid[6] = (uint8_t)((guid[6] & 0x0f) | 0x40); /* a random (version 4) GUID */
	guid[8] = (uint8_t)((guid[8] & 0x3f) | 0x80);
}

uint32_t vhdx_bat_entries(uint64_t disk_size, uint32_t block_size, unsigned chunk_bits)
{
	uint32_t data_blocks = (uint32_t)((disk_size + block_size - 1) / block_size);
	return data_blocks + ((data_blocks - 1) >> chunk_bits);
}

int vhdx_update_header(struct vhdx *s, bool new_data_guid, const uint8_t *log_guid,
                       struct vt_error *err)
{
	int next = 1 - s->cur;
	uint8_t *h = s->hdr[next];
	memcpy(h, s->hdr[s->cur], VHDX_HEADER_SIZE);
	vhdx_put_le64(h + VHDX_HDR_OFF(sequence), vhdx_le64(h + VHDX_HDR_OFF(sequence)) + 1);
	memcpy(h + VHDX_HDR_OFF(file_write_guid), s->session_guid, 16);
	if (new_data_guid)
		vhdx_random_guid(h + VHDX_HDR_OFF(data_write_guid));
	if (log_guid)
		memcpy(h + VHDX_HDR_OFF(log_guid), log_guid, 16);
	vhdx_put_le32(h + VHDX_HDR_OFF(checksum),
	              vhdx_checksum(h, VHDX_HEADER_SIZE, VHDX_HDR_OFF(checksum)));
	int r = blk_file_pwrite(s->b->file, next ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF, h,
	                        VHDX_HEADER_SIZE, err);
	if (r == 0)
		r = blk_file_flush(s->b->file, err);
	if (r == 0)
		s->cur = next;
	return r;
}

int vhdx_update_headers(struct vhdx *s, bool new_data_guid, const uint8_t *log_guid,
                        struct vt_error *err)
{
	int r = vhdx_update_header(s, new_data_guid, log_guid, err);
	return r < 0 ? r : vhdx_update_header(s, new_data_guid, log_guid, err);
}

int vhdx_user_visible_write(struct vhdx *s, struct vt_error *err)
{
	if (s->data_guid_new)
		return 0;
	int r = vhdx_update_headers(s, true, NULL, err);
	if (r == 0)
		s->data_guid_new = true;
	return r;
}

/* A header is valid with a matching checksum, its signature and version 1. */
static bool header_valid(const uint8_t *h)
{
	return vhdx_checksum(h, VHDX_HEADER_SIZE, VHDX_HDR_OFF(checksum)) ==
	           vhdx_le32(h + VHDX_HDR_OFF(checksum)) &&
	       !memcmp(h, "head", 4) && vhdx_le16(h + VHDX_HDR_OFF(version)) == 1;
}

int vhdx_open_headers(struct vhdx *s, struct vt_error *err)
{
	struct blk *b = s->b;
	int r;
	if ((r = blk_file_pread(b->file, VHDX_HEADER1_OFF, s->hdr[0], VHDX_HEADER_SIZE, err)) < 0 ||
	    (r = blk_file_pread(b->file, VHDX_HEADER2_OFF, s->hdr[1], VHDX_HEADER_SIZE, err)) < 0)
		return r;
	bool v0 = header_valid(s->hdr[0]), v1 = header_valid(s->hdr[1]);
	uint64_t q0 = vhdx_le64(s->hdr[0] + VHDX_HDR_OFF(sequence));
	uint64_t q1 = vhdx_le64(s->hdr[1] + VHDX_HDR_OFF(sequence));
	if (v0 && v1 && q0 == q1) {
		/* Disk2VHD writes two identical headers; different ones are ambiguous. */
		if (memcmp(s->hdr[0], s->hdr[1], sizeof(struct vhdx_header_disk)))
			v0 = v1 = false;
	}
	if (!v0 && !v1)
		return vt_error_set(err, EINVAL, b->filename, "open", "No valid VHDX header found");
	s->cur = v0 && (!v1 || q0 >= q1) ? 0 : 1;
	/* The non-current header may be garbage: writers rebuild it from the current one. */
	if (!(v0 && v1))
		memcpy(s->hdr[1 - s->cur], s->hdr[s->cur], VHDX_HEADER_SIZE);
	const uint8_t *h = s->hdr[s->cur];
	s->log_offset = vhdx_le64(h + VHDX_HDR_OFF(log_offset));
	s->log_length = vhdx_le32(h + VHDX_HDR_OFF(log_length));
	return 0;
}

bool vhdx_overlaps(const struct vhdx *s, uint64_t start, uint64_t len, int *which)
{
	for (int i = 0; i < s->nregions; i++)
		if (start < s->regions[i].end && start + len > s->regions[i].start) {
			if (which)
				*which = i;
			return true;
		}
	return false;
}

int vhdx_open_region_table(struct vhdx *s, struct vt_error *err)
{
	struct blk *b = s->b;
	uint8_t *t = malloc(VHDX_REGION_SIZE);
	bool bat = false, meta = false;
	int r;

	if (!t)
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	/* The log is a region too (qemu counts it first). */
	s->regions = calloc(2048 + 1, sizeof(*s->regions));
	if (!s->regions) {
		free(t);
		return vt_error_set(err, ENOMEM, b->filename, "open", NULL);
	}
	s->regions[s->nregions++] = (struct vhdx_range){ s->log_offset,
	                                                 s->log_offset + s->log_length };
	if ((r = blk_file_pread(b->file, VHDX_REGION1_OFF, t, VHDX_REGION_SIZE, err)) < 0)
		goto out;
	if (vhdx_checksum(t, VHDX_REGION_SIZE, 4) != vhdx_le32(t + 4) || memcmp(t, "regi", 4)) {
		r = vt_error_set(err, EINVAL, b->filename, "open",
		                 "VHDX region table: bad signature or checksum");
		goto out;
	}
	uint32_t n = vhdx_le32(t + 8);
	if (n > 2047) {
		r = vt_error_set(err, EINVAL, b->filename, "open",
		                 "VHDX region table: %u entries (at most 2047)", n);
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = t + 16 + 32 * (size_t)i;
		uint64_t off = vhdx_le64(e + 16);
		uint32_t len = vhdx_le32(e + 24), flags = vhdx_le32(e + 28);
		int w;
		if (off > UINT64_MAX - len) {
			r = vt_error_set(err, EINVAL, b->filename, "open",
			                 "VHDX region %u offset overflow", i);
			goto out;
		}
		if (vhdx_overlaps(s, off, len, &w)) {
			r = vt_error_set(err, EINVAL, b->filename, "open",
			                 "VHDX region %llu-%llu overlaps with region %llu-%.llu",
			                 (unsigned long long)off, (unsigned long long)(off + len),
			                 (unsigned long long)s->regions[w].start,
			                 (unsigned long long)s->regions[w].end);
			goto out;
		}
		s->regions[s->nregions++] = (struct vhdx_range){ off, off + len };
		if (!memcmp(e, vhdx_guid_bat, 16) || !memcmp(e, vhdx_guid_metadata, 16)) {
			bool is_bat = !memcmp(e, vhdx_guid_bat, 16);
			if (is_bat ? bat : meta) {
				r = vt_error_set(err, EINVAL, b->filename, "open",
				                 "VHDX region table: two %s regions",
				                 is_bat ? "BAT" : "metadata");
				goto out;
			}
			if (is_bat) {
				bat = true;
				s->bat_offset = off;
				s->bat_length = len;
			} else {
				meta = true;
				s->meta_offset = off;
			}
		} else if (flags & 1) {
			r = vt_error_set(err, ENOTSUP, b->filename, "open",
			                 "VHDX region table: a required region vtool does not know");
			goto out;
		}
	}
	if (!bat || !meta)
		r = vt_error_set(err, EINVAL, b->filename, "open",
		                 "VHDX region table: no %s region", bat ? "metadata" : "BAT");
out:
	free(t);
	return r;
}

