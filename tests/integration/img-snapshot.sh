#!/usr/bin/env bash
# vtool img snapshot against qemu-img, the oracle. Over a matrix of images (qcow2 v2/v3,
# 512 B / 64 KiB / 2 MiB clusters, refcount widths 1/16/64, extended L2, a backing file,
# compressed clusters) one image X goes through a sequence of snapshot operations done by
# vtool and qemu-img in turn, with qemu-io writes between them; a copy Q goes through the
# same steps with qemu-img alone. After every step:
# - qemu-img check finds X clean;
# - `vtool img snapshot -l` and `vtool img info` print what qemu-img prints for X;
# - X's snapshot list equals Q's (dates aside), and the data of every snapshot and of the
#   active disk (qemu-img convert -l / compare) equals Q's.
# Then the errors: unknown names, missing and conflicting options, -U, raw images,
# refcount overflow, persistent bitmaps, v2 resize -- same messages and exit codes.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

nodate() { sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/DATE/'; }

# same_list LABEL: X and Q list the same snapshots; vtool and qemu-img list X alike.
same_list() {
  "$VTOOL" img snapshot -l X >v.list 2>&1 || true
  qemu-img snapshot -l X >q.list 2>&1 || true
  if cmp -s v.list q.list; then pass; else fail "$1: snapshot -l differs: $(diff v.list q.list | head -5)"; fi
  qemu-img snapshot -l Q >qq.list 2>&1 || true
  if diff <(nodate <q.list) <(nodate <qq.list) >d.out; then pass
  else fail "$1: X and Q list different snapshots: $(head -8 d.out)"; fi
  for f in human json; do
    "$VTOOL" img info --output=$f X >v.info 2>&1 || true
    qemu-img info --output=$f X >q.info 2>&1 || true
    if cmp -s v.info q.info; then pass; else fail "$1: info ($f) differs: $(diff v.info q.info | head -6)"; fi
  done
}

# same_data LABEL: every snapshot and the active disk read the same in X and Q.
same_data() {
  local ids id
  ids=$(qemu-img snapshot -l Q | awk 'NR > 2 { print $1 }')
  for id in $ids; do
    qemu-img convert -l "snapshot.id=$id" -O raw X x.raw && qemu-img convert -l "snapshot.id=$id" -O raw Q q.raw
    if cmp -s x.raw q.raw; then pass; else fail "$1: snapshot $id reads differently"; fi
  done
  qemu-img convert -O raw X x.raw && qemu-img convert -O raw Q q.raw
  if cmp -s x.raw q.raw; then pass; else fail "$1: the active disk reads differently"; fi
  rm -f x.raw q.raw
}

check_x() {
  local rc=0
  qemu-img check X >chk.out 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then pass; else fail "$1: qemu-img check X rc=$rc: $(head -c 500 chk.out)"; fi
}

# step LABEL TOOL ARGS...: run `snapshot ARGS` on X with TOOL (vtool or qemu) and on Q
# with qemu-img; both must succeed (or fail alike), then everything is compared.
step() {
  local label=$1 tool=$2; shift 2
  local xrc=0 qrc=0
  if [ "$tool" = vtool ]; then "$VTOOL" img snapshot "$@" X >x.err 2>&1 || xrc=$?
  else qemu-img snapshot "$@" X >x.err 2>&1 || xrc=$?; fi
  qemu-img snapshot "$@" Q >q.err 2>&1 || qrc=$?
  if [ "$xrc" -eq "$qrc" ]; then pass; else fail "$label ($tool snapshot $*): rc $xrc, qemu-img $qrc: $(cat x.err)"; fi
  check_x "$label"
  same_list "$label"
  same_data "$label"
}

io() { # the same qemu-io writes on both
  qemu-io -f qcow2 "$@" X >/dev/null && qemu-io -f qcow2 "$@" Q >/dev/null
}

resize() { # the same resize on both: X by vtool, Q by qemu-img
  local xrc=0 qrc=0
  "$VTOOL" img resize -q "$@" X >x.err 2>&1 || xrc=$?
  qemu-img resize -q "$@" Q >q.err 2>&1 || qrc=$?
  if [ "$xrc" -eq "$qrc" ]; then pass; else fail "resize $*: rc $xrc, qemu-img $qrc: $(cat x.err)"; fi
  check_x "resize $*"
  same_data "resize $*"
}

qemu-img create -q -f raw base.raw 8M
qemu-io -f raw -c "write -P 0xb0 0 8M" base.raw >/dev/null

run_matrix() { # OPTS KIND
  local o=$1 kind=$2 label="[$1 $2]"
  rm -f X Q
  case $kind in
    backing) qemu-img create -q -f qcow2 -o "$o" -b base.raw -F raw X 12M ;;
    compressed)
      qemu-img create -q -f qcow2 -o "$o" src.qcow2 12M
      qemu-io -c "write -P 0x21 0 2M" -c "write -P 0x22 3M 1M" -c "write -z 5M 1M" src.qcow2 >/dev/null
      qemu-img convert -c -O qcow2 -o "$o" src.qcow2 X ;;
    *) qemu-img create -q -f qcow2 -o "$o" X 12M ;;
  esac
  cp X Q
  io -c "write -P 0x11 0 1536k" -c "write -P 0x12 4M 100k" -c "write -z 6M 128k"
  step "$label c1" vtool -c first
  io -c "write -P 0x13 512k 1M" -c "write -P 0x14 7M 4k"
  step "$label c2" qemu -c second
  io -c "write -P 0x15 0 64k" -c "discard 4M 64k"
  step "$label c3" vtool -c third
  step "$label a1" vtool -a first
  io -c "write -P 0x16 1M 2M"
  step "$label d2" vtool -d second
  step "$label a-by-id" vtool -a 3
  io -c "write -P 0x17 9M 1M"
  step "$label c-dup" vtool -c first
  step "$label d-dup" vtool -d first
  step "$label a-qemu" qemu -a first
  step "$label d-qemu" qemu -d third
  if [ "${o#*compat=0.10}" = "$o" ]; then
    # v3: a snapshot keeps its disk size; applying one brings it back.
    step "$label c-size" vtool -c twelve
    resize --shrink 5M
    io -c "write -P 0x18 4M 512k"
    step "$label c-small" vtool -c five
    resize 20M
    io -c "write -P 0x19 15M 1M"
    step "$label a-twelve" vtool -a twelve
    step "$label a-five" vtool -a five
    step "$label d-twelve" vtool -d twelve
    step "$label d-five" qemu -d five
  fi
  step "$label d-last" vtool -d first
}

