/* tguest runtime: what test cases use. Freestanding; no libc. */
#ifndef TGUEST_RT_H
#define TGUEST_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BOOT_PVH   1
#define BOOT_LINUX 2

struct mem_region {
	uint64_t addr, size;
	uint32_t type;
};

struct boot_info {
	int kind;                    /* BOOT_PVH or BOOT_LINUX */
	const char *cmdline;
	struct mem_region mem[32];
	int nr_mem;
	uint64_t rsdp;
	uint64_t initrd, initrd_size;
};
extern struct boot_info boot;

struct trap_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

/* port I/O */
static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint64_t rdtsc(void) { uint32_t lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return (uint64_t)hi << 32 | lo; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }

void putc_serial(char c);
void puts_serial(const char *s);
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void guest_exit(uint8_t code);  /* isa-debug-exit: (code<<1)|1 */
__attribute__((noreturn)) void pass(const char *name);
__attribute__((noreturn)) void fail(const char *name, const char *why);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
/* Value of "key=" in the command line (its length in *len), or NULL. */
const char *cmdline_get(const char *key, size_t *len);
uint64_t cmdline_u64(const char *key, uint64_t dflt);
bool cmdline_is(const char *key, const char *value);

uint32_t pci_read32(int bus, int dev, int fn, int off);
void pci_write32(int bus, int dev, int fn, int off, uint32_t v);

/* Run fn(arg) at CPL3; returns when it returns. */
void run_user(void (*fn)(void *), void *arg);
/* From CPL3: a null system call through ud2 (costs a trip through emulated CPL0). */
void user_syscall_null(void);

/* ACPI */
const void *acpi_find(const char *sig);
int acpi_count_cpus(void);
void acpi_poweroff(void);
void acpi_power_button(void);

/* The end of the guest image (page tables, stacks included): RAM above is free. */
uint64_t image_end(void);

#endif
