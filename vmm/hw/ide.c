/* PIIX3 IDE controller: task files, ATA commands, PIO and bus-master DMA, one I/O
 * thread per channel. The ATAPI command set is in atapi.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/disk.h"
#include "vmm/hw/devices.h"
#include "vmm/hw/ide.h"
#include "vmm/hw/pci.h"
#include "vmm/sandbox.h"
#include "vmm/vm.h"

#define ST_ERR  0x01
#define ST_DRQ  0x08
#define ST_DSC  0x10
#define ST_DF   0x20
#define ST_DRDY 0x40
#define ST_BSY  0x80
#define ER_ABRT 0x04
#define ER_IDNF 0x10
#define ER_UNC  0x40
#define CTL_NIEN 0x02
#define CTL_SRST 0x04
#define CTL_HOB  0x80
#define DEV_LBA  0x40
#define DEV_SLAVE 0x10
#define BM_CMD_START 0x01
#define BM_CMD_TO_MEM 0x08
#define BM_ST_ACTIVE 0x01
#define BM_ST_ERROR  0x02
#define BM_ST_IRQ    0x04
#define MAX_MULT 16
#define PRD_MAX  4096

enum ide_job { JOB_NONE, JOB_PIO_READ, JOB_PIO_WRITE, JOB_DMA, JOB_FLUSH, JOB_ATAPI_READ,
               JOB_ATAPI_DMA_BUF };

struct ide_channel {
	struct vm *vm;
	int index;
	unsigned irq;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool thread_started, stop;
	bool paused;                  /* the machine is paused: start no job */
	unsigned gen;                 /* bumped by resets: stale job results are dropped */
	struct ide_drive drive[2];
	int sel;
	/* task file; hob_* hold the previous write of each register (LBA48) */
	uint8_t feature, nsector, lbal, lbam, lbah, device, control;
	uint8_t hob_feature, hob_nsector, hob_lbal, hob_lbam, hob_lbah;
	uint8_t status, error;
	/* the current command */
	enum ide_job job;
	bool job_running, dma_pending, dma_to_mem, atapi_dma;
	uint64_t lba;
	uint32_t left;                /* sectors (ATA) or 2048-byte blocks (ATAPI) still to do */
	uint32_t block;               /* sectors per PIO DRQ block */
	uint8_t *buf;
	uint32_t pos, len;            /* PIO data in buf */
	bool pio_out, want_packet;
	uint32_t atapi_bcl;
	uint32_t atapi_piece_end;     /* end of the DRQ piece the host is reading */
	/* bus master */
	uint8_t bm_cmd, bm_status;
	uint32_t bm_prd;
	bool warned;
};

struct ide {
	struct pci_dev pci;
	struct ide_channel ch[2];
};

void ide_string(uint16_t *words, const char *s, int nwords)
{
	size_t n = strlen(s);

	for (int i = 0; i < nwords * 2; i++) {
		uint8_t c = (size_t)i < n ? (uint8_t)s[i] : ' ';
		if (i & 1)
			words[i / 2] = (uint16_t)((words[i / 2] & 0xff00) | c);
		else
			words[i / 2] = (uint16_t)((words[i / 2] & 0x00ff) | (c << 8));
	}
}

static struct ide_drive *cur(struct ide_channel *c)
{
	return &c->drive[c->sel];
}

static void ide_raise_irq(struct ide_channel *c)
{
	if (!(c->control & CTL_NIEN))
		vm_irq_line(c->vm, c->irq, true);
	c->bm_status |= BM_ST_IRQ;
}

static void ide_set_signature(struct ide_channel *c, struct ide_drive *d)
{
	c->nsector = 1;
	c->lbal = 1;
	c->lbam = d->atapi ? 0x14 : 0;
	c->lbah = d->atapi ? 0xeb : 0;
	c->device = 0;
}

/* Finish a command: ready, optionally with an error, and interrupt. */
static void ide_done(struct ide_channel *c, uint8_t error)
{
	c->job = JOB_NONE;
	c->dma_pending = false;
	c->len = c->pos = 0;
	c->error = error;
	c->status = (uint8_t)(ST_DRDY | ST_DSC | (error ? ST_ERR : 0));
	if (cur(c)->atapi)
		c->nsector = 0x03; /* interrupt reason: I/O, command/data = status phase */
	ide_raise_irq(c);
}

static void ide_abort(struct ide_channel *c)
{
	ide_done(c, ER_ABRT);
}

