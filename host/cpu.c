/* CPU checks: VT-x/AMD-V (and whether the firmware turned it off), the KVM modules,
 * nested virtualization, and the hypervisor this host itself runs under. */
#include <cpuid.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/klog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/host.h"

#define MSR_FEATURE_CONTROL 0x3a          /* Intel: bit 0 lock, bit 2 VMX outside SMX */
#define MSR_VM_CR           0xc0010114u   /* AMD: bit 4 SVMDIS */

static void cpuid(uint32_t leaf, uint32_t r[4])
{
	__cpuid_count(leaf, 0, r[0], r[1], r[2], r[3]);
}

bool host_cpu_is_amd(void)
{
	uint32_t r[4];
	char v[13];

	cpuid(0, r);
	memcpy(v, &r[1], 4);
	memcpy(v + 4, &r[3], 4);
	memcpy(v + 8, &r[2], 4);
	v[12] = '\0';
	return !strcmp(v, "AuthenticAMD") || !strcmp(v, "HygonGenuine");
}

const char *host_kvm_module(void)
{
	if (host_module_present("kvm_pvm"))
		return "kvm_pvm";
	return host_cpu_is_amd() ? "kvm_amd" : "kvm_intel";
}

bool host_module_present(const char *name)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/module/%s", name);
	return stat(path, &st) == 0;
}

/* The "flags" line of /proc/cpuinfo has the word. */
static bool cpuinfo_flag(const char *flag)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[8192];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5))
			continue;
		for (char *t = strtok(strchr(line, ':') ? strchr(line, ':') + 1 : line, " \t\n");
		     t && !found; t = strtok(NULL, " \t\n"))
			found = !strcmp(t, flag);
		break;
	}
	fclose(f);
	return found;
}

/* Bit of an MSR of CPU 0 through the msr driver: 1, 0, or -1 when unreadable (no msr
 * module, not root). */
static int msr_bit(uint32_t msr, unsigned bit)
{
	uint64_t v;
	int fd = open("/dev/cpu/0/msr", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	ssize_t n = pread(fd, &v, sizeof(v), msr);
	close(fd);
	return n == sizeof(v) ? (int)(v >> bit & 1) : -1;
}

/* What the kernel and kvm_intel/kvm_amd say when the firmware turned VT-x/AMD-V off
 * (other "disabled by BIOS" lines, such as SGX's, are about something else). */
static const char *const fw_off_lines[] = {
	"VMX (outside TXT) disabled by BIOS", "VMX not enabled (by BIOS)",
	"SVM disabled (by BIOS)", "kvm: disabled by bios",
};

/* The last kernel log line containing one of the needles (case-insensitive), if the log
 * is readable (CAP_SYSLOG or kernel.dmesg_restrict=0). */
static bool klog_find(const char *const *needles, size_t nn, char *out, size_t len)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	bool found = false;

	if (size <= 0)
		return false;
	char *buf = malloc((size_t)size + 1);
	if (!buf)
		return false;
	int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	for (char *line = buf, *end; n > 0 && line < buf + n; line = end + 1) {
		end = memchr(line, '\n', (size_t)(buf + n - line));
		if (!end)
			end = buf + n;
		*end = '\0';
		for (size_t i = 0; i < nn; i++)
			if (strcasestr(line, needles[i])) {
				snprintf(out, len, "%s", line);
				found = true;
			}
	}
	free(buf);
	return found;
}

static void check_hw_virt(struct host_report *r)
{
	bool amd = host_cpu_is_amd(), pvm = host_module_present("kvm_pvm");
	const char *flag = amd ? "svm" : "vmx", *tech = amd ? "AMD-V (svm)" : "Intel VT-x (vmx)";
	uint32_t c[4];
	char line[256] = "";

	cpuid(amd ? 0x80000001u : 1u, c);
	bool in_cpuid = c[2] >> (amd ? 2 : 5) & 1, in_flags = cpuinfo_flag(flag);
	cpuid(1, c);
	bool guest = c[2] >> 31 & 1;
	/* The kernel drops vmx from the flags when the firmware locked VT-x off; the MSR
	 * says so directly where it is readable; kvm_intel/kvm_amd say it when they load. */
	int lock = amd ? -1 : msr_bit(MSR_FEATURE_CONTROL, 0);
	int on = amd ? -1 : msr_bit(MSR_FEATURE_CONTROL, 2);
	bool fw_off = (!amd && in_cpuid && !in_flags) || (lock == 1 && on == 0) ||
	              (amd && msr_bit(MSR_VM_CR, 4) == 1) ||
	              klog_find(fw_off_lines, sizeof(fw_off_lines) / sizeof(fw_off_lines[0]), line,
	                        sizeof(line));

	struct host_check *k = host_add(r, "cpu", "hardware-virtualization",
	                                "for hardware virtualization", HOST_PASS);
	if (!k)
		return;
	if (in_flags && !fw_off) {
		host_detail(k, "%s", tech);
	} else if (pvm) {
		host_detail(k, "no %s, none needed: KVM is provided by kvm_pvm (PVM, "
		            "page-table-based virtualization)", tech);
	} else if (fw_off) {
		k->result = HOST_FAIL;
		host_detail(k, "the CPU has %s but the firmware turned it off%s%s", tech,
		            line[0] ? ": " : "", line);
		host_fix(k, "turn on %s ('Virtualization Technology' or 'SVM Mode') in the "
		         "firmware (BIOS/UEFI) setup, then power the machine off and on",
		         amd ? "AMD-V" : "Intel VT-x");
	} else if (guest) {
		k->result = HOST_FAIL;
		host_detail(k, "this virtual machine's CPU has no %s", flag);
		host_fix(k, "turn on nested virtualization in the hypervisor that runs this machine "
		         "(on a KVM host: modprobe %s nested=1 and start the VM with -cpu host; "
		         "on VMware: 'Expose hardware assisted virtualization'; in a cloud: its "
		         "nested-virtualization option)", amd ? "kvm_amd" : "kvm_intel");
	} else {
		k->result = HOST_FAIL;
		host_detail(k, "this CPU has neither Intel VT-x nor AMD-V");
		host_fix(k, "vtool run needs a CPU with VT-x or AMD-V: use another machine");
	}
}

