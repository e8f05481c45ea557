/* The VNC server (libvncserver) of vtool run.
 *
 * One thread ("vnc") does everything: accepts connections on vtool's own listening
 * socket, asks the VGA to bring the surface up to date (only while a client is
 * connected; the VGA draws only what changed), hands the changed rectangles to
 * libvncserver (which converts pixels to each client's format and sends a DesktopSize
 * update when the mode's size changes), and turns key and pointer events into PS/2
 * input through the i8042's API. The guest never waits for this thread: vCPUs only take
 * the VGA's and i8042's locks, which this thread holds for microseconds.
 *
 * Hostile clients: at most VNC_MAX_CLIENTS connections (and never a descriptor
 * select() cannot watch), a new one taking the place of one that has sent nothing
 * for half a second; a handshake is closed after VNC_HANDSHAKE_S; a client whose socket stops draining is put on hold (its
 * updates wait) and closed after VNC_STALL_S; libvncserver bounds the rest (cut text up
 * to 1 MiB, closes on protocol errors, at most maxClientWait in a blocking read). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <rfb/rfb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "vmm/hw/i8042.h"
#include "vmm/hw/vga.h"
#include "vmm/ui/display.h"
#include "vmm/ui/keymap.h"
#include "vmm/ui/surface.h"
#include "vmm/sandbox.h"
#include "vmm/vm.h"

#define VNC_TICK_US       15000      /* frame interval while the screen changes */
#define VNC_TICK_MAX_US   100000     /* ... growing to this while it does not (as qemu's) */
#define VNC_IDLE_US       200000     /* poll interval with nobody connected */
#define VNC_REST_MAX_US   1000000    /* longest sleep on a picture at rest */
#define VNC_POLICE_NS     250000000ull  /* how often stalled clients are looked for */
#define VNC_MAX_CLIENTS   32
#define VNC_HANDSHAKE_S   5
#define VNC_SILENT_NS     500000000ull   /* connected, not a byte sent: may make room */
#define VNC_STALL_S       10
#define VNC_BACKLOG_BYTES (512 * 1024)  /* unsent bytes that put a client on hold */
#define VNC_MAX_WAIT_MS   2000

struct vnc_client {
	uint64_t since_ns;        /* accepted at; on hold since (when held) */
	bool held;
};

static struct vnc {
	rfbScreenInfoPtr screen;
	int listen_fd;
	pthread_t thread;
	bool started;
	int stop_pipe[2];
	pthread_mutex_t lock;     /* vm, vga, kbd: taken by the thread around each use */
	struct vm *vm;
	struct vga *vga;
	struct i8042 *kbd;
	bool redraw;              /* a new machine or a first client: draw everything */
	bool changed;             /* the last frame changed something (or input came) */
	long tick_us;
	struct surface surf;
	int nr_clients;
	char *passwords[2];
	int last_x, last_y, last_mask;
	bool have_pos;
	uint8_t keys_down[64];    /* bitmap of keys held by clients, released when they go */
	/* Work other threads (the monitors) hand to this one (vnc_call), under lock. */
	int wake_pipe[2];
	bool poked;                  /* the VGA woke the thread (vga_poke) ... */
	uint64_t poke_ns;            /* ... last at this time */
	void (*call_fn)(void *arg);
	void *call_arg;
	pthread_cond_t call_done;
	bool thread_done;         /* the thread has ended: nothing is run any more */
	/* Without a VNC server: the surface screendump draws into (display_snapshot). */
	struct surface dump_surf;
	const struct vm_display *cfg;
	struct vga *dump_vga;     /* the VGA (and boot) dump_surf shows */
	int dump_boot;
} vnc = { .listen_fd = -1, .stop_pipe = { -1, -1 }, .wake_pipe = { -1, -1 },
          .lock = PTHREAD_MUTEX_INITIALIZER, .call_done = PTHREAD_COND_INITIALIZER };

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void quiet_log(const char *fmt, ...)
{
	(void)fmt;
}

/* --- surface <-> libvncserver ------------------------------------------------------- */

