#!/bin/sh
# tools/ipcctl against a private ipcd, to its command-line contract: every
# command, its text and --json output (checked with tests/ipcctl_check.py),
# its errors and exit codes (0 done, 1 broker or system error, 2 usage),
# binary payloads, monitor and top, links between brokers (two more
# brokers on TCP with a key file from keygen) and keygen.  Prints cmocka's report format for
# tests/cmocka-driver.  IPCCTL picks another ipcctl binary.
set -u
: "${top_builddir:=.}" "${top_srcdir:=.}"
IPCCTL=${IPCCTL:-$top_builddir/tools/ipcctl}
PYTHON=${PYTHON:-python3}
ipcd=$top_builddir/daemon/ipcd
checker=$top_srcdir/tests/ipcctl_check.py

if [ ! -x "$IPCCTL" ]; then
	echo "no ipcctl at $IPCCTL"
	exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/ipcctl-test.XXXXXX") || exit 1
sock=$dir/ipcd.sock
out=$dir/out
err=$dir/err
ipcd_pid=
more_ipcd=	# pids of the other brokers started by start_broker
bg_pids=
tmux_sock=$dir/tmux.sock
cleanup() {
	# Each background job runs under timeout(1), which passes the signal
	# on and sends KILL 5 s later: the waits below are bounded.
	for p in $bg_pids; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	if [ -S "$tmux_sock" ]; then
		timeout 5 tmux -S "$tmux_sock" kill-server 2>/dev/null
	fi
	for p in $more_ipcd $ipcd_pid; do
		stop_broker "$p"
	done
	exec 3<&- 2>/dev/null
	rm -rf "$dir"
}
# stop_broker PID: SIGTERM to a broker we started, then wait for it (10 s
# at most, then KILL).
stop_broker() {
	kill "$1" 2>/dev/null
	timeout 10 sh -c 'while kill -0 "$0" 2>/dev/null; do sleep 0.05
	    done' "$1" || kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' HUP INT PIPE TERM

# --- the broker ---------------------------------------------------------------
# A long --direct-wait: a message to the pid: of a process that is still
# starting waits for it to connect instead of failing with ESRCH.
mkfifo "$dir/ready"
"$ipcd" --socket "$sock" --direct-wait 20000 >"$dir/ready" 2>"$dir/ipcd.log" &
ipcd_pid=$!
ready=$(timeout 10 sed -n '/^ipcd: ready on /{p;q;}' "$dir/ready")
exec 3<"$dir/ready"	# keep the pipe open for the broker
if [ -z "$ready" ]; then
	echo "ipcd did not start:"; cat "$dir/ipcd.log"
	exit 1
fi

have_py=false
if "$PYTHON" -c 'import json, base64' 2>/dev/null; then
	have_py=true
fi

# --- helpers ---------------------------------------------------------------
failed=0
tcase() {	# NAME: runs test_NAME and reports it
	echo "[ RUN      ] $1"
	"test_$1"
	case $? in
	0) echo "[       OK ] $1" ;;
	77) echo "[  SKIPPED ] $1" ;;
	*) echo "[  FAILED  ] $1"; failed=1 ;;
	esac
}

show() {	# prints what the last command printed
	echo "stdout:"; head -c 2000 "$out" | cat -v; echo
	echo "stderr:"; head -c 2000 "$err" | cat -v; echo
}

# run_in FILE STATUS CMD...: runs CMD (30 s at most) with stdin from FILE,
# stdout in $out and stderr in $err; says why and fails unless CMD exited
# with STATUS.
run_in() {
	_in=$1 _want=$2; shift 2
	timeout 30 "$@" <"$_in" >"$out" 2>"$err"
	_got=$?
	[ "$_got" -eq "$_want" ] && return 0
	echo "\`$*\` exited $_got, expected $_want"
	show
	return 1
}
run() { run_in /dev/null "$@"; }
# ctl STATUS ARGS...: ipcctl -s SOCKET ARGS...
ctl() { _st=$1; shift; run_in /dev/null "$_st" "$IPCCTL" -s "$sock" "$@"; }
ctl_in() {	# FILE STATUS ARGS...: the same, stdin from FILE
	_f=$1 _st=$2; shift 2
	run_in "$_f" "$_st" "$IPCCTL" -s "$sock" "$@"
}
# ctl_pid STATUS ARGS...: the same, and sets spid to ipcctl's pid.
ctl_pid() {
	_st=$1; shift
	run_in /dev/null "$_st" sh -c 'echo $$ >"$0"; exec "$@"' "$dir/spid" \
	    "$IPCCTL" -s "$sock" "$@" || return 1
	spid=$(cat "$dir/spid")
}

out_has() {	# ERE: a line of stdout matches
	grep -Eq -e "$1" "$out" && return 0
	echo "stdout has no line matching /$1/"; show; return 1
}
err_has() {	# ERE: a line of stderr matches
	grep -Eq -e "$1" "$err" && return 0
	echo "stderr has no line matching /$1/"; show; return 1
}
out_empty() {
	[ ! -s "$out" ] && return 0
	echo "stdout should be empty"; show; return 1
}
same_bytes() {	# FILE: stdout holds exactly FILE's bytes
	cmp "$1" "$out" && return 0
	echo "got $(wc -c <"$out") bytes, expected $(wc -c <"$1")"
	return 1
}
header() {	# the first line of stdout, its blanks squeezed
	head -n 1 "$out" | tr -s ' \t' ' ' | sed 's/^ //; s/ $//'
}
eq() {	# WHAT GOT WANT
	[ "$2" = "$3" ] && return 0
	echo "$1: got '$2', expected '$3'"; return 1
}

need_py() {
	$have_py && return 0
	echo "$PYTHON is not installed: cannot check --json"
	return 1
}
# json KIND ARGS...: checks stdout with ipcctl_check.py (see there).
json() {
	"$PYTHON" "$checker" "$@" <"$out" && return 0
	show; return 1
}
# jval KIND KEY [ARGS...]: prints field KEY of the selected entry.
jval() {
	_k=$1 _key=$2; shift 2
	"$PYTHON" "$checker" "$_k" "$@" --print "$_key" <"$out"
}

