/*
 * libipc: message passing between cooperating processes.  See libipc(3).
 *
 * A process opens a connection to the broker ipcd and sends and receives
 * messages addressed to mailboxes ("jobs": a named queue in the broker,
 * indirect naming) or, later, to processes ("pid:1234", direct naming).
 *
 * Conventions: every function returns -1 (or NULL) and sets errno on
 * failure; nothing here prints or aborts.  Timeouts are in milliseconds:
 * IPC_FOREVER (-1) waits without limit, 0 never waits.
 *
 * Thread safety: a connection (struct ipc_conn) is used by one thread at a
 * time; give each thread its own connection, or lock around every call.
 * Distinct connections are independent.
 */
#ifndef IPC_H
#define IPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IPC_FOREVER	(-1)
/* The TCP port of a broker's --tcp, when an address names none. */
#define IPC_TCP_PORT	7400

/* Mailbox names: 1-255 bytes of [A-Za-z0-9._-], not starting with '.'. */
#define IPC_NAME_MAX	255
/* Host part of a remote address: a name, IPv4, or [IPv6]. */
#define IPC_HOST_MAX	255
/* Longest textual address, "pid:P@host:port" or "name@[v6]:port",
 * terminating NUL included. */
#define IPC_ADDR_MAX	(IPC_NAME_MAX + 1 + IPC_HOST_MAX + 2 + 6 + 1)

/* --- addresses ---------------------------------------------------------- */

enum ipc_addr_kind {
	IPC_ADDR_MAILBOX = 1,	/* "name", "name@host[:port]" */
	IPC_ADDR_PID = 2,	/* "pid:P", "pid:P@host[:port]" */
};

struct ipc_addr {
	enum ipc_addr_kind kind;
	char name[IPC_NAME_MAX + 1];	/* IPC_ADDR_MAILBOX: the mailbox */
	pid_t pid;			/* IPC_ADDR_PID: the process */
	char host[IPC_HOST_MAX + 1];	/* "" on this machine; IPv6
					 * without its brackets */
	int port;			/* 0 when not given */
};

/*
 * ipc_addr_parse - parse text into *out.  The one parser of addresses,
 * used by the library, the broker and the tools.  Returns 0, or -1 with
 * EINVAL (ipc_addr_why() says what is wrong).
 */
int ipc_addr_parse(const char *text, struct ipc_addr *out);

/*
 * ipc_addr_why - why text is not an address, as a short English phrase
 * ("mailbox name longer than 255 bytes"), or NULL when it is one.
 * The string is static.
 */
const char *ipc_addr_why(const char *text);

/*
 * ipc_addr_format - the canonical text of a into buf (at most size bytes
 * with the NUL; IPC_ADDR_MAX always suffices).  Returns its length, or
 * -1 with EINVAL (a is not valid) or ENOSPC (buf too small).
 */
int ipc_addr_format(const struct ipc_addr *a, char *buf, size_t size);

/* --- connections -------------------------------------------------------- */

struct ipc_conn;

/*
 * ipc_open - connect to a broker.  where is NULL for the default socket
 * ($IPC_SOCKET; else /run/ipcd/ipcd.sock for root; else
 * $XDG_RUNTIME_DIR/ipcd.sock; else /tmp/ipcd-UID/ipcd.sock), or
 * "unix:PATH", or "tls://HOST[:PORT]" for the broker of another host
 * (ipcd --tcp; port 7400 by default), for a process on a machine with no
 * broker of its own.  A tls:// connection authenticates with TLS 1.3 as
 * the environment says: IPC_TLS_PSK=KEYFILE (ipcctl keygen), or
 * IPC_TLS_CA, IPC_TLS_CERT and IPC_TLS_KEY; the broker maps its identity
 * to a uid.  It may use mailboxes (and send anywhere) but has no direct
 * queue there: receiving from it, or ipc_accept_remote(), is ENOTSUP, and
 * its messages carry no reply address.  Returns the connection, or NULL
 * with errno: ENOENT or ECONNREFUSED (no broker there), EPROTO (not a
 * broker, or an incompatible one), ENOKEY (tls://: no usable key or
 * certificate in the environment), EACCES (tls://: authentication
 * failed), EDQUOT (your user has all the connections its quota allows,
 * ipcd --max-connections-per-uid), ETIMEDOUT, EINVAL, ENOMEM.
 */
struct ipc_conn *ipc_open(const char *where);

/*
 * ipc_close - close c and free it; NULL is ignored.  Returns 0.
 */
