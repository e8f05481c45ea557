#!/usr/bin/env bash
# vtool net against iproute2 and nft as the oracle, inside network namespaces this test
# creates (never the host's): setup makes exactly the expected objects, a second setup
# changes nothing, teardown restores the namespace as it was, every error path leaves
# nothing behind, and masquerading really happens: a "guest" namespace behind the bridge
# pings an "uplink" namespace, which sees the bridge's uplink address as the source.
. "$(dirname "$0")/lib.sh"
need ip nft ping
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }

ns=vt17-t-$$
peer=vt17-p-$$
guest=vt17-g-$$
cleanup() {
  for n in $ns $peer $guest; do ip netns del $n 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
ip netns add $ns || { echo "SKIP: cannot create network namespaces"; exit 77; }
ip netns add $peer
ip netns add $guest
in_ns() { ip netns exec $ns "$@"; }
# The uplink: veth up0 (in $ns) <-> up1 (in $peer) 10.99.0.1/24 <-> 10.99.0.2/24
in_ns ip link set lo up
in_ns ip link add up0 type veth peer name up1 netns $peer
in_ns ip addr add 10.99.0.1/24 dev up0
in_ns ip link set up0 up
ip netns exec $peer ip addr add 10.99.0.2/24 dev up1
ip netns exec $peer ip link set up1 up
ip netns exec $peer ip link set lo up

# setup --help names the recipe it replaces and lists its nine steps, first to last
expect_rc 0 "$VTOOL" net setup --help
expect_grep '^The nine manual steps of the classic bridge \+ tap \+ NAT recipe' "$T/out"
grep -E '^  [1-9]\. ' "$T/out" | sed -E 's/^  ([1-9])\. ([a-z0-9]+ [^ ]+).*/\1 \2/' >"$T/steps"
printf '%s\n' "1 brctl addbr" "2 ip link" "3 ip addr" "4 tunctl -t" "5 brctl addif" "6 ip link" \
  "7 echo 1" "8 iptables -A" "9 iptables -t" >"$T/want"
if cmp -s "$T/want" "$T/steps"; then pass; else fail "setup --help steps: $(diff "$T/want" "$T/steps")"; fi
expect_grep '^  9\. iptables -t nat -A POSTROUTING .* -j MASQUERADE ' "$T/out"
if grep -qi seed "$T/out"; then fail "setup --help still speaks of the seed"; else pass; fi
for c in setup teardown show bridge tap addr nat; do  # every option in --help, an example
  expect_rc 0 "$VTOOL" net $c --help
  expect_grep '^Example:$' "$T/out"
done
for o in --bridge --addr --tap --owner --group --nat --forward; do
  expect_rc 0 "$VTOOL" net setup --help; expect_grep "^  $o " "$T/out"
done

snapshot() { # the namespace's state as the oracle sees it
  { in_ns ip -o link show | sed 's/^[0-9]*: //; s/ link-netns [^ ]*//' | sort
    in_ns ip -o addr show | awk '{print $2, $3, $4}' | sort
    in_ns nft list ruleset
    in_ns cat /proc/sys/net/ipv4/ip_forward; } >"$1"
}
snapshot "$T/before"

opts=(--bridge br0 --addr 192.168.57.1/24 --tap tap0 --nat up0)
expect_rc 0 in_ns "$VTOOL" net setup "${opts[@]}"
expect_grep '^created bridge br0$' "$T/out"
expect_grep '^masquerading 192.168.57.0/24 out of up0 \(ip_forward on\)$' "$T/out"
in_ns ip -d link show br0 >"$T/br0"
expect_grep 'bridge forward_delay' "$T/br0"
expect_grep 'UP' "$T/br0"
in_ns ip -d link show tap0 >"$T/tap0"
expect_grep 'master br0' "$T/tap0"
expect_grep 'tun type tap' "$T/tap0"
expect_grep 'persist on' "$T/tap0"
in_ns bridge link show >"$T/ports"
expect_grep 'tap0.*master br0' "$T/ports"
in_ns ip -o -4 addr show dev br0 >"$T/addr"
expect_grep 'inet 192\.168\.57\.1/24 brd 192\.168\.57\.255' "$T/addr"
in_ns nft list ruleset >"$T/rules"
expect_grep '^table ip vtool \{$' "$T/rules"
expect_grep 'type nat hook postrouting priority srcnat; policy accept;' "$T/rules"
expect_grep 'ip saddr 192\.168\.57\.0/24 oifname "up0" masquerade' "$T/rules"
if [ "$(in_ns cat /proc/sys/net/ipv4/ip_forward)" = 1 ]; then pass; else fail "ip_forward not on"; fi

# idempotent: a second run changes nothing and says so
snapshot "$T/after1"
expect_rc 0 in_ns "$VTOOL" net setup "${opts[@]}"
expect_grep '^already set up: nothing to do$' "$T/out"
snapshot "$T/after2"
if cmp -s "$T/after1" "$T/after2"; then pass; else fail "second setup changed: $(diff "$T/after1" "$T/after2")"; fi

# show: human and JSON agree with the oracle
expect_rc 0 in_ns "$VTOOL" net show
expect_grep '^bridge br0 up mtu [0-9]+ [0-9a-f:]+ port tap0 addr 192\.168\.57\.1/24' "$T/out"
expect_grep '^tap tap0 .* bridge br0$' "$T/out"
expect_grep '^nat 192\.168\.57\.0/24 out up0$' "$T/out"
expect_rc 0 in_ns "$VTOOL" net show --output=json
if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
b = [x for x in d["bridges"] if x["name"] == "br0"][0]
assert b["ports"] == ["tap0"] and "192.168.57.1/24" in b["addresses"] and b["up"]
assert [t["bridge"] for t in d["taps"] if t["name"] == "tap0"] == ["br0"]
assert d["nat"] == [{"subnet": "192.168.57.0/24", "out": "up0", "forward": False}]
' "$T/out"; then pass; else fail "net show JSON: $(cat "$T/out")"; fi

# show as an unprivileged user: links and addresses (readable by anyone) are shown, the
# NAT part (nftables needs CAP_NET_ADMIN) is marked unavailable, and it still exits 0
if command -v setpriv >/dev/null; then
  nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all)
  expect_rc 0 in_ns "${nobody[@]}" "$VTOOL" net show
  expect_grep '^bridge br0 up mtu [0-9]+ [0-9a-f:]+ port tap0 addr 192\.168\.57\.1/24' "$T/out"
  expect_grep '^tap tap0 .* bridge br0$' "$T/out"
  expect_grep '^nat unavailable: reading nftables needs root or CAP_NET_ADMIN$' "$T/out"
  expect_lines 0 "$T/err"
  expect_rc 0 in_ns "${nobody[@]}" "$VTOOL" net show --output=json
  if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
