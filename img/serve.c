/* vtool img serve: export an image over NBD, with qemu-nbd's options and behaviour
 * (one export per process, -e clients at once, exit when the last client leaves unless
 * -t), except that it listens on 127.0.0.1 unless -b says otherwise. The protocol and
 * the sockets are nbd_server*.c; this file parses options, opens the image, binds the
 * listening sockets and daemonises. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "blk/nbd_proto.h"
#include "img/img.h"
#include "img/nbd_server.h"

static const char serve_help[] =
	"Usage: vtool img serve [-f fmt] [-r] [-x name] [-D text] [-p port | -k socket]\n"
	"                       [-b addr] [-e n] [-t] [--fork] [--pid-file=path]\n"
	"                       [-s | -l snapshot] [-n | --cache=mode] [--discard=mode]\n"
	"                       [--detect-zeroes=mode] [-A] [-B name]... [-v] filename\n"
	"\n"
	"Export a disk image over the NBD protocol (qemu-nbd compatible), so that qemu\n"
	"(nbd://host/name), the Linux kernel (nbd-client), nbdkit, libnbd tools (nbdinfo,\n"
	"nbdcopy) and vtool itself can use it from another machine. Image formats are\n"
	"decoded here: clients see the virtual disk.\n"
	"\n"
	"  -f, --format=fmt        image format (probed when omitted)\n"
	"  -r, --read-only         export read-only (writes are refused with EPERM)\n"
	"  -x, --export-name=name  export name (default: the empty, default export)\n"
	"  -D, --description=text  description shown in export lists\n"
	"  -p, --port=port         TCP port (default 10809)\n"
	"  -b, --bind=addr         address to listen on (default 127.0.0.1: this machine\n"
	"                          only; 0.0.0.0 or :: to serve other machines)\n"
	"  -k, --socket=path       listen on this unix socket (absolute path) instead\n"
	"  -e, --shared=n          serve up to n clients at once (default 1, 0: no limit);\n"
	"                          n > 1 also advertises multi-connection\n"
	"  -t, --persistent        keep serving after the last client disconnects\n"
	"      --fork              run in the background once the socket is listening\n"
	"      --pid-file=path     write the server's process id there\n"
	"  -s, --snapshot          writes go to a temporary overlay, the image is untouched\n"
	"  -l, --load-snapshot=sn  export an internal snapshot (read-only): id or name, or\n"
	"                          snapshot.id=ID,snapshot.name=NAME\n"
	"  -n, --nocache           same as --cache=none\n"
	"      --cache=mode        none, writeback (default), writethrough, directsync, unsafe\n"
	"      --aio=mode          threads, native or io_uring: accepted for compatibility\n"
	"                          (requests run synchronously on the serving thread)\n"
	"      --discard=mode      ignore (default) or unmap: whether TRIM frees space\n"
	"      --detect-zeroes=m   off (default), on, or unmap (needs --discard=unmap):\n"
	"                          written blocks of zeros become zero writes\n"
	"  -A, --allocation-depth  also offer the qemu:allocation-depth metadata context\n"
	"  -B, --bitmap=name       also offer the persistent dirty bitmap name (of the image\n"
	"                          or its backing chain) as the qemu:dirty-bitmap:name\n"
	"                          metadata context; repeatable. Its bits are read at\n"
	"                          start; an enabled bitmap of a writable export goes on\n"
	"                          tracking the writes, as qemu-nbd's does\n"
	"      --tls-creds=id      (not supported yet: refused; use an ssh tunnel)\n"
	"      --threads=n         worker threads serving clients (default: 2 per CPU, 4..16)\n"
	"      --handshake-limit=n drop a client that has not chosen an export within n\n"
	"                          seconds (default 10, 0: no limit)\n"
	"  -v, --verbose           a line per client connecting and leaving\n"
	"\n"
	"Every client request is checked (range, alignment, flags, size); misbehaving\n"
	"clients get the protocol's error codes and are reported once each on stderr.\n"
	"\n"
	"Example:\n"
	"  vtool img serve -f qcow2 -b 0.0.0.0 -x disk -t disk.qcow2 &\n"
	"  qemu-img info nbd://storage-host/disk       # on the other machine\n";

enum {
	OPT_FORK = 256, OPT_PIDFILE, OPT_CACHE, OPT_AIO, OPT_DISCARD, OPT_DZ, OPT_TLS,
	OPT_TLSAUTHZ, OPT_OBJECT, OPT_IMAGE_OPTS, OPT_THREADS, OPT_HANDSHAKE,
};

struct serve_opts {
	const char *fmt, *export_name, *description, *port, *sock, *bind, *pid_file;
	const char *load_snapshot, *cache, *discard, *dz;
	const char **bitmaps;       /* -B, in the order given */
	int nbitmaps;
	bool readonly, persistent, fork, snapshot, alloc_depth, verbose;
	int shared, threads, handshake_limit;
};

