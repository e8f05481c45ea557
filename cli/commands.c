#include <stddef.h>

#include "cli/commands.h"

/* Each layer's commands, declared where they are defined. */

const struct vt_command *const vt_commands[] = {
	NULL,
};