int ipc_close(struct ipc_conn *c);

/*
 * ipc_fd - a descriptor for poll/epoll: readable while an armed receive
 * (ipc_recv_arm) has a message waiting, whichever call took it off the
 * socket, or when the broker has something else to say (it closed).
 * Readable means the next ipc_recv_timed(c, from, ..., 0) does not
 * wait.  Only poll it; it stays valid until ipc_close().  Returns it, or
 * -1 with errno (EBADF for NULL, EMFILE, ENOMEM).
 */
int ipc_fd(struct ipc_conn *c);

/*
 * ipc_pid - this process's pid as the broker knows it (its direct queue
 * is "pid:" that), or -1 with EBADF.
 */
pid_t ipc_pid(const struct ipc_conn *c);

/*
 * ipc_default_socket - the path ipc_open(NULL) and ipcd use, into buf.
 * Returns its length, or -1 with ENAMETOOLONG/EINVAL.
 */
int ipc_default_socket(char *buf, size_t size);

/* --- mailboxes ---------------------------------------------------------- */

/* Attributes at creation; ipc_mbox_attr_init() fills the defaults. */
struct ipc_mbox_attr {
	int64_t capacity;	/* messages; 0 = rendezvous; -1 = default */
	int64_t max_bytes;	/* bytes queued; -1 = default */
	int mode;		/* permission bits; -1 = default 0600 */
	int exclusive;		/* non-zero: EEXIST if it exists already */
	int durable;		/* non-zero: it and its messages outlive the
				 * broker (a journal on disk); ignored when
				 * the mailbox exists already */
};

void ipc_mbox_attr_init(struct ipc_mbox_attr *attr);

struct ipc_mbox_info {
	char name[IPC_NAME_MAX + 1];
	char uuid[37];			/* text form, from libuuid */
	uint32_t capacity;		/* messages; 0 = rendezvous */
	uint64_t max_bytes;
	uint32_t mode;
	uid_t uid;			/* owner */
	gid_t gid;
	uint32_t depth;			/* messages queued now */
	uint64_t bytes;			/* bytes queued now */
	uint32_t waiting_receivers;
	uint32_t waiting_senders;
	uint64_t msgs_in;		/* accepted since creation */
	uint64_t msgs_out;		/* delivered since creation */
	uint64_t created_ns;		/* CLOCK_REALTIME, nanoseconds */
	int durable;			/* non-zero: a durable mailbox */
};

/*
 * ipc_mbox_create - create mailbox name (attr NULL for the defaults), or
 * open it if it exists and attr->exclusive is 0 (its attributes, durable
 * included, are then not changed).  info_out may be NULL.  A durable
 * mailbox is created once it is on disk.  Returns 0, or -1 with EINVAL
 * (bad name or attribute; durable with capacity 0), EEXIST, ENOSPC (the
 * broker's mailbox limit), EDQUOT, ENOTSUP (durable, and the broker
 * keeps no state), EBUSY (durable, and another broker holds the state
 * directory), EIO or ENOSPC (durable: the disk failed), ECONNRESET
 * (broker gone).
 */
int ipc_mbox_create(struct ipc_conn *c, const char *name,
    const struct ipc_mbox_attr *attr, struct ipc_mbox_info *info_out);

/*
 * ipc_mbox_stat - what the broker knows of mailbox name.  Also the way to
 * "open" an existing mailbox: ENOENT when there is none.
 */
int ipc_mbox_stat(struct ipc_conn *c, const char *name,
    struct ipc_mbox_info *info_out);

/*
 * ipc_mbox_delete - delete mailbox name and the messages in it; senders
 * and receivers waiting on it fail with ENOENT.  Returns 0 or -1 (ENOENT).
 */
int ipc_mbox_delete(struct ipc_conn *c, const char *name);

/*
 * ipc_mbox_chmod - set the mailbox's mode (read = receive, write = send,
 * for owner, group, others, as a file's).  ipc_mbox_chown - give it to
 * uid and gid ((uid_t)-1, (gid_t)-1: unchanged); only root gives a
 * mailbox to another user.  Owner or root only: EACCES for others.
 * Return 0 or -1 with errno (EACCES, ENOENT, EINVAL).
 */
int ipc_mbox_chmod(struct ipc_conn *c, const char *name, int mode);
int ipc_mbox_chown(struct ipc_conn *c, const char *name, uid_t uid,
    gid_t gid);

/* --- messages ----------------------------------------------------------- */

