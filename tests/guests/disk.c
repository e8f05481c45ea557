/* tguest disk drivers: virtio-blk (modern virtio-pci) and PIIX IDE (ATA PIO, ATA DMA,
 * ATAPI), plus "evil" variants that break the rules on purpose.
 *
 *   test=disk dev=vblk|ata-pio|ata-dma|atapi [unit=N] ops=OP,OP,...
 *     w:LBA:COUNT:PAT  write COUNT blocks filled with byte PAT at LBA
 *     r:LBA:COUNT:PAT  read them back and check every byte is PAT
 *     f                flush
 *     i                identify: print the device's size
 *   evil=loop|oob|lba (vblk), evil=prd|lba (ata-dma)
 * Blocks are 512 bytes (2048 for atapi). Prints TG-DISK lines; pass/fail at the end. */
#include "rt.h"

void test_disk(void);

static uint8_t iobuf[128 * 1024] __attribute__((aligned(4096)));
static const char *devname;

/* --- PCI helpers ------------------------------------------------------------------- */

static int pci_find(uint16_t vendor, const uint16_t *devices, int ndev, int *dev_out)
{
	for (int dev = 0; dev < 32; dev++) {
		uint32_t id = pci_read32(0, dev, 0, 0);
		for (int i = 0; i < ndev; i++)
			if ((id & 0xffff) == vendor && (id >> 16) == devices[i]) {
				*dev_out = dev;
				return 0;
			}
	}
	return -1;
}

static uint64_t pci_bar(int dev, int fn, int bar)
{
	uint32_t lo = pci_read32(0, dev, fn, 0x10 + 4 * bar);
	if (lo & 1)
		return lo & ~3u;
	uint64_t a = lo & ~15u;
	if ((lo & 6) == 4)
		a |= (uint64_t)pci_read32(0, dev, fn, 0x14 + 4 * bar) << 32;
	return a;
}

/* --- virtio-blk -------------------------------------------------------------------- */

#define QSZ 128
struct vq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
static struct vq_desc vq_desc[QSZ] __attribute__((aligned(4096)));
static struct { uint16_t flags, idx, ring[QSZ], used_event; } vq_avail __attribute__((aligned(4096)));
static struct { uint16_t flags, idx; struct { uint32_t id, len; } ring[QSZ]; } vq_used
	__attribute__((aligned(4096)));
static struct { uint32_t type, ioprio; uint64_t sector; } vreq __attribute__((aligned(16)));
static volatile uint8_t vstatus;

static volatile uint8_t *v_common, *v_isr, *v_dev;
static volatile uint16_t *v_notify;
static uint16_t v_used_seen;

static int vblk_pci_dev = -1;
static int vblk_rw(uint32_t type, uint64_t lba, void *buf, uint32_t len, const char *evil);
extern volatile uint32_t msi_count;

/* Route queue 0's used-buffer interrupt through MSI-X vector 0 to IDT vector 0x40, then
 * check that a request really interrupts the CPU. */
static void vblk_msix_test(void)
{
	int dev = vblk_pci_dev;
	uint8_t cap = (uint8_t)pci_read32(0, dev, 0, 0x34);
	while (cap && (pci_read32(0, dev, 0, cap) & 0xff) != 0x11)
		cap = (uint8_t)(pci_read32(0, dev, 0, cap) >> 8);
	if (!cap)
		fail("disk", "no MSI-X capability");
	uint32_t tbl = pci_read32(0, dev, 0, cap + 4);
	uint64_t bar = pci_bar(dev, 0, (int)(tbl & 7));
	volatile uint32_t *entry = (volatile uint32_t *)(uintptr_t)(bar + (tbl & ~7u));
	entry[0] = 0xfee00000u;                          /* to APIC 0 */
	entry[1] = 0;
	entry[2] = 0x40;                                 /* fixed, vector 0x40 */
	entry[3] = 0;                                    /* unmasked */
	pci_write32(0, dev, 0, cap, pci_read32(0, dev, 0, cap) | (1u << 31));  /* enable */
	outb(0x21, 0xff);                                /* firmware may leave the PIC */
	outb(0xa1, 0xff);                                /* and its timer running: mask */
	mmio_write32(0xfee000f0, 0x1ff);                 /* LAPIC on, spurious 0xff */
	*(volatile uint16_t *)(v_common + 0x16) = 0;
	*(volatile uint16_t *)(v_common + 0x1a) = 0;     /* queue 0 -> vector 0 */
	if (*(volatile uint16_t *)(v_common + 0x1a) != 0)
		fail("disk", "device refused MSI-X vector 0");
	uint32_t before = msi_count;
	__asm__ volatile("sti");
	int st = vblk_rw(0, 0, iobuf, 512, NULL);
	for (uint64_t i = 0; i < 5000000 && msi_count == before; i++)
		__asm__ volatile("pause");
	__asm__ volatile("cli");
	printf("TG-DISK msix status=%d interrupts=%u\n", st, msi_count - before);
	if (st != 0 || msi_count == before)
		fail("disk", "no MSI-X interrupt for a completed request");
}

