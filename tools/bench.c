/*
 * bench.c - the helpers every ipcbench scenario and baseline shares:
 * clock, statistics, CPU placement, payloads, child processes and the
 * start gate.  See bench.h.
 *
 * Nothing here prints: failures come back as -errno, or as -1 with a
 * sentence in the caller's why buffer.
 */
#include "config.h"

#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Without a pidfd, bench_wait looks at the child this often. */
#define BENCH_POLL_MS	10

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Unpinned means "leave it to the scheduler": we do not widen the mask
 * again, so a parent that pinned itself (or was started under taskset)
 * passes that on.  The baselines never pin the parent for this reason.
 */
int
bench_place(const struct bench_cfg *cfg)
{
	cpu_set_t set;

	if (!cfg->pinned)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set) == -1)
		return -errno;
	return 0;
}

static int
bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank percentile (permille/1000) of n > 0 sorted samples,
 * in us: the ceil(n * permille / 1000)-th smallest. */
static double
bench_rank_us(const uint64_t *ns, size_t n, unsigned permille)
{
	size_t k = (n / 1000) * permille + ((n % 1000) * permille + 999) / 1000;

	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return (double)ns[k - 1] / 1000.0;
}

void
bench_lat_from(uint64_t *ns, size_t n, struct bench_lat *out)
{
	memset(out, 0, sizeof(*out));
	if (n == 0)
		return;
	qsort(ns, n, sizeof(*ns), bench_cmp_u64);
	/* The usual median (mean of the middle two for an even n); the
	 * tails by nearest rank, so p99.9 is a sample that happened. */
	if (n % 2 == 1)
		out->median_us = (double)ns[n / 2] / 1000.0;
	else
		out->median_us = ((double)ns[n / 2 - 1] +
		    (double)ns[n / 2]) / 2000.0;
	out->p99_us = bench_rank_us(ns, n, 990);
	out->p999_us = bench_rank_us(ns, n, 999);
	out->n = n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

void
bench_thr_from(uint64_t msgs, size_t size, uint64_t ns, struct bench_thr *out)
{
	memset(out, 0, sizeof(*out));
	out->msgs = msgs;
	out->secs = (double)ns / 1e9;
	/* A run too short for the clock has no rate rather than infinity. */
	if (ns == 0)
		return;
	out->msgs_per_s = (double)msgs / out->secs;
	out->gb_per_s = (double)msgs * (double)size / out->secs / 1e9;
}

/*
 * The pattern is one byte that changes with seq, written with memset:
 * the cheapest way to touch every byte, as a producer writing its
 * message would.  (1 MiB costs about 22 us here, some 10% of a raw
 * socket's time for it; scenarios and baselines pay it alike.)
 */
void
bench_fill(void *buf, size_t size, uint64_t seq)
{
	unsigned char *p = buf;
	size_t i;

	for (i = 0; i < 8 && i < size; i++)
		p[i] = (unsigned char)(seq >> (8 * i));
	if (size > 8)
		memset(p + 8, (int)((seq * 0x9du + 0x5au) & 0xffu), size - 8);
}

uint64_t
bench_seq(const void *buf)
{
	const unsigned char *p = buf;
	uint64_t seq = 0;
	int i;

	for (i = 7; i >= 0; i--)
		seq = seq << 8 | p[i];
	return seq;
}

/*
 * The child dies with the parent (PR_SET_PDEATHSIG), so a benchmark
 * killed half-way leaves no process behind; the getppid() test closes
 * the race with a parent that died before the prctl.  The child leaves
 * through _exit: the parent's atexit handlers and stdio buffers are not
 * its to run.  Exit status 1 is fn's failure, 2 a failed setup.  Output
 * still buffered is flushed first: a child that does flush on its way
 * out (valgrind runs glibc's freeres, which does) would print it again.
 */
pid_t
bench_fork(const struct bench_cfg *cfg, int (*fn)(void *), void *arg)
{
	pid_t parent = getpid(), pid;

	(void)fflush(NULL);
	if ((pid = fork()) == -1)
		return -errno;
	if (pid > 0)
		return pid;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
		_exit(2);
	if (bench_place(cfg) < 0)
		_exit(2);
	_exit(fn(arg) ? 1 : 0);
}

void
bench_why(char *why, size_t why_size, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || why_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, why_size, fmt, ap);
	va_end(ap);
}

/* What a reaped child's status says: 0 for a clean exit 0. */
static int
bench_status(pid_t pid, int st, char *why, size_t why_size)
{
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFEXITED(st))
		bench_why(why, why_size, "pid %d exited with status %d%s",
		    (int)pid, WEXITSTATUS(st), WEXITSTATUS(st) == 2 ?
		    " (its setup failed)" : "");
	else if (WIFSIGNALED(st))
		bench_why(why, why_size, "pid %d killed by signal %d (%s)",
		    (int)pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		bench_why(why, why_size, "pid %d: wait status 0x%x",
		    (int)pid, (unsigned)st);
	return -1;
}

/* Reap pid, which is dead or about to be; EINTR is retried. */
static pid_t
bench_reap(pid_t pid, int *st)
{
	pid_t r;

	while ((r = waitpid(pid, st, 0)) == -1 && errno == EINTR)
		;
	return r;
}

/*
 * A negative timeout_ms waits for ever.  With a pidfd (Linux 5.3) the
 * wait is one poll; without one (an older kernel, a sandbox that
 * refuses the call) we look every BENCH_POLL_MS.  The pid is ours and
 * not yet reaped, so kill() cannot hit a stranger that reused it.
 */