static int parse(int argc, char **argv, struct serve_opts *so)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "export-name", required_argument, NULL, 'x' },
		{ "description", required_argument, NULL, 'D' },
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "socket", required_argument, NULL, 'k' },
		{ "shared", required_argument, NULL, 'e' },
		{ "persistent", no_argument, NULL, 't' },
		{ "fork", no_argument, NULL, OPT_FORK },
		{ "pid-file", required_argument, NULL, OPT_PIDFILE },
		{ "snapshot", no_argument, NULL, 's' },
		{ "load-snapshot", required_argument, NULL, 'l' },
		{ "nocache", no_argument, NULL, 'n' },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "aio", required_argument, NULL, OPT_AIO },
		{ "discard", required_argument, NULL, OPT_DISCARD },
		{ "detect-zeroes", required_argument, NULL, OPT_DZ },
		{ "allocation-depth", no_argument, NULL, 'A' },
		{ "bitmap", required_argument, NULL, 'B' },
		{ "tls-creds", required_argument, NULL, OPT_TLS },
		{ "tls-authz", required_argument, NULL, OPT_TLSAUTHZ },
		{ "object", required_argument, NULL, OPT_OBJECT },
		{ "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "handshake-limit", required_argument, NULL, OPT_HANDSHAKE },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *prog = argv[0];
	int c;
	char *end;
	so->shared = 1;
	so->handshake_limit = 10;
	so->bitmaps = calloc((size_t)argc, sizeof(*so->bitmaps)); /* -B at most argc times */
	if (!so->bitmaps)
		return vt_usage_error(prog, "out of memory");
	while ((c = getopt_long(argc, argv, "hf:rx:D:p:b:k:e:tsl:nAB:v", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': so->fmt = optarg; break;
		case 'r': so->readonly = true; break;
		case 'x':
			if (strlen(optarg) > NBD_MAX_STRING)
				return vt_usage_error(prog, "export name '%s' too long", optarg);
			so->export_name = optarg;
			break;
		case 'D':
			if (strlen(optarg) > NBD_MAX_STRING)
				return vt_usage_error(prog, "export description too long");
			so->description = optarg;
			break;
		case 'p': {
			long v = strtol(optarg, &end, 10);
			if (*end || end == optarg || v < 1 || v > 65535)
				return vt_usage_error(prog, "Invalid port '%s'", optarg);
			so->port = optarg;
			break;
		}
		case 'b': so->bind = optarg; break;
		case 'k':
			if (optarg[0] != '/')
				return vt_usage_error(prog, "socket path must be absolute");
			if (strlen(optarg) >= sizeof(((struct sockaddr_un *)0)->sun_path))
				return vt_usage_error(prog, "socket path too long");
			so->sock = optarg;
			break;
		case 'e': {
			long v = strtol(optarg, &end, 0);
			if (*end || end == optarg || v < 0 || v > INT_MAX)
				return vt_usage_error(prog, "Invalid shared device number '%s'", optarg);
			so->shared = (int)v;
			break;
		}
		case 't': so->persistent = true; break;
		case OPT_FORK: so->fork = true; break;
		case OPT_PIDFILE: so->pid_file = optarg; break;
		case 's': so->snapshot = true; break;
		case 'l': so->load_snapshot = optarg; so->readonly = true; break;
		case 'n': optarg = (char *)"none"; /* fall through */
		case OPT_CACHE:
			if (so->cache)
				return vt_usage_error(prog, "-n and --cache can only be specified once");
			so->cache = optarg;
			break;
		case OPT_AIO:
			if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
			    strcmp(optarg, "io_uring"))
				return vt_usage_error(prog, "Invalid aio mode '%s'", optarg);
			break;
		case OPT_DISCARD: so->discard = optarg; break;
		case OPT_DZ: so->dz = optarg; break;
		case 'A': so->alloc_depth = true; break;
		case 'B': /* argv outlives the server: keep pointers into it */
			so->bitmaps[so->nbitmaps++] = optarg;
			break;
		case OPT_TLS: case OPT_TLSAUTHZ: case OPT_OBJECT:
			return vt_usage_error(prog, "TLS is not supported yet: vtool img serve speaks "
			                      "NBD in clear text (tunnel it, e.g. ssh -L, across "
			                      "untrusted networks)");
		case OPT_IMAGE_OPTS:
			return vt_usage_error(prog, "--image-opts is not supported: give a file name "
			                      "and -f");
		case OPT_THREADS: {
			long v = strtol(optarg, &end, 10);
			if (*end || end == optarg || v < 1 || v > 16)
				return vt_usage_error(prog, "--threads takes 1 to 16");
			so->threads = (int)v;
			break;
		}
		case OPT_HANDSHAKE: {
			long v = strtol(optarg, &end, 10);
			if (*end || end == optarg || v < 0 || v > 86400)
				return vt_usage_error(prog, "Invalid handshake limit '%s'", optarg);
			so->handshake_limit = (int)v;
			break;
		}
		case 'v': so->verbose = true; break;
		default: return vt_usage_hint(prog);
		}
	}
	if (optind != argc - 1)
		return vt_usage_error(prog, "Invalid number of arguments");
	if (so->sock && (so->port || so->bind))
		return vt_usage_error(prog, "-k cannot be combined with -p or -b");
	if (so->snapshot && so->readonly)
		return vt_usage_error(prog, "-s cannot be combined with -r or -l");
	return 0;
}

