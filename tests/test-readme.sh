#!/bin/sh
# The C example of README.md (the ```c block after the line
# "<!-- readme-example: producer-consumer.c -->") compiles against the
# build tree without a warning, and runs against a private ipcd: run as a
# consumer and as a producer, the consumer gets every job, in order, from
# the producer's pid, and both exit 0.  Prints cmocka's report format for
# tests/cmocka-driver.
set -u
: "${top_builddir:=.}" "${top_srcdir:=.}"
name=readme_example_compiles_and_runs
readme=$top_srcdir/README.md
libdir=$top_builddir/libipc/.libs
dir=$(mktemp -d "${TMPDIR:-/tmp}/readme-test.XXXXXX") || exit 1
ipcd_pid=
cleanup() {
	if [ -n "$ipcd_pid" ]; then
		kill "$ipcd_pid" 2>/dev/null
		wait "$ipcd_pid" 2>/dev/null
	fi
	exec 3<&- 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' HUP INT PIPE TERM

fail() {
	echo "$*"
	echo "[  FAILED  ] $name"
	exit 1
}

echo "[ RUN      ] $name"
awk '
/^<!-- readme-example: producer-consumer\.c -->$/ { marked = 1; next }
marked && !inside && /^```c$/ { inside = 1; next }
marked && !inside && !/^[[:space:]]*$/ { exit 1 }	# the block must follow
inside && /^```$/ { done = 1; exit }
inside { print }
END { exit !done }' "$readme" >"$dir/producer-consumer.c" ||
    fail "no \`\`\`c block right after the marker comment in $readme"

if [ -f "$libdir/libipc.so" ]; then
	lib="$libdir/libipc.so -Wl,-rpath,$libdir"
elif [ -f "$libdir/libipc.a" ]; then
	lib="$libdir/libipc.a -luuid"
else
	fail "no libipc.so or libipc.a in $libdir"
fi
# A library built with --enable-sanitizers needs the runtimes linked in.
san=$(sed -n 's/^SAN_LDFLAGS = //p' "$top_builddir/Makefile" 2>/dev/null)
# shellcheck disable=SC2086 # $lib and $san are several words on purpose
if ! timeout 60 ${CC:-cc} -Wall -Wextra -Werror $san \
    -I"$top_srcdir/libipc" "$dir/producer-consumer.c" $lib \
    -o "$dir/producer-consumer" \
    >"$dir/cc.log" 2>&1; then
	cat "$dir/cc.log"
	fail "the README example does not compile"
fi

mkfifo "$dir/ready"
"$top_builddir/daemon/ipcd" --socket "$dir/ipcd.sock" >"$dir/ready" \
    2>"$dir/ipcd.log" &
ipcd_pid=$!
ready=$(timeout 10 sed -n '/^ipcd: ready on /{p;q;}' "$dir/ready")
exec 3<"$dir/ready"	# keep the pipe open for the broker
[ -n "$ready" ] || { cat "$dir/ipcd.log"; fail "ipcd did not start"; }

# As the README runs it: a consumer in the background, then a producer;
# sh -c tells the producer's pid, which the consumer must report.
sock=unix:$dir/ipcd.sock
timeout 30 "$dir/producer-consumer" consume "$sock" >"$dir/cons.out" \
    2>"$dir/cons.err" &
cons=$!
timeout 30 sh -c 'echo $$ >"$0"; exec "$@"' "$dir/pid" \
    "$dir/producer-consumer" produce "$sock" >"$dir/prod.out" 2>"$dir/prod.err"
prod_status=$?
wait "$cons"	# bounded by its timeout
cons_status=$?
pid=$(cat "$dir/pid")
: >"$dir/want.cons"
: >"$dir/want.prod"
for i in 1 2 3 4 5; do
	echo "consumer: job $i from pid $pid" >>"$dir/want.cons"
	echo "producer: sent job $i" >>"$dir/want.prod"
done
if [ $prod_status -ne 0 ] || [ $cons_status -ne 0 ] ||
    ! cmp -s "$dir/want.cons" "$dir/cons.out" ||
    ! cmp -s "$dir/want.prod" "$dir/prod.out"; then
	echo "producer: exit status $prod_status"
	echo "consumer: exit status $cons_status"
	for r in prod cons; do
		echo "$r stdout:"; cat "$dir/$r.out"
		echo "$r stderr:"; cat "$dir/$r.err"
		echo "$r expected stdout:"; cat "$dir/want.$r"
	done
	fail "the README example did not pass its messages"
fi
echo "[       OK ] $name"
