#!/usr/bin/env bash
# Run the test suite. Creates or reuses .venv and installs everything it needs first.
#   scripts/test.sh                 the whole suite
#   scripts/test.sh tests/index -x  any pytest arguments
# Tests run on one pytest-xdist worker per CPU, at most 4 (a file's tests on one worker, so that its fixtures are
# made once): on 2 cores a fresh-clone suite took 9 min 3 s, against 14 min 42 s in one process (README).
# RSRETRIEVE_TEST_WORKERS=N (or auto) sets the number, 0 runs them all in this process (as does -n 0 among the
# arguments).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
set +e
WORKERS="${RSRETRIEVE_TEST_WORKERS:-auto}"
if [[ "$WORKERS" == auto ]]; then
  WORKERS="$(nproc 2>/dev/null || echo 1)"
  (( WORKERS > 4 )) && WORKERS=4
elif [[ ! "$WORKERS" =~ ^[0-9]+$ ]]; then
  echo "RSRETRIEVE_TEST_WORKERS must be a number of workers or auto, got '$WORKERS'" >&2
  exit 2
fi
if (( WORKERS > 1 )); then
  python -m pytest -n "$WORKERS" --dist loadfile "$@"
else
  python -m pytest "$@"
fi
rc=$?
set -e
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests" >&2; exit 1; fi
exit $rc
