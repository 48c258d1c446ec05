/*
 * bench-raw.c - the baselines ipcbench holds the broker against: the same
 * traffic over plain kernel and library mechanisms, with no broker.  See
 * bench.h, and DESIGN.md "Numbers to reach" for what each one is for.
 *
 * Every baseline runs the same way (raw_exec): the parent makes the
 * shared objects (socket pairs, queues, a listening socket), forks the
 * parties (A sends, B receives or echoes, and for raw_relay_* a relay
 * between them), waits on the start gate while they set up, then reaps
 * them under a deadline, killing the rest soon after one fails.  The
 * parent only orchestrates: it carries no traffic and is never pinned.
 *
 * Parties report through one shared anonymous mapping (struct raw_shm):
 * a sentence when they fail, the receiver's clock readings for a
 * throughput, the sender's samples for a round trip.  Every payload's
 * sequence number is checked by whoever receives it.
 */
#include "config.h"

#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef HAVE_ZMQ
#include <zmq.h>
#endif

#include "mysocks.h"
#include "tls.h"

/* Setup (a TLS handshake included) and a measurement may take this
 * long.  Picked, not measured: they bound a hung run, not a slow one;
 * the longest run asked for, 2000 x 1 MiB over TLS, takes about 4 s. */
#define RAW_READY_MS	10000
#define RAW_RUN_MS	60000
/* After one party failed, how long the others may take to finish on
 * their own before they are killed (see raw_reap). */
#define RAW_GRACE_MS	100
/* A stream sender hands the kernel this many bytes of whole messages
 * per write, as a buffered writer would: 1024 messages of 64 B. */
#define RAW_BATCH	65536
/* The relay's buffer, per direction.  It reads only into an empty
 * buffer, so this is also the most it holds for a slow reader. */
#define RAW_RELAY_BUF	(256u << 10)
/* Where no /proc says otherwise: Linux's defaults. */
#define RAW_MQ_MSGSIZE	8192
#define RAW_MQ_MAXMSG	10
#define RAW_MSGMAX	8192
/* The sequence number of the untimed message that proves a ZeroMQ
 * connection is up before the clock starts. */
#define RAW_WARMUP	UINT64_MAX

#define RAW_WHY		256
#define RAW_PARTIES	3
#define RAW_FDS		4

/* What parties write and the parent reads, in a MAP_SHARED mapping. */
struct raw_shm {
	char why[RAW_PARTIES][RAW_WHY];	/* a party's failure, or "" */
	int verdict;			/* 1 + the party that found bad data */
	uint64_t t0, t1;		/* the receiver: go, last message */
	uint64_t done, syncs;		/* raw_fsync_thr: appends synced,
					 * fdatasync calls */
	uint64_t ns[];			/* rtt: one sample per round trip */
};

struct raw_run;
typedef int raw_fn(struct raw_run *, int);

struct raw_party {
	const char *name;
	raw_fn *fn;
	unsigned keep;			/* bit i: fd[i] is this party's */
	struct raw_run *run;
	int me;
};

/*
 * A message transport, for the baselines where the kernel or library
 * keeps message boundaries.  way 0 carries A to B, way 1 B to A.  p has
 * RAW_HEAD writable bytes before it, for a header the transport needs
 * (System V's mtype), so nothing is copied to add one.  send gives 0 or
 * -errno; recv the message's length or -errno.
 */
struct raw_msgops {
	int (*send)(struct raw_run *, int, char *, size_t);
	long (*recv)(struct raw_run *, int, char *, size_t);
};

struct raw_msgbuf {
	long mtype;
	char mtext[1];
};
#define RAW_HEAD	offsetof(struct raw_msgbuf, mtext)

/* One baseline's run.  After fork each party has its own copy, and may
 * keep its own state in it (zsock). */
struct raw_run {
	const struct bench_cfg *cfg;
	struct raw_shm *shm;
	size_t shm_len;
	struct bench_gate gate;
	struct raw_party party[RAW_PARTIES];
	int nparty;
	int fd[RAW_FDS];		/* sockets the parties share out */
	mqd_t mq[2];			/* POSIX queues, unlinked already */
	int msqid;			/* a System V queue to remove */
	const struct raw_msgops *ops;
	int port;			/* TLS: the listener's */
	const char *psk_file;
	char dir[64];			/* ZeroMQ: a temp dir to remove */
	char endpoint[96];
	void *zsock;			/* ZeroMQ: the party's own socket */
	char path[PATH_MAX];		/* raw_fsync_thr: the file */
	unsigned threads, max_ms;	/* raw_fsync_thr */
	int full;
};

/* A byte stream: a socket, or a TLS session on one. */
struct raw_io {
	int fd;
	struct tls *tls;
};

static unsigned raw_serial;	/* makes POSIX queue names unique */

