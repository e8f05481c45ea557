/* Real-mode setup code of tguest.bzimage, so that a BIOS loader (qemu -kernel: SeaBIOS and
 * its linuxboot ROM) can boot it too and test the 64-bit entry against a real peer. A VMM
 * using the 64-bit boot protocol never runs this.
 *
 * mkbzimage.py copies this section to file offset 0x26C, right after the setup header; the
 * jump at 0x200 lands here with CS = setup segment + 0x20. The loaded setup area is not the
 * zero page (this code overlaps its e820 table), so it builds one at setup + 0x1000: a copy of
 * the setup header the loader filled in (cmdline, initrd) plus the INT 15h E820 map. Then an
 * identity map of the first 1 GiB at setup + 0x2000..0x4FFF, and a jump straight from real
 * mode to the 64-bit entry 0x100200 with RSI = zero page, CS = 0x10 and DS/ES/SS = 0x18 (the
 * documented __BOOT_CS/__BOOT_DS). */

#define OFF(x) ((x) - bz_setup + 0x26C)	/* offset of a label in the setup segment */
#define ZP 0x1000			/* the zero page, offset in the setup segment */
#define SMAP 0x534D4150

	.section .bzsetup, "ax"
	.code16
	.globl bz_setup
bz_setup:
	cli
	cld
	mov %cs, %ax
	sub $0x20, %ax
	mov %ax, %ds
	mov %ax, %es
	mov $ZP, %di			/* zero the zero page and the page tables */
	mov $5 * 1024, %ecx
	xor %eax, %eax
	rep stosl
	mov $0x1F1, %si			/* copy the setup header */
	mov $ZP + 0x1F1, %di
	mov $0x26C - 0x1F1, %cx
	rep movsb
	xor %ebx, %ebx			/* e820 into boot_params.e820_table */
	mov $ZP + 0x2D0, %di
	xor %bp, %bp
1:	mov $0xE820, %eax
	mov $20, %ecx
	mov $SMAP, %edx
	int $0x15
	jc 2f
	cmp $SMAP, %eax
	jne 2f
	add $20, %di
	inc %bp
	cmp $128, %bp
	jae 2f
	test %ebx, %ebx
	jnz 1b
2:	mov %bp, %ax
	mov %al, ZP + 0x1E8		/* e820_entries */

	xor %esi, %esi			/* ESI = linear address of the setup segment */
	mov %ds, %si
	shl $4, %esi
	leal 0x3003(%esi), %eax		/* PML4 +0x2000, PDPT +0x3000, PD +0x4000 */
	mov %eax, 0x2000
	leal 0x4003(%esi), %eax
	mov %eax, 0x3000
	mov $0x4000, %di
	mov $0x83, %eax			/* 2 MiB, writable, present */
3:	mov %eax, (%di)
	add $0x200000, %eax
	add $8, %di
	cmp $0x5000, %di
	jb 3b

	leal OFF(bz_gdt)(%esi), %eax
	mov %eax, OFF(bz_gdt_desc) + 2
	lgdtl OFF(bz_gdt_desc)
	mov %cr4, %eax
	or $0x20, %eax			/* PAE */
	mov %eax, %cr4
	leal 0x2000(%esi), %eax
	mov %eax, %cr3
	mov $0xC0000080, %ecx		/* EFER.LME */
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax		/* PG | PE: straight into IA-32e mode */
	mov %eax, %cr0
	mov $0x18, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	add $ZP, %esi			/* RSI = zero page */
	ljmpl $0x10, $0x100200

	.balign 8
bz_gdt:
	.quad 0, 0
	.quad 0x00AF9B000000FFFF	/* 0x10 64-bit code */
	.quad 0x00CF93000000FFFF	/* 0x18 data */
bz_gdt_desc:
	.word 31
	.long 0				/* base, filled in above */

	.section .note.GNU-stack, "", @progbits
