/*
 * loop.c - epoll and a timer heap.  Timers cost O(log n) to arm, disarm
 * and fire, so thousands of timed waits do not slow the loop.
 */
#include "config.h"

#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* Events taken from the kernel per epoll_wait() call. */
#define LOOP_BATCH 256

struct loop {
	int epfd;
	int stop;
	struct loop_timer **heap;
	size_t nheap, capheap;
	void (*before_wait)(void *);
	void *before_data;
};

int64_t
loop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct loop *
loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	return l;
}

void
loop_free(struct loop *l)
{
	if (l == NULL)
		return;
	close(l->epfd);
	free(l->heap);
	free(l);
}

int
loop_watch_add(struct loop *l, struct loop_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

int
loop_watch_mod(struct loop *l, struct loop_watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	if (events == w->events)
		return 0;
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

void
loop_watch_del(struct loop *l, struct loop_watch *w)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

/* --- timer heap: heap[0] has the earliest deadline. -------------------- */

static void
loop_heap_place(struct loop *l, size_t i, struct loop_timer *t)
{
	l->heap[i] = t;
	t->slot = i;
}

static void
loop_heap_up(struct loop *l, size_t i)
{
	struct loop_timer *t = l->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (l->heap[parent]->deadline_ms <= t->deadline_ms)
			break;
		loop_heap_place(l, i, l->heap[parent]);
		i = parent;
	}
	loop_heap_place(l, i, t);
}

static void
loop_heap_down(struct loop *l, size_t i)
{
	struct loop_timer *t = l->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= l->nheap)
			break;
		if (c + 1 < l->nheap &&
		    l->heap[c + 1]->deadline_ms < l->heap[c]->deadline_ms)
			c++;
		if (t->deadline_ms <= l->heap[c]->deadline_ms)
			break;
		loop_heap_place(l, i, l->heap[c]);
		i = c;
	}
	loop_heap_place(l, i, t);
}

void
loop_timer_init(struct loop_timer *t, loop_timer_cb *cb, void *data)
{
	t->deadline_ms = 0;
	t->slot = SIZE_MAX;
	t->cb = cb;
	t->data = data;
}

void
loop_timer_del(struct loop *l, struct loop_timer *t)
{
	size_t i = t->slot;
	struct loop_timer *last;

	if (i == SIZE_MAX)
		return;
	t->slot = SIZE_MAX;
	last = l->heap[--l->nheap];
	if (i == l->nheap)
		return;
	loop_heap_place(l, i, last);
	loop_heap_down(l, i);
	loop_heap_up(l, last->slot);
}

int
loop_timer_set(struct loop *l, struct loop_timer *t, int64_t deadline_ms)
{
	loop_timer_del(l, t);
	if (l->nheap == l->capheap) {
		size_t cap = l->capheap ? l->capheap * 2 : 64;
		struct loop_timer **h = realloc(l->heap, cap * sizeof(*h));

		if (h == NULL)
			return -ENOMEM;
		l->heap = h;
		l->capheap = cap;
	}
	t->deadline_ms = deadline_ms;
	loop_heap_place(l, l->nheap++, t);
	loop_heap_up(l, t->slot);
	return 0;
}

/* Fire every timer that is due. */
static void
loop_fire_timers(struct loop *l)
{
	int64_t now = loop_now_ms();

	while (l->nheap > 0 && !l->stop && l->heap[0]->deadline_ms <= now) {
		struct loop_timer *t = l->heap[0];

		loop_timer_del(l, t);
		t->cb(t);
	}
}

/* How long epoll may sleep: until the next timer (-1: no timer).  Taken
 * after the before-wait hook, which may set timers itself. */
static int
loop_timeout(struct loop *l)
{
	int64_t wait;

	if (l->nheap == 0)
		return -1;
	wait = l->heap[0]->deadline_ms - loop_now_ms();
	if (wait < 0)
		return 0;
	return wait > 60000 ? 60000 : (int)wait;
}

void
loop_before_wait(struct loop *l, void (*fn)(void *), void *data)
{
	l->before_wait = fn;
	l->before_data = data;
}

int
loop_run_once(struct loop *l, int max_wait_ms)
{
	struct epoll_event evs[LOOP_BATCH];
	int n, wait;

	loop_fire_timers(l);
	if (l->before_wait != NULL)
		l->before_wait(l->before_data);
	if (l->stop)
		return 0;
	wait = loop_timeout(l);
	if (max_wait_ms >= 0 && (wait < 0 || wait > max_wait_ms))
		wait = max_wait_ms;
	n = epoll_wait(l->epfd, evs, LOOP_BATCH, wait);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n && !l->stop; i++) {
		struct loop_watch *w = evs[i].data.ptr;

		w->cb(w, evs[i].events);
	}
	return n;
}

int
loop_run(struct loop *l)
{
	l->stop = 0;
	while (!l->stop) {
		int n = loop_run_once(l, -1);

		if (n < 0)
			return n;
	}
	return 0;
}

void
loop_stop(struct loop *l)
{
	l->stop = 1;
}
