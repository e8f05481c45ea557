/* The guest memory table (vmm/mem.c) without KVM: regions are entered with now=false, so
 * no ioctl runs. vm_guest_ptr must return a pointer only for ranges wholly inside one
 * writable region; ROM only through vm_guest_ptr_ro; overlaps and bad ranges refused.
 * Also the split of RAM below and above 4 GiB (vm.h). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "vmm/vm.h"

static struct vm vm;
static uint8_t *ram, *rom;

static void setup(void)
{
	vm = (struct vm){ .vm_fd = -1 };
	vm_mem_init(&vm.mem);
	ram = calloc(1, 1 << 20);
	rom = calloc(1, 1 << 16);
	struct vm_region r = { .name = "ram", .kind = VM_REGION_RAM, .size = 1 << 20, .host = ram };
	struct vm_region b = { .name = "bios", .kind = VM_REGION_ROM, .gpa = VM_4G - (1 << 16),
	                       .size = 1 << 16, .host = rom };
	ck_assert_int_eq(vm_mem_add(&vm, &r, false, NULL), 0);
	ck_assert_int_eq(vm_mem_add(&vm, &b, false, NULL), 0);
}

static void teardown(void)
{
	vm_mem_destroy(&vm.mem);
	free(ram);
	free(rom);
}

START_TEST(test_lookup)
{
	ck_assert_ptr_eq(vm_guest_ptr(&vm, 0, 16), ram);
	ck_assert_ptr_eq(vm_guest_ptr(&vm, (1 << 20) - 16, 16), ram + (1 << 20) - 16);
	ck_assert_ptr_null(vm_guest_ptr(&vm, (1 << 20) - 16, 17));   /* straddles the end */
	ck_assert_ptr_null(vm_guest_ptr(&vm, 1 << 20, 1));           /* a hole */
	ck_assert_ptr_null(vm_guest_ptr(&vm, ~0ull - 4, 16));         /* wraps */
	ck_assert_ptr_null(vm_guest_ptr(&vm, VM_4G - 16, 16));        /* ROM: not writable */
	ck_assert_ptr_eq(vm_guest_ptr_ro(&vm, VM_4G - 16, 16), rom + (1 << 16) - 16);
	ck_assert_ptr_null(vm_guest_ptr_ro(&vm, VM_4G - 16, 17));     /* past 4 GiB */
}
END_TEST

START_TEST(test_add_remove)
{
	static uint8_t dev[8192] __attribute__((aligned(4096)));
	struct vm_region d = { .name = "fb", .kind = VM_REGION_DEVICE, .gpa = 0xfd000000,
	                       .size = sizeof(dev), .host = dev, .flags = VM_REGION_DIRTY_LOG };
	struct vm_region bad = d;
	struct vt_error e;
	bad.gpa = (1 << 20) - 4096;                                  /* overlaps RAM */
	ck_assert_int_eq(vm_mem_add(&vm, &bad, false, &e), -EBUSY);
	bad.gpa = 0xfd000100;                                        /* not page-aligned */
	ck_assert_int_eq(vm_mem_add(&vm, &bad, false, &e), -EINVAL);
	ck_assert_int_eq(vm_mem_add(&vm, &d, false, &e), 0);
	ck_assert_ptr_eq(vm_guest_ptr(&vm, 0xfd001000, 4096), dev + 4096);
	struct vm_region found;
	ck_assert(vm_mem_find(&vm, "fb", &found));
	ck_assert_uint_eq(found.gpa, 0xfd000000);
	ck_assert_int_eq(vm_mem_remove(&vm, "fb"), 0);
	ck_assert_ptr_null(vm_guest_ptr(&vm, 0xfd001000, 4096));
	ck_assert_int_eq(vm_mem_remove(&vm, "fb"), -ENOENT);
	/* moved: the same region at another address */
	d.gpa = 0xfe000000;
	ck_assert_int_eq(vm_mem_add(&vm, &d, false, &e), 0);
	ck_assert_ptr_eq(vm_guest_ptr(&vm, 0xfe000000, 1), dev);
}
END_TEST

/* The split of RAM below/above 4 GiB is qemu pc's (hw/i386/pc_piix.c, gigabyte_align):
 * under 3.5 GiB all of it below 4 GiB, from 3.5 GiB on 3 GiB below and the rest above. */
START_TEST(test_low_ram_split)
{
	const uint64_t mib = 1ull << 20;
	ck_assert_uint_eq(vm_low_ram_size(128 * mib), 128 * mib);
	ck_assert_uint_eq(vm_low_ram_size(3072 * mib), 3072 * mib);
	ck_assert_uint_eq(vm_low_ram_size(3200 * mib), 3200 * mib);
	ck_assert_uint_eq(vm_low_ram_size(3584 * mib - 4096), 3584 * mib - 4096);
	ck_assert_uint_eq(vm_low_ram_size(3584 * mib), 3072 * mib);
	ck_assert_uint_eq(vm_low_ram_size(4096 * mib), 3072 * mib);
	ck_assert_uint_eq(vm_low_ram_size(64ull << 30), 3072 * mib);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mem");
	TCase *tc = tcase_create("mem");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_lookup);
	tcase_add_test(tc, test_add_remove);
	tcase_add_test(tc, test_low_ram_split);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
