/*
 * fuzz-broker.h - what fuzz-broker.c and fuzz-link.c share: a whole ipcd
 * broker in-process for each input, its clients on socket pairs, and the
 * checks on everything it answers and on what it holds afterwards.
 *
 * An input is the bytes clients write to the broker, cut by markers of
 * three or four bytes that begin with "#%" (fuzz/wire.dict has them):
 *
 *   "#%c" D   the bytes that follow go to connection D % FZ_CONNS (opened,
 *             and adopted by the broker, on first use; connection 0 is
 *             the current one at the start).  The harness says what kind
 *             each one is: a local client, or a TCP peer past TLS;
 *   "#%x"     close the current connection (the next use opens a new one);
 *   "#%f" X   a descriptor rides with the next byte written on the
 *             current connection: X >> 6 picks a sealed memfd, an
 *             unsealed one, a sealed one opened write-only, or a pipe;
 *             a memfd holds (X & 63) * 128 bytes;
 *   "#%t" X   let the broker's loop wait up to X % 3 ms, so that short
 *             timeouts (in requests, or the direct wait) can expire;
 *   "#%p"     stop reading what the broker sends on the current
 *             connection, or start again: a client that does not read
 *             (the broker's end has a small send buffer, so its own
 *             output limits are reached with small inputs).
 *
 * Between markers the bytes are written as they are, except that
 * "pid:self" inside a frame (one whose length field holds) becomes
 * "pid:" and this process's pid, with the string's and the frame's
 * lengths fixed: every connection here is this process, and its direct
 * queue is the one a fuzzer cannot otherwise name.
 *
 * Writes alternate with rounds of the broker's loop (loop_run_once with
 * no wait), and whatever the broker writes back is read at once, so that
 * neither side ever blocks.  At the end every client end is closed, the
 * broker must close its side within a bounded number of rounds, its books
 * must balance, and broker_close() must leave no descriptor open and no
 * memory allocated (LeakSanitizer checks the latter after each input).
 *
 * What the broker sends is checked frame by frame (abort() on a
 * violation): it must decode with wire_decode() within the frame limit,
 * be a type the broker sends, carry a known error code, and a DELIVER
 * with the FD flag must come with exactly one sealed memfd (and only on a
 * local connection).  FUZZ_TRACE=1 in the environment prints each
 * segment written and each frame read, for looking at seeds.
 */
#ifndef FUZZ_BROKER_H
#define FUZZ_BROKER_H

#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../daemon/broker.h"
#include "../daemon/log.h"
#include "../daemon/loop.h"
#include "wire.h"

#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif

#define FZ_CONNS	3
/* Small limits reach the edges sooner. */
#define FZ_MAX_PAYLOAD	4096u
#define FZ_MAX_FRAME	(FZ_MAX_PAYLOAD + WIRE_OVERHEAD_MAX)
/* Descriptors one client may have received ahead of their DELIVERs. */
#define FZ_FDS_MAX	16
/* Rounds the broker gets to close a connection whose client closed. */
#define FZ_CLOSE_ROUNDS	1000
/* The broker's name: "mbox@fuzz" is an address on this broker. */
#define FZ_NAME_HOST	"fuzz"
#define FZ_NAME_PORT	7400
#define FZ_IDENTITY	"fuzz-peer"

#define FZ_FAIL(...) do {						\
	fprintf(stderr, "fuzz-broker: " __VA_ARGS__);			\
	fputc('\n', stderr);						\
	abort();							\
} while (0)

/* A client: our end of a socket pair, and what the broker sent on it
 * that does not make a whole frame yet. */
struct fz_client {
	int fd;				/* -1: not open */
	enum conn_kind kind;
	int eof;			/* the broker closed its side */
	int stuck;			/* the broker stopped reading it */
	int paused;			/* "#%p": not read */
	uint8_t *in;
	size_t in_len, in_cap;
	int fds[FZ_FDS_MAX];		/* received, not yet matched */
	int nfds;
	int pass_fd;			/* rides with the next write; -1 */
};

