#!/bin/sh
# Ordinary clients (socat, nc) against both echo servers: every byte comes
# back and the server closes when the client does.  Prints cmocka's report
# format for tests/cmocka-driver; skips a tool the machine lacks.
set -u
server=$top_builddir/tools/echo-server
dir=$(mktemp -d "${TMPDIR:-/tmp}/ipctest.XXXXXX") || exit 1
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
# 200 KiB of every byte value, more than one socket buffer.
head -c 204800 /dev/urandom >"$dir/in"
failed=0

# start MODE: starts the server, waits (10 s at most) for its ready line,
# sets pid and port.
start() {
	rm -f "$dir/ready"
	mkfifo "$dir/ready"
	"$server" $1 --bind 127.0.0.1 0 >"$dir/ready" 2>"$dir/server.log" &
	pid=$!
	port=$(timeout 10 sed -n 's/^echo-server: listening on port //p;q' "$dir/ready")
	exec 3<"$dir/ready"	# keep the pipe open for the server
	[ -n "$port" ]
}
stop() {
	kill "$pid"; wait "$pid"; pid=
	exec 3<&-
}

check() {	# NAME CLIENT-COMMAND...
	name=$1; shift
	echo "[ RUN      ] $name"
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "$1 is not installed"
		echo "[  SKIPPED ] $name"
		return
	fi
	if timeout 20 "$@" <"$dir/in" >"$dir/out" 2>"$dir/err" &&
	    cmp -s "$dir/in" "$dir/out"; then
		echo "[       OK ] $name"
	else
		echo "client said:"; cat "$dir/err"
		echo "got $(wc -c <"$dir/out") of $(wc -c <"$dir/in") bytes back"
		echo "[  FAILED  ] $name"
		failed=1
	fi
}

for mode in iterative fork; do
	flag=; [ $mode = fork ] && flag=--fork
	if ! start "$flag"; then
		echo "echo-server $flag did not start:"; cat "$dir/server.log"
		exit 1
	fi
	# socat: half-closes on EOF and waits for the rest (-t: how long).
	check "socat_echoes_every_byte_$mode" socat -t 10 - "TCP:127.0.0.1:$port"
	# OpenBSD nc: -N shuts the socket down at end of input.
	check "nc_echoes_every_byte_$mode" nc -N 127.0.0.1 "$port"
	stop
done
exit $failed
