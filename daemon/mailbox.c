/*
 * mailbox.c - mailboxes: the hash table of names, the message queues, and
 * the matching of senders and receivers.
 *
 * Invariants, which the matching below keeps:
 *   - a receiver that can take (a RECV; a stream with credit whose
 *     conn has room for output) waits only while nothing queued is for
 *     it;
 *   - a new sender waits behind any sender already waiting, room or not,
 *     so messages enter the queue in the order their sends arrived;
 *   - every operation is O(1) in the number of mailboxes, connections and
 *     queued messages (hash lookup, list head/tail, heap timers).
 */
#include "config.h"

#include "broker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "log.h"

/* First size of the hash table; it doubles when the load passes 1. */
#define MBOX_TAB_MIN 64

static uint32_t
mbox_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)s[i];
		h *= 16777619u;
	}
	return h;
}

int
mbox_table_init(struct broker *b)
{
	b->tab = calloc(MBOX_TAB_MIN, sizeof(*b->tab));
	if (b->tab == NULL)
		return -ENOMEM;
	b->tab_size = MBOX_TAB_MIN;
	b->nmbox = 0;
	return 0;
}

static void
mbox_free(struct mbox *m)
{
	struct msg *msg, *next;

	if (m == NULL)
		return;
	for (msg = m->q.head; msg != NULL; msg = next) {
		next = msg->next;
		msg_free(msg);
	}
	free(m->name);
	free(m);
}

void
mbox_table_free(struct broker *b)
{
	for (size_t i = 0; i < b->tab_size; i++) {
		struct mbox *m = b->tab[i], *next;

		for (; m != NULL; m = next) {
			next = m->hnext;
			mbox_free(m);
		}
	}
	free(b->tab);
	b->tab = NULL;
}

struct mbox *
mbox_find(struct broker *b, const char *name, size_t len)
{
	uint32_t h = mbox_hash(name, len);
	struct mbox *m;

	for (m = b->tab[h & (b->tab_size - 1)]; m != NULL; m = m->hnext)
		if (m->hash == h && strlen(m->name) == len &&
		    memcmp(m->name, name, len) == 0)
			return m;
	return NULL;
}

/* Double the table; on ENOMEM keep the old one (longer chains, still
 * correct). */
static void
mbox_table_grow(struct broker *b)
{
	size_t size = b->tab_size * 2;
	struct mbox **tab = calloc(size, sizeof(*tab));

	if (tab == NULL)
		return;
	for (size_t i = 0; i < b->tab_size; i++) {
		struct mbox *m = b->tab[i], *next;

		for (; m != NULL; m = next) {
			next = m->hnext;
			m->hnext = tab[m->hash & (size - 1)];
			tab[m->hash & (size - 1)] = m;
		}
	}
	free(b->tab);
	b->tab = tab;
	b->tab_size = size;
}

