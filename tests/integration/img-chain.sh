#!/usr/bin/env bash
# Backing chains that are broken: a missing backing file, and chains that loop.
# qemu-img is the oracle for what info prints; a loop must be named, never followed.
. "$(dirname "$0")/lib.sh"
need qemu-img timeout
cd "$T"

# A missing backing file: info still describes the image, exactly as qemu-img does.
qemu-img create -q -f qcow2 -u -b nothere.qcow2 -F qcow2 miss.qcow2 1M
for out in human json; do
  qemu-img info --output=$out miss.qcow2 >q.$out
  expect_rc 0 "$VTOOL" img info --output=$out miss.qcow2
  cmp -s q.$out "$T/out" && pass || fail "info --output=$out differs: $(diff q.$out "$T/out" | head -5)"
done
# ... but the chain cannot be walked, nor the disk read.
expect_rc 1 "$VTOOL" img info --backing-chain miss.qcow2
expect_grep 'nothere.qcow2.*No such file or directory' "$T/err"
expect_lines 1 "$T/err"
[ -s "$T/out" ] && fail "info --backing-chain printed a partial chain" || pass
expect_rc 1 "$VTOOL" img convert -O raw miss.qcow2 out.raw
expect_grep 'nothere.qcow2' "$T/err"

# Loops: an image that is its own backing file, and two that back each other.
qemu-img create -q -f qcow2 self.qcow2 1M
qemu-img rebase -q -u -b self.qcow2 -F qcow2 self.qcow2
qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 a.qcow2 1M
qemu-img create -q -f qcow2 -u -b a.qcow2 -F qcow2 b.qcow2 1M
for img in self.qcow2 a.qcow2; do
  qemu-img info --backing-chain $img >/dev/null 2>q.err
  expect_rc 1 timeout 10 "$VTOOL" img info --backing-chain $img
  expect_grep "creates an infinite loop" "$T/err"
  qmsg=$(sed 's/^qemu-img: //' q.err)
  grep -qF "$qmsg" "$T/err" && pass || fail "qemu says '$qmsg', vtool '$(cat "$T/err")'"
  # check reads the image's own metadata only: it does not open backing files (and so
  # neither loops nor fails; qemu-img check follows the loop forever).
  expect_rc 0 timeout 10 "$VTOOL" img check $img
  for cmd in "img convert -O raw $img out.raw" "img map $img" "img compare $img $img"; do
    rc=0; timeout 10 "$VTOOL" $cmd >"$T/out" 2>"$T/err" || rc=$?
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "creates an infinite loop" "$T/err" && pass \
      || fail "vtool $cmd: rc $rc, $(head -c 300 "$T/err")"
  done
  # info without the chain describes the image itself, like qemu-img.
  qemu-img info $img >q.out
  expect_rc 0 "$VTOOL" img info $img
  cmp -s q.out "$T/out" && pass || fail "info $img differs from qemu-img's"
done
[ ! -e out.raw ] && pass || fail "convert left out.raw behind"
finish
