#!/usr/bin/env python3
"""vtool run's display: the std VGA shown over VNC, keyboard and mouse taken back.

Real clients: tests/tools/rfbclient.py (RFB 3.8, raw + DesktopSize, VNC auth).
1. SeaBIOS boots vgasect.bin (INT 10h text, colours, line drawing; keys echoed) under
   vtool and under qemu-system-x86_64 -enable-kvm -vnc: the 720x400 text screens after
   boot and after typing through VNC, and the mode 12h and 13h colour bars, are compared
   pixel by pixel. Tolerance: none, except the one text cell under the cursor (its blink
   phase is the two VMMs' own clocks). The keys arrive in both guests (INT 16h reports).
2. tguest test=vbe sets four DISPI modes (32, 16, 8 with the DAC, 24 bpp) and draws into
   the LFB at CPL3: each captured picture equals the pattern; resolution changes arrive
   as DesktopSize.
3. tguest test=mouse: pointer motion, buttons and the wheel sent over VNC arrive as PS/2
   IntelliMouse packets.
4. Hostile clients (garbage, a huge cut text, a thousand connections, a reader that
   stops) while the guest draws frames: the guest keeps running, a new client gets the
   screen.
5. The seed's installer command line (-hda, -cdrom an ISOLINUX ISO, -boot d, -vnc :N)
   shows SeaBIOS and ISOLINUX's banner, as qemu's screen does (ISOLINUX then goes to
   32-bit code, which this host's nested KVM cannot emulate: both VMMs stop there).
6. -vnc :N listens on 127.0.0.1 only; password-secret= means no access without the
   password; 0.0.0.0 without a password warns; a port in use is a clear error;
   unix:PATH works.
Captures go to $VTOOL_VNC_CAPTURES when set (PNG), else to the scratch dir."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.environ.get("VTOOL_SRC", "."), "tests", "tools"))
from rfbclient import RFB, RFBError  # noqa: E402

VTOOL = os.environ["VTOOL"]
TGUEST = os.environ["TGUEST"]
VGASECT = os.environ["VGASECT"]
T = tempfile.mkdtemp(prefix="vtool-vnc.")
CAP = os.environ.get("VTOOL_VNC_CAPTURES") or T
os.makedirs(CAP, exist_ok=True)
checks = failures = 0
procs = []


T0 = time.monotonic()


def check(ok, what):
    global checks, failures
    if os.environ.get("VNC_TEST_TRACE"):
        print(f"{time.monotonic() - T0:7.1f}s {'ok  ' if ok else 'FAIL'} {what[:100]}", file=sys.stderr)
    if ok:
        checks += 1
    else:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    return ok


def free_display():
    """A display number whose port is free on 127.0.0.1 (others share this machine)."""
    for n in list(range(40 + os.getpid() % 40, 99)) + list(range(20, 40)):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 5900 + n))
            return n
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free VNC port")


def start(args, serial, qemu=False):
    if os.path.exists(serial):
        os.unlink(serial)
    if qemu:
        cmd = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "qemu64,-cx16", "-display", "none",
               "-net", "none", "-serial", "file:" + serial] + args
    else:
        cmd = [VTOOL, "run", "-serial", "file:" + serial] + args
    err = open(serial + ".err", "w")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def serial_text(path):
    try:
        return open(path, "rb").read().decode("latin-1")
    except FileNotFoundError:
        return ""


def wait_serial(path, marker, timeout=60.0, count=1, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if serial_text(path).count(marker) >= count:
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def connect(disp, retry=10.0, **kw):
    """Connect, trying again while refused (not listening yet) or, within `retry`
    seconds, turned away (a server full of other connections), as a viewer's user would."""
    end = time.monotonic() + retry
    while True:
        try:
            return RFB(disp if isinstance(disp, str) else f"127.0.0.1:{disp}", **kw)
        except (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, RFBError):
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def capture(c, name, quiet=0.6):
    c.snapshot(delay=quiet)
    c.save_png(os.path.join(CAP, name + ".png"))
    return bytes(c.fb), c.width, c.height