# cell HEADER-WORD KEY-VALUE: from a table on stdout (header on the first
# line that holds HEADER-WORD), the HEADER-WORD column of the row whose
# first column is KEY-VALUE.
cell() {
	awk -v col="$1" -v key="$2" '
	!c { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
	$1 == key { print $c; exit }' "${3:-$out}"
}

# spawn NAME CMD...: starts CMD in the background under timeout(1) (60 s;
# after a signal, which timeout passes on, 5 s more, then KILL), stdout in
# $dir/NAME.out, stderr in $dir/NAME.err.  Sets bg (timeout's pid: signal
# it, wait for it) and cpid (CMD's own pid).
# Stop a spawned program by signalling it ($cpid), not timeout(1) ($bg):
# timeout passes a signal on to the program and then to its whole group,
# and LeakSanitizer, checking for leaks as the program exits, can hang
# for good when that second signal lands in the middle (seen in the
# --enable-sanitizers pass).
spawn() {
	_name=$1; shift
	rm -f "$dir/pidfifo"
	mkfifo "$dir/pidfifo"
	timeout -k 5 60 sh -c 'echo $$ >"$0"; exec "$@"' "$dir/pidfifo" "$@" \
	    </dev/null >"$dir/$_name.out" 2>"$dir/$_name.err" &
	bg=$!
	bg_pids="$bg_pids $bg"
	cpid=$(timeout 10 cat "$dir/pidfifo")
}
# finish: waits for the last spawned job (bounded by its timeout); sets st.
finish() {
	wait "$bg"
	st=$?
	bg_pids=$(echo "$bg_pids" | sed "s/ $bg\$//; s/ $bg / /")
}

# wait_file FILE ERE [SECONDS]: waits until a line of FILE matches.
wait_file() {
	timeout "${3:-10}" sh -c \
	    'until grep -Eq -e "$1" "$0" 2>/dev/null; do sleep 0.05; done' \
	    "$1" "$2" && return 0
	echo "no line matching /$2/ in $1 within ${3:-10} s:"
	cat -v "$1"
	return 1
}

# monitor_ready FILE PROBE-ARGS...: a monitor writing to FILE is listening
# once it reports something: repeat the probe request (10 s at most) until
# FILE is not empty.
monitor_ready() {
	_f=$1; shift
	timeout 10 sh -c 'until [ -s "$0" ]; do "$@" >/dev/null 2>&1
	    sleep 0.05; done' "$_f" "$IPCCTL" -s "$sock" "$@" && return 0
	echo "the monitor printed nothing within 10 s; stderr:"
	cat "$dir/mon.err"
	return 1
}

# --- help, version, usage errors -------------------------------------------
commands="ls stat create rm chmod chown send recv peek ps monitor stats top
links keygen"

test_version_prints_and_exits_0() {
	for o in -V --version; do
		run 0 "$IPCCTL" $o || return 1
		out_has 'ipcctl.*[0-9]+\.[0-9]+' || return 1
	done
}

test_help_prints_usage_and_exits_0() {
	for o in -h --help; do
		run 0 "$IPCCTL" $o || return 1
		for c in $commands; do
			out_has "\\b$c\\b" || return 1
		done
	done
}

test_command_help_exits_0_without_broker() {
	for c in $commands; do
		run 0 "$IPCCTL" -s "$dir/none.sock" "$c" --help || return 1
		out_has "$c" || return 1
		run 0 "$IPCCTL" -s "$dir/none.sock" help "$c" || return 1
		out_has "$c" || return 1
	done
}

test_no_broker_exits_1() {
	ctl 0 create nb1 || return 1
	run 1 "$IPCCTL" -s "$dir/none.sock" ls || return 1
	err_has "^ipcctl: no broker at $dir/none.sock" || return 1
	run 1 env IPC_SOCKET="$dir/none.sock" "$IPCCTL" stat nb1 || return 1
	err_has "^ipcctl: no broker at $dir/none.sock" || return 1
	out_empty
}

test_socket_from_environment_and_options() {
	ctl 0 create env1 || return 1
	run 0 env IPC_SOCKET="$sock" "$IPCCTL" stat env1 || return 1
	# -s wins over $IPC_SOCKET, and may follow the command.
	run 0 env IPC_SOCKET="$dir/none.sock" "$IPCCTL" --socket "$sock" \
	    stat env1 || return 1
	run 0 env IPC_SOCKET="$dir/none.sock" "$IPCCTL" stat env1 -s "$sock" ||
	    return 1
	run 0 "$IPCCTL" ls --socket "$sock" || return 1
	out_has '^env1[[:space:]]'
}

test_unknown_command_exits_2() {
	ctl 2 frobnicate || return 1
	err_has 'frobnicate' || return 1
	# A usage error is found before any broker is needed.
	run 2 "$IPCCTL" -s "$dir/none.sock" frobnicate || return 1
	run 2 "$IPCCTL" -s "$sock" || return 1	# no command at all
}

test_unknown_option_exits_2() {
	ctl 2 --frobnicate ls || return 1
	ctl 2 ls --frobnicate || return 1
	ctl 2 send --frobnicate x y || return 1
	ctl 2 recv -Z x || return 1
	err_has 'ipcctl'
}

test_missing_argument_exits_2() {
	run 2 "$IPCCTL" -s || return 1	# -s without its PATH
	for args in stat create rm chmod "chmod x" chown "chown x" send peek \
	    "create x --capacity" "recv x -n" "send x y --timeout" "top -d"; do
		ctl 2 $args || return 1
	done
	err_has 'ipcctl'
}

test_bad_number_exits_2() {
	for args in "create bn1 --capacity abc" "create bn1 --capacity -1" \
	    "create bn1 --capacity 5x" "create bn1 --max-bytes lots" \
	    "create bn1 --mode 0999" "create bn1 --mode rw" \
	    "recv bn1 -n many" "recv bn1 -n -3" "recv bn1 --timeout soon" \
	    "send bn1 hi --timeout 1e3" "peek bn1 -n x" "top -d x" \
	    "top -n x"; do
		ctl 2 $args || return 1
	done
	# None of them created the mailbox.
	ctl 1 stat bn1
}

test_bad_address_exits_2() {
	long=$(printf '%0256d' 0)	# 256 bytes, one over the limit
	ctl 0 create bad1 || return 1
	for args in "send bad/name x" "send pid:abc x" "send .hidden x" \
	    "send $long x" "recv pid:" "recv bad/name" "create a/b" \
	    "create $long" "stat bad/name" "peek bad/name" "rm bad/name" \
	    "monitor bad/name"; do
		ctl 2 $args || return 1
	done
	ctl 2 send "" x || return 1
	ctl 2 create "" || return 1
	ctl 2 send "with space" x
}

test_remote_address_not_served_exits_1() {
	ctl 1 send jobs@otherhost.example hello || return 1
	err_has '^ipcctl: '
}

# A host part is the broker's business (this one has no TCP): ipcctl
# passes it on, so these are not usage errors (2) but refusals (1).
test_remote_addresses_pass_to_the_broker() {
	for a in jobs@127.0.0.1:7400 pid:123@127.0.0.1:7400 \
	    jobs@[::1]:7400 pid:123@otherhost.example; do
		ctl 1 send "$a" hello || return 1
		grep -Fq "ipcctl: send $a: " "$err" ||
		    { echo "no 'ipcctl: send $a: ...'"; show; return 1; }
		ctl 1 recv "$a" --nonblock || return 1
		if grep -q 'bad address' "$err"; then
			echo "recv refused $a itself"; show; return 1
		fi
	done
	# Mailbox commands act on this broker's mailboxes only.
	for args in "create jobs@127.0.0.1:7400" "stat jobs@otherhost" \
	    "rm jobs@otherhost" "peek jobs@otherhost"; do
		ctl 2 $args || return 1
		err_has 'another host' || return 1
	done
}

# --- mailboxes -------------------------------------------------------------
test_create_and_stat_text() {
	ctl 0 create st1 --capacity 5 --max-bytes 4096 --mode 0640 || return 1
	ctl 0 stat st1 || return 1
	out_has '^ *name: +st1$' || return 1
	out_has '^ *capacity: +5$' || return 1
	out_has '^ *max_bytes: +4096$' || return 1
	out_has '^ *mode: +0640$' || return 1
	out_has '^ *depth: +0$' || return 1
	out_has '^ *owner: +root$'
}

test_stat_json_fields() {
	need_py || return 77
	ctl 0 create sj1 --capacity 5 --max-bytes 4096 --mode 0640 || return 1
	printf 'abcd' >"$dir/p4"
	ctl_in "$dir/p4" 0 send sj1 || return 1
	ctl 0 stat sj1 --json || return 1
	json stat --expect name=sj1 --expect capacity=5 \
	    --expect max_bytes=4096 \
	    --expect mode='"0640"' --expect depth=1 --expect bytes=4 \
	    --expect messages_in=1 --expect messages_out=0 \
	    --expect waiting_receivers=0 --expect waiting_senders=0 \
	    --expect uid="$(id -u)" --expect gid="$(id -g)" \
	    --expect owner="$(id -un)" --expect group="$(id -gn)" || return 1
	ctl 0 -j stat sj1 || return 1
	json stat --expect name=sj1
}

test_stat_missing_exits_1() {
	ctl 1 stat nosuch || return 1
	err_has '^ipcctl: .*nosuch.*No such file or directory' || return 1
	out_empty || return 1
	ctl 1 stat nosuch --json || return 1
	err_has 'No such file or directory'
}

test_create_defaults() {
	ctl 0 create def1 || return 1
	ctl 0 stat def1 || return 1
	out_has '^ *capacity: +1024$' || return 1
	out_has '^ *mode: +0600$'
}

test_create_existing_opens_it_exclusive_fails() {
	ctl 0 create ex1 --capacity 7 || return 1
	ctl 0 create ex1 || return 1
	ctl 1 create ex1 --exclusive || return 1
	err_has '^ipcctl: .*ex1.*File exists' || return 1
	ctl 0 stat ex1 || return 1
	out_has '^ *capacity: +7$'
}

test_create_rendezvous() {
	ctl 0 create rv1 --rendezvous || return 1
	ctl 0 stat rv1 || return 1
	out_has '^ *capacity: +0$' || return 1
	# No receiver waits: a non-blocking send cannot complete.
	ctl 1 send rv1 early --nonblock || return 1
	err_has 'Resource temporarily unavailable' || return 1
	spawn rv "$IPCCTL" -s "$sock" recv rv1 --timeout 30000
	ctl 0 send rv1 meet || return 1	# completes once it is taken
	finish
	eq "recv's exit status" "$st" 0 || return 1
	eq "received" "$(cat "$dir/rv.out")" meet
}

test_ls_table_shows_mailbox() {
	ctl 0 create lt1 --capacity 5 --mode 0640 || return 1
	for m in one two three; do
		ctl 0 send lt1 "$m" || return 1
	done
	ctl 0 ls || return 1
	eq header "$(header)" "NAME UUID DEPTH BYTES CAPACITY MAX_BYTES\
 RECEIVERS SENDERS OWNER GROUP MODE IN OUT DURABLE" || { show; return 1; }
	row=$(awk '$1 == "lt1" { print $3, $4, $5, $9, $11, $12, $13 }' "$out")
	eq "lt1's DEPTH BYTES CAPACITY OWNER MODE IN OUT" "$row" \
	    "3 11 5 $(id -un) 0640 3 0" || { show; return 1; }
	uuid=$(awk '$1 == "lt1" { print $2 }' "$out")
	echo "$uuid" | grep -Eq '^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$' ||
	    { echo "lt1's UUID '$uuid' is not a UUID"; return 1; }
}

test_ls_json_shows_depth_capacity_mode() {
	need_py || return 77
	ctl 0 create lj1 --capacity 5 --max-bytes 100000 --mode 0640 || return 1
	for m in one two three; do
		ctl 0 send lj1 "$m" || return 1
	done
	ctl 0 create lj2 || return 1
	ctl 0 ls --json || return 1
	json ls --where name=lj1 --count 1 --expect depth=3 \
	    --expect capacity=5 \
	    --expect mode='"0640"' --expect bytes=11 --expect max_bytes=100000 \
	    --expect messages_in=3 --expect messages_out=0 \
	    --expect uid="$(id -u)" --expect owner="$(id -un)" || return 1
	json ls --where name=lj2 --count 1 --expect depth=0 \
	    --expect mode='"0600"' || return 1
	# The uuid is the mailbox's, as stat says.
	u1=$(jval ls uuid --where name=lj1) || return 1
	ctl 0 stat lj1 --json || return 1
	json stat --expect uuid="\"$u1\""
}

test_rm_deletes_and_missing_exits_1() {
	ctl 0 create rm1 || return 1
	ctl 0 send rm1 queued || return 1
	ctl 0 rm rm1 || return 1
	ctl 1 stat rm1 || return 1
	ctl 0 ls || return 1
	if grep -q '^rm1[[:space:]]' "$out"; then
		echo "ls still shows rm1"; show; return 1
	fi
	ctl 1 rm rm1 || return 1
	err_has '^ipcctl: .*rm1.*No such file or directory'
}

test_chmod_sets_mode() {
	ctl 0 create cm1 || return 1
	ctl 0 chmod cm1 0604 || return 1
	ctl 0 stat cm1 || return 1
	out_has '^ *mode: +0604$' || return 1
	ctl 0 chmod cm1 660 || return 1	# octal without the leading 0
	ctl 0 stat cm1 || return 1
	out_has '^ *mode: +0660$' || return 1
	ctl 2 chmod cm1 0999 || return 1
	ctl 2 chmod cm1 rwx || return 1
	ctl 1 chmod nosuch 0600 || return 1
	err_has 'No such file or directory'
}

test_chown_sets_owner_and_group() {
	if ! getent passwd nobody >/dev/null ||
	    ! getent group nogroup >/dev/null; then
		echo "no user nobody or group nogroup here"; return 77
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "only root gives a mailbox away"; return 77
	fi
	nuid=$(id -u nobody) ngid=$(getent group nogroup | cut -d: -f3)
	ctl 0 create co1 || return 1
	ctl 0 chown co1 nobody || return 1
	ctl 0 stat co1 || return 1
	out_has "^ *owner: +nobody$" || return 1
	out_has "^ *uid: +$nuid$" || return 1
	out_has "^ *group: +root$" || return 1	# USER alone keeps the group
	ctl 0 chown co1 root:nogroup || return 1
	ctl 0 stat co1 || return 1
	out_has "^ *owner: +root$" || return 1
	out_has "^ *group: +nogroup$" || return 1
	out_has "^ *gid: +$ngid$" || return 1
	# An unknown user: the contract does not say 1 or 2, only not 0.
	timeout 30 "$IPCCTL" -s "$sock" chown co1 no_such_user_x \
	    </dev/null >"$out" 2>"$err"
	st=$?
	case $st in
	1|2) ;;
	*) echo "chown to an unknown user exited $st"; show; return 1 ;;
	esac
	err_has 'no_such_user_x' || return 1
	ctl 1 chown nosuch root || return 1
	err_has 'No such file or directory'
}

