/* The options of vtool run as a managed process, with qemu's syntax:
 *   -qmp DEV, -qmp-pretty DEV      a QMP (JSON) monitor on DEV
 *   -monitor DEV                   an HMP (text) monitor on DEV ("none": no monitor)
 *   -mon [chardev=]ID[,mode=readline|control][,pretty=on|off]
 *   -chardev socket,id=ID,path=P|host=H,port=N[,server=on][,wait=off]
 *   -chardev stdio,id=ID
 *   -S, -sandbox on|off[,...], -runas USER, -chroot DIR, -help, -version
 * DEV is qemu's short chardev syntax: unix:PATH[,server=on|off][,wait=on|off] (also the
 * old ",server,nowait"), tcp:[HOST]:PORT[,...], stdio, none. Only listening sockets
 * (server=on) are supported: a monitor that connects out is "not supported yet". */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/options.h"

enum ctl_id { C_QMP, C_QMP_PRETTY, C_MONITOR, C_MON, C_S, C_SANDBOX, C_RUNAS, C_CHROOT,
              C_HELP, C_VERSION };

static const struct {
	const char *name;
	enum ctl_id id;
	bool has_arg;
} ctl_opts[] = {
	{ "qmp", C_QMP, true }, { "qmp-pretty", C_QMP_PRETTY, true },
	{ "monitor", C_MONITOR, true }, { "mon", C_MON, true }, { "S", C_S, false },
	{ "sandbox", C_SANDBOX, true }, { "runas", C_RUNAS, true }, { "chroot", C_CHROOT, true },
	{ "help", C_HELP, false }, { "h", C_HELP, false }, { "version", C_VERSION, false },
};

int ctl_option(const char *name, bool *has_arg)
{
	for (size_t i = 0; i < sizeof(ctl_opts) / sizeof(ctl_opts[0]); i++)
		if (!strcmp(ctl_opts[i].name, name)) {
			*has_arg = ctl_opts[i].has_arg;
			return 1;
		}
	return 0;
}

static int add_chardev(struct vm_config *cfg, const char *opt, struct vm_sock_chardev **out,
                       struct vt_error *err)
{
	struct vm_ctl_config *c = &cfg->ctl;

	if (c->nr_chardevs == VM_MAX_SOCK_CHARDEVS)
		return bad(err, opt, "too many monitor character devices");
	*out = &c->chardevs[c->nr_chardevs++];
	**out = (struct vm_sock_chardev){ .wait = true };
	return 0;
}

/* server=, wait=, nodelay= and the old bare "server" / "nowait" flags. */
static int socket_flags(const char *opt, struct kv *kv, int n, int first, bool *server,
                        struct vm_sock_chardev *ch, struct vt_error *err)
{
	for (int i = first; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].val;
		bool b;
		if (!strcmp(k, "nowait")) {
			ch->wait = false;
		} else if (!strcmp(k, "server") || !strcmp(k, "wait") || !strcmp(k, "nodelay")) {
			if (parse_bool(v, &b))
				return bad(err, opt, "Parameter '%s' expects 'on' or 'off'", k);
			if (!strcmp(k, "server"))
				*server = b;
			else if (!strcmp(k, "wait"))
				ch->wait = b;
			/* nodelay: monitor sockets always have TCP_NODELAY */
		} else if (strcmp(k, "id") && strcmp(k, "path") && strcmp(k, "host") &&
		           strcmp(k, "port")) {
			return bad(err, opt, "Invalid parameter '%s'", k);
		}
	}
	if (!*server)
		return vt_error_set(err, ENOTSUP, opt, NULL, "not supported yet: a monitor socket "
		                    "that connects out (give server=on)");
	return 0;
}

/* qemu's short form: unix:PATH,... | tcp:HOST:PORT,... | stdio. */
static int parse_dev(struct vm_config *cfg, const char *opt, char *spec, int *index,
                     struct vt_error *err)
{
	struct vm_sock_chardev *ch = NULL;
	struct kv kv[MAX_KV];
	bool server = false;

