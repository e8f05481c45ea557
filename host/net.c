/* Network checks: /dev/net/tun, CAP_NET_ADMIN, bridge and nftables support, ip_forward,
 * and other tables' forward chains that drop by policy. Read-only: an rtnetlink dump
 * filtered by link kind, nftables chain lists (net/net.h), /proc/sys. They see the
 * network namespace vtool runs in. */
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/capability.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "host/host.h"
#include "net/net.h"

#define TUN_DEV "/dev/net/tun"

static bool have_net_admin(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, d) < 0)
		return geteuid() == 0;
	return d[CAP_NET_ADMIN / 32].effective >> (CAP_NET_ADMIN % 32) & 1;
}

/* "bridge.ko" is listed in this kernel's modules.dep (loadable) or modules.builtin. */
static bool module_file_listed(const char *list, const char *ko)
{
	struct utsname u;
	char path[256], line[512];
	bool found = false;

	if (uname(&u) < 0)
		return false;
	snprintf(path, sizeof(path), "/lib/modules/%s/%s", u.release, list);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *end = strpbrk(line, ":\n");
		if (end)
			*end = '\0';
		const char *base = strrchr(line, '/');
		base = base ? base + 1 : line;
		found = !strncmp(base, ko, strlen(ko)) && (!base[strlen(ko)] || base[strlen(ko)] == '.');
	}
	fclose(f);
	return found;
}


/* Using the feature could make the kernel load module `name` (a change to the host that
 * this command must not make): it is neither loaded nor built in, and the kernel has
 * loadable modules at all. */
static bool would_autoload(const char *name)
{
	char ko[64], line[256];
	size_t len = strlen(name);
	bool loaded = false;

	snprintf(ko, sizeof(ko), "%s.ko", name);
	if (host_module_present(name) || module_file_listed("modules.builtin", ko))
		return false;
	FILE *f = fopen("/proc/modules", "r");
	if (!f)
		return false; /* no loadable modules: all there is is built in */
	while (!loaded && fgets(line, sizeof(line), f))
		loaded = !strncmp(line, name, len) && line[len] == ' ';
	fclose(f);
	return !loaded;
}

static void check_tun(struct host_report *r)
{
	struct host_check *k = host_add(r, "net", "net-tun", "if device " TUN_DEV " is usable",
	                                HOST_PASS);
	/* Opening the device would load the tun module: only look at its permissions then. */
	bool lazy = would_autoload("tun") && module_file_listed("modules.dep", "tun.ko");
	int fd = lazy ? -1 : open(TUN_DEV, O_RDWR | O_CLOEXEC);
	bool ok = lazy ? access(TUN_DEV, R_OK | W_OK) == 0 : fd >= 0;
	int e = errno;

	if (fd >= 0)
		close(fd);
	if (!k)
		return;
	if (ok) {
		host_detail(k, lazy ? "read and write; the tun module loads when the first tap is "
		            "opened" : "read and write");
		return;
	}
	k->result = HOST_WARN;
	host_detail(k, "%s", strerror(e));
	if (e == ENOENT)
		host_fix(k, "sudo modprobe tun (taps for -net tap need it)");
	else if (e == EACCES)
		host_fix(k, "only root may open taps here: run 'vtool run -net tap' with sudo, or "
		         "sudo chmod 0666 " TUN_DEV " (Debian's default) and use a tap made for you "
		         "(sudo vtool net tap add --owner $USER)");
	else
		host_fix(k, "check that the kernel has CONFIG_TUN (sudo modprobe tun)");
}

static void check_net_admin(struct host_report *r, bool admin)
{
	struct host_check *k = host_add(r, "net", "net-admin", "for CAP_NET_ADMIN",
	                                admin ? HOST_PASS : HOST_WARN);

	if (k && admin) {
		host_detail(k, "yes: vtool net can make bridges, taps and NAT rules");
	} else if (k) {
		host_detail(k, "no: 'vtool net' setup, teardown, bridge, tap, addr and nat need root; "
		            "'vtool net show' shows no NAT; 'vtool run -net tap' needs a tap made for you");
		host_fix(k, "run those commands with sudo; for 'vtool run' as yourself, once: sudo vtool "
		         "net tap add --owner $USER, then -net tap,ifname=TAP,script=no");
	}
}

