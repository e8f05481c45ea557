/* `vtool net setup` and `vtool net teardown`: the front of net/setup.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/cmd.h"
#include "net/net.h"
#include "net/setup.h"

static const char setup_help[] =
	"Usage: vtool net setup --bridge BR [--addr ADDRESS/PREFIX] [--tap TAP] [--owner USER]\n"
	"                       [--group GROUP] [--nat UPLINK] [--forward] [--dhcp [RANGE]]\n"
	"\n"
	"The nine manual steps of the classic bridge + tap + NAT recipe in one idempotent\n"
	"command, each done only when the option it needs is given:\n"
	"  1. brctl addbr BR                                   --bridge BR\n"
	"  2. ip link set BR up                                --bridge BR\n"
	"  3. ip addr add ADDRESS/PREFIX dev BR                --addr\n"
	"  4. tunctl -t TAP -u USER                            --tap [--owner] [--group]\n"
	"  5. brctl addif BR TAP                               --tap\n"
	"  6. ip link set TAP up                               --tap\n"
	"  7. echo 1 > /proc/sys/net/ipv4/ip_forward           --nat\n"
	"  8. iptables -A FORWARD -i BR -j ACCEPT              --forward\n"
	"  9. iptables -t nat -A POSTROUTING -s NET -o UPLINK -j MASQUERADE    --nat\n"
	"Each step first looks at what is there: running it again changes nothing and says\n"
	"so. If a step fails, what this run did is taken back, each removal printed.\n"
	"'vtool net teardown' with the same options undoes it.\n"
	"\n"
	"--dhcp does what the recipe leaves to each guest by hand, as libvirt's default NAT\n"
	"network does: dnsmasq (Debian package dnsmasq-base) on BR alone hands out addresses\n"
	"with BR as gateway and DNS server, forwards DNS queries, and answers BR's name with\n"
	"its address. Its configuration, pidfile, lease file and log are in\n"
	"/run/vtool/BR/; one already running for BR with the same configuration is kept.\n"
	"\n"
	"Options:\n"
	"  --bridge BR         the bridge, created if missing (required)\n"
	"  --addr A/PREFIX     the bridge's address; the prefix length is required\n"
	"  --tap TAP           a persistent tap, made a port of BR and set up\n"
	"  --owner USER        the user who may open TAP without privileges (tunctl -u)\n"
	"  --group GROUP       the group that may open TAP without privileges (tunctl -g)\n"
	"  --nat UPLINK        masquerade the subnet of --addr out of UPLINK (any link), with\n"
	"                      ip_forward on, in vtool's nftables table; warns about other\n"
	"                      tables' forward chains that drop by policy (Docker's)\n"
	"  --forward           with --nat: accept forwarding from BR and its return traffic\n"
	"                      (ct state established,related) in vtool's table\n"
	"  --dhcp [RANGE]      serve DHCP and DNS on BR with dnsmasq; RANGE is FIRST-LAST\n"
	"                      (default: the subnet's addresses above BR's, such as\n"
	"                      192.168.57.2-192.168.57.254 for 192.168.57.1/24)\n"
	"\n"
	"Example:\n"
	"  vtool net setup --bridge br0 --addr 192.168.57.1/24 --tap tap0 --nat eth0 --dhcp\n";

static const char teardown_help[] =
	"Usage: vtool net teardown --bridge BR [--addr ADDRESS/PREFIX] [--tap TAP] [--nat UPLINK]\n"
	"\n"
	"Undo 'vtool net setup' with the same options: stop vtool's dnsmasq for BR (with or\n"
	"without --dhcp) and remove /run/vtool/BR/, remove the NAT rule (restoring\n"
	"ip_forward), the tap and the bridge (with its address). Objects that are not there\n"
	"are skipped; names taken by something else are left alone with an error.\n"
	"\n"
	"Options:\n"
	"  --bridge BR         the bridge to delete (required)\n"
	"  --addr A/PREFIX     the address setup gave it (names the NAT subnet)\n"
	"  --tap TAP           the tap to delete\n"
	"  --nat UPLINK        remove vtool's NAT of the --addr subnet out of UPLINK\n"
	"  --owner, --group, --forward, --dhcp are accepted, so setup's line can be reused\n"
	"\n"
	"Example:\n"
	"  vtool net teardown --bridge br0 --addr 192.168.57.1/24 --tap tap0 --nat eth0\n";

/* Changes and their rollback on stdout, in order; warnings on stderr. */
static void print_line(void *arg, enum net_report kind, const char *line)
{
	(void)arg;
	if (kind == NET_REPORT_WARNING) {
		fflush(stdout);
		fprintf(stderr, "vtool: warning: %s\n", line);
	} else {
		printf("%s\n", line);
	}
}

