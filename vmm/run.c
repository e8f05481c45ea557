/* vtool run: the command front of the VMM. Parses qemu's command line, creates the
 * machine, runs it until it stops, reboots it when asked, and turns the stop reason into
 * an exit status. Terminal, signals, -daemonize and -pidfile live here. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "host/host.h"
#include "util/command.h"
#include "vmm/console.h"
#include "vmm/control.h"
#include "vmm/ui/display.h"
#include "vmm/hw/fw_cfg.h"
#include "vmm/keep.h"
#include "vmm/monitor.h"
#include "vmm/netscript.h"
#include "vmm/sandbox.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

static const char run_help_machine[] =
	"Usage: vtool run [options]\n"
	"\n"
	"Run a KVM virtual machine. Options follow qemu-system-x86_64's syntax.\n"
	"\n"
	"Machine:\n"
	"  -m SIZE              RAM (default 128M; a bare number means MiB)\n"
	"  -smp [cpus=]N[,sockets=S][,dies=D][,cores=C][,threads=T][,maxcpus=N]\n"
	"                       vCPUs and their topology, with qemu's rules (at most 64)\n"
	"  -cpu host[,+feat][,-feat]\n"
	"                       CPU model (host; qemu64/kvm64/max mean the same here) and\n"
	"                       features to hide, e.g. -cpu host,-cx16\n"
	"  -enable-kvm, -accel kvm, -machine pc[,accel=kvm][,usb=off][,vmport=off]\n"
	"                       accepted: KVM is always used, the machine is always a pc\n"
	"  -machine graphics=off  firmware talks to the serial port (as -nographic does)\n"
	"  -rtc [base=utc|localtime][,clock=host][,driftfix=none]\n"
	"  -no-hpet             accepted (there is no HPET)\n"
	"Boot (without -kernel: firmware, Debian's SeaBIOS, boots the disks like qemu's pc):\n"
	"  -bios FILE           BIOS image (default /usr/share/seabios/bios-256k.bin)\n"
	"  -boot [order=]DRIVES[,once=DRIVES][,menu=on|off][,splash-time=MS]\n"
	"        [,reboot-timeout=MS][,strict=on|off]\n"
	"                       c first disk, d CD-ROM, n network, a floppy (default cad);\n"
	"                       reboot-timeout: reboot this long after 'No bootable device'\n"
	"                       (-1, the default, waits forever)\n"
	"  -kernel FILE         direct boot: Linux bzImage (64-bit boot protocol) or an ELF\n"
	"                       (32- or 64-bit) with a PVH note\n"
	"  -initrd FILE         initial ramdisk\n"
	"  -append CMDLINE      kernel command line\n"
	"  -uuid UUID           the machine's SMBIOS UUID\n";

static const char run_help_devices[] =
	"Devices and I/O:\n"
	"  -serial stdio|file:PATH|none   COM1 (default stdio; none with -nodefaults)\n"
	"  -nographic           serial on stdio with Ctrl-A escapes (C-a x quits, C-a h help);\n"
	"                       the firmware's screen text appears there too\n"
	"  -debugcon file:PATH [-global isa-debugcon.iobase=0x402]\n"
	"  -chardev file,id=ID,path=PATH -device isa-debugcon,chardev=ID,iobase=0x402\n"
	"                       debug console port (SeaBIOS logs on 0x402)\n"
	"  -nodefaults          no default serial port (give -serial) and no VGA (unless -vga std)\n"
	"  -device isa-debug-exit[,iobase=0x501][,iosize=2]\n"
	"                       a write of V to the port exits with status (V<<1)|1\n"
	"Disks (qcow2 or raw, through the same block layer as vtool img):\n"
	"  -hda/-hdb/-hdc/-hdd FILE, -cdrom FILE      IDE disks and an ATAPI CD-ROM\n"
	"  -drive file=F[,if=ide|virtio|none][,format=raw|qcow2][,index=N][,media=disk|cdrom]\n"
	"         [,readonly=on][,cache=writeback|none|writethrough|directsync|unsafe]\n"
	"         [,discard=unmap][,snapshot=on][,id=ID][,bootindex=N][,aio=threads]\n"
	"  -device ide-hd|ide-cd|virtio-blk-pci,drive=ID[,bus=ide.N,unit=N][,bootindex=N]\n"
	"         [,serial=STR][,id=ID]\n"
	"  -snapshot            write to throw-away overlays; the images stay untouched\n"
	"Network (virtio-net over a tap made by 'vtool net'):\n"
	"  -net nic[,model=virtio][,macaddr=MAC] -net tap,ifname=TAP,script=no,downscript=no\n"
	"  -netdev tap,id=ID,ifname=TAP,script=no,downscript=no\n"
	"  -device virtio-net-pci,netdev=ID[,mac=MAC][,bootindex=N]\n"
	"  -net none            accepted\n"
	"  script=FILE / downscript=FILE run with the tap's name at start / exit (qemu's\n"
	"  defaults /etc/qemu-ifup and /etc/qemu-ifdown; script=no runs nothing)\n"
	"Display (std VGA with Debian's VGA BIOS, shown over VNC):\n"
	"  -vga std|none        the VGA card (default std: PCI 00:02.0, Bochs VBE modes)\n"
	"  -global VGA.vgamem_mb=N   video memory (default 16)\n"
	"  -vnc :N              VNC server on 127.0.0.1 port 5900+N (this host only)\n"
	"  -vnc HOST:N, -vnc 0.0.0.0:N   listen on HOST (0.0.0.0: every address)\n"
	"  -vnc unix:PATH, -vnc none, -display vnc=ADDR, -display none\n"
	"       [,password-secret=ID][,share=allow-exclusive|force-shared|ignore]\n"
	"  -object secret,id=ID,file=FILE|data=TEXT   the VNC password (VNC auth: 8 chars)\n"
	"  -k LAYOUT            keyboard layout of the guest (qemu's keymaps: de, fr, ...;\n"
	"                       default en-us)\n"
	"Lifecycle:\n"
	"  -no-reboot           exit (status 0) when the guest resets instead of rebooting\n"
	"  -name NAME[,process=PNAME][,debug-threads=on], -pidfile FILE, -daemonize\n"
	"  -help, -version\n";

static const char run_help_control[] =
	"Monitors (qemu's QMP and HMP; DEV is unix:PATH,server=on[,wait=off],\n"
	"tcp:HOST:PORT,server=on[,wait=off] or stdio):\n"
	"  -qmp DEV, -qmp-pretty DEV    QMP (JSON): query-status, stop, cont, system_powerdown,\n"
	"                       system_reset, quit, query-block, screendump, ... and events\n"
	"  -monitor DEV|none    HMP (text): info status|block|registers, stop, cont, ...\n"
	"  -chardev socket,id=ID,path=PATH|host=H,port=P,server=on[,wait=off]\n"
	"  -mon chardev=ID[,mode=control|readline][,pretty=on]\n"
	"                       -nographic and -serial mon:stdio: C-a c switches to the HMP\n"
	"  -S                   start paused (cont starts the guest)\n"
	"  -no-shutdown         a guest power-off pauses the machine instead of ending vtool\n"
	"Sandbox (see README: what each thread may call):\n"
	"  -sandbox on|off      seccomp-BPF allow-lists per thread once the machine is set up;\n"
	"                       a forbidden system call kills vtool with a one-line report.\n"
	"                       On by default (off by default in sanitizer builds)\n"
	"  -runas USER|UID[:GID]  drop to this user once /dev/kvm, images, taps and sockets\n"
	"                       are open\n"
	"  -chroot DIR          chroot into DIR then (give absolute paths before it)\n"
	"\n"
	"qemu-system-x86_64 options vtool lacks are refused with 'not supported yet'; they are:\n";

static const char run_help_tail[] =
	"Exit status: 0 after power-off, reset with -no-reboot, C-a x or SIGINT/SIGTERM;\n"
	"(V<<1)|1 from isa-debug-exit; 1 on errors (a KVM error or unhandled exit prints the\n"
	"vCPU's registers and the instruction bytes at RIP).\n"
	"\n"
	"Examples:\n"
	"  vtool run -enable-kvm -m 2048 -hda disk.qcow2 -cdrom install.iso -boot d -vnc :19\n"
	"  (then: vncviewer localhost:19)\n"
	"  vtool run -enable-kvm -m 2048 -hda disk.qcow2 -cdrom install.iso -boot d -nographic\n"
	"  vtool run -enable-kvm -m 512 -kernel bzImage -append console=ttyS0 -nographic\n";

/* The help text, with qemu's options that vtool lacks listed from options_qemu.c's table
 * (filled before main runs; cli/ prints it). */
