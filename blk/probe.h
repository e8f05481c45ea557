/* Image format detection by content, the one place that knows every format's magic.
 * For blk/ (blk.c probes on open) and tests. */
#ifndef VTOOL_BLK_PROBE_H
#define VTOOL_BLK_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "blk/file.h"

/* qemu looks at the first 2 KiB too (a VMDK descriptor may start with comments). */
#define BLK_PROBE_BYTES 2048

/* The format whose magic the first len bytes carry: a driver name ("qcow2", "vdi"...),
 * a format vtool only recognises ("luks", "qcow", ...), or "raw" when none matches. */
const char *blk_probe_buffer(const uint8_t *buf, size_t len);
/* Probe an open file (also looks at its last sector for trailers). */
int blk_probe(struct blk_file *f, const char **format, struct vt_error *err);
/* A format's name as users know it ("VirtualBox VDI"), for messages. */
const char *blk_probe_describe(const char *format);

#endif
