#!/usr/bin/env bash
# The convert options of the img-ops work, against qemu-img: -O FMT -o help, --image-opts
# and --target-image-opts, --object secrets, -C (copy offloading: copy_file_range seen
# under strace where it applies, the same bytes either way), --salvage (a corrupt
# compressed cluster: the same output and warnings as qemu-img), --skip-broken-bitmaps alone;
# and img info on encrypted qcow2 images (AES and LUKS, made by qemu) without a key:
# the same human and JSON output as qemu-img info, data reads refused without the key
# (img-encrypt.sh reads them with it).
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

qemu-img create -q -f raw in.raw 4M
qemu-io -f raw -c "write -P 7 0 1M" -c "write -P 8 3M 64k" -c "write -z 1M 64k" in.raw >/dev/null
qemu-img convert -O qcow2 in.raw in.qcow2

# -o help for the output format.
for f in qcow2 raw vdi qed vpc vhdx; do
  expect_rc 0 "$VTOOL" img convert -O "$f" -o help
  expect_grep "^Supported $f options:" "$T/out"
done
expect_rc 0 "$VTOOL" img convert -O qcow2 -o help
qemu-img create -f qcow2 -o help >"$T/qhelp"
if cmp -s "$T/out" "$T/qhelp"; then pass; else fail "convert -O qcow2 -o help differs from qemu-img create's"; fi
expect_rc 1 "$VTOOL" img convert -O nosuch -o help
expect_grep "Unknown file format 'nosuch'" "$T/err"

# --image-opts / --target-image-opts.
expect_rc 0 "$VTOOL" img convert --image-opts driver=qcow2,file.filename=in.qcow2 o1.raw
cmp -s in.raw o1.raw && pass || fail "--image-opts output differs"
expect_rc 0 "$VTOOL" img convert -O qcow2 --image-opts driver=raw,file.driver=file,file.filename=in.raw o1.qcow2
expect_rc 0 qemu-img compare -q -F raw o1.qcow2 in.raw
qemu-img create -q -f raw t.raw 4M
expect_rc 0 "$VTOOL" img convert -n --target-image-opts in.qcow2 driver=raw,file.filename=t.raw
cmp -s in.raw t.raw && pass || fail "--target-image-opts output differs"
expect_rc 1 "$VTOOL" img convert --target-image-opts in.qcow2 driver=raw,file.filename=t.raw
expect_grep "target-image-opts requires use of -n flag" "$T/err"
expect_rc 1 "$VTOOL" img convert -f qcow2 --image-opts driver=qcow2,file.filename=in.qcow2 o.raw
expect_grep "image-opts and --format are mutually exclusive" "$T/err"
expect_rc 1 "$VTOOL" img convert --image-opts driver=qcow2,file.filename=in.qcow2,foo=1 o.raw
expect_grep "Block format 'qcow2' does not support the option 'foo'" "$T/err"
expect_rc 1 "$VTOOL" img convert --image-opts in.qcow2 o.raw
expect_grep "Cannot find device='in.qcow2' nor node-name='in.qcow2'" "$T/err"

# --object.
expect_rc 0 "$VTOOL" img convert --object secret,id=s0,data=pw -O qcow2 in.raw o2.qcow2
printf 'pw' >pw.txt
expect_rc 0 "$VTOOL" img convert --object secret,id=s0,file=pw.txt,format=raw -O raw in.raw o2.raw
expect_rc 1 "$VTOOL" img convert --object secret,id=s0 in.raw o.raw
expect_grep "Either 'file' or 'data' must be provided" "$T/err"
expect_rc 1 "$VTOOL" img convert --object secret,data=x in.raw o.raw
expect_grep "Parameter 'id' is missing" "$T/err"
expect_rc 1 "$VTOOL" img convert --object foo,id=x in.raw o.raw
expect_grep "Parameter 'qom-type' does not accept value 'foo'" "$T/err"
expect_rc 1 "$VTOOL" img convert --object secret,id=s,data=x,format=hex in.raw o.raw
expect_grep "Parameter 'format' does not accept value 'hex'" "$T/err"
expect_rc 1 "$VTOOL" img convert -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s1 in.raw o3.qcow2
expect_grep "error while converting qcow2: No secret with id 's1'" "$T/err"
expect_rc 1 "$VTOOL" img convert --object secret,id=s1,data=x -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s1 in.raw o3.qcow2
expect_grep "encryption is not supported" "$T/err"
[ -e o3.qcow2 ] && fail "a refused convert left an output" || pass

# -C: offloaded where the output is raw, the usual copy elsewhere; the same bytes.
for src in in.raw in.qcow2; do
  rm -f c.raw
  expect_rc 0 "$VTOOL" img convert -C -O raw "$src" c.raw
  cmp -s c.raw in.raw && pass || fail "-C $src: output differs"
