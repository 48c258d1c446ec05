/*
 * Per-uid quotas against a real ipcd: connections, mailboxes, queued
 * bytes and descriptors in flight.  Over quota a user gets EDQUOT on the
 * request that asked for more, keeps its connections, and other users do
 * not notice: a user that floods another user's mailbox hits its own
 * quota while a third user still delivers 1,000 of 1,000.
 *
 * Other users are forked children that change uid.  They reach the socket
 * by a path relative to its directory, so a closed directory above the
 * test's (a chroot made in a 0700 directory) does not matter; they need
 * root to change uid, and the tests skip without it.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testbroker.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Users that exist nowhere but here: the kernel does not mind. */
#define UID_A	41001
#define UID_B	41002
#define UID_C	41003

#define FLOOD_LEN	1024
#define BYTES_QUOTA	65536
#define THIRD_MSGS	1000

struct fix {
	struct broker b;
};

/* A child acting as another user: fn's return value is its exit status;
 * lines it writes to out reach the test, lines the test writes to in
 * reach it. */
struct kid {
	pid_t pid;
	int in, out;
};

typedef int kid_fn(int in, int out, void *arg);

static int
fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	*state = f;
	return 0;
}

static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	if (f->b.proc.pid > 0)
		test_stop(&f->b.proc);
	if (f->b.dir != NULL)
		test_rmtree(f->b.dir);
	free(f);
	return 0;
}

/* Start the broker with opts; 0, or -1 when the test cannot act as
 * another user (skip). */
static int
fix_start(struct fix *f, const char *const *opts)
{
	if (geteuid() != 0) {
		print_message("not root: cannot act as another user; "
		    "skipped\n");
		return -1;
	}
	broker_start(&f->b, opts);
	/* The directory is 0700 (mkdtemp): others need to pass it. */
	assert_int_equal(chmod(f->b.dir, 0711), 0);
	return 0;
}

static struct kid
kid_start(struct fix *f, uid_t uid, kid_fn *fn, void *arg)
{
	int in[2], out[2];
	struct kid k;

	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	k.pid = fork();
	assert_true(k.pid >= 0);
	if (k.pid == 0) {
		close(in[1]);
		close(out[0]);
		if (chdir(f->b.dir) < 0 || setgroups(0, NULL) < 0 ||
		    setgid(uid) < 0 || setuid(uid) < 0)
			_exit(120);
		_exit(fn(in[0], out[1], arg));
	}
	close(in[0]);
	close(out[1]);
	k.in = in[1];
	k.out = out[0];
	return k;
}

