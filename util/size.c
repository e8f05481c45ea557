#include "util/size.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int suffix_shift(char c)
{
	switch (tolower((unsigned char)c)) {
	case 'b': return 0;
	case 'k': return 10;
	case 'm': return 20;
	case 'g': return 30;
	case 't': return 40;
	case 'p': return 50;
	case 'e': return 60;
	default: return -1;
	}
}

int vt_size_parse_max(const char *s, uint64_t default_unit, uint64_t max, uint64_t *out)
{
	const char *p = s;
	uint64_t integral = 0, mul = default_unit;
	double fraction = 0.0;
	int base = 10;

	if (!s)
		return -EINVAL;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '+')
		p++;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
		if (!isxdigit((unsigned char)*p))
			return -EINVAL;
	} else if (!isdigit((unsigned char)*p)) {
		return -EINVAL; /* also rejects '-' and ".5k", as qemu does */
	}
	/* Accumulate digits ourselves: strtoull would accept a sign and wrap silently. */
	bool too_big = false;
	for (; base == 16 ? isxdigit((unsigned char)*p) : isdigit((unsigned char)*p); p++) {
		unsigned d = isdigit((unsigned char)*p) ? (unsigned)(*p - '0')
		                                        : (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
		if (integral > (UINT64_MAX - d) / (uint64_t)base)
			too_big = true;
		else
			integral = integral * (uint64_t)base + d;
	}
	const char *frac_start = NULL;
	if (*p == '.') {
		if (base == 16)
			return -EINVAL;
		frac_start = p;
		p++;
		while (isdigit((unsigned char)*p))
			p++;
		/* qemu parses the fraction as a double; its rounding is part of the result. */
		char tmp[64];
		size_t n = (size_t)(p - frac_start);
		if (n >= sizeof(tmp))
			n = sizeof(tmp) - 1;
		memcpy(tmp, frac_start, n);
		tmp[n] = '\0';
		fraction = strtod(tmp, NULL);
	}
	if (*p) {
		int shift = suffix_shift(*p);
		if (shift < 0)
			return -EINVAL;
		mul = (uint64_t)1 << shift;
		p++;
	}
	if (*p)
		return -EINVAL;
	if (frac_start && mul == 1)
		return -EINVAL; /* "1.5" or "1.5b": a fraction of a byte */
	if (too_big || (mul > 1 && integral > UINT64_MAX / mul))
		return -ERANGE;
	uint64_t val = integral * mul;
	if (fraction > 0.0) {
		double extra = fraction * (double)mul;
		if (extra >= 18446744073709551616.0 || (uint64_t)extra > UINT64_MAX - val)
			return -ERANGE;
		val += (uint64_t)extra;
	}
	if (val > max)
		return -ERANGE;
	*out = val;
	return 0;
}

int vt_size_parse(const char *s, uint64_t default_unit, uint64_t *out)
{
	return vt_size_parse_max(s, default_unit, (uint64_t)INT64_MAX, out);
}

void vt_size_to_str(uint64_t size, char *buf, int len)
{
	static const char *const prefixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
	int exp;

	/* Same unit choice as qemu's size_to_str: switch units at 1000, not 1024, so a
	 * value never prints as four integer digits ("1000 KiB" shows as "0.977 MiB"). */
	frexp((double)size / (1000.0 / 1024.0), &exp);
	int i = (exp - 1) / 10;
	if (i < 0)
		i = 0;
	if (i > 6)
		i = 6;
	uint64_t div = (uint64_t)1 << (i * 10);
	snprintf(buf, (size_t)len, "%0.3g %sB", (double)size / (double)div, prefixes[i]);
}
