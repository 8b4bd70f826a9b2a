import numpy as np
import pytest
import torch

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.datasets import CellDataset, TileCache, collate_cells, index_cells, spatial_split
from rsretrieve.data.grid import cell_id, parse_cell_id
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from rsretrieve.data.tiles import normalise, tile_px
from rsretrieve.sensors import get_sensor
from tests.conftest import cells_over


def test_spatial_split_is_deterministic_and_buffered():
    cells = [cell_id(32633, 480, r, c) for r in range(40) for c in range(40)]
    a = spatial_split(cells, block=4, seed=1)
    assert a == spatial_split(cells, block=4, seed=1) and a != spatial_split(cells, block=4, seed=2)
    counts = {k: sum(v == k for v in a.values()) for k in ("train", "val", "test", "buffer")}
    assert counts["test"] > 0 and counts["train"] > counts["test"] and counts["buffer"] > 0
    test = {parse_cell_id(c)[2:] for c, v in a.items() if v == "test"}
    for c, v in a.items():
        if v in ("train", "val"):
            _, _, r, col = parse_cell_id(c)
            assert not any((r + dr, col + dc) in test for dr in (-1, 0, 1) for dc in (-1, 0, 1)), c
    # whole blocks: the 4 x 4 cells of a block that is not next to a test block share one split
    with pytest.raises(ValueError, match="must sum to 1"):
        spatial_split(cells, fractions=(0.5, 0.1, 0.1))


@pytest.mark.parametrize("zones", [(32632, 32633), (32633, 32733)], ids=["32N|33N", "33N|33S"])
def test_spatial_split_leaves_out_training_ground_of_a_test_cell_in_another_zone(zones):
    # the same ground tiled in two zones: along the 32N/33N boundary (12 E), and in the north and south grids at
    # the equator (scenes centred either side of it); blocks are drawn per zone, so without the cross-zone rule a
    # training cell of one zone lies on the ground of a test cell of the other
    import shapely
    from rsretrieve.data.grid import Cell
    lat0, lat1 = (44.95, 45.05) if zones[1] == 32633 else (-0.05, 0.05)
    cells = [c for epsg in zones for c in cells_over(11.9, lat0, 12.1, lat1, epsg)]
    footprint = {c: Cell(*parse_cell_id(c)).footprint() for c in cells}
    for seed in range(3):
        split = spatial_split(cells, block=4, seed=seed)
        per_zone = {}
        for epsg in zones:
            per_zone.update(spatial_split([c for c in cells if parse_cell_id(c)[0] == epsg], block=4, seed=seed))
        # the rule only ever turns training / validation cells into buffer: test cells and the rest are as before
        assert all(split[c] == per_zone[c] or (split[c] == "buffer" and per_zone[c] in ("train", "val"))
                   for c in cells)
        tests = [c for c in cells if split[c] == "test"]
        tree = shapely.STRtree([footprint[c] for c in tests])
        for c in cells:
            if split[c] in ("train", "val"):
                hit = tree.query(footprint[c], predicate="intersects")
                assert not len(hit), (c, split[c], tests[hit[0]])
        for epsg in zones:  # both zones keep training ground
            assert sum(split[c] == "train" and parse_cell_id(c)[0] == epsg for c in cells) > 100
        lost = sum(split[c] != per_zone[c] for c in cells)
        assert 0 < lost < len(cells) // 2


def test_same_ground_pairs_the_cells_of_two_zones_that_share_area():
    from rsretrieve.data.datasets import CellIndex
    from rsretrieve.data.grid import Cell
    cells = cells_over(11.97, 44.99, 12.03, 45.01, 32632) + cells_over(11.97, 44.99, 12.03, 45.01, 32633)
    index = CellIndex(cells, np.full(len(cells), -1), {})
    same = index.same_ground()
    assert same and all(parse_cell_id(cells[i])[0] != parse_cell_id(cells[j])[0] for i, js in same.items() for j in js)
    assert all(i in same[j] for i, js in same.items() for j in js)  # symmetric
    feet = [Cell(*parse_cell_id(c)).footprint() for c in cells]
    for i in range(len(cells)):  # each pair shares area on the ground; a cell shares none with the rest
        js = same.get(i, [])
        assert all(feet[i].intersection(feet[j]).area > 0 for j in js)
        others = [k for k in range(len(cells)) if k not in js and cells[k][:3] != cells[i][:3]]
        assert all(feet[i].intersection(feet[k]).area < 1e-6 * feet[i].area for k in others)
    assert 2 <= max(len(js) for js in same.values()) <= 6  # a cell turned by ~2 degrees spans at most 3 x 2 others
    one_zone = [c for c in cells if c.startswith("32N")]
    assert CellIndex(one_zone, np.full(len(one_zone), -1), {}).same_ground() == {}


