#!/usr/bin/env bash
# compare, map and measure against qemu-img on a matrix of images: same output, same exit
# status.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

# Images: raw with holes and data, qcow2 chain (raw <- qcow2 <- larger qcow2 overlay),
# compressed, zero clusters, internal snapshot, extended L2, small clusters.
qemu-img create -q -f raw a.raw 4M
qemu-img create -q -f raw b.raw 4M
qemu-io -f raw -c "write -P 1 1000 1" b.raw >/dev/null
qemu-img create -q -f raw c.raw 5M
qemu-img create -q -f raw d.raw 5M
qemu-io -f raw -c "write -P 1 4194800 1" d.raw >/dev/null
qemu-img create -q -f qcow2 e.qcow2 4M
qemu-img create -q -f raw base.raw 8M
qemu-io -f raw -c "write -P 0xaa 0 1M" -c "write -P 0xbb 5M 512k" base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2
qemu-io -c "write -P 0xcc 512k 1M" -c "write -z 5M 64k" -c "discard 6M 64k" mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 12M
qemu-io -c "write -P 0xdd 3M 100k" -c "write -P 0xee 10M 1M" top.qcow2 >/dev/null
qemu-img convert -c -O qcow2 top.qcow2 comp.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd top.qcow2 zstd.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on x.qcow2 8M
qemu-io -c "write -P 1 4k 4k" -c "write -z 64k 64k" x.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=512 s.qcow2 2M
qemu-io -c "write -P 2 1000 3000" s.qcow2 >/dev/null
qemu-img create -q -f qcow2 sn.qcow2 8M
qemu-io -c "write -P 3 0 1M" sn.qcow2 >/dev/null
qemu-img snapshot -c one sn.qcow2
qemu-io -c "write -P 4 512k 64k" sn.qcow2 >/dev/null
qemu-img convert -O qcow2 -o preallocation=metadata top.qcow2 pre.qcow2 2>/dev/null || true

same() { # label, then the argument list for both tools
  local label=$1; shift
  local vrc=0 qrc=0
  "$VTOOL" img "$@" >"$T/v.out" 2>/dev/null || vrc=$?
  qemu-img "$@" >"$T/q.out" 2>/dev/null || qrc=$?
  if [ "$vrc" -ne "$qrc" ]; then fail "$label: exit $vrc, qemu-img $qrc"
  elif ! diff "$T/v.out" "$T/q.out" >"$T/d"; then fail "$label: output differs: $(head -c 600 "$T/d")"
  else pass; fi
}

imgs=(a.raw b.raw d.raw e.qcow2 mid.qcow2 top.qcow2 comp.qcow2 zstd.qcow2 x.qcow2 s.qcow2 sn.qcow2)
for i in "${imgs[@]}"; do
  same "map json $i" map --output=json "$i"
  case $i in comp.qcow2|zstd.qcow2) ;; *) same "map human $i" map "$i" ;; esac
  same "map range $i" map --output=json --start-offset=1M --max-length=3M "$i"
  same "measure qcow2 $i" measure -O qcow2 "$i"
  same "measure qcow2 json $i" measure --output=json -O qcow2 -o cluster_size=4k,refcount_bits=1 "$i"
  same "measure raw $i" measure -O raw "$i"
done
expect_rc 1 "$VTOOL" img map comp.qcow2   # human map refuses compressed data, like qemu-img
expect_grep 'compressed clusters' "$T/err"

for size in 0 1000 1G 100G 2T; do
  same "measure --size $size" measure --size "$size" -O qcow2
  same "measure --size $size ext" measure --size "$size" -O qcow2 -o extended_l2=on
  same "measure --size $size full" measure --size "$size" -O qcow2 -o preallocation=full,cluster_size=2M
  same "measure --size $size v2" measure --size "$size" -O qcow2 -o compat=0.10 --output=json
  same "measure --size $size raw" measure --size "$size" -O raw
done

pairs=("a.raw b.raw" "a.raw c.raw" "a.raw d.raw" "c.raw a.raw" "a.raw e.qcow2"
       "top.qcow2 comp.qcow2" "comp.qcow2 zstd.qcow2" "mid.qcow2 top.qcow2" "top.qcow2 pre.qcow2"
       "x.qcow2 s.qcow2" "sn.qcow2 sn.qcow2")
for p in "${pairs[@]}"; do
  # shellcheck disable=SC2086
  same "compare $p" compare $p
  # shellcheck disable=SC2086
  same "compare -s $p" compare -s $p
done
expect_rc 2 "$VTOOL" img compare a.raw nosuch.img
expect_lines 1 "$T/err"

finish
