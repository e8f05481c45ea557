/* A display surface: the guest's screen rendered in host memory, 32 bits per pixel
 * (0x00RRGGBB in host byte order), width * height pixels without padding.
 *
 * A graphics device (hw/vga*.c) draws into it and reports what it changed; the
 * front-end that owns it (ui/vnc.c) decides what that costs: it supplies `changed`
 * (forward a rectangle to clients) and `resize` (give the surface a new pixel buffer of
 * the new size, freeing the old one once clients stopped using it). */
#ifndef VTOOL_VMM_UI_SURFACE_H
#define VTOOL_VMM_UI_SURFACE_H

#include <stdint.h>

struct surface {
	uint32_t *pixels;
	int width, height;
	void *opaque;
	void (*changed)(void *opaque, int x, int y, int w, int h);
	/* Returns 0, or -ENOMEM (the surface keeps its old size). */
	int (*resize)(void *opaque, struct surface *s, int w, int h);
};

static inline void surface_changed(struct surface *s, int x, int y, int w, int h)
{
	if (w > 0 && h > 0 && s->changed)
		s->changed(s->opaque, x, y, w, h);
}

/* Resize when w x h differs from the current size; returns 1 if the size changed (the
 * pixels are then undefined: redraw all), 0 if not, -errno on failure. */
static inline int surface_resize(struct surface *s, int w, int h)
{
	if (s->width == w && s->height == h && s->pixels)
		return 0;
	int ret = s->resize ? s->resize(s->opaque, s, w, h) : -1;
	return ret < 0 ? ret : 1;
}

#endif