/* -s: a qcow2 overlay over the image in $TMPDIR, unlinked once open, so writes never
 * reach the image and nothing is left behind however the server ends. */
static int open_snapshot(const char *file, const struct blk_open_opts *o, struct blk **out,
                         struct vt_error *err)
{
	char abs[PATH_MAX], tmp[PATH_MAX];
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	struct blk_open_opts po = *o;
	struct blk *probe;
	char format[32];
	char *formatting = NULL;

	po.writable = false;
	if (blk_open(file, &po, &probe, err) < 0)
		return -1;
	snprintf(format, sizeof(format), "%s", blk_format(probe));
	blk_close(probe, NULL);
	if (!realpath(file, abs))
		return vt_error_set(err, errno, file, "open", NULL);
	snprintf(tmp, sizeof(tmp), "%s/vtool-serve.XXXXXX", dir);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return vt_error_set(err, errno, tmp, "create snapshot overlay", NULL);
	close(fd);
	struct blk_create_opts co = { .format = "qcow2", .backing_file = abs,
	                              .backing_format = format };
	int r = blk_create(tmp, &co, &formatting, err);
	free(formatting);
	if (r == 0) {
		struct blk_open_opts oo = *o;
		oo.format = "qcow2";
		oo.writable = true;
		r = blk_open(tmp, &oo, out, err);
	}
	unlink(tmp);
	return r;
}

