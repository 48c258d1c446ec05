/*
 * Durable mailboxes against a real ipcd: what survives the broker's
 * death.  Each test starts its own ipcd on a socket in a private
 * directory (broker_start); its journal lives beside the socket, in
 * DIR/ipcd.sock.state/ (the default state directory with --socket), and
 * a restart on the same struct broker finds it again.
 *
 *   - the broker killed with SIGKILL 20 times while 4 senders and 2
 *     receivers run: every acknowledged message is received, at most one
 *     copy of any message unflagged, each sender's order kept;
 *   - a power loss (tests/powerfail.c holds every write to the journal
 *     until it is synced, so SIGKILL loses exactly what was not): no
 *     acknowledged message lost, with sends in flight, and with a sync
 *     that never returns (then nothing unacknowledged comes back);
 *   - ENOSPC and EIO on a write and on a sync (the same shim): the send
 *     whose batch failed gets the errno, the broker stays up, the sends
 *     after it succeed, nothing acknowledged is lost; a full disk fails
 *     every durable send, an async one through ipc_send_failure();
 *   - a flipped bit in a record and a torn tail: the damaged record is
 *     reported and skipped, every other one delivered;
 *   - mailbox metadata and permission checks across a restart (root);
 *   - non-durable mailboxes are not recovered, nor deleted durable
 *     ones; ipc_mbox_stat and ipc_mbox_list say which is which; the
 *     state directory is made only for the first durable mailbox, and a
 *     second broker cannot use it.
 *
 * Other processes are forked children ("kids") with their own
 * connections that report on pipes; the test decides every step.
 * Clients of a killed broker reconnect with ipc_open in a loop bounded
 * by a deadline.  Every wait is bounded; every child is reaped.
 *
 * The shim's tests are skipped in the sanitizer build: the ASan runtime
 * refuses to be preceded by an LD_PRELOAD library.  (The kill test runs
 * as it is there: some 2 s, the sanitizers cost little against the
 * disk's syncs.)
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "testutil.h"
#include "testbroker.h"

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

#define FIX_MAX		16

/* A kid with no command for this long gives up. */
#define KID_IDLE_MS	600000

/* --- the kill test's sizes ---------------------------------------------- */

#define KT_SENDERS	4
#define KT_RECEIVERS	2
#define KT_KILLS	20
/* The broker is killed after a random number of acknowledged sends in
 * [KT_GAP_MIN, KT_GAP_MAX) since it started: 20 gaps of at most
 * KT_GAP_MAX - 1 add up to less than the messages (less the sends that
 * fail with each kill), so every kill comes before they run out. */
#define KT_PER_SENDER	1500
#define KT_GAP_MIN	50
#define KT_GAP_MAX	250
#define KT_IDLE_MS	TEST_WAIT_MS
_Static_assert(KT_KILLS * (KT_GAP_MAX + KT_SENDERS) <
    KT_SENDERS * KT_PER_SENDER, "the kills would outlast the messages");

/* --- messages ------------------------------------------------------------ */

#define DMSG_MAGIC	0x44555231u	/* "DUR1" */
#define DMSG_CHECK	0x5a5aa5a5u

/* Every message of these tests: 64 bytes, its sender and number in it
 * twice (once checked), and a text that can be found in the journal's
 * files. */
struct dmsg {
	uint32_t magic;
	uint32_t sender;
	uint32_t seq;
	uint32_t check;
	char text[48];
};
_Static_assert(sizeof(struct dmsg) == 64, "a message is 64 bytes");

static void
dmsg_make(struct dmsg *m, uint32_t sender, uint32_t seq)
{
	memset(m, 0, sizeof(*m));
	m->magic = DMSG_MAGIC;
	m->sender = sender;
	m->seq = seq;
	m->check = seq ^ (sender << 24) ^ DMSG_CHECK;
	snprintf(m->text, sizeof(m->text), "DMSG-%02u-%06u-", sender, seq);
	for (size_t i = strlen(m->text); i + 1 < sizeof(m->text); i++)
		m->text[i] = (char)('a' + (seq + i) % 26);
}

/* Is buf (len bytes) a message we made? */
static int
dmsg_ok(const void *buf, ssize_t len)
{
	const struct dmsg *m = buf;
	struct dmsg want;

	if (len != (ssize_t)sizeof(*m) || m->magic != DMSG_MAGIC ||
	    m->check != (m->seq ^ (m->sender << 24) ^ DMSG_CHECK))
		return 0;
	dmsg_make(&want, m->sender, m->seq);
	return memcmp(m, &want, sizeof(want)) == 0;
}

/* --- the fixture ------------------------------------------------------- */

struct kid {
	pid_t pid;		/* 0 once reaped */
	int cmd;		/* write end, or -1 */
	int rep;		/* read end, or -1 */
};

struct fix {
	struct broker b;
	struct kid kids[FIX_MAX];
	int nkids;
	struct ipc_conn *conns[FIX_MAX];
	int nconns;
	struct test_proc extra;		/* a second broker */
	void *heap;
};

typedef int kid_fn(struct fix *f, int in, int out, void *arg);

static void
fd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The broker's directory, made now (broker_start makes it when there
 * is none), so that the shim's POWERFAIL_DIR exists before the broker
 * starts. */
static void
fix_dir(struct fix *f)
{
	if (f->b.dir != NULL)
		return;
	f->b.dir = test_tmpdir();
	assert_non_null(f->b.dir);
	snprintf(f->b.path, sizeof(f->b.path), "%s/ipcd.sock", f->b.dir);
	snprintf(f->b.where, sizeof(f->b.where), "unix:%s", f->b.path);
}

/* The broker's state directory: the socket's path + ".state". */
static const char *
state_dir(const struct fix *f)
{
	static char path[PATH_MAX + 8];

	snprintf(path, sizeof(path), "%s.state", f->b.path);
	return path;
}

static void
shim_env_clear(void)
{
	unsetenv("LD_PRELOAD");
	unsetenv("POWERFAIL_DIR");
	unsetenv("POWERFAIL_SUFFIX");
	unsetenv("POWERFAIL_HOLD");
	unsetenv("POWERFAIL_WRITE_ERR");
	unsetenv("POWERFAIL_SYNC_ERR");
	unsetenv("POWERFAIL_SYNC_HANG");
}

static int
fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->b.proc.in = f->b.proc.out = f->b.proc.err = -1;
	f->extra.in = f->extra.out = f->extra.err = -1;
	*state = f;
	return 0;
}

static void
kid_kill(struct kid *k)
{
	if (k->pid <= 0)
		return;
	kill(k->pid, SIGKILL);
	test_child_reap(k->pid, TEST_WAIT_MS);
	k->pid = 0;
}

static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	shim_env_clear();
	for (int i = 0; i < f->nkids; i++) {
		kid_kill(&f->kids[i]);
		fd_close(&f->kids[i].cmd);
		fd_close(&f->kids[i].rep);
	}
	if (f->b.proc.pid > 0)
		test_stop(&f->b.proc);
	if (f->extra.pid > 0)
		test_stop(&f->extra);
	for (int i = 0; i < f->nconns; i++)
		ipc_close(f->conns[i]);
	free(f->heap);
	if (f->b.dir != NULL)
		test_rmtree(f->b.dir);	/* the state directory with it */
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

/* Close the connections of the test's own (the broker is going). */
static void
fix_close_conns(struct fix *f)
{
	for (int i = 0; i < f->nconns; i++)
		ipc_close(f->conns[i]);
	f->nconns = 0;
}

/* SIGKILL the broker and reap it. */
static void
broker_kill9(struct fix *f)
{
	assert_true(f->b.proc.pid > 0);
	assert_int_equal(kill(f->b.proc.pid, SIGKILL), 0);
	broker_reap_killed(&f->b);
}

static void
box_create(struct ipc_conn *c, const char *name, int durable,
    int64_t capacity, int64_t max_bytes, int mode)
{
	struct ipc_mbox_attr attr;

	ipc_mbox_attr_init(&attr);
	assert_int_equal(attr.durable, 0);
	attr.durable = durable;
	attr.capacity = capacity;
	attr.max_bytes = max_bytes;
	attr.mode = mode;
	attr.exclusive = 1;
	if (ipc_mbox_create(c, name, &attr, NULL) < 0)
		fail_msg("create %s%s: %s", durable ? "durable " : "", name,
		    strerror(errno));
}

/* --- kids ---------------------------------------------------------------- */

static struct kid *
kid_start(struct fix *f, kid_fn *fn, void *arg)
{
	pid_t parent = getpid();
	int cmd[2], rep[2];
	struct kid *k;

	assert_true(f->nkids < FIX_MAX);
	k = &f->kids[f->nkids++];
	/* Close-on-exec: a broker started (exec'ed) later must not hold
	 * them, or the kid would never see the end of its commands. */
	assert_int_equal(pipe2(cmd, O_CLOEXEC), 0);
	assert_int_equal(pipe2(rep, O_CLOEXEC), 0);
	k->pid = fork();
	assert_true(k->pid >= 0);
	if (k->pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 ||
		    getppid() != parent)
			_exit(120);
		alarm(0);
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
	return k;
}

/* Close its pipes, wait for it to exit, reap it; its status. */
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

