/*
 * durable.c - durable mailboxes: their records in the journal (journal.c
 * writes, syncs and checks them), sends held until their record is on
 * disk, acknowledgements recorded, and the mailboxes rebuilt from the
 * journal when ipcd starts.
 */
#include "config.h"

#include "broker.h"
#include "journal.h"
#include "log.h"
#include "tls.h"
#include "wire.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- durable mailboxes ------------------------------------------------------
 *
 * Records, in the journal's bodies (journal.h frames, checksums and
 * orders them).  Little-endian; a record's type fixes its layout, and a
 * new layout gets a new type.  Mailboxes are named by uuid, which a
 * record keeps whatever else is lost or reclaimed around it.
 *
 *   MBOX        uuid[16] u32 uid, gid, mode, capacity  u64 max_bytes,
 *               created_ns  u16 n  name[n]: a mailbox made or changed;
 *               the latest one says what it is
 *   MBOX_DEL    uuid[16]: deleted, with its messages
 *   MSG         uuid[16] u64 id, enqueue_ns  u32 pid, uid, gid  u16 n
 *               origin[n] (the sender's broker, "host:port"; n = 0:
 *               this one)  payload (the rest)
 *   CONSUMED    uuid[16] u64 id: acknowledged by a receiver (or its
 *               send cancelled)
 *   CKPT_BEGIN  u32 count  u64 wall_ns;  CKPT_END  u32 count: around
 *               the MBOX records of every durable mailbox, which each
 *               segment begins with.  A whole checkpoint (count MBOX
 *               records between the two, in one segment) lists every
 *               mailbox that existed then: replay deletes the others
 *               (their MBOX_DEL was lost with a failed write)
 *   START       u64 wall_ns  u32 pid: a broker started on the journal
 *               (it makes the first segment of a run, so the old ones
 *               can be reclaimed)
 */
enum {
	REC_MBOX = 1, REC_MBOX_DEL = 2, REC_MSG = 3, REC_CONSUMED = 4,
	REC_CKPT_BEGIN = 5, REC_CKPT_END = 6, REC_START = 7,
};
#define REC_MBOX_LEN	50u		/* fixed part; the name next */
#define REC_MSG_LEN	46u		/* fixed part; origin, payload */
#define REC_CONSUMED_LEN 24u
#define REC_UUID_LEN	16u
/* Message ids count up from 1; a record with a larger one is damage. */
#define REC_ID_MAX	(UINT64_C(1) << 62)
/* Longest a shutdown waits for the last sync, so senders that wait get
 * their answer.  Picked: a disk that takes longer is failing. */
#define DURABLE_STOP_MS	5000
/* Longest a sync waits for senders that were answered by the last one
 * to send again.  The loop's timers count milliseconds, so this is 1 to
 * 2 ms.  Measured here (2-core VM, fdatasync 0.3-0.6 ms): 16 blocking
 * senders went from some 3 messages per sync to 14, and from 10-13k to
 * 12-16k messages/s; 1 ms (0 to 1) helped less. */
#define DURABLE_HOLD_MS	2

/* A request waiting for the journal to be synced past pos: a message
 * held aside until then (SENT, and it joins its queue), or an answer
 * (OK, or MBOX_INFO for a create). */
struct dpend {
	struct dpend *next;
	journal_pos pos;
	struct conn *c;			/* who is answered; NULL: gone */
	uint64_t req_id;
	struct mbox *m;			/* its mailbox; NULL: deleted */
	struct msg *msg;		/* a send: the message; else NULL */
	struct wire_mbox_info *info;	/* a create: MBOX_INFO as made, its
					 * name after it */
};

