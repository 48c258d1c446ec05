/*
 * addr: the address parser at every boundary of its grammar (name length,
 * each byte value, pid and port ranges, host name limits, IPv6 brackets),
 * the reasons ipc_addr_why() gives, and ipc_addr_format() round trips and
 * buffer sizes.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "ipc.h"
#include "testutil.h"

/* Parse text, which must succeed, into *a; why() must agree. */
static void
parse_ok(const char *text, struct ipc_addr *a)
{
	if (ipc_addr_parse(text, a) != 0)
		fail_msg("\"%s\" rejected: %s", text, ipc_addr_why(text));
	assert_null(ipc_addr_why(text));
}

/* text must fail with EINVAL, and why() must give a non-empty reason. */
static void
assert_rejected(const char *text)
{
	struct ipc_addr a;
	const char *why;

	errno = 0;
	if (ipc_addr_parse(text, &a) != -1)
		fail_msg("\"%s\" accepted", text);
	assert_int_equal(errno, EINVAL);
	why = ipc_addr_why(text);
	assert_non_null(why);
	assert_true(why[0] != '\0');
}

/* A name of n bytes, all 'a', into buf (at least n + 1 bytes). */
static char *
fill(char *buf, size_t n, char c)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

/* A host name into buf: count labels of label_len 'a's, then one of
 * last_len 'b's (none if 0), joined by dots. */
static char *
make_host(char *buf, size_t size, int count, size_t label_len,
    size_t last_len)
{
	size_t n = 0;
	int i;

	for (i = 0; i < count; i++) {
		assert_true(n + label_len + 2 < size);
		if (i > 0)
			buf[n++] = '.';
		memset(buf + n, 'a', label_len);
		n += label_len;
	}
	if (last_len > 0) {
		assert_true(n + last_len + 2 < size);
		buf[n++] = '.';
		memset(buf + n, 'b', last_len);
		n += last_len;
	}
	buf[n] = '\0';
	return buf;
}

/* "jobs@" and a host made by make_host(), into buf. */
static char *
host_addr(char *buf, size_t size, int count, size_t label_len,
    size_t last_len)
{
	strcpy(buf, "jobs@");
	make_host(buf + 5, size - 5, count, label_len, last_len);
	return buf;
}

/* --- the four shapes --------------------------------------------------- */

static void
test_parse_mailbox_local(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs", &a);
	assert_int_equal(a.kind, IPC_ADDR_MAILBOX);
	assert_string_equal(a.name, "jobs");
	assert_int_equal(a.pid, 0);
	assert_string_equal(a.host, "");
	assert_int_equal(a.port, 0);
}

static void
test_parse_mailbox_remote(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@hostB", &a);
	assert_int_equal(a.kind, IPC_ADDR_MAILBOX);
	assert_string_equal(a.name, "jobs");
	assert_string_equal(a.host, "hostB");
	assert_int_equal(a.port, 0);
}

static void
test_parse_mailbox_remote_with_port(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@hostB:7400", &a);
	assert_int_equal(a.kind, IPC_ADDR_MAILBOX);
	assert_string_equal(a.name, "jobs");
	assert_string_equal(a.host, "hostB");
	assert_int_equal(a.port, 7400);
}

static void
test_parse_pid_local(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("pid:1234", &a);
	assert_int_equal(a.kind, IPC_ADDR_PID);
	assert_int_equal(a.pid, 1234);
	assert_string_equal(a.name, "");
	assert_string_equal(a.host, "");
	assert_int_equal(a.port, 0);
}

static void
test_parse_pid_remote_with_port(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("pid:1234@hostB:7400", &a);
	assert_int_equal(a.kind, IPC_ADDR_PID);
	assert_int_equal(a.pid, 1234);
	assert_string_equal(a.name, "");
	assert_string_equal(a.host, "hostB");
	assert_int_equal(a.port, 7400);
}

/* "pid" without the colon is an ordinary mailbox name. */
static void
test_parse_mailbox_named_pid(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("pid", &a);
	assert_int_equal(a.kind, IPC_ADDR_MAILBOX);
	assert_string_equal(a.name, "pid");
	parse_ok("pid.x", &a);
	assert_int_equal(a.kind, IPC_ADDR_MAILBOX);
}

