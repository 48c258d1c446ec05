/*
 * wire - the frame format between libipc and ipcd, and the only code that
 * parses bytes off a socket.  doc/protocol.md is its prose description;
 * the two must agree.
 *
 * A frame is a 16-byte header and a body whose layout is fixed by the
 * header's type.  All integers are little-endian.  Strings are a u16
 * length and that many bytes (no NUL, and none inside).  A payload, where
 * a type has one, is the last field and runs to the end of the frame.
 *
 * Decoding never trusts a length it has not checked: the header's length
 * is checked against the negotiated maximum before anything is buffered,
 * and every field against what remains of the frame.  Decoded strings and
 * payloads point into the frame's buffer: borrowed, valid as long as it.
 */
#ifndef WIRE_H
#define WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION		1u
#define WIRE_MAGIC		0x31435049u	/* "IPC1" on the wire */
#define WIRE_HDR_LEN		16u
/* Longest string field: names are 255, addresses under 530. */
#define WIRE_STR_MAX		1024u
/* The broker's default largest payload (--max-msg-size). */
#define WIRE_PAYLOAD_DEFAULT	(8u << 20)
/* Fixed fields and strings that may sit beside a payload in one frame:
 * the frame limit is max_payload plus this. */
#define WIRE_OVERHEAD_MAX	(64u + 2u * (2u + WIRE_STR_MAX))
/* "No limit" for timeouts and "use the broker's default" for
 * attributes. */
#define WIRE_FOREVER		0xffffffffu
#define WIRE_DEFAULT32		0xffffffffu
#define WIRE_DEFAULT64		UINT64_MAX

enum wire_type {
	/* connection */
	WIRE_HELLO = 0x01,		/* c->s, first frame */
	WIRE_WELCOME = 0x02,		/* s->c, answers HELLO */
	WIRE_ERROR = 0x03,		/* s->c, a request failed */
	WIRE_OK = 0x04,			/* s->c, success with no data; ends
					 * a list */
	WIRE_BYE = 0x05,		/* s->c, the broker is closing */
	WIRE_OPTION = 0x06,		/* -> OK: set a connection option */
	/* mailboxes */
	WIRE_MBOX_CREATE = 0x10,	/* -> MBOX_INFO */
	WIRE_MBOX_STAT = 0x11,		/* -> MBOX_INFO */
	WIRE_MBOX_DELETE = 0x12,	/* -> OK */
	WIRE_MBOX_LIST = 0x13,		/* -> MBOX_INFO..., OK */
	WIRE_MBOX_INFO = 0x14,
	WIRE_MBOX_CHMOD = 0x15,		/* -> OK */
	WIRE_MBOX_CHOWN = 0x16,		/* -> OK */
	/* messages */
	WIRE_SEND = 0x20,		/* -> SENT */
	WIRE_SENT = 0x21,
	WIRE_RECV = 0x22,		/* -> DELIVER */
	WIRE_DELIVER = 0x23,
	WIRE_PEEK = 0x24,		/* -> DELIVER..., OK */
	WIRE_ACK = 0x25,		/* c->s, no reply: delivered messages
					 * handed to the application */
	WIRE_FAILED = 0x26,		/* s->c, unasked: a message this
					 * client sent was lost after all */
	WIRE_CREDIT = 0x27,		/* -> DELIVER... as messages come
					 * (a receive stream); END: -> OK */
	/* introspection */
	WIRE_CLIENTS = 0x30,		/* -> CLIENT_INFO..., OK */
	WIRE_CLIENT_INFO = 0x31,
	WIRE_COUNTERS = 0x32,		/* -> COUNTER..., OK */
	WIRE_COUNTER = 0x33,
	WIRE_MONITOR = 0x34,		/* -> OK, then EVENT... for ever */
	WIRE_EVENT = 0x35,
	WIRE_LINKS = 0x36,		/* -> LINK_INFO..., OK */
	WIRE_LINK_INFO = 0x37,
	/* between brokers, over an authenticated TLS link */
	WIRE_LINK_HELLO = 0x40,		/* first frame of a broker link;
					 * -> WELCOME */
	WIRE_LINK_SEND = 0x41,		/* id: the link's sequence number;
					 * -> SENT or ERROR, same id */
	WIRE_PING = 0x42,		/* -> PONG, same id and stamp */
	WIRE_PONG = 0x43,
};

