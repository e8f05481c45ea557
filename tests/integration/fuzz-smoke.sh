#!/usr/bin/env bash
# Run every libFuzzer target (tests/fuzz/, built by the clang sanitizer build) for a few
# seconds on a seed corpus of images qemu-img made: a crash, a sanitizer report or a
# timeout fails the test. The gcc build has no fuzz targets and skips.
. "$(dirname "$0")/lib.sh"
[ -n "${FUZZ_FORMATS:-}" ] || { echo "SKIP: no fuzz targets in this build (needs clang)"; exit 77; }
need qemu-img
secs=${VTOOL_FUZZ_SECONDS:-3}
for fmt in $FUZZ_FORMATS; do
  bin="$VTOOL_BUILD/tests/fuzz/fuzz_$fmt"
  corpus="$T/corpus-$fmt"
  mkdir -p "$corpus"
  # Seeds: small images of this format as qemu-img writes them, some with data.
  case $fmt in
    raw) head -c 4096 /dev/urandom >"$corpus/a" ;;
    *)
      for opts in "" "cluster_size=512" "compat=0.10"; do
        f="$corpus/seed${opts//[=,]/_}"
        qemu-img create -q -f "$fmt" ${opts:+-o "$opts"} "$f" 1M 2>/dev/null || continue
        qemu-io -f "$fmt" -c 'write -P 0x11 0 8k' -c 'write -P 0x22 600k 70k' "$f" >/dev/null 2>&1
      done ;;
  esac
  # -rss_limit_mb: a header claiming a huge table must not make vtool allocate it.
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=0 \
       -artifact_prefix="$T/" "$corpus" >"$T/log-$fmt" 2>&1; then
    pass
  else
    fail "fuzz_$fmt: $(grep -m3 -E 'ERROR|SUMMARY|crash|leak|timeout' "$T/log-$fmt")"
    ls "$T"/crash-* "$T"/timeout-* "$T"/leak-* 2>/dev/null | head -3 | while read -r c; do
      echo "  reproducer: $c ($(xxd -l 64 "$c" | head -2))"; done
  fi
done
finish
