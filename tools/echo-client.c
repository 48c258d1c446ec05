/*
 * echo-client - the lecture's echo client over mysocks.
 *
 *   echo-client HOST PORT
 *   echo-client -u PATH
 *
 * Sends its standard input to the server and copies what comes back to
 * standard output.  At the end of input it closes its write side and
 * keeps reading until the server closes, so nothing in flight is lost.
 *
 * Sending and receiving interleave (poll on both, the socket
 * non-blocking): a client that wrote all its input before reading would
 * deadlock against an echo server once both socket buffers fill.
 */
#include "config.h"

#include "mysocks.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLIENT_BUF 65536

static const char *prog = "echo-client";

static void
client_usage(FILE *f)
{
	fprintf(f,
	    "Usage: %s HOST PORT\n"
	    "       %s -u PATH\n"
	    "Send standard input to an echo server and print what comes "
	    "back.\n"
	    "\n"
	    "  -u, --unix PATH  connect to a UNIX-domain socket\n"
	    "  -h, --help       show this help\n"
	    "\n"
	    "HOST is a name or a numeric IPv4/IPv6 address.  Exits 0 once "
	    "the\nserver has closed the connection after the end of input.\n",
	    prog, prog);
}

/* The copy loop.  Returns 0 when the server closed after our input
 * ended, 1 on an error (already reported). */
static int
client_run(int ch)
{
	static char out[CLIENT_BUF], in[CLIENT_BUF];
	size_t pend_off = 0, pend_len = 0;
	/* open, then at EOF with the write side still open, then shut. */
	enum { IN_OPEN, IN_EOF, IN_SHUT } input = IN_OPEN;

	if (nonblockSocket(ch, 1) < 0) {
		fprintf(stderr, "%s: %s\n", prog, strerror(errno));
		return 1;
	}
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = -1, .events = POLLIN },
			{ .fd = ch, .events = POLLIN },
		};
		int r;

		/* Read more input only when the last chunk is sent. */
		if (input == IN_OPEN && pend_len == 0)
			p[0].fd = STDIN_FILENO;
		if (pend_len > 0)
			p[1].events |= POLLOUT;
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "%s: poll: %s\n", prog,
			    strerror(errno));
			return 1;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			r = readSocket(ch, in, sizeof(in));
			if (r == 0) {
				if (input != IN_SHUT) {
					fprintf(stderr, "%s: server closed "
					    "the connection early\n", prog);
					return 1;
				}
				return 0;
			}
			if (r < 0 && errno != EAGAIN) {
				fprintf(stderr, "%s: read: %s\n", prog,
				    strerror(errno));
				return 1;
			}
			if (r > 0 && writeSocket(STDOUT_FILENO, in, r) != r) {
				fprintf(stderr, "%s: standard output: %s\n",
				    prog, strerror(errno));
				return 1;
			}
		}
		if ((p[1].revents & POLLOUT) && pend_len > 0) {
			r = writeSomeSocket(ch, out + pend_off, (int)pend_len);
			if (r < 0 && errno != EAGAIN) {
				fprintf(stderr, "%s: write: %s\n", prog,
				    strerror(errno));
				return 1;
			}
			if (r > 0) {
				pend_off += (size_t)r;
				pend_len -= (size_t)r;
			}
		}
		if (p[0].fd >= 0 && p[0].revents) {
			r = readSocket(STDIN_FILENO, out, sizeof(out));
			if (r < 0 && errno != EAGAIN) {
				fprintf(stderr, "%s: standard input: %s\n",
				    prog, strerror(errno));
				return 1;
			}
			if (r > 0) {
				pend_off = 0;
				pend_len = (size_t)r;
			}
			if (r == 0)
				input = IN_EOF;
		}
		if (input == IN_EOF && pend_len == 0) {
			if (shutdownSocket(ch) < 0) {
				fprintf(stderr, "%s: shutdown: %s\n", prog,
				    strerror(errno));
				return 1;
			}
			input = IN_SHUT;
		}
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "unix", required_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *unix_path = NULL;
	int c, ch, port = 0, rc;
	char *end;

	while ((c = getopt_long(argc, argv, "u:h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			unix_path = optarg;
			break;
		case 'h':
			client_usage(stdout);
			return 0;
		default:
			client_usage(stderr);
			return 2;
		}
	}
	if (unix_path != NULL ? optind != argc : optind != argc - 2) {
		client_usage(stderr);
		return 2;
	}
	if (unix_path == NULL) {
		errno = 0;
		port = (int)strtol(argv[optind + 1], &end, 10);
		if (errno || *end || end == argv[optind + 1] || port < 1 ||
		    port > 65535) {
			fprintf(stderr, "%s: bad port '%s' (1-65535)\n", prog,
			    argv[optind + 1]);
			return 2;
		}
		ch = connectSocket(argv[optind], port);
	} else {
		ch = connectSocketUnix(unix_path);
	}
	if (ch < 0) {
		if (unix_path != NULL)
			fprintf(stderr, "%s: connect to %s: %s\n", prog,
			    unix_path, strerror(errno));
		else
			fprintf(stderr, "%s: connect to %s port %d: %s\n",
			    prog, argv[optind], port, strerror(errno));
		return 1;
	}
	/* Standard output may be a closed pipe: report EPIPE, don't die. */
	signal(SIGPIPE, SIG_IGN);
	rc = client_run(ch);
	closeSocket(ch);
	return rc;
}
