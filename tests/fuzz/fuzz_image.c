/* libFuzzer target: an untrusted image of one format (FUZZ_FORMAT, set per binary) goes
 * through everything vtool does with images it did not make: open (header and table
 * parsing), info, block status over the whole disk, reads of what is mapped, check, and
 * on a second, writable copy a few writes, a discard and a flush. Anything the parsers
 * let through must be handled without touching memory out of bounds (the build adds
 * ASan/UBSan) or running away; errors are fine. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blk/blk.h"

#ifndef FUZZ_FORMAT
#error "build with -DFUZZ_FORMAT=\"fmt\""
#endif

/* Reads stop after this much guest data: a fuzzed header may claim a huge disk. */
#define READ_BUDGET (4u << 20)
#define STATUS_STEPS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int image_fd(const uint8_t *data, size_t size, char *path, size_t plen)
{
	int fd = memfd_create("fuzz-image", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return -1;
	}
	snprintf(path, plen, "/proc/self/fd/%d", fd);
	return fd;
}

static void walk(struct blk *b)
{
	static uint8_t buf[65536];
	uint64_t off = 0, size = blk_size(b), budget = READ_BUDGET;
	struct vt_error err;
	for (int i = 0; i < STATUS_STEPS && off < size && budget; i++) {
		struct blk_status st;
		if (blk_block_status(b, off, size - off, &st, &err) < 0 || !st.len)
			break;
		if (st.flags & BLK_STATUS_DATA) {
			size_t n = st.len < sizeof(buf) ? (size_t)st.len : sizeof(buf);
			if (blk_pread(b, off, buf, n, &err) < 0)
				break;
			budget = budget > n ? budget - n : 0;
		}
		off += st.len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64];
	struct vt_error err;
	struct blk *b;
	int fd = image_fd(data, size, path, sizeof(path));
	if (fd < 0)
		return 0;

	struct blk_open_opts ro = { .format = FUZZ_FORMAT, .no_backing = true, .for_check = true };
	if (blk_open(path, &ro, &b, &err) == 0) {
		struct blk_info info;
		if (blk_get_info(b, &info, &err) == 0)
			blk_info_free(&info);
		walk(b);
		struct blk_check res;
		blk_check(b, 0, &res, NULL, NULL, &err);
		blk_close(b, NULL);
	}

	struct blk_open_opts rw = { .format = FUZZ_FORMAT, .no_backing = true, .writable = true };
	if (blk_open(path, &rw, &b, &err) == 0) {
		static const uint8_t pattern[4096] = { 0xa5 };
		uint64_t vs = blk_size(b);
		if (vs >= sizeof(pattern)) {
			blk_pwrite(b, 0, pattern, sizeof(pattern), &err);
			blk_pwrite(b, vs / 2 & ~511ull, pattern, 512, &err);
			blk_discard(b, 0, vs < 65536 ? vs : 65536, &err);
			blk_pwrite(b, vs - 512, pattern, 512, &err);
		}
		blk_flush(b, &err);
		blk_close(b, NULL);
	}
	close(fd);
	return 0;
}
