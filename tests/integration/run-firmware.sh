#!/usr/bin/env bash
# Firmware boot: vtool run without -kernel runs Debian's SeaBIOS, which boots a boot sector
# of our own (tests/guests/bootsect.S) from an IDE disk (raw and qcow2), an El Torito
# no-emulation ISO on the ATAPI CD-ROM, and a virtio-blk disk, in the order -boot and
# bootindex give. Each boot prints a tag on COM1 and exits through isa-debug-exit;
# qemu-system-x86_64 -enable-kvm with the same media is the oracle: same serial text
# (SeaBIOS's own screen through its serial console with -nographic), same exit status.
# Also: SeaBIOS's debug log (-debugcon) has no line that qemu's logs lack and that points
# at a missing device; ISOLINUX (the loader of distribution ISOs) prints its banner;
# "No bootable device" reboots after the timeout; ELF32 PVH kernels; clear errors.
. "$(dirname "$0")/lib.sh"
: "${BOOTSECT:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }
need qemu-img xorriso as ld
BIOS=/usr/share/seabios/bios-256k.bin
[ -f "$BIOS" ] || { echo "SKIP: $BIOS missing (apt-get install seabios)"; exit 77; }
have_qemu=0
command -v qemu-system-x86_64 >/dev/null && have_qemu=1
# qemu's side of each comparison does not change with vtool's build: the sanitizer build
# runs vtool's side only (every SeaBIOS boot costs seconds here).
[ -n "${VTOOL_SANITIZED:-}" ] && have_qemu=0
REF=${VTOOL_SRC:-.}/../shared/specs/firmware-ref

# --- media: the boot sector with a tag patched in at offset 0x1a0 --------------------
medium() { # NAME TAG: $T/NAME.raw, 1 MiB
  dd if=/dev/zero of="$T/$1.raw" bs=1M count=1 2>/dev/null
  dd if="$BOOTSECT" of="$T/$1.raw" conv=notrunc 2>/dev/null
  printf '%s\0' "$2" | dd of="$T/$1.raw" bs=1 seek=$((0x1a0)) conv=notrunc 2>/dev/null
}
medium ide IDE-DISK
medium qide IDE-QCOW2
qemu-img convert -f raw -O qcow2 "$T/qide.raw" "$T/qide.qcow2"
medium vblk VIRTIO-BLK
medium cd ELTORITO-CD
mkdir -p "$T/iso"
head -c 512 "$T/cd.raw" >"$T/iso/boot.bin"
xorriso -as mkisofs -quiet -o "$T/cd.iso" -b boot.bin -no-emul-boot -boot-load-size 4 \
  "$T/iso" 2>/dev/null

EXIT_DEV=(-device isa-debug-exit,iobase=0x501,iosize=2)
# vt OUT ARGS...: vtool with SeaBIOS's screen on the serial port, into $T/OUT; sets $rc.
# No VGA, as qemu's -nodefaults below (the VGA BIOS costs ~0.7 s a boot here; run-vnc.py
# boots SeaBIOS with the VGA).
vt() {
  local out=$1; shift
  rc=0
  timeout 90 "$VTOOL" run -m 128 -nographic -vga none "${EXIT_DEV[@]}" -serial "file:$T/$out" "$@" \
    </dev/null >"$T/$out.stdout" 2>"$T/$out.err" || rc=$?
}
q() {
  local out=$1; shift
  qrc=0
  timeout 90 qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -m 128 -nodefaults \
    -nographic "${EXIT_DEV[@]}" -serial "file:$T/$out" "$@" </dev/null >/dev/null \
    2>"$T/$out.err" || qrc=$?
}
want_rc() { if [ "$rc" -eq "$1" ]; then pass; else fail "$2: exit $rc, want $1: $(head -c 300 "$T/$3.err")"; fi; }

