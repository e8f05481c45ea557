/* `vtool net setup` / `teardown`: the nine manual steps of the classic bridge + tap + NAT
 * recipe (and dnsmasq for DHCP) as one idempotent command and its exact undo. Each step
 * first looks at what is there; setup records what it did and, if a later step fails,
 * takes those back in reverse order. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/setup.h"

enum step { S_BRIDGE, S_BRIDGE_UP, S_ADDR, S_TAP, S_TAP_PORT, S_TAP_UP, S_NAT, S_DHCP,
            S_COUNT };

__attribute__((format(printf, 4, 5)))
static void report(net_report_fn *fn, void *arg, enum net_report kind, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (fn)
		fn(arg, kind, line);
}

/* One undo step: report what it did, or warn that it could not. */
static void undo_step(int ret, const struct vt_error *e, net_report_fn *fn, void *arg,
                      const char *line)
{
	char why[1200];

	if (!ret) {
		report(fn, arg, NET_REPORT_UNDONE, "%s", line);
		return;
	}
	vt_error_format(e, why, sizeof(why));
	report(fn, arg, NET_REPORT_WARNING, "rollback failed, left in place: %s", why);
}

/* Take back what this run did, newest first. A link this run created goes with what was
 * done to it (its port and up state); an address is removed explicitly even from a
 * bridge about to go, so each line the run printed has its counterpart. */
static void undo(const struct net_setup *s, const bool done[S_COUNT], net_report_fn *fn,
                 void *arg)
{
	struct vt_error e = { 0 };
	char line[256], cidr[64];

	if (done[S_DHCP]) {
		int pid;
		snprintf(line, sizeof(line), "stopped dnsmasq on %s", s->bridge);
		undo_step(net_dhcp_stop(s->bridge, &pid, &e), &e, fn, arg, line);
	}
	if (done[S_NAT]) {
		net_cidr_format(&s->nat.subnet, cidr, sizeof(cidr));
		snprintf(line, sizeof(line), "removed NAT of %s out of %s", cidr, s->nat.out);
		undo_step(net_nat_del(&s->nat, &e), &e, fn, arg, line);
	}
	if (done[S_TAP]) {
		snprintf(line, sizeof(line), "removed tap %s", s->tap);
		undo_step(net_tap_delete(s->tap, &e), &e, fn, arg, line);
	} else {
		if (done[S_TAP_UP]) {
			snprintf(line, sizeof(line), "set %s down", s->tap);
			undo_step(net_link_set_up(s->tap, false, &e), &e, fn, arg, line);
		}
		if (done[S_TAP_PORT]) {
			snprintf(line, sizeof(line), "removed %s from bridge %s", s->tap, s->bridge);
			undo_step(net_link_set_master(s->tap, NULL, &e), &e, fn, arg, line);
		}
	}
	if (done[S_ADDR]) {
		net_cidr_format(&s->addr, cidr, sizeof(cidr));
		snprintf(line, sizeof(line), "removed address %s from %s", cidr, s->bridge);
		undo_step(net_addr_del(s->bridge, &s->addr, &e), &e, fn, arg, line);
	}
	if (done[S_BRIDGE]) {
		snprintf(line, sizeof(line), "removed bridge %s", s->bridge);
		undo_step(net_link_delete(s->bridge, &e), &e, fn, arg, line);
	} else if (done[S_BRIDGE_UP]) {
		snprintf(line, sizeof(line), "set %s down", s->bridge);
		undo_step(net_link_set_up(s->bridge, false, &e), &e, fn, arg, line);
	}
}

/* Another table dropping forwarded packets makes the NAT useless: say which and what to
 * do (vtool never edits others' rules). */
static void warn_forward_drops(const struct net_setup *s, net_report_fn *fn, void *arg)
{
	struct net_fwdrop *d;
	struct vt_error ignored;
	char line[1024];
	int n;

	if (net_forward_drops(&d, &n, &ignored))
		return;
	for (int i = 0; i < n; i++) {
		net_forward_drop_advice(&d[i], s->bridge, line, sizeof(line));
		report(fn, arg, NET_REPORT_WARNING, "%s", line);
	}
	free(d);
}

int net_setup(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
              struct vt_error *err)
{
	bool done[S_COUNT] = { false };
	struct net_link l;
	int ret;
	char cidr[64];

