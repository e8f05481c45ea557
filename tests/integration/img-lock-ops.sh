#!/usr/bin/env bash
# The image-modifying commands (snapshot, resize, rebase, commit, amend, dd of=, bitmap) honour
# qemu's OFD locks like qemu-img does, while a running VMM holds the images read-write:
# qemu-system-x86_64, then vtool run. qemu-img is the oracle: for every command, in the
# same situation, vtool's exit status equals qemu-img's, a refusal is one line naming the
# same lock ("write" or shared "write"), and the held images are left as they were.
# -U opens a busy image for reading where qemu-img allows it.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io qemu-system-x86_64
: "${TGUEST:?}"
cd "$T"

# Held by the VMM: h.qcow2 (read-write, one snapshot, some data) and top.qcow2
# (read-write), whose backing file base.qcow2 the VMM opens read-only.
qemu-img create -q -f qcow2 h.qcow2 16M
qemu-io -c "write -P 0x5a 0 256k" h.qcow2 >/dev/null
qemu-img snapshot -c s0 h.qcow2
qemu-io -c "write -P 0xa5 64k 64k" h.qcow2 >/dev/null
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -c "write -P 0x11 0 128k" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
head -c 256k /dev/urandom >src.raw
held=(h.qcow2 top.qcow2 base.qcow2)

# Fixtures that are not held, copied afresh before each run of a command so that
# qemu-img and vtool start from the same files: ov.qcow2 over the held h.qcow2, ov2.qcow2
# over the read-only-held base.qcow2, nb.qcow2 a free image to rebase onto.
qemu-img create -q -f qcow2 -b h.qcow2 -F qcow2 ov.tmpl
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov2.tmpl
qemu-img create -q -f qcow2 nb.tmpl 16M
qemu-io -c "write -P 0x33 128k 64k" ov.tmpl >/dev/null
qemu-io -c "write -P 0x44 0 64k" ov2.tmpl >/dev/null
reset() {
  rm -f out.raw
  for f in ov ov2 nb; do cp "$f.tmpl" "$f.qcow2"; done
}

# What must not change while held: the bytes, and what qemu-img sees without locks.
fingerprint() {
  local f
  for f in "${held[@]}"; do
    sha256sum "$f"
    qemu-img info -U --output=json "$f"
    qemu-img snapshot -l -U "$f"
  done
}

# same RESULT-FILE IMG-ARGS...: run `qemu-img ARGS` and `vtool img ARGS` on fresh
# fixtures; exit status must match, a refusal must be one line with qemu-img's lock
# wording, and the held images must be unchanged. When both succeed and RESULT-FILE is
# not "-", it must end the same after either tool: qemu-img info (but the disk size: the
# tools allocate differently) and the guest-visible bytes (qemu-img compare).
same() {
  local res=$1; shift
  local before qrc=0 vrc=0 qres="" vres="" want
  reset
  before=$(fingerprint)
  qemu-img "$@" >"$T/qout" 2>"$T/qerr" || qrc=$?
  if [ "$res" != - ] && [ "$qrc" -eq 0 ]; then
    qres=$(qemu-img info -U "$res" 2>&1 | grep -v '^disk size:')
    cp "$res" "q-$res"
  fi
  reset
  "$VTOOL" img "$@" >"$T/out" 2>"$T/err" || vrc=$?
  [ "$res" != - ] && [ "$vrc" -eq 0 ] && vres=$(qemu-img info -U "$res" 2>&1 | grep -v '^disk size:')
  if [ "$vrc" -ne "$qrc" ]; then
    fail "[$holder] img $*: vtool exited $vrc, qemu-img $qrc; vtool: $(head -c 300 "$T/err")" \
         "qemu-img: $(head -c 300 "$T/qerr")"
  else
    pass
  fi
  if [ "$qrc" -ne 0 ]; then
    [ "$(wc -l <"$T/err")" -eq 1 ] && pass \
      || fail "[$holder] img $*: stderr is not one line: $(head -c 300 "$T/err")"
    want=$(grep -Eo 'Failed to get (shared )?"[a-z ]+" lock' "$T/qerr" | head -1)
    if [ -n "$want" ]; then
      grep -qF -- "$want" "$T/err" && pass \
        || fail "[$holder] img $*: vtool says '$(head -c 300 "$T/err")', qemu-img '$want'"
    fi
  elif [ "$res" != - ]; then
    [ "$qres" = "$vres" ] && pass \
      || fail "[$holder] img $*: $res differs: qemu-img made '$qres', vtool '$vres'"
    qemu-img compare -U "q-$res" "$res" >"$T/cmp" 2>&1 && pass \
      || fail "[$holder] img $*: $res has other bytes than qemu-img's: $(head -c 300 "$T/cmp")"
  fi
  [ "$(fingerprint)" = "$before" ] && pass || fail "[$holder] img $*: a held image changed"
}

