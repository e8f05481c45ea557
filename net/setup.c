/* `vtool net setup` / `teardown`: the seed's nine manual steps as one idempotent command
 * and its exact undo. Each step first looks at what is there; setup records what it
 * created and, if a later step fails, removes those again in reverse order. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "net/setup.h"

enum step { S_BRIDGE, S_BRIDGE_UP, S_ADDR, S_TAP, S_TAP_PORT, S_TAP_UP, S_NAT, S_COUNT };

__attribute__((format(printf, 3, 4)))
static void report(net_report_fn *fn, void *arg, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (fn)
		fn(arg, line);
}

static void undo(const struct net_setup *s, const bool done[S_COUNT])
{
	struct vt_error ignored;

	if (done[S_NAT])
		net_nat_del(&s->nat, &ignored);
	if (done[S_TAP])
		net_tap_delete(s->tap, &ignored);
	else if (done[S_TAP_PORT])
		net_link_set_master(s->tap, NULL, &ignored);
	if (done[S_ADDR])
		net_addr_del(s->bridge, &s->addr, &ignored);
	if (done[S_BRIDGE])
		net_link_delete(s->bridge, &ignored);
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
		report(fn, arg, "created bridge %s", s->bridge);
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
		report(fn, arg, "set %s up", s->bridge);
	}
	/* address */
	if (s->addr.family && !net_addr_present(s->bridge, &s->addr, err)) {
		if ((ret = net_addr_add(s->bridge, &s->addr, err)))
			goto fail;
		done[S_ADDR] = true;
		report(fn, arg, "added address %s to %s", cidr, s->bridge);
	}
	/* tap, its bridge port, up */
	if (s->tap[0]) {
		ret = net_link_get(s->tap, &l, err);
		if (ret == -ENODEV) {
			if ((ret = net_tap_create(s->tap, s->tap_flags, s->owner, s->group, err)))
				goto fail;
			done[S_TAP] = true;
			report(fn, arg, "created tap %s", s->tap);
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
			report(fn, arg, "added %s to bridge %s", s->tap, s->bridge);
		}
		if (!l.up) {
			if ((ret = net_link_set_up(s->tap, true, err)))
				goto fail;
			done[S_TAP_UP] = true;
			report(fn, arg, "set %s up", s->tap);
		}
	}
	/* NAT */
	if (s->nat.out[0] && !net_nat_present(&s->nat, err)) {
		if ((ret = net_nat_add(&s->nat, err)))
			goto fail;
		done[S_NAT] = true;
		char net[64];
		net_cidr_format(&s->nat.subnet, net, sizeof(net));
		report(fn, arg, "masquerading %s out of %s (ip_forward on)", net, s->nat.out);
	}
	for (int i = 0; i < S_COUNT; i++)
		*changes += done[i];
	return 0;
fail:
	undo(s, done);
	return ret;
}

int net_teardown(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
                 struct vt_error *err)
{
	struct net_link l;
	int ret;

	*changes = 0;
	if (s->nat.out[0] && net_nat_present(&s->nat, err)) {
		if ((ret = net_nat_del(&s->nat, err)))
			return ret;
		report(fn, arg, "removed NAT out of %s", s->nat.out);
		(*changes)++;
	}
	if (s->tap[0] && net_link_get(s->tap, &l, NULL) == 0) {
		if (!net_link_is_tap(s->tap))
			return vt_error_set(err, EEXIST, s->tap, "tear down tap", "is not a tap; left alone");
		if ((ret = net_tap_delete(s->tap, err)))
			return ret;
		report(fn, arg, "deleted tap %s", s->tap);
		(*changes)++;
	}
	if (net_link_get(s->bridge, &l, NULL) == 0) {
		if (strcmp(l.kind, "bridge"))
			return vt_error_set(err, EEXIST, s->bridge, "tear down bridge",
			                    "is not a bridge; left alone");
		/* Deleting the bridge removes its address and detaches its ports. */
		if ((ret = net_link_delete(s->bridge, err)))
			return ret;
		report(fn, arg, "deleted bridge %s", s->bridge);
		(*changes)++;
	}
	return 0;
}