/* OPTION options */
#define WIRE_OPT_REMOTE_DIRECT	1u	/* value 1: the process's direct
					 * queue takes messages from other
					 * hosts (default 0: refused) */
/* LINK_INFO direction and state */
#define WIRE_LINK_OUT		0u	/* this broker opened it */
#define WIRE_LINK_IN		1u	/* the peer opened it */
enum wire_link_state {
	WIRE_LINK_DOWN = 0,		/* waiting to reconnect */
	WIRE_LINK_CONNECTING = 1,	/* TCP, TLS or LINK_HELLO under way */
	WIRE_LINK_UP = 2,
};

/* MBOX_CREATE flags */
#define WIRE_CREATE_EXCL	0x1u	/* EEXIST rather than open */
#define WIRE_CREATE_DURABLE	0x2u	/* a durable mailbox: it and its
					 * messages outlive the broker;
					 * ignored when opening one that
					 * exists */
/* MBOX_INFO flags */
#define WIRE_INFO_DURABLE	0x1u	/* the mailbox is durable */
/* SEND flags */
#define WIRE_SEND_ASYNC		0x1u	/* no SENT; failures come as ERROR
					 * or FAILED with this request's id;
					 * the broker never waits for room */
#define WIRE_SEND_FD		0x2u	/* the payload is a sealed memfd
					 * passed with SCM_RIGHTS (UNIX
					 * socket only); payload empty */
/* DELIVER flags */
#define WIRE_DELIVER_REDELIVERED 0x1u	/* handed out before, never acked */
#define WIRE_DELIVER_FD		0x2u	/* the payload is the sealed memfd
					 * passed with this frame; payload
					 * empty */
/* Most message ids in one ACK. */
#define WIRE_ACK_MAX		4096u

/* Error codes in ERROR and BYE: the protocol's own numbers, so that a
 * client on another system reads them right.  wire_errno() maps them. */
enum wire_code {
	WIRE_E_INVAL = 1,
	WIRE_E_NOENT = 2,
	WIRE_E_EXIST = 3,
	WIRE_E_ACCES = 4,
	WIRE_E_AGAIN = 5,
	WIRE_E_TIMEDOUT = 6,
	WIRE_E_MSGSIZE = 7,
	WIRE_E_SRCH = 8,
	WIRE_E_PROTO = 9,
	WIRE_E_NOMEM = 10,
	WIRE_E_NOSPC = 11,
	WIRE_E_DQUOT = 12,
	WIRE_E_NOTSUP = 13,
	WIRE_E_SHUTDOWN = 14,	/* the broker is stopping */
	WIRE_E_BUSY = 15,
	WIRE_E_IO = 16,		/* a durable mailbox's journal: a write
				 * or sync failed */
	WIRE_E_ROFS = 17,	/* the journal refuses writes after an
				 * error it could not undo */
};
/* The highest code defined: 1..WIRE_E_MAX have no gap. */
#define WIRE_E_MAX	WIRE_E_ROFS

struct wire_bytes {
	const uint8_t *p;
	size_t len;
};

struct wire_hello {
	uint32_t magic;
	uint16_t version_min, version_max;
};

struct wire_welcome {
	uint32_t version;
	uint32_t max_payload;
	uint64_t conn_id;
	uint32_t pid, uid, gid;		/* the client, as the kernel says */
};

struct wire_option {
	uint32_t option;		/* WIRE_OPT_* */
	uint64_t value;
};

/* LINK_HELLO: a broker opening a link says who it is. */
struct wire_link_hello {
	uint32_t magic;
	uint16_t version_min, version_max;
	uint64_t epoch;			/* random per broker start: sequence
					 * numbers restart with it */
	uint32_t heartbeat_ms;		/* how often it pings: the other
					 * side's silence limit follows */
	struct wire_bytes name;		/* the address that reaches the
					 * sending broker: "host:port" */
};

/* LINK_SEND: a SEND forwarded by the sender's broker, with the sender's
 * identity as that broker saw it (the receiving broker maps the uid). */
struct wire_link_send {
	uint32_t timeout_ms, flags;	/* as SEND */
	uint32_t pid, uid, gid;
	struct wire_bytes dest;		/* local to the receiving broker */
	struct wire_bytes payload;
};

/* PING and PONG */
struct wire_ping {
	uint64_t stamp_ns;
};

