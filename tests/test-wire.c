/*
 * wire: the frame codec at every boundary.  wire_frame_len on short,
 * lying and over-limit headers; an encode/decode round trip of every frame
 * type, with empty and longest strings; every decode rejection (a cut at
 * each byte, trailing bytes, unknown types, header flags, lying string
 * lengths, NULs); encode's buffer and argument checks; the error code
 * table; the string helpers; and the exact little-endian layout.
 *
 * Every buffer handed to the decoder that could be overread is a heap
 * buffer of exactly the frame's size, so that the ASan pass of the suite
 * catches a read past its end.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "tls.h"
#include "wire.h"
#include "testutil.h"

/* The broker's default frame limit. */
#define MAX_FRAME (WIRE_PAYLOAD_DEFAULT + WIRE_OVERHEAD_MAX)

static const uint16_t all_types[] = {
	WIRE_HELLO, WIRE_WELCOME, WIRE_ERROR, WIRE_OK, WIRE_BYE, WIRE_OPTION,
	WIRE_MBOX_CREATE, WIRE_MBOX_STAT, WIRE_MBOX_DELETE, WIRE_MBOX_LIST,
	WIRE_MBOX_INFO, WIRE_MBOX_CHMOD, WIRE_MBOX_CHOWN, WIRE_SEND,
	WIRE_SENT, WIRE_RECV, WIRE_DELIVER, WIRE_PEEK, WIRE_ACK, WIRE_FAILED,
	WIRE_CREDIT,
	WIRE_CLIENTS, WIRE_CLIENT_INFO, WIRE_COUNTERS, WIRE_COUNTER,
	WIRE_MONITOR, WIRE_EVENT, WIRE_LINKS, WIRE_LINK_INFO,
	WIRE_LINK_HELLO, WIRE_LINK_SEND, WIRE_PING, WIRE_PONG,
};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

/* Type values next to known ones, and the extremes: none is a type. */
static const uint16_t unknown_types[] = {
	0x0000, 0x0007, 0x000f, 0x0017, 0x0028, 0x0038, 0x003f, 0x0044,
	0xffff,
};
#define N_UNKNOWN (sizeof(unknown_types) / sizeof(unknown_types[0]))

/* Most string fields in one frame (LINK_INFO's three). */
#define MAX_STRINGS 3

static int
is_known_type(unsigned type)
{
	for (size_t i = 0; i < N_TYPES; i++)
		if (all_types[i] == type)
			return 1;
	return 0;
}

/* --- helpers ------------------------------------------------------------ */

/* A heap copy of exactly len bytes (ASan's redzone starts right after). */
static uint8_t *
dup_exact(const void *src, size_t len)
{
	uint8_t *p = malloc(len);

	/* malloc(0) may give NULL; the decoder must not touch it then. */
	if (len) {
		assert_non_null(p);
		memcpy(p, src, len);
	}
	return p;
}

/* 300 bytes that include 0x00 and 0xff, so a payload is binary. */
static const uint8_t *
sample_payload(void)
{
	static uint8_t p[300];

	for (size_t i = 0; i < sizeof(p); i++)
		p[i] = (uint8_t)(i * 37 + 11);
	return p;
}
#define SAMPLE_PAYLOAD_LEN 300

static struct wire_bytes
bytes(const void *p, size_t len)
{
	struct wire_bytes b = { p, len };

	return b;
}

/* A frame of type with every field set to a value whose bytes differ, so
 * that a swapped or misplaced field shows. */
static void
sample_frame(uint16_t type, struct wire_frame *f)
{
	memset(f, 0, sizeof(*f));
	f->type = type;
	f->id = 0x8877665544332211ull ^ type;
	switch (type) {
	case WIRE_HELLO:
		f->b.hello.magic = WIRE_MAGIC;
		f->b.hello.version_min = 0x0102;
		f->b.hello.version_max = 0xa1b2;
		break;
	case WIRE_WELCOME:
		f->b.welcome.version = 0x01020304;
		f->b.welcome.max_payload = 0x00800000;
		f->b.welcome.conn_id = 0xf1e2d3c4b5a69788ull;
		f->b.welcome.pid = 4242;
		f->b.welcome.uid = 0x8001;
		f->b.welcome.gid = 0x7ffffffe;
		break;
	case WIRE_ERROR:
		f->b.error.code = WIRE_E_MSGSIZE;
		f->b.error.aux = 0x00123456;
		f->b.error.text = wire_str("message of 70000 bytes, room 512");
		break;
	case WIRE_BYE:
		f->b.bye.code = WIRE_E_SHUTDOWN;
		f->b.bye.text = wire_str("broker stopping");
		break;
	case WIRE_MBOX_CREATE:
		f->b.create.capacity = 0x00010203;
		f->b.create.mode = 0640;
		f->b.create.max_bytes = 0x0a0b0c0d0e0f1011ull;
		f->b.create.flags = WIRE_CREATE_EXCL;
		f->b.create.name = wire_str("jobs.queue-1");
		break;
	case WIRE_ACK: {
		static uint8_t ids[24];

		for (int k = 0; k < 24; k++)
			ids[k] = (uint8_t)(k * 11 + 1);
		f->b.ack.ids.p = ids;
		f->b.ack.ids.len = sizeof(ids);
		break;
	}
	case WIRE_FAILED:
		f->b.failed.msg_id = 0x0102030405060708ull;
		f->b.failed.code = WIRE_E_NOENT;
		f->b.failed.text = wire_str("mailbox deleted");
		break;
	case WIRE_EVENT:
		f->b.event.time_ns = 0x1122334455667788ull;
		f->b.event.kind = 5;
		f->b.event.pid = 4242;
		f->b.event.uid = 1000;
		f->b.event.code = WIRE_E_AGAIN;
		f->b.event.msg_id = 77;
		f->b.event.len = 0x0102030405ull;
		f->b.event.subject = wire_str("jobs");
		break;
	case WIRE_MBOX_CHMOD:
		f->b.chmod.mode = 0640;
		f->b.chmod.name = wire_str("shared.box");
		break;
	case WIRE_MBOX_CHOWN:
		f->b.chown.uid = 0x01020304;
		f->b.chown.gid = WIRE_DEFAULT32;
		f->b.chown.name = wire_str("owned-box");
		break;
	case WIRE_MBOX_STAT:
	case WIRE_MBOX_DELETE:
		f->b.name.name = wire_str("telemetry_2");
		break;
	case WIRE_MBOX_INFO:
		for (int i = 0; i < 16; i++)
			f->b.info.uuid[i] = (uint8_t)(0xf0 - i * 15);
		f->b.info.capacity = 0x11223344;
		f->b.info.mode = 0600;
		f->b.info.max_bytes = 0x0102030405060708ull;
		f->b.info.uid = 1000;
		f->b.info.gid = 0x89abcdef;
		f->b.info.depth = 17;
		f->b.info.waiting_receivers = 0x0a0b;
		f->b.info.waiting_senders = 0x0c0d0e;
		f->b.info.flags = 0x80000001;
		f->b.info.bytes = 0x1112131415161718ull;
		f->b.info.msgs_in = 0x2122232425262728ull;
		f->b.info.msgs_out = 0x3132333435363738ull;
		f->b.info.created_ns = 0x1700000000000000ull;
		f->b.info.name = wire_str("jobs");
		break;
	case WIRE_SEND:
		f->b.send.timeout_ms = 1500;
		f->b.send.flags = 0;
		f->b.send.dest = wire_str("jobs@hostB:7400");
		f->b.send.payload = bytes(sample_payload(),
		    SAMPLE_PAYLOAD_LEN);
		break;
	case WIRE_SENT:
		f->b.sent.msg_id = 0xdeadbeefcafef00dull;
		break;
	case WIRE_RECV:
		f->b.recv.timeout_ms = WIRE_FOREVER;
		f->b.recv.flags = 0;
		f->b.recv.max_len = 0x00100001;
		f->b.recv.source = wire_str("jobs");
		break;
	case WIRE_CREDIT:
		f->b.credit.credit = 0x00000100;
		f->b.credit.flags = WIRE_CREDIT_END;
		f->b.credit.max_len = 0x00100002;
		f->b.credit.source = wire_str("jobs.stream");
		break;
	case WIRE_DELIVER:
		f->b.deliver.msg_id = 0x0000000100000002ull;
		f->b.deliver.enqueue_ns = 0x17a0b0c0d0e0f001ull;
		f->b.deliver.pid = 31337;
		f->b.deliver.uid = 0x01020304;
		f->b.deliver.gid = 0x05060708;
		f->b.deliver.flags = 0x90a0b0c0;
		f->b.deliver.sender = wire_str("pid:31337");
		f->b.deliver.source = wire_str("jobs");
		f->b.deliver.payload = bytes(sample_payload(),
		    SAMPLE_PAYLOAD_LEN);
		break;
	case WIRE_PEEK:
		f->b.peek.max_count = 0x000a0b0c;
		f->b.peek.name = wire_str("jobs");
		break;
	case WIRE_CLIENT_INFO:
		f->b.client.conn_id = 0x0102030405060708ull;
		f->b.client.pid = 999;
		f->b.client.uid = 0xfffffffe;
		f->b.client.gid = 0x0000ff00;
		f->b.client.flags = 0x00010000;
		f->b.client.queue_depth = 0x00c0ffee;
		f->b.client.msgs_sent = 0x1000000000000001ull;
		f->b.client.msgs_received = 0x2000000000000002ull;
		f->b.client.connected_ns = 0x3000000000000003ull;
		f->b.client.comm = wire_str("producer");
		break;
	case WIRE_COUNTER:
		f->b.counter.value = 0xfedcba9876543210ull;
		f->b.counter.name = wire_str("msgs_dropped");
		break;
	case WIRE_OPTION:
		f->b.option.option = 0x0a0b0c01;
		f->b.option.value = 0x1112131415161718ull;
		break;
	case WIRE_LINK_INFO:
		f->b.link.direction = WIRE_LINK_IN;
		f->b.link.state = WIRE_LINK_UP;
		f->b.link.queued = 0x00030004;
		f->b.link.in_flight = 0x00050006;
		f->b.link.msgs_out = 0x0102030405060708ull;
		f->b.link.msgs_in = 0x1112131415161718ull;
		f->b.link.failed = 0x2122232425262728ull;
		f->b.link.reconnects = 0x3132333435363738ull;
		f->b.link.rtt_us = 0x4142434445464748ull;
		f->b.link.peer = wire_str("hostB:7400");
		f->b.link.identity = wire_str("broker-b");
		f->b.link.last_error = wire_str("connect: Connection refused");
		break;
	case WIRE_LINK_HELLO:
		f->b.link_hello.magic = WIRE_MAGIC;
		f->b.link_hello.version_min = 0x0102;
		f->b.link_hello.version_max = 0xa1b2;
		f->b.link_hello.epoch = 0x5a5b5c5d5e5f6061ull;
		f->b.link_hello.heartbeat_ms = 0x71727374u;
		f->b.link_hello.name = wire_str("hostA:7400");
		break;
	case WIRE_LINK_SEND:
		f->b.link_send.timeout_ms = 2500;
		f->b.link_send.flags = 0;
		f->b.link_send.pid = 31337;
		f->b.link_send.uid = 0x01020304;
		f->b.link_send.gid = 0x05060708;
		f->b.link_send.dest = wire_str("jobs");
		f->b.link_send.payload = bytes(sample_payload(),
		    SAMPLE_PAYLOAD_LEN);
		break;
	case WIRE_PING:
	case WIRE_PONG:
		f->b.ping.stamp_ns = 0x17a0b0c0d0e0f0a1ull;
		break;
	default:	/* OK, MBOX_LIST, CLIENTS, COUNTERS, MONITOR, LINKS:
			 * no body */
		break;
	}
}

