#!/usr/bin/env bash
# virtio-net TX over a tap: vtool run vs qemu-system-x86_64 -enable-kvm, same guest
# (tguest blasting UDP frames to the bridge), same tap, inside a private network
# namespace. Prints guest-measured frames/s and Mbit/s, what the host's tap counted, and
# the ratio vtool/qemu (>= 1: vtool faster). Needs root.
#
#   bench/run-net.sh [VTOOL] [GUEST] [FRAMES]
set -euo pipefail
vtool=$(realpath "${1:-build/cli/vtool}")
guest=$(realpath "${2:-build/tests/guests/tguest.elf}")
frames=${3:-20000}
ns=vtool-bench-$$
ip netns add $ns
trap 'ip netns del $ns' EXIT
ip netns exec $ns "$vtool" net setup --bridge br0 --addr 192.168.57.1/24 --tap tap0 >/dev/null
mhz=$(awk '/^cpu MHz/ {print $4; exit}' /proc/cpuinfo)

run() { # VMM SIZE -> "cycles host_packets"
  local vmm=$1 size=$2 before after out
  before=$(ip netns exec $ns cat /sys/class/net/tap0/statistics/rx_packets)
  local common=(-m 64 -device isa-debug-exit,iobase=0x501,iosize=2 -kernel "$guest"
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0
    -append "test=net ip=192.168.57.10 gw=192.168.57.1 blast=$frames size=$size" -serial stdio)
  if [ "$vmm" = vtool ]; then
    out=$(ip netns exec $ns "$vtool" run "${common[@]}" 2>&1 || true)
  else
    out=$(ip netns exec $ns qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults \
      -display none -no-reboot "${common[@]}" 2>&1 || true)
  fi
  after=$(ip netns exec $ns cat /sys/class/net/tap0/statistics/rx_packets)
  echo "$(echo "$out" | tr -d '\r' | sed -n 's/^TG-NETBENCH .*cycles=\([0-9]*\)$/\1/p') $((after - before))"
}

printf "%6s %12s %12s %11s %11s %15s %7s\n" size vtool_fps qemu_fps vtool_Mb/s qemu_Mb/s host_got_v/q ratio
for size in 1514 64; do
  v=$(run vtool $size); q=$(run qemu $size)
  python3 - $size $v $q $frames $mhz <<'PY'
import sys
size, vc, vh, qc, qh, frames, mhz = sys.argv[1:]
hz = float(mhz) * 1e6
vf, qf = int(frames) / (int(vc) / hz), int(frames) / (int(qc) / hz)
print(f"{size:>6} {vf:12.0f} {qf:12.0f} {vf*int(size)*8/1e6:11.1f} {qf*int(size)*8/1e6:11.1f} {vh:>6}/{qh:<7} {vf/qf:7.2f}")
PY
done
