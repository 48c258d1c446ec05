/*
 * Direct messages ("pid:P"), permissions, quotas, and what is never
 * lost, end to end: each test starts its own ipcd on a socket in a
 * private directory and drives it through libipc from several processes.
 *
 * The other processes are "agents": forked children with their own
 * connection that run one command at a time, sent on a pipe ("send
 * pid:123 hello 0", "recv - 20000"), and answer each with a fixed-size
 * binary reply.  The test decides every step and waits for its reply, so
 * the order of events is the test's, not the scheduler's.
 *
 * Nothing here sleeps to wait for something.  A process's direct queue
 * cannot be stat'ed (the broker serves pid:P for sending only, and
 * ipc_mbox_stat takes mailbox names only), so where a test must know that
 * a request is parked in the broker it uses one of:
 *   - a round trip on the same connection after the request (the broker
 *     answers one connection's frames in order: once the round trip is
 *     answered, the request before it was processed);
 *   - the broker's "processes" counter, polled until a deadline: a
 *     process that has not connected is known to the broker only while a
 *     sender waits for it.
 * Every wait is bounded; every child is reaped (the teardown kills and
 * reaps whatever a failed test left).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "mysocks.h"
#include "testutil.h"
#include "testbroker.h"
#include "wire.h"

/* The uid and gid of "nobody" for the permission test. */
#define NOBODY		65534

/* An agent with no command for this long gives up (the test is over or
 * stuck; the watchdog is 600 s). */
#define AGENT_IDLE_MS	600000

/* Exit code of a child forked for pid reuse that did not get the pid. */
#define KID_MISSED	99

/* The nothing-lost run: messages, concurrent consumers, consumers
 * killed; a consumer is killed after a random number (in [KILL_GAP_MIN,
 * KILL_GAP_MAX)) of reports, so that all kills happen before the
 * messages run out: 20 * 89 < 2000. */
#define NL_MESSAGES	2000
#define NL_CONSUMERS	3
#define NL_KILLS	20
#define NL_KILL_GAP_MIN	5
#define NL_KILL_GAP_MAX	90
#define NL_CAPACITY	32
#define NL_CHECK	0xa5a5a5a5u
/* No report for this long: the run is stuck (a message lost, or a send
 * never answered). */
#define NL_IDLE_MS	5000

/* --- the broker ------------------------------------------------------- */

#define FIX_MAX 32

/* A forked child: an agent, a consumer, a producer.  Commands go on
 * cmd, replies come on rep. */
struct kid {
	pid_t pid;		/* 0 once reaped */
	int cmd;		/* write end, or -1 */
	int rep;		/* read end, or -1 */
};

struct op;

/* What every test gets from its setup, and the teardown cleans up,
 * however far the test got. */
struct fix {
	struct broker b;
	struct kid kids[FIX_MAX];
	int nkids;
	struct ipc_conn *conns[FIX_MAX];
	int nconns;
	struct op *ops[FIX_MAX];
	int nops;
	int raws[FIX_MAX];
	int nraws;
	void *shared;		/* munmap'ed by the teardown */
	size_t shared_len;
	void *heap;		/* free'd by the teardown */
};

/* A connection of this (the test's) process, closed by the teardown. */
static struct ipc_conn *
fix_open(struct fix *f)
{
	struct ipc_conn *c = broker_open(&f->b);

	assert_true(f->nconns < FIX_MAX);
	f->conns[f->nconns++] = c;
	return c;
}

static void
box_create(struct ipc_conn *c, const char *name, int64_t capacity,
    int mode)
{
	struct ipc_mbox_attr attr;

	ipc_mbox_attr_init(&attr);
	attr.capacity = capacity;
	attr.mode = mode;
	attr.exclusive = 1;
	if (ipc_mbox_create(c, name, &attr, NULL) < 0)
		fail_msg("create %s: %s", name, strerror(errno));
}

static void
pid_addr(char *buf, size_t size, pid_t pid)
{
	snprintf(buf, size, "pid:%ld", (long)pid);
}

/* --- raw connections ---------------------------------------------------- */

/* These return errors instead of asserting: agents use them too. */

static int
raw_put(int fd, const struct wire_frame *f)
{
	uint8_t buf[8192];
	long n = wire_encode(f, buf, sizeof(buf));

	if (n <= 0)
		return -1;
	return writeSocket(fd, buf, (int)n) == (int)n ? 0 : -1;
}

/* Read n bytes, each wait bounded by timeout_ms.  1, 0 on EOF before
 * the first byte, -1 otherwise. */
static int
raw_read_full(int fd, uint8_t *buf, size_t n, int timeout_ms)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r;

		if (test_wait_readable(fd, timeout_ms) != 1)
			return -1;
		r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return got == 0 ? 0 : -1;
		if (r < 0)
			return -1;
		got += (size_t)r;
	}
	return 1;
}

/* The next frame, decoded into f (borrowing buf).  1 frame, 0 the
 * broker closed, -1 timeout or a bad frame. */
static int
raw_get(int fd, uint8_t *buf, size_t cap, struct wire_frame *f,
    int timeout_ms)
{
	uint32_t len;
	int r;

	if ((r = raw_read_full(fd, buf, WIRE_HDR_LEN, timeout_ms)) <= 0)
		return r;
	len = wire_get32(buf);
	if (len < WIRE_HDR_LEN || len > cap)
		return -1;
	if (len > WIRE_HDR_LEN && raw_read_full(fd, buf + WIRE_HDR_LEN,
	    len - WIRE_HDR_LEN, timeout_ms) <= 0)
		return -1;
	return wire_decode(buf, len, f, NULL) == 0 ? 1 : -1;
}

/* A raw connection past the handshake, or -1. */
static int
raw_open(const char *path)
{
	struct wire_frame f = { .type = WIRE_HELLO, .id = 1 };
	uint8_t buf[4096];
	int fd = connectSocketUnix(path);

	if (fd < 0)
		return -1;
	f.b.hello.magic = WIRE_MAGIC;
	f.b.hello.version_min = WIRE_VERSION;
	f.b.hello.version_max = WIRE_VERSION;
	if (raw_put(fd, &f) < 0 ||
	    raw_get(fd, buf, sizeof(buf), &f, TEST_WAIT_MS) != 1 ||
	    f.type != WIRE_WELCOME) {
		closeSocket(fd);
		return -1;
	}
	return fd;
}

/* A raw connection that the teardown closes. */
static int
fix_raw(struct fix *f)
{
	int fd = raw_open(f->b.path);

	if (fd < 0)
		fail_msg("raw connection to %s: %s", f->b.path,
		    strerror(errno));
	assert_true(f->nraws < FIX_MAX);
	f->raws[f->nraws++] = fd;
	return fd;
}

/* Ask for one of the broker's counters.  0 with *out, or -1. */
static int
raw_counter(int fd, const char *name, uint64_t *out)
{
	static uint64_t next_id = 1000;
	struct wire_frame f = { .type = WIRE_COUNTERS, .id = ++next_id };
	uint8_t buf[4096];
	uint64_t id = f.id;
	int found = 0;

	if (raw_put(fd, &f) < 0)
		return -1;
	for (;;) {
		if (raw_get(fd, buf, sizeof(buf), &f, TEST_WAIT_MS) != 1)
			return -1;
		if (f.id != id)
			continue;
		if (f.type == WIRE_COUNTER) {
			if (wire_str_eq(f.b.counter.name, name)) {
				*out = f.b.counter.value;
				found = 1;
			}
			continue;
		}
		return f.type == WIRE_OK && found ? 0 : -1;
	}
}

/* Ask until the counter has the value.  0, or -1 at the deadline. */
static int
wait_counter(int fd, const char *name, uint64_t want, uint64_t *last_out)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	uint64_t v = UINT64_MAX;

	do {
		if (raw_counter(fd, name, &v) < 0)
			break;
		if (v == want)
			return 0;
	} while (test_now_ms() < deadline);
	if (last_out != NULL)
		*last_out = v;
	return -1;
}

/* One request on a fresh raw connection: what the broker answers to
 * type (WIRE_PEEK or WIRE_MBOX_STAT) on name.  0 when it served it,
 * else -1 with errno the broker's error. */
static int
raw_ask(const char *path, uint16_t type, const char *name)
{
	struct wire_frame f = { .type = type, .id = 7 };
	uint8_t buf[8192];
	int fd = raw_open(path), r = -1;

	if (fd < 0)
		return -1;
	if (type == WIRE_PEEK) {
		f.b.peek.max_count = 16;
		f.b.peek.name = wire_str(name);
	} else {
		f.b.name.name = wire_str(name);
	}
	errno = EPROTO;
	if (raw_put(fd, &f) == 0 &&
	    raw_get(fd, buf, sizeof(buf), &f, TEST_WAIT_MS) == 1 &&
	    f.id == 7) {
		if (f.type == WIRE_ERROR)
			errno = wire_errno(f.b.error.code);
		else
			r = 0;
	}
	closeSocket(fd);
	return r;
}

