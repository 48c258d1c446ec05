/*
 * powerfail.c - an LD_PRELOAD shim for the journal's tests: a power loss,
 * and disk errors, on demand, for the files under one directory.  Built
 * without the sanitizers (their runtime must come first and refuses
 * shims like this one).
 *
 * Environment:
 *   POWERFAIL_DIR=D        only regular files under D are affected (D
 *                          must exist when the process starts); unset:
 *                          the shim passes everything through
 *   POWERFAIL_SUFFIX=S     and of those only files whose name ends in S
 *   POWERFAIL_HOLD=1       power-loss mode, below
 *   POWERFAIL_WRITE_ERR=N:E  the Nth write to such files (counted from
 *                          1 over write, pwrite, writev, pwritev) fails
 *                          with errno E (a name: ENOSPC, EIO, EDQUOT,
 *                          EROFS, EFBIG, or a number), writing nothing;
 *                          "N+:E": the Nth and every later one
 *   POWERFAIL_SYNC_ERR=N:E   the same for fsync and fdatasync; in
 *                          power-loss mode the failed sync also drops
 *                          what was held (as Linux drops the pages it
 *                          could not write)
 *   POWERFAIL_SYNC_HANG=N  the Nth fsync/fdatasync (same count) never
 *                          returns: it writes "powerfail: hang" on
 *                          stderr and waits to be killed, so a test can
 *                          kill the process with a batch written and not
 *                          synced; "unlink": the first one after a
 *                          file was removed with unlinkat (the
 *                          journal's way), so a test can kill the
 *                          process between a removal and the next sync
 *
 * Power-loss mode: writes and ftruncate to such files do not reach the
 * kernel; they are kept in memory per descriptor, in order, and applied
 * to the file at the next fsync or fdatasync of that descriptor (then
 * that is called).  So SIGKILL loses exactly what was not synced, as a
 * power loss would.  write and writev go at the shim's file position
 * (lseek is followed), or at the end with O_APPEND.
 *
 * Not supported, because the journal needs none of it: reads of held
 * data (read and pread see the file as last synced; the journal reads
 * its segments only in replay, before it writes); mmap; descriptors
 * made by dup, dup2 or fcntl; descriptors from 1024 on; pwritev2,
 * sync_file_range, syncfs and sync.  Creating, renaming and removing
 * files happen at once.  Held data of a descriptor closed without a sync
 * is dropped.
 *
 * Thread-safe (one mutex).  A call on any other descriptor costs one
 * atomic load and takes no lock, so a signal handler's write() is safe.
 */
#include "config.h"

#undef _FORTIFY_SOURCE	/* it would make open() an inline wrapper */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PF_FDS 1024

/* For the tests: present when the shim is loaded. */
extern const int powerfail_loaded;
const int powerfail_loaded = 1;

/* The C library's own fortified entry points (no prototype without
 * _FORTIFY_SOURCE). */
int __open_2(const char *, int);
int __open64_2(const char *, int);
int __openat_2(int, const char *, int);
int __openat64_2(int, const char *, int);

/* A held change, applied in order at the next sync. */
struct pf_op {
	struct pf_op *next;
	off_t off;		/* write: where; truncate: the new size */
	size_t len;
	int truncate;
	unsigned char data[];
};

struct pf_file {
	dev_t dev;
	ino_t ino;
	off_t pos;		/* for write and writev */
	off_t size;		/* with what is held */
	int append;
	struct pf_op *head, **tail;
};

struct pf_rule {
	unsigned long n;	/* 0: none */
	int from;		/* "N+" */
	int err;
};

