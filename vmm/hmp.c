/* HMP sessions and commands (hmp.h). Texts follow qemu 7.2's (hmp-commands.hx,
 * monitor/hmp-cmds.c) where scripts read them: "VM status: paused (prelaunch)",
 * "unknown command: 'x'", the register dump's layout. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

#include "vmm/control.h"
#include "vmm/hmp.h"
#include "vmm/qmp.h"
#include "vmm/vcpu.h"

/* An output buffer that turns "\n" into "\r\n". */
struct out {
	char *buf;
	size_t len, cap;
	bool failed;
};

__attribute__((format(printf, 2, 3)))
static void outf(struct out *o, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	for (int i = 0; i < n && i < (int)sizeof(tmp) - 1; i++) {
		if (o->len + 2 >= o->cap) {
			size_t cap = o->cap ? o->cap * 2 : 512;
			char *b = realloc(o->buf, cap);
			if (!b) {
				o->failed = true;
				return;
			}
			o->buf = b;
			o->cap = cap;
		}
		if (tmp[i] == '\n')
			o->buf[o->len++] = '\r';
		o->buf[o->len++] = tmp[i];
	}
}

static void report(struct out *o, const struct qmp_error *e)
{
	outf(o, "Error: %s\n", e->desc);
}

/* Run a QMP command; on error print it and return NULL. */
static json_t *run(struct out *o, const char *cmd, json_t *args)
{
	struct qmp_error e = { 0 };
	json_t *empty = args ? NULL : json_object();
	json_t *r = qmp_run(cmd, args ? args : empty, &e);

	json_decref(empty);
	if (!r)
		report(o, &e);
	return r;
}

static void info_status(struct out *o)
{
	json_t *r = run(o, "query-status", NULL);
	if (!r)
		return;
	const char *st = json_string_value(json_object_get(r, "status"));
	bool running = json_is_true(json_object_get(r, "running"));
	outf(o, "VM status: %s", running ? "running" : "paused");
	if (!running && strcmp(st, "paused"))
		outf(o, " (%s)", st);
	outf(o, "\n");
	json_decref(r);
}

static void info_block(struct out *o)
{
	json_t *r = run(o, "query-block", NULL), *b;
	size_t i;

	json_array_foreach(r, i, b) {
		json_t *ins = json_object_get(b, "inserted");
		const char *dev = json_string_value(json_object_get(b, "device"));
		if (i)
			outf(o, "\n");
		if (!ins) {
			outf(o, "%s: [not inserted]\n", dev);
		} else {
			outf(o, "%s: %s (%s%s)\n", dev, json_string_value(json_object_get(ins, "file")),
			     json_string_value(json_object_get(ins, "drv")),
			     json_is_true(json_object_get(ins, "ro")) ? ", read-only" : "");
			json_t *bf = json_object_get(ins, "backing_file");
			if (bf)
				outf(o, "    Backing file:     %s (chain depth: %d)\n", json_string_value(bf),
				     (int)json_integer_value(json_object_get(ins, "backing_file_depth")));
		}
		json_t *qdev = json_object_get(b, "qdev");
		if (qdev)
			outf(o, "    Attached to:      %s\n", json_string_value(qdev));
		if (json_is_true(json_object_get(b, "removable")))
			outf(o, "    Removable device: not locked, tray closed\n");
		if (ins) {
			json_t *c = json_object_get(ins, "cache");
			bool wb = json_is_true(json_object_get(c, "writeback"));
			bool direct = json_is_true(json_object_get(c, "direct"));
			bool noflush = json_is_true(json_object_get(c, "no-flush"));
			outf(o, "    Cache mode:       %s%s%s\n", wb ? "writeback" : "writethrough",
			     direct ? ", direct" : "", noflush ? ", ignore flushes" : "");
		}
	}
	json_decref(r);
}

static void seg(struct out *o, const char *name, const struct kvm_segment *s)
{
	unsigned flags = (unsigned)s->type << 8 | (unsigned)s->s << 12 | (unsigned)s->dpl << 13 |
	                 (unsigned)s->present << 15 | (unsigned)s->avl << 20 |
	                 (unsigned)s->l << 21 | (unsigned)s->db << 22 | (unsigned)s->g << 23;
	outf(o, "%-3s=%04x %016llx %08x %08x\n", name, s->selector, s->base, s->limit, flags);
}