# --- send and recv ----------------------------------------------------------
test_send_argument_recv_exact_bytes() {
	ctl 0 create sr1 || return 1
	printf 'line one\nline two \303\251\t' >"$dir/want"
	ctl 0 send sr1 "$(cat "$dir/want"; echo x)" || return 1
	printf 'x' >>"$dir/want"
	out_empty || return 1
	ctl 0 recv sr1 || return 1
	same_bytes "$dir/want"
}

test_send_empty_message() {
	ctl 0 create em1 || return 1
	ctl 0 send em1 "" || return 1
	ctl 0 recv em1 || return 1
	out_empty || return 1
	ctl 0 stat em1 || return 1
	out_has '^ *depth: +0$'
}

test_send_verbose_prints_id() {
	ctl 0 create sv1 || return 1
	ctl 0 send -v sv1 hello || return 1
	err_has '^sent id [0-9]+$' || return 1
	out_empty
}

test_send_json_gives_id_recv_json_metadata() {
	need_py || return 77
	ctl 0 create sjs1 || return 1
	ctl_pid 0 send sjs1 hello --json || return 1
	json send || return 1
	id=$(jval send id) || return 1
	[ "$id" -gt 0 ] || { echo "id $id"; return 1; }
	printf hello >"$dir/want"
	ctl 0 recv sjs1 --json || return 1
	json recv --count 1 --expect id="$id" --expect pid="$spid" \
	    --expect uid="$(id -u)" --expect gid="$(id -g)" \
	    --expect sender="\"pid:$spid\"" --expect source=sjs1 \
	    --expect len=5 --expect redelivered=false \
	    --payload "$dir/want" || return 1
	ctl 0 stat sjs1 || return 1
	out_has '^ *depth: +0$'
}