struct fz {
	struct broker b;
	struct fz_client cl[FZ_CONNS];
	const enum conn_kind *kinds;
	int cur;
	int trace;
};

static int fz_tracing = -1;
static char fz_pid_text[16];

/* --- descriptors ----------------------------------------------------- */

/* Open descriptors of this process, as a bitmap of the first 1024. */
static int
fz_fd_snapshot(uint64_t set[16])
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0, self;

	memset(set, 0, 16 * sizeof(set[0]));
	if (d == NULL)
		return -1;
	self = dirfd(d);
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] == '.' || fd == self)
			continue;
		if (fd < 1024)
			set[fd / 64] |= 1ull << (fd % 64);
		n++;
	}
	closedir(d);
	return n;
}

static void
fz_fd_compare(const uint64_t before[16])
{
	uint64_t after[16];
	int leak = 0;

	fz_fd_snapshot(after);
	for (int fd = 0; fd < 1024; fd++) {
		uint64_t bit = 1ull << (fd % 64);
		char path[64], target[256];
		ssize_t n;

		if ((after[fd / 64] & bit) == (before[fd / 64] & bit))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "fuzz-broker: descriptor %d %s across the "
		    "input (%s)\n", fd, (after[fd / 64] & bit) ? "left open" :
		    "closed", target);
		leak = 1;
	}
	if (leak)
		FZ_FAIL("descriptors changed across one input");
}

