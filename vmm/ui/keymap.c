/* X11 keysyms (what RFB key events carry) to the set-2 codes of a US keyboard, and
 * qemu's keymap files for other layouts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/hw/ps2.h"
#include "vmm/ui/keymap.h"
#include "vmm/keysym_names.h"   /* generated from rfb/keysym.h */

/* The loaded layout: keysym -> key, sorted by keysym. */
static struct layout_key {
	uint32_t keysym;
	uint16_t key;
} *layout;
static size_t layout_len, layout_cap;

/* Printable ASCII 0x20..0x7e: the key that types it (shifted or not). */
static const uint8_t ascii_key[95] = {
	0x29, 0x16, 0x52, 0x26, 0x25, 0x2e, 0x3d, 0x52,   /*  !"#$%&' */
	0x46, 0x45, 0x3e, 0x55, 0x41, 0x4e, 0x49, 0x4a,   /* ()*+,-./ */
	0x45, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, 0x3d,   /* 01234567 */
	0x3e, 0x46, 0x4c, 0x4c, 0x41, 0x55, 0x49, 0x4a,   /* 89:;<=>? */
	0x1e, 0x1c, 0x32, 0x21, 0x23, 0x24, 0x2b, 0x34,   /* @ABCDEFG */
	0x33, 0x43, 0x3b, 0x42, 0x4b, 0x3a, 0x31, 0x44,   /* HIJKLMNO */
	0x4d, 0x15, 0x2d, 0x1b, 0x2c, 0x3c, 0x2a, 0x1d,   /* PQRSTUVW */
	0x22, 0x35, 0x1a, 0x54, 0x5d, 0x5b, 0x36, 0x4e,   /* XYZ[\]^_ */
	0x0e, 0x1c, 0x32, 0x21, 0x23, 0x24, 0x2b, 0x34,   /* `abcdefg */
	0x33, 0x43, 0x3b, 0x42, 0x4b, 0x3a, 0x31, 0x44,   /* hijklmno */
	0x4d, 0x15, 0x2d, 0x1b, 0x2c, 0x3c, 0x2a, 0x1d,   /* pqrstuvw */
	0x22, 0x35, 0x1a, 0x54, 0x5d, 0x5b, 0x0e,         /* xyz{|}~ */
};