static void ide_post(struct ide_channel *c, enum ide_job job)
{
	c->job = job;
	c->status = ST_BSY | ST_DRDY;
	pthread_cond_signal(&c->cond);
}

/* A DMA command: busy until the guest starts the bus master (maybe it already has). */
static void ide_post_dma(struct ide_channel *c, enum ide_job job, bool to_mem)
{
	c->dma_to_mem = to_mem;
	c->dma_pending = true;
	c->job = job;
	c->status = ST_BSY | ST_DRDY;
	if (c->bm_cmd & BM_CMD_START)
		pthread_cond_signal(&c->cond);
}

/* --- IDENTIFY ----------------------------------------------------------------- */

static void ata_identify(struct ide_drive *d)
{
	uint16_t *w = d->identify;
	uint64_t sectors = d->disk->size / 512;
	uint64_t lba28 = sectors > 0x0fffffff ? 0x0fffffff : sectors;
	uint32_t cyls = (uint32_t)(sectors / (16 * 63));

	if (cyls > 16383)
		cyls = 16383;
	if (cyls == 0)
		cyls = 1;
	memset(d->identify, 0, sizeof(d->identify));
	w[0] = 0x0040;
	w[1] = (uint16_t)cyls;
	w[3] = 16;
	w[6] = 63;
	ide_string(&w[10], d->disk->serial, 10);
	ide_string(&w[23], "1.0", 4);
	ide_string(&w[27], "VTOOL HARDDISK", 20);
	w[47] = 0x8000 | MAX_MULT;
	w[49] = (1 << 9) | (1 << 8);    /* LBA, DMA */
	w[50] = 0x4000;
	w[53] = 0x0007;                  /* words 54-58, 64-70, 88 valid */
	w[54] = (uint16_t)cyls;
	w[55] = 16;
	w[56] = 63;
	uint32_t chs = cyls * 16 * 63;
	w[57] = (uint16_t)chs;
	w[58] = (uint16_t)(chs >> 16);
	w[59] = 0;
	w[60] = (uint16_t)lba28;
	w[61] = (uint16_t)(lba28 >> 16);
	w[63] = 0x0407;                  /* MWDMA 0-2 supported, 2 selected */
	w[64] = 0x0003;                  /* PIO 3, 4 */
	w[65] = w[66] = w[67] = w[68] = 120;
	w[80] = 0x00f0;                  /* ATA/ATAPI-4 to -7 */
	w[81] = 0x0016;
	w[82] = (1 << 14) | (1 << 5);    /* NOP, write cache */
	w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); /* flush ext, flush, LBA48 */
	w[84] = 1 << 14;
	w[85] = (1 << 14) | (1 << 5);
	w[86] = (1 << 13) | (1 << 12) | (1 << 10);
	w[87] = 1 << 14;
	w[88] = 0x203f;                  /* UDMA 0-5 supported, 5 selected */
	w[93] = 1 << 14 | 1 << 13 | 1;   /* 80-wire cable */
	for (int i = 0; i < 4; i++)
		w[100 + i] = (uint16_t)(sectors >> (16 * i));
}

/* --- ATA commands -------------------------------------------------------------- */

static bool ata_range(struct ide_channel *c, bool lba48, uint64_t *lba, uint32_t *count)
{
	struct ide_drive *d = cur(c);
	uint64_t sectors = d->disk->size / 512;

	if (lba48) {
		*count = (uint32_t)c->nsector | (uint32_t)c->hob_nsector << 8;
		if (*count == 0)
			*count = 65536;
		*lba = (uint64_t)c->lbal | (uint64_t)c->lbam << 8 | (uint64_t)c->lbah << 16 |
		       (uint64_t)c->hob_lbal << 24 | (uint64_t)c->hob_lbam << 32 |
		       (uint64_t)c->hob_lbah << 40;
	} else {
		*count = c->nsector ? c->nsector : 256;
		if (c->device & DEV_LBA) {
			*lba = (uint64_t)c->lbal | (uint64_t)c->lbam << 8 | (uint64_t)c->lbah << 16 |
			       (uint64_t)(c->device & 0x0f) << 24;
		} else {
			/* CHS with the 16-head, 63-sector geometry IDENTIFY reports. */
			uint32_t cyl = c->lbam | (uint32_t)c->lbah << 8, head = c->device & 0x0f;
			if (c->lbal == 0)
				return false;
			*lba = ((uint64_t)cyl * 16 + head) * 63 + c->lbal - 1;
		}
	}
	return *lba <= sectors && *count <= sectors - *lba;
}