ops() {
  # The held read-write image: every change is refused with the "write" lock, reading
  # it without -U with the shared one.
  same - snapshot -c s1 h.qcow2
  same - snapshot -a s0 h.qcow2
  same - snapshot -d s0 h.qcow2
  same - snapshot -l h.qcow2
  same - resize h.qcow2 +1M
  same - resize --shrink h.qcow2 8M
  same - amend -o lazy_refcounts=on h.qcow2
  same - amend -f qcow2 -o lazy_refcounts=on h.qcow2
  same - dd if=src.raw of=h.qcow2 bs=64k
  same - dd -f raw -O qcow2 if=src.raw of=h.qcow2 bs=64k count=2
  same - dd if=h.qcow2 of=out.raw -O raw bs=64k
  same - bitmap --add h.qcow2 b0
  same - bitmap --remove h.qcow2 b0
  # -U: reading is allowed, writing with -U is not.
  same - snapshot -l -U h.qcow2
  expect_grep '^1 +s0 ' "$T/out"
  same out.raw dd -U if=h.qcow2 of=out.raw -O raw bs=64k
  same - snapshot -a s0 -U h.qcow2
  same - info -U h.qcow2
  same - check -U h.qcow2

  # The held image as a backing file: commit writes it, a safe rebase reads it (shared
  # lock refused), rebase -u does not open it; the same as a new backing file.
  same - commit ov.qcow2
  same - commit -d ov.qcow2
  same ov.qcow2 rebase -b nb.qcow2 -F qcow2 ov.qcow2
  same ov.qcow2 rebase -u -b nb.qcow2 -F qcow2 ov.qcow2
  same nb.qcow2 rebase -b h.qcow2 -F qcow2 nb.qcow2
  same nb.qcow2 rebase -u -b h.qcow2 -F qcow2 nb.qcow2

  # The held overlay: anything that opens it for writing is refused, rebase -u included.
  same - commit top.qcow2
  same - rebase -b nb.qcow2 -F qcow2 top.qcow2
  same - rebase -u -b nb.qcow2 -F qcow2 top.qcow2
  same - rebase -u -b "" top.qcow2
  same - snapshot -c s1 top.qcow2
  same - snapshot -l -U top.qcow2

  # Its backing file, which the VMM reads: writers are refused, readers share it.
  same - commit ov2.qcow2
  same ov2.qcow2 rebase -b nb.qcow2 -F qcow2 ov2.qcow2
  same ov2.qcow2 rebase -u -b nb.qcow2 -F qcow2 ov2.qcow2
  same - snapshot -c s1 base.qcow2
  same - snapshot -l base.qcow2
  same - resize base.qcow2 +1M
  same - amend -o lazy_refcounts=on base.qcow2
  same - dd if=src.raw of=base.qcow2 bs=64k
  same - bitmap --add base.qcow2 b0
  same - info base.qcow2
}

# wait_held PID LOG: until the holder's OFD locks on every held image show in /proc/locks.
wait_held() {
  local f ino ok
  for _ in $(seq 100); do
    ok=1
    for f in "${held[@]}"; do
      ino=$(stat -c %i "$f")
      grep -q ":$ino 201 201\$" /proc/locks || ok=0
    done
    [ $ok = 1 ] && { pass; return 0; }
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  fail "[$holder] the images are not locked: $(head -c 400 "$2")"
  return 1
}

# Both holders in the gcc build; the sanitizer build (whose vtool is the one under test,
# not the holder) takes qemu's only, to keep make test short.
holder=qemu-system-x86_64
qemu-system-x86_64 -machine none -nodefaults -display none \
  -drive file=h.qcow2,if=none,id=d0,format=qcow2 \
  -drive file=top.qcow2,if=none,id=d1,format=qcow2 >"$T/holder.log" 2>&1 &
hpid=$!
wait_held $hpid "$T/holder.log" && ops
kill "$hpid" 2>/dev/null; wait "$hpid" 2>/dev/null

if [ -c /dev/kvm ] && { [ -z "${VTOOL_SANITIZED:-}" ] || [ "${VTOOL_SLOW_TESTS:-0}" = 1 ]; }; then
  # -S: the machine is built, its disks open, and the guest never runs.
  holder="vtool run"
  "$VTOOL" run -S -m 32 -kernel "$TGUEST" -append test=hello \
    -drive file=h.qcow2,if=virtio,format=qcow2 \
    -drive file=top.qcow2,if=virtio,format=qcow2 >"$T/holder.log" 2>&1 &
  hpid=$!
  wait_held $hpid "$T/holder.log" && ops
  kill "$hpid" 2>/dev/null; wait "$hpid" 2>/dev/null
else
  echo "vtool run as the holder skipped (no /dev/kvm, or the sanitizer build)"
fi

# Nothing was lost: the images are whole once the holders are gone.
for f in "${held[@]}"; do expect_rc 0 qemu-img check -q "$f"; done
expect_rc 0 qemu-img snapshot -l h.qcow2
expect_grep '^1 +s0 ' "$T/out"
finish