/* why (size bytes) says what failed; cut to fit. */
static void __attribute__((format(printf, 3, 4)))
durable_why(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

void
durable_link(struct broker *b, struct mbox *m)
{
	m->durable = 1;
	m->dprev = NULL;
	m->dnext = b->durables;
	if (b->durables != NULL)
		b->durables->dprev = m;
	b->durables = m;
	b->ndurables++;
}

static void
durable_unlink(struct broker *b, struct mbox *m)
{
	if (m->dprev != NULL)
		m->dprev->dnext = m->dnext;
	else
		b->durables = m->dnext;
	if (m->dnext != NULL)
		m->dnext->dprev = m->dprev;
	m->dnext = m->dprev = NULL;
	b->ndurables--;
}

/* Append a record; 0 with errno when the journal refused it. */
static journal_pos
durable_append(struct broker *b, uint8_t type, const void *hdr, size_t hlen,
    const void *payload, size_t plen, uint64_t *seg_out)
{
	journal_pos pos;

	if (b->journal == NULL) {
		errno = EROFS;
		return 0;
	}
	pos = journal_append(b->journal, type, hdr, hlen, payload, plen,
	    seg_out);
	if (pos != 0)
		b->journal_dirty = 1;
	return pos;
}

/* The errno to answer for a refused append, and why, in journal_why. */
static int
durable_refused(struct broker *b, int err, const char *what)
{
	durable_why(b->journal_why, sizeof(b->journal_why), "%s: %s", what,
	    err == EROFS ? "the journal is read-only after a disk error" :
	    strerror(err));
	return err == EFBIG ? EMSGSIZE : err == ENOMEM ? ENOMEM :
	    err == EROFS ? EROFS : EIO;
}

static journal_pos
durable_mbox_rec(struct broker *b, const struct mbox *m)
{
	uint8_t h[REC_MBOX_LEN + IPC_NAME_MAX];

	memcpy(h, m->uuid, REC_UUID_LEN);
	wire_put32(h + 16, m->uid);
	wire_put32(h + 20, m->gid);
	wire_put32(h + 24, m->mode);
	wire_put32(h + 28, m->capacity);
	wire_put64(h + 32, m->max_bytes);
	wire_put64(h + 40, m->created_ns);
	wire_put16(h + 48, (uint16_t)m->name_len);
	memcpy(h + REC_MBOX_LEN, m->name, m->name_len);
	return durable_append(b, REC_MBOX, h, REC_MBOX_LEN + m->name_len,
	    NULL, 0, NULL);
}

/* The checkpoint: every segment begins with every durable mailbox.  A
 * failed append makes the journal fail the append that rolled. */
static void
durable_checkpoint(void *arg)
{
	struct broker *b = arg;
	uint8_t h[12];

	b->journal_rolled = 1;
	wire_put32(h, b->ndurables);
	wire_put64(h + 4, broker_wall_ns());
	if (durable_append(b, REC_CKPT_BEGIN, h, 12, NULL, 0, NULL) == 0)
		return;
	for (struct mbox *m = b->durables; m != NULL; m = m->dnext)
		if (durable_mbox_rec(b, m) == 0)
			return;
	durable_append(b, REC_CKPT_END, h, 4, NULL, 0, NULL);
}

static void
dpend_push(struct broker *b, struct dpend *d)
{
	d->next = NULL;
	if (b->dpend_tail != NULL)
		b->dpend_tail->next = d;
	else
		b->dpend_head = d;
	b->dpend_tail = d;
	if (d->c != NULL)
		d->c->dwaits++;
	if (d->m != NULL)
		d->m->dwaits++;
}

/* Take d (after prev, NULL at the head) off the list. */
static void
dpend_unlink(struct broker *b, struct dpend *prev, struct dpend *d)
{
	if (prev != NULL)
		prev->next = d->next;
	else
		b->dpend_head = d->next;
	if (b->dpend_tail == d)
		b->dpend_tail = prev;
	d->next = NULL;
	if (d->c != NULL)
		d->c->dwaits--;
	if (d->m != NULL)
		d->m->dwaits--;
}

static void
dpend_free(struct dpend *d)
{
	if (d == NULL)
		return;
	msg_free(d->msg);
	free(d->info);
	free(d);
}

/* A held message (unlinked) did not make it to the disk, or its
 * mailbox went first: its sender is told as for a message never
 * accepted (ERROR), an async one as for one lost (FAILED, which
 * carries its id). */
static void
durable_fail_msg(struct broker *b, struct dpend *d, int err,
    const char *why)
{
	struct msg *msg = d->msg;

	d->m->pend_count--;
	d->m->pend_bytes -= msg->len;
	b->n.durable_failed++;
	if (msg->flags & MSG_ASYNC)
		conn_report_failure(b, msg, err, why);
	else if (d->c != NULL)
		conn_reply_error(d->c, d->req_id, err, 0, why);
}

/* d (unlinked) is on disk: the message joins its queue, the request is
 * answered. */
static void
durable_done(struct broker *b, struct dpend *d)
{
	struct wire_frame f = { .type = WIRE_OK, .id = d->req_id };
	struct msg *msg = d->msg;

	if (msg != NULL) {
		d->m->pend_count--;
		d->m->pend_bytes -= msg->len;
		d->msg = NULL;
		if (d->c != NULL)
			conn_reply_sent(d->c, d->req_id, msg);
		mbox_durable_accept(b, d->m, msg);
		/* Its room may be free again (a receiver took it at once):
		 * parked senders come in, or nothing else would let them. */
		if (d->m->senders.head != NULL)
			mbox_admit_senders(b, d->m);
	} else if (d->c != NULL) {
		if (d->info != NULL) {
			f.type = WIRE_MBOX_INFO;
			if (d->m != NULL)
				mbox_info(d->m, &f.b.info);
			else
				f.b.info = *d->info;	/* deleted since */
		}
		conn_push(d->c, &f);
	}
	dpend_free(d);
}

/* A message's record: its header (and origin) into h, which holds
 * REC_MSG_LEN + LINK_NAME_MAX bytes; returns the header's length. */
static size_t
durable_msg_hdr(uint8_t *h, const struct mbox *m, const struct msg *msg)
{
	size_t olen = msg->origin != NULL ? strlen(msg->origin) : 0;

	if (olen >= LINK_NAME_MAX)
		olen = 0;		/* cannot be: link names are shorter */
	memcpy(h, m->uuid, REC_UUID_LEN);
	wire_put64(h + 16, msg->id);
	wire_put64(h + 24, msg->enqueue_ns);
	wire_put32(h + 32, msg->pid);
	wire_put32(h + 36, msg->uid);
	wire_put32(h + 40, msg->gid);
	wire_put16(h + 44, (uint16_t)olen);
	if (olen > 0)
		memcpy(h + REC_MSG_LEN, msg->origin, olen);
	return REC_MSG_LEN + olen;
}

/* What a message's record takes in the journal (its framing too): the
 * live bytes that compaction weighs against the disk's. */
static uint64_t
durable_msg_bytes(const struct msg *msg)
{
	return 9 + REC_MSG_LEN + (msg->origin != NULL ?
	    strlen(msg->origin) : 0) + (uint64_t)msg->len;
}

/* msg's record is in segment seg: it keeps the segment. */
static void
durable_hold(struct broker *b, struct msg *msg, uint64_t seg)
{
	journal_retain(b->journal, seg);
	msg->jseg = seg;
	b->durable_msgs++;
	b->durable_bytes += durable_msg_bytes(msg);
}

/* --- compaction -------------------------------------------------------------
 *
 * Segments go oldest first, once nothing in them lives (journal.h says
 * why only from the oldest), so one old message nobody takes would keep
 * every later segment, and disk use would follow history.  So when a
 * segment begins and the journal holds more than twice what lives in it
 * plus two segments, the live messages of the oldest segments are
 * appended again (the same ids, in the same mailboxes), as many
 * segments as one segment's worth of copies empties; those segments
 * are let go once the copies are synced.  A round writes at most a
 * segment and runs only when at least half the disk is dead, so disk
 * use stays within about twice the live bytes plus three segments, and
 * the copying within what the senders wrote since.
 */

struct dcopy {
	uint64_t seg, bytes;
};

static int
dcopy_cmp(const void *a, const void *b)
{
	const struct dcopy *x = a, *y = b;

	return x->seg < y->seg ? -1 : x->seg > y->seg;
}

/* Call fn for every live durable message (queued, or held by a
 * receiver unacknowledged) with its mailbox; stops at fn's error. */
static int
durable_each_msg(struct broker *b, int (*fn)(struct broker *b,
    struct mbox *m, struct msg *msg, void *arg), void *arg)
{
	int r = 0;

	for (struct mbox *m = b->durables; m != NULL && r == 0; m = m->dnext)
		for (struct msg *msg = m->q.head; msg != NULL && r == 0;
		    msg = msg->next)
			r = fn(b, m, msg, arg);
	/* (A mailbox deleted since has no record to copy into: those
	 * messages keep their segment until acknowledged.) */
	for (struct conn *c = b->conns; c != NULL && r == 0; c = c->next)
		for (struct msg *msg = c->unacked; msg != NULL && r == 0;
		    msg = msg->next)
			if (msg->jseg != 0 && msg->home != NULL &&
			    msg->home->durable > 0)
				r = fn(b, msg->home, msg, arg);
	return r;
}

struct dcopy_list {
	struct dcopy *v;
	size_t n, cap;
};

static int
durable_note(struct broker *b, struct mbox *m, struct msg *msg, void *arg)
{
	struct dcopy_list *l = arg;

	(void)b;
	(void)m;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		struct dcopy *v = reallocarray(l->v, cap, sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct dcopy){ msg->jseg, durable_msg_bytes(msg) };
	return 0;
}

/* Copy msg of m forward if its record is in a segment before
 * compact_seg. */
static int
durable_copy(struct broker *b, struct mbox *m, struct msg *msg, void *arg)
{
	uint8_t h[REC_MSG_LEN + LINK_NAME_MAX];
	uint64_t to = 0;
	journal_pos pos;
	size_t hlen;

	(void)arg;
	if (msg->jseg == 0 || msg->jseg >= b->compact_seg)
		return 0;
	if (b->compact_n == b->compact_cap) {
		size_t cap = b->compact_cap ? 2 * b->compact_cap : 256;
		uint64_t *v = reallocarray(b->compact_held, cap, sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		b->compact_held = v;
		b->compact_cap = cap;
	}
	hlen = durable_msg_hdr(h, m, msg);
	if ((pos = durable_append(b, REC_MSG, h, hlen, msg->data, msg->len,
	    &to)) == 0)
		return -errno;
	/* The old segment's hold is kept aside and let go when the copy
	 * is on disk; the message keeps the new one. */
	b->compact_held[b->compact_n++] = msg->jseg;
	journal_retain(b->journal, to);
	msg->jseg = to;
	b->n.journal_copied++;
	b->compact_pos = pos;
	if (to > b->compact_to)
		b->compact_to = to;
	return 0;
}

static void
durable_compact(struct broker *b)
{
	struct dcopy_list l = { NULL, 0, 0 };
	struct journal_stats st;
	uint64_t bytes = 0, upto, dead;
	size_t i;
	int r;

	if (b->compact_pos != 0 || b->journal == NULL)
		return;		/* one round at a time */
	journal_get_stats(b->journal, &st);
	/* Every segment repeats the checkpoint: not dead, and no copying
	 * makes it smaller (else many mailboxes in small segments would
	 * keep compaction going for ever). */
	dead = st.disk_bytes - (st.ckpt_bytes < st.disk_bytes ?
	    st.ckpt_bytes : st.disk_bytes);
	if (b->compact_retry == 0 && (st.segments_live < 3 ||
	    dead <= 2 * b->durable_bytes + 2 * st.segment_bytes))
		return;
	/* Which segments: from the oldest on, while the copies fit in a
	 * segment (the oldest's always go), all but the current one. */
	if ((r = durable_each_msg(b, durable_note, &l)) < 0)
		goto out;
	qsort(l.v, l.n, sizeof(*l.v), dcopy_cmp);
	upto = st.oldest_seg + 1;
	for (i = 0; i < l.n && l.v[i].seg < st.newest_seg; i++) {
		if (l.v[i].seg >= upto && bytes + l.v[i].bytes >
		    st.segment_bytes)
			break;
		bytes += l.v[i].bytes;
		upto = l.v[i].seg + 1;
	}
	if (i == l.n || l.v[i].seg >= st.newest_seg)
		upto = st.newest_seg;	/* all of them fit */
	/* After a failed round its copies are done again: their messages
	 * point at the segment that lost them. */
	if (b->compact_retry != 0 && upto <= b->compact_retry)
		upto = b->compact_retry + 1;
	b->compact_seg = upto;
	b->compact_to = 0;
	r = durable_each_msg(b, durable_copy, NULL);
	if (r == 0 && b->compact_pos == 0) {
		/* Nothing to copy again (consumed since): what a failed
		 * round held can go, no message needs it. */
		for (size_t k = 0; k < b->compact_n; k++)
			journal_release(b->journal, b->compact_held[k]);
		b->compact_n = 0;
		b->compact_retry = 0;
	}
	if (b->compact_pos != 0) {
		b->n.journal_compactions++;
		log_debug("journal %s: %zu messages of segments before %llu "
		    "copied forward", b->state_dir, b->compact_n,
		    (unsigned long long)upto);
	}
out:
	if (r < 0)
		log_warn("journal %s: compaction stopped: %s", b->state_dir,
		    strerror(-r));
	free(l.v);
}

/* A sync covered up to synced (err: what is past it failed). */
static void
durable_compact_synced(struct broker *b, journal_pos synced, int err)
{
	if (b->compact_pos != 0 && synced >= b->compact_pos) {
		/* The copies are on disk: the old segments go. */
		for (size_t i = 0; i < b->compact_n; i++)
			journal_release(b->journal, b->compact_held[i]);
		b->compact_n = 0;
		b->compact_pos = 0;
		b->compact_retry = 0;
	} else if (b->compact_pos != 0 && err != 0) {
		/* Copies failed: the old segments keep the only records of
		 * those messages, so their holds stay, and the round is
		 * done again after the next good sync, from past the
		 * segment that lost the copies (reclaim would stop at the
		 * held segments until then). */
		log_warn("journal %s: compaction failed (%s); done again",
		    b->state_dir, strerror(err));
		b->compact_pos = 0;
		b->compact_retry = b->compact_to;
	}
	if (err == 0 && b->compact_pos == 0 &&
	    (b->journal_rolled || b->compact_retry != 0)) {
		b->journal_rolled = 0;
		durable_compact(b);
	}
}

/* The journal's eventfd: a sync finished.  What it covered is done;
 * after a failure, everything past it failed. */
static void
durable_on_sync(struct loop_watch *w, uint32_t events)
{
	struct broker *b = w->data;
	struct dpend *d, *failed;
	struct mbox *dead = NULL, *m;
	journal_pos synced = 0;
	char why[160];
	int err, n = 0;

	(void)events;
	err = -journal_synced(b->journal, &synced);
	b->journal_busy = 0;
	b->journal_expect = 0;
	b->journal_sends = 0;
	b->journal_hold_ms = loop_now_ms() + DURABLE_HOLD_MS;
	while ((d = b->dpend_head) != NULL && d->pos <= synced) {
		dpend_unlink(b, NULL, d);
		if (d->c != NULL && d->msg != NULL &&
		    !(d->msg->flags & MSG_ASYNC))
			b->journal_expect++;
		durable_done(b, d);
	}
	durable_compact_synced(b, synced, err);
	if (err == 0)
		return;
	/* Taken off first: answering them can append (a sender that
	 * finds room), and that goes to a new segment and the list. */
	failed = b->dpend_head;
	b->dpend_head = b->dpend_tail = NULL;
	snprintf(why, sizeof(why), "the journal could not write it: %s",
	    strerror(err));
	while ((d = failed) != NULL) {
		failed = d->next;
		n++;
		if (d->c != NULL)
			d->c->dwaits--;
		if (d->m != NULL)
			d->m->dwaits--;
		if (d->msg != NULL) {
			durable_fail_msg(b, d, err, why);
			dpend_free(d);
			continue;
		}
		/* A mailbox whose creation did not reach the disk is not
		 * made after all; deleted once all here are answered (a
		 * later one may name it). */
		if (d->info != NULL && d->m != NULL && !d->m->to_feed) {
			d->m->to_feed = 1;
			d->m->feed_next = dead;
			dead = d->m;
		}
		if (d->c != NULL)
			conn_reply_error(d->c, d->req_id, err, 0, why);
		dpend_free(d);
	}
	/* Those first: the next append begins a segment with a checkpoint
	 * of the durable mailboxes, which must not name them. */
	while ((m = dead) != NULL) {
		dead = m->feed_next;
		m->feed_next = NULL;
		m->to_feed = 0;
		mbox_delete(b, m);
	}
	/* The room the failed messages took is free: waiting senders may
	 * come in (rare, so every durable mailbox is looked at). */
	for (m = b->durables; m != NULL; m = m->dnext)
		if (m->senders.head != NULL)
			mbox_admit_senders(b, m);
	log_error("journal %s: %s; %d requests failed (ipcctl stats: "
	    "journal_write_errors)", b->state_dir, strerror(err), n);
}

/* Group commit: one sync at a time, and what is appended while it runs
 * goes in the next.  The next one starts when the loop is about to
 * wait, but first waits (at most DURABLE_HOLD_MS) for the blocking
 * senders the last sync answered: they send again after a wake-up or
 * two, and a sync started without them would split them into two
 * groups taking turns, each waiting for two syncs. */
void
durable_kick(struct broker *b)
{
	if (b->journal_busy)
		return;
	if (b->journal_sends < b->journal_expect &&
	    loop_now_ms() < b->journal_hold_ms &&
	    loop_timer_set(b->loop, &b->journal_timer,
	    b->journal_hold_ms) == 0)
		return;		/* the timer brings the loop round */
	loop_timer_del(b->loop, &b->journal_timer);
	b->journal_dirty = 0;
	if (journal_sync(b->journal) == 0)
		b->journal_busy = 1;
}

static void
durable_hold_over(struct loop_timer *t)
{
	(void)t;		/* the before-wait hook syncs */
}

/* At shutdown: the last sync, waited for, so that senders waiting for
 * it are answered before they are told goodbye. */
void
durable_flush(struct broker *b)
{
	int64_t deadline = loop_now_ms() + DURABLE_STOP_MS;

	while (b->journal != NULL && b->dpend_head != NULL) {
		struct pollfd p = { .fd = journal_fd(b->journal),
		    .events = POLLIN };
		int64_t left = deadline - loop_now_ms();

		if (left <= 0)
			break;
		if (!b->journal_busy) {
			if (journal_sync(b->journal) < 0)
				break;
			b->journal_busy = 1;
			b->journal_dirty = 0;
		}
		if (poll(&p, 1, (int)left) <= 0)
			break;
		durable_on_sync(&b->journal_watch, EPOLLIN);
	}
}

/* Whatever still waits (the journal is closed): freed unanswered. */
void
durable_free_all(struct broker *b)
{
	struct dpend *d;

	while ((d = b->dpend_head) != NULL) {
		dpend_unlink(b, NULL, d);
		dpend_free(d);
	}
	free(b->compact_held);
	b->compact_held = NULL;
	b->compact_n = b->compact_cap = 0;
	b->compact_pos = 0;
}

int
durable_created(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id)
{
	struct dpend *d = calloc(1, sizeof(*d));
	journal_pos pos;
	int err;

	if (d != NULL && (d->info = malloc(sizeof(*d->info) +
	    m->name_len)) != NULL) {
		mbox_info(m, d->info);
		memcpy(d->info + 1, m->name, m->name_len);
		d->info->name.p = (const uint8_t *)(d->info + 1);
	}
	if (d == NULL || d->info == NULL) {
		dpend_free(d);
		mbox_delete(b, m);
		durable_why(b->journal_why, sizeof(b->journal_why),
		    "out of memory");
		return -ENOMEM;
	}
	if ((pos = durable_mbox_rec(b, m)) == 0) {
		err = durable_refused(b, errno, "cannot record the mailbox");
		dpend_free(d);
		mbox_delete(b, m);
		return -err;
	}
	d->pos = pos;
	d->c = c;
	d->req_id = req_id;
	d->m = m;
	dpend_push(b, d);
	return 0;
}

int
durable_changed(struct broker *b, struct mbox *m, int gone, struct conn *c,
    uint64_t req_id)
{
	struct dpend *d = calloc(1, sizeof(*d));
	journal_pos pos;

	if (d == NULL) {
		durable_why(b->journal_why, sizeof(b->journal_why),
		    "out of memory");
		return -ENOMEM;
	}
	pos = gone ? durable_append(b, REC_MBOX_DEL, m->uuid, REC_UUID_LEN,
	    NULL, 0, NULL) : durable_mbox_rec(b, m);
	if (pos == 0) {
		int err = durable_refused(b, errno, "cannot record the change");

		free(d);
		return -err;
	}
	d->pos = pos;
	d->c = c;
	d->req_id = req_id;
	d->m = gone ? NULL : m;
	dpend_push(b, d);
	return 0;
}

void
durable_mbox_gone(struct broker *b, struct mbox *m)
{
	struct dpend *d, *prev = NULL, *next;

	for (d = b->dpend_head; d != NULL && m->dwaits > 0; d = next) {
		next = d->next;
		if (d->m != m) {
			prev = d;
			continue;
		}
		if (d->msg == NULL) {
			/* An answer still to come (OK): it stays. */
			m->dwaits--;
			d->m = NULL;
			prev = d;
			continue;
		}
		dpend_unlink(b, prev, d);
		d->m = m;
		durable_fail_msg(b, d, ENOENT, "mailbox deleted");
		dpend_free(d);
	}
	durable_unlink(b, m);
}

void
durable_send(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg)
{
	uint8_t h[REC_MSG_LEN + LINK_NAME_MAX];
	struct dpend *d;
	journal_pos pos;
	uint64_t seg = 0;
	size_t hlen;
	int err;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		conn_reply_error(c, req_id, ENOMEM, 0, "out of memory");
		msg_free(msg);
		return;
	}
	/* A new id, so that ids grow in the journal's order: replay puts
	 * messages in id order, which keeps the order of their mailbox
	 * when compaction has copied some forward.  (The sender learns
	 * the id only from SENT, which comes after.) */
	msg->id = ++b->next_msg_id;
	hlen = durable_msg_hdr(h, m, msg);
	pos = durable_append(b, REC_MSG, h, hlen, msg->data, msg->len, &seg);
	if (pos == 0) {
		/* Not accepted: said at once, as any refusal. */
		err = durable_refused(b, errno, "cannot write the message");
		conn_reply_error(c, req_id, err, 0, b->journal_why);
		msg_free(msg);
		free(d);
		return;
	}
	durable_hold(b, msg, seg);
	b->journal_sends++;
	m->pend_count++;
	m->pend_bytes += msg->len;
	d->pos = pos;
	d->c = c;
	d->req_id = req_id;
	d->m = m;
	d->msg = msg;
	dpend_push(b, d);
}

void
durable_consumed(struct broker *b, struct mbox *m, const struct msg *msg)
{
	uint8_t h[REC_CONSUMED_LEN];

	if (b->journal == NULL)
		return;
	memcpy(h, m->uuid, REC_UUID_LEN);
	wire_put64(h + 16, msg->id);
	/* It rides with the next sync; no one waits for it.  Lost (a
	 * failed write, a power cut before the sync), the message comes
	 * back after a restart, marked redelivered. */
	if (durable_append(b, REC_CONSUMED, h, sizeof(h), NULL, 0,
	    NULL) == 0)
		log_warn("journal %s: message %llu of %s consumed, not "
		    "recorded (%s): it may be delivered again after a "
		    "restart", b->state_dir, (unsigned long long)msg->id,
		    m->name, strerror(errno));
}

void
durable_release(struct msg *msg)
{
	struct broker *b = msg->b;

	b->durable_msgs--;
	b->durable_bytes -= durable_msg_bytes(msg);
	if (b->journal != NULL)
		journal_release(b->journal, msg->jseg);
	msg->jseg = 0;
}

void
durable_conn_gone(struct broker *b, struct conn *c)
{
	struct dpend *d, *prev = NULL, *next;

	for (d = b->dpend_head; d != NULL && c->dwaits > 0; d = next) {
		next = d->next;
		if (d->c != c) {
			prev = d;
			continue;
		}
		if (c->kind != CONN_LINK_IN || d->msg == NULL) {
			/* The message still joins its queue once on disk
			 * (a local sender that goes does not take back what
			 * it handed over); the answer is not sent. */
			c->dwaits--;
			d->c = NULL;
			prev = d;
			continue;
		}
		/* The other broker sends it again on its next connection,
		 * as a new message (its answer was not given): this one
		 * is cancelled, as a waiting send would be. */
		{
			struct mbox *m = d->m;

			dpend_unlink(b, prev, d);
			m->pend_count--;
			m->pend_bytes -= d->msg->len;
			durable_consumed(b, m, d->msg);
			dpend_free(d);
			mbox_admit_senders(b, m);
		}
	}
}

/* --- opening and replay ------------------------------------------------- */

/* Replay's state: the messages in log order (an entry is NULL once
 * consumed), a table of them by id, a table of mailboxes by uuid. */
struct rp_msg {
	struct msg *msg;		/* its mailbox in msg->home; NULL
					 * until that is known */
	uint64_t seg;
	uint8_t uuid[REC_UUID_LEN];	/* its mailbox's */
};

struct rp_box {
	struct mbox *m;			/* NULL free; &rp_gone deleted */
	uint64_t mark;			/* last checkpoint naming it */
};

struct replay {
	struct broker *b;
	struct rp_msg *msgs;
	size_t nmsgs, capmsgs;
	uint32_t *ids;			/* index + 1 into msgs; 0: free */
	size_t nids, ids_bits;
	struct rp_box *boxes;
	size_t nboxes, boxes_used, boxes_cap;	/* used: tombstones too */
	struct mbox *dead;		/* deleted in replay, freed at its
					 * end (their messages point at
					 * them) */
	uint8_t *dead_uuids;		/* theirs, sorted (rp_dead_find) */
	size_t ndead;
	uint64_t max_id;
	uint64_t malformed, orphans;
	uint64_t too_big, biggest;	/* messages over --max-msg-size */
	int unknown_said;
	/* The checkpoint being read. */
	int ck_on;
	uint64_t ck_seg, ck_gen;
	uint32_t ck_count, ck_seen;
};

static struct mbox rp_gone;

static size_t
rp_uuid_hash(const uint8_t *uuid, size_t mask)
{
	uint64_t h;

	memcpy(&h, uuid, sizeof(h));	/* random bytes; any order works */
	return (size_t)((h ^ h >> 29) * UINT64_C(0x9e3779b97f4a7c15) >>
	    32) & mask;
}

static struct rp_box *
rp_box_find(struct replay *rp, const uint8_t *uuid)
{
	size_t mask = rp->boxes_cap - 1, i;

	if (rp->boxes_cap == 0)
		return NULL;
	for (i = rp_uuid_hash(uuid, mask); rp->boxes[i].m != NULL;
	    i = (i + 1) & mask)
		if (rp->boxes[i].m != &rp_gone &&
		    memcmp(rp->boxes[i].m->uuid, uuid, REC_UUID_LEN) == 0)
			return &rp->boxes[i];
	return NULL;
}

static int
rp_box_add(struct replay *rp, struct mbox *m)
{
	size_t mask, i;

	if (2 * (rp->boxes_used + 1) > rp->boxes_cap) {
		size_t cap = rp->boxes_cap ? rp->boxes_cap : 64;
		struct rp_box *old = rp->boxes, *t;

		/* Grown, or rebuilt without its tombstones. */
		while (2 * (rp->nboxes + 1) > cap / 2)
			cap *= 2;
		if ((t = calloc(cap, sizeof(*t))) == NULL)
			return -ENOMEM;
		for (size_t k = 0; k < rp->boxes_cap; k++) {
			if (old[k].m == NULL || old[k].m == &rp_gone)
				continue;
			for (i = rp_uuid_hash(old[k].m->uuid, cap - 1);
			    t[i].m != NULL; i = (i + 1) & (cap - 1))
				;
			t[i] = old[k];
		}
		free(old);
		rp->boxes = t;
		rp->boxes_cap = cap;
		rp->boxes_used = rp->nboxes;
	}
	mask = rp->boxes_cap - 1;
	for (i = rp_uuid_hash(m->uuid, mask); rp->boxes[i].m != NULL;
	    i = (i + 1) & mask)
		;
	rp->boxes[i] = (struct rp_box){ .m = m };
	rp->nboxes++;
	rp->boxes_used++;
	return 0;
}

/* Mailbox m is deleted (replay): out of the tables; its messages drop
 * at the end. */
static void
rp_box_drop(struct replay *rp, struct rp_box *x)
{
	struct mbox *m = x->m;

	x->m = &rp_gone;
	rp->nboxes--;
	mbox_discard(rp->b, m);
	m->hnext = rp->dead;
	rp->dead = m;
}

static size_t
rp_id_home(const struct replay *rp, uint64_t id)
{
	return (size_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >>
	    (64 - rp->ids_bits));
}

/* Where id is in the table, or the free slot it would take. */
static size_t
rp_id_slot(const struct replay *rp, uint64_t id)
{
	size_t mask = ((size_t)1 << rp->ids_bits) - 1, i;

	for (i = rp_id_home(rp, id); rp->ids[i] != 0; i = (i + 1) & mask)
		if (rp->msgs[rp->ids[i] - 1].msg->id == id)
			break;
	return i;
}

static int
rp_id_add(struct replay *rp, uint64_t id, uint32_t idx1)
{
	size_t i;

	if (rp->ids == NULL || 2 * (rp->nids + 1) > (size_t)1 <<
	    rp->ids_bits) {
		size_t bits = rp->ids ? rp->ids_bits + 1 : 10;
		uint32_t *old = rp->ids, *t;
		size_t oldn = rp->ids ? (size_t)1 << rp->ids_bits : 0;

		if (bits >= sizeof(size_t) * 8 - 4 ||
		    (t = calloc((size_t)1 << bits, sizeof(*t))) == NULL)
			return -ENOMEM;
		rp->ids = t;
		rp->ids_bits = bits;
		for (size_t k = 0; k < oldn; k++) {
			uint64_t key;

			if (old[k] == 0)
				continue;
			key = rp->msgs[old[k] - 1].msg->id;
			t[rp_id_slot(rp, key)] = old[k];
		}
		free(old);
	}
	i = rp_id_slot(rp, id);
	if (rp->ids[i] == 0)
		rp->nids++;
	rp->ids[i] = idx1;	/* a repeated id: the later message */
	return 0;
}

/* Take slot i out (linear probing: the entries after it that would not
 * be found any more move back). */
static void
rp_id_del(struct replay *rp, size_t i)
{
	size_t mask = ((size_t)1 << rp->ids_bits) - 1, j = i;

	rp->ids[i] = 0;
	rp->nids--;
	for (;;) {
		size_t k;

		j = (j + 1) & mask;
		if (rp->ids[j] == 0)
			return;
		k = rp_id_home(rp, rp->msgs[rp->ids[j] - 1].msg->id);
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		rp->ids[i] = rp->ids[j];
		rp->ids[j] = 0;
		i = j;
	}
}

static void
rp_malformed(struct replay *rp, const struct journal_rec *r,
    const char *what)
{
	rp->malformed++;
	log_warn("journal %s: segment %llx, record before position %llu: "
	    "%s; skipped", rp->b->state_dir, (unsigned long long)r->seg,
	    (unsigned long long)r->pos, what);
}

static void
rp_on_damage(void *arg, uint64_t seg, uint64_t offset, const char *what)
{
	struct replay *rp = arg;

	log_warn("journal %s: segment %llx, offset %llu: %s; skipped (a "
	    "damaged record: counted in journal_damaged)", rp->b->state_dir,
	    (unsigned long long)seg, (unsigned long long)offset, what);
}

static int
rp_mbox(struct replay *rp, const struct journal_rec *r)
{
	struct broker *b = rp->b;
	char name[IPC_NAME_MAX + 1];
	const uint8_t *p = r->body;
	uint32_t uid, gid, mode, cap;
	uint64_t max_bytes, created;
	struct rp_box *x;
	struct mbox *m;
	size_t n;
	int err;

	if (r->len < REC_MBOX_LEN || (n = wire_get16(p + 48)) == 0 ||
	    n > IPC_NAME_MAX || n != r->len - REC_MBOX_LEN) {
		rp_malformed(rp, r, "mailbox record of a bad length");
		return 0;
	}
	memcpy(name, p + REC_MBOX_LEN, n);
	name[n] = '\0';
	uid = wire_get32(p + 16);
	gid = wire_get32(p + 20);
	mode = wire_get32(p + 24);
	cap = wire_get32(p + 28);
	max_bytes = wire_get64(p + 32);
	created = wire_get64(p + 40);
	if (mode > 0777 || cap == 0 || max_bytes == 0 || strlen(name) != n) {
		rp_malformed(rp, r, "mailbox record with bad attributes");
		return 0;
	}
	if ((x = rp_box_find(rp, p)) != NULL) {
		m = x->m;
		if (strcmp(m->name, name) != 0) {
			rp_malformed(rp, r, "mailbox record renaming one");
			return 0;
		}
		if (m->uid != uid) {
			struct quota *from = quota_get(b, m->uid);
			struct quota *to = quota_get(b, uid);

			if (to == NULL)
				return -ENOMEM;
			if (from != NULL && from->mailboxes > 0)
				from->mailboxes--;
			to->mailboxes++;
		}
		m->uid = uid;
		m->gid = gid;
		m->mode = mode;
		m->capacity = cap;
		m->max_bytes = max_bytes;
		m->created_ns = created;
	} else {
		if ((m = mbox_find(b, name, n)) != NULL) {
			struct rp_box *old = m->durable > 0 ?
			    rp_box_find(rp, m->uuid) : NULL;

			if (old == NULL) {
				/* Only when the journal is opened late, after
				 * a mailbox of that name was made. */
				log_warn("journal %s: mailbox %s exists "
				    "already, not durable: the journal's is "
				    "left out (its messages counted in "
				    "journal_orphans)", b->state_dir, name);
				return 0;
			}
			/* The same name, a new uuid: the old one was
			 * deleted, and that record lost. */
			log_warn("journal %s: mailbox %s made anew: the "
			    "older one goes, with its messages",
			    b->state_dir, name);
			rp_box_drop(rp, old);
		}
		if ((m = mbox_restore(b, name, p, uid, gid, mode, cap,
		    max_bytes, created, &err)) == NULL) {
			if (err == -ENOMEM)
				return err;
			rp_malformed(rp, r, "mailbox record with a bad name");
			return 0;
		}
		if (rp_box_add(rp, m) < 0)
			return -ENOMEM;
		x = rp_box_find(rp, p);
	}
	if (rp->ck_on && r->seg == rp->ck_seg) {
		if (x->mark != rp->ck_gen)
			rp->ck_seen++;
		x->mark = rp->ck_gen;
	}
	return 0;
}

static int
rp_msg(struct replay *rp, const struct journal_rec *r)
{
	struct broker *b = rp->b;
	char origin[LINK_NAME_MAX];
	const uint8_t *p = r->body;
	struct ucred cred;
	struct rp_box *x;
	struct msg *msg;
	size_t olen, plen, i;
	uint64_t id;

	if (r->len < REC_MSG_LEN || (olen = wire_get16(p + 44)) >
	    r->len - REC_MSG_LEN || olen >= sizeof(origin)) {
		rp_malformed(rp, r, "message record of a bad length");
		return 0;
	}
	memcpy(origin, p + REC_MSG_LEN, olen);
	origin[olen] = '\0';
	if (strlen(origin) != olen) {
		rp_malformed(rp, r, "message record with a bad origin");
		return 0;
	}
	plen = r->len - REC_MSG_LEN - olen;
	id = wire_get64(p + 16);
	if (id == 0 || id > REC_ID_MAX) {
		/* Not one the broker gives: past it, its next ids would
		 * wrap, and restored order (by id) with them. */
		rp_malformed(rp, r, "message record with an impossible id");
		return 0;
	}
	if (id > rp->max_id)
		rp->max_id = id;
	/* Its mailbox may come later: the record before it damaged, and
	 * the older one reclaimed, the next checkpoint names it.  Held,
	 * and placed at the end (rp_finish). */
	x = rp_box_find(rp, p);
	if (rp->ids != NULL && rp->ids[i = rp_id_slot(rp, id)] != 0) {
		struct rp_msg *e = &rp->msgs[rp->ids[i] - 1];

		if (memcmp(e->uuid, p, REC_UUID_LEN) != 0) {
			rp_malformed(rp, r, "message record with another "
			    "mailbox's id");
			return 0;
		}
		/* A copy compaction made (durable_compact): the same
		 * message, now kept by the newer segment. */
		e->seg = r->seg;
		return 0;
	}
	if (rp->nmsgs == rp->capmsgs) {
		size_t cap = rp->capmsgs ? 2 * rp->capmsgs : 1024;
		struct rp_msg *v;

		if (cap >= UINT32_MAX || (v = reallocarray(rp->msgs, cap,
		    sizeof(*v))) == NULL)
			return -ENOMEM;
		rp->msgs = v;
		rp->capmsgs = cap;
	}
	cred = (struct ucred){ .pid = (pid_t)wire_get32(p + 32),
	    .uid = wire_get32(p + 36), .gid = wire_get32(p + 40) };
	if ((msg = msg_recover(b, &cred, plen, olen ? origin : NULL)) == NULL)
		return -ENOMEM;
	if (plen > 0)
		memcpy(msg->data, p + REC_MSG_LEN + olen, plen);
	msg->id = id;
	msg->enqueue_ns = wire_get64(p + 24);
	msg->home = x != NULL ? x->m : NULL;
	rp->msgs[rp->nmsgs] = (struct rp_msg){ .msg = msg, .seg = r->seg };
	memcpy(rp->msgs[rp->nmsgs].uuid, p, REC_UUID_LEN);
	rp->nmsgs++;
	if (rp_id_add(rp, id, (uint32_t)rp->nmsgs) < 0)
		return -ENOMEM;
	return 0;
}

static void
rp_consumed(struct replay *rp, const struct journal_rec *r)
{
	uint64_t id;
	size_t i;
	uint32_t k;

	if (r->len != REC_CONSUMED_LEN) {
		rp_malformed(rp, r, "consumed record of a bad length");
		return;
	}
	id = wire_get64(r->body + 16);
	if (id == 0 || id > REC_ID_MAX) {
		rp_malformed(rp, r, "consumed record with an impossible id");
		return;
	}
	if (id > rp->max_id)
		rp->max_id = id;
	if (rp->ids == NULL || rp->ids[i = rp_id_slot(rp, id)] == 0)
		return;		/* its message was reclaimed already */
	k = rp->ids[i] - 1;
	if (memcmp(rp->msgs[k].uuid, r->body, REC_UUID_LEN) != 0)
		return;
	rp_id_del(rp, i);
	msg_free(rp->msgs[k].msg);
	rp->msgs[k].msg = NULL;
}

/* A whole checkpoint lists every mailbox there was: the others were
 * deleted (the record saying so lost with a failed write). */
static void
rp_ckpt_end(struct replay *rp, const struct journal_rec *r)
{
	struct mbox *m, *next;

	if (r->len != 4 || !rp->ck_on || r->seg != rp->ck_seg ||
	    wire_get32(r->body) != rp->ck_count ||
	    rp->ck_seen != rp->ck_count) {
		rp->ck_on = 0;
		return;
	}
	rp->ck_on = 0;
	for (m = rp->b->durables; m != NULL; m = next) {
		struct rp_box *x = rp_box_find(rp, m->uuid);

		next = m->dnext;
		if (x == NULL || x->mark == rp->ck_gen)
			continue;
		log_warn("journal %s: mailbox %s is not in a later "
		    "checkpoint: deleted (that record was lost)",
		    rp->b->state_dir, m->name);
		rp_box_drop(rp, x);
	}
}

static int
rp_record(void *arg, const struct journal_rec *r)
{
	struct replay *rp = arg;
	struct rp_box *x;

	if (r->type != REC_MBOX && r->type != REC_CKPT_END)
		rp->ck_on = 0;
	switch (r->type) {
	case REC_MBOX:
		return rp_mbox(rp, r);
	case REC_MSG:
		return rp_msg(rp, r);
	case REC_CONSUMED:
		rp_consumed(rp, r);
		return 0;
	case REC_MBOX_DEL:
		if (r->len != REC_UUID_LEN)
			rp_malformed(rp, r, "deletion record of a bad length");
		else if ((x = rp_box_find(rp, r->body)) != NULL)
			rp_box_drop(rp, x);
		return 0;
	case REC_CKPT_BEGIN:
		if (r->len != 12) {
			rp_malformed(rp, r, "checkpoint record of a bad "
			    "length");
			return 0;
		}
		rp->ck_on = 1;
		rp->ck_seg = r->seg;
		rp->ck_gen++;
		rp->ck_count = wire_get32(r->body);
		rp->ck_seen = 0;
		return 0;
	case REC_CKPT_END:
		rp_ckpt_end(rp, r);
		return 0;
	case REC_START:
		return 0;
	default:
		if (!rp->unknown_said)
			log_warn("journal %s: records of type %u, unknown "
			    "(a newer ipcd wrote them?)", rp->b->state_dir,
			    r->type);
		rp->unknown_said = 1;
		rp_malformed(rp, r, "unknown record type");
		return 0;
	}
}

static int
rp_uuid_cmp(const void *a, const void *b)
{
	return memcmp(a, b, REC_UUID_LEN);
}

/* Was uuid a mailbox that replay deleted?  (A message read before its
 * mailbox's record goes with the mailbox, as one read after it does;
 * only one whose mailbox never appears is an orphan.)  The deleted
 * ones are sorted on first use. */
static int
rp_dead_find(struct replay *rp, const uint8_t *uuid)
{
	if (rp->dead_uuids == NULL && rp->dead != NULL) {
		size_t n = 0;

		for (struct mbox *m = rp->dead; m != NULL; m = m->hnext)
			n++;
		if ((rp->dead_uuids = malloc(n * REC_UUID_LEN)) == NULL)
			return 0;	/* counted an orphan: no harm */
		n = 0;
		for (struct mbox *m = rp->dead; m != NULL; m = m->hnext)
			memcpy(rp->dead_uuids + REC_UUID_LEN * n++, m->uuid,
			    REC_UUID_LEN);
		qsort(rp->dead_uuids, n, REC_UUID_LEN, rp_uuid_cmp);
		rp->ndead = n;
	}
	return rp->ndead > 0 && bsearch(uuid, rp->dead_uuids, rp->ndead,
	    REC_UUID_LEN, rp_uuid_cmp) != NULL;
}

static int
rp_msg_cmp(const void *a, const void *b)
{
	const struct msg *x = ((const struct rp_msg *)a)->msg;
	const struct msg *y = ((const struct rp_msg *)b)->msg;
	uint64_t i = x != NULL ? x->id : 0, k = y != NULL ? y->id : 0;

	return i < k ? -1 : i > k;
}

/* After replay: the messages left join their mailboxes in the order
 * they were accepted (their ids: a copy made by compaction lies later
 * in the log than the messages after it), each keeping its segment;
 * everything else replay held is freed.  ok 0: replay failed, and all
 * it made is undone. */
static uint64_t
rp_finish(struct replay *rp, int ok)
{
	struct broker *b = rp->b;
	uint64_t n = 0;
	struct mbox *m;

	if (ok && rp->nmsgs > 1)
		qsort(rp->msgs, rp->nmsgs, sizeof(*rp->msgs), rp_msg_cmp);
	for (size_t i = 0; i < rp->nmsgs; i++) {
		struct msg *msg = rp->msgs[i].msg;

		if (msg == NULL)
			continue;
		if (msg->home == NULL) {
			struct rp_box *x = rp_box_find(rp, rp->msgs[i].uuid);

			if (x == NULL && rp_dead_find(rp, rp->msgs[i].uuid)) {
				msg_free(msg);	/* deleted with it */
				continue;
			}
			if (x == NULL) {
				/* No record of its mailbox. */
				if (ok) {
					rp->orphans++;
					log_debug("journal %s: message %llu "
					    "of an unknown mailbox",
					    b->state_dir,
					    (unsigned long long)msg->id);
				}
				msg_free(msg);
				continue;
			}
			msg->home = x->m;
		}
		m = msg->home;
		if (!ok || m->durable <= 0) {
			msg_free(msg);	/* its mailbox was deleted */
			continue;
		}
		if (msg->len > b->lim.max_payload) {
			/* Accepted under a larger --max-msg-size: no client
			 * could take it now.  Counted; the start is
			 * refused (durable_open). */
			rp->too_big++;
			if (msg->len > rp->biggest)
				rp->biggest = msg->len;
		}
		mbox_restore_msg(m, msg);
		durable_hold(b, msg, rp->msgs[i].seg);
		n++;
	}
	while (!ok && (m = b->durables) != NULL) {
		mbox_discard(b, m);
		m->hnext = rp->dead;
		rp->dead = m;
	}
	while ((m = rp->dead) != NULL) {
		rp->dead = m->hnext;
		mbox_discard_free(m);
	}
	free(rp->msgs);
	free(rp->ids);
	free(rp->boxes);
	free(rp->dead_uuids);
	return n;
}

/* Make the directories above dir (0700, as the journal makes dir). */
static int
durable_mkdirs(const char *dir, char *why, size_t size)
{
	char path[PATH_MAX];
	char *s;

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
		durable_why(why, size, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	for (s = path + 1; (s = strchr(s, '/')) != NULL; s++) {
		*s = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			int err = errno;

			durable_why(why, size, "mkdir %s: %s", path,
			    strerror(err));
			return -err;
		}
		*s = '/';
	}
	return 0;
}

/* Open, lock and replay the state directory.  0, or -errno with why. */
static int
durable_open(struct broker *b, char *why, size_t size)
{
	struct journal_opts jo = { .segment_bytes = b->journal_segment_bytes };
	struct replay rp = { .b = b };
	struct journal_replay_stats st;
	uint64_t next_id = b->next_msg_id, n;
	struct journal *j;
	int r;

	if ((r = journal_open(b->state_dir, &jo, &j, why, size)) < 0)
		return r;
	b->journal = j;
	r = journal_replay(j, rp_record, rp_on_damage, &rp, &st);
	n = rp_finish(&rp, r == 0);
	if (r < 0) {
		durable_why(why, size, "replay of %s: %s", b->state_dir,
		    strerror(-r));
		goto fail;
	}
	if (rp.too_big > 0) {
		/* Not dropped, not left to block its mailbox: the operator
		 * decides (the journal is as it was, but for a torn tail). */
		durable_why(why, size, "journal %s holds %llu message(s) larger "
		    "than --max-msg-size %u (the largest %llu bytes): start "
		    "ipcd with --max-msg-size %llu or more to deliver them",
		    b->state_dir, (unsigned long long)rp.too_big,
		    b->lim.max_payload, (unsigned long long)rp.biggest,
		    (unsigned long long)rp.biggest);
		r = -EFBIG;
		goto fail;
	}
	b->next_msg_id = rp.max_id > next_id ? rp.max_id : next_id;
	b->n.journal_records += st.records;
	b->n.journal_damaged += st.damaged + rp.malformed;
	b->n.journal_torn_bytes += st.torn_bytes;
	b->n.journal_orphans += rp.orphans;
	b->n.durable_recovered += n;
	journal_set_checkpoint(j, durable_checkpoint, b);
	loop_timer_init(&b->journal_timer, durable_hold_over, b);
	b->journal_watch = (struct loop_watch){ .fd = journal_fd(j),
	    .cb = durable_on_sync, .data = b };
	if ((r = loop_watch_add(b->loop, &b->journal_watch, EPOLLIN)) < 0) {
		durable_why(why, size, "epoll: %s", strerror(-r));
		goto fail;
	}
	if (st.segments > 0)
		log_info("journal %s: %u mailboxes and %llu messages "
		    "recovered (%llu records, %llu damaged, %llu torn bytes "
		    "cut)", b->state_dir, b->ndurables,
		    (unsigned long long)n, (unsigned long long)st.records,
		    (unsigned long long)(st.damaged + rp.malformed),
		    (unsigned long long)st.torn_bytes);
	if (rp.orphans > 0)
		log_warn("journal %s: %llu messages of mailboxes whose "
		    "record was lost (journal_orphans): left out",
		    b->state_dir, (unsigned long long)rp.orphans);
	if (st.segments > 0) {
		uint8_t h[12];

		/* A new segment now, with its checkpoint: the old ones
		 * go once what they hold is consumed. */
		wire_put64(h, broker_wall_ns());
		wire_put32(h + 8, (uint32_t)getpid());
		durable_append(b, REC_START, h, sizeof(h), NULL, 0, NULL);
	}
	return 0;
fail:
	/* Nothing recovered stays (replay made it all or nothing). */
	for (struct mbox *m; (m = b->durables) != NULL;) {
		mbox_discard(b, m);
		mbox_discard_free(m);
	}
	b->journal = NULL;
	b->durable_msgs = 0;
	b->durable_bytes = 0;
	journal_close(j);
	return r;
}

int
durable_start(struct broker *b, char *why, size_t size)
{
	struct stat st;

	if (b->state_dir == NULL || b->journal != NULL)
		return 0;
	if (stat(b->state_dir, &st) < 0) {
		if (errno == ENOENT)
			return 0;	/* made when first needed */
		durable_why(why, size, "%s: %s", b->state_dir, strerror(errno));
		return -errno;
	}
	return durable_open(b, why, size);
}

int
durable_ready(struct broker *b)
{
	char why[sizeof(b->journal_why)];
	int r;

	if (b->journal != NULL)
		return 0;
	if (b->state_dir == NULL) {
		durable_why(b->journal_why, sizeof(b->journal_why),
		    "this broker keeps no state (no --state-dir)");
		return -ENOTSUP;
	}
	if ((r = durable_mkdirs(b->state_dir, why, sizeof(why))) == 0 &&
	    (r = durable_open(b, why, sizeof(why))) == 0) {
		log_info("journal %s: opened for durable mailboxes",
		    b->state_dir);
		return 0;
	}
	log_warn("durable mailboxes: %s", why);
	durable_why(b->journal_why, sizeof(b->journal_why), "%s", why);
	return r == -EBUSY || r == -ENOMEM || r == -ENOSPC ? r : -EIO;
}
