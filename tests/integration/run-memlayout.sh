#!/usr/bin/env bash
# The split of guest RAM below and above 4 GiB, as SeaBIOS sees it, against qemu's "pc"
# machine: RAM under 3.5 GiB stays below 4 GiB (the PCI hole starts where it ends); from
# 3.5 GiB on, low RAM ends at 3 GiB and the rest is at 4 GiB (hw/i386/pc_piix.c,
# gigabyte_align). For each -m, vtool and qemu-system-x86_64 -enable-kvm boot the same
# virtio-blk boot sector with a VGA, and SeaBIOS's debug log (isa-debugcon) must show the
# same fw_cfg e820 table ("qemu/e820:"), the same 32-bit PCI window, the same final e820
# map (but for where SeaBIOS's own reservation at the top of low RAM starts: it holds the
# ACPI tables, which differ in size), the VGA framebuffer at the same address, every memory
# BAR inside the window, and the same serial text (the virtio-blk disk booted).
# Guest RAM is mapped NORESERVE: 4 GiB guests cost the host little. Each SeaBIOS boot is
# ~2.5 s here; the default run takes a few sizes, VTOOL_SLOW_TESTS=1 the edges as well.
. "$(dirname "$0")/lib.sh"
: "${BOOTSECT:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }
BIOS=/usr/share/seabios/bios-256k.bin
[ -f "$BIOS" ] || { echo "SKIP: $BIOS missing (apt-get install seabios)"; exit 77; }
have_qemu=0
command -v qemu-system-x86_64 >/dev/null && have_qemu=1
# The sanitizer build runs vtool's side of one size, against the values qemu gives.
[ -n "${VTOOL_SANITIZED:-}" ] && have_qemu=0

dd if=/dev/zero of="$T/vblk.raw" bs=1M count=1 2>/dev/null
dd if="$BOOTSECT" of="$T/vblk.raw" conv=notrunc 2>/dev/null
printf 'VIRTIO-BLK\0' | dd of="$T/vblk.raw" bs=1 seek=$((0x1a0)) conv=notrunc 2>/dev/null

ARGS=(-nographic -vga std -device isa-debug-exit,iobase=0x501,iosize=2
      -drive "file=$T/vblk.raw,format=raw,if=virtio")
# boot_vt/boot_q NAME MIB: serial in $T/NAME, debug log in $T/NAME.log; $rc / $qrc
boot_vt() {
  rc=0
  timeout 90 "$VTOOL" run -m "$2" "${ARGS[@]}" -serial "file:$T/$1" \
    -chardev "file,id=dbg,path=$T/$1.log" -device isa-debugcon,iobase=0x402,chardev=dbg \
    </dev/null >/dev/null 2>"$T/$1.err" || rc=$?
}
boot_q() {
  qrc=0
  timeout 90 qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults -m "$2" "${ARGS[@]}" \
    -serial "file:$T/$1" -chardev "file,id=dbg,path=$T/$1.log" \
    -device isa-debugcon,iobase=0x402,chardev=dbg </dev/null >/dev/null 2>"$T/$1.err" || qrc=$?
}

# layout LOG: what of the memory layout the log shows, one fact a line
layout() {
  python3 - "$1" <<'EOF'
import re, sys
log = open(sys.argv[1], errors="replace").read().splitlines()
low_end = None
for l in log:
    m = re.match(r"qemu/e820: addr 0x([0-9a-f]+) len 0x([0-9a-f]+) \[(\w+)\]", l)
    if m:
        print(l)
        if int(m[1], 16) == 0:
            low_end = int(m[2], 16)
    elif l.startswith("PCI: 32: ") or "lfb_addr=" in l:
        print(l.strip())
# the last "e820 map" SeaBIOS prints; the start of its reservation that ends where low
# RAM ends (its ZoneHigh and the ACPI tables) becomes TOP
e820 = []
for l in log:
    if l.startswith("e820 map has "):
        e820 = []
    m = re.match(r"\s+\d+: ([0-9a-f]{16}) - ([0-9a-f]{16}) = (\d+)", l)
    if m:
        e820.append([int(m[1], 16), int(m[2], 16), int(m[3])])
out = [[f"{s:016x}", f"{e:016x}", t] for s, e, t in e820]
for i in range(len(e820) - 1):
    a, b = e820[i], e820[i + 1]
    if a[2] == 1 and b[2] == 2 and a[1] == b[0] and b[1] == low_end:
        out[i][1] = out[i + 1][0] = "TOP"
for s, e, t in out:
    print(f"e820: {s} - {e} = {t}")
EOF
}