static void check_modules(struct host_report *r)
{
	const char *want = host_kvm_module();
	struct host_check *k = host_add(r, "cpu", "kvm-module", "if the kvm module is loaded",
	                                HOST_PASS);
	char path[128];
	struct stat st;

	if (k && host_module_present("kvm")) {
		host_detail(k, "%s", stat("/sys/module/kvm/initstate", &st) ? "built into the kernel"
		                                                             : "loaded");
	} else if (k) {
		k->result = HOST_FAIL;
		host_detail(k, "no /sys/module/kvm");
		host_fix(k, "modprobe %s (it loads kvm too)", want);
	}
	char title[80];
	snprintf(title, sizeof(title), "if the %s module is loaded", want);
	k = host_add(r, "cpu", "kvm-vendor-module", title, HOST_PASS);
	if (!k)
		return;
	snprintf(path, sizeof(path), "/sys/module/%s/initstate", want);
	if (host_module_present(want)) {
		host_detail(k, "%s", stat(path, &st) ? "built into the kernel" : "loaded");
	} else {
		k->result = HOST_FAIL;
		host_detail(k, "no /sys/module/%s", want);
		host_fix(k, "modprobe %s (if it says 'disabled by bios', turn on %s in the "
		         "firmware setup first)", want, host_cpu_is_amd() ? "AMD-V" : "VT-x");
	}

	/* Nested: whether this host's guests may run KVM themselves. Not needed by vtool. */
	k = host_add(r, "cpu", "nested", "for nested virtualization", HOST_NOTE);
	if (!k)
		return;
	snprintf(path, sizeof(path), "/sys/module/%s/parameters/nested", want);
	FILE *f = fopen(path, "r");
	char v[16] = "";
	if (f) {
		if (!fgets(v, sizeof(v), f))
			v[0] = '\0';
		fclose(f);
		bool on = v[0] == 'Y' || v[0] == '1';
		host_detail(k, "%s: guests %s run KVM themselves%s", on ? "on" : "off",
		            on ? "may" : "cannot", on ? "" : " (modprobe -r, then modprobe with nested=1)");
	} else if (host_module_present(want)) {
		host_detail(k, "%s has no 'nested' parameter", want);
	} else {
		k->result = HOST_SKIP;
		host_detail(k, "%s is not loaded", want);
	}
}

static const struct { const char *sig, *name; } hypervisors[] = {
	{ "KVMKVMKVM", "KVM" }, { "Linux KVM Hv", "KVM (with Hyper-V enlightenments)" },
	{ "Microsoft Hv", "Hyper-V" }, { "VMwareVMware", "VMware" }, { "XenVMMXenVMM", "Xen" },
	{ "TCGTCGTCGTCG", "QEMU (TCG)" }, { "VBoxVBoxVBox", "VirtualBox" },
	{ " lrpepyh  vr", "Parallels" }, { "bhyve bhyve ", "bhyve" }, { "ACRNACRNACRN", "ACRN" },
	{ "QNXQVMBSQG", "QNX" }, { "Jailhouse", "Jailhouse" },
};

static void check_hypervisor(struct host_report *r)
{
	uint32_t c[4];
	char names[160] = "";
	size_t used = 0;

	cpuid(1, c);
	struct host_check *k = host_add(r, "cpu", "hypervisor", "if this host is a virtual machine",
	                                HOST_PASS);
	if (!k)
		return;
	if (!(c[2] >> 31 & 1)) {
		host_detail(k, "no: bare metal");
		return;
	}
	/* Hypervisors may offer several interfaces, at 0x40000000, 0x40000100 ... */
	for (uint32_t leaf = 0x40000000u; leaf < 0x40010000u; leaf += 0x100) {
		char sig[13];
		cpuid(leaf, c);
		memcpy(sig, &c[1], 4);
		memcpy(sig + 4, &c[2], 4);
		memcpy(sig + 8, &c[3], 4);
		sig[12] = '\0';
		if (!sig[0] || (c[0] & 0xffff0000u) != 0x40000000u)
			break;
		const char *name = NULL;
		for (size_t i = 0; i < sizeof(hypervisors) / sizeof(hypervisors[0]); i++)
			if (!strcmp(sig, hypervisors[i].sig))
				name = hypervisors[i].name;
		for (char *p = sig; *p; p++)
			if (!isprint((unsigned char)*p))
				*p = '?';
		used += (size_t)snprintf(names + used, used < sizeof(names) ? sizeof(names) - used : 0,
		                         "%s%s ('%s')", used ? ", " : "", name ? name : "unknown", sig);
		if (used >= sizeof(names))
			break;
	}
	k->result = HOST_NOTE;
	host_detail(k, "yes, under %s", used ? names : "an unnamed hypervisor");
}

void host_check_cpu(struct host_report *r)
{
	check_hw_virt(r);
	check_modules(r);
	check_hypervisor(r);
}
