/* A 512-byte boot sector for the display tests (run-vnc.py): draws a text screen
 * through the VGA BIOS (coloured strings with INT 10h AH=13h, line-drawing characters
 * with AH=09h, teletype with AH=0Eh), prints "VGASECT-READY" on COM1, then echoes every
 * key it reads through INT 16h to the screen and reports it on COM1 as
 * "KEY <scan code><ASCII>" (hex). Two keys switch modes and draw 16 colour bars with
 * INT 10h AH=0Ch: '!' mode 12h (640x480, 16 colours, planar), '@' mode 13h (320x200,
 * 256 colours, chain-4); each then reports "MODE <n>" on COM1. */
	.code16
	.text
	.globl _start
_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw $0x7c00, %sp
	ljmp $0, $1f
1:	sti
	movw $0x1301, %ax          /* write string, move the cursor */
	movw $0x001e, %bx          /* yellow on blue */
	movw $title_end - title, %cx
	movw $0x0300, %dx          /* row 3, column 0 */
	movw $title, %bp
	int $0x10
	movw $0x1301, %ax
	movw $0x004f, %bx          /* bright white on red */
	movw $colors_end - colors, %cx
	movw $0x0400, %dx
	movw $colors, %bp
	int $0x10
	movw $0x0200, %ax          /* cursor to row 5 */
	xorw %bx, %bx
	movw $0x0500, %dx
	int $0x10
	movw $0x09c4, %ax          /* 20 horizontal lines, light green: the 9th dot joins */
	movw $0x000a, %bx
	movw $20, %cx
	int $0x10
	movw $0x0200, %ax
	xorw %bx, %bx
	movw $0x0700, %dx
	int $0x10
	movw $prompt, %si
	call puts_tty
	movw $ready, %si
	call puts_com

key:	xorb %ah, %ah
	int $0x16                  /* AH scan code, AL ASCII */
	pushw %ax
	movw $keymsg, %si
	call puts_com
	popw %ax
	pushw %ax
	movb %ah, %al
	call hex2_com
	popw %ax
	pushw %ax
	call hex2_com
	movw $crlf, %si
	call puts_com
	popw %ax
	cmpb $'!', %al
	je mode12
	cmpb $'@', %al
	je mode13
	cmpb $0x0d, %al
	jne 2f
	movw $crlf, %si
	call puts_tty
	jmp key
2:	testb %al, %al
	jz key
	call putc_tty
	jmp key

mode12:	movw $0x0012, %ax
	movw $640 / 16, %di        /* bar width */
	jmp bars
mode13:	movw $0x0013, %ax
	movw $320 / 16, %di
bars:	int $0x10
	xorw %dx, %dx              /* DX row, CX column, AL colour */
3:	xorw %cx, %cx
4:	movw %cx, %ax
	pushw %dx
	xorw %dx, %dx
	divw %di                   /* AL: the bar number (and colour) */
	popw %dx
	cmpb $16, %al
	jae 5f
	movb $0x0c, %ah
	xorb %bh, %bh
	int $0x10
	incw %cx
	jmp 4b
5:	incw %dx
	cmpw $2, %dx
	jb 3b
	movw $modemsg, %si
	call puts_com
	movb $0x0f, %ah            /* current mode */
	int $0x10
	call hex2_com
	movw $crlf, %si
	call puts_com
	jmp key

puts_tty:
	lodsb
	testb %al, %al
	jz 1f
	call putc_tty
	jmp puts_tty
1:	ret
putc_tty:
	movb $0x0e, %ah
	movw $0x0007, %bx
	int $0x10
	ret

hex2_com:                          /* AL as two hex digits */
	pushw %ax
	shrb $4, %al
	call hex_com
	popw %ax
hex_com:
	andb $0x0f, %al
	addb $'0', %al
	cmpb $'9', %al
	jbe putc_com
	addb $7, %al
putc_com:
	pushw %dx
	movw $0x3f8, %dx
	outb %al, %dx
	popw %dx
	ret
puts_com:
	lodsb
	testb %al, %al
	jz 1f
	call putc_com
	jmp puts_com
1:	ret

title:	.ascii "vtool VGA text: INT 10h strings, colours, 9-dot cells"
title_end:
colors:	.ascii " white on red "
colors_end:
prompt:	.asciz "type> "
ready:	.asciz "VGASECT-READY\r\n"
keymsg:	.asciz "KEY "
modemsg: .asciz "MODE "
crlf:	.asciz "\r\n"
	.org 0x1fe
	.byte 0x55, 0xaa