/* Without MSI-X the device interrupts through INTx: a completion sets the ISR's queue bit
 * (the line is raised), and reading the ISR acknowledges it. */
static void vblk_isr_test(void)
{
	if (!v_isr)
		fail("disk", "no ISR capability");
	(void)*v_isr; /* start clean */
	int st = vblk_rw(0, 0, iobuf, 512, NULL);
	uint8_t first = *v_isr, second = *v_isr;
	printf("TG-DISK intx status=%d isr=%u then %u\n", st, first, second);
	if (st != 0 || !(first & 1) || second != 0)
		fail("disk", "ISR did not report the queue interrupt once");
}

/* GET_ID, WRITE_ZEROES and DISCARD (negotiated when offered). */
static void vblk_extras(void)
{
	char id[21] = { 0 };
	struct { uint64_t sector; uint32_t num, flags; } seg = { 64, 64, 0 };

	if (vblk_rw(8, 0, id, 20, NULL) != 0)
		fail("disk", "GET_ID failed");
	printf("TG-DISK serial=%s\n", id);
	memset(iobuf, 0xee, 64 * 512);
	if (vblk_rw(1, 64, iobuf, 64 * 512, NULL) != 0 || vblk_rw(13, 0, &seg, sizeof(seg), NULL) != 0)
		fail("disk", "WRITE_ZEROES failed");
	if (vblk_rw(0, 64, iobuf, 64 * 512, NULL) != 0)
		fail("disk", "read after WRITE_ZEROES failed");
	for (int i = 0; i < 64 * 512; i++)
		if (iobuf[i])
			fail("disk", "WRITE_ZEROES left data");
	if (vblk_rw(11, 0, &seg, sizeof(seg), NULL) != 0)
		fail("disk", "DISCARD failed");
	seg.flags = 1;
	int st = vblk_rw(11, 0, &seg, sizeof(seg), NULL);
	printf("TG-DISK write-zeroes ok discard ok discard-with-flags status=%d\n", st);
	if (st == 0)
		fail("disk", "DISCARD with flags must be refused");
}

