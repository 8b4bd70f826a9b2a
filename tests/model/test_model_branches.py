"""Every registered sensor's branch: forward, backward, shapes, any tile size; family-specific behaviour."""

import pytest
import torch
import torch.nn.functional as F

from rsretrieve.model import build_branch, register_branch
from rsretrieve.model.branches import _BRANCHES, SensorBranch, branch_class, sincos_2d
from rsretrieve.model.hyperspectral import conv1d_matrix, wavelength_bins
from rsretrieve.sensors import get_sensor, list_sensors, spec_from_dict

DIM = 32


def native_size(name: str) -> int:
    """Pixels of a 480 m tile at the sensor's GSD (48 at 10 m, 16 at 30 m)."""
    return round(480 / get_sensor(name).gsd)


@pytest.mark.parametrize("name", list_sensors())
def test_forward_backward_shapes_and_finite_grads(name):
    torch.manual_seed(0)
    spec = get_sensor(name)
    branch = build_branch(spec, DIM)
    size = native_size(name)
    x = torch.randn(2, spec.num_bands, size, size)
    tokens = branch.forward_features(x)
    assert tokens.shape == (2, 16, DIM)  # 4 x 4 tokens of 120 m for a 480 m tile, whatever the GSD
    assert torch.isfinite(tokens).all()
    tokens.square().mean().backward()
    for pname, p in branch.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", list_sensors())
def test_a_finer_token_grid_is_the_second_convolution_at_stride_1(name):
    torch.manual_seed(0)
    spec = get_sensor(name)
    coarse, fine = build_branch(spec, DIM), build_branch(spec, DIM, tokens=8)
    fine.load_state_dict(coarse.state_dict())  # the same parameters: only the second convolution's stride differs
    x = torch.randn(2, spec.num_bands, native_size(name), native_size(name))
    assert fine.forward_features(x).shape == (2, 64, DIM)  # 8 x 8 tokens of 60 m for a 480 m tile
    f = F.gelu(coarse.spatial.conv1(F.gelu(coarse.stem(x))))  # (2, DIM, 8, 8)
    assert coarse.spatial.conv2.stride == (2, 2) and fine.spatial.conv2.stride == (1, 1)
    # a stride-2 'same' convolution samples the stride-1 one at every other position
    assert torch.allclose(coarse.spatial.conv2(f), fine.spatial.conv2(f)[..., ::2, ::2], atol=1e-5)


@pytest.mark.parametrize("name", list_sensors())
@pytest.mark.parametrize("size,side", [(10, 3), (16, 4), (24, 4), (33, 4), (64, 4)])
def test_any_tile_size_gives_tokens(name, size, side):
    spec = get_sensor(name)
    tokens = build_branch(spec, DIM).forward_features(torch.randn(1, spec.num_bands, size, size))
    assert tokens.shape == (1, side * side, DIM)


@pytest.mark.parametrize("name", list_sensors())
def test_wrong_band_count_is_refused(name):
    spec = get_sensor(name)
    with pytest.raises(ValueError, match=name):
        build_branch(spec, DIM)(torch.randn(1, spec.num_bands + 1, 16, 16))


@pytest.mark.parametrize("name", list_sensors())
def test_invalid_bands_do_not_change_tokens(name):
    spec = get_sensor(name)
    branch = build_branch(spec, DIM).eval()
    x = torch.randn(1, spec.num_bands, 16, 16)
    y = x.clone()
    invalid = [i for i, b in enumerate(spec.bands) if not b.valid]
    y[:, invalid] = 100.0
    with torch.no_grad():
        assert torch.equal(branch(x), branch(y))
    if name == "enmap":
        assert len(invalid) == 22  # the water-vapour bands


def test_family_weights_are_interchangeable_within_a_family():
    for family in ("optical", "sar", "hyperspectral"):
        names = list_sensors(family)
        state = build_branch(get_sensor(names[0]), DIM).state_dict()
        for other in names[1:]:
            build_branch(get_sensor(other), DIM).load_state_dict(state)  # same shapes, no spec-derived tensors


