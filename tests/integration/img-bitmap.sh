#!/usr/bin/env bash
# Persistent dirty bitmaps against qemu: `vtool img bitmap` and `qemu-img bitmap` run the
# same action sequences on twin images (same exit codes and messages, same `info`), and
# the bits themselves are read back through qemu-nbd's qemu:dirty-bitmap contexts and
# compared. Writes through vtool's block layer (and a guest's, under vtool run) set the
# bits qemu-io sets; resize, commit,
# convert --bitmaps and check -r keep them; a writer killed mid-session leaves them
# in-use (inconsistent) as qemu's does, never corrupt; malformed bitmap directories are
# refused as qemu refuses them.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io qemu-nbd nbdinfo
: "${BLKIO:?}"
cd "$T"

# bits IMG BITMAP...: one line per bitmap, "name: <nbdinfo --map>" (dirty extents).
bits() {
  local img=$1; shift
  local args=() b pid
  for b in "$@"; do args+=(-B "$b"); done
  rm -f nbd.sock
  qemu-nbd -r -t -k "$T/nbd.sock" -f qcow2 "${args[@]}" "$img" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do [ -S nbd.sock ] && break; sleep 0.05; done
  for b in "$@"; do
    echo "$b: $(nbdinfo --map="qemu:dirty-bitmap:$b" "nbd+unix:///?socket=$T/nbd.sock" | tr -s ' \n' ' ')"
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}

# info IMG: qemu-img's view, minus what allocation choices change.
info() { qemu-img info --output=json -U "$1" | grep -v -e '"actual-size"' -e '"filename"'; }

# twin LABEL CMD...: run CMD with "@" replaced by q.qcow2 for qemu-img and v.qcow2 for
# vtool (and "@o" by qo/vo.qcow2); compare exit status and stderr.
twin() {
  local label=$1; shift
  local qa=() va=() a qrc=0 vrc=0
  for a in "$@"; do qa+=("${a//@/q}"); va+=("${a//@/v}"); done
  qemu-img "${qa[@]}" >q.out 2>q.err || qrc=$?
  "$VTOOL" img "${va[@]}" >v.out 2>v.err || vrc=$?
  [ "$qrc" -eq "$vrc" ] && pass || fail "$label: rc $vrc, qemu-img $qrc: $(cat v.err) / $(cat q.err)"
  # qemu names a node (#block123) where vtool names the file.
  local node='s/(to|in) '"'"'(#block[0-9]+|[^'"'"']*)'"'"'/\1 FILE/; s/(to|in) (#block[0-9]+|[^ ]*\.qcow2)/\1 FILE/'
  sed -E -e 's/^vtool img [a-z]*: /qemu-img: /' -e 's/^vtool: /qemu-img: /' -e 's/v([.-])/q\1/g' \
      -e "s/'vtool img bitmap/'qemu-img bitmap/" -e "$node" v.err >v.err.n
  sed -E -e "$node" q.err >q.err.n
  cmp -s q.err.n v.err.n && pass || fail "$label: stderr '$(cat v.err)' vs qemu-img '$(cat q.err)'"
}

same_state() { # LABEL BITMAP...: q.qcow2 and v.qcow2 have the same info and bits
  local label=$1; shift
  diff <(info q.qcow2) <(info v.qcow2 | sed 's/v\.qcow2/q.qcow2/') >/dev/null && pass \
    || fail "$label: info differs: $(diff <(info q.qcow2) <(info v.qcow2) | head -c 600)"
  [ "$(bits q.qcow2 "$@")" = "$(bits v.qcow2 "$@")" ] && pass \
    || fail "$label: bits differ: $(diff <(bits q.qcow2 "$@") <(bits v.qcow2 "$@") | head -c 600)"
  qemu-img check v.qcow2 >chk.out 2>&1 && pass || fail "$label: qemu-img check: $(head -c 400 chk.out)"
}

