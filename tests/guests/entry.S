/* tguest entry points and CPU plumbing.
 *
 * pvh_start32: PVH entry (32-bit protected mode, paging off, EBX = hvm_start_info).
 * startup_64 at image offset 0x200: the Linux boot protocol's 64-bit entry (long mode,
 *   RSI = zero page); the same image, shaped as a bzImage by mkbzimage.py.
 * Both switch to the guest's own GDT, page tables (identity map of 0..4 GiB in 2 MiB
 * pages, user-accessible) and stack, then call rt_main(kind, info).
 * Also here: the exception stubs, the CPL3 runner (user mode returns through ud2), and
 * the real-mode trampoline the application processors start in. */
#define BOOT_PVH   1
#define BOOT_LINUX 2

	.section .note.Xen, "a"
	.balign 4
	.long 4, 4, 18              /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start32

	.section .head, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	mov %ebx, %esi               /* boot info pointer, kept in esi/rsi */
	mov $BOOT_PVH, %edi
	mov $boot_stack_top, %esp
	call setup_paging32
	mov $pml4, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $0x20, %eax               /* PAE */
	mov %eax, %cr4
	mov $0xc0000080, %ecx        /* EFER.LME */
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax         /* PG | PE */
	mov %eax, %cr0
	lgdt gdt_ptr
	ljmp $0x08, $long_entry

/* Identity map 0..4 GiB with 2 MiB pages, user-accessible (CPL3 work runs anywhere). */
setup_paging32:
	mov $pdpt, %eax
	or $0x7, %eax
	mov %eax, pml4
	xor %ecx, %ecx
1:	mov %ecx, %eax
	shl $12, %eax
	add $pd, %eax
	or $0x7, %eax
	mov %eax, pdpt(,%ecx,8)
	inc %ecx
	cmp $4, %ecx
	jb 1b
	xor %ecx, %ecx
2:	mov %ecx, %eax
	shl $21, %eax
	or $0x87, %eax               /* present, writable, user, 2 MiB */
	mov %eax, pd(,%ecx,8)
	movl $0, pd+4(,%ecx,8)
	inc %ecx
	cmp $2048, %ecx
	jb 2b
	ret

	.org 0x200
	.code64
	.globl startup_64
startup_64:                      /* Linux boot protocol: long mode, RSI = zero page */
	cli
	mov $boot_stack_top, %rsp
	mov $BOOT_LINUX, %edi
	push %rsi
	push %rdi
	call setup_paging64
	pop %rdi
	pop %rsi
	mov $pml4, %rax
	mov %rax, %cr3
	lgdt gdt_ptr
	pushq $0x08
	pushq $long_entry
	lretq

setup_paging64:
	lea pdpt(%rip), %rax
	or $0x7, %rax
	mov %rax, pml4(%rip)
	xor %rcx, %rcx
1:	mov %rcx, %rax
	shl $12, %rax
	lea pd(%rip), %rdx
	add %rdx, %rax
	or $0x7, %rax
	lea pdpt(%rip), %rdx
	mov %rax, (%rdx,%rcx,8)
	inc %rcx
	cmp $4, %rcx
	jb 1b
	xor %rcx, %rcx
	lea pd(%rip), %rdx
2:	mov %rcx, %rax
	shl $21, %rax
	or $0x87, %rax
	mov %rax, (%rdx,%rcx,8)
	inc %rcx
	cmp $2048, %rcx
	jb 2b
	ret

long_entry:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	xor %ax, %ax
	mov %ax, %fs
	mov %ax, %gs
	mov $boot_stack_top, %rsp
	and $0xffffffff, %esi
	call rt_main
1:	cli
	hlt
	jmp 1b

	.text
/* Exception stubs: push a dummy error code where the CPU pushes none, the vector,
 * then the common path saves registers and calls trap(frame). */
.macro stub n, has_err
	.globl isr\n
isr\n:
	.if \has_err == 0
	pushq $0
	.endif
	pushq $\n
	jmp isr_common
.endm
stub 0,0
stub 1,0
stub 2,0
stub 3,0
stub 4,0
stub 5,0
stub 6,0
stub 7,0
stub 8,1
stub 9,0
stub 10,1
stub 11,1
stub 12,1
stub 13,1
stub 14,1
stub 15,0
stub 16,0
stub 17,1
stub 18,0
stub 19,0
stub 20,0
stub 21,1