static int
raw_fail(struct raw_run *r, int me, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A party's failure, told to the parent as "NAME: what".  Returns -1. */
static int
raw_fail(struct raw_run *r, int me, const char *fmt, ...)
{
	char *w = r->shm->why[me];
	va_list ap;
	int n;

	n = snprintf(w, RAW_WHY, "%s: ", r->party[me].name);
	if (n < 0 || n >= RAW_WHY)
		n = 0;
	va_start(ap, fmt);
	vsnprintf(w + n, RAW_WHY - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * A failure about the data itself (lost, repeated, extra, wrong size):
 * the cause, where the other parties' failures are only its echo (a
 * reset socket, a closed stream), so raw_exec reports it first.
 */
static void
raw_verdict(struct raw_run *r, int me)
{
	if (r->shm->verdict == 0)
		r->shm->verdict = me + 1;
}

/* The sequence number got where want was due: which one went wrong. */
static int
raw_check(struct raw_run *r, int me, uint64_t got, uint64_t want)
{
	if (got == want)
		return 0;
	raw_verdict(r, me);
	if (got > want)
		return raw_fail(r, me, "message %llu lost (message %llu came "
		    "in its place)", (unsigned long long)want,
		    (unsigned long long)got);
	return raw_fail(r, me, "message %llu repeated or out of order "
	    "(message %llu was due)", (unsigned long long)got,
	    (unsigned long long)want);
}

/* Setup done: say ready and wait for go.  0, or -1 with the party's why. */
static int
raw_go(struct raw_run *r, int me)
{
	int e;

	bench_gate_ready(&r->gate);
	if ((e = bench_gate_wait_go(&r->gate)) < 0)
		return raw_fail(r, me, "no go from the parent: %s",
		    strerror(-e));
	return 0;
}

/* Messages of size bytes per stream write (whole ones, at least one). */
static size_t
raw_per(size_t size)
{
	return size < RAW_BATCH ? RAW_BATCH / size : 1;
}

/* --- the runner ---------------------------------------------------------- */

static int
raw_init(struct raw_run *r, const struct bench_cfg *cfg, int samples,
    char *why, size_t why_size)
{
	int i;

	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	for (i = 0; i < RAW_FDS; i++)
		r->fd[i] = -1;
	r->mq[0] = r->mq[1] = (mqd_t)-1;
	r->msqid = -1;
	r->port = -1;
	if (cfg->size < 8) {
		bench_why(why, why_size, "payload of %zu bytes: no room for the "
		    "8-byte sequence number", cfg->size);
		return -1;
	}
	if (cfg->count == 0) {
		bench_why(why, why_size, "nothing to measure (count 0)");
		return -1;
	}
	r->shm_len = sizeof(*r->shm);
	if (samples) {
		if (cfg->count > (SIZE_MAX - r->shm_len) / sizeof(uint64_t)) {
			bench_why(why, why_size, "%u samples do not fit in "
			    "memory", cfg->count);
			return -1;
		}
		r->shm_len += (size_t)cfg->count * sizeof(uint64_t);
	}
	r->shm = mmap(NULL, r->shm_len, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r->shm == MAP_FAILED) {
		r->shm = NULL;
		bench_why(why, why_size, "mmap of %zu bytes: %s", r->shm_len,
		    strerror(errno));
		return -1;
	}
	return 0;
}

static void
raw_party(struct raw_run *r, const char *name, raw_fn *fn, unsigned keep)
{
	struct raw_party *p = &r->party[r->nparty];

	p->name = name;
	p->fn = fn;
	p->keep = keep;
	p->run = r;
	p->me = r->nparty++;
}

/* Close our copies of what the parties share: once they are forked, an
 * end we keep open would hide the end-of-file they rely on. */
static void
raw_drop(struct raw_run *r)
{
	int i;

	for (i = 0; i < RAW_FDS; i++) {
		if (r->fd[i] >= 0)
			(void)close(r->fd[i]);
		r->fd[i] = -1;
	}
	for (i = 0; i < 2; i++) {
		if (r->mq[i] != (mqd_t)-1)
			(void)mq_close(r->mq[i]);
		r->mq[i] = (mqd_t)-1;
	}
}

/* Undo everything raw_init and the baseline made; safe on a half-built
 * run. */
static void
raw_done(struct raw_run *r)
{
	char path[sizeof(r->dir) + 4];

	raw_drop(r);
	if (r->msqid != -1)
		(void)msgctl(r->msqid, IPC_RMID, NULL);
	r->msqid = -1;
	if (r->dir[0] != '\0') {
		/* ZeroMQ removes its socket file when it unbinds; not when
		 * the party was killed. */
		snprintf(path, sizeof(path), "%s/s", r->dir);
		(void)unlink(path);
		(void)rmdir(r->dir);
		r->dir[0] = '\0';
	}
	if (r->shm != NULL)
		(void)munmap(r->shm, r->shm_len);
	r->shm = NULL;
}

/* In the child: keep only this party's sockets, then run it. */
static int
raw_child(void *arg)
{
	struct raw_party *p = arg;
	struct raw_run *r = p->run;
	int i;

	for (i = 0; i < RAW_FDS; i++) {
		if (r->fd[i] >= 0 && !(p->keep & 1u << i)) {
			(void)close(r->fd[i]);
			r->fd[i] = -1;
		}
	}
	return p->fn(r, p->me);
}

/*
 * Wait for all n parties at once, up to RAW_RUN_MS.  Once one fails the
 * others get RAW_GRACE_MS to finish on their own, then are killed: they
 * may block for ever on a queue it will never serve.  The grace lets a
 * party that crashed be reported rather than its peer that saw the
 * stream end: one killed by a signal is preferred as *first.  Every
 * party is reaped on return.  0 when all exited 0; else -1, *first the
 * failed party (or -1 on a timeout).
 */
static int
raw_reap(struct raw_run *r, const pid_t *pid, int n, int *first,
    char *why, size_t why_size)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)RAW_RUN_MS * 1000000u;
	uint64_t now, until;
	int pfd[RAW_PARTIES], done[RAW_PARTIES], left = n, all = 1, rc = -1;
	int crashed, first_crashed = 0, i;
	char w[RAW_WHY];

	*first = -1;
	for (i = 0; i < n; i++) {
		done[i] = 0;
		pfd[i] = -1;
#ifdef SYS_pidfd_open
		pfd[i] = (int)syscall(SYS_pidfd_open, pid[i], 0);
#endif
		if (pfd[i] < 0)
			all = 0;
	}
	while (left > 0) {
		struct pollfd p[RAW_PARTIES];
		int np = 0, ms;

		for (i = 0; i < n; i++) {
			siginfo_t si;

			if (done[i])
				continue;
			/* WNOWAIT: look, and leave the reaping (and the
			 * account of the status) to bench_wait. */
			memset(&si, 0, sizeof(si));
			if (waitid(P_PID, (id_t)pid[i], &si, WEXITED |
			    WNOHANG | WNOWAIT) == -1) {
				bench_why(why, why_size, "waitid %d: %s",
				    (int)pid[i], strerror(errno));
				goto out;
			}
			if (si.si_pid == 0)
				continue;
			done[i] = 1;
			left--;
			crashed = si.si_code == CLD_KILLED ||
			    si.si_code == CLD_DUMPED;
			if (bench_wait(pid[i], 0, w, sizeof(w)) == 0)
				continue;
			if (*first < 0) {
				/* The grace starts with the first failure. */
				deadline = bench_now_ns() +
				    (uint64_t)RAW_GRACE_MS * 1000000u;
			}
			if (*first < 0 || (crashed && !first_crashed)) {
				*first = i;
				first_crashed = crashed;
				bench_why(why, why_size, "%s: %s",
				    r->party[i].name, w);
			}
		}
		if (left == 0)
			break;
		if ((now = bench_now_ns()) >= deadline) {
			char names[RAW_PARTIES * 8] = "";

			if (*first >= 0)
				goto out;
			for (i = 0; i < n; i++)
				if (!done[i])
					snprintf(names + strlen(names),
					    sizeof(names) - strlen(names),
					    "%s%s", names[0] ? ", " : "",
					    r->party[i].name);
			bench_why(why, why_size, "%s still running after %d s: "
			    "killed", names, RAW_RUN_MS / 1000);
			goto out;
		}
		until = deadline;
		if (!all && until - now > 10 * 1000000u)
			until = now + 10 * 1000000u;
		ms = (int)((until - now + 999999) / 1000000);
		for (i = 0; i < n; i++) {
			if (!done[i] && pfd[i] >= 0) {
				p[np].fd = pfd[i];
				p[np].events = POLLIN;
				p[np].revents = 0;
				np++;
			}
		}
		/* An error here (EINTR, or ENOMEM) only means we look again
		 * at the top; the deadline still holds. */
		(void)poll(p, (nfds_t)np, ms);
	}
	if (*first < 0)
		rc = 0;
out:
	for (i = 0; i < n; i++) {
		if (!done[i])
			(void)bench_wait(pid[i], 0, NULL, 0);
		if (pfd[i] >= 0)
			(void)close(pfd[i]);
	}
	return rc;
}

/*
 * Run the parties of r: fork them, open the gate once all have set up,
 * reap them.  0 when every party exited 0.  Otherwise -1, and why says,
 * in this order of preference: what a party found wrong with the data;
 * a crash; the failed party's own account, which says more than its
 * exit status; its exit status.  For a timeout or a failed setup with
 * no crash, any party's account, else how the first one died.
 */
static int
raw_exec(struct raw_run *r, char *why, size_t why_size)
{
	pid_t pid[RAW_PARTIES];
	int i, e, n = 0, first = -1, rc = -1, told = 0;
	char w[RAW_WHY];

	if ((e = bench_gate_init(&r->gate)) < 0) {
		bench_why(why, why_size, "pipe: %s", strerror(-e));
		return -1;
	}
	for (i = 0; i < r->nparty; i++) {
		if ((pid[i] = bench_fork(r->cfg, raw_child,
		    &r->party[i])) < 0) {
			bench_why(why, why_size, "fork: %s",
			    strerror((int)-pid[i]));
			goto out;
		}
		n++;
	}
	raw_drop(r);
	if ((e = bench_gate_open(&r->gate, (unsigned)n, RAW_READY_MS)) < 0) {
		if (e == -ETIMEDOUT)
			bench_why(why, why_size, "not all set up after %d s",
			    RAW_READY_MS / 1000);
		else if (e == -EPIPE)
			bench_why(why, why_size, "a party died setting up");
		else
			bench_why(why, why_size, "start gate: %s",
			    strerror(-e));
		goto out;
	}
	rc = raw_reap(r, pid, n, &first, why, why_size);
	n = 0;
out:
	/* Setup failed: kill and reap the parties, and say how the first
	 * one that died by itself died (a failed placement exits 2
	 * without an account of its own).  One that crashed is the cause
	 * even when its peer has an account of the consequence. */
	for (i = 0; i < n; i++) {
		siginfo_t si;
		int dead, crashed;

		memset(&si, 0, sizeof(si));
		dead = waitid(P_PID, (id_t)pid[i], &si, WEXITED | WNOHANG |
		    WNOWAIT) == 0 && si.si_pid != 0;
		crashed = dead && (si.si_code == CLD_KILLED ||
		    si.si_code == CLD_DUMPED);
		if (bench_wait(pid[i], 0, w, sizeof(w)) == 0 || !dead)
			continue;
		/* told: 1 for a death, 2 for a crash; the first of the
		 * worst kind wins. */
		if (told > crashed)
			continue;
		bench_why(why, why_size, "%s: %s", r->party[i].name, w);
		told = 1 + crashed;
		if (crashed)
			first = i;
	}
	bench_gate_close(&r->gate);
	if (rc < 0) {
		if (r->shm->verdict > 0)
			first = r->shm->verdict - 1;
		else if (first < 0)
			for (first = 0; first < r->nparty &&
			    r->shm->why[first][0] == '\0'; first++)
				;
		if (first < r->nparty && r->shm->why[first][0] != '\0')
			bench_why(why, why_size, "%s", r->shm->why[first]);
	}
	return rc;
}

