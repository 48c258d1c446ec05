/*
 * ipcd - the libipc broker.  One thread, one epoll loop; see ipcd(8).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <pwd.h>
#include <unistd.h>

#include "broker.h"
#include "ipc.h"
#include "log.h"
#include "mysocks.h"
#include "tls.h"

static void
main_usage(FILE *f)
{
	fprintf(f,
"Usage: ipcd [OPTIONS]\n"
"The libipc broker: owns the mailboxes and passes messages between\n"
"processes that connect to its UNIX socket.\n"
"\n"
"  -s, --socket PATH          listen here (default: $IPC_SOCKET, else\n"
"                             /run/ipcd/ipcd.sock for root, else\n"
"                             $XDG_RUNTIME_DIR/ipcd.sock, else\n"
"                             /tmp/ipcd-UID/ipcd.sock)\n"
"  -d, --daemon               detach once listening\n"
"  -p, --pidfile FILE         write the broker's pid to FILE\n"
"  -l, --log-level LEVEL      error, warn, info (default) or debug\n"
"      --max-msg-size BYTES   largest message (default 8388608)\n"
"      --capacity N           default mailbox capacity in messages (1024)\n"
"      --max-bytes BYTES      default mailbox capacity in bytes (64 MiB)\n"
"      --max-connections N    (default 4096)\n"
"      --max-mailboxes N      (default 65536)\n"
"      --max-handshakes N     connections held before their handshake;\n"
"                             past it the oldest is dropped (256)\n"
"      --handshake-timeout MS (default 5000)\n"
"      --direct-wait MS       how long a message to pid:P waits for a\n"
"                             living process to connect (default 1000)\n"
"      --state-dir DIR        where durable mailboxes are kept (default:\n"
"                             SOCKET.state beside a socket named by -s or\n"
"                             $IPC_SOCKET, else /var/lib/ipcd for root,\n"
"                             else $XDG_STATE_HOME/ipcd, else\n"
"                             ~/.local/state/ipcd); made when a durable\n"
"                             mailbox is first created\n"
"      --journal-segment-size BYTES\n"
"                             the journal's segments roll over past this\n"
"                             (65536 to 1073741824; default 67108864)\n"
"\n"
"Per user (uid), so that one cannot take the broker from the others;\n"
"over quota a request gets EDQUOT, its other connections stay (0: none):\n"
"      --max-connections-per-uid N  (default 1024)\n"
"      --max-mailboxes-per-uid N    mailboxes owned (default 16384)\n"
"      --max-bytes-per-uid BYTES    of queued messages sent (default 1 GiB)\n"
"      --max-fds-per-uid N          memfd messages held (default 1024)\n"
"\n"
"Other hosts (every TCP connection is TLS 1.3, mutually authenticated):\n"
"  -t, --tcp [ADDR:]PORT      accept brokers and remote clients on TCP\n"
"                             (ADDR default 127.0.0.1; port 0: any free)\n"
"      --psk FILE             pre-shared key file (ipcctl keygen), or:\n"
"      --ca FILE --cert FILE --key FILE   X.509: CA, our certificate, key\n"
"      --name HOST[:PORT]     how other brokers reach this one (default:\n"
"                             the --tcp address, or the host name)\n"
"      --uid-map ID:RUID=UID[:GID]  a remote identity's uid (RUID or ID\n"
"                             may be *) as a local uid; repeatable\n"
"      --remote-uid UID       uid of unmapped remote senders (65534)\n"
"      --remote-gid GID       their gid (65534)\n"
"      --heartbeat MS         link heartbeat; a link silent for three is\n"
"                             dead (default 2000)\n"
"      --link-queue N         messages queued per link (default 65536)\n"
"      --link-queue-bytes B   their bytes (default 256 MiB)\n"
"      --max-conns-per-addr N TCP connections from one address (64)\n"
"  -h, --help                 show this help\n"
"  -V, --version              show the version\n"
"\n"
"Once listening, ipcd prints 'ipcd: ready on PATH' on standard output\n"
"(with ', tcp ADDR:PORT' when listening on TCP).\n"
"SIGTERM or SIGINT stops it: clients are told, the socket is removed.\n");
}

static int
main_number(const char *opt, const char *s, uint64_t min, uint64_t max,
    uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "ipcd: %s: '%s' is not a number from %llu "
		    "to %llu\n", opt, s, (unsigned long long)min,
		    (unsigned long long)max);
		return -1;
	}
	*out = v;
	return 0;
}

/* Make the directory of the default socket, private to its user when it
 * is our own (/tmp/ipcd-UID must not be someone else's). */