/* The string fields of f's type, in wire order; returns how many. */
static int
frame_strings(struct wire_frame *f, struct wire_bytes *out[MAX_STRINGS])
{
	switch (f->type) {
	case WIRE_ERROR:
		out[0] = &f->b.error.text;
		return 1;
	case WIRE_BYE:
		out[0] = &f->b.bye.text;
		return 1;
	case WIRE_MBOX_CREATE:
		out[0] = &f->b.create.name;
		return 1;
	case WIRE_FAILED:
		out[0] = &f->b.failed.text;
		return 1;
	case WIRE_EVENT:
		out[0] = &f->b.event.subject;
		return 1;
	case WIRE_MBOX_CHMOD:
		out[0] = &f->b.chmod.name;
		return 1;
	case WIRE_MBOX_CHOWN:
		out[0] = &f->b.chown.name;
		return 1;
	case WIRE_MBOX_STAT:
	case WIRE_MBOX_DELETE:
		out[0] = &f->b.name.name;
		return 1;
	case WIRE_MBOX_INFO:
		out[0] = &f->b.info.name;
		return 1;
	case WIRE_SEND:
		out[0] = &f->b.send.dest;
		return 1;
	case WIRE_RECV:
		out[0] = &f->b.recv.source;
		return 1;
	case WIRE_CREDIT:
		out[0] = &f->b.credit.source;
		return 1;
	case WIRE_DELIVER:
		out[0] = &f->b.deliver.sender;
		out[1] = &f->b.deliver.source;
		return 2;
	case WIRE_PEEK:
		out[0] = &f->b.peek.name;
		return 1;
	case WIRE_CLIENT_INFO:
		out[0] = &f->b.client.comm;
		return 1;
	case WIRE_COUNTER:
		out[0] = &f->b.counter.name;
		return 1;
	case WIRE_LINK_INFO:
		out[0] = &f->b.link.peer;
		out[1] = &f->b.link.identity;
		out[2] = &f->b.link.last_error;
		return 3;
	case WIRE_LINK_HELLO:
		out[0] = &f->b.link_hello.name;
		return 1;
	case WIRE_LINK_SEND:
		out[0] = &f->b.link_send.dest;
		return 1;
	default:
		return 0;
	}
}

/* The payload of f's type, or NULL when it has none. */
static struct wire_bytes *
frame_payload(struct wire_frame *f)
{
	switch (f->type) {
	case WIRE_SEND:
		return &f->b.send.payload;
	case WIRE_DELIVER:
		return &f->b.deliver.payload;
	case WIRE_ACK:
		return &f->b.ack.ids;
	case WIRE_LINK_SEND:
		return &f->b.link_send.payload;
	default:
		return NULL;
	}
}

static void
assert_bytes_equal(struct wire_bytes a, struct wire_bytes b)
{
	assert_int_equal(a.len, b.len);
	if (a.len)
		assert_memory_equal(a.p, b.p, a.len);
}

/* Every field of the type both frames have. */
static void
assert_frame_equal(const struct wire_frame *a, const struct wire_frame *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->id, b->id);
	switch (a->type) {
	case WIRE_HELLO:
		assert_int_equal(a->b.hello.magic, b->b.hello.magic);
		assert_int_equal(a->b.hello.version_min,
		    b->b.hello.version_min);
		assert_int_equal(a->b.hello.version_max,
		    b->b.hello.version_max);
		break;
	case WIRE_WELCOME:
		assert_int_equal(a->b.welcome.version, b->b.welcome.version);
		assert_int_equal(a->b.welcome.max_payload,
		    b->b.welcome.max_payload);
		assert_int_equal(a->b.welcome.conn_id, b->b.welcome.conn_id);
		assert_int_equal(a->b.welcome.pid, b->b.welcome.pid);
		assert_int_equal(a->b.welcome.uid, b->b.welcome.uid);
		assert_int_equal(a->b.welcome.gid, b->b.welcome.gid);
		break;
	case WIRE_ERROR:
		assert_int_equal(a->b.error.code, b->b.error.code);
		assert_int_equal(a->b.error.aux, b->b.error.aux);
		assert_bytes_equal(a->b.error.text, b->b.error.text);
		break;
	case WIRE_BYE:
		assert_int_equal(a->b.bye.code, b->b.bye.code);
		assert_bytes_equal(a->b.bye.text, b->b.bye.text);
		break;
	case WIRE_MBOX_CREATE:
		assert_int_equal(a->b.create.capacity, b->b.create.capacity);
		assert_int_equal(a->b.create.mode, b->b.create.mode);
		assert_int_equal(a->b.create.max_bytes,
		    b->b.create.max_bytes);
		assert_int_equal(a->b.create.flags, b->b.create.flags);
		assert_bytes_equal(a->b.create.name, b->b.create.name);
		break;
	case WIRE_ACK:
		assert_bytes_equal(a->b.ack.ids, b->b.ack.ids);
		break;
	case WIRE_FAILED:
		assert_int_equal(a->b.failed.msg_id, b->b.failed.msg_id);
		assert_int_equal(a->b.failed.code, b->b.failed.code);
		assert_bytes_equal(a->b.failed.text, b->b.failed.text);
		break;
	case WIRE_EVENT:
		assert_int_equal(a->b.event.time_ns, b->b.event.time_ns);
		assert_int_equal(a->b.event.kind, b->b.event.kind);
		assert_int_equal(a->b.event.pid, b->b.event.pid);
		assert_int_equal(a->b.event.uid, b->b.event.uid);
		assert_int_equal(a->b.event.code, b->b.event.code);
		assert_int_equal(a->b.event.msg_id, b->b.event.msg_id);
		assert_int_equal(a->b.event.len, b->b.event.len);
		assert_bytes_equal(a->b.event.subject, b->b.event.subject);
		break;
	case WIRE_MBOX_CHMOD:
		assert_int_equal(a->b.chmod.mode, b->b.chmod.mode);
		assert_bytes_equal(a->b.chmod.name, b->b.chmod.name);
		break;
	case WIRE_MBOX_CHOWN:
		assert_int_equal(a->b.chown.uid, b->b.chown.uid);
		assert_int_equal(a->b.chown.gid, b->b.chown.gid);
		assert_bytes_equal(a->b.chown.name, b->b.chown.name);
		break;
	case WIRE_MBOX_STAT:
	case WIRE_MBOX_DELETE:
		assert_bytes_equal(a->b.name.name, b->b.name.name);
		break;
	case WIRE_MBOX_INFO:
		assert_memory_equal(a->b.info.uuid, b->b.info.uuid, 16);
		assert_int_equal(a->b.info.capacity, b->b.info.capacity);
		assert_int_equal(a->b.info.mode, b->b.info.mode);
		assert_int_equal(a->b.info.max_bytes, b->b.info.max_bytes);
		assert_int_equal(a->b.info.uid, b->b.info.uid);
		assert_int_equal(a->b.info.gid, b->b.info.gid);
		assert_int_equal(a->b.info.depth, b->b.info.depth);
		assert_int_equal(a->b.info.waiting_receivers,
		    b->b.info.waiting_receivers);
		assert_int_equal(a->b.info.waiting_senders,
		    b->b.info.waiting_senders);
		assert_int_equal(a->b.info.flags, b->b.info.flags);
		assert_int_equal(a->b.info.bytes, b->b.info.bytes);
		assert_int_equal(a->b.info.msgs_in, b->b.info.msgs_in);
		assert_int_equal(a->b.info.msgs_out, b->b.info.msgs_out);
		assert_int_equal(a->b.info.created_ns, b->b.info.created_ns);
		assert_bytes_equal(a->b.info.name, b->b.info.name);
		break;
	case WIRE_SEND:
		assert_int_equal(a->b.send.timeout_ms, b->b.send.timeout_ms);
		assert_int_equal(a->b.send.flags, b->b.send.flags);
		assert_bytes_equal(a->b.send.dest, b->b.send.dest);
		assert_bytes_equal(a->b.send.payload, b->b.send.payload);
		break;
	case WIRE_SENT:
		assert_int_equal(a->b.sent.msg_id, b->b.sent.msg_id);
		break;
	case WIRE_RECV:
		assert_int_equal(a->b.recv.timeout_ms, b->b.recv.timeout_ms);
		assert_int_equal(a->b.recv.flags, b->b.recv.flags);
		assert_int_equal(a->b.recv.max_len, b->b.recv.max_len);
		assert_bytes_equal(a->b.recv.source, b->b.recv.source);
		break;
	case WIRE_CREDIT:
		assert_int_equal(a->b.credit.credit, b->b.credit.credit);
		assert_int_equal(a->b.credit.flags, b->b.credit.flags);
		assert_int_equal(a->b.credit.max_len, b->b.credit.max_len);
		assert_bytes_equal(a->b.credit.source, b->b.credit.source);
		break;
	case WIRE_DELIVER:
		assert_int_equal(a->b.deliver.msg_id, b->b.deliver.msg_id);
		assert_int_equal(a->b.deliver.enqueue_ns,
		    b->b.deliver.enqueue_ns);
		assert_int_equal(a->b.deliver.pid, b->b.deliver.pid);
		assert_int_equal(a->b.deliver.uid, b->b.deliver.uid);
		assert_int_equal(a->b.deliver.gid, b->b.deliver.gid);
		assert_int_equal(a->b.deliver.flags, b->b.deliver.flags);
		assert_bytes_equal(a->b.deliver.sender, b->b.deliver.sender);
		assert_bytes_equal(a->b.deliver.source, b->b.deliver.source);
		assert_bytes_equal(a->b.deliver.payload,
		    b->b.deliver.payload);
		break;
	case WIRE_PEEK:
		assert_int_equal(a->b.peek.max_count, b->b.peek.max_count);
		assert_bytes_equal(a->b.peek.name, b->b.peek.name);
		break;
	case WIRE_CLIENT_INFO:
		assert_int_equal(a->b.client.conn_id, b->b.client.conn_id);
		assert_int_equal(a->b.client.pid, b->b.client.pid);
		assert_int_equal(a->b.client.uid, b->b.client.uid);
		assert_int_equal(a->b.client.gid, b->b.client.gid);
		assert_int_equal(a->b.client.flags, b->b.client.flags);
		assert_int_equal(a->b.client.queue_depth,
		    b->b.client.queue_depth);
		assert_int_equal(a->b.client.msgs_sent,
		    b->b.client.msgs_sent);
		assert_int_equal(a->b.client.msgs_received,
		    b->b.client.msgs_received);
		assert_int_equal(a->b.client.connected_ns,
		    b->b.client.connected_ns);
		assert_bytes_equal(a->b.client.comm, b->b.client.comm);
		break;
	case WIRE_COUNTER:
		assert_int_equal(a->b.counter.value, b->b.counter.value);
		assert_bytes_equal(a->b.counter.name, b->b.counter.name);
		break;
	case WIRE_OPTION:
		assert_int_equal(a->b.option.option, b->b.option.option);
		assert_int_equal(a->b.option.value, b->b.option.value);
		break;
	case WIRE_LINK_INFO:
		assert_int_equal(a->b.link.direction, b->b.link.direction);
		assert_int_equal(a->b.link.state, b->b.link.state);
		assert_int_equal(a->b.link.queued, b->b.link.queued);
		assert_int_equal(a->b.link.in_flight, b->b.link.in_flight);
		assert_int_equal(a->b.link.msgs_out, b->b.link.msgs_out);
		assert_int_equal(a->b.link.msgs_in, b->b.link.msgs_in);
		assert_int_equal(a->b.link.failed, b->b.link.failed);
		assert_int_equal(a->b.link.reconnects, b->b.link.reconnects);
		assert_int_equal(a->b.link.rtt_us, b->b.link.rtt_us);
		assert_bytes_equal(a->b.link.peer, b->b.link.peer);
		assert_bytes_equal(a->b.link.identity, b->b.link.identity);
		assert_bytes_equal(a->b.link.last_error,
		    b->b.link.last_error);
		break;
	case WIRE_LINK_HELLO:
		assert_int_equal(a->b.link_hello.magic, b->b.link_hello.magic);
		assert_int_equal(a->b.link_hello.version_min,
		    b->b.link_hello.version_min);
		assert_int_equal(a->b.link_hello.version_max,
		    b->b.link_hello.version_max);
		assert_int_equal(a->b.link_hello.epoch, b->b.link_hello.epoch);
		assert_int_equal(a->b.link_hello.heartbeat_ms,
		    b->b.link_hello.heartbeat_ms);
		assert_bytes_equal(a->b.link_hello.name, b->b.link_hello.name);
		break;
	case WIRE_LINK_SEND:
		assert_int_equal(a->b.link_send.timeout_ms,
		    b->b.link_send.timeout_ms);
		assert_int_equal(a->b.link_send.flags, b->b.link_send.flags);
		assert_int_equal(a->b.link_send.pid, b->b.link_send.pid);
		assert_int_equal(a->b.link_send.uid, b->b.link_send.uid);
		assert_int_equal(a->b.link_send.gid, b->b.link_send.gid);
		assert_bytes_equal(a->b.link_send.dest, b->b.link_send.dest);
		assert_bytes_equal(a->b.link_send.payload,
		    b->b.link_send.payload);
		break;
	case WIRE_PING:
	case WIRE_PONG:
		assert_int_equal(a->b.ping.stamp_ns, b->b.ping.stamp_ns);
		break;
	default:
		break;
	}
}