test_send_stdin_all_256_byte_values() {
	ctl 0 create b256 || return 1
	i=0
	while [ $i -lt 256 ]; do
		printf "\\$(printf %03o $i)"
		i=$((i + 1))
	done >"$dir/all"
	eq "bytes made" "$(wc -c <"$dir/all" | tr -d ' ')" 256 || return 1
	ctl_in "$dir/all" 0 send b256 || return 1
	ctl 0 recv b256 || return 1
	same_bytes "$dir/all"
}

test_send_stdin_4mib_random() {
	ctl 0 create big1 || return 1
	head -c 4194304 /dev/urandom >"$dir/big"
	ctl_in "$dir/big" 0 send big1 || return 1
	ctl 0 recv big1 || return 1
	same_bytes "$dir/big"
}

test_send_over_broker_limit_exits_1() {
	ctl 0 create huge1 || return 1
	head -c 9437184 /dev/zero >"$dir/huge"	# 9 MiB, limit 8 MiB
	ctl_in "$dir/huge" 1 send huge1 || return 1
	err_has 'Message too long'
}

test_send_missing_mailbox_exits_1() {
	ctl 1 send nosuch hello || return 1
	err_has '^ipcctl: .*nosuch.*No such file or directory'
}

test_send_full_nonblock_and_timeout_exit_1() {
	ctl 0 create full1 --capacity 1 || return 1
	ctl 0 send full1 first || return 1
	ctl 1 send full1 second --nonblock || return 1
	err_has 'Resource temporarily unavailable' || return 1
	ctl 1 send full1 second --timeout 100 || return 1
	err_has 'timed out' || return 1
	ctl 0 stat full1 || return 1
	out_has '^ *depth: +1$'
}

test_recv_nonblock_empty_exits_1() {
	ctl 0 create nb2 || return 1
	ctl 1 recv nb2 --nonblock || return 1
	err_has 'Resource temporarily unavailable' || return 1
	out_empty
}

test_recv_timeout_empty_exits_1() {
	ctl 0 create to1 || return 1
	ctl 1 recv to1 --timeout 200 || return 1
	err_has 'timed out' || return 1
	out_empty
}

test_recv_missing_mailbox_exits_1() {
	ctl 1 recv nosuch --nonblock || return 1
	err_has 'No such file or directory'
}

test_recv_count_concatenates_in_order() {
	ctl 0 create rc1 || return 1
	for m in a bb ccc dddd; do
		ctl 0 send rc1 "$m" || return 1
	done
	ctl 0 recv rc1 -n 3 || return 1
	printf 'abbccc' >"$dir/want"
	same_bytes "$dir/want" || return 1
	ctl 0 recv rc1 || return 1	# -n 1 is the default
	printf 'dddd' >"$dir/want"
	same_bytes "$dir/want"
}

test_recv_count_json() {
	need_py || return 77
	ctl 0 create rcj1 || return 1
	printf 'first' >"$dir/p1"
	printf 'second\000' >"$dir/p2"
	ctl_in "$dir/p1" 0 send rcj1 || return 1
	ctl_in "$dir/p2" 0 send rcj1 || return 1
	ctl 0 recv rcj1 -n 2 --json || return 1
	json recv --count 2 --payloads "$dir/p1,$dir/p2"
}

test_recv_verbose_metadata_on_stderr() {
	ctl 0 create rv2 || return 1
	ctl_pid 0 send rv2 payload || return 1
	ctl 0 recv -v rv2 || return 1
	printf payload >"$dir/want"
	same_bytes "$dir/want" || return 1
	err_has "$spid"
}

test_recv_own_direct_queue() {
	spawn direct "$IPCCTL" -s "$sock" recv --timeout 30000
	[ -n "$cpid" ] || { echo "recv did not start"; return 1; }
	ctl 0 send "pid:$cpid" 'to you' || return 1
	finish
	eq "recv's exit status" "$st" 0 || { cat "$dir/direct.err"; return 1; }
	eq received "$(cat "$dir/direct.out")" 'to you'
}

test_recv_follow_streams_messages() {
	ctl 0 create fo1 || return 1
	spawn follow "$IPCCTL" -s "$sock" recv fo1 --follow
	for m in one two three; do
		ctl 0 send fo1 "$m" || return 1
	done
	# Each message is written (and flushed) as it comes.
	timeout 10 sh -c 'until [ "$(cat "$0")" = onetwothree ]; do
	    sleep 0.05; done' "$dir/follow.out" ||
	    { echo "got '$(cat -v "$dir/follow.out")'"; return 1; }
	kill "$cpid"
	finish
	ctl 0 stat fo1 || return 1
	out_has '^ *depth: +0$'
}

test_recv_follow_json_lines() {
	need_py || return 77
	ctl 0 create foj1 || return 1
	spawn followj "$IPCCTL" -s "$sock" recv foj1 --follow --json
	printf 'one' >"$dir/p1"
	printf 'two' >"$dir/p2"
	ctl 0 send foj1 one || return 1
	ctl 0 send foj1 two || return 1
	timeout 10 sh -c 'until [ "$(grep -c . "$0")" -ge 2 ]; do
	    sleep 0.05; done' "$dir/followj.out" ||
	    { echo "got '$(cat -v "$dir/followj.out")'"; return 1; }
	kill "$cpid"
	finish
	cp "$dir/followj.out" "$out"
	json follow --count 2 --payloads "$dir/p1,$dir/p2" --expect source=foj1
}

# --- peek, ps, stats -------------------------------------------------------
test_peek_table_leaves_messages() {
	ctl 0 create pk1 || return 1
	ctl 0 send -v pk1 hello || return 1
	id1=$(sed -n 's/^sent id //p' "$err")
	ctl_pid 0 send -v pk1 'second message' || return 1
	id2=$(sed -n 's/^sent id //p' "$err")
	ctl 0 peek pk1 || return 1
	eq header "$(header)" \
	    "ID SENDER LEN AGE PREVIEW" || { show; return 1; }
	eq rows "$(sed 1d "$out" | grep -c .)" 2 || { show; return 1; }
	eq "first row's ID LEN" "$(awk 'NR == 2 { print $1, $3 }' "$out")" \
	    "$id1 5" || { show; return 1; }
	# SENDER: the reply address "pid:P" (or just P).
	eq "second row's ID SENDER LEN" \
	    "$(awk 'NR == 3 { sub(/^pid:/, "", $2); print $1, $2, $3 }' \
	    "$out")" \
	    "$id2 $spid 14" || { show; return 1; }
	awk 'NR == 2' "$out" | grep -q hello || { show; return 1; }
	ctl 0 peek pk1 -n 1 || return 1
	eq "rows with -n 1" "$(sed 1d "$out" | grep -c .)" 1 ||
	    { show; return 1; }
	ctl 0 stat pk1 || return 1
	out_has '^ *depth: +2$' || return 1
	ctl 1 peek nosuch || return 1
	err_has 'No such file or directory'
}

test_peek_json_leaves_messages() {
	need_py || return 77
	ctl 0 create pkj1 || return 1
	printf 'alpha' >"$dir/p1"
	printf '\001\002\377' >"$dir/p2"
	ctl_in "$dir/p1" 0 send pkj1 || return 1
	ctl_in "$dir/p2" 0 send pkj1 || return 1
	ctl 0 peek pkj1 --json || return 1
	json peek --count 2 --payloads "$dir/p1,$dir/p2" || return 1
	ctl 0 peek pkj1 --json -n 1 || return 1
	json peek --count 1 --payloads "$dir/p1" || return 1
	ctl 0 recv pkj1 -n 2 || return 1	# both are still there
	cat "$dir/p1" "$dir/p2" >"$dir/want"
	same_bytes "$dir/want"
}

