/*
 * test-stream.c - receive streams (ipc_set_prefetch) and batched sends
 * (ipc_send_more, ipc_flush) against a real ipcd, one private broker per
 * test; and large payloads passed as sealed memfds ($IPC_MEMFD_MIN),
 * with what the broker holds read from /proc/PID/fd.
 *
 * How the tests know what the broker did without sleeping:
 *   - A round trip on the receiving connection itself is a barrier for
 *     its stream: the broker handles one connection's requests in order,
 *     so whatever it pushed on the stream before is in the socket ahead
 *     of the answer (and the library keeps it).  ipc_mbox_stat() on that
 *     connection then gives the exact depth left in the mailbox.
 *   - What other connections did is looked for with ipc_mbox_stat() or
 *     ipc_clients() in a loop bounded by a deadline: one round trip per
 *     look.
 *   - Child processes report on pipes read with timeouts and are reaped
 *     with bounded waits; threads make only timed calls, so their joins
 *     are bounded, and no assertion runs while one may still be running
 *     on data the test owns.
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
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "ipc.h"
#include "mysocks.h"
#include "testutil.h"
#include "testbroker.h"
#include "wire.h"

/* The uid and gid a child takes to be "another user". */
#define NOBODY		65534

/* Volume runs: messages per producer. */
#define VOL_ONE_N	200000u
#define VOL_TWO_N	50000u
#define VOL_PRODUCERS_MAX 2
#define VOL_CONSUMERS_MAX 2

/* The killed consumer: messages queued, messages it takes before it is
 * killed, and its prefetch. */
#define KILL_N		2000u
#define KILL_TAKEN	100u
#define KILL_PREFETCH	256u

/* --- messages ------------------------------------------------------------ */

/* Every payload the tests count: 16 bytes, with a check word so that a
 * message handed out torn or from the wrong place is not taken for a
 * good one. */
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

#define FIX_MAX 32

/* What a test opens or starts, so that the teardown can undo it however
 * far the test got: the broker, connections, child processes, threads
 * and the memory those threads use. */
struct fix {
	struct broker b;
	struct ipc_conn *conns[FIX_MAX];
	int nconns;
	pid_t kids[FIX_MAX];		/* 0 once reaped */
	int nkids;
	pthread_t threads[FIX_MAX];
	int thread_live[FIX_MAX];
	int nthreads;
	void *mem[FIX_MAX];
	int nmem;
	int fds[FIX_MAX];		/* pipe ends to close */
	int nfds;
	int broker_paused;		/* SIGSTOPped: SIGCONT it first */
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

/* Undo what the test left: a broker it stopped is let go on, then
 * children (killed: a child never outlives its test), then the broker, whose going makes every call
 * still blocked in a thread return, then the threads, connections and
 * memory. */
static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	if (f->broker_paused && f->b.proc.pid > 0)
		kill(f->b.proc.pid, SIGCONT);
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
	for (int i = 0; i < f->nmem; i++)
		free(f->mem[i]);
	for (int i = 0; i < f->nfds; i++)
		close(f->fds[i]);
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

/* Close c now (the test is about what closing does). */
static void
fix_close(struct fix *f, struct ipc_conn *c)
{
	for (int i = 0; i < f->nconns; i++)
		if (f->conns[i] == c) {
			f->conns[i] = f->conns[--f->nconns];
			break;
		}
	assert_int_equal(ipc_close(c), 0);
}

/* Zeroed memory that lives until the teardown (threads may use it even
 * when the test fails before it joins them). */
static void *
fix_alloc(struct fix *f, size_t size)
{
	void *p = calloc(1, size);

	assert_non_null(p);
	assert_true(f->nmem < FIX_MAX);
	f->mem[f->nmem++] = p;
	return p;
}

static void
fix_pipe(struct fix *f, int p[2])
{
	assert_true(f->nfds + 2 <= FIX_MAX);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	f->fds[f->nfds++] = p[0];
	f->fds[f->nfds++] = p[1];
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

/* Join a thread whose calls are all timed: bounded. */
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
		/* The child must not outlive the test program, whatever
		 * happens to it; and a child has no watchdog of its own. */
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

/* --- helpers ------------------------------------------------------------- */

static void
box_create(struct ipc_conn *c, const char *name, int64_t capacity, int mode)
{
	struct ipc_mbox_attr attr;

	ipc_mbox_attr_init(&attr);
	attr.capacity = capacity;
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

static uint32_t
box_depth(struct ipc_conn *c, const char *box)
{
	return box_stat(c, box).depth;
}

enum box_field { DEPTH, RECEIVERS };

/* Ask until the mailbox's depth (or parked receivers) is want; fail the
 * test at the deadline.  For what another connection does, which no
 * round trip of ours is ordered with. */
static void
box_wait(struct ipc_conn *c, const char *box, enum box_field what,
    uint32_t want)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	struct ipc_mbox_info info;
	uint32_t v;

	do {
		info = box_stat(c, box);
		v = what == DEPTH ? info.depth : info.waiting_receivers;
		if (v == want)
			return;
	} while (test_now_ms() < deadline);
	fail_msg("%s: %s stayed %u, expected %u", box,
	    what == DEPTH ? "depth" : "waiting_receivers", v, want);
}

/* Like box_wait, for a depth other than the one it had. */
static uint32_t
box_wait_change(struct ipc_conn *c, const char *box, uint32_t from)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	uint32_t v;

	do
		if ((v = box_depth(c, box)) != from)
			return v;
	while (test_now_ms() < deadline);
	fail_msg("%s: depth stayed %u", box, from);
	return v;
}

static void
send_seq(struct ipc_conn *c, const char *box, uint32_t producer,
    uint64_t seq)
{
	struct seqmsg m = seq_make(producer, seq);

	if (ipc_send_timed(c, box, &m, sizeof(m), TEST_WAIT_MS, NULL) < 0)
		fail_msg("send %s #%llu: %s", box, (unsigned long long)seq,
		    strerror(errno));
}

static void
send_more_id(struct ipc_conn *c, const char *box, uint64_t seq,
    uint64_t *id_out)
{
	struct seqmsg m = seq_make(0, seq);

	if (ipc_send_more(c, box, &m, sizeof(m), id_out) < 0)
		fail_msg("send_more %s #%llu: %s", box,
		    (unsigned long long)seq, strerror(errno));
}

static void
send_more_seq(struct ipc_conn *c, const char *box, uint64_t seq)
{
	send_more_id(c, box, seq, NULL);
}

/* Receive one message of producer 0 and insist it is number seq. */
static struct ipc_msg_info
expect_seq(struct ipc_conn *c, const char *box, int timeout_ms,
    uint64_t seq)
{
	struct ipc_msg_info info;
	struct seqmsg m;
	ssize_t r;

	const char *name = box != NULL ? box : "the direct queue";

	memset(&m, 0, sizeof(m));
	r = ipc_recv_timed(c, box, &m, sizeof(m), timeout_ms, &info);
	if (r < 0)
		fail_msg("recv %s, expecting #%llu: %s", name,
		    (unsigned long long)seq, strerror(errno));
	if (r != (ssize_t)sizeof(m) || !seq_valid(&m) || m.producer != 0)
		fail_msg("recv %s: %zd bytes, not a good message", name, r);
	if (m.seq != seq)
		fail_msg("recv %s: got #%llu, expected #%llu", name,
		    (unsigned long long)m.seq, (unsigned long long)seq);
	assert_int_equal(info.len, sizeof(m));
	/* A direct queue's messages come from "pid:" the receiver. */
	if (box != NULL && strncmp(box, "pid:", 4) != 0)
		assert_string_equal(info.source, box);
	return info;
}

/* Nothing is there for c now. */
static void
expect_empty(struct ipc_conn *c, const char *box)
{
	struct seqmsg m;

	errno = 0;
	if (ipc_recv_timed(c, box, &m, sizeof(m), 0, NULL) >= 0)
		fail_msg("recv %s: got #%llu, expected nothing",
		    box != NULL ? box : "the direct queue",
		    (unsigned long long)m.seq);
	assert_int_equal(errno, EAGAIN);
}

/* Read exactly n bytes, each wait bounded.  0, or -1 (timeout, EOF). */
static int
read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r;

