/* The one-shot VM network: bridge + address + tap (as a bridge port) + NAT, made
 * idempotently and undone exactly. */
#ifndef VTOOL_NET_SETUP_H
#define VTOOL_NET_SETUP_H

#include "net/net.h"

struct net_setup {
	char bridge[NET_NAME_MAX];
	struct net_cidr addr;        /* family 0: no address */
	char tap[NET_NAME_MAX];      /* "": no tap */
	unsigned tap_flags;
	long owner, group;           /* -1: unchanged */
	struct net_nat nat;          /* out[0] == 0: no NAT */
};

/* One line per change made ("created bridge br0"). */
typedef void net_report_fn(void *arg, const char *line);

/* *changes is 0 when everything was already in place. On failure, what this call made
 * is removed again. */
int net_setup(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
              struct vt_error *err);
int net_teardown(const struct net_setup *s, int *changes, net_report_fn *fn, void *arg,
                 struct vt_error *err);

#endif
