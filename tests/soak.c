/*
 * soak.c - the soak run: one ipcd for SOAK_SECONDS (60 in make check,
 * 600 for make soak) under steady traffic mixed with client churn,
 * hostile clients and kills, with every message accounted for and the
 * broker's memory and descriptors watched.  Run by tests/test-soak.sh;
 * prints cmocka's report and a "soak: summary:" line (the figures of
 * doc/reliability.md).
 *
 *   tests/soak [--seconds N] [--seed N]
 *
 * Who runs (each a child process of this one, forked, so that any of
 * them can be SIGKILLed at any instruction):
 *   - producers: blocking sends, async bursts (ipc_send_async and
 *     ipc_send_more, then a round trip that collects their refusals),
 *     and sends to the direct receiver's pid; one of them passes its
 *     larger payloads as memfds ($IPC_MEMFD_MIN);
 *   - consumers: prefetch 0 to 256 across the steady mailboxes; plain,
 *     allocating and armed receives;
 *   - the direct receiver: takes its direct queue ("pid:P");
 *   - churn clients: short-lived processes, each a few cycles of: a
 *     temporary mailbox created, used (with or without prefetch) and
 *     deleted, or left for the end; a short producer or consumer on the
 *     steady mailboxes; messages to its own pid; introspection and peek;
 *     a monitor; error paths (ENOENT, EINVAL, ESRCH); several
 *     connections at once;
 *   - a hostile client: raw sockets with random bytes, half handshakes,
 *     silence, a bad version, truncated, oversized and bit-flipped
 *     frames, receives and streams never acknowledged, a reader that
 *     never reads, descriptors passed with no SEND to claim them; those
 *     ipcd must close (no handshake, a violation) must be closed in time.
 * This process supervises: every ~0.4 s it SIGKILLs a child born mortal
 * or stops a steady one with SIGTERM, and replaces it.  The seed is
 * printed; the same seed replays the same choices, not the same timing.
 *
 * The books: every message carries its producer, a global index, its
 * sender's pid, where it was sent and a check word; two bytes per index
 * in shared memory say what its sender knows (attempted, accepted,
 * refused, may be dropped by a mailbox deletion or a process exit) and
 * what receivers saw (how often; whether the first receipt was by a
 * receiver never killed).  A receiver fails the run on anything
 * unknown, corrupt, misrouted, from the wrong pid, out of order per
 * producer and queue, received twice without IPC_MSG_REDELIVERED, or
 * redelivered after a receiver that closes cleanly (so acknowledged it)
 * had it.
 *
 * Quiet points: at the end of the warm-up (20 % of the run, at least
 * 10 s) and four more times, every child is stopped (SIGTERM; what the
 * consumers held goes back, redelivered) and the broker must come down
 * to this process's one connection.  Then: its own books must balance
 * (messages_in = messages_out + queued + dropped, per mailbox too);
 * what is left is drained and recorded; every accepted message must
 * have arrived, and the counters must agree with the books (see
 * reconcile()).  The one excuse: the library acknowledges a message as
 * it hands it over, so a receiver killed between that and recording it
 * took it for good; each receiver flags when it is in there, and no
 * more messages may be missing than receivers were killed so.
 *
 * Memory and descriptors, at each quiet point, with no client at all
 * (the control connection closed: its reply buffers, grown while the
 * mailboxes were full, held the heap up otherwise): the descriptor
 * count must be the count right after the start, and RSS drift =
 * (VmRSS at the last quiet point - VmRSS at the end of the warm-up) /
 * VmRSS at the end of the warm-up must stay under 5 %.  ipcd runs with
 * glibc's mmap threshold pinned and its tcache and fastbins off
 * (GLIBC_TUNABLES): with the defaults its heap kept 4-8 MB at quiet
 * points of which ~200 kB was in use (malloc_stats), moving by MBs
 * with the history of message sizes; tuned, the heap is the ~200 kB in
 * use, and a leak shows.  Under AddressSanitizer RSS is the quarantine:
 * the drift is printed, not enforced, and LeakSanitizer checks ipcd at
 * its exit instead (SIGTERM: it must exit 0).
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
#include <getopt.h>
#include <inttypes.h>
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "mysocks.h"
#include "testutil.h"
#include "testbroker.h"
#include "wire.h"

#if defined(__SANITIZE_ADDRESS__)
#define SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_ASAN 1
#endif
#endif
#ifndef SOAK_ASAN
#define SOAK_ASAN 0
#endif

/* --- the shape of the run ---------------------------------------------- */

#define NBOX		4		/* steady mailboxes soak.0 .. 3 */
#define BOX_CAPACITY	256
#define BOX_MAX_BYTES	(4u << 20)
#define NPROD		3
#define NCONS		3
#define NCHURN		2		/* churn processes at once */
#define EPOCHS_AFTER	4		/* quiet points after warm-up's */
#define DISRUPT_MS	400		/* mean time between kills/stops */
#define TICK_MS		20
#define HANDSHAKE_MS	1000		/* ipcd --handshake-timeout */
#define RSS_DRIFT_MAX	5.0		/* percent */

#define MSG_HDR		32u
#define MSG_MAX		(256u << 10)
#define RBUF_SIZE	(MSG_MAX + 4096u)
#define CHUNK		1024u		/* indexes taken at once */
/* Message indexes: 2 bytes of books each, in memory touched as used;
 * reserved for 100,000 messages a second (some 15,000 are sent). */
#define IDX_PER_S	100000u

/* Where a message was sent: a steady mailbox 0..NBOX-1, or these. */
enum { BOX_D = 100, BOX_SELF = 101, BOX_TEMP = 102 };

/* What the sender knows (st[idx]). */
#define ST_ATT		0x01u		/* about to be sent */
#define ST_ACC		0x02u		/* the broker accepted it */
#define ST_NOTSENT	0x04u		/* refused: never accepted */
#define ST_MAYDROP	0x08u		/* may be dropped: its temporary
					 * mailbox deleted or its receiving
					 * process gone */
/* Where it went (bits 4-6), for the report of a message gone missing. */
#define ST_BOX(b)	((unsigned)((b) < NBOX ? (b) : (b) - BOX_D + NBOX) \
			    << 4)
#define ST_BOX_OF(st)	((st) >> 4 < NBOX ? (st) >> 4 : \
			    ((st) >> 4) - NBOX + BOX_D)
/* What receivers saw (rx[idx]): a count, and whether the first receipt
 * was by a receiver that is never killed (so acknowledges it). */
#define RX_IMM		0x80u
#define RX_COUNT	0x7fu

#define MSG_MAGIC	0x4b414f53u	/* "SOAK" */

struct soakmsg {
	uint32_t magic, producer;
	uint64_t idx;
	uint32_t len, box;
	uint32_t pid, check;
};
_Static_assert(sizeof(struct soakmsg) == MSG_HDR, "32-byte header");

#define ERR_MAX		16

/* Shared with every child (MAP_SHARED before any fork). */
struct shared {
	_Atomic uint64_t next_idx;
	_Atomic uint32_t next_producer, next_tmp, nerr;
	_Atomic int d_pid;		/* the direct receiver; 0: none */
	_Atomic uint64_t sent, notsent, async_bursts, async_failed, direct;
	_Atomic uint64_t receipts, flagged, flagged_dups, peeked;
	_Atomic uint64_t churn_procs, churn_cycles, churn_conns, temp_boxes;
	_Atomic uint64_t temp_failures, self_direct, monitors, introspect;
	_Atomic uint64_t expected_errors, idx_exhausted;
	_Atomic uint64_t hostile_conns, hostile_closed, hostile_takes;
	/* Per worker slot: inside a receive, from the call until the
	 * message is recorded.  The library acknowledges a message as it
	 * hands it over (at once when the acknowledgement rides with a
	 * stream's CREDIT), so a receiver killed in there may have taken
	 * one message for good that nobody recorded. */
	_Atomic int in_rx[16];
	char errlog[ERR_MAX][320];
};

static struct shared *S;
static _Atomic uint8_t *ST, *RX;
static uint64_t idx_cap;
/* Who took each chunk of indexes: producer id, and its pid (for the
 * report of a message gone missing). */
struct owner {
	uint32_t producer;
	int32_t pid;
};
static struct owner *OWN;
static size_t shm_len;

#define STAT(f)		atomic_fetch_add_explicit(&S->f, 1, \
			    memory_order_relaxed)
#define STATN(f, n)	atomic_fetch_add_explicit(&S->f, (n), \
			    memory_order_relaxed)
#define LOAD(f)		atomic_load(&S->f)

/* --- per process ------------------------------------------------------- */

static char g_where[PATH_MAX + 8];
static char g_path[PATH_MAX];
static const char *g_role = "supervisor";
static int g_immortal = 1;		/* never SIGKILLed: acks all */
static int g_slot = -1;			/* worker slot; -1: supervisor */
static pid_t g_pid;			/* getpid(), which is a system call */
static uint64_t g_rng;
static const char *const box_name[NBOX] = {
	"soak.0", "soak.1", "soak.2", "soak.3"
};

