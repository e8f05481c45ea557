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
	"Usage: vtool net setup --bridge BR [--addr CIDR] [--tap TAP] [--owner U] [--group G]\n"
	"                       [--nat UPLINK] [--forward]\n"
	"\n"
	"The seed's manual steps in one idempotent command: create the bridge and set it up,\n"
	"give it the address, create a persistent tap as a port of the bridge, masquerade\n"
	"the bridge's subnet out of UPLINK with ip_forward on. Running it again changes\n"
	"nothing and says so; if a step fails, what this run created is removed again.\n"
	"'vtool net teardown' with the same options undoes it.\n"
	"\n"
	"Example:\n"
	"  vtool net setup --bridge br0 --addr 192.168.57.1/24 --tap tap0 --nat eth0\n";

static const char teardown_help[] =
	"Usage: vtool net teardown --bridge BR [--addr CIDR] [--tap TAP] [--nat UPLINK]\n"
	"\n"
	"Undo 'vtool net setup' with the same options: remove the NAT rule (restoring\n"
	"ip_forward), the tap and the bridge (with its address). Objects that are not there\n"
	"are skipped; names taken by something else are left alone with an error.\n"
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
		{ "forward", no_argument, NULL, 'f' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct net_setup s = { .owner = -1, .group = -1 };
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
