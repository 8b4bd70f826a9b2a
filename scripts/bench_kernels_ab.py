"""The exact-scan kernels of this checkout against those of another git revision, on the same vectors, interleaved.

    python scripts/bench_kernels_ab.py [--old REV] [--rows 1000000] [--repeat 15]

Loads ``rsretrieve/index/kernels.py`` of ``REV`` (``git show``) beside the current one in one process, checks that
both return the same top-10 rows (scores within 1e-5), and times ``scan_topk`` of each, one call after the other, on
1% of the rows (100 ranges) and on one range of 100k rows, with and without the segment's uint8 codes, one query
and a batch of 8. Writes the section "kernels_ab" of docs/benchmarks.md. numba compiles both versions into a
temporary cache first (a minute or two).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="rsretrieve-kernels-ab-")  # before numba is imported

import numpy as np  # noqa: E402
from _benchdoc import publish  # noqa: E402

from rsretrieve.index.segment import encode  # noqa: E402

I64 = np.iinfo(np.int64)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="HEAD~1", help="git revision of the kernels to compare against")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-doc", action="store_true", help="print only")
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.old], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="rsretrieve-kernels-old-"))
    (tmp / "kernels_old.py").write_text(subprocess.run(["git", "show", f"{args.old}:rsretrieve/index/kernels.py"],
                                                       cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    old = _load(tmp / "kernels_old.py", "kernels_old")
    new = _load(ROOT / "rsretrieve" / "index" / "kernels.py", "kernels_new")
    rng = np.random.default_rng(0)
    n, d = args.rows, 128
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codes, params = encode(x)
    none = (np.zeros((0, d), np.uint8), np.zeros((3, d)))

    def scan(k, q, starts, stops, use_codes):
        st, sp = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
        return k.scan_topk(x, q, 10, st, sp, np.ones(st.size, np.int8), False, np.zeros(1, np.int64), I64.min,
                           I64.max, np.zeros(0, bool), np.zeros(n, np.int16), np.zeros(0, bool), np.zeros(n, np.int64),
                           np.zeros(0, np.int64), np.zeros(n, np.int32), np.zeros(0, np.int32), 0, np.zeros(n),
                           np.zeros(n), np.zeros(0), np.zeros(0, np.int8), np.zeros((0, 8)),
                           *((codes, params) if use_codes else none), np.zeros((0, 2)), np.zeros(1, np.int64),
                           np.zeros(0, np.int64))

    starts = np.linspace(0, n - n // 10_000, 100).astype(np.int64)
    spread = (starts, starts + n // 10_000)
    one = np.ascontiguousarray(x[rng.integers(0, n, 1)] + 0.05 * rng.standard_normal((1, d)).astype(np.float32))
    eight = np.ascontiguousarray(x[rng.integers(0, n, 8)] + 0.05 * rng.standard_normal((8, d)).astype(np.float32))
    cases = [("1% of rows in 100 ranges, codes", one, *spread, True),
             ("1% of rows in 100 ranges, float32 only", one, *spread, False),
             ("1% of rows in 100 ranges, float32 only, 8 queries", eight, *spread, False),
             ("10% of rows in one range, codes", one, [0], [n // 10], True),
             ("10% of rows in one range, float32 only", one, [0], [n // 10], False)]
    t0 = time.time()
    for _, q, a, b, c in cases:  # compile both outside the timings
        ro, rn = scan(old, q, a, b, c), scan(new, q, a, b, c)
        assert ro[1].tolist() == rn[1].tolist(), "the two revisions disagree on the top-10 rows"
        np.testing.assert_allclose(ro[0], rn[0], rtol=0, atol=1e-5)
    compile_s = time.time() - t0
    lines = ["## Exact-scan kernels against an earlier revision (`scripts/bench_kernels_ab.py`)", "",
             f"`scan_topk` of this checkout ({head}) against `{args.old}` ({rev}), loaded side by side in one process "
             f"and called alternately, {args.repeat} times each per case, on the same {n:,} x {d} unit vectors "
             f"(k = 10, no other filter; both return the same rows). First calls (numba compiling both): "
             f"{compile_s:.0f} s.", "",
             "| case | old p50 (ms) | new p50 (ms) | new / old |", "|---|---:|---:|---:|"]
    for name, q, a, b, c in cases:
        to, tn = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            scan(old, q, a, b, c)
            to.append(time.perf_counter() - t)
            t = time.perf_counter()
            scan(new, q, a, b, c)
            tn.append(time.perf_counter() - t)
        mo, mn = float(np.median(to)), float(np.median(tn))
        lines.append(f"| {name} | {1e3 * mo:.3f} | {1e3 * mn:.3f} | {mn / mo:.2f} |")
    publish("kernels_ab", lines, write=not args.no_doc)


if __name__ == "__main__":
    main()