# 1. The actions, their errors, and the bits they leave.
for p in q v; do
  qemu-img create -q -f qcow2 $p.qcow2 100M
  qemu-img create -q -f qcow2 ${p}o.qcow2 100M
  qemu-img create -q -f qcow2 ${p}s.qcow2 50M
  qemu-img bitmap --add ${p}o.qcow2 ob
  qemu-io -c "write 10M 4k" ${p}o.qcow2 >/dev/null
  qemu-img bitmap --add ${p}s.qcow2 ob
done
twin "add" bitmap --add @.qcow2 b0
twin "add twice" bitmap --add @.qcow2 b0
twin "add disabled, 4k" bitmap --add -g 4096 --disable @.qcow2 b1
twin "add 1M" bitmap --add -g 1M @.qcow2 coarse
for p in q v; do qemu-io -c "write 8k 4k" -c "write 3M 4k" $p.qcow2 >/dev/null; done
twin "add m" bitmap --add --disable @.qcow2 m
twin "merge finer" bitmap --merge b1 @.qcow2 m
twin "merge two" bitmap --merge coarse --merge b0 @.qcow2 m
twin "merge from -b" bitmap --merge ob -b @o.qcow2 @.qcow2 m
twin "merge other size" bitmap --merge ob -b @s.qcow2 @.qcow2 m
twin "merge -F raw" bitmap --merge ob -b @o.qcow2 -F raw @.qcow2 m
twin "remove missing" bitmap --remove @.qcow2 nosuch
twin "clear then add" bitmap --clear --add @.qcow2 b3
twin "add add (first stays)" bitmap --add --add @.qcow2 b3
twin "remove add" bitmap --remove --add @.qcow2 b3
twin "disable" bitmap --disable @.qcow2 b0
twin "enable" bitmap --enable @.qcow2 b1
twin "clear" bitmap --clear @.qcow2 coarse
twin "granularity 256" bitmap --add -g 256 @.qcow2 x
twin "granularity 3000" bitmap --add -g 3000 @.qcow2 x
twin "granularity 4G" bitmap --add -g 4G @.qcow2 x
twin "granularity 2G" bitmap --add -g 2G @.qcow2 big
twin "granularity abc" bitmap --add -g abc @.qcow2 x
twin "empty name" bitmap --add @.qcow2 ""
twin "no action" bitmap @.qcow2 b0
twin "-g without --add" bitmap --remove -g 4k @.qcow2 b0
twin "-F without -b" bitmap --merge b0 -F raw @.qcow2 m
twin "-b without --merge" bitmap --add -b @o.qcow2 @.qcow2 y
twin "one name" bitmap --add @.qcow2
long=$(printf 'y%.0s' $(seq 1024))
"$VTOOL" img bitmap --add v.qcow2 "$long" 2>v.err && fail "1024-byte name accepted" || pass
expect_grep 'Name length exceeds maximum \(1023 characters\)' v.err
for p in q v; do qemu-io -c "write 20M 64k" -c "write -z 30M 70000" -c "discard 40M 1M" $p.qcow2 >/dev/null; done
same_state "after the actions" b0 b1 coarse m b3 big
twin "raw image" bitmap --add -f raw @o.qcow2 r
qemu-img create -q -f qcow2 -o compat=0.10 qv2.qcow2 10M; cp qv2.qcow2 vv2.qcow2
twin "v2 image" bitmap --add @v2.qcow2 b
expect_rc 0 "$VTOOL" img check v.qcow2
expect_grep '^No errors were found on the image' "$T/out"

# 2. Writes through vtool's block layer set what qemu-io's writes set (enabled bitmaps
# only; unaligned ranges, zero writes, discards, the disk's last partial chunk).
for p in q v; do
  qemu-img create -q -f qcow2 $p.qcow2 100M
  qemu-img bitmap --add $p.qcow2 g64k
  qemu-img bitmap --add -g 512 $p.qcow2 g512
  qemu-img bitmap --add -g 4M --disable $p.qcow2 off
