#!/usr/bin/env bash
# vtool img dd against qemu-img dd: bs/count/skip combinations (qemu's arithmetic, where
# count counts from the start of the input), raw and qcow2 inputs and outputs, the same
# exit codes and messages, outputs of the same size and content (qemu-img compare); an
# existing output is replaced, an input is never overwritten.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

qemu-img create -q -f raw in.raw 3M
qemu-io -f raw -c "write -P 7 0 300k" -c "write -P 9 700k 100k" -c "write -P 3 2M 1000k" in.raw >/dev/null
qemu-img convert -O qcow2 in.raw in.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=4k in.raw inc.qcow2

# msg FILE: stderr without the program's name.
msg() { sed -E 's/^(qemu-img|vtool img dd): //' "$1"; }

operands=("bs=4k count=3 skip=2" "bs=4k count=1k" "bs=4k skip=800" "bs=1000 skip=3"
          "count=5" "bs=64k skip=2 count=9" "bs=512 count=1.5k" "bs=1.5k" "skip=1k"
          "bs=4k count=0" "bs=1M count=2 skip=1" "bs=3G" "bs=0" "bs=foo" "count=-1"
          "bs=1k,count=2" "foo=1" "bar" "skip=6M" "bs=7 count=100001 skip=11")
inputs=("-f raw|in.raw" "-f qcow2|in.qcow2" "|inc.qcow2")
# Every operand set with every input and output format under VTOOL_SLOW_TESTS=1; by
# default with two of the six pairs (one under the sanitizers), rotating, so that each
# pair still meets several operand sets.
pairs=2
[ -n "${VTOOL_SANITIZED:-}" ] && pairs=1
[ "${VTOOL_SLOW_TESTS:-0}" = 1 ] && pairs=6
n=0
for ops in "${operands[@]}"; do
  n=$((n + 1)); k=0
  for inp in "${inputs[@]}"; do
    IFS='|' read -r f src <<<"$inp"
    for ofmt in raw qcow2; do
      k=$((k + 1))
      [ $(((k + n) % 6)) -lt "$pairs" ] || [ "$pairs" = 6 ] || continue
      what="dd $ops $f -O $ofmt if=$src"
      rm -f q.out v.out
      # shellcheck disable=SC2086
      qrc=0; qemu-img dd $f -O $ofmt $ops if=$src of=q.out 2>"$T/qerr" || qrc=$?
      # shellcheck disable=SC2086
      vrc=0; "$VTOOL" img dd $f -O $ofmt $ops if=$src of=v.out 2>"$T/verr" || vrc=$?
      if [ "$qrc" = "$vrc" ]; then pass; else fail "$what: exit $vrc, qemu's $qrc"; fi
      if [ "$(msg "$T/qerr")" = "$(msg "$T/verr")" ]; then pass
      else fail "$what: message '$(msg "$T/verr")', qemu's '$(msg "$T/qerr")'"; fi
      [ -e q.out ] || { [ -e v.out ] && fail "$what: vtool made an output, qemu did not" || pass; continue; }
      if qemu-img compare -q -f "$ofmt" -F "$ofmt" q.out v.out; then pass; else fail "$what: content differs"; fi
      a=$(qemu-img info --output=json -f "$ofmt" q.out | grep '"virtual-size"')
      b=$(qemu-img info --output=json -f "$ofmt" v.out | grep '"virtual-size"')
      if [ "$a" = "$b" ]; then pass; else fail "$what: size $b, qemu's $a"; fi
      [ "$ofmt" = qcow2 ] && { qemu-img check -q v.out && pass || fail "$what: check"; }
      if [ "$ofmt" = raw ]; then cmp -s q.out v.out && pass || fail "$what: raw bytes differ"; fi
    done
  done
done

# An existing output is replaced; the input as output is refused; a missing input.
qemu-img create -q -f qcow2 old.qcow2 10M
expect_rc 0 "$VTOOL" img dd -O raw bs=64k count=4 if=in.raw of=old.qcow2
head -c 256k in.raw >head256k.raw
expect_rc 0 qemu-img compare -q -f raw -F raw old.qcow2 head256k.raw
expect_rc 1 "$VTOOL" img dd -f raw bs=4k if=in.raw of=in.raw
expect_rc 0 qemu-img compare -q -f raw -F qcow2 in.raw in.qcow2
expect_rc 1 "$VTOOL" img dd if=nothere of=x.raw
[ -e x.raw ] && fail "dd of a missing input left an output" || pass
expect_rc 1 "$VTOOL" img dd if=in.raw
expect_grep "Must specify both input and output files" "$T/err"
expect_rc 1 "$VTOOL" img dd -O nosuchfmt if=in.raw of=x.raw
expect_grep "Unknown file format" "$T/err"
# -U, --image-opts, --object.
expect_rc 0 "$VTOOL" img dd -U --object secret,id=s,data=x --image-opts bs=1M count=1 \
  if=driver=qcow2,file.filename=in.qcow2 of=io.raw
head -c 1M in.raw >head1m.raw
expect_rc 0 qemu-img compare -q -f raw -F raw io.raw head1m.raw

finish
