/* NAT through nftables, in vtool's own table `ip vtool`: a postrouting nat chain with one
 * masquerade rule per (subnet, uplink), optionally a forward chain accepting traffic from
 * the bridge and the return traffic (ct state established,related) to it. Each rule carries a comment naming what it is for, so vtool finds
 * and removes exactly its own rules; everything else in the ruleset is left alone. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include "net/net.h"

#define NAT_TABLE      "vtool"
#define NAT_CHAIN      "postrouting"
#define FWD_CHAIN      "forward"
#define IP_FORWARD     "/proc/sys/net/ipv4/ip_forward"

/* --- the comment that identifies a rule --------------------------------------------- */

static void nat_tag(const struct net_nat *n, const char *what, char *buf, size_t len)
{
	char cidr[64];
	struct net_cidr net = net_cidr_network(&n->subnet);

	net_cidr_format(&net, cidr, sizeof(cidr));
	snprintf(buf, len, "vtool %s net=%s out=%s br=%s fwd=%d was=%d", what, cidr, n->out,
	         n->bridge[0] ? n->bridge : "-", n->forward, n->forward_was_on);
}

static bool nat_tag_parse(const char *s, struct net_nat *n, char *what, size_t wlen)
{
	char cidr[64];
	int fwd, was;

	memset(n, 0, sizeof(*n));
	if (wlen < 16 || sscanf(s, "vtool %15s net=%63s out=%15s br=%15s fwd=%d was=%d", what, cidr,
	                        n->out, n->bridge, &fwd, &was) != 6)
		return false;
	if (!strcmp(n->bridge, "-"))
		n->bridge[0] = '\0';
	n->forward = fwd;
	n->forward_was_on = was;
	return net_cidr_parse(cidr, &n->subnet, NULL) == 0;
}

/* --- sending batches ----------------------------------------------------------------- */

struct nft {
	struct mnl_socket *sock;
	unsigned portid, seq;
	char buf[65536];
	struct mnl_nlmsg_batch *batch;
};

static int nft_open(struct nft *f, struct vt_error *err)
{
	f->sock = mnl_socket_open(NETLINK_NETFILTER);
	if (!f->sock || mnl_socket_bind(f->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		int e = errno;
		if (f->sock)
			mnl_socket_close(f->sock);
		f->sock = NULL;
		return vt_error_set(err, e, "nftables", "open netlink socket", NULL);
	}
	f->portid = mnl_socket_get_portid(f->sock);
	f->seq = (unsigned)time(NULL);
	return 0;
}

static void nft_close(struct nft *f)
{
	if (f->sock)
		mnl_socket_close(f->sock);
}

static void batch_begin(struct nft *f)
{
	f->batch = mnl_nlmsg_batch_start(f->buf, sizeof(f->buf));
	nftnl_batch_begin(mnl_nlmsg_batch_current(f->batch), f->seq++);
	mnl_nlmsg_batch_next(f->batch);
}

static struct nlmsghdr *batch_msg(struct nft *f, uint16_t type, uint16_t flags)
{
	return nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(f->batch), type, NFPROTO_IPV4,
	                             flags, f->seq++);
}

/* End the batch, send it, and wait for the last message's ACK (or the first error). */
static int batch_send(struct nft *f)
{
	nftnl_batch_end(mnl_nlmsg_batch_current(f->batch), f->seq++);
	mnl_nlmsg_batch_next(f->batch);
	if (mnl_socket_sendto(f->sock, mnl_nlmsg_batch_head(f->batch),
	                      mnl_nlmsg_batch_size(f->batch)) < 0) {
		mnl_nlmsg_batch_stop(f->batch);
		return -errno;
	}
	mnl_nlmsg_batch_stop(f->batch);
	char rbuf[8192];
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(f->sock, rbuf, sizeof(rbuf));
		if (n < 0)
			return -errno;
		int ret = mnl_cb_run(rbuf, (size_t)n, 0, f->portid, NULL, NULL);
		if (ret < 0)
			return -errno;
		if (ret == MNL_CB_STOP)
			return 0;
	}
}

