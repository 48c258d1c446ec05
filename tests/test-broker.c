/*
 * ipcd end to end: each test starts its own broker on a socket in a
 * private directory, waits for its ready line, and talks to it through
 * libipc (and, for bad input, through raw mysocks connections).
 *
 * Nothing here sleeps to wait for something.  Where a test must know that
 * a receiver or sender is parked in the broker before it acts, it asks the
 * broker (ipc_mbox_stat's waiting_receivers / waiting_senders) until a
 * deadline.  Concurrent sides are threads with their own connection, or
 * child processes; every wait is bounded, every child reaped, and every
 * thread joined before the test asserts on what it saw.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Messages per batch of the well-behaved client, and batches it must
 * complete before and after each piece of bad input. */
#define GOOD_BATCH	8
#define GOOD_ROUNDS	20

/* The in-test producer/consumer run. */
#define PC_PRODUCERS	2
#define PC_CONSUMERS	2
#define PC_MESSAGES	5000
#define PC_STOP		0xffffffffu

/* Bytes a client that never reads may push at the broker: well past what
 * the broker buffers for one connection (1 MiB of replies, plus socket
 * buffers), yet bounded. */
#define FLOOD_MAX	(4u << 20)

/* --- the broker ------------------------------------------------------- */

/* What every test gets from its setup: the broker, and what the test
 * opens or starts (connections, calls on threads, the well-behaved client
 * of the bad-input tests), so that teardown closes, joins and frees it
 * all, however far the test got. */
#define FIX_MAX 32

struct good;
struct op;
struct fix {
	struct broker b;
	struct good *good;
	struct op *ops[FIX_MAX];
	int nops;
	struct ipc_conn *conns[FIX_MAX];
	int nconns;
	pid_t kids[FIX_MAX];		/* 0 once reaped */
	int nkids;
};

/* A connection to the test's broker, closed by the teardown. */
static struct ipc_conn *
fix_open(struct fix *f)
{
	struct ipc_conn *c = broker_open(&f->b);

	assert_true(f->nconns < FIX_MAX);
	f->conns[f->nconns++] = c;
	return c;
}

/* The broker is still there: not exited (not even a zombie), and a fresh
 * connection gets answers. */
static void
broker_assert_alive(struct fix *f)
{
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	int status;

	assert_true(f->b.proc.pid > 0);
	assert_int_equal(waitpid(f->b.proc.pid, &status, WNOHANG), 0);
	assert_int_equal(kill(f->b.proc.pid, 0), 0);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_create(c, "alive-check", NULL, &info), 0);
	assert_int_equal(ipc_mbox_delete(c, "alive-check"), 0);
}

static void
box_create(struct ipc_conn *c, const char *name, int64_t capacity,
    int64_t max_bytes)
{
	struct ipc_mbox_attr attr;

	ipc_mbox_attr_init(&attr);
	attr.capacity = capacity;
	attr.max_bytes = max_bytes;
	attr.exclusive = 1;
	if (ipc_mbox_create(c, name, &attr, NULL) < 0)
		fail_msg("create %s: %s", name, strerror(errno));
}

/* Ask the broker until the mailbox has the given numbers of parked
 * receivers and senders (-1: any).  0, or -1 at the deadline or on
 * error.  One round trip per look; no sleeping. */
static int
wait_parked(struct ipc_conn *c, const char *box, int receivers,
    int senders, struct ipc_mbox_info *info_out)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	struct ipc_mbox_info info;

	do {
		if (ipc_mbox_stat(c, box, &info) < 0)
			return -1;
		if ((receivers < 0 ||
		    info.waiting_receivers == (uint32_t)receivers) &&
		    (senders < 0 ||
		    info.waiting_senders == (uint32_t)senders)) {
			if (info_out != NULL)
				*info_out = info;
			return 0;
		}
	} while (test_now_ms() < deadline);
	return -1;
}

static uint64_t
wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- child processes ---------------------------------------------------- */

static void
assert_exit_status(int status, int code)
{
	if (!WIFEXITED(status))
		fail_msg("child did not exit: status 0x%x", status);
	assert_int_equal(WEXITSTATUS(status), code);
}

static void
proc_close(struct test_proc *p)
{
	close(p->in);
	close(p->out);
	close(p->err);
	p->in = p->out = p->err = -1;
}

/* Wait for a spawned program to exit by itself; its status. */
static int
proc_wait(struct test_proc *p)
{
	int status = test_child_reap(p->pid, TEST_WAIT_MS);

	p->pid = 0;
	proc_close(p);
	return status;
}

/* A child process that opens its own connection, sends len bytes to box
 * and writes the message id to idfd (if >= 0).  Exits 0 on success.
 * Reap it with kid_wait(); the teardown reaps it otherwise. */
static pid_t
child_send(struct fix *f, const char *box, const void *buf, size_t len,
    int timeout_ms, int idfd)
{
	pid_t pid;

	assert_true(f->nkids < FIX_MAX);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ipc_conn *c = ipc_open(f->b.where);
		uint64_t id = 0;

		if (c == NULL)
			_exit(10);
		if (ipc_send_timed(c, box, buf, len, timeout_ms, &id) < 0)
			_exit(11);
		if (idfd >= 0 &&
		    writeSocket(idfd, &id, sizeof(id)) != (int)sizeof(id))
			_exit(12);
		ipc_close(c);
		_exit(0);
	}
	f->kids[f->nkids++] = pid;
	return pid;
}

/* test_child_reap() for a child of child_send(): forgotten first, so
 * the teardown does not reap it again. */
static int
kid_wait(struct fix *f, pid_t pid)
{
	for (int i = 0; i < f->nkids; i++)
		if (f->kids[i] == pid)
			f->kids[i] = 0;
	return test_child_reap(pid, TEST_WAIT_MS);
}

/* --- one call on its own thread and connection -------------------------- */

enum op_kind { OP_RECV, OP_SEND };

struct op {
	pthread_t t;
	struct ipc_conn *c;
	enum op_kind kind;
	char box[64];
	int timeout_ms;
	uint8_t buf[4096];
	size_t len;		/* SEND: payload bytes; RECV: buffer size */
	ssize_t r;
	int err;
	struct ipc_msg_info info;
	int done[2];		/* a byte on done[0]: the call returned */
	atomic_int finished;
	int started, joined;
};

static void *
op_main(void *arg)
{
	struct op *op = arg;

	errno = 0;
	if (op->kind == OP_RECV)
		op->r = op->timeout_ms == IPC_FOREVER ?
		    ipc_recv(op->c, op->box, op->buf, op->len, &op->info) :
		    ipc_recv_timed(op->c, op->box, op->buf, op->len,
		    op->timeout_ms, &op->info);
	else
		op->r = op->timeout_ms == IPC_FOREVER ?
		    ipc_send(op->c, op->box, op->buf, op->len) :
		    ipc_send_timed(op->c, op->box, op->buf, op->len,
		    op->timeout_ms, NULL);
	op->err = errno;
	atomic_store(&op->finished, 1);
	if (writeSocket(op->done[1], "x", 1) != 1) {
		/* The reader is gone: nobody waits for us. */
	}
	return NULL;
}

/* Start a receive (len = buffer size) or a send of text on a new thread
 * with a new connection.  The teardown joins and frees it. */
static struct op *
op_start(struct fix *f, enum op_kind kind, const char *box,
    const char *text, size_t len, int timeout_ms)
{
	struct op *op = calloc(1, sizeof(*op));

	assert_non_null(op);
	assert_true(len <= sizeof(op->buf));
	assert_true(f->nops < FIX_MAX);
	op->done[0] = op->done[1] = -1;
	op->c = broker_open(&f->b);
	f->ops[f->nops++] = op;
	op->kind = kind;
	snprintf(op->box, sizeof(op->box), "%s", box);
	op->timeout_ms = timeout_ms;
	op->len = len;
	if (text != NULL)
		memcpy(op->buf, text, len);
	assert_int_equal(pipe(op->done), 0);
	assert_int_equal(pthread_create(&op->t, NULL, op_main, op), 0);
	op->started = 1;
	return op;
}

/* Wait for the call to return and join the thread.  0, or -1 when it has
 * not returned in time (the teardown then waits for it again, once the
 * broker is gone). */
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

/* Join (the broker being gone, a call still blocked has returned) and
 * free.  A thread that still does not return is left, and op with it. */
static void
op_free(struct op *op)
{
	if (op->started && op_join(op) < 0)
		return;
	ipc_close(op->c);
	if (op->done[0] >= 0)
		close(op->done[0]);
	if (op->done[1] >= 0)
		close(op->done[1]);
	free(op);
}

/* --- the well-behaved client of the bad-input tests --------------------- */

struct good {
	pthread_t t;
	struct ipc_conn *c;
	char box[64];
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t rounds, sent, received;
	int stop, failed, started, joined;
	char why[200];
};

