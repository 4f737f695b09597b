#!/bin/sh
# The slowest tests, so whoever adds a test sees what it costs.
#
#   tools/slowest_tests.sh [N] [pytest arguments...]
#   tools/slowest_tests.sh                          # the unit tests, 25 slowest
#   tools/slowest_tests.sh 10 tests/export/test_export.py  # one file, 10 slowest
#   tools/slowest_tests.sh 40 tests --nbmake notebooks   # what `make test` runs
#
# Runs pytest on the tiny profile, offline, as `make test` does, and prints pytest's
# "slowest durations" table (setup, call and teardown separately: a shared fixture's cost
# shows as the setup of the first test that uses it) and the summary line with the total.
set -e
cd "$(dirname "$0")/.."
N=25
case "$1" in
  '' | *[!0-9]*) ;;
  *) N=$1; shift ;;
esac
[ $# -gt 0 ] || set -- tests
MEDREASON_PROFILE=tiny HF_HUB_OFFLINE=1 exec .venv/bin/python -m pytest "$@" -q \
  --durations="$N" --durations-min=0.5
