/*
 * fuzz-journal.c - libFuzzer harness for the replay of hostile journals
 * through the whole broker, in-process.
 *
 * For each input: a fresh state directory (mkdtemp in $TMPDIR, else
 * /tmp) gets segment files built from the input; a broker starts on it
 * as ipcd does (broker_defaults, state_dir, broker_open, durable_start)
 * and replays them; a local client may then receive from the recovered
 * mailboxes, acknowledge, send to them, delete, make, chmod or peek; the
 * broker syncs, its books are checked and it closes.  A second broker
 * then starts on the same directory (it replays what the first left:
 * the tail it cut, its START record and checkpoint in a new segment, the
 * client's records), is checked the same way and closes, and the
 * directory is removed.
 *
 * Input:
 *
 *   byte 0    what the client does after the first replay; 0: no
 *             client.  Otherwise a local client says HELLO, then, on
 *             the first four durable mailboxes (their names as the
 *             broker recovered them), in this order:
 *               0x01  RECV one message from each (max_len the broker's
 *                     max_payload, no wait)
 *               0x02  ACK every message it holds (else they go back to
 *                     their queue when it closes)
 *               0x04  SEND one message to each (0x08: async)
 *               0x10  MBOX_DELETE the first
 *               0x20  MBOX_CREATE a durable "fresh.q" (sent to if 0x04)
 *               0x40  MBOX_CHMOD 0666 on the first, MBOX_CHOWN to
 *                     1000:1000 on the last
 *               0x80  PEEK at each (8 messages at most; but see
 *                     FUZZ_JOURNAL_KNOWN below)
 *   then      items [u8 op][u16 len, little-endian][len bytes D] (one
 *             the input cuts short takes what is left).  op & 15 says
 *             what the item appends to the current segment (the first
 *             record makes segment 1 if no item did), V = op >> 4 is a
 *             variant:
 *     0, 12-15  REC: a record of type D[0], body D[1..], good CRC
 *     1   BAD: the same with its CRC wrong (one bit, picked by V)
 *     2   RAW: D as it is (garbage, a torn write, hand-made records)
 *     3   SEG: a new segment file.  D: [u8 skip][i8 delta][u32 salt]
 *         [u64 arg] (missing bytes read as 0; salt 0 picks one).  Its
 *         number is the last one's + 1 + skip, its first position where
 *         the last one's bytes end.  V: 0 as said; 1 first + delta;
 *         2 first = arg; 3 the header names number + 1; 4 header CRC
 *         wrong; 5 a header of zeros; 6 only (delta & 31) bytes of the
 *         header; 7 bad magic; 8 number = arg; 9 first = 0; else 0
 *     4   CUT: the current segment loses (D[0] | D[1] << 8) bytes
 *     5   MBOX of slot D[0] (a uuid per slot): attributes from D[1]
 *         (bits 0-1 uid: ours, 1000, 65534, ~0; 2-3 mode: 0600, 0666,
 *         0, 01000; 4-5 capacity: 16, 1, 0, ~0; 6 max_bytes 0; 7 the
 *         name's length off by one), name D[2..] ("jobs.N" if none).
 *         The slot remembers it for CKPT
 *     6   MSG to slot D[0] (V & 8: to a uuid no MBOX names), id:
 *         D[1] 0 a new one, 1..127 that many back, 128..255 near 2^64;
 *         payload D[2..]; V & 1 origin "peer.example:7401", V & 2 an
 *         origin with a NUL, V & 4 an origin length past the record
 *     7   CONSUMED of slot D[0], id D[1] back from the last (V & 1: a
 *         byte short)
 *     8   MBOX_DEL of slot D[0] (V & 1: a byte short)
 *     9   CKPT: CKPT_BEGIN, the MBOX of each slot in mask D[0] (slots
 *         0-7) and of slots 8 to 8 + D[2] - 1, CKPT_END; the count is
 *         theirs + (i8)D[1]; V & 1 no CKPT_END, V & 2 the
 *         END's count one more, V & 4 a BEGIN a byte short, V & 8 a
 *         START after the BEGIN
 *     10  START (V & 1: a byte short)
 *     11  LIE: a record of type D[1], body D[2..], good CRC, its length
 *         field + (i8)D[0]
 *     12  MANY: 4 * D[1] MSG records to slot D[0] (new ids, payload
 *         D[2..]); V & 1 each followed by its CONSUMED, V & 2 every
 *         other one CONSUMED after them all
 *     13  BOXES: MBOX records of slots 8 to 8 + D[0] - 1 (V & 1: then
 *         MBOX_DEL of each)
 *     14  LATE: the journal is found late.  The first broker starts
 *         with no state directory (durable_start opens nothing); a
 *         client makes non-durable mailboxes with the names of the
 *         slots in mask D[0] (slots 0-7; as the input left them) and
 *         sends to each; only then are the segments written, and the
 *         client makes a durable mailbox "fresh.q", which opens and
 *         replays the journal (durable_ready) with those names taken.
 *         Then byte 0's client goes on, on the same connection
 *     15  PAD: D[0] * 64 bytes of the byte D[1]; V 15 (op 0xff): BULK,
 *         D[0] * 64 KiB (as much as fits) of good records of type D[1]
 *         (0: 200), 64 KiB each, body zeros: segments past the 1 MiB
 *         that replay reads at once
 *
 * Slots are 0-255; at most 8 segments, of 3 MiB and 8 MiB in all; what
 * does not fit is dropped.
 *
 * Checked (abort() on a violation), besides crashes, sanitizer reports
 * and leaks: both brokers start (durable_start succeeds, unless a
 * segment is numbered 2^64 - 1: EOVERFLOW, or a message is over the
 * broker's max_payload: EFBIG, where ipcd refuses to start; then a
 * broker with a larger limit must start, find nothing torn, and hold
 * such a message); what each recovered adds up
 * (durable_recovered is what its queues hold); every frame the broker
 * sends the client holds (fuzz-broker.h's checks); each broker settles
 * (its syncs come back) and closes every connection; its books balance
 * (fuzz-broker.h), and once its clients are gone it counts as many
 * durable messages as its durable mailboxes hold; no descriptor is left
 * open.  And across the restart:
 *
 *   - the second replay finds no torn bytes (the first cut them, and
 *     everything the first broker wrote was synced whole);
 *   - when the first broker removed none of the segments it replayed
 *     (reclaim), the second replay reads the same records in the same
 *     order, then the first broker's, which must all pass: the same
 *     damage and orphans exactly, and unless a message id repeats in
 *     the input (a CONSUMED then takes the wrong one), the same durable
 *     mailboxes (uuid, name, owner, mode, limits), each holding as many
 *     messages as the first broker left;
 *   - when it removed some, no more damage than the first found, unless
 *     the input names one uuid under two names (such a rename is
 *     refused against the older record; with that record reclaimed it
 *     passes, and the broker's own MBOX records become the renames);
 *   - none of this when a message id is near 2^64 (the broker's next
 *     ids wrap).
 *
 * LATE changes two things: the first replay leaves out the journal's
 * mailboxes whose names non-durable ones took (their messages are
 * orphans), which the second restores until the first broker's
 * checkpoint deletes them: so the second may count fewer orphans, and
 * the exact checks need no renames either (the uuid of a mailbox left
 * out may come back under another name).  And the files written stand
 * for what the first replay found (its first sync may reclaim before
 * the harness can look): a segment that replay drops counts as
 * removed.
 *
 * Three bugs this harness found are fixed, and their inputs are seeds
 * (fuzz/corpus/journal/crash-*): a message whose mailbox's record came
 * after it in the log was dropped as an orphan (lost once reclaim took
 * the older record); a segment numbered 0 made its messages look
 * unjournaled (ipcd now refuses such a journal, EINVAL); PEEK sent
 * recovered messages over max_payload whole (ipcd now refuses to start
 * on them, EFBIG).
 *
 * FUZZ_TRACE=1 prints the segments written and what each broker found.
 */