static void ata_rw(struct ide_channel *c, uint8_t cmd)
{
	bool lba48 = cmd == 0x24 || cmd == 0x29 || cmd == 0x34 || cmd == 0x39 || cmd == 0x25 ||
	             cmd == 0x35;
	bool multiple = cmd == 0xc4 || cmd == 0x29 || cmd == 0xc5 || cmd == 0x39;
	bool dma = cmd == 0xc8 || cmd == 0xc9 || cmd == 0x25 || cmd == 0xca || cmd == 0xcb ||
	           cmd == 0x35;
	bool write = cmd == 0x30 || cmd == 0x31 || cmd == 0x34 || cmd == 0xc5 || cmd == 0x39 ||
	             cmd == 0xca || cmd == 0xcb || cmd == 0x35;
	struct ide_drive *d = cur(c);

	if (multiple && !d->mult_sectors) {
		ide_abort(c);
		return;
	}
	if (!ata_range(c, lba48, &c->lba, &c->left)) {
		ide_done(c, ER_IDNF | ER_ABRT);
		return;
	}
	if (write && d->disk->readonly) {
		ide_abort(c);
		return;
	}
	c->block = multiple ? d->mult_sectors : 1;
	c->pio_out = write;
	if (dma) {
		ide_post_dma(c, JOB_DMA, !write);
	} else if (write) {
		/* The first block is requested without an interrupt. */
		c->pos = 0;
		c->len = (c->left < c->block ? c->left : c->block) * 512;
		c->status = ST_DRQ | ST_DRDY | ST_DSC;
	} else {
		ide_post(c, JOB_PIO_READ);
	}
}

static void ata_command(struct ide_channel *c, uint8_t cmd)
{
	struct ide_drive *d = cur(c);

	if (!d->disk)
		return; /* nobody answers for an absent device */
	if (d->atapi) {
		switch (cmd) {
		case 0xa0: /* PACKET */
			c->atapi_dma = c->feature & 1;
			c->atapi_bcl = c->lbam | (uint32_t)c->lbah << 8;
			c->want_packet = true;
			c->pos = 0;
			c->len = 12;
			c->nsector = 0x01; /* command/data: expecting the packet */
			c->status = ST_DRQ | ST_DRDY;
			return;
		case 0xa1:
			atapi_identify(d);
			memcpy(c->buf, d->identify, 512);
			c->pos = 0;
			c->len = 512;
			c->pio_out = false;
			c->left = 1;
			c->block = 1;
			c->status = ST_DRQ | ST_DRDY | ST_DSC;
			ide_raise_irq(c);
			return;
		case 0x08: /* DEVICE RESET */
			ide_set_signature(c, d);
			c->status = 0;
			c->error = 1;
			return;
		case 0xef: case 0x00: case 0xe5: case 0xe0: case 0xe1: case 0xe7:
			ide_done(c, 0);
			return;
		default:
			/* ATA commands to a packet device abort with its signature showing. */
			ide_set_signature(c, d);
			ide_abort(c);
			return;
		}
	}
	switch (cmd) {
	case 0xec: /* IDENTIFY DEVICE */
		ata_identify(d);
		if (d->mult_sectors)
			d->identify[59] = 0x100 | d->mult_sectors;
		memcpy(c->buf, d->identify, 512);
		c->pos = 0;
		c->len = 512;
		c->pio_out = false;
		c->left = 1;
		c->block = 1;
		c->status = ST_DRQ | ST_DRDY | ST_DSC;
		ide_raise_irq(c);
		break;
	case 0x20: case 0x21: case 0x24: case 0xc4: case 0x29:
	case 0x30: case 0x31: case 0x34: case 0xc5: case 0x39:
	case 0xc8: case 0xc9: case 0x25: case 0xca: case 0xcb: case 0x35:
		ata_rw(c, cmd);
		break;
	case 0xe7: case 0xea: /* FLUSH CACHE (EXT) */
		ide_post(c, JOB_FLUSH);
		break;
	case 0xc6: /* SET MULTIPLE MODE */
		if (c->nsector > MAX_MULT || (c->nsector & (c->nsector - 1))) {
			ide_abort(c);
		} else {
			d->mult_sectors = c->nsector;
			ide_done(c, 0);
		}
		break;
	case 0xef: /* SET FEATURES: transfer modes, write cache, look-ahead: all accepted */
	case 0x91: case 0x10: case 0x40: case 0x41: case 0x42: case 0xe0: case 0xe1:
	case 0xe2: case 0xe3: case 0xe6: case 0x00:
		ide_done(c, 0);
		break;
	case 0xe5: /* CHECK POWER MODE: active */
		c->nsector = 0xff;
		ide_done(c, 0);
		break;
	case 0xf8: case 0x27: { /* READ NATIVE MAX ADDRESS (EXT) */
		uint64_t max = d->disk->size / 512 - 1;
		c->lbal = (uint8_t)max;
		c->lbam = (uint8_t)(max >> 8);
		c->lbah = (uint8_t)(max >> 16);
		if (cmd == 0xf8) {
			c->device = (uint8_t)((c->device & 0xf0) | ((max >> 24) & 0x0f));
		} else {
			c->hob_lbal = (uint8_t)(max >> 24);
			c->hob_lbam = (uint8_t)(max >> 32);
			c->hob_lbah = (uint8_t)(max >> 40);
		}
		ide_done(c, 0);
		break;
	}
	case 0x90: /* EXECUTE DEVICE DIAGNOSTIC */
		ide_set_signature(c, d);
		c->error = 0x01;
		c->status = ST_DRDY | ST_DSC;
		ide_raise_irq(c);
		break;
	default:
		ide_abort(c);
	}
}

