#!/usr/bin/env python3
"""Wrap tguest.elf into a bzImage-shaped file for the 64-bit Linux boot protocol.

Layout: a (setup_sects + 1) * 512 byte setup area holding the setup header at 0x1F1 and,
from 0x26C, the ELF's non-loaded .bzsetup section (setup.S: real-mode code for BIOS loaders
such as qemu -kernel), then the flat image of the ELF's PT_LOAD segments from 0x100000. init_size covers the segments' memory size (.bss,
page tables, stacks). Usage: mkbzimage.py tguest.elf tguest.bzimage
"""
import struct
import sys

LOAD = 0x100000
HDR_END = 0x26C  # version 2.15 header: through kernel_info_offset


def flat_image(elf):
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        sys.exit(f"mkbzimage: {sys.argv[1]}: not an ELF64 file")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    image, mem_end = bytearray(), LOAD
    for i in range(phnum):
        p_type, _, off, _, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type != 1:  # PT_LOAD
            continue
        if paddr < LOAD:
            sys.exit(f"mkbzimage: segment at 0x{paddr:x} below 0x{LOAD:x}")
        start = paddr - LOAD
        if len(image) < start + filesz:
            image.extend(bytes(start + filesz - len(image)))
        image[start:start + filesz] = elf[off:off + filesz]
        mem_end = max(mem_end, paddr + memsz)
    return bytes(image), mem_end - LOAD


def section(elf, name):
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    hdr = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = hdr[shstrndx][4]
    for sh_name, _, _, _, off, size in hdr:
        end = elf.index(b"\0", strtab + sh_name)
        if elf[strtab + sh_name:end] == name:
            return elf[off:off + size]
    sys.exit(f"mkbzimage: {sys.argv[1]}: no {name.decode()} section")


def setup_area(code, kernel_size, init_size):
    setup_sects = max(1, (HDR_END + len(code) + 511) // 512 - 1)
    setup = bytearray(512 * (setup_sects + 1))
    setup[HDR_END:HDR_END + len(code)] = code
    hdr_end = HDR_END

    def put(off, fmt, *val):
        struct.pack_into("<" + fmt, setup, off, *val)

    put(0x1F1, "B", setup_sects)
    put(0x1F4, "I", (kernel_size + 15) // 16)   # syssize, 16-byte units
    put(0x1FA, "H", 0xFFFF)                     # vid_mode: normal
    put(0x1FE, "H", 0xAA55)                     # boot_flag
    put(0x200, "BB", 0xEB, hdr_end - 0x202)     # jmp over the header
    put(0x202, "4s", b"HdrS")
    put(0x206, "H", 0x020F)                     # protocol 2.15
    put(0x211, "B", 0x01)                       # loadflags: LOADED_HIGH
    put(0x214, "I", LOAD)                       # code32_start
    put(0x22C, "I", 0x7FFFFFFF)                 # initrd_addr_max
    put(0x230, "I", 0x200000)                   # kernel_alignment (not relocatable)
    put(0x236, "H", 0x0001)                     # xloadflags: XLF_KERNEL_64
    put(0x238, "I", 2047)                       # cmdline_size
    put(0x258, "Q", LOAD)                       # pref_address
    put(0x260, "I", init_size)                  # init_size
    return bytes(setup)


def main():
    with open(sys.argv[1], "rb") as f:
        elf = f.read()
    image, init_size = flat_image(elf)
    with open(sys.argv[2], "wb") as f:
        f.write(setup_area(section(elf, b".bzsetup"), len(image), (init_size + 4095) & ~4095))
        f.write(image)


main()