static atomic_uchar tracked[PF_FDS];
static struct pf_file files[PF_FDS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static char dir[PATH_MAX];
static size_t dir_len;
static const char *suffix;
static int hold;
static struct pf_rule write_rule, sync_rule;
static unsigned long writes, syncs, hang_at;
static int hang_unlink;		/* 1: armed; 2: a file went, hang next */

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static off_t (*real_lseek)(int, off_t, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlinkat)(int, const char *, int);

#define PF_SYM(var, name) \
	(var = (__typeof__(var))dlsym(RTLD_NEXT, name))

static void
pf_resolve(void)
{
	PF_SYM(real_open, "open");
	PF_SYM(real_openat, "openat");
	PF_SYM(real_close, "close");
	PF_SYM(real_write, "write");
	PF_SYM(real_pwrite, "pwrite");
	PF_SYM(real_writev, "writev");
	PF_SYM(real_pwritev, "pwritev");
	PF_SYM(real_lseek, "lseek");
	PF_SYM(real_ftruncate, "ftruncate");
	PF_SYM(real_fsync, "fsync");
	PF_SYM(real_fdatasync, "fdatasync");
	PF_SYM(real_unlinkat, "unlinkat");
}

#define PF_NEED(var) do { if ((var) == NULL) pf_resolve(); } while (0)

static int
pf_errno(const char *s)
{
	static const struct { const char *name; int err; } names[] = {
		{ "ENOSPC", ENOSPC }, { "EIO", EIO }, { "EDQUOT", EDQUOT },
		{ "EROFS", EROFS }, { "EFBIG", EFBIG }, { "EINTR", EINTR },
		{ "EAGAIN", EAGAIN }, { "EPERM", EPERM },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].err;
	return atoi(s) > 0 ? atoi(s) : EIO;
}

/* "N:E" or "N+:E". */
static void
pf_rule_parse(struct pf_rule *r, const char *s)
{
	char *end;

	if (s == NULL)
		return;
	r->n = strtoul(s, &end, 10);
	if (*end == '+') {
		r->from = 1;
		end++;
	}
	r->err = *end == ':' ? pf_errno(end + 1) : EIO;
}

/* Caller holds mu.  The errno to fail this call with, or 0. */
static int
pf_inject(const struct pf_rule *r, unsigned long count)
{
	if (r->n == 0)
		return 0;
	return count == r->n || (r->from && count > r->n) ? r->err : 0;
}

__attribute__((constructor)) static void
pf_init(void)
{
	const char *d = getenv("POWERFAIL_DIR");
	const char *h = getenv("POWERFAIL_HOLD");
	const char *n = getenv("POWERFAIL_SYNC_HANG");

	pf_resolve();
	if (d == NULL || *d == '\0')
		return;
	if (realpath(d, dir) == NULL)
		snprintf(dir, sizeof(dir), "%s", d);
	dir_len = strlen(dir);
	while (dir_len > 1 && dir[dir_len - 1] == '/')
		dir[--dir_len] = '\0';
	suffix = getenv("POWERFAIL_SUFFIX");
	hold = h != NULL && strcmp(h, "1") == 0;
	pf_rule_parse(&write_rule, getenv("POWERFAIL_WRITE_ERR"));
	pf_rule_parse(&sync_rule, getenv("POWERFAIL_SYNC_ERR"));
	hang_at = n != NULL ? strtoul(n, NULL, 10) : 0;
	hang_unlink = n != NULL && strcmp(n, "unlink") == 0;
}

static void
pf_drop(struct pf_file *f)
{
	struct pf_op *op, *next;

	for (op = f->head; op != NULL; op = next) {
		next = op->next;
		free(op);
	}
	f->head = NULL;
	f->tail = &f->head;
}

static int
pf_is_tracked(int fd)
{
	return fd >= 0 && fd < PF_FDS &&
	    atomic_load_explicit(&tracked[fd], memory_order_acquire);
}

/* Caller holds mu.  Still the file it was when opened?  (A descriptor
 * closed behind the shim's back, and its number used again, is not.) */
static struct pf_file *
pf_get(int fd)
{
	struct pf_file *f = &files[fd];
	struct stat sb;

	if (!atomic_load(&tracked[fd]))
		return NULL;
	if (fstat(fd, &sb) == 0 && sb.st_dev == f->dev && sb.st_ino == f->ino)
		return f;
	pf_drop(f);
	atomic_store(&tracked[fd], 0);
	return NULL;
}

/* A descriptor was opened: track it when it is a file of ours. */
static int
pf_opened(int fd, int flags)
{
	char link[64], path[PATH_MAX];
	int saved = errno;
	struct stat sb;
	ssize_t n;
	size_t len, slen;

	if (fd < 0 || fd >= PF_FDS || dir_len == 0)
		return fd;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, sizeof(path) - 1)) < 0)
		goto out;
	path[n] = '\0';
	len = (size_t)n;
	slen = suffix != NULL ? strlen(suffix) : 0;
	if (len <= dir_len || strncmp(path, dir, dir_len) != 0 ||
	    path[dir_len] != '/' || slen > len ||
	    (slen > 0 && strcmp(path + len - slen, suffix) != 0))
		goto out;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		goto out;
	pthread_mutex_lock(&mu);
	pf_drop(&files[fd]);
	files[fd].dev = sb.st_dev;
	files[fd].ino = sb.st_ino;
	files[fd].pos = 0;
	files[fd].size = sb.st_size;
	files[fd].append = (flags & O_APPEND) != 0;
	atomic_store(&tracked[fd], 1);
	pthread_mutex_unlock(&mu);
out:
	errno = saved;
	return fd;
}

static mode_t
pf_mode(int flags, va_list ap)
{
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		return (mode_t)va_arg(ap, unsigned int);
	return 0;
}

