/* The ATAPI CD-ROM's packet commands (SCSI/MMC subset): enough for SeaBIOS's El Torito
 * boot and Linux's sr driver. Media is an ISO image read in 2048-byte blocks; it is
 * present from power-on and cannot be changed (no monitor), so the one media event is
 * "new media" reported once after power-on. */
#include <string.h>

#include "vmm/disk.h"
#include "vmm/hw/ide.h"

enum {
	SK_NO_SENSE = 0, SK_NOT_READY = 2, SK_ILLEGAL_REQUEST = 5, SK_UNIT_ATTENTION = 6,
};
#define ASC_INVALID_OPCODE   0x20
#define ASC_LBA_OUT_OF_RANGE 0x21
#define ASC_INVALID_FIELD    0x24
#define ASC_NO_MEDIUM        0x3a

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v);
}
static uint32_t get16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t get32(const uint8_t *p) { return get16(p) << 16 | get16(p + 2); }

void atapi_identify(struct ide_drive *d)
{
	uint16_t *w = d->identify;

	memset(d->identify, 0, sizeof(d->identify));
	/* ATAPI, CD-ROM (type 5), removable, DRQ within 50 us, 12-byte packets */
	w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
	ide_string(&w[10], d->disk->serial, 10);
	ide_string(&w[23], "1.0", 4);
	ide_string(&w[27], "VTOOL DVD-ROM", 20);
	w[49] = (1 << 9) | (1 << 8);    /* LBA, DMA */
	w[53] = 0x0007;
	w[63] = 0x0407;
	w[64] = 0x0003;
	w[65] = w[66] = w[67] = w[68] = 120;
	w[71] = 30;
	w[72] = 30;
	w[80] = 0x001e;                  /* ATAPI-1 to -4 */
	w[88] = 0x203f;
}

static void sense(struct ide_drive *d, struct atapi_result *res, uint8_t key, uint8_t asc)
{
	d->sense_key = key;
	d->asc = asc;
	d->ascq = 0;
	res->check_condition = true;
}

static uint32_t blocks_of(const struct ide_drive *d)
{
	return (uint32_t)(d->disk->size / 2048);
}

static uint32_t read_toc(struct ide_drive *d, const uint8_t *cmd, uint8_t *buf)
{
	bool msf = cmd[1] & 2;
	uint32_t leadout = blocks_of(d);
	uint8_t *p = buf + 4;

	/* format 0: track 1 (data) and the lead-out */
	p[0] = 0; p[1] = 0x14; p[2] = 1; p[3] = 0;
	if (msf) {
		p[4] = 0; p[5] = 0; p[6] = 2; p[7] = 0; /* 00:02:00 = LBA 0 */
	} else {
		put32(p + 4, 0);
	}
	p += 8;
	p[0] = 0; p[1] = 0x14; p[2] = 0xaa; p[3] = 0;
	if (msf) {
		uint32_t f = leadout + 150;
		p[4] = 0; p[5] = (uint8_t)(f / 75 / 60); p[6] = (uint8_t)(f / 75 % 60); p[7] = (uint8_t)(f % 75);
	} else {
		put32(p + 4, leadout);
	}
	p += 8;
	uint32_t len = (uint32_t)(p - buf);
	put16(buf, len - 2);
	buf[2] = 1;
	buf[3] = 1;
	return len;
}

static uint32_t mode_sense(const uint8_t *cmd, uint8_t *buf, bool *ok)
{
	uint8_t page = cmd[2] & 0x3f;
	uint8_t *p = buf + 8;

	*ok = true;
	memset(buf, 0, 8);
	buf[2] = 0x70; /* medium type: 120 mm CD-ROM, data only */
	if (page == 0x01 || page == 0x3f) {
		/* read/write error recovery: defaults */
		memset(p, 0, 12);
		p[0] = 0x01;
		p[1] = 0x0a;
		p += 12;
	}
	if (page == 0x2a || page == 0x3f) {
		/* CD capabilities: reads CD-R/RW, DVD-ROM; tray, eject, lock */
		memset(p, 0, 28);
		p[0] = 0x2a;
		p[1] = 0x1a;
		p[2] = 0x3b;
		p[4] = 0x71;
		p[6] = 0x2d;
		put16(p + 8, 706);
		put16(p + 10, 2);
		put16(p + 12, 512);
		put16(p + 14, 706);
		p += 28;
	}
	if (p == buf + 8) {
		*ok = false;
		return 0;
	}
	uint32_t len = (uint32_t)(p - buf);
	put16(buf, len - 2);
	return len;
}

