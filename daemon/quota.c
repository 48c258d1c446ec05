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

struct msg *
msg_new(struct broker *b, const struct ucred *from, size_t len,
    const char *origin, int *err)
{
	struct quota *q = quota_get(b, from->uid);
	size_t olen = origin ? strlen(origin) + 1 : 0;
	struct msg *msg;

	if (q == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	if (b->lim.max_bytes_per_uid != 0 &&
	    len > b->lim.max_bytes_per_uid - (q->bytes <
	    b->lim.max_bytes_per_uid ? q->bytes : b->lim.max_bytes_per_uid)) {
		*err = -EDQUOT;
		return NULL;
	}
	if ((msg = malloc(sizeof(*msg) + len + olen)) == NULL) {
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
	if (origin != NULL) {
		memcpy(msg->data + len, origin, olen);
		msg->origin = (const char *)msg->data + len;
	}
	q->bytes += len;
	return msg;
}

void
msg_free(struct msg *msg)
{
	if (msg == NULL)
		return;
	msg->quota->bytes -= msg->len;
	free(msg);
}
