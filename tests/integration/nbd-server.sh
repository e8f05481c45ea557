#!/usr/bin/env bash
# vtool img serve against real NBD clients on localhost: qemu-img and qemu-io (qemu's
# client), nbdinfo and nbdcopy (libnbd). What they read must be the image (qemu-img
# compare with the local file), what they write must land in it (the same qemu-io
# commands applied to a copy, then compared), and what they learn of the export (flags,
# block sizes, contexts, maps) must be what qemu-nbd 7.2 tells them of the same image.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img qemu-io qemu-nbd nbdinfo nbdcopy python3
cd "$T"

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -z 4M 1M' -c 'write -P 0x22 10M 64k' \
  -c 'write -P 0x33 33M 64k' a.qcow2 >/dev/null
cp a.qcow2 ref.qcow2
cp a.qcow2 q.qcow2
P=$(free_port)
Q=$(free_port)
vserve v.pid -f qcow2 -x disk -D 'a test disk' -t -p "$P" a.qcow2
expect_rc 0 test -s v.pid
qserve q.pid -f qcow2 -x disk -D 'a test disk' -t -p "$Q" -b 127.0.0.1 q.qcow2
V="nbd://127.0.0.1:$P/disk"
QU="nbd://127.0.0.1:$Q/disk"

# What libnbd learns: flags, block sizes, contexts, the map: the same as from qemu-nbd.
for s in v:"$V" q:"$QU"; do
  nbdinfo --no-content "${s#*:}" | grep -v 'uri:' >"info.${s%%:*}"
  nbdinfo --map "${s#*:}" >"map.${s%%:*}"
  nbdinfo --list "${s#*:}" | grep -v 'uri:' >"list.${s%%:*}"
done
same "nbdinfo vs qemu-nbd" info.v info.q
same "nbdinfo --map vs qemu-nbd" map.v map.q
same "nbdinfo --list vs qemu-nbd" list.v list.q
expect_grep 'can_flush: true' info.v
expect_grep 'block_size_maximum: 33554432' info.v
expect_grep '^ +10485760 +65536 +0 +data' map.v
expect_grep 'description: a test disk' list.v
qemu-nbd -L -b 127.0.0.1 -p "$P" >L.v
qemu-nbd -L -b 127.0.0.1 -p "$Q" >L.q
same "qemu-nbd -L vs qemu-nbd" L.v L.q
if command -v nbd-client >/dev/null; then  # the kernel client's user half lists exports
  expect_rc 0 nbd-client -l 127.0.0.1 "$P"
  expect_grep '^disk: a test disk$' "$T/out"
fi
# qemu-img's view of the map through either server, and vtool's own client's.
qemu-img map --output=json "$V" >qmap.v
qemu-img map --output=json "$QU" >qmap.q
same "qemu-img map via vtool serve vs via qemu-nbd" qmap.v qmap.q
"$VTOOL" img map --output=json "$V" >qmap.vv
same "vtool img map vs qemu-img map of the export" qmap.v qmap.vv
expect_rc 0 qemu-img info "$V"
expect_grep '^virtual size: 64 MiB \(67108864 bytes\)$' "$T/out"
expect_grep '^file format: raw$' "$T/out"

# Reading: a whole copy equals the image.
expect_rc 0 qemu-img convert -O raw "$V" out.raw
expect_rc 0 qemu-img compare -U a.qcow2 out.raw
expect_rc 0 qemu-img compare -U "$V" ref.qcow2
expect_rc 0 nbdcopy "$V" copy.raw
expect_rc 0 qemu-img compare -f raw -F qcow2 -U copy.raw ref.qcow2
expect_rc 0 qemu-io -f raw -r -c 'read -P 0x22 10M 64k' -c 'read -P 0 5M 1M' \
  -c 'read -P 0x33 33M 4k' "$V"
expect_grep '^read 4096/4096 bytes at offset 34603008' "$T/out"