struct kind_dump {
	int links, others;      /* links returned, and those that are not bridges */
};

static int kind_attr_cb(const struct nlattr *a, void *data)
{
	const char **kind = data;

	if (mnl_attr_get_type(a) == IFLA_INFO_KIND && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
		*kind = mnl_attr_get_str(a);
	return MNL_CB_OK;
}

static int link_attr_cb(const struct nlattr *a, void *data)
{
	if (mnl_attr_get_type(a) == IFLA_LINKINFO && mnl_attr_validate(a, MNL_TYPE_NESTED) >= 0)
		mnl_attr_parse_nested(a, kind_attr_cb, data);
	return MNL_CB_OK;
}

static int link_cb(const struct nlmsghdr *h, void *data)
{
	struct kind_dump *d = data;
	const char *kind = "";

	if (h->nlmsg_type != RTM_NEWLINK)
		return MNL_CB_OK;
	mnl_attr_parse(h, sizeof(struct ifinfomsg), link_attr_cb, &kind);
	d->links++;
	d->others += strcmp(kind, "bridge") != 0;
	return MNL_CB_OK;
}

/* Ask for the links of kind "bridge". The kernel filters a link dump by kind only when
 * that kind is registered (the bridge driver is loaded or built in); otherwise it returns
 * every link, and there is always lo, which is no bridge. 1 registered, 0 not, -errno. */
static int bridge_kind_registered(int *bridges)
{
	struct mnl_socket *s = mnl_socket_open(NETLINK_ROUTE);
	static char buf[32768];
	struct kind_dump d = { 0 };
	int ret = 0;

	if (!s)
		return -errno;
	if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		mnl_socket_close(s);
		return ret;
	}
	struct nlmsghdr *h = mnl_nlmsg_put_header(buf);
	h->nlmsg_type = RTM_GETLINK;
	h->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	h->nlmsg_seq = (unsigned)time(NULL);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	struct nlattr *nest = mnl_attr_nest_start(h, IFLA_LINKINFO);
	mnl_attr_put_strz(h, IFLA_INFO_KIND, "bridge");
	mnl_attr_nest_end(h, nest);
	unsigned seq = h->nlmsg_seq, portid = mnl_socket_get_portid(s);
	if (mnl_socket_sendto(s, h, h->nlmsg_len) < 0)
		ret = -errno;
	while (!ret) {
		ssize_t n = mnl_socket_recvfrom(s, buf, sizeof(buf));
		if (n < 0) {
			ret = -errno;
			break;
		}
		int cb = mnl_cb_run(buf, (size_t)n, seq, portid, link_cb, &d);
		if (cb < 0)
			ret = -errno;
		if (cb <= MNL_CB_STOP)
			break;
	}
	mnl_socket_close(s);
	*bridges = d.links - d.others;
	return ret ? ret : d.others == 0;
}

static void check_bridge(struct host_report *r)
{
	struct host_check *k = host_add(r, "net", "net-bridge", "for bridge support", HOST_PASS);
	int bridges = 0, reg = bridge_kind_registered(&bridges);

	if (!k)
		return;
	if (reg == 1)
		host_detail(k, "the bridge driver is in the kernel; %d bridge%s in this network "
		            "namespace", bridges, bridges == 1 ? "" : "s");
	else if (reg == 0 && module_file_listed("modules.dep", "bridge.ko"))
		host_detail(k, "the bridge module is installed and loads when the first bridge is made");
	else if (reg == 0 && module_file_listed("modules.builtin", "bridge.ko"))
		host_detail(k, "the bridge driver is built into the kernel");
	else {
		k->result = HOST_WARN;
		host_detail(k, reg < 0 ? "rtnetlink link dump failed: %s" : "no bridge driver",
		            strerror(-reg));
		host_fix(k, "install this kernel's modules (apt-get install linux-image-$(uname -r)) "
		         "or use a kernel with CONFIG_BRIDGE");
	}
}

