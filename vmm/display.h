/* What the monitors need from a display: a picture for screendump, and what the VNC
 * server would say to query-vnc. The display work (VGA, VNC) fills these in; until a
 * machine has a display, screendump answers as qemu does without one, and query-vnc
 * says VNC is off.
 *
 * A display device registers its source on its machine (display_register: kept as the
 * device "display", found with vm_device); the VNC server, which lives as long as the
 * process, sets the query hook once. */
#ifndef VTOOL_VMM_DISPLAY_H
#define VTOOL_VMM_DISPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct vm;

/* A picture: width x height pixels, 32 bits each as XRGB8888 in host order (blue in the
 * low byte), rows stride bytes apart. */
struct display_surface {
	uint32_t width, height, stride;
	const uint8_t *pixels;
};

struct display_source {
	/* Take a consistent picture of the screen now (called on a monitor's thread). */
	int (*snapshot)(void *opaque, struct display_surface *out, struct vt_error *err);
	/* Done with the picture snapshot returned. */
	void (*release)(void *opaque, struct display_surface *s);
	void *opaque;
};

int display_register(struct vm *vm, const struct display_source *src, struct vt_error *err);

/* qemu's VncInfo, the part query-vnc reports. */
struct display_vnc_info {
	bool enabled;
	char host[64], service[16], family[8], auth[16];
	int clients;
};
typedef void display_vnc_query_fn(struct display_vnc_info *out);
void display_set_vnc_query(display_vnc_query_fn *fn);
void display_vnc_query(struct display_vnc_info *out);

/* screendump: write the machine's screen to path as "ppm" (qemu's default) or "png".
 * Errors in qemu's words ("There is no console to take a screendump from", 7.2's). */
int display_screendump(struct vm *vm, const char *path, const char *format,
                       struct vt_error *err);
/* The encoders, for the above and for tests. */
int display_write_ppm(const struct display_surface *s, const char *path, struct vt_error *err);
int display_write_png(const struct display_surface *s, const char *path, struct vt_error *err);

#endif
