/* tguest runtime: serial, printf, boot information from either entry, descriptor
 * tables, traps (ud2 from CPL3 is the system call), PCI config, ACPI, debug exit. */
#include <stdarg.h>

#include "rt.h"

#define COM1 0x3f8
#define DEBUG_EXIT 0x501
#define EXIT_EXCEPTION 0x7f

struct boot_info boot;

extern char __image_end[], __bss_start[], __bss_end[];
extern uint64_t gdt_tss[2];
extern char trap_stack_top[];
extern void user_return(void);
extern void isr0(void), isr1(void), isr2(void), isr3(void), isr4(void), isr5(void),
	isr6(void), isr7(void), isr8(void), isr9(void), isr10(void), isr11(void), isr12(void),
	isr13(void), isr14(void), isr15(void), isr16(void), isr17(void), isr18(void),
	isr19(void), isr20(void), isr21(void);
int test_main(void);

static struct {
	uint32_t reserved0;
	uint64_t rsp0, rsp1, rsp2, reserved1, ist[7], reserved2;
	uint16_t reserved3, iomap;
} __attribute__((packed)) tss;
_Static_assert(sizeof(tss) == 104, "64-bit TSS");

static uint64_t idt[256 * 2] __attribute__((aligned(16)));
static volatile int print_lock;

/* String instructions: one emulated instruction at CPL0 instead of a loop of them. */
void *memset(void *d, int c, size_t n)
{
	void *p = d;
	__asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *p = d;
	__asm__ volatile("rep movsb" : "+D"(p), "+S"(s), "+c"(n) : : "memory");
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;
	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p - *q;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (uint8_t)*a - (uint8_t)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

void putc_serial(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (uint8_t)c);
}

void puts_serial(const char *s)
{
	while (*s)
		putc_serial(*s++);
}

static void put_num(uint64_t v, unsigned base, int width, char pad)
{
	char buf[24];
	int n = 0;
	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (n < width--)
		putc_serial(pad);
	while (n)
		putc_serial(buf[--n]);
}

void printf(const char *fmt, ...)
{
	va_list ap;

	while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
		;
	va_start(ap, fmt);
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			putc_serial(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0')
			pad = '0', fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l')
			lng++, fmt++;
		switch (*fmt) {
		case 's': { const char *s = va_arg(ap, const char *); puts_serial(s ? s : "(null)"); break; }
		case 'c': putc_serial((char)va_arg(ap, int)); break;
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			if (v < 0) { putc_serial('-'); v = -v; }
			put_num((uint64_t)v, 10, width, pad);
			break;
		}
		case 'u': put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad); break;
		case 'x': put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad); break;
		case '%': putc_serial('%'); break;
		default: putc_serial('?');
		}
	}
	va_end(ap);
	__atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

void guest_exit(uint8_t code)
{
	outw(DEBUG_EXIT, code);
	for (;;)
		__asm__ volatile("cli; hlt");
}

void pass(const char *name)
{
	printf("TG-PASS %s\n", name);
	guest_exit(0);
}

void fail(const char *name, const char *why)
{
	printf("TG-FAIL %s: %s\n", name, why);
	guest_exit(1);
}

const char *cmdline_get(const char *key, size_t *len)
{
	size_t kl = strlen(key);
	const char *p = boot.cmdline;

	while (p && *p) {
		while (*p == ' ')
			p++;
		const char *w = p;
		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - w) > kl && !strncmp(w, key, kl) && w[kl] == '=') {
			*len = (size_t)(p - w) - kl - 1;
			return w + kl + 1;
		}
	}
	return NULL;
}

static uint64_t cmdline_u64_digits(const char *v, size_t len)
{
	uint64_t x = 0;
	for (size_t i = 0; i < len && v[i] >= '0' && v[i] <= '9'; i++)
		x = x * 10 + (uint64_t)(v[i] - '0');
	return x;
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
	size_t len;
	const char *v = cmdline_get(key, &len);
	uint64_t x = 0, base = 10;
	size_t i = 0;

	if (!v || !len)
		return dflt;
	if (len > 2 && v[0] == '0' && v[1] == 'x')
		base = 16, i = 2;
	for (; i < len; i++) {
		char c = v[i];
		if (base == 10 && c == 'e') { /* "1e9" */
			for (uint64_t e = cmdline_u64_digits(v + i + 1, len - i - 1); e; e--)
				x *= 10;
			break;
		}
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
		           : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 99;
		if (d >= base)
			break;
		x = x * base + d;
	}
	return x;
}

bool cmdline_is(const char *key, const char *value)
{
	size_t len;
	const char *v = cmdline_get(key, &len);

	return v && len == strlen(value) && !strncmp(v, value, len);
}

uint32_t pci_read32(int bus, int dev, int fn, int off)
{
	outl(0xcf8, 0x80000000u | (uint32_t)bus << 16 | (uint32_t)dev << 11 | (uint32_t)fn << 8 |
	     (uint32_t)(off & 0xfc));
	return inl(0xcfc);
}

void pci_write32(int bus, int dev, int fn, int off, uint32_t v)
{
	outl(0xcf8, 0x80000000u | (uint32_t)bus << 16 | (uint32_t)dev << 11 | (uint32_t)fn << 8 |
	     (uint32_t)(off & 0xfc));
	outl(0xcfc, v);
}