	*changes = 0;
	net_cidr_format(&s->addr, cidr, sizeof(cidr));
	/* bridge */
	ret = net_link_get(s->bridge, &l, err);
	if (ret == -ENODEV) {
		if ((ret = net_bridge_create(s->bridge, err)))
			goto fail;
		done[S_BRIDGE] = true;
		report(fn, arg, NET_REPORT_DONE, "created bridge %s", s->bridge);
		net_link_get(s->bridge, &l, err);
	} else if (ret) {
		goto fail;
	} else if (strcmp(l.kind, "bridge")) {
		ret = vt_error_set(err, EEXIST, s->bridge, "set up bridge",
		                   "the name is taken by a %s interface that is not a bridge",
		                   l.kind[0] ? l.kind : "plain");
		goto fail;
	}
	if (!l.up) {
		if ((ret = net_link_set_up(s->bridge, true, err)))
			goto fail;
		done[S_BRIDGE_UP] = true;
		report(fn, arg, NET_REPORT_DONE, "set %s up", s->bridge);
	}
	/* address */
	if (s->addr.family && !net_addr_present(s->bridge, &s->addr, err)) {
		if ((ret = net_addr_add(s->bridge, &s->addr, err)))
			goto fail;
		done[S_ADDR] = true;
		report(fn, arg, NET_REPORT_DONE, "added address %s to %s", cidr, s->bridge);
	}
	/* tap, its bridge port, up */
	if (s->tap[0]) {
		ret = net_link_get(s->tap, &l, err);
		if (ret == -ENODEV) {
			if ((ret = net_tap_create(s->tap, s->tap_flags, s->owner, s->group, NULL, err)))
				goto fail;
			done[S_TAP] = true;
			report(fn, arg, NET_REPORT_DONE, "created tap %s", s->tap);
			net_link_get(s->tap, &l, err);
		} else if (ret) {
			goto fail;
		} else if (!net_link_is_tap(s->tap)) {
			ret = vt_error_set(err, EEXIST, s->tap, "set up tap",
			                   "the name is taken by an interface that is not a tap");
			goto fail;
		}
		struct net_link br;
		net_link_get(s->bridge, &br, err);
		if (l.master != br.index) {
			if ((ret = net_link_set_master(s->tap, s->bridge, err)))
				goto fail;
			done[S_TAP_PORT] = true;
			report(fn, arg, NET_REPORT_DONE, "added %s to bridge %s", s->tap, s->bridge);
		}
		if (!l.up) {
			if ((ret = net_link_set_up(s->tap, true, err)))
				goto fail;
			done[S_TAP_UP] = true;
			report(fn, arg, NET_REPORT_DONE, "set %s up", s->tap);
		}
	}
	/* NAT */
	if (s->nat.out[0] && net_cidr_room(&s->nat.subnet, &s->addr, 1) == 0) {
		char net[64];
		net_cidr_format(&s->nat.subnet, net, sizeof(net));
		report(fn, arg, NET_REPORT_WARNING, "NAT subnet %s holds no address but %s's own: "
		       "no guest can be in it (give --addr a shorter prefix, such as /24)", net,
		       s->bridge);
	}
	if (s->nat.out[0] && !net_nat_present(&s->nat, err)) {
		if ((ret = net_nat_add(&s->nat, err)))
			goto fail;
		done[S_NAT] = true;
		char net[64];
		net_cidr_format(&s->nat.subnet, net, sizeof(net));
		report(fn, arg, NET_REPORT_DONE, "masquerading %s out of %s (ip_forward on)", net, s->nat.out);
	}
	if (s->nat.out[0])
		warn_forward_drops(s, fn, arg);
	/* DHCP and DNS: last, once the bridge has its address */
	if (s->dhcp.bridge[0]) {
		enum net_dhcp_start how;
		int pid;
		char range[40];
		if ((ret = net_dhcp_start(&s->dhcp, &how, &pid, err)))
			goto fail;
		net_dhcp_range_format(&s->dhcp, range, sizeof(range));
		done[S_DHCP] = how != NET_DHCP_KEPT;
		if (how != NET_DHCP_KEPT)
			report(fn, arg, NET_REPORT_DONE, "%s dnsmasq on %s (pid %d): DHCP %s, DNS",
			       how == NET_DHCP_STARTED ? "started" : "restarted", s->bridge, pid,
			       range);
	}
	for (int i = 0; i < S_COUNT; i++)
		*changes += done[i];
	return 0;
fail:
	undo(s, done, fn, arg);
	return ret;
}

int net_teardown(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
                 struct vt_error *err)
{
	struct net_link l;
	int ret;

	*changes = 0;
	/* vtool's dnsmasq for the bridge goes first, with or without --dhcp: it would
	 * outlive the bridge otherwise. */
	int pid;
	ret = net_dhcp_stop(s->bridge, &pid, err);
	if (ret == -EBUSY) {
		char why[1200];
		vt_error_format(err, why, sizeof(why));
		vt_error_clear(err);
		report(fn, arg, NET_REPORT_WARNING, "%s", why);
	} else if (ret) {
		return ret;
	} else if (pid) {
		report(fn, arg, NET_REPORT_DONE, "stopped dnsmasq on %s (pid %d)", s->bridge, pid);
		(*changes)++;
	}
	if (s->nat.out[0] && net_nat_present(&s->nat, err)) {
		if ((ret = net_nat_del(&s->nat, err)))
			return ret;
		report(fn, arg, NET_REPORT_DONE, "removed NAT out of %s", s->nat.out);
		(*changes)++;
	}
	if (s->tap[0] && net_link_get(s->tap, &l, NULL) == 0) {
		if (!net_link_is_tap(s->tap))
			return vt_error_set(err, EEXIST, s->tap, "tear down tap", "is not a tap; left alone");
		if ((ret = net_tap_delete(s->tap, err)))
			return ret;
		report(fn, arg, NET_REPORT_DONE, "deleted tap %s", s->tap);
		(*changes)++;
	}
	if (net_link_get(s->bridge, &l, NULL) == 0) {
		if (strcmp(l.kind, "bridge"))
			return vt_error_set(err, EEXIST, s->bridge, "tear down bridge",
			                    "is not a bridge; left alone");
		/* Deleting the bridge removes its address and detaches its ports. */
		if ((ret = net_link_delete(s->bridge, err)))
			return ret;
		report(fn, arg, NET_REPORT_DONE, "deleted bridge %s", s->bridge);
		(*changes)++;
	}
	return 0;
}
