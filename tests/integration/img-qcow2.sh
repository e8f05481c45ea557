#!/usr/bin/env bash
# Block layer vs qemu, both directions:
# - images vtool creates are accepted by qemu-img check, and info matches qemu-img's;
# - random (unaligned, cluster-straddling, zeroing) writes through blk.h over a matrix of
#   create options read back identically with qemu-img compare, and check stays clean;
# - images qemu wrote (backing chains, zlib/zstd compressed clusters, snapshots) read
#   identically through vtool, and vtool's writes into them keep them consistent.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
: "${BLKIO:?}"
cd "$T"

vsize() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# check_clean IMG: qemu-img check finds neither corruption nor leak.
check_clean() {
  if qemu-img check -q "$1" >"$T/chk" 2>&1; then pass; else fail "qemu-img check $1 ($2): $(cat "$T/chk")"; fi
}

matrix=(
  ""
  "compat=0.10"
  "cluster_size=512"
  "cluster_size=2M"
  "refcount_bits=1"
  "refcount_bits=16,cluster_size=4k"
  "refcount_bits=64"
  "refcount_bits=64,cluster_size=512"
  "extended_l2=on"
  "extended_l2=on,cluster_size=16k"
  "lazy_refcounts=on"
  "compression_type=zstd"
  "preallocation=metadata"
  "preallocation=falloc,cluster_size=4k"
)
seed=1
for o in "${matrix[@]}"; do
  rm -f img shadow
  opt=(); [ -n "$o" ] && opt=(-o "$o")
  expect_rc 0 "$VTOOL" img create -f qcow2 "${opt[@]}" img 24M
  cp "$T/out" created.txt
  expect_rc 0 qemu-img create -f qcow2 "${opt[@]}" qimg 24M
  # the Formatting line names the same options with the same values
  if diff <(sed 's/img/X/' created.txt) <(sed 's/qimg/X/' "$T/out") >/dev/null; then pass
  else fail "Formatting line for '$o': $(cat created.txt) vs $(cat "$T/out")"; fi
  check_clean img "created with '$o'"
  if diff <("$VTOOL" img info --output=json img) <(qemu-img info --output=json img) >"$T/d"; then pass
  else fail "info json differs for '$o': $(cat "$T/d")"; fi
  if diff <("$VTOOL" img info img) <(qemu-img info img) >"$T/d"; then pass
  else fail "info differs for '$o': $(cat "$T/d")"; fi
  truncate -s "$(vsize img)" shadow
  expect_rc 0 "$BLKIO" write img qcow2 shadow $seed 60
  expect_rc 0 qemu-img compare -f raw -F qcow2 shadow img
  check_clean img "written with '$o'"
  seed=$((seed + 1))
done

# Backing chain: raw base <- qcow2 (written by qemu) <- qcow2 overlay, larger than its base.
qemu-img create -q -f raw base.raw 32M
qemu-io -f raw -c "write -P 0xaa 0 6M" -c "write -P 0xbb 20M 5M" base.raw >/dev/null
expect_rc 0 "$VTOOL" img create -f qcow2 -b base.raw -F raw mid.qcow2
qemu-io -f qcow2 -c "write -P 0xcc 5M 1M" -c "write -z 21M 1M" mid.qcow2 >/dev/null
expect_rc 0 "$VTOOL" img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 40M
for f in human json; do
  if diff <("$VTOOL" img info --backing-chain --output=$f top.qcow2) \
          <(qemu-img info --backing-chain --output=$f top.qcow2) >"$T/d"; then pass
  else fail "backing chain info ($f) differs: $(cat "$T/d")"; fi
done
qemu-img convert -O raw top.qcow2 shadow
expect_rc 0 "$BLKIO" write top.qcow2 qcow2 shadow 77 200
expect_rc 0 qemu-img compare -f raw -F qcow2 shadow top.qcow2
check_clean top.qcow2 "overlay"
check_clean mid.qcow2 "middle of the chain (must be untouched)"

# qemu-written images: compressed clusters (zlib, zstd), then vtool writes over them.
for ct in zlib zstd; do
  qemu-img create -q -f qcow2 -o compression_type=$ct src.qcow2 24M
  qemu-io -c "write -P 0x11 0 6M" -c "write -P 0x22 9M 3M" -c "write -z 20M 2M" src.qcow2 >/dev/null
  qemu-img convert -c -O qcow2 -o compression_type=$ct src.qcow2 comp.qcow2
  qemu-io -c "write -P 0x33 1M 100k" comp.qcow2 >/dev/null
  qemu-img convert -O raw comp.qcow2 want.raw
  expect_rc 0 "$BLKIO" dump comp.qcow2 qcow2 got.raw
  if cmp -s want.raw got.raw; then pass; else fail "$ct compressed image reads differently"; fi
  expect_rc 0 "$BLKIO" write comp.qcow2 qcow2 want.raw 5 100
  expect_rc 0 qemu-img compare -f raw -F qcow2 want.raw comp.qcow2
  check_clean comp.qcow2 "$ct compressed, overwritten"
