#!/usr/bin/env bash
# vtool run's machine and direct boot, with tguest (tests/guests): serial output, exit
# status through isa-debug-exit, RTC, SMP bring-up, e820 and RAM, initrd placement, the
# bzImage path, lifecycle (power-off, reset, signals, Ctrl-A x, pidfile, daemonize) and
# clear errors for guest faults, emulation failures and bad command lines. A differential
# part runs the same guest under qemu-system-x86_64 -enable-kvm and compares output.
. "$(dirname "$0")/lib.sh"
: "${TGUEST:?}" "${TGUEST_BZIMAGE:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }

EXIT_DEV=(-device isa-debug-exit,iobase=0x501,iosize=2)
# vt OUT ARGS...: run vtool with the serial port on stdout, into $T/OUT; sets $rc.
vt() {
  local out=$1; shift
  rc=0
  timeout 60 "$VTOOL" run "${EXIT_DEV[@]}" "$@" >"$T/$out" 2>"$T/$out.err" || rc=$?
  tr -d '\r' <"$T/$out" >"$T/$out.tmp" && mv "$T/$out.tmp" "$T/$out"
}
want_rc() { if [ "$rc" -eq "$1" ]; then pass; else fail "$2: exit $rc, want $1: $(head -c 300 "$T/$3.err")"; fi; }

# hello over serial; exit status from the guest (pass -> 1, code N -> 2N+1)
vt hello -kernel "$TGUEST" -append "test=hello"
want_rc 1 hello hello
expect_grep '^Hello from tguest$' "$T/hello"
expect_grep '^TG-CMDLINE test=hello$' "$T/hello"
for code in 0 5 100; do
  vt exit -kernel "$TGUEST" -append "test=exit code=$code"
  want_rc $(( (code * 2 + 1) & 255 )) "exit code=$code" exit
done

# RTC: real time, within two minutes of the host's
vt rtc -kernel "$TGUEST" -append "test=rtc now=$(date +%s)"
want_rc 1 rtc rtc
expect_grep "^TG-RTC $(date -u +%Y-%m-)" "$T/rtc"
expect_grep '^TG-PASS rtc$' "$T/rtc"

# SMP: every vCPU is listed in the MADT and checks in after INIT/SIPI
for n in 1 2 4; do
  vt smp -smp $n -kernel "$TGUEST" -append "test=smp"
  want_rc 1 "smp $n" smp
  expect_grep "^TG-SMP cpus=$n online=$n$" "$T/smp"
done

# memory: the e820 map ends exactly at -m, and the guest can write all of it
for m in 64 200; do
  vt mem -m $m -kernel "$TGUEST" -append "test=mem"
  want_rc 1 "mem -m $m" mem
  expect_grep "^TG-E820 start=0x100000 end=0x$(printf %x $((m * 1048576 - 1))) type=1$" "$T/mem"
  expect_grep "^TG-MEM touched=[0-9]+ ok$" "$T/mem"
done

