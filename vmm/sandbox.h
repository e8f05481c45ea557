/* vtool run's sandbox: -chroot, -runas and seccomp-BPF allow-lists per thread class. */
#ifndef VTOOL_VMM_SANDBOX_H
#define VTOOL_VMM_SANDBOX_H

enum sandbox_class { SANDBOX_MAIN, SANDBOX_VCPU, SANDBOX_IO, SANDBOX_MONITOR, SANDBOX_VNC,
                     SANDBOX_NR };

/* A thread of this class starts: it takes its filter now (if the sandbox is sealed) or
 * when it is (sandbox_enter). Call first thing on the thread. */
void sandbox_thread(enum sandbox_class c);

#endif
