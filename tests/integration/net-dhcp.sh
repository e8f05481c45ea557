#!/usr/bin/env bash
# vtool net setup --dhcp: dnsmasq on the bridge, inside network namespaces this test
# creates. A "guest" namespace behind the bridge runs busybox udhcpc: it gets an address in
# the range, a default route through the bridge, and resolves the bridge's own name through
# the DNS server DHCP gave it (a name dnsmasq answers itself: no upstream is ever asked,
# and the namespaces' resolv.conf is empty). Also: idempotency (the running dnsmasq is
# kept), a changed range restarts it, show lists the lease (also without root), range
# errors, a dnsmasq that cannot start rolls the run back, a same-named bridge in another
# namespace is left alone, and teardown stops dnsmasq and removes /run/vtool/<bridge>.
. "$(dirname "$0")/lib.sh"
need ip busybox python3
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }
[ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null || { echo "SKIP: dnsmasq not installed (dnsmasq-base)"; exit 77; }

ns=vt17-d-$$        # the host side: bridge + dnsmasq
guest=vt17-dg-$$    # a guest behind the bridge
other=vt17-do-$$    # another namespace with a bridge of the same name
br=vt17d$$          # bridge names are unique per run: /run/vtool/<bridge> is shared
br2=vt17e$$
br3=vt17f$$
bridges=($br $br2 $br3)
stop_dnsmasq() { # only a dnsmasq running this test's configuration
  local b pid
  for b in "${bridges[@]}"; do
    pid=$(cat /run/vtool/$b/dnsmasq.pid 2>/dev/null) || continue
    if tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null | grep -q -- "--conf-file=/run/vtool/$b/dnsmasq.conf"; then
      kill "$pid" 2>/dev/null
    fi
    rm -rf "/run/vtool/$b"
  done
  rmdir /run/vtool 2>/dev/null
}
cleanup() {
  [ -n "${listener:-}" ] && kill "$listener" 2>/dev/null
  stop_dnsmasq
  for n in $ns $guest $other; do ip netns del $n 2>/dev/null; rm -rf /etc/netns/$n; done
  [ -n "$made_etc_netns" ] && rmdir /etc/netns 2>/dev/null
  rm -rf "$T"
}
made_etc_netns=; [ -d /etc/netns ] || made_etc_netns=1
trap cleanup EXIT
trap 'exit 143' TERM INT   # a killed run cleans up too: no dnsmasq outlives the test
for n in $ns $guest $other; do
  # an empty resolv.conf in each namespace (ip netns exec mounts it): no upstream DNS
  mkdir -p /etc/netns/$n && : >/etc/netns/$n/resolv.conf
  ip netns add $n || { echo "SKIP: cannot create network namespaces"; exit 77; }
  ip netns exec $n ip link set lo up
done
in_ns() { ip netns exec $ns "$@"; }
in_guest() { ip netns exec $guest "$@"; }

# setup --dhcp RANGE: dnsmasq started last, on the bridge alone, in the bridge's namespace
expect_rc 0 in_ns "$VTOOL" net setup --bridge $br --addr 192.168.73.1/24 --dhcp 192.168.73.100-192.168.73.150
expect_grep "^started dnsmasq on $br \\(pid [0-9]+\\): DHCP 192\\.168\\.73\\.100-192\\.168\\.73\\.150, DNS$" "$T/out"
expect_lines 4 "$T/out"
pid=$(cat /run/vtool/$br/dnsmasq.pid)
if [ "$(ip netns identify "$pid")" = $ns ]; then pass; else fail "dnsmasq $pid not in $ns"; fi
conf=/run/vtool/$br/dnsmasq.conf
for line in "interface=$br" bind-interfaces except-interface=lo "pid-file=/run/vtool/$br/dnsmasq.pid" \
            "dhcp-leasefile=/run/vtool/$br/dnsmasq.leases" "host-record=$br,192.168.73.1" \
            "dhcp-range=192.168.73.100,192.168.73.150,255.255.255.0"; do
  expect_grep "^$line\$" "$conf"
done
in_ns ss -H -lnup >"$T/udp"
in_ns ss -H -lntp >"$T/tcp"
expect_grep "192\\.168\\.73\\.1:53 .*pid=$pid," "$T/udp"
expect_grep "0\\.0\\.0\\.0%$br:67 .*pid=$pid," "$T/udp"
expect_grep "192\\.168\\.73\\.1:53 .*pid=$pid," "$T/tcp"
if grep -E "pid=$pid," "$T/udp" "$T/tcp" | grep -vE "192\\.168\\.73\\.1:53|%$br:67|\\[fe80::[0-9a-f:]*%$br\\]:53"; then
  fail "dnsmasq listens elsewhere"; else pass; fi

# a guest: veth into the bridge, busybox udhcpc
in_ns ip link add gw0 type veth peer name eth0 netns $guest
in_ns ip link set gw0 master $br up
in_guest ip link set eth0 address 52:54:00:17:00:01 up
cat >"$T/udhcpc.sh" <<EOF
#!/bin/sh
# udhcpc's hook: record what the server said, configure eth0 like a guest would
env | grep -E '^(ip|mask|router|dns)=' >"$T/lease.\$1"
case "\$1" in
bound|renew)
  ip addr add "\$ip/\$mask" dev "\$interface"
  for r in \$router; do ip route add default via "\$r" dev "\$interface"; done ;;