static void surf_changed(void *opaque, int x, int y, int w, int h)
{
	vnc.changed = true;

	rfbMarkRectAsModified(vnc.screen, x, y, x + w, y + h);
}

/* libvncserver's 32-bit default is red in the low byte; the surface is 0x00RRGGBB. */
static void set_server_format(rfbScreenInfoPtr s)
{
	s->serverFormat.redShift = 16;
	s->serverFormat.greenShift = 8;
	s->serverFormat.blueShift = 0;
	rfbClientIteratorPtr it = rfbGetClientIterator(s);
	rfbClientPtr cl;
	while ((cl = rfbClientIteratorNext(it)))
		s->setTranslateFunction(cl);
	rfbReleaseClientIterator(it);
}

static int surf_resize(void *opaque, struct surface *s, int w, int h)
{
	if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
		return -EINVAL;
	uint32_t *px = calloc((size_t)w * (size_t)h, 4);
	if (!px)
		return -ENOMEM;
	uint32_t *old = s->pixels;
	rfbNewFramebuffer(vnc.screen, (char *)px, w, h, 8, 3, 4);
	set_server_format(vnc.screen);
	s->pixels = px;
	s->width = w;
	s->height = h;
	free(old);
	return 0;
}

/* --- input -------------------------------------------------------------------------- */

static void send_key(uint16_t key, bool down)
{
	uint8_t bytes[8];
	size_t n = keymap_bytes(key, down, bytes);

	if (n && vnc.kbd)
		i8042_key(vnc.kbd, bytes, n);
	unsigned bit = key & 0x1ff;
	if (bit < sizeof(vnc.keys_down) * 8) {
		if (down)
			vnc.keys_down[bit / 8] |= (uint8_t)(1u << (bit % 8));
		else
			vnc.keys_down[bit / 8] &= (uint8_t)~(1u << (bit % 8));
	}
}

static void vnc_key(rfbBool down, rfbKeySym keysym, rfbClientPtr cl)
{
	uint16_t key = keymap_key((uint32_t)keysym);

	if (!key)
		return;
	vnc.changed = true;   /* input: the guest is likely to answer on the screen */
	pthread_mutex_lock(&vnc.lock);
	send_key(key, down);
	pthread_mutex_unlock(&vnc.lock);
}

/* Keys still held when the last client leaves go up, so none sticks in the guest. */
static void release_keys(void)
{
	for (unsigned bit = 0; bit < sizeof(vnc.keys_down) * 8; bit++)
		if (vnc.keys_down[bit / 8] & (1u << (bit % 8)))
			send_key((uint16_t)bit, false);
}

static void vnc_pointer(int mask, int x, int y, rfbClientPtr cl)
{
	vnc.changed = true;
	pthread_mutex_lock(&vnc.lock);
	int dx = vnc.have_pos ? x - vnc.last_x : 0, dy = vnc.have_pos ? y - vnc.last_y : 0;
	/* RFB: 1 left, 2 middle, 4 right, 8 wheel up, 16 wheel down (a press is a step). */
	int pressed = mask & ~vnc.last_mask;
	int dz = (pressed & 16 ? 1 : 0) - (pressed & 8 ? 1 : 0);
	uint8_t buttons = (uint8_t)((mask & 1) | (mask & 4 ? 2 : 0) | (mask & 2 ? 4 : 0));
	vnc.last_x = x;
	vnc.last_y = y;
	vnc.last_mask = mask;
	vnc.have_pos = true;
	if (vnc.kbd)
		i8042_mouse(vnc.kbd, dx, dy, dz, buttons);
	pthread_mutex_unlock(&vnc.lock);
}

static void vnc_cut_text(char *text, int len, rfbClientPtr cl)
{
	(void)text;   /* the guest has no clipboard channel: ignored */
}

/* --- clients ------------------------------------------------------------------------ */

static void client_gone(rfbClientPtr cl)
{
	free(cl->clientData);
	cl->clientData = NULL;
	if (--vnc.nr_clients == 0) {
		pthread_mutex_lock(&vnc.lock);
		release_keys();
		vnc.have_pos = false;
		pthread_mutex_unlock(&vnc.lock);
	}
}