# spawn_waiter NAME MAILBOX: a recv waiting on MAILBOX, seen by the broker
# (bounded: until ps lists its pid).
spawn_waiter() {
	spawn "$1" "$IPCCTL" -s "$sock" recv "$2" --timeout 30000
	timeout 10 sh -c 'until "$1" -s "$2" ps 2>/dev/null |
	    awk -v p="$0" "\$1 == p { f = 1 } END { exit !f }"; do
	    sleep 0.05; done' "$cpid" "$IPCCTL" "$sock" && return 0
	echo "ps never showed pid $cpid"
	return 1
}

test_ps_shows_processes() {
	ctl 0 create ps1 || return 1
	spawn_waiter ps ps1 || return 1
	ctl 0 send "pid:$cpid" one || return 1
	ctl 0 send "pid:$cpid" two || return 1
	ctl 0 ps || return 1
	eq header "$(header)" \
	    "PID UID COMMAND CONNECTIONS QUEUE SENT RECEIVED" ||
	    { show; return 1; }
	eq "PID UID COMMAND CONNECTIONS QUEUE" \
	    "$(awk -v p="$cpid" '$1 == p { print $1, $2, $3, $4, $5 }' \
	    "$out")" \
	    "$cpid $(id -u) ipcctl 1 2" || { show; return 1; }
	ctl 0 send ps1 done || return 1	# lets the waiter go
	finish
	eq "waiter's exit status" "$st" 0
}

test_ps_json() {
	need_py || return 77
	ctl 0 create psj1 || return 1
	spawn_waiter psj psj1 || return 1
	ctl 0 send "pid:$cpid" one || return 1
	ctl 0 ps --json || return 1
	json ps --where pid="$cpid" --count 1 --expect command=ipcctl \
	    --expect uid="$(id -u)" --expect connections=1 \
	    --expect queue_depth=1 || return 1
	ctl 0 send psj1 done || return 1
	finish
	eq "waiter's exit status" "$st" 0
}

test_ls_counts_waiting_receiver() {
	need_py || return 77
	ctl 0 create wr1 || return 1
	spawn_waiter wr wr1 || return 1
	# ps saw the connection; its receive may be a moment behind.
	timeout 10 sh -c 'until "$0" -s "$1" stat wr1 2>/dev/null |
	    grep -Eq "^ *waiting_receivers: +1$"; do sleep 0.05; done' \
	    "$IPCCTL" "$sock"
	ctl 0 ls --json || return 1
	json ls --where name=wr1 --expect waiting_receivers=1 \
	    --expect waiting_senders=0 || return 1
	ctl 0 send wr1 done || return 1
	finish
	eq "waiter's exit status" "$st" 0
}

test_stats_text_counters() {
	ctl 0 stats || return 1
	bad=$(grep -Ev '^[a-z][a-z0-9_]*[[:space:]]+[^[:space:]]+$' "$out")
	[ -z "$bad" ] || { echo "lines not 'name value': $bad"; return 1; }
	for c in messages_in messages_out connections mailboxes uptime_ms; do
		out_has "^$c[[:space:]]+[0-9]+$" || return 1
	done
}

test_stats_json_counts_a_send() {
	need_py || return 77
	ctl 0 create sc1 || return 1
	ctl 0 stats --json || return 1
	json stats || return 1
	in1=$(jval stats messages_in) || return 1
	ctl 0 send sc1 one || return 1
	ctl 0 stats --json || return 1
	json stats --counter messages_in=$((in1 + 1)) || return 1
	n=$(jval stats mailboxes) || return 1
	ctl 0 ls --json || return 1
	json ls --count "$n"
}

# --- monitor ---------------------------------------------------------------
# A line: "HH:MM:SS.mmm EVENT pid=P uid=U subject=S id=N len=L".
hms='[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\.[0-9]{3}'	# HH:MM:SS.mmm
test_monitor_shows_send_by_another_process() {
	ctl 0 create mon1 || return 1
	spawn mon "$IPCCTL" -s "$sock" monitor
	monitor_ready "$dir/mon.out" stat mon1 || return 1
	ctl_pid 0 send -v mon1 hello || return 1
	id=$(sed -n 's/^sent id //p' "$err")
	[ -n "$id" ] || { echo "send -v gave no id"; show; return 1; }
	wait_file "$dir/mon.out" " send .*subject=mon1 " || return 1
	line=$(grep ' send .*subject=mon1 ' "$dir/mon.out")
	echo "$line" | grep -Eq "^$hms send pid=$spid uid=$(id -u)\
 subject=mon1 id=$id len=5\$" ||
	    { echo "bad send line: '$line'"; return 1; }
	kill -TERM "$cpid"
	finish
	eq "monitor's exit status after SIGTERM" "$st" 0 ||
	    { cat "$dir/mon.err"; return 1; }
}

# Every line has every field of the format, whatever the event.
test_monitor_lines_follow_the_format() {
	ctl 0 create mon2 || return 1
	spawn mon "$IPCCTL" -s "$sock" monitor
	monitor_ready "$dir/mon.out" stat mon2 || return 1
	ctl 0 send mon2 hello || return 1
	ctl 0 recv mon2 || return 1
	ctl 0 rm mon2 || return 1
	ctl 1 send mon2 gone || return 1
	ctl_pid 0 stats || return 1
	# Events come in order: once stats's disconnect is there, all are.
	wait_file "$dir/mon.out" " disconnect pid=$spid " || return 1
	grep -q ' delete .*subject=mon2' "$dir/mon.out" &&
	    grep -q ' error ' "$dir/mon.out" ||
	    { echo "no delete or error event:"; cat "$dir/mon.out"; return 1; }
	kill -TERM "$cpid"
	finish
	# (An error event may add "error=..." at the end.)
	ev='(connect|disconnect|create|delete|send|receive|error|dropped)'
	bad=$(grep -Ev "^$hms $ev pid=[0-9]+ uid=[0-9]+ subject=[^ ]*\
 id=[0-9]+ len=[0-9]+( error=.*)?\$" "$dir/mon.out")
	[ -z "$bad" ] || { echo "lines not in the format: $bad"; return 1; }
}

test_monitor_exits_0_on_sigint() {
	spawn mon "$IPCCTL" -s "$sock" monitor
	monitor_ready "$dir/mon.out" stats || return 1
	kill -INT "$cpid"
	finish
	eq "monitor's exit status after SIGINT" "$st" 0 ||
	    { cat "$dir/mon.err"; return 1; }
}

test_monitor_filters_by_address() {
	ctl 0 create mfa || return 1
	ctl 0 create mfb || return 1
	spawn mon "$IPCCTL" -s "$sock" monitor mfa
	monitor_ready "$dir/mon.out" send mfa probe || return 1
	ctl 0 send mfb 'not this' || return 1
	ctl 0 send mfa 'hello world' || return 1
	# Events come in order: mfb's would be there before this one.
	wait_file "$dir/mon.out" " send .*subject=mfa .*len=11\$" || return 1
	kill -TERM "$cpid"
	finish
	eq "monitor's exit status" "$st" 0 || return 1
	if grep -q 'mfb' "$dir/mon.out"; then
		echo "monitor mfa showed mfb:"; cat "$dir/mon.out"; return 1
	fi
}

