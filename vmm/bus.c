/* Sorted range table behind the port-I/O and MMIO buses. Binary search under a read
 * lock: vCPU threads dispatch concurrently; only BAR moves take the write lock. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/bus.h"

void bus_init(struct bus *bus, const char *name)
{
	*bus = (struct bus){ .name = name };
	pthread_rwlock_init(&bus->lock, NULL);
}

void bus_destroy(struct bus *bus)
{
	free(bus->ranges);
	pthread_rwlock_destroy(&bus->lock);
	bus->ranges = NULL;
	bus->nr = bus->cap = 0;
}

/* Index of the first range whose end is above addr. */
static int bus_lower_bound(const struct bus *bus, uint64_t addr)
{
	int lo = 0, hi = bus->nr;

	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &bus->ranges[mid];
		if (r->base + r->len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, bus_io_fn *fn, void *opaque,
                 struct vt_error *err)
{
	int ret = 0;

	if (len == 0 || base + len < base)
		return vt_error_set(err, EINVAL, bus->name, "register range", "bad range 0x%llx+0x%llx",
		                    (unsigned long long)base, (unsigned long long)len);
	pthread_rwlock_wrlock(&bus->lock);
	int i = bus_lower_bound(bus, base);
	if (i < bus->nr && bus->ranges[i].base < base + len) {
		ret = vt_error_set(err, EBUSY, bus->name, "register range",
		                   "0x%llx+0x%llx overlaps 0x%llx+0x%llx",
		                   (unsigned long long)base, (unsigned long long)len,
		                   (unsigned long long)bus->ranges[i].base,
		                   (unsigned long long)bus->ranges[i].len);
		goto out;
	}
	if (bus->nr == bus->cap) {
		int cap = bus->cap ? bus->cap * 2 : 16;
		struct bus_range *r = realloc(bus->ranges, (size_t)cap * sizeof(*r));
		if (!r) {
			ret = vt_error_set(err, ENOMEM, bus->name, "register range", NULL);
			goto out;
		}
		bus->ranges = r;
		bus->cap = cap;
	}
	memmove(&bus->ranges[i + 1], &bus->ranges[i], (size_t)(bus->nr - i) * sizeof(bus->ranges[0]));
	bus->ranges[i] = (struct bus_range){ base, len, fn, opaque };
	bus->nr++;
out:
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

int bus_unregister(struct bus *bus, uint64_t base)
{
	int ret = -ENOENT;

	pthread_rwlock_wrlock(&bus->lock);
	int i = bus_lower_bound(bus, base);
	if (i < bus->nr && bus->ranges[i].base == base) {
		memmove(&bus->ranges[i], &bus->ranges[i + 1],
		        (size_t)(bus->nr - i - 1) * sizeof(bus->ranges[0]));
		bus->nr--;
		ret = 0;
	}
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, unsigned len, bool is_write)
{
	struct bus_range r = { 0 };

	/* Copy the entry and call the handler unlocked: a handler may itself move ranges (a
	 * PCI config write relocating an I/O BAR). Devices outlive their registrations. */
	pthread_rwlock_rdlock(&bus->lock);
	int i = bus_lower_bound(bus, addr);
	if (i < bus->nr && bus->ranges[i].base <= addr)
		r = bus->ranges[i];
	pthread_rwlock_unlock(&bus->lock);
	if (!r.fn) {
		if (!is_write)
			memset(data, 0xff, len);
		return false;
	}
	/* An access straddling the range's end is cut to what the device owns. */
	unsigned n = len;
	if (addr + n > r.base + r.len)
		n = (unsigned)(r.base + r.len - addr);
	if (n < len && !is_write)
		memset(data + n, 0xff, len - n);
	r.fn(r.opaque, addr - r.base, data, n, is_write);
	return true;
}
