#!/usr/bin/env python3
"""vtool run -nographic on a terminal: raw mode while the guest runs, qemu's Ctrl-A
escapes (C-a h prints help, C-a x quits with status 0), and the terminal restored
exactly afterwards -- also when the guest ends the VM itself."""
import os, pty, select, sys, termios, time

vtool, guest = os.environ["VTOOL"], os.environ["TGUEST"]
failures = checks = 0


def check(ok, what):
    global failures, checks
    if ok:
        checks += 1
    else:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def read_until(fd, marker, limit=20.0):
    buf, end = b"", time.monotonic() + limit
    while marker not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def run(args, keys):
    ref_master, ref_slave = os.openpty()
    reference = termios.tcgetattr(ref_slave)
    os.close(ref_master)
    os.close(ref_slave)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(vtool, [vtool, "run", "-nographic", "-kernel", guest,
                         "-device", "isa-debug-exit,iobase=0x501,iosize=2"] + args)
    out = read_until(fd, b"TG-SPIN" if "test=spin" in args else b"TG-")
    raw = termios.tcgetattr(fd)
    for k in keys:
        os.write(fd, k)
        out += read_until(fd, b"C-a x" if k == b"\x01h" else b"\x00", 1.0)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
            break
        read_until(fd, b"\x00", 0.1)
    after = termios.tcgetattr(fd)
    os.close(fd)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return out, raw, after, reference, status


out, raw, after, ref, status = run(["-append", "test=spin"], [b"\x01h", b"\x01x"])
check(b"TG-SPIN" in out, "guest output reached the terminal: %r" % out[:200])
check(not (raw[3] & termios.ICANON) and not (raw[3] & termios.ECHO), "raw mode while running")
check(b"C-a x    exit emulator" in out, "C-a h prints the escape help: %r" % out[-300:])
check(status == 0, "C-a x exits 0 (got %r)" % status)
check(after[3] == ref[3] and after[0] == ref[0] and after[1] == ref[1],
      "terminal restored after C-a x")

out, raw, after, ref, status = run(["-append", "test=exit code=3"], [])
check(status == 7, "guest-chosen exit status through a terminal (got %r)" % status)
check(after[3] == ref[3], "terminal restored after the guest exits")

print(f"{checks} checks passed, {failures} failed")
sys.exit(1 if failures or not checks else 0)
