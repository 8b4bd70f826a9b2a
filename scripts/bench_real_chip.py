"""The model issue's reference bar on one real co-registered Sentinel-1/2 chip, under three train/test splits.

    python scripts/bench_real_chip.py [--real DIR] [--tile 16] [--steps 1200] [--no-write]

The model issue sets its real-data bar with "a plain dual encoder (one small CNN per sensor, symmetric InfoNCE,
nothing else) reaches recall@1 about 0.5 / recall@10 about 0.9 on a real co-registered Sentinel-1/2 chip (train on
one half, test on the other, 128-tile gallery)". This script runs exactly such a dual encoder on the SSL4EO-S12
location of ``../shared/data/real`` (264 x 264 px at 10 m, two dates per sensor; Sentinel-1 reprojected onto the
Sentinel-2 grid with rasterio, since the two grids are offset by about 40 m), cut into 16 x 16 px tiles (160 m,
256 tiles per date), with a fixed number of optimizer steps (so machine load does not change the result), under
three splits:

- ``spatial halves``: train on the left half of the chip, test on the right half less one buffer column of tiles
  (no test tile borders a training tile; the split rsretrieve's own evaluation uses);
- ``random half``: 128 random tiles train, the other 128 test (test tiles border training tiles);
- ``other date``: train on every tile of one date pair (June), test on every tile of the other (August/September):
  the same ground, seen in training.

Writes the "real_chip" section of docs/benchmarks.md. Needs nothing but torch, rasterio and the real samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.warp import Resampling, reproject
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchdoc import REAL_DATA, publish  # noqa: E402

S2_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


def load_chip(ssl: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[str]]:
    """(S1 images (2, 264, 264) on the S2 grid, S2 images (12, 264, 264), S1 dates, S2 dates), each standardised."""
    s2, s2_dates, ref = [], [], None
    for scene in sorted((ssl / "s2a").glob("*/*/")):
        bands = []
        for b in S2_BANDS:
            with rasterio.open(scene / f"{b}.tif") as ds:
                if b == "B4":
                    ref = (ds.transform, ds.crs, ds.height, ds.width)
                bands.append(ds.read(1, out_shape=(264, 264), resampling=Resampling.bilinear).astype(np.float32))
        s2.append(np.stack(bands))
        s2_dates.append(scene.name[:8])
    transform, crs, h, w = ref
    s1, s1_dates = [], []
    for scene in sorted((ssl / "s1").glob("*/*/")):
        bands = []
        for b in ("VV", "VH"):
            with rasterio.open(scene / f"{b}.tif") as ds:
                dst = np.zeros((h, w), np.float32)
                reproject(ds.read(1), dst, src_transform=ds.transform, src_crs=ds.crs, dst_transform=transform,
                          dst_crs=crs, resampling=Resampling.bilinear)
                bands.append(dst)
        s1.append(np.stack(bands))
        s1_dates.append(scene.name.split("_")[4][:8])

    def std(x: np.ndarray) -> np.ndarray:
        return (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True)

    return [std(x) for x in s1], [std(x) for x in s2], s1_dates, s2_dates


def tiles(img: np.ndarray, t: int) -> torch.Tensor:
    """(C, H, W) -> (n*n, C, t, t), row-major over the tile grid."""
    n = img.shape[1] // t
    return torch.tensor(np.stack([img[:, r * t:(r + 1) * t, c * t:(c + 1) * t] for r in range(n) for c in range(n)]))


def tower(cin: int, width: int = 32, embed: int = 128) -> nn.Sequential:
    """The plain dual encoder's tower (as rsretrieve.model.dual_encoder): three stride-2 conv-BN-ReLU, pool, linear."""
    chans, layers = [cin, width, 2 * width, 2 * width], []
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], embed))