/* --- mailbox names ----------------------------------------------------- */

static void
test_parse_accepts_name_255_bytes(void **state)
{
	char buf[IPC_NAME_MAX + 1];
	struct ipc_addr a;

	(void)state;
	parse_ok(fill(buf, 255, 'n'), &a);
	assert_int_equal(strlen(a.name), 255);
	assert_string_equal(a.name, buf);
}

static void
test_parse_rejects_name_256_bytes(void **state)
{
	char buf[IPC_NAME_MAX + 2];

	(void)state;
	assert_rejected(fill(buf, 256, 'n'));
	assert_string_equal(ipc_addr_why(buf),
	    "mailbox name longer than 255 bytes");
}

static int
is_name_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* Every byte value alone as the name: exactly [A-Za-z0-9_-] pass ('.'
 * may not start a name; byte 0 leaves the empty string). */
static void
test_parse_single_byte_names(void **state)
{
	struct ipc_addr a;
	char name[2];
	int c, r;

	(void)state;
	for (c = 0; c < 256; c++) {
		name[0] = (char)c;
		name[1] = '\0';
		r = ipc_addr_parse(name, &a);
		if (c != 0 && c != '.' && is_name_char(c)) {
			if (r != 0)
				fail_msg("byte 0x%02x rejected", c);
			assert_int_equal(a.name[0], c);
			assert_null(ipc_addr_why(name));
		} else {
			if (r != -1)
				fail_msg("byte 0x%02x accepted", c);
			assert_non_null(ipc_addr_why(name));
		}
	}
}

/* Every non-NUL byte value after a valid first byte: exactly
 * [A-Za-z0-9._-] pass. */
static void
test_parse_second_byte_of_name(void **state)
{
	struct ipc_addr a;
	char name[3];
	int c, r;

	(void)state;
	for (c = 1; c < 256; c++) {
		name[0] = 'a';
		name[1] = (char)c;
		name[2] = '\0';
		r = ipc_addr_parse(name, &a);
		if (is_name_char(c)) {
			if (r != 0)
				fail_msg("byte 0x%02x rejected", c);
			assert_string_equal(a.name, name);
		} else {
			if (r != -1)
				fail_msg("byte 0x%02x accepted", c);
			assert_non_null(ipc_addr_why(name));
		}
	}
}

static void
test_parse_rejects_leading_dot(void **state)
{
	(void)state;
	assert_rejected(".jobs");
	assert_rejected(".");
	assert_rejected("..");
	assert_string_equal(ipc_addr_why(".jobs"),
	    "mailbox name starts with '.'");
}

static void
test_parse_accepts_dot_after_first_byte(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("a.b", &a);
	parse_ok("jobs.", &a);
	parse_ok("a..b", &a);
	assert_string_equal(a.name, "a..b");
}

static void
test_parse_rejects_empty_string(void **state)
{
	(void)state;
	assert_rejected("");
	assert_string_equal(ipc_addr_why(""), "empty address");
}

static void
test_parse_rejects_empty_name_before_at(void **state)
{
	(void)state;
	assert_rejected("@hostB");
	assert_rejected("@");
}

static void
test_parse_rejects_surrounding_spaces(void **state)
{
	(void)state;
	assert_rejected(" jobs");
	assert_rejected("jobs ");
	assert_rejected("jobs@hostB ");
	assert_rejected("jobs@ hostB");
	assert_rejected("jobs@hostB:7400 ");
	assert_rejected(" pid:1");
	assert_rejected("pid:1 ");
	assert_rejected("pid: 1");
}

/* --- pids -------------------------------------------------------------- */

static void
test_parse_accepts_pid_bounds(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("pid:1", &a);
	assert_int_equal(a.pid, 1);
	parse_ok("pid:2147483647", &a);
	assert_int_equal(a.pid, 2147483647);
}

static void
test_parse_rejects_pid_zero(void **state)
{
	(void)state;
	assert_rejected("pid:0");
	assert_string_equal(ipc_addr_why("pid:0"), "bad pid after 'pid:'");
}