test_monitor_json_lines() {
	need_py || return 77
	spawn mon "$IPCCTL" -s "$sock" monitor --json
	monitor_ready "$dir/mon.out" stats || return 1
	ctl 0 create mj1 || return 1
	ctl_pid 0 send mj1 abc --json || return 1
	id=$(jval send id) || return 1
	ctl 0 recv mj1 || return 1
	ctl 0 rm mj1 || return 1
	del='"event"[[:space:]]*:[[:space:]]*"delete"'
	wait_file "$dir/mon.out" "$del.*mj1|mj1.*$del" || return 1
	kill -TERM "$cpid"
	finish
	eq "monitor's exit status" "$st" 0 || return 1
	cp "$dir/mon.out" "$out"
	json monitor --where event=create --where subject=mj1 --count 1 ||
	    return 1
	json monitor --where event=send --where subject=mj1 --count 1 \
	    --expect msg_id="$id" --expect len=3 --expect pid="$spid" \
	    --expect uid="$(id -u)" || return 1
	json monitor --where event=receive --where subject=mj1 --count 1 \
	    --expect msg_id="$id" --expect len=3 || return 1
	json monitor --where event=delete --where subject=mj1 --count 1
}

# --- top -------------------------------------------------------------------
test_top_plain_snapshot_shows_depth() {
	ctl 0 create tp1 || return 1
	for m in 1 2 3 4; do
		ctl 0 send tp1 "$m" || return 1
	done
	ctl 0 top -n 1 || return 1
	eq "first line starts" "$(head -c 12 "$out")" "ipcctl top: " ||
	    { show; return 1; }
	eq "snapshots" "$(grep -c '^ipcctl top: ' "$out")" 1 ||
	    { show; return 1; }
	eq "tp1's DEPTH" "$(cell DEPTH tp1)" 4 || { show; return 1; }
	ctl 0 top -n 2 -d 1 -o depth || return 1
	eq "snapshots with -n 2" "$(grep -c '^ipcctl top: ' "$out")" 2 ||
	    { show; return 1; }
	ctl 0 top -n 1 -o rate || return 1
	eq "tp1's DEPTH with -o rate" "$(cell DEPTH tp1)" 4 ||
	    { show; return 1; }
	ctl 2 top -o bogus
}

test_top_terminal_shows_depth_and_quits_on_q() {
	if ! command -v tmux >/dev/null 2>&1; then
		echo "tmux is not installed"; return 77
	fi
	ctl 0 create tt1 || return 1
	for m in 1 2 3 4 5 6 7; do
		ctl 0 send tt1 "$m" || return 1
	done
	cat >"$dir/top.sh" <<EOF
"$IPCCTL" -s "$sock" top -d 1 2>"$dir/top.err"
echo \$? >"$dir/top.rc"
EOF
	tm() { timeout 10 tmux -S "$tmux_sock" "$@"; }
	tm -f /dev/null new-session -d -s top -x 120 -y 30 "sh '$dir/top.sh'" ||
	    return 1
	i=0 seen=
	while [ $i -lt 100 ]; do
		tm capture-pane -p -t top >"$dir/pane" 2>/dev/null
		seen=$(cell DEPTH tt1 "$dir/pane")
		[ "$seen" = 7 ] && break
		sleep 0.1
		i=$((i + 1))
	done
	eq "tt1's DEPTH on the screen" "$seen" 7 ||
	    { echo "screen:"; cat "$dir/pane"; cat "$dir/top.err"; return 1; }
	tm send-keys -t top q || return 1
	i=0
	while [ $i -lt 100 ] && tm has-session -t top 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	if tm has-session -t top 2>/dev/null; then
		echo "top did not quit on q; screen:"
		tm capture-pane -p -t top
		return 1
	fi
	eq "top's exit status" "$(cat "$dir/top.rc" 2>/dev/null)" 0
}

# --- keygen ----------------------------------------------------------------
hex64='[0-9a-f]{64}'

# perm FILE: its mode in octal, as "600".
perm() { stat -c %a "$1"; }

test_keygen_writes_private_key_line() {
	# No broker needed: neither -s nor a running ipcd.
	run 0 env IPC_SOCKET="$dir/none.sock" "$IPCCTL" keygen \
	    --identity node-1.example "$dir/kg1.key" || return 1
	out_empty || return 1
	eq "mode" "$(perm "$dir/kg1.key")" 600 || return 1
	eq "lines" "$(wc -l <"$dir/kg1.key" | tr -d ' ')" 1 || return 1
	grep -Eq "^node-1\.example $hex64\$" "$dir/kg1.key" ||
	    { echo "bad key line: $(cat -v "$dir/kg1.key")"; return 1; }
	run 0 "$IPCCTL" -s "$dir/none.sock" keygen -i 'a_b@c:d-1' \
	    "$dir/kg1b.key" || return 1
	grep -Eq "^a_b@c:d-1 $hex64\$" "$dir/kg1b.key" ||
	    { echo "bad key line: $(cat -v "$dir/kg1b.key")"; return 1; }
}

test_keygen_default_identity_is_host_name() {
	host=$(uname -n)
	if echo "$host" | grep -Eq '^[A-Za-z0-9._@:-]{1,128}$'; then
		run 0 "$IPCCTL" keygen "$dir/kg2.key" || return 1
		eq "identity" "$(cut -d' ' -f1 "$dir/kg2.key")" "$host"
	else
		run 1 "$IPCCTL" keygen "$dir/kg2.key" || return 1
		err_has -- '--identity' || return 1
		[ ! -e "$dir/kg2.key" ] ||
		    { echo "a key file was written"; return 1; }
	fi
}

# A host name that is no identity: in a UTS namespace of our own.
test_keygen_bad_host_name_asks_for_identity() {
	# (hostname(1) refuses such a name: the kernel's file does not.)
	_set='printf "bad host!" >/proc/sys/kernel/hostname'
	if ! command -v unshare >/dev/null 2>&1 ||
	    ! unshare --uts sh -c "$_set" 2>/dev/null; then
		echo "cannot set a host name in a new UTS namespace"; return 77
	fi
	run 1 unshare --uts sh -c "$_set"' && exec "$0" "$@"' \
	    "$IPCCTL" keygen "$dir/kg3.key" || return 1
	err_has "host name 'bad host!'.*--identity" || return 1
	[ ! -e "$dir/kg3.key" ] || { echo "a key file was written"; return 1; }
	run 0 unshare --uts sh -c "$_set"' && exec "$0" "$@"' \
	    "$IPCCTL" keygen --identity good "$dir/kg3.key"
}

test_keygen_refuses_to_overwrite() {
	run 0 "$IPCCTL" keygen -i first "$dir/kg4.key" || return 1
	cp "$dir/kg4.key" "$dir/kg4.was"
	run 1 "$IPCCTL" keygen -i second "$dir/kg4.key" || return 1
	err_has "^ipcctl: keygen: $dir/kg4.key exists; not replacing a key\$" ||
	    return 1
	cmp "$dir/kg4.was" "$dir/kg4.key" ||
	    { echo "the key file changed"; return 1; }
	# Not only keys: no file is replaced, not even through a symlink.
	printf 'precious\n' >"$dir/kg4.txt"
	ln -s "$dir/kg4.txt" "$dir/kg4.link"
	for f in "$dir/kg4.txt" "$dir/kg4.link"; do
		run 1 "$IPCCTL" keygen -i x "$f" || return 1
		err_has 'exists; not replacing a key' || return 1
	done
	eq "the file" "$(cat "$dir/kg4.txt")" precious
}

test_keygen_rejects_bad_identity() {
	long=$(printf 'a%.0s' $(seq 129))	# one over the limit
	for id in 'a b' '' 'x/y' 'caf\303\251' 'semi;colon' "$long"; do
		id=$(printf "$id")
		run 2 "$IPCCTL" keygen --identity "$id" "$dir/kg5.key" ||
		    return 1
		err_has "identity" || return 1
		[ ! -e "$dir/kg5.key" ] ||
		    { echo "a key file was written for '$id'"; return 1; }
	done
	# 128 is allowed.
	run 0 "$IPCCTL" keygen --identity "${long#a}" "$dir/kg5.key"
}

