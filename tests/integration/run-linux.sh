#!/usr/bin/env bash
# Slow (VTOOL_SLOW_TESTS=1): boot Debian's cloud kernel with vtool run, both ways (vmlinux
# through PVH, the bzImage through the 64-bit boot protocol), and check the boot protocol
# through the kernel's own early serial output: the banner, the command line exactly as
# given, the initrd where vtool placed it, the e820 map matching -m. Under this host's
# nested KVM the kernel needs ~25 s (PVH) / ~2 min (bzImage) for these lines and cannot
# reach user space, so each boot is stopped after the markers.
. "$(dirname "$0")/lib.sh"
slow_test
need apt-get dpkg-deb lz4

cache=${VTOOL_CACHE:-/var/tmp/vtool-cache}/kernel
mkdir -p "$cache"
if [ ! -s "$cache/vmlinux" ]; then
  (cd "$cache" && rm -f ./*.deb &&
   apt-get download linux-image-cloud-amd64 >/dev/null 2>&1 &&
   dep=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | grep -o 'linux-image-[^ ,]*' | head -1) &&
   apt-get download "$dep" >/dev/null 2>&1 &&
   dpkg-deb --fsys-tarfile "$dep"_*.deb | tar -xO --wildcards './boot/vmlinuz-*' >vmlinuz &&
   python3 - <<'PY'
data = open("vmlinuz", "rb").read()
at = data.find(b"\x02\x21\x4c\x18")   # the kernel payload: LZ4 legacy frame
assert at > 0, "no LZ4 payload in vmlinuz"
open("payload.lz4", "wb").write(data[at:])
PY
   lz4 -dcq payload.lz4 >vmlinux 2>/dev/null; [ -s vmlinux ]) ||
  { echo "SKIP: could not fetch and unpack linux-image-cloud-amd64"; exit 77; }
fi
head -c 1048576 /dev/urandom >"$T/initrd"

append="console=ttyS0 earlyprintk=ttyS0 noxsave panic=-1 vtool.test=$$"

# boot NAME KERNEL MEM TIMEOUT: run until "Zone ranges" (or a vtool exit / timeout).
boot() {
  local name=$1 kernel=$2 mem=$3 limit=$4 start end
  start=$(date +%s.%N)
  "$VTOOL" run -m "$mem" -cpu host,-cx16 -kernel "$kernel" -initrd "$T/initrd" \
    -append "$append" -serial "file:$T/$name.out" -no-reboot >"$T/$name.err" 2>&1 &
  local pid=$!
  for _ in $(seq $((limit * 2))); do
    grep -q "Zone ranges" "$T/$name.out" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  end=$(date +%s.%N)
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  # The serial console ends lines with CR LF.
  tr -d '\r' <"$T/$name.out" >"$T/$name.txt" && mv "$T/$name.txt" "$T/$name.out"
  echo "$name: $(python3 -c "print(round($end - $start, 1))") s to 'Zone ranges'"
  grep -E "Linux version|Command line|RAMDISK|BIOS-e820" "$T/$name.out" | sed 's/^/  /'
}

check_markers() {
  local name=$1 ramdisk=$2; shift 2
  expect_grep "^\[ *0\.0+\] Linux version [0-9]" "$T/$name.out"
  expect_grep "Command line: $append\$" "$T/$name.out"
  expect_grep "RAMDISK: \[mem $ramdisk\]" "$T/$name.out"
  for e820 in "$@"; do expect_grep "BIOS-e820: \[mem $e820" "$T/$name.out"; done
  expect_grep "Zone ranges" "$T/$name.out"
}

# PVH with RAM above 4 GiB: 5 GiB = 3 GiB low + 2 GiB at 4 GiB; the initrd goes at the
# top of low RAM.
boot pvh "$cache/vmlinux" 5G 240
check_markers pvh "0xbff00000-0xbfffffff" \
  "0x0000000000000000-0x000000000009fbff\] usable" \
  "0x000000000009fc00-0x00000000000fffff\] reserved" \
  "0x0000000000100000-0x00000000bfffffff\] usable" \
  "0x0000000100000000-0x000000017fffffff\] usable"

boot bzimage "$cache/vmlinuz" 256 400
check_markers bzimage "0x0ff00000-0x0fffffff" \
  "0x0000000000000000-0x000000000009fbff\] usable" \
  "0x0000000000100000-0x000000000fffffff\] usable"
finish
