/* The i8042 keyboard controller (ports 0x60/0x64) with a PS/2 keyboard and mouse behind
 * it (hw/ps2.c): self-tests, the command byte (CTR), keyboard and auxiliary ports,
 * set-2 to set-1 translation when CTR.XLATE is set, IRQ 1 and IRQ 12, and the machine
 * reset through the output port. The display feeds keys and pointer motion through
 * i8042.h.
 *
 * One output buffer, as the hardware has: the controller's own replies come first, then
 * keyboard bytes, then mouse bytes. Loading a byte raises the interrupt line of its
 * source (when enabled in the CTR); reading port 0x60 lowers it and loads the next byte,
 * so every byte is its own edge for the guest's interrupt handler. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "vmm/hw/devices.h"
#include "vmm/hw/i8042.h"
#include "vmm/hw/ps2.h"
#include "vmm/vm.h"

#define I8042_DATA   0x60
#define I8042_CMD    0x64
#define KBD_IRQ      1
#define AUX_IRQ      12

#define STS_OBF      0x01
#define STS_SYS      0x04
#define STS_CMD      0x08
#define STS_UNLOCKED 0x10
#define STS_AUX_OBF  0x20
#define CTR_KBD_INT  0x01
#define CTR_AUX_INT  0x02
#define CTR_SYS      0x04
#define CTR_KBD_OFF  0x10
#define CTR_AUX_OFF  0x20
#define CTR_XLATE    0x40

enum src { SRC_KBD, SRC_AUX };

struct i8042 {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t ctr, status_cmd;
	uint8_t pending_cmd;       /* controller command waiting for its data byte */
	struct i8042_reply { uint8_t byte; enum src src; } reply[8];  /* the controller's replies */
	unsigned nr_reply;
	bool full;                 /* output buffer holds `out` */
	uint8_t out, last;         /* the output buffer keeps the last byte read */
	enum src out_src;
	bool irq_high[2];
	bool xlate_break;          /* translating: the keyboard's F0 prefix was swallowed */
	struct ps2_kbd kbd;
	struct ps2_mouse mouse;
};

static void set_irq(struct i8042 *k, enum src s, bool level)
{
	if (k->irq_high[s] == level)
		return;
	k->irq_high[s] = level;
	vm_irq_line(k->vm, s == SRC_KBD ? KBD_IRQ : AUX_IRQ, level);
}

static void update_irq(struct i8042 *k)
{
	set_irq(k, SRC_KBD, k->full && k->out_src == SRC_KBD && (k->ctr & CTR_KBD_INT));
	set_irq(k, SRC_AUX, k->full && k->out_src == SRC_AUX && (k->ctr & CTR_AUX_INT));
}

/* The next keyboard byte as the guest sees it (translated); false if none. */
static bool next_kbd_byte(struct i8042 *k, uint8_t *out)
{
	uint8_t b;

	while (ps2_queue_pop(&k->kbd.q, &b)) {
		if (!(k->ctr & CTR_XLATE)) {
			*out = b;
			return true;
		}
		if (b == 0xf0) {
			k->xlate_break = true;
			continue;
		}
		uint8_t t = b < 0x80 || b == 0x83 || b == 0x84 ? ps2_set2_to_set1(b) : b;
		if (!t)
			t = b;
		if (k->xlate_break)
			t |= 0x80;
		k->xlate_break = false;
		*out = t;
		return true;
	}
	return false;
}

/* Fill an empty output buffer from the replies and the devices. */
static void load(struct i8042 *k)
{
	if (!k->full) {
		if (k->nr_reply) {
			k->out = k->reply[0].byte;
			k->out_src = k->reply[0].src;
			for (unsigned i = 1; i < k->nr_reply; i++)
				k->reply[i - 1] = k->reply[i];
			k->nr_reply--;
			k->full = true;
		} else if (!(k->ctr & CTR_KBD_OFF) && next_kbd_byte(k, &k->out)) {
			k->out_src = SRC_KBD;
			k->full = true;
		} else if (!(k->ctr & CTR_AUX_OFF) && ps2_queue_pop(&k->mouse.q, &k->out)) {
			k->out_src = SRC_AUX;
			k->full = true;
		}
	}
	update_irq(k);
}