def run(train: list[tuple[torch.Tensor, torch.Tensor]], test: tuple[torch.Tensor, torch.Tensor], steps: int,
        seed: int) -> dict[str, float]:
    """Train on pairs of (S1 tiles, S2 tiles) aligned by index; recall@1/10 S1->S2 and S2->S1 on ``test``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    e1, e2 = tower(train[0][0].shape[1]), tower(train[0][1].shape[1])
    scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    opt = torch.optim.AdamW([*e1.parameters(), *e2.parameters(), scale], lr=1e-3)
    batch = min(64, len(train[0][0]))
    for _ in range(steps):
        a, b = train[rng.integers(len(train))]
        idx = torch.as_tensor(rng.choice(len(a), batch, replace=False))
        k = int(rng.integers(4))  # the same rotation for both sensors keeps the pair co-registered
        z1 = F.normalize(e1(torch.rot90(a[idx], k, (2, 3))), dim=1)
        z2 = F.normalize(e2(torch.rot90(b[idx], k, (2, 3))), dim=1)
        logits = scale.exp().clamp(max=100) * z1 @ z2.T
        y = torch.arange(batch)
        loss = (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    e1.eval()
    e2.eval()
    with torch.no_grad():
        s = F.normalize(e1(test[0]), dim=1) @ F.normalize(e2(test[1]), dim=1).T  # (n, n), positives on the diagonal
    out = {}
    for name, m in (("s1->s2", s), ("s2->s1", s.T)):
        rank = (m > m.diag()[:, None]).sum(1)
        out[f"{name} R@1"], out[f"{name} R@10"] = float((rank < 1).float().mean()), float((rank < 10).float().mean())
    out["gallery"] = len(test[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=REAL_DATA)
    ap.add_argument("--tile", type=int, default=16, help="tile side in pixels (16: 160 m, 256 tiles per date)")
    ap.add_argument("--steps", type=int, default=1200, help="optimizer steps per run (batch 64)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    ssl = args.real / "ssl4eo_s12"
    if not ssl.is_dir():
        raise SystemExit(f"SSL4EO-S12 sample not found under {args.real} (--real DIR or RSRETRIEVE_REAL_DATA)")
    torch.set_num_threads(1)
    t_all = time.time()
    s1, s2, d1, d2 = load_chip(ssl)
    T1, T2 = [tiles(x, args.tile) for x in s1], [tiles(x, args.tile) for x in s2]
    n = 264 // args.tile
    cols = np.array([c for _ in range(n) for c in range(n)])
    left, right = np.where(cols < n // 2)[0], np.where(cols > n // 2)[0]  # column n//2 is the buffer
    perm = np.random.default_rng(0).permutation(n * n)
    rnd_tr, rnd_te = np.sort(perm[: n * n // 2]), np.sort(perm[n * n // 2:])
    pairs = [(0, 0), (1, 1)]  # (S1 date, S2 date) closest in time: June with June, September with August
    splits = {
        "spatial halves (1 buffer column)": ([(T1[i][left], T2[j][left]) for i, j in pairs],
                                             (T1[0][right], T2[0][right])),
        "random half of the tiles": ([(T1[i][rnd_tr], T2[j][rnd_tr]) for i, j in pairs],
                                     (T1[0][rnd_te], T2[0][rnd_te])),
        "other date, same ground": ([(T1[0], T2[0])], (T1[1], T2[1])),
    }
    rows = []
    for label, (train, test) in splits.items():
        res = [run(train, test, args.steps, seed) for seed in range(args.seeds)]
        mean = {k: float(np.mean([r[k] for r in res])) for k in res[0]}
        rows.append((label, mean, len(train[0][0]) * len(train)))
        print(label, mean, flush=True)
    chance1, chance10 = 1 / rows[0][1]["gallery"], 10 / rows[0][1]["gallery"]
    lines = [
        "## The real-data reference bar, checked (`scripts/bench_real_chip.py`)", "",
        "The model issue's real-data bar: \"a plain dual encoder ... recall@1 about 0.5 / recall@10 about 0.9 on a "
        "real co-registered Sentinel-1/2 chip (train on one half, test on the other, 128-tile gallery)\". Here that "
        f"dual encoder (the `dual_encoder` tower, symmetric InfoNCE, batch 64, {args.steps} AdamW steps, random "
        f"90-degree rotations, mean of {args.seeds} seeds) runs on the SSL4EO-S12 location ({d1[0]}/{d2[0]} and "
        f"{d1[1]}/{d2[1]} S1/S2 dates, S1 reprojected onto the S2 grid), {args.tile} x {args.tile} px tiles "
        f"({args.tile * 10} m, {n * n} per date). Training pairs S1 and S2 of the same place and closest dates; "
        "test queries are the S1 tiles of one date, the gallery the S2 tiles of the closest date.", "",
        "| split | training tile pairs | gallery | S1->S2 R@1 | S1->S2 R@10 | S2->S1 R@1 | S2->S1 R@10 |",
        "|---|---:|---:|---:|---:|---:|---:|"]
    for label, m, ntrain in rows:
        lines.append(f"| {label} | {ntrain} | {m['gallery']:.0f} | {m['s1->s2 R@1']:.3f} | {m['s1->s2 R@10']:.3f} | "
                     f"{m['s2->s1 R@1']:.3f} | {m['s2->s1 R@10']:.3f} |")
    spatial = rows[0]
    best = max(rows, key=lambda r: r[1]["s1->s2 R@1"])
    reached = [r[0] for r in rows if r[1]["s1->s2 R@1"] >= 0.45]
    lines += [
        "", f"Chance on the spatial split: recall@1 {chance1:.3f}, recall@10 {chance10:.3f}. On ground it has not "
        f"seen (spatial halves) the plain dual encoder reaches S1->S2 recall@1 {spatial[1]['s1->s2 R@1']:.3f} "
        f"({spatial[1]['s1->s2 R@1'] / chance1:.1f}x chance); the best of the three splits is \"{best[0]}\" at "
        f"{best[1]['s1->s2 R@1']:.3f}. "
        + (f"Recall@1 near 0.5 is reached only by: {', '.join(reached)}." if reached else
           "None of the three splits comes near the issue's 0.5 on this chip, so that figure is not reproduced "
           "here; the real-sample numbers above are to be read against these rows (same sensors, same kind of "
           "split), not against 0.5."), "",
        f"Whole script: {time.time() - t_all:.0f} s."]
    publish("real_chip", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
