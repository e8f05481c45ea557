#!/usr/bin/env bash
# vtool img snapshot / resize vs qemu-img on the same images, side by side: seconds (best of
# RUNS interleaved runs, each on a fresh copy of the image) and the ratio
# qemu_time / vtool_time (>= 1 means vtool is faster).
#
#   bench/img-ops.sh [VTOOL] [RUNS]
#
# The images: 4 GiB qcow2 (64 KiB clusters) with every cluster mapped (preallocation=
# metadata: 65536 data clusters, 8 L2 tables, the most a snapshot has to count) and two
# internal snapshots; "rewritten" then has 256 MiB written after the second snapshot, so
# that the new snapshot also copies the tables whose COPIED flags change.
set -euo pipefail
vtool=${1:-build/cli/vtool}
runs=${2:-5}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-opsbench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

qemu-img create -q -f qcow2 -o preallocation=metadata "$dir/full.qcow2" 4G
qemu-img snapshot -c one "$dir/full.qcow2"
qemu-img snapshot -c two "$dir/full.qcow2"
cp --sparse=always "$dir/full.qcow2" "$dir/rewritten.qcow2"
qemu-io -c "write -P 0x5a 1G 256M" "$dir/rewritten.qcow2" >/dev/null

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.4f}')"; }
best() { sort -n | head -1; }

row() { # label image args... (the tool name is put in front, the copy at the end)
  local label=$1 img=$2; shift 2
  local q v
  q=$(for _ in $(seq "$runs"); do
        cp --sparse=always "$dir/$img" "$dir/run.qcow2"; t qemu-img "$@" "$dir/run.qcow2"
        cp --sparse=always "$dir/$img" "$dir/run.qcow2"; t "$vtool" img "$@" "$dir/run.qcow2" >&2
      done 2>"$dir/v.times" | best)
  v=$(best <"$dir/v.times")
  printf '%-40s qemu-img %7ss  vtool %7ss  ratio %s\n' "$label" "$q" "$v" \
    "$(python3 -c "print(f'{$q/$v:.2f}')")"
}

echo "4 GiB qcow2, 65536 mapped clusters, 2 snapshots; best of $runs"
row "snapshot -c (2 snapshots, no writes)" full.qcow2 snapshot -c three
row "snapshot -c (256 MiB rewritten)" rewritten.qcow2 snapshot -c three
row "snapshot -a one (256 MiB rewritten)" rewritten.qcow2 snapshot -a one
row "snapshot -d one (256 MiB rewritten)" rewritten.qcow2 snapshot -d one
row "snapshot -l" rewritten.qcow2 snapshot -l
