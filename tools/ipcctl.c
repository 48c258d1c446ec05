/*
 * ipcctl - inspect and drive the broker ipcd from a shell: list, create,
 * change and delete mailboxes, send and receive messages, peek at queues,
 * list the connected processes and the links to other brokers, watch the
 * broker's events and counters, make key files for those links.
 * See ipcctl(1).
 *
 * Only the public API of ipc.h is used, and tls_keygen() of the internal
 * tls.h.  Exit status: 0 success, 1 an
 * error from the broker or the system (named on stderr), 2 a usage error.
 *
 * Received messages are acknowledged by the library with the next request
 * or at ipc_close(), so every path that has taken messages closes its
 * connection, except after standard output failed: then the message that
 * could not be written must stay unacknowledged, and the broker puts it
 * back when the connection closes with the process.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "tls.h"

static const char *prog = "ipcctl";

#define CTL_OK		0
#define CTL_FAIL	1	/* the broker or the system said no */
#define CTL_USAGE	2	/* the command line is wrong */

/* What ctl_getopt() returns besides option characters and -1. */
#define CTL_OPT_DONE	0x100	/* help or version printed: exit 0 */
#define CTL_OPT_BAD	0x101	/* usage error printed: exit 2 */

/* Standard input read by "send" without MESSAGE is capped here, so that
 * "ipcctl send jobs </dev/zero" fails instead of eating the memory.  The
 * broker's own limit (--max-msg-size, 8 MiB by default) is not visible
 * through ipc.h; 1 GiB is picked as far above any sane setting. */
#define CTL_STDIN_MAX	((size_t)1 << 30)

/* Bytes of a message shown by "peek". */
#define CTL_PREVIEW	32

struct ctl;

struct ctl_cmd {
	const char *name;
	int (*run)(struct ctl *x, int argc, char **argv);
	const char *synopsis;	/* after "ipcctl [OPTIONS] name " */
	const char *help;	/* what it does, and its own options */
};

struct ctl {
	const struct ctl_cmd *cmd;	/* NULL before the command is known */
	char where[PATH_MAX + 8];	/* "unix:PATH" from -s; "" default */
	char path[PATH_MAX];		/* the socket, for messages */
	int json;
};

/* --- messages and numbers ------------------------------------------------ */

/* Copy s into buf (size bytes) with control characters as '?', so that
 * names and addresses from the broker cannot drive the terminal. */
static const char *
ctl_safe(char *buf, size_t size, const char *s, size_t max)
{
	size_t i, n = 0;

	while (n < max && s[n] != '\0')
		n++;
	if (size == 0)
		return "";
	if (n > size - 1)
		n = size - 1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		buf[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	buf[n] = '\0';
	return buf;
}

/* "ipcctl: what arg: strerror(err)"; returns CTL_FAIL. */
static int
ctl_fail_err(int err, const char *what, const char *arg)
{
	char safe[PATH_MAX];

	if (arg != NULL)
		fprintf(stderr, "%s: %s %s: %s\n", prog, what,
		    ctl_safe(safe, sizeof(safe), arg, SIZE_MAX),
		    strerror(err));
	else
		fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
	return CTL_FAIL;
}

static int
ctl_fail(const char *what, const char *arg)
{
	return ctl_fail_err(errno, what, arg);
}

/* "ipcctl: CMD: message" and where to find help; returns CTL_USAGE. */
static int __attribute__((format(printf, 2, 3)))
ctl_usage_error(const struct ctl *x, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	if (x->cmd != NULL)
		fprintf(stderr, "%s: ", x->cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (x->cmd != NULL)
		fprintf(stderr, "\nTry '%s %s --help'.\n", prog, x->cmd->name);
	else
		fprintf(stderr, "\nTry '%s --help'.\n", prog);
	return CTL_USAGE;
}

/* Parse s as a whole number in base (8 or 10) from min to max: digits
 * only, no sign, no blanks.  Prints the usage error and returns -1. */
static int
ctl_number(const struct ctl *x, const char *opt, const char *s, int base,
    uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end, safe[64];

	errno = 0;
	if (s[0] >= '0' && s[0] <= '9') {
		v = strtoull(s, &end, base);
		if (errno == 0 && *end == '\0' && v >= min && v <= max) {
			*out = v;
			return 0;
		}
	}
	ctl_safe(safe, sizeof(safe), s, SIZE_MAX);
	if (base == 8)
		ctl_usage_error(x, "%s: '%s' is not an octal number from "
		    "%#" PRIo64 " to %#" PRIo64, opt, safe, min, max);
	else
		ctl_usage_error(x, "%s: '%s' is not a number from %" PRIu64
		    " to %" PRIu64, opt, safe, min, max);
	return -1;
}

/* A timeout in milliseconds for --timeout. */
static int
ctl_timeout(const struct ctl *x, const char *s, int *out)
{
	uint64_t v;

	if (ctl_number(x, "--timeout", s, 10, 0, INT_MAX, &v) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

/* Check text as an address; a usage error saying why when it is none. */
static int
ctl_address(const struct ctl *x, const char *text, struct ipc_addr *a)
{
	char safe[IPC_ADDR_MAX + 16];
	const char *why;

	if (ipc_addr_parse(text, a) == 0)
		return 0;
	why = ipc_addr_why(text);
	ctl_usage_error(x, "bad address '%s': %s",
	    ctl_safe(safe, sizeof(safe), text, sizeof(safe) - 1),
	    why != NULL ? why : "invalid");
	return -1;
}

/* Check text as a mailbox name of this broker (a "pid:" address is not
 * one, nor a mailbox on another host). */
static int
ctl_mailbox(const struct ctl *x, const char *text)
{
	struct ipc_addr a;

	if (ctl_address(x, text, &a) < 0)
		return -1;
	if (a.kind != IPC_ADDR_MAILBOX) {
		char safe[IPC_ADDR_MAX];

		ctl_usage_error(x, "'%s' is a process, not a mailbox",
		    ctl_safe(safe, sizeof(safe), text, sizeof(safe) - 1));
		return -1;
	}
	if (a.host[0] != '\0') {
		char safe[IPC_ADDR_MAX];

		ctl_usage_error(x, "'%s' is on another host: this command "
		    "works on the mailboxes of the broker it talks to",
		    ctl_safe(safe, sizeof(safe), text, sizeof(safe) - 1));
		return -1;
	}
	return 0;
}

/* The number of operands must be from min to max. */
static int
ctl_operands(const struct ctl *x, int n, int min, int max)
{
	if (n < min) {
		ctl_usage_error(x, "missing argument");
		return -1;
	}
	if (n > max) {
		ctl_usage_error(x, "too many arguments");
		return -1;
	}
	return 0;
}

/* --- time ------------------------------------------------------------- */

static uint64_t
ctl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
ctl_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Local time of ns (CLOCK_REALTIME) as "HH:MM:SS.mmm", or with date
 * "YYYY-MM-DD HH:MM:SS.mmm". */
static const char *
ctl_clock(char *buf, size_t size, uint64_t ns, int date)
{
	time_t t = (time_t)(ns / 1000000000u);
	unsigned ms = (unsigned)(ns % 1000000000u / 1000000u);
	struct tm tm;
	char hms[40];

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(hms, sizeof(hms), date ? "%Y-%m-%d %H:%M:%S" :
	    "%H:%M:%S", &tm) == 0)
		snprintf(hms, sizeof(hms), "%lld", (long long)t);
	snprintf(buf, size, "%s.%03u", hms, ms);
	return buf;
}

/* An age in nanoseconds as "4.2s", "12m05s", "3h07m" or "2d05h". */
static const char *
ctl_age(char *buf, size_t size, uint64_t ns)
{
	uint64_t s = ns / 1000000000u;

	if (s < 60)
		snprintf(buf, size, "%.1fs", (double)ns / 1e9);
	else if (s < 3600)
		snprintf(buf, size, "%um%02us", (unsigned)(s / 60),
		    (unsigned)(s % 60));
	else if (s < 86400)
		snprintf(buf, size, "%uh%02um", (unsigned)(s / 3600),
		    (unsigned)(s % 3600 / 60));
	else
		snprintf(buf, size, "%" PRIu64 "d%02uh", s / 86400,
		    (unsigned)(s % 86400 / 3600));
	return buf;
}

/* Milliseconds as "h:mm:ss". */
static const char *
ctl_hms(char *buf, size_t size, uint64_t ms)
{
	uint64_t s = ms / 1000;

	snprintf(buf, size, "%" PRIu64 ":%02u:%02u", s / 3600,
	    (unsigned)(s % 3600 / 60), (unsigned)(s % 60));
	return buf;
}

/* --- users and groups ---------------------------------------------------- */

/* Names looked up once per run: a listing of many mailboxes of one owner
 * asks NSS once.  32 entries are picked; past them, no caching. */
struct ctl_idname {
	unsigned id;
	char name[64];
};

static struct ctl_idname ctl_users[32], ctl_groups[32];
static size_t ctl_nusers, ctl_ngroups;

/* The name of uid (group: of gid) into buf, or its number when it has
 * none (or one too long for the cache). */
static const char *
ctl_idname(unsigned id, int group, char *buf, size_t size)
{
	struct ctl_idname *cache = group ? ctl_groups : ctl_users;
	size_t *n = group ? &ctl_ngroups : &ctl_nusers;
	const char *name = NULL;
	size_t i;

	for (i = 0; i < *n; i++)
		if (cache[i].id == id) {
			snprintf(buf, size, "%s", cache[i].name);
			return buf;
		}
	if (group) {
		struct group *gr = getgrgid((gid_t)id);

		if (gr != NULL)
			name = gr->gr_name;
	} else {
		struct passwd *pw = getpwuid((uid_t)id);

		if (pw != NULL)
			name = pw->pw_name;
	}
	if (name == NULL || strlen(name) >= sizeof(cache[0].name))
		snprintf(buf, size, "%u", id);
	else
		snprintf(buf, size, "%s", name);
	if (*n < sizeof(ctl_users) / sizeof(ctl_users[0])) {
		cache[*n].id = id;
		snprintf(cache[*n].name, sizeof(cache[0].name), "%s", buf);
		(*n)++;
	}
	return buf;
}

/* --- growing arrays ------------------------------------------------------ */

struct ctl_vec {
	void *v;
	size_t n, cap, size;	/* size: bytes per item */
	int err;		/* set by a callback that failed to push */
};

static int
ctl_vec_push(struct ctl_vec *a, const void *item)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		void *p;

		if (cap > SIZE_MAX / a->size ||
		    (p = realloc(a->v, cap * a->size)) == NULL) {
			a->err = ENOMEM;
			return -1;
		}
		a->v = p;
		a->cap = cap;
	}
	memcpy((char *)a->v + a->n * a->size, item, a->size);
	a->n++;
	return 0;
}

static void
ctl_vec_free(struct ctl_vec *a)
{
	free(a->v);
	a->v = NULL;
	a->n = a->cap = 0;
}

/* After a walk (ipc_mbox_list and its kind): 0 when it completed, or -1
 * with errno, from the library or from our callback. */
static int
ctl_walked(int r, const struct ctl_vec *a)
{
	if (r == 0 && a->err == 0)
		return 0;
	if (r > 0 || a->err != 0)
		errno = a->err ? a->err : ENOMEM;
	return -1;
}

/* --- aligned columns ------------------------------------------------------ */

struct ctl_table {
	size_t ncols, nrows, cap;
	const char *const *head;
	const char *align;	/* per column: 'l' or 'r' */
	char **cell;		/* row-major, owned */
	int err;
};

static void
ctl_tab_init(struct ctl_table *t, const char *const *head,
    const char *align)
{
	memset(t, 0, sizeof(*t));
	t->head = head;
	t->align = align;
	t->ncols = strlen(align);
}

/* Add a row of t->ncols strings (copied).  -1 with ENOMEM. */
static int
ctl_tab_row(struct ctl_table *t, const char *const *vals)
{
	size_t i, base;

	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **p;

		if (cap > SIZE_MAX / sizeof(char *) / t->ncols ||
		    (p = realloc(t->cell, cap * t->ncols *
		    sizeof(char *))) == NULL) {
			t->err = ENOMEM;
			return -1;
		}
		t->cell = p;
		t->cap = cap;
	}
	base = t->nrows * t->ncols;
	for (i = 0; i < t->ncols; i++)
		if ((t->cell[base + i] = strdup(vals[i])) == NULL) {
			while (i-- > 0)
				free(t->cell[base + i]);
			t->err = ENOMEM;
			return -1;
		}
	t->nrows++;
	return 0;
}

