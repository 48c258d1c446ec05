/*
 * test-remote - brokers linked over TLS on loopback ports: mailbox and
 * direct sends across hosts, replies, remote errors, order, volume, a
 * link cut and frozen mid-stream (through a proxy the test controls),
 * and peers that must be refused.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"
#include "mysocks.h"
#include "testbroker.h"
#include "testutil.h"
#include "tls.h"
#include "wire.h"

/* Heartbeat of the brokers under test: short, so a dead link is found
 * within a test's time. */
#define HB "200"

struct net {
	char *dir;
	char key[512], key2[512];
	struct broker b[3];
	int nb;
};

static int
setup(void **state)
{
	struct net *n = calloc(1, sizeof(*n));

	assert_non_null(n);
	n->dir = test_tmpdir();
	assert_non_null(n->dir);
	snprintf(n->key, sizeof(n->key), "%s/cluster.key", n->dir);
	snprintf(n->key2, sizeof(n->key2), "%s/other.key", n->dir);
	assert_int_equal(tls_keygen(n->key, "cluster"), 0);
	assert_int_equal(tls_keygen(n->key2, "cluster"), 0);
	*state = n;
	return 0;
}

static int
teardown(void **state)
{
	struct net *n = *state;

	for (int i = 0; i < 3; i++) {
		if (n->b[i].proc.pid > 0)
			test_stop(&n->b[i].proc);
		test_rmtree(n->b[i].dir);
	}
	test_rmtree(n->dir);
	free(n);
	return 0;
}

/* Start broker i on TCP with the cluster key and extra options. */
static struct broker *
start(struct net *n, int i, const char *key, const char *const *extra)
{
	const char *argv[32] = { "--tcp", "127.0.0.1:0", "--psk", key,
	    "--heartbeat", HB, "--log-level", "warn" };
	int k = 8;

	for (int j = 0; extra != NULL && extra[j] != NULL && k < 31; j++)
		argv[k++] = extra[j];
	argv[k] = NULL;
	broker_start(&n->b[i], argv);
	assert_true(n->b[i].tcp_port > 0);
	return &n->b[i];
}

/* A mailbox anyone may send to and receive from. */
static void
open_mbox(struct ipc_conn *c, const char *name, int64_t capacity)
{
	struct ipc_mbox_attr a;

	ipc_mbox_attr_init(&a);
	a.mode = 0666;
	a.capacity = capacity;
	if (capacity > 1024)
		a.max_bytes = capacity * 128;
	assert_int_equal(ipc_mbox_create(c, name, &a, NULL), 0);
}

static void
addr(char *buf, size_t size, const char *what, const struct broker *b)
{
	snprintf(buf, size, "%s@%s", what, b->name);
}

/* --- the basics --------------------------------------------------------- */