static int vblk_init(void)
{
	static const uint16_t ids[] = { 0x1042, 0x1001 };
	int dev;
	if (pci_find(0x1af4, ids, 2, &dev))
		return -1;
	vblk_pci_dev = dev;
	pci_write32(0, dev, 0, 4, pci_read32(0, dev, 0, 4) | 0x6); /* memory + bus master */
	uint8_t cap = (uint8_t)pci_read32(0, dev, 0, 0x34);
	uint32_t notify_mult = 0;
	while (cap) {
		uint32_t c0 = pci_read32(0, dev, 0, cap);
		if ((c0 & 0xff) == 0x09) {
			uint32_t c1 = pci_read32(0, dev, 0, cap + 4);
			uint8_t type = (uint8_t)(c0 >> 24), bar = (uint8_t)c1;
			uint64_t addr = pci_bar(dev, 0, bar) + pci_read32(0, dev, 0, cap + 8);
			if (type == 1) v_common = (volatile uint8_t *)(uintptr_t)addr;
			if (type == 3) v_isr = (volatile uint8_t *)(uintptr_t)addr;
			if (type == 2) {
				v_notify = (volatile uint16_t *)(uintptr_t)addr;
				notify_mult = pci_read32(0, dev, 0, cap + 16);
			}
			if (type == 3) v_isr = (volatile uint8_t *)(uintptr_t)addr;
			if (type == 4) v_dev = (volatile uint8_t *)(uintptr_t)addr;
		}
		cap = (uint8_t)(c0 >> 8);
	}
	if (!v_common || !v_notify || !v_dev)
		return -2;
	volatile uint8_t *c = v_common;
	c[0x14] = 0;                                  /* reset */
	c[0x14] = 1 | 2;                              /* ACKNOWLEDGE | DRIVER */
	*(volatile uint32_t *)(c + 0x08) = 1;         /* driver features, high word */
	*(volatile uint32_t *)(c + 0x0c) = 1;         /* VERSION_1 */
	*(volatile uint32_t *)(c + 0x00) = 0;
	uint32_t offered = *(volatile uint32_t *)(c + 0x04);
	*(volatile uint32_t *)(c + 0x08) = 0;
	*(volatile uint32_t *)(c + 0x0c) = (1u << 9) | (offered & ((1u << 13) | (1u << 14)));
	c[0x14] = 1 | 2 | 8;
	if (!(c[0x14] & 8))
		return -3;
	*(volatile uint16_t *)(c + 0x16) = 0;         /* queue 0 */
	*(volatile uint16_t *)(c + 0x18) = QSZ;
	*(volatile uint64_t *)(c + 0x20) = (uint64_t)(uintptr_t)vq_desc;
	*(volatile uint64_t *)(c + 0x28) = (uint64_t)(uintptr_t)&vq_avail;
	*(volatile uint64_t *)(c + 0x30) = (uint64_t)(uintptr_t)&vq_used;
	uint16_t noff = *(volatile uint16_t *)(c + 0x1e);
	v_notify = (volatile uint16_t *)((volatile uint8_t *)v_notify + noff * notify_mult);
	*(volatile uint16_t *)(c + 0x1c) = 1;
	c[0x14] = 1 | 2 | 4 | 8;                      /* DRIVER_OK */
	uint64_t cap_sectors = *(volatile uint64_t *)v_dev;
	printf("TG-DISK vblk capacity=%lu\n", cap_sectors);
	return 0;
}

/* Submit one request (3 descriptors unless evil) and wait for it. Returns the status
 * byte, or -1 if the device gave up (NEEDS_RESET) or never answered. */
static int vblk_rw(uint32_t type, uint64_t lba, void *buf, uint32_t len, const char *evil)
{
	vreq.type = type;
	vreq.sector = lba;
	vstatus = 0xff;
	vq_desc[0] = (struct vq_desc){ (uint64_t)(uintptr_t)&vreq, 16, 1, 1 };
	int next = 1;
	if (len) {
		vq_desc[1] = (struct vq_desc){ (uint64_t)(uintptr_t)buf, len,
		                              (uint16_t)(1 | (type == 0 || type == 8 ? 2 : 0)), 2 };
		next = 2;
	}
	vq_desc[next] = (struct vq_desc){ (uint64_t)(uintptr_t)&vstatus, 1, 2, 0 };
	if (evil && !strncmp(evil, "loop", 4))
		vq_desc[next] = (struct vq_desc){ (uint64_t)(uintptr_t)&vstatus, 1, 2 | 1, 0 };
	if (evil && !strncmp(evil, "oob", 3))
		vq_desc[1].addr = 0x7ff000000000ull;  /* far past RAM */
	vq_avail.ring[vq_avail.idx % QSZ] = 0;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	vq_avail.idx++;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*v_notify = 0;
	for (uint64_t spin = 0; spin < 2000000; spin++) {
		if (__atomic_load_n(&vq_used.idx, __ATOMIC_ACQUIRE) != v_used_seen) {
			v_used_seen++;
			return vstatus;
		}
		if (v_common[0x14] & 0x40)
			return -1;
	}
	return -1;
}

