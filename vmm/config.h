/* struct vm_config: everything `vtool run`'s command line says about a machine.
 *
 * options.c fills it from qemu-system-x86_64 syntax; vm.c and the devices read it. The
 * parser knows every option once, including those whose devices come in later work
 * (disks, network, display): they are parsed here and refused by vm_config_check()
 * until their device exists, so the command-line design does not change when they land. */
#ifndef VTOOL_VMM_CONFIG_H
#define VTOOL_VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/error.h"

#define VM_MAX_VCPUS 64
#define VM_MAX_DRIVES 16
#define VM_MAX_NICS 8
#define VM_MAX_CPU_EDITS 32

enum vm_serial_kind { VM_SERIAL_STDIO, VM_SERIAL_FILE, VM_SERIAL_NONE };

enum vm_drive_if { VM_DRIVE_IDE, VM_DRIVE_VIRTIO, VM_DRIVE_NONE };
enum vm_drive_media { VM_MEDIA_DISK, VM_MEDIA_CDROM };

struct vm_drive {
	const char *file;
	const char *format;      /* NULL: probe */
	enum vm_drive_if interface;
	enum vm_drive_media media;
	int index;               /* -1: next free */
	bool readonly;
	const char *cache;       /* writeback, none, unsafe, writethrough, directsync */
	bool discard_unmap;
	bool snapshot;
	const char *option;      /* the option it came from ("-hda", "-drive") for messages */
	const char *id;          /* -drive id=, for -device ...,drive=ID */
	int bootindex;           /* -1: none */
	const char *serial;      /* -device ide-hd,serial=: what the guest reads; NULL: file name */
	const char *dev_id;      /* -device ...,id=: the device's name (query-block's qdev) */
};

struct vm_nic {
	const char *model;       /* "virtio" / "virtio-net-pci" */
	const char *ifname;      /* tap name */
	const char *id;          /* -netdev id */
	uint8_t mac[6];
	bool has_mac;
	const char *option;
	int bootindex;           /* -1: none */
	const char *script;      /* run with the tap's name at start (qemu: /etc/qemu-ifup) */
	const char *downscript;  /* ... and at exit (qemu: /etc/qemu-ifdown); NULL: none */
};

/* -boot: the legacy device letters (c disk, d CD-ROM, n network, a floppy) and the rest. */
struct vm_boot {
	char order[8];           /* default "cad" as qemu's pc */
	char once[8];            /* "" unless once=: the first boot only */
	int menu;                /* -1 unset, 0 off, 1 on */
	int splash_time;         /* ms, -1 unset */
	int reboot_timeout;      /* ms, -1: never (qemu's default) */
	bool strict;
};

/* The screen and who sees it: -vga, -display, -vnc, -k, -object secret, -global VGA.*
 * (parsed by ui/display_opts.c). */
#define VM_MAX_SECRETS 4
enum vm_vnc_share { VM_SHARE_ALLOW_EXCLUSIVE, VM_SHARE_FORCE_SHARED, VM_SHARE_IGNORE };

struct vm_display {
	bool vga;                /* -vga std (the default) or none */
	bool vga_given;          /* -vga on the command line (-nodefaults drops only the default) */
	bool nodefaults;
	uint32_t vgamem_mb;      /* -global VGA.vgamem_mb= (16) */
	bool vnc;                /* a VNC server runs */
	char vnc_host[128];      /* the address to listen on (127.0.0.1 when -vnc :N) */
	int vnc_port;            /* 5900 + display number */
	const char *vnc_unix;    /* -vnc unix:PATH */
	const char *vnc_option;  /* "-vnc" or "-display" for messages */
	char vnc_arg[256];       /* the address as given, for messages */
	const char *password_secret;  /* -vnc ...,password-secret=ID */
	char *password;          /* the secret's value (vm_config_check) */
	enum vm_vnc_share share;
	const char *keymap;      /* -k LAYOUT */
	struct vm_secret {
		const char *id, *file, *data;
	} secrets[VM_MAX_SECRETS];
	int nr_secrets;
};

/* One "+feat" / "-feat" of -cpu. */
struct vm_cpu_edit {
	const char *name;
	bool enable;
};

/* -smp's topology after qemu's rules (options_smp.c). */
struct vm_topology {
	int sockets, dies, cores, threads, max_cpus;
};

/* vtool run as a managed process: monitors, -S, the sandbox, -runas and -chroot
 * (options_ctl.c parses them; monitor.c, control.c and sandbox.c use them). */
