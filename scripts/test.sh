#!/usr/bin/env bash
# Run the test suite. Creates or reuses .venv and installs everything it needs first.
#   scripts/test.sh                 the whole suite
#   scripts/test.sh tests/index -x  any pytest arguments
# Tests run on one pytest-xdist worker per CPU, at most 4 (a file's tests on one worker, so that its fixtures are
# made once): 7 min 31 s instead of 11 min 16 s on 2 cores. RSRETRIEVE_TEST_WORKERS=N sets the number, 0 runs them
# all in this process (as does -n 0 among the arguments).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
set +e
if [[ -z "${RSRETRIEVE_TEST_WORKERS:-}" ]]; then
  RSRETRIEVE_TEST_WORKERS="$(nproc 2>/dev/null || echo 1)"
  (( RSRETRIEVE_TEST_WORKERS > 4 )) && RSRETRIEVE_TEST_WORKERS=4
fi
if (( RSRETRIEVE_TEST_WORKERS > 1 )); then
  python -m pytest -n "$RSRETRIEVE_TEST_WORKERS" --dist loadfile "$@"
else
  python -m pytest "$@"
fi
rc=$?
set -e
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests" >&2; exit 1; fi
exit $rc
