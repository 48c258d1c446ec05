/*
 * journal.c - the durable mailboxes' log: segments of checksummed
 * records, written and synced by one thread so that the loop never waits
 * on the disk, and concurrent senders share one fdatasync.
 *
 * Two buffers.  The loop appends into the filling one (a memcpy under a
 * mutex, no syscall); the sync thread, when a sync is wanted, takes it
 * whole in exchange for the other (empty) one, writes it with one
 * pwrite per segment it touches, fdatasyncs, and says so on an eventfd.
 * A buffer is a list of chunks, each bound for one segment file; a chunk
 * that starts a segment begins with its header, and the thread creates
 * the file for it.  A segment is synced completely before the next one
 * is created, so a segment that has a successor on disk is whole.
 *
 * Errors.  After a failed fdatasync the kernel may have dropped the
 * pages it could not write and will not report that again (fsyncgate),
 * so the thread never retries a batch: the batch is given up, the
 * segment cut back to its synced end (ftruncate + fdatasync) or, when
 * the batch created it, removed, and the next append starts a new
 * segment in a new file.  The new segment's header says where it begins,
 * which bounds the one before it in replay: once it is on disk, even a
 * cut that the disk claimed and lost cannot bring failed records back.
 * When the cut fails, the journal goes read-only (EROFS).
 */
#include "config.h"

#include "journal.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JNL_MAGIC	"IPCJRNL1"
#define JNL_SEG_HDR	32u	/* magic, number, first, salt, crc */
#define JNL_REC_HDR	9u		/* length, crc, type */
#define JNL_SEG_DEFAULT	(UINT64_C(64) << 20)
/* Replay reads ahead this much; a larger record grows the window to its
 * size (no more than what is left of the file). */
#define JNL_READ_MIN	((size_t)1 << 20)
/* A buffer that grew past this for one big batch is freed after it, so
 * one burst does not pin its memory.  Picked, not measured. */
#define JNL_KEEP_MAX	((size_t)16 << 20)
#define JNL_NAME_MAX	32		/* "seg-" 16 hex ".log" and NUL */

/* A run of bytes in a buffer bound for one segment file. */
struct jnl_chunk {
	uint64_t seg;		/* segment number */
	uint64_t first;		/* the segment's first position */
	uint64_t foff;		/* file offset of the run's first byte */
	size_t boff, len;	/* the run in the buffer */
	int create;		/* the run starts the file, header first */
};

struct jnl_buf {
	uint8_t *data;
	size_t len, cap;
	struct jnl_chunk *chunks;
	size_t nchunks, capchunks;
};

/* A segment as the loop sees it. */
struct jnl_seg {
	uint64_t no;
	uint64_t first;		/* position of its first byte */
	uint64_t end;		/* position after its last appended byte */
	uint64_t ckpt_end;	/* after its checkpoint records; UINT64_MAX
				 * while unknown (replayed, or failed) */
	uint64_t live;		/* journal_retain minus journal_release */
};

struct journal {
	/* Set by journal_open, then read-only. */
	int dirfd, lockfd, efd;
	uint64_t segment_bytes;

	/* The loop's. */
	struct jnl_seg *segs;	/* oldest first; numbers increase */
	size_t nsegs, capsegs;
	int have_cur;		/* segs[nsegs - 1] takes appends */
	uint32_t cur_salt;
	uint64_t next_no;	/* number of the next segment */
	uint64_t next_first;	/* its first position, when !have_cur */
	uint64_t synced_seen;	/* what journal_synced last saw */
	uint64_t *found;	/* segment numbers found by journal_open */
	size_t nfound;
	int replay_tried, replayed, ro;
	int in_ckpt, ckpt_err, ckpt_redo;
	void (*ckpt_cb)(void *);
	void *ckpt_arg;
	uint64_t appended_records, appended_bytes;

	/* Shared with the sync thread, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	int thread_started;
	struct jnl_buf bufs[2];
	int fill;		/* bufs[fill]: the loop's; the other: the
				 * thread's, empty between batches */
	int want, stop;
	int failed;		/* a batch failed: take no other until the
				 * loop has seen it (journal_synced) */
	int broken;		/* the cut failed too: read-only */
	int err;		/* for journal_synced; 0 or -errno */
	uint64_t synced;	/* every byte before it is on disk */
	uint64_t *delq;		/* reclaim: segment numbers to remove, in
				 * order: [delq_head, delq_len) */
	size_t delq_head, delq_len, delq_cap;
	int del_stuck;		/* a removal failed: retried at the next
				 * sync, and none after it before */
	uint64_t syncs, sync_ns, disk_bytes, deleted, write_errors;

	/* The thread's. */
	int seg_fd;		/* the segment it writes, or -1 */
	uint64_t seg_no;
	uint64_t seg_synced;	/* file offset synced in it */
	uint64_t seg_written;	/* file offset written in it */
	int seg_new;		/* created in this batch: not yet durable */
};

/* --- CRC-32C, slicing by 8 ---------------------------------------------- */

static uint32_t jnl_crc_tab[8][256];
static pthread_once_t jnl_crc_once = PTHREAD_ONCE_INIT;

static void
jnl_crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ UINT32_C(0x82f63b78) : c >> 1;
		jnl_crc_tab[0][i] = c;
	}
	for (int i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			jnl_crc_tab[k][i] = (jnl_crc_tab[k - 1][i] >> 8) ^
			    jnl_crc_tab[0][jnl_crc_tab[k - 1][i] & 0xff];
}

static uint32_t
jnl_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
jnl_le64(const uint8_t *p)
{
	return (uint64_t)jnl_le32(p) | (uint64_t)jnl_le32(p + 4) << 32;
}

static void
jnl_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void
jnl_put64(uint8_t *p, uint64_t v)
{
	jnl_put32(p, (uint32_t)v);
	jnl_put32(p + 4, (uint32_t)(v >> 32));
}

uint32_t
journal_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&jnl_crc_once, jnl_crc_init);
	crc = ~crc;
	for (; len >= 8; p += 8, len -= 8) {
		uint32_t lo = crc ^ jnl_le32(p), hi = jnl_le32(p + 4);

		crc = jnl_crc_tab[7][lo & 0xff] ^
		    jnl_crc_tab[6][(lo >> 8) & 0xff] ^
		    jnl_crc_tab[5][(lo >> 16) & 0xff] ^
		    jnl_crc_tab[4][lo >> 24] ^
		    jnl_crc_tab[3][hi & 0xff] ^
		    jnl_crc_tab[2][(hi >> 8) & 0xff] ^
		    jnl_crc_tab[1][(hi >> 16) & 0xff] ^
		    jnl_crc_tab[0][hi >> 24];
	}
	while (len-- > 0)
		crc = jnl_crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* --- small helpers ------------------------------------------------------ */

