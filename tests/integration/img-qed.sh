#!/usr/bin/env bash
# QED against qemu-img, both directions:
# - images qemu-img made (cluster and table sizes, zero clusters, backing chains of raw,
#   qcow2 and qed) read the same through vtool: info (human, JSON, --backing-chain),
#   convert -O raw byte for byte, compare, map, check;
# - images vtool made (create with every option, convert from raw and qcow2, random
#   writes and zeroing through blk.h, over backing files too) are identical for
#   qemu-img compare and clean for qemu-img check;
# - the need-check flag: set while vtool writes, cleared by a flush; a killed writer
#   leaves it set and leaks at most (qemu-img check 0 or 3), and the next read-write
#   open repairs like qemu's;
# - create's -o help and Formatting line equal qemu-img's.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
: "${BLKIO:?}"
cd "$T"

size=$((7 * 1048576 + 1536))
python3 - "$size" <<'PY'
import random, sys
size = int(sys.argv[1])
rng = random.Random(12)
with open("src.raw", "wb") as f:
    f.truncate(size)
    f.seek(0); f.write(rng.randbytes(700 * 1024))                # random
    f.seek(1 << 20); f.write(b"vtool qed " * 60000)              # compressible
    f.seek(3 << 20); f.write(bytes(1 << 20))                     # written zeros
    f.seek(5 * 1048576 + 4096); f.write(rng.randbytes(300000))
    f.seek(size - 1000); f.write(rng.randbytes(1000))            # the partial last cluster
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

# Images qemu made.
qemu-img convert -O qed src.raw q-default.qed
qemu-img convert -O qed -o cluster_size=4k src.raw q-4k.qed
qemu-img convert -O qed -o cluster_size=1M,table_size=16 src.raw q-1m.qed
qemu-img convert -O qed -o table_size=2 src.raw q-t2.qed
qemu-img create -q -f qed q-zero.qed 9M
qemu-io -f qed -c "write -P 0x31 6M 100k" -c "write -P 0x32 1500k 1M" -c "write -z 8M 128k" \
  -c "write -P 0x33 0 512" -c "write -z 64k 64k" q-zero.qed >/dev/null
qemu-img create -q -f raw base.raw 9M
qemu-io -f raw -c "write -P 0xaa 0 3M" -c "write -P 0xbb 5M 2M" base.raw >/dev/null
qemu-img create -q -f qed -b base.raw -F raw q-overraw.qed
qemu-io -f qed -c "write -P 0xcc 1M 100k" -c "write -z 5M 64k" -c "write -P 0xdd 8M 4k" q-overraw.qed >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2
qemu-io -c "write -P 0xee 2M 1M" mid.qcow2 >/dev/null
qemu-img create -q -f qed -b mid.qcow2 -F qcow2 q-overqcow2.qed 12M
qemu-io -f qed -c "write -P 0xff 2500k 70k" q-overqcow2.qed >/dev/null
qemu-img create -q -f qed -b q-overraw.qed -F qed q-overqed.qed
qemu-io -f qed -c "write -P 0x11 4M 1M" q-overqed.qed >/dev/null
qemu-img create -q -f qed q-empty.qed 0
qed_imgs=(q-default.qed q-4k.qed q-1m.qed q-t2.qed q-zero.qed q-overraw.qed q-overqcow2.qed q-overqed.qed)
for img in "${qed_imgs[@]}" q-empty.qed; do
  same "info json $img" info --output=json "$img"
  same "info $img" info "$img"
  same "info chain $img" info --backing-chain "$img"
  same "info chain json $img" info --backing-chain --output=json "$img"
  same "check $img" check "$img"
  same "check json $img" check --output=json "$img"
  same "map json $img" map --output=json "$img"
  same "map $img" map "$img"
  same "compare $img" compare src.raw "$img"
  same "compare -s $img" compare -s src.qcow2 "$img"
  rm -f v.raw q.raw
  expect_rc 0 "$VTOOL" img convert -O raw "$img" v.raw
  qemu-img convert -O raw "$img" q.raw
  if cmp -s v.raw q.raw; then pass; else fail "convert -O raw $img differs from qemu-img's"; fi
done
# qemu counts clusters by offset / (cluster_size - 1): a 4k-cluster file past 16 MiB shows
# "leaks" in qemu-img check, and vtool counts the same.
qemu-img create -q -f qed -o cluster_size=4k q-big4k.qed 64M
qemu-io -f qed -c "write -P 1 0 40M" q-big4k.qed >/dev/null
same "check quirk" check --output=json q-big4k.qed