b = [x for x in d["bridges"] if x["name"] == "br0"][0]
assert b["ports"] == ["tap0"] and "192.168.57.1/24" in b["addresses"]
assert [t["name"] for t in d["taps"]] == ["tap0"]
assert d["nat"] is None and d["forward_drop"] is None
assert "CAP_NET_ADMIN" in d["nat_unavailable"]
' "$T/out"; then pass; else fail "net show JSON as nobody: $(cat "$T/out")"; fi
fi

# masquerading, end to end without a VM: a guest namespace joined to the bridge by a
# veth pings the uplink peer; the peer sees the uplink address 10.99.0.1 as the source.
in_ns ip link add gw0 type veth peer name eth0 netns $guest
in_ns ip link set gw0 master br0
in_ns ip link set gw0 up
ip netns exec $guest ip addr add 192.168.57.10/24 dev eth0
ip netns exec $guest ip link set eth0 up
ip netns exec $guest ip route add default via 192.168.57.1
ip netns exec $peer nft add table ip probe
ip netns exec $peer nft add chain ip probe in '{ type filter hook input priority 0; }'
ip netns exec $peer nft add rule ip probe in ip saddr 10.99.0.1 icmp type echo-request counter
ip netns exec $peer nft add rule ip probe in ip saddr 192.168.57.10 counter
if ip netns exec $guest ping -c 2 -W 2 10.99.0.2 >"$T/ping" 2>&1; then pass; else fail "guest cannot reach the uplink peer: $(cat "$T/ping")"; fi
ip netns exec $peer nft list chain ip probe in >"$T/probe"
expect_grep 'ip saddr 10\.99\.0\.1 icmp type echo-request counter packets [1-9]' "$T/probe"
expect_grep 'ip saddr 192\.168\.57\.10 counter packets 0 ' "$T/probe"
# a forward hook dropping by policy in another table (as Docker's) blocks guests whatever
# vtool accepts (every base chain on a hook must accept): setup and show name the table
# and chain and say what to do; doing what they say lets the guest through again
in_ns nft add table ip vt17fw
in_ns nft add chain ip vt17fw gate '{ type filter hook forward priority 10; policy drop; }'
expect_rc 0 in_ns "$VTOOL" net setup "${opts[@]}"
expect_grep '^already set up: nothing to do$' "$T/out"
expect_grep '^vtool: warning: table ip vt17fw, chain gate: forward hook with policy drop: ' "$T/err"
if ip netns exec $guest ping -c 1 -W 1 10.99.0.2 >/dev/null 2>&1; then
  fail "a ping went through a dropping forward chain"; else pass; fi