/* Benchmark: `count` requests of `bs` bytes, `qd` in flight, sequential or random. */
#define BENCH_QD_MAX 32
static struct { uint32_t type, ioprio; uint64_t sector; } bhdr[BENCH_QD_MAX] __attribute__((aligned(16)));
static volatile uint8_t bstatus[BENCH_QD_MAX];
static uint8_t bbuf[BENCH_QD_MAX][65536] __attribute__((aligned(4096)));

static void vblk_bench(void)
{
	size_t len;
	const char *mode = cmdline_get("mode", &len);
	bool write = mode && mode[len - 1] == 'e';        /* randwrite, seqwrite */
	bool rnd = mode && mode[0] == 'r';
	uint32_t bs = (uint32_t)cmdline_u64("bs", 4096), qd = (uint32_t)cmdline_u64("qd", 1);
	uint64_t count = cmdline_u64("count", 1000), cap = *(volatile uint64_t *)v_dev;
	uint64_t blocks = cap / (bs / 512), next = 0, x = 88172645463325252ull;
	uint64_t submitted = 0, completed = 0;

	if (qd > BENCH_QD_MAX || bs > 65536 || bs < 512 || !blocks)
		fail("bench", "bad parameters");
	uint64_t t0 = rdtsc();
	for (;;) {
		while (submitted < count && submitted - completed < qd) {
			uint32_t slot = (uint32_t)(submitted % qd);
			uint64_t blk;
			if (rnd) {
				x ^= x << 13; x ^= x >> 7; x ^= x << 17;
				blk = x % blocks;
			} else {
				blk = next++ % blocks;
			}
			bhdr[slot].type = write ? 1 : 0;
			bhdr[slot].sector = blk * (bs / 512);
			uint16_t d = (uint16_t)(slot * 3);
			vq_desc[d] = (struct vq_desc){ (uint64_t)(uintptr_t)&bhdr[slot], 16, 1, (uint16_t)(d + 1) };
			vq_desc[d + 1] = (struct vq_desc){ (uint64_t)(uintptr_t)bbuf[slot], bs,
			                                   (uint16_t)(1 | (write ? 0 : 2)), (uint16_t)(d + 2) };
			vq_desc[d + 2] = (struct vq_desc){ (uint64_t)(uintptr_t)&bstatus[slot], 1, 2, 0 };
			vq_avail.ring[vq_avail.idx % QSZ] = d;
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			vq_avail.idx++;
			submitted++;
			if (submitted - completed == qd || submitted == count) {
				__atomic_thread_fence(__ATOMIC_SEQ_CST);
				*v_notify = 0;
			}
		}
		if (completed == count)
			break;
		uint16_t u = __atomic_load_n(&vq_used.idx, __ATOMIC_ACQUIRE);
		while (v_used_seen != u) {
			v_used_seen++;
			completed++;
		}
	}
	uint64_t cycles = rdtsc() - t0;
	char m[16] = "?";
	if (mode)
		memcpy(m, mode, len < sizeof(m) - 1 ? len : sizeof(m) - 1);
	printf("TG-BENCH mode=%s bs=%u qd=%u count=%lu cycles=%lu\n", m, bs, qd, count, cycles);
	pass("bench");
}

/* --- IDE --------------------------------------------------------------------------- */

#define ATA_ST_BSY 0x80
#define ATA_ST_DRQ 0x08
#define ATA_ST_ERR 0x01

static uint16_t ata_base, ata_ctl, bm_base;
static int ata_slave;
static struct { uint32_t addr; uint32_t cnt; } prd[8] __attribute__((aligned(64)));

static uint8_t ata_wait(void)
{
	uint8_t st;
	for (uint64_t i = 0; i < 50000000; i++) {
		st = inb(ata_base + 7);
		if (!(st & ATA_ST_BSY))
			return st;
	}
	return 0xff;
}