# initrd: placed page-aligned at the top of RAM, bytes intact; both boot paths
head -c 300000 /dev/urandom >"$T/rd.img"
want_hash=$(python3 -c '
import sys
h = 0
for b in open(sys.argv[1], "rb").read():
    h = (h * 31 + b) & (2**64 - 1)
print("%x" % h)' "$T/rd.img")
top=$((128 * 1048576))
want_addr=$(printf '0x%x' $(( (top - 300000) & ~4095 )))
for k in "$TGUEST" "$TGUEST_BZIMAGE"; do
  vt initrd -m 128 -kernel "$k" -initrd "$T/rd.img" -append "test=initrd"
  want_rc 1 "initrd $(basename "$k")" initrd
  expect_grep "^TG-INITRD addr=$want_addr size=300000 hash=$want_hash$" "$T/initrd"
done

# the Linux boot protocol path (bzImage-shaped tguest): cmdline, e820, RAM
vt bz -m 96 -kernel "$TGUEST_BZIMAGE" -append "test=mem extra=words"
want_rc 1 "bzImage mem" bz
expect_grep '^TG-START boot=linux$' "$T/bz"
expect_grep '^TG-CMDLINE test=mem extra=words$' "$T/bz"
expect_grep "^TG-E820 start=0x100000 end=0x5ffffff type=1$" "$T/bz"

# lifecycle: ACPI power-off exits 0; a reset exits 0 with -no-reboot, else reboots
vt off -kernel "$TGUEST" -append "test=poweroff"
want_rc 0 poweroff off
expect_grep '^TG-POWEROFF ' "$T/off"
vt reset -no-reboot -kernel "$TGUEST" -append "test=reset"
want_rc 0 "reset -no-reboot" reset
rc=0
timeout 3 "$VTOOL" run -kernel "$TGUEST" -append "test=reset" >"$T/reboot" 2>&1 || rc=$?
starts=$(grep -c '^TG-START' "$T/reboot" || true)
if [ "$rc" -eq 124 ] && [ "$starts" -ge 2 ]; then pass; else fail "reset without -no-reboot: rc $rc, $starts boots"; fi

# SIGTERM / SIGINT: clean shutdown, exit 0, qemu's message
for sig in TERM INT; do
  rm -f "$T/spin.out"
  "$VTOOL" run -kernel "$TGUEST" -append "test=spin" -serial "file:$T/spin.out" 2>"$T/sig.err" &
  pid=$!
  for _ in $(seq 50); do grep -q TG-SPIN "$T/spin.out" 2>/dev/null && break; sleep 0.1; done
  kill -$sig $pid
  ( sleep 10; kill -9 $pid 2>/dev/null ) &
  rc=0; wait $pid || rc=$?
  want_rc 0 "SIG$sig" sig
  expect_grep "terminating on signal $(kill -l $sig)" "$T/sig.err"
done

# -pidfile and -daemonize: the parent returns at once, the pid file names the VM, which
# removes it when it powers off
rc=0
"$VTOOL" run -daemonize -pidfile "$T/vm.pid" -name demo -kernel "$TGUEST" \
  -append "test=spin" -serial "file:$T/d.out" >"$T/d.err" 2>&1 || rc=$?
want_rc 0 -daemonize d
pid=$(cat "$T/vm.pid" 2>/dev/null || echo 0)
if [ "$pid" -gt 0 ] && kill -0 "$pid" 2>/dev/null; then pass; else fail "-pidfile: no live pid"; fi
kill "$pid" 2>/dev/null
for _ in $(seq 50); do [ -e "$T/vm.pid" ] || break; sleep 0.1; done
if [ ! -e "$T/vm.pid" ]; then pass; else fail "pid file left behind"; fi

# guest faults and emulation failures: a clear error, registers, the bytes at RIP
# a triple fault resets the machine as qemu's does: -no-reboot ends the run (status 0),
# without it the guest boots again
vt fault -no-reboot -kernel "$TGUEST" -append "test=fault"
want_rc 0 "triple fault, -no-reboot" fault
expect_grep '^vtool run: vCPU 0: guest triple fault at rip=[0-9a-f]{16}: the machine resets$' "$T/fault.err"
[ "$(grep -c '^TG-FAULT' "$T/fault")" = 1 ] && pass || fail "triple fault, -no-reboot: $(grep -c '^TG-FAULT' "$T/fault") boots"
"$VTOOL" run -kernel "$TGUEST" -append "test=fault" -serial "file:$T/faults" >/dev/null 2>&1 &
vm=$!
for _ in $(seq 200); do
  n=$(grep -c '^TG-FAULT' "$T/faults" 2>/dev/null || true)
  [ "${n:-0}" -ge 3 ] && break
  kill -0 $vm 2>/dev/null || break; sleep 0.05
done
if kill $vm 2>/dev/null; then pass; else fail "triple fault without -no-reboot: vtool exited"; fi
wait $vm 2>/dev/null
n=$(grep -c '^TG-FAULT' "$T/faults" || true)
[ "$n" -ge 3 ] && pass || fail "triple fault without -no-reboot: $n boots, want the guest to boot again"
vt emul -kernel "$TGUEST" -append "test=emul"
want_rc 1 "emulation failure" emul
expect_grep '^vtool: vCPU 0: KVM internal error \(suberror 1: emulation failure' "$T/emul.err"
expect_grep 'code at rip \(gpa [0-9a-f]+\): cc ' "$T/emul.err"

# command-line and file errors: one line naming the thing, exit 1
head -c 4096 /dev/urandom >"$T/junk"
check_err() {
  local pattern=$1; shift
  rc=0
  timeout 20 "$VTOOL" run "$@" >"$T/e" 2>"$T/e.err" || rc=$?
  want_rc 1 "$*" e
  expect_grep "$pattern" "$T/e.err"
}
check_err "^vtool: $T/nope: open: No such file or directory$" -kernel "$T/nope"
check_err "^vtool: $T/junk: load kernel: not a Linux bzImage or an ELF kernel$" -kernel "$T/junk"
check_err "^vtool: /bin/true: load kernel: ELF file without a PVH entry note" -kernel /bin/true
check_err "^vtool: -m: 1024 KiB of RAM is too small" -m 1 -kernel "$TGUEST"
head -c $((40 * 1048576)) /dev/zero >"$T/big"
check_err "^vtool: $T/big: load initrd: 41943040 bytes do not fit" -m 32 -kernel "$TGUEST" -initrd "$T/big"
check_err "^vtool: -frobnicate: invalid option$" -frobnicate
check_err "^vtool: -m: invalid RAM size 'lots'$" -m lots -kernel "$TGUEST"
check_err "^vtool: -smp: Invalid SMP CPUs 65. The max CPUs supported by machine 'pc' is 64$" -smp 65 -kernel "$TGUEST"
check_err "^vtool: -cpu: unknown CPU feature 'nosuch'$" -cpu host,-nosuch -kernel "$TGUEST"
check_err "^vtool: -vnc: invalid display number 'x'" -vnc :x -kernel "$TGUEST"
check_err "^vtool: -vga: unsupported card 'cirrus' \\(vtool has std and none\\)$" -vga cirrus -kernel "$TGUEST"
check_err "^vtool: -kernel: requires an argument$" -kernel
# accepted for compatibility
vt compat -enable-kvm -accel kvm -machine pc,accel=kvm -M pc -cpu host,-cx16,+x2apic \
  -name vm -nodefaults -display none -vga none -monitor none -m 2048 -smp cpus=2,sockets=1 \
  -kernel "$TGUEST" -append "test=hello"
want_rc 1 "qemu-style options" compat

# differential: the same guest under qemu-system-x86_64 prints the same serial lines
if command -v qemu-system-x86_64 >/dev/null; then
  q() {
    local out=$1; shift
    rc=0
    timeout 60 qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults -display none \
      -no-reboot -serial "file:$T/$out" "${EXIT_DEV[@]}" "$@" >/dev/null 2>"$T/$out.err" || rc=$?
    tr -d '\r' <"$T/$out" | sort >"$T/$out.sorted"
  }
  # PVH ELF, and the bzImage (qemu runs its real-mode setup code through SeaBIOS; vtool
  # enters it at the 64-bit entry): the same lines either way
  for k in "$TGUEST" "$TGUEST_BZIMAGE"; do
    for args in "test=hello" "test=exit code=21" "test=smp"; do
      q qemu -smp 2 -kernel "$k" -append "$args"; qrc=$rc
      vt mine -smp 2 -kernel "$k" -append "$args"
      sort "$T/mine" >"$T/mine.sorted"
      if [ "$rc" -eq "$qrc" ] && cmp -s "$T/mine.sorted" "$T/qemu.sorted"; then pass
      else fail "$(basename "$k") '$args': vtool rc $rc vs qemu $qrc; diff: $(diff "$T/mine.sorted" "$T/qemu.sorted" | head -5)"; fi
    done
  done
  # a triple fault under -no-reboot: qemu ends the run with status 0 too, after one boot
  q qemu -kernel "$TGUEST" -append "test=fault"
  [ "$rc" -eq 0 ] && [ "$(grep -c '^TG-FAULT' "$T/qemu.sorted")" = 1 ] && pass \
    || fail "qemu on a triple fault: rc $rc, $(grep -c '^TG-FAULT' "$T/qemu.sorted") boots"
  # the initrd arrives intact through both loaders
  q qemu -kernel "$TGUEST_BZIMAGE" -initrd "$T/rd.img" -append "test=initrd"
  expect_grep "^TG-INITRD addr=0x[0-9a-f]+ size=300000 hash=$want_hash$" "$T/qemu.sorted"
fi
finish
