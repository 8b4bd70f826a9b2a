"""The service's tile preview as a map page shows it: nodata transparent over the map, not black ground."""

import io

import numpy as np
from PIL import Image

from rsretrieve.data.catalog import Catalog


def test_a_partly_covered_tile_previews_with_its_nodata_transparent(client, small_workspace):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel2' AND t.coverage < 0.9 AND t.coverage > 0.1")[0]
    r = client.get(f"/tiles/{t['tile_id']}/preview.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "RGBA", img.mode
    alpha = np.asarray(img)[..., 3]
    assert set(np.unique(alpha).tolist()) == {0, 255}
    # transparent: the part of the cell without data (the catalog's coverage is the fraction with data)
    assert abs((alpha == 0).mean() - (1 - t["coverage"])) < 0.05, ((alpha == 0).mean(), t["coverage"])