/* --- expressions ----------------------------------------------------------------------- */

static void expr_add(struct nftnl_rule *r, struct nftnl_expr *e)
{
	nftnl_rule_add_expr(r, e);
}

static void match_ifname(struct nftnl_rule *r, uint32_t key, const char *name)
{
	char pad[IFNAMSIZ] = { 0 };
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
	nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
	expr_add(r, e);
	snprintf(pad, sizeof(pad), "%s", name);
	e = nftnl_expr_alloc("cmp");
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
	nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, pad, (uint32_t)strlen(pad) + 1);
	expr_add(r, e);
}

static void match_saddr(struct nftnl_rule *r, const struct net_cidr *c)
{
	struct net_cidr net = net_cidr_network(c);
	uint8_t mask[4] = { 0 }, zero[4] = { 0 };
	struct nftnl_expr *e = nftnl_expr_alloc("payload");

	for (unsigned i = 0; i < c->prefix; i++)
		mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, 12);  /* IPv4 source address */
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, 4);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
	expr_add(r, e);
	if (c->prefix < 32) {
		e = nftnl_expr_alloc("bitwise");
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, 4);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, 4);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero, 4);
		expr_add(r, e);
	}
	e = nftnl_expr_alloc("cmp");
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
	nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, net.addr, 4);
	expr_add(r, e);
}

/* ct state established,related: the return path of connections guests opened. */
static void match_ct_return(struct nftnl_rule *r)
{
	uint32_t bits = NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED),
	         zero = 0;
	struct nftnl_expr *e = nftnl_expr_alloc("ct");

	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	expr_add(r, e);
	e = nftnl_expr_alloc("bitwise");
	nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, 4);
	nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &bits, 4);
	nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, 4);
	expr_add(r, e);
	e = nftnl_expr_alloc("cmp");
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_NEQ);
	nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, &zero, 4);
	expr_add(r, e);
}

static void verdict_accept(struct nftnl_rule *r)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
	nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT);
	expr_add(r, e);
}

static struct nftnl_rule *rule_new(const char *chain, const char *comment)
{
	struct nftnl_rule *r = nftnl_rule_alloc();
	struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);

	nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_IPV4);
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, NAT_TABLE);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
	nftnl_udata_put_strz(ud, NFTNL_UDATA_RULE_COMMENT, comment);
	nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud),
	                    nftnl_udata_buf_len(ud));
	nftnl_udata_buf_free(ud);
	return r;
}

static void put_rule(struct nft *f, struct nftnl_rule *r, uint16_t flags)
{
	struct nlmsghdr *h = batch_msg(f, NFT_MSG_NEWRULE, NLM_F_APPEND | NLM_F_CREATE | flags);
	nftnl_rule_nlmsg_build_payload(h, r);
	mnl_nlmsg_batch_next(f->batch);
	nftnl_rule_free(r);
}

/* vtool's table: created (NEWTABLE with CREATE), touched (NEWTABLE, a no-op that
 * can carry the batch's ACK) or deleted. */
static void put_table(struct nft *f, uint16_t type, uint16_t flags)
{
	struct nftnl_table *t = nftnl_table_alloc();

	nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_IPV4);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, NAT_TABLE);
	struct nlmsghdr *h = batch_msg(f, type, flags);
	nftnl_table_nlmsg_build_payload(h, t);
	mnl_nlmsg_batch_next(f->batch);
	nftnl_table_free(t);
}

static void put_chain(struct nft *f, const char *name, const char *type, uint32_t hook,
                      int prio)
{
	struct nftnl_chain *c = nftnl_chain_alloc();

	nftnl_chain_set_u32(c, NFTNL_CHAIN_FAMILY, NFPROTO_IPV4);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, NAT_TABLE);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, type);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
	nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
	struct nlmsghdr *h = batch_msg(f, NFT_MSG_NEWCHAIN, NLM_F_CREATE);
	nftnl_chain_nlmsg_build_payload(h, c);
	mnl_nlmsg_batch_next(f->batch);
	nftnl_chain_free(c);
}

