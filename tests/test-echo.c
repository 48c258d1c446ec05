/*
 * The classic examples as real processes: tools/echo-server (iterative and
 * --fork) and tools/echo-client, each started on a private port or socket
 * path, synchronised on the server's ready line and on round trips.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mysocks.h"
#include "testutil.h"

#define FORK_CLIENTS 50

struct server {
	struct test_proc proc;
	int port;
	char *dir;		/* for a UNIX socket */
	char path[PATH_MAX];
};

/* Start echo-server with the given mode on 127.0.0.1, port 0, and wait for
 * its ready line. */
static void
server_start_tcp(struct server *s, int use_fork)
{
	char line[256];
	char *argv[6];
	int i = 0;

	memset(s, 0, sizeof(*s));
	argv[i++] = strdup(test_build_path("tools/echo-server"));
	if (use_fork)
		argv[i++] = "--fork";
	argv[i++] = "--bind";
	argv[i++] = "127.0.0.1";
	argv[i++] = "0";
	argv[i] = NULL;
	assert_int_equal(test_spawn(&s->proc, argv), 0);
	free(argv[0]);
	assert_int_equal(test_wait_line(s->proc.out,
	    "echo-server: listening on port ", line, sizeof(line),
	    TEST_WAIT_MS), 0);
	s->port = atoi(line);
	assert_true(s->port > 0);
}

static void
server_start_unix(struct server *s, int use_fork)
{
	char line[PATH_MAX + 64];
	char *argv[5];
	int i = 0;

	memset(s, 0, sizeof(*s));
	s->dir = test_tmpdir();
	assert_non_null(s->dir);
	snprintf(s->path, sizeof(s->path), "%s/echo.sock", s->dir);
	argv[i++] = strdup(test_build_path("tools/echo-server"));
	if (use_fork)
		argv[i++] = "--fork";
	argv[i++] = "-u";
	argv[i++] = s->path;
	argv[i] = NULL;
	assert_int_equal(test_spawn(&s->proc, argv), 0);
	free(argv[0]);
	assert_int_equal(test_wait_line(s->proc.out,
	    "echo-server: listening on ", line, sizeof(line), TEST_WAIT_MS),
	    0);
	assert_string_equal(line, s->path);
}

static int
server_stop(struct server *s)
{
	int status = test_stop(&s->proc);

	test_rmtree(s->dir);
	s->dir = NULL;
	return status;
}

static int
client_connect(const struct server *s)
{
	int fd = s->dir ? connectSocketUnix(s->path) :
	    connectSocket("127.0.0.1", s->port);

	assert_true(fd > 0);
	return fd;
}

static void
assert_echo(int fd, const char *msg)
{
	char buf[256];
	int len = (int)strlen(msg);

	assert_int_equal(writeSocket(fd, msg, len), len);
	assert_int_equal(test_wait_readable(fd, TEST_WAIT_MS), 1);
	assert_int_equal(readFullSocket(fd, buf, len), len);
	assert_memory_equal(buf, msg, len);
}

/* Closing our side ends the session: the server closes its side too. */
static void
assert_closed_by_server(int fd)
{
	char c;

	assert_int_equal(shutdownSocket(fd), 0);
	assert_int_equal(test_wait_readable(fd, TEST_WAIT_MS), 1);
	assert_int_equal(readSocket(fd, &c, 1), 0);
}

