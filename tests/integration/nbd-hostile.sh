#!/usr/bin/env bash
# Hostile peers on localhost. Against vtool img serve: a raw-socket client (python) that
# breaks every rule (ranges, alignment it asked for, flags and commands not advertised,
# oversize payloads, writes to a read-only export, malformed options, bad magic, unknown
# client flags, huge option lengths) must get the protocol's error codes on a connection
# that keeps working, or be hung up on where the stream cannot be trusted; each kind of
# misbehaviour is reported once per client. Clients that vanish mid-request, one that
# never finishes its handshake and 200 concurrent connections must leave the server
# serving and the image clean (qemu-img check). Against vtool's client: a fake server
# sending malformed replies must make vtool fail with one line, never crash or hang.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img qemu-io python3
cd "$T"

cat >nbd.py <<'EOF'
import socket, struct, sys, threading, time
IHAVEOPT, REQ, SIMPLE, STRUCT = 0x49484156454F5054, 0x25609513, 0x67446698, 0x668e33ef
ERR = {1: 'EPERM', 5: 'EIO', 22: 'EINVAL', 28: 'ENOSPC', 75: 'EOVERFLOW', 95: 'ENOTSUP'}
REP = {1: 'ACK', 2: 'SERVER', 3: 'INFO', 4: 'CONTEXT', 0x80000001: 'UNSUP',
       0x80000002: 'POLICY', 0x80000003: 'INVALID', 0x80000006: 'UNKNOWN',
       0x80000009: 'TOO_BIG'}

class C:
    def __init__(s, port):
        s.s = socket.create_connection(('127.0.0.1', port), timeout=20)
        g = s.rx(18)
        assert g[:8] == b'NBDMAGIC', g
        s.cookie = 0
    def rx(s, n):
        b = b''
        while len(b) < n:
            d = s.s.recv(n - len(b))
            if not d:
                raise EOFError
            b += d
        return b
    def tx(s, b): s.s.sendall(b)
    def flags(s, f=3): s.tx(struct.pack('>I', f))
    def opt(s, o, data=b'', length=None):
        s.tx(struct.pack('>QII', IHAVEOPT, o, len(data) if length is None else length) + data)
    def reply(s):
        m, o, t, n = struct.unpack('>QIII', s.rx(20))
        return REP.get(t, t), s.rx(n)
    def replies(s):
        out = []
        while True:
            t, d = s.reply()
            out.append((t, d))
            if t not in ('INFO', 'SERVER', 'CONTEXT'):
                return out
    def go(s, name=b'', meta=True, bs=True, sr=True):
        if sr:
            s.opt(8); assert s.reply()[0] == 'ACK'
        if meta:
            q = b'base:allocation'
            s.opt(10, struct.pack('>I', len(name)) + name + struct.pack('>II', 1, len(q)) + q)
            s.replies()
        infos = [3] if bs else []
        s.opt(7, struct.pack('>I', len(name)) + name + struct.pack('>H', len(infos)) +
              b''.join(struct.pack('>H', i) for i in infos))
        return s.replies()[-1][0]
    def req(s, t, off, n, flags=0, payload=b'', magic=REQ):
        s.cookie += 1
        s.tx(struct.pack('>IHHQQI', magic, flags, t, s.cookie, off, n) + payload)
        return s.cookie
    def result(s, cookie):
        """'OK', an error name, or 'DATA:<bytes>' for reads; follows structured chunks."""
        data, err = b'', None
        while True:
            m = struct.unpack('>I', s.rx(4))[0]
            if m == SIMPLE:
                e, c = struct.unpack('>IQ', s.rx(12))
                assert c == cookie
                return ERR.get(e, e) if e else 'OK'
            fl, t, c, n = struct.unpack('>HHQI', s.rx(16))
            assert m == STRUCT and c == cookie, (hex(m), c, cookie)
            p = s.rx(n)
            if t == 1: data += p[8:]
            elif t == 2: data += b'\0' * struct.unpack('>QI', p)[1]
            elif t & 0x8000: err = ERR.get(struct.unpack('>I', p[:4])[0])
            elif t == 5: data += p
            if fl & 1:
                return err or ('DATA:%d' % len(data) if data else 'OK')
    def closed(s):
        try:
            s.s.settimeout(5)
            return s.s.recv(1) == b''
        except (ConnectionResetError, socket.timeout):
            return True
