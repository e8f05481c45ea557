/* qemu-system-x86_64's command line -> struct vm_config.
 *
 * qemu's rules: an option is "-name" or "--name", takes zero or one argument, and an
 * argument of the form "key=value,key=value" names sub-options (",," is a literal comma).
 * A leading bare value ("-netdev tap,id=n0", "-m 2G,slots=2") is the implied first key. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "util/size.h"
#include "vmm/config.h"
#include "vmm/options.h"
#include "vmm/ui/display.h"

/* Split a sub-option string in place. The first item may lack "=": its key is
 * first_key. Returns the number of pairs or -1 if there are too many. */
int kv_split(char *s, const char *first_key, struct kv *kv)
{
	int n = 0;

	while (*s) {
		if (n == MAX_KV)
			return -1;
		char *item = s, *w = s;
		/* Copy down while collapsing ",," so the value may contain commas. */
		for (; *s; s++) {
			if (*s == ',' && s[1] == ',') {
				*w++ = ',';
				s++;
			} else if (*s == ',') {
				s++;
				break;
			} else {
				*w++ = *s;
			}
		}
		bool at_end = (*s == '\0');
		*w = '\0';
		char *eq = strchr(item, '=');
		if (eq) {
			*eq = '\0';
			kv[n] = (struct kv){ item, eq + 1 };
		} else if (n == 0 && first_key) {
			kv[n] = (struct kv){ (char *)first_key, item };
		} else {
			kv[n] = (struct kv){ item, (char *)"on" };
		}
		n++;
		if (at_end)
			break;
	}
	return n;
}

int bad(struct vt_error *err, const char *opt, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return vt_error_set(err, EINVAL, opt, NULL, "%s", why);
}

int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true"))
		*out = true;
	else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false"))
		*out = false;
	else
		return -1;
	return 0;
}

int parse_uint(const char *v, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	unsigned long x = strtoul(v, &end, 0);
	if (errno || end == v || *end || x > max || v[0] == '-')
		return -1;
	*out = x;
	return 0;
}

static int opt_m(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "size", kv);

	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "size")) {
			uint64_t sz;
			if (vt_size_parse(kv[i].val, 1ull << 20, &sz) || sz == 0)
				return bad(err, "-m", "invalid RAM size '%s'", kv[i].val);
			cfg->ram_size = sz;
		} else if (!strcmp(kv[i].key, "slots") || !strcmp(kv[i].key, "maxmem")) {
			return vt_error_set(err, ENOTSUP, "-m", NULL, "not supported yet: %s= "
			                    "(memory hot-plug)", kv[i].key);
		} else {
			return bad(err, "-m", "unknown parameter '%s'", kv[i].key);
		}
	}
	return n < 0 ? bad(err, "-m", "too many parameters%s", "") : 0;
}

static int opt_cpu(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "model", kv);

	if (n < 0)
		return bad(err, "-cpu", "too many parameters%s", "");
	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "model")) {
			cfg->cpu_model = kv[i].val;
			continue;
		}
		if (cfg->nr_cpu_edits == VM_MAX_CPU_EDITS)
			return bad(err, "-cpu", "too many feature changes%s", "");
		struct vm_cpu_edit *e = &cfg->cpu_edits[cfg->nr_cpu_edits++];
		/* "+feat" / "-feat" arrive as keys with the implied value "on". */
		if (kv[i].key[0] == '+' || kv[i].key[0] == '-') {
			e->name = kv[i].key + 1;
			e->enable = kv[i].key[0] == '+';
		} else {
			e->name = kv[i].key;
			if (parse_bool(kv[i].val, &e->enable))
				return bad(err, "-cpu", "invalid value for feature: '%s'", kv[i].val);
		}
	}
	return 0;
}

static struct vm_drive *drive_by_id(struct vm_config *cfg, const char *id)
{
	for (int i = 0; i < cfg->nr_drives; i++)
		if (cfg->drives[i].id && !strcmp(cfg->drives[i].id, id))
			return &cfg->drives[i];
	return NULL;
}

/* -device ide-hd|ide-cd|virtio-blk-pci,drive=ID[,bus=ide.N][,unit=U][,bootindex=N]: puts
 * a -drive if=none,id=ID on that controller. */
static int opt_device_drive(struct vm_config *cfg, const char *drv, struct kv *kv, int n,
                            struct vt_error *err)
{
	struct vm_drive *d = NULL;
	long bus = -1, unit = -1, bootindex = -1;
	unsigned long v;
	const char *dev_id = NULL, *serial = NULL;