/* --- child processes ---------------------------------------------------- */

typedef int kid_fn(struct fix *f, int in, int out, void *arg);

static void
fd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Wait up to TEST_WAIT_MS for pid to exit, without reaping it.  1 when
 * it has (it is a zombie now), 0 otherwise. */
static int
child_wait_exited(pid_t pid)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0), r;

	if (pfd < 0)
		return 0;
	r = test_wait_readable(pfd, TEST_WAIT_MS) == 1;
	close(pfd);
	return r;
}

static void
assert_exit_status(int status, int code)
{
	if (!WIFEXITED(status))
		fail_msg("child did not exit: status 0x%x", status);
	assert_int_equal(WEXITSTATUS(status), code);
}

/* Fork a child into slot k running fn; in the child, want (if not 0) is
 * the pid it must have, or it exits KID_MISSED at once.  The child dies
 * with the test (PR_SET_PDEATHSIG) and holds no other child's pipes. */
static void
kid_fork(struct fix *f, struct kid *k, kid_fn *fn, void *arg, pid_t want)
{
	int cmd[2], rep[2];
	pid_t parent = getpid();

	assert_int_equal(pipe(cmd), 0);
	assert_int_equal(pipe(rep), 0);
	k->pid = fork();
	assert_true(k->pid >= 0);
	if (k->pid == 0) {
		if (want != 0 && getpid() != want)
			_exit(KID_MISSED);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 ||
		    getppid() != parent)
			_exit(120);
		signal(SIGPIPE, SIG_DFL);
		close(cmd[1]);
		close(rep[0]);
		for (int i = 0; i < f->nkids; i++)
			if (&f->kids[i] != k) {
				fd_close(&f->kids[i].cmd);
				fd_close(&f->kids[i].rep);
			}
		_exit(fn(f, cmd[0], rep[1], arg));
	}
	close(cmd[0]);
	close(rep[1]);
	k->cmd = cmd[1];
	k->rep = rep[0];
}

/* A new child running fn, reaped by the teardown if not before. */
static struct kid *
kid_start(struct fix *f, kid_fn *fn, void *arg)
{
	struct kid *k;

	assert_true(f->nkids < FIX_MAX);
	k = &f->kids[f->nkids++];
	kid_fork(f, k, fn, arg, 0);
	return k;
}

/* Close its pipes, wait for it to exit (SIGKILL after TEST_WAIT_MS),
 * reap it; its status. */
static int
kid_reap(struct kid *k)
{
	int status = -1;

	fd_close(&k->cmd);
	if (k->pid > 0)
		status = test_child_reap(k->pid, TEST_WAIT_MS);
	k->pid = 0;
	fd_close(&k->rep);
	return status;
}

/* SIGKILL and reap; its pipes stay open (what it wrote can be read). */
static void
kid_kill(struct kid *k)
{
	if (k->pid <= 0)
		return;
	kill(k->pid, SIGKILL);
	test_child_reap(k->pid, TEST_WAIT_MS);
	k->pid = 0;
}

/* Try once to set the next pid the kernel hands out (root in the
 * initial pid namespace, or CAP_CHECKPOINT_RESTORE).  0 or -1. */
static int
pid_set_last(pid_t last)
{
	char buf[32];
	int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
	int n = snprintf(buf, sizeof(buf), "%ld", (long)last), r;

	if (fd < 0)
		return -1;
	r = write(fd, buf, (size_t)n) == n ? 0 : -1;
	close(fd);
	return r;
}

/* A new child running fn whose pid is want (free: its last owner was
 * reaped).  First through ns_last_pid, retrying when another process on
 * the machine takes the pid in between; else by forking children that
 * exit at once until the pids come round.  NULL when neither worked;
 * *how_out says which did. */
static struct kid *
kid_start_at(struct fix *f, kid_fn *fn, void *arg, pid_t want,
    const char **how_out)
{
	long long deadline;
	struct kid *k;

	assert_true(f->nkids < FIX_MAX);
	k = &f->kids[f->nkids];
	for (int i = 0; i < 20 && pid_set_last(want - 1) == 0; i++) {
		kid_fork(f, k, fn, arg, want);
		if (k->pid == want) {
			*how_out = "ns_last_pid";
			f->nkids++;
			return k;
		}
		kid_reap(k);
	}
	deadline = test_now_ms() + 60000;
	for (long i = 0; i < 70000 && test_now_ms() < deadline; i++) {
		kid_fork(f, k, fn, arg, want);
		if (k->pid == want) {
			*how_out = "cycling pids";
			f->nkids++;
			return k;
		}
		kid_reap(k);
	}
	*how_out = "none";
	return NULL;
}

/* --- agents ------------------------------------------------------------- */

/* An agent's answer to one command. */
struct agent_rep {
	long r;				/* the call's return value */
	int err;			/* its errno when r < 0 */
	pid_t pid;			/* "open": ipc_pid() */
	struct ipc_msg_info info;	/* "recv"; "send": info.id */
	struct ipc_mbox_info mbox;	/* "stat" */
	char data[256];			/* "recv": payload, NUL added */
};

/* A single write of a reply is atomic: the reader never sees half. */
_Static_assert(sizeof(struct agent_rep) <= PIPE_BUF, "reply too large");

static const char *
agent_from(const char *arg)
{
	return strcmp(arg, "-") == 0 ? NULL : arg;
}

/* Give up root for nobody, groups included.  0 or -1. */
static int
agent_drop(void)
{
	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 ||
	    setuid(NOBODY) < 0)
		return -1;
	return 0;
}

/* Commands, one a line; every one is answered with a struct agent_rep.
 * Texts and addresses have no spaces; "-" as a source is NULL (the
 * agent's own direct queue).  Timeouts are milliseconds. */
