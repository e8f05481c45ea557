/* `vtool host validate`: the command front over host_validate(): options, the human
 * lines in virt-host-validate's shape, JSON, and the exit status. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "host/cmd.h"
#include "host/host.h"
#include "util/json.h"

#define DOTS_TO 54   /* "Checking <title> ..." is padded with dots to this column */

static const char validate_help[] =
	"Usage: vtool host validate [--output=human|json] [--quiet] [--dir DIR]\n"
	"\n"
	"Checks that this machine can run vtool, and says how to fix what is missing: the\n"
	"CPU's virtualization support (and whether the firmware turned it off), the KVM\n"
	"modules, nested virtualization, the hypervisor this host itself runs under, /dev/kvm\n"
	"and every KVM capability 'vtool run' uses, and how fast guests run here: a probe VM of\n"
	"a few tens of milliseconds compares guest kernel (CPL0) and user (CPL3) instruction\n"
	"rates, since some nested hosts emulate kernel code. Then host networking for 'vtool\n"
	"net' and '-net tap' (in the current network namespace), the firmware images, and the\n"
	"image directory. Nothing is changed: network checks only read, the probe VM lives for\n"
	"milliseconds, and the file checks use an unnamed temporary file.\n"
	"\n"
	"One line per check, then for WARN and FAIL one line with the fix:\n"
	"  vtool: Checking if device /dev/kvm is accessible ........ : FAIL (...)\n"
	"          fix: join group kvm, which may open /dev/kvm: sudo usermod -aG kvm alice, ...\n"
	"Results: PASS; NOTE, a fact worth knowing; WARN, a feature is missing or slow\n"
	"(networking, firmware boots, guest speed); FAIL, 'vtool run' cannot work here; SKIP,\n"
	"not checked because an earlier check failed.\n"
	"\n"
	"Options:\n"
	"  --output=human|json   the format (default human). JSON is one object:\n"
	"                        {\"checks\": [{\"group\": \"cpu|kvm|net|files\", \"name\": ID,\n"
	"                        \"title\": TEXT, \"result\": \"PASS|NOTE|WARN|FAIL|SKIP\",\n"
	"                        \"detail\": TEXT, \"fix\": TEXT or null}, ...],\n"
	"                        \"result\": the worst of PASS|WARN|FAIL, \"exit-code\": N};\n"
	"                        \"fix\" is a string exactly for WARN and FAIL\n"
	"  -q, --quiet           human output: only the WARN and FAIL lines and their fixes\n"
	"  --dir DIR             the image directory (default: the current directory): where the\n"
	"                        file checks test OFD locks, O_DIRECT and free space\n"
	"\n"
	"Exit status: 0 when nothing WARNs or FAILs, 1 when a check FAILs (or on a usage error),\n"
	"2 when checks only WARN. NOTE and SKIP lines do not count.\n"
	"\n"
	"Example:\n"
	"  vtool host validate --dir /var/lib/vtool/images\n";

static void print_human(const struct host_report *r, bool quiet)
{
	int count[HOST_SKIP + 1] = { 0 };

	for (int i = 0; i < r->n; i++) {
		const struct host_check *c = &r->v[i];
		count[c->result]++;
		if (quiet && c->result != HOST_WARN && c->result != HOST_FAIL)
			continue;
		int len = (int)strlen(c->title);
		char dots[DOTS_TO];
		int nd = DOTS_TO - len > 3 ? DOTS_TO - len : 3;
		memset(dots, '.', (size_t)nd);
		dots[nd] = '\0';
		printf("vtool: Checking %s %s : %s", c->title, dots, host_result_name(c->result));
		printf(c->detail[0] ? " (%s)\n" : "\n", c->detail);
		if (c->fix[0])
			printf("        fix: %s\n", c->fix);
	}
	if (quiet)
		return;
	int status = host_report_status(r);
	printf("vtool: %d checks: %d PASS, %d NOTE, %d WARN, %d FAIL, %d SKIP: %s\n", r->n,
	       count[HOST_PASS], count[HOST_NOTE], count[HOST_WARN], count[HOST_FAIL],
	       count[HOST_SKIP], status == 1 ? "vtool run cannot work here until the FAILs are fixed"
	       : status == 2 ? "vtool run can work here; the WARNs say what is missing or slow"
	       : "vtool run can work here");
}

static int print_json(const struct host_report *r)
{
	struct vt_json *root = vt_json_object(), *checks = vt_json_array();
	int status = host_report_status(r);

	for (int i = 0; i < r->n; i++) {
		const struct host_check *c = &r->v[i];
		struct vt_json *o = vt_json_object();
		vt_json_set_str(o, "group", c->group);
		vt_json_set_str(o, "name", c->name);
		vt_json_set_str(o, "title", c->title);
		vt_json_set_str(o, "result", host_result_name(c->result));
		vt_json_set_str(o, "detail", c->detail);
		vt_json_set(o, "fix", c->fix[0] ? vt_json_string(c->fix) : vt_json_null());
		vt_json_append(checks, o);
	}
	vt_json_set(root, "checks", checks);
	vt_json_set_str(root, "result", status == 1 ? "FAIL" : status == 2 ? "WARN" : "PASS");
	vt_json_set_int(root, "exit-code", status);
	int ret = root ? vt_json_print(stdout, root, VT_JSON_QEMU) : -ENOMEM;
	vt_json_free(root);
	return ret;
}

static int validate_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'O' }, { "quiet", no_argument, NULL, 'q' },
		{ "dir", required_argument, NULL, 'd' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct host_options o = { .dir = "." };
	struct host_report r = { 0 };
	struct vt_error err = { 0 };
	bool json = false, quiet = false;
	int c;

	while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
		switch (c) {
		case 'O':
			if (!strcmp(optarg, "json"))
				json = true;
			else if (strcmp(optarg, "human"))
				return vt_usage_error(argv[0], "--output must be human or json");
			break;
		case 'q': quiet = true; break;
		case 'd': o.dir = optarg; break;
		default: return vt_usage_hint(argv[0]);
		}
	}
	if (optind < argc)
		return vt_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
	struct stat st;
	int e = stat(o.dir, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
	if (e) {
		vt_error_set(&err, e, o.dir, "image directory", NULL);
		vt_error_print(&err, stderr);
		return 1;
	}
	if (host_validate(&o, &r, &err)) {
		vt_error_print(&err, stderr);
		host_report_free(&r);
		return 1;
	}
	int status = host_report_status(&r);
	if (json && print_json(&r) < 0) {
		fprintf(stderr, "vtool: host validate: print JSON: %s\n", strerror(ENOMEM));
		status = 1;
	} else if (!json) {
		print_human(&r, quiet);
	}
	host_report_free(&r);
	return status;
}

const struct vt_command vt_cmd_host_validate = {
	.group = "host",
	.name = "validate",
	.summary = "check that this machine can run vtool, with a fix for each problem",
	.help = validate_help,
	.main = validate_main,
};
