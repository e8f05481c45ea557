/* The one-shot VM network: bridge + address + tap (as a bridge port) + NAT + dnsmasq for
 * DHCP and DNS, made idempotently and undone exactly. */
#ifndef VTOOL_NET_SETUP_H
#define VTOOL_NET_SETUP_H

#include "net/dhcp.h"
#include "net/net.h"

struct net_setup {
	char bridge[NET_NAME_MAX];
	struct net_cidr addr;        /* family 0: no address */
	char tap[NET_NAME_MAX];      /* "": no tap */
	unsigned tap_flags;
	long owner, group;           /* -1: unchanged */
	struct net_nat nat;          /* out[0] == 0: no NAT */
	struct net_dhcp dhcp;        /* bridge[0] == 0: no DHCP (range set by the caller) */
};

enum net_report {
	NET_REPORT_DONE,      /* a change made ("created bridge br0") */
	NET_REPORT_UNDONE,    /* a change taken back after a failed step ("removed bridge br0") */
	NET_REPORT_WARNING,   /* something the user should know or fix; nothing was changed */
};
/* One call per line. */
typedef void net_report_fn(void *arg, enum net_report kind, const char *line);

/* *changes is 0 when everything was already in place. On failure, what this call made
 * is removed again, each removal reported (NET_REPORT_UNDONE) as it happens, so the
 * lines seen match the system. */
int net_setup(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
              struct vt_error *err);
int net_teardown(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
                 struct vt_error *err);

#endif
