#!/usr/bin/env bash
# Firmware boot time: the same boot sector (tests/guests/bootsect.S) from an IDE disk, an
# El Torito CD and a virtio-blk disk, vtool run vs qemu-system-x86_64 -enable-kvm, both
# through Debian's SeaBIOS. Prints the median wall time of each (RUNS runs), the ratio
# vtool/qemu (goal <= 1.0) and where vtool's time goes: its exit counters
# (VTOOL_RUN_STATS) and, when perf can see KVM's tracepoints, the userspace exits of both.
#
#   bench/run-boot.sh [VTOOL] [BOOTSECT] [RUNS]
#
# On this project's machines SeaBIOS runs emulated (~1M instructions/s), so a boot takes
# seconds in both VMMs and the guest dominates.
set -euo pipefail
vtool=${1:-build/cli/vtool}
bootsect=${2:-build/tests/guests/bootsect.bin}
runs=${3:-3}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-bootbench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

dd if=/dev/zero of="$dir/disk.raw" bs=1M count=1 2>/dev/null
dd if="$bootsect" of="$dir/disk.raw" conv=notrunc 2>/dev/null
mkdir "$dir/iso" && cp "$bootsect" "$dir/iso/boot.bin"
xorriso -as mkisofs -quiet -o "$dir/cd.iso" -b boot.bin -no-emul-boot -boot-load-size 4 \
  "$dir/iso" 2>/dev/null

declare -A media=(
  [ide]="-drive file=$dir/disk.raw,format=raw,if=ide"
  [cd]="-cdrom $dir/cd.iso -boot d"
  [virtio-blk]="-drive file=$dir/disk.raw,format=raw,if=virtio"
)
common=(-m 128 -nographic -serial none -device isa-debug-exit,iobase=0x501,iosize=2)

wall() { # CMD... -> seconds (the guest exits with 99)
  local t0 t1
  t0=$(date +%s.%N)
  "$@" </dev/null >/dev/null 2>&1 || true
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

perf_ok=0
if command -v perf >/dev/null && perf stat -e kvm:kvm_userspace_exit true >/dev/null 2>&1; then
  perf_ok=1
fi
userspace_exits() { # CMD... -> count of KVM_RUN returns to userspace
  perf stat -x, -e kvm:kvm_userspace_exit -- "$@" </dev/null 2>&1 >/dev/null \
    | awk -F, '/kvm_userspace_exit/ { print $1 }'
}

printf '%-11s %9s %9s %7s\n' medium vtool_s qemu_s ratio
for m in ide cd virtio-blk; do
  # shellcheck disable=SC2206
  args=(${media[$m]})
  v=$(for _ in $(seq "$runs"); do wall "$vtool" run "${common[@]}" "${args[@]}"; done | median)
  q=$(for _ in $(seq "$runs"); do
        wall qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults "${common[@]}" "${args[@]}"
      done | median)
  printf '%-11s %9.2f %9.2f %7.2f\n' "$m" "$v" "$q" "$(echo "$v / $q" | bc -l)"
done

echo
echo "Where vtool's time goes (one IDE boot, VTOOL_RUN_STATS=1):"
VTOOL_RUN_STATS=1 "$vtool" run "${common[@]}" ${media[ide]} </dev/null 2>&1 >/dev/null \
  | grep '^vtool run:' || true
if [ $perf_ok = 1 ]; then
  echo "Userspace exits per IDE boot (perf stat -e kvm:kvm_userspace_exit):"
  echo "  vtool: $(userspace_exits "$vtool" run "${common[@]}" ${media[ide]})"
  echo "  qemu:  $(userspace_exits qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults "${common[@]}" ${media[ide]})"
fi
