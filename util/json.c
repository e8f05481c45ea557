#include "util/json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { J_OBJECT, J_ARRAY, J_STRING, J_INT, J_UINT, J_DOUBLE, J_BOOL, J_NULL };

struct member {
	char *key;
	struct vt_json *val;
};

struct vt_json {
	enum kind kind;
	bool oom; /* a child could not be allocated: printing fails */
	union {
		struct {
			struct member *items;
			size_t n, cap;
		} obj;
		struct {
			struct vt_json **items;
			size_t n, cap;
		} arr;
		char *str;
		int64_t i;
		uint64_t u;
		double d;
		bool b;
	};
};

static struct vt_json *new_value(enum kind k)
{
	struct vt_json *v = calloc(1, sizeof(*v));
	if (v)
		v->kind = k;
	return v;
}

struct vt_json *vt_json_object(void) { return new_value(J_OBJECT); }
struct vt_json *vt_json_array(void) { return new_value(J_ARRAY); }
struct vt_json *vt_json_null(void) { return new_value(J_NULL); }

struct vt_json *vt_json_string(const char *s)
{
	struct vt_json *v = new_value(J_STRING);
	if (v && !(v->str = strdup(s ? s : ""))) {
		free(v);
		return NULL;
	}
	return v;
}

struct vt_json *vt_json_int(int64_t x)
{
	struct vt_json *v = new_value(J_INT);
	if (v)
		v->i = x;
	return v;
}

struct vt_json *vt_json_uint(uint64_t x)
{
	struct vt_json *v = new_value(J_UINT);
	if (v)
		v->u = x;
	return v;
}

struct vt_json *vt_json_double(double x)
{
	struct vt_json *v = new_value(J_DOUBLE);
	if (v)
		v->d = x;
	return v;
}

struct vt_json *vt_json_bool(bool x)
{
	struct vt_json *v = new_value(J_BOOL);
	if (v)
		v->b = x;
	return v;
}

static bool grow(void **items, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return true;
	size_t ncap = *cap ? *cap * 2 : 8;
	void *p = realloc(*items, ncap * size);
	if (!p)
		return false;
	*items = p;
	*cap = ncap;
	return true;
}

void vt_json_set(struct vt_json *obj, const char *key, struct vt_json *val)
{
	if (!obj)
		goto drop;
	if (!val || obj->kind != J_OBJECT) {
		obj->oom = true;
		goto drop;
	}
	/* Replacing keeps the position, as a hash table would. */
	for (size_t i = 0; i < obj->obj.n; i++) {
		if (!strcmp(obj->obj.items[i].key, key)) {
			vt_json_free(obj->obj.items[i].val);
			obj->obj.items[i].val = val;
			return;
		}
	}
	char *k = strdup(key);
	if (!k || !grow((void **)&obj->obj.items, &obj->obj.cap, obj->obj.n,
	                sizeof(struct member))) {
		free(k);
		obj->oom = true;
		goto drop;
	}
	obj->obj.items[obj->obj.n++] = (struct member){ k, val };
	return;
drop:
	vt_json_free(val);
}

void vt_json_append(struct vt_json *arr, struct vt_json *val)
{
	if (!arr) {
		vt_json_free(val);
		return;
	}
	if (!val || arr->kind != J_ARRAY ||
	    !grow((void **)&arr->arr.items, &arr->arr.cap, arr->arr.n, sizeof(val))) {
		arr->oom = true;
		vt_json_free(val);
		return;
	}
	arr->arr.items[arr->arr.n++] = val;
}

void vt_json_free(struct vt_json *v)
{
	if (!v)
		return;
	switch (v->kind) {
	case J_OBJECT:
		for (size_t i = 0; i < v->obj.n; i++) {
			free(v->obj.items[i].key);
			vt_json_free(v->obj.items[i].val);
		}
		free(v->obj.items);
		break;
	case J_ARRAY:
		for (size_t i = 0; i < v->arr.n; i++)
			vt_json_free(v->arr.items[i]);
		free(v->arr.items);
		break;
	case J_STRING:
		free(v->str);
		break;
	default:
		break;
	}
	free(v);
}

/* ---- string buffer ---------------------------------------------------------------- */