static void
ctl_tab_line(const struct ctl_table *t, FILE *f, const char *const *vals,
    const size_t *w)
{
	size_t i;

	for (i = 0; i < t->ncols; i++) {
		int last = i + 1 == t->ncols;

		if (i > 0)
			fputs("  ", f);
		if (t->align[i] == 'r')
			fprintf(f, "%*s", (int)w[i], vals[i]);
		else if (last)
			fputs(vals[i], f);
		else
			fprintf(f, "%-*s", (int)w[i], vals[i]);
	}
	fputc('\n', f);
}

/* Print the header and the first max rows (all: SIZE_MAX). */
static void
ctl_tab_print(const struct ctl_table *t, FILE *f, size_t max)
{
	size_t w[32] = { 0 }, i, r, n = t->nrows < max ? t->nrows : max;

	if (t->ncols > sizeof(w) / sizeof(w[0]))
		return;
	for (i = 0; i < t->ncols; i++)
		w[i] = strlen(t->head[i]);
	for (r = 0; r < n; r++)
		for (i = 0; i < t->ncols; i++) {
			size_t l = strlen(t->cell[r * t->ncols + i]);

			if (l > w[i])
				w[i] = l;
		}
	ctl_tab_line(t, f, t->head, w);
	for (r = 0; r < n; r++)
		ctl_tab_line(t, f, (const char *const *)&t->cell[r *
		    t->ncols], w);
}

static void
ctl_tab_free(struct ctl_table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cell[i]);
	free(t->cell);
	t->cell = NULL;
	t->nrows = t->cap = 0;
}

/* --- JSON ------------------------------------------------------------- */

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t
ctl_utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates, beyond U+10FFFF. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/* s (at most max bytes, up to a NUL) as a JSON string.  Control
 * characters become \u00XX; a byte that is not UTF-8 becomes the code
 * point of the same number, so the output is always valid JSON. */
static void
ctl_json_str(FILE *f, const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0, i = 0;

	while (n < max && s[n] != '\0')
		n++;
	fputc('"', f);
	while (i < n) {
		size_t l = ctl_utf8_len(p + i, n - i);

		if (l > 1) {
			fwrite(p + i, 1, l, f);
			i += l;
			continue;
		}
		if (p[i] == '"' || p[i] == '\\')
			fprintf(f, "\\%c", p[i]);
		else if (p[i] == '\n')
			fputs("\\n", f);
		else if (p[i] == '\t')
			fputs("\\t", f);
		else if (p[i] < 0x20 || p[i] == 0x7f || l == 0)
			fprintf(f, "\\u%04x", p[i]);
		else
			fputc(p[i], f);
		i++;
	}
	fputc('"', f);
}

static void
ctl_json_base64(FILE *f, const void *data, size_t len)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	char out[4];

	fputc('"', f);
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t left = len - i;

		if (left > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (left > 2)
			v |= p[i + 2];
		out[0] = abc[v >> 18 & 63];
		out[1] = abc[v >> 12 & 63];
		out[2] = left > 1 ? abc[v >> 6 & 63] : '=';
		out[3] = left > 2 ? abc[v & 63] : '=';
		fwrite(out, 1, 4, f);
	}
	fputc('"', f);
}

/* A mailbox as a JSON object; the fields of ls, stat and create. */
static void
ctl_json_mbox(FILE *f, const struct ipc_mbox_info *m)
{
	char owner[64], group[64];

	fputs("{\"name\":", f);
	ctl_json_str(f, m->name, sizeof(m->name));
	fputs(",\"uuid\":", f);
	ctl_json_str(f, m->uuid, sizeof(m->uuid));
	fprintf(f, ",\"depth\":%" PRIu32 ",\"bytes\":%" PRIu64
	    ",\"capacity\":%" PRIu32 ",\"max_bytes\":%" PRIu64
	    ",\"waiting_receivers\":%" PRIu32 ",\"waiting_senders\":%"
	    PRIu32 ",\"uid\":%u,\"gid\":%u,\"owner\":",
	    m->depth, m->bytes, m->capacity, m->max_bytes,
	    m->waiting_receivers, m->waiting_senders, (unsigned)m->uid,
	    (unsigned)m->gid);
	ctl_json_str(f, ctl_idname((unsigned)m->uid, 0, owner,
	    sizeof(owner)), sizeof(owner));
	fputs(",\"group\":", f);
	ctl_json_str(f, ctl_idname((unsigned)m->gid, 1, group,
	    sizeof(group)), sizeof(group));
	fprintf(f, ",\"mode\":\"%04" PRIo32 "\",\"messages_in\":%" PRIu64
	    ",\"messages_out\":%" PRIu64 ",\"created_ns\":%" PRIu64
	    ",\"durable\":%s}", m->mode & 07777, m->msgs_in, m->msgs_out,
	    m->created_ns, m->durable ? "true" : "false");
}

/* A message as a JSON object; the fields of recv and peek. */
static void
ctl_json_msg(FILE *f, const struct ipc_msg_info *m, const void *data,
    size_t len)
{
	fprintf(f, "{\"id\":%" PRIu64 ",\"pid\":%ld,\"uid\":%u,\"gid\":%u"
	    ",\"sender\":", m->id, (long)m->pid, (unsigned)m->uid,
	    (unsigned)m->gid);
	ctl_json_str(f, m->sender, sizeof(m->sender));
	fputs(",\"source\":", f);
	ctl_json_str(f, m->source, sizeof(m->source));
	fprintf(f, ",\"len\":%zu,\"enqueue_ns\":%" PRIu64 ",\"redelivered\":"
	    "%s,\"payload_base64\":", len, m->enqueue_ns,
	    m->flags & IPC_MSG_REDELIVERED ? "true" : "false");
	ctl_json_base64(f, data, len);
	fputc('}', f);
}

/* Flush stdout; on failure say so.  Returns 0 or -1. */
static int
ctl_flush(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	if (errno == 0)
		errno = EIO;
	ctl_fail("write to standard output", NULL);
	return -1;
}

/* --- signals -------------------------------------------------------------- */

/* A signal handler writes the signal's number here; loops poll the read
 * end with their other descriptors, so no wait misses a signal. */
static int ctl_sigpipe[2] = { -1, -1 };

static void
ctl_on_signal(int sig)
{
	int saved = errno;
	unsigned char b = (unsigned char)sig;

	if (write(ctl_sigpipe[1], &b, 1) < 0) {
		/* Full: there are wake-ups enough waiting already. */
	}
	errno = saved;
}

static int
ctl_catch(int sig)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = ctl_on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	return sigaction(sig, &sa, NULL);
}

/* Catch the signals in sigs (0-terminated) from now on.  Returns 0, or
 * -1 with errno. */
static int
ctl_signals(const int *sigs)
{
	if (ctl_sigpipe[0] < 0 && pipe(ctl_sigpipe) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		int fl = fcntl(ctl_sigpipe[i], F_GETFL);

		if (fl < 0 || fcntl(ctl_sigpipe[i], F_SETFL,
		    fl | O_NONBLOCK) < 0 ||
		    fcntl(ctl_sigpipe[i], F_SETFD, FD_CLOEXEC) < 0)
			return -1;
	}
	for (; *sigs != 0; sigs++)
		if (ctl_catch(*sigs) < 0)
			return -1;
	return 0;
}

/* The command is finishing: a second stop signal (timeout(1), for one,
 * signals the whole process group after the process itself) must not
 * turn its clean exit into a kill, so the signals are ignored from now
 * on rather than reset.  The pipe is closed. */
static void
ctl_signals_end(const int *sigs)
{
	for (; *sigs != 0; sigs++)
		signal(*sigs, SIG_IGN);
	for (int i = 0; i < 2; i++)
		if (ctl_sigpipe[i] >= 0) {
			close(ctl_sigpipe[i]);
			ctl_sigpipe[i] = -1;
		}
}

/* The next signal caught, or 0. */
static int
ctl_signal_take(void)
{
	unsigned char b;

	if (ctl_sigpipe[0] >= 0 && read(ctl_sigpipe[0], &b, 1) == 1)
		return b;
	return 0;
}

/* --- connection -------------------------------------------------------- */

static struct ipc_conn *
ctl_open(struct ctl *x)
{
	struct ipc_conn *c = ipc_open(x->where[0] ? x->where : NULL);
	int err = errno;

	if (c != NULL)
		return c;
	if (x->where[0] == '\0' &&
	    ipc_default_socket(x->path, sizeof(x->path)) < 0)
		snprintf(x->path, sizeof(x->path), "the default socket");
	if (err == ENOENT || err == ECONNREFUSED)
		ctl_fail_err(err, "no broker at", x->path);
	else
		ctl_fail_err(err, "connect to", x->path);
	return NULL;
}

/* --- options -------------------------------------------------------------- */

/* Every command takes the global options too, so they may come after the
 * command as well as before it. */
#define CTL_GLOBAL_SHORT	":s:jhV"
#define CTL_GLOBAL_LONG \
	{ "socket", required_argument, NULL, 's' }, \
	{ "json", no_argument, NULL, 'j' }, \
	{ "help", no_argument, NULL, 'h' }, \
	{ "version", no_argument, NULL, 'V' }

/* Values of long options without a short form. */
enum {
	CTL_O_CAPACITY = 0x200,
	CTL_O_MAX_BYTES,
	CTL_O_MODE,
	CTL_O_RENDEZVOUS,
	CTL_O_EXCLUSIVE,
	CTL_O_DURABLE,
	CTL_O_NONBLOCK,
	CTL_O_TIMEOUT,
};

static const struct ctl_cmd ctl_cmds[];

static void
ctl_usage(FILE *f)
{
	fprintf(f,
"Usage: %s [OPTIONS] COMMAND [ARGS]\n"
"Inspect and drive the libipc broker ipcd.\n"
"\n"
"Commands:\n"
"  ls                       list the mailboxes\n"
"  stat NAME                show one mailbox\n"
"  create NAME              create a mailbox\n"
"  rm NAME                  delete a mailbox and its messages\n"
"  chmod NAME MODE          set a mailbox's mode (octal)\n"
"  chown NAME USER[:GROUP]  set a mailbox's owner and group\n"
"  send ADDR [MESSAGE]      send MESSAGE, or standard input, to ADDR\n"
"  recv [ADDR]              receive messages to standard output\n"
"  peek NAME                show queued messages without taking them\n"
"  ps                       list the connected processes\n"
"  monitor [ADDR...]        print the broker's events as they happen\n"
"  stats                    show the broker's counters\n"
"  top                      mailboxes and message rates, refreshed\n"
"  links                    list the links to and from other brokers\n"
"  keygen FILE              write a new key file for links (no broker)\n"
"  help [COMMAND]           show the help of COMMAND\n"
"\n"
"Options, before or after COMMAND:\n"
"  -s, --socket PATH  the broker's socket (default: $IPC_SOCKET, else as\n"
"                     ipc_open(NULL)), or tls://HOST[:PORT] for the broker\n"
"                     of another host (key: $IPC_TLS_PSK, or certificate:\n"
"                     $IPC_TLS_CA, $IPC_TLS_CERT, $IPC_TLS_KEY)\n"
"  -j, --json         print JSON\n"
"  -h, --help         show this help, or the help of COMMAND\n"
"  -V, --version      show the version\n"
"\n"
"ADDR is a mailbox name or pid:P, or on another host NAME@HOST[:PORT] or\n"
"pid:P@HOST[:PORT].  Exit status: 0 success, 1 an error from the broker\n"
"or the system, 2 a usage error.  See ipcctl(1).\n",
	    prog);
}

static void
ctl_cmd_usage(const struct ctl_cmd *cmd, FILE *f)
{
	fprintf(f, "Usage: %s [OPTIONS] %s%s%s\n%s"
	    "  -s, --socket PATH, -j, --json, -h, --help: see '%s --help'\n",
	    prog, cmd->name, cmd->synopsis[0] ? " " : "", cmd->synopsis,
	    cmd->help, prog);
}

static void
ctl_version(void)
{
	printf("%s (%s) %s\n", prog, PACKAGE_NAME, PACKAGE_VERSION);
}

static int
ctl_set_socket(struct ctl *x, const char *path)
{
	if (path[0] == '\0') {
		ctl_usage_error(x, "--socket: empty path");
		return -1;
	}
	if (strlen(path) >= sizeof(x->path)) {
		ctl_usage_error(x, "--socket: path too long");
		return -1;
	}
	snprintf(x->path, sizeof(x->path), "%s", path);
	/* tls://HOST[:PORT]: the broker of another host, as ipc_open()
	 * takes it (credentials from IPC_TLS_PSK or IPC_TLS_CA/CERT/KEY). */
	if (strncmp(path, "tls://", 6) == 0)
		snprintf(x->where, sizeof(x->where), "%s", path);
	else
		snprintf(x->where, sizeof(x->where), "unix:%s", path);
	return 0;
}

