/* PS/2 keyboard and mouse command sets (the IBM PS/2 technical reference's device side)
 * and the 8042's set-2 to set-1 translation table. */
#include <string.h>

#include "vmm/hw/ps2.h"

#define ACK    0xfa
#define RESEND 0xfe
#define BAT_OK 0xaa

/* Bytes of queue kept free for command replies, so typing cannot starve the guest's
 * commands of their acknowledgements. */
#define REPLY_ROOM 16

static void q_push(struct ps2_queue *q, uint8_t v)
{
	if (q->len == PS2_QUEUE_LEN)
		return;
	q->buf[(q->head + q->len++) % PS2_QUEUE_LEN] = v;
}

bool ps2_queue_pop(struct ps2_queue *q, uint8_t *out)
{
	if (!q->len)
		return false;
	*out = q->buf[q->head];
	q->head = (q->head + 1) % PS2_QUEUE_LEN;
	q->len--;
	return true;
}

size_t ps2_queue_room(const struct ps2_queue *q)
{
	return PS2_QUEUE_LEN - q->len;
}

/* --- set 2 -> set 1 ----------------------------------------------------------------- */

/* The controller's translation of the codes an MF2 keyboard sends (the second byte of
 * E0-prefixed keys translates by the same table). */
static const uint8_t set2_to_set1[0x85] = {
	[0x76] = 0x01, [0x16] = 0x02, [0x1e] = 0x03, [0x26] = 0x04, [0x25] = 0x05,
	[0x2e] = 0x06, [0x36] = 0x07, [0x3d] = 0x08, [0x3e] = 0x09, [0x46] = 0x0a,
	[0x45] = 0x0b, [0x4e] = 0x0c, [0x55] = 0x0d, [0x66] = 0x0e, [0x0d] = 0x0f,
	[0x15] = 0x10, [0x1d] = 0x11, [0x24] = 0x12, [0x2d] = 0x13, [0x2c] = 0x14,
	[0x35] = 0x15, [0x3c] = 0x16, [0x43] = 0x17, [0x44] = 0x18, [0x4d] = 0x19,
	[0x54] = 0x1a, [0x5b] = 0x1b, [0x5a] = 0x1c, [0x14] = 0x1d, [0x1c] = 0x1e,
	[0x1b] = 0x1f, [0x23] = 0x20, [0x2b] = 0x21, [0x34] = 0x22, [0x33] = 0x23,
	[0x3b] = 0x24, [0x42] = 0x25, [0x4b] = 0x26, [0x4c] = 0x27, [0x52] = 0x28,
	[0x0e] = 0x29, [0x12] = 0x2a, [0x5d] = 0x2b, [0x1a] = 0x2c, [0x22] = 0x2d,
	[0x21] = 0x2e, [0x2a] = 0x2f, [0x32] = 0x30, [0x31] = 0x31, [0x3a] = 0x32,
	[0x41] = 0x33, [0x49] = 0x34, [0x4a] = 0x35, [0x59] = 0x36, [0x7c] = 0x37,
	[0x11] = 0x38, [0x29] = 0x39, [0x58] = 0x3a, [0x05] = 0x3b, [0x06] = 0x3c,
	[0x04] = 0x3d, [0x0c] = 0x3e, [0x03] = 0x3f, [0x0b] = 0x40, [0x83] = 0x41,
	[0x0a] = 0x42, [0x01] = 0x43, [0x09] = 0x44, [0x77] = 0x45, [0x7e] = 0x46,
	[0x6c] = 0x47, [0x75] = 0x48, [0x7d] = 0x49, [0x7b] = 0x4a, [0x6b] = 0x4b,
	[0x73] = 0x4c, [0x74] = 0x4d, [0x79] = 0x4e, [0x69] = 0x4f, [0x72] = 0x50,
	[0x7a] = 0x51, [0x70] = 0x52, [0x71] = 0x53, [0x84] = 0x54, [0x61] = 0x56,
	[0x78] = 0x57, [0x07] = 0x58, [0x1f] = 0x5b, [0x27] = 0x5c, [0x2f] = 0x5d,
	[0x37] = 0x5e, [0x3f] = 0x5f, [0x5e] = 0x63, [0x13] = 0x70, [0x51] = 0x73,
	[0x64] = 0x79, [0x67] = 0x7b, [0x6a] = 0x7d,
};