EOF

cat >hostile.py <<'EOF'
import struct, sys, socket, threading
sys.path.insert(0, '.')
from nbd import C
port, ro = int(sys.argv[1]), int(sys.argv[2])
size = 16 << 20
def check(what, got, want):
    print(('ok   ' if got == want else 'FAIL ') + '%s: %s (want %s)' % (what, got, want))
c = C(port); c.flags()
if ro:
    check('GO', c.go(), 'ACK')
    for t, name, pl in ((1, 'write', b'x' * 512), (4, 'trim', b''), (6, 'zero', b'')):
        check(name + ' on read-only', c.result(c.req(t, 0, 512, payload=pl)), 'EPERM')
    check('read on read-only', c.result(c.req(0, 0, 512)), 'DATA:512')
    sys.exit(0)
# options
c.opt(3, b'x'); check('LIST with data', c.reply()[0], 'INVALID')
c.opt(10, struct.pack('>II', 0, 0)); check('SET_META before structured', c.reply()[0], 'INVALID')
c.opt(5); check('STARTTLS', c.reply()[0], 'POLICY')
c.opt(77, b'abc'); check('unknown option', c.reply()[0], 'UNSUP')
c.opt(7, struct.pack('>IH', 0, 5)); check('GO count mismatch', c.reply()[0], 'INVALID')
c.opt(7, struct.pack('>I', 1000) + b'ab'); check('GO name past end', c.reply()[0], 'INVALID')
c.opt(6, struct.pack('>I', 4) + b'nope' + struct.pack('>H', 0)); check('INFO unknown export', c.reply()[0], 'UNKNOWN')
c.opt(8); c.reply()
c.opt(9, struct.pack('>II', 0, 1) + struct.pack('>I', 99)); check('LIST_META query past end', c.reply()[0], 'INVALID')
c.opt(9, struct.pack('>II', 0, 0)); check('LIST_META all', [t for t, d in c.replies()], ['CONTEXT', 'ACK'])
c.opt(8); check('STRUCTURED twice', c.reply()[0], 'INVALID')
c.opt(66, b'\0' * (1 << 20)); check('1 MiB option', c.reply()[0], 'TOO_BIG')
check('GO', c.go(sr=False), 'ACK')
# requests
R, W, T, Z, B, F, CA = 0, 1, 4, 6, 7, 3, 5
check('read past end', c.result(c.req(R, size - 512, 1024)), 'EINVAL')
check('read at 2^63', c.result(c.req(R, 1 << 63, 512)), 'EINVAL')
check('read wrapping', c.result(c.req(R, 2**64 - 512, 1024)), 'EINVAL')
check('write past end', c.result(c.req(W, size, 512, payload=b'y' * 512)), 'ENOSPC')
check('zero past end', c.result(c.req(Z, size - 512, 4096)), 'ENOSPC')
check('trim past end', c.result(c.req(T, size, 512)), 'EINVAL')
check('block status past end', c.result(c.req(B, size, 512)), 'EINVAL')
check('unaligned read', c.result(c.req(R, 100, 512)), 'EINVAL')
check('unaligned write', c.result(c.req(W, 512, 100, payload=b'z' * 100)), 'EINVAL')
check('read with REQ_ONE', c.result(c.req(R, 0, 512, flags=8)), 'EINVAL')
check('write with NO_HOLE', c.result(c.req(W, 0, 512, flags=2, payload=b'a' * 512)), 'EINVAL')
check('flags 0x8000', c.result(c.req(F, 0, 0, flags=0x8000)), 'EINVAL')
check('command 42', c.result(c.req(42, 0, 512)), 'EINVAL')
check('read of 64 MiB', c.result(c.req(R, 0, 64 << 20)), 'EINVAL')
check('write of 33 MiB', c.result(c.req(W, 0, 33 << 20, payload=b'\0' * (33 << 20))), 'EINVAL')
check('block status of 0', c.result(c.req(B, 0, 0)), 'EINVAL')
for i in range(5):
    c.result(c.req(R, size, 512))  # repeated: still reported once
