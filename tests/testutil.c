#include "config.h"

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void
test_init(unsigned seconds)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Tests expect writes to closed peers to report EPIPE, and a test
	 * runner may have left SIGPIPE ignored; mysocks must cope with
	 * the default disposition, so test under it. */
	signal(SIGPIPE, SIG_DFL);
	alarm(seconds);
}

long long
test_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
test_spawn(struct test_proc *p, char *const argv[])
{
	int in[2], out[2], err[2];

	if (pipe2(in, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(out, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(err, O_CLOEXEC) < 0)
		return -1;
	p->pid = fork();
	if (p->pid < 0)
		return -1;
	if (p->pid == 0) {
		if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 ||
		    dup2(err[1], 2) < 0)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		alarm(0);
		/* Whatever happens to the test (a failed assertion, the
		 * watchdog), the programs it started go with it: SIGKILL,
		 * which even a program stuck in a loop cannot miss. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			_exit(127);
		execv(argv[0], argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	p->in = in[1];
	p->out = out[0];
	p->err = err[0];
	return 0;
}

static void
test_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Wait up to timeout_ms for pid to exit, without reaping it.  A pidfd
 * makes it an event; where there is none (old kernels, valgrind), look
 * every 10 ms.  Returns 1 when it exited. */
static int
test_wait_exit(pid_t pid, int timeout_ms)
{
	long long deadline = test_now_ms() + timeout_ms;
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0), r = 0;

	if (pfd >= 0) {
		r = test_wait_readable(pfd, timeout_ms) == 1;
		close(pfd);
		return r;
	}
	while (test_now_ms() < deadline) {
		siginfo_t si = { 0 };
		struct timespec ten_ms = { 0, 10000000 };

		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG |
		    WNOWAIT) < 0)
			return errno != EINTR;
		if (si.si_pid == pid)
			return 1;
		nanosleep(&ten_ms, NULL);
	}
	return 0;
}

int
test_stop(struct test_proc *p)
{
	int status = -1;
	pid_t r;

	if (p->pid <= 0)
		return -1;
	kill(p->pid, SIGTERM);
	if (!test_wait_exit(p->pid, TEST_WAIT_MS))
		kill(p->pid, SIGKILL);
	do
		r = waitpid(p->pid, &status, 0);
	while (r < 0 && errno == EINTR);
	p->pid = 0;
	test_close(&p->in);
	test_close(&p->out);
	test_close(&p->err);
	return r < 0 ? -1 : status;
}

int
test_wait_readable(int fd, int timeout_ms)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	long long deadline = test_now_ms() + timeout_ms;

	for (;;) {
		long long left = deadline - test_now_ms();
		int r;

		if (left < 0)
			left = 0;
		r = poll(&pf, 1, (int)left);
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

int
test_read_line(int fd, char *buf, size_t size, int timeout_ms)
{
	long long deadline = test_now_ms() + timeout_ms;
	size_t n = 0;

	while (n + 1 < size) {
		long long left = deadline - test_now_ms();
		ssize_t r;

		if (left <= 0 || test_wait_readable(fd, (int)left) != 1)
			return -1;
		r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (buf[n] == '\n') {
			buf[n] = '\0';
			return (int)n;
		}
		n++;
	}
	return -1;
}

int
test_wait_line(int fd, const char *prefix, char *buf, size_t size,
    int timeout_ms)
{
	long long deadline = test_now_ms() + timeout_ms;
	char line[1024];
	size_t plen = strlen(prefix);

	for (;;) {
		long long left = deadline - test_now_ms();

		if (left <= 0)
			return -1;
		if (test_read_line(fd, line, sizeof(line), (int)left) < 0)
			return -1;
		if (strncmp(line, prefix, plen) == 0) {
			if (buf != NULL)
				snprintf(buf, size, "%s", line + plen);
			return 0;
		}
	}
}

const char *
test_build_path(const char *rel)
{
	static char path[PATH_MAX];
	const char *top = getenv("top_builddir");

	snprintf(path, sizeof(path), "%s/%s", top ? top : ".", rel);
	return path;
}

char *
test_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *dir;

	/* UNIX socket paths must fit in 108 bytes: keep the base short. */
	if (base == NULL || strlen(base) > 40)
		base = "/tmp";
	if (asprintf(&dir, "%s/ipctest.XXXXXX", base) < 0)
		return NULL;
	if (mkdtemp(dir) == NULL) {
		free(dir);
		return NULL;
	}
	return dir;
}

/* Remove path and, when it is a directory (not a symlink to one: lstat),
 * everything under it.  Bounded depth: the tests make few levels (a
 * broker's state directory beside its socket). */
static void
test_rmpath(const char *path, int depth)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	char sub[PATH_MAX];

	if (lstat(path, &st) < 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	if (depth < 16 && (d = opendir(path)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 ||
			    strcmp(e->d_name, "..") == 0)
				continue;
			if (snprintf(sub, sizeof(sub), "%s/%s", path,
			    e->d_name) >= (int)sizeof(sub))
				continue;
			test_rmpath(sub, depth + 1);
		}
		closedir(d);
	}
	rmdir(path);
}

void
test_rmtree(char *dir)
{
	if (dir == NULL)
		return;
	test_rmpath(dir, 0);
	free(dir);
}

int
test_child_reap(pid_t pid, int timeout_ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0), status = -1;
	pid_t r;

	if (pfd >= 0) {
		if (test_wait_readable(pfd, timeout_ms) != 1)
			kill(pid, SIGKILL);
		close(pfd);
	}
	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -1 : status;
}
