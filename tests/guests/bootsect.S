/* A 512-byte boot sector for firmware boot tests: prints "BOOT-SECTOR tag=<TAG> dl=<DL>"
 * on COM1 with direct OUTs, then "INT10-OK" through the BIOS's INT 10h teletype (which a
 * serial console shows), then ends the VM through isa-debug-exit at 0x501 (exit status
 * 99 in qemu and vtool) and halts. The tag is 16 bytes at offset 0x1a0 (NUL-padded); the
 * tests patch it per medium. */
	.code16
	.text
	.globl _start
_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %ss
	movw $0x7c00, %sp
	ljmp $0, $1f
1:	sti
	movb %dl, drive
	call flush_con
	movw $msg1, %si
	call puts_com
	movw $0x1a0 + 0x7c00, %si
	call puts_com
	movw $msg2, %si
	call puts_com
	movb drive, %al
	shrb $4, %al
	call hex_com
	movb drive, %al
	call hex_com
	movb $'\r', %al
	call putc_com
	movb $'\n', %al
	call putc_com
	movw $msg3, %si
2:	lodsb
	testb %al, %al
	jz 3f
	movb $0x0e, %ah
	movw $0x0007, %bx
	int $0x10
	jmp 2b
3:	call flush_con
	movw $0x501, %dx
	movb $0x31, %al
	outb %al, %dx
	cli
4:	hlt
	jmp 4b

/* SeaBIOS's serial console (sercon) holds back the last character it was given and
 * writes it out from the timer interrupt: wait two ticks of the BIOS clock (0x46c) so
 * direct COM1 output and INT 10h text stay in order. */
flush_con:
	movw $2, %cx
1:	movw 0x46c, %ax
2:	sti
	hlt
	cmpw 0x46c, %ax
	je 2b
	loop 1b
	ret

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

msg1:	.asciz "BOOT-SECTOR tag="
msg2:	.asciz " dl="
msg3:	.asciz "INT10-OK\r\n"
drive:	.byte 0
	.org 0x1a0
	.ascii "NONE"
	.org 0x1fe
	.byte 0x55, 0xaa