static int ata_init(int unit)
{
	static const uint16_t ids[] = { 0x7010 };
	int dev;
	ata_base = unit < 2 ? 0x1f0 : 0x170;
	ata_ctl = unit < 2 ? 0x3f6 : 0x376;
	ata_slave = unit & 1;
	if (!pci_find(0x8086, ids, 1, &dev)) {
		/* function 1 of the PIIX3 (the ISA bridge is function 0) */
	}
	bm_base = (uint16_t)(pci_read32(0, 1, 1, 0x20) & ~3u) + (unit < 2 ? 0 : 8);
	pci_write32(0, 1, 1, 4, pci_read32(0, 1, 1, 4) | 0x5);   /* I/O + bus master */
	outb(ata_ctl, 0x02);                                     /* no interrupts */
	outb(ata_base + 6, (uint8_t)(0xa0 | ata_slave << 4));
	return 0;
}

static void ata_taskfile(uint64_t lba, uint32_t count, uint8_t cmd)
{
	outb(ata_base + 6, (uint8_t)(0xe0 | ata_slave << 4));
	outb(ata_base + 2, (uint8_t)(count >> 8));
	outb(ata_base + 3, (uint8_t)(lba >> 24));
	outb(ata_base + 4, (uint8_t)(lba >> 32));
	outb(ata_base + 5, (uint8_t)(lba >> 40));
	outb(ata_base + 2, (uint8_t)count);
	outb(ata_base + 3, (uint8_t)lba);
	outb(ata_base + 4, (uint8_t)(lba >> 8));
	outb(ata_base + 5, (uint8_t)(lba >> 16));
	outb(ata_base + 7, cmd);
}

static void insw_(uint16_t port, void *buf, uint32_t words)
{
	__asm__ volatile("rep insw" : "+D"(buf), "+c"(words) : "d"(port) : "memory");
}

static void outsw_(uint16_t port, const void *buf, uint32_t words)
{
	__asm__ volatile("rep outsw" : "+S"(buf), "+c"(words) : "d"(port) : "memory");
}

static int ata_identify(void)
{
	uint16_t id[256];
	outb(ata_base + 6, (uint8_t)(0xa0 | ata_slave << 4));
	outb(ata_base + 7, 0xec);
	uint8_t st = ata_wait();
	if (st & ATA_ST_ERR || !(st & ATA_ST_DRQ))
		return -1;
	insw_(ata_base, id, 256);
	uint64_t sectors = id[100] | (uint64_t)id[101] << 16 | (uint64_t)id[102] << 32;
	char model[41];
	for (int i = 0; i < 20; i++) {
		model[2 * i] = (char)(id[27 + i] >> 8);
		model[2 * i + 1] = (char)id[27 + i];
	}
	model[40] = 0;
	for (int i = 39; i >= 0 && model[i] == ' '; i--)
		model[i] = 0;
	printf("TG-DISK ata sectors=%lu model=%s\n", sectors, model);
	return 0;
}

static int ata_pio(bool write, uint64_t lba, uint32_t count, uint8_t *buf)
{
	ata_taskfile(lba, count, write ? 0x34 : 0x24);
	for (uint32_t s = 0; s < count; s++) {
		uint8_t st = ata_wait();
		if (st & ATA_ST_ERR || !(st & ATA_ST_DRQ))
			return st;
		if (write)
			outsw_(ata_base, buf + 512 * s, 256);
		else
			insw_(ata_base, buf + 512 * s, 256);
	}
	uint8_t st = ata_wait();
	return st & ATA_ST_ERR ? st : 0;
}