done
printf 'write 1000 5000\nzero 3145728 70000\ndiscard 52428800 65536\nflush\nwrite 104857000 600\nwrite 70000000 1\n' >s.txt
"$BLKIO" script v.qcow2 qcow2 s.txt && pass || fail "blkio script"
qemu-io -c "write 1000 5000" -c "write -z 3145728 70000" -c "discard 52428800 65536" \
        -c "write 104857000 600" -c "write 70000000 1" q.qcow2 >/dev/null
same_state "writes" g64k g512 off

# ... and so do a guest's writes through vtool run's virtio-blk (the image is stored at
# the VMM's exit).
if [ -c /dev/kvm ] && [ -n "${TGUEST:-}" ]; then
  for p in q v; do
    qemu-img create -q -f qcow2 $p.qcow2 64M
    qemu-img bitmap --add -g 4096 $p.qcow2 g4k
  done
  rc=0
  timeout 60 "$VTOOL" run -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 \
    -kernel "$TGUEST" -drive file=v.qcow2,format=qcow2,if=virtio \
    -append "test=disk dev=vblk ops=i,w:8:16:a5,w:4000:255:c6,f" >run.out 2>&1 || rc=$?
  [ "$rc" -eq 1 ] && pass || fail "vtool run: exit $rc: $(tail -3 run.out)"
  qemu-io -c "write -P 0xa5 4096 8192" -c "write -P 0xc6 2048000 130560" q.qcow2 >/dev/null
  same_state "guest writes" g4k
fi

# 3. resize, convert --bitmaps, commit keep them.
cp q.qcow2 v.qcow2
twin "grow" resize @.qcow2 +64M
twin "shrink" resize --shrink @.qcow2 60M
same_state "resize" g64k g512 off
twin "convert --bitmaps" convert --bitmaps -O qcow2 @.qcow2 @c.qcow2
mv qc.qcow2 q.qcow2; mv vc.qcow2 v.qcow2
same_state "convert --bitmaps" g64k g512 off
twin "convert --bitmaps -c" convert --bitmaps -c -O qcow2 @.qcow2 @c.qcow2
twin "convert --bitmaps to raw" convert --bitmaps -O raw @.qcow2 @c.raw
qemu-img create -q -f raw qc.raw 1M; cp qc.raw vc.raw  # qemu-img leaves the output; vtool not
twin "convert --bitmaps of raw" convert --bitmaps -f raw -O qcow2 @c.raw @d.qcow2
twin "convert --bitmaps, two sources" convert --bitmaps -O qcow2 @.qcow2 @.qcow2 @d.qcow2
twin "convert --bitmaps to v2" convert --bitmaps -O qcow2 -o compat=0.10 @.qcow2 @d.qcow2
twin "convert --skip-broken-bitmaps alone" convert --skip-broken-bitmaps -O qcow2 @.qcow2 @d.qcow2
twin "convert -n --bitmaps over the same names" convert -n --bitmaps -O qcow2 @.qcow2 @c.qcow2
twin "measure" measure -O qcow2 @.qcow2
cmp -s q.out v.out && pass || fail "measure: '$(cat v.out)' vs '$(cat q.out)'"
for p in q v; do
  qemu-img create -q -f qcow2 -b $p.qcow2 -F qcow2 ${p}o.qcow2
  qemu-img bitmap --add ${p}o.qcow2 top
  qemu-io -c "write 2M 3M" ${p}o.qcow2 >/dev/null
done
twin "commit" commit @o.qcow2
same_state "commit into a base with bitmaps" g64k g512 off

