/* The QMP commands vtool has, with qemu 7.2's names, arguments and result shapes
 * (the qapi schema). Lifecycle commands go to the controller (control.h); queries read the
 * current machine under the controller's lock, the disks from the kept table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blk/blk.h"
#include "vmm/control.h"
#include "vmm/disk.h"
#include "vmm/hmp.h"
#include "vmm/keep.h"
#include "vmm/qmp.h"
#include "vmm/ui/display.h"
#include "vmm/vcpu.h"

static json_t *from_vt_error(const struct vt_error *ve, struct qmp_error *e)
{
	char buf[600];

	if (ve->file[0] || ve->what[0])
		vt_error_format(ve, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "%s", ve->why);
	qmp_error_set(e, QMP_GENERIC_ERROR, "%s", buf);
	return NULL;
}

/* --- lifecycle ------------------------------------------------------------------- */

static json_t *cmd_query_status(json_t *args, struct qmp_error *e)
{
	enum ctl_state s = ctl_state();

	return json_pack("{s:s, s:b, s:b}", "status", ctl_state_name(s), "singlestep", 0,
	                 "running", s == CTL_RUNNING);
}

static json_t *lifecycle(int (*fn)(struct vt_error *), struct qmp_error *e)
{
	struct vt_error ve = { 0 };

	if (fn(&ve))
		return from_vt_error(&ve, e);
	return json_object();
}

static json_t *cmd_stop(json_t *a, struct qmp_error *e) { return lifecycle(ctl_stop, e); }
static json_t *cmd_cont(json_t *a, struct qmp_error *e) { return lifecycle(ctl_cont, e); }
static json_t *cmd_powerdown(json_t *a, struct qmp_error *e) { return lifecycle(ctl_powerdown, e); }
static json_t *cmd_reset(json_t *a, struct qmp_error *e) { return lifecycle(ctl_reset, e); }

static json_t *cmd_quit(json_t *args, struct qmp_error *e)
{
	ctl_quit(CTL_CAUSE_HOST_QMP_QUIT);
	return json_object();
}

/* --- identity -------------------------------------------------------------------- */

static json_t *cmd_query_version(json_t *args, struct qmp_error *e)
{
	unsigned maj = 0, min = 0, mic = 0;

	sscanf(VTOOL_VERSION, "%u.%u.%u", &maj, &min, &mic);
	return json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", (int)mic, "minor", (int)min,
	                 "major", (int)maj, "package", "vtool " VTOOL_VERSION);
}

static json_t *cmd_query_name(json_t *args, struct qmp_error *e)
{
	const char *name = ctl_config()->name;

	return name ? json_pack("{s:s}", "name", name) : json_object();
}

static json_t *cmd_query_kvm(json_t *args, struct qmp_error *e)
{
	return json_pack("{s:b, s:b}", "enabled", 1, "present", 1);
}

static json_t *cmd_query_commands(json_t *args, struct qmp_error *e)
{
	json_t *a = json_array();

	json_array_append_new(a, json_pack("{s:s}", "name", "qmp_capabilities"));
	for (size_t i = 0; qmp_command_name(i); i++)
		json_array_append_new(a, json_pack("{s:s}", "name", qmp_command_name(i)));
	return a;
}

/* --- CPUs -------------------------------------------------------------------------- */

static json_t *cmd_query_cpus_fast(json_t *args, struct qmp_error *e)
{
	const struct vm_config *cfg = ctl_config();
	const struct vm_topology *t = &cfg->topo;
	json_t *a = json_array();
	struct vm *vm = ctl_vm_get();

	for (int i = 0; vm && i < vm->nr_vcpus; i++) {
		int threads = t->threads > 0 ? t->threads : 1, cores = t->cores > 0 ? t->cores : 1;
		int dies = t->dies > 0 ? t->dies : 1;
		json_t *props = json_pack("{s:i, s:i, s:i}", "core-id", i / threads % cores,
		                          "thread-id", i % threads, "socket-id",
		                          i / (threads * cores * dies));
		if (dies > 1)
			json_object_set_new(props, "die-id", json_integer(i / (threads * cores) % dies));
		char path[64];
		snprintf(path, sizeof(path), "/machine/unattached/device[%d]", i);
		json_array_append_new(a, json_pack("{s:i, s:s, s:I, s:o, s:s}", "cpu-index", i,
		                                   "qom-path", path, "thread-id",
		                                   (json_int_t)__atomic_load_n(&vm->vcpus[i].tid,
		                                                               __ATOMIC_ACQUIRE),
		                                   "props", props, "target", "x86_64"));
	}
	ctl_vm_put();
	return a;
}

