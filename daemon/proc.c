/*
 * proc.c - processes and their direct queues ("pid:P").
 *
 * A queue belongs to one process instance, never to a pid: the broker
 * knows an instance by its pid and start time (/proc/P/stat), and
 * watches a pidfd (from SO_PEERPIDFD, else pidfd_open) to learn the
 * moment it exits.  Then its queue goes, with what waits in it, and any
 * connection it leaves behind (inherited by a child, say) is closed: a
 * recycled pid starts from nothing.
 *
 * A proc exists while the process has a connection, or while senders
 * wait (a bounded time) for a living process to connect.
 */
#include "config.h"

#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

/* Linux 6.5; Debian 12's headers predate it. */
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define PROC_TAB_MIN 64

int
proc_table_init(struct broker *b)
{
	b->procs = calloc(PROC_TAB_MIN, sizeof(*b->procs));
	if (b->procs == NULL)
		return -ENOMEM;
	b->procs_size = PROC_TAB_MIN;
	return 0;
}

static size_t
proc_slot(const struct broker *b, pid_t pid)
{
	return ((uint32_t)pid * 2654435761u) & (b->procs_size - 1);
}

static struct proc *
proc_find(struct broker *b, pid_t pid)
{
	struct proc *p;

	for (p = b->procs[proc_slot(b, pid)]; p != NULL; p = p->hnext)
		if (p->pid == pid)
			return p;
	return NULL;
}

/* The process's start time in clock ticks since boot, or 0 when it is
 * gone (or /proc is not there). */
static uint64_t
proc_start_time(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* The command name may hold anything, ')' included: fields
	 * start after the last ')'.  starttime is field 22. */
	if ((p = strrchr(buf, ')')) == NULL)
		return 0;
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
	    "%*u %*u %*d %*d %*d %*d %*d %*d %llu", &start) != 1)
		return 0;
	return start;
}

static void proc_on_exit(struct loop_watch *w, uint32_t events);

static void
proc_grow(struct broker *b)
{
	size_t size = b->procs_size * 2;
	struct proc **tab = calloc(size, sizeof(*tab));

	if (tab == NULL)
		return;		/* longer chains, still correct */
	for (size_t i = 0; i < b->procs_size; i++) {
		struct proc *p = b->procs[i], *next;

		for (; p != NULL; p = next) {
			size_t s = ((uint32_t)p->pid * 2654435761u) &
			    (size - 1);

			next = p->hnext;
			p->hnext = tab[s];
			tab[s] = p;
		}
	}
	free(b->procs);
	b->procs = tab;
	b->procs_size = size;
}

/* A new proc for pid, with the pidfd given (consumed; -1 for none).
 * NULL with *err set. */
static struct proc *
proc_new(struct broker *b, pid_t pid, uint64_t start, int pidfd, int *err)
{
	char name[32];
	struct proc *p = calloc(1, sizeof(*p));
	size_t slot;

	if (p == NULL) {
		*err = -ENOMEM;
		goto fail;
	}
	snprintf(name, sizeof(name), "pid:%d", (int)pid);
	if (mbox_init_queue(b, &p->q, name, p) < 0) {
		*err = -ENOMEM;
		goto fail;
	}
	p->b = b;
	p->pid = pid;
	p->start = start;
	p->pidfd = pidfd;
	if (pidfd >= 0) {
		p->watch = (struct loop_watch){ .fd = pidfd,
		    .cb = proc_on_exit, .data = p };
		if ((*err = loop_watch_add(b->loop, &p->watch, EPOLLIN)) < 0)
			goto fail;
	}
	slot = proc_slot(b, pid);
	p->hnext = b->procs[slot];
	b->procs[slot] = p;
	if (++b->nprocs > b->procs_size)
		proc_grow(b);
	return p;
fail:
	if (pidfd >= 0)
		close(pidfd);
	if (p != NULL)
		free(p->q.name);
	free(p);
	return NULL;
}

/* Forget p: what waits on its queue fails with err, what is queued is
 * dropped (and counted), its remaining connections are closed. */
