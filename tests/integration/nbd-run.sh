#!/usr/bin/env bash
# vtool run with its disk on an NBD server: tguest's virtio-blk and ATA drivers write and
# read an export of qemu-nbd (raw) and of vtool img serve (qcow2) through
# -drive file=nbd://...; afterwards qemu-io reads the guest's bytes in the image and
# qemu-img check finds it clean. The default sandbox stays on, through a reconnection.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
: "${TGUEST:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }
need qemu-img qemu-io qemu-nbd python3
cd "$T"
ops="i,w:8:16:a5,r:8:16:a5,r:2048:128:5a,w:4000:255:c6,r:4000:255:c6,f"
P=$(free_port)
for srv in qemu-nbd vtool; do
  for dev in vblk ata-dma; do
    if [ $srv = qemu-nbd ]; then
      fmt=raw; qemu-img create -q -f raw d.img 64M
      qemu-io -f raw -c "write -P 0x5a 1M 64k" d.img >/dev/null
      qserve s.pid -f raw -x disk -t -p "$P" d.img   # -t: vtool run probes, then opens
    else
      fmt=qcow2; qemu-img create -q -f qcow2 d.img 64M
      qemu-io -c "write -P 0x5a 1M 64k" d.img >/dev/null
      vserve s.pid -f qcow2 -x disk -t -p "$P" d.img
    fi
    if [ $dev = vblk ]; then bus=if=virtio; else bus=if=ide,index=0; fi
    rc=0
    timeout 120 "$VTOOL" run -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 \
      -kernel "$TGUEST" -drive "file=nbd://127.0.0.1:$P/disk,format=raw,$bus" \
      -append "test=disk dev=$dev ops=$ops" >run.out 2>run.err || rc=$?
    if [ $rc -eq 1 ]; then pass; else fail "$dev on $srv: exit $rc: $(tail -3 run.out | tr '\n' '|') $(head -c 300 run.err)"; fi
    expect_rc 0 stop s.pid
    expect_rc 0 qemu-io -f $fmt -r -c "read -P 0xa5 4096 8192" -c "read -P 0xc6 $((4000 * 512)) $((255 * 512))" d.img
    [ $fmt = qcow2 ] && expect_rc 0 qemu-img check d.img
  done
done
# Under the default seccomp sandbox, an I/O thread reconnects: the server goes away while
# the machine is stopped (-S) and comes back; `cont` makes the guest's first request find
# the connection broken and dial again (no name lookup: the first connection's address).
need socat
qemu-img create -q -f qcow2 d.img 64M
vserve s.pid -f qcow2 -x disk -t -p "$P" d.img
"$VTOOL" run -S -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 -qmp unix:qmp.sock,server=on,wait=off \
  -kernel "$TGUEST" -drive "file=nbd://localhost:$P/disk?reconnect-delay=10,format=raw,if=virtio" \
  -append "test=disk dev=vblk ops=i,w:8:16:a5,r:8:16:a5,f" >run.out 2>run.err &
vpid=$!
for _ in $(seq 100); do [ -S qmp.sock ] && break; sleep 0.05; done
expect_rc 0 stop s.pid
vserve s.pid -f qcow2 -x disk -t -p "$P" d.img
printf '{"execute":"qmp_capabilities"}\n{"execute":"cont"}\n' | timeout 10 socat -t 1 - UNIX:qmp.sock >/dev/null
rc=0; timeout 60 tail --pid=$vpid -f /dev/null || rc=$?; wait $vpid || rc=$?
[ $rc -eq 1 ] && pass || fail "reconnect under the sandbox: exit $rc: $(tail -3 run.out | tr '\n' '|') $(head -c 300 run.err)"
grep -q 'Bad system call\|SIGSYS\|sandbox' run.err && fail "sandbox: $(head -c 300 run.err)" || pass
expect_rc 0 stop s.pid
expect_rc 0 qemu-io -f qcow2 -r -c "read -P 0xa5 4096 8192" d.img
finish
