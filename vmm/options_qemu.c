/* Every option name qemu-system-x86_64 knows, and what vtool says about those it lacks.
 *
 * The table is qemu 7.2's (Debian 12's peer; `qemu-system-x86_64 -help` plus -M, minus
 * the options qemu refuses for x86). It is the one list: `vtool run --help` prints the
 * names vtool lacks from it, an option vtool lacks gets "not supported yet", and a name
 * qemu does not know either gets "invalid option" with the nearest name (edit distance)
 * or, for a glued option such as -nettap,ifname=tap0 or -cdromX.iso, the spelled-out
 * form. Options qemu removed that tutorials still show get their replacement. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/options.h"

static const struct qemu_opt {
	const char *name;
	bool has_arg;
} qemu_opts[] = {
	{ "preconfig", false }, { "D", true }, { "L", true }, { "M", true }, { "S", false },
	{ "accel", true }, { "acpitable", true }, { "action", true }, { "add-fd", true },
	{ "append", true }, { "async-teardown", false }, { "audio", true },
	{ "audio-help", false }, { "audiodev", true }, { "bios", true }, { "blockdev", true },
	{ "boot", true }, { "cdrom", true }, { "chardev", true }, { "chroot", true },
	{ "compat", true }, { "cpu", true }, { "d", true }, { "daemonize", false },
	{ "debugcon", true }, { "device", true }, { "dfilter", true }, { "display", true },
	{ "drive", true }, { "dtb", true }, { "dump-vmstate", true }, { "echr", true },
	{ "enable-kvm", false }, { "enable-sync-profile", false }, { "fda", true },
	{ "fdb", true }, { "fsdev", true }, { "full-screen", false }, { "fw_cfg", true },
	{ "gdb", true }, { "global", true }, { "h", false }, { "hda", true }, { "hdb", true },
	{ "hdc", true }, { "hdd", true }, { "help", false }, { "icount", true },
	{ "incoming", true }, { "initrd", true }, { "iscsi", true }, { "k", true },
	{ "kernel", true }, { "loadvm", true }, { "m", true }, { "machine", true },
	{ "mem-path", true }, { "mem-prealloc", false }, { "mon", true }, { "monitor", true },
	{ "msg", true }, { "mtdblock", true }, { "name", true }, { "net", true },
	{ "netdev", true }, { "nic", true }, { "no-acpi", false }, { "no-fd-bootchk", false },
	{ "no-hpet", false }, { "no-reboot", false }, { "no-shutdown", false },
	{ "no-user-config", false }, { "nodefaults", false }, { "nographic", false },
	{ "numa", true }, { "object", true }, { "only-migratable", false },
	{ "option-rom", true }, { "overcommit", true }, { "parallel", true },
	{ "pflash", true }, { "pidfile", true }, { "plugin", true }, { "portrait", false },
	{ "qmp", true }, { "qmp-pretty", true }, { "qtest", true }, { "qtest-log", true },
	{ "readconfig", true }, { "rotate", true }, { "rtc", true }, { "runas", true },
	{ "s", false }, { "sandbox", true }, { "sd", true }, { "seed", true },
	{ "serial", true }, { "set", true }, { "singlestep", false }, { "smbios", true },
	{ "smp", true }, { "snapshot", false }, { "spice", true }, { "tpmdev", true },
	{ "trace", true }, { "usb", false }, { "usbdevice", true }, { "uuid", true },
	{ "version", false }, { "vga", true }, { "virtfs", true }, { "vnc", true },
	{ "watchdog-action", true }, { "win2k-hack", false }, { "xen-attach", false },
	{ "xen-domid", true }, { "xen-domid-restrict", false },
};

/* Options qemu itself no longer knows, with what replaced them. */
static const struct {
	const char *name, *instead;
} removed_opts[] = {
	{ "localtime", "-rtc base=localtime" },
	{ "no-kvm", "nothing: vtool always uses KVM" },
	{ "soundhw", "-audio" },
	{ "tdf", "-rtc driftfix=slew" },
	{ "sdl", "-display sdl" },
	{ "curses", "-display curses" },
	{ "alt-grab", "-display sdl,grab-mod=lshift-lctrl-lalt" },
	{ "ctrl-grab", "-display sdl,grab-mod=rctrl" },
	{ "no-quit", "-display ...,window-close=off" },
	{ "show-cursor", "-display ...,show-cursor=on" },
	{ "realtime", "-overcommit mem-lock=on" },
	{ "virtioconsole", "-device virtconsole" },
	{ "watchdog", "-device" },
	{ "balloon", "-device virtio-balloon" },
	{ "enable-nesting", "nothing: nested virtualisation follows the host" },
};