static void
test_parse_rejects_pid_over_int_max(void **state)
{
	(void)state;
	assert_rejected("pid:2147483648");
	assert_rejected("pid:4294967297");
	assert_rejected("pid:99999999999999999999999999999999");
}

static void
test_parse_rejects_pid_with_sign(void **state)
{
	(void)state;
	assert_rejected("pid:-1");
	assert_rejected("pid:+5");
}

static void
test_parse_rejects_pid_leading_zero(void **state)
{
	(void)state;
	assert_rejected("pid:007");
	assert_rejected("pid:01");
}

static void
test_parse_rejects_pid_empty(void **state)
{
	(void)state;
	assert_rejected("pid:");
	assert_rejected("pid:@hostB");
}

static void
test_parse_rejects_pid_trailing_junk(void **state)
{
	(void)state;
	assert_rejected("pid:12x");
	assert_rejected("pid:12:7400");
	assert_rejected("pid:0x10");
}

/* --- hosts ------------------------------------------------------------- */

static void
test_parse_host_ipv4(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@192.168.1.10:7400", &a);
	assert_string_equal(a.host, "192.168.1.10");
	assert_int_equal(a.port, 7400);
}

static void
test_parse_host_dns_name(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@host-b.example.org", &a);
	assert_string_equal(a.host, "host-b.example.org");
	parse_ok("jobs@a", &a);
	assert_string_equal(a.host, "a");
	parse_ok("jobs@1a-2.x9", &a);
}

static void
test_parse_host_ipv6_loses_brackets(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@[::1]", &a);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 0);
}

static void
test_parse_host_ipv6_with_port(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("pid:42@[fe80::1]:7400", &a);
	assert_int_equal(a.pid, 42);
	assert_string_equal(a.host, "fe80::1");
	assert_int_equal(a.port, 7400);
}

static void
test_parse_host_ipv6_longest_form(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@[0000:0000:0000:0000:0000:ffff:255.255.255.255]:1",
	    &a);
	assert_string_equal(a.host,
	    "0000:0000:0000:0000:0000:ffff:255.255.255.255");
}

static void
test_parse_rejects_unclosed_bracket(void **state)
{
	(void)state;
	assert_rejected("jobs@[::1");
	assert_rejected("jobs@[");
	assert_rejected("jobs@::1]");
}

static void
test_parse_rejects_bad_ipv6_in_brackets(void **state)
{
	(void)state;
	assert_rejected("jobs@[zz]");
	assert_rejected("jobs@[]");
	assert_rejected("jobs@[hostB]");
	assert_rejected("jobs@[1.2.3.4]");
	assert_rejected("jobs@[fe80::1%eth0]");
	assert_rejected("jobs@[1:2:3:4:5:6:7:8:9]");
	assert_rejected("jobs@[00000000000000000000000000000000000000"
	    "00000000000000000000::1]");
	assert_string_equal(ipc_addr_why("jobs@[zz]"),
	    "bad IPv6 address in brackets");
}

static void
test_parse_rejects_text_after_bracket(void **state)
{
	(void)state;
	assert_rejected("jobs@[::1]x");
	assert_rejected("jobs@[::1]]");
	assert_rejected("jobs@[::1] ");
	/* Skipping one byte after ']' as if it were the ':' would read
	 * this as port 7400. */
	assert_rejected("jobs@[::1]x7400");
	assert_string_equal(ipc_addr_why("jobs@[::1]x"),
	    "unexpected text after ']'");
}

static void
test_parse_rejects_ipv6_without_brackets(void **state)
{
	(void)state;
	assert_rejected("jobs@::1");
	assert_rejected("jobs@fe80::1");
	assert_string_equal(ipc_addr_why("jobs@::1"),
	    "IPv6 address needs brackets");
}

static void
test_parse_rejects_empty_host(void **state)
{
	(void)state;
	assert_rejected("jobs@");
	assert_rejected("jobs@:7400");
	assert_rejected("pid:1@");
	assert_string_equal(ipc_addr_why("jobs@"), "empty host after '@'");
}