		if (test_wait_readable(fd, TEST_WAIT_MS) != 1)
			return -1;
		r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int
write_full(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = write(fd, (const char *)buf + done, n - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static void
assert_exited(int status, int code)
{
	if (!WIFEXITED(status))
		fail_msg("child did not exit: status 0x%x", status);
	assert_int_equal(WEXITSTATUS(status), code);
}

/* What the broker says of process pid: its connections, and its direct
 * queue's depth. */
struct client_count {
	pid_t pid;
	int conns;
	uint32_t queue_depth;
};

static int
client_count_cb(const struct ipc_client_info *info, void *arg)
{
	struct client_count *cc = arg;

	if (info->pid == cc->pid) {
		cc->conns++;
		cc->queue_depth = info->queue_depth;
	}
	return 0;
}

static struct client_count
clients_of(struct ipc_conn *c, pid_t pid)
{
	struct client_count cc = { pid, 0, 0 };

	if (ipc_clients(c, client_count_cb, &cc) < 0)
		fail_msg("ipc_clients: %s", strerror(errno));
	return cc;
}

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

/* === 1. the window ======================================================= */

/* The broker pushes no more than the prefetch ahead, the library gives
 * credit again once half of it is used, and a refused ipc_set_prefetch
 * changes nothing. */
static void
test_prefetch_window_topped_up_at_half_and_limit_einval(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	struct ipc_msg_info info;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "win", -1, -1);
	for (uint64_t i = 0; i < 20; i++)
		send_seq(s, "win", 0, i);

	errno = 0;
	assert_int_equal(ipc_set_prefetch(NULL, 1), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(ipc_set_prefetch(c, 8), 0);
	errno = 0;
	assert_int_equal(ipc_set_prefetch(c, 65537), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(ipc_set_prefetch(c, UINT_MAX), -1);
	assert_int_equal(errno, EINVAL);

	/* The first receive opens the stream with the 8 still in force:
	 * 8 leave the mailbox at once. */
	info = expect_seq(c, "win", TEST_WAIT_MS, 0);
	assert_int_equal(info.flags, 0);
	assert_int_equal(info.pid, getpid());
	assert_int_equal(info.uid, getuid());
	assert_int_equal(box_depth(c, "win"), 12);
	/* Credit out plus messages held is still over half: no more. */
	expect_seq(c, "win", 0, 1);
	expect_seq(c, "win", 0, 2);
	assert_int_equal(box_depth(c, "win"), 12);
	/* Down to half: credit for the 4 handed out. */
	expect_seq(c, "win", 0, 3);
	assert_int_equal(box_depth(c, "win"), 8);
	for (uint64_t i = 4; i < 20; i++) {
		uint32_t depth;

		expect_seq(c, "win", TEST_WAIT_MS, i);
		/* Never more than 8 ahead of the application. */
		depth = box_depth(c, "win");
		if (20 - depth - (i + 1) > 8)
			fail_msg("after #%llu, %u delivered ahead",
			    (unsigned long long)i,
			    20 - depth - (unsigned)(i + 1));
	}
	expect_empty(c, "win");
	assert_int_equal(box_depth(s, "win"), 0);

	/* The most credit there is works as any other. */
	assert_int_equal(ipc_set_prefetch(c, 65536), 0);
	for (uint64_t i = 20; i < 23; i++)
		send_seq(s, "win", 0, i);
	for (uint64_t i = 20; i < 23; i++)
		expect_seq(c, "win", TEST_WAIT_MS, i);
	broker_stop(&f->b);
}

/* Prefetch 0 ends every stream with a round trip: after it the broker
 * pushes nothing, and what had come ahead is still handed out, before
 * what plain receives then ask for. */
static void
test_prefetch_zero_ends_streams_held_messages_still_handed_out(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "pz", -1, -1);
	box_create(s, "pz2", -1, -1);
	for (uint64_t i = 0; i < 10; i++)
		send_seq(s, "pz", 0, i);
	for (uint64_t i = 0; i < 3; i++)
		send_seq(s, "pz2", 0, i);
	assert_int_equal(ipc_set_prefetch(c, 4), 0);
	expect_seq(c, "pz", TEST_WAIT_MS, 0);
	expect_seq(c, "pz2", TEST_WAIT_MS, 0);

	assert_int_equal(ipc_set_prefetch(c, 0), 0);
	/* The broker answered the ends: its state is final. */
	assert_int_equal(box_depth(s, "pz"), 6);
	assert_int_equal(box_depth(s, "pz2"), 0);
	/* A stream still open would take these as they come. */
	send_seq(s, "pz2", 0, 3);
	send_seq(s, "pz2", 0, 4);
	assert_int_equal(box_depth(s, "pz2"), 2);

	expect_seq(c, "pz", 0, 1);
	expect_seq(c, "pz", 0, 2);
	expect_seq(c, "pz", 0, 3);
	/* From here one receive takes one message. */
	expect_seq(c, "pz", TEST_WAIT_MS, 4);
	assert_int_equal(box_depth(s, "pz"), 5);
	for (uint64_t i = 5; i < 10; i++)
		expect_seq(c, "pz", TEST_WAIT_MS, i);
	expect_empty(c, "pz");
	/* Prefetch again: what the ended stream left comes first, then
	 * the new stream's. */
	assert_int_equal(ipc_set_prefetch(c, 4), 0);
	expect_seq(c, "pz2", 0, 1);
	expect_seq(c, "pz2", 0, 2);
	expect_seq(c, "pz2", TEST_WAIT_MS, 3);
	assert_int_equal(box_depth(c, "pz2"), 0);
	expect_seq(c, "pz2", 0, 4);
	expect_empty(c, "pz2");
	broker_stop(&f->b);
}

/* Receives from the direct queue, any sender or one, take one message
 * each, prefetch or not. */
static void
test_direct_queue_receives_never_prefetch(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	char me[32], from_me[32];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	assert_int_equal(ipc_set_prefetch(c, 16), 0);
	snprintf(me, sizeof(me), "pid:%ld", (long)ipc_pid(c));
	/* Both connections are this process's: s sends as "pid:" us. */
	snprintf(from_me, sizeof(from_me), "pid:%ld", (long)ipc_pid(s));
	for (uint64_t i = 0; i < 6; i++)
		send_seq(s, me, 0, i);
	assert_int_equal(clients_of(s, getpid()).queue_depth, 6);

	assert_string_equal(expect_seq(c, NULL, TEST_WAIT_MS, 0).source, me);
	assert_int_equal(clients_of(s, getpid()).queue_depth, 5);
	expect_seq(c, from_me, TEST_WAIT_MS, 1);
	assert_int_equal(clients_of(s, getpid()).queue_depth, 4);
	expect_seq(c, NULL, TEST_WAIT_MS, 2);
	expect_seq(c, from_me, TEST_WAIT_MS, 3);
	assert_int_equal(clients_of(s, getpid()).queue_depth, 2);
	expect_seq(c, NULL, TEST_WAIT_MS, 4);
	expect_seq(c, NULL, TEST_WAIT_MS, 5);
	expect_empty(c, NULL);
	broker_stop(&f->b);
}

/* One connection receiving from many mailboxes, more than it keeps
 * streams for: each mailbox's messages in their order, none lost while
 * another mailbox's stream brings messages in between. */
static void
test_many_mailboxes_on_one_connection_each_keep_order(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	char box[20][16];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	for (int i = 0; i < 20; i++) {
		snprintf(box[i], sizeof(box[i]), "mm%02d", i);
		box_create(s, box[i], -1, -1);
		for (uint64_t j = 0; j < 5; j++)
			send_seq(s, box[i], 0, 100u * (unsigned)i + j);
	}
	assert_int_equal(ipc_set_prefetch(c, 2), 0);
	for (uint64_t j = 0; j < 5; j++)
		for (int i = 0; i < 20; i++)
			expect_seq(c, box[i], TEST_WAIT_MS,
			    100u * (unsigned)i + j);
	for (int i = 0; i < 20; i++) {
		expect_empty(c, box[i]);
		assert_int_equal(box_depth(c, box[i]), 0);
	}
	broker_stop(&f->b);
}

/* === 2. redelivery ======================================================= */

/* Messages pushed ahead and not handed out go back to the head of the
 * mailbox when the connection closes, flagged and in their order; the
 * ones handed out are acknowledged, at the latest by the close, and do
 * not come back. */
static void
test_close_returns_prefetched_to_head_redelivered_in_order(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s, *r;
	struct ipc_msg_info info;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "back", -1, -1);
	for (uint64_t i = 0; i < 12; i++)
		send_seq(s, "back", 0, i);
	assert_int_equal(ipc_set_prefetch(c, 8), 0);
	expect_seq(c, "back", TEST_WAIT_MS, 0);
	expect_seq(c, "back", TEST_WAIT_MS, 1);
	assert_int_equal(box_depth(c, "back"), 4);
	/* Handed out with no request after it: only the close can say
	 * so to the broker. */
	expect_seq(c, "back", 0, 2);
	/* Queued behind, while c holds 3..7. */
	send_seq(s, "back", 0, 12);
	assert_int_equal(box_depth(s, "back"), 5);

	fix_close(f, c);
	/* The broker requeues all that c held in one go. */
	assert_int_equal(box_wait_change(s, "back", 5), 10);

	r = fix_open(f);
	assert_int_equal(ipc_set_prefetch(r, 4), 0);
	for (uint64_t i = 3; i < 8; i++) {
		info = expect_seq(r, "back", TEST_WAIT_MS, i);
		if (!(info.flags & IPC_MSG_REDELIVERED))
			fail_msg("#%llu came back without REDELIVERED",
			    (unsigned long long)i);
	}
	for (uint64_t i = 8; i < 13; i++) {
		info = expect_seq(r, "back", TEST_WAIT_MS, i);
		if (info.flags & IPC_MSG_REDELIVERED)
			fail_msg("#%llu was never delivered, yet REDELIVERED",
			    (unsigned long long)i);
	}
	expect_empty(r, "back");
	broker_stop(&f->b);
}

/* A connection streaming from more mailboxes than a handful closes while
 * another waits on each of them: every waiting receiver gets the
 * messages that come back oldest first, as if they had all been put
 * back before anyone was served. */
static void
test_close_with_receivers_waiting_on_many_mailboxes_keeps_order(
    void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s, *r;
	struct ipc_msg_info info;
	char box[12][16];

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	r = fix_open(f);
	for (int i = 0; i < 12; i++) {
		snprintf(box[i], sizeof(box[i]), "wb%02d", i);
		box_create(s, box[i], -1, -1);
		for (uint64_t j = 0; j < 4; j++)
			send_seq(s, box[i], 0, 100u * (unsigned)i + j);
	}
	assert_int_equal(ipc_set_prefetch(c, 4), 0);
	assert_int_equal(ipc_set_prefetch(r, 4), 0);
	/* c takes the first of each and holds the other three. */
	for (int i = 0; i < 12; i++)
		expect_seq(c, box[i], TEST_WAIT_MS, 100u * (unsigned)i);
	for (int i = 0; i < 12; i++)
		assert_int_equal(box_depth(c, box[i]), 0);
	/* r waits on each, its streams in line behind c's. */
	for (int i = 0; i < 12; i++)
		expect_empty(r, box[i]);
	for (int i = 0; i < 12; i++)
		assert_int_equal(box_stat(r, box[i]).waiting_receivers, 2);

	fix_close(f, c);
	for (int i = 0; i < 12; i++)
		for (uint64_t j = 1; j < 4; j++) {
			info = expect_seq(r, box[i], TEST_WAIT_MS,
			    100u * (unsigned)i + j);
			if (!(info.flags & IPC_MSG_REDELIVERED))
				fail_msg("%s #%llu came back without "
				    "REDELIVERED", box[i],
				    (unsigned long long)j);
		}
	for (int i = 0; i < 12; i++) {
		expect_empty(r, box[i]);
		assert_int_equal(box_depth(r, box[i]), 0);
	}
	broker_stop(&f->b);
}

/* A consumer process killed with SIGKILL while it holds prefetched
 * messages: a second consumer gets every message the first did not
 * acknowledge, the ones that come back first, flagged, in their order;
 * none is lost. */
static void
test_killed_consumer_prefetched_messages_go_to_next_consumer(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r;
	uint64_t kid_got[KILL_TAKEN];
	uint8_t *by_kid, *by_r;
	int rep[2], hold[2], status;
	uint32_t depth, held, distinct = KILL_TAKEN, redelivered = 0;
	uint64_t last = 0, nr = 0;
	int seen_fresh = 0;
	pid_t kid;
	char why[200] = "";

	broker_start(&f->b, NULL);
	s = fix_open(f);
	box_create(s, "kill", KILL_N, -1);
	for (uint64_t i = 0; i < KILL_N; i++) {
		struct seqmsg m = seq_make(0, i);

		assert_int_equal(ipc_send_more(s, "kill", &m, sizeof(m),
		    NULL), 0);
	}
	assert_int_equal(ipc_flush(s), 0);
	box_wait(s, "kill", DEPTH, KILL_N);

	fix_pipe(f, rep);
	fix_pipe(f, hold);
	kid = fix_fork(f);
	if (kid == 0) {
		struct ipc_conn *k;
		uint64_t got[KILL_TAKEN];

		/* Its end of hold is only for the parent to keep. */
		close(hold[1]);
		if ((k = ipc_open(f->b.where)) == NULL)
			_exit(10);
		if (ipc_set_prefetch(k, KILL_PREFETCH) < 0)
			_exit(11);
		for (unsigned i = 0; i < KILL_TAKEN; i++) {
			struct seqmsg m;

			if (ipc_recv_timed(k, "kill", &m, sizeof(m),
			    TEST_WAIT_MS, NULL) != (ssize_t)sizeof(m) ||
			    !seq_valid(&m))
				_exit(12);
			got[i] = m.seq;
		}
		if (write_full(rep[1], got, sizeof(got)) < 0)
			_exit(13);
		/* Hold on to the rest until killed; EOF on hold (the
		 * test program went) or the time out ends it anyway. */
		test_wait_readable(hold[0], TEST_WAIT_MS);
		_exit(14);
	}
	if (read_full(rep[0], kid_got, sizeof(kid_got)) < 0) {
		status = fix_reap(f, kid);
		fail_msg("the consumer reported nothing (status 0x%x)",
		    status);
	}
	for (unsigned i = 0; i < KILL_TAKEN; i++)
		assert_int_equal(kid_got[i], i);
	/* It took its messages from a stream: the broker gave it more than
	 * it handed out, which it holds now. */
	depth = box_depth(s, "kill");
	assert_true(depth < KILL_N - KILL_TAKEN);
	held = KILL_N - KILL_TAKEN - depth;
	assert_true(held <= KILL_PREFETCH);

	assert_int_equal(kill(kid, SIGKILL), 0);
	status = fix_reap(f, kid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	/* Its messages are back once the broker has dropped it. */
	{
		long long deadline = test_now_ms() + TEST_WAIT_MS;

		while (clients_of(s, kid).conns > 0)
			if (test_now_ms() > deadline)
				fail_msg("the broker still lists the killed "
				    "consumer");
	}

	by_kid = fix_alloc(f, KILL_N);
	by_r = fix_alloc(f, KILL_N);
	for (unsigned i = 0; i < KILL_TAKEN; i++)
		by_kid[kid_got[i]] = 1;
	r = fix_open(f);
	assert_int_equal(ipc_set_prefetch(r, 64), 0);
	/* Until every number was seen by one of them (the redelivered
	 * ones it had handed out come first, so none is left behind). */
	while (distinct < KILL_N) {
		struct ipc_msg_info info;
		struct seqmsg m;
		ssize_t n = ipc_recv_timed(r, "kill", &m, sizeof(m),
		    TEST_WAIT_MS, &info);

		if (n != (ssize_t)sizeof(m) || !seq_valid(&m) ||
		    m.seq >= KILL_N) {
			snprintf(why, sizeof(why), "recv after %u distinct: "
			    "%s", distinct, n < 0 ? strerror(errno) :
			    "not a good message");
			break;
		}
		if (by_r[m.seq]++) {
			snprintf(why, sizeof(why), "#%llu twice",
			    (unsigned long long)m.seq);
			break;
		}
		if (nr++ > 0 && m.seq <= last) {
			snprintf(why, sizeof(why), "#%llu after #%llu",
			    (unsigned long long)m.seq,
			    (unsigned long long)last);
			break;
		}
		last = m.seq;
		if (info.flags & IPC_MSG_REDELIVERED) {
			/* Put back at the head: all before the rest. */
			if (seen_fresh) {
				snprintf(why, sizeof(why), "redelivered #%llu "
				    "after fresh ones",
				    (unsigned long long)m.seq);
				break;
			}
			redelivered++;
		} else {
			seen_fresh = 1;
			if (by_kid[m.seq]) {
				snprintf(why, sizeof(why), "#%llu handed to "
				    "both, not flagged",
				    (unsigned long long)m.seq);
				break;
			}
		}
		if (!by_kid[m.seq])
			distinct++;
	}
	if (why[0] != '\0')
		fail_msg("%s", why);
	print_message("killed consumer: %u handed out, %u held, %u "
	    "redelivered\n", KILL_TAKEN, held, redelivered);
	assert_int_equal(distinct, KILL_N);
	/* At least what it held, at most what the broker had given it. */
	assert_true(redelivered >= held);
	assert_true(redelivered <= held + KILL_TAKEN);
	expect_empty(r, "kill");
	assert_int_equal(box_depth(r, "kill"), 0);
	broker_stop(&f->b);
}

/* === 3. several receivers ================================================ */

struct plain_recv {
	struct ipc_conn *c;
	const char *box;
	ssize_t r;
	int err;
	struct seqmsg m;
};

static void *
plain_recv_main(void *arg)
{
	struct plain_recv *p = arg;

	errno = 0;
	p->r = ipc_recv_timed(p->c, p->box, &p->m, sizeof(p->m),
	    TEST_WAIT_MS, NULL);
	p->err = errno;
	return NULL;
}

/* Streams on one mailbox take turns, one message each; a plain receiver
 * in the line gets its turn too, though a stream with credit could take
 * everything. */
static void
test_stream_receivers_and_plain_receiver_take_turns(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *a, *b, *s;
	struct plain_recv *p;
	int t;

	broker_start(&f->b, NULL);
	a = fix_open(f);
	b = fix_open(f);
	s = fix_open(f);
	box_create(s, "turns", -1, -1);
	box_create(s, "turns2", -1, -1);
	assert_int_equal(ipc_set_prefetch(a, 8), 0);
	assert_int_equal(ipc_set_prefetch(b, 8), 0);
	/* Opening the streams: a first in line, then b. */
	expect_empty(a, "turns");
	box_wait(s, "turns", RECEIVERS, 1);
	expect_empty(b, "turns");
	box_wait(s, "turns", RECEIVERS, 2);
	for (uint64_t i = 0; i < 8; i++)
		send_seq(s, "turns", 0, i);
	assert_int_equal(box_depth(a, "turns"), 0);
	assert_int_equal(box_depth(b, "turns"), 0);
	for (uint64_t i = 0; i < 8; i += 2)
		expect_seq(a, "turns", 0, i);
	expect_empty(a, "turns");
	for (uint64_t i = 1; i < 8; i += 2)
		expect_seq(b, "turns", 0, i);
	expect_empty(b, "turns");

	/* A stream first in line, then a plain receive. */
	expect_empty(a, "turns2");
	box_wait(s, "turns2", RECEIVERS, 1);
	p = fix_alloc(f, sizeof(*p));
	p->c = fix_open(f);
	p->box = "turns2";
	t = fix_thread(f, plain_recv_main, p);
	box_wait(s, "turns2", RECEIVERS, 2);
	send_seq(s, "turns2", 0, 0);
	send_seq(s, "turns2", 0, 1);
	fix_join(f, t);
	if (p->r < 0)
		fail_msg("plain receive: %s", strerror(p->err));
	assert_int_equal(p->r, sizeof(p->m));
	assert_true(seq_valid(&p->m));
	assert_int_equal(p->m.seq, 1);
	assert_int_equal(box_depth(a, "turns2"), 0);
	expect_seq(a, "turns2", 0, 0);
	expect_empty(a, "turns2");
	/* Alone in line, the stream takes all. */
	send_seq(s, "turns2", 0, 2);
	send_seq(s, "turns2", 0, 3);
	assert_int_equal(box_depth(s, "turns2"), 0);
	expect_seq(a, "turns2", TEST_WAIT_MS, 2);
	expect_seq(a, "turns2", TEST_WAIT_MS, 3);
	broker_stop(&f->b);
}

/* === 4. receiving from a stream ========================================= */

/* A message larger than the buffer: EMSGSIZE with the size it needs,
 * again until a buffer is large enough, and the messages after it wait
 * their turn; the library still holds no more than the prefetch. */
static void
test_message_over_buffer_is_emsgsize_and_kept_in_order(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	struct ipc_msg_info info;
	uint8_t big[1000], out[2000];
	uint32_t depth;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "big", -1, -1);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + 1);
	/* #0, the big one, then #2..#10: 11 messages. */
	send_seq(s, "big", 0, 0);
	assert_int_equal(ipc_send(s, "big", big, sizeof(big)), 0);
	for (uint64_t i = 2; i < 11; i++)
		send_seq(s, "big", 0, i);
	assert_int_equal(ipc_set_prefetch(c, 4), 0);

	expect_seq(c, "big", TEST_WAIT_MS, 0);
	for (int i = 0; i < 2; i++) {
		memset(&info, 0, sizeof(info));
		errno = 0;
		assert_int_equal(ipc_recv_timed(c, "big", out, 64,
		    TEST_WAIT_MS, &info), -1);
		assert_int_equal(errno, EMSGSIZE);
		assert_int_equal(info.len, sizeof(big));
	}
	memset(out, 0, sizeof(out));
	assert_int_equal(ipc_recv_timed(c, "big", out, sizeof(out),
	    TEST_WAIT_MS, &info), sizeof(big));
	assert_memory_equal(out, big, sizeof(big));
	assert_int_equal(info.len, sizeof(big));
	assert_string_equal(info.source, "big");
	/* Two handed out; the library may hold at most 4 more. */
	depth = box_depth(c, "big");
	if (11 - depth - 2 > 4)
		fail_msg("%u messages delivered ahead with prefetch 4",
		    11 - depth - 2);
	for (uint64_t i = 2; i < 11; i++)
		expect_seq(c, "big", TEST_WAIT_MS, i);
	expect_empty(c, "big");
	broker_stop(&f->b);
}

/* A timed receive on a stream gives up (EAGAIN at once, ETIMEDOUT after
 * its time) and the stream stays open: what comes later arrives, pushed
 * as it is sent. */
static void
test_timed_recv_on_stream_times_out_and_stream_stays(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	struct seqmsg m;
	long long t0, spent;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "timed", -1, -1);
	assert_int_equal(ipc_set_prefetch(c, 4), 0);
	expect_empty(c, "timed");
	t0 = test_now_ms();
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "timed", &m, sizeof(m), 150, NULL),
	    -1);
	spent = test_now_ms() - t0;
	assert_int_equal(errno, ETIMEDOUT);
	assert_true(spent >= 140);
	assert_true(spent < TEST_WAIT_MS);
	assert_int_equal(box_stat(c, "timed").waiting_receivers, 1);
	send_seq(s, "timed", 0, 0);
	/* Taken by the stream on arrival, not left for a later ask. */
	assert_int_equal(box_depth(s, "timed"), 0);
	expect_seq(c, "timed", TEST_WAIT_MS, 0);
	send_seq(s, "timed", 0, 1);
	send_seq(s, "timed", 0, 2);
	assert_int_equal(box_depth(s, "timed"), 0);
	expect_seq(c, "timed", TEST_WAIT_MS, 1);
	expect_seq(c, "timed", TEST_WAIT_MS, 2);
	expect_empty(c, "timed");
	broker_stop(&f->b);
}

/* ipc_fd() is readable while the library holds messages not handed out
 * yet, though the socket is drained, and not once they are all out. */
static void
test_fd_readable_while_prefetched_messages_held(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	int fd;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "fd", -1, -1);
	assert_int_equal(ipc_set_prefetch(c, 64), 0);
	fd = ipc_fd(c);
	assert_true(fd >= 0);
	assert_int_equal(ipc_fd(c), fd);
	for (uint64_t i = 0; i < 10; i++)
		send_seq(s, "fd", 0, i);
	assert_int_equal(test_wait_readable(fd, 0), 0);

	/* The stream brings all 10 in one go; the first read takes them
	 * off the socket. */
	expect_seq(c, "fd", TEST_WAIT_MS, 0);
	assert_int_equal(test_wait_readable(fd, 0), 1);
	for (uint64_t i = 1; i < 10; i++) {
		expect_seq(c, "fd", 0, i);
		if (i < 9 && test_wait_readable(fd, 0) != 1)
			fail_msg("ipc_fd not readable with %llu held",
			    (unsigned long long)(9 - i));
	}
	assert_int_equal(test_wait_readable(fd, 0), 0);

	/* One that comes later wakes it. */
	send_seq(s, "fd", 0, 10);
	assert_int_equal(test_wait_readable(fd, TEST_WAIT_MS), 1);
	expect_seq(c, "fd", 0, 10);
	assert_int_equal(test_wait_readable(fd, 0), 0);

	/* Read past by another call (kept on the side): readable too. */
	for (uint64_t i = 11; i < 16; i++)
		send_seq(s, "fd", 0, i);
	assert_int_equal(box_depth(c, "fd"), 0);
	for (uint64_t i = 11; i < 16; i++) {
		if (test_wait_readable(fd, 0) != 1)
			fail_msg("ipc_fd not readable with #%llu held",
			    (unsigned long long)i);
		expect_seq(c, "fd", 0, i);
	}
	assert_int_equal(test_wait_readable(fd, 0), 0);
	broker_stop(&f->b);
}

/* Deleting the mailbox ends the stream: the receive waiting on it gets
 * ENOENT, so does the next, and a new mailbox of that name streams
 * again. */
