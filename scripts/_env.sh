# Sourced by scripts/test.sh and scripts/demo.sh: create or reuse .venv and install the project into it.
# Re-installs only when pyproject.toml changed since the last install (a stamp file in .venv keeps its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
  echo "[setup] creating $ROOT/.venv with $($PY --version)" >&2
  "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.rsretrieve-installed"
WANT="$(sha1sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
  echo "[setup] installing rsretrieve and its dependencies into .venv (first time: a few minutes)" >&2
  "$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$ROOT/.venv/bin/python" -c "import rsretrieve, torch, torchgeo, faiss, rasterio, numba, xdist" \
    || { echo "[setup] install failed" >&2; exit 3; }
  echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# normalised where it exists: the path is printed in outputs (contact sheet titles), "main/../shared" read oddly
REAL_DEFAULT="$(cd "$ROOT/../shared/data/real" 2>/dev/null && pwd || echo "$ROOT/../shared/data/real")"
export RSRETRIEVE_REAL_DATA="${RSRETRIEVE_REAL_DATA:-$REAL_DEFAULT}"
