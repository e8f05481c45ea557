#!/usr/bin/env python3
"""A QMP/HMP client and the monitor scenarios run-monitor.sh plays against vtool run and,
unchanged, against qemu-system-x86_64 (the peer): the same command line, the same checks.

usage: qmp-client.py BINARY TGUEST SCRATCH
BINARY is `vtool run` or qemu-system-x86_64 (given as one word: "VTOOL run" is split).
Prints one line per failed check and "N checks passed, M failed"; exit 0 when all pass.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

BINARY = sys.argv[1].split()
TGUEST, SCRATCH = sys.argv[2], sys.argv[3]
IS_QEMU = "qemu" in os.path.basename(BINARY[0])
checks = failures = 0


def check(ok, what):
    global checks, failures
    if ok:
        checks += 1
    else:
        failures += 1
        print("FAIL: %s: %s" % ("qemu" if IS_QEMU else "vtool", what), flush=True)
    return ok


class QMP:
    """One client: reads the greeting, keeps events apart from replies."""

    def __init__(self, path, negotiate=True, timeout=20):
        self.sock = connect(path, timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []
        self.greeting = self.read()
        if negotiate:
            self.cmd("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the monitor closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self):
        while True:
            m = self.read()
            if "event" in m:
                self.events.append(m)
            else:
                return m

    def send(self, raw):
        self.sock.sendall(raw if isinstance(raw, bytes) else raw.encode())
        return self.reply()

    def cmd(self, name, args=None, **extra):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        msg.update(extra)
        return self.send(json.dumps(msg) + "\n")

    def event(self, name, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            self.sock.settimeout(max(0.1, end - time.time()))
            try:
                m = self.read()
            except socket.timeout:
                break
            if "event" in m:
                self.events.append(m)
        return None

    def close(self):
        self.sock.close()


def connect(path, timeout=20):
    end = time.time() + timeout
    while True:
        try:
            if path.startswith("tcp:"):
                host, port = path[4:].rsplit(":", 1)
                s = socket.create_connection((host, int(port)))
            else:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
            return s
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.05)


def try_connect(path):
    """Connect without waiting: a full listen backlog refuses at once (EAGAIN)."""
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(path)
    except OSError:
        pass
    return s


def hmp_session(path, lines):
    """Send lines to an HMP socket; the text back, terminal escapes and echo removed."""
    s = connect(path)
    s.settimeout(10)
    out = b""
    for line in lines:
        s.sendall(line.encode() + b"\r")
        end = time.time() + 10
        while out.count(b"(qemu) ") < lines.index(line) + 2 and time.time() < end:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            out += data
    s.close()
    text = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", out).decode(errors="replace")
    return text.replace("\r", "")


class VM:
    def __init__(self, name, append, extra=()):
        self.dir = os.path.join(SCRATCH, name)
        os.makedirs(self.dir, exist_ok=True)
        self.out = os.path.join(self.dir, "serial")
        self.qmp = os.path.join(self.dir, "qmp.sock")
        open(self.out, "w").close()
        args = BINARY + ["-enable-kvm", "-cpu", "qemu64,-cx16", "-nodefaults",
                         "-display", "none", "-m", "128", "-kernel", TGUEST,
                         "-append", append, "-serial", "file:" + self.out,
                         "-device", "isa-debug-exit,iobase=0x501,iosize=2",
                         "-qmp", "unix:%s,server=on,wait=off" % self.qmp] + list(extra)
        self.err = open(os.path.join(self.dir, "stderr"), "w")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)

    def serial(self):
        with open(self.out, errors="replace") as f:
            return f.read()

    def count(self):
        return self.serial().count("TG-COUNT")

    def wait_serial(self, text, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.serial():
                return True
            if self.proc.poll() is not None:
                return text in self.serial()
            time.sleep(0.05)
        return False

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def vcpu_cpu_time(pid, tid):
    try:
        with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return None


def is_error(r, cls, desc=None):
    e = r.get("error", {})
    return e.get("class") == cls and (desc is None or e.get("desc") == desc)


def scenario_main():
    """stop/cont/system_reset/quit, every query, the protocol's errors, bad input."""
    hda = os.path.join(SCRATCH, "disk.raw")
    with open(hda, "wb") as f:
        f.truncate(4 << 20)
    hmp = os.path.join(SCRATCH, "main", "hmp.sock")
    vm = VM("main", "test=count cycles=100000000",
            ["-name", "mon-test", "-smp", "2",
             "-drive", "file=%s,format=raw,if=ide,index=0" % hda, "-vga", "std",
             "-monitor", "unix:%s,server=on,wait=off" % hmp])
    try:
        q = QMP(vm.qmp, negotiate=False)
        g = q.greeting.get("QMP", {})
        check(isinstance(g.get("version", {}).get("qemu", {}).get("major"), int)
              and isinstance(g.get("capabilities"), list), "greeting %s" % q.greeting)
        r = q.cmd("query-status")
        check(is_error(r, "CommandNotFound",
                       "Expecting capabilities negotiation with 'qmp_capabilities'"),
              "a command before qmp_capabilities: %s" % r)
        check(q.cmd("qmp_capabilities") == {"return": {}}, "qmp_capabilities")
        r = q.cmd("qmp_capabilities")
        check(is_error(r, "CommandNotFound",
                       "Capabilities negotiation is already complete, command ignored"),
              "qmp_capabilities twice: %s" % r)
        check(vm.wait_serial("TG-COUNT 3"), "the guest counts")

        r = q.cmd("query-status", id="libvirt-7")
        check(r.get("return", {}).get("status") == "running" and
              r["return"].get("running") is True and r.get("id") == "libvirt-7",
              "query-status with an id: %s" % r)
        v = q.cmd("query-version").get("return", {})
        check(all(isinstance(v.get("qemu", {}).get(k), int) for k in ("major", "minor", "micro"))
              and "package" in v, "query-version %s" % v)
        check(q.cmd("query-name") == {"return": {"name": "mon-test"}}, "query-name")
        cpus = q.cmd("query-cpus-fast").get("return", [])
        check(len(cpus) == 2 and [c["cpu-index"] for c in cpus] == [0, 1] and
              all(isinstance(c["thread-id"], int) and c["target"] == "x86_64" and
                  "socket-id" in c["props"] for c in cpus), "query-cpus-fast %s" % cpus)
        blk = q.cmd("query-block").get("return", [])
        ide = [b for b in blk if b.get("device") == "ide0-hd0"]
        check(len(ide) == 1 and ide[0]["inserted"]["file"] == hda and
              ide[0]["inserted"]["drv"] == "raw" and ide[0]["inserted"]["ro"] is False and
              ide[0]["removable"] is False, "query-block %s" % blk)
        check(q.cmd("query-vnc") == {"return": {"enabled": False}}, "query-vnc")
        # screendump of the VGA (-display none: no viewer, the picture all the same)
        for fmt, magic in (("ppm", b"P6\n"), ("png", b"\x89PNG\r\n\x1a\n")):
            shot = os.path.join(SCRATCH, "shot." + fmt)
            r = q.cmd("screendump", {"filename": shot, "format": fmt})
            data = open(shot, "rb").read() if os.path.exists(shot) else b""
            check(r == {"return": {}} and data.startswith(magic), "screendump %s: %s %r" %
                  (fmt, r, data[:16]))
            if fmt == "ppm" and data.startswith(magic):
                m = re.match(rb"P6\n(\d+) (\d+)\n255\n", data)
                check(m is not None and len(data) == m.end() + int(m[1]) * int(m[2]) * 3,
                      "screendump ppm: the size matches the header (%d bytes)" % len(data))
        r = q.cmd("screendump", {"filename": os.path.join(SCRATCH, "x"), "format": "bmp"})
        check(is_error(r, "GenericError"), "screendump format bmp: %s" % r)

        # stop: the STOP event, "paused", the vCPUs do nothing, the count stands still
        r = q.cmd("stop")
        check(r == {"return": {}} and q.event("STOP") is not None, "stop: %s" % r)
        check(q.cmd("query-status").get("return", {}).get("status") == "paused", "paused")
        time.sleep(0.3)
        n1, t1 = vm.count(), [vcpu_cpu_time(vm.proc.pid, c["thread-id"]) for c in cpus]
        time.sleep(1.0)
        n2, t2 = vm.count(), [vcpu_cpu_time(vm.proc.pid, c["thread-id"]) for c in cpus]
        check(n1 == n2, "the guest counted on while stopped: %d -> %d" % (n1, n2))
        check(t1 == t2, "vCPU threads used CPU time while stopped: %s -> %s" % (t1, t2))
        r = q.cmd("human-monitor-command", {"command-line": "info status"})
        check(r.get("return", "").strip() == "VM status: paused", "HMP info status: %s" % r)
        r = q.cmd("human-monitor-command", {"command-line": "info registers"})
        check(re.search(r"[RE]IP=[0-9a-f]+", r.get("return", "")) is not None,
              "HMP info registers: %s" % r)
        check(q.cmd("stop") == {"return": {}}, "stop again is fine")
        r = q.cmd("cont")
        check(r == {"return": {}} and q.event("RESUME") is not None, "cont: %s" % r)
        check(vm.wait_serial("TG-COUNT %d" % (n2 + 3), 20), "the guest counts after cont")

        # the protocol's errors, each answered, none fatal
        r = q.cmd("no-such-command")
        check(is_error(r, "CommandNotFound", "The command no-such-command has not been found"),
              "unknown command: %s" % r)
        r = q.send('{"arguments": {}}\n')
        check(is_error(r, "GenericError", "QMP input lacks member 'execute'"), "no execute: %s" % r)
        r = q.send('[1, 2]\n')
        check(is_error(r, "GenericError", "QMP input must be a JSON object"), "array: %s" % r)
        r = q.send('{"execute": 42}\n')
        check(is_error(r, "GenericError", "QMP input member 'execute' must be a string"),
              "execute not a string: %s" % r)
        r = q.cmd("query-status", {"frob": 1})
        check(is_error(r, "GenericError", "Parameter 'frob' is unexpected"), "unexpected: %s" % r)
        r = q.cmd("human-monitor-command", {})
        check(is_error(r, "GenericError", "Parameter 'command-line' is missing"), "missing: %s" % r)
        r = q.cmd("screendump", {"filename": 5})
        check(is_error(r, "GenericError"), "wrong type: %s" % r)
        r = q.send('{"execute": }\n')
        check(is_error(r, "GenericError"), "malformed JSON: %s" % r)
        r = q.send('{"execute": "query-status", "arguments": {"x": "' + "A" * (2 << 20) + '"}}\n')
        check(is_error(r, "GenericError"), "a 2 MiB message: %s" % str(r)[:200])
        r = q.send("[" * 100 + "]" * 100 + "\n")
        check(is_error(r, "GenericError"), "nesting 100 deep: %s" % r)
        # two messages in one write, no newline between them, as socat pipes them
        q.sock.sendall(b'{"execute":"query-status","id":1}{"execute":"query-name","id":2}')
        r1, r2 = q.reply(), q.reply()
        check(r1.get("id") == 1 and r2.get("id") == 2, "back-to-back messages: %s %s" % (r1, r2))
        check(q.cmd("query-status").get("return", {}).get("running") is True,
              "the session and the VM survived bad input")

        # many clients: qemu's socket chardev serves one at a time; the rest wait
        others = [try_connect(vm.qmp) for _ in range(30)]
        check(q.cmd("query-status").get("return", {}).get("running") is True,
              "responsive with 30 clients waiting")
        for s in others[1:]:
            s.close()
        # a second monitor whose client never reads while events pile up
        r = hmp_session(hmp, ["info status", "stop", "info status", "cont", "info block",
                              "bogus"])
        check("VM status: running" in r and "VM status: paused" in r,
              "HMP socket: info status, stop, cont: %r" % r[:300])
        check(re.search(r"ide0-hd0.*: %s \(raw\)" % re.escape(hda), r) is not None,
              "HMP info block: %r" % r[-400:])
        check("unknown command: 'bogus'" in r, "HMP unknown command")
        check(q.event("STOP") and q.event("RESUME"), "HMP's stop/cont reach QMP clients as events")
        slow = try_connect(vm.qmp)  # queued behind q (or refused): never reads
        for _ in range(20):
            q.cmd("stop")
            q.cmd("cont")
        check(q.cmd("query-status").get("return", {}).get("running") is True,
              "stop/cont storm with a client that never reads")
        slow.close()
        others[0].close()

        # system_reset: the RESET event, the guest starts over
        starts = vm.serial().count("TG-START")
        r = q.cmd("system_reset")
        ev = q.event("RESET")
        check(r == {"return": {}} and ev is not None and
              ev.get("data") == {"guest": False, "reason": "host-qmp-system-reset"},
              "system_reset: %s %s" % (r, ev))
        end = time.time() + 60
        while vm.serial().count("TG-START") <= starts and time.time() < end:
            time.sleep(0.1)
        check(vm.serial().count("TG-START") > starts, "the guest started again")
        check(q.cmd("query-status").get("return", {}).get("status") == "running",
              "running after system_reset")

        # quit: the reply, then SHUTDOWN, then the process ends with 0
        r = q.cmd("quit")
        ev = q.event("SHUTDOWN")
        check(r == {"return": {}} and ev is not None and
              ev.get("data") == {"guest": False, "reason": "host-qmp-quit"},
              "quit: %s %s" % (r, ev))
        check(vm.wait() == 0, "exit status after quit: %s" % vm.proc.returncode)
    finally:
        vm.kill()


