#!/usr/bin/env python3
"""VHDX against qemu-img 7.2, both directions, the log included.

- Images qemu-img made from a mixed source (random, zero and compressible regions, a
  size no multiple of the block size) in every subformat and with block_size, log_size
  and block_state_zero set, some written into by qemu-io afterwards: `vtool img info`
  (JSON and human), `map`, `convert -O raw`, `compare` and `check` give what qemu-img
  gives.
- Images vtool made: `create` gives qemu's layout (region tables, BAT and metadata table
  byte for byte, the file size) and Formatting line; `convert -O vhdx` from raw and
  qcow2 and random writes through blk.h (tests/tools/blkio) read back identically in
  qemu-img, whose check finds them clean.
- The log: an entry built here by hand (data and zero descriptors, sequences, bad
  checksums, foreign GUIDs) is refused by read-only opens as qemu refuses it, and
  `check -r all` replays it with qemu's output; both tools then read the same disk. A log
  vtool itself left behind (its in-place BAT write failed through strace fault
  injection) is replayed by qemu-img to the data that was written; writers killed at
  random leave images qemu-img check accepts once replayed.
- `check` on damaged images (BAT entries past the end, on the metadata, a truncated
  file): the same exit status and counts as qemu-img check.
- A malformed corpus (header, region table, metadata and BAT fields with and without
  fixed-up checksums, truncations): no signal, no hang, one-line errors; what qemu-img
  refuses vtool refuses; where both read a mutant, `convert -O raw` gives the same bytes.
Last, tguest reads and writes such a disk through `vtool run -drive file=...,if=virtio`
(skipped without /dev/kvm).
VTOOL may point at the sanitizer build (build-asan).
"""
import budget
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid

VTOOL = os.environ["VTOOL"]
BLKIO = os.environ["BLKIO"]
tmp = tempfile.mkdtemp(prefix="vtool-vhdx.")
passed = failed = 0
MIB = 1 << 20


def run(*args, timeout=120):
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


def path(name):
    return os.path.join(tmp, name)


def rm(*names):
    for n in names:
        if os.path.exists(path(n)):
            os.unlink(path(n))


def same(name, args, stdout=True, fix=lambda s: s):
    """vtool img ARGS and qemu-img ARGS: same exit status and (optionally) stdout."""
    vrc, vout, verr = run(VTOOL, "img", *args)
    qrc, qout, qerr = run("qemu-img", *args)
    check(f"{name}: exit status", vrc == qrc, f"vtool {vrc} ({verr.strip()}), qemu {qrc} ({qerr.strip()})")
    if stdout:
        check(f"{name}: output", fix(vout) == fix(qout), f"\nvtool:\n{vout}\nqemu:\n{qout}")
    return vrc, vout


def files_equal(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MIB), fb.read(MIB)
            if x != y:
                return False
            if not x:
                return True


