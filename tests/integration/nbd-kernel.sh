#!/usr/bin/env bash
# The Linux kernel's NBD client (nbd-client and the nbd module) on a vtool img serve
# export: bytes written through /dev/nbdX land in the served qcow2 and read back after
# detaching and attaching again; with VTOOL_SLOW_TESTS=1 also a file system made on
# /dev/nbdX, written, unmounted, attached again and read back. The served qcow2 is clean
# afterwards. Skips where the nbd module is absent (it needs root, /dev/nbdX or
# modprobe nbd).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img qemu-io nbd-client python3
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for /dev/nbdX"; exit 77; }
[ -e /sys/module/nbd ] || modprobe nbd 2>/dev/null || true
[ -b /dev/nbd0 ] || { echo "SKIP: no kernel nbd module (modprobe nbd failed)"; exit 77; }
dev=
for d in /sys/block/nbd*; do
  [ "$(cat "$d/size" 2>/dev/null)" = 0 ] && ! [ -e "$d/pid" ] && { dev=/dev/${d##*/}; break; }
done
[ -n "$dev" ] || { echo "SKIP: every /dev/nbdX is in use"; exit 77; }
slow=${VTOOL_SLOW_TESTS:-0}
[ "$slow" = 1 ] && need mkfs.ext4
cd "$T"
mnt=$T/mnt
mkdir -p "$mnt"
qemu-img create -q -f qcow2 k.qcow2 256M
P=$(free_port)
vserve k.pid -f qcow2 -x disk -t -p "$P" k.qcow2
detach() { umount "$mnt" 2>/dev/null; nbd-client -d "$dev" >/dev/null 2>&1; }
trap 'detach; nbd_cleanup' EXIT

# Raw bytes at an offset, through the page cache and O_DIRECT.
head -c 4M /dev/urandom >data
expect_rc 0 nbd-client -N disk 127.0.0.1 "$P" "$dev"
expect_rc 0 dd if=data of="$dev" bs=1M seek=8 conv=fsync status=none
expect_rc 0 dd if=data of="$dev" bs=64k seek=1024 oflag=direct status=none
expect_rc 0 nbd-client -d "$dev"
expect_rc 0 nbd-client -N disk 127.0.0.1 "$P" "$dev"
expect_rc 0 cmp -n 4194304 -i 0:8388608 data "$dev"
expect_rc 0 cmp -n 4194304 -i 0:67108864 data "$dev"
expect_rc 0 nbd-client -d "$dev"

if [ "$slow" = 1 ]; then
  expect_rc 0 nbd-client -N disk 127.0.0.1 "$P" "$dev"
  expect_rc 0 mkfs.ext4 -q -F "$dev"
  expect_rc 0 mount "$dev" "$mnt"
  head -c 20M /dev/urandom >fsdata
  cp fsdata "$mnt/data"
  sync
  expect_rc 0 umount "$mnt"
  expect_rc 0 nbd-client -d "$dev"
  expect_rc 0 nbd-client -N disk 127.0.0.1 "$P" "$dev"
  expect_rc 0 mount -o ro "$dev" "$mnt"
  expect_rc 0 cmp fsdata "$mnt/data"
  detach
fi
expect_rc 0 stop k.pid
expect_rc 0 qemu-img check k.qcow2
expect_rc 0 qemu-io -r -c 'read -v 8M 16' k.qcow2
expect_grep "^00800000:  $(head -c 16 data | od -An -tx1 -v | tr -s ' ' | sed 's/^ //')" "$T/out"
expect_lines 0 k.pid.err
finish