static uint64_t
rnd(void)
{
	uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t
rn(uint32_t n)
{
	return n ? (uint32_t)(rnd() % n) : 0;
}

static int
chance(unsigned pct)
{
	return rn(100) < pct;
}

static void
nap(int ms)
{
	poll(NULL, 0, ms);
}

static void soak_err(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Something went wrong: counted, logged in shared memory for the
 * supervisor (the first ERR_MAX), and on stderr. */
static void
soak_err(const char *fmt, ...)
{
	char line[256];
	uint32_t k;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	k = atomic_fetch_add(&S->nerr, 1);
	if (k < ERR_MAX)
		snprintf(S->errlog[k], sizeof(S->errlog[k]), "%s[%ld]: %s",
		    g_role, (long)getpid(), line);
	fprintf(stderr, "soak: %s[%ld]: %s\n", g_role, (long)getpid(), line);
}

/* A child stops on a pending SIGTERM (blocked since its fork, so no
 * call is ever interrupted). */
static int
term_pending(void)
{
	sigset_t s;

	sigpending(&s);
	return sigismember(&s, SIGTERM);
}

static void
rx_window(int open)
{
	if (g_slot >= 0)
		atomic_store(&S->in_rx[g_slot], open);
}

static struct ipc_conn *
soak_open(void)
{
	struct ipc_conn *c = ipc_open(g_where);

	if (c == NULL) {
		soak_err("ipc_open: %s", strerror(errno));
		_exit(3);
	}
	return c;
}

/* --- messages ---------------------------------------------------------- */

static uint32_t
msg_check(const struct soakmsg *m)
{
	uint64_t h = m->idx * 0x9e3779b97f4a7c15ull;

	h ^= ((uint64_t)m->producer << 32 | m->len) * 0xbf58476d1ce4e5b9ull;
	h ^= ((uint64_t)m->box << 32 | m->pid) * 0x94d049bb133111ebull;
	return (uint32_t)(h ^ (h >> 32)) ^ MSG_MAGIC;
}

static uint8_t
msg_byte(uint64_t idx, size_t i)
{
	return (uint8_t)(idx * 131u + i * 7u + (i >> 8) * 13u + (idx >> 9));
}

static void
msg_fill(uint8_t *buf, size_t len, uint32_t producer, uint64_t idx,
    uint32_t box)
{
	struct soakmsg m = { MSG_MAGIC, producer, idx, (uint32_t)len, box,
	    (uint32_t)g_pid, 0 };

	m.check = msg_check(&m);
	memcpy(buf, &m, sizeof(m));
	for (size_t i = MSG_HDR; i < len; i++)
		buf[i] = msg_byte(idx, i);
}

/* NULL when buf is a whole, intact soak message, else what is wrong. */
static const char *
msg_verify(const uint8_t *buf, size_t n, struct soakmsg *out)
{
	if (n < MSG_HDR)
		return "shorter than a header";
	memcpy(out, buf, sizeof(*out));
	if (out->magic != MSG_MAGIC)
		return "no magic";
	if (out->check != msg_check(out))
		return "bad check word";
	if (out->len != n)
		return "length differs from the header's";
	for (size_t i = MSG_HDR; i < n; i++)
		if (buf[i] != msg_byte(out->idx, i))
			return "payload bytes corrupt";
	return NULL;
}

/* Mostly small; some KiB (memfds for the memfd producer); a few large. */
static size_t
msg_size(void)
{
	unsigned r = rn(1000);

	if (r < 900)
		return MSG_HDR + rn(224);
	if (r < 990)
		return 1024 + rn(15 * 1024);
	return (64u << 10) + rn(MSG_MAX - (64u << 10));
}

/* --- a sender's books -------------------------------------------------- */

struct prod {
	struct ipc_conn *c;
	uint32_t id;
	uint64_t next, end;		/* indexes taken, not yet used */
};

static void
prod_init(struct prod *p, struct ipc_conn *c)
{
	p->c = c;
	p->id = atomic_fetch_add(&S->next_producer, 1) + 1;
	p->next = p->end = 0;
}

/* The next index, or -1 when the run used them all (it then idles). */
static int
idx_take(struct prod *p, uint64_t *out)
{
	if (p->next == p->end) {
		uint64_t b = atomic_fetch_add(&S->next_idx, CHUNK);

		if (b + CHUNK > idx_cap) {
			STAT(idx_exhausted);
			return -1;
		}
		p->next = b;
		p->end = b + CHUNK;
		OWN[b / CHUNK].producer = p->id;
		OWN[b / CHUNK].pid = (int32_t)g_pid;
	}
	*out = p->next++;
	return 0;
}

static void
mark(uint64_t idx, unsigned bits)
{
	atomic_fetch_or(&ST[idx], (uint8_t)bits);
}

/* --- a receiver's checks ----------------------------------------------- */

#define ORD_SIZE 8192

struct ordent {
	uint32_t producer, box;		/* producer 0: empty */
	uint64_t last;
};

struct rxctx {
	struct ordent ord[ORD_SIZE];
};

/* A message arrived from box (a steady mailbox or BOX_*).  Returns its
 * index, or UINT64_MAX when it is not one of ours (an error then). */
static uint64_t
rx_check(struct rxctx *x, const void *buf, ssize_t n,
    const struct ipc_msg_info *info, uint32_t box)
{
	struct soakmsg m;
	const char *why = msg_verify(buf, (size_t)n, &m);
	char sender[32];
	int flagged = (info->flags & IPC_MSG_REDELIVERED) != 0;
	uint64_t top = atomic_load(&S->next_idx);
	uint8_t old, nu, st;

	if (why != NULL) {
		soak_err("from box %u: %zd bytes: %s", box, n, why);
		return UINT64_MAX;
	}
	if (m.box != box || info->len != (size_t)n ||
	    info->pid != (pid_t)m.pid) {
		soak_err("idx %" PRIu64 ": sent to box %u by pid %u, received "
		    "from box %u from pid %ld, info len %zu of %zd", m.idx,
		    m.box, m.pid, box, (long)info->pid, info->len, n);
		return UINT64_MAX;
	}
	snprintf(sender, sizeof(sender), "pid:%u", m.pid);
	if (strcmp(info->sender, sender) != 0) {
		soak_err("idx %" PRIu64 ": reply address '%s', not %s", m.idx,
		    info->sender, sender);
		return UINT64_MAX;
	}
	if (box == BOX_SELF && m.pid != (uint32_t)g_pid) {
		soak_err("idx %" PRIu64 ": in my direct queue from pid %u",
		    m.idx, m.pid);
		return UINT64_MAX;
	}
	if (m.idx >= top || m.idx >= idx_cap ||
	    !((st = atomic_load(&ST[m.idx])) & ST_ATT)) {
		soak_err("idx %" PRIu64 " (producer %u): never sent", m.idx,
		    m.producer);
		return UINT64_MAX;
	}
	if (st & ST_NOTSENT)
		soak_err("idx %" PRIu64 " (producer %u, box %u): arrived, but "
		    "its sender was told it was not sent", m.idx, m.producer,
		    box);
	old = atomic_load(&RX[m.idx]);
	do {
		unsigned cnt = (old & RX_COUNT) + 1u;

		nu = (uint8_t)((old & RX_IMM) | (cnt > RX_COUNT ? RX_COUNT :
		    cnt));
		if ((old & RX_COUNT) == 0 && g_immortal)
			nu |= RX_IMM;
	} while (!atomic_compare_exchange_weak(&RX[m.idx], &old, nu));
	STAT(receipts);
	if (flagged)
		STAT(flagged);
	if (old & RX_COUNT) {
		if (!flagged)
			soak_err("idx %" PRIu64 " (producer %u, box %u): "
			    "received again, not flagged redelivered",
			    m.idx, m.producer, box);
		else if (old & RX_IMM)
			soak_err("idx %" PRIu64 " (producer %u, box %u): "
			    "redelivered after a receiver that acknowledges "
			    "everything had it", m.idx, m.producer, box);
		STAT(flagged_dups);
	}
	if (!flagged) {
		/* Per producer and queue, first deliveries keep order. */
		uint32_t h = (m.producer * 2654435761u ^ box * 40503u) %
		    ORD_SIZE;
		struct ordent *e = &x->ord[h];

		if (e->producer == m.producer && e->box == box &&
		    m.idx <= e->last)
			soak_err("idx %" PRIu64 " (producer %u, box %u) after "
			    "idx %" PRIu64 ": out of order", m.idx,
			    m.producer, box, e->last);
		e->producer = m.producer;
		e->box = box;
		e->last = m.idx;
	}
	return m.idx;
}

/* Record a receipt, and close the receive window. */
static uint64_t
rx_record(struct rxctx *x, const void *buf, ssize_t n,
    const struct ipc_msg_info *info, uint32_t box)
{
	uint64_t idx = rx_check(x, buf, n, info, box);

	rx_window(0);
	return idx;
}

/* --- producers --------------------------------------------------------- */

static void
producer_one(struct prod *p, uint8_t *buf, uint32_t box, const char *dest)
{
	uint64_t idx;
	size_t len = msg_size();

	if (idx_take(p, &idx) < 0) {
		nap(50);
		return;
	}
	msg_fill(buf, len, p->id, idx, box);
	mark(idx, ST_ATT | ST_BOX(box));
	if (ipc_send_timed(p->c, dest, buf, len, 1000, NULL) == 0) {
		mark(idx, ST_ACC);
		STAT(sent);
		if (box == BOX_D)
			STAT(direct);
	} else if (errno == ETIMEDOUT) {
		mark(idx, ST_NOTSENT);
		STAT(notsent);
	} else {
		soak_err("send %zu bytes to %s: %s", len, dest,
		    strerror(errno));
		_exit(1);
	}
}

/* Async sends, then a round trip: the broker answers in order, so every
 * refusal of the burst is in before the answer; the others went in. */
static void
producer_burst(struct prod *p, uint8_t *buf)
{
	struct { uint64_t sid, idx; } ids[64];
	uint32_t box = rn(NBOX), n = 1 + rn(64), k = 0;
	int more = chance(50);
	struct ipc_send_failure f;
	struct ipc_mbox_info info;

	STAT(async_bursts);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t idx, sid = 0;
		size_t len = msg_size();
		int r;

		if (idx_take(p, &idx) < 0)
			break;
		msg_fill(buf, len, p->id, idx, box);
		mark(idx, ST_ATT | ST_BOX(box));
		r = more ? ipc_send_more(p->c, box_name[box], buf, len, &sid) :
		    ipc_send_async(p->c, box_name[box], buf, len, &sid);
		if (r == 0) {
			ids[k].sid = sid;
			ids[k++].idx = idx;
		} else if (errno == EAGAIN) {
			mark(idx, ST_NOTSENT);
			STAT(notsent);
			if (ipc_flush(p->c) < 0) {
				soak_err("flush: %s", strerror(errno));
				_exit(1);
			}
		} else {
			soak_err("async send to %s: %s", box_name[box],
			    strerror(errno));
			_exit(1);
		}
	}
	if (ipc_flush(p->c) < 0 ||
	    ipc_mbox_stat(p->c, box_name[box], &info) < 0) {
		soak_err("after an async burst: %s", strerror(errno));
		_exit(1);
	}
	while (ipc_send_failure(p->c, &f) == 0) {
		uint32_t j;

		for (j = 0; j < k && ids[j].sid != f.send_id; j++)
			;
		if (j == k || ids[j].idx == UINT64_MAX) {
			soak_err("a failure for send id %" PRIu64 " I do not "
			    "know (%s)", f.send_id, strerror(f.error));
			continue;
		}
		if (f.error != EAGAIN)
			soak_err("async send to %s failed: %s", box_name[box],
			    strerror(f.error));
		mark(ids[j].idx, ST_NOTSENT);
		ids[j].idx = UINT64_MAX;
		STAT(async_failed);
		STAT(notsent);
	}
	if (errno != EAGAIN) {
		soak_err("ipc_send_failure: %s", strerror(errno));
		_exit(1);
	}
	for (uint32_t j = 0; j < k; j++)
		if (ids[j].idx != UINT64_MAX) {
			mark(ids[j].idx, ST_ACC);
			STAT(sent);
		}
}

static void
producer_main(int memfd)
{
	uint8_t *buf = malloc(MSG_MAX);
	struct prod p;
	char dest[32];

	if (memfd)
		setenv("IPC_MEMFD_MIN", "4096", 1);
	if (buf == NULL)
		_exit(4);
	prod_init(&p, soak_open());
	while (!term_pending()) {
		unsigned r = rn(100);
		int d;

		if (r < 12) {
			producer_burst(&p, buf);
		} else if (r < 20 && (d = atomic_load(&S->d_pid)) > 0) {
			snprintf(dest, sizeof(dest), "pid:%d", d);
			producer_one(&p, buf, BOX_D, dest);
		} else {
			uint32_t b = rn(NBOX);

			producer_one(&p, buf, b, box_name[b]);
		}
	}
	ipc_close(p.c);
	free(buf);
	_exit(0);
}

/* --- consumers --------------------------------------------------------- */

static void
consumer_main(void)
{
	static const unsigned pf[] = { 0, 0, 1, 8, 64, 256 };
	struct rxctx *x = calloc(1, sizeof(*x));
	uint8_t *buf = malloc(RBUF_SIZE);
	struct ipc_conn *c = soak_open();
	uint32_t b = rn(NBOX);

	if (x == NULL || buf == NULL)
		_exit(4);
	if (ipc_set_prefetch(c, pf[rn(6)]) < 0) {
		soak_err("ipc_set_prefetch: %s", strerror(errno));
		_exit(1);
	}
	while (!term_pending()) {
		struct ipc_msg_info info;
		unsigned mode = rn(100);
		void *p = NULL;
		ssize_t n;

		b = (b + 1 + rn(2)) % NBOX;
		rx_window(1);
		if (mode < 10) {
			/* EBUSY: one is armed already (maybe on another
			 * mailbox, its message not taken yet, or taken
			 * by a receive that found an older one kept
			 * from a stream).  Receive as it is. */
			if (ipc_recv_arm(c, box_name[b]) < 0 &&
			    errno != EBUSY) {
				soak_err("arm %s: %s", box_name[b],
				    strerror(errno));
				_exit(1);
			}
			test_wait_readable(ipc_fd(c), 50);
			n = ipc_recv_timed(c, box_name[b], buf, RBUF_SIZE, 0,
			    &info);
		} else if (mode < 20) {
			n = ipc_recv_alloc(c, box_name[b], &p, 50, &info);
		} else {
			n = ipc_recv_timed(c, box_name[b], buf, RBUF_SIZE, 50,
			    &info);
		}
		if (n >= 0) {
			rx_record(x, p != NULL ? p : buf, n, &info, b);
			free(p);
			continue;
		}
		rx_window(0);
		if (errno != ETIMEDOUT && errno != EAGAIN) {
			soak_err("receive from %s: %s", box_name[b],
			    strerror(errno));
			_exit(1);
		}
	}
	ipc_close(c);
	free(buf);
	free(x);
	_exit(0);
}

/* The direct receiver: its own queue, drained once told to stop (the
 * producers are gone by then, so nothing more comes). */
static void
direct_main(void)
{
	struct rxctx *x = calloc(1, sizeof(*x));
	uint8_t *buf = malloc(RBUF_SIZE);
	struct ipc_conn *c = soak_open();
	int stopping = 0;

	if (x == NULL || buf == NULL)
		_exit(4);
	atomic_store(&S->d_pid, (int)ipc_pid(c));
	for (;;) {
		struct ipc_msg_info info;
		ssize_t n;

		if (!stopping && term_pending())
			stopping = 1;
		n = ipc_recv_timed(c, NULL, buf, RBUF_SIZE, stopping ? 0 : 100,
		    &info);
		if (n >= 0)
			rx_record(x, buf, n, &info, BOX_D);
		else if (errno == EAGAIN && stopping)
			break;
		else if (errno != ETIMEDOUT && errno != EAGAIN) {
			soak_err("receive from my direct queue: %s",
			    strerror(errno));
			_exit(1);
		}
	}
	atomic_store(&S->d_pid, 0);
	ipc_close(c);
	free(buf);
	free(x);
	_exit(0);
}

/* --- churn ------------------------------------------------------------- */

struct churn {
	struct rxctx x;
	uint8_t sbuf[MSG_MAX], rbuf[RBUF_SIZE];
};

static int
expect_err(int r, int want, const char *what)
{
	if (r == 0 || errno != want) {
		soak_err("%s: %s, expected %s", what, r == 0 ? "succeeded" :
		    strerror(errno), strerror(want));
		return -1;
	}
	STAT(expected_errors);
	return 0;
}

/* A temporary mailbox: created, some messages through it, maybe left
 * over, then deleted (or left for the end).  Its own books: what was
 * accepted and not received is marked may-drop before the delete; the
 * broker must report exactly those lost (without prefetch; with it,
 * those held by the library are reported only at the close). */
static void
churn_temp(struct churn *ch)
{
	static const int64_t caps[] = { 1, 4, 64 };
	static const unsigned pfs[] = { 0, 0, 4, 32 };
	struct { uint64_t idx, mid; int got; } acc[20];
	struct ipc_mbox_attr attr;
	struct ipc_send_failure f;
	struct ipc_msg_info info;
	struct ipc_conn *c = soak_open();
	struct prod p;
	char name[64];
	unsigned pf = pfs[rn(4)], k = 1 + rn(20), na = 0, left = 0, fails = 0;
	ssize_t n;

	prod_init(&p, c);
	STAT(churn_conns);
	snprintf(name, sizeof(name), "soak-tmp-%u",
	    atomic_fetch_add(&S->next_tmp, 1));
	ipc_mbox_attr_init(&attr);
	attr.capacity = caps[rn(3)];
	attr.exclusive = 1;
	if (chance(30))
		attr.max_bytes = 64 << 10;
	if (ipc_mbox_create(c, name, &attr, NULL) < 0) {
		soak_err("create %s: %s", name, strerror(errno));
		_exit(1);
	}
	STAT(temp_boxes);
	if (pf && ipc_set_prefetch(c, pf) < 0) {
		soak_err("ipc_set_prefetch: %s", strerror(errno));
		_exit(1);
	}
	for (unsigned i = 0; i < k; i++) {
		uint64_t idx, mid = 0;
		size_t len = MSG_HDR + rn(chance(10) ? 20000 : 1024);

		if (idx_take(&p, &idx) < 0)
			break;
		msg_fill(ch->sbuf, len, p.id, idx, BOX_TEMP);
		mark(idx, ST_ATT | ST_BOX(BOX_TEMP));
		if (ipc_send_timed(c, name, ch->sbuf, len, rn(2) ? 0 : 20,
		    &mid) == 0) {
			mark(idx, ST_ACC);
			STAT(sent);
			acc[na].idx = idx;
			acc[na].mid = mid;
			acc[na++].got = 0;
		} else if (errno == EAGAIN || errno == ETIMEDOUT) {
			mark(idx, ST_NOTSENT);
			STAT(notsent);
		} else {
			soak_err("send to %s: %s", name, strerror(errno));
			_exit(1);
		}
		if (!chance(50))
			continue;
		rx_window(1);
		if ((n = ipc_recv_timed(c, name, ch->rbuf, RBUF_SIZE, 0,
		    &info)) >= 0) {
			uint64_t got = rx_record(&ch->x, ch->rbuf, n, &info,
			    BOX_TEMP);

			for (unsigned j = 0; j < na; j++)
				if (acc[j].idx == got)
					acc[j].got = 1;
		} else {
			rx_window(0);
			if (errno != EAGAIN) {
				soak_err("receive from %s: %s", name,
				    strerror(errno));
				_exit(1);
			}
		}
	}
	for (int drain = chance(50); drain;) {
		uint64_t got;

		rx_window(1);
		if ((n = ipc_recv_timed(c, name, ch->rbuf, RBUF_SIZE, 20,
		    &info)) < 0)
			break;
		got = rx_record(&ch->x, ch->rbuf, n, &info, BOX_TEMP);
		for (unsigned j = 0; j < na; j++)
			if (acc[j].idx == got)
				acc[j].got = 1;
	}
	rx_window(0);
	for (unsigned j = 0; j < na; j++)
		if (!acc[j].got) {
			mark(acc[j].idx, ST_MAYDROP);
			left++;
		}
	if (chance(85)) {
		if (ipc_mbox_delete(c, name) < 0) {
			soak_err("delete %s: %s", name, strerror(errno));
			_exit(1);
		}
		while (ipc_send_failure(c, &f) == 0) {
			unsigned j;

			for (j = 0; j < na && acc[j].mid != f.msg_id; j++)
				;
			if (j == na || acc[j].got || f.error != ENOENT)
				soak_err("%s deleted: failure of message id "
				    "%" PRIu64 " (%s), not one left in it",
				    name, f.msg_id, strerror(f.error));
			fails++;
		}
		STATN(temp_failures, fails);
		if (pf == 0 ? fails != left : fails > left)
			soak_err("%s deleted with %u messages left: %u "
			    "reported lost", name, left, fails);
	}
	ipc_close(c);
}

/* A short producer on the steady mailboxes; its last sends may be
 * batched and left to the close. */
static void
churn_produce(struct churn *ch)
{
	struct prod p;
	unsigned k = 1 + rn(20), batched = chance(30);

	prod_init(&p, soak_open());
	STAT(churn_conns);
	for (unsigned i = 0; i < k; i++) {
		uint32_t b = rn(NBOX);
		uint64_t idx;
		size_t len = MSG_HDR + rn(512);

		if (batched && i + 3 >= k) {
			if (idx_take(&p, &idx) < 0)
				break;
			msg_fill(ch->sbuf, len, p.id, idx, b);
			/* Its fate is known at the drain. */
			mark(idx, ST_ATT | ST_BOX(b));
			if (ipc_send_more(p.c, box_name[b], ch->sbuf, len,
			    NULL) < 0 && errno != EAGAIN) {
				soak_err("send_more: %s", strerror(errno));
				_exit(1);
			}
			continue;
		}
		producer_one(&p, ch->sbuf, b, box_name[b]);
	}
	ipc_close(p.c);
}

/* A short consumer: whatever it prefetched and did not take goes back,
 * redelivered, when it closes. */
static void
churn_consume(struct churn *ch)
{
	static const unsigned pfs[] = { 0, 16, 64 };
	struct ipc_conn *c = soak_open();
	uint32_t b = rn(NBOX);
	unsigned k = 1 + rn(10);

	STAT(churn_conns);
	if (ipc_set_prefetch(c, pfs[rn(3)]) < 0) {
		soak_err("ipc_set_prefetch: %s", strerror(errno));
		_exit(1);
	}
	for (unsigned i = 0; i < k; i++) {
		struct ipc_msg_info info;
		ssize_t n;

		rx_window(1);
		n = ipc_recv_timed(c, box_name[b], ch->rbuf, RBUF_SIZE, 50,
		    &info);
		if (n >= 0) {
			rx_record(&ch->x, ch->rbuf, n, &info, b);
			continue;
		}
		rx_window(0);
		if (errno != ETIMEDOUT && errno != EAGAIN) {
			soak_err("receive from %s: %s", box_name[b],
			    strerror(errno));
			_exit(1);
		}
	}
	ipc_close(c);
}

/* Messages to its own pid, all taken back.  May-drop: if this process
 * is killed first, its direct queue goes with it. */
static void
churn_self(struct churn *ch)
{
	struct prod p;
	char dest[32];
	unsigned k = 1 + rn(10), na = 0;

	prod_init(&p, soak_open());
	STAT(churn_conns);
	snprintf(dest, sizeof(dest), "pid:%ld", (long)ipc_pid(p.c));
	for (unsigned i = 0; i < k; i++) {
		uint64_t idx;
		size_t len = MSG_HDR + rn(2048);

		if (idx_take(&p, &idx) < 0)
			break;
		msg_fill(ch->sbuf, len, p.id, idx, BOX_SELF);
		mark(idx, ST_ATT | ST_MAYDROP | ST_BOX(BOX_SELF));
		if (ipc_send_timed(p.c, dest, ch->sbuf, len, 1000, NULL) < 0) {
			soak_err("send to %s: %s", dest, strerror(errno));
			_exit(1);
		}
		mark(idx, ST_ACC);
		STAT(sent);
		STAT(self_direct);
		na++;
	}
	for (unsigned i = 0; i < na; i++) {
		struct ipc_msg_info info;
		ssize_t n;

		rx_window(1);
		n = ipc_recv_timed(p.c, NULL, ch->rbuf, RBUF_SIZE,
		    TEST_WAIT_MS, &info);

		if (n < 0) {
			soak_err("my own message %u of %u: %s", i + 1, na,
			    strerror(errno));
			_exit(1);
		}
		rx_record(&ch->x, ch->rbuf, n, &info, BOX_SELF);
	}
	ipc_close(p.c);
}

static int
count_box(const struct ipc_mbox_info *info, void *arg)
{
	(void)info;
	(*(unsigned *)arg)++;
	return 0;
}

static int
count_client(const struct ipc_client_info *info, void *arg)
{
	(void)info;
	(*(unsigned *)arg)++;
	return 0;
}

static int
count_counter(const char *name, uint64_t value, void *arg)
{
	(void)name;
	(void)value;
	(*(unsigned *)arg)++;
	return 0;
}

static int
check_peeked(const struct ipc_msg_info *info, const void *data, void *arg)
{
	struct soakmsg m;
	const char *why = msg_verify(data, info->len, &m);

	(void)arg;
	if (why != NULL)
		soak_err("peeked message %" PRIu64 ": %s", info->id, why);
	STAT(peeked);
	return 0;
}

static void
churn_introspect(void)
{
	struct ipc_conn *c = soak_open();
	unsigned n = 0;
	uint32_t b = rn(NBOX);

	STAT(churn_conns);
	STAT(introspect);
	if (ipc_mbox_list(c, count_box, &n) < 0 ||
	    ipc_clients(c, count_client, &n) < 0 ||
	    ipc_counters(c, count_counter, &n) < 0 ||
	    ipc_mbox_peek(c, box_name[b], 1 + rn(8), check_peeked, NULL) < 0)
		soak_err("introspection: %s", strerror(errno));
	ipc_close(c);
}

static void
churn_monitor(void)
{
	struct ipc_conn *c = soak_open();
	long long end = test_now_ms() + 200;
	struct ipc_event ev;

	STAT(churn_conns);
	STAT(monitors);
	if (ipc_monitor(c) < 0) {
		soak_err("ipc_monitor: %s", strerror(errno));
		_exit(1);
	}
	for (int i = 0; i < 100 && test_now_ms() < end; i++)
		if (ipc_monitor_next(c, &ev, 20) < 0 && errno != ETIMEDOUT &&
		    errno != EAGAIN) {
			soak_err("ipc_monitor_next: %s", strerror(errno));
			break;
		}
	ipc_close(c);
}

static void
churn_errors(struct churn *ch)
{
	struct ipc_conn *c = soak_open();
	struct ipc_mbox_info info;
	struct ipc_msg_info minfo;
	char none[64];

	STAT(churn_conns);
	snprintf(none, sizeof(none), "soak-none-%u", rn(1000));
	memset(ch->sbuf, 0, 64);
	expect_err(ipc_send_timed(c, none, ch->sbuf, 64, 0, NULL), ENOENT,
	    "send to a missing mailbox");
	expect_err(ipc_recv_timed(c, none, ch->rbuf, RBUF_SIZE, 0,
	    &minfo) < 0 ? -1 : 0, ENOENT, "receive from a missing mailbox");
	expect_err(ipc_mbox_stat(c, none, &info), ENOENT, "stat");
	expect_err(ipc_mbox_delete(c, none), ENOENT, "delete");
	expect_err(ipc_mbox_create(c, ".bad", NULL, NULL), EINVAL,
	    "create .bad");
	/* pid 1 lives but never connects: refused at once with 0. */
	expect_err(ipc_send_timed(c, "pid:1", ch->sbuf, 64, 0, NULL), ESRCH,
	    "send to pid 1");
	ipc_close(c);
}

static void
churn_many(void)
{
	struct ipc_conn *c[8];
	struct ipc_mbox_info info;
	unsigned n = 2 + rn(7);

	for (unsigned i = 0; i < n; i++) {
		c[i] = soak_open();
		STAT(churn_conns);
		if (ipc_mbox_stat(c[i], box_name[rn(NBOX)], &info) < 0)
			soak_err("stat: %s", strerror(errno));
	}
	while (n > 0) {
		unsigned i = rn(n);

		ipc_close(c[i]);
		c[i] = c[--n];
	}
}

static void
churn_main(void)
{
	struct churn *ch = calloc(1, sizeof(*ch));
	unsigned cycles = 1 + rn(4);

	if (ch == NULL)
		_exit(4);
	STAT(churn_procs);
	for (unsigned i = 0; i < cycles && !term_pending(); i++) {
		unsigned r = rn(100);

		STAT(churn_cycles);
		if (r < 35)
			churn_temp(ch);
		else if (r < 50)
			churn_produce(ch);
		else if (r < 65)
			churn_consume(ch);
		else if (r < 75)
			churn_self(ch);
		else if (r < 83)
			churn_introspect();
		else if (r < 88)
			churn_monitor();
		else if (r < 93)
			churn_errors(ch);
		else
			churn_many();
	}
	free(ch);
	_exit(0);
}

/* --- the hostile client ------------------------------------------------ */

enum hkind {
	H_GARBAGE, H_HALF_HELLO, H_SILENT, H_BAD_VERSION, H_TRUNCATED,
	H_OVERSIZE, H_FLIPPED, H_NOACK_RECV, H_SLOW_READER, H_CONNECT_CLOSE,
	H_FD_SPAM, H_FAKE_FD_SEND, H_HELLO_TWICE, H_MONITOR_NOREAD, H_KINDS
};

/* Connections that must be closed by the broker (no handshake in time,
 * or a violation), by when. */
#define HPARK 8
struct hpark {
	int fd;
	enum hkind kind;
	long long deadline;
};

static int
h_send(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = send(fd, (const char *)buf + done, n - done,
		    MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		done += (size_t)w;
	}
	return 0;
}

static size_t
h_encode(const struct wire_frame *fr, uint8_t *buf, size_t cap)
{
	long n = wire_encode(fr, buf, cap);

	if (n <= 0) {
		soak_err("wire_encode %s: %ld", wire_type_name(fr->type), n);
		_exit(1);
	}
	return (size_t)n;
}

/* Read exactly n bytes by the deadline: 1, 0 at EOF, -1 otherwise. */
static int
h_read_full(int fd, uint8_t *buf, size_t n, long long deadline)
{
	size_t got = 0;

	while (got < n) {
		long long left = deadline - test_now_ms();
		ssize_t r;

		if (left <= 0 || test_wait_readable(fd, (int)left) != 1)
			return -1;
		r = recv(fd, buf + got, n - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return 0;
		if (r < 0)
			return -1;
		got += (size_t)r;
	}
	return 1;
}

/* The next frame into buf (cap bytes; longer ones are read and only
 * their header kept): 1, 0 at EOF, -1 on a timeout or a bad length. */
static int
h_read_frame(int fd, uint8_t *buf, size_t cap, uint32_t *len_out,
    long long deadline)
{
	uint8_t sink[4096];
	uint32_t len;
	int r;

	if ((r = h_read_full(fd, buf, WIRE_HDR_LEN, deadline)) <= 0)
		return r;
	len = wire_get32(buf);
	if (len < WIRE_HDR_LEN)
		return -1;
	*len_out = len;
	if (len <= cap)
		return h_read_full(fd, buf + WIRE_HDR_LEN, len - WIRE_HDR_LEN,
		    deadline);
	for (uint32_t left = len - WIRE_HDR_LEN; left > 0;) {
		uint32_t k = left < sizeof(sink) ? left : sizeof(sink);

		if ((r = h_read_full(fd, sink, k, deadline)) <= 0)
			return r;
		left -= k;
	}
	return 1;
}

/* Read and throw away what comes for ms, or until EOF (returns 1). */
static int
h_soak_up(int fd, int ms)
{
	long long end = test_now_ms() + ms;
	uint8_t sink[8192];

	for (;;) {
		long long left = end - test_now_ms();
		ssize_t r;

		if (left <= 0 || test_wait_readable(fd, (int)left) != 1)
			return 0;
		r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
			return 1;
	}
}

static size_t
h_hello_frame(uint8_t *buf, size_t cap, uint16_t vmin, uint16_t vmax)
{
	struct wire_frame fr = { .type = WIRE_HELLO, .id = 1 };

	fr.b.hello.magic = WIRE_MAGIC;
	fr.b.hello.version_min = vmin;
	fr.b.hello.version_max = vmax;
	return h_encode(&fr, buf, cap);
}

/* A whole handshake: 0 once WELCOME came. */
static int
h_hello(int fd)
{
	uint8_t buf[512];
	size_t n = h_hello_frame(buf, sizeof(buf), WIRE_VERSION,
	    WIRE_VERSION);
	uint32_t len;
	int r;

	if (h_send(fd, buf, n) < 0)
		return -1;
	r = h_read_frame(fd, buf, sizeof(buf), &len, test_now_ms() +
	    TEST_WAIT_MS);
	if (r != 1 || wire_get16(buf + 4) != WIRE_WELCOME) {
		soak_err("hostile: no WELCOME for a valid HELLO (%s)",
		    r == 0 ? "closed" : r < 0 ? "timeout" :
		    wire_type_name(wire_get16(buf + 4)));
		return -1;
	}
	return 0;
}

/* A frame whose bit flips cannot make it a SEND, CREATE or any request
 * that changes a mailbox (the type is never flipped). */
static size_t
h_safe_frame(uint8_t *buf, size_t cap)
{
	struct wire_frame fr = { .id = 2 + rn(1000) };
	uint8_t ids[64];
	char none[32];

	snprintf(none, sizeof(none), "soak-none-%u", rn(100));
	switch (rn(9)) {
	case 0:
		fr.type = WIRE_MBOX_STAT;
		fr.b.name.name = wire_str(chance(50) ? box_name[rn(NBOX)] :
		    none);
		break;
	case 1:
		fr.type = WIRE_PEEK;
		fr.b.peek.max_count = 1 + rn(8);
		fr.b.peek.name = wire_str(box_name[rn(NBOX)]);
		break;
	case 2:
		fr.type = WIRE_COUNTERS;
		break;
	case 3:
		fr.type = WIRE_CLIENTS;
		break;
	case 4:
		fr.type = WIRE_MBOX_LIST;
		break;
	case 5:
		fr.type = WIRE_RECV;
		fr.b.recv.timeout_ms = rn(50);
		fr.b.recv.max_len = 1 << 20;
		fr.b.recv.source = wire_str(none);
		break;
	case 6:
		/* A stream it never acknowledges: all back at the close. */
		fr.type = WIRE_CREDIT;
		fr.b.credit.credit = 1 + rn(64);
		fr.b.credit.max_len = 1 << 20;
		fr.b.credit.source = wire_str(box_name[rn(NBOX)]);
		break;
	case 7:
		fr.type = WIRE_ACK;
		for (size_t i = 0; i < sizeof(ids); i++)
			ids[i] = (uint8_t)rnd();
		fr.b.ack.ids.p = ids;
		fr.b.ack.ids.len = 8 * (1 + rn(8));
		break;
	default:
		fr.type = WIRE_OPTION;
		fr.b.option.option = rn(3);
		fr.b.option.value = rn(3);
		break;
	}
	return h_encode(&fr, buf, cap);
}

static void
h_park(struct hpark *park, int *npark, int fd, enum hkind kind)
{
	if (*npark == HPARK) {
		close(fd);
		return;
	}
	park[*npark].fd = fd;
	park[*npark].kind = kind;
	park[*npark].deadline = test_now_ms() + HANDSHAKE_MS + TEST_WAIT_MS;
	(*npark)++;
}

/* The parked connections: those the broker closed go; one past its
 * deadline is an error. */
static void
h_check_parked(struct hpark *park, int *npark, int wait_ms)
{
	struct pollfd pf[HPARK];

	for (int i = 0; i < *npark; i++)
		pf[i] = (struct pollfd){ .fd = park[i].fd, .events = POLLIN };
	if (poll(pf, (nfds_t)*npark, wait_ms) < 0 && errno != EINTR)
		return;
	for (int i = 0; i < *npark; i++) {
		int gone = 0;

		if (pf[i].revents) {
			uint8_t sink[4096];
			ssize_t r = recv(park[i].fd, sink, sizeof(sink),
			    MSG_DONTWAIT);

			gone = r == 0 || (r < 0 && errno != EAGAIN &&
			    errno != EINTR);
			if (gone)
				STAT(hostile_closed);
		}
		if (!gone && test_now_ms() > park[i].deadline) {
			soak_err("hostile: connection (kind %d) still open "
			    "%d ms past the handshake timeout",
			    park[i].kind, TEST_WAIT_MS);
			gone = 1;
		}
		if (gone) {
			close(park[i].fd);
			park[i] = park[--*npark];
			pf[i] = pf[*npark];
			i--;
		}
	}
}

static void
hostile_main(void)
{
	struct hpark park[HPARK];
	uint8_t *buf = malloc(RBUF_SIZE + 64);
	int npark = 0;

	if (buf == NULL)
		_exit(4);
	while (!term_pending()) {
		enum hkind kind = (enum hkind)rn(H_KINDS);
		struct wire_frame fr = { .id = 7 };
		size_t n;
		uint32_t len;
		int fd, p[2];

		h_check_parked(park, &npark, 5 + (int)rn(15));
		if ((fd = connectSocketUnix(g_path)) < 0) {
			if (errno != EAGAIN && errno != ECONNREFUSED)
				soak_err("hostile: connect: %s",
				    strerror(errno));
			continue;
		}
		STAT(hostile_conns);
		switch (kind) {
		case H_GARBAGE:
			n = 1 + rn(2048);
			for (size_t i = 0; i < n; i++)
				buf[i] = (uint8_t)rnd();
			h_send(fd, buf, n);
			h_park(park, &npark, fd, kind);
			continue;
		case H_HALF_HELLO:
			n = h_hello_frame(buf, 512, WIRE_VERSION, WIRE_VERSION);
			h_send(fd, buf, 1 + rn((uint32_t)n - 1));
			h_park(park, &npark, fd, kind);
			continue;
		case H_SILENT:
			h_park(park, &npark, fd, kind);
			continue;
		case H_BAD_VERSION:
			n = h_hello_frame(buf, 512, 50 + rn(50), 100 + rn(50));
			h_send(fd, buf, n);
			h_park(park, &npark, fd, kind);
			continue;
		case H_CONNECT_CLOSE:
			break;
		case H_OVERSIZE:
			if (h_hello(fd) < 0)
				break;
			memset(buf, 0, WIRE_HDR_LEN);
			wire_put32(buf, 0x7ffffff0u + rn(15));
			wire_put16(buf + 4, WIRE_SEND);
			h_send(fd, buf, WIRE_HDR_LEN);
			h_park(park, &npark, fd, kind);
			continue;
		case H_TRUNCATED:
			if (h_hello(fd) < 0)
				break;
			fr.type = WIRE_SEND;
			fr.b.send.timeout_ms = 0;
			fr.b.send.dest = wire_str("soak-none-t");
			fr.b.send.payload.p = buf + 8192;
			fr.b.send.payload.len = 100 + rn(5000);
			n = h_encode(&fr, buf, 8192);
			h_send(fd, buf, 1 + rn((uint32_t)n - 1));
			h_soak_up(fd, (int)rn(100));
			break;
		case H_FLIPPED:
			if (h_hello(fd) < 0)
				break;
			n = h_safe_frame(buf, 4096);
			for (unsigned i = rn(5); i > 0; i--) {
				size_t at = rn((uint32_t)n - 2);

				at += at >= 4 ? 2 : 0;	/* not the type */
				if (at < n)
					buf[at] ^= (uint8_t)(1u << rn(8));
			}
			h_send(fd, buf, n);
			h_soak_up(fd, 50 + (int)rn(150));
			break;
		case H_NOACK_RECV:
			if (h_hello(fd) < 0)
				break;
			for (unsigned i = 1 + rn(3); i > 0; i--) {
				struct wire_frame d;
				struct soakmsg m;
				const char *why;
				int r;

				fr.type = WIRE_RECV;
				fr.id++;
				fr.b.recv.timeout_ms = 100;
				fr.b.recv.max_len = RBUF_SIZE;
				fr.b.recv.source = wire_str(box_name[rn(NBOX)]);
				n = h_encode(&fr, buf, 4096);
				if (h_send(fd, buf, n) < 0)
					break;
				r = h_read_frame(fd, buf, RBUF_SIZE + 64, &len,
				    test_now_ms() + TEST_WAIT_MS);
				if (r != 1) {
					soak_err("hostile: no answer to RECV");
					break;
				}
				if (wire_get16(buf + 4) != WIRE_DELIVER)
					continue;
				if (wire_decode(buf, len, &d, NULL) < 0) {
					soak_err("hostile: a DELIVER that does "
					    "not decode");
					break;
				}
				STAT(hostile_takes);
				why = d.b.deliver.flags & WIRE_DELIVER_FD ?
				    NULL : msg_verify(d.b.deliver.payload.p,
				    d.b.deliver.payload.len, &m);
				if (why != NULL)
					soak_err("hostile: delivered: %s", why);
			}
			break;	/* closed with none acknowledged */
		case H_SLOW_READER:
			if (h_hello(fd) < 0)
				break;
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			fr.type = WIRE_COUNTERS;
			for (unsigned i = 100 + rn(900); i > 0; i--) {
				fr.id++;
				n = h_encode(&fr, buf, 64);
				if (send(fd, buf, n, MSG_NOSIGNAL) !=
				    (ssize_t)n)
					break;
			}
			nap(50 + (int)rn(250));
			break;
		case H_FD_SPAM:
			if (h_hello(fd) < 0 || pipe(p) < 0)
				break;
			fr.type = WIRE_MBOX_STAT;
			fr.b.name.name = wire_str("soak-none-fd");
			for (unsigned i = 1 + rn(20); i > 0; i--) {
				fr.id++;
				n = h_encode(&fr, buf, 256);
				if (writeSomeSocketFd(fd, buf, (int)n, p[i & 1])
				    != (int)n)
					break;
			}
			h_soak_up(fd, 100);
			close(p[0]);
			close(p[1]);
			break;
		case H_FAKE_FD_SEND:
			if (h_hello(fd) < 0)
				break;
			fr.type = WIRE_SEND;
			fr.b.send.flags = WIRE_SEND_FD;
			fr.b.send.dest = wire_str(chance(50) ? "soak-none-fd" :
			    box_name[rn(NBOX)]);
			n = h_encode(&fr, buf, 256);
			h_send(fd, buf, n);
			h_soak_up(fd, 100);
			break;
		case H_HELLO_TWICE:
			if (h_hello(fd) < 0)
				break;
			n = h_hello_frame(buf, 512, WIRE_VERSION, WIRE_VERSION);
			h_send(fd, buf, n);
			h_soak_up(fd, 100);
			break;
		case H_MONITOR_NOREAD:
			if (h_hello(fd) < 0)
				break;
			fr.type = WIRE_MONITOR;
			n = h_encode(&fr, buf, 64);
			h_send(fd, buf, n);
			nap(100 + (int)rn(400));
			break;
		case H_KINDS:
			break;
		}
		close(fd);
	}
	while (npark > 0)
		close(park[--npark].fd);
	free(buf);
	_exit(0);
}

/* --- the supervisor ---------------------------------------------------- */

enum wkind { W_PROD, W_CONS, W_DIRECT, W_HOSTILE, W_CHURN };
static const char *const wkind_name[] = {
	"producer", "consumer", "direct receiver", "hostile", "churn"
};

#define NWORKERS (NPROD + NCONS + 2 + NCHURN)
_Static_assert(NWORKERS <= 16, "in_rx has a slot per worker");

struct worker {
	pid_t pid;
	enum wkind kind;
	int immortal;
	int sig;			/* sent it: 0, SIGTERM, SIGKILL */
};

/* Where ipcd's resident memory is: the brk heap, other anonymous
 * mappings (large allocations, thread stacks), the rest (its files). */
struct mem {
	long rss, heap, anon;
};

struct counters {
	uint64_t in, out, acks, redelivered, dropped_mbox, dropped_proc;
	uint64_t connections, processes, mailboxes, conns_total;
	uint64_t errors_protocol, failures_reported, events_dropped;
};

struct quiet {
	double at_s;
	struct mem mem;
	long rss_kb;
	int fds;
	struct counters k;
};

#define QMAX (EPOCHS_AFTER + 2)

struct soak {
	struct broker b;
	struct ipc_conn *ctl;
	pthread_t drainer;
	int drainer_live;
	pid_t me;
	unsigned seconds;
	uint64_t seed;
	struct worker w[NWORKERS];
	uint64_t kills, stops, spawned;
	uint64_t killed_in_rx;		/* SIGKILLed inside a receive */
	long rss_max_kb;
	int fds_max;
	long long t0;
	struct quiet q[QMAX];
	int nq;
	long rss0_kb;
	int fds0;
	/* the scan's totals at the last quiet point */
	uint64_t attempted, accepted, distinct, lost;
};

static struct soak *G;

/* Every child's end, for the report of a message gone missing. */
struct fate {
	pid_t pid;
	enum wkind kind;
	int sig, status;
};
static struct fate *fates;
static size_t nfates, fates_cap;

static void
fate_add(const struct worker *w, int status)
{
	if (nfates == fates_cap) {
		size_t cap = fates_cap ? 2 * fates_cap : 1024;
		struct fate *f = realloc(fates, cap * sizeof(*f));

		if (f == NULL)
			return;
		fates = f;
		fates_cap = cap;
	}
	fates[nfates++] = (struct fate){ w->pid, w->kind, w->sig, status };
}

static const char *
fate_of(pid_t pid, char *buf, size_t size)
{
	for (size_t i = nfates; i-- > 0;)
		if (fates[i].pid == pid) {
			snprintf(buf, size, "%s, %s, status 0x%x",
			    wkind_name[fates[i].kind], fates[i].sig == SIGKILL ?
			    "killed" : fates[i].sig == SIGTERM ? "stopped" :
			    "exited", fates[i].status);
			return buf;
		}
	return "unknown";
}

/* The broker's stdout and stderr: read all the time (a full pipe would
 * stall it), the tail kept for a failure report. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_tail[8192];
static size_t log_len;
static uint64_t log_errors;

static void
log_add(const char *p, size_t n)
{
	pthread_mutex_lock(&log_lock);
	for (size_t i = 0; i < n; i++) {
		if (log_len == sizeof(log_tail) - 1) {
			memmove(log_tail, log_tail + 4096,
			    log_len - 4096);
			log_len -= 4096;
		}
		log_tail[log_len++] = p[i];
	}
	log_tail[log_len] = '\0';
	if (strstr(p, "ipcd: error:") != NULL)
		log_errors++;
	pthread_mutex_unlock(&log_lock);
}

static void *
drainer_main(void *arg)
{
	struct soak *s = arg;
	struct pollfd pf[2] = {
		{ .fd = s->b.proc.out, .events = POLLIN },
		{ .fd = s->b.proc.err, .events = POLLIN },
	};
	int open = 2;

	while (open > 0) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			char buf[4096];
			ssize_t r;

			if (pf[i].fd < 0 || pf[i].revents == 0)
				continue;
			r = read(pf[i].fd, buf, sizeof(buf) - 1);
			if (r <= 0) {
				pf[i].fd = -1;
				open--;
				continue;
			}
			buf[r] = '\0';
			log_add(buf, (size_t)r);
		}
	}
	return NULL;
}

static long
proc_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void
proc_mem(pid_t pid, struct mem *m)
{
	char path[64], line[512];
	int in_heap = 0, in_anon = 0;
	long kb;
	FILE *f;

	memset(m, 0, sizeof(*m));
	m->rss = proc_rss_kb(pid);
	snprintf(path, sizeof(path), "/proc/%ld/smaps", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;
		char name[256] = "";

		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %255s", &lo, &hi,
		    name) >= 2 && strchr(line, '-') < strchr(line, ' ')) {
			in_heap = strcmp(name, "[heap]") == 0;
			in_anon = name[0] == '\0';
			continue;
		}
		if (sscanf(line, "Rss: %ld kB", &kb) == 1) {
			if (in_heap)
				m->heap += kb;
			else if (in_anon)
				m->anon += kb;
		}
	}
	fclose(f);
}

static int
proc_fds(pid_t pid)
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

static double
elapsed_s(const struct soak *s)
{
	return (double)(test_now_ms() - s->t0) / 1000.0;
}

/* Fail the run with the broker's last words and the children's errors. */
static void soak_fail(struct soak *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void
soak_fail(struct soak *s, const char *fmt, ...)
{
	char line[1536];
	uint32_t ne = atomic_load(&S->nerr);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	printf("soak: seed %" PRIu64 ", at %.1f s: %s\n", s->seed,
	    elapsed_s(s), line);
	for (uint32_t i = 0; i < ne && i < ERR_MAX; i++)
		printf("soak: error: %s\n", S->errlog[i]);
	if (ne > ERR_MAX)
		printf("soak: ... and %u more errors\n", ne - ERR_MAX);
	pthread_mutex_lock(&log_lock);
	printf("soak: ipcd's last output:\n%s\n", log_tail);
	pthread_mutex_unlock(&log_lock);
	fail_msg("%s", line);
	abort();	/* not reached */
}

static void
check_errors(struct soak *s)
{
	uint32_t ne = atomic_load(&S->nerr);

	if (ne > 0)
		soak_fail(s, "%u error%s in the clients", ne, ne > 1 ? "s" :
		    "");
}

static void
check_broker(struct soak *s)
{
	int status;

	if (waitpid(s->b.proc.pid, &status, WNOHANG) == s->b.proc.pid) {
		s->b.proc.pid = 0;
		soak_fail(s, "ipcd died: %s %d", WIFSIGNALED(status) ?
		    "signal" : "exit status", WIFSIGNALED(status) ?
		    WTERMSIG(status) : WEXITSTATUS(status));
	}
}

static void
spawn(struct soak *s, struct worker *w)
{
	sigset_t term, old;
	uint64_t seed = rnd();
	int memfd = w == &s->w[0];
	pid_t pid;

	switch (w->kind) {
	case W_DIRECT:
		w->immortal = 1;
		break;
	case W_HOSTILE:
		w->immortal = 0;
		break;
	case W_CHURN:
		w->immortal = chance(70);
		break;
	default:
		w->immortal = chance(50);
		break;
	}
	w->sig = 0;
	atomic_store(&S->in_rx[w - s->w], 0);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		soak_fail(s, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		/* SIGTERM stays blocked: term_pending() looks for it. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 ||
		    getppid() != s->me)
			_exit(5);
		signal(SIGPIPE, SIG_IGN);
		g_rng = seed;
		g_immortal = w->immortal;
		g_slot = (int)(w - s->w);
		g_pid = getpid();
		g_role = wkind_name[w->kind];
		switch (w->kind) {
		case W_PROD:
			producer_main(memfd);
			break;
		case W_CONS:
			consumer_main();
			break;
		case W_DIRECT:
			direct_main();
			break;
		case W_HOSTILE:
			hostile_main();
			break;
		case W_CHURN:
			churn_main();
			break;
		}
		_exit(6);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	w->pid = pid;
	s->spawned++;
}

/* w exited with status: what we expected of it? */
static void
judge(struct worker *w, int status)
{
	fate_add(w, status);
	if (w->sig == SIGKILL && WIFSIGNALED(status) &&
	    atomic_load(&S->in_rx[w - G->w]))
		G->killed_in_rx++;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return;
	if (w->sig == SIGKILL && WIFSIGNALED(status) &&
	    WTERMSIG(status) == SIGKILL)
		return;
	if (WIFSIGNALED(status))
		soak_err("%s %ld died of signal %d%s", wkind_name[w->kind],
		    (long)w->pid, WTERMSIG(status), w->sig == SIGTERM ?
		    " (did not stop in time after SIGTERM)" : "");
	else
		soak_err("%s %ld exited with status %d", wkind_name[w->kind],
		    (long)w->pid, WEXITSTATUS(status));
}

static void
reap_some(struct soak *s)
{
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &s->w[i];
		int status;

		if (w->pid > 0 && waitpid(w->pid, &status, WNOHANG) == w->pid) {
			judge(w, status);
			w->pid = 0;
		}
	}
}

static void
refill(struct soak *s)
{
	/* The direct receiver first: producers look for its pid. */
	if (s->w[NPROD + NCONS].pid == 0)
		spawn(s, &s->w[NPROD + NCONS]);
	for (int i = 0; i < NWORKERS; i++)
		if (s->w[i].pid == 0)
			spawn(s, &s->w[i]);
}

/* Now and then: SIGKILL one born mortal, or stop a steady one. */
static void
disrupt(struct soak *s)
{
	struct worker *pick[NWORKERS];
	int n = 0, kill9 = chance(70);

	if (rn(DISRUPT_MS / TICK_MS) != 0)
		return;
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &s->w[i];

		if (w->pid <= 0 || w->sig != 0)
			continue;
		if (kill9 ? !w->immortal :
		    (w->kind == W_PROD || w->kind == W_CONS))
			pick[n++] = w;
	}
	if (n == 0)
		return;
	n = (int)rn((uint32_t)n);
	pick[n]->sig = kill9 ? SIGKILL : SIGTERM;
	kill(pick[n]->pid, pick[n]->sig);
	if (kill9)
		s->kills++;
	else
		s->stops++;
}

static void
sample(struct soak *s)
{
	long rss = proc_rss_kb(s->b.proc.pid);
	int fds = proc_fds(s->b.proc.pid);

	if (rss > s->rss_max_kb)
		s->rss_max_kb = rss;
	if (fds > s->fds_max)
		s->fds_max = fds;
}

static void
run_epoch(struct soak *s, long long end)
{
	long long next_sample = 0;

	while (test_now_ms() < end) {
		check_broker(s);
		reap_some(s);
		check_errors(s);
		refill(s);
		disrupt(s);
		if (test_now_ms() >= next_sample) {
			sample(s);
			next_sample = test_now_ms() + 1000;
		}
		nap(TICK_MS);
	}
}

/* Stop the workers of the kinds in mask (SIGTERM), each reaped within
 * TEST_WAIT_MS (SIGKILLed after: an error). */
static void
stop_kinds(struct soak *s, unsigned mask)
{
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &s->w[i];

		if (w->pid > 0 && (mask & (1u << w->kind)) && w->sig == 0) {
			w->sig = SIGTERM;
			kill(w->pid, SIGTERM);
		}
	}
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &s->w[i];

		if (w->pid > 0 && (mask & (1u << w->kind))) {
			judge(w, test_child_reap(w->pid, TEST_WAIT_MS));
			w->pid = 0;
		}
	}
}

static int
counter_cb(const char *name, uint64_t value, void *arg)
{
	struct counters *k = arg;
	static const struct { const char *name; size_t off; } map[] = {
#define K(n, f) { n, offsetof(struct counters, f) }
		K("messages_in", in), K("messages_out", out),
		K("acks", acks), K("redelivered", redelivered),
		K("dropped_mailbox_deleted", dropped_mbox),
		K("dropped_process_gone", dropped_proc),
		K("connections", connections), K("processes", processes),
		K("mailboxes", mailboxes),
		K("connections_total", conns_total),
		K("errors_protocol", errors_protocol),
		K("failures_reported", failures_reported),
		K("events_dropped", events_dropped),
#undef K
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(name, map[i].name) == 0)
			*(uint64_t *)(void *)((char *)k + map[i].off) = value;
	return 0;
}

static void
counters(struct soak *s, struct counters *k)
{
	memset(k, 0, sizeof(*k));
	if (ipc_counters(s->ctl, counter_cb, k) < 0)
		soak_fail(s, "ipc_counters: %s", strerror(errno));
}

/* Wait for the broker to have seen every client go: this process's
 * one connection left. */
static void
wait_idle(struct soak *s, struct counters *k)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;

	for (;;) {
		check_broker(s);
		counters(s, k);
		if (k->connections == 1 && k->processes == 1)
			return;
		if (test_now_ms() > deadline)
			soak_fail(s, "the clients are gone, but ipcd still "
			    "has %" PRIu64 " connections and %" PRIu64
			    " processes", k->connections, k->processes);
		nap(10);
	}
}