def make_source(p, size, seed):
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 8))) for _ in range(64)]
    with open(p, "wb") as f:
        f.truncate(size)
        off = 0
        while off < size:
            n = min(rng.choice([192 << 10, MIB, 3 * MIB]), size - off)
            kind = rng.randrange(4)
            f.seek(off)
            if kind == 0:
                f.write(rng.randbytes(n))
            elif kind == 1:
                chunk = b" ".join(rng.choices(words, k=12000)) + b" "
                f.write((chunk * (n // len(chunk) + 1))[:n])
            elif kind == 2:
                f.write(bytes(n))
            off += n


CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xffffffff
    t = CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


def set_crc(d, start, length, field=4):
    d[start + field:start + field + 4] = bytes(4)
    d[start + field:start + field + 4] = struct.pack("<I", crc32c(bytes(d[start:start + length])))


def layout(d):
    """Current header offset, log offset/length, BAT and metadata offsets/lengths."""
    seqs = [struct.unpack("<Q", d[o + 8:o + 16])[0] for o in (0x10000, 0x20000)]
    cur = 0x10000 if seqs[0] > seqs[1] else 0x20000
    log_len, log_off = struct.unpack("<IQ", d[cur + 68:cur + 80])
    rt = 0x30000
    ent = {}
    for i in range(struct.unpack("<I", d[rt + 8:rt + 12])[0]):
        e = d[rt + 16 + 32 * i:rt + 48 + 32 * i]
        ent[bytes(e[:16])] = struct.unpack("<QI", e[16:28])
    bat = ent[uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le]
    meta = ent[uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le]
    return cur, log_off, log_len, bat, meta


# ---- images qemu made -------------------------------------------------------------------

def qemu_made():
    src = path("src.raw")
    make_source(src, 37 * MIB + 7 * 512, 1)
    cases = ["", "block_state_zero=off", "subformat=fixed", "subformat=fixed,block_state_zero=off",
             "block_size=1M", "block_size=32M,log_size=3M", "log_size=2M,block_size=2M"]
    for opts in cases:
        img = path("q.vhdx")
        rm("q.vhdx")
        subprocess.run(["qemu-img", "convert", "-O", "vhdx", *(["-o", opts] if opts else []),
                        src, img], check=True)
        for late in (False, True):
            tag = f"qemu-made '{opts}'{' + qemu-io' if late else ''}"
            if late:
                subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x3c 3M 5k", "-c",
                                "write -z 9M 64k", "-c", "write -P 0x7e 36M 3k", img],
                               check=True, capture_output=True)
            same(f"{tag} info json", ["info", "--output=json", img])
            same(f"{tag} info", ["info", img])
            same(f"{tag} map json", ["map", "--output=json", img])
            same(f"{tag} map", ["map", img])
            rm("v.raw", "q.raw")
            rc, _, err = run(VTOOL, "img", "convert", "-O", "raw", img, path("v.raw"))
            check(f"{tag} convert", rc == 0, err)
            subprocess.run(["qemu-img", "convert", "-O", "raw", img, path("q.raw")], check=True)
            check(f"{tag} convert bytes", files_equal(path("v.raw"), path("q.raw")))
            for strict in ([], ["-s"]):
                same(f"{tag} compare {strict}", ["compare", *strict, src, img])
            same(f"{tag} check", ["check", img])
            same(f"{tag} check json", ["check", "--output=json", img])


# ---- images vtool made ------------------------------------------------------------------

def structure(p):
    """What must equal qemu's: file size, region tables, BAT, metadata table and items
    but the random page 83 identifier."""
    d = open(p, "rb").read()
    cur, log_off, log_len, bat, meta = layout(d)
    md = bytearray(d[meta[0]:meta[0] + 64 * 1024 + 40])
    md[64 * 1024 + 16:64 * 1024 + 32] = bytes(16)
    return (len(d), d[0x30000:0x50000], log_off, log_len, bat, meta,
            d[bat[0]:bat[0] + bat[1]], bytes(md), d[cur + 64:cur + 80])


def vtool_made():
    create_opts = ["", "subformat=fixed", "subformat=fixed,block_state_zero=off",
                   "block_state_zero=off", "block_size=1M", "block_size=3000000",
                   "block_size=300M", "log_size=3M", "log_size=1500000,block_size=0",
                   "subformat=dynamic,block_state_zero=on", "block_state_zero=yes"]
    for opts in create_opts:
        for size in ["37M", "1000", "0", "2G", "120G", "33T"]:
            if "fixed" in opts and size[-1] in "GT":
                continue
            rm("v.vhdx", "qq.vhdx")
            v, q = path("v.vhdx"), path("qq.vhdx")
            o = ["-o", opts] if opts else []
            vrc, vout, verr = run(VTOOL, "img", "create", "-f", "vhdx", *o, v, size)
            qrc, qout, qerr = run("qemu-img", "create", "-f", "vhdx", *o, q, size)
            tag = f"create '{opts}' {size}"
            check(f"{tag}: status", vrc == qrc, f"{verr} / {qerr}")
            if qrc:
                check(f"{tag}: message", verr.strip().endswith(qerr.strip().split(": ")[-1]),
                      f"{verr} vs {qerr}")
                continue
            check(f"{tag}: Formatting line", vout.replace(v, "X") == qout.replace(q, "X"),
                  f"{vout!r} vs {qout!r}")
            check(f"{tag}: layout", structure(v) == structure(q), "differs from qemu-img's")
            same(f"{tag}: info", ["info", "--output=json", v])
            rc, out, err = run("qemu-img", "check", v)
            check(f"{tag}: qemu-img check", rc == 0, out + err)
    for seed, opts in enumerate(["", "subformat=fixed", "subformat=fixed,block_state_zero=off",
                                 "block_size=1M", "block_state_zero=off,log_size=2M"], 1):
        img, shadow = path("w.vhdx"), path("shadow")
        rm("w.vhdx")
        subprocess.run([VTOOL, "img", "create", "-q", "-f", "vhdx", *(["-o", opts] if opts else []),
                        img, str(29 * MIB + 4096)], check=True)
        with open(shadow, "wb") as f:
            f.truncate(29 * MIB + 4096)
        rc, _, err = run(BLKIO, "write", img, "vhdx", shadow, str(seed), "60")
        check(f"blkio write '{opts}'", rc == 0, err)
        rc, out, err = run("qemu-img", "compare", "-f", "raw", "-F", "vhdx", shadow, img)
        check(f"blkio write '{opts}': qemu-img compare", rc == 0, out + err)
        rc, out, err = run("qemu-img", "check", img)
        check(f"blkio write '{opts}': qemu-img check", rc == 0, out + err)
        same(f"blkio write '{opts}': check json", ["check", "--output=json", img])
    src = path("src2.raw")
    make_source(src, 45 * MIB + 3 * 512, 2)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", src, path("src2.qcow2")], check=True)
    for source in (src, path("src2.qcow2")):
        for opts in ["", "subformat=fixed", "block_size=1M", "block_state_zero=off"]:
            rm("c.vhdx", "qc.vhdx")
            o = ["-o", opts] if opts else []
            tag = f"convert -O vhdx '{opts}' from {os.path.basename(source)}"
            rc, _, err = run(VTOOL, "img", "convert", "-O", "vhdx", *o, source, path("c.vhdx"))
            check(tag, rc == 0, err)
            rc, out, err = run("qemu-img", "compare", source, path("c.vhdx"))
            check(f"{tag}: qemu-img compare", rc == 0, out + err)
            rc, out, err = run("qemu-img", "check", path("c.vhdx"))
            check(f"{tag}: qemu-img check", rc == 0, out + err)
            subprocess.run(["qemu-img", "convert", "-O", "vhdx", *o, source, path("qc.vhdx")], check=True)
            vs, qs = os.path.getsize(path("c.vhdx")), os.path.getsize(path("qc.vhdx"))
            check(f"{tag}: no larger than qemu's", vs <= qs, f"{vs} > {qs}")
    same("create -o help", ["create", "-f", "vhdx", "-o", "help"])


# ---- the log ----------------------------------------------------------------------------

def log_entry(guid, seq, descs, flushed, last, tail=0):
    """An entry: descs are ("data", file_offset, 4096 bytes) or ("zero", offset, length)."""
    ndata = sum(1 for d in descs if d[0] == "data")
    nd = (len(descs) + 2 + 127) // 128
    e = bytearray((nd + ndata) * 4096)
    e[0:4] = b"loge"
    struct.pack_into("<IIQII", e, 8, len(e), tail, seq, len(descs), 0)
    e[32:48] = guid
    struct.pack_into("<QQ", e, 48, flushed, last)
    k = 0
    for i, d in enumerate(descs):
        at = 64 + 32 * i
        if d[0] == "zero":
            e[at:at + 4] = b"zero"
            struct.pack_into("<IQQQ", e, at + 4, 0, d[2], d[1], seq)
        else:
            data = d[2]
            e[at:at + 4] = b"desc"
            e[at + 4:at + 8] = data[4092:4096]
            e[at + 8:at + 16] = data[0:8]
            struct.pack_into("<QQ", e, at + 16, d[1], seq)
            ds = (nd + k) * 4096
            e[ds:ds + 4] = b"data"
            struct.pack_into("<I", e, ds + 4, seq >> 32)
            e[ds + 8:ds + 4092] = data[8:4092]
            struct.pack_into("<I", e, ds + 4092, seq & 0xffffffff)
            k += 1
    set_crc(e, 0, len(e))
    return e


def make_dirty(base, out, entries_fn):
    d = bytearray(open(base, "rb").read())
    cur, log_off, log_len, bat, meta = layout(d)
    guid = uuid.uuid4().bytes_le
    d[cur + 48:cur + 64] = guid
    set_crc(d, cur, 4096)
    for at, e in entries_fn(d, guid, bat, meta):
        for k in range(0, len(e), 4096):  # the log is circular
            o = log_off + (at + k) % log_len
            d[o:o + 4096] = e[k:k + 4096]
    open(out, "wb").write(d)


def judge_dirty(name, img, replayable=True, expect=None):
    """Both tools treat the dirty image alike: read-only use, check, check -r all.
    With expect = (offset, bytes), qemu cannot replay the log (a qemu bug) and vtool's
    replay must give those bytes there instead."""
    if expect:
        shutil.copy(img, path("dv.vhdx"))
        rc, out, err = run(VTOOL, "img", "check", "-r", "all", path("dv.vhdx"))
        check(f"{name}: vtool replays it", rc == 0, out + err)
        rm("lv.raw")
        rc, _, err = run(VTOOL, "img", "convert", "-O", "raw", path("dv.vhdx"), path("lv.raw"))
        got = open(path("lv.raw"), "rb").read()[expect[0]:expect[0] + len(expect[1])] if rc == 0 else b""
        check(f"{name}: vtool's replay gives the logged data", got == expect[1], err)
        rc, out, err = run("qemu-img", "check", path("dv.vhdx"))
        check(f"{name}: qemu-img check after vtool's replay", rc == 0, out + err)
        return
    qrc, _, qerr = run("qemu-img", "info", img)
    vrc, _, verr = run(VTOOL, "img", "info", img)
    check(f"{name}: info status", (qrc == 0) == (vrc == 0), f"qemu {qrc} {qerr} / vtool {vrc} {verr}")
    if vrc:
        check(f"{name}: one-line error", len(verr.strip().splitlines()) == 1, verr)
    if replayable:
        check(f"{name}: read-only open refused", vrc != 0 and "replayed" in verr, verr)
    for args in (["check"], ["check", "-r", "all"], ["check", "-r", "all", "--output=json"],
                 ["check", "-r", "leaks"]):
        shutil.copy(img, path("dq.vhdx"))
        shutil.copy(img, path("dv.vhdx"))
        qrc, qout, qerr = run("qemu-img", *args, path("dq.vhdx"))
        vrc, vout, verr = run(VTOOL, "img", *args, path("dv.vhdx"))
        check(f"{name}: {' '.join(args)} status", qrc == vrc, f"qemu {qrc} {qerr} / vtool {vrc} {verr}")
        check(f"{name}: {' '.join(args)} output", qout.replace("dq.vhdx", "X") == vout.replace("dv.vhdx", "X"),
              f"\nqemu:\n{qout}\nvtool:\n{vout}")
        if qrc == 0 and "-r" in args:
            rm("lq.raw", "lv.raw")
            subprocess.run(["qemu-img", "convert", "-O", "raw", path("dq.vhdx"), path("lq.raw")], check=True)
            rc, _, err = run(VTOOL, "img", "convert", "-O", "raw", path("dv.vhdx"), path("lv.raw"))
            check(f"{name}: {' '.join(args)}: vtool reads its replay", rc == 0, err)
            check(f"{name}: {' '.join(args)}: same disk after replay",
                  rc == 0 and files_equal(path("lq.raw"), path("lv.raw")))
            rc, out, err = run("qemu-img", "check", path("dv.vhdx"))
            check(f"{name}: qemu-img check after vtool's replay", rc == 0, out + err)


def log_tests():
    base = path("lbase.vhdx")
    rm("lbase.vhdx")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", base, "20M"], check=True)
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 5M 1M",
                    base], check=True, capture_output=True)
    size = os.path.getsize(base)
    pat = lambda c: bytes([c]) * 4096

    def payload_of(d, bat, idx):
        return struct.unpack("<Q", d[bat[0] + 8 * idx:bat[0] + 8 * idx + 8])[0] & ~0xfffff

    def one_data(d, g, bat, meta):
        return [(0, log_entry(g, 5, [("data", payload_of(d, bat, 0) + 8192, pat(0x5a))], size, size))]

    def new_block(d, g, bat, meta):
        # a present block appended past the end, and its BAT sector through the log
        sec = bytearray(d[bat[0]:bat[0] + 4096])
        struct.pack_into("<Q", sec, 8 * 3, size | 6)
        return [(0, log_entry(g, 9, [("data", bat[0], bytes(sec))], size, size + MIB - 4096))]

    def zero_desc(d, g, bat, meta):
        return [(0, log_entry(g, 3, [("zero", payload_of(d, bat, 5) + 4096, 3 * 4096)], size, size))]

    def sequence(d, g, bat, meta):
        a = log_entry(g, 20, [("data", payload_of(d, bat, 0), pat(0x61))], size, size)
        b = log_entry(g, 21, [("data", payload_of(d, bat, 0) + 4096, pat(0x62)),
                              ("zero", payload_of(d, bat, 5), 4096)], size, size)
        return [(0, a), (len(a), b)]

    def many_descs(d, g, bat, meta, n):
        descs = [("data", payload_of(d, bat, 0) + 4096 * i, pat(i)) for i in range(n)]
        return [(0, log_entry(g, 2, descs, size, size))]

    def two_sequences(d, g, bat, meta):
        a = log_entry(g, 40, [("data", payload_of(d, bat, 0), pat(0x71))], size, size)
        b = log_entry(g, 10, [("data", payload_of(d, bat, 0), pat(0x72))], size, size)
        return [(0, a), (64 * 4096, b)]

    def bad_crc(d, g, bat, meta):
        e = log_entry(g, 5, [("data", payload_of(d, bat, 0), pat(0x5a))], size, size)
        e[5000] ^= 1
        return [(0, e)]

    def foreign_guid(d, g, bat, meta):
        return [(0, log_entry(uuid.uuid4().bytes_le, 5, [("data", payload_of(d, bat, 0), pat(1))], size, size))]

    def bad_desc(d, g, bat, meta):
        e = log_entry(g, 5, [("data", payload_of(d, bat, 0) + 100, pat(0x5a))], size, size)
        return [(0, e)]

    def truncated(d, g, bat, meta):
        return [(0, log_entry(g, 5, [("data", payload_of(d, bat, 0), pat(3))], size + 8 * MIB, size))]

    def at_end(d, g, bat, meta):
        return [(MIB - 4096, log_entry(g, 5, [("data", payload_of(d, bat, 0), pat(0x44))], size, size))]

    for name, fn, replayable in [("data entry", one_data, True), ("new block", new_block, True),
                                 ("zero descriptor", zero_desc, True), ("sequence", sequence, True),
                                 ("126 descriptors", lambda *a: many_descs(*a, n=126), True),
                                 ("two sequences", two_sequences, True),
                                 ("bad checksum", bad_crc, False), ("foreign GUID", foreign_guid, False),
                                 ("bad descriptor", bad_desc, False),
                                 ("truncated file", truncated, True),
                                 ("entry wrapping the log's end", at_end, True)]:
        img = path("dirty.vhdx")
        make_dirty(base, img, fn)
        judge_dirty(f"log: {name}", img, replayable)
    # More than 126 descriptors take a second descriptor sector, which qemu 7.2 reads over
    # the first (its log reader does not advance its buffer) and then refuses the image;
    # the specification allows it, and vtool replays it.
    img = path("dirty.vhdx")
    make_dirty(base, img, lambda *a: many_descs(*a, n=130))
    judge_dirty("log: 130 descriptors", img, True,
                expect=(0, b"".join(pat(i) for i in range(130))))
    # A log vtool left: its in-place BAT write fails (strace fault injection), the entry
    # stays; qemu-img replays it to the data that was written.
    if shutil.which("strace"):
        img, shadow, raw = path("f.vhdx"), path("fshadow"), path("fraw")
        for f in (shadow, raw):
            with open(f, "wb") as fh:
                fh.truncate(20 * MIB)
        subprocess.run([BLKIO, "write", raw, "raw", shadow, "3", "1"], check=True)
        dirty = False
        for n in range(4, 12):
            rm("f.vhdx")
            subprocess.run([VTOOL, "img", "create", "-q", "-f", "vhdx", img, "20M"], check=True)
            subprocess.run(["strace", "-o", "/dev/null", "-e", "trace=pwrite64",
                            "-e", f"inject=pwrite64:error=EIO:when={n}",
                            BLKIO, "write", img, "vhdx", "/dev/null", "3", "1"], capture_output=True)
            rc, _, err = run("qemu-img", "info", img)
            if rc != 0 and "replayed" in err:
                dirty = True
                break
        check("vtool's own log: a failed BAT write leaves a dirty log", dirty)
        if dirty:
            shutil.copy(img, path("f2.vhdx"))
            rc, out, err = run("qemu-img", "check", "-r", "all", img)
            check("vtool's own log: qemu-img replays it", rc == 0, out + err)
            rc, out, err = run("qemu-img", "compare", "-f", "raw", "-F", "vhdx", shadow, img)
            check("vtool's own log: qemu's replay gives the written data", rc == 0, out + err)
            rc, out, err = run(VTOOL, "img", "check", "-r", "all", path("f2.vhdx"))
            rc, out, err = run("qemu-img", "compare", "-f", "raw", "-F", "vhdx", shadow, path("f2.vhdx"))
            check("vtool's own log: vtool's replay gives the written data", rc == 0, out + err)
    # Writers killed at random points.
    img = path("k.vhdx")
    rm("k.vhdx")
    subprocess.run([VTOOL, "img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", img, "64M"], check=True)
    for delay in (0.05, 0.15, 0.4, 0.8):
        p = subprocess.Popen([BLKIO, "crash", img, "vhdx", str(int(delay * 100))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        shutil.copy(img, path("k2.vhdx"))
        rc, out, err = run("qemu-img", "check", "-r", "all", path("k2.vhdx"))
        check(f"killed writer ({delay}s): qemu-img check -r all", rc == 0, out + err)
        rc, out, err = run(VTOOL, "img", "check", "-r", "all", img)
        check(f"killed writer ({delay}s): vtool img check -r all", rc == 0, out + err)
        rm("ka.raw", "kb.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", path("k2.vhdx"), path("ka.raw")], check=True)
        subprocess.run(["qemu-img", "convert", "-O", "raw", img, path("kb.raw")], check=True)
        check(f"killed writer ({delay}s): same disk after either replay",
              files_equal(path("ka.raw"), path("kb.raw")))


# ---- check on damaged images ------------------------------------------------------------

def check_tests():
    base = path("cbase.vhdx")
    rm("cbase.vhdx")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", base, "12M"], check=True)
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x22 7M 1M",
                    base], check=True, capture_output=True)
    orig = bytearray(open(base, "rb").read())
    cur, log_off, log_len, bat, meta = layout(orig)
    e = lambda i: struct.unpack("<Q", orig[bat[0] + 8 * i:bat[0] + 8 * i + 8])[0]
    cases = {
        "BAT entry past EOF": {0: (1 << 40) | 6},
        "two BAT entries past EOF": {0: (1 << 40) | 6, 7: (1 << 41) | 6},
        "BAT entry ending past EOF": {7: (len(orig) - MIB // 2) & ~0xfffff | 6},
        "BAT entry on the metadata": {1: meta[0] | 6},
        "BAT entry on the BAT": {2: bat[0] | 6},
        "BAT entry on the log": {0: log_off | 6},
        "BAT entry past EOF and on the log": {0: log_off | 6, 1: (1 << 40) | 6},
    }
    for name, changes in cases.items():
        d = bytearray(orig)
        for i, v in changes.items():
            struct.pack_into("<Q", d, bat[0] + 8 * i, v)
        img = path("c.vhdx")
        open(img, "wb").write(d)
        same(f"check: {name}", ["check", img])
        same(f"check: {name} (json)", ["check", "--output=json", img])
        for cmd in (["info", img], ["map", "--output=json", img]):
            qrc = run("qemu-img", *cmd)[0]
            vrc, _, verr = run(VTOOL, "img", *cmd)
            check(f"check: {name}: {cmd[0]} refused like qemu", (qrc == 0) == (vrc == 0), verr)
    img = path("c.vhdx")
    open(img, "wb").write(orig[:len(orig) - MIB // 2])
    same("check: truncated file", ["check", img])
    same("check: clean", ["check", base])
    same("check: clean (json)", ["check", "--output=json", base])


# ---- malformed corpus -------------------------------------------------------------------

def judge(name, data):
    if not budget.take():
        return
    img = path("m.vhdx")
    with open(img, "wb") as f:
        f.write(data)
    qrc, _, qerr = run("qemu-img", "info", "-f", "vhdx", img, timeout=30)
    vrc = None
    for cmd in ([VTOOL, "img", "info", "-f", "vhdx", img],
                [BLKIO, "dump", img, "vhdx", path("dump.raw"), str(8 << 20)],
                [BLKIO, "write", img, "vhdx", "/dev/null", "3", "4"]):
        rc, _, err = run(*cmd, timeout=30)
        what = f"{name}: {os.path.basename(cmd[0])} {cmd[1]}"
        check(what, 0 <= rc < 128, f"signal / sanitizer / hang (rc={rc}): {err[-800:]}")
        if rc != 0:
            lines = err.strip().splitlines()
            check(what, len(lines) == 1 and lines[0].startswith("vtool: "),
                  f"not one 'vtool:' line: {err[-400:]!r}")
        if cmd[1] == "img":
            vrc = rc
            if qrc != 0:
                check(what, rc != 0, f"qemu-img refuses ({qerr.strip()}) but vtool accepts")
    if qrc == 0 and vrc == 0:
        with open(img, "wb") as f:
            f.write(data)
        rm("mv.raw", "mq.raw")
        q = subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", img, path("mq.raw")],
                           capture_output=True, timeout=60)
        rc, _, err = run(VTOOL, "img", "convert", "-f", "vhdx", "-O", "raw", img, path("mv.raw"))
        if q.returncode == 0:
            check(f"{name}: convert", rc == 0 and files_equal(path("mv.raw"), path("mq.raw")),
                  f"accepted by both, but the bytes differ ({err.strip()})")


def malformed():
    base = path("mbase.vhdx")
    rm("mbase.vhdx")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", base, "5M"], check=True)
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 0 100k", "-c", "write -P 0x6b 3M 1M",
                    base], check=True, capture_output=True)
    orig = bytearray(open(base, "rb").read())
    cur, log_off, log_len, bat, meta = layout(orig)
    n = 0

    def mutant(name, d):
        nonlocal n
        n += 1
        judge(name, bytes(d))

    def vals(cur_v, size):
        top = (1 << 8 * size) - 1
        return sorted({x & top for x in (0, 1, top, top >> 1, cur_v + 1, cur_v ^ 0x100000,
                                         cur_v * 2, 1 << 20, 1 << 40)} - {cur_v})

    # Headers: each field, with a good checksum; both headers at once; bad checksums.
    for off, size in [(0, 4), (8, 8), (64, 2), (66, 2), (68, 4), (72, 8)]:
        for v in vals(int.from_bytes(orig[cur + off:cur + off + size], "little"), size):
            d = bytearray(orig)
            d[cur + off:cur + off + size] = v.to_bytes(size, "little")
            set_crc(d, cur, 4096)
            mutant(f"header@{off}={v:#x}", d)
    for h in (0x10000, 0x20000):
        d = bytearray(orig)
        d[h + 100] ^= 0xff
        mutant(f"header at {h:#x} bad checksum", d)
    d = bytearray(orig)
    d[0x10000 + 100] ^= 0xff
    d[0x20000 + 100] ^= 0xff
    mutant("both headers bad", d)
    d = bytearray(orig)
    d[0x20000:0x21000] = d[0x10000:0x11000]
    mutant("two headers, same sequence, same content", d)
    d = bytearray(orig)
    o = 0x10000 if cur == 0x20000 else 0x20000
    d[o + 8:o + 16] = d[cur + 8:cur + 16]
    set_crc(d, o, 4096)
    mutant("two headers, same sequence, different content", d)
    d = bytearray(orig)
    d[0:8] = b"vhdxfilf"
    mutant("file signature", d)
    # Region table: count, entries, flags.
    rt = 0x30000
    for off, size in [(8, 4), (16 + 16, 8), (16 + 24, 4), (16 + 28, 4), (48 + 16, 8), (48 + 24, 4),
                      (48 + 28, 4)]:
        for v in vals(int.from_bytes(orig[rt + off:rt + off + size], "little"), size):
            d = bytearray(orig)
            d[rt + off:rt + off + size] = v.to_bytes(size, "little")
            set_crc(d, rt, 65536)
            mutant(f"region table@{off}={v:#x}", d)
    for name, fn in [("third region, required", lambda d: (d.__setitem__(slice(rt + 8, rt + 12), struct.pack("<I", 3)),
                                                           d.__setitem__(slice(rt + 80, rt + 112), uuid.uuid4().bytes_le + struct.pack("<QII", 40 * MIB, MIB, 1)))),
                     ("third region, optional", lambda d: (d.__setitem__(slice(rt + 8, rt + 12), struct.pack("<I", 3)),
                                                           d.__setitem__(slice(rt + 80, rt + 112), uuid.uuid4().bytes_le + struct.pack("<QII", 40 * MIB, MIB, 0)))),
                     ("BAT region twice", lambda d: d.__setitem__(slice(rt + 48, rt + 64), d[rt + 16:rt + 32]))]:
        d = bytearray(orig)
        fn(d)
        set_crc(d, rt, 65536)
        mutant(f"region table: {name}", d)
    d = bytearray(orig)
    d[rt + 200] ^= 1
    mutant("region table bad checksum", d)
    # Metadata: table and items.
    mo = meta[0]
    for off, size in [(10, 2)] + [(32 + 32 * i + f, s) for i in range(5) for f, s in ((16, 4), (20, 4), (24, 4))]:
        for v in vals(int.from_bytes(orig[mo + off:mo + off + size], "little"), size)[:6]:
            d = bytearray(orig)
            d[mo + off:mo + off + size] = v.to_bytes(size, "little")
            mutant(f"metadata@{off}={v:#x}", d)
    items = mo + 64 * 1024
    for off, size, values in [(0, 4, [0, 512 * 1024, 3 * MIB, 512 * MIB, 2 * MIB]), (4, 4, [1, 2, 3, 0xff]),
                              (8, 8, [0, 1, 511, 5 * MIB + 100, 1 << 40, 64 << 40, (1 << 64) - 1]),
                              (32, 4, [0, 4096, 1024]), (36, 4, [0, 4096, 777])]:
        for v in values:
            d = bytearray(orig)
            d[items + off:items + off + size] = v.to_bytes(size, "little")
            mutant(f"metadata item@{off}={v:#x}", d)
    d = bytearray(orig)
    d[mo + 32:mo + 48] = uuid.uuid4().bytes_le
    mutant("metadata: unknown required item", d)
    # BAT entries.
    entries = [struct.unpack("<Q", orig[bat[0] + 8 * i:bat[0] + 8 * i + 8])[0] for i in range(6)]
    for i, v in [(0, 6), (0, MIB | 6), (0, 0x30000 | 6), (0, bat[0] | 6), (0, meta[0] | 6),
                 (0, log_off | 6), (0, (1 << 63) | 6), (0, 0xfffffffffff00006), (0, entries[3]),
                 (1, entries[0]), (0, entries[0] | 1), (0, 7), (0, 4), (1, 3), (1, 5), (5, 6),
                 (4, (len(orig) - 4096) & ~0xfffff | 6)]:
        d = bytearray(orig)
        struct.pack_into("<Q", d, bat[0] + 8 * i, v)
        mutant(f"BAT[{i}]={v:#x}", d)
    for cut in (0, 8, 0x10000, 0x30000, 0x40000, MIB, log_off + log_len, bat[0] + 8, meta[0] + 100,
                len(orig) - MIB, len(orig) - 1):
        mutant(f"truncated to {cut}", orig[:cut])
    print(f"{n} mutants")



# ---- a guest disk (vtool run, tests/guests/tguest) ---------------------------------------

GUEST_OPS = "i,w:8:16:a5,r:8:16:a5,r:2048:128:5a,w:4000:255:c6,r:4000:255:c6,f"


def guest_disk(fmt, create_opts, drive_fmt):
    """tguest reads what qemu-io wrote and writes what qemu-io then reads, through
    `vtool run -drive file=x,if=virtio` (the format probed unless drive_fmt is given)."""
    tguest = os.environ.get("TGUEST")
    if not tguest or not os.path.exists("/dev/kvm"):
        return
    img = path("guest." + fmt)
    if os.path.exists(img):
        os.unlink(img)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *create_opts, img, "64M"], check=True)
    subprocess.run(["qemu-io", "-f", fmt, "-c", "write -P 0x5a 1M 64k", img], check=True,
                   capture_output=True)
    drive = f"file={img},if=virtio" + (f",format={drive_fmt}" if drive_fmt else "")
    rc, out, err = run(VTOOL, "run", "-m", "128", "-device", "isa-debug-exit,iobase=0x501,iosize=2",
                       "-kernel", tguest, "-drive", drive, "-append",
                       f"test=disk dev=vblk ops={GUEST_OPS}", timeout=60)
    tag = f"vtool run with a {fmt} disk {create_opts}"
    check(tag, rc == 1 and "TG-PASS disk" in out, f"rc={rc} {out[-300:]} {err[-300:]}")
    for pat, off, n in (("0xa5", 4096, 8192), ("0xc6", 4000 * 512, 255 * 512), ("0", 0, 4096)):
        rc, out, err = run("qemu-io", "-f", fmt, "-r", "-c", f"read -P {pat} {off} {n}", img)
        check(f"{tag}: qemu-io reads the guest's writes", f"read {n}/{n} bytes" in out, out + err)

def main():
    malformed()
    if os.environ.get("VHDX_MALFORMED_ONLY"):
        return
    check_tests()
    log_tests()
    qemu_made()
    vtool_made()
    guest_disk("vhdx", [], None)
    guest_disk("vhdx", ["-o", "subformat=fixed,block_state_zero=off"], None)


try:
    main()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
