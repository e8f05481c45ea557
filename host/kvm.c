/* /dev/kvm checks: the device, this user's access to it, the API version, each KVM
 * capability `vtool run` uses (vmm/vm.c, vcpu.c, irq.c, virtio/pci.c), the vCPU limits,
 * guest CPUID features, and the probe VM (probe.c). Also the one-line fix for /dev/kvm
 * failures that `vtool run` prints. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/kvm.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "host/host.h"

#define KVM_DEV "/dev/kvm"

static const struct kvm_cap {
	int cap;
	const char *id, *name, *what;
	bool needed;            /* vtool run cannot start without it: FAIL, else WARN */
} caps[] = {
	{ KVM_CAP_USER_MEMORY, "kvm-cap-user-memory", "KVM_CAP_USER_MEMORY", "guest RAM from user space", true },
	{ KVM_CAP_SET_TSS_ADDR, "kvm-cap-set-tss-addr", "KVM_CAP_SET_TSS_ADDR", "TSS address", true },
	{ KVM_CAP_SET_IDENTITY_MAP_ADDR, "kvm-cap-identity-map", "KVM_CAP_SET_IDENTITY_MAP_ADDR", "identity map", true },
	{ KVM_CAP_EXT_CPUID, "kvm-cap-ext-cpuid", "KVM_CAP_EXT_CPUID", "supported CPUID", true },
	{ KVM_CAP_IRQCHIP, "kvm-cap-irqchip", "KVM_CAP_IRQCHIP", "in-kernel PIC, IOAPIC, LAPIC", true },
	{ KVM_CAP_PIT2, "kvm-cap-pit2", "KVM_CAP_PIT2", "in-kernel PIT", true },
	{ KVM_CAP_IRQ_ROUTING, "kvm-cap-irq-routing", "KVM_CAP_IRQ_ROUTING", "GSI routing", true },
	{ KVM_CAP_SIGNAL_MSI, "kvm-cap-msi", "KVM_CAP_SIGNAL_MSI", "MSI routing", true },
	{ KVM_CAP_IOEVENTFD, "kvm-cap-ioeventfd", "KVM_CAP_IOEVENTFD", "ioeventfd", true },
	{ KVM_CAP_IRQFD, "kvm-cap-irqfd", "KVM_CAP_IRQFD", "irqfd", true },
	{ KVM_CAP_IMMEDIATE_EXIT, "kvm-cap-immediate-exit", "KVM_CAP_IMMEDIATE_EXIT", "immediate exit", true },
	{ KVM_CAP_TSC_DEADLINE_TIMER, "kvm-cap-tsc-deadline", "KVM_CAP_TSC_DEADLINE_TIMER", "TSC deadline timer", false },
};

/* The names of the checks after the device is opened, for SKIP lines when it is not. */
static const struct { const char *id, *title; } later[] = {
	{ "kvm-api-version", "for KVM API version 12" },
	{ "kvm-vcpus", "for the vCPUs KVM allows" },
	{ "kvm-cpuid-x2apic", "for x2APIC in the guest CPUID" },
	{ "kvm-guest-speed", "if guest kernel code runs natively" },
	{ "kvm-dirty-log", "for dirty page logging" },
};

static const char *user_name(char *buf, size_t len)
{
	struct passwd *pw = getpwuid(geteuid());

	if (pw)
		snprintf(buf, len, "%s", pw->pw_name);
	else
		snprintf(buf, len, "%u", (unsigned)geteuid());
	return buf;
}