static void
good_fail(struct good *g, const char *what, int err)
{
	pthread_mutex_lock(&g->mu);
	g->failed = 1;
	snprintf(g->why, sizeof(g->why), "after %llu rounds: %s: %s",
	    (unsigned long long)g->rounds, what, strerror(err));
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* Send a batch of numbered messages, receive them back, check every one
 * is there in order; again until told to stop. */
static void *
good_main(void *arg)
{
	struct good *g = arg;
	uint64_t seq = 0;

	for (;;) {
		int stop;

		pthread_mutex_lock(&g->mu);
		stop = g->stop;
		pthread_mutex_unlock(&g->mu);
		if (stop)
			break;
		for (int i = 0; i < GOOD_BATCH; i++) {
			uint64_t v = seq + (uint64_t)i;

			if (ipc_send_timed(g->c, g->box, &v, sizeof(v),
			    TEST_WAIT_MS, NULL) < 0) {
				good_fail(g, "send", errno);
				return NULL;
			}
			g->sent++;
		}
		for (int i = 0; i < GOOD_BATCH; i++) {
			uint64_t v = 0;
			ssize_t r = ipc_recv_timed(g->c, g->box, &v, sizeof(v),
			    TEST_WAIT_MS, NULL);

			if (r < 0) {
				good_fail(g, "recv", errno);
				return NULL;
			}
			if (r != (ssize_t)sizeof(v) ||
			    v != seq + (uint64_t)i) {
				good_fail(g, "recv: wrong message", EPROTO);
				return NULL;
			}
			g->received++;
		}
		seq += GOOD_BATCH;
		pthread_mutex_lock(&g->mu);
		g->rounds++;
		pthread_cond_broadcast(&g->cv);
		pthread_mutex_unlock(&g->mu);
	}
	return NULL;
}

/* Start the client on mailbox "good"; the teardown stops it. */
static struct good *
good_start(struct fix *f)
{
	struct good *g = calloc(1, sizeof(*g));

	assert_non_null(g);
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	f->good = g;
	snprintf(g->box, sizeof(g->box), "good");
	box_create(fix_open(f), g->box, -1, -1);
	g->c = broker_open(&f->b);
	assert_int_equal(pthread_create(&g->t, NULL, good_main, g), 0);
	g->started = 1;
	return g;
}

/* Wait until the client has completed n more rounds. */
static void
good_progress(struct good *g, uint64_t n)
{
	struct timespec until;
	uint64_t target;
	int ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += TEST_WAIT_MS / 1000;
	pthread_mutex_lock(&g->mu);
	target = g->rounds + n;
	while (g->rounds < target && !g->failed)
		if (pthread_cond_timedwait(&g->cv, &g->mu, &until) ==
		    ETIMEDOUT)
			break;
	ok = g->rounds >= target && !g->failed;
	pthread_mutex_unlock(&g->mu);
	if (!ok)
		fail_msg("the well-behaved client stalled: %s",
		    g->failed ? g->why : "no progress in time");
}

/* Stop and join the client (its calls are all timed, so the join is
 * bounded); close its connection. */
static void
good_join(struct good *g)
{
	if (g->joined)
		return;
	pthread_mutex_lock(&g->mu);
	g->stop = 1;
	pthread_mutex_unlock(&g->mu);
	if (g->started)
		pthread_join(g->t, NULL);
	g->joined = 1;
	ipc_close(g->c);
	g->c = NULL;
}

/* Stop the client and check that it lost nothing. */
static void
good_finish(struct fix *f)
{
	struct good *g = f->good;

	good_join(g);
	if (g->failed)
		fail_msg("the well-behaved client failed %s", g->why);
	assert_true(g->rounds >= 2 * GOOD_ROUNDS);
	assert_int_equal(g->sent, g->rounds * GOOD_BATCH);
	assert_int_equal(g->received, g->sent);
}

/* --- raw connections ---------------------------------------------------- */

static int
raw_connect(const struct broker *b)
{
	int fd = connectSocketUnix(b->path);

	if (fd < 0)
		fail_msg("connect %s: %s", b->path, strerror(errno));
	return fd;
}

static size_t
raw_encode(const struct wire_frame *f, uint8_t *buf, size_t cap)
{
	long n = wire_encode(f, buf, cap);

	assert_true(n > 0);
	return (size_t)n;
}

static void
raw_write(int fd, const void *buf, size_t len)
{
	assert_int_equal(writeSocket(fd, buf, (int)len), (int)len);
}

static void
raw_send(int fd, const struct wire_frame *f)
{
	uint8_t buf[8192];

	raw_write(fd, buf, raw_encode(f, buf, sizeof(buf)));
}

/* Read n bytes, each wait bounded.  n on success, 0 on EOF (or reset)
 * before the first byte, -1 otherwise. */
static int
raw_read_full(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		int r;

		if (test_wait_readable(fd, TEST_WAIT_MS) != 1)
			return -1;
		r = readSocket(fd, buf + got, (int)(n - got));
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return got == 0 ? 0 : -1;
		if (r < 0)
			return -1;
		got += (size_t)r;
	}
	return (int)n;
}

/* The next frame from the broker, decoded into f (borrowing buf).
 * 1 frame, 0 the broker closed, -1 timeout or a bad frame. */
static int
raw_read(int fd, uint8_t *buf, size_t cap, struct wire_frame *f)
{
	uint32_t len;
	int r;

	if ((r = raw_read_full(fd, buf, WIRE_HDR_LEN)) <= 0)
		return r;
	len = wire_get32(buf);
	if (len < WIRE_HDR_LEN || len > cap)
		return -1;
	if (len > WIRE_HDR_LEN &&
	    raw_read_full(fd, buf + WIRE_HDR_LEN, len - WIRE_HDR_LEN) <= 0)
		return -1;
	return wire_decode(buf, len, f, NULL) == 0 ? 1 : -1;
}

/* The broker has closed: EOF (or a reset) without another byte. */
static void
raw_assert_closed(int fd)
{
	uint8_t c;
	int r;

	assert_int_equal(test_wait_readable(fd, TEST_WAIT_MS), 1);
	r = readSocket(fd, &c, 1);
	if (r != 0 && !(r < 0 && errno == ECONNRESET))
		fail_msg("expected the broker to close; read gave %d (%s)",
		    r, r < 0 ? strerror(errno) : "a byte");
}

static void
raw_assert_error(int fd, uint32_t code, uint64_t id)
{
	uint8_t buf[4096];
	struct wire_frame f;

	assert_int_equal(raw_read(fd, buf, sizeof(buf), &f), 1);
	if (f.type != WIRE_ERROR)
		fail_msg("expected ERROR, got %s", wire_type_name(f.type));
	assert_int_equal(f.b.error.code, code);
	assert_int_equal(f.id, id);
}

static void
raw_hello(int fd)
{
	struct wire_frame f = { .type = WIRE_HELLO, .id = 1 };
	uint8_t buf[4096];

	f.b.hello.magic = WIRE_MAGIC;
	f.b.hello.version_min = WIRE_VERSION;
	f.b.hello.version_max = WIRE_VERSION;
	raw_send(fd, &f);
	assert_int_equal(raw_read(fd, buf, sizeof(buf), &f), 1);
	assert_int_equal(f.type, WIRE_WELCOME);
	assert_int_equal(f.id, 1);
}

static void
raw_recv_frame(struct wire_frame *f, uint64_t id, const char *box,
    uint32_t timeout_ms, uint32_t max_len)
{
	memset(f, 0, sizeof(*f));
	f->type = WIRE_RECV;
	f->id = id;
	f->b.recv.timeout_ms = timeout_ms;
	f->b.recv.max_len = max_len;
	f->b.recv.source = wire_str(box);
}

static void
raw_send_frame(struct wire_frame *f, uint64_t id, const char *box,
    const void *payload, size_t len, uint32_t timeout_ms)
{
	memset(f, 0, sizeof(*f));
	f->type = WIRE_SEND;
	f->id = id;
	f->b.send.timeout_ms = timeout_ms;
	f->b.send.dest = wire_str(box);
	f->b.send.payload.p = payload;
	f->b.send.payload.len = len;
}

/* --- fixture ------------------------------------------------------------ */

static int
fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->b.proc.pid = 0;
	f->b.proc.in = f->b.proc.out = f->b.proc.err = -1;
	*state = f;
	return 0;
}

/* Whatever a test left (it may have failed half-way): stop the client,
 * kill and reap the broker (which makes every blocked call return),
 * join the calls, close the connections, remove the directory. */
static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	if (f->good != NULL) {
		good_join(f->good);
		pthread_mutex_destroy(&f->good->mu);
		pthread_cond_destroy(&f->good->cv);
		free(f->good);
	}
	if (f->b.proc.pid > 0)
		test_stop(&f->b.proc);
	for (int i = 0; i < f->nkids; i++)
		if (f->kids[i] > 0)
			test_child_reap(f->kids[i], TEST_WAIT_MS);
	for (int i = 0; i < f->nops; i++)
		op_free(f->ops[i]);
	for (int i = 0; i < f->nconns; i++)
		ipc_close(f->conns[i]);
	test_rmtree(f->b.dir);
	free(f);
	return 0;
}

/* === 1. many producers and consumers =================================== */

/* tools/prodcons: 3 producer and 2 consumer processes, 100,000 messages
 * each producer, through one mailbox of capacity 64. */
