/*
 * wire.c - the frame codec.  See wire.h and doc/protocol.md.
 *
 * Each frame type's body is a list of fields in a table; one encoder and
 * one decoder walk the tables, so every type gets the same bounds checks
 * and a new type is a new table row, not new parsing code.
 */
#include "config.h"

#include "wire.h"

#include <errno.h>
#include <string.h>

enum wire_kind {
	WK_END = 0,
	WK_U16,
	WK_U32,
	WK_U64,
	WK_UUID,	/* 16 raw bytes */
	WK_STR,		/* u16 length, bytes */
	WK_PAYLOAD,	/* the rest of the frame; last field only */
};

struct wire_field {
	uint8_t kind;
	uint16_t off;	/* offset of the member in struct wire_frame */
};

#define F(kind, member) { kind, (uint16_t)offsetof(struct wire_frame, b.member) }
#define END { WK_END, 0 }

static const struct wire_field wire_f_none[] = { END };
static const struct wire_field wire_f_hello[] = {
	F(WK_U32, hello.magic), F(WK_U16, hello.version_min),
	F(WK_U16, hello.version_max), END };
static const struct wire_field wire_f_welcome[] = {
	F(WK_U32, welcome.version), F(WK_U32, welcome.max_payload),
	F(WK_U64, welcome.conn_id), F(WK_U32, welcome.pid),
	F(WK_U32, welcome.uid), F(WK_U32, welcome.gid), END };
static const struct wire_field wire_f_error[] = {
	F(WK_U32, error.code), F(WK_U32, error.aux), F(WK_STR, error.text),
	END };
static const struct wire_field wire_f_bye[] = {
	F(WK_U32, bye.code), F(WK_STR, bye.text), END };
static const struct wire_field wire_f_create[] = {
	F(WK_U32, create.capacity), F(WK_U32, create.mode),
	F(WK_U64, create.max_bytes), F(WK_U32, create.flags),
	F(WK_STR, create.name), END };
static const struct wire_field wire_f_name[] = {
	F(WK_STR, name.name), END };
static const struct wire_field wire_f_chmod[] = {
	F(WK_U32, chmod.mode), F(WK_STR, chmod.name), END };
static const struct wire_field wire_f_chown[] = {
	F(WK_U32, chown.uid), F(WK_U32, chown.gid), F(WK_STR, chown.name),
	END };
static const struct wire_field wire_f_info[] = {
	F(WK_UUID, info.uuid), F(WK_U32, info.capacity),
	F(WK_U32, info.mode), F(WK_U64, info.max_bytes),
	F(WK_U32, info.uid), F(WK_U32, info.gid), F(WK_U32, info.depth),
	F(WK_U32, info.waiting_receivers), F(WK_U32, info.waiting_senders),
	F(WK_U32, info.flags), F(WK_U64, info.bytes),
	F(WK_U64, info.msgs_in), F(WK_U64, info.msgs_out),
	F(WK_U64, info.created_ns), F(WK_STR, info.name), END };
static const struct wire_field wire_f_send[] = {
	F(WK_U32, send.timeout_ms), F(WK_U32, send.flags),
	F(WK_STR, send.dest), F(WK_PAYLOAD, send.payload), END };
static const struct wire_field wire_f_sent[] = {
	F(WK_U64, sent.msg_id), END };
static const struct wire_field wire_f_recv[] = {
	F(WK_U32, recv.timeout_ms), F(WK_U32, recv.flags),
	F(WK_U32, recv.max_len), F(WK_STR, recv.source), END };
static const struct wire_field wire_f_credit[] = {
	F(WK_U32, credit.credit), F(WK_U32, credit.flags),
	F(WK_U32, credit.max_len), F(WK_STR, credit.source), END };
static const struct wire_field wire_f_deliver[] = {
	F(WK_U64, deliver.msg_id), F(WK_U64, deliver.enqueue_ns),
	F(WK_U32, deliver.pid), F(WK_U32, deliver.uid),
	F(WK_U32, deliver.gid), F(WK_U32, deliver.flags),
	F(WK_STR, deliver.sender), F(WK_STR, deliver.source),
	F(WK_PAYLOAD, deliver.payload), END };