#include "config.h"

/* fuzz-broker.h's whole-input driver (fz_run) is not used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "fuzz-broker.h"
#pragma GCC diagnostic pop

#include <ftw.h>
#include <sys/stat.h>

#include "../daemon/journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* durable.c's record types. */
enum {
	FJ_MBOX = 1, FJ_MBOX_DEL = 2, FJ_MSG = 3, FJ_CONSUMED = 4,
	FJ_CKPT_BEGIN = 5, FJ_CKPT_END = 6, FJ_START = 7,
};
#define FJ_MBOX_LEN	50u
#define FJ_MSG_LEN	46u
#define FJ_SEG_HDR	32u
#define FJ_REC_HDR	9u

#define FJ_SEGS		8
/* A segment's bytes; more than replay reads at once (1 MiB), so that
 * its window slides. */
#define FJ_SEG_MAX	((size_t)3 << 20)
#define FJ_ALL_MAX	((size_t)8 << 20)	/* of all of them */
#define FJ_SLOTS	256
#define FJ_NAMES	4		/* mailboxes the client works on */
#define FJ_IDS_MAX	8192
/* Ids this close to 2^64 make the broker's next ones wrap. */
#define FJ_ID_HIGH	(UINT64_MAX - 65536)
/* Rounds (of at most 1 ms) a sync may take to come back. */
#define FJ_SYNC_ROUNDS	5000
#define FJ_NAMED	320		/* (uuid, name) pairs remembered */
#define FJ_FILES	64

struct fj_seg {
	uint64_t no;			/* the file's number */
	uint64_t first;			/* its header's first position */
	uint32_t salt;
	size_t len, cap;
	uint8_t *buf;			/* kept from one input to the next */
};

struct fj_slot {
	uint32_t uid, gid, mode, cap;
	uint64_t max_bytes;
	size_t name_len;
	char name[IPC_NAME_MAX + 1];
};

/* What the input builds, and what it says about its ids. */
struct fj_build {
	struct fj_seg seg[FJ_SEGS];
	int nseg;
	size_t total;			/* bytes in all segments */
	struct fj_slot slot[FJ_SLOTS];
	uint8_t slot_set[FJ_SLOTS];	/* slot[] holds something */
	int late;			/* LATE: found by durable_ready */
	uint8_t late_mask;		/* its non-durable names */
	uint64_t last_id;		/* the last new id a MSG took */
	uint64_t ids[FJ_IDS_MAX];	/* of the good MSG records */
	size_t nids;
	int ids_lost;			/* more than FJ_IDS_MAX */
	int id_high;			/* an id past FJ_ID_HIGH */
	struct {
		uint8_t uuid[16];
		uint64_t name;		/* a hash of the name's bytes */
	} named[FJ_NAMED];		/* of the good MBOX records */
	size_t nnamed;
	int renames;			/* a uuid under two names */
	int no_max;			/* a segment numbered UINT64_MAX */
	int no_zero;			/* a segment numbered 0 */
};

/* A durable mailbox as a broker holds it. */
struct fj_box {
	uint8_t uuid[16];
	char name[IPC_NAME_MAX + 1];
	uint32_t count, uid, gid, mode, cap;
	uint64_t max_bytes;
};

/* What one broker found and left. */
struct fj_result {
	uint64_t damaged, torn, orphans, recovered, records;
	struct fj_box *boxes;
	size_t nboxes;
};

/* A segment file in the directory. */
struct fj_file {
	uint64_t no, size;
};

static struct fj_build fj_w;
static struct fz fj_z;

/* --- reading the input -------------------------------------------------- */

/* Bytes [off, off + width) of d (n bytes), little-endian, missing ones 0. */
static uint64_t
fj_le(const uint8_t *d, size_t n, size_t off, size_t width)
{
	uint64_t v = 0;

	for (size_t i = width; i-- > 0;)
		v = v << 8 | (off + i < n ? d[off + i] : 0);
	return v;
}

static uint8_t
fj_byte(const uint8_t *d, size_t n, size_t off)
{
	return off < n ? d[off] : 0;
}

/* --- building segments -------------------------------------------------- */

/* The uuid of slot (0-511: 256 and up, no MBOX names them). */
static void
fj_uuid(uint8_t uuid[16], unsigned slot)
{
	for (unsigned i = 0; i < 16; i++)
		uuid[i] = (uint8_t)(0x40 + 17 * slot + 29 * i);
	uuid[0] = (uint8_t)slot;
	uuid[1] = (uint8_t)(0xa0 | slot >> 8);
}

/* Room for n more bytes in s (within the limits), or 0. */
static int
fj_room(struct fj_build *w, struct fj_seg *s, size_t n)
{
	size_t cap = s->cap ? s->cap : 65536;
	uint8_t *p;

	if (n > FJ_SEG_MAX - s->len || n > FJ_ALL_MAX - w->total)
		return 0;
	if (s->len + n <= s->cap)
		return 1;
	while (cap < s->len + n)
		cap *= 2;
	if ((p = realloc(s->buf, cap)) == NULL)
		FZ_FAIL("out of memory");
	s->buf = p;
	s->cap = cap;
	return 1;
}

static int
fj_no_used(const struct fj_build *w, uint64_t no)
{
	for (int i = 0; i < w->nseg; i++)
		if (w->seg[i].no == no)
			return 1;
	return 0;
}