static void
test_parse_accepts_label_63_bytes(void **state)
{
	char buf[128];
	struct ipc_addr a;

	(void)state;
	parse_ok(host_addr(buf, sizeof(buf), 1, 63, 0), &a);
	assert_int_equal(strlen(a.host), 63);
	parse_ok(host_addr(buf, sizeof(buf), 1, 1, 63), &a);
}

static void
test_parse_rejects_label_64_bytes(void **state)
{
	char buf[128];

	(void)state;
	assert_rejected(host_addr(buf, sizeof(buf), 1, 64, 0));
	assert_rejected(host_addr(buf, sizeof(buf), 1, 1, 64));
}

static void
test_parse_accepts_host_253_bytes(void **state)
{
	char buf[300];
	struct ipc_addr a;

	(void)state;
	/* 3 * 63 + 3 dots + 61 = 253 */
	parse_ok(host_addr(buf, sizeof(buf), 3, 63, 61), &a);
	assert_int_equal(strlen(a.host), 253);
}

static void
test_parse_rejects_host_254_bytes(void **state)
{
	char buf[300];

	(void)state;
	assert_rejected(host_addr(buf, sizeof(buf), 3, 63, 62));
	assert_string_equal(ipc_addr_why(buf),
	    "host name longer than 253 bytes");
}

static void
test_parse_rejects_host_far_too_long(void **state)
{
	char buf[2100];

	(void)state;
	assert_rejected(host_addr(buf, sizeof(buf), 32, 63, 0));
}

static void
test_parse_rejects_hyphen_at_label_edge(void **state)
{
	(void)state;
	assert_rejected("jobs@-a");
	assert_rejected("jobs@a-");
	assert_rejected("jobs@a-.b");
	assert_rejected("jobs@a.-b");
	assert_rejected("jobs@a.b-:7400");
	assert_rejected("jobs@-");
}

static void
test_parse_rejects_empty_label(void **state)
{
	(void)state;
	assert_rejected("jobs@a..b");
	assert_rejected("jobs@.a");
	assert_rejected("jobs@a.");
	assert_rejected("jobs@.");
}

static void
test_parse_rejects_host_bad_byte(void **state)
{
	(void)state;
	assert_rejected("jobs@ho_st");
	assert_rejected("jobs@a@b");
	assert_rejected("jobs@hostB/x");
	assert_rejected("jobs@h\xc3\xa9");
	assert_string_equal(ipc_addr_why("jobs@ho_st"), "bad host name");
}

/* --- ports ------------------------------------------------------------- */

static void
test_parse_accepts_port_bounds(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@hostB:1", &a);
	assert_int_equal(a.port, 1);
	parse_ok("jobs@hostB:65535", &a);
	assert_int_equal(a.port, 65535);
	parse_ok("jobs@[::1]:65535", &a);
	assert_int_equal(a.port, 65535);
}

static void
test_parse_rejects_port_zero(void **state)
{
	(void)state;
	assert_rejected("jobs@hostB:0");
	assert_string_equal(ipc_addr_why("jobs@hostB:0"),
	    "bad port (1-65535)");
}

static void
test_parse_rejects_port_over_65535(void **state)
{
	(void)state;
	assert_rejected("jobs@hostB:65536");
	assert_rejected("jobs@hostB:99999999999");
	assert_rejected("jobs@[::1]:99999999999999999999999999");
}

static void
test_parse_rejects_empty_port(void **state)
{
	(void)state;
	assert_rejected("jobs@hostB:");
	assert_rejected("jobs@[::1]:");
}

static void
test_parse_rejects_port_leading_zero(void **state)
{
	(void)state;
	assert_rejected("jobs@hostB:01");
	assert_rejected("jobs@hostB:00");
}

static void
test_parse_rejects_port_with_sign(void **state)
{
	(void)state;
	assert_rejected("jobs@hostB:+1");
	assert_rejected("jobs@hostB:-1");
}

static void
test_parse_rejects_port_trailing_junk(void **state)
{
	(void)state;
	assert_rejected("jobs@hostB:7400x");
	assert_rejected("jobs@hostB:7400:1");
	assert_rejected("jobs@hostB::7400");
}