/* --- block ----------------------------------------------------------------------- */

/* qemu's names for drives: the -drive id= when given, else ide<bus>-hd<unit> /
 * ide<bus>-cd<unit> for IDE, virtio<N> for virtio. */
void qmp_drive_name(const struct vm_config *cfg, int i, char *buf, size_t len)
{
	const struct vm_drive *d = &cfg->drives[i];

	if (d->id) {
		snprintf(buf, len, "%s", d->id);
	} else if (d->interface == VM_DRIVE_VIRTIO) {
		int n = 0;
		for (int k = 0; k < i; k++)
			n += cfg->drives[k].interface == VM_DRIVE_VIRTIO && !cfg->drives[k].id;
		snprintf(buf, len, "virtio%d", n);
	} else {
		/* The IDE position vm.c gives it: explicit indexes first, then free ones. */
		bool used[4] = { false };
		int index = d->index;
		for (int k = 0; k < cfg->nr_drives; k++)
			if (cfg->drives[k].interface == VM_DRIVE_IDE && cfg->drives[k].index >= 0)
				used[cfg->drives[k].index] = true;
		for (int k = 0; k <= i && index < 0; k++) {
			if (cfg->drives[k].interface != VM_DRIVE_IDE || cfg->drives[k].index >= 0)
				continue;
			int free_slot = 0;
			while (free_slot < 4 && used[free_slot])
				free_slot++;
			if (free_slot < 4)
				used[free_slot] = true;
			if (k == i)
				index = free_slot;
		}
		snprintf(buf, len, "ide%d-%s%d", index / 2, d->media == VM_MEDIA_CDROM ? "cd" : "hd",
		         index % 2);
	}
}

static json_t *block_info(const struct vm_config *cfg, int i)
{
	const struct vm_drive *d = &cfg->drives[i];
	struct vm_disk *disk = keep_get("drive:%d", i);
	char name[64];

	qmp_drive_name(cfg, i, name, sizeof(name));
	bool cd = d->media == VM_MEDIA_CDROM;
	json_t *o = json_pack("{s:s, s:b, s:b}", "device", name, "locked", 0, "removable", cd);
	if (cd)
		json_object_set_new(o, "tray_open", json_false());
	if (d->dev_id)
		json_object_set_new(o, "qdev", json_string(d->dev_id));
	if (disk && disk->blk) {
		int depth = 0;
		for (struct blk *b = blk_backing(disk->blk); b; b = blk_backing(b))
			depth++;
		const char *cache = d->cache ? d->cache : "writeback";
		json_t *image = json_pack("{s:s, s:s, s:I}", "filename", d->file, "format",
		                          blk_format(disk->blk), "virtual-size",
		                          (json_int_t)disk->size);
		json_t *ins = json_pack("{s:s, s:b, s:s, s:b, s:i, s:s, s:o, s:{s:b, s:b, s:b}}",
		                        "file", d->file, "ro", disk->readonly, "drv",
		                        blk_format(disk->blk), "encrypted", 0, "backing_file_depth",
		                        depth, "detect_zeroes", "off", "image", image, "cache",
		                        "writeback", strcmp(cache, "writethrough") &&
		                                     strcmp(cache, "directsync"),
		                        "direct", !strcmp(cache, "none") || !strcmp(cache, "directsync"),
		                        "no-flush", !strcmp(cache, "unsafe"));
		struct blk *bk = blk_backing(disk->blk);
		if (bk)
			json_object_set_new(ins, "backing_file", json_string(blk_filename(bk)));
		json_object_set_new(o, "inserted", ins);
		json_object_set_new(o, "io-status", json_string("ok"));
	}
	json_object_set_new(o, "type", json_string("unknown"));
	return o;
}