/* Encode f into a heap buffer of exactly its encoded length. */
static uint8_t *
encode_exact(const struct wire_frame *f, size_t *len_out)
{
	size_t len = wire_encoded_len(f);
	uint8_t *buf;

	assert_true(len >= WIRE_HDR_LEN);
	buf = malloc(len);
	assert_non_null(buf);
	assert_int_equal(wire_encode(f, buf, len), (long)len);
	*len_out = len;
	return buf;
}

/* Encode f, decode it back from a buffer of exactly its size, and
 * compare every field. */
static void
check_round_trip(const struct wire_frame *f)
{
	struct wire_frame d;
	const char *why = NULL;
	size_t len;
	uint8_t *buf = encode_exact(f, &len);

	assert_int_equal(wire_decode(buf, len, &d, &why), 0);
	assert_frame_equal(f, &d);
	free(buf);
}

static void
round_trip_sample(uint16_t type)
{
	struct wire_frame f;

	sample_frame(type, &f);
	check_round_trip(&f);
}

/* Decode len bytes from a heap copy of exactly that size and expect a
 * rejection with a reason. */
static void
expect_rejected(const uint8_t *src, size_t len, const char *what)
{
	struct wire_frame d;
	const char *why = NULL;
	uint8_t *buf = dup_exact(src, len);
	int r = wire_decode(buf, len, &d, &why);

	free(buf);
	if (r != -EPROTO)
		fail_msg("%s (%zu bytes): decode returned %d, not -EPROTO",
		    what, len, r);
	if (why == NULL)
		fail_msg("%s (%zu bytes): rejected without a reason", what,
		    len);
}

/* Offset of the payload in the encoding of f (a type with one). */
static size_t
payload_offset(const struct wire_frame *f)
{
	size_t len = wire_encoded_len(f);
	struct wire_frame g = *f;

	return len - frame_payload(&g)->len;
}

/*
 * Cut the encoding of f at every length from 0 to one byte short.  Cuts
 * inside the header are passed as they are; from WIRE_HDR_LEN on the
 * header's length is fixed up to the cut, so that it is the body that
 * is short.  Every cut that leaves a fixed field or a string short must
 * be rejected; a cut inside the payload (SEND, DELIVER, LINK_SEND) is a
 * valid frame
 * with a shorter payload, checked when accept_payload_cuts is set.
 */
static void
check_every_cut(const struct wire_frame *f, int accept_payload_cuts)
{
	struct wire_frame g = *f;
	size_t len, pay_off = frame_payload(&g) ? payload_offset(f) : 0;
	uint8_t *full = encode_exact(f, &len);
	char what[64];

	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *buf = dup_exact(full, cut);

		if (cut >= WIRE_HDR_LEN)
			wire_put32(buf, (uint32_t)cut);
		if (pay_off && cut >= pay_off) {
			struct wire_frame d;
			const char *why = NULL;
			struct wire_bytes *p;

			if (accept_payload_cuts) {
				assert_int_equal(wire_decode(buf, cut, &d,
				    &why), 0);
				p = frame_payload(&d);
				assert_int_equal(p->len, cut - pay_off);
				if (p->len)
					assert_memory_equal(p->p,
					    sample_payload(), p->len);
			}
		} else if (!accept_payload_cuts) {
			snprintf(what, sizeof(what), "%s cut at %zu",
			    wire_type_name(f->type), cut);
			expect_rejected(buf, cut, what);
		}
		free(buf);
	}
	free(full);
}

/* A body of exactly the given bytes behind a header of type. */
static uint8_t *
raw_frame(uint16_t type, const void *body, size_t body_len, size_t *len_out)
{
	size_t len = WIRE_HDR_LEN + body_len;
	uint8_t *buf = malloc(len);

	assert_non_null(buf);
	wire_put32(buf, (uint32_t)len);
	wire_put16(buf + 4, type);
	wire_put16(buf + 6, 0);
	wire_put64(buf + 8, 7);
	if (body_len)
		memcpy(buf + WIRE_HDR_LEN, body, body_len);
	*len_out = len;
	return buf;
}

/* An MBOX_STAT frame whose name field says n bytes and has have bytes
 * ('a'...) behind it. */
static uint8_t *
stat_frame_with_str(uint16_t n, size_t have, size_t *len_out)
{
	uint8_t *body = malloc(2 + have);
	uint8_t *buf;

	assert_non_null(body);
	wire_put16(body, n);
	memset(body + 2, 'a', have);
	buf = raw_frame(WIRE_MBOX_STAT, body, 2 + have, len_out);
	free(body);
	return buf;
}

/* --- wire_frame_len ----------------------------------------------------- */

static void
test_frame_len_needs_more_below_header_size(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN];

	(void)state;
	memset(hdr, 0xff, sizeof(hdr));
	wire_put32(hdr, 100);
	for (size_t avail = 0; avail < WIRE_HDR_LEN; avail++) {
		uint8_t *buf = dup_exact(hdr, avail);

		assert_int_equal(wire_frame_len(buf, avail, MAX_FRAME), 0);
		free(buf);
	}
}

static void
test_frame_len_rejects_len_under_header_size(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };

	(void)state;
	for (uint32_t len = 0; len < WIRE_HDR_LEN; len++) {
		wire_put32(hdr, len);
		assert_int_equal(wire_frame_len(hdr, sizeof(hdr), MAX_FRAME),
		    -EPROTO);
	}
}

static void
test_frame_len_accepts_header_only_frame(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };

	(void)state;
	wire_put32(hdr, WIRE_HDR_LEN);
	assert_int_equal(wire_frame_len(hdr, sizeof(hdr), MAX_FRAME),
	    WIRE_HDR_LEN);
}

static void
test_frame_len_accepts_len_at_limit(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };

	(void)state;
	wire_put32(hdr, MAX_FRAME);
	assert_int_equal(wire_frame_len(hdr, sizeof(hdr), MAX_FRAME),
	    MAX_FRAME);
}

static void
test_frame_len_rejects_len_over_limit(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };

	(void)state;
	wire_put32(hdr, MAX_FRAME + 1);
	assert_int_equal(wire_frame_len(hdr, sizeof(hdr), MAX_FRAME),
	    -EMSGSIZE);
}

static void
test_frame_len_rejects_len_uint32_max(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };

	(void)state;
	wire_put32(hdr, UINT32_MAX);
	assert_int_equal(wire_frame_len(hdr, sizeof(hdr), MAX_FRAME),
	    -EMSGSIZE);
}

static void
test_frame_len_accepts_uint32_max_at_uint32_max_limit(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };

	(void)state;
	/* The return type is long: on ILP32 this length cannot be
	 * returned as a positive number. */
	if (sizeof(long) <= 4)
		skip();
	wire_put32(hdr, UINT32_MAX);
	assert_int_equal(wire_frame_len(hdr, sizeof(hdr), UINT32_MAX),
	    (long)UINT32_MAX);
}

static void
test_frame_len_reads_length_little_endian(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0x34, 0x12, 0x01, 0x00 };

	(void)state;
	assert_int_equal(wire_frame_len(hdr, sizeof(hdr), MAX_FRAME),
	    0x011234);
}