def scenario_powerdown():
    """system_powerdown reaches a guest that handles the ACPI power button."""
    vm = VM("pwr", "test=powerbtn")
    try:
        q = QMP(vm.qmp)
        r = q.cmd("screendump", {"filename": os.path.join(SCRATCH, "shot-none.ppm")})
        check(is_error(r, "GenericError", "There is no console to take a screendump from"),
              "screendump without a display: %s" % r)
        check(vm.wait_serial("TG-PWRBTN waiting"), "the guest waits for the button")
        r = q.cmd("system_powerdown")
        check(r == {"return": {}} and q.event("POWERDOWN") is not None, "system_powerdown: %s" % r)
        ev = q.event("SHUTDOWN")
        check(ev is not None and ev.get("data") == {"guest": True, "reason": "guest-shutdown"},
              "SHUTDOWN after the guest powered off: %s" % ev)
        check(vm.wait_serial("TG-PWRBTN pressed"), "the guest saw the button")
        check(vm.wait() == 0, "exit status after power-off: %s" % vm.proc.returncode)
    finally:
        vm.kill()


def scenario_prelaunch():
    """-S: nothing runs until cont."""
    vm = VM("prelaunch", "test=count cycles=100000000", ["-S"])
    try:
        q = QMP(vm.qmp)
        r = q.cmd("query-status").get("return", {})
        check(r.get("status") == "prelaunch" and r.get("running") is False, "-S: %s" % r)
        time.sleep(0.5)
        check("TG-START" not in vm.serial(), "the guest ran before cont")
        q.cmd("stop")
        check(q.cmd("query-status")["return"]["status"] == "prelaunch", "stop in prelaunch")
        r = q.cmd("cont")
        check(r == {"return": {}} and q.event("RESUME") is not None, "cont from prelaunch")
        check(vm.wait_serial("TG-COUNT 2"), "the guest runs after cont")
        q.cmd("quit")
        check(vm.wait() == 0, "quit")
    finally:
        vm.kill()


