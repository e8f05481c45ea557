/* IPv4/IPv6 addresses: CIDR parsing and rtnetlink RTM_{NEW,DEL,GET}ADDR. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "net/nl.h"

int net_mac_parse(const char *s, uint8_t mac[6])
{
	unsigned b[6];
	char tail;

	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		if (b[i] > 255)
			return -EINVAL;
		mac[i] = (uint8_t)b[i];
	}
	return 0;
}

int net_cidr_parse(const char *s, struct net_cidr *out, struct vt_error *err)
{
	static const char expected[] = "expected ADDRESS/PREFIX such as 192.168.57.1/24 or "
	                               "fd00::1/64";
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);

	memset(out, 0, sizeof(*out));
	if (n == 0 || n >= sizeof(buf))
		return vt_error_set(err, EINVAL, s, "invalid address", "%s", expected);
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, out->addr) == 1)
		out->family = AF_INET6;
	else
		return vt_error_set(err, EINVAL, s, "invalid address", "%s", expected);
	unsigned max = out->family == AF_INET ? 32 : 128;
	if (!slash)
		return vt_error_set(err, EINVAL, s, "invalid address",
		                    "no prefix length: give ADDRESS/PREFIX, such as %s/%u",
		                    buf, out->family == AF_INET ? 24 : 64);
	const char *p = slash + 1;
	unsigned v = 0;
	if (!*p || strlen(p) > 3)
		return vt_error_set(err, EINVAL, s, "invalid address", "%s", expected);
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return vt_error_set(err, EINVAL, s, "invalid address", "%s", expected);
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v > max)
		return vt_error_set(err, EINVAL, s, "invalid address",
		                    "prefix length %u is out of range (0 to %u)", v, max);
	out->prefix = v;
	return 0;
}

uint64_t net_cidr_room(const struct net_cidr *subnet, const struct net_cidr *own, int n_own)
{
	if (subnet->family != AF_INET)
		return UINT64_MAX;
	unsigned hostbits = 32 - subnet->prefix;
	uint64_t size = (uint64_t)1 << hostbits;
	struct net_cidr net = net_cidr_network(subnet);
	uint32_t first, last;
	memcpy(&first, net.addr, 4);
	first = ntohl(first);
	last = (uint32_t)(first + size - 1);
	uint64_t room = hostbits >= 2 ? size - 2 : size; /* network and broadcast */
	if (hostbits >= 2) {
		first++;
		last--;
	}
	for (int i = 0; i < n_own && room; i++) {
		uint32_t a;
		if (own[i].family != AF_INET)
			continue;
		memcpy(&a, own[i].addr, 4);
		a = ntohl(a);
		bool dup = false;
		for (int k = 0; k < i; k++)
			dup |= own[k].family == AF_INET && !memcmp(own[k].addr, own[i].addr, 4);
		if (!dup && a >= first && a <= last)
			room--;
	}
	return room;
}

void net_cidr_format(const struct net_cidr *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	inet_ntop(c->family, c->addr, a, sizeof(a));
	snprintf(buf, len, "%s/%u", a, c->prefix);
}

struct net_cidr net_cidr_network(const struct net_cidr *c)
{
	struct net_cidr n = *c;
	unsigned bytes = c->family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < bytes; i++) {
		unsigned bits = c->prefix > i * 8 ? c->prefix - i * 8 : 0;
		uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
		n.addr[i] &= mask;
	}
	return n;
}

struct addr_vec {
	struct net_addr *v;
	int n, cap;
};

static int addr_cb(const struct nlmsghdr *h, void *data)
{
	struct addr_vec *av = data;
	struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(h);
	struct nlattr *a;
	struct net_addr na = { .index = (int)ifa->ifa_index };
	bool have = false;

	na.cidr.family = ifa->ifa_family;
	na.cidr.prefix = ifa->ifa_prefixlen;
	size_t alen = ifa->ifa_family == AF_INET ? 4 : 16;
	mnl_attr_for_each(a, h, sizeof(*ifa)) {
		uint16_t t = mnl_attr_get_type(a);
		/* IFA_LOCAL is the address on point-to-point links; IFA_ADDRESS otherwise. */
		if ((t == IFA_LOCAL || (t == IFA_ADDRESS && !have)) &&
		    mnl_attr_get_payload_len(a) == alen) {
			memcpy(na.cidr.addr, mnl_attr_get_payload(a), alen);
			have = true;
		}
	}
	if (!have)
		return MNL_CB_OK;
	if (av->n == av->cap) {
		int cap = av->cap ? av->cap * 2 : 16;
		struct net_addr *v = realloc(av->v, (size_t)cap * sizeof(*v));
		if (!v)
			return MNL_CB_ERROR;
		av->v = v;
		av->cap = cap;
	}
	av->v[av->n++] = na;
	return MNL_CB_OK;
}

