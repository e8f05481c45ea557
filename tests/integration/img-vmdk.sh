#!/usr/bin/env bash
# VMDK against qemu-img, both directions, for every subformat (monolithicSparse,
# monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized):
# - images qemu-img made from a mixed source (random, zero and compressible regions, a
#   size that is no multiple of the grain; over 2 GiB for the split subformats, with data
#   across the extent boundary): vtool info (JSON and human), convert -O raw, compare, map
#   and check say what qemu-img says;
# - images vtool made (create, convert from raw and qcow2, random writes through blk.h):
#   qemu-img compare finds them identical with their source and qemu-img check clean; a
#   fresh image is byte-identical to qemu-img's but for the CID;
# - create's -o help, Formatting line and option errors are qemu-img's;
# - backing files (parentFileNameHint, the CID rule), VMware's footer streams, and a
#   missing extent (a one-line error that names it).
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
: "${BLKIO:?}"
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
qemu-img convert -O qcow2 src.raw src.qcow2

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

# same_image A B: the same files but for the random CID (a sparse file's descriptor sits
# in a fixed 20-sector area, so a CID of other length shifts only the text there).
same_image() {
  python3 - "$1" "$2" <<'PY'
import re, sys
def norm(path):
    d = open(path, "rb").read()
    if d[:4] == b"KDMV":
        text, d = d[512:512 + 10240].split(b"\0")[0], d[:512] + bytes(10240) + d[512 + 10240:]
    else:
        text, d = d, b""
    return re.sub(rb"\nCID=[0-9a-f]+\n", b"\nCID=x\n", text), d
sys.exit(0 if norm(sys.argv[1]) == norm(sys.argv[2]) else 1)
PY
}

