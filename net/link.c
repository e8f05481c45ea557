/* Links and bridges over rtnetlink. */
#include <ctype.h>
#include <errno.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "net/nl.h"

int net_name_check(const char *name, struct vt_error *err)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0)
		return vt_error_set(err, EINVAL, "\"\"", "invalid interface name", "empty");
	if (n >= NET_NAME_MAX)
		return vt_error_set(err, EINVAL, name, "invalid interface name",
		                    "%zu bytes long, at most %d", n, NET_NAME_MAX - 1);
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return vt_error_set(err, EINVAL, name, "invalid interface name",
		                    "'.' and '..' are not allowed");
	for (const char *p = name; *p; p++) {
		if (*p == '/')
			return vt_error_set(err, EINVAL, name, "invalid interface name", "contains '/'");
		if (isspace((unsigned char)*p))
			return vt_error_set(err, EINVAL, name, "invalid interface name",
			                    "contains whitespace");
	}
	return 0;
}

static int index_of(const char *name, struct vt_error *err)
{
	int ret = net_name_check(name, err);

	if (ret)
		return ret;
	unsigned idx = if_nametoindex(name);
	if (!idx)
		return vt_error_set(err, ENODEV, name, "find interface", "no such interface");
	return (int)idx;
}

/* Parse one RTM_NEWLINK into a net_link. */
static int link_parse_cb(const struct nlmsghdr *h, void *data)
{
	struct net_link *l = data;
	struct ifinfomsg *ifi = mnl_nlmsg_get_payload(h);
	struct nlattr *a;

	memset(l, 0, sizeof(*l));
	l->index = ifi->ifi_index;
	l->up = ifi->ifi_flags & IFF_UP;
	mnl_attr_for_each(a, h, sizeof(*ifi)) {
		switch (mnl_attr_get_type(a)) {
		case IFLA_IFNAME:
			snprintf(l->name, sizeof(l->name), "%s", mnl_attr_get_str(a));
			break;
		case IFLA_MTU:
			l->mtu = mnl_attr_get_u32(a);
			break;
		case IFLA_MASTER:
			l->master = (int)mnl_attr_get_u32(a);
			break;
		case IFLA_ADDRESS:
			if (mnl_attr_get_payload_len(a) == 6)
				memcpy(l->mac, mnl_attr_get_payload(a), 6);
			break;
		case IFLA_LINKINFO: {
			struct nlattr *b;
			mnl_attr_for_each_nested(b, a)
				if (mnl_attr_get_type(b) == IFLA_INFO_KIND)
					snprintf(l->kind, sizeof(l->kind), "%s", mnl_attr_get_str(b));
			break;
		}
		}
	}
	return MNL_CB_OK;
}

int net_link_get(const char *name, struct net_link *out, struct vt_error *err)
{
	struct nl nl;
	int ret;

	if ((ret = net_name_check(name, err)))
		return ret;
	if (!if_nametoindex(name))
		return -ENODEV;
	if ((ret = nl_open(&nl, NETLINK_ROUTE, err)))
		return ret;
	struct nlmsghdr *h = nl_msg(&nl, RTM_GETLINK, 0);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(h, IFLA_IFNAME, name);
	ret = nl_talk(&nl, h, link_parse_cb, out);
	nl_close(&nl);
	if (ret)
		return ret == -ENODEV ? ret : vt_error_set(err, -ret, name, "query link", NULL);
	return 0;
}

struct link_vec {
	struct net_link *v;
	int n, cap;
};

static int link_list_cb(const struct nlmsghdr *h, void *data)
{
	struct link_vec *lv = data;

	if (lv->n == lv->cap) {
		int cap = lv->cap ? lv->cap * 2 : 16;
		struct net_link *v = realloc(lv->v, (size_t)cap * sizeof(*v));
		if (!v)
			return MNL_CB_ERROR;
		lv->v = v;
		lv->cap = cap;
	}
	link_parse_cb(h, &lv->v[lv->n++]);
	return MNL_CB_OK;
}

int net_link_list(struct net_link **out, int *n, struct vt_error *err)
{
	struct nl nl;
	struct link_vec lv = { 0 };
	int ret;

	if ((ret = nl_open(&nl, NETLINK_ROUTE, err)))
		return ret;
	struct nlmsghdr *h = nl_msg(&nl, RTM_GETLINK, NLM_F_DUMP);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ret = nl_talk(&nl, h, link_list_cb, &lv);
	nl_close(&nl);
	if (ret) {
		free(lv.v);
		return vt_error_set(err, -ret, "netlink", "list links", NULL);
	}
	*out = lv.v;
	*n = lv.n;
	return 0;
}

