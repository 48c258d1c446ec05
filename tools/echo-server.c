/*
 * echo-server - the lecture's echo servers over mysocks.
 *
 *   echo-server PORT          iterative: one client at a time
 *   echo-server --fork PORT   concurrent: one process per client
 *
 * Everything a client sends comes back byte for byte; the connection is
 * closed when the client closes its side.  The server prints one ready
 * line on standard output once it accepts connections, and logs to
 * standard error.  SIGTERM or SIGINT stops it cleanly.
 */
#include "config.h"

#include "mysocks.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define ECHO_BUF 65536

static const char *prog = "echo-server";

/* Signals reach the loop through this pipe, so that poll() sees them
 * without races (the self-pipe trick). */
static int sig_pipe[2] = { -1, -1 };
static volatile sig_atomic_t stop_requested;
static int verbose;
static pid_t server_pid;

static void
echo_usage(FILE *f)
{
	fprintf(f,
	    "Usage: %s [OPTIONS] PORT\n"
	    "       %s [OPTIONS] -u PATH\n"
	    "Echo every byte a client sends back to it, until it closes.\n"
	    "\n"
	    "  -f, --fork       serve each client in its own process "
	    "(concurrent);\n"
	    "                   without it, one client at a time "
	    "(iterative)\n"
	    "  -b, --bind ADDR  listen on ADDR only (default: every "
	    "address)\n"
	    "  -u, --unix PATH  listen on a UNIX-domain socket instead of "
	    "TCP\n"
	    "  -v, --verbose    log every connection\n"
	    "  -h, --help       show this help\n"
	    "\n"
	    "PORT 0 picks a free port.  Once listening, the server prints\n"
	    "'%s: listening on port N' (or 'on PATH') on standard output.\n"
	    "With --fork it logs 'child PID exited' as it reaps each child.\n",
	    prog, prog, prog);
}

static void
echo_on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (sig != SIGCHLD)
		stop_requested = 1;
	if (write(sig_pipe[1], &c, 1) < 0) {
		/* Pipe full: a wake-up is already pending. */
	}
	errno = saved;
}

static int
echo_setup_signals(void)
{
	struct sigaction sa;

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = echo_on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL) < 0 ||
	    sigaction(SIGTERM, &sa, NULL) < 0 ||
	    sigaction(SIGINT, &sa, NULL) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static void
echo_drain_signals(void)
{
	char buf[64];

	while (read(sig_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* Reap every child that has exited, so none stays a zombie. */
static void
echo_reap(void)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (WIFEXITED(status))
			fprintf(stderr, "%s: child %ld exited, status %d\n",
			    prog, (long)pid, WEXITSTATUS(status));
		else if (WIFSIGNALED(status))
			fprintf(stderr, "%s: child %ld exited, signal %d\n",
			    prog, (long)pid, WTERMSIG(status));
	}
}

/* Wait until fd is readable or a signal arrives.  1 readable, 0 signal,
 * -1 error. */
static int
echo_wait(int fd)
{
	struct pollfd p[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = sig_pipe[0], .events = POLLIN },
	};

	for (;;) {
		if (stop_requested)
			return 0;
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (p[1].revents) {
			echo_drain_signals();
			return 0;
		}
		if (p[0].revents)
			return 1;
	}
}

/* Echo on ch until the client closes.  Returns 0 when it did, -1 on an
 * error or a stop request. */
static int
echo_serve(int ch)
{
	static char buf[ECHO_BUF];

	for (;;) {
		int r = echo_wait(ch);

		if (r <= 0)
			return -1;
		r = readSocket(ch, buf, sizeof(buf));
		if (r == 0)
			return 0;
		if (r < 0) {
			fprintf(stderr, "%s: read: %s\n", prog,
			    strerror(errno));
			return -1;
		}
		if (writeSocket(ch, buf, r) != r) {
			fprintf(stderr, "%s: write: %s\n", prog,
			    strerror(errno));
			return -1;
		}
	}
}

