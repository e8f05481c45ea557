/* Size strings the way qemu parses them ("8G", "512M", "1.5G", "100k", "4096", "0x1000").
 *
 * Suffixes b/B (bytes), k/K, m/M, g/G, t/T, p/P, e/E are powers of 1024. A fraction is
 * allowed only with a suffix larger than bytes ("1.5G" ok, "1.5" rejected), hex numbers
 * take no fraction. Leading white space and '+' are accepted like strtoull; anything
 * after the suffix is rejected. Results above INT64_MAX are out of range, as in qemu-img. */
#ifndef VTOOL_UTIL_SIZE_H
#define VTOOL_UTIL_SIZE_H

#include <stdint.h>

/* Parse s. default_unit is the multiplier when no suffix is given: 1 for image sizes,
 * 1 << 20 for qemu's -m. Returns 0, -EINVAL (not a size) or -ERANGE (too large). */
int vt_size_parse(const char *s, uint64_t default_unit, uint64_t *out);
/* The same with another upper bound (qemu's size parameters take up to 2^64 - 1). */
int vt_size_parse_max(const char *s, uint64_t default_unit, uint64_t max, uint64_t *out);

/* The messages qemu-img prints for the two failures of an image size. */
#define VT_SIZE_EINVAL_MSG \
	"Invalid image size specified. You may use k, M, G, T, P or E suffixes for " \
	"kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
#define VT_SIZE_ERANGE_MSG \
	"Invalid image size specified. Must be between 0 and 9223372036854775807."

/* Human form with a binary suffix and up to 3 significant decimals, like qemu's
 * size_to_str: "8 GiB", "1.5 MiB", "512 B". buf needs at least 16 bytes. */
void vt_size_to_str(uint64_t size, char *buf, int len);

#endif
