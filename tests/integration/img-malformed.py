#!/usr/bin/env python3
"""Malformed-image corpus: mutate every qcow2 header field and the first entries of the
L1, L2 and refcount tables of a small image that qemu wrote, then open, read and write
each mutant through vtool.

Verdicts, per mutant:
- vtool never dies from a signal (ASan/UBSan reports abort, so they count here too);
- when `qemu-img info` rejects the image, `vtool img info` rejects it too;
- every vtool failure is exactly one line on stderr starting with "vtool: ".
"""
import budget
import os
import shutil
import struct
import subprocess
import sys
import tempfile

VTOOL = os.environ["VTOOL"]
BLKIO = os.environ["BLKIO"]
tmp = tempfile.mkdtemp(prefix="vtool-malformed.")
passed = failed = 0


def run(*args):
    try:
        p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=20)
    except subprocess.TimeoutExpired:
        return -1000, "timed out after 20 s"
    return p.returncode, p.stderr


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}: {detail}")


def judge(name, path):
    if not budget.take():
        return
    qrc, _ = run("qemu-img", "info", "-f", "qcow2", path)
    for cmd in ([VTOOL, "img", "info", "-f", "qcow2", path],
                [BLKIO, "dump", path, "qcow2", os.path.join(tmp, "dump.raw"), str(16 << 20)],
                [BLKIO, "write", path, "qcow2", "/dev/null", "3", "4"]):
        rc, err = run(*cmd)
        what = f"{name}: {' '.join(os.path.basename(c) for c in cmd[:3])}"
        check(what, 0 <= rc < 128, f"killed by signal / sanitizer / hung (rc={rc}): {err[-800:]}")
        if rc != 0:
            lines = err.strip().splitlines()
            check(what, len(lines) == 1 and lines[0].startswith("vtool: "),
                  f"error is not one 'vtool:' line: {err[-400:]!r}")
        if cmd[1] == "img" and qrc != 0:
            check(what, rc != 0, "qemu-img rejects this image but vtool accepts it")


def main():
    base = os.path.join(tmp, "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k",
                    base, "4M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 16k", "-c", "write -P 0x6b 1M 8k",
                    base], check=True, capture_output=True)
    orig = open(base, "rb").read()
    l1_off = struct.unpack(">Q", orig[40:48])[0]
    rt_off = struct.unpack(">Q", orig[48:56])[0]
    l2_off = struct.unpack(">Q", orig[l1_off:l1_off + 8])[0] & 0x00fffffffffffe00
    rb_off = struct.unpack(">Q", orig[rt_off:rt_off + 8])[0]

    fields = [(4, 4), (8, 8), (16, 4), (20, 4), (24, 8), (32, 4), (36, 4), (40, 8),
              (48, 8), (56, 4), (60, 4), (64, 8), (72, 8), (80, 8), (88, 8), (96, 4),
              (100, 4), (104, 1)]
    mutants = []
    for off, size in fields:
        top = (1 << (8 * size)) - 1
        cur = int.from_bytes(orig[off:off + size], "big")
        for v in {x & top for x in (0, 1, top, top >> 1, cur ^ 0x200, cur + 8, 1 << 40)}:
            if v != cur:
                mutants.append((f"header@{off}={v:#x}", off, v.to_bytes(size, "big")))
    q = lambda v: struct.pack(">Q", v)
    for name, off, val in [
        ("L1[0] unaligned", l1_off, q((l2_off + 0x200) | 1 << 63)),
        ("L1[0] past EOF", l1_off, q(1 << 50 | 1 << 63)),
        ("L1[0] -> header", l1_off, q(0 | 1 << 63 | 0x1000 * 0)),
        ("L1[0] -> refcount table", l1_off, q(rt_off | 1 << 63)),
        ("L1[0] reserved bits", l1_off, q(l2_off | 1 << 63 | 0x7f << 56)),
        ("L2[0] -> header", l2_off, q(1 << 63 | 0)),
        ("L2[0] -> L1", l2_off, q(l1_off | 1 << 63)),
        ("L2[0] -> refblock", l2_off, q(rb_off | 1 << 63)),
        ("L2[0] unaligned", l2_off, q(0x10200 | 1 << 63)),
        ("L2[0] past EOF", l2_off, q(1 << 48 | 1 << 63)),
        ("L2[0] compressed huge", l2_off, q(1 << 62 | (0xf << 58) | (1 << 57))),
        ("L2[0] compressed garbage", l2_off, q(1 << 62 | 0x200)),
        ("L2[0] reserved bits", l2_off, q(0x10000 | 1 << 63 | 0x3f << 56)),
        ("reftable[0] unaligned", rt_off, q(rb_off + 0x100)),
        ("reftable[0] zero", rt_off, q(0)),
        ("reftable[0] past EOF", rt_off, q(1 << 45)),
        ("refblock all zero", rb_off, bytes(64)),
        ("refblock all max", rb_off, b"\xff" * 64),
    ]:
        mutants.append((name, off, val))

    img = os.path.join(tmp, "m.qcow2")
    for name, off, val in mutants:
        data = bytearray(orig)
        data[off:off + len(val)] = val
        open(img, "wb").write(data)
        judge(name, img)
    print(f"{len(mutants)} mutants")
    print(f"{passed} passed, {failed} failed")
    shutil.rmtree(tmp)
    return 1 if failed or not passed else 0


sys.exit(main())
