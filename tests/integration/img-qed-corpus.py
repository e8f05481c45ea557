#!/usr/bin/env python3
"""QED malformed-image corpus, check and repair, against qemu-img and qemu-io.

A small QED that qemu wrote (4 KiB clusters, data, a zero cluster, two L2 tables) is
mutated: every header field (several values each), L1 and L2 entries (unaligned, past the
end of the file, into the header or the tables, shared, the zero marker), the need-check
flag over damage, backing file name fields, truncations. Verdicts, per mutant:
- no vtool command dies from a signal (ASan/UBSan abort counts) or hangs;
- every vtool failure is exactly one line on stderr starting with "vtool: ";
- when `qemu-img info` rejects the image, `vtool img info` rejects it too, and vtool
  refuses nothing qemu accepts;
- when both accept it: `vtool img convert -O raw` gives qemu-img convert's bytes (or both
  fail), `vtool img check` gives qemu-img check's exit status and counts, `vtool img check
  -r all` repairs to the very bytes `qemu-img check -r all` leaves, and a read-write open
  (the need-check repair) leaves the bytes a qemu-io open leaves;
- writes through vtool never leave more corruptions than the image had.
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
tmp = tempfile.mkdtemp(prefix="vtool-qed.")
passed = failed = 0
CS = 4096
VTOOL_ONLY_WRITE_REFUSAL = "cannot write this QED image safely"


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
    check(f"{name}: no crash/hang", 0 <= rc < 128, f"rc={rc}: {err[-600:]}")
    if rc not in (0, 2, 3, 63) and 0 <= rc < 128:
        lines = err.strip().splitlines()
        check(f"{name}: one-line error", len(lines) == 1 and lines[0].startswith("vtool: "),
              repr(err[-400:]))


def counts(out):
    try:
        d = json.loads(out)
    except ValueError:
        return None
    d.pop("filename", None)
    return d


def copy(src, name):
    dst = os.path.join(tmp, name)
    shutil.copy(src, dst)
    return dst


def judge(name, path):
    if not budget.take():
        return
    qrc, _, qerr = run("qemu-img", "info", "-f", "qed", path)
    vrc, _, verr = run(VTOOL, "img", "info", "-f", "qed", path)
    sane(f"{name}: info", vrc, verr)
    check(f"{name}: info verdict", (vrc == 0) == (qrc == 0),
          f"vtool rc {vrc} ({verr.strip()}), qemu rc {qrc} ({qerr.strip()})")
    if qrc != 0:
        return

    vout, qout = os.path.join(tmp, "v.raw"), os.path.join(tmp, "q.raw")
    for p in (vout, qout):
        if os.path.exists(p):
            os.unlink(p)
    vrc2, _, verr2 = run(VTOOL, "img", "convert", "-f", "qed", "-O", "raw", path, vout)
    sane(f"{name}: convert", vrc2, verr2)
    qrc2, _, _ = run("qemu-img", "convert", "-f", "qed", "-O", "raw", path, qout)
    check(f"{name}: convert verdict", (vrc2 == 0) == (qrc2 == 0), f"vtool {vrc2} {verr2}, qemu {qrc2}")
    if vrc2 == 0 and qrc2 == 0:
        check(f"{name}: convert bytes", open(vout, "rb").read() == open(qout, "rb").read())

    vrc3, vout3, verr3 = run(VTOOL, "img", "check", "-f", "qed", "--output=json", path)
    sane(f"{name}: check", vrc3, verr3)
    qrc3, qout3, qerr3 = run("qemu-img", "check", "-f", "qed", "--output=json", path)
    check(f"{name}: check rc", vrc3 == qrc3, f"vtool {vrc3}, qemu {qrc3}: {verr3} / {qerr3}")
    check(f"{name}: check counts", counts(vout3) == counts(qout3), f"{vout3} vs {qout3}")

    # check -r all: the same repair, byte for byte.
    v, q = copy(path, "rv.qed"), copy(path, "rq.qed")
    vrc4, vout4, verr4 = run(VTOOL, "img", "check", "-r", "all", "-f", "qed", "--output=json", v)
    sane(f"{name}: check -r", vrc4, verr4)
    qrc4, qout4, _ = run("qemu-img", "check", "-r", "all", "-f", "qed", "--output=json", q)
    check(f"{name}: check -r rc", vrc4 == qrc4, f"vtool {vrc4} {verr4}, qemu {qrc4}")
    check(f"{name}: check -r counts", counts(vout4) == counts(qout4), f"{vout4} vs {qout4}")
    check(f"{name}: check -r bytes", open(v, "rb").read() == open(q, "rb").read())

    # A read-write open: the need-check repair (and autoclear reset), as qemu-io's.
    v, q = copy(path, "ov.qed"), copy(path, "oq.qed")
    vrc5, _, verr5 = run(BLKIO, "hold", v, "qed", "0")
    sane(f"{name}: open rw", vrc5, verr5)
    qrc5, _, qerr5 = run("qemu-io", "-f", "qed", "-c", "flush", q)
    qrc5 = 1 if qrc5 or "can't open" in qerr5 else 0
    # vtool alone refuses to write where tables overlap (qemu would write over them).
    refused = vrc5 != 0 and VTOOL_ONLY_WRITE_REFUSAL in verr5
    check(f"{name}: open rw verdict", (vrc5 == 0) == (qrc5 == 0) or refused,
          f"vtool {vrc5} {verr5}, qemu {qerr5}")
    if vrc5 == 0 and qrc5 == 0:
        check(f"{name}: open rw bytes", open(v, "rb").read() == open(q, "rb").read())

    # Writing through vtool never makes it worse.
    w = copy(path, "w.qed")
    before = counts(qout3)
    rc, _, err = run(BLKIO, "write", w, "qed", "/dev/null", "5", "6")
    sane(f"{name}: write", rc, err)
    if rc == 0 and before is not None:
        _, out, _ = run("qemu-img", "check", "-f", "qed", "--output=json", w)
        after = counts(out)
        check(f"{name}: writes add no corruption",
              after is not None and after.get("corruptions", 0) <= before.get("corruptions", 0),
              f"{before} -> {after}")


def main():
    base = os.path.join(tmp, "base.qed")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qed", "-o", "cluster_size=4k",
                    base, "12M"], check=True)
    subprocess.run(["qemu-io", "-f", "qed", "-c", "write -P 0x5a 0 16k",
                    "-c", "write -P 0x6b 1M 8k", "-c", "write -z 2M 4k",
                    "-c", "write -P 0x7c 9M 4k", base], check=True, capture_output=True)
    orig = open(base, "rb").read()
    q = lambda v: struct.pack("<Q", v)
    l1 = struct.unpack("<Q", orig[40:48])[0]
    l2a = struct.unpack("<Q", orig[l1:l1 + 8])[0]        # covers 0..8 MiB
    l2b = struct.unpack("<Q", orig[l1 + 8:l1 + 16])[0]   # covers 8..16 MiB
    d0 = struct.unpack("<Q", orig[l2a:l2a + 8])[0]       # data of guest cluster 0
    d1 = struct.unpack("<Q", orig[l2a + 8:l2a + 16])[0]
    end = len(orig)

    mutants = []
    fields = [(0, 4), (4, 4), (8, 4), (12, 4), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8),
              (56, 4), (60, 4)]
    for off, size in fields:
        top = (1 << (8 * size)) - 1
        cur = int.from_bytes(orig[off:off + size], "little")
        vals = {0, 1, 2, 4, top, top >> 1, cur ^ 0x200, cur + 8, cur * 2, cur - 1, 1 << 40,
                0x1000, 0x10000}
        for v in sorted({x & top for x in vals}):
            if v != cur:
                mutants.append((f"header@{off}={v:#x}", [(off, v.to_bytes(size, "little"))]))
    need = lambda: (16, q(2))
    for name, edits in [
        ("L1[0] unaligned", [(l1, q(l2a + 512))]),
        ("L1[0] past EOF", [(l1, q(end + CS))]),
        ("L1[0] -> header", [(l1, q(0))]),
        ("L1[0] = 1", [(l1, q(1))]),
        ("L1[0] -> L1", [(l1, q(l1))]),
        ("L1[0] -> L2 of L1[1]", [(l1, q(l2b))]),
        ("L1[0] huge", [(l1, q(1 << 62))]),
        ("L1[0] straddles EOF", [(l1, q(end - CS))]),
        ("L2[0] past EOF", [(l2a, q(end + CS))]),
        ("L2[0] unaligned", [(l2a, q(d0 + 512))]),
        ("L2[0] -> header", [(l2a, q(0x1000 * 0 + CS * 0))]),
        ("L2[0] -> L1", [(l2a, q(l1))]),
        ("L2[0] -> its own table", [(l2a, q(l2a))]),
        ("L2[0] -> other L2", [(l2a, q(l2b))]),
        ("L2[1] = L2[0] (shared)", [(l2a + 8, q(d0))]),
        ("L2[0] zero marker", [(l2a, q(1))]),
        ("L2[0] huge", [(l2a, q(1 << 63))]),
        ("L2[1] run past EOF", [(l2a + 8, q(end))]),
        ("need check + L2 past EOF", [need(), (l2a, q(end + CS))]),
        ("need check + L1 past EOF", [need(), (l1, q(end + CS))]),
        ("need check + shared", [need(), (l2a + 8, q(d0))]),
        ("need check + leak", [need()] + [(end, bytes(CS))]),
        ("need check, clean", [need()]),
        ("autoclear set", [(32, q(0xff))]),
        ("backing name outside the header", [(16, q(1)), (56, struct.pack("<I", 4090)),
                                             (60, struct.pack("<I", 100))]),
        ("backing name 5000 bytes", [(16, q(1)), (12, struct.pack("<I", 2)),
                                     (56, struct.pack("<I", 64)), (60, struct.pack("<I", 5000))]),
    ]:
        mutants.append((name, edits))

    img = os.path.join(tmp, "m.qed")
    for name, edits in mutants:
        data = bytearray(orig)
        for off, val in edits:
            if off >= len(data):
                data += val
            else:
                data[off:off + len(val)] = val
        open(img, "wb").write(data)
        judge(name, img)
    cuts = (0, 10, 63, 64, CS - 1, CS, l1 + 100, l2a, l2a + CS, d1, d1 + 100, end - 1)
    for cut in cuts:
        open(img, "wb").write(orig[:cut])
        judge(f"truncated at {cut}", img)
    print(f"{len(mutants) + len(cuts)} mutants")
    print(f"{passed} checks passed, {failed} failed")
    shutil.rmtree(tmp)
    return 1 if failed or not passed else 0


sys.exit(main())
