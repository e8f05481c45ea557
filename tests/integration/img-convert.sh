#!/usr/bin/env bash
# vtool img convert against qemu-img: round trips over formats and options (qemu-img
# compare says identical, qemu-img check is clean), qemu-made inputs (compressed, backing
# chains) convert to the same raw bytes as qemu-img convert, -B/-n/concatenation, and
# failures (unreadable source, full file system, SIGINT) leave no output behind.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

qemu-img create -q -f raw src.raw 24M
qemu-io -f raw -c "write -P 0x11 0 3M" -c "write -P 0 5M 2M" -c "write -P 0x22 9M 1M" src.raw >/dev/null
head -c 2M /dev/urandom | dd of=src.raw bs=1M seek=16 conv=notrunc status=none
qemu-img convert -O qcow2 src.raw src.qcow2

fmt_of() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])'; }

cases=(
  "-O qcow2"
  "-O raw"
  "-O qcow2 -o compat=0.10"
  "-O qcow2 -o cluster_size=4k,refcount_bits=1"
  "-O qcow2 -o extended_l2=on"
  "-O qcow2 -S 0"
  "-O raw -S 0"
  "-c -O qcow2"
  "-c -O qcow2 -o compression_type=zstd"
  "-c -O qcow2 -o cluster_size=512"
  "-O qcow2 -m 1"
  "-O qcow2 -m 16 -W"
)
for input in src.raw src.qcow2; do
  for args in "${cases[@]}"; do
    rm -f out.img
    # shellcheck disable=SC2086
    expect_rc 0 "$VTOOL" img convert $args "$input" out.img
    f=$(fmt_of out.img)
    expect_rc 0 qemu-img compare -f raw -F "$f" src.raw out.img
    if [ "$f" = qcow2 ]; then expect_rc 0 qemu-img check out.img; fi
    # Same size as qemu-img's output for the same command (sparse detection, layout).
    rm -f q.img
    # shellcheck disable=SC2086
    qemu-img convert $args "$input" q.img
    if [ "$(stat -c %s out.img)" -le "$(stat -c %s q.img)" ]; then pass
    else fail "'convert $args $input' output $(stat -c %s out.img) bytes > qemu's $(stat -c %s q.img)"; fi
  done
done
expect_rc 0 "$VTOOL" img convert -c -O qcow2 src.raw c.qcow2
expect_rc 0 qemu-img check --output=json c.qcow2
expect_grep '"compressed-clusters": [1-9]' "$T/out"

# qemu-made inputs: compressed (zlib, zstd) and a backing chain, to raw: same bytes.
qemu-img convert -c -O qcow2 src.raw qz.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd src.raw qs.qcow2
qemu-img create -q -f qcow2 -b qz.qcow2 -F qcow2 top.qcow2
qemu-io -c "write -P 0x5a 1M 100k" -c "write -z 9M 64k" top.qcow2 >/dev/null
for img in qz.qcow2 qs.qcow2 top.qcow2; do
  rm -f a.raw b.raw
  expect_rc 0 "$VTOOL" img convert -O raw "$img" a.raw
  qemu-img convert -O raw "$img" b.raw
  if cmp -s a.raw b.raw; then pass; else fail "raw output of $img differs from qemu-img's"; fi
done

# -B: the output gets a backing file and holds only what differs from it.
cp src.raw mod.raw
qemu-io -f raw -c "write -P 0x77 1M 64k" mod.raw >/dev/null
expect_rc 0 "$VTOOL" img convert -O qcow2 -B src.qcow2 -F qcow2 mod.raw ov.qcow2
expect_rc 0 qemu-img compare -f raw -F qcow2 mod.raw ov.qcow2
expect_rc 0 qemu-img check ov.qcow2
qemu-img map --output=json ov.qcow2 | grep -c '"depth": 0, "present": true' >"$T/n" || true
expect_grep '^1$' "$T/n"

# -n into an existing image with data; --target-is-zero needs -n.
qemu-img create -q -f qcow2 tgt.qcow2 24M
qemu-io -c "write -P 0x99 20M 1M" tgt.qcow2 >/dev/null
expect_rc 0 "$VTOOL" img convert -n -O qcow2 src.raw tgt.qcow2
expect_rc 0 qemu-img compare -f raw -F qcow2 src.raw tgt.qcow2
expect_rc 1 "$VTOOL" img convert --target-is-zero -O qcow2 src.raw x.qcow2
expect_grep 'requires use of -n' "$T/err"

# Several sources are concatenated.
expect_rc 0 "$VTOOL" img convert -O raw src.raw mod.raw cat.raw
if cat src.raw mod.raw | cmp -s - cat.raw; then pass; else fail "concatenation differs"; fi

# Progress: qemu's -p lines and JSON lines.
expect_rc 0 "$VTOOL" img convert -p -O qcow2 src.raw p.qcow2
expect_grep '\(100\.00/100%\)' "$T/out"
expect_rc 0 "$VTOOL" img convert --progress=json -O qcow2 src.raw pj.qcow2
tail -n 1 "$T/out" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["bytes-done"]==d["bytes-total"]==25165824, d' && pass || fail "last --progress=json line"

