/* The NBD server's sockets and threads: the calling thread accepts clients, takes
 * signals and enforces the handshake time limit; a fixed pool of workers serves every
 * connection through one epoll set. A connection is armed one-shot, so exactly one
 * worker handles it at a time: that worker receives what is there, runs the requests
 * synchronously and sends the replies, then re-arms it. No thread per client and no
 * hand-off per request, so a few threads serve hundreds of clients, and a request costs
 * one wake-up (the same one a client's own thread would cost).
 *
 * Sockets are non-blocking. Replies are sent in full before the next request is read; a
 * client that stops reading its replies for SEND_TIMEOUT_MS is dropped, so it can hold a
 * worker for that long at most. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "img/nbd_server.h"

#define SEND_TIMEOUT_MS   30000
#define MAX_CONNS         4096
#define MAX_WORKERS       16

struct srv;

struct sconn {
	struct srv *s;
	int fd;
	struct nbd_conn *nc;
	char peer[96];
	time_t deadline;          /* monotonic seconds; handshake limit (0: none) */
	bool negotiated;          /* written by the serving worker, read under s->lock */
	bool shut;                /* shutdown() already called */
	struct sconn *prev, *next;
};

struct srv {
	const struct nbd_export *exp;
	const struct nbd_server_opts *o;
	int epfd, evfd, quitfd;
	pthread_mutex_t lock;     /* the list, the counts, fd closing */
	struct sconn *conns;
	int nconns;
	bool done;                /* the last negotiated client left (not persistent) */
};

static time_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void logf_(const struct srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const struct srv *s, const char *fmt, ...)
{
	char line[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", s->o->prog, line);
}

static int sc_send(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct sconn *sc = opaque;
	struct iovec local[4];
	if (iovcnt > 4)
		return -EINVAL;
	memcpy(local, iov, sizeof(*iov) * (size_t)iovcnt);
	struct iovec *v = local;
	while (iovcnt) {
		struct msghdr m = { .msg_iov = v, .msg_iovlen = (size_t)iovcnt };
		ssize_t n = sendmsg(sc->fd, &m, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			struct pollfd p = { .fd = sc->fd, .events = POLLOUT };
			int r = poll(&p, 1, SEND_TIMEOUT_MS);
			if (r == 0) {
				logf_(sc->s, "client %s: not reading its replies for %d s: dropped",
				      sc->peer, SEND_TIMEOUT_MS / 1000);
				return -ETIMEDOUT;
			}
			if (r < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		size_t left = (size_t)n;
		while (iovcnt && left >= v->iov_len) {
			left -= v->iov_len;
			v++;
			iovcnt--;
		}
		if (iovcnt) {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
		}
	}
	return 0;
}

static void sc_report(void *opaque, const char *msg)
{
	struct sconn *sc = opaque;
	logf_(sc->s, "client %s: %s", sc->peer, msg);
}

static const struct nbd_conn_ops sc_ops = { .send = sc_send, .report = sc_report };

static void close_conn(struct srv *s, struct sconn *sc)
{
	pthread_mutex_lock(&s->lock);
	if (sc->prev)
		sc->prev->next = sc->next;
	else
		s->conns = sc->next;
	if (sc->next)
		sc->next->prev = sc->prev;
	s->nconns--;
	if (sc->negotiated && s->nconns == 0 && !s->o->persistent)
		s->done = true;
	close(sc->fd); /* under the lock: the main thread never shuts down a reused fd */
	pthread_mutex_unlock(&s->lock);
	if (s->o->verbose)
		logf_(s, "client %s disconnected", sc->peer);
	nbd_conn_free(sc->nc);
	free(sc);
	uint64_t one = 1;
	if (write(s->evfd, &one, sizeof(one)) < 0) { /* the main thread polls it */ }
}

/* Everything the client has sent, then re-arm (or close). */
static void serve_conn(struct srv *s, struct sconn *sc)
{
	for (;;) {
		void *buf;
		size_t len;
		nbd_conn_rx_buffer(sc->nc, &buf, &len);
		ssize_t n = recv(sc->fd, buf, len, 0);
		if (n > 0) {
			int r = nbd_conn_rx_done(sc->nc, (size_t)n);
			if (!sc->negotiated && nbd_conn_negotiated(sc->nc)) {
				pthread_mutex_lock(&s->lock);
				sc->negotiated = true;
				pthread_mutex_unlock(&s->lock);
			}
			if (r != 0) {
				close_conn(s, sc);
				return;
			}
			if ((size_t)n < len)
				break; /* most likely drained; epoll says if not */
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		close_conn(s, sc); /* 0: the client hung up */
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = sc };
	if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, sc->fd, &ev) < 0)
		close_conn(s, sc);
}

static void *worker(void *arg)
{
	struct srv *s = arg;
	for (;;) {
		struct epoll_event ev;
		int n = epoll_wait(s->epfd, &ev, 1, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || ev.data.ptr == NULL) /* NULL: the quit event */
			return NULL;
		if (n == 1)
			serve_conn(s, ev.data.ptr);
	}
}

static void peer_name(const struct sockaddr_storage *a, socklen_t alen, char *out,
                      size_t outlen)
{
	char host[INET6_ADDRSTRLEN] = "?";
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)a;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, outlen, "%s:%u", host, ntohs(in->sin_port));
	} else if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)a;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, outlen, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		static unsigned long seq;
		snprintf(out, outlen, "unix#%lu", __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	}
	(void)alen;
}