# the connection still works, every command
check('write', c.result(c.req(W, 4096, 8192, payload=b'\x5a' * 8192)), 'OK')
check('write FUA', c.result(c.req(W, 12288, 512, flags=1, payload=b'\x5b' * 512)), 'OK')
check('read', c.result(c.req(R, 4096, 8192)), 'DATA:8192')
check('read DF', c.result(c.req(R, 0, 65536, flags=4)), 'DATA:65536')
check('zero FAST_ZERO|NO_HOLE', c.result(c.req(Z, 1 << 20, 1 << 20, flags=0x12)), 'OK')
check('trim', c.result(c.req(T, 2 << 20, 1 << 20)), 'OK')
check('cache', c.result(c.req(CA, 0, 1 << 20)), 'OK')
check('flush', c.result(c.req(F, 0, 0)), 'OK')
check('block status', c.result(c.req(B, 0, size)).startswith('DATA'), True)
c.req(2, 0, 0)
check('closed after DISC', c.closed(), True)
# block status without a context; simple replies: errors as simple replies
c = C(port); c.flags(); c.opt(7, struct.pack('>IH', 0, 0)); c.replies()
check('block status without context', c.result(c.req(B, 0, 512)), 'EINVAL')
check('simple read error', c.result(c.req(R, size, 512)), 'EINVAL')
c.req(R, 0, 512, magic=0x12345678)
check('bad request magic hangs up', c.closed(), True)
# hang-ups where the stream cannot be trusted
c = C(port); c.flags(0x80); check('unknown client flags hang up', c.closed(), True)
c = C(port); c.flags(); c.tx(b'IHAVENOT' + b'\0' * 8); check('bad option magic hangs up', c.closed(), True)
c = C(port); c.flags(); c.opt(66, length=100 << 20); check('100 MiB option hangs up', c.closed(), True)
c = C(port); c.flags(); c.opt(1, b'nope'); check('EXPORT_NAME unknown hangs up', c.closed(), True)
# clients that vanish mid-message
for part in (b'\0\0', struct.pack('>QI', 0x49484156454F5054, 7), None, 'hdr', 'payload'):
    c = C(port); c.flags()
    if part in ('hdr', 'payload'):
        c.go()
        h = struct.pack('>IHHQQI', 0x25609513, 0, 1, 9, 0, 65536)
        c.tx(h[:13] if part == 'hdr' else h + b'q' * 30000)
    elif part is not None:
        c.tx(part)
    c.s.close()
check('vanishing clients', True, True)
EOF

qemu-img create -q -f raw r.raw 16M
P=$(free_port)
vserve s.pid -f raw -e 0 -t -p "$P" r.raw
expect_rc 0 timeout 120 python3 hostile.py "$P" 0
if grep -q '^FAIL' "$T/out"; then fail "$(grep '^FAIL' "$T/out" | head -5 | tr '\n' '|')"; else pass; fi
expect_grep '^ok   block status: True' "$T/out"
expect_grep '^ok   vanishing clients' "$T/out"
# Still serving, and the image holds what the good requests wrote.
expect_rc 0 qemu-io -f raw -r -c 'read -P 0x5a 4096 8192' -c 'read -P 0x5b 12288 512' \
  "nbd://127.0.0.1:$P"