/* Say which option getopt_long() refused. */
static int
ctl_bad_option(const struct ctl *x, int opt, int argc, char **argv)
{
	const char *arg = optind - 1 >= 1 && optind - 1 < argc ?
	    argv[optind - 1] : "";
	char safe[64];
	int isl = strncmp(arg, "--", 2) == 0;

	if (opt == ':') {
		if (isl)
			return ctl_usage_error(x, "option '%s' needs an "
			    "argument", ctl_safe(safe, sizeof(safe), arg,
			    SIZE_MAX));
		return ctl_usage_error(x, "option '-%c' needs an argument",
		    optopt);
	}
	if (optopt == 0 || isl)
		return ctl_usage_error(x, "unknown option or bad use of '%s'",
		    ctl_safe(safe, sizeof(safe), arg, SIZE_MAX));
	if (optopt > 0x20 && optopt < 0x7f)
		return ctl_usage_error(x, "unknown option '-%c'", optopt);
	return ctl_usage_error(x, "unknown option");
}

/* getopt_long() over a command's arguments, taking the global options
 * itself.  Returns the next option of the command's own, -1 at the end,
 * CTL_OPT_DONE (help or version printed) or CTL_OPT_BAD (usage error
 * printed). */
static int
ctl_getopt(struct ctl *x, int argc, char **argv, const char *shortopts,
    const struct option *longopts)
{
	for (;;) {
		int opt = getopt_long(argc, argv, shortopts, longopts, NULL);

		switch (opt) {
		case 's':
			if (ctl_set_socket(x, optarg) < 0)
				return CTL_OPT_BAD;
			break;
		case 'j':
			x->json = 1;
			break;
		case 'h':
			ctl_cmd_usage(x->cmd, stdout);
			return CTL_OPT_DONE;
		case 'V':
			ctl_version();
			return CTL_OPT_DONE;
		case ':':
		case '?':
			ctl_bad_option(x, opt, argc, argv);
			return CTL_OPT_BAD;
		default:
			return opt;
		}
	}
}

/* The exit status for what ctl_getopt() returned that ends the run. */
static int
ctl_opt_exit(int opt)
{
	return opt == CTL_OPT_DONE ? CTL_OK : CTL_USAGE;
}

/* A command that takes only the global options and nmin to nmax
 * operands.  Returns -1 to go on, or the exit status. */
static int
ctl_plain_args(struct ctl *x, int argc, char **argv, int nmin, int nmax)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT,
	    opts)) != -1)
		return ctl_opt_exit(opt);
	if (ctl_operands(x, argc - optind, nmin, nmax) < 0)
		return CTL_USAGE;
	return -1;
}

/* --- ls, stat ------------------------------------------------------------ */

static int
ctl_list_cb(const struct ipc_mbox_info *info, void *arg)
{
	return ctl_vec_push(arg, info) < 0 ? 1 : 0;
}

static int
ctl_by_name(const void *a, const void *b)
{
	const struct ipc_mbox_info *p = a, *q = b;

	return strcmp(p->name, q->name);
}

/* A vector for items of size bytes, before a walk fills it. */
static struct ctl_vec *
ctl_vec_start(struct ctl_vec *v, size_t size)
{
	memset(v, 0, sizeof(*v));
	v->size = size;
	return v;
}

/* After the walk that returned r: sorted by cmp, or freed on failure.
 * 0, or -1 with errno. */
static int
ctl_vec_sorted(int r, struct ctl_vec *v, int (*cmp)(const void *,
    const void *))
{
	if (ctl_walked(r, v) < 0) {
		int err = errno;

		ctl_vec_free(v);
		errno = err;
		return -1;
	}
	if (v->n > 1)
		qsort(v->v, v->n, v->size, cmp);
	return 0;
}

/* Every mailbox into *boxes, sorted by name.  0, or -1 with errno. */
static int
ctl_list(struct ipc_conn *c, struct ctl_vec *boxes)
{
	return ctl_vec_sorted(ipc_mbox_list(c, ctl_list_cb, ctl_vec_start(boxes,
	    sizeof(struct ipc_mbox_info))), boxes, ctl_by_name);
}

static int
ctl_ls_text(const struct ctl_vec *boxes)
{
	static const char *const head[] = { "NAME", "UUID", "DEPTH",
	    "BYTES", "CAPACITY", "MAX_BYTES", "RECEIVERS", "SENDERS", "OWNER",
	    "GROUP", "MODE", "IN", "OUT", "DURABLE" };
	struct ctl_table t;

	ctl_tab_init(&t, head, "llrrrrrrllrrrl");
	for (size_t i = 0; i < boxes->n; i++) {
		const struct ipc_mbox_info *m =
		    (const struct ipc_mbox_info *)boxes->v + i;
		char name[IPC_NAME_MAX + 1], uuid[40], depth[24], bytes[24],
		    cap[24], maxb[24], rw[24], sw[24], owner[64], group[64],
		    mode[16], in[24], out[24];

		snprintf(depth, sizeof(depth), "%" PRIu32, m->depth);
		snprintf(bytes, sizeof(bytes), "%" PRIu64, m->bytes);
		snprintf(cap, sizeof(cap), "%" PRIu32, m->capacity);
		snprintf(maxb, sizeof(maxb), "%" PRIu64, m->max_bytes);
		snprintf(rw, sizeof(rw), "%" PRIu32, m->waiting_receivers);
		snprintf(sw, sizeof(sw), "%" PRIu32, m->waiting_senders);
		snprintf(mode, sizeof(mode), "%04" PRIo32, m->mode & 07777);
		snprintf(in, sizeof(in), "%" PRIu64, m->msgs_in);
		snprintf(out, sizeof(out), "%" PRIu64, m->msgs_out);
		if (ctl_tab_row(&t, (const char *const []){
		    ctl_safe(name, sizeof(name), m->name, sizeof(m->name)),
		    ctl_safe(uuid, sizeof(uuid), m->uuid, sizeof(m->uuid)),
		    depth, bytes, cap, maxb, rw, sw,
		    ctl_idname((unsigned)m->uid, 0, owner, sizeof(owner)),
		    ctl_idname((unsigned)m->gid, 1, group, sizeof(group)),
		    mode, in, out, m->durable ? "yes" : "no" }) < 0) {
			ctl_tab_free(&t);
			return ctl_fail_err(ENOMEM, "ls", NULL);
		}
	}
	ctl_tab_print(&t, stdout, SIZE_MAX);
	ctl_tab_free(&t);
	return CTL_OK;
}

/* Connect, fetch one list with fetch(), disconnect: what ls and stats
 * show.  CTL_OK with *out filled, or the failure already reported. */
static int
ctl_fetch(struct ctl *x, const char *what,
    int (*fetch)(struct ipc_conn *, struct ctl_vec *), struct ctl_vec *out)
{
	struct ipc_conn *c;
	int rc = CTL_OK;

	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (fetch(c, out) < 0)
		rc = ctl_fail(what, NULL);
	ipc_close(c);
	return rc;
}

static int
ctl_ls(struct ctl *x, int argc, char **argv)
{
	struct ctl_vec boxes;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 0, 0)) >= 0)
		return rc;
	if ((rc = ctl_fetch(x, "ls", ctl_list, &boxes)) != CTL_OK)
		return rc;
	if (x->json) {
		fputs("{\"mailboxes\":[", stdout);
		for (size_t i = 0; i < boxes.n; i++) {
			if (i > 0)
				putchar(',');
			ctl_json_mbox(stdout,
			    (const struct ipc_mbox_info *)boxes.v + i);
		}
		fputs("]}\n", stdout);
		rc = CTL_OK;
	} else {
		rc = ctl_ls_text(&boxes);
	}
	ctl_vec_free(&boxes);
	if (ctl_flush() < 0)
		rc = CTL_FAIL;
	return rc;
}

/* One mailbox as "key: value" lines, or as JSON. */
static void
ctl_print_mbox(const struct ctl *x, const struct ipc_mbox_info *m)
{
	char name[IPC_NAME_MAX + 1], uuid[40], owner[64], group[64],
	    when[64];

	if (x->json) {
		ctl_json_mbox(stdout, m);
		putchar('\n');
		return;
	}
	printf("name: %s\nuuid: %s\n",
	    ctl_safe(name, sizeof(name), m->name, sizeof(m->name)),
	    ctl_safe(uuid, sizeof(uuid), m->uuid, sizeof(m->uuid)));
	printf("depth: %" PRIu32 "\nbytes: %" PRIu64 "\ncapacity: %" PRIu32
	    "\nmax_bytes: %" PRIu64 "\nwaiting_receivers: %" PRIu32
	    "\nwaiting_senders: %" PRIu32 "\n", m->depth, m->bytes,
	    m->capacity, m->max_bytes, m->waiting_receivers,
	    m->waiting_senders);
	printf("uid: %u\ngid: %u\nowner: %s\ngroup: %s\nmode: %04" PRIo32
	    "\n", (unsigned)m->uid, (unsigned)m->gid,
	    ctl_idname((unsigned)m->uid, 0, owner, sizeof(owner)),
	    ctl_idname((unsigned)m->gid, 1, group, sizeof(group)),
	    m->mode & 07777);
	printf("messages_in: %" PRIu64 "\nmessages_out: %" PRIu64
	    "\ncreated_ns: %" PRIu64 "\ncreated: %s\ndurable: %s\n",
	    m->msgs_in, m->msgs_out, m->created_ns,
	    ctl_clock(when, sizeof(when), m->created_ns, 1),
	    m->durable ? "yes" : "no");
}

static int
ctl_stat(struct ctl *x, int argc, char **argv)
{
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	const char *name;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 1, 1)) >= 0)
		return rc;
	name = argv[optind];
	if (ctl_mailbox(x, name) < 0)
		return CTL_USAGE;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (ipc_mbox_stat(c, name, &info) < 0) {
		rc = ctl_fail("stat", name);
		ipc_close(c);
		return rc;
	}
	ipc_close(c);
	ctl_print_mbox(x, &info);
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

/* --- create, rm, chmod, chown -------------------------------------------- */

static int
ctl_create(struct ctl *x, int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ "capacity", required_argument, NULL, CTL_O_CAPACITY },
		{ "max-bytes", required_argument, NULL, CTL_O_MAX_BYTES },
		{ "mode", required_argument, NULL, CTL_O_MODE },
		{ "rendezvous", no_argument, NULL, CTL_O_RENDEZVOUS },
		{ "exclusive", no_argument, NULL, CTL_O_EXCLUSIVE },
		{ "durable", no_argument, NULL, CTL_O_DURABLE },
		{ NULL, 0, NULL, 0 },
	};
	struct ipc_mbox_attr attr;
	struct ipc_mbox_info info;
	struct ipc_conn *c;
	const char *name;
	int opt, rc, rendezvous = 0;
	uint64_t v;

	ipc_mbox_attr_init(&attr);
	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT,
	    opts)) != -1) {
		switch (opt) {
		case CTL_O_CAPACITY:
			if (ctl_number(x, "--capacity", optarg, 10, 0,
			    UINT32_MAX - 1, &v) < 0)
				return CTL_USAGE;
			attr.capacity = (int64_t)v;
			break;
		case CTL_O_MAX_BYTES:
			if (ctl_number(x, "--max-bytes", optarg, 10, 1,
			    INT64_MAX, &v) < 0)
				return CTL_USAGE;
			attr.max_bytes = (int64_t)v;
			break;
		case CTL_O_MODE:
			if (ctl_number(x, "--mode", optarg, 8, 0, 0777,
			    &v) < 0)
				return CTL_USAGE;
			attr.mode = (int)v;
			break;
		case CTL_O_RENDEZVOUS:
			rendezvous = 1;
			break;
		case CTL_O_EXCLUSIVE:
			attr.exclusive = 1;
			break;
		case CTL_O_DURABLE:
			attr.durable = 1;
			break;
		default:
			return ctl_opt_exit(opt);
		}
	}
	if (ctl_operands(x, argc - optind, 1, 1) < 0)
		return CTL_USAGE;
	if (rendezvous) {
		if (attr.capacity > 0)
			return ctl_usage_error(x, "--rendezvous is capacity "
			    "0, not %" PRId64, attr.capacity);
		if (attr.durable)
			return ctl_usage_error(x, "a durable mailbox cannot "
			    "be a rendezvous");
		attr.capacity = 0;
	}
	if (attr.durable && attr.capacity == 0)
		return ctl_usage_error(x, "a durable mailbox needs a "
		    "capacity above 0");
	name = argv[optind];
	if (ctl_mailbox(x, name) < 0)
		return CTL_USAGE;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (ipc_mbox_create(c, name, &attr, &info) < 0) {
		rc = ctl_fail("create", name);
		ipc_close(c);
		return rc;
	}
	ipc_close(c);
	if (x->json)
		ctl_print_mbox(x, &info);
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