static char run_help[sizeof(run_help_machine) + sizeof(run_help_devices) +
                     sizeof(run_help_control) + sizeof(run_help_tail) + 4096];

__attribute__((constructor)) static void run_help_build(void)
{
	snprintf(run_help, sizeof(run_help), "%s%s%s", run_help_machine, run_help_devices,
	         run_help_control);
	vm_options_unsupported_list(run_help, sizeof(run_help) - sizeof(run_help_tail), 2);
	strcat(run_help, "\n");
	strcat(run_help, run_help_tail);
}

static struct {
	pthread_mutex_t lock;
	struct vm *vm;
	int signal;
} run_state = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;

	pthread_setname_np(pthread_self(), "signals");
	sandbox_thread(SANDBOX_MONITOR);
	while (sigwait(set, &sig) == 0) {
		if (sig == SIGUSR2)
			break; /* vtool is finishing */
		pthread_mutex_lock(&run_state.lock);
		run_state.signal = sig;
		pthread_mutex_unlock(&run_state.lock);
		ctl_quit(CTL_CAUSE_HOST_SIGNAL);
	}
	return NULL;
}

static void set_current_vm(struct vm *vm)
{
	pthread_mutex_lock(&run_state.lock);
	run_state.vm = vm;
	pthread_mutex_unlock(&run_state.lock);
	console_attach(vm);
	display_attach(vm);
}