/* Vector 0x40: the MSI-X test's interrupt. Count it, EOI the local APIC, return. */
	.globl isr_msi, msi_count
isr_msi:
	push %rax
	lock incl msi_count(%rip)
	mov $0xfee000b0, %eax
	movl $0, (%rax)
	pop %rax
	iretq

/* Vector 0x41: the ACPI SCI (power button test). Count it, acknowledge the event the
 * way an OS does (write 1 to PM1 status bit 8, PWRBTN_STS: the level drops), EOI. */
	.globl isr_sci, sci_count, sci_pm1_evt
isr_sci:
	push %rax
	push %rdx
	lock incl sci_count(%rip)
	movw sci_pm1_evt(%rip), %dx
	mov $0x100, %eax
	outw %ax, %dx
	mov $0xfee000b0, %eax
	movl $0, (%rax)
	pop %rdx
	pop %rax
	iretq

isr_common:
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, %rdi
	call trap
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
	add $16, %rsp
	iretq

/* run_user(fn, arg): call fn(arg) at CPL3 on the user stack. Returns when the user side
 * makes syscall 0 (ud2 with eax = 0), through user_return below. */
	.globl run_user
run_user:
	push %rbx
	push %rbp
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, kernel_saved_rsp(%rip)
	pushq $0x1b                  /* ss: user data */
	lea user_stack_top(%rip), %rax
	pushq %rax                   /* rsp */
	pushq $0x2                   /* rflags: interrupts off */
	pushq $0x23                  /* cs: user code */
	lea user_entry(%rip), %rax
	pushq %rax
	mov %rdi, %rax
	mov %rsi, %rdi
	iretq
user_entry:
	call *%rax
	xor %eax, %eax
	ud2                          /* syscall 0: back to the kernel */

	.globl user_return
user_return:
	mov kernel_saved_rsp(%rip), %rsp
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %rbp
	pop %rbx
	ret

/* Application processors start here in real mode at 0x8000 (SIPI vector 8). The blob
 * between ap_tramp_start and ap_tramp_end is copied there; ap_tramp_* variables are
 * patched by the BSP. */
	.section .rodata
	.code16
	.globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	lgdtl 0x8000 + (ap_gdt_ptr - ap_tramp_start)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x18, $(0x8000 + (ap_pm - ap_tramp_start))
	.code32
ap_pm:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %ss
	mov 0x8000 + (ap_cr3 - ap_tramp_start), %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $0x20, %eax
	mov %eax, %cr4
	mov $0xc0000080, %ecx
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000000, %eax
	mov %eax, %cr0
	ljmp $0x08, $(0x8000 + (ap_lm - ap_tramp_start))
	.code64
ap_lm:
	mov $1, %eax
	lock xadd %eax, ap_next_stack
	shl $12, %rax
	add $ap_stacks + 4096, %rax
	mov %rax, %rsp
	mov $ap_main, %rax
	call *%rax
1:	cli
	hlt
	jmp 1b
	.balign 8
ap_gdt:
	.quad 0
	.quad 0x00af9a000000ffff     /* 0x08: 64-bit code */
	.quad 0x00cf92000000ffff     /* 0x10: data */
	.quad 0x00cf9a000000ffff     /* 0x18: 32-bit code */
ap_gdt_ptr:
	.word ap_gdt_ptr - ap_gdt - 1
	.long 0x8000 + (ap_gdt - ap_tramp_start)
	.globl ap_cr3
ap_cr3:
	.long 0
ap_tramp_end:

	.data
	.balign 8
gdt:
	.quad 0
	.quad 0x00af9a000000ffff     /* 0x08: kernel code 64 */
	.quad 0x00cf92000000ffff     /* 0x10: kernel data */
	.quad 0x00cff2000000ffff     /* 0x18: user data (0x1b) */
	.quad 0x00affa000000ffff     /* 0x20: user code 64 (0x23) */
	.globl gdt_tss
gdt_tss:
	.quad 0, 0                   /* 0x28: TSS, filled in by rt_cpu_init */
gdt_end:
	.globl gdt_ptr
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt
	.globl ap_next_stack
ap_next_stack:
	.long 0

	.bss
	.balign 4096
	.globl pml4
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096
	.skip 16384
boot_stack_top:
	.skip 16384
	.globl trap_stack_top
trap_stack_top:
	.skip 65536
user_stack_top:
	.globl ap_stacks
ap_stacks:
	.skip 4096 * 64
kernel_saved_rsp:
	.quad 0
msi_count:
	.long 0
