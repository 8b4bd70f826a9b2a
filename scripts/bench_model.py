"""Cross-sensor retrieval: our model against the plain dual encoder with the same budget, ablations, throughput.

    python scripts/bench_model.py [--sites 110] [--budget 00:00:04:00] [--ablation-sites 40]
                                  [--ablation-budget 00:00:01:30] [--real] [--skip-ablation]
    python scripts/bench_model.py --archive foreign [--sites 160] [--budget 00:00:04:00] [--long-budget 00:00:12:00]
                                  [--skip-variants]

Everything runs through the real CLI, as a user would: `rsretrieve synth`, `ingest`, `train`, `evaluate`.
Writes the "model" section of docs/benchmarks.md. With `--archive foreign` the archive is instead a folder of
co-registered UTM GeoTIFFs per sensor that rsretrieve did not make (`scripts/make_foreign_archive.py`: real product
file names, no rsretrieve tags, its own ground model), and only the main comparison runs, into the section
"model_foreign". `--doc PATH` writes to another file than docs/benchmarks.md (for trial runs).
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
#: (row label, flags, what the row changes: "+ X" adds X to demo.yaml, "- X" takes X out of it)
ABLATIONS = [("demo.yaml as it is", [], ""),
             ("+ within-sensor term", ["--model.within_sensor", "true"], "+ the within-sensor term"),
             ("no augmentation (no flips or rotations)", ["--model.augment", "false"], "- flips and rotations"),
             ("full augmentation (+ speckle, band dropout, gain, missing sensors)", ["--model.augment", "true"],
              "+ radiometric and missing-sensor augmentation"),
             ("no VICReg regulariser", ["--model.vicreg", "false"], "- the VICReg regulariser"),
             ("no uncertainty weighting", ["--model.uncertainty_weighting", "false"], "- uncertainty weighting"),
             ("+ neighbourhood batches (16 x 16 cells)", ["--data.neighbourhood", "16"], "+ neighbourhood batching"),
             ("constant learning rate (no cosine)", ["--model.schedule", "constant"], "- the cosine schedule"),
             ("+ memory queue 4096", ["--model.queue_size", "4096"], "+ the memory queue"),
             ("+ domain-adversarial", ["--model.adversarial", "true"], "+ the domain-adversarial term")]
#: training choices compared on the foreign archive beside demo.yaml (row label, flags), same budget and split
FOREIGN_VARIANTS = [("no augmentation", ["--model.augment", "false"]),
                    ("full augmentation (+ speckle, band dropout, gain, missing sensors)", ["--model.augment", "true"])]
#: differences of mean recall@1 smaller than this (one training run per row) are read as no measurable effect
ABLATION_NOISE = 0.01


def ablation_reading(change: str, delta: float) -> str:
    """What a row says about the term it adds (``+ X``) or takes out (``- X``), from its mean recall@1 minus the
    full objective's."""
    if not change:
        return "reference"
    term, adds = change[2:], change.startswith("+")
    if abs(delta) < ABLATION_NOISE:
        return f"{term}: no measurable effect ({100 * delta:+.1f} points)"
    helps = (delta > 0) == adds
    return f"{term} {'helps' if helps else 'does not help'} ({100 * delta:+.1f} points)"


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


