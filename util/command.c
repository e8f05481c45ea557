#include "util/command.h"

#include <stdarg.h>
#include <stdio.h>

int vt_usage_hint(const char *argv0)
{
	fprintf(stderr, "Try '%s --help' for more information.\n", argv0);
	return 1;
}

int vt_usage_error(const char *argv0, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", argv0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return vt_usage_hint(argv0);
}