static void
test_frame_len_looks_only_at_the_header(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };
	uint8_t *buf;

	(void)state;
	/* Only the header has arrived, of a frame that is much longer:
	 * the length is known without touching anything past it. */
	wire_put32(hdr, 5000);
	buf = dup_exact(hdr, sizeof(hdr));
	assert_int_equal(wire_frame_len(buf, WIRE_HDR_LEN, MAX_FRAME),
	    5000);
	free(buf);
}

/* --- round trips -------------------------------------------------------- */

static void
test_round_trip_hello(void **state)
{
	(void)state;
	round_trip_sample(WIRE_HELLO);
}

static void
test_round_trip_welcome(void **state)
{
	(void)state;
	round_trip_sample(WIRE_WELCOME);
}

static void
test_round_trip_error(void **state)
{
	(void)state;
	round_trip_sample(WIRE_ERROR);
}

static void
test_round_trip_ok(void **state)
{
	(void)state;
	round_trip_sample(WIRE_OK);
}

static void
test_round_trip_bye(void **state)
{
	(void)state;
	round_trip_sample(WIRE_BYE);
}

static void
test_round_trip_mbox_create(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_CREATE);
}

static void
test_round_trip_mbox_stat(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_STAT);
}

static void
test_round_trip_mbox_delete(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_DELETE);
}

static void
test_round_trip_mbox_list(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_LIST);
}

static void
test_round_trip_mbox_info(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_INFO);
}

static void
test_round_trip_mbox_chmod(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_CHMOD);
}

static void
test_round_trip_mbox_chown(void **state)
{
	(void)state;
	round_trip_sample(WIRE_MBOX_CHOWN);
}

static void
test_round_trip_send(void **state)
{
	(void)state;
	round_trip_sample(WIRE_SEND);
}

static void
test_round_trip_sent(void **state)
{
	(void)state;
	round_trip_sample(WIRE_SENT);
}

static void
test_round_trip_recv(void **state)
{
	(void)state;
	round_trip_sample(WIRE_RECV);
}

static void
test_round_trip_deliver(void **state)
{
	(void)state;
	round_trip_sample(WIRE_DELIVER);
}

static void
test_round_trip_peek(void **state)
{
	(void)state;
	round_trip_sample(WIRE_PEEK);
}

static void
test_round_trip_clients(void **state)
{
	(void)state;
	round_trip_sample(WIRE_CLIENTS);
}

static void
test_round_trip_client_info(void **state)
{
	(void)state;
	round_trip_sample(WIRE_CLIENT_INFO);
}

static void
test_round_trip_counters(void **state)
{
	(void)state;
	round_trip_sample(WIRE_COUNTERS);
}

static void
test_round_trip_counter(void **state)
{
	(void)state;
	round_trip_sample(WIRE_COUNTER);
}

static void
test_round_trip_option(void **state)
{
	(void)state;
	round_trip_sample(WIRE_OPTION);
}

static void
test_round_trip_links(void **state)
{
	(void)state;
	round_trip_sample(WIRE_LINKS);
}

static void
test_round_trip_link_info(void **state)
{
	(void)state;
	round_trip_sample(WIRE_LINK_INFO);
}

static void
test_round_trip_link_hello(void **state)
{
	(void)state;
	round_trip_sample(WIRE_LINK_HELLO);
}

static void
test_round_trip_link_send(void **state)
{
	(void)state;
	round_trip_sample(WIRE_LINK_SEND);
}

static void
test_round_trip_ping(void **state)
{
	(void)state;
	round_trip_sample(WIRE_PING);
}

static void
test_round_trip_pong(void **state)
{
	(void)state;
	round_trip_sample(WIRE_PONG);
}

static void
test_round_trip_every_type_with_empty_strings_and_payload(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		struct wire_bytes *s[MAX_STRINGS], *p;
		int n;

		sample_frame(all_types[i], &f);
		n = frame_strings(&f, s);
		for (int k = 0; k < n; k++)
			*s[k] = bytes(NULL, 0);
		if ((p = frame_payload(&f)) != NULL)
			*p = bytes(NULL, 0);
		check_round_trip(&f);
	}
}

static void
test_round_trip_every_string_field_at_str_max(void **state)
{
	static char big[MAX_STRINGS][WIRE_STR_MAX];

	(void)state;
	for (size_t i = 0; i < WIRE_STR_MAX; i++) {
		big[0][i] = (char)('a' + i % 26);
		big[1][i] = (char)('A' + i % 23);
		big[2][i] = (char)('0' + i % 10);
	}
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		struct wire_bytes *s[MAX_STRINGS];
		int n;

		sample_frame(all_types[i], &f);
		n = frame_strings(&f, s);
		for (int k = 0; k < n; k++)
			*s[k] = bytes(big[k], WIRE_STR_MAX);
		check_round_trip(&f);
	}
}

static void
test_round_trip_extreme_values(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_WELCOME, &f);
	f.id = UINT64_MAX;
	f.b.welcome.version = UINT32_MAX;
	f.b.welcome.max_payload = UINT32_MAX;
	f.b.welcome.conn_id = UINT64_MAX;
	f.b.welcome.pid = UINT32_MAX;
	f.b.welcome.uid = UINT32_MAX;
	f.b.welcome.gid = UINT32_MAX;
	check_round_trip(&f);
	memset(&f.b, 0, sizeof(f.b));
	f.id = 0;
	check_round_trip(&f);
	sample_frame(WIRE_HELLO, &f);
	f.b.hello.version_min = UINT16_MAX;
	f.b.hello.version_max = 0;
	check_round_trip(&f);
}

static void
test_round_trip_mbox_create_default_sentinels(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_MBOX_CREATE, &f);
	f.b.create.capacity = WIRE_DEFAULT32;
	f.b.create.mode = WIRE_DEFAULT32;
	f.b.create.max_bytes = WIRE_DEFAULT64;
	f.b.create.flags = 0;
	check_round_trip(&f);
}

static void
test_round_trip_payload_with_nul_bytes(void **state)
{
	static const uint8_t pay[] = { 0, 0, 'x', 0, 0xff, 0 };
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_SEND, &f);
	f.b.send.payload = bytes(pay, sizeof(pay));
	check_round_trip(&f);
}

static void
test_decode_strings_and_payload_borrow_from_buffer(void **state)
{
	struct wire_frame f, d;
	size_t len;
	uint8_t *buf;

	(void)state;
	sample_frame(WIRE_DELIVER, &f);
	buf = encode_exact(&f, &len);
	assert_int_equal(wire_decode(buf, len, &d, NULL), 0);
	assert_ptr_equal(d.b.deliver.sender.p, buf + 50);
	assert_ptr_equal(d.b.deliver.source.p,
	    buf + 52 + f.b.deliver.sender.len);
	assert_ptr_equal(d.b.deliver.payload.p, buf + payload_offset(&f));
	free(buf);
}

static void
test_decode_accepts_null_why(void **state)
{
	uint8_t hdr[WIRE_HDR_LEN] = { 0 };
	struct wire_frame d;

	(void)state;
	wire_put32(hdr, WIRE_HDR_LEN);
	wire_put16(hdr + 4, 0x07);
	assert_int_equal(wire_decode(hdr, sizeof(hdr), &d, NULL), -EPROTO);
}

/* --- decode rejections -------------------------------------------------- */

static void
test_decode_rejects_buffer_shorter_than_header(void **state)
{
	struct wire_frame f;
	size_t len;
	uint8_t *full;

	(void)state;
	sample_frame(WIRE_OK, &f);
	full = encode_exact(&f, &len);
	for (size_t cut = 0; cut < WIRE_HDR_LEN; cut++)
		expect_rejected(full, cut, "header cut");
	free(full);
}

static void
test_decode_rejects_send_cut_at_every_byte(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_SEND, &f);
	check_every_cut(&f, 0);
}

static void
test_decode_send_cut_inside_payload_is_shorter_payload(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_SEND, &f);
	check_every_cut(&f, 1);
}

static void
test_decode_rejects_deliver_cut_at_every_byte(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_DELIVER, &f);
	check_every_cut(&f, 0);
}

static void
test_decode_deliver_cut_inside_payload_is_shorter_payload(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_DELIVER, &f);
	check_every_cut(&f, 1);
}

static void
test_decode_rejects_mbox_info_cut_at_every_byte(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_MBOX_INFO, &f);
	check_every_cut(&f, 0);
}

static void
test_decode_rejects_link_send_cut_at_every_byte(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_LINK_SEND, &f);
	check_every_cut(&f, 0);
}

static void
test_decode_link_send_cut_in_payload_is_shorter_payload(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_LINK_SEND, &f);
	check_every_cut(&f, 1);
}

static void
test_decode_rejects_link_info_cut_at_every_byte(void **state)
{
	struct wire_frame f;

	(void)state;
	sample_frame(WIRE_LINK_INFO, &f);
	check_every_cut(&f, 0);
}

static void
test_decode_rejects_every_type_cut_at_every_byte(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;

		sample_frame(all_types[i], &f);
		check_every_cut(&f, 0);
	}
}

/* f's encoding plus one byte, the header's length counting it. */
static void
check_trailing_byte_rejected(uint16_t type)
{
	struct wire_frame f;
	size_t len;
	uint8_t *full, *buf;

	sample_frame(type, &f);
	full = encode_exact(&f, &len);
	buf = malloc(len + 1);
	assert_non_null(buf);
	memcpy(buf, full, len);
	buf[len] = 0x5a;
	wire_put32(buf, (uint32_t)(len + 1));
	expect_rejected(buf, len + 1, wire_type_name(type));
	free(buf);
	free(full);
}

static void
test_decode_rejects_trailing_byte_after_ok(void **state)
{
	(void)state;
	check_trailing_byte_rejected(WIRE_OK);
}

static void
test_decode_rejects_trailing_byte_after_sent(void **state)
{
	(void)state;
	check_trailing_byte_rejected(WIRE_SENT);
}

static void
test_decode_rejects_trailing_byte_after_hello(void **state)
{
	(void)state;
	check_trailing_byte_rejected(WIRE_HELLO);
}

static void
test_decode_rejects_trailing_byte_on_types_without_payload(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;

		sample_frame(all_types[i], &f);
		if (frame_payload(&f) == NULL)
			check_trailing_byte_rejected(all_types[i]);
	}
}

static void
test_decode_rejects_unknown_type(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_UNKNOWN; i++) {
		size_t len;
		uint8_t *buf = raw_frame(unknown_types[i], NULL, 0, &len);

		expect_rejected(buf, len, "unknown type");
		free(buf);
	}
}

