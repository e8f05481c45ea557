#!/usr/bin/env bash
# vtool img check on qcow2 images whose internal snapshot table is damaged, against
# qemu-img check (qemu's qcow2_check_read_snapshot_table / qcow2_check_fix_snapshot_table).
# A qemu-made image with three snapshots is damaged one way per case by patching bytes:
# more snapshots counted than the table holds (read past the end of the file as empty,
# incomplete entries), entries with more extra data than qemu allows, a table over 64 MiB,
# v3 entries without the disk size, snapshots with an unaligned or oversized L1 table.
# For each case both tools check it (exit codes and the key lines match), then repair twin
# copies with -r all; the results must agree: exit codes, key lines, qemu-img check of both
# (clean where qemu's repair makes it clean), the snapshots that survive (qemu-img snapshot
# -l), the data of each surviving snapshot and of the active disk.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

# damage.py IMG CASE: rewrite the snapshot table in place (it is the file's last cluster
# here), then the snapshot count in the header.
cat >damage.py <<'EOF'
import struct, sys
img, case = sys.argv[1], sys.argv[2]
f = open(img, 'r+b'); d = f.read()
nb, off = struct.unpack('>IQ', d[60:72])
ents, o = [], off
for i in range(nb):
    o = (o + 7) & ~7
    l1o, l1s, idl, nl, ds, dn, vc, vs, ex = struct.unpack('>QIHHIIQII', d[o:o + 40])
    extra = d[o + 40:o + 40 + ex]; o += 40 + ex
    ents.append(dict(l1o=l1o, l1s=l1s, ds=ds, dn=dn, vc=vc, vs=vs, extra=extra,
                     id=d[o:o + idl], name=d[o + idl:o + idl + nl]))
    o += idl + nl
def write(ents, count=None):
    buf = b''
    for e in ents:
        buf += b'\0' * (-len(buf) % 8)
        buf += struct.pack('>QIHHIIQII', e['l1o'], e['l1s'], len(e['id']), len(e['name']),
                           e['ds'], e['dn'], e['vc'], e['vs'], len(e['extra']))
        buf += e['extra'] + e['id'] + e['name']
    f.seek(off); f.write(buf)
    f.seek(60); f.write(struct.pack('>I', len(ents) if count is None else count))
if case == 'nb-over':          # three more snapshots than the table holds: past the end
    write(ents, nb + 3)
elif case == 'nb-max':         # more than qemu's 65536
    write(ents, 70000)
elif case == 'extra-big':      # entry 1 with 2000 bytes of extra data (1024 allowed)
    ents[1]['extra'] += bytes(range(256)) * 7 + b'\x5a' * (2000 - 24 - 1792)
    write(ents)
elif case == 'extra-both':     # too much extra data in one entry, none in another
    ents[0]['extra'] = b''
    ents[2]['extra'] += b'\xa5' * 3000
    write(ents)
elif case == 'too-big':        # 520 more entries of 128 KiB: the table passes 64 MiB
    o = off                    # (the file is sparse: only the entry headers are written)
    for e in ents:
        o = ((o + 7) & ~7) + 40 + len(e['extra']) + len(e['id']) + len(e['name'])
    for k in range(520):
        o = (o + 7) & ~7
        f.seek(o)
        f.write(struct.pack('>QIHHIIQIIQQQ', 0, 0, 65535, 65535, 0, 0, 0, 0, 24, 0, 4 << 20, 0))
        o += 40 + 24 + 2 * 65535
    f.seek(60); f.write(struct.pack('>I', nb + 520))
elif case == 'incomplete':     # a v3 entry without the 16 bytes of sizes
    ents[0]['extra'] = ents[0]['extra'][:8]
    write(ents)
elif case == 'l1-unaligned':
    ents[1]['l1o'] += 0x200
    write(ents)
elif case == 'l1-big':
    ents[2]['l1s'] = 0x1000000
    write(ents)
else:
    sys.exit('unknown case ' + case)
EOF

qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 1 0 1M' base.qcow2 >/dev/null
qemu-img snapshot -c s1 base.qcow2
qemu-io -c 'write -P 2 512k 1M' base.qcow2 >/dev/null
qemu-img snapshot -c s2 base.qcow2
qemu-io -c 'write -P 3 2M 64k' -c 'write -P 4 3M 64k' base.qcow2 >/dev/null
qemu-img snapshot -c s3 base.qcow2
qemu-io -c 'write -P 5 0 64k' base.qcow2 >/dev/null

# The lines both tools must print alike (qemu prints "Repairing cluster" lines for the
# refcounts it fixes, vtool does not; image end offsets differ with the new layout).
keylines() {
  grep -E '^(ERROR|Discarding|Repairing (snapshot|OFLAG)|Leaked cluster|    [0-9]+ (leaked clusters|corruptions)$|[0-9]+ (errors|leaked clusters) were found|No errors)' "$1" || true
}
same_lines() {
  if diff <(keylines "$2") <(keylines "$3") >d.out; then pass
  else fail "$1: qemu-img and vtool print different lines: $(head -12 d.out)"; fi
}
both_have() {
  if grep -Eq -- "$2" "$3" && grep -Eq -- "$2" "$4"; then pass
  else fail "$1: /$2/ missing: qemu: $(head -c 300 "$3") vtool: $(head -c 300 "$4")"; fi
}
run() { local rc=0; "$@" >run.out 2>&1 || rc=$?; echo $rc; }

