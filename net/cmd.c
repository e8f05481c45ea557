/* The single-step `vtool net` commands (bridge, tap, addr, nat), and the argument helpers
 * every `vtool net` command shares. A thin front over net/. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <net/if.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/cmd.h"
#include "net/net.h"

int net_cmd_fail(const struct vt_error *err)
{
	vt_error_print(err, stderr);
	return 1;
}

long net_cmd_user(const char *s, bool group)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s && !*end && v >= 0)
		return v;
	if (group) {
		struct group *g = getgrnam(s);
		return g ? (long)g->gr_gid : -2;
	}
	struct passwd *p = getpwnam(s);
	return p ? (long)p->pw_uid : -2;
}

int net_cmd_cidr(const char *argv0, const char *s, struct net_cidr *c)
{
	struct vt_error err = { 0 };

	(void)argv0;
	return net_cidr_parse(s, c, &err) ? net_cmd_fail(&err) : 0;
}

int net_cmd_name(const char *s, char *dst)
{
	struct vt_error err = { 0 };

	if (net_name_check(s, &err))
		return net_cmd_fail(&err);
	if (dst)
		snprintf(dst, NET_NAME_MAX, "%s", s);
	return 0;
}

const char *net_cmd_mac_str(const uint8_t m[6], char *buf)
{
	sprintf(buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
	return buf;
}

/* --- link settings shared by `bridge set` and `tap set` ------------------------------ */

struct link_opts {
	int up;                 /* -1 unchanged, 0 down, 1 up */
	long mtu;               /* -1 unchanged */
	bool have_mac;
	uint8_t mac[6];
};

#define LINK_LONGOPTS \
	{ "up", no_argument, NULL, 'u' }, { "down", no_argument, NULL, 'd' }, \
	{ "mtu", required_argument, NULL, 'm' }, { "mac", required_argument, NULL, 'a' }

/* One getopt result: 0 taken, 1 a usage error (printed), -1 not a link option. */
static int link_opt(int c, const char *argv0, struct link_opts *o)
{
	char *end;

	switch (c) {
	case 'u': o->up = 1; return 0;
	case 'd': o->up = 0; return 0;
	case 'm':
		o->mtu = strtol(optarg, &end, 10);
		if (*end || o->mtu < 68 || o->mtu > 65535)
			return vt_usage_error(argv0, "invalid MTU '%s' (68 to 65535)", optarg);
		return 0;
	case 'a':
		if (net_mac_parse(optarg, o->mac))
			return vt_usage_error(argv0, "invalid MAC address '%s'", optarg);
		o->have_mac = true;
		return 0;
	}
	return -1;
}

static bool link_opts_any(const struct link_opts *o)
{
	return o->up >= 0 || o->mtu > 0 || o->have_mac;
}

/* MTU and MAC first, then up/down (as `ip link set` orders them). */
static int link_apply(const char *name, const struct link_opts *o, struct vt_error *err)
{
	int ret = 0;

	if (o->mtu > 0)
		ret = net_link_set_mtu(name, (unsigned)o->mtu, err);
	if (!ret && o->have_mac)
		ret = net_link_set_mac(name, o->mac, err);
	if (!ret && o->up >= 0)
		ret = net_link_set_up(name, o->up, err);
	return ret;
}

/* --- vtool net bridge ------------------------------------------------------------------ */

static const char bridge_help[] =
	"Usage: vtool net bridge add|del|list|set|addif|delif ...\n"
	"\n"
	"  vtool net bridge add BRIDGE [--up]     create a bridge (like brctl addbr)\n"
	"  vtool net bridge del BRIDGE            delete it (only a bridge)\n"
	"  vtool net bridge list                  bridges and their ports\n"
	"  vtool net bridge set LINK [--up|--down] [--mtu N] [--mac MAC]\n"
	"                                         like ip link set: LINK may be any link (a\n"
	"                                         bridge, a tap, a veth, a NIC); for a tap,\n"
	"                                         'vtool net tap set' says the same and\n"
	"                                         checks it is one\n"
	"  vtool net bridge addif BRIDGE IF       make IF, any link, a port (like brctl addif)\n"
	"  vtool net bridge delif BRIDGE IF       remove the port\n"
	"\n"
	"Example:\n"
	"  vtool net bridge add br0 --up && vtool net bridge addif br0 tap0\n";

