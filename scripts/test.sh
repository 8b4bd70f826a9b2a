#!/usr/bin/env bash
# Run the test suite. Creates or reuses .venv and installs everything it needs first.
#   scripts/test.sh                 the whole suite
#   scripts/test.sh tests/index -x  any pytest arguments
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
set +e
python -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests" >&2; exit 1; fi
exit $rc
