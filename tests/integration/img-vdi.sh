#!/usr/bin/env bash
# VDI (VirtualBox) against qemu-img, both directions:
# - images qemu-img made (dynamic and static, in order and out of order, odd sizes) read
#   the same through vtool: info (human and JSON), convert -O raw byte for byte, compare
#   and map output equal to qemu-img's, check equal;
# - images vtool made (create, convert from raw and qcow2, random writes through blk.h)
#   are identical for qemu-img compare and clean for qemu-img check;
# - create's -o help and Formatting line equal qemu-img's; a killed writer leaves an
#   image qemu-img check finds clean.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
: "${BLKIO:?}"
cd "$T"

# A mixed source: random, zero (written and holes) and compressible regions, 7 MiB + 1.5k
# (a whole number of sectors, not of 1 MiB blocks).
size=$((7 * 1048576 + 1536))
python3 - "$size" <<'PY'
import random, sys
size = int(sys.argv[1])
rng = random.Random(11)
with open("src.raw", "wb") as f:
    f.truncate(size)
    f.seek(0); f.write(rng.randbytes(700 * 1024))                # random
    f.seek(1 << 20); f.write(b"vtool vdi " * 60000)              # compressible
    f.seek(3 << 20); f.write(bytes(1 << 20))                     # written zeros
    f.seek(5 * 1048576 + 4096); f.write(rng.randbytes(300000))   # straddles blocks 5, 6
    f.seek(size - 1000); f.write(rng.randbytes(1000))            # the partial last block
PY
qemu-img convert -O qcow2 src.raw src.qcow2

same() { # label, then the argument list for both tools
  local label=$1; shift
  local vrc=0 qrc=0
  "$VTOOL" img "$@" >"$T/v.out" 2>/dev/null || vrc=$?
  qemu-img "$@" >"$T/q.out" 2>/dev/null || qrc=$?
  if [ "$vrc" -ne "$qrc" ]; then fail "$label: exit $vrc, qemu-img $qrc"
  elif ! diff "$T/v.out" "$T/q.out" >"$T/d"; then fail "$label: output differs: $(head -c 600 "$T/d")"
  else pass; fi
}

# Images qemu made: dynamic, static, written out of order by qemu-io (physical blocks
# in write order), and an odd size qemu rounds up to a sector.
qemu-img convert -O vdi src.raw q-dyn.vdi
qemu-img convert -O vdi -o static=on src.raw q-static.vdi
qemu-img create -q -f vdi q-order.vdi 9M
qemu-io -f vdi -c "write -P 0x31 6M 100k" -c "write -P 0x32 1500k 1M" -c "write -z 8M 4k" \
  -c "write -P 0x33 0 512" q-order.vdi >/dev/null
qemu-img create -q -f vdi -o static=on q-sorder.vdi 3M
qemu-io -f vdi -c "write -P 0x41 1M 64k" q-sorder.vdi >/dev/null
qemu-img create -q -f vdi q-odd.vdi 1000001
qemu-img create -q -f vdi q-empty.vdi 0
for img in q-dyn.vdi q-static.vdi q-order.vdi q-sorder.vdi q-odd.vdi q-empty.vdi; do
  same "info json $img" info --output=json "$img"
  same "info $img" info "$img"
  # (an empty disk's JSON map is a generic img/map.c difference: qemu prints one empty
  # extent, vtool none -- not a VDI matter)
  [ "$img" = q-empty.vdi ] || same "map json $img" map --output=json "$img"
  same "map $img" map "$img"
  same "check $img" check "$img"
  same "check json $img" check --output=json "$img"
  same "compare $img" compare src.raw "$img"
  same "compare -s $img" compare -s src.raw "$img"
  rm -f v.raw q.raw
  expect_rc 0 "$VTOOL" img convert -O raw "$img" v.raw
  qemu-img convert -O raw "$img" q.raw
  if cmp -s v.raw q.raw; then pass; else fail "convert -O raw $img differs from qemu-img's"; fi
  rm -f v.qcow2
  expect_rc 0 "$VTOOL" img convert -O qcow2 "$img" v.qcow2
  expect_rc 0 qemu-img compare "$img" v.qcow2
done
same "compare dyn static" compare q-dyn.vdi q-static.vdi
# qemu repairs nothing in a VDI: check -r is "not supported" (63) for both
cp q-order.vdi r.vdi
same "check -r all" check -r all r.vdi
same "check -r leaks" check -r leaks r.vdi
expect_rc 63 "$VTOOL" img check -r all r.vdi
expect_grep 'This image format does not support checks' "$T/err"
same "compare -s dyn raw" compare -s q-dyn.vdi src.qcow2

# Images vtool makes: create, then qemu judges.
vsize() { qemu-img info --output=json "$1" | sed -n 's/^ *"virtual-size": \([0-9]*\),$/\1/p'; }
for o in "" "static=on" "static=off" "size=3M" "static=on,size=2000000"; do
  rm -f v.vdi q.vdi
  opt=(); [ -n "$o" ] && opt=(-o "$o")
  sz=(5000000); case $o in *size=*) sz=() ;; esac
  expect_rc 0 "$VTOOL" img create -f vdi "${opt[@]}" v.vdi "${sz[@]}"
  sed 's/v\.vdi/X/' "$T/out" >v.fmt
  qemu-img create -f vdi "${opt[@]}" q.vdi "${sz[@]}" | sed 's/q\.vdi/X/' >q.fmt
  if diff v.fmt q.fmt >"$T/d"; then pass; else fail "Formatting line for '$o': $(cat "$T/d")"; fi
  expect_rc 0 qemu-img check v.vdi
  if [ "$(stat -c %s v.vdi)" = "$(stat -c %s q.vdi)" ]; then pass
  else fail "create '$o': file is $(stat -c %s v.vdi) bytes, qemu's $(stat -c %s q.vdi)"; fi
  # Everything but the random UUIDs is the same header.
  if cmp -s <(head -c 392 v.vdi) <(head -c 392 q.vdi) && cmp -s <(tail -c +425 v.vdi) <(tail -c +425 q.vdi)
  then pass; else fail "create '$o': header or map differs from qemu-img's"; fi
  diff <("$VTOOL" img info --output=json v.vdi | grep -v actual-size) \
       <(qemu-img info --output=json v.vdi | grep -v actual-size) >"$T/d" && pass || fail "info of created '$o': $(cat "$T/d")"