# boot CASE TAG ARGS...: vtool boots the tag; qemu prints the same bytes, exits the same.
# The default run asks qemu for the cases marked in QEMU_CASES (one per boot path);
# VTOOL_SLOW_TESTS=1 compares every case.
QEMU_CASES=" ide cdrom virtio smp bootindex strict "
boot() {
  local name=$1 tag=$2; shift 2
  vt "$name" "$@"
  want_rc 99 "$name" "$name"
  expect_grep "^BOOT-SECTOR tag=$tag dl=[0-9A-F]{2}.$" "$T/$name"
  expect_grep '^INT10-OK' "$T/$name"
  if [ $have_qemu = 1 ] && { [ "${VTOOL_SLOW_TESTS:-0}" = 1 ] || [[ $QEMU_CASES == *" $name "* ]]; }; then
    q "q$name" "$@"
    if [ "$qrc" -eq "$rc" ] && cmp -s "$T/$name" "$T/q$name"; then pass
    else fail "$name: vtool rc $rc vs qemu $qrc; serial differs: $(diff <(cat -v "$T/$name") <(cat -v "$T/q$name") | head -6)"; fi
  fi
}

boot ide IDE-DISK -drive "file=$T/ide.raw,format=raw,if=ide"
expect_grep 'SeaBIOS \(version 1\.16' "$T/ide"
expect_grep 'Booting from Hard Disk\.\.\.' "$T/ide"
expect_grep 'dl=80' "$T/ide"
boot qcow2 IDE-QCOW2 -drive "file=$T/qide.qcow2,format=qcow2,if=ide"
boot cdrom ELTORITO-CD -cdrom "$T/cd.iso" -boot d
expect_grep 'Booting from DVD/CD\.\.\.' "$T/cdrom"
expect_grep 'dl=E0' "$T/cdrom"
boot virtio VIRTIO-BLK -drive "file=$T/vblk.raw,format=raw,if=virtio"
# the boot menu prompt (fw_cfg BOOT_MENU, etc/boot-menu-wait) on the serial console
boot menu IDE-DISK -drive "file=$T/ide.raw,format=raw" -boot menu=on,splash-time=500
expect_grep 'Press ESC for boot menu\.' "$T/menu"
# RAM above 4 GiB (etc/e820, CMOS) and SMP (SeaBIOS wakes every vCPU)
boot smp IDE-DISK -m 4096 -smp 2 -drive "file=$T/ide.raw,format=raw,if=ide"
# -boot order: both media present, the letters decide
boot order-dc ELTORITO-CD -drive "file=$T/ide.raw,format=raw" -cdrom "$T/cd.iso" -boot order=dc
boot order-cd IDE-DISK -drive "file=$T/ide.raw,format=raw" -cdrom "$T/cd.iso" -boot order=cd
# bootindex on -device (qemu's bootorder file): virtio-blk before the IDE disk
boot bootindex VIRTIO-BLK -drive "file=$T/ide.raw,format=raw,if=none,id=d0" \
  -device ide-hd,drive=d0,bootindex=2 -drive "file=$T/vblk.raw,format=raw,if=none,id=d1" \
  -device virtio-blk-pci,drive=d1,bootindex=1
# bootindex= on -drive itself (a vtool convenience: qemu takes it on -device only)
vt drive-bootindex -drive "file=$T/ide.raw,format=raw,if=ide,bootindex=2" \
  -drive "file=$T/vblk.raw,format=raw,if=virtio,bootindex=1"
want_rc 99 "-drive ...,bootindex=" drive-bootindex
expect_grep '^BOOT-SECTOR tag=VIRTIO-BLK ' "$T/drive-bootindex"
# strict=on: only devices with a bootindex boot (bootorder ends in HALT)
boot strict VIRTIO-BLK -hda "$T/ide.raw" -drive "file=$T/vblk.raw,format=raw,if=none,id=d1" \
  -device virtio-blk-pci,drive=d1,bootindex=1 -boot strict=on
# -boot once=d: the CD on the first boot only (the guest exits, so one boot shows)
boot once ELTORITO-CD -drive "file=$T/ide.raw,format=raw" -cdrom "$T/cd.iso" -boot once=d

