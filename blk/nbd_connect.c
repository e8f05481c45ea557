/* The NBD client's connection setup, for blk/nbd.c: NBD addresses in every form qemu
 * accepts (nbd://host[:port]/export, nbd+unix:///export?socket=PATH, nbd:host:port
 * [:exportname=E], nbd:unix:PATH[:exportname=E], and -f nbd option strings host=..,
 * port=..,export=..,path=..,reconnect-delay=N with qemu's --image-opts spellings
 * server.host, server.port, server.path, server.type, file.*), dialing TCP or unix
 * sockets, and the handshake: fixed newstyle with structured replies, the
 * base:allocation context and NBD_OPT_GO (block sizes requested), falling back to
 * NBD_OPT_EXPORT_NAME and to oldstyle servers. Every option reply is checked (magic,
 * option, length bounded by NBD_MAX_OPTION_LEN, info lengths, block size rules). */
#include "blk/nbd_proto.h"
#include "blk/opts.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HANDSHAKE_TIMEOUT_S 10

_Static_assert(sizeof(((struct nbd_addr *)0)->path) ==
               sizeof(((struct sockaddr_un *)0)->sun_path), "unix socket path");

/* ---- addresses ---- */

bool blk_nbd_is_address(const char *f)
{
	return !strncmp(f, "nbd:", 4) || !strncmp(f, "nbds:", 5) || !strncmp(f, "nbd+", 4) ||
	       !strncmp(f, "nbds+", 5) || !strncmp(f, "driver=nbd", 10) ||
	       !strncmp(f, "file.driver=nbd", 15);
}

static int copy_str(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return -ENAMETOOLONG;
	memcpy(dst, s, n);
	dst[n] = 0;
	return 0;
}

static int unhex(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int percent_decode(char *dst, size_t cap, const char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];
		if (c == '%') {
			int h = i + 2 < n ? unhex(s[i + 1]) : -1, l = h >= 0 ? unhex(s[i + 2]) : -1;
			if (h < 0 || l < 0 || (h == 0 && l == 0))
				return -EINVAL;
			c = h << 4 | l;
			i += 2;
		}
		if (o + 1 >= cap)
			return -ENAMETOOLONG;
		dst[o++] = (char)c;
	}
	dst[o] = 0;
	return 0;
}

static int parse_delay(const char *v, double *out)
{
	char *end;
	double d = strtod(v, &end);
	if (*end || end == v || !(d >= 0 && d <= 86400))
		return -EINVAL;
	*out = d;
	return 0;
}

static int parse_uri(const char *f, struct nbd_addr *a, struct vt_error *err)
{
	bool unix_ = !strncmp(f, "nbd+unix://", 11);
	const char *p = strstr(f, "://") + 3;
	const char *path = strchr(p, '/'), *q = strchr(p, '?');
	if (q && (!path || q < path))
		path = NULL;
	size_t authlen = path ? (size_t)(path - p) : q ? (size_t)(q - p) : strlen(p);
	if (unix_ && authlen)
		return vt_error_set(err, EINVAL, f, "open", "nbd+unix:// takes no host");
	if (!unix_) {
		const char *colon, *hend;
		if (p[0] == '[') { /* [v6 literal] */
			hend = memchr(p, ']', authlen);
			if (!hend)
				return vt_error_set(err, EINVAL, f, "open", "unterminated [address]");
			if (copy_str(a->host, sizeof(a->host), p + 1, (size_t)(hend - p - 1)))
				return vt_error_set(err, EINVAL, f, "open", "host name too long");
			colon = hend + 1 < p + authlen && hend[1] == ':' ? hend + 1 : NULL;
		} else {
			colon = memchr(p, ':', authlen);
			size_t hl = colon ? (size_t)(colon - p) : authlen;
			if (copy_str(a->host, sizeof(a->host), p, hl))
				return vt_error_set(err, EINVAL, f, "open", "host name too long");
		}
		if (colon && copy_str(a->port, sizeof(a->port), colon + 1,
		                      (size_t)(p + authlen - colon - 1)))
			return vt_error_set(err, EINVAL, f, "open", "bad port");
		if (!a->host[0])
			snprintf(a->host, sizeof(a->host), "localhost");
	}
	if (path) {
		size_t pl = q ? (size_t)(q - path) : strlen(path);
		if (percent_decode(a->export_name, sizeof(a->export_name), path + 1, pl - 1))
			return vt_error_set(err, EINVAL, f, "open", "bad export name");
	}
	for (const char *kv = q ? q + 1 : NULL; kv && *kv;) {
		const char *amp = strchr(kv, '&'), *eq = strchr(kv, '=');
		size_t kl = amp ? (size_t)(amp - kv) : strlen(kv);
		if (!eq || eq > kv + kl)
			return vt_error_set(err, EINVAL, f, "open", "bad query parameter");
		char val[sizeof(a->path)];
		if (percent_decode(val, sizeof(val), eq + 1, (size_t)(kv + kl - eq - 1)))
			return vt_error_set(err, EINVAL, f, "open", "query value too long");
		if (unix_ && !strncmp(kv, "socket=", 7))
			snprintf(a->path, sizeof(a->path), "%s", val);
		else if (!strncmp(kv, "reconnect-delay=", 16) && !parse_delay(val, &a->reconnect_delay))
			;
		else
			return vt_error_set(err, EINVAL, f, "open", "unexpected query parameter '%.*s'",
			                    (int)(eq - kv), kv);
		kv = amp ? amp + 1 : NULL;
	}
	if (unix_ && !a->path[0])
		return vt_error_set(err, EINVAL, f, "open", "nbd+unix:// needs ?socket=PATH");
	return 0;
}