static void registers_of(struct out *o, struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
		outf(o, "CPU#%d: registers unavailable: %s\n", v->id, strerror(errno));
		return;
	}
	outf(o, "CPU#%d\n", v->id);
	outf(o, "RAX=%016llx RBX=%016llx RCX=%016llx RDX=%016llx\n", r.rax, r.rbx, r.rcx, r.rdx);
	outf(o, "RSI=%016llx RDI=%016llx RBP=%016llx RSP=%016llx\n", r.rsi, r.rdi, r.rbp, r.rsp);
	outf(o, "R8 =%016llx R9 =%016llx R10=%016llx R11=%016llx\n", r.r8, r.r9, r.r10, r.r11);
	outf(o, "R12=%016llx R13=%016llx R14=%016llx R15=%016llx\n", r.r12, r.r13, r.r14, r.r15);
	outf(o, "RIP=%016llx RFL=%08llx CPL=%d\n", r.rip, r.rflags, s.cs.selector & 3);
	seg(o, "ES", &s.es);
	seg(o, "CS", &s.cs);
	seg(o, "SS", &s.ss);
	seg(o, "DS", &s.ds);
	seg(o, "FS", &s.fs);
	seg(o, "GS", &s.gs);
	seg(o, "LDT", &s.ldt);
	seg(o, "TR", &s.tr);
	outf(o, "GDT=     %016llx %08x\n", s.gdt.base, s.gdt.limit);
	outf(o, "IDT=     %016llx %08x\n", s.idt.base, s.idt.limit);
	outf(o, "CR0=%08llx CR2=%016llx CR3=%016llx CR4=%08llx\n", s.cr0, s.cr2, s.cr3, s.cr4);
	outf(o, "EFER=%016llx APIC_BASE=%016llx\n", s.efer, s.apic_base);
}

/* info registers [-a]: vCPU 0 (qemu's default monitor CPU), or all. The vCPUs are
 * parked for the read, as qemu reads them on each vCPU's own thread. */
static void info_registers(struct out *o, bool all)
{
	struct vm *vm = ctl_vm_get();

	if (!vm || !vm->vcpus) {
		outf(o, "No CPU available\n");
	} else {
		vm_pause(vm);
		for (int i = 0; i < (all ? vm->nr_vcpus : 1); i++)
			registers_of(o, &vm->vcpus[i]);
		vm_resume(vm);
	}
	ctl_vm_put();
}

static void info_cpus(struct out *o)
{
	json_t *r = run(o, "query-cpus-fast", NULL), *c;
	size_t i;

	json_array_foreach(r, i, c)
		outf(o, "%c CPU #%d: thread_id=%lld\n", i == 0 ? '*' : ' ',
		     (int)json_integer_value(json_object_get(c, "cpu-index")),
		     (long long)json_integer_value(json_object_get(c, "thread-id")));
	json_decref(r);
}

static const char help_text[] =
	"cont|c -- resume emulation\n"
	"help|? [cmd] -- show the help\n"
	"info [subcommand] -- show various information about the system state\n"
	"quit|q -- quit the emulator\n"
	"screendump [-f format] filename -- save screen to a file (ppm or png)\n"
	"stop|s -- stop emulation\n"
	"system_powerdown  -- send system power down event\n"
	"system_reset  -- reset the system\n";

static const char info_help[] =
	"info block -- show the block devices\n"
	"info cpus -- show infos for each CPU\n"
	"info kvm -- show KVM information\n"
	"info name -- show the current VM name\n"
	"info registers [-a] -- show the cpu registers (-a: all CPUs)\n"
	"info status -- show the current VM status (running|paused)\n"
	"info version -- show the version of QEMU\n"
	"info vnc  -- show the vnc server status\n";

/* qemu's layout: the server, its authentication, then each client. */
static void info_vnc(struct out *o)
{
	json_t *r = run(o, "query-vnc", NULL);
	if (!r)
		return;
	if (!json_is_true(json_object_get(r, "enabled"))) {
		outf(o, "None\n");
		json_decref(r);
		return;
	}
	const char *fam = json_string_value(json_object_get(r, "family"));
	bool unix_sock = fam && !strcmp(fam, "unix");
	outf(o, "default:\n");
	outf(o, "  Server: %s%s%s (%s)\n", json_string_value(json_object_get(r, "host")),
	     unix_sock ? "" : ":", unix_sock ? "" : json_string_value(json_object_get(r, "service")),
	     fam ? fam : "unknown");
	outf(o, "    Auth: %s (Sub: none)\n", json_string_value(json_object_get(r, "auth")));
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(r, "clients"), i, c) {
		const char *cf = json_string_value(json_object_get(c, "family"));
		bool cu = cf && !strcmp(cf, "unix");
		outf(o, "  Client: %s%s%s (%s)\n", json_string_value(json_object_get(c, "host")),
		     cu ? "" : ":", cu ? "" : json_string_value(json_object_get(c, "service")),
		     cf ? cf : "unknown");
		outf(o, "    x509_dname: none\n    sasl_username: none\n");
	}
	json_decref(r);
}