/* The descriptor "#%f" X asks for (closed by the caller), or -1. */
static int
fz_make_fd(uint8_t x)
{
	const int seals = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
	size_t len = (size_t)(x & 63) * 128;
	uint8_t buf[128];
	int fd, p[2];

	if (x >> 6 == 3) {
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		close(p[1]);
		return p[0];
	}
	if ((fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0)
		return -1;
	memset(buf, x, sizeof(buf));
	for (size_t off = 0; off < len; off += sizeof(buf))
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			break;
	if (x >> 6 != 1)
		(void)fcntl(fd, F_ADD_SEALS, seals);
	if (x >> 6 == 2) {
		char path[64];
		int wo;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if ((wo = open(path, O_WRONLY | O_CLOEXEC)) >= 0) {
			close(fd);
			fd = wo;
		}
	}
	return fd;
}

/* --- what the broker sends -------------------------------------------- */

static int
fz_broker_sends(uint16_t type, enum conn_kind kind)
{
	switch (type) {
	case WIRE_WELCOME: case WIRE_ERROR: case WIRE_BYE: case WIRE_SENT:
		return 1;
	case WIRE_OK: case WIRE_MBOX_INFO: case WIRE_DELIVER:
	case WIRE_FAILED: case WIRE_CLIENT_INFO: case WIRE_COUNTER:
	case WIRE_EVENT: case WIRE_LINK_INFO:
		return 1;		/* to clients, local or remote */
	case WIRE_PONG:
		return kind != CONN_LOCAL;	/* on a link from a peer */
	default:
		return 0;
	}
}

static void
fz_check_frame(struct fz *z, int i, const struct wire_frame *f)
{
	struct fz_client *cl = &z->cl[i];

	if (!fz_broker_sends(f->type, cl->kind))
		FZ_FAIL("conn %d: the broker sent a %s frame", i,
		    wire_type_name(f->type));
	if (f->flags != 0)
		FZ_FAIL("conn %d: header flags %#x", i, f->flags);
	switch (f->type) {
	case WIRE_ERROR:
		if (f->b.error.code < WIRE_E_INVAL ||
		    f->b.error.code > WIRE_E_MAX)
			FZ_FAIL("conn %d: ERROR with unknown code %u", i,
			    f->b.error.code);
		break;
	case WIRE_FAILED:
		if (f->b.failed.code < WIRE_E_INVAL ||
		    f->b.failed.code > WIRE_E_MAX)
			FZ_FAIL("conn %d: FAILED with unknown code %u", i,
			    f->b.failed.code);
		break;
	case WIRE_WELCOME:
		if (f->b.welcome.version != WIRE_VERSION ||
		    f->b.welcome.max_payload != z->b.lim.max_payload)
			FZ_FAIL("conn %d: WELCOME version %u max_payload %u",
			    i, f->b.welcome.version,
			    f->b.welcome.max_payload);
		if (cl->kind == CONN_LOCAL &&
		    f->b.welcome.pid != (uint32_t)getpid())
			FZ_FAIL("conn %d: WELCOME for pid %u", i,
			    f->b.welcome.pid);
		if (cl->kind != CONN_LOCAL && f->b.welcome.pid != 0)
			FZ_FAIL("conn %d: WELCOME over TCP with pid %u", i,
			    f->b.welcome.pid);
		break;
	case WIRE_DELIVER: {
		const struct wire_deliver *d = &f->b.deliver;

		if (d->flags & ~(WIRE_DELIVER_REDELIVERED | WIRE_DELIVER_FD))
			FZ_FAIL("conn %d: DELIVER flags %#x", i, d->flags);
		if (d->payload.len > z->b.lim.max_payload)
			FZ_FAIL("conn %d: DELIVER of %zu bytes", i,
			    d->payload.len);
		if (d->flags & WIRE_DELIVER_FD) {
			const int need = F_SEAL_WRITE | F_SEAL_SHRINK |
			    F_SEAL_GROW;
			int fd, seals;

			if (cl->kind != CONN_LOCAL)
				FZ_FAIL("conn %d: DELIVER with FD over TCP",
				    i);
			if (d->payload.len != 0)
				FZ_FAIL("conn %d: DELIVER with FD and an "
				    "inline payload", i);
			if (cl->nfds == 0)
				FZ_FAIL("conn %d: DELIVER with FD came "
				    "without its descriptor", i);
			fd = cl->fds[0];
			memmove(cl->fds, cl->fds + 1,
			    (size_t)--cl->nfds * sizeof(cl->fds[0]));
			seals = fcntl(fd, F_GET_SEALS);
			close(fd);
			if (seals < 0 || (seals & need) != need)
				FZ_FAIL("conn %d: DELIVER with FD passed "
				    "an unsealed descriptor", i);
		}
		break;
	}
	default:
		break;
	}
}

static void
fz_trace_frame(int i, const struct wire_frame *f)
{
	const struct wire_bytes *t = NULL;

	if (f->type == WIRE_ERROR)
		t = &f->b.error.text;
	else if (f->type == WIRE_FAILED)
		t = &f->b.failed.text;
	fprintf(stderr, "  conn %d <- %s id=%llu", i, wire_type_name(f->type),
	    (unsigned long long)f->id);
	if (f->type == WIRE_ERROR)
		fprintf(stderr, " code=%u", f->b.error.code);
	if (t != NULL)
		fprintf(stderr, " \"%.*s\"", (int)t->len, (const char *)t->p);
	if (f->type == WIRE_DELIVER)
		fprintf(stderr, " msg=%llu %zu bytes flags=%u",
		    (unsigned long long)f->b.deliver.msg_id,
		    f->b.deliver.payload.len, f->b.deliver.flags);
	fputc('\n', stderr);
}

/* Check and forget every whole frame client i has. */
static void
fz_parse(struct fz *z, int i)
{
	struct fz_client *cl = &z->cl[i];
	size_t off = 0;

	for (;;) {
		struct wire_frame f;
		const char *why = NULL;
		long len = wire_frame_len(cl->in + off, cl->in_len - off,
		    FZ_MAX_FRAME);

		if (len < 0)
			FZ_FAIL("conn %d: the broker sent a frame header "
			    "that does not hold (%ld)", i, len);
		if (len == 0 || (size_t)len > cl->in_len - off)
			break;
		if (wire_decode(cl->in + off, (size_t)len, &f, &why) < 0)
			FZ_FAIL("conn %d: the broker sent a malformed frame: "
			    "%s", i, why ? why : "?");
		if (z->trace)
			fz_trace_frame(i, &f);
		fz_check_frame(z, i, &f);
		off += (size_t)len;
	}
	memmove(cl->in, cl->in + off, cl->in_len - off);
	cl->in_len -= off;
}

/* Read what the broker wrote to client i, and check it. */
static void
fz_drain(struct fz *z, int i)
{
	struct fz_client *cl = &z->cl[i];

	while (cl->fd >= 0 && !cl->eof && !cl->paused) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(FZ_FDS_MAX * sizeof(int))];
		} ctl;
		struct msghdr m = { 0 };
		struct iovec iov;
		ssize_t n;

		if (cl->in_cap - cl->in_len < 65536) {
			size_t cap = cl->in_len + 65536;
			uint8_t *p = realloc(cl->in, cap);

			if (p == NULL)
				FZ_FAIL("out of memory");
			cl->in = p;
			cl->in_cap = cap;
		}
		iov.iov_base = cl->in + cl->in_len;
		iov.iov_len = cl->in_cap - cl->in_len;
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(cl->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			cl->eof = 1;	/* closed, or reset */
			break;
		}
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL;
		    h = CMSG_NXTHDR(&m, h)) {
			int k;

			if (h->cmsg_level != SOL_SOCKET ||
			    h->cmsg_type != SCM_RIGHTS)
				continue;
			k = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int j = 0; j < k; j++) {
				int fd;

				memcpy(&fd, CMSG_DATA(h) + j * sizeof(int),
				    sizeof(fd));
				if (cl->nfds == FZ_FDS_MAX)
					FZ_FAIL("conn %d: descriptors without "
					    "their frames", i);
				cl->fds[cl->nfds++] = fd;
			}
		}
		if (m.msg_flags & MSG_CTRUNC)
			FZ_FAIL("conn %d: more descriptors in one read than "
			    "frames could claim", i);
		cl->in_len += (size_t)n;
		fz_parse(z, i);
	}
}