/* What a receiver learns about each message, beside its bytes. */
struct ipc_msg_info {
	uint64_t id;			/* unique in this broker's run */
	pid_t pid;			/* sender, from the kernel */
	uid_t uid;
	gid_t gid;
	char sender[IPC_ADDR_MAX];	/* reply address: "pid:P" */
	char source[IPC_ADDR_MAX];	/* where it was received from */
	size_t len;			/* payload bytes */
	uint64_t enqueue_ns;		/* CLOCK_REALTIME when accepted */
	uint32_t flags;			/* IPC_MSG_* */
};

/* Delivered before to a receiver that went away before its library had
 * handed it over, or recovered from a durable mailbox after the broker
 * restarted: this receiver may be the first to see it, or not. */
#define IPC_MSG_REDELIVERED	0x1u

/*
 * ipc_send - send len bytes to address to (a mailbox, or "pid:P" for
 * process P's direct queue), waiting while the queue is full.  Returns 0
 * once the broker has accepted the message into the destination queue
 * (for a rendezvous mailbox, once a receiver took it; for a durable
 * mailbox, once the message is on disk), or -1 with errno: ENOENT (no
 * such mailbox), ESRCH (no such process, or it did not connect within
 * the broker's --direct-wait), EACCES (the mailbox's mode), EDQUOT (your
 * queued-bytes quota), EINVAL (bad address), EMSGSIZE (over the broker's
 * limit), ENOTSUP (remote address, not served yet), ENOSPC, EIO or
 * EROFS (durable mailbox: the message could not be written to disk and
 * was not sent), ECONNRESET (broker gone).
 */
int ipc_send(struct ipc_conn *c, const char *to, const void *buf,
    size_t len);

/*
 * ipc_send_timed - like ipc_send(), waiting at most timeout_ms for room:
 * 0 never waits (EAGAIN when full), IPC_FOREVER is ipc_send().  ETIMEDOUT
 * when the time ran out; the message was then not sent.  id_out (may be
 * NULL) receives the message's id.
 *
 * The call itself waits at most timeout_ms plus 500 ms, also when the
 * broker does not answer at all (stopped, or far behind) or does not read
 * (the socket is full): it then fails with ETIMEDOUT (EAGAIN for 0).  If
 * none of the message had gone out, it was not sent.  If some had, the
 * rest goes first at the next call on c that writes (a frame begun cannot
 * be taken back), and the broker, once it reads it, may still accept the
 * message: at most once, and the library never sends it again.  Whether it
 * did is not reported (a refusal is not reported either); do not take
 * this ETIMEDOUT for "not sent" if sending a message twice matters.
 */
int ipc_send_timed(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, int timeout_ms, uint64_t *id_out);

/*
 * ipc_send_async - send without waiting for the broker: returns 0 once
 * the message is handed to the OS (or, when the socket took only part of
 * it, to the library, which writes the rest first at the next call), or
 * -1 with EAGAIN when the connection cannot take it now.  The
 * broker never waits for room on its behalf: a full queue is a failure.
 * *id_out (may be NULL) is its send id.  Every failure, found at once or
 * later (full, no such mailbox or process, EACCES, EDQUOT, EMSGSIZE, the
 * mailbox deleted or the receiving process gone before delivery), comes
 * back through ipc_send_failure() and makes ipc_fd() readable; none is
 * dropped.  Also EAGAIN while 4096 such reports wait unread: take them
 * with ipc_send_failure() first.
 */
int ipc_send_async(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, uint64_t *id_out);

/*
 * ipc_send_more - ipc_send_async(), batched: the message may stay in the
 * library's buffer until 32 KiB are batched, ipc_flush() is called, or
 * any other call on c writes (a blocking send, a receive, ipc_close), so
 * that many messages go out in one write.  Order is kept with every
 * other send on c.  Use it for bursts, then ipc_flush(); an unbatched
 * ipc_send_async() still leaves at once.
 */
int ipc_send_more(struct ipc_conn *c, const char *to, const void *buf,
    size_t len, uint64_t *id_out);

/*
 * ipc_flush - write what ipc_send_more() and ipc_send_async() left in the
 * library's buffer, waiting for the socket to take it.  0, or -1 with
 * ECONNRESET.
 */
int ipc_flush(struct ipc_conn *c);

struct ipc_send_failure {
	uint64_t send_id;	/* as ipc_send_async's id_out gave; for a
				 * blocking send, that call's own id */
	uint64_t msg_id;	/* the broker's id if it had accepted the
				 * message (ipc_send_timed's id_out), or 0 */
	int error;		/* an errno value */
};

