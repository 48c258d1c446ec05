/*
 * conn.c - client connections: accepting, reading frames, answering them,
 * writing replies, and closing.
 *
 * Bounds (a client that misbehaves cannot make the broker grow):
 *   - input: one frame at a time, its length checked against the limit
 *     before the buffer grows to hold it;
 *   - parked requests: CONN_WAITS_MAX; past that the conn is not read
 *     until one finishes;
 *   - output: past CONN_OUT_HIGH the conn is not read until it drains,
 *     so replies are bounded by what its parked requests can bring.
 */
#include "config.h"

#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "journal.h"
#include "log.h"
#include "mysocks.h"
#include "tls.h"

/* Parked requests per connection.  The library parks at most two (a call
 * and an armed receive); 16 leaves room for pipelining clients.  Picked,
 * not measured. */
#define CONN_WAITS_MAX 16
/* Stop reading a client whose unwritten replies pass this.  Picked. */
#define CONN_OUT_HIGH (1u << 20)
/* A receive stream takes no more while its conn's unwritten output is
 * past this; it goes on once the socket took it.  Picked: 256 KiB keeps
 * a fast reader fed and bounds what a slow one costs. */
#define CONN_STREAM_HIGH (256u << 10)
/* Receive streams one connection may have open.  Picked: the library
 * opens one per mailbox it receives from. */
#define CONN_STREAMS_MAX 64
/* Bytes read per read() call, and per conn per loop round. */
#define CONN_READ_CHUNK (64u << 10)
#define CONN_READ_BUDGET (1u << 20)
/* Buffers larger than this are freed when empty.  Picked. */
#define CONN_KEEP_BUF (256u << 10)

static void conn_on_io(struct loop_watch *w, uint32_t events);
static void conn_process(struct conn *c);
static void conn_read(struct conn *c);
static void conn_want_flush(struct conn *c);

/* Not read now: too many parked requests or unwritten replies.  Our
 * side of a link is always read: what comes is answers, bounded by the
 * window, and they are what lets it send more. */
static int
conn_throttled(const struct conn *c)
{
	if (c->kind == CONN_LINK_OUT)
		return c->closing;
	/* A link parks up to a window of sends (its peer sends no more):
	 * held back at 16 like a client, its PINGs would go unread and a
	 * full mailbox would take the link down. */
	if (c->kind == CONN_LINK_IN)
		return c->closing || c->nwaits >= 2 * LINK_WINDOW ||
		    c->out_len - c->out_off >= CONN_OUT_HIGH;
	return c->closing || c->nwaits >= CONN_WAITS_MAX ||
	    c->out_len - c->out_off >= CONN_OUT_HIGH;
}

uint64_t
broker_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Before its handshake a connection may send only HELLO or LINK_HELLO,
 * small frames: a stranger never gets to hold a message-sized buffer. */
static uint32_t
conn_max_frame(const struct conn *c)
{
	if (c->state != CONN_READY)
		return WIRE_OVERHEAD_MAX;
	return c->b->lim.max_payload + WIRE_OVERHEAD_MAX;
}

static void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	tls_free(c->tls);
	free(c->in);
	free(c->out);
	while (c->nfdq > 0)
		close(c->fdq[--c->nfdq]);
	while (c->noutfds > 0)
		close(c->outfds[--c->noutfds].fd);
	free(c->outfds);
	free(c);
}

static void
conn_hello_expired(struct loop_timer *t)
{
	struct conn *c = t->data;
	int64_t idle;

	if (c->state == CONN_READY) {
		/* A link from another broker: it pings every heartbeat;
		 * one silent for LINK_MISSED of them is dead (or
		 * half-open: the peer is gone and TCP has not noticed). */
		idle = loop_now_ms() - c->last_rx_ms;
		if (idle < (int64_t)c->silence_ms) {
			loop_timer_set(c->b->loop, &c->hello_timer,
			    c->last_rx_ms + c->silence_ms);
			return;
		}
		log_warn("link from %s: silent for %lld ms; closing",
		    c->addr, (long long)idle);
		conn_close(c);
		return;
	}
	if (c->kind != CONN_LOCAL) {
		log_info("%s %s: no handshake in %u ms, closing",
		    c->kind == CONN_LINK_OUT ? "link to" : "tcp conn from",
		    c->addr, c->b->lim.hello_timeout_ms);
		if (c->link != NULL)
			link_conn_closed(c, "no handshake in time");
		if (c->state == CONN_TLS) {
			/* A peer that never finishes TLS is refused too. */
			c->b->n.tls_refused++;
			conn_close(c);
			return;
		}
	} else {
		log_info("conn %llu (pid %d): no handshake in %u ms, closing",
		    (unsigned long long)c->id, (int)c->cred.pid,
		    c->b->lim.hello_timeout_ms);
	}
	conn_reply_error(c, 0, ETIMEDOUT, 0, "no HELLO in time");
	c->closing = 1;
}

static void
conn_read_more(struct loop_timer *t)
{
	struct conn *c = t->data;

	if (c->state == CONN_READY && !conn_throttled(c))
		conn_read(c);
	if (c->state != CONN_DEAD)
		conn_want_flush(c);
}

static void
conn_read_comm(struct conn *c)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)c->cred.pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	n = read(fd, c->comm, sizeof(c->comm) - 1);
	close(fd);
	if (n > 0 && c->comm[n - 1] == '\n')
		n--;
	c->comm[n > 0 ? n : 0] = '\0';
}

/* The textual address of a TCP peer, for logs and per-address limits. */
static void
conn_peer_addr(int fd, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			port = ntohs(in->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &in6->sin6_addr, host,
			    sizeof(host));
			port = ntohs(in6->sin6_port);
		}
	}
	snprintf(buf, size, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
	    port);
}

/* TCP: small frames leave at once, and a peer that stops acknowledging
 * what we sent is given up on after LINK_MISSED heartbeats. */
static void
conn_tcp_options(struct broker *b, int fd)
{
	unsigned timeout = 3 * b->lim.heartbeat_ms;
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout,
	    sizeof(timeout));
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

/* The handshaking list: connections that have not said HELLO (or
 * finished TLS), oldest first.  A flood of half-handshakes pushes the
 * oldest out instead of locking everyone out: a client that completes
 * its handshake at once always gets in. */
static void
conn_hs_add(struct conn *c)
{
	struct broker *b = c->b;

	c->handshaking = 1;
	c->hs_next = NULL;
	c->hs_prev = b->hs_tail;
	if (b->hs_tail != NULL)
		b->hs_tail->hs_next = c;
	else
		b->hs_head = c;
	b->hs_tail = c;
	b->nhandshaking++;
}

static void
conn_hs_del(struct conn *c)
{
	struct broker *b = c->b;

	if (!c->handshaking)
		return;
	c->handshaking = 0;
	if (c->hs_prev != NULL)
		c->hs_prev->hs_next = c->hs_next;
	else
		b->hs_head = c->hs_next;
	if (c->hs_next != NULL)
		c->hs_next->hs_prev = c->hs_prev;
	else
		b->hs_tail = c->hs_prev;
	c->hs_next = c->hs_prev = NULL;
	b->nhandshaking--;
}

/* Who authenticated at the other end of a TCP connection: TLS says, or
 * the harness that adopted it (conn_adopt). */
const char *
conn_peer(const struct conn *c)
{
	return c->tls != NULL ? tls_peer(c->tls) : c->identity;
}

/* A conn on fd (made non-blocking); NULL when refused (fd closed).  A
 * TCP conn with an identity starts past TLS, as if authenticated as it. */
static struct conn *
conn_new(struct broker *b, int fd, enum conn_kind kind, const char *identity)
{
	socklen_t len = sizeof(struct ucred);
	struct conn *c;
	int r;

	if (b->nconns >= b->lim.max_connections) {
		log_warn("connection refused: %u connections, the limit",
		    b->nconns);
		b->n.err_refused++;
		closeSocket(fd);
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		closeSocket(fd);
		return NULL;
	}
	c->kind = kind;
	c->frame_fd = -1;
	if (kind == CONN_LOCAL) {
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred,
		    &len) < 0) {
			log_warn("connection dropped: %s", strerror(errno));
			closeSocket(fd);
			free(c);
			return NULL;
		}
		c->state = CONN_HELLO;
	} else {
		conn_peer_addr(fd, c->addr, sizeof(c->addr));
		conn_tcp_options(b, fd);
		c->cred = (struct ucred){ .pid = 0, .uid = b->remote_uid,
		    .gid = b->remote_gid };
		c->state = CONN_TLS;
		c->identity = identity;
		if (identity != NULL)
			c->state = CONN_HELLO;
		else
			c->tls = tls_new(kind == CONN_LINK_OUT ? b->tls_client :
		    b->tls_server, fd);
		if (c->tls == NULL && identity == NULL) {
			closeSocket(fd);
			free(c);
			return NULL;
		}
	}
	if (nonblockSocket(fd, 1) < 0) {
		log_warn("connection dropped: %s", strerror(errno));
		closeSocket(fd);
		conn_free(c);
		return NULL;
	}
	c->b = b;
	c->id = ++b->next_conn_id;
	c->watch.fd = fd;
	c->watch.cb = conn_on_io;
	c->watch.data = c;
	c->connected_ns = broker_wall_ns();
	c->last_rx_ms = loop_now_ms();
	if (kind == CONN_LOCAL)
		conn_read_comm(c);
	else
		snprintf(c->comm, sizeof(c->comm), "%s",
		    kind == CONN_LINK_OUT ? "(link)" : "(tcp)");
	loop_timer_init(&c->hello_timer, conn_hello_expired, c);
	loop_timer_init(&c->more_timer, conn_read_more, c);
	/* Our side of a link waits for its connect to finish: writable. */
	if ((r = loop_watch_add(b->loop, &c->watch, kind == CONN_LINK_OUT ?
	    EPOLLOUT : EPOLLIN)) < 0 ||
	    (r = loop_timer_set(b->loop, &c->hello_timer,
	    loop_now_ms() + b->lim.hello_timeout_ms)) < 0) {
		log_warn("connection dropped: %s", strerror(-r));
		loop_watch_del(b->loop, &c->watch);
		closeSocket(fd);
		conn_free(c);
		return NULL;
	}
	c->connecting = kind == CONN_LINK_OUT;
	c->next = b->conns;
	if (b->conns)
		b->conns->prev = c;
	b->conns = c;
	b->nconns++;
	b->n.conns_total++;
	/* Our own links are not strangers: only accepted ones count. */
	if (kind != CONN_LINK_OUT) {
		conn_hs_add(c);
		while (b->lim.max_handshakes != 0 &&
		    b->nhandshaking > b->lim.max_handshakes &&
		    b->hs_head != c) {
			struct conn *old = b->hs_head;

			/* Its HELLO may be in its socket, unread (it was
			 * accepted in this same round, say): a client that
			 * says HELLO at once is not dropped for silence. */
			if (old->kind == CONN_LOCAL && old->state ==
			    CONN_HELLO && !old->closing) {
				conn_read(old);
				if (!old->handshaking)
					continue;
			}
			b->n.handshakes_evicted++;
			log_info("conn %llu (%s): dropped, still in its "
			    "handshake with %u others waiting",
			    (unsigned long long)old->id, old->kind ==
			    CONN_LOCAL ? "local" : old->addr,
			    b->lim.max_handshakes);
			conn_close(old);
		}
	}
	if (kind == CONN_LOCAL)
		log_debug("conn %llu: pid %d uid %u (%s) connected",
		    (unsigned long long)c->id, (int)c->cred.pid,
		    (unsigned)c->cred.uid, c->comm);
	else
		log_debug("conn %llu: tcp %s %s", (unsigned long long)c->id,
		    kind == CONN_LINK_OUT ? "to" : "from", c->addr);
	return c;
}

