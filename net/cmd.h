/* The commands net/ gives cli/. */
#ifndef VTOOL_NET_CMD_H
#define VTOOL_NET_CMD_H

#include <stdbool.h>
#include <stdint.h>

#include "net/net.h"
#include "util/command.h"

extern const struct vt_command vt_cmd_net_bridge, vt_cmd_net_tap, vt_cmd_net_addr,
	vt_cmd_net_nat, vt_cmd_net_setup, vt_cmd_net_teardown, vt_cmd_net_show;

/* Shared by the command files (cmd*.c) only. */
/* Print the error as `vtool: <thing>: <what>: <why>`; returns the exit status 1. */
int net_cmd_fail(const struct vt_error *err);
/* A user (group) name or number -> id; -2 if unknown. */
long net_cmd_user(const char *s, bool group);
/* Check an interface name argument with net_name_check (printing the error, returning
 * 1 if it fails) and copy it to dst (NET_NAME_MAX bytes) unless dst is NULL. */
int net_cmd_name(const char *s, char *dst);
/* Parse an ADDRESS/PREFIX argument; prints the error and returns 1 if it is not one. */
int net_cmd_cidr(const char *argv0, const char *s, struct net_cidr *c);
/* "52:54:00:12:34:56" into buf (18 bytes or more). */
const char *net_cmd_mac_str(const uint8_t m[6], char *buf);

#endif
