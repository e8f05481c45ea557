#!/usr/bin/env python3
"""Malformed VMDK corpus: mutate every header field, grain directory and grain table
entries, grain markers and deflate streams of small images qemu wrote (monolithicSparse,
zeroed-grain, streamOptimized), truncate them, and feed hand-written descriptors with
bad, huge, missing, hostile (FIFO, device, directory, nested) or too many extents and
broken CID / parent lines. Each mutant is opened, read and written through vtool.

Verdicts, per mutant:
- vtool never dies from a signal (ASan/UBSan reports abort, so they count here too) and
  never hangs (20 s);
- every vtool failure is exactly one line on stderr starting with "vtool: ";
- when `qemu-img info` rejects the image, `vtool img info` rejects it too; when qemu-img
  cannot convert it to raw (a small image), vtool cannot either.
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
tmp = tempfile.mkdtemp(prefix="vtool-vmdk-malformed.")
passed = failed = 0


def run(*args):
    try:
        p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=20,
                           stdin=subprocess.DEVNULL)
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


def one_line(what, rc, err):
    check(what, 0 <= rc < 128, f"killed by signal / sanitizer / hung (rc={rc}): {err[-800:]}")
    if rc != 0:
        lines = err.strip().splitlines()
        check(what, len(lines) == 1 and lines[0].startswith("vtool: "),
              f"error is not one 'vtool:' line: {err[-400:]!r}")


def judge(name, path):
    if not budget.take():
        return
    try:
        q = subprocess.run(["qemu-img", "info", "--output=json", "-f", "vmdk", path],
                           capture_output=True, text=True, errors="replace", timeout=5,
                           stdin=subprocess.DEVNULL)
        qrc, qinfo = q.returncode, q.stdout
    except subprocess.TimeoutExpired:
        # A FIFO extent: qemu-img waits on it for ever (a refusal, in effect). Anything
        # else that slow (3000 extents take qemu-img ~5 s) gives no verdict.
        qrc, qinfo = (-1000 if "fifo" in name else None), ""
    rc, err = run(VTOOL, "img", "info", "-f", "vmdk", path)
    one_line(f"{name}: info", rc, err)
    if qrc is not None and qrc != 0:
        check(f"{name}: info", rc != 0, "qemu-img rejects this image but vtool accepts it")
    for cmd in ([BLKIO, "dump", path, "vmdk", os.path.join(tmp, "dump.raw"), str(16 << 20)],
                [BLKIO, "write", path, "vmdk", "/dev/null", "3", "4"],
                [VTOOL, "img", "check", "-f", "vmdk", path],
                [VTOOL, "img", "map", "-f", "vmdk", "--output=json", path]):
        rc, err = run(*cmd)
        what = f"{name}: {' '.join(os.path.basename(c) for c in cmd[:3])}"
        check(what, 0 <= rc < 128, f"killed by signal / sanitizer / hung (rc={rc}): {err[-800:]}")
        if rc != 0 and cmd[0] == VTOOL and "check" not in cmd:
            one_line(what, rc, err)
    if qrc == 0:
        try:
            vsize = json.loads(qinfo)["virtual-size"]
        except (ValueError, KeyError):
            return
        if vsize <= 64 << 20:
            qout, vout = os.path.join(tmp, "q.raw"), os.path.join(tmp, "v.raw")
            qrc, _ = run("qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, qout)
            rc, err = run(VTOOL, "img", "convert", "-f", "vmdk", "-O", "raw", path, vout)
            one_line(f"{name}: convert", rc, err)
            if qrc != 0:
                check(f"{name}: convert", rc != 0, "qemu-img cannot read this image but vtool can")
            for f in (qout, vout):
                if os.path.exists(f):
                    os.unlink(f)


def make(name, *cmds):
    path = os.path.join(tmp, name)
    for c in cmds:
        subprocess.run([a.replace("@", path) for a in c], check=True, capture_output=True)
    return open(path, "rb").read()


def mutate_sparse(label, orig, extra):
    """Header fields, the first GD/RGD/GT entries, truncations."""
    img = os.path.join(tmp, "m.vmdk")
    fields = [(4, 4), (8, 4), (12, 8), (20, 8), (28, 8), (36, 8), (44, 4), (48, 8), (56, 8),
              (64, 8), (77, 2)]
    mutants = []
    for off, size in fields:
        top = (1 << (8 * size)) - 1
        cur = int.from_bytes(orig[off:off + size], "little")
        for v in {x & top for x in (0, 1, 2, 3, 4, top, top >> 1, cur ^ 0x200, cur + 8,
                                    cur * 2, 1 << 40, 0x200001, 4097)}:
            if v != cur:
                mutants.append((f"{label} header@{off}={v:#x}", off, v.to_bytes(size, "little")))
    rgd = struct.unpack("<Q", orig[48:56])[0]
    gd = struct.unpack("<Q", orig[56:64])[0]
    gt = struct.unpack("<I", orig[gd * 512:gd * 512 + 4])[0]
    rgt = struct.unpack("<I", orig[rgd * 512:rgd * 512 + 4])[0]
    le = lambda v: struct.pack("<I", v)
    for what, base in (("GD", gd), ("RGD", rgd)):
        for v in (0, 1, 2, gd, rgd, len(orig) // 512, len(orig) // 512 - 1, 0xffffffff):
            mutants.append((f"{label} {what}[0]={v:#x}", base * 512, le(v)))
    for what, base in (("GT", gt), ("RGT", rgt)):
        for i in (0, 1, 16):
            for v in (1, 2, gd, rgd, gt, len(orig) // 512, len(orig) // 512 - 1, 0xffffffff, 127):
                mutants.append((f"{label} {what}[{i}]={v:#x}", base * 512 + 4 * i, le(v)))
    mutants += extra
    for name, off, val in mutants:
        data = bytearray(orig)
        data[off:off + len(val)] = val
        open(img, "wb").write(data)
        judge(name, img)
    for cut in (3, 4, 100, 511, 512, 600, 10752, 65536, len(orig) - 1000, len(orig) - 1):
        if 0 < cut < len(orig):
            open(img, "wb").write(orig[:cut])
            judge(f"{label} truncated to {cut}", img)
    return len(mutants)


def stream_extra(orig):
    """Grain markers and deflate streams of a stream image."""
    gd = struct.unpack("<Q", orig[56:64])[0]
    gt = struct.unpack("<I", orig[gd * 512:gd * 512 + 4])[0]
    grains = [v for v in struct.unpack("<512I", orig[gt * 512:gt * 512 + 2048]) if v > 1]
    out = []
    for k, sector in enumerate(grains[:3]):
        pos = sector * 512
        for v in (0, 1, 11, 0x20001, 0x7fffffff, 0xffffffff):
            out.append((f"stream marker{k} size={v:#x}", pos + 8, struct.pack("<I", v)))
        out.append((f"stream marker{k} lba", pos, struct.pack("<Q", 1 << 60)))
        out.append((f"stream grain{k} zlib header", pos + 12, b"\x00\x00"))
        out.append((f"stream grain{k} deflate body", pos + 20, b"\xff" * 64))
        out.append((f"stream grain{k} truncated stream", pos + 8, struct.pack("<I", 30)))
    return out


def descriptors():
    """Hand-written descriptors next to real extents."""
    d = os.path.join(tmp, "desc")
    os.makedirs(d)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat",
                    os.path.join(d, "x.vmdk"), "1M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", os.path.join(d, "sp.vmdk"), "1M"],
                   check=True)
    os.mkfifo(os.path.join(d, "fifo"))
    os.mkdir(os.path.join(d, "dir"))
    nested = bytearray(open(os.path.join(d, "sp.vmdk"), "rb").read())
    nested[12:20] = bytes(8)  # capacity 0 + a descriptor: a nested descriptor
    open(os.path.join(d, "nested.vmdk"), "wb").write(nested)
    head = 'version=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
    ok = 'RW 2048 FLAT "x-flat.vmdk" 0\n'
    cases = {
        "no createType": 'version=1\nCID=1\nparentCID=ffffffff\n' + ok,
        "createType custom": head.replace("monolithicFlat", "custom") + ok,
        "createType unterminated": 'version=1\nCID=1\nparentCID=ffffffff\ncreateType="mono',
        "createType empty": head.replace('"monolithicFlat"', '""') + ok,
        "no extents": head,
        "RDONLY only": head + 'RDONLY 2048 FLAT "x-flat.vmdk" 0\n',
        "flat no offset": head + 'RW 2048 FLAT "x-flat.vmdk"\n',
        "flat negative offset": head + 'RW 2048 FLAT "x-flat.vmdk" -1\n',
        "flat huge offset": head + 'RW 2048 FLAT "x-flat.vmdk" 9223372036854775807\n',
        "negative size": head + 'RW -5 FLAT "x-flat.vmdk" 0\n',
        "huge size": head + 'RW 9223372036854775807 FLAT "x-flat.vmdk" 0\n',
        "sizes overflow": head + ok + 'RW 18014398509481983 FLAT "x-flat.vmdk" 0\n' * 3,
        "size junk": head + 'RW 99999999999999999999999 FLAT "x-flat.vmdk" 0\n',
        "vmfs with offset": head + 'RW 2048 VMFS "x-flat.vmdk" 5\n',
        "sparse with offset": head + 'RW 2048 SPARSE "sp.vmdk" 5\n',
        "unknown type with offset": head + 'RW 2048 FOO "x-flat.vmdk" 5\n',
        "unknown type": head + 'RW 2048 FOO "x-flat.vmdk"\n' + ok,
        "sesparse": head + 'RW 2048 SESPARSE "sp.vmdk"\n',
        "missing extent": head + 'RW 2048 FLAT "nope.vmdk" 0\n',
        "fifo extent": head + 'RW 2048 FLAT "fifo" 0\n',
        "char device extent": head + 'RW 2048 FLAT "/dev/zero" 0\n',
        "directory extent": head + 'RW 2048 FLAT "dir" 0\n',
        "own fd extent": head + ''.join('RW 1 FLAT "/proc/self/fd/%d" 0\n' % i for i in range(3, 8)),
        "/dev/fd extent": head + 'RW 1 FLAT "/dev/fd/3" 0\n',
        "proc extent": head + 'RW 1 FLAT "../../../../../../proc/self/environ" 0\n',
        "sparse extent not vmdk": head + 'RW 2048 SPARSE "x-flat.vmdk"\n',
        "sparse extent empty": head + 'RW 2048 SPARSE "empty"\n',
        "nested descriptor": head + 'RW 2048 SPARSE "nested.vmdk"\n',
        "self as flat extent": head + 'RW 1 FLAT "d.vmdk" 0\n',
        "self as sparse extent": head + 'RW 1 SPARSE "d.vmdk"\n',
        "many extents": head + ok * 3000,
        "long name": head + 'RW 2048 FLAT "' + "a" * 600 + '" 0\n',
        "unterminated name": head + 'RW 2048 FLAT "x-flat.vmdk\n',
        "line spills over": head + 'RW 2048 SPARSE\n"sp.vmdk" 5\n',
        "crlf": head.replace("\n", "\r\n") + ok.replace("\n", "\r\n"),
        "no CID": head.replace("CID=1234abcd\n", "") + ok,
        "CID junk": head.replace("CID=1234abcd", "CID=zz") + ok,
        "no parentCID": head.replace("parentCID=ffffffff\n", "") + ok,
        "parent unterminated": head + 'parentFileNameHint="x' + "\n" + ok,
        "parent huge": head + 'parentFileNameHint="' + "p" * 5000 + '"\n' + ok,
        "parent not vmdk": head + 'parentFileNameHint="x-flat.vmdk"\n' + ok,
        "parent is itself": head.replace("monolithicFlat", "twoGbMaxExtentSparse") +
                            'parentFileNameHint="d.vmdk"\nRW 2048 SPARSE "sp.vmdk"\n',
        "binary junk": head + "\x00\x01\xff" * 1000 + ok,
        "2 MiB descriptor": head + ok + "#" * (2 << 20),
    }
    open(os.path.join(d, "empty"), "wb").write(b"")
    n = 0
    for name, text in cases.items():
        path = os.path.join(d, "d.vmdk")
        open(path, "wb").write(text.encode("latin-1"))
        judge(f"descriptor: {name}", path)
        n += 1
    return n


def main():
    sparse = make("a.vmdk", ["qemu-img", "create", "-q", "-f", "vmdk", "@", "4M"],
                  ["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 16k", "-c",
                   "write -P 0x6b 1M 8k", "@"])
    zeroed = make("z.vmdk", ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on",
                             "@", "4M"],
                  ["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 256k", "-c",
                   "write -z 64k 64k", "@"])
    src = os.path.join(tmp, "src.raw")
    with open(src, "wb") as f:
        f.truncate(2 << 20)
        f.write(os.urandom(70000))
        f.seek(1 << 20)
        f.write(b"compressible " * 10000)
    stream = make("s.vmdk", ["qemu-img", "convert", "-O", "vmdk", "-o",
                             "subformat=streamOptimized", src, "@"])
    n = mutate_sparse("sparse", sparse, [])
    n += mutate_sparse("zeroed", zeroed, [])
    n += mutate_sparse("stream", stream, stream_extra(stream))
    n += descriptors()
    print(f"{n} mutants")
    print(f"{passed} passed, {failed} failed")
    shutil.rmtree(tmp)
    return 1 if failed or not passed else 0


sys.exit(main())