static void
jnl_why(char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
jnl_why(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

static void
jnl_seg_name(char name[JNL_NAME_MAX], uint64_t no)
{
	snprintf(name, JNL_NAME_MAX, "seg-%016" PRIx64 ".log", no);
}

/* 1 and *no set when name is a segment's. */
static int
jnl_seg_parse(const char *name, uint64_t *no)
{
	uint64_t v = 0;

	if (strlen(name) != 24 || strncmp(name, "seg-", 4) != 0 ||
	    strcmp(name + 20, ".log") != 0)
		return 0;
	for (int i = 4; i < 20; i++) {
		char c = name[i];

		if (c >= '0' && c <= '9')
			v = v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return 0;
	}
	*no = v;
	return 1;
}

static int
jnl_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t
jnl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
jnl_pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
jnl_pread_all(int fd, uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;	/* shorter than fstat said */
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Room for n more bytes.  Caller holds mu when b may be the thread's. */
static int
jnl_buf_reserve(struct jnl_buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 65536;
	uint8_t *p;

	if (n <= b->cap - b->len)
		return 0;
	if (n > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	while (cap - b->len < n)
		cap *= 2;
	if ((p = realloc(b->data, cap)) == NULL)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

static int
jnl_buf_chunk(struct jnl_buf *b)
{
	size_t cap = b->capchunks ? b->capchunks * 2 : 8;
	struct jnl_chunk *c;

	if (b->nchunks < b->capchunks)
		return 0;
	if ((c = reallocarray(b->chunks, cap, sizeof(*c))) == NULL)
		return -ENOMEM;
	b->chunks = c;
	b->capchunks = cap;
	return 0;
}

/* --- the sync thread ---------------------------------------------------- */

static int
jnl_datasync(struct journal *j, int fd)
{
	uint64_t t0 = jnl_now_ns();
	int r = fdatasync(fd) < 0 ? -errno : 0;

	pthread_mutex_lock(&j->mu);
	j->syncs++;
	j->sync_ns += jnl_now_ns() - t0;
	pthread_mutex_unlock(&j->mu);
	return r;
}

/* Write and sync batch b, in order.  *synced advances as each segment's
 * part is on disk (a segment is synced before the next is created).
 * *grown: bytes the files grew.  0, or -errno at the first failure. */
static int
jnl_write_batch(struct journal *j, struct jnl_buf *b, uint64_t *synced,
    int64_t *grown)
{
	char name[JNL_NAME_MAX];
	int r;

	for (size_t i = 0; i < b->nchunks; i++) {
		const struct jnl_chunk *c = &b->chunks[i];
		int last = i + 1 == b->nchunks || b->chunks[i + 1].create;

		if (c->create) {
			if (j->seg_fd >= 0)
				close(j->seg_fd);	/* synced: whole */
			jnl_seg_name(name, c->seg);
			j->seg_fd = openat(j->dirfd, name, O_WRONLY | O_CREAT |
			    O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (j->seg_fd < 0)
				return -errno;
			j->seg_no = c->seg;
			j->seg_synced = j->seg_written = 0;
			j->seg_new = 1;
		}
		/* The loop continues a segment only in the batch after the
		 * one that created it, and never after a failure. */
		assert(j->seg_fd >= 0 && j->seg_no == c->seg &&
		    j->seg_written == c->foff);
		if ((r = jnl_pwrite_all(j->seg_fd, b->data + c->boff, c->len,
		    c->foff)) < 0)
			return r;
		j->seg_written += c->len;
		*grown += (int64_t)c->len;
		if (!last)
			continue;
		if ((r = jnl_datasync(j, j->seg_fd)) < 0)
			return r;
		/* A new file is on disk once its directory entry is. */
		if (j->seg_new && fsync(j->dirfd) < 0)
			return -errno;
		j->seg_new = 0;
		j->seg_synced = j->seg_written;
		*synced = c->first + j->seg_written;
	}
	return 0;
}

/* After a failed batch: the segment being written loses what is not
 * synced (cut back, or removed when this batch created it), durably.
 * *grown goes down by what is cut.  0, or -errno: then nothing more can
 * be trusted to this directory. */
static int
jnl_cut(struct journal *j, int64_t *grown)
{
	char name[JNL_NAME_MAX];
	int fd = j->seg_fd, r;

	if (fd < 0)
		return 0;
	j->seg_fd = -1;
	if (j->seg_new) {
		close(fd);
		*grown -= (int64_t)j->seg_written;
		jnl_seg_name(name, j->seg_no);
		if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT)
			return -errno;
		return fsync(j->dirfd) < 0 ? -errno : 0;
	}
	r = ftruncate(fd, (off_t)j->seg_synced) < 0 ? -errno :
	    jnl_datasync(j, fd);
	close(fd);
	if (r == 0)
		*grown -= (int64_t)(j->seg_written - j->seg_synced);
	return r;
}

/* Remove segment no.  1 when it went (*size: its bytes), 0 when it was
 * not there, -errno. */
static int
jnl_remove(struct journal *j, uint64_t no, uint64_t *size)
{
	char name[JNL_NAME_MAX];
	struct stat sb;

	jnl_seg_name(name, no);
	if (fstatat(j->dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (unlinkat(j->dirfd, name, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	*size = (uint64_t)sb.st_size;
	return 1;
}

/*
 * Reclaim, with mu held (let go around each removal): remove the queued
 * segments in order, and make that durable (a removed segment that came
 * back would deliver consumed messages again).  A failure stops it
 * there: removing a later one first would break the log in the middle.
 */
static void
jnl_reclaim(struct journal *j)
{
	uint64_t gone = 0;

	while (j->delq_head < j->delq_len && !j->del_stuck) {
		uint64_t no = j->delq[j->delq_head], size = 0;
		int r;

		pthread_mutex_unlock(&j->mu);
		r = jnl_remove(j, no, &size);
		pthread_mutex_lock(&j->mu);
		if (r < 0) {
			j->del_stuck = 1;
			j->write_errors++;
			break;
		}
		j->delq_head++;
		j->disk_bytes -= size;
		j->deleted += (uint64_t)r;
		gone += (uint64_t)r;
	}
	if (j->delq_head == j->delq_len)
		j->delq_head = j->delq_len = 0;
	if (gone > 0) {
		int r;

		pthread_mutex_unlock(&j->mu);
		r = fsync(j->dirfd);
		pthread_mutex_lock(&j->mu);
		if (r < 0)
			j->write_errors++;
	}
}

static void *
jnl_thread(void *arg)
{
	struct journal *j = arg;
	const uint64_t one = 1;

	pthread_mutex_lock(&j->mu);
	for (;;) {
		struct jnl_buf *b = NULL;
		uint64_t synced;
		int64_t grown = 0;
		int woken, r = 0, cut = 0;

		while (!j->want && !j->stop && (j->delq_head == j->delq_len ||
		    j->del_stuck))
			pthread_cond_wait(&j->cv, &j->mu);
		woken = j->want;
		j->want = 0;
		if (woken)
			j->del_stuck = 0;
		if (!woken && j->stop && (j->delq_head == j->delq_len ||
		    j->del_stuck))
			break;
		if (woken && !j->failed && !j->broken &&
		    j->bufs[j->fill].len > 0) {
			b = &j->bufs[j->fill];
			j->fill ^= 1;
		}
		synced = j->synced;
		pthread_mutex_unlock(&j->mu);

		if (b != NULL && (r = jnl_write_batch(j, b, &synced,
		    &grown)) < 0)
			cut = jnl_cut(j, &grown);
		if (b != NULL) {
			b->len = 0;
			b->nchunks = 0;
			if (b->cap > JNL_KEEP_MAX) {
				free(b->data);
				b->data = NULL;
				b->cap = 0;
			}
		}

		pthread_mutex_lock(&j->mu);
		if (b != NULL)
			j->synced = synced;
		j->disk_bytes += (uint64_t)grown;	/* may be negative */
		if (r < 0) {
			j->write_errors++;
			j->failed = 1;
			if (j->err == 0)
				j->err = r;
			if (cut < 0)
				j->broken = 1;
		}
		jnl_reclaim(j);
		/* Cannot fail: the count would have to reach 2^64 - 1. */
		if (woken && write(j->efd, &one, sizeof(one)) !=
		    (ssize_t)sizeof(one))
			assert(!"eventfd write failed");
	}
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

/* --- open, close -------------------------------------------------------- */

/* The lock file: flock it, then write our pid in it for the next one
 * who finds it taken. */
static int
jnl_lock(struct journal *j, const char *dir, char *why, size_t why_size)
{
	char buf[32];
	int n, r;

	j->lockfd = openat(j->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (j->lockfd < 0) {
		r = -errno;
		jnl_why(why, why_size, "%s/lock: %s", dir, strerror(-r));
		return r;
	}
	if (flock(j->lockfd, LOCK_EX | LOCK_NB) < 0) {
		long pid = 0;
		ssize_t got;

		if (errno != EWOULDBLOCK) {
			r = -errno;
			jnl_why(why, why_size, "%s/lock: %s", dir,
			    strerror(-r));
			return r;
		}
		got = pread(j->lockfd, buf, sizeof(buf) - 1, 0);
		buf[got > 0 ? got : 0] = '\0';
		if (sscanf(buf, "%ld", &pid) == 1 && pid > 0)
			jnl_why(why, why_size, "%s is in use by pid %ld", dir,
			    pid);
		else
			jnl_why(why, why_size, "%s is in use", dir);
		return -EBUSY;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(j->lockfd, 0) < 0 ||
	    jnl_pwrite_all(j->lockfd, (const uint8_t *)buf, (size_t)n, 0) < 0) {
		r = errno ? -errno : -EIO;
		jnl_why(why, why_size, "%s/lock: %s", dir, strerror(-r));
		return r;
	}
	return 0;
}

/* The segments there are, in order, for journal_replay. */
static int
jnl_list(struct journal *j, const char *dir, char *why, size_t why_size)
{
	DIR *d;
	struct dirent *e;
	size_t cap = 0;
	uint64_t no;
	int fd, r = 0;

	if ((fd = fcntl(j->dirfd, F_DUPFD_CLOEXEC, 0)) < 0 ||
	    (d = fdopendir(fd)) == NULL) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		jnl_why(why, why_size, "%s: %s", dir, strerror(-r));
		return r;
	}
	while ((errno = 0, e = readdir(d)) != NULL) {
		if (!jnl_seg_parse(e->d_name, &no))
			continue;
		if (j->nfound == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *p = reallocarray(j->found, ncap,
			    sizeof(*p));

			if (p == NULL) {
				r = -ENOMEM;
				break;
			}
			j->found = p;
			cap = ncap;
		}
		j->found[j->nfound++] = no;
	}
	if (r == 0 && errno != 0)
		r = -errno;
	closedir(d);
	if (r < 0) {
		jnl_why(why, why_size, "%s: %s", dir, strerror(-r));
		return r;
	}
	if (j->nfound > 1)
		qsort(j->found, j->nfound, sizeof(*j->found), jnl_cmp_u64);
	if (j->nfound > 0 && j->found[j->nfound - 1] == UINT64_MAX) {
		jnl_why(why, why_size, "%s: segment numbers used up", dir);
		return -EOVERFLOW;
	}
	if (j->nfound > 0 && j->found[0] == 0) {
		/* Numbers start at 1 (0 means "no segment" to the journal's
		 * users): not one of ours; left for the operator. */
		jnl_why(why, why_size, "%s: seg-0000000000000000.log is not a "
		    "segment this journal writes (they are numbered from 1); "
		    "move it away", dir);
		return -EINVAL;
	}
	j->next_no = j->nfound > 0 ? j->found[j->nfound - 1] + 1 : 1;
	return 0;
}

/* The sync thread, with every signal blocked: they are the loop's. */
static int
jnl_start(struct journal *j)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&j->thread, NULL, jnl_thread, j);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return -r;
	j->thread_started = 1;
	return 0;
}

int
journal_open(const char *dir, const struct journal_opts *opts,
    struct journal **out, char *why, size_t why_size)
{
	struct journal *j;
	int r;

	*out = NULL;
	jnl_why(why, why_size, "%s", "");
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return -ENOMEM;
	j->dirfd = j->lockfd = j->efd = j->seg_fd = -1;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->segment_bytes = opts != NULL && opts->segment_bytes != 0 ?
	    opts->segment_bytes : JNL_SEG_DEFAULT;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		jnl_why(why, why_size, "mkdir %s: %s", dir, strerror(-r));
		goto fail;
	}
	if ((j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		r = -errno;
		jnl_why(why, why_size, "%s: %s", dir, strerror(-r));
		goto fail;
	}
	if ((r = jnl_lock(j, dir, why, why_size)) < 0 ||
	    (r = jnl_list(j, dir, why, why_size)) < 0)
		goto fail;
	if ((j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		r = -errno;
		jnl_why(why, why_size, "eventfd: %s", strerror(-r));
		goto fail;
	}
	if ((r = jnl_start(j)) < 0) {
		jnl_why(why, why_size, "sync thread: %s", strerror(-r));
		goto fail;
	}
	*out = j;
	return 0;
fail:
	journal_close(j);
	return r;
}

void
journal_close(struct journal *j)
{
	if (j == NULL)
		return;
	if (j->thread_started) {
		pthread_mutex_lock(&j->mu);
		j->stop = 1;
		j->want = 1;
		pthread_cond_signal(&j->cv);
		pthread_mutex_unlock(&j->mu);
		pthread_join(j->thread, NULL);
	}
	if (j->seg_fd >= 0)
		close(j->seg_fd);
	if (j->efd >= 0)
		close(j->efd);
	if (j->lockfd >= 0)
		close(j->lockfd);	/* and with it the lock */
	if (j->dirfd >= 0)
		close(j->dirfd);
	for (int i = 0; i < 2; i++) {
		free(j->bufs[i].data);
		free(j->bufs[i].chunks);
	}
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j->delq);
	free(j->segs);
	free(j->found);
	free(j);
}

/* --- the loop's segment table and reclaim ------------------------------- */

static struct jnl_seg *
jnl_seg_find(struct journal *j, uint64_t no)
{
	size_t lo = 0, hi = j->nsegs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (j->segs[mid].no == no)
			return &j->segs[mid];
		if (j->segs[mid].no < no)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int
jnl_seg_room(struct journal *j)
{
	size_t cap = j->capsegs ? j->capsegs * 2 : 16;
	struct jnl_seg *s;

	if (j->nsegs < j->capsegs)
		return 0;
	if ((s = reallocarray(j->segs, cap, sizeof(*s))) == NULL)
		return -ENOMEM;
	j->segs = s;
	j->capsegs = cap;
	return 0;
}

/*
 * Hand the thread the segments that may go: from the oldest on, those
 * with no live record, while a newer segment's checkpoint is on disk (it
 * repeats what they held besides messages).  Only from the oldest on, so
 * replay always sees an unbroken suffix of the log: a later segment may
 * hold the record that says an earlier message was consumed.
 */
static void
jnl_sweep(struct journal *j)
{
	size_t head = j->nsegs, n;

	while (head > 0 && j->segs[head - 1].ckpt_end > j->synced_seen)
		head--;
	if (head-- == 0)
		return;		/* no segment's checkpoint on disk yet */
	for (n = 0; n < head && j->segs[n].live == 0; n++)
		;
	if (n == 0)
		return;
	pthread_mutex_lock(&j->mu);
	if (n > j->delq_cap - j->delq_len) {
		size_t cap = j->delq_len + n > 16 ? (j->delq_len + n) * 2 : 16;
		uint64_t *q = reallocarray(j->delq, cap, sizeof(*q));

		if (q == NULL) {
			pthread_mutex_unlock(&j->mu);
			return;	/* kept: the next sweep tries again */
		}
		j->delq = q;
		j->delq_cap = cap;
	}
	for (size_t i = 0; i < n; i++)
		j->delq[j->delq_len++] = j->segs[i].no;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	memmove(j->segs, j->segs + n, (j->nsegs - n) * sizeof(*j->segs));
	j->nsegs -= n;
}

void
journal_retain(struct journal *j, uint64_t seg)
{
	struct jnl_seg *s = jnl_seg_find(j, seg);

	if (s != NULL)
		s->live++;
}

void
journal_release(struct journal *j, uint64_t seg)
{
	struct jnl_seg *s = jnl_seg_find(j, seg);

	if (s != NULL && s->live > 0 && --s->live == 0 && j->replayed)
		jnl_sweep(j);
}

/* --- appending ---------------------------------------------------------- */

static uint32_t
jnl_salt(void)
{
	static uint32_t fallback;
	uint32_t s;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == (ssize_t)sizeof(s))
		return s;
	/* No entropy yet (early boot): the salt only has to differ from
	 * what a sender could guess; the clock and a counter do that. */
	return (uint32_t)jnl_now_ns() ^ (uint32_t)getpid() << 16 ^
	    ++fallback * UINT32_C(0x9e3779b9);
}

/* Start a new segment where the current one (or the cut) ends: its
 * header goes into the buffer, the thread creates the file. */
static int
jnl_roll(struct journal *j)
{
	uint64_t first = j->have_cur ? j->segs[j->nsegs - 1].end :
	    j->next_first;
	struct jnl_buf *b;
	struct jnl_chunk *c;
	struct jnl_seg *s;
	uint8_t *h;
	uint32_t salt = jnl_salt();
	int r;

	if (j->next_no == UINT64_MAX)
		return -EOVERFLOW;
	if ((r = jnl_seg_room(j)) < 0)
		return r;
	pthread_mutex_lock(&j->mu);
	b = &j->bufs[j->fill];
	if ((r = jnl_buf_chunk(b)) < 0 ||
	    (r = jnl_buf_reserve(b, JNL_SEG_HDR)) < 0) {
		pthread_mutex_unlock(&j->mu);
		return r;
	}
	h = b->data + b->len;
	memcpy(h, JNL_MAGIC, 8);
	jnl_put64(h + 8, j->next_no);
	jnl_put64(h + 16, first);
	jnl_put32(h + 24, salt);
	jnl_put32(h + 28, journal_crc32c(0, h, 28));
	c = &b->chunks[b->nchunks++];
	*c = (struct jnl_chunk){ .seg = j->next_no, .first = first,
	    .foff = 0, .boff = b->len, .len = JNL_SEG_HDR, .create = 1 };
	b->len += JNL_SEG_HDR;
	pthread_mutex_unlock(&j->mu);

	s = &j->segs[j->nsegs++];
	*s = (struct jnl_seg){ .no = j->next_no++, .first = first,
	    .end = first + JNL_SEG_HDR, .ckpt_end = UINT64_MAX };
	j->have_cur = 1;
	j->cur_salt = salt;
	return 0;
}

/* A new segment, and the checkpoint records it starts with. */
static int
jnl_new_segment(struct journal *j)
{
	struct jnl_seg *s;
	int r;

	if ((r = jnl_roll(j)) < 0)
		return r;
	j->ckpt_redo = 0;
	if (j->ckpt_cb != NULL) {
		j->in_ckpt = 1;
		j->ckpt_err = 0;
		j->ckpt_cb(j->ckpt_arg);
		j->in_ckpt = 0;
		if (j->ckpt_err != 0) {
			j->ckpt_redo = 1;
			return -j->ckpt_err;
		}
	}
	s = &j->segs[j->nsegs - 1];
	s->ckpt_end = s->end;
	return 0;
}

static journal_pos
jnl_append_fail(struct journal *j, int err)
{
	if (j->in_ckpt && j->ckpt_err == 0)
		j->ckpt_err = err;
	errno = err;
	return 0;
}

journal_pos
journal_append(struct journal *j, uint8_t type, const void *hdr,
    size_t hlen, const void *payload, size_t plen, uint64_t *seg_out)
{
	struct jnl_seg *s;
	struct jnl_buf *b;
	struct jnl_chunk *c;
	size_t blen, rlen;
	uint8_t *p;
	uint32_t crc;
	int r;

	if (!j->replayed || type == 0)
		return jnl_append_fail(j, EINVAL);
	if (j->ro)
		return jnl_append_fail(j, EROFS);
	if (hlen > JOURNAL_BODY_MAX || plen > JOURNAL_BODY_MAX - hlen)
		return jnl_append_fail(j, EFBIG);
	blen = hlen + plen;
	rlen = JNL_REC_HDR + blen;
	if (!j->in_ckpt) {
		s = j->have_cur ? &j->segs[j->nsegs - 1] : NULL;
		/* Full: roll, unless all it has is its checkpoint (a record
		 * larger than a segment gets one of its own).  The size
		 * counts what follows the checkpoint: a checkpoint as large
		 * as a segment (many mailboxes, small segments) must not
		 * make every record roll one. */
		if (s == NULL || j->ckpt_redo || (s->end > s->ckpt_end &&
		    s->end - s->ckpt_end + rlen > j->segment_bytes))
			if ((r = jnl_new_segment(j)) < 0)
				return jnl_append_fail(j, -r);
	}
	s = &j->segs[j->nsegs - 1];

	crc = journal_crc32c(j->cur_salt, &type, 1);
	if (hlen > 0)
		crc = journal_crc32c(crc, hdr, hlen);
	if (plen > 0)
		crc = journal_crc32c(crc, payload, plen);

	pthread_mutex_lock(&j->mu);
	b = &j->bufs[j->fill];
	c = b->nchunks > 0 ? &b->chunks[b->nchunks - 1] : NULL;
	if (c == NULL || c->seg != s->no) {
		/* The thread took the buffer: go on in a fresh one. */
		if ((r = jnl_buf_chunk(b)) < 0) {
			pthread_mutex_unlock(&j->mu);
			return jnl_append_fail(j, -r);
		}
		c = &b->chunks[b->nchunks++];
		*c = (struct jnl_chunk){ .seg = s->no, .first = s->first,
		    .foff = s->end - s->first, .boff = b->len };
	}
	if ((r = jnl_buf_reserve(b, rlen)) < 0) {
		if (c->len == 0)
			b->nchunks--;
		pthread_mutex_unlock(&j->mu);
		return jnl_append_fail(j, -r);
	}
	p = b->data + b->len;
	jnl_put32(p, (uint32_t)blen);
	jnl_put32(p + 4, crc);
	p[8] = type;
	if (hlen > 0)
		memcpy(p + JNL_REC_HDR, hdr, hlen);
	if (plen > 0)
		memcpy(p + JNL_REC_HDR + hlen, payload, plen);
	b->len += rlen;
	c->len += rlen;
	pthread_mutex_unlock(&j->mu);

	s->end += rlen;
	j->appended_records++;
	j->appended_bytes += rlen;
	if (seg_out != NULL)
		*seg_out = s->no;
	return s->end;
}

void
journal_set_checkpoint(struct journal *j, void (*cb)(void *arg), void *arg)
{
	j->ckpt_cb = cb;
	j->ckpt_arg = arg;
}

/* --- syncing ------------------------------------------------------------ */

int
journal_sync(struct journal *j)
{
	if (j->ro)
		return -EROFS;
	pthread_mutex_lock(&j->mu);
	if (!j->want) {
		j->want = 1;
		pthread_cond_signal(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
	return 0;
}

int
journal_fd(const struct journal *j)
{
	return j->efd;
}

/* A batch failed and the thread cut the log back to synced: forget what
 * came after (the buffer, and segments that begin at or after it), and
 * start the next append in a new segment there. */
static void
jnl_forget_after(struct journal *j, uint64_t synced)
{
	while (j->nsegs > 0 && j->segs[j->nsegs - 1].first >= synced)
		j->nsegs--;
	if (j->nsegs > 0 && j->segs[j->nsegs - 1].end > synced)
		j->segs[j->nsegs - 1].end = synced;
	j->have_cur = 0;
	j->next_first = synced;
}

int
journal_synced(struct journal *j, journal_pos *synced)
{
	uint64_t v, s;
	int err, broken;

	if (read(j->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing finished since last time; fine. */
	}
	pthread_mutex_lock(&j->mu);
	s = j->synced;
	err = j->err;
	broken = j->broken;
	if (err != 0) {
		/* Appended after the failed batch, bound for a segment
		 * that is cut: given up with it. */
		j->bufs[j->fill].len = 0;
		j->bufs[j->fill].nchunks = 0;
		j->err = 0;
		j->failed = 0;
	}
	pthread_mutex_unlock(&j->mu);
	j->synced_seen = s;
	if (err != 0) {
		jnl_forget_after(j, s);
		if (broken)
			j->ro = 1;
	}
	if (j->replayed)
		jnl_sweep(j);
	*synced = s;
	return err;
}

void
journal_get_stats(const struct journal *j, struct journal_stats *st)
{
	struct journal *mj = (struct journal *)j;	/* for the mutex */

	memset(st, 0, sizeof(*st));
	st->appended_records = j->appended_records;
	st->appended_bytes = j->appended_bytes;
	st->segments_live = j->nsegs;
	st->oldest_seg = j->nsegs > 0 ? j->segs[0].no : 0;
	st->newest_seg = j->nsegs > 0 ? j->segs[j->nsegs - 1].no : 0;
	st->segment_bytes = j->segment_bytes;
	for (size_t i = 0; i < j->nsegs; i++)
		if (j->segs[i].ckpt_end != UINT64_MAX &&
		    j->segs[i].ckpt_end > j->segs[i].first)
			st->ckpt_bytes += j->segs[i].ckpt_end -
			    j->segs[i].first;
	pthread_mutex_lock(&mj->mu);
	st->syncs = j->syncs;
	st->sync_ns_total = j->sync_ns;
	st->segments_deleted = j->deleted;
	st->disk_bytes = j->disk_bytes;
	st->write_errors = j->write_errors;
	pthread_mutex_unlock(&mj->mu);
}

/* --- replay ------------------------------------------------------------- */

/* For tests/test-journal.c, which declares them (not the API): bytes
 * checksummed by replay (records checked, bytes scanned), candidates
 * weighed by the search, and a lower cap on the open ones (0: none). */
extern uint64_t jnl_test_crc_bytes, jnl_test_candidates;
extern size_t jnl_test_cand_max;
uint64_t jnl_test_crc_bytes, jnl_test_candidates;
size_t jnl_test_cand_max;

/* Bytes [base, base + len) of a segment file, read ahead. */
struct jnl_reader {
	int fd;
	uint8_t *buf;
	size_t cap, len;
	uint64_t base, size;
};

/* Make bytes [off, off + n) available in *p.  The caller has checked
 * that they are in the file.  0, or -errno. */
static int
jnl_rd_get(struct jnl_reader *r, uint64_t off, size_t n, const uint8_t **p)
{
	if (off >= r->base && off - r->base <= r->len &&
	    n <= r->len - (off - r->base)) {
		*p = r->buf + (off - r->base);
		return 0;
	}
	if (off < r->base || off - r->base >= r->len) {
		r->len = 0;	/* resync may step back: read again */
	} else {
		size_t drop = (size_t)(off - r->base);

		memmove(r->buf, r->buf + drop, r->len - drop);
		r->len -= drop;
	}
	r->base = off;
	if (n > r->cap) {
		size_t cap = n > JNL_READ_MIN ? n : JNL_READ_MIN;
		uint8_t *b = realloc(r->buf, cap);

		if (b == NULL)
			return -ENOMEM;
		r->buf = b;
		r->cap = cap;
	}
	while (r->len < n) {
		uint64_t at = r->base + r->len;
		size_t want = r->cap - r->len;
		ssize_t got;

		if (at >= r->size)
			return -EIO;
		if (want > r->size - at)
			want = (size_t)(r->size - at);
		got = pread(r->fd, r->buf + r->len, want, (off_t)at);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EIO;	/* shorter than fstat said */
		r->len += (size_t)got;
	}
	*p = r->buf;
	return 0;
}

/* Is there a good record at off, before end?  0 (*len_out: its body's
 * length), 1 with *what saying why not, or -errno. */
static int
jnl_rec_check(struct jnl_reader *r, uint64_t off, uint64_t end,
    uint32_t salt, uint32_t *len_out, const char **what)
{
	const uint8_t *p;
	uint32_t len;
	int e;

	if (end - off < JNL_REC_HDR) {
		*what = "record header cut short";
		return 1;
	}
	if ((e = jnl_rd_get(r, off, JNL_REC_HDR, &p)) < 0)
		return e;
	len = jnl_le32(p);
	*len_out = len;
	if (len > JOURNAL_BODY_MAX) {
		*what = "length over the limit";
		return 1;
	}
	if (len > end - off - JNL_REC_HDR) {
		*what = "length past the end of the segment";
		return 1;
	}
	if (p[8] == 0) {
		*what = "type 0";
		return 1;
	}
	if ((e = jnl_rd_get(r, off, JNL_REC_HDR + len, &p)) < 0)
		return e;
	jnl_test_crc_bytes += 1 + (uint64_t)len;
	if (journal_crc32c(salt, p + 8, 1 + (size_t)len) != jnl_le32(p + 4)) {
		*what = "checksum mismatch";
		return 1;
	}
	return 0;
}

/*
 * The search for the next good record after damage.
 *
 * Trying every offset in turn and checksumming the record each one
 * claims to hold costs the sum of the lengths claimed: quadratic in the
 * bytes searched.  Bytes that only look like headers are enough for that
 * (hostile ones, or just random ones: a random length fits in a 64 MiB
 * segment once in 64 tries, and then claims half of it on average), so a
 * torn 8 MiB message of random bytes at the end of the log cost some
 * 10^10 bytes of CRC, and a message full of plausible headers far more.
 *
 * So the search reads the bytes once, in order, and checks every
 * candidate without reading its body again.  CRC-32C is linear: with
 * C(x) the register after the bytes from the search's start to x, fed
 * from 0, the register of a record whose type byte is at a and whose
 * body ends at e, fed from ~salt, is Z^n(~salt ^ C(a)) ^ C(e), where
 * n = e - a and Z is what one zero byte does to the register.  When the
 * scan passes a (the candidate's header is read there), it computes
 * what C(e) must be for the record to check out, at the cost of a few
 * table lookups per bit of n (jnl_zeros), and files the candidate by
 * its end; when the scan reaches e, one comparison tells.  Work: each
 * byte once, plus O(log) per candidate, whatever the bytes are.
 *
 * Candidates are settled by their end, not their start: the search
 * stops at the good record that ends first, without waiting for the
 * candidates still open, which began earlier but end later.  Each of
 * those claims bytes of a record that checks out, so they cannot both
 * be real, and bytes that were not written as a record of this segment
 * pass only by chance (2^-32 per candidate, as before): where the
 * bytes hold no such accident, both orders find the first real record.
 * The caller checks the one found again, with the plain CRC, before
 * using it, so a wrong answer here can only cost records, never
 * deliver bytes that do not check out.
 *
 * Memory: the open candidates are a min-heap of at most JNL_CAND_MAX
 * entries (16 bytes each).  Random bytes keep about M^2 / 2^34 open at
 * once over M bytes (2^18 for 64 MiB); only hostile bytes or far larger
 * segments fill it.  Then the half that ends last is dropped unchecked
 * (the record that ends first, the one sought, is the least likely to
 * go), and the search goes on; but if it then finds nothing, it cannot
 * tell a torn tail from a good record among those dropped, so it says
 * so (1), and the caller reports damage and cuts nothing.
 */
#define JNL_CAND_MAX	((size_t)1 << 20)
/* Record lengths + 1 are below 2^31 (JOURNAL_BODY_MAX + 1). */
#define JNL_ZPOW	31

/* Z^(2^k) as eight tables of 16, one per nibble: Z is linear over GF(2),
 * so the image of a register is the XOR of its nibbles' images.  16 KiB,
 * filled on the first search (byte tables would take 124 KiB, and were
 * no faster here: the search's time goes to the heap). */
static uint32_t jnl_zpow[JNL_ZPOW][8][16];
static pthread_once_t jnl_zpow_once = PTHREAD_ONCE_INIT;

static uint32_t
jnl_zapply(const uint32_t t[8][16], uint32_t v)
{
	return t[0][v & 0xf] ^ t[1][(v >> 4) & 0xf] ^
	    t[2][(v >> 8) & 0xf] ^ t[3][(v >> 12) & 0xf] ^
	    t[4][(v >> 16) & 0xf] ^ t[5][(v >> 20) & 0xf] ^
	    t[6][(v >> 24) & 0xf] ^ t[7][v >> 28];
}

static void
jnl_zpow_init(void)
{
	pthread_once(&jnl_crc_once, jnl_crc_init);
	for (int j = 0; j < 8; j++)
		for (uint32_t b = 0; b < 16; b++) {
			uint32_t v = b << (4 * j);

			jnl_zpow[0][j][b] = (v >> 8) ^ jnl_crc_tab[0][v & 0xff];
		}
	for (int k = 1; k < JNL_ZPOW; k++)
		for (int j = 0; j < 8; j++)
			for (uint32_t b = 0; b < 16; b++)
				jnl_zpow[k][j][b] = jnl_zapply(jnl_zpow[k - 1],
				    jnl_zapply(jnl_zpow[k - 1], b << (4 * j)));
}

/* Z^n(v): the register v after n zero bytes. */
static uint32_t
jnl_zeros(uint32_t v, uint32_t n)
{
	for (int k = 0; n != 0; k++, n >>= 1)
		if (n & 1)
			v = jnl_zapply(jnl_zpow[k], v);
	return v;
}

/* A candidate record, open until the scan reaches its end. */
struct jnl_cand {
	uint64_t end;		/* file offset after it */
	uint32_t span;		/* header and body: it starts at end - span */
	uint32_t want;		/* the scan's register at end if it is good */
};

/* The open candidates: a min-heap by end, then start. */
struct jnl_cands {
	struct jnl_cand *v;
	size_t n, cap;
	int dropped;		/* some went unchecked in this search */
	uint64_t rnd;		/* pivots for jnl_cand_keep */
};

static int
jnl_cand_before(const struct jnl_cand *a, const struct jnl_cand *b)
{
	return a->end < b->end || (a->end == b->end && a->span > b->span);
}

static void
jnl_cand_down(struct jnl_cand *v, size_t n, size_t i)
{
	struct jnl_cand c = v[i];

	for (;;) {
		size_t k = 2 * i + 1;

		if (k >= n)
			break;
		if (k + 1 < n && jnl_cand_before(&v[k + 1], &v[k]))
			k++;
		if (!jnl_cand_before(&v[k], &c))
			break;
		v[i] = v[k];
		i = k;
	}
	v[i] = c;
}

static void
jnl_cand_swap(struct jnl_cand *a, struct jnl_cand *b)
{
	struct jnl_cand t = *a;

	*a = *b;
	*b = t;
}

/* Keep the k candidates that come first, drop the others.  A selection
 * with random pivots (expected linear time, whatever order hostile bytes
 * put the ends in), then the heap is rebuilt. */
static void
jnl_cand_keep(struct jnl_cands *h, size_t k)
{
	struct jnl_cand *v = h->v;
	size_t lo = 0, hi = h->n;

	while (hi - lo > 1) {
		struct jnl_cand p;
		size_t lt = lo, i = lo, gt = hi;

		h->rnd ^= h->rnd << 13;
		h->rnd ^= h->rnd >> 7;
		h->rnd ^= h->rnd << 17;
		p = v[lo + (size_t)(h->rnd % (hi - lo))];
		/* [lo, lt) before p, [lt, gt) p, [gt, hi) after. */
		while (i < gt) {
			if (jnl_cand_before(&v[i], &p))
				jnl_cand_swap(&v[lt++], &v[i++]);
			else if (jnl_cand_before(&p, &v[i]))
				jnl_cand_swap(&v[i], &v[--gt]);
			else
				i++;
		}
		if (k < lt)
			hi = lt;
		else if (k > gt)
			lo = gt;
		else
			break;
	}
	h->n = k;
	for (size_t i = k / 2; i-- > 0;)
		jnl_cand_down(v, k, i);
	h->dropped = 1;
}

static int
jnl_cand_push(struct jnl_cands *h, const struct jnl_cand *c)
{
	size_t max = jnl_test_cand_max ? jnl_test_cand_max : JNL_CAND_MAX, i;

	if (max < 2)
		max = 2;
	if (h->n >= max)
		jnl_cand_keep(h, max / 2);
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 4096;
		struct jnl_cand *v;

		if (cap > max)
			cap = max;
		if ((v = realloc(h->v, cap * sizeof(*v))) == NULL)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	/* Sift up. */
	for (i = h->n++; i > 0 && jnl_cand_before(c, &h->v[(i - 1) / 2]);
	    i = (i - 1) / 2)
		h->v[i] = h->v[(i - 1) / 2];
	h->v[i] = *c;
	return 0;
}

static void
jnl_cand_pop(struct jnl_cands *h)
{
	h->v[0] = h->v[--h->n];
	jnl_cand_down(h->v, h->n, 0);
}

/* After a bad record at off: where the next good one starts, or end.
 * Its own length first (a flipped bit in the body keeps the length
 * right; this costs one record, at a place the journal wrote, which a
 * message's bytes cannot choose); failing that, every later offset, as
 * above, since a damaged length says nothing about where the record
 * ended.  The salt keeps a message that holds record-like bytes from
 * passing.  0; 1 when nothing was found but some candidates went
 * unchecked (*next is end, but that is no proof of a torn tail); or
 * -errno. */
static int
jnl_resync(struct jnl_reader *r, struct jnl_cands *h, uint64_t off,
    uint64_t end, uint32_t salt, uint32_t len, uint64_t *next)
{
	const uint8_t *p;
	const char *what;
	uint32_t l, reg = 0;
	uint64_t x = 0;
	int e = 0;

	if (len <= JOURNAL_BODY_MAX && len <= end - off - JNL_REC_HDR) {
		uint64_t q = off + JNL_REC_HDR + len;

		if (q < end && (e = jnl_rec_check(r, q, end, salt, &l,
		    &what)) <= 0) {
			*next = q;
			return e;
		}
	}
	pthread_once(&jnl_zpow_once, jnl_zpow_init);
	h->n = 0;
	h->dropped = 0;
	/* Seeded from the salt, which the bytes cannot know. */
	h->rnd = (uint64_t)salt << 32 ^ UINT64_C(0x9e3779b97f4a7c15);
	*next = end;
	/* At x, reg is C(x), from off + 1 + 8 (the first candidate's type
	 * byte); the candidate read is the one whose type byte is at x. */
	for (x = off + 1 + 8;; x++) {
		while (h->n > 0 && h->v[0].end == x) {
			struct jnl_cand c = h->v[0];

			jnl_cand_pop(h);
			if (c.want == reg) {
				*next = x - c.span;
				e = 0;
				goto out;
			}
		}
		if (x >= end)
			break;
		if ((e = jnl_rd_get(r, x - 8, JNL_REC_HDR, &p)) < 0)
			goto out;
		l = jnl_le32(p);
		/* As jnl_rec_check: in bounds, type not 0. */
		if (l <= JOURNAL_BODY_MAX && l <= end - x - 1 && p[8] != 0) {
			struct jnl_cand c = { .end = x + 1 + l,
			    .span = JNL_REC_HDR + l,
			    .want = ~jnl_le32(p + 4) ^
			    jnl_zeros(~salt ^ reg, l + 1) };

			jnl_test_candidates++;
			if ((e = jnl_cand_push(h, &c)) < 0)
				goto out;
		}
		reg = (reg >> 8) ^ jnl_crc_tab[0][(reg ^ p[8]) & 0xff];
	}
	e = h->dropped;
out:
	if (x > off + 1 + 8)
		jnl_test_crc_bytes += x - (off + 1 + 8);
	return e;
}

/* A segment file in replay. */
struct jnl_rseg {
	uint64_t no, first, size;
	uint64_t bound;		/* file offset where the next begins, or
				 * UINT64_MAX */
	uint32_t salt;
	int hdr_ok, drop;
};

struct jnl_replay {
	struct journal *j;
	int (*cb)(void *, const struct journal_rec *);
	void (*on_damage)(void *, uint64_t, uint64_t, const char *);
	void *arg;
	struct journal_replay_stats *st;
	struct jnl_reader rd;
	struct jnl_cands cands;		/* jnl_resync's, kept between calls */
};

static void
jnl_damage(struct jnl_replay *rp, uint64_t seg, uint64_t off,
    const char *what)
{
	rp->st->damaged++;
	if (rp->on_damage != NULL)
		rp->on_damage(rp->arg, seg, off, what);
}

/* Read a segment's header: hdr_ok, first, salt. */
static int
jnl_read_header(struct journal *j, struct jnl_rseg *rs)
{
	char name[JNL_NAME_MAX];
	uint8_t h[JNL_SEG_HDR];
	struct stat sb;
	int fd, r = 0;

	jnl_seg_name(name, rs->no);
	if ((fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC |
	    O_NOFOLLOW)) < 0)
		return -errno;
	/* What a broker killed before its sync wrote may be in the page
	 * cache only: synced now, before replay trusts it (a compaction
	 * copy read here lets the segment of its original go, and a power
	 * loss after that must not take the copy). */
	if (fdatasync(fd) < 0)
		r = -errno;
	else if (fstat(fd, &sb) < 0)
		r = -errno;
	else if ((rs->size = (uint64_t)sb.st_size) >= JNL_SEG_HDR &&
	    (r = jnl_pread_all(fd, h, sizeof(h), 0)) == 0) {
		rs->hdr_ok = memcmp(h, JNL_MAGIC, 8) == 0 &&
		    journal_crc32c(0, h, 28) == jnl_le32(h + 28) &&
		    jnl_le64(h + 8) == rs->no;
		rs->first = jnl_le64(h + 16);
		rs->salt = jnl_le32(h + 24);
		/* A last segment created just before a crash may have its
		 * size on disk and zeros for its bytes. */
		if (!rs->hdr_ok) {
			size_t i;

			for (i = 0; i < sizeof(h) && h[i] == 0; i++)
				;
			rs->drop = i == sizeof(h);
		}
	} else if (r == 0) {
		rs->drop = 1;		/* header never completed */
	}
	close(fd);
	return r;
}

/* Decide, from the last segment back, where each segment must end: where
 * the next one (with a good header) begins.  A segment that the next one
 * begins at or before was created by a failed batch whose removal did
 * not reach the disk: dropped.  Only the last file may be dropped for a
 * bad header (a crash while creating it). */
static void
jnl_plan(struct jnl_rseg *rs, size_t n)
{
	uint64_t next_first = UINT64_MAX;
	int next_ok = 0;

	for (size_t i = n; i-- > 0;) {
		rs[i].bound = UINT64_MAX;
		if (!rs[i].hdr_ok) {
			if (i + 1 != n)
				rs[i].drop = 0;
			if (!rs[i].drop)
				next_ok = 0;
			continue;
		}
		if (next_ok && next_first < rs[i].first + JNL_SEG_HDR) {
			rs[i].drop = 1;
			continue;
		}
		if (next_ok)
			rs[i].bound = next_first - rs[i].first;
		next_first = rs[i].first;
		next_ok = 1;
	}
}

/* Deliver one segment's records.  *keep: its length once replayed. */
static int
jnl_replay_records(struct jnl_replay *rp, struct jnl_rseg *rs, int last,
    uint64_t *keep)
{
	struct jnl_reader *r = &rp->rd;
	uint64_t end = rs->size < rs->bound ? rs->size : rs->bound;
	uint64_t off = JNL_SEG_HDR, next;
	const char *what;
	const uint8_t *p;
	uint32_t len = 0;
	int e;

	if (rs->bound != UINT64_MAX && rs->bound > rs->size)
		jnl_damage(rp, rs->no, rs->size,
		    "segment ends before the next one begins");
	while (off < end) {
		if ((e = jnl_rec_check(r, off, end, rs->salt, &len,
		    &what)) < 0)
			return e;
		if (e == 0) {
			struct journal_rec rec;

			if ((e = jnl_rd_get(r, off, JNL_REC_HDR + len,
			    &p)) < 0)
				return e;
			off += JNL_REC_HDR + len;
			rec = (struct journal_rec){ .type = p[8],
			    .body = p + JNL_REC_HDR, .len = len,
			    .seg = rs->no, .pos = rs->first + off };
			rp->st->records++;
			if (rp->cb != NULL && (e = rp->cb(rp->arg, &rec)) != 0)
				return e < 0 ? e : -ECANCELED;
			continue;
		}
		if ((e = jnl_resync(r, &rp->cands, off, end, rs->salt, len,
		    &next)) < 0)
			return e;
		if (e == 0 && next == end && last) {
			/* Nothing good after it: a write cut short. */
			rp->st->torn_bytes += rs->size - off;
			*keep = off;
			return 0;
		}
		/* When the search could not rule out a good record after it
		 * (e == 1), the rest is damage, kept: it may hold records. */
		jnl_damage(rp, rs->no, off, e == 0 ? what :
		    "bad record, search cut short: rest of segment skipped");
		off = next;
	}
	if (end < rs->size)
		rp->st->torn_bytes += rs->size - end;
	*keep = end;
	return 0;
}

/* Cut a segment file to len, durably. */
static int
jnl_truncate(struct journal *j, uint64_t no, uint64_t len)
{
	char name[JNL_NAME_MAX];
	int fd, r = 0;

	jnl_seg_name(name, no);
	if ((fd = openat(j->dirfd, name, O_WRONLY | O_CLOEXEC |
	    O_NOFOLLOW)) < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) < 0 || fdatasync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Replay segment rs: add it to the table (so the callback may retain
 * it), then deliver its records and cut what follows them. */
static int
jnl_replay_seg(struct jnl_replay *rp, struct jnl_rseg *rs, int last,
    uint64_t *disk)
{
	struct journal *j = rp->j;
	char name[JNL_NAME_MAX];
	uint64_t prev_end = j->nsegs > 0 ? j->segs[j->nsegs - 1].end : 0;
	uint64_t keep = rs->size;
	struct jnl_seg *s;
	int e;

	if ((e = jnl_seg_room(j)) < 0)
		return e;
	s = &j->segs[j->nsegs++];
	*s = (struct jnl_seg){ .no = rs->no, .first = prev_end,
	    .end = prev_end, .ckpt_end = UINT64_MAX };
	if (!rs->hdr_ok) {
		/* Unreadable without its salt; reclaimed in its turn. */
		jnl_damage(rp, rs->no, 0, "segment header fails its check");
		*disk += rs->size;
		return 0;
	}
	s->first = s->end = rs->first;
	jnl_seg_name(name, rs->no);
	if ((rp->rd.fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC |
	    O_NOFOLLOW)) < 0)
		return -errno;
	rp->rd.base = rp->rd.len = 0;
	rp->rd.size = rs->size;
	e = jnl_replay_records(rp, rs, last, &keep);
	close(rp->rd.fd);
	rp->rd.fd = -1;
	if (e < 0)
		return e;
	if (keep < rs->size && (e = jnl_truncate(j, rs->no, keep)) < 0)
		return e;
	s->end = rs->first + keep;
	*disk += keep;
	return 0;
}

int
journal_replay(struct journal *j,
    int (*cb)(void *arg, const struct journal_rec *r),
    void (*on_damage)(void *arg, uint64_t seg, uint64_t offset,
    const char *what), void *arg, struct journal_replay_stats *st)
{
	struct jnl_replay rp = { .j = j, .cb = cb, .on_damage = on_damage,
	    .arg = arg, .st = st, .rd = { .fd = -1 } };
	struct jnl_rseg *rs;
	char name[JNL_NAME_MAX];
	uint64_t disk = 0;
	size_t n = j->nfound, last = SIZE_MAX;
	int e = 0, dropped = 0;

	memset(st, 0, sizeof(*st));
	if (j->replay_tried)
		return -EINVAL;
	j->replay_tried = 1;
	if ((rs = calloc(n ? n : 1, sizeof(*rs))) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n && e == 0; i++) {
		rs[i].no = j->found[i];
		e = jnl_read_header(j, &rs[i]);
	}
	/* And their names (a segment made just before the crash). */
	if (e == 0 && n > 0 && fsync(j->dirfd) < 0)
		e = -errno;
	if (e < 0)
		goto out;
	jnl_plan(rs, n);
	for (size_t i = 0; i < n; i++)
		if (!rs[i].drop)
			last = i;
	for (size_t i = 0; i < n && e == 0; i++) {
		st->segments++;
		if (!rs[i].drop) {
			e = jnl_replay_seg(&rp, &rs[i], i == last, &disk);
			continue;
		}
		st->torn_bytes += rs[i].size;
		jnl_seg_name(name, rs[i].no);
		if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT)
			e = -errno;
		dropped = 1;
	}
	if (e == 0 && dropped && fsync(j->dirfd) < 0)
		e = -errno;
	if (e < 0)
		goto out;
	j->next_first = j->nsegs > 0 ? j->segs[j->nsegs - 1].end : 0;
	j->synced_seen = j->next_first;
	pthread_mutex_lock(&j->mu);
	j->synced = j->next_first;
	j->disk_bytes = disk;
	pthread_mutex_unlock(&j->mu);
	j->replayed = 1;
	free(j->found);
	j->found = NULL;
	j->nfound = 0;
	jnl_sweep(j);
out:
	free(rp.rd.buf);
	free(rp.cands.v);
	free(rs);
	if (e < 0)
		j->nsegs = 0;
	return e;
}
