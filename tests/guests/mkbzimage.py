#!/usr/bin/env python3
"""Wrap tguest's flat image (loaded at 1 MiB, 64-bit entry at +0x200) in a bzImage-shaped
file: one setup sector holding a Linux boot protocol 2.15 header, then the image.

    mkbzimage.py FLAT_BIN ELF OUT
The ELF gives init_size (the image including .bss)."""
import struct, sys

flat, elf, out = sys.argv[1:4]
body = open(flat, "rb").read()
data = open(elf, "rb").read()
# init_size: the highest end of any PT_LOAD segment above 1 MiB.
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
end = 0
for i in range(phnum):
    p_type, _, _, _, p_paddr, _, p_memsz = struct.unpack_from("<IIQQQQQ", data, phoff + i * phentsize)
    if p_type == 1:
        end = max(end, p_paddr + p_memsz)
init_size = (end - 0x100000 + 4095) & ~4095

setup_sects = 1
setup = bytearray(512 * (setup_sects + 1))
hdr_end = 0x268
setup[0x1f1] = setup_sects
struct.pack_into("<H", setup, 0x1fe, 0xAA55)
setup[0x200] = 0xEB                         # jmp short over the header
setup[0x201] = hdr_end - 0x202
setup[0x202:0x206] = b"HdrS"
struct.pack_into("<H", setup, 0x206, 0x020F)
setup[0x211] = 0x01                         # LOADED_HIGH
struct.pack_into("<I", setup, 0x214, 0x100000)    # code32_start
struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
struct.pack_into("<I", setup, 0x230, 0x200000)    # kernel_alignment
struct.pack_into("<H", setup, 0x236, 0x0001)      # XLF_KERNEL_64
struct.pack_into("<I", setup, 0x238, 4095)        # cmdline_size
struct.pack_into("<Q", setup, 0x258, 0x100000)    # pref_address
struct.pack_into("<I", setup, 0x260, init_size)
open(out, "wb").write(bytes(setup) + body)
