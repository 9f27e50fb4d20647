#!/usr/bin/env bash
# The whole test suite as `make test` runs it: two pytest processes side by side, then the
# tests that restart libvirtd alone (markers in tests/conftest.py).
#
# - the guest lane (`-m guest_lane`): tests that boot QEMU guests under TCG (and the fault
#   suite, whose sites are its own, to even the lanes out). They spend minutes waiting on
#   a guest that uses one or two CPUs, so the other lane runs meanwhile;
# - everything else (`-m "not guest_lane and not exclusive"`), one test at a time;
# - then `-m exclusive` (kills and restarts libvirtd: nothing else may use it then).
#
# The guest lane's output goes to build/test-guest-lane.log and is printed when both
# lanes are done. Exits non-zero when any of the three fails. Extra arguments go to every
# pytest call (e.g. -x, -k EXPR).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-.venv/bin/pytest}
mkdir -p build
log=build/test-guest-lane.log

"$PYTEST" -q -m guest_lane -p no:cacheprovider "$@" >"$log" 2>&1 &
guests=$!
# A Ctrl-C or a failed CI step must not leave the guest lane running on its own.
trap 'kill -INT $guests 2>/dev/null; wait $guests 2>/dev/null' INT TERM

"$PYTEST" -q -m "not guest_lane and not exclusive" "$@"
rc_host=$?
wait $guests
rc_guests=$?
trap - INT TERM
echo "=============================== guest lane ==============================="
cat "$log"
"$PYTEST" -q -m exclusive -p no:cacheprovider "$@"
rc_excl=$?
# pytest exits 5 when a selection is empty (e.g. -k matched nothing in one lane).
ok() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
echo "run-tests: host lane exit $rc_host, guest lane exit $rc_guests, exclusive exit $rc_excl"
ok $rc_host && ok $rc_guests && ok $rc_excl
