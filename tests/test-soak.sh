#!/bin/sh
# The soak run (tests/soak.c): one private ipcd under steady traffic,
# client churn, hostile clients and kills for SOAK_SECONDS (unset: 60, as
# make check and CI run it; make soak sets 600), with every message
# accounted for, the broker's counters reconciled, and its RSS and
# descriptors checked at quiet points.  tests/soak prints cmocka's report
# format for tests/cmocka-driver, and a "soak: summary:" line; a seed to
# replay with is in its first line (tests/soak --seed N --seconds N).
set -u
: "${top_builddir:=.}"
seconds=${SOAK_SECONDS:-60}
case $seconds in
''|*[!0-9]*)
	echo "[ RUN      ] soak"
	echo "SOAK_SECONDS='$seconds' is not a number of seconds"
	echo "[  FAILED  ] soak"
	exit 1 ;;
esac
soak=$top_builddir/tests/soak
if [ ! -x "$soak" ]; then
	echo "[ RUN      ] soak"
	echo "$soak is not built (make tests/soak)"
	echo "[  FAILED  ] soak"
	exit 1
fi
# Its own watchdog ends it (the run's length twice, plus ten minutes);
# its children and ipcd die with it.
exec "$soak" --seconds "$seconds"