/* One round of the broker's loop, then read what it wrote.  Returns
 * how many events it handled plus how many clients had something. */
static int
fz_round(struct fz *z, int wait_ms)
{
	int n = loop_run_once(z->b.loop, wait_ms);

	if (n < 0)
		FZ_FAIL("loop_run_once: %s", strerror(-n));
	for (int i = 0; i < FZ_CONNS; i++) {
		size_t before = z->cl[i].in_len;
		int eof = z->cl[i].eof;

		fz_drain(z, i);
		if (z->cl[i].in_len != before || z->cl[i].eof != eof)
			n++;
	}
	return n;
}

/* Rounds until nothing moves (a frame answered may queue replies that
 * the next round writes).  Bounded: a broker that keeps sending with no
 * input is not something to wait for here. */
static void
fz_settle(struct fz *z)
{
	for (int quiet = 0, k = 0; quiet < 2 && k < 256; k++)
		quiet = fz_round(z, 0) == 0 ? quiet + 1 : 0;
}

/* --- clients ---------------------------------------------------------- */

static void
fz_client_close(struct fz *z, int i)
{
	struct fz_client *cl = &z->cl[i];

	if (cl->fd >= 0)
		close(cl->fd);
	cl->fd = -1;
	if (cl->pass_fd >= 0)
		close(cl->pass_fd);
	cl->pass_fd = -1;
	/* A frame the broker cut off when it closed may have had its
	 * descriptor already; a whole one never leaves one behind. */
	if (cl->nfds > (cl->in_len > 0 ? 1 : 0))
		FZ_FAIL("conn %d: %d descriptors without their frames", i,
		    cl->nfds);
	while (cl->nfds > 0)
		close(cl->fds[--cl->nfds]);
	cl->in_len = 0;
	cl->eof = cl->stuck = cl->paused = 0;
}

