/*
 * link.c - links between brokers: messages for other hosts.
 *
 * A send to X@hostB becomes an lreq on our link to hostB: queued (bounded)
 * while the link is down, then sent as LINK_SEND with the link's next
 * sequence number, and kept "in flight" until hostB answers SENT or ERROR
 * with that number; only then is the sender answered.  A link that drops
 * puts what was in flight back at the head of the queue, in order, and
 * sends it again once reconnected; hostB remembers the answers it gave
 * per (identity, name, epoch) for the last LINK_WINDOW numbers (a peer),
 * so a message sent twice is accepted once and answered the same way
 * twice.  Nothing is dropped without its sender being told.
 *
 * Links are one way for messages: hostB's answers (SENT, ERROR, PONG)
 * come back on our link, but hostB's own messages for us travel on a
 * link hostB opens to us.  Brokers do not relay: LINK_SEND names a
 * destination on the receiving broker.
 */
#include "config.h"

#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"
#include "log.h"
#include "mysocks.h"
#include "tls.h"

/* Reconnection backoff, doubling from the first to the last. */
#define LINK_BACKOFF_MIN_MS	100u
#define LINK_BACKOFF_MAX_MS	5000u
/* Brokers remembered without a link, oldest forgotten first. */
#define PEERS_MAX	64u
/* Addresses of one host name tried, in the resolver's order. */
#define LINK_ADDRS	8

struct lq {
	struct lreq *head, *tail;
	uint32_t count;
};

/* One message on its way to another broker. */
struct lreq {
	struct lreq *next;		/* in unsent or in_flight */
	struct lreq *cnext, *cprev;	/* in the sender's conn->lreqs */
	struct link *link;
	struct conn *conn;		/* the sender; NULL once gone */
	uint64_t req_id, seq;		/* seq 0: never sent */
	int blocking;			/* counted in conn->nwaits */
	int in_flight, grace;
	int64_t deadline_ms;		/* blocking with a timeout; else 0 */
	struct loop_timer timer;
	struct msg *msg;
	char dest[IPC_ADDR_MAX];	/* on the remote broker */
};

struct link {
	struct link *next;
	struct broker *b;
	char name[LINK_NAME_MAX];
	char host[IPC_HOST_MAX + 1];
	int port;
	enum wire_link_state state;
	struct conn *conn;
	struct lq unsent, in_flight;
	uint64_t bytes;			/* payloads of both */
	uint64_t epoch;			/* random per link: its numbers'
					 * namespace at the peer */
	uint64_t next_seq;
	uint32_t max_payload;		/* the peer's, from WELCOME */
	struct loop_timer retry, ping;
	uint32_t backoff_ms;
	uint64_t msgs_out, failed, reconnects, rtt_us;
	char identity[TLS_IDENTITY_MAX + 1];
	char last_error[160];
	/* The host's addresses (numeric), the next one to try, and
	 * whether a lookup is under way. */
	char addrs[LINK_ADDRS][INET6_ADDRSTRLEN];
	unsigned naddrs, next_addr;
	int resolving;
};

/* A name lookup, done in a thread of its own so that a slow resolver
 * never stops the loop; the result comes back through a pipe as this
 * pointer, and the loop frees it (the thread does when the pipe is
 * gone). */
struct resolve_req {
	char name[LINK_NAME_MAX];	/* the link's, to find it again */
	char host[IPC_HOST_MAX + 1];
	int wfd;
	int gai;			/* getaddrinfo's error, or 0 */
	unsigned naddrs;
	char addrs[LINK_ADDRS][INET6_ADDRSTRLEN];
};

struct peer_slot {
	uint64_t seq, msg_id;
	uint32_t code;
	uint8_t state;			/* 0 free, 1 pending, 2 answered */
};

struct peer {
	struct peer *next;
	struct broker *b;
	char identity[TLS_IDENTITY_MAX + 1];
	char name[LINK_NAME_MAX];
	uint64_t epoch;
	struct conn *conn;
	uint64_t msgs_in;
	int64_t last_seen_ms;
	struct peer_slot ring[LINK_WINDOW];
};

