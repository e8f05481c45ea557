/* host/: can this machine run vtool? The checks behind `vtool host validate` (CPU and
 * KVM modules, /dev/kvm and the capabilities `vtool run` uses, a short probe VM that
 * measures what the host emulates, host networking, image files), and the one-line fix
 * that `vtool run` prints when /dev/kvm fails it.
 *
 * Nothing here changes the host: network checks only read (rtnetlink dumps, nftables
 * lists, /proc/sys), the probe VM lives for a few tens of milliseconds, and the file
 * checks use an unnamed temporary file in the image directory.
 * Used by host/cmd.c (the command) and, for host_kvm_fix, by vmm/run.c. Functions return
 * 0 or a negative errno and fill a struct vt_error; they never print. */
#ifndef VTOOL_HOST_HOST_H
#define VTOOL_HOST_HOST_H

#include <stdbool.h>

#include "util/error.h"

/* A check's verdict. FAIL: `vtool run` cannot work; WARN: something works less well or
 * not at all (networking, firmware boots, speed); NOTE: a fact worth knowing; SKIP: the
 * check could not run because an earlier one failed. */
enum host_result { HOST_PASS, HOST_NOTE, HOST_WARN, HOST_FAIL, HOST_SKIP };

struct host_check {
	const char *group;      /* "cpu", "kvm", "net", "files" */
	const char *name;       /* stable identifier, e.g. "kvm-device-access" */
	char title[80];         /* what is checked, after "Checking ": "for hardware virtualization" */
	enum host_result result;
	char detail[320];       /* what was found; may be empty */
	char fix[512];          /* the one-line fix; non-empty exactly for WARN and FAIL */
};

struct host_report {
	struct host_check *v;
	int n, cap;
	bool oom;               /* a check could not be recorded */
};

struct host_options {
	const char *dir;        /* the image directory of the file checks */
};

/* Run every check into r (which starts zeroed); -ENOMEM is the only failure. */
int host_validate(const struct host_options *o, struct host_report *r, struct vt_error *err);
void host_report_free(struct host_report *r);
/* 1 if any check FAILed, else 2 if any WARNed, else 0. */
int host_report_status(const struct host_report *r);
const char *host_result_name(enum host_result res);

/* The one-line fix for a failure to open or use /dev/kvm with errno err (ENOENT, EACCES,
 * EPERM, ENXIO, ENODEV, EBUSY, ENOTSUP...), for this user and this machine; NULL when
 * there is none to give. The text lives in a static buffer until the next call. */
const char *host_kvm_fix(int err);

/* --- the groups of checks (one file each), called in this order by host_validate ---- */

struct host_check *host_add(struct host_report *r, const char *group, const char *name,
                            const char *title, enum host_result res);
void host_detail(struct host_check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void host_fix(struct host_check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void host_check_cpu(struct host_report *r);              /* cpu.c */
void host_check_kvm(struct host_report *r);              /* kvm.c */
void host_check_net(struct host_report *r);              /* net.c */
void host_check_files(struct host_report *r, const char *dir); /* files.c */

/* cpu.c: an AMD (or Hygon) CPU; /sys/module/NAME exists (loaded or built in); the
 * module that gives this host KVM: kvm_pvm when it is there, else kvm_amd or kvm_intel. */
bool host_cpu_is_amd(void);
bool host_module_present(const char *name);
const char *host_kvm_module(void);
/* The probe VM (probe.c): the instruction rates of a loop in 64-bit long mode at CPL0
 * and at CPL3, and whether KVM_GET_DIRTY_LOG saw the guest's writes. */
struct host_probe {
	double cpl0_ips, cpl3_ips;
	bool dirty_log_ok;      /* KVM_GET_DIRTY_LOG worked ... */
	bool dirty_log_seen;    /* ... and showed the page the guest wrote */
};
int host_probe_run(int kvm_fd, struct host_probe *p, struct vt_error *err);

#endif