/* Connections still open. When full, a connection that has sent nothing for
 * VNC_SILENT_NS makes room (the oldest such): a flood of idle connections cannot lock
 * real viewers out for long, and a viewer that answered is never pushed out by one. */
static int live_clients(bool make_room)
{
	rfbClientIteratorPtr it = rfbGetClientIterator(vnc.screen);
	rfbClientPtr cl, victim = NULL;
	uint64_t now = now_ns();
	int n = 0;

	while ((cl = rfbClientIteratorNext(it))) {
		struct vnc_client *c = cl->clientData;
		if (cl->sock == RFB_INVALID_SOCKET)
			continue;
		n++;
		if (!c || cl->state != RFB_PROTOCOL_VERSION || now - c->since_ns < VNC_SILENT_NS)
			continue;
		if (!victim || c->since_ns < ((struct vnc_client *)victim->clientData)->since_ns)
			victim = cl;
	}
	rfbReleaseClientIterator(it);
	if (make_room && n >= VNC_MAX_CLIENTS && victim) {
		rfbCloseClient(victim);
		n--;
	}
	return n;
}

/* Take every connection waiting (a bounded number a frame): a flood is cleared fast. */
static void accept_clients(void)
{
	for (int i = 0; i < 1024; i++) {
		int fd = accept4(vnc.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		vnc.changed = true;
		struct vnc_client *c = calloc(1, sizeof(*c));
		if (!c || fd >= FD_SETSIZE || live_clients(true) >= VNC_MAX_CLIENTS) {
			free(c);
			close(fd);
			continue;
		}
		c->since_ns = now_ns();
		rfbClientPtr cl = rfbNewClient(vnc.screen, fd);
		if (!cl) {
			free(c);
			continue;
		}
		cl->clientData = c;
		cl->clientGoneHook = client_gone;
		if (vnc.nr_clients++ == 0)
			vnc.redraw = true;
	}
}

static size_t unsent_bytes(int fd)
{
	int n = 0;

	return ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0 ? (size_t)n : 0;
}

/* Handshakes that take too long, clients that stopped reading. */
static void police_clients(void)
{
	uint64_t now = now_ns();
	rfbClientIteratorPtr it = rfbGetClientIterator(vnc.screen);
	rfbClientPtr cl;

	while ((cl = rfbClientIteratorNext(it))) {
		struct vnc_client *c = cl->clientData;
		if (!c || cl->sock == RFB_INVALID_SOCKET)
			continue;
		if (cl->state != RFB_NORMAL) {
			if (now - c->since_ns > VNC_HANDSHAKE_S * 1000000000ull)
				rfbCloseClient(cl);
			continue;
		}
		struct pollfd p = { .fd = cl->sock, .events = POLLOUT };
		bool stuck = poll(&p, 1, 0) != 1 || unsent_bytes(cl->sock) > VNC_BACKLOG_BYTES;
		if (stuck && !c->held) {
			c->held = true;
			c->since_ns = now;
		} else if (!stuck) {
			c->held = false;
		}
		cl->onHold = c->held;
		if (c->held && now - c->since_ns > VNC_STALL_S * 1000000000ull)
			rfbCloseClient(cl);
	}
	rfbReleaseClientIterator(it);
}

/* --- the thread --------------------------------------------------------------------- */

/* Without a VGA (-vga none, or between machines) the surface keeps what it shows: a
 * black screen, or the last picture of a machine that stopped. */
static void render(void)
{
	bool full = vnc.redraw;

	vnc.redraw = false;
	if (vnc.vga)
		vga_render(vnc.vga, &vnc.surf, full);
}

/* Run what another thread asked for (vnc_call). */
static void run_calls(void)
{
	char drain[16];

	while (read(vnc.wake_pipe[0], drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&vnc.lock);
	if (vnc.call_fn) {
		vnc.call_fn(vnc.call_arg);
		vnc.call_fn = NULL;
		pthread_cond_broadcast(&vnc.call_done);
	}
	pthread_mutex_unlock(&vnc.lock);
}

/* The VGA's call when the guest changes a picture the thread sleeps on (any thread). */
static void vga_poke(void *arg)
{
	(void)arg;
	__atomic_store_n(&vnc.poked, true, __ATOMIC_RELEASE);
	if (write(vnc.wake_pipe[1], "", 1) < 0) {
		/* full: the thread wakes anyway */
	}
}

/* How long to wait for sockets before the next frame. While the picture changes: every
 * 15 ms, then less often (up to 100 ms) while it does not. A text screen at rest (and
 * a graphics mode without the LFB) is not polled at all: the thread sleeps until the
 * cursor's next blink, and the VGA wakes it if the guest writes first -- but not again
 * within 15 ms, so a guest writing all the time gets frames at the polling rate. */
static int frame_wait_us(uint64_t now)
{
	vnc.tick_us = vnc.changed ? VNC_TICK_US : vnc.tick_us + VNC_TICK_US;
	if (vnc.tick_us > VNC_TICK_MAX_US)
		vnc.tick_us = VNC_TICK_MAX_US;
	vnc.changed = false;
	if (!vnc.nr_clients)
		return VNC_IDLE_US;
	if (now - vnc.poke_ns < VNC_TICK_US * 1000ull)
		return VNC_TICK_US;
	uint64_t idle_ns = vnc.vga ? vga_idle_ns(vnc.vga, vga_poke, NULL) : UINT64_MAX;
	if (!idle_ns)
		return vnc.tick_us;
	return idle_ns / 1000 > VNC_REST_MAX_US ? VNC_REST_MAX_US : (int)(idle_ns / 1000) + 1;
}

static void *vnc_thread(void *arg)
{
	uint64_t policed = 0;

	pthread_setname_np(pthread_self(), "vnc");
	sandbox_thread(SANDBOX_VNC);
	for (;;) {
		/* One call says what needs doing: stop, connections, other threads' work. */
		struct pollfd p[3] = { { .fd = vnc.stop_pipe[0], .events = POLLIN },
		                       { .fd = vnc.listen_fd, .events = POLLIN },
		                       { .fd = vnc.wake_pipe[0], .events = POLLIN } };
		if (poll(p, 3, 0) > 0 && (p[0].revents & POLLIN))
			break;
		if (p[2].revents & POLLIN)
			run_calls();
		if (p[1].revents & POLLIN)
			accept_clients();
		uint64_t now = now_ns();
		if (__atomic_exchange_n(&vnc.poked, false, __ATOMIC_ACQ_REL))
			vnc.poke_ns = now;
		if (now - policed >= VNC_POLICE_NS || vnc.tick_us < VNC_TICK_MAX_US) {
			police_clients();
			policed = now;
		}
		if (vnc.nr_clients) {
			pthread_mutex_lock(&vnc.lock);
			render();
			pthread_mutex_unlock(&vnc.lock);
		}
		rfbProcessEvents(vnc.screen, frame_wait_us(now));
	}
	pthread_mutex_lock(&vnc.lock);
	vnc.thread_done = true;
	pthread_cond_broadcast(&vnc.call_done);
	pthread_mutex_unlock(&vnc.lock);
	return NULL;
}

/* Run fn(arg) on the VNC thread, between two frames, and wait for it; false if the
 * thread is not running. Only one thread calls this (the monitors'). */
static bool vnc_call(void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&vnc.lock);
	bool ok = vnc.started && !vnc.thread_done;
	if (ok) {
		vnc.call_fn = fn;
		vnc.call_arg = arg;
		if (write(vnc.wake_pipe[1], "", 1) < 0) {
			/* the pipe is full: the thread is being woken anyway */
		}
		while (vnc.call_fn && !vnc.thread_done)
			pthread_cond_wait(&vnc.call_done, &vnc.lock);
		ok = !vnc.call_fn;
		vnc.call_fn = NULL;
	}
	pthread_mutex_unlock(&vnc.lock);
	return ok;
}

/* --- for the monitors: screendump and query-vnc --------------------------------------- */

struct snapshot {
	struct vm *vm;
	uint32_t *pixels;
	int width, height, ret;
};

static void copy_surface(struct snapshot *sn, const struct surface *s)
{
	size_t n = (size_t)s->width * (size_t)s->height;

	sn->pixels = malloc(n ? n * 4 : 4);
	if (!sn->pixels) {
		sn->ret = -ENOMEM;
		return;
	}
	memcpy(sn->pixels, s->pixels, n * 4);
	sn->width = s->width;
	sn->height = s->height;
	sn->ret = 0;
}

/* On the VNC thread, lock held: bring its surface up to date and copy it. */
static void snapshot_on_thread(void *arg)
{
	struct snapshot *sn = arg;

	if (!vnc.vga || vnc.vm != sn->vm) {
		sn->ret = -ENODEV;
		return;
	}
	render();
	copy_surface(sn, &vnc.surf);
}

static int dump_resize(void *opaque, struct surface *s, int w, int h)
{
	if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
		return -EINVAL;
	uint32_t *px = calloc((size_t)w * (size_t)h, 4);
	if (!px)
		return -ENOMEM;
	free(s->pixels);
	s->pixels = px;
	s->width = w;
	s->height = h;
	return 0;
}

int display_snapshot(struct vm *vm, uint32_t **pixels, int *width, int *height)
{
	struct snapshot sn = { .vm = vm, .ret = -ENODEV };

	if (!vnc_call(snapshot_on_thread, &sn)) {
		/* No VNC server: this thread is the VGA's only renderer. */
		struct vga *v = vm_device(vm, "vga");
		if (!v)
			return -ENODEV;
		pthread_mutex_lock(&vnc.lock);
		vnc.dump_surf.resize = dump_resize;
		bool full = v != vnc.dump_vga || vm->boot_count != vnc.dump_boot;
		vga_render(v, &vnc.dump_surf, full);
		vnc.dump_vga = v;
		vnc.dump_boot = vm->boot_count;
		if (vnc.dump_surf.pixels)
			copy_surface(&sn, &vnc.dump_surf);
		pthread_mutex_unlock(&vnc.lock);
	}
	*pixels = sn.pixels;
	*width = sn.width;
	*height = sn.height;
	return sn.ret;
}

/* On the VNC thread: the clients' addresses. */
static void query_on_thread(void *arg)
{
	struct display_vnc_info *out = arg;
	rfbClientIteratorPtr it = rfbGetClientIterator(vnc.screen);
	rfbClientPtr cl;

	while ((cl = rfbClientIteratorNext(it)) && out->nr_clients < DISPLAY_VNC_MAX_CLIENTS) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa);
		if (cl->sock == RFB_INVALID_SOCKET || cl->state != RFB_NORMAL ||
		    getpeername(cl->sock, (struct sockaddr *)&sa, &len) < 0)
			continue;
		struct display_vnc_client *c = &out->clients[out->nr_clients++];
		if (sa.ss_family == AF_UNIX) {
			snprintf(c->family, sizeof(c->family), "unix");
			continue;
		}
		char port[16];
		getnameinfo((struct sockaddr *)&sa, len, c->host, sizeof(c->host), port, sizeof(port),
		            NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(c->service, sizeof(c->service), "%s", port);
		snprintf(c->family, sizeof(c->family), sa.ss_family == AF_INET6 ? "ipv6" : "ipv4");
	}
	rfbReleaseClientIterator(it);
}