	for (int i = 1; i < n; i++) {
		const char *k = kv[i].key, *val = kv[i].val;
		if (!strcmp(k, "drive")) {
			if (!(d = drive_by_id(cfg, val)))
				return bad(err, "-device", "%s: drive '%s' not found (give -drive if=none,id=%s,...)",
				           drv, val, val);
		} else if (!strcmp(k, "bootindex") && !parse_uint(val, 0x7fffffff, &v)) {
			bootindex = (long)v;
		} else if (!strcmp(k, "bus") && !strncmp(val, "ide.", 4) &&
		           !parse_uint(val + 4, 1, &v)) {
			bus = (long)v;
		} else if (!strcmp(k, "unit") && !parse_uint(val, 1, &v)) {
			unit = (long)v;
		} else if (!strcmp(k, "id")) {
			dev_id = val;
		} else if (!strcmp(k, "serial")) {
			serial = val;
		} else {
			return bad(err, "-device", "%s: bad parameter '%s'", drv, k);
		}
	}
	if (!d)
		return bad(err, "-device", "%s: drive= is required", drv);
	d->dev_id = dev_id;
	d->serial = serial;
	if (d->interface != VM_DRIVE_NONE)
		return bad(err, "-device", "%s: drive '%s' is already attached", drv, d->id);
	d->option = "-device";
	d->bootindex = (int)bootindex;
	if (!strncmp(drv, "virtio", 6)) {
		d->interface = VM_DRIVE_VIRTIO;
		return 0;
	}
	d->interface = VM_DRIVE_IDE;
	if (!strcmp(drv, "ide-cd"))
		d->media = VM_MEDIA_CDROM;
	if (bus >= 0)
		d->index = (int)(bus * 2 + (unit > 0 ? unit : 0));
	return 0;
}

static int opt_device(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "driver", kv);
	unsigned long v;

	if (n <= 0)
		return bad(err, "-device", "missing device name%s", "");
	const char *drv = kv[0].val;
	if (!strcmp(drv, "isa-debug-exit")) {
		cfg->debug_exit = true;
		cfg->debug_exit_port = 0x501;
		cfg->debug_exit_size = 2;
		for (int i = 1; i < n; i++) {
			if (parse_uint(kv[i].val, 0xffff, &v))
				return bad(err, "-device", "invalid value '%s'", kv[i].val);
			if (!strcmp(kv[i].key, "iobase"))
				cfg->debug_exit_port = (uint16_t)v;
			else if (!strcmp(kv[i].key, "iosize") && (v == 1 || v == 2 || v == 4))
				cfg->debug_exit_size = (uint16_t)v;
			else
				return bad(err, "-device", "isa-debug-exit: bad parameter '%s'",
				           kv[i].key);
		}
		return 0;
	}
	if (!strcmp(drv, "virtio-net-pci") || !strcmp(drv, "virtio-net")) {
		if (cfg->nr_nics == VM_MAX_NICS)
			return bad(err, "-device", "too many network cards%s", "");
		struct vm_nic *nic = &cfg->nics[cfg->nr_nics++];
		*nic = (struct vm_nic){ .model = "virtio", .option = "-device", .bootindex = -1 };
		for (int i = 1; i < n; i++) {
			if (!strcmp(kv[i].key, "netdev"))
				nic->id = kv[i].val;
			else if (!strcmp(kv[i].key, "mac")) {
				if (net_mac_parse(kv[i].val, nic->mac))
					return bad(err, "-device", "invalid MAC address '%s'", kv[i].val);
				nic->has_mac = true;
			} else if (!strcmp(kv[i].key, "bootindex")) {
				if (parse_uint(kv[i].val, 0x7fffffff, &v))
					return bad(err, "-device", "invalid bootindex '%s'", kv[i].val);
				nic->bootindex = (int)v;
			} else if (strcmp(kv[i].key, "id")) {
				return bad(err, "-device", "%s: bad parameter '%s'", drv, kv[i].key);
			}
		}
		return 0;
	}
	if (!strcmp(drv, "isa-debugcon")) {
		for (int i = 1; i < n; i++) {
			if (!strcmp(kv[i].key, "chardev")) {
				cfg->debugcon_chardev = kv[i].val;
			} else if (!strcmp(kv[i].key, "iobase") && !parse_uint(kv[i].val, 0xffff, &v)) {
				cfg->debugcon_port = (uint16_t)v;
			} else {
				return bad(err, "-device", "isa-debugcon: bad parameter '%s'", kv[i].key);
			}
		}
		return 0;
	}
	if (!strcmp(drv, "ide-hd") || !strcmp(drv, "ide-cd") || !strcmp(drv, "ide-drive") ||
	    !strcmp(drv, "virtio-blk-pci") || !strcmp(drv, "virtio-blk"))
		return opt_device_drive(cfg, drv, kv, n, err);
	if (!cfg->unsupported)
		cfg->unsupported = "-device";
	return bad(err, "-device", "'%s' is not a supported device", drv);
}