int
bench_wait(pid_t pid, int timeout_ms, char *why, size_t why_size)
{
	uint64_t deadline = 0, now;
	int pfd = -1, st = 0, ms;
	pid_t r;

	if (timeout_ms >= 0)
		deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
#ifdef SYS_pidfd_open
	pfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
	for (;;) {
		if ((r = waitpid(pid, &st, WNOHANG)) == pid)
			break;
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			bench_why(why, why_size, "waitpid %d: %s", (int)pid,
			    strerror(errno));
			goto fail;
		}
		ms = -1;
		if (timeout_ms >= 0) {
			if ((now = bench_now_ns()) >= deadline) {
				(void)kill(pid, SIGKILL);
				(void)bench_reap(pid, &st);
				bench_why(why, why_size, "pid %d still running "
				    "after %d ms: killed", (int)pid,
				    timeout_ms);
				goto fail;
			}
			ms = (int)((deadline - now + 999999) / 1000000);
		}
		if (pfd >= 0) {
			struct pollfd p = { .fd = pfd, .events = POLLIN };

			if (poll(&p, 1, ms) == -1 && errno != EINTR) {
				/* Cannot happen with a valid pidfd; go on
				 * without it rather than fail the run. */
				(void)close(pfd);
				pfd = -1;
			}
		} else {
			struct timespec ts = { 0, BENCH_POLL_MS * 1000000L };

			if (ms >= 0 && ms < BENCH_POLL_MS)
				ts.tv_nsec = ms * 1000000L;
			(void)nanosleep(&ts, NULL);
		}
	}
	if (pfd >= 0)
		(void)close(pfd);
	return bench_status(pid, st, why, why_size);
fail:
	if (pfd >= 0)
		(void)close(pfd);
	return -1;
}

/* --- the start gate ------------------------------------------------------ */

int
bench_gate_init(struct bench_gate *g)
{
	g->ready[0] = g->ready[1] = g->go[0] = g->go[1] = -1;
	if (pipe2(g->ready, O_CLOEXEC) == -1 ||
	    pipe2(g->go, O_CLOEXEC) == -1) {
		int r = -errno;

		bench_gate_close(g);
		return r;
	}
	return 0;
}

static void
bench_gate_drop(int *fd)
{
	if (*fd >= 0) {
		(void)close(*fd);
		*fd = -1;
	}
}

/*
 * A child's side: one byte on ready, then it drops the ends it never
 * uses, so that the parent sees end-of-file on ready once every child
 * has spoken or died, and a child sees end-of-file on go if the parent
 * gives up.  A failed write is not reported: the parent's wait for
 * ready then ends with end-of-file or its timeout, which is the report.
 */
void
bench_gate_ready(struct bench_gate *g)
{
	char c = 'r';

	while (write(g->ready[1], &c, 1) == -1 && errno == EINTR)
		;
	bench_gate_drop(&g->ready[0]);
	bench_gate_drop(&g->ready[1]);
	bench_gate_drop(&g->go[1]);
}

/* 0 once the parent said go; -EPIPE if it closed the gate instead. */
int
bench_gate_wait_go(struct bench_gate *g)
{
	ssize_t n;
	char c;

	while ((n = read(g->go[0], &c, 1)) == -1 && errno == EINTR)
		;
	if (n == -1)
		return -errno;
	bench_gate_drop(&g->go[0]);
	return n == 1 ? 0 : -EPIPE;
}

/*
 * The parent's side, called once every child is forked: it closes its
 * own write end of ready so that a child dying before it is ready ends
 * the wait at once (-EPIPE) instead of at the timeout (-ETIMEDOUT).
 * It keeps the read end of go open, so writing go never raises SIGPIPE
 * even when every child is gone.  A negative timeout_ms waits for ever.
 */
int
bench_gate_open(struct bench_gate *g, unsigned nchildren, int timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 :
	    timeout_ms) * 1000000u, now;
	unsigned got = 0, sent = 0;
	char buf[64];
	ssize_t n;

	bench_gate_drop(&g->ready[1]);
	while (got < nchildren) {
		struct pollfd p = { .fd = g->ready[0], .events = POLLIN };
		size_t want = nchildren - got;
		int r, ms = -1;

		/* A negative timeout waits for ever, as in bench_wait. */
		if (timeout_ms >= 0) {
			if ((now = bench_now_ns()) >= deadline)
				return -ETIMEDOUT;
			ms = (int)((deadline - now + 999999) / 1000000);
		}
		r = poll(&p, 1, ms);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		n = read(g->ready[0], buf, want < sizeof(buf) ? want :
		    sizeof(buf));
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n == -1)
			return -errno;
		if (n == 0)
			return -EPIPE;
		got += (unsigned)n;
	}
	memset(buf, 'g', sizeof(buf));
	while (sent < nchildren) {
		size_t want = nchildren - sent;

		n = write(g->go[1], buf, want < sizeof(buf) ? want :
		    sizeof(buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -errno;
		sent += (unsigned)n;
	}
	return 0;
}

void
bench_gate_close(struct bench_gate *g)
{
	bench_gate_drop(&g->ready[0]);
	bench_gate_drop(&g->ready[1]);
	bench_gate_drop(&g->go[0]);
	bench_gate_drop(&g->go[1]);
}