#define NQEMU (sizeof(qemu_opts) / sizeof(qemu_opts[0]))

bool qemu_option_known(const char *name, bool *has_arg)
{
	for (size_t i = 0; i < NQEMU; i++)
		if (!strcmp(qemu_opts[i].name, name)) {
			if (has_arg)
				*has_arg = qemu_opts[i].has_arg;
			return true;
		}
	return false;
}

static bool vtool_knows(const char *name)
{
	bool a;

	return vm_machine_option(name, &a) || ctl_option(name, &a);
}

void vm_options_unsupported_list(char *buf, size_t len, int indent)
{
	size_t n = strlen(buf);
	int col = 0;

	for (size_t i = 0; i < NQEMU; i++) {
		const char *name = qemu_opts[i].name;
		if (vtool_knows(name))
			continue;
		int w = (int)strlen(name) + 1;
		if (col && col + 2 + w > 88 - indent) {
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, ",\n");
			col = 0;
		} else if (col) {
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, ", ");
			col += 2;
		}
		if (!col)
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%*s", indent, "");
		n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "-%s", name);
		col += w;
	}
	snprintf(buf + n, n < len ? len - n : 0, "\n");
}

void vm_options_accepted(FILE *f)
{
	for (size_t i = 0; i < NQEMU; i++)
		if (vtool_knows(qemu_opts[i].name))
			fprintf(f, "-%s\n", qemu_opts[i].name);
}

/* Optimal string alignment distance (edits, with adjacent swaps counting one). */
static size_t edit_distance(const char *a, size_t la, const char *b)
{
	size_t lb = strlen(b);
	enum { MAXL = 40 };
	size_t d[MAXL + 1][MAXL + 1];

	if (la > MAXL || lb > MAXL)
		return (size_t)-1;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] != b[j - 1];
			size_t v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v)
				v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[la][lb];
}

/* "-nettap,ifname=tap0" is "-net" glued to its argument: the longest option name taking
 * an argument that name starts with, when the rest looks like an argument: it holds a
 * separator or starts with a digit, or (after a name longer than one letter) is a word
 * of three letters or more. */
static const char *glued_option(const char *name)
{
	const char *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < NQEMU; i++) {
		const char *o = qemu_opts[i].name;
		size_t l = strlen(o);
		if (!qemu_opts[i].has_arg || l <= best_len || strncmp(name, o, l) || !name[l])
			continue;
		const char *rest = name + l;
		bool argish = strpbrk(rest, ",=./:") || (rest[0] >= '0' && rest[0] <= '9') ||
		              (l > 1 && strlen(rest) >= 3);
		if (argish) {
			best = o;
			best_len = l;
		}
	}
	return best;
}

int qemu_option_unknown(const char *arg, struct vt_error *err)
{
	const char *name = arg + 1 + (arg[1] == '-');

	if (qemu_option_known(name, NULL))
		return vt_error_set(err, ENOTSUP, arg, NULL, "not supported yet: -%s", name);
	for (size_t i = 0; i < sizeof(removed_opts) / sizeof(removed_opts[0]); i++)
		if (!strcmp(removed_opts[i].name, name))
			return vt_error_set(err, ENOTSUP, arg, NULL,
			                    "not supported (qemu removed it too; instead: %s)",
			                    removed_opts[i].instead);
	/* The nearest name, judged on the part before any argument-like tail. */
	size_t len = strcspn(name, ",=");
	size_t best = (size_t)-1;
	const char *near = NULL;
	for (size_t i = 0; i < NQEMU; i++) {
		size_t d = edit_distance(name, len, qemu_opts[i].name);
		/* vtool's own options win ties: they are the useful suggestion. */
		if (d < best || (d == best && near && !vtool_knows(near) &&
		                 vtool_knows(qemu_opts[i].name))) {
			best = d;
			near = qemu_opts[i].name;
		}
	}
	/* One typo beats a glued reading (-kernal is -kernel, not -k ernal). */
	const char *glued = best == 1 ? NULL : glued_option(name);
	if (glued)
		return vt_error_set(err, EINVAL, arg, NULL, "invalid option; did you mean '-%s %s'?",
		                    glued, name + strlen(glued));
	size_t limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
	if (near && best > 0 && best <= limit)
		return vt_error_set(err, EINVAL, arg, NULL, "invalid option; did you mean '-%s'?",
		                    near);
	return vt_error_set(err, EINVAL, arg, NULL, "invalid option");
}
