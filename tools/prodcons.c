/*
 * prodcons - the lecture's producer/consumer through a bounded mailbox:
 * P producer processes send N numbered messages each into one mailbox,
 * C consumer processes take them, and the parent checks that every
 * message arrived exactly once and that each producer's messages reached
 * each consumer in order.
 *
 * Consumers report every (producer, sequence) pair they received to the
 * parent through a pipe, so the final count is exact, not a checksum.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "mysocks.h"

/* A message: producer index and sequence number, little-endian-agnostic
 * since both ends are this machine.  STOP tells a consumer to finish. */
struct pc_msg {
	uint32_t producer;
	uint32_t seq;
};

#define PC_STOP		0xffffffffu
#define PC_ORDER	0xfffffffeu	/* report: out-of-order count */
#define PC_BATCH	512		/* pairs per pipe write */

static const char *prog = "prodcons";

static void
pc_usage(FILE *f)
{
	fprintf(f,
	    "Usage: %s [OPTIONS]\n"
	    "Producers and consumers as processes, through one bounded "
	    "mailbox of ipcd.\n"
	    "\n"
	    "  -s, --socket PATH    the broker's socket (default: as "
	    "ipc_open(NULL))\n"
	    "  -p, --producers N    producer processes (default 3)\n"
	    "  -c, --consumers N    consumer processes (default 2)\n"
	    "  -n, --messages N     messages per producer (default 100000)\n"
	    "  -k, --capacity N     mailbox capacity in messages "
	    "(default 64)\n"
	    "  -h, --help           show this help\n"
	    "\n"
	    "Exits 0 when every message was received exactly once and in "
	    "order\nper producer; prints the counts and the rate.\n", prog);
}

static struct ipc_conn *
pc_open(const char *where)
{
	struct ipc_conn *c = ipc_open(where);

	if (c == NULL)
		fprintf(stderr, "%s: connect to the broker: %s\n", prog,
		    strerror(errno));
	return c;
}

static int
pc_producer(const char *where, const char *box, uint32_t id, uint32_t n)
{
	struct ipc_conn *c = pc_open(where);
	struct pc_msg m = { .producer = id };

	if (c == NULL)
		return 1;
	for (m.seq = 0; m.seq < n; m.seq++)
		if (ipc_send(c, box, &m, sizeof(m)) < 0) {
			fprintf(stderr, "%s: producer %u: send: %s\n", prog,
			    id, strerror(errno));
			ipc_close(c);
			return 1;
		}
	ipc_close(c);
	return 0;
}

static int
pc_consumer(const char *where, const char *box, uint32_t producers,
    int out)
{
	struct ipc_conn *c = pc_open(where);
	struct pc_msg batch[PC_BATCH], m;
	uint32_t *next = calloc(producers, sizeof(*next)), order = 0;
	size_t nb = 0;
	int rc = 0;

	if (c == NULL || next == NULL)
		return 1;
	for (;;) {
		ssize_t r = ipc_recv(c, box, &m, sizeof(m), NULL);

		if (r != (ssize_t)sizeof(m)) {
			fprintf(stderr, "%s: consumer: recv: %s\n", prog,
			    r < 0 ? strerror(errno) : "short message");
			rc = 1;
			break;
		}
		if (m.producer == PC_STOP)
			break;
		if (m.producer < producers) {
			/* Per sender, a consumer sees a rising sequence. */
			if (m.seq < next[m.producer])
				order++;
			next[m.producer] = m.seq + 1;
		}
		batch[nb++] = m;
		if (nb == PC_BATCH) {
			if (writeSocket(out, batch, sizeof(batch)) < 0)
				return 1;
			nb = 0;
		}
	}
	batch[nb].producer = PC_ORDER;
	batch[nb++].seq = order;
	if (writeSocket(out, batch, (int)(nb * sizeof(batch[0]))) < 0)
		rc = 1;
	free(next);
	ipc_close(c);
	return rc;
}