/* --- ip_forward ------------------------------------------------------------------------ */

static int ip_forward_get(void)
{
	char c = '0';
	int fd = open(IP_FORWARD, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (read(fd, &c, 1) != 1)
		c = '0';
	close(fd);
	return c == '1';
}

static int ip_forward_set(bool on)
{
	int fd = open(IP_FORWARD, O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	int ret = write(fd, on ? "1\n" : "0\n", 2) == 2 ? 0 : -errno;
	close(fd);
	return ret;
}

/* --- listing -------------------------------------------------------------------------- */

struct rule_entry {
	uint64_t handle;
	char chain[32];
	char comment[NFTNL_UDATA_COMMENT_MAXLEN + 1];
};

struct rule_vec {
	struct rule_entry *v;
	int n, cap;
};

static int udata_cb(const struct nftnl_udata *attr, void *data)
{
	char *comment = data;

	if (nftnl_udata_type(attr) == NFTNL_UDATA_RULE_COMMENT) {
		uint8_t len = nftnl_udata_len(attr);
		if (len > NFTNL_UDATA_COMMENT_MAXLEN)
			len = NFTNL_UDATA_COMMENT_MAXLEN;
		memcpy(comment, nftnl_udata_get(attr), len);
		comment[len] = '\0';
	}
	return 0;
}

static int rule_cb(const struct nlmsghdr *h, void *data)
{
	struct rule_vec *rv = data;
	struct nftnl_rule *r = nftnl_rule_alloc();
	struct rule_entry e = { 0 };
	uint32_t len = 0;

	if (!r || nftnl_rule_nlmsg_parse(h, r) < 0) {
		nftnl_rule_free(r);
		return MNL_CB_OK;
	}
	e.handle = nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE);
	snprintf(e.chain, sizeof(e.chain), "%s", nftnl_rule_get_str(r, NFTNL_RULE_CHAIN));
	const void *ud = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len);
	if (ud)
		nftnl_udata_parse(ud, len, udata_cb, e.comment);
	nftnl_rule_free(r);
	if (rv->n == rv->cap) {
		int cap = rv->cap ? rv->cap * 2 : 8;
		struct rule_entry *v = realloc(rv->v, (size_t)cap * sizeof(*v));
		if (!v)
			return MNL_CB_ERROR;
		rv->v = v;
		rv->cap = cap;
	}
	rv->v[rv->n++] = e;
	return MNL_CB_OK;
}

/* Send a dump request and run cb over every reply; 0 when the dump is complete. */
static int nft_dump(struct nft *f, struct nlmsghdr *h, mnl_cb_t cb, void *data)
{
	unsigned seq = h->nlmsg_seq;
	int ret;

	if (mnl_socket_sendto(f->sock, h, h->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(f->sock, f->buf, sizeof(f->buf));
		if (n < 0)
			return -errno;
		ret = mnl_cb_run(f->buf, (size_t)n, seq, f->portid, cb, data);
		if (ret <= 0)
			return ret < 0 ? -errno : 0;
	}
}

static const char *perm_hint(int e)
{
	return e == EPERM ? "Operation not permitted (needs root or CAP_NET_ADMIN)" : NULL;
}

/* vtool's rules (none when the table does not exist). */
static int rules_list(struct rule_vec *rv, struct vt_error *err)
{
	struct nft f;
	int ret;

	memset(rv, 0, sizeof(*rv));
	if ((ret = nft_open(&f, err)))
		return ret;
	struct nlmsghdr *h = nftnl_nlmsg_build_hdr(f.buf, NFT_MSG_GETRULE, NFPROTO_IPV4,
	                                           NLM_F_DUMP, f.seq++);
	struct nftnl_rule *r = nftnl_rule_alloc();
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, NAT_TABLE);
	nftnl_rule_nlmsg_build_payload(h, r);
	nftnl_rule_free(r);
	ret = nft_dump(&f, h, rule_cb, rv);
	nft_close(&f);
	if (ret == -ENOENT)
		ret = 0; /* no table: no rules */
	if (ret) {
		free(rv->v);
		rv->v = NULL;
		rv->n = 0;
		return vt_error_set(err, -ret, "nftables", "list vtool's rules",
		                    perm_hint(-ret) ? "%s" : NULL, perm_hint(-ret));
	}
	return 0;
}