done

# Compressed writes through blk_write_compressed (zlib and zstd, several cluster layouts),
# then ordinary writes over them: qemu reads the same bytes, counts compressed clusters,
# and finds no corruption or leak.
for o in "" "compression_type=zstd" "compat=0.10" "cluster_size=4k" "extended_l2=on" "cluster_size=512"; do
  rm -f c.qcow2 cshadow
  "$VTOOL" img create -q -f qcow2 ${o:+-o "$o"} c.qcow2 7M
  truncate -s 7M cshadow
  expect_rc 0 "$BLKIO" writec c.qcow2 qcow2 cshadow 3 120
  expect_rc 0 qemu-img compare -f raw -F qcow2 cshadow c.qcow2
  expect_rc 0 qemu-img check --output=json c.qcow2
  expect_grep '"compressed-clusters": [1-9]' "$T/out"
  expect_rc 0 "$BLKIO" write c.qcow2 qcow2 cshadow 4 10
  expect_rc 0 qemu-img compare -f raw -F qcow2 cshadow c.qcow2
  check_clean c.qcow2 "compressed then overwritten ('$o')"
done

# Internal snapshot made by qemu: our writes copy shared clusters, the snapshot survives.
qemu-img create -q -f qcow2 sn.qcow2 16M
qemu-io -c "write -P 0x41 0 4M" sn.qcow2 >/dev/null
qemu-img snapshot -c s1 sn.qcow2
qemu-img convert -O raw sn.qcow2 cur.raw
cp cur.raw snap.raw
expect_rc 0 "$BLKIO" write sn.qcow2 qcow2 cur.raw 9 120
expect_rc 0 qemu-img compare -f raw -F qcow2 cur.raw sn.qcow2
check_clean sn.qcow2 "snapshot image"
qemu-img convert -l s1 -O raw sn.qcow2 snapgot.raw
if cmp -s snap.raw snapgot.raw; then pass; else fail "snapshot content changed by our writes"; fi
for f in human json; do
  if diff <("$VTOOL" img info --output=$f sn.qcow2) <(qemu-img info --output=$f sn.qcow2) >"$T/d"; then pass
  else fail "snapshot info ($f) differs: $(cat "$T/d")"; fi
done

# Preallocation reaches the file: every cluster mapped to data, as qemu-img maps it. Small
# clusters with wide refcounts (a block's range is as long as an L2 table's, or shorter
# than a big L1 table) neither stall the allocator nor lose a refcount.
for o in "preallocation=metadata" "cluster_size=512,refcount_bits=64,preallocation=metadata" \
         "cluster_size=4k,refcount_bits=1,preallocation=full"; do
  rm -f p.qcow2
  expect_rc 0 timeout 120 "$VTOOL" img create -q -f qcow2 -o "$o" p.qcow2 9M
  check_clean p.qcow2 "created with $o"
  n=$(qemu-img map --output=json p.qcow2 | grep -c '"data": false' || true)
  [ "$n" -eq 0 ] && pass || fail "created with $o: $n extents not preallocated"
done
for o in "cluster_size=512" "cluster_size=512,refcount_bits=64"; do
  rm -f p.qcow2 q.qcow2
  expect_rc 0 timeout 120 "$VTOOL" img create -q -f qcow2 -o "$o" p.qcow2 1G
  qemu-img create -q -f qcow2 -o "$o" q.qcow2 1G
  check_clean p.qcow2 "1G with $o"
  [ "$(stat -c %s p.qcow2)" = "$(stat -c %s q.qcow2)" ] && pass \
    || fail "1G with $o: $(stat -c %s p.qcow2) bytes, qemu-img $(stat -c %s q.qcow2)"
done

# Raw images: create/info against qemu-img, writes through blk.h.
expect_rc 0 "$VTOOL" img create -f raw r.img 1000
if diff <("$VTOOL" img info --output=json r.img) <(qemu-img info --output=json r.img) >"$T/d"; then pass
else fail "raw info differs: $(cat "$T/d")"; fi
expect_rc 0 "$VTOOL" img create -f raw -o preallocation=full r2.img 3M
expect_grep "^Formatting 'r2.img', fmt=raw size=3145728 preallocation=full$" "$T/out"
truncate -s 3M shadow2
expect_rc 0 "$BLKIO" write r2.img raw shadow2 4 50
if cmp -s r2.img shadow2; then pass; else fail "raw writes differ"; fi

finish
