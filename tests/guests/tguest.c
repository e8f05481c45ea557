/* tguest test cases, chosen by "test=NAME" on the command line. Each prints TG-* marker
 * lines on COM1 and reports through isa-debug-exit (pass 0 -> status 1, fail 1 -> 3,
 * unexpected exception 0x7f -> 255). Heavy loops run at CPL3, where this host's nested
 * KVM runs guest code natively. */
#include "rt.h"

extern char ap_tramp_start[], ap_tramp_end[];
extern uint32_t ap_cr3;
extern char pml4[];
void rt_ap_tables(void);
void ap_main(void);

static volatile int ap_online;

/* --- hello, exit -------------------------------------------------------------------- */

static void test_hello(void)
{
	printf("Hello from tguest\n");
	pass("hello");
}

/* --- rtc ---------------------------------------------------------------------------- */

static uint8_t cmos(uint8_t reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void test_rtc(void)
{
	while (cmos(0x0a) & 0x80)
		;
	uint8_t b = cmos(0x0b);
	uint8_t raw[7] = { cmos(0), cmos(2), cmos(4), cmos(7), cmos(8), cmos(9), cmos(0x32) };
	unsigned v[7];
	for (int i = 0; i < 7; i++) {
		uint8_t x = raw[i];
		if (i == 2)
			x &= 0x7f; /* 12-hour PM bit */
		v[i] = (b & 4) ? x : (unsigned)((x >> 4) * 10 + (x & 15));
	}
	if (!(b & 2) && (raw[2] & 0x80))
		v[2] = v[2] % 12 + 12;
	unsigned year = v[6] * 100 + v[5];
	printf("TG-RTC %04u-%02u-%02u %02u:%02u:%02u\n", year, v[4], v[3], v[2], v[1], v[0]);
	if (year < 2024 || v[4] < 1 || v[4] > 12 || v[3] < 1 || v[3] > 31 || v[2] > 23 ||
	    v[1] > 59 || v[0] > 59)
		fail("rtc", "implausible date");
	uint64_t now = cmdline_u64("now", 0);
	if (now) {
		int64_t t = days_from_civil(year, v[4], v[3]) * 86400 + v[2] * 3600 + v[1] * 60 + v[0];
		int64_t diff = t - (int64_t)now;
		printf("TG-RTC-DIFF %d\n", (int)diff);
		if (diff < -120 || diff > 120)
			fail("rtc", "more than 2 minutes from the host's time");
	}
	pass("rtc");
}

/* --- smp ---------------------------------------------------------------------------- */

void ap_main(void)
{
	rt_ap_tables();
	uint32_t id = mmio_read32(0xfee00020) >> 24;
	printf("TG-CPU apic=%u\n", id);
	__atomic_fetch_add(&ap_online, 1, __ATOMIC_SEQ_CST);
	for (;;)
		__asm__ volatile("cli; hlt");
}

struct wait_arg {
	int want;
	uint64_t cycles;
};

/* At CPL3: spin until the APs checked in or the cycle budget is spent. */
static void wait_for_aps(void *p)
{
	struct wait_arg *w = p;
	uint64_t start = rdtsc();
	while (__atomic_load_n(&ap_online, __ATOMIC_SEQ_CST) < w->want &&
	       rdtsc() - start < w->cycles)
		__asm__ volatile("pause");
}

static void test_smp(void)
{
	int cpus = acpi_count_cpus();
	if (cpus < 1)
		fail("smp", "no MADT");
	memcpy((void *)0x8000, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
	uint32_t *cr3 = (uint32_t *)(0x8000 + ((char *)&ap_cr3 - ap_tramp_start));
	*cr3 = (uint32_t)(uintptr_t)pml4;
	if (cpus > 1) {
		mmio_write32(0xfee00300, 0x000c4500);       /* INIT to all but self */
		for (volatile int i = 0; i < 100; i++)
			;
		mmio_write32(0xfee00300, 0x000c4608);       /* SIPI, vector 0x08 */
		for (volatile int i = 0; i < 100; i++)
			;
		mmio_write32(0xfee00300, 0x000c4608);
	}
	struct wait_arg w = { cpus - 1, cmdline_u64("smp_wait", 30) * 1000000000ull };
	run_user(wait_for_aps, &w);
	int online = __atomic_load_n(&ap_online, __ATOMIC_SEQ_CST) + 1;
	printf("TG-SMP cpus=%d online=%d\n", cpus, online);
	if (online != cpus)
		fail("smp", "not every CPU checked in");
	pass("smp");
}

/* --- mem ---------------------------------------------------------------------------- */

struct touch {
	uint64_t start, end, bytes;
	bool ok;
};

static void touch_ram(void *p)
{
	struct touch *t = p;
	for (uint64_t a = t->start; a < t->end; a += 4096)
		*(volatile uint64_t *)a = a ^ 0x5a5a5a5a5a5a5a5aull;
	for (uint64_t a = t->start; a < t->end; a += 4096)
		if (*(volatile uint64_t *)a != (a ^ 0x5a5a5a5a5a5a5a5aull))
			t->ok = false;
	t->bytes += t->end - t->start;
}

static void test_mem(void)
{
	uint64_t ram = 0, top = 0;
	struct touch t = { .ok = true };

	for (int i = 0; i < boot.nr_mem; i++) {
		struct mem_region *r = &boot.mem[i];
		printf("TG-E820 start=0x%lx end=0x%lx type=%u\n", r->addr, r->addr + r->size - 1,
		       r->type);
		if (r->type != 1)
			continue;
		ram += r->size;
		if (r->addr + r->size > top)
			top = r->addr + r->size;
	}
	printf("TG-MEM ram=%lu top=0x%lx\n", ram, top);
	/* Touch every page of usable RAM above the image (below 4 GiB: what is mapped). */
	for (int i = 0; i < boot.nr_mem; i++) {
		struct mem_region *r = &boot.mem[i];
		uint64_t s = r->addr, e = r->addr + r->size;
		if (r->type != 1)
			continue;
		if (s < image_end())
			s = image_end();
		if (e > 0x100000000ull)
			e = 0x100000000ull;
		if (boot.initrd_size && s < boot.initrd + boot.initrd_size && e > boot.initrd)
			e = boot.initrd; /* keep the initrd intact */
		if (s >= e)
			continue;
		t.start = s;
		t.end = e;
		run_user(touch_ram, &t);
	}
	printf("TG-MEM touched=%lu %s\n", t.bytes, t.ok ? "ok" : "MISMATCH");
	if (!t.ok)
		fail("mem", "RAM did not keep what was written");
	pass("mem");
}

/* --- initrd ------------------------------------------------------------------------- */

struct sum {
	const uint8_t *p;
	uint64_t n, sum;
};

static void sum_bytes(void *a)
{
	struct sum *s = a;
	for (uint64_t i = 0; i < s->n; i++)
		s->sum = s->sum * 31 + s->p[i];
}

static void test_initrd(void)
{
	struct sum s = { (const uint8_t *)(uintptr_t)boot.initrd, boot.initrd_size, 0 };
	if (!boot.initrd_size)
		fail("initrd", "no initrd");
	run_user(sum_bytes, &s);
	printf("TG-INITRD addr=0x%lx size=%lu hash=%lx\n", boot.initrd, boot.initrd_size, s.sum);
	pass("initrd");
}

/* --- cpl3 --------------------------------------------------------------------------- */

struct compute {
	uint64_t iters, sys, x;
};

static void compute(void *p)
{
	struct compute *c = p;
	uint64_t x = 88172645463325252ull;
	for (uint64_t i = 0; i < c->iters; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	c->x = x;
	for (uint64_t i = 0; i < c->sys; i++)
		user_syscall_null();
}

static void test_cpl3(void)
{
	struct compute c = { cmdline_u64("iters", 1000000), cmdline_u64("sys", 100), 0 };
	uint64_t t0 = rdtsc();
	run_user(compute, &c);
	printf("TG-CPL3 iters=%lu sys=%lu cycles=%lu x=%lx\n", c.iters, c.sys, rdtsc() - t0, c.x);
	pass("cpl3");
}

/* --- pci ---------------------------------------------------------------------------- */

static void test_pci(void)
{
	for (int dev = 0; dev < 32; dev++)
		for (int fn = 0; fn < 8; fn++) {
			uint32_t id = pci_read32(0, dev, fn, 0);
			if ((id & 0xffff) == 0xffff) {
				if (fn == 0)
					break;
				continue;
			}
			uint32_t cls = pci_read32(0, dev, fn, 8) >> 8;
			printf("TG-PCI 00:%02x.%d %04x:%04x class=%06x\n", dev, fn, id & 0xffff,
			       id >> 16, cls);
			if (fn == 0 && !(pci_read32(0, dev, 0, 0x0c) & 0x800000))
				break;
		}
	pass("pci");
}

/* --- failure paths ------------------------------------------------------------------ */

static void test_fault(void)
{
	struct { uint16_t limit; uint64_t base; } __attribute__((packed)) none = { 0, 0 };
	printf("TG-FAULT loading an empty IDT and faulting\n");
	__asm__ volatile("lidt %0; ud2" :: "m"(none));
	fail("fault", "still running");
}

static void test_emul(void)
{
	printf("TG-EMUL executing int3 at CPL0\n");
	__asm__ volatile("int3");
	fail("emul", "still running");
}

static void test_reset(void)
{
	printf("TG-RESET through the reset control register 0xcf9\n");
	outb(0xcf9, 0x02);
	outb(0xcf9, 0x06);
	fail("reset", "still running");
}

/* Print a line every `period` units of CPL3 work, forever (for signal and console tests). */
static void spin(void *arg)
{
	(void)arg;
	for (uint64_t n = 0;; n++) {
		for (volatile uint64_t i = 0; i < 100000000; i++)
			;
		user_syscall_null();
	}
}

static void test_spin(void)
{
	printf("TG-SPIN\n");
	run_user(spin, 0);
}

/* Print "TG-COUNT n" every `cycles` TSC cycles of CPL3 work, forever: a paused guest's
 * count stops (the monitor tests). */
static void wait_cycles(void *arg)
{
	uint64_t start = rdtsc(), n = *(uint64_t *)arg;
	while (rdtsc() - start < n)
		__asm__ volatile("pause");
}

static void test_count(void)
{
	uint64_t cycles = cmdline_u64("cycles", 100000000);
	for (uint64_t n = 0;; n++) {
		printf("TG-COUNT %lu\n", n);
		run_user(wait_cycles, &cycles);
	}
}

extern void test_disk(void);    /* disk.c */
extern void test_net(void);     /* net.c */
extern void test_vbe(void);     /* vga.c */
extern void test_mouse(void);   /* vga.c */

int test_main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "hello", test_hello }, { "rtc", test_rtc }, { "smp", test_smp },
		{ "mem", test_mem }, { "initrd", test_initrd }, { "cpl3", test_cpl3 },
		{ "pci", test_pci }, { "fault", test_fault }, { "emul", test_emul },
		{ "poweroff", acpi_poweroff }, { "disk", test_disk }, { "reset", test_reset },
		{ "spin", test_spin }, { "net", test_net }, { "count", test_count },
		{ "powerbtn", acpi_power_button }, { "vbe", test_vbe }, { "mouse", test_mouse },
	};
	if (cmdline_is("test", "exit"))
		guest_exit((uint8_t)cmdline_u64("code", 0));
	for (unsigned i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (cmdline_is("test", tests[i].name))
			tests[i].fn();
	fail("main", "unknown test= (hello exit rtc smp mem initrd cpl3 pci fault emul poweroff disk)");
	return 0;
}
