/* qemu's display options for vtool run:
 *   -vnc :N | HOST:N | [IPV6]:N | unix:PATH | none [,password-secret=ID][,share=...]
 *        [,to=L][,lossy][,non-adaptive][,key-delay-ms=MS]
 *   -display none | vnc=ADDR[,...]      -vga std | none      -k LAYOUT
 *   -object secret,id=ID,file=F | data=D[,format=raw]
 *   -global VGA.vgamem_mb=N
 * vtool differs from qemu on purpose in one place: ":N" listens on 127.0.0.1 only (as
 * libvirt does); "0.0.0.0:N" or a host address lets other machines in. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/ui/display.h"

#define MAX_ITEMS 16
#define SECRET_MAX 4096

struct item {
	char *key, *val;
};

/* "a,b=c,d=e,,f" -> items (",," is a literal comma); the first item may lack "=". */
static int split(char *s, struct item *it)
{
	int n = 0;

	while (*s && n < MAX_ITEMS) {
		char *start = s, *w = s;
		for (; *s; s++) {
			if (*s == ',' && s[1] == ',') {
				*w++ = ',';
				s++;
			} else if (*s == ',') {
				s++;
				break;
			} else {
				*w++ = *s;
			}
		}
		bool end = !*s;
		*w = '\0';
		char *eq = strchr(start, '=');
		if (eq)
			*eq = '\0';
		it[n++] = (struct item){ start, eq ? eq + 1 : NULL };
		if (end)
			break;
	}
	return *s ? -1 : n;
}

__attribute__((format(printf, 3, 4)))
static int bad(struct vt_error *err, const char *opt, const char *fmt, ...)
{
	char why[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return vt_error_set(err, EINVAL, opt, NULL, "%s", why);
}

void display_config_init(struct vm_display *d)
{
	*d = (struct vm_display){ .vga = true, .vgamem_mb = 16 };
}

static int parse_port(const char *s, long base, int *out)
{
	char *end;
	long n = strtol(s, &end, 10);

	if (!*s || *end || n < 0 || n + base > 65535)
		return -1;
	*out = (int)(n + base);
	return 0;
}

/* The address part of -vnc: ":N", "HOST:N", "[ADDR]:N", "unix:PATH". */
static int vnc_address(struct vm_display *d, const char *opt, char *addr, struct vt_error *err)
{
	snprintf(d->vnc_arg, sizeof(d->vnc_arg), "%s", addr);
	if (!strncmp(addr, "unix:", 5)) {
		if (!addr[5])
			return bad(err, opt, "unix: needs a socket path%s", "");
		d->vnc_unix = addr + 5;
		return 0;
	}
	char *colon = strrchr(addr, ':');
	if (!colon)
		return bad(err, opt, "'%s' is not an address: give :N (display N, port 5900+N), "
		           "HOST:N or unix:PATH", addr);
	*colon = '\0';
	if (parse_port(colon + 1, 5900, &d->vnc_port))
		return bad(err, opt, "invalid display number '%s' (port 5900+N must be at most 65535)",
		           colon + 1);
	char *host = addr;
	size_t len = strlen(host);
	if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
		host[len - 1] = '\0';
		host++;
	}
	snprintf(d->vnc_host, sizeof(d->vnc_host), "%s", *host ? host : "127.0.0.1");
	return 0;
}

static int opt_vnc(struct vm_config *cfg, const char *opt, char *arg, struct vt_error *err)
{
	struct vm_display *d = &cfg->display;
	struct item it[MAX_ITEMS];
	int n = split(arg, it);

	if (n <= 0)
		return bad(err, opt, "missing address%s", "");
	if (!strcmp(it[0].key, "none") && !it[0].val) {
		d->vnc = false;
		return 0;
	}
	if (it[0].val)
		return bad(err, opt, "'%s=' where an address belongs: give :N, HOST:N or unix:PATH",
		           it[0].key);
	d->vnc = true;
	d->vnc_option = opt;
	d->vnc_unix = NULL;
	d->password_secret = NULL;
	d->share = VM_SHARE_ALLOW_EXCLUSIVE;
	int ret = vnc_address(d, opt, it[0].key, err);
	if (ret)
		return ret;
	for (int i = 1; i < n; i++) {
		const char *k = it[i].key, *v = it[i].val;
		if (!strcmp(k, "password-secret") && v && *v) {
			d->password_secret = v;
		} else if (!strcmp(k, "share") && v) {
			if (!strcmp(v, "allow-exclusive"))
				d->share = VM_SHARE_ALLOW_EXCLUSIVE;
			else if (!strcmp(v, "force-shared"))
				d->share = VM_SHARE_FORCE_SHARED;
			else if (!strcmp(v, "ignore"))
				d->share = VM_SHARE_IGNORE;
			else
				return bad(err, opt, "unknown share= value '%s' (allow-exclusive, "
				           "force-shared or ignore)", v);
		} else if (!strcmp(k, "password")) {
			return bad(err, opt, "password=on sets the password through qemu's monitor; "
			           "give password-secret=ID with -object secret,id=ID,file=FILE%s", "");
		} else if (!strcmp(k, "to") || !strcmp(k, "lossy") || !strcmp(k, "non-adaptive") ||
		           !strcmp(k, "key-delay-ms") || !strcmp(k, "power-control") ||
		           !strcmp(k, "audiodev") || !strcmp(k, "display") || !strcmp(k, "head")) {
			continue;   /* accepted: nothing here changes with them */
		} else {
			return bad(err, opt, "unsupported VNC option '%s' (vtool has password-secret= "
			           "and share=; no TLS, SASL, websocket or reverse connections)", k);
		}
	}
	return 0;
}