static int add_drive(struct vm_config *cfg, const char *opt, struct vm_drive **out,
                     struct vt_error *err)
{
	if (cfg->nr_drives == VM_MAX_DRIVES)
		return bad(err, opt, "too many drives%s", "");
	struct vm_drive *d = &cfg->drives[cfg->nr_drives++];
	*d = (struct vm_drive){ .interface = VM_DRIVE_IDE, .media = VM_MEDIA_DISK,
	                        .index = -1, .option = opt, .bootindex = -1 };
	*out = d;
	return 0;
}

static int opt_drive(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	struct vm_drive *d = NULL;
	unsigned long v;
	int n = kv_split(arg, NULL, kv);

	if (n < 0 || add_drive(cfg, "-drive", &d, err))
		return n < 0 ? bad(err, "-drive", "too many parameters%s", "") : -EINVAL;
	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *val = kv[i].val;
		if (!strcmp(k, "file")) {
			d->file = val;
		} else if (!strcmp(k, "format")) {
			d->format = val;
		} else if (!strcmp(k, "if")) {
			if (!strcmp(val, "ide"))
				d->interface = VM_DRIVE_IDE;
			else if (!strcmp(val, "virtio"))
				d->interface = VM_DRIVE_VIRTIO;
			else if (!strcmp(val, "none"))
				d->interface = VM_DRIVE_NONE;
			else
				return bad(err, "-drive", "unsupported interface if=%s", val);
		} else if (!strcmp(k, "media")) {
			if (!strcmp(val, "disk"))
				d->media = VM_MEDIA_DISK;
			else if (!strcmp(val, "cdrom"))
				d->media = VM_MEDIA_CDROM;
			else
				return bad(err, "-drive", "invalid media '%s'", val);
		} else if (!strcmp(k, "index")) {
			if (parse_uint(val, 3, &v))
				return bad(err, "-drive", "invalid index '%s'", val);
			d->index = (int)v;
		} else if (!strcmp(k, "readonly")) {
			if (parse_bool(val, &d->readonly))
				return bad(err, "-drive", "invalid readonly value '%s'", val);
		} else if (!strcmp(k, "snapshot")) {
			if (parse_bool(val, &d->snapshot))
				return bad(err, "-drive", "invalid snapshot value '%s'", val);
		} else if (!strcmp(k, "cache")) {
			d->cache = val;
		} else if (!strcmp(k, "discard")) {
			d->discard_unmap = !strcmp(val, "unmap") || !strcmp(val, "on");
		} else if (!strcmp(k, "bootindex")) {
			if (parse_uint(val, 0x7fffffff, &v))
				return bad(err, "-drive", "invalid bootindex '%s'", val);
			d->bootindex = (int)v;
		} else if (!strcmp(k, "id")) {
			d->id = val;
		} else if (!strcmp(k, "aio")) {
			/* vtool's disk I/O runs on worker threads: qemu's aio=threads. */
			if (strcmp(val, "threads"))
				return vt_error_set(err, ENOTSUP, "-drive", NULL, "not supported yet: "
				                    "aio=%s (vtool's disk I/O is aio=threads)", val);
		} else {
			return bad(err, "-drive", "invalid parameter '%s'", k);
		}
	}
	if (!d->file)
		return bad(err, "-drive", "missing file=%s", "");
	return 0;
}