uint8_t ps2_set2_to_set1(uint8_t code)
{
	return code < sizeof(set2_to_set1) ? set2_to_set1[code] : 0;
}

/* --- keyboard ----------------------------------------------------------------------- */

void ps2_kbd_reset(struct ps2_kbd *k)
{
	struct ps2_queue q = k->q;

	*k = (struct ps2_kbd){ .q = q, .scanning = true, .set = 2 };
}

void ps2_kbd_write(struct ps2_kbd *k, uint8_t v)
{
	if (k->pending) {
		uint8_t cmd = k->pending;
		k->pending = 0;
		q_push(&k->q, ACK);
		if (cmd == 0xed)
			k->leds = v & 7;
		else if (cmd == 0xf0 && v == 0)
			q_push(&k->q, k->set);
		else if (cmd == 0xf0 && (v == 1 || v == 2))
			k->set = v;         /* set 3 is not offered: the keyboard stays in its set */
		return;
	}
	switch (v) {
	case 0xff: /* reset: ack, then self-test passed */
		ps2_kbd_reset(k);
		k->q.len = 0;
		q_push(&k->q, ACK);
		q_push(&k->q, BAT_OK);
		break;
	case 0xf2: /* identify: an MF2 keyboard (the controller translates 0x83 to 0x41) */
		q_push(&k->q, ACK);
		q_push(&k->q, 0xab);
		q_push(&k->q, 0x83);
		break;
	case 0xed: case 0xf3: case 0xf0:
		k->pending = v;
		q_push(&k->q, ACK);
		break;
	case 0xee:
		q_push(&k->q, 0xee);
		break;
	case 0xf4:
		k->scanning = true;
		q_push(&k->q, ACK);
		break;
	case 0xf5: /* disable and restore defaults */
		k->scanning = false;
		k->set = 2;
		q_push(&k->q, ACK);
		break;
	case 0xf6:
		k->set = 2;
		q_push(&k->q, ACK);
		break;
	case 0xf7: case 0xf8: case 0xf9: case 0xfa: case 0xfb: case 0xfc: case 0xfd: case 0xfe:
		q_push(&k->q, ACK);
		break;
	default:
		q_push(&k->q, RESEND);
	}
}

bool ps2_kbd_key(struct ps2_kbd *k, const uint8_t *set2, size_t len)
{
	if (!k->scanning || len == 0 || len + REPLY_ROOM > ps2_queue_room(&k->q))
		return false;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = set2[i];
		if (k->set == 1 && c != 0xe0 && c != 0xe1) {
			bool brk = c == 0xf0 && i + 1 < len;
			if (brk)
				c = set2[++i];
			c = (uint8_t)(ps2_set2_to_set1(c) | (brk ? 0x80 : 0));
		}
		q_push(&k->q, c);
	}
	return true;
}

/* --- mouse -------------------------------------------------------------------------- */

static void mouse_defaults(struct ps2_mouse *m)
{
	m->enabled = m->remote = m->scale21 = false;
	m->resolution = 2;       /* 4 counts/mm */
	m->rate = 100;
	m->dx = m->dy = m->dz = 0;
	m->buttons_sent = true;
}

void ps2_mouse_reset(struct ps2_mouse *m)
{
	struct ps2_queue q = m->q;

	*m = (struct ps2_mouse){ .q = q };
	mouse_defaults(m);
}

