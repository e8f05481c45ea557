#!/usr/bin/env bash
# The Linux kernel's NBD client (nbd-client and the nbd module) on a vtool img serve
# export: a file system made on /dev/nbdX, written, unmounted, attached again and read
# back; the served qcow2 is clean afterwards. Skips where the nbd module is absent (it
# needs root, /dev/nbdX or modprobe nbd).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
need qemu-img nbd-client mkfs.ext4 python3
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for /dev/nbdX"; exit 77; }
[ -e /sys/module/nbd ] || modprobe nbd 2>/dev/null || true
[ -b /dev/nbd0 ] || { echo "SKIP: no kernel nbd module (modprobe nbd failed)"; exit 77; }
dev=
for d in /sys/block/nbd*; do
  [ "$(cat "$d/size" 2>/dev/null)" = 0 ] && ! [ -e "$d/pid" ] && { dev=/dev/${d##*/}; break; }
done
[ -n "$dev" ] || { echo "SKIP: every /dev/nbdX is in use"; exit 77; }
cd "$T"
mnt=$T/mnt
mkdir -p "$mnt"
qemu-img create -q -f qcow2 k.qcow2 256M
P=$(free_port)
vserve k.pid -f qcow2 -x disk -t -p "$P" k.qcow2
detach() { umount "$mnt" 2>/dev/null; nbd-client -d "$dev" >/dev/null 2>&1; }
trap 'detach; nbd_cleanup' EXIT
expect_rc 0 nbd-client -N disk 127.0.0.1 "$P" "$dev"
expect_rc 0 mkfs.ext4 -q -F "$dev"
expect_rc 0 mount "$dev" "$mnt"
head -c 20M /dev/urandom >data
cp data "$mnt/data"
sync
expect_rc 0 umount "$mnt"
expect_rc 0 nbd-client -d "$dev"
expect_rc 0 nbd-client -N disk 127.0.0.1 "$P" "$dev"
expect_rc 0 mount -o ro "$dev" "$mnt"
expect_rc 0 cmp data "$mnt/data"
detach
expect_rc 0 stop k.pid
expect_rc 0 qemu-img check k.qcow2
expect_lines 0 k.pid.err
finish
