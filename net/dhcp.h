/* DHCP and DNS forwarding for the guests on a bridge, the way libvirt's default NAT
 * network does it: Debian's dnsmasq (package dnsmasq-base) bound to the bridge alone,
 * with a generated configuration, a pidfile, a lease file and a log under
 * /run/vtool/<bridge>/. Started by `vtool net setup --dhcp`, stopped by teardown, read by
 * `vtool net show`.
 *
 * The directory is the whole state: a dnsmasq is vtool's for a bridge when the pidfile
 * there names a live dnsmasq whose command line is that directory's configuration. /run
 * is shared by every network namespace, so a dnsmasq found serving the same name in
 * another namespace is left alone (-EBUSY). Functions return 0 or a negative errno and
 * fill a struct vt_error; they never print. */
#ifndef VTOOL_NET_DHCP_H
#define VTOOL_NET_DHCP_H

#include <stdbool.h>
#include <stdint.h>

#include "net/net.h"

#define NET_RUN_DIR "/run/vtool"

struct net_dhcp {
	char bridge[NET_NAME_MAX];   /* "": no DHCP */
	struct net_cidr addr;        /* the bridge's IPv4 address: gateway and DNS server */
	uint32_t first, last;        /* the range handed out, host byte order */
};

/* Fill d->first/last from RANGE ("A-B" or "A,B": host addresses of addr's subnet, the
 * bridge's own outside it), or, for NULL or "", from the default: the subnet's host
 * addresses above the bridge's (below it when there are none above). d->addr must be
 * set. */
int net_dhcp_range(struct net_dhcp *d, const char *range, struct vt_error *err);
/* "192.168.57.2-192.168.57.254" */
void net_dhcp_range_format(const struct net_dhcp *d, char *buf, size_t len);

enum net_dhcp_start {
	NET_DHCP_KEPT,               /* one with the same configuration was running */
	NET_DHCP_STARTED,
	NET_DHCP_RESTARTED,          /* one ran with another configuration: replaced */
};
/* Make sure dnsmasq serves d->bridge with d's configuration; *pid is its pid. */
int net_dhcp_start(const struct net_dhcp *d, enum net_dhcp_start *how, int *pid,
                   struct vt_error *err);
/* Stop the bridge's dnsmasq (SIGTERM, then SIGKILL after 3 s) and remove its directory.
 * *pid is the pid stopped, 0 when none ran (a stale directory is still removed). */
int net_dhcp_stop(const char *bridge, int *pid, struct vt_error *err);

struct net_lease {
	int64_t expires;             /* seconds since the epoch, 0 for never */
	uint8_t mac[6];
	char ip[16];
	char hostname[64];           /* "" when the client gave none */
};

struct net_dhcp_status {
	bool configured;             /* the bridge has a vtool dnsmasq directory */
	int pid;                     /* 0: not running */
	char range[40];
	struct net_lease *leases;    /* malloc'd */
	int n_leases;
};
/* What vtool's dnsmasq for the bridge is doing; readable without privileges. */
int net_dhcp_status(const char *bridge, struct net_dhcp_status *st, struct vt_error *err);
void net_dhcp_status_free(struct net_dhcp_status *st);

#endif
