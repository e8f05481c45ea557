#!/usr/bin/env bash
# Disks in the VM: tguest's virtio-blk and ATA (PIO, DMA, LBA48) and ATAPI drivers write
# and read qcow2 and raw images through vtool run; afterwards qemu-io and qemu-img (the
# peers) confirm every byte and that the images are clean. Malicious-driver cases are
# contained; -snapshot leaves the image untouched; locks, read-only media and probed raw
# images follow qemu's rules.
. "$(dirname "$0")/lib.sh"
: "${TGUEST:?}"
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm"; exit 77; }
need qemu-img qemu-io xorriso

vt() {
  local out=$1; shift
  rc=0
  timeout 60 "$VTOOL" run -m 128 -device isa-debug-exit,iobase=0x501,iosize=2 \
    -kernel "$TGUEST" "$@" >"$T/$out" 2>"$T/$out.err" || rc=$?
}
want_rc() { if [ "$rc" -eq "$1" ]; then pass; else fail "$2: exit $rc, want $1: $(tail -3 "$T/$3" | tr '\n' '|') $(head -c 300 "$T/$3.err")"; fi; }
qio_read() { # IMG FMT PATTERN OFFSET LEN
  # qemu-io reports a mismatch ("Pattern verification failed") and still the byte count.
  local out; out=$(qemu-io -f "$2" -r -c "read -P $3 $4 $5" "$1" 2>&1)
  if grep -q "^read $5/$5 bytes" <<<"$out" && ! grep -q "verification failed" <<<"$out"; then pass
  else fail "qemu-io: $1 at $4+$5 is not all $3: $(head -c 200 <<<"$out")"; fi
}
clean() {
  if qemu-img check -f qcow2 "$1" >"$T/chk" 2>&1; then pass; else fail "qemu-img check $1: $(cat "$T/chk")"; fi
}

# The host writes a pattern with qemu-io; the guest must read it; the guest's writes must
# be what qemu-io reads afterwards.
ops="i,w:8:16:a5,r:8:16:a5,r:2048:128:5a,w:4000:255:c6,r:4000:255:c6,f"
for fmt in qcow2 raw; do
  for dev in vblk ata-pio ata-dma; do
    img="$T/$dev.$fmt"
    qemu-img create -q -f $fmt "$img" 64M
    qemu-io -f $fmt -c "write -P 0x5a 1M 64k" "$img" >/dev/null
    if [ $dev = vblk ]; then drive="file=$img,format=$fmt,if=virtio"
    else drive="file=$img,format=$fmt,if=ide,index=0"; fi
    vt $dev -drive "$drive" -append "test=disk dev=$dev ops=$ops"
    want_rc 1 "$dev on $fmt" $dev
    qio_read "$img" $fmt 0xa5 4096 8192
    qio_read "$img" $fmt 0xc6 $((4000 * 512)) $((255 * 512))
    qio_read "$img" $fmt 0 0 4096
    [ $fmt = qcow2 ] && clean "$img"
  done
done

# MSI-X: queue 0's completion interrupts the CPU through vector 0 (irqfd + GSI route);
# GET_ID returns the serial; WRITE_ZEROES zeroes; DISCARD works and refuses flags
qemu-img create -q -f qcow2 "$T/x.qcow2" 16M
vt msix -drive "file=$T/x.qcow2,if=virtio,discard=unmap" -append "test=disk dev=vblk irq=msix extras=1"
want_rc 1 "virtio-blk MSI-X, GET_ID, WRITE_ZEROES, DISCARD" msix
expect_grep '^TG-DISK msix status=0 interrupts=[1-9]' "$T/msix"
expect_grep '^TG-DISK serial=x\.qcow2$' "$T/msix"
expect_grep '^TG-DISK write-zeroes ok discard ok discard-with-flags status=2$' "$T/msix"
qio_read "$T/x.qcow2" qcow2 0 $((64 * 512)) $((64 * 512))
# INTx when the driver does not enable MSI-X: the ISR reports the queue interrupt once
vt intx -drive "file=$T/x.qcow2,if=virtio" -append "test=disk dev=vblk irq=intx"
want_rc 1 "virtio-blk INTx/ISR" intx
expect_grep '^TG-DISK intx status=0 isr=1 then 0$' "$T/intx"
clean "$T/x.qcow2"
# the same guest code passes under qemu-system-x86_64 (the peer)
if timeout 60 qemu-system-x86_64 -enable-kvm -cpu qemu64,-cx16 -nodefaults -display none \
    -no-reboot -serial "file:$T/qmsix" -device isa-debug-exit,iobase=0x501,iosize=2 -m 128 \
    -drive "file=$T/x.qcow2,if=virtio,discard=unmap" -kernel "$TGUEST" \
    -append "test=disk dev=vblk irq=msix extras=1" >/dev/null 2>&1; [ $? -eq 1 ]; then pass
else fail "the MSI-X/extras guest fails under qemu: $(tail -3 "$T/qmsix")"; fi

# LBA48 on IDE: sectors beyond 2^28, on a sparse qcow2 of 200 GiB
qemu-img create -q -f qcow2 "$T/big.qcow2" 200G
vt lba48 -hda "$T/big.qcow2" -append "test=disk dev=ata-dma ops=i,w:300000000:8:e1,r:300000000:8:e1"
want_rc 1 "LBA48 DMA" lba48
expect_grep "^TG-DISK ata sectors=419430400 " "$T/lba48"
qio_read "$T/big.qcow2" qcow2 0xe1 $((300000000 * 512)) 4096
clean "$T/big.qcow2"

