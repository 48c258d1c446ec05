/*
 * broker.h - ipcd's shared state: the broker, its connections, mailboxes,
 * messages and waits, and the calls between conn.c and mailbox.c.
 *
 * Ownership in one place:
 *   broker  owns every conn (list) and every mbox (hash table);
 *   mbox    owns its queued msgs and the waits parked on it;
 *   wait    owns the msg of a parked sender;
 *   conn    links the waits it has parked (to cancel them when it goes).
 * Internal functions return 0 or -errno, as STYLE.md says.
 */
#ifndef BROKER_H
#define BROKER_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uuid/uuid.h>

#include "ipc.h"
#include "loop.h"
#include "wire.h"

struct broker;
struct conn;
struct proc;
struct link;
struct lreq;
struct peer;
struct tls;
struct tls_ctx;
struct journal;
struct dpend;

/* "host:port" of a broker ("[v6]:port"), the key of links and the
 * origin of the messages that came over them. */
#define LINK_NAME_MAX	(IPC_HOST_MAX + 2 + 1 + 5 + 1)
/* Sequence numbers in flight per link, and so the answers a receiving
 * broker remembers per peer (and the sends it may park for one).  1024
 * x 64 B messages keep a loopback link busy; picked, then measured. */
#define LINK_WINDOW	1024u
/* A link is dead when this many heartbeats went unanswered. */
#define LINK_MISSED	3
/* The default TCP port of ipcd --tcp. */
#define IPCD_TCP_PORT	IPC_TCP_PORT

/* What one user holds: mailboxes owned, bytes of its messages queued. */
struct quota {
	struct quota *next;
	uid_t uid;
	uint32_t mailboxes;
	uint64_t bytes;
	uint32_t conns;			/* past the handshake */
	uint32_t fds;			/* memfd messages held */
};

/* A message in the broker: one allocation, header and bytes.  Its bytes
 * count against its sender's quota while it exists. */
struct msg {
	struct msg *next;		/* in a queue, or a conn's unacked */
	struct broker *b;
	struct quota *quota;
	struct mbox *home;		/* unacked: where it goes back to;
					 * NULL once that is deleted */
	uint64_t id, enqueue_ns;
	uint64_t sender_conn, sender_req;	/* where failures go */
	uint32_t pid, uid, gid;
	uint32_t flags;			/* MSG_* */
	uint32_t len;
	int fd;				/* >= 0: the payload is this sealed
					 * memfd (data holds none of it) */
	const char *origin;		/* the sender's broker, "host:port";
					 * NULL: this one.  In the same
					 * allocation, after data */
	uint64_t jseg;			/* durable: the journal segment its
					 * record is in (retained while it
					 * lives); 0: not journaled */
	uint8_t data[];
};

/* Which sender a receive takes: pid 0 any; host "" this machine. */
struct msg_from {
	uint32_t pid;
	char host[LINK_NAME_MAX];
};

#define MSG_REDELIVERED	0x1u	/* = WIRE_DELIVER_REDELIVERED */
#define MSG_ASYNC	0x2u	/* its sender wants no SENT */

struct msgq {
	struct msg *head, *tail;
	uint32_t count;
	uint64_t bytes;
};

enum wait_kind { WAIT_RECV, WAIT_SEND };

/* A request parked until a message, room, or its deadline comes. */
struct wait {
	struct wait *next, *prev;	/* in the mailbox's queue, FIFO */
	struct wait *cnext, *cprev;	/* in the connection's list */
	enum wait_kind kind;
	struct conn *conn;
	struct mbox *mbox;
	uint64_t req_id;
	uint32_t max_len;		/* WAIT_RECV */
	struct msg_from from;		/* WAIT_RECV: only from it */
	int stream;			/* WAIT_RECV from CREDIT: stays in
					 * the receivers' line until it
					 * ends, taking while it has credit
					 * and its conn's output has room */
	uint32_t credit;		/* stream: messages it may take */
	struct msg *msg;		/* WAIT_SEND, owned */
	struct loop_timer timer;
};

struct waitq {
	struct wait *head, *tail;
	uint32_t count;
};

/* A mailbox, or a process's direct queue (owner set; not in the name
 * table; name "pid:P"). */
