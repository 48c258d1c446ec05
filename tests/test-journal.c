/*
 * The journal of durable mailboxes, on its own: CRC-32C, the round trip
 * through the files, group commit, torn tails and damage in replay,
 * reclaim, the directory lock, and, through tests/powerfail.c in child
 * processes, power loss and write and sync errors.
 *
 * The program is also the child those tests start (argv[1] "child") and
 * a benchmark (argv[1] "bench" [dir]: appends and syncs of 64-byte
 * records in batches of 1, 16 and 256, and the raw fdatasync rate of
 * the disk; it prints figures and asserts nothing).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "testutil.h"

/* Replay's counters and a knob, in daemon/journal.c for the tests (not in
 * journal.h: not the API): bytes checksummed (records checked, bytes
 * scanned by a search), candidates a search weighed, and a lower cap on
 * the candidates a search keeps open (0: the journal's own). */
extern uint64_t jnl_test_crc_bytes, jnl_test_candidates;
extern size_t jnl_test_cand_max;

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* As journal.h lays them out on disk. */
#define SEG_HDR		32
#define REC_HDR		9

#define REC_MAX		128
#define META_TYPE	250	/* checkpoints; messages use 1..200 */
#define BIG_TYPE	251	/* BIG_LEN bytes of BIG_BYTE */
#define BIG_LEN		20000
#define BIG_BYTE	0x5a

/* --- records the tests write: all of them derived from an id ------------- */

static uint8_t
rec_type(uint32_t id)
{
	return (uint8_t)(1 + id % 200);
}

/* Body of record id: the id (little-endian), then bytes made from it;
 * 8 to 104 bytes. */
static size_t
rec_make(uint32_t id, uint8_t buf[REC_MAX])
{
	size_t len = 8 + id % 97;

	for (int i = 0; i < 4; i++)
		buf[i] = (uint8_t)(id >> (8 * i));
	for (size_t i = 4; i < len; i++)
		buf[i] = (uint8_t)(id * 31 + i * 7);
	return len;
}

/* What record id takes on disk. */
static uint64_t
rec_disk(uint32_t id)
{
	return REC_HDR + 8 + id % 97;
}

static journal_pos
rec_append(struct journal *j, uint32_t id, uint64_t *seg)
{
	uint8_t buf[REC_MAX];
	size_t len = rec_make(id, buf);

	/* The id as the "header", the rest as the payload. */
	return journal_append(j, rec_type(id), buf, 4, buf + 4, len - 4, seg);
}

/* --- what replay delivers ------------------------------------------------ */

struct seen {
	struct journal *j;
	uint32_t *ids;		/* META_TYPE records: UINT32_MAX */
	uint64_t *segs;
	journal_pos *pos;
	size_t n, cap;
	size_t bad;		/* delivered, but not as any test wrote it */
	size_t damage;		/* on_damage calls */
	uint64_t dmg_seg, dmg_off;	/* the first one's */
	char dmg_what[64];
	int retain;		/* journal_retain every message record */
	int stop_at;		/* >0: the callback fails at this record */
};

static void
seen_reset(struct seen *s)
{
	free(s->ids);
	free(s->segs);
	free(s->pos);
	memset(s, 0, sizeof(*s));
}

static int
seen_cb(void *arg, const struct journal_rec *r)
{
	struct seen *s = arg;
	uint8_t want[REC_MAX];
	uint32_t id = UINT32_MAX;

	if (s->stop_at > 0 && (size_t)s->stop_at == s->n + 1)
		return -ECANCELED;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;

		s->ids = realloc(s->ids, cap * sizeof(*s->ids));
		s->segs = realloc(s->segs, cap * sizeof(*s->segs));
		s->pos = realloc(s->pos, cap * sizeof(*s->pos));
		if (s->ids == NULL || s->segs == NULL || s->pos == NULL)
			return -ENOMEM;
		s->cap = cap;
	}
	if (r->type == META_TYPE) {
		if (r->len != 4 || memcmp(r->body, "meta", 4) != 0)
			s->bad++;
	} else if (r->type == BIG_TYPE) {
		for (uint32_t i = 0; i < r->len; i++)
			s->bad += r->body[i] != BIG_BYTE;
		s->bad += r->len != BIG_LEN;
		id = UINT32_MAX - 1;
	} else if (r->len < 4) {
		s->bad++;
	} else {
		id = (uint32_t)r->body[0] | (uint32_t)r->body[1] << 8 |
		    (uint32_t)r->body[2] << 16 | (uint32_t)r->body[3] << 24;
		if (r->type != rec_type(id) || r->len != rec_make(id, want) ||
		    memcmp(r->body, want, r->len) != 0)
			s->bad++;
		else if (s->retain)
			journal_retain(s->j, r->seg);
	}
	s->ids[s->n] = id;
	s->segs[s->n] = r->seg;
	s->pos[s->n] = r->pos;
	s->n++;
	return 0;
}

static void
seen_damage(void *arg, uint64_t seg, uint64_t off, const char *what)
{
	struct seen *s = arg;

	if (s->damage++ == 0) {
		s->dmg_seg = seg;
		s->dmg_off = off;
		snprintf(s->dmg_what, sizeof(s->dmg_what), "%s", what);
	}
}

/* Message records seen (checkpoint records left out), ids in *ids. */
static size_t
seen_messages(const struct seen *s, uint32_t *ids, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n; i++)
		if (s->ids[i] != UINT32_MAX && n < max)
			ids[n++] = s->ids[i];
	return n;
}

/* --- the journal under test, in a private directory ---------------------- */

struct fix {
	char *dir;
	struct journal *j;
	struct seen seen;
	struct journal_replay_stats rst;
	journal_pos last;	/* position of the last append */
	int ckpt;		/* the checkpoint appends one META record */
	unsigned ckpt_calls;
};

static int
fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL || (f->dir = test_tmpdir()) == NULL) {
		free(f);
		return -1;
	}
	jnl_test_cand_max = 0;	/* a failed test may have left it set */
	*state = f;
	return 0;
}

static int
fix_teardown(void **state)
{
	struct fix *f = *state;

	journal_close(f->j);
	seen_reset(&f->seen);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

static void
fix_ckpt(void *arg)
{
	struct fix *f = arg;

	f->ckpt_calls++;
	if (f->ckpt)
		assert_true(journal_append(f->j, META_TYPE, "meta", 4, NULL, 0,
		    NULL) != 0);
}

/* (Re)open the journal on f->dir and replay it into f->seen. */
static void
fix_open(struct fix *f, uint64_t segment_bytes, int retain)
{
	struct journal_opts o = { .segment_bytes = segment_bytes };
	char why[256];

	journal_close(f->j);
	f->j = NULL;
	f->last = 0;
	seen_reset(&f->seen);
	assert_int_equal(journal_open(f->dir, &o, &f->j, why, sizeof(why)),
	    0);
	f->seen.j = f->j;
	f->seen.retain = retain;
	journal_set_checkpoint(f->j, fix_ckpt, f);
	assert_int_equal(journal_replay(f->j, seen_cb, seen_damage, &f->seen,
	    &f->rst), 0);
	assert_int_equal(f->seen.bad, 0);
}

/* Wait until pos is on disk, or a sync fails.  0, the journal's -errno,
 * or -ETIMEDOUT.  *synced (may be NULL) gets the synced position. */
static int
jwait(struct journal *j, journal_pos pos, journal_pos *synced)
{
	long long deadline = test_now_ms() + TEST_WAIT_MS;
	journal_pos s = 0;
	int r;

	for (;;) {
		r = journal_synced(j, &s);
		if (synced != NULL)
			*synced = s;
		if (r < 0)
			return r;
		if (s >= pos)
			return 0;
		if (test_now_ms() >= deadline ||
		    test_wait_readable(journal_fd(j),
		    (int)(deadline - test_now_ms())) != 1)
			return -ETIMEDOUT;
	}
}

static void
fix_sync(struct fix *f)
{
	assert_int_equal(journal_sync(f->j), 0);
	assert_int_equal(jwait(f->j, f->last, NULL), 0);
}

/* Append ids from..to-1, each retained when retain; segs[id] (may be
 * NULL) gets its segment. */
static void
fix_append(struct fix *f, uint32_t from, uint32_t to, int retain,
    uint64_t *segs)
{
	for (uint32_t id = from; id < to; id++) {
		uint64_t seg;
		journal_pos p = rec_append(f->j, id, &seg);

		assert_true(p > f->last);
		f->last = p;
		if (retain)
			journal_retain(f->j, seg);
		if (segs != NULL)
			segs[id] = seg;
	}
}

/* --- files --------------------------------------------------------------- */

#define SEGS_MAX 512

/* Segment file names in dir, in order. */
static size_t
seg_files(const char *dir, char names[][32], size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "seg-", 4) == 0 && n < max)
			snprintf(names[n++], 32, "%.31s", e->d_name);
	closedir(d);
	qsort(names, n, 32, (int (*)(const void *, const void *))strcmp);
	return n;
}

static char *
seg_path(const char *dir, const char *name)
{
	static char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

static uint64_t
file_size(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return (uint64_t)sb.st_size;
}

static uint8_t *
file_read(const char *path, size_t *len)
{
	uint64_t size = file_size(path);
	uint8_t *b = malloc(size ? size : 1);
	int fd = open(path, O_RDONLY);

	assert_non_null(b);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, b, size), (ssize_t)size);
	close(fd);
	*len = size;
	return b;
}

static void
file_write(const char *path, const uint8_t *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, len), (ssize_t)len);
	close(fd);
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void
put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* A segment header, as journal.h lays it out. */
static void
seg_header(uint8_t h[SEG_HDR], uint64_t no, uint64_t first, uint32_t salt)
{
	memcpy(h, "IPCJRNL1", 8);
	put64(h + 8, no);
	put64(h + 16, first);
	put32(h + 24, salt);
	put32(h + 28, journal_crc32c(0, h, 28));
}

/* Record id as journal.h lays it out, for a segment with salt; its
 * length. */
static size_t
rec_encode(uint8_t *b, uint32_t id, uint32_t salt)
{
	size_t len = rec_make(id, b + REC_HDR);

	b[8] = rec_type(id);
	put32(b, (uint32_t)len);
	put32(b + 4, journal_crc32c(salt, b + 8, 1 + len));
	return REC_HDR + len;
}

/* File offset of the record that ends at pos, in the segment file b. */
static size_t
rec_offset(const uint8_t *b, journal_pos pos, uint32_t id)
{
	return (size_t)(pos - le64(b + 16) - rec_disk(id));
}

