#!/usr/bin/env bash
# Crash consistency: a writer killed with SIGKILL at a random moment may leak clusters
# but never corrupts the image (qemu-img check exit 0 or 3, never 2), over several cluster
# sizes, refcount widths and a backing file.
. "$(dirname "$0")/lib.sh"
need qemu-img
: "${BLKIO:?}"
cd "$T"

qemu-img create -q -f raw base.raw 16M
opts=("" "cluster_size=4k" "cluster_size=512,refcount_bits=64" "extended_l2=on" "refcount_bits=1")
RANDOM=42
for i in $(seq 0 14); do
  o=${opts[$((i % ${#opts[@]}))]}
  rm -f c.qcow2
  if [ $((i % 3)) -eq 0 ]; then
    "$VTOOL" img create -q -f qcow2 ${o:+-o "$o"} -b base.raw -F raw c.qcow2 16M
  else
    "$VTOOL" img create -q -f qcow2 ${o:+-o "$o"} c.qcow2 16M
  fi
  "$BLKIO" crash c.qcow2 qcow2 $((i + 1)) &
  pid=$!
  sleep "0.$((RANDOM % 4 + 1))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rc=0
  qemu-img check c.qcow2 >"$T/chk" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then pass
  else fail "kill #$i ('$o'): qemu-img check rc=$rc: $(head -c 600 "$T/chk")"; fi
done

finish