/* Function and keypad keysyms (0xff00 page and a few others). */
static const struct {
	uint32_t keysym;
	uint16_t key;
} special[] = {
	{ 0xff08, 0x66 },           /* BackSpace */
	{ 0xff09, 0x0d },           /* Tab */
	{ 0xfe20, 0x0d },           /* ISO_Left_Tab (Shift+Tab) */
	{ 0xff0d, 0x5a },           /* Return */
	{ 0xff1b, 0x76 },           /* Escape */
	{ 0xffff, KEY_E0 | 0x71 },  /* Delete */
	{ 0xff50, KEY_E0 | 0x6c },  /* Home */
	{ 0xff51, KEY_E0 | 0x6b },  /* Left */
	{ 0xff52, KEY_E0 | 0x75 },  /* Up */
	{ 0xff53, KEY_E0 | 0x74 },  /* Right */
	{ 0xff54, KEY_E0 | 0x72 },  /* Down */
	{ 0xff55, KEY_E0 | 0x7d },  /* Page_Up */
	{ 0xff56, KEY_E0 | 0x7a },  /* Page_Down */
	{ 0xff57, KEY_E0 | 0x69 },  /* End */
	{ 0xff63, KEY_E0 | 0x70 },  /* Insert */
	{ 0xff61, KEY_PRINT },      /* Print */
	{ 0xff15, KEY_SYSRQ },      /* Sys_Req */
	{ 0xff13, KEY_PAUSE },      /* Pause */
	{ 0xff6b, KEY_BREAK },      /* Break */
	{ 0xff67, KEY_E0 | 0x2f },  /* Menu */
	{ 0xff7f, 0x77 },           /* Num_Lock */
	{ 0xff14, 0x7e },           /* Scroll_Lock */
	{ 0xffe5, 0x58 },           /* Caps_Lock */
	{ 0xffe1, 0x12 },           /* Shift_L */
	{ 0xffe2, 0x59 },           /* Shift_R */
	{ 0xffe3, 0x14 },           /* Control_L */
	{ 0xffe4, KEY_E0 | 0x14 },  /* Control_R */
	{ 0xffe7, KEY_E0 | 0x1f },  /* Meta_L: the Windows key, as qemu does */
	{ 0xffe8, KEY_E0 | 0x27 },  /* Meta_R */
	{ 0xffe9, 0x11 },           /* Alt_L */
	{ 0xffea, KEY_E0 | 0x11 },  /* Alt_R */
	{ 0xfe03, KEY_E0 | 0x11 },  /* ISO_Level3_Shift (AltGr) */
	{ 0xff7e, KEY_E0 | 0x11 },  /* Mode_switch */
	{ 0xffeb, KEY_E0 | 0x1f },  /* Super_L */
	{ 0xffec, KEY_E0 | 0x27 },  /* Super_R */
	{ 0xffbe, 0x05 }, { 0xffbf, 0x06 }, { 0xffc0, 0x04 }, { 0xffc1, 0x0c },  /* F1-F4 */
	{ 0xffc2, 0x03 }, { 0xffc3, 0x0b }, { 0xffc4, 0x83 }, { 0xffc5, 0x0a },  /* F5-F8 */
	{ 0xffc6, 0x01 }, { 0xffc7, 0x09 }, { 0xffc8, 0x78 }, { 0xffc9, 0x07 },  /* F9-F12 */
	{ 0xffb0, 0x70 }, { 0xffb1, 0x69 }, { 0xffb2, 0x72 }, { 0xffb3, 0x7a },  /* KP_0-3 */
	{ 0xffb4, 0x6b }, { 0xffb5, 0x73 }, { 0xffb6, 0x74 }, { 0xffb7, 0x6c },  /* KP_4-7 */
	{ 0xffb8, 0x75 }, { 0xffb9, 0x7d },                                      /* KP_8-9 */
	{ 0xff9e, 0x70 }, { 0xff9c, 0x69 }, { 0xff99, 0x72 }, { 0xff9b, 0x7a },  /* KP_Insert.. */
	{ 0xff96, 0x6b }, { 0xff9d, 0x73 }, { 0xff98, 0x74 }, { 0xff95, 0x6c },
	{ 0xff97, 0x75 }, { 0xff9a, 0x7d }, { 0xff9f, 0x71 },                   /* ..KP_Delete */
	{ 0xffae, 0x71 },           /* KP_Decimal */
	{ 0xffac, 0x71 },           /* KP_Separator */
	{ 0xffab, 0x79 },           /* KP_Add */
	{ 0xffad, 0x7b },           /* KP_Subtract */
	{ 0xffaa, 0x7c },           /* KP_Multiply */
	{ 0xffaf, KEY_E0 | 0x4a },  /* KP_Divide */
	{ 0xff8d, KEY_E0 | 0x5a },  /* KP_Enter */
	{ 0xffbd, 0x55 },           /* KP_Equal: the = key */
	{ 0x00a7, 0x0e },           /* section: the key left of 1 on ISO keyboards */
	{ 0x00b0, 0x0e },           /* degree */
};

static int cmp_layout(const void *a, const void *b)
{
	const struct layout_key *x = a, *y = b;
	return x->keysym < y->keysym ? -1 : x->keysym > y->keysym;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, ((const struct keysym_name *)b)->name);
}

uint16_t keymap_key(uint32_t keysym)
{
	if (layout_len) {
		struct layout_key k = { keysym, 0 };
		const struct layout_key *f = bsearch(&k, layout, layout_len, sizeof(k), cmp_layout);
		if (f)
			return f->key;
	}
	if (keysym >= 0x20 && keysym <= 0x7e)
		return ascii_key[keysym - 0x20];
	for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
		if (special[i].keysym == keysym)
			return special[i].key;
	return 0;
}