test_keygen_usage_errors() {
	run 2 "$IPCCTL" keygen || return 1	# no FILE
	run 2 "$IPCCTL" keygen "$dir/kg6a" "$dir/kg6b" || return 1
	run 2 "$IPCCTL" keygen "" || return 1
	run 2 "$IPCCTL" keygen --identity || return 1
	run 1 "$IPCCTL" keygen -i x "$dir/no/such/dir/k" || return 1
	err_has 'No such file or directory'
}

test_keygen_twice_gives_different_keys() {
	run 0 "$IPCCTL" keygen -i same "$dir/kg7a.key" || return 1
	run 0 "$IPCCTL" keygen -i same "$dir/kg7b.key" || return 1
	k1=$(cut -d' ' -f2 "$dir/kg7a.key") k2=$(cut -d' ' -f2 "$dir/kg7b.key")
	[ -n "$k1" ] && [ "$k1" != "$k2" ] ||
	    { echo "the same key twice: $k1"; return 1; }
}

test_keygen_json() {
	need_py || return 77
	run 0 "$IPCCTL" keygen --json -i node2 "$dir/kg8.key" || return 1
	json keygen --expect identity=node2 --expect file="$dir/kg8.key"
}

test_keygen_help() {
	run 0 "$IPCCTL" keygen --help || return 1
	for w in --identity --psk 0600 'one line per identity' 'first line'; do
		out_has -- "$w" || return 1
	done
}

# --- links -----------------------------------------------------------------
links_head="DIR PEER STATE IDENTITY QUEUED INFLIGHT OUT IN FAILED RECONN RTT\
 LAST_ERROR"

test_links_none_prints_header_only() {
	ctl 0 links || return 1
	eq header "$(header)" "$links_head" || { show; return 1; }
	eq lines "$(wc -l <"$out" | tr -d ' ')" 1 || { show; return 1; }
	ctl 0 links --json || return 1
	eq "links --json" "$(cat "$out")" "[]" || { show; return 1; }
	if need_py; then
		json links --count 0 || return 1
	fi
	ctl 2 links extra
}

test_links_help() {
	run 0 "$IPCCTL" -s "$dir/none.sock" links --help || return 1
	for w in DIR PEER STATE RTT in_flight; do
		out_has "$w" || return 1
	done
	run 1 "$IPCCTL" -s "$dir/none.sock" links || return 1
	err_has "^ipcctl: no broker at $dir/none.sock"
}

test_socket_tls_reaches_a_remote_broker() {
	run 0 "$IPCCTL" keygen -i tls-test "$dir/tls.key" || return 1
	start_broker tlsb --psk "$dir/tls.key" || return 1
	run 0 "$IPCCTL" -s "$dir/tlsb.sock" create jobs --mode 0666 || return 1
	# The broker of "another host", straight over TLS: no local broker.
	run 0 env IPC_TLS_PSK="$dir/tls.key" "$IPCCTL" \
	    -s "tls://127.0.0.1:$bport" send jobs over-tls || return 1
	run 0 "$IPCCTL" -s "$dir/tlsb.sock" recv jobs --timeout 10000 || return 1
	eq received "$(cat "$out")" over-tls || return 1
	# No key: ENOKEY; another key: refused.
	run 1 env -u IPC_TLS_PSK "$IPCCTL" -s "tls://127.0.0.1:$bport" ls ||
	    return 1
	err_has "Required key not available" || return 1
	run 0 "$IPCCTL" keygen -i tls-test "$dir/other.key" || return 1
	run 1 env IPC_TLS_PSK="$dir/other.key" "$IPCCTL" \
	    -s "tls://127.0.0.1:$bport" ls || return 1
	err_has "Permission denied" || return 1
}

# start_broker NAME ARGS...: another ipcd, socket $dir/NAME.sock, TCP on
# a free port of 127.0.0.1 (--psk etc. in ARGS); sets bpid and bport.
start_broker() {
	_n=$1; shift
	"$ipcd" --socket "$dir/$_n.sock" --tcp 127.0.0.1:0 "$@" \
	    </dev/null >"$dir/$_n.ready" 2>"$dir/$_n.log" &
	bpid=$!
	more_ipcd="$more_ipcd $bpid"
	wait_file "$dir/$_n.ready" '^ipcd: ready on .*, tcp 127\.0\.0\.1:[0-9]+' ||
	    { cat "$dir/$_n.log"; return 1; }
	bport=$(sed -n 's/^ipcd: ready on .*, tcp 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
	    "$dir/$_n.ready")
}

# link_row SOCKET DIR PEER: "STATE IDENTITY OUT IN FAILED" of that link.
link_row() {
	"$IPCCTL" -s "$1" links 2>/dev/null | awk -v d="$2" -v p="$3" \
	    '$1 == d && $2 == p { print $3, $4, $7, $8, $9; exit }'
}