struct mbox {
	struct mbox *hnext;		/* hash chain */
	struct proc *owner;		/* direct queue of this process */
	char *name;
	size_t name_len;
	uint32_t hash;
	uuid_t uuid;
	uint32_t capacity;		/* messages; 0: rendezvous */
	uint64_t max_bytes;
	uint32_t mode;
	uid_t uid;
	gid_t gid;
	struct msgq q;
	struct waitq receivers;		/* parked RECVs and receive streams;
					 * a RECV, or a stream with credit
					 * whose conn has room, only while
					 * nothing queued is for it */
	struct waitq senders;		/* parked SENDs, in arrival order */
	uint64_t msgs_in, msgs_out, created_ns;
	uint32_t unacked;		/* its messages held by receivers */
	int to_feed;			/* on a closing conn's list of */
	struct mbox *feed_next;		/* mailboxes to feed (or a failed
					 * sync's list of those to delete) */
	/* Durable (broker.c): its metadata and messages are journaled.
	 * Messages whose records are not yet synced are held aside: they
	 * take room (capacity, max_bytes) but receivers do not see them. */
	int durable;			/* 1; -1: discarded in replay */
	uint32_t pend_count;
	uint64_t pend_bytes;
	uint32_t dwaits;		/* dpends that name it */
	struct mbox *dnext, *dprev;	/* the broker's durable mailboxes */
};

enum conn_state { CONN_TLS, CONN_HELLO, CONN_READY, CONN_DEAD };

/* Descriptors a connection may have sent ahead of the SENDs that claim
 * them (the library sends one with each such SEND).  Picked. */
#define CONN_FDS_MAX 8

struct conn_outfd {
	uint64_t pos;			/* out stream position */
	int fd;				/* ours (a dup), closed once sent */
};

enum conn_kind {
	CONN_LOCAL,			/* UNIX socket: a local process */
	CONN_TCP,			/* TCP, before its first frame */
	CONN_REMOTE_CLIENT,		/* TCP: a process of another host
					 * using this broker (tls://) */
	CONN_LINK_IN,			/* TCP: another broker's link */
	CONN_LINK_OUT,			/* TCP: our link to another broker */
};

struct conn {
	struct loop_watch watch;
	struct broker *b;
	uint64_t id;
	enum conn_state state;
	enum conn_kind kind;
	struct tls *tls;		/* TCP: every byte goes through it */
	const char *identity;		/* TCP without TLS (conn_adopt):
					 * whom it stands for */
	int tls_want_write;		/* a read needs the socket writable */
	int tls_want;			/* handshake: POLLIN or POLLOUT */
	int connecting;			/* CONN_LINK_OUT: TCP connect going */
	char addr[64];			/* TCP: the peer's address */
	struct peer *peer;		/* CONN_LINK_IN: who is sending */
	struct link *link;		/* CONN_LINK_OUT: whose conn */
	struct lreq *lreqs;		/* its messages on their way to
					 * other hosts */
	int remote_direct;		/* OPTION: takes remote messages */
	int64_t last_rx_ms;		/* TCP: last bytes from the peer */
	uint32_t silence_ms;		/* CONN_LINK_IN: closed when silent
					 * this long (LINK_MISSED of the
					 * slower side's heartbeats) */
	struct ucred cred;
	struct quota *quota;		/* counts it, from HELLO on */
	struct conn *hs_next, *hs_prev;	/* the broker's handshaking list */
	int handshaking;		/* on it */
	struct proc *proc;		/* from HELLO on */
	struct conn *pnext;		/* the proc's conns */
	char comm[17];
	uint8_t *in;			/* bytes read, not yet a whole frame */
	size_t in_len, in_cap;
	uint8_t *out;			/* encoded replies not yet written */
	size_t out_off, out_len, out_cap;
	uint64_t out_abs;		/* bytes written before out + out_off */
	/* Descriptors going out (DELIVER of a memfd message): each with
	 * the stream position of its frame's first byte, in order. */
	struct conn_outfd *outfds;
	uint32_t noutfds, outfds_cap;
	/* Descriptors received, not yet claimed by their SEND (FIFO), and
	 * the one of the frame being answered. */
	int fdq[CONN_FDS_MAX];
	uint32_t nfdq;
	int frame_fd;
	struct wait *waits;		/* parked requests of this conn */
	uint32_t nwaits;
	struct msg *unacked;		/* delivered, not acked; oldest
					 * first (acks come in that order) */
	struct msg *unacked_tail;
	uint32_t nunacked;
	uint32_t nstreams;		/* receive streams (CREDIT) open */
	int streams_blocked;		/* a stream stopped: output full */
	int want_flush;			/* on the broker's flush list */
	uint64_t monitor_id;		/* MONITOR request id; 0: none */
	uint64_t events_dropped;	/* not sent: it fell behind */
	struct conn *mnext;		/* the broker's monitors */
	int closing;			/* error sent: close after flush */
	int rd_eof;			/* the client shut its side: its
					 * requests are answered, then it
					 * is closed */
	struct conn *next, *prev;	/* the broker's list */
	struct conn *flush_next;
	struct loop_timer hello_timer;
	struct loop_timer more_timer;	/* TLS: read what it decrypted
					 * once the loop went round */
	uint64_t msgs_sent, msgs_received, connected_ns;
	uint32_t dwaits;		/* its durable sends and requests
					 * waiting for a sync (broker.c) */
};

