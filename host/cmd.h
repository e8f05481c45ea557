/* The command host/ gives cli/. */
#ifndef VTOOL_HOST_CMD_H
#define VTOOL_HOST_CMD_H

#include "util/command.h"

extern const struct vt_command vt_cmd_host_validate;

#endif