static void
test_prodcons_3x2x100000_exactly_once_in_order(void **state)
{
	struct fix *f = *state;
	struct test_proc p;
	char line[512], summary[512] = "";
	char *argv[] = { NULL, "-s", f->b.path, "-p", "3", "-c", "2",
	    "-n", "100000", "-k", "64", NULL };
	int status;

	broker_start(&f->b, NULL);
	argv[0] = strdup(test_build_path("tools/prodcons"));
	assert_non_null(argv[0]);
	assert_int_equal(test_spawn(&p, argv), 0);
	free(argv[0]);
	/* Its summary comes once the whole run is over: give it minutes,
	 * not the usual per-step wait.  EOF ends the output. */
	while (test_read_line(p.out, line, sizeof(line), 300000) >= 0)
		if (strstr(line, " received, ") != NULL)
			snprintf(summary, sizeof(summary), "%s", line);
	status = test_child_reap(p.pid, TEST_WAIT_MS);
	p.pid = 0;
	/* What it said on stderr (it has exited: EOF comes at once). */
	while (test_read_line(p.err, line, sizeof(line), TEST_WAIT_MS) >= 0)
		print_message("prodcons: stderr: %s\n", line);
	proc_close(&p);
	print_message("%s\n", summary);
	assert_non_null(strstr(summary, "prodcons: 300000 received, 0 lost, "
	    "0 duplicated, 0 out of order, 0 bogus; 0 failed processes"));
	assert_exit_status(status, 0);
	broker_stop(&f->b);
}

struct pc_msg {
	uint32_t producer, seq;
};

struct pc_worker {
	pthread_t t;
	struct ipc_conn *c;
	uint32_t id;
	int failed;
	char why[128];
	/* consumer: how often it saw each (producer, seq), and how many
	 * times a producer's sequence went backwards */
	uint8_t seen[PC_PRODUCERS][PC_MESSAGES];
	uint32_t next[PC_PRODUCERS];
	uint64_t count, disorder;
};

static void *
pc_producer(void *arg)
{
	struct pc_worker *w = arg;
	struct pc_msg m = { .producer = w->id };

	for (m.seq = 0; m.seq < PC_MESSAGES; m.seq++)
		if (ipc_send_timed(w->c, "pc", &m, sizeof(m), TEST_WAIT_MS,
		    NULL) < 0) {
			w->failed = 1;
			snprintf(w->why, sizeof(w->why), "send %u: %s", m.seq,
			    strerror(errno));
			break;
		}
	return NULL;
}

static void *
pc_consumer(void *arg)
{
	struct pc_worker *w = arg;
	struct pc_msg m;

	for (;;) {
		ssize_t r = ipc_recv_timed(w->c, "pc", &m, sizeof(m),
		    TEST_WAIT_MS, NULL);

		if (r != (ssize_t)sizeof(m)) {
			w->failed = 1;
			snprintf(w->why, sizeof(w->why), "recv: %s",
			    r < 0 ? strerror(errno) : "wrong size");
			break;
		}
		if (m.producer == PC_STOP)
			break;
		if (m.producer >= PC_PRODUCERS || m.seq >= PC_MESSAGES) {
			w->failed = 1;
			snprintf(w->why, sizeof(w->why), "bogus %u/%u",
			    m.producer, m.seq);
			break;
		}
		if (m.seq < w->next[m.producer])
			w->disorder++;
		w->next[m.producer] = m.seq + 1;
		if (w->seen[m.producer][m.seq] < UINT8_MAX)
			w->seen[m.producer][m.seq]++;
		w->count++;
	}
	return NULL;
}

/* The same check in-process: 2 producer and 2 consumer threads, 5000
 * messages each producer, capacity 64. */
static void
test_threads_2x2x5000_exactly_once_in_order(void **state)
{
	struct fix *f = *state;
	struct pc_worker *prod = calloc(PC_PRODUCERS, sizeof(*prod));
	struct pc_worker *cons = calloc(PC_CONSUMERS, sizeof(*cons));
	struct pc_msg stop = { PC_STOP, 0 };
	struct ipc_conn *c;
	uint64_t total = 0, disorder = 0;
	char why[256] = "";

	assert_non_null(prod);
	assert_non_null(cons);
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "pc", 64, -1);
	for (int i = 0; i < PC_CONSUMERS; i++) {
		cons[i].c = fix_open(f);
		assert_int_equal(pthread_create(&cons[i].t, NULL, pc_consumer,
		    &cons[i]), 0);
	}
	for (int i = 0; i < PC_PRODUCERS; i++) {
		prod[i].c = fix_open(f);
		prod[i].id = (uint32_t)i;
		assert_int_equal(pthread_create(&prod[i].t, NULL, pc_producer,
		    &prod[i]), 0);
	}
	/* Every call in the workers is timed: the joins are bounded.  No
	 * assertion until all are joined. */
	for (int i = 0; i < PC_PRODUCERS; i++)
		pthread_join(prod[i].t, NULL);
	for (int i = 0; i < PC_CONSUMERS; i++)
		if (ipc_send_timed(c, "pc", &stop, sizeof(stop), TEST_WAIT_MS,
		    NULL) < 0 && why[0] == '\0')
			snprintf(why, sizeof(why), "send stop: %s",
			    strerror(errno));
	for (int i = 0; i < PC_CONSUMERS; i++)
		pthread_join(cons[i].t, NULL);
	for (int i = 0; i < PC_PRODUCERS; i++)
		if (prod[i].failed && why[0] == '\0')
			snprintf(why, sizeof(why), "producer %d: %s", i,
			    prod[i].why);
	for (int i = 0; i < PC_CONSUMERS; i++) {
		if (cons[i].failed && why[0] == '\0')
			snprintf(why, sizeof(why), "consumer %d: %s", i,
			    cons[i].why);
		disorder += cons[i].disorder;
		total += cons[i].count;
	}
	for (int p = 0; p < PC_PRODUCERS; p++)
		for (int q = 0; q < PC_MESSAGES; q++) {
			int n = 0;

			for (int i = 0; i < PC_CONSUMERS; i++)
				n += cons[i].seen[p][q];
			if (n != 1 && why[0] == '\0')
				snprintf(why, sizeof(why), "producer %d "
				    "message %d received %d times", p, q, n);
		}
	free(prod);
	free(cons);
	if (why[0] != '\0')
		fail_msg("%s", why);
	assert_int_equal(disorder, 0);
	assert_int_equal(total, PC_PRODUCERS * PC_MESSAGES);
	broker_stop(&f->b);
}

/* === 2. receiving ======================================================= */

/* A receiver parked first is woken by a send from another process, and
 * learns who sent the message. */
static void
test_blocking_recv_wakes_on_send_with_sender_info(void **state)
{
	struct fix *f = *state;
	const char text[] = "wake up";
	struct ipc_conn *c;
	struct op *op;
	uint64_t t0, t1, id = 0;
	int parked, idpipe[2], status;
	pid_t pid;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "inbox", -1, -1);
	t0 = wall_ns();
	op = op_start(f, OP_RECV, "inbox", NULL, 256, IPC_FOREVER);
	parked = wait_parked(c, "inbox", 1, 0, NULL);
	assert_false(atomic_load(&op->finished));
	/* Send even if the receiver was not seen parked, so that it
	 * returns and can be joined. */
	assert_int_equal(pipe(idpipe), 0);
	pid = child_send(f, "inbox", text, sizeof(text), TEST_WAIT_MS,
	    idpipe[1]);
	close(idpipe[1]);
	status = kid_wait(f, pid);
	assert_int_equal(op_join(op), 0);
	t1 = wall_ns();
	assert_int_equal(parked, 0);
	assert_exit_status(status, 0);
	assert_int_equal(raw_read_full(idpipe[0], (uint8_t *)&id, sizeof(id)),
	    (int)sizeof(id));
	close(idpipe[0]);

	assert_int_equal(op->r, (ssize_t)sizeof(text));
	assert_memory_equal(op->buf, text, sizeof(text));
	assert_int_equal(op->info.pid, pid);
	assert_int_equal(op->info.uid, getuid());
	assert_int_equal(op->info.gid, getgid());
	{
		char want[32];

		snprintf(want, sizeof(want), "pid:%ld", (long)pid);
		assert_string_equal(op->info.sender, want);
	}
	assert_string_equal(op->info.source, "inbox");
	assert_int_equal(op->info.len, sizeof(text));
	assert_true(op->info.id != 0);
	assert_int_equal(op->info.id, id);
	/* Stamped by the broker between our two readings of the same
	 * clock; a little slack for clock adjustments. */
	assert_true(op->info.enqueue_ns != 0);
	assert_true(op->info.enqueue_ns + 5000000000ull >= t0);
	assert_true(op->info.enqueue_ns <= t1 + 5000000000ull);
	broker_stop(&f->b);
}

static void
test_nonblocking_recv_on_empty_is_eagain(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	char buf[64];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "empty", -1, -1);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "empty", buf, sizeof(buf), 0,
	    NULL), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(ipc_mbox_stat(c, "empty", &info), 0);
	assert_int_equal(info.waiting_receivers, 0);
	broker_stop(&f->b);
}

static void
test_timed_recv_on_empty_times_out(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	char buf[64];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "empty", -1, -1);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "empty", buf, sizeof(buf), 50,
	    NULL), -1);
	assert_int_equal(errno, ETIMEDOUT);
	/* The timed-out request is gone from the broker, and the
	 * connection still works. */
	assert_int_equal(ipc_mbox_stat(c, "empty", &info), 0);
	assert_int_equal(info.waiting_receivers, 0);
	assert_int_equal(ipc_send(c, "empty", "x", 1), 0);
	assert_int_equal(ipc_recv_timed(c, "empty", buf, sizeof(buf), 0,
	    NULL), 1);
	broker_stop(&f->b);
}