struct boxes {
	char (*name)[IPC_NAME_MAX + 1];
	struct ipc_mbox_info *info;
	size_t n, cap;
};

static int
box_cb(const struct ipc_mbox_info *info, void *arg)
{
	struct boxes *bx = arg;

	if (bx->n == bx->cap) {
		size_t cap = bx->cap ? 2 * bx->cap : 64;
		struct ipc_mbox_info *ni = realloc(bx->info,
		    cap * sizeof(*ni));

		if (ni == NULL)
			return 1;
		bx->info = ni;
		bx->cap = cap;
	}
	bx->info[bx->n++] = *info;
	return 0;
}

static void
list_boxes(struct soak *s, struct boxes *bx)
{
	bx->n = 0;
	if (ipc_mbox_list(s->ctl, box_cb, bx) != 0)
		soak_fail(s, "ipc_mbox_list: %s", strerror(errno));
}

static int
box_code(const char *name)
{
	for (int i = 0; i < NBOX; i++)
		if (strcmp(name, box_name[i]) == 0)
			return i;
	if (strncmp(name, "soak-tmp-", 9) == 0)
		return BOX_TEMP;
	return -1;
}

/* Take what is left in every mailbox (recorded like any receipt) and
 * delete the temporary ones. */
static uint64_t
drain(struct soak *s, struct boxes *bx)
{
	struct rxctx *x = calloc(1, sizeof(*x));
	uint8_t *buf = malloc(RBUF_SIZE);
	struct ipc_conn *c = broker_open(&s->b);
	uint64_t n = 0;

	assert_non_null(x);
	assert_non_null(buf);
	for (size_t i = 0; i < bx->n; i++) {
		const char *name = bx->info[i].name;
		int code = box_code(name);
		struct ipc_msg_info info;
		ssize_t r;

		if (code < 0)
			soak_fail(s, "a mailbox nobody made: '%s'", name);
		while ((r = ipc_recv_timed(c, name, buf, RBUF_SIZE, 0,
		    &info)) >= 0) {
			rx_record(x, buf, r, &info, (uint32_t)code);
			n++;
		}
		if (errno != EAGAIN)
			soak_fail(s, "drain %s: %s", name, strerror(errno));
		if (code == BOX_TEMP && ipc_mbox_delete(c, name) < 0)
			soak_fail(s, "delete %s: %s", name, strerror(errno));
	}
	ipc_close(c);
	free(buf);
	free(x);
	return n;
}

