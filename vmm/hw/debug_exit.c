/* qemu's isa-debug-exit: a write of v to the port ends the VM with exit status
 * (v << 1) | 1, so a test guest reports its verdict through vtool's exit status. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/hw/devices.h"
#include "vmm/vm.h"

static void debug_exit_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                          bool is_write)
{
	struct vm *vm = opaque;
	uint32_t v = 0;

	if (!is_write) {
		memset(data, 0xff, len);
		return;
	}
	memcpy(&v, data, len < 4 ? len : 4);
	vm_request_stop(vm, VM_STOP_EXIT_CODE, (int)(((v << 1) | 1) & 0xff), NULL);
}

int debug_exit_init(struct vm *vm, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;

	if (!cfg->debug_exit)
		return 0;
	return bus_register(&vm->pio, cfg->debug_exit_port, cfg->debug_exit_size, debug_exit_io,
	                    vm, err);
}
