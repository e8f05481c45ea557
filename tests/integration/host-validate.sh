#!/usr/bin/env bash
# vtool host validate: the report's shape (one line per check, a fix after every WARN and
# FAIL, the summary, --quiet), the verdicts this machine must get (/dev/kvm and every
# capability pass as root, the hypervisor is named, a PVM host is reported as emulating
# guest kernel code), /dev/kvm FAILing with the kvm-group fix for a user without the group
# (setpriv), the network checks inside fresh network namespaces changing nothing there
# (ip -d link/addr, nft list ruleset, ip_forward before and after) while finding a forward
# chain that drops, and the JSON against the shape documented in --help. Every run that
# checks the network runs in a namespace this script makes.
. "$(dirname "$0")/lib.sh"
need ip nft python3 setpriv
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }

ns=vt19-h-$$
cleanup() {
  ip netns del $ns 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
ip netns add $ns || { echo "SKIP: cannot create network namespaces"; exit 77; }
in_ns() { ip netns exec $ns "$@"; }
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all)
chmod 755 "$T"
mkdir "$T/img" && chmod 1777 "$T/img"

# --- help and usage errors (no checks run) -----------------------------------------------
expect_rc 0 "$VTOOL" host validate --help
cp "$T/out" "$T/help"
for o in '--output=human\|json' '-q, --quiet' '--dir DIR'; do expect_grep "^  $o " "$T/help"; done
expect_grep '^Example:$' "$T/help"
expect_grep '^  vtool host validate ' "$T/help"
expect_grep '^Exit status: 0 when nothing WARNs or FAILs, 1 when a check FAILs' "$T/help"
expect_rc 0 "$VTOOL" --help
expect_grep '^  host  ' "$T/out"
expect_grep '^        validate ' "$T/out"
expect_rc 1 "$VTOOL" host validate --output=xml
expect_grep '^vtool host validate: --output must be human or json$' "$T/err"
expect_rc 1 "$VTOOL" host validate extra
expect_grep "unexpected argument 'extra'" "$T/err"
expect_rc 1 "$VTOOL" host validate --dir "$T/missing"
expect_grep "^vtool: $T/missing: image directory: No such file or directory$" "$T/err"
: >"$T/file"
expect_rc 1 "$VTOOL" host validate --dir "$T/file"
expect_grep "^vtool: $T/file: image directory: Not a directory$" "$T/err"

# --- the namespace's state, which no run may change --------------------------------------
snapshot() {
  { in_ns ip -d link show; in_ns ip -d addr show; in_ns ip route show table all
    in_ns nft list ruleset; in_ns cat /proc/sys/net/ipv4/ip_forward; } >"$1" 2>&1
}
in_ns ip link set lo up
snapshot "$T/before"

# shape: every line is a check, a fix right after a WARN or FAIL, or the summary
check_shape() { # FILE [quiet]
  python3 - "$1" "${2:-}" <<'EOF' || fail "report shape of $1"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
quiet = sys.argv[2] == "quiet"
check = re.compile(r"^vtool: Checking (.+) \.{3,} : (PASS|NOTE|WARN|FAIL|SKIP)( \(.+\))?$")
bad = []
for i, l in enumerate(lines):
    m = check.match(l)
    if m:
        needs_fix = m.group(2) in ("WARN", "FAIL")
        has_fix = i + 1 < len(lines) and lines[i + 1].startswith("        fix: ")
        if needs_fix != has_fix:
            bad.append("fix line %s after: %s" % ("missing" if needs_fix else "unexpected", l))
        if quiet and not needs_fix:
            bad.append("--quiet printed: " + l)
    elif l.startswith("        fix: "):
        if i == 0 or not check.match(lines[i - 1]):
            bad.append("stray fix: " + l)
    elif not quiet and i == len(lines) - 1 and re.match(r"^vtool: \d+ checks: \d+ PASS, \d+ NOTE, \d+ WARN, \d+ FAIL, \d+ SKIP: vtool run ", l):
        pass
    else:
        bad.append("unexpected line: " + l)
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
  pass
}
line_of() { grep -F "vtool: Checking $1 ." "$2"; }
expect_line() { # TITLE RESULT FILE [detail regex]
  local l; l=$(line_of "$1" "$3")
  if [[ "$l" =~ \ :\ $2( |$) ]] && { [ -z "${4:-}" ] || grep -Eq -- "$4" <<<"$l"; }; then pass
  else fail "want '$1' $2 ${4:-}, got: ${l:-nothing}"; fi
}
fix_after() { grep -F -A1 "vtool: Checking $1 ." "$2" | sed -n 's/^        fix: //p'; }