static void
test_delete_mailbox_ends_stream_with_enoent(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *c, *s;
	struct seqmsg m;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	box_create(s, "del", -1, -1);
	assert_int_equal(ipc_set_prefetch(c, 4), 0);
	expect_empty(c, "del");
	box_wait(s, "del", RECEIVERS, 1);
	assert_int_equal(ipc_mbox_delete(s, "del"), 0);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "del", &m, sizeof(m), TEST_WAIT_MS,
	    NULL), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(ipc_recv_timed(c, "del", &m, sizeof(m), TEST_WAIT_MS,
	    NULL), -1);
	assert_int_equal(errno, ENOENT);

	box_create(s, "del", -1, -1);
	send_seq(s, "del", 0, 0);
	send_seq(s, "del", 0, 1);
	expect_seq(c, "del", TEST_WAIT_MS, 0);
	assert_int_equal(box_depth(c, "del"), 0);
	expect_seq(c, "del", 0, 1);
	broker_stop(&f->b);
}

/* What a child of another user saw. */
struct perm_rep {
	ssize_t r[4];
	int err[4];
	struct seqmsg m;
};

/* A stream needs the mailbox's read permission like any receive: another
 * user gets EACCES from a mailbox it may not read (or may only write),
 * takes nothing from it, and receives where it may. */
static void
test_stream_without_read_permission_is_eacces(void **state)
{
	struct fix *f = *state;
	static const char *const boxes[4] = { "closed", "wo", "open",
	    "closed" };
	struct ipc_conn *c;
	struct perm_rep rep;
	int p[2], status;
	pid_t kid;

	if (geteuid() != 0) {
		print_message("not root: cannot act as another user; "
		    "skipped\n");
		skip();
	}
	broker_start(&f->b, NULL);
	if (!reachable_by_others(f->b.dir)) {
		print_message("a directory above %s is closed to other users;"
		    " skipped\n", f->b.dir);
		broker_stop(&f->b);
		skip();
	}
	/* mkdtemp made the directory 0700, ipcd the socket with our
	 * umask: let nobody reach it. */
	assert_int_equal(chmod(f->b.dir, 0755), 0);
	assert_int_equal(chmod(f->b.path, 0777), 0);
	c = fix_open(f);
	box_create(c, "closed", -1, 0600);
	box_create(c, "wo", -1, 0622);
	box_create(c, "open", -1, 0644);
	send_seq(c, "closed", 0, 0);
	send_seq(c, "wo", 0, 0);
	send_seq(c, "open", 0, 7);

	fix_pipe(f, p);
	kid = fix_fork(f);
	if (kid == 0) {
		struct ipc_conn *k;
		struct perm_rep out;

		memset(&out, 0, sizeof(out));
		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 ||
		    setuid(NOBODY) < 0)
			_exit(10);
		if ((k = ipc_open(f->b.where)) == NULL)
			_exit(11);
		if (ipc_set_prefetch(k, 8) < 0)
			_exit(12);
		for (int i = 0; i < 4; i++) {
			struct seqmsg m;

			errno = 0;
			out.r[i] = ipc_recv_timed(k, boxes[i], &m, sizeof(m),
			    TEST_WAIT_MS, NULL);
			out.err[i] = errno;
			if (out.r[i] == (ssize_t)sizeof(m))
				out.m = m;
		}
		ipc_close(k);
		_exit(write_full(p[1], &out, sizeof(out)) < 0 ? 13 : 0);
	}
	if (read_full(p[0], &rep, sizeof(rep)) < 0) {
		status = fix_reap(f, kid);
		fail_msg("the child reported nothing (status 0x%x)", status);
	}
	assert_exited(fix_reap(f, kid), 0);
	for (int i = 0; i < 4; i++) {
		if (i == 2)
			continue;
		if (rep.r[i] != -1 || rep.err[i] != EACCES)
			fail_msg("receive %d from %s as nobody: %zd (%s), "
			    "expected EACCES", i, boxes[i], rep.r[i],
			    strerror(rep.err[i]));
	}
	if (rep.r[2] != (ssize_t)sizeof(rep.m))
		fail_msg("receive from open as nobody: %zd (%s)", rep.r[2],
		    strerror(rep.err[2]));
	assert_true(seq_valid(&rep.m));
	assert_int_equal(rep.m.seq, 7);
	assert_int_equal(box_depth(c, "closed"), 1);
	assert_int_equal(box_depth(c, "wo"), 1);
	assert_int_equal(box_depth(c, "open"), 0);
	broker_stop(&f->b);
}

/* === 5. batched sends ==================================================== */

/* ipc_send_more keeps small messages in the library until ipc_flush, and
 * writes by itself once 32 KiB are batched, the rest waiting for the
 * flush; a batched message the broker refuses is reported with its send
 * id. */
static void
test_send_more_waits_for_flush_or_32k(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *a, *s;
	struct ipc_send_failure fl;
	uint64_t ids[3];
	uint8_t kb[1024], out[1024];
	uint32_t depth;

	broker_start(&f->b, NULL);
	a = fix_open(f);
	s = fix_open(f);
	box_create(s, "bm", -1, -1);
	for (uint64_t i = 0; i < 3; i++) {
		struct seqmsg m = seq_make(0, i);

		ids[i] = 0;
		assert_int_equal(ipc_send_more(a, "bm", &m, sizeof(m),
		    &ids[i]), 0);
	}
	assert_true(ids[0] != 0 && ids[1] != 0 && ids[2] != 0);
	assert_true(ids[0] != ids[1] && ids[1] != ids[2] &&
	    ids[0] != ids[2]);
	/* Two looks: bytes the library had written would be there. */
	assert_int_equal(box_depth(s, "bm"), 0);
	assert_int_equal(box_depth(s, "bm"), 0);
	assert_int_equal(ipc_flush(a), 0);
	box_wait(s, "bm", DEPTH, 3);
	for (uint64_t i = 0; i < 3; i++)
		expect_seq(s, "bm", TEST_WAIT_MS, i);
	assert_int_equal(ipc_flush(a), 0);	/* nothing left: harmless */

	/* 40 of 1 KiB: at 32 KiB they leave; the last few stay. */
	for (int i = 0; i < 40; i++) {
		memset(kb, i, sizeof(kb));
		assert_int_equal(ipc_send_more(a, "bm", kb, sizeof(kb), NULL),
		    0);
	}
	{
		long long deadline = test_now_ms() + TEST_WAIT_MS;

		while ((depth = box_depth(s, "bm")) < 31)
			if (test_now_ms() > deadline)
				fail_msg("32 KiB batched and not written: "
				    "depth %u", depth);
	}
	for (int i = 0; i < 3; i++) {
		depth = box_depth(s, "bm");
		if (depth < 31 || depth > 33)
			fail_msg("depth %u before the flush", depth);
	}
	assert_int_equal(ipc_flush(a), 0);
	box_wait(s, "bm", DEPTH, 40);
	for (int i = 0; i < 40; i++) {
		assert_int_equal(ipc_recv_timed(s, "bm", out, sizeof(out),
		    TEST_WAIT_MS, NULL), sizeof(out));
		memset(kb, i, sizeof(kb));
		assert_memory_equal(out, kb, sizeof(kb));
	}

	/* Room for one: the broker refuses the second rather than wait. */
	box_create(s, "tiny", 1, -1);
	send_more_id(a, "tiny", 0, &ids[0]);
	send_more_id(a, "tiny", 1, &ids[1]);
	assert_int_equal(ipc_flush(a), 0);
	/* Its refusal comes before the answer to a later request. */
	assert_int_equal(box_depth(a, "tiny"), 1);
	memset(&fl, 0, sizeof(fl));
	assert_int_equal(ipc_send_failure(a, &fl), 0);
	assert_int_equal(fl.send_id, ids[1]);
	assert_int_equal(fl.error, EAGAIN);
	errno = 0;
	assert_int_equal(ipc_send_failure(a, &fl), -1);
	assert_int_equal(errno, EAGAIN);
	expect_seq(s, "tiny", TEST_WAIT_MS, 0);
	broker_stop(&f->b);
}

/* Batched, async and blocking sends on one connection keep their order,
 * a blocking send writes what was batched before it, and ipc_close
 * writes what is still batched. */
static void
test_send_more_keeps_order_with_other_sends_and_close_flushes(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *a, *s;
	struct seqmsg m;

	broker_start(&f->b, NULL);
	a = fix_open(f);
	s = fix_open(f);
	box_create(s, "ord", -1, -1);
	send_more_seq(a, "ord", 0);
	send_more_seq(a, "ord", 1);
	send_seq(a, "ord", 0, 2);
	send_more_seq(a, "ord", 3);
	m = seq_make(0, 4);
	assert_int_equal(ipc_send_async(a, "ord", &m, sizeof(m), NULL), 0);
	send_more_seq(a, "ord", 5);
	send_seq(a, "ord", 0, 6);
	send_more_seq(a, "ord", 7);
	send_more_seq(a, "ord", 8);
	/* The blocking send was answered after all before it. */
	assert_int_equal(box_depth(s, "ord"), 7);
	assert_int_equal(box_depth(s, "ord"), 7);
	fix_close(f, a);
	box_wait(s, "ord", DEPTH, 9);
	assert_int_equal(ipc_set_prefetch(s, 4), 0);
	for (uint64_t i = 0; i < 9; i++)
		expect_seq(s, "ord", TEST_WAIT_MS, i);
	expect_empty(s, "ord");

	/* A receive writes what is batched before it waits: here the
	 * receiver waits for its own batched messages. */
	send_more_seq(s, "ord", 9);
	send_more_seq(s, "ord", 10);
	expect_seq(s, "ord", TEST_WAIT_MS, 9);
	expect_seq(s, "ord", TEST_WAIT_MS, 10);
	assert_int_equal(ipc_set_prefetch(s, 0), 0);
	send_more_seq(s, "ord", 11);
	expect_seq(s, "ord", TEST_WAIT_MS, 11);
	broker_stop(&f->b);
}

/* === 6. volume =========================================================== */

struct vol_run;

struct vol_producer {
	struct vol_run *run;
	struct ipc_conn *c;
	uint32_t id;
	uint64_t fallbacks;		/* EAGAIN, sent blocking instead */
	char why[160];
};

struct vol_consumer {
	struct vol_run *run;
	struct ipc_conn *c;
	uint8_t *seen;			/* [producer * n + seq] */
	uint64_t next[VOL_PRODUCERS_MAX];
	uint64_t count, disorder, redelivered;
	char why[160];
};

struct vol_run {
	const char *box;
	uint32_t producers, consumers;
	uint64_t n;			/* per producer */
	unsigned prefetch;
	atomic_uint_fast64_t total;	/* handed to any consumer */
	int done[2];			/* a byte once total is all */
	struct vol_producer prod[VOL_PRODUCERS_MAX];
	struct vol_consumer cons[VOL_CONSUMERS_MAX];
};

static void *
vol_produce(void *arg)
{
	struct vol_producer *p = arg;
	struct vol_run *run = p->run;

	for (uint64_t i = 0; i < run->n; i++) {
		struct seqmsg m = seq_make(p->id, i);
		int r = ipc_send_more(p->c, run->box, &m, sizeof(m), NULL);

		if (r < 0 && errno == EAGAIN) {
			/* The library's buffer is full: wait for room. */
			p->fallbacks++;
			r = ipc_send_timed(p->c, run->box, &m, sizeof(m),
			    TEST_WAIT_MS, NULL);
		}
		if (r < 0) {
			snprintf(p->why, sizeof(p->why), "send #%llu: %s",
			    (unsigned long long)i, strerror(errno));
			return NULL;
		}
	}
	if (ipc_flush(p->c) < 0)
		snprintf(p->why, sizeof(p->why), "flush: %s",
		    strerror(errno));
	return NULL;
}

/* Take what the stream has whenever ipc_fd() says so, until every
 * message of the run was handed to one consumer or another. */
static void *
vol_consume(void *arg)
{
	struct vol_consumer *k = arg;
	struct vol_run *run = k->run;
	uint64_t all = run->n * run->producers;
	int fd;

	if (ipc_set_prefetch(k->c, run->prefetch) < 0 ||
	    (fd = ipc_fd(k->c)) < 0) {
		snprintf(k->why, sizeof(k->why), "setup: %s",
		    strerror(errno));
		return NULL;
	}
	for (;;) {
		struct pollfd pf[2] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = run->done[0], .events = POLLIN },
		};
		int r;

		/* The first pass opens the stream. */
		for (;;) {
			struct ipc_msg_info info;
			struct seqmsg m;
			ssize_t n = ipc_recv_timed(k->c, run->box, &m,
			    sizeof(m), 0, &info);

			if (n < 0 && errno == EAGAIN)
				break;
			if (n != (ssize_t)sizeof(m) || !seq_valid(&m) ||
			    m.producer >= run->producers || m.seq >= run->n) {
				snprintf(k->why, sizeof(k->why), "recv after "
				    "%llu: %s", (unsigned long long)k->count,
				    n < 0 ? strerror(errno) : "bad message");
				return NULL;
			}
			if (m.seq < k->next[m.producer])
				k->disorder++;
			k->next[m.producer] = m.seq + 1;
			if (k->seen[m.producer * run->n + m.seq] < UINT8_MAX)
				k->seen[m.producer * run->n + m.seq]++;
			if (info.flags & IPC_MSG_REDELIVERED)
				k->redelivered++;
			k->count++;
			if (atomic_fetch_add(&run->total, 1) + 1 == all &&
			    write(run->done[1], "x", 1) != 1) {
				snprintf(k->why, sizeof(k->why),
				    "write done: %s", strerror(errno));
				return NULL;
			}
		}
		do
			r = poll(pf, 2, TEST_WAIT_MS);
		while (r < 0 && errno == EINTR);
		if (r < 0) {
			snprintf(k->why, sizeof(k->why), "poll: %s",
			    strerror(errno));
			return NULL;
		}
		if (r == 0) {
			snprintf(k->why, sizeof(k->why), "nothing for %d ms "
			    "after %llu (all: %llu)", TEST_WAIT_MS,
			    (unsigned long long)k->count,
			    (unsigned long long)atomic_load(&run->total));
			return NULL;
		}
		/* All were handed out: none is left for this one. */
		if (pf[1].revents)
			return NULL;
	}
}

/* Producers with ipc_send_more, consumers with prefetch, each on its
 * own thread and connection; then every (producer, seq) must have been
 * handed out exactly once, and each consumer must have seen each
 * producer's messages in their order. */
static void
vol_run(struct fix *f, uint32_t producers, uint32_t consumers, uint64_t n,
    unsigned prefetch)
{
	struct vol_run *run = fix_alloc(f, sizeof(*run));
	int pt[VOL_PRODUCERS_MAX] = { 0 }, ct[VOL_CONSUMERS_MAX] = { 0 };
	struct ipc_conn *s;
	char why[256] = "";
	uint64_t fallbacks = 0;
	long long t0;

	broker_start(&f->b, NULL);
	s = fix_open(f);
	/* Async sends are refused, not held, when the queue is full: let
	 * the whole run fit. */
	box_create(s, "vol", (int64_t)(n * producers), -1);
	run->box = "vol";
	run->producers = producers;
	run->consumers = consumers;
	run->n = n;
	run->prefetch = prefetch;
	fix_pipe(f, run->done);
	for (uint32_t i = 0; i < consumers; i++) {
		run->cons[i].run = run;
		run->cons[i].c = fix_open(f);
		run->cons[i].seen = fix_alloc(f, n * producers);
	}
	for (uint32_t i = 0; i < producers; i++) {
		run->prod[i].run = run;
		run->prod[i].c = fix_open(f);
		run->prod[i].id = i;
	}
	t0 = test_now_ms();
	for (uint32_t i = 0; i < consumers; i++)
		ct[i] = fix_thread(f, vol_consume, &run->cons[i]);
	for (uint32_t i = 0; i < producers; i++)
		pt[i] = fix_thread(f, vol_produce, &run->prod[i]);
	/* Every wait in them is bounded: so are the joins.  No assertion
	 * before they are all joined. */
	for (uint32_t i = 0; i < producers; i++)
		fix_join(f, pt[i]);
	for (uint32_t i = 0; i < consumers; i++)
		fix_join(f, ct[i]);
	for (uint32_t i = 0; i < producers; i++) {
		fallbacks += run->prod[i].fallbacks;
		if (run->prod[i].why[0] != '\0' && why[0] == '\0')
			snprintf(why, sizeof(why), "producer %u: %s", i,
			    run->prod[i].why);
	}
	for (uint32_t i = 0; i < consumers; i++)
		if (run->cons[i].why[0] != '\0' && why[0] == '\0')
			snprintf(why, sizeof(why), "consumer %u: %s", i,
			    run->cons[i].why);
	if (why[0] != '\0')
		fail_msg("%s", why);
	print_message("%u x %llu messages to %u consumers in %lld ms "
	    "(%llu blocking fallbacks)\n", producers, (unsigned long long)n,
	    consumers, test_now_ms() - t0, (unsigned long long)fallbacks);
	for (uint32_t i = 0; i < consumers; i++) {
		print_message("consumer %u: %llu messages\n", i,
		    (unsigned long long)run->cons[i].count);
		assert_int_equal(run->cons[i].disorder, 0);
		assert_int_equal(run->cons[i].redelivered, 0);
	}
	for (uint32_t p = 0; p < producers; p++)
		for (uint64_t q = 0; q < n; q++) {
			unsigned times = 0;

			for (uint32_t i = 0; i < consumers; i++)
				times += run->cons[i].seen[p * n + q];
			if (times != 1)
				fail_msg("producer %u #%llu handed out %u "
				    "times", p, (unsigned long long)q, times);
		}
	assert_int_equal(atomic_load(&run->total), n * producers);
	assert_int_equal(box_depth(s, "vol"), 0);
	broker_stop(&f->b);
}