static const char *perm_hint(int e)
{
	return e == EPERM ? "Operation not permitted (needs root or CAP_NET_ADMIN)" : NULL;
}

/* One RTM_NEWLINK/DELLINK/SETLINK with what fill() adds. */
static int link_request(const char *name, const char *what, uint16_t type, uint16_t flags,
                        int index, void (*fill)(struct nlmsghdr *, const void *),
                        const void *arg, unsigned ifflags, unsigned change,
                        struct vt_error *err)
{
	struct nl nl;
	int ret;

	if ((ret = nl_open(&nl, NETLINK_ROUTE, err)))
		return ret;
	struct nlmsghdr *h = nl_msg(&nl, type, flags);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = index;
	ifi->ifi_flags = ifflags;
	ifi->ifi_change = change;
	if (fill)
		fill(h, arg);
	ret = nl_talk(&nl, h, NULL, NULL);
	nl_close(&nl);
	if (ret)
		return vt_error_set(err, -ret, name, what, perm_hint(-ret) ? "%s" : NULL,
		                    perm_hint(-ret));
	return 0;
}

static void fill_bridge(struct nlmsghdr *h, const void *arg)
{
	mnl_attr_put_strz(h, IFLA_IFNAME, arg);
	struct nlattr *info = mnl_attr_nest_start(h, IFLA_LINKINFO);
	mnl_attr_put_strz(h, IFLA_INFO_KIND, "bridge");
	mnl_attr_nest_end(h, info);
}

int net_bridge_create(const char *name, struct vt_error *err)
{
	int ret = net_name_check(name, err);

	if (ret)
		return ret;
	if (strchr(name, '%'))  /* the kernel would take it as a template ("br%d" -> br0) */
		return vt_error_set(err, EINVAL, name, "create bridge",
		                    "'%%' is not allowed (the kernel reads it as a name template)");
	if (if_nametoindex(name))
		return vt_error_set(err, EEXIST, name, "create bridge", "an interface of that name exists");
	return link_request(name, "create bridge", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0,
	                    fill_bridge, name, 0, 0, err);
}

int net_link_delete(const char *name, struct vt_error *err)
{
	int idx = index_of(name, err);

	return idx < 0 ? idx : link_request(name, "delete", RTM_DELLINK, 0, idx, NULL, NULL, 0, 0, err);
}

int net_link_set_up(const char *name, bool up, struct vt_error *err)
{
	int idx = index_of(name, err);

	return idx < 0 ? idx : link_request(name, up ? "set up" : "set down", RTM_NEWLINK, 0, idx,
	                                    NULL, NULL, up ? IFF_UP : 0, IFF_UP, err);
}

static void fill_u32(struct nlmsghdr *h, const void *arg)
{
	const uint32_t *v = arg;
	mnl_attr_put_u32(h, (uint16_t)v[0], v[1]);
}

int net_link_set_master(const char *name, const char *master, struct vt_error *err)
{
	int idx = index_of(name, err);
	if (idx < 0)
		return idx;
	int midx = 0;
	if (master) {
		struct net_link m;
		int ret = net_link_get(master, &m, err);
		if (ret == -ENODEV)
			return vt_error_set(err, ENODEV, master, "add port", "no such bridge");
		if (ret)
			return ret;
		if (strcmp(m.kind, "bridge"))
			return vt_error_set(err, EINVAL, master, "add port", "is not a bridge");
		midx = m.index;
	}
	uint32_t v[2] = { IFLA_MASTER, (uint32_t)midx };
	return link_request(name, master ? "add to bridge" : "remove from bridge", RTM_NEWLINK, 0,
	                    idx, fill_u32, v, 0, 0, err);
}

int net_link_set_mtu(const char *name, unsigned mtu, struct vt_error *err)
{
	int idx = index_of(name, err);
	uint32_t v[2] = { IFLA_MTU, mtu };

	return idx < 0 ? idx : link_request(name, "set MTU", RTM_NEWLINK, 0, idx, fill_u32, v, 0, 0, err);
}

static void fill_mac(struct nlmsghdr *h, const void *arg)
{
	mnl_attr_put(h, IFLA_ADDRESS, 6, arg);
}

int net_link_set_mac(const char *name, const uint8_t mac[6], struct vt_error *err)
{
	int idx = index_of(name, err);

	return idx < 0 ? idx : link_request(name, "set MAC address", RTM_NEWLINK, 0, idx, fill_mac,
	                                    mac, 0, 0, err);
}
