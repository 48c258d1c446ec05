/*
 * workers - direct messages, the lecture's send(P, m) / receive(Q, m):
 * a parent forks worker processes, sends each its work addressed to its
 * pid, and collects the answers with selective receive, worker by worker
 * in a fixed order, whatever order they arrive in.
 *
 * The first worker gets the largest job, so its answer comes last; the
 * parent still prints it first.  A send to a worker that has not
 * connected yet waits (within ipcd's --direct-wait) until it has.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc.h"

static const char *prog = "workers";

struct job {
	uint32_t n;		/* find the n-th prime */
};

struct answer {
	uint32_t n;
	uint32_t prime;
};

static void
wk_usage(FILE *f)
{
	fprintf(f,
	    "Usage: %s [-s SOCKET] [-w WORKERS] [-n SIZE]\n"
	    "Fork WORKERS processes (default 4), send each a job by pid, "
	    "and collect\nthe answers by selective receive in worker order. "
	    "Worker i finds the\n(SIZE/(i+1))-th prime (SIZE default 20000), "
	    "so the first finishes last.\n"
	    "\n"
	    "  -s, --socket PATH  the broker's socket (default: as "
	    "ipc_open(NULL))\n"
	    "  -h, --help         show this help\n", prog);
}

static uint32_t
wk_nth_prime(uint32_t n)
{
	uint32_t count = 0, p;

	for (p = 2;; p++) {
		int prime = 1;

		for (uint32_t d = 2; d * d <= p; d++)
			if (p % d == 0) {
				prime = 0;
				break;
			}
		if (prime && ++count == n)
			return p;
	}
}

/* A worker: one job from its direct queue, the answer to whoever sent
 * it. */
static int
wk_worker(const char *where)
{
	struct ipc_conn *c = ipc_open(where);
	struct ipc_msg_info info;
	struct answer a = { 0 };
	struct job j;

	if (c == NULL) {
		fprintf(stderr, "%s: worker %d: %s\n", prog, (int)getpid(),
		    strerror(errno));
		return 1;
	}
	if (ipc_recv(c, NULL, &j, sizeof(j), &info) != (ssize_t)sizeof(j)) {
		fprintf(stderr, "%s: worker %d: recv: %s\n", prog,
		    (int)getpid(), strerror(errno));
		ipc_close(c);
		return 1;
	}
	a.n = j.n;
	a.prime = wk_nth_prime(j.n);
	if (ipc_send(c, info.sender, &a, sizeof(a)) < 0) {
		fprintf(stderr, "%s: worker %d: reply to %s: %s\n", prog,
		    (int)getpid(), info.sender, strerror(errno));
		ipc_close(c);
		return 1;
	}
	ipc_close(c);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "workers", required_argument, NULL, 'w' },
		{ "size", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char where[4200], addr[32];
	const char *wherep = NULL;
	struct ipc_conn *c;
	pid_t *pids;
	int nworkers = 4, size = 20000, opt, failed = 0, status;
	uint32_t arrived = 0;

	while ((opt = getopt_long(argc, argv, "s:w:n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			snprintf(where, sizeof(where), "unix:%s", optarg);
			wherep = where;
			break;
		case 'w':
			nworkers = atoi(optarg);
			if (nworkers < 1 || nworkers > 64) {
				fprintf(stderr, "%s: --workers: 1 to 64\n",
				    prog);
				return 2;
			}
			break;
		case 'n':
			size = atoi(optarg);
			if (size < 1 || size > 1000000) {
				fprintf(stderr, "%s: --size: 1 to 1000000\n",
				    prog);
				return 2;
			}
			break;
		case 'h':
			wk_usage(stdout);
			return 0;
		default:
			wk_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		wk_usage(stderr);
		return 2;
	}
	if ((pids = calloc((size_t)nworkers, sizeof(*pids))) == NULL)
		return 1;
	if ((c = ipc_open(wherep)) == NULL) {
		fprintf(stderr, "%s: connect to the broker: %s\n", prog,
		    strerror(errno));
		return 1;
	}
	printf("%s: parent is pid:%d; %d workers\n", prog, (int)ipc_pid(c),
	    nworkers);
	for (int i = 0; i < nworkers; i++) {
		if ((pids[i] = fork()) < 0) {
			fprintf(stderr, "%s: fork: %s\n", prog,
			    strerror(errno));
			return 1;
		}
		if (pids[i] == 0)
			_exit(wk_worker(wherep));
	}
	/* Work by pid: each send waits for its worker to connect. */
	for (int i = 0; i < nworkers; i++) {
		struct job j = { (uint32_t)(size / (i + 1)) };

		snprintf(addr, sizeof(addr), "pid:%d", (int)pids[i]);
		if (ipc_send(c, addr, &j, sizeof(j)) < 0) {
			fprintf(stderr, "%s: send to %s: %s\n", prog, addr,
			    strerror(errno));
			failed++;
		}
	}
	/* Answers by selective receive, in worker order. */
	for (int i = 0; i < nworkers; i++) {
		struct ipc_msg_info info;
		struct answer a;

		snprintf(addr, sizeof(addr), "pid:%d", (int)pids[i]);
		if (ipc_recv(c, addr, &a, sizeof(a), &info) !=
		    (ssize_t)sizeof(a)) {
			fprintf(stderr, "%s: receive from %s: %s\n", prog,
			    addr, strerror(errno));
			failed++;
			continue;
		}
		printf("%s: worker %d (%s): prime number %" PRIu32 " is %"
		    PRIu32 "\n", prog, i + 1, info.sender, a.n, a.prime);
		arrived++;
	}
	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	ipc_close(c);
	free(pids);
	printf("%s: %u answers, %d failures\n", prog, arrived, failed);
	return failed ? 1 : 0;
}