static int
ctl_rm(struct ctl *x, int argc, char **argv)
{
	struct ipc_conn *c;
	const char *name;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 1, 1)) >= 0)
		return rc;
	name = argv[optind];
	if (ctl_mailbox(x, name) < 0)
		return CTL_USAGE;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (ipc_mbox_delete(c, name) < 0) {
		rc = ctl_fail("rm", name);
		ipc_close(c);
		return rc;
	}
	ipc_close(c);
	if (x->json) {
		fputs("{\"name\":", stdout);
		ctl_json_str(stdout, name, SIZE_MAX);
		fputs(",\"deleted\":true}\n", stdout);
	}
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

/* After chmod or chown: with --json, the mailbox as it is now. */
static int
ctl_changed(struct ctl *x, struct ipc_conn *c, const char *name)
{
	struct ipc_mbox_info info;

	if (x->json) {
		if (ipc_mbox_stat(c, name, &info) < 0)
			return ctl_fail("stat", name);
		ctl_print_mbox(x, &info);
	}
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

static int
ctl_chmod(struct ctl *x, int argc, char **argv)
{
	struct ipc_conn *c;
	const char *name;
	uint64_t mode;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 2, 2)) >= 0)
		return rc;
	name = argv[optind];
	if (ctl_mailbox(x, name) < 0 ||
	    ctl_number(x, "MODE", argv[optind + 1], 8, 0, 0777, &mode) < 0)
		return CTL_USAGE;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (ipc_mbox_chmod(c, name, (int)mode) < 0)
		rc = ctl_fail("chmod", name);
	else
		rc = ctl_changed(x, c, name);
	ipc_close(c);
	return rc;
}

/* A user or group, by name or number, into *id_out (and a user's login
 * group into *gid_out, or (gid_t)-1 when it has no passwd entry). */
static int
ctl_lookup(const struct ctl *x, const char *s, int group, unsigned *id_out,
    gid_t *gid_out)
{
	char safe[64];
	uint64_t v;
	int numeric = s[0] != '\0' && strspn(s, "0123456789") == strlen(s);

	if (gid_out != NULL)
		*gid_out = (gid_t)-1;
	if (group) {
		struct group *gr = getgrnam(s);

		if (gr != NULL) {
			*id_out = (unsigned)gr->gr_gid;
			return 0;
		}
	} else {
		struct passwd *pw = getpwnam(s);

		if (pw != NULL) {
			*id_out = (unsigned)pw->pw_uid;
			if (gid_out != NULL)
				*gid_out = pw->pw_gid;
			return 0;
		}
	}
	if (numeric) {
		/* (uid_t)-1 means "unchanged": not a user. */
		if (ctl_number(x, group ? "GROUP" : "USER", s, 10, 0,
		    UINT32_MAX - 1, &v) < 0)
			return -1;
		*id_out = (unsigned)v;
		if (!group && gid_out != NULL) {
			struct passwd *pw = getpwuid((uid_t)v);

			if (pw != NULL)
				*gid_out = pw->pw_gid;
		}
		return 0;
	}
	ctl_usage_error(x, "unknown %s '%s'", group ? "group" : "user",
	    ctl_safe(safe, sizeof(safe), s, SIZE_MAX));
	return -1;
}

/* "USER", "USER:GROUP", ":GROUP", or "USER:" (the user's login group,
 * as chown(1)). */
static int
ctl_owner_spec(const struct ctl *x, char *spec, uid_t *uid, gid_t *gid)
{
	char *colon = strchr(spec, ':'), *grp = NULL;
	gid_t login = (gid_t)-1;
	unsigned id;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (colon != NULL) {
		*colon = '\0';
		grp = colon + 1;
	}
	if (spec[0] == '\0' && (grp == NULL || grp[0] == '\0')) {
		ctl_usage_error(x, "USER[:GROUP] is empty");
		return -1;
	}
	if (spec[0] != '\0') {
		if (ctl_lookup(x, spec, 0, &id, &login) < 0)
			return -1;
		*uid = (uid_t)id;
	}
	if (grp != NULL && grp[0] != '\0') {
		if (ctl_lookup(x, grp, 1, &id, NULL) < 0)
			return -1;
		*gid = (gid_t)id;
	} else if (grp != NULL) {
		if (login == (gid_t)-1) {
			char safe[64];

			ctl_usage_error(x, "user '%s' has no login group",
			    ctl_safe(safe, sizeof(safe), spec, SIZE_MAX));
			return -1;
		}
		*gid = login;
	}
	return 0;
}

static int
ctl_chown(struct ctl *x, int argc, char **argv)
{
	struct ipc_conn *c;
	const char *name;
	uid_t uid;
	gid_t gid;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 2, 2)) >= 0)
		return rc;
	name = argv[optind];
	if (ctl_mailbox(x, name) < 0 ||
	    ctl_owner_spec(x, argv[optind + 1], &uid, &gid) < 0)
		return CTL_USAGE;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (ipc_mbox_chown(c, name, uid, gid) < 0)
		rc = ctl_fail("chown", name);
	else
		rc = ctl_changed(x, c, name);
	ipc_close(c);
	return rc;
}

/* --- send -------------------------------------------------------------- */

/* All of descriptor fd into a buffer of ours (free() it), binary-safe.
 * Returns 0, or -1 with errno (EMSGSIZE past CTL_STDIN_MAX, ENOMEM, or
 * read's). */
static int
ctl_read_all(int fd, uint8_t **buf_out, size_t *len_out)
{
	uint8_t *buf = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t n;

	for (;;) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 65536;

			if (cap > CTL_STDIN_MAX) {
				free(buf);
				errno = EMSGSIZE;
				return -1;
			}
			/* One byte past the cap tells "too long" apart. */
			if (ncap > CTL_STDIN_MAX + 1)
				ncap = CTL_STDIN_MAX + 1;
			if ((p = realloc(buf, ncap)) == NULL) {
				free(buf);
				errno = ENOMEM;
				return -1;
			}
			buf = p;
			cap = ncap;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CTL_STDIN_MAX) {
			free(buf);
			errno = EMSGSIZE;
			return -1;
		}
	}
	*buf_out = buf;
	*len_out = len;
	return 0;
}

static int
ctl_send(struct ctl *x, int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ "nonblock", no_argument, NULL, CTL_O_NONBLOCK },
		{ "timeout", required_argument, NULL, CTL_O_TIMEOUT },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	int opt, rc, verbose = 0, timeout = IPC_FOREVER, nonblock = 0;
	uint8_t *buf = NULL;
	struct ipc_addr a;
	struct ipc_conn *c;
	const char *to;
	uint64_t id = 0;
	size_t len;

	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT "v",
	    opts)) != -1) {
		switch (opt) {
		case CTL_O_NONBLOCK:
			nonblock = 1;
			break;
		case CTL_O_TIMEOUT:
			if (ctl_timeout(x, optarg, &timeout) < 0)
				return CTL_USAGE;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			return ctl_opt_exit(opt);
		}
	}
	if (ctl_operands(x, argc - optind, 1, 2) < 0)
		return CTL_USAGE;
	to = argv[optind];
	if (ctl_address(x, to, &a) < 0)
		return CTL_USAGE;
	if (nonblock)
		timeout = 0;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (argc - optind == 2) {
		len = strlen(argv[optind + 1]);
		rc = ipc_send_timed(c, to, argv[optind + 1], len, timeout,
		    &id);
	} else if (ctl_read_all(STDIN_FILENO, &buf, &len) < 0) {
		rc = ctl_fail("send: read standard input", NULL);
		ipc_close(c);
		return rc;
	} else {
		rc = ipc_send_timed(c, to, buf, len, timeout, &id);
		free(buf);
	}
	if (rc < 0) {
		rc = ctl_fail("send", to);
		ipc_close(c);
		return rc;
	}
	ipc_close(c);
	if (verbose)
		fprintf(stderr, "sent id %" PRIu64 "\n", id);
	if (x->json)
		printf("{\"id\":%" PRIu64 "}\n", id);
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

/* --- recv -------------------------------------------------------------- */

static uint64_t
ctl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * The next message from from (NULL: our direct queue), waiting up to
 * timeout_ms (IPC_FOREVER: no limit).  The library retries its own waits
 * on EINTR, so a wait here is an armed receive polled together with the
 * signal pipe: a signal ends it with EINTR.  The message, if one came,
 * is in *buf_out (free() it).  Returns its length, or -1 with errno.
 */
static ssize_t
ctl_recv_one(struct ipc_conn *c, const char *from, int timeout_ms,
    void **buf_out, struct ipc_msg_info *info)
{
	uint64_t deadline = ctl_mono_ms() + (uint64_t)(timeout_ms > 0 ?
	    timeout_ms : 0);
	int fd;

	if (timeout_ms == 0)
		return ipc_recv_alloc(c, from, buf_out, 0, info);
	if ((fd = ipc_fd(c)) < 0)
		return -1;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = ctl_sigpipe[0], .events = POLLIN },
		};
		int left = -1, r;
		ssize_t n;

		/* EBUSY: still armed from the last round.  Armed again
		 * after an arm that ended in an error, which the
		 * receive below has then reported if it lasts. */
		if (ipc_recv_arm(c, from) < 0 && errno != EBUSY)
			return -1;
		if (timeout_ms > 0) {
			uint64_t now = ctl_mono_ms();

			left = now >= deadline ? 0 : (int)(deadline - now);
		}
		r = poll(p, 2, left);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (p[1].revents != 0 && ctl_signal_take() != 0) {
			errno = EINTR;
			return -1;
		}
		if (p[0].revents != 0) {
			n = ipc_recv_alloc(c, from, buf_out, 0, info);
			if (n >= 0 || errno != EAGAIN)
				return n;
		} else if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
}

/* Write all of buf to descriptor fd.  0, or -1 with errno. */
static int
ctl_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static const int ctl_stop_sigs[] = { SIGINT, SIGTERM, 0 };

static int
ctl_recv(struct ctl *x, int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ "count", required_argument, NULL, 'n' },
		{ "follow", no_argument, NULL, 'f' },
		{ "nonblock", no_argument, NULL, CTL_O_NONBLOCK },
		{ "timeout", required_argument, NULL, CTL_O_TIMEOUT },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	int opt, verbose = 0, follow = 0, nonblock = 0;
	int timeout = IPC_FOREVER, err = 0, out_failed = 0;
	uint64_t count = 1, n;
	const char *from = NULL;
	struct ipc_conn *c;
	struct ipc_addr a;
	int count_given = 0, accept_remote = 0;

	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT "n:fv",
	    opts)) != -1) {
		switch (opt) {
		case 'n':
			if (ctl_number(x, "--count", optarg, 10, 1,
			    UINT32_MAX, &count) < 0)
				return CTL_USAGE;
			count_given = 1;
			break;
		case 'f':
			follow = 1;
			break;
		case CTL_O_NONBLOCK:
			nonblock = 1;
			break;
		case CTL_O_TIMEOUT:
			if (ctl_timeout(x, optarg, &timeout) < 0)
				return CTL_USAGE;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			return ctl_opt_exit(opt);
		}
	}
	if (ctl_operands(x, argc - optind, 0, 1) < 0)
		return CTL_USAGE;
	if (argc - optind == 1) {
		from = argv[optind];
		if (ctl_address(x, from, &a) < 0)
			return CTL_USAGE;
	}
	if (nonblock)
		timeout = 0;
	/* Messages from a process on another host: only asked for. */
	accept_remote = from != NULL && a.kind == IPC_ADDR_PID &&
	    a.host[0] != '\0';
	/* --follow: until interrupted, or -n messages if given. */
	if (follow && !count_given)
		count = 0;
	if (timeout != 0 && ctl_signals(ctl_stop_sigs) < 0)
		return ctl_fail("recv: signals", NULL);
	if ((c = ctl_open(x)) == NULL) {
		ctl_signals_end(ctl_stop_sigs);
		return CTL_FAIL;
	}
	if (accept_remote && ipc_accept_remote(c, 1) < 0) {
		err = errno;
		ipc_close(c);
		ctl_signals_end(ctl_stop_sigs);
		return ctl_fail_err(err, "recv", from);
	}
	for (n = 0; count == 0 || n < count; n++) {
		struct ipc_msg_info info;
		void *buf = NULL;
		ssize_t len = ctl_recv_one(c, from, timeout, &buf, &info);

		if (len < 0) {
			err = errno;
			break;
		}
		if (x->json) {
			if (!follow)
				fputs(n > 0 ? "," : "{\"messages\":[",
				    stdout);
			ctl_json_msg(stdout, &info, buf, (size_t)len);
			if (follow) {
				putchar('\n');
				if (fflush(stdout) != 0 || ferror(stdout)) {
					err = errno ? errno : EIO;
					out_failed = 1;
				}
			}
		} else {
			if (verbose) {
				char sender[IPC_ADDR_MAX], source[IPC_ADDR_MAX];

				fprintf(stderr, "id %" PRIu64 " from %s uid %u "
				    "gid %u len %zd source %s%s\n", info.id,
				    ctl_safe(sender, sizeof(sender),
				    info.sender, sizeof(info.sender)),
				    (unsigned)info.uid, (unsigned)info.gid, len,
				    ctl_safe(source, sizeof(source),
				    info.source, sizeof(info.source)),
				    info.flags & IPC_MSG_REDELIVERED ?
				    " redelivered" : "");
			}
			if (ctl_write_all(STDOUT_FILENO, buf,
			    (size_t)len) < 0) {
				err = errno;
				out_failed = 1;
			}
		}
		free(buf);
		if (out_failed)
			break;
	}
	/* The messages taken before an error are shown too; after an
	 * error with none, nothing is. */
	if (x->json && !follow && (n > 0 || err == 0)) {
		fputs(n > 0 ? "]}\n" : "{\"messages\":[]}\n", stdout);
		if (fflush(stdout) != 0 || ferror(stdout)) {
			out_failed = 1;
			err = errno ? errno : EIO;
		}
	}
	ctl_signals_end(ctl_stop_sigs);
	if (out_failed) {
		/* Not closed on purpose: the last message is not yet
		 * acknowledged, and so goes back to its queue as the
		 * process exits. */
		return ctl_fail_err(err, "recv: write to standard output",
		    NULL);
	}
	ipc_close(c);
	if (err == 0)
		return CTL_OK;
	/* --follow ends well when interrupted, or when --timeout or
	 * --nonblock found nothing more. */
	if (follow && (err == EINTR || (timeout != IPC_FOREVER &&
	    (err == EAGAIN || err == ETIMEDOUT))))
		return CTL_OK;
	return ctl_fail_err(err, "recv", from);
}