done
if command -v strace >/dev/null; then
  rm -f c.raw
  strace -f -e trace=copy_file_range -o "$T/trace" "$VTOOL" img convert -C -O raw in.qcow2 c.raw
  expect_grep "copy_file_range" "$T/trace"
fi
expect_rc 0 "$VTOOL" img convert -C -O qcow2 in.raw c.qcow2
expect_rc 0 qemu-img compare -q -F raw c.qcow2 in.raw
expect_rc 0 qemu-img check -q c.qcow2
expect_rc 1 "$VTOOL" img convert -C -c -O qcow2 in.raw c2.qcow2
expect_grep "Cannot enable copy offloading when -c is used" "$T/err"
expect_rc 1 "$VTOOL" img convert -C -S 0 in.raw c2.raw
expect_grep "Cannot enable copy offloading when -S is used" "$T/err"
expect_rc 1 "$VTOOL" img convert -C --salvage in.raw c2.raw
expect_grep "Cannot use copy offloading in salvaging mode" "$T/err"

# --salvage: a compressed cluster whose stream is damaged.
qemu-img convert -c -O qcow2 in.raw bad.qcow2
python3 - <<'EOF'
import struct
with open('bad.qcow2', 'r+b') as f:
    h = f.read(112)
    l1 = struct.unpack('>Q', h[40:48])[0]
    f.seek(l1); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2 + 8); e = struct.unpack('>Q', f.read(8))[0]
    f.seek(e & ((1 << 54) - 1)); f.write(b'\xff' * 16)
EOF
expect_rc 1 "$VTOOL" img convert -O raw bad.qcow2 s0.raw
[ -e s0.raw ] && fail "a failed convert left an output" || pass
expect_rc 0 "$VTOOL" img convert --salvage -O raw bad.qcow2 s1.raw
grep -c "warning: error while reading offset" "$T/err" >"$T/n"
qemu-img convert --salvage -O raw bad.qcow2 s2.raw 2>"$T/qerr"
if [ "$(cat "$T/n")" = "$(grep -c 'warning: error while reading offset' "$T/qerr")" ]; then pass
else fail "--salvage: $(cat "$T/n") warnings, qemu's $(grep -c warning "$T/qerr")"; fi
cmp -s s1.raw s2.raw && pass || fail "--salvage output differs from qemu-img's"
expect_rc 0 "$VTOOL" img convert -q --salvage -O raw bad.qcow2 s3.raw
expect_lines 0 "$T/err"

# --bitmaps: img-bitmap.sh tests the copy; here only the option check.
expect_rc 1 "$VTOOL" img convert --skip-broken-bitmaps -O qcow2 in.qcow2 b.qcow2
expect_grep "Use of --skip-broken-bitmaps requires --bitmaps" "$T/err"

# img info on encrypted images, no key given.
qemu-img create -q -f qcow2 --object secret,id=s,data=pw \
  -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10 luks.qcow2 1M
qemu-io --object secret,id=s,data=pw -c "write -P 3 0 64k" \
  --image-opts driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=s >/dev/null
qemu-img create -q -f qcow2 --object secret,id=s,data=pw \
  -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha1 \
  luks2.qcow2 1M
qemu-img create -q -f qcow2 --object secret,id=s,data=pw -o encrypt.format=aes,encrypt.key-secret=s \
  aes.qcow2 1M 2>/dev/null
for img in luks.qcow2 luks2.qcow2 aes.qcow2; do
  for out in human json; do
    expect_rc 0 "$VTOOL" img info --output=$out "$img"
    qemu-img info --output=$out "$img" >"$T/q"
    if cmp -s "$T/out" "$T/q"; then pass; else fail "info --output=$out $img: $(diff "$T/out" "$T/q" | head -5)"; fi
  done
done
expect_grep "^encrypted: yes" <("$VTOOL" img info aes.qcow2)
expect_rc 0 "$VTOOL" img check luks.qcow2
expect_rc 1 "$VTOOL" img convert -O raw luks.qcow2 l.raw
expect_grep "encrypted \(LUKS\).*encrypt.key-secret. is required" "$T/err"
expect_rc 1 "$VTOOL" img amend -o lazy_refcounts=on luks.qcow2
expect_grep "encrypted" "$T/err"
# A LUKS crypt method without its header extension (qemu 7.2's info crashes on it).
cp luks.qcow2 nohdr.qcow2
python3 - <<'EOF'
import struct
with open('nohdr.qcow2', 'r+b') as f:
    c0 = bytearray(f.read(65536))
    off = struct.unpack('>I', c0[100:104])[0]
    while True:
        t, n = struct.unpack('>II', c0[off:off + 8])
        if t == 0:
            break
        if t == 0x0537be77:
            c0[off:off + 4] = struct.pack('>I', 0x12345678)   # an unknown extension now
        off += 8 + (n + 7) // 8 * 8
    f.seek(0); f.write(c0)
EOF
expect_rc 1 "$VTOOL" img info nohdr.qcow2
expect_grep "Missing CRYPTO header for crypt method 2" "$T/err"

finish
