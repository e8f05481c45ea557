/* File checks: the firmware images a firmware boot loads (Debian's SeaBIOS and VGA BIOS),
 * and, in the image directory, OFD locks (the block layer's image locks, as qemu's),
 * O_DIRECT (cache=none) and free space. The probes use an unnamed temporary file
 * (O_TMPFILE, or a named one removed at once where the file system lacks it). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "host/host.h"

#define LOW_SPACE (1ull << 30)

static const struct firmware {
	const char *id, *title, *path, *package, *use;
} firmware[] = {
	{ "files-seabios", "for the SeaBIOS image", "/usr/share/seabios/bios-256k.bin", "seabios",
	  "firmware boots (disks and CD-ROMs without -kernel)" },
	{ "files-vgabios", "for the VGA BIOS image", "/usr/share/seabios/vgabios-stdvga.bin", "seabios",
	  "a VGA display" },
};

static void check_firmware(struct host_report *r, const struct firmware *fw)
{
	struct stat st;
	struct host_check *k = host_add(r, "files", fw->id, fw->title, HOST_PASS);

	if (!k)
		return;
	int e = stat(fw->path, &st) < 0 ? errno : !S_ISREG(st.st_mode) ? EINVAL :
	        access(fw->path, R_OK) < 0 ? errno : 0;
	if (!e) {
		host_detail(k, "%s (%lld KiB, Debian package %s)", fw->path,
		            (long long)st.st_size >> 10, fw->package);
		return;
	}
	k->result = HOST_WARN;
	host_detail(k, "%s: %s; needed for %s", fw->path,
	            e == EINVAL ? "not a regular file" : strerror(e), fw->use);
	host_fix(k, "apt-get install %s", fw->package);
}

static const char *fs_name(long type)
{
	static const struct { long magic; const char *name; } names[] = {
		{ 0xef53, "ext4" }, { 0x58465342, "xfs" }, { 0x9123683e, "btrfs" },
		{ 0x01021994, "tmpfs" }, { 0x6969, "nfs" }, { 0x794c7630, "overlayfs" },
		{ 0x65735546, "fuse" }, { 0xff534d42, "cifs" }, { 0x2fc12fc1, "zfs" },
		{ 0x5346544e, "ntfs" }, { 0x4d44, "vfat" }, { 0xf15f, "ecryptfs" },
		{ 0x01021997, "9p" }, { 0x858458f6, "ramfs" }, { 0xca451a4e, "bcachefs" },
		{ 0x73717368, "squashfs" }, { 0x6e736673, "nsfs" },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].magic == type)
			return names[i].name;
	return NULL;
}

/* An unnamed file in dir: O_TMPFILE, or a named one unlinked at once. */
static int temp_file(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd < 0 ? -errno : fd;
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/.vtool-validate-XXXXXX", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

static int ofd_lock(int fd, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 100, .l_len = 1 };

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* A write lock on one open file description must keep out a second one of the same file:
 * that is what OFD locks add to POSIX locks, and what the image locks rely on. */
static void check_ofd(struct host_report *r, int fd, const char *where)
{
	struct host_check *k = host_add(r, "files", "files-ofd-locks",
	                                "for OFD locks in the image directory", HOST_PASS);
	char self[64];

	if (!k)
		return;
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	int fd2 = open(self, O_RDWR | O_CLOEXEC);
	int ret = ofd_lock(fd, F_WRLCK);
	int ret2 = ret ? ret : fd2 < 0 ? -errno : ofd_lock(fd2, F_WRLCK);
	if (fd2 >= 0)
		close(fd2);
	if (!ret && (ret2 == -EAGAIN || ret2 == -EACCES)) {
		host_detail(k, "%s: a second open of a locked image is refused", where);
		return;
	}
	k->result = HOST_WARN;
	if (ret)
		host_detail(k, "%s: F_OFD_SETLK: %s; images here are not protected from two writers",
		            where, strerror(-ret));
	else if (!ret2)
		host_detail(k, "%s: a second lock on the same file was granted; images here are not "
		            "protected from two writers", where);
	else
		host_detail(k, "%s: could not test with a second open: %s", where, strerror(-ret2));
	host_fix(k, "keep images on a local file system (ext4, xfs, btrfs), or on NFS with lock "
	         "support (nfs-common's rpc.statd), or never open one image twice");
}

static void check_direct(struct host_report *r, int fd, const char *where)
{
	struct host_check *k = host_add(r, "files", "files-o-direct",
	                                "for O_DIRECT in the image directory", HOST_PASS);
	void *buf = NULL;
	int ret = 0;

	if (!k)
		return;
	if (posix_memalign(&buf, 4096, 4096)) {
		k->result = HOST_SKIP;
		host_detail(k, "out of memory");
		return;
	}
	memset(buf, 0x5a, 4096);
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_DIRECT) < 0)
		ret = -errno;
	else if (pwrite(fd, buf, 4096, 0) != 4096 || pread(fd, buf, 4096, 0) != 4096)
		ret = errno ? -errno : -EIO;
	free(buf);
	if (!ret) {
		host_detail(k, "%s: aligned 4 KiB direct writes and reads work", where);
		return;
	}
	k->result = HOST_WARN;
	host_detail(k, "%s: %s; cache=none and cache=directsync fall back to the page cache",
	            where, strerror(-ret));
	host_fix(k, "keep images on a file system with O_DIRECT (ext4, xfs, btrfs), or use the "
	         "default cache mode");
}

static void check_space(struct host_report *r, const char *dir, const char *where)
{
	struct statvfs v;
	struct host_check *k = host_add(r, "files", "files-free-space",
	                                "for free space in the image directory", HOST_PASS);

	if (!k)
		return;
	if (statvfs(dir, &v) < 0) {
		k->result = HOST_WARN;
		host_detail(k, "%s: statvfs: %s", where, strerror(errno));
		host_fix(k, "give --dir a directory that exists");
		return;
	}
	uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize, total = (uint64_t)v.f_blocks * v.f_frsize;
	host_detail(k, "%s: %.1f GiB free of %.1f GiB", where, (double)avail / (1 << 30),
	            (double)total / (1 << 30));
	if (avail < LOW_SPACE) {
		k->result = HOST_WARN;
		host_fix(k, "free space there or keep images elsewhere (--dir): qcow2 images grow as "
		         "guests write, and a full file system fails guest writes");
	}
}

void host_check_files(struct host_report *r, const char *dir)
{
	struct statfs sf;
	char where[600];

	for (size_t i = 0; i < sizeof(firmware) / sizeof(firmware[0]); i++)
		check_firmware(r, &firmware[i]);
	const char *fs = statfs(dir, &sf) == 0 ? fs_name((long)sf.f_type) : NULL;
	if (fs)
		snprintf(where, sizeof(where), "%s (%s)", dir, fs);
	else
		snprintf(where, sizeof(where), "%s", dir);
	int fd = temp_file(dir);
	if (fd >= 0) {
		check_ofd(r, fd, where);
		check_direct(r, fd, where);
		close(fd);
	} else {
		const char *ids[] = { "files-ofd-locks", "files-o-direct" };
		const char *titles[] = { "for OFD locks in the image directory",
		                         "for O_DIRECT in the image directory" };
		for (int i = 0; i < 2; i++) {
			struct host_check *k = host_add(r, "files", ids[i], titles[i], HOST_WARN);
			if (!k)
				continue;
			host_detail(k, "%s: cannot create a file there: %s", where, strerror(-fd));
			host_fix(k, "give --dir the directory your images live in, one you may write");
		}
	}
	check_space(r, dir, where);
}
