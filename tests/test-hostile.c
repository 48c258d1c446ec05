/*
 * test-hostile.c - hostile and careless clients against a real ipcd:
 *
 *   1. frames of every bad length and shape (the "length table"), each
 *      answered with an ERROR or a close within 100 ms, and the broker's
 *      RSS flat over 100 more runs of the table (10 under
 *      AddressSanitizer, $HOSTILE_LT_RUNS);
 *   2. a garbage storm: 100 clients sending 10,000 malformed frames while
 *      one producer sends 1,000,000 numbered messages to one receiver
 *      ($HOSTILE_STORM_MSGS);
 *   3. a flood of 1,000 connections that send half a HELLO
 *      (ipcd --max-handshakes);
 *   4. clients that claim to be another process or user;
 *   5. a client that half-closes after 10,000 SENDs;
 *   6. a receiver that never reads while a producer offers 1,000,000
 *      messages;
 *   7. descriptors passed in bulk, cut off, or of the wrong kind.
 *
 * Each test prints what it measured as "figure: ..." lines (latencies,
 * RSS, descriptor counts, messages counted), for doc/reliability.md.
 *
 * How the tests know what the broker did without sleeping:
 *   - raw connections (frames encoded here with the codec) wait for the
 *     broker's answer, or its close, with a deadline on every read;
 *   - what another connection did is looked for with a round trip
 *     (ipc_mbox_stat, ipc_counters) in a loop bounded by a deadline;
 *     RSS and descriptor counts are sampled from /proc the same way;
 *   - the only waits that expect nothing to happen (a stalled frame the
 *     broker must keep holding) are polls with a fixed window, which
 *     fail the test if the broker does something.
 * Threads make only timed calls and report failures in a string, which
 * the test checks once it has joined them.  Child processes report on
 * pipes read with timeouts and are reaped with bounded waits.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "mysocks.h"
#include "testutil.h"
#include "testbroker.h"
#include "wire.h"

/* Under AddressSanitizer the broker's RSS holds ASan's own bookkeeping
 * (freed blocks kept in quarantine, up to 256 MiB by default, redzones,
 * shadow): the figures are printed, but the RSS bounds are checked only
 * in a plain build. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* The uid and gid a child takes to be "another user". */
#define NOBODY		65534

/* 1. The length table: the broker's --handshake-timeout, runs of the
 * table after the first ($HOSTILE_LT_RUNS, this by default: 100, 10
 * under AddressSanitizer, where they serve only as latency samples and
 * 100 take some 36 s of page faults on 8 MiB buffers), the latency
 * bound, the RSS bound. */
#define LT_HS_MS	300
#define LT_RUNS		(UNDER_ASAN ? 10 : 100)
#define LT_LATENCY_US	100000
#define LT_RSS_KIB	1024

/* 2. The storm: garbage clients, malformed frames in all, and good
 * messages ($HOSTILE_STORM_MSGS, this by default). */
#define STORM_CLIENTS	100
#define STORM_FRAMES	10000
#define STORM_MSGS	1000000

/* 3. The flood: connections, --max-handshakes, --handshake-timeout,
 * --max-connections, and the slack allowed past the timeout. */
#define FLOOD_CONNS	1000
#define FLOOD_MAX_HS	64
#define FLOOD_HS_MS	500
#define FLOOD_MAX_CONNS	256
#define FLOOD_SLACK_MS	1000

/* 5. Half-close: SENDs, and how many of them find the mailbox full. */
#define HC_SENDS	10000
#define HC_OVER		50

/* 6. The slow consumer: offers, payload bytes, the mailbox's byte
 * capacity, the per-uid byte quota, the receiver's prefetch. */
#define SLOW_OFFERS	1000000
#define SLOW_PAYLOAD	256
#define SLOW_BOX_BYTES	(1u << 20)
#define SLOW_QUOTA	(4u << 20)
#define SLOW_PREFETCH	256

/* 7. Descriptors: as many as one sendmsg may carry (SCM_MAX_FD), and
 * the refused sends of the volume run. */
#define FD_SCM_MAX	253
#define FD_VOLUME	3000

/* --- messages ------------------------------------------------------------ */

/* Every counted payload starts with these 16 bytes: a check word, so
 * that a torn or foreign message is not taken for a good one. */
struct seqmsg {
	uint32_t producer;
	uint32_t check;
	uint64_t seq;
};
_Static_assert(sizeof(struct seqmsg) == 16, "16-byte messages");

static uint32_t
seq_check(uint32_t producer, uint64_t seq)
{
	return (uint32_t)(seq * 2654435761u) ^ (producer * 40503u) ^
	    0x5eed5eedu;
}

static struct seqmsg
seq_make(uint32_t producer, uint64_t seq)
{
	struct seqmsg m = { producer, seq_check(producer, seq), seq };

	return m;
}

static int
seq_valid(const struct seqmsg *m)
{
	return m->check == seq_check(m->producer, m->seq);
}

/* --- the fixture --------------------------------------------------------- */

#define FIX_MAX		32
#define FIX_THREADS	(STORM_CLIENTS + 8)

/* What a test opens or starts, so that the teardown can undo it however
 * far the test got. */
struct fix {
	struct broker b;
	struct ipc_conn *conns[FIX_MAX];
	int nconns;
	pid_t kids[FIX_MAX];		/* 0 once reaped */
	int nkids;
	pthread_t threads[FIX_THREADS];
	int thread_live[FIX_THREADS];
	int nthreads;
	void *mem[FIX_MAX];
	int nmem;
	int *fds;			/* descriptors to close */
	int nfds, capfds;
	int *fdarr;			/* more of them, -1 for none (threads
					 * fill it) */
	int nfdarr;
	atomic_int stop;		/* threads: give up */
};

static int
fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->b.proc.in = f->b.proc.out = f->b.proc.err = -1;
	*state = f;
	return 0;
}

/* Undo what the test left: children first (killed: a child never
 * outlives its test), then the broker, whose going makes every call
 * still waiting in a thread return, then the threads, connections,
 * descriptors and memory. */
static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	atomic_store(&f->stop, 1);
	for (int i = 0; i < f->nkids; i++)
		if (f->kids[i] > 0) {
			kill(f->kids[i], SIGKILL);
			test_child_reap(f->kids[i], TEST_WAIT_MS);
		}
	if (f->b.proc.pid > 0)
		test_stop(&f->b.proc);
	for (int i = 0; i < f->nthreads; i++)
		if (f->thread_live[i])
			pthread_join(f->threads[i], NULL);
	for (int i = 0; i < f->nconns; i++)
		ipc_close(f->conns[i]);
	for (int i = 0; i < f->nfds; i++)
		close(f->fds[i]);
	free(f->fds);
	for (int i = 0; i < f->nfdarr; i++)
		if (f->fdarr[i] >= 0)
			close(f->fdarr[i]);
	for (int i = 0; i < f->nmem; i++)
		free(f->mem[i]);
	test_rmtree(f->b.dir);
	free(f);
	return 0;
}

static struct ipc_conn *
fix_open(struct fix *f)
{
	struct ipc_conn *c = broker_open(&f->b);

	assert_true(f->nconns < FIX_MAX);
	f->conns[f->nconns++] = c;
	return c;
}

/* Zeroed memory that lives until the teardown (threads may use it even
 * when the test fails before it joins them). */
static void *
fix_alloc(struct fix *f, size_t size)
{
	void *p = calloc(1, size);

	if (p == NULL)
		fail_msg("calloc %zu: out of memory", size);
	assert_true(f->nmem < FIX_MAX);
	f->mem[f->nmem++] = p;
	return p;
}

/* A descriptor the teardown closes, unless fix_fd_close() did. */
static int
fix_fd(struct fix *f, int fd)
{
	if (fd < 0)
		fail_msg("no descriptor: %s", strerror(errno));
	if (f->nfds == f->capfds) {
		int cap = f->capfds ? 2 * f->capfds : 64;
		int *p = realloc(f->fds, (size_t)cap * sizeof(*p));

		if (p == NULL)
			fail_msg("realloc: out of memory");
		f->fds = p;
		f->capfds = cap;
	}
	f->fds[f->nfds++] = fd;
	return fd;
}

static void
fix_fd_close(struct fix *f, int fd)
{
	for (int i = f->nfds - 1; i >= 0; i--)
		if (f->fds[i] == fd) {
			f->fds[i] = f->fds[--f->nfds];
			break;
		}
	close(fd);
}

static int
fix_thread(struct fix *f, void *(*fn)(void *), void *arg)
{
	assert_true(f->nthreads < FIX_THREADS);
	assert_int_equal(pthread_create(&f->threads[f->nthreads], NULL, fn,
	    arg), 0);
	f->thread_live[f->nthreads] = 1;
	return f->nthreads++;
}

/* Join a thread whose waits are all bounded. */
static void
fix_join(struct fix *f, int i)
{
	if (f->thread_live[i]) {
		pthread_join(f->threads[i], NULL);
		f->thread_live[i] = 0;
	}
}

static pid_t
fix_fork(struct fix *f)
{
	pid_t pid;

	assert_true(f->nkids < FIX_MAX);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The child must not outlive the test program; and it has
		 * no watchdog of its own. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			_exit(120);
		alarm(TEST_WAIT_MS / 1000 * 3);
		return 0;
	}
	f->kids[f->nkids++] = pid;
	return pid;
}

static int
fix_reap(struct fix *f, pid_t pid)
{
	for (int i = 0; i < f->nkids; i++)
		if (f->kids[i] == pid)
			f->kids[i] = 0;
	return test_child_reap(pid, TEST_WAIT_MS);
}

/* The broker's standard output and error, read until it exits: a
 * hostile client makes it log a line per violation, and a pipe nobody
 * reads would stop it at its first 64 KiB (see the report in
 * doc/reliability.md).  Lines are counted; all but its "info" and
 * "debug" lines (warnings, errors, sanitizer reports) are passed on to
 * our standard error. */
struct drain {
	int fds[2];
	atomic_ulong lines;
	char line[2][1024];
	size_t len[2];
};

static void
drain_line(struct drain *d, int i)
{
	const char *l = d->line[i];

	atomic_fetch_add(&d->lines, 1);
	if (strncmp(l, "ipcd: info: ", 12) != 0 &&
	    strncmp(l, "ipcd: debug: ", 13) != 0)
		fprintf(stderr, "[ipcd] %.*s\n", (int)d->len[i], l);
	d->len[i] = 0;
}

static void *
drain_run(void *arg)
{
	struct drain *d = arg;
	char buf[4096];
	int open_fds = 2;

	while (open_fds > 0) {
		struct pollfd pf[2] = {
			{ .fd = d->fds[0], .events = POLLIN },
			{ .fd = d->fds[1], .events = POLLIN },
		};
		int r = poll(pf, 2, 1000);

		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;	/* its end comes as an EOF */
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (d->fds[i] < 0 || pf[i].revents == 0)
				continue;
			n = read(d->fds[i], buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				if (d->len[i] > 0)
					drain_line(d, i);
				close(d->fds[i]);
				d->fds[i] = -1;
				open_fds--;
				continue;
			}
			for (ssize_t k = 0; k < n; k++) {
				if (buf[k] == '\n' ||
				    d->len[i] == sizeof(d->line[i])) {
					drain_line(d, i);
					if (buf[k] == '\n')
						continue;
				}
				d->line[i][d->len[i]++] = buf[k];
			}
		}
	}
	for (int i = 0; i < 2; i++)
		if (d->fds[i] >= 0)
			close(d->fds[i]);
	return NULL;
}

/* Start the broker, and a thread that reads what it writes. */
static struct drain *
broker_up(struct fix *f, const char *const *opts)
{
	struct drain *d = fix_alloc(f, sizeof(*d));

	broker_start(&f->b, opts);
	d->fds[0] = fcntl(f->b.proc.out, F_DUPFD_CLOEXEC, 0);
	d->fds[1] = fcntl(f->b.proc.err, F_DUPFD_CLOEXEC, 0);
	assert_true(d->fds[0] >= 0 && d->fds[1] >= 0);
	fix_thread(f, drain_run, d);
	return d;
}

/* --- measuring ----------------------------------------------------------- */

static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A "Key:   N kB" line of /proc/PID/status, in KiB; -1 if none. */
static long
proc_status_kib(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	long v = -1;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtol(line + klen + 1, NULL, 10);
			break;
		}
	fclose(fp);
	return v;
}

static long
broker_rss(const struct fix *f)
{
	long v = proc_status_kib(f->b.proc.pid, "VmRSS");

	if (v < 0)
		fail_msg("/proc/%ld/status: no VmRSS", (long)f->b.proc.pid);
	return v;
}

/* The descriptors process pid has open, or -1. */
static int
fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int
broker_fds(const struct fix *f)
{
	int n = fd_count(f->b.proc.pid);

	if (n < 0)
		fail_msg("/proc/%ld/fd: %s", (long)f->b.proc.pid,
		    strerror(errno));
	return n;
}

/* Look (one round trip each) until the broker holds want descriptors. */
static void
broker_fds_wait(struct fix *f, struct ipc_conn *w, int want,
    const char *what)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	int n;

	for (;;) {
		if ((n = broker_fds(f)) == want)
			return;
		if (test_now_ms() > deadline)
			break;
		(void)broker_counter(w, "connections");
	}
	fail_msg("%s: the broker holds %d descriptors, expected %d", what, n,
	    want);
}

/* Look until the broker has want connections. */
static void
connections_wait(struct ipc_conn *w, uint64_t want, const char *what)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	uint64_t n;

	do
		if ((n = broker_counter(w, "connections")) == want)
			return;
	while (test_now_ms() < deadline);
	fail_msg("%s: the broker has %llu connections, expected %llu", what,
	    (unsigned long long)n, (unsigned long long)want);
}

/* --- mailboxes ----------------------------------------------------------- */

static void
box_create(struct ipc_conn *c, const char *name, int64_t capacity,
    int64_t max_bytes, int mode)
{
	struct ipc_mbox_attr attr;

	ipc_mbox_attr_init(&attr);
	attr.capacity = capacity;
	attr.max_bytes = max_bytes;
	attr.mode = mode;
	attr.exclusive = 1;
	if (ipc_mbox_create(c, name, &attr, NULL) < 0)
		fail_msg("create %s: %s", name, strerror(errno));
}

static struct ipc_mbox_info
box_stat(struct ipc_conn *c, const char *box)
{
	struct ipc_mbox_info info;

	if (ipc_mbox_stat(c, box, &info) < 0)
		fail_msg("stat %s: %s", box, strerror(errno));
	return info;
}

