#!/usr/bin/env bash
# vtool img bench vs qemu-img bench, side by side on the same files, printing IOPS and the
# vtool/qemu ratio per row (>= 1.0 means vtool is at least as fast).
#
#   bench/img-bench.sh [VTOOL] [SIZE_MiB]
#
# Rows: raw and qcow2; 4k "random" (qemu-img bench has no random mode: a prime stride of
# 104729 x 4 KiB, as in specs/perf-anchors.md) and 64k sequential; read and write; queue
# depth 1 and 32; cache none (O_DIRECT) and writeback. Images are fully written (qcow2 via
# convert -S 0) so reads hit real data. Each tool runs each row twice, interleaved; the
# better run counts. Not a test: numbers depend on the machine.
set -euo pipefail
vtool=${1:-build/cli/vtool}
size_mib=${2:-512}
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vtool-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

head -c $((size_mib << 20)) /dev/urandom >"$dir/bench.raw"
qemu-img convert -f raw -O qcow2 -S 0 "$dir/bench.raw" "$dir/bench.qcow2"

secs() { "$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p'; }

printf '%-6s %-7s %-5s %-3s %-9s %12s %12s %7s\n' fmt pattern op qd cache "qemu IOPS" "vtool IOPS" ratio
uptime | sed 's/^/# load: /'

# ratio_row FMT PAT OP QD CACHE N QEMU_S VTOOL_S
ratio_row() {
  python3 - "$@" <<'PY'
import sys
fmt, pat, op, qd, cache, n, q, v = sys.argv[1:]
n, q, v = int(n), max(float(q), 1e-3), max(float(v), 1e-3)
print(f"{fmt:6} {pat:7} {op:5} {qd:3} {cache:9} {n/q:12,.0f} {n/v:12,.0f} {q/v:7.2f}")
PY
}

# Allocating writes: 4k "random" writes into a new, empty qcow2 (every first touch of a
# cluster allocates it and its L2 entry), a fresh image for every run.
for qd in 1 32; do
  for cache in none writeback; do
    n=20000
    best_q=999999 best_v=999999
    for _ in 1 2; do
      for t in q v; do
        rm -f "$dir/alloc.qcow2"
        qemu-img create -q -f qcow2 "$dir/alloc.qcow2" $((size_mib))M
        args=(-f qcow2 -t $cache -d $qd -c $n -s 4096 -S 428969984 -w "$dir/alloc.qcow2")
        if [ $t = q ]; then x=$(secs qemu-img bench "${args[@]}"); best_q=$(python3 -c "print(min($best_q, $x))")
        else x=$(secs "$vtool" img bench "${args[@]}"); best_v=$(python3 -c "print(min($best_v, $x))"); fi
      done
    done
    ratio_row qcow2 alloc4k write "$qd" "$cache" "$n" "$best_q" "$best_v"
  done
done
for fmt in raw qcow2; do
  for pat in rand4k seq64k; do
    if [ $pat = rand4k ]; then pargs=(-s 4096 -S 428969984); else pargs=(-s 65536); fi
    for op in read write; do
      w=(); [ $op = write ] && w=(-w)
      for qd in 1 32; do
        for cache in none writeback; do
          # Request counts sized for ~1 s per run on this machine.
          n=20000
          [ $cache = writeback ] && n=200000
          [ $pat = seq64k ] && n=$((n / 4))
          args=(-f $fmt -t $cache -d $qd -c $n "${pargs[@]}" "${w[@]}" "$dir/bench.$fmt")
          best_q=999999 best_v=999999
          for _ in 1 2; do
            q=$(secs qemu-img bench "${args[@]}")
            v=$(secs "$vtool" img bench "${args[@]}")
            best_q=$(python3 -c "print(min($best_q, $q))")
            best_v=$(python3 -c "print(min($best_v, $v))")
          done
          python3 - "$fmt" "$pat" "$op" "$qd" "$cache" "$n" "$best_q" "$best_v" <<'PY'
import sys
fmt, pat, op, qd, cache, n, q, v = sys.argv[1:]
n, q, v = int(n), max(float(q), 1e-3), max(float(v), 1e-3)
print(f"{fmt:6} {pat:7} {op:5} {qd:3} {cache:9} {n/q:12,.0f} {n/v:12,.0f} {q/v:7.2f}")
PY
        done
      done
    done
  done
done