int
open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	PF_NEED(real_open);
	va_start(ap, flags);
	mode = pf_mode(flags, ap);
	va_end(ap);
	return pf_opened(real_open(path, flags, mode), flags);
}

int
open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	PF_NEED(real_open);
	va_start(ap, flags);
	mode = pf_mode(flags, ap);
	va_end(ap);
	return pf_opened(real_open(path, flags | O_LARGEFILE, mode), flags);
}

int
openat(int dfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	PF_NEED(real_openat);
	va_start(ap, flags);
	mode = pf_mode(flags, ap);
	va_end(ap);
	return pf_opened(real_openat(dfd, path, flags, mode), flags);
}

int
openat64(int dfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	PF_NEED(real_openat);
	va_start(ap, flags);
	mode = pf_mode(flags, ap);
	va_end(ap);
	return pf_opened(real_openat(dfd, path, flags | O_LARGEFILE, mode),
	    flags);
}

int
__open_2(const char *path, int flags)
{
	return open(path, flags);
}

int
__open64_2(const char *path, int flags)
{
	return open64(path, flags);
}

int
__openat_2(int dfd, const char *path, int flags)
{
	return openat(dfd, path, flags);
}

int
__openat64_2(int dfd, const char *path, int flags)
{
	return openat64(dfd, path, flags);
}

int
creat(const char *path, mode_t mode)
{
	return open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

int
creat64(const char *path, mode_t mode)
{
	return open64(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

int
close(int fd)
{
	PF_NEED(real_close);
	if (pf_is_tracked(fd)) {
		pthread_mutex_lock(&mu);
		pf_drop(&files[fd]);
		atomic_store(&tracked[fd], 0);
		pthread_mutex_unlock(&mu);
	}
	return real_close(fd);
}

/*
 * A write to a tracked descriptor (off < 0: at the file position).
 * Returns 1 with *ret set when the shim answered it (an injected error,
 * or held), 0 when it goes to the kernel.
 */
static int
pf_write(int fd, const struct iovec *iov, int cnt, off_t off, ssize_t *ret)
{
	struct pf_file *f;
	struct pf_op *op;
	size_t total = 0, done = 0;
	off_t at;
	int err;

	pthread_mutex_lock(&mu);
	if ((f = pf_get(fd)) == NULL) {
		pthread_mutex_unlock(&mu);
		return 0;
	}
	if ((err = pf_inject(&write_rule, ++writes)) != 0) {
		pthread_mutex_unlock(&mu);
		errno = err;
		*ret = -1;
		return 1;
	}
	if (!hold) {
		pthread_mutex_unlock(&mu);
		return 0;
	}
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - total) {
			pthread_mutex_unlock(&mu);
			errno = EINVAL;
			*ret = -1;
			return 1;
		}
		total += iov[i].iov_len;
	}
	if ((op = malloc(sizeof(*op) + total)) == NULL) {
		pthread_mutex_unlock(&mu);
		errno = ENOMEM;
		*ret = -1;
		return 1;
	}
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > 0)
			memcpy(op->data + done, iov[i].iov_base,
			    iov[i].iov_len);
		done += iov[i].iov_len;
	}
	/* Linux appends on an O_APPEND descriptor, pwrite or not. */
	at = f->append ? f->size : off >= 0 ? off : f->pos;
	op->next = NULL;
	op->off = at;
	op->len = total;
	op->truncate = 0;
	*f->tail = op;
	f->tail = &op->next;
	if (off < 0 || f->append)
		f->pos = at + (off_t)total;
	if (at + (off_t)total > f->size)
		f->size = at + (off_t)total;
	pthread_mutex_unlock(&mu);
	*ret = (ssize_t)total;
	return 1;
}

