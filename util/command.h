/* The shape of a vtool command, shared by cli/ (which dispatches) and the layers that
 * implement commands (img/, net/, vmm/).
 *
 * cli/ calls main() with argv[0] set to the full command name ("vtool img create"), so
 * getopt's own messages name the command. A command returns its exit status; it may
 * print (it is a front end), but the layers it calls never do. */
#ifndef VTOOL_UTIL_COMMAND_H
#define VTOOL_UTIL_COMMAND_H

struct vt_command {
	const char *group;    /* "img", "net", or "run" for the group-less `vtool run` */
	const char *name;     /* subcommand name; NULL for `vtool run` */
	const char *summary;  /* one line for the group's --help */
	const char *help;     /* full --help text: usage line, every option, one example */
	int (*main)(int argc, char **argv);
};

/* Print "<argv0>: <message>" and the "Try '<argv0> --help'" hint to stderr; returns 1,
 * the exit status for usage errors (as qemu-img). */
int vt_usage_error(const char *argv0, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* After getopt returned '?' (getopt already printed the reason): print the hint. */
int vt_usage_hint(const char *argv0);

#endif
