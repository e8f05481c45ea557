#!/usr/bin/env bash
# vtool run as a managed process: QMP and HMP (qmp-client.py plays the same scenarios
# against vtool and against qemu-system-x86_64: every command, the events in order,
# stop really stops the guest, system_powerdown reaches tguest's ACPI power-button
# handler, bad input, many and slow clients), then what only vtool's side needs: every
# way to attach a monitor (unix, tcp, -chardev/-mon, stdio, C-a c, wait=on, pretty),
# socat as a client, the option errors, stop/cont while the guest does disk I/O, and
# how fast a daemon ends on SIGTERM.
. "$(dirname "$0")/lib.sh"
: "${TGUEST:?}" "${VTOOL_SRC:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }
need python3 socat
CLIENT="$VTOOL_SRC/tests/integration/qmp-client.py"

# client RESULT-NAME BINARY...: run the scenarios; fold its tally into ours.
client() {
  local name=$1; shift
  mkdir -p "$T/$name"
  timeout 600 python3 "$CLIENT" "$*" "$TGUEST" "$T/$name" >"$T/$name.log" 2>&1
  local rc=$?
  local n; n=$(sed -n 's/^\([0-9]*\) checks passed.*/\1/p' "$T/$name.log")
  checks=$((checks + ${n:-0}))
  if [ $rc -ne 0 ]; then fail "$name: $(grep -v 'checks passed' "$T/$name.log" | head -20)"; fi
}
# qemu's side (the reference: it does not depend on vtool's build, so the sanitizer build
# skips it) runs in the background while vtool's own checks below go on.
qemu_pid=
if command -v qemu-system-x86_64 >/dev/null && [ -z "${VTOOL_SANITIZED:-}" ]; then
  mkdir -p "$T/qemu"
  timeout 300 python3 "$CLIENT" qemu-system-x86_64 "$TGUEST" "$T/qemu" >"$T/qemu.log" 2>&1 &
  qemu_pid=$!
fi
client vtool "$VTOOL" run

TG=(-kernel "$TGUEST" -device isa-debug-exit,iobase=0x501,iosize=2)
qmp() { # SOCKET JSON...: send each message, print every line the monitor answers
  local sock=$1; shift
  { for m in "$@"; do printf '%s\n' "$m"; done; sleep 0.5; } |
    timeout 10 socat -t 2 - "$sock" | tr -d '\r'
}
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }
CAPS='{"execute":"qmp_capabilities"}'
STATUS='{"execute":"query-status"}'
QUIT='{"execute":"quit"}'

# socat, as the issue's suggested client: two messages in one line, then quit
"$VTOOL" run "${TG[@]}" -append "test=count" -serial none -qmp "unix:$T/s.sock,server=on,wait=off" &
vm=$!
wait_sock "$T/s.sock"
printf '%s%s%s\n' "$CAPS" "$STATUS" "$QUIT" | timeout 10 socat -t 3 - "UNIX-CONNECT:$T/s.sock" |
  tr -d '\r' >"$T/socat.out"
rc=0; wait $vm || rc=$?
expect_grep '"status": "running"' "$T/socat.out"
expect_grep '"event": "SHUTDOWN", "data": \{"guest": false, "reason": "host-qmp-quit"\}' "$T/socat.out"
[ $rc -eq 0 ] && pass || fail "quit through socat: exit $rc"
[ ! -e "$T/s.sock" ] && pass || fail "the socket is left behind after exit"

# tcp, and -chardev socket + -mon mode=control, and -qmp-pretty
port=$((20000 + $$ % 20000))
"$VTOOL" run "${TG[@]}" -append "test=count" -serial none \
  -qmp "tcp:127.0.0.1:$port,server=on,wait=off" \
  -chardev "socket,id=m0,path=$T/m.sock,server=on,wait=off" -mon chardev=m0,mode=control \
  -qmp-pretty "unix:$T/p.sock,server=on,wait=off" &
vm=$!
wait_sock "$T/p.sock"
for _ in $(seq 50); do qmp "TCP:127.0.0.1:$port" "$CAPS" "$STATUS" >"$T/tcp.out" 2>/dev/null
  grep -q running "$T/tcp.out" && break; sleep 0.1; done
expect_grep '"running": true' "$T/tcp.out"
qmp "UNIX-CONNECT:$T/m.sock" "$CAPS" "$STATUS" >"$T/mon.out"
expect_grep '"running": true' "$T/mon.out"
qmp "UNIX-CONNECT:$T/p.sock" "$CAPS" "$STATUS" >"$T/pretty.out"
expect_grep '^        "running": true,?$' "$T/pretty.out"
qmp "UNIX-CONNECT:$T/m.sock" "$CAPS" "$QUIT" >/dev/null
rc=0; wait $vm || rc=$?
[ $rc -eq 0 ] && pass || fail "tcp/-mon/-qmp-pretty run: exit $rc"

# wait=on (qemu's default for a server): nothing runs until a client connects
"$VTOOL" run "${TG[@]}" -append "test=count" -serial "file:$T/w.out" \
  -qmp "unix:$T/w.sock,server" 2>"$T/w.err" &