void display_vnc_query(struct display_vnc_info *out)
{
	const struct vm_display *d = vnc.cfg;

	*out = (struct display_vnc_info){ .enabled = false };
	if (!d || !d->vnc || !vnc.started)
		return;
	out->enabled = true;
	snprintf(out->auth, sizeof(out->auth), "%s", d->password ? "vnc" : "none");
	if (d->vnc_unix) {
		snprintf(out->host, sizeof(out->host), "%s", d->vnc_unix);
		snprintf(out->family, sizeof(out->family), "unix");
	} else {
		snprintf(out->host, sizeof(out->host), "%s", d->vnc_host);
		snprintf(out->service, sizeof(out->service), "%d", d->vnc_port);
		snprintf(out->family, sizeof(out->family), strchr(d->vnc_host, ':') ? "ipv6" : "ipv4");
	}
	vnc_call(query_on_thread, out);
}

/* --- start, attach, stop ------------------------------------------------------------ */

static int listen_unix(const char *path, struct vt_error *err)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(a.sun_path))
		return vt_error_set(err, ENAMETOOLONG, path, "VNC server", NULL);
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return vt_error_set(err, errno, path, "VNC server: socket", NULL);
	unlink(path);  /* a socket left by an earlier run */
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
		int e = errno;
		close(fd);
		return vt_error_set(err, e, path, "VNC server: listen", NULL);
	}
	return fd;
}