/* === 3. full mailboxes =================================================== */

static void
fill(struct ipc_conn *c, const char *box, int from, int to)
{
	for (int i = from; i < to; i++) {
		char m[16];

		snprintf(m, sizeof(m), "m%d", i);
		assert_int_equal(ipc_send_timed(c, box, m, strlen(m) + 1, 0,
		    NULL), 0);
	}
}

static void
drain_expect(struct ipc_conn *c, const char *box, int from, int to)
{
	for (int i = from; i < to; i++) {
		char m[16], buf[64];

		snprintf(m, sizeof(m), "m%d", i);
		assert_int_equal(ipc_recv_timed(c, box, buf, sizeof(buf),
		    TEST_WAIT_MS, NULL), (ssize_t)strlen(m) + 1);
		assert_string_equal(buf, m);
	}
}

/* A send to a full mailbox parks until a receiver takes one; then the
 * queue reads in send order, the resumed message last. */
static void
test_blocking_send_on_full_resumes_after_recv_in_fifo_order(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	struct op *op;
	char buf[64];
	int parked, still;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "full", 4, -1);
	fill(c, "full", 0, 4);
	op = op_start(f, OP_SEND, "full", "m4", 3, IPC_FOREVER);
	parked = wait_parked(c, "full", 0, 1, &info);
	still = !atomic_load(&op->finished);
	/* Taking one makes room: the parked sender gets in. */
	assert_int_equal(ipc_recv_timed(c, "full", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 3);
	assert_int_equal(op_join(op), 0);
	assert_int_equal(parked, 0);
	assert_true(still);
	assert_int_equal(info.depth, 4);
	assert_string_equal(buf, "m0");
	assert_int_equal(op->r, 0);
	drain_expect(c, "full", 1, 5);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "full", buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	broker_stop(&f->b);
}

static void
test_nonblocking_send_on_full_is_eagain(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "full", 2, -1);
	fill(c, "full", 0, 2);
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "full", "no", 3, 0, NULL), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(ipc_mbox_stat(c, "full", &info), 0);
	assert_int_equal(info.depth, 2);
	assert_int_equal(info.waiting_senders, 0);
	drain_expect(c, "full", 0, 2);
	broker_stop(&f->b);
}

static void
test_timed_send_on_full_times_out_and_sends_nothing(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	char buf[64];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "full", 2, -1);
	fill(c, "full", 0, 2);
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "full", "no", 3, 50, NULL), -1);
	assert_int_equal(errno, ETIMEDOUT);
	assert_int_equal(ipc_mbox_stat(c, "full", &info), 0);
	assert_int_equal(info.depth, 2);
	assert_int_equal(info.waiting_senders, 0);
	drain_expect(c, "full", 0, 2);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "full", buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	broker_stop(&f->b);
}

/* If the sender left waiting was not admitted (info says so), take the
 * head message: that makes room for it, so its thread can be joined. */
static void
unblock_sender(struct ipc_conn *c, const struct ipc_mbox_info *info,
    const char *box)
{
	char buf[128];

	if (info->waiting_senders != 0)
		ipc_recv_timed(c, box, buf, sizeof(buf), 0, NULL);
}

/* Senders are admitted in arrival order, "room or not" only while one is
 * ahead: when the sender ahead gives up (its time runs out), one behind it
 * that fits must get in at once, without waiting for a receive. */
static void
test_sender_behind_timed_out_sender_is_admitted(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info after = { 0 };
	char big[50], small[10], sixty[60], buf[64];
	struct op *a, *b;
	struct ipc_conn *c;
	int parked_a, parked_b, stat_ok;

	memset(big, 'B', sizeof(big));
	memset(small, 's', sizeof(small));
	memset(sixty, '6', sizeof(sixty));
	broker_start(&f->b, NULL);
	c = fix_open(f);
	/* 100 bytes: 60 queued leave room for the small message, not for
	 * the big one. */
	box_create(c, "bytes", 10, 100);
	assert_int_equal(ipc_send_timed(c, "bytes", sixty, sizeof(sixty), 0,
	    NULL), 0);
	/* a gives up after a second: time enough for b to queue up
	 * behind it, even on a loaded machine. */
	a = op_start(f, OP_SEND, "bytes", big, sizeof(big), 1000);
	parked_a = wait_parked(c, "bytes", 0, 1, NULL);
	b = op_start(f, OP_SEND, "bytes", small, sizeof(small),
	    TEST_WAIT_MS);
	parked_b = wait_parked(c, "bytes", 0, 2, NULL);
	assert_int_equal(op_join(a), 0);
	/* a's ETIMEDOUT came from the broker's timer; whatever the broker
	 * does about b, it did in the same turn. */
	stat_ok = ipc_mbox_stat(c, "bytes", &after);
	unblock_sender(c, &after, "bytes");
	assert_int_equal(op_join(b), 0);
	assert_int_equal(parked_a, 0);
	assert_int_equal(parked_b, 0);
	assert_int_equal(a->r, -1);
	assert_int_equal(a->err, ETIMEDOUT);
	assert_int_equal(stat_ok, 0);
	print_message("after the first sender timed out: depth %u, "
	    "waiting senders %u\n", after.depth, after.waiting_senders);
	assert_int_equal(after.waiting_senders, 0);
	assert_int_equal(after.depth, 2);
	assert_int_equal(b->r, 0);
	assert_int_equal(ipc_recv_timed(c, "bytes", buf, sizeof(buf), 0,
	    NULL), (ssize_t)sizeof(sixty));
	broker_stop(&f->b);
}

/* The same when the sender ahead goes away: its process dies, its
 * connection closes, and the sender behind it fits. */
static void
test_sender_behind_vanished_sender_is_admitted(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info after = { 0 };
	char big[50], small[10], sixty[60];
	struct ipc_conn *c;
	struct op *b;
	int parked_a, parked_b, gone, status;
	pid_t pid;

	memset(big, 'B', sizeof(big));
	memset(small, 's', sizeof(small));
	memset(sixty, '6', sizeof(sixty));
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "bytes", 10, 100);
	assert_int_equal(ipc_send_timed(c, "bytes", sixty, sizeof(sixty), 0,
	    NULL), 0);
	pid = child_send(f, "bytes", big, sizeof(big), IPC_FOREVER, -1);
	parked_a = wait_parked(c, "bytes", 0, 1, NULL);
	b = op_start(f, OP_SEND, "bytes", small, sizeof(small),
	    TEST_WAIT_MS);
	parked_b = wait_parked(c, "bytes", 0, 2, NULL);
	kill(pid, SIGKILL);
	status = kid_wait(f, pid);
	/* Until the broker has seen the close, both are parked. */
	{
		long long deadline = test_now_ms() + TEST_WAIT_MS;

		gone = -1;
		while (test_now_ms() < deadline &&
		    ipc_mbox_stat(c, "bytes", &after) == 0)
			if (after.waiting_senders != 2) {
				gone = 0;
				break;
			}
	}
	unblock_sender(c, &after, "bytes");
	assert_int_equal(op_join(b), 0);
	assert_int_equal(parked_a, 0);
	assert_int_equal(parked_b, 0);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(gone, 0);
	print_message("after the first sender vanished: depth %u, "
	    "waiting senders %u\n", after.depth, after.waiting_senders);
	assert_int_equal(after.waiting_senders, 0);
	assert_int_equal(after.depth, 2);
	assert_int_equal(b->r, 0);
	broker_stop(&f->b);
}

/* A message larger than the mailbox's max_bytes could never fit: MSGSIZE
 * at once (protocol.md, SEND), also when another sender is waiting ahead
 * of it, rather than AGAIN, a timeout, or a wait at the head that holds up
 * every sender behind it. */
static void
test_send_over_max_bytes_is_emsgsize_behind_waiting_sender(void **state)
{
	struct fix *f = *state;
	char big[50], huge[200], sixty[60];
	struct ipc_mbox_info info = { 0 };
	struct ipc_conn *c;
	struct op *a;
	int parked, r0, e0, r1, e1;

	memset(big, 'B', sizeof(big));
	memset(huge, 'H', sizeof(huge));
	memset(sixty, '6', sizeof(sixty));
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "bytes", 10, 100);
	/* With nobody waiting, the broker says so. */
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "bytes", huge, sizeof(huge), 0,
	    NULL), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(ipc_send_timed(c, "bytes", sixty, sizeof(sixty), 0,
	    NULL), 0);
	a = op_start(f, OP_SEND, "bytes", big, sizeof(big), TEST_WAIT_MS);
	parked = wait_parked(c, "bytes", 0, 1, NULL);
	errno = 0;
	r0 = ipc_send_timed(c, "bytes", huge, sizeof(huge), 0, NULL);
	e0 = errno;
	errno = 0;
	r1 = ipc_send_timed(c, "bytes", huge, sizeof(huge), 100, NULL);
	e1 = errno;
	ipc_mbox_stat(c, "bytes", &info);
	/* Make room for the sender ahead, and join it. */
	ipc_recv_timed(c, "bytes", sixty, sizeof(sixty), 0, NULL);
	assert_int_equal(op_join(a), 0);
	assert_int_equal(parked, 0);
	if (a->r != 0)
		fail_msg("the sender ahead: %s", strerror(a->err));
	print_message("behind a waiting sender, %zu bytes into a mailbox of "
	    "100: '%s' (non-blocking), '%s' (100 ms)\n", sizeof(huge),
	    strerror(e0), strerror(e1));
	assert_int_equal(r0, -1);
	assert_int_equal(e0, EMSGSIZE);
	assert_int_equal(r1, -1);
	assert_int_equal(e1, EMSGSIZE);
	assert_int_equal(info.waiting_senders, 1);
}

