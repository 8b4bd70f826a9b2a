"""Cross-sensor retrieval: our model against the plain dual encoder with the same budget, ablations, throughput.

    python scripts/bench_model.py [--sites 110] [--budget 00:00:04:00] [--ablation-sites 40]
                                  [--ablation-budget 00:00:01:30] [--real] [--skip-ablation]

Everything runs through the real CLI, as a user would: `rsretrieve synth`, `ingest`, `train`, `evaluate`.
Writes the "model" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchdoc import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["sentinel1->sentinel2", "sentinel2->sentinel1", "sentinel1->enmap", "enmap->sentinel1",
         "sentinel2->enmap", "enmap->sentinel2"]
ABLATIONS = [("full objective", []), ("no within-sensor term", ["--model.within_sensor", "false"]),
             ("no VICReg regulariser", ["--model.vicreg", "false"]),
             ("no uncertainty weighting", ["--model.uncertainty_weighting", "false"]),
             ("no augmentation", ["--model.augment", "false"]),
             ("+ memory queue 4096", ["--model.queue_size", "4096"]),
             ("+ domain-adversarial", ["--model.adversarial", "true"])]


def cli(*args: object) -> str:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "rsretrieve.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    if r.returncode not in (0, 1):
        raise SystemExit(f"rsretrieve {' '.join(map(str, args))} failed:\n{r.stderr[-4000:]}")
    print(f"  rsretrieve {args[0]} ... {time.time() - t0:.0f} s", flush=True)
    return r.stdout


def workspace(root: Path, sites: int, seed: int) -> Path:
    cli("synth", root / "archive", "--scenes", sites, "--seed", seed)
    cli("ingest", root / "archive", "--workspace", root / "ws")
    return root / "ws"


def train(ws: Path, config: str, name: str, budget: str, extra: list[str] = ()) -> None:
    cli("train", "--config", ROOT / "configs" / config, "--workspace", ws, "--name", name, "--trainer.max_time",
        budget, "--trainer.enable_model_summary", "false", *extra)


def evaluate(ws: Path, models: list[str]) -> dict:
    return json.loads(cli("evaluate", "--workspace", ws, "--models", ",".join(models), "--json"))


def table(rep: dict, models: list[str], metric: str = "recall@1") -> list[str]:
    lines = ["| model | " + " | ".join(PAIRS) + " |", "|---|" + "---:|" * len(PAIRS)]
    for m in models:
        pairs = rep["models"][m]["pairs"]
        lines.append(f"| {m} | " + " | ".join(f"{pairs[p].get(metric, float('nan')):.3f}" for p in PAIRS) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=110)
    ap.add_argument("--budget", default="00:00:04:00")
    ap.add_argument("--ablation-sites", type=int, default=40)
    ap.add_argument("--ablation-budget", default="00:00:01:30")
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--skip-main", action="store_true", help="keep the main comparison already in the doc")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_model_"))
    out = ["## Cross-sensor retrieval (`scripts/bench_model.py`)", ""]

    if args.skip_main:
        import re

        from _benchdoc import DOC

        m = re.search(r"<!-- model:start -->\n(.*?)\n\n_Measured", DOC.read_text(), re.S)
        out = m.group(1).split("\n### Ablation")[0].rstrip().split("\n") + [""]
    else:
        out = _main_comparison(args, tmp, out)
    if not args.skip_ablation:
        _ablation(args, tmp, out)
    print("\n".join(out))
    print(f"\nraw reports in {tmp}")


def _main_comparison(args: argparse.Namespace, tmp: Path, out: list[str]) -> list[str]:
    print("main comparison", flush=True)
    ws = workspace(tmp / "main", args.sites, 0)
    t = time.time()
    train(ws, "demo.yaml", "default", args.budget)
    t_ours = time.time() - t
    t = time.time()
    train(ws, "dual_encoder.yaml", "baseline", args.budget)
    t_base = time.time() - t
    rep = evaluate(ws, ["default", "baseline"])
    (ROOT / "docs").mkdir(exist_ok=True)
    n = rep["tiles"]
    out += [f"Synthetic archive `rsretrieve synth --scenes {args.sites} --seed 0` (tri-sensor, 4.8 km sites), held-out "
            f"spatial blocks: {rep['cells']['test']} test cells ({rep['cells']['train']} train); test tiles per sensor: "
            + ", ".join(f"{s} {c}" for s, c in n.items()) + f". Both models trained with `--trainer.max_time "
            f"{args.budget}` on this machine (wall time incl. data loading: ours {t_ours:.0f} s, dual encoder "
            f"{t_base:.0f} s). Gallery = every test tile of the archive sensor; chance recall@1 = 1 / gallery.", "",
            "Instance recall@1 (query sensor -> archive sensor):", ""]
    out += table(rep, ["default", "baseline", "untrained", "band_stats"])
    out += ["", "Instance recall@10:", ""] + table(rep, ["default", "baseline", "untrained", "band_stats"],
                                                   "recall@10")
    out += ["", "Class mAP@10 (same dominant land cover):", ""] + table(
        rep, ["default", "baseline", "untrained", "band_stats"], "mAP@10")
    some = rep["models"]["default"]["pairs"][PAIRS[0]]
    out += ["", f"Chance: recall@1 {some['chance_recall@1']:.4f}, mAP@10 {some.get('chance_mAP@10', float('nan')):.3f}"
            f" ({PAIRS[0]}). Calibration (std of the mean positive-pair score across the 6 pairs): ours "
            f"{rep['models']['default']['calibration']['pos_score_spread_across_pairs']:.3f}, dual encoder "
            f"{rep['models']['baseline']['calibration']['pos_score_spread_across_pairs']:.3f}.", ""]
    (tmp / "main.json").write_text(json.dumps(rep, indent=1))
    write_section("model", "\n".join(out))
    return out


def _ablation(args: argparse.Namespace, tmp: Path, out: list[str]) -> None:
    print("ablation", flush=True)
    ws = workspace(tmp / "abl", args.ablation_sites, 1)
    names = []
    for i, (label, extra) in enumerate(ABLATIONS):
        name = f"abl{i}"
        train(ws, "demo.yaml", name, args.ablation_budget, extra)
        names.append(name)
    train(ws, "dual_encoder.yaml", "abl_base", args.ablation_budget)
    rep = evaluate(ws, names + ["abl_base"])
    out += ["### Ablation", "",
            f"Each objective term off (or on) in turn, one flag each, on a smaller archive "
            f"(`--scenes {args.ablation_sites} --seed 1`, {rep['cells']['test']} test cells) with a shorter "
            f"budget (`--trainer.max_time {args.ablation_budget}`) so that the whole table is one run. Command "
            "per row: `rsretrieve train --config configs/demo.yaml --workspace WS --name NAME "
            f"--trainer.max_time {args.ablation_budget} FLAG`.", "",
            "| variant | flag | mean recall@1 (6 pairs) | S1->S2 | S2->S1 | S1->EnMAP | S2->EnMAP | mean mAP@10 |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    full = None
    for (label, extra), name in zip(ABLATIONS + [("plain dual encoder", ["configs/dual_encoder.yaml"])],
                                    names + ["abl_base"]):
        p = rep["models"][name]["pairs"]
        mean = sum(p[k]["recall@1"] for k in PAIRS) / len(PAIRS)
        mmap = sum(p[k].get("mAP@10", 0) for k in PAIRS) / len(PAIRS)
        full = mean if full is None else full
        out.append(f"| {label} | `{' '.join(extra) or '-'}` | {mean:.3f} | {p['sentinel1->sentinel2']['recall@1']:.3f}"
                   f" | {p['sentinel2->sentinel1']['recall@1']:.3f} | {p['sentinel1->enmap']['recall@1']:.3f} | "
                   f"{p['sentinel2->enmap']['recall@1']:.3f} | {mmap:.3f} |")
    out += ["", "A variant whose mean recall@1 is not above the full objective's means that term does not help "
            "at this budget."]
    (tmp / "ablation.json").write_text(json.dumps(rep, indent=1))
    write_section("model", "\n".join(out))


if __name__ == "__main__":
    main()
