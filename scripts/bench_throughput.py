"""Training and embedding throughput per sensor (tiles/s) on this machine, ours against the plain dual encoder.

    python scripts/bench_throughput.py [--batch 64] [--seconds 8] [--threads 2]

For every registered sensor: tiles of the demo grid (480 m: 48 px at 10 m, 16 px at 30 m, ...), random normalised
values (the cost of a forward/backward pass does not depend on the values). "embed" is ``model.embed`` under
``torch.inference_mode`` (what ``rsretrieve index`` runs); "train" is forward + backward of the projection through
one sensor's branch and the shared head (what one sensor costs inside a training step, without the loss and the
optimizer). Models are built as ``configs/demo.yaml`` and ``configs/dual_encoder.yaml`` build them. Writes the
"throughput" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchdoc import write_section  # noqa: E402

from rsretrieve.data.tiles import tile_px  # noqa: E402
from rsretrieve.model.dual_encoder import DualEncoder  # noqa: E402
from rsretrieve.sensors import get_sensor, list_sensors  # noqa: E402
from rsretrieve.training.task import CrossSensorTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TILE_M = 480.0


def rate(fn, batch: int, seconds: float) -> float:
    """Tiles per second of ``fn()`` on one batch, after two warm-up calls, over at least ``seconds``."""
    fn(), fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sensors = [s for s in list_sensors()]
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["model"]
    ours = CrossSensorTask(sensors=sensors, **demo).model  # built by the training task itself, with its defaults
    dual = DualEncoder(sensors, embed_dim=128)
    rows = []
    for s in sensors:
        spec = get_sensor(s)
        n = tile_px(spec, TILE_M)
        x = torch.randn(args.batch, spec.num_bands, n, n)
        out = {}
        for name, model in (("ours", ours), ("dual encoder", dual)):
            model.eval()

            def embed(model=model):
                with torch.inference_mode():
                    model.embed(s, x)

            model.train()

            def train(model=model):
                model.zero_grad(set_to_none=True)
                model.project(s, x).square().sum().backward()

            out[name] = (rate(embed, args.batch, args.seconds), rate(train, args.batch, args.seconds))
        rows.append((s, spec.num_bands, n, out))
        print(s, out, flush=True)
    lines = [f"Batch {args.batch}, {args.threads} threads, 480 m tiles, models as in `configs/demo.yaml` (ours) and "
             "`configs/dual_encoder.yaml`; each rate over at least "
             f"{args.seconds:g} s after warm-up. Load average before the run: {os.getloadavg()[0]:.2f}.", "",
             "| sensor | bands | tile px | ours embed tiles/s | ours train tiles/s | dual enc. embed | dual enc. train |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s, c, n, out in rows:
        (oe, ot), (de, dt) = out["ours"], out["dual encoder"]
        lines.append(f"| {s} | {c} | {n} | {oe:,.0f} | {ot:,.0f} | {de:,.0f} | {dt:,.0f} |")
    lines += ["", "\"train\" is forward + backward of one sensor's tiles through its branch and the head (no loss, no "
              "optimizer step); a training step of `demo.yaml` runs it once per sensor present in the batch.",
              "Command: `python scripts/bench_throughput.py`"]
    md = "## Training and embedding throughput (`scripts/bench_throughput.py`)\n\n" + "\n".join(lines)
    if args.no_write:
        print(md)
    else:
        print(f"wrote {write_section('throughput', md)}")


if __name__ == "__main__":
    main()