vm=$!
wait_sock "$T/w.sock"; sleep 0.5
[ ! -s "$T/w.out" ] && pass || fail "wait=on: the guest ran before a client connected"
expect_grep "waiting for a monitor client on unix:$T/w.sock" "$T/w.err"
qmp "UNIX-CONNECT:$T/w.sock" "$CAPS" "$STATUS" >"$T/w.qmp"
expect_grep '"running": true' "$T/w.qmp"
for _ in $(seq 100); do grep -q '^TG-START' "$T/w.out" && break; sleep 0.05; done
expect_grep '^TG-START' "$T/w.out"
qmp "UNIX-CONNECT:$T/w.sock" "$CAPS" "$QUIT" >/dev/null
wait $vm

# HMP and QMP on stdio
printf 'info status\nstop\ninfo status\nquit\n' |
  timeout 20 "$VTOOL" run "${TG[@]}" -append "test=count" -serial none -monitor stdio >"$T/hmp.out"
rc=$?
tr -d '\r' <"$T/hmp.out" >"$T/hmp.txt"
expect_grep '^vtool [0-9.]+ monitor - type .help. for more information$' "$T/hmp.txt"
expect_grep '^\(qemu\) VM status: running$' "$T/hmp.txt"
expect_grep '^(\(qemu\) )+VM status: paused$' "$T/hmp.txt"   # stop prints nothing
[ $rc -eq 0 ] && pass || fail "-monitor stdio: quit: exit $rc"
# info vnc: qemu's lines (its node names aside), compared with qemu-system-x86_64's own.
vdisp=$(python3 -c 'import socket
for n in range(40, 99):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 5900 + n)); print(n); break
    except OSError: pass
    finally: s.close()')
{ sleep 1; printf 'info vnc\n'; sleep 0.5; printf 'quit\n'; } |
  timeout 20 "$VTOOL" run "${TG[@]}" -append "test=count" -serial none -vnc "127.0.0.1:$vdisp" \
    -monitor stdio 2>/dev/null | tr -d '\r' | sed -n 's/^(qemu) //; /^default:/,/Auth/p' >"$T/vinfo.txt"
if command -v qemu-system-x86_64 >/dev/null; then
  { sleep 1; printf 'info vnc\n'; sleep 0.5; printf 'quit\n'; } |
    timeout 20 qemu-system-x86_64 -machine none -display none -vnc "127.0.0.1:$vdisp" \
      -monitor stdio 2>/dev/null | tr -d '\r' | sed 's/\x1b\[[0-9]*[A-Z]//g' |
    sed -n 's/^.*(qemu) .*info vnc$//; /^default:/,/Auth/p' >"$T/qinfo.txt"
  cmp -s "$T/vinfo.txt" "$T/qinfo.txt" && pass \
    || fail "info vnc: '$(cat "$T/vinfo.txt")' vs qemu '$(cat "$T/qinfo.txt")'"
fi
expect_grep "^  Server: 127.0.0.1:$((5900 + vdisp)) \(ipv4\)$" "$T/vinfo.txt"
printf '%s\n' "$CAPS" "$STATUS" "$QUIT" |
  timeout 20 "$VTOOL" run "${TG[@]}" -append "test=count" -serial none -qmp stdio |
  tr -d '\r' >"$T/qstdio.out"
expect_grep '^\{"QMP": ' "$T/qstdio.out"
expect_grep '"status": "running"' "$T/qstdio.out"

# C-a c: the HMP behind -nographic's serial console, and back
{ sleep 1; printf '\001cinfo status\r'; sleep 0.5; printf 'stop\r'; sleep 0.3
  printf 'info status\r\001c'; sleep 0.5; printf '\001cquit\r'; sleep 2; } |
  timeout 20 "$VTOOL" run "${TG[@]}" -append "test=count" -nographic >"$T/mux.out" 2>&1
rc=$?
tr -d '\r' <"$T/mux.out" >"$T/mux.txt"
expect_grep '^TG-COUNT 0$' "$T/mux.txt"
expect_grep 'monitor - type .help. for more information' "$T/mux.txt"
expect_grep 'VM status: running' "$T/mux.txt"
expect_grep 'VM status: paused' "$T/mux.txt"
[ $rc -eq 0 ] && pass || fail "C-a c, quit: exit $rc: $(tail -c 300 "$T/mux.txt")"
# -serial mon:stdio does the same; -monitor none takes the monitor away
{ sleep 1; printf '\001cquit\r'; sleep 2; } |
  timeout 20 "$VTOOL" run "${TG[@]}" -append "test=count" -serial mon:stdio >/dev/null 2>&1
[ $? -eq 0 ] && pass || fail "-serial mon:stdio: C-a c quit"
{ sleep 1; printf '\001cquit\r'; sleep 1; printf '\001x'; } |
  timeout 20 "$VTOOL" run "${TG[@]}" -append "test=count" -nographic -monitor none >"$T/nomon.out" 2>&1
