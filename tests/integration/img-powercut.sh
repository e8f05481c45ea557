#!/usr/bin/env bash
# Power cuts (tests/tools/powercut): every state a power cut could leave while an image is
# written -- writes after the last completed fdatasync lost, reordered or torn per 4 KiB
# page -- must pass qemu-img check (leaks allowed) and keep every flushed sector and the
# backing file's data. vtool writes through blk.h ($BLKIO script) and as whole commands
# (img convert, img bench); qemu-io and qemu-img bench under the same simulation are the
# control and must not fail, or the simulator itself is wrong.
# make test runs the reduced set for vtool and a part of it for the control (about a
# minute); the long run (>= 10,000 states) is by hand:
#   python3 tests/tools/powercut/powercut.py suite --shim build/tests/powercut-shim.so \
#     --blkio build/tests/blkio --vtool build/cli/vtool --seeds 1-3 --max-states 0
# Failing states are kept with a state.json in $VTOOL_BUILD/powercut-repro/.
# By hand, from the source tree (about a minute):
#   VTOOL=build/cli/vtool BLKIO=build/tests/blkio POWERCUT_SHIM=build/tests/powercut-shim.so \
#   VTOOL_SRC=. VTOOL_BUILD=build tests/integration/img-powercut.sh
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
[ -z "${VTOOL_SANITIZED:-}" ] || { echo "SKIP: the shim cannot be preloaded next to a sanitizer runtime (the gcc build runs this)"; exit 77; }
: "${BLKIO:?}" "${POWERCUT_SHIM:?}"
PY=${POWERCUT_PY:-${VTOOL_SRC:?}/tests/tools/powercut/powercut.py}
REPRO=${VTOOL_BUILD:-$T}/powercut-repro

expect_rc 0 python3 "$PY" selftest --shim "$POWERCUT_SHIM"

# suite NAME ARGS...: run the default (reduced) workload set; show its summary lines.
suite() {
  local name=$1; shift
  local rc=0
  python3 "$PY" suite --shim "$POWERCUT_SHIM" --blkio "$BLKIO" --vtool "$VTOOL" \
    --out "$T/$name" "$@" >"$T/$name.out" 2>&1 || rc=$?
  cat "$T/$name.out"
  if [ "$rc" -eq 0 ]; then
    pass
  else
    fail "powercut $name: states failed (exit $rc)"
    if [ -d "$T/$name/repro" ]; then
      rm -rf "$REPRO/$name" && mkdir -p "$REPRO" && cp -r "$T/$name/repro" "$REPRO/$name"
      echo "reproducers: $REPRO/$name"
    fi
  fi
}

suite control --executors qemu --workloads rand4k-wb-d1,overlay,cs512-rb1,discard,compressed
# 60 sampled states per workload here; the long run (above) takes them all.
suite vtool --executors vtool --max-states 60
finish
