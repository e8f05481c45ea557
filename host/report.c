/* The list of check results, and host_validate, which fills it group by group. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"

static const char *const result_names[] = {
	[HOST_PASS] = "PASS", [HOST_NOTE] = "NOTE", [HOST_WARN] = "WARN",
	[HOST_FAIL] = "FAIL", [HOST_SKIP] = "SKIP",
};

const char *host_result_name(enum host_result res)
{
	return (unsigned)res < sizeof(result_names) / sizeof(result_names[0]) ? result_names[res] : "?";
}

struct host_check *host_add(struct host_report *r, const char *group, const char *name,
                            const char *title, enum host_result res)
{
	if (r->oom)
		return NULL;
	if (r->n == r->cap) {
		int cap = r->cap ? r->cap * 2 : 32;
		struct host_check *v = realloc(r->v, (size_t)cap * sizeof(*v));
		if (!v) {
			r->oom = true;
			return NULL;
		}
		r->v = v;
		r->cap = cap;
	}
	struct host_check *c = &r->v[r->n++];
	*c = (struct host_check){ .group = group, .name = name, .result = res };
	snprintf(c->title, sizeof(c->title), "%s", title);
	return c;
}

void host_detail(struct host_check *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
}

void host_fix(struct host_check *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->fix, sizeof(c->fix), fmt, ap);
	va_end(ap);
}

int host_validate(const struct host_options *o, struct host_report *r, struct vt_error *err)
{
	host_check_cpu(r);
	host_check_kvm(r);
	host_check_net(r);
	host_check_files(r, o->dir && o->dir[0] ? o->dir : ".");
	if (r->oom)
		return vt_error_set(err, ENOMEM, "host validate", "record the checks", NULL);
	return 0;
}

void host_report_free(struct host_report *r)
{
	free(r->v);
	*r = (struct host_report){ 0 };
}

int host_report_status(const struct host_report *r)
{
	int status = 0;

	for (int i = 0; i < r->n; i++) {
		if (r->v[i].result == HOST_FAIL)
			return 1;
		if (r->v[i].result == HOST_WARN)
			status = 2;
	}
	return status;
}
