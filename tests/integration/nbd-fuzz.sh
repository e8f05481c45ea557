#!/usr/bin/env bash
# Run the NBD server's libFuzzer target (tests/fuzz/fuzz_nbd_server.c, clang sanitizer
# build only) for 3 s (60 with VTOOL_SLOW_TESTS=1) from seed streams of well-formed client
# sessions: a crash, a sanitizer report, a leak or a timeout fails the test. Longer runs:
#   build-asan/tests/fuzz/fuzz_nbd_server -max_total_time=600 CORPUS_DIR
. "$(dirname "$0")/lib.sh"
bin="$VTOOL_BUILD/tests/fuzz/fuzz_nbd_server"
[ -x "$bin" ] || { echo "SKIP: no fuzz targets in this build (needs clang)"; exit 77; }
need python3
secs=3                                        # as fuzz-smoke.sh: the default suite's share
[ "${VTOOL_SLOW_TESTS:-0}" = 1 ] && secs=60
secs=${VTOOL_FUZZ_SECONDS:-$secs}
mkdir -p "$T/corpus"
python3 - "$T/corpus" <<'PY'
import os, struct, sys
out = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, d=b''): return struct.pack('>QII', IHAVEOPT, o, len(d)) + d
def req(t, off, n, fl=0, ck=1, pl=b''): return struct.pack('>IHHQQI', 0x25609513, fl, t, ck, off, n) + pl
def go(name=b'', infos=(3,)):
    return struct.pack('>I', len(name)) + name + struct.pack('>H', len(infos)) + b''.join(struct.pack('>H', i) for i in infos)
def meta(name=b'', qs=(b'base:allocation',)):
    return struct.pack('>I', len(name)) + name + struct.pack('>I', len(qs)) + b''.join(struct.pack('>I', len(q)) + q for q in qs)
f = struct.pack('>I', 3)
reqs = (req(0, 0, 4096) + req(1, 4096, 512, pl=b'\x11' * 512) + req(7, 0, 1 << 20, ck=3) +
        req(6, 8192, 65536, fl=2) + req(4, 0, 65536) + req(3, 0, 0) + req(5, 0, 4096) +
        req(0, 0, 131072) + req(1, 0, 70000, pl=b'\0' * 70000) + req(2, 0, 0))
seeds = {
  'go': f + opt(8) + opt(10, meta(b'', (b'base:allocation', b'qemu:allocation-depth'))) + opt(7, go()) + reqs,
  'go-disk': f + opt(8) + opt(10, meta(b'disk')) + opt(7, go(b'disk', (0, 1, 2, 3))) + reqs,
  'exportname': f + opt(1) + reqs,
  'options': f + opt(3) + opt(6, go()) + opt(9, meta()) + opt(5) + opt(99, b'xyz') + opt(2),
  'simple': f + opt(7, go()) + req(0, 0, 4096) + req(0, 1 << 19, 1 << 21) + req(1, 100, 10, pl=b'a' * 10) + req(2, 0, 0),
}
for k, v in seeds.items():
    for cfg, tag in ((b'\x00\x00', ''), (b'\xb1\x07', '-ro512'), (b'\x5c\x01', '-dz')):
        open(os.path.join(out, k + tag), 'wb').write(cfg + v)
PY
if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
     -artifact_prefix="$T/" "$T/corpus" >"$T/log" 2>&1; then
  pass
  grep -E '^stat::number_of_executed_units' "$T/log"
else
  fail "fuzz_nbd_server: $(grep -m3 -E 'ERROR|SUMMARY|crash|leak|timeout' "$T/log")"
  ls "$T"/crash-* "$T"/timeout-* "$T"/leak-* 2>/dev/null | head -3 | while read -r c; do
    echo "  reproducer: $c ($(xxd -l 64 "$c" | head -2))"; done
fi
finish
