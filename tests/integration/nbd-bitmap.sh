#!/usr/bin/env bash
# vtool img serve -B NAME against qemu-nbd -B NAME: the persistent dirty bitmaps of a
# qcow2 image (made by qemu-img and qemu-io) exported as qemu:dirty-bitmap:NAME contexts.
# What clients see must be what qemu-nbd 7.2 shows them of the same image: nbdinfo's maps
# and context lists, a raw client's LIST/SET_META_CONTEXT answers (prefix queries, context
# ids) and block status replies (unaligned ranges, NBD_CMD_FLAG_REQ_ONE, the disk's last
# partial granule), a writable export's bitmap following writes, and the refusals
# (unknown, inconsistent bitmaps) with their exit codes and messages.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img qemu-io qemu-nbd nbdinfo python3
cd "$T"

# 1000000 bytes: qcow2 makes it 1000448, so the last 4 KiB granule is partial.
qemu-img create -q -f qcow2 a.qcow2 1000000
qemu-img bitmap --add -g 4096 a.qcow2 b1
qemu-img bitmap --add a.qcow2 b2                 # 64 KiB, disabled below
qemu-img bitmap --add -g 512 a.qcow2 b3
qemu-io -f qcow2 -c 'write 1000 3000' -c 'write 999000 1000' a.qcow2 >/dev/null
qemu-img bitmap --disable a.qcow2 b2
qemu-io -f qcow2 -c 'write 70000 1' -c 'write 300000 200000' -c 'write 1000447 1' \
  a.qcow2 >/dev/null
qemu-img bitmap --add a.qcow2 empty              # never written: all clean

