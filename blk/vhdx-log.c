/* The VHDX metadata log: a circular buffer of 4 KiB sectors in which a writer records
 * metadata changes before making them in place, so that a crash in between is repaired
 * by replaying the log. An entry is a header and descriptors (126 in the first sector,
 * 128 in each further one), then one data sector per "desc" descriptor; "zero"
 * descriptors zero a range. A log is active when the current header names a non-zero
 * log GUID; its entries carry that GUID and a sequence number.
 *
 * Which entries are replayed follows qemu 7.2, so that both tools see the same disk after
 * a crash: the log is scanned from its start for valid entries (signature, GUID, sizes,
 * descriptors, CRC-32C); a run of valid entries with consecutive sequence numbers is a
 * sequence; the sequence whose first entry has the highest number is replayed, then the
 * log is emptied (log GUID zero in both headers). Beyond qemu, writes outside the image
 * (into the header section, or past the end the entry itself declares) are refused
 * rather than made, and zeroing is one call rather than a loop of sectors.
 *
 * We write one entry per metadata change at the log's start, apply it at once and empty
 * the log again, as qemu does; a crash leaves at most that one entry to replay. */
#include "blk/vhdx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t zero_guid[16];

struct log_seq {
	bool valid;
	uint32_t start, end;    /* log offsets: first entry, after the last one */
	uint32_t count;
	uint64_t first_seq;
};

struct log_reader {
	struct vhdx *s;
	uint64_t fsize;
	uint32_t pos;           /* log offset of the next sector */
};

static uint32_t next_pos(const struct vhdx *s, uint32_t pos)
{
	pos += VHDX_LOG_SECTOR;
	return pos >= s->log_length ? 0 : pos;
}

/* Read the sector at the reader's position and advance (past the file's end: zeros). */
static int read_sector(struct log_reader *lr, uint8_t *buf, struct vt_error *err)
{
	uint64_t off = lr->s->log_offset + lr->pos;
	int r = 0;
	if (off >= lr->fsize)
		memset(buf, 0, VHDX_LOG_SECTOR);
	else
		r = blk_file_pread(lr->s->b->file, off, buf, VHDX_LOG_SECTOR, err);
	lr->pos = next_pos(lr->s, lr->pos);
	return r;
}

struct entry_header {
	uint32_t checksum, entry_length, desc_count;
	uint64_t seq, flushed_file_offset, last_file_offset;
};

static bool entry_header_valid(const struct vhdx *s, const uint8_t *h, struct entry_header *eh)
{
	eh->checksum = vhdx_le32(h + VHDX_LOGE_OFF(checksum));
	eh->entry_length = vhdx_le32(h + VHDX_LOGE_OFF(entry_length));
	eh->seq = vhdx_le64(h + VHDX_LOGE_OFF(sequence));
	eh->desc_count = vhdx_le32(h + VHDX_LOGE_OFF(descriptor_count));
	eh->flushed_file_offset = vhdx_le64(h + VHDX_LOGE_OFF(flushed_file_offset));
	eh->last_file_offset = vhdx_le64(h + VHDX_LOGE_OFF(last_file_offset));
	return !memcmp(h, "loge", 4) && eh->entry_length <= s->log_length &&
	       eh->entry_length % VHDX_LOG_SECTOR == 0 && eh->seq != 0 &&
	       !memcmp(h + VHDX_LOGE_OFF(log_guid), s->hdr[s->cur] + VHDX_HDR_OFF(log_guid), 16) &&
	       (uint64_t)eh->desc_count * 32 <= eh->entry_length;
}

/* Descriptor k of an entry sits in sector (k + 2) / 128 at (k + 2) % 128 * 32. */
static uint32_t desc_sectors(uint32_t count)
{
	return (uint32_t)(((uint64_t)count + 2 + 127) / 128);
}

static bool desc_valid(const uint8_t *d, uint64_t seq)
{
	if (vhdx_le64(d + 24) != seq || vhdx_le64(d + 16) % VHDX_LOG_SECTOR)
		return false;
	if (!memcmp(d, "zero", 4))
		return vhdx_le64(d + 8) % VHDX_LOG_SECTOR == 0;
	return !memcmp(d, "desc", 4);
}

/* Validate the entry at lr->pos (after the one numbered prev_seq, or any if 0). On
 * return lr->pos is past what was read, as qemu leaves it: one sector for a bad header,
 * the whole entry otherwise. A bad descriptor in a good header fails the open. */
static int validate_entry(struct log_reader *lr, uint64_t prev_seq, bool *valid,
                          struct entry_header *eh, struct vt_error *err)
{
	struct vhdx *s = lr->s;
	uint8_t buf[VHDX_LOG_SECTOR];
	uint32_t start = lr->pos;
	int r;