# bars LOG: a line per memory BAR outside the 32-bit PCI window or below the end of low RAM
bars() {
  python3 - "$1" <<'EOF'
import re, sys
log = open(sys.argv[1], errors="replace").read()
low = max([int(m[1], 16) + int(m[2], 16) for m in
           re.finditer(r"qemu/e820: addr 0x([0-9a-f]+) len 0x([0-9a-f]+) \[RAM\]", log)
           if int(m[1], 16) < 1 << 32] or [0])
w = re.search(r"PCI: 32: ([0-9a-f]+) - ([0-9a-f]+)", log)
if not w:
    print("no 32-bit PCI window in the log")
    sys.exit()
lo, hi = int(w[1], 16), int(w[2], 16)
n = 0
for m in re.finditer(r"PCI: map device (bdf=\S+)\s+bar (\d+), addr ([0-9a-f]+), size ([0-9a-f]+) \[(mem|prefmem)\]", log):
    a, s = int(m[3], 16), int(m[4], 16)
    n += 1
    if a < max(lo, low) or a + s > hi:
        print(f"{m[1]} bar {m[2]} at {a:#x}+{s:#x}: outside [{max(lo, low):#x}, {hi:#x})")
if not n:
    print("no memory BARs mapped")
EOF
}

check_size() { # MIB
  local m=$1
  boot_vt "vt$m" "$m"
  if [ "$rc" -eq 99 ]; then pass; else fail "-m $m: exit $rc, want 99: $(head -c 300 "$T/vt$m.err")"; fi
  expect_grep '^BOOT-SECTOR tag=VIRTIO-BLK ' "$T/vt$m"
  layout "$T/vt$m.log" >"$T/vt$m.layout"
  bars "$T/vt$m.log" >"$T/vt$m.bars"
  if [ ! -s "$T/vt$m.bars" ]; then pass; else fail "-m $m: $(tr '\n' '|' <"$T/vt$m.bars")"; fi
  if [ $have_qemu = 1 ]; then
    boot_q "q$m" "$m"
    layout "$T/q$m.log" >"$T/q$m.layout"
    if [ -s "$T/q$m.layout" ] && cmp -s "$T/vt$m.layout" "$T/q$m.layout"; then pass
    else fail "-m $m: memory layout differs from qemu's (< vtool, > qemu): $(diff "$T/vt$m.layout" "$T/q$m.layout" | grep '^[<>]' | tr '\n' '|')"; fi
    if [ "$qrc" -eq "$rc" ] && cmp -s "$T/vt$m" "$T/q$m"; then pass
    else fail "-m $m: vtool rc $rc vs qemu $qrc; serial differs: $(diff <(cat -v "$T/vt$m") <(cat -v "$T/q$m") | head -4)"; fi
  fi
}

if [ $have_qemu = 0 ]; then
  # qemu 7.2's answer for -m 3200 (all of it below 4 GiB; the window starts at its end)
  check_size 3200
  expect_grep '^qemu/e820: addr 0x0000000000000000 len 0x00000000c8000000 \[RAM\]$' "$T/vt3200.layout"
  if grep -q '^qemu/e820: addr 0x0000000100000000' "$T/vt3200.layout"; then
    fail "-m 3200: RAM above 4 GiB"; else pass; fi
  expect_grep '^PCI: 32: 00000000c8000000 - 00000000fec00000$' "$T/vt3200.layout"
  finish
fi

# 3200: between 3 and 3.5 GiB (all below 4 GiB); 3584: the split (3 GiB + 512 MiB above);
# 4096: 3 GiB + 1 GiB above; 2048: well below (the window starts at 2 GiB).
# The default run keeps the two that tell the rules apart (the unit test covers every
# size's arithmetic); VTOOL_SLOW_TESTS=1 boots all of them.
sizes=(3200 3584)
# the edges: exactly 3 GiB, one MiB short of the split, and large
[ "${VTOOL_SLOW_TESTS:-0}" = 1 ] && sizes+=(4096 2048 3072 3583 6144)
for m in "${sizes[@]}"; do
  check_size "$m"
done
finish
