/* -o option strings: qemu's syntax (",," is a literal comma, a bare key means on) and the
 * errors qemu-img gives for unknown keys and malformed values. */
#include <check.h>
#include <stdlib.h>

#include "blk/opts.h"

static const struct blk_optdesc desc[] = {
	{ "backing_file", BLK_OPT_STRING, "" },
	{ "cluster_size", BLK_OPT_SIZE, "" },
	{ "lazy_refcounts", BLK_OPT_BOOL, "" },
	{ "refcount_bits", BLK_OPT_NUMBER, "" },
	{ NULL, 0, NULL },
};

START_TEST(test_parse)
{
	struct blk_optlist l = { 0 };
	struct vt_error e = { 0 };
	ck_assert_int_eq(blk_opts_parse("backing_file=a,,b.img,cluster_size=4k,lazy_refcounts,",
	                                desc, &l, &e), 0);
	ck_assert_str_eq(blk_opts_get(&l, "backing_file"), "a,b.img");
	uint64_t cs;
	bool lazy;
	ck_assert_int_eq(blk_opts_get_size(&l, "cluster_size", &cs, &e), 0);
	ck_assert_uint_eq(cs, 4096);
	ck_assert_int_eq(blk_opts_get_bool(&l, "lazy_refcounts", &lazy, &e), 0);
	ck_assert(lazy);
	ck_assert_int_eq(blk_opts_get_size(&l, "refcount_bits", &cs, &e), 1); /* absent */
	blk_opts_free(&l);
}
END_TEST

START_TEST(test_errors)
{
	struct blk_optlist l = { 0 };
	struct vt_error e = { 0 };
	ck_assert_int_lt(blk_opts_parse("cluster_size=64k,foo=bar", desc, &l, &e), 0);
	ck_assert_str_eq(e.why, "Invalid parameter 'foo'");
	ck_assert_int_eq(l.n, 0); /* nothing kept on failure */
	ck_assert_int_lt(blk_opts_parse("lazy_refcounts=maybe", desc, &l, &e), 0);
	ck_assert_str_eq(e.why, "Parameter 'lazy_refcounts' expects 'on' or 'off'");
	ck_assert_int_lt(blk_opts_parse("cluster_size=-1", desc, &l, &e), 0);
	ck_assert_int_eq(blk_opts_parse(NULL, desc, &l, &e), 0);
	ck_assert_int_eq(blk_opts_parse("", desc, &l, &e), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("opts");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_parse);
	tcase_add_test(tc, test_errors);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