/* --- PIO data port ------------------------------------------------------------- */

static void atapi_start(struct ide_channel *c);

/* The host consumed (or filled) the whole PIO buffer. */
static void pio_block_done(struct ide_channel *c)
{
	struct ide_drive *d = cur(c);

	if (c->want_packet) {
		c->want_packet = false;
		atapi_start(c);
		return;
	}
	if (d->atapi) {
		/* More of an ATAPI transfer in the buffer, or more blocks to read? */
		if (c->pos < c->len)
			return;
		if (c->job == JOB_ATAPI_READ && c->left) {
			ide_post(c, JOB_ATAPI_READ);
			return;
		}
		ide_done(c, 0);
		return;
	}
	if (c->pio_out) {
		ide_post(c, JOB_PIO_WRITE);
		return;
	}
	uint32_t n = c->len / 512;
	c->left -= n;
	c->lba += n;
	if (c->left)
		ide_post(c, JOB_PIO_READ);
	else {
		c->len = c->pos = 0;
		c->status = ST_DRDY | ST_DSC;
	}
}

/* ATAPI PIO: expose the next piece of the buffer, at most the byte count limit. */
static void atapi_pio_next(struct ide_channel *c)
{
	uint32_t bcl = c->atapi_bcl ? c->atapi_bcl & ~1u : 0xfffe;
	uint32_t n = c->len - c->pos;

	if (n > bcl)
		n = bcl;
	c->lbam = (uint8_t)n;
	c->lbah = (uint8_t)(n >> 8);
	c->nsector = 0x02; /* I/O: data to the host */
	c->status = ST_DRQ | ST_DRDY;
	c->atapi_piece_end = c->pos + n;
	ide_raise_irq(c);
}

static void data_io(struct ide_channel *c, uint8_t *data, unsigned len, bool is_write)
{
	if (!(c->status & ST_DRQ) || (c->status & ST_BSY)) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	unsigned n = len;
	if (n > c->len - c->pos)
		n = c->len - c->pos;
	if (is_write == (c->pio_out || c->want_packet))
		memcpy(is_write ? c->buf + c->pos : data, is_write ? data : c->buf + c->pos, n);
	else if (!is_write)
		memset(data, 0xff, n);
	c->pos += n;
	if (cur(c)->atapi && !c->want_packet && c->pos < c->len) {
		if (c->pos >= c->atapi_piece_end)
			atapi_pio_next(c);
		return;
	}
	if (c->pos >= c->len)
		pio_block_done(c);
}

/* A packet arrived: run it; data goes out by PIO or DMA, block reads via the thread. */
static void atapi_start(struct ide_channel *c)
{
	struct ide_drive *d = cur(c);
	struct atapi_result res;
	uint8_t packet[12];

	memcpy(packet, c->buf, sizeof(packet));
	atapi_command(d, packet, c->buf, &res);
	c->pio_out = false;
	c->pos = 0;
	if (res.check_condition) {
		c->error = (uint8_t)(d->sense_key << 4) | ER_ABRT;
		c->len = 0;
		c->job = JOB_NONE;
		c->status = ST_DRDY | ST_ERR;
		c->nsector = 0x03;
		ide_raise_irq(c);
		return;
	}
	if (res.read_blocks) {
		c->lba = res.lba;
		c->left = res.blocks;
		c->len = 0;
		if (!res.blocks) {
			ide_done(c, 0);
		} else if (c->atapi_dma) {
			ide_post_dma(c, JOB_ATAPI_READ, true);
		} else {
			ide_post(c, JOB_ATAPI_READ);
		}
		return;
	}
	c->len = res.len;
	if (!res.len) {
		ide_done(c, 0);
	} else if (c->atapi_dma) {
		ide_post_dma(c, JOB_ATAPI_DMA_BUF, true);
	} else {
		atapi_pio_next(c);
	}
}