static void info(struct out *o, int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	json_t *r;

	if (!strcmp(what, "status")) {
		info_status(o);
	} else if (!strcmp(what, "block")) {
		info_block(o);
	} else if (!strcmp(what, "registers")) {
		info_registers(o, argc > 2 && !strcmp(argv[2], "-a"));
	} else if (!strcmp(what, "cpus")) {
		info_cpus(o);
	} else if (!strcmp(what, "version")) {
		outf(o, "%s\n", "vtool " VTOOL_VERSION);
	} else if (!strcmp(what, "name")) {
		if ((r = run(o, "query-name", NULL))) {
			const char *n = json_string_value(json_object_get(r, "name"));
			if (n)
				outf(o, "%s\n", n);
			json_decref(r);
		}
	} else if (!strcmp(what, "vnc")) {
		info_vnc(o);
	} else if (!strcmp(what, "kvm")) {
		outf(o, "kvm support: enabled\n");
	} else if (!what[0]) {
		outf(o, "%s", info_help);
	} else {
		outf(o, "info: unknown command: '%s'\n", what);
	}
}

static void screendump(struct out *o, int argc, char **argv)
{
	const char *file = NULL, *format = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-f") && i + 1 < argc)
			format = argv[++i];
		else if (!file)
			file = argv[i];
	}
	if (!file) {
		outf(o, "screendump: filename expected\n");
		return;
	}
	json_t *args = json_pack("{s:s}", "filename", file);
	if (format)
		json_object_set_new(args, "format", json_string(format));
	json_decref(run(o, "screendump", args));
	json_decref(args);
}

/* Split a line into words (no quoting: qemu's HMP has little). */
static int split(char *line, char **argv, int max)
{
	int n = 0;
	char *save;

	for (char *p = strtok_r(line, " \t", &save); p && n < max; p = strtok_r(NULL, " \t", &save))
		argv[n++] = p;
	return n;
}

char *hmp_run_line(const char *text)
{
	struct out o = { 0 };
	char line[HMP_LINE_MAX], *argv[8];
	static const struct { const char *name, *alias, *qmp; } simple[] = {
		{ "stop", "s", "stop" }, { "cont", "c", "cont" },
		{ "system_powerdown", NULL, "system_powerdown" },
		{ "system_reset", NULL, "system_reset" }, { "quit", "q", "quit" },
	};

	snprintf(line, sizeof(line), "%s", text ? text : "");
	int argc = split(line, argv, 8);
	if (argc == 0)
		goto done;
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		if (!strcmp(argv[0], simple[i].name) ||
		    (simple[i].alias && !strcmp(argv[0], simple[i].alias))) {
			json_decref(run(&o, simple[i].qmp, NULL));
			goto done;
		}
	if (!strcmp(argv[0], "info") || !strcmp(argv[0], "i"))
		info(&o, argc, argv);
	else if (!strcmp(argv[0], "screendump"))
		screendump(&o, argc, argv);
	else if (!strcmp(argv[0], "help") || !strcmp(argv[0], "?") || !strcmp(argv[0], "h"))
		outf(&o, "%s", argc > 1 && !strcmp(argv[1], "info") ? info_help : help_text);
	else
		outf(&o, "unknown command: '%s'\n", argv[0]);
done:
	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	if (!o.buf)
		return strdup("");
	o.buf[o.len] = '\0';
	return o.buf;
}

void hmp_session_init(struct hmp_session *s, bool echo, hmp_out_fn *out, void *opaque)
{
	*s = (struct hmp_session){ .echo = echo, .out = out, .opaque = opaque };
}

static void say(struct hmp_session *s, const char *text)
{
	s->out(s->opaque, text, strlen(text));
}

void hmp_session_greet(struct hmp_session *s)
{
	say(s, "vtool " VTOOL_VERSION " monitor - type 'help' for more information\r\n(qemu) ");
}

static void run_session_line(struct hmp_session *s)
{
	s->line[s->len] = '\0';
	if (s->overflow) {
		say(s, "command line too long\r\n");
	} else {
		char *out = hmp_run_line(s->line);
		if (out)
			say(s, out);
		free(out);
	}
	s->len = 0;
	s->overflow = false;
	say(s, "(qemu) ");
}

void hmp_session_input(struct hmp_session *s, const char *data, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (c == '\n' && s->last_cr) {
			s->last_cr = false; /* "\r\n": one line end */
			continue;
		}
		s->last_cr = c == '\r';
		if (c == '\r' || c == '\n') {
			if (s->echo)
				say(s, "\r\n");
			run_session_line(s);
		} else if (c == 0x7f || c == '\b') {
			if (s->len > 0) {
				s->len--;
				if (s->echo)
					say(s, "\b \b");
			}
		} else if (isprint((unsigned char)c) || c == '\t') {
			if (s->len + 1 < sizeof(s->line))
				s->line[s->len++] = c;
			else
				s->overflow = true;
			if (s->echo)
				s->out(s->opaque, &c, 1);
		}
	}
}
