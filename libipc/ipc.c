/*
 * ipc.c - the client side of libipc: connections to ipcd, mailboxes,
 * send and receive.  See ipc.h and libipc(3).
 *
 * Each call is one request and the reply with its id; the broker does the
 * waiting (for room, for a message, for the timeout), so the library
 * never guesses at time itself except for an armed receive, and for a
 * broker that does not answer a timed call at all: past the call's
 * timeout and IPC_REPLY_GRACE_MS the call gives up (a request not begun
 * is taken back; one begun goes on, and its late answer is dealt with
 * as it comes).  Internal functions return 0 or -errno; the public
 * functions convert at the edge.
 */
#include "config.h"

#include "ipc.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "mysocks.h"
#include "tls.h"
#include "wire.h"

/* Bytes read per read() call while no frame says it needs more. */
#define IPC_READ_CHUNK (64u << 10)

struct ipc_stash {
	struct ipc_msg_info info;
	uint8_t *data;
};

/* Acknowledgements wait for the next request to ride along with; past
 * this many they go at once.  Picked: one small frame per 64 messages. */
#define IPC_ACK_BATCH 64
/* Failure reports waiting for ipc_send_failure(): past this many,
 * ipc_send_async() and ipc_send_more() say EAGAIN until the application
 * reads them, so they cannot pile up without end.  Those of sends already
 * on their way still come, and are all kept (the ring grows): none is
 * lost unless memory runs out.  Picked. */
#define IPC_FAIL_MAX 4096

/* Bytes of frames the library may hold unwritten for ipc_send_async()
 * and ipc_send_more(): past it they get EAGAIN.  Picked: a few socket
 * buffers' worth. */
#define IPC_PEND_MAX (256u << 10)
/* ipc_send_more() writes once this much is batched.  Picked: some 250
 * small frames per write, well inside a UNIX socket's buffer. */
#define IPC_BATCH_BYTES (32u << 10)
/* Payloads of at least $IPC_MEMFD_MIN bytes go in a sealed memfd whose
 * descriptor is passed (UNIX sockets): the broker moves the descriptor,
 * not the bytes.  Off unless the environment sets it: on this project's
 * 2-core VMs filling a memfd (shmem pages allocated, zeroed and charged
 * one by one) costs more than the copies it saves (doc/performance.md). */
#define IPC_MEMFD_MIN 0
/* Descriptors received and not yet matched to their DELIVER frames.  A
 * read stops after a message that carries one, so few wait. */
#define IPC_FDQ_MAX 32
/* Receive streams (prefetch) one connection keeps, one per mailbox. */
#define IPC_STREAMS_MAX 16
/* A timed call waits for the broker's answer up to its timeout and this
 * much more (the broker counts the timeout from when it reads the
 * request); past that the broker is taken to be stopped or far behind,
 * and the call gives up.  Picked: well above a loaded broker's answer
 * time, well below what a person calls a hang. */
#define IPC_REPLY_GRACE_MS 500
/* Requests given up on whose answers are still to come, remembered so
 * that a late answer is not taken for a failure of something else.
 * Past this many the oldest is forgotten.  Picked. */
#define IPC_LATE_MAX 64

/* A receive stream: the broker sends messages of mailbox name as they
 * come, up to the credit the library gave (ipc_set_prefetch). */
struct ipc_stream {
	uint64_t id;			/* its CREDIT's id; 0: slot free */
	uint32_t credit;		/* messages the broker may still send
					 * (as far as we have seen) */
	uint32_t held;			/* arrived, not yet handed over */
	char name[IPC_NAME_MAX + 1];
};

/* A streamed message read past on the way to something else. */
struct ipc_pmsg {
	struct ipc_pmsg *next;
	int streamed;			/* counted in its stream's held */
	struct ipc_msg_info info;
	uint8_t data[];
};

struct ipc_conn {
	int fd;
	struct tls_ctx *tls_ctx;	/* tls://: the session over fd, which */
	struct tls *tls;		/* is then non-blocking */
	uint64_t next_id;
	uint32_t max_payload;
	pid_t pid;			/* ours, as the broker sees it */
	int broken;			/* the broker went away: ECONNRESET */
	uint8_t *in;			/* bytes from the broker: unread ones */
	size_t in_off, in_len, in_cap;	/* from in_off to in_len */
	size_t in_used;			/* the last frame handed out */
	/* Frames encoded, not yet written (batched sends, the tail of an
	 * async send's frame): written, in order, before anything else
	 * goes out.  Over TLS a write that could not finish must be
	 * offered again unchanged, which appending keeps true. */
	uint8_t *pend;
	size_t pend_off, pend_len, pend_cap;
	size_t batch_next;		/* ipc_send_more writes at this much */
	/* A memfd going out with the frame at pend + pend_fd_at (one at a
	 * time; -1: none), and the one for the frame being queued. */
	size_t memfd_min;		/* IPC_MEMFD_MIN, or the environment's;
					 * 0: never */
	int pend_fd, next_fd;
	size_t pend_fd_at;
	/* Descriptors received (memfd messages), oldest first, and the
	 * mapping of the frame handed out last. */
	int fdq[IPC_FDQ_MAX];
	unsigned nfdq;
	void *frame_map;
	size_t frame_map_len;
	/* Ids of messages handed to the application, not yet acked. */
	uint64_t acks[IPC_ACK_BATCH];
	unsigned nacks;
	/* Failure reports, oldest first (a ring). */
	struct ipc_send_failure *fails;	/* a ring of fail_cap */
	size_t fail_head, nfails, fail_cap;
	uint64_t lost_failures;
	/* An armed receive: its request id and source, and the message
	 * once it has come. */
	int armed, have_stash;
	uint64_t armed_id;
	char armed_from[IPC_ADDR_MAX];
	struct ipc_stash stash;
	/* Receive-ahead (ipc_set_prefetch): the credit each stream gets,
	 * the streams, and streamed messages read on the way to another
	 * answer, oldest first. */
	uint32_t prefetch;
	struct ipc_stream streams[IPC_STREAMS_MAX];
	struct ipc_pmsg *pq_head, *pq_tail;
	/* What ipc_fd() hands out, made on its first call: an epoll set of
	 * the socket and an eventfd that is signalled while the library
	 * holds something the socket no longer shows: a stashed or
	 * streamed message, failure reports, or frames already read. */
	int poll_fd, stash_fd;
	int signalled;
	uint64_t monitor_id;		/* ipc_monitor()'s request */
	/* A timed call's deadline, CLOCK_MONOTONIC milliseconds (0: none):
	 * every wait in the call, for the socket to take bytes or for an
	 * answer, ends there. */
	long long deadline;
	/* Where the last frame queued begins in pend, and whether a memfd
	 * was attached with it: so that a timed call can take back a
	 * request none of whose bytes went out. */
	size_t last_at;
	int last_fd;
	/* Ids of requests given up on (a ring), their answers to come. */
	uint64_t late[IPC_LATE_MAX];
	unsigned late_head, nlate;
};

static int ipc_frame_buffered(const struct ipc_conn *c);
static size_t ipc_memfd_min(void);

/* Keep stash_fd readable exactly while the application has something
 * the library already read: a stashed message or failure reports. */
static void
ipc_stash_signal(struct ipc_conn *c)
{
	int want;
	uint64_t v = 1;

	if (c->stash_fd < 0)
		return;
	want = c->have_stash || c->nfails > 0 || c->pq_head != NULL ||
	    ipc_frame_buffered(c);
	if (want == c->signalled)
		return;
	if (want) {
		if (write(c->stash_fd, &v, sizeof(v)) < 0) {
			/* Counter saturated: it is readable anyway. */
		}
	} else if (read(c->stash_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: it was not signalled. */
	}
	c->signalled = want;
}

static void
ipc_record_failure(struct ipc_conn *c, uint64_t send_id, uint64_t msg_id,
    int err)
{
	struct ipc_send_failure *f;

	if (c->nfails == c->fail_cap) {
		size_t cap = c->fail_cap ? 2 * c->fail_cap : 64;
		struct ipc_send_failure *n = cap > SIZE_MAX / sizeof(*n) ?
		    NULL : malloc(cap * sizeof(*n));

		if (n == NULL) {
			c->lost_failures++;
			return;
		}
		/* Unwrapped into the new ring, oldest first. */
		for (size_t i = 0; i < c->nfails; i++)
			n[i] = c->fails[(c->fail_head + i) % c->fail_cap];
		free(c->fails);
		c->fails = n;
		c->fail_cap = cap;
		c->fail_head = 0;
	}
	f = &c->fails[(c->fail_head + c->nfails) % c->fail_cap];
	f->send_id = send_id;
	f->msg_id = msg_id;
	f->error = err;
	c->nfails++;
	ipc_stash_signal(c);
}

static int
ipc_fail(int r)
{
	errno = -r;
	return -1;
}

/* --- deadlines of timed calls ------------------------------------------- */

static long long
ipc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A call with timeout_ms begins: its waits end at the timeout plus the
 * grace (IPC_FOREVER: no deadline). */
static void
ipc_deadline_set(struct ipc_conn *c, int timeout_ms)
{
	c->deadline = timeout_ms < 0 ? 0 :
	    ipc_now_ms() + timeout_ms + IPC_REPLY_GRACE_MS;
}

/* How long a wait may take: timeout_ms (IPC_FOREVER: no limit) cut to
 * what is left before the call's deadline. */
static int
ipc_wait_ms(const struct ipc_conn *c, int timeout_ms)
{
	long long left;

	if (c->deadline == 0)
		return timeout_ms;
	left = c->deadline - ipc_now_ms();
	if (left < 0)
		left = 0;
	if (timeout_ms >= 0 && timeout_ms < left)
		return timeout_ms;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* Request id was given up on; its answer is still to come. */
static void
ipc_late_add(struct ipc_conn *c, uint64_t id)
{
	if (c->nlate == IPC_LATE_MAX) {
		c->late_head = (c->late_head + 1) % IPC_LATE_MAX;
		c->nlate--;
	}
	c->late[(c->late_head + c->nlate) % IPC_LATE_MAX] = id;
	c->nlate++;
}

/* Is id a request given up on?  1 (and it is forgotten: its one answer
 * has come), or 0. */
static int
ipc_late_take(struct ipc_conn *c, uint64_t id)
{
	for (unsigned i = 0; i < c->nlate; i++) {
		if (c->late[(c->late_head + i) % IPC_LATE_MAX] != id)
			continue;
		for (unsigned j = i; j + 1 < c->nlate; j++)
			c->late[(c->late_head + j) % IPC_LATE_MAX] =
			    c->late[(c->late_head + j + 1) % IPC_LATE_MAX];
		c->nlate--;
		return 1;
	}
	return 0;
}

int
ipc_default_socket(char *buf, size_t size)
{
	const char *env = getenv("IPC_SOCKET"), *xdg;
	int n;

	if (buf == NULL || size == 0)
		return ipc_fail(-EINVAL);
	if (env != NULL && env[0] != '\0')
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/run/ipcd/ipcd.sock");
	else if ((xdg = getenv("XDG_RUNTIME_DIR")) != NULL && xdg[0] == '/')
		n = snprintf(buf, size, "%s/ipcd.sock", xdg);
	else
		n = snprintf(buf, size, "/tmp/ipcd-%u/ipcd.sock",
		    (unsigned)geteuid());
	if (n < 0 || (size_t)n >= size)
		return ipc_fail(-ENAMETOOLONG);
	return n;
}

/* --- bytes on the socket -------------------------------------------------- */

/* Wait for the TLS session's socket to be ready for what it wants. */
static int
ipc_tls_wait(struct ipc_conn *c, int want, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = (short)want };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0 ? 0 : -1;
}

/*
 * Write len bytes: all of them (wait), or what the socket takes now.
 * Returns the bytes written, or -1 with errno (EAGAIN: nothing now).
 * Over TLS a write that could not finish has taken its bytes all the
 * same (they must be offered again, unchanged): callers keep them.
 */
static long ipc_io_read(struct ipc_conn *c, void *buf, size_t len);

/*
 * While a write waits for room: take in what the broker sends, unparsed.
 * The broker stops reading a client whose replies go unread (its
 * receive streams keep sending), so a client that only waited to write
 * could wait for ever.  Grows c->in: no caller holds a frame borrowed
 * from it across a write.  0 or -1 with errno.
 */
static int
ipc_read_ahead(struct ipc_conn *c)
{
	long n;

	if (c->in_cap - c->in_len < IPC_READ_CHUNK) {
		uint8_t *p = realloc(c->in, c->in_len + IPC_READ_CHUNK);

		if (p == NULL)
			return -1;
		c->in = p;
		c->in_cap = c->in_len + IPC_READ_CHUNK;
	}
	n = ipc_io_read(c, c->in + c->in_len, c->in_cap - c->in_len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == ETIMEDOUT))
		return 0;
	if (n <= 0) {
		if (n == 0)
			errno = ECONNRESET;
		return -1;
	}
	c->in_len += (size_t)n;
	ipc_stash_signal(c);	/* frames the socket no longer shows */
	return 0;
}