int net_addr_list(struct net_addr **out, int *n, struct vt_error *err)
{
	struct nl nl;
	struct addr_vec av = { 0 };
	int ret;

	if ((ret = nl_open(&nl, NETLINK_ROUTE, err)))
		return ret;
	struct nlmsghdr *h = nl_msg(&nl, RTM_GETADDR, NLM_F_DUMP);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(h, sizeof(*ifa));
	ifa->ifa_family = AF_UNSPEC;
	ret = nl_talk(&nl, h, addr_cb, &av);
	nl_close(&nl);
	if (ret) {
		free(av.v);
		return vt_error_set(err, -ret, "netlink", "list addresses", NULL);
	}
	*out = av.v;
	*n = av.n;
	return 0;
}

bool net_addr_present(const char *ifname, const struct net_cidr *c, struct vt_error *err)
{
	struct net_addr *v;
	int n;
	unsigned idx = if_nametoindex(ifname);
	bool found = false;

	if (!idx || net_addr_list(&v, &n, err))
		return false;
	size_t alen = c->family == AF_INET ? 4 : 16;
	for (int i = 0; i < n; i++)
		if (v[i].index == (int)idx && v[i].cidr.family == c->family &&
		    v[i].cidr.prefix == c->prefix && !memcmp(v[i].cidr.addr, c->addr, alen))
			found = true;
	free(v);
	return found;
}

static int addr_request(const char *ifname, const struct net_cidr *c, uint16_t type,
                        uint16_t flags, const char *what, struct vt_error *err)
{
	struct nl nl;
	int ret = net_name_check(ifname, err);

	if (ret)
		return ret;
	unsigned idx = if_nametoindex(ifname);
	if (!idx)
		return vt_error_set(err, ENODEV, ifname, what, "no such interface");
	if ((ret = nl_open(&nl, NETLINK_ROUTE, err)))
		return ret;
	struct nlmsghdr *h = nl_msg(&nl, type, flags);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(h, sizeof(*ifa));
	ifa->ifa_family = (uint8_t)c->family;
	ifa->ifa_prefixlen = (uint8_t)c->prefix;
	ifa->ifa_index = idx;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	size_t alen = c->family == AF_INET ? 4 : 16;
	mnl_attr_put(h, IFA_LOCAL, alen, c->addr);
	mnl_attr_put(h, IFA_ADDRESS, alen, c->addr);
	if (c->family == AF_INET && c->prefix < 31) {
		/* the broadcast address, as `ip addr add ... brd +` sets it */
		struct net_cidr b = net_cidr_network(c);
		for (unsigned i = c->prefix; i < 32; i++)
			b.addr[i / 8] |= (uint8_t)(0x80 >> (i % 8));
		mnl_attr_put(h, IFA_BROADCAST, 4, b.addr);
	}
	ret = nl_talk(&nl, h, NULL, NULL);
	nl_close(&nl);
	if (ret) {
		char cs[64];
		net_cidr_format(c, cs, sizeof(cs));
		return vt_error_set(err, -ret, ifname, what, "%s: %s", cs,
		                    -ret == EPERM ? "Operation not permitted (needs root or "
		                                    "CAP_NET_ADMIN)" : strerror(-ret));
	}
	return 0;
}

int net_addr_add(const char *ifname, const struct net_cidr *c, struct vt_error *err)
{
	return addr_request(ifname, c, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, "add address", err);
}

int net_addr_del(const char *ifname, const struct net_cidr *c, struct vt_error *err)
{
	return addr_request(ifname, c, RTM_DELADDR, 0, "delete address", err);
}