static int clamp(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* One movement packet (3 bytes, 4 with a wheel) from the accumulated motion. */
static void mouse_packet(struct ps2_mouse *m)
{
	int dx = clamp(m->dx, -255, 255), dy = clamp(m->dy, -255, 255);
	int dz = m->id == 3 ? clamp(m->dz, -127, 127) : 0;
	uint8_t b0 = (uint8_t)(0x08 | (m->buttons & 7) | (dx < 0 ? 0x10 : 0) | (dy < 0 ? 0x20 : 0));

	q_push(&m->q, b0);
	q_push(&m->q, (uint8_t)dx);
	q_push(&m->q, (uint8_t)dy);
	if (m->id == 3)
		q_push(&m->q, (uint8_t)dz);
	m->dx -= dx;
	m->dy -= dy;
	m->dz = m->id == 3 ? m->dz - dz : 0;
	m->buttons_sent = true;
}

static void mouse_flush(struct ps2_mouse *m)
{
	size_t size = m->id == 3 ? 4 : 3;

	while ((m->dx || m->dy || m->dz || !m->buttons_sent) &&
	       ps2_queue_room(&m->q) >= size + REPLY_ROOM)
		mouse_packet(m);
}

void ps2_mouse_event(struct ps2_mouse *m, int dx, int dy, int dz, uint8_t buttons)
{
	if (!m->enabled || m->remote)
		return;
	/* Bounded: a flood of motion is kept as at most a screen's worth. */
	m->dx = clamp(m->dx + dx, -4096, 4096);
	m->dy = clamp(m->dy - dy, -4096, 4096);
	m->dz = clamp(m->dz + dz, -127, 127);
	if ((buttons & 7) != m->buttons) {
		m->buttons = buttons & 7;
		m->buttons_sent = false;
	}
	mouse_flush(m);
}

void ps2_mouse_write(struct ps2_mouse *m, uint8_t v)
{
	if (m->pending) {
		uint8_t cmd = m->pending;
		m->pending = 0;
		q_push(&m->q, ACK);
		if (cmd == 0xe8) {
			m->resolution = v & 3;
		} else if (cmd == 0xf3) {
			m->rate = v;
			m->rates[0] = m->rates[1];
			m->rates[1] = m->rates[2];
			m->rates[2] = v;
			if (m->rates[0] == 200 && m->rates[1] == 100 && m->rates[2] == 80)
				m->id = 3;
		}
		return;
	}
	if (m->wrap && v != 0xec && v != 0xff) {
		q_push(&m->q, v);
		return;
	}
	switch (v) {
	case 0xff: /* reset: ack, self-test passed, ID */
		ps2_mouse_reset(m);
		m->q.len = 0;
		q_push(&m->q, ACK);
		q_push(&m->q, BAT_OK);
		q_push(&m->q, 0x00);
		return;
	case 0xf6:
		mouse_defaults(m);
		break;
	case 0xf5:
		m->enabled = false;
		break;
	case 0xf4:
		m->enabled = true;
		m->dx = m->dy = m->dz = 0;
		break;
	case 0xf3: case 0xe8:
		m->pending = v;
		break;
	case 0xf2:
		q_push(&m->q, ACK);
		q_push(&m->q, m->id);
		return;
	case 0xf0:
		m->remote = true;
		break;
	case 0xee:
		m->wrap = true;
		break;
	case 0xec:
		m->wrap = false;
		break;
	case 0xea:
		m->remote = false;
		break;
	case 0xeb: /* read data: one packet, even with nothing to report */
		q_push(&m->q, ACK);
		mouse_packet(m);
		return;
	case 0xe9: {
		uint8_t b = m->buttons;
		q_push(&m->q, ACK);
		q_push(&m->q, (uint8_t)((m->remote ? 0x40 : 0) | (m->enabled ? 0x20 : 0) |
		                        (m->scale21 ? 0x10 : 0) | (b & 1 ? 4 : 0) | (b & 4 ? 2 : 0) |
		                        (b & 2 ? 1 : 0)));
		q_push(&m->q, m->resolution);
		q_push(&m->q, m->rate);
		return;
	}
	case 0xe7:
		m->scale21 = true;
		break;
	case 0xe6:
		m->scale21 = false;
		break;
	case 0xfe: /* resend: nothing is kept to resend; acknowledge */
		break;
	default:
		q_push(&m->q, RESEND);
		return;
	}
	q_push(&m->q, ACK);
}
