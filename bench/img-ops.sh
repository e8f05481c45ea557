#!/usr/bin/env bash
# Image operations, vtool vs qemu-img side by side on the same generated images: seconds
# (best of RUNS interleaved runs, each on fresh copies of the files) and the ratio
# qemu_time / vtool_time (>= 1 means vtool is faster).
#
#   bench/img-ops.sh [VTOOL] [RUNS] [SIZE_MiB]
#
# Rows: safe rebase between two SIZE (1 GiB) bases, flattening, -u; commit of a fully
# written SIZE overlay; snapshot -c/-a/-d/-l on a 4 GiB qcow2 (64 KiB clusters) with
# every cluster mapped (preallocation=metadata: 65536 data clusters, 8 L2 tables, the
# most a snapshot has to count) and two internal snapshots; "rewritten" has 256 MiB
# written after the second snapshot, so that a new snapshot also copies the tables whose
# COPIED flags change.
set -euo pipefail
vtool=$(realpath "${1:-build/cli/vtool}")
runs=${2:-3}
size_mib=${3:-1024}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-opsbench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.4f}')"; }
# row NAME SETUP QEMU_CMD VTOOL_CMD: SETUP (a shell function) makes fresh files in
# $dir/w before each timed command; the commands run in $dir/w.
row() {
  local name=$1 setup=$2 qcmd=$3 vcmd=$4 tq=999 tv=999 x
  for _ in $(seq "$runs"); do
    "$setup"; sync
    x=$(cd "$dir/w" && t bash -c "$qcmd"); tq=$(python3 -c "print(min($tq, $x))")
    "$setup"; sync
    x=$(cd "$dir/w" && t bash -c "$vcmd"); tv=$(python3 -c "print(min($tv, $x))")
  done
  printf '%-42s %8s %8s %7s\n' "$name" "$tq" "$tv" "$(python3 -c "print(f'{$tq/max($tv,0.0001):.2f}')")"
}
printf '%-42s %8s %8s %7s\n' "case (best of $runs)" "qemu s" "vtool s" ratio

# --- rebase, commit -------------------------------------------------------------------
# Two unrelated bases of SIZE MiB: mostly data (random 1 MiB extents), some holes, 20%
# the same in both; one overlay on the first, with 10% of its own data. The commit
# overlay is fully written (SIZE MiB of data over a sparse qcow2 base).
python3 - "$dir" "$size_mib" <<'PY'
import random, sys
d, mib = sys.argv[1], int(sys.argv[2])
for name, seed in (("base1.raw", 1), ("base2.raw", 2)):
    rng = random.Random(seed)
    with open("%s/%s" % (d, name), "wb") as f:
        f.truncate(mib << 20)
        for i in range(mib):
            r = rng.random()
            if r < 0.1:
                continue
            f.seek(i << 20)
            if r < 0.3 and name == "base2.raw":
                # the same as base1 there: nothing to copy for those
                f.write(random.Random("same%d" % i).randbytes(1 << 20))
            else:
                f.write(rng.randbytes(1 << 20))
PY
qemu-img convert -O qcow2 "$dir/base2.raw" "$dir/base2.qcow2"
qemu-img create -q -f qcow2 -b base1.raw -F raw "$dir/ov.qcow2" "${size_mib}M"
qemu-io -c "write -P 0x42 0 $((size_mib / 10))M" "$dir/ov.qcow2" >/dev/null
qemu-img create -q -f qcow2 "$dir/cbase.qcow2" "${size_mib}M"
qemu-img create -q -f qcow2 -b cbase.qcow2 -F qcow2 "$dir/ctop.qcow2"
qemu-io -c "write -P 0x5a 0 ${size_mib}M" "$dir/ctop.qcow2" >/dev/null

setup_rebase() {
  rm -rf "$dir/w" && mkdir "$dir/w"
  ln "$dir/base1.raw" "$dir/w/base1.raw"; ln "$dir/base2.qcow2" "$dir/w/base2.qcow2"
  cp "$dir/ov.qcow2" "$dir/w/ov.qcow2"
}
setup_commit() {
  rm -rf "$dir/w" && mkdir "$dir/w"
  cp "$dir/cbase.qcow2" "$dir/ctop.qcow2" "$dir/w/"
}
row "rebase (safe, ${size_mib} MiB bases)" setup_rebase \
  "qemu-img rebase -b base2.qcow2 -F qcow2 ov.qcow2" \
  "$vtool img rebase -b base2.qcow2 -F qcow2 ov.qcow2"
row "rebase -b \"\" (flatten)" setup_rebase \
  "qemu-img rebase -b '' ov.qcow2" "$vtool img rebase -b '' ov.qcow2"
row "rebase -u" setup_rebase \
  "qemu-img rebase -u -b base2.qcow2 -F qcow2 ov.qcow2" \
  "$vtool img rebase -u -b base2.qcow2 -F qcow2 ov.qcow2"
row "commit (${size_mib} MiB overlay)" setup_commit \
  "qemu-img commit ctop.qcow2" "$vtool img commit ctop.qcow2"
rm -f "$dir"/base*.raw "$dir"/base2.qcow2 "$dir"/ov.qcow2 "$dir"/c*.qcow2

# --- snapshot -------------------------------------------------------------------------
qemu-img create -q -f qcow2 -o preallocation=metadata "$dir/full.qcow2" 4G
qemu-img snapshot -c one "$dir/full.qcow2"
qemu-img snapshot -c two "$dir/full.qcow2"
cp --sparse=always "$dir/full.qcow2" "$dir/rewritten.qcow2"
qemu-io -c "write -P 0x5a 1G 256M" "$dir/rewritten.qcow2" >/dev/null
setup_full() { rm -rf "$dir/w" && mkdir "$dir/w" && cp --sparse=always "$dir/full.qcow2" "$dir/w/run.qcow2"; }
setup_rewritten() { rm -rf "$dir/w" && mkdir "$dir/w" && cp --sparse=always "$dir/rewritten.qcow2" "$dir/w/run.qcow2"; }
snap() { row "$1" "$2" "qemu-img $3 run.qcow2" "$vtool img $3 run.qcow2"; }
snap "snapshot -c (4 GiB, 2 snapshots)" setup_full "snapshot -c three"
snap "snapshot -c (256 MiB rewritten)" setup_rewritten "snapshot -c three"
snap "snapshot -a one (256 MiB rewritten)" setup_rewritten "snapshot -a one"
snap "snapshot -d one (256 MiB rewritten)" setup_rewritten "snapshot -d one"
snap "snapshot -l" setup_rewritten "snapshot -l"
