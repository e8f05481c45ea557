#!/usr/bin/env bash
# vtool run's sandbox: every thread runs under its class's seccomp filter once the
# machine is built (the union on all, one more on each vCPU, I/O, monitor and VNC
# thread); a forbidden call (the VTOOL_SANDBOX_TEST hook: an I/O thread calls socket(2))
# kills the process with one line naming it; -sandbox off; -runas nobody runs a disk
# test on images it could not open itself; -chroot into an empty directory survives a
# guest reset (the second boot opens nothing). The sanitizer build, where the sandbox is
# off by default, runs the same with -sandbox on.
. "$(dirname "$0")/lib.sh"
: "${TGUEST:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }

SB=()
[ -n "${VTOOL_SANITIZED:-}" ] && SB=(-sandbox on)
TG=(-kernel "$TGUEST" -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 "${SB[@]}")

# thread_filters PID NAME: the Seccomp_filters count of PID's thread called NAME
thread_filters() {
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then
      sed -n 's/^Seccomp_filters:[[:space:]]*//p' "$t/status"; return; fi
  done
}

# the filters on every thread of a running VM with a disk, a QMP socket and VNC
truncate -s 4M "$T/d.raw"
"$VTOOL" run "${TG[@]}" -append test=spin -serial "file:$T/spin.out" \
  -drive "file=$T/d.raw,format=raw,if=virtio" -qmp "unix:$T/q.sock,server=on,wait=off" \
  -vnc "unix:$T/v.sock" 2>"$T/spin.err" &
vm=$!
for _ in $(seq 100); do grep -q TG-SPIN "$T/spin.out" 2>/dev/null && break; sleep 0.05; done
expect_grep '^Seccomp:[[:space:]]+2$' "/proc/$vm/status"
main=$(sed -n 's/^Seccomp_filters:[[:space:]]*//p' "/proc/$vm/status")
[ "$main" = 1 ] && pass || fail "main thread: $main filters, want 1 (the union)"
for name in vcpu0 virtio-blk-io monitor vnc console signals; do
  n=$(thread_filters $vm $name)
  case $name in console) [ -z "$n" ] && continue ;; esac   # no console thread here
  [ "$n" = 2 ] && pass || fail "thread $name: '$n' filters, want 2 (the union and its class)"
done
kill -TERM $vm; wait $vm; rc=$?
[ $rc -eq 0 ] && pass || fail "SIGTERM under the sandbox: exit $rc: $(cat "$T/spin.err")"
expect_grep 'terminating on signal 15' "$T/spin.err"

# the test hook: an I/O thread calls socket(2): killed by SIGSYS, one line says what
rc=0
VTOOL_SANDBOX_TEST=io "$VTOOL" run "${TG[@]}" -serial "file:$T/k.out" \
  -drive "file=$T/d.raw,format=raw,if=virtio" -append "test=disk dev=vblk ops=i,w:0:8:11,f" \
  >/dev/null 2>"$T/k.err" || rc=$?
[ $rc -eq 159 ] && pass || fail "forbidden call: exit $rc, want 159 (SIGSYS): $(cat "$T/k.err")"
expect_grep "^vtool: sandbox: forbidden system call socket \(41\) in thread 'virtio-blk-io' \(I/O\): vtool killed$" "$T/k.err"
expect_lines 1 "$T/k.err"
# ... and without the sandbox the hook does nothing
rc=0
VTOOL_SANDBOX_TEST=io "$VTOOL" run "${TG[@]}" -sandbox off -serial "file:$T/k2.out" \
  -drive "file=$T/d.raw,format=raw,if=virtio" -append "test=disk dev=vblk ops=i,w:0:8:11,f" \
  >/dev/null 2>"$T/k2.err" || rc=$?
[ $rc -eq 1 ] && pass || fail "-sandbox off: exit $rc: $(cat "$T/k2.err")"
expect_grep '^TG-PASS disk' "$T/k2.out"

# -runas nobody: images only root may open, a disk test on virtio-blk and IDE
if id nobody >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  qemu-img create -q -f qcow2 "$T/r.qcow2" 16M 2>/dev/null || "$VTOOL" img create -q -f qcow2 "$T/r.qcow2" 16M
  truncate -s 4M "$T/ide.raw"
  chmod 600 "$T/r.qcow2" "$T/ide.raw"
  for dev in vblk ata-dma; do
    rc=0
    "$VTOOL" run "${TG[@]}" -runas nobody -serial "file:$T/r-$dev.out" \
      -drive "file=$T/r.qcow2,if=virtio" -drive "file=$T/ide.raw,format=raw,if=ide,index=0" \
      -append "test=disk dev=$dev ops=i,w:0:64:5a,r:0:64:5a,w:100:8:a5,r:100:8:a5,f" \
      >/dev/null 2>"$T/r.err" || rc=$?
    [ $rc -eq 1 ] && pass || fail "-runas nobody, $dev: exit $rc: $(cat "$T/r.err") $(tail -2 "$T/r-$dev.out")"
    expect_grep '^TG-PASS disk' "$T/r-$dev.out"
  done
  # the process really is nobody's
  "$VTOOL" run "${TG[@]}" -runas nobody -append test=spin -serial "file:$T/n.out" &
  vm=$!
  for _ in $(seq 100); do grep -q TG-SPIN "$T/n.out" 2>/dev/null && break; sleep 0.05; done
  uid=$(awk '/^Uid:/ {print $2 $3 $4 $5}' "/proc/$vm/status")
  want=$(id -u nobody); want="$want$want$want$want"
  [ "$uid" = "$want" ] && pass || fail "-runas nobody: uids $uid"
  kill -TERM $vm; wait $vm
  rc=0; "$VTOOL" run "${TG[@]}" -runas no-such-user-x -append test=hello 2>"$T/u.err" || rc=$?
  [ $rc -eq 1 ] && pass || fail "-runas unknown user: exit $rc"
  expect_grep '^vtool: -runas: User "no-such-user-x" doesn.t exist' "$T/u.err"

  # -chroot into an empty directory: the reset's second boot reads nothing from disk
  mkdir "$T/empty"
  rc=0
  timeout 3 "$VTOOL" run "${TG[@]}" -chroot "$T/empty" -runas nobody -append test=reset \
    -serial "file:$T/c.out" >/dev/null 2>"$T/c.err" || rc=$?
  n=$(grep -c '^TG-START' "$T/c.out")
  [ "$n" -ge 2 ] && [ $rc -eq 124 ] && pass ||
    fail "-chroot: $n boots, want 2 or more: exit $rc: $(cat "$T/c.err")"
fi
finish