# --- as root ------------------------------------------------------------------------------
rc=0; in_ns "$VTOOL" host validate --dir "$T/img" >"$T/root" 2>"$T/err" || rc=$?
check_shape "$T/root"
if [ -s "$T/err" ]; then fail "stderr: $(head -c 300 "$T/err")"; else pass; fi
if [ -c /dev/kvm ]; then
  for t in "if device /dev/kvm exists" "if device /dev/kvm is accessible" \
           "for KVM API version 12" "for the vCPUs KVM allows" "for dirty page logging"; do
    expect_line "$t" PASS "$T/root"
  done
  n=$(grep -c '^vtool: Checking for KVM_CAP_[A-Z0-9_]* (.*) \.* : PASS$' "$T/root")
  if [ "$n" -ge 10 ]; then pass; else fail "$n KVM capabilities pass: $(grep KVM_CAP "$T/root")"; fi
  if grep -q 'KVM_CAP_.* : FAIL' "$T/root"; then fail "a capability fails"; else pass; fi
  if [ -d /sys/module/kvm_pvm ]; then
    expect_line "if guest kernel code runs natively" WARN "$T/root" \
      'guest kernel code is emulated: expect slow boots \(CPL0 [0-9.]+ M instructions/s, CPL3 [0-9.]+ M/s\)'
    expect_line "for hardware virtualization" PASS "$T/root" 'KVM is provided by kvm_pvm'
    expect_line "if the kvm_pvm module is loaded" PASS "$T/root"
    [ "$rc" -eq 2 ] && pass || fail "exit status $rc on a PVM host, want 2"
  else
    expect_line "if guest kernel code runs natively" PASS "$T/root" 'yes: CPL0'
  fi
  [ "$rc" -ne 1 ] && pass || fail "a FAIL as root: $(grep -A1 ': FAIL' "$T/root")"
else
  expect_line "if device /dev/kvm exists" FAIL "$T/root"
  fix_after "if device /dev/kvm exists" "$T/root" | grep -q modprobe && pass || fail "no modprobe fix"
  [ "$rc" -eq 1 ] && pass || fail "exit status $rc without /dev/kvm, want 1"
fi
if grep -qw hypervisor /proc/cpuinfo; then
  expect_line "if this host is a virtual machine" NOTE "$T/root" 'yes, under [A-Z][A-Za-z-]+'
  if grep -q 'under unknown' "$T/root"; then fail "hypervisor not named"; else pass; fi
else
  expect_line "if this host is a virtual machine" PASS "$T/root" 'no: bare metal'
fi
expect_line "for CAP_NET_ADMIN" PASS "$T/root"
expect_line "for bridge support" PASS "$T/root" '0 bridges in this network namespace|loads when'
expect_line "for nftables support" PASS "$T/root"
expect_line "for forward chains that drop by policy" PASS "$T/root" '^.*none'
ipf=$(in_ns cat /proc/sys/net/ipv4/ip_forward)
if [ "$ipf" = 1 ]; then expect_line "if IPv4 forwarding is on" PASS "$T/root" '\(on\)'
else expect_line "if IPv4 forwarding is on" NOTE "$T/root" "off: .*vtool net setup --nat' turns it on"; fi
expect_line "for OFD locks in the image directory" PASS "$T/root" "$T/img.*a second open of a locked image is refused"
expect_line "for free space in the image directory" PASS "$T/root" 'GiB free of'
if [ -f /usr/share/seabios/bios-256k.bin ]; then
  expect_line "for the SeaBIOS image" PASS "$T/root" 'Debian package seabios'
