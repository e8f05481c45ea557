/* vtool run's sandbox (sandbox.h).
 *
 * The allow-lists. Every class gets COMMON (what glibc, malloc, pthreads and stdio need
 * on any thread), then its own. Arguments are checked where a register says enough:
 * ioctl only with KVM's (type 0xAE), the tty/tun/socket-queue ones (type 0x54: TUNSET*,
 * FIONREAD, SIOCOUTQ, TCGETS) and the block-device ones (type 0x12), each class only
 * the types it uses; newfstatat only on a descriptor (AT_EMPTY_PATH: no path lookups);
 * tgkill only to this process; clone only for threads; prctl only to name a thread or
 * take a filter; openat (the monitors' screendump) only to create or truncate a file
 * for writing, never to read one. Nothing may execve, fork, open a socket, connect,
 * ptrace, mount, change ids or change a signal's handler once sealed; seccomp(2)
 * itself kills at once (the reporter uses it to end the process with SIGSYS).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "blk/nbd_proto.h"
#include "vmm/sandbox.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZED 1
#endif
#endif
#ifndef SANDBOX_SANITIZED
#define SANDBOX_SANITIZED 0
#endif

#define NR_MAX 512            /* syscall names kept for the report */
#define MAX_THREADS 256

static const char *const class_names[SANDBOX_NR] = { "main", "vCPU", "I/O", "monitor", "VNC" };

/* --- the lists ---------------------------------------------------------------------- */

/* Any thread: memory, locks, time, signals' return path, thread exit, stdio. */
static const char *const common_calls[] = {
	"read", "write", "readv", "writev", "close", "lseek",
	"futex", "mmap", "munmap", "mprotect", "madvise", "brk", "mremap",
	"rt_sigreturn", "rt_sigprocmask", "restart_syscall",
	"clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "sched_yield",
	"getpid", "gettid", "exit", "exit_group", "set_robust_list", "rseq", "getrandom",
	"fstat", "fcntl", NULL
};

/* A vCPU: KVM_RUN and what an exit's device emulation does on this thread (serial and
 * debugcon output, eventfd kicks of I/O threads, kicking other vCPUs on a stop, the tap's
 * offloads when a virtio-net driver sets its features). */
static const char *const vcpu_calls[] = { NULL };

/* I/O threads: images (positioned and vectored I/O, flush, grow, holes) and taps. */
static const char *const io_calls[] = {
	"pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
	"fsync", "fdatasync", "fallocate", "ftruncate", "copy_file_range",
	"epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll", NULL
};

/* Monitors (and the console thread, whose C-a c reaches the HMP, and the signal
 * thread): their sockets, pausing the machine, reading registers, screendump's file. */
static const char *const monitor_calls[] = {
	"poll", "ppoll", "accept4", "setsockopt", "getsockopt", "shutdown",
	"recvfrom", "sendto", "recvmsg", "sendmsg", "rt_sigtimedwait", NULL
};

/* I/O threads of a machine with a disk on NBD (blk/nbd.c): the transmission, and
 * reconnecting (a new stream socket to the address the first connection resolved: no
 * name lookup). socket() is checked for its domain below. */
static const char *const net_client_calls[] = {
	"connect", "sendmsg", "sendto", "recvfrom", "recvmsg", "setsockopt", "getsockopt",
	"shutdown", "poll", "ppoll", NULL
};

/* The VNC server: its sockets (libvncserver selects, reads and writes them). */
static const char *const vnc_calls[] = {
	"poll", "ppoll", "select", "pselect6", "accept4", "setsockopt", "getsockopt",
	"getpeername", "getsockname", "shutdown", "recvfrom", "sendto", "recvmsg", "sendmsg",
	NULL
};

/* The main thread, beyond the union of the others: build a machine again (KVM fds,
 * guest memory, eventfds, epoll sets, threads), wait for it, tear it down, end
 * (the pid file and unix sockets are removed at exit). */
static const char *const main_calls[] = {
	"eventfd2", "epoll_create1", "pipe2", "dup", "dup3", "timerfd_create",
	"timerfd_settime", "unlink", "unlinkat", "wait4", "getuid", "geteuid", "mlock",
	"munlock", "sched_getaffinity", NULL
};

