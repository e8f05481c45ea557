#!/usr/bin/env bash
# vtool img amend against qemu-img amend: every amendable qcow2 option (compat both ways,
# refcount_bits 1..64, lazy_refcounts, size) on images made by qemu with data, zero and
# compressed clusters, a backing file, small clusters, zstd, internal snapshots: the same
# exit code as qemu-img amend on a copy, and when it succeeds the same content (qemu-img
# compare), the same qemu-img info and a clean qemu-img check. Round trips come back to
# the original info; qemu's refusals carry qemu's messages; -o help is qemu's list.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

qemu-img create -q -f raw b.raw 4M
qemu-io -f raw -c "write -P 5 0 4M" b.raw >/dev/null

mk() {
  rm -f x.qcow2
  # shellcheck disable=SC2086
  qemu-img create -q -f qcow2 $1 x.qcow2 4M
  local c="write -c -P 3 2M 64k"
  case "$1" in *compat=0.10*) c="write -P 3 2M 64k" ;; esac
  qemu-io -c "write -z 0 64k" -c "write -P 1 64k 64k" -c "write -z 64k 64k" -c "write -P 2 1M 200k" \
    -c "$c" x.qcow2 >/dev/null
}
info_of() { qemu-img info "$1" | sed '1d;/^disk size/d'; }
# msg FILE: the message lines of an error output, without the program's prefixes.
msg() { sed -E 's/^(qemu-img|vtool)(: [^:]*\.qcow2)?(: amend)?: //' "$1"; }

setups=("" "-b b.raw -F raw" "-o cluster_size=4k" "-o cluster_size=512,refcount_bits=1"
        "-o lazy_refcounts=on" "-o compression_type=zstd" "-o compat=0.10" "-o extended_l2=on")
opts=(compat=0.10 compat=1.1 refcount_bits=1 refcount_bits=2 refcount_bits=8 refcount_bits=64
      lazy_refcounts=on lazy_refcounts=off "compat=1.1,refcount_bits=32,lazy_refcounts=on"
      "refcount_bits=16,compat=0.10" size=8M "compat=0.10,lazy_refcounts=on"
      "refcount_bits=4,compat=0.10")
# The whole grid with VTOOL_SLOW_TESTS=1; by default a diagonal of it (every setup and
# every option at least twice; a third of the grid, a fifth under the sanitizers) plus
# the pairs where qemu refuses for a reason of that pair.
stride=3
[ -n "${VTOOL_SANITIZED:-}" ] && stride=5
[ "${VTOOL_SLOW_TESTS:-0}" = 1 ] && stride=1
must=("-o compression_type=zstd|compat=0.10" "-o compat=0.10|lazy_refcounts=on"
      "-o compat=0.10|refcount_bits=8" "|refcount_bits=4,compat=0.10" "|refcount_bits=1"
      "-o cluster_size=512,refcount_bits=1|compat=0.10")
si=0
for setup in "${setups[@]}"; do
  si=$((si + 1)); oi=0
  for opt in "${opts[@]}"; do
    oi=$((oi + 1))
    if [ $(((si + oi) % stride)) != 0 ] && ! printf '%s\n' "${must[@]}" | grep -qxF -- "$setup|$opt"; then
      continue
    fi
    what="amend -o $opt [$setup]"
    mk "$setup"
    cp x.qcow2 q.qcow2
    qrc=0; qemu-img amend -o "$opt" q.qcow2 2>"$T/qerr" || qrc=$?
    vrc=0; "$VTOOL" img amend -o "$opt" x.qcow2 2>"$T/verr" || vrc=$?
    if [ "$qrc" = "$vrc" ]; then pass; else fail "$what: exit $vrc, qemu's $qrc: $(cat "$T/qerr" "$T/verr")"; continue; fi
    if [ "$qrc" != 0 ]; then
      if [ "$(msg "$T/qerr")" = "$(msg "$T/verr")" ]; then pass
      else fail "$what: message '$(msg "$T/verr")', qemu's '$(msg "$T/qerr")'"; fi
      # A refused amend leaves the image as it was.
      if qemu-img compare -q x.qcow2 q.qcow2 && diff <(info_of x.qcow2) <(info_of q.qcow2) >/dev/null; then pass
      else fail "$what: refused, but the image changed"; fi
      continue
    fi
    if qemu-img compare -q x.qcow2 q.qcow2; then pass; else fail "$what: content differs from qemu's"; fi
    if qemu-img check -q x.qcow2; then pass; else fail "$what: check: $(qemu-img check x.qcow2 2>&1 | head -3)"; fi
    if diff <(info_of x.qcow2) <(info_of q.qcow2) >"$T/d"; then pass; else fail "$what: info differs: $(cat "$T/d")"; fi
  done
