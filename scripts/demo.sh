#!/usr/bin/env bash
# The main job, end to end, on a fresh machine (installs into .venv on first use):
#   synth a tri-sensor archive -> ingest it and the real samples -> train configs/demo.yaml -> index ->
#   cross-sensor example queries -> evaluation table -> results folder with contact sheets, GeoJSON, charts, JSON.
#
#   scripts/demo.sh                              defaults: 60 sites, seed 0, results in ./results/demo
#   SCENES=20 TRAIN_TIME=00:00:01:00 scripts/demo.sh      a quicker run
#   BASELINE=1 scripts/demo.sh                   also train the plain dual-encoder baseline with the same budget
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
OUT="${OUT:-$ROOT/results/demo}"
SCENES="${SCENES:-60}"
SEED="${SEED:-0}"
TRAIN_TIME="${TRAIN_TIME:-00:00:04:00}"
WS="$OUT/workspace"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
rm -rf "$OUT"
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - t0 )) s)"; }

step "1. synthetic tri-sensor archive: $SCENES sites x (Sentinel-1, Sentinel-2, EnMAP), seed $SEED"
rsretrieve synth "$OUT/archive" --scenes "$SCENES" --sensors sentinel1,sentinel2,enmap --seed "$SEED"

step "2. ingest the archive"
rsretrieve ingest "$OUT/archive" --workspace "$WS"

if [[ -d "$RSRETRIEVE_REAL_DATA" ]]; then
  step "3. ingest the real samples ($RSRETRIEVE_REAL_DATA)"
  # exit code 1 is expected: the 300 m Landsat-7 test scene is too coarse for 480 m tiles, and is reported
  rsretrieve ingest "$RSRETRIEVE_REAL_DATA" --workspace "$WS" || [[ $? -eq 1 ]]
else
  step "3. real samples not found at $RSRETRIEVE_REAL_DATA: skipped"
fi

step "4. train configs/demo.yaml (budget $TRAIN_TIME)"
rsretrieve train --config configs/demo.yaml --workspace "$WS" --trainer.max_time "$TRAIN_TIME" \
  --trainer.enable_model_summary false
if [[ "${BASELINE:-0}" == 1 ]]; then
  step "4b. train the plain dual-encoder baseline with the same budget"
  rsretrieve train --config configs/dual_encoder.yaml --workspace "$WS" --name baseline \
    --trainer.max_time "$TRAIN_TIME" --trainer.enable_model_summary false
fi

step "5. index every tile"
rsretrieve index --workspace "$WS"

step "6. cross-sensor example queries"
# pick example tiles of the held-out split (the queries the model never trained on)
read -r S1_ID S1_BBOX S2_ID S2_START S2_END BEN_TILE BEN_BBOX < <(python - "$WS" "$RSRETRIEVE_REAL_DATA" <<'EOF'
import glob, sys
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.datamodule import CellDataModule
ws, real = sys.argv[1], sys.argv[2]
dm = CellDataModule(ws, ["sentinel1", "sentinel2", "enmap"])
with Catalog(f"{ws}/catalog.sqlite") as cat:
    test = dm.split_index(cat)["test"]
    i = next(i for i in range(len(test.cells)) if all(test.tile_ids[s][i] >= 0 for s in test.tile_ids))
    s1 = cat.tile(int(test.tile_ids["sentinel1"][i]))
    s2 = cat.tile(int(test.tile_ids["sentinel2"][i + 1]))
    s2_scene = cat.scene(s2["scene_id"])
    y, m = int(s2_scene["acquired"][:4]), int(s2_scene["acquired"][5:7])
    ben = sorted(glob.glob(f"{real}/bigearthnet_mm/S1/*87_48"))
    ben_bbox = "none"
    if ben:
        sc = [s for s in cat.scenes("sentinel2") if "S2A_MSIL2A_20170613T101031_87_48" in s["key"]]
        if sc:
            ben_bbox = f"{sc[0]['west'] - 0.05},{sc[0]['south'] - 0.05},{sc[0]['east'] + 0.05},{sc[0]['north'] + 0.05}"
print(s1["tile_id"], f"{s1['lon'] - 0.5},{s1['lat'] - 0.5},{s1['lon'] + 0.5},{s1['lat'] + 0.5}",
      s2["tile_id"], f"{y - 1}-{m:02d}-01", f"{y + 1}-{m:02d}-28", ben[0] if ben else "none", ben_bbox)
EOF
)
echo "-- a Sentinel-1 tile -> Sentinel-2 results inside a 1-degree bbox ($S1_BBOX)"
rsretrieve query --workspace "$WS" --tile-id "$S1_ID" --target-sensors sentinel2 --bbox "$S1_BBOX" -k 8 \
  --png "$OUT/query_s1_to_s2.png" --geojson "$OUT/query_s1_to_s2.geojson"
echo "-- a Sentinel-2 tile -> EnMAP results acquired $S2_START .. $S2_END"
rsretrieve query --workspace "$WS" --tile-id "$S2_ID" --target-sensors enmap --start "$S2_START" --end "$S2_END" \
  -k 8 --png "$OUT/query_s2_to_enmap.png" --geojson "$OUT/query_s2_to_enmap.geojson"
if [[ "$BEN_TILE" != none ]]; then
  echo "-- a real BigEarthNet Sentinel-1 patch (VV/VH files) -> Sentinel-2 tiles near it"
  rsretrieve query --workspace "$WS" --tile "$BEN_TILE" --target-sensors sentinel2 --bbox "$BEN_BBOX" -k 6 \
    --png "$OUT/query_bigearthnet_s1_to_s2.png" --geojson "$OUT/query_bigearthnet_s1_to_s2.geojson"
fi

step "7. evaluation on the held-out spatial blocks"
rsretrieve evaluate --workspace "$WS" --out "$OUT/evaluation.json" --charts "$OUT"

step "8. export the catalog and embeddings as GeoParquet"
rsretrieve export "$OUT/tiles.parquet" --workspace "$WS"

echo
echo "done in $(( $(date +%s) - t0 )) s. Results in $OUT:"
ls -1 "$OUT" | sed 's/^/  /'
echo "  (open the *.geojson in QGIS; serve the workspace with: rsretrieve serve --workspace $WS)"