# Each kind of problem is reported once per client, naming the client.
sleep 0.5
expect_grep '^vtool img serve: client 127\.0\.0\.1:[0-9]+: read at 16776704\+1024 past the end' s.pid.err
n=$(grep -c 'past the end of the export' s.pid.err)
[ "$n" -le 2 ] && pass || fail "out-of-range requests reported $n times"
expect_grep 'not aligned to the advertised block size 512' s.pid.err
expect_grep 'unknown command 42' s.pid.err
expect_grep 'over the maximum payload' s.pid.err
expect_grep 'unknown client flags 0x80: hanging up' s.pid.err
expect_grep 'bad option magic: hanging up' s.pid.err
expect_grep 'request with a bad magic: hanging up' s.pid.err
expect_grep 'block status without a negotiated metadata context' s.pid.err
# A client that says nothing is dropped after the handshake time limit (10 s as qemu's;
# the default suite checks it with --handshake-limit=2).
silent() {
  python3 -c "
import socket, time
s = socket.create_connection(('127.0.0.1', $P)); s.recv(18)
s.settimeout(20); t = time.time()
print('dropped after %d s' % round(time.time() - t) if s.recv(1) == b'' else 'data')" >"$T/slow"
}
if [ "${VTOOL_SLOW_TESTS:-0}" = 1 ]; then
  silent
  expect_grep '^dropped after (9|10|11) s$' "$T/slow"
  expect_grep 'no export chosen within 10 s: dropped' s.pid.err
fi
expect_rc 0 stop s.pid
vserve h.pid -f raw --handshake-limit=2 -t -p "$P" r.raw
silent
expect_grep '^dropped after (1|2|3) s$' "$T/slow"
expect_grep 'no export chosen within 2 s: dropped' h.pid.err
expect_rc 0 stop h.pid

# Read-only: writes, trims and zeroes from a client that ignores the flag: EPERM.
vserve ro.pid -f raw -r -t -p "$P" r.raw
expect_rc 0 timeout 60 python3 hostile.py "$P" 1
if grep -q '^FAIL' "$T/out"; then fail "$(grep '^FAIL' "$T/out" | tr '\n' '|')"; else pass; fi
expect_rc 0 stop ro.pid
expect_grep 'write on the read-only export' ro.pid.err
expect_lines 1 ro.pid.err

# 200 clients at once on a qcow2, each writing its own 64 KiB and reading it back, while
# a qemu-io writer works on another range: all served, the image clean and right.
qemu-img create -q -f qcow2 c.qcow2 64M
vserve c.pid -f qcow2 -e 0 -t -p "$P" c.qcow2
cat >many.py <<'EOF'
import sys, threading, struct
sys.path.insert(0, '.')
from nbd import C
port, ok, conns = int(sys.argv[1]), [], []
for i in range(200):
    c = C(port); c.flags(); conns.append(c)   # all connected before any negotiates
def run(i, c):
    try:
        c.go(bs=False)
        pat = bytes([i % 251 + 1]) * 65536
        r1 = c.result(c.req(1, i * 65536, 65536, payload=pat))
        c.tx(struct.pack('>IHHQQI', 0x25609513, 0, 0, 77, i * 65536, 65536))
        m = c.rx(4)
        fl, t, ck, n = struct.unpack('>HHQI', c.rx(16))
        d = c.rx(n)[8:]
        c.req(2, 0, 0)
        ok.append(r1 == 'OK' and d == pat)
    except Exception as e:
        print('client %d: %r' % (i, e))
ts = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(conns)]
for t in ts: t.start()
for t in ts: t.join()
print('%d of 200 clients served' % sum(ok))
EOF
qemu-io -f raw -c 'write -P 0x77 50M 8M' "nbd://127.0.0.1:$P" >qio.out 2>&1 &
qio=$!
expect_rc 0 timeout 120 python3 many.py "$P"
expect_grep '^200 of 200 clients served$' "$T/out"
wait $qio && pass || fail "qemu-io beside 200 clients: $(cat qio.out)"
expect_rc 0 qemu-io -f raw -r -c 'read -P 0x77 50M 8M' -c 'read -P 200 13041664 64k' \
  "nbd://127.0.0.1:$P"
