#!/usr/bin/env python3
"""VDI malformed-image corpus and check, against qemu-img.

A small VDI that qemu wrote out of order is mutated: every header field (several values
each), block map entries (out of range, duplicated, discarded, huge), and truncations.
Verdicts, per mutant:
- no vtool command dies from a signal (ASan/UBSan abort counts) or hangs;
- every vtool failure is exactly one line on stderr starting with "vtool: ";
- when `qemu-img info` rejects the image, `vtool img info` rejects it too;
- when both accept it, `vtool img convert -O raw` gives qemu-img convert's bytes, and
  `vtool img check` gives qemu-img check's exit status, counts and ERROR lines;
- vtool refuses an image qemu accepts only for a reason vtool documents (a block map
  that extends past the end of the file);
- writes through vtool (blkio) never leave more corruptions than the image had.
Run it against the sanitizer build too: VTOOL=build-asan/cli/vtool BLKIO=build-asan/tests/blkio.
"""
import budget
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

VTOOL = os.environ["VTOOL"]
BLKIO = os.environ["BLKIO"]
tmp = tempfile.mkdtemp(prefix="vtool-vdi.")
passed = failed = 0
VTOOL_ONLY_REFUSALS = ("extends past the end of the file",)


def run(*args, timeout=30):
    try:
        p = subprocess.run(args, capture_output=True, text=True, errors="replace",
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1000, "", "timed out"
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}: {detail}")


def sane(name, rc, err):
    """No signal, no hang; a failure is one 'vtool:' line."""
    check(f"{name}: no crash/hang", 0 <= rc < 128, f"rc={rc}: {err[-600:]}")
    if rc not in (0, 2, 3, 63) and 0 <= rc < 128:
        lines = err.strip().splitlines()
        check(f"{name}: one-line error", len(lines) == 1 and lines[0].startswith("vtool: "),
              repr(err[-400:]))


def error_lines(err):
    return [l for l in err.splitlines() if l.startswith("ERROR")]


def check_json(out):
    try:
        d = json.loads(out)
    except ValueError:
        return None
    return {k: d.get(k, 0) for k in ("corruptions", "leaks", "check-errors")}


def judge(name, path):
    if not budget.take():
        return
    qrc, _, qerr = run("qemu-img", "info", "-f", "vdi", path)
    vrc, _, verr = run(VTOOL, "img", "info", "-f", "vdi", path)
    sane(f"{name}: info", vrc, verr)
    if qrc != 0:
        check(f"{name}: qemu refuses, vtool too", vrc != 0, "vtool accepts it")
    elif vrc != 0:
        check(f"{name}: vtool refuses only what it documents",
              any(r in verr for r in VTOOL_ONLY_REFUSALS), f"qemu accepts; vtool: {verr}")

    # Reading: the same bytes as qemu-img convert.
    vout, qout = os.path.join(tmp, "v.raw"), os.path.join(tmp, "q.raw")
    for p in (vout, qout):
        if os.path.exists(p):
            os.unlink(p)
    vrc2, _, verr2 = run(VTOOL, "img", "convert", "-f", "vdi", "-O", "raw", path, vout)
    sane(f"{name}: convert", vrc2, verr2)
    if vrc == 0 and qrc == 0:
        qrc2, _, _ = run("qemu-img", "convert", "-f", "vdi", "-O", "raw", path, qout)
        if qrc2 == 0:
            same = vrc2 == 0 and open(vout, "rb").read() == open(qout, "rb").read()
            check(f"{name}: convert bytes", same, f"vtool rc={vrc2} {verr2.strip()}")

    # check: same verdict, counts and diagnostics.
    vrc3, vout3, verr3 = run(VTOOL, "img", "check", "-f", "vdi", "--output=json", path)
    sane(f"{name}: check", vrc3, verr3)
    qrc3, qout3, qerr3 = run("qemu-img", "check", "-f", "vdi", "--output=json", path)
    before = check_json(qout3)
    if vrc == 0 and qrc == 0:
        check(f"{name}: check rc", vrc3 == qrc3, f"vtool {vrc3}, qemu {qrc3}: {verr3} / {qerr3}")
        check(f"{name}: check counts", check_json(vout3) == before, f"{vout3} vs {qout3}")
        check(f"{name}: check lines", error_lines(verr3) == error_lines(qerr3),
              f"{error_lines(verr3)} vs {error_lines(qerr3)}")

    # Writing through vtool never makes it worse.
    w = os.path.join(tmp, "w.vdi")
    shutil.copy(path, w)
    rc, _, err = run(BLKIO, "write", w, "vdi", "/dev/null", "5", "6")
    sane(f"{name}: write", rc, err)
    if rc == 0 and before is not None:
        _, out, _ = run("qemu-img", "check", "-f", "vdi", "--output=json", w)
        after = check_json(out)
        check(f"{name}: writes add no corruption",
              after is not None and after["corruptions"] <= before["corruptions"],
              f"{before} -> {after}")


