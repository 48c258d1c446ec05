/*
 * tls.c - TLS 1.3 sessions over OpenSSL.  See tls.h.
 */
#include "config.h"

#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Keys in one key file.  A cluster needs one line per identity that may
 * connect; a hundred is more than any file we expect. */
#define TLS_PSK_MAX	128

struct tls_psk {
	char identity[TLS_IDENTITY_MAX + 1];
	unsigned char key[TLS_PSK_LEN];
};

struct tls_ctx {
	SSL_CTX *ssl;
	struct tls_psk *psk;		/* NULL: X.509 */
	size_t npsk;
	int server;
};

struct tls {
	SSL *ssl;
	struct tls_ctx *ctx;
	char peer[TLS_IDENTITY_MAX + 1];
};

/* TLS_AES_128_GCM_SHA256: the cipher every TLS 1.3 stack has; a PSK is
 * tied to one hash, SHA-256 here. */
static const unsigned char tls_psk_cipher[2] = { 0x13, 0x01 };

/* --- a socket BIO that never raises SIGPIPE ----------------------------- */

/* OpenSSL's socket BIO writes with write(2), which raises SIGPIPE on a
 * closed connection; a library must not kill its caller for that. */
static BIO_METHOD *tls_bio_method;

static int
tls_bio_write(BIO *bio, const char *buf, int len)
{
	int fd = (int)(intptr_t)BIO_get_data(bio);
	ssize_t n;

	BIO_clear_retry_flags(bio);
	do
		n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(bio);
	return (int)n;
}

static int
tls_bio_read(BIO *bio, char *buf, int len)
{
	int fd = (int)(intptr_t)BIO_get_data(bio);
	ssize_t n;

	BIO_clear_retry_flags(bio);
	do
		n = recv(fd, buf, (size_t)len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(bio);
	return (int)n;
}

static long
tls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	(void)bio;
	(void)num;
	(void)ptr;
	/* Writes go straight to the socket: nothing to flush. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
tls_bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

static BIO_METHOD *
tls_bio(void)
{
	/* Made once; a race between two first calls leaks one method at
	 * worst, never a wrong one. */
	if (tls_bio_method == NULL) {
		BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() |
		    BIO_TYPE_SOURCE_SINK, "ipc socket");

		if (m == NULL || !BIO_meth_set_write(m, tls_bio_write) ||
		    !BIO_meth_set_read(m, tls_bio_read) ||
		    !BIO_meth_set_ctrl(m, tls_bio_ctrl) ||
		    !BIO_meth_set_create(m, tls_bio_create)) {
			BIO_meth_free(m);
			return NULL;
		}
		tls_bio_method = m;
	}
	return tls_bio_method;
}

/* --- errors ------------------------------------------------------------- */

/* Describe OpenSSL's first queued error (or fallback) into why; say
 * whether it was about who the peer is. */
static int
tls_error(const char *fallback, char *why, size_t why_size)
{
	unsigned long e = ERR_get_error();
	int auth = 0;

	if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
		switch (ERR_GET_REASON(e)) {
		case SSL_R_BINDER_DOES_NOT_VERIFY:
		case SSL_R_CERTIFICATE_VERIFY_FAILED:
		case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		case SSL_R_NO_SHARED_CIPHER:
		case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
		case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
		case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
		case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
		case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
		case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
		case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
		/* What a connecting side hears when the server found its
		 * PSK binder wrong: a different key. */
		case SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER:
			auth = 1;
			break;
		default:
			break;
		}
	}
	if (why_size > 0) {
		if (e != 0) {
			const char *r = ERR_reason_error_string(e);

			snprintf(why, why_size, "%s: %s", fallback,
			    r ? r : "unknown TLS error");
		} else {
			snprintf(why, why_size, "%s", fallback);
		}
	}
	ERR_clear_error();
	return auth;
}

/* --- pre-shared keys ---------------------------------------------------- */

static int
tls_identity_ok(const char *s, size_t len)
{
	if (len == 0 || len > TLS_IDENTITY_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) &&
		    strchr("._@:-", s[i]) == NULL)
			return 0;
	return 1;
}