expect_rc 0 in_ns "$VTOOL" net show
expect_grep '^forward-drop ip vt17fw gate$' "$T/out"
expect_grep '^vtool: warning: table ip vt17fw, chain gate: .* nft insert rule ip vt17fw gate iifname "br0" accept' "$T/err"
sed -n 's/.*through in that chain: //p' "$T/err" | sed 's/ && /\n/g' >"$T/advice"
expect_lines 2 "$T/advice"
while read -r cmd; do eval "in_ns $cmd"; done <"$T/advice"
if ip netns exec $guest ping -c 1 -W 2 10.99.0.2 >"$T/ping" 2>&1; then pass; else fail "the advice did not help: $(cat "$T/ping")"; fi
in_ns nft list chain ip vt17fw gate >"$T/fwd"
expect_grep 'oifname "br0" ct state established,related accept' "$T/fwd"
expect_rc 0 in_ns "$VTOOL" net show --output=json
if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["forward_drop"] == [{"family": "ip", "table": "vt17fw", "chain": "gate"}], d["forward_drop"]
' "$T/out"; then pass; else fail "net show JSON forward_drop: $(cat "$T/out")"; fi
in_ns nft delete table ip vt17fw
# Docker's shape (iptables-nft): table ip filter, FORWARD policy drop, DOCKER-USER
in_ns nft add table ip filter
in_ns nft add chain ip filter FORWARD '{ type filter hook forward priority 0; policy drop; }'
in_ns nft add chain ip filter DOCKER-USER
in_ns nft add table inet vt17other
in_ns nft add chain inet vt17other gate '{ type filter hook forward priority 0; policy drop; }'
in_ns nft add table ip6 vt17v6
in_ns nft add chain ip6 vt17v6 gate '{ type filter hook forward priority 0; policy drop; }'
expect_rc 0 in_ns "$VTOOL" net setup "${opts[@]}"
expect_grep '^vtool: warning: table ip filter, chain FORWARD: forward hook with policy drop \(Docker.s\): .* iptables -I DOCKER-USER -i br0 -j ACCEPT && iptables -I DOCKER-USER -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT$' "$T/err"
expect_grep '^vtool: warning: table inet vt17other, chain gate: ' "$T/err"
expect_lines 2 "$T/err"   # not the ip6 one: it never sees IPv4
in_ns nft delete table ip filter
in_ns nft delete table inet vt17other
in_ns nft delete table ip6 vt17v6
expect_rc 0 in_ns "$VTOOL" net setup "${opts[@]}"
expect_lines 0 "$T/err"
in_ns ip link del gw0