struct broker_limits {
	uint32_t max_payload;		/* --max-msg-size */
	uint32_t default_capacity;
	uint64_t default_max_bytes;
	uint32_t max_connections;
	uint32_t max_mailboxes;
	uint32_t max_mailboxes_per_uid;	/* 0: no limit */
	uint64_t max_bytes_per_uid;	/* queued; 0: no limit */
	uint32_t max_conns_per_uid;	/* 0: no limit */
	uint32_t max_fds_per_uid;	/* memfds held; 0: no limit */
	uint32_t max_handshakes;	/* incomplete connections held */
	uint32_t hello_timeout_ms;
	uint32_t direct_wait_ms;	/* for a pid to connect */
	uint32_t heartbeat_ms;		/* links: PING period; dead after
					 * LINK_MISSED of them unanswered */
	uint32_t link_queue;		/* messages per link, queued and in
					 * flight */
	uint64_t link_queue_bytes;	/* their payload bytes */
	uint32_t max_conns_per_addr;	/* TCP connections from one address */
};

/* A remote identity's uid as seen here: --uid-map IDENTITY:RUID=UID[:GID];
 * identity "*" any, ruid -1 any. */
struct uid_map {
	struct uid_map *next;
	char *identity;
	int64_t ruid;
	uid_t uid;
	gid_t gid;
};

/* A connected process (or one that messages wait for): its direct queue
 * and how the broker knows it is the same process instance. */
struct proc {
	struct proc *hnext;
	struct broker *b;
	pid_t pid;
	uint64_t start;			/* starttime, /proc/P/stat field 22 */
	int pidfd;			/* -1 when the kernel gave none */
	struct loop_watch watch;	/* pidfd readable: it exited */
	struct conn *conns;
	uint32_t nconns;
	int dying;
	struct mbox q;
};

struct broker_counters {
	uint64_t conns_total, msgs_in, msgs_out, bytes_in, bytes_out;
	uint64_t err_proto, err_full, err_timeout, err_nomailbox;
	uint64_t err_msgsize, err_refused, err_access, err_quota;
	uint64_t err_nosuchproc, dropped_proc_gone, dropped_mbox_deleted;
	uint64_t redelivered, failures_reported, acks, events_dropped;
	uint64_t tls_refused, link_msgs_out, link_msgs_in, link_repeats;
	uint64_t handshakes_evicted, accept_paused;
	/* durable mailboxes */
	uint64_t journal_records, journal_damaged, journal_torn_bytes;
	uint64_t journal_orphans, durable_recovered, durable_failed;
	uint64_t journal_compactions, journal_copied;
};

/* Events for monitors: as ipc.h's enum ipc_event_kind. */
enum broker_event {
	EV_CONNECT = 1, EV_DISCONNECT, EV_CREATE, EV_DELETE, EV_SEND,
	EV_RECEIVE, EV_ERROR, EV_DROPPED,
};