/* --- registers ------------------------------------------------------------------- */

static void soft_reset(struct ide_channel *c)
{
	c->gen++;
	c->job = JOB_NONE;
	c->dma_pending = c->want_packet = false;
	c->len = c->pos = 0;
	c->bm_status &= (uint8_t)~BM_ST_ACTIVE;
	for (int i = 0; i < 2; i++) {
		c->drive[i].mult_sectors = 0;
	}
	c->sel = 0;
	ide_set_signature(c, cur(c));
	c->error = 0x01;
	c->status = cur(c)->atapi ? 0 : ST_DRDY | ST_DSC;
}

static uint8_t task_read(struct ide_channel *c, unsigned reg)
{
	bool hob = c->control & CTL_HOB;
	struct ide_drive *d = cur(c);

	if (!c->drive[0].disk && !c->drive[1].disk)
		return 0xff; /* floating bus: no devices */
	switch (reg) {
	case 1: return hob ? c->hob_feature : c->error;
	case 2: return hob ? c->hob_nsector : c->nsector;
	case 3: return hob ? c->hob_lbal : c->lbal;
	case 4: return hob ? c->hob_lbam : c->lbam;
	case 5: return hob ? c->hob_lbah : c->lbah;
	case 6: return c->device | 0xa0;
	default: /* status: reading it acknowledges the interrupt */
		vm_irq_line(c->vm, c->irq, false);
		return d->disk ? c->status : 0;
	}
}

static void task_write(struct ide_channel *c, unsigned reg, uint8_t v)
{
	switch (reg) {
	case 1: c->hob_feature = c->feature; c->feature = v; break;
	case 2: c->hob_nsector = c->nsector; c->nsector = v; break;
	case 3: c->hob_lbal = c->lbal; c->lbal = v; break;
	case 4: c->hob_lbam = c->lbam; c->lbam = v; break;
	case 5: c->hob_lbah = c->lbah; c->lbah = v; break;
	case 6:
		c->device = v;
		c->sel = (v & DEV_SLAVE) ? 1 : 0;
		break;
	case 7:
		if (c->status & ST_BSY)
			return; /* commands are ignored while busy */
		vm_irq_line(c->vm, c->irq, false);
		c->error = 0;
		ata_command(c, v);
		break;
	}
	c->control &= (uint8_t)~CTL_HOB; /* a register write clears HOB */
}

static void cmd_block_io(void *opaque, uint64_t off, uint8_t *data, unsigned len, bool is_write)
{
	struct ide_channel *c = opaque;

	pthread_mutex_lock(&c->lock);
	if (off == 0) {
		data_io(c, data, len, is_write);
	} else if (is_write) {
		for (unsigned i = 0; i < len && off + i < 8; i++)
			task_write(c, (unsigned)off + i, data[i]);
	} else {
		for (unsigned i = 0; i < len; i++)
			data[i] = off + i < 8 ? task_read(c, (unsigned)off + i) : 0xff;
	}
	pthread_mutex_unlock(&c->lock);
}

static void ctl_block_io(void *opaque, uint64_t off, uint8_t *data, unsigned len, bool is_write)
{
	struct ide_channel *c = opaque;

	pthread_mutex_lock(&c->lock);
	if (is_write) {
		if ((data[0] & CTL_SRST) && !(c->control & CTL_SRST)) {
			soft_reset(c);
			c->status |= ST_BSY;
		} else if (!(data[0] & CTL_SRST) && (c->control & CTL_SRST)) {
			c->status &= (uint8_t)~ST_BSY;
		}
		c->control = data[0];
		if (c->control & CTL_NIEN)
			vm_irq_line(c->vm, c->irq, false);
	} else {
		/* alternate status: the status without acknowledging anything */
		bool none = !c->drive[0].disk && !c->drive[1].disk;
		data[0] = none ? 0xff : cur(c)->disk ? c->status : 0;
		memset(data + 1, 0xff, len - 1);
	}
	pthread_mutex_unlock(&c->lock);
}