	if (!strcmp(spec, "stdio") || !strcmp(spec, "mon:stdio")) {
		if (add_chardev(cfg, opt, &ch, err))
			return -EINVAL;
		ch->kind = VM_CHR_STDIO;
		*index = cfg->ctl.nr_chardevs - 1;
		return 0;
	}
	bool is_unix = !strncmp(spec, "unix:", 5), is_tcp = !strncmp(spec, "tcp:", 4);
	if (!is_unix && !is_tcp)
		return vt_error_set(err, ENOTSUP, opt, NULL, "not supported yet: character device "
		                    "'%s' (unix:PATH,server=on,wait=off, tcp:HOST:PORT,server=on,"
		                    "wait=off or stdio)", spec);
	int n = kv_split(spec + (is_unix ? 5 : 4), "addr", kv);
	if (n <= 0 || !kv[0].val[0])
		return bad(err, opt, "missing address in '%s'", spec);
	if (add_chardev(cfg, opt, &ch, err))
		return -EINVAL;
	if (is_unix) {
		ch->kind = VM_CHR_SOCKET_UNIX;
		ch->path = kv[0].val;
	} else {
		char *colon = strrchr(kv[0].val, ':');
		if (!colon || !colon[1])
			return bad(err, opt, "tcp: needs HOST:PORT, got '%s'", kv[0].val);
		*colon = '\0';
		ch->kind = VM_CHR_SOCKET_TCP;
		ch->host = kv[0].val[0] ? kv[0].val : "0.0.0.0";
		ch->port = colon + 1;
	}
	if (socket_flags(opt, kv, n, 1, &server, ch, err))
		return -EINVAL;
	*index = cfg->ctl.nr_chardevs - 1;
	return 0;
}

int ctl_chardev(struct vm_config *cfg, struct kv *kv, int n, struct vt_error *err)
{
	struct vm_sock_chardev *ch = NULL;
	bool server = false;
	const char *backend = kv[0].val;

	if (add_chardev(cfg, "-chardev", &ch, err))
		return -EINVAL;
	for (int i = 1; i < n; i++) {
		if (!strcmp(kv[i].key, "id"))
			ch->id = kv[i].val;
		else if (!strcmp(kv[i].key, "path"))
			ch->path = kv[i].val;
		else if (!strcmp(kv[i].key, "host"))
			ch->host = kv[i].val;
		else if (!strcmp(kv[i].key, "port"))
			ch->port = kv[i].val;
	}
	if (!ch->id)
		return bad(err, "-chardev", "%s: Parameter 'id' is missing", backend);
	for (int i = 0; i < cfg->ctl.nr_chardevs - 1; i++)
		if (cfg->ctl.chardevs[i].id && !strcmp(cfg->ctl.chardevs[i].id, ch->id))
			return bad(err, "-chardev", "Duplicate ID '%s' for chardev", ch->id);
	if (!strcmp(backend, "stdio")) {
		for (int i = 1; i < n; i++)
			if (strcmp(kv[i].key, "id") && strcmp(kv[i].key, "signal"))
				return bad(err, "-chardev", "stdio: Invalid parameter '%s'", kv[i].key);
		ch->kind = VM_CHR_STDIO;
		return 0;
	}
	if (ch->path && (ch->host || ch->port))
		return bad(err, "-chardev", "socket: give path= or host=/port=, not both");
	if (!ch->path && !ch->port)
		return bad(err, "-chardev", "socket: needs path= or port=");
	ch->kind = ch->path ? VM_CHR_SOCKET_UNIX : VM_CHR_SOCKET_TCP;
	if (ch->kind == VM_CHR_SOCKET_TCP && !ch->host)
		ch->host = "0.0.0.0";
	return socket_flags("-chardev", kv, n, 1, &server, ch, err);
}

static int add_monitor(struct vm_config *cfg, const char *opt, int chardev, const char *id,
                       bool qmp, bool pretty, struct vt_error *err)
{
	struct vm_ctl_config *c = &cfg->ctl;

	if (c->nr_monitors == VM_MAX_MONITORS)
		return bad(err, opt, "too many monitors (at most %d)", VM_MAX_MONITORS);
	c->monitors[c->nr_monitors++] = (struct vm_monitor){ .chardev_id = id,
	                                                     .chardev = chardev, .qmp = qmp,
	                                                     .pretty = pretty };
	return 0;
}

static int opt_mon(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	const char *id = NULL;
	bool qmp = false, pretty = false;
	int n = kv_split(arg, "chardev", kv);

	if (n < 0)
		return bad(err, "-mon", "too many parameters");
	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].val;
		if (!strcmp(k, "chardev")) {
			id = v;
		} else if (!strcmp(k, "mode")) {
			if (strcmp(v, "control") && strcmp(v, "readline"))
				return bad(err, "-mon", "unknown monitor mode '%s'", v);
			qmp = !strcmp(v, "control");
		} else if (!strcmp(k, "pretty")) {
			if (parse_bool(v, &pretty))
				return bad(err, "-mon", "Parameter 'pretty' expects 'on' or 'off'");
		} else {
			return bad(err, "-mon", "Invalid parameter '%s'", k);
		}
	}
	if (!id)
		return bad(err, "-mon", "Parameter 'chardev' is missing");
	return add_monitor(cfg, "-mon", -1, id, qmp, pretty, err);
}