int
mbox_create(struct broker *b, struct conn *c,
    const struct wire_mbox_create *req, struct mbox **m_out,
    int *created_out)
{
	char name[IPC_NAME_MAX + 1];
	struct ipc_addr addr;
	struct quota *q;
	struct mbox *m;
	size_t slot;

	*created_out = 0;
	if (wire_str_copy(req->name, name, sizeof(name)) < 0 ||
	    ipc_addr_parse(name, &addr) < 0 ||
	    addr.kind != IPC_ADDR_MAILBOX || addr.host[0] != '\0')
		return -EINVAL;
	if (req->mode != WIRE_DEFAULT32 && (req->mode & ~0777u) != 0)
		return -EINVAL;
	if ((req->flags & ~(WIRE_CREATE_EXCL | WIRE_CREATE_DURABLE)) != 0)
		return -EINVAL;
	if ((m = mbox_find(b, name, strlen(name))) != NULL) {
		if (req->flags & WIRE_CREATE_EXCL)
			return -EEXIST;
		*m_out = m;
		return 0;
	}
	if (b->nmbox >= b->lim.max_mailboxes)
		return -ENOSPC;
	if ((q = quota_get(b, c->cred.uid)) == NULL)
		return -ENOMEM;
	if (b->lim.max_mailboxes_per_uid != 0 &&
	    q->mailboxes >= b->lim.max_mailboxes_per_uid)
		return -EDQUOT;
	if (req->flags & WIRE_CREATE_DURABLE) {
		int r;

		/* A queue that holds nothing has nothing to keep (and a
		 * record saying so would not replay). */
		if ((req->capacity == WIRE_DEFAULT32 ?
		    b->lim.default_capacity : req->capacity) == 0 ||
		    (req->max_bytes == WIRE_DEFAULT64 ?
		    b->lim.default_max_bytes : req->max_bytes) == 0)
			return -EINVAL;
		if ((r = durable_ready(b)) < 0)
			return r;
		/* Opened just now, the journal may have brought it back. */
		if ((m = mbox_find(b, name, strlen(name))) != NULL) {
			if (req->flags & WIRE_CREATE_EXCL)
				return -EEXIST;
			*m_out = m;
			return 0;
		}
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return -ENOMEM;
	if ((m->name = strdup(name)) == NULL) {
		mbox_free(m);
		return -ENOMEM;
	}
	m->name_len = strlen(name);
	m->hash = mbox_hash(name, m->name_len);
	uuid_generate(m->uuid);
	m->capacity = req->capacity == WIRE_DEFAULT32 ?
	    b->lim.default_capacity : req->capacity;
	m->max_bytes = req->max_bytes == WIRE_DEFAULT64 ?
	    b->lim.default_max_bytes : req->max_bytes;
	m->mode = req->mode == WIRE_DEFAULT32 ? 0600 : req->mode;
	m->uid = c->cred.uid;
	m->gid = c->cred.gid;
	m->created_ns = broker_wall_ns();
	if (req->flags & WIRE_CREATE_DURABLE)
		durable_link(b, m);
	q->mailboxes++;
	slot = m->hash & (b->tab_size - 1);
	m->hnext = b->tab[slot];
	b->tab[slot] = m;
	if (++b->nmbox > b->tab_size)
		mbox_table_grow(b);
	*m_out = m;
	*created_out = 1;
	return 0;
}

void
mbox_info(const struct mbox *m, struct wire_mbox_info *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->uuid, m->uuid, sizeof(out->uuid));
	out->capacity = m->capacity;
	out->mode = m->mode;
	out->max_bytes = m->max_bytes;
	out->uid = m->uid;
	out->gid = m->gid;
	out->depth = m->q.count;
	out->waiting_receivers = m->receivers.count;
	out->waiting_senders = m->senders.count;
	out->bytes = m->q.bytes;
	out->msgs_in = m->msgs_in;
	out->msgs_out = m->msgs_out;
	out->created_ns = m->created_ns;
	out->flags = m->durable > 0 ? WIRE_INFO_DURABLE : 0;
	out->name.p = (const uint8_t *)m->name;
	out->name.len = m->name_len;
}

/* --- queues ------------------------------------------------------------- */

static void
msgq_push(struct msgq *q, struct msg *msg)
{
	msg->next = NULL;
	if (q->tail)
		q->tail->next = msg;
	else
		q->head = msg;
	q->tail = msg;
	q->count++;
	q->bytes += msg->len;
}

static struct msg *
msgq_pop(struct msgq *q)
{
	struct msg *msg = q->head;

	if (msg == NULL)
		return NULL;
	q->head = msg->next;
	if (q->head == NULL)
		q->tail = NULL;
	q->count--;
	q->bytes -= msg->len;
	msg->next = NULL;
	return msg;
}

static void
waitq_push(struct waitq *q, struct wait *w)
{
	w->next = NULL;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	q->count++;
}

static void
waitq_remove(struct waitq *q, struct wait *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->next = w->prev = NULL;
	q->count--;
}

/* Unlink w from its mailbox, its conn and the timers, and free it (and
 * a parked sender's message). */
static void
wait_free(struct broker *b, struct wait *w)
{
	struct conn *c = w->conn;

	waitq_remove(w->kind == WAIT_RECV ? &w->mbox->receivers :
	    &w->mbox->senders, w);
	loop_timer_del(b->loop, &w->timer);
	if (w->cprev)
		w->cprev->cnext = w->cnext;
	else
		c->waits = w->cnext;
	if (w->cnext)
		w->cnext->cprev = w->cprev;
	if (w->stream)
		c->nstreams--;
	else
		c->nwaits--;
	msg_free(w->msg);
	free(w);
}

