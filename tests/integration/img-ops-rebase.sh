#!/usr/bin/env bash
# vtool img rebase against qemu-img rebase: a matrix of chains (qcow2 v2/v3, cluster sizes
# 512 B..64 KiB, extended L2, compressed clusters, raw and qcow2 bases, chains of depth 3,
# new backing files smaller and larger than the overlay) rebased safely onto an unrelated
# image, onto an image of its own chain and onto nothing (-b ""), and unsafely (-u). Each
# time a copy of the same files is rebased by qemu-img: the guest-visible content must be
# qemu's (and, for safe rebases, what the image read before), qemu-img check clean, and
# qemu-img info the same. Then qemu's messages and exit codes for the refused cases.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

# mkchain BASEFMT OPTS: base (raw or qcow2, 6 MiB) <- mid.qcow2 (8 MiB) <- top.qcow2
# (8 MiB), with data, zeros and compressed clusters in every layer; new.raw (4 MiB) and
# new.qcow2 (10 MiB) as unrelated new backing files. All made by qemu.
mkchain() {
  local bf=$1 o=$2 v2=${3:-} bo=
  [ "$bf" = raw ] || bo=$o
  rm -rf chain && mkdir chain && (
    cd chain
    qemu-img create -q -f "$bf" ${bo:+-o "$bo"} "base.$bf" 6M
    qemu-io -f "$bf" -c "write -P 0x11 0 2M" -c "write -P 0x12 3M 1M" -c "write -P 0x13 5M 512k" "base.$bf" >/dev/null
    qemu-img create -q -f qcow2 ${o:+-o "$o"} -b "base.$bf" -F "$bf" mid.qcow2 8M
    qemu-io -c "write -P 0x21 1M 1M" -c "write -z 3M 128k" -c "write -P 0x22 6M 1M" mid.qcow2 >/dev/null
    [ -n "$v2" ] || qemu-io -c "write -c -P 0x23 7M 64k" mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 ${o:+-o "$o"} -b mid.qcow2 -F qcow2 top.qcow2 8M
    qemu-io -c "write -P 0x31 1536k 64k" -c "write -z 5M 64k" -c "write -P 0x32 7680k 4k" top.qcow2 >/dev/null
    [ -n "$v2" ] || qemu-io -c "write -c -P 0x33 4M 64k" top.qcow2 >/dev/null
    qemu-img create -q -f raw new.raw 4M
    qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x41 1M 1M" -c "write -P 0x42 3M 512k" new.raw >/dev/null
    qemu-img create -q -f qcow2 ${o:+-o "$o"} new.qcow2 10M
    qemu-io -c "write -P 0x12 3M 1M" -c "write -P 0x51 6M 2M" -c "write -P 0x52 9M 1M" new.qcow2 >/dev/null
  )
}

info_of() { (cd "$(dirname "$1")" && qemu-img info "$(basename "$1")" | sed '1d;/^disk size/d'); }

