#!/usr/bin/env python3
"""sparse-cmp.py A B: exit 0 when the two files have the same size and bytes, 1 when not.

Like `cmp -s`, but reads only where either file has data (SEEK_DATA/SEEK_HOLE): holes
read as zeros, so comparing two mostly-sparse 2 GiB images takes milliseconds, not the
seconds `cmp` spends reading zeros.
"""
import os
import sys


def data_ranges(fd, size):
    out, off = [], 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after off
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        off = end
    return out


def main(a, b):
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    size = os.fstat(fa).st_size
    if os.fstat(fb).st_size != size:
        return 1
    ranges = sorted(data_ranges(fa, size) + data_ranges(fb, size))
    merged = []
    for s, e in ranges:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    for s, e in merged:
        while s < e:
            n = min(e - s, 1 << 20)
            if os.pread(fa, n, s) != os.pread(fb, n, s):
                return 1
            s += n
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