static void
test_volume_200k_one_producer_one_consumer_in_order(void **state)
{
	vol_run(*state, 1, 1, VOL_ONE_N, 256);
}

static void
test_volume_2_producers_2_consumers_exactly_once(void **state)
{
	vol_run(*state, 2, 2, VOL_TWO_N, 256);
}

/* The bytes of large message seq: its header, then a pattern of its
 * own. */
static void
large_fill(uint8_t *buf, size_t len, uint64_t seq)
{
	struct seqmsg m = seq_make(0, seq);

	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 31 + seq * 7 + (i >> 8));
	memcpy(buf, &m, sizeof(m));
}

/* Messages far larger in all than the socket and the broker buffer, to
 * a stream with credit for all of them: the broker holds the rest back
 * for the reader, and goes on as it reads; plain and allocating
 * receives both take from the stream. */
static void
test_large_messages_stream_past_buffers_in_order(void **state)
{
	struct fix *f = *state;
	/* Inline (the memfd path is off unless IPC_MEMFD_MIN is set), so
	 * the broker's output bound is what holds them back (a memfd
	 * message would weigh a few bytes there). */
	enum { LARGE = (64 << 10) - 256, NLARGE = 160 };
	struct ipc_conn *c, *s;
	struct ipc_msg_info info;
	uint8_t *want, *buf;
	uint32_t depth;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	s = fix_open(f);
	want = fix_alloc(f, LARGE);
	buf = fix_alloc(f, LARGE);
	box_create(s, "large", NLARGE, -1);
	for (uint64_t i = 0; i < NLARGE; i++) {
		large_fill(want, LARGE, i);
		assert_int_equal(ipc_send(s, "large", want, LARGE), 0);
	}
	assert_int_equal(ipc_set_prefetch(c, 1000), 0);
	for (uint64_t i = 0; i < NLARGE; i++) {
		void *got = NULL;
		ssize_t n;

		large_fill(want, LARGE, i);
		if (i % 2 == 0) {
			memset(buf, 0, LARGE);
			n = ipc_recv_timed(c, "large", buf, LARGE,
			    TEST_WAIT_MS, &info);
			got = buf;
		} else {
			n = ipc_recv_alloc(c, "large", &got, TEST_WAIT_MS,
			    &info);
		}
		if (n != LARGE) {
			if (got != buf)
				free(got);
			fail_msg("#%llu: %zd (%s)", (unsigned long long)i,
			    n, n < 0 ? strerror(errno) : "wrong length");
		}
		if (memcmp(got, want, LARGE) != 0) {
			if (got != buf)
				free(got);
			fail_msg("#%llu: wrong bytes", (unsigned long long)i);
		}
		if (got != buf)
			free(got);
		if (i == 0) {
			/* 10 MiB of credit, yet only what the buffers
			 * take has left the mailbox. */
			depth = box_depth(s, "large");
			if (depth < NLARGE / 2)
				fail_msg("the broker pushed %u of 64 KiB "
				    "ahead of a reader that took one",
				    NLARGE - depth);
		}
	}
	expect_empty(c, "large");
	assert_int_equal(box_depth(c, "large"), 0);
	broker_stop(&f->b);
}

/* === 7. large payloads in sealed memfds ================================== */

/*
 * With IPC_MEMFD_MIN set when a connection is opened, its sends of at
 * least that many bytes go as a sealed memfd passed with the SEND frame
 * (SCM_RIGHTS); the broker keeps the descriptor while the message is
 * queued or delivered and not acknowledged, and passes a copy of it
 * with the DELIVER.  What the broker holds is read from /proc/PID/fd:
 * one more descriptor per memfd message it keeps.
 */

#define MEMFD_MIN	65536u
#define MEMFD_MIN_TEXT	"65536"
#define MEMFD_BIG	(1u << 20)
/* The async run: messages, and the size of each. */
#define MF_ASYNC_N	200u
#define MF_ASYNC_LEN	(128u << 10)

/* A connection opened with $IPC_MEMFD_MIN = min (the library reads it in
 * ipc_open()); the variable is as it was before once ipc_open() has
 * returned, whatever happens next. */
static struct ipc_conn *
fix_open_memfd(struct fix *f, const char *min)
{
	const char *was = getenv("IPC_MEMFD_MIN");
	char *saved = was != NULL ? strdup(was) : NULL;
	struct ipc_conn *c;
	int err;

	assert_true(f->nconns < FIX_MAX);
	if (was != NULL && saved == NULL)
		fail_msg("strdup: out of memory");
	if (setenv("IPC_MEMFD_MIN", min, 1) < 0) {
		free(saved);
		fail_msg("setenv: %s", strerror(errno));
	}
	c = ipc_open(f->b.where);
	err = errno;
	if (saved != NULL)
		setenv("IPC_MEMFD_MIN", saved, 1);
	else
		unsetenv("IPC_MEMFD_MIN");
	free(saved);
	if (c == NULL)
		fail_msg("ipc_open %s with IPC_MEMFD_MIN=%s: %s", f->b.where,
		    min, strerror(err));
	f->conns[f->nconns++] = c;
	return c;
}

/* A descriptor the teardown closes (unless fix_fd_close did). */
static int
fix_fd(struct fix *f, int fd)
{
	assert_true(fd >= 0);
	assert_true(f->nfds < FIX_MAX);
	f->fds[f->nfds++] = fd;
	return fd;
}

static void
fix_fd_close(struct fix *f, int fd)
{
	for (int i = 0; i < f->nfds; i++)
		if (f->fds[i] == fd) {
			f->fds[i] = f->fds[--f->nfds];
			break;
		}
	close(fd);
}

/* The descriptors process pid has open (0: this one), or -1. */
static int
fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (pid > 0)
		snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/fd");
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* The broker's descriptors now; fail when they cannot be counted. */
static int
broker_fds(struct fix *f)
{
	int n = fd_count(f->b.proc.pid);

	if (n < 0)
		fail_msg("/proc/%ld/fd: %s", (long)f->b.proc.pid,
		    strerror(errno));
	return n;
}

/* Look until the broker holds want descriptors; fail at the deadline.
 * Each look after the first waits for a round trip on w, so that the
 * broker moves on between looks. */
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
		(void)clients_of(w, 0);
	}
	fail_msg("%s: the broker holds %d descriptors, expected %d", what, n,
	    want);
}

/* A memfd of len bytes of pattern tag, with seals added (0: none).
 * The teardown closes it. */
static int
test_memfd(struct fix *f, size_t len, unsigned tag, int seals)
{
	uint8_t chunk[4096];
	size_t off = 0;
	int fd = memfd_create("test-stream", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		fail_msg("memfd_create: %s", strerror(errno));
	fix_fd(f, fd);
	while (off < len) {
		size_t n = len - off < sizeof(chunk) ? len - off :
		    sizeof(chunk);

		for (size_t i = 0; i < n; i++)
			chunk[i] = (uint8_t)((off + i) * 13 + tag * 101 + 1);
		if (write_full(fd, chunk, n) < 0)
			fail_msg("write memfd: %s", strerror(errno));
		off += n;
	}
	if (seals != 0 && fcntl(fd, F_ADD_SEALS, seals) < 0)
		fail_msg("F_ADD_SEALS: %s", strerror(errno));
	return fd;
}

/* Do the len bytes at p hold what test_memfd(len, tag) wrote? */
static int
memfd_bytes_ok(const void *p, size_t len, unsigned tag)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != (uint8_t)(i * 13 + tag * 101 + 1))
			return 0;
	return 1;
}

#define MEMFD_SEALED	(F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | \
			    F_SEAL_SEAL)

/* A well-behaved client still gets its messages through. */
static void
good_round(struct ipc_conn *g, const char *box, uint64_t seq)
{
	send_seq(g, box, 0, seq);
	expect_seq(g, box, TEST_WAIT_MS, seq);
}

/* --- raw connections: frames encoded here, descriptors sent by hand ----- */

static int
raw_open(struct fix *f)
{
	int fd = connectSocketUnix(f->b.path);

	if (fd < 0)
		fail_msg("connect %s: %s", f->b.path, strerror(errno));
	return fix_fd(f, fd);
}

/* Write frame fr, with descriptor pass (-1: none) on its first byte. */
static void
raw_put(int fd, const struct wire_frame *fr, int pass)
{
	uint8_t buf[4096];
	long n = wire_encode(fr, buf, sizeof(buf));
	int w = 0;

	assert_true(n > 0);
	if (pass >= 0) {
		w = writeSomeSocketFd(fd, buf, (int)n, pass);
		if (w <= 0)
			fail_msg("send with a descriptor: %s", strerror(errno));
	}
	if (w < n)
		assert_int_equal(writeSocket(fd, buf + w, (int)n - w),
		    (int)n - w);
}

/* Read n bytes, each wait bounded: n, 0 on EOF (or a reset) before the
 * first byte, -1 otherwise.  Descriptors that come with them are
 * counted in *nfds (may be NULL) and closed. */
static int
raw_get_bytes(int fd, uint8_t *buf, size_t n, int *nfds)
{
	size_t got = 0;

	while (got < n) {
		int fds[8], k = 8, r;

		if (test_wait_readable(fd, TEST_WAIT_MS) != 1)
			return -1;
		r = readSocketFds(fd, buf + got, (int)(n - got), fds, &k);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return got == 0 ? 0 : -1;
		if (r < 0)
			return -1;
		for (int i = 0; i < k; i++)
			close(fds[i]);
		if (nfds != NULL)
			*nfds += k;
		got += (size_t)r;
	}
	return (int)n;
}

/* The next frame, decoded into fr (borrowing buf): 1, 0 when the broker
 * closed, -1 on a timeout or a frame that does not decode.  Descriptors
 * passed with it are counted in *nfds (may be NULL), and closed. */
static int
raw_get_fds(int fd, uint8_t *buf, size_t cap, struct wire_frame *fr,
    int *nfds)
{
	uint32_t len;
	int r;

	if ((r = raw_get_bytes(fd, buf, WIRE_HDR_LEN, nfds)) <= 0)
		return r;
	len = wire_get32(buf);
	if (len < WIRE_HDR_LEN || len > cap)
		return -1;
	if (len > WIRE_HDR_LEN && raw_get_bytes(fd, buf + WIRE_HDR_LEN,
	    len - WIRE_HDR_LEN, nfds) <= 0)
		return -1;
	return wire_decode(buf, len, fr, NULL) == 0 ? 1 : -1;
}

static int
raw_get(int fd, uint8_t *buf, size_t cap, struct wire_frame *fr)
{
	return raw_get_fds(fd, buf, cap, fr, NULL);
}

/* The next frame must be a type answer to request id. */
static void
raw_expect(int fd, uint16_t type, uint64_t id, struct wire_frame *fr,
    uint8_t *buf, size_t cap)
{
	int r = raw_get(fd, buf, cap, fr);

	if (r != 1)
		fail_msg("expected %s for #%llu: %s", wire_type_name(type),
		    (unsigned long long)id, r == 0 ? "the broker closed" :
		    "nothing, or a bad frame");
	if (fr->type != type) {
		if (fr->type == WIRE_ERROR)
			fail_msg("expected %s for #%llu, got ERROR %u (%.*s)",
			    wire_type_name(type), (unsigned long long)id,
			    fr->b.error.code, (int)fr->b.error.text.len,
			    (const char *)fr->b.error.text.p);
		fail_msg("expected %s for #%llu, got %s", wire_type_name(type),
		    (unsigned long long)id, wire_type_name(fr->type));
	}
	assert_int_equal(fr->id, id);
}

/* The next frame must be ERROR code for request id; returns its aux. */
static uint32_t
raw_expect_error(int fd, uint32_t code, uint64_t id)
{
	uint8_t buf[4096];
	struct wire_frame fr;

	raw_expect(fd, WIRE_ERROR, id, &fr, buf, sizeof(buf));
	if (fr.b.error.code != code)
		fail_msg("#%llu: ERROR %u (%.*s), expected %u",
		    (unsigned long long)id, fr.b.error.code,
		    (int)fr.b.error.text.len, (const char *)fr.b.error.text.p,
		    code);
	return fr.b.error.aux;
}

/* The broker has closed: EOF (or a reset), not another frame. */
static void
raw_expect_closed(int fd)
{
	uint8_t buf[4096];
	struct wire_frame fr;
	int r = raw_get(fd, buf, sizeof(buf), &fr);

	if (r == 1)
		fail_msg("expected the broker to close; it sent %s (id %llu)",
		    wire_type_name(fr.type), (unsigned long long)fr.id);
	if (r != 0)
		fail_msg("expected the broker to close; it did not in %d ms",
		    TEST_WAIT_MS);
}

static void
raw_hello(int fd)
{
	struct wire_frame fr = { .type = WIRE_HELLO, .id = 1 };
	uint8_t buf[4096];

	fr.b.hello.magic = WIRE_MAGIC;
	fr.b.hello.version_min = WIRE_VERSION;
	fr.b.hello.version_max = WIRE_VERSION;
	raw_put(fd, &fr, -1);
	raw_expect(fd, WIRE_WELCOME, 1, &fr, buf, sizeof(buf));
}

/* A blocking SEND to box whose payload is the memfd passed with it
 * (payload: what goes inline besides, which must be nothing). */
static struct wire_frame
raw_fd_send(uint64_t id, const char *box, const void *payload, size_t len)
{
	struct wire_frame fr = { .type = WIRE_SEND, .id = id };

	fr.b.send.timeout_ms = 0;
	fr.b.send.flags = WIRE_SEND_FD;
	fr.b.send.dest = wire_str(box);
	fr.b.send.payload.p = payload;
	fr.b.send.payload.len = len;
	return fr;
}

/* A request that claims no descriptor (MBOX_STAT of a mailbox that is
 * not there: answered with ERROR NOENT). */
static struct wire_frame
raw_stat_missing(uint64_t id)
{
	struct wire_frame fr = { .type = WIRE_MBOX_STAT, .id = id };

	fr.b.name.name = wire_str("no-such-box");
	return fr;
}

/* Blocking sends, 1 MiB and around the threshold, to receivers with and
 * without prefetch, plain and allocating: the bytes come out as they
 * went in; while a memfd message is queued or unacknowledged the broker
 * holds one descriptor more, and none once it is acknowledged; below
 * the threshold, or with the variable at 0, no descriptor is held. */
static void
test_memfd_blocking_send_bytes_identical_broker_fd_until_ack(void **state)
{
	struct fix *f = *state;
	static const size_t lens[] = { MEMFD_BIG, MEMFD_MIN, MEMFD_MIN - 1 };
	struct ipc_conn *s, *off, *r[2], *w;
	struct ipc_msg_info info;
	uint8_t *want, *buf;
	uint64_t seq = 0;
	int base, self;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	off = fix_open_memfd(f, "0");
	r[0] = fix_open(f);
	r[1] = fix_open(f);
	w = fix_open(f);
	box_create(w, "mf0", -1, -1);
	box_create(w, "mf1", -1, -1);
	assert_int_equal(ipc_set_prefetch(r[1], 16), 0);
	want = fix_alloc(f, MEMFD_BIG);
	buf = fix_alloc(f, MEMFD_BIG);
	base = broker_fds(f);
	self = fd_count(0);
	assert_true(self > 0);

	/* Each size to each receiver (plain, prefetch), each way of
	 * receiving (into a buffer, allocating). */
	for (unsigned t = 0; t < 4 * sizeof(lens) / sizeof(lens[0]); t++) {
		size_t len = lens[t / 4];
		int k = (t / 2) % 2, alloc = t % 2, by_fd = len >= MEMFD_MIN;
		const char *box = k ? "mf1" : "mf0";
		char what[128];
		void *got = NULL;
		ssize_t n;
		int ok;

		snprintf(what, sizeof(what), "%zu bytes, %s receive%s", len,
		    alloc ? "allocating" : "plain", k ? " with prefetch" : "");
		large_fill(want, len, seq);
		if (ipc_send(s, box, want, len) < 0)
			fail_msg("%s: send: %s", what, strerror(errno));
		/* Queued (or pushed to the stream, not acknowledged): its
		 * memfd is held. */
		broker_fds_wait(f, w, base + by_fd, what);
		memset(&info, 0, sizeof(info));
		if (alloc) {
			n = ipc_recv_alloc(r[k], box, &got, TEST_WAIT_MS,
			    &info);
		} else {
			memset(buf, 0, len);
			got = buf;
			n = ipc_recv_timed(r[k], box, buf, MEMFD_BIG,
			    TEST_WAIT_MS, &info);
		}
		ok = n == (ssize_t)len && got != NULL &&
		    memcmp(got, want, len) == 0;
		if (alloc)
			free(got);
		if (!ok)
			fail_msg("%s: %zd (%s)", what, n, n < 0 ?
			    strerror(errno) : n == (ssize_t)len ?
			    "wrong bytes" : "wrong length");
		assert_int_equal(info.len, len);
		assert_string_equal(info.source, box);
		assert_int_equal(info.pid, getpid());
		assert_int_equal(info.flags, 0);
		/* The acknowledgement rides with this request, answered
		 * once the broker has dropped the message. */
		assert_int_equal(box_depth(r[k], box), 0);
		broker_fds_wait(f, w, base, what);
		/* The library closed the memfd it made and the one it
		 * got. */
		if (fd_count(0) != self)
			fail_msg("%s: this process holds %d descriptors, had "
			    "%d", what, fd_count(0), self);
		seq++;
	}

	/* The variable at 0: large payloads go inline. */
	large_fill(want, MEMFD_BIG, seq);
	assert_int_equal(ipc_send(off, "mf0", want, MEMFD_BIG), 0);
	assert_int_equal(box_depth(w, "mf0"), 1);
	assert_int_equal(broker_fds(f), base);
	memset(buf, 0, MEMFD_BIG);
	assert_int_equal(ipc_recv_timed(r[0], "mf0", buf, MEMFD_BIG,
	    TEST_WAIT_MS, NULL), MEMFD_BIG);
	assert_memory_equal(buf, want, MEMFD_BIG);
	assert_int_equal(box_depth(r[0], "mf0"), 0);
	assert_int_equal(fd_count(0), self);
	broker_stop(&f->b);
}

