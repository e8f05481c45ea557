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
expect_rc 0 "$VTOOL" img info l.qcow2      # reading shares with a writer, as qemu-img info
expect_rc 0 "$VTOOL" img info -U l.qcow2
kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null

# vtool holds it read-write: qemu-io must be refused, qemu-img info -U still works.
coproc HOLD { "$BLKIO" hold l.qcow2 qcow2 5; }
read -r line <&"${HOLD[0]}"
[ "$line" = open ] && pass || fail "blkio hold did not open the image"
expect_rc 1 qemu-io -c "write 0 4k" l.qcow2
expect_grep 'Failed to get "write" lock' "$T/err"
expect_rc 0 qemu-img info -U l.qcow2
kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null

finish