/* This process is in group gid (primary or supplementary). */
static bool in_group_now(gid_t gid)
{
	gid_t groups[256];
	int n = getgroups(256, groups);

	if (getegid() == gid)
		return true;
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* The user database lists this user in group gid (a new login would have it). */
static bool in_group_db(const char *user, gid_t gid)
{
	struct passwd *pw = getpwnam(user);
	gid_t groups[256];
	int n = 256;

	if (!pw || getgrouplist(user, pw->pw_gid, groups, &n) < 0)
		return false;
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

static void access_fix(char *buf, size_t len)
{
	struct stat st;
	char user[64];
	struct group *g = NULL;

	user_name(user, sizeof(user));
	if (stat(KVM_DEV, &st) == 0 && st.st_gid != 0 && (st.st_mode & 0060) == 0060)
		g = getgrgid(st.st_gid);
	if (g && in_group_db(user, g->gr_gid) && !in_group_now(g->gr_gid))
		snprintf(buf, len, "you are in group %s but this session is not yet: log out and "
		         "in again (or start a shell with 'newgrp %s')", g->gr_name, g->gr_name);
	else if (g)
		snprintf(buf, len, "join group %s, which may open " KVM_DEV ": sudo usermod -aG %s %s, "
		         "then log out and in again", g->gr_name, g->gr_name, user);
	else
		snprintf(buf, len, "let group kvm open " KVM_DEV " and join it: sudo sh -c 'groupadd "
		         "-rf kvm && chgrp kvm " KVM_DEV " && chmod 0660 " KVM_DEV " && usermod -aG kvm "
		         "%s', then log out and in again (udev's rule KERNEL==\"kvm\", GROUP=\"kvm\", "
		         "MODE=\"0660\" keeps it so across reboots: apt-get install udev)", user);
}

const char *host_kvm_fix(int err)
{
	static char buf[640];
	const char *mod = host_kvm_module();
	const char *tech = host_cpu_is_amd() ? "AMD-V (SVM)" : "Intel VT-x";

	switch (err < 0 ? -err : err) {
	case ENOENT:
		if (host_module_present(mod))
			snprintf(buf, sizeof(buf), "%s is loaded but " KVM_DEV " is missing: let udev "
			         "create it (apt-get install udev) or create it yourself: sudo mknod -m "
			         "0660 " KVM_DEV " c 10 232", mod);
		else
			snprintf(buf, sizeof(buf), "load KVM: sudo modprobe %s; if that fails or the "
			         "kernel log says 'disabled by bios', turn on %s in the firmware setup "
			         "(inside a VM: turn on nested virtualization on its host)", mod, tech);
		return buf;
	case EACCES:
		access_fix(buf, sizeof(buf));
		return buf;
	case EPERM:
		snprintf(buf, sizeof(buf), "a security policy forbids " KVM_DEV " (in a container: "
		         "pass the device, e.g. docker run --device " KVM_DEV "; otherwise check "
		         "SELinux/AppArmor and the device cgroup)");
		return buf;
	case ENXIO:
	case ENODEV:
		snprintf(buf, sizeof(buf), KVM_DEV " has no driver behind it: sudo modprobe %s", mod);
		return buf;
	case EBUSY:
		snprintf(buf, sizeof(buf), "another hypervisor (VirtualBox, VMware) holds %s: quit "
		         "it or unload its kernel module, then try again", tech);
		return buf;
	case ENOTSUP:
		snprintf(buf, sizeof(buf), "this kernel's KVM does not speak API version 12: use a "
		         "Linux kernel from the last decade");
		return buf;
	default:
		return NULL;
	}
}

static void fail_with_fix(struct host_check *k, int e)
{
	const char *fix = host_kvm_fix(e);

	k->result = HOST_FAIL;
	host_fix(k, "%s", fix ? fix : "see the kernel log (dmesg) for KVM's messages");
}

/* SKIP lines for the checks that need an open /dev/kvm (from the API version on, or
 * from the capabilities on), so every run reports the same checks. */
static void skip_later(struct host_report *r, bool api_too, const char *why)
{
	struct host_check *k;

	if (api_too && (k = host_add(r, "kvm", later[0].id, later[0].title, HOST_SKIP)))
		host_detail(k, "%s", why);
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		char title[80];
		snprintf(title, sizeof(title), "for %s (%s)", caps[i].name, caps[i].what);
		if ((k = host_add(r, "kvm", caps[i].id, title, HOST_SKIP)))
			host_detail(k, "%s", why);
	}
	for (size_t i = 1; i < sizeof(later) / sizeof(later[0]); i++)
		if ((k = host_add(r, "kvm", later[i].id, later[i].title, HOST_SKIP)))
			host_detail(k, "%s", why);
}

/* Is CPUID leaf 1 ECX bit `bit` in KVM's supported table? -1 if it cannot be read. */
static int supported_cpuid_bit(int fd, unsigned bit)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -1;
		c->nent = n;
		if (ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			int v = 0;
			for (uint32_t i = 0; i < c->nent; i++)
				if (c->entries[i].function == 1)
					v = (int)(c->entries[i].ecx >> bit & 1);
			free(c);
			return v;
		}
		free(c);
		if (errno != E2BIG)
			return -1;
	}
	return -1;
}