/* Replay holds exactly ids 1..n, in order. */
static void
assert_ids_upto(struct fix *f, uint32_t n)
{
	assert_int_equal(f->rst.records, n);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(f->seen.ids[i], i + 1);
}

/* --- CRC-32C ------------------------------------------------------------- */

static void
test_crc32c_matches_known_vectors(void **state)
{
	uint8_t b[32];

	(void)state;
	assert_int_equal(journal_crc32c(0, "123456789", 9), 0xe3069283);
	assert_int_equal(journal_crc32c(0, "", 0), 0);
	/* RFC 3720, B.4. */
	memset(b, 0, sizeof(b));
	assert_int_equal(journal_crc32c(0, b, 32), 0x8a9136aa);
	memset(b, 0xff, sizeof(b));
	assert_int_equal(journal_crc32c(0, b, 32), 0x62a8ab43);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)i;
	assert_int_equal(journal_crc32c(0, b, 32), 0x46dd794e);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)(31 - i);
	assert_int_equal(journal_crc32c(0, b, 32), 0x113fdb5c);
}

/* One bit at a time, as the polynomial says. */
static uint32_t
crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

static void
test_crc32c_agrees_with_the_bitwise_form_at_every_alignment(void **state)
{
	uint8_t b[301];
	uint32_t seed = 12345;

	(void)state;
	for (size_t i = 0; i < sizeof(b); i++) {
		seed = seed * 1103515245 + 12345;
		b[i] = (uint8_t)(seed >> 16);
	}
	for (size_t off = 0; off < 9; off++)
		for (size_t len = 0; len + off <= sizeof(b); len += 7) {
			uint32_t whole = journal_crc32c(0, b + off, len);
			size_t cut = len / 3;

			assert_int_equal(whole, crc_bitwise(0, b + off, len));
			/* In pieces, going on from the value so far. */
			assert_int_equal(journal_crc32c(journal_crc32c(0,
			    b + off, cut), b + off + cut, len - cut), whole);
			/* A seed (the segment's salt) is a start value. */
			assert_int_equal(journal_crc32c(0xdeadbeef, b + off,
			    len), crc_bitwise(0xdeadbeef, b + off, len));
		}
}

/* --- round trip ---------------------------------------------------------- */

static void
test_append_before_replay_or_of_type_0_is_refused(void **state)
{
	struct fix *f = *state;
	char why[128];

	assert_int_equal(journal_open(f->dir, NULL, &f->j, why, sizeof(why)),
	    0);
	errno = 0;
	assert_int_equal(rec_append(f->j, 1, NULL), 0);
	assert_int_equal(errno, EINVAL);
	journal_close(f->j);
	f->j = NULL;

	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, 0);
	assert_int_equal(f->rst.segments, 0);
	errno = 0;
	assert_int_equal(journal_append(f->j, 0, "x", 1, NULL, 0, NULL), 0);
	assert_int_equal(errno, EINVAL);
	/* Over the limit: refused before anything is allocated or read. */
	errno = 0;
	assert_int_equal(journal_append(f->j, 1, "x", JOURNAL_BODY_MAX, "y",
	    1, NULL), 0);
	assert_int_equal(errno, EFBIG);
	errno = 0;
	assert_int_equal(journal_append(f->j, 1, "x", (size_t)JOURNAL_BODY_MAX +
	    1, NULL, 0, NULL), 0);
	assert_int_equal(errno, EFBIG);
	/* Replay is once. */
	assert_int_equal(journal_replay(f->j, NULL, NULL, NULL, &f->rst),
	    -EINVAL);
}

static void
test_round_trip_across_segments(void **state)
{
	struct fix *f = *state;
	enum { N = 2000 };
	journal_pos pos[N + 2];
	uint64_t segs[N + 2];
	char names[SEGS_MAX][32];
	struct journal_stats st;
	size_t nfiles;

	fix_open(f, 4096, 1);
	for (uint32_t id = 1; id <= N; id++) {
		fix_append(f, id, id + 1, 1, segs);
		pos[id] = f->last;
		if (id % 100 == 0)
			fix_sync(f);
	}
	journal_get_stats(f->j, &st);
	assert_int_equal(st.appended_records, N);
	nfiles = seg_files(f->dir, names, SEGS_MAX);
	assert_true(nfiles > 10);
	assert_int_equal(st.segments_live, nfiles);

	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, N);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->rst.torn_bytes, 0);
	assert_int_equal(f->rst.segments, nfiles);
	for (uint32_t id = 1; id <= N; id++) {
		assert_int_equal(f->seen.ids[id - 1], id);
		assert_int_equal(f->seen.pos[id - 1], pos[id]);
		assert_int_equal(f->seen.segs[id - 1], segs[id]);
	}
	/* No segment holds more than its size past its header (and
	 * checkpoint: none here), unless one record alone is. */
	for (size_t i = 0; i < nfiles; i++)
		assert_true(file_size(seg_path(f->dir, names[i])) <=
		    4096 + SEG_HDR);

	/* Appends after replay go on in a new segment, after the old. */
	fix_append(f, N + 1, N + 2, 1, segs);
	assert_true(segs[N + 1] > segs[N]);
	assert_true(f->last > pos[N]);
	fix_sync(f);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, N + 1);
	assert_int_equal(f->seen.ids[N], N + 1);
}

static void
test_close_syncs_what_was_appended(void **state)
{
	struct fix *f = *state;

	fix_open(f, 0, 1);
	fix_append(f, 1, 501, 1, NULL);
	fix_open(f, 0, 1);	/* closes first: no journal_sync */
	assert_int_equal(f->rst.records, 500);
	assert_int_equal(f->seen.ids[499], 500);
}

static void
test_a_record_larger_than_a_segment_gets_one_of_its_own(void **state)
{
	struct fix *f = *state;
	static uint8_t big[BIG_LEN];
	uint64_t segs[3], big_seg;
	journal_pos p;

	memset(big, BIG_BYTE, sizeof(big));
	fix_open(f, 4096, 1);
	fix_append(f, 1, 2, 1, segs);
	p = journal_append(f->j, BIG_TYPE, NULL, 0, big, sizeof(big),
	    &big_seg);
	assert_true(p > f->last);
	journal_retain(f->j, big_seg);
	f->last = p;
	fix_append(f, 2, 3, 1, segs);
	assert_true(segs[1] < big_seg && big_seg < segs[2]);
	fix_sync(f);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, 3);
	assert_int_equal(f->seen.bad, 0);
	assert_int_equal(f->seen.ids[1], UINT32_MAX - 1);
	assert_int_equal(f->seen.segs[1], big_seg);
	assert_int_equal(f->seen.pos[1], p);
}

/* --- group commit -------------------------------------------------------- */

static void
test_group_commit_one_sync_for_many_appends(void **state)
{
	struct fix *f = *state;
	struct journal_stats st;
	enum { N = 10000 };

	fix_open(f, 0, 1);
	fix_append(f, 1, N + 1, 1, NULL);
	fix_sync(f);
	journal_get_stats(f->j, &st);
	/* One batch, one new segment: one fdatasync for all of them. */
	assert_int_equal(st.syncs, 1);
	assert_int_equal(st.appended_records, N);
	assert_int_equal(st.disk_bytes, SEG_HDR + st.appended_bytes);
	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, N);
}

static void
test_syncs_asked_while_one_runs_are_served_together(void **state)
{
	struct fix *f = *state;
	struct journal_stats st;
	enum { N = 1000 };

	fix_open(f, 0, 1);
	/* A sender per record, each asking for a sync, none waiting. */
	for (uint32_t id = 1; id <= N; id++) {
		fix_append(f, id, id + 1, 1, NULL);
		assert_int_equal(journal_sync(f->j), 0);
	}
	assert_int_equal(jwait(f->j, f->last, NULL), 0);
	journal_get_stats(f->j, &st);
	assert_true(st.syncs >= 1 && st.syncs <= N);
	printf("# %u sync requests served by %" PRIu64 " fdatasyncs\n", N,
	    st.syncs);
	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, N);
}

static void
test_sync_with_nothing_to_write_still_completes(void **state)
{
	struct fix *f = *state;
	journal_pos s;

	fix_open(f, 0, 1);
	assert_int_equal(journal_sync(f->j), 0);
	assert_int_equal(test_wait_readable(journal_fd(f->j), TEST_WAIT_MS),
	    1);
	assert_int_equal(journal_synced(f->j, &s), 0);
	assert_int_equal(s, 0);
}

/* --- torn tails and damage ----------------------------------------------- */

static void
test_torn_tail_is_cut_and_appends_go_on(void **state)
{
	struct fix *f = *state;
	enum { N = 300 };
	char names[SEGS_MAX][32], last[32];
	journal_pos pos[N + 1];
	uint64_t size;
	size_t n;

	fix_open(f, 4096, 1);
	for (uint32_t id = 1; id <= N; id++) {
		fix_append(f, id, id + 1, 1, NULL);
		pos[id] = f->last;
	}
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n > 2);
	snprintf(last, sizeof(last), "%s", names[n - 1]);
	/* The last record loses its last 5 bytes, as a crash mid-write. */
	size = file_size(seg_path(f->dir, last));
	assert_int_equal(truncate(seg_path(f->dir, last), (off_t)size - 5), 0);

	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, N - 1);
	assert_int_equal(f->rst.torn_bytes, rec_disk(N) - 5);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->seen.damage, 0);
	for (uint32_t id = 1; id < N; id++)
		assert_int_equal(f->seen.ids[id - 1], id);
	/* Cut back to the end of the record before. */
	assert_int_equal(file_size(seg_path(f->dir, last)),
	    size - rec_disk(N));

	fix_append(f, N, N + 1, 1, NULL);
	assert_true(f->last > pos[N - 1]);
	fix_sync(f);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, N);
	assert_int_equal(f->rst.torn_bytes, 0);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->seen.ids[N - 1], N);
}

static void
test_zeros_after_the_last_record_are_a_torn_tail(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	static const uint8_t zeros[4096];
	size_t n;
	int fd;

	fix_open(f, 0, 1);
	fix_append(f, 1, 101, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_int_equal(n, 1);
	fd = open(seg_path(f->dir, names[0]), O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, zeros, sizeof(zeros)), sizeof(zeros));
	close(fd);
	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, 100);
	assert_int_equal(f->rst.torn_bytes, sizeof(zeros));
	assert_int_equal(f->rst.damaged, 0);
}