/* A sender that leaves the line may have held back the ones behind it
 * (its message did not fit, theirs may). */
static void
wait_gone(struct broker *b, struct wait *w)
{
	struct mbox *m = w->mbox;
	int was_sender = w->kind == WAIT_SEND;

	wait_free(b, w);
	if (was_sender)
		mbox_admit_senders(b, m);
	if (m->owner != NULL)
		proc_release_if_idle(b, m->owner);
}

void
wait_cancel(struct broker *b, struct wait *w)
{
	wait_gone(b, w);
}

/* The request is answered: forget it and let its conn read again. */
static void
wait_finish(struct broker *b, struct wait *w)
{
	struct conn *c = w->conn;

	wait_free(b, w);
	conn_wait_done(c);
}

static void
wait_expired(struct loop_timer *t)
{
	struct wait *w = t->data;
	struct broker *b = w->conn->b;

	struct conn *c = w->conn;
	struct proc *p = w->mbox->owner;

	if (p != NULL && p->nconns == 0 && w->kind == WAIT_SEND) {
		b->n.err_nosuchproc++;
		conn_reply_error(c, w->req_id, ESRCH, 0,
		    "the process did not connect in time");
	} else {
		b->n.err_timeout++;
		conn_reply_error(c, w->req_id, ETIMEDOUT, 0,
		    w->kind == WAIT_RECV ? "no message in time" :
		    "no room in the queue in time");
	}
	wait_gone(b, w);
	conn_wait_done(c);
}

static int
wait_park(struct broker *b, struct mbox *m, struct conn *c,
    enum wait_kind kind, uint64_t req_id, uint32_t timeout_ms)
{
	struct wait *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return -ENOMEM;
	w->kind = kind;
	w->conn = c;
	w->mbox = m;
	w->req_id = req_id;
	loop_timer_init(&w->timer, wait_expired, w);
	if (timeout_ms != WIRE_FOREVER &&
	    loop_timer_set(b->loop, &w->timer,
	    loop_now_ms() + timeout_ms) < 0) {
		free(w);
		return -ENOMEM;
	}
	waitq_push(kind == WAIT_RECV ? &m->receivers : &m->senders, w);
	w->cnext = c->waits;
	if (c->waits)
		c->waits->cprev = w;
	c->waits = w;
	c->nwaits++;
	return 0;
}

/* --- matching ----------------------------------------------------------- */

int
mbox_may(const struct mbox *m, const struct ucred *cred, unsigned bit)
{
	if (cred->uid == 0)
		return 1;
	if (cred->uid == m->uid)
		return (m->mode & (bit << 6)) != 0;
	if (cred->gid == m->gid)
		return (m->mode & (bit << 3)) != 0;
	return (m->mode & bit) != 0;
}

static int
mbox_has_room(const struct mbox *m, const struct msg *msg)
{
	/* A process that has not connected yet takes nothing: its senders
	 * wait for it (or for their deadline). */
	if (m->owner != NULL && m->owner->nconns == 0)
		return 0;
	/* Durable: what waits for its sync takes room too.  (Messages put
	 * back by a redelivery may overfill the queue.) */
	if (m->durable)
		return m->q.count + m->pend_count < m->capacity &&
		    m->q.bytes + m->pend_bytes <= m->max_bytes &&
		    msg->len <= m->max_bytes - m->q.bytes - m->pend_bytes;
	return m->q.count < m->capacity &&
	    msg->len <= m->max_bytes - m->q.bytes;
}

static int
mbox_matches(const struct msg_from *from, const struct msg *msg)
{
	if (from->pid == 0)
		return 1;
	if (msg->pid != from->pid)
		return 0;
	return msg->origin == NULL ? from->host[0] == '\0' :
	    strcmp(msg->origin, from->host) == 0;
}

/* The receiver's buffer is too small for msg: it is told how much it
 * needs, and msg stays where it is. */
static void
mbox_too_big(struct broker *b, struct conn *c, uint64_t req_id,
    uint32_t len)
{
	b->n.err_msgsize++;
	conn_reply_error(c, req_id, EMSGSIZE, len,
	    "message larger than the buffer");
}