	*valid = false;
	if ((r = read_sector(lr, buf, err)) < 0)
		return r;
	if (!entry_header_valid(s, buf, eh) || (prev_seq && eh->seq != prev_seq + 1)) {
		lr->pos = next_pos(s, start);
		return 0;
	}
	uint32_t nd = desc_sectors(eh->desc_count), total = eh->entry_length / VHDX_LOG_SECTOR;
	uint32_t crc = 0xffffffffu;
	for (uint32_t sec = 0; sec < nd; sec++) {
		if (sec && (r = read_sector(lr, buf, err)) < 0)
			return r;
		for (uint32_t k = sec ? 0 : 2; k < 128; k++) {
			uint64_t d = (uint64_t)sec * 128 + k - 2;
			if (d < eh->desc_count && !desc_valid(buf + k * 32, eh->seq))
				return vt_error_set(err, EINVAL, s->b->filename, "open",
				                    "VHDX log entry %llu has an invalid descriptor",
				                    (unsigned long long)eh->seq);
		}
		if (sec == 0)
			memset(buf + VHDX_LOGE_OFF(checksum), 0, 4);
		crc = vhdx_crc32c(crc, buf, VHDX_LOG_SECTOR);
	}
	for (uint32_t sec = nd; sec < total; sec++) {
		if ((r = read_sector(lr, buf, err)) < 0)
			return r;
		crc = vhdx_crc32c(crc, buf, VHDX_LOG_SECTOR);
	}
	*valid = (crc ^ 0xffffffffu) == eh->checksum;
	return 0;
}

static int search(struct vhdx *s, uint64_t fsize, struct log_seq *best, struct vt_error *err)
{
	struct log_reader lr = { s, fsize, 0 };
	struct entry_header eh;
	bool valid;
	int r;

	memset(best, 0, sizeof(*best));
	for (;;) {
		uint32_t tail = lr.pos;
		/* Sectors past the end of the file read as zeros: no entry starts there. */
		if (s->log_offset + tail >= fsize)
			break;
		if ((r = validate_entry(&lr, 0, &valid, &eh, err)) < 0)
			return r;
		if (valid) {
			struct log_seq cur = { true, tail, lr.pos, 1, eh.seq };
			uint64_t prev = 0; /* qemu takes any valid entry as the second one */
			for (;;) {
				if ((r = validate_entry(&lr, prev, &valid, &eh, err)) < 0)
					return r;
				if (!valid)
					break;
				cur.end = lr.pos;
				cur.count++;
				prev = eh.seq;
			}
			if (!best->valid || cur.first_seq > best->first_seq)
				*best = cur;
		}
		if (lr.pos < tail)
			break;
	}
	if (best->valid)
		s->log_seq = best->first_seq + 1;
	return 0;
}

/* Where a replayed write may go: past the header section, inside what the entry says the
 * file spans (or the file itself). */
static bool target_ok(uint64_t off, uint64_t len, uint64_t limit)
{
	return off >= VHDX_HEADER_SECTION_END && len <= limit && off <= limit - len;
}

/* Log offset of the n-th sector from pos. */
static uint32_t pos_add(const struct vhdx *s, uint32_t pos, uint64_t n)
{
	return (uint32_t)((pos + n * VHDX_LOG_SECTOR) % s->log_length);
}

/* Apply one descriptor: a data sector (the next one the entry holds) or a zeroed range. */
static int apply_desc(struct log_reader *lr, const uint8_t *d, uint64_t seq, uint64_t limit,
                      uint8_t *data, struct vt_error *err)
{
	struct blk *b = lr->s->b;
	uint64_t off = vhdx_le64(d + 16);
	uint8_t sector[VHDX_LOG_SECTOR];
	int r;

	if (!desc_valid(d, seq))
		return vt_error_set(err, EINVAL, b->filename, "replay log",
		                    "VHDX log entry changed while replaying it");
	if (!memcmp(d, "zero", 4)) {
		uint64_t len = vhdx_le64(d + 8);
		if (!target_ok(off, len, limit))
			return vt_error_set(err, EINVAL, b->filename, "replay log",
			                    "VHDX log entry zeroes outside the image");
		return len ? blk_file_zero(b->file, off, len, false, err) : 0;
	}
	if ((r = read_sector(lr, data, err)) < 0)
		return r;
	if (((uint64_t)vhdx_le32(data + 4) << 32 | vhdx_le32(data + 4092)) != seq)
		return vt_error_set(err, EINVAL, b->filename, "replay log",
		                    "VHDX log data sector of another entry");
	if (!target_ok(off, VHDX_LOG_SECTOR, limit))
		return vt_error_set(err, EINVAL, b->filename, "replay log",
		                    "VHDX log entry writes outside the image");
	memcpy(sector, d + 8, 8);
	memcpy(sector + 8, data + 8, 4084);
	memcpy(sector + 4092, d + 4, 4);
	return blk_file_pwrite(b->file, off, sector, VHDX_LOG_SECTOR, err);
}

