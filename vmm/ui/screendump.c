/* screendump (display.h): the VGA's picture (display_snapshot) written as PPM (P6, as
 * qemu writes it) or PNG (8-bit RGB, zlib-compressed, no filter). */
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* A picture: 0x00RRGGBB pixels, rows width apart. */
struct picture {
	const uint32_t *pixels;
	uint32_t width, height;
};

#include "vmm/ui/display.h"

/* Rows of RGB bytes from XRGB pixels. */
static void row_rgb(const struct picture *s, uint32_t y, uint8_t *out)
{
	const uint32_t *p = s->pixels + (size_t)y * s->width;

	for (uint32_t x = 0; x < s->width; x++) {
		uint32_t v = p[x];
		out[3 * x] = (uint8_t)(v >> 16);
		out[3 * x + 1] = (uint8_t)(v >> 8);
		out[3 * x + 2] = (uint8_t)v;
	}
}

/* Write buf to a new file at path (created 0644, replaced if it exists). */
static int write_file(const char *path, const uint8_t *buf, size_t len, struct vt_error *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return vt_error_set(err, errno, path, "open", NULL);
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, buf + done, len - done);
		if (n < 0) {
			int e = errno;
			close(fd);
			return vt_error_set(err, e, path, "write", NULL);
		}
		done += (size_t)n;
	}
	if (close(fd) < 0)
		return vt_error_set(err, errno, path, "write", NULL);
	return 0;
}

static int write_ppm(const struct picture *s, const char *path, struct vt_error *err)
{
	char head[64];
	int hl = snprintf(head, sizeof(head), "P6\n%u %u\n255\n", s->width, s->height);
	size_t len = (size_t)hl + (size_t)s->width * s->height * 3;
	uint8_t *buf = malloc(len);

	if (!buf)
		return vt_error_set(err, ENOMEM, path, "screendump", NULL);
	memcpy(buf, head, (size_t)hl);
	for (uint32_t y = 0; y < s->height; y++)
		row_rgb(s, y, buf + hl + (size_t)y * s->width * 3);
	int ret = write_file(path, buf, len, err);
	free(buf);
	return ret;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

/* A chunk: length, type, data, CRC over type and data. */
static uint8_t *png_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t len)
{
	p = put32(p, len);
	memcpy(p, type, 4);
	if (len)
		memcpy(p + 4, data, len);
	uLong crc = crc32(0, p, len + 4);
	return put32(p + 4 + len, (uint32_t)crc);
}

static int write_png(const struct picture *s, const char *path, struct vt_error *err)
{
	size_t row = (size_t)s->width * 3 + 1;
	size_t raw_len = row * s->height;
	uint8_t *raw = malloc(raw_len ? raw_len : 1);
	uLongf z_len = compressBound((uLong)raw_len);
	uint8_t *out = malloc(z_len + 64);
	int ret;

	if (!raw || !out) {
		ret = vt_error_set(err, ENOMEM, path, "screendump", NULL);
		goto done;
	}
	for (uint32_t y = 0; y < s->height; y++) {
		raw[y * row] = 0; /* filter: none */
		row_rgb(s, y, raw + y * row + 1);
	}
	static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	uint8_t ihdr[13], *p = out;
	put32(ihdr, s->width);
	put32(ihdr + 4, s->height);
	ihdr[8] = 8;  /* bits per channel */
	ihdr[9] = 2;  /* RGB */
	ihdr[10] = ihdr[11] = ihdr[12] = 0;
	memcpy(p, sig, 8);
	p = png_chunk(p + 8, "IHDR", ihdr, 13);
	/* IDAT's data is compressed in place after its length and type. */
	uint8_t *idat = p;
	if (compress2(idat + 8, &z_len, raw, (uLong)raw_len, 6) != Z_OK) {
		ret = vt_error_set(err, EIO, path, "screendump", "compression failed");
		goto done;
	}
	put32(idat, (uint32_t)z_len);
	memcpy(idat + 4, "IDAT", 4);
	p = put32(idat + 8 + z_len, (uint32_t)crc32(0, idat + 4, (uInt)z_len + 4));
	p = png_chunk(p, "IEND", NULL, 0);
	ret = write_file(path, out, (size_t)(p - out), err);
done:
	free(raw);
	free(out);
	return ret;
}

int display_screendump(struct vm *vm, const char *path, const char *format,
                       struct vt_error *err)
{
	bool png;

	if (!format || !strcmp(format, "ppm"))
		png = false;
	else if (!strcmp(format, "png"))
		png = true;
	else
		return vt_error_set(err, EINVAL, "", NULL, "Parameter 'format' does not accept value "
		                    "'%s'", format);
	uint32_t *pixels;
	int w, h;
	int ret = vm ? display_snapshot(vm, &pixels, &w, &h) : -ENODEV;
	if (ret == -ENODEV)
		return vt_error_set(err, ENODEV, "", NULL,
		                    "There is no console to take a screendump from");
	if (ret)
		return vt_error_set(err, -ret, path, "screendump", NULL);
	struct picture pic = { pixels, (uint32_t)w, (uint32_t)h };
	ret = png ? write_png(&pic, path, err) : write_ppm(&pic, path, err);
	free(pixels);
	return ret;
}