/* === 4. rendezvous ======================================================= */

static void
test_rendezvous_nonblocking_send_without_receiver_is_eagain(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "rdv", 0, -1);
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "rdv", "hi", 3, 0, NULL), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(ipc_mbox_stat(c, "rdv", &info), 0);
	assert_int_equal(info.capacity, 0);
	assert_int_equal(info.depth, 0);
	assert_int_equal(info.waiting_senders, 0);
	broker_stop(&f->b);
}

static void
test_rendezvous_send_completes_only_when_received(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info = { 0 }, again = { 0 };
	struct ipc_conn *c;
	struct op *op;
	char buf[64];
	int parked, still, stat_ok;
	ssize_t r;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "rdv", 0, -1);
	op = op_start(f, OP_SEND, "rdv", "handed over", 12, IPC_FOREVER);
	parked = wait_parked(c, "rdv", 0, 1, &info);
	/* One more look: still parked, still nothing queued. */
	stat_ok = ipc_mbox_stat(c, "rdv", &again);
	still = !atomic_load(&op->finished);
	r = ipc_recv_timed(c, "rdv", buf, sizeof(buf), TEST_WAIT_MS, NULL);
	assert_int_equal(op_join(op), 0);
	assert_int_equal(parked, 0);
	assert_int_equal(stat_ok, 0);
	assert_true(still);
	assert_int_equal(info.depth, 0);
	assert_int_equal(again.depth, 0);
	assert_int_equal(again.waiting_senders, 1);
	assert_int_equal(r, 12);
	assert_string_equal(buf, "handed over");
	assert_int_equal(op->r, 0);
	assert_int_equal(ipc_mbox_stat(c, "rdv", &info), 0);
	assert_int_equal(info.depth, 0);
	assert_int_equal(info.waiting_senders, 0);
	broker_stop(&f->b);
}

/* === 5. competing receivers ============================================= */

static void
test_competing_receivers_are_served_first_come_first_served(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;
	struct op *a, *b;
	int parked_a, parked_b;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "q", -1, -1);
	a = op_start(f, OP_RECV, "q", NULL, 64, IPC_FOREVER);
	parked_a = wait_parked(c, "q", 1, 0, NULL);
	b = op_start(f, OP_RECV, "q", NULL, 64, IPC_FOREVER);
	parked_b = wait_parked(c, "q", 2, 0, NULL);
	assert_int_equal(ipc_send(c, "q", "first", 6), 0);
	assert_int_equal(ipc_send(c, "q", "second", 7), 0);
	assert_int_equal(op_join(a), 0);
	assert_int_equal(op_join(b), 0);
	assert_int_equal(parked_a, 0);
	assert_int_equal(parked_b, 0);
	assert_int_equal(a->r, 6);
	assert_string_equal((char *)a->buf, "first");
	assert_int_equal(b->r, 7);
	assert_string_equal((char *)b->buf, "second");
	broker_stop(&f->b);
}

/* === 6. EMSGSIZE on receive ============================================= */

static void
pattern(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 31 + seed + (i >> 8));
}

static void
test_recv_into_small_buffer_is_emsgsize_and_message_stays(void **state)
{
	struct fix *f = *state;
	struct ipc_msg_info info;
	struct ipc_mbox_info mi;
	struct ipc_conn *c;
	uint8_t msg[3000], buf[3000];

	pattern(msg, sizeof(msg), 7);
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "big", -1, -1);
	assert_int_equal(ipc_send(c, "big", msg, sizeof(msg)), 0);
	memset(&info, 0, sizeof(info));
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "big", buf, 100, 0, &info), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(info.len, sizeof(msg));
	/* One byte short is still too small. */
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "big", buf, sizeof(msg) - 1, 0,
	    &info), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(info.len, sizeof(msg));
	assert_int_equal(ipc_mbox_stat(c, "big", &mi), 0);
	assert_int_equal(mi.depth, 1);
	assert_int_equal(mi.bytes, sizeof(msg));
	memset(buf, 0, sizeof(buf));
	assert_int_equal(ipc_recv_timed(c, "big", buf, sizeof(buf), 0, &info),
	    (ssize_t)sizeof(msg));
	assert_int_equal(info.len, sizeof(msg));
	assert_memory_equal(buf, msg, sizeof(msg));
	assert_int_equal(ipc_mbox_stat(c, "big", &mi), 0);
	assert_int_equal(mi.depth, 0);
	broker_stop(&f->b);
}

static void
test_recv_alloc_takes_message_refused_for_small_buffer(void **state)
{
	struct fix *f = *state;
	struct ipc_msg_info info;
	struct ipc_conn *c;
	uint8_t msg[3000], buf[16];
	void *p = NULL;

	pattern(msg, sizeof(msg), 3);
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "big", -1, -1);
	assert_int_equal(ipc_send(c, "big", msg, sizeof(msg)), 0);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "big", buf, sizeof(buf), 0, &info),
	    -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(ipc_recv_alloc(c, "big", &p, 0, &info),
	    (ssize_t)sizeof(msg));
	assert_non_null(p);
	assert_int_equal(info.len, sizeof(msg));
	assert_memory_equal(p, msg, sizeof(msg));
	free(p);
	broker_stop(&f->b);
}

/* === 7. the broker's message size limit ================================= */

static void
test_max_msg_size_exact_passes_one_over_is_emsgsize(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--max-msg-size", "1000", NULL };
	uint8_t msg[1001], buf[1001];
	struct ipc_conn *c;

	pattern(msg, sizeof(msg), 11);
	broker_start(&f->b, opts);
	c = fix_open(f);
	box_create(c, "lim", -1, -1);
	assert_int_equal(ipc_send(c, "lim", msg, 1000), 0);
	assert_int_equal(ipc_recv_timed(c, "lim", buf, sizeof(buf), 0, NULL),
	    1000);
	assert_memory_equal(buf, msg, 1000);
	errno = 0;
	assert_int_equal(ipc_send(c, "lim", msg, 1001), -1);
	assert_int_equal(errno, EMSGSIZE);
	/* The connection is fine, and nothing of the refused message is
	 * queued. */
	assert_int_equal(ipc_send(c, "lim", "after", 6), 0);
	assert_int_equal(ipc_recv_timed(c, "lim", buf, sizeof(buf), 0, NULL),
	    6);
	assert_string_equal((char *)buf, "after");
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "lim", buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	broker_stop(&f->b);
}

/* The library refuses 1001 bytes itself; a raw SEND frame of 1001 bytes
 * (within the frame limit) must get ERROR MSGSIZE from the broker, with the
 * connection left open. */
static void
test_raw_send_over_max_msg_size_is_emsgsize_conn_stays_open(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--max-msg-size", "1000", NULL };
	struct wire_frame fr;
	uint8_t msg[1001], rbuf[4096], buf[64];
	struct ipc_conn *c;
	int fd;

	pattern(msg, sizeof(msg), 5);
	broker_start(&f->b, opts);
	c = fix_open(f);
	box_create(c, "lim", -1, -1);
	fd = raw_connect(&f->b);
	raw_hello(fd);
	raw_send_frame(&fr, 7, "lim", msg, sizeof(msg), 0);
	raw_send(fd, &fr);
	raw_assert_error(fd, WIRE_E_MSGSIZE, 7);
	raw_send_frame(&fr, 8, "lim", "ok", 3, 0);
	raw_send(fd, &fr);
	assert_int_equal(raw_read(fd, rbuf, sizeof(rbuf), &fr), 1);
	assert_int_equal(fr.type, WIRE_SENT);
	assert_int_equal(fr.id, 8);
	assert_int_equal(ipc_recv_timed(c, "lim", buf, sizeof(buf), 0, NULL),
	    3);
	assert_string_equal((char *)buf, "ok");
	closeSocket(fd);
	broker_stop(&f->b);
}

/* === 8. the broker dies ================================================= */

/* SIGTERM: the broker tells its clients (BYE) and exits 0; a receive
 * blocked in another thread fails with ECONNRESET. */
static void
test_broker_sigterm_fails_blocked_recv_with_econnreset(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;
	struct op *op;
	int parked;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "closing", -1, -1);
	op = op_start(f, OP_RECV, "closing", NULL, 64, IPC_FOREVER);
	parked = wait_parked(c, "closing", 1, 0, NULL);
	broker_stop(&f->b);
	assert_int_equal(op_join(op), 0);
	assert_int_equal(parked, 0);
	assert_int_equal(op->r, -1);
	assert_int_equal(op->err, ECONNRESET);
}

