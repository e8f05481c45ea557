/* `vtool net show`: bridges, taps, addresses and NAT rules, human or JSON.
 *
 * Links and addresses come from rtnetlink dumps, which anyone may read; nftables answers
 * only CAP_NET_ADMIN, so without it the NAT part is marked unavailable and the rest is
 * still shown. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/cmd.h"
#include "net/dhcp.h"
#include "net/net.h"
#include "util/json.h"

static const char show_help[] =
	"Usage: vtool net show [--output=human|json]\n"
	"\n"
	"Bridges with their ports and addresses, taps, and vtool's NAT rules. Chains of other\n"
	"nftables tables that drop forwarded IPv4 by policy (such as Docker's) are listed as\n"
	"forward-drop FAMILY TABLE CHAIN, with what to do on stderr: vtool's NAT cannot work\n"
	"through them. Links and addresses are readable by anyone; without root (or\n"
	"CAP_NET_ADMIN) the NAT part is shown as unavailable (\"nat\": null in JSON).\n"
	"A bridge served by 'vtool net setup --dhcp' is followed by its dnsmasq (dhcp BR\n"
	"RANGE pid N) and one line per lease: lease BR IP MAC [hostname NAME] expires TIME.\n"
	"\n"
	"Options:\n"
	"  --output=human|json   the format (default human)\n"
	"\n"
	"Example:\n"
	"  vtool net show --output=json\n";

struct show {
	bool json;
	struct net_link *links;
	struct net_addr *addrs;
	struct net_nat *nats;        /* NULL: NAT unavailable, nat_why says why */
	struct net_fwdrop *drops;
	int nl, na, nn, nd;
	char nat_why[600];
};