static const struct wire_field wire_f_ack[] = {
	F(WK_PAYLOAD, ack.ids), END };
static const struct wire_field wire_f_failed[] = {
	F(WK_U64, failed.msg_id), F(WK_U32, failed.code),
	F(WK_STR, failed.text), END };
static const struct wire_field wire_f_peek[] = {
	F(WK_U32, peek.max_count), F(WK_STR, peek.name), END };
static const struct wire_field wire_f_client[] = {
	F(WK_U64, client.conn_id), F(WK_U32, client.pid),
	F(WK_U32, client.uid), F(WK_U32, client.gid),
	F(WK_U32, client.flags), F(WK_U32, client.queue_depth),
	F(WK_U64, client.msgs_sent),
	F(WK_U64, client.msgs_received), F(WK_U64, client.connected_ns),
	F(WK_STR, client.comm), END };
static const struct wire_field wire_f_event[] = {
	F(WK_U64, event.time_ns), F(WK_U32, event.kind), F(WK_U32, event.pid),
	F(WK_U32, event.uid), F(WK_U32, event.code), F(WK_U64, event.msg_id),
	F(WK_U64, event.len), F(WK_STR, event.subject), END };
static const struct wire_field wire_f_counter[] = {
	F(WK_U64, counter.value), F(WK_STR, counter.name), END };

static const struct wire_field wire_f_option[] = {
	F(WK_U32, option.option), F(WK_U64, option.value), END };
static const struct wire_field wire_f_link_hello[] = {
	F(WK_U32, link_hello.magic), F(WK_U16, link_hello.version_min),
	F(WK_U16, link_hello.version_max), F(WK_U64, link_hello.epoch),
	F(WK_U32, link_hello.heartbeat_ms), F(WK_STR, link_hello.name),
	END };
static const struct wire_field wire_f_link_send[] = {
	F(WK_U32, link_send.timeout_ms), F(WK_U32, link_send.flags),
	F(WK_U32, link_send.pid), F(WK_U32, link_send.uid),
	F(WK_U32, link_send.gid), F(WK_STR, link_send.dest),
	F(WK_PAYLOAD, link_send.payload), END };
static const struct wire_field wire_f_ping[] = {
	F(WK_U64, ping.stamp_ns), END };
static const struct wire_field wire_f_link_info[] = {
	F(WK_U32, link.direction), F(WK_U32, link.state),
	F(WK_U32, link.queued), F(WK_U32, link.in_flight),
	F(WK_U64, link.msgs_out), F(WK_U64, link.msgs_in),
	F(WK_U64, link.failed), F(WK_U64, link.reconnects),
	F(WK_U64, link.rtt_us), F(WK_STR, link.peer),
	F(WK_STR, link.identity), F(WK_STR, link.last_error), END };

#undef F
#undef END

struct wire_type_desc {
	uint16_t type;
	const char *name;
	const struct wire_field *fields;
};

