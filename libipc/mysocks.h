/*
 * mysocks: the classic teaching socket library, made robust.
 *
 * The six calls of the lecture keep their names, arguments and return
 * conventions: a descriptor > 0 or -1 for the constructors, a byte count
 * for I/O, readSocket() returning 0 when the peer closed.  Every failure
 * returns -1 (or < 0) with errno set; nothing here prints or aborts.
 *
 * What "robust" adds, for every call:
 *   - IPv4 and IPv6 through getaddrinfo; servers listen dual-stack.
 *   - EINTR is retried; writeSocket() writes everything (short writes and
 *     non-blocking descriptors included).
 *   - SIGPIPE is never raised: a write to a closed peer is -1 with EPIPE.
 *   - every descriptor returned is close-on-exec.
 *   - bad arguments are -1 with EINVAL (or EBADF for a bad descriptor).
 *
 * Thread safety: every call is safe from any thread; two threads writing
 * the same socket at once interleave their bytes, as with write(2).
 *
 * See mysocks(3).
 */
#ifndef MYSOCKS_H
#define MYSOCKS_H

#ifdef __cplusplus
extern "C" {
#endif

/*
 * serverSocket - listen on TCP port (1-65535) on every address, IPv6
 * dual-stack where the machine has IPv6, else IPv4; SO_REUSEADDR set.
 * Returns the listening descriptor, or -1 with errno (EINVAL for a port
 * out of range, EADDRINUSE, EACCES, ...).
 */
int serverSocket(int port);

/*
 * serverSocketBind - like serverSocket(), on one address only (numeric or
 * a host name; NULL for every address).  Port 0 lets the kernel pick a
 * free port; read it back with portSocket().
 */
int serverSocketBind(const char *host, int port);

/*
 * serverSocketUnix - listen on a UNIX-domain stream socket at path.
 * A stale socket file (nobody accepts on it) is replaced; a live one is
 * never stolen (EADDRINUSE), nor is a file that is not a socket.
 * A path longer than sun_path holds is EINVAL.
 */
int serverSocketUnix(const char *path);

/*
 * acceptServerSocket - the next connection on listening socket se.
 * Returns its descriptor, or -1 with errno; EINTR and connections reset
 * before they were accepted are retried.  On a non-blocking listener,
 * -1 with EAGAIN when none is pending.
 */
int acceptServerSocket(int se);

/*
 * connectSocket - a TCP connection to host (name or numeric IPv4/IPv6)
 * and port (1-65535), trying every address the name has.  Returns the
 * descriptor, or -1 with errno: that of the last address tried
 * (ECONNREFUSED, ETIMEDOUT, ...), ENXIO when the name does not resolve,
 * EAGAIN when resolution failed for now.
 */
int connectSocket(const char *host, int port);

/*
 * connectSocketStart - as connectSocket(), for an event loop: returns a
 * non-blocking descriptor as soon as the connection is under way.  It
 * is writable when the connection is made or failed; getsockopt
 * SO_ERROR says which.  Name resolution still waits (use numeric
 * addresses where that matters).  -1 with errno as connectSocket().
 */
int connectSocketStart(const char *host, int port);

/*
 * connectSocketUnix - a connection to the UNIX-domain socket at path.
 * ENOENT when nothing is there, ECONNREFUSED when nobody listens.
 */
int connectSocketUnix(const char *path);

/*
 * writeSocket - write all n bytes of buf to ch.  Short writes, EINTR and
 * EAGAIN (on a non-blocking descriptor, by waiting) are handled.
 * Returns n, or -1 with errno (EPIPE when the peer is gone; SIGPIPE is
 * never raised).  After an error, an unknown prefix may have been sent.
 */
int writeSocket(int ch, const void *buf, int n);

/*
 * writeSomeSocket - one attempt to write up to n bytes, for event loops:
 * never waits on a socket, even a blocking one.  Returns the bytes
 * written (> 0, possibly fewer than n; 0 only when n is 0), or -1 with
 * errno: EAGAIN when nothing fits now, EPIPE when the peer is gone (no
 * SIGPIPE).
 */
int writeSomeSocket(int ch, const void *buf, int n);

/*
 * readSocket - read up to n (> 0) bytes into buf.  Returns the number of
 * bytes read (> 0), 0 when the peer closed its write side, or -1 with
 * errno.  EINTR is retried; on a non-blocking descriptor, -1 with EAGAIN
 * when nothing is there.
 */
int readSocket(int ch, void *buf, int n);

/*
 * writeSomeSocketFd - writeSomeSocket() on a UNIX socket, passing the
 * descriptor fd (SCM_RIGHTS) with the first byte.  The receiver gets its
 * own copy; the caller still owns fd.  Returns the bytes written (at
 * least 1 when the descriptor went), or -1 with errno (EAGAIN: nothing
 * went, the descriptor neither).
 */
int writeSomeSocketFd(int ch, const void *buf, int n, int fd);

/*
 * readSocketFds - readSocket() on a UNIX socket that may carry
 * descriptors: up to *nfds (in: the room in fds) arrive in fds, in the
 * order they were sent, and *nfds says how many.  Descriptors beyond
 * the room, or cut off by the kernel (MSG_CTRUNC), are closed and the
 * read fails with EBADMSG: a peer that sends them breaks the protocol.
 * Received descriptors are close-on-exec.
 */
int readSocketFds(int ch, void *buf, int n, int *fds, int *nfds);

/*
 * readFullSocket - read exactly n bytes, waiting as needed.  Returns n,
 * 0 when the peer closed before the first byte, or -1 with errno
 * (ECONNRESET when the peer closed part-way through).
 */
int readFullSocket(int ch, void *buf, int n);

/*
 * shutdownSocket - close the write side of ch: the peer's readSocket()
 * returns 0 once it has read everything, while ch can still read.
 * Returns 0 or -1 with errno.
 */
int shutdownSocket(int ch);

/*
 * closeSocket - close ch.  Returns 0, or -1 with errno (EBADF).
 */
int closeSocket(int ch);

/*
 * nonblockSocket - make ch non-blocking (on != 0) or blocking (on == 0).
 * Returns 0 or -1 with errno.
 */
int nonblockSocket(int ch, int on);

/*
 * portSocket - the local port a TCP socket is bound to (for a server
 * made with port 0).  Returns the port, or -1 with errno.
 */
int portSocket(int ch);

#ifdef __cplusplus
}
#endif

#endif /* MYSOCKS_H */
