/* rtnetlink request/ack and dumps. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "net/nl.h"

int nl_open(struct nl *nl, int bus, struct vt_error *err)
{
	nl->sock = mnl_socket_open(bus);
	if (!nl->sock)
		return vt_error_set(err, errno, "netlink", "open socket", NULL);
	if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		int e = errno;
		mnl_socket_close(nl->sock);
		nl->sock = NULL;
		return vt_error_set(err, e, "netlink", "bind socket", NULL);
	}
	nl->portid = mnl_socket_get_portid(nl->sock);
	nl->seq = (unsigned)time(NULL);
	return 0;
}

void nl_close(struct nl *nl)
{
	if (nl->sock)
		mnl_socket_close(nl->sock);
	nl->sock = NULL;
}

struct nlmsghdr *nl_msg(struct nl *nl, uint16_t type, uint16_t flags)
{
	struct nlmsghdr *h = mnl_nlmsg_put_header(nl->buf);

	h->nlmsg_type = type;
	h->nlmsg_flags = NLM_F_REQUEST | flags;
	h->nlmsg_seq = ++nl->seq;
	return h;
}

int nl_talk(struct nl *nl, struct nlmsghdr *msg, mnl_cb_t cb, void *data)
{
	unsigned seq = msg->nlmsg_seq;

	/* NLM_F_DUMP shares bits with NLM_F_EXCL/CREATE: test both of its bits. A dump ends
	 * with NLMSG_DONE; anything else asks for an ACK to know when it is over. */
	if ((msg->nlmsg_flags & NLM_F_DUMP) != NLM_F_DUMP || msg->nlmsg_type % 4 != 2)
		msg->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(nl->sock, msg, msg->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl->sock, nl->buf, sizeof(nl->buf));
		if (n < 0)
			return -errno;
		int ret = mnl_cb_run(nl->buf, (size_t)n, seq, nl->portid, cb, data);
		if (ret < 0)
			return -errno;
		if (ret == MNL_CB_STOP)
			return 0;
	}
}
