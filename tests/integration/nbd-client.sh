#!/usr/bin/env bash
# vtool's NBD client (blk/nbd.c) against real servers on localhost: qemu-nbd 7.2 and
# nbdkit (memory, file and pattern plugins; oldstyle, non-fixed newstyle, no structured
# replies, a 4 KiB minimum block size, injected errors) and vtool img serve. vtool img
# info/map must print what qemu-img prints of the same export, convert/compare must see
# the image's bytes, writes (random, unaligned: tests/tools/blkio) must land, and every
# address form qemu accepts must work.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img qemu-io qemu-nbd nbdkit nbdinfo python3
: "${BLKIO:?}"
cd "$T"

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -z 4M 1M' -c 'write -P 0x22 10M 64k' \
  -c 'write -P 0x33 33M 64k' -c 'write -P 0x44 63M 1M' a.qcow2 >/dev/null
cp a.qcow2 ref.qcow2
P=$(free_port)
qserve q.pid -f qcow2 -x disk -t -p "$P" -b 127.0.0.1 a.qcow2
U="nbd://127.0.0.1:$P/disk"

# info and map: qemu-img's lines for the same export (the disk size is the one line
# qemu-img words differently: "unavailable").
expect_rc 0 "$VTOOL" img info "$U"
grep -v '^disk size' "$T/out" >info.v
qemu-img info "$U" | grep -v '^disk size' >info.q
same "img info of an NBD export vs qemu-img" info.v info.q
expect_rc 0 "$VTOOL" img info --output=json "$U"
expect_grep '"format": "raw"' "$T/out"
expect_grep '"virtual-size": 67108864' "$T/out"
"$VTOOL" img map --output=json "$U" >map.v
qemu-img map --output=json "$U" >map.q
same "img map --output=json vs qemu-img" map.v map.q
"$VTOOL" img map "$U" >hmap.v
qemu-img map "$U" >hmap.q
same "img map vs qemu-img" hmap.v hmap.q
# convert, compare, check read it as the image it is.
expect_rc 0 "$VTOOL" img convert -O qcow2 "$U" out.qcow2
expect_rc 0 qemu-img compare out.qcow2 ref.qcow2
expect_rc 0 qemu-img check out.qcow2
expect_rc 0 "$VTOOL" img compare "$U" ref.qcow2
expect_grep '^Images are identical.$' "$T/out"
qemu-io -c 'write -P 0x12 5M 512' out.qcow2 >/dev/null
expect_rc 1 "$VTOOL" img compare "$U" out.qcow2
expect_grep '^Content mismatch at offset 5242880!$' "$T/out"
expect_rc 63 "$VTOOL" img check "$U"
expect_grep 'does not support checks' "$T/err"
# writes: random unaligned writes and zero writes from several threads' worth of
# requests, the same bytes to a shadow file; qemu-img compares the two afterwards.
"$VTOOL" img convert -O raw ref.qcow2 shadow.raw
expect_rc 0 "$BLKIO" write "$U" raw shadow.raw 7 300
expect_rc 0 qemu-img compare -U -f raw "$U" shadow.raw
expect_rc 0 "$VTOOL" img convert -n -O raw shadow.raw "$U"
expect_rc 0 stop q.pid
expect_rc 0 qemu-img check a.qcow2
expect_rc 0 qemu-img compare -F raw a.qcow2 shadow.raw

# A raw export: qemu-nbd asks for 512-byte alignment, so unaligned requests are widened.
qemu-img create -q -f raw r.raw 8M
cp r.raw rshadow.raw
qserve r.pid -f raw -t -k "$T/q.sock" r.raw
R="nbd+unix:///?socket=$T/q.sock"
expect_rc 0 "$BLKIO" write "$R" raw rshadow.raw 11 300
expect_rc 0 stop r.pid
expect_rc 0 cmp r.raw rshadow.raw

# Every address form, to the same export (vtool img serve this time).
vserve v.pid -f qcow2 -x disk -r -t -k "$T/v.sock" ref.qcow2
V=$(free_port)
vserve v2.pid -f qcow2 -x disk -r -t -p "$V" ref.qcow2
for addr in "nbd+unix:///disk?socket=$T/v.sock" "nbd:unix:$T/v.sock:exportname=disk" \
            "nbd://127.0.0.1:$V/disk" "nbd+tcp://localhost:$V/disk" \
            "nbd:127.0.0.1:$V:exportname=disk" \
            "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$V,export=disk" \
            "nbd://127.0.0.1:$V/disk?reconnect-delay=5"; do
  expect_rc 0 "$VTOOL" img compare -f raw "$addr" ref.qcow2
