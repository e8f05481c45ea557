#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "img/img.h"
#include "img/object.h"
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

char *img_resolve_relative(const char *image, const char *name)
{
	if (name[0] == '/' || !strchr(image, '/'))
		return strdup(name);
	char *copy = strdup(image);
	if (!copy)
		return NULL;
	const char *dir = dirname(copy);
	size_t n = strlen(dir) + strlen(name) + 2;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", dir, name);
	free(copy);
	return out;
}

bool img_format_name_valid(const char *name)
{
	static const char *const qemu_formats[] = {
		"blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress",
		"copy-before-write", "copy-on-read", "dmg", "file", "host_cdrom", "host_device",
		"luks", "nbd", "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow",
		"qcow2", "qed", "quorum", "raw", "snapshot-access", "throttle", "vdi", "vhdx",
		"vmdk", "vpc", "vvfat", NULL,
	};
	if (blk_format_known(name))
		return true;
	for (const char *const *f = qemu_formats; *f; f++)
		if (!strcmp(*f, name))
			return true;
	return false;
}

int img_parse_cache(const char *argv0, const char *what, const char *mode,
                    enum blk_cache *out)
{
	if (blk_cache_parse(mode, out) == 0)
		return 0;
	fprintf(stderr, "%s: Invalid %s option: %s\n", argv0, what, mode);
	return -1;
}

int img_open_spec(const char *arg, const char *fmt, bool image_opts, struct img_open_spec *s,
                  struct vt_error *err)
{
	*s = (struct img_open_spec){ .filename = arg, .format = fmt };
	if (!image_opts)
		return 0;
	if (fmt)
		return vt_error_set(err, EINVAL, "", "", "--image-opts and --format are mutually "
		                    "exclusive");
	if (!(s->buf = strdup(arg)))
		return vt_error_set(err, ENOMEM, arg, "open", NULL);
	const char *driver = NULL, *file = NULL;
	char *save = NULL;
	bool any = false;
	for (char *tok = strtok_r(s->buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			if (any)
				return vt_error_set(err, EINVAL, arg, "Could not open", "Invalid parameter "
				                    "'%s'", tok);
			return vt_error_set(err, ENOENT, arg, "Could not open", "Cannot find device='%s' "
			                    "nor node-name='%s'", tok, tok);
		}
		any = true;
		*eq = '\0';
		const char *v = eq + 1;
		if (!strcmp(tok, "driver"))
			driver = v;
		else if (!strcmp(tok, "file.filename") || !strcmp(tok, "filename"))
			file = v;
		else if (!strcmp(tok, "file.driver")) {
			if (strcmp(v, "file"))
				return vt_error_set(err, ENOTSUP, arg, "Could not open", "protocol '%s': "
				                    "vtool opens images from files only", v);
		} else if (!strcmp(tok, "encrypt.key-secret")) {
			const struct img_secret *sec = img_secret_find(v);
			if (!sec)
				return vt_error_set(err, ENOENT, arg, "Could not open", "No secret with "
				                    "id '%s'", v);
			s->key = sec->data;
			s->key_len = sec->len;
		} else if (!strcmp(tok, "file.locking") || !strcmp(tok, "file.aio") ||
		           !strcmp(tok, "read-only") ||
		           !strncmp(tok, "cache.", 6)) {
			/* Accepted: vtool's locking, I/O and cache follow its own options. */
		} else if (!strncmp(tok, "file.", 5)) {
			return vt_error_set(err, EINVAL, arg, "Could not open", "Block protocol 'file' "
			                    "doesn't support the option '%s'", tok + 5);
		} else {
			return vt_error_set(err, EINVAL, arg, "Could not open", "Block format '%s' does "
			                    "not support the option '%s'", driver ? driver : "raw", tok);
		}
	}
	if (!file)
		return vt_error_set(err, EINVAL, arg, "Could not open", "A block device must be "
		                    "specified for \"file\"");
	s->filename = file;
	s->format = driver && strcmp(driver, "file") ? driver : driver ? "raw" : NULL;
	return 0;
}

void img_open_spec_free(struct img_open_spec *s)
{
	free(s->buf);
	s->buf = NULL;
}

char *img_temp_name(const char *target)
{
	char *copy = strdup(target), *copy2 = strdup(target);
	char *out = NULL;
	if (copy && copy2) {
		const char *dir = dirname(copy), *base = basename(copy2);
		size_t n = strlen(dir) + strlen(base) + 40;
		if ((out = malloc(n)))
			snprintf(out, n, "%s/.%s.vtool-%ld", dir, base, (long)getpid());
	}
	free(copy);
	free(copy2);
	return out;
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
