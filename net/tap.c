/* Taps through /dev/net/tun: persistent ones for `vtool net tap`, and opening one for a
 * VM's NIC. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "net/net.h"

/* Attach to (or create) the tap `name`; a name with "%d" lets the kernel pick the first
 * free number. The name the kernel used goes to got (NET_NAME_MAX bytes) if not NULL. */
static int tun_open_as(const char *name, unsigned flags, struct vt_error *err,
                       const char *what, char *got)
{
	struct ifreq ifr = { 0 };
	int ret = net_name_check(name, err);

	if (ret)
		return ret;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return vt_error_set(err, errno, "/dev/net/tun", "open", NULL);
	ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI);
	if (flags & NET_TAP_MULTI_QUEUE)
		ifr.ifr_flags |= IFF_MULTI_QUEUE;
	if (flags & NET_TAP_VNET_HDR)
		ifr.ifr_flags |= IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		close(fd);
		return vt_error_set(err, e, name, what,
		                    e == EPERM ? "Operation not permitted (needs root or "
		                                 "CAP_NET_ADMIN, or a tap owned by this user)"
		                    : e == EINVAL || e == EBUSY ? "the name is taken by an interface "
		                                                  "that is not a tap of this kind"
		                    : NULL);
	}
	if (got)
		snprintf(got, NET_NAME_MAX, "%s", ifr.ifr_name);
	return fd;
}

static int tun_open(const char *name, unsigned flags, struct vt_error *err, const char *what)
{
	return tun_open_as(name, flags, err, what, NULL);
}

bool net_link_is_tap(const char *name)
{
	char path[96], buf[32];

	if (net_name_check(name, NULL))
		return false;
	snprintf(path, sizeof(path), "/sys/class/net/%s/tun_flags", name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return (strtoul(buf, NULL, 0) & IFF_TAP) != 0;
}

int net_tap_create(const char *name, unsigned flags, long owner, long group,
                   char *made, struct vt_error *err)
{
	struct net_link l;
	char got[NET_NAME_MAX];

	if (!name || !name[0]) {
		name = "tap%d"; /* the kernel takes the lowest free number, as tunctl -b */
	} else {
		int ret = net_name_check(name, err);
		if (ret)
			return ret;
		if (strchr(name, '%'))
			return vt_error_set(err, EINVAL, name, "create tap",
			                    "'%%' is not allowed (the kernel reads it as a name "
			                    "template; give no name to get the first free tapN)");
		if (net_link_get(name, &l, NULL) == 0)
			return vt_error_set(err, EEXIST, name, "create tap",
			                    "an interface of that name exists");
	}
	int fd = tun_open_as(name, flags, err, "create tap", got);
	if (fd < 0)
		return fd;
	name = got;
	if (made)
		snprintf(made, NET_NAME_MAX, "%s", got);
	int ret = 0;
	if (owner >= 0 && ioctl(fd, TUNSETOWNER, owner) < 0)
		ret = vt_error_set(err, errno, name, "set tap owner", NULL);
	if (!ret && group >= 0 && ioctl(fd, TUNSETGROUP, group) < 0)
		ret = vt_error_set(err, errno, name, "set tap group", NULL);
	if (!ret && ioctl(fd, TUNSETPERSIST, 1) < 0)
		ret = vt_error_set(err, errno, name, "make tap persistent", NULL);
	close(fd);
	return ret;
}

int net_tap_delete(const char *name, struct vt_error *err)
{
	if (!net_link_is_tap(name))
		return vt_error_set(err, ENODEV, name, "delete tap", "no such tap");
	/* Attach with the flags it was made with, then drop persistence: it vanishes. */
	char path[96], buf[32] = "0";
	snprintf(path, sizeof(path), "/sys/class/net/%s/tun_flags", name);
	int sfd = open(path, O_RDONLY | O_CLOEXEC);
	if (sfd >= 0) {
		ssize_t n = read(sfd, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		close(sfd);
	}
	unsigned long tf = strtoul(buf, NULL, 0);
	unsigned flags = (tf & IFF_MULTI_QUEUE ? NET_TAP_MULTI_QUEUE : 0) |
	                 (tf & IFF_VNET_HDR ? NET_TAP_VNET_HDR : 0);
	int fd = tun_open(name, flags, err, "delete tap");
	if (fd < 0)
		return fd;
	int ret = ioctl(fd, TUNSETPERSIST, 0) < 0 ? vt_error_set(err, errno, name, "delete tap", NULL) : 0;
	close(fd);
	return ret;
}

int net_tap_open(const char *name, unsigned flags, int *fd, bool *vnet_hdr,
                 struct vt_error *err)
{
	int f = tun_open(name, flags | NET_TAP_VNET_HDR, NULL, "open tap");

	*vnet_hdr = true;
	if (f < 0) {
		/* A persistent tap made without vnet headers only attaches without them. */
		f = tun_open(name, flags & ~NET_TAP_VNET_HDR, err, "open tap");
		*vnet_hdr = false;
		if (f < 0)
			return f;
	}
	if (*vnet_hdr) {
		int sz = 12; /* struct virtio_net_hdr_mrg_rxbuf */
		if (ioctl(f, TUNSETVNETHDRSZ, &sz) < 0)
			*vnet_hdr = false;
	}
	int fl = fcntl(f, F_GETFL);
	fcntl(f, F_SETFL, fl | O_NONBLOCK);
	*fd = f;
	return 0;
}