static int
agent_main(struct fix *f, int in, int out, void *arg)
{
	struct ipc_conn *c = NULL;
	char line[768], a[256], b[256];
	unsigned u1, u2;
	long t;
	int n;

	(void)arg;
	for (;;) {
		struct agent_rep rep;

		if (test_read_line(in, line, sizeof(line), AGENT_IDLE_MS) < 0)
			return 0;	/* the test is over */
		memset(&rep, 0, sizeof(rep));
		errno = 0;
		if (strcmp(line, "open") == 0) {
			c = ipc_open(f->b.where);
			rep.r = c == NULL ? -1 : 0;
			rep.pid = c == NULL ? 0 : ipc_pid(c);
		} else if (strcmp(line, "close") == 0) {
			rep.r = ipc_close(c);
			c = NULL;
		} else if (sscanf(line, "send %255s %255s %ld", a, b,
		    &t) == 3) {
			uint64_t id = 0;

			rep.r = ipc_send_timed(c, a, b, strlen(b) + 1, (int)t,
			    &id);
			rep.info.id = id;
		} else if (sscanf(line, "recv %255s %ld", a, &t) == 2) {
			rep.r = ipc_recv_timed(c, agent_from(a), rep.data,
			    sizeof(rep.data) - 1, (int)t, &rep.info);
		} else if (sscanf(line, "arm %255s", a) == 1) {
			rep.r = ipc_recv_arm(c, agent_from(a));
		} else if (strcmp(line, "sync") == 0) {
			/* A round trip: anything asked before is done. */
			rep.r = ipc_mbox_stat(c, "sync.probe", NULL);
			if (rep.r < 0 && errno == ENOENT)
				rep.r = 0;
		} else if (sscanf(line, "stat %255s", a) == 1) {
			rep.r = ipc_mbox_stat(c, a, &rep.mbox);
		} else if (sscanf(line, "chmod %255s %o", a, &u1) == 2) {
			rep.r = ipc_mbox_chmod(c, a, (int)u1);
		} else if (sscanf(line, "chown %255s %u %u", a, &u1,
		    &u2) == 3) {
			rep.r = ipc_mbox_chown(c, a, (uid_t)u1, (gid_t)u2);
		} else if (sscanf(line, "delete %255s", a) == 1) {
			rep.r = ipc_mbox_delete(c, a);
		} else if (sscanf(line, "rawpeek %255s", a) == 1) {
			rep.r = raw_ask(f->b.path, WIRE_PEEK, a);
		} else if (sscanf(line, "rawstat %255s", a) == 1) {
			rep.r = raw_ask(f->b.path, WIRE_MBOX_STAT, a);
		} else if (strcmp(line, "drop") == 0) {
			rep.r = agent_drop();
		} else if (sscanf(line, "exit %d", &n) == 1) {
			_exit(n);
		} else {
			rep.r = -1;
			errno = EINVAL;
		}
		rep.err = rep.r < 0 ? errno : 0;
		if (write(out, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
			return 1;
	}
}

static struct kid *
agent_start(struct fix *f)
{
	return kid_start(f, agent_main, NULL);
}

static void __attribute__((format(printf, 2, 3)))
agent_cmd(struct kid *k, const char *fmt, ...)
{
	char line[768];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(line) - 1);
	line[n++] = '\n';
	assert_int_equal(write(k->cmd, line, (size_t)n), n);
}

/* The reply to the last command, waiting up to TEST_WAIT_MS. */
static long
agent_reply(struct kid *k, struct agent_rep *rep)
{
	if (raw_read_full(k->rep, (uint8_t *)rep, sizeof(*rep),
	    TEST_WAIT_MS) != 1)
		fail_msg("agent %ld did not answer", (long)k->pid);
	return rep->r;
}

/* Run a command; its reply in *rep, its return value returned. */
static long __attribute__((format(printf, 3, 4)))
agent_do(struct kid *k, struct agent_rep *rep, const char *fmt, ...)
{
	char line[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	agent_cmd(k, "%s", line);
	return agent_reply(k, rep);
}

/* A command that must succeed. */
static void __attribute__((format(printf, 3, 4)))
agent_ok(struct kid *k, struct agent_rep *rep, const char *fmt, ...)
{
	char line[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	agent_cmd(k, "%s", line);
	if (agent_reply(k, rep) < 0)
		fail_msg("agent %ld: %s: %s", (long)k->pid, line,
		    strerror(rep->err));
}

/* A command that must fail with err. */
static void __attribute__((format(printf, 3, 4)))
agent_fails(struct kid *k, int err, const char *fmt, ...)
{
	struct agent_rep rep;
	char line[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	agent_cmd(k, "%s", line);
	if (agent_reply(k, &rep) >= 0)
		fail_msg("agent %ld: %s: succeeded (%ld), expected %s",
		    (long)k->pid, line, rep.r, strerror(err));
	if (rep.err != err)
		fail_msg("agent %ld: %s: %s, expected %s", (long)k->pid, line,
		    strerror(rep.err), strerror(err));
}

/* Start an agent and connect it; its pid as the broker knows it. */
static struct kid *
agent_connected(struct fix *f, pid_t *pid_out)
{
	struct kid *k = agent_start(f);
	struct agent_rep rep;

	agent_ok(k, &rep, "open");
	assert_int_equal(rep.pid, k->pid);
	if (pid_out != NULL)
		*pid_out = rep.pid;
	return k;
}

/* --- one call on its own thread and connection -------------------------- */

struct op {
	pthread_t t;
	struct ipc_conn *c;
	char to[64];
	uint8_t buf[256];
	size_t len;
	int timeout_ms;
	int r, err;
	int done[2];		/* a byte on done[0]: the call returned */
	atomic_int finished;
	int started, joined;
};

static void *
op_main(void *arg)
{
	struct op *op = arg;

	errno = 0;
	op->r = ipc_send_timed(op->c, op->to, op->buf, op->len,
	    op->timeout_ms, NULL);
	op->err = errno;
	atomic_store(&op->finished, 1);
	if (write(op->done[1], "x", 1) != 1) {
		/* The reader is gone: nobody waits for us. */
	}
	return NULL;
}

/* A blocking send of text on a new thread with a new connection.  The
 * teardown joins and frees it. */
static struct op *
op_send(struct fix *f, const char *to, const char *text, int timeout_ms)
{
	struct op *op = calloc(1, sizeof(*op));

	assert_non_null(op);
	assert_true(f->nops < FIX_MAX);
	assert_true(strlen(text) < sizeof(op->buf));
	op->done[0] = op->done[1] = -1;
	f->ops[f->nops++] = op;
	op->c = broker_open(&f->b);
	snprintf(op->to, sizeof(op->to), "%s", to);
	op->len = strlen(text) + 1;
	memcpy(op->buf, text, op->len);
	op->timeout_ms = timeout_ms;
	assert_int_equal(pipe(op->done), 0);
	assert_int_equal(pthread_create(&op->t, NULL, op_main, op), 0);
	op->started = 1;
	return op;
}

/* Wait for the call to return and join.  0, or -1 when it has not
 * returned in time. */
static int
op_join(struct op *op)
{
	if (op->joined)
		return 0;
	if (test_wait_readable(op->done[0], TEST_WAIT_MS) != 1)
		return -1;
	if (pthread_join(op->t, NULL) != 0)
		return -1;
	op->joined = 1;
	return 0;
}

/* Join (the broker is gone by now, so a blocked call has returned) and
 * free.  A thread that still does not return is left, and op with it. */
static void
op_free(struct op *op)
{
	if (op->started && op_join(op) < 0)
		return;
	ipc_close(op->c);
	fd_close(&op->done[0]);
	fd_close(&op->done[1]);
	free(op);
}

/* --- fixture ------------------------------------------------------------ */

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

/* Whatever a test left: kill and reap its children, kill and reap the
 * broker (which makes every blocked call return), join the calls, close
 * the connections, remove the directory. */
static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	for (int i = 0; i < f->nkids; i++) {
		kid_kill(&f->kids[i]);
		fd_close(&f->kids[i].cmd);
		fd_close(&f->kids[i].rep);
	}
	if (f->b.proc.pid > 0)
		test_stop(&f->b.proc);
	for (int i = 0; i < f->nops; i++)
		op_free(f->ops[i]);
	for (int i = 0; i < f->nconns; i++)
		ipc_close(f->conns[i]);
	for (int i = 0; i < f->nraws; i++)
		closeSocket(f->raws[i]);
	if (f->shared != NULL)
		munmap(f->shared, f->shared_len);
	free(f->heap);
	test_rmtree(f->b.dir);
	free(f);
	return 0;
}

/* Receive on c with from; the payload must be text, from pid sender. */
static void
recv_expect(struct ipc_conn *c, const char *from, const char *text,
    pid_t sender, struct ipc_msg_info *info_out)
{
	struct ipc_msg_info info;
	char buf[256];
	ssize_t r;

	r = ipc_recv_timed(c, from, buf, sizeof(buf) - 1, TEST_WAIT_MS,
	    &info);
	if (r < 0)
		fail_msg("recv from %s: %s (expected '%s')",
		    from ? from : "(own queue)", strerror(errno), text);
	buf[r] = '\0';
	assert_string_equal(buf, text);
	assert_int_equal(r, strlen(text) + 1);
	assert_int_equal(info.pid, sender);
	if (info_out != NULL)
		*info_out = info;
}

static void
recv_expect_empty(struct ipc_conn *c, const char *from)
{
	char buf[256];
	ssize_t r;

	errno = 0;
	r = ipc_recv_timed(c, from, buf, sizeof(buf) - 1, 0, NULL);
	if (r >= 0) {
		buf[r] = '\0';
		fail_msg("recv from %s: got '%s', expected nothing",
		    from ? from : "(own queue)", buf);
	}
	assert_int_equal(errno, EAGAIN);
}

/* The reply of an agent's receive: text from pid sender. */
static void
rep_expect(const struct agent_rep *rep, const char *text, pid_t sender)
{
	if (rep->r < 0)
		fail_msg("agent recv: %s (expected '%s')",
		    strerror(rep->err), text);
	assert_string_equal(rep->data, text);
	assert_int_equal(rep->r, strlen(text) + 1);
	assert_int_equal(rep->info.pid, sender);
}

/* === 1. direct send and receive ========================================= */

static void
test_direct_send_received_from_own_queue_with_sender_info(void **state)
{
	struct fix *f = *state;
	char to[32], me[32];
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *r;
	uint64_t id = 0;
	pid_t rpid;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_pid(c), getpid());
	r = agent_connected(f, &rpid);
	pid_addr(to, sizeof(to), rpid);
	pid_addr(me, sizeof(me), getpid());
	assert_int_equal(ipc_send_timed(c, to, "hello", 6, TEST_WAIT_MS, &id),
	    0);
	assert_true(id != 0);
	agent_do(r, &rep, "recv - %d", TEST_WAIT_MS);
	rep_expect(&rep, "hello", getpid());
	assert_string_equal(rep.info.sender, me);
	assert_string_equal(rep.info.source, to);
	assert_int_equal(rep.info.uid, getuid());
	assert_int_equal(rep.info.gid, getgid());
	assert_int_equal(rep.info.len, 6);
	assert_int_equal(rep.info.id, id);
	assert_int_equal(rep.info.flags, 0);
	broker_stop(&f->b);
}

static void
test_recv_any_takes_several_senders_in_arrival_order(void **state)
{
	struct fix *f = *state;
	static const struct { int who; const char *text; } order[] = {
		{ 0, "a1" }, { 1, "b1" }, { 2, "c1" }, { 1, "b2" },
		{ 0, "a2" }, { 2, "c2" }, { 2, "c3" }, { 0, "a3" },
	};
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *k[3];
	pid_t pid[3];
	char me[32];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	pid_addr(me, sizeof(me), getpid());
	for (int i = 0; i < 3; i++)
		k[i] = agent_connected(f, &pid[i]);
	/* Each send is accepted before the next starts: this is the
	 * arrival order. */
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		agent_ok(k[order[i].who], &rep, "send %s %s 0", me,
		    order[i].text);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		struct ipc_msg_info info;
		char sender[32];

		recv_expect(c, NULL, order[i].text, pid[order[i].who], &info);
		pid_addr(sender, sizeof(sender), pid[order[i].who]);
		assert_string_equal(info.sender, sender);
		assert_string_equal(info.source, me);
	}
	recv_expect_empty(c, NULL);
	broker_stop(&f->b);
}

static void
test_selective_recv_takes_q_next_keeps_others_in_order(void **state)
{
	struct fix *f = *state;
	char me[32], from_a[32], from_b[32];
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *a, *b;
	pid_t apid, bpid;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	pid_addr(me, sizeof(me), getpid());
	a = agent_connected(f, &apid);
	b = agent_connected(f, &bpid);
	pid_addr(from_a, sizeof(from_a), apid);
	pid_addr(from_b, sizeof(from_b), bpid);
	agent_ok(a, &rep, "send %s a1 0", me);
	agent_ok(b, &rep, "send %s b1 0", me);
	agent_ok(a, &rep, "send %s a2 0", me);
	agent_ok(b, &rep, "send %s b2 0", me);
	/* b1 from behind a1; then nothing else of A's goes with B's. */
	recv_expect(c, from_b, "b1", bpid, NULL);
	recv_expect(c, from_b, "b2", bpid, NULL);
	recv_expect_empty(c, from_b);
	/* A's, in their order, untouched. */
	recv_expect(c, NULL, "a1", apid, NULL);
	recv_expect(c, NULL, "a2", apid, NULL);
	recv_expect_empty(c, NULL);
	recv_expect_empty(c, from_a);
	broker_stop(&f->b);
}

static void
test_selective_recv_parked_for_q_not_woken_by_r_but_by_q(void **state)
{
	struct fix *f = *state;
	char to[32], from_q[32];
	struct agent_rep rep;
	struct kid *recv, *q, *r;
	pid_t rpid, qpid, other;

	broker_start(&f->b, NULL);
	recv = agent_connected(f, &rpid);
	q = agent_connected(f, &qpid);
	r = agent_connected(f, &other);
	pid_addr(to, sizeof(to), rpid);
	pid_addr(from_q, sizeof(from_q), qpid);
	/* Ask without waiting, then a round trip on the same connection:
	 * once it is answered, the receive is parked in the broker (the
	 * queue is empty). */
	agent_ok(recv, &rep, "arm %s", from_q);
	agent_ok(recv, &rep, "sync");
	agent_ok(r, &rep, "send %s from-r 0", to);
	/* Had R's message woken it, the round trip would meet it on the
	 * way and keep it for the receive below. */
	agent_ok(recv, &rep, "sync");
	agent_do(recv, &rep, "recv %s 0", from_q);
	if (rep.r >= 0)
		fail_msg("the receiver parked for %s got '%s' from pid %ld",
		    from_q, rep.data, (long)rep.info.pid);
	assert_int_equal(rep.err, EAGAIN);
	agent_ok(q, &rep, "send %s from-q 0", to);
	agent_do(recv, &rep, "recv %s %d", from_q, TEST_WAIT_MS);
	rep_expect(&rep, "from-q", qpid);
	/* R's message is still there. */
	agent_do(recv, &rep, "recv - 0");
	rep_expect(&rep, "from-r", other);
	broker_stop(&f->b);
}

static void
test_two_connections_of_one_process_share_its_queue(void **state)
{
	struct fix *f = *state;
	struct ipc_msg_info info;
	struct ipc_conn *c1, *c2;
	char me[32];

	broker_start(&f->b, NULL);
	c1 = fix_open(f);
	c2 = fix_open(f);
	assert_int_equal(ipc_pid(c1), getpid());
	assert_int_equal(ipc_pid(c2), getpid());
	pid_addr(me, sizeof(me), getpid());
	assert_int_equal(ipc_send(c1, me, "one", 4), 0);
	assert_int_equal(ipc_send(c1, me, "two", 4), 0);
	assert_int_equal(ipc_send(c2, me, "three", 6), 0);
	recv_expect(c2, NULL, "one", getpid(), &info);
	assert_string_equal(info.source, me);
	recv_expect(c1, NULL, "two", getpid(), &info);
	assert_string_equal(info.source, me);
	recv_expect(c1, me, "three", getpid(), NULL);
	recv_expect_empty(c1, NULL);
	recv_expect_empty(c2, NULL);
	broker_stop(&f->b);
}

static void
test_direct_queue_stays_while_one_connection_remains(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c1, *c2;
	uint64_t n = 0;
	char me[32];
	int raw;

	broker_start(&f->b, NULL);
	c1 = broker_open(&f->b);
	c2 = fix_open(f);
	raw = fix_raw(f);
	pid_addr(me, sizeof(me), getpid());
	assert_int_equal(ipc_send(c1, me, "kept", 5), 0);
	ipc_close(c1);
	/* The broker has seen the close: c2 and the raw one are left. */
	if (wait_counter(raw, "connections", 2, &n) < 0)
		fail_msg("connections: %llu, expected 2",
		    (unsigned long long)n);
	assert_int_equal(ipc_send(c2, me, "after", 6), 0);
	recv_expect(c2, NULL, "kept", getpid(), NULL);
	recv_expect(c2, NULL, "after", getpid(), NULL);
	broker_stop(&f->b);
}

static void
test_direct_queue_goes_when_process_disconnects(void **state)
{
	struct fix *f = *state;
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *p;
	uint64_t n = 0;
	char to[32];
	pid_t ppid;
	int raw;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	raw = fix_raw(f);
	p = agent_connected(f, &ppid);
	pid_addr(to, sizeof(to), ppid);
	assert_int_equal(ipc_send(c, to, "before", 7), 0);
	agent_ok(p, &rep, "close");
	/* The broker has seen it: ours and the raw one are left. */
	if (wait_counter(raw, "connections", 2, &n) < 0)
		fail_msg("connections: %llu, expected 2",
		    (unsigned long long)n);
	agent_ok(p, &rep, "open");
	/* A fresh connection of the same process: an empty queue. */
	agent_do(p, &rep, "recv - 0");
	if (rep.r >= 0)
		fail_msg("after reconnecting, got '%s'", rep.data);
	assert_int_equal(rep.err, EAGAIN);
	assert_int_equal(ipc_send(c, to, "after", 6), 0);
	agent_do(p, &rep, "recv - %d", TEST_WAIT_MS);
	rep_expect(&rep, "after", getpid());
	broker_stop(&f->b);
}

/* === 2. only P receives pid:P =========================================== */

static void
test_only_p_receives_pid_p(void **state)
{
	struct fix *f = *state;
	char me[32], xaddr[32], yaddr[32];
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *x, *y;
	pid_t xpid, ypid;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	pid_addr(me, sizeof(me), getpid());
	x = agent_connected(f, &xpid);
	y = agent_connected(f, &ypid);
	pid_addr(xaddr, sizeof(xaddr), xpid);
	pid_addr(yaddr, sizeof(yaddr), ypid);
	/* Two messages for us (P), one for X. */
	agent_ok(x, &rep, "send %s x-to-p 0", me);
	agent_ok(y, &rep, "send %s y-to-p 0", me);
	assert_int_equal(ipc_send(c, xaddr, "p-to-x", 7), 0);

	/* X receiving from its own queue gets its message, never ours. */
	agent_do(x, &rep, "recv - 0");
	rep_expect(&rep, "p-to-x", getpid());
	assert_string_equal(rep.info.source, xaddr);
	agent_fails(x, EAGAIN, "recv - 0");
	/* "pid:P" in X selects what P sent to X, not P's queue. */
	assert_int_equal(ipc_send(c, xaddr, "p-to-x-2", 9), 0);
	agent_do(x, &rep, "recv %s 0", me);
	rep_expect(&rep, "p-to-x-2", getpid());
	assert_string_equal(rep.info.source, xaddr);
	agent_fails(x, EAGAIN, "recv %s 0", me);
	agent_fails(x, EAGAIN, "recv %s 0", yaddr);
	/* No looking at pid:P either: the library takes mailbox names
	 * only, and the broker refuses a pid queue for anything but a
	 * send. */
	agent_fails(x, EINVAL, "stat %s", me);
	agent_fails(x, EINVAL, "delete %s", me);
	agent_fails(x, EACCES, "rawstat %s", me);
	agent_fails(x, EACCES, "rawpeek %s", me);

	/* Ours are all there, in order. */
	recv_expect(c, NULL, "x-to-p", xpid, NULL);
	recv_expect(c, NULL, "y-to-p", ypid, NULL);
	recv_expect_empty(c, NULL);
	broker_stop(&f->b);
}

/* === 3. a recycled pid starts from nothing ============================== */

static void
test_recycled_pid_gets_none_of_old_instance_messages(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--capacity", "2", NULL };
	struct wire_frame fr = { .type = WIRE_SEND, .id = 2 };
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *p, *again;
	const char *how = NULL;
	uint8_t buf[4096];
	char to[32], me[32];
	pid_t ppid;
	int raw, status;

	broker_start(&f->b, opts);
	c = fix_open(f);
	pid_addr(me, sizeof(me), getpid());
	p = agent_connected(f, &ppid);
	pid_addr(to, sizeof(to), ppid);
	/* P's queue (capacity 2) full, and a third send parked on it: a
	 * raw SEND then a STAT on the same connection; the STAT answered
	 * first means the SEND waits. */
	assert_int_equal(ipc_send(c, to, "old-1", 6), 0);
	assert_int_equal(ipc_send(c, to, "old-2", 6), 0);
	raw = fix_raw(f);
	fr.b.send.timeout_ms = WIRE_FOREVER;
	fr.b.send.dest = wire_str(to);
	fr.b.send.payload.p = (const uint8_t *)"old-3";
	fr.b.send.payload.len = 6;
	assert_int_equal(raw_put(raw, &fr), 0);
	fr = (struct wire_frame){ .type = WIRE_MBOX_STAT, .id = 3 };
	fr.b.name.name = wire_str("sync.probe");
	assert_int_equal(raw_put(raw, &fr), 0);
	assert_int_equal(raw_get(raw, buf, sizeof(buf), &fr, TEST_WAIT_MS),
	    1);
	assert_int_equal(fr.id, 3);
	assert_int_equal(fr.type, WIRE_ERROR);

	/* P exits with all that queued for it, and is reaped: its pid is
	 * free.  A new process gets it at once. */
	agent_cmd(p, "exit 0");
	status = kid_reap(p);
	assert_exit_status(status, 0);
	again = kid_start_at(f, agent_main, NULL, ppid, &how);
	print_message("pid %ld again by %s\n", (long)ppid, how);
	if (again == NULL) {
		print_message("cannot get pid %ld again (no ns_last_pid, "
		    "and cycling pids did not reach it): skipped\n",
		    (long)ppid);
		skip();
	}
	agent_ok(again, &rep, "open");
	assert_int_equal(rep.pid, ppid);

	/* The send parked for the old P failed: it never reaches the new
	 * one. */
	assert_int_equal(raw_get(raw, buf, sizeof(buf), &fr, TEST_WAIT_MS),
	    1);
	assert_int_equal(fr.id, 2);
	if (fr.type != WIRE_ERROR)
		fail_msg("the send parked for the old pid %ld got %s",
		    (long)ppid, wire_type_name(fr.type));
	assert_int_equal(wire_errno(fr.b.error.code), ESRCH);
	/* Nothing of the old instance's, by any source. */
	agent_fails(again, EAGAIN, "recv - 0");
	agent_fails(again, EAGAIN, "recv %s 0", me);
	/* And its own queue works: the first message is the new one. */
	assert_int_equal(ipc_send(c, to, "new-1", 6), 0);
	agent_do(again, &rep, "recv - %d", TEST_WAIT_MS);
	rep_expect(&rep, "new-1", getpid());
	agent_fails(again, EAGAIN, "recv - 0");
	broker_stop(&f->b);
}

/* === 4. processes that have not connected (yet) ========================= */

static void
test_send_to_unconnected_living_pid_waits_until_it_connects(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--direct-wait", "20000", NULL };
	struct agent_rep rep;
	struct kid *k;
	struct op *op;
	uint64_t procs = 0;
	int raw, parked, early;
	char to[32];

	broker_start(&f->b, opts);
	raw = fix_raw(f);
	/* Alive, waiting on its pipe, not connected. */
	k = agent_start(f);
	pid_addr(to, sizeof(to), k->pid);
	assert_int_equal(wait_counter(raw, "processes", 1, &procs), 0);
	op = op_send(f, to, "waited", IPC_FOREVER);
	/* The broker knows a process nobody connected for only while a
	 * sender waits for it. */
	parked = wait_counter(raw, "processes", 2, &procs);
	early = atomic_load(&op->finished);
	agent_ok(k, &rep, "open");
	agent_do(k, &rep, "recv - %d", TEST_WAIT_MS);
	assert_int_equal(op_join(op), 0);
	if (parked < 0)
		fail_msg("the send to an unconnected pid did not park "
		    "(processes %llu)", (unsigned long long)procs);
	assert_false(early);
	rep_expect(&rep, "waited", getpid());
	if (op->r != 0)
		fail_msg("the waiting send: %s", strerror(op->err));
	broker_stop(&f->b);
}

static void
test_send_to_reaped_pid_is_esrch_at_once(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--direct-wait", "20000", NULL };
	struct ipc_conn *c;
	long long t0, took;
	char to[32];
	pid_t pid;

	broker_start(&f->b, opts);
	c = fix_open(f);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_exit_status(test_child_reap(pid, TEST_WAIT_MS), 0);
	pid_addr(to, sizeof(to), pid);
	t0 = test_now_ms();
	errno = 0;
	assert_int_equal(ipc_send(c, to, "nobody home", 12), -1);
	took = test_now_ms() - t0;
	assert_int_equal(errno, ESRCH);
	print_message("ESRCH for a reaped pid after %lld ms\n", took);
	/* Not the 20 s a living process gets. */
	assert_true(took < 10000);
	broker_stop(&f->b);
}

static void
test_send_to_exited_unreaped_pid_is_esrch_at_once(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--direct-wait", "20000", NULL };
	struct ipc_conn *c;
	long long t0, took;
	char to[32];
	pid_t pid;
	int r;

	broker_start(&f->b, opts);
	c = fix_open(f);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	/* A zombie: kill(pid, 0) still succeeds. */
	assert_true(child_wait_exited(pid));
	pid_addr(to, sizeof(to), pid);
	t0 = test_now_ms();
	errno = 0;
	r = ipc_send(c, to, "nobody home", 12);
	took = test_now_ms() - t0;
	assert_exit_status(test_child_reap(pid, TEST_WAIT_MS), 0);
	assert_int_equal(r, -1);
	assert_int_equal(errno, ESRCH);
	print_message("ESRCH for a zombie after %lld ms\n", took);
	assert_true(took < 10000);
	broker_stop(&f->b);
}

static void
test_send_to_unconnected_pid_is_esrch_after_direct_wait(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--direct-wait", "300", NULL };
	struct agent_rep rep;
	struct ipc_conn *c;
	long long t0, took;
	struct kid *k;
	char to[32];
	int r;

	broker_start(&f->b, opts);
	c = fix_open(f);
	k = agent_start(f);
	pid_addr(to, sizeof(to), k->pid);
	t0 = test_now_ms();
	errno = 0;
	r = ipc_send(c, to, "too late", 9);
	took = test_now_ms() - t0;
	assert_int_equal(r, -1);
	assert_int_equal(errno, ESRCH);
	print_message("ESRCH for an unconnected pid after %lld ms\n", took);
	assert_true(took >= 250);
	assert_true(took < 10000);
	/* It was not sent: the process connecting now finds nothing. */
	agent_ok(k, &rep, "open");
	agent_fails(k, EAGAIN, "recv - 0");
	broker_stop(&f->b);
}

/* === 5. permissions ===================================================== */

/* Can a user other than the owner search every directory above dir? */
static int
reachable_by_others(const char *dir)
{
	char path[PATH_MAX], *slash;
	struct stat st;

	snprintf(path, sizeof(path), "%s", dir);
	while ((slash = strrchr(path, '/')) != NULL) {
		if (slash == path)
			slash[1] = '\0';	/* the root itself */
		else
			*slash = '\0';
		if (stat(path, &st) < 0 || !(st.st_mode & S_IXOTH))
			return 0;
		if (slash == path)
			break;
	}
	return 1;
}

static void
test_mailbox_mode_and_owner_govern_another_user(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct agent_rep rep;
	struct ipc_conn *c;
	struct kid *k;

	if (geteuid() != 0) {
		print_message("not root: cannot act as another user; "
		    "skipped\n");
		skip();
	}
	broker_start(&f->b, NULL);
	if (!reachable_by_others(f->b.dir)) {
		/* A chroot made in a 0700 directory, say: no other user
		 * can reach any socket here. */
		print_message("a directory above %s is closed to other users;"
		    " skipped\n", f->b.dir);
		broker_stop(&f->b);
		skip();
	}
	/* nobody must reach the socket: mkdtemp made the directory 0700,
	 * ipcd made the socket with our umask. */
	assert_int_equal(chmod(f->b.dir, 0755), 0);
	assert_int_equal(chmod(f->b.path, 0777), 0);
	c = fix_open(f);
	box_create(c, "perm", -1, 0600);
	k = agent_start(f);
	agent_ok(k, &rep, "drop");
	agent_ok(k, &rep, "open");

	/* 0600, root's: nobody may do nothing. */
	agent_fails(k, EACCES, "send perm x 0");
	agent_fails(k, EACCES, "recv perm 0");
	agent_fails(k, EACCES, "chmod perm 666");
	agent_fails(k, EACCES, "chown perm %d %d", NOBODY, NOBODY);
	agent_fails(k, EACCES, "delete perm");
	assert_int_equal(ipc_mbox_stat(c, "perm", &info), 0);
	assert_int_equal(info.mode, 0600);
	assert_int_equal(info.uid, 0);

	/* 0622: others may send, not receive. */
	assert_int_equal(ipc_mbox_chmod(c, "perm", 0622), 0);
	agent_ok(k, &rep, "send perm from-nobody 0");
	agent_fails(k, EACCES, "recv perm 0");

	/* 0644: others may receive, not send. */
	assert_int_equal(ipc_mbox_chmod(c, "perm", 0644), 0);
	assert_int_equal(ipc_mbox_stat(c, "perm", &info), 0);
	assert_int_equal(info.mode, 0644);
	agent_fails(k, EACCES, "send perm x 0");
	agent_do(k, &rep, "recv perm 0");
	rep_expect(&rep, "from-nobody", k->pid);
	assert_int_equal(rep.info.uid, NOBODY);
	assert_int_equal(rep.info.gid, NOBODY);
	agent_fails(k, EACCES, "delete perm");

	/* Root gives it away; then it is nobody's to delete. */
	assert_int_equal(ipc_mbox_chown(c, "perm", NOBODY, NOBODY), 0);
	assert_int_equal(ipc_mbox_stat(c, "perm", &info), 0);
	assert_int_equal(info.uid, NOBODY);
	assert_int_equal(info.gid, NOBODY);
	agent_ok(k, &rep, "delete perm");
	errno = 0;
	assert_int_equal(ipc_mbox_stat(c, "perm", NULL), -1);
	assert_int_equal(errno, ENOENT);
	broker_stop(&f->b);
}

/* === 6. quotas ========================================================== */

static void
test_mailbox_quota_per_uid_is_edquot_until_one_is_deleted(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--max-mailboxes-per-uid", "2", NULL };
	struct ipc_conn *c;

	broker_start(&f->b, opts);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_create(c, "q1", NULL, NULL), 0);
	assert_int_equal(ipc_mbox_create(c, "q2", NULL, NULL), 0);
	/* Opening one that exists is not creating. */
	assert_int_equal(ipc_mbox_create(c, "q2", NULL, NULL), 0);
	errno = 0;
	assert_int_equal(ipc_mbox_create(c, "q3", NULL, NULL), -1);
	assert_int_equal(errno, EDQUOT);
	assert_int_equal(ipc_mbox_delete(c, "q1"), 0);
	assert_int_equal(ipc_mbox_create(c, "q3", NULL, NULL), 0);
	errno = 0;
	assert_int_equal(ipc_mbox_create(c, "q4", NULL, NULL), -1);
	assert_int_equal(errno, EDQUOT);
	broker_stop(&f->b);
}

