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

#endif
