/* tguest network: a virtio-net driver and just enough ARP, IPv4 and ICMP to answer
 * pings and send one.
 *
 *   test=net ip=A.B.C.D gw=A.B.C.D [peer=A.B.C.D] [answers=N] [secs=S]
 * Answers ARP and ICMP echo for ip=; if peer= is given, resolves gw= and pings peer
 * through it; passes once the peer replied and N echo requests were answered. */
#include "rt.h"

void test_net(void);

#define QSZ 16
#define BUF 2048
#define HDR 12

struct vq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vq {
	struct vq_desc desc[QSZ] __attribute__((aligned(4096)));
	struct { uint16_t flags, idx, ring[QSZ], used_event; } avail __attribute__((aligned(4096)));
	struct { uint16_t flags, idx; struct { uint32_t id, len; } ring[QSZ]; } used
		__attribute__((aligned(4096)));
	uint8_t buf[QSZ][BUF] __attribute__((aligned(64)));
	uint16_t seen;
	volatile uint16_t *notify;
};
static struct vq rxq, txq;
static volatile uint8_t *common;
static uint8_t mac[6], gw_mac[6];
static uint32_t my_ip, gw_ip, peer_ip;
static bool have_gw, peer_replied;
static unsigned answered;

static uint16_t be16(uint16_t v) { return (uint16_t)(v << 8 | v >> 8); }
static uint32_t be32(uint32_t v) { return be16((uint16_t)v) << 16 | be16((uint16_t)(v >> 16)); }

static uint32_t parse_ip(const char *key)
{
	size_t len;
	const char *p = cmdline_get(key, &len);
	uint32_t ip = 0, part = 0;
	if (!p)
		return 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || p[i] == '.') {
			ip = ip << 8 | part;
			part = 0;
		} else {
			part = part * 10 + (uint32_t)(p[i] - '0');
		}
	}
	return ip; /* host order */
}