struct wire_link_info {
	uint32_t direction, state;	/* WIRE_LINK_* */
	uint32_t queued, in_flight;	/* messages not yet sent; sent, not
					 * yet answered */
	uint64_t msgs_out, msgs_in;	/* sent and answered; received */
	uint64_t failed, reconnects;
	uint64_t rtt_us;		/* last heartbeat round trip; 0 none */
	struct wire_bytes peer;		/* host:port, or the peer's address */
	struct wire_bytes identity;	/* authenticated: PSK identity or
					 * certificate subject CN */
	struct wire_bytes last_error;
};

struct wire_error {
	uint32_t code;
	uint32_t aux;			/* EMSGSIZE on RECV: bytes needed */
	struct wire_bytes text;		/* for people, never parsed */
};

struct wire_bye {
	uint32_t code;
	struct wire_bytes text;
};

struct wire_mbox_create {
	uint32_t capacity;		/* WIRE_DEFAULT32: broker default */
	uint32_t mode;			/* WIRE_DEFAULT32: 0600 */
	uint64_t max_bytes;		/* WIRE_DEFAULT64: broker default */
	uint32_t flags;			/* WIRE_CREATE_* */
	struct wire_bytes name;
};

/* MBOX_STAT, MBOX_DELETE */
struct wire_name {
	struct wire_bytes name;
};

struct wire_mbox_chmod {
	uint32_t mode;
	struct wire_bytes name;
};

struct wire_mbox_chown {
	uint32_t uid, gid;		/* WIRE_DEFAULT32: leave as it is */
	struct wire_bytes name;
};

struct wire_mbox_info {
	uint8_t uuid[16];
	uint32_t capacity, mode;
	uint64_t max_bytes;
	uint32_t uid, gid;
	uint32_t depth, waiting_receivers, waiting_senders, flags;
	uint64_t bytes, msgs_in, msgs_out, created_ns;
	struct wire_bytes name;
};

struct wire_send {
	uint32_t timeout_ms;		/* 0: never wait; WIRE_FOREVER */
	uint32_t flags;			/* WIRE_SEND_* */
	struct wire_bytes dest;		/* an address, ipc_addr_parse():
					 * a mailbox or "pid:P" */
	struct wire_bytes payload;
};

struct wire_sent {
	uint64_t msg_id;
};

struct wire_recv {
	uint32_t timeout_ms;
	uint32_t flags;			/* none defined yet: must be 0 */
	uint32_t max_len;		/* largest payload the client takes */
	struct wire_bytes source;	/* a mailbox; "" for the caller's
					 * own direct queue, any sender;
					 * "pid:Q" for the messages Q sent
					 * to it (selective receive) */
};

/* CREDIT: let the broker stream up to credit more messages of a mailbox
 * to this connection, each a DELIVER with the CREDIT's id (the stream's
 * id).  With WIRE_CREDIT_END the stream ends instead, answered by OK. */
#define WIRE_CREDIT_END	0x1u
#define WIRE_CREDIT_MAX	65536u	/* most credit one stream holds */
struct wire_credit {
	uint32_t credit;
	uint32_t flags;			/* WIRE_CREDIT_END, else 0 */
	uint32_t max_len;		/* largest payload the client takes */
	struct wire_bytes source;	/* a mailbox name */
};

struct wire_deliver {
	uint64_t msg_id, enqueue_ns;
	uint32_t pid, uid, gid, flags;
	struct wire_bytes sender, source, payload;
};

/* ACK: the ids, u64 each, little-endian, as the payload. */
struct wire_ack {
	struct wire_bytes ids;
};

/* FAILED: the header's id is the SEND request's. */
struct wire_failed {
	uint64_t msg_id;
	uint32_t code;
	struct wire_bytes text;
};

struct wire_peek {
	uint32_t max_count;
	struct wire_bytes name;
};

struct wire_client_info {
	uint64_t conn_id;
	uint32_t pid, uid, gid, flags;
	uint32_t queue_depth;		/* its process's direct queue */
	uint64_t msgs_sent, msgs_received, connected_ns;
	struct wire_bytes comm;		/* the process's command name */
};

/* EVENT: the header's id is the MONITOR request's. */
struct wire_event {
	uint64_t time_ns;
	uint32_t kind;			/* enum ipc_event_kind */
	uint32_t pid, uid;
	uint32_t code;			/* ERROR: a wire_code */
	uint64_t msg_id, len;		/* DROPPED: msg_id = events lost */
	struct wire_bytes subject;
};

