/*
 * fuzz-link.c - libFuzzer harness for what comes over TCP once TLS has
 * authenticated the peer (as "fuzz-peer"), in-process with no TLS:
 * connections 0 and 1 are such peers, whose first frame makes them
 * another broker's link (LINK_HELLO, then LINK_SEND, PING, BYE...) or a
 * remote client (HELLO, then requests); connection 2 is a local client,
 * to make mailboxes, receive what the links bring and take remote
 * messages in its direct queue (OPTION REMOTE_DIRECT, "pid:self").  The
 * markers and checks are fuzz-broker.h's.  The broker has a uid map, so
 * that the peer's senders are mapped as in a real setup, and no TLS
 * context: it must not try to reach another host.
 */
#include "fuzz-broker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const enum conn_kind fz_kinds[FZ_CONNS] = {
	CONN_TCP, CONN_TCP, CONN_LOCAL,
};

static void
fz_map(struct broker *b, const char *identity, int64_t ruid, uid_t uid,
    gid_t gid)
{
	struct uid_map *m = calloc(1, sizeof(*m));

	if (m == NULL || (m->identity = strdup(identity)) == NULL)
		FZ_FAIL("out of memory");
	m->ruid = ruid;
	m->uid = uid;
	m->gid = gid;
	m->next = b->uid_map;
	b->uid_map = m;
}

/* The peer's senders and remote clients are uid 1000, except its uid 0,
 * which nobody maps (65534 by default); other peers' uid 0 is 65533. */
static void
fz_setup(struct broker *b)
{
	fz_map(b, FZ_IDENTITY, -1, 1000, 1000);
	fz_map(b, "*", 0, 65533, 65533);
	fz_map(b, FZ_IDENTITY, 0, 65534, 65534);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_run(data, size, fz_kinds, fz_setup);
	return 0;
}
