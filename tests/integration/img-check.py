#!/usr/bin/env python3
"""vtool img check against qemu-img check on a seeded-corruption corpus.

Each case damages a small qcow2 that qemu wrote (leaks, wrong refcounts, dangling and
unaligned L2 entries, shared clusters, bad L1 entries, a dirty lazy-refcounts image).
Verdicts: vtool's exit status and JSON counts (corruptions, leaks) equal qemu-img's;
after `vtool img check -r all` both tools find the image clean whenever qemu-img's own
repair makes it clean; the guest-visible data that was not damaged survives the repair.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

VTOOL = os.environ["VTOOL"]
tmp = tempfile.mkdtemp(prefix="vtool-check.")
passed = failed = 0
CS = 65536


def run(*args):
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}: {detail}")


def be64(b, off):
    return struct.unpack(">Q", b[off:off + 8])[0]


def base_image(path, lazy=False):
    opts = ["-o", "lazy_refcounts=on"] if lazy else []
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, path, "4M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 128k", "-c", "write -P 0x6b 1M 64k", path],
                   check=True, capture_output=True)


def layout(data):
    l1 = be64(data, 40)
    rt = be64(data, 48)
    l2 = be64(data, l1) & 0x00fffffffffffe00
    rb = be64(data, rt)
    return l1, rt, l2, rb


def set_refcount(data, rb, cluster, value):
    data[rb + 2 * cluster:rb + 2 * cluster + 2] = struct.pack(">H", value)


def mutate(name, data):
    l1, rt, l2, rb = layout(data)
    d0 = be64(data, l2)                      # first data cluster's L2 entry
    if name == "leak":
        data += bytes(CS)                     # one more cluster, counted but unused
        n = len(data) // CS - 1
        set_refcount(data, rb, n, 1)
    elif name == "refcount-zero":
        set_refcount(data, rb, (d0 & 0x00fffffffffffe00) // CS, 0)
    elif name == "refcount-two":
        set_refcount(data, rb, (d0 & 0x00fffffffffffe00) // CS, 2)
    elif name == "l2-past-eof":
        data[l2 + 8:l2 + 16] = struct.pack(">Q", (1 << 63) | (64 << 20))
    elif name == "l2-unaligned":
        data[l2 + 8:l2 + 16] = struct.pack(">Q", be64(data, l2 + 8) + 0x200)
    elif name == "shared-cluster":
        data[l2 + 8:l2 + 16] = struct.pack(">Q", d0)   # two guest clusters, one host cluster
    elif name == "l1-unaligned":
        data[l1:l1 + 8] = struct.pack(">Q", be64(data, l1) + 0x200)
    elif name == "copied-missing":
        data[l2:l2 + 8] = struct.pack(">Q", d0 & ~(1 << 63))
    return data


def verdict(tool, path):
    cmd = [VTOOL, "img"] if tool == "vtool" else ["qemu-img"]
    rc, out, _ = run(*cmd, "check", "--output=json", path)
    try:
        j = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        j = {"unparsable": out}
    return rc, j.get("corruptions", 0), j.get("leaks", 0)


def main():
    names = ["leak", "refcount-zero", "refcount-two", "l2-past-eof", "l2-unaligned",
             "shared-cluster", "l1-unaligned", "copied-missing", "dirty"]
    for name in names:
        a = os.path.join(tmp, f"{name}.qcow2")
        if name == "dirty":
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                            "lazy_refcounts=on", a, "4M"], check=True)
            subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 128k", "-c", "abort", a],
                           capture_output=True)
        else:
            base_image(a)
            data = mutate(name, bytearray(open(a, "rb").read()))
            open(a, "wb").write(data)
        q = verdict("qemu", a)
        v = verdict("vtool", a)
        check(f"{name}: verdict", q == v, f"vtool (rc, corruptions, leaks) {v} vs qemu-img {q}")
        # Repair with each tool on its own copy; compare what they leave.
        b = os.path.join(tmp, f"{name}-q.qcow2")
        shutil.copy(a, b)
        run("qemu-img", "check", "-r", "all", b)
        rc, _, err = run(VTOOL, "img", "check", "-r", "all", a)
        q_after = verdict("qemu", b)[0]
        v_after = verdict("qemu", a)[0]
        if q_after == 0:
            check(f"{name}: -r all leaves it clean for qemu-img", v_after == 0,
                  f"qemu-img check after vtool's repair: rc {v_after}; vtool said rc {rc}: {err[-300:]}")
            check(f"{name}: vtool's check agrees after repair", verdict("vtool", a)[0] == 0)
            rc, _, _ = run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", a, b)
            check(f"{name}: same contents as qemu's repair", rc == 0, f"compare rc {rc}")
    # -r leaks on a leak-only image
    a = os.path.join(tmp, "leak2.qcow2")
    base_image(a)
    data = mutate("leak", bytearray(open(a, "rb").read()))
    open(a, "wb").write(data)
    rc, _, _ = run(VTOOL, "img", "check", "-r", "leaks", a)
    check("-r leaks: exit 0", rc == 0, f"rc {rc}")
    check("-r leaks: qemu-img agrees", verdict("qemu", a)[0] == 0)
    # A dirty image (lazy refcounts, writer killed) is repaired on a read-write open.
    a = os.path.join(tmp, "dirty-open.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", a, "4M"],
                   check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 128k", "-c", "abort", a], capture_output=True)
    shadow = os.path.join(tmp, "dirty.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", a, shadow], check=True)
    rc, _, err = run(os.environ["BLKIO"], "write", a, "qcow2", shadow, "5", "20")
    check("dirty image: read-write open repairs and writes", rc == 0, err[-300:])
    check("dirty image: qemu-img check clean after", verdict("qemu", a)[0] == 0)
    rc, _, _ = run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", shadow, a)
    check("dirty image: contents", rc == 0, f"compare rc {rc}")
    rc, out, _ = run("qemu-img", "info", "--output=json", a)
    check("dirty image: dirty flag cleared", '"dirty-flag": false' in out, out[-200:])
    # raw images have nothing to check
    r = os.path.join(tmp, "r.raw")
    open(r, "wb").truncate(1 << 20)
    rc, _, err = run(VTOOL, "img", "check", r)
    check("raw: exit 63", rc == 63 and len(err.strip().splitlines()) == 1, f"rc {rc} {err!r}")
    print(f"{passed} passed, {failed} failed")
    shutil.rmtree(tmp)
    return 1 if failed or not passed else 0


sys.exit(main())