static const struct wire_type_desc wire_types[] = {
	{ WIRE_HELLO, "HELLO", wire_f_hello },
	{ WIRE_WELCOME, "WELCOME", wire_f_welcome },
	{ WIRE_ERROR, "ERROR", wire_f_error },
	{ WIRE_OK, "OK", wire_f_none },
	{ WIRE_BYE, "BYE", wire_f_bye },
	{ WIRE_MBOX_CREATE, "MBOX_CREATE", wire_f_create },
	{ WIRE_MBOX_STAT, "MBOX_STAT", wire_f_name },
	{ WIRE_MBOX_DELETE, "MBOX_DELETE", wire_f_name },
	{ WIRE_MBOX_LIST, "MBOX_LIST", wire_f_none },
	{ WIRE_MBOX_INFO, "MBOX_INFO", wire_f_info },
	{ WIRE_MBOX_CHMOD, "MBOX_CHMOD", wire_f_chmod },
	{ WIRE_MBOX_CHOWN, "MBOX_CHOWN", wire_f_chown },
	{ WIRE_SEND, "SEND", wire_f_send },
	{ WIRE_SENT, "SENT", wire_f_sent },
	{ WIRE_RECV, "RECV", wire_f_recv },
	{ WIRE_DELIVER, "DELIVER", wire_f_deliver },
	{ WIRE_PEEK, "PEEK", wire_f_peek },
	{ WIRE_ACK, "ACK", wire_f_ack },
	{ WIRE_FAILED, "FAILED", wire_f_failed },
	{ WIRE_CREDIT, "CREDIT", wire_f_credit },
	{ WIRE_CLIENTS, "CLIENTS", wire_f_none },
	{ WIRE_CLIENT_INFO, "CLIENT_INFO", wire_f_client },
	{ WIRE_COUNTERS, "COUNTERS", wire_f_none },
	{ WIRE_COUNTER, "COUNTER", wire_f_counter },
	{ WIRE_MONITOR, "MONITOR", wire_f_none },
	{ WIRE_EVENT, "EVENT", wire_f_event },
	{ WIRE_OPTION, "OPTION", wire_f_option },
	{ WIRE_LINKS, "LINKS", wire_f_none },
	{ WIRE_LINK_INFO, "LINK_INFO", wire_f_link_info },
	{ WIRE_LINK_HELLO, "LINK_HELLO", wire_f_link_hello },
	{ WIRE_LINK_SEND, "LINK_SEND", wire_f_link_send },
	{ WIRE_PING, "PING", wire_f_ping },
	{ WIRE_PONG, "PONG", wire_f_ping },
};

/* Every known type is below 0x100: index + 1 into wire_types, filled on
 * first use (a lookup per frame is on every message's path). */
static uint8_t wire_index[0x100];
static int wire_index_done;

static const struct wire_type_desc *
wire_desc(uint16_t type)
{
	uint8_t k;

	if (!__atomic_load_n(&wire_index_done, __ATOMIC_ACQUIRE)) {
		/* Idempotent: racing threads write the same bytes. */
		for (size_t i = 0; i < sizeof(wire_types) /
		    sizeof(wire_types[0]); i++)
			__atomic_store_n(&wire_index[wire_types[i].type],
			    (uint8_t)(i + 1), __ATOMIC_RELAXED);
		__atomic_store_n(&wire_index_done, 1, __ATOMIC_RELEASE);
	}
	if (type >= 0x100 ||
	    (k = __atomic_load_n(&wire_index[type], __ATOMIC_RELAXED)) == 0)
		return NULL;
	return &wire_types[k - 1];
}

const char *
wire_type_name(uint16_t type)
{
	const struct wire_type_desc *d = wire_desc(type);

	return d ? d->name : "?";
}

uint16_t
wire_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

uint32_t
wire_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

uint64_t
wire_get64(const uint8_t *p)
{
	return (uint64_t)wire_get32(p) | (uint64_t)wire_get32(p + 4) << 32;
}

void
wire_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void
wire_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void
wire_put64(uint8_t *p, uint64_t v)
{
	wire_put32(p, (uint32_t)v);
	wire_put32(p + 4, (uint32_t)(v >> 32));
}

long
wire_frame_len(const uint8_t *buf, size_t avail, uint32_t max_frame)
{
	uint32_t len;

	if (avail < WIRE_HDR_LEN)
		return 0;
	len = wire_get32(buf);
	if (len < WIRE_HDR_LEN)
		return -EPROTO;
	if (len > max_frame)
		return -EMSGSIZE;
	return (long)len;
}

/* Member access through the table's offsets. */
#define WIRE_AT(f, off, type) ((type *)(void *)((char *)(f) + (off)))
#define WIRE_CAT(f, off, type) \
	((const type *)(const void *)((const char *)(f) + (off)))