def foreign_workspace(root: Path, sites: int, seed: int) -> tuple[Path, dict]:
    """A user's own archive (scripts/make_foreign_archive.py) ingested as is; returns (workspace, ingest report)."""
    t0 = time.time()
    r = subprocess.run([sys.executable, ROOT / "scripts" / "make_foreign_archive.py", "--out", root / "archive",
                        "--sites", str(sites), "--seed", str(seed)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"make_foreign_archive.py failed:\n{r.stderr[-4000:]}")
    print(f"  make_foreign_archive ... {time.time() - t0:.0f} s", flush=True)
    report = json.loads(cli("ingest", root / "archive", "--workspace", root / "ws", "--json"))
    return root / "ws", report


def train(ws: Path, config: str, name: str, budget: str, extra: list[str] = ()) -> None:
    cli("train", "--config", ROOT / "configs" / config, "--workspace", ws, "--name", name, "--trainer.max_time",
        budget, "--trainer.enable_model_summary", "false", *extra)


def train_both(ws: Path, budget: str) -> tuple[dict, float, float]:
    """Ours (demo.yaml) and the plain dual encoder with the same budget, then evaluate: (report, s ours, s base)."""
    t = time.time()
    train(ws, "demo.yaml", "default", budget)
    t_ours = time.time() - t
    t = time.time()
    train(ws, "dual_encoder.yaml", "baseline", budget)
    t_base = time.time() - t
    return evaluate(ws, ["default", "baseline"]), t_ours, t_base


def evaluate(ws: Path, models: list[str]) -> dict:
    return json.loads(cli("evaluate", "--workspace", ws, "--models", ",".join(models), "--json"))


def verdict(rep: dict) -> list[str]:
    """The issue's targets, checked on ``rep`` (ours = ``default``, plain dual encoder = ``baseline``)."""
    ours, base = rep["models"]["default"]["pairs"], rep["models"]["baseline"]["pairs"]
    s12 = [p for p in PAIRS if "enmap" not in p]
    enm = [p for p in PAIRS if "enmap" in p]
    lines = []
    for label, pairs, bar in (("recall@1 >= 0.9 for S1<->S2", s12, 0.9), ("recall@1 >= 0.8 for every pair with EnMAP",
                                                                          enm, 0.8)):
        worst = min(pairs, key=lambda p: ours[p]["recall@1"])
        ok = ours[worst]["recall@1"] >= bar
        lines.append(f"- {label}: {'met' if ok else 'NOT met'} (lowest {worst} {ours[worst]['recall@1']:.3f})")
    gaps = {p: ours[p]["recall@1"] - base[p]["recall@1"] for p in PAIRS}
    worst = min(gaps, key=gaps.get)
    lines.append(f"- at least 5 points of recall@1 above the plain dual encoder on every pair: "
                 f"{'met' if gaps[worst] >= 0.05 else 'NOT met'} (smallest gap {worst} {100 * gaps[worst]:+.1f} points)")
    tiles = min(rep["tiles"].values())
    lines.append(f"- at least 2,000 test tiles per sensor: {'met' if tiles >= 2000 else 'NOT met'} (fewest {tiles})")
    return ["Targets of the model issue, checked on these numbers:", ""] + lines + [""]


def table(rep: dict, models: list[str], metric: str = "recall@1") -> list[str]:
    lines = ["| model | " + " | ".join(PAIRS) + " |", "|---|" + "---:|" * len(PAIRS)]
    for m in models:
        pairs = rep["models"][m]["pairs"]
        lines.append(f"| {m} | " + " | ".join(f"{pairs[p].get(metric, float('nan')):.3f}" for p in PAIRS) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", choices=["synth", "foreign"], default="synth",
                    help="synth: `rsretrieve synth` (sections model + ablation); foreign: a user's own GeoTIFFs from "
                         "scripts/make_foreign_archive.py (main comparison only, section model_foreign)")
    ap.add_argument("--sites", type=int, default=None, help="sites of the main archive (synth 110, foreign 160)")
    ap.add_argument("--doc", help="write the section into this file instead of docs/benchmarks.md")
    ap.add_argument("--budget", default="00:00:04:00")
    ap.add_argument("--ablation-sites", type=int, default=40)
    ap.add_argument("--ablation-budget", default="00:00:01:30")
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--skip-main", action="store_true", help="keep the main comparison already in the doc")
    ap.add_argument("--skip-variants", action="store_true",
                    help="foreign archive: do not train the FOREIGN_VARIANTS of demo.yaml's augmentation")
    ap.add_argument("--long-budget", help="foreign archive: also train ours with this longer budget (model `long`), "
                                          "to see how far more steps go")
    args = ap.parse_args()
    if args.doc:
        import _benchdoc

        _benchdoc.DOC = Path(args.doc).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench_model_"))
    if args.archive == "foreign":
        out = _foreign_comparison(args, tmp)
        print("\n".join(out))
        print(f"\nraw reports in {tmp}")
        return
    args.sites = args.sites or 110
    out = ["## Cross-sensor retrieval (`scripts/bench_model.py`)", ""]

    if args.skip_main:
        import re

        from _benchdoc import DOC

        m = re.search(r"<!-- model:start -->\n(.*?)\n\n_Measured", DOC.read_text(), re.S)
        out = m.group(1).split("\n### Ablation")[0].rstrip().split("\n") + [""]
    else:
        kept = _kept_ablation() if args.skip_ablation else None
        out = _main_comparison(args, tmp, out)
        if kept:
            out += ["", kept]
            write_section("model", "\n".join(out))
    if not args.skip_ablation:
        _ablation(args, tmp, out)
    print("\n".join(out))
    print(f"\nraw reports in {tmp}")


def _kept_ablation() -> str | None:
    """The ablation subsection already in the doc (kept when only the main comparison is rerun)."""
    from _benchdoc import kept_subsection

    kept = kept_subsection("model", "### Ablation")
    return kept[0] if kept else None


def _main_comparison(args: argparse.Namespace, tmp: Path, out: list[str]) -> list[str]:
    print("main comparison", flush=True)
    ws = workspace(tmp / "main", args.sites, 0)
    rep, t_ours, t_base = train_both(ws, args.budget)
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
    out += verdict(rep)
    (tmp / "main.json").write_text(json.dumps(rep, indent=1))
    write_section("model", "\n".join(out))
    return out


def _foreign_comparison(args: argparse.Namespace, tmp: Path) -> list[str]:
    print("main comparison on a foreign archive", flush=True)
    sites = args.sites or 160
    ws, ing = foreign_workspace(tmp / "foreign", sites, 0)
    rep, t_ours, t_base = train_both(ws, args.budget)
    models = ["default", "baseline", "untrained", "band_stats"]
    long_note = ""
    if args.long_budget:
        from bench_real import steps

        train(ws, "demo.yaml", "long", args.long_budget)
        rep = evaluate(ws, ["default", "baseline", "long"])
        models.insert(1, "long")
        long_note = (f" `long` is ours (`configs/demo.yaml`) trained with `--trainer.max_time {args.long_budget}` "
                     f"instead: {steps(ws, 'long')[1]:,} optimizer steps against {steps(ws, 'default')[1]:,} for "
                     f"`default` (the dual encoder made {steps(ws, 'baseline')[1]:,}), to see how far more steps go.")
    per = ing["catalog"]["sensors"]
    out = ["## Cross-sensor retrieval on a foreign archive (`scripts/bench_model.py --archive foreign`)", "",
           f"An archive rsretrieve did not make: `python scripts/make_foreign_archive.py --out A --sites {sites} "
           "--seed 0` writes co-registered UTM GeoTIFFs per sensor in a plain user layout (`A/S1/S1A_IW_GRDH_1SDV_"
           "..._Orb_Cal_TC_dB.tif` VV/VH dB float32, `A/S2/S2?_MSIL2A_..._N05xx_..._T<tile>_....tif` 12-band uint16 "
           "L2A stack of processing baseline 05.09/05.10 (DN = reflectance x 10000 + 1000, read with that offset), "
           "`A/EnMAP/ENMAP01-____L2A-..._SPECTRAL_IMAGE.TIF` 224-band int16 with the water-vapour bands nodata), "
           "partly overlapping footprints, each sensor on its own date, standard GeoTIFF metadata only, and its own "
           "ground model (Voronoi fields, 8 classes, its own spectra and SAR model). `rsretrieve ingest A "
           f"--workspace WS` identified {ing['report']['added']} scenes ("
           + ", ".join(f"{s} {c['scenes']}" for s, c in per.items())
           + f") from band count, dtype and file name, {len(ing['report']['problems'])} rejected; "
           f"{ing['report']['label_sources']} land-cover rasters. Held-out spatial blocks: {rep['cells']['test']} "
           f"test cells ({rep['cells']['train']} train); test tiles per sensor: "
           + ", ".join(f"{s} {c}" for s, c in rep["tiles"].items())
           + f". Both models trained with `rsretrieve train --config configs/{{demo,dual_encoder}}.yaml --workspace "
           f"WS --trainer.max_time {args.budget}` (wall time incl. data loading: ours {t_ours:.0f} s, dual encoder "
           f"{t_base:.0f} s). Gallery = every test tile of the archive sensor; chance recall@1 = 1 / gallery."
           + long_note, "", "Instance recall@1 (query sensor -> archive sensor):", ""]
    out += table(rep, models)
    out += ["", "Instance recall@10:", ""] + table(rep, models, "recall@10")
    out += ["", "Class mAP@10 (same dominant land cover):", ""] + table(rep, models, "mAP@10")
    out += [""] + verdict(rep)
    if not args.skip_variants:
        out += _foreign_variants(args, ws)
    else:
        out += _kept_foreign_variants()
    (tmp / "foreign.json").write_text(json.dumps(rep, indent=1))
    write_section("model_foreign", "\n".join(out))
    return out


def mean_recall(pairs: dict) -> float:
    """Mean recall@1 over the six ordered sensor pairs of one model's evaluation report."""
    return sum(pairs[k]["recall@1"] for k in PAIRS) / len(PAIRS)


def final_val_recall(ws: Path, name: str) -> float:
    """The last ``val/recall@1`` a model logged (mean over sensor pairs of the validation split)."""
    import csv

    logs = sorted((ws / "checkpoints" / name / "logs").glob("version_*/metrics.csv"))
    rows = [r for r in csv.DictReader(logs[-1].open()) if r.get("val/recall@1")]
    return float(rows[-1]["val/recall@1"])


def _kept_foreign_variants() -> list[str]:
    """The augmentation subsection already in the doc, with when it was measured (kept by --skip-variants)."""
    from _benchdoc import kept_subsection

    kept = kept_subsection("model_foreign", "### Augmentation on this archive")
    if not kept:
        return []
    table, when = kept
    if "_The augmentation table was measured" in table:  # kept twice: its own stamp is already there
        return [table, ""]
    return [table, "", f"_The augmentation table was measured {when}, in an earlier run of this script (kept by "
                       "`--skip-variants`; its default row is that run's model)._", ""]


def _foreign_variants(args: argparse.Namespace, ws: Path) -> list[str]:
    """demo.yaml against FOREIGN_VARIANTS of its augmentation on the same workspace, split and budget."""
    from bench_real import steps

    names = ["default"]
    for i, (_, extra) in enumerate(FOREIGN_VARIANTS):
        names.append(f"variant{i}")
        train(ws, "demo.yaml", names[-1], args.budget, extra)
    rep = evaluate(ws, names)
    out = ["### Augmentation on this archive", "",
           "`configs/demo.yaml` augments training batches with flips and 90-degree rotations only (`augment: "
           "{speckle_looks: null, band_drop_prob: 0.0, gain: 0.0, missing_prob: 0.0}`). Against it, on the same "
           f"workspace, split and budget (`--trainer.max_time {args.budget}`), one run each. Validation recall@1 is "
           "the split the choice was made on; the test columns are the held-out blocks above. The plain dual encoder "
           "above has no augmentation.", "",
           "| variant | flag | optimizer steps | val recall@1 | test mean recall@1 (6 pairs) | S1->S2 | S2->S1 | "
           "S1->EnMAP | S2->EnMAP |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (label, extra), name in zip([("demo.yaml as it is", [])] + FOREIGN_VARIANTS, names):
        p = rep["models"][name]["pairs"]
        mean = mean_recall(p)
        out.append(f"| {label} | `{' '.join(extra) or '-'}` | {steps(ws, name)[1]:,} | "
                   f"{final_val_recall(ws, name):.3f} | {mean:.3f} | "
                   + " | ".join(f"{p[k]['recall@1']:.3f}" for k in ("sentinel1->sentinel2", "sentinel2->sentinel1",
                                                                      "sentinel1->enmap", "sentinel2->enmap")) + " |")
    return out + [""]


def _ablation(args: argparse.Namespace, tmp: Path, out: list[str]) -> None:
    print("ablation", flush=True)
    ws = workspace(tmp / "abl", args.ablation_sites, 1)
    names = []
    for i, (label, extra, _) in enumerate(ABLATIONS):
        name = f"abl{i}"
        train(ws, "demo.yaml", name, args.ablation_budget, extra)
        names.append(name)
    train(ws, "dual_encoder.yaml", "abl_base", args.ablation_budget)
    rep = evaluate(ws, names + ["abl_base"])
    (tmp / "ablation.json").write_text(json.dumps(rep, indent=1))
    out += ablation_table(rep, names, args)
    write_section("model", "\n".join(out))


def ablation_table(rep: dict, names: list[str], args: argparse.Namespace) -> list[str]:
    """The ablation subsection from the evaluation report of its runs (``names`` in the order of ABLATIONS)."""
    out = ["### Ablation", "",
            f"Each objective term or training choice of `configs/demo.yaml` off (or on) in turn, one flag each, on a smaller archive "
            f"(`--scenes {args.ablation_sites} --seed 1`, {rep['cells']['test']} test cells) with a shorter "
            f"budget (`--trainer.max_time {args.ablation_budget}`) so that the whole table is one run. Command "
            "per row: `rsretrieve train --config configs/demo.yaml --workspace WS --name NAME "
            f"--trainer.max_time {args.ablation_budget} FLAG`.", "",
            "| variant | flag | mean recall@1 (6 pairs) | S1->S2 | S2->S1 | S1->EnMAP | S2->EnMAP | mean mAP@10 | reading |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    full = None
    for (label, extra, change), name in zip(
            ABLATIONS + [("plain dual encoder", ["configs/dual_encoder.yaml"], "")], names + ["abl_base"]):
        p = rep["models"][name]["pairs"]
        mean = mean_recall(p)
        mmap = sum(p[k].get("mAP@10", 0) for k in PAIRS) / len(PAIRS)
        full = mean if full is None else full
        reading = ablation_reading(change, mean - full) if name != "abl_base" else "baseline"
        out.append(f"| {label} | `{' '.join(extra) or '-'}` | {mean:.3f} | {p['sentinel1->sentinel2']['recall@1']:.3f}"
                   f" | {p['sentinel2->sentinel1']['recall@1']:.3f} | {p['sentinel1->enmap']['recall@1']:.3f} | "
                   f"{p['sentinel2->enmap']['recall@1']:.3f} | {mmap:.3f} | {reading} |")
    out += ["", f"Reading: a \"+ X\" row above the first row means X helps, a \"no X\" row below it means X helps; a "
            f"difference under {100 * ABLATION_NOISE:.0f} point of mean recall@1 (one training run per row) is read as "
            "no measurable effect. Read at this budget and archive only: a term that does not help here may still "
            "help with longer training."]
    return out


if __name__ == "__main__":
    main()