/* Hand msg to receiver c.  It stays on the books, in c's unacked list,
 * until c's library says the application has it. */
static void
mbox_deliver(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg)
{
	conn_reply_deliver(c, req_id, m, msg, 1);
	c->msgs_received++;
	m->msgs_out++;
	b->n.msgs_out++;
	b->n.bytes_out += msg->len;
	conn_event(b, EV_RECEIVE, (uint32_t)c->cred.pid, c->cred.uid, m,
	    m->name, msg->id, msg->len, 0);
	msg->home = m;
	m->unacked++;
	msg->next = NULL;
	if (c->unacked_tail != NULL)
		c->unacked_tail->next = msg;
	else
		c->unacked = msg;
	c->unacked_tail = msg;
	c->nunacked++;
}

/* Can w take a message now?  A stream needs credit and room in its
 * conn's output; past that it stays in line but is passed over until
 * conn_flush_all() finds room and runs it again. */
static int
wait_ready(const struct wait *w)
{
	if (!w->stream)
		return 1;
	if (w->credit == 0)
		return 0;
	if (conn_stream_full(w->conn)) {
		w->conn->streams_blocked = 1;
		return 0;
	}
	return 1;
}

/* w took a message: a RECV is answered; a stream spends one credit and
 * goes to the back of the line, so that streams and RECVs on one
 * mailbox take turns. */
static void
wait_took(struct broker *b, struct mbox *m, struct wait *w)
{
	if (!w->stream) {
		wait_finish(b, w);
		return;
	}
	w->credit--;
	waitq_remove(&m->receivers, w);
	waitq_push(&m->receivers, w);
}

void
mbox_acked(struct msg *msg)
{
	if (msg->home != NULL) {
		/* Durable: recorded as consumed (with the next sync); a
		 * mailbox deleted meanwhile has said so for all of its. */
		if (msg->jseg != 0)
			durable_consumed(msg->b, msg->home, msg);
		msg->home->unacked--;
	}
	msg_free(msg);
}

static void
msgq_push_head(struct msgq *q, struct msg *msg)
{
	msg->next = q->head;
	q->head = msg;
	if (q->tail == NULL)
		q->tail = msg;
	q->count++;
	q->bytes += msg->len;
}

static struct msg *mbox_find_msg(struct mbox *m, const struct msg_from *from,
    struct msg **prev_out);
static void msgq_unlink(struct msgq *q, struct msg *prev, struct msg *msg);
static void mbox_serve(struct broker *b, struct mbox *m, struct wait *w);

/* Messages came back to the queue (or a stream can take again): serve
 * the receivers that wait, in their order, each with the first message
 * it selects; a stream takes as many as its credit and its conn's
 * output allow before the next receiver is served.  (New messages, in
 * mbox_send(), go round the receivers one at a time.) */
void
mbox_feed_receivers(struct broker *b, struct mbox *m)
{
	struct wait *w, *next, *last = m->receivers.tail;

	for (w = m->receivers.head; w != NULL && m->q.head != NULL;
	    w = next) {
		int end = w == last;

		/* The walk stops at the last one that was waiting when it
		 * began, should any move behind it while it runs. */
		next = w->next;
		if (w->stream)
			mbox_stream_run(b, w);
		else
			mbox_serve(b, m, w);
		if (end)
			break;
	}
}

struct mbox *
mbox_requeue(struct broker *b, struct msg *msg)
{
	struct mbox *m = msg->home;

	if (m == NULL) {
		conn_report_failure(b, msg, ENOENT,
		    "the mailbox was deleted before the message was received");
		b->n.dropped_mbox_deleted++;
		/* Not received after all: its delivery is undone, as for
		 * one put back below (the mailbox's count went with it). */
		b->n.msgs_out--;
		b->n.bytes_out -= msg->len;
		msg_free(msg);
		return NULL;
	}
	m->unacked--;
	msg->home = NULL;
	msg->flags |= MSG_REDELIVERED;
	b->n.redelivered++;
	/* It was out of the queue: the receiver's count is undone so the
	 * next delivery counts it again. */
	m->msgs_out--;
	b->n.msgs_out--;
	b->n.bytes_out -= msg->len;
	msgq_push_head(&m->q, msg);
	return m;
}