/* qemu's nbd:host:port[:exportname=E] and nbd:unix:path[:exportname=E]. */
static int parse_legacy(const char *f, struct nbd_addr *a, struct vt_error *err)
{
	const char *p = f + 4, *ex = strstr(p, ":exportname=");
	size_t n = ex ? (size_t)(ex - p) : strlen(p);
	if (ex && copy_str(a->export_name, sizeof(a->export_name), ex + 12, strlen(ex + 12)))
		return vt_error_set(err, EINVAL, f, "open", "export name too long");
	if (!strncmp(p, "unix:", 5)) {
		if (n <= 5 || copy_str(a->path, sizeof(a->path), p + 5, n - 5))
			return vt_error_set(err, EINVAL, f, "open", "bad socket path");
		return 0;
	}
	const char *colon = memchr(p, ':', n);
	if (!colon || copy_str(a->host, sizeof(a->host), p, (size_t)(colon - p)) ||
	    copy_str(a->port, sizeof(a->port), colon + 1, (size_t)(p + n - colon - 1)))
		return vt_error_set(err, EINVAL, f, "open", "expected nbd:HOST:PORT or nbd:unix:PATH");
	return 0;
}

static const struct blk_optdesc addr_opts[] = {
#define O(k) { k, BLK_OPT_STRING, "" }, { "file." k, BLK_OPT_STRING, "" }
	O("driver"), O("server.type"), O("server.host"), O("server.port"), O("server.path"),
	O("host"), O("port"), O("path"), O("export"), O("reconnect-delay"),
#undef O
	{ NULL, 0, NULL },
};

static const char *opt2(const struct blk_optlist *l, const char *k)
{
	char fk[64];
	snprintf(fk, sizeof(fk), "file.%s", k);
	const char *v = blk_opts_get(l, k);
	return v ? v : blk_opts_get(l, fk);
}

static int parse_options(const char *f, struct nbd_addr *a, struct vt_error *err)
{
	struct blk_optlist l = { 0 };
	int r = blk_opts_parse(f, addr_opts, &l, err);
	if (r < 0)
		return r;
	const char *drv = opt2(&l, "driver"), *type = opt2(&l, "server.type");
	const char *host = opt2(&l, "server.host"), *port = opt2(&l, "server.port");
	const char *path = opt2(&l, "server.path"), *ex = opt2(&l, "export");
	const char *delay = opt2(&l, "reconnect-delay");
	host = host ? host : opt2(&l, "host");
	port = port ? port : opt2(&l, "port");
	path = path ? path : opt2(&l, "path");
	if (drv && strcmp(drv, "nbd") && strcmp(drv, "raw"))
		r = vt_error_set(err, EINVAL, f, "open", "driver '%s' is not nbd", drv);
	else if (type && strcmp(type, "inet") && strcmp(type, "unix"))
		r = vt_error_set(err, EINVAL, f, "open", "server.type must be inet or unix");
	else if ((path && host) || (!path && !host))
		r = vt_error_set(err, EINVAL, f, "open", "give either a host or a socket path");
	else if ((host && copy_str(a->host, sizeof(a->host), host, strlen(host))) ||
	         (port && copy_str(a->port, sizeof(a->port), port, strlen(port))) ||
	         (path && copy_str(a->path, sizeof(a->path), path, strlen(path))) ||
	         (ex && copy_str(a->export_name, sizeof(a->export_name), ex, strlen(ex))))
		r = vt_error_set(err, EINVAL, f, "open", "value too long");
	else if (delay && parse_delay(delay, &a->reconnect_delay))
		r = vt_error_set(err, EINVAL, f, "open", "bad reconnect-delay '%s'", delay);
	blk_opts_free(&l);
	return r;
}