matrix=(
  "compat=1.1 plain"
  "compat=0.10 plain"
  "cluster_size=512 plain"
  "cluster_size=2M plain"
  "refcount_bits=64 plain"
  "refcount_bits=16,cluster_size=4k plain"
  "extended_l2=on plain"
  "compat=1.1 backing"
  "compat=0.10 backing"
  "extended_l2=on,cluster_size=16k backing"
  "compat=1.1 compressed"
  "cluster_size=4k,compression_type=zstd compressed"
)
for m in "${matrix[@]}"; do
  # shellcheck disable=SC2086
  run_matrix $m
done

# refcount_bits=1: a snapshot of an image with data would need a count of 2. Both tools
# refuse with the same message (qemu leaks a cluster doing so; vtool changes nothing).
rm -f X
qemu-img create -q -f qcow2 -o refcount_bits=1 X 8M
expect_rc 0 "$VTOOL" img snapshot -c empty X
qemu-io -c "write -P 1 0 64k" X >/dev/null
cp X Q
expect_rc 1 "$VTOOL" img snapshot -c full X
qrc=0; qemu-img snapshot -c full Q 2>q.err || qrc=$?
[ "$qrc" -eq 1 ] && grep -qF "$(sed 's/^qemu-img: //' q.err)" "$T/err" && pass \
  || fail "refcount_bits=1: vtool '$(cat "$T/err")', qemu-img '$(cat q.err)' rc $qrc"
check_x "refcount_bits=1 refused"
expect_rc 0 "$VTOOL" img snapshot -d empty X
check_x "refcount_bits=1 delete"