void
mbox_forget_unacked(struct broker *b, struct mbox *m)
{
	/* Rare (a delete while receivers hold its messages unacked), so
	 * a walk over the connections is fine. */
	for (struct conn *c = b->conns; c != NULL && m->unacked > 0;
	    c = c->next)
		for (struct msg *msg = c->unacked; msg != NULL;
		    msg = msg->next)
			if (msg->home == m) {
				msg->home = NULL;
				m->unacked--;
			}
}

static void
mbox_accepted(struct broker *b, struct mbox *m, struct msg *msg)
{
	m->msgs_in++;
	b->n.msgs_in++;
	b->n.bytes_in += msg->len;
	conn_event(b, EV_SEND, msg->pid, msg->uid, m, m->name, msg->id,
	    msg->len, 0);
}

void
mbox_admit_senders(struct broker *b, struct mbox *m)
{
	struct wait *w;

	while ((w = m->senders.head) != NULL && mbox_has_room(m, w->msg)) {
		struct msg *msg = w->msg;

		w->msg = NULL;
		if (m->durable) {
			/* Answered once its record is on disk. */
			durable_send(b, m, w->conn, w->req_id, msg);
			wait_finish(b, w);
			continue;
		}
		mbox_accepted(b, m, msg);
		msgq_push(&m->q, msg);
		conn_reply_sent(w->conn, w->req_id, msg);
		wait_finish(b, w);
	}
}


/* The first receiver waiting, ready and matching, that a new message
 * goes to; those it is too big for are answered EMSGSIZE on the way. */
static struct wait *
mbox_ready_receiver(struct broker *b, struct mbox *m, const struct msg *msg)
{
	struct wait *w, *next;

	for (w = m->receivers.head; w != NULL; w = next) {
		next = w->next;
		if (!wait_ready(w) || !mbox_matches(&w->from, msg))
			continue;
		if (msg->len > w->max_len) {
			mbox_too_big(b, w->conn, w->req_id, msg->len);
			wait_finish(b, w);
			continue;
		}
		return w;
	}
	return NULL;
}
/* mbox_send() into a durable mailbox: nothing is handed to a receiver
 * before its record is on disk, so a message with room goes to the
 * journal (durable_send); one without waits as any. */
static void
mbox_send_durable(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg, uint32_t timeout_ms)
{
	int r;

	/* The journal keeps bytes, not descriptors. */
	if (msg->fd >= 0 && (r = msg_materialize(b, &msg)) < 0) {
		conn_reply_error(c, req_id, r == -ENOMEM ? ENOMEM : EIO, 0,
		    "cannot read the message's memfd");
		msg_free(msg);
		return;
	}
	if (m->senders.head == NULL && mbox_has_room(m, msg)) {
		durable_send(b, m, c, req_id, msg);
		return;
	}
	if (timeout_ms == 0) {
		b->n.err_full++;
		conn_reply_error(c, req_id, EAGAIN, 0, "queue full");
		msg_free(msg);
		return;
	}
	if ((r = wait_park(b, m, c, WAIT_SEND, req_id, timeout_ms)) < 0) {
		conn_reply_error(c, req_id, -r, 0, "out of memory");
		msg_free(msg);
		return;
	}
	c->waits->msg = msg;
}