static int bridge_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		LINK_LONGOPTS, { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	struct link_opts lo = { .up = -1, .mtu = -1 };
	struct vt_error err = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int r = link_opt(c, argv[0], &lo);
		if (r)
			return r > 0 ? r : vt_usage_hint(argv[0]);
	}
	const char *verb = optind < argc ? argv[optind] : "list";
	const char *br = optind + 1 < argc ? argv[optind + 1] : NULL;
	const char *port = optind + 2 < argc ? argv[optind + 2] : NULL;
	if (!strcmp(verb, "list")) {
		struct net_link *v;
		int n;
		if (net_link_list(&v, &n, &err))
			return net_cmd_fail(&err);
		for (int i = 0; i < n; i++) {
			if (strcmp(v[i].kind, "bridge"))
				continue;
			printf("%s %s", v[i].name, v[i].up ? "up" : "down");
			for (int k = 0; k < n; k++)
				if (v[k].master == v[i].index)
					printf(" %s", v[k].name);
			printf("\n");
		}
		free(v);
		return 0;
	}
	if (!br)
		return vt_usage_error(argv[0], "'%s' needs a bridge name", verb);
	if (net_cmd_name(br, NULL) || (port && net_cmd_name(port, NULL)))
		return 1;
	int ret = 0;
	if (!strcmp(verb, "add")) {
		ret = net_bridge_create(br, &err);
		if (!ret && lo.up == 1)
			ret = net_link_set_up(br, true, &err);
	} else if (!strcmp(verb, "del")) {
		struct net_link l;
		ret = net_link_get(br, &l, &err);
		if (ret == -ENODEV)
			ret = vt_error_set(&err, ENODEV, br, "delete bridge", "no such bridge");
		else if (!ret && strcmp(l.kind, "bridge"))
			ret = vt_error_set(&err, EINVAL, br, "delete bridge", "is not a bridge");
		if (!ret)
			ret = net_link_delete(br, &err);
	} else if (!strcmp(verb, "set")) {
		if (!link_opts_any(&lo))
			return vt_usage_error(argv[0], "'set' needs --up, --down, --mtu or --mac");
		ret = link_apply(br, &lo, &err);
	} else if (!strcmp(verb, "addif") || !strcmp(verb, "delif")) {
		if (!port)
			return vt_usage_error(argv[0], "'%s' needs a bridge and an interface", verb);
		ret = net_link_set_master(port, verb[0] == 'a' ? br : NULL, &err);
	} else {
		return vt_usage_error(argv[0], "unknown action '%s'", verb);
	}
	return ret ? net_cmd_fail(&err) : 0;
}

/* --- vtool net tap --------------------------------------------------------------------- */

static const char tap_help[] =
	"Usage: vtool net tap add|del|set|list [TAP] [options]\n"
	"\n"
	"  vtool net tap add [TAP] [--owner USER] [--group GROUP] [--multi-queue] [--bridge BR]\n"
	"                    [--up]\n"
	"                        create a persistent tap (like tunctl -t), usable by USER/GROUP\n"
	"                        without privileges; --bridge also makes it a port of BR, up.\n"
	"                        Without TAP, the first free tapN is taken and its name\n"
	"                        printed (like tunctl -b)\n"
	"  vtool net tap del TAP\n"
	"  vtool net tap set TAP [--up|--down] [--mtu N] [--mac MAC]\n"
	"                        like ip link set TAP up; TAP must be a tap\n"
	"  vtool net tap list\n"
	"\n"
	"Example:\n"
	"  vtool net tap add tap0 --owner alice --bridge br0\n";