static bool same_nat(const struct net_nat *a, const struct net_nat *b)
{
	struct net_cidr x = net_cidr_network(&a->subnet), y = net_cidr_network(&b->subnet);

	return x.prefix == y.prefix && !memcmp(x.addr, y.addr, 4) && !strcmp(a->out, b->out);
}

int net_nat_list(struct net_nat **out, int *n, struct vt_error *err)
{
	struct rule_vec rv;
	int ret = rules_list(&rv, err);

	if (ret)
		return ret;
	*out = calloc((size_t)rv.n + 1, sizeof(**out));
	*n = 0;
	for (int i = 0; *out && i < rv.n; i++) {
		char what[16];
		struct net_nat nat;
		if (nat_tag_parse(rv.v[i].comment, &nat, what, sizeof(what)) && !strcmp(what, "nat"))
			(*out)[(*n)++] = nat;
	}
	free(rv.v);
	return *out ? 0 : vt_error_set(err, ENOMEM, "nftables", "list", NULL);
}

bool net_nat_present(const struct net_nat *nat, struct vt_error *err)
{
	struct net_nat *v;
	int n;
	bool found = false;

	if (net_nat_list(&v, &n, err))
		return false;
	for (int i = 0; i < n; i++)
		found |= same_nat(&v[i], nat);
	free(v);
	return found;
}

/* --- add and delete ---------------------------------------------------------------------- */

int net_nat_add(const struct net_nat *req, struct vt_error *err)
{
	struct net_nat nat = *req;
	char tag[256];
	struct nft f;
	int ret;

	if (nat.subnet.family != AF_INET)
		return vt_error_set(err, EAFNOSUPPORT, nat.out, "add NAT", "only IPv4 subnets are masqueraded");
	if ((ret = net_name_check(nat.out, err)) ||
	    (nat.bridge[0] && (ret = net_name_check(nat.bridge, err))))
		return ret;
	if (!if_nametoindex(nat.out))
		return vt_error_set(err, ENODEV, nat.out, "add NAT", "no such interface");
	if (!nat.bridge[0])
		snprintf(nat.bridge, sizeof(nat.bridge), "-");
	int fwd = ip_forward_get();
	if (fwd < 0)
		return vt_error_set(err, -fwd, IP_FORWARD, "read", NULL);
	nat.forward_was_on = fwd;
	if ((ret = nft_open(&f, err)))
		return ret;
	batch_begin(&f);
	put_table(&f, NFT_MSG_NEWTABLE, NLM_F_CREATE);
	put_chain(&f, NAT_CHAIN, "nat", NF_INET_POST_ROUTING, 100);
	if (nat.forward)
		put_chain(&f, FWD_CHAIN, "filter", NF_INET_FORWARD, 0);
	nat_tag(&nat, "nat", tag, sizeof(tag));
	struct nftnl_rule *r = rule_new(NAT_CHAIN, tag);
	match_saddr(r, &nat.subnet);
	match_ifname(r, NFT_META_OIFNAME, nat.out);
	expr_add(r, nftnl_expr_alloc("masq"));
	put_rule(&f, r, nat.forward ? 0 : NLM_F_ACK);
	if (nat.forward) {
		const char *br = strcmp(nat.bridge, "-") ? nat.bridge : NULL;
		nat_tag(&nat, "fwd-in", tag, sizeof(tag));
		r = rule_new(FWD_CHAIN, tag);
		if (br)
			match_ifname(r, NFT_META_IIFNAME, br);
		else
			match_saddr(r, &nat.subnet);
		verdict_accept(r);
		put_rule(&f, r, 0);
		nat_tag(&nat, "fwd-out", tag, sizeof(tag));
		r = rule_new(FWD_CHAIN, tag);
		if (br)
			match_ifname(r, NFT_META_OIFNAME, br);
		else
			match_ifname(r, NFT_META_IIFNAME, nat.out);
		match_ct_return(r);
		verdict_accept(r);
		put_rule(&f, r, NLM_F_ACK);
	}
	ret = batch_send(&f);
	nft_close(&f);
	if (ret)
		return vt_error_set(err, -ret, "nftables", "add NAT rule",
		                    -ret == EPERM ? "Operation not permitted (needs root or "
		                                    "CAP_NET_ADMIN)" : NULL);
	if (!fwd && (ret = ip_forward_set(true))) {
		struct vt_error ignored;
		net_nat_del(&nat, &ignored);
		return vt_error_set(err, -ret, IP_FORWARD, "turn on forwarding", NULL);
	}
	return 0;
}