static void
test_byte_quota_per_uid_is_edquot_until_a_receive_frees_room(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--max-bytes-per-uid", "1000", NULL };
	struct ipc_conn *c;
	char buf[100];

	broker_start(&f->b, opts);
	c = fix_open(f);
	box_create(c, "bytes", -1, -1);
	memset(buf, 'q', sizeof(buf));
	/* 1000 bytes exactly. */
	for (int i = 0; i < 10; i++)
		if (ipc_send_timed(c, "bytes", buf, sizeof(buf), 0, NULL) < 0)
			fail_msg("send %d of 100 bytes: %s", i + 1,
			    strerror(errno));
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "bytes", buf, 1, 0, NULL), -1);
	assert_int_equal(errno, EDQUOT);
	/* A blocking send does not wait for quota: it fails too. */
	errno = 0;
	assert_int_equal(ipc_send(c, "bytes", buf, 1), -1);
	assert_int_equal(errno, EDQUOT);
	assert_int_equal(ipc_recv_timed(c, "bytes", buf, sizeof(buf), 0,
	    NULL), (ssize_t)sizeof(buf));
	assert_int_equal(ipc_send_timed(c, "bytes", buf, 99, 0, NULL), 0);
	assert_int_equal(ipc_send_timed(c, "bytes", buf, 1, 0, NULL), 0);
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "bytes", buf, 1, 0, NULL), -1);
	assert_int_equal(errno, EDQUOT);
	broker_stop(&f->b);
}

