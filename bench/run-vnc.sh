#!/usr/bin/env bash
# The display, vtool run vs qemu-system-x86_64 -enable-kvm, the same guests and client
# (tests/tools/rfbclient.py: raw encoding + DesktopSize, 32-bit pixels):
#   (a) VMM CPU while a client watches an idle text screen for SECS seconds (SeaBIOS,
#       then tests/guests/vgasect.S waiting in INT 16h; the client keeps an incremental
#       update request outstanding, as viewers do). Goal: <= 0.2x qemu's.
#   (b) time from a key sent over VNC until the client has the guest's full-screen
#       1024x768x32 change (tguest test=vbe flips=N: the key wakes the guest, which
#       fills the LFB at CPL3): median of N.
#   (c) bytes the server sends for one changed character (a key echoed at the text
#       prompt: the character's cell and the cursor's), within 1 s of the key, and the
#       same second without a key (the cursor blinking) for reference.
#
#   bench/run-vnc.sh [VTOOL] [SECS] [N]
set -euo pipefail
vtool=${1:-build/cli/vtool}
secs=${2:-30}
flips=${3:-10}
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(dirname "$(dirname "$vtool")")
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-vncbench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT

python3 - "$vtool" "$secs" "$flips" "$src" "$build" "$dir" <<'EOF'
import os, signal, socket, subprocess, sys, time
vtool, secs, flips, src, build, d = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
sys.path.insert(0, os.path.join(src, "tests", "tools"))
from rfbclient import RFB

disk = os.path.join(d, "vgasect.raw")
with open(disk, "wb") as f:
    f.write(open(os.path.join(build, "tests/guests/vgasect.bin"), "rb").read())
    f.truncate(1 << 20)
tguest = os.path.join(build, "tests/guests/tguest.elf")

def free_display():
    for n in range(60, 99):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 5900 + n)); return n
        except OSError:
            pass
        finally:
            s.close()

def start(which, args, ser):
    disp = free_display()
    if which == "vtool":
        cmd = [vtool, "run", "-m", "128", "-serial", "file:" + ser, "-vnc", f":{disp}"] + args
    else:
        # debug-threads=on names qemu's vCPU threads ("CPU 0/KVM"), so that cpu_s can
        # tell them from the rest
        cmd = ["qemu-system-x86_64", "-enable-kvm", "-name", "bench,debug-threads=on",
               "-cpu", "qemu64,-cx16", "-m", "128", "-net", "none",
               "-display", "none", "-serial", "file:" + ser, "-vnc", f"127.0.0.1:{disp}"] + args
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL), disp

def wait_serial(ser, marker, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(ser) and marker in open(ser, "rb").read().decode("latin-1"):
            return True
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {marker!r} in {ser}")

def connect(disp):
    end = time.monotonic() + 30
    while True:
        try:
            return RFB(f"127.0.0.1:{disp}")
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)

def thread_s(pid, tid):
    """CPU time of one thread in seconds, to the nanosecond (schedstat; the tick-based
    utime/stime of /proc/PID/stat count in 10 ms steps, too coarse for an idle VMM)."""
    return int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0]) / 1e9

def cpu_s(pid):
    """(whole process, its threads other than the vCPUs: the monitor's own work)"""
    total = vcpu = 0.0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            s = thread_s(pid, t)
        except OSError:
            continue  # a thread that just ended
        total += s
        if name.startswith("vcpu") or name.startswith("CPU "):
            vcpu += s
    return total, total - vcpu

def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()

res = {}
for which in ("vtool", "qemu"):
    r = res[which] = {}
    # (a) and (c): the text screen
    ser = os.path.join(d, which + ".serial")
    p, disp = start(which, ["-drive", f"file={disk},format=raw,if=ide"], ser)
    wait_serial(ser, "VGASECT-READY")
    c = connect(disp)
    c.snapshot(delay=1.0)
    c.request()
    c0, t0 = cpu_s(p.pid), time.monotonic()
    while time.monotonic() - t0 < secs:
        if c.wait_update(timeout=0.5):
            pass
    c1 = cpu_s(p.pid)
    r["cpu"], r["cpu_mon"] = c1[0] - c0[0], c1[1] - c0[1]
    r["wall"] = time.monotonic() - t0
    # (c): bytes in the second after one key, and in an idle second
    c.snapshot(delay=0.5)
    b0 = c.rx_bytes
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        c.wait_update(timeout=max(0.01, end - time.monotonic()))
    r["idle_bytes"] = c.rx_bytes - b0
    c.snapshot(delay=0.5)
    b0 = c.rx_bytes
    c.tap(ord("x"))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        c.wait_update(timeout=max(0.01, end - time.monotonic()))
    r["key_bytes"] = c.rx_bytes - b0
    c.close()
    stop(p)
    # (b): full-screen VBE changes
    ser = os.path.join(d, which + "-vbe.serial")
    p, disp = start(which, ["-kernel", tguest, "-append", f"test=vbe flips={flips}"], ser)
    c = connect(disp)
    for mode in "ABCD":
        wait_serial(ser, f"TG-VBE {mode} ")
        c.tap(ord(" "))
    wait_serial(ser, "TG-FLIP 0")
    c.snapshot(delay=0.5)
    lat = []
    for n in range(1, flips + 1):
        want = (n * 0x010307) & 0xffffff
        t0 = time.monotonic()
        c.tap(ord(" "))
        c.request()
        while True:
            c.sock.settimeout(10)
            if c.read_message() == 0:
                if all(c.pixel(x, y) == want for x, y in ((0, 0), (1023, 767), (512, 384), (1023, 0), (0, 767))):
                    break
                c.request()
        lat.append(time.monotonic() - t0)
    lat.sort()
    r["flip_ms"] = 1000 * lat[len(lat) // 2]
    c.close()
    stop(p)

v, q = res["vtool"], res["qemu"]
print(f"vtool run display benchmark: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
print(f"{'':44} {'vtool':>10} {'qemu':>10} {'vtool/qemu':>10}")
print(f"{'(a) VMM CPU, idle text screen watched ' + str(int(secs)) + ' s':44} {v['cpu']:9.3f}s {q['cpu']:9.3f}s {v['cpu'] / max(q['cpu'], 1e-9):10.2f}")
print(f"{'    of it outside the vCPU threads':44} {v['cpu_mon']:9.3f}s {q['cpu_mon']:9.3f}s {v['cpu_mon'] / max(q['cpu_mon'], 1e-9):10.2f}")
print(f"{'(b) key -> full-screen VBE change, median':44} {v['flip_ms']:8.1f}ms {q['flip_ms']:8.1f}ms {v['flip_ms'] / q['flip_ms']:10.2f}")
print(f"{'(c) bytes for one changed character (1 s)':44} {v['key_bytes']:10d} {q['key_bytes']:10d} {v['key_bytes'] / max(q['key_bytes'], 1):10.2f}")
print(f"{'    the same second without a key (blink)':44} {v['idle_bytes']:10d} {q['idle_bytes']:10d}")
EOF
