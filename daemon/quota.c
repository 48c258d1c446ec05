/*
 * quota.c - what each user holds in the broker: mailboxes owned and bytes
 * of messages sent that wait in a queue.  Checked against the per-uid
 * limits on create and send; one small record per uid ever seen.
 */
#include "config.h"

#include "broker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Users are few; a fixed table keeps lookups O(1) for them. */
#define QUOTA_BUCKETS 256

struct quota *
quota_get(struct broker *b, uid_t uid)
{
	struct quota **head, *q;

	if (b->quotas == NULL &&
	    (b->quotas = calloc(QUOTA_BUCKETS, sizeof(*b->quotas))) == NULL)
		return NULL;
	head = &b->quotas[uid % QUOTA_BUCKETS];
	for (q = *head; q != NULL; q = q->next)
		if (q->uid == uid)
			return q;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->uid = uid;
	q->next = *head;
	*head = q;
	return q;
}

void
quota_free_all(struct broker *b)
{
	if (b->quotas == NULL)
		return;
	for (size_t i = 0; i < QUOTA_BUCKETS; i++) {
		struct quota *q = b->quotas[i], *next;

		for (; q != NULL; q = next) {
			next = q->next;
			free(q);
		}
	}
	free(b->quotas);
	b->quotas = NULL;
}

/* msg_new(), and msg_recover() with check 0. */
static struct msg *
msg_make(struct broker *b, const struct ucred *from, size_t len, int fd,
    const char *origin, int check, int *err)
{
	struct quota *q = quota_get(b, from->uid);
	size_t olen = origin ? strlen(origin) + 1 : 0;
	size_t dlen = fd >= 0 ? 0 : len;
	struct msg *msg;

	if (q == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	if (check && b->lim.max_bytes_per_uid != 0 &&
	    len > b->lim.max_bytes_per_uid - (q->bytes <
	    b->lim.max_bytes_per_uid ? q->bytes : b->lim.max_bytes_per_uid)) {
		*err = -EDQUOT;
		return NULL;
	}
	if (check && fd >= 0 && b->lim.max_fds_per_uid != 0 &&
	    q->fds >= b->lim.max_fds_per_uid) {
		*err = -EDQUOT;
		return NULL;
	}
	if ((msg = malloc(sizeof(*msg) + dlen + olen)) == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	/* Every header field, not the payload: the caller fills that. */
	memset(msg, 0, sizeof(*msg));
	msg->quota = q;
	msg->id = ++b->next_msg_id;
	msg->enqueue_ns = broker_wall_ns();
	msg->pid = (uint32_t)from->pid;
	msg->uid = from->uid;
	msg->gid = from->gid;
	msg->len = (uint32_t)len;
	msg->fd = fd;
	if (fd >= 0) {
		b->fds_held++;
		q->fds++;
	}
	msg->b = b;
	if (origin != NULL) {
		memcpy(msg->data + dlen, origin, olen);
		msg->origin = (const char *)msg->data + dlen;
	}
	q->bytes += len;
	return msg;
}

struct msg *
msg_new(struct broker *b, const struct ucred *from, size_t len, int fd,
    const char *origin, int *err)
{
	return msg_make(b, from, len, fd, origin, 1, err);
}

struct msg *
msg_recover(struct broker *b, const struct ucred *from, size_t len,
    const char *origin)
{
	int err;

	return msg_make(b, from, len, -1, origin, 0, &err);
}

int
msg_materialize(struct broker *b, struct msg **msgp)
{
	struct msg *old = *msgp, *msg;
	size_t olen = old->origin ? strlen(old->origin) + 1 : 0;
	size_t got = 0;

	if (old->fd < 0)
		return 0;
	if ((msg = malloc(sizeof(*msg) + old->len + olen)) == NULL)
		return -ENOMEM;
	*msg = *old;
	while (got < old->len) {
		ssize_t n = pread(old->fd, msg->data + got, old->len - got,
		    (off_t)got);

		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			free(msg);
			return -err;
		}
		got += (size_t)n;
	}
	if (olen) {
		memcpy(msg->data + old->len, old->origin, olen);
		msg->origin = (const char *)msg->data + old->len;
	}
	msg->fd = -1;
	close(old->fd);
	b->fds_held--;
	old->quota->fds--;
	free(old);
	*msgp = msg;
	return 0;
}

void
msg_free(struct msg *msg)
{
	if (msg == NULL)
		return;
	if (msg->jseg != 0)
		durable_release(msg);
	msg->quota->bytes -= msg->len;
	if (msg->fd >= 0) {
		close(msg->fd);
		msg->b->fds_held--;
		msg->quota->fds--;
	}
	free(msg);
}
