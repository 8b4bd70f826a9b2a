"""Ingest throughput: synth a tri-sensor archive, ingest it, report scenes/s and tiles/s in docs/benchmarks.md.

    python scripts/bench_ingest.py [--scenes 50] [--workers 1 2] [--keep DIR]

Measured in one run on the same archive: a cold ingest per worker count (each into a fresh workspace), and the
idempotent re-run (everything skipped) as the cost of resuming.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchdoc import write_section  # noqa: E402

from rsretrieve.data.catalog import Catalog  # noqa: E402
from rsretrieve.data.ingest import ingest  # noqa: E402
from rsretrieve.data.synthetic import make_archive  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", help="write the archive here and keep it")
    ap.add_argument("--no-doc", action="store_true", help="print only, do not touch docs/benchmarks.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    archive = Path(args.keep) if args.keep else tmp / "archive"
    try:
        t0 = time.perf_counter()
        summary = make_archive(archive, scenes=args.scenes, sensors=("sentinel1", "sentinel2", "enmap"), seed=0)
        t_synth = time.perf_counter() - t0
        n_files = sum(len(s["files"]) for s in summary["scenes"])
        size_mb = sum(f.stat().st_size for f in archive.rglob("*") if f.is_file()) / 1e6
        rows = []
        for w in args.workers:
            ws = tmp / f"ws{w}"
            with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
                t0 = time.perf_counter()
                rep = ingest([archive], cat, workers=w)
                dt = time.perf_counter() - t0
                assert not rep.problems, rep.problems
                t0 = time.perf_counter()
                again = ingest([archive], cat, workers=w)
                dt_again = time.perf_counter() - t0
                per = cat.counts()["sensors"]
            rows.append((w, rep.added, rep.tiles, dt, again.skipped, dt_again, per))
        lines = [
            "## Ingest (`scripts/bench_ingest.py`)",
            "",
            f"Archive: `rsretrieve synth --scenes {args.scenes} --sensors sentinel1,sentinel2,enmap --seed 0` = "
            f"{n_files} GeoTIFF scenes ({size_mb:.0f} MB, 4.8 km sites: S1 2x480x480 float32, S2 12x480x480 "
            f"uint16, EnMAP 224x160x160 int16) + {len(summary['scenes'])} land-cover rasters; synth took "
            f"{t_synth:.1f} s. Grid 480 m. Each ingest reads every pixel of the bands it needs for the nodata, "
            "NaN and cloud masks.",
            "",
            "| workers | scenes | tiles | time s | scenes/s | tiles/s | re-run (all skipped) s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for w, added, tiles, dt, skipped, dt_again, _ in rows:
            lines.append(f"| {w} | {added} | {tiles} | {dt:.2f} | {added / dt:.1f} | {tiles / dt:.0f} | "
                         f"{dt_again:.2f} ({skipped} skipped) |")
        per = rows[0][-1]
        lines += ["", "Tiles per sensor: " + ", ".join(f"{k} {v.get('tiles', 0)}" for k, v in per.items()) + "."]
        text = "\n".join(lines)
        print(text)
        if not args.no_doc:
            print(f"\nwrote {write_section('ingest', text)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
