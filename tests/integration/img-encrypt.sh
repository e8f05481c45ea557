#!/usr/bin/env bash
# Reading encrypted qcow2 images with the key (--object secret + --image-opts
# encrypt.key-secret=ID), against qemu-img: LUKS with several ciphers, modes, IV
# generators and hashes, legacy AES, extended L2, partly written clusters, and unaligned
# reads (dd bs=1000); the same bytes as qemu-img convert. A wrong password, a missing
# secret and no key at all fail with one line, as qemu-img fails.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

SEC=(--object secret,id=s0,data=hunter2)
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=s0"; }

cases=(
  "encrypt.format=luks"
  "encrypt.format=luks,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256"
  "encrypt.format=luks,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=xts,encrypt.hash-alg=sha1"
  "encrypt.format=luks,encrypt.cipher-alg=twofish-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain"
  "encrypt.format=luks,encrypt.cipher-alg=serpent-256,encrypt.cipher-mode=xts,encrypt.hash-alg=sha512"
  "encrypt.format=luks,extended_l2=on,cluster_size=128k"
  "encrypt.format=aes"
)
sample cases
n=0
for c in "${cases[@]}"; do
  n=$((n + 1)); img=e$n.qcow2
  it=",encrypt.iter-time=10"; [ "$c" = encrypt.format=aes ] && it=""
  if ! qemu-img create -q "${SEC[@]}" -f qcow2 -o "$c,encrypt.key-secret=s0$it" "$img" 8M 2>err; then
    fail "qemu-img create $c: $(cat err)"; continue
  fi
  qemu-io "${SEC[@]}" --image-opts "$(opts $img)" -c "write -P 0x5a 0 100k" \
    -c "write -P 0x33 5M 4k" -c "write -P 0x77 7340032 1536" -c "write -z 200k 64k" >/dev/null 2>&1
  qemu-img convert "${SEC[@]}" --image-opts "$(opts $img)" -O raw q.raw
  expect_rc 0 "$VTOOL" img convert "${SEC[@]}" --image-opts "$(opts $img)" -O raw v.raw
  cmp -s q.raw v.raw && pass || fail "[$c] convert differs from qemu-img's"
  expect_rc 0 "$VTOOL" img dd "${SEC[@]}" --image-opts -O raw bs=1000 if="$(opts $img)" of=d.raw
  cmp -s q.raw d.raw && pass || fail "[$c] dd bs=1000 differs"
done

# The errors: one line each, exit 1 like qemu-img.
img=e1.qcow2
expect_rc 1 "$VTOOL" img convert --object secret,id=s0,data=wrong --image-opts "$(opts $img)" -O raw x.raw
expect_grep 'Invalid password, cannot unlock any keyslot' "$T/err"
expect_lines 1 "$T/err"
expect_rc 1 "$VTOOL" img convert --image-opts "$(opts $img)" -O raw x.raw
expect_grep "No secret with id 's0'" "$T/err"
expect_rc 1 "$VTOOL" img convert -O raw "$img" x.raw
expect_grep "encrypt.key-secret' is required" "$T/err"
expect_lines 1 "$T/err"
[ -e x.raw ] && fail "a failed convert left x.raw" || pass
# Writing stays refused (vtool reads encrypted images, it does not write them).
expect_rc 1 "$VTOOL" img convert "${SEC[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s0 q.raw w.qcow2
finish