/* The async sender: half by ipc_send_async, half by ipc_send_more, then
 * ipc_flush; where the socket is full, ipc_flush waits for room and the
 * send is tried again. */
struct mf_sender {
	struct ipc_conn *c;
	const char *box;
	uint8_t *buf;
	uint64_t fallbacks;
	char why[160];
};

static void *
mf_send_main(void *arg)
{
	struct mf_sender *p = arg;

	for (uint64_t i = 0; i < MF_ASYNC_N; i++) {
		int more = i >= MF_ASYNC_N / 2, r;

		large_fill(p->buf, MF_ASYNC_LEN, i);
		for (int tries = 0;; tries++) {
			r = more ? ipc_send_more(p->c, p->box, p->buf,
			    MF_ASYNC_LEN, NULL) : ipc_send_async(p->c, p->box,
			    p->buf, MF_ASYNC_LEN, NULL);
			if (r == 0 || errno != EAGAIN || tries > 0)
				break;
			p->fallbacks++;
			if (ipc_flush(p->c) < 0)
				break;
		}
		if (r < 0) {
			snprintf(p->why, sizeof(p->why), "%s #%llu: %s",
			    more ? "send_more" : "send_async",
			    (unsigned long long)i, strerror(errno));
			return NULL;
		}
	}
	if (ipc_flush(p->c) < 0)
		snprintf(p->why, sizeof(p->why), "flush: %s",
		    strerror(errno));
	return NULL;
}

/* 200 async and batched memfd sends of 128 KiB to a receiver with
 * prefetch 16: all arrive, in order, with their bytes; nothing is
 * reported failed, and once all are acknowledged the broker holds none
 * of their descriptors.  The sender stays (connection open, process
 * alive) until the receiver has them all. */
static void
test_memfd_async_and_batched_sends_arrive_in_order(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r, *w;
	struct mf_sender *sp;
	struct ipc_send_failure fl;
	uint8_t *want, *buf;
	char why[200] = "";
	int base, self, t;
	long long t0;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	r = fix_open(f);
	w = fix_open(f);
	/* Async sends are refused, not held, when the queue is full: let
	 * the whole run fit. */
	box_create(w, "mfa", MF_ASYNC_N, -1);
	assert_int_equal(ipc_set_prefetch(r, 16), 0);
	sp = fix_alloc(f, sizeof(*sp));
	sp->c = s;
	sp->box = "mfa";
	sp->buf = fix_alloc(f, MF_ASYNC_LEN);
	want = fix_alloc(f, MF_ASYNC_LEN);
	buf = fix_alloc(f, MF_ASYNC_LEN);
	base = broker_fds(f);
	self = fd_count(0);
	assert_true(self > 0);

	t0 = test_now_ms();
	t = fix_thread(f, mf_send_main, sp);
	for (uint64_t i = 0; i < MF_ASYNC_N && why[0] == '\0'; i++) {
		struct ipc_msg_info info;
		void *got = NULL;
		ssize_t n;

		large_fill(want, MF_ASYNC_LEN, i);
		memset(&info, 0, sizeof(info));
		if (i % 3 == 2) {
			n = ipc_recv_alloc(r, "mfa", &got, TEST_WAIT_MS, &info);
		} else {
			memset(buf, 0, MF_ASYNC_LEN);
			got = buf;
			n = ipc_recv_timed(r, "mfa", buf, MF_ASYNC_LEN,
			    TEST_WAIT_MS, &info);
		}
		if (n < 0)
			snprintf(why, sizeof(why), "recv #%llu: %s",
			    (unsigned long long)i, strerror(errno));
		else if (n != (ssize_t)MF_ASYNC_LEN || info.len != MF_ASYNC_LEN)
			snprintf(why, sizeof(why), "#%llu: %zd bytes",
			    (unsigned long long)i, n);
		else if (memcmp(got, want, MF_ASYNC_LEN) != 0) {
			struct seqmsg m;

			memcpy(&m, got, sizeof(m));
			snprintf(why, sizeof(why), "#%llu: wrong bytes (%s "
			    "#%llu)", (unsigned long long)i, seq_valid(&m) ?
			    "message" : "not even a header of a message",
			    (unsigned long long)m.seq);
		}
		if (got != buf)
			free(got);
	}
	/* Its calls end: it wrote all, or the broker closed. */
	fix_join(f, t);
	if (sp->why[0] != '\0')
		fail_msg("sender: %s", sp->why);
	if (why[0] != '\0')
		fail_msg("receiver: %s", why);
	print_message("%u memfd messages of %u KiB in %lld ms (%llu waits "
	    "for room)\n", MF_ASYNC_N, MF_ASYNC_LEN >> 10,
	    test_now_ms() - t0, (unsigned long long)sp->fallbacks);
	expect_empty(r, "mfa");
	assert_int_equal(box_depth(r, "mfa"), 0);
	/* A refusal would have come before this answer. */
	assert_int_equal(box_depth(s, "mfa"), 0);
	errno = 0;
	assert_int_equal(ipc_send_failure(s, &fl), -1);
	assert_int_equal(errno, EAGAIN);
	broker_fds_wait(f, w, base, "all acknowledged");
	assert_int_equal(fd_count(0), self);
	broker_stop(&f->b);
}

/* What a peek saw. */
struct mf_peek {
	unsigned n;
	size_t len[4];
	int good[4];
	char source[4][IPC_ADDR_MAX];
};

static int
mf_peek_cb(const struct ipc_msg_info *info, const void *data, void *arg)
{
	struct mf_peek *p = arg;

	if (p->n < 4) {
		p->len[p->n] = info->len;
		snprintf(p->source[p->n], sizeof(p->source[p->n]), "%s",
		    info->source);
		if (p->n == 0) {
			p->good[0] = info->len == MEMFD_BIG &&
			    memfd_bytes_ok(data, MEMFD_BIG, 7);
		} else if (info->len == sizeof(struct seqmsg)) {
			struct seqmsg m;

			memcpy(&m, data, sizeof(m));
			p->good[p->n] = seq_valid(&m) && m.seq == p->n;
		}
	}
	p->n++;
	return 0;
}

/* A peek at a mailbox holding a memfd message shows its bytes (inline),
 * takes nothing, and leaves the broker's descriptors as they were; the
 * message is then received whole. */
static void
test_memfd_peek_shows_bytes_inline(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r, *w;
	struct mf_peek pk;
	uint8_t *want, *buf;
	int base, fd;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	r = fix_open(f);
	w = fix_open(f);
	box_create(w, "pk", -1, -1);
	want = fix_alloc(f, MEMFD_BIG);
	buf = fix_alloc(f, MEMFD_BIG);
	/* The payload as test_memfd() writes it, sent by the library. */
	fd = test_memfd(f, MEMFD_BIG, 7, 0);
	assert_int_equal(pread(fd, want, MEMFD_BIG, 0), MEMFD_BIG);
	fix_fd_close(f, fd);
	base = broker_fds(f);
	assert_int_equal(ipc_send(s, "pk", want, MEMFD_BIG), 0);
	send_seq(s, "pk", 0, 1);
	broker_fds_wait(f, w, base + 1, "a memfd message queued");

	for (int i = 0; i < 2; i++) {
		memset(&pk, 0, sizeof(pk));
		/* From a plain connection, then from the memfd sender. */
		if (ipc_mbox_peek(i == 0 ? w : s, "pk", 10, mf_peek_cb,
		    &pk) < 0)
			fail_msg("peek: %s", strerror(errno));
		assert_int_equal(pk.n, 2);
		assert_int_equal(pk.len[0], MEMFD_BIG);
		if (!pk.good[0])
			fail_msg("peek %d: the memfd message's bytes are "
			    "wrong", i);
		assert_string_equal(pk.source[0], "pk");
		assert_int_equal(pk.len[1], sizeof(struct seqmsg));
		assert_true(pk.good[1]);
		assert_int_equal(box_depth(w, "pk"), 2);
		broker_fds_wait(f, w, base + 1, "after a peek");
	}
	/* Only the first one. */
	memset(&pk, 0, sizeof(pk));
	assert_int_equal(ipc_mbox_peek(w, "pk", 1, mf_peek_cb, &pk), 0);
	assert_int_equal(pk.n, 1);
	assert_true(pk.good[0]);

	/* On the wire: the bytes inline, no descriptor passed. */
	{
		struct wire_frame fr = { .type = WIRE_PEEK, .id = 2 };
		size_t cap = MEMFD_BIG + WIRE_OVERHEAD_MAX + WIRE_HDR_LEN;
		uint8_t *rbuf = fix_alloc(f, cap);
		int raw = raw_open(f), nfds = 0;

		raw_hello(raw);
		fr.b.peek.max_count = 10;
		fr.b.peek.name = wire_str("pk");
		raw_put(raw, &fr, -1);
		for (uint64_t i = 0; i < 2; i++) {
			if (raw_get_fds(raw, rbuf, cap, &fr, &nfds) != 1)
				fail_msg("raw peek: no DELIVER #%llu",
				    (unsigned long long)i);
			if (fr.type != WIRE_DELIVER)
				fail_msg("raw peek: %s, expected DELIVER",
				    wire_type_name(fr.type));
			assert_int_equal(fr.id, 2);
			assert_int_equal(fr.b.deliver.flags & WIRE_DELIVER_FD,
			    0);
			if (i == 0 && (fr.b.deliver.payload.len != MEMFD_BIG ||
			    memcmp(fr.b.deliver.payload.p, want,
			    MEMFD_BIG) != 0))
				fail_msg("raw peek: %zu bytes inline, not the "
				    "message's %u", fr.b.deliver.payload.len,
				    MEMFD_BIG);
		}
		raw_expect(raw, WIRE_OK, 2, &fr, rbuf, cap);
		assert_int_equal(nfds, 0);
		fix_fd_close(f, raw);
	}

	memset(buf, 0, MEMFD_BIG);
	assert_int_equal(ipc_recv_timed(r, "pk", buf, MEMFD_BIG, TEST_WAIT_MS,
	    NULL), MEMFD_BIG);
	assert_memory_equal(buf, want, MEMFD_BIG);
	expect_seq(r, "pk", TEST_WAIT_MS, 1);
	assert_int_equal(box_depth(r, "pk"), 0);
	broker_fds_wait(f, w, base, "all acknowledged");
	memset(&pk, 0, sizeof(pk));
	assert_int_equal(ipc_mbox_peek(w, "pk", 10, mf_peek_cb, &pk), 0);
	assert_int_equal(pk.n, 0);
	broker_stop(&f->b);
}

/* Send frame fr with count copies of descriptor pass on it (one
 * sendmsg). */
static void
raw_put_many(int fd, const struct wire_frame *fr, int pass, int count)
{
	enum { MANY = 9 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * MANY)];
	} ctl;
	uint8_t buf[4096];
	long n = wire_encode(fr, buf, sizeof(buf));
	struct iovec iov = { .iov_base = buf, .iov_len = (size_t)n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = ctl.buf,
	    .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count) };
	struct cmsghdr *cm;
	ssize_t w;

	assert_true(n > 0);
	assert_true(count > 0 && count <= MANY);
	memset(&ctl, 0, sizeof(ctl));
	cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
	for (int i = 0; i < count; i++)
		memcpy(CMSG_DATA(cm) + i * sizeof(int), &pass, sizeof(int));
	do
		w = sendmsg(fd, &m, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		fail_msg("sendmsg with %d descriptors: %s", count,
		    strerror(errno));
	if (w < n)
		assert_int_equal(writeSocket(fd, buf + w, (int)(n - w)),
		    (int)(n - w));
}

/* A client that breaks the memfd rules by hand: a memfd SEND with no
 * descriptor is a protocol violation (ERROR PROTO, closed); a descriptor
 * that is not a memfd sealed against writes and resizing, or one with
 * an inline payload beside it, is refused with EINVAL (too large:
 * EMSGSIZE) and nothing is queued, the connection going on; more than 8
 * unclaimed descriptors close the connection.  The broker's descriptors
 * come back to what they were each time, and a well-behaved client
 * goes on all along. */
static void
test_memfd_hostile_client_refused_broker_fds_back_to_baseline(void **state)
{
	struct fix *f = *state;
	static const char *const opts[] = { "--max-msg-size", "65536", NULL };
	struct {
		const char *what;
		int kind;		/* 0 memfd, 1 pipe, 2 file, 3 null */
		size_t len;
		int seals;
		int inline_bytes;
		uint32_t code;
	} bad[] = {
		{ "an unsealed memfd", 0, 1000, 0, 0, WIRE_E_INVAL },
		{ "a memfd sealed against writes only", 0, 1000,
		    F_SEAL_WRITE, 0, WIRE_E_INVAL },
		{ "a memfd that may still grow", 0, 1000,
		    F_SEAL_WRITE | F_SEAL_SHRINK, 0, WIRE_E_INVAL },
		{ "a memfd that may still shrink", 0, 1000,
		    F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SEAL, 0,
		    WIRE_E_INVAL },
		{ "a sealed memfd with an inline payload too", 0, 1000,
		    MEMFD_SEALED, 1, WIRE_E_INVAL },
		{ "a sealed memfd over the size limit", 0, 65537,
		    MEMFD_SEALED, 0, WIRE_E_MSGSIZE },
		{ "a pipe", 1, 0, 0, 0, WIRE_E_INVAL },
		{ "a regular file in /tmp", 2, 0, 0, 0, WIRE_E_INVAL },
		{ "/dev/null", 3, 0, 0, 0, WIRE_E_INVAL },
	};
	struct ipc_conn *g;
	struct wire_frame fr;
	uint8_t rbuf[4096];
	uint64_t gseq = 0, id = 10;
	int base, raw, p[2], pass;

	broker_start(&f->b, opts);
	g = fix_open(f);
	box_create(g, "hb", -1, -1);
	good_round(g, "hb", gseq++);
	fix_pipe(f, p);
	base = broker_fds(f);

	/* (a) A memfd SEND with no descriptor. */
	raw = raw_open(f);
	raw_hello(raw);
	broker_fds_wait(f, g, base + 1, "a raw connection");
	fr = raw_fd_send(id, "hb", NULL, 0);
	raw_put(raw, &fr, -1);
	raw_expect_error(raw, WIRE_E_PROTO, id++);
	raw_expect_closed(raw);
	fix_fd_close(f, raw);
	broker_fds_wait(f, g, base, "(a) closed");
	assert_int_equal(box_depth(g, "hb"), 0);
	good_round(g, "hb", gseq++);

	/* (b), (c) Descriptors the broker refuses, one connection for
	 * all: each is closed at once, nothing queued, and the next
	 * memfd SEND does not claim it. */
	raw = raw_open(f);
	raw_hello(raw);
	broker_fds_wait(f, g, base + 1, "a raw connection");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char path[] = "/tmp/test-stream-XXXXXX";
		uint32_t aux;

		switch (bad[i].kind) {
		case 0:
			pass = test_memfd(f, bad[i].len, (unsigned)i,
			    bad[i].seals);
			break;
		case 1:
			pass = fix_fd(f, dup(p[0]));
			break;
		case 2:
			pass = fix_fd(f, mkstemp(path));
			assert_int_equal(unlink(path), 0);
			assert_int_equal(write_full(pass, "regular", 7), 0);
			break;
		default:
			pass = fix_fd(f, open("/dev/null", O_RDONLY |
			    O_CLOEXEC));
			break;
		}
		fr = raw_fd_send(id, "hb", "x", bad[i].inline_bytes ? 1 : 0);
		raw_put(raw, &fr, pass);
		fix_fd_close(f, pass);
		aux = raw_expect_error(raw, bad[i].code, id++);
		print_message("%s: refused\n", bad[i].what);
		if (bad[i].code == WIRE_E_MSGSIZE)
			assert_int_equal(aux, 65536);
		assert_int_equal(box_depth(g, "hb"), 0);
		broker_fds_wait(f, g, base + 1, bad[i].what);
	}
	/* The connection goes on: good memfd SENDs are taken, each with
	 * its own descriptor (the largest the broker allows, too). */
	for (unsigned i = 0; i < 2; i++) {
		size_t len = i == 0 ? 2000 : 65536;
		void *got = NULL;
		ssize_t n;
		int ok;

		pass = test_memfd(f, len, 99 + i, MEMFD_SEALED);
		fr = raw_fd_send(id, "hb", NULL, 0);
		raw_put(raw, &fr, pass);
		fix_fd_close(f, pass);
		raw_expect(raw, WIRE_SENT, id++, &fr, rbuf, sizeof(rbuf));
		assert_int_equal(box_depth(g, "hb"), 1);
		broker_fds_wait(f, g, base + 2, "a good memfd queued");
		n = ipc_recv_alloc(g, "hb", &got, TEST_WAIT_MS, NULL);
		ok = n == (ssize_t)len && memfd_bytes_ok(got, len, 99 + i);
		free(got);
		if (!ok)
			fail_msg("the good memfd of %zu bytes: %zd (%s)", len,
			    n, n < 0 ? strerror(errno) : "not its bytes");
		assert_int_equal(box_depth(g, "hb"), 0);
		broker_fds_wait(f, g, base + 1, "the good memfd acknowledged");
	}
	fix_fd_close(f, raw);
	broker_fds_wait(f, g, base, "(b), (c) closed");
	good_round(g, "hb", gseq++);

	/* (d) Nine descriptors on one request that claims none. */
	raw = raw_open(f);
	raw_hello(raw);
	broker_fds_wait(f, g, base + 1, "a raw connection");
	fr = raw_stat_missing(id++);
	raw_put_many(raw, &fr, p[0], 9);
	raw_expect_closed(raw);
	fix_fd_close(f, raw);
	broker_fds_wait(f, g, base, "(d) nine at once, closed");
	good_round(g, "hb", gseq++);

	/* (d) One by one: eight are kept, the ninth closes. */
	raw = raw_open(f);
	raw_hello(raw);
	broker_fds_wait(f, g, base + 1, "a raw connection");
	for (int i = 0; i < 8; i++) {
		fr = raw_stat_missing(id);
		raw_put(raw, &fr, p[0]);
		raw_expect_error(raw, WIRE_E_NOENT, id++);
	}
	broker_fds_wait(f, g, base + 1 + 8, "eight unclaimed");
	fr = raw_stat_missing(id++);
	raw_put(raw, &fr, p[0]);
	raw_expect_closed(raw);
	fix_fd_close(f, raw);
	broker_fds_wait(f, g, base, "(d) one by one, closed");
	assert_int_equal(box_depth(g, "hb"), 0);
	good_round(g, "hb", gseq++);
	broker_stop(&f->b);
}