/* Replay one entry starting at *pos; *pos ends where qemu's reader does: past the
 * descriptor sectors and the data sectors the descriptors used. */
static int replay_entry(struct vhdx *s, uint32_t *pos, uint8_t *desc, uint8_t *data,
                        struct vt_error *err)
{
	struct blk *b = s->b;
	struct log_reader dr = { s, 0, *pos }, lr;
	struct entry_header eh;
	int r;

	if ((r = blk_file_size(b->file, &dr.fsize, err)) < 0 || (r = read_sector(&dr, desc, err)) < 0)
		return r;
	if (!entry_header_valid(s, desc, &eh))
		return vt_error_set(err, EINVAL, b->filename, "replay log",
		                    "VHDX log entry changed while replaying it");
	if (eh.flushed_file_offset > dr.fsize)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "VHDX log: the image file is shorter (%llu) than its log says "
		                    "(%llu); it has been truncated", (unsigned long long)dr.fsize,
		                    (unsigned long long)eh.flushed_file_offset);
	uint64_t limit = eh.last_file_offset > dr.fsize ? eh.last_file_offset : dr.fsize;
	limit = (limit + VHDX_MIB - 1) & ~(uint64_t)(VHDX_MIB - 1);
	uint32_t nd = desc_sectors(eh.desc_count);
	/* Descriptor sectors come first, then the data sectors in descriptor order. */
	lr = dr;
	lr.pos = pos_add(s, *pos, nd);
	for (uint64_t k = 0; r == 0 && k < eh.desc_count; k++) {
		uint32_t slot = (uint32_t)((k + 2) % 128);
		if (k && slot == 0) {
			dr.pos = pos_add(s, *pos, (k + 2) / 128);
			if ((r = read_sector(&dr, desc, err)) < 0)
				break;
		}
		r = apply_desc(&lr, desc + slot * 32, eh.seq, limit, data, err);
	}
	if (r < 0)
		return r;
	*pos = lr.pos;
	/* The file must reach what the entry says; qemu grows it only when that is not a
	 * whole MiB (and then to the next one). */
	uint64_t size;
	if ((r = blk_file_size(b->file, &size, err)) < 0)
		return r;
	if (size < eh.last_file_offset && eh.last_file_offset % VHDX_MIB) {
		uint64_t grown = (eh.last_file_offset + VHDX_MIB - 1) & ~(uint64_t)(VHDX_MIB - 1);
		if (grown > INT64_MAX)
			return vt_error_set(err, EINVAL, b->filename, "replay log",
			                    "VHDX log: file size out of range");
		r = blk_file_truncate(b->file, grown, err);
	}
	return r;
}

static int replay(struct vhdx *s, const struct log_seq *seq, struct vt_error *err)
{
	uint8_t *desc = malloc(VHDX_LOG_SECTOR), *data = malloc(VHDX_LOG_SECTOR);
	uint32_t pos = seq->start;
	int r = desc && data ? vhdx_user_visible_write(s, err)
	                     : vt_error_set(err, ENOMEM, s->b->filename, "replay log", NULL);

	for (uint32_t n = 0; r == 0 && n < seq->count; n++)
		r = replay_entry(s, &pos, desc, data, err);
	free(desc);
	free(data);
	if (r == 0)
		r = blk_file_flush(s->b->file, err);
	if (r == 0)
		r = vhdx_update_headers(s, false, zero_guid, err);
	return r;
}

int vhdx_log_open(struct vhdx *s, bool *replayed, struct vt_error *err)
{
	struct blk *b = s->b;
	const uint8_t *h = s->hdr[s->cur];
	struct log_seq seq;
	uint64_t fsize;
	int r;

	*replayed = false;
	if (s->log_offset < VHDX_LOG_MIN || s->log_offset % VHDX_LOG_MIN)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "VHDX log offset %llu is not a whole MiB past the header "
		                    "section", (unsigned long long)s->log_offset);
	if (vhdx_le16(h + VHDX_HDR_OFF(log_version)) != 0)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "VHDX log version %u (only 0 exists)",
		                    vhdx_le16(h + VHDX_HDR_OFF(log_version)));
	if (!memcmp(h + VHDX_HDR_OFF(log_guid), zero_guid, 16) || s->log_length == 0)
		return 0;
	if (s->log_length % VHDX_LOG_MIN)
		return vt_error_set(err, EINVAL, b->filename, "open",
		                    "VHDX log length %u is not a whole MiB", s->log_length);
	if ((r = blk_file_size(b->file, &fsize, err)) < 0 ||
	    (r = search(s, fsize, &seq, err)) < 0 || !seq.valid)
		return r;
	if (!b->writable)
		return vt_error_set(err, EPERM, b->filename, "open",
		                    "VHDX image file '%s' opened read-only, but contains a log "
		                    "that needs to be replayed (to replay it, run: vtool img "
		                    "check -r all '%s')", b->filename, b->filename);
	if ((r = replay(s, &seq, err)) == 0)
		*replayed = true;
	return r;
}