/* The books at a quiet point (no client but this process's control
 * connection; every mailbox drained).  The fates of a message:
 *   accepted (known, or a killed sender's that arrived), then received
 *   and acknowledged: in messages_out once, however often redelivered;
 *   accepted and dropped unreceived: only if marked may-drop;
 *   received by a process that was then killed before acknowledging it,
 *   and dropped with its direct queue (c below): may-drop, first
 *   receipt by a mortal receiver;
 *   a killed sender's, accepted and dropped (extra below), or never
 *   accepted at all. */
static void
reconcile(struct soak *s, const struct counters *k)
{
	uint64_t top = atomic_load(&S->next_idx);
	uint64_t att = 0, acc = 0, unc_rx = 0, drop_min = 0, drop_unc = 0;
	uint64_t distinct = 0, lost = 0, mortal_md = 0, bad_ns = 0;
	uint64_t dropped = k->dropped_mbox + k->dropped_proc;
	int64_t d_in, d_drop, d_out;
	char lostlist[1024] = "", fbuf[96];

	if (top > idx_cap)
		top = idx_cap;
	for (uint64_t i = 0; i < top; i++) {
		unsigned st = atomic_load_explicit(&ST[i],
		    memory_order_relaxed);
		unsigned rx = atomic_load_explicit(&RX[i],
		    memory_order_relaxed);

		if (!(st & ST_ATT))
			continue;
		att++;
		if (rx & RX_COUNT) {
			distinct++;
			if ((st & ST_MAYDROP) && !(rx & RX_IMM))
				mortal_md++;
		}
		if (st & ST_NOTSENT) {
			if (rx & RX_COUNT)
				bad_ns++;
		} else if (st & ST_ACC) {
			acc++;
			if ((rx & RX_COUNT) == 0 && (st & ST_MAYDROP))
				drop_min++;
			else if ((rx & RX_COUNT) == 0 && lost++ < 5)
				snprintf(lostlist + strlen(lostlist),
				    sizeof(lostlist) - strlen(lostlist),
				    " %" PRIu64 " (box %u, state 0x%x, "
				    "producer %u pid %d: %s)", i, ST_BOX_OF(st),
				    st & 0xfu, OWN[i / CHUNK].producer,
				    OWN[i / CHUNK].pid, fate_of(OWN[i /
				    CHUNK].pid, fbuf, sizeof(fbuf)));
		} else if (rx & RX_COUNT) {
			unc_rx++;
		} else if (st & ST_MAYDROP) {
			drop_unc++;
		}
	}
	s->attempted = att;
	s->accepted = acc + unc_rx;
	s->distinct = distinct;
	s->lost = lost;
	/* An accepted message nobody recorded: only one a receiver killed
	 * inside its receive took for good, one per such kill at most. */
	if (lost > s->killed_in_rx)
		soak_fail(s, "%" PRIu64 " accepted messages never arrived "
		    "(%" PRIu64 " receivers were killed as they took one): "
		    "idx%s%s", lost, s->killed_in_rx, lostlist, lost > 5 ?
		    " ..." : "");
	if (bad_ns > 0)
		soak_fail(s, "%" PRIu64 " messages arrived whose senders were "
		    "told they were not sent", bad_ns);
	/* Every delivery not put back was acknowledged. */
	if (k->acks != k->out)
		soak_fail(s, "acks %" PRIu64 " != messages_out %" PRIu64,
		    k->acks, k->out);
	/*
	 * The broker's counters against the books.  Unknowns: u, messages
	 * of killed senders taken for good by killed receivers (like the
	 * lost ones, not recorded); c, messages recorded by a killed
	 * process and then dropped with its direct queue; d, messages of
	 * killed senders dropped with their mailbox or queue.  Then
	 *   messages_in  = acc + unc_rx + d + u
	 *   messages_out = distinct - c + lost + u
	 *   dropped      = drop_min + d + c
	 * so in - acc - unc_rx - (dropped - drop_min) = out - distinct -
	 * lost exactly, whatever they are; and each is bounded.
	 */
	d_in = (int64_t)(k->in - acc - unc_rx);
	d_drop = (int64_t)(dropped - drop_min);
	d_out = (int64_t)(k->out - distinct - lost);
	if (k->in < acc + unc_rx || dropped < drop_min ||
	    d_in - d_drop != d_out || d_out < -(int64_t)mortal_md ||
	    d_out > (int64_t)(s->killed_in_rx - lost) ||
	    d_in > (int64_t)(drop_unc + s->killed_in_rx - lost))
		soak_fail(s, "the counters do not reconcile: messages_in %"
		    PRIu64 ", messages_out %" PRIu64 ", dropped %" PRIu64
		    " + %" PRIu64 "; the books: %" PRIu64 " accepted, %" PRIu64
		    " of killed senders received (%" PRIu64 " more may have "
		    "been dropped), %" PRIu64 " received, %" PRIu64 " lost "
		    "with %" PRIu64 " receivers killed taking them, %" PRIu64
		    " accepted and dropped, %" PRIu64 " received by killed "
		    "processes from queues that may be dropped", k->in,
		    k->out, k->dropped_mbox, k->dropped_proc, acc, unc_rx,
		    drop_unc, distinct, lost, s->killed_in_rx, drop_min,
		    mortal_md);
	if (k->redelivered < atomic_load(&S->flagged))
		soak_fail(s, "redelivered %" PRIu64 " < %" PRIu64 " receipts "
		    "flagged redelivered", k->redelivered,
		    (uint64_t)atomic_load(&S->flagged));
}

