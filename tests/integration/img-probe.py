#!/usr/bin/env python3
"""Format probing against qemu-img: no known container is ever taken for a raw disk.

For every format qemu-img 7.2 can create (and every subformat), qemu-img info names the
format; vtool img info must either name the same format or refuse the image with an
error that names it -- never answer "raw". The same for headers qemu-img cannot write
(bochs, cloop, dmg) made by hand, and for a qcow2 header with an unknown version
(qemu: "Unsupported qcow2 version 9"). Files too short for a magic and files given with
-f raw are raw, as in qemu. `vtool img convert` and `vtool run -drive` refuse what info
refuses, and leave no output behind.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

VTOOL = os.environ["VTOOL"]
tmp = tempfile.mkdtemp(prefix="vtool-probe.")
passed = failed = 0

# What users call a format, as vtool's messages name it.
DESCRIBE = {"vdi": "VirtualBox VDI", "vmdk": "VMware VMDK", "vpc": "VHD", "vhdx": "VHDX",
            "qed": "QED", "qcow": "qcow", "luks": "LUKS", "parallels": "Parallels",
            "bochs": "Bochs", "cloop": "cloop", "dmg": "DMG", "qcow2": "qcow2"}


def run(*args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}: {detail}")


def qemu_format(path):
    rc, out, _ = run("qemu-img", "info", "--output=json", path)
    return json.loads(out)["format"] if rc == 0 else None


def judge(name, path, fmt):
    """vtool names fmt for path: in its info output, or in its one-line refusal."""
    rc, out, err = run(VTOOL, "img", "info", "--output=json", path)
    if rc == 0:
        got = json.loads(out)["format"]
        check(f"{name}: format", got == fmt, f"vtool says {got}, want {fmt}")
        return True
    lines = err.strip().splitlines()
    check(f"{name}: one-line error", len(lines) == 1, err)
    check(f"{name}: error names the format", DESCRIBE[fmt] in err, err)
    check(f"{name}: never raw", "raw" not in err.lower(), err)
    return False


def qemu_made(fmt, opts=None, size="3M", extra=()):
    path = os.path.join(tmp, f"{fmt}-{opts or 'default'}.img".replace(",", "_").replace("=", "-"))
    cmd = ["qemu-img", "create", "-q", "-f", fmt, *extra]
    if opts:
        cmd += ["-o", opts]
    # LUKS creation times its key derivation and fails now and then on a busy machine
    # ("Unable to get accurate CPU usage"): try again.
    for _ in range(5):
        p = subprocess.run(cmd + [path, size], capture_output=True, text=True)
        if p.returncode == 0:
            break
    if p.returncode:
        sys.exit(f"qemu-img create {fmt} failed: {p.stderr}")
    return path


cases = [("vdi", None), ("vdi", "static=on"), ("vpc", None), ("vhdx", None),
         ("vhdx", "subformat=fixed"), ("qed", None), ("qcow", None), ("parallels", None),
         ("qcow2", "compat=0.10"), ("qcow2", None)]
for sub in ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
            "twoGbMaxExtentFlat", "streamOptimized"):
    cases.append(("vmdk", f"subformat={sub}"))
for fmt, opts in cases:
    path = qemu_made(fmt, opts)
    want = qemu_format(path)
    check(f"{fmt} {opts}: qemu-img knows it", want == fmt, f"qemu says {want}")
    judge(f"{fmt} {opts}", path, fmt)

luks = qemu_made("luks", None, extra=("--object", "secret,id=s0,data=pw", "-o", "key-secret=s0"))
judge("luks", luks, "luks")

# A fixed VHD has its footer only at the end: qemu reads it as raw (the disk is the
# file's start), and so does vtool.
fixed = qemu_made("vpc", "subformat=fixed")
check("fixed vhd: qemu says raw", qemu_format(fixed) == "raw", qemu_format(fixed))
judge("fixed vhd", fixed, "raw")


def write(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


bochs = bytearray(512)
bochs[0:22] = b"Bochs Virtual HD Image"
bochs[32:39] = b"Redolog"
bochs[48:55] = b"Growing"
bochs[64:68] = struct.pack("<I", 0x00020000)
judge("bochs", write("bochs.img", bytes(bochs) + bytes(65536)), "bochs")
cloop = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
judge("cloop", write("cloop.img", cloop + bytes(4096)), "cloop")
judge("dmg", write("disk.dmg", bytes(8192) + b"koly" + bytes(508)), "dmg")
# A raw disk merely named *.dmg is raw (qemu goes by the name; vtool by the trailer).
judge("raw named .dmg", write("raw.dmg", bytes(65536)), "raw")

# qcow2 of an unknown version: qemu's driver refuses it by name.
v9 = bytearray(open(qemu_made("qcow2", "compat=1.1"), "rb").read())
v9[4:8] = struct.pack(">I", 9)
p9 = write("v9.qcow2", bytes(v9))
rc, _, err = run(VTOOL, "img", "info", p9)
_, _, qerr = run("qemu-img", "info", p9)
check("qcow2 v9: refused", rc != 0 and "Unsupported qcow2 version 9" in err, err)
check("qcow2 v9: qemu agrees", "Unsupported qcow2 version 9" in qerr, qerr)

# Too short for any magic: raw, as qemu says.
vdi = open(qemu_made("vdi", None), "rb").read()
short = write("short.img", vdi[:10])
check("truncated: qemu says raw", qemu_format(short) == "raw")
judge("truncated vdi", short, "raw")

# -f raw is raw whatever sector 0 holds (qemu's rule), and the bytes are the file's.
vdipath = qemu_made("vdi", "static=on", size="1M")
rc, out, err = run(VTOOL, "img", "info", "-f", "raw", "--output=json", vdipath)
check("-f raw on a vdi: raw", rc == 0 and json.loads(out)["format"] == "raw", err)
raw_out = os.path.join(tmp, "asraw.out")
rc, _, err = run(VTOOL, "img", "convert", "-f", "raw", "-O", "raw", vdipath, raw_out)
check("-f raw convert copies the container", rc == 0 and
      open(raw_out, "rb").read() == open(vdipath, "rb").read(), err)

# convert from an unreadable known format: refused, nothing left under the output name.
target = os.path.join(tmp, "out.qcow2")
rc, _, err = run(VTOOL, "img", "convert", "-O", "qcow2", luks, target)
check("convert luks: refused", rc != 0 and "LUKS" in err, err)
check("convert luks: no output", not os.path.exists(target))

# vtool run never hands a known container to a guest as a raw disk.
if os.path.exists("/dev/kvm") and os.environ.get("TGUEST"):
    rc, _, err = run(VTOOL, "run", "-kernel", os.environ["TGUEST"], "-nographic",
                     "-drive", f"file={luks},if=virtio", "-append", "poweroff")
    check("run luks: refused", rc != 0 and "LUKS" in err, err)

print(f"{passed} checks passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