int
wire_decode(const uint8_t *buf, size_t len, struct wire_frame *f,
    const char **why)
{
	const struct wire_type_desc *d;
	const struct wire_field *fl;
	const char *reason = NULL;
	size_t off = WIRE_HDR_LEN;

	memset(f, 0, sizeof(*f));
	if (len < WIRE_HDR_LEN || wire_get32(buf) != len) {
		reason = "frame length does not match its header";
		goto bad;
	}
	f->type = wire_get16(buf + 4);
	f->flags = wire_get16(buf + 6);
	f->id = wire_get64(buf + 8);
	if ((d = wire_desc(f->type)) == NULL) {
		reason = "unknown frame type";
		goto bad;
	}
	if (f->flags != 0) {
		reason = "unknown header flags";
		goto bad;
	}
	for (fl = d->fields; fl->kind != WK_END; fl++) {
		size_t left = len - off, n;
		struct wire_bytes *b;

		switch (fl->kind) {
		case WK_U16:
			if (left < 2)
				goto short_frame;
			*WIRE_AT(f, fl->off, uint16_t) = wire_get16(buf + off);
			off += 2;
			break;
		case WK_U32:
			if (left < 4)
				goto short_frame;
			*WIRE_AT(f, fl->off, uint32_t) = wire_get32(buf + off);
			off += 4;
			break;
		case WK_U64:
			if (left < 8)
				goto short_frame;
			*WIRE_AT(f, fl->off, uint64_t) = wire_get64(buf + off);
			off += 8;
			break;
		case WK_UUID:
			if (left < 16)
				goto short_frame;
			memcpy(WIRE_AT(f, fl->off, uint8_t), buf + off, 16);
			off += 16;
			break;
		case WK_STR:
			if (left < 2)
				goto short_frame;
			n = wire_get16(buf + off);
			if (n > WIRE_STR_MAX) {
				reason = "string field too long";
				goto bad;
			}
			/* n > left - 2 cannot overflow: left >= 2. */
			if (n > left - 2)
				goto short_frame;
			b = WIRE_AT(f, fl->off, struct wire_bytes);
			b->p = buf + off + 2;
			b->len = n;
			if (memchr(b->p, '\0', n) != NULL) {
				reason = "NUL byte inside a string field";
				goto bad;
			}
			off += 2 + n;
			break;
		case WK_PAYLOAD:
			b = WIRE_AT(f, fl->off, struct wire_bytes);
			b->p = buf + off;
			b->len = left;
			off = len;
			break;
		}
	}
	if (off != len) {
		reason = "bytes left over after the last field";
		goto bad;
	}
	return 0;
short_frame:
	reason = "field runs past the end of the frame";
bad:
	if (why != NULL)
		*why = reason;
	return -EPROTO;
}

size_t
wire_encoded_len(const struct wire_frame *f)
{
	const struct wire_type_desc *d = wire_desc(f->type);
	const struct wire_field *fl;
	const struct wire_bytes *b;
	uint64_t len = WIRE_HDR_LEN;

	if (d == NULL)
		return 0;
	for (fl = d->fields; fl->kind != WK_END; fl++) {
		switch (fl->kind) {
		case WK_U16:
			len += 2;
			break;
		case WK_U32:
			len += 4;
			break;
		case WK_U64:
			len += 8;
			break;
		case WK_UUID:
			len += 16;
			break;
		case WK_STR:
			b = WIRE_CAT(f, fl->off, struct wire_bytes);
			if (b->len > WIRE_STR_MAX)
				return 0;
			len += 2 + b->len;
			break;
		case WK_PAYLOAD:
			b = WIRE_CAT(f, fl->off, struct wire_bytes);
			if (b->len > UINT32_MAX)
				return 0;
			len += b->len;
			break;
		}
	}
	return len > UINT32_MAX ? 0 : (size_t)len;
}

long
wire_encode(const struct wire_frame *f, uint8_t *out, size_t cap)
{
	return wire_encode_len(f, wire_encoded_len(f), out, cap);
}

