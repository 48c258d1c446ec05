#!/bin/sh
# ipcbench --quick, so the benchmark never rots: it must run every
# scenario to the end with every message arriving once and in order.  It
# asserts no speed (a timed test would flake on a busy machine); the
# figures are for ./quickstart bench.  Prints cmocka's report format.
set -u
bench=$top_builddir/tools/ipcbench
dir=$(mktemp -d "${TMPDIR:-/tmp}/ipctest.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
failed=0

name=ipcbench_quick_run_loses_nothing
echo "[ RUN      ] $name"
if TMPDIR=$dir timeout 300 "$bench" --quick >"$dir/out" 2>"$dir/err" &&
    grep -q '^ipcbench: every message arrived once, in order$' "$dir/out"; then
	echo "[       OK ] $name"
else
	cat "$dir/out" "$dir/err"
	echo "[  FAILED  ] $name"; failed=1
fi

name=ipcbench_json_has_a_row_per_measurement
echo "[ RUN      ] $name"
if TMPDIR=$dir timeout 300 "$bench" --quick --json rtt >"$dir/json" 2>"$dir/err" &&
    python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))
names = [r["scenario"] for r in rows]
assert "ipc rtt 64B mailbox" in names and "ipc rtt 64B direct" in names, names
assert all(r["placement"] == "pinned" for r in rows)
for r in rows:
    assert r["verdict"] in (None, "PASS", "MISS")
' "$dir/json"; then
	echo "[       OK ] $name"
else
	cat "$dir/json" "$dir/err"
	echo "[  FAILED  ] $name"; failed=1
fi

name=ipcbench_refuses_an_unknown_scenario
echo "[ RUN      ] $name"
"$bench" nosuch >"$dir/out" 2>&1
if [ $? -eq 2 ] && grep -q "no scenario 'nosuch'" "$dir/out"; then
	echo "[       OK ] $name"
else
	cat "$dir/out"; echo "[  FAILED  ] $name"; failed=1
fi
# The private broker directory is gone.
leftover=$(ls "$dir" | grep -c '^ipcbench\.' || true)
[ "$leftover" = 0 ] || { echo "left behind: $(ls "$dir")"; failed=1; }
exit $failed
