/* Host resources that outlive one boot of the machine.
 *
 * vtool run builds a fresh machine when the guest resets (or a monitor asks for
 * system_reset). What a machine opens on the host (/dev/kvm, disk images, taps, output
 * files, firmware, kernel and ROM files) is opened by the first boot and kept here for
 * the life of the process; later boots get the same things back. By then -chroot,
 * -runas and the sandbox are in force and nothing can be opened any more; and a kept
 * image or tap behaves as qemu's do across a reset (a -snapshot overlay keeps its
 * writes, a tap keeps its queue). The first boot runs on one thread (vm_create's), so
 * the table needs no lock; it is released once, at exit. */
#ifndef VTOOL_VMM_KEEP_H
#define VTOOL_VMM_KEEP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/error.h"

/* A new descriptor (the caller closes it) for path, opened with flags/mode the first
 * time and duplicated from the kept one afterwards. */
int keep_open(const char *path, int flags, mode_t mode, struct vt_error *err);

/* path's contents, read the first time (a failure is remembered too: err says the same
 * each time). The bytes stay owned by the table. */
int keep_read(const char *path, const uint8_t **data, size_t *size, struct vt_error *err);

/* An object kept under key (printf-style), or NULL. */
void *keep_get(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Keep obj under key; release(obj) runs at keep_release_all(). On failure (no memory)
 * obj is released at once and -ENOMEM returned. */
int keep_put(void *obj, void (*release)(void *obj), const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Release everything, newest first (vtool run's exit). */
void keep_release_all(void);

#endif
