/* A small JSON document builder and printer, the one JSON writer of vtool.
 *
 * Commands build a tree (objects, arrays, scalars) and print it once. Two styles:
 *   VT_JSON_QEMU     pretty-printed exactly like qemu-img 7.2 (4-space indent, object
 *                    members in the order of qemu's QDict hash table), so `--output=json`
 *                    is diff-identical with qemu-img;
 *   VT_JSON_COMPACT  one line, members in insertion order (machine streams such as
 *                    --progress=json).
 * Strings are escaped like qemu: ASCII printable as is, control and non-ASCII code
 * points as \uXXXX, invalid UTF-8 as \uFFFD.
 * Allocation failure is sticky: builders return NULL, setters ignore NULL values and
 * mark the parent, and printing such a tree fails with -ENOMEM. */
#ifndef VTOOL_UTIL_JSON_H
#define VTOOL_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct vt_json;

enum vt_json_style { VT_JSON_QEMU, VT_JSON_COMPACT };

struct vt_json *vt_json_object(void);
struct vt_json *vt_json_array(void);
struct vt_json *vt_json_string(const char *s);
struct vt_json *vt_json_int(int64_t v);
struct vt_json *vt_json_uint(uint64_t v);
struct vt_json *vt_json_double(double v);
struct vt_json *vt_json_bool(bool v);
struct vt_json *vt_json_null(void);

/* Add to an object (key is copied) or array; both take ownership of val. */
void vt_json_set(struct vt_json *obj, const char *key, struct vt_json *val);
void vt_json_append(struct vt_json *arr, struct vt_json *val);

static inline void vt_json_set_int(struct vt_json *o, const char *k, int64_t v)
{ vt_json_set(o, k, vt_json_int(v)); }
static inline void vt_json_set_str(struct vt_json *o, const char *k, const char *v)
{ vt_json_set(o, k, vt_json_string(v)); }
static inline void vt_json_set_bool(struct vt_json *o, const char *k, bool v)
{ vt_json_set(o, k, vt_json_bool(v)); }

/* Render to a malloc'd NUL-terminated string (no trailing newline). NULL on ENOMEM. */
char *vt_json_to_string(const struct vt_json *v, enum vt_json_style style);

/* Print with a trailing newline. Returns 0 or -errno. */
int vt_json_print(FILE *f, const struct vt_json *v, enum vt_json_style style);

void vt_json_free(struct vt_json *v);

/* qemu's human rendering of an object (qemu-img info's "Format specific information"
 * block): "key: value" lines in VT_JSON_QEMU order, key dashes as spaces, nested values
 * and list elements ("[0]:") indented by 4 per level, starting at `level`. Malloc'd;
 * NULL on ENOMEM. */
char *vt_json_to_qemu_human(const struct vt_json *v, int level);

/* Append the escaped, quoted form of s to out (for hand-formatted JSON such as
 * `map --output=json`, whose layout is not the pretty printer's). A failed allocation
 * sets sb->oom and later additions are dropped. */
struct vt_strbuf {
	char *buf;
	size_t len, cap;
	bool oom;
};
void vt_strbuf_add(struct vt_strbuf *sb, const char *s, size_t n);
void vt_strbuf_addf(struct vt_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vt_json_escape(struct vt_strbuf *sb, const char *s);

/* The bucket qemu's QDict puts a key in; exposed for tests. */
unsigned vt_json_qemu_bucket(const char *key);

#endif
