#include "config.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum log_level log_max = LOG_INFO;

static const char *const log_names[] = { "error", "warn", "info", "debug" };

/* Lines above debug may come at this rate, with a burst of twice it;
 * the rest are counted and said in one line once the rate allows.  A
 * client that provokes a line per frame then cannot flood the log. */
#define LOG_RATE 100

static struct {
	double tokens;
	int64_t last_ms;
	unsigned long suppressed, dropped;
} log_state = { 2 * LOG_RATE, 0, 0, 0 };

int
log_parse_level(const char *s)
{
	for (int i = 0; i <= LOG_DEBUG; i++)
		if (strcmp(s, log_names[i]) == 0)
			return i;
	return -1;
}

/* Where lines go: stderr itself, or our own non-blocking opening of the
 * pipe behind it; a socket is written with MSG_DONTWAIT instead. */
static int log_fd = 2, log_sock;

void
log_init(void)
{
	struct stat st;
	int fd;

	/* A pipe or socket nobody reads would stop the whole broker on a
	 * write: there, lines are dropped (and counted) instead.  The
	 * flags of stderr itself are left alone (whoever shares it, a
	 * 2>&1 stdout say, must not start seeing EAGAIN): a pipe is
	 * opened again through /proc, which gives our own open file and
	 * our own O_NONBLOCK; a socket is sent to without waiting.  A file
	 * or terminal is written as it is. */
	if (fstat(2, &st) < 0)
		return;
	if (S_ISSOCK(st.st_mode))
		log_sock = 1;
	else if (S_ISFIFO(st.st_mode) && (fd = open("/proc/self/fd/2",
	    O_WRONLY | O_NONBLOCK | O_CLOEXEC)) >= 0)
		log_fd = fd;
}

static int64_t
log_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One write per line, so lines from a forked child never mix (a pipe
 * takes a line under PIPE_BUF whole or not at all). */
static void
log_write(const char *line, size_t len)
{
	ssize_t n;

	do
		n = log_sock ? send(2, line, len, MSG_DONTWAIT | MSG_NOSIGNAL) :
		    write(log_fd, line, len);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		log_state.dropped++;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1200];
	int saved = errno, len;
	va_list ap;

	if (level > log_max)
		return;
	if (level != LOG_DEBUG) {
		int64_t now = log_now_ms();

		log_state.tokens += (double)(now - log_state.last_ms) *
		    LOG_RATE / 1000.0;
		if (log_state.tokens > 2 * LOG_RATE)
			log_state.tokens = 2 * LOG_RATE;
		log_state.last_ms = now;
		if (log_state.tokens < 1) {
			log_state.suppressed++;
			errno = saved;
			return;
		}
		log_state.tokens -= 1;
		if (log_state.suppressed != 0 || log_state.dropped != 0) {
			len = snprintf(line, sizeof(line), "ipcd: warn: %lu "
			    "log lines not written (over %d a second: %lu; "
			    "stderr full: %lu)\n", log_state.suppressed +
			    log_state.dropped, LOG_RATE, log_state.suppressed,
			    log_state.dropped);
			log_state.suppressed = log_state.dropped = 0;
			log_write(line, (size_t)len);
		}
	}
	len = snprintf(line, sizeof(line), "ipcd: %s: ", log_names[level]);
	va_start(ap, fmt);
	len += vsnprintf(line + len, sizeof(line) - (size_t)len - 1, fmt, ap);
	va_end(ap);
	if ((size_t)len > sizeof(line) - 2)
		len = (int)sizeof(line) - 2;
	line[len++] = '\n';
	log_write(line, (size_t)len);
	errno = saved;
}