/* Descriptors sent ahead, with requests that claim none, wait for the
 * memfd SENDs after them, which take them oldest first; eight may wait,
 * and claiming makes room again. */
static void
test_memfd_descriptors_sent_ahead_claimed_oldest_first(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *g;
	struct wire_frame fr;
	uint8_t rbuf[4096], *out;
	uint64_t id = 10;
	int base, raw;

	broker_start(&f->b, NULL);
	g = fix_open(f);
	box_create(g, "ahead", -1, -1);
	out = fix_alloc(f, 4096);
	base = broker_fds(f);
	raw = raw_open(f);
	raw_hello(raw);
	broker_fds_wait(f, g, base + 1, "a raw connection");

	/* Eight memfds, 1000 + 100 i bytes of pattern i, ahead. */
	for (unsigned i = 0; i < 8; i++) {
		int pass = test_memfd(f, 1000 + 100 * i, i, MEMFD_SEALED);

		fr = raw_stat_missing(id);
		raw_put(raw, &fr, pass);
		fix_fd_close(f, pass);
		raw_expect_error(raw, WIRE_E_NOENT, id++);
	}
	broker_fds_wait(f, g, base + 1 + 8, "eight ahead");
	for (unsigned i = 0; i < 8; i++) {
		fr = raw_fd_send(id, "ahead", NULL, 0);
		raw_put(raw, &fr, -1);
		raw_expect(raw, WIRE_SENT, id++, &fr, rbuf, sizeof(rbuf));
	}
	/* Claimed: room for more; the ninth rides with its SEND. */
	{
		int pass = test_memfd(f, 1000 + 100 * 8, 8, MEMFD_SEALED);

		fr = raw_fd_send(id, "ahead", NULL, 0);
		raw_put(raw, &fr, pass);
		fix_fd_close(f, pass);
		raw_expect(raw, WIRE_SENT, id++, &fr, rbuf, sizeof(rbuf));
	}
	assert_int_equal(box_depth(g, "ahead"), 9);
	broker_fds_wait(f, g, base + 1 + 9, "nine queued");
	for (unsigned i = 0; i < 9; i++) {
		ssize_t n = ipc_recv_timed(g, "ahead", out, 4096,
		    TEST_WAIT_MS, NULL);

		if (n != (ssize_t)(1000 + 100 * i) ||
		    !memfd_bytes_ok(out, (size_t)n, i))
			fail_msg("message %u: %zd bytes (%s), expected %u of "
			    "memfd %u", i, n, n < 0 ? strerror(errno) :
			    "not its bytes", 1000 + 100 * i, i);
	}
	assert_int_equal(box_depth(g, "ahead"), 0);
	broker_fds_wait(f, g, base + 1, "all acknowledged");
	fix_fd_close(f, raw);
	broker_fds_wait(f, g, base, "closed");
	broker_stop(&f->b);
}

/* Memfd messages a receiver had (prefetched, not handed out) when it
 * closed come back, flagged, with their bytes; the broker kept their
 * descriptors all along and drops them once they are acknowledged. */
static void
test_memfd_unacked_messages_come_back_with_their_bytes(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *c, *r, *w;
	struct ipc_msg_info info;
	uint8_t *want, *buf;
	int base;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	c = fix_open(f);
	r = fix_open(f);
	w = fix_open(f);
	box_create(w, "mfb", -1, -1);
	want = fix_alloc(f, MF_ASYNC_LEN);
	buf = fix_alloc(f, MF_ASYNC_LEN);
	base = broker_fds(f);
	for (uint64_t i = 0; i < 4; i++) {
		large_fill(want, MF_ASYNC_LEN, i);
		assert_int_equal(ipc_send(s, "mfb", want, MF_ASYNC_LEN), 0);
	}
	broker_fds_wait(f, w, base + 4, "four queued");
	assert_int_equal(ipc_set_prefetch(c, 8), 0);
	large_fill(want, MF_ASYNC_LEN, 0);
	assert_int_equal(ipc_recv_timed(c, "mfb", buf, MF_ASYNC_LEN,
	    TEST_WAIT_MS, NULL), MF_ASYNC_LEN);
	assert_memory_equal(buf, want, MF_ASYNC_LEN);
	/* #0 acknowledged; #1..#3 pushed to c, not handed out. */
	assert_int_equal(box_depth(c, "mfb"), 0);
	broker_fds_wait(f, w, base + 3, "one acknowledged, three held");

	/* c's socket goes with it. */
	fix_close(f, c);
	base--;
	box_wait(w, "mfb", DEPTH, 3);
	broker_fds_wait(f, w, base + 3, "three back in the mailbox");
	for (uint64_t i = 1; i < 4; i++) {
		large_fill(want, MF_ASYNC_LEN, i);
		memset(buf, 0, MF_ASYNC_LEN);
		memset(&info, 0, sizeof(info));
		if (ipc_recv_timed(r, "mfb", buf, MF_ASYNC_LEN, TEST_WAIT_MS,
		    &info) != (ssize_t)MF_ASYNC_LEN)
			fail_msg("#%llu: %s", (unsigned long long)i,
			    strerror(errno));
		if (memcmp(buf, want, MF_ASYNC_LEN) != 0)
			fail_msg("#%llu came back with the wrong bytes",
			    (unsigned long long)i);
		if (!(info.flags & IPC_MSG_REDELIVERED))
			fail_msg("#%llu came back without REDELIVERED",
			    (unsigned long long)i);
	}
	assert_int_equal(box_depth(r, "mfb"), 0);
	broker_fds_wait(f, w, base, "all acknowledged");
	broker_stop(&f->b);
}

/* A memfd message to a process's direct queue: the same bytes, from
 * any sender or from this one. */
static void
test_memfd_direct_queue_message_bytes_identical(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r, *w;
	struct ipc_msg_info info;
	uint8_t *want, *buf;
	char me[32], from[32];
	int base;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	r = fix_open(f);
	w = fix_open(f);
	want = fix_alloc(f, MEMFD_BIG);
	buf = fix_alloc(f, MEMFD_BIG);
	snprintf(me, sizeof(me), "pid:%ld", (long)ipc_pid(r));
	snprintf(from, sizeof(from), "pid:%ld", (long)ipc_pid(s));
	base = broker_fds(f);
	for (uint64_t i = 0; i < 2; i++) {
		large_fill(want, MEMFD_BIG, i);
		assert_int_equal(ipc_send(s, me, want, MEMFD_BIG), 0);
		broker_fds_wait(f, w, base + 1, "queued for the process");
		memset(buf, 0, MEMFD_BIG);
		memset(&info, 0, sizeof(info));
		assert_int_equal(ipc_recv_timed(r, i == 0 ? NULL : from, buf,
		    MEMFD_BIG, TEST_WAIT_MS, &info), MEMFD_BIG);
		assert_memory_equal(buf, want, MEMFD_BIG);
		assert_int_equal(info.len, MEMFD_BIG);
		assert_string_equal(info.sender, from);
		assert_int_equal(clients_of(r, getpid()).queue_depth, 0);
		broker_fds_wait(f, w, base, "received and acknowledged");
	}
	broker_stop(&f->b);
}

/* A blocking memfd send waiting for room in a full mailbox. */
struct mf_waiting_send {
	struct ipc_conn *c;
	const void *buf;
	int r, err;
};

static void *
mf_waiting_send_main(void *arg)
{
	struct mf_waiting_send *p = arg;

	errno = 0;
	p->r = ipc_send_timed(p->c, "full", p->buf, MF_ASYNC_LEN,
	    TEST_WAIT_MS, NULL);
	p->err = errno;
	return NULL;
}

/* Memfd sends refused (full, timed out, no such mailbox; blocking or
 * async) leave no descriptor in the broker or in this process; one that
 * waits for room holds its descriptor until it is delivered; deleting a
 * mailbox drops its memfd messages' descriptors. */
static void
test_memfd_refused_and_dropped_sends_leave_no_descriptors(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r, *w;
	struct ipc_send_failure fl;
	struct mf_waiting_send *ws;
	uint8_t *want, *buf;
	uint64_t id;
	int base, self, t;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	r = fix_open(f);
	w = fix_open(f);
	box_create(w, "full", 1, -1);
	box_create(w, "del", -1, -1);
	send_seq(w, "full", 0, 0);
	want = fix_alloc(f, MF_ASYNC_LEN);
	buf = fix_alloc(f, MF_ASYNC_LEN);
	large_fill(want, MF_ASYNC_LEN, 1);
	base = broker_fds(f);
	self = fd_count(0);
	assert_true(self > 0);

	errno = 0;
	assert_int_equal(ipc_send_timed(s, "full", want, MF_ASYNC_LEN, 0,
	    NULL), -1);
	assert_int_equal(errno, EAGAIN);
	broker_fds_wait(f, w, base, "full, not waited for");
	errno = 0;
	assert_int_equal(ipc_send_timed(s, "full", want, MF_ASYNC_LEN, 100,
	    NULL), -1);
	assert_int_equal(errno, ETIMEDOUT);
	broker_fds_wait(f, w, base, "full, timed out");
	errno = 0;
	assert_int_equal(ipc_send(s, "no-such-box", want, MF_ASYNC_LEN), -1);
	assert_int_equal(errno, ENOENT);
	broker_fds_wait(f, w, base, "no such mailbox");

	assert_int_equal(ipc_send_async(s, "no-such-box", want, MF_ASYNC_LEN,
	    &id), 0);
	/* Its refusal comes before the answer to a later request. */
	assert_int_equal(box_depth(s, "full"), 1);
	memset(&fl, 0, sizeof(fl));
	assert_int_equal(ipc_send_failure(s, &fl), 0);
	assert_int_equal(fl.send_id, id);
	assert_int_equal(fl.error, ENOENT);
	assert_int_equal(ipc_send_async(s, "full", want, MF_ASYNC_LEN, &id),
	    0);
	assert_int_equal(box_depth(s, "full"), 1);
	memset(&fl, 0, sizeof(fl));
	assert_int_equal(ipc_send_failure(s, &fl), 0);
	assert_int_equal(fl.send_id, id);
	assert_int_equal(fl.error, EAGAIN);
	broker_fds_wait(f, w, base, "async sends refused");
	assert_int_equal(fd_count(0), self);

	/* A send that waits for room keeps its memfd, and is delivered
	 * with it. */
	ws = fix_alloc(f, sizeof(*ws));
	ws->c = s;
	ws->buf = want;
	t = fix_thread(f, mf_waiting_send_main, ws);
	{
		long long deadline = test_now_ms() + TEST_WAIT_MS;

		while (box_stat(w, "full").waiting_senders != 1)
			if (test_now_ms() > deadline)
				fail_msg("the memfd send is not waiting");
	}
	broker_fds_wait(f, w, base + 1, "a memfd send waiting");
	expect_seq(r, "full", TEST_WAIT_MS, 0);
	fix_join(f, t);
	if (ws->r < 0)
		fail_msg("the waiting send: %s", strerror(ws->err));
	broker_fds_wait(f, w, base + 1, "the waiting send queued");
	memset(buf, 0, MF_ASYNC_LEN);
	assert_int_equal(ipc_recv_timed(r, "full", buf, MF_ASYNC_LEN,
	    TEST_WAIT_MS, NULL), MF_ASYNC_LEN);
	assert_memory_equal(buf, want, MF_ASYNC_LEN);
	assert_int_equal(box_depth(r, "full"), 0);
	broker_fds_wait(f, w, base, "delivered and acknowledged");

	/* Deleting a mailbox drops its messages and their memfds. */
	for (uint64_t i = 0; i < 3; i++)
		assert_int_equal(ipc_send(s, "del", want, MF_ASYNC_LEN), 0);
	broker_fds_wait(f, w, base + 3, "three in a mailbox");
	assert_int_equal(ipc_mbox_delete(w, "del"), 0);
	broker_fds_wait(f, w, base, "the mailbox deleted");
	assert_int_equal(fd_count(0), self);
	broker_stop(&f->b);
}

/* A memfd message over the receive buffer: EMSGSIZE with its length,
 * again, then whole into a buffer large enough, the next one after it
 * (with and without prefetch); and an armed receive of one. */
static void
test_memfd_small_buffer_emsgsize_then_whole_and_armed_receive(
    void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r[2], *w;
	struct ipc_msg_info info;
	uint8_t *want, *buf;
	int base, self, fd;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	r[0] = fix_open(f);
	r[1] = fix_open(f);
	w = fix_open(f);
	box_create(w, "e0", -1, -1);
	box_create(w, "e1", -1, -1);
	assert_int_equal(ipc_set_prefetch(r[1], 4), 0);
	want = fix_alloc(f, MEMFD_BIG);
	buf = fix_alloc(f, MEMFD_BIG);
	fd = ipc_fd(r[0]);
	assert_true(fd >= 0);
	base = broker_fds(f);
	self = fd_count(0);
	assert_true(self > 0);

	for (int k = 0; k < 2; k++) {
		const char *box = k ? "e1" : "e0";

		large_fill(want, MEMFD_BIG, 0);
		assert_int_equal(ipc_send(s, box, want, MEMFD_BIG), 0);
		send_seq(s, box, 0, 1);
		broker_fds_wait(f, w, base + 1, box);
		for (int i = 0; i < 2; i++) {
			memset(&info, 0, sizeof(info));
			errno = 0;
			assert_int_equal(ipc_recv_timed(r[k], box, buf,
			    MEMFD_MIN, TEST_WAIT_MS, &info), -1);
			assert_int_equal(errno, EMSGSIZE);
			assert_int_equal(info.len, MEMFD_BIG);
		}
		memset(buf, 0, MEMFD_BIG);
		memset(&info, 0, sizeof(info));
		if (ipc_recv_timed(r[k], box, buf, MEMFD_BIG, TEST_WAIT_MS,
		    &info) != (ssize_t)MEMFD_BIG)
			fail_msg("%s: %s", box, strerror(errno));
		if (memcmp(buf, want, MEMFD_BIG) != 0)
			fail_msg("%s: wrong bytes after EMSGSIZE", box);
		assert_int_equal(info.len, MEMFD_BIG);
		expect_seq(r[k], box, TEST_WAIT_MS, 1);
		assert_int_equal(box_depth(r[k], box), 0);
		broker_fds_wait(f, w, base, box);
	}

	/* Armed: ipc_fd() turns readable, and the message is had at
	 * once. */
	assert_int_equal(ipc_recv_arm(r[0], "e0"), 0);
	assert_int_equal(test_wait_readable(fd, 0), 0);
	large_fill(want, MEMFD_BIG, 2);
	assert_int_equal(ipc_send(s, "e0", want, MEMFD_BIG), 0);
	assert_int_equal(test_wait_readable(fd, TEST_WAIT_MS), 1);
	memset(buf, 0, MEMFD_BIG);
	assert_int_equal(ipc_recv_timed(r[0], "e0", buf, MEMFD_BIG, 0, NULL),
	    MEMFD_BIG);
	assert_memory_equal(buf, want, MEMFD_BIG);
	assert_int_equal(box_depth(r[0], "e0"), 0);
	broker_fds_wait(f, w, base, "armed");
	assert_int_equal(fd_count(0), self);
	broker_stop(&f->b);
}