/* A well-behaved client gets a message through: send #seq, take it. */
static void
good_round(struct ipc_conn *g, const char *box, uint64_t seq)
{
	struct seqmsg m = seq_make(7, seq), got;
	ssize_t n;

	if (ipc_send_timed(g, box, &m, sizeof(m), TEST_WAIT_MS, NULL) < 0)
		fail_msg("good client: send to %s: %s", box, strerror(errno));
	memset(&got, 0, sizeof(got));
	n = ipc_recv_timed(g, box, &got, sizeof(got), TEST_WAIT_MS, NULL);
	if (n != (ssize_t)sizeof(got) || !seq_valid(&got) ||
	    got.producer != 7 || got.seq != seq)
		fail_msg("good client: recv from %s: %zd (%s)", box, n,
		    n < 0 ? strerror(errno) : "not its message");
}

/* --- raw connections ------------------------------------------------------ */

/* Input of a raw connection: frames are decoded from here, borrowing
 * it until the next read. */
#define RAW_IN (64u << 10)

struct raw {
	int fd;
	size_t off, len, used;
	uint8_t in[RAW_IN];
};

/* A non-blocking connection to the broker at path; -1 with errno.
 * Thread-safe. */
static int
raw_connect(const char *path)
{
	int fd = connectSocketUnix(path);

	if (fd < 0)
		return -1;
	if (nonblockSocket(fd, 1) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
raw_reset(struct raw *r, int fd)
{
	r->fd = fd;
	r->off = r->len = r->used = 0;
}

/* Write all n bytes within timeout_ms.  0, or -errno (-ETIMEDOUT). */
static int
raw_write(int fd, const void *buf, size_t n, int timeout_ms)
{
	long long deadline = test_now_ms() + timeout_ms;
	size_t off = 0;

	while (off < n) {
		ssize_t w = send(fd, (const char *)buf + off, n - off,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		long long left;

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			return w == 0 ? -EIO : -errno;
		if ((left = deadline - test_now_ms()) <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

/* Write n bytes (n >= 1) with ancillary data (level, type: data, dlen
 * bytes) on the first of them.  0 or -errno. */
static int
raw_write_cmsg(int fd, const void *buf, size_t n, int type,
    const void *data, size_t dlen, int timeout_ms)
{
	long long deadline = test_now_ms() + timeout_ms;
	size_t space = CMSG_SPACE(dlen);
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	char *ctl = calloc(1, space);
	ssize_t w;

	if (ctl == NULL)
		return -ENOMEM;
	m.msg_control = ctl;
	m.msg_controllen = space;
	cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = type;
	cm->cmsg_len = CMSG_LEN(dlen);
	memcpy(CMSG_DATA(cm), data, dlen);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		long long left;

		w = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0)
			break;
		if (w < 0 && errno == EINTR)
			continue;
		if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			int err = w == 0 ? EIO : errno;

			free(ctl);
			return -err;
		}
		if ((left = deadline - test_now_ms()) <= 0) {
			free(ctl);
			return -ETIMEDOUT;
		}
		poll(&p, 1, (int)left);
	}
	free(ctl);
	return (size_t)w < n ? raw_write(fd, (const char *)buf + w,
	    n - (size_t)w, timeout_ms) : 0;
}

static int
raw_write_fds(int fd, const void *buf, size_t n, const int *fds, int nfds)
{
	return raw_write_cmsg(fd, buf, n, SCM_RIGHTS, fds,
	    (size_t)nfds * sizeof(int), TEST_WAIT_MS);
}

/* The next frame within timeout_ms, decoded into fr (borrowing r->in
 * until the next call): 1; 0 when the broker closed (EOF or a reset)
 * with no frame begun; -1 on a timeout; -2 on a frame that does not
 * decode, or a close in the middle of one. */
static int
raw_next(struct raw *r, struct wire_frame *fr, int timeout_ms)
{
	long long deadline = test_now_ms() + timeout_ms;

	r->off += r->used;
	r->used = 0;
	for (;;) {
		size_t have = r->len - r->off;
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		long long left;
		ssize_t n;

		if (have >= WIRE_HDR_LEN) {
			uint32_t flen = wire_get32(r->in + r->off);

			if (flen < WIRE_HDR_LEN || flen > RAW_IN)
				return -2;
			if (have >= flen) {
				if (wire_decode(r->in + r->off, flen, fr,
				    NULL) < 0)
					return -2;
				r->used = flen;
				return 1;
			}
		}
		if (r->off > 0) {
			memmove(r->in, r->in + r->off, have);
			r->len = have;
			r->off = 0;
		}
		n = recv(r->fd, r->in + r->len, RAW_IN - r->len,
		    MSG_DONTWAIT);
		if (n > 0) {
			r->len += (size_t)n;
			continue;
		}
		if (n == 0 || errno == ECONNRESET)
			return have == 0 ? 0 : -2;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -2;
		if ((left = deadline - test_now_ms()) <= 0)
			return -1;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return -2;
	}
}

static const char *
raw_next_why(int r)
{
	return r == 0 ? "the broker closed" : r == -1 ? "nothing came in time" :
	    "a frame that does not decode";
}

/* Encode fr and write it.  0 or -errno.  Thread-safe. */
static int
raw_put(int fd, const struct wire_frame *fr)
{
	uint8_t buf[4096];
	long n = wire_encode(fr, buf, sizeof(buf));

	if (n <= 0)
		return -EINVAL;
	return raw_write(fd, buf, (size_t)n, TEST_WAIT_MS);
}

static struct wire_frame
hello_frame(uint64_t id)
{
	struct wire_frame fr = { .type = WIRE_HELLO, .id = id };

	fr.b.hello.magic = WIRE_MAGIC;
	fr.b.hello.version_min = WIRE_VERSION;
	fr.b.hello.version_max = WIRE_VERSION;
	return fr;
}

/* HELLO, and its WELCOME into *w (may be NULL).  NULL, or what went
 * wrong.  Thread-safe. */
static const char *
raw_hello_try(struct raw *r, struct wire_welcome *w)
{
	struct wire_frame fr = hello_frame(1);
	int n;

	if (raw_put(r->fd, &fr) < 0)
		return "HELLO not written";
	if ((n = raw_next(r, &fr, TEST_WAIT_MS)) != 1)
		return raw_next_why(n);
	if (fr.type != WIRE_WELCOME || fr.id != 1)
		return "HELLO not answered with WELCOME";
	if (w != NULL)
		*w = fr.b.welcome;
	return NULL;
}

/* The next frame is ERROR code for request id (aux into *aux, may be
 * NULL): NULL, or what came instead in why.  Thread-safe. */
static const char *
raw_error_try(struct raw *r, uint32_t code, uint64_t id, int timeout_ms,
    uint32_t *aux, char *why, size_t size)
{
	struct wire_frame fr;
	int n = raw_next(r, &fr, timeout_ms);

	if (n != 1)
		snprintf(why, size, "expected ERROR %u for #%llu: %s", code,
		    (unsigned long long)id, raw_next_why(n));
	else if (fr.type != WIRE_ERROR)
		snprintf(why, size, "expected ERROR %u for #%llu, got %s",
		    code, (unsigned long long)id, wire_type_name(fr.type));
	else if (fr.b.error.code != code || fr.id != id)
		snprintf(why, size, "expected ERROR %u for #%llu, got ERROR "
		    "%u for #%llu (%.*s)", code, (unsigned long long)id,
		    fr.b.error.code, (unsigned long long)fr.id,
		    (int)fr.b.error.text.len,
		    (const char *)fr.b.error.text.p);
	else {
		if (aux != NULL)
			*aux = fr.b.error.aux;
		return NULL;
	}
	return why;
}

/* The broker closes r, with nothing more before: NULL, or why not. */
static const char *
raw_closed_try(struct raw *r, int timeout_ms, char *why, size_t size)
{
	struct wire_frame fr;
	int n = raw_next(r, &fr, timeout_ms);

	if (n == 0)
		return NULL;
	if (n == 1)
		snprintf(why, size, "expected a close, got %s (#%llu)",
		    wire_type_name(fr.type), (unsigned long long)fr.id);
	else
		snprintf(why, size, "expected a close: %s", raw_next_why(n));
	return why;
}

/* The same for the test's own thread: failing the test. */
static int
raw_open(struct fix *f, struct raw *r)
{
	int fd = raw_connect(f->b.path);

	if (fd < 0)
		fail_msg("connect %s: %s", f->b.path, strerror(errno));
	raw_reset(r, fix_fd(f, fd));
	return fd;
}

static void
raw_hello(struct raw *r)
{
	const char *why = raw_hello_try(r, NULL);

	if (why != NULL)
		fail_msg("HELLO: %s", why);
}

static void
raw_send(int fd, const void *buf, size_t n)
{
	int r = raw_write(fd, buf, n, TEST_WAIT_MS);

	if (r < 0)
		fail_msg("write %zu bytes: %s", n, strerror(-r));
}

static void
raw_frame(int fd, const struct wire_frame *fr)
{
	int r = raw_put(fd, fr);

	if (r < 0)
		fail_msg("write %s: %s", wire_type_name(fr->type),
		    strerror(-r));
}

static uint32_t
raw_expect_error(struct raw *r, uint32_t code, uint64_t id)
{
	char why[512];
	uint32_t aux = 0;

	if (raw_error_try(r, code, id, TEST_WAIT_MS, &aux, why,
	    sizeof(why)) != NULL)
		fail_msg("%s", why);
	return aux;
}

static void
raw_expect_frame(struct raw *r, uint16_t type, uint64_t id,
    struct wire_frame *fr)
{
	int n = raw_next(r, fr, TEST_WAIT_MS);

	if (n != 1)
		fail_msg("expected %s for #%llu: %s", wire_type_name(type),
		    (unsigned long long)id, raw_next_why(n));
	if (fr->type == WIRE_ERROR && type != WIRE_ERROR)
		fail_msg("expected %s for #%llu, got ERROR %u (%.*s)",
		    wire_type_name(type), (unsigned long long)id,
		    fr->b.error.code, (int)fr->b.error.text.len,
		    (const char *)fr->b.error.text.p);
	if (fr->type != type || fr->id != id)
		fail_msg("expected %s for #%llu, got %s for #%llu",
		    wire_type_name(type), (unsigned long long)id,
		    wire_type_name(fr->type), (unsigned long long)fr->id);
}

static void
raw_expect_closed(struct raw *r)
{
	char why[512];

	if (raw_closed_try(r, TEST_WAIT_MS, why, sizeof(why)) != NULL)
		fail_msg("%s", why);
}

/* The connection is still served: a request for a mailbox that is not
 * there is answered NOENT. */
static void
raw_probe(struct raw *r, uint64_t id)
{
	struct wire_frame fr = { .type = WIRE_MBOX_STAT, .id = id };

	fr.b.name.name = wire_str("no-such-box");
	raw_frame(r->fd, &fr);
	raw_expect_error(r, WIRE_E_NOENT, id);
}

/* A bare 16-byte header. */
static void
put_header(uint8_t *p, uint32_t len, uint16_t type, uint16_t flags,
    uint64_t id)
{
	wire_put32(p, len);
	wire_put16(p + 4, type);
	wire_put16(p + 6, flags);
	wire_put64(p + 8, id);
}

static size_t
encode(const struct wire_frame *fr, uint8_t *buf, size_t cap)
{
	long n = wire_encode(fr, buf, cap);

	if (n <= 0)
		fail_msg("cannot encode a %s frame", wire_type_name(fr->type));
	return (size_t)n;
}

static uint64_t
env_count(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long n;

	if (v == NULL || *v == '\0')
		return dflt;
	n = strtoull(v, &end, 10);
	if (*end != '\0' || n == 0)
		fail_msg("%s=%s: not a positive number", name, v);
	return n;
}

/* === 1. the length table ================================================= */

enum lt_kind {
	LK_HDR,			/* a bare header of length arg (SEND) */
	LK_SEND_FULL,		/* a whole SEND of length arg */
	LK_PARTIAL,		/* a SEND declared arg long, 100 bytes sent */
	LK_PARTIAL_MAX,		/* a SEND declared max_frame, 64 KiB sent */
	LK_TRUNC_HDR,		/* 10 bytes of a header */
	LK_HELLO_VER,		/* HELLO for versions 2-5 */
	LK_HELLO_REV,		/* HELLO for versions 1-0 */
	LK_HELLO_MAGIC,		/* HELLO with a bad magic */
	LK_HELLO_LONG,		/* HELLO one byte too long */
	LK_TYPE,		/* a bare header of type arg */
	LK_LIST_BODY,		/* MBOX_LIST with a 4-byte body */
	LK_SEND_SHORT,		/* SEND with 8 bytes of body */
	LK_FLAGS,		/* MBOX_LIST with header flags 1 */
	LK_ACK_ODD,		/* ACK of 12 bytes */
	LK_STR_PAST,		/* MBOX_STAT whose name runs past the end */
};

enum lt_out {
	LT_CLOSED,		/* ERROR, then closed */
	LT_OPEN,		/* ERROR, the connection goes on */
	LT_TIMEDOUT,		/* ERROR TIMEDOUT at the handshake timeout */
	LT_HELD,		/* nothing: the broker waits for the rest */
};

/* Lengths relative to the broker's frame limit. */
#define LT_MAX(d)	((1LL << 40) + (d))

struct lt_case {
	const char *name;
	int first;		/* instead of HELLO (a HELLO kind: is it) */
	enum lt_kind kind;
	int64_t arg;
	enum lt_out out;
	uint32_t code;		/* the ERROR's; LT_HELD: when completed */
	int frame_id;		/* ERROR with the frame's id, not 0 */
};

static const struct lt_case lt_cases[] = {
	{ "len 0", 0, LK_HDR, 0, LT_CLOSED, WIRE_E_PROTO, 0 },
	{ "len 1", 0, LK_HDR, 1, LT_CLOSED, WIRE_E_PROTO, 0 },
	{ "len 15 (header - 1)", 0, LK_HDR, 15, LT_CLOSED, WIRE_E_PROTO, 0 },
	{ "len max_frame - 1 (whole SEND)", 0, LK_SEND_FULL, LT_MAX(-1),
	    LT_OPEN, WIRE_E_MSGSIZE, 1 },
	{ "len max_frame (whole SEND)", 0, LK_SEND_FULL, LT_MAX(0),
	    LT_OPEN, WIRE_E_MSGSIZE, 1 },
	{ "len max_frame + 1", 0, LK_HDR, LT_MAX(1), LT_CLOSED,
	    WIRE_E_MSGSIZE, 0 },
	{ "len 2^31", 0, LK_HDR, 0x80000000LL, LT_CLOSED, WIRE_E_MSGSIZE, 0 },
	{ "len 2^32 - 1", 0, LK_HDR, 0xffffffffLL, LT_CLOSED,
	    WIRE_E_MSGSIZE, 0 },
	{ "len 0, first frame", 1, LK_HDR, 0, LT_CLOSED, WIRE_E_PROTO, 0 },
	{ "len 2^32 - 1, first frame", 1, LK_HDR, 0xffffffffLL, LT_CLOSED,
	    WIRE_E_MSGSIZE, 0 },
	{ "HELLO for versions 2-5", 1, LK_HELLO_VER, 0, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "HELLO for versions 1-0", 1, LK_HELLO_REV, 0, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "HELLO with a bad magic", 1, LK_HELLO_MAGIC, 0, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "HELLO of 25 bytes", 1, LK_HELLO_LONG, 0, LT_CLOSED, WIRE_E_PROTO,
	    1 },
	{ "unknown type 0x07", 0, LK_TYPE, 0x07, LT_CLOSED, WIRE_E_PROTO, 1 },
	{ "unknown type 0xffff", 0, LK_TYPE, 0xffff, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "unknown type 0x07, first frame", 1, LK_TYPE, 0x07, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "MBOX_LIST with a 4-byte body", 0, LK_LIST_BODY, 0, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "SEND with an 8-byte body", 0, LK_SEND_SHORT, 0, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "header flags 0x0001", 0, LK_FLAGS, 0, LT_CLOSED, WIRE_E_PROTO, 1 },
	{ "ACK of 12 bytes", 0, LK_ACK_ODD, 0, LT_CLOSED, WIRE_E_PROTO, 1 },
	{ "MBOX_STAT name past the frame", 0, LK_STR_PAST, 0, LT_CLOSED,
	    WIRE_E_PROTO, 1 },
	{ "declared 4096, 100 sent, silence", 0, LK_PARTIAL, 4096, LT_HELD,
	    WIRE_E_NOENT, 1 },
	{ "declared max_frame, 64 KiB sent, silence", 0, LK_PARTIAL_MAX, 0,
	    LT_HELD, WIRE_E_MSGSIZE, 1 },
	{ "truncated header (10 bytes), silence", 0, LK_TRUNC_HDR, 0,
	    LT_HELD, WIRE_E_NOENT, 1 },
	{ "declared 1000, 100 sent, silence, first frame", 1, LK_PARTIAL,
	    1000, LT_TIMEDOUT, WIRE_E_TIMEDOUT, 0 },
	{ "truncated header (10 bytes), silence, first frame", 1,
	    LK_TRUNC_HDR, 0, LT_TIMEDOUT, WIRE_E_TIMEDOUT, 0 },
};
#define LT_NCASES (sizeof(lt_cases) / sizeof(lt_cases[0]))

/* A SEND to dest of exactly len bytes (len >= 28 + strlen(dest)), its
 * payload zeros. */
static size_t
lt_send_of(uint8_t *buf, size_t cap, uint64_t id, const char *dest,
    size_t len)
{
	size_t dl = strlen(dest);

	assert_true(len >= WIRE_HDR_LEN + 10 + dl && len <= cap);
	put_header(buf, (uint32_t)len, WIRE_SEND, 0, id);
	wire_put32(buf + 16, 0);		/* timeout: never wait */
	wire_put32(buf + 20, 0);		/* flags */
	wire_put16(buf + 24, (uint16_t)dl);
	memcpy(buf + 26, dest, dl);
	memset(buf + 26 + dl, 0, len - 26 - dl);
	return len;
}

/* The bytes case c sends first (in buf); *whole: the whole frame's
 * length, for the kinds sent in part. */
static size_t
lt_bytes(const struct lt_case *c, uint32_t max_frame, uint64_t id,
    uint8_t *buf, size_t cap, size_t *whole)
{
	struct wire_frame fr = { .id = id };
	size_t n;

	*whole = 0;
	switch (c->kind) {
	case LK_HDR: {
		int64_t len = c->arg >= LT_MAX(-16) ? (int64_t)max_frame +
		    (c->arg - LT_MAX(0)) : c->arg;

		put_header(buf, (uint32_t)len, WIRE_SEND, 0, id);
		return WIRE_HDR_LEN;
	}
	case LK_SEND_FULL:
		return lt_send_of(buf, cap, id, "lt", (size_t)((int64_t)
		    max_frame + (c->arg - LT_MAX(0))));
	case LK_PARTIAL:
		*whole = lt_send_of(buf, cap, id, "lt-none", (size_t)c->arg);
		return 100;
	case LK_PARTIAL_MAX:
		*whole = lt_send_of(buf, cap, id, "lt", max_frame);
		return 64u << 10;
	case LK_TRUNC_HDR:
		fr.type = WIRE_MBOX_STAT;
		fr.b.name.name = wire_str("lt-none");
		*whole = encode(&fr, buf, cap);
		return 10;
	case LK_HELLO_VER:
	case LK_HELLO_REV:
	case LK_HELLO_MAGIC:
	case LK_HELLO_LONG:
		fr = hello_frame(id);
		if (c->kind == LK_HELLO_VER) {
			fr.b.hello.version_min = 2;
			fr.b.hello.version_max = 5;
		} else if (c->kind == LK_HELLO_REV) {
			fr.b.hello.version_min = 1;
			fr.b.hello.version_max = 0;
		} else if (c->kind == LK_HELLO_MAGIC) {
			fr.b.hello.magic = 0x31435048u;
		}
		n = encode(&fr, buf, cap);
		if (c->kind == LK_HELLO_LONG) {
			buf[n++] = 0;
			wire_put32(buf, (uint32_t)n);
		}
		return n;
	case LK_TYPE:
		put_header(buf, WIRE_HDR_LEN, (uint16_t)c->arg, 0, id);
		return WIRE_HDR_LEN;
	case LK_LIST_BODY:
		put_header(buf, WIRE_HDR_LEN + 4, WIRE_MBOX_LIST, 0, id);
		memset(buf + WIRE_HDR_LEN, 0, 4);
		return WIRE_HDR_LEN + 4;
	case LK_SEND_SHORT:
		put_header(buf, WIRE_HDR_LEN + 8, WIRE_SEND, 0, id);
		memset(buf + WIRE_HDR_LEN, 0, 8);
		return WIRE_HDR_LEN + 8;
	case LK_FLAGS:
		put_header(buf, WIRE_HDR_LEN, WIRE_MBOX_LIST, 1, id);
		return WIRE_HDR_LEN;
	case LK_ACK_ODD:
		put_header(buf, WIRE_HDR_LEN + 12, WIRE_ACK, 0, id);
		memset(buf + WIRE_HDR_LEN, 0, 12);
		return WIRE_HDR_LEN + 12;
	case LK_STR_PAST:
		put_header(buf, WIRE_HDR_LEN + 7, WIRE_MBOX_STAT, 0, id);
		wire_put16(buf + 16, 200);
		memcpy(buf + 18, "abcde", 5);
		return WIRE_HDR_LEN + 7;
	}
	fail_msg("unknown case kind");
	return 0;
}

struct lt_stat {
	long long worst_err_us;		/* last byte written -> ERROR */
	long long worst_close_us;	/* last byte written -> EOF */
	long long sum_err_us;
	unsigned runs;
};

/* One run of a case answered at once (LT_CLOSED, LT_OPEN). */
static void
lt_run_fast(struct fix *f, struct raw *r, const struct lt_case *c,
    uint8_t *big, size_t cap, uint32_t max_frame, uint32_t max_payload,
    uint64_t id, struct lt_stat *st)
{
	size_t whole, n;
	long long t0, t1, t2 = 0;
	uint32_t aux = 0;
	char why[512];

	raw_open(f, r);
	if (!c->first)
		raw_hello(r);
	n = lt_bytes(c, max_frame, id, big, cap, &whole);
	raw_send(r->fd, big, n);
	t0 = now_us();
	if (raw_error_try(r, c->code, c->frame_id ? id : 0, TEST_WAIT_MS,
	    &aux, why, sizeof(why)) != NULL)
		fail_msg("\"%s\": %s", c->name, why);
	t1 = now_us();
	if (c->out == LT_CLOSED) {
		if (raw_closed_try(r, TEST_WAIT_MS, why, sizeof(why)) != NULL)
			fail_msg("\"%s\": %s", c->name, why);
		t2 = now_us();
	} else {
		/* A SEND over max_payload in a frame within the limit:
		 * aux is max_payload, and the connection goes on. */
		assert_int_equal(aux, max_payload);
		raw_probe(r, id + 1);
	}
	fix_fd_close(f, r->fd);
	if (t1 - t0 > st->worst_err_us)
		st->worst_err_us = t1 - t0;
	if (t2 - t0 > st->worst_close_us)
		st->worst_close_us = t2 - t0;
	st->sum_err_us += t1 - t0;
	st->runs++;
}

struct lt_pending {
	int fd;
	const struct lt_case *c;
	long long t0;
	size_t sent, whole;
	uint64_t id;
};

/* Start a case the broker can only time out or hold. */
static void
lt_start_stall(struct fix *f, struct raw *r, const struct lt_case *c,
    uint8_t *buf, size_t cap, uint32_t max_frame, uint64_t id,
    struct lt_pending *p)
{
	raw_open(f, r);
	if (!c->first)
		raw_hello(r);
	p->sent = lt_bytes(c, max_frame, id, buf, cap, &p->whole);
	raw_send(r->fd, buf, p->sent);
	p->t0 = now_us();
	p->fd = r->fd;
	p->c = c;
	p->id = id;
}

/* A timed-out first frame: ERROR TIMEDOUT with id 0, then closed.
 * Returns the microseconds from its last byte to the ERROR. */
static long long
lt_finish_timedout(struct fix *f, struct raw *r, struct lt_pending *p)
{
	char why[512];
	long long t;

	raw_reset(r, p->fd);
	if (raw_error_try(r, WIRE_E_TIMEDOUT, 0, TEST_WAIT_MS, NULL, why,
	    sizeof(why)) != NULL)
		fail_msg("\"%s\": %s", p->c->name, why);
	t = now_us() - p->t0;
	if (raw_closed_try(r, TEST_WAIT_MS, why, sizeof(why)) != NULL)
		fail_msg("\"%s\": %s", p->c->name, why);
	fix_fd_close(f, p->fd);
	p->fd = -1;
	return t;
}

/*
 * Every entry of the length table on a connection of its own: those the
 * broker can answer at once get their ERROR (and, unless only an
 * argument was wrong, the close) within 100 ms of their last byte; a
 * frame begun and left unfinished as the first frame is closed at the
 * handshake timeout with ERROR TIMEDOUT; one left unfinished after the
 * handshake is held (the broker has no idle timeout) and answered when
 * it is completed.  Then the table 100 times more: the broker's RSS
 * must not grow by 1 MiB over them (the first run is the warm-up: one
 * 8 MiB frame leaves glibc's heap some 8 MiB larger for good, see
 * doc/reliability.md), and a good client still works.
 */
static void
test_length_table_error_or_close_in_100ms_rss_flat(void **state)
{
	struct fix *f = *state;
	static const char *const opts[] = { "--handshake-timeout",
	    "300", NULL };
	const uint32_t max_payload = WIRE_PAYLOAD_DEFAULT;
	const uint32_t max_frame = max_payload + WIRE_OVERHEAD_MAX;
	const size_t cap = (size_t)max_frame + 64;
	struct lt_stat *st = fix_alloc(f, LT_NCASES * sizeof(*st));
	const unsigned runs = (unsigned)env_count("HOSTILE_LT_RUNS", LT_RUNS);
	struct lt_pending *pend = fix_alloc(f, (runs + 1) * LT_NCASES *
	    sizeof(*pend));
	struct raw *r = fix_alloc(f, sizeof(*r));
	uint8_t *big = fix_alloc(f, cap);
	struct lt_pending held[LT_NCASES];
	unsigned npend = 0, nheld = 0, ntimedout = 0;
	struct ipc_conn *g;
	long rss0, rss1, rss2, vm0, vm_held;
	long long worst = 0, worst_close = 0, hold_until, t_start;
	long long best_timedout = LLONG_MAX, t_runs;
	const char *worst_name = "";
	uint64_t id = 100, gseq = 0;
	struct wire_frame fr;

	(void)broker_up(f, opts);
	g = fix_open(f);
	box_create(g, "lt", -1, -1, -1);
	good_round(g, "lt", gseq++);
	rss0 = broker_rss(f);
	vm0 = proc_status_kib(f->b.proc.pid, "VmSize");

	/* --- once, each outcome looked at closely --- */
	t_start = now_us();
	for (size_t i = 0; i < LT_NCASES; i++) {
		const struct lt_case *c = &lt_cases[i];

		if (c->out == LT_HELD)
			lt_start_stall(f, r, c, big, cap, max_frame, id,
			    &held[nheld++]);
		else if (c->out == LT_TIMEDOUT)
			lt_start_stall(f, r, c, big, cap, max_frame, id,
			    &pend[npend++]);
		id += 10;
	}
	/* The held ones hold what they sent; the 8 MiB frame begun has
	 * its buffer (VmSize shows its address space). */
	vm_held = proc_status_kib(f->b.proc.pid, "VmSize");
	for (size_t i = 0; i < LT_NCASES; i++) {
		const struct lt_case *c = &lt_cases[i];

		if (c->out == LT_CLOSED || c->out == LT_OPEN)
			lt_run_fast(f, r, c, big, cap, max_frame, max_payload,
			    id, &st[i]);
		id += 10;
	}
	for (unsigned i = 0; i < npend; i++) {
		long long t = lt_finish_timedout(f, r, &pend[i]);

		print_message("figure: length table: \"%s\": ERROR TIMEDOUT "
		    "and closed %.1f ms after its last byte (--handshake-"
		    "timeout %d)\n", pend[i].c->name, t / 1000.0, LT_HS_MS);
		if (t < (LT_HS_MS - 50) * 1000LL)
			fail_msg("\"%s\": timed out after %.1f ms, before the "
			    "handshake timeout of %d ms", pend[i].c->name,
			    t / 1000.0, LT_HS_MS);
	}
	npend = 0;
	/* Held: nothing at all from the broker for twice the handshake
	 * timeout (it has none after the handshake). */
	hold_until = t_start + (2 * LT_HS_MS + 200) * 1000LL;
	for (;;) {
		struct pollfd pf[LT_NCASES];
		long long left = (hold_until - now_us()) / 1000;
		int n;

		for (unsigned i = 0; i < nheld; i++)
			pf[i] = (struct pollfd){ .fd = held[i].fd,
			    .events = POLLIN };
		if (left <= 0)
			break;
		n = poll(pf, nheld, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n >= 0);
		for (unsigned i = 0; n > 0 && i < nheld; i++)
			if (pf[i].revents) {
				raw_reset(r, held[i].fd);
				n = raw_next(r, &fr, 0);
				fail_msg("\"%s\": the broker %s after %.1f ms; "
				    "it should hold a frame in part",
				    held[i].c->name, n == 1 ? "answered" :
				    "closed", (now_us() - held[i].t0) / 1000.0);
			}
	}
	/* Completed, each is answered as any frame. */
	for (unsigned i = 0; i < nheld; i++) {
		struct lt_pending *p = &held[i];

		raw_reset(r, p->fd);
		(void)lt_bytes(p->c, max_frame, p->id, big, cap, &p->whole);
		raw_send(p->fd, big + p->sent, p->whole - p->sent);
		raw_expect_error(r, p->c->code, p->id);
		raw_probe(r, p->id + 1);
		print_message("figure: length table: \"%s\": held for %.0f "
		    "ms with no answer and no close; answered when "
		    "completed\n", p->c->name,
		    (hold_until - p->t0) / 1000.0);
		fix_fd_close(f, p->fd);
	}
	print_message("figure: length table: a SEND declared max_frame "
	    "(%u bytes) with 64 KiB sent grows the broker's VmSize by %ld "
	    "KiB while held\n", max_frame, vm_held - vm0);
	good_round(g, "lt", gseq++);
	connections_wait(g, 1, "after the first table");
	rss1 = broker_rss(f);

	/* --- 100 times more, for the RSS --- */
	t_runs = now_us();
	for (unsigned run = 0; run < runs; run++) {
		nheld = 0;
		for (size_t i = 0; i < LT_NCASES; i++) {
			const struct lt_case *c = &lt_cases[i];

			if (c->out == LT_TIMEDOUT)
				lt_start_stall(f, r, c, big, cap, max_frame,
				    id, &pend[npend++]);
			else if (c->out == LT_HELD)
				lt_start_stall(f, r, c, big, cap, max_frame,
				    id, &held[nheld++]);
			else
				lt_run_fast(f, r, c, big, cap, max_frame,
				    max_payload, id, &st[i]);
			id += 10;
		}
		/* The held ones: given up by the client (the broker
		 * frees what they held). */
		for (unsigned i = 0; i < nheld; i++)
			fix_fd_close(f, held[i].fd);
	}
	t_runs = now_us() - t_runs;
	for (unsigned i = 0; i < npend; i++) {
		long long t = lt_finish_timedout(f, r, &pend[i]);

		ntimedout++;
		if (t < best_timedout)
			best_timedout = t;
	}
	good_round(g, "lt", gseq++);
	connections_wait(g, 1, "after 100 tables");
	rss2 = broker_rss(f);

	for (size_t i = 0; i < LT_NCASES; i++) {
		const struct lt_case *c = &lt_cases[i];

		if (c->out != LT_CLOSED && c->out != LT_OPEN)
			continue;
		assert_int_equal(st[i].runs, runs + 1);
		print_message("figure: length table: \"%s\": ERROR %u%s; "
		    "worst %.2f ms, mean %.3f ms to the ERROR, over %u "
		    "runs\n", c->name, c->code, c->out == LT_OPEN ?
		    ", connection kept" : " and closed",
		    st[i].worst_err_us / 1000.0,
		    st[i].sum_err_us / 1000.0 / st[i].runs, st[i].runs);
		if (c->out == LT_CLOSED)
			print_message("figure: length table: \"%s\": worst "
			    "%.2f ms to the close\n", c->name,
			    st[i].worst_close_us / 1000.0);
		if (st[i].worst_err_us > worst) {
			worst = st[i].worst_err_us;
			worst_name = c->name;
		}
		if (st[i].worst_close_us > worst_close)
			worst_close = st[i].worst_close_us;
	}
	print_message("figure: length table: worst ERROR latency %.2f ms "
	    "(\"%s\"), worst close latency %.2f ms, over %u runs of %zu "
	    "cases\n", worst / 1000.0, worst_name, worst_close / 1000.0,
	    runs + 1, LT_NCASES);
	print_message("figure: length table: %u more runs in %.2f s; their "
	    "%u unfinished first frames all closed with ERROR TIMEDOUT, "
	    "none before %.1f ms (handshake timeout %d ms; looked at after "
	    "the runs)\n", runs, t_runs / 1e6, ntimedout,
	    best_timedout / 1000.0, LT_HS_MS);
	print_message("figure: length table: broker VmRSS %ld KiB at "
	    "start, %ld KiB after the first table (%+ld), %ld KiB after "
	    "%u more (%+ld KiB over them)%s\n", rss0, rss1, rss1 - rss0,
	    rss2, runs, rss2 - rss1, UNDER_ASAN ?
	    " [AddressSanitizer: not checked]" : "");
	if (worst > LT_LATENCY_US)
		fail_msg("\"%s\": ERROR after %.2f ms, over %d ms", worst_name,
		    worst / 1000.0, LT_LATENCY_US / 1000);
	if (worst_close > LT_LATENCY_US)
		fail_msg("a close after %.2f ms, over %d ms",
		    worst_close / 1000.0, LT_LATENCY_US / 1000);
	if (!UNDER_ASAN && rss2 - rss1 >= LT_RSS_KIB)
		fail_msg("the broker's RSS grew by %ld KiB over %u runs of "
		    "the table", rss2 - rss1, runs);
	assert_int_equal(box_stat(g, "lt").depth, 0);
	broker_stop(&f->b);
}

/* === 2. the garbage storm ================================================ */

/* Malformed frames, each on a connection of its own: sent as the first
 * frame or after the handshake; the ERROR code, and whether it carries
 * the frame's id.  Those that name a mailbox name the good one. */
struct garbage {
	const char *name;
	int first;
	uint32_t code;
	int frame_id;
};

static const struct garbage garbage_kinds[] = {
	{ "len 0, first frame", 1, WIRE_E_PROTO, 0 },
	{ "SEND to the good mailbox, first frame", 1, WIRE_E_PROTO, 1 },
	{ "HELLO with a bad magic", 1, WIRE_E_PROTO, 1 },
	{ "len 2^31, first frame", 1, WIRE_E_MSGSIZE, 0 },
	{ "LINK_HELLO, first frame", 1, WIRE_E_PROTO, 1 },
	{ "unknown type 0x2f", 0, WIRE_E_PROTO, 1 },
	{ "MBOX_LIST with a body", 0, WIRE_E_PROTO, 1 },
	{ "DELIVER from the client", 0, WIRE_E_PROTO, 1 },
	{ "LINK_SEND to the good mailbox", 0, WIRE_E_PROTO, 1 },
	{ "a second HELLO", 0, WIRE_E_PROTO, 1 },
	{ "ACK of 12 bytes", 0, WIRE_E_PROTO, 1 },
	{ "header flags 0x8000", 0, WIRE_E_PROTO, 1 },
	{ "MBOX_STAT name with a NUL", 0, WIRE_E_PROTO, 1 },
	{ "SEND whose dest runs past the frame", 0, WIRE_E_PROTO, 1 },
	{ "len 2^32 - 1", 0, WIRE_E_MSGSIZE, 0 },
	{ "FAILED from the client", 0, WIRE_E_PROTO, 1 },
};
#define GARBAGE_KINDS (sizeof(garbage_kinds) / sizeof(garbage_kinds[0]))

/* The bytes of garbage kind k with request id, into buf (4096). */
static size_t
garbage_bytes(unsigned k, uint64_t id, const char *box, uint8_t *buf)
{
	struct wire_frame fr = { .id = id };
	struct seqmsg m = seq_make(666, id);
	long n;

	switch (k) {
	case 0:
		put_header(buf, 0, WIRE_SEND, 0, id);
		return WIRE_HDR_LEN;
	case 1:
		fr.type = WIRE_SEND;
		fr.b.send.dest = wire_str(box);
		fr.b.send.payload.p = (const uint8_t *)&m;
		fr.b.send.payload.len = sizeof(m);
		break;
	case 2:
		fr = hello_frame(id);
		fr.b.hello.magic = ~WIRE_MAGIC;
		break;
	case 3:
		put_header(buf, 0x80000000u, WIRE_SEND, 0, id);
		return WIRE_HDR_LEN;
	case 4:
		fr.type = WIRE_LINK_HELLO;
		fr.b.link_hello.magic = WIRE_MAGIC;
		fr.b.link_hello.version_min = WIRE_VERSION;
		fr.b.link_hello.version_max = WIRE_VERSION;
		fr.b.link_hello.epoch = 1;
		fr.b.link_hello.heartbeat_ms = 1000;
		fr.b.link_hello.name = wire_str("evil.example:7400");
		break;
	case 5:
		put_header(buf, WIRE_HDR_LEN, 0x2f, 0, id);
		return WIRE_HDR_LEN;
	case 6:
		put_header(buf, WIRE_HDR_LEN + 8, WIRE_MBOX_LIST, 0, id);
		memset(buf + WIRE_HDR_LEN, 0xa5, 8);
		return WIRE_HDR_LEN + 8;
	case 7:
		fr.type = WIRE_DELIVER;
		fr.b.deliver.msg_id = 1;
		fr.b.deliver.pid = 1;
		fr.b.deliver.sender = wire_str("pid:1");
		fr.b.deliver.source = wire_str(box);
		fr.b.deliver.payload.p = (const uint8_t *)&m;
		fr.b.deliver.payload.len = sizeof(m);
		break;
	case 8:
		fr.type = WIRE_LINK_SEND;
		fr.b.link_send.pid = 1;
		fr.b.link_send.dest = wire_str(box);
		fr.b.link_send.payload.p = (const uint8_t *)&m;
		fr.b.link_send.payload.len = sizeof(m);
		break;
	case 9:
		fr = hello_frame(id);
		break;
	case 10:
		put_header(buf, WIRE_HDR_LEN + 12, WIRE_ACK, 0, id);
		memset(buf + WIRE_HDR_LEN, 0, 12);
		return WIRE_HDR_LEN + 12;
	case 11:
		put_header(buf, WIRE_HDR_LEN, WIRE_MBOX_LIST, 0x8000, id);
		return WIRE_HDR_LEN;
	case 12:
		put_header(buf, WIRE_HDR_LEN + 5, WIRE_MBOX_STAT, 0, id);
		wire_put16(buf + 16, 3);
		memcpy(buf + 18, "a\0b", 3);
		return WIRE_HDR_LEN + 5;
	case 13:
		put_header(buf, WIRE_HDR_LEN + 12, WIRE_SEND, 0, id);
		memset(buf + 16, 0, 8);
		wire_put16(buf + 24, 1000);
		memcpy(buf + 26, "st", 2);
		return WIRE_HDR_LEN + 12;
	case 14:
		put_header(buf, 0xffffffffu, WIRE_SEND, 0, id);
		return WIRE_HDR_LEN;
	default:
		fr.type = WIRE_FAILED;
		fr.b.failed.msg_id = 1;
		fr.b.failed.code = WIRE_E_NOENT;
		break;
	}
	n = wire_encode(&fr, buf, 4096);
	return n > 0 ? (size_t)n : 0;
}

struct storm;

struct storm_client {
	struct storm *s;
	unsigned idx;
	unsigned answered;		/* ERROR, then the close */
	long long worst_us;		/* last byte -> close */
	char why[256];
	struct raw r;
};

struct storm {
	const char *path, *box;
	uint64_t n;
	atomic_int *stop;
	struct ipc_conn *prod, *cons;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t progress;		/* handed to the receiver so far */
	int over;			/* the receiver has finished */
	uint64_t received, fallbacks;
	long long t_done_us;
	char prod_why[256], cons_why[256];
	struct storm_client *cl;
};

/* Wait (bounded) until the receiver has taken at least want. */
static int
storm_wait_progress(struct storm *s, uint64_t want)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	int r = 0;

	pthread_mutex_lock(&s->mu);
	while (s->progress < want && !s->over && !atomic_load(s->stop)) {
		struct timespec ts;

		if (test_now_ms() > deadline) {
			r = -1;
			break;
		}
		/* In slices, so that a teardown is seen. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	return r;
}

static void *
storm_garbage(void *arg)
{
	struct storm_client *cl = arg;
	struct storm *s = cl->s;
	const unsigned per = STORM_FRAMES / STORM_CLIENTS;
	uint8_t buf[4096];

	for (unsigned j = 0; j < per && !atomic_load(s->stop); j++) {
		unsigned k = (cl->idx * per + j) % GARBAGE_KINDS;
		const struct garbage *gk = &garbage_kinds[k];
		uint64_t id = 1000 + j;
		const char *why;
		char w[256];
		size_t n;
		long long t0;
		int fd, r;

		/* Spread over the good run: frame j once j% of the
		 * messages are through. */
		if (storm_wait_progress(s, s->n * j / per) < 0) {
			snprintf(cl->why, sizeof(cl->why), "the receiver "
			    "made no progress for %d ms", TEST_WAIT_MS);
			return NULL;
		}
		if ((fd = raw_connect(s->path)) < 0) {
			snprintf(cl->why, sizeof(cl->why), "connect: %s",
			    strerror(errno));
			return NULL;
		}
		raw_reset(&cl->r, fd);
		why = gk->first ? NULL : raw_hello_try(&cl->r, NULL);
		if (why == NULL) {
			n = garbage_bytes(k, id, s->box, buf);
			if (n == 0)
				why = "cannot encode";
			else if ((r = raw_write(fd, buf, n, TEST_WAIT_MS)) <
			    0)
				why = strerror(-r);
		}
		t0 = now_us();
		if (why == NULL)
			why = raw_error_try(&cl->r, gk->code, gk->frame_id ?
			    id : 0, TEST_WAIT_MS, NULL, w, sizeof(w));
		if (why == NULL)
			why = raw_closed_try(&cl->r, TEST_WAIT_MS, w,
			    sizeof(w));
		close(fd);
		if (why != NULL) {
			snprintf(cl->why, sizeof(cl->why), "\"%s\": %s",
			    gk->name, why);
			return NULL;
		}
		if (now_us() - t0 > cl->worst_us)
			cl->worst_us = now_us() - t0;
		cl->answered++;
	}
	return NULL;
}

static void *
storm_produce(void *arg)
{
	struct storm *s = arg;

	for (uint64_t i = 0; i < s->n && !atomic_load(s->stop); i++) {
		struct seqmsg m = seq_make(0, i);
		int r = ipc_send_more(s->prod, s->box, &m, sizeof(m), NULL);

		if (r < 0 && errno == EAGAIN) {
			/* The library's buffer is full: wait for room. */
			s->fallbacks++;
			r = ipc_send_timed(s->prod, s->box, &m, sizeof(m),
			    TEST_WAIT_MS, NULL);
		}
		if (r < 0) {
			snprintf(s->prod_why, sizeof(s->prod_why),
			    "send #%llu: %s", (unsigned long long)i,
			    strerror(errno));
			return NULL;
		}
	}
	if (ipc_flush(s->prod) < 0)
		snprintf(s->prod_why, sizeof(s->prod_why), "flush: %s",
		    strerror(errno));
	return NULL;
}

static void *
storm_consume(void *arg)
{
	struct storm *s = arg;

	if (ipc_set_prefetch(s->cons, 256) < 0) {
		snprintf(s->cons_why, sizeof(s->cons_why), "prefetch: %s",
		    strerror(errno));
		goto out;
	}
	for (uint64_t i = 0; i < s->n && !atomic_load(s->stop); i++) {
		struct ipc_msg_info info;
		struct seqmsg m;
		ssize_t r;

		memset(&m, 0, sizeof(m));
		r = ipc_recv_timed(s->cons, s->box, &m, sizeof(m),
		    TEST_WAIT_MS, &info);
		if (r != (ssize_t)sizeof(m) || !seq_valid(&m) ||
		    m.producer != 0 || m.seq != i ||
		    (info.flags & IPC_MSG_REDELIVERED)) {
			snprintf(s->cons_why, sizeof(s->cons_why),
			    "expected #%llu, got %s (%zd bytes, producer %u, "
			    "#%llu, flags %u)", (unsigned long long)i,
			    r < 0 ? strerror(errno) : "a message", r,
			    m.producer, (unsigned long long)m.seq,
			    info.flags);
			goto out;
		}
		s->received = i + 1;
		if ((i + 1) % 1000 == 0) {
			pthread_mutex_lock(&s->mu);
			s->progress = i + 1;
			pthread_cond_broadcast(&s->cv);
			pthread_mutex_unlock(&s->mu);
		}
	}
	s->t_done_us = now_us();
out:
	pthread_mutex_lock(&s->mu);
	s->over = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}


/*
 * 100 clients send 10,000 malformed frames in all, each on a connection
 * of its own (the broker closes a connection that breaks the protocol),
 * spread over the time one producer sends $HOSTILE_STORM_MSGS
 * (1,000,000) numbered messages through a mailbox to one receiver with
 * prefetch: the receiver gets every message once, in order; every
 * malformed frame is answered with its ERROR and a close; the garbage
 * that names the good mailbox (a SEND before HELLO, LINK_SEND, DELIVER)
 * puts nothing in it; errors_protocol counts exactly the garbage.
 */
static void
test_garbage_storm_beside_a_million_messages(void **state)
{
	struct fix *f = *state;
	struct storm *s = fix_alloc(f, sizeof(*s));
	int tp, tc, tg[STORM_CLIENTS];
	struct ipc_conn *g;
	struct ipc_send_failure fl;
	uint64_t err0, err1, answered = 0;
	long long t0, worst = 0;
	char why[512] = "";
	struct seqmsg m;

	s->n = env_count("HOSTILE_STORM_MSGS", STORM_MSGS);
	(void)broker_up(f, NULL);
	g = fix_open(f);
	/* Async sends are refused, not held, when the queue is full: let
	 * the whole run fit. */
	box_create(g, "storm", (int64_t)s->n, -1, -1);
	s->path = f->b.path;
	s->box = "storm";
	s->stop = &f->stop;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->prod = fix_open(f);
	s->cons = fix_open(f);
	s->cl = fix_alloc(f, STORM_CLIENTS * sizeof(*s->cl));
	err0 = broker_counter(g, "errors_protocol");

	t0 = now_us();
	tc = fix_thread(f, storm_consume, s);
	for (unsigned i = 0; i < STORM_CLIENTS; i++) {
		s->cl[i].s = s;
		s->cl[i].idx = i;
		tg[i] = fix_thread(f, storm_garbage, &s->cl[i]);
	}
	tp = fix_thread(f, storm_produce, s);
	fix_join(f, tp);
	fix_join(f, tc);
	for (unsigned i = 0; i < STORM_CLIENTS; i++)
		fix_join(f, tg[i]);
	if (s->prod_why[0] != '\0')
		snprintf(why, sizeof(why), "producer: %s", s->prod_why);
	else if (s->cons_why[0] != '\0')
		snprintf(why, sizeof(why), "receiver: %s", s->cons_why);
	for (unsigned i = 0; i < STORM_CLIENTS; i++) {
		answered += s->cl[i].answered;
		if (s->cl[i].worst_us > worst)
			worst = s->cl[i].worst_us;
		if (s->cl[i].why[0] != '\0' && why[0] == '\0')
			snprintf(why, sizeof(why), "garbage client %u: %s", i,
			    s->cl[i].why);
	}
	if (why[0] != '\0')
		fail_msg("%s", why);
	print_message("figure: storm: %llu messages received in order, "
	    "none lost or repeated, in %.2f s (%.0f msg/s; %llu blocking "
	    "fallbacks), beside %llu malformed frames from %u clients\n",
	    (unsigned long long)s->received, (s->t_done_us - t0) / 1e6,
	    s->received / ((s->t_done_us - t0) / 1e6),
	    (unsigned long long)s->fallbacks, (unsigned long long)answered,
	    STORM_CLIENTS);
	print_message("figure: storm: every malformed frame answered with "
	    "its ERROR and closed; worst %.2f ms from its last byte to the "
	    "close\n", worst / 1000.0);
	assert_int_equal(s->received, s->n);
	assert_int_equal(answered, STORM_FRAMES);
	/* Nothing else arrived, and the producer heard of no failure. */
	errno = 0;
	assert_true(ipc_recv_timed(s->cons, "storm", &m, sizeof(m), 0,
	    NULL) < 0);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(box_stat(g, "storm").depth, 0);
	assert_int_equal(box_stat(g, "storm").msgs_in, s->n);
	errno = 0;
	assert_int_equal(ipc_send_failure(s->prod, &fl), -1);
	assert_int_equal(errno, EAGAIN);
	err1 = broker_counter(g, "errors_protocol");
	print_message("figure: storm: errors_protocol +%llu\n",
	    (unsigned long long)(err1 - err0));
	assert_int_equal(err1 - err0, STORM_FRAMES);
	box_create(g, "after", -1, -1, -1);
	good_round(g, "after", 0);
	broker_stop(&f->b);
}

/* === 3. the pre-handshake flood ========================================== */

struct flood {
	const char *path;
	atomic_int *stop;
	int *fds;			/* FLOOD_CONNS, -1 for none */
	long long t_start_us, t_end_us;
	atomic_int done;
	char why[256];
};

/* Connect FLOOD_CONNS times as fast as it goes, writing half a HELLO
 * on each, and keep them all. */
static void *
flood_run(void *arg)
{
	struct flood *fl = arg;
	struct wire_frame fr = hello_frame(1);
	uint8_t hello[64];
	long n = wire_encode(&fr, hello, sizeof(hello));

	fl->t_start_us = now_us();
	for (int i = 0; i < FLOOD_CONNS && !atomic_load(fl->stop); i++) {
		struct timeval tv = { TEST_WAIT_MS / 1000, 0 };
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int r;

		if (fd < 0) {
			snprintf(fl->why, sizeof(fl->why), "socket #%d: %s",
			    i, strerror(errno));
			break;
		}
		fl->fds[i] = fd;
		/* A blocking connect waits while the backlog is full:
		 * bounded. */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fl->path);
		do
			r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		while (r < 0 && errno == EINTR);
		if (r < 0) {
			snprintf(fl->why, sizeof(fl->why), "connect #%d: %s",
			    i, strerror(errno));
			break;
		}
		if (nonblockSocket(fd, 1) < 0 ||
		    raw_write(fd, hello, (size_t)n / 2, TEST_WAIT_MS) < 0) {
			snprintf(fl->why, sizeof(fl->why), "half a HELLO on "
			    "#%d: %s", i, strerror(errno));
			break;
		}
	}
	fl->t_end_us = now_us();
	atomic_store(&fl->done, 1);
	return NULL;
}

struct hs_sample {
	uint64_t handshaking, evicted;
	int found;
};

static int
hs_cb(const char *name, uint64_t value, void *arg)
{
	struct hs_sample *hs = arg;

	if (strcmp(name, "handshaking") == 0) {
		hs->handshaking = value;
		hs->found |= 1;
	} else if (strcmp(name, "handshakes_evicted") == 0) {
		hs->evicted = value;
		hs->found |= 2;
	}
	return 0;
}

/*
 * 1,000 connections that each send half a HELLO and stop, as fast as
 * they connect, against ipcd --max-handshakes 64 --handshake-timeout
 * 500 (--max-connections 256, so that without the bound the flood would
 * lock everyone out): at every sample the broker holds at most 64
 * connections that have not finished their handshake ("handshaking" in
 * COUNTERS); a legitimate client connects and does a round trip
 * (COUNTERS) throughout, never refused, and its worst connect + round
 * trip is measured; once the flood stops, handshaking is back to 0
 * within the timeout plus slack, and the broker has closed every flood
 * connection.
 */
static void
test_prehandshake_flood_bounded_legit_client_gets_in(void **state)
{
	struct fix *f = *state;
	static const char *const opts[] = { "--max-handshakes", "64",
	    "--handshake-timeout", "500", "--max-connections", "256", NULL };
	struct flood *fl = fix_alloc(f, sizeof(*fl));
	struct raw *r = fix_alloc(f, sizeof(*r));
	struct hs_sample hs0 = { 0 };
	struct rlimit rl;
	struct ipc_conn *g;
	uint64_t max_hs = 0, samples = 0, evicted = 0;
	long long worst = 0, sum = 0, zero_at = -1, deadline;
	int tf, refused = 0, closed = 0, timedout = 0;
	char first_refusal[128] = "";

	/* The flood's connections, and ours. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < FLOOD_CONNS + 200) {
		if (rl.rlim_max < FLOOD_CONNS + 200)
			skip();
		rl.rlim_cur = rl.rlim_max;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	(void)broker_up(f, opts);
	g = fix_open(f);
	if (ipc_counters(g, hs_cb, &hs0) < 0)
		fail_msg("ipc_counters: %s", strerror(errno));
	if (hs0.found != 3)
		fail_msg("COUNTERS has no %s", (hs0.found & 1) ?
		    "handshakes_evicted" : "handshaking");
	assert_int_equal(hs0.handshaking, 0);

	fl->path = f->b.path;
	fl->stop = &f->stop;
	fl->fds = fix_alloc(f, FLOOD_CONNS * sizeof(int));
	for (int i = 0; i < FLOOD_CONNS; i++)
		fl->fds[i] = -1;
	f->fdarr = fl->fds;
	f->nfdarr = FLOOD_CONNS;
	tf = fix_thread(f, flood_run, fl);

	/* The legitimate client, over and over: connect, COUNTERS, close;
	 * until the flood is over and no handshake is left. */
	deadline = test_now_ms() + TEST_WAIT_MS;
	for (;;) {
		struct hs_sample hs = { 0 };
		long long t0 = now_us(), t;
		struct ipc_conn *c = ipc_open(f->b.where);
		int done = atomic_load(&fl->done);

		if (c == NULL) {
			if (refused++ == 0)
				snprintf(first_refusal, sizeof(first_refusal),
				    "%s", strerror(errno));
		} else {
			int rr = ipc_counters(c, hs_cb, &hs);

			ipc_close(c);
			if (rr < 0) {
				if (refused++ == 0)
					snprintf(first_refusal,
					    sizeof(first_refusal),
					    "COUNTERS: %s", strerror(errno));
			} else {
				t = now_us() - t0;
				sum += t;
				samples++;
				if (t > worst)
					worst = t;
				if (hs.handshaking > max_hs)
					max_hs = hs.handshaking;
				evicted = hs.evicted - hs0.evicted;
				if (done && hs.handshaking == 0) {
					zero_at = now_us();
					break;
				}
			}
		}
		if (test_now_ms() > deadline)
			break;
	}
	fix_join(f, tf);
	if (fl->why[0] != '\0')
		fail_msg("flood: %s", fl->why);
	/* Every flood connection was closed by the broker (evicted, or
	 * timed out with ERROR TIMEDOUT). */
	for (int i = 0; i < FLOOD_CONNS; i++) {
		struct wire_frame fr;
		int n;

		raw_reset(r, fl->fds[i]);
		while ((n = raw_next(r, &fr, TEST_WAIT_MS)) == 1)
			if (fr.type == WIRE_ERROR &&
			    fr.b.error.code == WIRE_E_TIMEDOUT)
				timedout++;
		if (n == 0)
			closed++;
		close(fl->fds[i]);
		fl->fds[i] = -1;
	}
	print_message("figure: flood: %d connections with half a HELLO in "
	    "%.1f ms; at most %llu handshaking at any of %llu samples "
	    "(--max-handshakes %d); handshakes_evicted +%llu; %d closed "
	    "with ERROR TIMEDOUT\n", FLOOD_CONNS,
	    (fl->t_end_us - fl->t_start_us) / 1000.0,
	    (unsigned long long)max_hs, (unsigned long long)samples,
	    FLOOD_MAX_HS, (unsigned long long)evicted, timedout);
	print_message("figure: flood: legitimate client: %llu connect + "
	    "round trips, worst %.2f ms, mean %.2f ms, %d refused%s%s\n",
	    (unsigned long long)samples, worst / 1000.0,
	    samples ? sum / 1000.0 / samples : 0.0, refused,
	    refused ? ", first: " : "", first_refusal);
	if (zero_at >= 0)
		print_message("figure: flood: handshaking back to 0 %.1f ms "
		    "after the flood stopped (--handshake-timeout %d)\n",
		    (zero_at - fl->t_end_us) / 1000.0, FLOOD_HS_MS);
	if (zero_at < 0)
		fail_msg("handshaking never came back to 0");
	if (refused > 0)
		fail_msg("the legitimate client was refused %d times (first: "
		    "%s)", refused, first_refusal);
	if (max_hs > FLOOD_MAX_HS)
		fail_msg("%llu connections handshaking at once, over %d",
		    (unsigned long long)max_hs, FLOOD_MAX_HS);
	if (zero_at - fl->t_end_us > (FLOOD_HS_MS + FLOOD_SLACK_MS) * 1000LL)
		fail_msg("handshaking back to 0 only %.1f ms after the flood",
		    (zero_at - fl->t_end_us) / 1000.0);
	if (worst > FLOOD_HS_MS * 1000LL)
		fail_msg("the legitimate client took %.1f ms", worst / 1000.0);
	assert_int_equal(closed, FLOOD_CONNS);
	/* A flood faster than the timeout: all but the last 64 were
	 * evicted, not timed out. */
	if (fl->t_end_us - fl->t_start_us < FLOOD_HS_MS * 1000LL)
		assert_true(evicted >= FLOOD_CONNS - FLOOD_MAX_HS);
	assert_true(evicted <= FLOOD_CONNS);
	connections_wait(g, 1, "after the flood");
	broker_stop(&f->b);
}

/* === 4. sender spoofing ================================================== */

/* Is there a way to dir for other users (every directory above it
 * searchable by others)? */
static int
reachable_by_others(const char *dir)
{
	char path[PATH_MAX], *slash;
	struct stat st;

	snprintf(path, sizeof(path), "%s", dir);
	while ((slash = strrchr(path, '/')) != NULL) {
		if (slash == path)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (stat(path, &st) < 0 || !(st.st_mode & S_IXOTH))
			return 0;
		if (slash == path)
			break;
	}
	return 1;
}

/* Tags of the spoofer's messages (seqmsg.producer). */
enum {
	TAG_PLAIN = 0xa1,	/* an honest SEND */
	TAG_LINK = 0xa2,	/* in a LINK_SEND: never delivered */
	TAG_SMUGGLED = 0xa3,	/* a DELIVER frame as a SEND's payload */
	TAG_LIBRARY = 0xa4,	/* through libipc */
	TAG_CREDS = 0xa5,	/* with SCM_CREDENTIALS of another */
};

/* The child's steps, as another user.  Each line it writes is "ok
 * STEP" or "FAIL STEP: why"; it exits 0 when every step went. */
static int
spoof_child(const char *path, const char *where, int out)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct wire_frame fr;
	struct wire_welcome w;
	uint8_t buf[4096], smug[256];
	struct seqmsg m;
	struct ipc_conn *c;
	const char *why;
	char wb[512];
	size_t n;
	int fd, bad = 0;

#define STEP_OK(s)	dprintf(out, "ok %s\n", s)
#define STEP_FAIL(s, ...) do {						\
	dprintf(out, "FAIL %s: ", s);					\
	dprintf(out, __VA_ARGS__);					\
	dprintf(out, "\n");						\
	bad = 1;							\
} while (0)

	if (r == NULL)
		return 2;
	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 ||
	    setuid(NOBODY) < 0 || getuid() != NOBODY) {
		dprintf(out, "FAIL setuid: %s\n", strerror(errno));
		return 1;
	}
	/* (a) HELLO with a pid, uid and gid appended. */
	if ((fd = raw_connect(path)) < 0) {
		dprintf(out, "FAIL connect: %s\n", strerror(errno));
		return 1;
	}
	raw_reset(r, fd);
	fr = hello_frame(5);
	n = (size_t)wire_encode(&fr, buf, sizeof(buf));
	wire_put32(buf + n, 1);
	wire_put32(buf + n + 4, 0);
	wire_put32(buf + n + 8, 0);
	n += 12;
	wire_put32(buf, (uint32_t)n);
	if (raw_write(fd, buf, n, TEST_WAIT_MS) < 0)
		STEP_FAIL("hello-with-ids", "write: %s", strerror(errno));
	else if ((why = raw_error_try(r, WIRE_E_PROTO, 5, TEST_WAIT_MS, NULL,
	    wb, sizeof(wb))) != NULL ||
	    (why = raw_closed_try(r, TEST_WAIT_MS, wb, sizeof(wb))) != NULL)
		STEP_FAIL("hello-with-ids", "%s", why);
	else
		STEP_OK("hello-with-ids");
	close(fd);

	/* (b) LINK_HELLO as the first frame: a broker's, on the UNIX
	 * socket. */
	if ((fd = raw_connect(path)) < 0)
		return 1;
	raw_reset(r, fd);
	fr = (struct wire_frame){ .type = WIRE_LINK_HELLO, .id = 6 };
	fr.b.link_hello.magic = WIRE_MAGIC;
	fr.b.link_hello.version_min = fr.b.link_hello.version_max = 1;
	fr.b.link_hello.name = wire_str("root.example:7400");
	if (raw_put(fd, &fr) < 0)
		STEP_FAIL("link-hello", "write: %s", strerror(errno));
	else if ((why = raw_error_try(r, WIRE_E_PROTO, 6, TEST_WAIT_MS, NULL,
	    wb, sizeof(wb))) != NULL ||
	    (why = raw_closed_try(r, TEST_WAIT_MS, wb, sizeof(wb))) != NULL)
		STEP_FAIL("link-hello", "%s", why);
	else
		STEP_OK("link-hello");
	close(fd);

	/* (c) WELCOME tells the truth; an honest SEND; then a LINK_SEND
	 * claiming pid 1, uid 0, gid 0 to the same mailbox. */
	if ((fd = raw_connect(path)) < 0)
		return 1;
	raw_reset(r, fd);
	if ((why = raw_hello_try(r, &w)) != NULL)
		STEP_FAIL("welcome", "%s", why);
	else if (w.pid != (uint32_t)getpid() || w.uid != NOBODY ||
	    w.gid != NOBODY)
		STEP_FAIL("welcome", "pid %u uid %u gid %u, expected %d %d "
		    "%d", w.pid, w.uid, w.gid, (int)getpid(), NOBODY,
		    NOBODY);
	else
		STEP_OK("welcome");
	m = seq_make(TAG_PLAIN, 1);
	fr = (struct wire_frame){ .type = WIRE_SEND, .id = 7 };
	fr.b.send.timeout_ms = WIRE_FOREVER;
	fr.b.send.dest = wire_str("spoof");
	fr.b.send.payload.p = (const uint8_t *)&m;
	fr.b.send.payload.len = sizeof(m);
	if (raw_put(fd, &fr) < 0 || raw_next(r, &fr, TEST_WAIT_MS) != 1 ||
	    fr.type != WIRE_SENT || fr.id != 7)
		STEP_FAIL("send", "no SENT");
	else
		STEP_OK("send");
	m = seq_make(TAG_LINK, 2);
	fr = (struct wire_frame){ .type = WIRE_LINK_SEND, .id = 8 };
	fr.b.link_send.timeout_ms = WIRE_FOREVER;
	fr.b.link_send.pid = 1;
	fr.b.link_send.uid = 0;
	fr.b.link_send.gid = 0;
	fr.b.link_send.dest = wire_str("spoof");
	fr.b.link_send.payload.p = (const uint8_t *)&m;
	fr.b.link_send.payload.len = sizeof(m);
	if (raw_put(fd, &fr) < 0)
		STEP_FAIL("link-send", "write: %s", strerror(errno));
	else if ((why = raw_error_try(r, WIRE_E_PROTO, 8, TEST_WAIT_MS, NULL,
	    wb, sizeof(wb))) != NULL ||
	    (why = raw_closed_try(r, TEST_WAIT_MS, wb, sizeof(wb))) != NULL)
		STEP_FAIL("link-send", "%s", why);
	else
		STEP_OK("link-send");
	close(fd);

	/* (d) A DELIVER (the broker's frame, which carries a sender) from
	 * the client; (e) a DELIVER claiming pid 1 smuggled in a SEND's
	 * payload: delivered as bytes. */
	if ((fd = raw_connect(path)) < 0)
		return 1;
	raw_reset(r, fd);
	m = seq_make(TAG_SMUGGLED, 3);
	fr = (struct wire_frame){ .type = WIRE_DELIVER, .id = 9 };
	fr.b.deliver.msg_id = 1;
	fr.b.deliver.pid = 1;
	fr.b.deliver.sender = wire_str("pid:1");
	fr.b.deliver.source = wire_str("spoof");
	fr.b.deliver.payload.p = (const uint8_t *)&m;
	fr.b.deliver.payload.len = sizeof(m);
	n = (size_t)wire_encode(&fr, smug, sizeof(smug));
	if ((why = raw_hello_try(r, NULL)) != NULL)
		STEP_FAIL("deliver", "%s", why);
	else if (raw_write(fd, smug, n, TEST_WAIT_MS) < 0)
		STEP_FAIL("deliver", "write: %s", strerror(errno));
	else if ((why = raw_error_try(r, WIRE_E_PROTO, 9, TEST_WAIT_MS, NULL,
	    wb, sizeof(wb))) != NULL ||
	    (why = raw_closed_try(r, TEST_WAIT_MS, wb, sizeof(wb))) != NULL)
		STEP_FAIL("deliver", "%s", why);
	else
		STEP_OK("deliver");
	close(fd);
	if ((fd = raw_connect(path)) < 0)
		return 1;
	raw_reset(r, fd);
	/* The smuggled DELIVER starts with the check words of TAG_SMUGGLED
	 * only at offset 52: put a seqmsg first, then the frame. */
	memmove(smug + sizeof(m), smug, n);
	memcpy(smug, &m, sizeof(m));
	fr = (struct wire_frame){ .type = WIRE_SEND, .id = 10 };
	fr.b.send.timeout_ms = WIRE_FOREVER;
	fr.b.send.dest = wire_str("spoof");
	fr.b.send.payload.p = smug;
	fr.b.send.payload.len = n + sizeof(m);
	if ((why = raw_hello_try(r, NULL)) != NULL)
		STEP_FAIL("smuggled", "%s", why);
	else if (raw_put(fd, &fr) < 0 || raw_next(r, &fr, TEST_WAIT_MS) !=
	    1 || fr.type != WIRE_SENT || fr.id != 10)
		STEP_FAIL("smuggled", "no SENT");
	else
		STEP_OK("smuggled");
	close(fd);

	/* (f) Through the library. */
	m = seq_make(TAG_LIBRARY, 4);
	if ((c = ipc_open(where)) == NULL)
		STEP_FAIL("library", "ipc_open: %s", strerror(errno));
	else if (ipc_send_timed(c, "spoof", &m, sizeof(m), TEST_WAIT_MS,
	    NULL) < 0)
		STEP_FAIL("library", "send: %s", strerror(errno));
	else
		STEP_OK("library");
	ipc_close(c);
	free(r);