static void
fj_segment(struct fj_build *w, unsigned v, const uint8_t *d, size_t n)
{
	const struct fj_seg *prev = w->nseg > 0 ? &w->seg[w->nseg - 1] : NULL;
	uint8_t skip = fj_byte(d, n, 0), h[FJ_SEG_HDR];
	int8_t delta = (int8_t)fj_byte(d, n, 1);
	uint32_t salt = (uint32_t)fj_le(d, n, 2, 4);
	uint64_t arg = fj_le(d, n, 6, 8), no, first;
	struct fj_seg *s;
	size_t hlen = FJ_SEG_HDR;

	if (w->nseg == FJ_SEGS)
		return;
	no = (prev != NULL ? prev->no : 0) + 1 + skip;
	first = prev != NULL ? prev->first + prev->len : 0;
	if (salt == 0)
		salt = UINT32_C(0x9e3779b9) * (uint32_t)(w->nseg + 1);
	switch (v) {
	case 1:
		first += (uint64_t)(int64_t)delta;
		break;
	case 2:
		first = arg;
		break;
	case 8:
		no = arg;
		break;
	case 9:
		first = 0;
		break;
	default:
		break;
	}
	/* One file per number. */
	for (int k = 0; fj_no_used(w, no) && k <= FJ_SEGS; k++)
		no++;
	if (fj_no_used(w, no))
		return;
	memcpy(h, v == 7 ? "IPCJRNL0" : "IPCJRNL1", 8);
	wire_put64(h + 8, v == 3 ? no + 1 : no);
	wire_put64(h + 16, first);
	wire_put32(h + 24, salt);
	wire_put32(h + 28, journal_crc32c(0, h, 28) ^ (v == 4 ? 1u : 0u));
	if (v == 5)
		memset(h, 0, sizeof(h));
	if (v == 6)
		hlen = (size_t)(delta & 31);
	s = &w->seg[w->nseg++];
	s->no = no;
	s->first = first;
	s->salt = salt;
	s->len = 0;
	if (!fj_room(w, s, hlen))
		hlen = 0;
	if (hlen > 0)
		memcpy(s->buf, h, hlen);
	s->len = hlen;
	w->total += hlen;
	if (no == UINT64_MAX)
		w->no_max = 1;
	if (no == 0)
		w->no_zero = 1;
}

static struct fj_seg *
fj_cur(struct fj_build *w)
{
	if (w->nseg == 0)
		fj_segment(w, 0, NULL, 0);
	return &w->seg[w->nseg - 1];
}

static void
fj_raw(struct fj_build *w, const uint8_t *d, size_t n)
{
	struct fj_seg *s = fj_cur(w);

	if (n == 0 || !fj_room(w, s, n))
		return;
	memcpy(s->buf + s->len, d, n);
	s->len += n;
	w->total += n;
}

/* PAD: k bytes of one filler byte (a stretch replay has to search). */
static void
fj_pad(struct fj_build *w, size_t k, uint8_t fill)
{
	struct fj_seg *s = fj_cur(w);

	if (k > FJ_SEG_MAX - s->len)
		k = FJ_SEG_MAX - s->len;
	if (k > FJ_ALL_MAX - w->total)
		k = FJ_ALL_MAX - w->total;
	if (k == 0 || !fj_room(w, s, k))
		return;
	memset(s->buf + s->len, fill, k);
	s->len += k;
	w->total += k;
}

/* An MBOX record (good CRC, maybe malformed) names its uuid. */
static void
fj_note_name(struct fj_build *w, const uint8_t *body, size_t n)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	size_t i;

	for (i = FJ_MBOX_LEN; i < n; i++)
		h = (h ^ body[i]) * UINT64_C(0x100000001b3);
	for (i = 0; i < w->nnamed; i++)
		if (memcmp(w->named[i].uuid, body, 16) == 0)
			break;
	if (i == FJ_NAMED) {
		w->renames = 1;		/* cannot tell: as if */
		return;
	}
	if (i < w->nnamed) {
		if (w->named[i].name != h)
			w->renames = 1;
		return;
	}
	memcpy(w->named[i].uuid, body, 16);
	w->named[i].name = h;
	w->nnamed++;
}

/* A good record's ids go on the books of what the input repeats, its
 * names on those of what it renames. */
static void
fj_note(struct fj_build *w, uint8_t type, const uint8_t *body, size_t n)
{
	uint64_t id;

	if (type == FJ_MBOX && n >= FJ_MBOX_LEN)
		fj_note_name(w, body, n);
	if ((type != FJ_MSG && type != FJ_CONSUMED) || n < 24)
		return;
	id = wire_get64(body + 16);
	if (id > FJ_ID_HIGH)
		w->id_high = 1;
	if (type != FJ_MSG)
		return;
	if (w->nids == FJ_IDS_MAX)
		w->ids_lost = 1;
	else
		w->ids[w->nids++] = id;
}

/* Append a record: type, body a then b; its CRC xor crc_xor, its length
 * field + len_delta.  Dropped when the segment is full. */
static void
fj_record(struct fj_build *w, uint8_t type, const uint8_t *a, size_t alen,
    const uint8_t *b, size_t blen, uint32_t crc_xor, int len_delta)
{
	struct fj_seg *s = fj_cur(w);
	size_t n = alen + blen;
	uint32_t crc;
	uint8_t *o;

	if (!fj_room(w, s, FJ_REC_HDR + n))
		return;
	o = s->buf + s->len;
	o[8] = type;
	if (alen > 0)
		memcpy(o + FJ_REC_HDR, a, alen);
	if (blen > 0)
		memcpy(o + FJ_REC_HDR + alen, b, blen);
	crc = journal_crc32c(s->salt, o + 8, 1 + n);
	wire_put32(o, (uint32_t)n + (uint32_t)len_delta);
	wire_put32(o + 4, crc ^ crc_xor);
	s->len += FJ_REC_HDR + n;
	w->total += FJ_REC_HDR + n;
	if (crc_xor == 0 && len_delta == 0)
		fj_note(w, type, o + FJ_REC_HDR, n);
}

/* BULK: about k bytes of good records of one type, 64 KiB each. */
static void
fj_bulk(struct fj_build *w, size_t k, uint8_t type)
{
	static const uint8_t zeros[65536 - FJ_REC_HDR];

	while (k > FJ_REC_HDR) {
		size_t n = k - FJ_REC_HDR < sizeof(zeros) ?
		    k - FJ_REC_HDR : sizeof(zeros);
		struct fj_seg *s = fj_cur(w);
		size_t len = s->len;

		fj_record(w, type != 0 ? type : 200, zeros, n, NULL, 0, 0, 0);
		if (s->len == len)
			return;		/* full */
		k -= FJ_REC_HDR + n;
	}
}

static void
fj_slot_default(struct fj_slot *sl, unsigned slot)
{
	sl->uid = (uint32_t)getuid();
	sl->gid = (uint32_t)getgid();
	sl->mode = 0600;
	sl->cap = 16;
	sl->max_bytes = 1u << 20;
	sl->name_len = (size_t)snprintf(sl->name, sizeof(sl->name), "jobs.%u",
	    slot);
}

static struct fj_slot *
fj_slot(struct fj_build *w, unsigned slot)
{
	if (!w->slot_set[slot]) {
		fj_slot_default(&w->slot[slot], slot);
		w->slot_set[slot] = 1;
	}
	return &w->slot[slot];
}

/* An MBOX record of slot (as it stands), its name length field +
 * len_off. */
static void
fj_mbox_rec(struct fj_build *w, unsigned slot, int len_off)
{
	const struct fj_slot *sl = fj_slot(w, slot);
	uint8_t h[FJ_MBOX_LEN];

	fj_uuid(h, slot);
	wire_put32(h + 16, sl->uid);
	wire_put32(h + 20, sl->gid);
	wire_put32(h + 24, sl->mode);
	wire_put32(h + 28, sl->cap);
	wire_put64(h + 32, sl->max_bytes);
	wire_put64(h + 40, UINT64_C(1700000000000000000) + slot);
	wire_put16(h + 48, (uint16_t)(sl->name_len + (size_t)len_off));
	fj_record(w, FJ_MBOX, h, sizeof(h), (const uint8_t *)sl->name,
	    sl->name_len, 0, 0);
}