# teardown: exactly back to the start; a second teardown has nothing to do
expect_rc 0 in_ns "$VTOOL" net teardown "${opts[@]}"
expect_grep '^deleted bridge br0$' "$T/out"
snapshot "$T/after"
if cmp -s "$T/before" "$T/after"; then pass; else fail "teardown left: $(diff "$T/before" "$T/after")"; fi
expect_rc 0 in_ns "$VTOOL" net teardown "${opts[@]}"
expect_grep '^nothing to tear down$' "$T/out"

# the single-step commands
expect_rc 0 in_ns "$VTOOL" net bridge add brx --up
expect_rc 0 in_ns "$VTOOL" net tap add tapx --bridge brx
expect_rc 0 in_ns "$VTOOL" net bridge list
expect_grep '^brx up tapx$' "$T/out"
expect_rc 0 in_ns "$VTOOL" net bridge set brx --mtu 1400 --mac 52:54:00:12:34:56
in_ns ip link show brx >"$T/brx"
expect_grep 'mtu 1400 ' "$T/brx"
expect_grep 'link/ether 52:54:00:12:34:56' "$T/brx"
expect_rc 0 in_ns "$VTOOL" net addr add brx fd00::1/64
in_ns ip -6 addr show dev brx >"$T/brx6"
expect_grep 'inet6 fd00::1/64' "$T/brx6"
expect_rc 0 in_ns "$VTOOL" net addr del brx fd00::1/64
expect_rc 0 in_ns "$VTOOL" net tap list
expect_grep '^tapx up$' "$T/out"
# tap add without a name takes the first free tapN and prints it, as tunctl -b
in_ns ip link add tap0 type bridge   # a tapN name held by something else is skipped
expect_rc 0 in_ns "$VTOOL" net tap add
expect_grep '^tap1$' "$T/out"
expect_lines 1 "$T/out"
in_ns ip -d link show tap1 >"$T/tap1"
expect_grep 'tun type tap .*persist on' "$T/tap1"
expect_rc 0 in_ns "$VTOOL" net tap add --bridge brx
expect_grep '^tap2$' "$T/out"
in_ns ip -o link show tap2 >"$T/tap2"
expect_grep 'master brx .*state|master brx' "$T/tap2"
expect_rc 1 in_ns "$VTOOL" net tap add --bridge nosuchbr
expect_grep '^vtool: nosuchbr: add port: no such bridge$' "$T/err"
expect_lines 0 "$T/out"
expect_rc 1 in_ns ip link show tap3
expect_rc 1 in_ns "$VTOOL" net tap add 'tap%d'
expect_grep "^vtool: tap%d: create tap: '%' is not allowed" "$T/err"
expect_rc 1 in_ns "$VTOOL" net bridge add 'br%d'
expect_grep "^vtool: br%d: create bridge: '%' is not allowed" "$T/err"
expect_rc 1 in_ns "$VTOOL" net tap del
expect_grep "'del' needs a tap name" "$T/err"
for t in tap1 tap2; do expect_rc 0 in_ns "$VTOOL" net tap del $t; done
in_ns ip link del tap0
# tap set: the seed's `ip link set tap0 up|down` for taps, checked to be one
expect_rc 0 in_ns "$VTOOL" net tap set tapx --down
in_ns ip -o link show tapx >"$T/tapx"
if grep -q '[<,]UP[,>]' "$T/tapx"; then fail "tap set --down: $(cat "$T/tapx")"; else pass; fi
expect_rc 0 in_ns "$VTOOL" net tap set tapx --up --mtu 1400 --mac 52:54:00:aa:bb:cc
in_ns ip -o link show tapx >"$T/tapx"
expect_grep '[<,]UP[,>].* mtu 1400 .*link/ether 52:54:00:aa:bb:cc' "$T/tapx"
expect_rc 1 in_ns "$VTOOL" net tap set up0 --up
expect_grep '^vtool: up0: set tap: is not a tap \(for any link: vtool net bridge set up0\)$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net tap set nosuch0 --up
expect_grep '^vtool: nosuch0: set tap: no such tap$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net tap set tapx
expect_grep "'set' needs --up, --down, --mtu or --mac" "$T/err"
expect_rc 1 in_ns "$VTOOL" net tap set tapx --mtu 1400x
expect_grep "invalid MTU '1400x'" "$T/err"
expect_rc 0 in_ns "$VTOOL" net tap add tapy --up
in_ns ip -o link show tapy >"$T/tapy"
expect_grep '[<,]UP[,>]' "$T/tapy"
expect_rc 0 in_ns "$VTOOL" net tap del tapy
# bridge set takes any link, as documented
expect_rc 0 in_ns "$VTOOL" net bridge set tapx --down
in_ns ip -o link show tapx >"$T/tapx"
if grep -q '[<,]UP[,>]' "$T/tapx"; then fail "bridge set --down on a tap: $(cat "$T/tapx")"; else pass; fi
expect_rc 0 "$VTOOL" net bridge --help
expect_grep 'LINK may be any link' "$T/out"
expect_rc 0 "$VTOOL" net tap --help
expect_grep '^  vtool net tap set TAP \[--up\|--down\]' "$T/out"
expect_rc 0 in_ns "$VTOOL" net bridge delif brx tapx
expect_rc 0 in_ns "$VTOOL" net tap del tapx
expect_rc 0 in_ns "$VTOOL" net bridge del brx
# NAT next to somebody else's rules: theirs stay
in_ns nft add table ip theirs
in_ns nft add chain ip theirs post '{ type nat hook postrouting priority 50; }'
in_ns nft add rule ip theirs post oifname up0 counter
expect_rc 0 in_ns "$VTOOL" net nat add --subnet 10.5.0.0/16 --out up0 --forward
expect_rc 0 in_ns "$VTOOL" net nat list
expect_grep '^10\.5\.0\.0/16 out up0 forward$' "$T/out"
in_ns nft list chain ip vtool forward >"$T/fwd"
expect_grep 'ip saddr 10\.5\.0\.0/16 accept' "$T/fwd"
expect_grep 'iifname "up0" ct state established,related accept' "$T/fwd"
expect_rc 0 in_ns "$VTOOL" net nat add --subnet 10.6.0.0/16 --out up0 --bridge up0 --forward
in_ns nft list chain ip vtool forward >"$T/fwd"
expect_grep 'iifname "up0" accept' "$T/fwd"
expect_grep 'oifname "up0" ct state established,related accept' "$T/fwd"
expect_rc 0 in_ns "$VTOOL" net nat del --subnet 10.6.0.0/16 --out up0
expect_rc 0 in_ns "$VTOOL" net nat del --subnet 10.5.0.0/16 --out up0
in_ns nft list ruleset >"$T/rules"
if grep -q vtool "$T/rules"; then fail "vtool's table survived nat del"; else pass; fi
expect_grep 'oifname "up0" counter' "$T/rules"
in_ns nft delete table ip theirs
snapshot "$T/after3"
if cmp -s "$T/before" "$T/after3"; then pass; else fail "single steps left: $(diff "$T/before" "$T/after3")"; fi

