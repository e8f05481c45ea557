#!/usr/bin/env bash
# virtio-blk inside a VM: vtool run vs qemu-system-x86_64 -enable-kvm with the same guest
# (tguest's polling virtio-blk driver) and the same image, side by side. Prints the
# guest-measured IOPS and MB/s of each and the ratio vtool/qemu (>= 1: vtool faster).
#
#   bench/run-disk.sh [VTOOL] [GUEST] [COUNT]
#
# On this project's machines guest CPL0 code (the driver) is emulated, so both VMMs are
# largely bound by the guest; the ratio is the figure that counts.
set -euo pipefail
vtool=${1:-build/cli/vtool}
guest=${2:-build/tests/guests/tguest.elf}
count=${3:-3000}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-diskbench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
mhz=$(awk '/^cpu MHz/ {print $4; exit}' /proc/cpuinfo)
for fmt in raw qcow2; do
  qemu-img create -q -f $fmt "$dir/d.$fmt" 1G
  # fill it so reads hit allocated data
  qemu-io -f $fmt -c "write -P 0x33 0 1G" "$dir/d.$fmt" >/dev/null
done

run() { # VMM FMT MODE BS QD -> cycles
  local vmm=$1 fmt=$2 mode=$3 bs=$4 qd=$5 out
  local common=(-m 256 -device isa-debug-exit,iobase=0x501,iosize=2 -kernel "$guest"
    -drive "file=$dir/d.$fmt,format=$fmt,if=virtio,cache=none"
    -append "test=disk dev=vblk mode=$mode bs=$bs qd=$qd count=$count" -serial stdio)
  if [ "$vmm" = vtool ]; then
    out=$("$vtool" run "${common[@]}" 2>&1 || true)
  else
    out=$(qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults -display none \
      -no-reboot "${common[@]}" 2>&1 || true)
  fi
  echo "$out" | tr -d '\r' | sed -n 's/^TG-BENCH .*cycles=\([0-9]*\)$/\1/p'
}

printf '%-6s %-10s %6s %3s %12s %12s %10s %10s %7s\n' fmt mode bs qd vtool_iops qemu_iops vtool_MB/s qemu_MB/s ratio
for fmt in raw qcow2; do
  for spec in "randread 4096 1" "randread 4096 32" "randwrite 4096 1" "randwrite 4096 32" \
              "seqread 65536 1" "seqread 65536 32" "seqwrite 65536 1" "seqwrite 65536 32"; do
    set -- $spec
    v=$(run vtool $fmt "$@"); q=$(run qemu $fmt "$@")
    python3 - "$fmt" "$@" "$v" "$q" "$count" "$mhz" <<'PY'
import sys
fmt, mode, bs, qd, v, q, count, mhz = sys.argv[1:]
if not v or not q:
    print(f"{fmt:6} {mode:10} {bs:>6} {qd:>3}  (no result: vtool {v!r} qemu {q!r})")
    sys.exit()
hz = float(mhz) * 1e6
vi, qi = int(count) / (int(v) / hz), int(count) / (int(q) / hz)
print(f"{fmt:6} {mode:10} {bs:>6} {qd:>3} {vi:12.0f} {qi:12.0f} {vi*int(bs)/1e6:10.1f} {qi*int(bs)/1e6:10.1f} {vi/qi:7.2f}")
PY
  done
done
