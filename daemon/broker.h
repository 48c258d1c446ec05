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

#include "loop.h"
#include "wire.h"

struct broker;
struct conn;

/* A message in the broker: one allocation, header and bytes. */
struct msg {
	struct msg *next;
	uint64_t id, enqueue_ns;
	uint32_t pid, uid, gid;
	uint32_t len;
	uint8_t data[];
};

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
	struct msg *msg;		/* WAIT_SEND, owned */
	struct loop_timer timer;
};

struct waitq {
	struct wait *head, *tail;
	uint32_t count;
};

struct mbox {
	struct mbox *hnext;		/* hash chain */
	char *name;
	uint32_t hash;
	uuid_t uuid;
	uint32_t capacity;		/* messages; 0: rendezvous */
	uint64_t max_bytes;
	uint32_t mode;
	uid_t uid;
	gid_t gid;
	struct msgq q;
	struct waitq receivers;		/* parked RECVs; only while q empty */
	struct waitq senders;		/* parked SENDs, in arrival order */
	uint64_t msgs_in, msgs_out, created_ns;
};

enum conn_state { CONN_HELLO, CONN_READY, CONN_DEAD };

struct conn {
	struct loop_watch watch;
	struct broker *b;
	uint64_t id;
	enum conn_state state;
	struct ucred cred;
	char comm[17];
	uint8_t *in;			/* bytes read, not yet a whole frame */
	size_t in_len, in_cap;
	uint8_t *out;			/* encoded replies not yet written */
	size_t out_off, out_len, out_cap;
	struct wait *waits;		/* parked requests of this conn */
	uint32_t nwaits;
	int want_flush;			/* on the broker's flush list */
	int closing;			/* error sent: close after flush */
	struct conn *next, *prev;	/* the broker's list */
	struct conn *flush_next;
	struct loop_timer hello_timer;
	uint64_t msgs_sent, msgs_received, connected_ns;
};

struct broker_limits {
	uint32_t max_payload;		/* --max-msg-size */
	uint32_t default_capacity;
	uint64_t default_max_bytes;
	uint32_t max_connections;
	uint32_t max_mailboxes;
	uint32_t max_mailboxes_per_uid;
	uint32_t hello_timeout_ms;
};

struct broker_counters {
	uint64_t conns_total, msgs_in, msgs_out, bytes_in, bytes_out;
	uint64_t err_proto, err_full, err_timeout, err_nomailbox;
	uint64_t err_msgsize, err_refused;
};

struct broker {
	struct loop *loop;
	struct broker_limits lim;
	struct broker_counters n;
	struct mbox **tab;		/* hash table of mailboxes */
	size_t tab_size, nmbox;
	struct conn *conns;
	uint32_t nconns;
	struct conn *flushq;		/* conns with replies to write */
	struct conn *dead;		/* closed, freed before the next wait */
	uint64_t next_conn_id, next_msg_id;
	int64_t started_ms;
	uint64_t started_ns;
	int listen_fd;
	struct loop_watch listen_watch;
	struct loop_watch signal_watch;
	int stopping;
};

/* Wall-clock nanoseconds, for enqueue and creation times. */
uint64_t broker_wall_ns(void);

/* --- mailbox.c ---------------------------------------------------------- */

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

/* Send msg (consumed) from c to m: answered now (SENT or an error), or
 * parked until room comes or timeout_ms passes. */
void mbox_send(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, struct msg *msg, uint32_t timeout_ms);
/* Receive from m for c: answered now (DELIVER or an error), or parked. */
void mbox_recv(struct broker *b, struct mbox *m, struct conn *c,
    uint64_t req_id, uint32_t max_len, uint32_t timeout_ms);
/* Forget a parked request without answering it (its conn went away). */
void wait_cancel(struct broker *b, struct wait *w);

/* --- conn.c ------------------------------------------------------------- */

/* Accept every pending connection on the listening socket. */
void conn_accept_all(struct broker *b);
/* Replies: queued on c, written before the loop next waits.  Replies to
 * a closed conn are dropped. */
void conn_reply_error(struct conn *c, uint64_t req_id, int err,
    uint32_t aux, const char *text);
void conn_reply_sent(struct conn *c, uint64_t req_id, uint64_t msg_id);
void conn_reply_deliver(struct conn *c, uint64_t req_id,
    const struct mbox *m, const struct msg *msg);
/* A parked request of c finished: c may read again. */
void conn_wait_done(struct conn *c);
/* Write what can be written; free what was closed (the before-wait
 * hook). */
void conn_flush_all(struct broker *b);
/* Close c now; freed at the next conn_flush_all(). */
void conn_close(struct conn *c);
/* Tell every client the broker stops, and close them all. */
void conn_close_all(struct broker *b, const char *why);

#endif