#undef STEP_OK
#undef STEP_FAIL
	return bad;
}

/* Receive the next message of "spoof": its tag, and who sent it must be
 * who the kernel says. */
static void
spoof_expect(struct ipc_conn *rc, uint32_t tag, pid_t pid, uid_t uid,
    gid_t gid, void *buf, size_t size, size_t *len)
{
	struct ipc_msg_info info;
	struct seqmsg m;
	char sender[32];
	ssize_t n = ipc_recv_timed(rc, "spoof", buf, size, TEST_WAIT_MS,
	    &info);

	if (n < (ssize_t)sizeof(m))
		fail_msg("expected message %#x: %s", tag, n < 0 ?
		    strerror(errno) : "too short");
	memcpy(&m, buf, sizeof(m));
	if (!seq_valid(&m) || m.producer != tag)
		fail_msg("expected message %#x, got %#x", tag, m.producer);
	snprintf(sender, sizeof(sender), "pid:%ld", (long)pid);
	print_message("figure: spoofing: message %#x: receiver sees pid %ld "
	    "uid %lu gid %lu sender %s (true: pid %ld uid %lu gid %lu)\n",
	    tag, (long)info.pid, (unsigned long)info.uid,
	    (unsigned long)info.gid, info.sender, (long)pid,
	    (unsigned long)uid, (unsigned long)gid);
	assert_int_equal(info.pid, pid);
	assert_int_equal(info.uid, uid);
	assert_int_equal(info.gid, gid);
	assert_string_equal(info.sender, sender);
	*len = (size_t)n;
}

