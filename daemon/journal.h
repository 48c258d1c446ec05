/*
 * journal - the durable mailboxes' storage: an append-only log in
 * segments, a checksum per record, group commit by one sync thread.
 *
 * The broker's loop never waits on the disk.  It appends records to a
 * buffer in memory (journal_append), asks for a sync (journal_sync), and
 * goes on; the sync thread writes what was appended and calls fdatasync,
 * then makes journal_fd() readable.  journal_synced() then says how far
 * the log is on disk (every record up to that position survives a power
 * loss), or which error the writes or the sync met.  Whatever is
 * appended while a sync runs goes with the next one: concurrent senders
 * share one fdatasync.
 *
 * Positions (journal_pos) grow across segments: a record's position is
 * the end of its bytes, as counted from the start of the first segment
 * ever written in this directory, segment headers included.  Each
 * segment begins where the one before it ends.  After a write or sync
 * error the records past the synced position are given up, and the next
 * segment begins at that position: positions never go back past what
 * was reported synced, but those of records reported failed are used
 * again.
 *
 * On disk: DIR/lock (flock: one broker per directory; it holds the pid),
 * and segments DIR/seg-NNNNNNNNNNNNNNNN.log (16 hex digits: the segment's
 * number, in order, from 1; numbers are never used twice, and may skip;
 * a segment 0 makes journal_open fail with EINVAL).  A
 * segment begins with a 32-byte header: magic "IPCJRNL1", u64 its number,
 * u64 its first position, u32 salt (random, per segment), u32 CRC-32C of
 * the 28 bytes before it.  Then records, each: u32 length of body, u32
 * CRC-32C of (type byte + body) started from the salt (journal_crc32c(
 * salt, ...)), u8 type, body.  Little-endian.  A record never spans
 * segments.  The salt makes a record valid in its own segment only, so
 * the bytes of a message that look like records (a journal sent as a
 * message) are not taken for records when replay has to search for the
 * next one after damage (but by a 2^-32 chance per place tried).  A
 * segment's first position bounds the one before it: replay cuts what
 * lies past it (a batch that failed, whose cut did not reach the disk).
 *
 * Single-threaded from the caller's side: every function is called from
 * the broker's loop only (the sync thread is internal).
 */
#ifndef JOURNAL_H
#define JOURNAL_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t journal_pos;

struct journal;

/* Largest body of one record (a message of the broker's largest size
 * plus its header fits). */
#define JOURNAL_BODY_MAX (UINT32_C(1) << 30)

struct journal_opts {
	uint64_t segment_bytes;		/* roll over when the records past
					 * a segment's checkpoint would
					 * pass this (0: 64 MiB) */
};

/* Open (creating it 0700 if missing) and lock dir, and start the sync
 * thread.  Fails with EBUSY when another open journal holds the lock
 * (another process, or another journal_open in this one: the lock is
 * per open), with why naming the holder's pid.  0, or -errno; why (may
 * be NULL) says what failed. */
int journal_open(const char *dir, const struct journal_opts *opts,
    struct journal **out, char *why, size_t why_size);

/* What replay found. */
struct journal_replay_stats {
	uint64_t records;		/* good records handed to the callback */
	uint64_t damaged;		/* bad records or segment headers that
					 * are not a torn tail: skipped,
					 * reported through on_damage */
	uint64_t torn_bytes;		/* cut off the end of the last segment
					 * (a crash mid-write), or a failed
					 * write that the disk kept: removed */
	uint32_t segments;		/* segment files read */
};

/* A record as replay hands it: valid only during the callback. */
struct journal_rec {
	uint8_t type;
	const uint8_t *body;
	uint32_t len;
	uint64_t seg;			/* its segment's number */
	journal_pos pos;
};

/*
 * Sync every segment file and the directory first (what a process that
 * died before its sync wrote may be in the page cache only), then read
 * every segment in order, check every checksum, and call cb (may be
 * NULL) for each good record (cb returns 0 to go on, -errno to stop:
 * replay returns it).  A bad record that a good one follows is damage:
 * counted in damaged, reported through on_damage (may be NULL) with its
 * segment and file offset, and skipped (by its length when the record
 * there checks out, else by searching forward for the next good one, in
 * time linear in the bytes searched, whatever they hold).  So is a
 * segment whose header fails its check (offset 0), and bad bytes at the
 * end of any segment but the last.  Bad or short bytes at the very end
 * of the last segment are a torn tail: truncated away, counted in
 * torn_bytes, not reported; so are bytes past where the next segment
 * begins (a write that failed, which the disk kept), and a last segment
 * whose header never reached the disk.  One exception: the search keeps
 * at most 2^20 lookalike records open at once, and checks none that it
 * had to drop (only bytes made to look like records fill that, or random
 * ones far beyond 64 MiB): good records among those are skipped with the
 * damage (one report), and when it drops some and then finds nothing,
 * the bad bytes at the end of the last segment may hide a good record,
 * so they are damage, reported and kept, not cut (a later replay, seeded
 * the same, finds the same).  After replay the journal
 * appends to a new segment.  Call once, after journal_open and before
 * any append (appends fail with EINVAL until a replay succeeded).  0, or
 * -errno (I/O errors reading or truncating; EINVAL on a second call).
 */
