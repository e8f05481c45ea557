#include "blk/opts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/size.h"

void blk_opts_free(struct blk_optlist *l)
{
	for (int i = 0; i < l->n; i++) {
		free(l->items[i].key);
		free(l->items[i].value);
	}
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

int blk_opts_set(struct blk_optlist *l, const char *key, const char *value)
{
	for (int i = 0; i < l->n; i++) {
		if (!strcmp(l->items[i].key, key)) {
			char *v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(l->items[i].value);
			l->items[i].value = v;
			return 0;
		}
	}
	struct blk_opt *p = realloc(l->items, (size_t)(l->n + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	l->items = p;
	p[l->n].key = strdup(key);
	p[l->n].value = strdup(value);
	if (!p[l->n].key || !p[l->n].value) {
		free(p[l->n].key);
		free(p[l->n].value);
		return -ENOMEM;
	}
	l->n++;
	return 0;
}

const char *blk_opts_get(const struct blk_optlist *l, const char *key)
{
	for (int i = 0; i < l->n; i++)
		if (!strcmp(l->items[i].key, key))
			return l->items[i].value;
	return NULL;
}

static const struct blk_optdesc *find_desc(const struct blk_optdesc *d, const char *key)
{
	for (; d && d->name; d++)
		if (!strcmp(d->name, key))
			return d;
	return NULL;
}

static int parse_bool(const char *s, bool *v)
{
	if (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true")) {
		*v = true;
		return 0;
	}
	if (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false")) {
		*v = false;
		return 0;
	}
	return -EINVAL;
}

int blk_opts_get_size(const struct blk_optlist *l, const char *key, uint64_t *v,
                      struct vt_error *err)
{
	const char *s = blk_opts_get(l, key);
	if (!s)
		return 1;
	if (vt_size_parse(s, 1, v) < 0)
		return vt_error_set(err, EINVAL, "", key,
		                    "Parameter '%s' expects a non-negative number below 2^64",
		                    key);
	return 0;
}

int blk_opts_get_bool(const struct blk_optlist *l, const char *key, bool *v,
                      struct vt_error *err)
{
	const char *s = blk_opts_get(l, key);
	if (!s)
		return 1;
	if (parse_bool(s, v) < 0)
		return vt_error_set(err, EINVAL, "", key, "Parameter '%s' expects 'on' or 'off'",
		                    key);
	return 0;
}

/* Split at single commas; ",," stands for one literal comma. */
static char *next_token(const char **sp)
{
	const char *s = *sp;
	size_t n = strlen(s);
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	while (*s) {
		if (*s == ',') {
			if (s[1] == ',') {
				*o++ = ',';
				s += 2;
				continue;
			}
			s++;
			break;
		}
		*o++ = *s++;
	}
	*o = '\0';
	*sp = s;
	return out;
}

int blk_opts_parse(const char *s, const struct blk_optdesc *desc, struct blk_optlist *out,
                   struct vt_error *err)
{
	int r = 0;

	while (s && *s) {
		char *tok = next_token(&s);
		if (!tok)
			return vt_error_set(err, ENOMEM, "", "parse options", NULL);
		if (!*tok) {
			free(tok);
			continue;
		}
		char *eq = strchr(tok, '=');
		const char *value = eq ? eq + 1 : "on"; /* a bare flag means on, as in qemu */
		if (eq)
			*eq = '\0';
		const struct blk_optdesc *d = find_desc(desc, tok);
		if (!d) {
			r = vt_error_set(err, EINVAL, "", "", "Invalid parameter '%s'", tok);
		} else {
			bool b;
			uint64_t sz;
			if (d->type == BLK_OPT_BOOL && parse_bool(value, &b) < 0)
				r = vt_error_set(err, EINVAL, "", "",
				                 "Parameter '%s' expects 'on' or 'off'", tok);
			else if ((d->type == BLK_OPT_SIZE || d->type == BLK_OPT_NUMBER) &&
			         vt_size_parse(value, 1, &sz) < 0)
				r = vt_error_set(err, EINVAL, "", "",
				                 "Parameter '%s' expects a non-negative number below "
				                 "2^64", tok);
			else if (blk_opts_set(out, tok, value) < 0)
				r = vt_error_set(err, ENOMEM, "", "parse options", NULL);
		}
		free(tok);
		if (r < 0) {
			blk_opts_free(out);
			return r;
		}
	}
	return 0;
}
