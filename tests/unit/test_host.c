/* host/: the one-line fixes for /dev/kvm failures (what `vtool run` prints), the result
 * names the report and JSON use, and the exit status a report gives. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"

START_TEST(kvm_fixes)
{
	const char *f = host_kvm_fix(ENOENT);
	ck_assert_ptr_nonnull(f);
	ck_assert(strstr(f, "modprobe") || strstr(f, "mknod"));
	f = host_kvm_fix(EACCES);
	ck_assert_ptr_nonnull(f);
	ck_assert(strstr(f, "kvm") && (strstr(f, "usermod -aG") || strstr(f, "newgrp")));
	ck_assert_ptr_nonnull(strstr(host_kvm_fix(-EACCES), "kvm")); /* either sign */
	ck_assert_ptr_nonnull(strstr(host_kvm_fix(EPERM), "--device /dev/kvm"));
	ck_assert_ptr_nonnull(strstr(host_kvm_fix(ENXIO), "modprobe"));
	ck_assert_ptr_nonnull(strstr(host_kvm_fix(ENODEV), "modprobe"));
	ck_assert_ptr_nonnull(strstr(host_kvm_fix(EBUSY), "another hypervisor"));
	ck_assert_ptr_nonnull(strstr(host_kvm_fix(ENOTSUP), "API version 12"));
	ck_assert_ptr_null(host_kvm_fix(EINVAL));
	ck_assert_ptr_null(host_kvm_fix(ENOMEM));
	ck_assert_ptr_null(host_kvm_fix(0));
	for (int e = 1; e < 200; e++) { /* one line each */
		f = host_kvm_fix(e);
		ck_assert(!f || (!strchr(f, '\n') && strlen(f) > 20));
	}
}
END_TEST

START_TEST(report_status)
{
	struct host_report r = { 0 };

	ck_assert_int_eq(host_report_status(&r), 0);
	ck_assert_ptr_nonnull(host_add(&r, "cpu", "a", "for a", HOST_PASS));
	ck_assert_ptr_nonnull(host_add(&r, "cpu", "b", "for b", HOST_NOTE));
	ck_assert_ptr_nonnull(host_add(&r, "cpu", "c", "for c", HOST_SKIP));
	ck_assert_int_eq(host_report_status(&r), 0);
	for (int i = 0; i < 100; i++) /* grows past its first allocation */
		ck_assert_ptr_nonnull(host_add(&r, "net", "w", "for w", HOST_WARN));
	ck_assert_int_eq(host_report_status(&r), 2);
	struct host_check *c = host_add(&r, "kvm", "f", "for f", HOST_FAIL);
	host_detail(c, "%d", 42);
	host_fix(c, "do %s", "this");
	ck_assert_str_eq(r.v[r.n - 1].detail, "42");
	ck_assert_str_eq(r.v[r.n - 1].fix, "do this");
	ck_assert_str_eq(r.v[0].title, "for a");
	ck_assert_int_eq(host_report_status(&r), 1);
	host_report_free(&r);
	ck_assert_int_eq(r.n, 0);
	ck_assert_str_eq(host_result_name(HOST_PASS), "PASS");
	ck_assert_str_eq(host_result_name(HOST_NOTE), "NOTE");
	ck_assert_str_eq(host_result_name(HOST_WARN), "WARN");
	ck_assert_str_eq(host_result_name(HOST_FAIL), "FAIL");
	ck_assert_str_eq(host_result_name(HOST_SKIP), "SKIP");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("host");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, kvm_fixes);
	tcase_add_test(tc, report_status);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
