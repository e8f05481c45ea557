#!/usr/bin/env bash
# vtool img convert vs qemu-img convert, side by side on the same generated image, printing
# seconds (best of two interleaved runs), output sizes and the throughput ratio qemu_time / vtool_time (>= 1 means vtool
# is faster). qemu-img runs with its best flags (-m 8 -W), as in specs/perf-anchors.md.
#
#   bench/convert.sh [VTOOL] [SIZE_MiB]
#
# The input mixes ~40% zeros (half holes, half written zeros), ~30% compressible text and
# ~30% random bytes in 1 MiB extents, from a fixed seed; the "sparse" rows use an input
# with 5% data (random 1 MiB extents) and 95% holes.
set -euo pipefail
vtool=${1:-build/cli/vtool}
size_mib=${2:-1024}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-convbench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

python3 - "$dir/in.raw" "$size_mib" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(20240601)
words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))).encode() for _ in range(256)]
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for i in range(mib):
        r = rng.random()
        if r < 0.2:
            continue                      # hole
        f.seek(i << 20)
        if r < 0.4:
            f.write(bytes(1 << 20))       # written zeros
        elif r < 0.7:
            out = bytearray()
            while len(out) < (1 << 20):
                out += rng.choice(words) + b" "
            f.write(out[:1 << 20])
        else:
            f.write(rng.randbytes(1 << 20))
PY
# A sparse input too: 5% data (1 MiB extents of random bytes), the rest holes.
python3 - "$dir/sparse.raw" "$size_mib" <<'PY'
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for i in range(mib):
        if rng.random() < 0.05:
            f.seek(i << 20)
            f.write(rng.randbytes(1 << 20))
PY
qemu-img convert -O qcow2 "$dir/sparse.raw" "$dir/sparse.qcow2"
qemu-img convert -O qcow2 "$dir/in.raw" "$dir/in.qcow2"
qemu-img create -q -f qcow2 -b in.qcow2 -F qcow2 "$dir/top.qcow2"
qemu-io -c "write -P 0x42 100M 50M" "$dir/top.qcow2" >/dev/null

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.3f}')"; }
row() { # name, qemu args..., --, vtool args...
  local name=$1; shift
  local qa=() va=()
  while [ "$1" != -- ]; do qa+=("$1"); shift; done; shift
  va=("$@")
  # Two runs each, interleaved, best counts; sync first so that one run's dirty pages are
  # not written back on the next run's clock.
  local tq=999 tv=999 x
  for _ in 1 2; do
    rm -f "$dir/q.out" "$dir/v.out"; sync
    x=$(t qemu-img convert "${qa[@]}" "$dir/q.out"); tq=$(python3 -c "print(min($tq, $x))")
    sync
    x=$(t "$vtool" img convert "${va[@]}" "$dir/v.out"); tv=$(python3 -c "print(min($tv, $x))")
  done
  printf '%-28s %8s %8s %7s %12s %12s\n' "$name" "$tq" "$tv" \
    "$(python3 -c "print(f'{$tq/max($tv,0.001):.2f}')")" "$(stat -c %s "$dir/q.out")" "$(stat -c %s "$dir/v.out")"
}
printf '%-28s %8s %8s %7s %12s %12s\n' case "qemu s" "vtool s" ratio "qemu bytes" "vtool bytes"
row "raw->qcow2 -c zlib" -c -m 8 -W -O qcow2 "$dir/in.raw" -- -c -O qcow2 "$dir/in.raw"
row "raw->qcow2 -c zstd" -c -m 8 -W -O qcow2 -o compression_type=zstd "$dir/in.raw" -- -c -O qcow2 -o compression_type=zstd "$dir/in.raw"
row "raw->qcow2" -m 8 -W -O qcow2 "$dir/in.raw" -- -O qcow2 "$dir/in.raw"
row "qcow2->raw" -m 8 -W -O raw "$dir/in.qcow2" -- -O raw "$dir/in.qcow2"
row "sparse raw->qcow2" -m 8 -W -O qcow2 "$dir/sparse.raw" -- -O qcow2 "$dir/sparse.raw"
row "sparse qcow2->raw" -m 8 -W -O raw "$dir/sparse.qcow2" -- -O raw "$dir/sparse.qcow2"
row "chain->qcow2 (flatten)" -m 8 -W -O qcow2 "$dir/top.qcow2" -- -O qcow2 "$dir/top.qcow2"
# --- VDI and QED rows (fmt-vdi-qed): the foreign formats as source and target ---------
qemu-img convert -O vdi "$dir/in.raw" "$dir/in.vdi"
row "vdi->qcow2" -m 8 -W -O qcow2 "$dir/in.vdi" -- -O qcow2 "$dir/in.vdi"
row "raw->vdi" -m 8 -W -O vdi "$dir/in.raw" -- -O vdi "$dir/in.raw"
qemu-img convert -O qed "$dir/in.raw" "$dir/in.qed"
row "qed->qcow2" -m 8 -W -O qcow2 "$dir/in.qed" -- -O qcow2 "$dir/in.qed"
row "raw->qed" -m 8 -W -O qed "$dir/in.raw" -- -O qed "$dir/in.raw"
# --- end of the VDI and QED rows ------------------------------------------------------
# --- VHD (vpc) and VHDX rows (blk/vpc.c, blk/vhdx*.c) ---
qemu-img convert -O vhdx "$dir/in.raw" "$dir/in.vhdx"
qemu-img convert -O vpc "$dir/in.raw" "$dir/in.vhd"
row "vhdx->qcow2" -m 8 -W -O qcow2 "$dir/in.vhdx" -- -O qcow2 "$dir/in.vhdx"
row "vpc->qcow2" -m 8 -W -O qcow2 "$dir/in.vhd" -- -O qcow2 "$dir/in.vhd"
row "raw->vhdx" -m 8 -W -O vhdx "$dir/in.raw" -- -O vhdx "$dir/in.raw"
row "raw->vpc" -m 8 -W -O vpc "$dir/in.raw" -- -O vpc "$dir/in.raw"
# --- end of VHD and VHDX rows ---

# ---- vmdk (blk/vmdk*.c) ----------------------------------------------------------------
# streamOptimized in and out: every grain inflated / deflated; qemu-img does both on one
# thread (its vmdk driver holds one lock across (de)compression), vtool's convert workers
# on every core.
qemu-img convert -O vmdk -o subformat=streamOptimized "$dir/in.raw" "$dir/in.vmdk"
row "vmdk stream->qcow2" -m 8 -W -O qcow2 "$dir/in.vmdk" -- -O qcow2 "$dir/in.vmdk"
row "qcow2->vmdk stream" -m 8 -W -O vmdk -o subformat=streamOptimized "$dir/in.qcow2" -- -O vmdk -o subformat=streamOptimized "$dir/in.qcow2"
