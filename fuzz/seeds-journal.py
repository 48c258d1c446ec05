#!/usr/bin/env python3
"""seeds-journal.py - seed inputs for fuzz/fuzz-journal.

    seeds-journal.py [OUTDIR]     (default: fuzz/corpus/journal next to
                                   this script)

Each seed is the harness's input (fuzz/fuzz-journal.c says it all): a
byte saying what the client does after the first replay, then items
[u8 op][u16 len][bytes] that the harness turns into segment files with
good checksums (or bad ones, where an item says so).  The seeds start
from journals such as ipcd writes (a checkpoint, mailboxes with real
names, messages, some consumed) and add the damage replay must live
with: a torn tail, a bit flipped in the middle, a segment header gone
bad, a segment the next one overlaps, a crash while creating a segment,
records replay does not know.
"""
import os
import struct
import sys

# Client bits (byte 0).
RECV, ACK, SEND, ASYNC, DELETE, CREATE, CHMOD, PEEK = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)

# Ops (low nibble); the high nibble is the variant.
(REC, BAD, RAW, SEG, CUT, MBOX, MSG, CONSUMED, DEL, CKPT, START, LIE, MANY,
 BOXES, LATE, PAD) = range(16)


def item(op, data=b"", variant=0):
    return struct.pack("<BH", (variant << 4) | op, len(data)) + data


def seg(variant=0, skip=0, delta=0, salt=0, arg=0):
    return item(SEG, struct.pack("<BbIQ", skip, delta, salt, arg), variant)


def mbox(slot, name=b"", attrs=0):
    return item(MBOX, bytes([slot, attrs]) + name)


def msg(slot, payload, back=0, variant=0):
    return item(MSG, bytes([slot, back]) + payload, variant)


def consumed(slot, back=0, variant=0):
    return item(CONSUMED, bytes([slot, back]), variant)


def ckpt(mask, delta=0, variant=0):
    return item(CKPT, struct.pack("<Bb", mask, delta), variant)


def start(variant=0):
    return item(START, b"", variant)


def rec(rtype, body):
    return item(REC, bytes([rtype]) + body)


def bad(rtype, body, bit=0):
    return item(BAD, bytes([rtype]) + body, bit)


def raw(data):
    return item(RAW, data)


def cut(n):
    return item(CUT, struct.pack("<H", n))


# A journal as ipcd leaves it: a checkpoint, one mailbox, messages, some
# of them consumed.
ORDERS = (seg() + ckpt(0) + start() + mbox(0, b"orders.eu-west") +
          msg(0, b"order 1001: 3 x widget") +
          msg(0, b"order 1002: 1 x gadget") +
          msg(0, b"order 1003: 12 x sprocket") +
          consumed(0, 2))