/*
 * Nothing a client writes makes it someone else.  HELLO and SEND have no
 * field for a pid or uid: a HELLO with them appended is refused; the
 * frames that carry a sender (LINK_HELLO and LINK_SEND, which only
 * brokers send over TLS, and DELIVER, which only the broker sends) are
 * protocol errors on the UNIX socket and deliver nothing; a DELIVER
 * smuggled as a SEND's payload arrives as bytes; SCM_CREDENTIALS naming
 * another pid and uid (root may send any) change nothing.  The child
 * runs as uid/gid 65534; the receiver, root, sees the child's true pid,
 * uid, gid and sender address for each message it gets, and never the
 * LINK_SEND's.
 */
static void
test_sender_spoofing_receiver_sees_kernel_credentials(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *rc;
	struct raw *r = fix_alloc(f, sizeof(*r));
	struct wire_frame fr;
	struct ucred forged = { .pid = 1, .uid = NOBODY, .gid = NOBODY };
	struct seqmsg m;
	uint8_t buf[4096], got[4096];
	char line[512];
	const char *steps[] = { "hello-with-ids", "link-hello", "welcome",
	    "send", "link-send", "deliver", "smuggled", "library" };
	size_t n, len;
	int p[2], status;
	pid_t kid;

	if (geteuid() != 0)
		skip();
	(void)broker_up(f, NULL);
	if (chmod(f->b.dir, 0755) < 0 || !reachable_by_others(f->b.dir))
		skip();
	rc = fix_open(f);
	box_create(rc, "spoof", -1, -1, 0622);

	/* Root's own forged credentials first: SCM_CREDENTIALS with pid
	 * 1 and uid 65534 beside a SEND. */
	raw_open(f, r);
	raw_hello(r);
	m = seq_make(TAG_CREDS, 5);
	fr = (struct wire_frame){ .type = WIRE_SEND, .id = 20 };
	fr.b.send.timeout_ms = WIRE_FOREVER;
	fr.b.send.dest = wire_str("spoof");
	fr.b.send.payload.p = (const uint8_t *)&m;
	fr.b.send.payload.len = sizeof(m);
	n = encode(&fr, buf, sizeof(buf));
	if (raw_write_cmsg(r->fd, buf, n, SCM_CREDENTIALS, &forged,
	    sizeof(forged), TEST_WAIT_MS) < 0)
		fail_msg("SCM_CREDENTIALS (pid 1, uid %d): %s", NOBODY,
		    strerror(errno));
	raw_expect_frame(r, WIRE_SENT, 20, &fr);
	fix_fd_close(f, r->fd);
	spoof_expect(rc, TAG_CREDS, getpid(), 0, 0, got, sizeof(got), &len);

	/* The child, as another user. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fix_fd(f, p[0]);
	kid = fix_fork(f);
	if (kid == 0) {
		close(p[0]);
		_exit(spoof_child(f->b.path, f->b.where, p[1]));
	}
	close(p[1]);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		char want[64];

		if (test_read_line(p[0], line, sizeof(line), TEST_WAIT_MS) < 0)
			fail_msg("the child said nothing about %s", steps[i]);
		snprintf(want, sizeof(want), "ok %s", steps[i]);
		if (strcmp(line, want) != 0)
			fail_msg("child: %s", line);
		print_message("figure: spoofing: %s\n", line);
	}
	status = fix_reap(f, kid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	spoof_expect(rc, TAG_PLAIN, kid, NOBODY, NOBODY, got, sizeof(got),
	    &len);
	spoof_expect(rc, TAG_SMUGGLED, kid, NOBODY, NOBODY, got, sizeof(got),
	    &len);
	/* The smuggled frame arrived as the bytes it was. */
	assert_true(len > sizeof(m) + WIRE_HDR_LEN);
	assert_int_equal(wire_get16(got + sizeof(m) + 4), WIRE_DELIVER);
	assert_int_equal(wire_get32(got + sizeof(m) + 32), 1);
	spoof_expect(rc, TAG_LIBRARY, kid, NOBODY, NOBODY, got, sizeof(got),
	    &len);
	/* The LINK_SEND's message never came. */
	errno = 0;
	assert_true(ipc_recv_timed(rc, "spoof", got, sizeof(got), 0,
	    NULL) < 0);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(box_stat(rc, "spoof").msgs_in, 4);
	broker_stop(&f->b);
}