def compare(a, b, what, cell=(9, 16)):
    """Equal pictures, except inside one text cell (the cursor) when cell is given."""
    (pa, wa, ha), (pb, wb, hb) = a, b
    if not check((wa, ha) == (wb, hb), f"{what}: vtool {wa}x{ha}, qemu {wb}x{hb}"):
        return
    diff = [i // 4 for i in range(0, len(pa), 4) if pa[i:i + 3] != pb[i:i + 3]]
    cells = {((p % wa) // cell[0], (p // wa) // cell[1]) for p in diff} if cell else set()
    ok = not diff or (cell is not None and len(cells) == 1)
    check(ok, f"{what}: {len(diff)} pixels differ (in cells {sorted(cells)[:4]})")


# --- 1. SeaBIOS + INT 10h text, keys, mode 12h/13h: vtool vs qemu ------------------------
disk = os.path.join(T, "vgasect.raw")
with open(disk, "wb") as f:
    f.write(open(VGASECT, "rb").read())
    f.truncate(1 << 20)


def typed(c, text):
    for ch in text:
        shifted = ch.isupper() or ch in '!@#$%^&*()_+{}|:"<>?~'
        if shifted:
            c.key(0xffe1, True)
        c.tap(0xff0d if ch == "\n" else ord(ch))
        if shifted:
            c.key(0xffe1, False)


def sector_session(qemu):
    disp = free_display()
    tag = "qemu" if qemu else "vtool"
    ser = os.path.join(T, tag + "-sect.serial")
    args = ["-m", "128", "-drive", f"file={disk},format=raw,if=ide"]
    args += ["-vnc", f"127.0.0.1:{disp}"] if qemu else ["-vnc", f":{disp}"]
    p = start(args, ser, qemu)
    shots = {}
    try:
        if not check(wait_serial(ser, "VGASECT-READY", proc=p), f"{tag}: boot sector ready"):
            return shots, p, disp, ser
        if not qemu:
            err = open(ser + ".err").read()
            check(f"VNC server on 127.0.0.1:{5900 + disp} (display :{disp}), this host only" in err
                  and f"-vnc 0.0.0.0:{disp},password-secret=ID" in err,
                  f"the listen line names the address and how to allow others: {err!r}")
            local = [l.split()[1] for l in open("/proc/net/tcp").read().splitlines()[1:]]
            port = f"{5900 + disp:04X}"
            check(f"0100007F:{port}" in local and f"00000000:{port}" not in local,
                  "-vnc :N listens on 127.0.0.1 only")
        c = connect(disp)
        shots["boot"] = capture(c, tag + "-text-boot")
        typed(c, "Hi,\nok")
        check(wait_serial(ser, "KEY ", count=6), f"{tag}: 6 keys reached the guest")
        shots["typed"] = capture(c, tag + "-text-typed")
        typed(c, "!")
        if check(wait_serial(ser, "MODE 12", timeout=60), f"{tag}: mode 12h drawn"):
            shots["mode12"] = capture(c, tag + "-mode12")
        typed(c, "@")
        if check(wait_serial(ser, "MODE 13", timeout=60), f"{tag}: mode 13h drawn"):
            shots["mode13"] = capture(c, tag + "-mode13")
        c.close()
    except (RFBError, OSError) as e:
        check(False, f"{tag}: VNC session: {e}")
    return shots, p, disp, ser


vt_shots, vt_proc, vt_disp, vt_ser = sector_session(False)
keys_vt = [l for l in serial_text(vt_ser).splitlines() if l.startswith("KEY")]
check(keys_vt[:4] == ["KEY 2348", "KEY 1769", "KEY 332C", "KEY 1C0D"],
      f"INT 16h saw H, i, comma, Enter (scan code and ASCII): {keys_vt[:4]}")
# a second vtool on the same display: a clear error naming the port
r = subprocess.run([VTOOL, "run", "-vnc", f":{vt_disp}", "-kernel", TGUEST], capture_output=True,
                   text=True, timeout=30)
check(r.returncode == 1 and f"port {5900 + vt_disp} (display :{vt_disp}) on 127.0.0.1 is already in use"
      in r.stderr, f"port in use: rc {r.returncode}: {r.stderr.strip()}")
stop(vt_proc)
# The qemu halves check the picture, not vtool's memory safety: the sanitizer build
# skips them (they cost a SeaBIOS boot each).
QEMU = shutil.which("qemu-system-x86_64") and not os.environ.get("VTOOL_SANITIZED")
if QEMU:
    q_shots, q_proc, _, q_ser = sector_session(True)
    stop(q_proc)
    keys_q = [l for l in serial_text(q_ser).splitlines() if l.startswith("KEY")]
    check(keys_vt == keys_q, f"the same keys under qemu: {keys_vt} vs {keys_q}")
    for name in ("boot", "typed", "mode12", "mode13"):
        if name in vt_shots and name in q_shots:
            compare(vt_shots[name], q_shots[name], f"{name} screen",
                    cell=(9, 16) if name in ("boot", "typed") else None)
        else:
            check(False, f"{name} screen captured by both")
else:
    print("note: no qemu-system-x86_64, or a sanitizer build: the differential half skipped")

# --- 2. VBE modes through DISPI, patterns drawn at CPL3 ---------------------------------


def pattern(mode, w, h):
    out = bytearray(w * h * 4)
    e5 = lambda v: (v << 3) | (v >> 2)
    e6 = lambda v: (v << 2) | (v >> 4)
    c6 = lambda v: ((v & 63) << 2) | (v & 1) << 1 | (v & 1)   # qemu's conversion
    for y in range(h):
        for x in range(w):
            if mode == "A":
                r, g, b = x * 255 // 1023, y * 255 // 767, (x ^ y) & 255
            elif mode == "B":
                r, g, b = e5(x * 31 // 799), e6(y * 63 // 599), e5(((x ^ y) >> 3) & 31)
            elif mode == "C":
                i = (x // 40 + (y // 30) * 16) & 255
                r, g, b = c6(i & 63), c6((i >> 2) & 63), c6(63 - (i & 63))
            else:
                r, g, b = x * 255 // 319, y * 255 // 239, (x + y) & 255
            o = (y * w + x) * 4
            out[o:o + 3] = bytes((b, g, r))
    return out


def same_rgb(fb, want):
    return all(fb[i:i + 3] == want[i:i + 3] for i in range(0, len(want), 4)) if len(fb) == len(want) else False


disp = free_display()
ser = os.path.join(T, "vbe.serial")
p = start(["-m", "128", "-vnc", f":{disp}", "-kernel", TGUEST, "-append", "test=vbe frames=1000000000"], ser)
try:
    c = connect(disp)
    for i, (mode, w, h) in enumerate([("A", 1024, 768), ("B", 800, 600), ("C", 640, 480), ("D", 320, 240)]):
        if not check(wait_serial(ser, f"TG-VBE {mode} ", proc=p), f"tguest drew mode {mode}: {serial_text(ser)[-200:]}"):
            break
        fb, cw, ch = capture(c, f"vtool-vbe-{mode}-{w}x{h}", quiet=0.3)
        check((cw, ch) == (w, h), f"mode {mode}: the client's screen is {cw}x{ch}, want {w}x{h}")
        check(same_rgb(fb, pattern(mode, w, h)), f"mode {mode}: the picture equals the pattern")
        c.tap(ord(" "))
    check(c.resizes[-3:] == [(800, 600), (640, 480), (320, 240)],
          f"resolution changes arrived as DesktopSize: {c.resizes}")

    # --- 4. hostile clients while the guest draws frames ------------------------------
    check(wait_serial(ser, "TG-FRAME 1", proc=p), "the guest draws frames")
    frames_before = serial_text(ser).count("TG-FRAME")
    g = socket.create_connection(("127.0.0.1", 5900 + disp))
    g.sendall(os.urandom(4096))                         # garbage instead of a version
    g3 = RFB(f"127.0.0.1:{disp}")                        # garbage after the handshake
    try:
        g3.sock.sendall(bytes([0xff]) + os.urandom(4096))
    except OSError:
        pass
    g2 = RFB(f"127.0.0.1:{disp}")                        # a huge cut text after a handshake
    try:
        g2.cut_text(b"x" * 1000)
        g2.sock.sendall(struct.pack(">B3xI", 6, 0x7fffffff) + b"y" * 65536)
    except OSError:
        pass
    slow = socket.create_connection(("127.0.0.1", 5900 + disp))   # asks, never reads
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"RFB 003.008\n" + bytes([1, 1]) + struct.pack(">BxHi", 2, 1, 0) +
                 struct.pack(">BBHHHH", 3, 0, 0, 0, 1024, 768) * 200)
    flood = []
    for _ in range(1000):                               # a thousand connections
        try:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", 5900 + disp))
            flood.append(s)
        except OSError:
            break
    time.sleep(2)
    t_good = time.monotonic()
    good = connect(disp, retry=30)                       # a new client during all that
    got = good.wait_update(timeout=20, incremental=False)
    check(got and (good.width, good.height) == (1024, 768),
          f"a new client gets the screen while bad clients hang on ({good.width}x{good.height}, "
          f"{time.monotonic() - t_good:.1f} s)")
    for s in flood:
        s.close()
    frames_mid = serial_text(ser).count("TG-FRAME")
    check(frames_mid > frames_before, f"the guest kept drawing ({frames_before} -> {frames_mid} frames)")
    # A reader that stops holds the server up once (libvncserver's blocking write gives
    # up after ~5 s and drops it); the guest never waits. Then frames flow again.
    time.sleep(6)
    t0 = time.monotonic()
    updates = 0
    while time.monotonic() - t0 < 3:
        if good.wait_update(timeout=1):
            updates += 1
    check(updates >= 3, f"the good client gets frames again after the stalled reader ({updates} in 3 s)")
    frames_end = serial_text(ser).count("TG-FRAME")
    check(p.poll() is None and frames_end > frames_mid,
          f"vtool survived the bad clients and the guest still draws ({frames_mid} -> {frames_end})")
    good.close()
    for s in (g, g2, g3, slow):
        s.close()
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    check(p.returncode == 0, f"vtool exits 0 on SIGTERM ({p.returncode})")
except (RFBError, OSError) as e:
    import traceback
    traceback.print_exc()
    check(False, f"VBE session: {e}")
stop(p)

# --- 3. PS/2 mouse over VNC --------------------------------------------------------------
disp = free_display()
ser = os.path.join(T, "mouse.serial")
p = start(["-m", "128", "-vnc", f":{disp}", "-kernel", TGUEST, "-append", "test=mouse packets=5"], ser)
try:
    c = connect(disp)
    c.wait_update(timeout=5, incremental=False)
    if check(wait_serial(ser, "TG-MOUSE ready id=3", proc=p), "IntelliMouse ID 3 after the knock"):
        c.pointer(100, 100)          # first position: no motion
        c.pointer(110, 95)           # right 10, up 5
        c.pointer(110, 95, 1)        # left down
        c.pointer(110, 95, 0)        # left up
        c.pointer(110, 95, 8)        # wheel up (one step)
        c.pointer(110, 95, 0)
        c.pointer(107, 99, 4)        # right button down while moving left 3, down 4
        wait_serial(ser, "TG-PASS mouse", timeout=20, proc=p)
        got = [l for l in serial_text(ser).splitlines() if l.startswith("TG-MOUSE b=")]
        want = ["TG-MOUSE b=0 dx=10 dy=5 dz=0", "TG-MOUSE b=1 dx=0 dy=0 dz=0",
                "TG-MOUSE b=0 dx=0 dy=0 dz=0", "TG-MOUSE b=0 dx=0 dy=0 dz=-1",
                "TG-MOUSE b=2 dx=-3 dy=-4 dz=0"]
        check(got == want, f"PS/2 packets: {got}")
    c.close()
except (RFBError, OSError) as e:
    check(False, f"mouse session: {e}")
stop(p)

# --- 5. the seed's command line: SeaBIOS and ISOLINUX over VNC, vtool vs qemu -----------
iso_src = ["/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32"]
if all(os.path.exists(f) for f in iso_src) and shutil.which("xorriso") and shutil.which("qemu-img"):
    isl = os.path.join(T, "isl", "isolinux")
    os.makedirs(isl)
    for f in iso_src:
        shutil.copy(f, isl)
    with open(os.path.join(isl, "isolinux.cfg"), "w") as f:
        f.write("PROMPT 0\nTIMEOUT 1\nDEFAULT hd\nLABEL hd\n  LOCALBOOT 0x80\n")
    iso = os.path.join(T, "x.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-b", "isolinux/isolinux.bin",
                    "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                    "-boot-info-table", os.path.join(T, "isl")], check=True, capture_output=True)
    hd = os.path.join(T, "disk.img")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", hd, "1G"], check=True, capture_output=True)

    def seed(qemu):
        disp = free_display()
        ser = os.path.join(T, ("qemu" if qemu else "vtool") + "-seed.serial")
        args = ["-enable-kvm", "-name", "ubuntutest", "-m", "2048", "-hda", hd, "-cdrom", iso, "-boot", "d"]
        p = start(args + ["-vnc", (f"127.0.0.1:{disp}" if qemu else f":{disp}")], ser, qemu)
        shot = None
        try:
            c = connect(disp)
        except (RFBError, OSError):
            stop(p)
            return None, p
        c.request(incremental=False)
        end = time.monotonic() + 90
        while time.monotonic() < end:          # every frame until the guest stops
            c.sock.settimeout(2)
            try:
                if c.read_message() == 0:
                    c.request()
            except socket.timeout:
                err = open(ser + ".err").read()
                if "emulation failure" in err or "internal error" in err:
                    break                       # qemu: stopped, its screen still up
            except (RFBError, OSError):
                break                           # vtool: exited after the KVM error
        if c.width:
            shot = (bytes(c.fb), c.width, c.height)
            c.save_png(os.path.join(CAP, ("qemu" if qemu else "vtool") + "-seed-isolinux.png"))
        c.close()
        stop(p)
        return shot, p
    vs, vp = seed(False)
    check(vs is not None and vp.returncode in (0, 1, -15), f"vtool showed the seed's boot ({vp.returncode})")
    if vs and QEMU:
        qs, _ = seed(True)
        if qs:
            compare(vs, qs, "seed command line: SeaBIOS + ISOLINUX screen")
else:
    print("note: isolinux/syslinux-common, xorriso or qemu-img missing: the seed check skipped")

# --- 6. passwords, other addresses, unix sockets ------------------------------------------
disp = free_display()
ser = os.path.join(T, "auth.serial")
secret = os.path.join(T, "pw")
with open(secret, "w") as f:
    f.write("s3cret")
p = start(["-m", "128", "-vnc", f"0.0.0.0:{disp},password-secret=pw0", "-object", f"secret,id=pw0,file={secret}",
           "-kernel", TGUEST, "-append", "test=mouse packets=1"], ser)
try:
    time.sleep(0.3)
    try:
        connect(disp, retry=0)
        check(False, "no password: refused")
    except RFBError as e:
        check("password" in str(e), f"no password: refused ({e})")
    try:
        connect(disp, retry=0, password="wrong")
        check(False, "a wrong password: refused")
    except RFBError as e:
        check("authentication failed" in str(e), f"a wrong password: refused ({e})")
    c = connect(disp, password="s3cret")
    check(c.security == 2 and c.wait_update(timeout=5, incremental=False), "the password: a screen")
    c.close()
    err = open(ser + ".err").read()
    check("warning" not in err and f"on 0.0.0.0 port {5900 + disp}" in err, f"0.0.0.0 with a password: no warning: {err!r}")
except (RFBError, OSError) as e:
    check(False, f"auth session: {e}")
stop(p)
disp = free_display()
p = start(["-m", "128", "-vnc", f"0.0.0.0:{disp}", "-kernel", TGUEST, "-append", "test=mouse packets=1"], ser)
time.sleep(1.0)
err = open(ser + ".err").read()
check("warning: the VNC server on 0.0.0.0" in err and "no password" in err, f"0.0.0.0 without a password warns: {err!r}")
stop(p)
sock = os.path.join(T, "vnc.sock")
p = start(["-m", "128", "-vnc", "unix:" + sock, "-kernel", TGUEST, "-append", "test=mouse packets=1"], ser)
try:
    c = connect("unix:" + sock)
    check(c.wait_update(timeout=5, incremental=False) and c.width > 0, "unix:PATH: a screen")
    c.close()
except (RFBError, OSError) as e:
    check(False, f"unix socket: {e}")
stop(p)
for args, msg in [(["-vnc", ":1,password-secret=nope"], "password-secret: no secret with id 'nope'"),
                  (["-vnc", ":1,tls-creds=x"], "unsupported VNC option 'tls-creds'"),
                  (["-display", "gtk"], "unsupported display 'gtk'")]:
    r = subprocess.run([VTOOL, "run", "-kernel", TGUEST] + args, capture_output=True, text=True, timeout=30)
    check(r.returncode == 1 and msg in r.stderr, f"{args}: {r.stderr.strip()}")

for p in procs:
    stop(p)
if CAP == T:
    shutil.rmtree(T, ignore_errors=True)
print(f"{checks} checks passed, {failures} failed")
sys.exit(0 if failures == 0 and checks > 0 else 1)
