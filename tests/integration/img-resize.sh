#!/usr/bin/env bash
# vtool img resize against qemu-img, the oracle: the same sequence of grows and shrinks
# (absolute and relative sizes, every preallocation mode) on a matrix of qcow2 images
# (v2/v3, cluster sizes, refcount widths, extended L2, a backing file longer than the
# image, internal snapshots) and on raw images, vtool on X, qemu-img on a copy Q. After
# each step: same exit status, qemu-img check finds X clean, X and Q have the same virtual
# size and read the same. Then the errors (same messages and exit codes), and crash
# safety: the command killed before each of its writes and syncs leaves an image that
# qemu-img check passes (leaks allowed), whose data up to the new end is untouched.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

vsize() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

step() { # FMT ARGS...: resize X with vtool and Q with qemu-img, compare
  local fmt=$1; shift
  local xrc=0 qrc=0
  "$VTOOL" img resize -f "$fmt" "$@" X >x.out 2>x.err || xrc=$?
  qemu-img resize -f "$fmt" "$@" Q >q.out 2>q.err || qrc=$?
  local label="[$cfg] resize $*"
  if [ "$xrc" -ne "$qrc" ]; then fail "$label: rc $xrc, qemu-img $qrc: $(cat x.err) / $(cat q.err)"; return; fi
  cmp -s x.out q.out && pass || fail "$label: stdout '$(cat x.out)' vs '$(cat q.out)'"
  if [ "$fmt" = qcow2 ]; then
    local rc=0
    qemu-img check X >chk.out 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && pass || fail "$label: qemu-img check rc=$rc: $(head -c 400 chk.out)"
  fi
  [ "$(vsize X)" = "$(vsize Q)" ] && pass || fail "$label: size $(vsize X), qemu-img $(vsize Q)"
  qemu-img convert -f "$fmt" -O raw X x.raw && qemu-img convert -f "$fmt" -O raw Q q.raw
  cmp -s x.raw q.raw && pass || fail "$label: contents differ"
  rm -f x.raw q.raw
}
io() { qemu-io -f "$1" "${@:2}" X >/dev/null && qemu-io -f "$1" "${@:2}" Q >/dev/null; }

qemu-img create -q -f raw base.raw 24M
qemu-io -f raw -c "write -P 0xb1 0 24M" base.raw >/dev/null