/* ipcd with no client at all: the control connection is closed first
 * (its reply buffers, grown while the mailboxes were full, would hold
 * the heap up: the measurement would measure itself), then ipcd must
 * come back to the descriptors it had at the start, with no client,
 * before its memory is read.  The control connection is opened again
 * after. */
static void
measure_idle(struct soak *s, struct mem *m, int *fds)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;

	if (s->ctl != NULL)
		ipc_close(s->ctl);
	s->ctl = NULL;
	while ((*fds = proc_fds(s->b.proc.pid)) != s->fds0) {
		check_broker(s);
		if (test_now_ms() > deadline)
			soak_fail(s, "with no client, ipcd holds %d "
			    "descriptors; %d at the start", *fds, s->fds0);
		nap(5);
	}
	/* It closed the socket; let its loop finish the round (the
	 * connection is freed before it waits again). */
	nap(100);
	proc_mem(s->b.proc.pid, m);
	*fds = proc_fds(s->b.proc.pid);
	s->ctl = broker_open(&s->b);
}

static void
quiet_point(struct soak *s, int final)
{
	struct quiet *q = &s->q[s->nq];
	struct counters k;
	struct boxes bx = { 0 };
	uint64_t depth = 0, drained;
	double t_stop = elapsed_s(s);
	size_t nboxes;

	stop_kinds(s, 1u << W_PROD | 1u << W_CHURN | 1u << W_HOSTILE);
	stop_kinds(s, 1u << W_CONS);
	stop_kinds(s, 1u << W_DIRECT);
	check_broker(s);
	check_errors(s);
	wait_idle(s, &k);

	/* The broker's own books, before the drain. */
	list_boxes(s, &bx);
	for (size_t i = 0; i < bx.n; i++) {
		const struct ipc_mbox_info *m = &bx.info[i];

		depth += m->depth;
		if (m->msgs_in - m->msgs_out != m->depth)
			soak_fail(s, "%s: msgs_in %" PRIu64 " - msgs_out %"
			    PRIu64 " != depth %u", m->name, m->msgs_in,
			    m->msgs_out, m->depth);
	}
	if (k.in != k.out + depth + k.dropped_mbox + k.dropped_proc)
		soak_fail(s, "messages_in %" PRIu64 " != messages_out %"
		    PRIu64 " + queued %" PRIu64 " + dropped %" PRIu64 " + %"
		    PRIu64, k.in, k.out, depth, k.dropped_mbox,
		    k.dropped_proc);

	nboxes = bx.n;
	drained = drain(s, &bx);
	check_errors(s);
	wait_idle(s, &k);
	list_boxes(s, &bx);
	for (size_t i = 0; i < bx.n; i++)
		if (bx.info[i].depth != 0 || box_code(bx.info[i].name) ==
		    BOX_TEMP)
			soak_fail(s, "after the drain: %s with %u messages",
			    bx.info[i].name, bx.info[i].depth);
	if (bx.n != NBOX)
		soak_fail(s, "after the drain: %zu mailboxes", bx.n);
	free(bx.info);
	reconcile(s, &k);

	measure_idle(s, &q->mem, &q->fds);
	q->at_s = elapsed_s(s);
	q->rss_kb = q->mem.rss;
	q->k = k;
	printf("soak: quiet point %d at %.1f s (quiet in %.1f s): %zu "
	    "mailboxes, in %" PRIu64 " out %" PRIu64
	    " (queued %" PRIu64 ", drained %" PRIu64 "), redelivered %"
	    PRIu64 ", dropped %" PRIu64 "+%" PRIu64 ", %" PRIu64
	    " connections so far"
	    "; rss %ld kB (heap %ld, other anonymous %ld), fds %d\n", s->nq,
	    t_stop, q->at_s - t_stop, nboxes, k.in, k.out, depth, drained,
	    k.redelivered, k.dropped_mbox, k.dropped_proc, k.conns_total,
	    q->rss_kb, q->mem.heap, q->mem.anon, q->fds);
	if (q->fds != s->fds0)
		soak_fail(s, "ipcd has %d descriptors at quiet point %d, %d "
		    "at the start", q->fds, s->nq, s->fds0);
	s->nq++;
	(void)final;
}

