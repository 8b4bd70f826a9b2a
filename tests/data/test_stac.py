"""Local STAC items: assets with local hrefs are ingested as one scene with the item's datetime."""

from datetime import datetime, timezone

import numpy as np
import pystac

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from tests.conftest import write_tif


def test_stac_item_with_per_band_assets(tmp_path):
    d = tmp_path / "item"
    rng = np.random.default_rng(0)
    for pol, mean in (("VV", -12.0), ("VH", -19.0)):
        write_tif(d / f"{pol.lower()}.tif", (mean + rng.standard_normal((96, 96))).astype("float32"),
                  nodata=float("nan"))
    item = pystac.Item(id="s1-test", geometry=None, bbox=None,
                       datetime=datetime(2021, 5, 4, 3, 2, 1, tzinfo=timezone.utc),
                       properties={"platform": "sentinel-1a"})
    for pol in ("VV", "VH"):
        item.add_asset(pol.lower(), pystac.Asset(href=f"./{pol.lower()}.tif", roles=["data"],
                                                 extra_fields={"eo:bands": [{"name": pol}]}))
    item.set_self_href(str(d / "item.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.problems == [] and report.added == 1  # the two tifs are not ingested a second time
        (s,) = cat.scenes()
        assert s["sensor"] == "sentinel1" and s["acquired"] == "2021-05-04T03:02:01Z"
        assert s["key"] == str(d / "item.json") and set(s["files"]) == {"VV", "VH"}
        assert s["n_tiles"] >= 4


def test_stac_item_with_only_remote_assets_is_rejected(tmp_path):
    item = pystac.Item(id="remote", geometry=None, bbox=None, datetime=datetime(2021, 1, 1, tzinfo=timezone.utc),
                       properties={})
    item.add_asset("B04", pystac.Asset(href="https://example.invalid/B04.tif", roles=["data"]))
    item.set_self_href(str(tmp_path / "remote.json"))
    item.save_object(include_self_link=False)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path / "remote.json"], cat)
    assert [str(p) for p in report.problems] == [
        f"{tmp_path / 'remote.json'}: STAC item has no raster asset with a local href"]