static int
tls_hex(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Parse "IDENTITY HEXKEY" lines; blank lines and # comments skipped. */
static int
tls_read_psk(struct tls_ctx *ctx, const char *path, char *why,
    size_t why_size)
{
	char line[512];
	unsigned lineno = 0;
	struct stat st;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL) {
		snprintf(why, why_size, "%s: %s", path, strerror(errno));
		return -errno;
	}
	/* A key others can read is no key. */
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0) {
		snprintf(why, why_size, "%s: readable by others (mode %03o); "
		    "chmod 600 it", path, (unsigned)(st.st_mode & 0777));
		fclose(f);
		return -EINVAL;
	}
	if ((ctx->psk = calloc(TLS_PSK_MAX, sizeof(*ctx->psk))) == NULL) {
		fclose(f);
		return -ENOMEM;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *id, *hex;
		struct tls_psk *k;
		size_t idlen, hexlen;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(why, why_size, "%s:%u: line too long",
			    path, lineno);
			goto bad;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		id = p;
		idlen = strcspn(id, " \t\n");
		hex = id + idlen;
		while (*hex == ' ' || *hex == '\t')
			hex++;
		hexlen = strcspn(hex, " \t\n");
		if (!tls_identity_ok(id, idlen)) {
			snprintf(why, why_size, "%s:%u: bad identity (1-%d "
			    "of A-Z a-z 0-9 . _ @ : -)", path, lineno,
			    TLS_IDENTITY_MAX);
			goto bad;
		}
		if (hexlen != 2 * TLS_PSK_LEN || hex[hexlen + strspn(hex +
		    hexlen, " \t\n")] != '\0') {
			snprintf(why, why_size, "%s:%u: the key must be %d "
			    "hex digits", path, lineno, 2 * TLS_PSK_LEN);
			goto bad;
		}
		if (ctx->npsk == TLS_PSK_MAX) {
			snprintf(why, why_size, "%s: more than %d keys", path,
			    TLS_PSK_MAX);
			goto bad;
		}
		k = &ctx->psk[ctx->npsk];
		memcpy(k->identity, id, idlen);
		k->identity[idlen] = '\0';
		for (size_t i = 0; i < TLS_PSK_LEN; i++) {
			int hi = tls_hex(hex[2 * i]), lo = tls_hex(hex[2 * i +
			    1]);

			if (hi < 0 || lo < 0) {
				snprintf(why, why_size, "%s:%u: the key must "
				    "be hex digits", path, lineno);
				goto bad;
			}
			k->key[i] = (unsigned char)(hi << 4 | lo);
		}
		ctx->npsk++;
	}
	fclose(f);
	if (ctx->npsk == 0) {
		snprintf(why, why_size, "%s: no key in it", path);
		return -EINVAL;
	}
	return 0;
bad:
	fclose(f);
	OPENSSL_cleanse(ctx->psk, TLS_PSK_MAX * sizeof(*ctx->psk));
	return -EINVAL;
}

static SSL_SESSION *
tls_psk_session(SSL *ssl, const struct tls_psk *k)
{
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, tls_psk_cipher);
	SSL_SESSION *s;

	if (cipher == NULL || (s = SSL_SESSION_new()) == NULL)
		return NULL;
	if (!SSL_SESSION_set1_master_key(s, k->key, sizeof(k->key)) ||
	    !SSL_SESSION_set_cipher(s, cipher) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

/* Connecting side: offer our (the first) key. */
static int
tls_psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id,
    size_t *idlen, SSL_SESSION **sess)
{
	struct tls *t = SSL_get_app_data(ssl);
	const struct tls_psk *k = &t->ctx->psk[0];
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, tls_psk_cipher);

	*sess = NULL;
	*id = NULL;
	*idlen = 0;
	/* After a HelloRetryRequest the hash is fixed: offer the key only
	 * if it matches ours. */
	if (cipher == NULL || (md != NULL &&
	    md != SSL_CIPHER_get_handshake_digest(cipher)))
		return 1;
	if ((*sess = tls_psk_session(ssl, k)) == NULL)
		return 0;
	*id = (const unsigned char *)k->identity;
	*idlen = strlen(k->identity);
	/* The peer proves it holds the same key (or the handshake fails):
	 * name it by the identity we both use. */
	snprintf(t->peer, sizeof(t->peer), "%s", k->identity);
	return 1;
}

/* Accepting side: any identity in our file, with its key. */
static int
tls_psk_find(SSL *ssl, const unsigned char *id, size_t idlen,
    SSL_SESSION **sess)
{
	struct tls *t = SSL_get_app_data(ssl);

	*sess = NULL;
	for (size_t i = 0; i < t->ctx->npsk; i++) {
		const struct tls_psk *k = &t->ctx->psk[i];

		if (strlen(k->identity) != idlen ||
		    memcmp(k->identity, id, idlen) != 0)
			continue;
		if ((*sess = tls_psk_session(ssl, k)) == NULL)
			return 0;
		snprintf(t->peer, sizeof(t->peer), "%s", k->identity);
		return 1;
	}
	/* Unknown: no PSK, and with no certificate the handshake fails. */
	return 1;
}

