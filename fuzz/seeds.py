#!/usr/bin/env python3
"""seeds.py - seed inputs for fuzz/fuzz-broker and fuzz/fuzz-link from
the frames the tests produce (see fuzz/seeds.sh, which runs the tests
under strace and then this).

    seeds.py broker OUTDIR TRACE...   one seed per broker instance in the
                                      traces: what its clients wrote
    seeds.py link OUTDIR TRACE...     link seeds (see link_seeds below)

A trace is `strace -f -yy -xx -s 8192 -e trace=write,writev,sendmsg,sendto`
output.  A client's stream is the bytes written on a UNIX socket that
begin with a HELLO; its broker instance is the path the broker's end of
the socket shows.  The seeds use the markers of fuzz/fuzz-broker.h: up
to three connections ("#%c" + digit, "#%x" to close one whose slot is
reused), "#%f" before a write that passed a memfd, and "pid:self" for
the pid of any process in the trace (they are all this process in the
harness).  Frames over 6000 bytes (over the harnesses' frame limit) are
left out, and a seed stops before 32 KiB.
"""
import os
import re
import struct
import sys

HELLO_MAGIC = b"IPC1"
MAX_FRAME = 6000
MAX_SEED = 32 * 1024
CONNS = 3

LINE = re.compile(rb'^(\d+)\s+(write|writev|sendmsg|sendto)\((\d+)<(UNIX-STREAM:\[[^\]]*\])>, (.*)$')
RESUMED = re.compile(rb'^(\d+)\s+<\.\.\. (\w+) resumed>.*\) = (-?\d+)')
STR = re.compile(rb'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?')
IOV = re.compile(rb'iov_base="((?:\\x[0-9a-f]{2})*)"(\.\.\.)?, iov_len=(\d+)')
SOCK = re.compile(rb'UNIX-STREAM:\[(\d+)(?:->(\d+))?(?:,"((?:\\x[0-9a-f]{2})*)")?\]')
RESULT = re.compile(rb'\) = (-?\d+)')


def unhex(s):
    return bytes.fromhex(s.replace(b"\\x", b"").decode())


def parse(path):
    """Writes on UNIX sockets, in order: (pid, ino, peer, sockpath, data,
    passed_fd); and the set of pids seen."""
    writes, pending, pids = [], {}, set()
    with open(path, "rb") as f:
        for line in f:
            lead = line.split(None, 1)[0] if line[:1].isdigit() else b""
            if lead.isdigit():
                pids.add(int(lead))
            m = LINE.match(line)
            if m is None:
                r = RESUMED.match(line)
                if r is not None and r.group(1) in pending:
                    i = pending.pop(r.group(1))
                    finish(writes, i, int(r.group(3)))
                continue
            s = SOCK.search(m.group(4))
            if s is None:
                continue
            rest = m.group(5)
            data = b""
            if m.group(2) in (b"write", b"sendto"):
                sm = STR.search(rest)
                data = unhex(sm.group(1)) if sm else b""
            else:
                for sm in IOV.finditer(rest):
                    part = unhex(sm.group(1))
                    # an iovec strace cut, made up to its length
                    data += part + bytes(int(sm.group(3)) - len(part))
            # A string strace cut is made up to its length with zeros:
            # only the payload of a frame too big to keep is cut.
            writes.append([int(m.group(1)), int(s.group(1)),
                           int(s.group(2)) if s.group(2) else None,
                           unhex(s.group(3)) if s.group(3) else None,
                           data, b"SCM_RIGHTS" in rest, None])
            r = RESULT.search(rest)
            if r is not None:
                finish(writes, len(writes) - 1, int(r.group(1)))
            else:
                pending[m.group(1)] = len(writes) - 1
    for w in writes:
        pids.add(w[0])
    return [w for w in writes if w[6] is not None and w[6] > 0], pids


def finish(writes, i, n):
    w = writes[i]
    if n > 0 and len(w[4]) < n:
        w[4] = w[4] + bytes(n - len(w[4]))
    w[4] = w[4][:max(n, 0)]
    w[6] = n


def frames(stream):
    """(offset, frame) for each frame of a client stream, until one
    does not hold."""
    off = 0
    while len(stream) - off >= 16:
        n, t = struct.unpack_from("<IH", stream, off)
        if n < 16 or len(stream) - off < n or t == 0 or t > 0x43:
            break
        yield off, stream[off:off + n]
        off += n


PID_RE = re.compile(rb'pid:([0-9]+)')