/* --- byte streams -------------------------------------------------------- */

/* Wait for events on fd, up to RAW_RUN_MS.  0, or -errno. */
static int
raw_io_poll(int fd, int events)
{
	struct pollfd p = { .fd = fd, .events = (short)events };
	int n;

	while ((n = poll(&p, 1, RAW_RUN_MS)) == -1 && errno == EINTR)
		;
	if (n == -1)
		return -errno;
	return n == 0 ? -ETIMEDOUT : 0;
}

/* Bytes read (> 0), 0 at end-of-file, or -errno. */
static long
raw_io_read(struct raw_io *io, void *buf, size_t len)
{
	ssize_t n;
	int want = POLLIN, e;

	if (io->tls == NULL) {
		while ((n = recv(io->fd, buf, len, 0)) == -1 &&
		    errno == EINTR)
			;
		return n == -1 ? -errno : (long)n;
	}
	for (;;) {
		if ((n = tls_read(io->tls, buf, len, &want)) >= 0)
			return (long)n;
		if (errno != EAGAIN)
			return -errno;
		if ((e = raw_io_poll(io->fd, want)) < 0)
			return e;
	}
}

/* All len bytes: 0, or -errno. */
static int
raw_io_write(struct raw_io *io, const char *buf, size_t len)
{
	ssize_t n;
	int want = POLLIN, e;

	while (len > 0) {
		if (io->tls == NULL)
			n = send(io->fd, buf, len, MSG_NOSIGNAL);
		else
			n = tls_write(io->tls, buf, len, &want);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN && io->tls != NULL) {
			if ((e = raw_io_poll(io->fd, want)) < 0)
				return e;
			continue;
		}
		return n == -1 ? -errno : -EIO;
	}
	return 0;
}