/* A journal of n records in one segment, closed; its file read into *b. */
static char *
one_segment(struct fix *f, uint32_t n, journal_pos *pos, uint8_t **b,
    size_t *len)
{
	static char name[SEGS_MAX][32];

	fix_open(f, 0, 1);
	for (uint32_t id = 1; id <= n; id++) {
		fix_append(f, id, id + 1, 1, NULL);
		pos[id] = f->last;
	}
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	assert_int_equal(seg_files(f->dir, name, SEGS_MAX), 1);
	*b = file_read(seg_path(f->dir, name[0]), len);
	return seg_path(f->dir, name[0]);
}

static void
test_flipped_bit_in_a_middle_record_is_reported_once(void **state)
{
	struct fix *f = *state;
	journal_pos pos[101];
	uint8_t *b;
	size_t len, off;
	char *path = one_segment(f, 100, pos, &b, &len);

	off = rec_offset(b, pos[50], 50);
	b[off + REC_HDR + 6] ^= 0x10;		/* in the body */
	file_write(path, b, len);
	free(b);

	fix_open(f, 0, 1);
	assert_int_equal(f->rst.damaged, 1);
	assert_int_equal(f->seen.damage, 1);
	assert_int_equal(f->seen.dmg_off, off);
	assert_string_equal(f->seen.dmg_what, "checksum mismatch");
	assert_int_equal(f->rst.torn_bytes, 0);
	assert_int_equal(f->rst.records, 99);
	for (uint32_t i = 0, id = 1; id <= 100; id++)
		if (id != 50)
			assert_int_equal(f->seen.ids[i++], id);
}

static void
test_flipped_bit_in_a_length_is_resynchronised(void **state)
{
	struct fix *f = *state;
	journal_pos pos[101];
	uint8_t *b;
	size_t len, off;
	char *path = one_segment(f, 100, pos, &b, &len);

	/* Length 1 MiB longer: it points past the end of the segment. */
	off = rec_offset(b, pos[50], 50);
	b[off + 2] ^= 0x10;
	file_write(path, b, len);
	free(b);

	fix_open(f, 0, 1);
	assert_int_equal(f->rst.damaged, 1);
	assert_int_equal(f->seen.dmg_off, off);
	assert_int_equal(f->rst.records, 99);
	assert_int_equal(f->seen.ids[48], 49);
	assert_int_equal(f->seen.ids[49], 51);
	assert_int_equal(f->seen.ids[98], 100);
	assert_int_equal(f->rst.torn_bytes, 0);

	/* A length a little short lands inside the record: searched. */
	journal_close(f->j);
	f->j = NULL;
	b = file_read(path, &len);
	off = rec_offset(b, pos[80], 80);
	assert_true(b[off] > 3);
	b[off] ^= 0x02;
	file_write(path, b, len);
	free(b);
	fix_open(f, 0, 1);
	/* The first damage was skipped, not cut, and it is still there. */
	assert_int_equal(f->rst.damaged, 2);
	assert_int_equal(f->rst.records, 98);
	assert_int_equal(f->seen.ids[77], 79);
	assert_int_equal(f->seen.ids[78], 81);
}

static void
test_damage_at_the_end_of_an_earlier_segment_is_not_a_torn_tail(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	uint8_t *b;
	size_t len, n;
	uint64_t nfirst;

	fix_open(f, 4096, 1);
	fix_append(f, 1, 301, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n > 2);
	/* The first segment's last byte. */
	b = file_read(seg_path(f->dir, names[0]), &len);
	b[len - 1] ^= 0x01;
	file_write(seg_path(f->dir, names[0]), b, len);
	free(b);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.damaged, 1);
	assert_int_equal(f->rst.torn_bytes, 0);
	assert_int_equal(f->rst.records, 299);
	assert_int_equal(f->seen.dmg_seg, strtoull(names[0] + 4, NULL, 16));

	/* The second segment cut short: the third says where it ended. */
	journal_close(f->j);
	f->j = NULL;
	b = file_read(seg_path(f->dir, names[2]), &len);
	nfirst = le64(b + 16);
	free(b);
	b = file_read(seg_path(f->dir, names[1]), &len);
	assert_int_equal(le64(b + 16) + len, nfirst);
	free(b);
	assert_int_equal(truncate(seg_path(f->dir, names[1]),
	    (off_t)len - 3), 0);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.torn_bytes, 0);
	/* The first damage, and the short one twice: the segment's end,
	 * and its last record. */
	assert_int_equal(f->rst.damaged, 3);
	assert_int_equal(f->rst.records, 298);
}

static void
test_a_bad_segment_header_is_reported_and_the_rest_delivered(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	uint8_t *b;
	size_t len, n;
	uint32_t ids[400];

	fix_open(f, 4096, 1);
	fix_append(f, 1, 301, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n > 3);
	b = file_read(seg_path(f->dir, names[1]), &len);
	b[20] ^= 0x40;			/* its first position */
	file_write(seg_path(f->dir, names[1]), b, len);
	free(b);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.damaged, 1);
	assert_int_equal(f->seen.dmg_off, 0);
	assert_string_equal(f->seen.dmg_what, "segment header fails its check");
	assert_int_equal(f->rst.torn_bytes, 0);
	n = seen_messages(&f->seen, ids, 400);
	assert_true(n > 200 && n < 300);
	/* What is there is in order, and the gap is one segment's. */
	for (size_t i = 1; i < n; i++)
		assert_true(ids[i] > ids[i - 1]);
	assert_int_equal(ids[n - 1], 300);
}

static void
test_records_past_where_the_next_segment_begins_are_cut(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	uint8_t *b, rec[REC_HDR + REC_MAX];
	size_t len, rlen, n;
	int fd;

	fix_open(f, 4096, 1);
	fix_append(f, 1, 201, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n > 2);
	/* A good record after the end of the first segment, as a batch
	 * that failed leaves it when the cut does not reach the disk. */
	b = file_read(seg_path(f->dir, names[0]), &len);
	rlen = rec_encode(rec, 999, le32(b + 24));
	free(b);
	fd = open(seg_path(f->dir, names[0]), O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, rec, rlen), (ssize_t)rlen);
	close(fd);

	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, 200);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->rst.torn_bytes, rlen);
	assert_int_equal(f->seen.bad, 0);
	assert_int_equal(file_size(seg_path(f->dir, names[0])), len);
	assert_ids_upto(f, 200);
}

static void
test_a_segment_whose_removal_was_lost_is_dropped(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32], path[PATH_MAX];
	uint8_t *b, ghost[SEG_HDR + REC_HDR + REC_MAX];
	size_t len, glen, n;
	uint64_t end, last;

	fix_open(f, 4096, 1);
	fix_append(f, 1, 101, 1, NULL);
	fix_sync(f);
	fix_open(f, 4096, 1);
	fix_append(f, 101, 111, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n > 2);
	/* Give the last segment the next number... */
	last = (uint64_t)strtoull(names[n - 1] + 4, NULL, 16);
	b = file_read(seg_path(f->dir, names[n - 1]), &len);
	end = le64(b + 16);
	seg_header(b, last + 1, end, le32(b + 24));
	assert_int_equal(unlink(seg_path(f->dir, names[n - 1])), 0);
	snprintf(path, sizeof(path), "%s/seg-%016" PRIx64 ".log", f->dir,
	    last + 1);
	file_write(path, b, len);
	free(b);
	/* ... and put in its place one that a failed batch created at the
	 * same position, with a good record. */
	seg_header(ghost, last, end, 77);
	glen = SEG_HDR + rec_encode(ghost + SEG_HDR, 999, 77);
	file_write(seg_path(f->dir, names[n - 1]), ghost, glen);

	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->rst.torn_bytes, glen);
	assert_ids_upto(f, 110);
	assert_int_equal(access(seg_path(f->dir, names[n - 1]), F_OK), -1);
}

static void
test_a_journal_inside_a_message_is_never_taken_for_records(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	uint8_t *b, *inner;
	size_t len, ilen;
	journal_pos p;

	/* A journal's segment, as some client might send it. */
	fix_open(f, 0, 1);
	fix_append(f, 1, 21, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), 1);
	inner = file_read(seg_path(f->dir, names[0]), &ilen);
	assert_int_equal(unlink(seg_path(f->dir, names[0])), 0);

	/* It goes in as the payload of the last record, which is torn
	 * after the inner records are complete. */
	fix_open(f, 0, 1);
	fix_append(f, 100, 110, 1, NULL);
	p = journal_append(f->j, 9, NULL, 0, inner, ilen, NULL);
	assert_true(p > f->last);
	f->last = p;
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), 1);
	b = file_read(seg_path(f->dir, names[0]), &len);
	assert_int_equal(truncate(seg_path(f->dir, names[0]), (off_t)len - 1),
	    0);
	free(b);
	free(inner);

	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, 10);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->rst.torn_bytes, REC_HDR + ilen - 1);
	assert_int_equal(f->seen.ids[9], 109);
}

/* Replay of any bytes: no crash, and nothing delivered that was not
 * written as it is. */
static void
test_replay_of_mangled_segments_delivers_only_true_records(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	uint8_t *orig[SEGS_MAX], *b;
	size_t olen[SEGS_MAX], n;
	uint32_t seed = 4242;

	fix_open(f, 2048, 1);
	fix_append(f, 1, 151, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	n = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n >= 4);
	for (size_t i = 0; i < n; i++)
		orig[i] = file_read(seg_path(f->dir, names[i]), &olen[i]);

	for (int round = 0; round < 60; round++) {
		/* Put back every file, then mangle some. */
		for (size_t i = 0; i < n; i++)
			file_write(seg_path(f->dir, names[i]), orig[i],
			    olen[i]);
		for (int k = 0; k < 1 + round % 6; k++) {
			size_t i, at, len;

			seed = seed * 1103515245 + 12345;
			i = (seed >> 8) % n;
			b = malloc(olen[i]);
			assert_non_null(b);
			memcpy(b, orig[i], olen[i]);
			seed = seed * 1103515245 + 12345;
			at = (seed >> 4) % olen[i];
			len = olen[i];
			switch (round % 4) {
			case 0:		/* flip bits */
				b[at] ^= (uint8_t)(1 + (seed >> 24) % 255);
				break;
			case 1:		/* cut short */
				len = at;
				break;
			case 2:		/* overwrite a run */
				for (size_t q = at; q < len && q < at + 50; q++)
					b[q] = (uint8_t)(seed >> (q % 24));
				break;
			default:	/* a length made huge */
				if (at + 4 <= len)
					memset(b + at, 0xff, 4);
				break;
			}
			file_write(seg_path(f->dir, names[i]), b, len);
			free(b);
		}
		fix_open(f, 2048, 1);	/* asserts seen.bad == 0 */
		assert_true(f->rst.records <= 150);
		for (size_t i = 1; i < f->seen.n; i++)
			assert_true(f->seen.ids[i] > f->seen.ids[i - 1]);
		journal_close(f->j);
		f->j = NULL;
		/* Replay may have cut or removed files: start over. */
		for (size_t i = 0; i < n; i++)
			unlink(seg_path(f->dir, names[i]));
		{
			char more[SEGS_MAX][32];
			size_t m = seg_files(f->dir, more, SEGS_MAX);

			for (size_t i = 0; i < m; i++)
				unlink(seg_path(f->dir, more[i]));
		}
	}
	for (size_t i = 0; i < n; i++)
		free(orig[i]);
}