# create: the Formatting line, the file qemu would make, -o help.
for o in "" "cluster_size=4k" "table_size=16" "cluster_size=2M,table_size=8" "table_size=1" \
         "size=3M" "cluster_size=64k,table_size=4"; do
  rm -f v.qed q.qed
  opt=(); [ -n "$o" ] && opt=(-o "$o")
  sz=(5000000); case $o in *size=3M) sz=() ;; esac
  expect_rc 0 "$VTOOL" img create -f qed "${opt[@]}" v.qed "${sz[@]}"
  sed 's/v\.qed/X/' "$T/out" >v.fmt
  qemu-img create -f qed "${opt[@]}" q.qed "${sz[@]}" | sed 's/q\.qed/X/' >q.fmt
  if diff v.fmt q.fmt >"$T/d"; then pass; else fail "Formatting line for '$o': $(cat "$T/d")"; fi
  if cmp -s v.qed q.qed; then pass; else fail "create '$o': file differs from qemu-img's"; fi
done
for b in "-b base.raw -F raw" "-b mid.qcow2 -F qcow2" "-b q-zero.qed -F qed"; do
  rm -f v.qed q.qed
  # shellcheck disable=SC2086
  expect_rc 0 "$VTOOL" img create -f qed $b v.qed
  sed 's/v\.qed/X/' "$T/out" >v.fmt
  # shellcheck disable=SC2086
  qemu-img create -f qed $b q.qed | sed 's/q\.qed/X/' >q.fmt
  if diff v.fmt q.fmt >"$T/d"; then pass; else fail "Formatting line for '$b': $(cat "$T/d")"; fi
  if cmp -s v.qed q.qed; then pass; else fail "create '$b': file differs from qemu-img's"; fi
  same "info of created '$b'" info --output=json v.qed
done
"$VTOOL" img create -f qed -o help >v.help
qemu-img create -f qed -o help >q.help
if diff v.help q.help >"$T/d"; then pass; else fail "-o help differs: $(cat "$T/d")"; fi
for o in cluster_size=1000 cluster_size=128M table_size=3 table_size=32 cluster_size=64M,table_size=16; do
  expect_rc 1 "$VTOOL" img create -f qed -o "$o" bad.qed 5M
  qemu-img create -f qed -o "$o" bad2.qed 5M >/dev/null 2>"$T/qerr" || true
  want="vtool: bad.qed: create: $(sed 's/^qemu-img: bad2.qed: //' "$T/qerr")"
  if [ "$(cat "$T/err")" = "$want" ]; then pass; else fail "create -o $o: $(cat "$T/err"), want $want"; fi
done
[ -e bad.qed ] && fail "a failed create left bad.qed" || pass
qemu-img create -q -f qed -o table_size=1 t1.qed 5M
same "open table_size=1" info t1.qed   # qemu makes it but refuses to open it; so does vtool
expect_rc 1 "$VTOOL" img info t1.qed
expect_grep "QED table offset is invalid" "$T/err"

# Random writes and zeroing through blk.h onto vtool-made and qemu-made images, with and
# without backing files; qemu judges.
seed=1
for img in v-default v-4k v-t16 v-overraw v-overqcow2 v-4m-overraw q-zero q-overqed; do
  rm -f w.qed shadow
  case $img in
    v-default) "$VTOOL" img create -q -f qed w.qed 21000000 ;;
    v-4k) "$VTOOL" img create -q -f qed -o cluster_size=4k w.qed 15M ;;
    v-t16) "$VTOOL" img create -q -f qed -o cluster_size=16k,table_size=16 w.qed 21M ;;
    v-overraw) "$VTOOL" img create -q -f qed -b base.raw -F raw w.qed 12M ;;
    v-overqcow2) "$VTOOL" img create -q -f qed -b mid.qcow2 -F qcow2 w.qed ;;
    v-4m-overraw) "$VTOOL" img create -q -f qed -o cluster_size=4M,table_size=2 -b base.raw -F raw w.qed ;;
    q-zero) cp q-zero.qed w.qed ;;
    q-overqed) cp q-overqed.qed w.qed ;;
  esac
  qemu-img convert -O raw w.qed shadow
  expect_rc 0 "$BLKIO" write w.qed qed shadow $seed 120
  expect_rc 0 qemu-img compare -f raw -F qed shadow w.qed
  expect_rc 0 qemu-img check w.qed
  # (qemu-img info never shows QED's need-check bit: look at the header's features)
  [ $(( $(od -An -tu1 -j16 -N1 w.qed) & 2 )) = 0 ] && pass || fail "$img: left marked needs-check"
  same "map after writes ($img)" map --output=json w.qed
  same "check after writes ($img)" check --output=json w.qed
  seed=$((seed + 1))
done
expect_rc 0 qemu-img check q-overraw.qed   # a backing file is never written