static void
fj_op_mbox(struct fj_build *w, const uint8_t *d, size_t n)
{
	unsigned slot = fj_byte(d, n, 0), a = fj_byte(d, n, 1);
	static const uint32_t modes[4] = { 0600, 0666, 0, 01000 };
	static const uint32_t caps[4] = { 16, 1, 0, UINT32_MAX };
	struct fj_slot *sl = fj_slot(w, slot);
	uint32_t uids[4] = { (uint32_t)getuid(), 1000, 65534, UINT32_MAX };

	sl->uid = uids[a & 3];
	sl->gid = sl->uid;
	sl->mode = modes[(a >> 2) & 3];
	sl->cap = caps[(a >> 4) & 3];
	sl->max_bytes = a & 0x40 ? 0 : 1u << 20;
	if (n > 2) {
		sl->name_len = n - 2 > IPC_NAME_MAX ? IPC_NAME_MAX : n - 2;
		memcpy(sl->name, d + 2, sl->name_len);
		sl->name[sl->name_len] = '\0';
	}
	fj_mbox_rec(w, slot, a & 0x80 ? 1 : 0);
}

static void
fj_op_msg(struct fj_build *w, unsigned v, const uint8_t *d, size_t n)
{
	static const char origin[] = "peer.example:7401";
	unsigned slot = fj_byte(d, n, 0), back = fj_byte(d, n, 1);
	uint8_t h[FJ_MSG_LEN + sizeof(origin)];
	size_t olen = 0;
	uint64_t id;

	if (back == 0)
		id = ++w->last_id;
	else if (back < 128)
		id = w->last_id - back;
	else
		id = UINT64_MAX - (255 - back);
	fj_uuid(h, v & 8 ? slot + FJ_SLOTS : slot);
	wire_put64(h + 16, id);
	wire_put64(h + 24, UINT64_C(1700000000000000000) + id);
	wire_put32(h + 32, (uint32_t)getpid());
	wire_put32(h + 36, (uint32_t)getuid());
	wire_put32(h + 40, (uint32_t)getgid());
	if (v & 3) {
		olen = sizeof(origin) - 1;
		memcpy(h + FJ_MSG_LEN, origin, olen);
		if (v & 2)
			h[FJ_MSG_LEN + 4] = '\0';
	}
	wire_put16(h + 44, (uint16_t)(v & 4 ? olen + (n > 2 ? n - 2 : 0) + 1 :
	    olen));
	fj_record(w, FJ_MSG, h, FJ_MSG_LEN + olen, n > 2 ? d + 2 : NULL,
	    n > 2 ? n - 2 : 0, 0, 0);
}

static void
fj_op_ckpt(struct fj_build *w, unsigned v, const uint8_t *d, size_t n)
{
	unsigned mask = fj_byte(d, n, 0), extra = fj_byte(d, n, 2), count;
	int8_t delta = (int8_t)fj_byte(d, n, 1);
	uint8_t h[12], st[12];

	count = extra > FJ_SLOTS - 8 ? FJ_SLOTS - 8 : extra;
	for (unsigned i = 0; i < 8; i++)
		count += (mask >> i) & 1;
	count += (unsigned)(int)delta;
	wire_put32(h, count);
	wire_put64(h + 4, UINT64_C(1700000000000000000));
	fj_record(w, FJ_CKPT_BEGIN, h, v & 4 ? 11 : 12, NULL, 0, 0, 0);
	if (v & 8) {
		wire_put64(st, UINT64_C(1700000000000000000));
		wire_put32(st + 8, (uint32_t)getpid());
		fj_record(w, FJ_START, st, sizeof(st), NULL, 0, 0, 0);
	}
	for (unsigned i = 0; i < 8; i++)
		if ((mask >> i) & 1)
			fj_mbox_rec(w, i, 0);
	for (unsigned i = 8; i < 8 + extra && i < FJ_SLOTS; i++)
		fj_mbox_rec(w, i, 0);
	if (v & 1)
		return;
	wire_put32(h, count + (v & 2 ? 1 : 0));
	fj_record(w, FJ_CKPT_END, h, 4, NULL, 0, 0, 0);
}

static void
fj_op_many(struct fj_build *w, unsigned v, const uint8_t *d, size_t n)
{
	unsigned slot = fj_byte(d, n, 0), count = 4u * fj_byte(d, n, 1);
	uint8_t h[FJ_MSG_LEN], c[24];
	uint64_t first = w->last_id + 1;

	fj_uuid(h, slot);
	memcpy(c, h, 16);
	wire_put32(h + 32, (uint32_t)getpid());
	wire_put32(h + 36, (uint32_t)getuid());
	wire_put32(h + 40, (uint32_t)getgid());
	wire_put16(h + 44, 0);
	for (unsigned k = 0; k < count; k++) {
		wire_put64(h + 16, ++w->last_id);
		wire_put64(h + 24, UINT64_C(1700000000000000000) + k);
		fj_record(w, FJ_MSG, h, sizeof(h), n > 2 ? d + 2 : NULL,
		    n > 2 ? n - 2 : 0, 0, 0);
		if (v & 1) {
			wire_put64(c + 16, w->last_id);
			fj_record(w, FJ_CONSUMED, c, sizeof(c), NULL, 0, 0, 0);
		}
	}
	for (unsigned k = 0; (v & 2) && k < count; k += 2) {
		wire_put64(c + 16, first + k);
		fj_record(w, FJ_CONSUMED, c, sizeof(c), NULL, 0, 0, 0);
	}
}