# errors: one line naming the thing, non-zero exit, nothing half-made
expect_rc 1 in_ns "$VTOOL" net setup --bridge up0 --addr 10.1.0.1/24
expect_grep '^vtool: up0: set up bridge: the name is taken by a veth interface that is not a bridge$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1/33
expect_grep '^vtool: 10\.1\.0\.1/33: invalid address' "$T/err"
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1/24 --tap up0
expect_grep '^vtool: up0: set up tap: the name is taken by an interface that is not a tap$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1/24 --tap tap1 --nat nosuch0
expect_grep '^vtool: nosuch0: add NAT: no such interface$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net bridge addif nosuchbr up0
expect_grep '^vtool: nosuchbr: add port: no such bridge$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net nat del --subnet 10.9.0.0/16 --out up0
expect_grep '^vtool: up0: delete NAT: vtool has no such NAT rule$' "$T/err"
# a prefix is required (ip would silently take /32); a /32 NAT subnet holds no guest
expect_rc 1 in_ns "$VTOOL" net addr add up0 192.168.57.1
expect_grep '^vtool: 192\.168\.57\.1: invalid address: no prefix length: give ADDRESS/PREFIX, such as 192\.168\.57\.1/24$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net addr del up0 fd00::1
expect_grep '^vtool: fd00::1: invalid address: no prefix length: .* fd00::1/64$' "$T/err"
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1
expect_grep '^vtool: 10\.1\.0\.1: invalid address: no prefix length' "$T/err"
expect_rc 1 in_ns "$VTOOL" net nat add --subnet 10.1.0.0 --out up0
expect_grep '^vtool: 10\.1\.0\.0: invalid address: no prefix length' "$T/err"
expect_rc 0 in_ns "$VTOOL" net setup --bridge br3 --addr 192.168.59.1/32 --nat up0
expect_grep '^vtool: warning: NAT subnet 192\.168\.59\.1/32 holds no address but br3.s own: no guest can be in it' "$T/err"
expect_rc 0 in_ns "$VTOOL" net teardown --bridge br3 --addr 192.168.59.1/32 --nat up0
expect_rc 0 in_ns "$VTOOL" net setup --bridge br3 --addr 192.168.59.1/31 --nat up0
expect_lines 0 "$T/err"
expect_rc 0 in_ns "$VTOOL" net nat add --subnet 192.168.59.1/32 --out up0 --bridge br3
expect_grep '^vtool: warning: NAT subnet 192\.168\.59\.1/32 holds no address but br3.s own' "$T/err"
expect_rc 0 in_ns "$VTOOL" net nat del --subnet 192.168.59.1/32 --out up0
expect_rc 0 in_ns "$VTOOL" net nat add --subnet 192.168.59.0/32 --out up0 --bridge br3
expect_lines 0 "$T/err"   # .0 is not br3's: a host can be there
expect_rc 0 in_ns "$VTOOL" net nat del --subnet 192.168.59.0/32 --out up0
in_ns ip addr add 192.168.59.0/31 dev br3
expect_rc 0 in_ns "$VTOOL" net nat add --subnet 192.168.59.0/31 --out up0 --bridge br3
expect_grep '^vtool: warning: NAT subnet 192\.168\.59\.0/31 holds no address but br3.s own' "$T/err"
expect_rc 0 in_ns "$VTOOL" net nat del --subnet 192.168.59.0/31 --out up0
expect_rc 0 in_ns "$VTOOL" net teardown --bridge br3 --addr 192.168.59.1/31 --nat up0
# a failed setup takes back what it did and says so, line for line
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1/24 --tap up0
printf '%s\n' "created bridge br1" "set br1 up" "added address 10.1.0.1/24 to br1" \
  "removed address 10.1.0.1/24 from br1" "removed bridge br1" >"$T/want"