void
mbox_send(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg, uint32_t timeout_ms)
{
	int unconnected = m->owner != NULL && m->owner->nconns == 0;
	struct wait *w;
	int r;

	/* It could never fit: say so rather than wait for ever.  (A
	 * rendezvous mailbox queues nothing, so has no byte limit.) */
	if (m->capacity > 0 && msg->len > m->max_bytes) {
		b->n.err_msgsize++;
		conn_reply_error(c, req_id, EMSGSIZE, 0,
		    "message larger than the queue's byte capacity");
		msg_free(msg);
		return;
	}
	if (m->durable) {
		mbox_send_durable(b, m, c, req_id, msg, timeout_ms);
		return;
	}
	if (m->senders.head == NULL) {
		/* A receiver waiting for what this is: hand it over (no
		 * queued message matched it, or it would not wait). */
		if ((w = mbox_ready_receiver(b, m, msg)) != NULL) {
			struct conn *rc = w->conn;
			uint64_t rid = w->req_id;

			wait_took(b, m, w);
			mbox_accepted(b, m, msg);
			conn_reply_sent(c, req_id, msg);
			mbox_deliver(b, m, rc, rid, msg);
			return;
		}
		if (mbox_has_room(m, msg)) {
			mbox_accepted(b, m, msg);
			msgq_push(&m->q, msg);
			conn_reply_sent(c, req_id, msg);
			return;
		}
	}
	if (unconnected) {
		/* Wait for the process to connect, within the bound; an
		 * async send waits too (its sender does not). */
		if (msg->flags & MSG_ASYNC)
			timeout_ms = b->lim.direct_wait_ms;
		if (timeout_ms == 0) {
			b->n.err_nosuchproc++;
			conn_reply_error(c, req_id, ESRCH, 0,
			    "the process is not connected");
			msg_free(msg);
			return;
		}
		if (timeout_ms > b->lim.direct_wait_ms)
			timeout_ms = b->lim.direct_wait_ms;
	} else if (timeout_ms == 0) {
		b->n.err_full++;
		conn_reply_error(c, req_id, EAGAIN, 0, m->capacity == 0 ?
		    "no receiver waiting" : "queue full");
		msg_free(msg);
		return;
	}
	if ((r = wait_park(b, m, c, WAIT_SEND, req_id, timeout_ms)) < 0) {
		conn_reply_error(c, req_id, -r, 0, "out of memory");
		msg_free(msg);
		return;
	}
	/* The wait just parked is the conn's newest. */
	c->waits->msg = msg;
}

void
mbox_durable_accept(struct broker *b, struct mbox *m, struct msg *msg)
{
	struct wait *w;

	mbox_accepted(b, m, msg);
	/* As a new message in mbox_send(): the first receiver ready for
	 * it takes it (one waits only while nothing queued is for it). */
	if ((w = mbox_ready_receiver(b, m, msg)) != NULL) {
		struct conn *rc = w->conn;
		uint64_t rid = w->req_id;

		wait_took(b, m, w);
		mbox_deliver(b, m, rc, rid, msg);
		return;
	}
	msgq_push(&m->q, msg);
}

/* The first queued message that from selects, and the one before it
 * (NULL at the head).  Selective receive scans; receive-any takes the
 * head at once. */
static struct msg *
mbox_find_msg(struct mbox *m, const struct msg_from *from, struct msg **prev_out)
{
	struct msg *prev = NULL, *msg;

	for (msg = m->q.head; msg != NULL; prev = msg, msg = msg->next)
		if (mbox_matches(from, msg))
			break;
	*prev_out = prev;
	return msg;
}

static void
msgq_unlink(struct msgq *q, struct msg *prev, struct msg *msg)
{
	if (prev == NULL) {
		msgq_pop(q);
		return;
	}
	prev->next = msg->next;
	if (q->tail == msg)
		q->tail = prev;
	q->count--;
	q->bytes -= msg->len;
	msg->next = NULL;
}

/* Take the message a receiver from c (req_id, from, max_len) gets now:
 * the first queued one it selects, or else one a waiting sender holds
 * (a rendezvous, or a queue full of other senders' messages: this
 * sender's order is kept since none of its messages is queued).  NULL
 * when there is none, or (*err set, answered already) when it is
 * larger than max_len: it stays where it is for a bigger buffer. */
static struct msg *
mbox_take(struct broker *b, struct mbox *m, struct conn *c, uint64_t req_id,
    uint32_t max_len, const struct msg_from *from, int *err)
{
	struct msg *msg, *prev;
	struct wait *w;

	*err = 0;
	if ((msg = mbox_find_msg(m, from, &prev)) != NULL) {
		if (msg->len > max_len) {
			mbox_too_big(b, c, req_id, msg->len);
			*err = EMSGSIZE;
			return NULL;
		}
		msgq_unlink(&m->q, prev, msg);
		mbox_admit_senders(b, m);
		return msg;
	}
	/* A durable message is not handed over before it is on disk. */
	if (m->durable)
		return NULL;
	for (w = m->senders.head; w != NULL; w = w->next) {
		if (!mbox_matches(from, w->msg))
			continue;
		if (m->owner != NULL && m->owner->nconns == 0)
			break;
		if (w->msg->len > max_len) {
			mbox_too_big(b, c, req_id, w->msg->len);
			*err = EMSGSIZE;
			return NULL;
		}
		msg = w->msg;
		w->msg = NULL;
		mbox_accepted(b, m, msg);
		conn_reply_sent(w->conn, w->req_id, msg);
		wait_finish(b, w);
		return msg;
	}
	return NULL;
}

