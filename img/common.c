#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "img/img.h"
#include "util/size.h"

int img_fail(const struct vt_error *e)
{
	vt_error_print(e, stderr);
	return 1;
}

int img_sync_dir(const char *path, struct vt_error *err)
{
	char *copy = strdup(path);
	if (!copy)
		return vt_error_set(err, ENOMEM, path, "sync directory", NULL);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;
	if (fd < 0 || fsync(fd) < 0)
		r = vt_error_set(err, errno, path, "sync directory", NULL);
	if (fd >= 0)
		close(fd);
	free(copy);
	return r;
}

/* qemu's snapshot table: the "Snapshot list:" block of info and of snapshot -l. */
void img_print_snapshots(FILE *out, const struct blk_info *in)
{
	fprintf(out, "Snapshot list:\n");
	fprintf(out, "%-9s %-17s %7s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
	       "ICOUNT");
	for (int i = 0; i < in->nb_snapshots; i++) {
		const struct blk_snapshot_info *sn = &in->snapshots[i];
		char size[32], date[32], clock[32], icount[32] = "";
		vt_size_to_str(sn->vm_state_size, size, sizeof(size));
		time_t t = (time_t)sn->date_sec;
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		uint64_t ms = sn->vm_clock_nsec / 1000000ull;
		snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
		         (unsigned long long)(ms / 3600000), (unsigned long long)(ms / 60000 % 60),
		         (unsigned long long)(ms / 1000 % 60), (unsigned long long)(ms % 1000));
		if (sn->icount != UINT64_MAX)
			snprintf(icount, sizeof(icount), "%llu", (unsigned long long)sn->icount);
		/* qemu's row layout: the same columns as the header for short names, one more
		 * space before the size for names longer than 16 bytes. */
		fprintf(out, "%-9s %-16s %8s%20s%13s%11s\n", sn->id, sn->name, size, date, clock, icount);
	}
}