# Writing: the same qemu-io commands over NBD and on a local copy give the same image.
ops=(-c 'write -P 0x55 1M 64k' -c 'write -P 0x66 12345 777' -c 'write -z 2M 1M'
     -c 'aio_write -P 0x77 20M 128k' -c 'aio_write -P 0x78 21M 3k' -c 'aio_flush'
     -c 'write -z -u 30M 1M' -c 'write -P 0x79 63M 1M' -c 'writev -P 0x7a 40M 4k 8k 512'
     -c 'flush')
expect_rc 0 qemu-io -f raw "${ops[@]}" "$V"
if grep -q 'failed' "$T/out"; then fail "qemu-io over NBD: $(grep failed "$T/out")"; else pass; fi
qemu-io -f qcow2 "${ops[@]}" ref.qcow2 >/dev/null
expect_rc 0 qemu-img compare -U "$V" ref.qcow2
expect_rc 0 qemu-io -f raw -r -c 'read -P 0x66 12345 777' -c 'read -P 0 2M 1M' "$V"
# Discard with the default --discard=ignore keeps the data (as qemu-nbd's default).
expect_rc 0 qemu-io -f raw -c 'discard 10M 64k' "$V"
expect_rc 0 qemu-io -f raw -r -c 'read -P 0x22 10M 64k' "$V"
expect_grep '^read 65536/65536' "$T/out"
expect_rc 0 stop v.pid
expect_rc 0 qemu-img check a.qcow2
expect_rc 0 qemu-img compare a.qcow2 ref.qcow2
# Nothing was reported about well-behaved clients.
expect_lines 0 v.pid.err
expect_rc 0 stop q.pid

# Writing with nbdcopy, over 4 connections: -e 4 advertises multi-connection (qemu-nbd
# does too), flushes are consistent across connections.
head -c 8M /dev/urandom >src.raw
qemu-img create -q -f raw w.raw 8M
vserve w.pid -f raw -e 4 -t -p "$P" w.raw
nbdinfo --no-content "nbd://127.0.0.1:$P" >info.w
expect_grep 'can_multi_conn: true' info.w
expect_grep 'block_size_minimum: 512' info.w
expect_rc 0 nbdcopy --connections=4 src.raw "nbd://127.0.0.1:$P"
expect_rc 0 stop w.pid
expect_rc 0 cmp src.raw w.raw

# Read-only: flags say so (clients that write anyway: nbd-hostile.sh).
vserve r.pid -f raw -r -t -p "$P" w.raw
nbdinfo --no-content "nbd://127.0.0.1:$P" >info.r
expect_grep 'is_read_only: true' info.r
expect_grep 'can_trim: false' info.r
expect_rc 1 qemu-io -f raw -c 'write 0 4k' "nbd://127.0.0.1:$P"
expect_grep 'Permission denied' "$T/err"
expect_rc 0 qemu-io -f raw -r -c 'read 0 4k' "nbd://127.0.0.1:$P"
# A raw image being read: another process may still write it (qemu's rule for raw).
expect_rc 0 qemu-io -f raw -c 'write -P 1 0 512' w.raw
expect_rc 0 stop r.pid

# An export that is not there; a server that is gone after its last client (no -t).
vserve n.pid -f qcow2 -x disk -p "$P" a.qcow2
expect_rc 1 qemu-img info "nbd://127.0.0.1:$P/nope"
expect_grep "export 'nope' not present" "$T/err"
expect_rc 0 nbdinfo --list "nbd://127.0.0.1:$P"   # listing only: the server stays
expect_rc 0 qemu-img info "nbd://127.0.0.1:$P/disk"
expect_rc 0 gone n.pid
# ... and while it serves, a writer holds the image (qemu's locks).
vserve l.pid -f qcow2 -t -p "$P" a.qcow2
expect_rc 1 qemu-io -c 'write 0 4k' a.qcow2
expect_grep 'Failed to get "write" lock' "$T/err"
expect_rc 1 "$VTOOL" img serve -f qcow2 -p "$(free_port)" a.qcow2
expect_grep 'Failed to get "write" lock' "$T/err"
expect_rc 1 "$VTOOL" img serve -f qcow2 -p "$P" ref.qcow2
expect_grep 'Failed to bind socket: Address already in use' "$T/err"
expect_rc 0 stop l.pid