static int
main_socket_dir(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return 0;
	*slash = '\0';
	/* The system broker's directory is for everyone to reach; a
	 * user's own is private. */
	if (mkdir(dir, strcmp(dir, "/run/ipcd") == 0 ? 0755 : 0700) < 0 &&
	    errno != EEXIST) {
		fprintf(stderr, "ipcd: mkdir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &st) < 0) {
		fprintf(stderr, "ipcd: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (strncmp(dir, "/tmp/ipcd-", 10) == 0 && st.st_uid != getuid()) {
		fprintf(stderr, "ipcd: %s belongs to uid %u, not to us\n",
		    dir, (unsigned)st.st_uid);
		return -1;
	}
	return 0;
}

/* The state directory when --state-dir names none: beside a socket that
 * was named (so that every broker, a test's private one say, has its
 * own), else the user's. */
static int
main_state_dir(int named, const char *sock, char *out, size_t size)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	struct passwd *pw;
	int n;

	if (named)
		n = snprintf(out, size, "%s.state", sock);
	else if (geteuid() == 0)
		n = snprintf(out, size, "/var/lib/ipcd");
	else if (xdg != NULL && xdg[0] == '/')
		n = snprintf(out, size, "%s/ipcd", xdg);
	else if ((home != NULL && home[0] == '/') ||
	    ((pw = getpwuid(geteuid())) != NULL && (home = pw->pw_dir) !=
	    NULL && home[0] == '/'))
		n = snprintf(out, size, "%s/.local/state/ipcd", home);
	else {
		fprintf(stderr, "ipcd: no state directory: set --state-dir, "
		    "$XDG_STATE_HOME or $HOME\n");
		return -1;
	}
	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "ipcd: state directory path too long\n");
		return -1;
	}
	return 0;
}

/* A relative path made absolute (--daemon changes to /, and the state
 * directory may be opened late). */
static int
main_absolute(char *path, size_t size)
{
	char cwd[PATH_MAX], *rel;
	int n;

	if (getcwd(cwd, sizeof(cwd)) == NULL || (rel = strdup(path)) == NULL) {
		fprintf(stderr, "ipcd: state directory %s: %s\n", path,
		    strerror(errno));
		return -1;
	}
	n = snprintf(path, size, "%s/%s", cwd, rel);
	free(rel);
	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "ipcd: state directory path too long\n");
		return -1;
	}
	return 0;
}

static void
main_on_listen(struct loop_watch *w, uint32_t events)
{
	(void)events;
	conn_accept_all(w->data);
}

static void
main_on_tcp(struct loop_watch *w, uint32_t events)
{
	(void)events;
	conn_accept_tcp(w->data);
}

/* "[ADDR:]PORT" or "[v6]:PORT" into host (brackets gone) and port. */
static int
main_hostport(const char *opt, const char *s, char *host, size_t size,
    int *port, const char *default_host)
{
	const char *colon = strrchr(s, ':');
	uint64_t v;

	if (colon == NULL || (s[0] == '[' && colon < strchr(s, ']'))) {
		snprintf(host, size, "%s", default_host);
		colon = s - 1;
	} else {
		size_t len = (size_t)(colon - s);

		if (s[0] == '[' && len >= 2 && s[len - 1] == ']') {
			s++;
			len -= 2;
		}
		if (len == 0 || len >= size) {
			fprintf(stderr, "ipcd: %s: bad address in '%s'\n",
			    opt, s);
			return -1;
		}
		memcpy(host, s, len);
		host[len] = '\0';
	}
	if (main_number(opt, colon + 1, 0, 65535, &v) < 0)
		return -1;
	*port = (int)v;
	return 0;
}

/* --name HOST[:PORT], [V6]:PORT or a bare V6 address; the port defaults
 * to the one --tcp listens on. */
