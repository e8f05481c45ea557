/* fw_cfg (vmm/hw/fw_cfg.c) as firmware drives it, without KVM: the port interface, the
 * file directory and DMA, with hostile descriptors; the SMBIOS blobs (vmm/boot/smbios.c),
 * walked here and read by dmidecode when it is installed; and the ACPI tables placed by
 * vmm/boot/tables.c with every checksum and pointer right. */
#include <check.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/boot/smbios.h"
#include "vmm/boot/tables.h"
#include "vmm/hw/devices.h"
#include "vmm/hw/fw_cfg.h"
#include "vmm/vm.h"

#define RAM  (1u << 20)
#define DESC 0x1000u
#define BUF  0x2000u

static struct vm vm;
static struct vm_config cfg;
static struct fw_cfg *fc;

static void setup(void)
{
	struct vt_error e;

	cfg = (struct vm_config){ .nr_vcpus = 2, .uuid = { 0x12, 0x34 } };
	vm = (struct vm){ .cfg = &cfg, .ram = calloc(1, RAM), .ram_size = RAM, .low_ram = RAM,
	                  .nr_vcpus = 2 };
	vm_mem_init(&vm.mem);
	struct vm_region r = { .name = "ram", .kind = VM_REGION_RAM, .size = RAM, .host = vm.ram };
	ck_assert_int_eq(vm_mem_add(&vm, &r, false, NULL), 0);
	bus_init(&vm.pio, "pio");
	ck_assert_int_eq(fw_cfg_init(&vm, &e), 0);
	fc = vm_device(&vm, "fw_cfg");
	ck_assert_ptr_nonnull(fc);
}

static void teardown(void)
{
	while (vm.nr_devs > 0) {
		struct vm_dev *d = &vm.devs[--vm.nr_devs];
		d->destroy(d->state);
	}
	bus_destroy(&vm.pio);
	vm_mem_destroy(&vm.mem);
	free(vm.ram);
}

static void sel(uint16_t key)
{
	ck_assert(bus_access(&vm.pio, 0x510, (uint8_t *)&key, 2, true));
}

static uint8_t rd(void)
{
	uint8_t b;
	bus_access(&vm.pio, 0x511, &b, 1, false);
	return b;
}

/* A DMA transfer as SeaBIOS starts it: a big-endian descriptor, its address written
 * big-endian to 0x518. Returns the control word the device left. */
static uint32_t dma_at(uint64_t desc, uint32_t control, uint32_t len, uint64_t addr)
{
	uint8_t *d = vm.ram + (desc < RAM - 16 ? desc : 0);
	uint32_t c = __builtin_bswap32(control), l = __builtin_bswap32(len);
	uint64_t a = __builtin_bswap64(addr);
	memcpy(d, &c, 4);
	memcpy(d + 4, &l, 4);
	memcpy(d + 8, &a, 8);
	uint32_t be = __builtin_bswap32((uint32_t)desc);
	bus_access(&vm.pio, 0x518, (uint8_t *)&be, 4, true);
	memcpy(&c, d, 4);
	return __builtin_bswap32(c);
}

static uint32_t dma(uint32_t control, uint32_t len, uint64_t addr)
{
	return dma_at(DESC, control, len, addr);
}

/* Read a whole file through the directory and DMA; returns its size. */
static uint32_t read_file(const char *name, uint8_t *out, uint32_t max)
{
	uint8_t dir[4 + 64 * 64];
	ck_assert_uint_eq(dma(0x19u << 16 | 0x08 | 0x02, sizeof(dir), BUF), 0);
	memcpy(dir, vm.ram + BUF, sizeof(dir));
	uint32_t n = __builtin_bswap32(*(uint32_t *)dir);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = dir + 4 + 64 * i;
		if (strcmp((const char *)e + 8, name))
			continue;
		uint32_t size = __builtin_bswap32(*(const uint32_t *)e);
		uint16_t key = __builtin_bswap16(*(const uint16_t *)(e + 4));
		ck_assert_uint_le(size, max);
		ck_assert_uint_eq(dma((uint32_t)key << 16 | 0x08 | 0x02, size, BUF), 0);
		memcpy(out, vm.ram + BUF, size);
		return size;
	}
	ck_abort_msg("no file %s", name);
	return 0;
}

START_TEST(test_ports)
{
	uint8_t sig[8];
	sel(0);
	for (int i = 0; i < 6; i++)
		sig[i] = rd();
	ck_assert_mem_eq(sig, "QEMU\0\0", 6); /* past the end: zeros */
	sel(1);
	ck_assert_uint_eq(rd(), 3);           /* traditional + DMA */
	sel(0x1234);
	ck_assert_uint_eq(rd(), 0);           /* absent: zeros */
	bus_access(&vm.pio, 0x514, sig, 8, false);
	ck_assert_mem_eq(sig, "QEMU CFG", 8);
}
END_TEST