static int tap_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "owner", required_argument, NULL, 'o' }, { "group", required_argument, NULL, 'g' },
		{ "multi-queue", no_argument, NULL, 'q' }, { "bridge", required_argument, NULL, 'b' },
		LINK_LONGOPTS, { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	long owner = -1, group = -1;
	unsigned flags = 0;
	const char *bridge = NULL;
	struct link_opts lo = { .up = -1, .mtu = -1 };
	struct vt_error err = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if ((owner = net_cmd_user(optarg, false)) < 0)
				return vt_usage_error(argv[0], "unknown user '%s'", optarg);
			break;
		case 'g':
			if ((group = net_cmd_user(optarg, true)) < 0)
				return vt_usage_error(argv[0], "unknown group '%s'", optarg);
			break;
		case 'q': flags |= NET_TAP_MULTI_QUEUE; break;
		case 'b':
			if (net_cmd_name(optarg, NULL))
				return 1;
			bridge = optarg;
			break;
		default: {
			int r = link_opt(c, argv[0], &lo);
			if (r)
				return r > 0 ? r : vt_usage_hint(argv[0]);
		}
		}
	}
	const char *verb = optind < argc ? argv[optind] : "list";
	const char *tap = optind + 1 < argc ? argv[optind + 1] : NULL;
	if (!strcmp(verb, "list")) {
		struct net_link *v;
		int n;
		if (net_link_list(&v, &n, &err))
			return net_cmd_fail(&err);
		for (int i = 0; i < n; i++)
			if (net_link_is_tap(v[i].name))
				printf("%s %s\n", v[i].name, v[i].up ? "up" : "down");
		free(v);
		return 0;
	}
	if (!tap && strcmp(verb, "add"))
		return vt_usage_error(argv[0], "'%s' needs a tap name", verb);
	if (tap && net_cmd_name(tap, NULL))
		return 1;
	if (optind + (tap ? 2 : 1) < argc)
		return vt_usage_error(argv[0], "unexpected argument '%s'", argv[optind + (tap ? 2 : 1)]);
	int ret;
	char made[NET_NAME_MAX] = "";
	if (!strcmp(verb, "add")) {
		if (lo.up == 0 || lo.mtu > 0 || lo.have_mac)
			return vt_usage_error(argv[0], "'add' takes --up; --down, --mtu and --mac "
			                               "are for 'set'");
		ret = net_tap_create(tap, flags, owner, group, made, &err);
		if (!ret && bridge)
			ret = net_link_set_master(made, bridge, &err);
		if (!ret && (bridge || lo.up == 1))
			ret = net_link_set_up(made, true, &err);
		if (ret && net_link_is_tap(made)) {
			struct vt_error ignored;
			net_tap_delete(made, &ignored); /* nothing half-made */
		}
		if (!ret && !tap)
			printf("%s\n", made); /* the name the kernel picked, as tunctl -b */
	} else if (!strcmp(verb, "del")) {
		ret = net_tap_delete(tap, &err);
	} else if (!strcmp(verb, "set")) {
		if (!link_opts_any(&lo))
			return vt_usage_error(argv[0], "'set' needs --up, --down, --mtu or --mac");
		struct net_link l;
		ret = net_link_get(tap, &l, &err);
		if (ret == -ENODEV)
			ret = vt_error_set(&err, ENODEV, tap, "set tap", "no such tap");
		else if (!ret && !net_link_is_tap(tap))
			ret = vt_error_set(&err, EINVAL, tap, "set tap", "is not a tap (for any link: "
			                   "vtool net bridge set %s)", tap);
		if (!ret)
			ret = link_apply(tap, &lo, &err);
	} else {
		return vt_usage_error(argv[0], "unknown action '%s'", verb);
	}
	return ret ? net_cmd_fail(&err) : 0;
}

/* --- vtool net addr -------------------------------------------------------------------- */

static const char addr_help[] =
	"Usage: vtool net addr add|del IF ADDRESS/PREFIX\n"
	"\n"
	"Add or remove an IPv4 or IPv6 address (like ip addr add). IF may be any link (a\n"
	"bridge, a tap, a veth, a NIC). The prefix length is required: a bare address is\n"
	"refused rather than taken as a /32.\n"
	"\n"
	"Example:\n"
	"  vtool net addr add br0 192.168.57.1/24\n";

static int addr_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	struct vt_error err = { 0 };
	struct net_cidr cidr;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1)
		return vt_usage_hint(argv[0]);
	if (argc - optind != 3)
		return vt_usage_error(argv[0], "expected add|del IF ADDRESS/PREFIX");
	const char *verb = argv[optind], *ifname = argv[optind + 1];
	if (net_cmd_name(ifname, NULL))
		return 1;
	if (net_cmd_cidr(argv[0], argv[optind + 2], &cidr))
		return 1;
	int ret;
	if (!strcmp(verb, "add"))
		ret = net_addr_add(ifname, &cidr, &err);
	else if (!strcmp(verb, "del"))
		ret = net_addr_del(ifname, &cidr, &err);
	else
		return vt_usage_error(argv[0], "unknown action '%s'", verb);
	return ret ? net_cmd_fail(&err) : 0;
}

/* --- vtool net nat --------------------------------------------------------------------- */