static void
fj_build(struct fj_build *w, const uint8_t *data, size_t size)
{
	size_t i = 0;

	w->nseg = 0;
	w->total = 0;
	w->nids = 0;
	w->ids_lost = w->id_high = w->no_max = w->no_zero = w->renames = 0;
	w->nnamed = 0;
	w->late = 0;
	w->late_mask = 0;
	w->last_id = 1000;
	memset(w->slot_set, 0, sizeof(w->slot_set));
	while (i < size) {
		uint8_t op = data[i], u[16];
		unsigned v = op >> 4;
		size_t n = (size_t)fj_le(data, size, i + 1, 2);
		const uint8_t *d = data + (i + 3 < size ? i + 3 : size);

		i += 3;
		if (i > size)
			i = size;
		if (n > size - i)
			n = size - i;
		i += n;
		switch (op & 15) {
		case 1:
			if (n > 0)
				fj_record(w, d[0], d + 1, n - 1, NULL, 0,
				    UINT32_C(1) << (v * 2 + (d[0] & 1)), 0);
			else
				fj_record(w, 0, NULL, 0, NULL, 0,
				    UINT32_C(1) << v, 0);
			break;
		case 2:
			fj_raw(w, d, n);
			break;
		case 3:
			fj_segment(w, v, d, n);
			break;
		case 4: {
			struct fj_seg *s = fj_cur(w);
			size_t cut = (size_t)fj_le(d, n, 0, 2);

			cut = cut < s->len ? cut : s->len;
			s->len -= cut;
			w->total -= cut;
			break;
		}
		case 5:
			fj_op_mbox(w, d, n);
			break;
		case 6:
			fj_op_msg(w, v, d, n);
			break;
		case 7:
			fj_uuid(u, fj_byte(d, n, 0));
			{
				uint8_t h[24];

				memcpy(h, u, 16);
				wire_put64(h + 16, w->last_id -
				    fj_byte(d, n, 1));
				fj_record(w, FJ_CONSUMED, h, v & 1 ? 23 : 24,
				    NULL, 0, 0, 0);
			}
			break;
		case 8:
			fj_uuid(u, fj_byte(d, n, 0));
			fj_record(w, FJ_MBOX_DEL, u, v & 1 ? 15 : 16, NULL, 0,
			    0, 0);
			break;
		case 9:
			fj_op_ckpt(w, v, d, n);
			break;
		case 10: {
			uint8_t h[12];

			wire_put64(h, UINT64_C(1700000000000000000));
			wire_put32(h + 8, (uint32_t)getpid());
			fj_record(w, FJ_START, h, v & 1 ? 11 : 12, NULL, 0,
			    0, 0);
			break;
		}
		case 11:
			fj_record(w, fj_byte(d, n, 1), n > 2 ? d + 2 : NULL,
			    n > 2 ? n - 2 : 0, NULL, 0, 0,
			    (int8_t)fj_byte(d, n, 0));
			break;
		case 12:
			fj_op_many(w, v, d, n);
			break;
		case 13:
			for (unsigned k = 8; k < 8u + fj_byte(d, n, 0) &&
			    k < FJ_SLOTS; k++)
				fj_mbox_rec(w, k, 0);
			for (unsigned k = 8; (v & 1) && k < 8u +
			    fj_byte(d, n, 0) && k < FJ_SLOTS; k++) {
				fj_uuid(u, k);
				fj_record(w, FJ_MBOX_DEL, u, 16, NULL, 0, 0, 0);
			}
			break;
		case 14:
			w->late = 1;
			w->late_mask = fj_byte(d, n, 0);
			break;
		case 15:
			if (v == 15)
				fj_bulk(w, (size_t)fj_byte(d, n, 0) << 16,
				    fj_byte(d, n, 1));
			else
				fj_pad(w, (size_t)fj_byte(d, n, 0) * 64,
				    fj_byte(d, n, 1));
			break;
		default:		/* 0 */
			if (n > 0)
				fj_record(w, d[0], d + 1, n - 1, NULL, 0, 0,
				    0);
			else
				fj_record(w, 0, NULL, 0, NULL, 0, 0, 0);
			break;
		}
	}
}

static int
fj_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Does the input repeat a message id? */
static int
fj_ids_repeat(struct fj_build *w)
{
	if (w->ids_lost)
		return 1;
	qsort(w->ids, w->nids, sizeof(w->ids[0]), fj_cmp_u64);
	for (size_t i = 1; i < w->nids; i++)
		if (w->ids[i] == w->ids[i - 1])
			return 1;
	return 0;
}

/* --- the state directory ------------------------------------------------ */

static void
fj_write_segments(const struct fj_build *w, const char *dir)
{
	char path[PATH_MAX];

	for (int i = 0; i < w->nseg; i++) {
		const struct fj_seg *s = &w->seg[i];
		size_t off = 0;
		int fd;

		if (snprintf(path, sizeof(path), "%s/seg-%016llx.log", dir,
		    (unsigned long long)s->no) >= (int)sizeof(path))
			FZ_FAIL("%s: path too long", dir);
		if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		    0600)) < 0)
			FZ_FAIL("open %s: %s", path, strerror(errno));
		while (off < s->len) {
			ssize_t k = write(fd, s->buf + off, s->len - off);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				FZ_FAIL("write %s: %s", path, strerror(errno));
			off += (size_t)k;
		}
		close(fd);
		if (fz_tracing)
			fprintf(stderr, "segment %016llx: first %llu, salt "
			    "%08x, %zu bytes\n", (unsigned long long)s->no,
			    (unsigned long long)s->first, s->salt, s->len);
	}
}

/* The segment files in dir, by number. */
static size_t
fj_list(const char *dir, struct fj_file *out, size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (d == NULL)
		FZ_FAIL("opendir %s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL && n < max) {
		unsigned long long no;
		struct stat st;
		char tail[8];

		if (sscanf(e->d_name, "seg-%16llx%7s", &no, tail) != 2 ||
		    strcmp(tail, ".log") != 0 ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		out[n].no = no;
		out[n].size = (uint64_t)st.st_size;
		n++;
	}
	closedir(d);
	return n;
}

/* Did a file of before go (reclaim) between the two listings? */
static int
fj_removed(const struct fj_file *before, size_t nb,
    const struct fj_file *after, size_t na)
{
	for (size_t i = 0; i < nb; i++) {
		size_t k;

		for (k = 0; k < na && after[k].no != before[i].no; k++)
			;
		if (k == na)
			return 1;
	}
	return 0;
}

static int
fj_rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	if (remove(path) < 0)
		FZ_FAIL("remove %s: %s", path, strerror(errno));
	return 0;
}

static void
fj_rm_rf(const char *dir)
{
	if (nftw(dir, fj_rm_one, 8, FTW_DEPTH | FTW_PHYS) < 0)
		FZ_FAIL("nftw %s: %s", dir, strerror(errno));
}

/* --- a broker ------------------------------------------------------------ */

/* A broker on dir as ipcd starts one.  0, or what durable_start
 * refused with that the input explains: EOVERFLOW (a segment numbered
 * UINT64_MAX), EINVAL (one numbered 0), EFBIG (a message over
 * max_payload: checked by fj_refused_big). */
static int
fj_broker_start(struct fz *z, const char *dir, const struct fj_build *w,
    int late, uint32_t max_payload)
{
	char why[512];
	int r;

	memset(z, 0, sizeof(*z));
	z->trace = fz_tracing;
	broker_defaults(&z->b);
	z->b.lim.max_payload = max_payload;
	z->b.lim.default_capacity = 4;
	z->b.lim.default_max_bytes = 3 * FZ_MAX_PAYLOAD;
	z->b.lim.max_connections = 8;
	z->b.lim.max_mailboxes = 70;
	z->b.lim.max_mailboxes_per_uid = 68;
	z->b.lim.max_bytes_per_uid = 6 * FZ_MAX_PAYLOAD;
	z->b.max_fds_held = 2;
	link_name(FZ_NAME_HOST, FZ_NAME_PORT, z->b.name, sizeof(z->b.name));
	z->b.state_dir = dir;
	for (int k = 0; k < FZ_CONNS; k++) {
		z->cl[k].fd = z->cl[k].pass_fd = -1;
		z->cl[k].kind = CONN_LOCAL;
	}
	if (broker_open(&z->b) < 0)
		FZ_FAIL("broker_open: %s", strerror(errno));
	why[0] = '\0';
	/* As ipcd's main(): before anyone connects. */
	if ((r = durable_start(&z->b, why, sizeof(why))) < 0 &&
	    !(r == -EOVERFLOW && w->no_max) &&
	    !(r == -EINVAL && w->no_zero) && r != -EFBIG)
		FZ_FAIL("durable_start: %s (%s)", strerror(-r), why);
	if (r < 0 && z->b.journal != NULL)
		FZ_FAIL("durable_start failed (%s) with a journal open",
		    strerror(-r));
	if (r == 0 && z->b.journal == NULL && !late)
		FZ_FAIL("durable_start: no journal on %s", dir);
	if (late && z->b.journal != NULL)
		FZ_FAIL("durable_start: a journal on %s, which is not there",
		    dir);
	return r;
}