static void
test_parse_rejects_port_without_host(void **state)
{
	(void)state;
	assert_rejected("jobs:7400");
	assert_rejected("pid:1:7400");
}

/* --- NULL arguments and why() ------------------------------------------ */

static void
test_parse_rejects_null_text(void **state)
{
	struct ipc_addr a;

	(void)state;
	errno = 0;
	assert_int_equal(ipc_addr_parse(NULL, &a), -1);
	assert_int_equal(errno, EINVAL);
}

static void
test_parse_rejects_null_out(void **state)
{
	(void)state;
	errno = 0;
	assert_int_equal(ipc_addr_parse("jobs", NULL), -1);
	assert_int_equal(errno, EINVAL);
}

static void
test_why_null_for_valid(void **state)
{
	static const char *const good[] = {
		"jobs", "jobs@hostB", "jobs@hostB:7400", "pid:1234",
		"pid:1234@hostB", "pid:1234@hostB:7400", "a_b-c.d",
		"jobs@10.0.0.1", "jobs@[::1]", "jobs@[fe80::1]:7400",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (ipc_addr_why(good[i]) != NULL)
			fail_msg("\"%s\": %s", good[i], ipc_addr_why(good[i]));
}

static void
test_why_reason_for_invalid(void **state)
{
	static const char *const bad[] = {
		"", " ", ".x", "a b", "pid:", "pid:0", "jobs@", "jobs@-a",
		"jobs@[zz]", "jobs@hostB:0", "jobs@hostB:", "@", "a:b",
	};
	const char *why;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = ipc_addr_why(bad[i]);
		if (why == NULL || why[0] == '\0')
			fail_msg("\"%s\": no reason", bad[i]);
	}
}

static void
test_why_names_bad_character(void **state)
{
	(void)state;
	assert_string_equal(ipc_addr_why("a b"),
	    "mailbox name has a character outside A-Z a-z 0-9 . _ -");
}

static void
test_why_null_text_is_no_address(void **state)
{
	(void)state;
	assert_string_equal(ipc_addr_why(NULL), "no address");
}

/* why() is a pure function of its text: errno is only for the caller. */
static void
test_why_leaves_errno_alone(void **state)
{
	(void)state;
	errno = 1234;
	assert_non_null(ipc_addr_why("a b"));
	assert_null(ipc_addr_why("jobs"));
	assert_int_equal(errno, 1234);
}

/* --- format ------------------------------------------------------------ */

static void
test_format_round_trips(void **state)
{
	static const char *const canon[] = {
		"jobs", "jobs@hostB", "jobs@hostB:7400", "pid:1",
		"pid:2147483647", "pid:1234@hostB", "pid:1234@hostB:65535",
		"jobs@192.168.1.10:1", "jobs@[::1]", "jobs@[fe80::1]:7400",
		"pid:7@[2001:db8::42]", "a.b_c-d@x-y.example.org:80",
	};
	struct ipc_addr a, b;
	char buf[IPC_ADDR_MAX];
	size_t i;
	int n;

	(void)state;
	for (i = 0; i < sizeof(canon) / sizeof(canon[0]); i++) {
		parse_ok(canon[i], &a);
		n = ipc_addr_format(&a, buf, sizeof(buf));
		assert_int_equal(n, strlen(canon[i]));
		assert_string_equal(buf, canon[i]);
		parse_ok(buf, &b);
		assert_memory_equal(&a, &b, sizeof(a));
	}
}

static void
test_format_longest_fits_ipc_addr_max(void **state)
{
	char text[IPC_ADDR_MAX + 64], buf[IPC_ADDR_MAX];
	struct ipc_addr a;
	int n;

	(void)state;
	/* The longest mailbox and host names, and a 5-digit port. */
	fill(text, IPC_NAME_MAX, 'n');
	text[IPC_NAME_MAX] = '@';
	make_host(text + IPC_NAME_MAX + 1, sizeof(text) - IPC_NAME_MAX - 1,
	    3, 63, 61);
	strcat(text, ":65535");
	parse_ok(text, &a);
	n = ipc_addr_format(&a, buf, sizeof(buf));
	assert_int_equal(n, strlen(text));
	assert_true((size_t)n < IPC_ADDR_MAX);
	assert_string_equal(buf, text);
}