/* === 7. nothing lost when a receiver dies =============================== */

/* The message a consumer receives into, in memory it shares with the
 * test: whatever the library had copied in when the consumer was killed
 * is still there to read. */
struct nl_slot {
	uint32_t msg[2];		/* number, number ^ NL_CHECK */
	struct ipc_msg_info info;
};

struct nl_report {
	uint32_t num;
	uint32_t flags;
};

static int
nl_producer(struct fix *f, int in, int out, void *arg)
{
	struct ipc_conn *c = ipc_open(f->b.where);

	(void)in;
	(void)out;
	(void)arg;
	if (c == NULL)
		return 10;
	for (uint32_t i = 0; i < NL_MESSAGES; i++) {
		uint32_t m[2] = { i, i ^ NL_CHECK };

		if (ipc_send_timed(c, "work", m, sizeof(m), TEST_WAIT_MS,
		    NULL) < 0)
			return 11;
	}
	ipc_close(c);
	return 0;
}

/* Receive and report each message at once, until killed (or nothing
 * comes for TEST_WAIT_MS). */
static int
nl_consumer(struct fix *f, int in, int out, void *arg)
{
	struct nl_slot *slot = arg;
	struct ipc_conn *c = ipc_open(f->b.where);

	(void)in;
	if (c == NULL)
		return 10;
	for (;;) {
		struct nl_report rep;
		ssize_t r = ipc_recv_timed(c, "work", slot->msg,
		    sizeof(slot->msg), TEST_WAIT_MS, &slot->info);

		if (r < 0)
			return errno == ETIMEDOUT ? 0 : 11;
		if (r != (ssize_t)sizeof(slot->msg))
			return 12;
		rep.num = slot->msg[0];
		rep.flags = slot->info.flags;
		if (write(out, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
			return 13;
	}
}

struct nl_books {
	uint8_t times[NL_MESSAGES];	/* reports of each number */
	uint8_t first[NL_MESSAGES];	/* reports not flagged redelivered */
	uint8_t killed[NL_MESSAGES];	/* found in a killed one's slot */
	uint32_t reports, distinct, bogus, redelivered;
};

static void
nl_count(struct nl_books *bk, const struct nl_report *rep)
{
	bk->reports++;
	if (rep->num >= NL_MESSAGES) {
		bk->bogus++;
		return;
	}
	if (bk->times[rep->num] == 0 && !bk->killed[rep->num])
		bk->distinct++;
	if (bk->times[rep->num] < UINT8_MAX)
		bk->times[rep->num]++;
	if (rep->flags & IPC_MSG_REDELIVERED)
		bk->redelivered++;
	else if (bk->first[rep->num] < UINT8_MAX)
		bk->first[rep->num]++;
}

/* Read what k has reported so far (all of it, to EOF, when drain). */
static int
nl_read(struct kid *k, struct nl_books *bk, int drain)
{
	struct nl_report rep;
	int n = 0;

	while (test_wait_readable(k->rep, drain ? TEST_WAIT_MS : 0) == 1) {
		ssize_t r = read(k->rep, &rep, sizeof(rep));

		if (r == 0)
			break;
		if (r != (ssize_t)sizeof(rep))
			return -1;
		nl_count(bk, &rep);
		n++;
	}
	return n;
}

static void
test_receiver_killed_20_times_loses_nothing(void **state)
{
	struct fix *f = *state;
	struct nl_books *bk = calloc(1, sizeof(*bk));
	struct kid *cons[NL_CONSUMERS], *prod;
	struct nl_slot *slots;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	uint32_t since_kill = 0, gap, missing = 0, dups = 0, recovered = 0;
	long long t0 = test_now_ms(), idle_since;
	uint64_t requeued = 0, acks = 0;
	char stuck[256] = "";
	int kills = 0, status, raw;
	struct ipc_conn *c;

	assert_non_null(bk);
	f->heap = bk;
	print_message("seed %u\n", seed);
	srand(seed);
	gap = NL_KILL_GAP_MIN + (uint32_t)rand() %
	    (NL_KILL_GAP_MAX - NL_KILL_GAP_MIN);
	f->shared_len = NL_CONSUMERS * sizeof(*slots);
	slots = mmap(NULL, f->shared_len, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(slots != MAP_FAILED);
	f->shared = slots;
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "work", NL_CAPACITY, -1);
	for (int i = 0; i < NL_CONSUMERS; i++)
		cons[i] = kid_start(f, nl_consumer, &slots[i]);
	prod = kid_start(f, nl_producer, NULL);

	idle_since = test_now_ms();
	while (bk->distinct < NL_MESSAGES && bk->bogus == 0) {
		struct pollfd pf[NL_CONSUMERS];
		int r, i;

		for (i = 0; i < NL_CONSUMERS; i++)
			pf[i] = (struct pollfd){ .fd = cons[i]->rep,
			    .events = POLLIN };
		r = poll(pf, NL_CONSUMERS, 100);
		if (r < 0 && errno != EINTR)
			fail_msg("poll: %s", strerror(errno));
		if (r <= 0) {
			if (test_now_ms() - idle_since > NL_IDLE_MS)
				break;
			continue;
		}
		idle_since = test_now_ms();
		for (i = 0; i < NL_CONSUMERS; i++) {
			int n;

			if (pf[i].revents == 0)
				continue;
			n = nl_read(cons[i], bk, 0);
			if (n < 0)
				fail_msg("consumer %d: short report", i);
			if (n == 0 && (pf[i].revents & (POLLHUP | POLLIN))) {
				/* EOF: it exited by itself. */
				status = kid_reap(cons[i]);
				fail_msg("consumer %d exited by itself "
				    "(status 0x%x) with %u of %d received",
				    i, status, bk->distinct, NL_MESSAGES);
			}
			since_kill += (uint32_t)n;
		}
		/* A while, not an if: reports come in batches (a slow
		 * machine, a sanitizer build), and a batch may cross more
		 * than one gap; the gaps add up to less than the messages,
		 * so every kill happens before they run out. */
		while (kills < NL_KILLS && since_kill >= gap) {
			struct nl_slot *s;

			i = rand() % NL_CONSUMERS;
			kid_kill(cons[i]);
			/* What it reported before it died. */
			if (nl_read(cons[i], bk, 1) < 0)
				fail_msg("consumer %d: short report", i);
			kid_reap(cons[i]);
			/* What the library had handed it, reported or
			 * not: it may have died between ipc_recv()
			 * returning and its report. */
			s = &slots[i];
			if (s->msg[1] == (s->msg[0] ^ NL_CHECK) &&
			    s->msg[0] < NL_MESSAGES &&
			    !bk->killed[s->msg[0]]) {
				if (bk->times[s->msg[0]] == 0) {
					bk->distinct++;
					recovered++;
				}
				bk->killed[s->msg[0]] = 1;
			}
			memset(s, 0, sizeof(*s));
			kid_fork(f, cons[i], nl_consumer, s, 0);
			kills++;
			since_kill -= gap;
			gap = NL_KILL_GAP_MIN + (uint32_t)rand() %
			    (NL_KILL_GAP_MAX - NL_KILL_GAP_MIN);
		}
	}
	if (bk->distinct < NL_MESSAGES) {
		struct ipc_mbox_info info;
		siginfo_t si = { 0 };
		int running;

		/* (Not reaped here: kid_reap() below does.) */
		running = waitid(P_PID, (id_t)prod->pid, &si, WEXITED |
		    WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;

		/* Stuck: what the broker holds, and whether the producer
		 * is still in a send. */
		if (ipc_mbox_stat(c, "work", &info) == 0)
			snprintf(stuck, sizeof(stuck), "mailbox depth %u, "
			    "%u receivers and %u senders waiting, %llu in, "
			    "%llu out; producer %s", info.depth,
			    info.waiting_receivers, info.waiting_senders,
			    (unsigned long long)info.msgs_in,
			    (unsigned long long)info.msgs_out,
			    running ? "still in a send" : "done");
		print_message("stuck: %s\n", stuck);
		if (running)
			kid_kill(prod);
	}
	for (int i = 0; i < NL_CONSUMERS; i++)
		kid_kill(cons[i]);
	status = kid_reap(prod);
	/* The broker's view, for the record. */
	raw = fix_raw(f);
	if (raw_counter(raw, "redelivered", &requeued) < 0 ||
	    raw_counter(raw, "acks", &acks) < 0)
		requeued = acks = UINT64_MAX;
	for (uint32_t n = 0; n < NL_MESSAGES; n++) {
		if (bk->times[n] == 0 && !bk->killed[n])
			missing++;
		if (bk->first[n] > 1)
			dups++;
	}
	print_message("%u reports (%u flagged redelivered), %u of %d "
	    "numbers, %u only in a killed consumer's buffer, %d kills, %u "
	    "missing, %u received twice unflagged, %lld ms\n", bk->reports,
	    bk->redelivered, bk->distinct, NL_MESSAGES, recovered, kills,
	    missing, dups, test_now_ms() - t0);
	print_message("broker: %llu requeued, %llu acks\n",
	    (unsigned long long)requeued, (unsigned long long)acks);
	if (missing > 0) {
		char list[256] = "";
		size_t len = 0;

		for (uint32_t n = 0; n < NL_MESSAGES && len < 200; n++)
			if (bk->times[n] == 0 && !bk->killed[n])
				len += (size_t)snprintf(list + len,
				    sizeof(list) - len, " %u", n);
		fail_msg("%u messages never received:%s%s%s", missing, list,
		    stuck[0] ? "; stuck: " : "", stuck);
	}
	assert_exit_status(status, 0);
	assert_int_equal(kills, NL_KILLS);
	assert_int_equal(dups, 0);
	broker_stop(&f->b);
}

/* A receive parked in the broker, its message handed to the receiver's
 * connection but never read by its library: the receiver is killed.  The
 * message must come back flagged, and messages sent afterwards, never
 * delivered before, must not be. */
static void
test_redelivered_flag_on_requeued_message_only(void **state)
{
	struct fix *f = *state;
	struct ipc_msg_info info;
	struct agent_rep rep;
	struct ipc_conn *c;
	uint64_t id = 0;
	struct kid *r;
	char text[8];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "box", -1, -1);
	r = agent_connected(f, NULL);
	agent_ok(r, &rep, "arm box");
	agent_ok(r, &rep, "sync");
	/* Accepted means handed to the parked receiver: the broker has
	 * sent it; the agent's library has not read it. */
	assert_int_equal(ipc_send_timed(c, "box", "first", 6, TEST_WAIT_MS,
	    &id), 0);
	kid_kill(r);
	recv_expect(c, "box", "first", getpid(), &info);
	assert_int_equal(info.id, id);
	assert_true(info.flags & IPC_MSG_REDELIVERED);
	/* (Its acknowledgement goes with the next request.) */
	for (int i = 0; i < 8; i++) {
		snprintf(text, sizeof(text), "new-%d", i);
		assert_int_equal(ipc_send_timed(c, "box", text, 6,
		    TEST_WAIT_MS, NULL), 0);
		recv_expect(c, "box", text, getpid(), &info);
		if (info.flags != 0)
			fail_msg("message %d, never delivered before, has "
			    "flags 0x%x", i, info.flags);
	}
	broker_stop(&f->b);
}

/* === 8. failures of messages already sent =============================== */

/* Wait for c's descriptor to say there is news, then take the oldest
 * failure. */
static void
failure_expect(struct ipc_conn *c, struct ipc_send_failure *out)
{
	int fd = ipc_fd(c);

	assert_true(fd >= 0);
	if (test_wait_readable(fd, TEST_WAIT_MS) != 1)
		fail_msg("ipc_fd() not readable: no failure reported");
	memset(out, 0, sizeof(*out));
	if (ipc_send_failure(c, out) < 0)
		fail_msg("ipc_send_failure: %s", strerror(errno));
}

static void
failure_expect_none(struct ipc_conn *c)
{
	struct ipc_send_failure fl;

	errno = 0;
	if (ipc_send_failure(c, &fl) == 0)
		fail_msg("unexpected failure: send %llu msg %llu: %s",
		    (unsigned long long)fl.send_id,
		    (unsigned long long)fl.msg_id, strerror(fl.error));
	assert_int_equal(errno, EAGAIN);
}

static void
test_send_failure_with_nothing_pending_is_eagain(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	failure_expect_none(c);
	/* Successful sends leave nothing either. */
	box_create(c, "fine", -1, -1);
	assert_int_equal(ipc_send(c, "fine", "x", 2), 0);
	failure_expect_none(c);
	broker_stop(&f->b);
}

static void
test_async_send_to_full_mailbox_fails_with_eagain_its_id(void **state)
{
	struct fix *f = *state;
	struct ipc_send_failure fl;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	uint64_t id = 0;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "full", 1, -1);
	assert_int_equal(ipc_send(c, "full", "first", 6), 0);
	assert_int_equal(ipc_send_async(c, "full", "second", 7, &id), 0);
	failure_expect(c, &fl);
	assert_int_equal(fl.send_id, id);
	assert_int_equal(fl.error, EAGAIN);
	assert_int_equal(fl.msg_id, 0);
	failure_expect_none(c);
	assert_int_equal(ipc_mbox_stat(c, "full", &info), 0);
	assert_int_equal(info.depth, 1);
	broker_stop(&f->b);
}

/* Every async send is accounted for: refused at the call (EAGAIN), or
 * accepted, or reported failed -- also when far more fail than the
 * library keeps reports for (it stops taking sends instead of dropping
 * reports). */
#define FLOOD_ASYNC 100000
static void
test_async_flood_of_failures_loses_no_report(void **state)
{
	struct fix *f = *state;
	struct ipc_send_failure fl;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	uint64_t sent = 0, refused = 0, reported = 0;
	long long deadline;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "full", 1, -1);
	for (int i = 0; i < FLOOD_ASYNC; i++) {
		if (ipc_send_async(c, "full", "x", 2, NULL) == 0) {
			sent++;
			continue;
		}
		assert_int_equal(errno, EAGAIN);
		refused++;
		/* Read some reports, as an application would. */
		while (reported < sent && ipc_send_failure(c, &fl) == 0) {
			assert_int_equal(fl.error, EAGAIN);
			reported++;
		}
	}
	deadline = test_now_ms() + TEST_WAIT_MS;
	while (reported + 1 < sent) {
		if (ipc_send_failure(c, &fl) == 0) {
			assert_int_equal(fl.error, EAGAIN);
			reported++;
			continue;
		}
		assert_int_equal(errno, EAGAIN);
		assert_true(test_now_ms() < deadline);
		assert_int_equal(test_wait_readable(ipc_fd(c), 1000) >= 0, 1);
	}
	print_message("%llu sent: 1 accepted, %llu reported failed; %llu "
	    "refused at the call\n", (unsigned long long)sent,
	    (unsigned long long)reported, (unsigned long long)refused);
	assert_true(sent > 4096);
	assert_int_equal(sent + refused, FLOOD_ASYNC);
	assert_int_equal(ipc_mbox_stat(c, "full", &info), 0);
	assert_int_equal(info.depth, 1);
	failure_expect_none(c);
	broker_stop(&f->b);
}

