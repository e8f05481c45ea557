#!/usr/bin/env bash
# VMDK images qemu-img made, read by vtool, for every subformat (monolithicSparse,
# monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized): from a mixed
# source (random, zero and compressible regions, a size that is no multiple of the grain;
# over 2 GiB for the split subformats, with data across the extent boundary), vtool info
# (JSON and human), convert -O raw, compare, map and check say what qemu-img says; also
# zeroed grains, backing files (parentFileNameHint, the CID rule), VMware's footer
# streams, and a missing extent (a one-line error that names it).
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

subformats=(monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized)

# The mixed source: 5 MiB + 1536 bytes (not a grain multiple) with random, compressible
# and zero regions; big.raw is 2 GiB + 3 MiB + 1536 with data across the 2 GiB boundary.
python3 - <<'PY'
import random
rng = random.Random(42)
text = b"".join(b"vmdk grain %d compressible text; " % i for i in range(4000))
for name, size, regions in (
        ("src.raw", (5 << 20) + 1536, [(0, rng.randbytes(100000)), (1 << 20, text[:300000]),
                                       (3 << 20, bytes(200000)), ((5 << 20) - 70000,
                                                                  rng.randbytes(71536))]),
        ("big.raw", (2 << 30) + (3 << 20) + 1536, [(0, rng.randbytes(70000)),
                                                   ((2 << 30) - 100000, rng.randbytes(300000)),
                                                   ((2 << 30) + (2 << 20), text[:100000])])):
    with open(name, "wb") as f:
        f.truncate(size)
        for off, data in regions:
            f.seek(off)
            f.write(data)
PY

same() { # same WHAT CMD... -- CMD...: both commands print the same and exit alike
  local what=$1; shift
  local a=() b=()
  while [ "$1" != -- ]; do a+=("$1"); shift; done; shift; b=("$@")
  local ra=0 rb=0
  "${a[@]}" >"$T/a.out" 2>/dev/null || ra=$?
  "${b[@]}" >"$T/b.out" 2>/dev/null || rb=$?
  if [ "$ra" = "$rb" ] && diff "$T/a.out" "$T/b.out" >"$T/d"; then pass
  else fail "$what: rc $ra vs $rb: $(head -c 600 "$T/d")"; fi
}

# ---- images qemu-img made -------------------------------------------------------------
for s in "${subformats[@]}"; do
  srcs=(src.raw)
  case $s in twoGb*) srcs+=(big.raw) ;; esac
  for src in "${srcs[@]}"; do
    d=q-$s-${src%.raw}
    mkdir "$d"
    qemu-img convert -O vmdk -o subformat=$s "$src" "$d/img.vmdk"
    same "$s/$src info json" "$VTOOL" img info --output=json "$d/img.vmdk" -- qemu-img info --output=json "$d/img.vmdk"
    same "$s/$src info" "$VTOOL" img info "$d/img.vmdk" -- qemu-img info "$d/img.vmdk"
    same "$s/$src map json" "$VTOOL" img map --output=json "$d/img.vmdk" -- qemu-img map --output=json "$d/img.vmdk"
    same "$s/$src check" "$VTOOL" img check "$d/img.vmdk" -- qemu-img check "$d/img.vmdk"
    same "$s/$src check json" "$VTOOL" img check --output=json "$d/img.vmdk" -- qemu-img check --output=json "$d/img.vmdk"
    same "$s/$src compare" "$VTOOL" img compare "$src" "$d/img.vmdk" -- qemu-img compare "$src" "$d/img.vmdk"
    expect_rc 0 "$VTOOL" img convert -O raw "$d/img.vmdk" "$d/v.raw"
    qemu-img convert -O raw "$d/img.vmdk" "$d/q.raw"
    if cmp -s "$d/v.raw" "$d/q.raw"; then pass; else fail "$s/$src: convert -O raw differs from qemu-img's"; fi
    rm -f "$d/v.raw" "$d/q.raw"
  done
done
# The human map of a sparse image (flat ones name the extent file, which vtool's map
# cannot know): same lines.
same "map human" "$VTOOL" img map q-monolithicSparse-src/img.vmdk -- qemu-img map q-monolithicSparse-src/img.vmdk