# a slave and the secondary channel, PIO, qcow2 overlay over a backing file
qemu-img create -q -f qcow2 "$T/base.qcow2" 32M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/top.qcow2"
vt chain -hdd "$T/top.qcow2" -append "test=disk dev=ata-pio unit=3 ops=r:0:64:11,w:16:8:22,r:16:8:22"
want_rc 1 "IDE unit 3 on a backing chain" chain
qio_read "$T/top.qcow2" qcow2 0x22 8192 4096
qio_read "$T/base.qcow2" qcow2 0x11 0 1048576
clean "$T/top.qcow2"

# ATAPI: an ISO made by xorriso; the file's sectors come back through READ(10)
mkdir -p "$T/isoroot"
python3 -c "open('$T/isoroot/pattern.bin', 'wb').write(bytes([0xc3]) * 65536)"
xorriso -as mkisofs -quiet -o "$T/t.iso" "$T/isoroot" 2>/dev/null
lba=$(python3 -c "d = open('$T/t.iso', 'rb').read(); print(d.find(bytes([0xc3]) * 2048) // 2048)")
vt cd -cdrom "$T/t.iso" -append "test=disk dev=atapi unit=2 ops=r:16:1:00,r:$lba:32:c3" || true
# LBA 16 is the primary volume descriptor, not all zeros: that read must fail the check
expect_grep "^TG-DISK r lba=16 byte 0 is 1, want 0$" "$T/cd"
vt cd -cdrom "$T/t.iso" -append "test=disk dev=atapi unit=2 ops=r:$lba:32:c3"
want_rc 1 "ATAPI READ(10) of the ISO" cd

# malicious drivers: contained, reported once, the VM and the image survive
qemu-img create -q -f qcow2 "$T/evil.qcow2" 16M
for e in loop oob; do
  vt evil -drive "file=$T/evil.qcow2,if=virtio" -append "test=disk dev=vblk evil=$e"
  want_rc 1 "virtio-blk evil=$e" evil
  expect_grep "^vtool: warning: virtio-blk: guest driver error, device stopped until reset: " "$T/evil.err"
  expect_grep "^TG-DISK reset ok$" "$T/evil"
done
vt evil -drive "file=$T/evil.qcow2,if=virtio" -append "test=disk dev=vblk evil=lba"
want_rc 1 "virtio-blk read past the end" evil
vt evil -hda "$T/evil.qcow2" -append "test=disk dev=ata-dma evil=prd"
want_rc 1 "PRD table outside RAM" evil
expect_grep "^vtool: warning: IDE channel 0: bus-master PRD table" "$T/evil.err"
vt evil -hda "$T/evil.qcow2" -append "test=disk dev=ata-dma evil=lba"
want_rc 1 "ATA LBA past the end" evil
clean "$T/evil.qcow2"

# -snapshot: the guest's writes go to a throw-away overlay; the image is byte-identical
qemu-img create -q -f qcow2 "$T/snap.qcow2" 16M
sum=$(sha256sum <"$T/snap.qcow2")
vt snap -snapshot -drive "file=$T/snap.qcow2,if=virtio" -append "test=disk dev=vblk ops=w:0:64:77,r:0:64:77"
want_rc 1 "-snapshot writes" snap
if [ "$(sha256sum <"$T/snap.qcow2")" = "$sum" ]; then pass; else fail "-snapshot changed the image"; fi
if ls "${TMPDIR:-/var/tmp}"/vtool-snapshot.* >/dev/null 2>&1; then fail "-snapshot left an overlay behind"; else pass; fi

# read-only media and drives
vt ro -drive "file=$T/snap.qcow2,if=ide,readonly=on" -append "test=disk dev=ata-pio ops=w:0:1:01"
want_rc 3 "write to readonly=on fails in the guest" ro
vt ro -drive "file=$T/snap.qcow2,if=virtio,readonly=on" -append "test=disk dev=vblk ops=r:0:1:00"
want_rc 1 "read from readonly=on" ro

# a probed raw image: qemu's warning, sector 0 refused, other sectors fine
truncate -s 8M "$T/probe.raw"
vt probe -hda "$T/probe.raw" -append "test=disk dev=ata-pio ops=w:1:1:42,w:0:1:42"
want_rc 3 "probed raw: sector 0 refused" probe
expect_grep "^vtool: warning: image format was not specified for '$T/probe.raw' and probing guessed raw" "$T/probe.err"
expect_grep "^TG-DISK ide wrote lba=1 count=1 pat=42 ok$" "$T/probe"
vt probe -drive "file=$T/probe.raw,format=raw" -append "test=disk dev=ata-pio ops=w:0:1:42"
want_rc 1 "format=raw: sector 0 writable" probe

# an image another process holds for writing: refused with qemu's lock error
"$BLKIO" hold "$T/snap.qcow2" qcow2 20 &
holder=$!
sleep 0.5
vt lock -hda "$T/snap.qcow2" -append "test=hello"
want_rc 1 "locked image" lock
expect_grep "lock" "$T/lock.err"
kill $holder; wait $holder 2>/dev/null

# bad drive options
vt bad -drive "file=$T/nope.qcow2,if=virtio" -append "test=hello"
want_rc 1 "missing image" bad
expect_grep "^vtool: $T/nope.qcow2: " "$T/bad.err"
vt bad -drive "file=$T/snap.qcow2,if=scsi" -append "test=hello"
want_rc 1 "if=scsi" bad
expect_grep "^vtool: -drive: unsupported interface if=scsi$" "$T/bad.err"
finish