static json_t *cmd_query_block(json_t *args, struct qmp_error *e)
{
	const struct vm_config *cfg = ctl_config();
	json_t *a = json_array();

	/* The controller's lock keeps the kept disks from being released under us. */
	ctl_vm_get();
	for (int i = 0; i < cfg->nr_drives; i++)
		json_array_append_new(a, block_info(cfg, i));
	ctl_vm_put();
	return a;
}

/* --- display ----------------------------------------------------------------------- */

static json_t *cmd_query_vnc(json_t *args, struct qmp_error *e)
{
	struct display_vnc_info *v = malloc(sizeof(*v));

	if (!v) {
		qmp_error_set(e, QMP_GENERIC_ERROR, "out of memory");
		return NULL;
	}
	display_vnc_query(v);
	if (!v->enabled) {
		free(v);
		return json_pack("{s:b}", "enabled", 0);
	}
	json_t *clients = json_array();
	for (int i = 0; i < v->nr_clients; i++)
		json_array_append_new(clients, json_pack("{s:s, s:s, s:s, s:b}", "host",
		                                         v->clients[i].host, "service",
		                                         v->clients[i].service, "family",
		                                         v->clients[i].family, "websocket", 0));
	json_t *r = json_pack("{s:b, s:s, s:s, s:s, s:s, s:o}", "enabled", 1, "host", v->host,
	                      "service", v->service, "family", v->family, "auth", v->auth,
	                      "clients", clients);
	free(v);
	return r;
}

static json_t *cmd_screendump(json_t *args, struct qmp_error *e)
{
	struct vt_error ve = { 0 };
	const char *path = json_string_value(json_object_get(args, "filename"));
	const char *format = json_string_value(json_object_get(args, "format"));

	struct vm *vm = ctl_vm_get();
	int ret = display_screendump(vm, path, format, &ve);
	ctl_vm_put();
	return ret ? from_vt_error(&ve, e) : json_object();
}

/* --- HMP through QMP ------------------------------------------------------------- */

static json_t *cmd_hmc(json_t *args, struct qmp_error *e)
{
	const char *line = json_string_value(json_object_get(args, "command-line"));
	char *out = hmp_run_line(line);

	if (!out) {
		qmp_error_set(e, QMP_GENERIC_ERROR, "out of memory");
		return NULL;
	}
	json_t *s = json_string(out);
	free(out);
	return s;
}

static const struct qmp_command commands[] = {
	{ "query-status", { NULL }, cmd_query_status },
	{ "stop", { NULL }, cmd_stop },
	{ "cont", { NULL }, cmd_cont },
	{ "system_powerdown", { NULL }, cmd_powerdown },
	{ "system_reset", { NULL }, cmd_reset },
	{ "quit", { NULL }, cmd_quit },
	{ "query-version", { NULL }, cmd_query_version },
	{ "query-name", { NULL }, cmd_query_name },
	{ "query-kvm", { NULL }, cmd_query_kvm },
	{ "query-commands", { NULL }, cmd_query_commands },
	{ "query-cpus-fast", { NULL }, cmd_query_cpus_fast },
	{ "query-block", { NULL }, cmd_query_block },
	{ "query-vnc", { NULL }, cmd_query_vnc },
	{ "screendump", { "filename:s", "*device:s", "*head:i", "*format:s" }, cmd_screendump },
	{ "human-monitor-command", { "command-line:s", "*cpu-index:i" }, cmd_hmc },
};

const struct qmp_command *qmp_command_find(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

const char *qmp_command_name(size_t i)
{
	return i < sizeof(commands) / sizeof(commands[0]) ? commands[i].name : NULL;
}