struct broker {
	struct loop *loop;
	uint8_t *rbuf;			/* the read buffer conns share */
	int rbuf_busy;			/* frames of it being answered */
	struct broker_limits lim;
	struct broker_counters n;
	struct mbox **tab;		/* hash table of mailboxes */
	size_t tab_size, nmbox;
	struct conn *conns;
	uint32_t nconns;
	struct proc **procs;		/* hash table of processes, by pid */
	size_t procs_size, nprocs;
	struct proc *dead_procs;	/* freed before the next wait */
	struct quota **quotas;
	struct conn *monitors;		/* conns that asked for events */
	struct conn *flushq;		/* conns with replies to write */
	struct conn *dead;		/* closed, freed before the next wait */
	uint64_t next_conn_id, next_msg_id;
	int64_t started_ms;
	uint64_t started_ns;
	int listen_fd;
	struct loop_watch listen_watch;
	/* Out of descriptors (EMFILE): the listening sockets unwatched,
	 * tried again by this timer or when a connection closes. */
	struct loop_timer accept_timer;
	int accept_paused;
	int64_t accept_logged_ms;
	uint64_t accept_round_id;	/* first conn id of this accept round */
	/* Connections still in their handshake, oldest first: past
	 * lim.max_handshakes the oldest is dropped. */
	struct conn *hs_head, *hs_tail;
	uint32_t nhandshaking;
	/* --- TCP: links and remote clients --- */
	int tcp_fd;			/* -1 without --tcp */
	struct loop_watch tcp_watch;
	struct tls_ctx *tls_server, *tls_client;
	char name[LINK_NAME_MAX];	/* how other brokers reach us */
	uint64_t epoch;			/* random per start */
	struct uid_map *uid_map;
	uid_t remote_uid;		/* unmapped remote senders */
	gid_t remote_gid;
	struct link *links;		/* ours to other brokers */
	int resolve_fd[2];		/* name lookups' results: a pipe of
					 * request pointers; -1 until used */
	struct loop_watch resolve_watch;
	struct peer *peers;		/* brokers that link to us */
	uint32_t npeers;
	struct loop_watch signal_watch;
	int stopping;
	/* memfd messages: descriptors held, and how many may be (half
	 * the descriptor limit); past it payloads are read into memory. */
	uint32_t fds_held, max_fds_held;
	/* --- durable mailboxes (broker.c) --- */
	const char *state_dir;		/* --state-dir; NULL: durable
					 * mailboxes are refused */
	uint64_t journal_segment_bytes;	/* 0: the journal's default */
	struct journal *journal;	/* NULL until first needed */
	struct loop_watch journal_watch;
	int journal_dirty;		/* appended since the last sync */
	int journal_busy;		/* a sync asked for, not yet done */
	uint32_t journal_expect;	/* blocking senders the last sync
					 * answered: their next sends are
					 * waited for ... */
	uint32_t journal_sends;		/* (messages sent since) */
	int64_t journal_hold_ms;	/* ... until then */
	struct loop_timer journal_timer;
	char journal_why[256];		/* why it could not be opened */
	struct dpend *dpend_head, *dpend_tail;	/* waiting for a sync, in
					 * the order of their records */
	struct mbox *durables;		/* the durable mailboxes */
	uint32_t ndurables;
	uint64_t durable_msgs;		/* durable messages held */
	uint64_t durable_bytes;		/* their records' bytes */
	/* Compaction (durable.c): live messages of the oldest segments
	 * copied forward; their old segments are let go once the copies
	 * are on disk. */
	int journal_rolled;		/* a segment began since the last look */
	uint64_t compact_seg;		/* segments before it are copied */
	uint64_t *compact_held;		/* the old segment of each copy */
	size_t compact_n, compact_cap;
	uint64_t compact_pos;		/* the last copy; 0: none waits */
	uint64_t compact_to;		/* the newest segment copied into */
	uint64_t compact_retry;		/* a round failed: copies into this
					 * segment and before are made
					 * again; 0: none */
};

/* Wall-clock nanoseconds, for enqueue and creation times. */
uint64_t broker_wall_ns(void);
/* broker.c: every limit at its default, no descriptor open. */
void broker_defaults(struct broker *b);
/* The loop and the tables; 0, or -1 with errno. */
int broker_open(struct broker *b);
/* Every connection told why and closed, everything freed (the listening
 * sockets are the caller's). */
void broker_close(struct broker *b, const char *why);

/* --- broker.c: durable mailboxes ------------------------------------------
 * The journal (journal.h) holds, per durable mailbox, its metadata and
 * its messages; the broker's loop appends records and answers a request
 * once the sync thread says its record is on disk. */

/* At start: when b->state_dir exists, open and lock it and recover its
 * mailboxes and messages.  0 (also when there is no directory), or
 * -errno with why filled (EBUSY: another broker holds it). */
