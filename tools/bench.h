/*
 * bench.h - what ipcbench's scenarios and baselines share: timing,
 * statistics, CPU placement, and the results they report.
 *
 * Every measurement runs its parties as separate processes (fork), pinned
 * to CPU 0 or left to the scheduler, and checks a sequence number in every
 * payload: a lost, repeated or reordered message makes it fail, never a
 * faster figure.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How a measurement is run. */
struct bench_cfg {
	int pinned;		/* every process on CPU 0 */
	size_t size;		/* payload bytes (>= 8: the sequence number) */
	unsigned count;		/* messages (throughput) or round trips */
	unsigned producers, consumers;	/* throughput scenarios */
	/* libipc only: receive ahead this many messages
	 * (ipc_set_prefetch; 0 off), batch async sends (ipc_send_more),
	 * and async sends in the round trip instead of blocking ones. */
	unsigned prefetch;
	int batch, async_rtt;
	/* Throughput scenarios: every send blocking (ipc_send: returns
	 * once the broker has it, on disk for a durable mailbox), and the
	 * mailbox durable. */
	int blocking, durable;
};

/* Latency of count round trips, in microseconds. */
struct bench_lat {
	double median_us, p99_us, p999_us;
	unsigned n;
};

/* One-way throughput. */
struct bench_thr {
	double msgs_per_s, gb_per_s;
	uint64_t msgs;
	double secs;
};

/* Write a reason into why (why_size bytes; nothing when why is NULL). */
void bench_why(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic nanoseconds. */
uint64_t bench_now_ns(void);

/* Pin the calling process to CPU 0 when cfg says so.  0 or -errno. */
int bench_place(const struct bench_cfg *cfg);

/* Sort n samples (ns) and fill out (median, p99, p99.9 in us). */
void bench_lat_from(uint64_t *ns, size_t n, struct bench_lat *out);

/* Throughput of msgs messages of size bytes in ns nanoseconds. */
void bench_thr_from(uint64_t msgs, size_t size, uint64_t ns,
    struct bench_thr *out);

/* The sequence number in a payload, and writing one (little-endian, the
 * first 8 bytes; the rest is filled with a pattern). */
void bench_fill(void *buf, size_t size, uint64_t seq);
uint64_t bench_seq(const void *buf);

/*
 * bench_fork - run fn(arg) in a child placed as cfg says; the child exits
 * with fn's return (0 ok).  Returns the pid or -errno.  bench_wait waits
 * for it up to timeout_ms (then kills it) and returns its status: 0 ok,
 * else -1 with why set.
 */
pid_t bench_fork(const struct bench_cfg *cfg, int (*fn)(void *), void *arg);
int bench_wait(pid_t pid, int timeout_ms, char *why, size_t why_size);

/* A ready/start handshake between a parent and its children over a pipe
 * pair: children say ready, the parent says go once all are.  */
struct bench_gate {
	int ready[2], go[2];
};
int bench_gate_init(struct bench_gate *g);
void bench_gate_ready(struct bench_gate *g);		/* child */
int bench_gate_wait_go(struct bench_gate *g);		/* child */
int bench_gate_open(struct bench_gate *g, unsigned nchildren,
    int timeout_ms);					/* parent */
void bench_gate_close(struct bench_gate *g);

/* --- baselines (bench-raw.c) ---------------------------------------------- */

/*
 * Each returns 0 with its result, or -1 with why (a lost or reordered
 * message, a syscall that failed).  rtt: cfg->count round trips of
 * cfg->size bytes; thr: cfg->count messages one way.
 */
int raw_unix_rtt(const struct bench_cfg *cfg, struct bench_lat *out,
    char *why, size_t why_size);
int raw_unix_thr(const struct bench_cfg *cfg, struct bench_thr *out,
    char *why, size_t why_size);
/* A→relay→B→relay→A through a single-threaded epoll relay process: the
 * best any broker could do. */
int raw_relay_rtt(const struct bench_cfg *cfg, struct bench_lat *out,
    char *why, size_t why_size);
int raw_relay_thr(const struct bench_cfg *cfg, struct bench_thr *out,
    char *why, size_t why_size);
int posix_mq_rtt(const struct bench_cfg *cfg, struct bench_lat *out,
    char *why, size_t why_size);
int posix_mq_thr(const struct bench_cfg *cfg, struct bench_thr *out,
    char *why, size_t why_size);
int sysv_mq_rtt(const struct bench_cfg *cfg, struct bench_lat *out,
    char *why, size_t why_size);
int sysv_mq_thr(const struct bench_cfg *cfg, struct bench_thr *out,
    char *why, size_t why_size);
/* A raw TLS 1.3 stream (the project's tls.c, PSK) between two processes
 * over loopback TCP: what a link could carry at best. */
int raw_tls_thr(const struct bench_cfg *cfg, const char *psk_file,
    struct bench_thr *out, char *why, size_t why_size);
/*
 * The disk under dir: records of cfg->size bytes appended to a file
 * there, each acknowledged once fdatasync'ed, up to cfg->count records
 * or max_ms, whichever comes first.  threads 1: one writer, one
 * fdatasync per record (the raw fdatasync rate).  More: that many
 * writers each waiting for its own record, and one thread syncing
 * whatever they appended while its last fdatasync ran (group commit as
 * a broker does it); with full, that thread waits until every writer
 * has a record waiting (a bound no broker reaches: it cannot know how
 * many senders are coming).  out is acknowledged records per second;
 * *syncs_out (may be NULL) the fdatasync calls.  The file is read back
 * and removed.
 */
int raw_fsync_thr(const struct bench_cfg *cfg, const char *dir,
    unsigned threads, int full, unsigned max_ms, struct bench_thr *out,
    uint64_t *syncs_out, char *why, size_t why_size);
#ifdef HAVE_ZMQ
int zmq_rtt(const struct bench_cfg *cfg, struct bench_lat *out,
    char *why, size_t why_size);
int zmq_thr(const struct bench_cfg *cfg, struct bench_thr *out,
    char *why, size_t why_size);
#endif

#endif