done
expect_rc 0 "$VTOOL" img compare -f nbd "host=127.0.0.1,port=$V,export=disk" ref.qcow2
expect_rc 0 "$VTOOL" img compare -f nbd "path=$T/v.sock,export=disk" ref.qcow2
# Refusals, one line each.
expect_rc 1 "$VTOOL" img info "nbd://127.0.0.1:$V/nope"
expect_grep "Requested export not available: server reported: export 'nope' not present" "$T/err"
expect_lines 1 "$T/err"
expect_rc 1 "$VTOOL" img info "nbd://127.0.0.1:$(free_port)/disk"
expect_grep "Failed to connect to '127.0.0.1:[0-9]+': Connection refused" "$T/err"
expect_rc 1 "$VTOOL" img info "nbds://127.0.0.1:$V/disk"
expect_grep 'TLS is not supported' "$T/err"
expect_rc 1 "$VTOOL" img info -f qcow2 "nbd://127.0.0.1:$V/disk"
expect_grep 'reads NBD exports as raw disks' "$T/err"
expect_rc 1 "$VTOOL" img info "nbd+unix:///disk"
expect_grep 'needs \?socket=PATH' "$T/err"
expect_rc 1 "$VTOOL" img convert -n -O raw shadow.raw "nbd://127.0.0.1:$V/disk"
expect_grep 'the NBD export is read-only' "$T/err"
expect_lines 0 v.pid.err
if ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1'; then  # IPv6, where lo has it
  V6=$(free_port)
  vserve v6.pid -f qcow2 -x disk -r -t -b ::1 -p "$V6" ref.qcow2
  expect_rc 0 "$VTOOL" img compare "nbd://[::1]:$V6/disk" ref.qcow2
  stop v6.pid
fi
stop v.pid
stop v2.pid

# nbdkit: memory (written by convert, then compared), file (map vs qemu-img), and the
# older protocol variants a client must still speak.
kserve k.pid -U "$T/k.sock" memory 64M
KU="nbd+unix:///?socket=$T/k.sock"
expect_rc 0 "$VTOOL" img convert -n -O raw ref.qcow2 "$KU"
expect_rc 0 "$VTOOL" img compare "$KU" ref.qcow2
"$VTOOL" img map --output=json "$KU" >kmap.v
qemu-img map --output=json "$KU" >kmap.q
same "map of an nbdkit memory disk vs qemu-img" kmap.v kmap.q
stop k.pid
"$VTOOL" img convert -O raw ref.qcow2 file.raw
for variant in "-" "--no-sr" "--oldstyle" "--mask-handshake=0" \
               "--filter=blocksize:minblock=4096"; do
  K=$(free_port)
  opt=${variant%%:*}
  arg=
  [ "$opt" = - ] && opt=
  case $variant in *:*) arg=${variant#*:} ;; esac
  # shellcheck disable=SC2086
  kserve kf.pid -p "$K" $opt file file.raw $arg
  expect_rc 0 timeout 60 "$VTOOL" img compare "nbd://127.0.0.1:$K" ref.qcow2
  timeout 60 "$VTOOL" img map --output=json "nbd://127.0.0.1:$K" >fmap.v
  timeout 60 qemu-img map --output=json "nbd://127.0.0.1:$K" >fmap.q
  same "map via nbdkit file $variant vs qemu-img" fmap.v fmap.q
  stop kf.pid
done
K=$(free_port)
# Unaligned writes through a 4 KiB minimum block size.
cp file.raw fshadow.raw
kserve kb.pid -p "$K" --filter=blocksize file file.raw minblock=4096
expect_rc 0 timeout 120 "$BLKIO" write "nbd://127.0.0.1:$K" raw fshadow.raw 5 200
stop kb.pid
expect_rc 0 cmp file.raw fshadow.raw
# Errors the server reports reach the user as one line with the server's reason.
K=$(free_port)
kserve ke.pid -p "$K" --filter=error pattern 16M error=EIO error-pread-rate=1
expect_rc 1 timeout 60 "$VTOOL" img convert -O raw "nbd://127.0.0.1:$K" e.raw
expect_grep 'Input/output error' "$T/err"
expect_lines 1 "$T/err"
expect_rc 1 test -e e.raw
stop ke.pid
# nbdkit's pattern plugin: every 8 bytes hold their own offset, big-endian.
K=$(free_port)
kserve kp.pid -p "$K" pattern 1M
expect_rc 0 timeout 60 "$VTOOL" img convert -O raw "nbd://127.0.0.1:$K" p.raw
python3 - p.raw >"$T/pat" <<'EOF'
import struct, sys
d = open(sys.argv[1], 'rb').read()
print('ok' if all(struct.unpack('>Q', d[i:i+8])[0] == i for i in range(0, len(d), 8)) else 'bad')
EOF
expect_grep '^ok$' "$T/pat"
stop kp.pid
finish
