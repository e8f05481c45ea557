/* A small rtnetlink client over libmnl: one request and its acknowledgement, or a dump
 * with a callback per message. Kernel errors come back as negative errno. */
#ifndef VTOOL_NET_NL_H
#define VTOOL_NET_NL_H

#include <libmnl/libmnl.h>

#include "util/error.h"

struct nl {
	struct mnl_socket *sock;
	unsigned portid, seq;
	char buf[32768];
};

int nl_open(struct nl *nl, int bus, struct vt_error *err);
void nl_close(struct nl *nl);
/* A new request in nl->buf with type/flags (NLM_F_REQUEST added). */
struct nlmsghdr *nl_msg(struct nl *nl, uint16_t type, uint16_t flags);
/* Send and wait for the ACK (or run cb over every reply of a dump). */
int nl_talk(struct nl *nl, struct nlmsghdr *msg, mnl_cb_t cb, void *data);

#endif