int net_nat_del(const struct net_nat *req, struct vt_error *err)
{
	struct rule_vec rv;
	struct nft f;
	int ret, ours = 0, remaining = 0, deleted = 0;
	bool restore_forward = false;

	if ((ret = rules_list(&rv, err)))
		return ret;
	if ((ret = nft_open(&f, err))) {
		free(rv.v);
		return ret;
	}
	batch_begin(&f);
	for (int i = 0; i < rv.n; i++) {
		struct net_nat nat;
		char what[16];
		if (!nat_tag_parse(rv.v[i].comment, &nat, what, sizeof(what)))
			continue;
		ours++;
		if (!same_nat(&nat, req)) {
			remaining++;
			continue;
		}
		if (!strcmp(what, "nat") && !nat.forward_was_on)
			restore_forward = true;
		struct nftnl_rule *r = nftnl_rule_alloc();
		nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_IPV4);
		nftnl_rule_set_str(r, NFTNL_RULE_TABLE, NAT_TABLE);
		nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, rv.v[i].chain);
		nftnl_rule_set_u64(r, NFTNL_RULE_HANDLE, rv.v[i].handle);
		struct nlmsghdr *h = batch_msg(&f, NFT_MSG_DELRULE, 0);
		nftnl_rule_nlmsg_build_payload(h, r);
		mnl_nlmsg_batch_next(f.batch);
		nftnl_rule_free(r);
		deleted++;
	}
	free(rv.v);
	if (!deleted) {
		mnl_nlmsg_batch_stop(f.batch);
		nft_close(&f);
		return vt_error_set(err, ENOENT, req->out, "delete NAT", "vtool has no such NAT rule");
	}
	/* The table was made by vtool for its rules alone: when they are all gone, so is it.
	 * Otherwise a no-op table update closes the batch with an ACK to wait for. */
	if (!remaining && ours == rv.n)
		put_table(&f, NFT_MSG_DELTABLE, NLM_F_ACK);
	else
		put_table(&f, NFT_MSG_NEWTABLE, NLM_F_ACK);
	ret = batch_send(&f);
	nft_close(&f);
	if (ret)
		return vt_error_set(err, -ret, "nftables", "delete NAT rule", NULL);
	if (restore_forward && !remaining)
		ip_forward_set(false);
	return 0;
}

/* --- other tables' forward hooks ------------------------------------------------------ */

struct chain_entry {
	int family;
	char table[NFT_TABLE_MAXNAMELEN];
	char name[NFT_CHAIN_MAXNAMELEN];
	bool forward_drop;
};

struct chain_vec {
	struct chain_entry *v;
	int n, cap;
};