/* Wait until the socket takes more, reading meanwhile.  0, or -1 with
 * errno (ETIMEDOUT: the timed call's deadline came). */
static int
ipc_wait_writable(struct ipc_conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN | POLLOUT };
	int r;

	do
		r = poll(&p, 1, ipc_wait_ms(c, -1));
	while (r < 0 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	if (r <= 0)
		return -1;
	if ((p.revents & POLLOUT) == 0 &&
	    (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0)
		return ipc_read_ahead(c);
	return 0;
}

static long
ipc_io_write(struct ipc_conn *c, const void *buf, size_t len, int wait)
{
	size_t off = 0;

	if (c->tls == NULL) {
		if (len > INT_MAX)
			len = INT_MAX;
		if (!wait)
			return writeSomeSocket(c->fd, buf, (int)len);
		while (off < len) {
			int n = writeSomeSocket(c->fd, (const uint8_t *)buf +
			    off, (int)(len - off));

			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if ((n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
			    ipc_wait_writable(c) < 0)
				/* Out of time: what went out went. */
				return off > 0 && errno == ETIMEDOUT ?
				    (long)off : -1;
		}
		return (long)off;
	}
	while (off < len) {
		int want = POLLOUT;
		long n = tls_write(c->tls, (const uint8_t *)buf + off,
		    len - off, &want);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (errno != EAGAIN)
			return -1;
		if (!wait)
			break;
		if (ipc_tls_wait(c, want, ipc_wait_ms(c, -1)) < 0)
			return off > 0 && errno == ETIMEDOUT ? (long)off : -1;
	}
	if (off == 0 && len > 0) {
		errno = EAGAIN;
		return -1;
	}
	return (long)off;
}

/* Read what is there, waiting for some: > 0, 0 when the broker closed,
 * -1 with errno. */
static long
ipc_io_read(struct ipc_conn *c, void *buf, size_t len)
{
	if (c->tls == NULL) {
		int fds[IPC_FDQ_MAX], nfds = IPC_FDQ_MAX - (int)c->nfdq;
		int n = readSocketFds(c->fd, buf, len > INT_MAX ? INT_MAX :
		    (int)len, fds, &nfds);

		for (int i = 0; n > 0 && i < nfds; i++)
			c->fdq[c->nfdq++] = fds[i];
		return n;
	}
	for (;;) {
		int want = POLLIN;
		long n = tls_read(c->tls, buf, len, &want);

		if (n >= 0 || errno != EAGAIN)
			return n;
		if (ipc_tls_wait(c, want, ipc_wait_ms(c, -1)) < 0)
			return -1;
	}
}

/* --- frames ------------------------------------------------------------- */

/* Write what is pending, waiting (wait != 0) or not.  0 when nothing is
 * left, -EAGAIN, -ETIMEDOUT (waiting: the timed call's deadline), or
 * -ECONNRESET. */
static int
ipc_flush_pending(struct ipc_conn *c, int wait)
{
	while (c->pend_off < c->pend_len) {
		size_t left = c->pend_len - c->pend_off;
		long n;

		if (c->pend_fd >= 0 && c->pend_off == c->pend_fd_at) {
			/* The memfd rides with this byte. */
			n = writeSomeSocketFd(c->fd, c->pend + c->pend_off,
			    left > INT_MAX ? INT_MAX : (int)left, c->pend_fd);
			if (n < 0 && wait && (errno == EAGAIN ||
			    errno == EWOULDBLOCK)) {
				if (ipc_wait_writable(c) < 0)
					n = -1;
				else
					continue;
			}
			if (n > 0) {
				close(c->pend_fd);
				c->pend_fd = -1;
			}
		} else {
			if (c->pend_fd >= 0)
				left = c->pend_fd_at - c->pend_off;
			n = ipc_io_write(c, c->pend + c->pend_off, left, wait);
		}
		if (n < 0) {
			if (!wait && (errno == EAGAIN || errno == EWOULDBLOCK))
				return -EAGAIN;
			/* A timed call's deadline: the rest stays pending,
			 * to go first at the next call that writes. */
			if (wait && errno == ETIMEDOUT)
				return -ETIMEDOUT;
			c->broken = 1;
			return -ECONNRESET;
		}
		c->pend_off += (size_t)n;
	}
	c->pend_off = c->pend_len = 0;
	return 0;
}

/* Append the acknowledgements, then f (may be NULL), to the pending
 * bytes.  0 or -errno (nothing appended). */
static int
ipc_queue_frame(struct ipc_conn *c, const struct wire_frame *f)
{
	struct wire_frame ack = { .type = WIRE_ACK };
	uint8_t ids[IPC_ACK_BATCH * 8];
	size_t alen = 0, flen = f ? wire_encoded_len(f) : 0, len;

	if (f != NULL && flen == 0)
		return -EINVAL;
	if (c->next_fd >= 0 && c->pend_fd >= 0)
		return -EAGAIN;		/* one memfd on its way at a time */
	if (c->nacks > 0) {
		for (unsigned i = 0; i < c->nacks; i++)
			wire_put64(ids + 8 * i, c->acks[i]);
		ack.b.ack.ids.p = ids;
		ack.b.ack.ids.len = 8u * c->nacks;
		alen = wire_encoded_len(&ack);
	}
	len = alen + flen;
	if (len > INT_MAX)
		return -EMSGSIZE;
	if (len > c->pend_cap - c->pend_len) {
		size_t need = c->pend_len + len, cap;
		uint8_t *p;

		/* Slide the unwritten bytes to the front first (TLS takes
		 * a moved buffer with the same bytes). */
		if (c->pend_off > 0) {
			memmove(c->pend, c->pend + c->pend_off,
			    c->pend_len - c->pend_off);
			c->pend_len -= c->pend_off;
			if (c->pend_fd >= 0)
				c->pend_fd_at -= c->pend_off;
			c->pend_off = 0;
			need = c->pend_len + len;
		}
		if (need > c->pend_cap) {
			cap = c->pend_cap ? c->pend_cap : 4096;
			while (cap < need)
				cap *= 2;
			if ((p = realloc(c->pend, cap)) == NULL)
				return -ENOMEM;
			c->pend = p;
			c->pend_cap = cap;
		}
	}
	if (alen > 0)
		wire_encode_len(&ack, alen, c->pend + c->pend_len, alen);
	if (f != NULL)
		wire_encode_len(f, flen, c->pend + c->pend_len + alen, flen);
	c->last_at = c->pend_len + alen;
	c->last_fd = c->next_fd >= 0;
	if (c->next_fd >= 0) {
		/* The broker pairs descriptors with memfd SENDs in order:
		 * riding with the ACK before it is as good. */
		c->pend_fd = c->next_fd;
		c->pend_fd_at = c->pend_len;
		c->next_fd = -1;
	}
	c->pend_len += len;
	c->nacks = 0;
	return 0;
}

/* Take back the frame queued last if none of its bytes went out, so
 * that the broker never sees it: 1 when taken back, 0 when it must go
 * (its first bytes went; or TLS, which takes bytes offered). */
static int
ipc_unqueue_last(struct ipc_conn *c)
{
	if (c->tls != NULL || c->pend_off > c->last_at ||
	    c->last_at > c->pend_len)
		return 0;
	if (c->last_fd) {
		if (c->pend_fd < 0)
			return 0;	/* its memfd went, with the acks */
		close(c->pend_fd);
		c->pend_fd = -1;
	}
	c->pend_len = c->last_at;
	if (c->pend_off == c->pend_len)
		c->pend_off = c->pend_len = 0;
	return 1;
}

/* Send f (NULL: only the acknowledgements) after what is pending,
 * waiting for the socket. */
static int
ipc_write_frame(struct ipc_conn *c, const struct wire_frame *f)
{
	int r;

	if ((r = ipc_queue_frame(c, f)) < 0)
		return r;
	return ipc_flush_pending(c, 1);
}

/* The application has message id: acknowledge it with the next request
 * (or now, when the batch is full). */
static void
ipc_ack(struct ipc_conn *c, uint64_t id)
{
	c->acks[c->nacks++] = id;
	if (c->nacks == IPC_ACK_BATCH && ipc_write_frame(c, NULL) < 0)
		c->nacks = 0;	/* broken: the broker requeues them */
}

/* Before waiting for the broker: what is batched goes out, or the
 * broker may be waiting for it too. */
static int
ipc_flush_before_wait(struct ipc_conn *c)
{
	return c->pend_off < c->pend_len ? ipc_flush_pending(c, 1) : 0;
}

/* Wait up to timeout_ms (IPC_FOREVER: no limit) for the descriptor to be
 * readable.  0 ready, -ETIMEDOUT, or -errno. */
static int
ipc_poll(struct ipc_conn *c, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int r;

	/* What TLS decrypted already does not show on the socket. */
	if (c->tls != NULL && tls_pending(c->tls))
		return 0;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

/* A DELIVER whose payload is a memfd: its descriptor is the oldest
 * received; the payload is mapped (read-only, until the next frame is
 * read), so every reader of frames sees bytes as for any other.  0, or
 * -EPROTO (no descriptor, or not a memfd of a size the broker allows),
 * -ENOMEM. */
static int
ipc_map_payload(struct ipc_conn *c, struct wire_deliver *d)
{
	struct stat st;
	void *p = NULL;
	int fd, err = 0;

	if (c->nfdq == 0)
		return -EPROTO;
	fd = c->fdq[0];
	memmove(c->fdq, c->fdq + 1, --c->nfdq * sizeof(c->fdq[0]));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > c->max_payload || d->payload.len != 0)
		err = -EPROTO;
	else if (st.st_size > 0 && (p = mmap(NULL, (size_t)st.st_size,
	    PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0)) == MAP_FAILED)
		err = -ENOMEM;
	close(fd);
	if (err < 0)
		return err;
	c->frame_map = p;
	c->frame_map_len = (size_t)st.st_size;
	d->payload.p = p;
	d->payload.len = (size_t)st.st_size;
	d->flags &= ~WIRE_DELIVER_FD;
	return 0;
}

/* Read the next frame into f (borrowing from c->in until the next
 * call).  timeout_ms bounds the wait for its first byte, and a timed
 * call's deadline every wait.  Returns 0, or
 * -ECONNRESET (broker gone), -EPROTO (a frame that does not validate),
 * -ETIMEDOUT, -ENOMEM. */
static int
ipc_read_frame(struct ipc_conn *c, struct wire_frame *f, int timeout_ms)
{
	uint32_t max_frame = c->max_payload + WIRE_OVERHEAD_MAX;

	if (c->broken)
		return -ECONNRESET;
	/* Drop the frame handed out last time. */
	c->in_off += c->in_used;
	c->in_used = 0;
	if (c->frame_map != NULL) {
		munmap(c->frame_map, c->frame_map_len);
		c->frame_map = NULL;
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	for (;;) {
		size_t have = c->in_len - c->in_off;
		long len = wire_frame_len(c->in + c->in_off, have, max_frame);
		size_t want = IPC_READ_CHUNK;
		long n;
		int r;

		if (len < 0) {
			c->broken = 1;
			return -EPROTO;
		}
		if (len > 0 && (size_t)len <= have) {
			if (wire_decode(c->in + c->in_off, (size_t)len, f,
			    NULL) < 0) {
				c->broken = 1;
				return -EPROTO;
			}
			c->in_used = (size_t)len;
			if (f->type == WIRE_BYE) {
				c->broken = 1;
				return -ECONNRESET;
			}
			if (f->type == WIRE_DELIVER &&
			    (f->b.deliver.flags & WIRE_DELIVER_FD) &&
			    (r = ipc_map_payload(c, &f->b.deliver)) < 0) {
				c->broken = 1;
				return r;
			}
			return 0;
		}
		if (len > 0 && (size_t)len - have > want)
			want = (size_t)len - have;
		if (want > c->in_cap - c->in_len) {
			/* Slide the partial frame to the front; grow only
			 * if that is not room enough. */
			if (c->in_off > 0) {
				memmove(c->in, c->in + c->in_off, have);
				c->in_len = have;
				c->in_off = 0;
			}
			if (want > c->in_cap - c->in_len) {
				uint8_t *p = realloc(c->in, c->in_len + want);

				if (p == NULL)
					return -ENOMEM;
				c->in = p;
				c->in_cap = c->in_len + want;
			}
		}
		/* In a timed call every read waits no longer than its
		 * deadline, the rest of a frame too. */
		if ((have == 0 || c->deadline != 0) &&
		    ipc_wait_ms(c, timeout_ms) != IPC_FOREVER &&
		    (r = ipc_poll(c, ipc_wait_ms(c, timeout_ms))) < 0)
			return r;
		n = ipc_io_read(c, c->in + c->in_len, c->in_cap - c->in_len);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == ETIMEDOUT)
				return -ETIMEDOUT;	/* TLS: a record's rest */
			c->broken = 1;
			return -ECONNRESET;
		}
		c->in_len += (size_t)n;
	}
}

static void
ipc_fill_info(const struct wire_deliver *d, struct ipc_msg_info *info)
{
	/* No memset of the whole: its address arrays are long, and this
	 * runs for every message.  The strings are terminated below. */
	info->id = d->msg_id;
	info->pid = (pid_t)d->pid;
	info->uid = d->uid;
	info->gid = d->gid;
	info->len = d->payload.len;
	info->enqueue_ns = d->enqueue_ns;
	info->flags = d->flags & IPC_MSG_REDELIVERED;
	/* The broker's strings are bounded by WIRE_STR_MAX; longer than
	 * an address means a broker we do not understand. */
	if (wire_str_copy(d->sender, info->sender, sizeof(info->sender)) < 0)
		info->sender[0] = '\0';
	if (wire_str_copy(d->source, info->source, sizeof(info->source)) < 0)
		info->source[0] = '\0';
}

/* Keep the armed receive's message until the application asks. */
static int
ipc_stash_deliver(struct ipc_conn *c, const struct wire_frame *f)
{
	uint8_t *p = malloc(f->b.deliver.payload.len ?
	    f->b.deliver.payload.len : 1);

	if (p == NULL)
		return -ENOMEM;
	if (f->b.deliver.payload.len)
		memcpy(p, f->b.deliver.payload.p, f->b.deliver.payload.len);
	ipc_fill_info(&f->b.deliver, &c->stash.info);
	c->stash.data = p;
	c->have_stash = 1;
	c->armed = 0;
	ipc_stash_signal(c);
	return 0;
}

/* The armed receive's answer came: a message (stashed), or an error the
 * next receive on that source reports. */
static int
ipc_take_armed(struct ipc_conn *c, const struct wire_frame *f)
{
	if (f->type == WIRE_DELIVER)
		return ipc_stash_deliver(c, f);
	/* An ERROR: the arm is over; the next receive asks again. */
	c->armed = 0;
	return 0;
}

/* --- receive streams (ipc_set_prefetch) ------------------------------- */

static int ipc_unsolicited(struct ipc_conn *c, const struct wire_frame *f,
    uint64_t waiting_id);

static struct ipc_stream *
ipc_stream_by_id(struct ipc_conn *c, uint64_t id)
{
	for (unsigned i = 0; i < IPC_STREAMS_MAX; i++)
		if (c->streams[i].id != 0 && c->streams[i].id == id)
			return &c->streams[i];
	return NULL;
}

static struct ipc_stream *
ipc_stream_by_name(struct ipc_conn *c, const char *name)
{
	for (unsigned i = 0; i < IPC_STREAMS_MAX; i++)
		if (c->streams[i].id != 0 &&
		    strcmp(c->streams[i].name, name) == 0)
			return &c->streams[i];
	return NULL;
}

/* The broker ended it (or we did): what it sent stays kept. */
static void
ipc_stream_close(struct ipc_stream *s)
{
	s->id = 0;
	s->credit = s->held = 0;
	s->name[0] = '\0';
}

/* Keep a streamed message that came while the application was busy with
 * something else.  0 or -ENOMEM. */
static int
ipc_stream_keep(struct ipc_conn *c, struct ipc_stream *s,
    const struct wire_frame *f)
{
	size_t len = f->b.deliver.payload.len;
	struct ipc_pmsg *pm = malloc(sizeof(*pm) + len);

	if (s != NULL && s->credit > 0)
		s->credit--;
	if (pm == NULL)
		return -ENOMEM;
	pm->streamed = s != NULL;
	ipc_fill_info(&f->b.deliver, &pm->info);
	if (len)
		memcpy(pm->data, f->b.deliver.payload.p, len);
	pm->next = NULL;
	if (c->pq_tail != NULL)
		c->pq_tail->next = pm;
	else
		c->pq_head = pm;
	c->pq_tail = pm;
	if (s != NULL)
		s->held++;
	ipc_stash_signal(c);
	return 0;
}

/* Open a stream on mailbox name with the connection's prefetch as its
 * credit.  NULL when every slot is taken (the caller asks the old way)
 * or on error (*err). */
static struct ipc_stream *
ipc_stream_open(struct ipc_conn *c, const char *name, int *err)
{
	struct wire_frame req = { .type = WIRE_CREDIT };
	struct ipc_stream *s = NULL;

	*err = 0;
	for (unsigned i = 0; i < IPC_STREAMS_MAX && s == NULL; i++)
		if (c->streams[i].id == 0)
			s = &c->streams[i];
	if (s == NULL || strlen(name) >= sizeof(s->name))
		return NULL;
	req.id = ++c->next_id;
	req.b.credit.credit = c->prefetch;
	req.b.credit.max_len = c->max_payload;
	req.b.credit.source = wire_str(name);
	if ((*err = ipc_write_frame(c, &req)) < 0 && *err != -ETIMEDOUT)
		return NULL;
	/* Out of time (a timed receive), the CREDIT is still pending and
	 * goes with the next write: the stream is open all the same. */
	s->id = req.id;
	s->credit = c->prefetch;
	s->held = 0;
	strcpy(s->name, name);
	return *err < 0 ? NULL : s;
}

/* The application took message id of stream s (NULL: its stream is
 * gone): acknowledge it, and once the credit out and the messages held
 * are down to half the prefetch, give the broker credit for the rest. */
static int
ipc_stream_took(struct ipc_conn *c, struct ipc_stream *s, uint64_t id)
{
	struct wire_frame req = { .type = WIRE_CREDIT };
	uint32_t more;
	int r;

	ipc_ack(c, id);
	if (s == NULL || c->prefetch == 0 ||
	    s->credit + s->held > c->prefetch / 2)
		return 0;
	more = c->prefetch - s->credit - s->held;
	req.id = s->id;
	req.b.credit.credit = more;
	req.b.credit.max_len = c->max_payload;
	req.b.credit.source = wire_str(s->name);
	s->credit += more;
	r = ipc_write_frame(c, &req);
	/* Out of time, the CREDIT goes with the next write: the message
	 * taken is the application's all the same. */
	return r == -ETIMEDOUT ? 0 : r;
}

/* End stream s: CREDIT with END, answered by OK (or ERROR if the broker
 * had ended it already); what it sent before that is kept. */
static int
ipc_stream_end(struct ipc_conn *c, struct ipc_stream *s)
{
	struct wire_frame req = { .type = WIRE_CREDIT }, f;
	int r;

	req.id = s->id;
	req.b.credit.flags = WIRE_CREDIT_END;
	req.b.credit.source = wire_str(s->name);
	if ((r = ipc_write_frame(c, &req)) < 0)
		return r;
	for (int answers = 1, first = 1; answers > 0;) {
		if ((r = ipc_read_frame(c, &f, IPC_FOREVER)) < 0)
			return r;
		if (f.id == s->id && f.type == WIRE_DELIVER) {
			if ((r = ipc_stream_keep(c, s, &f)) < 0)
				return r;
			continue;
		}
		if (f.id != s->id) {
			if ((r = ipc_unsolicited(c, &f, 0)) < 0)
				return r;
			continue;
		}
		/* OK: it ended now.  An ERROR first means the broker had
		 * ended it (or refused to open it) before it read END,
		 * whose own answer, ERROR NOENT, still comes. */
		if (f.type == WIRE_ERROR && first)
			answers++;
		first = 0;
		answers--;
	}
	ipc_stream_close(s);
	return 0;
}

/* A frame no call is waiting for: the armed receive's answer, a failure
 * report, an async send's error, or a late answer.  Returns 1 when it
 * was one (and is dealt with), 0 when it is the answer to waiting_id, or
 * -errno. */
static int
ipc_unsolicited(struct ipc_conn *c, const struct wire_frame *f,
    uint64_t waiting_id)
{
	struct ipc_stream *s;

	if (c->armed && f->id == c->armed_id) {
		/* With a stream on the same mailbox, it goes behind what
		 * the stream brought and ahead of what it brings next:
		 * kept with them, in the broker's order. */
		if (f->type == WIRE_DELIVER &&
		    ipc_stream_by_name(c, c->armed_from) != NULL) {
			c->armed = 0;
			return ipc_stream_keep(c, NULL, f) < 0 ? -ENOMEM : 1;
		}
		return ipc_take_armed(c, f) < 0 ? -ENOMEM : 1;
	}
	if ((f->type == WIRE_DELIVER || f->type == WIRE_ERROR) &&
	    (s = ipc_stream_by_id(c, f->id)) != NULL) {
		if (f->type == WIRE_ERROR) {
			ipc_stream_close(s);	/* the next receive asks */
			return 1;
		}
		return ipc_stream_keep(c, s, f) < 0 ? -ENOMEM : 1;
	}
	if (f->type == WIRE_FAILED) {
		ipc_record_failure(c, f->id, f->b.failed.msg_id,
		    wire_errno(f->b.failed.code));
		return 1;
	}
	if (waiting_id != 0 && f->id == waiting_id)
		return 0;
	if (f->type == WIRE_DELIVER) {
		/* For a receive given up on (ipc_recv_timed past its
		 * deadline): the message is ours now, kept for the next
		 * receive from its source, which takes it first. */
		ipc_late_take(c, f->id);
		return ipc_stream_keep(c, NULL, f) < 0 ? -ENOMEM : 1;
	}
	if (ipc_late_take(c, f->id))
		return 1;	/* the answer to a call that gave up */
	if (f->type == WIRE_ERROR)
		ipc_record_failure(c, f->id, 0, wire_errno(f->b.error.code));
	return 1;
}

/* Send req and read frames until the reply to it; what else comes on
 * the way is dealt with.  An ERROR reply returns -errno, with its aux in
 * *aux_out (may be NULL).  In a timed call, -ETIMEDOUT when the deadline
 * came first: the request was not sent, or it was and its answer will be
 * taken as it comes (a message delivered is kept, ipc_unsolicited). */
static int
ipc_call(struct ipc_conn *c, struct wire_frame *req, struct wire_frame *rep,
    uint32_t *aux_out)
{
	int r;

	if (c->broken)
		return -ECONNRESET;
	req->id = ++c->next_id;
	if ((r = ipc_write_frame(c, req)) < 0) {
		/* A timed call out of time: a request not begun is taken
		 * back (never sent); one begun must go on, its rest kept
		 * pending, and is given up on like one sent. */
		if (r == -ETIMEDOUT && !ipc_unqueue_last(c))
			ipc_late_add(c, req->id);
		return r;
	}
	for (;;) {
		if ((r = ipc_read_frame(c, rep, IPC_FOREVER)) < 0) {
			if (r == -ETIMEDOUT)
				ipc_late_add(c, req->id);
			return r;
		}
		if ((r = ipc_unsolicited(c, rep, req->id)) < 0)
			return r;
		if (r == 1)
			continue;
		/* Frames read with the reply are not seen on the
		 * socket any more. */
		ipc_stash_signal(c);
		if (rep->type == WIRE_ERROR) {
			if (aux_out != NULL)
				*aux_out = rep->b.error.aux;
			return -wire_errno(rep->b.error.code);
		}
		return 0;
	}
}

/* Is a whole frame already buffered, beyond the one handed out last? */
static int
ipc_frame_buffered(const struct ipc_conn *c)
{
	size_t off = c->in_off + c->in_used;
	long len = wire_frame_len(c->in + off, c->in_len - off,
	    c->max_payload + WIRE_OVERHEAD_MAX);

	return len != 0 && (len < 0 || (size_t)len <= c->in_len - off);
}

/* Take in, without waiting, every frame the broker has sent so far. */
static int
ipc_drain(struct ipc_conn *c)
{
	struct wire_frame f;
	int r;

	/* Push out what is batched, as far as the socket takes it. */
	if ((r = ipc_flush_pending(c, 0)) < 0 && r != -EAGAIN)
		return r;
	while (!c->broken) {
		if (!ipc_frame_buffered(c) && ipc_poll(c, 0) < 0)
			return 0;	/* nothing more now */
		if ((r = ipc_read_frame(c, &f, 0)) < 0)
			return r == -ETIMEDOUT ? 0 : r;
		if ((r = ipc_unsolicited(c, &f, 0)) < 0)
			return r;
	}
	return -ECONNRESET;
}

/* --- connections -------------------------------------------------------- */

/* How long a tls:// connection may take to connect and authenticate. */
#define IPC_TLS_HANDSHAKE_MS	10000

/* "tls://host[:port]": TCP to a remote broker, then TLS 1.3 with the
 * credentials the environment names.  0 or -errno. */
static int
ipc_open_tls(struct ipc_conn *c, const char *hostport)
{
	struct tls_conf conf = {
		.psk_file = getenv("IPC_TLS_PSK"),
		.ca_file = getenv("IPC_TLS_CA"),
		.cert_file = getenv("IPC_TLS_CERT"),
		.key_file = getenv("IPC_TLS_KEY"),
	};
	char text[IPC_ADDR_MAX], why[256];
	struct ipc_addr a;
	int want = POLLOUT, r;

	/* The address parser knows hosts, ports and [v6]. */
	if (snprintf(text, sizeof(text), "x@%s", hostport) >=
	    (int)sizeof(text) || ipc_addr_parse(text, &a) < 0)
		return -EINVAL;
	/* No usable key or certificate: ENOKEY, not a vague EINVAL. */
	if ((r = tls_ctx_new(&conf, 0, &c->tls_ctx, why, sizeof(why))) < 0)
		return r == -ENOMEM ? r : -ENOKEY;
	if ((c->fd = connectSocket(a.host, a.port > 0 ? a.port :
	    IPC_TCP_PORT)) < 0)
		return -errno;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 },
	    sizeof(int));
	if (nonblockSocket(c->fd, 1) < 0 ||
	    (c->tls = tls_new(c->tls_ctx, c->fd)) == NULL)
		return -ENOMEM;
	while ((r = tls_handshake(c->tls, &want, why, sizeof(why))) == 0)
		if (ipc_tls_wait(c, want, IPC_TLS_HANDSHAKE_MS) < 0)
			return -errno;
	return r == 1 ? 0 : r == -EACCES ? -EACCES : -EPROTO;
}