/* Rounds until the journal has nothing to sync and nothing waits for a
 * sync. */
static void
fj_quiesce(struct fz *z)
{
	struct broker *b = &z->b;

	for (int k = 0;; k++) {
		fz_settle(z);
		if (b->journal == NULL || (!b->journal_busy &&
		    !b->journal_dirty && b->dpend_head == NULL))
			return;
		if (k == FJ_SYNC_ROUNDS)
			FZ_FAIL("the journal is still busy after %d rounds "
			    "(busy %d, dirty %d, waiting %d)", k,
			    b->journal_busy, b->journal_dirty,
			    b->dpend_head != NULL);
		fz_round(z, 1);
	}
}

static int
fj_box_cmp(const void *a, const void *b)
{
	return memcmp(((const struct fj_box *)a)->uuid,
	    ((const struct fj_box *)b)->uuid, 16);
}

/* The durable mailboxes and what they hold, by uuid; the messages in
 * all of them. */
static uint64_t
fj_boxes(struct broker *b, struct fj_result *res)
{
	uint64_t total = 0;
	size_t n = 0;

	free(res->boxes);
	res->boxes = calloc(b->ndurables ? b->ndurables : 1,
	    sizeof(*res->boxes));
	if (res->boxes == NULL)
		FZ_FAIL("out of memory");
	for (struct mbox *m = b->durables; m != NULL; m = m->dnext) {
		struct fj_box *x = &res->boxes[n];

		if (n == b->ndurables)
			FZ_FAIL("more durable mailboxes than %u counted",
			    b->ndurables);
		if (m->durable <= 0)
			FZ_FAIL("mailbox %s on the durable list, durable %d",
			    m->name, m->durable);
		memcpy(x->uuid, m->uuid, 16);
		snprintf(x->name, sizeof(x->name), "%s", m->name);
		x->count = m->q.count;
		x->uid = m->uid;
		x->gid = m->gid;
		x->mode = m->mode;
		x->cap = m->capacity;
		x->max_bytes = m->max_bytes;
		total += m->q.count;
		n++;
	}
	if (n != b->ndurables)
		FZ_FAIL("%zu durable mailboxes, %u counted", n, b->ndurables);
	res->nboxes = n;
	qsort(res->boxes, n, sizeof(*res->boxes), fj_box_cmp);
	for (size_t i = 1; i < n; i++)
		if (memcmp(res->boxes[i].uuid, res->boxes[i - 1].uuid, 16) == 0)
			FZ_FAIL("two durable mailboxes with one uuid: %s, %s",
			    res->boxes[i - 1].name, res->boxes[i].name);
	return total;
}

/* What replay found, right after durable_start. */
static void
fj_replayed(struct fz *z, struct fj_result *res, int which)
{
	struct broker *b = &z->b;
	uint64_t held;

	res->damaged = b->n.journal_damaged;
	res->torn = b->n.journal_torn_bytes;
	res->orphans = b->n.journal_orphans;
	res->recovered = b->n.durable_recovered;
	res->records = b->n.journal_records;
	held = fj_boxes(b, res);
	if (held != res->recovered || held != b->durable_msgs)
		FZ_FAIL("broker %d: %llu messages recovered, %llu durable, "
		    "the queues hold %llu", which,
		    (unsigned long long)res->recovered,
		    (unsigned long long)b->durable_msgs,
		    (unsigned long long)held);
	if (fz_tracing)
		fprintf(stderr, "broker %d: %llu records, %llu damaged, %llu "
		    "torn bytes, %llu orphans; %zu mailboxes, %llu messages\n",
		    which, (unsigned long long)res->records,
		    (unsigned long long)res->damaged,
		    (unsigned long long)res->torn,
		    (unsigned long long)res->orphans, res->nboxes,
		    (unsigned long long)res->recovered);
}

/* Every client goes; the broker must notice, and balance its books. */
static void
fj_clients_go(struct fz *z)
{
	fz_settle(z);
	for (int k = 0; k < FZ_CONNS; k++)
		fz_client_close(z, k);
	for (int k = 0; z->b.nconns > 0; k++) {
		if (k == FZ_CLOSE_ROUNDS)
			FZ_FAIL("%u connections still open %d rounds after "
			    "their clients closed", z->b.nconns, k);
		fz_round(z, 0);
	}
	fz_round(z, 0);		/* frees what the last round closed */
	fj_quiesce(z);
	fz_check_books(z);
}

static void
fj_broker_close(struct fz *z)
{
	broker_close(&z->b, "fuzz input done");
	if (z->b.fds_held != 0)
		FZ_FAIL("%u memfd messages counted after broker_close",
		    z->b.fds_held);
	for (int k = 0; k < FZ_CONNS; k++) {
		free(z->cl[k].in);
		z->cl[k].in = NULL;
	}
}

/* The broker's last look: settled, its clients gone, it must count as
 * many durable messages as its durable mailboxes hold (res gets them);
 * then it closes.  which: 1 or 2, for the message. */
static void
fj_settle_and_close(struct fz *z, struct fj_result *res, int which)
{
	uint64_t held;

	fj_quiesce(z);
	fj_clients_go(z);
	held = fj_boxes(&z->b, res);
	if (held != z->b.durable_msgs)
		FZ_FAIL("broker %d counts %llu durable messages, its durable "
		    "mailboxes hold %llu", which,
		    (unsigned long long)z->b.durable_msgs,
		    (unsigned long long)held);
	fj_broker_close(z);
}

/* --- the client ---------------------------------------------------------- */

/* Frame f to client 0, the broker reading as it goes (fz_write, but
 * as it is: a name may hold "pid:self"). */
static void
fj_frame(struct fz *z, const struct wire_frame *f)
{
	struct fz_client *cl = &z->cl[0];
	uint8_t buf[FZ_MAX_FRAME];
	long n = wire_encode(f, buf, sizeof(buf));

	if (n < 0)
		FZ_FAIL("wire_encode %s: %ld", wire_type_name(f->type), n);
	z->cur = 0;
	if (fz_client_open(z, 0) < 0 || cl->eof || cl->stuck)
		return;
	fz_write_raw(z, cl, buf, (size_t)n);
}

/* Does mailbox name hold a message over the broker's max_payload? */
static int
fj_oversize(struct broker *b, const char *name)
{
	struct mbox *m = mbox_find(b, name, strlen(name));

	for (struct msg *msg = m != NULL ? m->q.head : NULL; msg != NULL;
	    msg = msg->next)
		if (msg->len > b->lim.max_payload)
			return 1;
	return 0;
}

