#!/usr/bin/env bash
# Install what vtool needs to build and test, only what is missing (Debian 12).
set -euo pipefail

packages=(
  # build
  gcc clang libclang-rt-14-dev meson ninja-build pkg-config python3
  zlib1g-dev libzstd-dev libgcrypt20-dev uuid-dev libvncserver-dev check libmnl-dev libnftnl-dev liburing-dev
  libjansson-dev libseccomp-dev
  # peers used by tests and benchmarks
  qemu-utils qemu-system-x86 seabios busybox-static xorriso iproute2 nftables
  isolinux syslinux-common bc
  lz4 time iputils-ping dnsmasq-base dmidecode strace
  python3-cryptography   # VNC authentication in tests/tools/rfbclient.py
  nbdkit libnbd-bin nbd-client
  socat
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