static int listen_unix(const char *path, int backlog, int *fd, struct vt_error *err)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (*fd < 0)
		return vt_error_set(err, errno, path, "listen", NULL);
	if (unlink(path) < 0 && errno != ENOENT) /* a stale socket, as qemu-nbd does */
		return vt_error_set(err, errno, path, "listen", "cannot remove the old socket: %s",
		                    strerror(errno));
	if (bind(*fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(*fd, backlog) < 0)
		return vt_error_set(err, errno, path, "listen", "Failed to bind socket: %s",
		                    strerror(errno));
	return 1;
}

static int listen_tcp(const char *host, const char *port, int backlog, int *fds, int max,
                      struct vt_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	char where[300];
	snprintf(where, sizeof(where), "%s:%s", host, port);
	int r = getaddrinfo(host, port, &hints, &res);
	if (r)
		return vt_error_set(err, EINVAL, where, "listen", "address resolution failed: %s",
		                    gai_strerror(r));
	int n = 0, last = 0;
	for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		                ai->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
			last = errno;
			close(fd);
			continue;
		}
		fds[n++] = fd;
	}
	freeaddrinfo(res);
	if (n == 0)
		return vt_error_set(err, last ? last : EADDRNOTAVAIL, where, "listen",
		                    "Failed to bind socket: %s", strerror(last ? last : EADDRNOTAVAIL));
	return n;
}

static int write_pid_file(const char *path, struct vt_error *err)
{
	FILE *f = fopen(path, "w");
	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0)
		return vt_error_set(err, errno ? errno : EIO, path, "write pid file", NULL);
	return 0;
}

/* --fork: the parent stays until the child is listening and prints what the child
 * reports before that; it exits 0 only if the child reported nothing (qemu-nbd's way). */