struct ipc_conn *
ipc_open(const char *where)
{
	char path[PATH_MAX];
	struct wire_frame req = { .type = WIRE_HELLO }, rep;
	struct ipc_conn *c;
	int r, tls = 0;

	if (where == NULL) {
		if (ipc_default_socket(path, sizeof(path)) < 0)
			return NULL;
	} else if (strncmp(where, "unix:", 5) == 0 && where[5] != '\0' &&
	    strlen(where + 5) < sizeof(path)) {
		strcpy(path, where + 5);
	} else if (strncmp(where, "tls://", 6) == 0 && where[6] != '\0') {
		tls = 1;
	} else {
		errno = EINVAL;
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	/* Until WELCOME says otherwise, accept small frames only. */
	c->max_payload = 4096;
	c->batch_next = IPC_BATCH_BYTES;
	c->pend_fd = c->next_fd = -1;
	c->memfd_min = ipc_memfd_min();
	c->poll_fd = c->stash_fd = -1;
	c->fd = -1;
	if (tls) {
		if ((r = ipc_open_tls(c, where + 6)) < 0) {
			c->broken = 1;
			ipc_close(c);
			errno = -r;
			return NULL;
		}
	} else if ((c->fd = connectSocketUnix(path)) < 0) {
		r = -errno;
		free(c);
		errno = -r;
		return NULL;
	}
	req.b.hello.magic = WIRE_MAGIC;
	req.b.hello.version_min = WIRE_VERSION;
	req.b.hello.version_max = WIRE_VERSION;
	r = ipc_call(c, &req, &rep, NULL);
	if (r == 0 && rep.type != WIRE_WELCOME)
		r = -EPROTO;
	if (r == 0 && rep.b.welcome.version != WIRE_VERSION)
		r = -EPROTO;
	if (r < 0) {
		ipc_close(c);
		errno = r == -ECONNRESET ? EPROTO : -r;
		return NULL;
	}
	c->max_payload = rep.b.welcome.max_payload;
	c->pid = (pid_t)rep.b.welcome.pid;
	return c;
}

int
ipc_close(struct ipc_conn *c)
{
	if (c == NULL)
		return 0;
	/* Finish an async send's frame and say which messages the
	 * application has; a broker that is gone needs neither. */
	if (c->fd >= 0 && !c->broken)
		ipc_write_frame(c, NULL);
	if (c->tls != NULL) {
		if (!c->broken)
			tls_shutdown(c->tls);
		tls_free(c->tls);
	}
	tls_ctx_free(c->tls_ctx);
	if (c->fd >= 0)
		closeSocket(c->fd);
	free(c->pend);
	if (c->pend_fd >= 0)
		close(c->pend_fd);
	if (c->next_fd >= 0)
		close(c->next_fd);
	while (c->nfdq > 0)
		close(c->fdq[--c->nfdq]);
	if (c->frame_map != NULL)
		munmap(c->frame_map, c->frame_map_len);
	free(c->fails);
	if (c->poll_fd >= 0)
		close(c->poll_fd);
	if (c->stash_fd >= 0)
		close(c->stash_fd);
	free(c->in);
	free(c->stash.data);
	while (c->pq_head != NULL) {
		struct ipc_pmsg *pm = c->pq_head;

		c->pq_head = pm->next;
		free(pm);
	}
	free(c);
	return 0;
}

int
ipc_fd(struct ipc_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int saved;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (c->poll_fd >= 0)
		return c->poll_fd;
	if ((c->poll_fd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return -1;
	c->stash_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stash_fd < 0 ||
	    epoll_ctl(c->poll_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0 ||
	    epoll_ctl(c->poll_fd, EPOLL_CTL_ADD, c->stash_fd, &ev) < 0) {
		saved = errno;
		close(c->poll_fd);
		if (c->stash_fd >= 0)
			close(c->stash_fd);
		c->poll_fd = c->stash_fd = -1;
		errno = saved;
		return -1;
	}
	ipc_stash_signal(c);
	return c->poll_fd;
}

pid_t
ipc_pid(const struct ipc_conn *c)
{
	if (c == NULL)
		return ipc_fail(-EBADF);
	return c->pid;
}

/* --- mailboxes ---------------------------------------------------------- */

void
ipc_mbox_attr_init(struct ipc_mbox_attr *attr)
{
	if (attr == NULL)
		return;
	attr->capacity = -1;
	attr->max_bytes = -1;
	attr->mode = -1;
	attr->exclusive = 0;
	attr->durable = 0;
}

static void
ipc_fill_mbox_info(const struct wire_mbox_info *w, struct ipc_mbox_info *o)
{
	memset(o, 0, sizeof(*o));
	wire_str_copy(w->name, o->name, sizeof(o->name));
	uuid_unparse_lower(w->uuid, o->uuid);
	o->capacity = w->capacity;
	o->max_bytes = w->max_bytes;
	o->mode = w->mode;
	o->uid = w->uid;
	o->gid = w->gid;
	o->depth = w->depth;
	o->bytes = w->bytes;
	o->waiting_receivers = w->waiting_receivers;
	o->waiting_senders = w->waiting_senders;
	o->msgs_in = w->msgs_in;
	o->msgs_out = w->msgs_out;
	o->created_ns = w->created_ns;
	o->durable = (w->flags & WIRE_INFO_DURABLE) != 0;
}

/* A mailbox name as requests carry it: valid, local. */
static int
ipc_check_name(const char *name)
{
	struct ipc_addr a;

	if (name == NULL || ipc_addr_parse(name, &a) < 0 ||
	    a.kind != IPC_ADDR_MAILBOX)
		return -EINVAL;
	if (a.host[0] != '\0')
		return -ENOTSUP;
	return 0;
}

int
ipc_mbox_create(struct ipc_conn *c, const char *name,
    const struct ipc_mbox_attr *attr, struct ipc_mbox_info *info_out)
{
	struct wire_frame req = { .type = WIRE_MBOX_CREATE }, rep;
	struct ipc_mbox_attr def;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if ((r = ipc_check_name(name)) < 0)
		return ipc_fail(r);
	if (attr == NULL) {
		ipc_mbox_attr_init(&def);
		attr = &def;
	}
	if (attr->capacity < -1 || attr->capacity >= (int64_t)UINT32_MAX ||
	    attr->max_bytes < -1 || attr->max_bytes == 0 ||
	    (attr->mode != -1 && (attr->mode & ~0777) != 0))
		return ipc_fail(-EINVAL);
	req.b.create.capacity = attr->capacity < 0 ? WIRE_DEFAULT32 :
	    (uint32_t)attr->capacity;
	req.b.create.max_bytes = attr->max_bytes < 0 ? WIRE_DEFAULT64 :
	    (uint64_t)attr->max_bytes;
	req.b.create.mode = attr->mode < 0 ? WIRE_DEFAULT32 :
	    (uint32_t)attr->mode;
	req.b.create.flags = (attr->exclusive ? WIRE_CREATE_EXCL : 0) |
	    (attr->durable ? WIRE_CREATE_DURABLE : 0);
	req.b.create.name = wire_str(name);
	if ((r = ipc_call(c, &req, &rep, NULL)) < 0)
		return ipc_fail(r);
	if (rep.type != WIRE_MBOX_INFO)
		return ipc_fail(-EPROTO);
	if (info_out != NULL)
		ipc_fill_mbox_info(&rep.b.info, info_out);
	return 0;
}

/* A request that names one mailbox (STAT, DELETE), and its reply. */
static int
ipc_name_call(struct ipc_conn *c, uint16_t type, const char *name,
    struct wire_frame *rep)
{
	struct wire_frame req = { .type = type };
	int r;

	if (c == NULL)
		return -EBADF;
	if ((r = ipc_check_name(name)) < 0)
		return r;
	req.b.name.name = wire_str(name);
	return ipc_call(c, &req, rep, NULL);
}

int
ipc_mbox_stat(struct ipc_conn *c, const char *name,
    struct ipc_mbox_info *info_out)
{
	struct wire_frame rep;
	int r;

	if ((r = ipc_name_call(c, WIRE_MBOX_STAT, name, &rep)) < 0)
		return ipc_fail(r);
	if (rep.type != WIRE_MBOX_INFO)
		return ipc_fail(-EPROTO);
	if (info_out != NULL)
		ipc_fill_mbox_info(&rep.b.info, info_out);
	return 0;
}

int
ipc_mbox_chmod(struct ipc_conn *c, const char *name, int mode)
{
	struct wire_frame req = { .type = WIRE_MBOX_CHMOD }, rep;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if ((r = ipc_check_name(name)) < 0)
		return ipc_fail(r);
	if (mode < 0 || (mode & ~0777) != 0)
		return ipc_fail(-EINVAL);
	req.b.chmod.mode = (uint32_t)mode;
	req.b.chmod.name = wire_str(name);
	if ((r = ipc_call(c, &req, &rep, NULL)) < 0)
		return ipc_fail(r);
	return rep.type == WIRE_OK ? 0 : ipc_fail(-EPROTO);
}

int
ipc_mbox_chown(struct ipc_conn *c, const char *name, uid_t uid, gid_t gid)
{
	struct wire_frame req = { .type = WIRE_MBOX_CHOWN }, rep;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if ((r = ipc_check_name(name)) < 0)
		return ipc_fail(r);
	/* (uid_t)-1 and (gid_t)-1 leave it, as chown(2); on the wire that
	 * is WIRE_DEFAULT32. */
	req.b.chown.uid = uid == (uid_t)-1 ? WIRE_DEFAULT32 : (uint32_t)uid;
	req.b.chown.gid = gid == (gid_t)-1 ? WIRE_DEFAULT32 : (uint32_t)gid;
	req.b.chown.name = wire_str(name);
	if ((r = ipc_call(c, &req, &rep, NULL)) < 0)
		return ipc_fail(r);
	return rep.type == WIRE_OK ? 0 : ipc_fail(-EPROTO);
}

int
ipc_mbox_delete(struct ipc_conn *c, const char *name)
{
	struct wire_frame rep;
	int r;

	if ((r = ipc_name_call(c, WIRE_MBOX_DELETE, name, &rep)) < 0)
		return ipc_fail(r);
	return rep.type == WIRE_OK ? 0 : ipc_fail(-EPROTO);
}

/* --- messages ----------------------------------------------------------- */

/* The memfd threshold: $IPC_MEMFD_MIN (bytes; 0 or unset: off). */
static size_t
ipc_memfd_min(void)
{
	const char *e = getenv("IPC_MEMFD_MIN");
	char *end;
	unsigned long long v;

	if (e == NULL || *e == '\0')
		return IPC_MEMFD_MIN;
	errno = 0;
	v = strtoull(e, &end, 10);
	if (errno != 0 || *end != '\0' || v > SIZE_MAX)
		return IPC_MEMFD_MIN;
	return (size_t)v;
}

/* A sealed memfd holding buf (len bytes), or -errno.  Sealed against
 * writes and resizing, so that what the broker checks and hands on is
 * what was sent, whatever this process does later. */
static int
ipc_make_memfd(const void *buf, size_t len)
{
	const int seals = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_SEAL;
	size_t off = 0;
	int fd, err;

	if ((fd = memfd_create("libipc", MFD_CLOEXEC |
	    MFD_ALLOW_SEALING)) < 0)
		return -errno;
	/* write(), not a mapping: populating a shared writable mapping
	 * measured ten times slower here. */
	while (off < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		off += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, seals) < 0)
		goto fail;
	return fd;
fail:
	err = errno ? errno : EIO;
	close(fd);
	return -err;
}

/* Make req's payload go as a memfd when it is large and the broker is
 * local; a memfd that cannot be made leaves it inline.  The descriptor
 * goes with the next frame queued (c->next_fd). */
static void
ipc_send_by_memfd(struct ipc_conn *c, struct wire_frame *req)
{
	struct wire_send *s = &req->b.send;
	int fd;

	if (c->memfd_min == 0 || s->payload.len < c->memfd_min ||
	    c->tls != NULL ||
	    (fd = ipc_make_memfd(s->payload.p, s->payload.len)) < 0)
		return;
	c->next_fd = fd;
	s->flags |= WIRE_SEND_FD;
	s->payload.p = NULL;
	s->payload.len = 0;
}

/* A send that did not go: its memfd is not needed. */
static void
ipc_drop_next_fd(struct ipc_conn *c)
{
	if (c->next_fd >= 0) {
		close(c->next_fd);
		c->next_fd = -1;
	}
}

static uint32_t
ipc_wire_timeout(int timeout_ms)
{
	return timeout_ms < 0 ? WIRE_FOREVER : (uint32_t)timeout_ms;
}

int
ipc_send_timed(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, int timeout_ms, uint64_t *id_out)
{
	struct wire_frame req = { .type = WIRE_SEND }, rep;
	struct ipc_addr a;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (to == NULL || ipc_addr_parse_fast(to, &a) < 0 ||
	    (buf == NULL && len > 0) || timeout_ms < IPC_FOREVER)
		return ipc_fail(-EINVAL);
	if (len > c->max_payload)
		return ipc_fail(-EMSGSIZE);
	req.b.send.timeout_ms = ipc_wire_timeout(timeout_ms);
	req.b.send.dest = wire_str(to);
	req.b.send.payload.p = buf;
	req.b.send.payload.len = len;
	/* Every wait, for the socket or for the answer, ends by the
	 * deadline (IPC_FOREVER: none). */
	ipc_deadline_set(c, timeout_ms);
	/* A memfd waiting to go goes first (one at a time). */
	if (c->pend_fd >= 0 && (r = ipc_flush_pending(c, 1)) < 0) {
		c->deadline = 0;
		return ipc_fail(r == -ETIMEDOUT && timeout_ms == 0 ?
		    -EAGAIN : r);
	}
	ipc_send_by_memfd(c, &req);
	r = ipc_call(c, &req, &rep, NULL);
	ipc_drop_next_fd(c);
	c->deadline = 0;
	if (r == -ETIMEDOUT && timeout_ms == 0)
		r = -EAGAIN;
	if (r < 0)
		return ipc_fail(r);
	if (rep.type != WIRE_SENT)
		return ipc_fail(-EPROTO);
	if (id_out != NULL)
		*id_out = rep.b.sent.msg_id;
	return 0;
}

int
ipc_send(struct ipc_conn *c, const char *to, const void *buf, size_t len)
{
	return ipc_send_timed(c, to, buf, len, IPC_FOREVER, NULL);
}

/* An async send (more: batched, written once IPC_BATCH_BYTES are
 * waiting; else written now, as far as the socket takes it). */
static int
ipc_send_nowait(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, uint64_t *id_out, int more)
{
	struct wire_frame req = { .type = WIRE_SEND };
	struct ipc_addr a;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (to == NULL || ipc_addr_parse_fast(to, &a) < 0 ||
	    (buf == NULL && len > 0))
		return ipc_fail(-EINVAL);
	if (len > c->max_payload)
		return ipc_fail(-EMSGSIZE);
	if (c->broken)
		return ipc_fail(-ECONNRESET);
	/* Its failure could not be reported without loss: the reports
	 * waiting must be read first. */
	if (c->nfails >= IPC_FAIL_MAX)
		return ipc_fail(-EAGAIN);
	/* An unbatched send leaves at once: what waits before it must
	 * be out first (at most its own frame then waits, for the next
	 * call).  A batched one may wait behind a bounded amount. */
	if (!more && (r = ipc_flush_pending(c, 0)) < 0)
		return ipc_fail(r);
	if (more && c->pend_len - c->pend_off >= IPC_PEND_MAX &&
	    (r = ipc_flush_pending(c, 0)) < 0 &&
	    c->pend_len - c->pend_off >= IPC_PEND_MAX)
		return ipc_fail(r);
	req.id = ++c->next_id;
	req.b.send.timeout_ms = 0;
	req.b.send.flags = WIRE_SEND_ASYNC;
	req.b.send.dest = wire_str(to);
	req.b.send.payload.p = buf;
	req.b.send.payload.len = len;
	if (c->memfd_min > 0 && len >= c->memfd_min && c->pend_fd >= 0 &&
	    (r = ipc_flush_pending(c, 0)) < 0)
		return ipc_fail(r);
	ipc_send_by_memfd(c, &req);
	r = ipc_queue_frame(c, &req);
	ipc_drop_next_fd(c);
	if (r < 0)
		return ipc_fail(r);
	/* A batch is written once it is big enough; if the socket is full
	 * the next try waits for another batch's worth, not one syscall
	 * per message. */
	if (!more || c->pend_len - c->pend_off >= c->batch_next) {
		r = ipc_flush_pending(c, 0);
		if (r < 0 && r != -EAGAIN)
			return ipc_fail(r);
		c->batch_next = (c->pend_len - c->pend_off) + IPC_BATCH_BYTES;
	}
	if (id_out != NULL)
		*id_out = req.id;
	return 0;
}

int
ipc_send_async(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, uint64_t *id_out)
{
	return ipc_send_nowait(c, to, buf, len, id_out, 0);
}

int
ipc_send_more(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, uint64_t *id_out)
{
	return ipc_send_nowait(c, to, buf, len, id_out, 1);
}

int
ipc_flush(struct ipc_conn *c)
{
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (c->broken)
		return ipc_fail(-ECONNRESET);
	/* Acknowledgements go too: the application has those messages. */
	return (r = ipc_write_frame(c, NULL)) < 0 ? ipc_fail(r) : 0;
}

int
ipc_send_failure(struct ipc_conn *c, struct ipc_send_failure *out)
{
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (out == NULL)
		return ipc_fail(-EINVAL);
	if (c->nfails == 0 && (r = ipc_drain(c)) < 0 && c->nfails == 0)
		return ipc_fail(r);
	if (c->nfails == 0)
		return ipc_fail(-EAGAIN);
	*out = c->fails[c->fail_head];
	c->fail_head = (c->fail_head + 1) % c->fail_cap;
	c->nfails--;
	ipc_stash_signal(c);
	return 0;
}

/* Hand the stashed message over: into buf, or (buf_out) as it is. */
static ssize_t
ipc_give_stash(struct ipc_conn *c, void *buf, size_t size, void **buf_out,
    struct ipc_msg_info *info_out)
{
	size_t len = c->stash.info.len;

	if (buf_out == NULL && len > size) {
		if (info_out != NULL)
			info_out->len = len;
		return ipc_fail(-EMSGSIZE);
	}
	if (info_out != NULL)
		*info_out = c->stash.info;
	if (buf_out != NULL) {
		*buf_out = c->stash.data;
	} else {
		if (len)
			memcpy(buf, c->stash.data, len);
		free(c->stash.data);
	}
	c->stash.data = NULL;
	c->have_stash = 0;
	ipc_stash_signal(c);
	ipc_ack(c, c->stash.info.id);
	return (ssize_t)len;
}

/* What is left of timeout_ms since t0 (IPC_FOREVER stays so). */
static int
ipc_left(const struct timespec *t0, int timeout_ms)
{
	struct timespec now;
	long long spent;

	if (timeout_ms <= 0)
		return timeout_ms;
	clock_gettime(CLOCK_MONOTONIC, &now);
	spent = (now.tv_sec - t0->tv_sec) * 1000LL +
	    (now.tv_nsec - t0->tv_nsec) / 1000000;
	return spent >= timeout_ms ? 0 : (int)(timeout_ms - spent);
}

/* Wait (up to timeout_ms) for the armed receive's answer. */
static int
ipc_wait_armed(struct ipc_conn *c, int timeout_ms)
{
	struct wire_frame f;
	struct timespec t0;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((r = ipc_flush_before_wait(c)) < 0)
		return r;
	while (c->armed) {
		if ((r = ipc_read_frame(c, &f, ipc_left(&t0, timeout_ms))) < 0)
			return r == -ETIMEDOUT && timeout_ms == 0 ?
			    -EAGAIN : r;
		if ((r = ipc_unsolicited(c, &f, 0)) < 0)
			return r;
	}
	return 0;
}

/* Hand a delivered message to the application: into buf (size bytes),
 * or (buf_out) into a buffer allocated for it.  -EMSGSIZE (with
 * info_out->len set) when buf is too small: the caller keeps it. */
static ssize_t
ipc_hand_over(const struct ipc_msg_info *info, const void *data,
    void *buf, size_t size, void **buf_out, struct ipc_msg_info *info_out)
{
	size_t len = info->len;
	void *p = buf;

	if (buf_out == NULL && len > size) {
		if (info_out != NULL) {
			memset(info_out, 0, sizeof(*info_out));
			info_out->len = len;
		}
		return -EMSGSIZE;
	}
	if (buf_out != NULL) {
		if ((p = malloc(len ? len : 1)) == NULL)
			return -ENOMEM;
		*buf_out = p;
	}
	if (len)
		memcpy(p, data, len);
	if (info_out != NULL)
		*info_out = *info;
	return (ssize_t)len;
}

/* Does a receive from `from` take kept message pm?  A streamed message,
 * or one of a receive given up on, from a mailbox: by its name.  One of
 * a receive given up on from the direct queue (its source is "pid:" the
 * receiver): a receive from any sender, or from its own. */
static int
ipc_kept_for(const struct ipc_pmsg *pm, const char *from)
{
	if (strncmp(pm->info.source, "pid:", 4) != 0)
		return strcmp(pm->info.source, from) == 0;
	return from[0] == '\0' || strcmp(pm->info.sender, from) == 0;
}

/* The first kept message for a receive from `from`, handed over. */
static ssize_t
ipc_give_kept(struct ipc_conn *c, const char *from, void *buf, size_t size,
    void **buf_out, struct ipc_msg_info *info_out, int *found)
{
	struct ipc_pmsg *pm, *prev = NULL;
	struct ipc_stream *s;
	ssize_t n;
	int r;

	for (pm = c->pq_head; pm != NULL; prev = pm, pm = pm->next)
		if (ipc_kept_for(pm, from))
			break;
	if ((*found = pm != NULL) == 0)
		return 0;
	n = ipc_hand_over(&pm->info, pm->data, buf, size, buf_out, info_out);
	if (n < 0)
		return n;
	if (prev != NULL)
		prev->next = pm->next;
	else
		c->pq_head = pm->next;
	if (c->pq_tail == pm)
		c->pq_tail = prev;
	if ((s = ipc_stream_by_name(c, from)) != NULL && pm->streamed &&
	    s->held > 0)
		s->held--;
	r = ipc_stream_took(c, s, pm->info.id);
	free(pm);
	ipc_stash_signal(c);
	return r < 0 ? r : n;
}

/* A receive that does not wait found nothing streamed yet: ask the
 * broker once (RECV, timeout 0), as without a stream, so that "nothing
 * there" means the mailbox had nothing.  Whatever its stream brought
 * meanwhile comes first. */
static ssize_t
ipc_recv_now(struct ipc_conn *c, const char *from, void *buf, size_t size,
    void **buf_out, struct ipc_msg_info *info_out)
{
	struct wire_frame req = { .type = WIRE_RECV }, rep;
	ssize_t n;
	int r, found;

	req.b.recv.timeout_ms = 0;
	req.b.recv.max_len = c->max_payload;
	req.b.recv.source = wire_str(from);
	r = ipc_call(c, &req, &rep, NULL);
	if (r == 0 && rep.type != WIRE_DELIVER)
		r = -EPROTO;
	if (r == 0 && (r = ipc_stream_keep(c, NULL, &rep)) < 0)
		return r;
	if (r < 0 && r != -EAGAIN)
		return r;
	n = ipc_give_kept(c, from, buf, size, buf_out, info_out, &found);
	return found ? n : -EAGAIN;
}

/* Receive from mailbox from through its stream (opened on first use):
 * the next message it brings, handed over straight from the input
 * buffer.  *used = 0 when no stream could be had (the caller asks with
 * a RECV instead). */
static ssize_t
ipc_recv_stream(struct ipc_conn *c, const char *from, void *buf,
    size_t size, void **buf_out, int timeout_ms,
    struct ipc_msg_info *info_out, int *used)
{
	struct ipc_stream *s = ipc_stream_by_name(c, from);
	struct ipc_msg_info info;
	struct wire_frame f;
	struct timespec t0;
	ssize_t n;
	int r;

	*used = 1;
	if (s == NULL && (s = ipc_stream_open(c, from, &r)) == NULL) {
		*used = r < 0;
		return r;
	}
	if (timeout_ms > 0)
		clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((r = ipc_flush_before_wait(c)) < 0)
		return r;
	for (;;) {
		if ((r = ipc_read_frame(c, &f, ipc_left(&t0, timeout_ms))) < 0)
			return r == -ETIMEDOUT && timeout_ms == 0 ?
			    ipc_recv_now(c, from, buf, size, buf_out,
			    info_out) : r;
		if (f.id != s->id ||
		    (f.type != WIRE_DELIVER && f.type != WIRE_ERROR)) {
			if ((r = ipc_unsolicited(c, &f, 0)) < 0)
				return r;
			continue;
		}
		if (f.type == WIRE_ERROR) {
			ipc_stream_close(s);
			return -wire_errno(f.b.error.code);
		}
		ipc_fill_info(&f.b.deliver, &info);
		n = ipc_hand_over(&info, f.b.deliver.payload.p, buf, size,
		    buf_out, info_out);
		if (n == -EMSGSIZE)	/* kept for a larger buffer */
			return ipc_stream_keep(c, s, &f) < 0 ? -ENOMEM : n;
		if (s->credit > 0)
			s->credit--;
		if (n < 0)
			return n;
		if ((r = ipc_stream_took(c, s, info.id)) < 0)
			return r;
		ipc_stash_signal(c);
		return n;
	}
}

int
ipc_set_prefetch(struct ipc_conn *c, unsigned n)
{
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (n > WIRE_CREDIT_MAX)
		return ipc_fail(-EINVAL);
	if (c->broken)
		return ipc_fail(-ECONNRESET);
	c->prefetch = n;
	if (n > 0)
		return 0;
	for (unsigned i = 0; i < IPC_STREAMS_MAX; i++)
		if (c->streams[i].id != 0 &&
		    (r = ipc_stream_end(c, &c->streams[i])) < 0)
			return ipc_fail(r);
	return 0;
}

static ssize_t
ipc_recv_any(struct ipc_conn *c, const char *from, void *buf, size_t size,
    void **buf_out, int timeout_ms, struct ipc_msg_info *info_out)
{
	struct wire_frame req = { .type = WIRE_RECV }, rep;
	struct ipc_addr a;
	uint32_t aux = 0;
	void *p;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	/* NULL: the caller's own direct queue, from anyone ("" on the
	 * wire). */
	if (from == NULL)
		from = "";
	else if (ipc_addr_parse(from, &a) < 0)
		return ipc_fail(-EINVAL);
	if ((buf == NULL && buf_out == NULL && size > 0) ||
	    timeout_ms < IPC_FOREVER)
		return ipc_fail(-EINVAL);
	if (c->pq_head != NULL) {
		ssize_t n = ipc_give_kept(c, from, buf, size, buf_out,
		    info_out, &r);

		if (r)
			return n < 0 ? ipc_fail((int)n) : n;
	}
	/* Streams for plain mailbox names: the broker names the source
	 * of what it delivers so, and kept messages are found by it. */
	if (c->prefetch > 0 && from[0] != '\0' && strncmp(from, "pid:", 4) &&
	    strchr(from, '@') == NULL &&
	    !((c->armed || c->have_stash) && strcmp(c->armed_from, from) == 0)) {
		int used;
		ssize_t n = ipc_recv_stream(c, from, buf, size, buf_out,
		    timeout_ms, info_out, &used);

		if (used)
			return n < 0 ? ipc_fail((int)n) : n;
	}
	if (c->armed && strcmp(c->armed_from, from) == 0 &&
	    (r = ipc_wait_armed(c, timeout_ms)) < 0)
		return ipc_fail(r);
	/* The wait may have kept what came first (a stream's messages,
	 * and the armed one behind them). */
	if (c->pq_head != NULL) {
		ssize_t n = ipc_give_kept(c, from, buf, size, buf_out,
		    info_out, &r);

		if (r)
			return n < 0 ? ipc_fail((int)n) : n;
	}
	if (c->have_stash && strcmp(c->armed_from, from) == 0)
		return ipc_give_stash(c, buf, size, buf_out, info_out);
	req.b.recv.timeout_ms = ipc_wire_timeout(timeout_ms);
	req.b.recv.max_len = buf_out != NULL ? c->max_payload :
	    size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
	req.b.recv.source = wire_str(from);
	if ((r = ipc_call(c, &req, &rep, &aux)) < 0) {
		if ((r == -EAGAIN || r == -ETIMEDOUT) && c->pq_head != NULL) {
			/* Nothing for this request, but a receive given up
			 * on took a message meanwhile: that one. */
			int found;
			ssize_t n = ipc_give_kept(c, from, buf, size, buf_out,
			    info_out, &found);

			if (found)
				return n < 0 ? ipc_fail((int)n) : n;
		}
		if (r == -EMSGSIZE && info_out != NULL) {
			memset(info_out, 0, sizeof(*info_out));
			info_out->len = aux;
		}
		return ipc_fail(r);
	}
	if (rep.type != WIRE_DELIVER)
		return ipc_fail(-EPROTO);
	if (c->pq_head != NULL) {
		/* A receive given up on took a message first (kept on the
		 * way here): that one is handed over first, this one is
		 * kept behind it. */
		struct ipc_pmsg *pm;

		for (pm = c->pq_head; pm != NULL; pm = pm->next)
			if (ipc_kept_for(pm, from))
				break;
		if (pm != NULL) {
			ssize_t n;

			if ((r = ipc_stream_keep(c, NULL, &rep)) < 0)
				return ipc_fail(r);
			n = ipc_give_kept(c, from, buf, size, buf_out,
			    info_out, &r);
			return n < 0 ? ipc_fail((int)n) : n;
		}
	}
	if (info_out != NULL)
		ipc_fill_info(&rep.b.deliver, info_out);
	if (buf_out != NULL) {
		if ((p = malloc(rep.b.deliver.payload.len ?
		    rep.b.deliver.payload.len : 1)) == NULL)
			return ipc_fail(-ENOMEM);
		*buf_out = p;
	} else {
		p = buf;
	}
	if (rep.b.deliver.payload.len)
		memcpy(p, rep.b.deliver.payload.p, rep.b.deliver.payload.len);
	ipc_ack(c, rep.b.deliver.msg_id);
	return (ssize_t)rep.b.deliver.payload.len;
}

/* A call with timeout_ms (IPC_FOREVER: none) ends by its deadline: the
 * broker's answer, or ETIMEDOUT (EAGAIN for 0) once it is overdue. */
static ssize_t
ipc_recv_deadline(struct ipc_conn *c, const char *from, void *buf,
    size_t size, void **buf_out, int timeout_ms,
    struct ipc_msg_info *info_out)
{
	ssize_t n;
	int saved;

	if (c == NULL || timeout_ms < 0)
		return ipc_recv_any(c, from, buf, size, buf_out, timeout_ms,
		    info_out);
	ipc_deadline_set(c, timeout_ms);
	n = ipc_recv_any(c, from, buf, size, buf_out, timeout_ms, info_out);
	saved = errno;
	c->deadline = 0;
	if (n < 0 && saved == ETIMEDOUT && timeout_ms == 0)
		saved = EAGAIN;
	errno = saved;
	return n;
}

ssize_t
ipc_recv_timed(struct ipc_conn *c, const char *from, void *buf,
    size_t size, int timeout_ms, struct ipc_msg_info *info_out)
{
	return ipc_recv_deadline(c, from, buf, size, NULL, timeout_ms,
	    info_out);
}

ssize_t
ipc_recv(struct ipc_conn *c, const char *from, void *buf, size_t size,
    struct ipc_msg_info *info_out)
{
	return ipc_recv_any(c, from, buf, size, NULL, IPC_FOREVER, info_out);
}

ssize_t
ipc_recv_alloc(struct ipc_conn *c, const char *from, void **buf_out,
    int timeout_ms, struct ipc_msg_info *info_out)
{
	if (buf_out == NULL)
		return ipc_fail(-EINVAL);
	return ipc_recv_deadline(c, from, NULL, 0, buf_out, timeout_ms,
	    info_out);
}

int
ipc_recv_arm(struct ipc_conn *c, const char *from)
{
	struct wire_frame req = { .type = WIRE_RECV };
	struct ipc_addr a;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (from == NULL)
		from = "";
	else if (ipc_addr_parse(from, &a) < 0 ||
	    strlen(from) >= sizeof(c->armed_from))
		return ipc_fail(-EINVAL);
	if (c->armed || c->have_stash)
		return ipc_fail(-EBUSY);
	if (c->broken)
		return ipc_fail(-ECONNRESET);
	req.id = ++c->next_id;
	req.b.recv.timeout_ms = WIRE_FOREVER;
	req.b.recv.max_len = c->max_payload;
	req.b.recv.source = wire_str(from);
	if ((r = ipc_write_frame(c, &req)) < 0)
		return ipc_fail(r);
	c->armed = 1;
	c->armed_id = req.id;
	strcpy(c->armed_from, from);
	return 0;
}

/* --- introspection ------------------------------------------------------ */

/* A request answered by item frames and then OK: item() is called for
 * each until it returns non-zero; the rest is read and dropped. */
static int
ipc_list_call(struct ipc_conn *c, struct wire_frame *req,
    int (*item)(const struct wire_frame *f, void *arg), void *arg)
{
	struct wire_frame rep;
	int r, stop = 0;

	if ((r = ipc_call(c, req, &rep, NULL)) < 0)
		return r;
	for (;;) {
		if (rep.type == WIRE_OK)
			return stop;
		if (stop == 0)
			stop = item(&rep, arg);
		/* The next frame with this request's id. */
		for (;;) {
			if ((r = ipc_read_frame(c, &rep, IPC_FOREVER)) < 0)
				return r;
			if ((r = ipc_unsolicited(c, &rep, req->id)) < 0)
				return r;
			if (r == 0)
				break;
		}
		if (rep.type == WIRE_ERROR)
			return -wire_errno(rep.b.error.code);
	}
}

/* The caller's callback, stored as a generic function pointer and cast
 * back to its real type by each item handler. */
struct ipc_list_ctx {
	void (*cb)(void);
	void *arg;
};

static int
ipc_mbox_item(const struct wire_frame *f, void *arg)
{
	struct ipc_list_ctx *x = arg;
	int (*cb)(const struct ipc_mbox_info *, void *) =
	    (int (*)(const struct ipc_mbox_info *, void *))x->cb;
	struct ipc_mbox_info info;

	if (f->type != WIRE_MBOX_INFO)
		return -EPROTO;
	ipc_fill_mbox_info(&f->b.info, &info);
	return cb(&info, x->arg);
}

/* The end of a walk: a callback's non-zero return is passed on as it
 * is; a failure of our own is -1 with errno. */
static int
ipc_walk_result(int r)
{
	return r < 0 ? ipc_fail(r) : r;
}

/* The public walks without arguments: ask with type, hand each item to
 * item(), which calls the caller's cb. */
static int
ipc_walk(struct ipc_conn *c, uint16_t type,
    int (*item)(const struct wire_frame *f, void *arg), void (*cb)(void),
    void *arg)
{
	struct wire_frame req = { .type = type };
	struct ipc_list_ctx x = { cb, arg };

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (cb == NULL)
		return ipc_fail(-EINVAL);
	return ipc_walk_result(ipc_list_call(c, &req, item, &x));
}

int
ipc_mbox_list(struct ipc_conn *c,
    int (*cb)(const struct ipc_mbox_info *info, void *arg), void *arg)
{
	return ipc_walk(c, WIRE_MBOX_LIST, ipc_mbox_item, (void (*)(void))cb,
	    arg);
}

static int
ipc_peek_item(const struct wire_frame *f, void *arg)
{
	struct ipc_list_ctx *x = arg;
	int (*cb)(const struct ipc_msg_info *, const void *, void *) =
	    (int (*)(const struct ipc_msg_info *, const void *, void *))x->cb;
	struct ipc_msg_info info;

	if (f->type != WIRE_DELIVER)
		return -EPROTO;
	ipc_fill_info(&f->b.deliver, &info);
	return cb(&info, f->b.deliver.payload.p, x->arg);
}

int
ipc_mbox_peek(struct ipc_conn *c, const char *name, unsigned max,
    int (*cb)(const struct ipc_msg_info *info, const void *data,
    void *arg), void *arg)
{
	struct wire_frame req = { .type = WIRE_PEEK };
	struct ipc_list_ctx x = { (void (*)(void))cb, arg };
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (cb == NULL)
		return ipc_fail(-EINVAL);
	if ((r = ipc_check_name(name)) < 0)
		return ipc_fail(r);
	req.b.peek.max_count = max;
	req.b.peek.name = wire_str(name);
	return ipc_walk_result(ipc_list_call(c, &req, ipc_peek_item, &x));
}

static int
ipc_client_item(const struct wire_frame *f, void *arg)
{
	struct ipc_list_ctx *x = arg;
	int (*cb)(const struct ipc_client_info *, void *) =
	    (int (*)(const struct ipc_client_info *, void *))x->cb;
	const struct wire_client_info *w = &f->b.client;
	struct ipc_client_info info;

	if (f->type != WIRE_CLIENT_INFO)
		return -EPROTO;
	memset(&info, 0, sizeof(info));
	info.conn_id = w->conn_id;
	info.pid = (pid_t)w->pid;
	info.uid = w->uid;
	info.gid = w->gid;
	wire_str_copy(w->comm, info.comm, sizeof(info.comm));
	info.queue_depth = w->queue_depth;
	info.msgs_sent = w->msgs_sent;
	info.msgs_received = w->msgs_received;
	info.connected_ns = w->connected_ns;
	return cb(&info, x->arg);
}

int
ipc_clients(struct ipc_conn *c,
    int (*cb)(const struct ipc_client_info *info, void *arg), void *arg)
{
	return ipc_walk(c, WIRE_CLIENTS, ipc_client_item, (void (*)(void))cb,
	    arg);
}

static int
ipc_counter_item(const struct wire_frame *f, void *arg)
{
	struct ipc_list_ctx *x = arg;
	int (*cb)(const char *, uint64_t, void *) =
	    (int (*)(const char *, uint64_t, void *))x->cb;
	char name[WIRE_STR_MAX + 1];

	if (f->type != WIRE_COUNTER ||
	    wire_str_copy(f->b.counter.name, name, sizeof(name)) < 0)
		return -EPROTO;
	return cb(name, f->b.counter.value, x->arg);
}

int
ipc_counters(struct ipc_conn *c,
    int (*cb)(const char *name, uint64_t value, void *arg), void *arg)
{
	return ipc_walk(c, WIRE_COUNTERS, ipc_counter_item,
	    (void (*)(void))cb, arg);
}

static int
ipc_link_item(const struct wire_frame *f, void *arg)
{
	struct ipc_list_ctx *x = arg;
	int (*cb)(const struct ipc_link_info *, void *) =
	    (int (*)(const struct ipc_link_info *, void *))x->cb;
	const struct wire_link_info *w = &f->b.link;
	struct ipc_link_info info = { 0 };

	if (f->type != WIRE_LINK_INFO ||
	    wire_str_copy(w->peer, info.peer, sizeof(info.peer)) < 0 ||
	    wire_str_copy(w->identity, info.identity,
	    sizeof(info.identity)) < 0 ||
	    wire_str_copy(w->last_error, info.last_error,
	    sizeof(info.last_error)) < 0)
		return -EPROTO;
	info.incoming = w->direction == WIRE_LINK_IN;
	info.state = w->state <= WIRE_LINK_UP ?
	    (enum ipc_link_state)w->state : IPC_LINK_DOWN;
	info.queued = w->queued;
	info.in_flight = w->in_flight;
	info.msgs_out = w->msgs_out;
	info.msgs_in = w->msgs_in;
	info.failed = w->failed;
	info.reconnects = w->reconnects;
	info.rtt_us = w->rtt_us;
	return cb(&info, x->arg);
}

int
ipc_links(struct ipc_conn *c,
    int (*cb)(const struct ipc_link_info *info, void *arg), void *arg)
{
	return ipc_walk(c, WIRE_LINKS, ipc_link_item, (void (*)(void))cb,
	    arg);
}

int
ipc_accept_remote(struct ipc_conn *c, int on)
{
	struct wire_frame req = { .type = WIRE_OPTION }, rep;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	req.b.option.option = WIRE_OPT_REMOTE_DIRECT;
	req.b.option.value = on ? 1 : 0;
	if ((r = ipc_call(c, &req, &rep, NULL)) < 0)
		return ipc_fail(r);
	return rep.type == WIRE_OK ? 0 : ipc_fail(-EPROTO);
}

/* --- monitoring --------------------------------------------------------- */

int
ipc_monitor(struct ipc_conn *c)
{
	struct wire_frame req = { .type = WIRE_MONITOR }, rep;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (c->monitor_id != 0)
		return ipc_fail(-EBUSY);
	if ((r = ipc_call(c, &req, &rep, NULL)) < 0)
		return ipc_fail(r);
	c->monitor_id = req.id;
	return 0;
}

int
ipc_monitor_next(struct ipc_conn *c, struct ipc_event *ev, int timeout_ms)
{
	struct wire_frame f;
	int r;

	if (c == NULL)
		return ipc_fail(-EBADF);
	if (ev == NULL || c->monitor_id == 0 || timeout_ms < IPC_FOREVER)
		return ipc_fail(-EINVAL);
	for (;;) {
		if (timeout_ms == 0 && !ipc_frame_buffered(c) &&
		    ipc_poll(c, 0) < 0)
			return ipc_fail(-EAGAIN);
		/* (A wait that a stray frame ends early restarts whole:
		 * timeouts here are for people watching, not exact.) */
		if ((r = ipc_read_frame(c, &f, timeout_ms)) < 0)
			return ipc_fail(r);
		if (f.type != WIRE_EVENT || f.id != c->monitor_id) {
			if ((r = ipc_unsolicited(c, &f, 0)) < 0)
				return ipc_fail(r);
			continue;
		}
		memset(ev, 0, sizeof(*ev));
		ev->kind = (enum ipc_event_kind)f.b.event.kind;
		ev->time_ns = f.b.event.time_ns;
		ev->pid = (pid_t)f.b.event.pid;
		ev->uid = f.b.event.uid;
		ev->msg_id = f.b.event.msg_id;
		ev->len = f.b.event.len;
		ev->error = f.b.event.code ? wire_errno(f.b.event.code) : 0;
		wire_str_copy(f.b.event.subject, ev->subject,
		    sizeof(ev->subject));
		return 0;
	}
}