/* --- the search after damage: work, and what it finds -------------------- */

/* Hand-built segments, for a salt the test chooses: the outcome of a
 * search through bytes that only look like records then does not hang on
 * a random salt (each candidate passes by a 2^-32 chance). */
struct hseg {
	uint8_t *b;
	size_t len, cap;
	uint32_t salt;
};

static void
hseg_raw(struct hseg *s, const void *p, size_t len)
{
	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2;
		s->b = realloc(s->b, s->cap);
		assert_non_null(s->b);
	}
	if (p != NULL)
		memcpy(s->b + s->len, p, len);
	else
		memset(s->b + s->len, 0, len);
	s->len += len;
}

static void
hseg_init(struct hseg *s, uint64_t no, uint64_t first, uint32_t salt)
{
	uint8_t h[SEG_HDR];

	memset(s, 0, sizeof(*s));
	s->salt = salt;
	seg_header(h, no, first, salt);
	hseg_raw(s, h, sizeof(h));
}

/* Records from..to-1, as the tests write them. */
static void
hseg_ids(struct hseg *s, uint32_t from, uint32_t to)
{
	uint8_t rec[REC_HDR + REC_MAX];

	for (uint32_t id = from; id < to; id++)
		hseg_raw(s, rec, rec_encode(rec, id, s->salt));
}

/* A record of len bytes of body (made from seed) that checks out; its
 * offset. */
static size_t
hseg_body(struct hseg *s, uint8_t type, uint32_t len, uint32_t seed)
{
	size_t at = s->len;
	uint8_t *p;

	hseg_raw(s, NULL, REC_HDR + (size_t)len);
	p = s->b + at;
	put32(p, len);
	p[8] = type;
	for (uint32_t i = 0; i < len; i++) {
		seed = seed * 1103515245 + 12345;
		p[REC_HDR + i] = (uint8_t)(seed >> 16);
	}
	put32(p + 4, journal_crc32c(s->salt, p + 8, 1 + (size_t)len));
	return at;
}

/* The file of segment no in dir. */
static char *
hseg_path(const char *dir, uint64_t no)
{
	static char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/seg-%016" PRIx64 ".log", dir, no);
	return path;
}

static char *
hseg_write(const struct hseg *s, const char *dir, uint64_t no)
{
	char *path = hseg_path(dir, no);

	file_write(path, s->b, s->len);
	return path;
}

/*
 * Bytes that look like record headers, one every 9 bytes from s->len on,
 * for size bytes: each claims a length that is in bounds (up to lim, the
 * file offset where the segment will end), a type that is not 0 and a
 * CRC that is wrong for this salt, so each one costs the old search its
 * claimed length.  They take turns: ending where these bytes end (where
 * the next real record begins), ending at lim, and 1 MiB.
 */
static void
hseg_hostile(struct hseg *s, size_t size, uint64_t lim)
{
	size_t at = s->len, stop = at + size;
	uint8_t h[REC_HDR];

	for (uint32_t i = 0; s->len + REC_HDR <= stop; i++) {
		uint64_t o = s->len, to;

		switch (i % 3) {
		case 0:
			to = stop;
			break;
		case 1:
			to = lim;
			break;
		default:
			to = o + REC_HDR + (1u << 20);
			break;
		}
		put32(h, to > o + REC_HDR ? (uint32_t)(to - o - REC_HDR) : 0);
		put32(h + 4, i * UINT32_C(0x9e3779b1));
		h[8] = (uint8_t)(1 + i % 255);
		hseg_raw(s, h, sizeof(h));
	}
	hseg_raw(s, NULL, stop - s->len);
}

#define HOSTILE_SALT	UINT32_C(0x5eed1234)
/* What replay reports when its search could not check every candidate. */
#define CUT_SHORT "bad record, search cut short: rest of segment skipped"

/*
 * A record whose length is damaged, and whose body is 4 MiB of plausible
 * headers: the old search would checksum some 10^12 bytes (every header
 * claims up to megabytes); this one reads each byte once.  The records
 * after it are all found, also when the search may keep few candidates
 * open (the record it looks for ends first, so it is kept).
 */
static void
test_a_search_through_hostile_bytes_takes_linear_work(void **state)
{
	struct fix *f = *state;
	enum { HOSTILE = 4 << 20 };
	struct hseg s;
	uint64_t lim;
	size_t hoff;

	/* Where the segment will end: needed for the headers' lengths. */
	lim = SEG_HDR + REC_HDR + HOSTILE;
	for (uint32_t id = 1; id <= 100; id++)
		lim += rec_disk(id);

	hseg_init(&s, 1, 0, HOSTILE_SALT);
	hseg_ids(&s, 1, 51);
	hoff = s.len;
	hseg_raw(&s, NULL, REC_HDR);
	hseg_hostile(&s, HOSTILE, lim);
	/* Its header: a length over the limit, so no shortcut by it. */
	put32(s.b + hoff, HOSTILE | UINT32_C(0x80000000));
	put32(s.b + hoff + 4, 0x12345678);
	s.b[hoff + 8] = 9;
	hseg_ids(&s, 51, 101);
	assert_int_equal(s.len, lim);
	hseg_write(&s, f->dir, 1);
	free(s.b);

	for (int round = 0; round < 2; round++) {
		/* Round 1: at most 64 candidates open at once. */
		jnl_test_cand_max = round == 0 ? 0 : 64;
		jnl_test_crc_bytes = jnl_test_candidates = 0;
		fix_open(f, 0, 1);
		jnl_test_cand_max = 0;
		assert_int_equal(f->rst.damaged, 1);
		assert_int_equal(f->seen.damage, 1);
		assert_int_equal(f->seen.dmg_off, hoff);
		assert_string_equal(f->seen.dmg_what, "length over the limit");
		assert_int_equal(f->rst.torn_bytes, 0);
		assert_ids_upto(f, 100);
		/* Each byte once, and the records checked; a candidate at
		 * no more than every byte. */
		assert_true(jnl_test_crc_bytes < lim + lim / 8);
		assert_true(jnl_test_candidates > HOSTILE / REC_HDR / 2);
		assert_true(jnl_test_candidates < HOSTILE);
		print_message("      round %d: %" PRIu64 " bytes checksummed, "
		    "%" PRIu64 " candidates, segment %" PRIu64 "\n", round,
		    jnl_test_crc_bytes, jnl_test_candidates, lim);
		journal_close(f->j);
		f->j = NULL;
	}
}

/*
 * The last segment ends in a torn record whose bytes hold more open
 * candidates than the search may keep: when it finds nothing, it cannot
 * tell a torn tail from a good record among those it dropped, so that is
 * damage, reported, and nothing is cut.  With room for them all, the
 * same bytes are a torn tail.
 */
static void
test_a_search_cut_short_is_damage_not_a_torn_tail(void **state)
{
	struct fix *f = *state;
	enum { TORN = 256 << 10 };
	struct hseg s;
	uint64_t lim;
	size_t hoff;
	char *path;

	hseg_init(&s, 1, 0, HOSTILE_SALT);
	hseg_ids(&s, 1, 51);
	hoff = s.len;
	lim = hoff + REC_HDR + TORN;
	hseg_raw(&s, NULL, REC_HDR);
	hseg_hostile(&s, TORN, lim);
	/* Its header as written: 1 MiB, of which 256 KiB reached the disk. */
	put32(s.b + hoff, 1u << 20);
	put32(s.b + hoff + 4, 0x12345678);
	s.b[hoff + 8] = 9;
	assert_int_equal(s.len, lim);
	path = hseg_write(&s, f->dir, 1);
	free(s.b);

	jnl_test_cand_max = 64;
	jnl_test_candidates = 0;
	fix_open(f, 0, 1);
	jnl_test_cand_max = 0;
	assert_true(jnl_test_candidates > 64);
	assert_int_equal(f->rst.damaged, 1);
	assert_int_equal(f->seen.damage, 1);
	assert_int_equal(f->seen.dmg_off, hoff);
	assert_string_equal(f->seen.dmg_what, CUT_SHORT);
	assert_int_equal(f->rst.torn_bytes, 0);
	assert_ids_upto(f, 50);
	assert_int_equal(file_size(path), lim);
	/* Still there, and still damage, at the next replay. */
	jnl_test_cand_max = 64;
	fix_open(f, 0, 1);
	jnl_test_cand_max = 0;
	assert_int_equal(f->rst.damaged, 1);
	assert_int_equal(file_size(path), lim);

	fix_open(f, 0, 1);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->seen.damage, 0);
	assert_int_equal(f->rst.torn_bytes, lim - hoff);
	assert_ids_upto(f, 50);
	assert_int_equal(file_size(path), hoff);
}

/* What a replay delivered, for records of any body. */
struct got {
	size_t n, damage;
	size_t cut;		/* damage reported as CUT_SHORT */
	uint64_t at[4096];	/* position of each record (its end) */
	uint32_t len[4096], crc[4096];
	uint8_t type[4096];
	uint64_t dmg[4096];
};

static int
got_cb(void *arg, const struct journal_rec *r)
{
	struct got *g = arg;

	if (g->n == 4096)
		return -ENOSPC;
	g->at[g->n] = r->pos;
	g->len[g->n] = r->len;
	g->type[g->n] = r->type;
	g->crc[g->n] = journal_crc32c(0, r->body, r->len);
	g->n++;
	return 0;
}

static void
got_damage(void *arg, uint64_t seg, uint64_t off, const char *what)
{
	struct got *g = arg;

	(void)seg;
	g->cut += strcmp(what, CUT_SHORT) == 0;
	if (g->damage < 4096)
		g->dmg[g->damage] = off;
	g->damage++;
}