static void
test_decode_rejects_every_type_outside_the_enum(void **state)
{
	uint8_t body[64];

	(void)state;
	/* A body long enough for any fixed layout, so that only the type
	 * can be the reason. */
	memset(body, 0, sizeof(body));
	for (unsigned t = 0; t <= 0xffff; t++) {
		size_t len;
		uint8_t *buf;

		if (is_known_type(t))
			continue;
		buf = raw_frame((uint16_t)t, body, sizeof(body), &len);
		expect_rejected(buf, len, "type outside the enum");
		free(buf);
	}
}

static void
test_decode_rejects_nonzero_header_flags(void **state)
{
	(void)state;
	for (int bit = 0; bit < 16; bit++) {
		size_t len;
		uint8_t *buf = raw_frame(WIRE_OK, NULL, 0, &len);

		wire_put16(buf + 6, (uint16_t)(1u << bit));
		expect_rejected(buf, len, "header flags");
		free(buf);
	}
}

static void
test_decode_rejects_header_len_disagreeing_with_buffer(void **state)
{
	static const uint32_t lies[] = {
		0, 1, WIRE_HDR_LEN - 1, WIRE_HDR_LEN, 23, 25, 0x00010018,
		0x18000000, UINT32_MAX,
	};
	struct wire_frame f;
	size_t len;
	uint8_t *full;

	(void)state;
	sample_frame(WIRE_SENT, &f);
	full = encode_exact(&f, &len);
	assert_int_equal(len, 24);
	for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		uint8_t *buf = dup_exact(full, len);

		wire_put32(buf, lies[i]);
		expect_rejected(buf, len, "lying header length");
		free(buf);
	}
	free(full);
}

static void
test_decode_rejects_buffer_longer_than_header_len(void **state)
{
	struct wire_frame f;
	size_t len;
	uint8_t *full, *buf;

	(void)state;
	/* A SEND's payload runs to the end of the frame: a buffer longer
	 * than the header says must not stretch it. */
	sample_frame(WIRE_SEND, &f);
	full = encode_exact(&f, &len);
	buf = malloc(len + 1);
	assert_non_null(buf);
	memcpy(buf, full, len);
	buf[len] = 0;
	expect_rejected(buf, len + 1, "buffer longer than header");
	free(buf);
	free(full);
}

static void
test_decode_rejects_str_len_past_end(void **state)
{
	size_t len;
	uint8_t *buf = stat_frame_with_str(10, 5, &len);

	(void)state;
	expect_rejected(buf, len, "string past the end");
	free(buf);
}

static void
test_decode_rejects_str_len_one_past_end(void **state)
{
	size_t len;
	uint8_t *buf = stat_frame_with_str(6, 5, &len);

	(void)state;
	expect_rejected(buf, len, "string one past the end");
	free(buf);
}

static void
test_decode_rejects_str_len_str_max_plus_one(void **state)
{
	size_t len;
	uint8_t *buf;

	(void)state;
	/* All 1025 bytes are there: the length itself is over the limit. */
	buf = stat_frame_with_str(WIRE_STR_MAX + 1, WIRE_STR_MAX + 1, &len);
	expect_rejected(buf, len, "string of WIRE_STR_MAX + 1");
	free(buf);
}

static void
test_decode_rejects_str_len_0xffff(void **state)
{
	size_t len;
	uint8_t *buf = stat_frame_with_str(0xffff, 3, &len);

	(void)state;
	expect_rejected(buf, len, "string of 0xffff");
	free(buf);
}

static void
test_decode_accepts_str_len_str_max(void **state)
{
	struct wire_frame d;
	size_t len;
	uint8_t *buf = stat_frame_with_str(WIRE_STR_MAX, WIRE_STR_MAX, &len);

	(void)state;
	assert_int_equal(wire_decode(buf, len, &d, NULL), 0);
	assert_int_equal(d.b.name.name.len, WIRE_STR_MAX);
	free(buf);
}

static void
test_decode_rejects_nul_inside_string(void **state)
{
	static const char *names[] = { "\0jobs", "jo\0bs", "jobs\0" };

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		uint8_t body[2 + 5];
		size_t len;
		uint8_t *buf;

		wire_put16(body, 5);
		memcpy(body + 2, names[i], 5);
		buf = raw_frame(WIRE_MBOX_STAT, body, sizeof(body), &len);
		expect_rejected(buf, len, "NUL in a string");
		free(buf);
	}
}

static void
test_decode_rejects_nul_in_every_string_field(void **state)
{
	static const char nul_name[] = { 'a', 'b', '\0', 'c' };

	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		struct wire_bytes *s[MAX_STRINGS];
		int n;

		sample_frame(all_types[i], &f);
		n = frame_strings(&f, s);
		for (int k = 0; k < n; k++) {
			struct wire_frame g;
			struct wire_bytes *gs[MAX_STRINGS];
			size_t len;
			uint8_t *buf;

			sample_frame(all_types[i], &g);
			frame_strings(&g, gs);
			*gs[k] = bytes(nul_name, sizeof(nul_name));
			/* The encoder does not look inside strings. */
			buf = encode_exact(&g, &len);
			expect_rejected(buf, len, wire_type_name(g.type));
			free(buf);
		}
	}
}

/* --- encode ------------------------------------------------------------- */

static void
test_encode_rejects_cap_one_byte_short(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		size_t len;
		uint8_t *buf;

		sample_frame(all_types[i], &f);
		len = wire_encoded_len(&f);
		/* Exactly cap bytes: ASan catches any write past them. */
		buf = malloc(len - 1);
		assert_non_null(buf);
		assert_int_equal(wire_encode(&f, buf, len - 1), -ENOBUFS);
		free(buf);
	}
}

static void
test_encode_rejects_cap_zero(void **state)
{
	struct wire_frame f;
	uint8_t b;

	(void)state;
	sample_frame(WIRE_OK, &f);
	assert_int_equal(wire_encode(&f, &b, 0), -ENOBUFS);
}

static void
test_encode_succeeds_at_exact_cap(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		size_t len;
		uint8_t *buf;

		sample_frame(all_types[i], &f);
		len = wire_encoded_len(&f);
		buf = malloc(len);
		assert_non_null(buf);
		assert_int_equal(wire_encode(&f, buf, len), (long)len);
		assert_int_equal(wire_get32(buf), len);
		free(buf);
	}
}

static void
test_encoded_len_matches_encode_return(void **state)
{
	uint8_t buf[4096];

	(void)state;
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		size_t len;

		sample_frame(all_types[i], &f);
		len = wire_encoded_len(&f);
		assert_int_equal(wire_encode(&f, buf, sizeof(buf)),
		    (long)len);
	}
}

static void
test_encoded_len_of_empty_bodies_matches_layout(void **state)
{
	/* The smallest frame of each type (empty strings and payload): the
	 * header plus the fixed fields and two bytes per string, as
	 * doc/protocol.md lays them out. */
	static const struct {
		uint16_t type;
		size_t len;
	} want[] = {
		{ WIRE_HELLO, 24 }, { WIRE_WELCOME, 44 }, { WIRE_ERROR, 26 },
		{ WIRE_OK, 16 }, { WIRE_BYE, 22 }, { WIRE_MBOX_CREATE, 38 },
		{ WIRE_MBOX_STAT, 18 }, { WIRE_MBOX_DELETE, 18 },
		{ WIRE_MBOX_LIST, 16 }, { WIRE_MBOX_INFO, 106 },
		{ WIRE_MBOX_CHMOD, 22 }, { WIRE_MBOX_CHOWN, 26 },
		{ WIRE_SEND, 26 }, { WIRE_SENT, 24 }, { WIRE_RECV, 30 },
		{ WIRE_DELIVER, 52 }, { WIRE_PEEK, 22 },
		{ WIRE_ACK, 16 }, { WIRE_FAILED, 30 }, { WIRE_CREDIT, 30 },
		{ WIRE_CLIENTS, 16 }, { WIRE_CLIENT_INFO, 70 },
		{ WIRE_COUNTERS, 16 }, { WIRE_COUNTER, 26 },
		{ WIRE_MONITOR, 16 }, { WIRE_EVENT, 58 },
		{ WIRE_OPTION, 28 }, { WIRE_LINKS, 16 },
		{ WIRE_LINK_INFO, 78 }, { WIRE_LINK_HELLO, 38 },
		{ WIRE_LINK_SEND, 38 }, { WIRE_PING, 24 }, { WIRE_PONG, 24 },
	};

	(void)state;
	assert_int_equal(sizeof(want) / sizeof(want[0]), N_TYPES);
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		struct wire_bytes *s[MAX_STRINGS], *p;
		int n;

		sample_frame(want[i].type, &f);
		n = frame_strings(&f, s);
		for (int k = 0; k < n; k++)
			*s[k] = bytes(NULL, 0);
		if ((p = frame_payload(&f)) != NULL)
			*p = bytes(NULL, 0);
		if (wire_encoded_len(&f) != want[i].len)
			fail_msg("%s: %zu bytes, want %zu",
			    wire_type_name(want[i].type),
			    wire_encoded_len(&f), want[i].len);
	}
}

/*
 * WIRE_OVERHEAD_MAX is 64 bytes of header and fixed fields and two
 * strings of the longest size.  LINK_INFO does not fit that (72 bytes
 * and three strings, 3150 bytes at most); it has no payload, and what
 * the broker puts in it is checked by the next test.
 */
static void
test_overhead_max_covers_other_types_with_longest_strings(void **state)
{
	static char big[WIRE_STR_MAX];

	(void)state;
	memset(big, 'x', sizeof(big));
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		struct wire_bytes *s[MAX_STRINGS], *p;
		size_t pay = 0;
		int n;

		if (all_types[i] == WIRE_LINK_INFO)
			continue;
		sample_frame(all_types[i], &f);
		n = frame_strings(&f, s);
		for (int k = 0; k < n; k++)
			*s[k] = bytes(big, WIRE_STR_MAX);
		if ((p = frame_payload(&f)) != NULL)
			pay = p->len;
		assert_true(wire_encoded_len(&f) <= pay + WIRE_OVERHEAD_MAX);
	}
}

static void
test_overhead_max_covers_link_info_as_the_library_reads_it(void **state)
{
	static char big[WIRE_STR_MAX];
	struct ipc_link_info li;
	struct wire_frame f;

	(void)state;
	/* The longest strings a struct ipc_link_info holds: a frame of
	 * them must pass the smallest frame limit (max_payload 1). */
	memset(big, 'x', sizeof(big));
	sample_frame(WIRE_LINK_INFO, &f);
	f.b.link.peer = bytes(big, sizeof(li.peer) - 1);
	f.b.link.identity = bytes(big, sizeof(li.identity) - 1);
	f.b.link.last_error = bytes(big, sizeof(li.last_error) - 1);
	assert_int_equal(sizeof(li.identity) - 1, TLS_IDENTITY_MAX);
	assert_true(wire_encoded_len(&f) <= 1 + WIRE_OVERHEAD_MAX);
}