/* --- peek -------------------------------------------------------------- */

struct ctl_peek {
	const struct ctl *x;
	struct ctl_table tab;
	uint64_t now_ns;
	size_t n;
	int err;
};

static int
ctl_peek_cb(const struct ipc_msg_info *info, const void *data, void *arg)
{
	struct ctl_peek *pk = arg;
	char id[24], sender[IPC_ADDR_MAX], len[24], age[32];
	char preview[CTL_PREVIEW + 1];
	const unsigned char *d = data;
	size_t i, plen = info->len < CTL_PREVIEW ? info->len : CTL_PREVIEW;

	if (data == NULL && info->len > 0)
		plen = 0;
	if (pk->x->json) {
		fputs(pk->n++ > 0 ? "," : "{\"messages\":[", stdout);
		ctl_json_msg(stdout, info, data, data != NULL ? info->len : 0);
		return 0;
	}
	for (i = 0; i < plen; i++)
		preview[i] = d[i] >= 0x20 && d[i] < 0x7f ? (char)d[i] : '.';
	preview[plen] = '\0';
	snprintf(id, sizeof(id), "%" PRIu64, info->id);
	snprintf(len, sizeof(len), "%zu", info->len);
	ctl_age(age, sizeof(age), pk->now_ns > info->enqueue_ns ?
	    pk->now_ns - info->enqueue_ns : 0);
	if (ctl_tab_row(&pk->tab, (const char *const []){ id,
	    ctl_safe(sender, sizeof(sender), info->sender,
	    sizeof(info->sender)), len, age, preview }) < 0) {
		pk->err = ENOMEM;
		return 1;
	}
	return 0;
}

static int
ctl_peek(struct ctl *x, int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ "count", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const head[] = { "ID", "SENDER", "LEN", "AGE",
	    "PREVIEW" };
	struct ctl_peek pk = { .x = x };
	struct ipc_conn *c;
	const char *name;
	uint64_t max = 10;
	int opt, r, rc = CTL_OK;

	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT "n:",
	    opts)) != -1) {
		switch (opt) {
		case 'n':
			if (ctl_number(x, "--count", optarg, 10, 1,
			    UINT_MAX, &max) < 0)
				return CTL_USAGE;
			break;
		default:
			return ctl_opt_exit(opt);
		}
	}
	if (ctl_operands(x, argc - optind, 1, 1) < 0)
		return CTL_USAGE;
	name = argv[optind];
	if (ctl_mailbox(x, name) < 0)
		return CTL_USAGE;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	ctl_tab_init(&pk.tab, head, "rlrrl");
	pk.now_ns = ctl_now_ns();
	r = ipc_mbox_peek(c, name, (unsigned)max, ctl_peek_cb, &pk);
	if (r < 0 || pk.err != 0) {
		if (r >= 0)
			errno = pk.err;
		rc = ctl_fail("peek", name);
	}
	ipc_close(c);
	if (x->json && (pk.n > 0 || rc == CTL_OK))
		fputs(pk.n > 0 ? "]}\n" : "{\"messages\":[]}\n", stdout);
	else if (rc == CTL_OK)
		ctl_tab_print(&pk.tab, stdout, SIZE_MAX);
	ctl_tab_free(&pk.tab);
	if (ctl_flush() < 0)
		rc = CTL_FAIL;
	return rc;
}

/* --- ps ---------------------------------------------------------------- */

static int
ctl_client_cb(const struct ipc_client_info *info, void *arg)
{
	return ctl_vec_push(arg, info) < 0 ? 1 : 0;
}

static int
ctl_by_pid(const void *a, const void *b)
{
	const struct ipc_client_info *p = a, *q = b;

	if (p->pid != q->pid)
		return p->pid < q->pid ? -1 : 1;
	if (p->conn_id != q->conn_id)
		return p->conn_id < q->conn_id ? -1 : 1;
	return 0;
}

/* One process: its connections added up. */
struct ctl_proc {
	pid_t pid;
	uid_t uid;
	char comm[sizeof(((struct ipc_client_info *)0)->comm)];
	uint32_t conns;
	uint64_t queue, sent, received;
};

/* Fold the connections (sorted by pid) into processes, in place of the
 * first of each. */
static size_t
ctl_fold(const struct ipc_client_info *ci, size_t n, struct ctl_proc *out)
{
	size_t np = 0;

	for (size_t i = 0; i < n; i++) {
		struct ctl_proc *p = &out[np > 0 ? np - 1 : 0];

		if (np == 0 || p->pid != ci[i].pid) {
			p = &out[np++];
			memset(p, 0, sizeof(*p));
			p->pid = ci[i].pid;
			p->uid = ci[i].uid;
			memcpy(p->comm, ci[i].comm, sizeof(p->comm));
			p->comm[sizeof(p->comm) - 1] = '\0';
		}
		p->conns++;
		/* All of a process's connections share its queue. */
		if (ci[i].queue_depth > p->queue)
			p->queue = ci[i].queue_depth;
		p->sent += ci[i].msgs_sent;
		p->received += ci[i].msgs_received;
	}
	return np;
}

static int
ctl_ps_text(const struct ctl_proc *ps, size_t n)
{
	static const char *const head[] = { "PID", "UID", "COMMAND",
	    "CONNECTIONS", "QUEUE", "SENT", "RECEIVED" };
	struct ctl_table t;

	ctl_tab_init(&t, head, "rrlrrrr");
	for (size_t i = 0; i < n; i++) {
		char pid[24], uid[24], comm[sizeof(ps[i].comm)], conns[24],
		    queue[24], sent[24], recvd[24];

		snprintf(pid, sizeof(pid), "%ld", (long)ps[i].pid);
		snprintf(uid, sizeof(uid), "%u", (unsigned)ps[i].uid);
		snprintf(conns, sizeof(conns), "%" PRIu32, ps[i].conns);
		snprintf(queue, sizeof(queue), "%" PRIu64, ps[i].queue);
		snprintf(sent, sizeof(sent), "%" PRIu64, ps[i].sent);
		snprintf(recvd, sizeof(recvd), "%" PRIu64, ps[i].received);
		if (ctl_tab_row(&t, (const char *const []){ pid, uid,
		    ctl_safe(comm, sizeof(comm), ps[i].comm,
		    sizeof(ps[i].comm)), conns, queue, sent, recvd }) < 0) {
			ctl_tab_free(&t);
			return ctl_fail_err(ENOMEM, "ps", NULL);
		}
	}
	ctl_tab_print(&t, stdout, SIZE_MAX);
	ctl_tab_free(&t);
	return CTL_OK;
}

static int
ctl_ps(struct ctl *x, int argc, char **argv)
{
	struct ctl_vec conns = { .size = sizeof(struct ipc_client_info) };
	struct ctl_proc *ps;
	struct ipc_conn *c;
	size_t n;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 0, 0)) >= 0)
		return rc;
	if ((c = ctl_open(x)) == NULL)
		return CTL_FAIL;
	if (ctl_walked(ipc_clients(c, ctl_client_cb, &conns), &conns) < 0) {
		rc = ctl_fail("ps", NULL);
		ipc_close(c);
		ctl_vec_free(&conns);
		return rc;
	}
	ipc_close(c);
	if ((ps = calloc(conns.n ? conns.n : 1, sizeof(*ps))) == NULL) {
		ctl_vec_free(&conns);
		return ctl_fail_err(ENOMEM, "ps", NULL);
	}
	if (conns.n > 1)
		qsort(conns.v, conns.n, conns.size, ctl_by_pid);
	n = ctl_fold(conns.v, conns.n, ps);
	ctl_vec_free(&conns);
	if (x->json) {
		fputs("{\"processes\":[", stdout);
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"pid\":%ld,\"uid\":%u,\"command\":",
			    i > 0 ? "," : "", (long)ps[i].pid,
			    (unsigned)ps[i].uid);
			ctl_json_str(stdout, ps[i].comm, sizeof(ps[i].comm));
			printf(",\"connections\":%" PRIu32 ",\"queue_depth\":%"
			    PRIu64 ",\"messages_sent\":%" PRIu64
			    ",\"messages_received\":%" PRIu64 "}",
			    ps[i].conns, ps[i].queue, ps[i].sent,
			    ps[i].received);
		}
		fputs("]}\n", stdout);
		rc = CTL_OK;
	} else {
		rc = ctl_ps_text(ps, n);
	}
	free(ps);
	if (ctl_flush() < 0)
		rc = CTL_FAIL;
	return rc;
}

/* --- stats ------------------------------------------------------------- */

struct ctl_counter {
	char *name;
	uint64_t value;
};

static int
ctl_counter_cb(const char *name, uint64_t value, void *arg)
{
	struct ctl_vec *a = arg;
	struct ctl_counter k = { strdup(name), value };

	if (k.name == NULL) {
		a->err = ENOMEM;
		return 1;
	}
	if (ctl_vec_push(a, &k) < 0) {
		free(k.name);
		return 1;
	}
	return 0;
}

static void
ctl_counters_free(struct ctl_vec *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(((struct ctl_counter *)a->v)[i].name);
	ctl_vec_free(a);
}

/* The broker's counters into *a, in its order.  0, or -1 with errno. */
static int
ctl_counters(struct ipc_conn *c, struct ctl_vec *a)
{
	memset(a, 0, sizeof(*a));
	a->size = sizeof(struct ctl_counter);
	if (ctl_walked(ipc_counters(c, ctl_counter_cb, a), a) < 0) {
		int err = errno;

		ctl_counters_free(a);
		errno = err;
		return -1;
	}
	return 0;
}

/* The value of counter name, or -1 when the broker has none. */
static int
ctl_counter(const struct ctl_vec *a, const char *name, uint64_t *out)
{
	const struct ctl_counter *k = a->v;

	for (size_t i = 0; i < a->n; i++)
		if (strcmp(k[i].name, name) == 0) {
			*out = k[i].value;
			return 0;
		}
	return -1;
}

static void
ctl_stats_text(const struct ctl_vec *a)
{
	const struct ctl_counter *k = a->v;
	char safe[128], up[64], rate[2][32];
	uint64_t ms = 0, in = 0, out = 0;
	int w = (int)strlen("messages_out_per_s");
	int derived = ctl_counter(a, "uptime_ms", &ms) == 0;

	for (size_t i = 0; i < a->n; i++)
		if ((int)strlen(k[i].name) > w && strlen(k[i].name) < 64)
			w = (int)strlen(k[i].name);
	for (size_t i = 0; i < a->n; i++)
		printf("%-*s %" PRIu64 "\n", w, ctl_safe(safe, sizeof(safe),
		    k[i].name, SIZE_MAX), k[i].value);
	if (!derived)
		return;
	printf("%-*s %s\n", w, "uptime", ctl_hms(up, sizeof(up), ms));
	if (ms > 0 && ctl_counter(a, "messages_in", &in) == 0 &&
	    ctl_counter(a, "messages_out", &out) == 0) {
		snprintf(rate[0], sizeof(rate[0]), "%.1f",
		    (double)in * 1000.0 / (double)ms);
		snprintf(rate[1], sizeof(rate[1]), "%.1f",
		    (double)out * 1000.0 / (double)ms);
		printf("%-*s %s\n%-*s %s\n", w, "messages_in_per_s", rate[0],
		    w, "messages_out_per_s", rate[1]);
	}
}

