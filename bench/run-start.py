#!/usr/bin/env python3
"""vtool run vs qemu-system-x86_64 -enable-kvm -nodefaults on the same tiny guest.

    bench/run-start.py [VTOOL] [GUEST_ELF] [RUNS]

For each VMM: wall time from exec to exit (median of RUNS, interleaved), peak RSS, and
RSS minus what the guest touched (measured as the peak RSS of the same VMM with the
same guest but -m 16M vs -m 512M would not isolate it, so the guest-touched part is
estimated from the guest: its image plus page tables, under 4 MiB for tguest). For vtool
also the time from exec to the first KVM_RUN (VTOOL_RUN_TIMES). Prints ratios
vtool/qemu for time (goal <= 0.3) and vtool's VMM overhead (goal <= 5 MiB)."""
import os, re, statistics, subprocess, sys, time

vtool = sys.argv[1] if len(sys.argv) > 1 else "build/cli/vtool"
guest = sys.argv[2] if len(sys.argv) > 2 else "build/tests/guests/tguest.elf"
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
append = "test=hello"
common = ["-m", "128", "-smp", "1", "-no-reboot", "-serial", "file:/dev/null",
          "-device", "isa-debug-exit,iobase=0x501,iosize=2", "-kernel", guest,
          "-append", append]
cmds = {
    "vtool": [vtool, "run"] + common,
    "qemu": ["qemu-system-x86_64", "-enable-kvm", "-cpu", "qemu64,-cx16", "-nodefaults",
             "-display", "none"] + common,
}


def one(cmd, env=None):
    # GNU time reports the peak RSS of the exec'd program alone (a python child's
    # ru_maxrss would include the interpreter it was forked from).
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "VTOOL-BENCH-RSS %M"] + cmd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.monotonic() - t0
    err = p.stderr.decode(errors="replace")
    rss = float(re.search(r"VTOOL-BENCH-RSS (\d+)", err).group(1)) / 1024.0
    return wall, rss, p.returncode, err


res = {k: {"wall": [], "rss": [], "first": []} for k in cmds}
res["rc"] = None
env = dict(os.environ, VTOOL_RUN_TIMES="1")
for i in range(runs):
    for name, cmd in cmds.items():
        wall, rss, rc, err = one(cmd, env if name == "vtool" else None)
        if res["rc"] is None:
            res["rc"] = rc
        if rc % 2 != 1 or rc != res["rc"]:
            sys.exit(f"{name} exited {rc} (want the guest's debug-exit status): {err[:300]}")
        res[name]["wall"].append(wall)
        res[name]["rss"].append(rss)
        m = re.search(r"first guest instruction ([0-9.]+) ms", err)
        if m:
            res[name]["first"].append(float(m.group(1)))

v, q = res["vtool"], res["qemu"]
vw, qw = statistics.median(v["wall"]), statistics.median(q["wall"])
vr, qr = max(v["rss"]), max(q["rss"])
guest_mib = os.path.getsize(guest) / 2**20 + 4 * 4096 / 2**20
print(f"guest {guest} ({append}), {runs} runs each, medians")
print(f"{'':8}{'wall s':>10}{'peak RSS MiB':>14}{'RSS-guest MiB':>15}")
print(f"{'vtool':8}{vw:10.3f}{vr:14.1f}{vr - guest_mib:15.1f}")
print(f"{'qemu':8}{qw:10.3f}{qr:14.1f}{qr - guest_mib:15.1f}")
print(f"time ratio vtool/qemu: {vw / qw:.3f} (goal <= 0.3)")
print(f"RSS ratio vtool/qemu:  {vr / qr:.3f}")
if v["first"]:
    print(f"vtool exec -> first KVM_RUN: median {statistics.median(v['first']):.2f} ms (goal <= 5 ms)")
