/*
 * loop - the broker's one event loop: epoll for descriptors, a binary heap
 * of timers, callbacks with user data (the Redis ae / mosquitto model).
 * Single-threaded: nothing here locks.
 */
#ifndef LOOP_H
#define LOOP_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct loop_watch;
struct loop_timer;

typedef void loop_io_cb(struct loop_watch *w, uint32_t events);
typedef void loop_timer_cb(struct loop_timer *t);

/* Embedded in its owner; the loop keeps a pointer to it while added. */
struct loop_watch {
	int fd;
	uint32_t events;	/* EPOLLIN/EPOLLOUT now asked for */
	loop_io_cb *cb;
	void *data;
};

struct loop_timer {
	int64_t deadline_ms;	/* loop_now_ms() clock */
	size_t slot;		/* index in the heap; SIZE_MAX when idle */
	loop_timer_cb *cb;
	void *data;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);

/* Watch w->fd for events.  Returns 0 or -errno. */
int loop_watch_add(struct loop *l, struct loop_watch *w, uint32_t events);
/* Change the events; a no-op when they are the same.  0 or -errno. */
int loop_watch_mod(struct loop *l, struct loop_watch *w, uint32_t events);
void loop_watch_del(struct loop *l, struct loop_watch *w);

void loop_timer_init(struct loop_timer *t, loop_timer_cb *cb, void *data);
/* (Re)arm t for deadline_ms; 0 or -ENOMEM. */
int loop_timer_set(struct loop *l, struct loop_timer *t, int64_t deadline_ms);
/* Disarm t; harmless when idle. */
void loop_timer_del(struct loop *l, struct loop_timer *t);

/* Monotonic milliseconds. */
int64_t loop_now_ms(void);

/* Call fn(data) before each wait for events: where the broker flushes
 * the replies of the round and frees what it closed (so a callback never
 * meets a connection freed earlier in the same batch). */
void loop_before_wait(struct loop *l, void (*fn)(void *), void *data);

/* One round: due timers, the before-wait hook, then at most max_wait_ms
 * (-1: until the next timer) waiting for events, and their callbacks.
 * Returns how many events it handled, or -errno when epoll failed.  For
 * harnesses that drive a broker in-process (fuzz/). */
int loop_run_once(struct loop *l, int max_wait_ms);
/* Run until loop_stop().  Returns 0, or -errno when epoll failed. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

#endif
