#!/usr/bin/env bash
# End to end, inside network namespaces this test creates: `vtool net setup` builds the
# seed's bridge + tap + NAT; `vtool run` attaches tguest to the tap with virtio-net
# (both qemu spellings); the host pings the guest through br0 and gets replies, and the
# guest pings an "uplink" namespace through the NAT, where the packet arrives with the
# uplink's address as its source (masqueraded). The second guest runs as 'nobody'.
. "$(dirname "$0")/lib.sh"
: "${TGUEST:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }
need ip nft ping
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }

ns=vtool-n-$$
peer=vtool-u-$$
cleanup() {
  [ -n "${vm:-}" ] && kill -9 "$vm" 2>/dev/null
  ip netns del $ns 2>/dev/null; ip netns del $peer 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
ip netns add $ns || { echo "SKIP: cannot create network namespaces"; exit 77; }
ip netns add $peer
in_ns() { ip netns exec $ns "$@"; }
in_ns ip link set lo up
in_ns ip link add up0 type veth peer name up1 netns $peer
in_ns ip addr add 10.99.0.1/24 dev up0
in_ns ip link set up0 up
ip netns exec $peer ip addr add 10.99.0.2/24 dev up1
ip netns exec $peer ip link set up1 up
ip netns exec $peer nft add table ip probe
ip netns exec $peer nft add chain ip probe in '{ type filter hook input priority 0; }'
ip netns exec $peer nft add rule ip probe in ip saddr 10.99.0.1 icmp type echo-request counter
ip netns exec $peer nft add rule ip probe in ip saddr 192.168.57.0/24 counter

expect_rc 0 in_ns "$VTOOL" net setup --bridge br0 --addr 192.168.57.1/24 --tap tap0 --nat up0

# boot NAME NIC-OPTIONS...: start the guest, ping it 3 times from the host, wait for it.
boot() {
  local name=$1; shift
  in_ns timeout 90 "$VTOOL" run -m 64 "$@" -device isa-debug-exit,iobase=0x501,iosize=2 \
    -kernel "$TGUEST" -serial "file:$T/$name.out" \
    -append "test=net ip=192.168.57.10 gw=192.168.57.1 peer=10.99.0.2 answers=3 secs=60" \
    2>"$T/$name.err" &
  vm=$!
  for _ in $(seq 100); do grep -q "TG-NET ready" "$T/$name.out" 2>/dev/null && break; sleep 0.1; done
  if in_ns ping -c 3 -W 5 192.168.57.10 >"$T/$name.ping" 2>&1; then pass
  else fail "$name: no replies from the guest: $(cat "$T/$name.ping")"; fi
  rc=0; wait $vm || rc=$?; vm=
  if [ $rc -eq 1 ]; then pass; else fail "$name: guest exit $rc: $(tail -3 "$T/$name.out") $(cat "$T/$name.err")"; fi
  expect_grep '^TG-NET echo reply from 10\.99\.0\.2' "$T/$name.out"
  expect_grep '^TG-NET answered echo request from 192\.168\.57\.1' "$T/$name.out"
}
boot netdev -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:ab:cd:ef
expect_grep '^TG-NET mac=52:54:00:ab:cd:ef$' "$T/netdev.out"
# the same as 'nobody' (the tap is opened first, then vtool drops to that user)
runas=(); id nobody >/dev/null 2>&1 && runas=(-runas nobody)
boot net -net nic,model=virtio -net tap,ifname=tap0,script=no,downscript=no "${runas[@]}"
expect_grep '^TG-NET mac=52:54:00:12:34:56$' "$T/net.out"

# masqueraded: the uplink saw the guest's pings coming from 10.99.0.1, never 192.168.57.x
ip netns exec $peer nft list chain ip probe in >"$T/probe"
expect_grep 'ip saddr 10\.99\.0\.1 icmp type echo-request counter packets [1-9]' "$T/probe"
expect_grep 'ip saddr 192\.168\.57\.0/24 counter packets 0 ' "$T/probe"

# errors
rc=0
in_ns "$VTOOL" run -kernel "$TGUEST" -netdev tap,id=n0,ifname=tap0 -device virtio-net-pci,netdev=n9 \
  >"$T/e" 2>"$T/e.err" || rc=$?
if [ $rc -eq 1 ]; then pass; else fail "unknown netdev: rc $rc"; fi
expect_grep "^vtool: -device: netdev 'n9' not found" "$T/e.err"

# qemu's tap scripts: script= runs with the tap's name once it is open, downscript= when
# vtool has ended (from a helper, so also after a kill); qemu's defaults are
# /etc/qemu-ifup and /etc/qemu-ifdown; a failing script stops the start-up
printf '#!/bin/sh\necho "up $1 $(ip -o link show "$1" | grep -c .)" >>%s/log\n' "$T" >"$T/up.sh"
printf '#!/bin/sh\necho "down $1" >>%s/log\n' "$T" >"$T/down.sh"
chmod +x "$T/up.sh" "$T/down.sh"
hello() {
  rc=0
  in_ns timeout 60 "$VTOOL" run -m 64 -kernel "$TGUEST" -append test=hello -serial none \
    -device isa-debug-exit,iobase=0x501,iosize=2 "$@" >"$T/s.out" 2>"$T/s.err" || rc=$?
}
hello -netdev tap,id=n0,ifname=tap0,script=$T/up.sh,downscript=$T/down.sh \
  -device virtio-net-pci,netdev=n0
if [ $rc -eq 1 ]; then pass; else fail "scripts: rc $rc: $(cat "$T/s.err")"; fi
for _ in $(seq 50); do grep -q down "$T/log" 2>/dev/null && break; sleep 0.1; done
expect_grep '^up tap0 1$' "$T/log"
expect_grep '^down tap0$' "$T/log"
# killed: the downscript still runs
: >"$T/log"
ip netns exec $ns "$VTOOL" run -m 64 -kernel "$TGUEST" -append test=spin -serial "file:$T/k.out" \
  -net nic -net tap,ifname=tap0,script=$T/up.sh,downscript=$T/down.sh 2>"$T/k.err" &
vm=$!
for _ in $(seq 100); do grep -q TG-SPIN "$T/k.out" 2>/dev/null && break; sleep 0.1; done
kill -9 $vm; wait $vm 2>/dev/null; vm=
for _ in $(seq 50); do grep -q down "$T/log" 2>/dev/null && break; sleep 0.1; done
expect_grep '^down tap0$' "$T/log"
hello -net nic -net tap,ifname=tap0,script=/bin/false,downscript=no
if [ $rc -eq 1 ]; then pass; else fail "failing script: rc $rc"; fi
expect_grep "^vtool: /bin/false: network script for 'tap0' failed with status 1 \(give script=no" "$T/s.err"
if [ -x /etc/qemu-ifup ] && grep -q 'no bridge for guest interface' /etc/qemu-ifup; then
  hello -net nic -net tap,ifname=tap0
  if [ $rc -eq 1 ]; then pass; else fail "default script: rc $rc: $(cat "$T/s.err")"; fi
  expect_grep 'no bridge for guest interface found' "$T/s.err"   # Debian's /etc/qemu-ifup ran
fi
rc=0
"$VTOOL" run -kernel "$TGUEST" -net nic -net user >"$T/e" 2>"$T/e.err" || rc=$?
expect_grep "^vtool: -net: user networking is not supported \(use tap\)$" "$T/e.err"

expect_rc 0 in_ns "$VTOOL" net teardown --bridge br0 --addr 192.168.57.1/24 --tap tap0 --nat up0
finish