/* Accept what is pending on one listening socket. false when out of descriptors. */
static bool accept_some(struct srv *s, int lfd, int limit)
{
	for (;;) {
		pthread_mutex_lock(&s->lock);
		int n = s->nconns;
		pthread_mutex_unlock(&s->lock);
		if (n >= limit)
			return true;
		struct sockaddr_storage a;
		socklen_t alen = sizeof(a);
		int fd = accept4(lfd, (struct sockaddr *)&a, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return !(errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			         errno == ENOMEM);
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on unix: fine */
		struct sconn *sc = calloc(1, sizeof(*sc));
		if (sc)
			sc->nc = nbd_conn_new(s->exp, &sc_ops, sc);
		if (!sc || !sc->nc) {
			free(sc);
			close(fd);
			return false;
		}
		sc->s = s;
		sc->fd = fd;
		sc->deadline = s->o->handshake_limit > 0 ? now_s() + s->o->handshake_limit : 0;
		peer_name(&a, alen, sc->peer, sizeof(sc->peer));
		if (nbd_conn_start(sc->nc) < 0) {
			nbd_conn_free(sc->nc);
			free(sc);
			close(fd);
			continue;
		}
		if (s->o->verbose)
			logf_(s, "client %s connected", sc->peer);
		pthread_mutex_lock(&s->lock);
		sc->next = s->conns;
		if (s->conns)
			s->conns->prev = sc;
		s->conns = sc;
		s->nconns++;
		pthread_mutex_unlock(&s->lock);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = sc };
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			pthread_mutex_lock(&s->lock);
			shutdown(fd, SHUT_RDWR);
			pthread_mutex_unlock(&s->lock);
		}
	}
}

/* Clients still negotiating after the limit are cut off (a client that connects and
 * says nothing must not hold a slot for ever). */
static void enforce_deadlines(struct srv *s)
{
	time_t t = now_s();
	pthread_mutex_lock(&s->lock);
	for (struct sconn *sc = s->conns; sc; sc = sc->next) {
		if (!sc->negotiated && !sc->shut && sc->deadline && t >= sc->deadline) {
			logf_(s, "client %s: no export chosen within %d s: dropped", sc->peer,
			      s->o->handshake_limit);
			shutdown(sc->fd, SHUT_RDWR);
			sc->shut = true;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static int conn_limit(const struct nbd_server_opts *o)
{
	struct rlimit rl;
	int limit = MAX_CONNS;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)MAX_CONNS + 64)
		limit = rl.rlim_cur > 96 ? (int)rl.rlim_cur - 64 : 32;
	if (o->shared > 0 && o->shared < limit)
		limit = o->shared;
	return limit;
}

static int default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	n = n < 1 ? 1 : n;
	n *= 2;
	return n < 4 ? 4 : n > MAX_WORKERS ? MAX_WORKERS : (int)n;
}