static int write_pidfile(const char *path, char *abs, size_t abslen)
{
	char buf[32];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	ssize_t w = write(fd, buf, (size_t)n);
	close(fd);
	if (w != n)
		return -EIO;
	if (!realpath(path, abs))
		snprintf(abs, abslen, "%s", path);
	return 0;
}

/* Fork; the parent waits until the child reports that the VM exists, then exits with
 * the child's verdict (as qemu's -daemonize does). Returns the fd the child writes its
 * verdict to, or -1 on error (in the parent's process: it has printed the error). */
static int daemonize(void)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0) {
		char status = 1;
		close(p[1]);
		if (read(p[0], &status, 1) != 1)
			status = 1;
		_exit(status);
	}
	close(p[0]);
	setsid();
	return p[1];
}

static void daemon_ready(int fd, char status)
{
	if (fd < 0)
		return;
	if (status == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
			close(null);
		}
		if (chdir("/") < 0) {
			/* the VM runs anyway; the working directory only matters to relative paths */
		}
	}
	if (write(fd, &status, 1) < 0) {
		/* the parent is gone; nothing to tell */
	}
	close(fd);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* VTOOL_RUN_STATS=1: where a boot's time went, for bench/run-boot.sh. */
static void print_stats(struct vm *vm, uint64_t t0)
{
	struct vcpu_stats sum = { 0 };
	static uint64_t ports[65536];

	memset(ports, 0, sizeof(ports));
	for (int i = 0; i < vm->nr_vcpus; i++) {
		const struct vcpu_stats *st = &vm->vcpus[i].stats;
		sum.exits += st->exits;
		sum.io += st->io;
		sum.io_elems += st->io_elems;
		sum.mmio += st->mmio;
		sum.hlt += st->hlt;
		sum.intr += st->intr;
		sum.other += st->other;
		for (int p = 0; st->io_by_port && p < 65536; p++)
			ports[p] += st->io_by_port[p];
	}
	fprintf(stderr, "vtool run: %.3f s; exits %llu: io %llu (%llu elements), mmio %llu, hlt %llu, "
	        "signal %llu, other %llu\n", (double)(mono_ns() - t0) / 1e9,
	        (unsigned long long)sum.exits, (unsigned long long)sum.io,
	        (unsigned long long)sum.io_elems, (unsigned long long)sum.mmio,
	        (unsigned long long)sum.hlt, (unsigned long long)sum.intr,
	        (unsigned long long)sum.other);
	fprintf(stderr, "vtool run: io exits by port:");
	for (int k = 0; k < 8; k++) {
		int best = -1;
		for (int p = 0; p < 65536; p++)
			if (ports[p] && (best < 0 || ports[p] > ports[best]))
				best = p;
		if (best < 0)
			break;
		fprintf(stderr, " 0x%x:%llu", best, (unsigned long long)ports[best]);
		ports[best] = 0;
	}
	fprintf(stderr, "\n");
	struct fw_cfg *fc = vm_device(vm, "fw_cfg");
	if (fc) {
		struct fw_cfg_stats f;
		fw_cfg_get_stats(fc, &f);
		fprintf(stderr, "vtool run: fw_cfg: %llu selects, %llu data-port reads, %llu DMA "
		        "transfers (%llu bytes)\n", (unsigned long long)f.selects,
		        (unsigned long long)f.port_reads, (unsigned long long)f.dma_kicks,
		        (unsigned long long)f.dma_bytes);
	}
}