static int
ctl_stats(struct ctl *x, int argc, char **argv)
{
	struct ctl_vec a;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 0, 0)) >= 0)
		return rc;
	if ((rc = ctl_fetch(x, "stats", ctl_counters, &a)) != CTL_OK)
		return rc;
	if (x->json) {
		const struct ctl_counter *k = a.v;

		fputs("{\"counters\":{", stdout);
		for (size_t i = 0; i < a.n; i++) {
			if (i > 0)
				putchar(',');
			ctl_json_str(stdout, k[i].name, SIZE_MAX);
			printf(":%" PRIu64, k[i].value);
		}
		fputs("}}\n", stdout);
	} else {
		ctl_stats_text(&a);
	}
	ctl_counters_free(&a);
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

/* --- monitor ----------------------------------------------------------- */

static const char *
ctl_event_name(enum ipc_event_kind k)
{
	switch (k) {
	case IPC_EV_CONNECT:
		return "connect";
	case IPC_EV_DISCONNECT:
		return "disconnect";
	case IPC_EV_CREATE:
		return "create";
	case IPC_EV_DELETE:
		return "delete";
	case IPC_EV_SEND:
		return "send";
	case IPC_EV_RECEIVE:
		return "receive";
	case IPC_EV_ERROR:
		return "error";
	case IPC_EV_DROPPED:
		return "dropped";
	}
	return "unknown";
}

/* The canonical text of an address, so "pid:0012"-like spellings and
 * the broker's agree; text as it is when it does not parse. */
static void
ctl_canon(const char *text, size_t max, char *buf, size_t size)
{
	struct ipc_addr a;
	char tmp[IPC_ADDR_MAX];

	snprintf(tmp, sizeof(tmp), "%.*s", (int)strnlen(text, max), text);
	if (ipc_addr_parse(tmp, &a) < 0 || ipc_addr_format(&a, buf, size) < 0)
		snprintf(buf, size, "%s", tmp);
}

static void
ctl_event_print(const struct ctl *x, const struct ipc_event *ev)
{
	char when[32], subject[IPC_ADDR_MAX];
	const char *name = ctl_event_name(ev->kind);

	if (x->json) {
		printf("{\"time_ns\":%" PRIu64 ",\"event\":\"%s\",\"pid\":%ld"
		    ",\"uid\":%u,\"subject\":", ev->time_ns, name,
		    (long)ev->pid, (unsigned)ev->uid);
		ctl_json_str(stdout, ev->subject, sizeof(ev->subject));
		printf(",\"msg_id\":%" PRIu64 ",\"len\":%zu,\"error\":",
		    ev->msg_id, ev->len);
		if (ev->kind == IPC_EV_ERROR)
			ctl_json_str(stdout, strerror(ev->error), SIZE_MAX);
		else
			fputs("null", stdout);
		if (ev->kind == IPC_EV_DROPPED)
			printf(",\"count\":%" PRIu64, ev->msg_id);
		fputs("}\n", stdout);
		return;
	}
	ctl_clock(when, sizeof(when), ev->time_ns, 0);
	if (ev->kind == IPC_EV_DROPPED) {
		printf("%s dropped count=%" PRIu64 "\n", when, ev->msg_id);
		return;
	}
	/* Every line has every field, so that scripts can split it the
	 * same way: "-" for no subject, 0 where there is no message; an
	 * error's text comes last, as it has spaces. */
	printf("%s %s pid=%ld uid=%u subject=%s id=%" PRIu64 " len=%zu", when,
	    name, (long)ev->pid, (unsigned)ev->uid, ev->subject[0] == '\0' ?
	    "-" : ctl_safe(subject, sizeof(subject), ev->subject,
	    sizeof(ev->subject)), ev->msg_id, ev->len);
	if (ev->kind == IPC_EV_ERROR)
		printf(" error=%s", strerror(ev->error));
	putchar('\n');
}

/* Is ev one of the subjects asked for (all: none asked)?  Lost events
 * might have been, so "dropped" always is. */
static int
ctl_event_wanted(const struct ipc_event *ev, char (*want)[IPC_ADDR_MAX],
    int nwant)
{
	char subject[IPC_ADDR_MAX];

	if (nwant == 0 || ev->kind == IPC_EV_DROPPED)
		return 1;
	ctl_canon(ev->subject, sizeof(ev->subject), subject, sizeof(subject));
	for (int i = 0; i < nwant; i++)
		if (strcmp(subject, want[i]) == 0)
			return 1;
	return 0;
}

/* Print events until a signal (0) or an error (-1 with errno). */
static int
ctl_monitor_loop(const struct ctl *x, struct ipc_conn *c,
    char (*want)[IPC_ADDR_MAX], int nwant)
{
	struct ipc_event ev;
	int fd = ipc_fd(c);

	if (fd < 0)
		return -1;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = fd, .events = POLLIN },
			{ .fd = ctl_sigpipe[0], .events = POLLIN },
		};

		/* Everything that has come, then wait. */
		while (ipc_monitor_next(c, &ev, 0) == 0) {
			if (!ctl_event_wanted(&ev, want, nwant))
				continue;
			ctl_event_print(x, &ev);
			/* Read through pipes: a line as soon as it is. */
			if (fflush(stdout) != 0 || ferror(stdout)) {
				if (errno == 0)
					errno = EIO;
				return -2;
			}
		}
		if (errno != EAGAIN && errno != ETIMEDOUT)
			return -1;
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return -1;
		if (p[1].revents != 0 && ctl_signal_take() != 0)
			return 0;
	}
}

static int
ctl_monitor(struct ctl *x, int argc, char **argv)
{
	char (*want)[IPC_ADDR_MAX] = NULL;
	struct ipc_conn *c;
	struct ipc_addr a;
	int rc, nwant, r;

	if ((rc = ctl_plain_args(x, argc, argv, 0, INT_MAX)) >= 0)
		return rc;
	nwant = argc - optind;
	if (nwant > 0 && (want = calloc((size_t)nwant, sizeof(*want))) ==
	    NULL)
		return ctl_fail_err(ENOMEM, "monitor", NULL);
	for (int i = 0; i < nwant; i++) {
		if (ctl_address(x, argv[optind + i], &a) < 0 ||
		    ipc_addr_format(&a, want[i], sizeof(want[i])) < 0) {
			free(want);
			return CTL_USAGE;
		}
	}
	if (ctl_signals(ctl_stop_sigs) < 0) {
		free(want);
		return ctl_fail("monitor: signals", NULL);
	}
	if ((c = ctl_open(x)) == NULL) {
		rc = CTL_FAIL;
	} else if (ipc_monitor(c) < 0) {
		rc = ctl_fail("monitor", NULL);
	} else if ((r = ctl_monitor_loop(x, c, want, nwant)) < 0) {
		rc = ctl_fail(r == -2 ? "monitor: write to standard output" :
		    "monitor", NULL);
	} else {
		rc = CTL_OK;
	}
	ipc_close(c);
	ctl_signals_end(ctl_stop_sigs);
	free(want);
	return rc;
}

/* --- top --------------------------------------------------------------- */

/* A mailbox in a snapshot, with its rates since the one before (< 0:
 * unknown, the first time it is seen). */
struct ctl_top_box {
	struct ipc_mbox_info info;
	double rin, rout;
};

struct ctl_top {
	struct ctl *x;
	struct ipc_conn *c;
	int tty;		/* stdout is a terminal: redraw in place */
	int keys;		/* stdin is a terminal we read keys from */
	int raw;		/* its mode is changed: restore it */
	struct termios saved;
	int by_rate;
	double delay;		/* seconds */
	uint64_t iterations;	/* 0: until quit */
	/* The last snapshot: mailboxes sorted by uuid, totals, time. */
	struct ctl_vec prev;
	uint64_t prev_in, prev_out;
	int prev_have_totals;
	double prev_t;
	unsigned shown;
};

static int
ctl_by_uuid(const void *a, const void *b)
{
	const struct ipc_mbox_info *p = a, *q = b;

	return strcmp(p->uuid, q->uuid);
}

static int
ctl_by_depth(const void *a, const void *b)
{
	const struct ctl_top_box *p = a, *q = b;

	if (p->info.depth != q->info.depth)
		return p->info.depth > q->info.depth ? -1 : 1;
	return strcmp(p->info.name, q->info.name);
}

static int
ctl_by_rate(const void *a, const void *b)
{
	const struct ctl_top_box *p = a, *q = b;
	double rp = (p->rin > 0 ? p->rin : 0) + (p->rout > 0 ? p->rout : 0);
	double rq = (q->rin > 0 ? q->rin : 0) + (q->rout > 0 ? q->rout : 0);

	if (rp > rq)
		return -1;
	if (rp < rq)
		return 1;
	return ctl_by_depth(a, b);
}

/* Keys one at a time, without echo; the saved mode comes back on every
 * way out (see ctl_top). */
static int
ctl_top_raw(struct ctl_top *t)
{
	struct termios tio;

	if (!t->keys)
		return 0;
	tio = t->saved;
	tio.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	tio.c_cc[VMIN] = 1;
	tio.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &tio) < 0)
		return -1;
	t->raw = 1;
	return 0;
}

static void
ctl_top_restore(struct ctl_top *t)
{
	if (t->raw && tcsetattr(STDIN_FILENO, TCSANOW, &t->saved) == 0)
		t->raw = 0;
}

/* ^Z: give the terminal back, stop, and take it again on SIGCONT. */
static void
ctl_top_suspend(struct ctl_top *t)
{
	ctl_top_restore(t);
	signal(SIGTSTP, SIG_DFL);
	raise(SIGTSTP);
	/* Continued. */
	ctl_catch(SIGTSTP);
	if (t->keys && ctl_top_raw(t) < 0)
		t->keys = 0;
}

static const char *
ctl_rate(char *buf, size_t size, double r)
{
	if (r < 0)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%.1f", r);
	return buf;
}

static void
ctl_top_print(struct ctl_top *t, const struct ctl_vec *k,
    const struct ctl_top_box *v, size_t n, double dt)
{
	static const char *const head[] = { "NAME", "DEPTH", "IN/s",
	    "OUT/s", "BYTES", "RECEIVERS", "SENDERS" };
	char when[64], up[32], num[4][24];
	uint64_t val, in = 0, out = 0;
	size_t rows = SIZE_MAX;
	struct ctl_table tab;
	struct winsize ws;
	int totals;

	if (t->tty) {
		fputs("\033[H\033[2J", stdout);
		/* Room for the 4 lines above the table, its header and a
		 * line saying how many more there are. */
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 &&
		    ws.ws_row > 0)
			rows = ws.ws_row > 7 ? (size_t)ws.ws_row - 7 : 1;
	} else if (t->shown > 0) {
		putchar('\n');
	}
	printf("ipcctl top: %s", ctl_clock(when, sizeof(when), ctl_now_ns(),
	    1));
	if (ctl_counter(k, "uptime_ms", &val) == 0)
		printf("  up %s", ctl_hms(up, sizeof(up), val));
	putchar('\n');
	snprintf(num[0], sizeof(num[0]), "-");
	if (ctl_counter(k, "connections", &val) == 0)
		snprintf(num[0], sizeof(num[0]), "%" PRIu64, val);
	snprintf(num[1], sizeof(num[1]), "-");
	if (ctl_counter(k, "mailboxes", &val) == 0)
		snprintf(num[1], sizeof(num[1]), "%" PRIu64, val);
	printf("connections %s  mailboxes %s", num[0], num[1]);
	totals = ctl_counter(k, "messages_in", &in) == 0 &&
	    ctl_counter(k, "messages_out", &out) == 0;
	if (totals) {
		printf("  messages in %" PRIu64 " out %" PRIu64, in, out);
		printf("  msg/s in %s out %s\n",
		    ctl_rate(num[2], sizeof(num[2]), t->prev_have_totals &&
		    dt > 0 && in >= t->prev_in ? (double)(in - t->prev_in) /
		    dt : -1),
		    ctl_rate(num[3], sizeof(num[3]), t->prev_have_totals &&
		    dt > 0 && out >= t->prev_out ? (double)(out -
		    t->prev_out) / dt : -1));
	} else {
		putchar('\n');
	}
	putchar('\n');
	ctl_tab_init(&tab, head, "lrrrrrr");
	for (size_t i = 0; i < n && i < rows; i++) {
		char name[IPC_NAME_MAX + 1], depth[24], rin[24], rout[24],
		    bytes[24], rw[24], sw[24];

		snprintf(depth, sizeof(depth), "%" PRIu32, v[i].info.depth);
		snprintf(bytes, sizeof(bytes), "%" PRIu64, v[i].info.bytes);
		snprintf(rw, sizeof(rw), "%" PRIu32,
		    v[i].info.waiting_receivers);
		snprintf(sw, sizeof(sw), "%" PRIu32,
		    v[i].info.waiting_senders);
		if (ctl_tab_row(&tab, (const char *const []){
		    ctl_safe(name, sizeof(name), v[i].info.name,
		    sizeof(v[i].info.name)), depth,
		    ctl_rate(rin, sizeof(rin), v[i].rin),
		    ctl_rate(rout, sizeof(rout), v[i].rout),
		    bytes, rw, sw }) < 0)
			break;	/* out of memory: show what fits */
	}
	ctl_tab_print(&tab, stdout, SIZE_MAX);
	if (tab.nrows < n)
		printf("... %zu more\n", n - tab.nrows);
	ctl_tab_free(&tab);
}