/* Sanitizer runtimes (only in those builds, and only with an explicit -sandbox on):
 * ASan's alternate signal stacks per thread, limits, the report path's /proc reads
 * (openat without the read-only check). */
static const char *const sanitizer_calls[] = {
	"sigaltstack", "prlimit64", "getrlimit", "sched_getaffinity", "readlink",
	"readlinkat", "open", "openat", "getdents", "getdents64", "pipe2", "process_vm_readv", "prctl", "tgkill",
	NULL
};

/* ... and on the main thread, LeakSanitizer's check at exit: it stops the world from a
 * clone of itself that ptraces every thread (clone without CLONE_THREAD, ptrace, its
 * own signal handlers, PR_SET_PTRACER, waiting). prctl, tgkill and clone lose their
 * argument checks in these builds. */
static const char *const sanitizer_main_calls[] = {
	"clone", "ptrace", "wait4", "waitid", "rt_sigaction", "prctl", "tgkill", "kill",
	"getppid", NULL
};

/* ioctl types (bits 8-15 of the request) per class. */
#define IOC_KVM  0xae
#define IOC_TTY  0x54         /* TUNSET*, FIONREAD, SIOCOUTQ, TCGETS */
#define IOC_BLK  0x12

/* --- state -------------------------------------------------------------------------- */

static struct {
	bool on;
	bool net_client;                        /* a disk on NBD: I/O threads use sockets */
	const char *chroot_dir;
	bool runas;
	uid_t uid;
	gid_t gid;
	gid_t groups[64];
	int nr_groups;
	scmp_filter_ctx main_ctx;               /* loaded with TSYNC at sealing */
	struct sock_fprog prog[SANDBOX_NR];     /* the classes' filters, compiled */
	pthread_mutex_t lock;
	bool sealed;
	struct { pid_t tid; int cls; } threads[MAX_THREADS];
	int nr_threads;
	int acks;
	int test_class;                         /* VTOOL_SANDBOX_TEST, -1 */
	char names[NR_MAX][24];                 /* syscall names for the report */
} sb = { .lock = PTHREAD_MUTEX_INITIALIZER, .test_class = -1 };

static __thread int my_class = -1;          /* this thread's class */
static __thread bool my_filtered;           /* its class filter is in place */

/* --- the reporter ------------------------------------------------------------------- */

static size_t put(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, long v)
{
	char tmp[24];
	int n = 0;

	if (v < 0) {
		at = put(buf, at, cap, "-");
		v = -v;
	}
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < (int)sizeof(tmp));
	while (n && at + 1 < cap)
		buf[at++] = tmp[--n];
	return at;
}

/* SIGSYS from a forbidden call: one line, then end the process the way the kernel's
 * SECCOMP_RET_KILL_PROCESS does (seccomp(2) is that action in every filter). Only
 * async-signal-safe work here. */
static void report(int sig, siginfo_t *si, void *uc)
{
	char line[256], name[17] = "?";
	size_t n = 0;
	int nr = si->si_syscall;

	(void)sig;
	(void)uc;
	prctl(PR_GET_NAME, name, 0, 0, 0);
	n = put(line, n, sizeof(line), "vtool: sandbox: forbidden system call ");
	n = put(line, n, sizeof(line), nr >= 0 && nr < NR_MAX && sb.names[nr][0] ? sb.names[nr] : "?");
	n = put(line, n, sizeof(line), " (");
	n = put_num(line, n, sizeof(line), nr);
	n = put(line, n, sizeof(line), ") in thread '");
	n = put(line, n, sizeof(line), name);
	n = put(line, n, sizeof(line), "' (");
	n = put(line, n, sizeof(line), my_class >= 0 ? class_names[my_class] : "main");
	n = put(line, n, sizeof(line), "): vtool killed\n");
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere to say it */
	}
	syscall(SYS_seccomp, ~0u, 0, NULL);   /* KILL_PROCESS */
	_exit(128 + SIGSYS);                  /* not reached */
}

/* --- building the filters ----------------------------------------------------------- */

static int add_names(scmp_filter_ctx ctx, const char *const *names)
{
	for (; *names; names++) {
		int nr = seccomp_syscall_resolve_name(*names);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this kernel's table (e.g. an old or a new name) */
		int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (ret && ret != -EEXIST)
			return ret;
	}
	return 0;
}

