/*
 * mysocks.c - the classic socket library, made robust.  See mysocks.h.
 *
 * Every entry point validates its arguments first, so a NULL or a bad
 * number is EINVAL rather than a crash, and leaves errno meaningful on
 * every -1 it returns.
 */
#include "config.h"

#include "mysocks.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A queue of this many pending connections is what listen(2) allows by
 * default on Linux; the kernel caps it at net.core.somaxconn anyway. */
#define MYSOCKS_BACKLOG SOMAXCONN

/* Map a getaddrinfo() failure onto errno, since our callers only see
 * errno.  There is no errno for "no such host": ENXIO ("No such device
 * or address") reads closest. */
static int
mysocks_gai_errno(int gai)
{
	switch (gai) {
	case EAI_SYSTEM:
		return errno ? errno : EIO;
	case EAI_AGAIN:
		return EAGAIN;
	case EAI_MEMORY:
		return ENOMEM;
	case EAI_FAMILY:
	case EAI_SOCKTYPE:
	case EAI_SERVICE:
	case EAI_BADFLAGS:
		return EINVAL;
	default:
		return ENXIO;
	}
}

/* Wait until fd is ready for events (POLLIN or POLLOUT), retrying EINTR.
 * Returns 0 or -1 with errno. */
static int
mysocks_wait(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		int r = poll(&p, 1, -1);

		if (r > 0) {
			if (p.revents & POLLNVAL) {
				errno = EBADF;
				return -1;
			}
			/* POLLERR/POLLHUP: the next I/O call reports it. */
			return 0;
		}
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* connect(2), finishing a connect that a signal interrupted: the kernel
 * goes on connecting in the background, so wait for it and read the
 * outcome instead of calling connect() again (which gives EALREADY). */
static int
mysocks_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	int err;
	socklen_t elen = sizeof(err);

	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINTR && errno != EINPROGRESS)
		return -1;
	if (mysocks_wait(fd, POLLOUT) < 0)
		return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		return -1;
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}

static int
mysocks_valid_port(int port, int lowest)
{
	return port >= lowest && port <= 65535;
}

/* Fill a sockaddr_un for path.  EINVAL for NULL, "", or a path that does
 * not fit sun_path with its terminating NUL. */
static int
mysocks_unix_addr(const char *path, struct sockaddr_un *sun)
{
	size_t len;

	if (path == NULL || (len = strlen(path)) == 0 ||
	    len >= sizeof(sun->sun_path)) {
		errno = EINVAL;
		return -1;
	}
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, len + 1);
	return 0;
}