/* Open client i if it is not: a socket pair, one end adopted. */
static int
fz_client_open(struct fz *z, int i)
{
	struct fz_client *cl = &z->cl[i];
	int sv[2], sndbuf = 16384;

	if (cl->fd >= 0)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	/* Replies back up after a few frames when the client reads none. */
	(void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf,
	    sizeof(sndbuf));
	if (conn_adopt(&z->b, sv[1], cl->kind, cl->kind == CONN_LOCAL ? NULL :
	    FZ_IDENTITY) == NULL) {
		/* Refused: the broker closed its end. */
		close(sv[0]);
		return -1;
	}
	cl->fd = sv[0];
	(void)fcntl(cl->fd, F_SETFL, O_NONBLOCK);
	return 0;
}

/* One attempt to write buf to client i (with its descriptor, if one
 * waits).  Bytes written, or -1 with errno. */
static ssize_t
fz_send(struct fz_client *cl, const uint8_t *buf, size_t len)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (cl->pass_fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		ctl.h.cmsg_level = SOL_SOCKET;
		ctl.h.cmsg_type = SCM_RIGHTS;
		ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&ctl.h), &cl->pass_fd, sizeof(int));
	}
	n = sendmsg(cl->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n > 0 && cl->pass_fd >= 0) {
		close(cl->pass_fd);	/* the broker has its own now */
		cl->pass_fd = -1;
	}
	return n;
}

/* "pid:self" in the frames of buf becomes this process's pid, with the
 * string's length before it and the frame's length fixed.  Returns the
 * new length (out has room for 2 * len + 16). */
static size_t
fz_rewrite(const uint8_t *in, size_t len, uint8_t *out)
{
	static const char tok[] = "pid:self";
	const size_t tlen = sizeof(tok) - 1, plen = strlen(fz_pid_text);
	size_t off = 0, o = 0;

	while (len - off >= WIRE_HDR_LEN) {
		uint32_t flen = wire_get32(in + off);
		size_t start = o;

		if (flen < WIRE_HDR_LEN || flen > len - off)
			break;
		for (size_t i = 0; i < flen; ) {
			if (i >= WIRE_HDR_LEN + 2 && flen - i >= tlen &&
			    memcmp(in + off + i, tok, tlen) == 0) {
				uint16_t sl = wire_get16(out + o - 2);

				/* The string holding it, if it fits. */
				if (sl >= tlen && sl <= flen - i)
					wire_put16(out + o - 2, (uint16_t)(sl -
					    tlen + 4 + plen));
				memcpy(out + o, "pid:", 4);
				memcpy(out + o + 4, fz_pid_text, plen);
				o += 4 + plen;
				i += tlen;
				continue;
			}
			out[o++] = in[off + i++];
		}
		wire_put32(out + start, (uint32_t)(o - start));
		off += flen;
	}
	memcpy(out + o, in + off, len - off);
	return o + (len - off);
}

/* Write len bytes as they are to the open client cl, the broker
 * reading as it goes; a client the broker stops reading (throttled) is
 * left stuck, and the rest dropped. */
static void
fz_write_raw(struct fz *z, struct fz_client *cl, const uint8_t *buf,
    size_t len)
{
	size_t off = 0;
	int stall = 0;

	while (off < len) {
		ssize_t n = fz_send(cl, buf + off, len - off);

		if (n > 0) {
			off += (size_t)n;
			stall = 0;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (++stall > 64) {
				cl->stuck = 1;
				break;
			}
		} else {
			break;		/* closed by the broker */
		}
		fz_round(z, 0);
	}
	fz_settle(z);
}

