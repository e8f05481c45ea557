/* The table of every command vtool has. Adding a command: define a
 * `const struct vt_command vt_cmd_<group>_<name>` next to its code and list it in
 * cli/commands.c; --help picks it up from there. */
#ifndef VTOOL_CLI_COMMANDS_H
#define VTOOL_CLI_COMMANDS_H

#include "util/command.h"

/* NULL-terminated, in the order --help lists them. */
extern const struct vt_command *const vt_commands[];

#endif
