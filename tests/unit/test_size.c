/* Size parsing must accept and reject exactly what qemu-img 7.2 does; each expectation
 * below was checked against `qemu-img create -f raw f SIZE` on the test machine. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/size.h"

static const struct {
	const char *in;
	int rc;
	uint64_t val;
} cases[] = {
	{ "8G", 0, 8589934592ull },
	{ "8g", 0, 8589934592ull },
	{ "1.5G", 0, 1610612736ull },
	{ "1000", 0, 1000 },
	{ "1", 0, 1 },
	{ "0", 0, 0 },
	{ "100k", 0, 102400 },
	{ "100K", 0, 102400 },
	{ "512M", 0, 536870912ull },
	{ "1T", 0, 1099511627776ull },
	{ "2P", 0, 2251799813685248ull },
	{ "1b", 0, 1 },
	{ "1B", 0, 1 },
	{ "0x10", 0, 16 },
	{ "0X10", 0, 16 },
	{ "07", 0, 7 },          /* decimal, not octal */
	{ " 1G", 0, 1073741824ull },
	{ "+1G", 0, 1073741824ull },
	{ "1.g", 0, 1073741824ull },
	{ "1.k", 0, 1024 },
	{ "1.5k", 0, 1536 },
	{ "00.5k", 0, 512 },
	{ "0.0001k", 0, 0 },
	{ "7.99999E", 0, 9223360507639729792ull }, /* qemu's double rounding, kept */
	{ "9223372036854775807", 0, 9223372036854775807ull },
	{ "abc", -EINVAL, 0 },
	{ "", -EINVAL, 0 },
	{ "-1", -EINVAL, 0 },
	{ "1.5", -EINVAL, 0 },
	{ "1.5b", -EINVAL, 0 },
	{ "1KiB", -EINVAL, 0 },
	{ "1kB", -EINVAL, 0 },
	{ "1e3", -EINVAL, 0 },
	{ "1G ", -EINVAL, 0 },
	{ ".5k", -EINVAL, 0 },
	{ "1..5k", -EINVAL, 0 },
	{ "0x1.8k", -EINVAL, 0 },
	{ "0x", -EINVAL, 0 },
	{ "8E", -ERANGE, 0 },
	{ "16E", -ERANGE, 0 },
	{ "9.999999999999999999999E", -ERANGE, 0 },
	{ "9223372036854775808", -ERANGE, 0 },
	{ "12345678901234567890123", -ERANGE, 0 },
	{ "0xffffffffffffffff", -ERANGE, 0 },
	{ "18446744073709551616", -ERANGE, 0 },
	{ "17179869184G", -ERANGE, 0 },
};

START_TEST(test_size_table)
{
	uint64_t v = 12345;
	int rc = vt_size_parse(cases[_i].in, 1, &v);
	ck_assert_msg(rc == cases[_i].rc, "'%s': rc %d, want %d", cases[_i].in, rc,
	              cases[_i].rc);
	if (rc == 0)
		ck_assert_msg(v == cases[_i].val, "'%s': %llu, want %llu", cases[_i].in,
		              (unsigned long long)v, (unsigned long long)cases[_i].val);
	else
		ck_assert_msg(v == 12345, "'%s': output written on failure", cases[_i].in);
}
END_TEST

START_TEST(test_size_default_unit)
{
	uint64_t v;
	/* qemu's -m: a bare number means MiB, a suffix overrides. */
	ck_assert_int_eq(vt_size_parse("2048", 1 << 20, &v), 0);
	ck_assert_uint_eq(v, 2048ull << 20);
	ck_assert_int_eq(vt_size_parse("2G", 1 << 20, &v), 0);
	ck_assert_uint_eq(v, 2ull << 30);
	ck_assert_int_eq(vt_size_parse("8796093022208", 1 << 20, &v), -ERANGE);
	ck_assert_int_eq(vt_size_parse(NULL, 1, &v), -EINVAL);
}
END_TEST

START_TEST(test_size_max)
{
	uint64_t v;
	/* qemu's size options (qemu-img resize) take anything below 2^64. */
	ck_assert_int_eq(vt_size_parse_max("10E", 1, UINT64_MAX, &v), 0);
	ck_assert_uint_eq(v, 10ull << 60);
	ck_assert_int_eq(vt_size_parse_max("18446744073709551615", 1, UINT64_MAX, &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	ck_assert_int_eq(vt_size_parse_max("16E", 1, UINT64_MAX, &v), -ERANGE);
	ck_assert_int_eq(vt_size_parse_max("10E", 1, (uint64_t)INT64_MAX, &v), -ERANGE);
	ck_assert_int_eq(vt_size_parse_max("12x", 1, UINT64_MAX, &v), -EINVAL);
}
END_TEST

START_TEST(test_size_to_str)
{
	/* Strings as qemu-img info prints them ("virtual size: 8 GiB"). */
	static const struct { uint64_t v; const char *s; } t[] = {
		{ 0, "0 B" }, { 512, "512 B" }, { 1000, "0.977 KiB" }, { 1024, "1 KiB" },
		{ 1536, "1.5 KiB" }, { 200704, "196 KiB" }, { 8589934592ull, "8 GiB" },
		{ 1610612736ull, "1.5 GiB" }, { 1073741824ull * 1000, "0.977 TiB" },
		{ 1022976, "999 KiB" }, { 1024000, "0.977 MiB" }, { 1047552, "0.999 MiB" },
		{ 1572864000ull, "1.46 GiB" }, { 4293918720ull, "4 GiB" },
	};
	char buf[32];
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		vt_size_to_str(t[i].v, buf, sizeof(buf));
		ck_assert_str_eq(buf, t[i].s);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("size");
	TCase *tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_size_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, test_size_default_unit);
	tcase_add_test(tc, test_size_max);
	tcase_add_test(tc, test_size_to_str);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