START_TEST(test_files_and_dma)
{
	struct vt_error e;
	uint8_t out[64];
	ck_assert_int_eq(fw_cfg_add_file(fc, "etc/zz", "last", 4, &e), 0);
	ck_assert_int_eq(fw_cfg_add_file(fc, "etc/aa", "first", 5, &e), 0);
	ck_assert_int_eq(fw_cfg_add_file(fc, "etc/aa", "again", 5, &e), -EEXIST);
	ck_assert_uint_eq(read_file("etc/zz", out, sizeof(out)), 4);
	ck_assert_mem_eq(out, "last", 4);
	ck_assert_uint_eq(read_file("etc/aa", out, sizeof(out)), 5);
	ck_assert_mem_eq(out, "first", 5);
	/* sorted directory: etc/aa is the first file key */
	sel(0x20);
	ck_assert_uint_eq(rd(), 'f');
	/* DMA read past the end fills zeros; SKIP moves the offset */
	memset(vm.ram + BUF, 0xee, 16);
	ck_assert_uint_eq(dma(0x20u << 16 | 0x08 | 0x04, 2, 0), 0);
	ck_assert_uint_eq(dma(0x02, 8, BUF), 0);
	ck_assert_mem_eq(vm.ram + BUF, "rst\0\0\0\0\0", 8);
	ck_assert_uint_eq(vm.ram[BUF + 8], 0xee);
	/* hostile: a destination outside RAM, one that wraps, writes */
	ck_assert_uint_eq(dma(0x20u << 16 | 0x08 | 0x02, 16, RAM - 8) & 1, 1);
	ck_assert_uint_eq(dma(0x02, 16, ~0ull - 4) & 1, 1);
	ck_assert_uint_eq(dma(0x20u << 16 | 0x08 | 0x10, 4, BUF) & 1, 1);
	/* a descriptor outside RAM is ignored */
	dma_at((uint64_t)RAM + 0x1000, 0x02, 4, BUF);
	struct fw_cfg_stats st;
	fw_cfg_get_stats(fc, &st);
	ck_assert_uint_ge(st.dma_kicks, 6);
}
END_TEST

START_TEST(test_smbios)
{
	struct vt_error e;
	static uint8_t tables[8192], anchor[64];
	ck_assert_int_eq(smbios_add_fw_cfg(&vm, fc, &e), 0);
	uint32_t len = read_file("etc/smbios/smbios-tables", tables, sizeof(tables));
	uint32_t alen = read_file("etc/smbios/smbios-anchor", anchor, sizeof(anchor));
	ck_assert_uint_eq(alen, 31);
	ck_assert_mem_eq(anchor, "_SM_", 4);
	static const int want[] = { 1, 3, 4, 4, 16, 17, 19, 32, 127 };
	uint32_t off = 0;
	int n = 0;
	uint16_t handles[16];
	while (off < len) {
		ck_assert_int_lt(n, 9);
		const uint8_t *s = tables + off;
		ck_assert_int_eq(s[0], want[n]);
		handles[n] = (uint16_t)(s[2] | s[3] << 8);
		for (int k = 0; k < n; k++)
			ck_assert_uint_ne(handles[k], handles[n]);
		uint32_t p = off + s[1];
		while (p + 1 < len && !(tables[p] == 0 && tables[p + 1] == 0))
			p++;
		off = p + 2;
		n++;
	}
	ck_assert_int_eq(n, 9);
	ck_assert_uint_eq(off, len);
	/* dmidecode's view: a dump file holds the entry point, then the table at 0x20 */
	if (system("command -v dmidecode >/dev/null 2>&1") != 0)
		return;
	char path[] = "/tmp/vtool-smbios.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	uint32_t addr = 0x20;
	memcpy(anchor + 0x18, &addr, 4);
	uint8_t sum = 0;
	anchor[0x15] = 0;
	for (int i = 0x10; i < 0x1f; i++)
		sum = (uint8_t)(sum + anchor[i]);
	anchor[0x15] = (uint8_t)-sum;
	anchor[4] = 0;
	sum = 0;
	for (int i = 0; i < 0x10; i++)
		sum = (uint8_t)(sum + anchor[i]);
	anchor[4] = (uint8_t)-sum;
	uint8_t pad[32] = { 0 };
	memcpy(pad, anchor, alen);
	ck_assert_int_eq(write(fd, pad, 32), 32);
	ck_assert_int_eq(write(fd, tables, len), (int)len);
	close(fd);
	char cmd[256], out[65536];
	snprintf(cmd, sizeof(cmd), "dmidecode --from-dump %s 2>&1", path);
	FILE *f = popen(cmd, "r");
	size_t got = fread(out, 1, sizeof(out) - 1, f);
	out[got] = '\0';
	pclose(f);
	unlink(path);
	ck_assert_msg(strstr(out, "SMBIOS 2.8 present."), "%s", out);
	ck_assert_msg(strstr(out, "Product Name: Standard PC (i440FX + PIIX, 1996)"), "%s", out);
	ck_assert_msg(strstr(out, "Socket Designation: CPU 1"), "%s", out);
	ck_assert_msg(strstr(out, "Size: 1 MB"), "%s", out);
	ck_assert_msg(strstr(out, "UUID: 12340000-0000-0000-0000-000000000000"), "%s", out);
	ck_assert_msg(!strstr(out, "Invalid") && !strstr(out, "Wrong") &&
	              !strstr(out, "BAD INDEX") && !strstr(out, "OUT OF SPEC"), "%s", out);
}
END_TEST