int durable_start(struct broker *b, char *why, size_t why_size);
/* Ask for a sync of what was appended (the before-wait hook); sync what
 * is pending at the end; free what is left when the broker closes. */
void durable_kick(struct broker *b);
void durable_flush(struct broker *b);
void durable_free_all(struct broker *b);
/* The journal, opened (the directory made) on first need.  0, or -errno
 * with b->journal_why saying why: ENOTSUP (no state directory), EBUSY
 * (another broker holds it), or what the disk said. */
int durable_ready(struct broker *b);
/* m was just made durable (mbox_create): link it in; durable_unlink
 * when it goes. */
void durable_link(struct broker *b, struct mbox *m);
/* MBOX_CREATE made durable mailbox m for c: its record is appended and
 * the answer (MBOX_INFO) goes once it is synced.  0, or -errno: m was
 * deleted again, and the caller answers the error. */
int durable_created(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id);
/* m's owner, group or mode changed (or it is about to be deleted, gone
 * set): its record is appended, and OK goes to c once it is synced.
 * 0, or -errno (nothing was appended; the caller answers). */
int durable_changed(struct broker *b, struct mbox *m, int gone,
    struct conn *c, uint64_t req_id);
/* Durable m is being deleted: the sends waiting for their sync fail. */
void durable_mbox_gone(struct broker *b, struct mbox *m);
/* Send msg (consumed) from c into durable m, which has room: its record
 * is appended; it joins the queue and c gets SENT once that is synced,
 * or the error then. */
void durable_send(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg);
/* A receiver acknowledged msg of durable m: recorded as consumed. */
void durable_consumed(struct broker *b, struct mbox *m,
    const struct msg *msg);
/* msg (jseg set) leaves the broker: its record may be reclaimed. */
void durable_release(struct msg *msg);
/* c is closing with durable requests waiting (c->dwaits). */
void durable_conn_gone(struct broker *b, struct conn *c);

/* --- quota.c ------------------------------------------------------------ */

/* The record of uid (made on first use), or NULL when out of memory. */
struct quota *quota_get(struct broker *b, uid_t uid);
void quota_free_all(struct broker *b);
/* A message of len bytes from sender from, charged to its uid: its
 * payload to be copied in, or (fd >= 0) in sealed memfd fd, which the
 * message then owns.  NULL with *err -EDQUOT (over the uid's byte
 * quota) or -ENOMEM (fd not taken). */
struct msg *msg_new(struct broker *b, const struct ucred *from, size_t len,
    int fd, const char *origin, int *err);
/* A message recovered from the journal: charged to its sender's uid as
 * msg_new does, but never refused for quota (it was accepted once).
 * NULL when out of memory. */
struct msg *msg_recover(struct broker *b, const struct ucred *from,
    size_t len, const char *origin);
/* A memfd message's payload read into memory (its descriptor closed):
 * *msgp is replaced.  0 or -errno (*msgp unchanged). */
int msg_materialize(struct broker *b, struct msg **msgp);
void msg_free(struct msg *msg);

/* --- proc.c ------------------------------------------------------------- */

int proc_table_init(struct broker *b);
void proc_table_free(struct broker *b);
/* Tie c (after its handshake) to its process, made on first sight.
 * 0 or -ENOMEM/-ESRCH. */
int proc_attach(struct broker *b, struct conn *c);
/* c goes: the process goes with its last connection. */
void proc_detach(struct broker *b, struct conn *c);
/* The queue to send to pid: of a connected process, or of a living one
 * that messages wait for.  NULL with -ESRCH (no such process) or
 * -ENOMEM. */
struct proc *proc_for_send(struct broker *b, pid_t pid, int *err);
/* A process nobody is connected for and no sender waits for is
 * forgotten. */
void proc_release_if_idle(struct broker *b, struct proc *p);
/* Free the procs destroyed this round (the before-wait hook). */
void proc_reap(struct broker *b);
/* The connection with this id of process pid, or NULL. */
struct conn *proc_conn_by_id(struct broker *b, pid_t pid, uint64_t id);

/* --- mailbox.c ---------------------------------------------------------- */

/* Set up and free a queue that is not in the name table (a proc's). */
int mbox_init_queue(struct broker *b, struct mbox *m, const char *name,
    struct proc *owner);
void mbox_fini_queue(struct broker *b, struct mbox *m, int err,
    const char *why);