struct conn *
conn_adopt(struct broker *b, int fd, enum conn_kind kind, const char *identity)
{
	return conn_new(b, fd, kind, kind == CONN_LOCAL ? NULL : identity);
}

struct conn *
conn_new_link(struct broker *b, struct link *l, int fd)
{
	struct conn *c = conn_new(b, fd, CONN_LINK_OUT, NULL);

	if (c != NULL)
		c->link = l;
	return c;
}

/* How many TCP conns come from the host of addr ("host:port"). */
static uint32_t
conn_count_addr(const struct broker *b, const char *addr)
{
	size_t hlen = strrchr(addr, ':') ? (size_t)(strrchr(addr, ':') -
	    addr) : strlen(addr);
	uint32_t n = 0;

	for (const struct conn *c = b->conns; c != NULL; c = c->next)
		if (c->kind != CONN_LOCAL && c->kind != CONN_LINK_OUT &&
		    strncmp(c->addr, addr, hlen) == 0 &&
		    c->addr[hlen] == ':')
			n++;
	return n;
}

/* Watch the listening sockets again. */
static void
conn_accept_unpause(struct broker *b)
{
	b->accept_paused = 0;
	loop_watch_mod(b->loop, &b->listen_watch, EPOLLIN);
	if (b->tcp_fd >= 0)
		loop_watch_mod(b->loop, &b->tcp_watch, EPOLLIN);
}

/* accept() failed.  For want of a resource (descriptors, memory) or for
 * a reason we do not know, the listening sockets stay readable, so
 * watching them would spin: they are unwatched until a connection
 * closes or 100 ms pass; meanwhile the kernel keeps new connections in
 * the backlog.  Returns 1 when the next connection may be tried now. */
static int
conn_accept_failed(struct broker *b, const char *what)
{
	int err = errno;

	if (err == EAGAIN || err == EWOULDBLOCK)
		return 0;
	if (err == ECONNABORTED || err == EPROTO || err == EPERM ||
	    err == EINTR || err == ENETDOWN || err == ENOPROTOOPT ||
	    err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
	    err == ENETUNREACH) {
		/* That one connection failed: take the next. */
		log_info("accept%s: %s", what, strerror(err));
		return 1;
	}
	/* Out of descriptors while strangers hold some without a word
	 * (accepted in an earlier round, so a client whose HELLO is on its
	 * way is never dropped unread): the oldest gives its up. */
	if ((err == EMFILE || err == ENFILE) && b->hs_head != NULL &&
	    b->hs_head->id < b->accept_round_id) {
		b->n.handshakes_evicted++;
		log_info("conn %llu: dropped, still in its handshake while "
		    "descriptors ran out", (unsigned long long)b->hs_head->id);
		conn_close(b->hs_head);
		return 1;
	}
	if (loop_timer_set(b->loop, &b->accept_timer, loop_now_ms() +
	    100) < 0) {
		/* No timer, no pause: better to spin than to stop
		 * accepting for good. */
		conn_accept_unpause(b);
		return 0;
	}
	if (!b->accept_paused) {
		int64_t now = loop_now_ms();

		b->accept_paused = 1;
		b->n.accept_paused++;
		/* Said once a minute at most: it may go on for long. */
		if (b->accept_logged_ms == 0 ||
		    now - b->accept_logged_ms >= 60000) {
			b->accept_logged_ms = now;
			log_warn("accept%s: %s; not accepting for 100 ms or "
			    "until a connection closes (ipcctl stats: "
			    "accept_paused)", what, strerror(err));
		}
		loop_watch_mod(b->loop, &b->listen_watch, 0);
		if (b->tcp_fd >= 0)
			loop_watch_mod(b->loop, &b->tcp_watch, 0);
	}
	return 0;
}

void
conn_accept_resume(struct loop_timer *t)
{
	struct broker *b = t->data;

	if (!b->accept_paused)
		return;
	conn_accept_unpause(b);
	conn_accept_all(b);
	if (b->tcp_fd >= 0 && !b->accept_paused)
		conn_accept_tcp(b);
}

void
conn_accept_tcp(struct broker *b)
{
	b->accept_round_id = b->next_conn_id + 1;
	while (!b->accept_paused) {
		int fd = acceptServerSocket(b->tcp_fd);
		char addr[64];

		if (fd < 0) {
			if (conn_accept_failed(b, " (tcp)"))
				continue;
			return;
		}
		conn_peer_addr(fd, addr, sizeof(addr));
		if (conn_count_addr(b, addr) >= b->lim.max_conns_per_addr) {
			log_warn("tcp connection from %s refused: %u from "
			    "that address, the limit", addr,
			    b->lim.max_conns_per_addr);
			b->n.err_refused++;
			closeSocket(fd);
			continue;
		}
		conn_new(b, fd, CONN_TCP, NULL);
	}
}

void
conn_accept_all(struct broker *b)
{
	b->accept_round_id = b->next_conn_id + 1;
	while (!b->accept_paused) {
		int fd = acceptServerSocket(b->listen_fd);

		if (fd < 0) {
			if (conn_accept_failed(b, ""))
				continue;
			return;
		}
		conn_new(b, fd, CONN_LOCAL, NULL);
	}
}

/* Put c's unacknowledged messages back, all of them before any waiting
 * receiver is served, so that receiver gets the oldest: the mailboxes
 * they went back to are listed (through the mailbox itself, so nothing
 * is allocated) and fed at the end. */
static void
conn_requeue_unacked(struct conn *c)
{
	struct mbox *homes = NULL, *m;
	struct msg *newest = NULL;

	/* The list is oldest first: turn it round. */
	while (c->unacked != NULL) {
		struct msg *msg = c->unacked;

		c->unacked = msg->next;
		msg->next = newest;
		newest = msg;
	}
	c->unacked_tail = NULL;
	while (newest != NULL) {
		struct msg *msg = newest;

		newest = msg->next;
		msg->next = NULL;
		c->nunacked--;
		if ((m = mbox_requeue(c->b, msg)) == NULL || m->to_feed)
			continue;
		m->to_feed = 1;
		m->feed_next = homes;
		homes = m;
	}
	while ((m = homes) != NULL) {
		homes = m->feed_next;
		m->to_feed = 0;
		m->feed_next = NULL;
		mbox_feed_receivers(c->b, m);
	}
}

void
conn_close(struct conn *c)
{
	struct broker *b = c->b;

	if (c->state == CONN_DEAD)
		return;
	log_debug("conn %llu (pid %d): closed", (unsigned long long)c->id,
	    (int)c->cred.pid);
	while (c->waits != NULL)
		wait_cancel(b, c->waits);
	if (c->dwaits > 0)
		durable_conn_gone(b, c);
	if (c->monitor_id != 0) {
		struct conn **pp;

		for (pp = &b->monitors; *pp != NULL; pp = &(*pp)->mnext)
			if (*pp == c) {
				*pp = c->mnext;
				break;
			}
		c->monitor_id = 0;
	}
	if (c->state == CONN_READY && c->kind == CONN_LOCAL) {
		char who[32];

		snprintf(who, sizeof(who), "pid:%d", (int)c->cred.pid);
		conn_event(b, EV_DISCONNECT, (uint32_t)c->cred.pid,
		    c->cred.uid, NULL, who, 0, 0, 0);
	}
	link_conn_gone(b, c);
	if (c->peer != NULL) {
		log_info("link from %s (%s): closed", peer_name(c->peer),
		    c->addr);
		peer_detach(c->peer, c);
		c->peer = NULL;
	}
	conn_hs_del(c);
	if (c->quota != NULL) {
		c->quota->conns--;
		c->quota = NULL;
	}
	/* A descriptor is free again: accepting may resume at once (at
	 * the next round, not inside whatever callback closes c). */
	if (b->accept_paused && loop_timer_set(b->loop, &b->accept_timer,
	    loop_now_ms()) < 0)
		conn_accept_unpause(b);
	/* Dead from here on: nothing more is handed to it.  What it was
	 * handed but never acknowledged goes back, newest first, so the
	 * oldest ends at the head of its queue. */
	c->state = CONN_DEAD;
	conn_requeue_unacked(c);
	proc_detach(b, c);
	if (c->link != NULL)
		link_conn_closed(c, NULL);
	loop_timer_del(b->loop, &c->hello_timer);
	loop_timer_del(b->loop, &c->more_timer);
	loop_watch_del(b->loop, &c->watch);
	if (c->tls != NULL)
		tls_shutdown(c->tls);
	closeSocket(c->watch.fd);
	c->watch.fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		b->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	b->nconns--;
#ifdef __GLIBC__
	/* The last client gone: glibc keeps freed memory for reuse, and a
	 * table grown meanwhile can pin the top of the heap; hand back the
	 * free pages (those in the middle of the heap too), so that an
	 * idle broker's RSS is what it holds, not its high-water mark. */
	if (b->nconns == 0 && !b->stopping)
		malloc_trim(0);
#endif
	/* Freed in conn_flush_all(), once no callback of this round can
	 * still hold a pointer to it. */
	c->next = b->dead;
	b->dead = c;
}

/* --- output ------------------------------------------------------------- */

static void
conn_want_flush(struct conn *c)
{
	if (!c->want_flush) {
		c->want_flush = 1;
		c->flush_next = c->b->flushq;
		c->b->flushq = c;
	}
}

int
conn_out_full(const struct conn *c)
{
	return c->out_len - c->out_off >= CONN_OUT_HIGH;
}

int
conn_stream_full(const struct conn *c)
{
	return c->out_len - c->out_off >= CONN_STREAM_HIGH;
}