static int listen_tcp(const struct vm_display *d, struct vt_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_PASSIVE }, *res;
	char port[8];
	char where[192];

	snprintf(port, sizeof(port), "%d", d->vnc_port);
	snprintf(where, sizeof(where), strchr(d->vnc_host, ':') ? "[%s]:%d" : "%s:%d",
	         d->vnc_host, d->vnc_port);
	int rc = getaddrinfo(d->vnc_host, port, &hints, &res);
	if (rc)
		return vt_error_set(err, EINVAL, d->vnc_option, "VNC server",
		                    "cannot resolve '%s': %s", d->vnc_host, gai_strerror(rc));
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1, e = 0;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0)
		e = errno;
	freeaddrinfo(res);
	if (e) {
		if (fd >= 0)
			close(fd);
		if (e == EADDRINUSE)
			return vt_error_set(err, e, d->vnc_option, "VNC server",
			                    "port %d (display :%d) on %s is already in use; pick another "
			                    "display number", d->vnc_port, d->vnc_port - 5900, d->vnc_host);
		return vt_error_set(err, e, d->vnc_option, "VNC server", "listen on %s: %s",
		                    where, strerror(e));
	}
	return fd;
}

static bool loopback_only(const char *host)
{
	return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

int display_start(const struct vm_config *cfg, struct vt_error *err)
{
	const struct vm_display *d = &cfg->display;

	if (!d->vnc)
		return 0;
	rfbLog = quiet_log;
	rfbErr = quiet_log;
	int ret = keymap_load(d->keymap, err);
	if (ret)
		return ret;
	int fd = d->vnc_unix ? listen_unix(d->vnc_unix, err) : listen_tcp(d, err);
	if (fd < 0)
		return fd;
	if (pipe2(vnc.stop_pipe, O_CLOEXEC) < 0 ||
	    pipe2(vnc.wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		close(fd);
		return vt_error_set(err, errno, "VNC server", "start", NULL);
	}
	vnc.cfg = d;
	vnc.listen_fd = fd;
	int argc = 0;
	vnc.screen = rfbGetScreen(&argc, NULL, 640, 480, 8, 3, 4);
	vnc.surf = (struct surface){ .pixels = calloc(640 * 480, 4), .width = 640, .height = 480,
	                             .changed = surf_changed, .resize = surf_resize };
	if (!vnc.screen || !vnc.surf.pixels)
		return vt_error_set(err, ENOMEM, "VNC server", "start", NULL);
	rfbScreenInfoPtr s = vnc.screen;
	s->frameBuffer = (char *)vnc.surf.pixels;
	s->desktopName = cfg->name ? cfg->name : "vtool";
	s->port = s->ipv6port = 0;        /* vtool listens itself */
	s->httpPort = s->http6Port = 0;
	s->autoPort = FALSE;
	s->deferUpdateTime = 0;
	s->maxClientWait = VNC_MAX_WAIT_MS;
	s->kbdAddEvent = vnc_key;
	s->ptrAddEvent = vnc_pointer;
	s->setXCutText = vnc_cut_text;
	s->cursor = NULL;                 /* no server-side cursor drawing */
	s->permitFileTransfer = FALSE;
	s->alwaysShared = d->share != VM_SHARE_ALLOW_EXCLUSIVE;
	s->neverShared = FALSE;
	s->dontDisconnect = FALSE;
	if (d->password) {
		/* VNC authentication's DES comes from libgcrypt, which initialises itself on
		 * first use (syslog, /proc and /etc reads): do that now, before the sandbox. */
		unsigned char challenge[CHALLENGESIZE] = { 0 };
		rfbEncryptBytes(challenge, d->password);
		vnc.passwords[0] = d->password;
		s->authPasswdData = vnc.passwords;
		s->passwordCheck = rfbCheckPasswordByList;
	}
	rfbInitServer(s);
	set_server_format(s);
	/* Wake rfbProcessEvents's select() for new connections and for work from other
	 * threads too. */
	FD_SET(fd, &s->allFds);
	FD_SET(vnc.wake_pipe[0], &s->allFds);
	if (fd > s->maxFd)
		s->maxFd = fd;
	if (vnc.wake_pipe[0] > s->maxFd)
		s->maxFd = vnc.wake_pipe[0];

	if (d->vnc_unix) {
		fprintf(stderr, "vtool run: VNC server on unix socket %s\n", d->vnc_unix);
	} else {
		int n = d->vnc_port - 5900;
		if (loopback_only(d->vnc_host))
			fprintf(stderr, "vtool run: VNC server on %s:%d (display :%d), this host only; "
			        "to let other machines connect: -vnc 0.0.0.0:%d,password-secret=ID "
			        "-object secret,id=ID,file=FILE\n", d->vnc_host, d->vnc_port, n, n);
		else
			fprintf(stderr, "vtool run: VNC server on %s port %d (display :%d)\n",
			        d->vnc_host, d->vnc_port, n);
		if (!loopback_only(d->vnc_host) && !d->password)
			fprintf(stderr, "vtool: warning: the VNC server on %s:%d has no password: anyone "
			        "who can reach it controls the guest's keyboard and screen (add "
			        "password-secret=ID)\n", d->vnc_host, d->vnc_port);
	}
	if (pthread_create(&vnc.thread, NULL, vnc_thread, NULL) != 0)
		return vt_error_set(err, EAGAIN, "VNC server", "start thread", NULL);
	vnc.started = true;
	return 0;
}

void display_attach(struct vm *vm)
{
	pthread_mutex_lock(&vnc.lock);
	if (!vm)
		release_keys();
	vnc.vm = vm;
	vnc.vga = vm ? vm_device(vm, "vga") : NULL;
	vnc.kbd = vm ? vm_device(vm, "i8042") : NULL;
	vnc.have_pos = false;
	vnc.redraw = true;
	pthread_mutex_unlock(&vnc.lock);
}

void display_stop(void)
{
	if (vnc.started) {
		if (write(vnc.stop_pipe[1], "x", 1) < 0) {
			/* the thread still ends at its next poll of the pipe */
		}
		pthread_join(vnc.thread, NULL);
		vnc.started = false;
	}
	if (vnc.screen) {
		rfbShutdownServer(vnc.screen, TRUE);
		rfbScreenCleanup(vnc.screen);
		vnc.screen = NULL;
	}
	free(vnc.surf.pixels);
	vnc.surf.pixels = NULL;
	free(vnc.dump_surf.pixels);
	vnc.dump_surf.pixels = NULL;
	for (int i = 0; i < 2; i++) {
		if (vnc.stop_pipe[i] >= 0)
			close(vnc.stop_pipe[i]);
		if (vnc.wake_pipe[i] >= 0)
			close(vnc.wake_pipe[i]);
	}
	vnc.stop_pipe[0] = vnc.stop_pipe[1] = -1;
	vnc.wake_pipe[0] = vnc.wake_pipe[1] = -1;
	if (vnc.listen_fd >= 0)
		close(vnc.listen_fd);
	vnc.listen_fd = -1;
	keymap_unload();
}
