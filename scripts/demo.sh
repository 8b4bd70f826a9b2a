#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: installs if needed, then
#   synth (a tri-sensor co-registered archive) -> ingest (it and the real samples) -> catalog summary -> export.
# Everything is written under $OUT (default ./results/demo); the workspace is $OUT/workspace.
#   scripts/demo.sh                     defaults: 50 sites, seed 0
#   SCENES=10 OUT=/tmp/demo scripts/demo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
OUT="${OUT:-$ROOT/results/demo}"
SCENES="${SCENES:-50}"
SEED="${SEED:-0}"
WS="$OUT/workspace"
mkdir -p "$OUT"
t0=$(date +%s)

echo "== 1. synthetic tri-sensor archive ($SCENES sites, seed $SEED)"
rsretrieve synth "$OUT/archive" --scenes "$SCENES" --sensors sentinel1,sentinel2,enmap --seed "$SEED"

echo "== 2. ingest the archive"
rsretrieve ingest "$OUT/archive" --workspace "$WS"

if [[ -d "$RSRETRIEVE_REAL_DATA" ]]; then
  echo "== 3. ingest the real samples ($RSRETRIEVE_REAL_DATA) into a workspace of their own"
  # exit code 1 is expected here: the 300 m Landsat-7 test scene is too coarse for 480 m tiles and is reported
  rsretrieve ingest "$RSRETRIEVE_REAL_DATA" --workspace "$OUT/workspace_real" || [[ $? -eq 1 ]]
  rsretrieve ingest "$RSRETRIEVE_REAL_DATA/landsat7_rasterio" --workspace "$OUT/workspace_landsat" --tile-size 4800
else
  echo "== 3. real samples not found at $RSRETRIEVE_REAL_DATA: skipped"
fi

echo "== 4. catalog summary"
rsretrieve catalog --workspace "$WS"
rsretrieve catalog --workspace "$WS" --json > "$OUT/catalog.json"

echo "== 5. export the catalog as GeoParquet"
rsretrieve export "$OUT/tiles.parquet" --workspace "$WS"

echo
echo "done in $(( $(date +%s) - t0 )) s; results in $OUT:"
echo "  $OUT/archive          the synthetic GeoTIFF archive (+ truth/ land cover)"
echo "  $WS        catalog.sqlite (open with sqlite3 / QGIS)"
echo "  $OUT/tiles.parquet    one row per tile (geopandas.read_parquet)"
echo "  $OUT/catalog.json     the summary above"