else
  expect_line "for the SeaBIOS image" WARN "$T/root"
  fix_after "for the SeaBIOS image" "$T/root" | grep -q 'apt-get install seabios' && pass || fail "seabios fix"
fi

# --quiet: the WARN and FAIL lines alone, same status
rc_q=0; in_ns "$VTOOL" host validate -q --dir "$T/img" >"$T/quiet" || rc_q=$?
check_shape "$T/quiet" quiet
[ "$rc_q" -eq "$rc" ] && pass || fail "--quiet exit status $rc_q, want $rc"
if [ "$rc" -eq 0 ]; then expect_lines 0 "$T/quiet"; fi

# JSON: the shape --help documents, and the same checks and verdicts as the human lines
json_check() { # JSON HUMAN RC
  python3 - "$@" <<'EOF' || fail "JSON $1"
import json, re, sys
doc = json.load(open(sys.argv[1]))
rc = int(sys.argv[3])
err = []
if set(doc) != {"checks", "result", "exit-code"}:
    err.append("top-level members %s" % sorted(doc))
names = set()
for c in doc["checks"]:
    if set(c) != {"group", "name", "title", "result", "detail", "fix"}:
        err.append("members %s" % sorted(c))
        continue
    if c["group"] not in ("cpu", "kvm", "net", "files"): err.append("group " + c["group"])
    if not re.match(r"^[a-z0-9-]+$", c["name"]) or c["name"] in names: err.append("name " + c["name"])
    names.add(c["name"])
    if c["result"] not in ("PASS", "NOTE", "WARN", "FAIL", "SKIP"): err.append("result " + c["result"])
    if not isinstance(c["title"], str) or not isinstance(c["detail"], str): err.append("strings " + c["name"])
    if (c["result"] in ("WARN", "FAIL")) != isinstance(c["fix"], str): err.append("fix of " + c["name"])
    if c["fix"] is not None and not c["fix"]: err.append("empty fix " + c["name"])
results = [c["result"] for c in doc["checks"]]
worst = "FAIL" if "FAIL" in results else "WARN" if "WARN" in results else "PASS"
if doc["result"] != worst: err.append("result %s, want %s" % (doc["result"], worst))
if doc["exit-code"] != {"FAIL": 1, "WARN": 2, "PASS": 0}[worst] or doc["exit-code"] != rc:
    err.append("exit-code %s, exit status %d" % (doc["exit-code"], rc))
human = [m.groups() for m in (re.match(r"^vtool: Checking (.+?) \.{3,} : ([A-Z]+)", l)
         for l in open(sys.argv[2])) if m]
if human != [(c["title"], c["result"]) for c in doc["checks"]]:
    err.append("JSON and human lines differ")
if len(doc["checks"]) < 30: err.append("only %d checks" % len(doc["checks"]))
if err:
    print("\n".join(err), file=sys.stderr)
    sys.exit(1)
EOF
  pass
}
rc_j=0; in_ns "$VTOOL" host validate --output=json --dir "$T/img" >"$T/root.json" || rc_j=$?
json_check "$T/root.json" "$T/root" "$rc_j"

# --- as a user without the kvm group and without capabilities ----------------------------
if in_ns "${nobody[@]}" sh -c 'test -r /dev/kvm && test -w /dev/kvm' 2>/dev/null || [ ! -c /dev/kvm ]; then
  echo "note: nobody may open /dev/kvm here (or there is none); the access FAIL is not tested"