/* Instructions per second as millions, with 3 significant digits but no exponent. */
static const char *mips(double ips, char *buf, size_t len)
{
	double m = ips / 1e6;

	snprintf(buf, len, m >= 100 ? "%.0f" : m >= 10 ? "%.1f" : "%.2f", m);
	return buf;
}

static void check_probe(struct host_report *r, int fd)
{
	char m0[32], m3[32];
	struct host_probe p;
	struct vt_error err = { 0 };
	char why[700];
	struct host_check *k = host_add(r, "kvm", later[3].id, later[3].title, HOST_PASS);
	int ret = host_probe_run(fd, &p, &err);

	if (k && ret) {
		vt_error_format(&err, why, sizeof(why));
		k->result = HOST_WARN;
		host_detail(k, "could not measure: %s", why);
		host_fix(k, "nothing to change here; if guests start slowly, compare 'vtool host "
		         "validate' on another host");
	} else if (k && p.cpl0_ips * 20 < p.cpl3_ips) {
		k->result = HOST_WARN;
		host_detail(k, "guest kernel code is emulated: expect slow boots (CPL0 %s M "
		            "instructions/s, CPL3 %s M/s)", mips(p.cpl0_ips, m0, sizeof(m0)),
		            mips(p.cpl3_ips, m3, sizeof(m3)));
		if (host_module_present("kvm_pvm"))
			host_fix(k, "kvm_pvm emulates guest kernel code: for fast boots use bare metal "
			         "or a VM with nested VT-x/AMD-V; test guests here should work at CPL3");
		else
			host_fix(k, "use bare metal, or a VM whose host offers nested VT-x/AMD-V");
	} else if (k) {
		host_detail(k, "yes: CPL0 %s M instructions/s, CPL3 %s M/s",
		            mips(p.cpl0_ips, m0, sizeof(m0)), mips(p.cpl3_ips, m3, sizeof(m3)));
	}
	k = host_add(r, "kvm", later[4].id, later[4].title, HOST_PASS);
	if (k && ret) {
		k->result = HOST_SKIP;
		host_detail(k, "the probe VM did not run");
	} else if (k && p.dirty_log_seen) {
		host_detail(k, "KVM_GET_DIRTY_LOG saw the probe guest's writes");
	} else if (k) {
		k->result = HOST_WARN;
		host_detail(k, "%s", p.dirty_log_ok ? "KVM_GET_DIRTY_LOG missed the probe guest's "
		            "writes" : "KVM_GET_DIRTY_LOG failed");
		host_fix(k, "VGA display updates will be missed: use a newer host kernel");
	}
}