check_clean() {
  if qemu-img check -q "$1" >"$T/chk" 2>&1; then pass; else fail "qemu-img check $1 ($2): $(cat "$T/chk")"; fi
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

# ---- images vtool made ----------------------------------------------------------------
for s in "${subformats[@]}"; do
  mkdir "c-$s" "cq-$s"
  expect_rc 0 "$VTOOL" img create -f vmdk -o subformat=$s "c-$s/img.vmdk" 3G
  sed "s/c-$s/X/" "$T/out" >"$T/vline"
  qemu-img create -f vmdk -o subformat=$s "cq-$s/img.vmdk" 3G | sed "s/cq-$s/X/" >"$T/qline"
  if diff "$T/vline" "$T/qline" >/dev/null; then pass; else fail "$s Formatting: $(cat "$T/vline") vs $(cat "$T/qline")"; fi
  for f in "cq-$s"/*; do
    b=$(basename "$f")
    if [ "$(stat -c %s "$f")" -gt 100000000 ]; then
      if cmp -s "$f" "c-$s/$b"; then pass; else fail "$s: $b differs from qemu-img's"; fi
    elif same_image "$f" "c-$s/$b"; then pass
    else fail "$s: $b differs from qemu-img's beyond the CID: $(cmp "$f" "c-$s/$b")"; fi
  done
  check_clean "c-$s/img.vmdk" "created $s"
  same "$s created: info json" "$VTOOL" img info --output=json "c-$s/img.vmdk" -- qemu-img info --output=json "c-$s/img.vmdk"
  rm -rf "c-$s" "cq-$s"

  # convert from raw and qcow2: identical for qemu, clean, no larger than qemu-img's
  for src in src.raw src.qcow2; do
    rm -rf o; mkdir o
    expect_rc 0 "$VTOOL" img convert -O vmdk -o subformat=$s "$src" o/img.vmdk
    expect_rc 0 qemu-img compare src.raw o/img.vmdk
    check_clean o/img.vmdk "convert $src -> $s"
    qemu-img convert -O vmdk -o subformat=$s "$src" o/q.vmdk
    vb=$(du -b o/img.vmdk | cut -f1); qb=$(du -b o/q.vmdk | cut -f1)
    if [ "$vb" -le "$qb" ]; then pass; else fail "convert $src -> $s: $vb bytes > qemu-img's $qb"; fi
  done

  # random writes (unaligned, grain-straddling, zeroing) through blk.h
  for size in 24M 3G; do
    case $s:$size in *:3G) case $s in twoGb*|streamOptimized) ;; *) continue ;; esac ;; esac
    rm -rf w; mkdir w
    "$VTOOL" img create -q -f vmdk -o subformat=$s w/img.vmdk $size
    truncate -s $size w/shadow
    expect_rc 0 "$BLKIO" write w/img.vmdk vmdk w/shadow 11 60
    expect_rc 0 qemu-img compare -f raw -F vmdk w/shadow w/img.vmdk
    check_clean w/img.vmdk "written $s $size"
    # and again on top, reopened (grains rewritten; for streams, appended again)
    expect_rc 0 "$BLKIO" write w/img.vmdk vmdk w/shadow 12 30
    expect_rc 0 qemu-img compare -f raw -F vmdk w/shadow w/img.vmdk
    check_clean w/img.vmdk "rewritten $s $size"
  done
done
# zeroed_grain=on: zero writes become GTE 1
rm -rf w; mkdir w
"$VTOOL" img create -q -f vmdk -o zeroed_grain=on w/img.vmdk 24M
truncate -s 24M w/shadow
expect_rc 0 "$BLKIO" write w/img.vmdk vmdk w/shadow 5 80
expect_rc 0 qemu-img compare -f raw -F vmdk w/shadow w/img.vmdk
check_clean w/img.vmdk "zeroed_grain written"
# a qemu-made stream, written by vtool (qemu itself refuses to rewrite a grain)
qemu-img convert -O vmdk -o subformat=streamOptimized src.raw qs.vmdk
cp src.raw qs.shadow
expect_rc 0 "$BLKIO" write qs.vmdk vmdk qs.shadow 21 40
expect_rc 0 qemu-img compare -f raw -F vmdk qs.shadow qs.vmdk
check_clean qs.vmdk "qemu stream written by vtool"

# compressed whole-grain writes (blk_write_compressed: convert -c): deflated into a stream,
# written plainly elsewhere, as qemu's driver does
for o in subformat=streamOptimized subformat=monolithicSparse; do
  rm -rf w; mkdir w
  "$VTOOL" img create -q -f vmdk -o $o w/img.vmdk 7M
  truncate -s 7M w/shadow
  expect_rc 0 "$BLKIO" writec w/img.vmdk vmdk w/shadow 3 120
  expect_rc 0 qemu-img compare -f raw -F vmdk w/shadow w/img.vmdk
  check_clean w/img.vmdk "compressed writes ($o)"
done

# ---- crash consistency: a writer killed at a random moment leaves a clean image --------
qemu-img create -q -f vmdk base-c.vmdk 16M
RANDOM=7
copts=("" "subformat=streamOptimized" "zeroed_grain=on" "subformat=twoGbMaxExtentSparse")
for i in $(seq 0 7); do
  o=${copts[$((i % ${#copts[@]}))]}
  rm -rf k; mkdir k
  if [ $((i % 3)) -eq 0 ] && [ "$o" != subformat=twoGbMaxExtentSparse ]; then
    cp base-c.vmdk k/base.vmdk
    "$VTOOL" img create -q -f vmdk ${o:+-o "$o"} -b base.vmdk -F vmdk k/img.vmdk 16M
  else
    "$VTOOL" img create -q -f vmdk ${o:+-o "$o"} k/img.vmdk 16M
  fi
  "$BLKIO" crash k/img.vmdk vmdk $((i + 1)) &
  pid=$!
  sleep "0.$((RANDOM % 4 + 1))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  check_clean k/img.vmdk "killed writer #$i ('$o')"
done

# ---- create: options, Formatting line, errors ------------------------------------------
"$VTOOL" img create -f vmdk -o help x.vmdk | grep -Eo '^  [a-z_0-9]+=' | sort >"$T/vh"
qemu-img create -f vmdk -o help x.vmdk | grep -Eo '^  [a-z_0-9]+=' | sort >"$T/qh"
if [ -s "$T/qh" ] && diff "$T/vh" "$T/qh" >/dev/null; then pass; else fail "-o help options: $(diff "$T/vh" "$T/qh")"; fi
"$VTOOL" img create -f vmdk -o help x.vmdk | grep '^  ' >"$T/vh"
qemu-img create -f vmdk -o help x.vmdk | grep '^  ' >"$T/qh"
if diff "$T/vh" "$T/qh" >/dev/null; then pass; else fail "-o help lines: $(diff "$T/vh" "$T/qh")"; fi
for o in "" "adapter_type=lsilogic,toolsversion=123,zeroed_grain=on,hwversion=7" \
         "compat6=yes,zeroed_grain=true" "compat6" "compat6=on,hwversion=undefined" \
         "preallocation=off,nocow=off,extent_size_hint=2M" "adapter_type=buslogic" \
         "adapter_type=legacyESX,subformat=streamOptimized"; do
  rm -rf f1 f2; mkdir f1 f2
  expect_rc 0 "$VTOOL" img create -f vmdk ${o:+-o "$o"} f1/x.vmdk 1000M
  sed 's/f1/X/' "$T/out" >"$T/vline"
  qemu-img create -f vmdk ${o:+-o "$o"} f2/x.vmdk 1000M | sed 's/f2/X/' >"$T/qline"
  if diff "$T/vline" "$T/qline" >/dev/null; then pass; else fail "Formatting for '$o': $(cat "$T/vline") vs $(cat "$T/qline")"; fi
  if same_image f1/x.vmdk f2/x.vmdk; then pass
  else fail "image for '$o' differs from qemu-img's: $(cmp f1/x.vmdk f2/x.vmdk)"; fi
done
for o in "subformat=foo" "adapter_type=scsi" "compat6=on,hwversion=4" \
         "subformat=monolithicFlat,zeroed_grain=on" "preallocation=sometimes" "compat6=maybe"; do
  expect_rc 1 "$VTOOL" img create -f vmdk -o "$o" bad.vmdk 1M
  qemu-img create -f vmdk -o "$o" bad.vmdk 1M 2>"$T/qerr" >/dev/null
  want=$(sed 's/^qemu-img: bad.vmdk: //' "$T/qerr")
  if grep -qF -- "$want" "$T/err"; then pass; else fail "create -o '$o': '$(cat "$T/err")' lacks qemu's '$want'"; fi
done
qemu-img create -q -f vmdk base.vmdk 1M
expect_rc 1 "$VTOOL" img create -f vmdk -o subformat=monolithicFlat -b base.vmdk -F vmdk flat.vmdk
expect_grep "Flat image can't have backing file" "$T/err"
qemu-img create -q -f qcow2 base.qcow2 1M
expect_rc 1 "$VTOOL" img create -f vmdk -b base.qcow2 -F qcow2 c.vmdk
expect_grep "backing_file must be a vmdk image" "$T/err"

# ---- backing files --------------------------------------------------------------------
qemu-img convert -O vmdk src.raw base.vmdk
qemu-img create -q -f vmdk -b base.vmdk -F vmdk qchild.vmdk
qemu-io -c "write -P 0x77 64k 100k" qchild.vmdk >/dev/null
same "qemu child: info chain json" "$VTOOL" img info --backing-chain --output=json qchild.vmdk -- qemu-img info --backing-chain --output=json qchild.vmdk
same "qemu child: map" "$VTOOL" img map --output=json qchild.vmdk -- qemu-img map --output=json qchild.vmdk
qemu-img convert -O raw qchild.vmdk qchild.raw
expect_rc 0 "$VTOOL" img compare qchild.raw qchild.vmdk
expect_rc 0 "$VTOOL" img create -f vmdk -b base.vmdk -F vmdk vchild.vmdk
expect_grep "^Formatting 'vchild.vmdk', fmt=vmdk size=5244416 backing_file=base.vmdk backing_fmt=vmdk compat6=off hwversion=undefined$" "$T/out"
same "vtool child: info" "$VTOOL" img info vchild.vmdk -- qemu-img info vchild.vmdk
cp src.raw vchild.shadow
expect_rc 0 "$BLKIO" write vchild.vmdk vmdk vchild.shadow 31 40
expect_rc 0 qemu-img compare -f raw -F vmdk vchild.shadow vchild.vmdk
check_clean vchild.vmdk "child written by vtool"
# The parent changes: its CID does too, and reads that fall through to it fail (qemu's
# rule), in vtool as in qemu.
qemu-io -c "write -P 0x99 0 4k" base.vmdk >/dev/null
expect_rc 1 "$VTOOL" img convert -O raw vchild.vmdk stale.raw
expect_grep "parent changed" "$T/err"
expect_lines 1 "$T/err"
if qemu-img convert -O raw vchild.vmdk stale.raw 2>/dev/null; then fail "qemu reads a child of a changed parent"; else pass; fi
# vtool's own first write gives the image a new CID (in place, same length), as qemu's
# does: a child made before then refuses to read through it, in qemu too.
cid() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["cid"])'; }
cp base.vmdk base2.vmdk
qemu-img convert -O raw base2.vmdk base2.shadow
"$VTOOL" img create -q -f vmdk -b base2.vmdk -F vmdk c2.vmdk
if qemu-io -c "read 0 4k" c2.vmdk >/dev/null 2>&1; then pass; else fail "qemu cannot read a fresh vtool child"; fi
before=$(cid base2.vmdk); len=$(stat -c %s base2.vmdk)
expect_rc 0 "$BLKIO" write base2.vmdk vmdk base2.shadow 41 3
after=$(cid base2.vmdk)
if [ "$before" != "$after" ]; then pass; else fail "the CID did not change on write"; fi
expect_rc 0 qemu-img compare -f raw -F vmdk base2.shadow base2.vmdk
if qemu-io -c "read 0 4k" c2.vmdk >/dev/null 2>&1; then fail "qemu still reads the stale child"; else pass; fi

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
expect_rc 1 "$BLKIO" write vm.vmdk vmdk src.raw 1 1
expect_grep "can only be read" "$T/err"

# ---- a missing extent: one line naming it ----------------------------------------------
mkdir miss
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse miss/img.vmdk 3G
rm miss/img-s002.vmdk
expect_rc 1 "$VTOOL" img info miss/img.vmdk
expect_lines 1 "$T/err"
expect_grep "img-s002.vmdk" "$T/err"

# convert to an image of several files: the extents are named after the output, as
# qemu-img names them, and nothing is left under a temporary name; -c with vmdk works.
mkdir -p cv && head -c 5M /dev/urandom >cv/src.raw
for sub in monolithicFlat twoGbMaxExtentFlat twoGbMaxExtentSparse; do
  rm -rf cv/v cv/q && mkdir -p cv/v cv/q
  expect_rc 0 "$VTOOL" img convert -O vmdk -o subformat=$sub cv/src.raw cv/v/out.vmdk
  qemu-img convert -O vmdk -o subformat=$sub cv/src.raw cv/q/out.vmdk
  [ "$(ls -A cv/v)" = "$(ls -A cv/q)" ] && pass || fail "$sub: files $(ls -A cv/v | tr '\n' ' ') vs qemu's $(ls -A cv/q | tr '\n' ' ')"
  expect_rc 0 qemu-img compare cv/src.raw cv/v/out.vmdk
done
expect_rc 0 "$VTOOL" img convert -c -O vmdk -o subformat=streamOptimized cv/src.raw cv/c.vmdk
expect_rc 0 qemu-img compare cv/src.raw cv/c.vmdk
expect_rc 0 qemu-img check cv/c.vmdk

finish