/* Argument n equals v (libseccomp's SCMP_An(SCMP_CMP_EQ, v) with every field named). */
static struct scmp_arg_cmp arg_eq(unsigned n, scmp_datum_t v)
{
	return (struct scmp_arg_cmp){ .arg = n, .op = SCMP_CMP_EQ, .datum_a = v, .datum_b = 0 };
}

static int add_ioctl_type(scmp_filter_ctx ctx, unsigned type)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
	                        SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, type << 8));
}

/* Rules with arguments, shared by every class. */
static int add_common(scmp_filter_ctx ctx)
{
	int ret = add_names(ctx, common_calls);
	pid_t pid = getpid();

	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1,
		                       arg_eq(3, AT_EMPTY_PATH));
	if (SANDBOX_SANITIZED) {
		ret = ret ? ret : add_names(ctx, sanitizer_calls);
		goto out;
	}
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
		                       arg_eq(0, (scmp_datum_t)pid));
	static const int prctl_ops[] = { PR_SET_NAME, PR_GET_NAME, PR_SET_SECCOMP,
	                                 PR_GET_DUMPABLE };
	for (size_t i = 0; !ret && i < sizeof(prctl_ops) / sizeof(prctl_ops[0]); i++)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
		                       arg_eq(0, (scmp_datum_t)prctl_ops[i]));
	/* glibc's own probes (free() asks /proc/sys/vm/overcommit_memory once, from any
	 * thread) open for reading: they fail quietly (EACCES), and glibc takes the
	 * default. Every other open kills. */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 1,
		                       arg_eq(2, O_RDONLY | O_CLOEXEC));
out:
	/* The reporter's way out, and nobody else's: seccomp(2) kills. */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(seccomp), 0);
	return ret;
}

/* What class c may call (the main class: everything). */
static int add_class(scmp_filter_ctx ctx, int c)
{
	int ret = 0;
	bool all = c == SANDBOX_MAIN;

	if (all || c == SANDBOX_VCPU) {
		ret = ret ? ret : add_names(ctx, vcpu_calls);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_KVM);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_TTY); /* virtio-net's TUNSETOFFLOAD */
	}
	if ((all || c == SANDBOX_IO) && sb.net_client) {
		ret = ret ? ret : add_names(ctx, net_client_calls);
		static const int domains[] = { AF_UNIX, AF_INET, AF_INET6 };
		for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++)
			ret = ret ? ret : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
			                                   arg_eq(0, domains[i]));
	}
	if (all || c == SANDBOX_IO) {
		ret = ret ? ret : add_names(ctx, io_calls);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_KVM);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_TTY);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_BLK);
	}
	if (all || c == SANDBOX_MONITOR) {
		ret = ret ? ret : add_names(ctx, monitor_calls);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_KVM);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_TTY);
		/* screendump: create or truncate a file to write, never open one to read */
		if (!SANDBOX_SANITIZED)
			ret = ret ? ret : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
			                                   arg_eq(2, O_WRONLY | O_CREAT | O_TRUNC |
			                                             O_CLOEXEC));
	}
	if (all || c == SANDBOX_VNC) {
		ret = ret ? ret : add_names(ctx, vnc_calls);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_KVM);
		ret = ret ? ret : add_ioctl_type(ctx, IOC_TTY);
	}
	if (all) {
		ret = ret ? ret : add_names(ctx, main_calls);
		/* threads only (CLONE_THREAD); clone3's flags are out of reach in memory: it
		 * says ENOSYS, and glibc falls back to clone */
		if (SANDBOX_SANITIZED)
			ret = ret ? ret : add_names(ctx, sanitizer_main_calls);
		else
			ret = ret ? ret : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
			                                   SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD,
			                                           CLONE_THREAD));
		ret = ret ? ret : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	}
	return ret;
}

static scmp_filter_ctx build(int c)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);

	if (!ctx)
		return NULL;
	if (add_common(ctx) || add_class(ctx, c)) {
		seccomp_release(ctx);
		return NULL;
	}
	return ctx;
}