/* Run one boot of the machine; returns the stop reason and sets *status. */
static enum vm_stop run_once(const struct vm_config *cfg, int boot_count, int *daemon_fd,
                             uint64_t t0, int *status)
{
	struct vm vm;
	struct vt_error err = { 0 };

	/* The first boot opens the taps; their scripts run then (netscript.h). */
	if (vm_create(&vm, cfg, boot_count, &err) ||
	    (boot_count == 0 && netscript_up(cfg, &err))) {
		console_stop();
		vt_error_print(&err, stderr);
		/* The fix `vtool host validate` would give for the same failure. */
		const char *fix = !strcmp(err.file, "/dev/kvm") ? host_kvm_fix(err.code) : NULL;
		if (fix)
			fprintf(stderr, "vtool: fix: %s\n", fix);
		daemon_ready(*daemon_fd, 1);
		*daemon_fd = -1;
		vm_destroy(&vm);
		*status = 1;
		return VM_STOP_ERROR;
	}
	daemon_ready(*daemon_fd, 0);
	*daemon_fd = -1;
	/* Everything the machine needs is open (and kept for later boots): -chroot, -runas
	 * and the seccomp filters now, before the guest runs. */
	if (boot_count == 0 && sandbox_enter(&err)) {
		console_stop();
		vt_error_print(&err, stderr);
		vm_destroy(&vm);
		*status = 1;
		return VM_STOP_ERROR;
	}
	set_current_vm(&vm);
	/* Runs it, pauses and resumes it for the monitors, tells them what happened. */
	enum vm_stop why = ctl_run(&vm, &err);
	set_current_vm(NULL);
	if (getenv("VTOOL_RUN_TIMES") && vm.nr_vcpus > 0)
		fprintf(stderr, "vtool run: first guest instruction %.3f ms after start\n",
		        (double)(vm.vcpus[0].first_run_ns - t0) / 1e6);
	if (getenv("VTOOL_RUN_STATS"))
		print_stats(&vm, t0);
	*status = vm.exit_status;
	if (why == VM_STOP_ERROR) {
		console_stop();
		/* The guest's console shares the terminal and rarely ends its line. */
		if (cfg->serial == VM_SERIAL_STDIO && isatty(STDERR_FILENO))
			fputc('\n', stderr);
		if (vm.stop_message)
			fprintf(stderr, "vtool: %s\n", vm.stop_message);
		else
			vt_error_print(&err, stderr);
		*status = 1;
	}
	vm_destroy(&vm);
	return why;
}