if cmp -s "$T/want" "$T/out"; then pass; else fail "rollback lines: $(diff "$T/want" "$T/out")"; fi
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1/24 --tap tap1 --nat nosuch0
printf '%s\n' "created bridge br1" "set br1 up" "added address 10.1.0.1/24 to br1" \
  "created tap tap1" "added tap1 to bridge br1" "set tap1 up" \
  "removed tap tap1" "removed address 10.1.0.1/24 from br1" "removed bridge br1" >"$T/want"
if cmp -s "$T/want" "$T/out"; then pass; else fail "rollback lines: $(diff "$T/want" "$T/out")"; fi
# things that were there before the run are put back as they were, not removed
in_ns ip link add br1 type bridge
in_ns ip tuntap add dev tap1 mode tap
expect_rc 1 in_ns "$VTOOL" net setup --bridge br1 --addr 10.1.0.1/24 --tap tap1 --nat nosuch0
printf '%s\n' "set br1 up" "added address 10.1.0.1/24 to br1" "added tap1 to bridge br1" "set tap1 up" \
  "set tap1 down" "removed tap1 from bridge br1" "removed address 10.1.0.1/24 from br1" "set br1 down" >"$T/want"
if cmp -s "$T/want" "$T/out"; then pass; else fail "rollback lines: $(diff "$T/want" "$T/out")"; fi
in_ns ip -o link show tap1 >"$T/tap1"
if grep -q 'master\|,UP' "$T/tap1"; then fail "tap1 not put back: $(cat "$T/tap1")"; else pass; fi
in_ns ip link del tap1
in_ns ip link del br1
snapshot "$T/after4"
if cmp -s "$T/before" "$T/after4"; then pass; else fail "failed commands left: $(diff "$T/before" "$T/after4")"; fi
if command -v setpriv >/dev/null; then
  expect_rc 1 in_ns setpriv --reuid=65534 --regid=65534 --clear-groups "$VTOOL" net bridge add br2
  expect_grep '^vtool: br2: create bridge: Operation not permitted \(needs root or CAP_NET_ADMIN\)$' "$T/err"