/* In a kid: a connection, trying again every 2 ms while the broker is
 * down (being restarted), up to TEST_WAIT_MS. */
static struct ipc_conn *
kid_connect(const char *where)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	struct timespec two_ms = { 0, 2000000 };

	for (;;) {
		struct ipc_conn *c = ipc_open(where);

		if (c != NULL)
			return c;
		if (test_now_ms() >= deadline)
			return NULL;
		nanosleep(&two_ms, NULL);
	}
}

/* An errno that says the broker went away during the call. */
static int
broker_gone(int err)
{
	return err == ECONNRESET || err == EPIPE || err == ENOTCONN ||
	    err == ECONNREFUSED || err == ETIMEDOUT || err == ECONNABORTED;
}

static int
write_all(int fd, const void *buf, size_t len)
{
	return write(fd, buf, len) == (ssize_t)len ? 0 : -1;
}

/* === 1. the broker killed 20 times ====================================== */

#define KT_BOX	"dur"

struct kt_srep {
	uint32_t seq;
	int32_t err;		/* 0: acknowledged */
};

struct kt_rrep {
	uint32_t sender, seq, flags, bogus;
};

static int
kt_sender(struct fix *f, int in, int out, void *arg)
{
	uint32_t id = (uint32_t)(uintptr_t)arg;
	struct ipc_conn *c = NULL;

	(void)in;
	for (uint32_t seq = 0; seq < KT_PER_SENDER; seq++) {
		struct kt_srep rep = { seq, 0 };
		struct dmsg m;

		if (c == NULL && (c = kid_connect(f->b.where)) == NULL)
			return 10;
		dmsg_make(&m, id, seq);
		/* A number is never sent twice: one that failed may or
		 * may not have been accepted, and the next goes on. */
		if (ipc_send_timed(c, KT_BOX, &m, sizeof(m), TEST_WAIT_MS,
		    NULL) < 0) {
			rep.err = errno;
			ipc_close(c);
			c = NULL;
		}
		if (write_all(out, &rep, sizeof(rep)) < 0)
			return 11;
		if (rep.err != 0 && !broker_gone(rep.err))
			return 12;
	}
	ipc_close(c);
	return 0;
}

/* Receive and report each message at once, until the test closes the
 * command pipe; then acknowledge what was received and go. */
static int
kt_receiver(struct fix *f, int in, int out, void *arg)
{
	struct ipc_conn *c = NULL;

	(void)arg;
	for (;;) {
		struct ipc_msg_info info;
		struct kt_rrep rep;
		struct dmsg m;
		ssize_t r;

		if (c == NULL && (c = kid_connect(f->b.where)) == NULL)
			return 10;
		if (test_wait_readable(in, 0) != 0)
			break;		/* EOF: stop */
		r = ipc_recv_timed(c, KT_BOX, &m, sizeof(m), 100, &info);
		if (r < 0) {
			if (errno == ETIMEDOUT || errno == EAGAIN)
				continue;
			if (broker_gone(errno)) {
				ipc_close(c);
				c = NULL;
				continue;
			}
			return 11;
		}
		rep.bogus = !dmsg_ok(&m, r);
		rep.sender = m.sender;
		rep.seq = m.seq;
		rep.flags = info.flags;
		if (write_all(out, &rep, sizeof(rep)) < 0)
			return 12;
	}
	/* The acknowledgements go with a request; once it is answered,
	 * the broker has them. */
	if (ipc_flush(c) < 0 || (ipc_mbox_stat(c, KT_BOX, NULL) < 0))
		return 13;
	ipc_close(c);
	return 0;
}

struct kt_books {
	uint8_t acked[KT_SENDERS][KT_PER_SENDER];
	uint8_t failed[KT_SENDERS][KT_PER_SENDER];
	uint8_t times[KT_SENDERS][KT_PER_SENDER];
	uint8_t plain[KT_SENDERS][KT_PER_SENDER];	/* copies unflagged */
	int64_t last_plain[KT_RECEIVERS + 1][KT_SENDERS];
	uint32_t nacked, nfailed, copies, flagged, bogus, distinct_acked;
	uint32_t twice_plain, out_of_order, sent_done[KT_SENDERS];
	char first_bad[160];
};

