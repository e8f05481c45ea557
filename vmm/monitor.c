/* Monitor sockets, clients and the monitor thread (monitor.h). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "vmm/control.h"
#include "vmm/hmp.h"
#include "vmm/monitor.h"
#include "vmm/qmp.h"
#include "vmm/sandbox.h"

struct mon_client {
	struct mon_chardev *ch;
	int fd_in, fd_out;
	bool eof;                      /* input ended; the client stays for its output */
	struct qmp_session qmp;
	struct hmp_session hmp;
	char *out;                     /* queued output, under mon.lock */
	size_t out_len, out_cap;
	bool drop;                     /* too much queued: close it */
};

struct mon_chardev {
	const struct vm_sock_chardev *cfg;
	const struct vm_monitor *m;
	int listen_fd;                 /* -1: stdio */
	struct mon_client *client;     /* at most one */
	char path[108];                /* unix: removed at exit */
};

static struct {
	pthread_mutex_t lock;
	struct mon_chardev ch[VM_MAX_MONITORS];
	int nr;
	int wake[2];
	pthread_t thread;
	bool started, stop;
	struct hmp_session mux;
	bool mux_focus, mux_greeted;
} mon = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = { -1, -1 } };

static void wake(void)
{
	if (mon.wake[1] >= 0 && write(mon.wake[1], "", 1) < 0) {
		/* the pipe is full: the thread is awake anyway */
	}
}

/* Queue output for a client. Lock held. */
static void queue_locked(struct mon_client *c, const char *text, size_t len)
{
	if (c->drop || c->fd_out < 0)
		return;
	if (c->out_len + len > MON_OUT_MAX) {
		c->drop = true;
		return;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *b = realloc(c->out, cap);
		if (!b) {
			c->drop = true;
			return;
		}
		c->out = b;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, text, len);
	c->out_len += len;
}

static void client_send(void *opaque, const char *text, size_t len)
{
	pthread_mutex_lock(&mon.lock);
	queue_locked(opaque, text, len);
	pthread_mutex_unlock(&mon.lock);
}

/* Events go to every QMP client past capability negotiation. */
static void monitor_event(const struct ctl_event *ev)
{
	pthread_mutex_lock(&mon.lock);
	for (int i = 0; i < mon.nr; i++) {
		struct mon_client *c = mon.ch[i].client;
		if (!c || !mon.ch[i].m->qmp || !c->qmp.negotiated)
			continue;
		char *text = qmp_event_text(ev, c->qmp.pretty);
		if (text)
			queue_locked(c, text, strlen(text));
		free(text);
	}
	pthread_mutex_unlock(&mon.lock);
	wake();
}

static struct mon_client *client_new(struct mon_chardev *ch, int fd_in, int fd_out)
{
	struct mon_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ch = ch;
	c->fd_in = fd_in;
	c->fd_out = fd_out;
	if (ch->m->qmp)
		qmp_session_init(&c->qmp, ch->m->pretty, client_send, c);
	else
		hmp_session_init(&c->hmp, false, client_send, c);
	pthread_mutex_lock(&mon.lock);
	ch->client = c;
	pthread_mutex_unlock(&mon.lock);
	if (ch->m->qmp)
		qmp_session_greet(&c->qmp);
	else
		hmp_session_greet(&c->hmp);
	return c;
}

static void client_free(struct mon_chardev *ch)
{
	pthread_mutex_lock(&mon.lock);
	struct mon_client *c = ch->client;
	ch->client = NULL;
	pthread_mutex_unlock(&mon.lock);
	if (!c)
		return;
	if (ch->listen_fd >= 0)
		close(c->fd_in); /* a socket; stdio stays */
	if (ch->m->qmp)
		qmp_session_free(&c->qmp);
	free(c->out);
	free(c);
}

/* Write what is queued without blocking; false if the client is gone. */
static bool client_flush(struct mon_client *c)
{
	pthread_mutex_lock(&mon.lock);
	bool ok = !c->drop;
	while (ok && c->out_len) {
		ssize_t n = write(c->fd_out, c->out, c->out_len);
		if (n < 0) {
			ok = errno == EAGAIN || errno == EINTR;
			break;
		}
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
	pthread_mutex_unlock(&mon.lock);
	return ok;
}

static void client_read(struct mon_client *c)
{
	char buf[4096];
	ssize_t n = read(c->fd_in, buf, sizeof(buf));

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		c->eof = true;
		return;
	}
	if (n < 0)
		return;
	if (c->ch->m->qmp)
		qmp_session_input(&c->qmp, buf, (size_t)n);
	else
		hmp_session_input(&c->hmp, buf, (size_t)n);
}

