/* --object for the `vtool img` commands (qemu-img's user-creatable objects). vtool knows
 * the one type qemu-img commands use on their own: secret (id=, data= or file=,
 * format=raw|base64). Secrets are kept for the command's run, for the options that name
 * them (encrypt.key-secret=ID). Errors carry qemu's wording. */
#ifndef VTOOL_IMG_OBJECT_H
#define VTOOL_IMG_OBJECT_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct img_secret {
	char *id;
	uint8_t *data;
	size_t len;
};

/* Parse and keep one --object argument. */
int img_object_add(const char *spec, struct vt_error *err);
/* NULL when no secret has that id. */
const struct img_secret *img_secret_find(const char *id);
void img_objects_free(void);

#endif
