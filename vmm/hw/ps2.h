/* The two PS/2 devices behind the i8042 (hw/i8042.c): an MF2 keyboard (scan code set 2,
 * or set 1 when the guest asks for it) and a mouse (standard 3-button, IntelliMouse
 * with a wheel after the 200-100-80 sample-rate knock, ID 3).
 *
 * Each device answers the commands the guest sends it and keeps a bounded queue of
 * bytes for the controller to take. Nothing here locks: the i8042 holds its lock around
 * every call. Input from the display (key events, mouse motion) is dropped whole when
 * the queue cannot take it, never cut in half. */
#ifndef VTOOL_VMM_HW_PS2_H
#define VTOOL_VMM_HW_PS2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS2_QUEUE_LEN 256

struct ps2_queue {
	uint8_t buf[PS2_QUEUE_LEN];
	unsigned head, len;
};

struct ps2_kbd {
	struct ps2_queue q;
	uint8_t pending;        /* command waiting for its parameter byte (0: none) */
	bool scanning;          /* F4 enable / F5 disable */
	uint8_t set;            /* scan code set the keyboard sends: 1 or 2 */
	uint8_t leds;
};

struct ps2_mouse {
	struct ps2_queue q;
	uint8_t pending;
	bool enabled;           /* data reporting (F4) */
	bool remote, wrap, scale21;
	uint8_t resolution, rate;
	uint8_t id;             /* 0 standard, 3 IntelliMouse (wheel) */
	uint8_t rates[3];       /* the last three sample rates set: the ID knock */
	int dx, dy, dz;         /* motion not sent yet (PS/2 sense: y up) */
	uint8_t buttons;        /* bit 0 left, 1 right, 2 middle */
	bool buttons_sent;      /* the last packet carried the current buttons */
};

bool ps2_queue_pop(struct ps2_queue *q, uint8_t *out);
size_t ps2_queue_room(const struct ps2_queue *q);

void ps2_kbd_reset(struct ps2_kbd *k);
/* A byte the guest wrote to the keyboard (through port 0x60). */
void ps2_kbd_write(struct ps2_kbd *k, uint8_t v);
/* One key event as set-2 bytes; converted to set 1 when the guest chose set 1.
 * Returns false (nothing queued) when the keyboard is not scanning or has no room. */
bool ps2_kbd_key(struct ps2_kbd *k, const uint8_t *set2, size_t len);

void ps2_mouse_reset(struct ps2_mouse *m);
/* A byte the guest sent the mouse (controller command 0xd4). */
void ps2_mouse_write(struct ps2_mouse *m, uint8_t v);
/* Motion (x right, y down as on a screen), wheel (+ towards the user) and buttons
 * (bit 0 left, 1 right, 2 middle). Queues packets while reporting is enabled. */
void ps2_mouse_event(struct ps2_mouse *m, int dx, int dy, int dz, uint8_t buttons);

/* Set 2 -> set 1, as the controller translates (0 for codes without a translation). */
uint8_t ps2_set2_to_set1(uint8_t code);

#endif