static int opt_net(struct vm_config *cfg, const char *opt, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "type", kv);

	if (n <= 0)
		return bad(err, opt, "missing network backend%s", "");
	const char *type = kv[0].val;
	if (!strcmp(type, "none"))
		return 0;
	if (!strcmp(type, "user"))
		return bad(err, opt, "user networking is not supported (use tap)%s", "");
	if (strcmp(type, "nic") && strcmp(type, "tap"))
		return bad(err, opt, "unknown network type '%s'", type);
	/* -net nic and -net tap pair up on one NIC; -netdev names its tap with id=. */
	struct vm_nic *nic = NULL;
	bool is_nic = !strcmp(type, "nic");
	for (int i = 0; i < cfg->nr_nics; i++)
		if (is_nic ? !cfg->nics[i].model : !cfg->nics[i].ifname)
			nic = &cfg->nics[i];
	if (!strcmp(opt, "-netdev") || !nic) {
		if (cfg->nr_nics == VM_MAX_NICS)
			return bad(err, opt, "too many network cards%s", "");
		nic = &cfg->nics[cfg->nr_nics++];
		*nic = (struct vm_nic){ .option = opt };
	}
	if (is_nic)
		nic->model = "virtio";
	for (int i = 1; i < n; i++) {
		const char *k = kv[i].key, *val = kv[i].val;
		if (!strcmp(k, "model")) {
			if (strcmp(val, "virtio") && strcmp(val, "virtio-net-pci"))
				return bad(err, opt, "unsupported NIC model '%s'", val);
		} else if (!strcmp(k, "macaddr") || !strcmp(k, "mac")) {
			if (net_mac_parse(val, nic->mac))
				return bad(err, opt, "invalid MAC address '%s'", val);
			nic->has_mac = true;
		} else if (!strcmp(k, "ifname")) {
			nic->ifname = val;
		} else if (!strcmp(k, "id")) {
			nic->id = val;
		} else if (!strcmp(k, "script") || !strcmp(k, "downscript")) {
			/* "no" or "" runs nothing; qemu's defaults are filled in by the check. */
			const char *s = strcmp(val, "no") && val[0] ? val : "";
			if (!strcmp(k, "script"))
				nic->script = s;
			else
				nic->downscript = s;
		} else if (!strcmp(k, "vhost") || !strcmp(k, "queues")) {
			bool off;
			if (!strcmp(k, "vhost") ? parse_bool(val, &off) || off : strcmp(val, "1"))
				return vt_error_set(err, ENOTSUP, opt, NULL, "not supported yet: %s=%s "
				                    "(vtool's virtio-net has one queue pair, in user space)",
				                    k, val);
		} else {
			return bad(err, opt, "invalid parameter '%s'", k);
		}
	}
	return 0;
}

static int opt_serial(struct vm_config *cfg, const char *arg, struct vt_error *err)
{
	if (!strcmp(arg, "stdio") || !strcmp(arg, "mon:stdio")) {
		cfg->serial = VM_SERIAL_STDIO;
		cfg->ctl.mon_stdio_mux = !strcmp(arg, "mon:stdio"); /* C-a c reaches the HMP */
	} else if (!strncmp(arg, "file:", 5) && arg[5]) {
		cfg->serial = VM_SERIAL_FILE;
		cfg->serial_path = arg + 5;
	} else if (!strcmp(arg, "none") || !strcmp(arg, "null")) {
		cfg->serial = VM_SERIAL_NONE;
	} else {
		return bad(err, "-serial", "unsupported character device '%s'", arg);
	}
	return 0;
}

/* qemu's rules for boot device letters: a..p, each once; a PC knows a, b, c, d and n. */
static int boot_devices(const char *list, struct vt_error *err)
{
	unsigned seen = 0;

	if (strlen(list) >= sizeof(((struct vm_boot *)0)->order))
		return bad(err, "-boot", "too many boot devices in '%s'", list);
	for (const char *p = list; *p; p++) {
		if (*p < 'a' || *p > 'p')
			return bad(err, "-boot", "Invalid boot device '%c'", *p);
		if (seen & (1u << (*p - 'a')))
			return bad(err, "-boot", "Boot device '%c' was given twice", *p);
		seen |= 1u << (*p - 'a');
		if (!strchr("abcdn", *p))
			return bad(err, "-boot", "Invalid boot device for PC: '%c'", *p);
	}
	return 0;
}