configs=(
  "raw|"
  "raw|compat=0.10|v2"
  "qcow2|"
  "qcow2|cluster_size=512"
  "qcow2|cluster_size=4k,compat=0.10|v2"
  "raw|cluster_size=16k,extended_l2=on"
  "qcow2|refcount_bits=1,cluster_size=2k"
)
rebases=(
  "-b new.raw -F raw"
  "-b new.qcow2 -F qcow2"
  "-b BASE -F BF"
  "-b \"\""
  "-u -b new.qcow2 -F qcow2"
  "-b new.qcow2 -F qcow2 -c"
)
for cfg in "${configs[@]}"; do
  IFS='|' read -r bf o v2 <<<"$cfg"
  for args in "${rebases[@]}"; do
    args=${args//BASE/base.$bf}
    args=${args//BF/$bf}
    mkchain "$bf" "$o" "$v2"
    rm -rf v q && cp -r chain v && cp -r chain q
    (cd chain && qemu-img convert -O raw top.qcow2 ../before.raw)
    eval "set -- $args"
    # qemu-img 7.2 has no -c (compress what is copied in): its plain rebase is the oracle.
    qargs=("$@")
    [ "${qargs[-1]}" = -c ] && unset 'qargs[-1]'
    (cd q && qemu-img rebase -q "${qargs[@]}" top.qcow2) || { fail "qemu-img rebase $args ($cfg) failed"; continue; }
    (cd v && expect_rc 0 "$VTOOL" img rebase -q "$@" top.qcow2)
    what="rebase $args [$cfg]"
    if qemu-img compare -q v/top.qcow2 q/top.qcow2; then pass; else fail "$what: content differs from qemu's"; fi
    if [ "$1" != -u ]; then
      if qemu-img compare -q -F raw v/top.qcow2 before.raw; then pass; else fail "$what: content changed"; fi
    fi
    if qemu-img check -q v/top.qcow2; then pass; else fail "$what: qemu-img check: $(qemu-img check v/top.qcow2 2>&1 | head -3)"; fi
    if diff <(info_of v/top.qcow2) <(info_of q/top.qcow2) >"$T/d"; then pass; else fail "$what: info differs: $(cat "$T/d")"; fi
  done
done

# The header itself: byte-identical to qemu's after an unsafe rebase (extension list,
# feature table, backing name), for v2 and v3 and a name that no longer fits.
for o in "" "compat=0.10" "cluster_size=4k" "cluster_size=512"; do
  qemu-img create -q -f qcow2 ${o:+-o "$o"} h.qcow2 1M
  cp h.qcow2 hq.qcow2
  expect_rc 0 "$VTOOL" img rebase -u -b some/where/base.img -F qcow2 h.qcow2
  qemu-img rebase -u -b some/where/base.img -F qcow2 hq.qcow2
  if cmp -s h.qcow2 hq.qcow2; then pass; else fail "rebase -u header [$o] differs from qemu's: $(cmp h.qcow2 hq.qcow2)"; fi
  expect_rc 0 "$VTOOL" img rebase -u -b "" h.qcow2
  qemu-img rebase -u -b "" hq.qcow2
  if cmp -s h.qcow2 hq.qcow2; then pass; else fail "rebase -u -b '' header [$o] differs from qemu's"; fi
done
long=$(printf 'd%.0s' $(seq 1 400))/base.img
qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 1M
expect_rc 1 "$VTOOL" img rebase -u -b "$long" -F raw small.qcow2
expect_grep "Could not change the backing file to .*No space left in the file header" "$T/err"
expect_rc 1 "$VTOOL" img rebase -u -b "$(printf 'a%.0s' $(seq 1 1100))" -F raw small.qcow2
expect_grep "Could not change the backing file to .*Invalid argument" "$T/err"
expect_rc 0 qemu-img check small.qcow2

# Refusals, with qemu's messages and exit codes.
mkchain qcow2 ""
cd chain
qemu-img create -q -f raw r.raw 1M
expect_rc 1 "$VTOOL" img rebase top.qcow2
expect_grep "Must specify backing file \(-b\) or use unsafe mode \(-u\)" "$T/err"
expect_rc 1 "$VTOOL" img rebase -b new.raw -F raw top.qcow2 extra
expect_grep "Expecting one image file name" "$T/err"
expect_rc 1 "$VTOOL" img rebase -f raw -b new.raw -F raw r.raw
expect_grep "Could not change the backing file to 'new.raw': Operation not supported" "$T/err"
expect_rc 1 "$VTOOL" img rebase -b new.raw top.qcow2
expect_grep "Could not change the backing file to 'new.raw': backing format must be specified" "$T/err"
expect_rc 1 "$VTOOL" img rebase -u -b new.raw top.qcow2
expect_grep "backing format must be specified" "$T/err"
expect_rc 1 "$VTOOL" img rebase -u -b new.raw -F nosuchfmt top.qcow2
expect_grep "Invalid format name: 'nosuchfmt'" "$T/err"
expect_rc 1 "$VTOOL" img rebase -b nothere -F raw top.qcow2
expect_grep "Could not open new backing file 'nothere'" "$T/err"
expect_rc 1 "$VTOOL" img rebase -t bogus -b new.raw -F raw top.qcow2
expect_grep "Invalid cache option: bogus" "$T/err"
expect_rc 1 "$VTOOL" img rebase -T bogus -b new.raw -F raw top.qcow2
expect_grep "Invalid source cache option: bogus" "$T/err"
expect_rc 1 "$VTOOL" img rebase -c -f raw -b new.raw -F raw r.raw
expect_grep "Compression not supported" "$T/err"
# None of that touched the image.
expect_rc 0 qemu-img compare -q top.qcow2 ../before.raw
qemu-img info top.qcow2 | grep -q "backing file: mid.qcow2" && pass || fail "refused rebases changed the header"
# -u without -b removes the backing file (as qemu-img); -p prints qemu's progress.
expect_rc 0 "$VTOOL" img rebase -p -b new.raw -F raw top.qcow2
expect_grep '\(100\.00/100%\)' "$T/out"
expect_rc 0 "$VTOOL" img rebase -u top.qcow2
qemu-img info top.qcow2 | grep -q "backing file" && fail "rebase -u kept the backing file" || pass
cd ..

# --image-opts and --object are accepted.
mkchain qcow2 ""
cd chain
expect_rc 0 "$VTOOL" img rebase --object secret,id=s0,data=x --image-opts -b new.raw -F raw \
  driver=qcow2,file.filename=top.qcow2
expect_rc 0 qemu-img compare -q -F raw top.qcow2 ../before.raw
cd ..

finish