/* --- contexts ----------------------------------------------------------- */

int
tls_ctx_new(const struct tls_conf *conf, int server, struct tls_ctx **out,
    char *why, size_t why_size)
{
	struct tls_ctx *ctx;
	int r = -EINVAL;

	*out = NULL;
	if (why_size > 0)
		why[0] = '\0';
	if ((conf->psk_file != NULL) == (conf->cert_file != NULL ||
	    conf->key_file != NULL || conf->ca_file != NULL)) {
		snprintf(why, why_size, "give either a key file or a CA, a "
		    "certificate and its key");
		return -EINVAL;
	}
	if (conf->psk_file == NULL && (conf->cert_file == NULL ||
	    conf->key_file == NULL || conf->ca_file == NULL)) {
		snprintf(why, why_size, "X.509 needs a CA file, a "
		    "certificate and its key");
		return -EINVAL;
	}
	if (tls_bio() == NULL || (ctx = calloc(1, sizeof(*ctx))) == NULL)
		return -ENOMEM;
	ctx->server = server;
	ERR_clear_error();
	ctx->ssl = SSL_CTX_new(server ? TLS_server_method() :
	    TLS_client_method());
	if (ctx->ssl == NULL) {
		r = -ENOMEM;
		goto fail;
	}
	if (!SSL_CTX_set_min_proto_version(ctx->ssl, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx->ssl, TLS1_3_VERSION)) {
		tls_error("TLS 1.3 unavailable", why, why_size);
		goto fail;
	}
	SSL_CTX_set_mode(ctx->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* No resumption: every connection authenticates afresh. */
	SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
	if (server)
		SSL_CTX_set_num_tickets(ctx->ssl, 0);
	if (conf->psk_file != NULL) {
		if ((r = tls_read_psk(ctx, conf->psk_file, why,
		    why_size)) < 0)
			goto fail;
		/* A PSK is bound to one hash: offer and pick only suites
		 * of SHA-256, or a server preferring a SHA-384 suite would
		 * pass over the key. */
		if (!SSL_CTX_set_ciphersuites(ctx->ssl,
		    "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")) {
			tls_error("TLS ciphersuites", why, why_size);
			r = -EINVAL;
			goto fail;
		}
		if (server)
			SSL_CTX_set_psk_find_session_callback(ctx->ssl,
			    tls_psk_find);
		else
			SSL_CTX_set_psk_use_session_callback(ctx->ssl,
			    tls_psk_use);
	} else {
		if (SSL_CTX_use_certificate_chain_file(ctx->ssl,
		    conf->cert_file) != 1) {
			char w[160];

			snprintf(w, sizeof(w), "%s", conf->cert_file);
			tls_error(w, why, why_size);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx->ssl, conf->key_file,
		    SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx->ssl) != 1) {
			char w[160];

			snprintf(w, sizeof(w), "%s", conf->key_file);
			tls_error(w, why, why_size);
			goto fail;
		}
		if (SSL_CTX_load_verify_locations(ctx->ssl, conf->ca_file,
		    NULL) != 1) {
			char w[160];

			snprintf(w, sizeof(w), "%s", conf->ca_file);
			tls_error(w, why, why_size);
			goto fail;
		}
		/* Mutual: both sides show a certificate the CA signed. */
		SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER |
		    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	*out = ctx;
	return 0;
fail:
	tls_ctx_free(ctx);
	return r;
}

void
tls_ctx_free(struct tls_ctx *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->psk != NULL) {
		OPENSSL_cleanse(ctx->psk, TLS_PSK_MAX * sizeof(*ctx->psk));
		free(ctx->psk);
	}
	SSL_CTX_free(ctx->ssl);
	free(ctx);
}

/* --- sessions ----------------------------------------------------------- */

struct tls *
tls_new(struct tls_ctx *ctx, int fd)
{
	struct tls *t = calloc(1, sizeof(*t));
	BIO *bio;

	if (t == NULL)
		return NULL;
	t->ctx = ctx;
	if ((t->ssl = SSL_new(ctx->ssl)) == NULL ||
	    (bio = BIO_new(tls_bio())) == NULL) {
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	BIO_set_data(bio, (void *)(intptr_t)fd);
	SSL_set_bio(t->ssl, bio, bio);
	SSL_set_app_data(t->ssl, t);
	if (ctx->server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	return t;
}

void
tls_free(struct tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);
	free(t);
}

/* What an SSL_* call that returned r <= 0 waits for: 0 (and *want set)
 * to retry, -1 for a failure. */
static int
tls_retry(struct tls *t, int r, int *want)
{
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		*want = POLLIN;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		*want = POLLOUT;
		return 0;
	default:
		return -1;
	}
}