expect_rc 0 stop c.pid
expect_rc 0 qemu-img check c.qcow2
expect_rc 0 qemu-io -r -c 'read -P 1 0 64k' -c 'read -P 0x77 50M 8M' c.qcow2

# A hostile server: each malformed reply makes vtool's client fail with one line.
cat >fake.py <<'EOF'
import socket, struct, sys
mode, lsock = sys.argv[1], socket.socket()
lsock.bind(('127.0.0.1', 0)); lsock.listen(4)
print(lsock.getsockname()[1], flush=True)
c, _ = lsock.accept()
def rx(n):
    b = b''
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: sys.exit(0)
        b += d
    return b
def rep(o, t, d=b''): c.sendall(struct.pack('>QIII', 0x3e889045565a9, o, t, len(d)) + d)
c.sendall(b'NBDMAGIC' + b'IHAVEOPT' + struct.pack('>H', 3)); rx(4)
size = 1 << 20
while True:
    m, o, n = struct.unpack('>QII', rx(16)); d = rx(n)
    if mode == 'optlen' : c.sendall(struct.pack('>QIII', 0x3e889045565a9, o, 1, 1 << 30)); continue
    if o == 8: rep(o, 1)
    elif o == 10: rep(o, 4, struct.pack('>I', 1) + b'base:allocation'); rep(o, 1)
    elif o == 7:
        rep(o, 3, struct.pack('>HQH', 0, size, 1 | 4)); rep(o, 1); break
    else: rep(o, 0x80000001)
def chunk(fl, t, ck, p): c.sendall(struct.pack('>IHHQI', 0x668e33ef, fl, t, ck, len(p)) + p)
while True:
    mg, fl, t, ck, off, n = struct.unpack('>IHHQQI', rx(28))
    if t == 1: rx(n)
    if t == 2: sys.exit(0)
    if t == 7 and mode != 'extent0':  # block status: honest, one data extent
        chunk(1, 5, ck, struct.pack('>III', 1, n, 0)); continue
    if mode == 'magic': c.sendall(b'\xde\xad\xbe\xef' * 8)
    elif mode == 'cookie': chunk(1, 0, ck + 12345, b'')
    elif mode == 'outside': chunk(1, 1, ck, struct.pack('>Q', off + n) + b'x' * 16)
    elif mode == 'short': chunk(0, 1, ck, struct.pack('>Q', off) + b'x' * (n // 2)); chunk(1, 0, ck, b'')
    elif mode == 'overlap': chunk(0, 1, ck, struct.pack('>Q', off) + b'x' * n); chunk(1, 2, ck, struct.pack('>QI', off, n))
    elif mode == 'extent0': chunk(1, 5, ck, struct.pack('>III', 1, 0, 0))
    elif mode == 'errlen': chunk(1, 0x8001, ck, struct.pack('>IH', 5, 9000) + b'e' * 10)
    elif mode == 'typ': chunk(1, 77, ck, b'')
EOF
declare -A why=([optlen]='open: malformed reply to option 8' [magic]='bad reply magic'
  [cookie]='reply to no request in flight' [outside]='data chunk outside the read'
  [short]='read: Input/output error' [overlap]='hole chunk outside the read or overlapping'
  [errlen]='malformed structured reply chunk' [typ]='malformed structured reply chunk'
  [extent0]='empty block status extent')
for mode in optlen magic cookie outside short overlap errlen typ extent0; do
  coproc FAKE { exec python3 fake.py "$mode" 2>/dev/null; }
  fpid=$FAKE_PID
  read -r fport <&"${FAKE[0]}"
  cmd=(convert -O raw "nbd://127.0.0.1:$fport" f.raw)
  [ $mode = extent0 ] && cmd=(map "nbd://127.0.0.1:$fport")
  expect_rc 1 timeout 30 "$VTOOL" img "${cmd[@]}"
  expect_lines 1 "$T/err"
  expect_grep "${why[$mode]}" "$T/err"
  kill "$fpid" 2>/dev/null; wait "$fpid" 2>/dev/null
done
finish
