#!/bin/sh
# seeds.sh - remake fuzz/corpus/broker and fuzz/corpus/link, the seeds of
# fuzz-broker and fuzz-link, from the frames the tests produce.
#
#   sh fuzz/seeds.sh [FUZZ_BUILD_DIR]
#
# Run it from the top of a built tree (the test programs of make check:
# tests/test-broker, test-direct, test-stream, test-remote, and
# daemon/ipcd).  It needs strace (Debian package strace) and python3.
# The tests run under strace, which records what every client wrote to
# its broker; fuzz/seeds.py turns each broker instance's clients into one
# seed (see its header).  Links between brokers are TLS, so their frames
# cannot be read off the wire: the link seeds are built by seeds.py to
# doc/protocol.md, carrying the messages the tests sent to other hosts,
# plus the tests' client streams replayed as remote clients.
#
# With FUZZ_BUILD_DIR, a tree configured with CC=clang --enable-fuzzers
# and its fuzz/fuzz-broker and fuzz/fuzz-link built, each corpus is
# minimised with libFuzzer's -merge=1 -use_counters=0 (only inputs that
# add an edge are kept).  Files named regress-* (inputs that found bugs)
# are kept as they are.
set -eu

top=$(pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
fz=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

command -v strace >/dev/null || {
	echo "seeds.sh: strace is missing (apt-get install strace)" >&2
	exit 1
}
for t in test-broker test-direct test-stream test-remote; do
	echo "seeds.sh: tests/$t under strace"
	# Large payloads are cut at 8 KiB: seeds leave such frames out.
	top_builddir=$top top_srcdir=$src strace -f -yy -xx -s 8192 \
	    -e trace=write,writev,sendmsg,sendto -o "$tmp/$t.trace" \
	    "$top/tests/$t" > "$tmp/$t.log" 2>&1 ||
	    echo "seeds.sh: $t failed under strace (slower there); its" \
		"frames are used all the same" >&2
done
python3 "$src/fuzz/seeds.py" broker "$tmp/broker" "$tmp"/test-*.trace
python3 "$src/fuzz/seeds.py" link "$tmp/link" "$tmp"/test-*.trace

for n in broker link; do
	from=$tmp/$n
	if [ -n "$fz" ] && [ -x "$fz/fuzz/fuzz-$n" ]; then
		mkdir "$tmp/min-$n"
		"$fz/fuzz/fuzz-$n" -merge=1 -use_counters=0 "$tmp/min-$n" "$from" \
		    > "$tmp/merge-$n.log" 2>&1 || {
			cat "$tmp/merge-$n.log" >&2
			exit 1
		}
		from=$tmp/min-$n
	fi
	mkdir -p "$src/fuzz/corpus/$n"
	find "$src/fuzz/corpus/$n" -type f ! -name 'regress-*' -delete
	cp "$from"/* "$src/fuzz/corpus/$n/"
	echo "seeds.sh: $(ls "$src/fuzz/corpus/$n" | wc -l) seeds in" \
	    "fuzz/corpus/$n"
done