/* A listening socket for one address, or -1 with errno. */
static int
mysocks_listen_on(const struct sockaddr *sa, socklen_t len)
{
	int fd, one = 1, zero = 0, saved;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail;
	/* Dual-stack: "::" then also takes IPv4 connections, whatever the
	 * system's net.ipv6.bindv6only default is. */
	if (sa->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		goto fail;
	if (bind(fd, sa, len) < 0 || listen(fd, MYSOCKS_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int
serverSocketBind(const char *host, int port)
{
	struct addrinfo hints, *res, *ai;
	char service[8];
	int fd = -1, gai, err = EADDRNOTAVAIL;

	if (!mysocks_valid_port(port, 0) || (host != NULL && *host == '\0')) {
		errno = EINVAL;
		return -1;
	}
	if (host == NULL) {
		/* Every address: IPv6 dual-stack first, IPv4 on a machine
		 * without IPv6. */
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6,
			.sin6_port = htons((unsigned short)port),
			.sin6_addr = IN6ADDR_ANY_INIT };
		struct sockaddr_in s4 = { .sin_family = AF_INET,
			.sin_port = htons((unsigned short)port),
			.sin_addr.s_addr = htonl(INADDR_ANY) };

		fd = mysocks_listen_on((struct sockaddr *)&s6, sizeof(s6));
		if (fd >= 0 || (errno != EAFNOSUPPORT &&
		    errno != EADDRNOTAVAIL && errno != EPROTONOSUPPORT))
			return fd;
		return mysocks_listen_on((struct sockaddr *)&s4, sizeof(s4));
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	errno = 0;
	if ((gai = getaddrinfo(host, service, &hints, &res)) != 0) {
		errno = mysocks_gai_errno(gai);
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = mysocks_listen_on(ai->ai_addr, ai->ai_addrlen);
		if (fd >= 0)
			break;
		err = errno;
	}
	freeaddrinfo(res);
	if (fd < 0)
		errno = err;
	return fd;
}

int
serverSocket(int port)
{
	if (!mysocks_valid_port(port, 1)) {
		errno = EINVAL;
		return -1;
	}
	return serverSocketBind(NULL, port);
}

/* Is something accepting connections at the socket file sun?  1 yes,
 * 0 no (stale), -1 with errno when we cannot tell. */
static int
mysocks_unix_alive(const struct sockaddr_un *sun)
{
	int fd, r, saved;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	r = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	saved = errno;
	close(fd);
	if (r == 0)
		return 1;
	switch (saved) {
	case ECONNREFUSED:
		return 0;
	case EAGAIN:
		return 1;	/* backlog full: very much alive */
	default:
		errno = saved;
		return -1;
	}
}

int
serverSocketUnix(const char *path)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd, saved, alive;

	if (mysocks_unix_addr(path, &sun) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno != EADDRINUSE)
			goto fail;
		/* Replace the file only when it is a socket nobody listens
		 * on: the leftover of a server that crashed. */
		if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
			errno = EADDRINUSE;
			goto fail;
		}
		alive = mysocks_unix_alive(&sun);
		if (alive != 0) {
			if (alive > 0)
				errno = EADDRINUSE;
			goto fail;
		}
		if (unlink(path) < 0 && errno != ENOENT)
			goto fail;
		if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
			goto fail;
	}
	if (listen(fd, MYSOCKS_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int
acceptServerSocket(int se)
{
	int fd;

	if (se < 0) {
		errno = EBADF;
		return -1;
	}
	for (;;) {
		fd = accept4(se, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
		/* A connection reset while it waited in the backlog is not
		 * the listener's failure: take the next one. */
		if (errno != EINTR && errno != ECONNABORTED && errno != EPROTO)
			return -1;
	}
}

/* Connect to host:port, trying each address; with nonblock, return as
 * soon as a connection is under way (EINPROGRESS) on a non-blocking
 * socket. */
static int
mysocks_connect_tcp(const char *host, int port, int nonblock)
{
	struct addrinfo hints, *res, *ai;
	char service[8];
	int fd = -1, gai, err = ENXIO;

	if (host == NULL || *host == '\0' || !mysocks_valid_port(port, 1)) {
		errno = EINVAL;
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	errno = 0;
	if ((gai = getaddrinfo(host, service, &hints, &res)) != 0) {
		errno = mysocks_gai_errno(gai);
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
		    (nonblock ? SOCK_NONBLOCK : 0), ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (nonblock) {
			if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
			    errno == EINPROGRESS)
				break;
		} else if (mysocks_connect(fd, ai->ai_addr,
		    ai->ai_addrlen) == 0) {
			break;
		}
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		errno = err;
	return fd;
}

int
connectSocket(const char *host, int port)
{
	return mysocks_connect_tcp(host, port, 0);
}

int
connectSocketStart(const char *host, int port)
{
	return mysocks_connect_tcp(host, port, 1);
}

int
connectSocketUnix(const char *path)
{
	struct sockaddr_un sun;
	int fd, saved;

	if (mysocks_unix_addr(path, &sun) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (mysocks_connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* write(2) to something that is not a socket (a pipe, say), where
 * MSG_NOSIGNAL does not exist: block SIGPIPE for the call and swallow
 * the one it raised, unless one was already pending for someone else. */
static ssize_t
mysocks_write_nosig(int ch, const void *buf, size_t len)
{
	sigset_t pipeset, old, pending;
	ssize_t r;
	int saved, was_pending;

	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &pipeset, &old) != 0)
		return write(ch, buf, len);
	r = write(ch, buf, len);
	saved = errno;
	if (r < 0 && saved == EPIPE && !was_pending) {
		struct timespec zero = { 0, 0 };

		while (sigtimedwait(&pipeset, NULL, &zero) < 0 &&
		    errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return r;
}

/* One write attempt of at most len bytes, without SIGPIPE (flags: more
 * send() flags for a socket).  *is_socket starts at 1 and drops to 0 the
 * first time ch turns out not to be a socket, so a loop pays for that
 * discovery once. */
static ssize_t
mysocks_write_once(int ch, const void *buf, size_t len, int *is_socket,
    int flags)
{
	ssize_t w;

	do {
		if (*is_socket) {
			w = send(ch, buf, len, MSG_NOSIGNAL | flags);
			if (w < 0 && errno == ENOTSOCK) {
				*is_socket = 0;
				w = mysocks_write_nosig(ch, buf, len);
			}
		} else {
			w = mysocks_write_nosig(ch, buf, len);
		}
	} while (w < 0 && errno == EINTR);
	return w;
}

static int
mysocks_check_io(int ch, const void *buf, int n)
{
	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	if (n < 0 || (buf == NULL && n > 0)) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int
writeSomeSocket(int ch, const void *buf, int n)
{
	int is_socket = 1;

	if (mysocks_check_io(ch, buf, n) < 0)
		return -1;
	if (n == 0)
		return 0;
	/* Never waits on a socket, blocking or not: event loops and
	 * asynchronous senders rely on it. */
	return (int)mysocks_write_once(ch, buf, (size_t)n, &is_socket,
	    MSG_DONTWAIT);
}

int
writeSocket(int ch, const void *buf, int n)
{
	const char *p = buf;
	size_t left;
	int is_socket = 1;

	if (mysocks_check_io(ch, buf, n) < 0)
		return -1;
	left = (size_t)n;
	while (left > 0) {
		ssize_t w = mysocks_write_once(ch, p, left, &is_socket, 0);

		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			if (mysocks_wait(ch, POLLOUT) < 0)
				return -1;
			continue;
		}
		p += w;
		left -= (size_t)w;
	}
	return n;
}

int
readSocket(int ch, void *buf, int n)
{
	ssize_t r;

	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	/* n == 0 is refused: a return of 0 means the peer closed. */
	if (n <= 0 || buf == NULL) {
		errno = EINVAL;
		return -1;
	}
	do
		r = read(ch, buf, (size_t)n);
	while (r < 0 && errno == EINTR);
	return (int)r;
}

int
writeSomeSocketFd(int ch, const void *buf, int n, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = (size_t)n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *cm;
	ssize_t w;

	if (mysocks_check_io(ch, buf, n) < 0)
		return -1;
	if (n == 0 || fd < 0) {
		errno = EINVAL;
		return -1;
	}
	memset(&ctl, 0, sizeof(ctl));
	cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	do
		w = sendmsg(ch, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	return (int)w;
}

/* Descriptors one read may carry; a peer of ours sends one per frame,
 * and a read spans few frames with one. */
#define MYSOCKS_FDS_MAX 32

int
readSocketFds(int ch, void *buf, int n, int *fds, int *nfds)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * MYSOCKS_FDS_MAX)];
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = (size_t)n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	int room = nfds != NULL ? *nfds : 0, got = 0, bad = 0;
	ssize_t r;

	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	if (n <= 0 || buf == NULL || nfds == NULL || (room > 0 &&
	    fds == NULL)) {
		errno = EINVAL;
		return -1;
	}
	*nfds = 0;
	do
		r = recvmsg(ch, &m, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm != NULL;
	    cm = CMSG_NXTHDR(&m, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET ||
		    cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			    sizeof(int));
			if (got < room)
				fds[got++] = fd;
			else {
				close(fd);
				bad = 1;
			}
		}
	}
	if (bad || (m.msg_flags & MSG_CTRUNC)) {
		while (got > 0)
			close(fds[--got]);
		errno = EBADMSG;
		return -1;
	}
	*nfds = got;
	return (int)r;
}

int
readFullSocket(int ch, void *buf, int n)
{
	char *p = buf;
	int got = 0;

	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	if (n <= 0 || buf == NULL) {
		errno = EINVAL;
		return -1;
	}
	while (got < n) {
		int r = readSocket(ch, p + got, n - got);

		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (mysocks_wait(ch, POLLIN) < 0)
					return -1;
				continue;
			}
			return -1;
		}
		if (r == 0) {
			if (got == 0)
				return 0;
			errno = ECONNRESET;
			return -1;
		}
		got += r;
	}
	return n;
}

int
shutdownSocket(int ch)
{
	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	return shutdown(ch, SHUT_WR);
}

int
closeSocket(int ch)
{
	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	/* On Linux the descriptor is gone even when close() says EINTR;
	 * retrying could close a descriptor another thread just opened. */
	if (close(ch) < 0 && errno != EINTR)
		return -1;
	return 0;
}

int
nonblockSocket(int ch, int on)
{
	int flags;

	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	if ((flags = fcntl(ch, F_GETFL)) < 0)
		return -1;
	flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
	return fcntl(ch, F_SETFL, flags) < 0 ? -1 : 0;
}

int
portSocket(int ch)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (ch < 0) {
		errno = EBADF;
		return -1;
	}
	if (getsockname(ch, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	errno = EINVAL;
	return -1;
}