def scenario_no_shutdown():
    """-no-shutdown: a guest power-off leaves the machine in "shutdown" until a reset."""
    vm = VM("noshut", "test=poweroff", ["-no-shutdown", "-S"])
    try:
        q = QMP(vm.qmp)
        q.cmd("cont")
        ev = q.event("SHUTDOWN", 60)
        check(ev is not None and ev.get("data", {}).get("guest") is True, "SHUTDOWN: %s" % ev)
        check(q.event("STOP") is not None, "STOP after the guest's power-off")
        check(q.cmd("query-status").get("return", {}).get("status") == "shutdown",
              "status shutdown")
        check(vm.proc.poll() is None, "-no-shutdown: the process stays")
        r = q.cmd("cont")
        check(is_error(r, "GenericError", "Resetting the Virtual Machine is required"),
              "cont needs a reset: %s" % r)
        starts = vm.serial().count("TG-START")
        q.cmd("system_reset")
        check(q.event("RESET") is not None, "RESET")
        end = time.time() + 10  # the reset is carried out by the main loop, a moment later
        while q.cmd("query-status")["return"]["status"] == "shutdown" and time.time() < end:
            time.sleep(0.05)
        r = q.cmd("query-status").get("return", {})
        check(r.get("status") in ("prelaunch", "running"), "after system_reset: %s" % r)
        if r.get("status") == "prelaunch":
            q.cmd("cont")
        end = time.time() + 60
        while vm.serial().count("TG-START") <= starts and time.time() < end:
            time.sleep(0.1)
        check(vm.serial().count("TG-START") > starts, "the guest booted again")
        q.event("SHUTDOWN", 60)
        q.cmd("quit")
        check(vm.wait() == 0, "quit")
    finally:
        vm.kill()


for fn in (scenario_main, scenario_powerdown, scenario_prelaunch, scenario_no_shutdown):
    # qemu is the reference: under the nested KVM here it now and then loses a guest's
    # power-off or ends early; its scenario gets a second try (vtool's never does).
    for attempt in range(2 if IS_QEMU else 1):
        before = (checks, failures)
        try:
            fn()
        except Exception as e:  # a broken connection or a timeout fails the scenario
            check(False, "%s: %s: %s" % (fn.__name__, type(e).__name__, e))
        if failures == before[1] or attempt == 1 or not IS_QEMU:
            break
        print("qemu: %s failed; trying once more" % fn.__name__, flush=True)
        checks, failures = before
print("%d checks passed, %d failed" % (checks, failures))
sys.exit(0 if failures == 0 and checks > 0 else 1)
