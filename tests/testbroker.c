#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testbroker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

void
broker_start(struct broker *b, const char *const *extra)
{
	char line[PATH_MAX + 64];
	char *argv[40];
	char *tcp;
	int n = 0;

	if (b->dir == NULL) {
		b->dir = test_tmpdir();
		assert_non_null(b->dir);
		snprintf(b->path, sizeof(b->path), "%s/ipcd.sock", b->dir);
		snprintf(b->where, sizeof(b->where), "unix:%s", b->path);
	}
	argv[n++] = strdup(test_build_path("daemon/ipcd"));
	argv[n++] = "--socket";
	argv[n++] = b->path;
	for (int i = 0; extra != NULL && extra[i] != NULL && n < 39; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	assert_non_null(argv[0]);
	assert_int_equal(test_spawn(&b->proc, argv), 0);
	free(argv[0]);
	assert_int_equal(test_wait_line(b->proc.out, "ipcd: ready on ", line,
	    sizeof(line), TEST_WAIT_MS), 0);
	if ((tcp = strstr(line, ", tcp ")) != NULL) {
		*tcp = '\0';
		tcp += 6;
		assert_non_null(strrchr(tcp, ':'));
		b->tcp_port = atoi(strrchr(tcp, ':') + 1);
		snprintf(b->name, sizeof(b->name), "127.0.0.1:%d",
		    b->tcp_port);
	}
	assert_string_equal(line, b->path);
}

void
broker_stop(struct broker *b)
{
	int status = test_stop(&b->proc);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

void
broker_reap_killed(struct broker *b)
{
	int status = test_stop(&b->proc);

	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

struct ipc_conn *
broker_open(const struct broker *b)
{
	struct ipc_conn *c = ipc_open(b->where);

	if (c == NULL)
		fail_msg("ipc_open %s: %s", b->where, strerror(errno));
	return c;
}
