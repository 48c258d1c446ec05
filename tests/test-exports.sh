#!/bin/sh
# The shared library exports exactly the public API listed in libipc.sym:
# nothing internal leaks, nothing public is missing.  Prints cmocka's report
# format for tests/cmocka-driver.
set -u
lib=$top_builddir/libipc/.libs/libipc.so
sym=$top_srcdir/libipc/libipc.sym
echo "[ RUN      ] exports_match_symbol_list"
if [ ! -f "$lib" ]; then
	echo "no shared library at $lib (built with --disable-shared?)"
	echo "[  SKIPPED ] exports_match_symbol_list"
	exit 0
fi
want=$(sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);$/\1/p' "$sym" | sort)
have=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ && $3 !~ /^LIBIPC_/ { sub(/@.*/, "", $3); print $3 }' | sort)
if [ -n "$want" ] && [ "$want" = "$have" ]; then
	echo "[       OK ] exports_match_symbol_list"
else
	echo "expected exports:"; echo "$want"
	echo "actual exports:"; echo "$have"
	echo "[  FAILED  ] exports_match_symbol_list"
	exit 1
fi
