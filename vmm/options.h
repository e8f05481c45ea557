/* The pieces of vtool run's command-line parser, shared by its files and by nothing else:
 *   options.c        the machine's options (memory, CPUs, boot, devices, disks, network)
 *   options_smp.c    -smp with qemu's topology rules and messages
 *   options_ctl.c    vtool run as a managed process: -qmp, -monitor, -mon, socket and
 *                    stdio chardevs, -S, -sandbox, -runas, -chroot, -help, -version
 *   options_qemu.c   every option name qemu-system-x86_64 knows: "not supported yet" for
 *                    those vtool lacks, "invalid option" with a nearest-match hint (and
 *                    glued forms such as -nettap,... spelled out) for the rest
 * Only vm_config_parse()/vm_config_check() (config.h) are public. */
#ifndef VTOOL_VMM_OPTIONS_H
#define VTOOL_VMM_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"
#include "vmm/config.h"

#define MAX_KV 24

struct kv {
	char *key, *val;
};

/* Split "a=b,c=d" in place (",," is a literal comma); a first item without "=" gets the
 * key first_key. Returns the number of pairs, or -1 if there are too many. */
int kv_split(char *s, const char *first_key, struct kv *kv);
int parse_bool(const char *v, bool *out);
int parse_uint(const char *v, unsigned long max, unsigned long *out);
/* Fill err with "<opt>: <why>" (EINVAL) and return -EINVAL. */
int bad(struct vt_error *err, const char *opt, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* options.c: is name (without dashes) one of its options, and does it take an argument? */
bool vm_machine_option(const char *name, bool *has_arg);

/* options_smp.c */
int opt_smp_parse(struct vm_config *cfg, char *arg, struct vt_error *err);
/* The most vCPUs a "pc" machine of vtool has (qemu's "max CPUs supported by machine"). */
int vm_max_vcpus(void);

/* options_ctl.c: returns 1 and sets *has_arg if name is one of its options, else 0. */
int ctl_option(const char *name, bool *has_arg);
int ctl_apply(struct vm_config *cfg, const char *name, const char *opt, char *arg,
              struct vt_error *err);
/* -chardev socket,... / -chardev stdio,...: the backends monitors use. */
int ctl_chardev(struct vm_config *cfg, struct kv *kv, int n, struct vt_error *err);
/* After parsing: resolve -mon chardev=ID, apply defaults (-nographic's mux). */
int ctl_check(const struct vm_config *cfg, struct vt_error *err);

/* options_qemu.c: the error for an option name neither table knows (arg as typed). */
int qemu_option_unknown(const char *arg, struct vt_error *err);
/* Is -name one of qemu-system-x86_64's options? has_arg: does it take an argument? */
bool qemu_option_known(const char *name, bool *has_arg);

#endif
