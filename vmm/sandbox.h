/* vtool run's sandbox: -chroot DIR, -runas USER and seccomp-BPF allow-lists per thread
 * class (-sandbox on, the default except in sanitizer builds), in the manner of qemu's
 * -sandbox and Firecracker's per-thread filters.
 *
 * Order: sandbox_init() before any thread starts (resolves the user, compiles the
 * filters with libseccomp, installs the SIGSYS reporter); every thread names its class
 * first thing (sandbox_thread); run.c calls sandbox_enter() once the first machine is
 * built (/dev/kvm, images, taps, sockets and files open, kept for later boots by
 * keep.c): chroot, drop to the user, then the filters. A filter is inherited by the
 * threads a thread creates and can only narrow, so the main thread (which rebuilds
 * the machine on a reset) carries the union of every class's list; each thread then
 * narrows to its own class (threads that exist at sealing time are told by a signal).
 *
 * A forbidden call kills the whole process (SECCOMP_RET_KILL_PROCESS, exit by SIGSYS)
 * after one line on stderr naming the call, the thread and its class. The lists and why
 * each entry is there: sandbox.c and the README. */
#ifndef VTOOL_VMM_SANDBOX_H
#define VTOOL_VMM_SANDBOX_H

#include <stdbool.h>

#include "util/error.h"
#include "vmm/config.h"

enum sandbox_class {
	SANDBOX_MAIN,     /* builds, rebuilds and tears down machines; waits for them */
	SANDBOX_VCPU,     /* KVM_RUN and the device emulation of exits */
	SANDBOX_IO,       /* virtio queues, IDE jobs, block workers: disk and tap I/O */
	SANDBOX_MONITOR,  /* QMP/HMP sockets, the console's stdin, signals */
	SANDBOX_VNC,      /* the VNC server: its sockets, the VGA's picture, key input */
	SANDBOX_NR
};

/* Whether the sandbox is on for this configuration (-sandbox, or the build's default). */
bool sandbox_enabled(const struct vm_config *cfg);

/* Before any thread: resolve -runas, compile the filters, install the reporter. */
int sandbox_init(const struct vm_config *cfg, struct vt_error *err);

/* Once: -chroot, -runas, then the filters for every thread. */
int sandbox_enter(struct vt_error *err);

/* A thread of class c starts: it takes its filter now (sealed) or at sandbox_enter.
 * Call first thing on the thread; harmless without a sandbox. */
void sandbox_thread(enum sandbox_class c);

/* The test hook: with VTOOL_SANDBOX_TEST=<class> in the environment (io, vcpu,
 * monitor, vnc), a thread of that class makes a forbidden system call here once it is
 * sandboxed. */
void sandbox_selftest(enum sandbox_class c);

#endif