static void
test_broker_sigkill_fails_blocked_recv_with_econnreset(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;
	struct op *op;
	int parked, err;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "doomed", -1, -1);
	op = op_start(f, OP_RECV, "doomed", NULL, 64, IPC_FOREVER);
	parked = wait_parked(c, "doomed", 1, 0, NULL);
	assert_int_equal(kill(f->b.proc.pid, SIGKILL), 0);
	/* The blocked call must come back: op_join bounds the wait. */
	assert_int_equal(op_join(op), 0);
	assert_int_equal(parked, 0);
	assert_int_equal(op->r, -1);
	if (op->err != ECONNRESET && op->err != EPIPE)
		fail_msg("blocked recv failed with %s", strerror(op->err));
	/* So does the next call on any other connection. */
	errno = 0;
	assert_int_equal(ipc_mbox_stat(c, "doomed", NULL), -1);
	err = errno;
	assert_true(err == ECONNRESET || err == EPIPE);
	broker_reap_killed(&f->b);
}

/* === 9. bad input from raw connections ================================= */

/* Start the broker and the well-behaved client, and let it run. */
static void
bad_begin(struct fix *f, const char *const *opts)
{
	broker_start(&f->b, opts);
	good_start(f);
	good_progress(f->good, GOOD_ROUNDS);
}

/* The client goes on exactly as before; the broker is alive and answers
 * a fresh connection; SIGTERM stops it cleanly. */
static void
bad_end(struct fix *f)
{
	good_progress(f->good, GOOD_ROUNDS);
	good_finish(f);
	broker_assert_alive(f);
	broker_stop(&f->b);
}

static void
test_garbage_bytes_get_error_and_close(void **state)
{
	struct fix *f = *state;
	uint8_t junk[256], buf[4096];
	struct wire_frame fr;
	uint32_t x = 12345;
	int fd;

	bad_begin(f, NULL);
	for (size_t i = 0; i < sizeof(junk); i++) {
		x = x * 1103515245u + 12345u;
		junk[i] = (uint8_t)(x >> 16);
	}
	fd = raw_connect(&f->b);
	raw_write(fd, junk, sizeof(junk));
	/* Whatever its header says, junk is refused with one ERROR (PROTO
	 * or MSGSIZE), and the connection closed. */
	assert_int_equal(raw_read(fd, buf, sizeof(buf), &fr), 1);
	assert_int_equal(fr.type, WIRE_ERROR);
	assert_true(fr.b.error.code == WIRE_E_PROTO ||
	    fr.b.error.code == WIRE_E_MSGSIZE);
	raw_assert_closed(fd);
	closeSocket(fd);
	bad_end(f);
}

/* Half a SEND, then the client goes: nothing of it is queued. */
static void
test_truncated_frame_then_close_is_harmless(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct wire_frame fr;
	uint8_t buf[256];
	struct ipc_conn *c;
	size_t len;
	int fd;

	bad_begin(f, NULL);
	c = fix_open(f);
	box_create(c, "trunc", -1, -1);
	fd = raw_connect(&f->b);
	raw_hello(fd);
	raw_send_frame(&fr, 2, "trunc", "never whole", 12, 0);
	len = raw_encode(&fr, buf, sizeof(buf));
	raw_write(fd, buf, len / 2);
	closeSocket(fd);
	/* A round trip after the close cannot tell whether the broker has
	 * read it yet; the queue must be empty either way. */
	assert_int_equal(ipc_mbox_stat(c, "trunc", &info), 0);
	assert_int_equal(info.depth, 0);
	assert_int_equal(info.msgs_in, 0);
	bad_end(f);
}

/* A header that claims far more than the limit: ERROR MSGSIZE with id 0,
 * then close, without waiting for the body. */
static void
test_frame_length_over_limit_gets_error_and_close(void **state)
{
	struct fix *f = *state;
	uint8_t hdr[WIRE_HDR_LEN];
	int fd;

	bad_begin(f, NULL);
	fd = raw_connect(&f->b);
	raw_hello(fd);
	wire_put32(hdr, 0xfffffff0u);
	wire_put16(hdr + 4, WIRE_SEND);
	wire_put16(hdr + 6, 0);
	wire_put64(hdr + 8, 3);
	raw_write(fd, hdr, sizeof(hdr));
	raw_assert_error(fd, WIRE_E_MSGSIZE, 0);
	raw_assert_closed(fd);
	closeSocket(fd);
	bad_end(f);
}

static void
test_unknown_frame_type_after_hello_gets_error_and_close(void **state)
{
	struct fix *f = *state;
	uint8_t hdr[WIRE_HDR_LEN];
	int fd;

	bad_begin(f, NULL);
	fd = raw_connect(&f->b);
	raw_hello(fd);
	wire_put32(hdr, WIRE_HDR_LEN);
	wire_put16(hdr + 4, 0x7e);
	wire_put16(hdr + 6, 0);
	wire_put64(hdr + 8, 42);
	raw_write(fd, hdr, sizeof(hdr));
	raw_assert_error(fd, WIRE_E_PROTO, 42);
	raw_assert_closed(fd);
	closeSocket(fd);
	bad_end(f);
}

static void
bad_hello(struct fix *f, uint32_t magic, uint16_t vmin, uint16_t vmax)
{
	struct wire_frame fr = { .type = WIRE_HELLO, .id = 9 };
	int fd;

	bad_begin(f, NULL);
	fd = raw_connect(&f->b);
	fr.b.hello.magic = magic;
	fr.b.hello.version_min = vmin;
	fr.b.hello.version_max = vmax;
	raw_send(fd, &fr);
	raw_assert_error(fd, WIRE_E_PROTO, 9);
	raw_assert_closed(fd);
	closeSocket(fd);
	bad_end(f);
}

static void
test_hello_with_wrong_version_gets_error_and_close(void **state)
{
	bad_hello(*state, WIRE_MAGIC, WIRE_VERSION + 1, WIRE_VERSION + 5);
}

static void
test_hello_with_wrong_magic_gets_error_and_close(void **state)
{
	bad_hello(*state, 0x31435048u, WIRE_VERSION, WIRE_VERSION);
}

/* Half a HELLO and then nothing: closed once the handshake time (200 ms
 * here) is up, after an ERROR TIMEDOUT if it can be sent. */
static void
test_unfinished_handshake_is_closed_after_timeout(void **state)
{
	struct fix *f = *state;
	const char *const opts[] = { "--handshake-timeout", "200", NULL };
	struct wire_frame fr = { .type = WIRE_HELLO, .id = 1 };
	uint8_t buf[64];
	size_t len;
	int fd, silent;

	bad_begin(f, opts);
	fr.b.hello.magic = WIRE_MAGIC;
	fr.b.hello.version_min = fr.b.hello.version_max = WIRE_VERSION;
	len = raw_encode(&fr, buf, sizeof(buf));
	fd = raw_connect(&f->b);
	silent = raw_connect(&f->b);
	raw_write(fd, buf, len - 3);
	raw_assert_error(fd, WIRE_E_TIMEDOUT, 0);
	raw_assert_closed(fd);
	/* One that sends nothing at all goes the same way. */
	raw_assert_error(silent, WIRE_E_TIMEDOUT, 0);
	raw_assert_closed(silent);
	closeSocket(fd);
	closeSocket(silent);
	bad_end(f);
}

static int
wait_writable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	return r;
}

static long
proc_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(fp);
	return kb;
}

/* A client that pipelines RECV-then-SEND pairs and never reads a reply:
 * the broker stops reading it once its replies pile up, stays bounded,
 * and serves everyone else meanwhile. */
static void
test_client_that_never_reads_replies_does_not_stall_broker(void **state)
{
	struct fix *f = *state;
	static uint8_t chunk[64 * 2 * 1200];
	uint8_t payload[1024];
	struct wire_frame fr;
	struct ipc_conn *c;
	size_t clen = 0, sent = 0;
	long rss;
	int fd, stuck = 0;

	bad_begin(f, NULL);
	c = fix_open(f);
	box_create(c, "flood", -1, -1);
	pattern(payload, sizeof(payload), 1);
	for (int i = 0; i < 64; i++) {
		raw_recv_frame(&fr, 100 + 2 * (uint64_t)i, "flood",
		    WIRE_FOREVER, 4096);
		clen += raw_encode(&fr, chunk + clen, sizeof(chunk) - clen);
		raw_send_frame(&fr, 101 + 2 * (uint64_t)i, "flood", payload,
		    sizeof(payload), 0);
		clen += raw_encode(&fr, chunk + clen, sizeof(chunk) - clen);
	}
	fd = raw_connect(&f->b);
	raw_hello(fd);
	assert_int_equal(nonblockSocket(fd, 1), 0);
	/* Push until the broker stops taking bytes (for a whole second:
	 * it has stopped reading us) or the budget is spent. */
	while (sent < FLOOD_MAX) {
		size_t off = sent % clen;
		int n = writeSomeSocket(fd, chunk + off, (int)(clen - off));

		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		assert_true(n < 0 && (errno == EAGAIN || errno ==
		    EWOULDBLOCK));
		if (wait_writable(fd, 1000) == 0) {
			stuck = 1;
			break;
		}
	}
	rss = proc_rss_kb(f->b.proc.pid);
	print_message("flood: %zu bytes written before the broker stopped "
	    "reading (%s); broker RSS %ld kB\n", sent,
	    stuck ? "throttled" : "budget spent", rss);
	/* While it is stuck, the others are served. */
	good_progress(f->good, GOOD_ROUNDS);
	broker_assert_alive(f);
	assert_true(stuck);
	assert_true(rss > 0 && rss < 64 * 1024);
	closeSocket(fd);
	/* Its parked requests go with it. */
	assert_int_equal(wait_parked(c, "flood", 0, 0, NULL), 0);
	bad_end(f);
}