grep -q 'monitor - type' "$T/nomon.out" && fail "-monitor none still has a C-a c monitor" || pass

# query-vnc and screendump with a VNC server running (the picture comes from its thread)
"$VTOOL" run "${TG[@]}" -append "test=count" -serial none -vnc "unix:$T/v.sock" \
  -qmp "unix:$T/vq.sock,server=on,wait=off" 2>/dev/null &
vm=$!
wait_sock "$T/vq.sock"
qmp "UNIX-CONNECT:$T/vq.sock" "$CAPS" '{"execute":"query-vnc"}' \
  "{\"execute\":\"screendump\",\"arguments\":{\"filename\":\"$T/vshot.ppm\"}}" "$QUIT" >"$T/vnc.out"
wait $vm
expect_grep "\"return\": \{\"enabled\": true, \"host\": \"$T/v.sock\", \"service\": \"\", \"family\": \"unix\", \"auth\": \"none\", \"clients\": \[\]\}" "$T/vnc.out"
head -c 3 "$T/vshot.ppm" 2>/dev/null | grep -q P6 && pass || fail "screendump through the VNC thread: $(cat "$T/vnc.out")"

# option errors
check_err() {
  local pattern=$1; shift
  local rc=0
  timeout 20 "$VTOOL" run "${TG[@]}" -append test=hello "$@" >/dev/null 2>"$T/e.err" </dev/null || rc=$?
  if [ $rc -eq 1 ] && grep -Eq -- "$pattern" "$T/e.err"; then pass
  else fail "$*: rc $rc, want /$pattern/: $(head -c 300 "$T/e.err")"; fi
}
check_err "^vtool: -mon: chardev 'nope' not found" -mon chardev=nope
check_err "^vtool: stdio: cannot use stdio by multiple character devices" -monitor stdio
check_err "^vtool: -qmp: not supported yet: a monitor socket that connects out" -qmp "unix:$T/c.sock"
check_err "^vtool: -qmp: not supported yet: character device 'pty'" -qmp pty
check_err "^vtool: $T/nodir/q.sock: listen: No such file or directory$" \
  -serial none -qmp "unix:$T/nodir/q.sock,server=on,wait=off"

# stop/cont while the guest does disk I/O on virtio-blk and IDE: nothing is lost
qemu-img create -q -f qcow2 "$T/vblk.qcow2" 64M 2>/dev/null || "$VTOOL" img create -q -f qcow2 "$T/vblk.qcow2" 64M
ops="i"; for k in $(seq 0 9); do ops="$ops,w:$((k * 64)):64:$(printf %02x $((k + 1))),r:$((k * 64)):64:$(printf %02x $((k + 1)))"; done
"$VTOOL" run "${TG[@]}" -m 128 -drive "file=$T/vblk.qcow2,if=virtio" -serial "file:$T/io.out" \
  -append "test=disk dev=vblk ops=$ops,f" -qmp "unix:$T/io.sock,server=on,wait=off" &
vm=$!
wait_sock "$T/io.sock"
python3 - "$T/io.sock" "$T/io.out" <<'EOF' >"$T/storm.log" 2>&1
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
def cmd(c):
    f.write(json.dumps({"execute": c}).encode() + b"\n"); f.flush()
    while True:
        m = json.loads(f.readline())
        if "event" not in m:
            return m
f.readline(); cmd("qmp_capabilities")
n = 0
end = time.time() + 60
while time.time() < end and "TG-PASS" not in open(sys.argv[2]).read() and \
        "TG-FAIL" not in open(sys.argv[2]).read():
    cmd("stop"); time.sleep(0.02); cmd("cont"); time.sleep(0.03); n += 1
print("pauses", n)
EOF
rc=0; wait $vm || rc=$?
expect_grep '^TG-PASS disk$' "$T/io.out"
[ $rc -eq 1 ] && pass || fail "disk I/O with stop/cont: exit $rc: $(tail -3 "$T/io.out") $(cat "$T/storm.log")"
expect_grep '^pauses [1-9]' "$T/storm.log"

# a daemon ends at once on SIGTERM (a zombie waiting for its reaper counts as ended)
"$VTOOL" run "${TG[@]}" -append "test=spin" -serial none -daemonize -pidfile "$T/d.pid" \
  -qmp "unix:$T/d.sock,server=on,wait=off"
pid=$(cat "$T/d.pid")
kill -TERM "$pid"
t0=$(date +%s%N)
while [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
  sleep 0.01; [ $(( $(date +%s%N) - t0 )) -gt 5000000000 ] && break
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 500 ] && pass || fail "-daemonize: $ms ms to end after SIGTERM"

if [ -n "$qemu_pid" ]; then
  rc=0; wait "$qemu_pid" || rc=$?
  n=$(sed -n 's/^\([0-9]*\) checks passed.*/\1/p' "$T/qemu.log")
  checks=$((checks + ${n:-0}))
  [ $rc -eq 0 ] || fail "qemu: $(grep -v 'checks passed' "$T/qemu.log" | head -20)"
fi
finish