else
  rc_n=0; (cd "$T/img" && in_ns "${nobody[@]}" "$VTOOL" host validate >"$T/nobody" 2>"$T/err") || rc_n=$?
  check_shape "$T/nobody"
  [ "$rc_n" -eq 1 ] && pass || fail "exit status $rc_n as nobody, want 1"
  expect_line "if device /dev/kvm is accessible" FAIL "$T/nobody" 'as nobody: Permission denied'
  fix_after "if device /dev/kvm is accessible" "$T/nobody" >"$T/fix"
  expect_grep 'group kvm' "$T/fix"
  expect_grep 'usermod -aG kvm nobody' "$T/fix"
  expect_line "for KVM API version 12" SKIP "$T/nobody" 'cannot open /dev/kvm'
  expect_line "if guest kernel code runs natively" SKIP "$T/nobody"
  expect_line "for CAP_NET_ADMIN" WARN "$T/nobody" "need root"
  fix_after "for CAP_NET_ADMIN" "$T/nobody" | grep -q 'sudo vtool net tap add --owner' && pass || fail "net admin fix"
  expect_line "for nftables support" SKIP "$T/nobody" 'CAP_NET_ADMIN'
  expect_line "for OFD locks in the image directory" PASS "$T/nobody"
  expect_grep 'vtool run cannot work here until the FAILs are fixed$' "$T/nobody"
  rc_n=0; in_ns "${nobody[@]}" "$VTOOL" host validate --output=json --dir "$T/img" >"$T/nobody.json" || rc_n=$?
  json_check "$T/nobody.json" "$T/nobody" "$rc_n"
  # an image directory this user cannot write: the file probes say so
  rc_n=0; in_ns "${nobody[@]}" "$VTOOL" host validate --dir / >"$T/nobody-root" || rc_n=$?
  expect_line "for OFD locks in the image directory" WARN "$T/nobody-root" 'cannot create a file there'
fi

snapshot "$T/after"
if diff -u "$T/before" "$T/after" >"$T/diff"; then pass; else fail "the namespace changed: $(head -c 600 "$T/diff")"; fi

# --- a forward chain that drops by policy, and a bridge: found, and left as they were ---
in_ns nft add table inet filter
in_ns nft add chain inet filter forward '{ type filter hook forward priority 0; policy drop; }'
in_ns ip link add vt19br0 type bridge
snapshot "$T/before2"
rc=0; in_ns "$VTOOL" host validate --dir "$T/img" >"$T/drop" || rc=$?
check_shape "$T/drop"
expect_line "for forward chains that drop by policy" WARN "$T/drop" 'table inet filter chain forward'
fix_after "for forward chains that drop by policy" "$T/drop" >"$T/fix"
expect_grep 'nft insert rule inet filter forward iifname "BRIDGE" accept' "$T/fix"
expect_line "for bridge support" PASS "$T/drop" '1 bridge in this network namespace|loads when'
[ "$rc" -ne 0 ] && pass || fail "exit status 0 with a WARN"
snapshot "$T/after2"
if diff -u "$T/before2" "$T/after2" >"$T/diff"; then pass; else fail "the namespace changed: $(head -c 600 "$T/diff")"; fi

# vtool run, refused /dev/kvm, prints the same fix as validate does.
if [ -n "${TGUEST:-}" ]; then
  "${nobody[@]}" "$VTOOL" host validate >"$T/v.out" 2>&1 || true
  expect_rc 1 "${nobody[@]}" "$VTOOL" run -kernel "$TGUEST" -nographic
  expect_grep '^vtool: /dev/kvm: open: Permission denied' "$T/err"
  fix=$(grep -m1 'fix: let group kvm' "$T/v.out" | sed 's/^ *fix: //')
  grep -qF "vtool: fix: $fix" "$T/err" && pass || fail "vtool run's fix differs from validate's: $(cat "$T/err")"
fi

finish