/* --- names -------------------------------------------------------------- */

void
link_name(const char *host, int port, char *buf, size_t size)
{
	snprintf(buf, size, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
	    port > 0 ? port : IPCD_TCP_PORT);
}

int
link_is_self(const struct broker *b, const struct ipc_addr *a)
{
	char name[LINK_NAME_MAX];

	if (a->host[0] == '\0')
		return 1;
	link_name(a->host, a->port, name, sizeof(name));
	return strcmp(name, b->name) == 0;
}

/* --- queues ------------------------------------------------------------- */

static void
lq_push(struct lq *q, struct lreq *r)
{
	r->next = NULL;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	q->count++;
}

static void
lq_remove(struct lq *q, struct lreq *r)
{
	struct lreq **pp, *prev = NULL;

	for (pp = &q->head; *pp != NULL; prev = *pp, pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			if (q->tail == r)
				q->tail = prev;
			q->count--;
			r->next = NULL;
			return;
		}
}

/* Detach r from its sender's conn (the sender is answered or gone). */
static void
lreq_unhook(struct lreq *r)
{
	struct conn *c = r->conn;

	if (c == NULL)
		return;
	if (r->cprev)
		r->cprev->cnext = r->cnext;
	else
		c->lreqs = r->cnext;
	if (r->cnext)
		r->cnext->cprev = r->cprev;
	r->cnext = r->cprev = NULL;
	r->conn = NULL;
	if (r->blocking) {
		c->nwaits--;
		conn_wait_done(c);
	}
}

static void
lreq_free(struct broker *b, struct lreq *r)
{
	r->link->bytes -= r->msg->len;
	lreq_unhook(r);
	loop_timer_del(b->loop, &r->timer);
	msg_free(r->msg);
	free(r);
}

/* Tell r's sender how it went (code 0: accepted). */
static void
lreq_answer(struct broker *b, struct lreq *r, uint32_t code,
    const char *text)
{
	struct conn *c = r->conn;

	if (code != 0)
		r->link->failed++;
	else
		r->link->msgs_out++;
	if (c != NULL && c->state != CONN_DEAD) {
		if (r->blocking) {
			if (code == 0)
				conn_reply_sent(c, r->req_id, r->msg);
			else
				conn_reply_error(c, r->req_id,
				    wire_errno(code), 0, text);
		} else if (code != 0) {
			struct wire_frame f = { .type = WIRE_FAILED,
			    .id = r->req_id };

			b->n.failures_reported++;
			f.b.failed.msg_id = r->msg->id;
			f.b.failed.code = code;
			f.b.failed.text = wire_str(text);
			conn_push(c, &f);
		}
	} else if (code != 0) {
		b->n.failures_reported++;
	}
	lreq_free(b, r);
}

/* --- links -------------------------------------------------------------- */

static void link_connect(struct link *l);
static void link_ping_due(struct loop_timer *t);

static void
link_set_error(struct link *l, const char *why)
{
	size_t len = strnlen(why, sizeof(l->last_error) - 1);

	/* Cut where it must: it is for people to read. */
	memcpy(l->last_error, why, len);
	l->last_error[len] = '\0';
}

static void
link_retry_due(struct loop_timer *t)
{
	struct link *l = t->data;

	if (l->state == WIRE_LINK_DOWN)
		link_connect(l);
}

static void
link_schedule_retry(struct link *l)
{
	l->state = WIRE_LINK_DOWN;
	if (loop_timer_set(l->b->loop, &l->retry,
	    loop_now_ms() + l->backoff_ms) < 0)
		log_error("link %s: cannot arm the retry timer", l->name);
	log_debug("link %s: retry in %u ms", l->name, l->backoff_ms);
	l->backoff_ms = l->backoff_ms * 2 > LINK_BACKOFF_MAX_MS ?
	    LINK_BACKOFF_MAX_MS : l->backoff_ms * 2;
}

