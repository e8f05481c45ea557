/* RFB key events (X11 keysyms) to PS/2 scan code set 2 for a US 101/102-key keyboard:
 * letters, digits and punctuation (shifted symbols map to their key: the client sends
 * Shift itself), modifiers, F1-F12, the editing and arrow keys, the keypad, Print Screen
 * (SysRq with Alt) and Pause (Break with Ctrl), the Windows and Menu keys.
 * With -k LAYOUT, qemu's keymap file for that layout (/usr/share/qemu/keymaps) says
 * which key types each keysym first; the US table covers what it does not name. */
#ifndef VTOOL_VMM_UI_KEYMAP_H
#define VTOOL_VMM_UI_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A key: its set-2 code, with 0x100 set for keys sent with an E0 prefix. 0 = unknown. */
#define KEY_E0 0x100
#define KEY_PRINT 0x212   /* Print Screen: its own sequences */
#define KEY_PAUSE 0x277   /* Pause: make only */
#define KEY_SYSRQ 0x084   /* Alt+Print Screen */
#define KEY_BREAK 0x27e   /* Ctrl+Pause */

uint16_t keymap_key(uint32_t keysym);

#include "util/error.h"
#define KEYMAP_DIR "/usr/share/qemu/keymaps"
/* Load a qemu keymap ("de", "fr", ...; NULL or "en-us": the built-in US table only). */
int keymap_load(const char *layout, struct vt_error *err);
void keymap_unload(void);

/* The bytes a PS/2 keyboard sends for key going down or up (at most 8); 0 if none. */
size_t keymap_bytes(uint16_t key, bool down, uint8_t out[8]);

#endif