static int
main_name(const char *s, int tcp_port, char *out, size_t size)
{
	char host[IPC_HOST_MAX + 1];
	const char *colon = strrchr(s, ':'), *end = s + strlen(s);
	uint64_t v = (uint64_t)tcp_port;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
			goto bad;
		if (rb[1] == ':' && main_number("--name", rb + 2, 1, 65535,
		    &v) < 0)
			return -1;
		s++;
		end = rb;
	} else if (colon != NULL && strchr(s, ':') == colon) {
		if (main_number("--name", colon + 1, 1, 65535, &v) < 0)
			return -1;
		end = colon;
	}
	if (end == s || (size_t)(end - s) >= sizeof(host))
		goto bad;
	memcpy(host, s, (size_t)(end - s));
	host[end - s] = '\0';
	link_name(host, (int)v, out, size);
	return 0;
bad:
	fprintf(stderr, "ipcd: --name: '%s' is not HOST[:PORT] or "
	    "[V6ADDR]:PORT\n", s);
	return -1;
}

static int
main_uid_map(struct broker *b, const char *s)
{
	const char *eq = strrchr(s, '='), *colon;
	unsigned long long ruid = 0, uid, gid;
	struct uid_map *m;
	char *end;

	if (eq == NULL)
		goto bad;
	for (colon = eq - 1; colon >= s && *colon != ':'; colon--)
		;
	if (colon <= s)
		goto bad;
	if (!(eq - colon == 2 && colon[1] == '*')) {
		errno = 0;
		ruid = strtoull(colon + 1, &end, 10);
		if (errno || end != eq || colon[1] == '-' || ruid > UINT32_MAX)
			goto bad;
	}
	errno = 0;
	uid = strtoull(eq + 1, &end, 10);
	if (errno || end == eq + 1 || eq[1] == '-' || uid >= UINT32_MAX)
		goto bad;
	if (*end == ':') {
		const char *g = end + 1;

		gid = strtoull(g, &end, 10);
		if (errno || end == g || *g == '-' || *end || gid >= UINT32_MAX)
			goto bad;
	} else if (*end == '\0') {
		struct passwd *pw = getpwuid((uid_t)uid);

		gid = pw ? pw->pw_gid : uid;
	} else {
		goto bad;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->identity = strndup(s, (size_t)(colon - s))) == NULL) {
		free(m);
		fprintf(stderr, "ipcd: out of memory\n");
		return -1;
	}
	m->ruid = eq - colon == 2 && colon[1] == '*' ? -1 : (int64_t)ruid;
	m->uid = (uid_t)uid;
	m->gid = (gid_t)gid;
	m->next = b->uid_map;
	b->uid_map = m;
	return 0;
bad:
	fprintf(stderr, "ipcd: --uid-map: '%s' is not IDENTITY:RUID=UID[:GID] "
	    "(RUID and IDENTITY may be *)\n", s);
	return -1;
}

static void
main_on_signal(struct loop_watch *w, uint32_t events)
{
	struct broker *b = w->data;
	struct signalfd_siginfo si;

	(void)events;
	while (read(w->fd, &si, sizeof(si)) == sizeof(si)) {
		log_info("signal %u: stopping", si.ssi_signo);
		b->stopping = 1;
		loop_stop(b->loop);
	}
}

static int
main_write_pidfile(const char *path)
{
	FILE *f = fopen(path, "we");

	if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 ||
	    fclose(f) != 0) {
		log_error("pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Descriptors: connections and memfd messages both need them.  The soft
 * limit is raised to the hard one, and memfd messages may hold half of
 * it; past that their payloads are read into memory instead. */
static void
broker_fd_limit(struct broker *b)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		b->max_fds_held = 256;
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t cur = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			rl.rlim_cur = cur;
	}
	b->max_fds_held = rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur / 2 > UINT32_MAX ? UINT32_MAX / 2 :
	    (uint32_t)(rl.rlim_cur / 2);
}

