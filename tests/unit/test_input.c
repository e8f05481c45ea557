/* The input path without a VM: RFB keysyms to set-2 bytes (ui/keymap.c), the PS/2
 * keyboard's set handling and the 8042 translation table, the mouse's packets and its
 * IntelliMouse knock (hw/ps2.c). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/hw/ps2.h"
#include "vmm/ui/keymap.h"

static size_t drain(struct ps2_queue *q, uint8_t *out, size_t max)
{
	size_t n = 0;
	while (n < max && ps2_queue_pop(q, &out[n]))
		n++;
	return n;
}

START_TEST(test_keymap)
{
	uint8_t b[8];
	/* letters, shifted symbols on their key, keypad, extended keys */
	ck_assert_uint_eq(keymap_key('a'), 0x1c);
	ck_assert_uint_eq(keymap_key('A'), 0x1c);
	ck_assert_uint_eq(keymap_key('!'), keymap_key('1'));
	ck_assert_uint_eq(keymap_key(0xffbe), 0x05);                 /* F1 */
	ck_assert_uint_eq(keymap_key(0xffc9), 0x07);                 /* F12 */
	ck_assert_uint_eq(keymap_key(0xff52), KEY_E0 | 0x75);        /* Up */
	ck_assert_uint_eq(keymap_key(0xff8d), KEY_E0 | 0x5a);        /* KP_Enter */
	ck_assert_uint_eq(keymap_key(0x12345), 0);
	ck_assert_uint_eq(keymap_bytes(keymap_key(0xff52), true, b), 2);
	ck_assert(b[0] == 0xe0 && b[1] == 0x75);
	ck_assert_uint_eq(keymap_bytes(keymap_key(0xff52), false, b), 3);
	ck_assert(b[0] == 0xe0 && b[1] == 0xf0 && b[2] == 0x75);
	ck_assert_uint_eq(keymap_bytes(KEY_PAUSE, true, b), 8);
	ck_assert_uint_eq(keymap_bytes(KEY_PAUSE, false, b), 0);
	ck_assert_uint_eq(keymap_bytes(KEY_PRINT, true, b), 4);
	/* every key the map produces has a set-1 translation */
	for (uint32_t ks = 0x20; ks < 0x10000; ks++) {
		uint16_t k = keymap_key(ks);
		if (k && k != KEY_PRINT && k != KEY_PAUSE && k != KEY_BREAK)
			ck_assert_msg(ps2_set2_to_set1((uint8_t)k) != 0, "keysym 0x%x", ks);
	}
	ck_assert_uint_eq(ps2_set2_to_set1(0x1c), 0x1e);             /* A */
	ck_assert_uint_eq(ps2_set2_to_set1(0x83), 0x41);             /* F7 */
}
END_TEST

/* -k: qemu's keymap files (when qemu-system-data is installed). */
START_TEST(test_layouts)
{
	struct vt_error e = { 0 };

	ck_assert_int_eq(keymap_load("en-us", &e), 0);
	ck_assert_uint_eq(keymap_key('z'), 0x1a);
	ck_assert_int_lt(keymap_load("no-such-layout", &e), 0);
	ck_assert_ptr_nonnull(strstr(e.why, "no-such-layout"));
	if (access(KEYMAP_DIR "/de", R_OK) == 0) {
		ck_assert_int_eq(keymap_load("de", &e), 0);
		ck_assert_uint_eq(keymap_key('z'), 0x35);                /* German Z: the US Y key */
		ck_assert_uint_eq(keymap_key('y'), 0x1a);
		ck_assert_uint_eq(keymap_key(0xe4), 0x52);               /* adiaeresis */
		ck_assert_uint_eq(keymap_key(0xff52), KEY_E0 | 0x75);    /* Up: from the file too */
	}
	keymap_unload();
}
END_TEST

START_TEST(test_keyboard)
{
	struct ps2_kbd k = { 0 };
	uint8_t b[32], key[] = { 0xe0, 0xf0, 0x75 };

	ps2_kbd_reset(&k);
	ck_assert(ps2_kbd_key(&k, key, 3));
	ck_assert_uint_eq(drain(&k.q, b, 32), 3);
	ps2_kbd_write(&k, 0xf0);                                     /* set 1 */
	ps2_kbd_write(&k, 0x01);
	ck_assert_uint_eq(drain(&k.q, b, 32), 2);
	ck_assert(ps2_kbd_key(&k, key, 3));                          /* up-arrow break in set 1 */
	ck_assert_uint_eq(drain(&k.q, b, 32), 2);
	ck_assert(b[0] == 0xe0 && b[1] == 0xc8);
	ps2_kbd_write(&k, 0xf5);                                     /* disabled: keys dropped */
	drain(&k.q, b, 32);
	ck_assert(!ps2_kbd_key(&k, key, 3));
	/* a full queue takes no half events */
	ps2_kbd_write(&k, 0xf4);
	drain(&k.q, b, 32);
	int events = 0;
	while (ps2_kbd_key(&k, key, 3))
		events++;
	ck_assert_int_gt(events, 50);
	ck_assert_uint_eq(k.q.len % 3, 0);
}
END_TEST

START_TEST(test_mouse)
{
	struct ps2_mouse m = { 0 };
	uint8_t b[16];
	static const uint8_t knock[] = { 0xf3, 200, 0xf3, 100, 0xf3, 80 };

	ps2_mouse_reset(&m);
	ps2_mouse_event(&m, 5, 5, 0, 1);                              /* not enabled: nothing */
	ck_assert_uint_eq(m.q.len, 0);
	ps2_mouse_write(&m, 0xf2);
	ck_assert_uint_eq(drain(&m.q, b, 16), 2);
	ck_assert_uint_eq(b[1], 0);
	for (size_t i = 0; i < sizeof(knock); i++)
		ps2_mouse_write(&m, knock[i]);
	ps2_mouse_write(&m, 0xf2);
	drain(&m.q, b, 16);
	ck_assert_uint_eq(m.id, 3);
	ps2_mouse_write(&m, 0xf4);
	drain(&m.q, b, 16);
	ps2_mouse_event(&m, 10, -5, -1, 0);                            /* right, up, wheel up */
	ck_assert_uint_eq(drain(&m.q, b, 16), 4);
	ck_assert(b[0] == 0x08 && b[1] == 10 && b[2] == 5 && b[3] == 0xff);
	ps2_mouse_event(&m, -300, 0, 0, 2);                            /* big motion: split */
	ck_assert_uint_eq(drain(&m.q, b, 16), 8);
	ck_assert(b[0] == (0x08 | 0x10 | 2) && b[1] == (uint8_t)-255);
	ck_assert(b[4] == (0x08 | 0x10 | 2) && b[5] == (uint8_t)-45);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("input");
	TCase *tc = tcase_create("input");
	tcase_add_test(tc, test_keymap);
	tcase_add_test(tc, test_layouts);
	tcase_add_test(tc, test_keyboard);
	tcase_add_test(tc, test_mouse);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
