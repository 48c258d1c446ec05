/*
 * failalloc.c - an LD_PRELOAD shim for tests/test-exhaust.c: the Nth
 * allocation of a process fails, and what the process still holds at its
 * exit is counted.  Built without the sanitizers (their runtime must come
 * first and refuses shims like this one).
 *
 * Environment:
 *   FAILALLOC_N=N       the Nth allocation counted fails with ENOMEM (one
 *                       failure only); 0 or unset: none fails
 *   FAILALLOC_STOP=F    once file F exists, counting (and failing) stops
 *   FAILALLOC_REPORT=F  at exit, write to file F one line:
 *                       "counted C failed N live L bytes B overflow O
 *                       at FRAME..." (the call that failed, innermost
 *                       first, each OBJECT+0xOFFSET(SYMBOL) for
 *                       addr2line -e OBJECT; "at -" when none failed)
 *
 * Counting starts when accept4() or accept() first returns a connection:
 * the process's start-up is not counted, so the same scenario driven
 * the same way counts the same allocations run after run.  Counted are
 * malloc, calloc, realloc (to a size other than 0), reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc and pvalloc; the C
 * library's own users of malloc (strdup, asprintf, fopen...) call it
 * through the symbol this shim defines, and are counted with it.
 *
 * Live: blocks allocated since counting started (until the process
 * exits, also after FAILALLOC_STOP) and not freed, kept in a table of
 * their own (mmap, never malloc).  A process that frees what it made has
 * none; one that leaks under a failure has more than a run without one.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);

/* While the real functions are looked up (dlsym may allocate): a small
 * arena whose blocks are never freed. */
static _Alignas(16) unsigned char boot[16384];
static size_t boot_used;
static int resolving;

static unsigned long fail_at;		/* FAILALLOC_N */
static const char *stop_path;
static const char *report_path;
static atomic_int started, stopped;
static unsigned long counted, failed;
#define FRAMES_MAX 8
static void *frames[FRAMES_MAX];	/* the failing call's stack */
static int nframes;

/* Live blocks: open addressing, linear probing, tombstones. */
#define TAB_SIZE (1u << 18)
#define TAB_EMPTY ((uintptr_t)0)
#define TAB_GONE ((uintptr_t)1)
struct slot {
	uintptr_t p;
	size_t size;
};
static struct slot *tab;
static unsigned long live, used_slots;
static unsigned long long live_bytes;
static int overflow;
static atomic_flag lock = ATOMIC_FLAG_INIT;

static void
take(void)
{
	while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire))
		;
}

static void
give(void)
{
	atomic_flag_clear_explicit(&lock, memory_order_release);
}

static void
resolve(void)
{
	if (real_malloc != NULL || resolving)
		return;
	resolving = 1;
	real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
	real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
	real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT,
	    "realloc");
	real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(
	    RTLD_NEXT, "posix_memalign");
	real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT,
	    "memalign");
	real_accept4 = (int (*)(int, struct sockaddr *, socklen_t *,
	    int))dlsym(RTLD_NEXT, "accept4");
	real_accept = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(
	    RTLD_NEXT, "accept");
	resolving = 0;
}

static int
is_boot(const void *p)
{
	return (const unsigned char *)p >= boot &&
	    (const unsigned char *)p < boot + sizeof(boot);
}

static void *
boot_alloc(size_t n)
{
	void *p;

	n = (n + 15) & ~(size_t)15;
	if (n > sizeof(boot) - boot_used)
		return NULL;
	p = boot + boot_used;
	boot_used += n;
	return p;
}

static size_t
slot_of(uintptr_t p)
{
	return (size_t)((p >> 4) * 2654435761u) & (TAB_SIZE - 1);
}

/* Caller holds the lock. */
static void
tab_add(void *ptr, size_t size)
{
	uintptr_t p = (uintptr_t)ptr;
	size_t i;

	if (tab == NULL || overflow)
		return;
	if (used_slots >= TAB_SIZE / 4 * 3) {
		overflow = 1;	/* the report says so: live is a floor */
		return;
	}
	for (i = slot_of(p); tab[i].p > TAB_GONE; i = (i + 1) & (TAB_SIZE - 1))
		;
	if (tab[i].p == TAB_EMPTY)
		used_slots++;
	tab[i].p = p;
	tab[i].size = size;
	live++;
	live_bytes += size;
}

/* Caller holds the lock.  1 when ptr was a live block of ours. */
static int
tab_del(void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;

	if (tab == NULL || p <= TAB_GONE)
		return 0;
	for (size_t i = slot_of(p); tab[i].p != TAB_EMPTY;
	    i = (i + 1) & (TAB_SIZE - 1))
		if (tab[i].p == p) {
			tab[i].p = TAB_GONE;
			live--;
			live_bytes -= tab[i].size;
			return 1;
		}
	return 0;
}

/* An allocation is about to be made: count it; 1 when it is the one to
 * fail (its stack is kept for the report). */
__attribute__((noinline)) static int
count_one(void)
{
	int fail = 0, saved = errno;

	if (!atomic_load(&started) || atomic_load(&stopped))
		return 0;
	if (stop_path != NULL && access(stop_path, F_OK) == 0) {
		atomic_store(&stopped, 1);
		errno = saved;
		return 0;
	}
	errno = saved;
	take();
	counted++;
	if (fail_at != 0 && counted == fail_at)
		/* Loaded at start (failalloc_init): allocates nothing. */
		nframes = backtrace(frames, FRAMES_MAX);
	if (fail_at != 0 && counted == fail_at) {
		failed = counted;
		fail = 1;
	}
	give();
	return fail;
}