def test_normalise_zeroes_nodata_and_invalid_bands():
    spec = get_sensor("enmap")
    dn = np.full((224, 2, 2), 1000, np.int16)
    dn[:, 0, 0] = -32768
    x = normalise(dn, spec)
    b = spec.bands[0]
    assert x[0, 1, 1] == pytest.approx((0.1 - b.mean) / b.std)
    assert x[0, 0, 0] == 0.0
    assert not x[130].any()  # band 131 is a water-vapour band
    assert tile_px(spec, 480) == 16 and tile_px(get_sensor("sentinel1"), 480) == 48


def test_cells_of_a_synthetic_archive_carry_all_sensors_at_native_size(tmp_path):
    make_archive(tmp_path / "a", scenes=2, seed=5, size_m=1920)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([tmp_path / "a"], cat)
        sensors = ["sentinel1", "sentinel2", "enmap"]
        idx = index_cells(cat, sensors, min_valid=0.0)
        cache = TileCache(cat, idx.tile_ids, 480)
    ds = CellDataset(idx, cache)
    shapes = {"sentinel1": (2, 48, 48), "sentinel2": (12, 48, 48), "enmap": (224, 16, 16)}
    batch = collate_cells([ds[i] for i in range(4)], shapes)
    for s, shape in shapes.items():
        assert tuple(batch["inputs"][s].shape) == (4, *shape)
    assert (idx.labels >= 0).mean() > 0.8  # land-cover truth ingested (edge cells under half covered: none)
    full = [i for i in range(len(ds)) if all(idx.tile_ids[s][i] >= 0 for s in sensors)]
    assert len(full) >= 2 * 16  # 1920 m sites: at least 4 x 4 cells seen by all three sensors
    # the batched gather (DataLoader's __getitems__) gives the same batch as collating cell by cell,
    # cells with missing sensors included
    some = full[:6]
    idx.tile_ids["enmap"][some[0]] = -1  # two cells lose a sensor
    idx.tile_ids["sentinel1"][some[3]] = -1
    one_by_one = collate_cells([ds[i] for i in some], shapes)
    batched = collate_cells(ds.__getitems__(some), shapes)
    assert set(batched) == set(one_by_one) == {"cell", "label", "inputs", "present"}
    for key in ("cell", "label"):
        assert batched[key].tolist() == one_by_one[key].tolist()
    for s in sensors:
        assert batched["present"][s].tolist() == one_by_one["present"][s].tolist()
        assert batched["present"][s].sum() == 6 - (s in ("enmap", "sentinel1"))
        assert batched["inputs"][s].dtype == one_by_one["inputs"][s].dtype
        assert torch.equal(batched["inputs"][s], one_by_one["inputs"][s])


def test_neighbourhood_batches_use_every_cell_once_and_few_neighbourhoods():
    from rsretrieve.data.datasets import NeighbourhoodBatchSampler
    from rsretrieve.data.grid import parse_cell_id

    cells = [f"33N_480m_r{r}_c{c}" for r in range(40) for c in range(40)] + \
            [f"18S_480m_r{r}_c{c}" for r in range(10) for c in range(10)]
    sampler = NeighbourhoodBatchSampler(cells, batch_size=64, groups=4, neighbourhood=8, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(cells) // 64
    flat = [i for b in batches for i in b]
    assert all(len(b) == 64 for b in batches)
    assert len(flat) == len(set(flat)) >= len(cells) - 64 - 16  # each cell at most once; only a tail is dropped
    for b in batches:
        hoods = {(parse_cell_id(cells[i])[0], parse_cell_id(cells[i])[2] // 8, parse_cell_id(cells[i])[3] // 8)
                 for i in b}
        assert len(hoods) <= 8  # 4 runs of 16 cells, each from at most two neighbourhoods
    sampler.set_epoch(0)
    again = list(sampler)
    assert again == batches  # deterministic for a seed and epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(ValueError, match="multiple of groups"):
        NeighbourhoodBatchSampler(cells, batch_size=60, groups=8)
