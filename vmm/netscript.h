/* qemu's tap scripts: -net tap,script=FILE runs FILE with the tap's name once the tap is
 * open (qemu's default /etc/qemu-ifup), downscript=FILE runs at exit (default
 * /etc/qemu-ifdown); "no" runs nothing. The downscripts run from a small helper process
 * forked before the sandbox and -runas take hold (the sandboxed VMM may start no
 * programs): it waits for vtool to end, however it ends, then runs them. */
#ifndef VTOOL_VMM_NETSCRIPT_H
#define VTOOL_VMM_NETSCRIPT_H

#include "util/error.h"
#include "vmm/config.h"

/* Run every NIC's script and start the downscript helper. */
int netscript_up(const struct vm_config *cfg, struct vt_error *err);

#endif