static void print_ip(const char *what, uint32_t ip)
{
	printf("%s %u.%u.%u.%u\n", what, ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

static int vnet_setup_queue(struct vq *q, int idx, volatile uint8_t *notify_base, uint32_t mult)
{
	volatile uint8_t *c = common;
	*(volatile uint16_t *)(c + 0x16) = (uint16_t)idx;
	if (*(volatile uint16_t *)(c + 0x18) < QSZ)
		return -1;
	*(volatile uint16_t *)(c + 0x18) = QSZ;
	*(volatile uint64_t *)(c + 0x20) = (uint64_t)(uintptr_t)q->desc;
	*(volatile uint64_t *)(c + 0x28) = (uint64_t)(uintptr_t)&q->avail;
	*(volatile uint64_t *)(c + 0x30) = (uint64_t)(uintptr_t)&q->used;
	uint16_t noff = *(volatile uint16_t *)(c + 0x1e);
	q->notify = (volatile uint16_t *)(notify_base + noff * mult);
	*(volatile uint16_t *)(c + 0x1c) = 1;
	return 0;
}

static int vnet_init(void)
{
	int dev = -1;
	for (int d = 0; d < 32 && dev < 0; d++) {
		uint32_t id = pci_read32(0, d, 0, 0);
		if ((id & 0xffff) == 0x1af4 && ((id >> 16) == 0x1041 || (id >> 16) == 0x1000))
			dev = d;
	}
	if (dev < 0)
		return -1;
	pci_write32(0, dev, 0, 4, pci_read32(0, dev, 0, 4) | 0x6);
	volatile uint8_t *notify = 0, *devcfg = 0;
	uint32_t mult = 0;
	for (uint8_t cap = (uint8_t)pci_read32(0, dev, 0, 0x34); cap;) {
		uint32_t c0 = pci_read32(0, dev, 0, cap);
		if ((c0 & 0xff) == 0x09) {
			uint8_t type = (uint8_t)(c0 >> 24), bar = (uint8_t)pci_read32(0, dev, 0, cap + 4);
			uint32_t lo = pci_read32(0, dev, 0, 0x10 + 4 * bar);
			uint64_t base = lo & ~15u;
			if ((lo & 6) == 4)
				base |= (uint64_t)pci_read32(0, dev, 0, 0x14 + 4 * bar) << 32;
			volatile uint8_t *a = (volatile uint8_t *)(uintptr_t)(base + pci_read32(0, dev, 0, cap + 8));
			if (type == 1) common = a;
			if (type == 2) { notify = a; mult = pci_read32(0, dev, 0, cap + 16); }
			if (type == 4) devcfg = a;
		}
		cap = (uint8_t)(c0 >> 8);
	}
	if (!common || !notify || !devcfg)
		return -2;
	common[0x14] = 0;
	common[0x14] = 3;
	*(volatile uint32_t *)(common + 0x08) = 1;
	*(volatile uint32_t *)(common + 0x0c) = 1;           /* VERSION_1 */
	*(volatile uint32_t *)(common + 0x08) = 0;
	*(volatile uint32_t *)(common + 0x0c) = 1u << 5;     /* MAC */
	common[0x14] = 3 | 8;
	if (!(common[0x14] & 8))
		return -3;
	if (vnet_setup_queue(&rxq, 0, notify, mult) || vnet_setup_queue(&txq, 1, notify, mult))
		return -4;
	common[0x14] = 3 | 8 | 4;
	for (int i = 0; i < 6; i++)
		mac[i] = devcfg[i];
	for (int i = 0; i < QSZ; i++) {
		rxq.desc[i] = (struct vq_desc){ (uint64_t)(uintptr_t)rxq.buf[i], BUF, 2, 0 };
		rxq.avail.ring[i] = (uint16_t)i;
	}
	__atomic_store_n(&rxq.avail.idx, QSZ, __ATOMIC_SEQ_CST);
	*rxq.notify = 0;
	return 0;
}

static void vnet_send(const uint8_t *frame, uint32_t len)
{
	uint16_t slot = txq.avail.idx % QSZ;
	memset(txq.buf[slot], 0, HDR);
	memcpy(txq.buf[slot] + HDR, frame, len);
	txq.desc[slot] = (struct vq_desc){ (uint64_t)(uintptr_t)txq.buf[slot], HDR + len, 0, 0 };
	txq.avail.ring[slot] = slot;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	txq.avail.idx++;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*txq.notify = 1;
	while (__atomic_load_n(&txq.used.idx, __ATOMIC_ACQUIRE) != txq.avail.idx)
		;
}

static uint16_t csum(const uint8_t *p, uint32_t len)
{
	uint32_t s = 0;
	for (uint32_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		s += (uint32_t)p[len - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return be16((uint16_t)~s);
}

static void eth_header(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, mac, 6);
	*(uint16_t *)(f + 12) = be16(type);
}

static void arp_send(uint16_t op, const uint8_t *tha, uint32_t tpa)
{
	static const uint8_t bcast[6] = { 255, 255, 255, 255, 255, 255 };
	uint8_t f[60] = { 0 };
	eth_header(f, op == 1 ? bcast : tha, 0x0806);
	uint8_t *a = f + 14;
	*(uint16_t *)(a + 0) = be16(1);
	*(uint16_t *)(a + 2) = be16(0x0800);
	a[4] = 6;
	a[5] = 4;
	*(uint16_t *)(a + 6) = be16(op);
	memcpy(a + 8, mac, 6);
	*(uint32_t *)(a + 14) = be32(my_ip);
	memcpy(a + 18, tha, 6);
	*(uint32_t *)(a + 24) = be32(tpa);
	vnet_send(f, sizeof(f));
}

static void icmp_send(const uint8_t *dst_mac, uint32_t dst_ip, uint8_t type, uint16_t id,
                      uint16_t seq, const uint8_t *data, uint32_t dlen)
{
	uint8_t f[1514];
	if (dlen > sizeof(f) - 42)
		dlen = sizeof(f) - 42;
	eth_header(f, dst_mac, 0x0800);
	uint8_t *ip = f + 14, *ic = ip + 20;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	*(uint16_t *)(ip + 2) = be16((uint16_t)(20 + 8 + dlen));
	ip[8] = 64;
	ip[9] = 1;
	*(uint32_t *)(ip + 12) = be32(my_ip);
	*(uint32_t *)(ip + 16) = be32(dst_ip);
	*(uint16_t *)(ip + 10) = csum(ip, 20);
	ic[0] = type;
	ic[1] = 0;
	*(uint16_t *)(ic + 2) = 0;
	*(uint16_t *)(ic + 4) = be16(id);
	*(uint16_t *)(ic + 6) = be16(seq);
	memcpy(ic + 8, data, dlen);
	*(uint16_t *)(ic + 2) = csum(ic, 8 + dlen);
	vnet_send(f, 14 + 20 + 8 + dlen);
}

static void handle_frame(const uint8_t *f, uint32_t len)
{
	if (len < 14)
		return;
	uint16_t type = be16(*(const uint16_t *)(f + 12));
	if (type == 0x0806 && len >= 42) {
		const uint8_t *a = f + 14;
		uint16_t op = be16(*(const uint16_t *)(a + 6));
		uint32_t spa = be32(*(const uint32_t *)(a + 14)), tpa = be32(*(const uint32_t *)(a + 24));
		if (op == 1 && tpa == my_ip)
			arp_send(2, a + 8, spa);
		if (op == 2 && spa == gw_ip && !have_gw) {
			memcpy(gw_mac, a + 8, 6);
			have_gw = true;
			print_ip("TG-NET gateway resolved:", gw_ip);
		}
		return;
	}
	if (type != 0x0800 || len < 14 + 20 + 8)
		return;
	const uint8_t *ip = f + 14;
	uint32_t ihl = (ip[0] & 15) * 4u, tot = be16(*(const uint16_t *)(ip + 2));
	if (ip[9] != 1 || tot < ihl + 8 || 14 + tot > len)
		return;
	uint32_t src = be32(*(const uint32_t *)(ip + 12)), dst = be32(*(const uint32_t *)(ip + 16));
	const uint8_t *ic = ip + ihl;
	if (dst != my_ip)
		return;
	if (ic[0] == 8) {
		icmp_send(f + 6, src, 0, be16(*(const uint16_t *)(ic + 4)),
		          be16(*(const uint16_t *)(ic + 6)), ic + 8, tot - ihl - 8);
		answered++;
		print_ip("TG-NET answered echo request from", src);
	} else if (ic[0] == 0 && src == peer_ip) {
		peer_replied = true;
		print_ip("TG-NET echo reply from", src);
	}
}

static void poll_rx(void)
{
	while (rxq.seen != __atomic_load_n(&rxq.used.idx, __ATOMIC_ACQUIRE)) {
		uint16_t slot = (uint16_t)rxq.used.ring[rxq.seen % QSZ].id;
		uint32_t len = rxq.used.ring[rxq.seen % QSZ].len;
		rxq.seen++;
		if (slot < QSZ && len > HDR && len <= BUF)
			handle_frame(rxq.buf[slot] + HDR, len - HDR);
		rxq.avail.ring[rxq.avail.idx % QSZ] = slot;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		rxq.avail.idx++;
		*rxq.notify = 0;
	}
}

/* Send `blast` UDP frames of `size` bytes to the gateway's discard port, as fast as the
 * TX queue takes them; the frames are built once and re-posted. */
static void net_blast(uint64_t n, uint32_t size)
{
	static const uint8_t zero[6];
	uint64_t t0 = rdtsc();
	while (!have_gw && rdtsc() - t0 < 30000000000ull) {
		if (rdtsc() - t0 > 0 && (rdtsc() - t0) % 1000000000ull < 2000000)
			arp_send(1, zero, gw_ip);
		poll_rx();
	}
	if (!have_gw)
		fail("net", "gateway did not answer ARP");
	if (size < 64 || size > 1514)
		size = 1514;
	for (int i = 0; i < QSZ; i++) {
		uint8_t *f = txq.buf[i] + HDR;
		memset(txq.buf[i], 0, HDR + size);
		eth_header(f, gw_mac, 0x0800);
		uint8_t *ip = f + 14, *udp = ip + 20;
		ip[0] = 0x45;
		*(uint16_t *)(ip + 2) = be16((uint16_t)(size - 14));
		ip[8] = 64;
		ip[9] = 17;
		*(uint32_t *)(ip + 12) = be32(my_ip);
		*(uint32_t *)(ip + 16) = be32(gw_ip);
		*(uint16_t *)(ip + 10) = csum(ip, 20);
		*(uint16_t *)(udp + 0) = be16(9);
		*(uint16_t *)(udp + 2) = be16(9);
		*(uint16_t *)(udp + 4) = be16((uint16_t)(size - 34));
		txq.desc[i] = (struct vq_desc){ (uint64_t)(uintptr_t)txq.buf[i], HDR + size, 0, 0 };
	}
	uint64_t sent = 0, done = 0;
	uint16_t seen = txq.used.idx;
	t0 = rdtsc();
	while (done < n) {
		while (sent < n && sent - done < QSZ) {
			txq.avail.ring[txq.avail.idx % QSZ] = (uint16_t)(txq.avail.idx % QSZ);
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			txq.avail.idx++;
			sent++;
		}
		*txq.notify = 1;
		uint16_t u = __atomic_load_n(&txq.used.idx, __ATOMIC_ACQUIRE);
		done += (uint16_t)(u - seen);
		seen = u;
	}
	printf("TG-NETBENCH frames=%lu size=%u cycles=%lu\n", n, size, rdtsc() - t0);
	pass("net");
}

void test_net(void)
{
	my_ip = parse_ip("ip");
	gw_ip = parse_ip("gw");
	peer_ip = parse_ip("peer");
	unsigned want = (unsigned)cmdline_u64("answers", 0);
	uint64_t budget = cmdline_u64("secs", 60) * 3000000000ull, start = rdtsc(), last = 0;
	int ret = vnet_init();
	if (ret)
		fail("net", "no virtio-net device");
	printf("TG-NET mac=%02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4],
	       mac[5]);
	print_ip("TG-NET ready at", my_ip);
	if (cmdline_u64("blast", 0))
		net_blast(cmdline_u64("blast", 0), (uint32_t)cmdline_u64("size", 1514));
	uint16_t seq = 0;
	while (rdtsc() - start < budget) {
		poll_rx();
		if (peer_ip && !peer_replied && rdtsc() - last > 500000000ull) {
			last = rdtsc();
			static const uint8_t zero[6];
			if (!have_gw)
				arp_send(1, zero, gw_ip);
			else
				icmp_send(gw_mac, peer_ip, 8, 0x7467, ++seq, (const uint8_t *)"tguest", 6);
		}
		if ((!peer_ip || peer_replied) && answered >= want)
			pass("net");
	}
	fail("net", "timed out");
}