/* The compiled BPF of a filter, for prctl(PR_SET_SECCOMP) on threads later. */
static int compile(scmp_filter_ctx ctx, struct sock_fprog *prog)
{
	int fd = memfd_create("vtool-seccomp", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	int ret = seccomp_export_bpf(ctx, fd);
	off_t len = ret ? 0 : lseek(fd, 0, SEEK_END);
	if (!ret && (len <= 0 || len % sizeof(struct sock_filter)))
		ret = -EINVAL;
	struct sock_filter *f = ret ? NULL : malloc((size_t)len);
	if (!ret && (!f || pread(fd, f, (size_t)len, 0) != len))
		ret = f ? -EIO : -ENOMEM;
	close(fd);
	if (ret) {
		free(f);
		return ret;
	}
	*prog = (struct sock_fprog){ .len = (unsigned short)(len / sizeof(*f)), .filter = f };
	return 0;
}

/* --- the classes' filters on threads --------------------------------------------------- */

static void narrow(void)
{
	if (my_class < 0 || my_filtered || my_class == SANDBOX_MAIN)
		return;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sb.prog[my_class], 0, 0) == 0)
		my_filtered = true;
}

static void narrow_signal(int sig)
{
	(void)sig;
	narrow();
	__atomic_add_fetch(&sb.acks, 1, __ATOMIC_RELEASE);
}

#define NARROW_SIGNAL (SIGRTMIN + 3)

void sandbox_thread(enum sandbox_class c)
{
	my_class = (int)c;
	if (!sb.on)
		return;
	pthread_mutex_lock(&sb.lock);
	if (sb.sealed) {
		pthread_mutex_unlock(&sb.lock);
		narrow(); /* created after sealing: take the filter at once */
		return;
	}
	pid_t tid = gettid();
	int slot = -1;
	for (int i = 0; i < sb.nr_threads; i++)
		if (sb.threads[i].tid == tid || sb.threads[i].tid == 0)
			slot = i;
	if (slot < 0 && sb.nr_threads < MAX_THREADS)
		slot = sb.nr_threads++;
	if (slot >= 0) {
		sb.threads[slot].tid = tid;
		sb.threads[slot].cls = (int)c;
	}
	pthread_mutex_unlock(&sb.lock);
}

/* A disk on NBD: its I/O threads also get the network client calls. */
static bool has_nbd_drive(const struct vm_config *cfg)
{
	for (int i = 0; i < cfg->nr_drives; i++)
		if ((cfg->drives[i].file && blk_nbd_is_address(cfg->drives[i].file)) ||
		    (cfg->drives[i].format && !strcmp(cfg->drives[i].format, "nbd")))
			return true;
	return false;
}

bool sandbox_enabled(const struct vm_config *cfg)
{
	return cfg->ctl.sandbox == 1 || (cfg->ctl.sandbox < 0 && !SANDBOX_SANITIZED);
}

static int resolve_user(const char *who, struct vt_error *err)
{
	struct passwd *pw = getpwnam(who);

	if (pw) {
		sb.uid = pw->pw_uid;
		sb.gid = pw->pw_gid;
		sb.nr_groups = (int)(sizeof(sb.groups) / sizeof(sb.groups[0]));
		if (getgrouplist(who, sb.gid, sb.groups, &sb.nr_groups) < 0) {
			sb.groups[0] = sb.gid;
			sb.nr_groups = 1;
		}
	} else {
		char *end;
		unsigned long uid = strtoul(who, &end, 10), gid = uid;
		if (*end == ':')
			gid = strtoul(end + 1, &end, 10);
		if (end == who || *end)
			return vt_error_set(err, EINVAL, "-runas", NULL, "User \"%s\" doesn't exist", who);
		sb.uid = (uid_t)uid;
		sb.gid = (gid_t)gid;
		sb.groups[0] = sb.gid;
		sb.nr_groups = 1;
	}
	sb.runas = true;
	return 0;
}