fi

# one name rule for every name option of every command, the kernel's and ip's: 1-15
# bytes, no '/', no whitespace, not '.' or '..' (ip is the oracle: it refuses the same)
long=thisnameiswaytoolong0
for bad in "$long" . .. a/b "a b" "a$(printf '\t')b" ""; do
  if in_ns ip link add "$bad" type bridge 2>/dev/null; then
    in_ns ip link del "$bad"; fail "ip accepted '$bad': the oracle disagrees"; fi
  for cmd in "setup --bridge @" "setup --bridge brq --tap @" "setup --bridge brq --addr 10.1.0.1/24 --nat @" \
             "teardown --bridge @" "bridge add @" "bridge del @" "bridge set @ --up" "bridge addif brq @" \
             "bridge addif @ up0" "tap add @" "tap del @" "tap add tapq --bridge @" \
             "addr add @ 10.1.0.1/24" "nat add --subnet 10.1.0.0/24 --out @" \
             "nat add --subnet 10.1.0.0/24 --out up0 --bridge @"; do
    read -ra words <<<"$cmd"
    args=(); for w in "${words[@]}"; do [ "$w" = @ ] && args+=("$bad") || args+=("$w"); done
    expect_rc 1 in_ns "$VTOOL" net "${args[@]}"
    expect_grep '^vtool: .*: invalid interface name: ' "$T/err"
  done
done
expect_rc 1 in_ns "$VTOOL" net setup --bridge "$long" --addr 10.1.0.1/24
expect_grep "^vtool: $long: invalid interface name: 21 bytes long, at most 15$" "$T/err"
expect_rc 1 in_ns "$VTOOL" net bridge add ..
expect_grep "^vtool: \.\.: invalid interface name: '\.' and '\.\.' are not allowed$" "$T/err"
expect_rc 1 in_ns "$VTOOL" net tap add "a b"
expect_grep "^vtool: a b: invalid interface name: contains whitespace$" "$T/err"
snapshot "$T/after5"
if cmp -s "$T/before" "$T/after5"; then pass; else fail "bad names left: $(diff "$T/before" "$T/after5")"; fi
# 15 bytes is fine, as for ip
expect_rc 0 in_ns ip link add thisnameis15byt type bridge
expect_rc 0 in_ns ip link del thisnameis15byt
expect_rc 0 in_ns "$VTOOL" net setup --bridge thisnameis15byt
expect_rc 0 in_ns ip link show thisnameis15byt
expect_rc 0 in_ns "$VTOOL" net teardown --bridge thisnameis15byt
finish
