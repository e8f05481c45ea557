#include "util/error.h"

#include <stdarg.h>
#include <errno.h>
#include <string.h>

#define EIO_FALLBACK EIO

static void copy_str(char *dst, size_t len, const char *src)
{
	if (!src)
		src = "";
	snprintf(dst, len, "%s", src);
}

int vt_error_set(struct vt_error *e, int code, const char *file, const char *what,
                 const char *why_fmt, ...)
{
	if (code < 0)
		code = -code;
	if (code == 0)
		code = EIO_FALLBACK;
	if (!e)
		return -code;
	e->code = code;
	copy_str(e->file, sizeof(e->file), file);
	copy_str(e->what, sizeof(e->what), what);
	if (why_fmt) {
		va_list ap;
		va_start(ap, why_fmt);
		vsnprintf(e->why, sizeof(e->why), why_fmt, ap);
		va_end(ap);
	} else {
		copy_str(e->why, sizeof(e->why), strerror(code));
	}
	return -code;
}

void vt_error_clear(struct vt_error *e)
{
	if (e)
		memset(e, 0, sizeof(*e));
}

void vt_error_format(const struct vt_error *e, char *buf, size_t len)
{
	const char *parts[3] = { e->file, e->what, e->why };
	size_t used = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (int i = 0; i < 3; i++) {
		if (!parts[i][0])
			continue;
		int n = snprintf(buf + used, len - used, "%s%s", used ? ": " : "", parts[i]);
		if (n < 0 || (size_t)n >= len - used)
			return;
		used += (size_t)n;
	}
	if (!used)
		snprintf(buf, len, "%s", strerror(e->code ? e->code : 5));
}

void vt_error_print(const struct vt_error *e, FILE *f)
{
	char line[sizeof(e->file) + sizeof(e->what) + sizeof(e->why) + 8];

	vt_error_format(e, line, sizeof(line));
	fprintf(f, "vtool: %s\n", line);
}