def test_sar_branch_serves_other_polarisations():
    spec = spec_from_dict({
        "name": "hhhv_sar", "family": "sar", "product": "GRD", "units": "sigma0_db", "dtype": "float32",
        "rgb_bands": ["HH"],
        "bands": [{"name": "HH", "polarization": "HH", "gsd_m": 20, "mean": -10, "std": 5},
                  {"name": "HV", "polarization": "HV", "gsd_m": 20, "mean": -17, "std": 5}]})
    branch = build_branch(spec, DIM)
    branch.load_state_dict(build_branch(get_sensor("sentinel1"), DIM).state_dict())
    assert branch(torch.randn(2, 2, 24, 24)).shape == (2, 16, DIM)


def test_optical_kernels_follow_wavelengths_not_band_order():
    s2 = get_sensor("sentinel2")
    branch = build_branch(s2, DIM).eval()
    weight, _ = branch.kernels(branch.band_code)
    perm = torch.randperm(len(branch.band_code))
    weight_perm, _ = branch.kernels(branch.band_code[perm])
    assert torch.allclose(weight[:, perm], weight_perm, atol=1e-6)


def test_spectral_conv_matrix_equals_conv1d():
    torch.manual_seed(0)
    weight = torch.randn(3, 1, 5)
    spectra = torch.randn(4, 20)
    direct = F.conv1d(spectra[:, None], weight, stride=2, padding=2).flatten(1)  # (4, 3 * 10)
    assert torch.allclose(spectra @ conv1d_matrix(weight, 20, 2), direct, atol=1e-5)


def test_wavelength_bins_average_neighbouring_bands():
    bins = wavelength_bins(torch.tensor([400.0, 450.0, 2500.0]), bins=3, lo_nm=400, hi_nm=2500)
    assert torch.allclose(bins.sum(0), torch.ones(3))
    # bin at 400 nm: weights 1 and 1 - 50/1050 before normalisation
    w = torch.tensor([1.0, 1 - 50 / 1050])
    assert torch.allclose(bins[:2, 0], w / w.sum())


def test_position_code_is_the_same_ground_for_any_grid():
    fine, coarse = sincos_2d(4, 4, 8), sincos_2d(2, 2, 8)
    assert fine.shape == (16, 8)
    # the centre of the 2x2 grid's first cell lies between fine cells 0, 1, 4, 5 (not equal, but closest to them)
    d = torch.cdist(coarse[:1], fine)[0]
    assert set(d.topk(4, largest=False).indices.tolist()) == {0, 1, 4, 5}


def test_branch_registry_refuses_duplicates_and_prefers_sensor_overrides():
    with pytest.raises(ValueError, match="registered twice"):
        register_branch("optical")(SensorBranch)
    spec = get_sensor("landsat8")

    @register_branch("landsat8")
    class _Landsat8Branch(type(build_branch(spec, DIM))):
        pass

    try:
        assert branch_class(spec) is _Landsat8Branch
        assert branch_class(get_sensor("sentinel2")).__name__ == "OpticalBranch"
    finally:
        del _BRANCHES["landsat8"]


def _sar_stem_with_every_slot(branch, x: torch.Tensor) -> torch.Tensor:
    """The SAR stem written out on all four polarisation slots (absent slots as zero images), by the definition."""
    from rsretrieve.model.sar import POLARIZATIONS, _local_stats

    b, _, h, w = x.shape
    bands = get_sensor(branch.sensor).bands
    index = torch.tensor([POLARIZATIONS.index(band.polarization) for band in bands])
    valid = torch.tensor([band.valid for band in bands])
    x = x * valid.float()[None, :, None, None]
    slots = x.new_zeros(b, len(POLARIZATIONS), h, w).index_add(1, index, x)
    mean, std = _local_stats(slots, branch.window)
    present = torch.zeros(len(POLARIZATIONS))
    present[index[valid]] = 1.0
    flags = present[None, :, None, None].expand(b, -1, h, w)
    stride = branch.stride_for(h, w)
    return F.conv2d(torch.cat([mean, std, flags], dim=1), branch.patch.weight, branch.patch.bias, stride=stride,
                    padding=branch.padding_for(stride))


@pytest.mark.parametrize("size", [48, 16, 12, 5])
def test_sar_stem_on_used_slots_equals_the_stem_on_every_slot(size):
    torch.manual_seed(0)
    branch = build_branch(get_sensor("sentinel1"), DIM)
    torch.nn.init.normal_(branch.patch.bias)
    x = torch.randn(3, 2, size, size)
    assert torch.allclose(branch.stem(x), _sar_stem_with_every_slot(branch, x), atol=1e-5)