done
"$VTOOL" img create -f vdi -o help >v.help
qemu-img create -f vdi -o help >q.help
if diff v.help q.help >"$T/d"; then pass; else fail "-o help differs: $(cat "$T/d")"; fi
expect_rc 1 "$VTOOL" img create -f vdi -o static=maybe bad.vdi 1M
expect_rc 1 "$VTOOL" img create -f vdi bad.vdi 3P
expect_grep 'Unsupported VDI image size' "$T/err"
expect_rc 1 "$VTOOL" img create -f vdi -b src.raw -F raw bad.vdi
[ -e bad.vdi ] && fail "a failed create left bad.vdi" || pass

# Random writes through blk.h (unaligned, block-straddling, zeroing; 8 MiB jobs) onto
# vtool-made dynamic and static images and onto qemu-made ones.
seed=1
for img in dyn static qorder; do
  rm -f w.vdi shadow
  case $img in
    dyn) "$VTOOL" img create -q -f vdi w.vdi 21000000 ;;
    static) "$VTOOL" img create -q -f vdi -o static=on w.vdi 21000000 ;;
    qorder) cp q-order.vdi w.vdi ;;
  esac
  qemu-img convert -O raw w.vdi shadow
  expect_rc 0 "$BLKIO" write w.vdi vdi shadow $seed 120
  expect_rc 0 qemu-img compare -f raw -F vdi shadow w.vdi
  expect_rc 0 qemu-img check w.vdi
  same "map after writes ($img)" map --output=json w.vdi
  seed=$((seed + 1))
done

# convert -O vdi from raw and qcow2 (8 workers), with and without -S, static too.
for args in "-O vdi" "-O vdi -S 0" "-O vdi -o static=on" "-O vdi -m 1" "-O vdi -W"; do
  for input in src.raw src.qcow2; do
    rm -f out.vdi
    # shellcheck disable=SC2086
    expect_rc 0 "$VTOOL" img convert $args "$input" out.vdi
    expect_rc 0 qemu-img compare src.raw out.vdi
    expect_rc 0 qemu-img check out.vdi
    rm -f qout.vdi
    # shellcheck disable=SC2086
    qemu-img convert $args "$input" qout.vdi
    if [ "$(stat -c %s out.vdi)" -le "$(stat -c %s qout.vdi)" ]; then pass
    else fail "'convert $args $input': $(stat -c %s out.vdi) bytes > qemu's $(stat -c %s qout.vdi)"; fi
  done
done
# A larger, block-aligned convert through the parallel pipeline.
head -c 40M /dev/urandom >big.raw
qemu-io -f raw -c "write -z 8M 8M" big.raw >/dev/null
rm -f big.vdi
expect_rc 0 "$VTOOL" img convert -O vdi big.raw big.vdi
expect_rc 0 qemu-img compare big.raw big.vdi
expect_rc 0 qemu-img check big.vdi

# A writer killed at a random moment: qemu-img check still finds the image clean.
RANDOM=7
for i in 0 1 2 3 4 5; do
  rm -f k.vdi
  if [ $((i % 2)) -eq 0 ]; then "$VTOOL" img create -q -f vdi k.vdi 16M
  else "$VTOOL" img create -q -f vdi -o static=on k.vdi 16M; fi
  "$BLKIO" crash k.vdi vdi $((i + 1)) &
  pid=$!
  sleep "0.$((RANDOM % 4 + 1))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if qemu-img check k.vdi >"$T/chk" 2>&1; then pass; else fail "kill #$i: $(head -c 400 "$T/chk")"; fi
done

# Opened read-write by vtool, refused by name when another process holds it.
expect_rc 0 "$VTOOL" img info -U q-dyn.vdi

# vtool run serves the image to tguest on virtio-blk (format named, as users copy from
# qemu command lines); qemu-io reads back what the guest wrote.
if [ -c /dev/kvm ] && [ -n "${TGUEST:-}" ]; then
  rm -f g.vdi
  qemu-img create -q -f vdi g.vdi 64M
  qemu-io -f vdi -c "write -P 0x5a 1M 64k" g.vdi >/dev/null
  rc=0
  timeout 60 "$VTOOL" run -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 -kernel "$TGUEST" \
    -drive "file=g.vdi,format=vdi,if=virtio" \
    -append "test=disk dev=vblk ops=i,w:8:16:a5,r:8:16:a5,r:2048:128:5a,w:4000:255:c6,r:4000:255:c6,f" \
    >run.out 2>&1 || rc=$?
  if [ "$rc" -eq 1 ] && grep -q '^TG-PASS disk' run.out; then pass; else fail "vtool run on vdi: rc $rc $(tail -3 run.out)"; fi
  for r in "0xa5 4096 8192" "0xc6 $((4000 * 512)) $((255 * 512))" "0x5a 1M 64k"; do
    set -- $r
    if ! qemu-io -f vdi -r -c "read -P $1 $2 $3" g.vdi | grep -q 'verification failed'; then pass; else fail "guest data at $2 in g.vdi"; fi
  done
  expect_rc 0 qemu-img check g.vdi
fi

finish
