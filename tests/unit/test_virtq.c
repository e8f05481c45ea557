/* Split virtqueue validation (vmm/virtio/queue.c) against hostile drivers: every ring,
 * buffer and chain the "guest" writes into a small RAM image is checked before use. The
 * sanitizer build runs this too, so a read outside the RAM image would be caught. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/queue.h"
#include "vmm/vm.h"

#define RAM   (1u << 20)
#define QSIZE 8
#define DESC  0x1000u
#define AVAIL 0x2000u
#define USED  0x3000u
#define BUF   0x8000u

static struct vm vm;
static struct virtq q;

static struct virtq_desc *desc(int i) { return (struct virtq_desc *)(vm.ram + DESC) + i; }
static uint16_t *avail(void) { return (uint16_t *)(vm.ram + AVAIL); }

static void setup(void)
{
	vm = (struct vm){ .ram = calloc(1, RAM), .ram_size = RAM, .low_ram = RAM };
	struct vm_region r = { .name = "ram", .kind = VM_REGION_RAM, .size = RAM, .host = vm.ram };
	vm_mem_init(&vm.mem);
	ck_assert_int_eq(vm_mem_add(&vm, &r, false, NULL), 0); /* the table only: no KVM here */
	q = (struct virtq){ .vm = &vm, .size = QSIZE, .desc_gpa = DESC, .avail_gpa = AVAIL,
	                    .used_gpa = USED };
	struct vt_error e;
	ck_assert_int_eq(virtq_enable(&q, &e), 0);
}

static void teardown(void)
{
	vm_mem_destroy(&vm.mem);
	free(vm.ram);
}

/* Make head available. */
static void offer(uint16_t head)
{
	avail()[2 + avail()[1] % QSIZE] = head;
	avail()[1]++;
}

START_TEST(test_good_chain)
{
	struct virtq_elem el;
	struct vt_error e;
	*desc(0) = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_NEXT, 1 };
	*desc(1) = (struct virtq_desc){ BUF + 512, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2 };
	*desc(2) = (struct virtq_desc){ BUF + 1024, 1, VIRTQ_DESC_F_WRITE, 0 };
	offer(0);
	ck_assert_int_eq(virtq_pop(&q, &el, &e), 1);
	ck_assert_int_eq(el.n_out, 1);
	ck_assert_int_eq(el.n_in, 2);
	ck_assert_uint_eq(el.out_len, 16);
	ck_assert_uint_eq(el.in_len, 513);
	ck_assert_ptr_eq(el.iov[1].iov_base, vm.ram + BUF + 512);
	ck_assert_int_eq(virtq_pop(&q, &el, &e), 0); /* nothing more */
	virtq_push(&q, el.head, 513);
	ck_assert_uint_eq(((uint16_t *)(vm.ram + USED))[1], 1);
}
END_TEST

START_TEST(test_loop)
{
	struct virtq_elem el;
	struct vt_error e;
	*desc(0) = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_NEXT, 1 };
	*desc(1) = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_NEXT, 0 };
	offer(0);
	ck_assert_int_eq(virtq_pop(&q, &el, &e), -ELOOP);
}
END_TEST

START_TEST(test_buffer_outside_ram)
{
	struct virtq_elem el;
	struct vt_error e;
	static const uint64_t bad[][2] = {
		{ RAM - 8, 16 },                   /* runs off the end */
		{ 0xfffffffffffffff0ull, 32 },     /* wraps around */
		{ 0x100000000ull, 1 },             /* the hole/high RAM that is not there */
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		teardown(); /* a fresh queue for each case; the fixture frees the last */
		setup();
		*desc(0) = (struct virtq_desc){ bad[i][0], (uint32_t)bad[i][1], 0, 0 };
		offer(0);
		ck_assert_int_eq(virtq_pop(&q, &el, &e), -EFAULT);
	}
}
END_TEST

START_TEST(test_bad_indexes)
{
	struct virtq_elem el;
	struct vt_error e;
	offer(QSIZE);                              /* head out of range */
	ck_assert_int_eq(virtq_pop(&q, &el, &e), -EINVAL);
	teardown();
	setup();
	*desc(0) = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_NEXT, 200 };  /* next out of range */
	offer(0);
	ck_assert_int_eq(virtq_pop(&q, &el, &e), -EINVAL);
	teardown();
	setup();
	avail()[1] = 100;                          /* the index jumps past the ring */
	ck_assert_int_eq(virtq_pop(&q, &el, &e), -EINVAL);
	teardown();
	setup();
	*desc(0) = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_INDIRECT, 0 };
	offer(0);
	ck_assert_int_eq(virtq_pop(&q, &el, &e), -EINVAL);
	teardown();
	setup();
	/* a device-readable buffer after a device-writable one */
	*desc(0) = (struct virtq_desc){ BUF, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1 };
	*desc(1) = (struct virtq_desc){ BUF, 16, 0, 0 };
	offer(0);
	ck_assert_int_eq(virtq_pop(&q, &el, &e), -EINVAL);
}
END_TEST

START_TEST(test_rings_outside_ram)
{
	struct vt_error e;
	struct virtq bad = { .vm = &vm, .size = QSIZE, .desc_gpa = RAM - 16, .avail_gpa = AVAIL,
	                     .used_gpa = USED };
	ck_assert_int_eq(virtq_enable(&bad, &e), -EFAULT);
	bad.desc_gpa = DESC + 8;                   /* misaligned */
	ck_assert_int_eq(virtq_enable(&bad, &e), -EINVAL);
	bad = (struct virtq){ .vm = &vm, .size = 3, .desc_gpa = DESC, .avail_gpa = AVAIL,
	                      .used_gpa = USED };  /* not a power of two */
	ck_assert_int_eq(virtq_enable(&bad, &e), -EINVAL);
}
END_TEST

static Suite *virtq_suite(void)
{
	Suite *s = suite_create("virtq");
	TCase *tc = tcase_create("validation");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_good_chain);
	tcase_add_test(tc, test_loop);
	tcase_add_test(tc, test_buffer_outside_ram);
	tcase_add_test(tc, test_bad_indexes);
	tcase_add_test(tc, test_rings_outside_ram);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(virtq_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
