/*
 * A real ipcd for an integration test: started on a socket in a private
 * directory, waited for on its ready line, stopped and checked.  These
 * assert (cmocka): call them from a test, not from a child process.
 */
#ifndef TESTBROKER_H
#define TESTBROKER_H

#include <limits.h>

#include "ipc.h"
#include "testutil.h"

struct broker {
	struct test_proc proc;
	char *dir;
	char path[PATH_MAX];
	char where[PATH_MAX + 8];	/* "unix:PATH" */
	int tcp_port;			/* with --tcp: the port it took */
	char name[32];			/* with --tcp: "127.0.0.1:PORT" */
};

/* Start ipcd on dir/ipcd.sock with the extra options (NULL-terminated,
 * may be NULL) and wait for "ipcd: ready on PATH" (", tcp ADDR:PORT"
 * after it with --tcp).  A fresh directory
 * unless b already has one (a restart on the same path). */
void broker_start(struct broker *b, const char *const *extra);

/* SIGTERM: ipcd must exit 0.  The directory stays for the teardown. */
void broker_stop(struct broker *b);

/* Reap a broker the test killed with SIGKILL. */
void broker_reap_killed(struct broker *b);

/* A connection to it; fails the test when there is none. */
struct ipc_conn *broker_open(const struct broker *b);
/* The broker's counter name (ipcd(8), COUNTERS) read through c: 0 with
 * *out, -1 when the request failed (errno), -2 when there is no such
 * counter.  Asserts nothing: safe in threads and children. */
int broker_counter_try(struct ipc_conn *c, const char *name, uint64_t *out);
/* The same, failing the test on either error. */
uint64_t broker_counter(struct ipc_conn *c, const char *name);

#endif