static void
got_replay(struct fix *f, struct got *g, struct journal_replay_stats *st)
{
	char why[256];

	memset(g, 0, sizeof(*g));
	assert_int_equal(journal_open(f->dir, NULL, &f->j, why, sizeof(why)),
	    0);
	assert_int_equal(journal_replay(f->j, got_cb, got_damage, g, st), 0);
	journal_close(f->j);
	f->j = NULL;
}

/*
 * The search finds a record by its checksum without reading its body a
 * second time: records of many lengths (each bit of a length takes part),
 * each after a damaged header and some bytes.  The header's length is
 * over the limit, or (every other one) lands in those bytes, so that the
 * shortcut by it is tried and fails first.
 */
static void
test_the_search_finds_records_of_any_length(void **state)
{
	struct fix *f = *state;
	static const uint32_t lens[] = { 0, 1, 2, 3, 7, 8, 9, 15, 16, 17,
	    100, 255, 256, 257, 4095, 4096, 65535, 65536, 65537, 300001,
	    1u << 20, (1u << 21) + 12345 };
	enum { N = sizeof(lens) / sizeof(lens[0]) };
	struct journal_replay_stats st;
	static struct got g;
	size_t at[N];
	uint32_t crc[N];
	struct hseg s;

	hseg_init(&s, 1, 0, HOSTILE_SALT);
	for (size_t i = 0; i < N; i++) {
		uint8_t bad[REC_HDR] = { 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5 };
		size_t junk = (i * 37) % 300;

		if (i % 2 == 1 && junk >= 20)
			put32(bad, (uint32_t)junk / 2);
		hseg_raw(&s, bad, sizeof(bad));
		for (size_t k = 0; k < junk; k++) {
			uint8_t c = (uint8_t)(k * 131 + i);

			hseg_raw(&s, &c, 1);
		}
		at[i] = hseg_body(&s, (uint8_t)(1 + i), lens[i], (uint32_t)i);
		crc[i] = journal_crc32c(0, s.b + at[i] + REC_HDR, lens[i]);
	}
	hseg_write(&s, f->dir, 1);

	jnl_test_crc_bytes = 0;
	got_replay(f, &g, &st);
	assert_int_equal(st.damaged, N);
	assert_int_equal(g.damage, N);
	assert_int_equal(g.cut, 0);
	assert_int_equal(st.torn_bytes, 0);
	assert_int_equal(g.n, N);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(g.at[i], at[i] + REC_HDR + lens[i]);
		assert_int_equal(g.len[i], lens[i]);
		assert_int_equal(g.type[i], 1 + i);
		assert_int_equal(g.crc[i], crc[i]);
	}
	/* Found by the scan, checked once more, delivered: about 3 times
	 * the bytes. */
	assert_true(jnl_test_crc_bytes < 4 * (uint64_t)s.len);
	free(s.b);
}

/* A reference replay of one segment, as journal.h says, searching the
 * slow way: every offset in turn, each candidate checksummed. */
struct ref {
	size_t n, damage;
	uint64_t at[4096], dmg[4096];
	uint32_t len[4096];
	uint64_t torn;
};

static int
ref_check(const uint8_t *b, uint64_t off, uint64_t end, uint32_t salt,
    uint32_t *len)
{
	if (end - off < REC_HDR)
		return 0;
	*len = le32(b + off);
	return *len <= JOURNAL_BODY_MAX && *len <= end - off - REC_HDR &&
	    b[off + 8] != 0 && journal_crc32c(salt, b + off + 8, 1 +
	    (size_t)*len) == le32(b + off + 4);
}

static void
ref_replay(const uint8_t *b, uint64_t end, uint32_t salt, int last,
    struct ref *rf)
{
	uint64_t off = SEG_HDR;
	uint32_t len, l;

	memset(rf, 0, sizeof(*rf));
	while (off < end) {
		uint64_t next = end;

		if (ref_check(b, off, end, salt, &len)) {
			off += REC_HDR + len;
			rf->at[rf->n] = off;
			rf->len[rf->n++] = len;
			continue;
		}
		if (end - off >= REC_HDR && len <= JOURNAL_BODY_MAX &&
		    len <= end - off - REC_HDR &&
		    off + REC_HDR + len < end &&
		    ref_check(b, off + REC_HDR + len, end, salt, &l)) {
			next = off + REC_HDR + len;
		} else {
			for (uint64_t q = off + 1; end - q >= REC_HDR; q++)
				if (ref_check(b, q, end, salt, &l)) {
					next = q;
					break;
				}
		}
		if (next == end && last) {
			rf->torn = end - off;
			return;
		}
		rf->dmg[rf->damage++] = off;
		off = next;
	}
}

/*
 * Against the reference, on segments of records whose bodies are full of
 * plausible headers (with the wrong CRC), damaged in every way: the same
 * records, the same damage, the same torn tail; as the last segment, and
 * as one that another follows.
 */
static uint32_t
rnd32(uint64_t *seed)
{
	*seed = *seed * 6364136223846793005u + 1442695040888963407u;
	return (uint32_t)(*seed >> 33);
}

static void
test_the_search_agrees_with_trying_every_offset(void **state)
{
	struct fix *f = *state;
	static struct got g;
	static struct ref rf;
	struct journal_replay_stats st;
	uint64_t seed = 777;

	for (int round = 0; round < 400; round++) {
		int last = round % 3 != 0, n;
		uint32_t salt;
		struct hseg s, t;
		size_t len;

#define RND() rnd32(&seed)
		salt = RND();
		hseg_init(&s, 1, 0, salt);
		n = 1 + (int)(RND() % 60);
		for (int i = 0; i < n; i++) {
			uint32_t blen = RND() % 5 == 0 ? RND() % 3000 :
			    RND() % 200;
			uint8_t type = (uint8_t)(1 + RND() % 255);
			size_t at = hseg_body(&s, type, blen, RND());
			uint8_t *p = s.b + at + REC_HDR;

			/* Fake headers in the body: lengths that fit. */
			for (uint32_t k = 0; k + REC_HDR <= blen; k +=
			    1 + RND() % 40) {
				uint32_t l = RND() % 2 ? RND() % 64 :
				    RND() % (blen + 4000);

				put32(p + k, l);
				p[k + 8] = (uint8_t)(1 + RND() % 255);
			}
			put32(p - 5, journal_crc32c(salt, p - 1, 1 +
			    (size_t)blen));
		}
		len = s.len;
		/* Damage. */
		for (int k = 1 + (int)(RND() % 4); k > 0 && len > SEG_HDR;
		    k--) {
			size_t at = SEG_HDR + RND() % (len - SEG_HDR);

			switch (RND() % 5) {
			case 0:
				s.b[at] ^= (uint8_t)(1 + RND() % 255);
				break;
			case 1:
				for (size_t q = at; q < len && q < at + 30; q++)
					s.b[q] = (uint8_t)RND();
				break;
			case 2:
				if (at + 4 <= len)
					put32(s.b + at, RND() % 500);
				break;
			case 3:
				if (at + 4 <= len)
					memset(s.b + at, 0xff, 4);
				break;
			default:
				if (last)
					len = at;
				break;
			}
		}
		s.len = len;
		hseg_write(&s, f->dir, 1);
		if (!last) {
			/* A segment after it, beginning where it ends. */
			hseg_init(&t, 2, len, RND());
			hseg_ids(&t, 1, 3);
			hseg_write(&t, f->dir, 2);
			free(t.b);
		}
		got_replay(f, &g, &st);
		ref_replay(s.b, len, salt, last, &rf);
		free(s.b);
		assert_int_equal(g.n, rf.n + (last ? 0 : 2));
		for (size_t i = 0; i < rf.n; i++) {
			assert_int_equal(g.at[i], rf.at[i]);
			assert_int_equal(g.len[i], rf.len[i]);
		}
		assert_int_equal(g.damage, rf.damage);
		assert_int_equal(g.cut, 0);
		for (size_t i = 0; i < rf.damage; i++)
			assert_int_equal(g.dmg[i], rf.dmg[i]);
		assert_int_equal(st.torn_bytes, rf.torn);
		assert_int_equal(st.damaged, rf.damage);
		unlink(hseg_path(f->dir, 1));
		unlink(hseg_path(f->dir, 2));
#undef RND
	}
}

static void
test_a_failing_callback_stops_replay_and_appends(void **state)
{
	struct fix *f = *state;
	struct journal_replay_stats st;
	char why[128];

	fix_open(f, 0, 1);
	fix_append(f, 1, 11, 1, NULL);
	fix_sync(f);
	journal_close(f->j);
	f->j = NULL;
	seen_reset(&f->seen);
	f->seen.stop_at = 5;
	assert_int_equal(journal_open(f->dir, NULL, &f->j, why, sizeof(why)),
	    0);
	assert_int_equal(journal_replay(f->j, seen_cb, NULL, &f->seen, &st),
	    -ECANCELED);
	assert_int_equal(f->seen.n, 4);
	errno = 0;
	assert_int_equal(rec_append(f->j, 11, NULL), 0);
	assert_int_equal(errno, EINVAL);
}

/* --- reclaim ------------------------------------------------------------- */

/* Wait for the sync thread to act on what was asked before. */
static void
fix_settle(struct fix *f)
{
	journal_pos s;

	(void)journal_synced(f->j, &s);		/* drain */
	assert_int_equal(journal_sync(f->j), 0);
	assert_int_equal(test_wait_readable(journal_fd(f->j), TEST_WAIT_MS),
	    1);
	assert_int_equal(journal_synced(f->j, &s), 0);
}

static void
test_reclaim_deletes_consumed_segments_oldest_first(void **state)
{
	struct fix *f = *state;
	enum { N = 300 };
	uint64_t segs[N + 1], first, second;
	char names[SEGS_MAX][32];
	struct journal_stats st0, st;
	size_t n0;
	uint32_t i;

	f->ckpt = 1;
	fix_open(f, 4096, 1);
	fix_append(f, 1, N + 1, 1, segs);
	fix_sync(f);
	journal_get_stats(f->j, &st0);
	n0 = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n0 > 4);
	assert_int_equal(st0.segments_live, n0);
	first = segs[1];
	for (i = 1; segs[i] == first; i++)
		;
	second = segs[i];

	/* The second segment consumed, the first not: nothing goes. */
	for (uint32_t id = 1; id <= N; id++)
		if (segs[id] == second)
			journal_release(f->j, segs[id]);
	fix_settle(f);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.segments_deleted, 0);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), n0);

	/* Then the first: both go. */
	for (uint32_t id = 1; id <= N; id++)
		if (segs[id] == first)
			journal_release(f->j, segs[id]);
	fix_settle(f);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.segments_deleted, 2);
	assert_int_equal(st.segments_live, n0 - 2);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), n0 - 2);
	assert_true(st.disk_bytes < st0.disk_bytes);

	/* Everything consumed: all but the current segment go. */
	for (uint32_t id = 1; id <= N; id++)
		if (segs[id] != first && segs[id] != second)
			journal_release(f->j, segs[id]);
	fix_settle(f);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.segments_deleted, n0 - 1);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), 1);
	assert_int_equal(st.disk_bytes, file_size(seg_path(f->dir,
	    names[0])));

	/* What is left starts with its checkpoint; unknown numbers and
	 * releases past zero change nothing. */
	journal_release(f->j, first);
	journal_retain(f->j, 999999);
	fix_open(f, 4096, 1);
	assert_int_equal(f->seen.ids[0], UINT32_MAX);
	assert_int_equal(f->seen.ids[f->seen.n - 1], N);
	assert_true(f->seen.n < N);
}