long
wire_encode_len(const struct wire_frame *f, size_t len, uint8_t *out,
    size_t cap)
{
	const struct wire_type_desc *d = wire_desc(f->type);
	const struct wire_field *fl;
	const struct wire_bytes *b;
	size_t off = WIRE_HDR_LEN;

	if (len == 0 || d == NULL)
		return -EINVAL;
	if (len > cap)
		return -ENOBUFS;
	wire_put32(out, (uint32_t)len);
	wire_put16(out + 4, f->type);
	wire_put16(out + 6, f->flags);
	wire_put64(out + 8, f->id);
	for (fl = d->fields; fl->kind != WK_END; fl++) {
		switch (fl->kind) {
		case WK_U16:
			wire_put16(out + off, *WIRE_CAT(f, fl->off, uint16_t));
			off += 2;
			break;
		case WK_U32:
			wire_put32(out + off, *WIRE_CAT(f, fl->off, uint32_t));
			off += 4;
			break;
		case WK_U64:
			wire_put64(out + off, *WIRE_CAT(f, fl->off, uint64_t));
			off += 8;
			break;
		case WK_UUID:
			memcpy(out + off, WIRE_CAT(f, fl->off, uint8_t), 16);
			off += 16;
			break;
		case WK_STR:
			b = WIRE_CAT(f, fl->off, struct wire_bytes);
			wire_put16(out + off, (uint16_t)b->len);
			if (b->len)
				memcpy(out + off + 2, b->p, b->len);
			off += 2 + b->len;
			break;
		case WK_PAYLOAD:
			b = WIRE_CAT(f, fl->off, struct wire_bytes);
			if (b->len)
				memcpy(out + off, b->p, b->len);
			off += b->len;
			break;
		}
	}
	return (long)off;
}

static const struct {
	int err;
	uint32_t code;
} wire_codes[] = {
	{ EINVAL, WIRE_E_INVAL },
	{ ENOENT, WIRE_E_NOENT },
	{ EEXIST, WIRE_E_EXIST },
	{ EACCES, WIRE_E_ACCES },
	{ EAGAIN, WIRE_E_AGAIN },
	{ ETIMEDOUT, WIRE_E_TIMEDOUT },
	{ EMSGSIZE, WIRE_E_MSGSIZE },
	{ ESRCH, WIRE_E_SRCH },
	{ EPROTO, WIRE_E_PROTO },
	{ ENOMEM, WIRE_E_NOMEM },
	{ ENOSPC, WIRE_E_NOSPC },
	{ EDQUOT, WIRE_E_DQUOT },
	{ ENOTSUP, WIRE_E_NOTSUP },
	{ ECONNRESET, WIRE_E_SHUTDOWN },
	{ EBUSY, WIRE_E_BUSY },
	{ EIO, WIRE_E_IO },
	{ EROFS, WIRE_E_ROFS },
};

uint32_t
wire_code(int err)
{
	for (size_t i = 0; i < sizeof(wire_codes) / sizeof(wire_codes[0]); i++)
		if (wire_codes[i].err == err)
			return wire_codes[i].code;
	return WIRE_E_PROTO;
}

int
wire_errno(uint32_t code)
{
	for (size_t i = 0; i < sizeof(wire_codes) / sizeof(wire_codes[0]); i++)
		if (wire_codes[i].code == code)
			return wire_codes[i].err;
	return EPROTO;
}

struct wire_bytes
wire_str(const char *s)
{
	struct wire_bytes b = { (const uint8_t *)s, s ? strlen(s) : 0 };

	return b;
}

int
wire_str_eq(struct wire_bytes b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
}

int
wire_str_copy(struct wire_bytes b, char *buf, size_t size)
{
	if (b.len >= size)
		return -ENAMETOOLONG;
	if (b.len)
		memcpy(buf, b.p, b.len);
	buf[b.len] = '\0';
	return (int)b.len;
}