# Errors: same message (after the program name) and exit code as qemu-img.
rm -f X
qemu-img create -q -f qcow2 X 8M
qemu-img snapshot -c one X
qemu-img create -q -f raw R 1M
same_error() {
  local vrc=0 qrc=0
  "$VTOOL" img snapshot "$@" >v.out 2>v.err || vrc=$?
  qemu-img snapshot "$@" >q.out 2>q.err || qrc=$?
  local qmsg; qmsg=$(grep -m1 '^qemu-img: ' q.err | sed 's/^qemu-img: //')
  if [ "$vrc" -ne "$qrc" ]; then fail "snapshot $*: rc $vrc, qemu-img $qrc"
  elif [ -n "$qmsg" ] && ! grep -qF -- "$qmsg" v.err; then fail "snapshot $*: qemu-img says '$qmsg', vtool '$(cat v.err)'"
  elif ! cmp -s v.out q.out; then fail "snapshot $*: stdout differs"
  else pass; fi
}
same_error -a nosuch X
same_error -d nosuch X
same_error -d 1 X                 # -d takes a name, not an ID
same_error -c
same_error -l -c x X
same_error -c x -d y X
same_error -a
same_error -l
same_error -l X X
same_error -x X
same_error -U -c x X
same_error -U -a one X
same_error -U -l X
same_error -l R
same_error -a x R
same_error -d x R
same_error X                      # no action: opened and left alone
"$VTOOL" img snapshot -f raw -c x R 2>v.err && fail "raw snapshot accepted" || pass
expect_grep "Could not create snapshot 'x': -95 \(Operation not supported\)" v.err

# Persistent bitmaps: qemu refuses to apply a snapshot (before anything changes).
rm -f B
qemu-img create -q -f qcow2 B 8M
qemu-img snapshot -c s B
qemu-img bitmap --add B bm0
cp B B.orig
expect_rc 1 "$VTOOL" img snapshot -a s B
expect_grep "Could not apply snapshot 's': Device has active dirty bitmaps" "$T/err"
cmp -s B B.orig && pass || fail "a refused apply changed the image"

# A name longer than 255 bytes is cut as qemu cuts it; IDs count on from the highest.
long=$(printf 'n%.0s' $(seq 300))
rm -f X Q; qemu-img create -q -f qcow2 X 8M; cp X Q
step "long name" vtool -c "$long"
qemu-img snapshot -d "$(printf 'n%.0s' $(seq 255))" Q
qemu-img snapshot -d "$(printf 'n%.0s' $(seq 255))" X
step "after long" vtool -c after

# Crash safety: the command killed (SIGKILL) just before each of its writes, syncs and
# truncations in turn, under strace. Every state left must pass qemu-img check with no
# error (a snapshot operation leaks nothing either: it switches in one header write),
# the active disk must read as before or as after, and a snapshot present must read as
# it should.
if command -v strace >/dev/null 2>&1; then
  rm -f C.base
  qemu-img create -q -f qcow2 -o cluster_size=4k C.base 8M
  qemu-io -c "write -P 0x31 0 2M" -c "write -P 0x32 5M 1M" C.base >/dev/null
  qemu-img snapshot -c old C.base
  qemu-io -c "write -P 0x33 1M 2M" -c "write -z 5M 64k" C.base >/dev/null
  qemu-img convert -O raw C.base now.raw
  qemu-img convert -l old -O raw C.base old.raw
  kills=0
  for op in "-c new" "-a old" "-d old"; do
    for sc in pwrite64 pwritev fdatasync ftruncate fallocate; do
      n=1
      while :; do
        cp C.base C
        rc=0
        # shellcheck disable=SC2086
        # (sh reports the kill, to /dev/null)
        sh -c 'strace "$@"; exit $?' sh -f -qq -o /dev/null -e trace=$sc \
          -e inject=$sc:signal=KILL:when=$n "$VTOOL" img snapshot $op C >/dev/null 2>&1 || rc=$?
        [ "$rc" -eq 137 ] || break
        kills=$((kills + 1))
        crc=0; qemu-img check C >chk.out 2>&1 || crc=$?
        [ "$crc" -eq 0 ] && pass || fail "killed at $sc #$n of 'snapshot $op': check rc=$crc: $(head -c 400 chk.out)"
        qemu-img convert -O raw C c.raw
        if cmp -s c.raw now.raw || { [ "$op" = "-a old" ] && cmp -s c.raw old.raw; }; then pass
        else fail "killed at $sc #$n of 'snapshot $op': the active disk is neither before nor after"; fi
        for id in $(qemu-img snapshot -l C | awk 'NR > 2 { print $2 }'); do
          qemu-img convert -l "snapshot.name=$id" -O raw C c.raw
          want=old.raw; [ "$id" = new ] && want=now.raw
          cmp -s c.raw $want && pass || fail "killed at $sc #$n of 'snapshot $op': snapshot $id changed"
        done
        n=$((n + 1))
      done
    done
  done
  [ "$kills" -gt 10 ] && pass || fail "only $kills kill points: strace injection did not work"
  rm -f c.raw C
fi

finish