static void bm_io(void *opaque, uint64_t off, uint8_t *data, unsigned len, bool is_write)
{
	struct ide *ide = opaque;

	for (unsigned i = 0; i < len; i++) {
		unsigned o = (unsigned)off + i;
		struct ide_channel *c = &ide->ch[o / 8 & 1];
		unsigned reg = o % 8;
		pthread_mutex_lock(&c->lock);
		if (is_write) {
			if (reg == 0) {
				bool start = (data[i] & BM_CMD_START) && !(c->bm_cmd & BM_CMD_START);
				c->bm_cmd = data[i] & (BM_CMD_START | BM_CMD_TO_MEM);
				if (start) {
					c->bm_status |= BM_ST_ACTIVE;
					if (c->dma_pending)
						pthread_cond_signal(&c->cond);
				} else if (!(data[i] & BM_CMD_START)) {
					c->bm_status &= (uint8_t)~BM_ST_ACTIVE;
				}
			} else if (reg == 2) {
				/* interrupt and error are write-one-to-clear; bits 5/6 are kept */
				c->bm_status = (uint8_t)((c->bm_status & ~(data[i] & 0x06) & 0x07) |
				                         (data[i] & 0x60));
			} else if (reg >= 4) {
				uint8_t *p = (uint8_t *)&c->bm_prd;
				p[reg - 4] = data[i];
				c->bm_prd &= ~3u;
			}
		} else {
			if (reg == 0)
				data[i] = c->bm_cmd;
			else if (reg == 2)
				data[i] = c->bm_status;
			else if (reg >= 4)
				data[i] = ((uint8_t *)&c->bm_prd)[reg - 4];
			else
				data[i] = 0;
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* --- the channel's I/O thread ------------------------------------------------------ */

/* The guest memory the PRD table describes, up to `bytes`. Returns the number of iovecs,
 * or -1 when the table or a buffer lies outside guest RAM, or it is too short. */
static int prd_map(struct ide_channel *c, uint64_t bytes, struct iovec *iov, int max)
{
	uint64_t prd = c->bm_prd;
	int n = 0;

	for (int i = 0; i < PRD_MAX && bytes && n < max; i++, prd += 8) {
		uint32_t *e = vm_guest_ptr(c->vm, prd, 8);
		if (!e)
			return -1;
		uint32_t addr = e[0];
		uint32_t cnt = e[1] & 0xfffe;
		if (cnt == 0)
			cnt = 0x10000;
		if (cnt > bytes)
			cnt = (uint32_t)bytes;
		void *p = vm_guest_ptr(c->vm, addr, cnt);
		if (!p)
			return -1;
		iov[n++] = (struct iovec){ p, cnt };
		bytes -= cnt;
		if (e[1] & 0x80000000u)
			break; /* end of table */
	}
	return bytes ? -1 : n;
}

static void dma_fail(struct ide_channel *c, const char *why)
{
	if (!c->warned) {
		c->warned = true;
		vm_warn(c->vm, "IDE channel %d: %s; the command fails", c->index, why);
	}
	c->bm_status = (uint8_t)((c->bm_status & ~BM_ST_ACTIVE) | BM_ST_ERROR);
	ide_done(c, ER_ABRT);
}

/* Run one job with the lock dropped around the disk I/O. */
static void ide_run_job(struct ide_channel *c)
{
	enum ide_job job = c->job;
	struct ide_drive *d = cur(c);
	struct vm_disk *disk = d->disk;
	unsigned gen = c->gen;
	struct vt_error err;
	struct iovec iov[PRD_MAX / 4];
	int ret = 0, n = 0;
	uint32_t count = 0;
	uint64_t off = 0, bytes = 0;

	switch (job) {
	case JOB_PIO_READ:
		count = c->left < c->block ? c->left : c->block;
		off = c->lba * 512;
		bytes = (uint64_t)count * 512;
		break;
	case JOB_PIO_WRITE:
		count = c->len / 512;
		off = c->lba * 512;
		bytes = c->len;
		break;
	case JOB_ATAPI_READ:
		if (c->atapi_dma) {
			bytes = (uint64_t)c->left * 2048;
		} else {
			count = c->left < IDE_BUF_SIZE / 2048 ? c->left : IDE_BUF_SIZE / 2048;
			bytes = (uint64_t)count * 2048;
		}
		off = c->lba * 2048;
		break;
	case JOB_DMA:
		off = c->lba * 512;
		bytes = (uint64_t)c->left * 512;
		break;
	case JOB_ATAPI_DMA_BUF:
		bytes = c->len;
		break;
	default:
		break;
	}
	bool dma = job == JOB_DMA || job == JOB_ATAPI_DMA_BUF || (job == JOB_ATAPI_READ && c->atapi_dma);
	if (dma) {
		c->dma_pending = false;
		n = prd_map(c, bytes, iov, (int)(sizeof(iov) / sizeof(iov[0])));
		if (n < 0) {
			dma_fail(c, "bus-master PRD table or buffer outside guest RAM (or too short)");
			return;
		}
	}
	c->job_running = true;
	pthread_mutex_unlock(&c->lock);
	switch (job) {
	case JOB_PIO_READ:
	case JOB_PIO_WRITE:
	case JOB_ATAPI_READ: {
		struct iovec one = { c->buf, bytes };
		const struct iovec *v = dma ? iov : &one;
		int cnt = dma ? n : 1;
		ret = job == JOB_PIO_WRITE ? disk_writev(disk, off, v, cnt, &err)
		                           : disk_readv(disk, off, v, cnt, &err);
		break;
	}
	case JOB_DMA:
		ret = c->dma_to_mem ? disk_readv(disk, off, iov, n, &err)
		                    : disk_writev(disk, off, iov, n, &err);
		break;
	case JOB_ATAPI_DMA_BUF: {
		uint64_t done = 0;
		for (int i = 0; i < n; i++) {
			memcpy(iov[i].iov_base, c->buf + done, iov[i].iov_len);
			done += iov[i].iov_len;
		}
		break;
	}
	case JOB_FLUSH:
		ret = disk_flush(disk, &err);
		break;
	default:
		break;
	}
	pthread_mutex_lock(&c->lock);
	c->job_running = false;
	if (gen != c->gen)
		return; /* reset while the I/O ran: forget it */
	if (ret) {
		if (dma)
			c->bm_status = (uint8_t)((c->bm_status & ~BM_ST_ACTIVE) | BM_ST_ERROR);
		ide_done(c, ER_ABRT | (job == JOB_PIO_WRITE || !c->pio_out ? ER_UNC : 0));
		return;
	}
	switch (job) {
	case JOB_PIO_READ:
		c->pos = 0;
		c->len = (uint32_t)bytes;
		c->job = JOB_NONE;
		c->status = ST_DRQ | ST_DRDY | ST_DSC;
		ide_raise_irq(c);
		break;
	case JOB_PIO_WRITE:
		c->left -= count;
		c->lba += count;
		if (c->left) {
			c->pos = 0;
			c->len = (c->left < c->block ? c->left : c->block) * 512;
			c->job = JOB_NONE;
			c->status = ST_DRQ | ST_DRDY | ST_DSC;
			ide_raise_irq(c);
		} else {
			ide_done(c, 0);
		}
		break;
	case JOB_ATAPI_READ:
		if (dma) {
			c->bm_status &= (uint8_t)~BM_ST_ACTIVE;
			c->left = 0;
			ide_done(c, 0);
		} else {
			c->left -= count;
			c->lba += count;
			c->pos = 0;
			c->len = (uint32_t)bytes;
			atapi_pio_next(c);
			c->status = ST_DRQ | ST_DRDY; /* job stays JOB_ATAPI_READ for the rest */
		}
		break;
	case JOB_DMA:
	case JOB_ATAPI_DMA_BUF:
		c->bm_status &= (uint8_t)~BM_ST_ACTIVE;
		ide_done(c, 0);
		break;
	default:
		ide_done(c, 0);
	}
}

static bool job_ready(const struct ide_channel *c)
{
	if (c->job == JOB_NONE || !(c->status & ST_BSY))
		return false;
	if (c->dma_pending)
		return (c->bm_cmd & BM_CMD_START) != 0;
	return true;
}

static void *ide_thread(void *arg)
{
	struct ide_channel *c = arg;
	char name[16];

	snprintf(name, sizeof(name), "ide%d-io", c->index);
	pthread_setname_np(pthread_self(), name);
	sandbox_thread(SANDBOX_IO);
	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		if (!c->paused && job_ready(c))
			ide_run_job(c);
		else
			pthread_cond_wait(&c->cond, &c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* The machine pauses (vm_pause): a job running or ready to run finishes first (the guest
 * posted it before its vCPUs parked); then the channel starts nothing until resumed. */
static void ide_pause(void *opaque, bool pause)
{
	struct ide *ide = opaque;

	for (int i = 0; i < 2; i++) {
		struct ide_channel *c = &ide->ch[i];
		pthread_mutex_lock(&c->lock);
		while (pause && c->thread_started && !c->stop && (c->job_running || job_ready(c))) {
			pthread_mutex_unlock(&c->lock);
			usleep(500);
			pthread_mutex_lock(&c->lock);
		}
		c->paused = pause;
		if (!pause)
			pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
}

static void ide_destroy(void *opaque)
{
	struct ide *ide = opaque;

	for (int i = 0; i < 2; i++) {
		struct ide_channel *c = &ide->ch[i];
		if (c->thread_started) {
			pthread_mutex_lock(&c->lock);
			c->stop = true;
			pthread_cond_signal(&c->cond);
			pthread_mutex_unlock(&c->lock);
			pthread_join(c->thread, NULL);
		}
		pthread_mutex_destroy(&c->lock);
		pthread_cond_destroy(&c->cond);
		free(c->buf);
	}
	free(ide);
}

int ide_init(struct vm *vm, struct vt_error *err)
{
	static const uint16_t cmd_base[2] = { 0x1f0, 0x170 }, ctl_base[2] = { 0x3f6, 0x376 };
	struct ide *ide = calloc(1, sizeof(*ide));
	int ret;

	if (!ide)
		return vt_error_set(err, ENOMEM, "ide", "create", NULL);
	for (int i = 0; i < 2; i++) {
		struct ide_channel *c = &ide->ch[i];
		c->vm = vm;
		c->index = i;
		c->irq = i ? 15 : 14;
		pthread_mutex_init(&c->lock, NULL);
		pthread_cond_init(&c->cond, NULL);
		c->buf = calloc(1, IDE_BUF_SIZE);
		c->bm_status = 0x60; /* both drives DMA capable */
	}
	if ((ret = vm_add_device(vm, "ide", ide, ide_destroy, err)) ||
	    (ret = vm_add_pause_hook(vm, ide_pause, ide, err)))
		return ret;
	for (int i = 0; i < 2; i++) {
		struct ide_channel *c = &ide->ch[i];
		if (!c->buf)
			return vt_error_set(err, ENOMEM, "ide", "create", NULL);
		if ((ret = bus_register(&vm->pio, cmd_base[i], 8, cmd_block_io, c, err)) ||
		    (ret = bus_register(&vm->pio, ctl_base[i], 1, ctl_block_io, c, err)))
			return ret;
		if (pthread_create(&c->thread, NULL, ide_thread, c))
			return vt_error_set(err, EAGAIN, "ide", "start I/O thread", NULL);
		c->thread_started = true;
	}
	struct pci_dev *p = &ide->pci;
	pci_dev_init(p, "piix3-ide", 0x8086, 0x7010, 0x010180, 0x00);
	p->devfn = 0x09;
	p->wmask[PCI_COMMAND] |= PCI_COMMAND_MASTER;
	p->bars[4] = (struct pci_bar){ .size = 16, .io = true, .fn = bm_io, .opaque = ide };
	pci_cfg_set16(p, 0x40, 0x8000); /* IDETIM: primary decode enable */
	pci_cfg_set16(p, 0x42, 0x8000); /* secondary */
	return pci_add_device(vm, p, err);
}

int ide_attach(struct vm *vm, struct vm_disk *disk, int index, struct vt_error *err)
{
	if (index < 0 || index > 3)
		return vt_error_set(err, EINVAL, disk->drive->file, "attach IDE drive",
		                    "index %d is not 0..3", index);
	struct ide *ide = vm_device(vm, "ide");
	if (!ide)
		return vt_error_set(err, ENODEV, disk->drive->file, "attach IDE drive", "no IDE controller");
	struct ide_channel *c = &ide->ch[index / 2];
	struct ide_drive *d = &c->drive[index % 2];
	if (d->disk)
		return vt_error_set(err, EBUSY, disk->drive->file, "attach IDE drive",
		                    "IDE index %d is taken", index);
	d->disk = disk;
	d->atapi = disk->drive->media == VM_MEDIA_CDROM;
	vm_add_boot_path(vm, disk->drive->bootindex, "/pci@i0cf8/ide@1,1/drive@%x/disk@%x",
	                 index / 2, index % 2);
	d->media_event = d->atapi;
	pthread_mutex_lock(&c->lock);
	soft_reset(c);
	pthread_mutex_unlock(&c->lock);
	return 0;
}