# Unix socket; qemu:allocation-depth over a backing chain, as qemu-nbd -A reports it.
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 0x44 1M 4k' -c 'write -z 11M 64k' top.qcow2 >/dev/null
cp top.qcow2 qtop.qcow2
vserve u.pid -t -A -r -x disk -k "$T/v.sock" top.qcow2
qserve qu.pid -t -A -r -x disk -k "$T/q.sock" qtop.qcow2
nbdinfo --map=qemu:allocation-depth "nbd+unix:///disk?socket=$T/v.sock" >depth.v
nbdinfo --map=qemu:allocation-depth "nbd+unix:///disk?socket=$T/q.sock" >depth.q
same "allocation depth vs qemu-nbd -A" depth.v depth.q
expect_grep 'backing depth 2' depth.v
nbdinfo --map "nbd+unix:///disk?socket=$T/v.sock" >alloc.v
nbdinfo --map "nbd+unix:///disk?socket=$T/q.sock" >alloc.q
same "base:allocation over a chain vs qemu-nbd" alloc.v alloc.q
nbdinfo --list --content "nbd+unix:///?socket=$T/v.sock" >list.u
expect_grep 'qemu:allocation-depth' list.u
expect_rc 0 stop u.pid
expect_rc 1 test -e "$T/v.sock"
stop qu.pid

# -s: writes go to a throw-away overlay.
cp a.qcow2 s.qcow2
vserve s.pid -s -t -p "$P" s.qcow2
expect_rc 0 qemu-io -f raw -c 'write -P 0x99 0 64k' "nbd://127.0.0.1:$P"
expect_rc 0 qemu-io -f raw -r -c 'read -P 0x99 0 64k' "nbd://127.0.0.1:$P"
expect_rc 0 stop s.pid
expect_rc 0 qemu-img compare s.qcow2 a.qcow2

# --discard=unmap --detect-zeroes=unmap: trimmed and zero-written ranges become holes.
head -c 4M /dev/urandom >z.raw
vserve z.pid -f raw --discard=unmap --detect-zeroes=unmap -t -p "$P" z.raw
expect_rc 0 qemu-io -f raw -c 'write -P 0 0 1M' -c 'discard 2M 1M' "nbd://127.0.0.1:$P"
nbdinfo --map "nbd://127.0.0.1:$P" >map.z
expect_grep '^ +0 +1048576 +3 +hole,zero' map.z
expect_grep '^ +2097152 +1048576 +3 +hole,zero' map.z
expect_rc 0 stop z.pid

# The command line: qemu-nbd's refusals, --help with every option and an example.
expect_rc 1 "$VTOOL" img serve -k rel.sock a.qcow2
expect_grep 'socket path must be absolute' "$T/err"
expect_rc 1 "$VTOOL" img serve --tls-creds tls0 a.qcow2
expect_grep 'TLS is not supported' "$T/err"
expect_rc 1 "$VTOOL" img serve --detect-zeroes=unmap a.qcow2
expect_grep 'not allowed without setting discard operation to unmap' "$T/err"
expect_rc 1 "$VTOOL" img serve a.qcow2 b.qcow2
expect_rc 0 "$VTOOL" img serve --help
for o in --format --read-only --export-name --description --port --bind --socket --shared \
         --persistent --fork --pid-file --snapshot --load-snapshot --nocache --cache --discard \
         --detect-zeroes --allocation-depth --tls-creds --handshake-limit --verbose; do
  expect_grep "$o" "$T/out"
done
expect_grep '^Example:$' "$T/out"
finish