static int ata_dma(bool write, uint64_t lba, uint32_t count, uint8_t *buf, const char *evil)
{
	uint32_t bytes = count * 512;
	int n = 0;
	for (uint32_t off = 0; off < bytes; off += 32768, n++) {
		uint32_t c = bytes - off < 32768 ? bytes - off : 32768;
		prd[n].addr = (uint32_t)(uintptr_t)(buf + off);
		prd[n].cnt = c;
	}
	prd[n - 1].cnt |= 0x80000000u;
	uint32_t table = (uint32_t)(uintptr_t)prd;
	if (evil && !strncmp(evil, "prd", 3))
		table = 0xf0000000u;                     /* a PRD table in the PCI hole */
	outb(bm_base, 0);
	outb(bm_base + 2, 0x06);                     /* clear interrupt and error */
	outl(bm_base + 4, table);
	outb(bm_base, write ? 0x00 : 0x08);
	ata_taskfile(lba, count, write ? 0x35 : 0x25);
	outb(bm_base, (uint8_t)((write ? 0x00 : 0x08) | 1));
	uint8_t st = ata_wait();
	uint8_t bms = inb(bm_base + 2);
	outb(bm_base, 0);
	if ((st & ATA_ST_ERR) || (bms & 2))
		return st | (bms & 2 ? 0x100 : 0);
	return 0;
}

static int atapi_read(uint32_t lba, uint32_t count, uint8_t *buf)
{
	uint8_t pkt[12] = { 0x28, 0, (uint8_t)(lba >> 24), (uint8_t)(lba >> 16),
	                    (uint8_t)(lba >> 8), (uint8_t)lba, 0, (uint8_t)(count >> 8),
	                    (uint8_t)count, 0, 0, 0 };
	outb(ata_base + 6, (uint8_t)(0xa0 | ata_slave << 4));
	outb(ata_base + 1, 0);                       /* PIO */
	outb(ata_base + 4, 0xfe);
	outb(ata_base + 5, 0xff);                    /* byte count limit 0xfffe */
	outb(ata_base + 7, 0xa0);
	uint8_t st = ata_wait();
	if (!(st & ATA_ST_DRQ))
		return st | 0x200;
	outsw_(ata_base, pkt, 6);
	uint32_t got = 0;
	for (;;) {
		st = ata_wait();
		if (st & ATA_ST_ERR)
			return st;
		if (!(st & ATA_ST_DRQ))
			break;
		uint32_t n = inb(ata_base + 4) | (uint32_t)inb(ata_base + 5) << 8;
		if (got + n > sizeof(iobuf))
			return 0x400;
		insw_(ata_base, buf + got, n / 2);
		got += n;
	}
	return got == count * 2048 ? 0 : 0x800;
}

/* --- the test ---------------------------------------------------------------------- */

static unsigned parse_num(const char **p)
{
	unsigned x = 0;
	while (**p >= '0' && **p <= '9')
		x = x * 10 + (unsigned)(*(*p)++ - '0');
	return x;
}