# zeroed grains (GTE 1) and a grain size qemu does not write (a VMware-style 4 KiB
# grain... made by patching qemu's header is not valid; zeroed grains are): qemu-io
# zeroes whole grains of a zeroed_grain=on image.
qemu-img create -q -f vmdk -o zeroed_grain=on zg.vmdk 8M
qemu-io -c "write -P 0x5a 0 4M" -c "write -z 1M 1M" -c "write -z 3M 64k" zg.vmdk >/dev/null
same "zeroed grains: map" "$VTOOL" img map --output=json zg.vmdk -- qemu-img map --output=json zg.vmdk
qemu-img convert -O raw zg.vmdk zg-q.raw
expect_rc 0 "$VTOOL" img convert -O raw zg.vmdk zg-v.raw
if cmp -s zg-q.raw zg-v.raw; then pass; else fail "zeroed grains read differently"; fi

# ---- backing files --------------------------------------------------------------------
qemu-img convert -O vmdk src.raw base.vmdk
qemu-img create -q -f vmdk -b base.vmdk -F vmdk qchild.vmdk
qemu-io -c "write -P 0x77 64k 100k" qchild.vmdk >/dev/null
same "qemu child: info chain json" "$VTOOL" img info --backing-chain --output=json qchild.vmdk -- qemu-img info --backing-chain --output=json qchild.vmdk
same "qemu child: map" "$VTOOL" img map --output=json qchild.vmdk -- qemu-img map --output=json qchild.vmdk
qemu-img convert -O raw qchild.vmdk qchild.raw
expect_rc 0 "$VTOOL" img compare qchild.raw qchild.vmdk
# The parent changes: its CID does too, and reads that fall through to it fail (qemu's
# rule), in vtool as in qemu.
qemu-io -c "write -P 0x99 0 4k" base.vmdk >/dev/null
expect_rc 1 "$VTOOL" img convert -O raw qchild.vmdk stale.raw
expect_grep "parent changed" "$T/err"
expect_lines 1 "$T/err"
if qemu-img convert -O raw qchild.vmdk stale.raw 2>/dev/null; then fail "qemu reads a child of a changed parent"; else pass; fi

# ---- VMware's stream layout: grain directory in a footer at the end ----------------------
python3 - <<'PY'
import struct, zlib
grain = 65536
data = open("src.raw", "rb").read()
size = len(data)
capacity = (size + 511) // 512
ngrains = (capacity + 127) // 128
ngts = (ngrains + 511) // 512
out = bytearray(512 * 128)      # header + descriptor, grains from sector 128
desc = (b'# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
        b'createType="streamOptimized"\n\n# Extent description\nRW %d SPARSE "vm.vmdk"\n' % capacity)
out[512:512 + len(desc)] = desc
def hdr(gd):
    h = bytearray(512)
    struct.pack_into("<4sIIQQQQIQQQB4sH", h, 0, b"KDMV", 3, 0x30001, capacity, 128, 1, 20, 512,
                     0, gd, 128, 0, b"\n \r\n", 1)
    return h
gts = [[0] * 512 for _ in range(ngts)]
for g in range(ngrains):
    chunk = data[g * grain:(g + 1) * grain]
    if not chunk.strip(b"\0"):
        continue
    z = zlib.compress(chunk)
    gts[g // 512][g % 512] = len(out) // 512
    rec = struct.pack("<QI", g * 128, len(z)) + z
    out += rec + bytes(-len(rec) % 512)
gd = []
for t in gts:
    out += struct.pack("<QII", 4, 0, 1) + bytes(496)      # grain table marker
    gd.append(len(out) // 512)
    out += struct.pack("<512I", *t)
out += struct.pack("<QII", 1, 0, 2) + bytes(496)          # grain directory marker
gdsec = len(out) // 512
out += struct.pack("<%dI" % ngts, *gd) + bytes(-4 * ngts % 512)
out += struct.pack("<QII", 1, 0, 3) + bytes(496)          # footer marker
out += hdr(gdsec)
out += bytes(512)                                         # end of stream
out[0:512] = hdr(0xffffffffffffffff)
open("vm.vmdk", "wb").write(out)
PY
same "footer stream: info" "$VTOOL" img info --output=json vm.vmdk -- qemu-img info --output=json vm.vmdk
same "footer stream: map" "$VTOOL" img map --output=json vm.vmdk -- qemu-img map --output=json vm.vmdk
expect_rc 0 "$VTOOL" img compare src.raw vm.vmdk

# ---- a missing extent: one line naming it ----------------------------------------------
mkdir miss
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse miss/img.vmdk 3G
rm miss/img-s002.vmdk
expect_rc 1 "$VTOOL" img info miss/img.vmdk
expect_lines 1 "$T/err"
expect_grep "img-s002.vmdk" "$T/err"

finish