static void
echo_child(int se, int ch)
{
	struct sigaction sa;
	int r;

	closeSocket(se);
	/* The child stops like any process on SIGTERM, and gets one when
	 * the server goes away, so no child outlives it. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	close(sig_pipe[0]);
	close(sig_pipe[1]);
	sig_pipe[0] = sig_pipe[1] = -1;	/* poll() skips it */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != server_pid)
		_exit(1);
	r = echo_serve(ch);
	closeSocket(ch);
	_exit(r == 0 ? 0 : 1);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "fork", no_argument, NULL, 'f' },
		{ "bind", required_argument, NULL, 'b' },
		{ "unix", required_argument, NULL, 'u' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *bind_addr = NULL, *unix_path = NULL;
	int use_fork = 0, se, c, port = 0, rc = 0;
	char *end;

	while ((c = getopt_long(argc, argv, "fb:u:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			use_fork = 1;
			break;
		case 'b':
			bind_addr = optarg;
			break;
		case 'u':
			unix_path = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'h':
			echo_usage(stdout);
			return 0;
		default:
			echo_usage(stderr);
			return 2;
		}
	}
	if (unix_path == NULL) {
		if (optind != argc - 1) {
			echo_usage(stderr);
			return 2;
		}
		errno = 0;
		port = (int)strtol(argv[optind], &end, 10);
		if (errno || *end || end == argv[optind] || port < 0 ||
		    port > 65535) {
			fprintf(stderr, "%s: bad port '%s' (0-65535)\n", prog,
			    argv[optind]);
			return 2;
		}
	} else if (optind != argc || bind_addr != NULL) {
		echo_usage(stderr);
		return 2;
	}

	server_pid = getpid();
	if (echo_setup_signals() < 0) {
		fprintf(stderr, "%s: signals: %s\n", prog, strerror(errno));
		return 1;
	}
	if (unix_path != NULL)
		se = serverSocketUnix(unix_path);
	else
		se = serverSocketBind(bind_addr, port);
	if (se < 0) {
		fprintf(stderr, "%s: listen on %s: %s\n", prog,
		    unix_path ? unix_path : argv[optind], strerror(errno));
		return 1;
	}
	if (unix_path != NULL)
		printf("%s: listening on %s\n", prog, unix_path);
	else
		printf("%s: listening on port %d\n", prog, portSocket(se));
	fflush(stdout);

	while (!stop_requested) {
		int ch, r;
		pid_t pid;

		r = echo_wait(se);
		if (use_fork)
			echo_reap();
		if (r < 0) {
			fprintf(stderr, "%s: poll: %s\n", prog,
			    strerror(errno));
			rc = 1;
			break;
		}
		if (r == 0)
			continue;
		if ((ch = acceptServerSocket(se)) < 0) {
			/* Out of descriptors or memory: say so, keep
			 * serving the clients we have. */
			fprintf(stderr, "%s: accept: %s\n", prog,
			    strerror(errno));
			continue;
		}
		if (verbose)
			fprintf(stderr, "%s: client connected\n", prog);
		if (!use_fork) {
			echo_serve(ch);
			closeSocket(ch);
			if (verbose)
				fprintf(stderr, "%s: client done\n", prog);
			continue;
		}
		fflush(stderr);
		pid = fork();
		if (pid == 0)
			echo_child(se, ch);
		if (pid < 0)
			fprintf(stderr, "%s: fork: %s\n", prog,
			    strerror(errno));
		else if (verbose)
			fprintf(stderr, "%s: child %ld serves the client\n",
			    prog, (long)pid);
		closeSocket(ch);
	}

	closeSocket(se);
	if (unix_path != NULL)
		unlink(unix_path);
	if (verbose)
		fprintf(stderr, "%s: stopped\n", prog);
	return rc;
}