int nbd_parse_address(const char *f, struct nbd_addr *a, struct vt_error *err)
{
	memset(a, 0, sizeof(*a));
	int r;
	if (!strncmp(f, "nbds", 4))
		return vt_error_set(err, ENOTSUP, f, "open", "NBD over TLS is not supported yet");
	if (!strncmp(f, "nbd://", 6) || !strncmp(f, "nbd+tcp://", 10) ||
	    !strncmp(f, "nbd+unix://", 11))
		r = parse_uri(f, a, err);
	else if (!strncmp(f, "nbd:", 4))
		r = parse_legacy(f, a, err);
	else if (!strncmp(f, "nbd+", 4))
		r = vt_error_set(err, EINVAL, f, "open", "unknown NBD transport");
	else
		r = parse_options(f, a, err);
	if (r == 0 && !a->path[0] && !a->port[0])
		snprintf(a->port, sizeof(a->port), "%d", NBD_DEFAULT_PORT);
	return r;
}

/* ---- socket I/O ---- */

int nbd_read_full(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r == 0)
			return -ECONNRESET;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int nbd_send_iov(int fd, struct iovec *v, int cnt)
{
	while (cnt) {
		struct msghdr m = { .msg_iov = v, .msg_iovlen = (size_t)cnt };
		ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		size_t left = (size_t)r;
		while (cnt && left >= v->iov_len) {
			left -= v->iov_len;
			v++;
			cnt--;
		}
		if (cnt) {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
		}
	}
	return 0;
}

static int send_buf(int fd, const void *b, size_t n)
{
	struct iovec v = { (void *)b, n };
	return nbd_send_iov(fd, &v, 1);
}

/* One TCP connection attempt to ai; the socket, or -1 with *e set. */
static int dial_tcp(int family, int socktype, int protocol, const struct sockaddr *sa,
                    socklen_t len, int *e)
{
	struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT_S };
	int fd = socket(family, socktype | SOCK_CLOEXEC, protocol);
	if (fd < 0) {
		*e = errno;
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* connect too */
	if (connect(fd, sa, len) < 0) {
		*e = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static int dial(struct nbd_addr *a, int *out, struct vt_error *err, const char *name)
{
	struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT_S };
	int fd = -1, e = 0;
	_Static_assert(sizeof(a->resolved) >= sizeof(struct sockaddr_storage), "resolved");
	if (a->path[0]) {
		struct sockaddr_un u = { .sun_family = AF_UNIX };
		snprintf(u.sun_path, sizeof(u.sun_path), "%s", a->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&u, sizeof(u)) < 0) {
			e = errno;
			close(fd);
			fd = -1;
		}
	} else if (a->resolved_len) {
		fd = dial_tcp(a->family, a->socktype, a->protocol, (struct sockaddr *)a->resolved,
		              a->resolved_len, &e);
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
		int g = getaddrinfo(a->host, a->port, &hints, &res);
		if (g)
			return vt_error_set(err, EHOSTUNREACH, name, "open", "%s: %s", a->host,
			                    gai_strerror(g));
		for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
			fd = dial_tcp(ai->ai_family, ai->ai_socktype, ai->ai_protocol, ai->ai_addr,
			              ai->ai_addrlen, &e);
			if (fd >= 0 && ai->ai_addrlen <= sizeof(a->resolved)) {
				memcpy(a->resolved, ai->ai_addr, ai->ai_addrlen);
				a->resolved_len = ai->ai_addrlen;
				a->family = ai->ai_family;
				a->socktype = ai->ai_socktype;
				a->protocol = ai->ai_protocol;
			}
		}
		freeaddrinfo(res);
	}
	if (fd < 0)
		return vt_error_set(err, e ? e : ECONNREFUSED, name, "open",
		                    "Failed to connect to '%s%s%s': %s", a->path[0] ? a->path : a->host,
		                    a->path[0] ? "" : ":", a->path[0] ? "" : a->port,
		                    strerror(e ? e : ECONNREFUSED));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	*out = fd;
	return 0;
}