/* Write a segment to the current client, the broker reading as it goes. */
static void
fz_write(struct fz *z, const uint8_t *seg, size_t len)
{
	struct fz_client *cl = &z->cl[z->cur];
	uint8_t *buf;

	if (len == 0 || fz_client_open(z, z->cur) < 0 || cl->eof ||
	    cl->stuck)
		return;
	if ((buf = malloc(2 * len + 16)) == NULL)
		FZ_FAIL("out of memory");
	len = fz_rewrite(seg, len, buf);
	if (z->trace)
		fprintf(stderr, "conn %d -> %zu bytes%s\n", z->cur, len,
		    cl->pass_fd >= 0 ? " and a descriptor" : "");
	fz_write_raw(z, cl, buf, len);
	free(buf);
}

/* --- the broker's books ----------------------------------------------- */

/* With no connection left, nothing may be held for one, and every byte
 * and mailbox charged to a user must be in a queue. */
static void
fz_check_books(struct fz *z)
{
	struct broker *b = &z->b;
	uint64_t queued = 0, charged = 0, boxes = 0;
	uint32_t fds = 0;

	if (b->nconns != 0 || b->conns != NULL || b->monitors != NULL)
		FZ_FAIL("connections left: %u", b->nconns);
	if (b->nprocs != 0)
		FZ_FAIL("%zu processes remembered with no connection and "
		    "no sender waiting", b->nprocs);
	if (b->links != NULL || b->resolve_fd[0] >= 0)
		FZ_FAIL("a link was made (a connection to another host)");
	for (size_t i = 0; i < b->tab_size; i++)
		for (struct mbox *m = b->tab[i]; m != NULL; m = m->hnext) {
			uint64_t bytes = 0;
			uint32_t count = 0;

			if (m->unacked != 0 || m->receivers.count != 0 ||
			    m->senders.count != 0)
				FZ_FAIL("mailbox %s: %u unacked, %u receivers, "
				    "%u senders with no connection", m->name,
				    m->unacked, m->receivers.count,
				    m->senders.count);
			for (struct msg *msg = m->q.head; msg != NULL;
			    msg = msg->next) {
				bytes += msg->len;
				count++;
				fds += msg->fd >= 0;
			}
			if (bytes != m->q.bytes || count != m->q.count)
				FZ_FAIL("mailbox %s: counts %u/%llu, holds "
				    "%u/%llu", m->name, m->q.count,
				    (unsigned long long)m->q.bytes, count,
				    (unsigned long long)bytes);
			queued += bytes;
		}
	for (size_t i = 0; b->quotas != NULL && i < 256; i++)
		for (struct quota *q = b->quotas[i]; q != NULL; q = q->next) {
			charged += q->bytes;
			boxes += q->mailboxes;
		}
	if (charged != queued)
		FZ_FAIL("users are charged %llu bytes, the queues hold %llu",
		    (unsigned long long)charged, (unsigned long long)queued);
	if (boxes != b->nmbox)
		FZ_FAIL("users own %llu mailboxes, there are %zu",
		    (unsigned long long)boxes, b->nmbox);
	if (fds != b->fds_held)
		FZ_FAIL("%u memfd messages queued, %u counted", fds,
		    b->fds_held);
}

/* --- one input -------------------------------------------------------- */

typedef void fz_setup_fn(struct broker *b);

static void
fz_init_once(void)
{
	if (fz_tracing >= 0)
		return;
	fz_tracing = getenv("FUZZ_TRACE") != NULL;
	log_max = fz_tracing ? LOG_DEBUG : LOG_ERROR;
	signal(SIGPIPE, SIG_IGN);
	snprintf(fz_pid_text, sizeof(fz_pid_text), "%d", (int)getpid());
}