void
conn_push(struct conn *c, const struct wire_frame *f)
{
	size_t len = wire_encoded_len(f);

	if (c->state == CONN_DEAD)
		return;
	if (len == 0) {
		log_error("conn %llu: cannot encode a %s frame",
		    (unsigned long long)c->id, wire_type_name(f->type));
		return;
	}
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (len > c->out_cap - c->out_len) {
		size_t need = c->out_len - c->out_off + len, cap;
		uint8_t *p;

		/* Slide what is left to the front before growing. */
		if (c->out_off > 0) {
			memmove(c->out, c->out + c->out_off,
			    c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		if (need > c->out_cap) {
			/* Small at first: most connections only ever
			 * get short replies. */
			cap = c->out_cap ? c->out_cap : 512;
			while (cap < need)
				cap *= 2;
			if ((p = realloc(c->out, cap)) == NULL) {
				/* Closed at the next flush: we may be in
				 * the middle of a mailbox operation. */
				log_error("conn %llu: out of memory for a "
				    "reply of %zu bytes; closing",
				    (unsigned long long)c->id, len);
				c->closing = 1;
				conn_want_flush(c);
				return;
			}
			c->out = p;
			c->out_cap = cap;
		}
	}
	wire_encode_len(f, len, c->out + c->out_len, c->out_cap - c->out_len);
	c->out_len += len;
	conn_want_flush(c);
}

/* May monitor mc see what pid/uid did to m? */
static int
conn_may_see(const struct conn *mc, uint32_t uid, const struct mbox *m)
{
	if (mc->cred.uid == 0)
		return 1;
	if (m != NULL && m->owner == NULL)
		return mbox_may(m, &mc->cred, 4);
	return uid == mc->cred.uid;
}

void
conn_event_send(struct broker *b, enum broker_event kind, uint32_t pid,
    uint32_t uid, const struct mbox *m, const char *subject,
    uint64_t msg_id, uint64_t len, int err)
{
	struct wire_frame f = { .type = WIRE_EVENT };
	uint64_t now;

	if (b->monitors == NULL)
		return;
	now = broker_wall_ns();
	for (struct conn *mc = b->monitors; mc != NULL; mc = mc->mnext) {
		if (!conn_may_see(mc, uid, m))
			continue;
		/* Events never hold the broker back: a monitor that does
		 * not keep up loses them, and is told how many. */
		if (mc->out_len - mc->out_off >= CONN_OUT_HIGH) {
			mc->events_dropped++;
			b->n.events_dropped++;
			continue;
		}
		f.id = mc->monitor_id;
		if (mc->events_dropped > 0) {
			f.b.event = (struct wire_event){ .time_ns = now,
			    .kind = EV_DROPPED,
			    .msg_id = mc->events_dropped };
			conn_push(mc, &f);
			mc->events_dropped = 0;
		}
		f.b.event = (struct wire_event){ .time_ns = now,
		    .kind = kind, .pid = pid, .uid = uid,
		    .code = err ? wire_code(err) : 0, .msg_id = msg_id,
		    .len = len, .subject = wire_str(subject) };
		conn_push(mc, &f);
	}
}

void
conn_reply_error(struct conn *c, uint64_t req_id, int err, uint32_t aux,
    const char *text)
{
	struct wire_frame f = { .type = WIRE_ERROR, .id = req_id };

	conn_event(c->b, EV_ERROR, (uint32_t)c->cred.pid, c->cred.uid, NULL,
	    "", 0, 0, err);
	if (c->peer != NULL)
		peer_record(c->peer, req_id, wire_code(err), 0);

	f.b.error.code = wire_code(err);
	f.b.error.aux = aux;
	f.b.error.text = wire_str(text);
	conn_push(c, &f);
}

void
conn_reply_sent(struct conn *c, uint64_t req_id, const struct msg *msg)
{
	struct wire_frame f = { .type = WIRE_SENT, .id = req_id };

	if (msg->flags & MSG_ASYNC)
		return;
	if (c->peer != NULL)
		peer_record(c->peer, req_id, 0, msg->id);
	f.b.sent.msg_id = msg->id;
	conn_push(c, &f);
}

void
conn_report_failure(struct broker *b, const struct msg *msg, int err,
    const char *why)
{
	struct wire_frame f = { .type = WIRE_FAILED, .id = msg->sender_req };
	struct conn *c = proc_conn_by_id(b, (pid_t)msg->pid,
	    msg->sender_conn);

	/* A client of another host has no process here: found by its
	 * conn (rare: only failures get here). */
	if (c == NULL && msg->pid == 0 && msg->origin == NULL)
		for (c = b->conns; c != NULL; c = c->next)
			if (c->id == msg->sender_conn &&
			    c->kind == CONN_REMOTE_CLIENT)
				break;
	b->n.failures_reported++;
	if (c == NULL)
		return;		/* the sender is gone too */
	f.b.failed.msg_id = msg->id;
	f.b.failed.code = wire_code(err);
	f.b.failed.text = wire_str(why);
	conn_push(c, &f);
}

/* "pid:P" into buf (16 bytes suffice), without the cost of printf. */
static void
conn_format_pid(char *buf, uint32_t pid)
{
	char digits[10];
	int n = 0;

	do
		digits[n++] = (char)('0' + pid % 10);
	while ((pid /= 10) != 0);
	memcpy(buf, "pid:", 4);
	buf += 4;
	while (n > 0)
		*buf++ = digits[--n];
	*buf = '\0';
}

/* Queue fd (a dup of it) to go out with the frame about to be pushed.
 * 0 or -errno. */
static int
conn_push_fd(struct conn *c, int fd)
{
	struct conn_outfd *q = c->outfds;
	int d;

	if (c->noutfds == c->outfds_cap) {
		uint32_t cap = c->outfds_cap ? 2 * c->outfds_cap : 8;

		if ((q = realloc(c->outfds, cap * sizeof(*q))) == NULL)
			return -ENOMEM;
		c->outfds = q;
		c->outfds_cap = cap;
	}
	if ((d = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return -errno;
	q[c->noutfds].pos = c->out_abs + (c->out_len - c->out_off);
	q[c->noutfds].fd = d;
	c->noutfds++;
	return 0;
}

void
conn_reply_deliver(struct conn *c, uint64_t req_id, const struct mbox *m,
    const struct msg *msg, int may_pass_fd)
{
	struct wire_frame f = { .type = WIRE_DELIVER, .id = req_id };
	char sender[16 + LINK_NAME_MAX];
	uint8_t *copy = NULL;

	if (msg->pid != 0 && msg->origin != NULL)
		snprintf(sender, sizeof(sender), "pid:%u@%s", msg->pid,
		    msg->origin);
	else if (msg->pid != 0)
		conn_format_pid(sender, msg->pid);	/* every message */
	else
		sender[0] = '\0';	/* a remote client: no direct queue */
	f.b.deliver.msg_id = msg->id;
	f.b.deliver.enqueue_ns = msg->enqueue_ns;
	f.b.deliver.pid = msg->pid;
	f.b.deliver.uid = msg->uid;
	f.b.deliver.gid = msg->gid;
	f.b.deliver.flags = msg->flags & MSG_REDELIVERED;
	f.b.deliver.sender = wire_str(sender);
	/* Its length kept with it: this runs for every message. */
	f.b.deliver.source.p = (const uint8_t *)m->name;
	f.b.deliver.source.len = m->name_len;
	f.b.deliver.payload.p = msg->data;
	f.b.deliver.payload.len = msg->len;
	if (msg->fd >= 0 && may_pass_fd && c->kind == CONN_LOCAL &&
	    conn_push_fd(c, msg->fd) == 0) {
		/* The receiver maps or reads the memfd itself. */
		f.b.deliver.flags |= WIRE_DELIVER_FD;
		f.b.deliver.payload.len = 0;
	} else if (msg->fd >= 0) {
		/* A peek, a remote client, or no descriptor to spare: the
		 * bytes go inline. */
		size_t got = 0;

		if ((copy = malloc(msg->len ? msg->len : 1)) == NULL) {
			log_error("conn %llu: out of memory for a message of "
			    "%u bytes; closing", (unsigned long long)c->id,
			    msg->len);
			c->closing = 1;
			conn_want_flush(c);
			return;
		}
		while (got < msg->len) {
			ssize_t n = pread(msg->fd, copy + got, msg->len - got,
			    (off_t)got);

			if (n <= 0)
				break;
			got += (size_t)n;
		}
		if (got < msg->len) {
			log_error("conn %llu: cannot read message %llu's memfd",
			    (unsigned long long)c->id,
			    (unsigned long long)msg->id);
			free(copy);
			c->closing = 1;
			conn_want_flush(c);
			return;
		}
		f.b.deliver.payload.p = copy;
	}
	conn_push(c, &f);
	free(copy);
}

static void
conn_reply_ok(struct conn *c, uint64_t req_id)
{
	struct wire_frame f = { .type = WIRE_OK, .id = req_id };

	conn_push(c, &f);
}

static void
conn_reply_info(struct conn *c, uint64_t req_id, const struct mbox *m)
{
	struct wire_frame f = { .type = WIRE_MBOX_INFO, .id = req_id };

	mbox_info(m, &f.b.info);
	conn_push(c, &f);
}

/* c's peer is gone (a write to it failed): what it wrote before it
 * went (its last acknowledgements, sends its close flushed) is still in
 * the socket, and is taken first, as at its end of file.  The output it
 * will never read does not hold that input back. */
static void
conn_last_words(struct conn *c)
{
	int queued = 0, before;

	if (c->tls != NULL || c->kind != CONN_LOCAL ||
	    c->state != CONN_READY || c->b->stopping)
		return;
	while (ioctl(c->watch.fd, FIONREAD, &queued) == 0 && queued > 0) {
		before = queued;
		c->out_off = c->out_len;
		conn_read(c);
		if (c->state == CONN_DEAD || ioctl(c->watch.fd, FIONREAD,
		    &queued) < 0 || queued >= before)
			break;
	}
}

/* Write what the socket takes.  Returns 0, or -1 when c was closed. */
static int
conn_write(struct conn *c)
{
	if (c->state == CONN_TLS || c->connecting)
		return 0;	/* nothing goes out before the handshake */
	while (c->out_off < c->out_len) {
		size_t left = c->out_len - c->out_off;
		int want = 0, fd = -1;
		long n;

		/* A descriptor rides with its frame's first byte; bytes
		 * before it go without. */
		if (c->noutfds > 0) {
			if (c->outfds[0].pos == c->out_abs) {
				fd = c->outfds[0].fd;
				if (c->noutfds > 1)
					left = c->outfds[1].pos - c->out_abs;
			} else {
				left = c->outfds[0].pos - c->out_abs;
			}
		}
		if (left > INT32_MAX)
			left = INT32_MAX;
		n = c->tls != NULL ? tls_write(c->tls, c->out + c->out_off,
		    left, &want) : fd >= 0 ? writeSomeSocketFd(c->watch.fd,
		    c->out + c->out_off, (int)left, fd) :
		    writeSomeSocket(c->watch.fd, c->out + c->out_off,
		    (int)left);
		if (n > 0 && fd >= 0) {
			close(fd);
			memmove(c->outfds, c->outfds + 1,
			    (c->noutfds - 1) * sizeof(*c->outfds));
			c->noutfds--;
		}

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			log_debug("conn %llu: write: %s",
			    (unsigned long long)c->id, strerror(errno));
			conn_last_words(c);
			conn_close(c);
			return -1;
		}
		c->out_off += (size_t)n;
		c->out_abs += (uint64_t)n;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	return 0;
}

/* Ask epoll for what c needs now: input unless it is throttled or
 * closing, output while replies wait. */
static void
conn_update_events(struct conn *c)
{
	uint32_t ev = 0;

	if (c->connecting) {
		ev = EPOLLOUT;
	} else if (c->state == CONN_TLS) {
		ev = c->tls_want == POLLOUT ? EPOLLOUT : EPOLLIN;
	} else {
		if (!conn_throttled(c) && !c->rd_eof)
			ev |= EPOLLIN;
		if (c->out_len > c->out_off || c->tls_want_write)
			ev |= EPOLLOUT;
	}
	if (loop_watch_mod(c->b->loop, &c->watch, ev) < 0)
		conn_close(c);
}

/* Give back buffers that a large message grew, once they are empty, so
 * that an idle connection costs little whatever it sent before. */
static void
conn_trim(struct conn *c)
{
	if (c->in_len == 0 && c->in_cap > CONN_KEEP_BUF) {
		free(c->in);
		c->in = NULL;
		c->in_cap = 0;
	}
	if (c->out_len == 0 && c->out_cap > CONN_KEEP_BUF) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
}

void
conn_wait_done(struct conn *c)
{
	/* Not processed here: the caller is in the middle of a mailbox
	 * operation.  conn_flush_all() picks up buffered input. */
	conn_want_flush(c);
}

void
conn_flush_all(struct broker *b)
{
	struct conn *c, *dead;

	while ((c = b->flushq) != NULL) {
		b->flushq = c->flush_next;
		c->want_flush = 0;
		if (c->state == CONN_DEAD)
			continue;
		if (conn_write(c) < 0)
			continue;
		/* The error frame was written if the socket took it; a
		 * client that does not read is not waited for. */
		if (c->closing) {
			conn_close(c);
			continue;
		}
		conn_trim(c);
		/* Streams that stopped for lack of room take again. */
		if (c->streams_blocked && !conn_stream_full(c)) {
			struct wait *ws[CONN_STREAMS_MAX];
			unsigned n = 0;

			/* Listed first: a stream that takes may admit a
			 * parked sender of this same conn and free its
			 * wait; it frees no stream but itself. */
			c->streams_blocked = 0;
			for (struct wait *w = c->waits; w != NULL &&
			    n < CONN_STREAMS_MAX; w = w->cnext)
				if (w->stream)
					ws[n++] = w;
			for (unsigned i = 0; i < n; i++)
				mbox_stream_run(b, ws[i]);
		}
		/* Input held back while throttled may be processed now;
		 * it may queue more replies (and put c back on the
		 * list). */
		conn_process(c);
		if (c->rd_eof && c->state != CONN_DEAD && c->nwaits == 0 &&
		    c->dwaits == 0 && c->out_off == c->out_len) {
			conn_close(c);
			continue;
		}
		/* Bytes TLS decrypted already are not seen by epoll. */
		if (c->tls != NULL && c->state == CONN_READY &&
		    !conn_throttled(c) && tls_pending(c->tls))
			conn_read(c);
		if (c->link != NULL && c->state == CONN_READY)
			link_pump(c->link);
		if (c->state != CONN_DEAD)
			conn_update_events(c);
	}
	while ((dead = b->dead) != NULL) {
		b->dead = dead->next;
		conn_free(dead);
	}
}

void
conn_close_all(struct broker *b, const char *why)
{
	struct wire_frame f = { .type = WIRE_BYE };

	f.b.bye.code = WIRE_E_SHUTDOWN;
	f.b.bye.text = wire_str(why);
	while (b->conns != NULL) {
		struct conn *c = b->conns;

		conn_push(c, &f);
		conn_write(c);	/* best effort: the broker is going */
		conn_close(c);
	}
	conn_flush_all(b);
}

/* --- requests ----------------------------------------------------------- */

/* A protocol violation: say why if we can, then close. */
static void
conn_violation(struct conn *c, uint64_t req_id, int err, const char *why)
{
	c->b->n.err_proto++;
	log_info("conn %llu (pid %d): %s; closing",
	    (unsigned long long)c->id, (int)c->cred.pid, why);
	conn_reply_error(c, req_id, err, 0, why);
	c->closing = 1;
}

void
conn_map_uid(const struct broker *b, const char *identity, int64_t ruid,
    struct ucred *out)
{
	const struct uid_map *best = NULL;
	int best_score = -1;

	/* The most specific entry wins: identity and uid, then identity
	 * and any uid, then any identity and the uid, then any. */
	for (const struct uid_map *m = b->uid_map; m != NULL; m = m->next) {
		int id_any = strcmp(m->identity, "*") == 0;
		int score;

		if (!id_any && strcmp(m->identity, identity) != 0)
			continue;
		if (m->ruid != -1 && m->ruid != ruid)
			continue;
		score = (id_any ? 0 : 2) + (m->ruid == -1 ? 0 : 1);
		if (score > best_score) {
			best = m;
			best_score = score;
		}
	}
	out->uid = best ? best->uid : b->remote_uid;
	out->gid = best ? best->gid : b->remote_gid;
}

/* Another broker opens its link to us. */
static void
conn_on_link_hello(struct conn *c, const struct wire_frame *f)
{
	const struct wire_link_hello *h = &f->b.link_hello;
	struct wire_frame w = { .type = WIRE_WELCOME, .id = f->id };
	char name[LINK_NAME_MAX];
	struct peer *p;

	if (h->magic != WIRE_MAGIC || h->version_min > WIRE_VERSION ||
	    h->version_max < WIRE_VERSION) {
		conn_violation(c, f->id, EPROTO,
		    "bad magic or no protocol version in common");
		return;
	}
	if (h->name.len == 0 || wire_str_copy(h->name, name,
	    sizeof(name)) < 0) {
		conn_violation(c, f->id, EPROTO, "bad broker name");
		return;
	}
	if ((p = peer_get(c->b, conn_peer(c), name, h->epoch)) == NULL) {
		conn_violation(c, f->id, ENOMEM, "too many brokers");
		return;
	}
	/* A broker that reconnects while its old link still looks alive
	 * here (half-open): the old one is dead, and what it had parked
	 * will be sent again on this one. */
	if (peer_conn(p) != NULL) {
		log_info("link from %s: replaced by a new connection", name);
		conn_close(peer_conn(p));
	}
	peer_attach(p, c);
	c->peer = p;
	c->kind = CONN_LINK_IN;
	c->state = CONN_READY;
	conn_hs_del(c);
	c->last_rx_ms = loop_now_ms();
	/* The handshake timer now watches for silence, by the slower of
	 * the two heartbeats (the peer pings at its own). */
	c->silence_ms = LINK_MISSED * (h->heartbeat_ms >
	    c->b->lim.heartbeat_ms ? (h->heartbeat_ms > 600000 ? 600000 :
	    h->heartbeat_ms) : c->b->lim.heartbeat_ms);
	loop_timer_set(c->b->loop, &c->hello_timer, loop_now_ms() +
	    c->silence_ms);
	log_info("link from %s (%s, %s) up", name, conn_peer(c), c->addr);
	w.b.welcome.version = WIRE_VERSION;
	w.b.welcome.max_payload = c->b->lim.max_payload;
	w.b.welcome.conn_id = c->id;
	conn_push(c, &w);
}

static void
conn_on_hello(struct conn *c, const struct wire_frame *f)
{
	struct wire_frame w = { .type = WIRE_WELCOME, .id = f->id };
	struct quota *q;
	char who[32];
	int r;

	if (f->type == WIRE_LINK_HELLO && c->kind == CONN_TCP) {
		conn_on_link_hello(c, f);
		return;
	}
	if (f->type != WIRE_HELLO) {
		conn_violation(c, f->id, EPROTO, "first frame is not HELLO");
		return;
	}
	if (f->b.hello.magic != WIRE_MAGIC) {
		conn_violation(c, f->id, EPROTO, "bad magic in HELLO");
		return;
	}
	if (f->b.hello.version_min > WIRE_VERSION ||
	    f->b.hello.version_max < WIRE_VERSION) {
		conn_violation(c, f->id, EPROTO,
		    "no protocol version in common");
		return;
	}
	if (c->kind == CONN_TCP)
		conn_map_uid(c->b, conn_peer(c), -1, &c->cred);
	if ((q = quota_get(c->b, c->cred.uid)) == NULL) {
		conn_violation(c, f->id, ENOMEM, "out of memory");
		return;
	}
	if (c->b->lim.max_conns_per_uid != 0 &&
	    q->conns >= c->b->lim.max_conns_per_uid) {
		/* Refused, not a violation: its other connections stay. */
		c->b->n.err_quota++;
		log_info("conn %llu (uid %u): refused, %u connections of "
		    "that user, the limit", (unsigned long long)c->id,
		    (unsigned)c->cred.uid, c->b->lim.max_conns_per_uid);
		conn_reply_error(c, f->id, EDQUOT, 0,
		    "your quota of connections is used up");
		c->closing = 1;
		return;
	}
	if (c->kind == CONN_TCP) {
		/* A process of another host, authenticated as its
		 * identity: it has the mapped uid and no direct queue. */
		c->kind = CONN_REMOTE_CLIENT;
		log_info("remote client %s (%s) connected as uid %u",
		    c->addr, conn_peer(c), (unsigned)c->cred.uid);
	} else if ((r = proc_attach(c->b, c)) < 0) {
		conn_violation(c, f->id, -r, r == -ENOMEM ? "out of memory" :
		    "cannot tell which process this is");
		return;
	}
	q->conns++;
	c->quota = q;
	conn_hs_del(c);
	loop_timer_del(c->b->loop, &c->hello_timer);
	c->state = CONN_READY;
	w.b.welcome.version = WIRE_VERSION;
	w.b.welcome.max_payload = c->b->lim.max_payload;
	w.b.welcome.conn_id = c->id;
	w.b.welcome.pid = (uint32_t)c->cred.pid;
	w.b.welcome.uid = c->cred.uid;
	w.b.welcome.gid = c->cred.gid;
	conn_push(c, &w);
	snprintf(who, sizeof(who), "pid:%d", (int)c->cred.pid);
	conn_event(c->b, EV_CONNECT, (uint32_t)c->cred.pid, c->cred.uid,
	    NULL, who, 0, 0, 0);
}

/* What a request may do to a mailbox, by its mode. */
enum conn_access { ACCESS_NONE = 0, ACCESS_WRITE = 2, ACCESS_READ = 4 };

/* Parse an address in a request; -1 with the error replied. */
static int
conn_parse_addr(struct conn *c, uint64_t req_id, struct wire_bytes text,
    struct ipc_addr *a)
{
	char buf[IPC_ADDR_MAX];

	if (wire_str_copy(text, buf, sizeof(buf)) < 0) {
		conn_reply_error(c, req_id, EINVAL, 0, "address too long");
		return -1;
	}
	if (ipc_addr_parse_fast(buf, a) < 0) {
		conn_reply_error(c, req_id, EINVAL, 0,
		    ipc_addr_why(buf) ? ipc_addr_why(buf) : "bad address");
		return -1;
	}
	return 0;
}

/* Does process p take messages from other hosts (one of its conns
 * said so with OPTION)? */
static int
conn_proc_takes_remote(const struct proc *p)
{
	for (const struct conn *o = p->conns; o != NULL; o = o->pnext)
		if (o->remote_direct)
			return 1;
	return 0;
}

/* Resolve a parsed address on this broker for a request of c made as
 * cred: a mailbox (checked against access), or for a send "pid:P" (the
 * process's queue).  NULL with the error replied when there is none. */
static struct mbox *
conn_resolve_addr(struct conn *c, uint64_t req_id, const struct ipc_addr *a,
    enum conn_access access, const struct ucred *cred)
{
	struct broker *b = c->b;
	struct proc *p;
	struct mbox *m;
	int err = 0;

	if (!link_is_self(b, a)) {
		conn_reply_error(c, req_id, ENOTSUP, 0, access ==
		    ACCESS_WRITE ? "a broker does not forward to a third host" :
		    "a mailbox of another host can only be sent to");
		return NULL;
	}
	if (a->kind == IPC_ADDR_PID) {
		/* Anyone may send to a process; only it receives. */
		if (access != ACCESS_WRITE) {
			b->n.err_access++;
			conn_reply_error(c, req_id, EACCES, 0,
			    "only the process itself reads its queue");
			return NULL;
		}
		if ((p = proc_for_send(b, a->pid, &err)) == NULL) {
			b->n.err_nosuchproc++;
			conn_reply_error(c, req_id, -err, 0, err == -ESRCH ?
			    "no such process" : "out of memory");
			return NULL;
		}
		/* From another host: only to a process that said it
		 * takes such messages, and it must be connected to say
		 * so (a remote sender does not wait for it). */
		if ((c->kind == CONN_LINK_IN || c->kind ==
		    CONN_REMOTE_CLIENT) && !conn_proc_takes_remote(p)) {
			b->n.err_access++;
			conn_reply_error(c, req_id, p->nconns ? EACCES : ESRCH,
			    0, p->nconns ? "the process takes no messages "
			    "from other hosts" : "the process is not "
			    "connected");
			proc_release_if_idle(b, p);
			return NULL;
		}
		return &p->q;
	}
	if ((m = mbox_find(b, a->name, strlen(a->name))) == NULL) {
		b->n.err_nomailbox++;
		conn_reply_error(c, req_id, ENOENT, 0, "no such mailbox");
		return NULL;
	}
	if (access != ACCESS_NONE && !mbox_may(m, cred, access)) {
		b->n.err_access++;
		conn_reply_error(c, req_id, EACCES, 0, access == ACCESS_READ ?
		    "the mailbox's mode forbids receiving" :
		    "the mailbox's mode forbids sending");
		return NULL;
	}
	return m;
}

/* Resolve an address of a request of c's own. */
static struct mbox *
conn_resolve(struct conn *c, uint64_t req_id, struct wire_bytes text,
    enum conn_access access)
{
	struct ipc_addr a;

	if (conn_parse_addr(c, req_id, text, &a) < 0)
		return NULL;
	return conn_resolve_addr(c, req_id, &a, access, &c->cred);
}

/* Only the owner or root may change or delete a mailbox. */
static struct mbox *
conn_resolve_owned(struct conn *c, uint64_t req_id, struct wire_bytes name)
{
	/* (pid: addresses are refused for anything but sending.) */
	struct mbox *m = conn_resolve(c, req_id, name, ACCESS_NONE);

	if (m != NULL && c->cred.uid != 0 && c->cred.uid != m->uid) {
		c->b->n.err_access++;
		conn_reply_error(c, req_id, EACCES, 0,
		    "only the owner or root may do that");
		return NULL;
	}
	return m;
}

/* The descriptor of a SEND with WIRE_SEND_FD: a sealed memfd (no
 * writes, no growing or shrinking, so what the broker hands on is what
 * was sent), and an empty inline payload.  NULL with its size in *len,
 * or why not. */
static const char *
conn_check_memfd(struct conn *c, struct wire_bytes payload, size_t *len)
{
	const int need = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
	struct stat st;
	int seals;

	if (c->frame_fd < 0)
		return "no descriptor came with the SEND";
	if (payload.len != 0)
		return "a memfd SEND carries no inline payload";
	if ((seals = fcntl(c->frame_fd, F_GET_SEALS)) < 0)
		return "the descriptor is not a memfd";
	/* Receivers map it, the broker reads it: a write-only one would
	 * poison every receiver of the mailbox. */
	if ((fcntl(c->frame_fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
		return "the memfd is not open for reading";
	if ((seals & need) != need)
		return "the memfd is not sealed against writes and resizing";
	if (fstat(c->frame_fd, &st) < 0 || !S_ISREG(st.st_mode))
		return "the descriptor is not a memfd";
	if ((uint64_t)st.st_size > c->b->lim.max_payload)
		return "too big";
	*len = (size_t)st.st_size;
	return NULL;
}

/* Check a send's size and flags, then make its message as cred with
 * the payload copied in.  NULL with the error replied. */
static struct msg *
conn_make_msg(struct conn *c, uint64_t req_id, uint32_t flags,
    struct wire_bytes payload, const struct ucred *cred, const char *origin)
{
	struct broker *b = c->b;
	struct msg *msg;
	int err;

	size_t len = payload.len;
	int fd = -1;

	if ((flags & ~(WIRE_SEND_ASYNC | WIRE_SEND_FD)) != 0) {
		conn_reply_error(c, req_id, EINVAL, 0, "unknown SEND flags");
		return NULL;
	}
	if (flags & WIRE_SEND_FD) {
		const char *why = conn_check_memfd(c, payload, &len);

		if (why != NULL) {
			int big = strcmp(why, "too big") == 0;

			if (big)
				b->n.err_msgsize++;
			conn_reply_error(c, req_id, big ? EMSGSIZE : EINVAL,
			    b->lim.max_payload, big ?
			    "message over the broker's size limit" : why);
			return NULL;
		}
		fd = c->frame_fd;
	}
	if (len > b->lim.max_payload) {
		b->n.err_msgsize++;
		conn_reply_error(c, req_id, EMSGSIZE, b->lim.max_payload,
		    "message over the broker's size limit");
		return NULL;
	}
	if ((msg = msg_new(b, cred, len, fd, origin, &err)) == NULL) {
		if (err == -EDQUOT)
			b->n.err_quota++;
		conn_reply_error(c, req_id, -err, 0, err != -EDQUOT ?
		    "out of memory" : fd >= 0 && b->lim.max_fds_per_uid &&
		    quota_get(b, cred->uid)->fds >= b->lim.max_fds_per_uid ?
		    "your quota of descriptors in flight is used up" :
		    "your quota of queued bytes is used up");
		return NULL;
	}
	if (fd >= 0) {
		/* The message owns it now.  Past the broker's share of
		 * descriptors the bytes are read in instead. */
		c->frame_fd = -1;
		if (b->fds_held > b->max_fds_held &&
		    msg_materialize(b, &msg) < 0) {
			conn_reply_error(c, req_id, ENOMEM, 0,
			    "cannot hold the message");
			msg_free(msg);
			return NULL;
		}
	} else if (msg->len) {
		memcpy(msg->data, payload.p, msg->len);
	}
	msg->sender_conn = c->id;
	msg->sender_req = req_id;
	if (flags & WIRE_SEND_ASYNC)
		msg->flags |= MSG_ASYNC;
	c->msgs_sent++;
	return msg;
}

/* Hand msg to m (resolved for it): an async sender is not waiting, so
 * the broker does not wait for room on its behalf either. */
static void
conn_deliver_to(struct conn *c, uint64_t req_id, struct mbox *m,
    struct msg *msg, uint32_t timeout_ms)
{
	mbox_send(c->b, m, c, req_id, msg, (msg->flags & MSG_ASYNC) ? 0 :
	    timeout_ms);
	/* A process that was only looked up for this send is not kept. */
	if (m->owner != NULL)
		proc_release_if_idle(c->b, m->owner);
}

static void
conn_on_send(struct conn *c, const struct wire_frame *f)
{
	const struct wire_send *s = &f->b.send;
	struct ipc_addr a;
	struct msg *msg;
	struct mbox *m;

	if (conn_parse_addr(c, f->id, s->dest, &a) < 0)
		return;
	if (!link_is_self(c->b, &a)) {
		/* For another host: the link answers when it does. */
		if ((msg = conn_make_msg(c, f->id, s->flags, s->payload,
		    &c->cred, NULL)) == NULL)
			return;
		/* A link carries bytes, not descriptors. */
		if (msg_materialize(c->b, &msg) < 0) {
			conn_reply_error(c, f->id, ENOMEM, 0,
			    "cannot read the message");
			msg_free(msg);
			return;
		}
		link_send(c->b, c, f->id, &a, msg, s->timeout_ms);
		return;
	}
	if ((m = conn_resolve_addr(c, f->id, &a, ACCESS_WRITE,
	    &c->cred)) == NULL)
		return;
	if ((msg = conn_make_msg(c, f->id, s->flags, s->payload, &c->cred,
	    NULL)) == NULL) {
		if (m->owner != NULL)
			proc_release_if_idle(c->b, m->owner);
		return;
	}
	conn_deliver_to(c, f->id, m, msg, s->timeout_ms);
}

/* A message from another broker's link: the header id is its sequence
 * number, answered once however often it comes. */
static void
conn_on_link_send(struct conn *c, const struct wire_frame *f)
{
	const struct wire_link_send *s = &f->b.link_send;
	struct broker *b = c->b;
	struct ucred cred = { .pid = (pid_t)s->pid };
	uint64_t msg_id;
	uint32_t code;
	struct ipc_addr a;
	struct msg *msg;
	struct mbox *m;
	int r;

	if (f->id == 0) {
		conn_violation(c, 0, EPROTO, "LINK_SEND without a sequence "
		    "number");
		return;
	}
	if ((r = peer_check(c->peer, f->id, &code, &msg_id)) > 0) {
		/* Sent again after a reconnect: the same answer. */
		struct wire_frame w = { .id = f->id };

		b->n.link_repeats++;
		if (code == 0) {
			w.type = WIRE_SENT;
			w.b.sent.msg_id = msg_id;
		} else {
			w.type = WIRE_ERROR;
			w.b.error.code = code;
			w.b.error.text = wire_str("failed (answer repeated)");
		}
		conn_push(c, &w);
		return;
	}
	if (r < 0) {
		conn_violation(c, f->id, EPROTO, "sequence number repeated "
		    "while its message waits");
		return;
	}
	b->n.link_msgs_in++;
	c->msgs_received++;
	if (s->flags != 0) {
		/* (An async LINK_SEND would never be answered.) */
		conn_reply_error(c, f->id, EINVAL, 0, "LINK_SEND flags must "
		    "be 0");
		return;
	}
	conn_map_uid(b, conn_peer(c), s->uid, &cred);
	if (conn_parse_addr(c, f->id, s->dest, &a) < 0 ||
	    (m = conn_resolve_addr(c, f->id, &a, ACCESS_WRITE,
	    &cred)) == NULL)
		return;
	if ((msg = conn_make_msg(c, f->id, s->flags, s->payload, &cred,
	    peer_name(c->peer))) == NULL) {
		if (m->owner != NULL)
			proc_release_if_idle(b, m->owner);
		return;
	}
	conn_deliver_to(c, f->id, m, msg, s->timeout_ms);
}

static void
conn_on_recv(struct conn *c, const struct wire_frame *f)
{
	struct msg_from from = { 0 };
	struct mbox *m;

	if (f->b.recv.flags != 0) {
		conn_reply_error(c, f->id, EINVAL, 0, "unknown RECV flags");
		return;
	}
	if (c->proc == NULL && (f->b.recv.source.len == 0 ||
	    (f->b.recv.source.len > 4 &&
	    memcmp(f->b.recv.source.p, "pid:", 4) == 0))) {
		conn_reply_error(c, f->id, ENOTSUP, 0, "a client of another "
		    "host has no direct queue here; use a mailbox");
		return;
	}
	if (f->b.recv.source.len == 0) {
		/* The caller's own direct queue, any sender. */
		m = &c->proc->q;
	} else if (f->b.recv.source.len > 4 &&
	    memcmp(f->b.recv.source.p, "pid:", 4) == 0) {
		/* Selective: what process Q (of this or another host)
		 * sent to the caller. */
		char buf[IPC_ADDR_MAX];
		struct ipc_addr a;

		if (wire_str_copy(f->b.recv.source, buf, sizeof(buf)) < 0 ||
		    ipc_addr_parse(buf, &a) < 0 || a.pid <= 0) {
			conn_reply_error(c, f->id, EINVAL, 0,
			    "bad sender address");
			return;
		}
		m = &c->proc->q;
		from.pid = (uint32_t)a.pid;
		if (!link_is_self(c->b, &a))
			link_name(a.host, a.port, from.host,
			    sizeof(from.host));
	} else if ((m = conn_resolve(c, f->id, f->b.recv.source,
	    ACCESS_READ)) == NULL) {
		return;
	}
	mbox_recv(c->b, m, c, f->id, f->b.recv.max_len, f->b.recv.timeout_ms,
	    &from);
}

/* A CREDIT refused: the answer is ERROR with the stream's id, which ends
 * that stream if it was open (the client forgets it on any ERROR). */
static void
conn_credit_refused(struct conn *c, uint64_t id, int err, uint32_t aux,
    const char *why)
{
	mbox_stream_end(c->b, c, id);
	conn_reply_error(c, id, err, aux, why);
}

/* CREDIT: open or feed a receive stream on a mailbox, or end it. */
static void
conn_on_credit(struct conn *c, const struct wire_frame *f)
{
	const struct wire_credit *cr = &f->b.credit;
	struct mbox *m;
	int r;

	if ((cr->flags & ~WIRE_CREDIT_END) != 0) {
		conn_credit_refused(c, f->id, EINVAL, 0,
		    "unknown CREDIT flags");
		return;
	}
	if (cr->flags & WIRE_CREDIT_END) {
		if (mbox_stream_end(c->b, c, f->id) < 0)
			conn_reply_error(c, f->id, ENOENT, 0, "no such stream");
		else
			conn_reply_ok(c, f->id);
		return;
	}
	if (cr->source.len == 0 || (cr->source.len > 4 &&
	    memcmp(cr->source.p, "pid:", 4) == 0)) {
		conn_credit_refused(c, f->id, EINVAL, 0,
		    "a receive stream is for a mailbox, not a direct queue");
		return;
	}
	if ((m = conn_resolve(c, f->id, cr->source, ACCESS_READ)) == NULL) {
		mbox_stream_end(c->b, c, f->id);	/* refused: it ends */
		return;
	}
	if (c->nstreams >= CONN_STREAMS_MAX) {
		int open = 0;

		for (struct wait *w = c->waits; w != NULL && !open;
		    w = w->cnext)
			open = w->stream && w->req_id == f->id;
		if (!open) {
			conn_reply_error(c, f->id, ENOSPC, CONN_STREAMS_MAX,
			    "too many receive streams on this connection");
			return;
		}
	}
	if ((r = mbox_stream_credit(c->b, m, c, f->id, cr->max_len,
	    cr->credit)) < 0)
		conn_credit_refused(c, f->id, -r, 0, r == -EINVAL ?
		    "that stream id is for another mailbox" :
		    "out of memory");
}

static void
conn_on_create(struct conn *c, const struct wire_frame *f)
{
	struct mbox *m;
	int created, r;

	c->b->journal_why[0] = '\0';	/* set when the journal refuses */
	r = mbox_create(c->b, c, &f->b.create, &m, &created);
	if (r < 0) {
		if (r == -EDQUOT)
			c->b->n.err_quota++;
		conn_reply_error(c, f->id, -r, 0,
		    c->b->journal_why[0] != '\0' ? c->b->journal_why :
		    r == -EINVAL ? "bad mailbox name or attributes" :
		    r == -EEXIST ? "mailbox exists" :
		    r == -ENOSPC ? "the broker's mailbox limit is reached" :
		    r == -EDQUOT ? "your mailbox quota is reached" :
		    "out of memory");
		return;
	}
	/* Durable: answered once it is on disk (or deleted again, and
	 * the error answered, when it cannot be written). */
	if (created && m->durable &&
	    (r = durable_created(c->b, m, c, f->id)) < 0) {
		conn_reply_error(c, f->id, -r, 0, c->b->journal_why);
		return;
	}
	if (created) {
		log_debug("conn %llu: created mailbox %s",
		    (unsigned long long)c->id, m->name);
		conn_event(c->b, EV_CREATE, (uint32_t)c->cred.pid,
		    c->cred.uid, m, m->name, 0, 0, 0);
		if (m->durable)
			return;
	}
	conn_reply_info(c, f->id, m);
}

static void
conn_on_delete(struct conn *c, const struct wire_frame *f)
{
	struct mbox *m = conn_resolve_owned(c, f->id, f->b.name.name);
	int r, durable;

	if (m == NULL)
		return;
	/* Durable: its deletion is recorded first, and answered once it
	 * is on disk; when it cannot be, the mailbox stays. */
	if (m->durable && (r = durable_changed(c->b, m, 1, c, f->id)) < 0) {
		conn_reply_error(c, f->id, -r, 0, c->b->journal_why);
		return;
	}
	log_debug("conn %llu: deleted mailbox %s", (unsigned long long)c->id,
	    m->name);
	conn_event(c->b, EV_DELETE, (uint32_t)c->cred.pid, c->cred.uid, m,
	    m->name, 0, 0, 0);
	durable = m->durable;
	mbox_delete(c->b, m);
	if (!durable)
		conn_reply_ok(c, f->id);
}

static void
conn_on_ack(struct conn *c, const struct wire_frame *f)
{
	const struct wire_bytes *ids = &f->b.ack.ids;

	if (ids->len % 8 != 0 || ids->len / 8 > WIRE_ACK_MAX) {
		conn_violation(c, f->id, EPROTO, "malformed ACK");
		return;
	}
	for (size_t i = 0; i < ids->len; i += 8) {
		uint64_t id = wire_get64(ids->p + i);
		struct msg *prev = NULL, *msg;

		/* Oldest first, and the library acks in the order it
		 * hands messages out: the id is nearly always at the
		 * head. */
		for (msg = c->unacked; msg != NULL; prev = msg,
		    msg = msg->next)
			if (msg->id == id)
				break;
		if (msg == NULL)
			continue;
		if (prev != NULL)
			prev->next = msg->next;
		else
			c->unacked = msg->next;
		if (c->unacked_tail == msg)
			c->unacked_tail = prev;
		c->nunacked--;
		c->b->n.acks++;
		mbox_acked(msg);
	}
}

static void
conn_on_chmod(struct conn *c, const struct wire_frame *f)
{
	struct mbox *m;

	if ((f->b.chmod.mode & ~0777u) != 0) {
		conn_reply_error(c, f->id, EINVAL, 0, "mode beyond 0777");
		return;
	}
	uint32_t old;
	int r;

	if ((m = conn_resolve_owned(c, f->id, f->b.chmod.name)) == NULL)
		return;
	old = m->mode;
	m->mode = f->b.chmod.mode;
	if (m->durable) {
		/* Answered once the new mode is on disk. */
		if ((r = durable_changed(c->b, m, 0, c, f->id)) < 0) {
			m->mode = old;
			conn_reply_error(c, f->id, -r, 0, c->b->journal_why);
		}
		return;
	}
	conn_reply_ok(c, f->id);
}

static void
conn_on_chown(struct conn *c, const struct wire_frame *f)
{
	const struct wire_mbox_chown *r = &f->b.chown;
	struct quota *from = NULL, *to = NULL;
	struct mbox *m;

	if ((m = conn_resolve_owned(c, f->id, r->name)) == NULL)
		return;
	/* As chown(2): giving a mailbox to another user is root's; the
	 * owner may change the group to its own. */
	if (c->cred.uid != 0 && ((r->uid != WIRE_DEFAULT32 &&
	    r->uid != m->uid) || (r->gid != WIRE_DEFAULT32 &&
	    r->gid != c->cred.gid))) {
		c->b->n.err_access++;
		conn_reply_error(c, f->id, EACCES, 0,
		    "only root may give a mailbox away");
		return;
	}
	if (r->uid != WIRE_DEFAULT32 && r->uid != m->uid &&
	    ((from = quota_get(c->b, m->uid)) == NULL ||
	    (to = quota_get(c->b, r->uid)) == NULL)) {
		conn_reply_error(c, f->id, ENOMEM, 0, "out of memory");
		return;
	}
	if (m->durable) {
		/* Recorded with the new owner first (answered once that is
		 * on disk); nothing changes when it cannot be. */
		uid_t uid = m->uid;
		gid_t gid = m->gid;
		int e;

		if (r->uid != WIRE_DEFAULT32)
			m->uid = r->uid;
		if (r->gid != WIRE_DEFAULT32)
			m->gid = r->gid;
		e = durable_changed(c->b, m, 0, c, f->id);
		m->uid = uid;
		m->gid = gid;
		if (e < 0) {
			conn_reply_error(c, f->id, -e, 0, c->b->journal_why);
			return;
		}
	}
	if (r->uid != WIRE_DEFAULT32 && r->uid != m->uid) {
		if (from->mailboxes > 0)
			from->mailboxes--;
		to->mailboxes++;
		m->uid = r->uid;
	}
	if (r->gid != WIRE_DEFAULT32)
		m->gid = r->gid;
	if (!m->durable)
		conn_reply_ok(c, f->id);
}

static void
conn_on_list(struct conn *c, const struct wire_frame *f)
{
	struct broker *b = c->b;

	for (size_t i = 0; i < b->tab_size; i++)
		for (struct mbox *m = b->tab[i]; m != NULL; m = m->hnext)
			conn_reply_info(c, f->id, m);
	conn_reply_ok(c, f->id);
}

static void
conn_on_peek(struct conn *c, const struct wire_frame *f)
{
	struct mbox *m = conn_resolve(c, f->id, f->b.peek.name, ACCESS_READ);
	uint32_t n = 0;

	if (m == NULL)
		return;
	for (struct msg *msg = m->q.head;
	    msg != NULL && n < f->b.peek.max_count; msg = msg->next, n++)
		conn_reply_deliver(c, f->id, m, msg, 0);
	conn_reply_ok(c, f->id);
}

static void
conn_on_clients(struct conn *c, const struct wire_frame *f)
{
	for (struct conn *o = c->b->conns; o != NULL; o = o->next) {
		struct wire_frame r = { .type = WIRE_CLIENT_INFO, .id = f->id };

		/* Links are listed by LINKS. */
		if (o->kind == CONN_LINK_IN || o->kind == CONN_LINK_OUT)
			continue;
		r.b.client.conn_id = o->id;
		r.b.client.pid = (uint32_t)o->cred.pid;
		r.b.client.uid = o->cred.uid;
		r.b.client.gid = o->cred.gid;
		r.b.client.queue_depth = o->proc ? o->proc->q.q.count : 0;
		r.b.client.msgs_sent = o->msgs_sent;
		r.b.client.msgs_received = o->msgs_received;
		r.b.client.connected_ns = o->connected_ns;
		r.b.client.comm = wire_str(o->comm);
		conn_push(c, &r);
	}
	conn_reply_ok(c, f->id);
}

/* The journal's figures; all 0 while no durable mailbox was used. */
static struct journal_stats
conn_journal_stats(const struct broker *b)
{
	struct journal_stats js = { 0 };

	if (b->journal != NULL)
		journal_get_stats(b->journal, &js);
	return js;
}

static void
conn_on_counters(struct conn *c, const struct wire_frame *f)
{
	const struct broker *b = c->b;
	const struct journal_stats js = conn_journal_stats(b);
	const struct { const char *name; uint64_t value; } v[] = {
		{ "uptime_ms", (uint64_t)(loop_now_ms() - b->started_ms) },
		{ "connections", b->nconns },
		{ "connections_total", b->n.conns_total },
		{ "connections_refused", b->n.err_refused },
		{ "mailboxes", b->nmbox },
		{ "messages_in", b->n.msgs_in },
		{ "messages_out", b->n.msgs_out },
		{ "bytes_in", b->n.bytes_in },
		{ "bytes_out", b->n.bytes_out },
		{ "errors_protocol", b->n.err_proto },
		{ "errors_full", b->n.err_full },
		{ "errors_timeout", b->n.err_timeout },
		{ "errors_no_mailbox", b->n.err_nomailbox },
		{ "errors_msgsize", b->n.err_msgsize },
		{ "errors_access", b->n.err_access },
		{ "errors_quota", b->n.err_quota },
		{ "errors_no_process", b->n.err_nosuchproc },
		{ "processes", b->nprocs },
		{ "dropped_process_gone", b->n.dropped_proc_gone },
		{ "dropped_mailbox_deleted", b->n.dropped_mbox_deleted },
		{ "redelivered", b->n.redelivered },
		{ "acks", b->n.acks },
		{ "failures_reported", b->n.failures_reported },
		{ "events_dropped", b->n.events_dropped },
		{ "tls_refused", b->n.tls_refused },
		{ "handshaking", b->nhandshaking },
		{ "handshakes_evicted", b->n.handshakes_evicted },
		{ "accept_paused", b->n.accept_paused },
		{ "descriptors_held", b->fds_held },
		{ "link_messages_out", b->n.link_msgs_out },
		{ "link_messages_in", b->n.link_msgs_in },
		{ "link_repeats", b->n.link_repeats },
		{ "durable_mailboxes", b->ndurables },
		{ "durable_messages", b->durable_msgs },
		{ "durable_recovered", b->n.durable_recovered },
		{ "durable_failed", b->n.durable_failed },
		{ "journal_records_replayed", b->n.journal_records },
		{ "journal_damaged", b->n.journal_damaged },
		{ "journal_torn_bytes", b->n.journal_torn_bytes },
		{ "journal_orphans", b->n.journal_orphans },
		{ "journal_syncs", js.syncs },
		{ "journal_sync_us", js.sync_ns_total / 1000 },
		{ "journal_segments", js.segments_live },
		{ "journal_segments_deleted", js.segments_deleted },
		{ "journal_disk_bytes", js.disk_bytes },
		{ "journal_write_errors", js.write_errors },
		{ "journal_compactions", b->n.journal_compactions },
		{ "journal_copied", b->n.journal_copied },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct wire_frame r = { .type = WIRE_COUNTER, .id = f->id };

		r.b.counter.name = wire_str(v[i].name);
		r.b.counter.value = v[i].value;
		conn_push(c, &r);
	}
	conn_reply_ok(c, f->id);
}

static void
conn_on_monitor(struct conn *c, const struct wire_frame *f)
{
	if (c->monitor_id != 0) {
		conn_reply_error(c, f->id, EBUSY, 0, "already monitoring");
		return;
	}
	conn_reply_ok(c, f->id);
	c->monitor_id = f->id ? f->id : 1;
	c->mnext = c->b->monitors;
	c->b->monitors = c;
}

static void
conn_on_option(struct conn *c, const struct wire_frame *f)
{
	if (f->b.option.option != WIRE_OPT_REMOTE_DIRECT ||
	    f->b.option.value > 1) {
		conn_reply_error(c, f->id, EINVAL, 0, "unknown option");
		return;
	}
	if (c->proc == NULL) {
		conn_reply_error(c, f->id, ENOTSUP, 0, "a client of another "
		    "host has no direct queue here");
		return;
	}
	c->remote_direct = (int)f->b.option.value;
	conn_reply_ok(c, f->id);
}

/* Another broker's link carries its messages and heartbeats only. */
static void
conn_dispatch_link(struct conn *c, const struct wire_frame *f)
{
	struct wire_frame w = { .type = WIRE_PONG, .id = f->id };

	switch (f->type) {
	case WIRE_LINK_SEND:
		conn_on_link_send(c, f);
		break;
	case WIRE_PING:
		w.b.ping = f->b.ping;
		conn_push(c, &w);
		break;
	case WIRE_BYE:
		/* The peer is stopping: its link goes, quietly. */
		log_info("link from %s: the peer is stopping",
		    peer_name(c->peer));
		conn_close(c);
		break;
	default:
		conn_violation(c, f->id, EPROTO, "unexpected frame on a link");
		break;
	}
}

static void
conn_dispatch(struct conn *c, const struct wire_frame *f)
{
	if (c->kind == CONN_LINK_OUT) {
		link_on_frame(c, f);
		return;
	}
	if (c->state == CONN_HELLO) {
		conn_on_hello(c, f);
		return;
	}
	if (c->kind == CONN_LINK_IN) {
		conn_dispatch_link(c, f);
		return;
	}
	switch (f->type) {
	case WIRE_OPTION:
		conn_on_option(c, f);
		break;
	case WIRE_LINKS:
		link_list(c->b, c, f->id);
		break;
	case WIRE_SEND:
		conn_on_send(c, f);
		break;
	case WIRE_RECV:
		conn_on_recv(c, f);
		break;
	case WIRE_CREDIT:
		conn_on_credit(c, f);
		break;
	case WIRE_ACK:
		conn_on_ack(c, f);
		break;
	case WIRE_MBOX_CREATE:
		conn_on_create(c, f);
		break;
	case WIRE_MBOX_STAT: {
		struct mbox *m = conn_resolve(c, f->id, f->b.name.name,
		    ACCESS_NONE);

		if (m != NULL)
			conn_reply_info(c, f->id, m);
		break;
	}
	case WIRE_MBOX_DELETE:
		conn_on_delete(c, f);
		break;
	case WIRE_MBOX_CHMOD:
		conn_on_chmod(c, f);
		break;
	case WIRE_MBOX_CHOWN:
		conn_on_chown(c, f);
		break;
	case WIRE_MBOX_LIST:
		conn_on_list(c, f);
		break;
	case WIRE_PEEK:
		conn_on_peek(c, f);
		break;
	case WIRE_CLIENTS:
		conn_on_clients(c, f);
		break;
	case WIRE_COUNTERS:
		conn_on_counters(c, f);
		break;
	case WIRE_MONITOR:
		conn_on_monitor(c, f);
		break;
	default:
		/* A frame the broker sends, or HELLO again. */
		conn_violation(c, f->id, EPROTO, "unexpected frame type");
		break;
	}
}

/* Answer every whole frame in buf (len bytes), unless throttled.
 * Returns the bytes used. */
static size_t
conn_parse(struct conn *c, const uint8_t *buf, size_t len)
{
	size_t off = 0;

	while (c->state != CONN_DEAD && !conn_throttled(c)) {
		struct wire_frame f;
		const char *why = "malformed frame";
		long flen = wire_frame_len(buf + off, len - off,
		    conn_max_frame(c));

		if (flen < 0) {
			conn_violation(c, 0, -flen == EMSGSIZE ? EMSGSIZE :
			    EPROTO, flen == -EMSGSIZE ?
			    "frame over the size limit" :
			    "frame shorter than its header");
			break;
		}
		if (flen == 0 || (size_t)flen > len - off)
			break;
		if (wire_decode(buf + off, (size_t)flen, &f, &why) < 0) {
			conn_violation(c, wire_get64(buf + off + 8), EPROTO,
			    why);
			break;
		}
		off += (size_t)flen;
		if (f.type == WIRE_SEND && (f.b.send.flags & WIRE_SEND_FD) &&
		    c->kind == CONN_LOCAL && c->state == CONN_READY) {
			/* Its descriptor came first: the oldest unclaimed. */
			if (c->nfdq == 0) {
				conn_violation(c, f.id, EPROTO, "a memfd SEND "
				    "without its descriptor");
				break;
			}
			c->frame_fd = c->fdq[0];
			memmove(c->fdq, c->fdq + 1,
			    --c->nfdq * sizeof(c->fdq[0]));
		}
		conn_dispatch(c, &f);
		if (c->frame_fd >= 0) {
			close(c->frame_fd);	/* not taken: refused */
			c->frame_fd = -1;
		}
	}
	return off;
}

/* Answer what c's own buffer holds (input kept while throttled, or a
 * frame read in parts). */
static void
conn_process(struct conn *c)
{
	size_t off;

	/* Nothing kept (c->in may be NULL: no arithmetic on it). */
	if (c->in_len == 0)
		return;
	off = conn_parse(c, c->in, c->in_len);
	if (c->state == CONN_DEAD || off == 0)
		return;
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
}

/* Make room for want more bytes in c->in.  0 or -ENOMEM. */
static int
conn_in_room(struct conn *c, size_t want)
{
	uint8_t *p;

	if (want <= c->in_cap - c->in_len)
		return 0;
	if ((p = realloc(c->in, c->in_len + want)) == NULL)
		return -ENOMEM;
	c->in = p;
	c->in_cap = c->in_len + want;
	return 0;
}

/* One read from c's socket (or TLS) into buf.  > 0, 0 at the end, or -1
 * with errno. */
static int
conn_read_once(struct conn *c, uint8_t *buf, size_t size)
{
	int n, tw = 0;

	if (c->tls == NULL) {
		int fds[CONN_FDS_MAX], nfds = CONN_FDS_MAX - (int)c->nfdq;

		n = readSocketFds(c->watch.fd, buf, (int)size, fds, &nfds);
		for (int i = 0; n > 0 && i < nfds; i++)
			c->fdq[c->nfdq++] = fds[i];
		return n;
	}
	n = (int)tls_read(c->tls, buf, size, &tw);
	c->tls_want_write = n < 0 && errno == EAGAIN && tw == POLLOUT;
	return n;
}

/*
 * Read and answer what c sent.  Most reads go into one buffer the
 * broker shares among its connections, and are answered from there: a
 * connection keeps bytes of its own only for a frame that arrived in
 * part, or input held back while it is throttled.  An idle connection
 * then holds no input buffer at all.
 */
static void
conn_read(struct conn *c)
{
	struct broker *b = c->b;
	size_t budget = CONN_READ_BUDGET;

	if (c->rd_eof)
		return;

	for (;;) {
		long flen = wire_frame_len(c->in, c->in_len, conn_max_frame(c));
		int shared = c->in_len == 0 && !b->rbuf_busy;
		uint32_t nfdq = c->nfdq;
		size_t want;
		uint8_t *dst;
		int n, fdread;

		if (shared) {
			if (b->rbuf == NULL &&
			    (b->rbuf = malloc(CONN_READ_CHUNK)) == NULL)
				shared = 0;
		}
		if (shared) {
			want = CONN_READ_CHUNK;
			dst = b->rbuf;
		} else {
			/* The rest of the frame begun (its checked length
			 * bounds it), or of its header; then back to the
			 * shared buffer.  The buffer grows by doubling as
			 * bytes come, not to the length the header claims:
			 * a header alone never costs a whole frame. */
			want = flen > 0 && (size_t)flen > c->in_len ?
			    (size_t)flen - c->in_len : c->in_len < WIRE_HDR_LEN ?
			    WIRE_HDR_LEN - c->in_len : CONN_READ_CHUNK;
			if (flen > 0 && want > CONN_READ_CHUNK &&
			    want > c->in_len)
				want = c->in_len > CONN_READ_CHUNK ?
				    c->in_len : CONN_READ_CHUNK;
			if (conn_in_room(c, want) < 0) {
				log_error("conn %llu: out of memory reading",
				    (unsigned long long)c->id);
				conn_close(c);
				return;
			}
			dst = c->in + c->in_len;
		}
		n = conn_read_once(c, dst, want);
		/* The kernel ends a read after bytes that carried
		 * descriptors: such a read is short whatever follows. */
		fdread = c->nfdq > nfdq;
		if (n < 0 && errno == EBADMSG) {
			c->b->n.err_proto++;
			log_warn("conn %llu (pid %d): more descriptors than "
			    "frames that claim them, or none to spare; "
			    "closing", (unsigned long long)c->id,
			    (int)c->cred.pid);
			errno = EBADMSG;	/* logging may change it */
		}
		if (n == 0 && c->kind == CONN_LOCAL && c->state == CONN_READY &&
		    !c->closing) {
			/* The client shut its side: what it sent is
			 * answered, then the connection is closed
			 * (conn_flush_all); a client that closed both
			 * sides is closed at its EPOLLHUP. */
			c->rd_eof = 1;
			conn_want_flush(c);
			return;
		}
		if (n == 0 || (n < 0 && errno != EAGAIN &&
		    errno != EWOULDBLOCK)) {
			if (c->link != NULL)
				link_conn_closed(c, n == 0 ?
				    "the peer closed the connection" :
				    strerror(errno));
			conn_close(c);
			return;
		}
		if (n < 0)
			return;
		c->last_rx_ms = loop_now_ms();
		if (shared) {
			size_t used;

			b->rbuf_busy = 1;
			used = conn_parse(c, b->rbuf, (size_t)n);
			b->rbuf_busy = 0;
			if (c->state == CONN_DEAD)
				return;
			if (used < (size_t)n) {
				/* A frame in part, or input held back. */
				if (conn_in_room(c, (size_t)n - used) < 0) {
					log_error("conn %llu: out of memory "
					    "reading", (unsigned long long)c->id);
					conn_close(c);
					return;
				}
				memcpy(c->in, b->rbuf + used, (size_t)n - used);
				c->in_len = (size_t)n - used;
			}
		} else {
			c->in_len += (size_t)n;
			conn_process(c);
		}
		if (c->state == CONN_DEAD || conn_throttled(c))
			return;
		/* A short read means the socket is drained for now (TLS
		 * hands out one record per read: read until EAGAIN, or
		 * until this conn had its share of the round; the rest is
		 * read next round).  A read that only finished a frame
		 * begun goes on to the shared buffer. */
		if (c->tls == NULL && (size_t)n < want && !fdread)
			return;
		if ((size_t)n >= budget) {
			/* epoll sees what the socket holds, not what TLS
			 * has decrypted already: come back next round. */
			if (c->tls != NULL && tls_pending(c->tls))
				loop_timer_set(c->b->loop, &c->more_timer,
				    loop_now_ms());
			return;
		}
		budget -= (size_t)n;
	}
}

void
conn_drain(struct conn *c)
{
	/* Until the socket is empty (a read that carried a descriptor
	 * ends early, so a short read does not say so), or throttled.
	 * Bounded: a descriptor shared with a child that lives on may
	 * never run dry. */
	int queued = 0;
	long left;

	if (c->tls != NULL || ioctl(c->watch.fd, FIONREAD, &queued) < 0)
		return;
	/* What was there when it exited, no more: a child that shares the
	 * socket and keeps writing is read in the normal way, a round at a
	 * time. */
	left = queued;
	while (left > 0 && c->state != CONN_DEAD && !conn_throttled(c)) {
		int before = queued;

		conn_read(c);
		if (c->state == CONN_DEAD || ioctl(c->watch.fd, FIONREAD,
		    &queued) < 0 || queued >= before)
			break;		/* gone, or no progress */
		left -= before - queued;
	}
}

/* Our side of a link: did the TCP connect work? */
static int
conn_connected(struct conn *c)
{
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(c->watch.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		char why[160];

		snprintf(why, sizeof(why), "connect: %s", strerror(err));
		log_info("link to %s: %s", c->addr, why);
		link_conn_closed(c, why);
		conn_close(c);
		return -1;
	}
	c->connecting = 0;
	conn_peer_addr(c->watch.fd, c->addr, sizeof(c->addr));
	return 0;
}

/* Advance the TLS handshake; a peer that fails it is refused before
 * any frame of it is read. */
static void
conn_tls_step(struct conn *c)
{
	char why[256];
	int r = tls_handshake(c->tls, &c->tls_want, why, sizeof(why));

	if (r == 0)
		return;
	if (r < 0) {
		c->b->n.tls_refused++;
		if (c->kind == CONN_LINK_OUT) {
			log_warn("link to %s refused: %s", c->addr, why);
			link_conn_closed(c, why);
		} else {
			log_warn("tcp connection from %s refused: %s",
			    c->addr, why);
		}
		conn_close(c);
		return;
	}
	c->state = CONN_HELLO;
	log_debug("conn %llu: TLS with %s (%s) established",
	    (unsigned long long)c->id, c->addr, conn_peer(c));
	if (c->kind == CONN_LINK_OUT)
		link_conn_up(c);
}

static void
conn_on_io(struct loop_watch *w, uint32_t events)
{
	struct conn *c = w->data;

	if (c->state == CONN_DEAD)
		return;
	if (c->rd_eof && (events & (EPOLLHUP | EPOLLERR))) {
		/* Gone altogether: what still waits is cancelled. */
		conn_close(c);
		return;
	}
	if (c->connecting && conn_connected(c) < 0)
		return;
	if (c->state == CONN_TLS) {
		conn_tls_step(c);
		if (c->state == CONN_DEAD)
			return;
		/* The handshake's last flight may carry data too. */
		if (c->state != CONN_TLS)
			conn_read(c);
	} else if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
	    (c->tls_want_write && (events & EPOLLOUT))) {
		conn_read(c);
	}
	/* Write (on EPOLLOUT) and update the events before the wait. */
	if (c->state != CONN_DEAD)
		conn_want_flush(c);
}