static int opt_object(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct vm_display *d = &cfg->display;
	struct item it[MAX_ITEMS];
	int n = split(arg, it);

	if (n <= 0 || strcmp(it[0].key, "secret") || it[0].val)
		return bad(err, "-object", "unsupported object '%s' (vtool knows 'secret')",
		           n > 0 ? it[0].key : "");
	if (d->nr_secrets == VM_MAX_SECRETS)
		return bad(err, "-object", "too many secrets%s", "");
	struct vm_secret *s = &d->secrets[d->nr_secrets];
	*s = (struct vm_secret){ 0 };
	for (int i = 1; i < n; i++) {
		const char *k = it[i].key, *v = it[i].val ? it[i].val : "";
		if (!strcmp(k, "id"))
			s->id = v;
		else if (!strcmp(k, "file"))
			s->file = v;
		else if (!strcmp(k, "data"))
			s->data = v;
		else if (!strcmp(k, "format") && strcmp(v, "raw"))
			return bad(err, "-object", "secret: only format=raw is supported, not '%s'", v);
		else if (strcmp(k, "format"))
			return bad(err, "-object", "secret: unknown parameter '%s'", k);
	}
	if (!s->id || !*s->id)
		return bad(err, "-object", "secret: id= is required%s", "");
	if (!!s->file == !!s->data)
		return bad(err, "-object", "secret '%s': give exactly one of file= and data=", s->id);
	d->nr_secrets++;
	return 0;
}

int display_option(struct vm_config *cfg, const char *opt, char *arg, struct vt_error *err)
{
	struct vm_display *d = &cfg->display;
	const char *name = opt + 1 + (opt[1] == '-');

	if (!strcmp(name, "vnc"))
		return opt_vnc(cfg, opt, arg, err);
	if (!strcmp(name, "object"))
		return opt_object(cfg, arg, err);
	if (!strcmp(name, "k")) {
		d->keymap = arg;
		return 0;
	}
	if (!strcmp(name, "vga")) {
		if (!strcmp(arg, "std"))
			d->vga = true;
		else if (!strcmp(arg, "none"))
			d->vga = false;
		else
			return bad(err, opt, "unsupported card '%s' (vtool has std and none)", arg);
		d->vga_given = true;
		return 0;
	}
	/* -display */
	if (!strcmp(arg, "none") || !strncmp(arg, "none,", 5))
		return 0;
	if (!strncmp(arg, "vnc=", 4))
		return opt_vnc(cfg, opt, arg + 4, err);
	return bad(err, opt, "unsupported display '%s' (vtool has vnc=ADDRESS and none)", arg);
}

int display_global(struct vm_config *cfg, const char *arg, struct vt_error *err)
{
	const char *p = "VGA.vgamem_mb=";

	if (strncmp(arg, p, strlen(p)))
		return 1;
	char *end;
	long mb = strtol(arg + strlen(p), &end, 0);
	if (*end || mb < 1 || mb > 256)
		return bad(err, "-global", "VGA.vgamem_mb must be 1 to 256, not '%s'", arg + strlen(p));
	uint32_t pow2 = 1;
	while (pow2 < (uint32_t)mb)
		pow2 <<= 1;
	cfg->display.vgamem_mb = pow2;
	return 0;
}

static int read_secret(const struct vm_secret *s, char **out, struct vt_error *err)
{
	if (s->data) {
		*out = strdup(s->data);
		return *out ? 0 : vt_error_set(err, ENOMEM, s->id, "read secret", NULL);
	}
	int fd = open(s->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vt_error_set(err, errno, s->file, "read secret", NULL);
	char *buf = calloc(1, SECRET_MAX + 1);
	ssize_t got = buf ? read(fd, buf, SECRET_MAX) : -1;
	int e = errno;
	close(fd);
	if (got < 0) {
		free(buf);
		return vt_error_set(err, buf ? e : ENOMEM, s->file, "read secret", NULL);
	}
	*out = buf;
	return 0;
}

int display_config_check(struct vm_config *cfg, struct vt_error *err)
{
	struct vm_display *d = &cfg->display;

	if (d->nodefaults && !d->vga_given)
		d->vga = false;
	if (!d->vnc || !d->password_secret)
		return 0;
	for (int i = 0; i < d->nr_secrets; i++)
		if (!strcmp(d->secrets[i].id, d->password_secret)) {
			int ret = read_secret(&d->secrets[i], &d->password, err);
			if (ret)
				return ret;
			if (!d->password[0])
				return vt_error_set(err, EINVAL, d->vnc_option, NULL,
				                    "secret '%s' is empty", d->password_secret);
			return 0;
		}
	return vt_error_set(err, EINVAL, d->vnc_option, NULL,
	                    "password-secret: no secret with id '%s' (give -object secret,id=%s,file=FILE)",
	                    d->password_secret, d->password_secret);
}