static void
test_every_segment_starts_with_its_checkpoint(void **state)
{
	struct fix *f = *state;

	f->ckpt = 1;
	fix_open(f, 2048, 1);
	fix_append(f, 1, 201, 1, NULL);
	fix_sync(f);
	fix_open(f, 2048, 1);
	assert_true(f->rst.segments > 4);
	assert_int_equal(f->ckpt_calls, f->rst.segments);
	for (size_t i = 0; i < f->seen.n; i++) {
		int starts = i == 0 || f->seen.segs[i] != f->seen.segs[i - 1];

		assert_int_equal(f->seen.ids[i] == UINT32_MAX, starts);
	}
	assert_int_equal(f->rst.records, 200 + f->rst.segments);
}

static void
fix_ckpt_fails_once(void *arg)
{
	struct fix *f = arg;

	/* Type 0 is refused (EINVAL): the first checkpoint fails. */
	f->ckpt_calls++;
	assert_true(journal_append(f->j, f->ckpt_calls == 1 ? 0 : META_TYPE,
	    "meta", 4, NULL, 0, NULL) != 0 || f->ckpt_calls == 1);
}

static void
test_a_failed_checkpoint_fails_the_append_and_is_done_again(void **state)
{
	struct fix *f = *state;
	uint64_t segs[3];

	fix_open(f, 0, 1);
	journal_set_checkpoint(f->j, fix_ckpt_fails_once, f);
	f->ckpt_calls = 0;
	errno = 0;
	assert_int_equal(rec_append(f->j, 1, NULL), 0);
	assert_int_equal(errno, EINVAL);
	fix_append(f, 2, 3, 1, segs);
	assert_int_equal(f->ckpt_calls, 2);
	fix_sync(f);
	f->ckpt = 1;
	fix_open(f, 0, 1);
	/* The segment that failed its checkpoint is empty; the next starts
	 * with it. */
	assert_int_equal(f->rst.records, 2);
	assert_int_equal(f->seen.ids[0], UINT32_MAX);
	assert_int_equal(f->seen.ids[1], 2);
	assert_int_equal(f->seen.segs[1], segs[2]);
}

static void
test_replayed_segments_go_once_a_new_checkpoint_is_on_disk(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	struct journal_stats st;
	size_t n0;

	f->ckpt = 1;
	fix_open(f, 4096, 1);
	fix_append(f, 1, 301, 1, NULL);
	fix_sync(f);
	n0 = seg_files(f->dir, names, SEGS_MAX);
	assert_true(n0 > 3);

	/* Nothing retained in replay: all consumed, but the only copy of
	 * the metadata is in them until a new segment is synced. */
	fix_open(f, 4096, 0);
	fix_settle(f);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), n0);
	fix_append(f, 301, 302, 1, NULL);
	fix_sync(f);
	fix_settle(f);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.segments_deleted, n0);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), 1);
	fix_open(f, 4096, 1);
	assert_int_equal(f->rst.records, 2);
	assert_int_equal(f->seen.ids[0], UINT32_MAX);
	assert_int_equal(f->seen.ids[1], 301);
}

static void
test_a_segment_retained_in_replay_stays(void **state)
{
	struct fix *f = *state;
	char names[SEGS_MAX][32];
	size_t n0;

	f->ckpt = 1;
	fix_open(f, 4096, 1);
	fix_append(f, 1, 301, 1, NULL);
	fix_sync(f);
	n0 = seg_files(f->dir, names, SEGS_MAX);
	fix_open(f, 4096, 1);		/* every message retained again */
	fix_append(f, 301, 302, 1, NULL);
	fix_sync(f);
	fix_settle(f);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), n0 + 1);
	/* Consume the oldest segment's messages: it alone goes. */
	for (size_t i = 0; i < f->seen.n; i++)
		if (f->seen.ids[i] != UINT32_MAX &&
		    f->seen.segs[i] == f->seen.segs[0])
			journal_release(f->j, f->seen.segs[i]);
	fix_settle(f);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), n0);
}

/* --- the lock ------------------------------------------------------------ */

/* The program itself, for a child. */
static const char *
self_path(void)
{
	static char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

	assert_true(n > 0);
	path[n] = '\0';
	return path;
}

/* A child running "child dir segbytes start script" with env set (NULL
 * or "NAME=VALUE" strings, NULL-terminated). */
static void
child_start(struct test_proc *p, const char *dir, uint64_t segbytes,
    uint32_t start, const char *script, const char *const *env)
{
	char seg[32], st[32], self[PATH_MAX];
	char *argv[] = { self, "child", (char *)dir, seg, st, (char *)script,
	    NULL };

	snprintf(self, sizeof(self), "%s", self_path());
	snprintf(seg, sizeof(seg), "%" PRIu64, segbytes);
	snprintf(st, sizeof(st), "%" PRIu32, start);
	for (size_t i = 0; env != NULL && env[i] != NULL; i++)
		assert_int_equal(putenv((char *)env[i]), 0);
	assert_int_equal(test_spawn(p, argv), 0);
	for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
		char name[64];

		snprintf(name, sizeof(name), "%.*s",
		    (int)strcspn(env[i], "="), env[i]);
		unsetenv(name);
	}
}

/* Wait for the child to exit (SIGKILL after TEST_WAIT_MS), reap it, close
 * its pipes.  Its wait status. */
static int
child_end(struct test_proc *p)
{
	int status = test_child_reap(p->pid, TEST_WAIT_MS);

	p->pid = 0;
	close(p->in);
	close(p->out);
	close(p->err);
	return status;
}

/* Numbers start at 1: 0 means "no segment" to the journal's users
 * (a message's segment), so a segment 0 (hand-made, or foreign) would
 * have its messages taken for unjournaled ones (found by fuzz-journal:
 * fuzz/corpus/journal/crash-seg0-ack-lost).  Refused, named. */
static void
test_a_segment_numbered_0_is_refused(void **state)
{
	struct fix *f = *state;
	char path[PATH_MAX + 64], why[512];
	int fd;

	snprintf(path, sizeof(path), "%s/seg-0000000000000000.log", f->dir);
	assert_true((fd = open(path, O_WRONLY | O_CREAT, 0600)) >= 0);
	close(fd);
	assert_int_equal(journal_open(f->dir, NULL, &f->j, why, sizeof(why)),
	    -EINVAL);
	assert_null(f->j);
	assert_non_null(strstr(why, "seg-0000000000000000.log"));
	/* Left as it was. */
	assert_int_equal(access(path, F_OK), 0);
}

static void
test_second_open_of_a_directory_fails_ebusy(void **state)
{
	struct fix *f = *state;
	struct journal *j2 = NULL;
	struct test_proc p;
	char why[256], line[512], pid[32];

	fix_open(f, 0, 1);
	/* In this process: the lock is per open, not per process. */
	assert_int_equal(journal_open(f->dir, NULL, &j2, why, sizeof(why)),
	    -EBUSY);
	assert_null(j2);
	snprintf(pid, sizeof(pid), "pid %ld", (long)getpid());
	assert_non_null(strstr(why, pid));

	/* In another process. */
	child_start(&p, f->dir, 0, 1, "a1 s", NULL);
	assert_true(test_read_line(p.out, line, sizeof(line),
	    TEST_WAIT_MS) > 0);
	assert_int_equal(strncmp(line, "open 16 ", 8), 0);	/* EBUSY */
	assert_non_null(strstr(line, pid));
	assert_true(WIFEXITED(child_end(&p)));

	/* Free once closed. */
	journal_close(f->j);
	f->j = NULL;
	child_start(&p, f->dir, 0, 1, "a1 s", NULL);
	assert_int_equal(test_wait_line(p.out, "open 0", NULL, 0,
	    TEST_WAIT_MS), 0);
	assert_int_equal(test_wait_line(p.out, "closed", NULL, 0,
	    TEST_WAIT_MS), 0);
	assert_int_equal(child_end(&p), 0);
	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, 1);
}

/* --- power loss and errors, through tests/powerfail.c -------------------- */

/*
 * The child: open and replay dir, then run the script, one token at a
 * time: "aN" appends N records (ids from start on), "s" asks for a sync
 * and waits for it, "h" says "ready" and waits for stdin to close.
 * Lines out: "open ERR WHY", "shim 0|1", "replayed N", "append ERR ID"
 * for a failed append, "sync ERR LO MID HI" (ids LO..MID-1 are on disk,
 * MID..HI-1 failed), "closed".
 */
static int
child_main(int argc, char **argv)
{
	struct journal_opts o;
	struct journal_replay_stats rst;
	struct journal *j;
	journal_pos *pos, s = 0;
	uint64_t seg;
	uint32_t id, lo, n;
	char why[256], *script, *tok, *save = NULL;
	int r;

	if (argc != 6)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	o.segment_bytes = strtoull(argv[3], NULL, 10);
	id = lo = (uint32_t)strtoul(argv[4], NULL, 10);
	if ((pos = calloc(1u << 20, sizeof(*pos))) == NULL)
		return 2;
	r = journal_open(argv[2], &o, &j, why, sizeof(why));
	printf("open %d %s\n", -r, why);
	if (r < 0)
		return 1;
	printf("shim %d\n", dlsym(RTLD_DEFAULT, "powerfail_loaded") != NULL);
	if ((r = journal_replay(j, NULL, NULL, NULL, &rst)) < 0)
		return 1;
	printf("replayed %" PRIu64 "\n", rst.records);
	script = strdup(argv[5]);
	for (tok = strtok_r(script, " ", &save); tok != NULL;
	    tok = strtok_r(NULL, " ", &save)) {
		if (tok[0] == 'a') {
			n = (uint32_t)atoi(tok + 1);
			for (; n > 0 && id < (1u << 20); n--, id++)
				if ((pos[id] = rec_append(j, id, &seg)) == 0)
					printf("append %d %" PRIu32 "\n", errno,
					    id);
				else
					journal_retain(j, seg);
		} else if (tok[0] == 's') {
			uint32_t mid = lo;

			r = journal_sync(j);
			if (r == 0)
				r = jwait(j, id > lo ? pos[id - 1] : 0, &s);
			while (mid < id && pos[mid] != 0 && pos[mid] <= s)
				mid++;
			printf("sync %d %" PRIu32 " %" PRIu32 " %" PRIu32 "\n",
			    -r, lo, mid, id);
			lo = id;
		} else if (tok[0] == 'h') {
			char c;

			printf("ready\n");
			while (read(0, &c, 1) > 0)
				;
		}
	}
	journal_close(j);
	printf("closed\n");
	free(script);
	free(pos);
	return 0;
}