matrix=(
  "compat=1.1"
  "compat=0.10"
  "cluster_size=512"
  "cluster_size=2M"
  "refcount_bits=1,cluster_size=4k"
  "refcount_bits=64"
  "extended_l2=on"
  "compat=1.1 backing"
  "extended_l2=on,cluster_size=32k backing"
  "compat=1.1 snapshots"
)
for cfg in "${matrix[@]}"; do
  o=${cfg%% *}; kind=${cfg#* }; [ "$kind" = "$cfg" ] && kind=plain
  rm -f X Q
  if [ "$kind" = backing ]; then
    qemu-img create -q -f qcow2 -o "$o" -b base.raw -F raw X 8M
  else
    qemu-img create -q -f qcow2 -o "$o" X 8M
  fi
  cp X Q
  io qcow2 -c "write -P 0x11 0 3M" -c "write -P 0x12 7M 1M" -c "write -P 0x13 5000 3000"
  [ "$kind" = snapshots ] && { qemu-img snapshot -c one X; qemu-img snapshot -c one Q; }
  step qcow2 12M
  step qcow2 +4M
  io qcow2 -c "write -P 0x14 13M 2M"
  step qcow2 --shrink 10M
  step qcow2 -- -2M
  step qcow2 --shrink -- -3M
  step qcow2 --shrink 1536k
  step qcow2 --preallocation=metadata 4M
  step qcow2 --preallocation=falloc +3M
  step qcow2 --preallocation=full 10000k
  io qcow2 -c "write -P 0x15 9M 64k"
  step qcow2 --shrink 2560
  step qcow2 +1M
  step qcow2 --preallocation=metadata +64M
  step qcow2 --shrink 6M
  [ "$kind" = snapshots ] && { qemu-img snapshot -a one X; qemu-img snapshot -a one Q; step qcow2 +1M; }
done

cfg=raw
rm -f X Q
qemu-img create -q -f raw X 3M; cp X Q
io raw -c "write -P 0x21 0 3M"
step raw 5M
step raw --shrink 1000
step raw +1000
step raw --preallocation=falloc +1M
step raw --preallocation=full +1M
step raw --shrink -- -1M
step raw --preallocation=metadata +1M

# Errors: same message (after the program name) and exit code as qemu-img.
rm -f E E2
qemu-img create -q -f qcow2 E 8M
qemu-img create -q -f qcow2 -o compat=0.10 E2 8M
qemu-img snapshot -c s E2
qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw E3 8M
same_error() {
  local vrc=0 qrc=0
  "$VTOOL" img resize "$@" >v.out 2>v.err || vrc=$?
  qemu-img resize "$@" >q.out 2>q.err || qrc=$?
  local qmsg; qmsg=$(grep -m1 '^qemu-img: ' q.err | sed 's/^qemu-img: //')
  if [ "$vrc" -ne "$qrc" ]; then fail "resize $*: rc $vrc, qemu-img $qrc ($(cat v.err))"
  elif [ -n "$qmsg" ] && ! grep -qF -- "$qmsg" v.err; then fail "resize $*: qemu-img says '$qmsg', vtool '$(cat v.err)'"
  elif ! cmp -s v.out q.out; then fail "resize $*: stdout differs"
  else pass; fi
}
same_error E 4M                       # a shrink needs --shrink
same_error E -- -1M
same_error E 0
same_error E -- -8M
same_error E 10E                      # past 2^63: not positive
same_error E 16E                      # past 2^64
same_error E 12x
same_error E abc
same_error E 20000001                 # qcow2 sizes are multiples of 512
same_error E +1000
same_error E 3P                       # the L1 table would pass 32 MiB
same_error E
same_error E 9M extra
same_error --preallocation=bogus E 9M
same_error --preallocation=full E 8M
same_error --shrink --preallocation=full E 4M
same_error -x E 9M
same_error --preallocation E 9M
same_error E2 9M                      # v2 with snapshots
same_error E3 16M                     # v2 that would have to zero a longer backing file
same_error -q E 9M

# Crash safety: killed before each write, sync, truncation and fallocate in turn.
if command -v strace >/dev/null 2>&1; then
  rm -f C.base
  qemu-img create -q -f qcow2 -o cluster_size=4k C.base 8M
  qemu-io -c "write -P 0x31 0 3M" -c "write -P 0x32 6M 1M" C.base >/dev/null
  qemu-img snapshot -c keep C.base
  qemu-io -c "write -P 0x33 1M 1M" C.base >/dev/null
  qemu-img convert -O raw C.base before.raw
  head -c 2M before.raw >shrunk.raw
  qemu-img convert -l keep -O raw C.base keep.raw
  kills=0
  for op in "--shrink C 2M" "C +9M" "--preallocation=full C 12M"; do
    for sc in pwrite64 pwritev fdatasync ftruncate fallocate; do
      n=1
      while :; do
        cp C.base C
        rc=0
        # shellcheck disable=SC2086
        sh -c 'strace "$@"; exit $?' sh -f -qq -o /dev/null -e trace=$sc \
          -e inject=$sc:signal=KILL:when=$n "$VTOOL" img resize $op >/dev/null 2>&1 || rc=$?
        [ "$rc" -eq 137 ] || break
        kills=$((kills + 1))
        crc=0; qemu-img check C >chk.out 2>&1 || crc=$?
        [ "$crc" -eq 0 ] || [ "$crc" -eq 3 ] && pass \
          || fail "killed at $sc #$n of 'resize $op': check rc=$crc: $(head -c 400 chk.out)"
        # The disk reads as before up to the new end (a shrink cut short may have
        # dropped only part of what lies past it); a grow reads as before, then zeros.
        qemu-img convert -O raw C c.raw
        if [ "$op" = "--shrink C 2M" ]; then cmp -s -n 2097152 c.raw before.raw
        else qemu-img compare -q -f raw -F raw before.raw c.raw >/dev/null 2>&1; fi \
          && pass || fail "killed at $sc #$n of 'resize $op': the kept data changed"
        # A snapshot reads at the current disk size (qemu's convert -l): compare the part
        # both have.
        qemu-img convert -l keep -O raw C c.raw
        if [ "$(stat -c %s c.raw)" -lt "$(stat -c %s keep.raw)" ]; then
          cmp -s -n "$(stat -c %s c.raw)" c.raw keep.raw
        else qemu-img compare -q -f raw -F raw keep.raw c.raw >/dev/null 2>&1; fi \
          && pass || fail "killed at $sc #$n of 'resize $op': the snapshot changed"
        n=$((n + 1))
      done
    done
  done
  [ "$kills" -gt 10 ] && pass || fail "only $kills kill points: strace injection did not work"
  rm -f c.raw C
fi

finish