static int opt_boot(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	unsigned long v;
	int n = kv_split(arg, "order", kv);

	if (n < 0)
		return bad(err, "-boot", "too many parameters%s", "");
	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *val = kv[i].val;
		bool b;
		if (!strcmp(k, "order") || !strcmp(k, "once")) {
			if (boot_devices(val, err))
				return -EINVAL;
			snprintf(!strcmp(k, "order") ? cfg->boot.order : cfg->boot.once,
			         sizeof(cfg->boot.order), "%s", val);
		} else if (!strcmp(k, "menu") || !strcmp(k, "strict")) {
			if (parse_bool(val, &b))
				return bad(err, "-boot", "Parameter 'boot.%s' expects 'on' or 'off'", k);
			if (!strcmp(k, "menu"))
				cfg->boot.menu = b;
			else
				cfg->boot.strict = b;
		} else if (!strcmp(k, "splash-time")) {
			if (parse_uint(val, 0xffff, &v))
				return bad(err, "-boot", "splash-time is invalid, it should be a value between 0 and 65535%s", "");
			cfg->boot.splash_time = (int)v;
		} else if (!strcmp(k, "reboot-timeout")) {
			if (!strcmp(val, "-1"))
				v = (unsigned long)-1;
			else if (parse_uint(val, 0xffff, &v))
				return bad(err, "-boot", "reboot timeout is invalid, it should be a value between -1 and 65535%s", "");
			cfg->boot.reboot_timeout = (int)v;
		} else if (strcmp(k, "splash")) {
			return bad(err, "-boot", "Invalid parameter '%s'", k);
		}
	}
	return 0;
}

static int opt_chardev(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "backend", kv);
	const char *id = NULL, *path = NULL;

	if (n > 0 && (!strcmp(kv[0].val, "socket") || !strcmp(kv[0].val, "stdio")))
		return ctl_chardev(cfg, kv, n, err); /* monitors' backends: options_ctl.c */
	if (n <= 0 || strcmp(kv[0].val, "file"))
		return vt_error_set(err, ENOTSUP, "-chardev", NULL, "not supported yet: backend "
		                    "'%s' (file, socket and stdio are)", n > 0 ? kv[0].val : "");
	for (int i = 1; i < n; i++) {
		if (!strcmp(kv[i].key, "id"))
			id = kv[i].val;
		else if (!strcmp(kv[i].key, "path"))
			path = kv[i].val;
		else
			return bad(err, "-chardev", "invalid parameter '%s'", kv[i].key);
	}
	if (!id || !path)
		return bad(err, "-chardev", "file needs id= and path=%s", "");
	if (cfg->nr_chardevs == 4)
		return bad(err, "-chardev", "too many character devices%s", "");
	cfg->chardevs[cfg->nr_chardevs].id = id;
	cfg->chardevs[cfg->nr_chardevs++].path = path;
	return 0;
}

static int opt_global(struct vm_config *cfg, const char *arg, struct vt_error *err)
{
	unsigned long v;
	int ret = display_global(cfg, arg, err);

	if (ret <= 0)
		return ret;

	if (!strncmp(arg, "isa-debugcon.iobase=", 20) && !parse_uint(arg + 20, 0xffff, &v)) {
		cfg->debugcon_port = (uint16_t)v;
		return 0;
	}
	return bad(err, "-global", "unsupported property '%s' (only isa-debugcon.iobase and "
	           "VGA.vgamem_mb)", arg);
}

static int parse_hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int opt_uuid(struct vm_config *cfg, const char *arg, struct vt_error *err)
{
	int k = 0;

	for (const char *p = arg; *p; p++) {
		if (*p == '-' && (p - arg == 8 || p - arg == 13 || p - arg == 18 || p - arg == 23))
			continue;
		int hi = parse_hex(p[0]), lo = p[1] ? parse_hex(p[1]) : -1;
		if (hi < 0 || lo < 0 || k == 16)
			return bad(err, "-uuid", "Fail to parse UUID string.%s", "");
		cfg->uuid[k++] = (uint8_t)(hi << 4 | lo);
		p++;
	}
	if (k != 16 || strlen(arg) != 36)
		return bad(err, "-uuid", "Fail to parse UUID string.%s", "");
	cfg->has_uuid = true;
	return 0;
}

static int opt_machine(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "type", kv);

	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].val;
		if (!strcmp(k, "type")) {
			if (strcmp(v, "pc") && strncmp(v, "pc-i440fx", 9))
				return bad(err, "-machine", "unsupported machine type '%s' (only pc)", v);
		} else if (!strcmp(k, "accel")) {
			if (strcmp(v, "kvm"))
				return bad(err, "-machine", "unsupported accelerator '%s' (only kvm)", v);
		} else if (!strcmp(k, "graphics")) {
			bool on;
			if (parse_bool(v, &on))
				return bad(err, "-machine", "Parameter 'graphics' expects 'on' or 'off'");
			cfg->graphics_off = !on;
		} else if (!strcmp(k, "usb") || !strcmp(k, "vmport")) {
			/* The machine has neither: only "off" describes it. */
			bool on;
			if (parse_bool(v, &on) || on)
				return vt_error_set(err, ENOTSUP, "-machine", NULL, "not supported yet: "
				                    "%s=%s", k, v);
		} else {
			return bad(err, "-machine", "invalid parameter '%s'", k);
		}
	}
	return 0;
}

