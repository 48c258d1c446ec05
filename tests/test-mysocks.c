/*
 * mysocks: round trips over TCP (IPv4, IPv6, dual-stack) and UNIX sockets,
 * peer close, a 16 MiB transfer through a tiny send buffer, and every
 * documented error return.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "mysocks.h"
#include "testutil.h"

static int
is_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	return flags >= 0 && (flags & FD_CLOEXEC);
}

/* A connected pair through a listener: client and accepted server side. */
struct pair {
	int se, cl, sv;
};

static void
pair_close(struct pair *p)
{
	if (p->cl >= 0)
		closeSocket(p->cl);
	if (p->sv >= 0)
		closeSocket(p->sv);
	if (p->se >= 0)
		closeSocket(p->se);
	p->cl = p->sv = p->se = -1;
}

/* Send a message each way and check it arrives intact. */
static void
assert_round_trip(int a, int b)
{
	char buf[64];

	assert_int_equal(writeSocket(a, "ping", 4), 4);
	assert_int_equal(readFullSocket(b, buf, 4), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(writeSocket(b, "pong!", 5), 5);
	assert_int_equal(readFullSocket(a, buf, 5), 5);
	assert_memory_equal(buf, "pong!", 5);
}

static void
tcp_pair(struct pair *p, const char *bind_host, const char *conn_host)
{
	int port;

	p->se = serverSocketBind(bind_host, 0);
	assert_true(p->se > 0);
	port = portSocket(p->se);
	assert_true(port > 0);
	p->cl = connectSocket(conn_host, port);
	assert_true(p->cl > 0);
	p->sv = acceptServerSocket(p->se);
	assert_true(p->sv > 0);
}

static void
test_tcp_ipv4_round_trip(void **state)
{
	struct pair p;

	(void)state;
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	assert_true(is_cloexec(p.se));
	assert_true(is_cloexec(p.cl));
	assert_true(is_cloexec(p.sv));
	assert_round_trip(p.cl, p.sv);
	pair_close(&p);
}

static void
test_tcp_ipv6_round_trip(void **state)
{
	struct pair p;
	int fd;

	(void)state;
	fd = serverSocketBind("::1", 0);
	if (fd < 0) {
		print_message("no IPv6 loopback here (%s): skipped\n",
		    strerror(errno));
		skip();
	}
	closeSocket(fd);
	tcp_pair(&p, "::1", "::1");
	assert_round_trip(p.cl, p.sv);
	pair_close(&p);
}

/* serverSocket() listens on every address: an IPv4 client reaches it
 * whether it is an IPv6 dual-stack socket or an IPv4 one. */
static void
test_server_socket_all_addresses(void **state)
{
	struct pair p = { -1, -1, -1 };
	struct addrinfo *ai;
	int port = -1, tries;

	(void)state;
	/* serverSocket() takes a fixed port: borrow a free one from the
	 * kernel.  Another program may grab it in between; try again. */
	for (tries = 0; tries < 20 && p.se < 0; tries++) {
		int probe = serverSocketBind(NULL, 0);

		assert_true(probe > 0);
		port = portSocket(probe);
		closeSocket(probe);
		p.se = serverSocket(port);
		if (p.se < 0)
			assert_int_equal(errno, EADDRINUSE);
	}
	assert_true(p.se > 0);
	assert_int_equal(portSocket(p.se), port);
	p.cl = connectSocket("127.0.0.1", port);
	assert_true(p.cl > 0);
	p.sv = acceptServerSocket(p.se);
	assert_true(p.sv > 0);
	assert_round_trip(p.cl, p.sv);
	closeSocket(p.cl);
	closeSocket(p.sv);
	/* And by name, through getaddrinfo, where the machine has a name
	 * for itself (a bare chroot may have no /etc/hosts). */
	if (getaddrinfo("localhost", NULL, NULL, &ai) == 0) {
		freeaddrinfo(ai);
		p.cl = connectSocket("localhost", port);
		if (p.cl < 0)
			fail_msg("connectSocket localhost %d: %s", port,
			    strerror(errno));
		p.sv = acceptServerSocket(p.se);
		assert_true(p.sv > 0);
		assert_round_trip(p.cl, p.sv);
	} else {
		print_message("'localhost' does not resolve here: "
		    "connecting by name not tried\n");
	}
	pair_close(&p);
}

static void
test_unix_round_trip(void **state)
{
	struct pair p;
	char *dir = test_tmpdir(), path[PATH_MAX];

	(void)state;
	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/s", dir);
	p.se = serverSocketUnix(path);
	assert_true(p.se > 0);
	assert_true(is_cloexec(p.se));
	p.cl = connectSocketUnix(path);
	assert_true(p.cl > 0);
	assert_true(is_cloexec(p.cl));
	p.sv = acceptServerSocket(p.se);
	assert_true(p.sv > 0);
	assert_round_trip(p.cl, p.sv);
	pair_close(&p);
	test_rmtree(dir);
}

static void
test_read_returns_zero_on_peer_close(void **state)
{
	struct pair p;
	char buf[16];

	(void)state;
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	/* Bytes sent before the close are still read first. */
	assert_int_equal(writeSocket(p.cl, "last", 4), 4);
	assert_int_equal(closeSocket(p.cl), 0);
	p.cl = -1;
	assert_int_equal(readFullSocket(p.sv, buf, 4), 4);
	assert_int_equal(readSocket(p.sv, buf, sizeof(buf)), 0);
	assert_int_equal(readFullSocket(p.sv, buf, 4), 0);
	pair_close(&p);
}

static void
test_shutdown_half_closes(void **state)
{
	struct pair p;
	char buf[16];

	(void)state;
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	assert_int_equal(shutdownSocket(p.cl), 0);
	assert_int_equal(readSocket(p.sv, buf, sizeof(buf)), 0);
	/* The other direction still works. */
	assert_int_equal(writeSocket(p.sv, "late", 4), 4);
	assert_int_equal(readFullSocket(p.cl, buf, 4), 4);
	assert_memory_equal(buf, "late", 4);
	pair_close(&p);
}

static void
test_read_full_reports_truncation(void **state)
{
	struct pair p;
	char buf[16];

	(void)state;
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	assert_int_equal(writeSocket(p.cl, "abc", 3), 3);
	closeSocket(p.cl);
	p.cl = -1;
	assert_int_equal(readFullSocket(p.sv, buf, 8), -1);
	assert_int_equal(errno, ECONNRESET);
	pair_close(&p);
}

#define BIG_LEN (16 << 20)

struct reader {
	int fd;
	size_t got;
	int intact;
};

static unsigned char
pattern_byte(size_t i)
{
	return (unsigned char)((i * 2654435761u) >> 13);
}

static void *
reader_main(void *arg)
{
	struct reader *r = arg;
	static unsigned char buf[7777];	/* odd size: unaligned reads */
	int n;

	r->intact = 1;
	while ((n = readSocket(r->fd, buf, sizeof(buf))) > 0) {
		for (int i = 0; i < n; i++)
			if (buf[i] != pattern_byte(r->got + (size_t)i))
				r->intact = 0;
		r->got += (size_t)n;
	}
	return NULL;
}

/* 16 MiB through a 4 KiB send buffer: the kernel takes it in many short
 * writes, which writeSocket() must stitch together.  nonblock also makes
 * it wait through EAGAIN. */
static void
big_transfer(int nonblock)
{
	struct pair p;
	struct reader r = { 0 };
	pthread_t t;
	unsigned char *data;
	int small = 4096;

	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	assert_int_equal(setsockopt(p.cl, SOL_SOCKET, SO_SNDBUF, &small,
	    sizeof(small)), 0);
	if (nonblock)
		assert_int_equal(nonblockSocket(p.cl, 1), 0);
	data = malloc(BIG_LEN);
	assert_non_null(data);
	for (size_t i = 0; i < BIG_LEN; i++)
		data[i] = pattern_byte(i);
	r.fd = p.sv;
	assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
	assert_int_equal(writeSocket(p.cl, data, BIG_LEN), BIG_LEN);
	assert_int_equal(shutdownSocket(p.cl), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(r.got, BIG_LEN);
	assert_true(r.intact);
	free(data);
	pair_close(&p);
}

static void
test_16mib_transfer_intact_small_sndbuf(void **state)
{
	(void)state;
	big_transfer(0);
}

static void
test_16mib_transfer_intact_nonblocking(void **state)
{
	(void)state;
	big_transfer(1);
}

static void
test_write_some_returns_eagain_when_full(void **state)
{
	struct pair p;
	static char chunk[65536];
	long total = 0;
	int r;

	(void)state;
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	assert_int_equal(nonblockSocket(p.cl, 1), 0);
	/* Nobody reads: the buffers fill and then EAGAIN, never a block. */
	while ((r = writeSomeSocket(p.cl, chunk, sizeof(chunk))) > 0)
		total += r;
	assert_int_equal(r, -1);
	assert_int_equal(errno, EAGAIN);
	assert_true(total > 0);
	assert_int_equal(writeSomeSocket(p.cl, chunk, 0), 0);
	pair_close(&p);
}

static void
test_write_to_closed_peer_is_epipe_not_sigpipe(void **state)
{
	struct pair p;
	static char chunk[65536];
	int r, i;

	(void)state;
	/* test_init() restored SIGPIPE's default: a raised one kills us. */
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	closeSocket(p.sv);
	p.sv = -1;
	/* The first write may land before the RST comes back. */
	for (i = 0; i < 100; i++)
		if ((r = writeSocket(p.cl, chunk, sizeof(chunk))) < 0)
			break;
	assert_int_equal(r, -1);
	assert_true(errno == EPIPE || errno == ECONNRESET);
	pair_close(&p);
}

static void
test_write_to_closed_pipe_is_epipe_not_sigpipe(void **state)
{
	int fds[2];

	(void)state;
	assert_int_equal(pipe(fds), 0);
	close(fds[0]);
	assert_int_equal(writeSocket(fds[1], "x", 1), -1);
	assert_int_equal(errno, EPIPE);
	close(fds[1]);
}

static void
test_read_nonblocking_empty_is_eagain(void **state)
{
	struct pair p;
	char buf[8];

	(void)state;
	tcp_pair(&p, "127.0.0.1", "127.0.0.1");
	assert_int_equal(nonblockSocket(p.sv, 1), 0);
	assert_int_equal(readSocket(p.sv, buf, sizeof(buf)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(nonblockSocket(p.sv, 0), 0);
	assert_int_equal(fcntl(p.sv, F_GETFL) & O_NONBLOCK, 0);
	pair_close(&p);
}

static void
test_accept_nonblocking_none_pending_is_eagain(void **state)
{
	int se = serverSocketBind("127.0.0.1", 0);

	(void)state;
	assert_true(se > 0);
	assert_int_equal(nonblockSocket(se, 1), 0);
	assert_int_equal(acceptServerSocket(se), -1);
	assert_int_equal(errno, EAGAIN);
	closeSocket(se);
}

static void
test_bad_ports_are_einval(void **state)
{
	(void)state;
	int ports[] = { 0, -1, 65536, INT_MIN, INT_MAX };

	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		errno = 0;
		assert_int_equal(serverSocket(ports[i]), -1);
		assert_int_equal(errno, EINVAL);
		errno = 0;
		assert_int_equal(connectSocket("127.0.0.1", ports[i]), -1);
		assert_int_equal(errno, EINVAL);
		if (ports[i] != 0) {
			errno = 0;
			assert_int_equal(serverSocketBind(NULL, ports[i]), -1);
			assert_int_equal(errno, EINVAL);
		}
	}
}

static void
test_null_and_empty_arguments_are_einval(void **state)
{
	char buf[4];
	int fds[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	errno = 0;
	assert_int_equal(connectSocket(NULL, 80), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(connectSocket("", 80), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(serverSocketBind("", 0), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(serverSocketUnix(NULL), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(serverSocketUnix(""), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(connectSocketUnix(NULL), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(writeSocket(fds[0], NULL, 4), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(writeSocket(fds[0], buf, -1), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(writeSomeSocket(fds[0], buf, -5), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(readSocket(fds[0], NULL, 4), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(readSocket(fds[0], buf, -1), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(readSocket(fds[0], buf, 0), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(readFullSocket(fds[0], buf, -1), -1);
	assert_int_equal(errno, EINVAL);
	/* Writing nothing is not an error. */
	assert_int_equal(writeSocket(fds[0], NULL, 0), 0);
	close(fds[0]);
	close(fds[1]);
}

static void
test_unix_path_too_long_is_einval(void **state)
{
	struct sockaddr_un sun;
	char path[sizeof(sun.sun_path) + 8];

	(void)state;
	/* Exactly sun_path bytes leaves no room for the NUL. */
	memset(path, 'a', sizeof(sun.sun_path));
	path[0] = '/';
	path[sizeof(sun.sun_path)] = '\0';
	errno = 0;
	assert_int_equal(serverSocketUnix(path), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(connectSocketUnix(path), -1);
	assert_int_equal(errno, EINVAL);
}

static void
test_closed_descriptor_is_ebadf(void **state)
{
	char buf[4];
	int fds[2], closed;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	close(fds[1]);
	closed = fds[0];
	assert_int_equal(closeSocket(closed), 0);
	/* closed is no longer open: every call must say EBADF. */
	errno = 0;
	assert_int_equal(writeSocket(closed, "x", 1), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(readSocket(closed, buf, 1), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(acceptServerSocket(closed), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(closeSocket(closed), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(shutdownSocket(closed), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(nonblockSocket(closed, 1), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(portSocket(closed), -1);
	assert_int_equal(errno, EBADF);
	/* And negative ones, without a system call. */
	errno = 0;
	assert_int_equal(writeSocket(-1, "x", 1), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(readSocket(-1, buf, 1), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(closeSocket(-1), -1);
	assert_int_equal(errno, EBADF);
	errno = 0;
	assert_int_equal(acceptServerSocket(-1), -1);
	assert_int_equal(errno, EBADF);
}

static void
test_connect_refused(void **state)
{
	int se, port;

	(void)state;
	/* A port that was just free and nobody listens on now. */
	se = serverSocketBind("127.0.0.1", 0);
	assert_true(se > 0);
	port = portSocket(se);
	closeSocket(se);
	errno = 0;
	assert_int_equal(connectSocket("127.0.0.1", port), -1);
	assert_int_equal(errno, ECONNREFUSED);
}

static void
test_unix_connect_errors(void **state)
{
	char *dir = test_tmpdir(), path[PATH_MAX];
	int fd;

	(void)state;
	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/none", dir);
	errno = 0;
	assert_int_equal(connectSocketUnix(path), -1);
	assert_int_equal(errno, ENOENT);
	/* A socket file nobody listens on. */
	snprintf(path, sizeof(path), "%s/stale", dir);
	fd = serverSocketUnix(path);
	assert_true(fd > 0);
	closeSocket(fd);
	errno = 0;
	assert_int_equal(connectSocketUnix(path), -1);
	assert_int_equal(errno, ECONNREFUSED);
	test_rmtree(dir);
}

static void
test_unix_server_replaces_stale_socket(void **state)
{
	char *dir = test_tmpdir(), path[PATH_MAX];
	struct pair p;

	(void)state;
	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/s", dir);
	/* A server that went away without removing its socket file. */
	p.se = serverSocketUnix(path);
	assert_true(p.se > 0);
	closeSocket(p.se);
	p.se = serverSocketUnix(path);
	assert_true(p.se > 0);
	p.cl = connectSocketUnix(path);
	assert_true(p.cl > 0);
	p.sv = acceptServerSocket(p.se);
	assert_true(p.sv > 0);
	assert_round_trip(p.cl, p.sv);
	pair_close(&p);
	test_rmtree(dir);
}

static void
test_unix_server_never_steals_live_socket(void **state)
{
	char *dir = test_tmpdir(), path[PATH_MAX], buf[8];
	struct pair p;

	(void)state;
	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/s", dir);
	p.se = serverSocketUnix(path);
	assert_true(p.se > 0);
	errno = 0;
	assert_int_equal(serverSocketUnix(path), -1);
	assert_int_equal(errno, EADDRINUSE);
	/* The liveness probe was a connection that closed at once: the
	 * live server sees it as a client leaving without a word. */
	p.sv = acceptServerSocket(p.se);
	assert_true(p.sv > 0);
	assert_int_equal(readSocket(p.sv, buf, sizeof(buf)), 0);
	closeSocket(p.sv);
	/* The first server still owns the path. */
	p.cl = connectSocketUnix(path);
	assert_true(p.cl > 0);
	p.sv = acceptServerSocket(p.se);
	assert_true(p.sv > 0);
	assert_round_trip(p.cl, p.sv);
	pair_close(&p);
	test_rmtree(dir);
}

static void
test_unix_server_never_replaces_regular_file(void **state)
{
	char *dir = test_tmpdir(), path[PATH_MAX];
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/file", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	errno = 0;
	assert_int_equal(serverSocketUnix(path), -1);
	assert_int_equal(errno, EADDRINUSE);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	test_rmtree(dir);
}

static void
test_tcp_port_in_use(void **state)
{
	int a, b;

	(void)state;
	a = serverSocketBind("127.0.0.1", 0);
	assert_true(a > 0);
	errno = 0;
	b = serverSocketBind("127.0.0.1", portSocket(a));
	assert_int_equal(b, -1);
	assert_int_equal(errno, EADDRINUSE);
	closeSocket(a);
}

static void
test_port_of_unix_socket_is_einval(void **state)
{
	int fds[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	errno = 0;
	assert_int_equal(portSocket(fds[0]), -1);
	assert_int_equal(errno, EINVAL);
	close(fds[0]);
	close(fds[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tcp_ipv4_round_trip),
		cmocka_unit_test(test_tcp_ipv6_round_trip),
		cmocka_unit_test(test_server_socket_all_addresses),
		cmocka_unit_test(test_unix_round_trip),
		cmocka_unit_test(test_read_returns_zero_on_peer_close),
		cmocka_unit_test(test_shutdown_half_closes),
		cmocka_unit_test(test_read_full_reports_truncation),
		cmocka_unit_test(test_16mib_transfer_intact_small_sndbuf),
		cmocka_unit_test(test_16mib_transfer_intact_nonblocking),
		cmocka_unit_test(test_write_some_returns_eagain_when_full),
		cmocka_unit_test(test_write_to_closed_peer_is_epipe_not_sigpipe),
		cmocka_unit_test(test_write_to_closed_pipe_is_epipe_not_sigpipe),
		cmocka_unit_test(test_read_nonblocking_empty_is_eagain),
		cmocka_unit_test(test_accept_nonblocking_none_pending_is_eagain),
		cmocka_unit_test(test_bad_ports_are_einval),
		cmocka_unit_test(test_null_and_empty_arguments_are_einval),
		cmocka_unit_test(test_unix_path_too_long_is_einval),
		cmocka_unit_test(test_closed_descriptor_is_ebadf),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_unix_connect_errors),
		cmocka_unit_test(test_unix_server_replaces_stale_socket),
		cmocka_unit_test(test_unix_server_never_steals_live_socket),
		cmocka_unit_test(test_unix_server_never_replaces_regular_file),
		cmocka_unit_test(test_tcp_port_in_use),
		cmocka_unit_test(test_port_of_unix_socket_is_einval),
	};

	test_init(300);
	return cmocka_run_group_tests_name("mysocks", tests, NULL, NULL);
}
