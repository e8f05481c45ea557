#!/usr/bin/env bash
# Image locking interoperates with qemu's OFD byte locks, both ways, and -U opens a busy
# image for reading.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
: "${BLKIO:?}"
cd "$T"

qemu-img create -q -f qcow2 l.qcow2 16M
# qemu-io holds the image read-write: vtool must not open it for writing.
qemu-io -c "sleep 4000" l.qcow2 &
qpid=$!
for _ in $(seq 50); do grep -q 'OFDLCK.* 201 201' /proc/locks && break; sleep 0.1; done
expect_rc 1 "$BLKIO" write l.qcow2 qcow2 /dev/null 1 1
expect_grep '^vtool: l.qcow2: open: Failed to get "write" lock' "$T/err"
expect_lines 1 "$T/err"
# Readers of a qcow2 keep writers out, so they are refused while one writes (qemu-img's
# rule: its metadata could change under them); -U says "I know".
for cmd in "img info" "img check" "img map" "img convert -O raw" ; do
  out=""; case $cmd in *convert*) out=$T/o.raw ;; esac
  expect_rc 1 "$VTOOL" $cmd l.qcow2 $out
  expect_grep 'Failed to get shared "write" lock' "$T/err"
  qrc=0; qemu-img $cmd l.qcow2 $out >/dev/null 2>&1 || qrc=$?
  [ "$qrc" -ne 0 ] && pass || fail "qemu-img $cmd succeeded on a busy image"
done
expect_rc 2 "$VTOOL" img compare l.qcow2 l.qcow2   # 2: open error, as qemu-img compare
expect_rc 0 "$VTOOL" img info -U l.qcow2
expect_rc 0 "$VTOOL" img convert -U -O raw l.qcow2 "$T/o.raw"
# convert must not replace a file another process has open for writing.
head -c 1M /dev/urandom >src.raw
expect_rc 1 "$VTOOL" img convert -O qcow2 src.raw l.qcow2
expect_grep 'Failed to get "write" lock' "$T/err"
qemu-img info -U --output=json l.qcow2 | grep -q '"virtual-size": 16777216' && pass \
  || fail "convert replaced the busy l.qcow2"
ls -a | grep -q '^\.l\.qcow2' && fail "temporary file left behind" || pass
kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null

# A raw image has no metadata: reading it alongside a writer is allowed, as in qemu.
qemu-img create -q -f raw r.raw 1M
qemu-io -f raw -c "sleep 4000" r.raw &
qpid=$!
for _ in $(seq 50); do grep -q 'OFDLCK.* 201 201' /proc/locks && break; sleep 0.1; done
expect_rc 0 "$VTOOL" img info r.raw
qemu-img info r.raw >/dev/null && pass || fail "qemu-img info r.raw refused"
kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null

# While vtool reads a qcow2 (and its backing file), writers are refused: qemu-io on the
# overlay and on the raw backing file alike.
qemu-img create -q -f raw base.raw 16M
qemu-img create -q -f qcow2 -b base.raw -F raw ov.qcow2
coproc RD { "$BLKIO" hold ov.qcow2 qcow2 5 ro; }
read -r line <&"${RD[0]}"
[ "$line" = open ] && pass || fail "blkio hold ro did not open the image"
expect_rc 1 qemu-io -c "write 0 4k" ov.qcow2
expect_rc 1 qemu-io -f raw -c "write 0 4k" base.raw
expect_grep 'Failed to get "write" lock' "$T/err"
expect_rc 0 qemu-img info ov.qcow2   # two readers share
kill "$RD_PID" 2>/dev/null; wait "$RD_PID" 2>/dev/null

# The output is never one of the inputs (the copy would destroy the source's snapshots).
qemu-img create -q -f qcow2 same.qcow2 1M
qemu-img snapshot -c s1 same.qcow2
expect_rc 1 "$VTOOL" img convert -O qcow2 same.qcow2 same.qcow2
expect_grep 'the output is also an input' "$T/err"
qemu-img snapshot -l same.qcow2 | grep -q s1 && pass || fail "snapshot lost"

# vtool holds it read-write: qemu-io must be refused, qemu-img info -U still works.
coproc HOLD { "$BLKIO" hold l.qcow2 qcow2 5; }
read -r line <&"${HOLD[0]}"
[ "$line" = open ] && pass || fail "blkio hold did not open the image"
expect_rc 1 qemu-io -c "write 0 4k" l.qcow2
expect_grep 'Failed to get "write" lock' "$T/err"
expect_rc 0 qemu-img info -U l.qcow2
kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null

finish
