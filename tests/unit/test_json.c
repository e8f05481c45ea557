/* The JSON writer: escaping and layout must equal qemu-img 7.2's byte for byte. The
 * expected strings are qemu-img's real output (see specs/qemu-img.md §3). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"

static char *escaped(const char *s)
{
	struct vt_strbuf sb = { 0 };
	vt_json_escape(&sb, s);
	ck_assert(!sb.oom);
	return sb.buf;
}

START_TEST(test_escape_like_qemu)
{
	/* File name "q\x01\t\"\\é\x7f\xff.img": qemu-img info printed exactly this. */
	char *s = escaped("q\x01\t\"\\\xc3\xa9\x7f\xff.img");
	ck_assert_str_eq(s, "\"q\\u0001\\t\\\"\\\\\\u00E9\\u007F\\uFFFD.img\"");
	free(s);
	s = escaped("a/b\b\f\n\r");
	ck_assert_str_eq(s, "\"a/b\\b\\f\\n\\r\"");
	free(s);
	/* A code point above the BMP becomes a surrogate pair. */
	s = escaped("\xf0\x9f\x98\x80");
	ck_assert_str_eq(s, "\"\\uD83D\\uDE00\"");
	free(s);
	/* Overlong encodings, lone surrogates and truncated sequences are invalid. */
	s = escaped("\xc0\xaf|\xed\xa0\x80|\xe2\x82");
	ck_assert_str_eq(s, "\"\\uFFFD\\uFFFD|\\uFFFD\\uFFFD\\uFFFD|\\uFFFD\\uFFFD\"");
	free(s);
}
END_TEST

START_TEST(test_qemu_layout_and_order)
{
	/* Members added in schema order; the printer must reorder them like qemu. */
	struct vt_json *o = vt_json_object();
	vt_json_set_str(o, "filename", "ov.qcow2");
	vt_json_set_str(o, "format", "qcow2");
	vt_json_set_bool(o, "dirty-flag", false);
	vt_json_set_int(o, "actual-size", 200704);
	vt_json_set_int(o, "virtual-size", 1073741824);
	vt_json_set_int(o, "cluster-size", 65536);
	vt_json_set_str(o, "backing-filename", "base.raw");
	vt_json_set_str(o, "full-backing-filename", "base.raw");
	vt_json_set_str(o, "backing-filename-format", "raw");
	struct vt_json *spec = vt_json_object();
	vt_json_set_str(spec, "type", "qcow2");
	struct vt_json *data = vt_json_object();
	vt_json_set_str(data, "compat", "1.1");
	vt_json_set_str(data, "compression-type", "zlib");
	vt_json_set_bool(data, "lazy-refcounts", false);
	vt_json_set_int(data, "refcount-bits", 16);
	vt_json_set_bool(data, "corrupt", false);
	vt_json_set_bool(data, "extended-l2", false);
	vt_json_set(spec, "data", data);
	vt_json_set(o, "format-specific", spec);

	static const char want[] =
		"{\n"
		"    \"backing-filename-format\": \"raw\",\n"
		"    \"virtual-size\": 1073741824,\n"
		"    \"filename\": \"ov.qcow2\",\n"
		"    \"cluster-size\": 65536,\n"
		"    \"format\": \"qcow2\",\n"
		"    \"actual-size\": 200704,\n"
		"    \"format-specific\": {\n"
		"        \"type\": \"qcow2\",\n"
		"        \"data\": {\n"
		"            \"compat\": \"1.1\",\n"
		"            \"compression-type\": \"zlib\",\n"
		"            \"lazy-refcounts\": false,\n"
		"            \"refcount-bits\": 16,\n"
		"            \"corrupt\": false,\n"
		"            \"extended-l2\": false\n"
		"        }\n"
		"    },\n"
		"    \"full-backing-filename\": \"base.raw\",\n"
		"    \"backing-filename\": \"base.raw\",\n"
		"    \"dirty-flag\": false\n"
		"}";
	char *s = vt_json_to_string(o, VT_JSON_QEMU);
	ck_assert_str_eq(s, want);
	free(s);

	s = vt_json_to_string(data, VT_JSON_COMPACT);
	ck_assert_str_eq(s, "{\"compat\":\"1.1\",\"compression-type\":\"zlib\","
	                    "\"lazy-refcounts\":false,\"refcount-bits\":16,"
	                    "\"corrupt\":false,\"extended-l2\":false}");
	free(s);
	vt_json_free(o);
}
END_TEST

START_TEST(test_arrays_and_replace)
{
	struct vt_json *o = vt_json_object();
	vt_json_set(o, "flags", vt_json_array());
	vt_json_set_int(o, "n", 1);
	vt_json_set_int(o, "n", -2); /* replaces, no duplicate key */
	char *s = vt_json_to_string(o, VT_JSON_QEMU);
	/* qemu prints an empty array over two lines. */
	ck_assert_str_eq(s, "{\n    \"flags\": [\n    ],\n    \"n\": -2\n}");
	free(s);
	vt_json_free(o);

	struct vt_json *a = vt_json_array();
	vt_json_append(a, vt_json_int(1));
	vt_json_append(a, vt_json_null());
	vt_json_append(a, vt_json_uint(18446744073709551615ull));
	vt_json_append(a, vt_json_string(""));
	s = vt_json_to_string(a, VT_JSON_COMPACT);
	ck_assert_str_eq(s, "[1,null,18446744073709551615,\"\"]");
	free(s);
	vt_json_free(a);
}
END_TEST

START_TEST(test_qemu_bucket)
{
	/* Buckets that order the check output: image-end-offset < compressed-clusters <
	 * total-clusters < corruptions < ... < fragmented-clusters (specs §3.2). */
	static const char *const order[] = {
		"image-end-offset", "compressed-clusters", "total-clusters", "corruptions",
		"corruptions-fixed", "check-errors", "leaks", "leaks-fixed",
		"allocated-clusters", "filename", "format", "fragmented-clusters",
	};
	for (size_t i = 1; i < sizeof(order) / sizeof(order[0]); i++)
		ck_assert_msg(vt_json_qemu_bucket(order[i - 1]) < vt_json_qemu_bucket(order[i]),
		              "%s before %s", order[i - 1], order[i]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("writer");
	tcase_add_test(tc, test_escape_like_qemu);
	tcase_add_test(tc, test_qemu_layout_and_order);
	tcase_add_test(tc, test_arrays_and_replace);
	tcase_add_test(tc, test_qemu_bucket);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