int journal_replay(struct journal *j,
    int (*cb)(void *arg, const struct journal_rec *r),
    void (*on_damage)(void *arg, uint64_t seg, uint64_t offset,
    const char *what), void *arg, struct journal_replay_stats *st);

/*
 * Append one record (type: the caller's, 1..255; body of hlen + plen
 * bytes: a header and a payload, either may be 0) to the buffer.  Nothing
 * is written yet.  *seg_out (may be NULL) gets the segment it will be in;
 * returns its position, or 0 with errno (ENOMEM, EFBIG over
 * JOURNAL_BODY_MAX, EINVAL for type 0 or before journal_replay, EROFS
 * after an unrecoverable error).  When the current segment is full (and
 * for the first record after replay or after an error), the record
 * starts a new one, and before it the journal calls the checkpoint
 * callback (journal_set_checkpoint) so the caller can append what a
 * fresh segment must repeat (mailbox metadata): those records go first in
 * the new segment.  If one of them fails, so does this append, with its
 * errno, and the next append starts another segment.
 */
journal_pos journal_append(struct journal *j, uint8_t type, const void *hdr,
    size_t hlen, const void *payload, size_t plen, uint64_t *seg_out);

/* Called (from journal_append, in the loop) when a new segment begins,
 * to append the records it must hold from its start.  Older segments are
 * deleted only once a newer one's checkpoint records are on disk. */
void journal_set_checkpoint(struct journal *j, void (*cb)(void *arg),
    void *arg);

/* Ask for everything appended so far to be written and synced.  Cheap
 * when a sync is already running (the next one takes it).  Every call is
 * followed by journal_fd() becoming readable, also when there was
 * nothing to write.  0, or -EROFS after an unrecoverable error. */
int journal_sync(struct journal *j);

/* Readable when a sync finished (ok or not): then call journal_synced. */
int journal_fd(const struct journal *j);

/*
 * After journal_fd() was readable: *synced is the position up to which
 * every record is on disk.  Returns 0, or -errno (ENOSPC, EIO...) when a
 * write or sync failed: then the records after *synced are not on disk
 * and never will be (they are dropped from the file, the segment cut
 * back), and their callers must be told they failed; that includes
 * every record appended before this call whose position is past
 * *synced.  Later appends go on (a new segment) unless the cut itself
 * failed (then every later append fails with EROFS).  An error is
 * returned once.  Drains the eventfd.
 */
int journal_synced(struct journal *j, journal_pos *synced);

/* The live records of segment seg: the caller calls journal_retain for
 * each message record it appends (or meets in replay) and
 * journal_release when that message is consumed, or when its append
 * failed; numbers the journal does not know (any more) are ignored.  A
 * segment with no live record, older than a segment whose checkpoint is
 * on disk, whose older segments are all gone, is deleted by the sync
 * thread (so disk use follows what is queued, not history).  A message
 * may be released before the record saying it was consumed is synced:
 * after a crash it comes back or is gone with its segment, and either
 * way it had been consumed. */
void journal_retain(struct journal *j, uint64_t seg);
void journal_release(struct journal *j, uint64_t seg);

struct journal_stats {
	uint64_t appended_records, appended_bytes;
	/* fdatasync calls on segments and the time in them (directory
	 * fsyncs not counted). */
	uint64_t syncs, sync_ns_total;
	uint64_t segments_live;		/* not deleted or queued */
	uint64_t oldest_seg, newest_seg;	/* of those (0: none) */
	uint64_t segment_bytes;		/* what a segment holds past its
					 * checkpoint before it rolls */
	uint64_t ckpt_bytes;		/* the live segments' headers and
					 * checkpoints */
	uint64_t segments_deleted;	/* files removed by reclaim */
	uint64_t disk_bytes;		/* segment files now */
	uint64_t write_errors;		/* failed batches and removals */
};
void journal_get_stats(const struct journal *j, struct journal_stats *st);

/* Stop the sync thread (after a last sync of what was appended), close,
 * unlock, free.  NULL is ignored. */
void journal_close(struct journal *j);

/* CRC-32C (Castagnoli), as the records use; exposed for the tests.  Pass
 * 0 to start, or the value so far to go on. */
uint32_t journal_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