void vt_strbuf_add(struct vt_strbuf *sb, const char *s, size_t n)
{
	if (sb->oom)
		return;
	if (sb->len + n + 1 > sb->cap) {
		size_t ncap = sb->cap ? sb->cap : 256;
		while (ncap < sb->len + n + 1)
			ncap *= 2;
		char *p = realloc(sb->buf, ncap);
		if (!p) {
			sb->oom = true;
			return;
		}
		sb->buf = p;
		sb->cap = ncap;
	}
	memcpy(sb->buf + sb->len, s, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

void vt_strbuf_addf(struct vt_strbuf *sb, const char *fmt, ...)
{
	char small[128];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		sb->oom = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		vt_strbuf_add(sb, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		sb->oom = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	vt_strbuf_add(sb, big, (size_t)n);
	free(big);
}

/* Decode one UTF-8 sequence; returns its length and the code point, or 0xFFFD with
 * length 1 for anything malformed (overlong, surrogate, truncated, out of range). */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t v, min;

	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if ((c & 0xe0) == 0xc0) {
		len = 2, v = c & 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3, v = c & 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4, v = c & 0x07, min = 0x10000;
	} else {
		goto bad;
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			goto bad;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		goto bad;
	*cp = v;
	return len;
bad:
	*cp = 0xfffd;
	return 1;
}

void vt_json_escape(struct vt_strbuf *sb, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	vt_strbuf_add(sb, "\"", 1);
	while (*s) {
		uint32_t cp;
		s += utf8_decode(s, &cp);
		switch (cp) {
		case '"': vt_strbuf_add(sb, "\\\"", 2); break;
		case '\\': vt_strbuf_add(sb, "\\\\", 2); break;
		case '\b': vt_strbuf_add(sb, "\\b", 2); break;
		case '\f': vt_strbuf_add(sb, "\\f", 2); break;
		case '\n': vt_strbuf_add(sb, "\\n", 2); break;
		case '\r': vt_strbuf_add(sb, "\\r", 2); break;
		case '\t': vt_strbuf_add(sb, "\\t", 2); break;
		default:
			if (cp >= 0x20 && cp <= 0x7e) {
				char c = (char)cp;
				vt_strbuf_add(sb, &c, 1);
			} else if (cp < 0x10000) {
				vt_strbuf_addf(sb, "\\u%04X", (unsigned)cp);
			} else {
				cp -= 0x10000;
				vt_strbuf_addf(sb, "\\u%04X\\u%04X", 0xd800 + (unsigned)(cp >> 10),
				               0xdc00 + (unsigned)(cp & 0x3ff));
			}
		}
	}
	vt_strbuf_add(sb, "\"", 1);
}

/* ---- printing --------------------------------------------------------------------- */

unsigned vt_json_qemu_bucket(const char *key)
{
	/* qemu's QDict hash (from the tdb hash), table size 512. */
	uint32_t v = 0x238F13AFu * (uint32_t)strlen(key);
	for (uint32_t i = 0; key[i]; i++)
		v += (uint32_t)(unsigned char)key[i] << ((i * 5) % 24);
	return (1103515243u * v + 12345u) % 512u;
}

/* qemu iterates buckets in ascending order; a bucket's list has the newest entry first. */
static int qemu_order_cmp(const void *a, const void *b)
{
	const struct member *const *ma = a, *const *mb = b;
	unsigned ba = vt_json_qemu_bucket((*ma)->key), bb = vt_json_qemu_bucket((*mb)->key);
	if (ba != bb)
		return ba < bb ? -1 : 1;
	return *ma < *mb ? 1 : -1; /* later insertion (higher address in the array) first */
}

static void indent(struct vt_strbuf *sb, int level)
{
	for (int i = 0; i < level; i++)
		vt_strbuf_add(sb, "    ", 4);
}

static void render(struct vt_strbuf *sb, const struct vt_json *v, enum vt_json_style st,
                   int level)
{
	bool pretty = st == VT_JSON_QEMU;

	if (v->oom)
		sb->oom = true;
	switch (v->kind) {
	case J_OBJECT: {
		const struct member **order = malloc((v->obj.n + 1) * sizeof(*order));
		if (!order) {
			sb->oom = true;
			return;
		}
		for (size_t i = 0; i < v->obj.n; i++)
			order[i] = &v->obj.items[i];
		if (pretty)
			qsort(order, v->obj.n, sizeof(*order), qemu_order_cmp);
		vt_strbuf_add(sb, "{", 1);
		for (size_t i = 0; i < v->obj.n; i++) {
			if (i)
				vt_strbuf_add(sb, ",", 1);
			if (pretty) {
				vt_strbuf_add(sb, "\n", 1);
				indent(sb, level + 1);
			}
			vt_json_escape(sb, order[i]->key);
			vt_strbuf_add(sb, pretty ? ": " : ":", pretty ? 2 : 1);
			render(sb, order[i]->val, st, level + 1);
		}
		if (pretty) {
			vt_strbuf_add(sb, "\n", 1);
			indent(sb, level);
		}
		vt_strbuf_add(sb, "}", 1);
		free(order);
		break;
	}
	case J_ARRAY:
		vt_strbuf_add(sb, "[", 1);
		for (size_t i = 0; i < v->arr.n; i++) {
			if (i)
				vt_strbuf_add(sb, ",", 1);
			if (pretty) {
				vt_strbuf_add(sb, "\n", 1);
				indent(sb, level + 1);
			}
			render(sb, v->arr.items[i], st, level + 1);
		}
		if (pretty) {
			/* qemu prints an empty array as "[", newline, indent, "]" too. */
			vt_strbuf_add(sb, "\n", 1);
			indent(sb, level);
		}
		vt_strbuf_add(sb, "]", 1);
		break;
	case J_STRING:
		vt_json_escape(sb, v->str);
		break;
	case J_INT:
		vt_strbuf_addf(sb, "%lld", (long long)v->i);
		break;
	case J_UINT:
		vt_strbuf_addf(sb, "%llu", (unsigned long long)v->u);
		break;
	case J_DOUBLE:
		vt_strbuf_addf(sb, "%.17g", v->d);
		break;
	case J_BOOL:
		vt_strbuf_addf(sb, "%s", v->b ? "true" : "false");
		break;
	case J_NULL:
		vt_strbuf_add(sb, "null", 4);
		break;
	}
}

char *vt_json_to_string(const struct vt_json *v, enum vt_json_style style)
{
	struct vt_strbuf sb = { 0 };

	if (!v)
		return NULL;
	render(&sb, v, style, 0);
	if (sb.oom || !sb.buf) {
		free(sb.buf);
		return NULL;
	}
	return sb.buf;
}

int vt_json_print(FILE *f, const struct vt_json *v, enum vt_json_style style)
{
	char *s = vt_json_to_string(v, style);
	if (!s)
		return -ENOMEM;
	int r = fprintf(f, "%s\n", s) < 0 ? -EIO : 0;
	free(s);
	return r;
}

/* qemu's human dump of a QAPI object (qemu-img info's "Format specific information"):
 * one member per line in the same order as the JSON, dashes in keys shown as spaces,
 * nested objects and lists indented 4 more, list elements as [i], scalars unquoted. */
static void render_human(struct vt_strbuf *sb, const struct vt_json *v, int level);

static void human_scalar(struct vt_strbuf *sb, const struct vt_json *v)
{
	switch (v->kind) {
	case J_STRING: vt_strbuf_addf(sb, "%s", v->str); break;
	case J_INT: vt_strbuf_addf(sb, "%lld", (long long)v->i); break;
	case J_UINT: vt_strbuf_addf(sb, "%llu", (unsigned long long)v->u); break;
	case J_DOUBLE: vt_strbuf_addf(sb, "%.17g", v->d); break;
	case J_BOOL: vt_strbuf_addf(sb, "%s", v->b ? "true" : "false"); break;
	default: vt_strbuf_addf(sb, "null"); break;
	}
}

static void human_entry(struct vt_strbuf *sb, const char *label, const struct vt_json *v,
                        int level)
{
	indent(sb, level);
	vt_strbuf_addf(sb, "%s:", label);
	if (v->kind == J_OBJECT || v->kind == J_ARRAY) {
		vt_strbuf_add(sb, "\n", 1);
		render_human(sb, v, level + 1);
	} else {
		vt_strbuf_add(sb, " ", 1);
		human_scalar(sb, v);
		vt_strbuf_add(sb, "\n", 1);
	}
}

static void render_human(struct vt_strbuf *sb, const struct vt_json *v, int level)
{
	if (v->oom)
		sb->oom = true;
	if (v->kind == J_ARRAY) {
		for (size_t i = 0; i < v->arr.n; i++) {
			char label[32];
			snprintf(label, sizeof(label), "[%zu]", i);
			human_entry(sb, label, v->arr.items[i], level);
		}
		return;
	}
	if (v->kind != J_OBJECT)
		return;
	const struct member **order = malloc((v->obj.n + 1) * sizeof(*order));
	if (!order) {
		sb->oom = true;
		return;
	}
	for (size_t i = 0; i < v->obj.n; i++)
		order[i] = &v->obj.items[i];
	qsort(order, v->obj.n, sizeof(*order), qemu_order_cmp);
	for (size_t i = 0; i < v->obj.n; i++) {
		char *label = strdup(order[i]->key);
		if (!label) {
			sb->oom = true;
			break;
		}
		for (char *c = label; *c; c++)
			if (*c == '-')
				*c = ' ';
		human_entry(sb, label, order[i]->val, level);
		free(label);
	}
	free(order);
}

char *vt_json_to_qemu_human(const struct vt_json *v, int level)
{
	struct vt_strbuf sb = { 0 };

	if (!v)
		return NULL;
	render_human(&sb, v, level);
	if (sb.oom) {
		free(sb.buf);
		return NULL;
	}
	return sb.buf ? sb.buf : strdup("");
}
