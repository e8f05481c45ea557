/* vtool: `vtool <group> <command> [options]` dispatch, --help and --version.
 * The commands themselves live in img/, net/ and vmm/; this file only finds them. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"

static const struct {
	const char *name;
	const char *summary;
} groups[] = {
	{ "img", "create, inspect and convert disk images (qemu-img compatible)" },
	{ "net", "host networking for VMs: bridges, taps, NAT" },
	{ "run", "run a KVM virtual machine (qemu-system-x86_64 compatible options)" },
	{ "host", "check that this machine can run vtool (virt-host-validate, kvm-ok)" },
};

static bool group_has_commands(const char *group)
{
	for (const struct vt_command *const *c = vt_commands; *c; c++)
		if (!strcmp((*c)->group, group))
			return true;
	return false;
}

static void print_main_help(FILE *f)
{
	fprintf(f, "usage: vtool <group> <command> [options]\n"
	           "       vtool --help | --version\n\n"
	           "vtool is a disk-image tool, a host network helper and a KVM machine monitor\n"
	           "in one binary. Command groups:\n\n");
	bool any = false;
	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
		if (!group_has_commands(groups[g].name))
			continue; /* list only what is built */
		any = true;
		fprintf(f, "  %-5s %s\n", groups[g].name, groups[g].summary);
		for (const struct vt_command *const *c = vt_commands; *c; c++)
			if (!strcmp((*c)->group, groups[g].name) && (*c)->name)
				fprintf(f, "        %-10s %s\n", (*c)->name, (*c)->summary);
	}
	if (!any)
		fprintf(f, "  (no commands are built yet)\n");
	fprintf(f, "\n'vtool <group> --help' and 'vtool <group> <command> --help' say more.\n");
}

static void print_group_help(FILE *f, const char *group)
{
	fprintf(f, "usage: vtool %s <command> [options]\n\ncommands:\n", group);
	for (const struct vt_command *const *c = vt_commands; *c; c++)
		if (!strcmp((*c)->group, group) && (*c)->name)
			fprintf(f, "  %-10s %s\n", (*c)->name, (*c)->summary);
	fprintf(f, "\n'vtool %s <command> --help' describes a command's options.\n", group);
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return false;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return true;
	}
	return false;
}

/* Run cmd with argv[0] replaced by its full name so getopt's messages name it. */
static int run_command(const struct vt_command *cmd, int argc, char **argv)
{
	char name[64];

	if (cmd->name)
		snprintf(name, sizeof(name), "vtool %s %s", cmd->group, cmd->name);
	else
		snprintf(name, sizeof(name), "vtool %s", cmd->group);
	if (wants_help(argc, argv)) {
		fputs(cmd->help, stdout);
		return 0;
	}
	argv[0] = name;
	return cmd->main(argc, argv);
}

static const struct vt_command *find_command(const char *group, const char *name)
{
	for (const struct vt_command *const *c = vt_commands; *c; c++) {
		if (strcmp((*c)->group, group))
			continue;
		if (!(*c)->name || (name && !strcmp((*c)->name, name)))
			return *c;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		print_main_help(stderr);
		return 1;
	}
	const char *group = argv[1];
	if (!strcmp(group, "--help") || !strcmp(group, "-h") || !strcmp(group, "help")) {
		print_main_help(stdout);
		return 0;
	}
	if (!strcmp(group, "--version") || !strcmp(group, "-V")) {
		printf("vtool version %s\n", VTOOL_VERSION);
		return 0;
	}
	if (group[0] == '-') {
		fprintf(stderr, "vtool: unrecognized option '%s'\n"
		                "Try 'vtool --help' for more information.\n", group);
		return 1;
	}
	if (!group_has_commands(group)) {
		bool known = false;
		for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
			known |= !strcmp(groups[g].name, group);
		fprintf(stderr, "vtool: %s '%s'\nTry 'vtool --help' for more information.\n",
		        known ? "this build has no commands in group" : "unknown command group",
		        group);
		return 1;
	}

	/* A group-less command (`vtool run`) takes everything after the group. */
	const struct vt_command *direct = find_command(group, NULL);
	if (direct && !direct->name)
		return run_command(direct, argc - 1, argv + 1);

	if (argc < 3) {
		print_group_help(stderr, group);
		return 1;
	}
	const char *name = argv[2];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
		print_group_help(stdout, group);
		return 0;
	}
	const struct vt_command *cmd = find_command(group, name);
	if (!cmd) {
		fprintf(stderr, "vtool: %s: unknown command '%s'\n"
		                "Try 'vtool %s --help' for more information.\n", group, name, group);
		return 1;
	}
	return run_command(cmd, argc - 2, argv + 2);
}