/* Take a snapshot and print it.  0, or -1 with errno. */
static int
ctl_top_snap(struct ctl_top *t)
{
	struct ctl_vec k, boxes;
	struct ctl_top_box *v;
	uint64_t in = 0, out = 0;
	double now, dt;

	if (ctl_counters(t->c, &k) < 0)
		return -1;
	if (ctl_list(t->c, &boxes) < 0) {
		int err = errno;

		ctl_counters_free(&k);
		errno = err;
		return -1;
	}
	now = ctl_mono();
	dt = t->prev_t > 0 ? now - t->prev_t : 0;
	if ((v = calloc(boxes.n ? boxes.n : 1, sizeof(*v))) == NULL) {
		ctl_counters_free(&k);
		ctl_vec_free(&boxes);
		errno = ENOMEM;
		return -1;
	}
	for (size_t i = 0; i < boxes.n; i++) {
		const struct ipc_mbox_info *m =
		    (const struct ipc_mbox_info *)boxes.v + i, *p = NULL;

		v[i].info = *m;
		v[i].rin = v[i].rout = -1;
		if (t->prev.n > 0)
			p = bsearch(m, t->prev.v, t->prev.n, t->prev.size,
			    ctl_by_uuid);
		if (p != NULL && dt > 0) {
			v[i].rin = m->msgs_in >= p->msgs_in ?
			    (double)(m->msgs_in - p->msgs_in) / dt : 0;
			v[i].rout = m->msgs_out >= p->msgs_out ?
			    (double)(m->msgs_out - p->msgs_out) / dt : 0;
		}
	}
	if (boxes.n > 1)
		qsort(v, boxes.n, sizeof(*v), t->by_rate ? ctl_by_rate :
		    ctl_by_depth);
	ctl_top_print(t, &k, v, boxes.n, dt);
	t->shown++;
	free(v);
	/* This snapshot is the next one's "before". */
	if (boxes.n > 1)
		qsort(boxes.v, boxes.n, boxes.size, ctl_by_uuid);
	ctl_vec_free(&t->prev);
	t->prev = boxes;
	t->prev_have_totals = ctl_counter(&k, "messages_in", &in) == 0 &&
	    ctl_counter(&k, "messages_out", &out) == 0;
	if (t->prev_have_totals) {
		t->prev_in = in;
		t->prev_out = out;
	}
	t->prev_t = now;
	ctl_counters_free(&k);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (errno == 0)
			errno = EIO;
		return -2;
	}
	return 0;
}

/* Wait until the monotonic time until, or a key or signal that says
 * otherwise.  0: time for the next snapshot; 1: quit; -1 with errno. */
static int
ctl_top_wait(struct ctl_top *t, double until)
{
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = ctl_sigpipe[0], .events = POLLIN },
			{ .fd = t->keys ? STDIN_FILENO : -1,
			    .events = POLLIN },
		};
		double left = until - ctl_mono();
		char b[64];
		ssize_t n;
		int sig, redraw = 0;

		if (left <= 0)
			return 0;
		if (poll(p, 2, (int)(left * 1000) + 1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (p[0].revents != 0 && (sig = ctl_signal_take()) != 0) {
			if (sig == SIGWINCH) {
				redraw = 1;
			} else if (sig == SIGTSTP) {
				ctl_top_suspend(t);
				redraw = 1;
			} else {
				return 1;
			}
		}
		if (redraw)
			return 0;
		if (p[1].revents == 0)
			continue;
		n = read(STDIN_FILENO, b, sizeof(b));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			t->keys = 0;	/* end of input: ^C still quits */
			continue;
		}
		if (memchr(b, 'q', (size_t)n) || memchr(b, 'Q', (size_t)n))
			return 1;
		if (memchr(b, ' ', (size_t)n))
			return 0;
	}
}

static int
ctl_top_parse(struct ctl_top *t, int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ "delay", required_argument, NULL, 'd' },
		{ "sort", required_argument, NULL, 'o' },
		{ "iterations", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl *x = t->x;
	char *end, safe[64];
	int opt;

	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT "d:o:n:",
	    opts)) != -1) {
		switch (opt) {
		case 'd':
			errno = 0;
			t->delay = strtod(optarg, &end);
			if (errno || end == optarg || *end != '\0' ||
			    !isfinite(t->delay) || t->delay < 0.01 ||
			    t->delay > 86400)
				return ctl_usage_error(x, "--delay: '%s' is "
				    "not a number of seconds from 0.01 to "
				    "86400", ctl_safe(safe, sizeof(safe),
				    optarg, SIZE_MAX));
			break;
		case 'o':
			if (strcmp(optarg, "depth") == 0)
				t->by_rate = 0;
			else if (strcmp(optarg, "rate") == 0)
				t->by_rate = 1;
			else
				return ctl_usage_error(x, "--sort: 'depth' or "
				    "'rate', not '%s'", ctl_safe(safe,
				    sizeof(safe), optarg, SIZE_MAX));
			break;
		case 'n':
			if (ctl_number(x, "--iterations", optarg, 10, 1,
			    UINT32_MAX, &t->iterations) < 0)
				return CTL_USAGE;
			break;
		default:
			return ctl_opt_exit(opt);
		}
	}
	if (ctl_operands(x, argc - optind, 0, 0) < 0)
		return CTL_USAGE;
	if (x->json)
		return ctl_usage_error(x, "no --json: use 'stats --json' and "
		    "'ls --json'");
	return -1;
}

static int
ctl_top(struct ctl *x, int argc, char **argv)
{
	static const int plain_sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
	    0 };
	static const int tty_sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
	    SIGTSTP, SIGWINCH, 0 };
	struct ctl_top t = { .x = x, .delay = 1.0 };
	const int *sigs;
	int rc, r = 0;

	t.prev.size = sizeof(struct ipc_mbox_info);
	if ((rc = ctl_top_parse(&t, argc, argv)) >= 0)
		return rc;
	t.tty = isatty(STDOUT_FILENO);
	t.keys = t.tty && isatty(STDIN_FILENO) &&
	    tcgetattr(STDIN_FILENO, &t.saved) == 0;
	sigs = t.tty ? tty_sigs : plain_sigs;
	if (ctl_signals(sigs) < 0) {
		rc = ctl_fail("top: signals", NULL);
		ctl_signals_end(sigs);
		return rc;
	}
	if ((t.c = ctl_open(x)) == NULL) {
		ctl_signals_end(sigs);
		return CTL_FAIL;
	}
	if (t.tty) {
		/* One write per screen, so it does not flicker. */
		setvbuf(stdout, NULL, _IOFBF, 1 << 16);
		if (ctl_top_raw(&t) < 0)
			t.keys = 0;
	}
	for (;;) {
		double next = ctl_mono() + t.delay;

		if ((r = ctl_top_snap(&t)) < 0)
			break;
		if (t.iterations != 0 && t.shown >= t.iterations)
			break;
		if ((r = ctl_top_wait(&t, next)) != 0)
			break;
	}
	ctl_top_restore(&t);
	ctl_signals_end(sigs);
	if (r < 0)
		rc = ctl_fail(r == -2 ? "top: write to standard output" :
		    "top", NULL);
	else
		rc = CTL_OK;
	ipc_close(t.c);
	ctl_vec_free(&t.prev);
	return rc;
}

/* --- keygen ------------------------------------------------------------ */

/* What tls_keygen() takes as an identity. */
#define CTL_IDENTITY_CHARS \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@:-"
#define CTL_IDENTITY_RULE	"1 to 128 of A-Z a-z 0-9 . _ @ : -"

static int
ctl_identity_ok(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= TLS_IDENTITY_MAX &&
	    strspn(s, CTL_IDENTITY_CHARS) == n;
}

static int
ctl_keygen(struct ctl *x, int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ "identity", required_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 },
	};
	char host[256], safe[PATH_MAX], sid[TLS_IDENTITY_MAX + 1];
	const char *identity = NULL, *file;
	int opt, r;

	while ((opt = ctl_getopt(x, argc, argv, CTL_GLOBAL_SHORT "i:",
	    opts)) != -1) {
		switch (opt) {
		case 'i':
			identity = optarg;
			break;
		default:
			return ctl_opt_exit(opt);
		}
	}
	if (ctl_operands(x, argc - optind, 1, 1) < 0)
		return CTL_USAGE;
	file = argv[optind];
	if (file[0] == '\0')
		return ctl_usage_error(x, "FILE is empty");
	if (identity != NULL && !ctl_identity_ok(identity))
		return ctl_usage_error(x, "--identity: '%s' is not an "
		    "identity: %s", ctl_safe(sid, sizeof(sid), identity,
		    SIZE_MAX), CTL_IDENTITY_RULE);
	if (identity == NULL) {
		/* The host name, when it is one. */
		if (gethostname(host, sizeof(host)) < 0)
			return ctl_fail("keygen: host name", NULL);
		host[sizeof(host) - 1] = '\0';
		if (!ctl_identity_ok(host)) {
			fprintf(stderr, "%s: keygen: the host name '%s' is not "
			    "an identity (%s): give one with --identity "
			    "NAME\n", prog, ctl_safe(sid, sizeof(sid), host,
			    SIZE_MAX), CTL_IDENTITY_RULE);
			return CTL_FAIL;
		}
		identity = host;
	}
	if ((r = tls_keygen(file, identity)) == -EEXIST) {
		fprintf(stderr, "%s: keygen: %s exists; not replacing a key\n",
		    prog, ctl_safe(safe, sizeof(safe), file, SIZE_MAX));
		return CTL_FAIL;
	}
	if (r < 0)
		return ctl_fail_err(-r, "keygen", file);
	if (x->json) {
		fputs("{\"identity\":", stdout);
		ctl_json_str(stdout, identity, SIZE_MAX);
		fputs(",\"file\":", stdout);
		ctl_json_str(stdout, file, SIZE_MAX);
		fputs("}\n", stdout);
	}
	return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
}

/* --- links ------------------------------------------------------------- */

static int
ctl_link_cb(const struct ipc_link_info *info, void *arg)
{
	return ctl_vec_push(arg, info) < 0 ? 1 : 0;
}

/* Outgoing links first, then by peer. */
static int
ctl_by_link(const void *a, const void *b)
{
	const struct ipc_link_info *p = a, *q = b;
	int r;

	if (p->incoming != q->incoming)
		return p->incoming ? 1 : -1;
	if ((r = strcmp(p->peer, q->peer)) != 0)
		return r;
	return strcmp(p->identity, q->identity);
}

/* Every link into *links, sorted.  0, or -1 with errno. */
static int
ctl_link_list(struct ipc_conn *c, struct ctl_vec *links)
{
	return ctl_vec_sorted(ipc_links(c, ctl_link_cb, ctl_vec_start(links,
	    sizeof(struct ipc_link_info))), links, ctl_by_link);
}

static const char *
ctl_link_state(enum ipc_link_state s)
{
	switch (s) {
	case IPC_LINK_DOWN:
		return "down";
	case IPC_LINK_CONNECTING:
		return "connecting";
	case IPC_LINK_UP:
		return "up";
	}
	return "unknown";
}

/* A round trip in microseconds as "0.21ms", "12.5ms", "340ms", "1.20s";
 * "-" for none. */
static const char *
ctl_rtt(char *buf, size_t size, uint64_t us)
{
	double ms = (double)us / 1000.0;

	if (us == 0)
		snprintf(buf, size, "-");
	else if (ms < 10)
		snprintf(buf, size, "%.2fms", ms);
	else if (ms < 100)
		snprintf(buf, size, "%.1fms", ms);
	else if (ms < 1000)
		snprintf(buf, size, "%.0fms", ms);
	else
		snprintf(buf, size, "%.2fs", ms / 1000.0);
	return buf;
}