/* Wait for the kid to exit; its exit status, or -1. */
static int
kid_wait(struct kid *k)
{
	int status = test_child_reap(k->pid, TEST_WAIT_MS);

	close(k->in);
	close(k->out);
	k->pid = 0;
	if (status < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static struct ipc_conn *
kid_open(void)
{
	return ipc_open("unix:ipcd.sock");
}

static void
kid_say(int out, const char *line)
{
	size_t len = strlen(line);

	if (write(out, line, len) != (ssize_t)len) {
		/* The test reads it or fails on its timeout. */
	}
}

static int
kid_hear(int in, const char *want)
{
	char line[64];

	if (test_read_line(in, line, sizeof(line), TEST_WAIT_MS) < 0)
		return -1;
	return strcmp(line, want) == 0 ? 0 : -1;
}

/* Does c still answer requests? */
static int
still_works(struct ipc_conn *c)
{
	struct ipc_mbox_info info;

	return ipc_mbox_stat(c, "no-such-box", &info) < 0 &&
	    errno == ENOENT ? 0 : -1;
}

/* --- connections ------------------------------------------------------- */

#define CONN_QUOTA 3

/* Takes its quota of connections, fails one more with EDQUOT, then
 * (after the test's "go") finds all it holds still working. */
static int
kid_conns(int in, int out, void *arg)
{
	struct ipc_conn *c[CONN_QUOTA], *extra;

	(void)arg;
	for (int i = 0; i < CONN_QUOTA; i++)
		if ((c[i] = kid_open()) == NULL)
			return 1;
	errno = 0;
	if ((extra = kid_open()) != NULL || errno != EDQUOT)
		return 2;
	kid_say(out, "holding\n");
	if (kid_hear(in, "go") < 0)
		return 3;
	for (int i = 0; i < CONN_QUOTA; i++)
		if (still_works(c[i]) < 0)
			return 4;
	/* One given back, one may come. */
	ipc_close(c[0]);
	if ((c[0] = kid_open()) == NULL || still_works(c[0]) < 0)
		return 5;
	for (int i = 0; i < CONN_QUOTA; i++)
		ipc_close(c[i]);
	return 0;
}

static int
kid_connect_once(int in, int out, void *arg)
{
	struct ipc_conn *c = kid_open();

	(void)in;
	(void)out;
	(void)arg;
	if (c == NULL || still_works(c) < 0)
		return 1;
	ipc_close(c);
	return 0;
}

static void
test_connection_quota_refuses_one_more_and_keeps_the_rest(void **state)
{
	struct fix *f = *state;
	const char *opts[] = { "--max-connections-per-uid", "3", NULL };
	struct kid a, b;
	char line[64];

	if (fix_start(f, opts) < 0)
		skip();
	a = kid_start(f, UID_A, kid_conns, NULL);
	assert_true(test_read_line(a.out, line, sizeof(line),
	    TEST_WAIT_MS) >= 0);
	assert_string_equal(line, "holding");
	/* While A is at its quota, B connects as if nothing were wrong. */
	b = kid_start(f, UID_B, kid_connect_once, NULL);
	assert_int_equal(kid_wait(&b), 0);
	kid_say(a.in, "go\n");
	assert_int_equal(kid_wait(&a), 0);
	broker_stop(&f->b);
}

/* --- bytes: flooding another user's mailbox ----------------------------- */

/* Sends FLOOD_LEN-byte messages without waiting until refused: must be
 * refused for its own quota (EDQUOT) after exactly quota/len messages,
 * never for the mailbox's room, and stay connected.  Says how many. */
static int
kid_flood(int in, int out, void *arg)
{
	static char buf[FLOOD_LEN];
	struct ipc_conn *c = kid_open();
	char line[64];
	int n = 0;

	(void)in;
	(void)arg;
	if (c == NULL)
		return 1;
	memset(buf, 'a', sizeof(buf));
	while (ipc_send_timed(c, "box", buf, sizeof(buf), 0, NULL) == 0)
		if (++n > 10 * BYTES_QUOTA / FLOOD_LEN)
			return 2;	/* no quota at all */
	if (errno != EDQUOT)
		return 3;
	if (still_works(c) < 0)
		return 4;
	snprintf(line, sizeof(line), "%d\n", n);
	kid_say(out, line);
	ipc_close(c);
	return 0;
}

/* THIRD_MSGS small messages, each with its number, each accepted. */
static int
kid_third(int in, int out, void *arg)
{
	struct ipc_conn *c = kid_open();

	(void)in;
	(void)out;
	(void)arg;
	if (c == NULL)
		return 1;
	for (uint32_t i = 0; i < THIRD_MSGS; i++)
		if (ipc_send_timed(c, "box", &i, sizeof(i), TEST_WAIT_MS,
		    NULL) < 0)
			return 2;
	ipc_close(c);
	return 0;
}

static void
test_a_flood_hits_its_own_quota_and_a_third_user_delivers_all(void **state)
{
	struct fix *f = *state;
	const char *opts[] = { "--max-bytes-per-uid", "65536",
	    "--capacity", "100000", "--max-bytes", "67108864", NULL };
	struct ipc_mbox_attr attr;
	struct ipc_msg_info info;
	struct ipc_conn *c;
	struct kid a, b;
	char line[64], buf[FLOOD_LEN];
	int flooded, from_a = 0;
	uint32_t next_b = 0;

	if (fix_start(f, opts) < 0)
		skip();
	/* The mailbox belongs to a user who is neither A nor B. */
	c = broker_open(&f->b);
	ipc_mbox_attr_init(&attr);
	attr.mode = 0622;
	assert_int_equal(ipc_mbox_create(c, "box", &attr, NULL), 0);
	assert_int_equal(ipc_mbox_chown(c, "box", UID_C, UID_C), 0);

	a = kid_start(f, UID_A, kid_flood, NULL);
	assert_true(test_read_line(a.out, line, sizeof(line),
	    TEST_WAIT_MS) >= 0);
	assert_int_equal(kid_wait(&a), 0);
	flooded = atoi(line);
	print_message("A: %d messages of %d bytes, then EDQUOT\n", flooded,
	    FLOOD_LEN);
	assert_int_equal(flooded, BYTES_QUOTA / FLOOD_LEN);

	b = kid_start(f, UID_B, kid_third, NULL);
	assert_int_equal(kid_wait(&b), 0);

	/* Everything accepted is there: A's, then B's, in order. */
	while (from_a + (int)next_b < flooded + THIRD_MSGS) {
		ssize_t n = ipc_recv_timed(c, "box", buf, sizeof(buf),
		    TEST_WAIT_MS, &info);

		assert_true(n >= 0);
		if (info.uid == UID_A) {
			assert_int_equal(n, FLOOD_LEN);
			assert_int_equal(next_b, 0);
			from_a++;
		} else {
			uint32_t seq;

			assert_int_equal(info.uid, UID_B);
			assert_int_equal(n, sizeof(seq));
			memcpy(&seq, buf, sizeof(seq));
			assert_int_equal(seq, next_b);
			next_b++;
		}
	}
	print_message("received %d from A, %u of %d from B\n", from_a,
	    next_b, THIRD_MSGS);
	assert_int_equal(ipc_recv_timed(c, "box", buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, EAGAIN);
	ipc_close(c);
	broker_stop(&f->b);
}

/* --- mailboxes ---------------------------------------------------------- */

static int
kid_mailboxes(int in, int out, void *arg)
{
	const char *prefix = arg;
	struct ipc_conn *c = kid_open();
	char name[32];

	(void)in;
	(void)out;
	if (c == NULL)
		return 1;
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "%s%d", prefix, i);
		if (ipc_mbox_create(c, name, NULL, NULL) < 0)
			return 2;
	}
	errno = 0;
	if (ipc_mbox_create(c, "one-more", NULL, NULL) == 0 ||
	    errno != EDQUOT)
		return 3;
	/* Opening one that exists is not creating. */
	snprintf(name, sizeof(name), "%s0", prefix);
	if (ipc_mbox_create(c, name, NULL, NULL) < 0)
		return 4;
	if (still_works(c) < 0)
		return 5;
	ipc_close(c);
	return 0;
}

static void
test_mailbox_quota_is_per_user(void **state)
{
	struct fix *f = *state;
	const char *opts[] = { "--max-mailboxes-per-uid", "2", NULL };
	struct kid a, b;

	if (fix_start(f, opts) < 0)
		skip();
	a = kid_start(f, UID_A, kid_mailboxes, "a");
	assert_int_equal(kid_wait(&a), 0);
	b = kid_start(f, UID_B, kid_mailboxes, "b");
	assert_int_equal(kid_wait(&b), 0);
	broker_stop(&f->b);
}

/* --- descriptors in flight (memfd messages) ---------------------------- */

#define FDS_QUOTA 4

/* FDS_QUOTA memfd messages accepted, one more refused with EDQUOT. */
static int
kid_memfds(int in, int out, void *arg)
{
	static char buf[8192];
	struct ipc_conn *c;
	int n = 0;

	(void)in;
	(void)out;
	(void)arg;
	/* Messages of 4 KiB and more go as sealed memfds. */
	setenv("IPC_MEMFD_MIN", "4096", 1);
	if ((c = kid_open()) == NULL)
		return 1;
	memset(buf, 'm', sizeof(buf));
	while (ipc_send_timed(c, "fds", buf, sizeof(buf), 0, NULL) == 0)
		if (++n > FDS_QUOTA)
			return 2;
	if (errno != EDQUOT || n != FDS_QUOTA)
		return 3;
	if (still_works(c) < 0)
		return 4;
	ipc_close(c);
	return 0;
}

static void
test_descriptor_quota_is_per_user(void **state)
{
	struct fix *f = *state;
	const char *opts[] = { "--max-fds-per-uid", "4", NULL };
	struct ipc_mbox_attr attr;
	struct ipc_conn *c;
	char buf[8192];
	struct kid a, b;

	if (fix_start(f, opts) < 0)
		skip();
	c = broker_open(&f->b);
	ipc_mbox_attr_init(&attr);
	attr.mode = 0622;
	assert_int_equal(ipc_mbox_create(c, "fds", &attr, NULL), 0);
	a = kid_start(f, UID_A, kid_memfds, NULL);
	assert_int_equal(kid_wait(&a), 0);
	b = kid_start(f, UID_B, kid_memfds, NULL);
	assert_int_equal(kid_wait(&b), 0);
	assert_int_equal(broker_counter(c, "descriptors_held"), 2 * FDS_QUOTA);
	for (int i = 0; i < 2 * FDS_QUOTA; i++)
		assert_int_equal(ipc_recv_timed(c, "fds", buf, sizeof(buf),
		    TEST_WAIT_MS, NULL), (ssize_t)sizeof(buf));
	/* Received and acknowledged: the broker holds none (the ack of
	 * the last goes out with the next request). */
	assert_int_equal(still_works(c), 0);
	assert_int_equal(broker_counter(c, "descriptors_held"), 0);
	ipc_close(c);
	broker_stop(&f->b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_connection_quota_refuses_one_more_and_keeps_the_rest,
		    fix_setup, fix_teardown),
		cmocka_unit_test_setup_teardown(
		    test_a_flood_hits_its_own_quota_and_a_third_user_delivers_all,
		    fix_setup, fix_teardown),
		cmocka_unit_test_setup_teardown(
		    test_mailbox_quota_is_per_user, fix_setup, fix_teardown),
		cmocka_unit_test_setup_teardown(
		    test_descriptor_quota_is_per_user, fix_setup,
		    fix_teardown),
	};

	test_init(300);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
