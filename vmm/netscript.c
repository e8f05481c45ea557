/* -net tap,script=/downscript= (netscript.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm/netscript.h"

/* Run script with the tap's name as its one argument (qemu's convention); returns its
 * wait status, or -errno if it could not start. */
static int run_script(const char *script, const char *ifname)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char *argv[] = { (char *)script, (char *)ifname, NULL };
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		execv(script, argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return status;
}

/* The helper: holds the read end of a pipe whose write end only vtool has; EOF means
 * vtool is gone. Then it runs the downscripts and exits. */
static void downscript_helper(const struct vm_config *cfg, int rfd)
{
	char buf[16];

	prctl(PR_SET_NAME, "vtool-ifdown", 0, 0, 0);
	prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
	/* Signals for the whole job (Ctrl-C, a harness's TERM) end vtool; the helper
	 * outlives it by the time the scripts take. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	while (read(rfd, buf, sizeof(buf)) != 0)
		if (errno != EINTR)
			break;
	for (int i = 0; i < cfg->nr_nics; i++) {
		const struct vm_nic *n = &cfg->nics[i];
		if (!n->model || !n->ifname || !n->downscript || !n->downscript[0])
			continue;
		int st = run_script(n->downscript, n->ifname);
		if (st != 0)
			fprintf(stderr, "vtool: %s: network script for '%s' failed with status %d\n",
			        n->downscript, n->ifname, st < 0 ? st : WIFEXITED(st) ? WEXITSTATUS(st)
			                                                             : 128 + WTERMSIG(st));
	}
	_exit(0);
}

int netscript_up(const struct vm_config *cfg, struct vt_error *err)
{
	bool down = false;

	for (int i = 0; i < cfg->nr_nics; i++) {
		const struct vm_nic *n = &cfg->nics[i];
		if (!n->model || !n->ifname)
			continue;
		down |= n->downscript && n->downscript[0];
		if (!n->script || !n->script[0])
			continue;
		int st = run_script(n->script, n->ifname);
		if (st < 0)
			return vt_error_set(err, -st, n->script, "run network script", NULL);
		if (st != 0)
			return vt_error_set(err, EIO, n->script, NULL, "network script for '%s' failed "
			                    "with status %d (give script=no if the tap is ready, e.g. made "
			                    "by 'vtool net tap')", n->ifname,
			                    WIFEXITED(st) ? WEXITSTATUS(st) == 127 ? 127 :
			                    WEXITSTATUS(st) : 128 + WTERMSIG(st));
	}
	if (!down)
		return 0;
	int p[2];
	if (pipe(p) < 0)
		return vt_error_set(err, errno, "downscript", "start helper", NULL);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return vt_error_set(err, errno, "downscript", "start helper", NULL);
	}
	if (pid == 0) {
		/* Keep stdio and the pipe; drop the VM's descriptors (images, taps, KVM). */
		close(p[1]);
		if (p[0] != 3) {
			dup2(p[0], 3);
			close(p[0]);
		}
		close_range(4, ~0u, 0);
		downscript_helper(cfg, 3);
	}
	close(p[0]);
	fcntl(p[1], F_SETFD, FD_CLOEXEC); /* kept open for vtool's life on purpose */
	return 0;
}
