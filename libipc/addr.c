/*
 * addr.c - the one parser of addresses ("jobs", "jobs@host:7400",
 * "pid:1234", "pid:1234@[::1]:7400").  See ipc.h and DESIGN.md.
 *
 * Everything funnels through addr_parse(), so ipc_addr_parse() and
 * ipc_addr_why() cannot disagree about what is valid, and
 * ipc_addr_format() reuses the same checks so that what it writes always
 * parses back to the same struct.  The parser never allocates and never
 * reads past the terminating NUL of its input.
 */
#include "config.h"

#include "ipc.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* pid_t is a 32-bit int on the systems we build on.  The kernel's own
 * pid_max is far lower (at most 2^22 on Linux), but it is a tunable, so
 * the parser accepts the whole positive range of the type. */
#define ADDR_PID_MAX	2147483647UL
#define ADDR_PORT_MAX	65535UL

/* RFC 1035 limits: 63 bytes a label, 253 for a name written without its
 * trailing dot.  IPC_HOST_MAX (255) leaves room for either. */
#define ADDR_LABEL_MAX		63
#define ADDR_HOSTNAME_MAX	253

#define ADDR_PID_PREFIX		"pid:"
#define ADDR_PID_PREFIX_LEN	(sizeof(ADDR_PID_PREFIX) - 1)

/* Explicit ranges rather than isalnum(): the grammar is ASCII whatever
 * the caller's locale says. */
static int
addr_is_alnum(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9');
}

/* The reason the len bytes at s are not a mailbox name, or NULL. */
static const char *
addr_check_name(const char *s, size_t len)
{
	size_t i;
	unsigned char c;

	if (len == 0)
		return "empty mailbox name";
	if (len > IPC_NAME_MAX)
		return "mailbox name longer than 255 bytes";
	/* A leading '.' is kept free for names the broker may reserve,
	 * and keeps "." and ".." out of anything path-like. */
	if (s[0] == '.')
		return "mailbox name starts with '.'";
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (!addr_is_alnum(c) && c != '.' && c != '_' && c != '-')
			return "mailbox name has a character outside "
			    "A-Z a-z 0-9 . _ -";
	}
	return NULL;
}

/*
 * The reason the len bytes at s are not a DNS-style host name, or NULL.
 * A dotted IPv4 address passes as a name with numeric labels; it is not
 * checked further ("999.1.1.1" gets as far as the resolver, which will
 * fail it).  A trailing dot (absolute name) is an empty label, rejected,
 * so that each host has one spelling.
 */
static const char *
addr_check_host(const char *s, size_t len)
{
	size_t i, label = 0;
	unsigned char c;

	if (len == 0)
		return "empty host after '@'";
	if (len > ADDR_HOSTNAME_MAX)
		return "host name longer than 253 bytes";
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return "bad host name";
			label = 0;
			continue;
		}
		if (!addr_is_alnum(c) && c != '-')
			return "bad host name";
		if (c == '-' && label == 0)
			return "bad host name";
		if (++label > ADDR_LABEL_MAX)
			return "host name label longer than 63 bytes";
	}
	if (label == 0 || s[len - 1] == '-')
		return "bad host name";
	return NULL;
}

/* The reason the len bytes at s (without brackets) are not an IPv6
 * address, or NULL.  Zone ids ("fe80::1%eth0") are not accepted:
 * inet_pton() rejects them, and a zone means nothing to another host. */
static const char *
addr_check_ipv6(const char *s, size_t len)
{
	char tmp[INET6_ADDRSTRLEN];
	struct in6_addr in6;

	/* Every valid spelling fits INET6_ADDRSTRLEN, so a longer one can
	 * be refused before copying. */
	if (len == 0 || len >= sizeof(tmp))
		return "bad IPv6 address in brackets";
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (inet_pton(AF_INET6, tmp, &in6) != 1)
		return "bad IPv6 address in brackets";
	return NULL;
}