int
main(int argc, char **argv)
{
	enum { O_MAXMSG = 256, O_CAP, O_MAXBYTES, O_MAXCONN, O_MAXMBOX,
	    O_MAXMBOXUID, O_MAXBYTESUID, O_HELLO, O_DIRECTWAIT, O_PSK, O_CA,
	    O_CERT, O_KEY, O_NAME, O_UIDMAP, O_RUID, O_RGID, O_HEARTBEAT,
	    O_LINKQ, O_LINKQB, O_PERADDR, O_MAXCONNUID, O_MAXFDSUID,
	    O_MAXHS, O_STATEDIR, O_SEGSIZE };
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "max-msg-size", required_argument, NULL, O_MAXMSG },
		{ "capacity", required_argument, NULL, O_CAP },
		{ "max-bytes", required_argument, NULL, O_MAXBYTES },
		{ "max-connections", required_argument, NULL, O_MAXCONN },
		{ "max-mailboxes", required_argument, NULL, O_MAXMBOX },
		{ "max-mailboxes-per-uid", required_argument, NULL,
		    O_MAXMBOXUID },
		{ "max-bytes-per-uid", required_argument, NULL,
		    O_MAXBYTESUID },
		{ "handshake-timeout", required_argument, NULL, O_HELLO },
		{ "max-handshakes", required_argument, NULL, O_MAXHS },
		{ "max-connections-per-uid", required_argument, NULL,
		    O_MAXCONNUID },
		{ "max-fds-per-uid", required_argument, NULL, O_MAXFDSUID },
		{ "direct-wait", required_argument, NULL, O_DIRECTWAIT },
		{ "state-dir", required_argument, NULL, O_STATEDIR },
		{ "journal-segment-size", required_argument, NULL,
		    O_SEGSIZE },
		{ "tcp", required_argument, NULL, 't' },
		{ "psk", required_argument, NULL, O_PSK },
		{ "ca", required_argument, NULL, O_CA },
		{ "cert", required_argument, NULL, O_CERT },
		{ "key", required_argument, NULL, O_KEY },
		{ "name", required_argument, NULL, O_NAME },
		{ "uid-map", required_argument, NULL, O_UIDMAP },
		{ "remote-uid", required_argument, NULL, O_RUID },
		{ "remote-gid", required_argument, NULL, O_RGID },
		{ "heartbeat", required_argument, NULL, O_HEARTBEAT },
		{ "link-queue", required_argument, NULL, O_LINKQ },
		{ "link-queue-bytes", required_argument, NULL, O_LINKQB },
		{ "max-conns-per-addr", required_argument, NULL, O_PERADDR },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct broker b;
	char path[PATH_MAX], state[PATH_MAX], why[PATH_MAX + 256];
	const char *socket_opt = NULL, *pidfile = NULL, *tcp_opt = NULL;
	const char *name_opt = NULL, *state_opt = NULL, *env;
	struct tls_conf tconf = { 0 };
	char tcp_host[IPC_HOST_MAX + 1] = "", tls_why[256];
	int tcp_port = 0;
	int daemonize = 0, c, sfd, rc = 0, ready_pipe[2] = { -1, -1 };
	uint64_t v;
	sigset_t mask;

	broker_defaults(&b);
	while ((c = getopt_long(argc, argv, "s:dp:l:t:hV", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			tcp_opt = optarg;
			break;
		case O_PSK:
			tconf.psk_file = optarg;
			break;
		case O_CA:
			tconf.ca_file = optarg;
			break;
		case O_CERT:
			tconf.cert_file = optarg;
			break;
		case O_KEY:
			tconf.key_file = optarg;
			break;
		case O_NAME:
			name_opt = optarg;
			break;
		case O_UIDMAP:
			if (main_uid_map(&b, optarg) < 0)
				return 2;
			break;
		case O_RUID:
		case O_RGID:
			if (main_number(c == O_RUID ? "--remote-uid" :
			    "--remote-gid", optarg, 0, UINT32_MAX - 1, &v) < 0)
				return 2;
			if (c == O_RUID)
				b.remote_uid = (uid_t)v;
			else
				b.remote_gid = (gid_t)v;
			break;
		case O_HEARTBEAT:
			if (main_number("--heartbeat", optarg, 10, 600000,
			    &v) < 0)
				return 2;
			b.lim.heartbeat_ms = (uint32_t)v;
			break;
		case O_LINKQ:
			if (main_number("--link-queue", optarg, 1, 1u << 24,
			    &v) < 0)
				return 2;
			b.lim.link_queue = (uint32_t)v;
			break;
		case O_LINKQB:
			if (main_number("--link-queue-bytes", optarg, 1,
			    UINT64_MAX - 1, &v) < 0)
				return 2;
			b.lim.link_queue_bytes = v;
			break;
		case O_PERADDR:
			if (main_number("--max-conns-per-addr", optarg, 1,
			    1u << 20, &v) < 0)
				return 2;
			b.lim.max_conns_per_addr = (uint32_t)v;
			break;
		case 's':
			socket_opt = optarg;
			break;
		case 'd':
			daemonize = 1;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'l':
			if ((c = log_parse_level(optarg)) < 0) {
				fprintf(stderr, "ipcd: --log-level: '%s' is "
				    "not error, warn, info or debug\n",
				    optarg);
				return 2;
			}
			log_max = (enum log_level)c;
			break;
		case O_MAXMSG:
			/* The frame, payload plus overhead, must fit in the
			 * header's u32 length. */
			if (main_number("--max-msg-size", optarg, 1,
			    UINT32_MAX - WIRE_OVERHEAD_MAX, &v) < 0)
				return 2;
			b.lim.max_payload = (uint32_t)v;
			break;
		case O_CAP:
			if (main_number("--capacity", optarg, 0,
			    UINT32_MAX - 1, &v) < 0)
				return 2;
			b.lim.default_capacity = (uint32_t)v;
			break;
		case O_MAXBYTES:
			if (main_number("--max-bytes", optarg, 1,
			    UINT64_MAX - 1, &v) < 0)
				return 2;
			b.lim.default_max_bytes = v;
			break;
		case O_MAXCONN:
			if (main_number("--max-connections", optarg, 1,
			    1u << 20, &v) < 0)
				return 2;
			b.lim.max_connections = (uint32_t)v;
			break;
		case O_MAXMBOX:
			if (main_number("--max-mailboxes", optarg, 1,
			    1u << 24, &v) < 0)
				return 2;
			b.lim.max_mailboxes = (uint32_t)v;
			break;
		case O_MAXMBOXUID:
			if (main_number("--max-mailboxes-per-uid", optarg, 0,
			    1u << 24, &v) < 0)
				return 2;
			b.lim.max_mailboxes_per_uid = (uint32_t)v;
			break;
		case O_MAXBYTESUID:
			if (main_number("--max-bytes-per-uid", optarg, 0,
			    UINT64_MAX - 1, &v) < 0)
				return 2;
			b.lim.max_bytes_per_uid = v;
			break;
		case O_MAXCONNUID:
			if (main_number("--max-connections-per-uid", optarg,
			    0, 1u << 20, &v) < 0)
				return 2;
			b.lim.max_conns_per_uid = (uint32_t)v;
			break;
		case O_MAXFDSUID:
			if (main_number("--max-fds-per-uid", optarg, 0,
			    1u << 24, &v) < 0)
				return 2;
			b.lim.max_fds_per_uid = (uint32_t)v;
			break;
		case O_MAXHS:
			if (main_number("--max-handshakes", optarg, 1,
			    1u << 20, &v) < 0)
				return 2;
			b.lim.max_handshakes = (uint32_t)v;
			break;
		case O_STATEDIR:
			if (optarg[0] == '\0' ||
			    strlen(optarg) >= sizeof(state)) {
				fprintf(stderr, "ipcd: --state-dir: empty or "
				    "too long\n");
				return 2;
			}
			state_opt = optarg;
			break;
		case O_SEGSIZE:
			/* Small segments are for tests: each begins with
			 * every durable mailbox's record. */
			if (main_number("--journal-segment-size", optarg,
			    65536, 1u << 30, &v) < 0)
				return 2;
			b.journal_segment_bytes = v;
			break;
		case O_DIRECTWAIT:
			if (main_number("--direct-wait", optarg, 0,
			    3600000, &v) < 0)
				return 2;
			b.lim.direct_wait_ms = (uint32_t)v;
			break;
		case O_HELLO:
			if (main_number("--handshake-timeout", optarg, 1,
			    3600000, &v) < 0)
				return 2;
			b.lim.hello_timeout_ms = (uint32_t)v;
			break;
		case 'h':
			main_usage(stdout);
			return 0;
		case 'V':
			printf("ipcd (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
			return 0;
		default:
			main_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		main_usage(stderr);
		return 2;
	}
	log_init();
	if (tcp_opt != NULL && main_hostport("--tcp", tcp_opt, tcp_host,
	    sizeof(tcp_host), &tcp_port, "127.0.0.1") < 0)
		return 2;
	if (tconf.psk_file || tconf.ca_file || tconf.cert_file ||
	    tconf.key_file) {
		if (tls_ctx_new(&tconf, 1, &b.tls_server, tls_why,
		    sizeof(tls_why)) < 0 || tls_ctx_new(&tconf, 0,
		    &b.tls_client, tls_why, sizeof(tls_why)) < 0) {
			fprintf(stderr, "ipcd: TLS: %s\n", tls_why);
			return 2;
		}
	} else if (tcp_opt != NULL) {
		/* No unauthenticated or unencrypted mode, loopback or not. */
		fprintf(stderr, "ipcd: --tcp needs --psk FILE, or --ca, "
		    "--cert and --key\n");
		return 2;
	}
	if (getrandom(&b.epoch, sizeof(b.epoch), 0) != sizeof(b.epoch))
		b.epoch = (uint64_t)broker_wall_ns() ^ (uint64_t)getpid();
	if (socket_opt != NULL) {
		if (strlen(socket_opt) >= sizeof(path)) {
			fprintf(stderr, "ipcd: --socket: path too long\n");
			return 2;
		}
		strcpy(path, socket_opt);
	} else if (ipc_default_socket(path, sizeof(path)) < 0) {
		fprintf(stderr, "ipcd: no usable socket path: %s\n",
		    strerror(errno));
		return 1;
	} else if (main_socket_dir(path) < 0) {
		return 1;
	}
	if (state_opt != NULL)
		snprintf(state, sizeof(state), "%s", state_opt);
	else if (main_state_dir(socket_opt != NULL || ((env =
	    getenv("IPC_SOCKET")) != NULL && env[0] != '\0'), path, state,
	    sizeof(state)) < 0)
		return 1;
	if (state[0] != '/' && main_absolute(state, sizeof(state)) < 0)
		return 1;
	b.state_dir = state;

	/* Signals arrive through the loop, never in the middle of it. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((b.listen_fd = serverSocketUnix(path)) < 0) {
		fprintf(stderr, "ipcd: listen on %s: %s%s\n", path,
		    strerror(errno), errno == EADDRINUSE ?
		    " (another broker is running there)" : "");
		return 1;
	}
	/* Anyone may connect: what a client may do is decided by each
	 * mailbox's mode, not by the socket's (the directory still limits
	 * who can reach it: /tmp/ipcd-UID is 0700). */
	if (chmod(path, 0666) < 0) {
		fprintf(stderr, "ipcd: chmod %s: %s\n", path, strerror(errno));
		unlink(path);
		return 1;
	}
	if (daemonize) {
		pid_t pid;

		if (pipe2(ready_pipe, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
			fprintf(stderr, "ipcd: --daemon: %s\n",
			    strerror(errno));
			unlink(path);
			return 1;
		}
		if (pid > 0) {
			char ok;

			/* Exit once the child is serving, with its verdict. */
			close(ready_pipe[1]);
			if (read(ready_pipe[0], &ok, 1) != 1)
				return 1;
			if (tcp_opt != NULL)
				printf("ipcd: ready on %s, tcp %s:%d (pid "
				    "%ld)\n", path, tcp_host, tcp_port,
				    (long)pid);
			else
				printf("ipcd: ready on %s (pid %ld)\n", path,
				    (long)pid);
			return 0;
		}
		close(ready_pipe[0]);
		setsid();
		if (chdir("/") < 0) {
			/* Harmless: we open no relative paths. */
		}
	}
	if (tcp_opt != NULL) {
		if ((b.tcp_fd = serverSocketBind(tcp_host, tcp_port)) < 0 ||
		    nonblockSocket(b.tcp_fd, 1) < 0) {
			fprintf(stderr, "ipcd: listen on tcp %s:%d: %s\n",
			    tcp_host, tcp_port, strerror(errno));
			unlink(path);
			return 1;
		}
		tcp_port = portSocket(b.tcp_fd);
	}
	if (name_opt != NULL) {
		if (main_name(name_opt, tcp_port, b.name, sizeof(b.name)) < 0) {
			unlink(path);
			return 2;
		}
	} else {
		char h[IPC_HOST_MAX + 1] = "localhost";

		/* A specific address reaches us; a wildcard one needs our
		 * name. */
		if (tcp_opt != NULL && strcmp(tcp_host, "0.0.0.0") != 0 &&
		    strcmp(tcp_host, "::") != 0)
			snprintf(h, sizeof(h), "%s", tcp_host);
		else if (gethostname(h, sizeof(h) - 1) < 0)
			snprintf(h, sizeof(h), "localhost");
		link_name(h, tcp_port, b.name, sizeof(b.name));
	}
	broker_fd_limit(&b);
	if (broker_open(&b) < 0 || nonblockSocket(b.listen_fd, 1) < 0) {
		log_error("start: %s", strerror(errno ? errno : ENOMEM));
		unlink(path);
		return 1;
	}
	/* Durable mailboxes of an earlier run come back before anyone
	 * connects; a directory another broker holds is its, not ours. */
	if ((rc = durable_start(&b, why, sizeof(why))) < 0) {
		log_error("%s%s", why, rc == -EBUSY ? " (another broker "
		    "keeps its durable mailboxes there; give this one "
		    "another --state-dir)" : "");
		unlink(path);
		return 1;
	}
	if ((sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		log_error("signalfd: %s", strerror(errno));
		unlink(path);
		return 1;
	}
	b.listen_watch = (struct loop_watch){ .fd = b.listen_fd,
	    .cb = main_on_listen, .data = &b };
	b.signal_watch = (struct loop_watch){ .fd = sfd,
	    .cb = main_on_signal, .data = &b };
	b.tcp_watch = (struct loop_watch){ .fd = b.tcp_fd,
	    .cb = main_on_tcp, .data = &b };
	if (loop_watch_add(b.loop, &b.listen_watch, EPOLLIN) < 0 ||
	    loop_watch_add(b.loop, &b.signal_watch, EPOLLIN) < 0 ||
	    (b.tcp_fd >= 0 && loop_watch_add(b.loop, &b.tcp_watch,
	    EPOLLIN) < 0)) {
		log_error("epoll: %s", strerror(errno));
		unlink(path);
		return 1;
	}
	if (pidfile != NULL && main_write_pidfile(pidfile) < 0) {
		unlink(path);
		return 1;
	}
	log_info("listening on %s (max message %u bytes, %u connections)",
	    path, b.lim.max_payload, b.lim.max_connections);
	if (b.tcp_fd >= 0)
		log_info("listening on tcp %s:%d (TLS 1.3, %s), known to "
		    "other brokers as %s", tcp_host, tcp_port,
		    tconf.psk_file ? "pre-shared key" : "X.509", b.name);
	if (daemonize) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (write(ready_pipe[1], "1", 1) != 1) {
			/* The parent is gone; serve anyway. */
		}
		close(ready_pipe[1]);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			close(null);
		}
	} else {
		if (tcp_opt != NULL)
			printf("ipcd: ready on %s, tcp %s:%d\n", path,
			    tcp_host, tcp_port);
		else
			printf("ipcd: ready on %s\n", path);
		fflush(stdout);
	}

	if ((rc = loop_run(b.loop)) < 0)
		log_error("event loop: %s", strerror(-rc));
	closeSocket(b.listen_fd);
	if (b.tcp_fd >= 0)
		closeSocket(b.tcp_fd);
	unlink(path);
	if (pidfile != NULL)
		unlink(pidfile);
	close(sfd);
	broker_close(&b, "the broker is stopping");
	log_info("stopped");
	return rc < 0 ? 1 : 0;
}