static void
test_encode_rejects_unknown_type(void **state)
{
	uint8_t buf[64];

	(void)state;
	for (size_t i = 0; i < N_UNKNOWN; i++) {
		struct wire_frame f;

		memset(&f, 0, sizeof(f));
		f.type = unknown_types[i];
		assert_int_equal(wire_encoded_len(&f), 0);
		assert_int_equal(wire_encode(&f, buf, sizeof(buf)), -EINVAL);
	}
}

static void
test_encode_rejects_string_over_str_max(void **state)
{
	static char big[WIRE_STR_MAX + 1];
	uint8_t *buf = malloc(4 * WIRE_STR_MAX);

	(void)state;
	assert_non_null(buf);
	memset(big, 'x', sizeof(big));
	for (size_t i = 0; i < N_TYPES; i++) {
		struct wire_frame f;
		struct wire_bytes *s[MAX_STRINGS];
		int n;

		sample_frame(all_types[i], &f);
		n = frame_strings(&f, s);
		for (int k = 0; k < n; k++) {
			struct wire_frame g;
			struct wire_bytes *gs[MAX_STRINGS];

			sample_frame(all_types[i], &g);
			frame_strings(&g, gs);
			*gs[k] = bytes(big, WIRE_STR_MAX + 1);
			assert_int_equal(wire_encoded_len(&g), 0);
			assert_int_equal(wire_encode(&g, buf,
			    4 * WIRE_STR_MAX), -EINVAL);
		}
	}
	free(buf);
}

static void
test_encode_rejects_frame_over_4gib(void **state)
{
	static const uint8_t one = 1;
	struct wire_frame f;
	uint8_t buf[64];

	(void)state;
	/* The payload is never read: the length alone is refused. */
	sample_frame(WIRE_SEND, &f);
	f.b.send.payload = bytes(&one, (size_t)UINT32_MAX);
	assert_int_equal(wire_encoded_len(&f), 0);
	assert_int_equal(wire_encode(&f, buf, sizeof(buf)), -EINVAL);
}

/* --- byte layout -------------------------------------------------------- */