static void
fj_hello(struct fz *z)
{
	struct wire_frame f = { .type = WIRE_HELLO, .id = 1 };

	z->cur = 0;
	f.b.hello.magic = WIRE_MAGIC;
	f.b.hello.version_min = f.b.hello.version_max = WIRE_VERSION;
	fj_frame(z, &f);
}

static void
fj_client(struct fz *z, uint8_t what)
{
	static const uint8_t payload[] = "a message sent after a restart";
	char names[FJ_NAMES][IPC_NAME_MAX + 1];
	struct wire_frame f;
	uint64_t id = 100;
	int n = 0;

	for (struct mbox *m = z->b.durables; m != NULL && n < FJ_NAMES;
	    m = m->dnext)
		snprintf(names[n++], sizeof(names[0]), "%s", m->name);
	if (z->cl[0].fd < 0)
		fj_hello(z);
	if (what & 0x01)
		for (int i = 0; i < n; i++) {
			f = (struct wire_frame){ .type = WIRE_RECV, .id = ++id };
			f.b.recv.max_len = FZ_MAX_PAYLOAD;
			f.b.recv.source = wire_str(names[i]);
			fj_frame(z, &f);
		}
	if (what & 0x02) {
		uint8_t ids[8 * 64];
		size_t k = 0;

		for (struct conn *c = z->b.conns; c != NULL; c = c->next)
			for (struct msg *msg = c->unacked; msg != NULL &&
			    k < sizeof(ids); msg = msg->next, k += 8)
				wire_put64(ids + k, msg->id);
		f = (struct wire_frame){ .type = WIRE_ACK, .id = ++id };
		f.b.ack.ids = (struct wire_bytes){ ids, k };
		if (k > 0)
			fj_frame(z, &f);
	}
	if (what & 0x20) {
		f = (struct wire_frame){ .type = WIRE_MBOX_CREATE, .id = ++id };
		f.b.create.capacity = WIRE_DEFAULT32;
		f.b.create.mode = WIRE_DEFAULT32;
		f.b.create.max_bytes = WIRE_DEFAULT64;
		f.b.create.flags = WIRE_CREATE_DURABLE;
		f.b.create.name = wire_str("fresh.q");
		fj_frame(z, &f);
		fj_quiesce(z);
		if (n < FJ_NAMES)
			snprintf(names[n++], sizeof(names[0]), "fresh.q");
	}
	if (what & 0x04)
		for (int i = 0; i < n; i++) {
			f = (struct wire_frame){ .type = WIRE_SEND, .id = ++id };
			f.b.send.flags = what & 0x08 ? WIRE_SEND_ASYNC : 0;
			f.b.send.dest = wire_str(names[i]);
			f.b.send.payload = (struct wire_bytes){ payload,
			    sizeof(payload) - 1 };
			fj_frame(z, &f);
		}
	fj_quiesce(z);
	if ((what & 0x10) && n > 0) {
		f = (struct wire_frame){ .type = WIRE_MBOX_DELETE, .id = ++id };
		f.b.name.name = wire_str(names[0]);
		fj_frame(z, &f);
	}
	if ((what & 0x40) && n > 0) {
		f = (struct wire_frame){ .type = WIRE_MBOX_CHMOD, .id = ++id };
		f.b.chmod.mode = 0666;
		f.b.chmod.name = wire_str(names[0]);
		fj_frame(z, &f);
		f = (struct wire_frame){ .type = WIRE_MBOX_CHOWN, .id = ++id };
		f.b.chown.uid = f.b.chown.gid = 1000;
		f.b.chown.name = wire_str(names[n - 1]);
		fj_frame(z, &f);
	}
	if (what & 0x80)
		for (int i = 0; i < n; i++) {
			if (fj_oversize(&z->b, names[i]))
				FZ_FAIL("mailbox %s holds a message over "
				    "max_payload in a started broker",
				    names[i]);
			f = (struct wire_frame){ .type = WIRE_PEEK, .id = ++id };
			f.b.peek.max_count = 8;
			f.b.peek.name = wire_str(names[i]);
			fj_frame(z, &f);
		}
	fj_quiesce(z);
}

/* LATE: non-durable mailboxes first, then the journal appears and a
 * durable mailbox opens it.  0, or what durable_start refused with (as
 * fj_broker_start). */
static int
fj_late(struct fz *z, const struct fj_build *w, const char *dir)
{
	static const uint8_t payload[] = "before the journal was there";
	struct wire_frame f;
	uint64_t id = 10;

	fj_hello(z);
	for (unsigned i = 0; i < 8; i++) {
		const char *name = w->slot_set[i] ? w->slot[i].name :
		    NULL;
		char dflt[16];

		if (!((w->late_mask >> i) & 1))
			continue;
		if (name == NULL) {
			snprintf(dflt, sizeof(dflt), "jobs.%u", i);
			name = dflt;
		}
		f = (struct wire_frame){ .type = WIRE_MBOX_CREATE, .id = ++id };
		f.b.create.capacity = WIRE_DEFAULT32;
		f.b.create.mode = WIRE_DEFAULT32;
		f.b.create.max_bytes = WIRE_DEFAULT64;
		f.b.create.name = wire_str(name);
		fj_frame(z, &f);
		f = (struct wire_frame){ .type = WIRE_SEND, .id = ++id };
		f.b.send.dest = wire_str(name);
		f.b.send.payload = (struct wire_bytes){ payload,
		    sizeof(payload) - 1 };
		fj_frame(z, &f);
	}
	fz_settle(z);
	if (z->b.journal != NULL)
		FZ_FAIL("a journal opened for non-durable mailboxes");
	if (mkdir(dir, 0700) < 0)
		FZ_FAIL("mkdir %s: %s", dir, strerror(errno));
	fj_write_segments(w, dir);
	f = (struct wire_frame){ .type = WIRE_MBOX_CREATE, .id = ++id };
	f.b.create.capacity = WIRE_DEFAULT32;
	f.b.create.mode = WIRE_DEFAULT32;
	f.b.create.max_bytes = WIRE_DEFAULT64;
	f.b.create.flags = WIRE_CREATE_DURABLE;
	f.b.create.name = wire_str("fresh.q");
	fj_frame(z, &f);
	fj_quiesce(z);
	/* The client may have made "fresh.q" not durable, or have been
	 * closed, or the journal was refused: then as ipcd's start would,
	 * to see why. */
	if (z->b.journal == NULL) {
		char why[512] = "";
		int r = durable_start(&z->b, why, sizeof(why));

		if (r < 0 && !(r == -EOVERFLOW && w->no_max) &&
		    !(r == -EINVAL && w->no_zero) && r != -EFBIG)
			FZ_FAIL("durable_ready did not open %s (%s), "
			    "durable_start: %s (%s)", dir, z->b.journal_why,
			    strerror(-r), why);
		if (r < 0)
			return r;
	}
	fj_quiesce(z);
	if (z->b.journal == NULL)
		FZ_FAIL("durable_start: no journal on %s", dir);
	return 0;
}