int vhdx_log_write(struct vhdx *s, uint64_t off, const void *buf, size_t len,
                   struct vt_error *err)
{
	struct blk *b = s->b;
	uint64_t first = off / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;
	uint64_t end = (off + len + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;
	uint32_t n = (uint32_t)((end - first) / VHDX_LOG_SECTOR), nd = desc_sectors(n);
	uint64_t total = (uint64_t)(nd + n) * VHDX_LOG_SECTOR, fsize;
	uint8_t guid[16];
	int r;

	if (len == 0 || total > s->log_length)
		return vt_error_set(err, EINVAL, b->filename, "write log",
		                    "a metadata update of %zu bytes does not fit the %u-byte log",
		                    len, s->log_length);
	uint8_t *entry = calloc(1, total), *sectors = malloc(end - first);
	if (!entry || !sectors) {
		free(entry);
		free(sectors);
		return vt_error_set(err, ENOMEM, b->filename, "write log", NULL);
	}
	/* The sectors as they will be: what is on disk, with the update merged in. */
	if ((r = blk_file_pread(b->file, first, sectors, end - first, err)) < 0 ||
	    (r = blk_file_size(b->file, &fsize, err)) < 0)
		goto out;
	memcpy(sectors + (off - first), buf, len);
	/* A fresh log GUID: entries of earlier sessions become invalid. */
	vhdx_random_guid(guid);
	if ((r = vhdx_update_headers(s, false, guid, err)) < 0)
		goto out;
	if (s->log_seq == 0)
		s->log_seq = 1;
	memcpy(entry, "loge", 4);
	vhdx_put_le32(entry + VHDX_LOGE_OFF(entry_length), (uint32_t)total);
	vhdx_put_le32(entry + VHDX_LOGE_OFF(tail), 0); /* the entry is its own sequence */
	vhdx_put_le64(entry + VHDX_LOGE_OFF(sequence), s->log_seq);
	vhdx_put_le32(entry + VHDX_LOGE_OFF(descriptor_count), n);
	memcpy(entry + VHDX_LOGE_OFF(log_guid), guid, 16);
	vhdx_put_le64(entry + VHDX_LOGE_OFF(flushed_file_offset), fsize);
	vhdx_put_le64(entry + VHDX_LOGE_OFF(last_file_offset), fsize);
	for (uint32_t k = 0; k < n; k++) {
		uint8_t *d = entry + (size_t)(k + 2) * 32; /* descriptors run across sectors */
		uint8_t *sec = sectors + (size_t)k * VHDX_LOG_SECTOR;
		uint8_t *ds = entry + (size_t)(nd + k) * VHDX_LOG_SECTOR;
		memcpy(d, "desc", 4);
		memcpy(d + 4, sec + 4092, 4);
		memcpy(d + 8, sec, 8);
		vhdx_put_le64(d + 16, first + (uint64_t)k * VHDX_LOG_SECTOR);
		vhdx_put_le64(d + 24, s->log_seq);
		memcpy(ds, "data", 4);
		vhdx_put_le32(ds + 4, (uint32_t)(s->log_seq >> 32));
		memcpy(ds + 8, sec + 8, 4084);
		vhdx_put_le32(ds + 4092, (uint32_t)s->log_seq);
	}
	vhdx_put_le32(entry + VHDX_LOGE_OFF(checksum),
	              vhdx_checksum(entry, total, VHDX_LOGE_OFF(checksum)));
	/* Entry durable, then the change in place, durable, then an empty log. */
	if ((r = blk_file_pwrite(b->file, s->log_offset, entry, total, err)) < 0 ||
	    (r = blk_file_flush(b->file, err)) < 0 ||
	    (r = blk_file_pwrite(b->file, first, sectors, end - first, err)) < 0 ||
	    (r = blk_file_flush(b->file, err)) < 0 ||
	    (r = vhdx_update_headers(s, false, zero_guid, err)) < 0)
		goto out;
	s->log_seq++;
out:
	free(entry);
	free(sectors);
	return r;
}