int nbd_server_run(const struct nbd_export *exp, const int *listen_fds, int nfds,
                   const struct nbd_server_opts *o, struct vt_error *err)
{
	struct srv s = { .exp = exp, .o = o, .epfd = -1, .evfd = -1, .quitfd = -1 };
	pthread_t th[MAX_WORKERS];
	int nth = 0, ret = 0, sfd = -1;
	sigset_t sigs;

	pthread_mutex_init(&s.lock, NULL);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	s.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s.quitfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	struct epoll_event qev = { .events = EPOLLIN, .data.ptr = NULL };
	if (s.epfd < 0 || s.evfd < 0 || s.quitfd < 0 || sfd < 0 ||
	    epoll_ctl(s.epfd, EPOLL_CTL_ADD, s.quitfd, &qev) < 0) {
		ret = vt_error_set(err, errno, "", "serve", "cannot set up the event loop: %s",
		                   strerror(errno));
		goto out;
	}
	int want = o->workers > 0 ? o->workers : default_workers();
	if (want > MAX_WORKERS)
		want = MAX_WORKERS;
	for (; nth < want; nth++) {
		if (pthread_create(&th[nth], NULL, worker, &s)) {
			ret = vt_error_set(err, EAGAIN, "", "serve", "cannot start worker threads");
			goto stop;
		}
	}
	int limit = conn_limit(o);
	bool starved = false;
	for (;;) {
		struct pollfd p[2 + 16];
		int np = 0;
		p[np++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s.evfd, .events = POLLIN };
		pthread_mutex_lock(&s.lock);
		bool done = s.done, room = s.nconns < limit;
		pthread_mutex_unlock(&s.lock);
		if (done)
			break;
		for (int i = 0; i < nfds && i < 16 && room && !starved; i++)
			p[np++] = (struct pollfd){ .fd = listen_fds[i], .events = POLLIN };
		starved = false;
		int r = poll(p, (nfds_t)np, 1000);
		if (r < 0 && errno != EINTR) {
			ret = vt_error_set(err, errno, "", "serve", NULL);
			break;
		}
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) > 0)
				break;
		}
		if (p[1].revents & POLLIN) {
			uint64_t v;
			if (read(s.evfd, &v, sizeof(v)) < 0) { /* nothing to do */ }
		}
		for (int i = 2; i < np; i++)
			if ((p[i].revents & POLLIN) && !accept_some(&s, p[i].fd, limit))
				starved = true; /* out of descriptors: wait a poll round */
		enforce_deadlines(&s);
	}
stop:
	/* Hang up on every client; each worker then sees the end of its stream. */
	for (;;) {
		pthread_mutex_lock(&s.lock);
		int n = s.nconns;
		for (struct sconn *sc = s.conns; sc; sc = sc->next) {
			if (!sc->shut)
				shutdown(sc->fd, SHUT_RDWR);
			sc->shut = true;
		}
		pthread_mutex_unlock(&s.lock);
		if (n == 0 || nth == 0)
			break;
		struct pollfd pe = { .fd = s.evfd, .events = POLLIN };
		poll(&pe, 1, 100);
		uint64_t v;
		if (read(s.evfd, &v, sizeof(v)) < 0) { /* nothing pending */ }
	}
	uint64_t one = 1;
	if (write(s.quitfd, &one, sizeof(one)) < 0) { /* cannot happen on an eventfd */ }
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
out:
	if (sfd >= 0)
		close(sfd);
	if (s.epfd >= 0)
		close(s.epfd);
	if (s.evfd >= 0)
		close(s.evfd);
	if (s.quitfd >= 0)
		close(s.quitfd);
	pthread_mutex_destroy(&s.lock);
	return ret;
}