static const char nat_help[] =
	"Usage: vtool net nat add|del|list [--subnet CIDR --out IF] [--bridge BR] [--forward]\n"
	"\n"
	"Masquerade a guest subnet out of an uplink, in vtool's own nftables table (ip vtool),\n"
	"and turn ip_forward on (like iptables -t nat -A POSTROUTING -o IF -j MASQUERADE).\n"
	"The uplink IF may be any link.\n"
	"--forward also accepts, in vtool's forward chain, what comes from the bridge (from the\n"
	"subnet without --bridge) and the return traffic of those connections (ct state\n"
	"established,related). It cannot open another table's forward chain whose policy is\n"
	"drop (Docker's): 'vtool net show' and 'vtool net setup' name such chains and say what\n"
	"to add there. 'del' removes exactly that rule, the table when it is empty, and\n"
	"restores ip_forward.\n"
	"\n"
	"Example:\n"
	"  vtool net nat add --subnet 192.168.57.0/24 --out eth0\n";

static int nat_opts(int argc, char **argv, struct net_nat *nat, bool *have_subnet)
{
	static const struct option longopts[] = {
		{ "subnet", required_argument, NULL, 's' }, { "out", required_argument, NULL, 'o' },
		{ "bridge", required_argument, NULL, 'b' }, { "forward", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (net_cmd_cidr(argv[0], optarg, &nat->subnet))
				return 1;
			*have_subnet = true;
			break;
		case 'o':
			if (net_cmd_name(optarg, nat->out))
				return 1;
			break;
		case 'b':
			if (net_cmd_name(optarg, nat->bridge))
				return 1;
			break;
		case 'f': nat->forward = true; break;
		default: return vt_usage_hint(argv[0]);
		}
	}
	return 0;
}

/* Warn when the subnet holds no address but the bridge's own: nothing to masquerade. */
static void nat_room_warning(const struct net_nat *nat)
{
	struct net_addr *v;
	struct vt_error ignored;
	int n, k = 0;
	unsigned idx = if_nametoindex(nat->bridge);

	if (!idx || net_addr_list(&v, &n, &ignored))
		return;
	struct net_cidr *own = calloc((size_t)n + 1, sizeof(*own));
	for (int i = 0; own && i < n; i++)
		if (v[i].index == (int)idx)
			own[k++] = v[i].cidr;
	if (own && k && net_cidr_room(&nat->subnet, own, k) == 0) {
		char net[64];
		net_cidr_format(&nat->subnet, net, sizeof(net));
		fprintf(stderr, "vtool: warning: NAT subnet %s holds no address but %s's own: no "
		        "guest can be in it\n", net, nat->bridge);
	}
	free(own);
	free(v);
}

static int nat_main(int argc, char **argv)
{
	struct net_nat nat = { 0 };
	struct vt_error err = { 0 };
	bool have_subnet = false;

	if (nat_opts(argc, argv, &nat, &have_subnet))
		return 1;
	const char *verb = optind < argc ? argv[optind] : "list";
	if (!strcmp(verb, "list")) {
		struct net_nat *v;
		int n;
		char cidr[64];
		if (net_nat_list(&v, &n, &err))
			return net_cmd_fail(&err);
		for (int i = 0; i < n; i++) {
			net_cidr_format(&v[i].subnet, cidr, sizeof(cidr));
			printf("%s out %s%s\n", cidr, v[i].out, v[i].forward ? " forward" : "");
		}
		free(v);
		return 0;
	}
	if (!have_subnet || !nat.out[0])
		return vt_usage_error(argv[0], "'%s' needs --subnet and --out", verb);
	int ret;
	if (!strcmp(verb, "add") && nat.bridge[0])
		nat_room_warning(&nat);
	if (!strcmp(verb, "add"))
		ret = net_nat_add(&nat, &err);
	else if (!strcmp(verb, "del"))
		ret = net_nat_del(&nat, &err);
	else
		return vt_usage_error(argv[0], "unknown action '%s'", verb);
	return ret ? net_cmd_fail(&err) : 0;
}

const struct vt_command vt_cmd_net_bridge = { "net", "bridge", "create, list and delete bridges; add ports", bridge_help, bridge_main };
const struct vt_command vt_cmd_net_tap = { "net", "tap", "persistent tap devices for VMs", tap_help, tap_main };
const struct vt_command vt_cmd_net_addr = { "net", "addr", "add or remove an interface address", addr_help, addr_main };
const struct vt_command vt_cmd_net_nat = { "net", "nat", "masquerade a subnet out of an uplink (nftables)", nat_help, nat_main };
