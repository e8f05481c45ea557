/* --object secret,...: see object.h. */
#include "img/object.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct img_secret *secrets;
static size_t nsecrets;

/* Types qemu knows that make no sense for vtool (named, so the message is honest). */
static const char *const other_types[] = {
	"secret_keyring", "tls-creds-x509", "tls-creds-psk", "tls-creds-anon", "tls-cipher-suites",
	"iothread", "throttle-group", "memory-backend-ram", "memory-backend-file",
	"authz-simple", "authz-list", "authz-listfile", "authz-pam", NULL,
};

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+') return 62;
	if (c == '/') return 63;
	return -1;
}

/* Lenient like glib's decoder: characters outside the alphabet end the data. */
static int b64decode(const char *in, size_t n, uint8_t **out, size_t *olen)
{
	uint8_t *o = malloc(n / 4 * 3 + 3);
	uint32_t acc = 0;
	int bits = 0;
	size_t k = 0;
	if (!o)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v = b64val((unsigned char)in[i]);
		if (v < 0)
			break;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			o[k++] = (uint8_t)(acc >> bits);
		}
	}
	*out = o;
	*olen = k;
	return 0;
}

static int read_file(const char *path, uint8_t **out, size_t *len, struct vt_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return vt_error_set(err, errno, "", "", "Unable to read %s: Failed to open file "
		                    "\xe2\x80\x9c%s\xe2\x80\x9d: %s", path, path, strerror(errno));
	size_t cap = 256, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap)
			break;
		uint8_t *b2 = realloc(buf, cap * 2);
		if (!b2) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = b2;
		cap *= 2;
	}
	fclose(f);
	if (!buf)
		return vt_error_set(err, ENOMEM, "", "--object", NULL);
	*out = buf;
	*len = n;
	return 0;
}

int img_object_add(const char *spec, struct vt_error *err)
{
	char *copy = strdup(spec), *save = NULL;
	char *type = NULL, *id = NULL, *data = NULL, *file = NULL, *format = NULL;
	int r = 0;

	if (!copy)
		return vt_error_set(err, ENOMEM, "", "--object", NULL);
	/* qemu's key=value list; the first element may be the bare type. */
	for (char *tok = strtok_r(copy, ",", &save); tok && r == 0; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			if (!type && tok == copy)
				type = tok;
			else
				r = vt_error_set(err, EINVAL, "", "", "Invalid parameter '%s'", tok);
			continue;
		}
		*eq = '\0';
		char *v = eq + 1;
		if (!strcmp(tok, "qom-type"))
			type = v;
		else if (!strcmp(tok, "id"))
			id = v;
		else if (!strcmp(tok, "data"))
			data = v;
		else if (!strcmp(tok, "file"))
			file = v;
		else if (!strcmp(tok, "format"))
			format = v;
		else if (type && !strcmp(type, "secret") && (!strcmp(tok, "keyid") || !strcmp(tok, "iv")))
			r = vt_error_set(err, ENOTSUP, "", "", "secrets encrypted with another secret "
			                 "(%s=) are not supported by vtool", tok);
		else
			r = vt_error_set(err, EINVAL, "", "", "Parameter '%s' is unexpected", tok);
	}
	if (r == 0 && !type)
		r = vt_error_set(err, EINVAL, "", "", "Parameter 'qom-type' is missing");
	if (r == 0 && strcmp(type, "secret")) {
		bool known = false;
		for (const char *const *t = other_types; *t; t++)
			known |= !strcmp(*t, type);
		r = known ? vt_error_set(err, ENOTSUP, "", "", "object type '%s' is not supported "
		                         "by vtool", type)
		          : vt_error_set(err, EINVAL, "", "", "Parameter 'qom-type' does not accept "
		                         "value '%s'", type);
	}
	if (r == 0 && !id)
		r = vt_error_set(err, EINVAL, "", "", "Parameter 'id' is missing");
	if (r == 0 && format && strcmp(format, "raw") && strcmp(format, "base64"))
		r = vt_error_set(err, EINVAL, "", "", "Parameter 'format' does not accept value '%s'",
		                 format);
	if (r == 0 && !data == !file)
		r = vt_error_set(err, EINVAL, "", "", data ? "Only one of 'file' or 'data' may be given"
		                                           : "Either 'file' or 'data' must be provided");
	if (r == 0 && img_secret_find(id))
		r = vt_error_set(err, EEXIST, "", "", "attempt to add duplicate property '%s' to "
		                 "object (type 'container')", id);
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (r == 0 && file)
		r = read_file(file, &bytes, &len, err);
	else if (r == 0) {
		len = strlen(data);
		if (!(bytes = malloc(len + 1)))
			r = vt_error_set(err, ENOMEM, "", "--object", NULL);
		else
			memcpy(bytes, data, len);
	}
	if (r == 0 && format && !strcmp(format, "base64")) {
		uint8_t *dec;
		size_t dlen;
		if (b64decode((const char *)bytes, len, &dec, &dlen) < 0)
			r = vt_error_set(err, ENOMEM, "", "--object", NULL);
		else {
			free(bytes);
			bytes = dec;
			len = dlen;
		}
	}
	struct img_secret *ns = r == 0 ? realloc(secrets, (nsecrets + 1) * sizeof(*ns)) : NULL;
	if (r == 0 && !ns)
		r = vt_error_set(err, ENOMEM, "", "--object", NULL);
	if (r == 0) {
		secrets = ns;
		secrets[nsecrets] = (struct img_secret){ strdup(id), bytes, len };
		if (!secrets[nsecrets].id)
			r = vt_error_set(err, ENOMEM, "", "--object", NULL);
		else
			nsecrets++, bytes = NULL;
	}
	free(bytes);
	free(copy);
	return r;
}

const struct img_secret *img_secret_find(const char *id)
{
	for (size_t i = 0; i < nsecrets; i++)
		if (!strcmp(secrets[i].id, id))
			return &secrets[i];
	return NULL;
}

void img_objects_free(void)
{
	for (size_t i = 0; i < nsecrets; i++) {
		free(secrets[i].id);
		free(secrets[i].data);
	}
	free(secrets);
	secrets = NULL;
	nsecrets = 0;
}