static int chain_cb(const struct nlmsghdr *h, void *data)
{
	struct chain_vec *cv = data;
	struct nftnl_chain *c = nftnl_chain_alloc();
	struct chain_entry e = { 0 };

	if (!c || nftnl_chain_nlmsg_parse(h, c) < 0) {
		nftnl_chain_free(c);
		return MNL_CB_OK;
	}
	e.family = (int)nftnl_chain_get_u32(c, NFTNL_CHAIN_FAMILY);
	snprintf(e.table, sizeof(e.table), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE));
	snprintf(e.name, sizeof(e.name), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
	e.forward_drop = nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM) &&
	                 nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM) == NF_INET_FORWARD &&
	                 nftnl_chain_is_set(c, NFTNL_CHAIN_POLICY) &&
	                 nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY) == NF_DROP;
	nftnl_chain_free(c);
	if (cv->n == cv->cap) {
		int cap = cv->cap ? cv->cap * 2 : 16;
		struct chain_entry *v = realloc(cv->v, (size_t)cap * sizeof(*v));
		if (!v)
			return MNL_CB_ERROR;
		cv->v = v;
		cv->cap = cap;
	}
	cv->v[cv->n++] = e;
	return MNL_CB_OK;
}

int net_forward_drops(struct net_fwdrop **out, int *n, struct vt_error *err)
{
	struct chain_vec cv = { 0 };
	struct nft f;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = nft_open(&f, err)))
		return ret;
	struct nlmsghdr *h = nftnl_nlmsg_build_hdr(f.buf, NFT_MSG_GETCHAIN, NFPROTO_UNSPEC,
	                                           NLM_F_DUMP, f.seq++);
	ret = nft_dump(&f, h, chain_cb, &cv);
	nft_close(&f);
	if (ret) {
		free(cv.v);
		return vt_error_set(err, -ret, "nftables", "list chains",
		                    perm_hint(-ret) ? "%s" : NULL, perm_hint(-ret));
	}
	struct net_fwdrop *v = calloc((size_t)cv.n + 1, sizeof(*v));
	if (!v) {
		free(cv.v);
		return vt_error_set(err, ENOMEM, "nftables", "list chains", NULL);
	}
	for (int i = 0; i < cv.n; i++) {
		const struct chain_entry *c = &cv.v[i];
		/* ip and inet hooks see routed IPv4; vtool's own chains always accept */
		if (!c->forward_drop || (c->family != NFPROTO_IPV4 && c->family != NFPROTO_INET) ||
		    (c->family == NFPROTO_IPV4 && !strcmp(c->table, NAT_TABLE)))
			continue;
		struct net_fwdrop *d = &v[(*n)++];
		snprintf(d->family, sizeof(d->family), "%s", c->family == NFPROTO_INET ? "inet" : "ip");
		snprintf(d->table, sizeof(d->table), "%s", c->table);
		snprintf(d->chain, sizeof(d->chain), "%s", c->name);
		for (int k = 0; k < cv.n; k++)
			if (cv.v[k].family == c->family && !strcmp(cv.v[k].table, c->table) &&
			    !strcmp(cv.v[k].name, "DOCKER-USER"))
				d->docker_user = c->family == NFPROTO_IPV4;
	}
	free(cv.v);
	*out = v;
	return 0;
}

void net_forward_drop_advice(const struct net_fwdrop *d, const char *bridge, char *buf,
                             size_t len)
{
	const char *br = bridge && bridge[0] ? bridge : "BRIDGE";

	if (d->docker_user)
		snprintf(buf, len, "table %s %s, chain %s: forward hook with policy drop (Docker's): "
		         "guests' forwarded traffic is dropped there, whatever vtool accepts; let "
		         "%s through in DOCKER-USER: iptables -I DOCKER-USER -i %s -j ACCEPT && "
		         "iptables -I DOCKER-USER -o %s -m conntrack --ctstate RELATED,ESTABLISHED "
		         "-j ACCEPT", d->family, d->table, d->chain, br, br, br);
	else
		snprintf(buf, len, "table %s %s, chain %s: forward hook with policy drop: guests' "
		         "forwarded traffic is dropped there, whatever vtool accepts; let %s "
		         "through in that chain: nft insert rule %s %s %s iifname \"%s\" accept && "
		         "nft insert rule %s %s %s oifname \"%s\" ct state established,related accept",
		         d->family, d->table, d->chain, br, d->family, d->table, d->chain, br,
		         d->family, d->table, d->chain, br);
}