static void
test_async_send_to_missing_mailbox_fails_later_with_enoent(void **state)
{
	struct fix *f = *state;
	struct ipc_send_failure fl;
	struct ipc_conn *c;
	uint64_t id1 = 0, id2 = 0;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_send_async(c, "missing", "x", 2, &id1), 0);
	assert_int_equal(ipc_send_async(c, "missing", "y", 2, &id2), 0);
	assert_true(id1 != id2);
	/* Oldest first, each with its own id. */
	failure_expect(c, &fl);
	assert_int_equal(fl.send_id, id1);
	assert_int_equal(fl.error, ENOENT);
	failure_expect(c, &fl);
	assert_int_equal(fl.send_id, id2);
	assert_int_equal(fl.error, ENOENT);
	failure_expect_none(c);
	broker_stop(&f->b);
}

static void
test_accepted_msg_of_deleted_mailbox_fails_with_enoent(void **state)
{
	struct fix *f = *state;
	struct ipc_send_failure fl;
	struct ipc_conn *c, *other;
	uint64_t msg_id = 0;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	other = fix_open(f);
	box_create(c, "doomed", -1, -1);
	assert_int_equal(ipc_send_timed(c, "doomed", "queued", 7,
	    TEST_WAIT_MS, &msg_id), 0);
	assert_true(msg_id != 0);
	assert_int_equal(ipc_mbox_delete(other, "doomed"), 0);
	failure_expect(c, &fl);
	assert_int_equal(fl.msg_id, msg_id);
	assert_int_equal(fl.error, ENOENT);
	failure_expect_none(c);
	broker_stop(&f->b);
}