/* === 5. graceful half-close ============================================== */

struct hc_recv {
	struct ipc_conn *c;
	uint64_t got;
	char why[256];
};

static void *
hc_receive(void *arg)
{
	struct hc_recv *h = arg;

	for (uint64_t i = 0; i < HC_SENDS; i++) {
		struct seqmsg m;
		ssize_t n;

		memset(&m, 0, sizeof(m));
		n = ipc_recv_timed(h->c, "hc", &m, sizeof(m), TEST_WAIT_MS,
		    NULL);
		if (n != (ssize_t)sizeof(m) || !seq_valid(&m) ||
		    m.producer != 3 || m.seq != i) {
			snprintf(h->why, sizeof(h->why), "expected #%llu: "
			    "%s (#%llu)", (unsigned long long)i, n < 0 ?
			    strerror(errno) : "another message",
			    (unsigned long long)m.seq);
			return NULL;
		}
		h->got = i + 1;
	}
	return NULL;
}

/*
 * A raw client writes 10,000 SENDs (ids 1001...) to a mailbox that
 * holds all but 50 of them, then shuts its side down (SHUT_WR) and
 * only then reads.  By then the broker holds 16 SENDs waiting for room
 * (and stops reading the rest); a receiver then takes all 10,000: each
 * SEND must be processed (the receiver gets them all, in order) and
 * answered with SENT before the broker closes the connection.
 */