uint64_t image_end(void)
{
	return ((uint64_t)(uintptr_t)__image_end + 0xfffff) & ~0xfffffull;
}

/* --- boot information ------------------------------------------------------------- */

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};

static void boot_from_pvh(const struct hvm_start_info *si)
{
	if (si->magic != 0x336ec578)
		fail("boot", "bad hvm_start_info magic");
	boot.cmdline = (const char *)(uintptr_t)si->cmdline_paddr;
	boot.rsdp = si->rsdp_paddr;
	if (si->nr_modules) {
		const uint64_t *mod = (const uint64_t *)(uintptr_t)si->modlist_paddr;
		boot.initrd = mod[0];
		boot.initrd_size = mod[1];
	}
	if (si->version >= 1) {
		const uint8_t *m = (const uint8_t *)(uintptr_t)si->memmap_paddr;
		for (uint32_t i = 0; i < si->memmap_entries && boot.nr_mem < 32; i++, m += 24) {
			struct mem_region *r = &boot.mem[boot.nr_mem++];
			memcpy(&r->addr, m, 8);
			memcpy(&r->size, m + 8, 8);
			memcpy(&r->type, m + 16, 4);
		}
	}
}

static void boot_from_linux(const uint8_t *bp)
{
	uint32_t cmd;
	memcpy(&cmd, bp + 0x228, 4);
	boot.cmdline = (const char *)(uintptr_t)cmd;
	memcpy(&boot.rsdp, bp + 0x070, 8);
	uint32_t rd, rs;
	memcpy(&rd, bp + 0x218, 4);
	memcpy(&rs, bp + 0x21c, 4);
	boot.initrd = rd;
	boot.initrd_size = rs;
	for (int i = 0; i < bp[0x1e8] && boot.nr_mem < 32; i++) {
		const uint8_t *e = bp + 0x2d0 + 20 * i;
		struct mem_region *r = &boot.mem[boot.nr_mem++];
		memcpy(&r->addr, e, 8);
		memcpy(&r->size, e + 8, 8);
		memcpy(&r->type, e + 16, 4);
	}
}

/* --- descriptor tables and traps -------------------------------------------------- */

static void idt_set(int n, void (*fn)(void))
{
	uint64_t a = (uint64_t)(uintptr_t)fn;
	idt[2 * n] = (a & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((a >> 16) & 0xffff) << 48;
	idt[2 * n + 1] = a >> 32;
}

static void cpu_tables_load(void)
{
	struct { uint16_t limit; uint64_t base; } __attribute__((packed)) p = {
		sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" :: "m"(p));
}

static void cpu_tables_init(void)
{
	void (*const stubs[])(void) = { isr0, isr1, isr2, isr3, isr4, isr5, isr6, isr7, isr8,
		isr9, isr10, isr11, isr12, isr13, isr14, isr15, isr16, isr17, isr18, isr19, isr20,
		isr21 };
	extern void isr_msi(void), isr_sci(void);
	for (int i = 0; i < 22; i++)
		idt_set(i, stubs[i]);
	idt_set(0x40, isr_msi);
	idt_set(0x41, isr_sci);
	tss.rsp0 = (uint64_t)(uintptr_t)trap_stack_top;
	tss.iomap = sizeof(tss);
	uint64_t base = (uint64_t)(uintptr_t)&tss, limit = sizeof(tss) - 1;
	gdt_tss[0] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 |
	             ((base >> 24) & 0xff) << 56;
	gdt_tss[1] = base >> 32;
	cpu_tables_load();
	__asm__ volatile("ltr %w0" :: "r"(0x28));
}

void rt_ap_tables(void);
void rt_ap_tables(void)
{
	extern char gdt_ptr[];
	__asm__ volatile("lgdt (%0)" :: "r"(gdt_ptr));
	cpu_tables_load();
}

void trap(struct trap_frame *f);
void trap(struct trap_frame *f)
{
	if (f->vector == 6 && (f->cs & 3) == 3) {
		/* ud2 from CPL3: the system call. rax = number. */
		switch (f->rax) {
		case 0:
			user_return();
			break;
		case 1:
			putc_serial((char)f->rdi);
			break;
		default:
			break; /* null call */
		}
		f->rip += 2;
		return;
	}
	printf("TG-EXCEPTION vector=%lu rip=0x%lx cs=0x%lx err=0x%lx\n", f->vector, f->rip, f->cs,
	       f->error);
	guest_exit(EXIT_EXCEPTION);
}

void user_syscall_null(void)
{
	__asm__ volatile("ud2" :: "a"(2) : "memory");
}

void rt_main(int kind, uint32_t info);
void rt_main(int kind, uint32_t info)
{
	boot.kind = kind;
	if (kind == BOOT_PVH)
		boot_from_pvh((const void *)(uintptr_t)info);
	else
		boot_from_linux((const void *)(uintptr_t)info);
	cpu_tables_init();
	printf("TG-START boot=%s\n", kind == BOOT_PVH ? "pvh" : "linux");
	printf("TG-CMDLINE %s\n", boot.cmdline ? boot.cmdline : "");
	test_main();
	fail("main", "test returned");
}