# convert -O qed from raw and qcow2 (8 workers), options, -B.
for args in "-O qed" "-O qed -S 0" "-O qed -o cluster_size=4k" "-O qed -o table_size=1,cluster_size=1M" \
            "-O qed -m 1" "-O qed -W"; do
  for input in src.raw src.qcow2; do
    rm -f out.qed qout.qed
    # shellcheck disable=SC2086
    qrc=0; qemu-img convert $args "$input" qout.qed 2>/dev/null || qrc=$?
    # shellcheck disable=SC2086
    vrc=0; "$VTOOL" img convert $args "$input" out.qed 2>/dev/null || vrc=$?
    if [ "$vrc" = "$qrc" ]; then pass; else fail "'convert $args $input': rc $vrc, qemu $qrc"; fi
    [ "$qrc" = 0 ] || continue
    expect_rc 0 qemu-img compare src.raw out.qed
    expect_rc 0 qemu-img check out.qed
    if [ "$(stat -c %s out.qed)" -le "$(stat -c %s qout.qed)" ]; then pass
    else fail "'convert $args $input': $(stat -c %s out.qed) bytes > qemu's $(stat -c %s qout.qed)"; fi
  done
done
cp src.raw mod.raw
qemu-io -f raw -c "write -P 0x77 1M 64k" mod.raw >/dev/null
rm -f ov.qed
expect_rc 0 "$VTOOL" img convert -O qed -B src.qcow2 -F qcow2 mod.raw ov.qed
expect_rc 0 qemu-img compare mod.raw ov.qed
expect_rc 0 qemu-img check ov.qed
head -c 40M /dev/urandom >big.raw
qemu-io -f raw -c "write -z 8M 8M" big.raw >/dev/null
rm -f big.qed
expect_rc 0 "$VTOOL" img convert -O qed big.raw big.qed
expect_rc 0 qemu-img compare big.raw big.qed
expect_rc 0 qemu-img check big.qed

# Killed writers: the image may leak and stays marked "needs check"; qemu-img check never
# finds corruption; a read-write open by vtool then repairs and cleans it, like qemu's.
RANDOM=9
for i in 0 1 2 3 4 5; do
  rm -f k.qed
  case $((i % 3)) in
    0) "$VTOOL" img create -q -f qed k.qed 16M ;;
    1) "$VTOOL" img create -q -f qed -o cluster_size=4k k.qed 12M ;;
    2) "$VTOOL" img create -q -f qed -b base.raw -F raw k.qed 16M ;;
  esac
  "$BLKIO" crash k.qed qed $((i + 1)) &
  pid=$!
  sleep "0.$((RANDOM % 4 + 1))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rc=0; qemu-img check k.qed >"$T/chk" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then pass; else fail "kill #$i: rc $rc $(head -c 400 "$T/chk")"; fi
  cp k.qed k2.qed
  same "check after kill #$i" check --output=json k.qed
  same "info after kill #$i" info --output=json k.qed
  expect_rc 0 "$BLKIO" hold k.qed qed 0   # a read-write open repairs, as qemu-io's does
  qemu-io -f qed -c flush k2.qed >/dev/null
  same "repaired like qemu after kill #$i" check --output=json k.qed
  qemu-img check --output=json k2.qed | grep -v filename >q.chk
  qemu-img check --output=json k.qed | grep -v filename >v.chk
  if diff q.chk v.chk >"$T/d"; then pass; else fail "kill #$i: vtool's repair differs from qemu's: $(cat "$T/d")"; fi
  [ $(( $(od -An -tu1 -j16 -N1 k.qed) & 2 )) = 0 ] && pass || fail "kill #$i: still marked needs-check"
done

# vtool run serves the image to tguest on virtio-blk (probed: vmm/disk.c takes only
# format=raw|qcow2 by name); qemu-io reads back what the guest wrote.
if [ -c /dev/kvm ] && [ -n "${TGUEST:-}" ]; then
  rm -f g.qed
  qemu-img create -q -f qed g.qed 64M
  qemu-io -f qed -c "write -P 0x5a 1M 64k" g.qed >/dev/null
  rc=0
  timeout 60 "$VTOOL" run -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 -kernel "$TGUEST" \
    -drive "file=g.qed,if=virtio" \
    -append "test=disk dev=vblk ops=i,w:8:16:a5,r:8:16:a5,r:2048:128:5a,w:4000:255:c6,r:4000:255:c6,f" \
    >run.out 2>&1 || rc=$?
  if [ "$rc" -eq 1 ] && grep -q '^TG-PASS disk' run.out; then pass; else fail "vtool run on qed: rc $rc $(tail -3 run.out)"; fi
  for r in "0xa5 4096 8192" "0xc6 $((4000 * 512)) $((255 * 512))" "0x5a 1M 64k"; do
    set -- $r
    if ! qemu-io -f qed -r -c "read -P $1 $2 $3" g.qed | grep -q 'verification failed'; then pass; else fail "guest data at $2 in g.qed"; fi
  done
  expect_rc 0 qemu-img check g.qed
fi

finish