static void check_nft(struct host_report *r, bool admin)
{
	struct net_fwdrop *drops = NULL;
	int n = 0;
	struct vt_error err = { 0 };
	char why[700];
	struct host_check *k = host_add(r, "net", "net-nftables", "for nftables support", HOST_PASS);

	/* Asking nf_tables would load it: then it has no tables to drop anything either. */
	if (would_autoload("nf_tables")) {
		bool installed = module_file_listed("modules.dep", "nf_tables.ko");
		if (k) {
			k->result = installed ? HOST_PASS : HOST_WARN;
			host_detail(k, installed ? "the nf_tables module is installed and loads on first "
			            "use" : "no nf_tables module for this kernel");
			if (!installed)
				host_fix(k, "install this kernel's modules (apt-get install "
				         "linux-image-$(uname -r)) or use a kernel with CONFIG_NF_TABLES");
		}
		if ((k = host_add(r, "net", "net-forward-drop", "for forward chains that drop by "
		                  "policy", HOST_PASS)))
			host_detail(k, "none: nf_tables is not loaded, so no table has chains");
		return;
	}
	int ret = net_forward_drops(&drops, &n, &err);
	if (k && ret && !admin) {
		k->result = HOST_SKIP;
		host_detail(k, "nftables answers only CAP_NET_ADMIN");
	} else if (k && ret) {
		vt_error_format(&err, why, sizeof(why));
		k->result = HOST_WARN;
		host_detail(k, "%s", why);
		host_fix(k, "sudo modprobe nf_tables (and nft_masq for NAT), or use a kernel with "
		         "CONFIG_NF_TABLES");
	} else if (k) {
		host_detail(k, "nf_tables lists this namespace's chains");
	}

	k = host_add(r, "net", "net-forward-drop", "for forward chains that drop by policy",
	             ret ? HOST_SKIP : n ? HOST_WARN : HOST_PASS);
	if (k && ret) {
		host_detail(k, "%s", admin ? "nftables did not answer" : "needs CAP_NET_ADMIN");
	} else if (k && !n) {
		host_detail(k, "none: forwarded guest traffic is not dropped by another table");
	} else if (k) {
		size_t used = 0;
		for (int i = 0; i < n && used < sizeof(k->detail); i++)
			used += (size_t)snprintf(k->detail + used, sizeof(k->detail) - used,
			                         "%stable %s %s chain %s", i ? ", " : "",
			                         drops[i].family, drops[i].table, drops[i].chain);
		net_forward_drop_advice(&drops[0], NULL, k->fix, sizeof(k->fix));
	}
	free(drops);
}

static void check_ip_forward(struct host_report *r)
{
	struct host_check *k = host_add(r, "net", "net-ip-forward", "if IPv4 forwarding is on",
	                                HOST_PASS);
	FILE *f = fopen("/proc/sys/net/ipv4/ip_forward", "r");
	char v[8] = "";

	if (f) {
		if (!fgets(v, sizeof(v), f))
			v[0] = '\0';
		fclose(f);
	}
	if (!k)
		return;
	if (v[0] == '1') {
		host_detail(k, "on");
	} else {
		k->result = HOST_NOTE;
		host_detail(k, "%s: guests behind NAT need it, and 'vtool net setup --nat' turns it on",
		            v[0] == '0' ? "off" : "unknown (no /proc/sys/net/ipv4/ip_forward)");
	}
}

void host_check_net(struct host_report *r)
{
	bool admin = have_net_admin();

	check_tun(r);
	check_net_admin(r, admin);
	check_bridge(r);
	check_nft(r, admin);
	check_ip_forward(r);
}