static void accept_client(struct mon_chardev *ch)
{
	int fd = accept4(ch->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (ch->cfg->kind == VM_CHR_SOCKET_TCP) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (!client_new(ch, fd, fd))
		close(fd);
}

static void *monitor_thread(void *arg)
{
	struct pollfd p[1 + 2 * VM_MAX_MONITORS];
	int who[1 + 2 * VM_MAX_MONITORS];

	(void)arg;
	pthread_setname_np(pthread_self(), "monitor");
	sandbox_thread(SANDBOX_MONITOR);
	while (!__atomic_load_n(&mon.stop, __ATOMIC_ACQUIRE)) {
		int n = 0;
		p[n] = (struct pollfd){ .fd = mon.wake[0], .events = POLLIN };
		who[n++] = -1;
		for (int i = 0; i < mon.nr; i++) {
			struct mon_chardev *ch = &mon.ch[i];
			struct mon_client *c = ch->client;
			if (!c) {
				if (ch->listen_fd >= 0) {
					p[n] = (struct pollfd){ .fd = ch->listen_fd, .events = POLLIN };
					who[n++] = i;
				}
				continue;
			}
			pthread_mutex_lock(&mon.lock);
			bool want_out = c->out_len > 0;
			pthread_mutex_unlock(&mon.lock);
			if (!c->eof) {
				p[n] = (struct pollfd){ .fd = c->fd_in, .events = POLLIN };
				who[n++] = i;
			}
			if (want_out) {
				p[n] = (struct pollfd){ .fd = c->fd_out, .events = POLLOUT };
				who[n++] = i;
			}
		}
		if (poll(p, (nfds_t)n, -1) < 0 && errno != EINTR)
			break;
		short rev[VM_MAX_MONITORS] = { 0 };
		for (int k = 0; k < n; k++) {
			if (who[k] >= 0) {
				rev[who[k]] |= p[k].revents;
			} else if (p[k].revents) {
				char drain[64];
				while (read(mon.wake[0], drain, sizeof(drain)) > 0)
					;
			}
		}
		for (int i = 0; i < mon.nr; i++) {
			struct mon_chardev *ch = &mon.ch[i];
			struct mon_client *c = ch->client;
			if (!c) {
				if (rev[i])
					accept_client(ch);
				continue;
			}
			if (!c->eof && (rev[i] & (POLLIN | POLLHUP | POLLERR)))
				client_read(c);
			/* Output from commands just run, or queued by events: write it now. */
			bool alive = client_flush(c);
			pthread_mutex_lock(&mon.lock);
			bool done = !alive || (c->eof && !c->out_len);
			pthread_mutex_unlock(&mon.lock);
			/* A socket client that left is gone once its output is written; while vtool
			 * quits it stays for the last words (SHUTDOWN), as a client that only
			 * half-closed (socat at the end of its input) still reads them. */
			if (done && ch->listen_fd >= 0 && (!alive || !ctl_quitting()))
				client_free(ch);
		}
	}
	return NULL;
}

static int listen_unix(struct mon_chardev *ch, struct vt_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	const char *path = ch->cfg->path;

	if (strlen(path) >= sizeof(sa.sun_path))
		return vt_error_set(err, ENAMETOOLONG, path, "listen", "socket path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* A socket left by an earlier run is replaced (qemu does the same). */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vt_error_set(err, errno, path, "listen", NULL);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		int e = errno;
		close(fd);
		return vt_error_set(err, e, path, "listen", NULL);
	}
	ch->listen_fd = fd;
	snprintf(ch->path, sizeof(ch->path), "%s", path);
	return 0;
}

static int listen_tcp(struct mon_chardev *ch, struct vt_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_PASSIVE }, *res, *ai;
	char where[128];

	snprintf(where, sizeof(where), "tcp:%s:%s", ch->cfg->host, ch->cfg->port);
	int r = getaddrinfo(ch->cfg->host, ch->cfg->port, &hints, &res);
	if (r)
		return vt_error_set(err, EINVAL, where, "listen", "%s", gai_strerror(r));
	int e = EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int one = 1;
		if (fd < 0) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 8) == 0) {
			ch->listen_fd = fd;
			freeaddrinfo(res);
			return 0;
		}
		e = errno;
		close(fd);
	}
	freeaddrinfo(res);
	return vt_error_set(err, e, where, "listen", NULL);
}