def seeds():
    s = {}
    s["orders-recv-ack"] = bytes([RECV | ACK]) + ORDERS
    s["orders-recv-unacked"] = bytes([RECV]) + ORDERS
    s["orders-send"] = bytes([SEND]) + ORDERS
    s["orders-no-client"] = bytes([0]) + ORDERS
    # Two segments: the second begins with a checkpoint of both
    # mailboxes, then more messages and a deletion.
    two = (ORDERS + mbox(1, b"billing.invoices", 0x04) +
           msg(1, b"invoice 77") +
           seg() + ckpt(0x03) + msg(0, b"order 1004") + consumed(0, 3) +
           msg(1, b"invoice 78") + consumed(1, 1))
    s["two-segments"] = bytes([RECV | ACK | SEND]) + two
    s["two-segments-delete"] = bytes([DELETE | CREATE | SEND]) + two
    s["two-segments-chmod-peek"] = bytes([CHMOD | PEEK | RECV]) + two
    # A write cut short: the last record's tail never made it.
    s["torn-tail"] = bytes([RECV | ACK]) + ORDERS + msg(0, b"x" * 40) + cut(25)
    s["torn-garbage"] = bytes([SEND]) + ORDERS + raw(b"\x55" * 13)
    # A flipped bit in the middle, good records after it.
    s["damaged-middle"] = (bytes([RECV | ACK]) + seg() + ckpt(0) +
                           mbox(0, b"orders.eu-west") + msg(0, b"one") +
                           bad(3, b"\x00" * 46 + b"lost", 3) +
                           msg(0, b"three") + consumed(0, 0))
    # A record whose length lies: replay must search for the next one.
    s["length-lies"] = (bytes([RECV | ACK | SEND]) + seg() +
                        mbox(0, b"orders.eu-west") + msg(0, b"before") +
                        item(LIE, struct.pack("<bB", 7, 3) + b"\x01" * 60) +
                        msg(0, b"after"))
    # A segment whose header went bad between two good ones.
    s["bad-header"] = (bytes([RECV]) + ORDERS + seg(4) +
                       msg(0, b"unreadable") + seg() + ckpt(0x01) +
                       msg(0, b"order 2001"))
    # The last segment's header never reached the disk (zeros).
    s["zero-last"] = bytes([SEND]) + ORDERS + seg(5) + msg(0, b"gone")
    s["short-last"] = bytes([RECV | ACK]) + ORDERS + seg(6, delta=11)
    # The next segment begins before this one ends: its tail was a
    # failed batch, cut in replay.
    s["overlap"] = (bytes([RECV | ACK]) + ORDERS + msg(0, b"failed batch") +
                    seg(1, delta=-40) + ckpt(0x01) + msg(0, b"order 3001"))
    # A gap between segments, numbers skipped.
    s["gap"] = (bytes([SEND]) + ORDERS + seg(1, skip=5, delta=64) +
                ckpt(0x01) + msg(0, b"order 4001"))
    # A whole checkpoint that leaves a mailbox out: it was deleted.
    s["ckpt-deletes"] = (bytes([RECV | ACK]) + seg() +
                         mbox(0, b"orders.eu-west") + mbox(1, b"stale.box") +
                         msg(1, b"stale") + seg() + ckpt(0x01) +
                         msg(0, b"fresh"))
    # The same name with a new uuid; a rename; an unknown record type;
    # malformed records of each kind.
    s["odd-records"] = (bytes([RECV | ACK | SEND | CREATE]) + seg() +
                        mbox(0, b"orders.eu-west") + msg(0, b"a") +
                        mbox(2, b"orders.eu-west") + msg(2, b"b") +
                        mbox(2, b"renamed") + rec(9, b"future") +
                        mbox(3, b"bad.attrs", 0x08 | 0x20) +
                        mbox(4, b"bad.len", 0x80) + msg(2, b"o", 0, 1) +
                        msg(2, b"n", 0, 2) + msg(2, b"l", 0, 4) +
                        consumed(2, 0, 1) + item(DEL, b"\x00", 1) +
                        ckpt(0x04, 0, 4) + start(1))
    # Messages of a mailbox whose record is lost; a deleted mailbox.
    s["orphans"] = (bytes([RECV | ACK]) + seg() + msg(0, b"orphan", 0, 8) +
                    mbox(1, b"queue.one") + msg(1, b"kept") +
                    mbox(5, b"queue.five") + msg(5, b"dropped") +
                    item(DEL, b"\x05"))
    # One uuid under two names: the second record is refused (a
    # rename) while the first is there; once reclaim took it, the
    # broker's own records for that uuid are the renames.
    s["rename-reclaimed"] = (bytes([RECV | CHMOD | PEEK]) + seg() +
                             ckpt(0x09, 2) + seg() + rec(0, b"") +
                             mbox(0, b"orders.eu-west") +
                             msg(0, b"order 1001") + raw(b"\x00" * 8))
    # Known bugs (fuzz-journal.c: FUZZ_JOURNAL_KNOWN=1 makes these
    # abort; without it they pass).
    #
    # Loss: the MBOX record that the messages of segment 2 need is in
    # segment 1, the copy in segment 2's checkpoint is damaged.  The
    # first restart recovers the message, reclaims segment 1 (nothing
    # lives in it), and the second restart drops the message as an
    # orphan: its mailbox's only record before it is gone, and the
    # checkpoint the first restart wrote comes after it.
    s["crash-loss-after-reclaim"] = (
        bytes([0]) + seg() + mbox(0, b"orders.eu-west") + seg() +
        bad(5, struct.pack("<IQ", 1, 0)) + bad(1, b"\x00" * 50) +
        msg(0, b"order 5001"))
    # Segment 0 (ipcd numbers from 1): its message is received and
    # acknowledged, but jseg 0 reads as "not journaled": no CONSUMED
    # record, and it comes back after the restart.
    s["crash-seg0-ack-lost"] = (bytes([RECV | ACK]) + seg(8, arg=0) +
                                mbox(0, b"orders.eu-west") +
                                msg(0, b"order 6001"))
    # Oversize: a message bigger than the broker's max_payload (4096 in
    # the harness) recovered, then PEEKed at: DELIVER frames past the
    # limit WELCOME announced.
    s["crash-peek-oversize"] = (bytes([PEEK]) + seg() +
                                mbox(0, b"orders.eu-west") +
                                msg(0, b"B" * 5000))
    # Many messages, half of them consumed; many mailboxes, deleted
    # again: replay's tables grow past their first size, and lose
    # entries in the middle of their probe runs.
    s["many"] = (bytes([RECV | ACK | SEND]) + seg() +
                 mbox(0, b"orders.eu-west") +
                 item(MANY, bytes([0, 160]) + b"bulk", 2) +
                 item(BOXES, bytes([40]), 1) + item(BOXES, bytes([36])) +
                 ckpt(0x01, 0) + msg(9, b"to box 9"))
    # A segment past the 1 MiB replay reads at once: 1.5 MiB of records
    # of a type replay does not know, a message across the window's
    # end, a stretch of zeros to search through.
    s["big-segment"] = (bytes([RECV | ACK]) + seg() +
                        mbox(0, b"orders.eu-west") + msg(0, b"before") +
                        item(PAD, bytes([24, 0]), 15) +
                        msg(0, b"m" * 3000) +
                        item(PAD, bytes([40, 0])) + msg(0, b"after") +
                        item(PAD, bytes([3, 3]), 15) + msg(0, b"last"))
    # The journal is found late: the broker started without its state
    # directory, a non-durable mailbox took a name the journal has, and
    # a durable mailbox opens the journal then.
    s["late"] = (bytes([RECV | ACK | SEND]) + ORDERS +
                 mbox(1, b"billing.invoices") + msg(1, b"invoice 9") +
                 item(LATE, bytes([0x01])))
    s["late-empty"] = bytes([CREATE]) + item(LATE, bytes([0x03]))
    # A message over the harness broker's max_payload (4096): ipcd
    # refuses to start on such a journal (or, in older daemons, PEEK
    # sends it whole: crash-peek-oversize); found late, too.
    s["late-oversize"] = (bytes([RECV]) + seg() + mbox(0, b"orders.eu-west") +
                          msg(0, b"B" * 5000) + item(LATE, bytes([0x02])))
    # Repeated message ids, in one mailbox and in two.
    s["repeat-ids"] = (bytes([RECV | ACK]) + seg() +
                       mbox(0, b"orders.eu-west") + mbox(1, b"other.q") +
                       msg(0, b"first") + msg(0, b"copy", 1) +
                       msg(1, b"elsewhere", 2) + consumed(0, 0))
    # Out-of-order and arbitrary segment numbers and positions.
    s["numbers"] = (bytes([SEND]) + ORDERS + seg(8, arg=0x20) + ckpt(1) +
                    msg(0, b"n") + seg(2, arg=1 << 40) + ckpt(1) +
                    msg(0, b"far") + seg(9) + msg(0, b"zero"))
    return s


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "corpus", "journal")
    os.makedirs(out, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