# case NAME CLEAN_RC KEY: KEY is a line both tools print when checking the damage; CLEAN_RC
# is qemu-img check's exit code on the repaired image (2 where qemu leaves the damage).
case_() {
  local c=$1 after_rc=$2 key=$3 qrc vrc
  cp base.qcow2 "$c.d"
  python3 damage.py "$c.d" "$c"
  cp "$c.d" "$c.q"; cp "$c.d" "$c.v"

  qrc=$(run qemu-img check "$c.d"); mv run.out q.chk
  vrc=$(run "$VTOOL" img check "$c.d"); mv run.out v.chk
  if [ "$qrc" = "$vrc" ]; then pass; else fail "$c: check exits $vrc, qemu-img $qrc: $(head -c 300 v.chk)"; fi
  both_have "$c: check" "$key" q.chk v.chk
  [ "$qrc" -ne 1 ] && same_lines "$c: check" q.chk v.chk

  qrc=$(run qemu-img check -r all "$c.q"); mv run.out q.fix
  vrc=$(run "$VTOOL" img check -r all "$c.v"); mv run.out v.fix
  if [ "$qrc" = "$vrc" ]; then pass; else fail "$c: check -r all exits $vrc, qemu-img $qrc: $(head -c 400 v.fix)"; fi
  same_lines "$c: check -r all" q.fix v.fix

  # The results: what qemu-img sees in each.
  qrc=$(run qemu-img check "$c.q"); mv run.out q.after
  vrc=$(run qemu-img check "$c.v"); mv run.out v.after
  if [ "$qrc" = "$after_rc" ] && [ "$vrc" = "$after_rc" ]; then pass
  else fail "$c: qemu-img check after the repair: qemu's image $qrc, vtool's $vrc (want $after_rc): $(head -c 400 v.after)"; fi
  same_lines "$c: qemu-img check after the repair" q.after v.after
  qemu-img snapshot -l "$c.q" >q.list 2>&1
  qemu-img snapshot -l "$c.v" >v.list 2>&1
  if cmp -s q.list v.list; then pass; else fail "$c: different snapshots survive: $(diff q.list v.list | head -8)"; fi
  if qemu-img compare -q "$c.q" "$c.v"; then pass; else fail "$c: the active disks differ"; fi
  local id
  for id in $(awk 'NR > 2 && substr($0, 1, 1) != " " { print $1 }' q.list); do
    qemu-img convert -l "snapshot.id=$id" -O raw "$c.q" q.raw 2>/dev/null &&
      qemu-img convert -l "snapshot.id=$id" -O raw "$c.v" v.raw 2>/dev/null || continue
    if cmp -s q.raw v.raw; then pass; else fail "$c: snapshot $id reads differently"; fi
  done
  # vtool's own check agrees with qemu-img's on the result.
  vrc=$(run "$VTOOL" img check "$c.v"); mv run.out vv.after
  if [ "$vrc" = "$after_rc" ]; then pass; else fail "$c: vtool check after the repair exits $vrc: $(head -c 300 vv.after)"; fi
}

case_ nb-over      0 'ERROR snapshot table entry 5 is incomplete'
case_ extra-big    0 'Too much extra metadata in snapshot table entry 1'
case_ extra-both   0 'Too much extra metadata in snapshot table entry 2'
case_ too-big      0 'Snapshot table is too big'
case_ incomplete   0 'ERROR snapshot table entry 0 is incomplete'
case_ l1-unaligned 2 'ERROR snapshot 2 \(s2\) l1_offset=0x280200: L1 table is not cluster aligned'
case_ l1-big       2 'ERROR snapshot 3 \(s3\) l1_size=0x1000000: L1 table is too large'

# -r leaks does not touch the table: too much extra data fails the check, as in qemu.
cp base.qcow2 e.q; python3 damage.py e.q extra-big; cp e.q e.v
qrc=$(run qemu-img check -r leaks e.q); mv run.out q.leaks
vrc=$(run "$VTOOL" img check -r leaks e.v); mv run.out v.leaks
if [ "$qrc" = 1 ] && [ "$vrc" = 1 ]; then pass; else fail "check -r leaks: qemu-img $qrc, vtool $vrc (want 1)"; fi
both_have "check -r leaks" 'ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry 1' q.leaks v.leaks
both_have "check -r leaks" 'Check failed: File too large' q.leaks v.leaks
if cmp -s e.v e.q; then pass; else fail "check -r leaks changed the image"; fi

# More than 65536 snapshots: both refuse to check. (With -r all qemu 7.2 cuts the count to
# 65536, reads the rest of them past the end of the file and fails writing the new table,
# leaving the image marked corrupt; vtool refuses at open and leaves it as it is.)
cp base.qcow2 m.d; python3 damage.py m.d nb-max
qrc=$(run qemu-img check m.d); mv run.out q.max
vrc=$(run "$VTOOL" img check m.d); mv run.out v.max
if [ "$qrc" = 1 ] && [ "$vrc" = 1 ]; then pass; else fail "nb-max: check exits $vrc, qemu-img $qrc (want 1)"; fi
both_have "nb-max" '[Ss]napshot table too large' q.max v.max
cp m.d m.v
vrc=$(run "$VTOOL" img check -r all m.v)
if [ "$vrc" = 1 ] && cmp -s m.d m.v; then pass; else fail "nb-max: check -r all exits $vrc (want 1), image changed?"; fi

finish