/* Does cred have access (4 read, 2 write) to m by its mode? */
int mbox_may(const struct mbox *m, const struct ucred *cred, unsigned bit);
/* Waiting senders may fit now (a process connected, one left). */
void mbox_admit_senders(struct broker *b, struct mbox *m);

int mbox_table_init(struct broker *b);
void mbox_table_free(struct broker *b);
struct mbox *mbox_find(struct broker *b, const char *name, size_t len);
/* Create (or, unless WIRE_CREATE_EXCL, find) a mailbox for conn c.
 * *created_out says which.  -EINVAL, -EEXIST, -ENOSPC, -ENOMEM. */
int mbox_create(struct broker *b, struct conn *c,
    const struct wire_mbox_create *req, struct mbox **m_out,
    int *created_out);
/* Delete m: its messages are freed, its waits fail with ENOENT. */
void mbox_delete(struct broker *b, struct mbox *m);
void mbox_info(const struct mbox *m, struct wire_mbox_info *out);
/* Durable mailboxes: a message whose record is synced joins m (counted
 * as accepted, handed to a waiting receiver or queued). */
void mbox_durable_accept(struct broker *b, struct mbox *m, struct msg *msg);
/* Replay: a mailbox as its record describes it, in the name table and
 * counted for its owner (never refused for limits: it was accepted
 * once).  NULL with -ENOMEM or -EINVAL (a bad name). */
struct mbox *mbox_restore(struct broker *b, const char *name,
    const uuid_t uuid, uid_t uid, gid_t gid, uint32_t mode,
    uint32_t capacity, uint64_t max_bytes, uint64_t created_ns, int *err);
/* Replay: out of the name table and the owner's count (its queue must
 * be empty); the caller frees it with mbox_discard_free(). */
void mbox_discard(struct broker *b, struct mbox *m);
void mbox_discard_free(struct mbox *m);
/* Replay: msg goes to the tail of m's queue, marked redelivered. */
void mbox_restore_msg(struct mbox *m, struct msg *msg);

/* Send msg (consumed) from c to m: answered now (SENT or an error), or
 * parked until room comes or timeout_ms passes. */
void mbox_send(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg, uint32_t timeout_ms);
/* Receive from m for c (from: only what that process sent):
 * answered now (DELIVER or an error), or parked. */
void mbox_recv(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, uint32_t max_len, uint32_t timeout_ms,
    const struct msg_from *from);
/* Forget a parked request without answering it (its conn went away). */
void wait_cancel(struct broker *b, struct wait *w);
/* Receive streams (CREDIT), mailbox.c. */
int mbox_stream_credit(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, uint32_t max_len, uint32_t credit);
int mbox_stream_end(struct broker *b, struct conn *c, uint64_t req_id);
void mbox_stream_run(struct broker *b, struct wait *w);
/* A receiver acknowledged msg: it leaves the books. */
void mbox_acked(struct msg *msg);
/* A receiver went away holding msg unacked: back to the head of its
 * queue (or reported lost if the queue is gone).  Returns the queue, to
 * be fed with mbox_feed_receivers() once all are back. */
struct mbox *mbox_requeue(struct broker *b, struct msg *msg);
/* Serve the waiting receivers from what is queued, in their order. */
void mbox_feed_receivers(struct broker *b, struct mbox *m);
/* The mailbox is going: its unacked messages lose their way home. */
void mbox_forget_unacked(struct broker *b, struct mbox *m);

/* --- conn.c ------------------------------------------------------------- */

/* Accept every pending connection on the listening socket. */
void conn_accept_all(struct broker *b);
/* Replies: queued on c, written before the loop next waits.  Replies to
 * a closed conn are dropped. */
void conn_reply_error(struct conn *c, uint64_t req_id, int err,
    uint32_t aux, const char *text);
/* SENT for msg, unless its sender asked for none (async). */
void conn_reply_sent(struct conn *c, uint64_t req_id, const struct msg *msg);
/* Tell msg's sender, if still connected, that msg was lost after all;
 * counted either way. */
void conn_report_failure(struct broker *b, const struct msg *msg, int err,
    const char *why);
void conn_reply_deliver(struct conn *c, uint64_t req_id, const struct mbox *m,
    const struct msg *msg, int may_pass_fd);
/* A parked request of c finished: c may read again. */
void conn_wait_done(struct conn *c);
/* Write what can be written; free what was closed (the before-wait
 * hook). */
