/* qemu's isa-debugcon: every byte written to the port goes to a file (SeaBIOS's debug
 * log on port 0x402); reads return 0xe9, the value firmware checks before it logs. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/hw/devices.h"
#include "vmm/keep.h"
#include "vmm/vm.h"

#define DEBUGCON_READBACK 0xe9

struct debugcon {
	int fd;
};

static void debugcon_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                        bool is_write)
{
	struct debugcon *d = opaque;

	if (!is_write) {
		memset(data, 0, len);
		data[0] = DEBUGCON_READBACK;
		return;
	}
	ssize_t n;
	do
		n = write(d->fd, data, 1);
	while (n < 0 && errno == EINTR);
}

static void debugcon_destroy(void *opaque)
{
	struct debugcon *d = opaque;

	close(d->fd);
	free(d);
}

int debugcon_init(struct vm *vm, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;
	int ret;

	if (!cfg->debugcon_path)
		return 0;
	struct debugcon *d = calloc(1, sizeof(*d));
	if (!d)
		return vt_error_set(err, ENOMEM, "debugcon", "create", NULL);
	d->fd = keep_open(cfg->debugcon_path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644, NULL);
	if (d->fd < 0) {
		int e = -d->fd;
		free(d);
		return vt_error_set(err, e, cfg->debugcon_path, "open debug console output", NULL);
	}
	if ((ret = vm_add_device(vm, "debugcon", d, debugcon_destroy, err)))
		return ret;
	return bus_register(&vm->pio, cfg->debugcon_port, 1, debugcon_io, d, err);
}