static int run_main(int argc, char **argv)
{
	uint64_t t0 = mono_ns();
	struct vm_config cfg;
	struct vt_error err = { 0 };
	char pidfile[PATH_MAX] = "";
	int daemon_fd = -1, status = 0;

	if (vm_config_parse(&cfg, argc, argv, &err)) {
		vt_error_print(&err, stderr);
		return 1;
	}
	if (cfg.ctl.want_help) {
		fputs(run_help, stdout);
		return 0;
	}
	if (cfg.ctl.want_version) {
		printf("vtool version %s\n", VTOOL_VERSION);
		return 0;
	}
	if (vm_config_check(&cfg, &err)) {
		vt_error_print(&err, stderr);
		return 1;
	}
	/* For tests/integration/run-options.sh: what the command line amounts to. */
	const char *dump = getenv("VTOOL_RUN_DUMP_CONFIG");
	if (dump && !strcmp(dump, "options")) {
		vm_options_accepted(stdout);
		return 0;
	}
	if (dump && !strcmp(dump, "1")) {
		vm_config_dump(&cfg, stdout);
		return 0;
	}
	if (cfg.process_name)
		prctl(PR_SET_NAME, cfg.process_name, 0, 0, 0); /* -name ...,process= */
	if (cfg.daemonize && cfg.serial == VM_SERIAL_STDIO) {
		fprintf(stderr, "vtool: -daemonize: cannot be used with the serial port on stdio "
		                "(use -serial file:PATH or -serial none)\n");
		return 1;
	}
	if (cfg.daemonize && (daemon_fd = daemonize()) < 0) {
		perror("vtool: -daemonize");
		return 1;
	}
	if (cfg.pidfile) {
		int ret = write_pidfile(cfg.pidfile, pidfile, sizeof(pidfile));
		if (ret) {
			fprintf(stderr, "vtool: %s: write pid file: %s\n", cfg.pidfile, strerror(-ret));
			daemon_ready(daemon_fd, 1);
			return 1;
		}
	}

	/* The sandbox's filters are compiled before any thread starts (sandbox.h). */
	if (sandbox_init(&cfg, &err)) {
		vt_error_print(&err, stderr);
		daemon_ready(daemon_fd, 1);
		if (pidfile[0])
			unlink(pidfile);
		return 1;
	}
	/* Signals go to one thread; vCPU threads only ever see their kick signal. */
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGUSR1);
	/* A shell starts background jobs with SIGINT ignored, and sigwait() never sees an
	 * ignored signal: take them back, as qemu does by installing handlers. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	vcpu_init_signals();
	pthread_t sig_thread;
	bool have_sig_thread = pthread_create(&sig_thread, NULL, signal_thread, &set) == 0;
	if (display_start(&cfg, &err)) {
		vt_error_print(&err, stderr);
		daemon_ready(daemon_fd, 1);
		if (pidfile[0])
			unlink(pidfile);
		return 1;
	}
	/* Ctrl-A escapes with -nographic and -serial mon:stdio (C-a c: the monitor). */
	if (cfg.serial == VM_SERIAL_STDIO && !cfg.daemonize)
		console_start(cfg.nographic || cfg.ctl.mon_stdio_mux);
	atexit(console_restore_terminal);

	ctl_init(&cfg);
	/* Monitors listen before the machine exists (wait=on waits for a client here). */
	if (monitor_start(&cfg, &err)) {
		console_stop();
		vt_error_print(&err, stderr);
		daemon_ready(daemon_fd, 1);
		monitor_stop();
		return 1;
	}
	for (int boots = 0;; boots++) {
		enum vm_stop why = run_once(&cfg, boots, &daemon_fd, t0, &status);
		if (why == VM_STOP_RESET && !cfg.no_reboot) {
			pthread_mutex_lock(&run_state.lock);
			bool signalled = run_state.signal != 0;
			pthread_mutex_unlock(&run_state.lock);
			if (!signalled)
				continue; /* reboot: a fresh machine from the same configuration */
		}
		if (why == VM_STOP_RESET || why == VM_STOP_POWEROFF || why == VM_STOP_QUIT)
			status = 0;
		break;
	}
	console_stop();
	display_stop();
	if (have_sig_thread) {
		pthread_kill(sig_thread, SIGUSR2);
		pthread_join(sig_thread, NULL);
	}
	if (run_state.signal)
		fprintf(stderr, "vtool run: terminating on signal %d\n", run_state.signal);
	monitor_stop();
	keep_release_all(); /* images, taps, files: kept across boots, closed once */
	if (pidfile[0])
		unlink(pidfile);
	return status;
}

const struct vt_command vt_cmd_run = {
	.group = "run",
	.name = NULL,
	.summary = "run a KVM virtual machine (qemu-system-x86_64 options)",
	.help = run_help,
	.main = run_main,
};