static void
ctl_setup(struct soak *s)
{
	struct ipc_mbox_attr attr;

	s->ctl = broker_open(&s->b);
	ipc_mbox_attr_init(&attr);
	attr.capacity = BOX_CAPACITY;
	attr.max_bytes = BOX_MAX_BYTES;
	for (int i = 0; i < NBOX; i++)
		if (ipc_mbox_create(s->ctl, box_name[i], &attr, NULL) < 0)
			soak_fail(s, "create %s: %s", box_name[i],
			    strerror(errno));
}

/* ipcctl stats must say what the library says. */
static void
check_ipcctl(struct soak *s, const struct counters *k)
{
	char *argv[] = { strdup(test_build_path("tools/ipcctl")), "-s",
	    s->b.path, "stats", NULL };
	struct test_proc p;
	char line[256];
	uint64_t in = UINT64_MAX, out = UINT64_MAX, v;
	int status;

	assert_non_null(argv[0]);
	assert_int_equal(test_spawn(&p, argv), 0);
	free(argv[0]);
	while (test_read_line(p.out, line, sizeof(line), TEST_WAIT_MS) >= 0) {
		char name[64];

		if (sscanf(line, "%63s %" SCNu64, name, &v) != 2)
			continue;
		if (strcmp(name, "messages_in") == 0)
			in = v;
		else if (strcmp(name, "messages_out") == 0)
			out = v;
	}
	status = test_child_reap(p.pid, TEST_WAIT_MS);
	close(p.in);
	close(p.out);
	close(p.err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || in != k->in ||
	    out != k->out)
		soak_fail(s, "ipcctl stats (status 0x%x): messages_in %" PRIu64
		    ", messages_out %" PRIu64 "; the library: %" PRIu64 ", %"
		    PRIu64, status, in, out, k->in, k->out);
}