struct wire_counter {
	uint64_t value;
	struct wire_bytes name;
};

/* A decoded (or to be encoded) frame.  Only the member of b that type
 * names is meaningful; types without a body use none. */
struct wire_frame {
	uint16_t type;
	uint16_t flags;			/* header flags: none defined, 0 */
	uint64_t id;			/* request id; replies echo it */
	union {
		struct wire_hello hello;
		struct wire_option option;
		struct wire_link_hello link_hello;
		struct wire_link_send link_send;
		struct wire_ping ping;
		struct wire_link_info link;
		struct wire_welcome welcome;
		struct wire_error error;
		struct wire_bye bye;
		struct wire_mbox_create create;
		struct wire_name name;
		struct wire_mbox_info info;
		struct wire_mbox_chmod chmod;
		struct wire_mbox_chown chown;
		struct wire_send send;
		struct wire_sent sent;
		struct wire_recv recv;
		struct wire_credit credit;
		struct wire_deliver deliver;
		struct wire_peek peek;
		struct wire_ack ack;
		struct wire_failed failed;
		struct wire_client_info client;
		struct wire_counter counter;
		struct wire_event event;
	} b;
};

/*
 * wire_frame_len - the total length of the frame starting at buf, once
 * its header has arrived.  Returns 0 when fewer than WIRE_HDR_LEN bytes
 * are there (avail), the length (WIRE_HDR_LEN..max_frame) when it is
 * acceptable, -EPROTO when it is shorter than a header, -EMSGSIZE when
 * longer than max_frame.  Call it before buffering the rest.
 */
long wire_frame_len(const uint8_t *buf, size_t avail, uint32_t max_frame);

/*
 * wire_decode - decode one whole frame of len bytes (as wire_frame_len
 * said).  Returns 0, or -EPROTO for anything that does not validate
 * (unknown type, a field that runs past the end, bytes left over, a
 * string over WIRE_STR_MAX or with a NUL in it), with *why (may be NULL)
 * set to a static reason.  Strings and payload in f borrow from buf.
 */
int wire_decode(const uint8_t *buf, size_t len, struct wire_frame *f,
    const char **why);

/*
 * wire_encoded_len - how many bytes f encodes to, or 0 when f cannot be
 * encoded (unknown type, a string over WIRE_STR_MAX, over 4 GiB).
 */
size_t wire_encoded_len(const struct wire_frame *f);

/*
 * wire_encode - encode f into out (cap bytes).  Returns the length, or
 * -EINVAL when f cannot be encoded, -ENOBUFS when cap is too small.
 */
long wire_encode(const struct wire_frame *f, uint8_t *out, size_t cap);
/* wire_encode() with len = wire_encoded_len(f) known already (the
 * caller sized its buffer with it). */
long wire_encode_len(const struct wire_frame *f, size_t len, uint8_t *out,
    size_t cap);

/* The name of a frame type for logs ("SEND"), "?" when unknown. */
const char *wire_type_name(uint16_t type);

/* Error codes: errno to protocol (an errno without a code, EPERM say,
 * maps to WIRE_E_PROTO), and back (unknown codes read as EPROTO). */
uint32_t wire_code(int err);
int wire_errno(uint32_t code);

/* A wire_bytes for a C string (NULL reads as empty). */
struct wire_bytes wire_str(const char *s);

/* Does the string field equal the C string s? */
int wire_str_eq(struct wire_bytes b, const char *s);

/* Copy a string field into buf (size > 0) with a NUL; -ENAMETOOLONG
 * when it does not fit, else its length. */
int wire_str_copy(struct wire_bytes b, char *buf, size_t size);

/* Little-endian access, for the codec and its tests. */
uint16_t wire_get16(const uint8_t *p);
uint32_t wire_get32(const uint8_t *p);
uint64_t wire_get64(const uint8_t *p);
void wire_put16(uint8_t *p, uint16_t v);
void wire_put32(uint8_t *p, uint32_t v);
void wire_put64(uint8_t *p, uint64_t v);

/* ipc_addr_parse() without clearing the whole of *out first (only its
 * fields and the strings' ends are set): for the paths every message
 * takes.  0 or -EINVAL.  Internal to libipc and ipcd (addr.c). */
struct ipc_addr;
int ipc_addr_parse_fast(const char *text, struct ipc_addr *out);

#endif /* WIRE_H */