struct run {
	struct test_proc p;
	int status;
	size_t nsync;
	int err[16];
	uint32_t lo[16], mid[16], hi[16];
	int append_err;
	size_t append_fails;
	int shim;
};

/* Read the child's lines up to "closed" (or up to stopper), then make
 * sure it is gone. */
static void
run_read(struct run *rn, const char *stopper)
{
	char line[512];

	memset(rn->err, 0, sizeof(rn->err));
	rn->nsync = rn->append_fails = 0;
	rn->shim = -1;
	while (test_read_line(rn->p.out, line, sizeof(line),
	    TEST_WAIT_MS) >= 0) {
		int e;
		unsigned lo, mid, hi;

		if (sscanf(line, "open %d", &e) == 1)
			assert_int_equal(e, 0);
		else if (sscanf(line, "shim %d", &e) == 1)
			rn->shim = e;
		else if (sscanf(line, "sync %d %u %u %u", &e, &lo, &mid,
		    &hi) == 4 && rn->nsync < 16) {
			rn->err[rn->nsync] = e;
			rn->lo[rn->nsync] = lo;
			rn->mid[rn->nsync] = mid;
			rn->hi[rn->nsync++] = hi;
		} else if (sscanf(line, "append %d", &e) == 1) {
			rn->append_err = e;
			rn->append_fails++;
		}
		if (strcmp(line, stopper) == 0)
			break;
	}
}

static const char *
shim_path(void)
{
	const char *path = test_build_path("tests/.libs/powerfail.so");

	if (access(path, R_OK) != 0)
		fail_msg("%s is missing: make tests/powerfail.la", path);
	return path;
}

/* Run the child under the shim with env, to its end.  hang: the shim
 * hangs a sync; the child is killed once it does, as by a power loss. */
static void
run_child(struct run *rn, const char *dir, uint64_t segbytes,
    const char *script, const char *const *env, int hang)
{
	static char preload[PATH_MAX + 16], pfdir[PATH_MAX + 16];
	const char *all[16];
	size_t n = 0;

	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", shim_path());
	snprintf(pfdir, sizeof(pfdir), "POWERFAIL_DIR=%s", dir);
	all[n++] = preload;
	all[n++] = pfdir;
	all[n++] = "POWERFAIL_SUFFIX=.log";
	for (size_t i = 0; env[i] != NULL && n < 15; i++)
		all[n++] = env[i];
	all[n] = NULL;
	child_start(&rn->p, dir, segbytes, 1, script, all);
	if (hang) {
		/* The power fails with a batch written, not synced. */
		assert_int_equal(test_wait_line(rn->p.err, "powerfail: hang",
		    NULL, 0, TEST_WAIT_MS), 0);
		kill(rn->p.pid, SIGKILL);
		run_read(rn, "");		/* to EOF */
		rn->status = child_end(&rn->p);
		assert_true(WIFSIGNALED(rn->status));
	} else {
		run_read(rn, "closed");
		rn->status = child_end(&rn->p);
		assert_int_equal(rn->status, 0);
	}
	assert_int_equal(rn->shim, 1);
}

#define NEEDS_SHIM() do { \
	if (UNDER_ASAN) { \
		printf("# the sanitizers refuse an LD_PRELOAD shim\n"); \
		skip(); \
	} \
} while (0)

/*
 * The child for the shim's own test ("shim dir", under the shim in
 * power-loss mode): writes every way the shim knows, syncs some, says
 * what the files hold on the way, then waits to be killed.
 */
static int
shim_child(const char *dir)
{
	char path[PATH_MAX];
	struct iovec v[2] = { { "bb", 2 }, { "c", 1 } };
	struct stat sb;
	int fd, fd2, fd3;

	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(path, sizeof(path), "%s/f.log", dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_APPEND, 0600)) < 0)
		return 1;
	if (write(fd, "aaa", 3) != 3 || writev(fd, v, 2) != 3 ||
	    fstat(fd, &sb) < 0)
		return 1;
	printf("held %lld\n", (long long)sb.st_size);	/* 0: all held */
	if (ftruncate(fd, 4) < 0 || write(fd, "d", 1) != 1 || fsync(fd) < 0)
		return 1;
	snprintf(path, sizeof(path), "%s/g.log", dir);
	if ((fd2 = open(path, O_WRONLY | O_CREAT, 0600)) < 0)
		return 1;
	if (pwrite(fd2, "xyz", 3, 2) != 3)
		return 1;
	printf("seek %lld\n", (long long)lseek(fd2, 0, SEEK_END));
	if (write(fd2, "!", 1) != 1 || fdatasync(fd2) < 0)
		return 1;
	/* Not a file of the shim's (POWERFAIL_SUFFIX): written at once. */
	snprintf(path, sizeof(path), "%s/h.txt", dir);
	if ((fd3 = open(path, O_WRONLY | O_CREAT, 0600)) < 0 ||
	    write(fd3, "now", 3) != 3)
		return 1;
	/* Written, never synced: lost with the process. */
	if (write(fd, "lost", 4) != 4 || write(fd2, "lost", 4) != 4)
		return 1;
	printf("ready\n");
	for (;;)
		pause();
}

static void
test_powerfail_shim_holds_writes_until_they_are_synced(void **state)
{
	struct fix *f = *state;
	static char preload[PATH_MAX + 16], pfdir[PATH_MAX + 16];
	const char *env[] = { preload, pfdir, "POWERFAIL_HOLD=1",
	    "POWERFAIL_SUFFIX=.log", NULL };
	char self[PATH_MAX], line[128], path[PATH_MAX];
	char *argv[] = { self, "shim", f->dir, NULL };
	struct test_proc p;
	uint8_t *b;
	size_t len;

	NEEDS_SHIM();
	snprintf(self, sizeof(self), "%s", self_path());
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", shim_path());
	snprintf(pfdir, sizeof(pfdir), "POWERFAIL_DIR=%s", f->dir);
	for (size_t i = 0; env[i] != NULL; i++)
		assert_int_equal(putenv((char *)env[i]), 0);
	assert_int_equal(test_spawn(&p, argv), 0);
	unsetenv("LD_PRELOAD");
	unsetenv("POWERFAIL_DIR");
	unsetenv("POWERFAIL_HOLD");
	unsetenv("POWERFAIL_SUFFIX");
	assert_true(test_read_line(p.out, line, sizeof(line),
	    TEST_WAIT_MS) > 0);
	assert_string_equal(line, "held 0");
	assert_true(test_read_line(p.out, line, sizeof(line),
	    TEST_WAIT_MS) > 0);
	assert_string_equal(line, "seek 5");
	assert_int_equal(test_wait_line(p.out, "ready", NULL, 0,
	    TEST_WAIT_MS), 0);
	kill(p.pid, SIGKILL);
	assert_true(WIFSIGNALED(child_end(&p)));

	/* O_APPEND, writev and ftruncate in order, then synced. */
	snprintf(path, sizeof(path), "%s/f.log", f->dir);
	b = file_read(path, &len);
	assert_int_equal(len, 5);
	assert_memory_equal(b, "aaabd", 5);
	free(b);
	/* pwrite past the end, lseek to the held end, write there. */
	snprintf(path, sizeof(path), "%s/g.log", f->dir);
	b = file_read(path, &len);
	assert_int_equal(len, 6);
	assert_memory_equal(b, "\0\0xyz!", 6);
	free(b);
	snprintf(path, sizeof(path), "%s/h.txt", f->dir);
	b = file_read(path, &len);
	assert_int_equal(len, 3);
	free(b);
}

static void
test_power_loss_loses_exactly_what_was_not_synced(void **state)
{
	struct fix *f = *state;
	static const char *const hold[] = { "POWERFAIL_HOLD=1",
	    "POWERFAIL_SYNC_HANG=3", NULL };
	static const char *const nohold[] = { "POWERFAIL_SYNC_HANG=3", NULL };
	struct run rn;

	NEEDS_SHIM();
	/* The third batch is written, and the power fails in its sync. */
	run_child(&rn, f->dir, 0, "a20 s a20 s a40 s", hold, 1);
	assert_int_equal(rn.nsync, 2);
	assert_int_equal(rn.err[1], 0);
	assert_int_equal(rn.mid[1], 41);
	fix_open(f, 0, 1);
	assert_ids_upto(f, 40);
	assert_int_equal(f->rst.torn_bytes, 0);
	assert_int_equal(f->rst.damaged, 0);

	/* The control: without the shim holding them, the written records
	 * are in the kernel's cache and outlive the process. */
	journal_close(f->j);
	f->j = NULL;
	test_rmtree(f->dir);
	assert_non_null(f->dir = test_tmpdir());
	run_child(&rn, f->dir, 0, "a20 s a20 s a40 s", nohold, 1);
	fix_open(f, 0, 1);
	assert_ids_upto(f, 80);
}

static void
test_power_loss_while_creating_a_segment_leaves_a_clean_log(void **state)
{
	struct fix *f = *state;
	static const char *const hold[] = { "POWERFAIL_HOLD=1",
	    "POWERFAIL_SYNC_HANG=4", NULL };
	char names[SEGS_MAX][32];
	uint64_t segbytes = SEG_HDR;
	struct run rn;

	NEEDS_SHIM();
	/* Ids 1..50 fill the first segment: the third batch ends it (sync
	 * 3) and starts the second (sync 4, which never returns). */
	for (uint32_t id = 1; id <= 50; id++)
		segbytes += rec_disk(id);
	run_child(&rn, f->dir, segbytes, "a20 s a20 s a40 s", hold, 1);
	assert_int_equal(rn.nsync, 2);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), 2);
	assert_int_equal(file_size(seg_path(f->dir, names[1])), 0);

	/* On disk: the first segment, whole (synced, not acknowledged). */
	fix_open(f, segbytes, 1);
	assert_ids_upto(f, 50);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->rst.segments, 2);
	assert_int_equal(seg_files(f->dir, names, SEGS_MAX), 1);
	fix_append(f, 51, 61, 1, NULL);
	fix_sync(f);
	fix_open(f, segbytes, 1);
	assert_ids_upto(f, 60);
	assert_int_equal(f->rst.damaged + f->rst.torn_bytes, 0);
}