# -nographic with the serial port on stdout: SeaBIOS's screen appears there
rc=0
timeout 90 "$VTOOL" run -m 128 -nographic "${EXIT_DEV[@]}" -hda "$T/ide.raw" </dev/null \
  >"$T/stdout" 2>"$T/stdout.err" || rc=$?
want_rc 99 "-nographic on stdout" stdout
expect_grep 'SeaBIOS \(version' "$T/stdout"
expect_grep 'Booting from Hard Disk' "$T/stdout"
expect_grep 'BOOT-SECTOR tag=IDE-DISK' "$T/stdout"

# --- SeaBIOS's debug log: both qemu spellings of the debug console -------------------
vt dbg -hda "$T/ide.raw" -cdrom "$T/cd.iso" -drive "file=$T/vblk.raw,format=raw,if=virtio" \
  -debugcon "file:$T/seabios.log" -global isa-debugcon.iobase=0x402
want_rc 99 "-debugcon" dbg
expect_grep '^Found QEMU fw_cfg$' "$T/seabios.log"
expect_grep '^QEMU fw_cfg DMA interface supported$' "$T/seabios.log"
expect_grep '^PS2 keyboard initialized$' "$T/seabios.log"
expect_grep '^ata0-0: .* Hard-Disk' "$T/seabios.log"
expect_grep '^DVD/CD \[ata1-0: ' "$T/seabios.log"
expect_grep 'using modern \(1\.0\) virtio mode$' "$T/seabios.log"
expect_grep '^Booting from Hard Disk' "$T/seabios.log"
vt dbg2 -hda "$T/ide.raw" -chardev "file,id=dbg,path=$T/seabios2.log" \
  -device isa-debugcon,chardev=dbg,iobase=0x402