ssize_t
write(int fd, const void *buf, size_t n)
{
	struct iovec v = { (void *)(uintptr_t)buf, n };
	ssize_t r;

	PF_NEED(real_write);
	if (pf_is_tracked(fd) && pf_write(fd, &v, 1, -1, &r))
		return r;
	return real_write(fd, buf, n);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	struct iovec v = { (void *)(uintptr_t)buf, n };
	ssize_t r;

	PF_NEED(real_pwrite);
	if (off < 0) {
		errno = EINVAL;
		return -1;
	}
	if (pf_is_tracked(fd) && pf_write(fd, &v, 1, off, &r))
		return r;
	return real_pwrite(fd, buf, n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	ssize_t r;

	PF_NEED(real_writev);
	if (cnt >= 0 && pf_is_tracked(fd) && pf_write(fd, iov, cnt, -1, &r))
		return r;
	return real_writev(fd, iov, cnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	ssize_t r;

	PF_NEED(real_pwritev);
	if (off < 0) {
		errno = EINVAL;
		return -1;
	}
	if (cnt >= 0 && pf_is_tracked(fd) && pf_write(fd, iov, cnt, off, &r))
		return r;
	return real_pwritev(fd, iov, cnt, off);
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return pwritev(fd, iov, cnt, off);
}

off_t
lseek(int fd, off_t off, int whence)
{
	struct pf_file *f;
	off_t to;

	PF_NEED(real_lseek);
	if (!hold || !pf_is_tracked(fd) ||
	    (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END))
		return real_lseek(fd, off, whence);
	pthread_mutex_lock(&mu);
	if ((f = pf_get(fd)) == NULL) {
		pthread_mutex_unlock(&mu);
		return real_lseek(fd, off, whence);
	}
	to = whence == SEEK_SET ? off : whence == SEEK_CUR ? f->pos + off :
	    f->size + off;
	if (to < 0) {
		pthread_mutex_unlock(&mu);
		errno = EINVAL;
		return -1;
	}
	f->pos = to;
	real_lseek(fd, to, SEEK_SET);	/* so that reads follow */
	pthread_mutex_unlock(&mu);
	return to;
}

off_t
lseek64(int fd, off_t off, int whence)
{
	return lseek(fd, off, whence);
}

int
ftruncate(int fd, off_t len)
{
	struct pf_file *f;
	struct pf_op *op;

	PF_NEED(real_ftruncate);
	if (!hold || !pf_is_tracked(fd))
		return real_ftruncate(fd, len);
	if (len < 0) {
		errno = EINVAL;
		return -1;
	}
	if ((op = malloc(sizeof(*op))) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	pthread_mutex_lock(&mu);
	if ((f = pf_get(fd)) == NULL) {
		pthread_mutex_unlock(&mu);
		free(op);
		return real_ftruncate(fd, len);
	}
	op->next = NULL;
	op->off = len;
	op->len = 0;
	op->truncate = 1;
	*f->tail = op;
	f->tail = &op->next;
	f->size = len;
	pthread_mutex_unlock(&mu);
	return 0;
}

int
ftruncate64(int fd, off_t len)
{
	return ftruncate(fd, len);
}

/* Caller holds mu: write what f holds to the file, in order.  0 or an
 * errno. */
static int
pf_apply(int fd, struct pf_file *f)
{
	for (struct pf_op *op = f->head; op != NULL; op = op->next) {
		size_t done = 0;

		if (op->truncate) {
			if (real_ftruncate(fd, op->off) < 0)
				return errno;
			continue;
		}
		while (done < op->len) {
			ssize_t n = real_pwrite(fd, op->data + done,
			    op->len - done, op->off + (off_t)done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? errno : EIO;
			done += (size_t)n;
		}
	}
	return 0;
}

static int
pf_sync(int fd, int data)
{
	static const char msg[] = "powerfail: hang\n";
	struct pf_file *f;
	unsigned long n;
	int err;

	PF_NEED(real_fsync);
	pthread_mutex_lock(&mu);
	if ((f = pf_get(fd)) == NULL) {
		pthread_mutex_unlock(&mu);
		return data ? real_fdatasync(fd) : real_fsync(fd);
	}
	n = ++syncs;
	if ((hang_at != 0 && n == hang_at) || hang_unlink == 2) {
		pthread_mutex_unlock(&mu);
		if (real_write(2, msg, sizeof(msg) - 1) < 0) {
			/* the test times out instead */
		}
		for (;;)
			pause();
	}
	if ((err = pf_inject(&sync_rule, n)) == 0 && hold)
		err = pf_apply(fd, f);
	if (hold)
		pf_drop(f);	/* written, or lost with the failure */
	pthread_mutex_unlock(&mu);
	if (err != 0) {
		errno = err;
		return -1;
	}
	return data ? real_fdatasync(fd) : real_fsync(fd);
}

int
fsync(int fd)
{
	PF_NEED(real_fsync);
	if (!pf_is_tracked(fd))
		return real_fsync(fd);
	return pf_sync(fd, 0);
}

int
fdatasync(int fd)
{
	PF_NEED(real_fdatasync);
	if (!pf_is_tracked(fd))
		return real_fdatasync(fd);
	return pf_sync(fd, 1);
}

/* Only counted (POWERFAIL_SYNC_HANG=unlink): the removal happens. */
int
unlinkat(int dfd, const char *path, int flags)
{
	PF_NEED(real_unlinkat);
	if (__atomic_load_n(&hang_unlink, __ATOMIC_RELAXED) == 1 &&
	    dir_len > 0) {
		pthread_mutex_lock(&mu);
		hang_unlink = 2;
		pthread_mutex_unlock(&mu);
	}
	return real_unlinkat(dfd, path, flags);
}