static int setup_common(int argc, char **argv, bool teardown)
{
	static const struct option longopts[] = {
		{ "bridge", required_argument, NULL, 'b' }, { "addr", required_argument, NULL, 'a' },
		{ "tap", required_argument, NULL, 't' }, { "owner", required_argument, NULL, 'o' },
		{ "group", required_argument, NULL, 'g' }, { "nat", required_argument, NULL, 'n' },
		{ "forward", no_argument, NULL, 'f' }, { "dhcp", optional_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	struct net_setup s = { .owner = -1, .group = -1 };
	bool dhcp = false;
	const char *range = NULL;
	struct vt_error err = { 0 };
	int c, changes;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (net_cmd_name(optarg, s.bridge))
				return 1;
			break;
		case 'a':
			if (net_cmd_cidr(argv[0], optarg, &s.addr))
				return 1;
			break;
		case 't':
			if (net_cmd_name(optarg, s.tap))
				return 1;
			break;
		case 'o':
			if ((s.owner = net_cmd_user(optarg, false)) < 0)
				return vt_usage_error(argv[0], "unknown user '%s'", optarg);
			break;
		case 'g':
			if ((s.group = net_cmd_user(optarg, true)) < 0)
				return vt_usage_error(argv[0], "unknown group '%s'", optarg);
			break;
		case 'n':
			if (net_cmd_name(optarg, s.nat.out))
				return 1;
			break;
		case 'f': s.nat.forward = true; break;
		case 'D':
			dhcp = true;
			range = optarg;
			/* "--dhcp RANGE" as well as "--dhcp=RANGE": an optional argument */
			if (!range && optind < argc && argv[optind][0] && argv[optind][0] != '-')
				range = argv[optind++];
			break;
		default: return vt_usage_hint(argv[0]);
		}
	}
	if (optind < argc)
		return vt_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
	if (!s.bridge[0])
		return vt_usage_error(argv[0], "--bridge is required");
	if (s.nat.out[0]) {
		if (!s.addr.family)
			return vt_usage_error(argv[0], "--nat needs --addr (the subnet to masquerade)");
		s.nat.subnet = net_cidr_network(&s.addr);
		snprintf(s.nat.bridge, sizeof(s.nat.bridge), "%s", s.bridge);
	}
	if (dhcp && !teardown) {
		if (!s.addr.family)
			return vt_usage_error(argv[0], "--dhcp needs --addr (the subnet to serve)");
		struct vt_error rerr = { 0 };
		snprintf(s.dhcp.bridge, sizeof(s.dhcp.bridge), "%s", s.bridge);
		s.dhcp.addr = s.addr;
		if (net_dhcp_range(&s.dhcp, range, &rerr))
			return net_cmd_fail(&rerr);
	}
	int ret = teardown ? net_teardown(&s, &changes, print_line, NULL, &err)
	                   : net_setup(&s, &changes, print_line, NULL, &err);
	fflush(stdout); /* the lines so far, then the error */
	if (ret)
		return net_cmd_fail(&err);
	if (!changes)
		printf(teardown ? "nothing to tear down\n" : "already set up: nothing to do\n");
	return 0;
}

static int setup_main(int argc, char **argv) { return setup_common(argc, argv, false); }
static int teardown_main(int argc, char **argv) { return setup_common(argc, argv, true); }

const struct vt_command vt_cmd_net_setup = { "net", "setup", "bridge + address + tap + NAT in one idempotent step", setup_help, setup_main };
const struct vt_command vt_cmd_net_teardown = { "net", "teardown", "undo 'vtool net setup'", teardown_help, teardown_main };
