/*
 * broker.c - a broker's state from its defaults to its last free: what
 * ipcd's main() and the in-process harnesses in fuzz/ share, so both run
 * the same broker (main() adds options, sockets, signals and daemon mode).
 */
#include "config.h"

#include "broker.h"
#include "journal.h"
#include "tls.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

void
broker_defaults(struct broker *b)
{
	memset(b, 0, sizeof(*b));
	b->lim.max_payload = WIRE_PAYLOAD_DEFAULT;
	b->lim.default_capacity = 1024;
	b->lim.default_max_bytes = 64u << 20;
	b->lim.max_connections = 4096;
	b->lim.max_mailboxes = 65536;
	b->lim.hello_timeout_ms = 5000;
	b->lim.direct_wait_ms = 1000;
	b->lim.heartbeat_ms = 2000;
	b->lim.link_queue = 65536;
	b->lim.link_queue_bytes = 256u << 20;
	b->lim.max_conns_per_addr = 64;
	/* Per uid: room for any desktop session or server, while one user
	 * cannot take all of the broker. */
	b->lim.max_conns_per_uid = 1024;
	b->lim.max_mailboxes_per_uid = 16384;
	b->lim.max_bytes_per_uid = 1ull << 30;
	b->lim.max_fds_per_uid = 1024;
	b->lim.max_handshakes = 256;
	b->remote_uid = 65534;
	b->remote_gid = 65534;
	b->listen_fd = -1;
	b->tcp_fd = -1;
	b->resolve_fd[0] = b->resolve_fd[1] = -1;
	b->max_fds_held = 256;
}

static void
broker_before_wait(void *data)
{
	struct broker *b = data;

	conn_flush_all(b);
	proc_reap(b);
	if (b->journal_dirty)
		durable_kick(b);
}

int
broker_open(struct broker *b)
{
	if ((b->loop = loop_new()) == NULL || mbox_table_init(b) < 0 ||
	    proc_table_init(b) < 0)
		return -1;
	loop_before_wait(b->loop, broker_before_wait, b);
	loop_timer_init(&b->accept_timer, conn_accept_resume, b);
	b->started_ms = loop_now_ms();
	b->started_ns = broker_wall_ns();
	return 0;
}

void
broker_close(struct broker *b, const char *why)
{
	struct journal *j;

	durable_flush(b);
	if (b->loop != NULL)
		conn_close_all(b, why);
	/* From here on nothing is journaled: freeing the messages below
	 * must not let the journal reclaim what they hold. */
	if ((j = b->journal) != NULL) {
		loop_watch_del(b->loop, &b->journal_watch);
		loop_timer_del(b->loop, &b->journal_timer);
		b->journal = NULL;
	}
	durable_free_all(b);
	link_free_all(b);
	tls_ctx_free(b->tls_server);
	tls_ctx_free(b->tls_client);
	b->tls_server = b->tls_client = NULL;
	while (b->uid_map != NULL) {
		struct uid_map *m = b->uid_map;

		b->uid_map = m->next;
		free(m->identity);
		free(m);
	}
	proc_table_free(b);
	mbox_table_free(b);
	free(b->rbuf);
	b->rbuf = NULL;
	quota_free_all(b);
	loop_free(b->loop);
	b->loop = NULL;
	b->durables = NULL;
	b->ndurables = 0;
	/* A last sync of what was appended (records of consumed or
	 * cancelled messages), then the lock goes. */
	journal_close(j);
}