static void
test_format_exact_size(void **state)
{
	struct ipc_addr a;
	char buf[32];
	const char *text = "jobs@[::1]:7400";
	size_t len = strlen(text);

	(void)state;
	parse_ok(text, &a);
	memset(buf, 'X', sizeof(buf));
	assert_int_equal(ipc_addr_format(&a, buf, len + 1), len);
	assert_string_equal(buf, text);
	assert_int_equal(buf[len + 1], 'X');
}

static void
test_format_enospc_one_byte_short(void **state)
{
	struct ipc_addr a;
	char buf[32];
	const char *text = "pid:1234@hostB:7400";
	size_t len = strlen(text);

	(void)state;
	parse_ok(text, &a);
	errno = 0;
	assert_int_equal(ipc_addr_format(&a, buf, len), -1);
	assert_int_equal(errno, ENOSPC);
	errno = 0;
	assert_int_equal(ipc_addr_format(&a, buf, 0), -1);
	assert_int_equal(errno, ENOSPC);
}

/* Format a, which must fail with EINVAL. */
static void
assert_format_einval(const struct ipc_addr *a)
{
	char buf[IPC_ADDR_MAX];

	errno = 0;
	assert_int_equal(ipc_addr_format(a, buf, sizeof(buf)), -1);
	assert_int_equal(errno, EINVAL);
}

static void
test_format_rejects_unknown_kind(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs", &a);
	a.kind = (enum ipc_addr_kind)0;
	assert_format_einval(&a);
	a.kind = (enum ipc_addr_kind)3;
	assert_format_einval(&a);
}

static void
test_format_rejects_bad_mailbox_name(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs", &a);
	strcpy(a.name, "");
	assert_format_einval(&a);
	strcpy(a.name, ".jobs");
	assert_format_einval(&a);
	strcpy(a.name, "a b");
	assert_format_einval(&a);
	strcpy(a.name, "a@b");
	assert_format_einval(&a);
	/* No NUL anywhere in the array. */
	memset(a.name, 'n', sizeof(a.name));
	assert_format_einval(&a);
}

static void
test_format_rejects_nonpositive_pid(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("pid:1", &a);
	a.pid = 0;
	assert_format_einval(&a);
	a.pid = -1;
	assert_format_einval(&a);
}

static void
test_format_rejects_bad_host(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@hostB", &a);
	strcpy(a.host, "-a");
	assert_format_einval(&a);
	strcpy(a.host, "[::1]");
	assert_format_einval(&a);
	strcpy(a.host, "zz:zz");
	assert_format_einval(&a);
	memset(a.host, 'h', sizeof(a.host));
	assert_format_einval(&a);
}

static void
test_format_rejects_port_out_of_range(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs@hostB", &a);
	a.port = -1;
	assert_format_einval(&a);
	a.port = 65536;
	assert_format_einval(&a);
}

/* "jobs:7400" would not parse back, so a port needs a host. */
static void
test_format_rejects_port_without_host(void **state)
{
	struct ipc_addr a;

	(void)state;
	parse_ok("jobs", &a);
	a.port = 7400;
	assert_format_einval(&a);
}

