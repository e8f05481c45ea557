/* Guest disks over the block layer. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blk/blk.h"
#include "vmm/disk.h"

/* -snapshot: a qcow2 overlay in $TMPDIR whose backing file is the image. It is unlinked
 * as soon as it is open, so nothing is left behind however vtool ends. */
static int disk_open_snapshot(struct vm_disk *d, const char *file, const char *format,
                              const struct blk_open_opts *opts, struct vt_error *err)
{
	char abs[PATH_MAX], tmp[PATH_MAX];
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	struct blk_create_opts co = { .format = "qcow2", .backing_file = abs,
	                              .backing_format = format };
	char *formatting = NULL;

	if (!realpath(file, abs))
		return vt_error_set(err, errno, file, "open", NULL);
	snprintf(tmp, sizeof(tmp), "%s/vtool-snapshot.XXXXXX", dir);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return vt_error_set(err, errno, tmp, "create snapshot overlay", NULL);
	close(fd);
	int ret = blk_create(tmp, &co, &formatting, err);
	free(formatting);
	if (!ret) {
		struct blk_open_opts o = *opts;
		o.format = "qcow2";
		o.writable = true;
		ret = blk_open(tmp, &o, &d->blk, err);
	}
	unlink(tmp);
	return ret;
}

int disk_open(struct vm_disk *d, const struct vm_drive *drive, bool snapshot,
              struct vt_error *err)
{
	struct blk_open_opts opts = { .format = drive->format };
	int ret;

	*d = (struct vm_disk){ .drive = drive, .discard = drive->discard_unmap };
	d->readonly = drive->readonly || drive->media == VM_MEDIA_CDROM;
	if (drive->cache && blk_cache_parse(drive->cache, &opts.cache))
		return vt_error_set(err, EINVAL, drive->file, "open",
		                    "invalid cache mode '%s'", drive->cache);
	if (drive->format && !blk_format_known(drive->format))
		return vt_error_set(err, EINVAL, drive->file, "open", "Unknown driver '%s'",
		                    drive->format);
	char format[16];
	if (snapshot || drive->snapshot) {
		/* The overlay names the image's format: learn it first, read-only. */
		struct blk *probe;
		struct blk_open_opts po = opts;
		po.writable = false;
		po.force_share = true;
		if ((ret = blk_open(drive->file, &po, &probe, err)))
			return ret;
		snprintf(format, sizeof(format), "%s", blk_format(probe));
		blk_close(probe, NULL);
		opts.format = format;
		ret = disk_open_snapshot(d, drive->file, format, &opts, err);
		d->readonly = drive->media == VM_MEDIA_CDROM;
	} else {
		/* Opened once, as the guest will use it (a dirty VHDX log is replayed by a
		 * read-write open only, so no read-only probe first). */
		opts.writable = !d->readonly;
		ret = blk_open(drive->file, &opts, &d->blk, err);
		if (ret == 0)
			snprintf(format, sizeof(format), "%s", blk_format(d->blk));
	}
	d->probed_raw = ret == 0 && !drive->format && !strcmp(format, "raw") && !d->readonly;
	if (ret)
		return ret;
	d->size = blk_size(d->blk);
	/* A serial number the guest can read (virtio GET_ID, ATA IDENTIFY): the file's
	 * base name, as short as ATA allows. */
	const char *base = strrchr(drive->file, '/');
	snprintf(d->serial, sizeof(d->serial), "%s",
	         drive->serial ? drive->serial : base ? base + 1 : drive->file);
	return 0;
}

void disk_close(struct vm_disk *d)
{
	if (d->blk)
		blk_close(d->blk, NULL);
	d->blk = NULL;
}

int disk_readv(struct vm_disk *d, uint64_t off, const struct iovec *iov, int n,
               struct vt_error *err)
{
	return blk_preadv(d->blk, off, iov, n, err);
}

static int disk_check_write(struct vm_disk *d, uint64_t off, struct vt_error *err)
{
	if (d->readonly)
		return vt_error_set(err, EROFS, d->drive->file, "write", "read-only drive");
	if (d->probed_raw && off < 512)
		return vt_error_set(err, EPERM, d->drive->file, "write",
		                    "sector 0 of a probed raw image is write-protected "
		                    "(give format=raw)");
	return 0;
}

int disk_writev(struct vm_disk *d, uint64_t off, const struct iovec *iov, int n,
                struct vt_error *err)
{
	int ret = disk_check_write(d, off, err);

	return ret ? ret : blk_pwritev(d->blk, off, iov, n, err);
}

int disk_flush(struct vm_disk *d, struct vt_error *err)
{
	return d->readonly ? 0 : blk_flush(d->blk, err);
}

int disk_discard(struct vm_disk *d, uint64_t off, uint64_t len, struct vt_error *err)
{
	int ret = disk_check_write(d, off, err);

	if (ret || !d->discard)
		return ret; /* discard=ignore: a successful no-op, as qemu */
	return blk_discard(d->blk, off, len, err);
}

int disk_write_zeroes(struct vm_disk *d, uint64_t off, uint64_t len, bool unmap,
                      struct vt_error *err)
{
	int ret = disk_check_write(d, off, err);

	return ret ? ret : blk_write_zeroes(d->blk, off, len,
	                                    unmap && d->discard ? BLK_MAY_UNMAP : 0, err);
}
