/* The commands vmm/ gives cli/. */
#ifndef VTOOL_VMM_VMM_H
#define VTOOL_VMM_VMM_H

#include "util/command.h"

extern const struct vt_command vt_cmd_run;

#endif