esac
EOF
chmod +x "$T/udhcpc.sh"
if in_guest timeout 60 busybox udhcpc -i eth0 -n -q -f -t 10 -T 1 -s "$T/udhcpc.sh" -x hostname:guest17 \
     >"$T/udhcpc" 2>&1; then pass; else fail "udhcpc got no lease: $(cat "$T/udhcpc")"; fi
expect_grep '^ip=192\.168\.73\.(1[0-4][0-9]|150)$' "$T/lease.bound"
expect_grep '^router=192\.168\.73\.1$' "$T/lease.bound"
expect_grep '^dns=192\.168\.73\.1$' "$T/lease.bound"
expect_grep '^mask=24$' "$T/lease.bound"
ip=$(sed -n 's/^ip=//p' "$T/lease.bound")
dns=$(sed -n 's/^dns=//p' "$T/lease.bound")
in_guest ip route show default >"$T/route"
expect_grep '^default via 192\.168\.73\.1 dev eth0' "$T/route"
if in_guest ping -c 1 -W 2 192.168.73.1 >/dev/null 2>&1; then pass; else fail "guest cannot ping the bridge"; fi
# DNS through the server DHCP named: the bridge's own name, which dnsmasq answers itself
if in_guest timeout 20 busybox nslookup $br "${dns:-none}" >"$T/dns" 2>&1; then pass; else fail "nslookup: $(cat "$T/dns")"; fi
expect_grep "^Name:[[:space:]]+$br\$" "$T/dns"
expect_grep '^Address: 192\.168\.73\.1$' "$T/dns"

# show: the dnsmasq and the lease, as root and without privileges
expect_rc 0 in_ns "$VTOOL" net show
expect_grep "^dhcp $br 192\\.168\\.73\\.100-192\\.168\\.73\\.150 pid $pid\$" "$T/out"
expect_grep "^lease $br ${ip//./\\.} 52:54:00:17:00:01 hostname guest17 expires [0-9]{4}-[0-9]{2}-[0-9]{2}T" "$T/out"
cp "$T/out" "$T/show.root"
expect_rc 0 in_ns setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$VTOOL" net show
expect_grep "^lease $br ${ip//./\\.} 52:54:00:17:00:01 hostname guest17 " "$T/out"
expect_grep '^nat unavailable: ' "$T/out"
expect_rc 0 in_ns "$VTOOL" net show --output=json
if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
b = [x for x in d["bridges"] if x["name"] == sys.argv[2]][0]["dhcp"]
assert b["range"] == "192.168.73.100-192.168.73.150" and b["pid"] == int(sys.argv[3]), b
(l,) = b["leases"]
assert l["ip"] == sys.argv[4] and l["mac"] == "52:54:00:17:00:01" and l["hostname"] == "guest17", l
assert l["expires"] > 0
' "$T/out" $br "$pid" "$ip"; then pass; else fail "net show JSON dhcp: $(cat "$T/out")"; fi

# idempotent: the running dnsmasq is kept; a changed range restarts it
expect_rc 0 in_ns "$VTOOL" net setup --bridge $br --addr 192.168.73.1/24 --dhcp 192.168.73.100-192.168.73.150
expect_grep '^already set up: nothing to do$' "$T/out"
if [ "$(cat /run/vtool/$br/dnsmasq.pid)" = "$pid" ]; then pass; else fail "dnsmasq replaced on a no-op setup"; fi
expect_rc 0 in_ns "$VTOOL" net setup --bridge $br --addr 192.168.73.1/24 --dhcp=192.168.73.100-192.168.73.160
expect_grep "^restarted dnsmasq on $br \\(pid [0-9]+\\): DHCP 192\\.168\\.73\\.100-192\\.168\\.73\\.160, DNS$" "$T/out"
expect_lines 1 "$T/out"
newpid=$(cat /run/vtool/$br/dnsmasq.pid)
if [ "$newpid" != "$pid" ] && ! tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null | grep -q dnsmasq; then pass
else fail "old dnsmasq $pid still there (new $newpid)"; fi
pid=$newpid

# the default range: the subnet's addresses above the bridge's
expect_rc 0 in_ns "$VTOOL" net setup --bridge $br2 --addr 192.168.74.1/24 --dhcp
expect_grep "^started dnsmasq on $br2 \\(pid [0-9]+\\): DHCP 192\\.168\\.74\\.2-192\\.168\\.74\\.254, DNS$" "$T/out"
expect_rc 0 in_ns "$VTOOL" net teardown --bridge $br2 --addr 192.168.74.1/24
expect_grep "^stopped dnsmasq on $br2 \\(pid [0-9]+\\)$" "$T/out"
if [ -e /run/vtool/$br2 ]; then fail "/run/vtool/$br2 left"; else pass; fi