static double
pc_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Read pairs from the consumers' pipes until all have closed; mark each
 * in seen.  Returns the duplicates. */
static uint64_t
pc_collect(int *fds, uint32_t nfds, int done_fd, struct ipc_conn *c,
    const char *box, uint8_t *seen, uint32_t producers, uint32_t n,
    uint64_t *received, uint64_t *order, uint64_t *bogus, int *failed)
{
	struct pollfd *p = calloc(nfds + 1, sizeof(*p));
	uint64_t dups = 0;
	uint32_t open = nfds;
	/* Pairs may straddle reads: keep a partial one per pipe. */
	struct { struct pc_msg m; size_t have; } *part =
	    calloc(nfds, sizeof(*part));

	if (p == NULL || part == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		exit(1);
	}
	for (uint32_t i = 0; i < nfds; i++)
		p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
	/* Only the producers hold the write end of done_fd: end of file
	 * there means every producer has finished sending. */
	p[nfds] = (struct pollfd){ .fd = done_fd, .events = POLLIN };
	while (open > 0) {
		if (poll(p, nfds + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[nfds].fd >= 0 && p[nfds].revents) {
			struct pc_msg stop = { PC_STOP, 0 };

			close(p[nfds].fd);
			p[nfds].fd = -1;
			for (uint32_t k = 0; k < nfds; k++)
				if (ipc_send(c, box, &stop, sizeof(stop)) < 0) {
					fprintf(stderr, "%s: send stop: %s\n",
					    prog, strerror(errno));
					(*failed)++;
					break;
				}
		}
		for (uint32_t i = 0; i < nfds; i++) {
			uint8_t buf[PC_BATCH * sizeof(struct pc_msg)];
			int r;

			if (p[i].fd < 0 || p[i].revents == 0)
				continue;
			r = readSocket(p[i].fd, buf, sizeof(buf));
			if (r <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				open--;
				continue;
			}
			for (int k = 0; k < r; k++) {
				((uint8_t *)&part[i].m)[part[i].have++] =
				    buf[k];
				if (part[i].have < sizeof(struct pc_msg))
					continue;
				part[i].have = 0;
				if (part[i].m.producer == PC_ORDER) {
					*order += part[i].m.seq;
					continue;
				}
				if (part[i].m.producer >= producers ||
				    part[i].m.seq >= n) {
					(*bogus)++;
					continue;
				}
				(*received)++;
				size_t bit = (size_t)part[i].m.producer * n +
				    part[i].m.seq;
				if (seen[bit / 8] & (1u << (bit % 8)))
					dups++;
				seen[bit / 8] |= (uint8_t)(1u << (bit % 8));
			}
		}
	}
	free(p);
	free(part);
	return dups;
}

static int
pc_number(const char *opt, const char *s, uint32_t min, uint32_t max,
    uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "%s: %s: '%s' is not a number from %u to %u\n",
		    prog, opt, s, min, max);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "producers", required_argument, NULL, 'p' },
		{ "consumers", required_argument, NULL, 'c' },
		{ "messages", required_argument, NULL, 'n' },
		{ "capacity", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint32_t producers = 3, consumers = 2, n = 100000, capacity = 64;
	char where[4200], box[64];
	const char *wherep = NULL;
	struct ipc_mbox_attr attr;
	struct ipc_conn *c;
	int opt, *fds, failed = 0, status, done[2];
	uint8_t *seen;
	uint64_t received = 0, order = 0, bogus = 0, dups, lost;
	double t0, secs;
	pid_t pid;

	while ((opt = getopt_long(argc, argv, "s:p:c:n:k:h", opts,
	    NULL)) != -1) {
		switch (opt) {
		case 's':
			snprintf(where, sizeof(where), "unix:%s", optarg);
			wherep = where;
			break;
		case 'p':
			if (pc_number("--producers", optarg, 1, 1000,
			    &producers) < 0)
				return 2;
			break;
		case 'c':
			if (pc_number("--consumers", optarg, 1, 1000,
			    &consumers) < 0)
				return 2;
			break;
		case 'n':
			if (pc_number("--messages", optarg, 1, 100000000,
			    &n) < 0)
				return 2;
			break;
		case 'k':
			if (pc_number("--capacity", optarg, 0, 1000000,
			    &capacity) < 0)
				return 2;
			break;
		case 'h':
			pc_usage(stdout);
			return 0;
		default:
			pc_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		pc_usage(stderr);
		return 2;
	}
	if ((uint64_t)producers * n > 4000000000u) {
		fprintf(stderr, "%s: producers x messages is too many\n",
		    prog);
		return 2;
	}
	seen = calloc(((size_t)producers * n + 7) / 8, 1);
	fds = calloc(consumers, sizeof(*fds));
	if (seen == NULL || fds == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return 1;
	}
	if ((c = pc_open(wherep)) == NULL)
		return 1;
	snprintf(box, sizeof(box), "prodcons-%ld", (long)getpid());
	ipc_mbox_attr_init(&attr);
	attr.capacity = capacity;
	attr.exclusive = 1;
	if (ipc_mbox_create(c, box, &attr, NULL) < 0) {
		fprintf(stderr, "%s: create mailbox %s: %s\n", prog, box,
		    strerror(errno));
		return 1;
	}
	printf("%s: %u producers x %u messages -> mailbox %s "
	    "(capacity %u) -> %u consumers\n", prog, producers, n, box,
	    capacity, consumers);
	fflush(stdout);

	t0 = pc_now();
	for (uint32_t i = 0; i < consumers; i++) {
		int p[2];

		if (pipe(p) < 0 || (pid = fork()) < 0) {
			fprintf(stderr, "%s: %s\n", prog, strerror(errno));
			return 1;
		}
		if (pid == 0) {
			close(p[0]);
			for (uint32_t k = 0; k < i; k++)
				close(fds[k]);
			_exit(pc_consumer(wherep, box, producers, p[1]));
		}
		close(p[1]);
		fds[i] = p[0];
	}
	if (pipe(done) < 0) {
		fprintf(stderr, "%s: pipe: %s\n", prog, strerror(errno));
		return 1;
	}
	for (uint32_t i = 0; i < producers; i++) {
		if ((pid = fork()) < 0) {
			fprintf(stderr, "%s: fork: %s\n", prog,
			    strerror(errno));
			return 1;
		}
		if (pid == 0) {
			close(done[0]);
			for (uint32_t k = 0; k < consumers; k++)
				close(fds[k]);
			/* done[1] closes as the producer exits. */
			_exit(pc_producer(wherep, box, i, n));
		}
	}
	close(done[1]);
	dups = pc_collect(fds, consumers, done[0], c, box, seen, producers, n,
	    &received, &order, &bogus, &failed);
	while ((pid = wait(&status)) > 0 || (pid < 0 && errno == EINTR))
		if (pid > 0 && (!WIFEXITED(status) || WEXITSTATUS(status)))
			failed++;
	secs = pc_now() - t0;
	lost = (uint64_t)producers * n - (received - dups);
	ipc_mbox_delete(c, box);
	ipc_close(c);
	printf("%s: %llu received, %llu lost, %llu duplicated, %llu out of "
	    "order, %llu bogus; %u failed processes\n", prog,
	    (unsigned long long)received, (unsigned long long)lost,
	    (unsigned long long)dups, (unsigned long long)order,
	    (unsigned long long)bogus, failed);
	printf("%s: %.3f s, %.0f messages/s\n", prog, secs,
	    (double)received / (secs > 0 ? secs : 1e-9));
	free(seen);
	free(fds);
	return lost || dups || order || bogus || failed ? 1 : 0;
}