static int
ctl_links_text(const struct ctl_vec *links)
{
	static const char *const head[] = { "DIR", "PEER", "STATE",
	    "IDENTITY", "QUEUED", "INFLIGHT", "OUT", "IN", "FAILED", "RECONN",
	    "RTT", "LAST_ERROR" };
	struct ctl_table t;

	ctl_tab_init(&t, head, "llllrrrrrrrl");
	for (size_t i = 0; i < links->n; i++) {
		const struct ipc_link_info *l =
		    (const struct ipc_link_info *)links->v + i;
		char peer[sizeof(l->peer)], id[sizeof(l->identity)],
		    lerr[sizeof(l->last_error)], queued[24], infl[24],
		    out[24], in[24], failed[24], reconn[24], rtt[24];

		snprintf(queued, sizeof(queued), "%" PRIu32, l->queued);
		snprintf(infl, sizeof(infl), "%" PRIu32, l->in_flight);
		snprintf(out, sizeof(out), "%" PRIu64, l->msgs_out);
		snprintf(in, sizeof(in), "%" PRIu64, l->msgs_in);
		snprintf(failed, sizeof(failed), "%" PRIu64, l->failed);
		snprintf(reconn, sizeof(reconn), "%" PRIu64, l->reconnects);
		/* "-" for nothing, so that every row has every column. */
		if (ctl_tab_row(&t, (const char *const []){
		    l->incoming ? "in" : "out",
		    l->peer[0] ? ctl_safe(peer, sizeof(peer), l->peer,
		    sizeof(l->peer)) : "-",
		    ctl_link_state(l->state),
		    l->identity[0] ? ctl_safe(id, sizeof(id), l->identity,
		    sizeof(l->identity)) : "-",
		    queued, infl, out, in, failed, reconn,
		    ctl_rtt(rtt, sizeof(rtt), l->rtt_us),
		    l->last_error[0] ? ctl_safe(lerr, sizeof(lerr),
		    l->last_error, sizeof(l->last_error)) : "-" }) < 0) {
			ctl_tab_free(&t);
			return ctl_fail_err(ENOMEM, "links", NULL);
		}
	}
	ctl_tab_print(&t, stdout, SIZE_MAX);
	ctl_tab_free(&t);
	return CTL_OK;
}

static void
ctl_json_link(FILE *f, const struct ipc_link_info *l)
{
	fprintf(f, "{\"direction\":\"%s\",\"state\":\"%s\",\"peer\":",
	    l->incoming ? "in" : "out", ctl_link_state(l->state));
	ctl_json_str(f, l->peer, sizeof(l->peer));
	fputs(",\"identity\":", f);
	ctl_json_str(f, l->identity, sizeof(l->identity));
	fprintf(f, ",\"queued\":%" PRIu32 ",\"in_flight\":%" PRIu32
	    ",\"messages_out\":%" PRIu64 ",\"messages_in\":%" PRIu64
	    ",\"failed\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"rtt_us\":",
	    l->queued, l->in_flight, l->msgs_out, l->msgs_in, l->failed,
	    l->reconnects);
	if (l->rtt_us != 0)
		fprintf(f, "%" PRIu64, l->rtt_us);
	else
		fputs("null", f);
	fputs(",\"last_error\":", f);
	if (l->last_error[0] != '\0')
		ctl_json_str(f, l->last_error, sizeof(l->last_error));
	else
		fputs("null", f);
	fputc('}', f);
}

static int
ctl_links(struct ctl *x, int argc, char **argv)
{
	struct ctl_vec links;
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 0, 0)) >= 0)
		return rc;
	if ((rc = ctl_fetch(x, "links", ctl_link_list, &links)) != CTL_OK)
		return rc;
	if (x->json) {
		putchar('[');
		for (size_t i = 0; i < links.n; i++) {
			if (i > 0)
				putchar(',');
			ctl_json_link(stdout,
			    (const struct ipc_link_info *)links.v + i);
		}
		fputs("]\n", stdout);
	} else {
		rc = ctl_links_text(&links);
	}
	ctl_vec_free(&links);
	if (ctl_flush() < 0)
		rc = CTL_FAIL;
	return rc;
}

/* --- help and main ------------------------------------------------------ */

static const struct ctl_cmd *ctl_find(const char *name);

static int
ctl_help(struct ctl *x, int argc, char **argv)
{
	const struct ctl_cmd *cmd;
	char safe[64];
	int rc;

	if ((rc = ctl_plain_args(x, argc, argv, 0, 1)) >= 0)
		return rc;
	if (argc - optind == 0) {
		ctl_usage(stdout);
		return CTL_OK;
	}
	if ((cmd = ctl_find(argv[optind])) == NULL)
		return ctl_usage_error(x, "unknown command '%s'",
		    ctl_safe(safe, sizeof(safe), argv[optind], SIZE_MAX));
	ctl_cmd_usage(cmd, stdout);
	return CTL_OK;
}

static const struct ctl_cmd ctl_cmds[] = {
	{ "ls", ctl_ls, "",
"List every mailbox: NAME UUID DEPTH BYTES CAPACITY MAX_BYTES RECEIVERS\n"
"SENDERS OWNER GROUP MODE IN OUT DURABLE (RECEIVERS and SENDERS are\n"
"waiting; DURABLE yes or no).\n"
"With --json: {\"mailboxes\":[{...}]}, fields as 'stat --json'.\n" },
	{ "stat", ctl_stat, "NAME",
"Show mailbox NAME as \"key: value\" lines, or with --json one object:\n"
"name uuid depth bytes capacity max_bytes waiting_receivers\n"
"waiting_senders uid gid owner group mode messages_in messages_out\n"
"created_ns durable.\n" },
	{ "create", ctl_create, "NAME [OPTIONS]",
"Create mailbox NAME, or leave it as it is if it exists; prints nothing\n"
"(with --json, the mailbox as 'stat --json').\n"
"      --capacity N    messages it holds (default: the broker's)\n"
"      --max-bytes B   bytes it holds (default: the broker's)\n"
"      --mode MODE     permissions, octal (default 0600)\n"
"      --rendezvous    capacity 0: a send completes when received\n"
"      --exclusive     fail (File exists) if it exists\n"
"      --durable       keep it and its messages on disk, across broker\n"
"                      restarts; a send returns once its message is on\n"
"                      disk\n" },
	{ "rm", ctl_rm, "NAME",
"Delete mailbox NAME and the messages in it.\n" },
	{ "chmod", ctl_chmod, "NAME MODE",
"Set the mode of mailbox NAME, octal like 0660: read = receive,\n"
"write = send.\n" },
	{ "chown", ctl_chown, "NAME USER[:GROUP]",
"Give mailbox NAME to USER and GROUP (names or numbers); \":GROUP\"\n"
"changes only the group, \"USER:\" sets USER's login group.\n" },
	{ "send", ctl_send, "ADDR [MESSAGE] [OPTIONS]",
"Send MESSAGE's bytes (no newline added), or all of standard input, to\n"
"ADDR: a mailbox or pid:P, here or @HOST[:PORT] (then the broker there\n"
"answers, through this broker's link).  Waits while the queue is full.\n"
"      --nonblock      fail at once if the queue is full\n"
"      --timeout MS    wait at most MS milliseconds for room\n"
"  -v, --verbose       print \"sent id N\" on standard error\n"
"With --json: {\"id\":N}.\n" },
	{ "recv", ctl_recv, "[ADDR] [OPTIONS]",
"Receive from mailbox ADDR, or without ADDR from this process's direct\n"
"queue (pid:Q: only what process Q sent it; pid:Q@HOST[:PORT]: only what\n"
"process Q on another host sent it, accepted then), and write each\n"
"payload to standard output as it is, nothing added.\n"
"  -n, --count N       receive N messages (default 1)\n"
"  -f, --follow        go on until interrupted or the broker goes\n"
"      --nonblock      fail at once if there is none\n"
"      --timeout MS    wait at most MS milliseconds for each message\n"
"  -v, --verbose       print each message's details on standard error\n"
"With --json: {\"messages\":[{id pid uid gid sender source len\n"
"enqueue_ns redelivered payload_base64}]}; with --follow, one message\n"
"object per line.\n" },
	{ "peek", ctl_peek, "NAME [OPTIONS]",
"Show the messages queued in mailbox NAME, oldest first, without taking\n"
"them: ID SENDER LEN AGE PREVIEW.  With --json as 'recv --json'.\n"
"  -n, --count N       at most N messages (default 10)\n" },
	{ "ps", ctl_ps, "",
"List the processes connected to the broker: PID UID COMMAND\n"
"CONNECTIONS QUEUE SENT RECEIVED.  With --json: {\"processes\":[{pid uid\n"
"command connections queue_depth messages_sent messages_received}]}.\n" },
	{ "monitor", ctl_monitor, "[ADDR...]",
"Print the broker's events until interrupted, one line each:\n"
"\"HH:MM:SS.mmm EVENT pid=P uid=U subject=S id=N len=L\".  With ADDR,\n"
"only events about them.  With --json, one object per line: time_ns\n"
"event pid uid subject msg_id len error.\n" },
	{ "stats", ctl_stats, "",
"Show the broker's counters, and the uptime and message rates from\n"
"them.  With --json: {\"counters\":{NAME:VALUE,...}}.\n" },
	{ "top", ctl_top, "[OPTIONS]",
"Show the broker's totals and the mailboxes with their rates, refreshed;\n"
"q quits on a terminal.\n"
"  -d, --delay SECONDS     between refreshes (default 1)\n"
"  -o, --sort depth|rate   order of the mailboxes (default depth)\n"
"  -n, --iterations N      stop after N refreshes\n" },
	{ "links", ctl_links, "",
"List the broker's links to other brokers (DIR out) and theirs to it\n"
"(DIR in): DIR PEER STATE IDENTITY QUEUED INFLIGHT OUT IN FAILED RECONN\n"
"RTT LAST_ERROR.  STATE is down, connecting or up; QUEUED and INFLIGHT\n"
"are messages not yet sent and not yet answered; OUT the messages the\n"
"peer accepted, IN those received from it, FAILED those it refused;\n"
"RECONN the reconnections; RTT the last heartbeat's round trip.\n"
"With --json: [{direction state peer identity queued in_flight\n"
"messages_out messages_in failed reconnects rtt_us last_error}].\n" },
	{ "keygen", ctl_keygen, "[--identity NAME] FILE",
"Write a new pre-shared key for the TLS links between brokers into FILE,\n"
"which must not exist (an existing key is never replaced): one line\n"
"\"IDENTITY HEX64\", mode 0600.  Needs no broker.  Give the same file to\n"
"every broker of a cluster (ipcd --tcp ... --psk FILE).  Key files may\n"
"be concatenated, one line per identity: an accepting broker takes any\n"
"identity of its file, a connecting broker offers the first line.  Keep\n"
"it secret: ipcd refuses a key file that others may read.\n"
"  -i, --identity NAME  who the key stands for: 1 to 128 of A-Z a-z 0-9\n"
"                       . _ @ : - (default: the host name)\n"
"With --json: {\"identity\":NAME,\"file\":FILE}.\n" },
	{ "help", ctl_help, "[COMMAND]",
"Show the help of COMMAND, or the list of commands.\n" },
	{ NULL, NULL, NULL, NULL },
};

static const struct ctl_cmd *
ctl_find(const char *name)
{
	for (const struct ctl_cmd *cmd = ctl_cmds; cmd->name != NULL; cmd++)
		if (strcmp(cmd->name, name) == 0)
			return cmd;
	return NULL;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		CTL_GLOBAL_LONG,
		{ NULL, 0, NULL, 0 },
	};
	static struct ctl x;
	char safe[64];
	int opt;

	opterr = 0;
	/* "+": the global options stop at the command. */
	while ((opt = getopt_long(argc, argv, "+" CTL_GLOBAL_SHORT, opts,
	    NULL)) != -1) {
		switch (opt) {
		case 's':
			if (ctl_set_socket(&x, optarg) < 0)
				return CTL_USAGE;
			break;
		case 'j':
			x.json = 1;
			break;
		case 'h':
			ctl_usage(stdout);
			return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
		case 'V':
			ctl_version();
			return ctl_flush() < 0 ? CTL_FAIL : CTL_OK;
		default:
			return ctl_bad_option(&x, opt, argc, argv);
		}
	}
	if (optind >= argc) {
		ctl_usage(stderr);
		return CTL_USAGE;
	}
	if ((x.cmd = ctl_find(argv[optind])) == NULL) {
		ctl_usage_error(&x, "unknown command '%s'", ctl_safe(safe,
		    sizeof(safe), argv[optind], SIZE_MAX));
		return CTL_USAGE;
	}
	argc -= optind;
	argv += optind;
	optind = 0;	/* start getopt afresh on the command's arguments */
	opt = x.cmd->run(&x, argc, argv);
	if (fflush(stdout) != 0 && opt == CTL_OK)
		opt = CTL_FAIL;
	return opt;
}
