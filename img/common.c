#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "img/img.h"

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