# 4. A writer killed while it holds the image: the bitmaps are in use, the image is clean.
cp q.qcow2 k.qcow2
"$BLKIO" hold k.qcow2 qcow2 100 >/dev/null & hpid=$!
for _ in $(seq 100); do grep -q ' 201 201' /proc/locks && break; sleep 0.05; done
sleep 0.2; kill -9 "$hpid"; wait "$hpid" 2>/dev/null
cp k.qcow2 q.qcow2; cp k.qcow2 v.qcow2
qemu-img info q.qcow2 | grep -q 'in-use' && pass || fail "killed writer: no in-use flag"
diff <(info q.qcow2) <(info v.qcow2 | sed 's/v\.qcow2/q.qcow2/') >/dev/null && pass || fail "in-use info"
expect_rc 0 "$VTOOL" img check v.qcow2
twin "clear an inconsistent bitmap" bitmap --clear @.qcow2 g64k
twin "convert --bitmaps, inconsistent" convert --bitmaps -O qcow2 @.qcow2 @d.qcow2
twin "convert --skip-broken-bitmaps" convert --bitmaps --skip-broken-bitmaps -O qcow2 @.qcow2 @d.qcow2
twin "remove an inconsistent bitmap" bitmap --remove @.qcow2 g64k
diff <(info q.qcow2) <(info v.qcow2 | sed 's/v\.qcow2/q.qcow2/') >/dev/null && pass || fail "after remove"
qemu-img check v.qcow2 >chk.out 2>&1 && pass || fail "after remove: $(head -c 300 chk.out)"

# 5. check -r keeps them (their clusters are referenced, not leaked), and so does the
# repair of a lazy-refcounts image left dirty.
"$VTOOL" img check -r all v.qcow2 >/dev/null 2>&1
qemu-img check v.qcow2 >chk.out 2>&1 && pass || fail "check -r freed bitmap clusters: $(head -c 300 chk.out)"
qemu-img create -q -f qcow2 -o lazy_refcounts=on l.qcow2 64M
qemu-img bitmap --add l.qcow2 l0
( timeout -s KILL 1 "$BLKIO" crash l.qcow2 qcow2 7 ) >/dev/null 2>&1
expect_rc 0 "$VTOOL" img bitmap --remove l.qcow2 l0
qemu-img check l.qcow2 >chk.out 2>&1 && pass || fail "dirty repair: $(head -c 300 chk.out)"

# 6. Malformed bitmap extensions and directories: refused at open, as qemu refuses them.
qemu-img create -q -f qcow2 m.qcow2 16M
qemu-img bitmap --add m.qcow2 b
python3 - m.qcow2 <<'EOF' >offs
import struct, sys
d = open(sys.argv[1], 'rb').read(65536)
off = struct.unpack('>I', d[100:104])[0]
while True:
    t, n = struct.unpack('>II', d[off:off + 8])
    if t == 0x23852875:
        print(off + 8, struct.unpack('>Q', d[off + 24:off + 32])[0]); break
    off += 8 + (n + 7) // 8 * 8
EOF
read -r ext dir <offs
corrupt() { # NAME OFFSET HEXBYTES
  cp m.qcow2 "$1.qcow2"
  printf "$(echo "$3" | sed 's/../\\x&/g')" | dd of="$1.qcow2" bs=1 seek="$2" conv=notrunc status=none
  local qrc=0 vrc=0
  qemu-img info "$1.qcow2" >/dev/null 2>&1 || qrc=$?
  "$VTOOL" img info "$1.qcow2" >/dev/null 2>v.err || vrc=$?
  [ "$qrc" -eq "$vrc" ] && pass || fail "malformed $1: rc $vrc, qemu-img $qrc: $(cat v.err)"
  [ "$vrc" -eq 0 ] || expect_lines 1 v.err
}
corrupt zero-count "$ext" 00000000
corrupt too-many "$ext" 00010000
corrupt reserved $((ext + 4)) 00000001
corrupt dir-unaligned $((ext + 23)) 08
corrupt dir-huge $((ext + 8)) 0000000100000000
corrupt table-unaligned $((dir + 7)) 08
corrupt table-size-0 $((dir + 8)) 00000000
corrupt bad-flags $((dir + 12)) 00000010
corrupt bad-type $((dir + 16)) 02
corrupt gran-8 $((dir + 17)) 08
corrupt gran-32 $((dir + 17)) 20
corrupt extra-data $((dir + 20)) 00000008
corrupt name-long $((dir + 18)) ffff

finish