size_t keymap_bytes(uint16_t key, bool down, uint8_t out[8])
{
	static const uint8_t print_down[] = { 0xe0, 0x12, 0xe0, 0x7c };
	static const uint8_t print_up[] = { 0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12 };
	static const uint8_t pause[] = { 0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77 };
	static const uint8_t brk[] = { 0xe0, 0x7e, 0xe0, 0xf0, 0x7e };
	size_t n = 0;

	switch (key) {
	case 0:
		return 0;
	case KEY_PRINT:
		n = down ? sizeof(print_down) : sizeof(print_up);
		memcpy(out, down ? print_down : print_up, n);
		return n;
	case KEY_PAUSE:
		memcpy(out, pause, down ? sizeof(pause) : 0);
		return down ? sizeof(pause) : 0;
	case KEY_BREAK:
		memcpy(out, brk, down ? sizeof(brk) : 0);
		return down ? sizeof(brk) : 0;
	default:
		if (key & KEY_E0)
			out[n++] = 0xe0;
		if (!down)
			out[n++] = 0xf0;
		out[n++] = (uint8_t)key;
		return n;
	}
}

/* qemu's key number (set 1, bit 7 for the E0 prefix) as a set-2 key. */
static uint16_t qnum_key(unsigned q)
{
	if (q == 0xb7)
		return KEY_PRINT;
	if (q == 0xc6)
		return KEY_PAUSE;
	for (unsigned c = 1; c < 0x85; c++)
		if (ps2_set2_to_set1((uint8_t)c) == (q & 0x7f))
			return (uint16_t)(c | (q & 0x80 ? KEY_E0 : 0));
	return 0;
}

static int load_file(const char *layout_name, int depth, struct vt_error *err)
{
	char path[512], line[256];

	if (depth > 4 || strchr(layout_name, '/'))
		return vt_error_set(err, EINVAL, "-k", NULL, "bad keymap name '%s'", layout_name);
	snprintf(path, sizeof(path), "%s/%s", KEYMAP_DIR, layout_name);
	FILE *f = fopen(path, "re");
	if (!f)
		return vt_error_set(err, errno, "-k", NULL, "keymap '%s': %s: %s (qemu's keymaps come "
		                    "with Debian's qemu-system-data)", layout_name, path, strerror(errno));
	int ret = 0;
	while (!ret && fgets(line, sizeof(line), f)) {
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *name = strtok(line, " \t\r\n"), *val = strtok(NULL, " \t\r\n");
		if (!name || !val)
			continue;
		if (!strcmp(name, "include")) {
			ret = load_file(val, depth + 1, err);
			continue;
		}
		if (!strcmp(name, "map"))
			continue;
		uint32_t keysym;
		const struct keysym_name *n = bsearch(name, keysym_names,
		                                      sizeof(keysym_names) / sizeof(keysym_names[0]),
		                                      sizeof(keysym_names[0]), cmp_name);
		if (n)
			keysym = n->keysym;
		else if (name[0] == 'U' && strlen(name) >= 5)
			keysym = 0x1000000u | (uint32_t)strtoul(name + 1, NULL, 16);
		else
			continue;
		uint16_t key = qnum_key((unsigned)strtoul(val, NULL, 0));
		if (!key)
			continue;
		bool known = false;          /* the first line naming a keysym wins */
		for (size_t i = 0; i < layout_len && !known; i++)
			known = layout[i].keysym == keysym;
		if (known)
			continue;
		if (layout_len == layout_cap) {
			size_t cap = layout_cap ? layout_cap * 2 : 256;
			struct layout_key *p = realloc(layout, cap * sizeof(*p));
			if (!p) {
				ret = vt_error_set(err, ENOMEM, "-k", NULL, "keymap '%s'", layout_name);
				break;
			}
			layout = p;
			layout_cap = cap;
		}
		layout[layout_len++] = (struct layout_key){ keysym, key };
	}
	fclose(f);
	return ret;
}

int keymap_load(const char *layout_name, struct vt_error *err)
{
	keymap_unload();
	if (!layout_name || !strcmp(layout_name, "en-us"))
		return 0;
	int ret = load_file(layout_name, 0, err);
	if (ret) {
		keymap_unload();
		return ret;
	}
	qsort(layout, layout_len, sizeof(*layout), cmp_layout);
	return 0;
}

void keymap_unload(void)
{
	free(layout);
	layout = NULL;
	layout_len = layout_cap = 0;
}
