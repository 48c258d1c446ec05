#!/usr/bin/env python3
"""Checks the --json output of ipcctl against its documented fields.

Usage: ipcctl_check.py KIND [OPTIONS] < OUTPUT

KIND is the command whose output is read:
  ls, stat, send, recv, peek, ps, stats,  one JSON document
  links, keygen                           (links: an array, not an object)
  monitor, follow                         one JSON object per line
                                          (monitor --json, recv --follow --json)

Every entry must carry every documented field with the documented type,
and every key must be snake_case.  Then, on the entries (the mailboxes,
messages, processes, events, links; stat, send and keygen have exactly
one):

  --where KEY=VALUE   select the entries whose KEY equals VALUE (repeatable,
                      all must hold); VALUE is read as JSON when it parses
                      (3, true, "0640"), else as a string (jobs, pid:12)
  --count N           exactly N entries are selected
  --absent            no entry is selected
  --expect KEY=VALUE  the first selected entry has KEY equal to VALUE
                      (same reading of VALUE; types must match too)
  --payload FILE      the first selected message's payload_base64 decodes
                      to exactly FILE's bytes (--payloads F1,F2,...: the
                      selected messages in order)
  --counter NAME=N    stats: counter NAME has value N
  --print KEY         print the first selected entry's KEY on stdout

Exits 0 when every check holds; else prints what is wrong on stderr and
exits 1 (2 for a usage error of this script).
"""
import base64
import json
import re
import sys
import time

MAILBOX = {
    "name": str, "uuid": str, "depth": int, "bytes": int, "capacity": int,
    "max_bytes": int, "waiting_receivers": int, "waiting_senders": int,
    "uid": int, "gid": int, "owner": str, "group": str, "mode": str,
    "messages_in": int, "messages_out": int, "created_ns": int,
    "durable": bool,
}
MESSAGE = {
    "id": int, "pid": int, "uid": int, "gid": int, "sender": str,
    "source": str, "len": int, "enqueue_ns": int, "redelivered": bool,
    "payload_base64": str,
}
PROCESS = {
    "pid": int, "uid": int, "command": str, "connections": int,
    "queue_depth": int, "messages_sent": int, "messages_received": int,
}
EVENT = {
    "time_ns": int, "event": str, "pid": int, "uid": int, "subject": str,
    "msg_id": int, "len": int, "error": object,
}


class Nullable:
    """A field that is null or of type t."""

    def __init__(self, t):
        self.t = t

    def __repr__(self):
        return "%s or null" % self.t.__name__


LINK = {
    "direction": str, "state": str, "peer": str, "identity": str,
    "queued": int, "in_flight": int, "messages_out": int,
    "messages_in": int, "failed": int, "reconnects": int,
    "rtt_us": Nullable(int), "last_error": Nullable(str),
}
KEYGEN = {"identity": str, "file": str}
LINK_STATES = {"down", "connecting", "up"}
IDENTITY = re.compile(r"^[A-Za-z0-9._@:-]{1,128}$")
EVENTS = {"connect", "disconnect", "create", "delete", "send", "receive",
          "error", "dropped"}
COUNTERS = ("messages_in", "messages_out", "connections", "mailboxes",
            "uptime_ms")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                  r"[0-9a-f]{12}$")
MODE = re.compile(r"^0[0-7]{3}$")
DAY_NS = 86400 * 10**9

errors = []


def bad(msg):
    errors.append(msg)


def same(a, b):
    """Equal and of the same JSON type (True is not 1, 1 is not "1")."""
    return type(a) is type(b) and a == b


def value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def pair(text):
    if "=" not in text:
        usage("expected KEY=VALUE, got %r" % text)
    k, v = text.split("=", 1)
    return k, value(v)


def usage(msg):
    sys.stderr.write("ipcctl_check.py: %s\n" % msg)
    sys.exit(2)