/* A connection throttled at its limit of parked requests holds a timed
 * RECV unread; once one parked request finishes, the broker takes the held
 * one, and its time limit (100 ms) must still be honoured. */
static void
test_timed_recv_held_back_by_throttle_still_times_out(void **state)
{
	struct fix *f = *state;
	static uint8_t frames[32 * 64];
	uint8_t buf[4096];
	struct wire_frame fr;
	struct ipc_conn *c;
	size_t len = 0;
	long long t0;
	int fd, parked, r;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "p", -1, -1);
	box_create(c, "q", -1, -1);
	/* 16 RECVs parked forever (the broker's per-connection limit),
	 * then one RECV with a 100 ms limit, all in one write. */
	for (int i = 0; i < 16; i++) {
		raw_recv_frame(&fr, 10 + (uint64_t)i, "p", WIRE_FOREVER, 64);
		len += raw_encode(&fr, frames + len, sizeof(frames) - len);
	}
	raw_recv_frame(&fr, 99, "q", 100, 64);
	len += raw_encode(&fr, frames + len, sizeof(frames) - len);
	fd = raw_connect(&f->b);
	raw_hello(fd);
	raw_write(fd, frames, len);
	parked = wait_parked(c, "p", 16, 0, NULL);
	assert_int_equal(parked, 0);
	/* One parked RECV finishes; the held one is taken. */
	assert_int_equal(ipc_send(c, "p", "one", 4), 0);
	assert_int_equal(raw_read(fd, buf, sizeof(buf), &fr), 1);
	assert_int_equal(fr.type, WIRE_DELIVER);
	assert_int_equal(fr.id, 10);
	/* Now leave the broker alone: its own timer must fire. */
	t0 = test_now_ms();
	r = raw_read(fd, buf, sizeof(buf), &fr);
	print_message("held timed RECV answered after %lld ms\n",
	    test_now_ms() - t0);
	assert_int_equal(r, 1);
	assert_int_equal(fr.type, WIRE_ERROR);
	assert_int_equal(fr.id, 99);
	assert_int_equal(fr.b.error.code, WIRE_E_TIMEDOUT);
	closeSocket(fd);
	broker_stop(&f->b);
}

/* === 10. mailboxes ====================================================== */

static void
test_mbox_create_gives_distinct_36_char_uuids(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info a, b;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_create(c, "one", NULL, &a), 0);
	assert_int_equal(ipc_mbox_create(c, "two", NULL, &b), 0);
	assert_int_equal(strlen(a.uuid), 36);
	assert_int_equal(strlen(b.uuid), 36);
	assert_string_not_equal(a.uuid, b.uuid);
	assert_string_equal(a.name, "one");
	assert_string_equal(b.name, "two");
	assert_int_equal(a.uid, getuid());
	assert_int_equal(a.capacity, 1024);	/* ipcd's default */
	assert_int_equal(a.depth, 0);
	assert_true(a.created_ns != 0);
	broker_stop(&f->b);
}

static void
test_mbox_create_existing_opens_it_unless_exclusive(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info a, b;
	struct ipc_mbox_attr attr;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	ipc_mbox_attr_init(&attr);
	attr.capacity = 7;
	assert_int_equal(ipc_mbox_create(c, "box", &attr, &a), 0);
	/* Opened, not created: same uuid, the first attributes. */
	attr.capacity = 99;
	assert_int_equal(ipc_mbox_create(c, "box", &attr, &b), 0);
	assert_string_equal(a.uuid, b.uuid);
	assert_int_equal(b.capacity, 7);
	attr.exclusive = 1;
	errno = 0;
	assert_int_equal(ipc_mbox_create(c, "box", &attr, &b), -1);
	assert_int_equal(errno, EEXIST);
	broker_stop(&f->b);
}

static void
test_mbox_stat_of_missing_is_enoent(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	errno = 0;
	assert_int_equal(ipc_mbox_stat(c, "nobody", &info), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(ipc_mbox_delete(c, "nobody"), -1);
	assert_int_equal(errno, ENOENT);
	broker_stop(&f->b);
}

static void
test_mbox_delete_then_stat_is_enoent(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info, again;
	struct ipc_conn *c;
	char buf[16];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_create(c, "gone", NULL, &info), 0);
	assert_int_equal(ipc_send(c, "gone", "queued", 7), 0);
	assert_int_equal(ipc_mbox_delete(c, "gone"), 0);
	errno = 0;
	assert_int_equal(ipc_mbox_stat(c, "gone", NULL), -1);
	assert_int_equal(errno, ENOENT);
	/* A new one of the same name is a new mailbox, empty. */
	assert_int_equal(ipc_mbox_create(c, "gone", NULL, &again), 0);
	assert_string_not_equal(info.uuid, again.uuid);
	assert_int_equal(again.depth, 0);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "gone", buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	broker_stop(&f->b);
}

static void
test_send_and_recv_on_missing_mailbox_are_enoent(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;
	char buf[16];
	void *p = NULL;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	errno = 0;
	assert_int_equal(ipc_send(c, "missing", "x", 1), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(ipc_send_timed(c, "missing", "x", 1, 0, NULL), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(ipc_recv(c, "missing", buf, sizeof(buf), NULL), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(ipc_recv_alloc(c, "missing", &p, 0, NULL), -1);
	assert_int_equal(errno, ENOENT);
	broker_stop(&f->b);
}

static void
test_parked_receiver_gets_enoent_when_mailbox_deleted(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;
	struct op *op;
	int parked, deleted;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "doomed", -1, -1);
	op = op_start(f, OP_RECV, "doomed", NULL, 64, TEST_WAIT_MS);
	parked = wait_parked(c, "doomed", 1, 0, NULL);
	deleted = ipc_mbox_delete(c, "doomed");
	assert_int_equal(op_join(op), 0);
	assert_int_equal(parked, 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(op->r, -1);
	assert_int_equal(op->err, ENOENT);
	broker_stop(&f->b);
}

static void
test_bad_mailbox_names_are_einval(void **state)
{
	struct fix *f = *state;
	const char *bad[] = { "", ".hidden", "a b", "a/b", "tab\there",
	    "caf\xc3\xa9", "pid:1" };
	char longest[IPC_NAME_MAX + 2];
	struct ipc_conn *c;
	char buf[16];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		if (ipc_mbox_create(c, bad[i], NULL, NULL) != -1 ||
		    errno != EINVAL)
			fail_msg("create '%s': %s", bad[i], strerror(errno));
		errno = 0;
		if (ipc_mbox_stat(c, bad[i], NULL) != -1 || errno != EINVAL)
			fail_msg("stat '%s': %s", bad[i], strerror(errno));
	}
	for (size_t i = 0; i < 6; i++) {
		errno = 0;
		if (ipc_send(c, bad[i], "x", 1) != -1 || errno != EINVAL)
			fail_msg("send '%s': %s", bad[i], strerror(errno));
		errno = 0;
		if (ipc_recv_timed(c, bad[i], buf, sizeof(buf), 0,
		    NULL) != -1 || errno != EINVAL)
			fail_msg("recv '%s': %s", bad[i], strerror(errno));
	}
	errno = 0;
	assert_int_equal(ipc_mbox_create(c, NULL, NULL, NULL), -1);
	assert_int_equal(errno, EINVAL);
	/* 255 bytes is a name; 256 is not. */
	memset(longest, 'n', sizeof(longest));
	longest[IPC_NAME_MAX] = '\0';
	assert_int_equal(ipc_mbox_create(c, longest, NULL, NULL), 0);
	longest[IPC_NAME_MAX] = 'n';
	longest[IPC_NAME_MAX + 1] = '\0';
	errno = 0;
	assert_int_equal(ipc_mbox_create(c, longest, NULL, NULL), -1);
	assert_int_equal(errno, EINVAL);
	broker_stop(&f->b);
}

static void
test_send_to_remote_address_is_enotsup(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;
	char buf[16];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	errno = 0;
	assert_int_equal(ipc_send(c, "x@host", "x", 1), -1);
	assert_int_equal(errno, ENOTSUP);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "x@host", buf, sizeof(buf), 0,
	    NULL), -1);
	assert_int_equal(errno, ENOTSUP);
	/* Still a working connection. */
	box_create(c, "x", -1, -1);
	assert_int_equal(ipc_send(c, "x", "y", 1), 0);
	broker_stop(&f->b);
}

/* === 11. ipcd itself ==================================================== */

static void
assert_round_trip(struct fix *f, const char *box)
{
	struct ipc_conn *c = fix_open(f);
	char buf[32];

	box_create(c, box, -1, -1);
	assert_int_equal(ipc_send(c, box, "ping", 5), 0);
	assert_int_equal(ipc_recv_timed(c, box, buf, sizeof(buf), TEST_WAIT_MS,
	    NULL), 5);
	assert_string_equal(buf, "ping");
}