/*
 * The len bytes at s as a decimal number in 1..max, into *val_out.
 * Digits only: no sign, no spaces, and no leading zero, so each number
 * has one spelling.  Returns 0 or -EINVAL; never overflows, however
 * many digits it is given.
 */
static int
addr_number(const char *s, size_t len, unsigned long max,
    unsigned long *val_out)
{
	unsigned long v = 0, d;
	size_t i;

	if (len == 0 || s[0] == '0')
		return -EINVAL;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned long)(s[i] - '0');
		if (v > (max - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*val_out = v;
	return 0;
}

/* Parse s, the text after '@': "host", "host:port", "[v6]" or
 * "[v6]:port", into out->host and out->port.  0 or -EINVAL with *why. */
static int
addr_parse_remote(const char *s, struct ipc_addr *out, const char **why)
{
	const char *end, *port;
	size_t len;
	unsigned long v;

	if (s[0] == '[') {
		if ((end = strchr(s + 1, ']')) == NULL) {
			*why = "bad IPv6 address in brackets";
			return -EINVAL;
		}
		len = (size_t)(end - (s + 1));
		if ((*why = addr_check_ipv6(s + 1, len)) != NULL)
			return -EINVAL;
		memcpy(out->host, s + 1, len);
		out->host[len] = '\0';
		port = end + 1;
		if (*port != '\0' && *port != ':') {
			*why = "unexpected text after ']'";
			return -EINVAL;
		}
	} else {
		len = strcspn(s, ":");
		/* "jobs@::1" would otherwise read as an empty host and a
		 * bad port; say what is actually wrong. */
		if (s[len] == ':' && strchr(s + len + 1, ':') != NULL &&
		    addr_check_ipv6(s, strlen(s)) == NULL) {
			*why = "IPv6 address needs brackets";
			return -EINVAL;
		}
		if ((*why = addr_check_host(s, len)) != NULL)
			return -EINVAL;
		memcpy(out->host, s, len);
		out->host[len] = '\0';
		port = s + len;
	}
	if (*port == '\0')
		return 0;
	port++;
	if (addr_number(port, strlen(port), ADDR_PORT_MAX, &v) < 0) {
		*why = "bad port (1-65535)";
		return -EINVAL;
	}
	out->port = (int)v;
	return 0;
}

/*
 * Parse text into *out.  Returns 0, or -EINVAL with *why set to a static
 * reason; *why is NULL on success.  *out is only meaningful on success.
 * "pid:" cannot be the start of a mailbox name (':' is not a name
 * character), so the prefix alone decides the kind.
 */
static int
addr_parse(const char *text, struct ipc_addr *out, const char **why)
{
	const char *at;
	size_t len;
	unsigned long v;

	*why = NULL;
	if (text == NULL || out == NULL) {
		*why = "no address";
		return -EINVAL;
	}
	/* Fields set one by one: the arrays are long, and a parse per
	 * message is on the fast path of every send. */
	out->kind = 0;
	out->name[0] = '\0';
	out->pid = 0;
	out->host[0] = '\0';
	out->port = 0;
	if (text[0] == '\0') {
		*why = "empty address";
		return -EINVAL;
	}
	at = strchr(text, '@');
	len = at != NULL ? (size_t)(at - text) : strlen(text);
	if (len >= ADDR_PID_PREFIX_LEN &&
	    memcmp(text, ADDR_PID_PREFIX, ADDR_PID_PREFIX_LEN) == 0) {
		if (addr_number(text + ADDR_PID_PREFIX_LEN,
		    len - ADDR_PID_PREFIX_LEN, ADDR_PID_MAX, &v) < 0) {
			*why = "bad pid after 'pid:'";
			return -EINVAL;
		}
		out->kind = IPC_ADDR_PID;
		out->pid = (pid_t)v;
	} else {
		if ((*why = addr_check_name(text, len)) != NULL)
			return -EINVAL;
		out->kind = IPC_ADDR_MAILBOX;
		memcpy(out->name, text, len);
		out->name[len] = '\0';
	}
	if (at == NULL)
		return 0;
	return addr_parse_remote(at + 1, out, why);
}

/* 0 if a is something addr_parse() could have produced, else -EINVAL.
 * The field the kind does not use (pid of a mailbox, name of a pid) is
 * ignored, so a caller need not clear it. */
static int
addr_check_struct(const struct ipc_addr *a)
{
	const char *host = a->host;

	switch (a->kind) {
	case IPC_ADDR_MAILBOX:
		if (memchr(a->name, '\0', sizeof(a->name)) == NULL ||
		    addr_check_name(a->name, strlen(a->name)) != NULL)
			return -EINVAL;
		break;
	case IPC_ADDR_PID:
		if (a->pid <= 0)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	if (memchr(host, '\0', sizeof(a->host)) == NULL)
		return -EINVAL;
	if (host[0] != '\0') {
		if (strchr(host, ':') != NULL ?
		    addr_check_ipv6(host, strlen(host)) != NULL :
		    addr_check_host(host, strlen(host)) != NULL)
			return -EINVAL;
	}
	if (a->port < 0 || (unsigned long)a->port > ADDR_PORT_MAX)
		return -EINVAL;
	/* "jobs:7400" does not parse: a port needs a host. */
	if (a->port != 0 && host[0] == '\0')
		return -EINVAL;
	return 0;
}

/* The canonical text of a into buf.  Returns its length, or -EINVAL or
 * -ENOSPC; buf is left untouched on failure. */
static int
addr_format(const struct ipc_addr *a, char *buf, size_t size)
{
	char tmp[IPC_ADDR_MAX];
	size_t n;
	int v6, r;

	if (a == NULL || buf == NULL)
		return -EINVAL;
	if ((r = addr_check_struct(a)) < 0)
		return r;
	/* The checks above bound every piece, so tmp (IPC_ADDR_MAX) never
	 * truncates and n stays below sizeof(tmp). */
	if (a->kind == IPC_ADDR_PID)
		n = (size_t)snprintf(tmp, sizeof(tmp), "pid:%ld",
		    (long)a->pid);
	else
		n = (size_t)snprintf(tmp, sizeof(tmp), "%s", a->name);
	if (a->host[0] != '\0') {
		v6 = strchr(a->host, ':') != NULL;
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "@%s%s%s",
		    v6 ? "[" : "", a->host, v6 ? "]" : "");
		if (a->port != 0)
			n += (size_t)snprintf(tmp + n, sizeof(tmp) - n,
			    ":%d", a->port);
	}
	if (n >= size)
		return -ENOSPC;
	memcpy(buf, tmp, n + 1);
	return (int)n;
}

/* Returns 0, or -1 with EINVAL. */
int
ipc_addr_parse(const char *text, struct ipc_addr *out)
{
	const char *why;
	int r;

	/* All of *out is defined for callers (a struct compared whole
	 * compares equal for one address). */
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if ((r = addr_parse(text, out, &why)) < 0) {
		errno = -r;
		return -1;
	}
	return 0;
}

/* Returns NULL when text parses, else a static reason; never fails. */
const char *
ipc_addr_why(const char *text)
{
	struct ipc_addr scratch;
	const char *why;

	(void)addr_parse(text, &scratch, &why);
	return why;
}

/* Returns the length written (without the NUL), or -1 with EINVAL (a or
 * buf NULL, or a not valid) or ENOSPC (size too small). */
int
ipc_addr_format(const struct ipc_addr *a, char *buf, size_t size)
{
	int r;

	if ((r = addr_format(a, buf, size)) < 0) {
		errno = -r;
		return -1;
	}
	return r;
}

int
ipc_addr_parse_fast(const char *text, struct ipc_addr *out)
{
	const char *why;

	return addr_parse(text, out, &why);
}