want_rc 99 "-chardev + isa-debugcon" dbg2
expect_grep '^Booting from Hard Disk' "$T/seabios2.log"
# Every line of vtool's log, numbers and model names aside, is one qemu's logs have too
# (the logs in firmware-ref/ and a live qemu run), or one of these that name nothing
# missing: the RSDP points at an XSDT, not only an RSDT; -nographic's serial console
# (which the saved logs were not made with).
norm() { sed -E 's/0x[0-9a-fA-F]+/N/g; s/[0-9a-fA-F]{4,}/N/g; s/[0-9]+/N/g; s/VTOOL (HARDDISK|DVD-ROM)/QEMU \1/; s/ +$//' "$@"; }
ref_logs=()
[ -d "$REF" ] && ref_logs+=("$REF"/*.log)
if [ $have_qemu = 1 ]; then
  q qdbg -hda "$T/ide.raw" -cdrom "$T/cd.iso" -drive "file=$T/vblk.raw,format=raw,if=virtio" \
    -chardev "file,id=d,path=$T/qemu-seabios.log" -device isa-debugcon,chardev=d,iobase=0x402
  ref_logs+=("$T/qemu-seabios.log")
fi
if [ ${#ref_logs[@]} -gt 0 ]; then
  norm "${ref_logs[@]}" | sort -u >"$T/ref.lines"
  norm "$T/seabios.log" | sort -u | grep -vxF -f "$T/ref.lines" \
    | grep -vE '^table\(N\)=N \(via xsdt\)$|^sercon: configuring as primary display$' \
    >"$T/extra.lines" || true
  if [ ! -s "$T/extra.lines" ]; then pass
  else fail "SeaBIOS log lines qemu's logs lack: $(head -5 "$T/extra.lines" | tr '\n' '|')"; fi
fi

# --- ISOLINUX (the loader of the seed's Ubuntu ISO): its banner proves SeaBIOS's El Torito
# and ATAPI path; it then switches to 32-bit protected mode, which the nested KVM of the
# test machines cannot emulate: vtool reports the emulation failure and exits 1.
if [ -f /usr/lib/ISOLINUX/isolinux.bin ] && [ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ]; then
  mkdir -p "$T/isl/isolinux"
  cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$T/isl/isolinux/"
  printf 'PROMPT 0\nTIMEOUT 1\nDEFAULT hd\nLABEL hd\n  LOCALBOOT 0x80\n' >"$T/isl/isolinux/isolinux.cfg"
  xorriso -as mkisofs -quiet -o "$T/isolinux.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$T/isl" 2>/dev/null
  vt isolinux -cdrom "$T/isolinux.iso" -boot d
  expect_grep 'Booting from DVD/CD\.\.\.' "$T/isolinux"
  expect_grep 'ISOLINUX 6\.[0-9]+ ' "$T/isolinux"
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 99 ]; then
    pass # a host whose KVM runs 32-bit code: ISOLINUX goes on to boot the disk (none here)
  else
    want_rc 1 "ISOLINUX under nested KVM" isolinux
    expect_grep '^vtool: vCPU 0: KVM internal error \(suberror 1: emulation failure' "$T/isolinux.err"
    expect_grep 'code at rip \(gpa [0-9a-f]+\):' "$T/isolinux.err"
  fi
else
  echo "note: isolinux/syslinux-common not installed; ISOLINUX check skipped"
fi

# --- -boot n: virtio-net's iPXE option ROM (ipxe-qemu), in a private network namespace
# (~20 s of emulated ROM code: in the gcc build only, unless VTOOL_SLOW_TESTS=1)
if [ -n "${VTOOL_SANITIZED:-}" ] && [ "${VTOOL_SLOW_TESTS:-0}" != 1 ]; then
  echo "note: -boot n is tested in the gcc build"
elif [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null &&
   [ -f /usr/lib/ipxe/qemu/efi-virtio.rom ]; then
  rc=0
  timeout 60 unshare -n sh -c 'ip tuntap add dev vtfw0 mode tap && ip link set vtfw0 up &&
    exec "$0" run -m 128 -nographic -vga none -serial "file:$1" -netdev tap,id=n0,ifname=vtfw0,script=no,downscript=no \
      -device virtio-net-pci,netdev=n0,bootindex=1 -boot n' "$VTOOL" "$T/pxe" \
    </dev/null >/dev/null 2>"$T/pxe.err" || rc=$?
  expect_grep 'iPXE \(http://ipxe\.org\) 00:0[0-9a-f]\.0 ' "$T/pxe"
  expect_grep 'Booting from ROM\.\.\.' "$T/pxe"
  # iPXE then runs 32-bit code: a host that can emulate it goes on (and times out here)
  if [ "$rc" -eq 124 ]; then pass; else
    want_rc 1 "-boot n under nested KVM" pxe
    expect_grep '^vtool: vCPU 0: KVM internal error \(suberror 1: emulation failure' "$T/pxe.err"
  fi
fi

# --- nothing bootable: SeaBIOS's message, a reboot after reboot-timeout, -no-reboot ends
vt noboot -no-reboot -boot reboot-timeout=0
want_rc 0 "nothing bootable, -no-reboot" noboot
expect_grep 'No bootable device\.  Retrying in 0 seconds\.' "$T/noboot"
if [ $have_qemu = 1 ]; then
  q qnoboot -no-reboot -boot reboot-timeout=0
  if [ "$qrc" -eq "$rc" ] && cmp -s "$T/noboot" "$T/qnoboot"; then pass
  else fail "nothing bootable: vtool rc $rc vs qemu $qrc; $(diff <(cat -v "$T/noboot") <(cat -v "$T/qnoboot") | head -4)"; fi
fi
# without -no-reboot the machine starts again: the message twice within 30 s, still running
"$VTOOL" run -m 128 -nographic -boot reboot-timeout=0 -serial "file:$T/reboots" \
  </dev/null >/dev/null 2>&1 &
vm=$!
n=0
for _ in $(seq 300); do
  n=$(grep -c 'No bootable device' "$T/reboots" 2>/dev/null || true)
  [ "${n:-0}" -ge 2 ] && break
  kill -0 $vm 2>/dev/null || break
  sleep 0.1
done
if kill $vm 2>/dev/null && [ "${n:-0}" -ge 2 ]; then pass
else fail "reboot after no bootable device: $n messages, then $(kill -0 $vm 2>/dev/null && echo running || echo exited)"; fi
wait $vm 2>/dev/null

# --- PVH kernels that are ELF32 files, with and without the note -----------------------
cat >"$T/pvh32.S" <<'EOF'
	.section .note.Xen, "a", @note
	.balign 4
	.long 4, 4, 18
	.asciz "Xen"
	.long _start
	.text
	.globl _start
_start:	movw $0x3f8, %dx
	movb $'P', %al
	outb %al, %dx
	movb $'\n', %al
	outb %al, %dx
	movw $0x501, %dx
	movb $0x15, %al
	outb %al, %dx
	cli
	hlt
EOF
as --32 -o "$T/pvh32.o" "$T/pvh32.S" && ld -m elf_i386 -N -Ttext=0x100000 --section-start=.note.Xen=0x100800 \
  --no-warn-rwx-segments -e _start -o "$T/pvh32.elf" "$T/pvh32.o"
sed '1,5d' "$T/pvh32.S" >"$T/nopvh32.S"
as --32 -o "$T/nopvh32.o" "$T/nopvh32.S" && ld -m elf_i386 -N -Ttext=0x100000 \
  --no-warn-rwx-segments -e _start -o "$T/nopvh32.elf" "$T/nopvh32.o"
rc=0
timeout 30 "$VTOOL" run "${EXIT_DEV[@]}" -kernel "$T/pvh32.elf" -serial "file:$T/pvh32" \
  </dev/null >/dev/null 2>"$T/pvh32.err" || rc=$?
want_rc 43 "ELF32 PVH kernel" pvh32
expect_grep '^P$' "$T/pvh32"
if [ $have_qemu = 1 ]; then # qemu boots it the same way
  qrc=0
  timeout 30 qemu-system-x86_64 -enable-kvm -nodefaults -display none "${EXIT_DEV[@]}" \
    -kernel "$T/pvh32.elf" -serial "file:$T/qpvh32" </dev/null >/dev/null 2>&1 || qrc=$?
  if [ "$qrc" -eq 43 ] && cmp -s "$T/pvh32" "$T/qpvh32"; then pass; else fail "ELF32 PVH under qemu: rc $qrc"; fi
fi

# --- errors: one line naming the thing, exit 1 -----------------------------------------
check_err() {
  local pattern=$1; shift
  rc=0
  timeout 30 "$VTOOL" run -m 128 -nographic "$@" </dev/null >"$T/e" 2>"$T/e.err" || rc=$?
  want_rc 1 "$*" e
  expect_grep "$pattern" "$T/e.err"
}
head -c 1000 /dev/zero >"$T/short.bin"
python3 -c "open('$T/garbage.bin', 'wb').write(b'A' * 65536)"
check_err "^vtool: $T/nope.bin: load firmware: No such file or directory$" -bios "$T/nope.bin"
check_err "^vtool: $T/short.bin: load firmware: 1000 bytes: a BIOS image is a non-zero multiple of 64 KiB" -bios "$T/short.bin"
check_err "^vtool: $T/garbage.bin: load firmware: no jump at the reset vector" -bios "$T/garbage.bin"
check_err "^vtool: -boot: Invalid boot device 'x'$" -boot x
check_err "^vtool: -boot: Invalid boot device 'z'$" -boot order=cz
check_err "^vtool: -boot: Boot device 'c' was given twice$" -boot cc
check_err "^vtool: -boot: Parameter 'boot.menu' expects 'on' or 'off'$" -boot menu=maybe
check_err "^vtool: $T/nopvh32.elf: load kernel: ELF file without a PVH entry note" -kernel "$T/nopvh32.elf"
check_err "^vtool: $T/nope.img: " -hda "$T/nope.img"
check_err "^vtool: $T/nope.iso: " -cdrom "$T/nope.iso"
if grep -q 'give -kernel' "$T"/*.err; then fail "an error still says 'give -kernel'"; else pass; fi
# -boot's other options are accepted (qemu's syntax)
vt opts -hda "$T/ide.raw" -boot order=c,menu=off,splash-time=0,reboot-timeout=1000 -net none -nodefaults
want_rc 99 "-boot order=,menu=,splash-time=,reboot-timeout=" opts
finish