static int
soak_setup(void **state)
{
	struct soak *s = G;

	s->b.proc.in = s->b.proc.out = s->b.proc.err = -1;
	idx_cap = ((uint64_t)s->seconds * IDX_PER_S + CHUNK - 1) / CHUNK *
	    CHUNK;
	shm_len = sizeof(struct shared) + 2 * idx_cap +
	    idx_cap / CHUNK * sizeof(struct owner);
	S = mmap(NULL, shm_len, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (S == MAP_FAILED) {
		S = NULL;
		return -1;
	}
	ST = (_Atomic uint8_t *)(void *)((char *)S + sizeof(struct shared));
	RX = ST + idx_cap;
	OWN = (struct owner *)(void *)((char *)RX + idx_cap);
	*state = s;
	return 0;
}

static int
soak_teardown(void **state)
{
	struct soak *s = *state;

	for (int i = 0; i < NWORKERS; i++)
		if (s->w[i].pid > 0) {
			kill(s->w[i].pid, SIGKILL);
			test_child_reap(s->w[i].pid, TEST_WAIT_MS);
			s->w[i].pid = 0;
		}
	if (s->ctl != NULL)
		ipc_close(s->ctl);
	s->ctl = NULL;
	if (s->b.proc.pid > 0) {
		kill(s->b.proc.pid, SIGKILL);
		test_child_reap(s->b.proc.pid, TEST_WAIT_MS);
		s->b.proc.pid = 0;
	}
	if (s->drainer_live)
		pthread_join(s->drainer, NULL);
	s->drainer_live = 0;
	for (int *fd = &s->b.proc.in; fd <= &s->b.proc.err; fd++)
		if (*fd >= 0) {
			close(*fd);
			*fd = -1;
		}
	test_rmtree(s->b.dir);
	s->b.dir = NULL;
	if (S != NULL)
		munmap(S, shm_len);
	S = NULL;
	return 0;
}

static void
test_soak(void **state)
{
	static const char *const extra[] = {
		"--handshake-timeout", "1000", NULL
	};
	struct soak *s = *state;
	unsigned warm = s->seconds / 5 > 10 ? s->seconds / 5 : 10;
	long long t_end;
	const struct quiet *qw, *qe;
	double drift, secs;
	uint64_t msgs;
	int status;

	if (warm > s->seconds)
		warm = s->seconds;
	s->me = g_pid = getpid();
	g_rng = s->seed;
	for (int i = 0; i < NWORKERS; i++)
		s->w[i].kind = i < NPROD ? W_PROD : i < NPROD + NCONS ?
		    W_CONS : i == NPROD + NCONS ? W_DIRECT :
		    i == NPROD + NCONS + 1 ? W_HOSTILE : W_CHURN;

	/* glibc raises its mmap threshold each time a large mmapped block
	 * is freed, after which large messages live in the brk heap, whose
	 * resident extent then follows the history of message sizes, not
	 * what is allocated (quiet-point RSS went 11.0, 12.3, 12.3, 10.4,
	 * 10.6 MB in one run, all of it heap).  Pinned, large blocks are
	 * mapped and unmapped and RSS follows live memory: leaks show.
	 * Only ipcd gets it (unless the caller set its own). */
	if (getenv("GLIBC_TUNABLES") == NULL) {
		setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536:"
		    "glibc.malloc.trim_threshold=131072:"
		    "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0", 1);
		broker_start(&s->b, extra);
		unsetenv("GLIBC_TUNABLES");
	} else {
		broker_start(&s->b, extra);
	}
	snprintf(g_path, sizeof(g_path), "%s", s->b.path);
	snprintf(g_where, sizeof(g_where), "%s", s->b.where);
	assert_int_equal(pthread_create(&s->drainer, NULL, drainer_main, s),
	    0);
	s->drainer_live = 1;
	/* The baseline: ipcd with its steady mailboxes and no client. */
	s->fds0 = proc_fds(s->b.proc.pid);
	ctl_setup(s);
	{
		struct mem m0;
		int fds;

		measure_idle(s, &m0, &fds);
		s->rss0_kb = m0.rss;
	}
	printf("soak: seed %" PRIu64 ", %u s (warm-up %u s, %d quiet points "
	    "after it), ipcd pid %ld: rss %ld kB, fds %d%s\n", s->seed,
	    s->seconds, warm, EPOCHS_AFTER, (long)s->b.proc.pid, s->rss0_kb,
	    s->fds0, SOAK_ASAN ? " (AddressSanitizer build)" : "");

	s->t0 = test_now_ms();
	t_end = s->t0 + (long long)s->seconds * 1000;
	run_epoch(s, s->t0 + (long long)warm * 1000);
	quiet_point(s, 0);
	for (int e = 1; e <= EPOCHS_AFTER; e++) {
		long long until = s->t0 + (long long)warm * 1000 +
		    (t_end - s->t0 - (long long)warm * 1000) * e /
		    EPOCHS_AFTER;

		run_epoch(s, until);
		quiet_point(s, e == EPOCHS_AFTER);
	}
	check_ipcctl(s, &s->q[s->nq - 1].k);

	/* SIGTERM: ipcd must exit 0 (under ASan: and leak nothing). */
	ipc_close(s->ctl);
	s->ctl = NULL;
	kill(s->b.proc.pid, SIGTERM);
	status = test_child_reap(s->b.proc.pid, TEST_WAIT_MS);
	s->b.proc.pid = 0;
	pthread_join(s->drainer, NULL);
	s->drainer_live = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		soak_fail(s, "ipcd did not exit 0 on SIGTERM: status 0x%x",
		    status);

	qw = &s->q[0];
	qe = &s->q[s->nq - 1];
	drift = 100.0 * (double)(qe->rss_kb - qw->rss_kb) /
	    (double)qw->rss_kb;
	secs = (double)s->seconds;
	msgs = qe->k.in;
	printf("soak: rss at the quiet points (kB):");
	for (int i = 0; i < s->nq; i++)
		printf(" %ld", s->q[i].rss_kb);
	printf("; max while running %ld kB, fds max %d\n", s->rss_max_kb,
	    s->fds_max);
	printf("soak: summary: seed %" PRIu64 ", %u s%s: %" PRIu64
	    " messages accepted (%.0f/s), %" PRIu64 " distinct received, %"
	    PRIu64 " receipts (%" PRIu64 " flagged redelivered, %" PRIu64
	    " of them seen before), %" PRIu64 " taken unrecorded by receivers "
	    "killed in a receive; %" PRIu64 " direct (%" PRIu64 " to own "
	    "pid), %" PRIu64 " async bursts; churn %" PRIu64 " processes, %"
	    PRIu64 " connections, %" PRIu64 " temporary mailboxes; %" PRIu64
	    " kills (%" PRIu64 " in a receive), %" PRIu64 " stops; %" PRIu64
	    " hostile connections; ipcd rss %ld kB after warm-up, %ld kB at "
	    "the end, drift %+.2f%%%s; fds %d at start, %d at the end; ipcd "
	    "exit 0\n", s->seed, s->seconds, SOAK_ASAN ? " (ASan)" : "",
	    msgs, (double)msgs / secs, s->distinct,
	    (uint64_t)LOAD(receipts), (uint64_t)LOAD(flagged),
	    (uint64_t)LOAD(flagged_dups), s->lost,
	    (uint64_t)LOAD(direct) + (uint64_t)LOAD(self_direct),
	    (uint64_t)LOAD(self_direct), (uint64_t)LOAD(async_bursts),
	    (uint64_t)LOAD(churn_procs), (uint64_t)LOAD(churn_conns),
	    (uint64_t)LOAD(temp_boxes), s->kills, s->killed_in_rx, s->stops,
	    (uint64_t)LOAD(hostile_conns), qw->rss_kb, qe->rss_kb, drift,
	    SOAK_ASAN ? " (not enforced under ASan)" : "", s->fds0, qe->fds);
	if (LOAD(idx_exhausted) > 0)
		printf("soak: note: the message index space ran out %" PRIu64
		    " times\n", (uint64_t)LOAD(idx_exhausted));
	if (!SOAK_ASAN && drift >= RSS_DRIFT_MAX)
		soak_fail(s, "ipcd's RSS grew %.2f%% from the end of the "
		    "warm-up to the end (limit %.0f%%)", drift, RSS_DRIFT_MAX);
	if (msgs == 0 || LOAD(hostile_conns) == 0 || s->kills == 0 ||
	    LOAD(churn_cycles) == 0)
		soak_fail(s, "the run did not do its work: %" PRIu64
		    " messages, %" PRIu64 " kills", msgs, s->kills);
}

static void
usage(FILE *f)
{
	fprintf(f, "Usage: soak [--seconds N] [--seed N]\n"
	    "  SOAK_SECONDS in the environment: the length (default 60)\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_soak, soak_setup,
		    soak_teardown),
	};
	static struct soak s;
	const char *env = getenv("SOAK_SECONDS");
	int opt;

	s.seconds = env != NULL && *env != '\0' ? (unsigned)atoi(env) : 60;
	s.seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	while ((opt = getopt_long(argc, argv, "t:s:h", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			s.seconds = (unsigned)atoi(optarg);
			break;
		case 's':
			s.seed = strtoull(optarg, NULL, 0);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (s.seconds < 5 || s.seconds > 86400) {
		fprintf(stderr, "soak: %u s: give 5 to 86400\n", s.seconds);
		return 2;
	}
	G = &s;
	/* Quiet points take seconds each; the watchdog allows for them
	 * on a loaded machine. */
	test_init(s.seconds * 2 + 600);
	return cmocka_run_group_tests_name("soak", tests, NULL, NULL);
}