done

# Round trips come back to where they started.
for setup in "" "-o cluster_size=4k" "-b b.raw -F raw"; do
  mk "$setup"
  info_of x.qcow2 >"$T/i0"
  qemu-img convert -O raw x.qcow2 x0.raw
  for o in compat=0.10 compat=1.1 refcount_bits=8 refcount_bits=64 refcount_bits=16 \
           lazy_refcounts=on lazy_refcounts=off; do
    expect_rc 0 "$VTOOL" img amend -o "$o" x.qcow2
    expect_rc 0 qemu-img check -q x.qcow2
    expect_rc 0 qemu-img compare -q -F raw x.qcow2 x0.raw
  done
  # A v3 image that went through v2 keeps no zero clusters, so allocation may differ;
  # its header fields are what they were.
  if diff <(info_of x.qcow2) "$T/i0" >"$T/d"; then pass; else fail "round trip [$setup]: $(cat "$T/d")"; fi
done

# Internal snapshots (made by qemu): zero clusters in the snapshot's tables are expanded
# too, and a zero cluster whose host cluster the snapshot still maps as data gets a
# cluster of its own: the snapshot keeps its data (qemu 7.2 zeroes it, so there the
# oracle is the snapshot as it was, and qemu's result only for the active layer).
for setup in "" "-b b.raw -F raw"; do
  mk "$setup"
  qemu-img snapshot -c s1 x.qcow2
  qemu-io -c "write -z 1M 64k" -c "write -P 9 3M 64k" x.qcow2 >/dev/null
  rm -f s0.raw s.raw
  qemu-img convert -l s1 -O raw x.qcow2 s0.raw
  cp x.qcow2 q.qcow2
  qemu-img amend -o compat=0.10 q.qcow2
  expect_rc 0 "$VTOOL" img amend -o compat=0.10 x.qcow2
  expect_rc 0 qemu-img check -q x.qcow2
  expect_rc 0 qemu-img compare -q x.qcow2 q.qcow2
  if diff <(info_of x.qcow2) <(info_of q.qcow2) >"$T/d"; then pass; else fail "snapshot downgrade [$setup]: $(cat "$T/d")"; fi
  qemu-img convert -l s1 -O raw x.qcow2 s.raw
  if cmp -s s.raw s0.raw; then pass; else fail "snapshot downgrade [$setup]: the snapshot's content changed"; fi
  expect_rc 0 "$VTOOL" img amend -o compat=1.1 x.qcow2
  expect_rc 0 qemu-img check -q x.qcow2
done
# v2 snapshot entries without extra data (as old qemu wrote them: no disk size) are
# rewritten on the way up.
mk "-o compat=0.10"
qemu-img snapshot -c s1 x.qcow2
qemu-io -c "write -P 8 0 64k" x.qcow2 >/dev/null
qemu-img snapshot -c s2 x.qcow2
python3 - x.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], 'r+b'); h = f.read(72)
n, off = struct.unpack('>IQ', h[60:72]); f.seek(off); t = f.read(65536); out = b''; p = 0
for _ in range(n):
    l1o, l1s, il, nl, ds, dn, vc, vs, ex = struct.unpack('>QIHHIIQII', t[p:p + 40])
    ident = t[p + 40 + ex:p + 40 + ex + il + nl]
    out += struct.pack('>QIHHIIQII', l1o, l1s, il, nl, ds, dn, vc, vs, 0) + ident
    out += b'\0' * (-len(out) % 8)
    p = (p + 40 + ex + il + nl + 7) & ~7