static int daemonize(int *old_stderr)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		fprintf(stderr, "vtool img serve: pipe: %s\n", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "vtool img serve: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		close(pfd[1]);
		char buf[1024];
		ssize_t n;
		bool errors = false;
		while ((n = read(pfd[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
			if (n > 0) {
				errors = true;
				if (write(STDERR_FILENO, buf, (size_t)n) < 0)
					break;
			}
		}
		_exit(errors ? 1 : 0);
	}
	close(pfd[0]);
	setsid();
	*old_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	dup2(pfd[1], STDERR_FILENO);
	close(pfd[1]);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
	return 0;
}

static void free_bitmaps(struct nbd_bitmap **bms, int n)
{
	for (int i = 0; bms && i < n; i++)
		nbd_bitmap_free(bms[i]);
	free(bms);
}

/* -B's names are freed by the caller. */
static int serve(char **argv, struct serve_opts so)
{
	int r;
	const char *file = argv[optind];
	struct blk_open_opts bo = { .format = so.fmt, .writable = !so.readonly,
	                            .snapshot = so.load_snapshot };
	if (so.cache && blk_cache_parse(so.cache, &bo.cache) < 0)
		return vt_usage_error(argv[0], "Invalid cache mode `%s'", so.cache);
	bool unmap = false;
	if (so.discard) {
		if (!strcmp(so.discard, "unmap") || !strcmp(so.discard, "on"))
			unmap = true;
		else if (strcmp(so.discard, "ignore") && strcmp(so.discard, "off"))
			return vt_usage_error(argv[0], "Invalid discard mode `%s'", so.discard);
	}
	enum nbd_detect_zeroes dz = NBD_DZ_OFF;
	if (so.dz) {
		if (!strcmp(so.dz, "on"))
			dz = NBD_DZ_ON;
		else if (!strcmp(so.dz, "unmap"))
			dz = NBD_DZ_UNMAP;
		else if (strcmp(so.dz, "off"))
			return vt_usage_error(argv[0], "Failed to parse detect_zeroes mode: invalid "
			                      "value '%s'", so.dz);
		if (dz == NBD_DZ_UNMAP && !unmap)
			return vt_usage_error(argv[0], "setting detect-zeroes to unmap is not allowed "
			                      "without setting discard operation to unmap");
	}

	int old_stderr = -1;
	if (so.fork && daemonize(&old_stderr) < 0)
		return 1;

	struct vt_error err = { 0 };
	struct blk *b = NULL;
	int fds[16], nfds = 0;
	int backlog = so.persistent || so.shared == 0 ? SOMAXCONN
	              : so.shared < SOMAXCONN ? so.shared : SOMAXCONN;
	if (so.snapshot)
		r = open_snapshot(file, &bo, &b, &err);
	else
		r = blk_open(file, &bo, &b, &err);
	if (r < 0)
		return img_fail(&err);
	struct nbd_bitmap **bms = calloc((size_t)so.nbitmaps + 1, sizeof(*bms));
	if (!bms)
		r = vt_error_set(&err, ENOMEM, file, "serve", NULL);
	/* The last -B first, as qemu-nbd keeps them (and reports the first failure). */
	for (int i = 0; i < so.nbitmaps && r >= 0; i++)
		r = nbd_bitmap_open(b, so.bitmaps[so.nbitmaps - 1 - i], !so.readonly, &bms[i],
		                    &err);
	if (r < 0) {
		free_bitmaps(bms, so.nbitmaps);
		blk_close(b, NULL);
		return img_fail(&err);
	}
	if (so.sock)
		r = listen_unix(so.sock, backlog, &fds[0], &err);
	else
		r = listen_tcp(so.bind ? so.bind : "127.0.0.1", so.port ? so.port : "10809",
		               backlog, fds, 16, &err);
	if (r < 0) {
		if (so.sock && fds[0] >= 0)
			close(fds[0]);
		free_bitmaps(bms, so.nbitmaps);
		blk_close(b, NULL);
		return img_fail(&err);
	}
	nfds = r;
	if (so.pid_file && write_pid_file(so.pid_file, &err) < 0) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		free_bitmaps(bms, so.nbitmaps);
		blk_close(b, NULL);
		return img_fail(&err);
	}

	uint64_t size = blk_size(b);
	struct nbd_export exp = {
		.blk = b, .name = so.export_name ? so.export_name : "",
		.description = so.description, .size = size, .readonly = so.readonly,
		.multi_conn = so.shared != 1, .discard_unmap = unmap, .detect_zeroes = dz,
		.allocation_depth = so.alloc_depth,
		.bitmaps = bms, .nbitmaps = (size_t)so.nbitmaps,
		/* as qemu-nbd: 512 for raw images (whole sectors), 1 for the others */
		.min_block = !strcmp(blk_format(b), "raw") && size % 512 == 0 ? 512 : 1,
	};
	struct nbd_server_opts o = { .shared = so.shared, .persistent = so.persistent,
	                             .verbose = so.verbose, .workers = so.threads,
	                             .handshake_limit = so.handshake_limit,
	                             .prog = "vtool img serve" };
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (so.fork) { /* listening: let the parent go, keep our own stderr for reports */
		if (old_stderr >= 0) {
			dup2(old_stderr, STDERR_FILENO);
			close(old_stderr);
		}
	}
	r = nbd_server_run(&exp, fds, nfds, &o, &err);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (so.sock)
		unlink(so.sock);
	if (so.pid_file)
		unlink(so.pid_file);
	free_bitmaps(bms, so.nbitmaps);
	struct vt_error cerr = { 0 };
	int cr = blk_close(b, &cerr);
	if (r < 0)
		return img_fail(&err);
	if (cr < 0)
		return img_fail(&cerr);
	return 0;
}

static int serve_main(int argc, char **argv)
{
	struct serve_opts so = { 0 };
	int r = parse(argc, argv, &so);
	if (r == 0)
		r = serve(argv, so);
	free(so.bitmaps);
	return r;
}

const struct vt_command vt_cmd_img_serve = {
	.group = "img",
	.name = "serve",
	.summary = "export an image over NBD (qemu-nbd)",
	.help = serve_help,
	.main = serve_main,
};