static void *
resolve_thread(void *arg)
{
	struct resolve_req *r = arg;
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM }, *res, *ai;

	if ((r->gai = getaddrinfo(r->host, NULL, &hints, &res)) == 0) {
		for (ai = res; ai != NULL && r->naddrs < LINK_ADDRS;
		    ai = ai->ai_next)
			if (getnameinfo(ai->ai_addr, ai->ai_addrlen,
			    r->addrs[r->naddrs], sizeof(r->addrs[0]), NULL, 0,
			    NI_NUMERICHOST) == 0)
				r->naddrs++;
		freeaddrinfo(res);
	}
	/* A pointer is far below PIPE_BUF: written whole or not at all. */
	if (write(r->wfd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		free(r);
	return NULL;
}

static void link_try_next(struct link *l);

static void
link_on_resolved(struct loop_watch *w, uint32_t events)
{
	struct broker *b = w->data;
	struct resolve_req *r;

	(void)events;
	while (read(w->fd, &r, sizeof(r)) == (ssize_t)sizeof(r)) {
		struct link *l;

		for (l = b->links; l != NULL; l = l->next)
			if (l->resolving && strcmp(l->name, r->name) == 0)
				break;
		if (l != NULL) {
			l->resolving = 0;
			memcpy(l->addrs, r->addrs, sizeof(l->addrs));
			l->naddrs = r->naddrs;
			l->next_addr = 0;
			if (l->naddrs == 0) {
				char why[IPC_HOST_MAX + 96];

				snprintf(why, sizeof(why), "resolve %s: %s",
				    l->host, r->gai ? gai_strerror(r->gai) :
				    "no address");
				link_set_error(l, why);
				log_info("link %s: %s", l->name, why);
				link_schedule_retry(l);
			} else {
				link_try_next(l);
			}
		}
		free(r);
	}
}

/* Look the host name up in a thread; 0 or -errno. */
static int
link_resolve(struct link *l)
{
	struct broker *b = l->b;
	struct resolve_req *r;
	pthread_attr_t attr;
	pthread_t t;
	int e;

	if (b->resolve_fd[0] < 0) {
		/* The loop reads without waiting; threads write whole
		 * pointers, waiting if they must. */
		if (pipe2(b->resolve_fd, O_CLOEXEC) < 0 ||
		    fcntl(b->resolve_fd[0], F_SETFL, O_NONBLOCK) < 0)
			return -errno;
		b->resolve_watch = (struct loop_watch){ .fd = b->resolve_fd[0],
		    .cb = link_on_resolved, .data = b };
		if ((e = loop_watch_add(b->loop, &b->resolve_watch,
		    EPOLLIN)) < 0)
			return e;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return -ENOMEM;
	snprintf(r->name, sizeof(r->name), "%s", l->name);
	snprintf(r->host, sizeof(r->host), "%s", l->host);
	r->wfd = b->resolve_fd[1];
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&t, &attr, resolve_thread, r);
	pthread_attr_destroy(&attr);
	if (e != 0) {
		free(r);
		return -e;
	}
	l->resolving = 1;
	return 0;
}

static void
link_connect(struct link *l)
{
	unsigned char any[sizeof(struct in6_addr)];
	int r;

	l->state = WIRE_LINK_CONNECTING;
	l->next_addr = 0;
	if (inet_pton(AF_INET, l->host, any) == 1 ||
	    inet_pton(AF_INET6, l->host, any) == 1) {
		/* (A numeric address fits: inet_pton took it.) */
		memcpy(l->addrs[0], l->host, strnlen(l->host,
		    sizeof(l->addrs[0]) - 1));
		l->addrs[0][strnlen(l->host, sizeof(l->addrs[0]) - 1)] = '\0';
		l->naddrs = 1;
		link_try_next(l);
		return;
	}
	if (l->resolving)
		return;
	if ((r = link_resolve(l)) < 0) {
		char why[160];

		snprintf(why, sizeof(why), "resolve: %s", strerror(-r));
		link_set_error(l, why);
		link_schedule_retry(l);
	}
}

/* Connect to the next address of the host; when none is left, wait and
 * start again. */
static void
link_try_next(struct link *l)
{
	int fd;

	if (l->next_addr >= l->naddrs) {
		link_schedule_retry(l);
		return;
	}
	l->state = WIRE_LINK_CONNECTING;
	if ((fd = connectSocketStart(l->addrs[l->next_addr++], l->port > 0 ?
	    l->port : IPCD_TCP_PORT)) < 0) {
		char why[160];

		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		link_set_error(l, why);
		log_info("link %s: %s", l->name, why);
		link_try_next(l);
		return;
	}
	if ((l->conn = conn_new_link(l->b, l, fd)) == NULL) {
		link_set_error(l, "out of memory");
		link_schedule_retry(l);
	}
}

static struct link *
link_get(struct broker *b, const struct ipc_addr *a)
{
	char name[LINK_NAME_MAX];
	struct link *l;

	link_name(a->host, a->port, name, sizeof(name));
	for (l = b->links; l != NULL; l = l->next)
		if (strcmp(l->name, name) == 0)
			return l;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->b = b;
	snprintf(l->name, sizeof(l->name), "%s", name);
	snprintf(l->host, sizeof(l->host), "%s", a->host);
	l->port = a->port;
	/* Per link, not per broker: two names of one host (localhost and
	 * 127.0.0.1) make two links, and the peer must tell them apart. */
	if (getrandom(&l->epoch, sizeof(l->epoch), 0) !=
	    (ssize_t)sizeof(l->epoch))
		l->epoch = b->epoch + (uint64_t)(uintptr_t)l;
	l->state = WIRE_LINK_DOWN;
	l->backoff_ms = LINK_BACKOFF_MIN_MS;
	loop_timer_init(&l->retry, link_retry_due, l);
	loop_timer_init(&l->ping, link_ping_due, l);
	l->next = b->links;
	b->links = l;
	return l;
}

/* The sender's timeout passed. */
static void
lreq_expired(struct loop_timer *t)
{
	struct lreq *r = t->data;
	struct link *l = r->link;
	struct broker *b = l->b;

	/* Never numbered: never sent, so it can be taken back.  One put
	 * back by a reconnect may have been accepted already. */
	if (r->seq == 0) {
		b->n.err_timeout++;
		lq_remove(&l->unsent, r);
		lreq_answer(b, r, wire_code(ETIMEDOUT), l->state ==
		    WIRE_LINK_UP ? "no room on the link in time; not sent" :
		    "the link did not come up in time; not sent");
		return;
	}
	if (!r->grace) {
		/* The remote broker had the same deadline: give its
		 * answer one heartbeat to arrive. */
		r->grace = 1;
		if (loop_timer_set(b->loop, &r->timer, loop_now_ms() +
		    b->lim.heartbeat_ms) == 0)
			return;
	}
	b->n.err_timeout++;
	if (r->conn != NULL && r->conn->state != CONN_DEAD)
		conn_reply_error(r->conn, r->req_id, ETIMEDOUT, 0,
		    "no answer from the remote broker in time; the message "
		    "may still be delivered");
	/* It stays in flight: its answer, when it comes, is counted. */
	lreq_unhook(r);
}

void
link_pump(struct link *l)
{
	struct broker *b = l->b;

	while (l->state == WIRE_LINK_UP && l->unsent.head != NULL &&
	    !conn_out_full(l->conn)) {
		struct lreq *r = l->unsent.head;
		struct wire_frame f = { .type = WIRE_LINK_SEND };
		struct wire_link_send *s = &f.b.link_send;
		int64_t now = loop_now_ms();

		/* The peer remembers the answers of the last LINK_WINDOW
		 * numbers: no number goes out that far past the oldest
		 * one still unanswered. */
		if (r->seq == 0 && l->in_flight.head != NULL &&
		    l->next_seq + 1 - l->in_flight.head->seq >= LINK_WINDOW)
			break;
		l->unsent.head = r->next;
		if (l->unsent.head == NULL)
			l->unsent.tail = NULL;
		l->unsent.count--;
		if (r->msg->len > l->max_payload) {
			/* It would make the peer drop the link, again and
			 * again: refuse it here. */
			b->n.err_msgsize++;
			lreq_answer(b, r, wire_code(EMSGSIZE), "message over "
			    "the remote broker's size limit");
			continue;
		}
		if (r->seq == 0)
			r->seq = ++l->next_seq;
		r->in_flight = 1;
		lq_push(&l->in_flight, r);
		f.id = r->seq;
		/* The remote broker waits for room no longer than the
		 * sender does; an async sender is not waiting at all. */
		if (!r->blocking)
			s->timeout_ms = 0;
		else if (r->deadline_ms == 0)
			s->timeout_ms = WIRE_FOREVER;
		else
			s->timeout_ms = r->deadline_ms > now ?
			    (uint32_t)(r->deadline_ms - now) : 0;
		s->pid = r->msg->pid;
		s->uid = r->msg->uid;
		s->gid = r->msg->gid;
		s->dest = wire_str(r->dest);
		s->payload.p = r->msg->data;
		s->payload.len = r->msg->len;
		conn_push(l->conn, &f);
		b->n.link_msgs_out++;
	}
}

void
link_send(struct broker *b, struct conn *c, uint64_t req_id,
    const struct ipc_addr *a, struct msg *msg, uint32_t timeout_ms)
{
	int async = (msg->flags & MSG_ASYNC) != 0;
	struct link *l;
	struct lreq *r;
	char why[LINK_NAME_MAX + 256];

	if (b->tls_client == NULL) {
		conn_reply_error(c, req_id, ENOTSUP, 0, "this broker has no "
		    "TLS key or certificate for other hosts (ipcd --psk or "
		    "--cert)");
		goto drop;
	}
	if ((l = link_get(b, a)) == NULL) {
		conn_reply_error(c, req_id, ENOMEM, 0, "out of memory");
		goto drop;
	}
	if (l->unsent.count + l->in_flight.count >= b->lim.link_queue ||
	    msg->len > b->lim.link_queue_bytes - (l->bytes <
	    b->lim.link_queue_bytes ? l->bytes : b->lim.link_queue_bytes)) {
		b->n.err_full++;
		snprintf(why, sizeof(why), "the queue to %s is full (%u "
		    "messages or %llu bytes)", l->name, b->lim.link_queue,
		    (unsigned long long)b->lim.link_queue_bytes);
		conn_reply_error(c, req_id, EAGAIN, 0, why);
		goto drop;
	}
	if (!async && timeout_ms == 0 && l->state != WIRE_LINK_UP) {
		b->n.err_full++;
		snprintf(why, sizeof(why), "the link to %s is not up",
		    l->name);
		conn_reply_error(c, req_id, EAGAIN, 0, why);
		if (l->state == WIRE_LINK_DOWN &&
		    l->retry.slot == SIZE_MAX)
			link_connect(l);
		goto drop;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		conn_reply_error(c, req_id, ENOMEM, 0, "out of memory");
		goto drop;
	}
	r->link = l;
	r->msg = msg;
	r->req_id = req_id;
	r->blocking = !async;
	if (a->kind == IPC_ADDR_PID)
		snprintf(r->dest, sizeof(r->dest), "pid:%d", (int)a->pid);
	else
		snprintf(r->dest, sizeof(r->dest), "%s", a->name);
	loop_timer_init(&r->timer, lreq_expired, r);
	if (r->blocking && timeout_ms != WIRE_FOREVER) {
		r->deadline_ms = loop_now_ms() + timeout_ms;
		if (loop_timer_set(b->loop, &r->timer, r->deadline_ms) < 0) {
			conn_reply_error(c, req_id, ENOMEM, 0,
			    "out of memory");
			free(r);
			goto drop;
		}
	}
	r->conn = c;
	r->cnext = c->lreqs;
	if (c->lreqs)
		c->lreqs->cprev = r;
	c->lreqs = r;
	if (r->blocking)
		c->nwaits++;
	lq_push(&l->unsent, r);
	l->bytes += msg->len;
	if (l->state == WIRE_LINK_DOWN && l->retry.slot == SIZE_MAX)
		link_connect(l);
	link_pump(l);
	return;
drop:
	msg_free(msg);
}

void
link_conn_gone(struct broker *b, struct conn *c)
{
	while (c->lreqs != NULL) {
		struct lreq *r = c->lreqs;

		/* A blocking sender that leaves takes back what was not
		 * sent yet, as with a local parked send; what was sent,
		 * and what an async sender handed over, goes on. */
		if (r->blocking && r->seq == 0) {
			lq_remove(&r->link->unsent, r);
			lreq_free(b, r);
		} else {
			lreq_unhook(r);
		}
	}
}

static void
link_ping_due(struct loop_timer *t)
{
	struct link *l = t->data;
	struct broker *b = l->b;
	struct wire_frame f = { .type = WIRE_PING };
	int64_t now = loop_now_ms();

	if (l->state != WIRE_LINK_UP || l->conn == NULL)
		return;
	if (now - l->conn->last_rx_ms >=
	    (int64_t)LINK_MISSED * b->lim.heartbeat_ms) {
		char why[160];

		snprintf(why, sizeof(why), "no answer for %lld ms",
		    (long long)(now - l->conn->last_rx_ms));
		log_warn("link %s: %s; reconnecting", l->name, why);
		link_set_error(l, why);
		conn_close(l->conn);
		return;
	}
	f.b.ping.stamp_ns = broker_wall_ns();
	conn_push(l->conn, &f);
	loop_timer_set(b->loop, &l->ping, now + b->lim.heartbeat_ms);
}

void
link_conn_up(struct conn *c)
{
	struct link *l = c->link;
	struct wire_frame f = { .type = WIRE_LINK_HELLO, .id = 1 };

	snprintf(l->identity, sizeof(l->identity), "%s", conn_peer(c));
	f.b.link_hello.magic = WIRE_MAGIC;
	f.b.link_hello.version_min = WIRE_VERSION;
	f.b.link_hello.version_max = WIRE_VERSION;
	f.b.link_hello.epoch = l->epoch;
	f.b.link_hello.heartbeat_ms = l->b->lim.heartbeat_ms;
	f.b.link_hello.name = wire_str(l->b->name);
	conn_push(c, &f);
}

void
link_conn_closed(struct conn *c, const char *why)
{
	struct link *l = c->link;

	if (l == NULL)
		return;
	c->link = NULL;
	l->conn = NULL;
	loop_timer_del(l->b->loop, &l->ping);
	/* (A reason set just before closing is kept.) */
	if (why != NULL)
		link_set_error(l, why);
	else if (l->state == WIRE_LINK_UP && l->last_error[0] == '\0')
		link_set_error(l, "connection closed");
	if (l->state == WIRE_LINK_UP) {
		l->reconnects++;
		l->backoff_ms = LINK_BACKOFF_MIN_MS;
		log_info("link %s: down (%s)", l->name, l->last_error);
	}
	/* What was in flight goes out again first, in its order. */
	if (l->in_flight.head != NULL) {
		for (struct lreq *r = l->in_flight.head; r; r = r->next)
			r->in_flight = 0;
		l->in_flight.tail->next = l->unsent.head;
		if (l->unsent.head == NULL)
			l->unsent.tail = l->in_flight.tail;
		l->unsent.head = l->in_flight.head;
		l->unsent.count += l->in_flight.count;
		l->in_flight = (struct lq){ NULL, NULL, 0 };
	}
	if (l->b->stopping)
		return;
	/* A connection that never came up: the host's next address, if
	 * it has one; else (and after an established link) wait. */
	if (l->state == WIRE_LINK_CONNECTING && l->next_addr < l->naddrs) {
		link_try_next(l);
		return;
	}
	link_schedule_retry(l);
}

static struct lreq *
link_find_seq(struct link *l, uint64_t seq)
{
	/* Answers mostly come in order: the head first. */
	for (struct lreq *r = l->in_flight.head; r != NULL; r = r->next)
		if (r->seq == seq)
			return r;
	return NULL;
}

void
link_on_frame(struct conn *c, const struct wire_frame *f)
{
	struct link *l = c->link;
	struct broker *b = c->b;
	struct lreq *r;
	char why[LINK_NAME_MAX + 256];

	if (l == NULL)
		return;
	switch (f->type) {
	case WIRE_WELCOME:
		if (c->state != CONN_HELLO)
			break;
		c->state = CONN_READY;
		loop_timer_del(b->loop, &c->hello_timer);
		l->state = WIRE_LINK_UP;
		l->max_payload = f->b.welcome.max_payload;
		l->backoff_ms = LINK_BACKOFF_MIN_MS;
		l->last_error[0] = '\0';
		log_info("link %s: up (peer %s)", l->name, l->identity);
		loop_timer_set(b->loop, &l->ping, loop_now_ms() +
		    b->lim.heartbeat_ms);
		link_pump(l);
		return;
	case WIRE_SENT:
	case WIRE_ERROR:
		if (c->state != CONN_READY) {
			/* Refused before the link came up. */
			if (f->type == WIRE_ERROR) {
				snprintf(why, sizeof(why), "refused: %.*s",
				    (int)f->b.error.text.len,
				    (const char *)f->b.error.text.p);
				link_set_error(l, why);
				log_warn("link %s: %s", l->name, why);
				conn_close(c);
				return;
			}
			break;
		}
		/* Every message sent on this conn stays in flight until
		 * answered (its sender may have gone): an answer to none
		 * of them means the peer is confused. */
		if ((r = link_find_seq(l, f->id)) == NULL)
			break;
		lq_remove(&l->in_flight, r);
		if (f->type == WIRE_SENT) {
			lreq_answer(b, r, 0, NULL);
		} else {
			snprintf(why, sizeof(why), "%s: %.*s", l->name,
			    (int)f->b.error.text.len,
			    (const char *)f->b.error.text.p);
			lreq_answer(b, r, f->b.error.code ? f->b.error.code :
			    WIRE_E_PROTO, why);
		}
		link_pump(l);
		return;
	case WIRE_PONG: {
		uint64_t now = broker_wall_ns();

		if (f->b.ping.stamp_ns <= now)
			l->rtt_us = (now - f->b.ping.stamp_ns) / 1000;
		return;
	}
	case WIRE_BYE:
		snprintf(why, sizeof(why), "the peer closed: %.*s",
		    (int)f->b.bye.text.len, (const char *)f->b.bye.text.p);
		link_set_error(l, why);
		conn_close(c);
		return;
	default:
		break;
	}
	snprintf(why, sizeof(why), "unexpected %s frame from the peer",
	    wire_type_name(f->type));
	link_set_error(l, why);
	log_warn("link %s: %s; reconnecting", l->name, why);
	b->n.err_proto++;
	conn_close(c);
}

/* --- peers: brokers that link to us ------------------------------------- */

struct peer *
peer_get(struct broker *b, const char *identity, const char *name,
    uint64_t epoch)
{
	struct peer *p, **pp, **oldest = NULL;

	for (p = b->peers; p != NULL; p = p->next)
		if (p->epoch == epoch && strcmp(p->name, name) == 0 &&
		    strcmp(p->identity, identity) == 0)
			return p;
	if (b->npeers >= PEERS_MAX) {
		/* Forget the broker not heard from longest (and not
		 * linked now): a restarted broker has a new epoch, so an
		 * old entry is only kept for a link that may come back. */
		for (pp = &b->peers; *pp != NULL; pp = &(*pp)->next)
			if ((*pp)->conn == NULL && (oldest == NULL ||
			    (*pp)->last_seen_ms < (*oldest)->last_seen_ms))
				oldest = pp;
		if (oldest == NULL)
			return NULL;
		p = *oldest;
		*oldest = p->next;
		free(p);
		b->npeers--;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->b = b;
	snprintf(p->identity, sizeof(p->identity), "%s", identity);
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->epoch = epoch;
	p->last_seen_ms = loop_now_ms();
	p->next = b->peers;
	b->peers = p;
	b->npeers++;
	return p;
}

int
peer_check(struct peer *p, uint64_t seq, uint32_t *code, uint64_t *msg_id)
{
	struct peer_slot *s = &p->ring[seq % LINK_WINDOW];

	p->last_seen_ms = loop_now_ms();
	if (s->seq == seq && s->state == 2) {
		*code = s->code;
		*msg_id = s->msg_id;
		return 1;
	}
	if (s->seq == seq && s->state == 1)
		return -1;
	*s = (struct peer_slot){ .seq = seq, .state = 1 };
	p->msgs_in++;
	return 0;
}

void
peer_record(struct peer *p, uint64_t seq, uint32_t code, uint64_t msg_id)
{
	struct peer_slot *s = &p->ring[seq % LINK_WINDOW];

	if (s->seq == seq && s->state == 1) {
		s->state = 2;
		s->code = code;
		s->msg_id = msg_id;
	}
}

void
peer_detach(struct peer *p, struct conn *c)
{
	if (p->conn != c)
		return;
	p->conn = NULL;
	p->last_seen_ms = loop_now_ms();
	/* What was parked is not accepted: sent again, it is new. */
	for (size_t i = 0; i < LINK_WINDOW; i++)
		if (p->ring[i].state == 1)
			p->ring[i].state = 0;
}

struct conn *
peer_conn(const struct peer *p)
{
	return p->conn;
}

void
peer_attach(struct peer *p, struct conn *c)
{
	p->conn = c;
	p->last_seen_ms = loop_now_ms();
}

const char *
peer_name(const struct peer *p)
{
	return p->name;
}

/* --- introspection and shutdown ----------------------------------------- */

void
link_list(struct broker *b, struct conn *c, uint64_t req_id)
{
	struct wire_frame f = { .type = WIRE_LINK_INFO, .id = req_id };
	struct wire_link_info *i = &f.b.link;

	for (struct link *l = b->links; l != NULL; l = l->next) {
		*i = (struct wire_link_info){ .direction = WIRE_LINK_OUT,
		    .state = l->state, .queued = l->unsent.count,
		    .in_flight = l->in_flight.count, .msgs_out = l->msgs_out,
		    .failed = l->failed, .reconnects = l->reconnects,
		    .rtt_us = l->rtt_us, .peer = wire_str(l->name),
		    .identity = wire_str(l->identity),
		    .last_error = wire_str(l->last_error) };
		conn_push(c, &f);
	}
	for (struct peer *p = b->peers; p != NULL; p = p->next) {
		*i = (struct wire_link_info){ .direction = WIRE_LINK_IN,
		    .state = p->conn ? WIRE_LINK_UP : WIRE_LINK_DOWN,
		    .msgs_in = p->msgs_in, .peer = wire_str(p->name),
		    .identity = wire_str(p->identity) };
		conn_push(c, &f);
	}
	f = (struct wire_frame){ .type = WIRE_OK, .id = req_id };
	conn_push(c, &f);
}

void
link_free_all(struct broker *b)
{
	/* Lookups still running find no reader and free themselves; the
	 * write end stays for them until the process ends. */
	if (b->resolve_fd[0] >= 0) {
		loop_watch_del(b->loop, &b->resolve_watch);
		close(b->resolve_fd[0]);
		b->resolve_fd[0] = -1;
	}
	while (b->links != NULL) {
		struct link *l = b->links;

		b->links = l->next;
		loop_timer_del(b->loop, &l->retry);
		loop_timer_del(b->loop, &l->ping);
		while (l->unsent.head != NULL) {
			struct lreq *r = l->unsent.head;

			l->unsent.head = r->next;
			lreq_answer(b, r, WIRE_E_SHUTDOWN,
			    "the broker is stopping");
		}
		while (l->in_flight.head != NULL) {
			struct lreq *r = l->in_flight.head;

			l->in_flight.head = r->next;
			lreq_answer(b, r, WIRE_E_SHUTDOWN,
			    "the broker stopped before the remote broker "
			    "answered");
		}
		free(l);
	}
	while (b->peers != NULL) {
		struct peer *p = b->peers;

		b->peers = p->next;
		free(p);
	}
	b->npeers = 0;
}
