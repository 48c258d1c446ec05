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

struct counter_find {
	const char *name;
	uint64_t value;
	int found;
};

static int
counter_cb(const char *name, uint64_t value, void *arg)
{
	struct counter_find *cf = arg;

	if (strcmp(name, cf->name) == 0) {
		cf->value = value;
		cf->found = 1;
	}
	return 0;
}

int
broker_counter_try(struct ipc_conn *c, const char *name, uint64_t *out)
{
	struct counter_find cf = { name, 0, 0 };

	if (ipc_counters(c, counter_cb, &cf) < 0)
		return -1;
	if (!cf.found)
		return -2;
	*out = cf.value;
	return 0;
}

uint64_t
broker_counter(struct ipc_conn *c, const char *name)
{
	uint64_t v = 0;
	int r = broker_counter_try(c, name, &v);

	if (r == -1)
		fail_msg("ipc_counters: %s", strerror(errno));
	if (r == -2)
		fail_msg("the broker has no counter %s", name);
	return v;
}
