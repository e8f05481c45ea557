/* util/iov: the one scatter-gather walker, used by every driver and virtqueue. Lists
 * with empty entries, offsets inside and past the list, and a full `out` array. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "util/iov.h"

static char a[3], b[0 + 1], c[5];
/* "abc" + an empty entry + "de" from c: 5 bytes in 3 entries. */
static struct iovec list[3];

static void setup(void)
{
	memcpy(a, "abc", 3);
	memcpy(c, "de", 2);
	list[0] = (struct iovec){ a, 3 };
	list[1] = (struct iovec){ b, 0 };
	list[2] = (struct iovec){ c, 2 };
}

START_TEST(size_counts_every_entry)
{
	ck_assert_uint_eq(vt_iov_size(list, 3), 5);
	ck_assert_uint_eq(vt_iov_size(list, 0), 0);
}
END_TEST

START_TEST(slice_across_entries)
{
	struct iovec out[4];
	int m = 0;
	ck_assert(vt_iov_slice(list, 3, 2, 2, out, &m, 4));
	ck_assert_int_eq(m, 2);
	ck_assert_ptr_eq(out[0].iov_base, a + 2);
	ck_assert_uint_eq(out[0].iov_len, 1);
	ck_assert_ptr_eq(out[1].iov_base, c);
	ck_assert_uint_eq(out[1].iov_len, 1);
	/* Appends after what is there. */
	ck_assert(vt_iov_slice(list, 3, 0, 1, out, &m, 4));
	ck_assert_int_eq(m, 3);
	ck_assert_ptr_eq(out[2].iov_base, a);
}
END_TEST

START_TEST(slice_refuses_when_out_is_full)
{
	struct iovec out[1];
	int m = 0;
	ck_assert(!vt_iov_slice(list, 3, 1, 4, out, &m, 1));
	ck_assert_int_eq(m, 0);
	ck_assert(vt_iov_slice(list, 3, 1, 2, out, &m, 1));
	ck_assert_int_eq(m, 1);
}
END_TEST

START_TEST(slice_past_the_end_is_empty)
{
	struct iovec out[2];
	int m = 0;
	ck_assert(vt_iov_slice(list, 3, 9, 4, out, &m, 2));
	ck_assert_int_eq(m, 0);
}
END_TEST

START_TEST(copies_stop_at_the_list_end)
{
	char buf[8] = { 0 };
	ck_assert_uint_eq(vt_iov_to_buf(list, 3, 1, buf, 8), 4);
	ck_assert_str_eq(buf, "bcde");
	ck_assert_uint_eq(vt_iov_from_buf(list, 3, 2, "XYZ", 3), 3);
	ck_assert_int_eq(memcmp(a, "abX", 3), 0);
	ck_assert_int_eq(memcmp(c, "YZ", 2), 0);
	ck_assert_uint_eq(vt_iov_memset(list, 3, 4, '-', 9), 1);
	ck_assert_int_eq(c[1], '-');
	ck_assert_int_eq(c[0], 'Y');
}
END_TEST

int main(void)
{
	Suite *s = suite_create("iov");
	TCase *t = tcase_create("iov");
	tcase_add_checked_fixture(t, setup, NULL);
	tcase_add_test(t, size_counts_every_entry);
	tcase_add_test(t, slice_across_entries);
	tcase_add_test(t, slice_refuses_when_out_is_full);
	tcase_add_test(t, slice_past_the_end_is_empty);
	tcase_add_test(t, copies_stop_at_the_list_end);
	suite_add_tcase(s, t);
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