# range errors: one line naming the range, nothing made
for bad in 192.168.74.100-192.168.75.5:"outside the host addresses of 192\\.168\\.74\\.1/24 \\(192\\.168\\.74\\.1-192\\.168\\.74\\.254\\)" \
           192.168.74.0-192.168.74.9:"outside the host addresses" \
           192.168.74.50-192.168.74.40:"192\\.168\\.74\\.50 comes after 192\\.168\\.74\\.40" \
           192.168.74.1-192.168.74.40:"it holds the bridge's own address" \
           nonsense:"expected FIRST-LAST"; do
  range=${bad%%:*}
  expect_rc 1 in_ns "$VTOOL" net setup --bridge $br2 --addr 192.168.74.1/24 --dhcp "$range"
  expect_grep "^vtool: ${range//./\\.}: invalid DHCP range: ${bad#*:}" "$T/err"
done
expect_rc 1 in_ns "$VTOOL" net setup --bridge $br2 --addr 192.168.74.1/31 --dhcp
expect_grep '^vtool: 192\.168\.74\.1/31: serve DHCP: the subnet has no address left for guests' "$T/err"
expect_rc 1 in_ns "$VTOOL" net setup --bridge $br2 --addr fd17::1/64 --dhcp
expect_grep '^vtool: fd17::1/64: serve DHCP: DHCP is served for an IPv4 bridge address only$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net setup --bridge $br2 --dhcp
expect_grep "needs --addr" "$T/err"
in_ns ip -o link show >"$T/links"
if grep -q $br2 "$T/links"; then fail "range errors left $br2"; else pass; fi

# dnsmasq cannot start (port 53 on the bridge's address is taken): the run is rolled
# back, line by line, and the error is dnsmasq's own reason
expect_rc 0 in_ns "$VTOOL" net setup --bridge $br3 --addr 192.168.75.1/24
ip netns exec $ns python3 -c 'import socket, time
s = socket.socket(); s.bind(("192.168.75.1", 53)); s.listen(); time.sleep(60)' </dev/null >/dev/null 2>&1 &
listener=$!
for _ in $(seq 50); do in_ns ss -H -lnt | grep -q '192.168.75.1:53' && break; sleep 0.1; done
expect_rc 1 in_ns "$VTOOL" net setup --bridge $br3 --addr 192.168.75.1/24 --tap vt17tap --dhcp
expect_grep "^vtool: $br3: start dnsmasq: failed to create listening socket for 192\\.168\\.75\\.1: Address already in use$" "$T/err"
printf '%s\n' "created tap vt17tap" "added vt17tap to bridge $br3" "set vt17tap up" "removed tap vt17tap" >"$T/want"
if cmp -s "$T/want" "$T/out"; then pass; else fail "rollback lines: $(diff "$T/want" "$T/out")"; fi
if [ -e /run/vtool/$br3 ]; then fail "/run/vtool/$br3 left by a failed start"; else pass; fi
expect_rc 1 in_ns ip link show vt17tap
kill $listener; wait $listener 2>/dev/null; listener=
expect_rc 0 in_ns "$VTOOL" net teardown --bridge $br3

# /run/vtool is shared by all namespaces: a bridge of the same name elsewhere gets no
# dnsmasq of its own, and its teardown leaves this one running
expect_rc 1 ip netns exec $other "$VTOOL" net setup --bridge $br --addr 192.168.76.1/24 --dhcp
expect_grep "^vtool: /run/vtool/$br: start dnsmasq: dnsmasq \\(pid $pid\\) serves a bridge of that name in another network namespace; left alone$" "$T/err"
expect_rc 0 ip netns exec $other "$VTOOL" net teardown --bridge $br
expect_grep "^vtool: warning: /run/vtool/$br: stop dnsmasq: dnsmasq \\(pid $pid\\) serves a bridge" "$T/err"
if [ "$(cat /run/vtool/$br/dnsmasq.pid 2>/dev/null)" = "$pid" ] && [ -e /proc/$pid ]; then pass
else fail "the other namespace's teardown touched $br's dnsmasq"; fi

# teardown (without --dhcp: the dnsmasq would outlive the bridge) stops it and removes
# its directory; a second teardown has nothing to do
expect_rc 0 in_ns "$VTOOL" net teardown --bridge $br --addr 192.168.73.1/24
printf '%s\n' "stopped dnsmasq on $br (pid $pid)" "deleted bridge $br" >"$T/want"
if cmp -s "$T/want" "$T/out"; then pass; else fail "teardown lines: $(diff "$T/want" "$T/out")"; fi
if tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null | grep -q dnsmasq; then fail "dnsmasq $pid still runs"; else pass; fi
if [ -e /run/vtool/$br ]; then fail "/run/vtool/$br left"; else pass; fi
expect_rc 0 in_ns "$VTOOL" net teardown --bridge $br --addr 192.168.73.1/24
expect_grep '^nothing to tear down$' "$T/out"
finish
