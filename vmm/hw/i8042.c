/* The i8042 keyboard controller (ports 0x60/0x64): enough for firmware and Linux to
 * probe it (self-tests, command byte, keyboard reset/identify) and for the guest to reset
 * the machine with the 0xfe pulse. No keys are produced yet (that is the display's job);
 * the auxiliary (mouse) port answers its tests but has no device behind it. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "vmm/hw/devices.h"
#include "vmm/vm.h"

#define I8042_DATA   0x60
#define I8042_CMD    0x64
#define KBD_IRQ      1
#define QUEUE_LEN    16

#define STS_OBF      0x01
#define STS_SYS      0x04
#define STS_CMD      0x08
#define STS_UNLOCKED 0x10
#define CTR_KBD_INT  0x01
#define CTR_SYS      0x04
#define CTR_KBD_OFF  0x10
#define CTR_AUX_OFF  0x20
#define CTR_XLATE    0x40

struct i8042 {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t ctr, status_cmd;
	uint8_t pending_cmd;       /* controller command waiting for its data byte */
	uint8_t kbd_pending;       /* keyboard command waiting for its parameter */
	uint8_t queue[QUEUE_LEN];
	unsigned head, len;
	uint8_t last;              /* the output buffer keeps the last byte read */
};

static void i8042_push(struct i8042 *k, uint8_t byte)
{
	if (k->len == QUEUE_LEN)
		return;
	k->queue[(k->head + k->len++) % QUEUE_LEN] = byte;
	if (k->ctr & CTR_KBD_INT)
		vm_irq_pulse(k->vm, KBD_IRQ);
}

static void i8042_kbd_command(struct i8042 *k, uint8_t v)
{
	if (k->kbd_pending) {
		/* The parameter of LED, typematic or scan-code-set commands. */
		uint8_t cmd = k->kbd_pending;
		k->kbd_pending = 0;
		i8042_push(k, 0xfa);
		if (cmd == 0xf0 && v == 0)
			i8042_push(k, 0x02); /* current set: 2 */
		return;
	}
	switch (v) {
	case 0xff: /* reset: ack, then self-test passed */
		i8042_push(k, 0xfa);
		i8042_push(k, 0xaa);
		break;
	case 0xf2: /* identify: an MF2 keyboard */
		i8042_push(k, 0xfa);
		i8042_push(k, 0xab);
		i8042_push(k, 0x83);
		break;
	case 0xed: case 0xf3: case 0xf0:
		k->kbd_pending = v;
		i8042_push(k, 0xfa);
		break;
	case 0xee:
		i8042_push(k, 0xee);
		break;
	case 0xf4: case 0xf5: case 0xf6: case 0xf7: case 0xf8: case 0xf9: case 0xfa:
		i8042_push(k, 0xfa);
		break;
	default:
		i8042_push(k, 0xfe); /* resend: unknown command */
	}
}

static void i8042_data_write(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->pending_cmd;

	k->pending_cmd = 0;
	switch (cmd) {
	case 0x60:
		k->ctr = v;
		break;
	case 0xd1: /* output port: bit 0 low holds the CPU in reset */
		if (!(v & 1))
			vm_request_stop(k->vm, VM_STOP_RESET, 0, NULL);
		break;
	case 0xd2:
		i8042_push(k, v);
		break;
	case 0xd3: case 0xd4:
		break; /* no mouse behind the auxiliary port */
	default:
		i8042_kbd_command(k, v);
	}
}

static void i8042_command(struct i8042 *k, uint8_t v)
{
	switch (v) {
	case 0x20: i8042_push(k, k->ctr); break;
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4: k->pending_cmd = v; break;
	case 0xa7: k->ctr |= CTR_AUX_OFF; break;
	case 0xa8: k->ctr &= (uint8_t)~CTR_AUX_OFF; break;
	case 0xa9: i8042_push(k, 0x00); break;   /* aux interface test: ok */
	case 0xaa: i8042_push(k, 0x55); break;   /* controller self-test: ok */
	case 0xab: i8042_push(k, 0x00); break;   /* keyboard interface test: ok */
	case 0xad: k->ctr |= CTR_KBD_OFF; break;
	case 0xae: k->ctr &= (uint8_t)~CTR_KBD_OFF; break;
	case 0xc0: i8042_push(k, 0x80); break;   /* input port: keyboard not inhibited */
	case 0xd0: i8042_push(k, 0x03); break;   /* output port: A20 on, not in reset */
	default:
		/* 0xf0..0xff pulse output lines; bit 0 clear pulses the reset line. */
		if (v >= 0xf0 && !(v & 1))
			vm_request_stop(k->vm, VM_STOP_RESET, 0, NULL);
	}
}

static void i8042_io(struct i8042 *k, bool data_port, uint8_t *data, unsigned len,
                     bool is_write)
{
	pthread_mutex_lock(&k->lock);
	if (is_write) {
		k->status_cmd = data_port ? 0 : STS_CMD;
		if (data_port)
			i8042_data_write(k, data[0]);
		else
			i8042_command(k, data[0]);
	} else if (data_port) {
		/* Empty: the last byte again, as the real output buffer (and qemu) does. A late
		 * keyboard interrupt then reads an old acknowledge (a key release to firmware),
		 * never a scan code 0. */
		if (k->len) {
			k->last = k->queue[k->head];
			k->head = (k->head + 1) % QUEUE_LEN;
			k->len--;
		}
		data[0] = k->last;
	} else {
		data[0] = (uint8_t)((k->len ? STS_OBF : 0) | (k->ctr & CTR_SYS ? STS_SYS : 0) |
		                    k->status_cmd | STS_UNLOCKED);
	}
	for (unsigned i = 1; i < len && !is_write; i++)
		data[i] = 0xff;
	pthread_mutex_unlock(&k->lock);
}

/* Two one-port ranges: each handler knows which port it serves. */
static void i8042_data_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                          bool is_write)
{
	i8042_io(opaque, true, data, len, is_write);
}

static void i8042_cmd_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                         bool is_write)
{
	i8042_io(opaque, false, data, len, is_write);
}

static void i8042_destroy(void *opaque)
{
	struct i8042 *k = opaque;

	pthread_mutex_destroy(&k->lock);
	free(k);
}

int i8042_init(struct vm *vm, struct vt_error *err)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return vt_error_set(err, ENOMEM, "i8042", "create", NULL);
	k->vm = vm;
	k->ctr = CTR_KBD_INT | CTR_SYS | CTR_XLATE;
	pthread_mutex_init(&k->lock, NULL);
	if ((ret = vm_add_device(vm, "i8042", k, i8042_destroy, err)))
		return ret;
	if ((ret = bus_register(&vm->pio, I8042_DATA, 1, i8042_data_io, k, err)))
		return ret;
	return bus_register(&vm->pio, I8042_CMD, 1, i8042_cmd_io, k, err);
}