static void
test_mailbox_send_crosses_brokers(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct ipc_msg_info info;
	char to[128], buf[64], sender[128];
	ssize_t len;

	open_mbox(cb, "jobs", -1);
	addr(to, sizeof(to), "jobs", b);
	assert_int_equal(ipc_send(ca, to, "hello", 5), 0);
	len = ipc_recv_timed(cb, "jobs", buf, sizeof(buf), TEST_WAIT_MS,
	    &info);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	/* The sender is named so that a reply finds it. */
	snprintf(sender, sizeof(sender), "pid:%d@%s", (int)getpid(),
	    a->name);
	assert_string_equal(info.sender, sender);
	assert_int_equal(info.pid, getpid());
	/* Not mapped: the unprivileged default. */
	assert_int_equal(info.uid, 65534);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_name_option_is_the_senders_host(void **state)
{
	static const char *const named[] = { "--name", "broker-a", NULL };
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, named);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct ipc_msg_info info;
	char to[128], buf[8], want[128];

	open_mbox(cb, "jobs", -1);
	addr(to, sizeof(to), "jobs", b);
	assert_int_equal(ipc_send(ca, to, "n", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "jobs", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 1);
	/* The port is the one --tcp took. */
	snprintf(want, sizeof(want), "pid:%d@broker-a:%d", (int)getpid(),
	    a->tcp_port);
	assert_string_equal(info.sender, want);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_remote_errors_reach_a_blocking_sender(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct ipc_mbox_attr attr;
	char to[128];

	addr(to, sizeof(to), "nope", b);
	assert_int_equal(ipc_send(ca, to, "x", 1), -1);
	assert_int_equal(errno, ENOENT);
	/* Mode 0600: the remote sender's mapped uid may not write. */
	ipc_mbox_attr_init(&attr);
	assert_int_equal(ipc_mbox_create(cb, "private", &attr, NULL), 0);
	addr(to, sizeof(to), "private", b);
	assert_int_equal(ipc_send(ca, to, "x", 1), -1);
	assert_int_equal(errno, EACCES);
	/* A connected process that did not ask for remote messages. */
	snprintf(to, sizeof(to), "pid:%d@%s", (int)getpid(), b->name);
	assert_int_equal(ipc_send(ca, to, "x", 1), -1);
	assert_int_equal(errno, EACCES);
	/* A full mailbox: EAGAIN from the remote broker, at once. */
	open_mbox(cb, "one", 1);
	addr(to, sizeof(to), "one", b);
	assert_int_equal(ipc_send_timed(ca, to, "1", 1, 0, NULL), 0);
	assert_int_equal(ipc_send_timed(ca, to, "2", 1, 0, NULL), -1);
	assert_int_equal(errno, EAGAIN);
	/* And the timed form waits on the remote broker, then says so. */
	assert_int_equal(ipc_send_timed(ca, to, "2", 1, 100, NULL), -1);
	assert_int_equal(errno, ETIMEDOUT);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_direct_send_and_reply_across_brokers(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct ipc_msg_info info;
	char to[128], from_b[128], buf[64];
	ssize_t len;

	/* The process on B takes messages from other hosts; on A too, for
	 * the reply. */
	assert_int_equal(ipc_accept_remote(cb, 1), 0);
	assert_int_equal(ipc_accept_remote(ca, 1), 0);
	snprintf(to, sizeof(to), "pid:%d@%s", (int)getpid(), b->name);
	assert_int_equal(ipc_send(ca, to, "ping", 4), 0);
	len = ipc_recv_timed(cb, NULL, buf, sizeof(buf), TEST_WAIT_MS,
	    &info);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "ping", 4);
	/* Reply to whatever the message says its sender is. */
	assert_int_equal(ipc_send(cb, info.sender, "pong", 4), 0);
	/* Selective receive names the remote process. */
	snprintf(from_b, sizeof(from_b), "pid:%d@%s", (int)getpid(),
	    b->name);
	len = ipc_recv_timed(ca, from_b, buf, sizeof(buf), TEST_WAIT_MS,
	    &info);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "pong", 4);
	assert_string_equal(info.sender, from_b);
	/* Turned off again, the process on A refuses B's messages. */
	assert_int_equal(ipc_accept_remote(ca, 0), 0);
	snprintf(to, sizeof(to), "pid:%d@%s", (int)getpid(), a->name);
	assert_int_equal(ipc_send(cb, to, "x", 1), -1);
	assert_int_equal(errno, EACCES);
	ipc_close(ca);
	ipc_close(cb);
}

/* --- volume and order --------------------------------------------------- */

#define BULK 100000

struct drain {
	struct ipc_conn *c;
	const char *mbox;
	unsigned expect;
	unsigned got, dup_or_gap;
};

static void *
drain_thread(void *arg)
{
	struct drain *d = arg;
	uint32_t next = 0, seq;
	char buf[64];

	while (d->got < d->expect) {
		ssize_t len = ipc_recv_timed(d->c, d->mbox, buf, sizeof(buf),
		    TEST_WAIT_MS, NULL);

		if (len != (ssize_t)sizeof(seq))
			break;
		memcpy(&seq, buf, sizeof(seq));
		if (seq != next)
			d->dup_or_gap++;
		next = seq + 1;
		d->got++;
	}
	return NULL;
}

/* Send count messages numbered from first to to, async (a failure is
 * reported, and fails the test). */
static void
send_numbered_from(struct ipc_conn *c, const char *to, uint32_t first,
    uint32_t count)
{
	struct ipc_send_failure f;

	for (uint32_t i = first; i < first + count; i++) {
		if (ipc_send_async(c, to, &i, sizeof(i), NULL) == 0)
			continue;
		/* The socket is full: this one waits for its answer
		 * (after everything before it, in order). */
		assert_int_equal(errno, EAGAIN);
		assert_int_equal(ipc_send(c, to, &i, sizeof(i)), 0);
	}
	if (ipc_send_failure(c, &f) == 0)
		fail_msg("message failed: %s", strerror(f.error));
}

static void
test_bulk_arrives_once_in_order(void **state)
{
	static const char *const bigq[] = { "--link-queue", "200000", NULL };
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, bigq);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct drain d = { .mbox = "bulk", .expect = BULK };
	struct ipc_send_failure f;
	pthread_t t;
	char to[128];
	long long t0;

	open_mbox(cb, "bulk", BULK);
	d.c = cb;
	addr(to, sizeof(to), "bulk", b);
	assert_int_equal(pthread_create(&t, NULL, drain_thread, &d), 0);
	t0 = test_now_ms();
	send_numbered_from(ca, to, 0, BULK);
	pthread_join(t, NULL);
	fprintf(stderr, "# %u messages over a TLS link in %lld ms\n",
	    d.got, test_now_ms() - t0);
	assert_int_equal(d.got, BULK);
	assert_int_equal(d.dup_or_gap, 0);
	assert_int_equal(ipc_send_failure(ca, &f), -1);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_three_brokers(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct broker *c = start(n, 2, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b),
	    *cc = broker_open(c);
	struct ipc_msg_info info;
	char to[128], buf[64];

	open_mbox(cb, "mid", -1);
	open_mbox(cc, "far", -1);
	/* A to B and to C, C to B; each arrives, named by its origin. */
	addr(to, sizeof(to), "mid", b);
	assert_int_equal(ipc_send(ca, to, "a1", 2), 0);
	assert_int_equal(ipc_send(cc, to, "c1", 2), 0);
	assert_int_equal(ipc_send(ca, to, "a2", 2), 0);
	addr(to, sizeof(to), "far", c);
	assert_int_equal(ipc_send(ca, to, "a3", 2), 0);
	assert_int_equal(ipc_recv_timed(cb, "mid", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 2);
	assert_memory_equal(buf, "a1", 2);
	assert_non_null(strstr(info.sender, a->name));
	assert_int_equal(ipc_recv_timed(cb, "mid", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 2);
	assert_memory_equal(buf, "c1", 2);
	assert_non_null(strstr(info.sender, c->name));
	assert_int_equal(ipc_recv_timed(cb, "mid", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 2);
	assert_memory_equal(buf, "a2", 2);
	assert_int_equal(ipc_recv_timed(cc, "far", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 2);
	assert_memory_equal(buf, "a3", 2);
	/* A broker does not relay: B's address given to C's client is
	 * sent by C itself, never through A. */
	ipc_close(ca);
	ipc_close(cb);
	ipc_close(cc);
}

/* --- a proxy the test can cut or freeze ---------------------------------- */

struct proxy {
	int listen_fd, port, target_port;
	int ctl[2];			/* commands: 'c' cut, 'f' freeze,
					 * 'q' quit */
	pthread_t thread;
	int cuts;
};

#define PROXY_PAIRS 8

static void *
proxy_thread(void *arg)
{
	struct proxy *p = arg;
	int pairs[PROXY_PAIRS][2], npairs = 0, frozen = 0;
	char buf[65536];

	for (;;) {
		struct pollfd pf[2 + 2 * PROXY_PAIRS];
		int nf = 0;

		pf[nf++] = (struct pollfd){ .fd = p->ctl[0],
		    .events = POLLIN };
		pf[nf++] = (struct pollfd){ .fd = p->listen_fd,
		    .events = POLLIN };
		for (int i = 0; i < npairs; i++)
			for (int j = 0; j < 2; j++)
				pf[nf++] = (struct pollfd){ .fd =
				    pairs[i][j], .events = frozen ? 0 :
				    POLLIN };
		if (poll(pf, (nfds_t)nf, -1) < 0)
			continue;
		if (pf[0].revents & POLLIN) {
			char cmd;

			if (read(p->ctl[0], &cmd, 1) != 1 || cmd == 'q')
				break;
			if (cmd == 'c' || cmd == 'f') {
				/* Cut: both sides see the connection die.
				 * Freeze: nothing passes, nothing closes. */
				if (cmd == 'c') {
					for (int i = 0; i < npairs; i++) {
						close(pairs[i][0]);
						close(pairs[i][1]);
					}
					npairs = 0;
				}
				frozen = cmd == 'f';
			} else if (cmd == 't') {
				frozen = 0;
			}
			continue;
		}
		if ((pf[1].revents & POLLIN) && npairs < PROXY_PAIRS) {
			int in = acceptServerSocket(p->listen_fd);
			int out = in >= 0 ? connectSocket("127.0.0.1",
			    p->target_port) : -1;

			if (in >= 0 && out >= 0) {
				pairs[npairs][0] = in;
				pairs[npairs][1] = out;
				npairs++;
			} else {
				if (in >= 0)
					close(in);
				if (out >= 0)
					close(out);
			}
			continue;
		}
		for (int i = 0; i < npairs; i++) {
			for (int j = 0; j < 2; j++) {
				struct pollfd *q = &pf[2 + 2 * i + j];
				int r;

				if (!(q->revents & (POLLIN | POLLHUP |
				    POLLERR)))
					continue;
				r = readSocket(pairs[i][j], buf, sizeof(buf));
				if (r <= 0 || writeSocket(pairs[i][1 - j], buf,
				    r) != r) {
					close(pairs[i][0]);
					close(pairs[i][1]);
					pairs[i][0] = pairs[npairs - 1][0];
					pairs[i][1] = pairs[npairs - 1][1];
					npairs--;
					goto next_round;
				}
			}
		}
next_round:
		;
	}
	for (int i = 0; i < npairs; i++) {
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	return NULL;
}

static void
proxy_start(struct proxy *p, int target_port)
{
	memset(p, 0, sizeof(*p));
	p->target_port = target_port;
	p->listen_fd = serverSocketBind("127.0.0.1", 0);
	assert_true(p->listen_fd >= 0);
	p->port = portSocket(p->listen_fd);
	assert_int_equal(pipe(p->ctl), 0);
	assert_int_equal(pthread_create(&p->thread, NULL, proxy_thread, p),
	    0);
}

static void
proxy_cmd(struct proxy *p, char cmd)
{
	assert_int_equal(write(p->ctl[1], &cmd, 1), 1);
}

static void
proxy_stop(struct proxy *p)
{
	proxy_cmd(p, 'q');
	pthread_join(p->thread, NULL);
	close(p->listen_fd);
	close(p->ctl[0]);
	close(p->ctl[1]);
}

/* The state of a's link to peer, and its reconnect count. */
struct link_probe {
	const char *peer;
	int found;
	struct ipc_link_info info;
};

static int
link_probe_cb(const struct ipc_link_info *info, void *arg)
{
	struct link_probe *p = arg;

	if (!info->incoming && strcmp(info->peer, p->peer) == 0) {
		p->found = 1;
		p->info = *info;
	}
	return 0;
}

static struct ipc_link_info
link_of(struct ipc_conn *c, const char *peer)
{
	struct link_probe p = { .peer = peer };

	assert_int_equal(ipc_links(c, link_probe_cb, &p), 0);
	assert_true(p.found);
	return p.info;
}

#define CUT_BULK 30000

static void
test_cut_link_loses_nothing_and_repeats_nothing(void **state)
{
	static const char *const bigq[] = { "--link-queue", "100000", NULL };
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, bigq);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct drain d = { .mbox = "cut", .expect = CUT_BULK };
	struct ipc_send_failure f;
	struct ipc_link_info li;
	struct proxy px;
	char to[128], peer[64];
	pthread_t t;

	proxy_start(&px, b->tcp_port);
	open_mbox(cb, "cut", CUT_BULK);
	d.c = cb;
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", px.port);
	snprintf(to, sizeof(to), "cut@%s", peer);
	assert_int_equal(pthread_create(&t, NULL, drain_thread, &d), 0);
	/* Cut the link three times while messages are in flight: each
	 * time once the link is up and has carried some of the round. */
	for (int round = 0; round < 4; round++) {
		uint64_t before = 0;
		long long t0 = test_now_ms();

		if (round > 0)
			before = link_of(ca, peer).msgs_out;
		send_numbered_from(ca, to, round * (CUT_BULK / 4),
		    CUT_BULK / 4);
		if (round == 3)
			break;
		for (;;) {
			li = link_of(ca, peer);
			if (li.state == IPC_LINK_UP && li.msgs_out > before)
				break;
			if (test_now_ms() - t0 > TEST_WAIT_MS)
				fail_msg("the link carried nothing in round %d",
				    round);
			assert_int_equal(test_wait_readable(-1, 2), 0);
		}
		proxy_cmd(&px, 'c');
	}
	pthread_join(t, NULL);
	assert_int_equal(d.got, CUT_BULK);
	assert_int_equal(d.dup_or_gap, 0);
	assert_int_equal(ipc_send_failure(ca, &f), -1);
	li = link_of(ca, peer);
	assert_int_equal(li.state, IPC_LINK_UP);
	assert_true(li.reconnects >= 1);
	proxy_stop(&px);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_frozen_link_is_found_dead(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct ipc_link_info li;
	struct proxy px;
	char to[128], peer[64], buf[8];
	long long t0, took;

	proxy_start(&px, b->tcp_port);
	open_mbox(cb, "f", -1);
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", px.port);
	snprintf(to, sizeof(to), "f@%s", peer);
	assert_int_equal(ipc_send(ca, to, "1", 1), 0);
	/* Half-open: packets vanish, nothing closes. */
	proxy_cmd(&px, 'f');
	t0 = test_now_ms();
	do {
		li = link_of(ca, peer);
		took = test_now_ms() - t0;
		if (li.reconnects > 0 || li.state != IPC_LINK_UP)
			break;
		assert_int_equal(test_wait_readable(-1, 20), 0);
	} while (took < TEST_WAIT_MS);
	/* Three heartbeats of 200 ms, and one more to notice. */
	assert_true(took < 4 * 200 + 500);
	fprintf(stderr, "# frozen link found dead in %lld ms\n", took);
	/* Thawed, it comes back and carries what waited. */
	proxy_cmd(&px, 't');
	assert_int_equal(ipc_send(ca, to, "2", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "f", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	assert_int_equal(ipc_recv_timed(cb, "f", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	assert_int_equal(buf[0], '2');
	proxy_stop(&px);
	ipc_close(ca);
	ipc_close(cb);
}

/* --- peers that must be refused ------------------------------------------ */

struct counter_probe {
	const char *name;
	uint64_t value;
};

static int
counter_cb(const char *name, uint64_t value, void *arg)
{
	struct counter_probe *p = arg;

	if (strcmp(name, p->name) == 0)
		p->value = value;
	return 0;
}

static uint64_t
counter(const struct broker *b, const char *name)
{
	struct ipc_conn *c = broker_open(b);
	struct counter_probe p = { .name = name };

	assert_int_equal(ipc_counters(c, counter_cb, &p), 0);
	ipc_close(c);
	return p.value;
}

/* A message from a to mailbox "ok" on b still goes through. */
static void
link_still_works(const struct broker *a, const struct broker *b)
{
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	char to[128], buf[8];

	addr(to, sizeof(to), "ok", b);
	assert_int_equal(ipc_send(ca, to, "k", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "ok", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	ipc_close(ca);
	ipc_close(cb);
}

/* Start A and B with a working link and mailbox "ok" on B. */
static void
linked_pair(struct net *n, const char *const *b_extra)
{
	struct ipc_conn *cb;

	start(n, 0, n->key, NULL);
	start(n, 1, n->key, b_extra);
	cb = broker_open(&n->b[1]);
	open_mbox(cb, "ok", -1);
	ipc_close(cb);
	link_still_works(&n->b[0], &n->b[1]);
}

/* Wait for the peer to close fd: 0 (EOF or reset) or -1 (timeout). */
static int
wait_closed(int fd, int timeout_ms)
{
	char buf[256];
	long long end = test_now_ms() + timeout_ms;

	for (;;) {
		int left = (int)(end - test_now_ms()), r;

		if (left <= 0 || test_wait_readable(fd, left) <= 0)
			return -1;
		r = readSocket(fd, buf, sizeof(buf));
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return 0;
		if (r < 0)
			return -1;
	}
}

static void
test_wrong_key_is_refused(void **state)
{
	struct net *n = *state;
	struct broker *c;
	struct ipc_conn *ca;
	struct ipc_link_info li;
	char to[128];

	linked_pair(n, NULL);
	c = start(n, 2, n->key2, NULL);
	ca = broker_open(&n->b[0]);
	addr(to, sizeof(to), "x", c);
	assert_int_equal(ipc_send_timed(ca, to, "x", 1, 1000, NULL), -1);
	assert_int_equal(errno, ETIMEDOUT);
	assert_true(counter(c, "tls_refused") >= 1);
	li = link_of(ca, c->name);
	assert_int_not_equal(li.state, IPC_LINK_UP);
	assert_true(li.last_error[0] != '\0');
	ipc_close(ca);
	link_still_works(&n->b[0], &n->b[1]);
}

static void
test_plaintext_client_is_refused(void **state)
{
	struct net *n = *state;
	struct wire_frame f = { .type = WIRE_HELLO, .id = 1 };
	uint8_t frame[64];
	long len;
	int fd;

	linked_pair(n, NULL);
	f.b.hello.magic = WIRE_MAGIC;
	f.b.hello.version_min = f.b.hello.version_max = WIRE_VERSION;
	len = wire_encode(&f, frame, sizeof(frame));
	assert_true(len > 0);
	fd = connectSocket("127.0.0.1", n->b[1].tcp_port);
	assert_true(fd >= 0);
	assert_int_equal(writeSocket(fd, frame, (int)len), len);
	assert_int_equal(wait_closed(fd, TEST_WAIT_MS), 0);
	closeSocket(fd);
	assert_true(counter(&n->b[1], "tls_refused") >= 1);
	link_still_works(&n->b[0], &n->b[1]);
}

static void
test_stalled_handshake_is_dropped(void **state)
{
	static const char *const quick[] = { "--handshake-timeout", "300",
	    NULL };
	struct net *n = *state;
	long long t0;
	int fd;

	linked_pair(n, quick);
	fd = connectSocket("127.0.0.1", n->b[1].tcp_port);
	assert_true(fd >= 0);
	t0 = test_now_ms();
	assert_int_equal(wait_closed(fd, TEST_WAIT_MS), 0);
	assert_true(test_now_ms() - t0 < 3000);
	closeSocket(fd);
	link_still_works(&n->b[0], &n->b[1]);
}

/* A TLS connection to port with the key file, handshake done. */
static struct tls *
tls_connect(const char *key, int port, struct tls_ctx **ctx_out, int *fd_out)
{
	struct tls_conf conf = { .psk_file = key };
	char why[256];
	struct tls *t;
	int want, r, fd;

	assert_int_equal(tls_ctx_new(&conf, 0, ctx_out, why, sizeof(why)),
	    0);
	fd = connectSocket("127.0.0.1", port);
	assert_true(fd >= 0);
	t = tls_new(*ctx_out, fd);
	assert_non_null(t);
	/* A blocking socket: the handshake finishes in this call. */
	r = tls_handshake(t, &want, why, sizeof(why));
	if (r != 1)
		fail_msg("handshake: %s", why);
	*fd_out = fd;
	return t;
}

static void
tls_send_frame(struct tls *t, const struct wire_frame *f)
{
	uint8_t buf[256];
	long len = wire_encode(f, buf, sizeof(buf));
	int want;

	assert_true(len > 0);
	assert_int_equal(tls_write(t, buf, (size_t)len, &want), len);
}

/* Bytes that break the protocol on an authenticated link, as on the
 * local socket: each gets an ERROR (or nothing) and the end. */
struct bad_frame {
	const char *name;
	uint8_t bytes[40];
	size_t len;
	int hello;			/* sent instead of LINK_HELLO */
};

static const struct bad_frame bad_frames[] = {
	{ "length 0", { 0, 0, 0, 0, WIRE_LINK_SEND, 0, 0, 0, 1 }, 16, 0 },
	{ "length 1", { 1, 0, 0, 0, WIRE_LINK_SEND, 0, 0, 0, 1 }, 16, 0 },
	{ "length 15", { 15, 0, 0, 0, WIRE_PING, 0, 0, 0, 1 }, 16, 0 },
	{ "length 2^32-1", { 0xff, 0xff, 0xff, 0xff, WIRE_LINK_SEND, 0, 0, 0,
	    1 }, 16, 0 },
	{ "length over the limit", { 0, 0, 0, 0x40, WIRE_LINK_SEND, 0, 0, 0,
	    1 }, 16, 0 },
	{ "unknown type", { 16, 0, 0, 0, 0x7f, 0, 0, 0, 1 }, 16, 0 },
	{ "PING cut short", { 20, 0, 0, 0, WIRE_PING, 0, 0, 0, 1, 0, 0, 0,
	    0, 0, 0, 0, 1, 2, 3, 4 }, 20, 0 },
	{ "a client's SEND on a link", { 26, 0, 0, 0, WIRE_SEND, 0, 0, 0, 1,
	    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 26, 0 },
	{ "LINK_SEND numbered 0", { 38, 0, 0, 0, WIRE_LINK_SEND, 0, 0, 0, 0,
	    0, 0, 0, 0, 0, 0, 0 }, 38, 0 },
	{ "wrong magic", { 38, 0, 0, 0, WIRE_LINK_HELLO, 0, 0, 0, 1, 0, 0, 0,
	    0, 0, 0, 0, 'X', 'P', 'C', '1', 1, 0, 1, 0 }, 38, 1 },
	{ "no version in common", { 38, 0, 0, 0, WIRE_LINK_HELLO, 0, 0, 0, 1,
	    0, 0, 0, 0, 0, 0, 0, 'I', 'P', 'C', '1', 9, 0, 9, 0 }, 38, 1 },
	{ "LINK_HELLO without a name", { 38, 0, 0, 0, WIRE_LINK_HELLO, 0, 0,
	    0, 1, 0, 0, 0, 0, 0, 0, 0, 'I', 'P', 'C', '1', 1, 0, 1, 0 }, 38,
	    1 },
};

static void
test_bad_frames_on_a_link_drop_only_it(void **state)
{
	struct net *n = *state;
	struct wire_frame f = { .type = WIRE_LINK_HELLO, .id = 1 };
	uint8_t buf[512];

	linked_pair(n, NULL);
	f.b.link_hello.magic = WIRE_MAGIC;
	f.b.link_hello.version_min = f.b.link_hello.version_max =
	    WIRE_VERSION;
	f.b.link_hello.epoch = 42;
	f.b.link_hello.name = wire_str("127.0.0.1:1");
	for (size_t i = 0; i < sizeof(bad_frames) / sizeof(bad_frames[0]);
	    i++) {
		const struct bad_frame *bf = &bad_frames[i];
		struct tls_ctx *ctx;
		struct tls *t;
		long long t0;
		long r;
		int fd, want;

		t = tls_connect(n->key, n->b[1].tcp_port, &ctx, &fd);
		if (!bf->hello) {
			tls_send_frame(t, &f);
			r = tls_read(t, buf, sizeof(buf), &want);
			assert_true(r >= (long)WIRE_HDR_LEN);
			assert_int_equal(wire_get16(buf + 4), WIRE_WELCOME);
		}
		assert_int_equal(tls_write(t, bf->bytes, bf->len, &want),
		    (long)bf->len);
		/* An ERROR maybe, then the end, promptly. */
		t0 = test_now_ms();
		do
			r = tls_read(t, buf, sizeof(buf), &want);
		while (r > 0);
		if (r < 0 && errno != ECONNRESET && errno != EIO &&
		    errno != EPIPE)
			fail_msg("%s: %s", bf->name, strerror(errno));
		if (test_now_ms() - t0 > 2000)
			fail_msg("%s: not closed promptly", bf->name);
		tls_free(t);
		tls_ctx_free(ctx);
		closeSocket(fd);
	}
	assert_true(counter(&n->b[1], "errors_protocol") >=
	    sizeof(bad_frames) / sizeof(bad_frames[0]));
	link_still_works(&n->b[0], &n->b[1]);
}

static void
test_uid_map_decides_permissions(void **state)
{
	struct net *n = *state;
	char map[64], to[128], buf[8];
	const char *extra[] = { "--uid-map", map, NULL };
	struct ipc_mbox_attr attr;
	struct ipc_conn *ca, *cb;
	struct ipc_msg_info info;

	/* The cluster's identity, any remote uid, is the test's user. */
	snprintf(map, sizeof(map), "cluster:*=%u:%u", (unsigned)getuid(),
	    (unsigned)getgid());
	start(n, 0, n->key, NULL);
	start(n, 1, n->key, extra);
	ca = broker_open(&n->b[0]);
	cb = broker_open(&n->b[1]);
	ipc_mbox_attr_init(&attr);	/* 0600, ours */
	assert_int_equal(ipc_mbox_create(cb, "mine", &attr, NULL), 0);
	addr(to, sizeof(to), "mine", &n->b[1]);
	assert_int_equal(ipc_send(ca, to, "m", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "mine", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 1);
	assert_int_equal(info.uid, getuid());
	assert_int_equal(info.gid, getgid());
	ipc_close(ca);
	ipc_close(cb);
}

/* --- a link that must stay up ------------------------------------------- */

struct parked_sender {
	const struct broker *a;
	char to[128];
	int rc;
};

static void *
parked_send_thread(void *arg)
{
	struct parked_sender *p = arg;
	struct ipc_conn *c = ipc_open(p->a->where);

	p->rc = c != NULL ? ipc_send(c, p->to, "p", 1) : -1;
	ipc_close(c);
	return NULL;
}

/* Watch a's link to peer for window_ms: it must stay up throughout. */
static void
link_stays_up(struct ipc_conn *ca, const char *peer, int window_ms)
{
	long long end = test_now_ms() + window_ms;

	while (test_now_ms() < end) {
		struct ipc_link_info li = link_of(ca, peer);

		assert_int_equal(li.state, IPC_LINK_UP);
		assert_int_equal(li.reconnects, 0);
		assert_int_equal(test_wait_readable(-1, 20), 0);
	}
}

#define PARKED 20

static void
test_full_remote_mailbox_does_not_take_the_link_down(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	struct parked_sender ps[PARKED];
	pthread_t t[PARKED];
	struct ipc_mbox_info info;
	char to[128], buf[8];
	long long t0;

	open_mbox(cb, "one", 1);
	open_mbox(cb, "other", -1);
	for (int i = 0; i < PARKED; i++) {
		ps[i].a = a;
		addr(ps[i].to, sizeof(ps[i].to), "one", b);
		assert_int_equal(pthread_create(&t[i], NULL,
		    parked_send_thread, &ps[i]), 0);
	}
	/* One queued, the others parked on B, all from one link. */
	t0 = test_now_ms();
	do {
		assert_int_equal(ipc_mbox_stat(cb, "one", &info), 0);
		if (info.waiting_senders >= PARKED - 1)
			break;
		if (test_now_ms() - t0 > TEST_WAIT_MS)
			fail_msg("B parked %u sends of %u: the link was not "
			    "read", info.waiting_senders, PARKED - 1);
		assert_int_equal(test_wait_readable(-1, 10), 0);
	} while (1);
	/* More than LINK_MISSED heartbeats of 200 ms: PINGs still read. */
	link_stays_up(ca, b->name, 1000);
	/* And the link still carries messages for elsewhere on B. */
	addr(to, sizeof(to), "other", b);
	assert_int_equal(ipc_send_timed(ca, to, "o", 1, 2000, NULL), 0);
	for (int i = 0; i < PARKED; i++)
		assert_int_equal(ipc_recv_timed(cb, "one", buf, sizeof(buf),
		    TEST_WAIT_MS, NULL), 1);
	for (int i = 0; i < PARKED; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(ps[i].rc, 0);
	}
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_slower_heartbeat_of_the_peer_is_followed(void **state)
{
	static const char *const slow[] = { "--heartbeat", "1000", NULL };
	struct net *n = *state;
	/* A pings every second; B would take 3 x 200 ms of silence for
	 * death if it went by its own heartbeat. */
	struct broker *a = start(n, 0, n->key, slow);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	char to[128], buf[8];

	open_mbox(cb, "hb", -1);
	addr(to, sizeof(to), "hb", b);
	assert_int_equal(ipc_send(ca, to, "1", 1), 0);
	link_stays_up(ca, b->name, 1500);
	assert_int_equal(ipc_send(ca, to, "2", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "hb", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	ipc_close(ca);
	ipc_close(cb);
}

/* --- host names ------------------------------------------------------------ */

/* Does this machine resolve "localhost" to 127.0.0.1 (a bare chroot may
 * have no /etc/hosts)? */
static int
localhost_resolves(void)
{
	struct addrinfo hints = { .ai_family = AF_INET,
	    .ai_socktype = SOCK_STREAM }, *res;
	int ok;

	if (getaddrinfo("localhost", NULL, &hints, &res) != 0)
		return 0;
	ok = res != NULL && ((struct sockaddr_in *)res->ai_addr)->
	    sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	freeaddrinfo(res);
	return ok;
}

static void
test_host_name_is_resolved_and_each_address_tried(void **state)
{
	struct net *n = *state;
	struct broker *a, *b;
	struct ipc_conn *ca, *cb;
	char to[128], buf[8], peer[64];

	if (!localhost_resolves()) {
		fprintf(stderr, "# localhost does not resolve to 127.0.0.1 "
		    "here\n");
		skip();
	}
	a = start(n, 0, n->key, NULL);
	b = start(n, 1, n->key, NULL);
	ca = broker_open(a);
	cb = broker_open(b);

	/* "localhost" may name ::1 first; B listens on 127.0.0.1 only. */
	open_mbox(cb, "named", -1);
	snprintf(to, sizeof(to), "named@localhost:%d", b->tcp_port);
	assert_int_equal(ipc_send_timed(ca, to, "n", 1, TEST_WAIT_MS, NULL),
	    0);
	assert_int_equal(ipc_recv_timed(cb, "named", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	/* Two names of one broker are two links; they must not push each
	 * other off at the peer. */
	addr(to, sizeof(to), "named", b);
	assert_int_equal(ipc_send(ca, to, "m", 1), 0);
	snprintf(peer, sizeof(peer), "localhost:%d", b->tcp_port);
	link_stays_up(ca, peer, 700);
	link_stays_up(ca, b->name, 100);
	assert_int_equal(ipc_recv_timed(cb, "named", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_slow_name_lookup_does_not_stop_the_broker(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct ipc_conn *ca = broker_open(a), *c2 = broker_open(a);
	struct ipc_mbox_attr attr;
	long long t0;

	/* The lookup runs beside the loop, however long it takes. */
	assert_int_equal(ipc_send_async(ca, "x@no-such-host.invalid", "x", 1,
	    NULL), 0);
	ipc_mbox_attr_init(&attr);
	t0 = test_now_ms();
	for (int i = 0; i < 20; i++) {
		char name[16];

		snprintf(name, sizeof(name), "m%d", i);
		assert_int_equal(ipc_mbox_create(c2, name, &attr, NULL), 0);
	}
	assert_true(test_now_ms() - t0 < 1000);
	ipc_close(ca);
	ipc_close(c2);
}

/* --- limits and later failures ------------------------------------------- */

static void
test_async_remote_failure_is_reported_with_its_id(void **state)
{
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *ca = broker_open(a);
	struct ipc_send_failure f;
	uint64_t id;
	char to[128];

	addr(to, sizeof(to), "nope", b);
	assert_int_equal(ipc_send_async(ca, to, "x", 1, &id), 0);
	/* It comes back when B answers: ipc_fd() turns readable. */
	assert_int_equal(test_wait_readable(ipc_fd(ca), TEST_WAIT_MS), 1);
	assert_int_equal(ipc_send_failure(ca, &f), 0);
	assert_true(f.send_id == id);
	assert_int_equal(f.error, ENOENT);
	ipc_close(ca);
}

static void
test_message_over_the_remote_limit_is_refused_here(void **state)
{
	static const char *const small[] = { "--max-msg-size", "1000",
	    NULL };
	struct net *n = *state;
	struct broker *a = start(n, 0, n->key, NULL);
	struct broker *b = start(n, 1, n->key, small);
	struct ipc_conn *ca = broker_open(a), *cb = broker_open(b);
	char to[128], big[2000] = { 0 }, buf[8];

	open_mbox(cb, "lim", -1);
	addr(to, sizeof(to), "lim", b);
	assert_int_equal(ipc_send(ca, to, big, sizeof(big)), -1);
	assert_int_equal(errno, EMSGSIZE);
	/* The link is still there for what fits. */
	assert_int_equal(ipc_send(ca, to, "s", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "lim", buf, sizeof(buf),
	    TEST_WAIT_MS, NULL), 1);
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_connections_per_address_are_bounded(void **state)
{
	static const char *const two[] = { "--max-conns-per-addr", "2",
	    NULL };
	struct net *n = *state;
	struct broker *b = start(n, 1, n->key, two);
	int fd[3];

	for (int i = 0; i < 3; i++) {
		fd[i] = connectSocket("127.0.0.1", b->tcp_port);
		assert_true(fd[i] >= 0);
	}
	/* The third is closed at once; the first two wait for TLS. */
	assert_int_equal(wait_closed(fd[2], TEST_WAIT_MS), 0);
	assert_true(counter(b, "connections_refused") >= 1);
	assert_int_equal(test_wait_readable(fd[0], 100), 0);
	for (int i = 0; i < 3; i++)
		closeSocket(fd[i]);
}

/* --- X.509 ---------------------------------------------------------------- */

/* Make dir/NAME.crt and NAME.key signed by dir/CA.crt (CA == NAME: a
 * self-signed CA).  With the openssl tool; 0, or -1 when it is missing. */
static int
make_cert(const char *dir, const char *ca, const char *name)
{
	char cmd[2048];
	int self = strcmp(ca, name) == 0;

	if (system("command -v openssl >/dev/null 2>&1") != 0)
		return -1;
	snprintf(cmd, sizeof(cmd), "cd '%s' && openssl req -newkey ec "
	    "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s.key "
	    "-subj /CN=%s -days 2 %s -out %s.%s 2>/dev/null >&2",
	    dir, name, name, self ? "-x509" : "", name, self ? "crt" : "csr");
	assert_int_equal(system(cmd), 0);
	if (self)
		return 0;
	snprintf(cmd, sizeof(cmd), "cd '%s' && openssl x509 -req -in %s.csr "
	    "-CA %s.crt -CAkey %s.key -CAcreateserial -days 2 -out %s.crt "
	    "2>/dev/null >&2", dir, name, ca, ca, name);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Start broker i with X.509 credentials dir/NAME.* under dir/CA.crt. */
static struct broker *
start_x509(struct net *n, int i, const char *ca, const char *name,
    const char *const *extra)
{
	static char files[3][3][600];
	const char *argv[32] = { "--tcp", "127.0.0.1:0", "--ca", files[i][0],
	    "--cert", files[i][1], "--key", files[i][2], "--heartbeat", HB,
	    "--log-level", "warn" };
	int k = 12;

	snprintf(files[i][0], sizeof(files[i][0]), "%s/%s.crt", n->dir, ca);
	snprintf(files[i][1], sizeof(files[i][1]), "%s/%s.crt", n->dir, name);
	snprintf(files[i][2], sizeof(files[i][2]), "%s/%s.key", n->dir, name);
	for (int j = 0; extra != NULL && extra[j] != NULL && k < 31; j++)
		argv[k++] = extra[j];
	argv[k] = NULL;
	broker_start(&n->b[i], argv);
	return &n->b[i];
}

struct in_probe {
	int found;
	char identity[129];
};

static int
in_probe_cb(const struct ipc_link_info *info, void *arg)
{
	struct in_probe *p = arg;

	if (info->incoming && info->state == IPC_LINK_UP) {
		p->found = 1;
		snprintf(p->identity, sizeof(p->identity), "%s",
		    info->identity);
	}
	return 0;
}

static void
test_x509_link_is_named_by_its_certificate(void **state)
{
	struct net *n = *state;
	char map[64], to[128], buf[8];
	const char *extra[] = { "--uid-map", map, NULL };
	struct ipc_mbox_attr attr;
	struct ipc_conn *ca, *cb;
	struct ipc_msg_info info;
	struct in_probe p = { 0 };

	if (make_cert(n->dir, "ca", "ca") < 0)
		skip();
	make_cert(n->dir, "ca", "hostA");
	make_cert(n->dir, "ca", "hostB");
	/* Who the certificate names, not what the peer says, gets a uid. */
	snprintf(map, sizeof(map), "hostA:*=%u:%u", (unsigned)getuid(),
	    (unsigned)getgid());
	start_x509(n, 0, "ca", "hostA", NULL);
	start_x509(n, 1, "ca", "hostB", extra);
	ca = broker_open(&n->b[0]);
	cb = broker_open(&n->b[1]);
	ipc_mbox_attr_init(&attr);
	assert_int_equal(ipc_mbox_create(cb, "mine", &attr, NULL), 0);
	addr(to, sizeof(to), "mine", &n->b[1]);
	assert_int_equal(ipc_send(ca, to, "m", 1), 0);
	assert_int_equal(ipc_recv_timed(cb, "mine", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 1);
	assert_int_equal(info.uid, getuid());
	assert_int_equal(ipc_links(cb, in_probe_cb, &p), 0);
	assert_true(p.found);
	assert_string_equal(p.identity, "hostA");
	ipc_close(ca);
	ipc_close(cb);
}

static void
test_x509_certificate_of_another_ca_is_refused(void **state)
{
	struct net *n = *state;
	struct ipc_conn *ca, *cb;
	struct ipc_link_info li;
	char to[128];

	if (make_cert(n->dir, "ca", "ca") < 0)
		skip();
	make_cert(n->dir, "ca", "hostA");
	make_cert(n->dir, "ca", "hostB");
	make_cert(n->dir, "rogue", "rogue");
	make_cert(n->dir, "rogue", "hostC");
	start_x509(n, 0, "ca", "hostA", NULL);
	start_x509(n, 1, "ca", "hostB", NULL);
	/* C trusts the rogue CA and shows a certificate it signed. */
	start_x509(n, 2, "rogue", "hostC", NULL);
	cb = broker_open(&n->b[1]);
	open_mbox(cb, "ok", -1);
	ipc_close(cb);
	link_still_works(&n->b[0], &n->b[1]);
	ca = broker_open(&n->b[0]);
	addr(to, sizeof(to), "x", &n->b[2]);
	assert_int_equal(ipc_send_timed(ca, to, "x", 1, 1000, NULL), -1);
	assert_int_equal(errno, ETIMEDOUT);
	li = link_of(ca, n->b[2].name);
	assert_int_not_equal(li.state, IPC_LINK_UP);
	assert_non_null(strstr(li.last_error, "certificate"));
	assert_true(counter(&n->b[2], "tls_refused") >= 1);
	ipc_close(ca);
	link_still_works(&n->b[0], &n->b[1]);
}

/* --- clients of another host (tls://) ---------------------------------- */

static struct ipc_conn *
tls_open(const struct broker *b, const char *key)
{
	char where[64];

	snprintf(where, sizeof(where), "tls://127.0.0.1:%d", b->tcp_port);
	if (key != NULL)
		setenv("IPC_TLS_PSK", key, 1);
	else
		unsetenv("IPC_TLS_PSK");
	return ipc_open(where);
}

static void
test_tls_client_uses_mailboxes_of_a_remote_broker(void **state)
{
	struct net *n = *state;
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *cb = broker_open(b), *r = tls_open(b, n->key);
	struct ipc_msg_info info;
	char buf[64];

	assert_non_null(r);
	open_mbox(cb, "jobs", -1);
	assert_int_equal(ipc_send(r, "jobs", "remote", 6), 0);
	assert_int_equal(ipc_recv_timed(cb, "jobs", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 6);
	assert_memory_equal(buf, "remote", 6);
	/* No direct queue there, so no reply address; the mapped uid. */
	assert_string_equal(info.sender, "");
	assert_int_equal(info.uid, 65534);
	assert_int_equal(ipc_send(cb, "jobs", "back", 4), 0);
	assert_int_equal(ipc_recv_timed(r, "jobs", buf, sizeof(buf),
	    TEST_WAIT_MS, &info), 4);
	assert_memory_equal(buf, "back", 4);
	assert_int_equal(ipc_recv_timed(r, NULL, buf, sizeof(buf), 0, NULL),
	    -1);
	assert_int_equal(errno, ENOTSUP);
	assert_int_equal(ipc_accept_remote(r, 1), -1);
	assert_int_equal(errno, ENOTSUP);
	/* A local process's queue refuses it unless it said otherwise. */
	{
		char to[32];

		snprintf(to, sizeof(to), "pid:%d", (int)getpid());
		assert_int_equal(ipc_send(r, to, "x", 1), -1);
		assert_int_equal(errno, EACCES);
		assert_int_equal(ipc_accept_remote(cb, 1), 0);
		assert_int_equal(ipc_send(r, to, "y", 1), 0);
		assert_int_equal(ipc_recv_timed(cb, NULL, buf, sizeof(buf),
		    TEST_WAIT_MS, NULL), 1);
		assert_int_equal(buf[0], 'y');
	}
	ipc_close(r);
	ipc_close(cb);
	unsetenv("IPC_TLS_PSK");
}

static void
test_tls_client_many_messages(void **state)
{
	struct net *n = *state;
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *cb = broker_open(b), *r = tls_open(b, n->key);
	struct drain d = { .mbox = "bulk", .expect = 20000 };
	struct ipc_send_failure f;
	pthread_t t;

	assert_non_null(r);
	open_mbox(cb, "bulk", 20000);
	d.c = cb;
	assert_int_equal(pthread_create(&t, NULL, drain_thread, &d), 0);
	/* Async over TLS: frames the socket cannot take wait in the
	 * library, whole, and go first next time. */
	send_numbered_from(r, "bulk", 0, 20000);
	pthread_join(t, NULL);
	assert_int_equal(d.got, 20000);
	assert_int_equal(d.dup_or_gap, 0);
	assert_int_equal(ipc_send_failure(r, &f), -1);
	ipc_close(r);
	ipc_close(cb);
	unsetenv("IPC_TLS_PSK");
}

static void
test_tls_client_with_wrong_or_no_key_is_refused(void **state)
{
	struct net *n = *state;
	struct broker *b = start(n, 1, n->key, NULL);
	struct ipc_conn *r;

	assert_null(r = tls_open(b, n->key2));
	assert_int_equal(errno, EACCES);
	assert_null(r = tls_open(b, NULL));
	assert_int_equal(errno, ENOKEY);
	assert_true(counter(b, "tls_refused") >= 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_mailbox_send_crosses_brokers, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_name_option_is_the_senders_host, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_remote_errors_reach_a_blocking_sender, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_direct_send_and_reply_across_brokers, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_bulk_arrives_once_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_three_brokers, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_cut_link_loses_nothing_and_repeats_nothing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_frozen_link_is_found_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_key_is_refused,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_plaintext_client_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_stalled_handshake_is_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_bad_frames_on_a_link_drop_only_it, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_full_remote_mailbox_does_not_take_the_link_down,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_slower_heartbeat_of_the_peer_is_followed, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_host_name_is_resolved_and_each_address_tried, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_slow_name_lookup_does_not_stop_the_broker, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_async_remote_failure_is_reported_with_its_id, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_message_over_the_remote_limit_is_refused_here, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_connections_per_address_are_bounded, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_uid_map_decides_permissions, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_x509_link_is_named_by_its_certificate, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_x509_certificate_of_another_ca_is_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_tls_client_uses_mailboxes_of_a_remote_broker, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_tls_client_many_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_tls_client_with_wrong_or_no_key_is_refused, setup,
		    teardown),
	};

	test_init(600);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