#define VM_MAX_MONITORS 4
#define VM_MAX_SOCK_CHARDEVS 8

enum vm_chardev_kind { VM_CHR_SOCKET_UNIX, VM_CHR_SOCKET_TCP, VM_CHR_STDIO };

struct vm_sock_chardev {
	const char *id;
	enum vm_chardev_kind kind;
	const char *path;            /* unix */
	const char *host, *port;     /* tcp */
	bool wait;                   /* server: block start-up until a client connects */
};

struct vm_monitor {
	const char *chardev_id;      /* -mon chardev=ID (resolved by vm_config_check) */
	int chardev;                 /* index into ctl.chardevs */
	bool qmp;                    /* mode=control; else readline (HMP) */
	bool pretty;
};

struct vm_ctl_config {
	struct vm_sock_chardev chardevs[VM_MAX_SOCK_CHARDEVS];
	int nr_chardevs;
	struct vm_monitor monitors[VM_MAX_MONITORS];
	int nr_monitors;
	bool mon_stdio_mux;          /* -serial mon:stdio / -nographic: Ctrl-A c reaches the HMP */
	bool monitor_given;          /* -monitor/-mon: no default monitor with -nographic */
	bool start_paused;           /* -S */
	int sandbox;                 /* -1 default (on, except in sanitizer builds), 0, 1 */
	const char *runas;           /* user name or uid[:gid] */
	const char *chroot_dir;
	bool want_help, want_version;
};

struct vm_config {
	uint64_t ram_size;                  /* -m, bytes */
	int nr_vcpus;                       /* -smp */
	const char *cpu_model;              /* -cpu model name */
	struct vm_cpu_edit cpu_edits[VM_MAX_CPU_EDITS];
	int nr_cpu_edits;

	const char *kernel, *initrd, *append;
	const char *name, *pidfile;
	const char *process_name;           /* -name ...,process=: the process's name */
	bool daemonize, no_reboot, no_shutdown, nographic;
	bool rtc_localtime;

	enum vm_serial_kind serial;
	const char *serial_path;            /* VM_SERIAL_FILE */

	bool debug_exit;                    /* -device isa-debug-exit */
	uint16_t debug_exit_port, debug_exit_size;

	const char *bios;                   /* -bios; NULL: Debian's SeaBIOS */
	struct vm_boot boot;
	const char *debugcon_path;          /* -debugcon file:PATH / isa-debugcon chardev */
	uint16_t debugcon_port;             /* 0xe9 unless -global isa-debugcon.iobase= */
	const char *debugcon_chardev;       /* -device isa-debugcon,chardev=ID before resolving */
	struct { const char *id, *path; } chardevs[4];
	int nr_chardevs;
	uint8_t uuid[16];
	bool has_uuid;

	/* Later devices: parsed now, refused by vm_config_check() until they exist. */
	struct vm_drive drives[VM_MAX_DRIVES];
	int nr_drives;
	struct vm_nic nics[VM_MAX_NICS];
	int nr_nics;
	bool snapshot;                      /* -snapshot */
	struct vm_display display;
	const char *unsupported;            /* first option parsed but not supported yet */

	bool nodefaults;                    /* -nodefaults: no default serial port */
	bool graphics_off;                  /* -machine graphics=off: firmware on the serial port */
	struct vm_topology topo;            /* -smp sockets=,dies=,cores=,threads=,maxcpus= */
	struct vm_ctl_config ctl;           /* monitors, -S, -sandbox, -runas, -chroot */
};

/* Parse qemu-system-x86_64 style arguments (argv[0] is the program name). On a bad option
 * fills err (file = the option) and returns -EINVAL. */
int vm_config_parse(struct vm_config *cfg, int argc, char **argv, struct vt_error *err);

/* Refuse what this build cannot run yet ("not supported yet: -vnc") and resolve
 * references between options (-device ...,drive=ID, -netdev ids, chardevs). */
int vm_config_check(const struct vm_config *cfg, struct vt_error *err);

/* Append the qemu-system-x86_64 options vtool lacks ("-a, -b, ...", wrapped, each line
 * indented) to buf, for --help. */
void vm_options_unsupported_list(char *buf, size_t len, int indent);
/* Print every option name vtool run accepts, one a line (tests). */
void vm_options_accepted(FILE *f);
/* Print the configuration, one "field=value" line each (tests: VTOOL_RUN_DUMP_CONFIG). */
void vm_config_dump(const struct vm_config *cfg, FILE *f);

#endif
