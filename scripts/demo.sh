#!/usr/bin/env bash
# The demo `make run` shows on its embedded defaults: the seed's first step, a qcow2 disk,
# here as a copy-on-write overlay of a base image, described by `vtool img info`.
set -euo pipefail
vtool=$(realpath "${1:-build/cli/vtool}")
dir=$(mktemp -d "${TMPDIR:-/tmp}/vtool-demo.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"
show() { echo "\$ vtool ${*:2}"; "$@"; echo; }
show "$vtool" --help
show "$vtool" img create -f qcow2 base.qcow2 8G
show "$vtool" img create -f qcow2 -b base.qcow2 -F qcow2 disk.qcow2
show "$vtool" img info disk.qcow2
show "$vtool" img info --output=json --backing-chain disk.qcow2