/*
 * ipc_send_failure - the oldest failure of a message this connection
 * sent that is not yet taken: 0 with *out filled, or -1 with EAGAIN when
 * there is none.  Never waits; reads what the broker has sent so far.
 * A message accepted by a blocking send and lost later (its mailbox
 * deleted, its receiving process gone) is reported here too.
 */
int ipc_send_failure(struct ipc_conn *c, struct ipc_send_failure *out);

/*
 * ipc_recv - receive the next message into buf (size bytes), waiting for
 * one.  from is a mailbox; or NULL for this process's direct queue
 * ("pid:" its own pid), from any sender; or "pid:Q" for the next message
 * process Q sent to this process (selective receive: the others stay, in
 * their order).  Returns the payload length, or -1 with errno:
 * EMSGSIZE (buf too small: the message stays queued, and info_out->len,
 * if info_out is given, says how much room it needs), ENOENT, EINVAL,
 * ECONNRESET.  info_out may be NULL.
 */
ssize_t ipc_recv(struct ipc_conn *c, const char *from, void *buf,
    size_t size, struct ipc_msg_info *info_out);

/*
 * ipc_recv_timed - like ipc_recv(), waiting at most timeout_ms: 0 never
 * waits (EAGAIN when empty), IPC_FOREVER is ipc_recv().  ETIMEDOUT when
 * the time ran out.
 *
 * The call itself waits at most timeout_ms plus 500 ms, also when the
 * broker does not answer at all (stopped, or far behind): it then fails
 * with ETIMEDOUT (EAGAIN for 0), and its request stays with the broker.
 * A message the broker hands over for it later is not lost: the library
 * keeps it, and the next receive from the same source returns it (before
 * any message that came after it).
 */
ssize_t ipc_recv_timed(struct ipc_conn *c, const char *from, void *buf,
    size_t size, int timeout_ms, struct ipc_msg_info *info_out);

/*
 * ipc_recv_alloc - like ipc_recv_timed(), into a buffer it allocates:
 * *buf_out (free() it) holds the payload.  Returns the length.
 */
ssize_t ipc_recv_alloc(struct ipc_conn *c, const char *from,
    void **buf_out, int timeout_ms, struct ipc_msg_info *info_out);

/*
 * ipc_recv_arm - ask for the next message from mailbox from without
 * waiting for it: ipc_fd(c) turns readable once it has arrived, and the
 * next ipc_recv*() call on from returns it at once.  One armed receive
 * per connection: EBUSY for a second.  Returns 0 or -1 with errno.
 */
int ipc_recv_arm(struct ipc_conn *c, const char *from);

/*
 * ipc_set_prefetch - receive ahead: with n > 0, a receive from a mailbox
 * opens a stream on it, and the broker sends up to n of its messages to
 * this connection as they come, without waiting to be asked; the
 * library keeps them and hands them out in order, acknowledging each as
 * it does (so one receive costs no round trip through the broker).  The
 * messages held ahead are this connection's: no other receiver gets
 * them, and if the connection closes before handing them over they go
 * back to the head of the mailbox, marked redelivered.  With several
 * receivers on one mailbox, new messages go round them in turns (a
 * backlog goes first to whoever asks, up to its n).  n = 0
 * (the default) ends every stream: each receive asks for one message.
 * The library may then hold up to n messages per mailbox (n times the
 * largest message, in bytes).  Receives from direct queues never
 * prefetch.  Returns 0, or -1 with EINVAL (n over 65536), ECONNRESET.
 */
int ipc_set_prefetch(struct ipc_conn *c, unsigned n);

/* --- introspection (what ipcctl shows) --------------------------------- */

/*
 * ipc_accept_remote - whether this process's direct queue takes messages
 * from processes on other hosts (on: 1).  Off by default: a message from
 * another host to pid:P is refused with EACCES unless one of P's
 * connections turned this on.  Returns 0 or -1 (ENOTSUP on a tls://
 * connection, which has no direct queue).
 */
int ipc_accept_remote(struct ipc_conn *c, int on);

/*
 * The callbacks below are called once per item, in the broker's order;
 * a positive return stops the walk early (the rest is read and dropped),
 * and the function then returns that value.  Pointers passed to a
 * callback are valid during the call only.  Each function returns 0 when
 * the walk completed, or -1 with errno (ECONNRESET, EACCES, ENOENT, ...).
 */