def main():
    base = os.path.join(tmp, "base.vdi")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", base, "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "vdi", "-c", "write -P 0x5a 2M 64k",
                    "-c", "write -P 0x6b 0 100k", "-c", "write -P 0x7c 3700k 4k", base],
                   check=True, capture_output=True)
    orig = open(base, "rb").read()
    bmap = struct.unpack("<I", orig[0x154:0x158])[0]

    mutants = []
    fields = [(0x40, 4), (0x44, 4), (0x48, 4), (0x4c, 4), (0x50, 4), (0x154, 4), (0x158, 4),
              (0x168, 4), (0x170, 8), (0x178, 4), (0x17c, 4), (0x180, 4), (0x184, 4),
              (0x1a8, 4), (0x1b8, 4)]
    for off, size in fields:
        top = (1 << (8 * size)) - 1
        cur = int.from_bytes(orig[off:off + size], "little")
        vals = {0, 1, top, top >> 1, cur ^ 0x200, cur + 8, cur * 2, cur - 1, 1 << 30, 0x1fffff80}
        for v in sorted({x & top for x in vals}):
            if v != cur:
                mutants.append((f"header@{off:#x}={v:#x}", [(off, v.to_bytes(size, "little"))]))
    le = lambda v: struct.pack("<I", v)
    for name, edits in [
        ("bmap[0] unallocated", [(bmap, le(0xffffffff))]),
        ("bmap[0] discarded", [(bmap, le(0xfffffffe))]),
        ("bmap[0] = blocks_allocated", [(bmap, le(3))]),
        ("bmap[0] = blocks_in_image", [(bmap, le(4))]),
        ("bmap[0] huge", [(bmap, le(0x3fffffff))]),
        ("bmap[0] largest", [(bmap, le(0xfffffffd))]),
        ("bmap[1] duplicate of bmap[2]", [(bmap + 4, orig[bmap + 8:bmap + 12])]),
        ("bmap[1] duplicate, count fixed", [(bmap + 4, orig[bmap + 8:bmap + 12]),
                                            (0x184, le(4))]),
        ("count too high", [(0x184, le(4))]),
        ("count too low", [(0x184, le(1))]),
        ("static type, dynamic map", [(0x4c, le(2))]),
        ("data over the map", [(0x158, le(0x200))]),
        ("map over the header", [(0x154, le(0))]),
        ("bmap padding garbage", [(bmap + 16, b"\x07" * 16)]),
    ]:
        mutants.append((name, edits))

    img = os.path.join(tmp, "m.vdi")
    for name, edits in mutants:
        data = bytearray(orig)
        for off, val in edits:
            data[off:off + len(val)] = val
        open(img, "wb").write(data)
        judge(name, img)
    for cut in (0, 10, 100, 511, 512, 513, 600, 1023, 1024, 1024 + 100 * 1024, len(orig) - 1):
        open(img, "wb").write(orig[:cut])
        judge(f"truncated at {cut}", img)
    # A static image whose file is cut short: the missing tail reads zeros, as in qemu.
    st = os.path.join(tmp, "st.vdi")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", "-o", "static=on", st, "3M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "vdi", "-c", "write -P 1 0 2M", st], check=True,
                   capture_output=True)
    sdata = open(st, "rb").read()
    open(img, "wb").write(sdata[:len(sdata) // 2])
    judge("static, file cut in half", img)
    print(f"{len(mutants) + 12} mutants")
    print(f"{passed} checks passed, {failed} failed")
    shutil.rmtree(tmp)
    return 1 if failed or not passed else 0


sys.exit(main())