static void
test_half_close_all_sends_processed_and_answered(void **state)
{
	struct fix *f = *state;
	const size_t one = WIRE_HDR_LEN + 10 + 2 + sizeof(struct seqmsg);
	uint8_t *out = fix_alloc(f, HC_SENDS * one);
	uint8_t *seen = fix_alloc(f, HC_SENDS);
	struct raw *r = fix_alloc(f, sizeof(*r));
	struct hc_recv *h = fix_alloc(f, sizeof(*h));
	struct ipc_mbox_info info;
	struct wire_frame fr;
	struct ipc_conn *g;
	long long deadline, t_shut, t_end;
	unsigned sent_ok = 0, other = 0;
	int th, n;

	(void)broker_up(f, NULL);
	g = fix_open(f);
	box_create(g, "hc", HC_SENDS - HC_OVER, -1, -1);
	raw_open(f, r);
	raw_hello(r);
	for (unsigned i = 0; i < HC_SENDS; i++) {
		struct seqmsg m = seq_make(3, i);

		fr = (struct wire_frame){ .type = WIRE_SEND, .id = 1001 + i };
		fr.b.send.timeout_ms = WIRE_FOREVER;
		fr.b.send.dest = wire_str("hc");
		fr.b.send.payload.p = (const uint8_t *)&m;
		fr.b.send.payload.len = sizeof(m);
		assert_int_equal(wire_encode(&fr, out + i * one, one),
		    (long)one);
	}
	raw_send(r->fd, out, HC_SENDS * one);
	assert_int_equal(shutdown(r->fd, SHUT_WR), 0);
	t_shut = now_us();
	/* The broker parks 16 SENDs for room, then stops reading. */
	deadline = test_now_ms() + TEST_WAIT_MS;
	do
		info = box_stat(g, "hc");
	while (info.waiting_senders < 16 && test_now_ms() < deadline);
	print_message("figure: half-close: %u queued and %u SENDs waiting "
	    "for room when the client shut its side\n", info.depth,
	    info.waiting_senders);
	assert_int_equal(info.depth, HC_SENDS - HC_OVER);
	assert_int_equal(info.waiting_senders, 16);

	h->c = fix_open(f);
	th = fix_thread(f, hc_receive, h);
	while ((n = raw_next(r, &fr, TEST_WAIT_MS)) == 1) {
		if (fr.type == WIRE_SENT && fr.id >= 1001 &&
		    fr.id < 1001 + HC_SENDS && !seen[fr.id - 1001]) {
			seen[fr.id - 1001] = 1;
			sent_ok++;
		} else {
			other++;
		}
	}
	t_end = now_us();
	fix_join(f, th);
	print_message("figure: half-close: %u of %d SENDs answered SENT, "
	    "%u other frames, then %s %.1f ms after the shutdown; the "
	    "receiver got %llu of %d in order\n", sent_ok, HC_SENDS, other,
	    n == 0 ? "closed" : raw_next_why(n), (t_end - t_shut) / 1000.0,
	    (unsigned long long)h->got, HC_SENDS);
	if (h->why[0] != '\0')
		fail_msg("receiver: %s", h->why);
	assert_int_equal(n, 0);
	assert_int_equal(other, 0);
	assert_int_equal(sent_ok, HC_SENDS);
	assert_int_equal(h->got, HC_SENDS);
	assert_int_equal(box_stat(g, "hc").depth, 0);
	connections_wait(g, 2, "the half-closed client gone");
	broker_stop(&f->b);
}

