/* stdin -> guest serial, terminal raw mode, Ctrl-A escapes. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "vmm/console.h"
#include "vmm/control.h"
#include "vmm/monitor.h"
#include "vmm/sandbox.h"
#include "vmm/vm.h"

#define CTRL_A 0x01

static struct {
	pthread_mutex_t lock;
	struct vm *vm;
	bool escapes, started, raw, saw_escape;
	struct termios saved;
	int wake[2];
	pthread_t thread;
} con = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = { -1, -1 } };

void console_restore_terminal(void)
{
	if (con.raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &con.saved);
}

static void console_deliver(const uint8_t *buf, size_t len)
{
	if (len && monitor_mux_focused()) {
		monitor_mux_input(buf, len); /* C-a c switched the terminal to the HMP */
		return;
	}
	pthread_mutex_lock(&con.lock);
	if (con.vm && con.vm->input_fn && len)
		con.vm->input_fn(con.vm->input_opaque, buf, len);
	pthread_mutex_unlock(&con.lock);
}

static void console_escape(uint8_t c)
{
	static const char help[] =
		"\r\nC-a h    print this help\r\n"
		"C-a x    exit emulator\r\n"
		"C-a c    switch between console and monitor\r\n"
		"C-a C-a  sends C-a\r\n";

	switch (c) {
	case 'x': case 'X':
		ctl_quit(CTL_CAUSE_HOST_QMP_QUIT);
		break;
	case 'h': case 'H': case '?':
		if (write(STDOUT_FILENO, help, sizeof(help) - 1) < 0)
			break;
		break;
	case 'c': case 'C':
		monitor_mux_toggle();
		break;
	case CTRL_A:
		console_deliver(&c, 1);
		break;
	default:
		break; /* unknown escapes are swallowed, as qemu does */
	}
}

static void *console_thread(void *arg)
{
	uint8_t buf[256], out[256];

	(void)arg;
	pthread_setname_np(pthread_self(), "console");
	sandbox_thread(SANDBOX_MONITOR); /* C-a c reaches the HMP on this thread */
	for (;;) {
		struct pollfd p[2] = { { STDIN_FILENO, POLLIN, 0 }, { con.wake[0], POLLIN, 0 } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			break; /* EOF: the guest simply gets no more input */
		}
		size_t m = 0;
		for (ssize_t i = 0; i < n; i++) {
			if (!con.escapes) {
				out[m++] = buf[i];
			} else if (con.saw_escape) {
				con.saw_escape = false;
				console_deliver(out, m);
				m = 0;
				console_escape(buf[i]);
			} else if (buf[i] == CTRL_A) {
				con.saw_escape = true;
			} else {
				out[m++] = buf[i];
			}
		}
		console_deliver(out, m);
	}
	return NULL;
}

int console_start(bool escapes)
{
	con.escapes = escapes;
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &con.saved) == 0) {
		struct termios raw = con.saved;
		cfmakeraw(&raw);
		if (!escapes)
			raw.c_lflag |= ISIG;  /* Ctrl-C still stops vtool */
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
			con.raw = true;
	}
	if (pipe2(con.wake, O_CLOEXEC) < 0)
		return -errno;
	if (pthread_create(&con.thread, NULL, console_thread, NULL)) {
		close(con.wake[0]);
		close(con.wake[1]);
		con.wake[0] = con.wake[1] = -1;
		return -EAGAIN;
	}
	con.started = true;
	return 0;
}

void console_attach(struct vm *vm)
{
	pthread_mutex_lock(&con.lock);
	con.vm = vm;
	pthread_mutex_unlock(&con.lock);
}

void console_stop(void)
{
	if (con.started) {
		if (write(con.wake[1], "", 1) < 0)
			perror("vtool: console");
		pthread_join(con.thread, NULL);
		close(con.wake[0]);
		close(con.wake[1]);
		con.wake[0] = con.wake[1] = -1;
		con.started = false;
	}
	console_restore_terminal();
	con.raw = false;
}