/* Bytes read until len or end-of-file (so len when whole), or -errno. */
static long
raw_io_read_full(struct raw_io *io, char *buf, size_t len)
{
	size_t got = 0;
	long n;

	while (got < len) {
		if ((n = raw_io_read(io, buf + got, len - got)) < 0)
			return n;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (long)got;
}

/* After the last message the sender closes: anything more is an extra
 * message. */
static int
raw_io_eof(struct raw_run *r, int me, struct raw_io *io, char *buf,
    size_t len)
{
	long n;

	if ((n = raw_io_read(io, buf, len)) == 0)
		return 0;
	if (n > 0) {
		raw_verdict(r, me);
		return raw_fail(r, me, "%ld bytes after message %u, the last",
		    n, r->cfg->count - 1);
	}
	return raw_fail(r, me, "read after the last message: %s",
	    strerror((int)-n));
}

/* A of a round trip: send, wait for the echo, time the pair. */
static int
raw_pinger(struct raw_run *r, int me, struct raw_io *io)
{
	size_t size = r->cfg->size;
	char *out = malloc(size), *in = malloc(size);
	uint64_t *ns = r->shm->ns, t;
	unsigned i;
	long n;
	int e, rc = -1;

	if (out == NULL || in == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	for (i = 0; i < r->cfg->count; i++) {
		bench_fill(out, size, i);
		t = bench_now_ns();
		if ((e = raw_io_write(io, out, size)) < 0) {
			raw_fail(r, me, "send of message %u: %s", i,
			    strerror(-e));
			goto out;
		}
		n = raw_io_read_full(io, in, size);
		ns[i] = bench_now_ns() - t;
		if (n < 0) {
			raw_fail(r, me, "reading echo %u: %s", i,
			    strerror((int)-n));
			goto out;
		}
		if ((size_t)n < size) {
			raw_fail(r, me, "the stream ended in echo %u", i);
			goto out;
		}
		if (bench_seq(in) != i && raw_check(r, me, bench_seq(in), i))
			goto out;
	}
	rc = 0;
out:
	free(out);
	free(in);
	return rc;
}

/* B of a round trip: every message back as it came. */
static int
raw_echoer(struct raw_run *r, int me, struct raw_io *io)
{
	size_t size = r->cfg->size;
	char *buf = malloc(size);
	unsigned i;
	long n;
	int e, rc = -1;

	if (buf == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	for (i = 0; i < r->cfg->count; i++) {
		if ((n = raw_io_read_full(io, buf, size)) < 0) {
			raw_fail(r, me, "reading message %u: %s", i,
			    strerror((int)-n));
			goto out;
		}
		if ((size_t)n < size) {
			raw_fail(r, me, "the stream ended in message %u", i);
			goto out;
		}
		if (bench_seq(buf) != i && raw_check(r, me, bench_seq(buf), i))
			goto out;
		if ((e = raw_io_write(io, buf, size)) < 0) {
			raw_fail(r, me, "echo of message %u: %s", i,
			    strerror(-e));
			goto out;
		}
	}
	rc = raw_io_eof(r, me, io, buf, size);
out:
	free(buf);
	return rc;
}

/* A of a throughput: count messages back to back, many per write. */
static int
raw_sender(struct raw_run *r, int me, struct raw_io *io)
{
	size_t size = r->cfg->size, per = raw_per(size), k, j;
	uint64_t seq = 0, count = r->cfg->count;
	char *buf = malloc(per * size);
	int e, rc = -1;

	if (buf == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", per * size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	while (seq < count) {
		k = count - seq < per ? (size_t)(count - seq) : per;
		for (j = 0; j < k; j++)
			bench_fill(buf + j * size, size, seq + j);
		if ((e = raw_io_write(io, buf, k * size)) < 0) {
			raw_fail(r, me, "send after %llu messages: %s",
			    (unsigned long long)seq, strerror(-e));
			goto out;
		}
		seq += k;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

/*
 * B of a throughput: split the stream into messages and check each; the
 * clock runs from go to the last message.  A message split between two
 * reads is moved to the front of the buffer (under size bytes).
 */
static int
raw_receiver(struct raw_run *r, int me, struct raw_io *io)
{
	size_t size = r->cfg->size, cap = raw_per(size) * size, have = 0;
	size_t off;
	uint64_t seq = 0, count = r->cfg->count;
	char *buf = malloc(cap);
	long n;
	int rc = -1;

	if (buf == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", cap);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	r->shm->t0 = bench_now_ns();
	while (seq < count) {
		if ((n = raw_io_read(io, buf + have, cap - have)) < 0) {
			raw_fail(r, me, "read after %llu messages: %s",
			    (unsigned long long)seq, strerror((int)-n));
			goto out;
		}
		if (n == 0) {
			raw_fail(r, me, "the stream ended after %llu of %llu "
			    "messages", (unsigned long long)seq,
			    (unsigned long long)count);
			goto out;
		}
		have += (size_t)n;
		for (off = 0; have - off >= size && seq < count;
		    off += size, seq++)
			if (bench_seq(buf + off) != seq &&
			    raw_check(r, me, bench_seq(buf + off), seq))
				goto out;
		if (off > 0) {
			memmove(buf, buf + off, have - off);
			have -= off;
		}
	}
	r->shm->t1 = bench_now_ns();
	if (have > 0) {
		raw_verdict(r, me);
		raw_fail(r, me, "%zu bytes after message %llu, the last",
		    have, (unsigned long long)count - 1);
		goto out;
	}
	rc = raw_io_eof(r, me, io, buf, cap);
out:
	free(buf);
	return rc;
}

/* The one socket a stream party keeps. */
static struct raw_io
raw_party_io(struct raw_run *r, int me)
{
	struct raw_io io = { -1, NULL };

	io.fd = r->fd[ffs((int)r->party[me].keep) - 1];
	return io;
}

static int
raw_pinger_fd(struct raw_run *r, int me)
{
	struct raw_io io = raw_party_io(r, me);

	return raw_pinger(r, me, &io);
}

static int
raw_echoer_fd(struct raw_run *r, int me)
{
	struct raw_io io = raw_party_io(r, me);

	return raw_echoer(r, me, &io);
}

static int
raw_sender_fd(struct raw_run *r, int me)
{
	struct raw_io io = raw_party_io(r, me);

	return raw_sender(r, me, &io);
}

static int
raw_receiver_fd(struct raw_run *r, int me)
{
	struct raw_io io = raw_party_io(r, me);

	return raw_receiver(r, me, &io);
}

static int
raw_socketpair(int *sv, char *why, size_t why_size)
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		bench_why(why, why_size, "socketpair: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* --- raw UNIX sockets ---------------------------------------------------- */

int
raw_unix_rtt(const struct bench_cfg *cfg, struct bench_lat *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 1, why, why_size) < 0 ||
	    raw_socketpair(&r.fd[0], why, why_size) < 0)
		goto out;
	raw_party(&r, "A", raw_pinger_fd, 1u << 0);
	raw_party(&r, "B", raw_echoer_fd, 1u << 1);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_lat_from(r.shm->ns, cfg->count, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

int
raw_unix_thr(const struct bench_cfg *cfg, struct bench_thr *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0 ||
	    raw_socketpair(&r.fd[0], why, why_size) < 0)
		goto out;
	raw_party(&r, "A", raw_sender_fd, 1u << 0);
	raw_party(&r, "B", raw_receiver_fd, 1u << 1);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_thr_from(cfg->count, cfg->size, r.shm->t1 - r.shm->t0, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

/* --- a single-threaded epoll relay --------------------------------------- */

/*
 * One direction through the relay.  It reads only into an empty buffer
 * and writes it all out before reading again, so a slow reader stops
 * the relay reading its writer (back-pressure) instead of growing it.
 * An end-of-file is passed on, once the buffer is empty, as a shutdown.
 */
struct relay_dir {
	int from, to;
	char *buf;
	size_t off, len;
	int eof, shut;
};

/* Move what can move now without blocking.  0, or -1 with the why. */
static int
relay_pump(struct raw_run *r, int me, struct relay_dir *d)
{
	ssize_t n;
	int more = 1;

	for (;;) {
		while (d->len > 0) {
			n = send(d->to, d->buf + d->off, d->len,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				d->off += (size_t)n;
				d->len -= (size_t)n;
			} else if (n == -1 && errno == EINTR) {
				continue;
			} else if (n == -1 && (errno == EAGAIN ||
			    errno == EWOULDBLOCK)) {
				return 0;	/* EPOLLOUT will resume */
			} else {
				return raw_fail(r, me, "send: %s",
				    strerror(errno));
			}
		}
		d->off = 0;
		if (d->eof) {
			/* ENOTCONN: the reader is gone already, which is
			 * how a finished round trip ends. */
			if (!d->shut && shutdown(d->to, SHUT_WR) == -1 &&
			    errno != ENOTCONN)
				return raw_fail(r, me, "shutdown: %s",
				    strerror(errno));
			d->shut = 1;
			return 0;
		}
		/* A short read drained the socket: another would almost
		 * always be EAGAIN, a syscall for nothing on every hop. */
		if (!more)
			return 0;
		n = recv(d->from, d->buf, RAW_RELAY_BUF, MSG_DONTWAIT);
		if (n > 0) {
			d->len = (size_t)n;
			more = (size_t)n == RAW_RELAY_BUF;
		} else if (n == 0) {
			d->eof = 1;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return 0;
		} else if (errno != EINTR) {
			return raw_fail(r, me, "recv: %s", strerror(errno));
		}
	}
}

/*
 * The relay: fd[1] faces A, fd[2] faces B.  dir[k] reads the socket of
 * index k (fd[1 + k]), and writes the other.  A socket is registered
 * with epoll only while it waits for something, so a peer that hung up
 * cannot make epoll_wait spin on EPOLLHUP.
 */
static int
relay_main(struct raw_run *r, int me)
{
	struct relay_dir dir[2];
	struct epoll_event ev[2];
	unsigned mask[2] = { 0, 0 };
	int ep = -1, rc = -1, n, i, k;

	memset(dir, 0, sizeof(dir));
	dir[0].from = dir[1].to = r->fd[1];
	dir[0].to = dir[1].from = r->fd[2];
	if ((dir[0].buf = malloc(RAW_RELAY_BUF)) == NULL ||
	    (dir[1].buf = malloc(RAW_RELAY_BUF)) == NULL) {
		raw_fail(r, me, "out of memory for its buffers");
		goto out;
	}
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		raw_fail(r, me, "epoll_create1: %s", strerror(errno));
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	while (!dir[0].shut || !dir[1].shut) {
		for (k = 0; k < 2; k++) {
			struct epoll_event e;
			unsigned want = 0;
			int op;

			if (dir[k].len == 0 && !dir[k].eof)
				want |= EPOLLIN;
			if (dir[1 - k].len > 0)
				want |= EPOLLOUT;
			if (want == mask[k])
				continue;
			op = mask[k] == 0 ? EPOLL_CTL_ADD : want == 0 ?
			    EPOLL_CTL_DEL : EPOLL_CTL_MOD;
			memset(&e, 0, sizeof(e));
			e.events = want;
			e.data.u32 = (uint32_t)k;
			if (epoll_ctl(ep, op, dir[k].from, &e) == -1) {
				raw_fail(r, me, "epoll_ctl: %s",
				    strerror(errno));
				goto out;
			}
			mask[k] = want;
		}
		if ((n = epoll_wait(ep, ev, 2, RAW_RUN_MS)) == -1) {
			if (errno == EINTR)
				continue;
			raw_fail(r, me, "epoll_wait: %s", strerror(errno));
			goto out;
		}
		if (n == 0) {
			raw_fail(r, me, "nothing moved for %d s",
			    RAW_RUN_MS / 1000);
			goto out;
		}
		for (i = 0; i < n; i++) {
			unsigned got = ev[i].events;

			k = (int)ev[i].data.u32;
			/* A hang-up or error goes to whichever direction
			 * waits on the socket; its recv or send says
			 * what happened. */
			if ((got & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
			    (mask[k] & EPOLLIN) &&
			    relay_pump(r, me, &dir[k]) < 0)
				goto out;
			if ((got & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
			    (mask[k] & EPOLLOUT) &&
			    relay_pump(r, me, &dir[1 - k]) < 0)
				goto out;
		}
	}
	rc = 0;
out:
	if (ep != -1)
		(void)close(ep);
	free(dir[0].buf);
	free(dir[1].buf);
	return rc;
}

/* A on fd[0] - fd[1] relay fd[2] - fd[3] B. */
static int
raw_relay_setup(struct raw_run *r, raw_fn *a, raw_fn *b, char *why,
    size_t why_size)
{
	if (raw_socketpair(&r->fd[0], why, why_size) < 0 ||
	    raw_socketpair(&r->fd[2], why, why_size) < 0)
		return -1;
	raw_party(r, "A", a, 1u << 0);
	raw_party(r, "relay", relay_main, 1u << 1 | 1u << 2);
	raw_party(r, "B", b, 1u << 3);
	return 0;
}

int
raw_relay_rtt(const struct bench_cfg *cfg, struct bench_lat *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 1, why, why_size) < 0 ||
	    raw_relay_setup(&r, raw_pinger_fd, raw_echoer_fd, why,
	    why_size) < 0 ||
	    raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_lat_from(r.shm->ns, cfg->count, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

int
raw_relay_thr(const struct bench_cfg *cfg, struct bench_thr *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0 ||
	    raw_relay_setup(&r, raw_sender_fd, raw_receiver_fd, why,
	    why_size) < 0 ||
	    raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_thr_from(cfg->count, cfg->size, r.shm->t1 - r.shm->t0, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

/* --- the disk: fdatasync, alone and shared ------------------------------- */

/*
 * Group commit at its simplest: writers append a record each to a shared
 * buffer and wait until it is synced; one syncer thread writes whatever
 * was appended while its last fdatasync ran and syncs again.  Each
 * writer has at most one record waiting, so the buffer holds one per
 * writer.
 */
struct raw_gc {
	struct raw_run *r;
	int fd, err;
	pthread_mutex_t mu;
	pthread_cond_t more, synced_cv;
	char *buf;
	size_t len, size;
	uint64_t appended, synced, syncs, done, per, deadline;
	unsigned writers_left;
	int full;		/* sync only once every writer appended */
};

struct raw_gc_writer {
	struct raw_gc *g;
	unsigned id;
};

static void *
raw_gc_writer_main(void *arg)
{
	struct raw_gc_writer *w = arg;
	struct raw_gc *g = w->g;

	for (uint64_t k = 0; k < g->per; k++) {
		uint64_t mine;

		if (bench_now_ns() >= g->deadline)
			break;
		pthread_mutex_lock(&g->mu);
		if (g->err != 0) {
			pthread_mutex_unlock(&g->mu);
			break;
		}
		bench_fill(g->buf + g->len, g->size, w->id * g->per + k);
		g->len += g->size;
		mine = ++g->appended;
		pthread_cond_signal(&g->more);
		while (g->synced < mine && g->err == 0)
			pthread_cond_wait(&g->synced_cv, &g->mu);
		if (g->err == 0)
			g->done++;
		pthread_mutex_unlock(&g->mu);
	}
	pthread_mutex_lock(&g->mu);
	g->writers_left--;
	pthread_cond_signal(&g->more);
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* Write all of buf at the end of fd, then fdatasync.  0 or errno. */
static int
raw_append_sync(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		buf += n;
		len -= (size_t)n;
	}
	return fdatasync(fd) < 0 ? errno : 0;
}

static void *
raw_gc_syncer_main(void *arg)
{
	struct raw_gc *g = arg;
	char *batch = malloc(g->size * g->r->threads);

	pthread_mutex_lock(&g->mu);
	if (batch == NULL)
		g->err = ENOMEM;
	for (;;) {
		uint64_t upto;
		size_t len;
		int e;

		/* Full batches: the writers still writing all have a
		 * record waiting (none is in a sync: the last one ended). */
		while ((g->len == 0 || (g->full && g->appended - g->synced <
		    g->writers_left)) && g->writers_left > 0 && g->err == 0)
			pthread_cond_wait(&g->more, &g->mu);
		if (g->len == 0 || g->err != 0)
			break;
		memcpy(batch, g->buf, g->len);
		len = g->len;
		upto = g->appended;
		g->len = 0;
		pthread_mutex_unlock(&g->mu);
		e = raw_append_sync(g->fd, batch, len);
		pthread_mutex_lock(&g->mu);
		g->syncs++;
		if (e != 0)
			g->err = e;
		else
			g->synced = upto;
		pthread_cond_broadcast(&g->synced_cv);
	}
	pthread_cond_broadcast(&g->synced_cv);
	pthread_mutex_unlock(&g->mu);
	free(batch);
	return NULL;
}

/* threads writers and a syncer on fd, until each wrote count / threads
 * records or the deadline.  0, or -1 with the party's why. */
static int
raw_group_commit(struct raw_run *r, int me, int fd, uint64_t deadline)
{
	struct raw_gc g;
	struct raw_gc_writer *w = calloc(r->threads, sizeof(*w));
	pthread_t *t = calloc(r->threads + 1, sizeof(*t));
	unsigned started = 0;
	int rc = -1;

	memset(&g, 0, sizeof(g));
	g.r = r;
	g.fd = fd;
	g.size = r->cfg->size;
	g.per = r->cfg->count / r->threads;
	g.deadline = deadline;
	g.writers_left = r->threads;
	g.full = r->full;
	g.buf = malloc(g.size * r->threads);
	pthread_mutex_init(&g.mu, NULL);
	pthread_cond_init(&g.more, NULL);
	pthread_cond_init(&g.synced_cv, NULL);
	if (w == NULL || t == NULL || g.buf == NULL) {
		raw_fail(r, me, "out of memory");
		goto out;
	}
	if (pthread_create(&t[r->threads], NULL, raw_gc_syncer_main,
	    &g) != 0) {
		raw_fail(r, me, "pthread_create failed");
		goto out;
	}
	for (; started < r->threads; started++) {
		w[started] = (struct raw_gc_writer){ &g, started };
		if (pthread_create(&t[started], NULL, raw_gc_writer_main,
		    &w[started]) != 0)
			break;
	}
	if (started < r->threads) {
		/* The ones that never started will not count down. */
		pthread_mutex_lock(&g.mu);
		g.writers_left -= r->threads - started;
		g.err = EAGAIN;
		pthread_cond_broadcast(&g.synced_cv);
		pthread_cond_signal(&g.more);
		pthread_mutex_unlock(&g.mu);
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	pthread_join(t[r->threads], NULL);
	r->shm->done = g.done;
	r->shm->syncs = g.syncs;
	if (g.err != 0)
		raw_fail(r, me, "after %llu records: %s",
		    (unsigned long long)g.done, strerror(g.err));
	else
		rc = 0;
out:
	pthread_cond_destroy(&g.more);
	pthread_cond_destroy(&g.synced_cv);
	pthread_mutex_destroy(&g.mu);
	free(g.buf);
	free(w);
	free(t);
	return rc;
}

/* Every record of the file once: the sequence numbers of what was
 * synced, in any order (threads interleave). */
static int
raw_fsync_verify(struct raw_run *r, int me)
{
	size_t size = r->cfg->size, n = (size_t)r->shm->done;
	uint64_t count = r->cfg->count;
	uint8_t *seen = calloc((size_t)count / 8 + 1, 1);
	char *rec = malloc(size);
	int fd = open(r->path, O_RDONLY | O_CLOEXEC), rc = -1;
	struct stat st;

	if (seen == NULL || rec == NULL || fd < 0 || fstat(fd, &st) < 0) {
		raw_fail(r, me, "reading %s back: %s", r->path,
		    strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size != (uint64_t)n * size) {
		raw_verdict(r, me);
		raw_fail(r, me, "%lld bytes on file for %zu records of %zu",
		    (long long)st.st_size, n, size);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t seq;

		if (read(fd, rec, size) != (ssize_t)size) {
			raw_fail(r, me, "reading %s back: short", r->path);
			goto out;
		}
		seq = bench_seq(rec);
		if (seq >= count || (seen[seq / 8] & (1u << (seq % 8)))) {
			raw_verdict(r, me);
			raw_fail(r, me, "record %llu repeated or bogus",
			    (unsigned long long)seq);
			goto out;
		}
		seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
	}
	rc = 0;
out:
	if (fd >= 0)
		(void)close(fd);
	free(seen);
	free(rec);
	return rc;
}

static int
raw_fsync_party(struct raw_run *r, int me)
{
	size_t size = r->cfg->size;
	char *buf = malloc(size);
	uint64_t deadline, seq;
	int fd, e, rc = -1;

	fd = open(r->path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
	    O_CLOEXEC, 0600);
	if (fd < 0 || buf == NULL) {
		raw_fail(r, me, "open %s: %s", r->path, strerror(errno));
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	r->shm->t0 = bench_now_ns();
	deadline = r->shm->t0 + (uint64_t)r->max_ms * 1000000u;
	if (r->threads > 1) {
		if (raw_group_commit(r, me, fd, deadline) < 0)
			goto out;
	} else {
		for (seq = 0; seq < r->cfg->count &&
		    bench_now_ns() < deadline; seq++) {
			bench_fill(buf, size, seq);
			if ((e = raw_append_sync(fd, buf, size)) != 0) {
				raw_fail(r, me, "after %llu records: %s",
				    (unsigned long long)seq, strerror(e));
				goto out;
			}
		}
		r->shm->done = r->shm->syncs = seq;
	}
	r->shm->t1 = bench_now_ns();
	rc = raw_fsync_verify(r, me);
out:
	if (fd >= 0)
		(void)close(fd);
	free(buf);
	return rc;
}

int
raw_fsync_thr(const struct bench_cfg *cfg, const char *dir, unsigned threads,
    int full, unsigned max_ms, struct bench_thr *out, uint64_t *syncs_out,
    char *why, size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0)
		goto out;
	if (threads == 0 || cfg->count < threads) {
		bench_why(why, why_size, "%u records for %u threads",
		    cfg->count, threads);
		goto out;
	}
	r.threads = threads;
	r.full = full;
	r.max_ms = max_ms;
	snprintf(r.path, sizeof(r.path), "%s/raw-fsync.log", dir);
	raw_party(&r, threads > 1 ? "writers" : "writer", raw_fsync_party, 0);
	rc = raw_exec(&r, why, why_size);
	(void)unlink(r.path);
	if (rc < 0)
		goto out;
	bench_thr_from(r.shm->done, cfg->size, r.shm->t1 - r.shm->t0, out);
	if (syncs_out != NULL)
		*syncs_out = r.shm->syncs;
out:
	raw_done(&r);
	return rc;
}

/* --- message transports -------------------------------------------------- */

/* A buffer of size payload bytes with RAW_HEAD bytes before it; free
 * it with raw_msg_free. */
static char *
raw_msg_new(size_t size)
{
	char *p;

	if (size > SIZE_MAX - RAW_HEAD)
		return NULL;
	if ((p = malloc(RAW_HEAD + size)) == NULL)
		return NULL;
	return p + RAW_HEAD;
}

static void
raw_msg_free(char *p)
{
	if (p != NULL)
		free(p - RAW_HEAD);
}

/* A received message of n bytes (or -errno) that should be message i. */
static int
raw_msg_check(struct raw_run *r, int me, long n, const char *p, uint64_t i)
{
	if (n < 0)
		return raw_fail(r, me, "receiving message %llu: %s",
		    (unsigned long long)i, strerror((int)-n));
	if ((size_t)n != r->cfg->size) {
		raw_verdict(r, me);
		return raw_fail(r, me, "message %llu has %ld bytes, not %zu",
		    (unsigned long long)i, n, r->cfg->size);
	}
	return raw_check(r, me, bench_seq(p), i);
}

static int
raw_msg_pinger(struct raw_run *r, int me)
{
	size_t size = r->cfg->size;
	char *out = raw_msg_new(size), *in = raw_msg_new(size);
	uint64_t *ns = r->shm->ns, t;
	unsigned i;
	long n;
	int e, rc = -1;

	if (out == NULL || in == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	for (i = 0; i < r->cfg->count; i++) {
		bench_fill(out, size, i);
		t = bench_now_ns();
		if ((e = r->ops->send(r, 0, out, size)) < 0) {
			raw_fail(r, me, "send of message %u: %s", i,
			    strerror(-e));
			goto out;
		}
		n = r->ops->recv(r, 1, in, size);
		ns[i] = bench_now_ns() - t;
		if (raw_msg_check(r, me, n, in, i) < 0)
			goto out;
	}
	rc = 0;
out:
	raw_msg_free(out);
	raw_msg_free(in);
	return rc;
}

static int
raw_msg_echoer(struct raw_run *r, int me)
{
	size_t size = r->cfg->size;
	char *buf = raw_msg_new(size);
	unsigned i;
	int e, rc = -1;

	if (buf == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	for (i = 0; i < r->cfg->count; i++) {
		if (raw_msg_check(r, me, r->ops->recv(r, 0, buf, size), buf,
		    i) < 0)
			goto out;
		if ((e = r->ops->send(r, 1, buf, size)) < 0) {
			raw_fail(r, me, "echo of message %u: %s", i,
			    strerror(-e));
			goto out;
		}
	}
	rc = 0;
out:
	raw_msg_free(buf);
	return rc;
}

static int
raw_msg_sender(struct raw_run *r, int me)
{
	size_t size = r->cfg->size;
	char *buf = raw_msg_new(size);
	unsigned i;
	int e, rc = -1;

	if (buf == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	for (i = 0; i < r->cfg->count; i++) {
		bench_fill(buf, size, i);
		if ((e = r->ops->send(r, 0, buf, size)) < 0) {
			raw_fail(r, me, "send of message %u: %s", i,
			    strerror(-e));
			goto out;
		}
	}
	rc = 0;
out:
	raw_msg_free(buf);
	return rc;
}

/* The clock runs from go to the last message. */
static int
raw_msg_receiver(struct raw_run *r, int me)
{
	size_t size = r->cfg->size;
	char *buf = raw_msg_new(size);
	unsigned i;
	int rc = -1;

	if (buf == NULL) {
		raw_fail(r, me, "out of memory for %zu bytes", size);
		goto out;
	}
	if (raw_go(r, me) < 0)
		goto out;
	r->shm->t0 = bench_now_ns();
	for (i = 0; i < r->cfg->count; i++)
		if (raw_msg_check(r, me, r->ops->recv(r, 0, buf, size), buf,
		    i) < 0)
			goto out;
	r->shm->t1 = bench_now_ns();
	rc = 0;
out:
	raw_msg_free(buf);
	return rc;
}

/* A limit from /proc, or dflt when it cannot be read. */
static long
raw_proc_limit(const char *path, long dflt)
{
	FILE *f;
	long v;

	if ((f = fopen(path, "re")) == NULL)
		return dflt;
	if (fscanf(f, "%ld", &v) != 1 || v <= 0)
		v = dflt;
	(void)fclose(f);
	return v;
}

/* --- POSIX message queues ------------------------------------------------ */

static int
pmq_send(struct raw_run *r, int way, char *p, size_t len)
{
	while (mq_send(r->mq[way], p, len, 0) == -1)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static long
pmq_recv(struct raw_run *r, int way, char *p, size_t len)
{
	ssize_t n;

	while ((n = mq_receive(r->mq[way], p, len, NULL)) == -1)
		if (errno != EINTR)
			return -errno;
	return (long)n;
}

static const struct raw_msgops pmq_ops = { pmq_send, pmq_recv };

/*
 * n queues of RAW_MQ_MAXMSG messages of cfg->size bytes.  Each is
 * unlinked as soon as it is open: the parties inherit the descriptors,
 * and no path (a crash included) can leave a name behind.
 */
static int
pmq_open(struct raw_run *r, int n, char *why, size_t why_size)
{
	long max = raw_proc_limit("/proc/sys/fs/mqueue/msgsize_max",
	    RAW_MQ_MSGSIZE);
	struct mq_attr attr;
	char name[64];
	int i;

	if (r->cfg->size > (size_t)max) {
		bench_why(why, why_size, "POSIX mq: message size over the "
		    "system limit (%zu > %ld)", r->cfg->size, max);
		return -1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.mq_maxmsg = RAW_MQ_MAXMSG;
	attr.mq_msgsize = (long)r->cfg->size;
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "/ipcbench-%d-%u", (int)getpid(),
		    raw_serial++);
		r->mq[i] = mq_open(name, O_RDWR | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0600, &attr);
		if (r->mq[i] == (mqd_t)-1) {
			if (errno == EINVAL)
				bench_why(why, why_size, "POSIX mq: message "
				    "size over the system limit (mq_open "
				    "%s: %s)", name, strerror(errno));
			else
				bench_why(why, why_size, "mq_open %s: %s", name,
				    strerror(errno));
			return -1;
		}
		if (mq_unlink(name) == -1) {
			bench_why(why, why_size, "mq_unlink %s: %s", name,
			    strerror(errno));
			return -1;
		}
	}
	r->ops = &pmq_ops;
	return 0;
}

int
posix_mq_rtt(const struct bench_cfg *cfg, struct bench_lat *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 1, why, why_size) < 0 ||
	    pmq_open(&r, 2, why, why_size) < 0)
		goto out;
	raw_party(&r, "A", raw_msg_pinger, 0);
	raw_party(&r, "B", raw_msg_echoer, 0);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_lat_from(r.shm->ns, cfg->count, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

int
posix_mq_thr(const struct bench_cfg *cfg, struct bench_thr *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0 ||
	    pmq_open(&r, 1, why, why_size) < 0)
		goto out;
	raw_party(&r, "A", raw_msg_sender, 0);
	raw_party(&r, "B", raw_msg_receiver, 0);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_thr_from(cfg->count, cfg->size, r.shm->t1 - r.shm->t0, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

/* --- System V message queues --------------------------------------------- */

/* mtype way + 1: 1 carries A to B, 2 the echo back, on one queue. */
static int
smq_send(struct raw_run *r, int way, char *p, size_t len)
{
	struct raw_msgbuf *m = (struct raw_msgbuf *)(void *)(p - RAW_HEAD);

	m->mtype = way + 1;
	while (msgsnd(r->msqid, m, len, 0) == -1)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static long
smq_recv(struct raw_run *r, int way, char *p, size_t len)
{
	struct raw_msgbuf *m = (struct raw_msgbuf *)(void *)(p - RAW_HEAD);
	ssize_t n;

	while ((n = msgrcv(r->msqid, m, len, way + 1, 0)) == -1)
		if (errno != EINTR)
			return -errno;
	return (long)n;
}

static const struct raw_msgops smq_ops = { smq_send, smq_recv };

/* The queue lives until raw_done removes it, whatever the parties did. */
static int
smq_open(struct raw_run *r, char *why, size_t why_size)
{
	long max = raw_proc_limit("/proc/sys/kernel/msgmax", RAW_MSGMAX);

	if (r->cfg->size > (size_t)max) {
		bench_why(why, why_size, "System V mq: message size over the "
		    "system limit (%zu > MSGMAX %ld)", r->cfg->size, max);
		return -1;
	}
	if ((r->msqid = msgget(IPC_PRIVATE, IPC_CREAT | 0600)) == -1) {
		bench_why(why, why_size, "msgget: %s", strerror(errno));
		return -1;
	}
	r->ops = &smq_ops;
	return 0;
}

int
sysv_mq_rtt(const struct bench_cfg *cfg, struct bench_lat *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 1, why, why_size) < 0 ||
	    smq_open(&r, why, why_size) < 0)
		goto out;
	raw_party(&r, "A", raw_msg_pinger, 0);
	raw_party(&r, "B", raw_msg_echoer, 0);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_lat_from(r.shm->ns, cfg->count, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

int
sysv_mq_thr(const struct bench_cfg *cfg, struct bench_thr *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0 ||
	    smq_open(&r, why, why_size) < 0)
		goto out;
	raw_party(&r, "A", raw_msg_sender, 0);
	raw_party(&r, "B", raw_msg_receiver, 0);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_thr_from(cfg->count, cfg->size, r.shm->t1 - r.shm->t0, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

/* --- TLS over loopback TCP ----------------------------------------------- */

/* A session on connected socket fd, handshake done.  0, or -1 with the
 * party's why; *ctx and *t are the caller's to free either way. */
static int
rtls_open(struct raw_run *r, int me, int fd, int server,
    struct tls_ctx **ctx, struct tls **t)
{
	struct tls_conf conf;
	char w[RAW_WHY];
	int e, want = POLLIN;

	memset(&conf, 0, sizeof(conf));
	conf.psk_file = r->psk_file;
	w[0] = '\0';
	if ((e = tls_ctx_new(&conf, server, ctx, w, sizeof(w))) < 0)
		return raw_fail(r, me, "TLS context: %s",
		    w[0] != '\0' ? w : strerror(-e));
	if ((*t = tls_new(*ctx, fd)) == NULL)
		return raw_fail(r, me, "TLS session: out of memory");
	for (;;) {
		if ((e = tls_handshake(*t, &want, w, sizeof(w))) == 1)
			return 0;
		if (e < 0)
			return raw_fail(r, me, "TLS handshake: %s", w);
		if ((e = raw_io_poll(fd, want)) < 0)
			return raw_fail(r, me, "TLS handshake: %s",
			    strerror(-e));
	}
}

/* B: accept on fd[0], take the stream. */
static int
rtls_receiver(struct raw_run *r, int me)
{
	struct tls_ctx *ctx = NULL;
	struct raw_io io = { -1, NULL };
	int e, rc = -1;

	/* Bounded: A may have died before it connected. */
	if ((e = raw_io_poll(r->fd[0], POLLIN)) < 0) {
		raw_fail(r, me, "waiting for A to connect: %s", strerror(-e));
		goto out;
	}
	if ((io.fd = acceptServerSocket(r->fd[0])) == -1) {
		raw_fail(r, me, "accept: %s", strerror(errno));
		goto out;
	}
	if (rtls_open(r, me, io.fd, 1, &ctx, &io.tls) < 0)
		goto out;
	rc = raw_receiver(r, me, &io);
out:
	tls_free(io.tls);
	tls_ctx_free(ctx);
	if (io.fd != -1)
		(void)closeSocket(io.fd);
	return rc;
}

/*
 * A: connect, send the stream, then close cleanly.  A closes only after
 * reading to B's end-of-file: closing a TCP socket with unread bytes in
 * it (TLS 1.3 session tickets B sent) resets the connection, and a reset
 * may discard what B has not read yet.
 */
static int
rtls_sender(struct raw_run *r, int me)
{
	struct tls_ctx *ctx = NULL;
	struct raw_io io = { -1, NULL };
	char junk[4096];
	int e, rc = -1;
	ssize_t n;

	if ((io.fd = connectSocket("127.0.0.1", r->port)) == -1) {
		raw_fail(r, me, "connect to port %d: %s", r->port,
		    strerror(errno));
		goto out;
	}
	if (rtls_open(r, me, io.fd, 0, &ctx, &io.tls) < 0 ||
	    raw_sender(r, me, &io) < 0)
		goto out;
	tls_shutdown(io.tls);
	if (shutdownSocket(io.fd) == -1) {
		raw_fail(r, me, "shutdown: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		if ((e = raw_io_poll(io.fd, POLLIN)) < 0) {
			raw_fail(r, me, "waiting for B to close: %s",
			    strerror(-e));
			goto out;
		}
		if ((n = readSocket(io.fd, junk, sizeof(junk))) == 0)
			break;
		if (n == -1) {
			raw_fail(r, me, "read: %s", strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	tls_free(io.tls);
	tls_ctx_free(ctx);
	if (io.fd != -1)
		(void)closeSocket(io.fd);
	return rc;
}

int
raw_tls_thr(const struct bench_cfg *cfg, const char *psk_file,
    struct bench_thr *out, char *why, size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0)
		goto out;
	if (psk_file == NULL) {
		bench_why(why, why_size, "TLS: no PSK file");
		goto out;
	}
	r.psk_file = psk_file;
	if ((r.fd[0] = serverSocketBind("127.0.0.1", 0)) == -1) {
		bench_why(why, why_size, "listen on 127.0.0.1: %s",
		    strerror(errno));
		goto out;
	}
	if ((r.port = portSocket(r.fd[0])) == -1) {
		bench_why(why, why_size, "port of the listener: %s",
		    strerror(errno));
		goto out;
	}
	raw_party(&r, "A", rtls_sender, 0);
	raw_party(&r, "B", rtls_receiver, 1u << 0);
	if (raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_thr_from(cfg->count, cfg->size, r.shm->t1 - r.shm->t0, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

/* --- ZeroMQ -------------------------------------------------------------- */

#ifdef HAVE_ZMQ

static int
rzmq_send(struct raw_run *r, int way, char *p, size_t len)
{
	(void)way;	/* REQ/REP alternate on one socket */
	while (zmq_send(r->zsock, p, len, 0) == -1)
		if (zmq_errno() != EINTR)
			return -zmq_errno();
	return 0;
}

/* The message's whole length, even when longer than len (ZeroMQ then
 * truncates it), so the check catches it. */
static long
rzmq_recv(struct raw_run *r, int way, char *p, size_t len)
{
	int n;

	(void)way;
	while ((n = zmq_recv(r->zsock, p, len, 0)) == -1)
		if (zmq_errno() != EINTR)
			return -zmq_errno();
	return n;
}

static const struct raw_msgops rzmq_ops = { rzmq_send, rzmq_recv };

/*
 * A socket of type on r->endpoint, bound or connected.  0, or -1 with
 * the why; *ctx is the caller's to close with rzmq_close either way.
 * ZMQ_LINGER is bounded, so a close never hangs for ever, but not 0,
 * so that it does not throw away what is queued (see rzmq_done).
 */
static int
rzmq_open(struct raw_run *r, int me, void **ctx, int type, int bind)
{
	int linger_ms = RAW_RUN_MS;

	if ((*ctx = zmq_ctx_new()) == NULL)
		return raw_fail(r, me, "zmq_ctx_new: %s",
		    zmq_strerror(zmq_errno()));
	if ((r->zsock = zmq_socket(*ctx, type)) == NULL)
		return raw_fail(r, me, "zmq_socket: %s",
		    zmq_strerror(zmq_errno()));
	if (zmq_setsockopt(r->zsock, ZMQ_LINGER, &linger_ms,
	    sizeof(linger_ms)) == -1)
		return raw_fail(r, me, "ZMQ_LINGER: %s",
		    zmq_strerror(zmq_errno()));
	if ((bind ? zmq_bind(r->zsock, r->endpoint) :
	    zmq_connect(r->zsock, r->endpoint)) == -1)
		return raw_fail(r, me, "%s %s: %s", bind ? "bind" : "connect",
		    r->endpoint, zmq_strerror(zmq_errno()));
	return 0;
}

static void
rzmq_close(struct raw_run *r, void *ctx)
{
	if (r->zsock != NULL)
		(void)zmq_close(r->zsock);
	r->zsock = NULL;
	if (ctx != NULL)
		while (zmq_ctx_term(ctx) == -1 && zmq_errno() == EINTR)
			;
}

/*
 * One untimed message (two with the reply), so the connection is up
 * before go: a connect that came before the bind is retried only after
 * ZeroMQ's reconnect interval (100 ms), which the clock must not see.
 */
static int
rzmq_warm(struct raw_run *r, int me, int send, int steps)
{
	size_t size = r->cfg->size;
	char *buf = raw_msg_new(size);
	long n;
	int e, rc = -1;

	if (buf == NULL)
		return raw_fail(r, me, "out of memory for %zu bytes", size);
	for (; steps > 0; steps--, send = !send) {
		if (send) {
			bench_fill(buf, size, RAW_WARMUP);
			if ((e = rzmq_send(r, 0, buf, size)) < 0) {
				raw_fail(r, me, "warm-up send: %s",
				    zmq_strerror(-e));
				goto out;
			}
		} else {
			n = rzmq_recv(r, 0, buf, size);
			if (raw_msg_check(r, me, n, buf, RAW_WARMUP) < 0)
				goto out;
		}
	}
	rc = 0;
out:
	raw_msg_free(buf);
	return rc;
}

/*
 * ZeroMQ does not promise delivery across a close, linger or not: in
 * about one run in ten (64 B x 200000, libzmq 4.3.4) B never got the
 * last messages when A closed its PUSH socket as soon as zmq_send had
 * taken them, and waited for ever.  So whoever receives the last
 * message says so on a socket pair outside ZeroMQ (rzmq_done_say), and
 * the other side waits for that before it closes (rzmq_done_wait).  The
 * clock has stopped by then.
 */
static int
rzmq_done_say(struct raw_run *r, int me)
{
	struct raw_io io = raw_party_io(r, me);
	int e;

	if ((e = raw_io_write(&io, "d", 1)) < 0)
		return raw_fail(r, me, "saying done: %s", strerror(-e));
	return 0;
}

static int
rzmq_done_wait(struct raw_run *r, int me)
{
	struct raw_io io = raw_party_io(r, me);
	char c;
	long n;
	int e;

	if ((e = raw_io_poll(io.fd, POLLIN)) < 0)
		return raw_fail(r, me, "waiting for the peer to be done: %s",
		    strerror(-e));
	if ((n = raw_io_read(&io, &c, 1)) < 0)
		return raw_fail(r, me, "waiting for the peer to be done: %s",
		    strerror((int)-n));
	if (n == 0)
		return raw_fail(r, me, "the peer went away before it was "
		    "done");
	return 0;
}

/* One ZeroMQ party: a socket of type (bound or connected), a warm-up of
 * steps messages (sent first when warm_send), the timed body, then the
 * "done" handshake from the side that saw the last message. */
static int
rzmq_party(struct raw_run *r, int me, int type, int bind, int warm_send,
    int steps, raw_fn *body, int say_done)
{
	void *ctx = NULL;
	int rc = -1;

	if (rzmq_open(r, me, &ctx, type, bind) == 0 &&
	    rzmq_warm(r, me, warm_send, steps) == 0 &&
	    (rc = body(r, me)) == 0)
		rc = say_done ? rzmq_done_say(r, me) : rzmq_done_wait(r, me);
	rzmq_close(r, ctx);
	return rc;
}

static int
rzmq_rtt_a(struct raw_run *r, int me)
{
	return rzmq_party(r, me, ZMQ_REQ, 0, 1, 2, raw_msg_pinger, 1);
}

static int
rzmq_rtt_b(struct raw_run *r, int me)
{
	return rzmq_party(r, me, ZMQ_REP, 1, 0, 2, raw_msg_echoer, 0);
}

static int
rzmq_thr_a(struct raw_run *r, int me)
{
	return rzmq_party(r, me, ZMQ_PUSH, 0, 1, 1, raw_msg_sender, 0);
}

static int
rzmq_thr_b(struct raw_run *r, int me)
{
	return rzmq_party(r, me, ZMQ_PULL, 1, 0, 1, raw_msg_receiver, 1);
}

/*
 * ipc:// in a fresh directory of its own, which raw_done removes; and
 * the socket pair for rzmq_done: a_fd (0 or 1) is A's end of it.
 */
static int
rzmq_setup(struct raw_run *r, raw_fn *a, raw_fn *b, int a_fd, char *why,
    size_t why_size)
{
	if (raw_socketpair(&r->fd[0], why, why_size) < 0)
		return -1;
	/* mkdtemp's template: the run's own directory under $TMPDIR. */
	snprintf(r->dir, sizeof(r->dir), "%s/ipcbench-zmq-XXXXXX",
	    getenv("TMPDIR") != NULL && *getenv("TMPDIR") != '\0' ?
	    getenv("TMPDIR") : "/tmp");
	if (mkdtemp(r->dir) == NULL) {
		bench_why(why, why_size, "mkdtemp %s: %s", r->dir,
		    strerror(errno));
		r->dir[0] = '\0';
		return -1;
	}
	snprintf(r->endpoint, sizeof(r->endpoint), "ipc://%s/s", r->dir);
	r->ops = &rzmq_ops;
	raw_party(r, "A", a, 1u << a_fd);
	raw_party(r, "B", b, 1u << (1 - a_fd));
	return 0;
}

int
zmq_rtt(const struct bench_cfg *cfg, struct bench_lat *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 1, why, why_size) < 0 ||
	    rzmq_setup(&r, rzmq_rtt_a, rzmq_rtt_b, 0, why, why_size) < 0 ||
	    raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_lat_from(r.shm->ns, cfg->count, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

int
zmq_thr(const struct bench_cfg *cfg, struct bench_thr *out, char *why,
    size_t why_size)
{
	struct raw_run r;
	int rc = -1;

	if (raw_init(&r, cfg, 0, why, why_size) < 0 ||
	    rzmq_setup(&r, rzmq_thr_a, rzmq_thr_b, 1, why, why_size) < 0 ||
	    raw_exec(&r, why, why_size) < 0)
		goto out;
	bench_thr_from(cfg->count, cfg->size, r.shm->t1 - r.shm->t0, out);
	rc = 0;
out:
	raw_done(&r);
	return rc;
}

#endif /* HAVE_ZMQ */