/* Two streams on one connection bring memfd messages in turns; taking
 * all of one mailbox first reads the other's on the way: they are kept
 * with their bytes and handed out in their order afterwards. */
static void
test_memfd_streamed_messages_read_past_are_kept_intact(void **state)
{
	struct fix *f = *state;
	enum { EACH = 6 };
	struct ipc_conn *s, *r, *w;
	uint8_t *want, *buf;
	int base, self;

	broker_start(&f->b, NULL);
	s = fix_open_memfd(f, MEMFD_MIN_TEXT);
	r = fix_open(f);
	w = fix_open(f);
	box_create(w, "pa", -1, -1);
	box_create(w, "pb", -1, -1);
	want = fix_alloc(f, MF_ASYNC_LEN);
	buf = fix_alloc(f, MF_ASYNC_LEN);
	assert_int_equal(ipc_set_prefetch(r, 8), 0);
	/* Open both streams: nothing there yet. */
	expect_empty(r, "pa");
	expect_empty(r, "pb");
	box_wait(w, "pa", RECEIVERS, 1);
	box_wait(w, "pb", RECEIVERS, 1);
	base = broker_fds(f);
	self = fd_count(0);
	assert_true(self > 0);
	for (uint64_t i = 0; i < EACH; i++) {
		large_fill(want, MF_ASYNC_LEN, i);
		assert_int_equal(ipc_send(s, "pa", want, MF_ASYNC_LEN), 0);
		large_fill(want, MF_ASYNC_LEN, 100 + i);
		assert_int_equal(ipc_send(s, "pb", want, MF_ASYNC_LEN), 0);
	}
	broker_fds_wait(f, w, base + 2 * EACH, "all pushed, none taken");
	for (int k = 0; k < 2; k++)
		for (uint64_t i = 0; i < EACH; i++) {
			const char *box = k ? "pb" : "pa";
			uint64_t seq = 100u * (unsigned)k + i;

			large_fill(want, MF_ASYNC_LEN, seq);
			memset(buf, 0, MF_ASYNC_LEN);
			if (ipc_recv_timed(r, box, buf, MF_ASYNC_LEN,
			    TEST_WAIT_MS, NULL) != (ssize_t)MF_ASYNC_LEN)
				fail_msg("%s #%llu: %s", box,
				    (unsigned long long)seq, strerror(errno));
			if (memcmp(buf, want, MF_ASYNC_LEN) != 0)
				fail_msg("%s #%llu: wrong bytes", box,
				    (unsigned long long)seq);
		}
	assert_int_equal(box_depth(r, "pa"), 0);
	assert_int_equal(box_depth(r, "pb"), 0);
	broker_fds_wait(f, w, base, "all acknowledged");
	assert_int_equal(fd_count(0), self);
	broker_stop(&f->b);
}

/* --- what a process sent just before it exited ------------------------ */

/* The sender's run: messages of LOST_LEN bytes, as many as its socket
 * takes while the broker is stopped (at least LOST_MF_MIN as memfds:
 * more than the 64 reads the broker once gave an exited process). */
#define LOST_N		200u
#define LOST_LEN	4096u
#define LOST_MF_MIN	100u

/* Stop the broker (SIGSTOP) and wait until it is stopped; the teardown
 * lets it go on if the test does not get to broker_resume(). */
static void
broker_pause(struct fix *f)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	char path[64], line[512], *rp;
	pid_t pid = f->b.proc.pid;

	assert_true(pid > 0);
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	f->broker_paused = 1;
	for (;;) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd < 0 ? -1 : read(fd, line, sizeof(line) - 1);

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			line[n] = '\0';
			/* "pid (comm) S ...": the state after the last ')'. */
			if ((rp = strrchr(line, ')')) != NULL && rp[1] == ' ' &&
			    rp[2] == 'T')
				return;
		}
		if (test_now_ms() > deadline)
			break;
	}
	kill(pid, SIGCONT);
	f->broker_paused = 0;
	fail_msg("the broker (pid %ld) did not stop", (long)pid);
}

static void
broker_resume(struct fix *f)
{
	if (f->broker_paused) {
		kill(f->b.proc.pid, SIGCONT);
		f->broker_paused = 0;
	}
}

/*
 * The sender (a child): connect (a HELLO round trip, so while the broker
 * runs), say so on rep, wait for go, then send message 0, 1, ... to box
 * with ipc_send_async until LOST_N or until the socket is full, write
 * how many surely went and exit at once, without ipc_close().  A send
 * that returned 0 may have left its frame in the library for want of
 * room, to be written first by the next call on c, which fails with
 * EAGAIN if it still cannot: so on an EAGAIN the one before is not
 * counted, and after the last, a probe (0 bytes to a mailbox that is
 * not there) tells whether it went.  memfd_min: $IPC_MEMFD_MIN, or NULL
 * for inline payloads.  Returns the exit status.
 */
static int
lost_sender(struct fix *f, const char *memfd_min, const char *box,
    int rep, int go)
{
	static uint8_t buf[LOST_LEN];
	struct ipc_conn *c;
	uint32_t sent, i;
	char b;

	if ((memfd_min != NULL ? setenv("IPC_MEMFD_MIN", memfd_min, 1) :
	    unsetenv("IPC_MEMFD_MIN")) < 0)
		return 11;
	if (f->nconns >= FIX_MAX || (c = ipc_open(f->b.where)) == NULL)
		return 12;
	/* Never closed; kept where valgrind sees it, not leaked. */
	f->conns[f->nconns++] = c;
	if (write_full(rep, "r", 1) < 0 || read_full(go, &b, 1) < 0)
		return 13;
	for (i = 0; i < LOST_N; i++) {
		large_fill(buf, LOST_LEN, i);
		if (ipc_send_async(c, box, buf, LOST_LEN, NULL) < 0)
			break;
	}
	if (i < LOST_N) {
		if (errno != EAGAIN)
			return 14;
		sent = i > 0 ? i - 1 : 0;
	} else if (ipc_send_async(c, "no-such-box", NULL, 0, NULL) < 0) {
		if (errno != EAGAIN)
			return 15;
		sent = LOST_N - 1;
	} else
		sent = LOST_N;
	if (write_full(rep, &sent, sizeof(sent)) < 0)
		return 16;
	return 0;
}

/*
 * A process that sends async messages and exits before the broker has
 * read them: every one it handed to the OS is queued, in order, with
 * its bytes.  The broker is stopped while the sender sends and exits,
 * so it finds them all unread in the socket at once with the exit (the
 * pidfd); each read that carries a memfd is cut short by the kernel,
 * and the broker once took such a read for an empty socket and gave an
 * exited process 64 reads: all but about 65 were dropped, silently.
 * With memfds (at least LOST_MF_MIN messages) and, as a control, inline.
 */
static void
test_memfd_async_sends_of_exited_process_all_queued(void **state)
{
	struct fix *f = *state;
	static const char *const mins[] = { NULL, "1" };
	static const char *const boxes[] = { "lost-inline", "lost-memfd" };
	struct ipc_mbox_attr attr;
	struct ipc_conn *r, *w;
	uint8_t *want, *buf;
	int base;

	broker_start(&f->b, NULL);
	r = fix_open(f);
	w = fix_open(f);
	ipc_mbox_attr_init(&attr);
	attr.capacity = 300;
	attr.max_bytes = 2 * LOST_N * LOST_LEN;
	attr.exclusive = 1;
	for (int k = 0; k < 2; k++)
		if (ipc_mbox_create(w, boxes[k], &attr, NULL) < 0)
			fail_msg("create %s: %s", boxes[k], strerror(errno));
	want = fix_alloc(f, LOST_LEN);
	buf = fix_alloc(f, LOST_LEN);
	base = broker_fds(f);

	for (int k = 0; k < 2; k++) {
		const char *box = boxes[k];
		char why[160] = "", b;
		uint32_t sent = 0, depth;
		int rp[2], gp[2], status;
		long long deadline;
		pid_t kid;

		fix_pipe(f, rp);
		fix_pipe(f, gp);
		if ((kid = fix_fork(f)) == 0)
			_exit(lost_sender(f, mins[k], box, rp[1], gp[0]));
		fix_fd_close(f, rp[1]);
		fix_fd_close(f, gp[0]);
		if (read_full(rp[0], &b, 1) < 0)
			fail_msg("%s: the sender did not connect (status "
			    "0x%x)", box, fix_reap(f, kid));

		/* No assertion while the broker is stopped. */
		broker_pause(f);
		if (write_full(gp[1], "g", 1) < 0)
			snprintf(why, sizeof(why), "go: %s", strerror(errno));
		else if (read_full(rp[0], &sent, sizeof(sent)) < 0)
			snprintf(why, sizeof(why), "no count from the sender");
		status = fix_reap(f, kid);
		broker_resume(f);
		if (why[0] != '\0')
			fail_msg("%s: %s (sender status 0x%x)", box, why,
			    status);
		assert_exited(status, 0);
		print_message("%s: %u of %u messages of %u bytes sent before "
		    "the sender exited\n", box, sent, LOST_N, LOST_LEN);
		if (mins[k] != NULL && sent < LOST_MF_MIN)
			fail_msg("%s: only %u memfd sends fit in the socket, "
			    "expected at least %u", box, sent, LOST_MF_MIN);
		assert_true(sent > 0);

		/* The broker is done with the sender once its connection
		 * is gone: what it queued is all it will. */
		deadline = test_now_ms() + TEST_WAIT_MS;
		while (clients_of(w, kid).conns != 0)
			if (test_now_ms() > deadline)
				fail_msg("%s: the sender's connection outlived "
				    "it", box);
		depth = box_depth(w, box);
		if (depth != sent)
			fail_msg("%s: %u of the %u messages the sender sent "
			    "are queued", box, depth, sent);

		for (uint32_t i = 0; i < sent; i++) {
			struct ipc_msg_info info;
			ssize_t n;

			large_fill(want, LOST_LEN, i);
			memset(buf, 0, LOST_LEN);
			memset(&info, 0, sizeof(info));
			n = ipc_recv_timed(r, box, buf, LOST_LEN, TEST_WAIT_MS,
			    &info);
			if (n != (ssize_t)LOST_LEN)
				fail_msg("%s #%u: %zd (%s)", box, i, n, n < 0 ?
				    strerror(errno) : "wrong length");
			if (memcmp(buf, want, LOST_LEN) != 0) {
				struct seqmsg m;

				memcpy(&m, buf, sizeof(m));
				fail_msg("%s #%u: wrong bytes (%s #%llu)", box,
				    i, seq_valid(&m) ? "message" :
				    "not a message", (unsigned long long)m.seq);
			}
			assert_int_equal(info.len, LOST_LEN);
			assert_int_equal(info.pid, kid);
		}
		expect_empty(r, box);
		assert_int_equal(box_depth(r, box), 0);
		/* The memfds and the sender's socket and pidfd, dropped. */
		broker_fds_wait(f, w, base, box);
	}
	broker_stop(&f->b);
}

/* === 8. regressions ====================================================== */

/* The prefetching stage: messages, and the size of each (half the
 * broker's default --max-msg-size of 8 MiB, daemon/main.c, so the
 * fixture's broker takes them as it is). */
#define STAGE_N		12u
#define STAGE_LEN	(4u << 20)
#define STAGE_PREFETCH	4u

/* Message seq of the stage run: what large_fill(buf, STAGE_LEN, 0)
 * wrote, with seq's header at its start and at its end (the pattern is
 * written once: valgrind runs this too). */
static void
stage_stamp(uint8_t *buf, uint64_t seq)
{
	struct seqmsg m = seq_make(0, seq);

	memcpy(buf, &m, sizeof(m));
	memcpy(buf + STAGE_LEN - sizeof(m), &m, sizeof(m));
}