/* Children of pid, as seen in /proc (zombies included). */
static int
count_children(pid_t pid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[512], *p;
		FILE *f;
		long ppid;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;	/* gone meanwhile */
		if (fgets(buf, sizeof(buf), f) != NULL &&
		    (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 1, " %*c %ld", &ppid) == 1 && ppid == pid)
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

/* Wait for n "child PID exited, status 0" lines on the server's stderr. */
static void
wait_reaped(struct server *s, int n)
{
	char line[256];

	for (int i = 0; i < n; i++) {
		assert_int_equal(test_wait_line(s->proc.err,
		    "echo-server: child ", line, sizeof(line), TEST_WAIT_MS),
		    0);
		if (strstr(line, "exited, status 0") == NULL)
			fail_msg("server said: %s", line);
	}
}

static void
test_iterative_echoes_and_closes(void **state)
{
	struct server s;
	int fd;

	(void)state;
	server_start_tcp(&s, 0);
	fd = client_connect(&s);
	assert_echo(fd, "hello");
	assert_echo(fd, "world, again");
	assert_closed_by_server(fd);
	closeSocket(fd);
	assert_int_equal(server_stop(&s), 0);
}

/* One client at a time: a second client waits until the first leaves,
 * then is served in full. */
static void
test_iterative_serves_one_client_at_a_time(void **state)
{
	struct server s;
	char buf[16];
	int a, b;

	(void)state;
	server_start_tcp(&s, 0);
	a = client_connect(&s);
	assert_echo(a, "first");	/* the server is now busy with a */
	b = client_connect(&s);
	assert_int_equal(writeSocket(b, "second", 6), 6);
	assert_echo(a, "still first");
	/* a's round trip completed after b wrote, and the server has not
	 * left a's loop, so b cannot have an answer yet. */
	assert_int_equal(test_wait_readable(b, 0), 0);
	assert_closed_by_server(a);
	closeSocket(a);
	assert_int_equal(test_wait_readable(b, TEST_WAIT_MS), 1);
	assert_int_equal(readFullSocket(b, buf, 6), 6);
	assert_memory_equal(buf, "second", 6);
	assert_closed_by_server(b);
	closeSocket(b);
	assert_int_equal(server_stop(&s), 0);
}

/* The concurrent server: 50 clients connected and talking at once, while
 * one client that never sends holds a connection open. */
static void
test_fork_serves_50_clients_at_once(void **state)
{
	struct server s;
	int fds[FORK_CLIENTS], idle;
	char msg[64], buf[64];

	(void)state;
	server_start_tcp(&s, 1);
	idle = client_connect(&s);
	for (int i = 0; i < FORK_CLIENTS; i++)
		fds[i] = client_connect(&s);
	/* Everyone sends before anyone reads: only concurrent service
	 * answers all of them. */
	for (int i = 0; i < FORK_CLIENTS; i++) {
		int len = snprintf(msg, sizeof(msg), "client %d says hi", i);

		assert_int_equal(writeSocket(fds[i], msg, len), len);
	}
	for (int i = FORK_CLIENTS - 1; i >= 0; i--) {
		int len = snprintf(msg, sizeof(msg), "client %d says hi", i);

		assert_int_equal(test_wait_readable(fds[i], TEST_WAIT_MS), 1);
		assert_int_equal(readFullSocket(fds[i], buf, len), len);
		assert_memory_equal(buf, msg, len);
	}
	for (int i = 0; i < FORK_CLIENTS; i++) {
		assert_closed_by_server(fds[i]);
		closeSocket(fds[i]);
	}
	wait_reaped(&s, FORK_CLIENTS);
	/* Only the idle client's child is left, and it is no zombie. */
	assert_int_equal(count_children(s.proc.pid), 1);
	assert_closed_by_server(idle);
	closeSocket(idle);
	wait_reaped(&s, 1);
	assert_int_equal(count_children(s.proc.pid), 0);
	assert_int_equal(server_stop(&s), 0);
}

static void
test_fork_idle_client_does_not_hold_up_others(void **state)
{
	struct server s;
	char buf[8];
	int idle, fd;

	(void)state;
	server_start_tcp(&s, 1);
	idle = client_connect(&s);
	assert_int_equal(writeSocket(idle, "partial", 7), 7);
	/* idle never reads nor closes: the next client is served anyway. */
	fd = client_connect(&s);
	assert_echo(fd, "not blocked");
	assert_closed_by_server(fd);
	closeSocket(fd);
	wait_reaped(&s, 1);
	/* Its child was there all along: the echo is waiting. */
	assert_int_equal(test_wait_readable(idle, TEST_WAIT_MS), 1);
	assert_int_equal(readFullSocket(idle, buf, 7), 7);
	assert_memory_equal(buf, "partial", 7);
	assert_closed_by_server(idle);
	closeSocket(idle);
	wait_reaped(&s, 1);
	assert_int_equal(server_stop(&s), 0);
}

static void
test_unix_servers_echo_and_remove_socket_on_sigterm(void **state)
{
	struct server s;
	struct stat st;
	char path[PATH_MAX];
	int fd, status;

	(void)state;
	for (int use_fork = 0; use_fork <= 1; use_fork++) {
		server_start_unix(&s, use_fork);
		fd = client_connect(&s);
		assert_echo(fd, "over a UNIX socket");
		assert_closed_by_server(fd);
		closeSocket(fd);
		snprintf(path, sizeof(path), "%s", s.path);
		status = test_stop(&s.proc);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
		errno = 0;
		assert_int_equal(lstat(path, &st), -1);
		assert_int_equal(errno, ENOENT);
		server_stop(&s);
	}
}

struct feeder {
	int fd;
	const unsigned char *data;
	size_t len;
	int ok;
};

static void *
feeder_main(void *arg)
{
	struct feeder *f = arg;

	f->ok = writeSocket(f->fd, f->data, (int)f->len) == (int)f->len;
	close(f->fd);
	f->fd = -1;
	return NULL;
}

/* echo-client sends standard input and prints the echo: 1 MiB of binary
 * data (more than the socket buffers hold, so reading and writing must
 * interleave) comes back byte for byte. */
static void
echo_client_through(struct server *s)
{
	struct test_proc c;
	struct feeder f;
	pthread_t t;
	char port[16];
	char *argv[4];
	size_t len = 1 << 20, got = 0;
	unsigned char *data = malloc(len), *back = malloc(len + 1);
	int status;

	assert_non_null(data);
	assert_non_null(back);
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 7 + (i >> 9));
	argv[0] = strdup(test_build_path("tools/echo-client"));
	if (s->dir) {
		argv[1] = "-u";
		argv[2] = s->path;
	} else {
		snprintf(port, sizeof(port), "%d", s->port);
		argv[1] = "127.0.0.1";
		argv[2] = port;
	}
	argv[3] = NULL;
	assert_int_equal(test_spawn(&c, argv), 0);
	free(argv[0]);
	f = (struct feeder){ .fd = c.in, .data = data, .len = len };
	c.in = -1;
	assert_int_equal(pthread_create(&t, NULL, feeder_main, &f), 0);
	for (;;) {
		ssize_t r;

		assert_int_equal(test_wait_readable(c.out, TEST_WAIT_MS), 1);
		r = read(c.out, back + got, len + 1 - got);
		assert_true(r >= 0);
		if (r == 0)
			break;
		got += (size_t)r;
		assert_true(got <= len);
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(f.ok);
	assert_int_equal(got, len);
	assert_memory_equal(back, data, len);
	status = test_stop(&c);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	free(data);
	free(back);
}

static void
test_echo_client_round_trips_1mib_tcp(void **state)
{
	struct server s;

	(void)state;
	server_start_tcp(&s, 1);
	echo_client_through(&s);
	assert_int_equal(server_stop(&s), 0);
}

static void
test_echo_client_round_trips_1mib_unix(void **state)
{
	struct server s;

	(void)state;
	server_start_unix(&s, 0);
	echo_client_through(&s);
	assert_int_equal(server_stop(&s), 0);
}

/* Run a tool to completion; returns its exit code, stdout's first line in
 * out. */
static int
run_tool(char *const argv[], char *out, size_t size)
{
	struct test_proc p;
	int status;

	assert_int_equal(test_spawn(&p, argv), 0);
	close(p.in);
	p.in = -1;
	out[0] = '\0';
	test_read_line(p.out, out, size, TEST_WAIT_MS);
	/* Wait for its own exit: test_stop's SIGTERM comes after. */
	assert_int_equal(test_wait_readable(p.err, TEST_WAIT_MS), 1);
	while (test_read_line(p.err, (char[256]){ 0 }, 256, TEST_WAIT_MS) >= 0)
		;
	status = test_stop(&p);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void
test_tools_help_and_usage_errors(void **state)
{
	char server[PATH_MAX], client[PATH_MAX], out[512];

	(void)state;
	snprintf(server, sizeof(server), "%s",
	    test_build_path("tools/echo-server"));
	snprintf(client, sizeof(client), "%s",
	    test_build_path("tools/echo-client"));
	assert_int_equal(run_tool((char *[]){ server, "--help", NULL }, out,
	    sizeof(out)), 0);
	assert_non_null(strstr(out, "Usage:"));
	assert_int_equal(run_tool((char *[]){ client, "--help", NULL }, out,
	    sizeof(out)), 0);
	assert_non_null(strstr(out, "Usage:"));
	assert_int_equal(run_tool((char *[]){ server, "70000", NULL }, out,
	    sizeof(out)), 2);
	assert_int_equal(run_tool((char *[]){ server, NULL }, out,
	    sizeof(out)), 2);
	assert_int_equal(run_tool((char *[]){ client, "localhost", "0",
	    NULL }, out, sizeof(out)), 2);
	assert_int_equal(run_tool((char *[]){ client, "-u",
	    "/nonexistent/echo.sock", NULL }, out, sizeof(out)), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iterative_echoes_and_closes),
		cmocka_unit_test(test_iterative_serves_one_client_at_a_time),
		cmocka_unit_test(test_fork_serves_50_clients_at_once),
		cmocka_unit_test(test_fork_idle_client_does_not_hold_up_others),
		cmocka_unit_test(
		    test_unix_servers_echo_and_remove_socket_on_sigterm),
		cmocka_unit_test(test_echo_client_round_trips_1mib_tcp),
		cmocka_unit_test(test_echo_client_round_trips_1mib_unix),
		cmocka_unit_test(test_tools_help_and_usage_errors),
	};

	test_init(300);
	return cmocka_run_group_tests_name("echo", tests, NULL, NULL);
}