static void
test_format_rejects_null_args(void **state)
{
	struct ipc_addr a;
	char buf[IPC_ADDR_MAX];

	(void)state;
	assert_format_einval(NULL);
	parse_ok("jobs", &a);
	errno = 0;
	assert_int_equal(ipc_addr_format(&a, NULL, sizeof(buf)), -1);
	assert_int_equal(errno, EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_mailbox_local),
		cmocka_unit_test(test_parse_mailbox_remote),
		cmocka_unit_test(test_parse_mailbox_remote_with_port),
		cmocka_unit_test(test_parse_pid_local),
		cmocka_unit_test(test_parse_pid_remote_with_port),
		cmocka_unit_test(test_parse_mailbox_named_pid),
		cmocka_unit_test(test_parse_accepts_name_255_bytes),
		cmocka_unit_test(test_parse_rejects_name_256_bytes),
		cmocka_unit_test(test_parse_single_byte_names),
		cmocka_unit_test(test_parse_second_byte_of_name),
		cmocka_unit_test(test_parse_rejects_leading_dot),
		cmocka_unit_test(test_parse_accepts_dot_after_first_byte),
		cmocka_unit_test(test_parse_rejects_empty_string),
		cmocka_unit_test(test_parse_rejects_empty_name_before_at),
		cmocka_unit_test(test_parse_rejects_surrounding_spaces),
		cmocka_unit_test(test_parse_accepts_pid_bounds),
		cmocka_unit_test(test_parse_rejects_pid_zero),
		cmocka_unit_test(test_parse_rejects_pid_over_int_max),
		cmocka_unit_test(test_parse_rejects_pid_with_sign),
		cmocka_unit_test(test_parse_rejects_pid_leading_zero),
		cmocka_unit_test(test_parse_rejects_pid_empty),
		cmocka_unit_test(test_parse_rejects_pid_trailing_junk),
		cmocka_unit_test(test_parse_host_ipv4),
		cmocka_unit_test(test_parse_host_dns_name),
		cmocka_unit_test(test_parse_host_ipv6_loses_brackets),
		cmocka_unit_test(test_parse_host_ipv6_with_port),
		cmocka_unit_test(test_parse_host_ipv6_longest_form),
		cmocka_unit_test(test_parse_rejects_unclosed_bracket),
		cmocka_unit_test(test_parse_rejects_bad_ipv6_in_brackets),
		cmocka_unit_test(test_parse_rejects_text_after_bracket),
		cmocka_unit_test(test_parse_rejects_ipv6_without_brackets),
		cmocka_unit_test(test_parse_rejects_empty_host),
		cmocka_unit_test(test_parse_accepts_label_63_bytes),
		cmocka_unit_test(test_parse_rejects_label_64_bytes),
		cmocka_unit_test(test_parse_accepts_host_253_bytes),
		cmocka_unit_test(test_parse_rejects_host_254_bytes),
		cmocka_unit_test(test_parse_rejects_host_far_too_long),
		cmocka_unit_test(test_parse_rejects_hyphen_at_label_edge),
		cmocka_unit_test(test_parse_rejects_empty_label),
		cmocka_unit_test(test_parse_rejects_host_bad_byte),
		cmocka_unit_test(test_parse_accepts_port_bounds),
		cmocka_unit_test(test_parse_rejects_port_zero),
		cmocka_unit_test(test_parse_rejects_port_over_65535),
		cmocka_unit_test(test_parse_rejects_empty_port),
		cmocka_unit_test(test_parse_rejects_port_leading_zero),
		cmocka_unit_test(test_parse_rejects_port_with_sign),
		cmocka_unit_test(test_parse_rejects_port_trailing_junk),
		cmocka_unit_test(test_parse_rejects_port_without_host),
		cmocka_unit_test(test_parse_rejects_null_text),
		cmocka_unit_test(test_parse_rejects_null_out),
		cmocka_unit_test(test_why_null_for_valid),
		cmocka_unit_test(test_why_reason_for_invalid),
		cmocka_unit_test(test_why_names_bad_character),
		cmocka_unit_test(test_why_null_text_is_no_address),
		cmocka_unit_test(test_why_leaves_errno_alone),
		cmocka_unit_test(test_format_round_trips),
		cmocka_unit_test(test_format_longest_fits_ipc_addr_max),
		cmocka_unit_test(test_format_exact_size),
		cmocka_unit_test(test_format_enospc_one_byte_short),
		cmocka_unit_test(test_format_rejects_unknown_kind),
		cmocka_unit_test(test_format_rejects_bad_mailbox_name),
		cmocka_unit_test(test_format_rejects_nonpositive_pid),
		cmocka_unit_test(test_format_rejects_bad_host),
		cmocka_unit_test(test_format_rejects_port_out_of_range),
		cmocka_unit_test(test_format_rejects_port_without_host),
		cmocka_unit_test(test_format_rejects_null_args),
	};

	test_init(300);
	return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