def self_pids(frame, pids):
    """frame with "pid:P" of a traced process as "pid:self", the string's
    and the frame's lengths fixed."""
    out, last = bytearray(), 0
    for m in PID_RE.finditer(frame):
        if int(m.group(1)) not in pids or m.start() < 18:
            continue
        slen = struct.unpack_from("<H", frame, m.start() - 2)[0]
        if slen < len(m.group(0)) or m.start() + slen > len(frame):
            continue
        out += frame[last:m.start() - 2]
        out += struct.pack("<H", slen - len(m.group(0)) + 8) + b"pid:self"
        last = m.end()
    if last == 0:
        return frame
    out += frame[last:]
    struct.pack_into("<I", out, 0, len(out))
    return bytes(out)


def client_streams(writes):
    """For each client socket: its frames, each with the index of the
    write that carried its first byte and whether a descriptor came
    with that write; and the broker instance (socket path) it spoke to."""
    by_ino, path_of = {}, {}
    for i, w in enumerate(writes):
        by_ino.setdefault(w[1], []).append(i)
        if w[2] is not None and w[3] is not None:
            path_of[w[2]] = w[3]    # the broker's end names its peer
    out = {}
    for ino, idx in by_ino.items():
        stream = b"".join(writes[i][4] for i in idx)
        if len(stream) < 24 or stream[4:6] != b"\x01\x00" or \
                stream[16:20] != HELLO_MAGIC:
            continue
        starts, pos = [], 0
        for i in idx:
            starts.append((pos, i, writes[i][5]))
            pos += len(writes[i][4])
        fr, k = [], 0
        for off, frame in frames(stream):
            while k + 1 < len(starts) and starts[k + 1][0] <= off:
                k += 1
            fr.append((starts[k][1], starts[k][2] and starts[k][0] == off,
                       frame))
        out[ino] = (path_of.get(ino, b"?"), fr)
    return out


def group_seeds(writes, pids):
    """One seed per broker instance: its clients' frames in the order
    they were written, on at most three connections at once."""
    groups = {}
    for ino, (path, fr) in client_streams(writes).items():
        groups.setdefault(path, {})[ino] = fr
    seeds = []
    for path, conns in groups.items():
        events = []
        for ino, fr in conns.items():
            for widx, fd, frame in fr:
                events.append((widx, ino, fd, frame))
        events.sort(key=lambda e: e[0])
        last = {}
        for n, e in enumerate(events):
            last[e[1]] = n
        slot_of, slots, cur, seed = {}, [None] * CONNS, 0, bytearray()
        left_out = set()
        for n, (widx, ino, fd, frame) in enumerate(events):
            if len(frame) > MAX_FRAME or ino in left_out:
                continue
            if ino not in slot_of:
                free = [s for s in range(CONNS) if slots[s] is None or
                        last[slots[s]] < n]
                if not free:
                    left_out.add(ino)   # a fourth client at once
                    continue
                s = free[0]
                if slots[s] is not None:
                    seed += b"#%%c%d#%%x" % s   # the slot's old client goes
                    del slot_of[slots[s]]
                    cur = s
                slots[s], slot_of[ino] = ino, s
            piece = b""
            if slot_of[ino] != cur:
                cur = slot_of[ino]
                piece += b"#%%c%d" % cur
            if fd:
                piece += b"#%f\x01"
            piece += self_pids(frame, pids)
            if len(seed) + len(piece) > MAX_SEED:
                break
            seed += piece
        if seed:
            seeds.append(bytes(seed))
    return seeds


# --- link seeds: built, since TLS hides what brokers send each other ----

def frame(t, ident, body):
    return struct.pack("<IHHQ", 16 + len(body), t, 0, ident) + body


def s(text):
    return struct.pack("<H", len(text)) + text


def hello(ident=1):
    return frame(0x01, ident, HELLO_MAGIC + struct.pack("<HH", 1, 1))


def link_hello(name=b"127.0.0.1:7401", epoch=0x1122334455667788,
               hb=2000, ident=1, magic=HELLO_MAGIC):
    return frame(0x40, ident, magic + struct.pack("<HHQI", 1, 1, epoch, hb)
                 + s(name))


def link_send(seq, dest, payload, uid=1000, timeout=1000, flags=0, pid=4242):
    return frame(0x41, seq, struct.pack("<IIIII", timeout, flags, pid, uid,
                                        uid) + s(dest) + payload)


def ping(ident, stamp=1):
    return frame(0x42, ident, struct.pack("<Q", stamp))


def create(ident, name, mode=0o666, cap=0xffffffff):
    return frame(0x10, ident, struct.pack("<IIQI", cap, mode,
                                          0xffffffffffffffff, 0) + s(name))


def recv(ident, source, timeout=0):
    return frame(0x22, ident, struct.pack("<III", timeout, 0, 4096) +
                 s(source))


def option(ident, value=1):
    return frame(0x06, ident, struct.pack("<IQ", 1, value))


def ack(ids):
    return frame(0x25, 0, b"".join(struct.pack("<Q", i) for i in ids))


def send(ident, dest, payload, flags=0, timeout=0):
    return frame(0x20, ident, struct.pack("<II", timeout, flags) + s(dest)
                 + payload)