/* ---- handshake ---- */

static int send_option(int fd, uint32_t opt, const void *data, size_t n)
{
	uint8_t h[sizeof(struct nbd_wire_option)];
	nbd_put32(nbd_put32(nbd_put64(h, NBD_OPTS_MAGIC), opt), (uint32_t)n);
	struct iovec v[2] = { { h, sizeof(h) }, { (void *)data, n } };
	return nbd_send_iov(fd, v, n ? 2 : 1);
}

/* One option reply: type and payload (at most NBD_MAX_OPTION_LEN, into buf). */
static int recv_option_reply(int fd, uint32_t opt, uint32_t *type, uint8_t *buf, uint32_t *n,
                             char *why, size_t whylen)
{
	uint8_t h[sizeof(struct nbd_wire_option_reply)];
	int r = nbd_read_full(fd, h, sizeof(h));
	if (r < 0)
		return r;
	*type = nbd_get32(h + 12);
	*n = nbd_get32(h + 16);
	if (nbd_get64(h) != NBD_REP_MAGIC || nbd_get32(h + 8) != opt || *n > NBD_MAX_OPTION_LEN) {
		snprintf(why, whylen, "malformed reply to option %u", opt);
		return -EPROTO;
	}
	return nbd_read_full(fd, buf, *n);
}

static void server_message(char *why, size_t whylen, const char *what, const uint8_t *m,
                           uint32_t n)
{
	size_t i, o = (size_t)snprintf(why, whylen, "%s", what);
	if (n && o + 20 < whylen)
		o += (size_t)snprintf(why + o, whylen - o, ": server reported: ");
	for (i = 0; i < n && o + 1 < whylen; i++)
		why[o++] = m[i] >= 0x20 && m[i] < 0x7f ? (char)m[i] : '?';
	why[o < whylen ? o : whylen - 1] = 0;
}

