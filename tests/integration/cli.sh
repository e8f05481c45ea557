#!/usr/bin/env bash
# The command-line shell: help, version, unknown names, and that --help lists only
# commands that exist (every command it lists answers its own --help).
. "$(dirname "$0")/lib.sh"

expect_rc 0 "$VTOOL" --help
expect_grep '^usage: vtool <group> <command>' "$T/out"
cp "$T/out" "$T/help"

expect_rc 0 "$VTOOL" --version
expect_grep '^vtool version [0-9]+\.[0-9]+\.[0-9]+$' "$T/out"

expect_rc 1 "$VTOOL"
expect_grep '^usage:' "$T/err"

expect_rc 1 "$VTOOL" frobnicate
expect_grep "^vtool: unknown command group 'frobnicate'$" "$T/err"
expect_grep "^Try 'vtool --help'" "$T/err"

expect_rc 1 "$VTOOL" --bogus
expect_grep "^vtool: unrecognized option '--bogus'$" "$T/err"

# Every group and command named in --help must answer --help with exit 0 and a usage line;
# every command must reject an unknown option with exit 1 and a hint naming it.
groups=$(awk '/^  [a-z]+ /{print $1}' "$T/help")
for g in $groups; do
  expect_rc 0 "$VTOOL" "$g" --help
  expect_grep "^[Uu]sage: vtool $g" "$T/out"
  cmds=$(awk -v g="$g" '$0 ~ "^  "g" "{on=1; next} /^  [a-z]/{on=0} on && /^        [a-z]/{print $1}' "$T/help")
  for c in $cmds; do
    expect_rc 0 "$VTOOL" "$g" "$c" --help
    expect_grep "^[Uu]sage: vtool $g $c" "$T/out"
    expect_rc 1 "$VTOOL" "$g" "$c" --no-such-option
    expect_grep "Try 'vtool $g $c --help'" "$T/err"
  done
  if [ "$g" = run ]; then
    # vtool run takes qemu-system-x86_64's options and answers like it.
    expect_rc 1 "$VTOOL" run --no-such-option
    expect_grep "^vtool: --no-such-option: invalid option$" "$T/err"
  else
    expect_rc 1 "$VTOOL" "$g" no-such-command
    expect_grep "^vtool: $g: unknown command 'no-such-command'$" "$T/err"
  fi
done

# Options may follow file names (GNU getopt permutes, as qemu-img's does); `--` ends them.
cd "$T"
expect_rc 0 "$VTOOL" img create perm.qcow2 8M -f qcow2
expect_rc 0 qemu-img info --output=json perm.qcow2
expect_grep '"format": "qcow2"' "$T/out"
expect_rc 0 "$VTOOL" img info perm.qcow2 --output=json
expect_grep '"virtual-size": 8388608' "$T/out"
expect_rc 0 "$VTOOL" img convert perm.qcow2 perm.raw -O raw
expect_rc 0 qemu-img info --output=json perm.raw
expect_grep '"format": "raw"' "$T/out"
expect_rc 0 "$VTOOL" img create -f raw -- -dash.img 1M
[ -f ./-dash.img ] && pass || fail "'--' did not end the options"
cd - >/dev/null

finish
