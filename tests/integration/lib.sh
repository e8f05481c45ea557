# Shared helpers for integration scripts: source it first.
# Gives: $VTOOL, a scratch dir $T removed on exit, and small assertion helpers that
# count checks and fail the script with a message naming the check.
set -u
: "${VTOOL:?VTOOL must point at the built vtool}"
T=$(mktemp -d "${TMPDIR:-/tmp}/vtool-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
# pyenv's python3 is a shell-script shim that costs ~0.3 s a start, and the tests start
# python hundreds of times: call the interpreter it resolves to directly.
if _py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -x "$_py" ]; then
  mkdir "$T/.bin" && ln -s "$_py" "$T/.bin/python3" && PATH=$T/.bin:$PATH
fi
checks=0
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { checks=$((checks + 1)); }

# expect_rc WANT CMD...: run CMD, compare its exit status; output in $T/out, $T/err.
expect_rc() {
  local want=$1; shift
  local rc=0
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "'$*' exited $rc, want $want; stderr: $(head -c 400 "$T/err")"
  else
    pass
  fi
}

# expect_grep PATTERN FILE: FILE has a line matching the extended regex.
expect_grep() {
  if grep -Eq -- "$1" "$2"; then pass; else fail "no /$1/ in $2: $(head -c 400 "$2")"; fi
}

# expect_lines N FILE: FILE has exactly N lines.
expect_lines() {
  local n; n=$(wc -l <"$2")
  if [ "$n" -eq "$1" ]; then pass; else fail "$2 has $n lines, want $1: $(head -c 400 "$2")"; fi
}

# need PROGRAM...: skip the whole script when a peer is missing.
need() {
  for p in "$@"; do
    command -v "$p" >/dev/null 2>&1 || { echo "SKIP: $p not installed"; exit 77; }
  done
}

# slow_test: skip unless VTOOL_SLOW_TESTS=1.
slow_test() {
  [ "${VTOOL_SLOW_TESTS:-0}" = 1 ] || { echo "SKIP: slow test (VTOOL_SLOW_TESTS=1 runs it)"; exit 77; }
}

# same_bytes A B: cmp -s for large sparse files (reads only where either has data).
same_bytes() { python3 "$VTOOL_SRC/tests/tools/sparse-cmp.py" "$1" "$2"; }

# sample ARRAY-NAME: keep the entries of a large matrix this run takes, so that `make test`
# stays near 20 minutes: every third in the gcc build, every sixth (shifted by one) in
# the ASan+UBSan build, all of them with VTOOL_SLOW_TESTS=1 (tests/integration/budget.py).
sample() {
  [ "${VTOOL_SLOW_TESTS:-0}" = 1 ] && return 0
  local -n _arr=$1
  local _kept=() _i
  for _i in "${!_arr[@]}"; do
    if [ -n "${VTOOL_SANITIZED:-}" ]; then (( _i % 6 == 1 )); else (( _i % 3 == 0 )); fi &&
      _kept+=("${_arr[$_i]}")
  done
  _arr=("${_kept[@]}")
}

# finish: print the tally and exit with the verdict.
finish() {
  echo "$checks checks passed, $failures failed"
  [ "$failures" -eq 0 ] && [ "$checks" -gt 0 ]
  exit $?
}