# Failures leave nothing behind.
expect_rc 1 "$VTOOL" img convert -O qcow2 nosuch.raw gone.qcow2
expect_grep '^vtool: nosuch.raw: open: ' "$T/err"
expect_lines 1 "$T/err"
chmod 000 src.raw
if [ "$(id -u)" != 0 ]; then expect_rc 1 "$VTOOL" img convert -O qcow2 src.raw gone.qcow2; fi
chmod 644 src.raw
mkdir small
if mount -t tmpfs -o size=4M tmpfs small 2>/dev/null; then
  expect_rc 1 "$VTOOL" img convert -O raw -S 0 src.raw small/full.raw
  expect_grep 'No space left on device' "$T/err"
  if [ -z "$(ls -A small)" ]; then pass; else fail "full file system: left $(ls -A small)"; fi
  umount small
fi
head -c 300M /dev/urandom >big.raw 2>/dev/null
"$VTOOL" img convert -O qcow2 -m 1 big.raw int.qcow2 &
pid=$!
sleep 0.3
kill -INT "$pid"
rc=0; wait "$pid" || rc=$?
if [ "$rc" -eq 130 ] || [ "$rc" -eq 0 ]; then pass; else fail "SIGINT: exit $rc"; fi
if [ "$rc" -eq 130 ]; then
  if ls -A | grep -q 'int.qcow2'; then fail "SIGINT left $(ls -A | grep int.qcow2)"; else pass; fi
fi
[ -e gone.qcow2 ] && fail "a failed convert left gone.qcow2" || pass

# -l: convert from an internal snapshot (made by qemu-img), every spelling qemu takes;
# the raw output equals qemu-img's byte for byte
qemu-img create -q -f qcow2 snap.qcow2 64M
qemu-io -c "write -P 0x11 0 4M" snap.qcow2 >/dev/null
qemu-img snapshot -c first snap.qcow2
qemu-io -c "write -P 0x22 1M 4M" snap.qcow2 >/dev/null
qemu-img snapshot -c second snap.qcow2
qemu-io -c "write -P 0x33 2M 1M" snap.qcow2 >/dev/null
for l in first second 1 2 snapshot.name=first snapshot.id=2 snapshot.id=1,snapshot.name=first; do
  rm -f sq.raw sv.raw sv.qcow2
  qemu-img convert -O raw -l "$l" snap.qcow2 sq.raw
  expect_rc 0 "$VTOOL" img convert -O raw -l "$l" snap.qcow2 sv.raw
  if cmp -s sq.raw sv.raw; then pass; else fail "convert -l $l: raw output differs from qemu-img's"; fi
  expect_rc 0 "$VTOOL" img convert -O qcow2 -l "$l" snap.qcow2 sv.qcow2
  if qemu-img compare -q sq.raw sv.qcow2; then pass; else fail "convert -l $l -O qcow2 differs"; fi
done
expect_rc 1 "$VTOOL" img convert -O raw -l nosuch snap.qcow2 sv.raw
expect_grep "^vtool: snap.qcow2: Failed to load snapshot: Can't find snapshot$" "$T/err"
expect_rc 1 "$VTOOL" img convert -O raw -l first snap.qcow2 snap.qcow2 sv.raw
expect_grep 'No support for concatenating multiple snapshot' "$T/err"
expect_rc 1 "$VTOOL" img convert -O raw -l first sq.raw sv2.raw
expect_grep 'internal snapshots exist only in qcow2 images' "$T/err"

# Large writes on geometries where one refcount block covers few clusters: the refcount
# table grows by several blocks at once, runs of new clusters are allocated together.
head -c 40M /dev/urandom >geo.raw
for o in cluster_size=512,refcount_bits=64 cluster_size=1024,refcount_bits=16 \
         cluster_size=2M,refcount_bits=1 cluster_size=16384,extended_l2=on; do
  rm -f geo.qcow2
  expect_rc 0 "$VTOOL" img convert -O qcow2 -o "$o" geo.raw geo.qcow2
  if qemu-img compare -q geo.raw geo.qcow2; then pass; else fail "convert -o $o: contents differ"; fi
  if qemu-img check -q geo.qcow2; then pass; else fail "convert -o $o: qemu-img check: $(qemu-img check geo.qcow2 2>&1 | head -3)"; fi
done
# The default output is written back as it is made (sync_file_range every 16 MiB) and
# synced before the rename; -t unsafe (qemu-img's own default) does neither.
if command -v strace >/dev/null; then
  rm -f st.qcow2
  strace -f -qq -e trace=sync_file_range,fdatasync,fsync -o st.log "$VTOOL" img convert -O qcow2 geo.raw st.qcow2
  n=$(grep -c 'sync_file_range(.*SYNC_FILE_RANGE_WRITE' st.log || true)
  [ "$n" -ge 2 ] && pass || fail "convert: writeback started $n times for 40 MiB, want at least 2"
  grep -qE 'f(data)?sync\(' st.log && pass || fail "convert: the output was never synced"
  rm -f st.qcow2
  strace -f -qq -e trace=sync_file_range,fdatasync,fsync -o st.log "$VTOOL" img convert -t unsafe -O qcow2 geo.raw st.qcow2
  strace -f -qq -e trace=fdatasync,fsync -o create.log "$VTOOL" img create -q -f qcow2 st2.qcow2 40M
  if grep -q sync_file_range st.log || [ "$(grep -c sync st.log)" != "$(grep -c sync create.log)" ]; then
    fail "convert -t unsafe syncs more than creating the output does: $(grep -c sync st.log) vs $(grep -c sync create.log)"
  else pass; fi
fi
ls -A | grep -q '\.vtool-' && fail "temporary files left: $(ls -A | grep vtool-)" || pass

finish