/* A block made (ptr, may be NULL): tracked once counting started. */
static void *
made(void *ptr, size_t size)
{
	if (ptr != NULL && atomic_load(&started)) {
		take();
		tab_add(ptr, size);
		give();
	}
	return ptr;
}

static void
forget(void *ptr)
{
	if (ptr == NULL || !atomic_load(&started))
		return;
	take();
	tab_del(ptr);
	give();
}

void *
malloc(size_t n)
{
	if (real_malloc == NULL) {
		if (resolving)
			return boot_alloc(n);
		resolve();
	}
	if (count_one()) {
		errno = ENOMEM;
		return NULL;
	}
	return made(real_malloc(n), n);
}

void *
calloc(size_t n, size_t size)
{
	if (real_calloc == NULL) {
		if (resolving) {
			if (size != 0 && n > SIZE_MAX / size)
				return NULL;
			return boot_alloc(n * size);	/* static: zeroed */
		}
		resolve();
	}
	if (count_one()) {
		errno = ENOMEM;
		return NULL;
	}
	return made(real_calloc(n, size), n * size);
}

void *
realloc(void *old, size_t n)
{
	void *p;

	if (real_realloc == NULL) {
		if (resolving)
			return NULL;
		resolve();
	}
	if (old == NULL)
		return malloc(n);
	if (n == 0) {
		free(old);
		return NULL;
	}
	if (is_boot(old)) {
		size_t have = (size_t)(boot + sizeof(boot) -
		    (unsigned char *)old);

		if ((p = malloc(n)) != NULL)
			memcpy(p, old, have < n ? have : n);
		return p;
	}
	if (count_one()) {
		errno = ENOMEM;
		return NULL;
	}
	if ((p = real_realloc(old, n)) == NULL)
		return NULL;
	forget(old);
	return made(p, n);
}

void *
reallocarray(void *old, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(old, n * size);
}

void
free(void *p)
{
	if (p == NULL || is_boot(p))
		return;
	forget(p);
	if (real_free == NULL)
		resolve();
	real_free(p);
}

int
posix_memalign(void **out, size_t align, size_t n)
{
	int r;

	if (real_posix_memalign == NULL)
		resolve();
	if (count_one())
		return ENOMEM;
	if ((r = real_posix_memalign(out, align, n)) == 0)
		made(*out, n);
	return r;
}

void *
memalign(size_t align, size_t n)
{
	if (real_memalign == NULL)
		resolve();
	if (count_one()) {
		errno = ENOMEM;
		return NULL;
	}
	return made(real_memalign(align, n), n);
}

void *
aligned_alloc(size_t align, size_t n)
{
	return memalign(align, n);
}

void *
valloc(size_t n)
{
	return memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *
pvalloc(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return memalign(page, (n + page - 1) / page * page);
}

/* The first connection accepted: counting starts. */
static void
accepted(int fd)
{
	if (fd >= 0 && !atomic_load(&started))
		atomic_store(&started, 1);
}

int
accept4(int s, struct sockaddr *addr, socklen_t *len, int flags)
{
	int fd;

	if (real_accept4 == NULL)
		resolve();
	fd = real_accept4(s, addr, len, flags);
	accepted(fd);
	return fd;
}

int
accept(int s, struct sockaddr *addr, socklen_t *len)
{
	int fd;

	if (real_accept == NULL)
		resolve();
	fd = real_accept(s, addr, len);
	accepted(fd);
	return fd;
}

__attribute__((constructor)) static void
failalloc_init(void)
{
	const char *n = getenv("FAILALLOC_N");
	void *t, *frame[2];

	resolve();
	/* backtrace() loads its unwinder (malloc) on first use: now. */
	backtrace(frame, 2);
	fail_at = n != NULL ? strtoul(n, NULL, 10) : 0;
	stop_path = getenv("FAILALLOC_STOP");
	report_path = getenv("FAILALLOC_REPORT");
	t = mmap(NULL, TAB_SIZE * sizeof(struct slot), PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	tab = t == MAP_FAILED ? NULL : t;
	if (tab == NULL)
		overflow = 1;
}

__attribute__((destructor)) static void
failalloc_report(void)
{
	char line[FRAMES_MAX * (PATH_MAX + 80) + 160];
	Dl_info self = { 0 };
	size_t len;
	int fd, shown = 0;

	if (report_path == NULL)
		return;
	take();
	len = (size_t)snprintf(line, sizeof(line),
	    "counted %lu failed %lu live %lu bytes %llu overflow %d at",
	    counted, failed, live, live_bytes, overflow);
	give();
	/* The frames in this shim (count_one, malloc...) are left out. */
	if (dladdr((void *)failalloc_report, &self) == 0)
		self.dli_fbase = NULL;
	for (int i = 0; i < nframes && len < sizeof(line) - 1; i++) {
		Dl_info di = { 0 };

		if (dladdr(frames[i], &di) != 0 &&
		    di.dli_fbase == self.dli_fbase)
			continue;
		shown++;
		if (dladdr(frames[i], &di) == 0 || di.dli_fname == NULL)
			len += (size_t)snprintf(line + len, sizeof(line) - len,
			    " %p", frames[i]);
		else
			len += (size_t)snprintf(line + len, sizeof(line) - len,
			    " %s+0x%lx(%s)", di.dli_fname, (unsigned long)
			    ((uintptr_t)frames[i] - (uintptr_t)di.dli_fbase - 1),
			    di.dli_sname != NULL ? di.dli_sname : "?");
	}
	if (shown == 0 && len < sizeof(line) - 3)
		len += (size_t)snprintf(line + len, sizeof(line) - len, " -");
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	if ((fd = open(report_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) < 0)
		return;
	if (write(fd, line, len) < 0) {
		/* Nothing to do: the test finds no report. */
	}
	close(fd);
}