/* A child says why it failed on its pipe; returns its exit code. */
static int kid_fail(int rep, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
kid_fail(int rep, int code, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	(void)write_full(rep, why, strlen(why));
	return code;
}

/* What a child said on its pipe, if anything (not waited for). */
static const char *
kid_why(int rep, char *buf, size_t size)
{
	ssize_t n = 0;

	if (test_wait_readable(rep, 0) == 1)
		n = read(rep, buf, size - 1);
	buf[n > 0 ? n : 0] = '\0';
	return n > 0 ? buf : "nothing";
}

/* A connection of a child, with inline payloads whatever the
 * environment says; kept in f where valgrind sees it.  NULL, or the
 * exit code in *code. */
static struct ipc_conn *
stage_open(struct fix *f, int rep, const char *who, int *code)
{
	struct ipc_conn *k;

	if (setenv("IPC_MEMFD_MIN", "0", 1) < 0) {
		*code = kid_fail(rep, 10, "%s: setenv: %s", who,
		    strerror(errno));
		return NULL;
	}
	if (f->nconns >= FIX_MAX || (k = ipc_open(f->b.where)) == NULL) {
		*code = kid_fail(rep, 11, "%s: ipc_open: %s", who,
		    strerror(errno));
		return NULL;
	}
	f->conns[f->nconns++] = k;
	return k;
}

/* The producer (a child): STAGE_N blocking sends to "in". */
static int
stage_producer(struct fix *f, uint8_t *buf, int rep)
{
	struct ipc_conn *k;
	int code;

	if ((k = stage_open(f, rep, "producer", &code)) == NULL)
		return code;
	for (uint64_t i = 0; i < STAGE_N; i++) {
		stage_stamp(buf, i);
		if (ipc_send(k, "in", buf, STAGE_LEN) < 0)
			return kid_fail(rep, 12, "producer: send #%llu: %s",
			    (unsigned long long)i, strerror(errno));
	}
	return 0;
}

/* The stage (a child): with prefetch, each message received from "in"
 * is sent on to "out" as it is, by a blocking send, while the broker
 * streams the next ones to it. */
static int
stage_relay(struct fix *f, uint8_t *buf, int rep)
{
	struct ipc_conn *k;
	int code;

	if ((k = stage_open(f, rep, "stage", &code)) == NULL)
		return code;
	if (ipc_set_prefetch(k, STAGE_PREFETCH) < 0)
		return kid_fail(rep, 12, "stage: prefetch: %s",
		    strerror(errno));
	for (uint64_t i = 0; i < STAGE_N; i++) {
		struct seqmsg m;
		ssize_t n = ipc_recv_timed(k, "in", buf, STAGE_LEN,
		    TEST_WAIT_MS, NULL);

		if (n != (ssize_t)STAGE_LEN)
			return kid_fail(rep, 13, "stage: recv #%llu: %zd (%s)",
			    (unsigned long long)i, n, n < 0 ?
			    strerror(errno) : "wrong length");
		memcpy(&m, buf, sizeof(m));
		if (!seq_valid(&m) || m.seq != i)
			return kid_fail(rep, 14, "stage: recv #%llu: not "
			    "that message", (unsigned long long)i);
		/* The write that waited for ever: the broker had stopped
		 * reading this connection, its output of DELIVERs being
		 * past 1 MiB, and this side did not read while it
		 * waited to write. */
		if (ipc_send(k, "out", buf, STAGE_LEN) < 0)
			return kid_fail(rep, 15, "stage: send #%llu: %s",
			    (unsigned long long)i, strerror(errno));
	}
	/* Ends the stream with a round trip: nothing is left held. */
	if (ipc_set_prefetch(k, 0) < 0)
		return kid_fail(rep, 16, "stage: prefetch 0: %s",
		    strerror(errno));
	return 0;
}

/*
 * A pipeline stage that receives with prefetch and sends each large
 * message on: producer -> "in" -> stage (prefetch 4) -> "out" -> sink,
 * 12 messages of 4 MiB.  The broker streams 4 MiB DELIVERs to the
 * stage while the stage's own 4 MiB SEND is being written; with more
 * than 1 MiB of output waiting for the stage the broker stops reading
 * it, so a library that only waited for room to write waited until the
 * connection was reset.  The library now reads what comes while it
 * waits to write (libipc/ipc.c, ipc_io_write, ipc_wait_writable,
 * ipc_read_ahead): all 12 reach the sink, in order, intact.
 */
static void
test_prefetching_stage_sending_large_messages_does_not_deadlock(
    void **state)
{
	struct fix *f = *state;
	static const char *const boxes[] = { "in", "out" };
	struct ipc_mbox_attr attr;
	struct ipc_conn *r;
	uint8_t *want, *buf, *pbuf, *sbuf;
	int prep[2], srep[2];
	char why[200] = "", pw[200], sw[200];
	long long t0, deadline;
	pid_t prod, stage;

	broker_start(&f->b, NULL);
	r = fix_open_memfd(f, "0");
	ipc_mbox_attr_init(&attr);
	attr.capacity = 100;
	attr.max_bytes = (int64_t)1 << 30;
	attr.exclusive = 1;
	for (int k = 0; k < 2; k++)
		if (ipc_mbox_create(r, boxes[k], &attr, NULL) < 0)
			fail_msg("create %s: %s", boxes[k], strerror(errno));
	want = fix_alloc(f, STAGE_LEN);
	buf = fix_alloc(f, STAGE_LEN);
	pbuf = fix_alloc(f, STAGE_LEN);
	sbuf = fix_alloc(f, STAGE_LEN);
	large_fill(want, STAGE_LEN, 0);
	memcpy(pbuf, want, STAGE_LEN);
	fix_pipe(f, prep);
	fix_pipe(f, srep);

	t0 = test_now_ms();
	if ((stage = fix_fork(f)) == 0)
		_exit(stage_relay(f, sbuf, srep[1]));
	if ((prod = fix_fork(f)) == 0)
		_exit(stage_producer(f, pbuf, prep[1]));
	/* The sink. */
	for (uint64_t i = 0; i < STAGE_N && why[0] == '\0'; i++) {
		struct ipc_msg_info info;
		ssize_t n;

		stage_stamp(want, i);
		memset(buf, 0, STAGE_LEN);
		memset(&info, 0, sizeof(info));
		n = ipc_recv_timed(r, "out", buf, STAGE_LEN, TEST_WAIT_MS,
		    &info);
		if (n != (ssize_t)STAGE_LEN) {
			snprintf(why, sizeof(why), "sink: #%llu: %zd (%s)",
			    (unsigned long long)i, n, n < 0 ?
			    strerror(errno) : "wrong length");
		} else if (memcmp(buf, want, STAGE_LEN) != 0) {
			struct seqmsg m;

			memcpy(&m, buf, sizeof(m));
			snprintf(why, sizeof(why), "sink: #%llu: wrong bytes "
			    "(%s #%llu)", (unsigned long long)i,
			    seq_valid(&m) ? "message" : "not a message",
			    (unsigned long long)m.seq);
		} else if (info.pid != stage) {
			snprintf(why, sizeof(why), "sink: #%llu from pid %ld, "
			    "not the stage's %ld", (unsigned long long)i,
			    (long)info.pid, (long)stage);
		}
	}
	if (why[0] != '\0')
		fail_msg("%s (producer said: %s; stage said: %s)", why,
		    kid_why(prep[0], pw, sizeof(pw)),
		    kid_why(srep[0], sw, sizeof(sw)));
	print_message("%u messages of %u MiB through a stage with prefetch "
	    "%u in %lld ms\n", STAGE_N, STAGE_LEN >> 20, STAGE_PREFETCH,
	    test_now_ms() - t0);
	assert_exited(fix_reap(f, prod), 0);
	assert_exited(fix_reap(f, stage), 0);
	errno = 0;
	assert_int_equal(ipc_recv_timed(r, "out", buf, STAGE_LEN, 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	/* Nothing the stage held comes back once it is gone. */
	deadline = test_now_ms() + TEST_WAIT_MS;
	while (clients_of(r, stage).conns != 0)
		if (test_now_ms() > deadline)
			fail_msg("the stage's connection outlived it");
	assert_int_equal(box_depth(r, "in"), 0);
	assert_int_equal(box_depth(r, "out"), 0);
	broker_stop(&f->b);
}

/* A sealed memfd passed by a descriptor open for writing only (the
 * broker reads it, receivers map it: it would poison every receiver of
 * the mailbox) is refused with EINVAL, nothing queued, the broker keeps
 * no descriptor of it, and the connection goes on: a good memfd SEND
 * after it is taken and received whole. */
static void
test_write_only_memfd_is_refused(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *g;
	struct wire_frame fr;
	uint8_t rbuf[4096];
	char path[64];
	void *got = NULL;
	ssize_t n;
	int base, raw, mfd, wo, ok;

	broker_start(&f->b, NULL);
	g = fix_open(f);
	box_create(g, "wom", -1, -1);
	base = broker_fds(f);
	raw = raw_open(f);
	raw_hello(raw);
	broker_fds_wait(f, g, base + 1, "a raw connection");

	mfd = test_memfd(f, 1000, 3, F_SEAL_WRITE | F_SEAL_SHRINK |
	    F_SEAL_GROW);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	wo = open(path, O_WRONLY | O_CLOEXEC);
	if (wo < 0)
		fail_msg("open %s write-only: %s", path, strerror(errno));
	fix_fd(f, wo);
	/* The same sealed memfd, by a descriptor the broker cannot read. */
	assert_int_equal(fcntl(wo, F_GET_SEALS) & (F_SEAL_WRITE |
	    F_SEAL_SHRINK | F_SEAL_GROW), F_SEAL_WRITE | F_SEAL_SHRINK |
	    F_SEAL_GROW);
	fix_fd_close(f, mfd);
	fr = raw_fd_send(10, "wom", NULL, 0);
	raw_put(raw, &fr, wo);
	fix_fd_close(f, wo);
	raw_expect_error(raw, WIRE_E_INVAL, 10);
	assert_int_equal(box_depth(g, "wom"), 0);
	broker_fds_wait(f, g, base + 1, "the write-only memfd refused");

	/* The connection goes on. */
	mfd = test_memfd(f, 1000, 4, MEMFD_SEALED);
	fr = raw_fd_send(11, "wom", NULL, 0);
	raw_put(raw, &fr, mfd);
	fix_fd_close(f, mfd);
	raw_expect(raw, WIRE_SENT, 11, &fr, rbuf, sizeof(rbuf));
	assert_int_equal(box_depth(g, "wom"), 1);
	broker_fds_wait(f, g, base + 2, "a good memfd queued");
	n = ipc_recv_alloc(g, "wom", &got, TEST_WAIT_MS, NULL);
	ok = n == 1000 && memfd_bytes_ok(got, 1000, 4);
	free(got);
	if (!ok)
		fail_msg("the good memfd: %zd (%s)", n, n < 0 ?
		    strerror(errno) : "not its bytes");
	assert_int_equal(box_depth(g, "wom"), 0);
	broker_fds_wait(f, g, base + 1, "the good memfd acknowledged");
	fix_fd_close(f, raw);
	broker_fds_wait(f, g, base, "the raw connection closed");
	broker_stop(&f->b);
}

/* Bytes waiting in this side's socket: to read (FIONREAD), or written
 * and not yet read by the broker (SIOCOUTQ). */
static int
raw_queued(int fd, unsigned long what)
{
	int n = -1;

	if (ioctl(fd, what, &n) < 0)
		fail_msg("ioctl %s: %s", what == FIONREAD ? "FIONREAD" :
		    "SIOCOUTQ", strerror(errno));
	return n;
}

/*
 * A receive stream held back for want of room in its connection's
 * output resumes (daemon/conn.c, conn_flush_all) and its first take
 * admits a SEND of that same connection parked on the mailbox, which
 * frees the sender's wait (mbox_stream_run -> mbox_take ->
 * mbox_admit_senders -> wait_finish).  conn_flush_all once walked
 * c->waits running each stream, with the next wait saved before the
 * run: that next one was the freed sender, read after free (found by
 * review; AddressSanitizer in the sanitizer pass sees it).
 *
 * The order matters.  wait_park() pushes at the head of c->waits, so
 * the SEND parked first and the CREDIT's stream after it are listed
 * stream, then sender: the sender comes after the stream only if the
 * SEND parked before the CREDIT, hence (b) before (c).  Parked the
 * other way round the walk meets the sender first and never comes back
 * to it.
 *
 * One raw connection:
 *  (a) fills the broker's output to it past CONN_STREAM_HIGH (256 KiB)
 *      without reading: PEEKs of a 60 KiB message, one at a time,
 *      until what the broker pushed less what its socket holds
 *      (FIONREAD here) is past 320 KiB; it stays under CONN_OUT_HIGH
 *      (1 MiB), so the broker still reads the connection;
 *  (b) SENDs to "m" (capacity 1, full with another connection's
 *      message), timeout 10 s: parked;
 *  (c) CREDITs "m" with 10: the stream is blocked (wait_ready finds
 *      conn_stream_full), checked from another connection: m still
 *      holds its message and its parked sender;
 *  (d) reads all: the output drains, the stream resumes, takes m's
 *      message, which admits the parked SEND (SENT), and takes that
 *      one too: two DELIVERs with the stream's id, in order.
 */
static void
test_blocked_stream_resumes_with_parked_sender_of_same_conn(void **state)
{
	struct fix *f = *state;
	/* daemon/conn.c: CONN_STREAM_HIGH and CONN_OUT_HIGH. */
	enum { STREAM_HIGH = 256 << 10, OUT_HIGH = 1 << 20,
	    PEEK_LEN = 60 << 10, PEEKS_MAX = 256,
	    SEND_ID = 2, STREAM_ID = 3, STAT_ID = 4, PEEK_ID = 100 };
	size_t cap = PEEK_LEN + WIRE_OVERHEAD_MAX + WIRE_HDR_LEN;
	struct ipc_conn *g, *n;
	struct ipc_mbox_info info;
	struct wire_frame fr;
	struct seqmsg m;
	uint8_t *big, *rbuf;
	long long pushed = 0, deadline;
	uint64_t next = 0;
	int raw, npeek = 0, unread = 0, sent = 0;

	broker_start(&f->b, NULL);
	/* Inline payloads: a memfd message would weigh a few bytes in the
	 * broker's output. */
	g = fix_open_memfd(f, "0");
	box_create(g, "big", -1, -1);
	box_create(g, "m", 1, -1);
	big = fix_alloc(f, PEEK_LEN);
	rbuf = fix_alloc(f, cap);
	large_fill(big, PEEK_LEN, 0);
	assert_int_equal(ipc_send(g, "big", big, PEEK_LEN), 0);
	send_seq(g, "m", 0, 0);
	raw = raw_open(f);
	raw_hello(raw);

	/* (a) */
	for (;;) {
		fr = (struct wire_frame){ .type = WIRE_PEEK,
		    .id = PEEK_ID + (uint64_t)npeek };
		fr.b.peek.max_count = 1;
		fr.b.peek.name = wire_str("big");
		raw_put(raw, &fr, -1);
		npeek++;
		/* At least a DELIVER of the message and an OK. */
		pushed += PEEK_LEN + 2 * WIRE_HDR_LEN;
		/* The broker has read it once nothing of ours is left in
		 * the socket; two round trips on g later it has finished
		 * that round too, writing to raw until its socket took no
		 * more. */
		deadline = test_now_ms() + TEST_WAIT_MS;
		while (raw_queued(raw, SIOCOUTQ) > 0)
			if (test_now_ms() > deadline)
				fail_msg("the broker does not read the raw "
				    "connection (PEEK %d)", npeek);
			else
				(void)box_depth(g, "m");
		(void)box_depth(g, "m");
		assert_int_equal(box_depth(g, "m"), 1);
		unread = raw_queued(raw, FIONREAD);
		if (pushed - unread > STREAM_HIGH + (64 << 10))
			break;
		if (npeek == PEEKS_MAX)
			fail_msg("%d PEEKs of %d KiB unread, and the socket "
			    "holds %d bytes of them", npeek, PEEK_LEN >> 10,
			    unread);
	}
	/* At most this much waits in the broker: it still reads. */
	assert_true((long long)npeek * (PEEK_LEN + 2 * WIRE_HDR_LEN +
	    WIRE_OVERHEAD_MAX) - unread < OUT_HIGH - (64 << 10));
	print_message("%d PEEKs of %d KiB unread: the socket holds %d KiB, "
	    "the broker at least %lld KiB\n", npeek, PEEK_LEN >> 10,
	    unread >> 10, (pushed - unread) >> 10);

	/* (b) */
	m = seq_make(0, 1);
	fr = (struct wire_frame){ .type = WIRE_SEND, .id = SEND_ID };
	fr.b.send.timeout_ms = 10000;
	fr.b.send.flags = 0;
	fr.b.send.dest = wire_str("m");
	fr.b.send.payload.p = (const uint8_t *)&m;
	fr.b.send.payload.len = sizeof(m);
	raw_put(raw, &fr, -1);
	deadline = test_now_ms() + TEST_WAIT_MS;
	while (box_stat(g, "m").waiting_senders != 1)
		if (test_now_ms() > deadline)
			fail_msg("the raw SEND did not park");

	/* (c) */
	fr = (struct wire_frame){ .type = WIRE_CREDIT, .id = STREAM_ID };
	fr.b.credit.credit = 10;
	fr.b.credit.flags = 0;
	fr.b.credit.max_len = 4096;
	fr.b.credit.source = wire_str("m");
	raw_put(raw, &fr, -1);
	box_wait(g, "m", RECEIVERS, 1);
	info = box_stat(g, "m");
	if (info.depth != 1 || info.waiting_senders != 1)
		fail_msg("the stream was not held back (depth %u, %u senders "
		    "waiting): the broker's output to it was not past 256 "
		    "KiB", info.depth, info.waiting_senders);

	/* (d) */
	for (int i = 0; i < npeek; i++) {
		uint64_t id = PEEK_ID + (uint64_t)i;

		raw_expect(raw, WIRE_DELIVER, id, &fr, rbuf, cap);
		if (fr.b.deliver.payload.len != PEEK_LEN ||
		    memcmp(fr.b.deliver.payload.p, big, PEEK_LEN) != 0)
			fail_msg("PEEK %d: %zu bytes, not the message's", i,
			    fr.b.deliver.payload.len);
		raw_expect(raw, WIRE_OK, id, &fr, rbuf, cap);
	}
	/* The stream's first take admits the parked SEND, whose SENT may
	 * come before its DELIVER or after. */
	for (int i = 0; i < 3; i++) {
		int r = raw_get(raw, rbuf, cap, &fr);

		if (r != 1)
			fail_msg("frame %d after the PEEKs: %s", i, r == 0 ?
			    "the broker closed" : "nothing, or a bad frame");
		if (fr.type == WIRE_SENT && fr.id == SEND_ID && !sent) {
			sent = 1;
			continue;
		}
		if (fr.type != WIRE_DELIVER || fr.id != STREAM_ID)
			fail_msg("frame %d after the PEEKs: %s for #%llu",
			    i, wire_type_name(fr.type),
			    (unsigned long long)fr.id);
		if (fr.b.deliver.payload.len != sizeof(m))
			fail_msg("DELIVER %llu: %zu bytes",
			    (unsigned long long)next,
			    fr.b.deliver.payload.len);
		memcpy(&m, fr.b.deliver.payload.p, sizeof(m));
		if (!seq_valid(&m) || m.seq != next)
			fail_msg("DELIVER %llu: %s #%llu",
			    (unsigned long long)next, seq_valid(&m) ?
			    "message" : "not a message",
			    (unsigned long long)m.seq);
		assert_true(wire_str_eq(fr.b.deliver.source, "m"));
		next++;
	}
	assert_int_equal(sent, 1);
	assert_int_equal(next, 2);
	/* Nothing more on the stream before this answer. */
	fr = (struct wire_frame){ .type = WIRE_MBOX_STAT, .id = STAT_ID };
	fr.b.name.name = wire_str("m");
	raw_put(raw, &fr, -1);
	raw_expect(raw, WIRE_MBOX_INFO, STAT_ID, &fr, rbuf, cap);
	assert_int_equal(fr.b.info.depth, 0);
	assert_int_equal(fr.b.info.waiting_senders, 0);
	assert_int_equal(fr.b.info.waiting_receivers, 1);

	/* The broker is well: a new client is answered. */
	n = fix_open(f);
	info = box_stat(n, "m");
	assert_int_equal(info.depth, 0);
	assert_int_equal(info.waiting_senders, 0);
	fix_fd_close(f, raw);
	box_create(n, "after", -1, -1);
	good_round(n, "after", 0);
	broker_stop(&f->b);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_prefetch_window_topped_up_at_half_and_limit_einval),
		T(test_prefetch_zero_ends_streams_held_messages_still_handed_out),
		T(test_direct_queue_receives_never_prefetch),
		T(test_many_mailboxes_on_one_connection_each_keep_order),
		T(test_close_returns_prefetched_to_head_redelivered_in_order),
		T(test_close_with_receivers_waiting_on_many_mailboxes_keeps_order),
		T(test_killed_consumer_prefetched_messages_go_to_next_consumer),
		T(test_stream_receivers_and_plain_receiver_take_turns),
		T(test_message_over_buffer_is_emsgsize_and_kept_in_order),
		T(test_timed_recv_on_stream_times_out_and_stream_stays),
		T(test_fd_readable_while_prefetched_messages_held),
		T(test_delete_mailbox_ends_stream_with_enoent),
		T(test_stream_without_read_permission_is_eacces),
		T(test_send_more_waits_for_flush_or_32k),
		T(test_send_more_keeps_order_with_other_sends_and_close_flushes),
		T(test_volume_200k_one_producer_one_consumer_in_order),
		T(test_volume_2_producers_2_consumers_exactly_once),
		T(test_large_messages_stream_past_buffers_in_order),
		T(test_memfd_blocking_send_bytes_identical_broker_fd_until_ack),
		T(test_memfd_async_and_batched_sends_arrive_in_order),
		T(test_memfd_peek_shows_bytes_inline),
		T(test_memfd_hostile_client_refused_broker_fds_back_to_baseline),
		T(test_memfd_descriptors_sent_ahead_claimed_oldest_first),
		T(test_memfd_unacked_messages_come_back_with_their_bytes),
		T(test_memfd_direct_queue_message_bytes_identical),
		T(test_memfd_refused_and_dropped_sends_leave_no_descriptors),
		T(test_memfd_small_buffer_emsgsize_then_whole_and_armed_receive),
		T(test_memfd_streamed_messages_read_past_are_kept_intact),
		T(test_memfd_async_sends_of_exited_process_all_queued),
		T(test_prefetching_stage_sending_large_messages_does_not_deadlock),
		T(test_write_only_memfd_is_refused),
		T(test_blocked_stream_resumes_with_parked_sender_of_same_conn),
	};

	test_init(600);
	/* TEST_FILTER=test_volume* runs only the tests that match. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