/* A parked RECV w: answer it with a message if one is there for it. */
static void
mbox_serve(struct broker *b, struct mbox *m, struct wait *w)
{
	struct conn *rc = w->conn;
	uint64_t rid = w->req_id;
	struct msg *msg;
	int err;

	msg = mbox_take(b, m, rc, rid, w->max_len, &w->from, &err);
	if (msg == NULL && err == 0)
		return;
	wait_finish(b, w);
	if (msg != NULL)
		mbox_deliver(b, m, rc, rid, msg);
}

void
mbox_recv(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, uint32_t max_len, uint32_t timeout_ms,
    const struct msg_from *from)
{
	struct msg *msg;
	int r;

	if ((msg = mbox_take(b, m, c, req_id, max_len, from, &r)) != NULL) {
		mbox_deliver(b, m, c, req_id, msg);
		return;
	}
	if (r != 0)
		return;
	if (timeout_ms == 0) {
		conn_reply_error(c, req_id, EAGAIN, 0, "nothing to receive");
		return;
	}
	if ((r = wait_park(b, m, c, WAIT_RECV, req_id, timeout_ms)) < 0) {
		conn_reply_error(c, req_id, -r, 0, "out of memory");
		return;
	}
	c->waits->max_len = max_len;
	c->waits->from = *from;
}

/* Let stream w take what is there for it, as far as its credit and its
 * conn's output allow.  It stays in the receivers' line either way.  A
 * message too large for it ends the stream (answered with MSGSIZE). */
void
mbox_stream_run(struct broker *b, struct wait *w)
{
	struct mbox *m = w->mbox;
	struct conn *c = w->conn;

	while (wait_ready(w)) {
		struct msg *msg;
		int err;

		msg = mbox_take(b, m, c, w->req_id, w->max_len, &w->from,
		    &err);
		if (err != 0) {
			wait_finish(b, w);
			return;
		}
		if (msg == NULL)
			return;
		w->credit--;
		mbox_deliver(b, m, c, w->req_id, msg);
	}
}

/* CREDIT: give c's stream req_id on m credit more messages, opening it
 * if new.  0, or -errno (nothing changed). */
int
mbox_stream_credit(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, uint32_t max_len, uint32_t credit)
{
	struct wait *w;
	int r;

	for (w = c->waits; w != NULL; w = w->cnext)
		if (w->stream && w->req_id == req_id)
			break;
	if (w != NULL && w->mbox != m)
		return -EINVAL;		/* one id, one mailbox */
	if (w == NULL) {
		if ((r = wait_park(b, m, c, WAIT_RECV, req_id,
		    WIRE_FOREVER)) < 0)
			return r;
		w = c->waits;
		w->stream = 1;
		c->nwaits--;
		c->nstreams++;
	}
	w->max_len = max_len;
	w->credit = credit > WIRE_CREDIT_MAX - w->credit ? WIRE_CREDIT_MAX :
	    w->credit + credit;
	mbox_stream_run(b, w);
	return 0;
}

/* c's stream req_id ends: nothing more is delivered on it.  0, or
 * -ENOENT when c has no such stream. */
int
mbox_stream_end(struct broker *b, struct conn *c, uint64_t req_id)
{
	for (struct wait *w = c->waits; w != NULL; w = w->cnext)
		if (w->stream && w->req_id == req_id) {
			wait_finish(b, w);
			return 0;
		}
	return -ENOENT;
}