/* A direct boot's copy in the F segment, as dmidecode finds it scanning memory. */
START_TEST(test_smbios_direct)
{
	struct vt_error e;
	ck_assert_int_eq(smbios_place(&vm, 0xf2000, 0x4000, &e), 0);
	ck_assert_mem_eq(vm.ram + 0xf2000, "_SM_", 4);
	ck_assert_int_eq(smbios_place(&vm, 0xf2000, 0x40, &e), -ENOSPC);
	if (system("command -v dmidecode >/dev/null 2>&1") != 0)
		return;
	char path[] = "/tmp/vtool-mem.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, vm.ram, RAM), (int)RAM);
	close(fd);
	char cmd[256], out[65536];
	snprintf(cmd, sizeof(cmd), "dmidecode --dev-mem %s 2>&1", path);
	FILE *f = popen(cmd, "r");
	size_t got = fread(out, 1, sizeof(out) - 1, f);
	out[got] = '\0';
	pclose(f);
	unlink(path);
	ck_assert_msg(strstr(out, "SMBIOS 2.8 present."), "%s", out);
	ck_assert_msg(strstr(out, "Product Name: Standard PC (i440FX + PIIX, 1996)"), "%s", out);
	ck_assert_msg(strstr(out, "End Of Table"), "%s", out);
}
END_TEST

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

START_TEST(test_acpi_placed)
{
	struct fw_tables t = { 0 };
	struct vt_error e;
	uint64_t addr[FW_TABLES_MAX_BLOBS];
	uint8_t *script;
	size_t len;
	ck_assert_int_eq(acpi_build(&vm, &t), 0);
	ck_assert_int_eq(fw_tables_loader(&t, &script, &len), 0);
	ck_assert_uint_eq(len % 128, 0);
	ck_assert_uint_eq(script[0], 1); /* ALLOCATE first */
	free(script);
	ck_assert_int_eq(fw_tables_place(&vm, &t, 0xe0000, 0xf0000, addr, &e), 0);
	fw_tables_free(&t);
	const uint8_t *rsdp = vm.ram + addr[0];
	ck_assert_mem_eq(rsdp, "RSD PTR ", 8);
	ck_assert_uint_eq(sum(rsdp, 20), 0);
	ck_assert_uint_eq(sum(rsdp, 36), 0);
	uint32_t rsdt;
	memcpy(&rsdt, rsdp + 16, 4);
	ck_assert_mem_eq(vm.ram + rsdt, "RSDT", 4);
	uint32_t rlen;
	memcpy(&rlen, vm.ram + rsdt + 4, 4);
	ck_assert_uint_eq(sum(vm.ram + rsdt, rlen), 0);
	const char *sigs[] = { "FACP", "APIC" };
	for (int i = 0; i < 2; i++) {
		uint32_t p, l;
		memcpy(&p, vm.ram + rsdt + 36 + 4 * i, 4);
		ck_assert_mem_eq(vm.ram + p, sigs[i], 4);
		memcpy(&l, vm.ram + p + 4, 4);
		ck_assert_uint_eq(sum(vm.ram + p, l), 0);
		if (i == 0) { /* FADT -> DSDT, FACS */
			uint32_t facs, dsdt;
			memcpy(&facs, vm.ram + p + 36, 4);
			memcpy(&dsdt, vm.ram + p + 40, 4);
			ck_assert_mem_eq(vm.ram + facs, "FACS", 4);
			ck_assert_uint_eq(facs % 64, 0);
			ck_assert_mem_eq(vm.ram + dsdt, "DSDT", 4);
			memcpy(&l, vm.ram + dsdt + 4, 4);
			ck_assert_uint_eq(sum(vm.ram + dsdt, l), 0);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fw_cfg");
	TCase *tc = tcase_create("fw_cfg");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_ports);
	tcase_add_test(tc, test_files_and_dma);
	tcase_add_test(tc, test_smbios);
	tcase_add_test(tc, test_smbios_direct);
	tcase_add_test(tc, test_acpi_placed);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
