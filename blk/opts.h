/* qemu's `-o key=value,key2=value2` option strings (",," is a literal comma), checked
 * against a driver's table of known options. */
#ifndef VTOOL_BLK_OPTS_H
#define VTOOL_BLK_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

enum blk_opttype { BLK_OPT_STRING, BLK_OPT_SIZE, BLK_OPT_NUMBER, BLK_OPT_BOOL };

struct blk_optdesc {
	const char *name;
	enum blk_opttype type;
	const char *help;
};

struct blk_opt {
	char *key;
	char *value;
};

struct blk_optlist {
	struct blk_opt *items;
	int n;
};

/* Parse s (may be NULL) against desc; unknown keys and malformed values are errors
 * naming the option, as qemu-img's "Invalid parameter 'x'". */
int blk_opts_parse(const char *s, const struct blk_optdesc *desc, struct blk_optlist *out,
                   struct vt_error *err);
void blk_opts_free(struct blk_optlist *l);
const char *blk_opts_get(const struct blk_optlist *l, const char *key);
/* Typed getters: return 0 and set *v if present, 1 if absent, -EINVAL if malformed. */
int blk_opts_get_size(const struct blk_optlist *l, const char *key, uint64_t *v,
                      struct vt_error *err);
int blk_opts_get_bool(const struct blk_optlist *l, const char *key, bool *v,
                      struct vt_error *err);
/* Set (or replace) a value, e.g. the size or backing file given outside -o. */
int blk_opts_set(struct blk_optlist *l, const char *key, const char *value);

#endif