f.seek(off); f.write(out + b'\0' * (p - len(out)))
PY
expect_rc 0 qemu-img check -q x.qcow2
cp x.qcow2 q.qcow2
qemu-img amend -o compat=1.1 q.qcow2
expect_rc 0 "$VTOOL" img amend -o compat=1.1 x.qcow2
expect_rc 0 qemu-img check -q x.qcow2
expect_rc 0 qemu-img compare -q x.qcow2 q.qcow2
if diff <(info_of x.qcow2 | sed -E 's/ +[0-9-]+ [0-9:]+ +/ DATE /') \
        <(info_of q.qcow2 | sed -E 's/ +[0-9-]+ [0-9:]+ +/ DATE /') >"$T/d"; then pass
else fail "v2 snapshots upgraded: info differs: $(cat "$T/d")"; fi
for sn in s1 s2; do
  rm -f s.raw q.raw
  qemu-img convert -l "$sn" -O raw x.qcow2 s.raw
  qemu-img convert -l "$sn" -O raw q.qcow2 q.raw
  if cmp -s s.raw q.raw; then pass; else fail "v2 snapshots upgraded: $sn reads differently"; fi
done
expect_rc 0 "$VTOOL" img snapshot -d s1 x.qcow2
expect_rc 0 qemu-img check -q x.qcow2

mk ""
qemu-img snapshot -c s1 x.qcow2
qemu-img resize -q x.qcow2 8M
expect_rc 1 "$VTOOL" img amend -o compat=0.10 x.qcow2
expect_grep "Internal snapshots prevent downgrade of image" "$T/err"

# Options for creation only, unknown options, options for other images, help.
mk ""
for o in cluster_size=4k compression_type=zstd extended_l2=on preallocation=metadata \
         encrypt.format=luks encryption=on; do
  expect_rc 1 "$VTOOL" img amend -o "$o" x.qcow2
  expect_grep "Invalid parameter '${o%%=*}'" "$T/err"
  expect_grep "This option is only supported for image creation" "$T/err"
done
expect_rc 1 "$VTOOL" img amend -o foo=bar x.qcow2
expect_grep "Invalid parameter 'foo'" "$T/err"
expect_rc 1 "$VTOOL" img amend -o encrypt.keyslot=1 x.qcow2
expect_grep "Can't amend encryption options - encryption not present" "$T/err"
expect_rc 1 "$VTOOL" img amend -o backing_file=b.raw,backing_fmt=raw x.qcow2
expect_grep "Cannot amend the backing file" "$T/err"
expect_rc 1 "$VTOOL" img amend x.qcow2
expect_grep "Must specify options \(-o\)" "$T/err"
expect_rc 1 "$VTOOL" img amend -o compat=1.1
expect_grep "Expecting one image file name" "$T/err"
qemu-img create -q -f raw r.raw 1M
expect_rc 1 "$VTOOL" img amend -f raw -o size=2M r.raw
expect_grep "Format driver 'raw' does not support option amendment" "$T/err"
expect_rc 0 "$VTOOL" img amend -o help x.qcow2
qemu-img amend -o help x.qcow2 >"$T/qhelp"
if cmp -s "$T/out" "$T/qhelp"; then pass; else fail "amend -o help differs: $(diff "$T/out" "$T/qhelp")"; fi
expect_rc 0 "$VTOOL" img amend -f qcow2 -o help
if cmp -s "$T/out" "$T/qhelp"; then pass; else fail "amend -f qcow2 -o help differs"; fi
expect_rc 1 "$VTOOL" img amend -f raw -o help
expect_grep "Format driver 'raw' does not support option amendment" "$T/err"
# Backing options equal to what the image has are accepted (qemu: nothing changes).
mk "-b b.raw -F raw"
expect_rc 0 "$VTOOL" img amend -o backing_file=b.raw,backing_fmt=raw x.qcow2
# -p prints qemu's progress; --image-opts and --object are accepted.
expect_rc 0 "$VTOOL" img amend -p -o compat=0.10 x.qcow2
expect_grep '\(100\.00/100%\)' "$T/out"
expect_rc 0 "$VTOOL" img amend --object secret,id=s,data=x --image-opts -o compat=1.1 \
  driver=qcow2,file.filename=x.qcow2
expect_rc 0 qemu-img check -q x.qcow2

finish