/* === 6. the slow consumer ================================================ */

/* Which offer had send id id (ids: n increasing); n if none. */
static uint64_t
seq_of(const uint64_t *ids, uint64_t n, uint64_t id)
{
	uint64_t lo = 0, hi = n;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (ids[mid] == id)
			return mid;
		if (ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return n;
}

/*
 * A receiver opens a stream (prefetch 256) on a mailbox of 1 MiB, and
 * never reads; a producer offers it 1,000,000 messages of 256 bytes
 * with batched async sends, then a non-blocking and a timed send.  The
 * broker (--max-bytes-per-uid 4 MiB) takes what fits and refuses the
 * rest: EAGAIN for each async and the non-blocking send, ETIMEDOUT for
 * the timed one; its RSS stays within the byte limits plus an overhead
 * measured here; every message not refused is then received, in order,
 * and nothing else.
 */
static void
test_slow_consumer_backpressure_bounded_rss_nothing_lost(void **state)
{
	struct fix *f = *state;
	static const char *const opts[] = { "--max-bytes-per-uid", "4194304",
	    NULL };
	uint8_t *refused = fix_alloc(f, SLOW_OFFERS + 2);
	struct ipc_conn *p, *rc, *g;
	struct ipc_send_failure fl;
	uint8_t msg[SLOW_PAYLOAD], got[SLOW_PAYLOAD];
	uint64_t *ids = fix_alloc(f, SLOW_OFFERS * sizeof(*ids));
	uint64_t nref = 0, accepted, in0, full0, tmo0;
	uint64_t expect_seq;
	long rss0, peak, rss_end, allowed;
	long long t0, t_offers, t_drain;
	int eagain_sync, etimedout;

	(void)broker_up(f, opts);
	g = fix_open(f);
	box_create(g, "slow", 100000000, SLOW_BOX_BYTES, -1);
	rc = fix_open(f);
	p = fix_open(f);
	/* The stream is open (and empty): the receiver says no more. */
	assert_int_equal(ipc_set_prefetch(rc, SLOW_PREFETCH), 0);
	errno = 0;
	assert_true(ipc_recv_timed(rc, "slow", got, sizeof(got), 0,
	    NULL) < 0);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(box_stat(g, "slow").waiting_receivers, 1);
	in0 = broker_counter(g, "messages_in");
	full0 = broker_counter(g, "errors_full");
	tmo0 = broker_counter(g, "errors_timeout");
	rss0 = peak = broker_rss(f);

	memset(msg, 0x5a, sizeof(msg));
	t0 = now_us();
	for (uint64_t i = 0; i < SLOW_OFFERS; i++) {
		struct seqmsg m = seq_make(9, i);
		uint64_t id;
		int r;

		memcpy(msg, &m, sizeof(m));
		while ((r = ipc_send_more(p, "slow", msg, sizeof(msg),
		    &id)) < 0 && errno == EAGAIN)
			if (ipc_flush(p) < 0)
				fail_msg("flush: %s", strerror(errno));
		if (r < 0)
			fail_msg("offer #%llu: %s", (unsigned long long)i,
			    strerror(errno));
		if (i > 0 && id <= ids[i - 1])
			fail_msg("send ids not increasing at #%llu",
			    (unsigned long long)i);
		ids[i] = id;
		/* Take the refusals as they come.  The library keeps at
		 * most 4096 reports and drops the oldest past that (see
		 * doc/reliability.md), and may read far more ahead while a
		 * write waits: a round trip every 1024 offers bounds what
		 * can be in flight, so that every refusal is seen. */
		if (i % 1024 == 1023) {
			struct ipc_mbox_info info;

			if (ipc_mbox_stat(p, "slow", &info) < 0)
				fail_msg("stat: %s", strerror(errno));
		}
		if (i % 256 == 255)
			while (ipc_send_failure(p, &fl) == 0) {
				uint64_t s = seq_of(ids, i + 1, fl.send_id);

				if (fl.error != EAGAIN || s > i || refused[s])
					fail_msg("failure of send %llu: %s",
					    (unsigned long long)fl.send_id,
					    strerror(fl.error));
				refused[s] = 1;
				nref++;
			}
		if (i % 8192 == 0) {
			long v = broker_rss(f);

			if (v > peak)
				peak = v;
		}
	}
	if (ipc_flush(p) < 0)
		fail_msg("flush: %s", strerror(errno));
	/* Back-pressure to callers that wait: AGAIN at once, TIMEDOUT
	 * after 100 ms.  Their answers come after every refusal of the
	 * async sends before them. */
	{
		struct seqmsg m = seq_make(9, SLOW_OFFERS);

		memcpy(msg, &m, sizeof(m));
		errno = 0;
		eagain_sync = ipc_send_timed(p, "slow", msg, sizeof(msg), 0,
		    NULL) < 0 && errno == EAGAIN;
		m = seq_make(9, SLOW_OFFERS + 1);
		memcpy(msg, &m, sizeof(m));
		errno = 0;
		etimedout = ipc_send_timed(p, "slow", msg, sizeof(msg), 100,
		    NULL) < 0 && errno == ETIMEDOUT;
	}
	while (ipc_send_failure(p, &fl) == 0) {
		uint64_t s = seq_of(ids, SLOW_OFFERS, fl.send_id);

		if (fl.error != EAGAIN || s >= SLOW_OFFERS || refused[s])
			fail_msg("failure of send %llu: %s",
			    (unsigned long long)fl.send_id, strerror(fl.error));
		refused[s] = 1;
		nref++;
	}
	t_offers = now_us();
	{
		long v = broker_rss(f);

		if (v > peak)
			peak = v;
	}
	accepted = SLOW_OFFERS - nref;
	print_message("figure: slow consumer: %d offers in %.2f s: %llu "
	    "accepted, %llu refused with EAGAIN; a non-blocking send: %s; "
	    "a 100 ms send: %s\n", SLOW_OFFERS, (t_offers - t0) / 1e6,
	    (unsigned long long)accepted, (unsigned long long)nref,
	    eagain_sync ? "EAGAIN" : "not EAGAIN",
	    etimedout ? "ETIMEDOUT" : "not ETIMEDOUT");
	assert_true(eagain_sync);
	assert_true(etimedout);
	assert_true(nref > 0);
	/* Nothing accepted silently or refused twice: the broker counted
	 * what the producer was not told was refused. */
	assert_int_equal(broker_counter(g, "messages_in") - in0, accepted);
	assert_int_equal(broker_counter(g, "errors_full") - full0, nref + 1);
	assert_int_equal(broker_counter(g, "errors_timeout") - tmo0, 1);

	/* Now the receiver reads: every accepted message, in order. */
	expect_seq = 0;
	for (uint64_t k = 0; k < accepted; k++) {
		struct seqmsg m;
		ssize_t n;

		while (expect_seq < SLOW_OFFERS && refused[expect_seq])
			expect_seq++;
		n = ipc_recv_timed(rc, "slow", got, sizeof(got), TEST_WAIT_MS,
		    NULL);
		memcpy(&m, got, sizeof(m));
		if (n != SLOW_PAYLOAD || !seq_valid(&m) || m.producer != 9 ||
		    m.seq != expect_seq)
			fail_msg("receive %llu of %llu: expected #%llu, got "
			    "%s #%llu", (unsigned long long)k,
			    (unsigned long long)accepted,
			    (unsigned long long)expect_seq, n < 0 ?
			    strerror(errno) : "", (unsigned long long)m.seq);
		expect_seq++;
	}
	errno = 0;
	assert_true(ipc_recv_timed(rc, "slow", got, sizeof(got), 0,
	    NULL) < 0);
	assert_int_equal(errno, EAGAIN);
	t_drain = now_us();
	rss_end = broker_rss(f);
	/* What the broker may hold: the mailbox's bytes, the stream's
	 * output bound and its credit, the producer's unread replies
	 * bound, each message's header (the count is bounded by bytes),
	 * and 2 MiB for allocator slack. */
	allowed = (long)(SLOW_BOX_BYTES / 1024 + 256 +
	    SLOW_PREFETCH * SLOW_PAYLOAD / 1024 + 1024 +
	    (accepted * 160) / 1024 + 2048);
	print_message("figure: slow consumer: broker VmRSS %ld KiB before, "
	    "peak %ld KiB (%+ld) while %llu messages (%llu KiB of payload) "
	    "were held against a 1024 KiB mailbox and a 4096 KiB quota, "
	    "%ld KiB after the drain; bound checked %ld KiB%s\n", rss0, peak,
	    peak - rss0, (unsigned long long)accepted,
	    (unsigned long long)(accepted * SLOW_PAYLOAD / 1024), rss_end,
	    allowed, UNDER_ASAN ? " [AddressSanitizer: not checked]" : "");
	print_message("figure: slow consumer: %llu received in order in "
	    "%.1f ms, none refused among them, none missing\n",
	    (unsigned long long)accepted, (t_drain - t_offers) / 1e3);
	if (!UNDER_ASAN && peak - rss0 > allowed)
		fail_msg("the broker's RSS grew by %ld KiB, over %ld",
		    peak - rss0, allowed);
	broker_stop(&f->b);
}

/* === 7. descriptors ====================================================== */

#define MEMFD_SEALED	(F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | \
			    F_SEAL_SEAL)

/* A memfd of len bytes with seals added (0: none); the teardown closes
 * it. */
static int
test_memfd(struct fix *f, size_t len, int seals)
{
	uint8_t chunk[1024];
	int fd = fix_fd(f, memfd_create("test-hostile", MFD_CLOEXEC |
	    MFD_ALLOW_SEALING));

	memset(chunk, 0x42, sizeof(chunk));
	for (size_t off = 0; off < len; off += sizeof(chunk))
		if (write(fd, chunk, len - off < sizeof(chunk) ? len - off :
		    sizeof(chunk)) < 0)
			fail_msg("write memfd: %s", strerror(errno));
	if (seals != 0 && fcntl(fd, F_ADD_SEALS, seals) < 0)
		fail_msg("F_ADD_SEALS: %s", strerror(errno));
	return fd;
}

static struct wire_frame
fd_send_frame(uint64_t id, const char *box)
{
	struct wire_frame fr = { .type = WIRE_SEND, .id = id };

	fr.b.send.timeout_ms = 0;
	fr.b.send.flags = WIRE_SEND_FD;
	fr.b.send.dest = wire_str(box);
	return fr;
}

static struct wire_frame
stat_missing_frame(uint64_t id)
{
	struct wire_frame fr = { .type = WIRE_MBOX_STAT, .id = id };

	fr.b.name.name = wire_str("no-such-box");
	return fr;
}

/* Write frame fr with nfds descriptors (all fd) on its first byte. */
static void
put_with_fds(int sock, const struct wire_frame *fr, const int *fds,
    int nfds)
{
	uint8_t buf[4096];
	size_t n = encode(fr, buf, sizeof(buf));
	int r = raw_write_fds(sock, buf, n, fds, nfds);

	if (r < 0)
		fail_msg("sendmsg with %d descriptors: %s", nfds,
		    strerror(-r));
}