int
tls_handshake(struct tls *t, int *want, char *why, size_t why_size)
{
	int r;

	ERR_clear_error();
	errno = 0;
	if ((r = SSL_do_handshake(t->ssl)) == 1) {
		if (t->ctx->psk == NULL) {
			X509 *cert = SSL_get0_peer_certificate(t->ssl);

			t->peer[0] = '\0';
			if (cert == NULL || X509_NAME_get_text_by_NID(
			    X509_get_subject_name(cert), NID_commonName,
			    t->peer, sizeof(t->peer)) <= 0) {
				snprintf(why, why_size, "the peer's "
				    "certificate has no subject CN");
				t->peer[0] = '\0';
				return -EACCES;
			}
		}
		return 1;
	}
	if (tls_retry(t, r, want) == 0)
		return 0;
	if (SSL_get_verify_result(t->ssl) != X509_V_OK) {
		snprintf(why, why_size, "certificate refused: %s",
		    X509_verify_cert_error_string(
		    SSL_get_verify_result(t->ssl)));
		ERR_clear_error();
		return -EACCES;
	}
	if (ERR_peek_error() == 0) {
		snprintf(why, why_size, "%s", errno != 0 ? strerror(errno) :
		    "connection closed during the TLS handshake");
		return -EPROTO;
	}
	return tls_error("TLS handshake failed", why, why_size) ? -EACCES :
	    -EPROTO;
}

long
tls_read(struct tls *t, void *buf, size_t len, int *want)
{
	int n, err;

	ERR_clear_error();
	if (len > INT32_MAX)
		len = INT32_MAX;
	if ((n = SSL_read(t->ssl, buf, (int)len)) > 0)
		return n;
	err = SSL_get_error(t->ssl, n);
	if (err == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (tls_retry(t, n, want) == 0) {
		errno = EAGAIN;
		return -1;
	}
	/* A peer that vanished without close_notify. */
	if (err == SSL_ERROR_SYSCALL && errno == 0) {
		ERR_clear_error();
		return 0;
	}
	if (errno == 0 || err == SSL_ERROR_SSL)
		errno = EIO;
	ERR_clear_error();
	return -1;
}

long
tls_write(struct tls *t, const void *buf, size_t len, int *want)
{
	int n;

	ERR_clear_error();
	if (len > INT32_MAX)
		len = INT32_MAX;
	if ((n = SSL_write(t->ssl, buf, (int)len)) > 0)
		return n;
	if (tls_retry(t, n, want) == 0) {
		errno = EAGAIN;
		return -1;
	}
	if (errno == 0 || SSL_get_error(t->ssl, n) == SSL_ERROR_SSL)
		errno = EPIPE;
	ERR_clear_error();
	return -1;
}

int
tls_pending(struct tls *t)
{
	return SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl);
}

void
tls_shutdown(struct tls *t)
{
	ERR_clear_error();
	if (SSL_is_init_finished(t->ssl))
		SSL_shutdown(t->ssl);
	ERR_clear_error();
}

const char *
tls_peer(const struct tls *t)
{
	return t->peer;
}

/* --- keys --------------------------------------------------------------- */

int
tls_keygen(const char *path, const char *identity)
{
	unsigned char key[TLS_PSK_LEN];
	char line[TLS_IDENTITY_MAX + 2 * TLS_PSK_LEN + 4];
	size_t len, off = 0;
	int fd, r = 0;

	if (identity == NULL || !tls_identity_ok(identity, strlen(identity)))
		return -EINVAL;
	if (RAND_priv_bytes(key, sizeof(key)) != 1) {
		ERR_clear_error();
		return -EIO;
	}
	len = (size_t)snprintf(line, sizeof(line), "%s ", identity);
	for (size_t i = 0; i < sizeof(key); i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len,
		    "%02x", key[i]);
	line[len++] = '\n';
	OPENSSL_cleanse(key, sizeof(key));
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600)) < 0) {
		OPENSSL_cleanse(line, sizeof(line));
		return -errno;
	}
	while (off < len) {
		ssize_t n = write(fd, line + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	OPENSSL_cleanse(line, sizeof(line));
	if (r < 0)
		unlink(path);
	return r;
}