def credit(ident, source, n, flags=0, max_len=4096):
    return frame(0x27, ident, struct.pack("<III", n, flags, max_len) +
                 s(source))


def peek(ident, name, n=100):
    return frame(0x24, ident, struct.pack("<I", n) + s(name))


def bare(t, ident):
    return frame(t, ident, b"")


def broker_extra():
    """What the tests do not do the harness's way: descriptors passed
    with SENDs (sealed or not), a client that stops reading, a monitor,
    the direct queue across connections, closes with messages held."""
    h = hello(1)
    big = b"x" * 4000
    return [
        # memfd messages: sent on 0, received on 1 (as a descriptor),
        # streamed on 2, refused when unsealed, write-only or a pipe.
        h + create(2, b"m") + b"#%c1" + h + recv(2, b"m", 50) + b"#%c2" +
        h + credit(9, b"m", 3) + b"#%c0" + b"#%f\x02" +
        send(3, b"m", b"", 2) + b"#%f\x03" + send(4, b"m", b"", 3) +
        b"#%f\x04" + send(5, b"m", b"", 2) + b"#%f\x44" +
        send(6, b"m", b"", 2) + b"#%f\x84" + send(7, b"m", b"", 2) +
        b"#%f\xc0" + send(8, b"m", b"", 2) + b"#%f\x3f" +
        send(9, b"m", b"", 2) + send(10, b"m", b"", 2) + b"#%c1" +
        recv(3, b"m") + peek(4, b"m") + b"#%x" + b"#%c2" + ack([1]),
        # A reader that stops reading: PEEKs and a stream back up.
        h + create(2, b"p", cap=64) + b"".join(send(10 + i, b"p", big)
                                               for i in range(5)) +
        b"#%c1" + h + b"#%p" + b"".join(peek(20 + i, b"p")
                                        for i in range(40)) +
        credit(99, b"p", 100) + b"#%c0" + send(30, b"p", big, 1) +
        b"#%c1" + b"#%p" + b"#%t\x01",
        # A monitor that stops reading while others work.
        h + bare(0x34, 2) + b"#%p" + b"#%c1" + h + create(2, b"e") +
        b"".join(send(10 + i, b"e", b"y" * 100, 1) +
                 recv(100 + i, b"e") for i in range(60)) + bare(0x30, 3) +
        bare(0x32, 4) + bare(0x36, 5) + bare(0x13, 6),
        # The direct queue across connections, selective receive, a
        # wait for a process that never connects, closes with messages
        # held and a mailbox deleted under them.
        h + recv(2, b"", 0xffffffff) + b"#%c1" + h +
        send(2, b"pid:self", b"d1") + send(3, b"pid:self", b"d2", 1) +
        recv(4, b"pid:self", 0) + send(5, b"pid:1", b"w", 0, 1) +
        create(6, b"q") + send(7, b"q", b"held") + b"#%c2" + h +
        recv(2, b"q") + b"#%c1" + frame(0x12, 8, s(b"q")) + b"#%c2" +
        b"#%x" + b"#%t\x02" + b"#%c0" + ack([1, 2, 3]) +
        frame(0x16, 9, struct.pack("<II", 1000, 0xffffffff) + s(b"q")),
        # A rendezvous mailbox, waits that time out, credit ended.
        h + create(2, b"r", cap=0) + send(3, b"r", b"z", 0, 1) +
        b"#%c1" + h + credit(5, b"r", 1) + credit(5, b"r", 0, 1) +
        recv(6, b"r", 1) + b"#%t\x02" + b"#%c0" + send(7, b"r", b"z2",
                                                      0, 0xffffffff) +
        b"#%c1" + recv(8, b"r", 0xffffffff) + frame(0x15, 9,
                                                     struct.pack("<I", 0o600)
                                                     + s(b"r")),
        # Mailboxes past the table's first size, the user's quota and
        # the broker's limit; listed, given away and deleted.
        h + b"".join(create(10 + i, b"b%d" % i) for i in range(70)) +
        bare(0x13, 3) + frame(0x16, 4, struct.pack("<II", 1000, 1000) +
                              s(b"b1")) +
        b"".join(frame(0x12, 100 + i, s(b"b%d" % i)) for i in range(0, 70, 3)),
    ]


def remote_sends(writes, pids):
    """(dest, payload) of the SENDs the tests' clients addressed to
    another host: what their broker put on its links."""
    out = []
    for ino, (path, fr) in client_streams(writes).items():
        for widx, fd, f in fr:
            if struct.unpack_from("<H", f, 4)[0] != 0x20 or len(f) > MAX_FRAME:
                continue
            dlen = struct.unpack_from("<H", f, 24)[0]
            dest = f[26:26 + dlen]
            if b"@" not in dest:
                continue
            local = dest.split(b"@")[0]
            if local.startswith(b"pid:") and local[4:].isdigit() and \
                    int(local[4:]) in pids:
                local = b"pid:self"
            out.append((widx, local, f[26 + dlen:]))
    out.sort()
    return [(d, p) for _, d, p in out]