static void
test_accepted_direct_msg_fails_with_esrch_when_pid_exits(void **state)
{
	struct fix *f = *state;
	struct ipc_send_failure fl;
	struct ipc_conn *c;
	uint64_t msg_id = 0;
	struct kid *p;
	char to[32];
	pid_t ppid;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	p = agent_connected(f, &ppid);
	pid_addr(to, sizeof(to), ppid);
	assert_int_equal(ipc_send_timed(c, to, "unread", 7, TEST_WAIT_MS,
	    &msg_id), 0);
	agent_cmd(p, "exit 0");
	assert_exit_status(kid_reap(p), 0);
	failure_expect(c, &fl);
	assert_int_equal(fl.msg_id, msg_id);
	assert_int_equal(fl.error, ESRCH);
	failure_expect_none(c);
	broker_stop(&f->b);
}

/* A blocking send after an async one was received: the blocking one is
 * answered as usual (it must not inherit the other's async-ness). */
static void
test_blocking_send_after_async_send_gets_its_reply(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	uint64_t sid = 0;
	struct op *op;
	int joined;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "mix", -1, -1);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(ipc_send_async(c, "mix", "async", 6, &sid),
		    0);
		recv_expect(c, "mix", "async", getpid(), NULL);
	}
	/* A round trip: the acknowledgements went, the broker let the
	 * messages go. */
	assert_int_equal(ipc_mbox_stat(c, "mix", &info), 0);
	failure_expect_none(c);
	op = op_send(f, "mix", "block", TEST_WAIT_MS);
	joined = op_join(op);
	assert_int_equal(ipc_mbox_stat(c, "mix", &info), 0);
	if (joined < 0)
		fail_msg("a blocking send got no reply in %d ms (mailbox "
		    "depth %u, %llu accepted in all)", TEST_WAIT_MS,
		    info.depth, (unsigned long long)info.msgs_in);
	if (op->r != 0)
		fail_msg("the blocking send: %s", strerror(op->err));
	recv_expect(c, "mix", "block", getpid(), NULL);
	broker_stop(&f->b);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_direct_send_received_from_own_queue_with_sender_info),
		T(test_recv_any_takes_several_senders_in_arrival_order),
		T(test_selective_recv_takes_q_next_keeps_others_in_order),
		T(test_selective_recv_parked_for_q_not_woken_by_r_but_by_q),
		T(test_two_connections_of_one_process_share_its_queue),
		T(test_direct_queue_stays_while_one_connection_remains),
		T(test_direct_queue_goes_when_process_disconnects),
		T(test_only_p_receives_pid_p),
		T(test_recycled_pid_gets_none_of_old_instance_messages),
		T(test_send_to_unconnected_living_pid_waits_until_it_connects),
		T(test_send_to_reaped_pid_is_esrch_at_once),
		T(test_send_to_exited_unreaped_pid_is_esrch_at_once),
		T(test_send_to_unconnected_pid_is_esrch_after_direct_wait),
		T(test_mailbox_mode_and_owner_govern_another_user),
		T(test_mailbox_quota_per_uid_is_edquot_until_one_is_deleted),
		T(test_byte_quota_per_uid_is_edquot_until_a_receive_frees_room),
		T(test_receiver_killed_20_times_loses_nothing),
		T(test_redelivered_flag_on_requeued_message_only),
		T(test_send_failure_with_nothing_pending_is_eagain),
		T(test_async_send_to_full_mailbox_fails_with_eagain_its_id),
		T(test_async_flood_of_failures_loses_no_report),
	T(test_async_send_to_missing_mailbox_fails_later_with_enoent),
		T(test_accepted_msg_of_deleted_mailbox_fails_with_enoent),
		T(test_accepted_direct_msg_fails_with_esrch_when_pid_exits),
		T(test_blocking_send_after_async_send_gets_its_reply),
	};

	test_init(600);
	/* TEST_FILTER=test_send_to* runs only the tests that match. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("direct", tests, NULL, NULL);
}