static void
test_second_ipcd_on_same_socket_exits_1_first_keeps_working(void **state)
{
	struct fix *f = *state;
	char *argv[] = { NULL, "--socket", f->b.path, NULL };
	struct ipc_conn *c;
	struct test_proc p;
	struct stat st;
	char line[512];
	int status;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "before", -1, -1);
	assert_int_equal(ipc_send(c, "before", "kept", 5), 0);
	argv[0] = strdup(test_build_path("daemon/ipcd"));
	assert_int_equal(test_spawn(&p, argv), 0);
	free(argv[0]);
	assert_true(test_read_line(p.err, line, sizeof(line), TEST_WAIT_MS) >
	    0);
	print_message("second ipcd: %s\n", line);
	status = proc_wait(&p);
	assert_exit_status(status, 1);
	/* The first one's socket is still there, and so is it. */
	assert_int_equal(lstat(f->b.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	{
		char buf[16];

		assert_int_equal(ipc_recv_timed(c, "before", buf, sizeof(buf),
		    0, NULL), 5);
		assert_string_equal(buf, "kept");
	}
	assert_round_trip(f, "after");
	broker_stop(&f->b);
}

static void
test_ipcd_replaces_stale_socket_after_sigkill(void **state)
{
	struct fix *f = *state;
	struct stat st;

	broker_start(&f->b, NULL);
	assert_round_trip(f, "first");
	assert_int_equal(kill(f->b.proc.pid, SIGKILL), 0);
	broker_reap_killed(&f->b);
	/* The socket file outlives it, and nobody listens. */
	assert_int_equal(lstat(f->b.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	errno = 0;
	assert_null(ipc_open(f->b.where));
	assert_int_equal(errno, ECONNREFUSED);
	broker_start(&f->b, NULL);
	assert_round_trip(f, "second");
	broker_stop(&f->b);
}

static void
test_ipcd_sigterm_removes_socket_file(void **state)
{
	struct fix *f = *state;
	struct stat st;

	broker_start(&f->b, NULL);
	assert_int_equal(lstat(f->b.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	broker_stop(&f->b);
	errno = 0;
	assert_int_equal(lstat(f->b.path, &st), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_null(ipc_open(f->b.where));
	assert_int_equal(errno, ENOENT);
}

static void
test_ipcd_help_exits_0_unknown_option_exits_2(void **state)
{
	char ipcd[PATH_MAX], line[256];
	struct test_proc p;
	int status;

	(void)state;
	snprintf(ipcd, sizeof(ipcd), "%s", test_build_path("daemon/ipcd"));
	assert_int_equal(test_spawn(&p, (char *[]){ ipcd, "--help", NULL }),
	    0);
	assert_true(test_read_line(p.out, line, sizeof(line), TEST_WAIT_MS) >
	    0);
	assert_non_null(strstr(line, "Usage:"));
	status = proc_wait(&p);
	assert_exit_status(status, 0);
	assert_int_equal(test_spawn(&p, (char *[]){ ipcd, "--bogus", NULL }),
	    0);
	status = proc_wait(&p);
	assert_exit_status(status, 2);
}

/* === 12. armed receive ================================================== */

static void
test_recv_arm_makes_fd_readable_when_message_arrives(void **state)
{
	struct fix *f = *state;
	struct ipc_msg_info info;
	struct ipc_conn *c, *other;
	char buf[64];
	int parked;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	other = fix_open(f);
	box_create(other, "ev", -1, -1);
	assert_int_equal(ipc_recv_arm(c, "ev"), 0);
	/* The armed request is parked in the broker. */
	parked = wait_parked(other, "ev", 1, 0, NULL);
	assert_int_equal(parked, 0);
	assert_int_equal(test_wait_readable(ipc_fd(c), 50), 0);
	assert_int_equal(ipc_send(other, "ev", "event", 6), 0);
	assert_int_equal(test_wait_readable(ipc_fd(c), TEST_WAIT_MS), 1);
	assert_int_equal(ipc_recv_timed(c, "ev", buf, sizeof(buf), 0, &info),
	    6);
	assert_string_equal(buf, "event");
	assert_string_equal(info.source, "ev");
	assert_int_equal(info.pid, getpid());
	/* Taken: nothing more is there. */
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "ev", buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	broker_stop(&f->b);
}

/* The armed message arrives, and another call on the connection reads it
 * off the socket (keeping it for the next receive).  The fd must still
 * say that a message is there: an event loop waits on nothing else. */
static void
test_recv_arm_fd_stays_readable_when_other_call_reads_msg(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *other;
	char buf[64];
	int still;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	other = fix_open(f);
	box_create(other, "ev", -1, -1);
	assert_int_equal(ipc_recv_arm(c, "ev"), 0);
	assert_int_equal(wait_parked(other, "ev", 1, 0, NULL), 0);
	assert_int_equal(ipc_send(other, "ev", "event", 6), 0);
	assert_int_equal(test_wait_readable(ipc_fd(c), TEST_WAIT_MS), 1);
	/* Any call will do; it meets the armed DELIVER first. */
	assert_int_equal(ipc_mbox_stat(c, "ev", NULL), 0);
	still = test_wait_readable(ipc_fd(c), 0);
	/* The message is kept all right. */
	assert_int_equal(ipc_recv_timed(c, "ev", buf, sizeof(buf), 0, NULL),
	    6);
	assert_string_equal(buf, "event");
	assert_int_equal(still, 1);
	broker_stop(&f->b);
}

static void
test_recv_arm_while_armed_is_ebusy(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "ev", -1, -1);
	box_create(c, "ev2", -1, -1);
	assert_int_equal(ipc_recv_arm(c, "ev"), 0);
	errno = 0;
	assert_int_equal(ipc_recv_arm(c, "ev"), -1);
	assert_int_equal(errno, EBUSY);
	errno = 0;
	assert_int_equal(ipc_recv_arm(c, "ev2"), -1);
	assert_int_equal(errno, EBUSY);
	broker_stop(&f->b);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_prodcons_3x2x100000_exactly_once_in_order),
		T(test_threads_2x2x5000_exactly_once_in_order),
		T(test_blocking_recv_wakes_on_send_with_sender_info),
		T(test_nonblocking_recv_on_empty_is_eagain),
		T(test_timed_recv_on_empty_times_out),
		T(test_blocking_send_on_full_resumes_after_recv_in_fifo_order),
		T(test_nonblocking_send_on_full_is_eagain),
		T(test_timed_send_on_full_times_out_and_sends_nothing),
		T(test_sender_behind_timed_out_sender_is_admitted),
		T(test_sender_behind_vanished_sender_is_admitted),
		T(test_send_over_max_bytes_is_emsgsize_behind_waiting_sender),
		T(test_rendezvous_nonblocking_send_without_receiver_is_eagain),
		T(test_rendezvous_send_completes_only_when_received),
		T(test_competing_receivers_are_served_first_come_first_served),
		T(test_recv_into_small_buffer_is_emsgsize_and_message_stays),
		T(test_recv_alloc_takes_message_refused_for_small_buffer),
		T(test_max_msg_size_exact_passes_one_over_is_emsgsize),
		T(test_raw_send_over_max_msg_size_is_emsgsize_conn_stays_open),
		T(test_broker_sigkill_fails_blocked_recv_with_econnreset),
		T(test_broker_sigterm_fails_blocked_recv_with_econnreset),
		T(test_garbage_bytes_get_error_and_close),
		T(test_truncated_frame_then_close_is_harmless),
		T(test_frame_length_over_limit_gets_error_and_close),
		T(test_unknown_frame_type_after_hello_gets_error_and_close),
		T(test_hello_with_wrong_version_gets_error_and_close),
		T(test_hello_with_wrong_magic_gets_error_and_close),
		T(test_unfinished_handshake_is_closed_after_timeout),
		T(test_client_that_never_reads_replies_does_not_stall_broker),
		T(test_timed_recv_held_back_by_throttle_still_times_out),
		T(test_mbox_create_gives_distinct_36_char_uuids),
		T(test_mbox_create_existing_opens_it_unless_exclusive),
		T(test_mbox_stat_of_missing_is_enoent),
		T(test_mbox_delete_then_stat_is_enoent),
		T(test_send_and_recv_on_missing_mailbox_are_enoent),
		T(test_parked_receiver_gets_enoent_when_mailbox_deleted),
		T(test_bad_mailbox_names_are_einval),
		T(test_send_to_remote_address_is_enotsup),
		T(test_second_ipcd_on_same_socket_exits_1_first_keeps_working),
		T(test_ipcd_replaces_stale_socket_after_sigkill),
		T(test_ipcd_sigterm_removes_socket_file),
		T(test_ipcd_help_exits_0_unknown_option_exits_2),
		T(test_recv_arm_makes_fd_readable_when_message_arrives),
		T(test_recv_arm_fd_stays_readable_when_other_call_reads_msg),
		T(test_recv_arm_while_armed_is_ebusy),
	};

	test_init(600);
	/* TEST_FILTER=test_rendezvous* runs only the tests that match. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