def link_seeds(writes, pids):
    """Links from another broker (connection 0 or 1, as "fuzz-peer"),
    carrying the messages the tests sent to other hosts, to mailboxes a
    local client (connection 2) made and reads; remote clients (a TCP
    connection whose first frame is HELLO) replaying the tests' clients;
    and the handshake's and the link's edges."""
    seeds = []
    sends = remote_sends(writes, pids)
    # Messages over a link, in batches of the tests' order.
    for k in range(0, min(len(sends), 48), 8):
        batch = sends[k:k + 8]
        boxes = sorted({d for d, _ in batch if not d.startswith(b"pid:")})
        seed = b"#%c2" + hello(1) + option(2)
        for i, b in enumerate(boxes):
            seed += create(10 + i, b)
        seed += b"#%c0" + link_hello()
        for i, (d, p) in enumerate(batch):
            seed += link_send(1 + i, d, p[:4096])
        seed += ping(0)
        seed += b"#%c2"
        for i, b in enumerate(boxes):
            seed += recv(100 + i, b)
        seed += recv(200, b"") + ack(range(1, 9))
        seeds.append(seed)
    # Remote clients: the tests' client streams on a TCP connection.
    # (Its connections 0 and 1 trade places: 1 first, 0 the other TCP
    # one, 2 a local client.)
    swap = {b"0": b"1", b"1": b"0", b"2": b"2"}
    for stream in group_seeds(writes, pids)[:16]:
        seeds.append(b"#%c1" + re.sub(rb"#%c([012])",
                                      lambda m: b"#%c" + swap[m.group(1)],
                                      stream))
    return seeds


def link_extra():
    """The handshake and the link's edges, one each."""
    box = b"#%c2" + hello(1) + create(2, b"jobs")
    return [
        box + b"#%c0" + link_hello() + link_send(1, b"jobs", b"hi") +
        link_send(1, b"jobs", b"hi") + ping(0) + link_send(2, b"jobs",
                                                            b"x" * 100),
        box + b"#%c0" + link_hello() + link_send(1, b"jobs", b"a") +
        b"#%c1" + link_hello() + link_send(1, b"jobs", b"a") +
        link_send(2, b"jobs", b"b"),
        b"#%c0" + link_hello(magic=b"IPC2"),
        b"#%c0" + link_hello(name=b""),
        b"#%c0" + link_hello(hb=0xffffffff) + link_send(0, b"jobs", b""),
        box + b"#%c0" + link_hello() + link_send(5, b"jobs", b"", flags=1) +
        link_send(6, b"pid:self", b"d") + link_send(7, b"jobs@elsewhere",
                                                    b"e") +
        frame(0x05, 0, struct.pack("<I", 14) + s(b"bye")),
        b"#%c2" + hello(1) + option(2) + create(3, b"full", cap=0) +
        b"#%c0" + link_hello() + link_send(1, b"pid:self", b"direct") +
        link_send(2, b"full", b"r", timeout=0xffffffff) + b"#%c2" +
        recv(4, b"full") + recv(5, b"") + b"#%x",
        b"#%c1" + hello(1) + create(2, b"remote") +
        frame(0x20, 3, struct.pack("<II", 0, 0) + s(b"remote") + b"m") +
        recv(4, b"remote") + recv(5, b"") + option(6) +
        frame(0x20, 7, struct.pack("<II", 0, 2) + s(b"remote")),
        # A peer whose heartbeat is 1 ms goes silent; a TCP peer that
        # never says who it is.
        box + b"#%c0" + link_hello(hb=1) + ping(1) + b"#%t\x02" +
        b"#%c1" + hello(1)[:10] + b"#%t\x02",
    ]


def main():
    kind, outdir, traces = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(outdir, exist_ok=True)
    n = 0
    for t in traces:
        writes, pids = parse(t)
        name = os.path.basename(t).rsplit(".", 1)[0]
        seeds = group_seeds(writes, pids) if kind == "broker" else \
            link_seeds(writes, pids)
        for i, seed in enumerate(seeds):
            with open(os.path.join(outdir, "%s-%03d" % (name, i)), "wb") as f:
                f.write(seed)
            n += 1
    for i, seed in enumerate(broker_extra() if kind == "broker" else
                             link_extra()):
        with open(os.path.join(outdir, "extra-%03d" % i), "wb") as f:
            f.write(seed)
        n += 1
    print("seeds.py: %d %s seeds in %s" % (n, kind, outdir))


if __name__ == "__main__":
    main()