static void
kt_bad(struct kt_books *bk, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
kt_bad(struct kt_books *bk, const char *fmt, ...)
{
	va_list ap;

	if (bk->first_bad[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(bk->first_bad, sizeof(bk->first_bad), fmt, ap);
	va_end(ap);
}

/* A copy received by receiver r (KT_RECEIVERS: the test itself). */
static void
kt_count(struct kt_books *bk, int r, const struct kt_rrep *rep)
{
	uint32_t s = rep->sender, q = rep->seq;

	bk->copies++;
	if (rep->bogus || s >= KT_SENDERS || q >= KT_PER_SENDER) {
		bk->bogus++;
		kt_bad(bk, "receiver %d: a message not as sent (sender %u, "
		    "number %u)", r, s, q);
		return;
	}
	if (bk->times[s][q] == 0 && bk->acked[s][q])
		bk->distinct_acked++;
	if (bk->times[s][q] < UINT8_MAX)
		bk->times[s][q]++;
	if (rep->flags & IPC_MSG_REDELIVERED) {
		bk->flagged++;
		return;
	}
	/* Unflagged: its first delivery, so the only unflagged copy, and
	 * later than every unflagged one of the same sender this receiver
	 * had (the mailbox is FIFO). */
	if (bk->plain[s][q]++ > 0) {
		bk->twice_plain++;
		kt_bad(bk, "message %u of sender %u received twice "
		    "unflagged", q, s);
	}
	if ((int64_t)q <= bk->last_plain[r][s]) {
		bk->out_of_order++;
		kt_bad(bk, "receiver %d: message %u of sender %u after %lld",
		    r, q, s, (long long)bk->last_plain[r][s]);
	}
	bk->last_plain[r][s] = q;
}

/* Read what k has reported; 1 at EOF.  Sender reports when sender >= 0,
 * else receiver r's. */
static int
kt_read(struct kt_books *bk, struct kid *k, int sender, int r,
    uint32_t *acks_out)
{
	union {
		struct kt_srep s[64];
		struct kt_rrep r[64];
	} buf;
	size_t sz = sender >= 0 ? sizeof(struct kt_srep) :
	    sizeof(struct kt_rrep);
	ssize_t n;

	do
		n = read(k->rep, &buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return 1;
	if (n < 0 || (size_t)n % sz != 0)
		fail_msg("%s %d: a short report", sender >= 0 ? "sender" :
		    "receiver", sender >= 0 ? sender : r);
	for (size_t i = 0; i < (size_t)n / sz; i++) {
		if (sender < 0) {
			kt_count(bk, r, &buf.r[i]);
			continue;
		}
		if (buf.s[i].seq >= KT_PER_SENDER)
			fail_msg("sender %d: report of number %u", sender,
			    buf.s[i].seq);
		bk->sent_done[sender]++;
		if (buf.s[i].err == 0) {
			bk->acked[sender][buf.s[i].seq] = 1;
			bk->nacked++;
			(*acks_out)++;
			if (bk->times[sender][buf.s[i].seq] > 0)
				bk->distinct_acked++;
		} else {
			bk->failed[sender][buf.s[i].seq] = 1;
			bk->nfailed++;
			if (!broker_gone(buf.s[i].err))
				fail_msg("sender %d: number %u: %s", sender,
				    buf.s[i].seq, strerror(buf.s[i].err));
		}
	}
	return 0;
}

static void
test_broker_killed_20_times_loses_no_acknowledged_message(void **state)
{
	struct fix *f = *state;
	struct kt_books *bk = calloc(1, sizeof(*bk));
	struct kid *snd[KT_SENDERS], *rcv[KT_RECEIVERS];
	int snd_eof[KT_SENDERS] = { 0 }, kills = 0, senders_left = KT_SENDERS;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	long long t0 = test_now_ms(), idle_since;
	uint32_t since_kill = 0, gap, missing = 0, arrived_failed = 0;
	struct ipc_mbox_info info;
	struct ipc_conn *c;

	assert_non_null(bk);
	f->heap = bk;
	for (int r = 0; r <= KT_RECEIVERS; r++)
		for (int s = 0; s < KT_SENDERS; s++)
			bk->last_plain[r][s] = -1;
	print_message("seed %u, %d senders x %d messages\n", seed,
	    KT_SENDERS, KT_PER_SENDER);
	srand(seed);
	gap = KT_GAP_MIN + (uint32_t)rand() % (KT_GAP_MAX - KT_GAP_MIN);
	broker_start(&f->b, NULL);
	c = broker_open(&f->b);
	box_create(c, KT_BOX, 1, -1, -1, -1);
	ipc_close(c);
	for (int i = 0; i < KT_RECEIVERS; i++)
		rcv[i] = kid_start(f, kt_receiver, NULL);
	for (int i = 0; i < KT_SENDERS; i++)
		snd[i] = kid_start(f, kt_sender, (void *)(uintptr_t)i);

	idle_since = test_now_ms();
	for (;;) {
		struct pollfd pf[KT_SENDERS + KT_RECEIVERS];
		int n = 0, r;

		if (senders_left == 0 && bk->distinct_acked == bk->nacked)
			break;
		for (int i = 0; i < KT_SENDERS; i++)
			pf[n++] = (struct pollfd){ .fd = snd_eof[i] ? -1 :
			    snd[i]->rep, .events = POLLIN };
		for (int i = 0; i < KT_RECEIVERS; i++)
			pf[n++] = (struct pollfd){ .fd = rcv[i]->rep,
			    .events = POLLIN };
		r = poll(pf, (nfds_t)n, 100);
		if (r < 0 && errno != EINTR)
			fail_msg("poll: %s", strerror(errno));
		if (r <= 0) {
			if (test_now_ms() - idle_since > KT_IDLE_MS)
				break;
			continue;
		}
		idle_since = test_now_ms();
		for (int i = 0; i < KT_SENDERS; i++) {
			int status;

			if (pf[i].revents == 0)
				continue;
			if (kt_read(bk, snd[i], i, -1, &since_kill) == 0)
				continue;
			snd_eof[i] = 1;
			senders_left--;
			status = kid_reap(snd[i]);
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				fail_msg("sender %d ended with status 0x%x "
				    "after %u sends", i, status,
				    bk->sent_done[i]);
		}
		for (int i = 0; i < KT_RECEIVERS; i++) {
			if (pf[KT_SENDERS + i].revents == 0)
				continue;
			if (kt_read(bk, rcv[i], -1, i, &since_kill) == 1)
				fail_msg("receiver %d exited by itself "
				    "(status 0x%x)", i, kid_reap(rcv[i]));
		}
		if (kills < KT_KILLS && since_kill >= gap) {
			broker_kill9(f);
			broker_start(&f->b, NULL);
			kills++;
			since_kill = 0;
			gap = KT_GAP_MIN + (uint32_t)rand() %
			    (KT_GAP_MAX - KT_GAP_MIN);
		}
	}
	/* Whatever the receivers did not take (copies, sends that failed
	 * yet were accepted): the test takes it, then stops them. */
	c = fix_open(f);
	for (;;) {
		struct ipc_msg_info mi;
		struct kt_rrep rep;
		struct dmsg m;
		ssize_t r = ipc_recv_timed(c, KT_BOX, &m, sizeof(m), 0, &mi);

		if (r < 0) {
			assert_int_equal(errno, EAGAIN);
			break;
		}
		rep.bogus = !dmsg_ok(&m, r);
		rep.sender = m.sender;
		rep.seq = m.seq;
		rep.flags = mi.flags;
		kt_count(bk, KT_RECEIVERS, &rep);
	}
	for (int i = 0; i < KT_RECEIVERS; i++) {
		int status;

		fd_close(&rcv[i]->cmd);
		while (test_wait_readable(rcv[i]->rep, TEST_WAIT_MS) == 1 &&
		    kt_read(bk, rcv[i], -1, i, &since_kill) == 0)
			;
		status = kid_reap(rcv[i]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("receiver %d ended with status 0x%x", i,
			    status);
	}
	for (int s = 0; s < KT_SENDERS; s++)
		for (int q = 0; q < KT_PER_SENDER; q++) {
			if (bk->acked[s][q] && bk->times[s][q] == 0)
				missing++;
			if (bk->failed[s][q] && bk->times[s][q] > 0)
				arrived_failed++;
		}
	print_message("%u acknowledged, %u sends failed with the broker "
	    "gone (%u of them arrived all the same); %u copies received, "
	    "%u flagged redelivered; %d kills; %lld ms\n", bk->nacked,
	    bk->nfailed, arrived_failed, bk->copies, bk->flagged, kills,
	    test_now_ms() - t0);
	if (missing > 0) {
		char list[256] = "";
		size_t len = 0;

		for (int s = 0; s < KT_SENDERS && len < 200; s++)
			for (int q = 0; q < KT_PER_SENDER && len < 200; q++)
				if (bk->acked[s][q] && bk->times[s][q] == 0)
					len += (size_t)snprintf(list + len,
					    sizeof(list) - len, " %d/%d", s,
					    q);
		fail_msg("%u acknowledged messages never received "
		    "(sender/number):%s", missing, list);
	}
	if (bk->first_bad[0] != '\0')
		fail_msg("%u bogus, %u received twice unflagged, %u out of "
		    "order; the first: %s", bk->bogus, bk->twice_plain,
		    bk->out_of_order, bk->first_bad);
	assert_int_equal(senders_left, 0);
	assert_int_equal(kills, KT_KILLS);
	assert_int_equal(bk->nacked + bk->nfailed,
	    KT_SENDERS * KT_PER_SENDER);
	/* Every copy was acknowledged: after a clean restart nothing is
	 * left. */
	assert_int_equal(ipc_flush(c), 0);
	assert_int_equal(ipc_mbox_stat(c, KT_BOX, &info), 0);
	assert_int_equal(info.depth, 0);
	fix_close_conns(f);
	broker_stop(&f->b);
	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_stat(c, KT_BOX, &info), 0);
	assert_int_equal(info.durable, 1);
	if (info.depth != 0)
		fail_msg("after a clean restart %u acknowledged messages "
		    "came back", info.depth);
	broker_stop(&f->b);
}

/* === the shim ============================================================ */

#define NEEDS_SHIM() do { \
	if (UNDER_ASAN) { \
		print_message("the sanitizers refuse an LD_PRELOAD shim: " \
		    "skipped\n"); \
		skip(); \
	} \
} while (0)

static const char *
shim_path(void)
{
	static char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s",
	    test_build_path("tests/.libs/powerfail.so"));
	if (access(path, R_OK) != 0)
		fail_msg("%s is missing: make tests/powerfail.la", path);
	return path;
}

/* Start the broker (with extra arguments, may be NULL) under the shim:
 * power-loss mode on the journal's files, and rule ("NAME=VALUE", may be
 * NULL). */
static void
broker_start_shim(struct fix *f, const char *rule, const char *const *extra)
{
	char line[PATH_MAX + 64], maps[64];
	FILE *m;
	int found = 0;

	fix_dir(f);
	assert_int_equal(setenv("LD_PRELOAD", shim_path(), 1), 0);
	assert_int_equal(setenv("POWERFAIL_DIR", f->b.dir, 1), 0);
	assert_int_equal(setenv("POWERFAIL_SUFFIX", ".log", 1), 0);
	assert_int_equal(setenv("POWERFAIL_HOLD", "1", 1), 0);
	if (rule != NULL) {
		char name[64];
		const char *eq = strchr(rule, '=');

		assert_non_null(eq);
		snprintf(name, sizeof(name), "%.*s", (int)(eq - rule), rule);
		assert_int_equal(setenv(name, eq + 1, 1), 0);
	}
	broker_start(&f->b, extra);
	shim_env_clear();
	/* The shim is in the broker, or this test proves nothing. */
	snprintf(maps, sizeof(maps), "/proc/%ld/maps", (long)f->b.proc.pid);
	assert_non_null(m = fopen(maps, "re"));
	while (fgets(line, sizeof(line), m) != NULL)
		if (strstr(line, "powerfail.so") != NULL)
			found = 1;
	fclose(m);
	if (!found)
		fail_msg("the broker runs without the shim");
}

/* Take every message of box now, without waiting: each must be one of
 * ours, from senders first..first+nsenders-1, flagged redelivered, each
 * sender's numbers increasing.  got[(sender - first) * max + number]
 * counts the copies; returns how many there were. */
static uint32_t
drain_recovered(struct ipc_conn *c, const char *box, uint32_t first,
    uint32_t nsenders, uint8_t *got, uint32_t max)
{
	int64_t last[8];
	uint32_t n = 0;

	assert_true(nsenders <= 8);
	for (uint32_t i = 0; i < nsenders; i++)
		last[i] = -1;
	for (;;) {
		struct ipc_msg_info info;
		struct dmsg m;
		ssize_t r = ipc_recv_timed(c, box, &m, sizeof(m), 0, &info);
		uint32_t s;

		if (r < 0) {
			if (errno != EAGAIN)
				fail_msg("recv %s: %s", box, strerror(errno));
			return n;
		}
		s = m.sender - first;
		if (!dmsg_ok(&m, r) || m.sender < first || s >= nsenders ||
		    m.seq >= max)
			fail_msg("%s: a message not as sent", box);
		if (!(info.flags & IPC_MSG_REDELIVERED))
			fail_msg("%s: recovered message %u/%u not flagged "
			    "redelivered", box, m.sender, m.seq);
		if ((int64_t)m.seq <= last[s])
			fail_msg("%s: message %u/%u after %lld", box,
			    m.sender, m.seq, (long long)last[s]);
		if (got[(size_t)s * max + m.seq]++ > 0)
			fail_msg("%s: message %u/%u twice", box, m.sender,
			    m.seq);
		last[s] = m.seq;
		n++;
	}
}

/* === 2. a power loss ===================================================== */

#define PL_SENDERS	4
#define PL_MAX		5000
#define PL_KILL_AT	300	/* acknowledged sends, then the power fails */

struct pl_sender {
	struct fix *f;
	pthread_t t;
	struct ipc_conn *c;
	uint32_t id;
	uint8_t acked[PL_MAX];
	uint32_t nacked, sent;
	int err;
};

struct pl_shared {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint32_t acked, done;
};

static struct pl_shared pl_sh = { PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_COND_INITIALIZER, 0, 0 };

/* Blocking sends until the broker is gone. */
static void *
pl_send_main(void *arg)
{
	struct pl_sender *s = arg;

	for (uint32_t q = 0; q < PL_MAX; q++) {
		struct dmsg m;

		dmsg_make(&m, s->id, q);
		s->sent = q + 1;
		if (ipc_send_timed(s->c, "pl", &m, sizeof(m), TEST_WAIT_MS,
		    NULL) < 0) {
			s->err = errno;
			break;
		}
		s->acked[q] = 1;
		s->nacked++;
		pthread_mutex_lock(&pl_sh.mu);
		pl_sh.acked++;
		pthread_cond_broadcast(&pl_sh.cv);
		pthread_mutex_unlock(&pl_sh.mu);
	}
	pthread_mutex_lock(&pl_sh.mu);
	pl_sh.done++;
	pthread_cond_broadcast(&pl_sh.cv);
	pthread_mutex_unlock(&pl_sh.mu);
	return NULL;
}

/*
 * Senders on PL_SENDERS threads, blocking sends to a durable mailbox of a
 * broker under the shim (power-loss mode, and rule), until the power
 * fails: after PL_KILL_AT acknowledged sends, or (hang) once the shim
 * says a sync hangs, a batch written and not synced.  Then the broker
 * comes back without the shim: every acknowledged message is there; an
 * unacknowledged one only if its sync ended (not with hang: none did).
 */
static void
pl_run(struct fix *f, const char *rule, int hang)
{
	struct pl_sender *s = calloc(PL_SENDERS, sizeof(*s));
	uint8_t *got = calloc(PL_SENDERS, PL_MAX);
	uint32_t acked = 0, lost = 0, extra = 0, total = 0;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	struct timespec until;

	assert_non_null(s);
	assert_non_null(got);
	f->heap = s;
	broker_start_shim(f, rule, NULL);
	c = fix_open(f);
	box_create(c, "pl", 1, PL_SENDERS * PL_MAX, -1, -1);
	pl_sh.acked = pl_sh.done = 0;
	for (int i = 0; i < PL_SENDERS; i++) {
		s[i].f = f;
		s[i].id = (uint32_t)i;
		s[i].c = broker_open(&f->b);
		assert_int_equal(pthread_create(&s[i].t, NULL, pl_send_main,
		    &s[i]), 0);
	}
	/* The power fails with sends in flight. */
	if (hang) {
		if (test_wait_line(f->b.proc.err, "powerfail: hang", NULL, 0,
		    TEST_WAIT_MS) < 0)
			fail_msg("no sync hung");
	} else {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += TEST_WAIT_MS / 1000;
		pthread_mutex_lock(&pl_sh.mu);
		while (pl_sh.acked < PL_KILL_AT && pl_sh.done < PL_SENDERS &&
		    pthread_cond_timedwait(&pl_sh.cv, &pl_sh.mu, &until) == 0)
			;
		pthread_mutex_unlock(&pl_sh.mu);
	}
	broker_kill9(f);
	for (int i = 0; i < PL_SENDERS; i++) {
		pthread_join(s[i].t, NULL);
		ipc_close(s[i].c);
		acked += s[i].nacked;
		if (s[i].err != 0 && !broker_gone(s[i].err))
			fail_msg("sender %d: %s", i, strerror(s[i].err));
	}
	if (!hang && acked < PL_KILL_AT)
		fail_msg("only %u sends acknowledged before the deadline",
		    acked);
	fix_close_conns(f);

	/* Back without the shim: what was synced is all there is. */
	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_stat(c, "pl", &info), 0);
	assert_int_equal(info.durable, 1);
	(void)drain_recovered(c, "pl", 0, PL_SENDERS, got, PL_MAX);
	for (int i = 0; i < PL_SENDERS; i++)
		for (uint32_t q = 0; q < PL_MAX; q++) {
			uint8_t g = got[(size_t)i * PL_MAX + q];

			total += g;
			if (s[i].acked[q] && g == 0)
				lost++;
			if (!s[i].acked[q] && g > 0)
				extra++;
		}
	print_message("%u acknowledged before the power failed, %u "
	    "recovered (%u unacknowledged sends made it), %u lost; %llu "
	    "records replayed, %llu torn bytes cut\n", acked, total, extra,
	    lost, (unsigned long long)broker_counter(c, "journal_records_replayed"),
	    (unsigned long long)broker_counter(c, "journal_torn_bytes"));
	free(got);
	assert_int_equal(lost, 0);
	/* Only a send in flight (one per sender) may have made it
	 * unacknowledged: its sync ended, its answer never came.  With a
	 * hung sync none ended. */
	if (hang)
		assert_int_equal(extra, 0);
	else
		assert_true(extra <= PL_SENDERS);
	broker_stop(&f->b);
}

static void
test_power_loss_loses_no_acknowledged_message(void **state)
{
	NEEDS_SHIM();
	pl_run(*state, NULL, 0);
}

/* The 25th sync never returns: its batch is written (held by the shim),
 * never on disk; the senders in it were never answered. */
static void
test_power_loss_mid_sync_keeps_exactly_the_acknowledged(void **state)
{
	NEEDS_SHIM();
	pl_run(*state, "POWERFAIL_SYNC_HANG=25", 1);
}

/* === 3. write and sync errors ============================================ */

#define ER_SENDS	40

/* Blocking sends one at a time (one batch each) under rule: exactly one
 * fails, with want; the broker stays up; after a power loss every
 * acknowledged one is there, the failed one is not. */
static void
errors_run(struct fix *f, const char *rule, int want)
{
	uint8_t acked[ER_SENDS] = { 0 }, got[ER_SENDS] = { 0 };
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	int failed_at = -1, nfailed = 0, err = 0;
	uint64_t werr;

	NEEDS_SHIM();
	broker_start_shim(f, rule, NULL);
	c = fix_open(f);
	box_create(c, "err", 1, -1, -1, -1);
	box_create(c, "plain", 0, -1, -1, -1);
	for (int i = 0; i < ER_SENDS; i++) {
		struct dmsg m;

		dmsg_make(&m, 7, (uint32_t)i);
		if (ipc_send_timed(c, "err", &m, sizeof(m), TEST_WAIT_MS,
		    NULL) == 0) {
			acked[i] = 1;
			continue;
		}
		if (nfailed++ == 0) {
			failed_at = i;
			err = errno;
		}
	}
	print_message("%s: send %d of %d failed: %s\n", rule, failed_at + 1,
	    ER_SENDS, failed_at < 0 ? "none" : strerror(err));
	if (nfailed != 1)
		fail_msg("%d sends failed, expected exactly one", nfailed);
	if (err != want)
		fail_msg("the failed send: %s, expected %s", strerror(err),
		    strerror(want));
	/* The broker is up, the failed message not queued. */
	assert_int_equal(ipc_mbox_stat(c, "err", &info), 0);
	assert_int_equal(info.depth, ER_SENDS - 1);
	assert_int_equal(ipc_send(c, "plain", "still here", 11), 0);
	werr = broker_counter(c, "journal_write_errors");
	print_message("journal_write_errors %llu, journal_syncs %llu\n",
	    (unsigned long long)werr,
	    (unsigned long long)broker_counter(c, "journal_syncs"));
	assert_true(werr >= 1);
	fix_close_conns(f);
	broker_kill9(f);

	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(drain_recovered(c, "err", 7, 1, got, ER_SENDS),
	    ER_SENDS - 1);
	for (int i = 0; i < ER_SENDS; i++)
		if (got[i] != acked[i])
			fail_msg("message %d: acknowledged %d, recovered %d",
			    i, acked[i], got[i]);
	broker_stop(&f->b);
}

static void
test_enospc_on_write_fails_that_send_only(void **state)
{
	errors_run(*state, "POWERFAIL_WRITE_ERR=5:ENOSPC", ENOSPC);
}

static void
test_eio_on_write_fails_that_send_only(void **state)
{
	errors_run(*state, "POWERFAIL_WRITE_ERR=5:EIO", EIO);
}

static void
test_eio_on_sync_fails_that_send_only(void **state)
{
	errors_run(*state, "POWERFAIL_SYNC_ERR=5:EIO", EIO);
}

static void
test_enospc_on_sync_fails_that_send_only(void **state)
{
	errors_run(*state, "POWERFAIL_SYNC_ERR=5:ENOSPC", ENOSPC);
}

/* The disk stays full from the 5th write on: every durable send fails
 * with ENOSPC from then on, an async one through ipc_send_failure();
 * the broker serves everything else; what was acknowledged before
 * survives. */
static void
test_full_disk_fails_every_durable_send_broker_stays_up(void **state)
{
	struct fix *f = *state;
	uint8_t acked[ER_SENDS] = { 0 }, got[ER_SENDS] = { 0 };
	struct ipc_send_failure fl;
	struct ipc_conn *c;
	struct dmsg m;
	uint64_t sid = 0;
	int first = -1;
	char buf[64];

	NEEDS_SHIM();
	broker_start_shim(f, "POWERFAIL_WRITE_ERR=5+:ENOSPC", NULL);
	c = fix_open(f);
	box_create(c, "full", 1, -1, -1, -1);
	box_create(c, "plain", 0, -1, -1, -1);
	for (int i = 0; i < ER_SENDS; i++) {
		dmsg_make(&m, 3, (uint32_t)i);
		if (ipc_send_timed(c, "full", &m, sizeof(m), TEST_WAIT_MS,
		    NULL) == 0) {
			if (first >= 0)
				fail_msg("send %d succeeded after send %d "
				    "failed: the disk is still full", i,
				    first);
			acked[i] = 1;
			continue;
		}
		if (errno != ENOSPC)
			fail_msg("send %d: %s, expected ENOSPC", i,
			    strerror(errno));
		if (first < 0)
			first = i;
	}
	print_message("the first %d sends acknowledged, then ENOSPC\n",
	    first);
	assert_true(first >= 0);
	/* An async send: the failure comes back later. */
	dmsg_make(&m, 3, ER_SENDS - 1);
	assert_int_equal(ipc_send_async(c, "full", &m, sizeof(m), &sid), 0);
	if (test_wait_readable(ipc_fd(c), TEST_WAIT_MS) != 1)
		fail_msg("no failure reported for the async send");
	assert_int_equal(ipc_send_failure(c, &fl), 0);
	assert_int_equal(fl.send_id, sid);
	assert_int_equal(fl.error, ENOSPC);
	/* Up: everything else works. */
	assert_int_equal(ipc_send(c, "plain", "fine", 5), 0);
	assert_int_equal(ipc_recv_timed(c, "plain", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 5);
	assert_int_equal(ipc_recv_timed(c, "full", &m, sizeof(m), 0, NULL),
	    (ssize_t)sizeof(m));
	assert_true(dmsg_ok(&m, sizeof(m)));
	assert_int_equal(m.seq, 0);
	acked[0] = 0;		/* consumed */
	assert_true(broker_counter(c, "journal_write_errors") >= 1);
	fix_close_conns(f);
	broker_kill9(f);

	broker_start(&f->b, NULL);
	c = fix_open(f);
	(void)drain_recovered(c, "full", 3, 1, got, ER_SENDS);
	/* Message 0 was consumed: it may come back (its acknowledgement
	 * may not have reached the disk), flagged. */
	got[0] = 0;
	for (int i = 0; i < ER_SENDS; i++)
		if (got[i] != acked[i])
			fail_msg("message %d: acknowledged %d, recovered %d",
			    i, acked[i], got[i]);
	broker_stop(&f->b);
}

/* === 4. damage in the files ============================================== */

/* As daemon/journal.h lays them out. */
#define SEG_HDR		32
#define REC_HDR		9
#define DMG_COUNT	50
#define DMG_FLIP	20

static uint8_t *
file_read(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static int
seg_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The segment files of dir, in order (their numbers are fixed width);
 * returns how many. */
static int
segments(const char *dir, char names[][NAME_MAX + 1], int max)
{
	char *ptrs[64];
	char tmp[64][NAME_MAX + 1];
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "seg-", 4) == 0 &&
		    strlen(e->d_name) > 8 &&
		    strcmp(e->d_name + strlen(e->d_name) - 4, ".log") == 0 &&
		    n < max && n < 64) {
			snprintf(tmp[n], sizeof(tmp[n]), "%s", e->d_name);
			ptrs[n] = tmp[n];
			n++;
		}
	closedir(d);
	qsort(ptrs, (size_t)n, sizeof(ptrs[0]), seg_name_cmp);
	for (int i = 0; i < n; i++)
		snprintf(names[i], NAME_MAX + 1, "%s", ptrs[i]);
	return n;
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static void
test_flipped_bit_and_torn_tail_skip_one_record_deliver_rest(void **state)
{
	struct fix *f = *state;
	char names[16][NAME_MAX + 1], path[PATH_MAX * 2 + NAME_MAX], needle[32];
	char line[1024], warned[1024] = "";
	uint8_t got[DMG_COUNT] = { 0 }, *buf;
	size_t len, off, last = 0, cut, rec_len;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	int nseg, flipped = 0, tail_msg = -1;
	uint8_t *hit;
	uint32_t n, want;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "dmg", 1, -1, -1, -1);
	for (uint32_t i = 0; i < DMG_COUNT; i++) {
		struct dmsg m;

		dmsg_make(&m, 5, i);
		assert_int_equal(ipc_send(c, "dmg", &m, sizeof(m)), 0);
	}
	fix_close_conns(f);
	broker_stop(&f->b);

	nseg = segments(state_dir(f), names, 16);
	assert_true(nseg >= 1);
	/* One bit of message DMG_FLIP's text, in whichever segment. */
	snprintf(needle, sizeof(needle), "DMSG-05-%06u-", DMG_FLIP);
	for (int i = 0; i < nseg && !flipped; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%s", state_dir(f), names[i]);
		buf = file_read(path, &len);
		hit = memmem(buf, len, needle, strlen(needle));
		if (hit != NULL) {
			uint8_t b;

			off = (size_t)(hit - buf) + strlen(needle) + 5;
			b = buf[off] ^ 0x10;
			assert_true((fd = open(path, O_WRONLY)) >= 0);
			assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
			close(fd);
			flipped = 1;
		}
		free(buf);
	}
	assert_true(flipped);
	/* The last record of the last segment, cut in its middle. */
	snprintf(path, sizeof(path), "%s/%s", state_dir(f), names[nseg - 1]);
	buf = file_read(path, &len);
	assert_true(len > SEG_HDR);
	assert_memory_equal(buf, "IPCJRNL1", 8);
	for (off = SEG_HDR; off + REC_HDR <= len;
	    off += REC_HDR + le32(buf + off)) {
		if (off + REC_HDR + le32(buf + off) > len)
			break;
		last = off;
	}
	assert_true(last >= SEG_HDR);
	rec_len = REC_HDR + le32(buf + last);
	cut = last + rec_len / 2;
	hit = memmem(buf + last, rec_len, "DMSG-05-", 8);
	if (hit != NULL)
		tail_msg = atoi((char *)hit + 8);
	free(buf);
	assert_int_equal(truncate(path, (off_t)cut), 0);
	print_message("%d segment(s); bit flipped in message %d; last "
	    "record (%s %d) cut to %zu of %zu bytes\n", nseg, DMG_FLIP,
	    tail_msg >= 0 ? "message" : "not a message", tail_msg,
	    cut - last, rec_len);

	broker_start(&f->b, NULL);
	/* Replay logged the damage before the broker said it was ready:
	 * the lines are in the pipe already. */
	while (test_read_line(f->b.proc.err, line, sizeof(line), 200) >= 0)
		if (strncmp(line, "ipcd: warn: ", 12) == 0 &&
		    (warned[0] == '\0' || strstr(line, "seg-") != NULL))
			snprintf(warned, sizeof(warned), "%s", line);
	print_message("logged: %s\n", warned[0] ? warned : "(nothing)");
	c = fix_open(f);
	print_message("journal_damaged %llu, journal_torn_bytes %llu, "
	    "journal_records_replayed %llu\n",
	    (unsigned long long)broker_counter(c, "journal_damaged"),
	    (unsigned long long)broker_counter(c, "journal_torn_bytes"),
	    (unsigned long long)broker_counter(c, "journal_records_replayed"));
	assert_int_equal(broker_counter(c, "journal_damaged"), 1);
	assert_true(broker_counter(c, "journal_torn_bytes") > 0);
	if (warned[0] == '\0')
		fail_msg("the damage was not logged as a warning");
	want = DMG_COUNT - 1 - (tail_msg >= 0 && tail_msg != DMG_FLIP);
	assert_int_equal(ipc_mbox_stat(c, "dmg", &info), 0);
	assert_int_equal(info.depth, want);
	n = drain_recovered(c, "dmg", 5, 1, got, DMG_COUNT);
	assert_int_equal(n, want);
	for (int i = 0; i < DMG_COUNT; i++)
		if (got[i] != (i != DMG_FLIP && i != tail_msg))
			fail_msg("message %d: recovered %d", i, got[i]);
	broker_stop(&f->b);
}

/* === 5. metadata and permissions ======================================== */

#define UID_OWNER	41001
#define GID_GROUP	41002
#define UID_OTHER	41003
#define UID_MEMBER	41004

/* A kid as another user: it runs fn and exits with its return, or 120
 * when it could not become uid/gid. */
struct perm_arg {
	uid_t uid;
	gid_t gid;
	int (*fn)(struct ipc_conn *c);
};

static int
perm_kid(struct fix *f, int in, int out, void *arg)
{
	struct perm_arg *pa = arg;
	struct ipc_conn *c;
	int r;

	(void)in;
	(void)out;
	if (chdir(f->b.dir) < 0 || setgroups(0, NULL) < 0 ||
	    setgid(pa->gid) < 0 || setuid(pa->uid) < 0)
		return 120;
	if ((c = ipc_open("unix:ipcd.sock")) == NULL)
		return 121;
	r = pa->fn(c);
	ipc_close(c);
	return r;
}

/* 0 when the call failed with EACCES. */
#define DENIED(call)	((call) < 0 && errno == EACCES ? 0 : 1)

static int
as_other(struct ipc_conn *c)
{
	char buf[64];

	/* "meta" is 0640: nothing for others. */
	if (DENIED(ipc_send(c, "meta", "x", 2)))
		return 1;
	if (DENIED(ipc_recv_timed(c, "meta", buf, sizeof(buf), 0, NULL)))
		return 2;
	if (DENIED(ipc_mbox_chmod(c, "meta", 0666)))
		return 3;
	if (DENIED(ipc_mbox_delete(c, "meta")))
		return 4;
	/* "drop" is root's, 0622: others may send, not receive. */
	if (ipc_send(c, "drop", "from-other", 11) < 0)
		return 5;
	if (DENIED(ipc_recv_timed(c, "drop", buf, sizeof(buf), 0, NULL)))
		return 6;
	return 0;
}

static int
as_member(struct ipc_conn *c)
{
	struct ipc_msg_info info;
	struct dmsg m;

	/* Group members may receive from "meta" (0640), not send. */
	if (DENIED(ipc_send(c, "meta", "x", 2)))
		return 1;
	if (ipc_recv_timed(c, "meta", &m, sizeof(m), TEST_WAIT_MS,
	    &info) != (ssize_t)sizeof(m) || !dmsg_ok(&m, sizeof(m)) ||
	    m.seq != 0 || !(info.flags & IPC_MSG_REDELIVERED))
		return 2;
	if (DENIED(ipc_mbox_chmod(c, "meta", 0666)))
		return 3;
	return 0;
}

static int
as_owner(struct ipc_conn *c)
{
	struct ipc_mbox_info info;

	if (ipc_send(c, "meta", "from-owner", 11) < 0)
		return 1;
	if (ipc_mbox_chmod(c, "meta", 0660) < 0)
		return 2;
	if (ipc_mbox_stat(c, "meta", &info) < 0 || info.mode != 0660)
		return 3;
	return 0;
}

static void
perm_expect(struct fix *f, const char *who, uid_t uid, gid_t gid,
    int (*fn)(struct ipc_conn *))
{
	struct perm_arg pa = { uid, gid, fn };
	struct kid *k = kid_start(f, perm_kid, &pa);
	int status = kid_reap(k);

	if (!WIFEXITED(status))
		fail_msg("%s: status 0x%x", who, status);
	if (WEXITSTATUS(status) != 0)
		fail_msg("%s (uid %ld): check %d failed", who, (long)uid,
		    WEXITSTATUS(status));
}

static void
test_restart_keeps_metadata_and_permissions(void **state)
{
	struct fix *f = *state;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	struct dmsg m;

	if (geteuid() != 0) {
		print_message("not root: cannot act as another user; "
		    "skipped\n");
		skip();
	}
	broker_start(&f->b, NULL);
	/* Others pass the directory (the kids reach the socket by a
	 * relative path after chdir). */
	assert_int_equal(chmod(f->b.dir, 0711), 0);
	c = fix_open(f);
	box_create(c, "meta", 1, 7, 4096, 0600);
	box_create(c, "drop", 1, -1, -1, 0600);
	for (uint32_t i = 0; i < 2; i++) {
		dmsg_make(&m, 9, i);
		assert_int_equal(ipc_send(c, "meta", &m, sizeof(m)), 0);
	}
	/* The broker answers a change of a durable mailbox once it is on
	 * disk: killed right after, it keeps it. */
	assert_int_equal(ipc_mbox_chmod(c, "meta", 0640), 0);
	assert_int_equal(ipc_mbox_chown(c, "meta", UID_OWNER, GID_GROUP), 0);
	assert_int_equal(ipc_mbox_chmod(c, "drop", 0622), 0);
	fix_close_conns(f);
	broker_kill9(f);

	broker_start(&f->b, NULL);
	assert_int_equal(chmod(f->b.path, 0777), 0);
	c = fix_open(f);
	assert_int_equal(ipc_mbox_stat(c, "meta", &info), 0);
	assert_int_equal(info.durable, 1);
	assert_int_equal(info.capacity, 7);
	assert_int_equal(info.max_bytes, 4096);
	assert_int_equal(info.mode, 0640);
	assert_int_equal(info.uid, UID_OWNER);
	assert_int_equal(info.gid, GID_GROUP);
	assert_int_equal(info.depth, 2);
	assert_int_equal(ipc_mbox_stat(c, "drop", &info), 0);
	assert_int_equal(info.durable, 1);
	assert_int_equal(info.mode, 0622);
	assert_int_equal(info.uid, 0);
	perm_expect(f, "another user", UID_OTHER, UID_OTHER, as_other);
	perm_expect(f, "a member of the group", UID_MEMBER, GID_GROUP,
	    as_member);
	perm_expect(f, "the owner", UID_OWNER, UID_OWNER, as_owner);
	assert_int_equal(ipc_mbox_stat(c, "meta", &info), 0);
	assert_int_equal(info.mode, 0660);
	/* Message 1 and the owner's. */
	assert_int_equal(info.depth, 2);
	assert_int_equal(ipc_mbox_stat(c, "drop", &info), 0);
	assert_int_equal(info.depth, 1);
	broker_stop(&f->b);
}

/* === 6. durable or not =================================================== */

struct list_seen {
	int plain, kept;
};

static int
list_cb(const struct ipc_mbox_info *info, void *arg)
{
	struct list_seen *ls = arg;

	if (strcmp(info->name, "plain") == 0)
		ls->plain = 1 + info->durable;
	else if (strcmp(info->name, "kept") == 0)
		ls->kept = 1 + info->durable;
	return 0;
}

static void
test_nondurable_mailbox_not_recovered_stat_says_which(void **state)
{
	struct fix *f = *state;
	struct list_seen ls = { 0, 0 };
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	struct stat st;
	struct dmsg m;
	uint8_t got[4] = { 0 };

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "plain", 0, -1, -1, -1);
	/* The state directory comes with the first durable mailbox. */
	errno = 0;
	assert_int_equal(stat(state_dir(f), &st), -1);
	assert_int_equal(errno, ENOENT);
	box_create(c, "kept", 1, -1, -1, -1);
	assert_int_equal(stat(state_dir(f), &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(ipc_mbox_stat(c, "plain", &info), 0);
	assert_int_equal(info.durable, 0);
	assert_int_equal(ipc_mbox_stat(c, "kept", &info), 0);
	assert_int_equal(info.durable, 1);
	assert_int_equal(ipc_mbox_list(c, list_cb, &ls), 0);
	assert_int_equal(ls.plain, 1);
	assert_int_equal(ls.kept, 2);
	dmsg_make(&m, 1, 0);
	assert_int_equal(ipc_send(c, "plain", &m, sizeof(m)), 0);
	assert_int_equal(ipc_send(c, "kept", &m, sizeof(m)), 0);
	assert_int_equal(broker_counter(c, "durable_messages"), 1);
	/* Deleted with a message in it: gone for good (its deletion is on
	 * disk when the call returns). */
	box_create(c, "deleted", 1, -1, -1, -1);
	assert_int_equal(ipc_send(c, "deleted", &m, sizeof(m)), 0);
	assert_int_equal(ipc_mbox_delete(c, "deleted"), 0);
	assert_true(broker_counter(c, "journal_syncs") >= 1);
	assert_true(broker_counter(c, "journal_disk_bytes") > 0);
	fix_close_conns(f);
	broker_kill9(f);

	broker_start(&f->b, NULL);
	c = fix_open(f);
	errno = 0;
	assert_int_equal(ipc_mbox_stat(c, "plain", &info), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(ipc_mbox_stat(c, "deleted", &info), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(ipc_mbox_stat(c, "kept", &info), 0);
	assert_int_equal(info.durable, 1);
	assert_int_equal(info.depth, 1);
	assert_int_equal(broker_counter(c, "durable_messages"), 1);
	assert_true(broker_counter(c, "journal_records_replayed") >= 1);
	assert_int_equal(drain_recovered(c, "kept", 1, 1, got, 4), 1);
	assert_int_equal(broker_counter(c, "durable_messages"), 0);
	/* A mailbox made durable-less again under the same name is not. */
	box_create(c, "plain", 0, -1, -1, -1);
	assert_int_equal(ipc_mbox_stat(c, "plain", &info), 0);
	assert_int_equal(info.durable, 0);
	broker_stop(&f->b);
}

/* A second broker on the same state directory: refused at its start
 * (exit 1), or its first durable create (EBUSY). */
static void
test_second_broker_on_same_state_dir_is_refused(void **state)
{
	struct fix *f = *state;
	char sock[PATH_MAX + 16], where[PATH_MAX + 24], line[PATH_MAX + 64];
	char sd[PATH_MAX + 8];
	char *argv[8];
	struct ipc_conn *c, *c2;
	struct ipc_mbox_attr attr;
	int status;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "mine", 1, -1, -1, -1);
	snprintf(sd, sizeof(sd), "%s", state_dir(f));
	snprintf(sock, sizeof(sock), "%s/second.sock", f->b.dir);
	snprintf(where, sizeof(where), "unix:%s", sock);
	argv[0] = strdup(test_build_path("daemon/ipcd"));
	argv[1] = "--socket";
	argv[2] = sock;
	argv[3] = "--state-dir";
	argv[4] = sd;
	argv[5] = NULL;
	assert_non_null(argv[0]);
	assert_int_equal(test_spawn(&f->extra, argv), 0);
	free(argv[0]);
	if (test_wait_line(f->extra.out, "ipcd: ready on ", line,
	    sizeof(line), TEST_WAIT_MS) < 0) {
		/* It went: how. */
		status = test_stop(&f->extra);
		print_message("the second broker exited at its start\n");
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 1);
	} else {
		print_message("the second broker started; its durable "
		    "create:\n");
		assert_non_null(c2 = ipc_open(where));
		ipc_mbox_attr_init(&attr);
		attr.durable = 1;
		errno = 0;
		assert_int_equal(ipc_mbox_create(c2, "theirs", &attr, NULL),
		    -1);
		assert_int_equal(errno, EBUSY);
		ipc_close(c2);
		status = test_stop(&f->extra);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	/* The first one never noticed. */
	assert_int_equal(ipc_send(c, "mine", "ok", 3), 0);
	broker_stop(&f->b);
}

/* A full durable mailbox whose message goes straight to a waiting
 * receiver once synced has room again: a sender parked for that room
 * comes in (it was left parked, and the mailbox stuck). */
static void
test_sender_parked_on_full_durable_mailbox_gets_in(void **state)
{
	struct fix *f = *state;
	struct ipc_conn *s, *r;
	char buf[16];
	long long t0;

	broker_start(&f->b, NULL);
	s = fix_open(f);
	r = fix_open(f);
	box_create(s, "one", 1, 1, -1, -1);
	/* The receiver waits in the broker before anything is sent. */
	assert_int_equal(ipc_recv_arm(r, "one"), 0);
	assert_int_equal(ipc_send_async(s, "one", "A", 2, NULL), 0);
	/* B finds the room taken by A (pending its sync) and parks. */
	t0 = test_now_ms();
	assert_int_equal(ipc_send_timed(s, "one", "B", 2, 5000, NULL), 0);
	print_message("B accepted after %lld ms\n", test_now_ms() - t0);
	assert_int_equal(ipc_recv_timed(r, "one", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 2);
	assert_string_equal(buf, "A");
	assert_int_equal(ipc_recv_timed(r, "one", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 2);
	assert_string_equal(buf, "B");
	broker_stop(&f->b);
}

/* === compaction ========================================================== */

#define CP_SEG		65536	/* --journal-segment-size: the smallest */
#define CP_ROUNDS	60
#define CP_CHURN	64	/* 1 KiB messages per round, sent and taken */

/* The journal's segment files now: how many, and their bytes. */
static void
seg_files(const char *dir, uint32_t *n, uint64_t *bytes)
{
	char path[PATH_MAX + 300];
	struct dirent *e;
	struct stat st;
	DIR *d = opendir(dir);

	assert_non_null(d);
	*n = 0;
	*bytes = 0;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "seg-", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		assert_int_equal(stat(path, &st), 0);
		(*n)++;
		*bytes += (uint64_t)st.st_size;
	}
	closedir(d);
}

/* One message nobody takes per round, beside a busy mailbox whose
 * messages are all taken: without compaction the old messages would
 * keep every segment (history: some 4 MiB here); with it the journal
 * stays within twice what lives plus a few segments, and a restart
 * brings back exactly the old messages, in order.  CP_POWER: the
 * broker runs under the power-loss shim and is killed in the middle of
 * a round (writes not synced are lost, removals of segments are not).
 * CP_HANG: under the shim, the first sync after a segment was removed
 * never returns, and the broker is killed then: had compaction let an
 * old segment go before its copies were synced, the messages would be
 * gone. */
enum { CP_PLAIN, CP_POWER, CP_HANG };

static void
cp_run(struct fix *f, int power)
{
	static const char *const extra[] = { "--journal-segment-size",
	    "65536", NULL };
	static uint8_t got[CP_ROUNDS];
	struct ipc_conn *c;
	struct dmsg m;
	uint64_t disk, most = 0, bytes, copied;
	uint32_t nseg, rounds = CP_ROUNDS, cut = CP_CHURN, acked = 0;
	char *big = calloc(1, 1024), *buf = malloc(2048);

	assert_non_null(big);
	assert_non_null(buf);
	if (power == CP_HANG) {
		broker_start_shim(f, "POWERFAIL_SYNC_HANG=unlink", extra);
	} else if (power) {
		unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();

		rounds = CP_ROUNDS / 2 + (uint32_t)(rand_r(&seed) %
		    (CP_ROUNDS / 2 + 1));
		cut = (uint32_t)(rand_r(&seed) % (CP_CHURN + 1));
		print_message("seed %u: the power fails in round %u after %u "
		    "of %d taken\n", seed, rounds, cut, CP_CHURN);
		broker_start_shim(f, NULL, extra);
	} else {
		broker_start(&f->b, extra);
	}
	c = fix_open(f);
	box_create(c, "kept", 1, CP_ROUNDS, -1, -1);
	box_create(c, "busy", 1, CP_CHURN, -1, -1);
	for (uint32_t r = 0; r < rounds; r++) {
		uint32_t take = power == CP_POWER && r + 1 == rounds ? cut :
		    CP_CHURN;

		dmsg_make(&m, 1, r);
		if (power == CP_HANG) {
			/* Until the sync hangs: then this times out. */
			if (ipc_send_timed(c, "kept", &m, sizeof(m), 1000,
			    NULL) < 0) {
				assert_int_equal(errno, ETIMEDOUT);
				break;
			}
			acked = r + 1;
		} else
			assert_int_equal(ipc_send(c, "kept", &m, sizeof(m)),
			    0);
		for (int i = 0; i < CP_CHURN; i++) {
			snprintf(big, 1024, "busy %u/%d", r, i);
			assert_int_equal(ipc_send_async(c, "busy", big, 1024,
			    NULL), 0);
		}
		for (uint32_t i = 0; i < take; i++) {
			ssize_t n = ipc_recv_timed(c, "busy", buf, 2048,
			    power == CP_HANG ? 1000 : TEST_WAIT_MS, NULL);

			if (n < 0 && power == CP_HANG && errno == ETIMEDOUT)
				break;
			assert_int_equal(n, 1024);
		}
		disk = broker_counter(c, "journal_disk_bytes");
		if (disk > most)
			most = disk;
	}
	if (power == CP_HANG) {
		if (test_wait_line(f->b.proc.err, "powerfail: hang", NULL, 0,
		    TEST_WAIT_MS) < 0)
			fail_msg("no sync hung: no segment was removed");
		print_message("a sync hung after a segment was removed; %u "
		    "kept messages acknowledged\n", acked);
		fix_close_conns(f);
		broker_kill9(f);
		broker_start(&f->b, extra);
		c = fix_open(f);
		memset(got, 0, sizeof(got));
		/* Every acknowledged one; the one whose sync hung is not
		 * on disk. */
		assert_int_equal(drain_recovered(c, "kept", 1, 1, got,
		    CP_ROUNDS), acked);
		free(big);
		free(buf);
		broker_stop(&f->b);
		return;
	}
	copied = broker_counter(c, "journal_copied");
	if (!power) {
		/* The last round's copies are let go after their sync, and
		 * the segments removed by the sync thread before it answers
		 * the next one: each blocking durable send below is such a
		 * sync (at most 8, not a wait on the clock). */
		for (int i = 0; i < 8 && (disk = broker_counter(c,
		    "journal_disk_bytes")) > 6 * CP_SEG; i++) {
			assert_int_equal(ipc_send(c, "busy", "sync", 5), 0);
			assert_int_equal(ipc_recv_timed(c, "busy", buf, 2048,
			    TEST_WAIT_MS, NULL), 5);
		}
		seg_files(state_dir(f), &nseg, &bytes);
		print_message("%u rounds of %d x 1 KiB taken beside %u kept: "
		    "journal at most %llu bytes, at the end %llu in %u "
		    "segment files; %llu compactions copied %llu messages; "
		    "%llu segments deleted\n", rounds, CP_CHURN, rounds,
		    (unsigned long long)most, (unsigned long long)bytes,
		    nseg, (unsigned long long)broker_counter(c,
		    "journal_compactions"), (unsigned long long)copied,
		    (unsigned long long)broker_counter(c,
		    "journal_segments_deleted"));
		assert_true(disk <= 6 * CP_SEG);
		assert_true(bytes <= 6 * CP_SEG);
		assert_true(nseg <= 7);
		/* All along, not only at the end (history: 60 segments). */
		assert_true(most <= 12 * CP_SEG);
	}
	assert_true(copied >= 1);
	assert_int_equal(broker_counter(c, "durable_messages"),
	    rounds + CP_CHURN - (power ? cut : CP_CHURN));
	fix_close_conns(f);
	broker_kill9(f);

	broker_start(&f->b, extra);
	c = fix_open(f);
	memset(got, 0, sizeof(got));
	assert_int_equal(drain_recovered(c, "kept", 1, 1, got, CP_ROUNDS),
	    rounds);
	assert_int_equal(broker_counter(c, "journal_damaged"), 0);
	if (power)
		print_message("%llu copies made before the power failed; "
		    "all %u kept messages back, in order, once each\n",
		    (unsigned long long)copied, rounds);
	else {
		struct ipc_msg_info info;
		char want[32];
		uint32_t again = 0;
		ssize_t n;

		/* Taken, all of them; the last round's acknowledgements
		 * (and the last "sync" message's) may have died with the
		 * broker before their sync (the promise allows it): only
		 * those may come back, flagged.
		 * The kept messages' blocking sends synced the others. */
		snprintf(want, sizeof(want), "busy %u/", rounds - 1);
		while ((n = ipc_recv_timed(c, "busy", buf, 2048, 0,
		    &info)) == 1024 || n == 5) {
			assert_true(info.flags & IPC_MSG_REDELIVERED);
			if (strcmp(buf, "sync") != 0)	/* or the last sync's */
				assert_memory_equal(buf, want, strlen(want));
			again++;
		}
		assert_int_equal(n, -1);
		assert_int_equal(errno, EAGAIN);
		print_message("%u of the last round's taken messages came "
		    "back (their acknowledgements not yet synced)\n",
		    again);
	}
	free(big);
	free(buf);
	broker_stop(&f->b);
}

static void
test_compaction_keeps_disk_to_queue_depth_not_history(void **state)
{
	cp_run(*state, CP_PLAIN);
}

static void
test_compaction_through_power_loss_loses_nothing(void **state)
{
	NEEDS_SHIM();
	cp_run(*state, CP_POWER);
}

static void
test_compaction_killed_after_a_removal_loses_nothing(void **state)
{
	NEEDS_SHIM();
	cp_run(*state, CP_HANG);
}

/* A message accepted under a larger --max-msg-size than the broker now
 * has: the broker does not start (no client could take it, and it
 * would block its mailbox), says what to do, and loses nothing. */
static void
test_recovered_message_over_max_msg_size_refuses_start(void **state)
{
	struct fix *f = *state;
	char sock[PATH_MAX + 16], line[PATH_MAX + 512];
	char sd[PATH_MAX + 8];
	char *argv[8];
	struct ipc_conn *c;
	char *big = malloc(100000), *buf = malloc(100000);
	int status, said = 0;

	assert_non_null(big);
	assert_non_null(buf);
	memset(big, 'x', 100000);
	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "big", 1, -1, -1, -1);
	assert_int_equal(ipc_send(c, "big", big, 100000), 0);
	assert_int_equal(ipc_send(c, "big", "small", 6), 0);
	fix_close_conns(f);
	broker_kill9(f);

	snprintf(sd, sizeof(sd), "%s", state_dir(f));
	snprintf(sock, sizeof(sock), "%s/small.sock", f->b.dir);
	argv[0] = strdup(test_build_path("daemon/ipcd"));
	argv[1] = "--socket";
	argv[2] = sock;
	argv[3] = "--state-dir";
	argv[4] = sd;
	argv[5] = "--max-msg-size";
	argv[6] = "65536";
	argv[7] = NULL;
	assert_non_null(argv[0]);
	assert_int_equal(test_spawn(&f->extra, argv), 0);
	free(argv[0]);
	while (test_read_line(f->extra.err, line, sizeof(line),
	    TEST_WAIT_MS) >= 0)
		if (strstr(line, "--max-msg-size 100000 or more") != NULL) {
			print_message("said: %s\n", line);
			said = 1;
		}
	status = test_child_reap(f->extra.pid, TEST_WAIT_MS);
	f->extra.pid = 0;
	assert_true(said);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);

	/* With the old limit both are there, in order. */
	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(ipc_recv_timed(c, "big", buf, 100000, 0, NULL),
	    100000);
	assert_memory_equal(buf, big, 100000);
	assert_int_equal(ipc_recv_timed(c, "big", buf, 100000, 0, NULL), 6);
	assert_string_equal(buf, "small");
	free(big);
	free(buf);
	broker_stop(&f->b);
}

/* A damaged checkpoint record: a segment's messages whose mailbox's
 * only good record was in an older segment.  The first restart finds
 * the mailbox there; once that segment is reclaimed, the second must
 * still place them (the mailbox's record comes after them, in the
 * restart's checkpoint), not drop them as orphans (they were, found by
 * fuzz-journal: fuzz/corpus/journal/crash-loss-after-reclaim). */
static void
test_messages_before_their_mailbox_record_survive_reclaim(void **state)
{
	struct fix *f = *state;
	char names[8][NAME_MAX + 1], path[PATH_MAX + 300];
	struct ipc_conn *c;
	struct dmsg m;
	uint8_t got[4] = { 0 };
	uint8_t *buf, b;
	size_t len, off;
	int nseg, fd;

	broker_start(&f->b, NULL);
	c = fix_open(f);
	box_create(c, "a", 1, -1, -1, -1);
	dmsg_make(&m, 1, 0);
	assert_int_equal(ipc_send(c, "a", &m, sizeof(m)), 0);
	fix_close_conns(f);
	broker_kill9(f);
	/* Segment 2 begins with its checkpoint (mailbox a), then 1/1. */
	broker_start(&f->b, NULL);
	c = fix_open(f);
	dmsg_make(&m, 1, 1);
	assert_int_equal(ipc_send(c, "a", &m, sizeof(m)), 0);
	fix_close_conns(f);
	broker_kill9(f);
	nseg = segments(state_dir(f), names, 8);
	assert_int_equal(nseg, 2);
	/* A bit of segment 2's checkpoint record of a: after the header
	 * and CKPT_BEGIN, within the MBOX record's body (its mode). */
	snprintf(path, sizeof(path), "%s/%s", state_dir(f), names[1]);
	buf = file_read(path, &len);
	off = SEG_HDR + REC_HDR + 12;
	assert_true(len > off + REC_HDR + 30);
	assert_int_equal(buf[off + 8], 1);	/* an MBOX record */
	b = buf[off + REC_HDR + 24] ^ 0x04;
	free(buf);
	assert_true((fd = open(path, O_WRONLY)) >= 0);
	assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + REC_HDR + 24)), 1);
	close(fd);

	/* The first restart: both back (a's record in segment 1). */
	broker_start(&f->b, NULL);
	c = fix_open(f);
	assert_int_equal(broker_counter(c, "journal_damaged"), 1);
	assert_int_equal(broker_counter(c, "durable_recovered"), 2);
	/* 1/0 taken: segment 1 goes once segment 3's checkpoint is on
	 * disk (a blocking send makes sure of that). */
	memset(&m, 0, sizeof(m));
	assert_int_equal(ipc_recv_timed(c, "a", &m, sizeof(m), TEST_WAIT_MS,
	    NULL), (ssize_t)sizeof(m));
	assert_int_equal(m.seq, 0);
	box_create(c, "sync", 1, -1, -1, -1);
	assert_int_equal(ipc_send(c, "sync", "x", 2), 0);
	assert_true(broker_counter(c, "journal_segments_deleted") >= 1);
	fix_close_conns(f);
	broker_kill9(f);

	/* The second: 1/1 comes before any good record of a. */
	broker_start(&f->b, NULL);
	c = fix_open(f);
	print_message("after segment 1 was reclaimed: %llu recovered, %llu "
	    "orphans, %llu damaged\n",
	    (unsigned long long)broker_counter(c, "durable_recovered"),
	    (unsigned long long)broker_counter(c, "journal_orphans"),
	    (unsigned long long)broker_counter(c, "journal_damaged"));
	assert_int_equal(broker_counter(c, "journal_orphans"), 0);
	assert_int_equal(drain_recovered(c, "a", 1, 1, got, 4), 1);
	assert_int_equal(got[1], 1);
	broker_stop(&f->b);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_broker_killed_20_times_loses_no_acknowledged_message),
		T(test_power_loss_loses_no_acknowledged_message),
		T(test_power_loss_mid_sync_keeps_exactly_the_acknowledged),
		T(test_enospc_on_write_fails_that_send_only),
		T(test_eio_on_write_fails_that_send_only),
		T(test_eio_on_sync_fails_that_send_only),
		T(test_enospc_on_sync_fails_that_send_only),
		T(test_full_disk_fails_every_durable_send_broker_stays_up),
		T(test_flipped_bit_and_torn_tail_skip_one_record_deliver_rest),
		T(test_restart_keeps_metadata_and_permissions),
		T(test_nondurable_mailbox_not_recovered_stat_says_which),
		T(test_second_broker_on_same_state_dir_is_refused),
		T(test_sender_parked_on_full_durable_mailbox_gets_in),
		T(test_compaction_keeps_disk_to_queue_depth_not_history),
		T(test_compaction_through_power_loss_loses_nothing),
		T(test_compaction_killed_after_a_removal_loses_nothing),
		T(test_recovered_message_over_max_msg_size_refuses_start),
		T(test_messages_before_their_mailbox_record_survive_reclaim),
	};

	test_init(600);
	/* TEST_FILTER=test_power* runs only the tests that match. */
	if (getenv("TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("durable", tests, NULL, NULL);
}
