/*
 * test-exhaust.c - the broker and the library when something runs out,
 * against a real ipcd, one private broker per test (per run, in the last):
 *
 *   1. descriptors: ipcd under RLIMIT_NOFILE 64 and 1,000 connections
 *      held open.  Clients already connected keep working, the broker
 *      does not spin while accept() fails (its CPU time, from
 *      /proc/PID/stat, over a second of it), and once the connections are
 *      closed a new client gets in within a second;
 *   2. the broker stopped (SIGSTOP, 2 s) under a load of timed sends and
 *      receives: every timed call returns within its timeout and a
 *      bounded slack, and after SIGCONT every message whose send
 *      succeeded is received exactly once (one whose send timed out at
 *      most once), large ones byte for byte;
 *   3. memory: the Nth allocation the broker makes in a scenario fails,
 *      for every N (tests/failalloc.c, LD_PRELOAD): the broker neither
 *      crashes nor hangs a client, a failure is an error answer or a
 *      disconnect, nothing is corrupted (a fresh client then runs the
 *      scenario to the end), it exits 0 on SIGTERM and holds no more
 *      memory at exit than a run where nothing failed.  Skipped in the
 *      sanitizer build (ASan's runtime must come first and refuses the
 *      shim).
 *
 * How the tests know without sleeping: the broker's state is read from
 * /proc (descriptors, CPU time, stopped) in loops bounded by deadlines,
 * each look after a round trip on a client; threads make only timed
 * calls, so their joins are bounded; children report on pipes read with
 * timeouts and are reaped with bounded waits.  The two fixed durations
 * (the second of CPU sampling, the two seconds the broker stays stopped)
 * are what is measured, not waits for something to happen.
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
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "testutil.h"
#include "testbroker.h"
#include "wire.h"

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

/* What the library adds to a timed call's timeout before it gives up on
 * a broker that does not answer (IPC_REPLY_GRACE_MS in ipc.c). */
#define LIB_GRACE_MS	500
/* Scheduling on a loaded 2-core machine, or a sanitizer build, on top. */
#define SCHED_SLACK_MS	500

/* --- the fixture --------------------------------------------------------- */

#define FIX_MAX 16

struct opener {
	const char *where;
	struct ipc_conn *c;
	int err;
	long long done_ms;
	int pipe[2];
};

/* What a test opens or starts, so that the teardown can undo it however
 * far the test got. */
struct fix {
	struct broker b;
	struct ipc_conn *conns[FIX_MAX];
	int nconns;
	pthread_t threads[FIX_MAX];
	int thread_live[FIX_MAX];
	int nthreads;
	int *held;			/* raw sockets held open */
	int nheld;
	int broker_paused;		/* SIGSTOPped: SIGCONT it first */
	atomic_int stop;		/* threads: finish now */
	struct opener opener;
	void *mem[FIX_MAX];
	int nmem;
};

static int
fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->b.proc.in = f->b.proc.out = f->b.proc.err = -1;
	f->opener.pipe[0] = f->opener.pipe[1] = -1;
	*state = f;
	return 0;
}

static void
fix_close_held(struct fix *f)
{
	for (int i = 0; i < f->nheld; i++)
		close(f->held[i]);
	f->nheld = 0;
}

static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	if (f->broker_paused && f->b.proc.pid > 0)
		kill(f->b.proc.pid, SIGCONT);
	atomic_store(&f->stop, 1);
	fix_close_held(f);
	/* The broker's going makes every call still blocked in a thread
	 * return. */
	if (f->b.proc.pid > 0)
		test_stop(&f->b.proc);
	for (int i = 0; i < f->nthreads; i++)
		if (f->thread_live[i])
			pthread_join(f->threads[i], NULL);
	for (int i = 0; i < f->nconns; i++)
		ipc_close(f->conns[i]);
	ipc_close(f->opener.c);
	for (int i = 0; i < 2; i++)
		if (f->opener.pipe[i] >= 0)
			close(f->opener.pipe[i]);
	for (int i = 0; i < f->nmem; i++)
		free(f->mem[i]);
	free(f->held);
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

static void *
fix_alloc(struct fix *f, size_t size)
{
	void *p = calloc(1, size);

	assert_non_null(p);
	assert_true(f->nmem < FIX_MAX);
	f->mem[f->nmem++] = p;
	return p;
}

static int
fix_thread(struct fix *f, void *(*fn)(void *), void *arg)
{
	assert_true(f->nthreads < FIX_MAX);
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

/* --- the broker through /proc -------------------------------------------- */

/* The descriptors pid holds numbered below limit (RLIMIT_NOFILE counts
 * numbers: one inherited from whoever started the test may be above). */
static int
fd_count(pid_t pid, int limit)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && atoi(e->d_name) < limit)
			n++;
	closedir(d);
	return n;
}

/* State letter and utime + stime (clock ticks) of pid; 0 or -1. */
static int
proc_stat(pid_t pid, char *state, unsigned long long *ticks)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) S ppid ...": fields after the comm, which may hold
	 * spaces; utime and stime are fields 14 and 15. */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
	    "%llu", state, &ut, &st) != 3)
		return -1;
	*ticks = ut + st;
	return 0;
}

/* pid's CPU time in nanoseconds (its CPU-time clock: finer than the
 * ticks of /proc/PID/stat), or -1. */