/* --- across the restart -------------------------------------------------- */

static void
fj_same_boxes(const struct fj_result *a, const struct fj_result *b)
{
	if (a->nboxes != b->nboxes)
		FZ_FAIL("the first broker left %zu durable mailboxes, the "
		    "second recovered %zu", a->nboxes, b->nboxes);
	for (size_t i = 0; i < a->nboxes; i++) {
		const struct fj_box *x = &a->boxes[i], *y = &b->boxes[i];

		if (memcmp(x->uuid, y->uuid, 16) != 0 ||
		    strcmp(x->name, y->name) != 0)
			FZ_FAIL("the first broker left mailbox %s, the second "
			    "recovered %s in its place", x->name, y->name);
		if (x->uid != y->uid || x->gid != y->gid ||
		    x->mode != y->mode || x->cap != y->cap ||
		    x->max_bytes != y->max_bytes)
			FZ_FAIL("mailbox %s: left as %u:%u %o cap %u max %llu, "
			    "recovered as %u:%u %o cap %u max %llu", x->name,
			    x->uid, x->gid, x->mode, x->cap,
			    (unsigned long long)x->max_bytes, y->uid, y->gid,
			    y->mode, y->cap, (unsigned long long)y->max_bytes);
		if (x->count != y->count)
			FZ_FAIL("mailbox %s: the first broker left %u messages, "
			    "the second recovered %u", x->name, x->count,
			    y->count);
	}
}

/* The first broker refused the journal for a message over its
 * max_payload: one started as the refusal says (a larger limit) must
 * take it, and hold such a message. */
static void
fj_refused_big(struct fz *z, const char *dir, const struct fj_build *w)
{
	struct fj_result r = { 0 };
	int big = 0;

	if (fj_broker_start(z, dir, w, 0, 1u << 20) < 0)
		FZ_FAIL("refused for a message over %u bytes, and again "
		    "with a limit of %u", FZ_MAX_PAYLOAD, 1u << 20);
	fj_replayed(z, &r, 2);
	if (r.torn != 0)
		FZ_FAIL("the replay after a refusal cut %llu torn bytes",
		    (unsigned long long)r.torn);
	for (struct mbox *m = z->b.durables; m != NULL; m = m->dnext)
		for (struct msg *msg = m->q.head; msg != NULL; msg = msg->next)
			big |= msg->len > FZ_MAX_PAYLOAD;
	if (!big)
		FZ_FAIL("refused for a message over %u bytes, and none is",
		    FZ_MAX_PAYLOAD);
	fj_settle_and_close(z, &r, 2);
	free(r.boxes);
}

/* --- one input ----------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char dir[PATH_MAX], state[PATH_MAX + 8];
	static struct fj_file before[FJ_FILES], after[FJ_FILES];
	struct fj_build *w = &fj_w;
	struct fz *z = &fj_z;
	struct fj_result r1 = { 0 }, left = { 0 }, r2 = { 0 };
	uint64_t fds_before[16];
	const char *tmp = getenv("TMPDIR");
	uint8_t what = size > 0 ? data[0] : 0;
	size_t nbefore, nafter;
	int repeat, removed, r;

	fz_init_once();
	fz_fd_snapshot(fds_before);
	fj_build(w, size > 0 ? data + 1 : data, size > 0 ? size - 1 : 0);
	repeat = fj_ids_repeat(w);

	if (snprintf(dir, sizeof(dir), "%s/fuzz-journal.XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp") >= (int)sizeof(dir) ||
	    mkdtemp(dir) == NULL)
		FZ_FAIL("mkdtemp %s: %s", dir, strerror(errno));
	/* LATE: the state directory is made later, inside this one. */
	if (snprintf(state, sizeof(state), "%s%s", dir, w->late ? "/state" :
	    "") >= (int)sizeof(state))
		FZ_FAIL("%s: path too long", dir);

	/* The first broker: replay of the input. */
	if (!w->late)
		fj_write_segments(w, state);
	r = fj_broker_start(z, state, w, w->late, FZ_MAX_PAYLOAD);
	if (r == 0 && w->late)
		r = fj_late(z, w, state);
	if (r < 0) {
		/* Refused: as ipcd, which would exit. */
		fj_clients_go(z);
		fj_broker_close(z);
		if (r == -EFBIG)
			fj_refused_big(z, state, w);
		fj_rm_rf(dir);
		fz_fd_compare(fds_before);
		return 0;
	}
	if (w->late) {
		/* Its first sync may have reclaimed already: the files
		 * written are what replay found. */
		nbefore = 0;
		for (int i = 0; i < w->nseg && nbefore < FJ_FILES; i++)
			before[nbefore++] = (struct fj_file){ w->seg[i].no,
			    w->seg[i].len };
	} else {
		nbefore = fj_list(state, before, FJ_FILES);
	}
	fj_replayed(z, &r1, 1);
	if (what != 0)
		fj_client(z, what);
	fj_settle_and_close(z, &left, 1);
	nafter = fj_list(state, after, FJ_FILES);
	removed = fj_removed(before, nbefore, after, nafter);

	/* The second: replay of what the first left. */
	if (fj_broker_start(z, state, w, 0, FZ_MAX_PAYLOAD) < 0)
		FZ_FAIL("the second broker refused what the first took");
	fj_replayed(z, &r2, 2);
	if (r2.torn != 0)
		FZ_FAIL("the second replay cut %llu torn bytes (the first "
		    "cut %llu)", (unsigned long long)r2.torn,
		    (unsigned long long)r1.torn);
	if (!w->id_high && !removed && !(w->late && w->renames)) {
		/* The same records in the same order, then the first
		 * broker's, which replay as they were written.  (LATE:
		 * the mailboxes whose names were taken are left out of
		 * the first, their messages orphans; the second has them
		 * until the first broker's checkpoint deletes them.) */
		if (r2.damaged != r1.damaged || (w->late ? r2.orphans >
		    r1.orphans : r2.orphans != r1.orphans))
			FZ_FAIL("with no segment removed, the second replay "
			    "found %llu damaged and %llu orphans, the first "
			    "%llu and %llu", (unsigned long long)r2.damaged,
			    (unsigned long long)r2.orphans,
			    (unsigned long long)r1.damaged,
			    (unsigned long long)r1.orphans);
		if (!repeat)
			fj_same_boxes(&left, &r2);
	} else if (!w->id_high && !w->renames) {
		/* Reclaim took old segments: their damage may go, and none
		 * may come (a record judged against older ones can pass
		 * without them: a uuid under a new name, which would make
		 * the broker's own MBOX records renames). */
		if (r2.damaged > r1.damaged)
			FZ_FAIL("the second replay found %llu damaged records, "
			    "the first %llu", (unsigned long long)r2.damaged,
			    (unsigned long long)r1.damaged);
		if (!repeat)
			fj_same_boxes(&left, &r2);
	}
	fj_settle_and_close(z, &r2, 2);

	free(r1.boxes);
	free(left.boxes);
	free(r2.boxes);
	fj_rm_rf(dir);
	fz_fd_compare(fds_before);
	return 0;
}