static void
proc_destroy(struct broker *b, struct proc *p, int err, const char *why)
{
	struct proc **pp = &b->procs[proc_slot(b, p->pid)];

	if (p->dying)
		return;
	p->dying = 1;
	log_debug("pid %d: %s", (int)p->pid, why);
	while (p->conns != NULL)
		conn_close(p->conns);	/* unlinks itself */
	mbox_fini_queue(b, &p->q, err, why);
	if (p->pidfd >= 0) {
		loop_watch_del(b->loop, &p->watch);
		close(p->pidfd);
	}
	for (; *pp != NULL; pp = &(*pp)->hnext)
		if (*pp == p) {
			*pp = p->hnext;
			break;
		}
	b->nprocs--;
	/* Freed before the next wait: an exit event for it may still be
	 * in this round's batch. */
	p->hnext = b->dead_procs;
	b->dead_procs = p;
}

void
proc_reap(struct broker *b)
{
	struct proc *p;

	while ((p = b->dead_procs) != NULL) {
		b->dead_procs = p->hnext;
		free(p);
	}
}

static void
proc_on_exit(struct loop_watch *w, uint32_t events)
{
	struct proc *p = w->data;

	(void)events;
	if (p->dying)
		return;
	/* What it sent before it exited is still in its sockets: taken
	 * first, as a closed socket's last bytes would be. */
	for (struct conn *c = p->conns, *next; c != NULL; c = next) {
		next = c->pnext;
		conn_drain(c);
	}
	if (!p->dying)
		proc_destroy(p->b, p, ESRCH, "the process exited");
}

/* A pidfd for the process at the other end of fd, or -1. */
static int
proc_pidfd_of(int sockfd, pid_t pid)
{
	socklen_t len = sizeof(int);
	int pidfd = -1;

	if (getsockopt(sockfd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 &&
	    pidfd >= 0) {
		fcntl(pidfd, F_SETFD, FD_CLOEXEC);
		return pidfd;
	}
	/* Older kernels: by pid, which the start time check backs up. */
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

int
proc_attach(struct broker *b, struct conn *c)
{
	pid_t pid = c->cred.pid;
	uint64_t start = proc_start_time(pid);
	struct proc *p = proc_find(b, pid);
	int err = 0;

	if (p != NULL && start != 0 && p->start != 0 && p->start != start) {
		/* Same pid, another process: the old one is gone. */
		proc_destroy(b, p, ESRCH, "the process exited (pid reused)");
		p = NULL;
	}
	if (p == NULL) {
		p = proc_new(b, pid, start, proc_pidfd_of(c->watch.fd, pid),
		    &err);
		if (p == NULL)
			return err;
	}
	c->proc = p;
	c->pnext = p->conns;
	p->conns = c;
	if (p->nconns++ == 0)
		mbox_admit_senders(b, &p->q);	/* they waited for it */
	return 0;
}

void
proc_detach(struct broker *b, struct conn *c)
{
	struct proc *p = c->proc;
	struct conn **pp;

	if (p == NULL)
		return;
	c->proc = NULL;
	for (pp = &p->conns; *pp != NULL; pp = &(*pp)->pnext)
		if (*pp == c) {
			*pp = c->pnext;
			break;
		}
	p->nconns--;
	if (p->nconns == 0 && !p->dying)
		proc_destroy(b, p, ESRCH, "the process disconnected");
}

void
proc_release_if_idle(struct broker *b, struct proc *p)
{
	if (p->nconns == 0 && p->q.senders.count == 0 &&
	    p->q.receivers.count == 0 && !p->dying)
		proc_destroy(b, p, ESRCH, "nobody waits for the process");
}

struct proc *
proc_for_send(struct broker *b, pid_t pid, int *err)
{
	struct proc *p = proc_find(b, pid);
	uint64_t start;

	if (p != NULL)
		return p;
	/* Not connected: alive (kill 0 succeeds or is refused) means
	 * wait for it; gone means ESRCH now. */
	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH) ||
	    (start = proc_start_time(pid)) == 0) {
		*err = -ESRCH;
		return NULL;
	}
	return proc_new(b, pid, start, (int)syscall(SYS_pidfd_open, pid, 0),
	    err);
}

struct conn *
proc_conn_by_id(struct broker *b, pid_t pid, uint64_t id)
{
	struct proc *p = proc_find(b, pid);

	for (struct conn *c = p ? p->conns : NULL; c != NULL; c = c->pnext)
		if (c->id == id)
			return c;
	return NULL;
}

void
proc_table_free(struct broker *b)
{
	for (size_t i = 0; b->procs != NULL && i < b->procs_size; i++)
		while (b->procs[i] != NULL)
			proc_destroy(b, b->procs[i], ESRCH,
			    "the broker is stopping");
	free(b->procs);
	b->procs = NULL;
	proc_reap(b);
}