# A raw NBD client: LIST:q1,q2 and SET:q1,q2 print the contexts the server answers with
# (id, name), GO enters transmission, BS:off:len[:one] prints each context's extents.
cat >nbdmeta.py <<'EOF'
import socket, struct, sys
def rd(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError('server hung up')
        b += c
    return b
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
rd(s, 18)
s.sendall(struct.pack('>I', 3))
def opt(o, d=b''):
    s.sendall(struct.pack('>QII', 0x49484156454F5054, o, len(d)) + d)
    out = []
    while True:
        _, _, t, l = struct.unpack('>QIII', rd(s, 20))
        d2 = rd(s, l)
        if t == 1:
            return out
        out.append((t, d2))
        if t & 0x80000000:
            return out
def queries(v):
    qs = [q.encode() for q in v.split(',')] if v else []
    return struct.pack('>II', 0, len(qs)) + b''.join(struct.pack('>I', len(q)) + q for q in qs)
opt(8)  # structured replies
names = {}
for a in sys.argv[2:]:
    k, _, v = a.partition(':')
    if k in ('LIST', 'SET'):
        got = opt(9 if k == 'LIST' else 10, queries(v))
        for t, d in got:
            if t & 0x80000000:
                print(k, repr(v), 'error', hex(t))
                continue
            i = struct.unpack('>I', d[:4])[0]
            print(k, repr(v), i, d[4:].decode())
            if k == 'SET':
                names[i] = d[4:].decode()
        if not got:
            print(k, repr(v), 'none')
    elif k == 'GO':
        opt(7, struct.pack('>IH', 0, 0))
    elif k == 'BS':
        p = v.split(':')
        s.sendall(struct.pack('>IHHQQI', 0x25609513, 8 if len(p) > 2 else 0, 7, 1,
                              int(p[0]), int(p[1])))
        while True:
            _, f, t, _, l = struct.unpack('>IHHQI', rd(s, 20))
            d = rd(s, l)
            if t == 5:
                n = names.get(struct.unpack('>I', d[:4])[0], '?')
                ex = [struct.unpack('>II', d[4 + 8 * j:12 + 8 * j]) for j in range((l - 4) // 8)]
                # base:allocation is another test's (nbd-server.sh): name it only
                print('BS', v, n, ' '.join('%d/%d' % e for e in ex) if 'bitmap' in n else '')
            else:
                print('BS', v, 'type', t, 'error' if t & 0x8000 else '')
            if f & 1:
                break
s.close()
EOF

# Read-only exports of the same image, the bitmaps given in the same order.
cp a.qcow2 q.qcow2
vserve v.pid -f qcow2 -r -t -A -k "$T/v.sock" -B b1 -B b2 -B b3 -B empty a.qcow2
expect_rc 0 test -s v.pid
qserve q.pid -f qcow2 -r -t -A -k "$T/q.sock" -B b1 -B b2 -B b3 -B empty q.qcow2
for s in v q; do
  u="nbd+unix:///?socket=$T/$s.sock"
  for b in b1 b2 b3 empty; do
    echo "== $b"
    nbdinfo --map=qemu:dirty-bitmap:$b "$u"
  done >"maps.$s"
  nbdinfo --list --content "$u" | grep -v 'uri:' >"list.$s"
  nbdinfo --map=qemu:dirty-bitmap:nope "$u" >/dev/null 2>"nope.$s"; echo "rc=$?" >>"nope.$s"
  python3 nbdmeta.py "$T/$s.sock" LIST: LIST:qemu: LIST:qemu:dirty-bitmap: LIST:base: \
    LIST:qemu:dirty-bitmap:b2 LIST:qemu:dirty-bitmap:nope LIST:qemu:dirty-bitmap:b2x \
    SET:qemu:dirty-bitmap: SET:qemu: \
    SET:qemu:dirty-bitmap:b1,qemu:dirty-bitmap:b3,base:allocation,qemu:dirty-bitmap:empty \
    LIST:qemu:dirty-bitmap:b3 GO \
    BS:0:1000448 BS:1000:70000 BS:1000:70000:one BS:70000:1000:one BS:4095:2 \
    BS:999999:449 BS:1000447:1 BS:995328:5120:one BS:300001:199998 \
    >"raw.$s" 2>&1
done
same "dirty bitmap maps vs qemu-nbd" maps.v maps.q
same "nbdinfo --list --content vs qemu-nbd" list.v list.q
same "unknown context vs qemu-nbd" nope.v nope.q
same "raw LIST/SET/block status vs qemu-nbd" raw.v raw.q
# And what they must say (so that a change in both cannot pass unnoticed).
expect_grep '^ +995328 +5120 +1 +dirty$' maps.v                  # b1's last, partial granule
expect_grep '^ +512 +3584 +1 +dirty$' maps.v                     # b3: 512-byte granules
expect_grep '^ +0 +65536 +1 +dirty$' maps.v                      # b2: disabled before 70000
expect_grep '^ +0 +1000448 +0 +clean$' maps.v                    # empty
expect_grep 'qemu:dirty-bitmap:empty' list.v
expect_grep "^SET 'qemu:dirty-bitmap:' none$" raw.v
expect_grep "^LIST 'qemu:dirty-bitmap:' 0 qemu:dirty-bitmap:b2$" raw.v
expect_grep "^SET '.*' 2 qemu:dirty-bitmap:empty$" raw.v         # the last -B is id 2
expect_grep '^BS 70000:1000:one qemu:dirty-bitmap:b3 144/1$' raw.v
expect_grep '^BS 1000:70000 qemu:dirty-bitmap:b1 3096/1 65536/0 1368/1$' raw.v
expect_rc 0 stop v.pid
expect_rc 0 stop q.pid

# Refusals: the same exit code, and the same one-line message.
qemu-img create -q -f raw r.raw 1M
cp a.qcow2 i.qcow2
sh -c 'qemu-io -f qcow2 -c "sigraise 9" i.qcow2; true' >/dev/null 2>&1  # dies, bitmaps in use
cases=("-r -B nope a.qcow2" "-r -B nope1 -B nope2 a.qcow2" "-r -B b1 -B nope a.qcow2"
       "-r -B b1 i.qcow2" "-B b3 i.qcow2" "-r -f raw -B b1 r.raw" "--fork -r -B nope a.qcow2")
for c in "${cases[@]}"; do
  # shellcheck disable=SC2086
  "$VTOOL" img serve -k "$T/e.sock" $c >/dev/null 2>err.v; echo "rc=$?" >>err.v
  # shellcheck disable=SC2086
  timeout 10 qemu-nbd -k "$T/e.sock" $c >/dev/null 2>err.q; echo "rc=$?" >>err.q
  sed -i 's/^vtool: //' err.v
  sed -i 's/^qemu-nbd: //' err.q
  same "serve $c: message and exit code vs qemu-nbd" err.v err.q
  expect_lines 2 err.v                                     # one line, then rc=1
done
"$VTOOL" img serve -r -k "$T/e.sock" -B b1 i.qcow2 2>err.i
expect_grep "^vtool: Bitmap 'b1' is inconsistent and cannot be used$" err.i
"$VTOOL" img serve -r -k "$T/e.sock" -B nope1 -B nope2 a.qcow2 2>err.n
expect_grep "^vtool: Bitmap 'nope2' is not found$" err.n         # the last -B first

# A writable export: the enabled bitmap follows the writes, the disabled one does not,
# and the image keeps them (stored cleanly at exit).
cp a.qcow2 w.qcow2
cp a.qcow2 wq.qcow2
vserve w.pid -f qcow2 -t -k "$T/w.sock" -B b1 -B b2 w.qcow2
qserve wq.pid -f qcow2 -t -k "$T/wq.sock" -B b1 -B b2 wq.qcow2
for s in w wq; do
  u="nbd+unix:///?socket=$T/$s.sock"
  nbdinfo --map=qemu:dirty-bitmap:b1 "$u" >/dev/null          # the bits before writes
  qemu-io -f raw -c 'write 200000 10' -c 'write -z 600000 70000' "$u" >/dev/null
  for b in b1 b2; do nbdinfo --map=qemu:dirty-bitmap:$b "$u"; done >"wmap.$s"
done
same "writable export's bitmaps after writes vs qemu-nbd" wmap.w wmap.wq
expect_grep '^ +196608 +4096 +1 +dirty$' wmap.w
expect_rc 0 stop w.pid
expect_rc 0 stop wq.pid
expect_rc 0 qemu-img check w.qcow2
expect_rc 0 qemu-img info w.qcow2
if grep -q in-use "$T/out"; then fail "bitmaps left in use: $(grep -c in-use "$T/out")"; else pass; fi

finish