static void
test_get_put_are_little_endian(void **state)
{
	uint8_t b[8];

	(void)state;
	wire_put16(b, 0x0102);
	assert_memory_equal(b, "\x02\x01", 2);
	assert_int_equal(wire_get16((const uint8_t *)"\xfe\xff"), 0xfffe);
	wire_put32(b, 0x01020304);
	assert_memory_equal(b, "\x04\x03\x02\x01", 4);
	assert_int_equal(wire_get32((const uint8_t *)"\x01\x00\x00\x80"),
	    0x80000001u);
	wire_put64(b, 0x0102030405060708ull);
	assert_memory_equal(b, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
	assert_int_equal(
	    wire_get64((const uint8_t *)"\xff\x00\x00\x00\x00\x00\x00\x80"),
	    0x80000000000000ffull);
}

static void
test_hello_encodes_to_exact_bytes(void **state)
{
	static const uint8_t want[] = {
		0x18, 0x00, 0x00, 0x00,		/* length 24 */
		0x01, 0x00,			/* type HELLO */
		0x00, 0x00,			/* flags */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* id */
		'I', 'P', 'C', '1',		/* magic 0x31435049 */
		0x01, 0x00,			/* version_min 1 */
		0x02, 0x01,			/* version_max 0x0102 */
	};
	struct wire_frame f;
	uint8_t buf[sizeof(want)];

	(void)state;
	memset(&f, 0, sizeof(f));
	f.type = WIRE_HELLO;
	f.id = 0x0102030405060708ull;
	f.b.hello.magic = WIRE_MAGIC;
	f.b.hello.version_min = 1;
	f.b.hello.version_max = 0x0102;
	assert_int_equal(wire_encode(&f, buf, sizeof(buf)), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
}

static void
test_hello_decodes_from_exact_bytes(void **state)
{
	static const uint8_t in[] = {
		0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
		0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		'I', 'P', 'C', '1', 0x01, 0x00, 0x01, 0x00,
	};
	struct wire_frame d;
	uint8_t *buf = dup_exact(in, sizeof(in));

	(void)state;
	assert_int_equal(wire_decode(buf, sizeof(in), &d, NULL), 0);
	assert_int_equal(d.type, WIRE_HELLO);
	assert_int_equal(d.id, 42);
	assert_int_equal(d.b.hello.magic, WIRE_MAGIC);
	assert_int_equal(d.b.hello.version_min, 1);
	assert_int_equal(d.b.hello.version_max, 1);
	free(buf);
}

static void
test_send_encodes_string_then_payload(void **state)
{
	static const uint8_t want[] = {
		0x20, 0x00, 0x00, 0x00,		/* length 32 */
		0x20, 0x00, 0x00, 0x00,		/* SEND, flags 0 */
		0x05, 0, 0, 0, 0, 0, 0, 0,	/* id 5 */
		0xe8, 0x03, 0x00, 0x00,		/* timeout_ms 1000 */
		0x00, 0x00, 0x00, 0x00,		/* flags */
		0x04, 0x00, 'j', 'o', 'b', 's',	/* dest "jobs" */
		0x00, 0xff,			/* payload */
	};
	static const uint8_t pay[] = { 0x00, 0xff };
	struct wire_frame f;
	uint8_t buf[sizeof(want)];

	(void)state;
	memset(&f, 0, sizeof(f));
	f.type = WIRE_SEND;
	f.id = 5;
	f.b.send.timeout_ms = 1000;
	f.b.send.dest = wire_str("jobs");
	f.b.send.payload = bytes(pay, sizeof(pay));
	assert_int_equal(wire_encode(&f, buf, sizeof(buf)), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
}

static void
test_deliver_fields_sit_at_documented_offsets(void **state)
{
	struct wire_frame f;
	size_t len;
	uint8_t *buf;

	(void)state;
	sample_frame(WIRE_DELIVER, &f);
	buf = encode_exact(&f, &len);
	assert_int_equal(wire_get64(buf + 16), f.b.deliver.msg_id);
	assert_int_equal(wire_get64(buf + 24), f.b.deliver.enqueue_ns);
	assert_int_equal(wire_get32(buf + 32), f.b.deliver.pid);
	assert_int_equal(wire_get32(buf + 36), f.b.deliver.uid);
	assert_int_equal(wire_get32(buf + 40), f.b.deliver.gid);
	assert_int_equal(wire_get32(buf + 44), f.b.deliver.flags);
	assert_int_equal(wire_get16(buf + 48), f.b.deliver.sender.len);
	assert_memory_equal(buf + 50, f.b.deliver.sender.p,
	    f.b.deliver.sender.len);
	free(buf);
}

static void
test_mbox_info_fields_sit_at_documented_offsets(void **state)
{
	struct wire_frame f;
	size_t len;
	uint8_t *buf;

	(void)state;
	sample_frame(WIRE_MBOX_INFO, &f);
	buf = encode_exact(&f, &len);
	assert_memory_equal(buf + 16, f.b.info.uuid, 16);
	assert_int_equal(wire_get32(buf + 32), f.b.info.capacity);
	assert_int_equal(wire_get32(buf + 36), f.b.info.mode);
	assert_int_equal(wire_get64(buf + 40), f.b.info.max_bytes);
	assert_int_equal(wire_get32(buf + 48), f.b.info.uid);
	assert_int_equal(wire_get32(buf + 52), f.b.info.gid);
	assert_int_equal(wire_get32(buf + 56), f.b.info.depth);
	assert_int_equal(wire_get32(buf + 60), f.b.info.waiting_receivers);
	assert_int_equal(wire_get32(buf + 64), f.b.info.waiting_senders);
	assert_int_equal(wire_get32(buf + 68), f.b.info.flags);
	assert_int_equal(wire_get64(buf + 72), f.b.info.bytes);
	assert_int_equal(wire_get64(buf + 80), f.b.info.msgs_in);
	assert_int_equal(wire_get64(buf + 88), f.b.info.msgs_out);
	assert_int_equal(wire_get64(buf + 96), f.b.info.created_ns);
	assert_int_equal(wire_get16(buf + 104), f.b.info.name.len);
	free(buf);
}

/* --- frames between brokers -------------------------------------------- */

static void
test_option_encodes_to_exact_bytes(void **state)
{
	static const uint8_t want[] = {
		0x1c, 0x00, 0x00, 0x00,		/* length 28 */
		0x06, 0x00, 0x00, 0x00,		/* OPTION, flags 0 */
		0x03, 0, 0, 0, 0, 0, 0, 0,	/* id 3 */
		0x01, 0x00, 0x00, 0x00,		/* REMOTE_DIRECT */
		0x01, 0, 0, 0, 0, 0, 0, 0,	/* value 1 */
	};
	struct wire_frame f;
	uint8_t buf[sizeof(want)];

	(void)state;
	memset(&f, 0, sizeof(f));
	f.type = WIRE_OPTION;
	f.id = 3;
	f.b.option.option = WIRE_OPT_REMOTE_DIRECT;
	f.b.option.value = 1;
	assert_int_equal(wire_encode(&f, buf, sizeof(buf)), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
}

static void
test_option_with_any_option_or_value_decodes(void **state)
{
	static const struct {
		uint32_t option;
		uint64_t value;
	} odd[] = {
		{ WIRE_OPT_REMOTE_DIRECT, 2 },
		{ WIRE_OPT_REMOTE_DIRECT, UINT64_MAX },
		{ 0, 0 }, { 7, 1 }, { UINT32_MAX, 0x0100000000ull },
	};

	(void)state;
	/* The broker refuses these with INVAL; the codec only checks the
	 * layout. */
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		struct wire_frame d;
		uint8_t body[12];
		size_t len;
		uint8_t *buf;

		wire_put32(body, odd[i].option);
		wire_put64(body + 4, odd[i].value);
		buf = raw_frame(WIRE_OPTION, body, sizeof(body), &len);
		assert_int_equal(wire_decode(buf, len, &d, NULL), 0);
		assert_int_equal(d.b.option.option, odd[i].option);
		assert_int_equal(d.b.option.value, odd[i].value);
		free(buf);
	}
}

static void
test_link_hello_encodes_to_exact_bytes(void **state)
{
	static const uint8_t want[] = {
		0x29, 0x00, 0x00, 0x00,		/* length 41 */
		0x40, 0x00, 0x00, 0x00,		/* LINK_HELLO, flags 0 */
		0x01, 0, 0, 0, 0, 0, 0, 0,	/* id 1 */
		'I', 'P', 'C', '1',		/* magic 0x31435049 */
		0x01, 0x00,			/* version_min 1 */
		0x01, 0x00,			/* version_max 1 */
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* epoch */
		0xd0, 0x07, 0x00, 0x00,		/* heartbeat 2000 ms */
		0x03, 0x00, 'b', ':', '1',	/* name "b:1" */
	};
	struct wire_frame f;
	uint8_t buf[sizeof(want)];

	(void)state;
	memset(&f, 0, sizeof(f));
	f.type = WIRE_LINK_HELLO;
	f.id = 1;
	f.b.link_hello.magic = WIRE_MAGIC;
	f.b.link_hello.version_min = 1;
	f.b.link_hello.version_max = 1;
	f.b.link_hello.epoch = 0x0807060504030201ull;
	f.b.link_hello.heartbeat_ms = 2000;
	f.b.link_hello.name = wire_str("b:1");
	assert_int_equal(wire_encode(&f, buf, sizeof(buf)), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
}

static void
test_link_send_keeps_64_bit_sequence_and_payload(void **state)
{
	static const uint8_t pay[] = { 0, 0xff, 'x', 0, 0x80, 0 };
	struct wire_frame f, d;
	size_t len;
	uint8_t *buf;

	(void)state;
	/* The sequence number is the header's id, all 64 bits of it. */
	sample_frame(WIRE_LINK_SEND, &f);
	f.id = 0xfedcba9800000001ull;
	f.b.link_send.payload = bytes(pay, sizeof(pay));
	buf = encode_exact(&f, &len);
	assert_int_equal(wire_decode(buf, len, &d, NULL), 0);
	assert_int_equal(d.type, WIRE_LINK_SEND);
	assert_int_equal(d.id, 0xfedcba9800000001ull);
	assert_bytes_equal(d.b.link_send.payload, f.b.link_send.payload);
	/* Borrowed, and the last thing in the frame. */
	assert_ptr_equal(d.b.link_send.payload.p, buf + len - sizeof(pay));
	free(buf);
}

static void
test_link_send_fields_sit_at_documented_offsets(void **state)
{
	struct wire_frame f;
	size_t len, a;
	uint8_t *buf;

	(void)state;
	sample_frame(WIRE_LINK_SEND, &f);
	a = f.b.link_send.dest.len;
	buf = encode_exact(&f, &len);
	assert_int_equal(len, 38 + a + SAMPLE_PAYLOAD_LEN);
	assert_int_equal(wire_get32(buf + 16), f.b.link_send.timeout_ms);
	assert_int_equal(wire_get32(buf + 20), f.b.link_send.flags);
	assert_int_equal(wire_get32(buf + 24), f.b.link_send.pid);
	assert_int_equal(wire_get32(buf + 28), f.b.link_send.uid);
	assert_int_equal(wire_get32(buf + 32), f.b.link_send.gid);
	assert_int_equal(wire_get16(buf + 36), a);
	assert_memory_equal(buf + 38, f.b.link_send.dest.p, a);
	assert_memory_equal(buf + 38 + a, sample_payload(),
	    SAMPLE_PAYLOAD_LEN);
	free(buf);
}

static void
test_decode_accepts_link_send_with_sequence_zero(void **state)
{
	struct wire_frame f, d;
	size_t len;
	uint8_t *buf;

	(void)state;
	/* Sequence numbers start at 1, but it is the broker that refuses
	 * 0 (a protocol error on the link), not the codec. */
	sample_frame(WIRE_LINK_SEND, &f);
	f.id = 0;
	buf = encode_exact(&f, &len);
	assert_int_equal(wire_decode(buf, len, &d, NULL), 0);
	assert_int_equal(d.id, 0);
	free(buf);
}

static void
test_link_info_keeps_three_strings_in_order(void **state)
{
	struct wire_frame f, d;
	size_t len, a, b;
	uint8_t *buf;

	(void)state;
	sample_frame(WIRE_LINK_INFO, &f);
	f.b.link.peer = wire_str("[2001:db8::7]:7400");
	f.b.link.identity = wire_str("CN-like identity.b");
	f.b.link.last_error = wire_str("no answer for 6003 ms");
	a = f.b.link.peer.len;
	b = f.b.link.identity.len;
	buf = encode_exact(&f, &len);
	assert_int_equal(len, 78 + a + b + f.b.link.last_error.len);
	assert_int_equal(wire_get16(buf + 72), a);
	assert_memory_equal(buf + 74, "[2001:db8::7]:7400", a);
	assert_int_equal(wire_get16(buf + 74 + a), b);
	assert_memory_equal(buf + 76 + a, "CN-like identity.b", b);
	assert_int_equal(wire_get16(buf + 76 + a + b),
	    f.b.link.last_error.len);
	assert_int_equal(wire_decode(buf, len, &d, NULL), 0);
	assert_true(wire_str_eq(d.b.link.peer, "[2001:db8::7]:7400"));
	assert_true(wire_str_eq(d.b.link.identity, "CN-like identity.b"));
	assert_true(wire_str_eq(d.b.link.last_error,
	    "no answer for 6003 ms"));
	free(buf);
}

static void
test_link_info_fields_sit_at_documented_offsets(void **state)
{
	struct wire_frame f;
	size_t len;
	uint8_t *buf;

	(void)state;
	sample_frame(WIRE_LINK_INFO, &f);
	buf = encode_exact(&f, &len);
	assert_int_equal(wire_get32(buf + 16), f.b.link.direction);
	assert_int_equal(wire_get32(buf + 20), f.b.link.state);
	assert_int_equal(wire_get32(buf + 24), f.b.link.queued);
	assert_int_equal(wire_get32(buf + 28), f.b.link.in_flight);
	assert_int_equal(wire_get64(buf + 32), f.b.link.msgs_out);
	assert_int_equal(wire_get64(buf + 40), f.b.link.msgs_in);
	assert_int_equal(wire_get64(buf + 48), f.b.link.failed);
	assert_int_equal(wire_get64(buf + 56), f.b.link.reconnects);
	assert_int_equal(wire_get64(buf + 64), f.b.link.rtt_us);
	assert_int_equal(wire_get16(buf + 72), f.b.link.peer.len);
	free(buf);
}

static void
test_ping_and_pong_differ_only_in_type(void **state)
{
	struct wire_frame ping, pong;
	size_t len_ping, len_pong;
	uint8_t *a, *b;

	(void)state;
	sample_frame(WIRE_PING, &ping);
	pong = ping;
	pong.type = WIRE_PONG;
	a = encode_exact(&ping, &len_ping);
	b = encode_exact(&pong, &len_pong);
	assert_int_equal(len_ping, 24);
	assert_int_equal(len_pong, 24);
	assert_int_equal(wire_get16(a + 4), WIRE_PING);
	assert_int_equal(wire_get16(b + 4), WIRE_PONG);
	assert_memory_equal(a, b, 4);
	assert_memory_equal(a + 6, b + 6, 24 - 6);
	assert_int_equal(wire_get64(b + 8), ping.id);
	assert_int_equal(wire_get64(b + 16), ping.b.ping.stamp_ns);
	free(a);
	free(b);
}

static void
test_links_has_no_body(void **state)
{
	struct wire_frame f;
	uint8_t buf[WIRE_HDR_LEN];

	(void)state;
	memset(&f, 0, sizeof(f));
	f.type = WIRE_LINKS;
	f.id = 9;
	assert_int_equal(wire_encode(&f, buf, sizeof(buf)), WIRE_HDR_LEN);
	assert_int_equal(wire_get32(buf), WIRE_HDR_LEN);
	assert_int_equal(wire_get16(buf + 4), 0x36);
}

/* --- error codes -------------------------------------------------------- */

static const struct {
	int err;
	uint32_t code;
} code_table[] = {
	{ EINVAL, WIRE_E_INVAL }, { ENOENT, WIRE_E_NOENT },
	{ EEXIST, WIRE_E_EXIST }, { EACCES, WIRE_E_ACCES },
	{ EAGAIN, WIRE_E_AGAIN }, { ETIMEDOUT, WIRE_E_TIMEDOUT },
	{ EMSGSIZE, WIRE_E_MSGSIZE }, { ESRCH, WIRE_E_SRCH },
	{ EPROTO, WIRE_E_PROTO }, { ENOMEM, WIRE_E_NOMEM },
	{ ENOSPC, WIRE_E_NOSPC }, { EDQUOT, WIRE_E_DQUOT },
	{ ENOTSUP, WIRE_E_NOTSUP }, { ECONNRESET, WIRE_E_SHUTDOWN },
	{ EBUSY, WIRE_E_BUSY }, { EIO, WIRE_E_IO }, { EROFS, WIRE_E_ROFS },
};
#define N_CODES (sizeof(code_table) / sizeof(code_table[0]))

static void
test_code_maps_each_errno_to_its_number(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_CODES; i++)
		assert_int_equal(wire_code(code_table[i].err),
		    code_table[i].code);
}

static void
test_errno_maps_each_number_back(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_CODES; i++)
		assert_int_equal(wire_errno(code_table[i].code),
		    code_table[i].err);
}

static void
test_code_errno_round_trip_every_code(void **state)
{
	(void)state;
	/* The codes are 1..WIRE_E_MAX with no gap. */
	assert_int_equal(N_CODES, WIRE_E_MAX);
	for (uint32_t c = 1; c <= WIRE_E_MAX; c++)
		assert_int_equal(wire_code(wire_errno(c)), c);
	for (size_t i = 0; i < N_CODES; i++)
		assert_int_equal(wire_errno(wire_code(code_table[i].err)),
		    code_table[i].err);
}

static void
test_errno_of_unknown_code_is_eproto(void **state)
{
	static const uint32_t bad[] = { 0, WIRE_E_MAX + 1, 0x100,
	    UINT32_MAX };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(wire_errno(bad[i]), EPROTO);
}

static void
test_code_of_errno_without_code_is_proto(void **state)
{
	static const int other[] = { 0, EPERM, EBADF, EPIPE, -1 };

	(void)state;
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		assert_int_equal(wire_code(other[i]), WIRE_E_PROTO);
}

/* --- strings and names -------------------------------------------------- */

static void
test_str_eq_matches_same_bytes(void **state)
{
	/* Not NUL-terminated, as a field inside a frame is not. */
	uint8_t *p = dup_exact("jobs", 4);

	(void)state;
	assert_true(wire_str_eq(bytes(p, 4), "jobs"));
	free(p);
}

static void
test_str_eq_rejects_different_bytes_or_length(void **state)
{
	uint8_t *p = dup_exact("jobs", 4);

	(void)state;
	assert_false(wire_str_eq(bytes(p, 4), "jobz"));
	assert_false(wire_str_eq(bytes(p, 4), "job"));
	assert_false(wire_str_eq(bytes(p, 3), "jobs"));
	assert_false(wire_str_eq(bytes(p, 4), "jobs2"));
	assert_false(wire_str_eq(bytes(p, 4), ""));
	free(p);
}

static void
test_str_eq_empty_field_equals_empty_string(void **state)
{
	(void)state;
	assert_true(wire_str_eq(bytes(NULL, 0), ""));
	assert_false(wire_str_eq(bytes(NULL, 0), "a"));
}

static void
test_str_of_null_is_empty(void **state)
{
	struct wire_bytes b;

	(void)state;
	b = wire_str(NULL);
	assert_int_equal(b.len, 0);
	b = wire_str("abc");
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.p, "abc", 3);
}

static void
test_str_copy_fits_exactly(void **state)
{
	uint8_t *p = dup_exact("hello", 5);
	char buf[6];

	(void)state;
	memset(buf, 'z', sizeof(buf));
	assert_int_equal(wire_str_copy(bytes(p, 5), buf, sizeof(buf)), 5);
	assert_string_equal(buf, "hello");
	free(p);
}

static void
test_str_copy_rejects_one_byte_too_long(void **state)
{
	uint8_t *p = dup_exact("hello!", 6);
	char buf[6];

	(void)state;
	assert_int_equal(wire_str_copy(bytes(p, 6), buf, sizeof(buf)),
	    -ENAMETOOLONG);
	free(p);
}

static void
test_str_copy_empty_field_is_empty_string(void **state)
{
	char buf[1] = { 'z' };

	(void)state;
	assert_int_equal(wire_str_copy(bytes(NULL, 0), buf, sizeof(buf)), 0);
	assert_int_equal(buf[0], '\0');
}

static void
test_type_name_of_every_type(void **state)
{
	static const char *want[] = {
		"HELLO", "WELCOME", "ERROR", "OK", "BYE", "OPTION",
		"MBOX_CREATE", "MBOX_STAT", "MBOX_DELETE", "MBOX_LIST",
		"MBOX_INFO", "MBOX_CHMOD", "MBOX_CHOWN", "SEND", "SENT",
		"RECV", "DELIVER", "PEEK", "ACK", "FAILED", "CREDIT", "CLIENTS",
		"CLIENT_INFO", "COUNTERS", "COUNTER", "MONITOR", "EVENT",
		"LINKS", "LINK_INFO", "LINK_HELLO", "LINK_SEND", "PING",
		"PONG",
	};

	(void)state;
	assert_int_equal(sizeof(want) / sizeof(want[0]), N_TYPES);
	for (size_t i = 0; i < N_TYPES; i++)
		assert_string_equal(wire_type_name(all_types[i]), want[i]);
}

static void
test_type_name_of_unknown_is_question_mark(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_UNKNOWN; i++)
		assert_string_equal(wire_type_name(unknown_types[i]), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_len_needs_more_below_header_size),
		cmocka_unit_test(test_frame_len_rejects_len_under_header_size),
		cmocka_unit_test(test_frame_len_accepts_header_only_frame),
		cmocka_unit_test(test_frame_len_accepts_len_at_limit),
		cmocka_unit_test(test_frame_len_rejects_len_over_limit),
		cmocka_unit_test(test_frame_len_rejects_len_uint32_max),
		cmocka_unit_test(
		    test_frame_len_accepts_uint32_max_at_uint32_max_limit),
		cmocka_unit_test(test_frame_len_reads_length_little_endian),
		cmocka_unit_test(test_frame_len_looks_only_at_the_header),
		cmocka_unit_test(test_round_trip_hello),
		cmocka_unit_test(test_round_trip_welcome),
		cmocka_unit_test(test_round_trip_error),
		cmocka_unit_test(test_round_trip_ok),
		cmocka_unit_test(test_round_trip_bye),
		cmocka_unit_test(test_round_trip_mbox_create),
		cmocka_unit_test(test_round_trip_mbox_stat),
		cmocka_unit_test(test_round_trip_mbox_delete),
		cmocka_unit_test(test_round_trip_mbox_list),
		cmocka_unit_test(test_round_trip_mbox_info),
		cmocka_unit_test(test_round_trip_mbox_chmod),
		cmocka_unit_test(test_round_trip_mbox_chown),
		cmocka_unit_test(test_round_trip_send),
		cmocka_unit_test(test_round_trip_sent),
		cmocka_unit_test(test_round_trip_recv),
		cmocka_unit_test(test_round_trip_deliver),
		cmocka_unit_test(test_round_trip_peek),
		cmocka_unit_test(test_round_trip_clients),
		cmocka_unit_test(test_round_trip_client_info),
		cmocka_unit_test(test_round_trip_counters),
		cmocka_unit_test(test_round_trip_counter),
		cmocka_unit_test(test_round_trip_option),
		cmocka_unit_test(test_round_trip_links),
		cmocka_unit_test(test_round_trip_link_info),
		cmocka_unit_test(test_round_trip_link_hello),
		cmocka_unit_test(test_round_trip_link_send),
		cmocka_unit_test(test_round_trip_ping),
		cmocka_unit_test(test_round_trip_pong),
		cmocka_unit_test(
		    test_round_trip_every_type_with_empty_strings_and_payload),
		cmocka_unit_test(test_round_trip_every_string_field_at_str_max),
		cmocka_unit_test(test_round_trip_extreme_values),
		cmocka_unit_test(test_round_trip_mbox_create_default_sentinels),
		cmocka_unit_test(test_round_trip_payload_with_nul_bytes),
		cmocka_unit_test(
		    test_decode_strings_and_payload_borrow_from_buffer),
		cmocka_unit_test(test_decode_accepts_null_why),
		cmocka_unit_test(
		    test_decode_rejects_buffer_shorter_than_header),
		cmocka_unit_test(test_decode_rejects_send_cut_at_every_byte),
		cmocka_unit_test(
		    test_decode_send_cut_inside_payload_is_shorter_payload),
		cmocka_unit_test(test_decode_rejects_deliver_cut_at_every_byte),
		cmocka_unit_test(
		    test_decode_deliver_cut_inside_payload_is_shorter_payload),
		cmocka_unit_test(
		    test_decode_rejects_mbox_info_cut_at_every_byte),
		cmocka_unit_test(
		    test_decode_rejects_link_send_cut_at_every_byte),
		cmocka_unit_test(
		    test_decode_link_send_cut_in_payload_is_shorter_payload),
		cmocka_unit_test(
		    test_decode_rejects_link_info_cut_at_every_byte),
		cmocka_unit_test(
		    test_decode_rejects_every_type_cut_at_every_byte),
		cmocka_unit_test(test_decode_rejects_trailing_byte_after_ok),
		cmocka_unit_test(test_decode_rejects_trailing_byte_after_sent),
		cmocka_unit_test(test_decode_rejects_trailing_byte_after_hello),
		cmocka_unit_test(
		    test_decode_rejects_trailing_byte_on_types_without_payload),
		cmocka_unit_test(test_decode_rejects_unknown_type),
		cmocka_unit_test(
		    test_decode_rejects_every_type_outside_the_enum),
		cmocka_unit_test(test_decode_rejects_nonzero_header_flags),
		cmocka_unit_test(
		    test_decode_rejects_header_len_disagreeing_with_buffer),
		cmocka_unit_test(
		    test_decode_rejects_buffer_longer_than_header_len),
		cmocka_unit_test(test_decode_rejects_str_len_past_end),
		cmocka_unit_test(test_decode_rejects_str_len_one_past_end),
		cmocka_unit_test(test_decode_rejects_str_len_str_max_plus_one),
		cmocka_unit_test(test_decode_rejects_str_len_0xffff),
		cmocka_unit_test(test_decode_accepts_str_len_str_max),
		cmocka_unit_test(test_decode_rejects_nul_inside_string),
		cmocka_unit_test(test_decode_rejects_nul_in_every_string_field),
		cmocka_unit_test(test_encode_rejects_cap_one_byte_short),
		cmocka_unit_test(test_encode_rejects_cap_zero),
		cmocka_unit_test(test_encode_succeeds_at_exact_cap),
		cmocka_unit_test(test_encoded_len_matches_encode_return),
		cmocka_unit_test(
		    test_encoded_len_of_empty_bodies_matches_layout),
		cmocka_unit_test(
		    test_overhead_max_covers_other_types_with_longest_strings),
		cmocka_unit_test(
		    test_overhead_max_covers_link_info_as_the_library_reads_it),
		cmocka_unit_test(test_encode_rejects_unknown_type),
		cmocka_unit_test(test_encode_rejects_string_over_str_max),
		cmocka_unit_test(test_encode_rejects_frame_over_4gib),
		cmocka_unit_test(test_get_put_are_little_endian),
		cmocka_unit_test(test_hello_encodes_to_exact_bytes),
		cmocka_unit_test(test_hello_decodes_from_exact_bytes),
		cmocka_unit_test(test_send_encodes_string_then_payload),
		cmocka_unit_test(test_deliver_fields_sit_at_documented_offsets),
		cmocka_unit_test(
		    test_mbox_info_fields_sit_at_documented_offsets),
		cmocka_unit_test(test_option_encodes_to_exact_bytes),
		cmocka_unit_test(test_option_with_any_option_or_value_decodes),
		cmocka_unit_test(test_link_hello_encodes_to_exact_bytes),
		cmocka_unit_test(
		    test_link_send_keeps_64_bit_sequence_and_payload),
		cmocka_unit_test(
		    test_link_send_fields_sit_at_documented_offsets),
		cmocka_unit_test(
		    test_decode_accepts_link_send_with_sequence_zero),
		cmocka_unit_test(test_link_info_keeps_three_strings_in_order),
		cmocka_unit_test(
		    test_link_info_fields_sit_at_documented_offsets),
		cmocka_unit_test(test_ping_and_pong_differ_only_in_type),
		cmocka_unit_test(test_links_has_no_body),
		cmocka_unit_test(test_code_maps_each_errno_to_its_number),
		cmocka_unit_test(test_errno_maps_each_number_back),
		cmocka_unit_test(test_code_errno_round_trip_every_code),
		cmocka_unit_test(test_errno_of_unknown_code_is_eproto),
		cmocka_unit_test(test_code_of_errno_without_code_is_proto),
		cmocka_unit_test(test_str_eq_matches_same_bytes),
		cmocka_unit_test(test_str_eq_rejects_different_bytes_or_length),
		cmocka_unit_test(test_str_eq_empty_field_equals_empty_string),
		cmocka_unit_test(test_str_of_null_is_empty),
		cmocka_unit_test(test_str_copy_fits_exactly),
		cmocka_unit_test(test_str_copy_rejects_one_byte_too_long),
		cmocka_unit_test(test_str_copy_empty_field_is_empty_string),
		cmocka_unit_test(test_type_name_of_every_type),
		cmocka_unit_test(test_type_name_of_unknown_is_question_mark),
	};

	test_init(300);
	return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