/* The second batch fails as env says; the first and third are kept. */
static void
check_one_failed_batch(struct fix *f, const char *const *env, int err)
{
	struct run rn;

	run_child(&rn, f->dir, 0, "a10 s a10 s a10 s", env, 0);
	assert_int_equal(rn.nsync, 3);
	assert_int_equal(rn.err[0], 0);
	assert_int_equal(rn.mid[0], 11);
	assert_int_equal(rn.err[1], err);
	assert_int_equal(rn.mid[1], 11);	/* none of 11..20 on disk */
	assert_int_equal(rn.hi[1], 21);
	assert_int_equal(rn.err[2], 0);
	assert_int_equal(rn.mid[2], 31);
	assert_int_equal(rn.append_fails, 0);

	fix_open(f, 0, 1);
	assert_int_equal(f->rst.records, 20);
	assert_int_equal(f->rst.damaged, 0);
	assert_int_equal(f->rst.torn_bytes, 0);
	for (uint32_t i = 0; i < 10; i++) {
		assert_int_equal(f->seen.ids[i], i + 1);
		assert_int_equal(f->seen.ids[10 + i], i + 21);
	}
	/* Two segments: the first cut back to its synced end. */
	assert_int_equal(f->rst.segments, 2);
	journal_close(f->j);
	f->j = NULL;
	test_rmtree(f->dir);
	assert_non_null(f->dir = test_tmpdir());
}

static void
test_enospc_on_write_fails_that_batch_only(void **state)
{
	static const char *const env[] = { "POWERFAIL_WRITE_ERR=2:ENOSPC",
	    NULL };
	static const char *const held[] = { "POWERFAIL_WRITE_ERR=2:ENOSPC",
	    "POWERFAIL_HOLD=1", NULL };

	NEEDS_SHIM();
	check_one_failed_batch(*state, env, ENOSPC);
	check_one_failed_batch(*state, held, ENOSPC);
}

static void
test_eio_on_fdatasync_fails_that_batch_only(void **state)
{
	/* The records of the failed batch are in the kernel's cache: only
	 * the journal's cut keeps them from replay. */
	static const char *const env[] = { "POWERFAIL_SYNC_ERR=2:EIO", NULL };
	/* As Linux may: the pages that failed are dropped. */
	static const char *const held[] = { "POWERFAIL_SYNC_ERR=2:EIO",
	    "POWERFAIL_HOLD=1", NULL };

	NEEDS_SHIM();
	check_one_failed_batch(*state, env, EIO);
	check_one_failed_batch(*state, held, EIO);
}

static void
test_a_disk_that_keeps_failing_makes_the_journal_read_only(void **state)
{
	struct fix *f = *state;
	static const char *const env[] = { "POWERFAIL_SYNC_ERR=2+:EIO", NULL };
	struct run rn;

	NEEDS_SHIM();
	/* The cut's own sync fails too: nothing more is accepted. */
	run_child(&rn, f->dir, 0, "a10 s a10 s a10 s", env, 0);
	assert_int_equal(rn.nsync, 3);
	assert_int_equal(rn.err[0], 0);
	assert_int_equal(rn.err[1], EIO);
	assert_int_equal(rn.mid[1], 11);
	assert_int_equal(rn.err[2], EROFS);
	assert_int_equal(rn.mid[2], 21);
	assert_int_equal(rn.append_fails, 10);
	assert_int_equal(rn.append_err, EROFS);
	fix_open(f, 0, 1);
	assert_ids_upto(f, 10);
	assert_int_equal(f->rst.damaged, 0);
}

/* --- the benchmark -------------------------------------------------------- */

static double
bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
bench_main(int argc, char **argv)
{
	static const unsigned batches[] = { 1, 16, 256 };
	const double secs = 2.0;
	char *dir = argc > 2 ? strdup(argv[2]) : test_tmpdir();
	char path[PATH_MAX];
	uint8_t rec[64];
	int fd;

	if (dir == NULL)
		return 1;
	memset(rec, 'm', sizeof(rec));
	for (size_t b = 0; b < 3; b++) {
		struct journal *j;
		struct journal_replay_stats rst;
		struct journal_stats st;
		char sub[PATH_MAX], why[256];
		uint64_t n = 0;
		double t0, t;
		journal_pos p = 0;

		snprintf(sub, sizeof(sub), "%s/b%u", dir, batches[b]);
		if (journal_open(sub, NULL, &j, why, sizeof(why)) < 0 ||
		    journal_replay(j, NULL, NULL, NULL, &rst) < 0) {
			fprintf(stderr, "bench: %s\n", why);
			return 1;
		}
		t0 = bench_now();
		do {
			for (unsigned k = 0; k < batches[b]; k++)
				p = journal_append(j, 1, rec, 16, rec + 16, 48,
				    NULL);
			if (p == 0 || journal_sync(j) < 0 ||
			    jwait(j, p, NULL) < 0) {
				fprintf(stderr, "bench: append or sync\n");
				return 1;
			}
			n += batches[b];
		} while ((t = bench_now() - t0) < secs);
		journal_get_stats(j, &st);
		printf("batch %3u: %9.0f records/s, %7.0f syncs/s, "
		    "%.0f us per fdatasync\n", batches[b], (double)n / t,
		    (double)st.syncs / t, st.syncs ? (double)st.sync_ns_total /
		    (double)st.syncs / 1e3 : 0.0);
		journal_close(j);
		test_rmtree(strdup(sub));
	}
	/* The loop's cost of an append (one sync for all, not timed). */
	{
		struct journal *j;
		struct journal_replay_stats rst;
		char sub[PATH_MAX], why[256];
		enum { M = 1000000 };
		double t0, t;

		snprintf(sub, sizeof(sub), "%s/append", dir);
		if (journal_open(sub, NULL, &j, why, sizeof(why)) < 0 ||
		    journal_replay(j, NULL, NULL, NULL, &rst) < 0)
			return 1;
		t0 = bench_now();
		for (int k = 0; k < M; k++)
			if (journal_append(j, 1, rec, 16, rec + 16, 48,
			    NULL) == 0)
				return 1;
		t = bench_now() - t0;
		printf("append:     %7.0f ns per 64-byte record (no sync)\n",
		    t * 1e9 / M);
		journal_close(j);
		test_rmtree(strdup(sub));
	}
	/* The disk alone: 64 bytes appended, fdatasync, again. */
	snprintf(path, sizeof(path), "%s/raw", dir);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0) {
		double t0 = bench_now(), t = 0;
		uint64_t n = 0;

		do {
			if (pwrite(fd, rec, sizeof(rec), (off_t)(n * 64)) !=
			    (ssize_t)sizeof(rec) || fdatasync(fd) < 0)
				break;
			n++;
		} while ((t = bench_now() - t0) < secs);
		printf("raw:        %7.0f fdatasyncs/s (64-byte appends)\n",
		    (double)n / t);
		close(fd);
		unlink(path);
	}
	if (argc <= 2)
		test_rmtree(dir);
	else
		free(dir);
	return 0;
}

int
main(int argc, char **argv)
{
#define T(name) cmocka_unit_test_setup_teardown(name, fix_setup, fix_teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_matches_known_vectors),
		cmocka_unit_test(
		    test_crc32c_agrees_with_the_bitwise_form_at_every_alignment),
		T(test_append_before_replay_or_of_type_0_is_refused),
		T(test_round_trip_across_segments),
		T(test_close_syncs_what_was_appended),
		T(test_a_record_larger_than_a_segment_gets_one_of_its_own),
		T(test_group_commit_one_sync_for_many_appends),
		T(test_syncs_asked_while_one_runs_are_served_together),
		T(test_sync_with_nothing_to_write_still_completes),
		T(test_torn_tail_is_cut_and_appends_go_on),
		T(test_zeros_after_the_last_record_are_a_torn_tail),
		T(test_flipped_bit_in_a_middle_record_is_reported_once),
		T(test_flipped_bit_in_a_length_is_resynchronised),
		T(test_damage_at_the_end_of_an_earlier_segment_is_not_a_torn_tail),
		T(test_a_bad_segment_header_is_reported_and_the_rest_delivered),
		T(test_records_past_where_the_next_segment_begins_are_cut),
		T(test_a_segment_whose_removal_was_lost_is_dropped),
		T(test_a_journal_inside_a_message_is_never_taken_for_records),
		T(test_replay_of_mangled_segments_delivers_only_true_records),
		T(test_a_search_through_hostile_bytes_takes_linear_work),
		T(test_a_search_cut_short_is_damage_not_a_torn_tail),
		T(test_the_search_finds_records_of_any_length),
		T(test_the_search_agrees_with_trying_every_offset),
		T(test_a_failing_callback_stops_replay_and_appends),
		T(test_reclaim_deletes_consumed_segments_oldest_first),
		T(test_every_segment_starts_with_its_checkpoint),
		T(test_a_failed_checkpoint_fails_the_append_and_is_done_again),
		T(test_replayed_segments_go_once_a_new_checkpoint_is_on_disk),
		T(test_a_segment_retained_in_replay_stays),
		T(test_second_open_of_a_directory_fails_ebusy),
		T(test_a_segment_numbered_0_is_refused),
		T(test_powerfail_shim_holds_writes_until_they_are_synced),
		T(test_power_loss_loses_exactly_what_was_not_synced),
		T(test_power_loss_while_creating_a_segment_leaves_a_clean_log),
		T(test_enospc_on_write_fails_that_batch_only),
		T(test_eio_on_fdatasync_fails_that_batch_only),
		T(test_a_disk_that_keeps_failing_makes_the_journal_read_only),
	};
#undef T

	if (argc > 1 && strcmp(argv[1], "child") == 0)
		return child_main(argc, argv);
	if (argc > 2 && strcmp(argv[1], "shim") == 0)
		return shim_child(argv[2]);
	if (argc > 1 && strcmp(argv[1], "bench") == 0)
		return bench_main(argc, argv);
	test_init(300);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