def keys_snake(obj, where):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not SNAKE.match(k):
                bad("%s: key %r is not snake_case" % (where, k))
            keys_snake(v, "%s.%s" % (where, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            keys_snake(v, "%s[%d]" % (where, i))


def typed(entry, schema, where):
    if not isinstance(entry, dict):
        bad("%s: not an object: %r" % (where, entry))
        return False
    ok = True
    for k, t in schema.items():
        if k not in entry:
            bad("%s: no field %r (has %s)" % (where, k, sorted(entry)))
            ok = False
        elif isinstance(t, Nullable):
            v = entry[k]
            if v is not None and (type(v) is not t.t or
                                  (t.t is int and v < 0)):
                bad("%s: %s is %r, not %r" % (where, k, v, t))
                ok = False
        elif t is int and (type(entry[k]) is not int or entry[k] < 0):
            bad("%s: %s is %r, not a non-negative integer"
                % (where, k, entry[k]))
            ok = False
        elif t is not object and t is not int and type(entry[k]) is not t:
            bad("%s: %s is %r, not a %s" % (where, k, entry[k], t.__name__))
            ok = False
    if not ok:
        return False
    now = time.time_ns()
    for k in schema:
        if k.endswith("_ns") and abs(entry[k] - now) > DAY_NS:
            bad("%s: %s=%d is not within a day of now (%d): not "
                "CLOCK_REALTIME nanoseconds?" % (where, k, entry[k], now))
    if schema is MAILBOX:
        if not UUID.match(entry["uuid"]):
            bad("%s: uuid %r is not a UUID" % (where, entry["uuid"]))
        if not MODE.match(entry["mode"]):
            bad("%s: mode %r is not like \"0600\"" % (where, entry["mode"]))
    if schema is MESSAGE:
        try:
            data = base64.b64decode(entry["payload_base64"], validate=True)
            if len(data) != entry["len"]:
                bad("%s: len %d but payload_base64 holds %d bytes"
                    % (where, entry["len"], len(data)))
        except ValueError as e:
            bad("%s: payload_base64 is not base64: %s" % (where, e))
    if schema is LINK:
        if entry["direction"] not in ("in", "out"):
            bad("%s: direction %r is not \"in\" or \"out\""
                % (where, entry["direction"]))
        if entry["state"] not in LINK_STATES:
            bad("%s: state %r is not one of %s"
                % (where, entry["state"], sorted(LINK_STATES)))
    if schema is KEYGEN and not IDENTITY.match(entry["identity"]):
        bad("%s: identity %r is not an identity" % (where, entry["identity"]))
    if schema is EVENT and entry["event"] not in EVENTS:
        bad("%s: event %r is not one of %s"
            % (where, entry["event"], sorted(EVENTS)))
    return True


def one_document(text):
    try:
        return json.loads(text)
    except ValueError as e:
        bad("output is not one JSON document: %s; output: %r"
            % (e, text[:500]))
        return None


def listed(doc, key, schema):
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        bad("expected {\"%s\": [...]}, got %r" % (key, str(doc)[:300]))
        return []
    return [e for i, e in enumerate(doc[key])
            if typed(e, schema, "%s[%d]" % (key, i))]


def lines(text, schema, what):
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            bad("line %d is not JSON (%s): %r" % (n, e, line[:300]))
            continue
        keys_snake(obj, "line %d" % n)
        # recv --follow --json: one message per line; accept the message
        # itself or a {"messages": [it]} wrapper, the contract says only
        # "one JSON object per line".
        if what == "follow" and isinstance(obj, dict) and "messages" in obj \
                and isinstance(obj["messages"], list):
            for i, m in enumerate(obj["messages"]):
                if typed(m, schema, "line %d messages[%d]" % (n, i)):
                    out.append(m)
        elif typed(obj, schema, "line %d" % n):
            out.append(obj)
    return out


def main(argv):
    if len(argv) < 2:
        usage("no KIND")
    kind = argv[1]
    where, expect, counters, payloads = [], [], [], None
    single_payload = False
    count, absent, prints = None, False, []
    args = argv[2:]
    i = 0
    while i < len(args):
        a = args[i]
        arg = args[i + 1] if i + 1 < len(args) else None
        if a == "--absent":
            absent = True
            i += 1
            continue
        if arg is None:
            usage("%s needs an argument" % a)
        if a == "--where":
            where.append(pair(arg))
        elif a == "--expect":
            expect.append(pair(arg))
        elif a == "--counter":
            counters.append(pair(arg))
        elif a == "--count":
            count = int(arg)
        elif a == "--payload":
            payloads, single_payload = [arg], True
        elif a == "--payloads":
            payloads = arg.split(",") if arg else []
            single_payload = False
        elif a == "--print":
            prints.append(arg)
        else:
            usage("unknown option %s" % a)
        i += 2

    text = sys.stdin.buffer.read().decode("utf-8", "replace")
    entries = []
    if kind in ("monitor", "follow"):
        entries = lines(text, EVENT if kind == "monitor" else MESSAGE, kind)
        if not entries and not errors:
            bad("no JSON line at all")
    else:
        doc = one_document(text)
        if doc is None:
            return report()
        keys_snake(doc, "$")
        if kind == "ls":
            entries = listed(doc, "mailboxes", MAILBOX)
        elif kind == "stat":
            entries = [doc] if typed(doc, MAILBOX, "stat") else []
        elif kind == "send":
            if isinstance(doc, dict) and type(doc.get("id")) is int:
                entries = [doc]
            else:
                bad("expected {\"id\": N}, got %r" % doc)
        elif kind in ("recv", "peek"):
            entries = listed(doc, "messages", MESSAGE)
        elif kind == "ps":
            entries = listed(doc, "processes", PROCESS)
        elif kind == "links":
            if not isinstance(doc, list):
                bad("expected a JSON array [...], got %r" % str(doc)[:300])
                return report()
            entries = [e for i, e in enumerate(doc)
                       if typed(e, LINK, "[%d]" % i)]
        elif kind == "keygen":
            entries = [doc] if typed(doc, KEYGEN, "keygen") else []
        elif kind == "stats":
            c = doc.get("counters") if isinstance(doc, dict) else None
            if not isinstance(c, dict):
                bad("expected {\"counters\": {...}}, got %r" % str(doc)[:300])
                return report()
            for k, v in c.items():
                if type(v) is not int or v < 0:
                    bad("counter %s is %r, not a non-negative integer"
                        % (k, v))
            for k in COUNTERS:
                if k not in c:
                    bad("no counter %s (has %s)" % (k, sorted(c)))
            for k, v in counters:
                if not same(c.get(k), v):
                    bad("counter %s is %r, expected %r" % (k, c.get(k), v))
            entries = [c]
        else:
            usage("unknown KIND %s" % kind)

    sel = [e for e in entries if all(same(e.get(k), v) for k, v in where)]
    desc = " and ".join("%s=%r" % kv for kv in where) or "any"
    if absent and sel:
        bad("expected no entry with %s, found %r" % (desc, sel))
    if count is not None and len(sel) != count:
        bad("expected %d entries with %s, found %d: %r"
            % (count, desc, len(sel), sel))
    if (expect or prints or payloads) and not sel:
        bad("no entry with %s among %r" % (desc, entries))
        return report()
    for k, v in expect:
        if not same(sel[0].get(k), v):
            bad("%s: %s is %r, expected %r" % (desc, k, sel[0].get(k), v))
    if payloads is not None:
        if single_payload:
            sel = sel[:1]
        if len(sel) != len(payloads):
            bad("%d messages selected, %d payloads expected"
                % (len(sel), len(payloads)))
        for m, f in zip(sel, payloads):
            with open(f, "rb") as fp:
                want = fp.read()
            got = base64.b64decode(m.get("payload_base64", ""))
            if got != want:
                bad("message %r: payload %r, expected %r (from %s)"
                    % (m.get("id"), got[:64], want[:64], f))
    if not errors:
        for k in prints:
            v = sel[0].get(k)
            print(v if isinstance(v, str) else json.dumps(v))
    return report()


def report():
    for e in errors:
        sys.stderr.write("json check: %s\n" % e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