int
mbox_init_queue(struct broker *b, struct mbox *m, const char *name,
    struct proc *owner)
{
	memset(m, 0, sizeof(*m));
	if ((m->name = strdup(name)) == NULL)
		return -ENOMEM;
	m->name_len = strlen(name);
	m->owner = owner;
	uuid_generate(m->uuid);
	m->capacity = b->lim.default_capacity ? b->lim.default_capacity : 1;
	m->max_bytes = b->lim.default_max_bytes;
	m->mode = 0600;
	m->created_ns = broker_wall_ns();
	return 0;
}

void
mbox_fini_queue(struct broker *b, struct mbox *m, int err, const char *why)
{
	struct msg *msg;
	struct wait *w;

	while ((w = m->receivers.head) != NULL) {
		conn_reply_error(w->conn, w->req_id, err, 0, why);
		wait_finish(b, w);
	}
	while ((w = m->senders.head) != NULL) {
		conn_reply_error(w->conn, w->req_id, err, 0, why);
		wait_finish(b, w);
	}
	/* Accepted, never received: each sender is told, and counted. */
	while ((msg = msgq_pop(&m->q)) != NULL) {
		if (m->owner != NULL)
			b->n.dropped_proc_gone++;
		else
			b->n.dropped_mbox_deleted++;
		conn_report_failure(b, msg, err, why);
		msg_free(msg);
	}
	mbox_forget_unacked(b, m);
	free(m->name);
	m->name = NULL;
}

void
mbox_delete(struct broker *b, struct mbox *m)
{
	struct mbox **pp = &b->tab[m->hash & (b->tab_size - 1)];
	struct quota *q = quota_get(b, m->uid);

	if (m->durable)
		durable_mbox_gone(b, m);
	mbox_fini_queue(b, m, ENOENT, "mailbox deleted");
	for (; *pp != NULL; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	if (q != NULL && q->mailboxes > 0)
		q->mailboxes--;
	b->nmbox--;
	free(m);
}

/* --- replay of durable mailboxes ---------------------------------------- */

struct mbox *
mbox_restore(struct broker *b, const char *name, const uuid_t uuid,
    uid_t uid, gid_t gid, uint32_t mode, uint32_t capacity,
    uint64_t max_bytes, uint64_t created_ns, int *err)
{
	struct ipc_addr addr;
	struct quota *q;
	struct mbox *m;
	size_t slot;

	if (ipc_addr_parse(name, &addr) < 0 ||
	    addr.kind != IPC_ADDR_MAILBOX || addr.host[0] != '\0') {
		*err = -EINVAL;
		return NULL;
	}
	if ((q = quota_get(b, uid)) == NULL ||
	    (m = calloc(1, sizeof(*m))) == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	if ((m->name = strdup(name)) == NULL) {
		free(m);
		*err = -ENOMEM;
		return NULL;
	}
	m->name_len = strlen(name);
	m->hash = mbox_hash(name, m->name_len);
	memcpy(m->uuid, uuid, sizeof(m->uuid));
	m->capacity = capacity;
	m->max_bytes = max_bytes;
	m->mode = mode & 0777;
	m->uid = uid;
	m->gid = gid;
	m->created_ns = created_ns;
	durable_link(b, m);
	q->mailboxes++;
	slot = m->hash & (b->tab_size - 1);
	m->hnext = b->tab[slot];
	b->tab[slot] = m;
	if (++b->nmbox > b->tab_size)
		mbox_table_grow(b);
	return m;
}

void
mbox_discard(struct broker *b, struct mbox *m)
{
	struct mbox **pp = &b->tab[m->hash & (b->tab_size - 1)];
	struct quota *q = quota_get(b, m->uid);

	for (; *pp != NULL; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	m->hnext = NULL;
	if (m->durable > 0)
		durable_mbox_gone(b, m);
	m->durable = -1;
	if (q != NULL && q->mailboxes > 0)
		q->mailboxes--;
	b->nmbox--;
}

void
mbox_discard_free(struct mbox *m)
{
	mbox_free(m);
}

void
mbox_restore_msg(struct mbox *m, struct msg *msg)
{
	/* Whether a receiver had it before the broker stopped is not
	 * known: it may have. */
	msg->flags |= MSG_REDELIVERED;
	msg->home = NULL;
	msgq_push(&m->q, msg);
}
