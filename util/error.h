/* The error type every layer fills and only cli/ prints.
 *
 * Functions below cli/ return 0 or a negative errno and, on failure, describe the
 * problem in a caller-supplied struct vt_error: which file (or object), what was being
 * done, and why it failed. cli/ prints it as `vtool: <file>: <what>: <why>`.
 * Nothing below cli/ prints or exits. */
#ifndef VTOOL_UTIL_ERROR_H
#define VTOOL_UTIL_ERROR_H

#include <stdio.h>

struct vt_error {
	int code;        /* positive errno; 0 = no error recorded */
	char file[512];  /* file, device or object the error is about; may be empty */
	char what[160];  /* the operation, e.g. "open", "read L2 table" */
	char why[512];   /* the reason, e.g. "cluster_size 3 is not a power of two" */
};

/* Record an error and return -code (code is a positive errno). why_fmt may be NULL,
 * in which case the reason is strerror(code). e may be NULL (then nothing is kept). */
int vt_error_set(struct vt_error *e, int code, const char *file, const char *what,
                 const char *why_fmt, ...) __attribute__((format(printf, 5, 6)));

/* Clear a previously recorded error. */
void vt_error_clear(struct vt_error *e);

/* One line, no trailing newline: "<file>: <what>: <why>" with empty parts left out. */
void vt_error_format(const struct vt_error *e, char *buf, size_t len);

/* Print "vtool: <file>: <what>: <why>\n" to f. For cli/ only. */
void vt_error_print(const struct vt_error *e, FILE *f);

#endif