static void
fz_run(const uint8_t *data, size_t size, const enum conn_kind *kinds,
    fz_setup_fn *setup)
{
	static struct fz z;
	uint64_t fds_before[16];
	size_t seg = 0, i = 0;

	fz_init_once();
	fz_fd_snapshot(fds_before);
	memset(&z, 0, sizeof(z));
	z.kinds = kinds;
	z.trace = fz_tracing;
	broker_defaults(&z.b);
	z.b.lim.max_payload = FZ_MAX_PAYLOAD;
	z.b.lim.default_capacity = 4;
	z.b.lim.default_max_bytes = 3 * FZ_MAX_PAYLOAD;
	z.b.lim.max_connections = 8;
	z.b.lim.max_mailboxes = 70;	/* past the table's first size */
	z.b.lim.max_mailboxes_per_uid = 68;
	z.b.lim.max_bytes_per_uid = 6 * FZ_MAX_PAYLOAD;
	z.b.lim.direct_wait_ms = 2;
	/* A connection with no handshake, and a link from a peer whose
	 * heartbeat is 0 or 1 ms, time out after "#%t" waits. */
	z.b.lim.hello_timeout_ms = 3;
	z.b.lim.heartbeat_ms = 1;
	z.b.max_fds_held = 2;
	link_name(FZ_NAME_HOST, FZ_NAME_PORT, z.b.name, sizeof(z.b.name));
	if (setup != NULL)
		setup(&z.b);
	if (broker_open(&z.b) < 0)
		FZ_FAIL("broker_open: %s", strerror(errno));
	for (int k = 0; k < FZ_CONNS; k++) {
		z.cl[k].fd = z.cl[k].pass_fd = -1;
		z.cl[k].kind = kinds[k];
	}

	/* Segments between markers. */
	while (i + 3 <= size) {
		uint8_t cmd, arg;

		if (data[i] != '#' || data[i + 1] != '%') {
			i++;
			continue;
		}
		cmd = data[i + 2];
		if (cmd != 'c' && cmd != 'x' && cmd != 'f' && cmd != 't' &&
		    cmd != 'p') {
			i++;
			continue;
		}
		fz_write(&z, data + seg, i - seg);
		arg = i + 3 < size ? data[i + 3] : 0;
		i += cmd == 'x' || cmd == 'p' ? 3 : 4;
		switch (cmd) {
		case 'c':
			z.cur = arg % FZ_CONNS;
			break;
		case 'x':
			fz_client_close(&z, z.cur);
			fz_settle(&z);
			break;
		case 'f':
			if (z.cl[z.cur].pass_fd >= 0)
				close(z.cl[z.cur].pass_fd);
			z.cl[z.cur].pass_fd = fz_make_fd(arg);
			break;
		case 't':
			fz_round(&z, arg % 3);
			fz_settle(&z);
			break;
		case 'p':
			z.cl[z.cur].paused = !z.cl[z.cur].paused;
			fz_settle(&z);
			break;
		}
		seg = i < size ? i : size;
	}
	if (seg < size)
		fz_write(&z, data + seg, size - seg);

	/* Every client goes; the broker must notice each. */
	fz_settle(&z);
	for (int k = 0; k < FZ_CONNS; k++)
		fz_client_close(&z, k);
	for (int k = 0; z.b.nconns > 0; k++) {
		if (k == FZ_CLOSE_ROUNDS)
			FZ_FAIL("%u connections still open %d rounds after "
			    "their clients closed", z.b.nconns, k);
		fz_round(&z, 0);
	}
	fz_round(&z, 0);	/* frees what the last round closed */
	fz_check_books(&z);
	broker_close(&z.b, "fuzz input done");
	if (z.b.fds_held != 0)
		FZ_FAIL("%u memfd messages counted after broker_close",
		    z.b.fds_held);
	for (int k = 0; k < FZ_CONNS; k++) {
		free(z.cl[k].in);
		z.cl[k].in = NULL;
	}
	fz_fd_compare(fds_before);
}

#endif /* FUZZ_BROKER_H */
