/*
 * Helpers shared by the test programs: a watchdog, child processes with
 * their output on pipes, line reads with a timeout, private temporary
 * directories.  Every wait here has a timeout; none sleeps.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Per-wait timeout for things that should take milliseconds; generous so
 * that a loaded machine or a sanitizer build never trips it. */
#define TEST_WAIT_MS 20000

struct test_proc {
	pid_t pid;
	int in;		/* write end of the child's stdin, or -1 */
	int out;	/* read end of the child's stdout */
	int err;	/* read end of the child's stderr */
};

/* Line-buffer stdout (so a forked child never repeats buffered output and
 * a crash loses nothing) and arm a watchdog that kills the whole test
 * program after seconds. */
void test_init(unsigned seconds);

/* Start argv[0] (a path) with stdin, stdout and stderr on pipes.
 * Returns 0 or -1 with errno. */
int test_spawn(struct test_proc *p, char *const argv[]);

/* SIGTERM, then wait up to TEST_WAIT_MS for it to exit (SIGKILL after).
 * Returns the wait status, or -1.  p->pid is 0 afterwards; the pipes are
 * closed. */
int test_stop(struct test_proc *p);

/* Wait up to timeout_ms for fd to be readable.  1 ready, 0 timed out,
 * -1 error. */
int test_wait_readable(int fd, int timeout_ms);

/* Wait up to timeout_ms for child pid to exit (SIGKILL after: a child
 * never outlives its test), reap it, and return its wait status, or -1.
 * Without pidfds (old kernels) the test's watchdog bounds the wait. */
int test_child_reap(pid_t pid, int timeout_ms);

/* Read one line (without its newline) into buf.  Returns its length, -1 on
 * timeout, EOF or error, or when it does not fit. */
int test_read_line(int fd, char *buf, size_t size, int timeout_ms);

/* Read lines until one starts with prefix; the rest of it lands in buf.
 * Returns 0, or -1 on timeout/EOF. */
int test_wait_line(int fd, const char *prefix, char *buf, size_t size,
    int timeout_ms);

/* Path of a program in the build tree ($top_builddir/rel), in a static
 * buffer. */
const char *test_build_path(const char *rel);

/* A fresh private directory (mkdtemp), and its removal with everything in
 * it, subdirectories too (a broker's state directory beside its socket);
 * symbolic links are removed, never followed. */
char *test_tmpdir(void);
void test_rmtree(char *dir);

/* Monotonic milliseconds. */
long long test_now_ms(void);

#endif
