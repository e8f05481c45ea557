/* Small system ports: 0x80 (POST codes and I/O delay: ignored), 0x92 (system control
 * port A: fast A20, bit 0 resets the machine) and the APM control/status pair 0xb2/0xb3.
 * There is no SMM: a write to 0xb2 raises no SMI, the ports only keep what was written
 * (firmware only uses them with a PIIX4 power-management function, which this machine
 * does not have). */
#include <errno.h>
#include <stdlib.h>

#include "vmm/hw/devices.h"
#include "vmm/vm.h"

struct sysctl {
	struct vm *vm;
	uint8_t port92;
	uint8_t apm[2];
};

static void apm_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write)
{
	struct sysctl *s = opaque;

	for (unsigned i = 0; i < len; i++) {
		unsigned r = (unsigned)(offset + i);
		if (r >= 2) {
			if (!is_write)
				data[i] = 0xff;
		} else if (is_write) {
			__atomic_store_n(&s->apm[r], data[i], __ATOMIC_RELAXED);
		} else {
			data[i] = __atomic_load_n(&s->apm[r], __ATOMIC_RELAXED);
		}
	}
}

static void port80_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                      bool is_write)
{
	for (unsigned i = 0; i < len && !is_write; i++)
		data[i] = 0xff;
}

static void port92_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                      bool is_write)
{
	struct sysctl *s = opaque;

	if (!is_write) {
		data[0] = s->port92;
		return;
	}
	s->port92 = data[0] & 0x02; /* A20 is always on under KVM; remember the bit */
	if (data[0] & 0x01)
		vm_request_stop(s->vm, VM_STOP_RESET, 0, NULL);
}

int sysctl_init(struct vm *vm, struct vt_error *err)
{
	struct sysctl *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return vt_error_set(err, ENOMEM, "sysctl", "create", NULL);
	s->vm = vm;
	s->port92 = 0x02;
	if ((ret = vm_add_device(vm, "sysctl", s, free, err)))
		return ret;
	if ((ret = bus_register(&vm->pio, 0x80, 1, port80_io, s, err)) ||
	    (ret = bus_register(&vm->pio, 0xb2, 2, apm_io, s, err)))
		return ret;
	return bus_register(&vm->pio, 0x92, 1, port92_io, s, err);
}