static void reply(struct i8042 *k, uint8_t byte, enum src src)
{
	if (k->nr_reply < sizeof(k->reply) / sizeof(k->reply[0]))
		k->reply[k->nr_reply++] = (struct i8042_reply){ byte, src };
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
		reply(k, v, SRC_KBD);
		break;
	case 0xd3:
		reply(k, v, SRC_AUX);
		break;
	case 0xd4:
		k->ctr &= (uint8_t)~CTR_AUX_OFF;   /* talking to the mouse enables its clock */
		ps2_mouse_write(&k->mouse, v);
		break;
	default:
		if (cmd >= 0x61 && cmd <= 0x7f)
			break;                      /* controller RAM: not kept */
		k->ctr &= (uint8_t)~CTR_KBD_OFF;
		ps2_kbd_write(&k->kbd, v);
	}
}

static void i8042_command(struct i8042 *k, uint8_t v)
{
	switch (v) {
	case 0x20: reply(k, k->ctr, SRC_KBD); break;
	case 0xa7: k->ctr |= CTR_AUX_OFF; break;
	case 0xa8: k->ctr &= (uint8_t)~CTR_AUX_OFF; break;
	case 0xa9: reply(k, 0x00, SRC_KBD); break;   /* aux interface test: ok */
	case 0xaa: reply(k, 0x55, SRC_KBD); break;   /* controller self-test: ok */
	case 0xab: reply(k, 0x00, SRC_KBD); break;   /* keyboard interface test: ok */
	case 0xad: k->ctr |= CTR_KBD_OFF; break;
	case 0xae: k->ctr &= (uint8_t)~CTR_KBD_OFF; break;
	case 0xc0: reply(k, 0x80, SRC_KBD); break;   /* input port: keyboard not inhibited */
	case 0xd0:                                   /* output port: A20 on, not in reset */
		reply(k, (uint8_t)(0x03 | (k->full && k->out_src == SRC_KBD ? 0x10 : 0) |
		                   (k->full && k->out_src == SRC_AUX ? 0x20 : 0)), SRC_KBD);
		break;
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4:
		k->pending_cmd = v;
		break;
	default:
		if (v >= 0x21 && v <= 0x3f)
			reply(k, 0x00, SRC_KBD);            /* controller RAM reads as zeros */
		else if (v >= 0x61 && v <= 0x7f)
			k->pending_cmd = v;
		/* 0xf0..0xff pulse output lines; bit 0 clear pulses the reset line. */
		else if (v >= 0xf0 && !(v & 1))
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
		if (k->full) {
			k->last = k->out;
			k->full = false;
		}
		data[0] = k->last;
		update_irq(k);    /* lower the line: the next byte is a new edge */
	} else {
		data[0] = (uint8_t)((k->full ? STS_OBF : 0) |
		                    (k->full && k->out_src == SRC_AUX ? STS_AUX_OBF : 0) |
		                    (k->ctr & CTR_SYS ? STS_SYS : 0) | k->status_cmd | STS_UNLOCKED);
	}
	load(k);
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

bool i8042_key(struct i8042 *k, const uint8_t *set2, size_t len)
{
	pthread_mutex_lock(&k->lock);
	bool ok = ps2_kbd_key(&k->kbd, set2, len);
	load(k);
	pthread_mutex_unlock(&k->lock);
	return ok;
}

void i8042_mouse(struct i8042 *k, int dx, int dy, int dz, uint8_t buttons)
{
	pthread_mutex_lock(&k->lock);
	ps2_mouse_event(&k->mouse, dx, dy, dz, buttons);
	load(k);
	pthread_mutex_unlock(&k->lock);
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
	ps2_kbd_reset(&k->kbd);
	ps2_mouse_reset(&k->mouse);
	pthread_mutex_init(&k->lock, NULL);
	if ((ret = vm_add_device(vm, "i8042", k, i8042_destroy, err)))
		return ret;
	if ((ret = bus_register(&vm->pio, I8042_DATA, 1, i8042_data_io, k, err)))
		return ret;
	return bus_register(&vm->pio, I8042_CMD, 1, i8042_cmd_io, k, err);
}
