/* Host networking for VMs, without shelling out: links and bridges over rtnetlink
 * (libmnl), IPv4/IPv6 addresses, persistent taps through /dev/net/tun, and NAT through
 * nftables (libnftnl) in vtool's own table, so rules of anyone else are never touched.
 *
 * Used by the `vtool net` commands (cmd.c) and by `vtool run` to open a tap. Functions
 * return 0 or a negative errno and fill a struct vt_error naming the interface. */
#ifndef VTOOL_NET_NET_H
#define VTOOL_NET_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

#define NET_NAME_MAX 16

/* --- links (link.c) ----------------------------------------------------------------- */

struct net_link {
	int index;
	char name[NET_NAME_MAX];
	char kind[16];          /* "bridge", "tun", "veth", "" for plain devices */
	int master;             /* ifindex of the bridge it is a port of, 0 if none */
	bool up;
	unsigned mtu;
	uint8_t mac[6];
};

/* The one rule for interface names, as the kernel and `ip` apply it: 1 to 15 bytes, no
 * '/', no whitespace, not "." or "..". Every name a `vtool net` command is given, and
 * every name the functions below are called with, goes through it (-EINVAL). */
int net_name_check(const char *name, struct vt_error *err);
/* Fill *out for name; -ENODEV if there is no such interface. */
int net_link_get(const char *name, struct net_link *out, struct vt_error *err);
/* All links; *out is malloc'd. */
int net_link_list(struct net_link **out, int *n, struct vt_error *err);
int net_bridge_create(const char *name, struct vt_error *err);
int net_link_delete(const char *name, struct vt_error *err);
int net_link_set_up(const char *name, bool up, struct vt_error *err);
int net_link_set_master(const char *name, const char *master, struct vt_error *err);
int net_link_set_mtu(const char *name, unsigned mtu, struct vt_error *err);
int net_link_set_mac(const char *name, const uint8_t mac[6], struct vt_error *err);

/* "52:54:00:12:34:56" -> 6 bytes; -EINVAL if it is not that. */
int net_mac_parse(const char *s, uint8_t mac[6]);

/* --- addresses (addr.c) -------------------------------------------------------------- */

struct net_cidr {
	int family;             /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

/* "192.168.57.1/24", "fd00::1/64". The prefix length is required: a bare address is
 * -EINVAL (saying so), never silently a /32. */
int net_cidr_parse(const char *s, struct net_cidr *out, struct vt_error *err);
/* IPv4: how many host addresses of subnet (network and broadcast excluded below /31)
 * are left for others once the n_own addresses in own are counted out; 0 means no
 * guest can be in it. UINT64_MAX for IPv6. */
uint64_t net_cidr_room(const struct net_cidr *subnet, const struct net_cidr *own, int n_own);
void net_cidr_format(const struct net_cidr *c, char *buf, size_t len);
/* The network part: host bits cleared. */
struct net_cidr net_cidr_network(const struct net_cidr *c);

struct net_addr {
	int index;
	struct net_cidr cidr;
};
int net_addr_list(struct net_addr **out, int *n, struct vt_error *err);
bool net_addr_present(const char *ifname, const struct net_cidr *c, struct vt_error *err);
int net_addr_add(const char *ifname, const struct net_cidr *c, struct vt_error *err);
int net_addr_del(const char *ifname, const struct net_cidr *c, struct vt_error *err);

/* --- taps (tap.c) --------------------------------------------------------------------- */

#define NET_TAP_MULTI_QUEUE 1u
#define NET_TAP_VNET_HDR    2u

/* A persistent tap (survives this process), optionally usable by a user/group. A NULL
 * or empty name takes the first free tapN. The name made goes to made (NET_NAME_MAX
 * bytes) unless it is NULL. */
int net_tap_create(const char *name, unsigned flags, long owner, long group,
                   char *made, struct vt_error *err);
int net_tap_delete(const char *name, struct vt_error *err);
bool net_link_is_tap(const char *name);
/* Open a tap for a VM's NIC (attaching to a persistent one, or creating a transient
 * one). *vnet_hdr says whether the fd carries virtio-net headers. */
int net_tap_open(const char *name, unsigned flags, int *fd, bool *vnet_hdr,
                 struct vt_error *err);

/* --- NAT (nat.c) ---------------------------------------------------------------------- */

struct net_nat {
	struct net_cidr subnet;     /* masqueraded source network */
	char out[NET_NAME_MAX];     /* uplink interface */
	char bridge[NET_NAME_MAX];  /* with forward: accept forwarding from/to it */
	bool forward;
	bool forward_was_on;        /* ip_forward before vtool turned it on */
};

/* Masquerade subnet out of `out` in table ip vtool; turns ip_forward on. */
int net_nat_add(const struct net_nat *nat, struct vt_error *err);
/* Remove exactly that rule (and the table when it is empty); restore ip_forward. */
int net_nat_del(const struct net_nat *nat, struct vt_error *err);
/* vtool's NAT entries currently installed; *out malloc'd. */
int net_nat_list(struct net_nat **out, int *n, struct vt_error *err);
bool net_nat_present(const struct net_nat *nat, struct vt_error *err);

/* A base chain of another table on the IPv4 forward hook (family ip or inet) whose policy
 * is drop, such as Docker's: in nftables every base chain on a hook must accept a packet,
 * so vtool's own accept rules cannot let guests through it. */
struct net_fwdrop {
	char family[8];         /* "ip" or "inet" */
	char table[256];
	char chain[256];
	bool docker_user;       /* the table has Docker's DOCKER-USER chain for such rules */
};
/* Such chains; *out malloc'd (needs CAP_NET_ADMIN, as every nftables read). */
int net_forward_drops(struct net_fwdrop **out, int *n, struct vt_error *err);
/* One line: which table and chain, and the commands that let bridge's traffic through. */
void net_forward_drop_advice(const struct net_fwdrop *d, const char *bridge, char *buf,
                             size_t len);

#endif