/* vtool's dnsmasq for a bridge and its leases, after the bridge's line. */
static void show_dhcp(const struct show *sh, const char *bridge, struct vt_json *o)
{
	struct net_dhcp_status st;
	struct vt_error ignored;
	char mac[24], when[32];

	if (net_dhcp_status(bridge, &st, &ignored) || !st.configured)
		return;
	struct vt_json *d = vt_json_object(), *jl = vt_json_array();
	vt_json_set_str(d, "range", st.range);
	vt_json_set(d, "pid", st.pid ? vt_json_int(st.pid) : vt_json_null());
	if (!sh->json) {
		if (st.pid)
			printf("dhcp %s %s pid %d\n", bridge, st.range, st.pid);
		else
			printf("dhcp %s %s not running\n", bridge, st.range);
	}
	for (int i = 0; i < st.n_leases; i++) {
		const struct net_lease *l = &st.leases[i];
		struct vt_json *x = vt_json_object();
		vt_json_set_str(x, "ip", l->ip);
		vt_json_set_str(x, "mac", net_cmd_mac_str(l->mac, mac));
		vt_json_set(x, "hostname", l->hostname[0] ? vt_json_string(l->hostname) : vt_json_null());
		vt_json_set_int(x, "expires", l->expires);
		vt_json_append(jl, x);
		if (sh->json)
			continue;
		time_t t = (time_t)l->expires;
		struct tm tm;
		if (l->expires && gmtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		else
			snprintf(when, sizeof(when), "never");
		printf("lease %s %s %s%s%s expires %s\n", bridge, l->ip, mac,
		       l->hostname[0] ? " hostname " : "", l->hostname, when);
	}
	vt_json_set(d, "leases", jl);
	vt_json_set(o, "dhcp", d);
	net_dhcp_status_free(&st);
}

/* One bridge or tap: human line and JSON object. */
static struct vt_json *show_link(const struct show *sh, const struct net_link *l, bool bridge)
{
	struct vt_json *o = vt_json_object(), *ports = vt_json_array(), *ads = vt_json_array();
	char buf[64], mac[24];

	vt_json_set_str(o, "name", l->name);
	vt_json_set_bool(o, "up", l->up);
	vt_json_set_int(o, "mtu", l->mtu);
	vt_json_set_str(o, "mac", net_cmd_mac_str(l->mac, mac));
	if (!sh->json)
		printf("%s %s %s mtu %u %s", bridge ? "bridge" : "tap", l->name,
		       l->up ? "up" : "down", l->mtu, mac);
	const char *master = NULL;
	for (int k = 0; k < sh->nl; k++) {
		if (sh->links[k].master == l->index) {
			vt_json_append(ports, vt_json_string(sh->links[k].name));
			if (!sh->json)
				printf(" port %s", sh->links[k].name);
		}
		if (sh->links[k].index == l->master)
			master = sh->links[k].name;
	}
	if (master) {
		vt_json_set_str(o, "bridge", master);
		if (!sh->json)
			printf(" bridge %s", master);
	}
	for (int k = 0; k < sh->na; k++) {
		if (sh->addrs[k].index != l->index)
			continue;
		net_cidr_format(&sh->addrs[k].cidr, buf, sizeof(buf));
		vt_json_append(ads, vt_json_string(buf));
		if (!sh->json)
			printf(" addr %s", buf);
	}
	if (!sh->json)
		printf("\n");
	if (bridge)
		vt_json_set(o, "ports", ports);
	else
		vt_json_free(ports);
	vt_json_set(o, "addresses", ads);
	if (bridge)
		show_dhcp(sh, l->name, o);
	return o;
}

/* vtool's NAT rules and other tables' dropping forward chains; null when unreadable. */
static void show_nat(const struct show *sh, struct vt_json *root)
{
	char buf[64], line[1024];

	if (!sh->nats) {
		vt_json_set(root, "nat", vt_json_null());
		vt_json_set(root, "forward_drop", vt_json_null());
		vt_json_set_str(root, "nat_unavailable", sh->nat_why);
		if (!sh->json)
			printf("nat unavailable: %s\n", sh->nat_why);
		return;
	}
	struct vt_json *jn = vt_json_array(), *jd = vt_json_array();
	for (int i = 0; i < sh->nn; i++) {
		struct vt_json *o = vt_json_object();
		net_cidr_format(&sh->nats[i].subnet, buf, sizeof(buf));
		vt_json_set_str(o, "subnet", buf);
		vt_json_set_str(o, "out", sh->nats[i].out);
		vt_json_set_bool(o, "forward", sh->nats[i].forward);
		vt_json_append(jn, o);
		if (!sh->json)
			printf("nat %s out %s%s\n", buf, sh->nats[i].out,
			       sh->nats[i].forward ? " forward" : "");
	}
	/* A fact on stdout, the remedy on stderr. */
	const char *br = NULL;
	for (int k = 0; k < sh->nn && !br; k++)
		if (sh->nats[k].bridge[0])
			br = sh->nats[k].bridge;
	for (int i = 0; i < sh->nd; i++) {
		const struct net_fwdrop *d = &sh->drops[i];
		struct vt_json *o = vt_json_object();
		vt_json_set_str(o, "family", d->family);
		vt_json_set_str(o, "table", d->table);
		vt_json_set_str(o, "chain", d->chain);
		vt_json_append(jd, o);
		if (!sh->json)
			printf("forward-drop %s %s %s\n", d->family, d->table, d->chain);
		net_forward_drop_advice(d, br, line, sizeof(line));
		fflush(stdout);
		fprintf(stderr, "vtool: warning: %s\n", line);
	}
	vt_json_set(root, "nat", jn);
	vt_json_set(root, "forward_drop", jd);
}

static int show_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'O' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct show sh = { 0 };
	struct vt_error err = { 0 };
	int c, ret = 0;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c != 'O')
			return vt_usage_hint(argv[0]);
		if (!strcmp(optarg, "json"))
			sh.json = true;
		else if (strcmp(optarg, "human"))
			return vt_usage_error(argv[0], "--output must be human or json");
	}
	if (optind < argc)
		return vt_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
	if (net_link_list(&sh.links, &sh.nl, &err) || net_addr_list(&sh.addrs, &sh.na, &err)) {
		free(sh.links);
		return net_cmd_fail(&err);
	}
	if (net_nat_list(&sh.nats, &sh.nn, &err) ||
	    net_forward_drops(&sh.drops, &sh.nd, &err)) {
		/* Not readable here (no CAP_NET_ADMIN, no nf_tables): show the rest. */
		snprintf(sh.nat_why, sizeof(sh.nat_why), "%s",
		         err.code == EPERM ? "reading nftables needs root or CAP_NET_ADMIN" : err.why);
		free(sh.nats);
		sh.nats = NULL;
		sh.nn = 0;
	}
	struct vt_json *root = vt_json_object(), *jb = vt_json_array(), *jt = vt_json_array();
	for (int i = 0; i < sh.nl; i++) {
		bool bridge = !strcmp(sh.links[i].kind, "bridge");
		if (bridge || net_link_is_tap(sh.links[i].name))
			vt_json_append(bridge ? jb : jt, show_link(&sh, &sh.links[i], bridge));
	}
	vt_json_set(root, "bridges", jb);
	vt_json_set(root, "taps", jt);
	show_nat(&sh, root);
	if (sh.json) {
		ret = vt_json_print(stdout, root, VT_JSON_COMPACT);
		printf("\n");
	}
	vt_json_free(root);
	free(sh.links);
	free(sh.addrs);
	free(sh.nats);
	free(sh.drops);
	return ret ? 1 : 0;
}

const struct vt_command vt_cmd_net_show = { "net", "show", "bridges, taps, addresses, vtool's NAT rules and DHCP leases", show_help, show_main };