static unsigned parse_hex(const char **p)
{
	unsigned x = 0;
	for (;; (*p)++) {
		char c = **p;
		if (c >= '0' && c <= '9') x = x * 16 + (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f') x = x * 16 + (unsigned)(c - 'a' + 10);
		else return x;
	}
}

static int do_io(char op, uint64_t lba, uint32_t count, uint8_t *buf, const char *evil)
{
	bool w = op == 'w';
	if (!strncmp(devname, "vblk", 4))
		return vblk_rw(w ? 1 : 0, lba, buf, count * 512, evil);
	if (!strncmp(devname, "ata-pio", 7))
		return ata_pio(w, lba, count, buf);
	if (!strncmp(devname, "ata-dma", 7))
		return ata_dma(w, lba, count, buf, evil);
	return w ? 0x1000 : atapi_read((uint32_t)lba, count, buf);
}

/* Run one ops= list on one device; fails the test on any error. */
static void disk_ops(const char *ops)
{
	bool atapi = !strncmp(devname, "atapi", 5);
	uint32_t bs = atapi ? 2048 : 512;
	int ret;

	for (const char *p = ops; p && *p && *p != ' ';) {
		char op = *p++;
		if (op == 'f') {
			if (!strncmp(devname, "vblk", 4))
				ret = vblk_rw(4, 0, NULL, 0, NULL);
			else {
				outb(ata_base + 7, 0xea);
				ret = ata_wait() & ATA_ST_ERR;
			}
			printf("TG-DISK flush %s\n", ret ? "error" : "ok");
			if (ret)
				fail("disk", "flush failed");
		} else if (op == 'i') {
			if (!atapi && strncmp(devname, "vblk", 4) && ata_identify())
				fail("disk", "IDENTIFY failed");
		} else if (op == 'w' || op == 'r') {
			p++;
			uint64_t lba = parse_num(&p);
			p++;
			uint32_t count = parse_num(&p);
			p++;
			uint8_t pat = (uint8_t)parse_hex(&p);
			if (count * bs > sizeof(iobuf))
				fail("disk", "request too large for the buffer");
			memset(iobuf, op == 'w' ? pat : (uint8_t)~pat, count * bs);
			ret = do_io(op, lba, count, iobuf, NULL);
			if (ret) {
				printf("TG-DISK %c lba=%lu count=%u error=0x%x\n", op, lba, count, (unsigned)ret);
				fail("disk", "I/O error");
			}
			if (op == 'r')
				for (uint32_t i = 0; i < count * bs; i++)
					if (iobuf[i] != pat) {
						printf("TG-DISK r lba=%lu byte %u is %x, want %x\n", lba, i, iobuf[i], pat);
						fail("disk", "data mismatch");
					}
			printf("TG-DISK %s %s lba=%lu count=%u pat=%x ok\n", devname[0] == 'v' ? "virtio-blk" :
			       atapi ? "atapi" : "ide", op == 'w' ? "wrote" : "read", lba, count, pat);
		}
		if (*p == ',')
			p++;
		else if (*p && *p != ' ')
			fail("disk", "bad ops= syntax");
	}
}

static void disk_open_dev(const char *dev, unsigned unit)
{
	devname = dev;
	if (!strncmp(devname, "vblk", 4) ? vblk_init() : ata_init((int)unit))
		fail("disk", "device not found");
}

static void disk_evil(const char *p)
{
	int ret;
	/* One request that breaks a rule; the device must contain it. */
	if (!strncmp(p, "lba", 3)) {
		ret = do_io('r', 1ull << 40, 1, iobuf, NULL);
		printf("TG-DISK evil=lba result=0x%x\n", (unsigned)ret);
		if (ret == 0)
			fail("disk", "read past the end succeeded");
		return;
	}
	ret = do_io('r', 0, 8, iobuf, p);
	printf("TG-DISK evil=%s result=%d\n", p[0] == 'l' ? "loop" : p[0] == 'o' ? "oob" : "prd", ret);
	if (ret == 0)
		fail("disk", "the bad request succeeded");
	if (!strncmp(devname, "vblk", 4)) {
		if (!(v_common[0x14] & 0x40))
			fail("disk", "device did not set NEEDS_RESET");
		/* A reset brings the device back. */
		v_used_seen = 0;
		memset(&vq_avail, 0, sizeof(vq_avail));
		memset(&vq_used, 0, sizeof(vq_used));
		if (vblk_init() || vblk_rw(0, 0, iobuf, 512, NULL) != 0)
			fail("disk", "device unusable after reset");
		printf("TG-DISK reset ok\n");
	}
}

/* dev=/unit=/ops= (and dev2=/unit2=/ops2= for a second device), or evil=. */
void test_disk(void)
{
	size_t len;
	const char *evil = cmdline_get("evil", &len);
	const char *dev = cmdline_get("dev", &len), *dev2 = cmdline_get("dev2", &len);

	disk_open_dev(dev ? dev : "", (unsigned)cmdline_u64("unit", 0));
	if (cmdline_get("mode", &len))
		vblk_bench();
	if (cmdline_is("irq", "msix"))
		vblk_msix_test();
	if (cmdline_is("irq", "intx"))
		vblk_isr_test();
	if (cmdline_is("extras", "1"))
		vblk_extras();
	if (evil) {
		disk_evil(evil);
		pass("disk");
	}
	disk_ops(cmdline_get("ops", &len));
	if (dev2) {
		disk_open_dev(dev2, (unsigned)cmdline_u64("unit2", 0));
		disk_ops(cmdline_get("ops2", &len));
	}
	pass("disk");
}
