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
 * ever written in this directory.
 *
 * On disk: DIR/lock (flock: one broker per directory), and segments
 * DIR/seg-NNNNNNNNNNNNNNNN.log (16 hex digits, in order).  A segment
 * begins with a 16-byte header (magic "IPCJRNL1", u64 its first
 * position); then records, each: u32 length of body, u32 CRC-32C of
 * (type byte + body), u8 type, body.  Little-endian.  A record never
 * spans segments.
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
	uint64_t segment_bytes;		/* roll over past this (0: 64 MiB) */
};

/* Open (creating it 0700 if missing) and lock dir.  Fails with EBUSY when
 * another process holds the lock, with why set.  0, or -errno. */
int journal_open(const char *dir, const struct journal_opts *opts,
    struct journal **out, char *why, size_t why_size);

/* What replay found. */
struct journal_replay_stats {
	uint64_t records;		/* good records handed to the callback */
	uint64_t damaged;		/* bad checksum or length in the middle
					 * of a segment: skipped, reported */
	uint64_t torn_bytes;		/* cut off the end of the last segment
					 * (a crash mid-write): truncated */
	uint32_t segments;
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
 * Read every segment in order, check every checksum, and call cb for each
 * good record (cb returns 0 to go on, -errno to stop: replay returns it).
 * A bad record in the middle of a segment (its length is plausible and
 * the next record's header checks out) is counted in damaged, reported
 * through on_damage (may be NULL) with its segment and offset, and
 * skipped; a bad or short record at the very end of the last segment is
 * a torn tail: truncated away, counted in torn_bytes.  After replay the
 * journal appends to a new segment.  Call once, after journal_open and
 * before any append.  0, or -errno.
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
 * JOURNAL_BODY_MAX, EROFS after an unrecoverable error).  When the
 * current segment is full, the record starts a new one, and before it
 * the journal calls the checkpoint callback (journal_set_checkpoint) so
 * the caller can append what a fresh segment must repeat (mailbox
 * metadata): those records go first in the new segment.
 */
journal_pos journal_append(struct journal *j, uint8_t type, const void *hdr,
    size_t hlen, const void *payload, size_t plen, uint64_t *seg_out);

/* Called (from journal_append, in the loop) when a new segment begins,
 * to append the records it must hold from its start. */
void journal_set_checkpoint(struct journal *j, void (*cb)(void *arg),
    void *arg);

/* Ask for everything appended so far to be written and synced.  Cheap
 * when a sync is already running (the next one takes it).  0 or -errno. */
int journal_sync(struct journal *j);

/* Readable when a sync finished (ok or not): then call journal_synced. */
int journal_fd(const struct journal *j);

/*
 * After journal_fd() was readable: *synced is the position up to which
 * every record is on disk.  Returns 0, or -errno (ENOSPC, EIO...) when a
 * write or sync failed: then the records after *synced are not on disk
 * and never will be (they are dropped from the file, the segment cut
 * back), and their callers must be told they failed; later appends go
 * on (a new segment) unless the directory is unusable (then every later
 * append fails with EROFS).  Drains the eventfd.
 */
int journal_synced(struct journal *j, journal_pos *synced);

/* The live records of segment seg: a message record counts as live from
 * its append until the caller says it is consumed.  A segment with no
 * live record, older than the current one, whose older segments are all
 * gone, is deleted (so disk use follows what is queued, not history). */
void journal_retain(struct journal *j, uint64_t seg);
void journal_release(struct journal *j, uint64_t seg);

struct journal_stats {
	uint64_t appended_records, appended_bytes;
	uint64_t syncs, sync_ns_total;	/* fdatasync calls, time in them */
	uint64_t segments_live, segments_deleted;
	uint64_t disk_bytes;		/* segment files now */
	uint64_t write_errors;
};
void journal_get_stats(const struct journal *j, struct journal_stats *st);

/* Stop the sync thread (after a last sync of what was appended), close,
 * unlock, free.  NULL is ignored. */
void journal_close(struct journal *j);

/* CRC-32C (Castagnoli), as the records use; exposed for the tests. */
uint32_t journal_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