enum opt_id {
	O_ENABLE_KVM, O_NOGRAPHIC, O_NO_REBOOT, O_NO_SHUTDOWN, O_DAEMONIZE, O_NODEFAULTS,
	O_SNAPSHOT, O_IGNORED0,
	O_M, O_SMP, O_CPU, O_KERNEL, O_INITRD, O_APPEND, O_NAME, O_PIDFILE, O_SERIAL,
	O_DISPLAY, O_VGA, O_DEVICE, O_MACHINE, O_ACCEL, O_RTC, O_HD, O_CDROM,
	O_DRIVE, O_BOOT, O_VNC, O_NET, O_NETDEV, O_BIOS, O_DEBUGCON, O_CHARDEV, O_GLOBAL, O_UUID,
	O_K, O_OBJECT, O_IGNORED1,
};

static const struct {
	const char *name;
	enum opt_id id;
} options[] = {
	{ "enable-kvm", O_ENABLE_KVM }, { "nographic", O_NOGRAPHIC },
	{ "no-reboot", O_NO_REBOOT }, { "no-shutdown", O_NO_SHUTDOWN },
	{ "daemonize", O_DAEMONIZE }, { "nodefaults", O_NODEFAULTS },
	{ "snapshot", O_SNAPSHOT }, { "no-hpet", O_IGNORED0 },
	{ "m", O_M }, { "smp", O_SMP }, { "cpu", O_CPU }, { "kernel", O_KERNEL },
	{ "initrd", O_INITRD }, { "append", O_APPEND }, { "name", O_NAME },
	{ "pidfile", O_PIDFILE }, { "serial", O_SERIAL }, { "display", O_DISPLAY },
	{ "vga", O_VGA }, { "device", O_DEVICE },
	{ "machine", O_MACHINE }, { "M", O_MACHINE }, { "accel", O_ACCEL }, { "rtc", O_RTC },
	{ "hda", O_HD }, { "hdb", O_HD }, { "hdc", O_HD }, { "hdd", O_HD },
	{ "cdrom", O_CDROM }, { "drive", O_DRIVE }, { "boot", O_BOOT }, { "vnc", O_VNC },
	{ "net", O_NET }, { "netdev", O_NETDEV }, { "k", O_K }, { "bios", O_BIOS },
	{ "debugcon", O_DEBUGCON }, { "chardev", O_CHARDEV }, { "global", O_GLOBAL },
	{ "uuid", O_UUID }, { "object", O_OBJECT },
};

bool vm_machine_option(const char *name, bool *has_arg)
{
	for (size_t k = 0; k < sizeof(options) / sizeof(options[0]); k++)
		if (!strcmp(options[k].name, name)) {
			*has_arg = options[k].id > O_IGNORED0;
			return true;
		}
	return false;
}

/* -name [guest=]NAME[,process=PNAME][,debug-threads=on|off] */
static int opt_name(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, "guest", kv);
	bool b;

	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "guest"))
			cfg->name = kv[i].val;
		else if (!strcmp(kv[i].key, "process"))
			cfg->process_name = kv[i].val;
		else if (!strcmp(kv[i].key, "debug-threads") && !parse_bool(kv[i].val, &b))
			; /* vtool's threads always carry their names (vcpu0, virtio-blk-io, ...) */
		else
			return bad(err, "-name", "Invalid parameter '%s'", kv[i].key);
	}
	return n < 0 ? bad(err, "-name", "too many parameters") : 0;
}

/* -rtc [base=utc|localtime][,clock=host][,driftfix=none]: the RTC follows the host's
 * clock; a fixed start date, guest-time clocks and tick catch-up are not there yet. */
static int opt_rtc(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	int n = kv_split(arg, NULL, kv);

	for (int i = 0; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].val;
		if (!strcmp(k, "base") && (!strcmp(v, "utc") || !strcmp(v, "localtime")))
			cfg->rtc_localtime = !strcmp(v, "localtime");
		else if ((!strcmp(k, "clock") && !strcmp(v, "host")) ||
		         (!strcmp(k, "driftfix") && !strcmp(v, "none")))
			; /* what the RTC does */
		else if (!strcmp(k, "base") || !strcmp(k, "clock") || !strcmp(k, "driftfix"))
			return vt_error_set(err, ENOTSUP, "-rtc", NULL, "not supported yet: %s=%s", k, v);
		else
			return bad(err, "-rtc", "Invalid parameter '%s'", k);
	}
	return n < 0 ? bad(err, "-rtc", "too many parameters") : 0;
}

