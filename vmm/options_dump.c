/* struct vm_config as text, one "field=value" line each, for the table-driven test that
 * no accepted option is silently ignored (tests/integration/run-options.sh): vtool run
 * prints it instead of running when VTOOL_RUN_DUMP_CONFIG=1. A field added to
 * struct vm_config belongs here too, or its option shows up as having no effect. */
#include <stdio.h>

#include "vmm/config.h"

#define S(x) ((x) ? (x) : "-")

static void dump_mac(FILE *f, const char *key, int i, const uint8_t *m, bool has)
{
	fprintf(f, "%s%d=%s%02x:%02x:%02x:%02x:%02x:%02x\n", key, i, has ? "" : "default:", m[0],
	        m[1], m[2], m[3], m[4], m[5]);
}

void vm_config_dump(const struct vm_config *c, FILE *f)
{
	fprintf(f, "ram_size=%llu\nnr_vcpus=%d\ncpu_model=%s\n", (unsigned long long)c->ram_size,
	        c->nr_vcpus, S(c->cpu_model));
	for (int i = 0; i < c->nr_cpu_edits; i++)
		fprintf(f, "cpu_edit%d=%c%s\n", i, c->cpu_edits[i].enable ? '+' : '-',
		        c->cpu_edits[i].name);
	fprintf(f, "topo=%d/%d/%d/%d/%d\n", c->topo.sockets, c->topo.dies, c->topo.cores,
	        c->topo.threads, c->topo.max_cpus);
	fprintf(f, "kernel=%s\ninitrd=%s\nappend=%s\nname=%s\nprocess_name=%s\npidfile=%s\n",
	        S(c->kernel), S(c->initrd), S(c->append), S(c->name), S(c->process_name),
	        S(c->pidfile));
	fprintf(f, "daemonize=%d\nno_reboot=%d\nno_shutdown=%d\nnographic=%d\nnodefaults=%d\n"
	        "graphics_off=%d\nrtc_localtime=%d\nsnapshot=%d\n", c->daemonize, c->no_reboot,
	        c->no_shutdown, c->nographic, c->nodefaults, c->graphics_off, c->rtc_localtime,
	        c->snapshot);
	fprintf(f, "serial=%d:%s\n", (int)c->serial, S(c->serial_path));
	fprintf(f, "debug_exit=%d:0x%x:%u\n", c->debug_exit, c->debug_exit_port,
	        c->debug_exit_size);
	fprintf(f, "bios=%s\nboot=%s/%s/%d/%d/%d/%d\n", S(c->bios), c->boot.order, c->boot.once,
	        c->boot.menu, c->boot.splash_time, c->boot.reboot_timeout, c->boot.strict);
	fprintf(f, "debugcon=%s:0x%x:%s\n", S(c->debugcon_path), c->debugcon_port,
	        S(c->debugcon_chardev));
	for (int i = 0; i < c->nr_chardevs; i++)
		fprintf(f, "chardev%d=%s:%s\n", i, c->chardevs[i].id, c->chardevs[i].path);
	fprintf(f, "uuid=");
	for (int i = 0; i < 16; i++)
		fprintf(f, "%02x", c->uuid[i]);
	fprintf(f, ":%d\n", c->has_uuid);
	for (int i = 0; i < c->nr_drives; i++) {
		const struct vm_drive *d = &c->drives[i];
		fprintf(f, "drive%d=%s fmt=%s if=%d media=%d index=%d ro=%d cache=%s discard=%d "
		        "snapshot=%d id=%s boot=%d serial=%s dev=%s\n", i, S(d->file), S(d->format),
		        (int)d->interface, (int)d->media, d->index, d->readonly, S(d->cache),
		        d->discard_unmap, d->snapshot, S(d->id), d->bootindex, S(d->serial),
		        S(d->dev_id));
	}
	for (int i = 0; i < c->nr_nics; i++) {
		const struct vm_nic *n = &c->nics[i];
		fprintf(f, "nic%d=%s ifname=%s id=%s boot=%d script=%s downscript=%s\n", i,
		        S(n->model), S(n->ifname), S(n->id), n->bootindex, S(n->script),
		        S(n->downscript));
		dump_mac(f, "mac", i, n->mac, n->has_mac);
	}
	const struct vm_display *d = &c->display;
	fprintf(f, "display: vga=%d given=%d nodefaults=%d vgamem_mb=%u vnc=%d host=%s port=%d "
	        "unix=%s pw_secret=%s share=%d keymap=%s\n", d->vga, d->vga_given, d->nodefaults,
	        d->vgamem_mb, d->vnc, d->vnc_host, d->vnc_port, S(d->vnc_unix),
	        S(d->password_secret), (int)d->share, S(d->keymap));
	for (int i = 0; i < d->nr_secrets; i++)
		fprintf(f, "secret%d=%s file=%s data=%s\n", i, S(d->secrets[i].id),
		        S(d->secrets[i].file), S(d->secrets[i].data));
	const struct vm_ctl_config *x = &c->ctl;
	for (int i = 0; i < x->nr_chardevs; i++) {
		const struct vm_sock_chardev *ch = &x->chardevs[i];
		fprintf(f, "ctl_chardev%d=%s kind=%d path=%s host=%s port=%s wait=%d\n", i,
		        S(ch->id), (int)ch->kind, S(ch->path), S(ch->host), S(ch->port), ch->wait);
	}
	for (int i = 0; i < x->nr_monitors; i++)
		fprintf(f, "monitor%d=chardev %d qmp=%d pretty=%d\n", i, x->monitors[i].chardev,
		        x->monitors[i].qmp, x->monitors[i].pretty);
	fprintf(f, "mon_stdio_mux=%d\nmonitor_given=%d\nstart_paused=%d\nsandbox=%d\nrunas=%s\n"
	        "chroot=%s\n", x->mon_stdio_mux, x->monitor_given, x->start_paused, x->sandbox,
	        S(x->runas), S(x->chroot_dir));
}
