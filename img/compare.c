/* vtool img compare: qemu-img compare's semantics, messages and exit codes
 * (0 identical, 1 different, 2 open error, 3 block-status error, 4 read error). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"
#include "util/progress.h"

static const char compare_help[] =
	"Usage: vtool img compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U]\n"
	"                         filename1 filename2\n"
	"\n"
	"Compare the guest-visible contents of two images (qemu-img compare compatible).\n"
	"Unallocated and zero areas compare equal; images of different sizes are equal when\n"
	"the larger one's extra part reads as zeros.\n"
	"\n"
	"  -f fmt        format of filename1      -F fmt   format of filename2\n"
	"  -s            strict: sizes and allocation must match too\n"
	"  -p            show progress            -q       quiet\n"
	"  -T src_cache  cache mode               -U       force share (no locks)\n"
	"\n"
	"Exit status: 0 identical, 1 different (or a usage error), 2 open error, 3 block\n"
	"status error, 4 read error.\n"
	"\n"
	"Example:\n"
	"  vtool img compare disk.raw disk.qcow2\n";

#define CHUNK (1u << 20)

enum { SAME = 0, DIFFER = 1, ERR_OPEN = 2, ERR_STATUS = 3, ERR_READ = 4 };

/* First 512-byte sector at which a and b differ, or -1. */
static long long first_diff_sector(const uint8_t *a, const uint8_t *b, uint64_t n)
{
	for (uint64_t i = 0; i < n; i += 512) {
		uint64_t len = n - i < 512 ? n - i : 512;
		if (memcmp(a + i, b + i, len))
			return (long long)i;
	}
	return -1;
}

/* First 4 KiB chunk of buf holding a non-zero byte, or -1 (qemu's granularity here). */
static long long first_nonzero_chunk(const uint8_t *buf, uint64_t n)
{
	for (uint64_t i = 0; i < n; i += 4096) {
		uint64_t len = n - i < 4096 ? n - i : 4096;
		for (uint64_t k = 0; k < len; k++)
			if (buf[i + k])
				return (long long)i;
	}
	return -1;
}

/* The larger image's extra area must read as zeros. */
static int check_tail(struct blk *b, uint64_t from, uint8_t *buf, bool quiet,
                      struct vt_error *err)
{
	uint64_t size = blk_size(b);
	while (from < size) {
		struct blk_status st;
		if (blk_block_status(b, from, size - from, &st, err) < 0)
			return ERR_STATUS;
		if (!(st.flags & BLK_STATUS_ZERO)) {
			for (uint64_t off = from; off < from + st.len; off += CHUNK) {
				uint64_t n = from + st.len - off < CHUNK ? from + st.len - off : CHUNK;
				if (blk_pread(b, off, buf, n, err) < 0)
					return ERR_READ;
				long long at = first_nonzero_chunk(buf, n);
				if (at >= 0) {
					if (!quiet)
						printf("Content mismatch at offset %llu!\n",
						       (unsigned long long)off + (unsigned long long)at);
					return DIFFER;
				}
			}
		}
		from += st.len;
	}
	return SAME;
}

static int compare_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt1 = NULL, *fmt2 = NULL, *cache = "writeback";
	bool strict = false, quiet = false, share = false, progress = false;
	int c;

	while ((c = getopt_long(argc, argv, "hf:F:T:pqsU", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': fmt1 = optarg; break;
		case 'F': fmt2 = optarg; break;
		case 'T': cache = optarg; break;
		case 'p': progress = true; break;
		case 'q': quiet = true; break;
		case 's': strict = true; break;
		case 'U': share = true; break;
		default: return vt_usage_hint(argv[0]); /* 1, as qemu-img */
		}
	}
	if (argc - optind != 2) {
		return vt_usage_error(argv[0], "Expecting two image file names");
	}
	enum blk_cache mode;
	if (blk_cache_parse(cache, &mode) < 0) {
		return vt_usage_error(argv[0], "Invalid source cache option: %s", cache);
	}
	struct vt_error err = { 0 };
	struct blk *a = NULL, *b = NULL;
	struct blk_open_opts oa = { .format = fmt1, .cache = mode, .force_share = share };
	struct blk_open_opts ob = { .format = fmt2, .cache = mode, .force_share = share };
	if (blk_open(argv[optind], &oa, &a, &err) < 0 || blk_open(argv[optind + 1], &ob, &b, &err) < 0) {
		img_fail(&err);
		blk_close(a, NULL);
		return ERR_OPEN;
	}
	uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
	uint64_t sa = blk_size(a), sb = blk_size(b), common = sa < sb ? sa : sb;
	int rc = SAME;
	struct vt_progress pr;
	vt_progress_init(&pr, progress && !quiet ? VT_PROGRESS_QEMU : VT_PROGRESS_NONE, stdout,
	                 sa > sb ? sa : sb);

	if (!ba || !bb) {
		vt_error_set(&err, 12, argv[optind], "compare", NULL);
		rc = ERR_READ;
	}
	if (rc == SAME && strict && sa != sb) {
		if (!quiet)
			printf("Strict mode: Image size mismatch!\n");
		rc = DIFFER;
	}
	for (uint64_t off = 0; rc == SAME && off < common;) {
		struct blk_status s1, s2;
		uint64_t n = common - off < CHUNK ? common - off : CHUNK;
		if (blk_block_status(a, off, n, &s1, &err) < 0 ||
		    blk_block_status(b, off, n, &s2, &err) < 0) {
			rc = ERR_STATUS;
			break;
		}
		n = s1.len < s2.len ? s1.len : s2.len;
		unsigned mask = BLK_STATUS_ALLOCATED | BLK_STATUS_ZERO | BLK_STATUS_DATA |
		                BLK_STATUS_OFFSET_VALID;
		if (strict && (s1.flags & mask) != (s2.flags & mask)) {
			if (!quiet)
				printf("Strict mode: Offset %llu block status mismatch!\n",
				       (unsigned long long)off);
			rc = DIFFER;
			break;
		}
		if (!((s1.flags & BLK_STATUS_ZERO) && (s2.flags & BLK_STATUS_ZERO))) {
			if (blk_pread(a, off, ba, n, &err) < 0 || blk_pread(b, off, bb, n, &err) < 0) {
				rc = ERR_READ;
				break;
			}
			long long at = first_diff_sector(ba, bb, n);
			if (at >= 0) {
				if (!quiet)
					printf("Content mismatch at offset %llu!\n",
					       (unsigned long long)off + (unsigned long long)at);
				rc = DIFFER;
				break;
			}
		}
		off += n;
		vt_progress_update(&pr, off);
	}
	if (rc == SAME && sa != sb) {
		if (!quiet)
			printf("Warning: Image size mismatch!\n");
		rc = check_tail(sa > sb ? a : b, common, ba, quiet, &err);
	}
	if (rc == SAME) {
		vt_progress_finish(&pr);
		if (!quiet)
			printf("Images are identical.\n");
	} else if (rc > DIFFER) {
		img_fail(&err);
	}
	free(ba);
	free(bb);
	blk_close(a, NULL);
	blk_close(b, NULL);
	return rc;
}

const struct vt_command vt_cmd_img_compare = {
	.group = "img",
	.name = "compare",
	.summary = "check whether two images have the same contents",
	.help = compare_help,
	.main = compare_main,
};