static int apply(struct vm_config *cfg, enum opt_id id, const char *opt, char *arg,
                 struct vt_error *err)
{
	struct vm_drive *d = NULL;

	switch (id) {
	case O_ENABLE_KVM: case O_IGNORED0: case O_IGNORED1:
		return 0;
	case O_NODEFAULTS:
		cfg->nodefaults = true;          /* no default serial port */
		cfg->display.nodefaults = true;  /* no default VGA */
		return 0;
	case O_NOGRAPHIC: cfg->nographic = true; return 0;
	case O_NO_REBOOT: cfg->no_reboot = true; return 0;
	case O_NO_SHUTDOWN: cfg->no_shutdown = true; return 0;
	case O_DAEMONIZE: cfg->daemonize = true; return 0;
	case O_SNAPSHOT:
		cfg->snapshot = true;
		return 0;
	case O_M: return opt_m(cfg, arg, err);
	case O_SMP: return opt_smp_parse(cfg, arg, err);
	case O_CPU: return opt_cpu(cfg, arg, err);
	case O_KERNEL: cfg->kernel = arg; return 0;
	case O_INITRD: cfg->initrd = arg; return 0;
	case O_APPEND: cfg->append = arg; return 0;
	case O_PIDFILE: cfg->pidfile = arg; return 0;
	case O_NAME: return opt_name(cfg, arg, err);
	case O_SERIAL: return opt_serial(cfg, arg, err);
	case O_DISPLAY: case O_VGA: case O_VNC: case O_K: case O_OBJECT:
		return display_option(cfg, opt, arg, err);
	case O_DEVICE: return opt_device(cfg, arg, err);
	case O_MACHINE: return opt_machine(cfg, arg, err);
	case O_ACCEL:
		if (strcmp(arg, "kvm") && strncmp(arg, "kvm,", 4))
			return bad(err, "-accel", "unsupported accelerator '%s' (only kvm)", arg);
		return 0;
	case O_RTC: return opt_rtc(cfg, arg, err);
	case O_HD: case O_CDROM:
		if (add_drive(cfg, opt, &d, err))
			return -EINVAL;
		d->file = arg;
		if (id == O_CDROM) {
			d->media = VM_MEDIA_CDROM;
			d->index = 2;
		} else {
			d->index = opt[3] - 'a';
		}
		return 0;
	case O_DRIVE: return opt_drive(cfg, arg, err);
	case O_BOOT: return opt_boot(cfg, arg, err);
	case O_BIOS: cfg->bios = arg; return 0;
	case O_DEBUGCON:
		if (!strncmp(arg, "file:", 5) && arg[5])
			cfg->debugcon_path = arg + 5;
		else if (strcmp(arg, "none") && strcmp(arg, "null"))
			return bad(err, "-debugcon", "unsupported character device '%s' (file:PATH)", arg);
		return 0;
	case O_CHARDEV: return opt_chardev(cfg, arg, err);
	case O_GLOBAL: return opt_global(cfg, arg, err);
	case O_UUID: return opt_uuid(cfg, arg, err);
	case O_NET: case O_NETDEV: return opt_net(cfg, opt, arg, err);
	}
	return 0;
}

int vm_config_parse(struct vm_config *cfg, int argc, char **argv, struct vt_error *err)
{
	*cfg = (struct vm_config){ .ram_size = 128ull << 20, .nr_vcpus = 1,
	                           .topo = { 1, 1, 1, 1, 1 }, .ctl = { .sandbox = -1 },
	                           .cpu_model = "host", .serial = VM_SERIAL_STDIO,
	                           .boot = { .order = "cad", .menu = -1, .splash_time = -1,
	                                     .reboot_timeout = -1 },
	                           .debugcon_port = 0xe9 };
	display_config_init(&cfg->display);
	bool serial_given = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || !a[1])
			return bad(err, a, "unexpected argument (options start with '-')%s", "");
		const char *name = a + 1 + (a[1] == '-');
		size_t k;
		for (k = 0; k < sizeof(options) / sizeof(options[0]); k++)
			if (!strcmp(options[k].name, name))
				break;
		bool ctl = false, has_arg;
		if (k == sizeof(options) / sizeof(options[0])) {
			/* monitors, -S, sandbox, help (options_ctl.c); else qemu's verdict */
			if (!(ctl = ctl_option(name, &has_arg)))
				return qemu_option_unknown(a, err);
		} else {
			has_arg = options[k].id > O_IGNORED0;
		}
		char *arg = NULL;
		if (has_arg) {
			if (i + 1 >= argc)
				return bad(err, a, "requires an argument%s", "");
			arg = argv[++i];
		}
		int ret;
		if (ctl) {
			ret = ctl_apply(cfg, name, a, arg, err);
		} else {
			serial_given |= options[k].id == O_SERIAL;
			ret = apply(cfg, options[k].id, a, arg, err);
		}
		if (ret)
			return ret;
		if (cfg->ctl.want_help || cfg->ctl.want_version)
			return 0; /* qemu acts on -help and -version at once */
	}
	/* qemu -nodefaults: no serial port unless one is asked for. */
	if (cfg->nodefaults && !serial_given)
		cfg->serial = VM_SERIAL_NONE;
	return 0;
}