test_links_between_two_brokers() {
	if ! "$ipcd" --help 2>/dev/null | grep -q -- '--psk'; then
		echo "this ipcd has no --tcp/--psk"; return 77
	fi
	run 0 "$IPCCTL" keygen -i cluster-test "$dir/cluster.key" || return 1
	# A short heartbeat: a round trip is measured soon.
	start_broker lka --psk "$dir/cluster.key" --heartbeat 100 || return 1
	pa=$bpid porta=$bport
	start_broker lkb --psk "$dir/cluster.key" --heartbeat 100 || return 1
	pb=$bpid portb=$bport
	sa=$dir/lka.sock sb=$dir/lkb.sock
	# Mode 0666: the message comes with the mapped uid of a remote
	# sender, not ours.
	run 0 "$IPCCTL" -s "$sb" create jobs --mode 0666 || return 1
	run 0 "$IPCCTL" -s "$sa" send "jobs@127.0.0.1:$portb" hello || return 1
	run 0 "$IPCCTL" -s "$sb" recv jobs --timeout 10000 || return 1
	eq received "$(cat "$out")" hello || return 1
	# Errors come back from B.
	run 1 "$IPCCTL" -s "$sa" send "nosuch@127.0.0.1:$portb" x || return 1
	err_has "nosuch@127\.0\.0\.1:$portb: No such file or directory" ||
	    return 1
	run 0 "$IPCCTL" -s "$sa" links || return 1
	eq header "$(header)" "$links_head" || { show; return 1; }
	eq "A's link to B: STATE IDENTITY OUT IN FAILED" \
	    "$(link_row "$sa" out "127.0.0.1:$portb")" \
	    "up cluster-test 1 0 1" || { show; return 1; }
	# The heartbeat's round trip, within 10 s.
	timeout 10 sh -c 'until "$0" -s "$1" links | awk -v p="$2" \
	    "\$1 == \"out\" && \$2 == p && \$11 ~ /^[0-9.]+(ms|s)\$/ { f = 1 }
	    END { exit !f }"; do sleep 0.05; done' \
	    "$IPCCTL" "$sa" "127.0.0.1:$portb" ||
	    { echo "no RTT within 10 s:"; "$IPCCTL" -s "$sa" links; return 1; }
	run 0 "$IPCCTL" -s "$sb" links || return 1
	eq "B's link from A: STATE IDENTITY" \
	    "$(link_row "$sb" in "127.0.0.1:$porta" | cut -d' ' -f1,2)" \
	    "up cluster-test" || { show; return 1; }
	if need_py; then
		run 0 "$IPCCTL" -s "$sa" links --json || return 1
		json links --count 1 --where direction=out \
		    --expect peer="127.0.0.1:$portb" --expect state=up \
		    --expect identity=cluster-test --expect messages_out=1 \
		    --expect failed=1 --expect queued=0 --expect in_flight=0 ||
		    return 1
		run 0 "$IPCCTL" -s "$sb" links --json || return 1
		json links --count 1 --where direction=in \
		    --expect peer="127.0.0.1:$porta" --expect state=up \
		    --expect identity=cluster-test || return 1
		json links --where direction=out --absent || return 1
	fi
	# A process on B that takes only what one process on A sends it
	# (pid:Q@HOST:PORT): the sender waits for the receiver's pid.
	rm -f "$dir/lk.rpid"
	spawn lks sh -c 'until [ -s "$0" ]; do sleep 0.05; done
	    exec "$1" -s "$2" send "pid:$(cat "$0")@127.0.0.1:$3" remote-hi' \
	    "$dir/lk.rpid" "$IPCCTL" "$sa" "$portb"
	sender=$cpid sender_bg=$bg
	spawn lkr "$IPCCTL" -s "$sb" recv -v --timeout 20000 \
	    "pid:$sender@127.0.0.1:$porta"
	timeout 10 sh -c 'until "$1" -s "$2" ps 2>/dev/null |
	    awk -v p="$0" "\$1 == p { f = 1 } END { exit !f }"; do
	    sleep 0.05; done' "$cpid" "$IPCCTL" "$sb" ||
	    { echo "B's ps never showed pid $cpid"; return 1; }
	echo "$cpid" >"$dir/lk.rpid"
	finish
	eq "remote recv's exit status" "$st" 0 ||
	    { cat "$dir/lkr.err" "$dir/lks.err"; return 1; }
	eq "received from A" "$(cat "$dir/lkr.out")" remote-hi || return 1
	grep -Fq "from pid:$sender@127.0.0.1:$porta " "$dir/lkr.err" ||
	    { echo "sender not pid:$sender@127.0.0.1:$porta:"
	    cat "$dir/lkr.err"; return 1; }
	bg=$sender_bg
	finish
	eq "remote send's exit status" "$st" 0 ||
	    { cat "$dir/lks.err"; return 1; }
	stop_broker "$pb"
	stop_broker "$pa"
	more_ipcd=$(echo "$more_ipcd" | sed "s/ $pa\$//; s/ $pa / /;
	    s/ $pb\$//; s/ $pb / /")
}

# --- permissions -----------------------------------------------------------
# as_nobody STATUS ARGS...: ipcctl ARGS as user nobody.
as_nobody() {
	_st=$1; shift
	run_in /dev/null "$_st" setpriv --reuid=65534 --regid=65534 \
	    --clear-groups "$IPCCTL" -s "$sock" "$@"
}
# others_can_reach: as root, with setpriv, and every directory from / to
# the socket and to ipcctl searchable by others.  Lets others connect:
# ipcd makes its socket with the umask's mode, and connect(2) needs write
# permission on it.
others_can_reach() {
	if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null 2>&1; then
		echo "needs root and setpriv to act as another user"
		return 1
	fi
	chmod 0711 "$dir" || return 1
	for f in "$dir" "$(dirname "$IPCCTL")"; do
		d=$(cd "$f" && pwd -P)
		while :; do
			case $(stat -c %A "$d") in
			?????????[xt]) ;;
			*) echo "$d is not searchable by others"; return 1 ;;
			esac
			[ "$d" = / ] && break
			d=$(dirname "$d")
		done
	done
	chmod 0666 "$sock"
}

test_mode_forbids_other_user_eacces() {
	others_can_reach || return 77
	ctl 0 create priv1 || return 1	# 0600
	ctl 0 send priv1 secret || return 1
	as_nobody 0 ls || return 1	# anyone may list
	as_nobody 0 stat priv1 || return 1
	as_nobody 1 send priv1 hello || return 1
	err_has '^ipcctl: .*priv1.*Permission denied' || return 1
	as_nobody 1 recv priv1 --nonblock || return 1
	err_has 'Permission denied' || return 1
	out_empty || return 1
	as_nobody 1 peek priv1 || return 1
	err_has 'Permission denied' || return 1
	as_nobody 1 chmod priv1 0666 || return 1
	err_has 'Permission denied' || return 1
	as_nobody 1 rm priv1 || return 1
	err_has 'Permission denied' || return 1
	ctl 0 stat priv1 || return 1
	out_has '^ *depth: +1$' || return 1
	out_has '^ *mode: +0600$'
}

test_mode_allows_other_user() {
	others_can_reach || return 77
	ctl 0 create pub1 --mode 0606 || return 1
	as_nobody 0 send pub1 'from nobody' || return 1
	as_nobody 0 recv pub1 || return 1
	printf 'from nobody' >"$dir/want"
	same_bytes "$dir/want" || return 1
	ctl 0 create wo1 --mode 0602 || return 1	# others may only send
	as_nobody 0 send wo1 x || return 1
	as_nobody 1 recv wo1 --nonblock || return 1
	err_has 'Permission denied'
}

for t in version_prints_and_exits_0 help_prints_usage_and_exits_0 \
    command_help_exits_0_without_broker no_broker_exits_1 \
    socket_from_environment_and_options unknown_command_exits_2 \
    unknown_option_exits_2 missing_argument_exits_2 bad_number_exits_2 \
    bad_address_exits_2 remote_address_not_served_exits_1 \
    remote_addresses_pass_to_the_broker \
    create_and_stat_text stat_json_fields stat_missing_exits_1 \
    create_defaults create_existing_opens_it_exclusive_fails \
    create_rendezvous ls_table_shows_mailbox \
    ls_json_shows_depth_capacity_mode rm_deletes_and_missing_exits_1 \
    chmod_sets_mode chown_sets_owner_and_group \
    send_argument_recv_exact_bytes send_empty_message \
    send_verbose_prints_id send_json_gives_id_recv_json_metadata \
    send_stdin_all_256_byte_values send_stdin_4mib_random \
    send_over_broker_limit_exits_1 send_missing_mailbox_exits_1 \
    send_full_nonblock_and_timeout_exit_1 recv_nonblock_empty_exits_1 \
    recv_timeout_empty_exits_1 recv_missing_mailbox_exits_1 \
    recv_count_concatenates_in_order recv_count_json \
    recv_verbose_metadata_on_stderr recv_own_direct_queue \
    recv_follow_streams_messages recv_follow_json_lines \
    peek_table_leaves_messages peek_json_leaves_messages \
    ps_shows_processes ps_json ls_counts_waiting_receiver \
    stats_text_counters stats_json_counts_a_send \
    monitor_shows_send_by_another_process \
    monitor_lines_follow_the_format monitor_exits_0_on_sigint \
    monitor_filters_by_address monitor_json_lines \
    top_plain_snapshot_shows_depth \
    top_terminal_shows_depth_and_quits_on_q \
    keygen_writes_private_key_line keygen_default_identity_is_host_name \
    keygen_bad_host_name_asks_for_identity keygen_refuses_to_overwrite \
    keygen_rejects_bad_identity keygen_usage_errors \
    keygen_twice_gives_different_keys keygen_json keygen_help \
    links_none_prints_header_only links_help links_between_two_brokers \
    socket_tls_reaches_a_remote_broker \
    mode_forbids_other_user_eacces mode_allows_other_user; do
	tcase "$t"
done
# Whatever a case left running is stopped by cleanup; the broker must
# still be there.
if ! kill -0 "$ipcd_pid" 2>/dev/null; then
	echo "ipcd died during the tests:"; cat "$dir/ipcd.log"
	failed=1
fi
exit $failed
