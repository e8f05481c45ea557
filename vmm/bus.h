/* One dispatcher for port I/O and MMIO exits.
 *
 * Devices register [base, base+len) ranges with a handler; the vCPU loop hands every
 * access to bus_access() and never knows device types. Registration may change while
 * vCPUs run (a guest moving a PCI BAR), so lookups take a read lock and changes a write
 * lock. Accesses nobody claims read as all-ones and are otherwise ignored, like an
 * unclaimed ISA/PCI cycle on real hardware. */
#ifndef VTOOL_VMM_BUS_H
#define VTOOL_VMM_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

/* offset is relative to the range's base; data holds len (1, 2, 4 or 8) bytes,
 * little-endian. Reads fill data; writes consume it. */
typedef void bus_io_fn(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                       bool is_write);

struct bus_range {
	uint64_t base, len;
	bus_io_fn *fn;
	void *opaque;
};

struct bus {
	const char *name;                /* "I/O port", "MMIO" for messages */
	pthread_rwlock_t lock;
	struct bus_range *ranges;        /* sorted by base, non-overlapping */
	int nr, cap;
};

void bus_init(struct bus *bus, const char *name);
void bus_destroy(struct bus *bus);

/* Fails with -EBUSY when the range overlaps one already registered. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, bus_io_fn *fn, void *opaque,
                 struct vt_error *err) __attribute__((warn_unused_result));
/* Removes the range registered at exactly base; -ENOENT if there is none. */
int bus_unregister(struct bus *bus, uint64_t base);

/* Dispatch one access. Returns false when no device claims addr. */
bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, unsigned len, bool is_write);

#endif