int sandbox_init(const struct vm_config *cfg, struct vt_error *err)
{
	const char *test = getenv("VTOOL_SANDBOX_TEST");
	int ret;

	sb.chroot_dir = cfg->ctl.chroot_dir;
	tzset(); /* the RTC's localtime_r reads /etc/localtime now, not under the filter */
	if (cfg->ctl.runas && (ret = resolve_user(cfg->ctl.runas, err)))
		return ret;
	sb.on = sandbox_enabled(cfg);
	sb.net_client = has_nbd_drive(cfg);
	my_class = SANDBOX_MAIN;
	if (!sb.on)
		return 0;
	for (int c = 0; test && c < SANDBOX_NR; c++)
		if (!strcasecmp(test, class_names[c]) || (c == SANDBOX_IO && !strcmp(test, "io")))
			sb.test_class = c;
	for (int nr = 0; nr < NR_MAX; nr++) {
		char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
		if (name)
			snprintf(sb.names[nr], sizeof(sb.names[nr]), "%s", name);
		free(name);
	}
	for (int c = 0; c < SANDBOX_NR; c++) {
		scmp_filter_ctx ctx = build(c);
		if (!ctx)
			return vt_error_set(err, EINVAL, "-sandbox", "build the seccomp filters", NULL);
		if (c == SANDBOX_MAIN) {
			if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) {
				seccomp_release(ctx);
				return vt_error_set(err, ENOTSUP, "-sandbox", NULL, "this kernel cannot "
				                    "give every thread a filter at once (TSYNC)");
			}
			/* VTOOL_SANDBOX_LOG=1: the kernel logs each call this filter stops (dmesg:
			 * "audit: type=1326 ... syscall=N"), even where no report can be printed
			 * (LeakSanitizer's tracer blocks SIGSYS). A debugging aid. */
			if (getenv("VTOOL_SANDBOX_LOG"))
				seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1);
			sb.main_ctx = ctx;
			continue;
		}
		ret = compile(ctx, &sb.prog[c]);
		seccomp_release(ctx);
		if (ret)
			return vt_error_set(err, -ret, "-sandbox", "compile the seccomp filters", NULL);
	}
	struct sigaction sa = { .sa_sigaction = report, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSYS, &sa, NULL);
	struct sigaction na = { .sa_handler = narrow_signal, .sa_flags = SA_RESTART };
	sigemptyset(&na.sa_mask);
	sigaction(NARROW_SIGNAL, &na, NULL);
	return 0;
}

static int drop_privileges(struct vt_error *err)
{
	if (sb.chroot_dir && (chroot(sb.chroot_dir) < 0 || chdir("/") < 0))
		return vt_error_set(err, errno, sb.chroot_dir, "chroot", NULL);
	if (!sb.runas)
		return 0;
	if (setgroups((size_t)sb.nr_groups, sb.groups) < 0 && errno != EPERM)
		return vt_error_set(err, errno, "-runas", "setgroups", NULL);
	if (setresgid(sb.gid, sb.gid, sb.gid) < 0)
		return vt_error_set(err, errno, "-runas", "setgid", NULL);
	if (setresuid(sb.uid, sb.uid, sb.uid) < 0)
		return vt_error_set(err, errno, "-runas", "setuid", NULL);
	if (sb.uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
		return vt_error_set(err, EPERM, "-runas", NULL, "could still become root");
	return 0;
}

int sandbox_enter(struct vt_error *err)
{
	int ret = drop_privileges(err);

	if (ret || !sb.on)
		return ret;
	/* Every thread gets the union now (TSYNC, no_new_privs too)... */
	if ((ret = seccomp_load(sb.main_ctx)))
		return vt_error_set(err, -ret, "-sandbox", "load the seccomp filter", NULL);
	seccomp_release(sb.main_ctx);
	sb.main_ctx = NULL;
	/* ... and each registered one narrows to its class. */
	pthread_mutex_lock(&sb.lock);
	sb.sealed = true;
	pid_t self = gettid(), pid = getpid();
	int sent = 0;
	__atomic_store_n(&sb.acks, 0, __ATOMIC_RELEASE);
	for (int i = 0; i < sb.nr_threads; i++)
		if (sb.threads[i].tid && sb.threads[i].tid != self &&
		    syscall(SYS_tgkill, pid, sb.threads[i].tid, NARROW_SIGNAL) == 0)
			sent++;
	pthread_mutex_unlock(&sb.lock);
	/* Wait (briefly) for them, so the guest starts with every filter in place. */
	for (int ms = 0; ms < 2000 && __atomic_load_n(&sb.acks, __ATOMIC_ACQUIRE) < sent; ms++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

void sandbox_selftest(enum sandbox_class c)
{
	if (sb.test_class != (int)c || !my_filtered)
		return;
	/* A socket is what an escaped device model would want first; no class may open one. */
	syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
}