void host_check_kvm(struct host_report *r)
{
	struct stat st;
	char user[64];
	struct host_check *k = host_add(r, "kvm", "kvm-device", "if device " KVM_DEV " exists",
	                                HOST_PASS);

	if (stat(KVM_DEV, &st) < 0) {
		int e = errno;
		if (k) {
			host_detail(k, "%s", strerror(e));
			fail_with_fix(k, e);
		}
		k = host_add(r, "kvm", "kvm-device-access", "if device " KVM_DEV " is accessible",
		             HOST_SKIP);
		if (k)
			host_detail(k, "no " KVM_DEV);
		skip_later(r, true, "no " KVM_DEV);
		return;
	}
	struct group *g = getgrgid(st.st_gid);
	struct passwd *o = getpwuid(st.st_uid);
	char mode[11];
	snprintf(mode, sizeof(mode), "%c%c%c%c%c%c%c%c%c%c", S_ISCHR(st.st_mode) ? 'c' : '?',
	         "-r"[!!(st.st_mode & 0400)], "-w"[!!(st.st_mode & 0200)], "-x"[!!(st.st_mode & 0100)],
	         "-r"[!!(st.st_mode & 040)], "-w"[!!(st.st_mode & 020)], "-x"[!!(st.st_mode & 010)],
	         "-r"[!!(st.st_mode & 04)], "-w"[!!(st.st_mode & 02)], "-x"[!!(st.st_mode & 01)]);
	if (k)
		host_detail(k, "%s %s:%s, device %u:%u", mode, o ? o->pw_name : "?",
		            g ? g->gr_name : "?", major(st.st_rdev), minor(st.st_rdev));
	if (k && !S_ISCHR(st.st_mode)) {
		k->result = HOST_FAIL;
		host_fix(k, "remove it and create the device: sudo mknod -m 0660 " KVM_DEV " c 10 232");
	}

	k = host_add(r, "kvm", "kvm-device-access", "if device " KVM_DEV " is accessible", HOST_PASS);
	int fd = open(KVM_DEV, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (k) {
			host_detail(k, "open for reading and writing as %s: %s", user_name(user, sizeof(user)),
			            strerror(e));
			fail_with_fix(k, e);
		}
		skip_later(r, true, "cannot open " KVM_DEV);
		return;
	}
	if (k)
		host_detail(k, "read and write as %s", user_name(user, sizeof(user)));

	int version = ioctl(fd, KVM_GET_API_VERSION, 0);
	k = host_add(r, "kvm", later[0].id, later[0].title, HOST_PASS);
	if (k)
		host_detail(k, "%d", version);
	if (version != KVM_API_VERSION) {
		if (k)
			fail_with_fix(k, ENOTSUP);
		skip_later(r, false, "KVM API is not version 12");
		close(fd);
		return;
	}
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		char title[80];
		snprintf(title, sizeof(title), "for %s (%s)", caps[i].name, caps[i].what);
		int v = ioctl(fd, KVM_CHECK_EXTENSION, caps[i].cap);
		k = host_add(r, "kvm", caps[i].id, title, v > 0 ? HOST_PASS :
		             caps[i].needed ? HOST_FAIL : HOST_WARN);
		if (!k || v > 0)
			continue;
		host_detail(k, "not offered by this kernel's KVM");
		host_fix(k, caps[i].needed ? "vtool run needs it: use a newer host kernel (or one "
		         "built with KVM's x86 defaults)" : "guests fall back to slower timers: use "
		         "a newer host kernel");
	}

	int nr = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	int max = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	k = host_add(r, "kvm", later[1].id, later[1].title, nr > 0 ? HOST_PASS : HOST_WARN);
	if (k && nr > 0) {
		host_detail(k, "%d recommended (KVM_CAP_NR_VCPUS), %d at most (KVM_CAP_MAX_VCPUS); "
		            "this host has %ld CPUs", nr, max > 0 ? max : nr, sysconf(_SC_NPROCESSORS_ONLN));
	} else if (k) {
		host_detail(k, "KVM_CAP_NR_VCPUS is not answered");
		host_fix(k, "use -smp 1, or a newer host kernel");
	}

	int x2apic = supported_cpuid_bit(fd, 21);
	k = host_add(r, "kvm", later[2].id, later[2].title, x2apic == 1 ? HOST_PASS : HOST_WARN);
	if (k && x2apic == 1) {
		host_detail(k, "offered by KVM_GET_SUPPORTED_CPUID");
	} else if (k) {
		host_detail(k, "%s", x2apic < 0 ? "KVM_GET_SUPPORTED_CPUID failed" : "not offered");
		host_fix(k, "guests use the xAPIC (at most 255 vCPUs): use a newer host kernel");
	}
	check_probe(r, fd);
	close(fd);
}