static int handshake(int fd, const struct nbd_addr *a, struct nbd_neg *ng, char *why,
                     size_t whylen)
{
	uint8_t h[18], *buf = malloc(NBD_MAX_OPTION_LEN);
	uint32_t type, n;
	size_t el = strlen(a->export_name);
	int r;
	memset(ng, 0, sizeof(*ng));
	ng->min_block = 1;
	ng->max_payload = NBD_MAX_PAYLOAD;
	if (!buf)
		return -ENOMEM;
	if ((r = nbd_read_full(fd, h, 16)) < 0)
		goto out;
	if (nbd_get64(h) != NBD_MAGIC) {
		snprintf(why, whylen, "not an NBD server");
		r = -EPROTO;
		goto out;
	}
	if (nbd_get64(h + 8) == NBD_CLISERV_MAGIC) { /* oldstyle: size, flags, 124 zeros */
		if ((r = nbd_read_full(fd, buf, 8 + 4 + 124)) < 0)
			goto out;
		ng->size = nbd_get64(buf);
		ng->flags = (uint16_t)nbd_get32(buf + 8);
		goto check;
	}
	if (nbd_get64(h + 8) != NBD_OPTS_MAGIC || (r = nbd_read_full(fd, h + 16, 2)) < 0) {
		snprintf(why, whylen, "not an NBD server");
		r = r < 0 ? r : -EPROTO;
		goto out;
	}
	uint16_t sflags = nbd_get16(h + 16);
	bool fixed = sflags & NBD_FLAG_FIXED_NEWSTYLE, nozero = sflags & NBD_FLAG_NO_ZEROES;
	uint8_t cf[4];
	nbd_put32(cf, (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (nozero ? NBD_FLAG_C_NO_ZEROES : 0));
	if ((r = send_buf(fd, cf, 4)) < 0)
		goto out;
	bool go_done = false;
	if (fixed) {
		if ((r = send_option(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0)) < 0 ||
		    (r = recv_option_reply(fd, NBD_OPT_STRUCTURED_REPLY, &type, buf, &n, why,
		                           whylen)) < 0)
			goto out;
		ng->structured = type == NBD_REP_ACK;
		if (ng->structured) {
			static const char ctx[] = "base:allocation";
			uint8_t *p = buf;
			p = nbd_put32(p, (uint32_t)el);
			memcpy(p, a->export_name, el);
			p = nbd_put32(nbd_put32(p + el, 1), sizeof(ctx) - 1);
			memcpy(p, ctx, sizeof(ctx) - 1);
			if ((r = send_option(fd, NBD_OPT_SET_META_CONTEXT, buf,
			                     (size_t)(p - buf) + sizeof(ctx) - 1)) < 0)
				goto out;
			do {
				if ((r = recv_option_reply(fd, NBD_OPT_SET_META_CONTEXT, &type, buf, &n, why,
				                           whylen)) < 0)
					goto out;
				if (type == NBD_REP_META_CONTEXT && n == 4 + sizeof(ctx) - 1 &&
				    !memcmp(buf + 4, ctx, sizeof(ctx) - 1)) {
					ng->have_ctx = true;
					ng->ctx_id = nbd_get32(buf);
				}
			} while (type == NBD_REP_META_CONTEXT);
			if (type != NBD_REP_ACK)
				ng->have_ctx = false;
		}
		uint8_t *p = nbd_put32(buf, (uint32_t)el);
		memcpy(p, a->export_name, el);
		nbd_put16(nbd_put16(p + el, 1), NBD_INFO_BLOCK_SIZE);
		if ((r = send_option(fd, NBD_OPT_GO, buf, 4 + el + 4)) < 0)
			goto out;
		bool have_export = false;
		for (;;) {
			if ((r = recv_option_reply(fd, NBD_OPT_GO, &type, buf, &n, why, whylen)) < 0)
				goto out;
			if (type == NBD_REP_INFO && n >= 2) {
				uint16_t it = nbd_get16(buf);
				if (it == NBD_INFO_EXPORT && n == sizeof(struct nbd_wire_info_export)) {
					ng->size = nbd_get64(buf + 2);
					ng->flags = nbd_get16(buf + 10);
					have_export = true;
				} else if (it == NBD_INFO_BLOCK_SIZE &&
				           n == sizeof(struct nbd_wire_info_block_size)) {
					uint32_t mn = nbd_get32(buf + 2), mx = nbd_get32(buf + 10);
					if (!mn || mn > 65536 || (mn & (mn - 1)) || mx < mn) {
						snprintf(why, whylen, "server sent invalid block sizes");
						r = -EPROTO;
						goto out;
					}
					ng->min_block = mn;
					mx -= mx % mn;
					ng->max_payload = mx < NBD_MAX_PAYLOAD ? mx : NBD_MAX_PAYLOAD;
				}
				continue;
			}
			if (type == NBD_REP_ACK && have_export) {
				go_done = true;
				break;
			}
			if (type == NBD_REP_ERR_UNSUP)
				break; /* an old server: NBD_OPT_EXPORT_NAME below */
			r = type == NBD_REP_ERR_UNKNOWN ? -ENOENT : -EPROTO;
			server_message(why, whylen, type == NBD_REP_ERR_UNKNOWN ?
			               "Requested export not available" : type == NBD_REP_ERR_TLS_REQD ?
			               "the server requires TLS, which vtool does not support yet" :
			               "the server refused the export", buf, n);
			goto out;
		}
	}
	if (!go_done) {
		if ((r = send_option(fd, NBD_OPT_EXPORT_NAME, a->export_name, el)) < 0 ||
		    (r = nbd_read_full(fd, buf, nozero ? 10 : 134)) < 0) {
			if (r == -ECONNRESET)
				snprintf(why, whylen, "Requested export not available");
			goto out;
		}
		ng->size = nbd_get64(buf);
		ng->flags = nbd_get16(buf + 8);
	}
check:
	if (!(ng->flags & NBD_FLAG_HAS_FLAGS))
		ng->flags = 0;
	if (ng->size > INT64_MAX) {
		snprintf(why, whylen, "export size %llu is too large", (unsigned long long)ng->size);
		r = -EPROTO;
		goto out;
	}
	r = 0;
out:
	free(buf);
	return r;
}

/* Dial and negotiate. Transmission has no time limit: clear the handshake's. */
int nbd_connect(const char *name, struct nbd_addr *a, int *fdp,
                       struct nbd_neg *ng, struct vt_error *err)
{
	int fd = -1, r = dial(a, &fd, err, name);
	if (r < 0)
		return r;
	char why[384] = "";
	r = handshake(fd, a, ng, why, sizeof(why));
	if (r < 0) {
		close(fd);
		return vt_error_set(err, -r, name, "open", "%s", why[0] ? why : strerror(-r));
	}
	struct timeval tv = { 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	*fdp = fd;
	return 0;
}