static long long
proc_cpu_ns(pid_t pid)
{
	struct timespec ts;
	clockid_t clk;

	if (clock_getcpuclockid(pid, &clk) != 0 ||
	    clock_gettime(clk, &ts) < 0)
		return -1;
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The soft and hard RLIMIT_NOFILE of pid from /proc/PID/limits. */
static int
proc_nofile(pid_t pid, long *soft, long *hard)
{
	char path[64], line[256];
	FILE *fp;
	int r = -1;

	snprintf(path, sizeof(path), "/proc/%ld/limits", (long)pid);
	if ((fp = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (strncmp(line, "Max open files", 14) == 0 &&
		    sscanf(line + 14, "%ld %ld", soft, hard) == 2)
			r = 0;
	fclose(fp);
	return r;
}

/* One message there and back through mailbox box on c, each way bounded.
 * Its time in *ms.  0, or -1 with errno. */
static int
round_trip(struct ipc_conn *c, const char *box, uint64_t tag, long long *ms)
{
	long long t0 = test_now_ms();
	uint64_t got = 0;
	ssize_t n;

	if (ipc_send_timed(c, box, &tag, sizeof(tag), TEST_WAIT_MS,
	    NULL) < 0)
		return -1;
	n = ipc_recv_timed(c, box, &got, sizeof(got), TEST_WAIT_MS, NULL);
	if (n < 0)
		return -1;
	if (n != (ssize_t)sizeof(got) || got != tag) {
		errno = EBADMSG;
		return -1;
	}
	if (ms != NULL)
		*ms = test_now_ms() - t0;
	return 0;
}

/* ipcd with RLIMIT_NOFILE soft = hard = nofile (ipcd raises its soft
 * limit to the hard one: both are set, by the shell it is started
 * through, which then becomes it). */
static void
broker_start_nofile(struct broker *b, int nofile, const char *const *extra)
{
	char line[PATH_MAX + 64], script[96];
	char *argv[40];
	int n = 0;

	b->dir = test_tmpdir();
	assert_non_null(b->dir);
	snprintf(b->path, sizeof(b->path), "%s/ipcd.sock", b->dir);
	snprintf(b->where, sizeof(b->where), "unix:%s", b->path);
	snprintf(script, sizeof(script),
	    "ulimit -n %d || exit 126; exec \"$0\" \"$@\"", nofile);
	argv[n++] = "/bin/sh";
	argv[n++] = "-c";
	argv[n++] = script;
	argv[n++] = strdup(test_build_path("daemon/ipcd"));
	argv[n++] = "--socket";
	argv[n++] = b->path;
	for (int i = 0; extra != NULL && extra[i] != NULL && n < 39; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	assert_non_null(argv[3]);
	assert_int_equal(test_spawn(&b->proc, argv), 0);
	free(argv[3]);
	assert_int_equal(test_wait_line(b->proc.out, "ipcd: ready on ", line,
	    sizeof(line), TEST_WAIT_MS), 0);
	assert_string_equal(line, b->path);
}

/* --- 1. descriptors ------------------------------------------------------ */

#define EMF_NOFILE	64
#define EMF_ATTEMPTS	1000
#define EMF_CLIENTS	4
#define EMF_SAMPLE_MS	1000
#define EMF_CPU_MAX	10.0	/* percent of one CPU */
#define EMF_RESUME_MS	1000

/* Reads the broker's output as it comes (so that it never blocks on a
 * full pipe, whatever it logs), counting the lines about accept(). */
struct drain {
	int fds[2];
	atomic_int *stop;
	atomic_long lines, accept_lines;
};

static void *
drain_main(void *arg)
{
	struct drain *d = arg;
	char buf[4096];
	int open_fds = 2;

	while (open_fds > 0 && !atomic_load(d->stop)) {
		struct pollfd p[2] = {
			{ .fd = d->fds[0], .events = POLLIN },
			{ .fd = d->fds[1], .events = POLLIN },
		};

		if (poll(p, 2, 100) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (p[i].fd < 0 || (p[i].revents & (POLLIN | POLLHUP |
			    POLLERR)) == 0)
				continue;
			n = read(p[i].fd, buf, sizeof(buf) - 1);
			if (n <= 0) {
				close(d->fds[i]);
				d->fds[i] = -1;
				open_fds--;
				continue;
			}
			buf[n] = '\0';
			for (char *s = buf; (s = strchr(s, '\n')) != NULL; s++)
				atomic_fetch_add(&d->lines, 1);
			for (char *s = buf; (s = strstr(s, "accept")) != NULL;
			    s++)
				atomic_fetch_add(&d->accept_lines, 1);
		}
	}
	for (int i = 0; i < 2; i++)
		if (d->fds[i] >= 0)
			close(d->fds[i]);
	return NULL;
}

static void *
opener_main(void *arg)
{
	struct opener *o = arg;

	o->c = ipc_open(o->where);
	o->err = errno;
	o->done_ms = test_now_ms();
	if (write(o->pipe[1], "x", 1) < 0) {
		/* The test finds no byte and fails at its deadline. */
	}
	return NULL;
}

/* ipcd out of descriptors: clients connected before keep working, the
 * broker does not spin while accept() fails, and once descriptors are
 * free again a new client gets in within a second. */
static void
test_emfile_clients_keep_working_no_spin_and_resume(void **state)
{
	struct fix *f = *state;
	const char *const extra[] = { "--handshake-timeout", "600000", NULL };
	struct ipc_conn *c[EMF_CLIENTS], *fresh;
	struct drain *d = fix_alloc(f, sizeof(*d));
	struct ipc_mbox_attr attr;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct rlimit rl;
	unsigned long long ticks0, ticks1;
	long long t0, t1, t_close, deadline, paused0, paused, evicted;
	long long rt_max = 0, ms;
	long soft, hard;
	struct wire_frame hello = { .type = WIRE_HELLO, .id = 1 };
	uint8_t hbuf[256];
	long hlen;
	unsigned rt_ok = 0, refused = 0;
	int base, fds, fds_end, dt, held;
	long long ns0, ns1;
	double cpu, cpu_ticks;
	char st;
	uint64_t tag = 1;

	/* This process holds a thousand sockets. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < EMF_ATTEMPTS + 256) {
		if (rl.rlim_max != RLIM_INFINITY &&
		    rl.rlim_max < EMF_ATTEMPTS + 256) {
			print_message("hard RLIMIT_NOFILE %lu: too low\n",
			    (unsigned long)rl.rlim_max);
			skip();
		}
		rl.rlim_cur = EMF_ATTEMPTS + 256;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	broker_start_nofile(&f->b, EMF_NOFILE, extra);
	assert_int_equal(proc_nofile(f->b.proc.pid, &soft, &hard), 0);
	assert_int_equal(soft, EMF_NOFILE);
	assert_int_equal(hard, EMF_NOFILE);
	d->stop = &f->stop;
	d->fds[0] = dup(f->b.proc.out);
	d->fds[1] = dup(f->b.proc.err);
	assert_true(d->fds[0] >= 0 && d->fds[1] >= 0);
	dt = fix_thread(f, drain_main, d);

	for (int i = 0; i < EMF_CLIENTS; i++)
		c[i] = fix_open(f);
	ipc_mbox_attr_init(&attr);
	assert_int_equal(ipc_mbox_create(c[0], "emf", &attr, NULL), 0);
	for (int i = 0; i < EMF_CLIENTS; i++)
		if (round_trip(c[i], "emf", tag++, NULL) < 0)
			fail_msg("round trip before: %s", strerror(errno));
	base = fd_count(f->b.proc.pid, EMF_NOFILE);
	assert_true(base > 0 && base < EMF_NOFILE / 2);

	/* A thousand connections, held, each with its HELLO written at
	 * once: the broker accepts until it has no descriptor left, and
	 * those it accepted are clients like any other (not strangers
	 * silent in their handshake, which it would drop to make room);
	 * the rest wait in the listen queue. */
	f->held = calloc(EMF_ATTEMPTS, sizeof(*f->held));
	assert_non_null(f->held);
	hello.b.hello.magic = WIRE_MAGIC;
	hello.b.hello.version_min = WIRE_VERSION;
	hello.b.hello.version_max = WIRE_VERSION;
	hlen = wire_encode(&hello, hbuf, sizeof(hbuf));
	assert_true(hlen > 0);
	assert_true(strlen(f->b.path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, f->b.path, strlen(f->b.path) + 1);
	for (int i = 0; i < EMF_ATTEMPTS; i++) {
		int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);

		if (s < 0)
			fail_msg("socket #%d: %s", i, strerror(errno));
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			if (errno != EAGAIN)
				fail_msg("connect #%d: %s", i,
				    strerror(errno));
			refused++;	/* the listen queue is full */
			close(s);
			continue;
		}
		f->held[f->nheld++] = s;
		if (write(s, hbuf, (size_t)hlen) != hlen)
			fail_msg("HELLO #%d: %s", i, strerror(errno));
	}
	/* More connected than it can accept: accept() fails from then on
	 * (EMFILE), and keeps failing while they are held. */
	assert_true(f->nheld > EMF_NOFILE - base + 16);
	deadline = test_now_ms() + TEST_WAIT_MS;
	while ((fds = fd_count(f->b.proc.pid, EMF_NOFILE)) < EMF_NOFILE) {
		if (test_now_ms() > deadline)
			fail_msg("the broker holds %d descriptors, not %d",
			    fds, EMF_NOFILE);
		if (round_trip(c[0], "emf", tag++, NULL) < 0)
			fail_msg("round trip while filling: %s",
			    strerror(errno));
	}

	/* A second of it: the broker's CPU time, while every client makes
	 * a round trip every 50 ms. */
	paused0 = broker_counter(c[0], "accept_paused");
	assert_int_equal(proc_stat(f->b.proc.pid, &st, &ticks0), 0);
	ns0 = proc_cpu_ns(f->b.proc.pid);
	t0 = test_now_ms();
	do {
		for (int i = 0; i < EMF_CLIENTS; i++) {
			if (round_trip(c[i], "emf", tag++, &ms) < 0)
				fail_msg("round trip %u, client %d, while out "
				    "of descriptors: %s", rt_ok, i,
				    strerror(errno));
			rt_ok++;
			if (ms > rt_max)
				rt_max = ms;
		}
		poll(NULL, 0, 50);
	} while (test_now_ms() - t0 < EMF_SAMPLE_MS);
	assert_int_equal(proc_stat(f->b.proc.pid, &st, &ticks1), 0);
	ns1 = proc_cpu_ns(f->b.proc.pid);
	t1 = test_now_ms();
	fds_end = fd_count(f->b.proc.pid, EMF_NOFILE);
	cpu_ticks = 100.0 * (double)(ticks1 - ticks0) /
	    (double)sysconf(_SC_CLK_TCK) / ((double)(t1 - t0) / 1000.0);
	cpu = ns0 >= 0 && ns1 >= ns0 ? 100.0 * (double)(ns1 - ns0) / 1e6 /
	    (double)(t1 - t0) : cpu_ticks;
	paused = broker_counter(c[0], "accept_paused");
	evicted = broker_counter(c[0], "handshakes_evicted");

	/* Descriptors free again: a new client within a second. */
	held = f->nheld;
	fix_close_held(f);
	t_close = test_now_ms();
	assert_int_equal(pipe2(f->opener.pipe, O_CLOEXEC), 0);
	f->opener.where = f->b.where;
	fix_thread(f, opener_main, &f->opener);
	if (test_wait_readable(f->opener.pipe[0], TEST_WAIT_MS) != 1)
		fail_msg("no new client in %d ms after the held connections "
		    "closed", TEST_WAIT_MS);
	fix_join(f, f->nthreads - 1);
	fresh = f->opener.c;
	if (fresh == NULL)
		fail_msg("new client: %s", strerror(f->opener.err));

	print_message("emfile: %d held (%u more refused by the listen "
	    "queue), broker at %d of %d descriptors (%d before)\n",
	    held, refused, fds_end, EMF_NOFILE, base);
	print_message("emfile: broker CPU %.2f%% of one CPU over %lld ms "
	    "out of descriptors (%.3f ms CPU time; utime+stime %llu ticks, "
	    "%.1f%%); %u round trips, slowest %lld ms\n", cpu, t1 - t0,
	    ns0 >= 0 ? (double)(ns1 - ns0) / 1e6 : -1.0, ticks1 - ticks0,
	    cpu_ticks, rt_ok, rt_max);
	print_message("emfile: new client in %lld ms after the close; "
	    "accept_paused %lld (%lld of them in the second sampled), "
	    "handshakes_evicted %lld; %ld log lines (%ld about accept)\n",
	    f->opener.done_ms - t_close, paused, paused - paused0, evicted,
	    atomic_load(&d->lines), atomic_load(&d->accept_lines));

	assert_int_equal(fds_end, EMF_NOFILE);
	if (cpu >= EMF_CPU_MAX)
		fail_msg("the broker spins: %.1f%% CPU while accept() fails "
		    "(limit %.0f%%)", cpu, EMF_CPU_MAX);
	if (paused < 1)
		fail_msg("counter accept_paused: %lld (expected >= 1)",
		    paused);
	if (f->opener.done_ms - t_close >= EMF_RESUME_MS)
		fail_msg("new client took %lld ms (limit %d)",
		    f->opener.done_ms - t_close, EMF_RESUME_MS);
	/* Everyone works afterwards. */
	if (round_trip(fresh, "emf", tag++, NULL) < 0)
		fail_msg("round trip, new client: %s", strerror(errno));
	for (int i = 0; i < EMF_CLIENTS; i++)
		if (round_trip(c[i], "emf", tag++, NULL) < 0)
			fail_msg("round trip after: %s", strerror(errno));
	broker_stop(&f->b);
	fix_join(f, dt);
}

/* --- 2. the broker stopped under load ------------------------------------ */

#define SL_TIMEOUT_MS	300
#define SL_PAUSE_MS	2000
#define SL_BIG		(1u << 20)	/* > a UNIX socket's buffer */
#define SL_SMALL	64u
#define SL_SENDERS	3		/* #0 big, the others small */
#define SL_RECEIVERS	2
#define SL_SEQ_MAX	20000u
#define SL_END		UINT64_MAX	/* a sender's last message */
#define SL_BOUND_MS	(SL_TIMEOUT_MS + LIB_GRACE_MS + SCHED_SLACK_MS)

struct sl_hdr {
	uint32_t producer;
	uint32_t check;
	uint64_t seq;
};

static uint32_t
sl_check(uint32_t producer, uint64_t seq)
{
	return (uint32_t)(seq * 2654435761u) ^ (producer * 40503u) ^
	    0x5eed5eedu;
}

static size_t
sl_len(uint32_t producer)
{
	return producer == 0 ? SL_BIG : SL_SMALL;
}

static uint8_t
sl_byte(uint64_t seq, size_t i)
{
	return (uint8_t)(seq * 131u + i * 7u + (i >> 8));
}

struct sl;

/* One thread: a sender or a receiver, on a connection of its own. */
struct sl_actor {
	struct sl *sl;
	int idx;			/* sender: producer number */
	struct ipc_conn *c;
	uint8_t *buf;
	/* Every call's time, and how it ended. */
	unsigned calls, ok, timedout, stop_timedout, stop_ok;
	long long max_ms;		/* longest call */
	long long stop_max_ms;		/* longest of those in the stop */
	atomic_llong last_ok_ms;
	atomic_uint nok;
	uint64_t nseq;			/* sender: sent 0..nseq-1 */
	uint8_t *status;		/* sender: per seq, 1 ok, 2 timed out */
	unsigned failures;		/* sender: ipc_send_failure reports */
	char err[256];			/* the first thing wrong */
};

struct sl {
	const char *box;
	atomic_int *stop;		/* the fixture's: give up */
	atomic_int stop_sending;
	atomic_int ends;		/* END messages handed out */
	atomic_llong t_stop, t_cont;	/* the broker stopped, continued */
	pthread_mutex_t mu;
	uint8_t *got[SL_SENDERS];	/* per seq, times received */
	unsigned unknown;		/* messages nobody sent */
	struct sl_actor send[SL_SENDERS], recv[SL_RECEIVERS];
};

static void
sl_note(struct sl_actor *a, const char *fmt, ...)
{
	va_list ap;

	if (a->err[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(a->err, sizeof(a->err), fmt, ap);
	va_end(ap);
}

/* Account for one timed call that took [t0, t1] and ended in r/err. */
static void
sl_timed(struct sl_actor *a, long long t0, long long t1, int ok, int err,
    const char *what)
{
	long long ts = atomic_load(&a->sl->t_stop);
	long long tc = atomic_load(&a->sl->t_cont);
	int in_stop = ts != 0 && t0 >= ts && (tc == 0 || t1 <= tc);

	a->calls++;
	if (t1 - t0 > a->max_ms)
		a->max_ms = t1 - t0;
	if (t1 - t0 > SL_BOUND_MS)
		sl_note(a, "%s took %lld ms (timeout %d ms, bound %d)", what,
		    t1 - t0, SL_TIMEOUT_MS, SL_BOUND_MS);
	if (in_stop && t1 - t0 > a->stop_max_ms)
		a->stop_max_ms = t1 - t0;
	if (ok) {
		a->ok++;
		atomic_store(&a->last_ok_ms, t1);
		atomic_fetch_add(&a->nok, 1);
		if (in_stop)
			a->stop_ok++;
	} else if (err == ETIMEDOUT || err == EAGAIN) {
		a->timedout++;
		if (in_stop)
			a->stop_timedout++;
	} else {
		sl_note(a, "%s: %s", what, strerror(err));
	}
}

static void
sl_fill(struct sl_actor *a, uint64_t seq, size_t len)
{
	struct sl_hdr h = { (uint32_t)a->idx, sl_check((uint32_t)a->idx,
	    seq), seq };

	for (size_t i = sizeof(h); i < len; i++)
		a->buf[i] = sl_byte(seq, i);
	memcpy(a->buf, &h, sizeof(h));
}

static void *
sl_sender(void *arg)
{
	struct sl_actor *a = arg;
	struct sl *sl = a->sl;
	size_t len = sl_len((uint32_t)a->idx);
	struct ipc_send_failure sf;

	while (!atomic_load(&sl->stop_sending) && !atomic_load(sl->stop) &&
	    a->nseq < SL_SEQ_MAX && a->err[0] == '\0') {
		uint64_t seq = a->nseq++;
		long long t0 = test_now_ms();
		int r, err;

		sl_fill(a, seq, len);
		r = ipc_send_timed(a->c, sl->box, a->buf, len, SL_TIMEOUT_MS,
		    NULL);
		err = errno;
		sl_timed(a, t0, test_now_ms(), r == 0, err, "send");
		a->status[seq] = r == 0 ? 1 : 2;
		/* A pace the receivers keep up with. */
		poll(NULL, 0, a->idx == 0 ? 20 : 2);
	}
	if (a->err[0] == '\0' && !atomic_load(sl->stop)) {
		sl_fill(a, SL_END, sizeof(struct sl_hdr));
		if (ipc_send_timed(a->c, sl->box, a->buf,
		    sizeof(struct sl_hdr), TEST_WAIT_MS, NULL) < 0)
			sl_note(a, "send END: %s", strerror(errno));
	}
	while (ipc_send_failure(a->c, &sf) == 0)
		a->failures++;
	return NULL;
}

/* Take a message received by a: counted against what was sent. */
static void
sl_account(struct sl_actor *a, ssize_t n, const struct ipc_msg_info *info)
{
	struct sl *sl = a->sl;
	struct sl_hdr h;

	if (n < (ssize_t)sizeof(h)) {
		sl_note(a, "a message of %zd bytes", n);
		return;
	}
	memcpy(&h, a->buf, sizeof(h));
	if (h.producer >= SL_SENDERS ||
	    h.check != sl_check(h.producer, h.seq)) {
		sl_note(a, "a message with a bad header");
		return;
	}
	if (strcmp(info->source, sl->box) != 0)
		sl_note(a, "a message from %s", info->source);
	if (h.seq == SL_END) {
		atomic_fetch_add(&sl->ends, 1);
		return;
	}
	if ((size_t)n != sl_len(h.producer)) {
		sl_note(a, "producer %u #%llu: %zd bytes", h.producer,
		    (unsigned long long)h.seq, n);
		return;
	}
	for (size_t i = sizeof(h); i < (size_t)n; i++)
		if (a->buf[i] != sl_byte(h.seq, i)) {
			sl_note(a, "producer %u #%llu: byte %zu differs",
			    h.producer, (unsigned long long)h.seq, i);
			return;
		}
	pthread_mutex_lock(&sl->mu);
	if (h.seq >= SL_SEQ_MAX)
		sl->unknown++;
	else if (sl->got[h.producer][h.seq] < 255)
		sl->got[h.producer][h.seq]++;
	pthread_mutex_unlock(&sl->mu);
}

static void *
sl_receiver(void *arg)
{
	struct sl_actor *a = arg;
	struct sl *sl = a->sl;
	struct ipc_msg_info info;
	const size_t cap = SL_BIG + 64;

	while (atomic_load(&sl->ends) < SL_SENDERS && !atomic_load(sl->stop) &&
	    a->err[0] == '\0') {
		long long t0 = test_now_ms();
		ssize_t n = ipc_recv_timed(a->c, sl->box, a->buf, cap,
		    SL_TIMEOUT_MS, &info);
		int err = errno;

		sl_timed(a, t0, test_now_ms(), n >= 0, err, "recv");
		if (n >= 0)
			sl_account(a, n, &info);
	}
	/* Every sender's END is out: everything is in.  What the broker
	 * handed this connection (a receive given up on while it was
	 * stopped took it) is read before its answer to this. */
	while (a->err[0] == '\0' && !atomic_load(sl->stop)) {
		ssize_t n = ipc_recv_timed(a->c, sl->box, a->buf, cap, 0,
		    &info);

		if (n < 0) {
			if (errno != EAGAIN)
				sl_note(a, "last recv: %s", strerror(errno));
			break;
		}
		sl_account(a, n, &info);
	}
	return NULL;
}

/* Wait until every actor has had a call succeed after t, and more
 * calls succeed than until now (deadline). */
static void
sl_wait_progress(struct sl *sl, long long t, unsigned more)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	unsigned want[SL_SENDERS + SL_RECEIVERS];

	for (int i = 0; i < SL_SENDERS; i++)
		want[i] = atomic_load(&sl->send[i].nok) + more;
	for (int i = 0; i < SL_RECEIVERS; i++)
		want[SL_SENDERS + i] = atomic_load(&sl->recv[i].nok) + more;
	for (;;) {
		int all = 1;

		for (int i = 0; i < SL_SENDERS; i++)
			if (atomic_load(&sl->send[i].last_ok_ms) <= t ||
			    atomic_load(&sl->send[i].nok) < want[i])
				all = 0;
		for (int i = 0; i < SL_RECEIVERS; i++)
			if (atomic_load(&sl->recv[i].last_ok_ms) <= t ||
			    atomic_load(&sl->recv[i].nok) < want[SL_SENDERS + i])
				all = 0;
		if (all)
			return;
		if (test_now_ms() > deadline)
			break;
		poll(NULL, 0, 5);
	}
	for (int i = 0; i < SL_SENDERS; i++)
		if (sl->send[i].err[0] != '\0')
			fail_msg("sender %d: %s", i, sl->send[i].err);
	for (int i = 0; i < SL_RECEIVERS; i++)
		if (sl->recv[i].err[0] != '\0')
			fail_msg("receiver %d: %s", i, sl->recv[i].err);
	fail_msg("no progress of every sender and receiver in %d ms",
	    TEST_WAIT_MS);
}

/* Timed sends and receives while the broker is stopped for two seconds:
 * each returns ETIMEDOUT within its timeout and a bounded slack (the
 * 1 MiB sends in the middle of a write the broker does not read), and
 * after SIGCONT nothing accepted is lost or delivered twice. */
static void
test_broker_stopped_timed_calls_return_nothing_accepted_lost(void **state)
{
	struct fix *f = *state;
	struct sl *sl = fix_alloc(f, sizeof(*sl));
	struct ipc_mbox_attr attr;
	struct ipc_conn *admin;
	unsigned long long ticks;
	unsigned lost = 0, twice = 0, late = 0, never = 0, sent_ok = 0;
	unsigned sent_to = 0;
	long long deadline, over = 0, stop_over = 0;
	int th[SL_SENDERS + SL_RECEIVERS], nth = 0;
	char st = '?';

	broker_start(&f->b, NULL);
	admin = fix_open(f);
	ipc_mbox_attr_init(&attr);
	attr.capacity = 100000;
	attr.max_bytes = 512ll << 20;
	assert_int_equal(ipc_mbox_create(admin, "load", &attr, NULL), 0);
	sl->box = "load";
	sl->stop = &f->stop;
	assert_int_equal(pthread_mutex_init(&sl->mu, NULL), 0);
	for (int i = 0; i < SL_SENDERS; i++) {
		struct sl_actor *a = &sl->send[i];

		sl->got[i] = fix_alloc(f, SL_SEQ_MAX);
		a->sl = sl;
		a->idx = i;
		a->c = fix_open(f);
		a->buf = fix_alloc(f, sl_len((uint32_t)i));
		a->status = fix_alloc(f, SL_SEQ_MAX);
	}
	for (int i = 0; i < SL_RECEIVERS; i++) {
		struct sl_actor *a = &sl->recv[i];

		a->sl = sl;
		a->idx = i;
		a->c = fix_open(f);
		a->buf = fix_alloc(f, SL_BIG + 64);
	}
	for (int i = 0; i < SL_RECEIVERS; i++)
		th[nth++] = fix_thread(f, sl_receiver, &sl->recv[i]);
	for (int i = 0; i < SL_SENDERS; i++)
		th[nth++] = fix_thread(f, sl_sender, &sl->send[i]);
	sl_wait_progress(sl, 0, 20);

	/* Stopped: every call now waits for an answer that does not come
	 * (or, a 1 MiB send, for room in a socket nobody reads). */
	atomic_store(&sl->t_stop, test_now_ms());
	assert_int_equal(kill(f->b.proc.pid, SIGSTOP), 0);
	f->broker_paused = 1;
	deadline = test_now_ms() + TEST_WAIT_MS;
	while (proc_stat(f->b.proc.pid, &st, &ticks) == 0 && st != 'T' &&
	    test_now_ms() < deadline)
		poll(NULL, 0, 1);
	assert_int_equal(st, 'T');
	poll(NULL, 0, SL_PAUSE_MS);
	atomic_store(&sl->t_cont, test_now_ms());
	assert_int_equal(kill(f->b.proc.pid, SIGCONT), 0);
	f->broker_paused = 0;

	/* Going again: everyone gets through, then the senders finish. */
	sl_wait_progress(sl, atomic_load(&sl->t_cont), 20);
	atomic_store(&sl->stop_sending, 1);
	for (int i = 0; i < nth; i++)
		fix_join(f, th[i]);

	for (int i = 0; i < SL_SENDERS; i++) {
		struct sl_actor *a = &sl->send[i];

		if (a->err[0] != '\0')
			fail_msg("sender %d: %s", i, a->err);
		print_message("stop: sender %d (%s): %u calls, %u ok, %u "
		    "timed out (%u in the stop, longest %lld ms), longest "
		    "call %lld ms, %u failure reports\n", i, i == 0 ?
		    "1 MiB" : "64 B", a->calls, a->ok, a->timedout,
		    a->stop_timedout, a->stop_max_ms, a->max_ms, a->failures);
		if (a->stop_timedout == 0)
			fail_msg("sender %d: no call timed out while the "
			    "broker was stopped", i);
		if (a->max_ms - SL_TIMEOUT_MS > over)
			over = a->max_ms - SL_TIMEOUT_MS;
		if (a->stop_max_ms - SL_TIMEOUT_MS > stop_over)
			stop_over = a->stop_max_ms - SL_TIMEOUT_MS;
	}
	for (int i = 0; i < SL_RECEIVERS; i++) {
		struct sl_actor *a = &sl->recv[i];

		if (a->err[0] != '\0')
			fail_msg("receiver %d: %s", i, a->err);
		print_message("stop: receiver %d: %u calls, %u ok, %u timed "
		    "out (%u in the stop, longest %lld ms), longest call "
		    "%lld ms\n", i, a->calls, a->ok, a->timedout,
		    a->stop_timedout, a->stop_max_ms, a->max_ms);
		if (a->stop_timedout == 0)
			fail_msg("receiver %d: no call timed out while the "
			    "broker was stopped", i);
		if (a->max_ms - SL_TIMEOUT_MS > over)
			over = a->max_ms - SL_TIMEOUT_MS;
		if (a->stop_max_ms - SL_TIMEOUT_MS > stop_over)
			stop_over = a->stop_max_ms - SL_TIMEOUT_MS;
	}
	assert_int_equal(atomic_load(&sl->ends), SL_SENDERS);
	for (int p = 0; p < SL_SENDERS; p++)
		for (uint64_t s = 0; s < sl->send[p].nseq; s++) {
			uint8_t g = sl->got[p][s];

			if (sl->send[p].status[s] == 1) {
				sent_ok++;
				lost += g == 0;
			} else {
				sent_to++;
				late += g == 1;
				never += g == 0;
			}
			twice += g > 1;
		}
	for (int p = 0; p < SL_SENDERS; p++)
		for (uint64_t s = sl->send[p].nseq; s < SL_SEQ_MAX; s++)
			sl->unknown += sl->got[p][s] != 0;
	print_message("stop: %u sends ok, all received once: %s (%u lost, "
	    "%u twice, %u unknown); %u timed out: %u accepted late, %u "
	    "not\n", sent_ok, lost + twice + sl->unknown ? "NO" : "yes",
	    lost, twice, sl->unknown, sent_to, late, never);
	print_message("stop: overshoot past the %d ms timeout: %lld ms "
	    "(calls in the stop: %lld ms; bound %d)\n", SL_TIMEOUT_MS, over,
	    stop_over, SL_BOUND_MS - SL_TIMEOUT_MS);
	assert_int_equal(lost, 0);
	assert_int_equal(twice, 0);
	assert_int_equal(sl->unknown, 0);
	/* The broker is well. */
	assert_int_equal(round_trip(admin, "load", 7, NULL), 0);
	broker_stop(&f->b);
	pthread_mutex_destroy(&sl->mu);
}

/* --- 3. allocation failures ---------------------------------------------- */

#define FA_CLIENT_MS	10000	/* a scenario child, whole */
#define FA_SLOW_MS	(LIB_GRACE_MS - 100)	/* a timed call with 0
						 * answered later: none */
#define FA_BUDGET_MS	55000
#define FA_BIG		(200u << 10)	/* > the broker's 64 KiB reads */

struct fa_report {
	unsigned long counted, failed, live;
	unsigned long long bytes;
	int overflow;
	char at[1024];			/* the failing call's stack */
};

/* The scenario, in a child process (so that a call the broker never
 * answers cannot hang the test): three clients; a mailbox created, a
 * message sent and received, a receive armed before its message, one
 * through a receive stream, one of 200 KiB, a sender parked for room, a
 * list of clients, one message through the direct queue, the mailbox
 * deleted.  verify (a fresh client after the failures, on mailboxes of
 * its own, "fa-box" deleted first if it is left): each step must
 * succeed.  Otherwise a step may fail (an error answer, or the broker
 * closed that client: the steps after it on that client then fail too),
 * but promptly, and what succeeds must be right: messages are whole,
 * and every one accepted is received or still queued.  One line on out:
 * "OK", "FAIL step errno" (the first failure), or "BAD what". */
struct fa_ctx {
	int strict;
	char first[128];
	char bad[256];
	unsigned fails;
	/* Messages to the mailbox: sends answered SENT, sends whose
	 * answer was lost with their connection (ECONNRESET: sent or
	 * not), messages received from it; the receiver disconnected by
	 * the broker (what it had been handed may come back, redelivered). */
	unsigned sent_ok, sent_unknown, received;
	int c_reset;
};

static void
fa_fail(struct fa_ctx *x, const char *step, int err)
{
	x->fails++;
	if (x->strict && x->bad[0] == '\0')
		snprintf(x->bad, sizeof(x->bad), "%s: %s", step,
		    strerror(err));
	if (x->first[0] == '\0')
		snprintf(x->first, sizeof(x->first), "%s %d", step, err);
}

static void
fa_bad(struct fa_ctx *x, const char *fmt, ...)
{
	va_list ap;

	if (x->bad[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(x->bad, sizeof(x->bad), fmt, ap);
	va_end(ap);
}

/* A call with timeout 0: answered at once, or the broker dropped it. */
static void
fa_prompt(struct fa_ctx *x, const char *step, long long t0)
{
	long long ms = test_now_ms() - t0;

	if (ms >= FA_SLOW_MS)
		fa_bad(x, "%s: no answer (%lld ms)", step, ms);
}

/* Send len bytes to box with timeout 0: 1 sent, 0 not (noted). */
static int
fa_send(struct fa_ctx *x, struct ipc_conn *c, const char *box,
    const void *p, size_t len, const char *step)
{
	long long t0 = test_now_ms();
	int r = ipc_send_timed(c, box, p, len, 0, NULL);

	if (r < 0) {
		if (errno == ECONNRESET)
			x->sent_unknown++;
		fa_fail(x, step, errno);
	} else {
		x->sent_ok++;
	}
	fa_prompt(x, step, t0);
	return r == 0;
}

/* Receive from box until the message want (len bytes) comes; earlier
 * messages of the scenario left queued by failures before are passed
 * over, anything else is BAD.  sent: want was sent, so it must come
 * (else wait for nothing). */
static void
fa_recv_until(struct fa_ctx *x, struct ipc_conn *c, const char *box,
    const void *want, size_t len, int sent, const char *step)
{
	static uint8_t buf[FA_BIG + 64];
	static const char *const known[] = { "hello", "again", "s1" };

	for (int i = 0; i < 5; i++) {
		long long t0 = test_now_ms();
		ssize_t n = ipc_recv_timed(c, box, buf, sizeof(buf),
		    sent ? 1000 : 0, NULL);
		int ok = 0;

		if (n < 0) {
			if (errno == ECONNRESET)
				x->c_reset = 1;
			if (sent && errno == ETIMEDOUT &&
			    test_now_ms() - t0 >= 1000 + FA_SLOW_MS)
				fa_bad(x, "%s: no answer", step);
			if (sent && errno == EAGAIN)
				fa_bad(x, "%s: EAGAIN after its send", step);
			fa_fail(x, step, errno);
			return;
		}
		x->received++;
		if ((size_t)n == len && memcmp(buf, want, len) == 0)
			return;
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if ((size_t)n == strlen(known[k]) &&
			    memcmp(buf, known[k], (size_t)n) == 0)
				ok = 1;
		if (!ok) {
			fa_bad(x, "%s: %zd bytes, not a message sent", step,
			    n);
			return;
		}
	}
	fa_bad(x, "%s: its message never came", step);
}

static int
fa_client_cb(const struct ipc_client_info *info, void *arg)
{
	(void)info;
	++*(int *)arg;
	return 0;
}

struct fa_parker {
	struct ipc_conn *c;
	const char *box;
	int r, err;
	atomic_int done;
};

static void *
fa_parker_main(void *arg)
{
	struct fa_parker *p = arg;

	/* Parked until p1 is taken; when that cannot be (its receiver
	 * gone), TIMEDOUT after a second. */
	p->r = ipc_send_timed(p->c, p->box, "p2", 2, 1000, NULL);
	p->err = errno;
	atomic_store(&p->done, 1);
	return NULL;
}

/* b fills a mailbox of capacity 1, then sends again from a thread: the
 * broker parks that send until c takes the first message. */
static void
fa_parked_sender(struct fa_ctx *x, struct ipc_conn *a, struct ipc_conn *b,
    struct ipc_conn *c, int verify)
{
	const char *small = verify ? "fa-check-1" : "fa-one";
	struct fa_parker p = { .c = b, .box = small };
	struct ipc_mbox_attr attr;
	struct ipc_mbox_info mi;
	long long deadline, t0;
	pthread_t t;
	char buf[8];
	ssize_t n;
	int sent1;

	ipc_mbox_attr_init(&attr);
	attr.capacity = 1;
	if (ipc_mbox_create(a, small, &attr, NULL) < 0) {
		fa_fail(x, "create-1", errno);
		return;
	}
	t0 = test_now_ms();
	if ((sent1 = ipc_send_timed(b, small, "p1", 2, 0, NULL) == 0) == 0)
		fa_fail(x, "send-p1", errno);
	fa_prompt(x, "send-p1", t0);
	if (pthread_create(&t, NULL, fa_parker_main, &p) != 0) {
		fa_bad(x, "pthread_create");
		return;
	}
	/* Until the broker has parked it (or answered it: refused). */
	deadline = test_now_ms() + 2000;
	while (!atomic_load(&p.done) && test_now_ms() < deadline) {
		if (ipc_mbox_stat(a, small, &mi) < 0) {
			fa_fail(x, "stat-p", errno);
			break;
		}
		if (mi.waiting_senders == 1)
			break;
	}
	/* p1 out makes room: the parked p2 goes in (and its send
	 * returns), then it is taken. */
	if (sent1) {
		n = ipc_recv_timed(c, small, buf, sizeof(buf), 1000, NULL);
		if (n < 0) {
			if (errno == ECONNRESET)
				x->c_reset = 1;
			fa_fail(x, "recv-p1", errno);
		} else if (n != 2 || memcmp(buf, "p1", 2) != 0) {
			fa_bad(x, "recv-p1: not p1");
		}
	}
	pthread_join(t, NULL);
	if (p.r < 0) {
		fa_fail(x, "send-p2", p.err);
	} else {
		n = ipc_recv_timed(c, small, buf, sizeof(buf), 0, NULL);
		if (n < 0) {
			if (errno == EAGAIN)
				fa_bad(x, "recv-p2: p2 sent, not there");
			fa_fail(x, "recv-p2", errno);
		} else if (n != 2 || memcmp(buf, "p2", 2) != 0) {
			fa_bad(x, "recv-p2: not p2");
		}
	}
	if (ipc_mbox_delete(a, small) < 0)
		fa_fail(x, "delete-1", errno);
}

/* The receiver closed: wait (bounded) for the broker to see it (this
 * process then has at most the two other connections), then check
 * that received + queued is what was sent. */
static void
fa_conservation(struct fa_ctx *x, struct ipc_conn *a, const char *box)
{
	long long deadline = test_now_ms() + FA_CLIENT_MS / 2;
	struct ipc_mbox_info mi;
	unsigned have, lo, hi;
	int nconns;

	do {
		nconns = 0;
		if (ipc_clients(a, fa_client_cb, &nconns) < 0) {
			fa_fail(x, "clients-2", errno);
			return;
		}
	} while (nconns > 2 && test_now_ms() < deadline);
	if (nconns > 2) {
		fa_bad(x, "the receiver's close not seen by the broker");
		return;
	}
	if (ipc_mbox_stat(a, box, &mi) < 0) {
		if (errno != ENOENT)	/* never created */
			fa_fail(x, "stat-3", errno);
		if (errno == ENOENT && x->sent_ok > 0)
			fa_bad(x, "mailbox gone with messages sent to it");
		return;
	}
	have = x->received + mi.depth;
	lo = x->sent_ok;
	hi = x->c_reset ? UINT_MAX : x->sent_ok + x->sent_unknown;
	if (have < lo || have > hi)
		fa_bad(x, "%u sent (%u more perhaps), %u received, %u queued",
		    x->sent_ok, x->sent_unknown, x->received, mi.depth);
}

static void
fa_scenario(const char *where, int verify, int out)
{
	struct fa_ctx x = { .strict = verify };
	const char *box = verify ? "fa-check" : "fa-box";
	struct ipc_conn *a, *b, *c;
	struct ipc_mbox_info mi;
	struct ipc_msg_info info;
	char buf[64], self[32], line[400];
	uint8_t *big = malloc(FA_BIG);
	int sent = 0, got = 0, sent_err = 0, deleted = 0, r, nclients = 0;
	long long t0;
	ssize_t n;

	snprintf(self, sizeof(self), "pid:%ld", (long)getpid());
	if ((a = ipc_open(where)) == NULL)
		fa_fail(&x, "open-a", errno);
	if ((b = ipc_open(where)) == NULL)
		fa_fail(&x, "open-b", errno);
	if ((c = ipc_open(where)) == NULL)
		fa_fail(&x, "open-c", errno);
	if (verify && a != NULL && ipc_mbox_delete(a, "fa-box") < 0 &&
	    errno != ENOENT)
		fa_fail(&x, "delete-old", errno);

	if (a != NULL && ipc_mbox_create(a, box, NULL, &mi) < 0)
		fa_fail(&x, "create", errno);
	if (b != NULL && !(sent = fa_send(&x, b, box, "hello", 5, "send")))
		sent_err = errno;
	if (c != NULL) {
		t0 = test_now_ms();
		n = ipc_recv_timed(c, box, buf, sizeof(buf), 0, &info);
		if (n >= 0) {
			got = 1;
			x.received++;
			if (n != 5 || memcmp(buf, "hello", 5) != 0 ||
			    strcmp(info.source, box) != 0)
				fa_bad(&x, "recv: %zd bytes, not hello", n);
			if (!sent && sent_err != ECONNRESET)
				fa_bad(&x, "recv: a message whose send "
				    "failed (%s)", strerror(sent_err));
		} else {
			if (sent && errno == EAGAIN)
				fa_bad(&x, "recv: EAGAIN after a send that "
				    "succeeded");
			if (errno == ECONNRESET)
				x.c_reset = 1;
			fa_fail(&x, "recv", errno);
		}
		fa_prompt(&x, "recv", t0);
	}
	/* The message is in one place: received, or still queued (a
	 * receiver the broker closed gave it back first). */
	if (a != NULL) {
		if (ipc_mbox_stat(a, box, &mi) == 0) {
			if (sent && got + mi.depth != 1)
				fa_bad(&x, "sent once: received %d, queued "
				    "%u", got, mi.depth);
			if (!sent && got + mi.depth > 1)
				fa_bad(&x, "received %d, queued %u", got,
				    mi.depth);
			if (!sent && sent_err != ECONNRESET && mi.depth != 0)
				fa_bad(&x, "a refused send left %u queued",
				    mi.depth);
		} else {
			fa_fail(&x, "stat", errno);
		}
	}
	/* A receive waiting before its message comes. */
	if (b != NULL && c != NULL) {
		int armed = ipc_recv_arm(c, box) == 0, sent2;

		if (!armed)
			fa_fail(&x, "arm", errno);
		sent2 = fa_send(&x, b, box, "again", 5, "send-2");
		if (armed)
			fa_recv_until(&x, c, box, "again", 5, sent2, "recv-2");
	}
	/* A receive stream: the broker pushes what comes. */
	if (b != NULL && c != NULL) {
		int sent3;

		if (ipc_set_prefetch(c, 4) < 0)
			fa_fail(&x, "prefetch", errno);
		sent3 = fa_send(&x, b, box, "s1", 2, "send-3");
		fa_recv_until(&x, c, box, "s1", 2, sent3, "recv-3");
		if (ipc_set_prefetch(c, 0) < 0)
			fa_fail(&x, "prefetch-0", errno);
	}
	/* A message larger than a read: buffers of its own both ways. */
	if (b != NULL && c != NULL && big != NULL) {
		int sent4;

		for (size_t i = 0; i < FA_BIG; i++)
			big[i] = (uint8_t)(i * 7 + 3);
		sent4 = fa_send(&x, b, box, big, FA_BIG, "send-4");
		fa_recv_until(&x, c, box, big, FA_BIG, sent4, "recv-4");
	}
	/* A sender waiting for room: a mailbox of one, full. */
	if (a != NULL && b != NULL && c != NULL)
		fa_parked_sender(&x, a, b, c, verify);
	/* Lists: many frames to one answer. */
	if (a != NULL && ipc_clients(a, fa_client_cb, &nclients) < 0)
		fa_fail(&x, "clients", errno);
	/* The direct queue. */
	if (a != NULL && b != NULL) {
		int dsent = 0;

		t0 = test_now_ms();
		if (ipc_send_timed(a, self, "direct", 6, 0, NULL) == 0)
			dsent = 1;
		else
			fa_fail(&x, "send-direct", errno);
		fa_prompt(&x, "send-direct", t0);
		t0 = test_now_ms();
		n = ipc_recv_timed(b, NULL, buf, sizeof(buf), 0, &info);
		if (n >= 0) {
			if (n != 6 || memcmp(buf, "direct", 6) != 0)
				fa_bad(&x, "recv-direct: not the message");
		} else {
			if (dsent && errno == EAGAIN)
				fa_bad(&x, "recv-direct: EAGAIN after a send "
				    "that succeeded");
			fa_fail(&x, "recv-direct", errno);
		}
		fa_prompt(&x, "recv-direct", t0);
	}
	/* Every message accepted is received or still queued: once the
	 * receiver is gone (what it held unacknowledged goes back), the
	 * mailbox holds the rest. */
	ipc_close(c);
	c = NULL;
	if (a != NULL)
		fa_conservation(&x, a, box);
	if (a != NULL) {
		if ((r = ipc_mbox_delete(a, box)) == 0)
			deleted = 1;
		else
			fa_fail(&x, "delete", errno);
	}
	if (b != NULL && deleted) {
		if (ipc_mbox_stat(b, box, &mi) == 0)
			fa_bad(&x, "stat: the mailbox is there after its "
			    "delete");
		else if (errno != ENOENT)
			fa_fail(&x, "stat-2", errno);
	}
	ipc_close(a);
	ipc_close(b);
	ipc_close(c);
	free(big);
	if (x.bad[0] != '\0')
		snprintf(line, sizeof(line), "BAD %s\n", x.bad);
	else if (x.first[0] != '\0')
		snprintf(line, sizeof(line), "FAIL %s\n", x.first);
	else
		snprintf(line, sizeof(line), "OK\n");
	if (write(out, line, strlen(line)) < 0) {
		/* The parent finds no line. */
	}
}

/* Run the scenario in a child; its line into line.  0, or -1 with why in
 * line (no line, the child crashed or hung). */
static int
fa_run_child(const char *where, int verify, char *line, size_t size)
{
	int p[2], status;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		fail_msg("pipe: %s", strerror(errno));
	if ((pid = fork()) < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			_exit(120);
		alarm(FA_CLIENT_MS / 1000 * 2);
		fa_scenario(where, verify, p[1]);
		_exit(0);
	}
	close(p[1]);
	if (test_read_line(p[0], line, size, FA_CLIENT_MS) < 0)
		snprintf(line, size, "BAD no answer from the scenario in %d "
		    "ms", FA_CLIENT_MS);
	close(p[0]);
	status = test_child_reap(pid, FA_CLIENT_MS);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(line, size, "BAD the scenario child: status 0x%x",
		    status);
		return -1;
	}
	return strncmp(line, "BAD", 3) == 0 ? -1 : 0;
}

static int
fa_read_report(const char *path, struct fa_report *r)
{
	FILE *fp = fopen(path, "re");
	int n;

	if (fp == NULL)
		return -1;
	r->at[0] = '\0';
	n = fscanf(fp, "counted %lu failed %lu live %lu bytes %llu "
	    "overflow %d at", &r->counted, &r->failed, &r->live, &r->bytes,
	    &r->overflow);
	if (n == 5 && fgets(r->at, sizeof(r->at), fp) != NULL)
		r->at[strcspn(r->at, "\n")] = '\0';
	fclose(fp);
	return n == 5 ? 0 : -1;
}

/* One run: ipcd with the shim failing allocation n (0: none), the
 * scenario (which must then see no failure), then counting stopped, a fresh client
 * through the whole scenario, SIGTERM.  Fails the test on anything
 * wrong, saying n.  *first_out: the scenario's line. */
static void
fa_run(struct fix *f, const char *shim, unsigned long n,
    struct fa_report *rep, char *first_out, size_t size)
{
	char num[32], report[PATH_MAX], stopf[PATH_MAX], line[400];
	int status, fd;

	snprintf(report, sizeof(report), "%s/report", f->b.dir);
	snprintf(stopf, sizeof(stopf), "%s/stop", f->b.dir);
	unlink(report);
	unlink(stopf);
	snprintf(num, sizeof(num), "%lu", n);
	setenv("FAILALLOC_N", num, 1);
	setenv("FAILALLOC_REPORT", report, 1);
	setenv("FAILALLOC_STOP", stopf, 1);
	setenv("LD_PRELOAD", shim, 1);
	broker_start(&f->b, NULL);
	unsetenv("LD_PRELOAD");
	unsetenv("FAILALLOC_N");
	unsetenv("FAILALLOC_REPORT");
	unsetenv("FAILALLOC_STOP");

	if (fa_run_child(f->b.where, 0, line, sizeof(line)) < 0 ||
	    (n == 0 && strcmp(line, "OK") != 0))
		fail_msg("allocation %lu failing: %s", n, line);
	snprintf(first_out, size, "%s", line);
	/* Nothing fails from here on: the broker must be whole. */
	if ((fd = open(stopf, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0)
		fail_msg("%s: %s", stopf, strerror(errno));
	close(fd);
	if (fa_run_child(f->b.where, 1, line, sizeof(line)) < 0 ||
	    strcmp(line, "OK") != 0)
		fail_msg("allocation %lu failed; a fresh client then: %s", n,
		    line);
	status = test_stop(&f->b.proc);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("allocation %lu failing: ipcd ended with status "
		    "0x%x (%s %d)", n, status, WIFSIGNALED(status) ?
		    "signal" : "exit", WIFSIGNALED(status) ?
		    WTERMSIG(status) : WEXITSTATUS(status));
	if (fa_read_report(report, rep) < 0)
		fail_msg("allocation %lu failing: no report from the shim",
		    n);
	if (rep->overflow)
		fail_msg("allocation %lu failing: the shim's table overflowed",
		    n);
}

/* Every allocation the broker makes in the scenario fails in turn: no
 * crash, no hang, no corruption, no leak. */
static void
test_every_allocation_failing_in_turn_is_survived_without_leak(
    void **state)
{
	struct fix *f = *state;
	struct fa_report ref, ref2, rep;
	char shim[PATH_MAX], line[400], leaks[512] = "";
	unsigned long t, reached = 0, ok_runs = 0, nleaks = 0;
	long long t0 = test_now_ms();
	struct { char step[32]; unsigned long n; } steps[16];
	int nsteps = 0;

	if (UNDER_ASAN) {
		print_message("allocation failures: skipped under "
		    "AddressSanitizer (its runtime refuses the shim)\n");
		skip();
	}
	snprintf(shim, sizeof(shim), "%s",
	    test_build_path("tests/.libs/failalloc.so"));
	if (shim[0] != '/') {
		char cwd[PATH_MAX], rel[PATH_MAX];

		assert_non_null(getcwd(cwd, sizeof(cwd)));
		snprintf(rel, sizeof(rel), "%s", shim);
		snprintf(shim, sizeof(shim), "%.2000s/%.2000s", cwd, rel);
	}
	if (access(shim, R_OK) != 0)
		fail_msg("%s: %s (make tests/failalloc.la)", shim,
		    strerror(errno));
	f->b.dir = test_tmpdir();
	assert_non_null(f->b.dir);
	snprintf(f->b.path, sizeof(f->b.path), "%s/ipcd.sock", f->b.dir);
	snprintf(f->b.where, sizeof(f->b.where), "unix:%s", f->b.path);

	/* Nothing failing, twice: how many allocations (T), the same each
	 * time, and what is still held at exit. */
	fa_run(f, shim, 0, &ref, line, sizeof(line));
	fa_run(f, shim, 0, &ref2, line, sizeof(line));
	t = ref.counted;
	print_message("allocations: T = %lu counted in the scenario (again: "
	    "%lu); held at exit: %lu blocks, %llu bytes\n", t, ref2.counted,
	    ref.live, ref.bytes);
	assert_true(t > 0);
	/* The clients go one step at a time, each waiting for its answer,
	 * so the broker allocates the same way each run; should a run
	 * count more (the loop's batching), N goes up to the larger. */
	if (ref2.counted > t)
		t = ref2.counted;
	if (ref2.live != ref.live)
		fail_msg("two runs without a failure hold %lu and %lu blocks "
		    "at exit: no baseline for leaks", ref.live, ref2.live);

	for (unsigned long n = 1; n <= t; n++) {
		fa_run(f, shim, n, &rep, line, sizeof(line));
		if (getenv("FAILALLOC_VERBOSE") != NULL)
			print_message("allocations: N=%lu: %s; live %lu; "
			    "at%s\n", n, line, rep.live, rep.at);
		if (rep.failed == n)
			reached++;
		if (strcmp(line, "OK") == 0) {
			ok_runs++;
		} else {
			char step[32] = "";
			int i;

			sscanf(line, "FAIL %31s", step);
			for (i = 0; i < nsteps; i++)
				if (strcmp(steps[i].step, step) == 0)
					break;
			if (i == nsteps && nsteps < 16) {
				snprintf(steps[nsteps].step,
				    sizeof(steps[0].step), "%s", step);
				steps[nsteps++].n = 0;
			}
			if (i < nsteps)
				steps[i].n++;
		}
		if (rep.live > ref.live) {
			size_t len = strlen(leaks);

			nleaks++;
			if (len < sizeof(leaks) - 64)
				snprintf(leaks + len, sizeof(leaks) - len,
				    " N=%lu: %lu blocks, %llu bytes;", n,
				    rep.live - ref.live, rep.bytes - ref.bytes);
			print_message("allocations: N=%lu leaks; the failing "
			    "call:%s\n", n, rep.at);
		}
		if (test_now_ms() - t0 > FA_BUDGET_MS)
			fail_msg("allocation failures: out of time at N=%lu "
			    "of %lu", n, t);
	}
	print_message("allocations: N = 1..%lu each failed in turn (%lu "
	    "reached), %lld ms; the scenario saw no failure %lu times\n", t,
	    reached, test_now_ms() - t0, ok_runs);
	for (int i = 0; i < nsteps; i++)
		print_message("allocations:   first failure at step %s: %lu "
		    "times\n", steps[i].step, steps[i].n);
	print_message("allocations: runs holding more at exit than without "
	    "a failure: %lu%s\n", nleaks, leaks);
	assert_true(reached > 0);
	if (nleaks > 0)
		fail_msg("leaks:%s", leaks);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_emfile_clients_keep_working_no_spin_and_resume),
		T(test_broker_stopped_timed_calls_return_nothing_accepted_lost),
		T(test_every_allocation_failing_in_turn_is_survived_without_leak),
	};

	test_init(300);
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("exhaust", tests, NULL, NULL);
}
