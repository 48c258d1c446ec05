/*
 * tls - TLS 1.3 for every TCP connection (broker links and remote
 * clients), through OpenSSL.  Internal: shared by ipcd, libipc and ipcctl.
 *
 * Both sides always authenticate each other, in one of two ways:
 *   - a pre-shared key: a key file of lines "IDENTITY HEXKEY" (32 random
 *     bytes, as `ipcctl keygen` writes).  A connecting side offers the
 *     first line; an accepting side takes any line's identity.  The
 *     handshake is TLS 1.3 PSK with (EC)DHE, so a recorded session is not
 *     readable later even by someone who steals the key;
 *   - X.509: a CA file, a certificate and its key.  Each side must show a
 *     certificate the CA signed; the peer's identity is its subject CN.
 * Nothing here is cryptography of our own: OpenSSL does all of it.
 *
 * Calls return 0 or -errno and never print; errors are described into a
 * caller's buffer.
 */
#ifndef IPC_TLS_H
#define IPC_TLS_H

#include <stddef.h>
#include <sys/types.h>

/* The longest identity (PSK identity or certificate CN) we keep. */
#define TLS_IDENTITY_MAX	128
/* Bytes of a key that ipcctl keygen makes. */
#define TLS_PSK_LEN		32

struct tls_conf {
	const char *psk_file;		/* or: */
	const char *ca_file, *cert_file, *key_file;
};

struct tls_ctx;
struct tls;

/* A context for accepting (server != 0) or connecting.  Reads the key
 * or certificate files now.  -EINVAL (with why) when they are unusable,
 * -ENOMEM. */
int tls_ctx_new(const struct tls_conf *conf, int server,
    struct tls_ctx **out, char *why, size_t why_size);
void tls_ctx_free(struct tls_ctx *ctx);

/* A TLS session on connected socket fd (non-blocking or not; the fd
 * stays the caller's).  NULL when out of memory. */
struct tls *tls_new(struct tls_ctx *ctx, int fd);
void tls_free(struct tls *t);

/*
 * tls_handshake - advance the handshake.  1 when done, 0 when it needs
 * the socket readable (*want = POLLIN) or writable (POLLOUT), -EACCES
 * when the peer failed authentication (or we did, for it), -EPROTO for
 * anything else (not TLS at all, a closed socket); why says which.
 */
int tls_handshake(struct tls *t, int *want, char *why, size_t why_size);

/* Read decrypted bytes: > 0, 0 when the peer closed, -1 with errno
 * EAGAIN (wait for *want) or EIO/ECONNRESET. */
long tls_read(struct tls *t, void *buf, size_t len, int *want);
/* Write: bytes taken (> 0), or -1 with errno EAGAIN (wait for *want) or
 * EPIPE/EIO.  A partial write takes what it says; call again with the
 * same remaining bytes after EAGAIN. */
long tls_write(struct tls *t, const void *buf, size_t len, int *want);
/* Decrypted bytes already inside the session: a poll on the socket does
 * not see them. */
int tls_pending(struct tls *t);
/* Send close_notify, best effort. */
void tls_shutdown(struct tls *t);
/* The authenticated identity of the peer ("" before the handshake). */
const char *tls_peer(const struct tls *t);

/*
 * tls_keygen - write a new key file at path (mode 0600, never replacing
 * a file that exists) for identity.  0, -EEXIST, -EINVAL (identity not
 * 1..TLS_IDENTITY_MAX of [A-Za-z0-9._@:-]), or another -errno.
 */
int tls_keygen(const char *path, const char *identity);

#endif