/* wait=on: the machine starts once this socket's first client is there. */
static int wait_first_client(struct mon_chardev *ch)
{
	struct pollfd p = { .fd = ch->listen_fd, .events = POLLIN };

	fprintf(stderr, "vtool: waiting for a monitor client on %s%s\n",
	        ch->cfg->kind == VM_CHR_SOCKET_UNIX ? "unix:" : "tcp:",
	        ch->cfg->kind == VM_CHR_SOCKET_UNIX ? ch->cfg->path : ch->cfg->port);
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			return -errno;
	accept_client(ch);
	return 0;
}

int monitor_start(const struct vm_config *cfg, struct vt_error *err)
{
	const struct vm_ctl_config *x = &cfg->ctl;
	int ret;

	/* jansson seeds its hash tables from /dev/urandom on first use: now, before the
	 * sandbox (which lets no monitor open a file to read). */
	json_object_seed(0);
	if (x->mon_stdio_mux)
		hmp_session_init(&mon.mux, true, NULL, NULL);
	if (!x->nr_monitors)
		return 0;
	if (pipe2(mon.wake, O_CLOEXEC | O_NONBLOCK) < 0)
		return vt_error_set(err, errno, "monitor", "start", NULL);
	for (int i = 0; i < x->nr_monitors; i++) {
		struct mon_chardev *ch = &mon.ch[mon.nr++];
		*ch = (struct mon_chardev){ .m = &x->monitors[i],
		                            .cfg = &x->chardevs[x->monitors[i].chardev],
		                            .listen_fd = -1 };
		if (ch->cfg->kind == VM_CHR_STDIO) {
			fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
			if (!client_new(ch, STDIN_FILENO, STDOUT_FILENO))
				return vt_error_set(err, ENOMEM, "monitor", "start", NULL);
			continue;
		}
		ret = ch->cfg->kind == VM_CHR_SOCKET_UNIX ? listen_unix(ch, err) : listen_tcp(ch, err);
		if (ret)
			return ret;
	}
	for (int i = 0; i < mon.nr; i++)
		if (mon.ch[i].listen_fd >= 0 && mon.ch[i].cfg->wait &&
		    (ret = wait_first_client(&mon.ch[i])))
			return vt_error_set(err, -ret, "monitor", "wait for a client", NULL);
	ctl_set_event_sink(monitor_event);
	if (pthread_create(&mon.thread, NULL, monitor_thread, NULL))
		return vt_error_set(err, EAGAIN, "monitor", "start thread", NULL);
	mon.started = true;
	return 0;
}

void monitor_stop(void)
{
	ctl_set_event_sink(NULL);
	if (mon.started) {
		__atomic_store_n(&mon.stop, true, __ATOMIC_RELEASE);
		wake();
		pthread_join(mon.thread, NULL);
		mon.started = false;
	}
	/* Last words (quit's reply, the SHUTDOWN event): up to a second to write them. */
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < mon.nr; i++) {
		struct mon_client *c = mon.ch[i].client;
		while (c && c->out_len && client_flush(c)) {
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec >= 1)
				break;
			struct pollfd p = { .fd = c->fd_out, .events = POLLOUT };
			poll(&p, 1, 100);
		}
		client_free(&mon.ch[i]);
		if (mon.ch[i].listen_fd >= 0)
			close(mon.ch[i].listen_fd);
		if (mon.ch[i].path[0])
			unlink(mon.ch[i].path); /* fails quietly after -chroot/-runas, as qemu's */
	}
	mon.nr = 0;
	for (int i = 0; i < 2; i++)
		if (mon.wake[i] >= 0)
			close(mon.wake[i]);
	mon.wake[0] = mon.wake[1] = -1;
}

/* --- C-a c: the HMP behind the serial port's terminal ------------------------------ */

static void mux_out(void *opaque, const char *text, size_t len)
{
	(void)opaque;
	while (len) {
		ssize_t n = write(STDOUT_FILENO, text, len);
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return;
		if (n > 0) {
			text += n;
			len -= (size_t)n;
		}
	}
}

bool monitor_mux_toggle(void)
{
	if (!mon.mux.echo)
		return false; /* no multiplexed monitor (-monitor none, -nodefaults) */
	mon.mux.out = mux_out;
	mon.mux_focus = !mon.mux_focus;
	if (mon.mux_focus) {
		if (!mon.mux_greeted)
			hmp_session_greet(&mon.mux);
		else
			mux_out(NULL, "\r\n(qemu) ", 9);
		mon.mux_greeted = true;
	}
	return mon.mux_focus;
}

bool monitor_mux_focused(void)
{
	return mon.mux_focus;
}

void monitor_mux_input(const uint8_t *buf, size_t len)
{
	hmp_session_input(&mon.mux, (const char *)buf, len);
}