/* Pair NICs with their taps: "-net nic -net tap,ifname=" already share an entry;
 * "-device virtio-net-pci,netdev=ID" takes the ifname of "-netdev tap,id=ID". */
static int nics_resolve(const struct vm_config *cfg, struct vt_error *err)
{
	int nth = 0;

	for (int i = 0; i < cfg->nr_nics; i++) {
		struct vm_nic *nic = (struct vm_nic *)&cfg->nics[i];
		if (!nic->model)
			continue;
		if (!nic->ifname && nic->id) {
			for (int k = 0; k < cfg->nr_nics; k++)
				if (k != i && !cfg->nics[k].model && cfg->nics[k].id &&
				    !strcmp(cfg->nics[k].id, nic->id)) {
					nic->ifname = cfg->nics[k].ifname;
					nic->script = cfg->nics[k].script;
					nic->downscript = cfg->nics[k].downscript;
				}
			if (!nic->ifname)
				return vt_error_set(err, EINVAL, nic->option, NULL,
				                    "netdev '%s' not found (give -netdev tap,id=%s,ifname=TAP)",
				                    nic->id, nic->id);
		}
		if (!nic->ifname)
			return vt_error_set(err, EINVAL, nic->option, NULL,
			                    "a NIC needs a tap: -net tap,ifname=TAP,script=no,downscript=no");
		/* qemu's defaults: the tap's name goes to /etc/qemu-ifup at start and to
		 * /etc/qemu-ifdown at exit (netscript.c). */
		if (!nic->script)
			nic->script = "/etc/qemu-ifup";
		if (!nic->downscript)
			nic->downscript = "/etc/qemu-ifdown";
		if (!nic->has_mac) {
			/* qemu's default: 52:54:00:12:34:56, the last byte counting up */
			static const uint8_t base[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
			memcpy(nic->mac, base, 6);
			nic->mac[5] = (uint8_t)(nic->mac[5] + nth);
		}
		nth++;
	}
	return 0;
}

int vm_config_check(const struct vm_config *cfg, struct vt_error *err)
{
	int ret = nics_resolve(cfg, err);

	if (ret || (ret = ctl_check(cfg, err)))
		return ret;
	if (cfg->unsupported)
		return vt_error_set(err, ENOTSUP, cfg->unsupported, NULL, "not supported yet: %s",
		                    cfg->unsupported);
	if ((ret = display_config_check((struct vm_config *)cfg, err)))
		return ret;
	if (cfg->debugcon_chardev) {
		struct vm_config *c = (struct vm_config *)cfg;
		for (int i = 0; i < cfg->nr_chardevs; i++)
			if (!strcmp(cfg->chardevs[i].id, cfg->debugcon_chardev))
				c->debugcon_path = cfg->chardevs[i].path;
		if (!cfg->debugcon_path)
			return vt_error_set(err, EINVAL, "-device", NULL,
			                    "isa-debugcon: chardev '%s' not found", cfg->debugcon_chardev);
	}
	/* IDE indexes: explicit ones first, then the free ones in order, as qemu does. */
	bool used[4] = { false };
	for (int i = 0; i < cfg->nr_drives; i++) {
		const struct vm_drive *d = &cfg->drives[i];
		if (d->interface != VM_DRIVE_IDE || d->index < 0)
			continue;
		if (used[d->index])
			return vt_error_set(err, EINVAL, d->option, NULL,
			                    "IDE index %d is used twice", d->index);
		used[d->index] = true;
	}
	return 0;
}
