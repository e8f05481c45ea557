#include <stddef.h>

#include "cli/commands.h"

/* Each layer's commands, declared where they are defined. */
#include "host/cmd.h"
#include "img/img.h"
#include "net/cmd.h"
#include "vmm/vmm.h"

const struct vt_command *const vt_commands[] = {
	&vt_cmd_img_create,
	&vt_cmd_img_info,
	&vt_cmd_img_convert,
	&vt_cmd_img_compare,
	&vt_cmd_img_map,
	&vt_cmd_img_measure,
	&vt_cmd_img_check,
	&vt_cmd_img_rebase,
	&vt_cmd_img_commit,
	&vt_cmd_img_amend,
	&vt_cmd_img_dd,
	&vt_cmd_img_bitmap,
	&vt_cmd_img_snapshot,
	&vt_cmd_img_resize,
	&vt_cmd_img_bench,
	&vt_cmd_img_serve,
	&vt_cmd_net_setup,
	&vt_cmd_net_teardown,
	&vt_cmd_net_show,
	&vt_cmd_net_bridge,
	&vt_cmd_net_tap,
	&vt_cmd_net_addr,
	&vt_cmd_net_nat,
	&vt_cmd_run,
	&vt_cmd_host_validate,
	NULL,
};
