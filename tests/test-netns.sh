#!/bin/bash
# Two brokers on two separate network stacks (network namespaces joined by
# a veth pair), linked over TLS: messages cross, the wire is cut mid-stream
# (the interface taken down: packets vanish, nothing closes), the link is
# found dead within its heartbeat bound, and after healing every accepted
# message is delivered exactly once, in order.  Needs root, ip(8),
# unshare(1) and nsenter(1); skipped with a message otherwise.  The
# namespaces are held by a process each (not named with 'ip netns', which
# needs mount propagation that a chroot may not have).  Prints cmocka's
# report format.
set -u
ipcd=$top_builddir/daemon/ipcd
ipcctl=$top_builddir/tools/ipcctl
tag=$$
va=ipa$tag vb=ipb$tag
# A private /24 from the benchmarking range, different per run.
net=198.18.$((tag % 250)).
dir=$(mktemp -d "${TMPDIR:-/tmp}/ipctest.XXXXXX") || exit 1
pids= holders=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	# The namespaces (and the veth pair) go with their last process.
	for p in $holders; do kill "$p" 2>/dev/null; done
	for p in $holders; do wait "$p" 2>/dev/null; done
	ip link del "$va" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

names="messages_cross_between_namespaces partition_is_found_dead_within_bound after_healing_every_message_arrives_once_in_order"
skip_all() {
	for n in $names; do
		echo "[ RUN      ] $n"; echo "$1"; echo "[  SKIPPED ] $n"
	done
	exit 0
}
[ "$(id -u)" = 0 ] || skip_all "not root: network namespaces need root"
for t in ip unshare nsenter; do
	command -v $t >/dev/null 2>&1 || skip_all "$t is not installed"
done
# A process in a new network namespace for each host.
unshare --net sleep 3600 & pa=$!
unshare --net sleep 3600 & pb=$!
holders="$pa $pb"
in_a() { nsenter --net="/proc/$pa/ns/net" "$@"; }
in_b() { nsenter --net="/proc/$pb/ns/net" "$@"; }
timeout 5 sh -c "until [ \"\$(readlink /proc/$pa/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ] &&
    [ \"\$(readlink /proc/$pb/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]; do sleep 0.02; done" ||
	skip_all "cannot make network namespaces here"
{ ip link add "$va" type veth peer name "$vb" &&
ip link set "$va" netns "$pa" && ip link set "$vb" netns "$pb" &&
in_a ip addr add "${net}1/24" dev "$va" &&
in_b ip addr add "${net}2/24" dev "$vb" &&
in_a ip link set lo up && in_b ip link set lo up &&
in_a ip link set "$va" up && in_b ip link set "$vb" up; } 2>"$dir/err" ||
	skip_all "cannot make a veth pair here: $(cat "$dir/err")"

"$ipcctl" keygen --identity cluster "$dir/key" 2>/dev/null || exit 1
failed=0
ok() { echo "[       OK ] $1"; }
bad() { echo "$2"; echo "[  FAILED  ] $1"; failed=1; }

# start PID NAME IP: ipcd in the network namespace of PID on TCP IP:7400;
# waits for its ready line (10 s at most).
start() {
	nsenter --net="/proc/$1/ns/net" "$ipcd" -s "$dir/$2.sock" --tcp "$3:7400" \
	    --psk "$dir/key" --heartbeat 200 --log-level info \
	    >"$dir/$2.out" 2>"$dir/$2.log" &
	pids="$pids $!"
	timeout 10 sh -c "until grep -q 'ready on' '$dir/$2.out'; do sleep 0.05; done"
}
start "$pa" a "${net}1" && start "$pb" b "${net}2" || {
	echo "ipcd did not start:"; cat "$dir"/*.log; exit 1; }
A="-s $dir/a.sock" B="-s $dir/b.sock"
peer="${net}2:7400"

name=messages_cross_between_namespaces
echo "[ RUN      ] $name"
"$ipcctl" $B create jobs --mode 0666 &&
    "$ipcctl" $A send "jobs@$peer" first &&
    got=$("$ipcctl" $B recv jobs --timeout 10000)
if [ "${got:-}" = first ]; then ok $name; else bad $name "got '${got:-}'"; fi

# Senders keep going (each send returns once B accepted it) while the
# wire is cut for longer than three heartbeats, then healed.
name=partition_is_found_dead_within_bound
echo "[ RUN      ] $name"
total=300
( for i in $(seq 1 $total); do
	"$ipcctl" $A send --timeout 60000 "jobs@$peer" "m$i" || echo "send $i failed" >&2
  done ) 2>"$dir/send.err" &
sender=$!
pids="$pids $sender"
timeout 20 sh -c "until [ \$('$ipcctl' $B stat jobs --json | sed -n 's/.*\"depth\": *\([0-9]*\).*/\1/p') -ge 50 ] 2>/dev/null; do sleep 0.05; done"
in_a ip link set "$va" down
t0=$(date +%s%N)
timeout 10 sh -c "until '$ipcctl' $A links --json | grep -q '\"reconnects\": *[1-9]'; do sleep 0.02; done"
found=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "# link found dead ${ms} ms after the cut (heartbeat 200 ms)"
# Three heartbeats unanswered, one period to notice, and the poll.
if [ $found = 0 ] && [ $ms -lt 1500 ]; then ok $name; else
	bad $name "not found dead in time ($ms ms): $("$ipcctl" $A links)"; fi
in_a ip link set "$va" up

name=after_healing_every_message_arrives_once_in_order
echo "[ RUN      ] $name"
wait $sender
"$ipcctl" $B recv jobs -n $total --timeout 20000 --json >"$dir/got.json" 2>"$dir/recv.err"
python3 - "$dir/got.json" $total <<'EOF' >"$dir/verdict" 2>&1
import base64, json, sys
msgs = json.load(open(sys.argv[1]))["messages"]
want = ["m%d" % i for i in range(1, int(sys.argv[2]) + 1)]
got = [base64.b64decode(m["payload_base64"]).decode() for m in msgs]
print("received %d of %d" % (len(got), len(want)))
sys.exit(0 if got == want else 1)
EOF
verdict=$?
extra=$("$ipcctl" $B recv jobs --nonblock 2>/dev/null)
if [ $verdict = 0 ] && [ -z "$extra" ] && [ ! -s "$dir/send.err" ]; then
	cat "$dir/verdict"; ok $name
else
	bad $name "$(cat "$dir/verdict" "$dir/send.err" "$dir/recv.err"; echo "extra: $extra")"
fi
exit $failed
