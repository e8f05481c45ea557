#!/usr/bin/env bash
# The demo `make run` shows on its embedded defaults: the seed's flow. Create qcow2 disks
# with `vtool img`, boot the bundled demo guest (tests/guests/tguest) with `vtool run`,
# one disk on virtio-blk and one on IDE; the guest writes and reads both and says what it
# did; `vtool img check` then confirms the images are clean.
set -euo pipefail
vtool=$(realpath "${1:-build/cli/vtool}")
guest=$(realpath "${2:-$(dirname "$vtool")/../tests/guests/tguest.elf}")
dir=$(mktemp -d "${TMPDIR:-/tmp}/vtool-demo.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
show() { echo "\$ vtool ${*:2}"; local rc=0; "$@" || rc=$?; echo; return $rc; }
show "$vtool" img create -f qcow2 base.qcow2 8G
show "$vtool" img create -f qcow2 -b base.qcow2 -F qcow2 disk.qcow2
show "$vtool" img create -f qcow2 data.qcow2 1G
show "$vtool" img info disk.qcow2
if [ ! -c /dev/kvm ]; then
  echo "(no /dev/kvm here: skipping the vtool run part of the demo)"
  exit 0
fi
rc=0
show "$vtool" run -enable-kvm -name demo -m 128 -nographic -no-reboot \
  -drive file=disk.qcow2,if=virtio -hda data.qcow2 \
  -device isa-debug-exit,iobase=0x501,iosize=2 -kernel "$guest" \
  -append "test=disk dev=vblk ops=w:0:64:a5,r:0:64:a5,f dev2=ata-dma unit=0 ops2=i,w:2048:128:3c,r:2048:128:3c,f" \
  </dev/null || rc=$?
echo "(the guest reported through isa-debug-exit: exit status $rc, 1 = pass)"
echo
show "$vtool" img check disk.qcow2
show "$vtool" img check data.qcow2
show "$vtool" img map data.qcow2
[ "$rc" -eq 1 ]
