/* The commands net/ gives cli/. */
#ifndef VTOOL_NET_CMD_H
#define VTOOL_NET_CMD_H

#include "util/command.h"

extern const struct vt_command vt_cmd_net_bridge, vt_cmd_net_tap, vt_cmd_net_addr,
	vt_cmd_net_nat, vt_cmd_net_setup, vt_cmd_net_teardown, vt_cmd_net_show;

#endif