static uint32_t get_configuration(const struct ide_drive *d, uint8_t *buf)
{
	uint16_t profile = d->disk->size > 700ull * 1024 * 1024 ? 0x0010 : 0x0008;

	memset(buf, 0, 32);
	put16(buf + 6, profile);             /* current profile: DVD-ROM or CD-ROM */
	/* feature 0: profile list */
	put16(buf + 8, 0);
	buf[10] = 0x03;
	buf[11] = 8;
	put16(buf + 12, 0x0010);
	buf[14] = profile == 0x0010;
	put16(buf + 16, 0x0008);
	buf[18] = profile == 0x0008;
	put32(buf, 20 - 4);
	return 20;
}

static uint32_t event_status(struct ide_drive *d, const uint8_t *cmd, uint8_t *buf, bool *ok)
{
	*ok = (cmd[1] & 1) != 0; /* only polled mode exists */
	if (!*ok)
		return 0;
	memset(buf, 0, 8);
	if (!(cmd[4] & 0x10)) {          /* media class not asked for */
		put16(buf, 2);
		buf[2] = 0x80;               /* no event available */
		buf[3] = 0x10;               /* supported classes: media */
		return 4;
	}
	put16(buf, 6);
	buf[2] = 0x04;                   /* media class */
	buf[3] = 0x10;
	buf[4] = d->media_event ? 0x02 : 0x00; /* new media, once */
	d->media_event = false;
	buf[5] = 0x02;                   /* media present, tray closed */
	return 8;
}

void atapi_command(struct ide_drive *d, const uint8_t *cmd, uint8_t *buf,
                   struct atapi_result *res)
{
	uint32_t alloc = 0, len = 0;
	bool ok = true;

	memset(res, 0, sizeof(*res));
	switch (cmd[0]) {
	case 0x00: /* TEST UNIT READY */
		break;
	case 0x03: /* REQUEST SENSE */
		memset(buf, 0, 18);
		buf[0] = 0x70;
		buf[2] = d->sense_key;
		buf[7] = 10;
		buf[12] = d->asc;
		buf[13] = d->ascq;
		len = 18;
		alloc = cmd[4];
		d->sense_key = d->asc = d->ascq = 0;
		break;
	case 0x12: /* INQUIRY */
		memset(buf, 0, 36);
		buf[0] = 0x05;               /* CD/DVD device */
		buf[1] = 0x80;               /* removable */
		buf[2] = 0x00;
		buf[3] = 0x21;
		buf[4] = 31;
		memcpy(buf + 8, "VTOOL   ", 8);
		memcpy(buf + 16, "VTOOL DVD-ROM   ", 16);
		memcpy(buf + 32, "1.0 ", 4);
		len = 36;
		alloc = cmd[4];
		break;
	case 0x25: /* READ CAPACITY */
		put32(buf, blocks_of(d) ? blocks_of(d) - 1 : 0);
		put32(buf + 4, 2048);
		len = 8;
		alloc = 8;
		break;
	case 0x28: case 0xa8: { /* READ(10), READ(12) */
		uint32_t lba = get32(cmd + 2);
		uint32_t n = cmd[0] == 0x28 ? get16(cmd + 7) : get32(cmd + 6);
		if ((uint64_t)lba + n > blocks_of(d)) {
			sense(d, res, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
			return;
		}
		res->read_blocks = true;
		res->lba = lba;
		res->blocks = n;
		d->sense_key = 0;
		return;
	}
	case 0x43: /* READ TOC */
		if ((cmd[9] >> 6) != 0 && (cmd[2] & 0x0f) != 0) {
			sense(d, res, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD);
			return;
		}
		len = read_toc(d, cmd, buf);
		alloc = get16(cmd + 7);
		break;
	case 0x5a: /* MODE SENSE(10) */
		len = mode_sense(cmd, buf, &ok);
		alloc = get16(cmd + 7);
		break;
	case 0x46: /* GET CONFIGURATION */
		len = get_configuration(d, buf);
		alloc = get16(cmd + 7);
		break;
	case 0x4a: /* GET EVENT STATUS NOTIFICATION */
		len = event_status(d, cmd, buf, &ok);
		alloc = get16(cmd + 7);
		break;
	case 0xbd: /* MECHANISM STATUS */
		memset(buf, 0, 8);
		len = 8;
		alloc = get16(cmd + 8);
		break;
	case 0x1b: /* START STOP UNIT: the tray stays closed with the image in it */
	case 0x1e: /* PREVENT ALLOW MEDIUM REMOVAL */
	case 0x2b: /* SEEK */
	case 0xbb: /* SET CD SPEED */
		break;
	default:
		sense(d, res, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
		return;
	}
	if (!ok) {
		sense(d, res, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD);
		return;
	}
	res->len = len < alloc ? len : alloc;
}
