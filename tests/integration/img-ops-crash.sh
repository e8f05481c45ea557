#!/usr/bin/env bash
# SIGKILL at random points of a safe rebase, a commit, and amend refcount_bits/compat:
# every image left behind passes qemu-img check (clean or leaks only, exit 0 or 3), and
# the top image reads exactly what it read before (what qemu guarantees for these
# commands: rebase copies the old content in before it switches the header; commit
# changes the base only where the top decides, and empties the top after; amend builds
# the new structure before it switches). The kill times are spread over each command's
# measured run time, and the script counts how many kills landed while it ran.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

RANDOM=14
killed=0
# Kills per command: 2 by default; VTOOL_SLOW_TESTS=1 kills each 6 times, on both
# cluster sizes. The default still kills every command kind.
kills=2 sizes="64k"
[ "${VTOOL_SLOW_TESTS:-0}" = 1 ] && kills=6 sizes="64k 4k"

# duration CMD...: seconds (fractional) the command takes uninterrupted.
duration() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' 
}

# run_killed SECS CMD...: start CMD, SIGKILL it after SECS (if it still runs).
run_killed() {
  local secs=$1; shift
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$secs"
  kill -9 "$pid" 2>/dev/null
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  [ "$rc" -eq 137 ] && killed=$((killed + 1))
  return 0
}

# check_ok IMG WHAT: qemu-img check exit 0 or 3.
check_ok() {
  local rc=0
  qemu-img check "$1" >"$T/chk" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then pass
  else fail "$2: qemu-img check $1 exit $rc: $(head -c 400 "$T/chk")"; fi
}

# same_content IMG RAW WHAT
same_content() {
  if qemu-img compare -q -F raw "$1" "$2" 2>"$T/cmp"; then pass
  else fail "$3: $1 no longer reads as before: $(head -c 300 "$T/cmp")"; fi
}

# The pristine files: two 24 MiB bases that differ almost everywhere, an overlay with its
# own data (64 KiB and 4 KiB clusters).
head -c 24M /dev/urandom >base.raw
head -c 24M /dev/urandom >new.raw
for cs in $sizes; do
  qemu-img create -q -f qcow2 -o cluster_size=$cs -b base.raw -F raw "ov-$cs.qcow2" 32M
  qemu-io -c "write -P 0x31 0 2M" -c "write -z 4M 1M" -c "write -P 0x32 20M 6M" "ov-$cs.qcow2" >/dev/null
  qemu-img convert -O raw "ov-$cs.qcow2" "ov-$cs.raw"
done

# 1. Safe rebase onto new.raw, and flattening (-b ""), writeback and writethrough.
for cs in $sizes; do
  for args in "-b new.raw -F raw" "-b \"\"" "-t writethrough -b new.raw -F raw"; do
    eval "set -- $args"
    cp "ov-$cs.qcow2" x.qcow2
    d=$(duration "$VTOOL" img rebase "$@" x.qcow2)
    for _ in $(seq $kills); do
      cp "ov-$cs.qcow2" x.qcow2
      t=$(awk -v d="$d" -v r=$((RANDOM % 1000)) 'BEGIN { printf "%.3f", d * r / 1250 }')
      run_killed "$t" "$VTOOL" img rebase "$@" x.qcow2
      what="rebase $args [$cs] killed at ${t:0:5}s of ${d:0:5}s"
      check_ok x.qcow2 "$what"
      same_content x.qcow2 "ov-$cs.raw" "$what"
    done
  done
done

# 2. Commit into a qcow2 base (then the top is emptied), and with -d.
qemu-img convert -O qcow2 base.raw base.qcow2
for cs in $sizes; do
  qemu-img create -q -f qcow2 -o cluster_size=$cs -b base.qcow2 -F qcow2 "top-$cs.qcow2" 32M
  qemu-io -c "write -P 0x41 0 4M" -c "write -z 4M 1M" -c "write -P 0x42 15M 10M" "top-$cs.qcow2" >/dev/null
  qemu-img convert -O raw "top-$cs.qcow2" "top-$cs.raw"
  for args in "" "-d"; do
    cp base.qcow2 b.qcow2
    cp "top-$cs.qcow2" t.qcow2 && qemu-img rebase -u -b b.qcow2 -F qcow2 t.qcow2
    # shellcheck disable=SC2086
    d=$(duration "$VTOOL" img commit $args t.qcow2)
    for _ in $(seq $kills); do
      cp base.qcow2 b.qcow2
      cp "top-$cs.qcow2" t.qcow2 && qemu-img rebase -u -b b.qcow2 -F qcow2 t.qcow2
      t=$(awk -v d="$d" -v r=$((RANDOM % 1000)) 'BEGIN { printf "%.3f", d * r / 1250 }')
      # shellcheck disable=SC2086
      run_killed "$t" "$VTOOL" img commit $args t.qcow2
      what="commit $args [$cs] killed at ${t:0:5}s of ${d:0:5}s"
      check_ok t.qcow2 "$what"
      check_ok b.qcow2 "$what"
      same_content t.qcow2 "top-$cs.raw" "$what"
    done
  done
done

# 3. amend: refcount_bits (a new refcount structure) and compat=0.10 (zero clusters
# expanded), on images with many small clusters so that there is a lot to rebuild.
qemu-img create -q -f qcow2 -o cluster_size=512 am.qcow2 24M
qemu-io -c "write -P 0x51 0 10M" -c "write -z 10M 2M" -c "write -P 0x52 15M 5M" \
  -c "write -c -P 0x53 22M 1M" am.qcow2 >/dev/null
qemu-img convert -O raw am.qcow2 am.raw
for opt in refcount_bits=64 refcount_bits=4 refcount_bits=8,lazy_refcounts=on compat=0.10; do
  cp am.qcow2 x.qcow2
  d=$(duration "$VTOOL" img amend -o "$opt" x.qcow2)
  for _ in $(seq $kills); do
    cp am.qcow2 x.qcow2
    t=$(awk -v d="$d" -v r=$((RANDOM % 1000)) 'BEGIN { printf "%.3f", d * r / 1250 }')
    run_killed "$t" "$VTOOL" img amend -o "$opt" x.qcow2
    what="amend -o $opt killed at ${t:0:5}s of ${d:0:5}s"
    check_ok x.qcow2 "$what"
    same_content x.qcow2 am.raw "$what"
  done
done

# Kill times fall in the first 80% of the measured run time; a run can still be faster
# than the measured one (a kill after the end tests nothing, harmlessly): at least a
# third must have hit a running command.
total=$(( (${#sizes} > 3 ? 2 : 1) * 5 * kills + 4 * kills ))
echo "$killed of $total kills landed while the command ran"
if [ $((killed * 3)) -ge "$total" ]; then pass; else fail "only $killed of $total kills landed mid-command"; fi
finish