/*
 * More descriptors in one message than the broker takes: 32 (its
 * control buffer's size, past its room of 8), 33 and 253 (SCM_MAX_FD;
 * the kernel cuts them off, MSG_CTRUNC).  Each time the broker closes
 * the connection without an ERROR, counts a protocol error, and holds
 * no more descriptors than before; a good client goes on.  Also
 * descriptors that ride with the HELLO, or with a malformed first
 * frame: back to the baseline once the connection is gone.
 */
static void
test_descriptors_too_many_and_cut_off_leave_nothing(void **state)
{
	struct fix *f = *state;
	static const int counts[] = { 32, 33, FD_SCM_MAX };
	struct raw *r = fix_alloc(f, sizeof(*r));
	int *many = fix_alloc(f, FD_SCM_MAX * sizeof(int));
	struct wire_frame fr;
	struct ipc_conn *g;
	uint64_t err0;
	int base, p[2];
	uint8_t hdr[WIRE_HDR_LEN];

	(void)broker_up(f, NULL);
	g = fix_open(f);
	box_create(g, "fd", -1, -1, -1);
	good_round(g, "fd", 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fix_fd(f, p[0]);
	fix_fd(f, p[1]);
	for (int i = 0; i < FD_SCM_MAX; i++)
		many[i] = p[0];
	base = broker_fds(f);

	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		long long t0;

		err0 = broker_counter(g, "errors_protocol");
		raw_open(f, r);
		raw_hello(r);
		broker_fds_wait(f, g, base + 1, "a raw connection");
		fr = stat_missing_frame(10);
		put_with_fds(r->fd, &fr, many, counts[i]);
		t0 = now_us();
		raw_expect_closed(r);
		print_message("figure: descriptors: %d on one request: "
		    "closed with no ERROR after %.2f ms\n", counts[i],
		    (now_us() - t0) / 1000.0);
		fix_fd_close(f, r->fd);
		broker_fds_wait(f, g, base, "closed");
		assert_int_equal(broker_counter(g, "errors_protocol") - err0, 1);
		print_message("figure: descriptors: %d on one request: "
		    "broker descriptors back to %d (baseline %d), "
		    "errors_protocol +1\n", counts[i], broker_fds(f), base);
		good_round(g, "fd", i + 1);
	}

	/* Eight sealed memfds riding with the HELLO, never claimed: the
	 * broker holds them while the connection lives. */
	raw_open(f, r);
	{
		struct wire_frame h = hello_frame(1);
		int mf[8];

		for (int i = 0; i < 8; i++)
			mf[i] = test_memfd(f, 100, MEMFD_SEALED);
		put_with_fds(r->fd, &h, mf, 8);
		raw_expect_frame(r, WIRE_WELCOME, 1, &fr);
		for (int i = 0; i < 8; i++)
			fix_fd_close(f, mf[i]);
	}
	broker_fds_wait(f, g, base + 1 + 8, "eight with the HELLO");
	fix_fd_close(f, r->fd);
	broker_fds_wait(f, g, base, "eight with the HELLO, closed");
	print_message("figure: descriptors: 8 with the HELLO: held (%d), "
	    "back to %d once closed\n", base + 9, base);

	/* Eight with a malformed first frame: ERROR, close, none kept. */
	raw_open(f, r);
	put_header(hdr, 0, WIRE_SEND, 0, 3);
	if (raw_write_fds(r->fd, hdr, sizeof(hdr), many, 8) < 0)
		fail_msg("sendmsg: %s", strerror(errno));
	raw_expect_error(r, WIRE_E_PROTO, 0);
	raw_expect_closed(r);
	fix_fd_close(f, r->fd);
	broker_fds_wait(f, g, base, "eight with a malformed first frame");
	good_round(g, "fd", 10);
	assert_int_equal(box_stat(g, "fd").depth, 0);
	broker_stop(&f->b);
}

/* One refused memfd SEND: its ERROR INVAL. */
static void
fd_refused(struct raw *r, uint64_t id, int pass, const char *what)
{
	struct wire_frame fr = fd_send_frame(id, "fd");
	char why[512];

	put_with_fds(r->fd, &fr, &pass, 1);
	if (raw_error_try(r, WIRE_E_INVAL, id, TEST_WAIT_MS, NULL, why,
	    sizeof(why)) != NULL)
		fail_msg("%s: %s", what, why);
}

/*
 * Descriptors that are not sealed memfds, of kinds tests/test-stream.c
 * does not try (an O_PATH descriptor of a sealed memfd, a directory, a
 * socket (the connection's own end), an eventfd, an epoll descriptor, a
 * memfd sealed with F_SEAL_FUTURE_WRITE instead of F_SEAL_WRITE), each
 * refused with EINVAL and closed at once; then 3,000 refused in a row
 * (a pipe, a plain file, an unsealed memfd, pipelined 64 at a time):
 * the broker's descriptors stay at the baseline plus the connection's,
 * and come back to the baseline once it closes; nothing was queued.
 */
static void
test_descriptors_not_sealed_memfds_refused_none_kept(void **state)
{
	struct fix *f = *state;
	struct raw *r = fix_alloc(f, sizeof(*r));
	struct ipc_conn *g;
	char path[] = "/tmp/test-hostile-XXXXXX";
	int base, p[2], plain, unsealed, sealed, kinds[3];
	uint64_t id = 100;
	long long t0;

	(void)broker_up(f, NULL);
	g = fix_open(f);
	box_create(g, "fd", -1, -1, -1);
	good_round(g, "fd", 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fix_fd(f, p[0]);
	fix_fd(f, p[1]);
	plain = fix_fd(f, mkstemp(path));
	assert_int_equal(unlink(path), 0);
	assert_int_equal(write(plain, "plain", 5), 5);
	unsealed = test_memfd(f, 1000, 0);
	sealed = test_memfd(f, 1000, MEMFD_SEALED);
	base = broker_fds(f);
	raw_open(f, r);
	raw_hello(r);
	broker_fds_wait(f, g, base + 1, "a raw connection");

	{
		char proc_path[64];
		int fut = test_memfd(f, 1000, 0), opath, dir, ev, ep;

		if (fcntl(fut, F_ADD_SEALS, F_SEAL_FUTURE_WRITE |
		    F_SEAL_SHRINK | F_SEAL_GROW) < 0)
			fail_msg("F_SEAL_FUTURE_WRITE: %s", strerror(errno));
		snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d",
		    sealed);
		opath = fix_fd(f, open(proc_path, O_PATH | O_CLOEXEC));
		dir = fix_fd(f, open("/tmp", O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC));
		ev = fix_fd(f, eventfd(0, EFD_CLOEXEC));
		ep = fix_fd(f, epoll_create1(EPOLL_CLOEXEC));
		fd_refused(r, id++, opath, "an O_PATH descriptor");
		fd_refused(r, id++, dir, "a directory");
		fd_refused(r, id++, r->fd, "the connection's own socket");
		fd_refused(r, id++, ev, "an eventfd");
		fd_refused(r, id++, ep, "an epoll descriptor");
		fd_refused(r, id++, fut, "a memfd sealed with "
		    "F_SEAL_FUTURE_WRITE, not F_SEAL_WRITE");
		broker_fds_wait(f, g, base + 1, "six kinds refused");
		print_message("figure: descriptors: O_PATH, directory, own "
		    "socket, eventfd, epoll, F_SEAL_FUTURE_WRITE memfd: "
		    "each EINVAL; broker descriptors %d (baseline %d + the "
		    "connection)\n", base + 1, base);
		fix_fd_close(f, opath);
		fix_fd_close(f, dir);
		fix_fd_close(f, ev);
		fix_fd_close(f, ep);
		fix_fd_close(f, fut);
	}

	/* The volume run, 64 in flight at a time. */
	kinds[0] = p[0];
	kinds[1] = plain;
	kinds[2] = unsealed;
	t0 = now_us();
	for (unsigned i = 0; i < FD_VOLUME; i += 64) {
		unsigned k = FD_VOLUME - i < 64 ? FD_VOLUME - i : 64;

		for (unsigned j = 0; j < k; j++) {
			struct wire_frame fr = fd_send_frame(id + j, "fd");

			put_with_fds(r->fd, &fr, &kinds[(i + j) % 3], 1);
		}
		for (unsigned j = 0; j < k; j++)
			raw_expect_error(r, WIRE_E_INVAL, id + j);
		id += k;
		if (i % 1024 == 0)
			assert_true(broker_fds(f) <= base + 1 + 8);
	}
	broker_fds_wait(f, g, base + 1, "the volume run");
	print_message("figure: descriptors: %d refused (pipe, plain file, "
	    "unsealed memfd) in %.1f ms, each EINVAL; broker descriptors "
	    "%d after (baseline %d + the connection)\n", FD_VOLUME,
	    (now_us() - t0) / 1000.0, base + 1, base);
	/* The connection goes on: a good memfd is taken. */
	{
		struct wire_frame fr = fd_send_frame(id, "fd");
		uint8_t got[2000];

		put_with_fds(r->fd, &fr, &sealed, 1);
		raw_expect_frame(r, WIRE_SENT, id, &fr);
		broker_fds_wait(f, g, base + 2, "a good memfd queued");
		assert_int_equal(ipc_recv_timed(g, "fd", got, sizeof(got),
		    TEST_WAIT_MS, NULL), 1000);
		broker_fds_wait(f, g, base + 1, "the good memfd acked");
	}
	fix_fd_close(f, r->fd);
	broker_fds_wait(f, g, base, "closed");
	assert_int_equal(box_stat(g, "fd").depth, 0);
	good_round(g, "fd", 1);
	broker_stop(&f->b);
}

/*
 * A process that gives the broker its own end of its connection, with a
 * request that claims no descriptor (and seven pipe ends after it), then
 * exits without closing: the broker holds the client's end, so it never
 * reads an EOF; its pidfd tells it the process is gone, and it must
 * close the connection and everything it held.
 */
static void
test_descriptors_own_socket_held_exit_cleans_up(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *g;
	int base, p[2], q[2], status, held;
	char line[64];
	pid_t kid;
	long long t0;

	(void)broker_up(f, NULL);
	g = fix_open(f);
	base = broker_fds(f);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(pipe2(q, O_CLOEXEC), 0);
	fix_fd(f, p[0]);
	fix_fd(f, q[1]);
	kid = fix_fork(f);
	if (kid == 0) {
		struct raw *r = calloc(1, sizeof(*r));
		struct wire_frame fr = stat_missing_frame(10);
		uint8_t buf[256];
		int fds[8], fd;
		size_t n;
		char w[256];

		close(p[0]);
		if (r == NULL || (fd = raw_connect(f->b.path)) < 0)
			_exit(2);
		raw_reset(r, fd);
		if (raw_hello_try(r, NULL) != NULL)
			_exit(3);
		fds[0] = fd;
		for (int i = 1; i < 8; i++)
			fds[i] = p[1];
		n = (size_t)wire_encode(&fr, buf, sizeof(buf));
		if (raw_write_fds(fd, buf, n, fds, 8) < 0 ||
		    raw_error_try(r, WIRE_E_NOENT, 10, TEST_WAIT_MS, NULL, w,
		    sizeof(w)) != NULL)
			_exit(4);
		dprintf(p[1], "ready\n");
		/* The parent kills it once it has looked; bounded all the
		 * same. */
		(void)test_wait_readable(q[0], 3 * TEST_WAIT_MS);
		_exit(0);
	}
	close(q[0]);
	close(p[1]);
	if (test_read_line(p[0], line, sizeof(line), TEST_WAIT_MS) < 0 ||
	    strcmp(line, "ready") != 0)
		fail_msg("the child did not get its descriptors across");
	/* Held: its connection, its pidfd, and the eight. */
	held = broker_fds(f);
	print_message("figure: descriptors: a live client holding its own "
	    "socket's end in the broker: broker descriptors %d (baseline "
	    "%d)\n", held, base);
	assert_true(held >= base + 1 + 8);
	t0 = now_us();
	kill(kid, SIGKILL);
	status = fix_reap(f, kid);
	assert_true(WIFSIGNALED(status));
	broker_fds_wait(f, g, base, "the process that held its own socket "
	    "exited");
	connections_wait(g, 1, "its connection closed");
	print_message("figure: descriptors: after its exit the broker is "
	    "back to %d descriptors in %.1f ms\n", base,
	    (now_us() - t0) / 1000.0);
	box_create(g, "fd", -1, -1, -1);
	good_round(g, "fd", 0);
	broker_stop(&f->b);
}

/* --- a log nobody reads ---------------------------------------------------- */

/* The broker logs a line per offender.  Its stderr here is a pipe the
 * test never reads: once the pipe is full, a broker that waited on its
 * log would stop serving everyone.  Offenders come and go while a
 * client on another connection must keep getting answers. */
#define UNREAD_OFFENDERS 5000

static void
test_unread_log_never_stops_the_broker(void **state)
{
	struct fix *f = *state;
	struct raw good, bad;
	uint8_t hdr[WIRE_HDR_LEN];
	long long t0, worst = 0;

	broker_start(&f->b, NULL);	/* no reader of its output */
	raw_open(f, &good);
	raw_hello(&good);
	put_header(hdr, 0, WIRE_HELLO, 0, 1);
	t0 = now_us();
	for (int i = 0; i < UNREAD_OFFENDERS; i++) {
		long long t;

		raw_open(f, &bad);
		raw_send(bad.fd, hdr, sizeof(hdr));
		raw_expect_error(&bad, WIRE_E_PROTO, 0);
		raw_expect_closed(&bad);
		fix_fd_close(f, bad.fd);
		if (i % 100 != 0)
			continue;
		t = now_us();
		raw_probe(&good, (uint64_t)i + 2);
		if (now_us() - t > worst)
			worst = now_us() - t;
	}
	print_message("figure: unread log: %d offenders closed in %.0f ms, "
	    "another client answered throughout (slowest %.2f ms)\n",
	    UNREAD_OFFENDERS, (now_us() - t0) / 1000.0, worst / 1000.0);
	broker_stop(&f->b);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_length_table_error_or_close_in_100ms_rss_flat),
		T(test_garbage_storm_beside_a_million_messages),
		T(test_prehandshake_flood_bounded_legit_client_gets_in),
		T(test_sender_spoofing_receiver_sees_kernel_credentials),
		T(test_half_close_all_sends_processed_and_answered),
		T(test_slow_consumer_backpressure_bounded_rss_nothing_lost),
		T(test_descriptors_too_many_and_cut_off_leave_nothing),
		T(test_descriptors_not_sealed_memfds_refused_none_kept),
		T(test_descriptors_own_socket_held_exit_cleans_up),
		T(test_unread_log_never_stops_the_broker),
	};

	test_init(300);
	/* TEST_FILTER=test_slow* runs only the tests that match. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("hostile", tests, NULL, NULL);
}