static int opt_sandbox(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	bool on;
	int n = kv_split(arg, "enable", kv);

	if (n <= 0)
		return bad(err, "-sandbox", "expects on or off");
	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].val;
		if (!strcmp(k, "enable")) {
			if (parse_bool(v, &on))
				return bad(err, "-sandbox", "Parameter 'enable' expects 'on' or 'off'");
			cfg->ctl.sandbox = on;
		} else if (!strcmp(k, "obsolete") || !strcmp(k, "elevateprivileges") ||
		           !strcmp(k, "spawn") || !strcmp(k, "resourcecontrol")) {
			/* vtool's filters are allow-lists: every one of these classes is denied. */
			if (strcmp(v, "deny"))
				return vt_error_set(err, ENOTSUP, "-sandbox", NULL, "not supported: "
				                    "%s=%s (vtool's sandbox is an allow-list; it always "
				                    "denies these system calls)", k, v);
		} else {
			return bad(err, "-sandbox", "Invalid parameter '%s'", k);
		}
	}
	return 0;
}

int ctl_apply(struct vm_config *cfg, const char *name, const char *opt, char *arg,
              struct vt_error *err)
{
	enum ctl_id id = C_HELP;
	int ch;

	for (size_t i = 0; i < sizeof(ctl_opts) / sizeof(ctl_opts[0]); i++)
		if (!strcmp(ctl_opts[i].name, name))
			id = ctl_opts[i].id;
	switch (id) {
	case C_QMP: case C_QMP_PRETTY: case C_MONITOR:
		cfg->ctl.monitor_given |= id == C_MONITOR;
		if (!strcmp(arg, "none") || !strcmp(arg, "null"))
			return 0;
		if (parse_dev(cfg, opt, arg, &ch, err))
			return -EINVAL;
		return add_monitor(cfg, opt, ch, NULL, id != C_MONITOR, id == C_QMP_PRETTY, err);
	case C_MON:
		cfg->ctl.monitor_given = true;
		return opt_mon(cfg, arg, err);
	case C_S:
		cfg->ctl.start_paused = true;
		return 0;
	case C_SANDBOX:
		return opt_sandbox(cfg, arg, err);
	case C_RUNAS:
		cfg->ctl.runas = arg;
		return 0;
	case C_CHROOT:
		cfg->ctl.chroot_dir = arg;
		return 0;
	case C_HELP:
		cfg->ctl.want_help = true;
		return 0;
	case C_VERSION:
		cfg->ctl.want_version = true;
		return 0;
	}
	return 0;
}

int ctl_check(const struct vm_config *cfg, struct vt_error *err)
{
	struct vm_ctl_config *c = (struct vm_ctl_config *)&cfg->ctl;
	int stdio_users = cfg->serial == VM_SERIAL_STDIO ? 1 : 0;

	for (int i = 0; i < c->nr_monitors; i++) {
		struct vm_monitor *m = &c->monitors[i];
		if (m->chardev_id) {
			m->chardev = -1;
			for (int k = 0; k < c->nr_chardevs; k++)
				if (c->chardevs[k].id && !strcmp(c->chardevs[k].id, m->chardev_id))
					m->chardev = k;
			if (m->chardev < 0)
				return vt_error_set(err, EINVAL, "-mon", NULL, "chardev '%s' not found "
				                    "(give -chardev socket,id=%s,path=PATH,server=on,"
				                    "wait=off)", m->chardev_id, m->chardev_id);
		}
		for (int k = 0; k < i; k++)
			if (c->monitors[k].chardev == m->chardev)
				return vt_error_set(err, EBUSY, "-mon", NULL, "chardev '%s' is already "
				                    "used by another monitor", m->chardev_id ?
				                    m->chardev_id : "(from -qmp/-monitor)");
		if (c->chardevs[m->chardev].kind == VM_CHR_STDIO)
			stdio_users++;
	}
	if (stdio_users > 1)
		return vt_error_set(err, EBUSY, "stdio", NULL, "cannot use stdio by multiple "
		                    "character devices (the serial port is on stdio: give -serial "
		                    "none or -serial file:PATH, or -serial mon:stdio to share it "
		                    "and switch with C-a c)");
	/* -nographic puts qemu's default monitor on stdio, muxed with the serial port. */
	if (cfg->nographic && cfg->serial == VM_SERIAL_STDIO && !c->monitor_given &&
	    !cfg->nodefaults)
		c->mon_stdio_mux = true;
	if (cfg->serial != VM_SERIAL_STDIO)
		c->mon_stdio_mux = false;
	if (c->runas && !getpwnam(c->runas)) {
		char *end;
		unsigned long uid = strtoul(c->runas, &end, 10);
		if (end == c->runas || (*end && *end != ':') || uid > 0xfffffffe)
			return vt_error_set(err, EINVAL, "-runas", NULL, "User \"%s\" doesn't exist",
			                    c->runas);
	}
	return 0;
}
