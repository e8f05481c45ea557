#!/usr/bin/env bash
# NBD serving on localhost: vtool img serve vs qemu-nbd, the same clients for both
# (qemu-img bench through qemu's NBD client, and nbdcopy), printing IOPS or MB/s and the
# qemu-nbd/vtool time ratio per row (> 1.0: vtool faster).
#
#   bench/nbd.sh [VTOOL] [SIZE_MiB]
#
# Rows: raw and qcow2 images served with the default cache (writeback) by both servers;
# 4k "random" (qemu-img bench's prime stride, as in specs/perf-anchors.md) and 4k
# sequential; read and write; queue depth 1 and 32 over TCP (127.0.0.1), and queue depth
# 32 again over a unix socket. qemu-nbd 7.2 does not set TCP_NODELAY on its sockets, so
# over TCP with many requests in flight its replies wait for the client's delayed ACKs
# (~40 ms): its TCP qd32 rows measure that (with fewer requests, or they take minutes),
# the unix rows compare the servers without it. Then nbdcopy of the whole image out of
# the server (to null:, so the local disk does not count) and into it, over 1 and 4
# connections (-e 4 on both servers). Each server gets its own copy of the image (a
# writable export is locked); both copies are warm in the page cache. Each row runs
# twice per server, interleaved; the better run counts. Not a test: the numbers depend
# on the machine and its load.
set -euo pipefail
vtool=${1:-build/cli/vtool}
size_mib=${2:-512}
dir=$(mktemp -d "${TMPDIR:-/tmp}/vtool-nbdbench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

head -c $((size_mib << 20)) /dev/urandom >"$dir/v.raw"
qemu-img convert -f raw -O qcow2 -S 0 "$dir/v.raw" "$dir/v.qcow2"
cp "$dir/v.raw" "$dir/q.raw"
cp "$dir/v.qcow2" "$dir/q.qcow2"
cat "$dir"/* >/dev/null

start() { # vtool|qemu FMT SHARED tcp|unix -> prints the NBD URI (runs in $(...): see started)
  local where uri
  if [ "$4" = tcp ]; then
    local p; p=$(port)
    where=(-p "$p"); uri="nbd://127.0.0.1:$p"
  else
    where=(-k "$dir/$1.sock"); uri="nbd+unix:///?socket=$dir/$1.sock"
  fi
  if [ "$1" = vtool ]; then
    "$vtool" img serve --fork --pid-file "$dir/$1.pid" -f "$2" -e "$3" -t "${where[@]}" "$dir/v.$2"
  else
    [ "$4" = tcp ] && where+=(-b 127.0.0.1)
    qemu-nbd --fork --pid-file "$dir/$1.pid" -f "$2" -e "$3" -t "${where[@]}" "$dir/q.$2"
  fi
  echo "$uri"
}
started() { pids+=("$(cat "$dir/qemu.pid")" "$(cat "$dir/vtool.pid")"); }
# stop vtool|qemu: SIGTERM, then wait until it has exited (a zombie has: PID 1 may reap late)
stop() {
  local p; p=$(cat "$dir/$1.pid")
  kill "$p"
  while [ -e "/proc/$p" ] && ! sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | grep -q '^[ZX]'; do
    sleep 0.02
  done
}
secs() { "$@" 2>/dev/null | sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p'; }
now() { date +%s.%N; }
row() { # NAME UNIT AMOUNT QEMU_S VTOOL_S
  python3 - "$@" <<'PY'
import sys
name, unit, amount, q, v = sys.argv[1:]
a, q, v = float(amount), max(float(q), 1e-3), max(float(v), 1e-3)
print(f"{name:34} {a/q:12,.0f} {a/v:12,.0f} {unit:5} {q/v:6.2f}")
PY
}
minf() { python3 -c "print(min($1, $2))"; }

printf '%-34s %12s %12s %-5s %6s\n' "row" "qemu-nbd" "vtool" "unit" "ratio"
uptime | sed 's/^/# load: /'
echo "# clients: qemu-img bench -f raw NBD-URI, nbdcopy; $(qemu-nbd --version | head -1);" \
     "$("$vtool" --version 2>/dev/null | head -1)"
for fmt in raw qcow2; do
  for tr in tcp unix; do
    qu=$(start qemu "$fmt" 1 $tr)
    vu=$(start vtool "$fmt" 1 $tr)
    started
    for pat in rand4k seq4k; do
      if [ $pat = rand4k ]; then pargs=(-s 4096 -S 428969984); else pargs=(-s 4096); fi
      for op in read write; do
        w=(); [ $op = write ] && w=(-w)
        for qd in 1 32; do
          [ $tr = unix ] && [ $qd = 1 ] && continue
          n=20000
          [ $tr = tcp ] && [ $qd = 32 ] && n=4000
          best_q=999999 best_v=999999
          for _ in 1 2; do
            best_q=$(minf "$best_q" "$(secs qemu-img bench -f raw -c $n -d $qd "${pargs[@]}" "${w[@]}" "$qu")")
            best_v=$(minf "$best_v" "$(secs qemu-img bench -f raw -c $n -d $qd "${pargs[@]}" "${w[@]}" "$vu")")
          done
          row "$fmt $pat $op qd$qd $tr" IOPS $n "$best_q" "$best_v"
        done
      done
    done
    stop qemu
    stop vtool
  done
  for conns in 1 4; do
    qu=$(start qemu "$fmt" 4 tcp)
    vu=$(start vtool "$fmt" 4 tcp)
    started
    for dirn in out in; do
      best_q=999999 best_v=999999
      for _ in 1 2; do
        for t in q v; do
          u=$qu; [ $t = v ] && u=$vu
          [ $dirn = in ] && cp "$dir/v.raw" "$dir/copy.raw"
          s=$(now)
          if [ $dirn = out ]; then nbdcopy -C $conns "$u" null:
          else nbdcopy -C $conns "$dir/copy.raw" "$u"; fi
          x=$(python3 -c "print($(now) - $s)")
          if [ $t = q ]; then best_q=$(minf "$best_q" "$x"); else best_v=$(minf "$best_v" "$x"); fi
        done
      done
      row "$fmt nbdcopy $dirn -C $conns" MB/s $((size_mib * 1048576 / 1000000)) "$best_q" "$best_v"
    done
    stop qemu
    stop vtool
  done
done