/* ipc_mbox_list - every mailbox. */
int ipc_mbox_list(struct ipc_conn *c,
    int (*cb)(const struct ipc_mbox_info *info, void *arg), void *arg);

/* ipc_mbox_peek - up to max queued messages of mailbox name, oldest
 * first, without taking them (needs read permission). */
int ipc_mbox_peek(struct ipc_conn *c, const char *name, unsigned max,
    int (*cb)(const struct ipc_msg_info *info, const void *data,
    void *arg), void *arg);

/* A connection to the broker, as ipc_clients() reports it. */
struct ipc_client_info {
	uint64_t conn_id;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char comm[17];			/* the process's command name */
	uint32_t queue_depth;		/* its process's direct queue */
	uint64_t msgs_sent;
	uint64_t msgs_received;
	uint64_t connected_ns;		/* CLOCK_REALTIME */
};

/* ipc_clients - every connection (a process may have several). */
int ipc_clients(struct ipc_conn *c,
    int (*cb)(const struct ipc_client_info *info, void *arg), void *arg);

/* A link between brokers, as ipc_links() reports it. */
enum ipc_link_state {
	IPC_LINK_DOWN = 0,	/* waiting to reconnect (or, in: gone) */
	IPC_LINK_CONNECTING = 1,
	IPC_LINK_UP = 2,
};

struct ipc_link_info {
	int incoming;			/* 0: this broker's link to peer;
					 * 1: peer's link to this broker */
	enum ipc_link_state state;
	char peer[IPC_HOST_MAX + 8];	/* "host:port" */
	char identity[129];		/* authenticated: PSK identity or
					 * certificate CN */
	uint32_t queued;		/* out: not yet sent */
	uint32_t in_flight;		/* out: sent, not yet answered */
	uint64_t msgs_out;		/* out: accepted by the peer */
	uint64_t msgs_in;		/* in: received from the peer */
	uint64_t failed;		/* out: refused by the peer */
	uint64_t reconnects;
	uint64_t rtt_us;		/* last heartbeat round trip; 0: none */
	char last_error[256];
};

/* ipc_links - the broker's links to and from other brokers. */
int ipc_links(struct ipc_conn *c,
    int (*cb)(const struct ipc_link_info *info, void *arg), void *arg);

/* ipc_counters - the broker's counters by name ("messages_in",
 * "uptime_ms", ...; see ipcd(8)). */
int ipc_counters(struct ipc_conn *c,
    int (*cb)(const char *name, uint64_t value, void *arg), void *arg);

/* --- monitoring ---------------------------------------------------------- */

enum ipc_event_kind {
	IPC_EV_CONNECT = 1,	/* a process connected */
	IPC_EV_DISCONNECT,
	IPC_EV_CREATE,		/* a mailbox was created */
	IPC_EV_DELETE,
	IPC_EV_SEND,		/* a message was accepted into a queue */
	IPC_EV_RECEIVE,		/* a message was delivered to a receiver */
	IPC_EV_ERROR,		/* a request failed (errno in error) */
	IPC_EV_DROPPED,		/* events were lost: the monitor did not
				 * keep up; count in msg_id */
};

struct ipc_event {
	enum ipc_event_kind kind;
	uint64_t time_ns;		/* CLOCK_REALTIME */
	pid_t pid;			/* the process that did it */
	uid_t uid;
	uint64_t msg_id;		/* SEND, RECEIVE */
	size_t len;			/* SEND, RECEIVE: payload bytes */
	int error;			/* ERROR: an errno value */
	char subject[IPC_ADDR_MAX];	/* mailbox or address, or "" */
};

/*
 * ipc_monitor - turn c into a monitor: from now on it receives an event
 * for everything the broker does (for mailboxes and processes the
 * caller's uid may see; root sees all).  Use the connection only with
 * ipc_monitor_next() and ipc_close() afterwards.  Returns 0 or -1.
 */
int ipc_monitor(struct ipc_conn *c);

/*
 * ipc_monitor_next - the next event, waiting up to timeout_ms (0: never,
 * IPC_FOREVER).  Returns 0, or -1 with EAGAIN/ETIMEDOUT, ECONNRESET.
 * ipc_fd() turns readable when one waits.  A monitor that falls behind
 * loses events, and is told by an IPC_EV_DROPPED event with the count.
 */
int ipc_monitor_next(struct ipc_conn *c, struct ipc_event *ev,
    int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* IPC_H */
