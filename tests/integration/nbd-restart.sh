#!/usr/bin/env bash
# The server goes away during a client's writes and comes back: the client (vtool's, with
# reconnect-delay, and qemu-io's) reconnects, sends again what was in flight, finishes,
# and the image is right and clean. SIGKILL on a raw image (acknowledged writes are in
# the page cache) and on a qcow2 served with --cache=writethrough (each write's metadata
# is durable before the reply); SIGTERM on a qcow2 with the default cache (the server
# hangs up, flushes and closes the image). Writes a killed writeback qcow2 server had
# acknowledged but not flushed would be lost, as with qemu-nbd: NBD promises durability
# only after FLUSH. Without reconnect-delay the client fails at once, with one line.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img qemu-io qemu-nbd python3
cd "$T"
head -c 200M /dev/urandom >src.raw
P=$(free_port)

# kill_busy PIDFILE SIGNAL IMAGE CLIENT_PID: once 16 MiB have reached the image, signal
# the server and wait for it to be gone; checks the client was still writing then.
kill_busy() {
  local spid; spid=$(cat "$1")
  for _ in $(seq 500); do
    [ "$(du -k "$3" | cut -f1)" -ge 16384 ] && break
    alive "$4" || break
    sleep 0.01
  done
  if alive "$4"; then pass; else fail "$3: the client finished before the kill"; fi
  kill -"$2" "$spid"
  for _ in $(seq 250); do alive "$spid" || break; sleep 0.02; done
}

# A killed server may leave leaked clusters (never corruption): qemu-img check exits 0
# or 3, with no errors.
check_clean() {
  local rc=0
  qemu-img check "$1" >chk.out 2>&1 || rc=$?
  if [ $rc -eq 0 ] || { [ $rc -eq 3 ] && ! grep -qiE 'error|corrupt' chk.out; }; then pass
  else fail "qemu-img check $1: exit $rc: $(grep -v Leaked chk.out | head -3 | tr '\n' '|')"; fi
}

run_case() { # FORMAT CACHE SIGNAL
  local f=$1 c=$2 sig=$3
  rm -f t.img
  qemu-img create -q -f "$f" t.img 200M
  vserve s1.pid -f "$f" --cache="$c" -t -p "$P" t.img
  "$VTOOL" img convert -n -O raw src.raw "nbd://127.0.0.1:$P/?reconnect-delay=30" \
    >conv.out 2>&1 &
  local cpid=$!
  kill_busy s1.pid "$sig" t.img $cpid
  sleep 0.5
  vserve s2.pid -f "$f" -t -p "$P" t.img
  if wait $cpid; then pass; else fail "$f/$c/$sig: client failed: $(cat conv.out)"; fi
  expect_rc 0 stop s2.pid
  if [ "$f" = qcow2 ] && [ "$sig" = TERM ]; then expect_rc 0 qemu-img check t.img
  elif [ "$f" = qcow2 ]; then check_clean t.img; fi
  expect_rc 0 qemu-img compare -f raw -F "$f" src.raw t.img
}
run_case raw writethrough KILL
run_case qcow2 writethrough KILL
run_case qcow2 writeback TERM

# qemu's client against a restarted vtool server.
qemu-img create -q -f qcow2 q.qcow2 64M
vserve q1.pid -f qcow2 -t -p "$P" q.qcow2
cmds=()
for i in $(seq 0 255); do cmds+=(-c "write -P $((i % 250 + 1)) $((i * 256))k 256k"); done
qemu-io --image-opts "driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port=$P,file.reconnect-delay=30" \
  "${cmds[@]}" >qio.out 2>&1 &
qpid=$!
kill_busy q1.pid TERM q.qcow2 $qpid
vserve q2.pid -f qcow2 -t -p "$P" q.qcow2
if wait $qpid && ! grep -q failed qio.out; then pass; else fail "qemu-io: $(grep -m2 failed qio.out)"; fi
expect_rc 0 stop q2.pid
expect_rc 0 qemu-img check q.qcow2
expect_rc 0 qemu-io -r -c 'read -P 1 0 256k' -c 'read -P 250 63744k 256k' q.qcow2

# vtool's client against a restarted qemu-nbd.
qemu-img create -q -f raw n.raw 200M
qserve n1.pid -f raw -t -p "$P" --cache=writethrough n.raw
"$VTOOL" img convert -n -O raw src.raw "nbd://127.0.0.1:$P/?reconnect-delay=30" >conv.out 2>&1 &
cpid=$!
kill_busy n1.pid KILL n.raw $cpid
sleep 0.5
qserve n2.pid -f raw -t -p "$P" n.raw
if wait $cpid; then pass; else fail "client vs qemu-nbd restart: $(cat conv.out)"; fi
expect_rc 0 stop n2.pid
expect_rc 0 cmp src.raw n.raw

# Without reconnect-delay, a lost server fails the command at once, in one line.
qemu-img create -q -f raw z.raw 200M
vserve z.pid -f raw --cache=writethrough -t -p "$P" z.raw
"$VTOOL" img convert -n -O raw src.raw "nbd://127.0.0.1:$P" >conv.out 2>&1 &
cpid=$!
kill_busy z.pid KILL z.raw $cpid
if wait $cpid; then fail "convert succeeded without a server"; else pass; fi
expect_grep 'connection to the NBD server lost' conv.out
expect_lines 1 conv.out
finish
