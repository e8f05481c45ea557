#!/usr/bin/env bash
# vtool img commit against qemu-img commit: chains of depth 3 (raw and qcow2 bases, v2
# and v3, several cluster sizes, compressed and zero clusters, an overlay larger than its
# backing file) committed into the backing file, with -d, and with -b into the base.
# The same files are committed by qemu-img in a copy: every image of the chain must read
# what qemu's reads afterwards (the committed-into image is the point), the top image
# what it read before, qemu-img check clean, and an emptied image as small as qemu's.
# Then qemu's messages and exit codes for the refused cases.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

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
    qemu-img create -q -f qcow2 ${o:+-o "$o"} -b mid.qcow2 -F qcow2 top.qcow2 10M
    qemu-io -c "write -P 0x31 1536k 64k" -c "write -z 5M 64k" -c "write -P 0x32 7680k 4k" \
      -c "write -P 0x34 9M 512k" -c "write -z 0 4k" top.qcow2 >/dev/null
    [ -n "$v2" ] || qemu-io -c "write -c -P 0x33 4M 64k" top.qcow2 >/dev/null
  )
}

configs=(
  "raw|"
  "raw|compat=0.10|v2"
  "qcow2|"
  "qcow2|cluster_size=512"
  "qcow2|cluster_size=4k,compat=0.10|v2"
  "raw|cluster_size=16k,extended_l2=on"
  "qcow2|refcount_bits=1,cluster_size=2k"
)
for cfg in "${configs[@]}"; do
  IFS='|' read -r bf o v2 <<<"$cfg"
  for args in "" "-d" "-b base.$bf" "-b mid.qcow2"; do
    mkchain "$bf" "$o" "$v2"
    rm -rf v q && cp -r chain v && cp -r chain q
    (cd chain && qemu-img convert -O raw top.qcow2 ../top.raw)
    # shellcheck disable=SC2086
    (cd q && qemu-img commit -q $args top.qcow2) || { fail "qemu-img commit $args ($cfg) failed"; continue; }
    # shellcheck disable=SC2086
    (cd v && expect_rc 0 "$VTOOL" img commit $args top.qcow2)
    expect_grep '^Image committed\.$' "$T/out"
    what="commit $args [$cfg]"
    for img in top.qcow2 mid.qcow2 "base.$bf"; do
      f=qcow2; [ "$img" = base.raw ] && f=raw
      if (cd v && qemu-img compare -q -f "$f" -F "$f" "$img" "../q/$img"); then pass
      else fail "$what: $img differs from qemu's: $(cd v && qemu-img compare -f $f -F $f $img ../q/$img)"; fi
      if [ "$f" = qcow2 ]; then
        if qemu-img check -q "v/$img"; then pass; else fail "$what: check $img: $(qemu-img check v/$img 2>&1 | head -3)"; fi
      fi
    done
    if qemu-img compare -q -F raw v/top.qcow2 top.raw; then pass; else fail "$what: top's content changed"; fi
    # Sizes as qemu's (the committed-into image grew to the overlay's size).
    for img in mid.qcow2 "base.$bf"; do
      a=$(qemu-img info --output=json "v/$img" | grep '"virtual-size"') b=$(qemu-img info --output=json "q/$img" | grep '"virtual-size"')
      if [ "$a" = "$b" ]; then pass; else fail "$what: $img size $a, qemu's $b"; fi
    done
    # An emptied top is back to its metadata, as qemu's.
    if [ -z "$args" ]; then
      if [ "$(stat -c %s v/top.qcow2)" -le "$(stat -c %s q/top.qcow2)" ]; then pass
      else fail "$what: emptied top is $(stat -c %s v/top.qcow2) bytes, qemu's $(stat -c %s q/top.qcow2)"; fi
      qemu-img map --output=json v/top.qcow2 | grep -q '"depth": 0' && fail "$what: top still holds data" || pass
    fi
  done
done

# -r rate limit (slow, but the same result), -p progress, --image-opts, --object.
mkchain qcow2 ""
cp -r chain r
(cd r && expect_rc 0 "$VTOOL" img commit -p -r 64M --object secret,id=s,data=x top.qcow2)
expect_grep '\(100\.00/100%\)' "$T/out"
expect_grep 'Image committed' "$T/out"
mkchain qcow2 ""
cp -r chain io
(cd io && expect_rc 0 "$VTOOL" img commit --image-opts driver=qcow2,file.filename=top.qcow2)
expect_rc 0 qemu-img compare -q r/mid.qcow2 io/mid.qcow2

# Refusals.
cd chain
qemu-img create -q -f qcow2 lone.qcow2 1M
qemu-img create -q -f raw r.raw 1M
expect_rc 1 "$VTOOL" img commit lone.qcow2
expect_grep "Image does not have a backing file" "$T/err"
expect_rc 1 "$VTOOL" img commit -f raw r.raw
expect_grep "Image does not have a backing file" "$T/err"
expect_rc 1 "$VTOOL" img commit -b lone.qcow2 top.qcow2
expect_grep "Did not find 'lone.qcow2' in the backing chain of 'top.qcow2'" "$T/err"
expect_rc 1 "$VTOOL" img commit -b top.qcow2 top.qcow2
expect_grep "Did not find 'top.qcow2' in the backing chain of 'top.qcow2'" "$T/err"
expect_rc 1 "$VTOOL" img commit
expect_grep "Expecting one image file name" "$T/err"
expect_rc 1 "$VTOOL" img commit -r foo top.qcow2
expect_grep "Invalid rate limit specified" "$T/err"
expect_rc 1 "$VTOOL" img commit -t bogus top.qcow2
expect_grep "Invalid cache option: bogus" "$T/err"
# -b by another name of the base: an absolute path.
expect_rc 0 "$VTOOL" img commit -q -b "$PWD/base.qcow2" top.qcow2
expect_lines 0 "$T/out"
# A base another process writes cannot be committed into (its write lock).
qemu-io -c "sleep 3000" mid.qcow2 >/dev/null 2>&1 &
holder=$!
sleep 0.5
expect_rc 1 "$VTOOL" img commit top.qcow2
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
expect_rc 0 qemu-img check -q top.qcow2
cd ..

finish
