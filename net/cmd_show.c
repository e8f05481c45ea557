/* `vtool net show`: bridges, taps, addresses and NAT rules, human or JSON. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/cmd.h"
#include "net/net.h"
#include "util/json.h"

static const char show_help[] =
	"Usage: vtool net show [--output=human|json]\n"
	"\n"
	"Bridges with their ports and addresses, taps, and vtool's NAT rules. Chains of other\n"
	"nftables tables that drop forwarded IPv4 by policy (such as Docker's) are listed as\n"
	"forward-drop FAMILY TABLE CHAIN, with what to do on stderr: vtool's NAT cannot work\n"
	"through them.\n"
	"\n"
	"Example:\n"
	"  vtool net show --output=json\n";

static int show_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'O' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false;
	struct vt_error err = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c != 'O')
			return vt_usage_hint(argv[0]);
		if (!strcmp(optarg, "json"))
			json = true;
		else if (strcmp(optarg, "human"))
			return vt_usage_error(argv[0], "--output must be human or json");
	}
	struct net_link *links;
	struct net_addr *addrs;
	struct net_nat *nats;
	int nl, na, nn;
	if (net_link_list(&links, &nl, &err))
		return net_cmd_fail(&err);
	struct net_fwdrop *drops = NULL;
	int nd = 0;
	if (net_addr_list(&addrs, &na, &err) || net_nat_list(&nats, &nn, &err)) {
		free(links);
		return net_cmd_fail(&err);
	}
	if (net_forward_drops(&drops, &nd, &err)) {
		free(links);
		free(addrs);
		free(nats);
		return net_cmd_fail(&err);
	}
	struct vt_json *root = vt_json_object(), *jb = vt_json_array(), *jt = vt_json_array(),
	               *jn = vt_json_array();
	char buf[64], mac[24];
	for (int i = 0; i < nl; i++) {
		bool bridge = !strcmp(links[i].kind, "bridge"), tap = net_link_is_tap(links[i].name);
		if (!bridge && !tap)
			continue;
		struct vt_json *o = vt_json_object(), *ports = vt_json_array(), *ads = vt_json_array();
		vt_json_set_str(o, "name", links[i].name);
		vt_json_set_bool(o, "up", links[i].up);
		vt_json_set_int(o, "mtu", links[i].mtu);
		vt_json_set_str(o, "mac", net_cmd_mac_str(links[i].mac, mac));
		if (!json)
			printf("%s %s %s mtu %u %s", bridge ? "bridge" : "tap", links[i].name,
			       links[i].up ? "up" : "down", links[i].mtu, mac);
		const char *master = NULL;
		for (int k = 0; k < nl; k++) {
			if (links[k].master == links[i].index) {
				vt_json_append(ports, vt_json_string(links[k].name));
				if (!json)
					printf(" port %s", links[k].name);
			}
			if (links[k].index == links[i].master)
				master = links[k].name;
		}
		if (master) {
			vt_json_set_str(o, "bridge", master);
			if (!json)
				printf(" bridge %s", master);
		}
		for (int k = 0; k < na; k++) {
			if (addrs[k].index != links[i].index)
				continue;
			net_cidr_format(&addrs[k].cidr, buf, sizeof(buf));
			vt_json_append(ads, vt_json_string(buf));
			if (!json)
				printf(" addr %s", buf);
		}
		if (!json)
			printf("\n");
		if (bridge)
			vt_json_set(o, "ports", ports);
		else
			vt_json_free(ports);
		vt_json_set(o, "addresses", ads);
		vt_json_append(bridge ? jb : jt, o);
	}
	for (int i = 0; i < nn; i++) {
		struct vt_json *o = vt_json_object();
		net_cidr_format(&nats[i].subnet, buf, sizeof(buf));
		vt_json_set_str(o, "subnet", buf);
		vt_json_set_str(o, "out", nats[i].out);
		vt_json_set_bool(o, "forward", nats[i].forward);
		vt_json_append(jn, o);
		if (!json)
			printf("nat %s out %s%s\n", buf, nats[i].out, nats[i].forward ? " forward" : "");
	}
	/* Other tables dropping forwarded traffic: a fact on stdout, the remedy on stderr. */
	struct vt_json *jd = vt_json_array();
	for (int i = 0; i < nd; i++) {
		struct vt_json *o = vt_json_object();
		vt_json_set_str(o, "family", drops[i].family);
		vt_json_set_str(o, "table", drops[i].table);
		vt_json_set_str(o, "chain", drops[i].chain);
		vt_json_append(jd, o);
		if (!json)
			printf("forward-drop %s %s %s\n", drops[i].family, drops[i].table,
			       drops[i].chain);
		const char *br = NULL;
		for (int k = 0; k < nn && !br; k++)
			if (nats[k].bridge[0])
				br = nats[k].bridge;
		char line[1024];
		net_forward_drop_advice(&drops[i], br, line, sizeof(line));
		fflush(stdout);
		fprintf(stderr, "vtool: warning: %s\n", line);
	}
	vt_json_set(root, "bridges", jb);
	vt_json_set(root, "taps", jt);
	vt_json_set(root, "nat", jn);
	vt_json_set(root, "forward_drop", jd);
	int ret = 0;
	if (json) {
		ret = vt_json_print(stdout, root, VT_JSON_COMPACT);
		printf("\n");
	}
	vt_json_free(root);
	free(links);
	free(addrs);
	free(nats);
	free(drops);
	return ret ? 1 : 0;
}

const struct vt_command vt_cmd_net_show = { "net", "show", "bridges, taps, addresses and vtool's NAT rules", show_help, show_main };