void conn_flush_all(struct broker *b);
/* Close c now; freed at the next conn_flush_all(). */
void conn_close(struct conn *c);
/* Tell the monitors that may see it: pid/uid did kind to subject (m,
 * when it is a mailbox, decides who may see it).  Costs one test when
 * nobody monitors. */
void conn_event_send(struct broker *b, enum broker_event kind, uint32_t pid,
    uint32_t uid, const struct mbox *m, const char *subject,
    uint64_t msg_id, uint64_t len, int err);
/* Tell the monitors, if any (checked here: twice per message). */
#define conn_event(b, ...) do {						\
	if ((b)->monitors != NULL)					\
		conn_event_send((b), __VA_ARGS__);			\
} while (0)
/* Tell every client the broker stops, and close them all. */
void conn_close_all(struct broker *b, const char *why);
/* Accept every pending TCP connection (TLS first). */
void conn_accept_tcp(struct broker *b);
/* The accept timer's callback: watch the listening sockets again. */
void conn_accept_resume(struct loop_timer *t);
/* Our side of a link: a conn on a connecting TCP socket fd.  NULL when
 * it could not be set up (fd closed). */
struct conn *conn_new_link(struct broker *b, struct link *l, int fd);
/* A connection on fd as if accepted: CONN_LOCAL (credentials from the
 * socket), or CONN_TCP already authenticated as identity (no TLS: for
 * the in-process harnesses in fuzz/).  NULL when refused. */
struct conn *conn_adopt(struct broker *b, int fd, enum conn_kind kind,
    const char *identity);
/* The authenticated identity of a TCP peer. */
const char *conn_peer(const struct conn *c);
/* Queue frame f on c, written before the loop next waits. */
void conn_push(struct conn *c, const struct wire_frame *f);
/* c is throttled by its unwritten output. */
int conn_out_full(const struct conn *c);
int conn_stream_full(const struct conn *c);
/* c's process exited: answer what it wrote before it went, as far as
 * the socket holds it and c is not throttled. */
void conn_drain(struct conn *c);
/* Map a remote identity's uid to ours. */
void conn_map_uid(const struct broker *b, const char *identity,
    int64_t ruid, struct ucred *out);

/* --- link.c ------------------------------------------------------------- */

/* "host:port" for host (no brackets) and port (0: the default). */
void link_name(const char *host, int port, char *buf, size_t size);
/* Does the address's host part name this broker? */
int link_is_self(const struct broker *b, const struct ipc_addr *a);
/* Forward a send of c (request req_id) to a's host: answered when the
 * remote broker answers, or with an error now.  msg is consumed. */
void link_send(struct broker *b, struct conn *c, uint64_t req_id,
    const struct ipc_addr *a, struct msg *msg, uint32_t timeout_ms);
/* c is closing: its messages in flight go on unanswered, those not yet
 * sent are dropped (as a parked local send is). */
void link_conn_gone(struct broker *b, struct conn *c);
/* Frames on our side of a link. */
void link_on_frame(struct conn *c, const struct wire_frame *f);
/* The link's conn is ready for LINK_HELLO / closed. */
void link_conn_up(struct conn *c);
void link_conn_closed(struct conn *c, const char *why);
/* The link's conn wrote out: more may be sent. */
void link_pump(struct link *l);
/* The peer state of a broker that links to us; made on first sight. */
struct peer *peer_get(struct broker *b, const char *identity,
    const char *name, uint64_t epoch);
/* Has seq been answered on this peer?  1 with *code (0: SENT) and
 * *msg_id; 0 when new (then marked pending); -1 when pending already. */
int peer_check(struct peer *p, uint64_t seq, uint32_t *code,
    uint64_t *msg_id);
void peer_record(struct peer *p, uint64_t seq, uint32_t code,
    uint64_t msg_id);
/* The conn that carries peer p's link now, or NULL; set it. */
struct conn *peer_conn(const struct peer *p);
void peer_attach(struct peer *p, struct conn *c);
/* The conn of peer p went: its pending sequence numbers are unanswered. */
void peer_detach(struct peer *p, struct conn *c);
const char *peer_name(const struct peer *p);
/* LINK_INFO for each link (out) and each peer's conn (in). */
void link_list(struct broker *b, struct conn *c, uint64_t req_id);
void link_free_all(struct broker *b);

#endif
