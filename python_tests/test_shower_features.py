"""sim2real_fast.shower_features: values and gradients against the reference and an independent NumPy
version of CaloChallenge's HighLevelFeatures, edge cases, op checks, errors; Geometry.feature_coordinates."""

import importlib
import math

import numpy as np
import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import geometry as geo
from sim2real_fast import reference

from helpers import tolerances

# Every preset, with a batch size that keeps the file fast.
PRESETS = [("calogan", 48), ("calochallenge-ds1-photons", 48), ("calochallenge-ds1-pions", 32),
           ("calochallenge-ds2", 8), ("calochallenge-ds3", 2), ("hcal", 3)]


def _showers(n, geometry, dtype, device, seed=0, low=0.05):
    """(n, n_cells) strictly positive energies (exponential, so a few cells dominate)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n, geo.get(geometry).n_cells, dtype=torch.float64).exponential_(1.0, generator=g) + low
    return images.to(dtype=dtype, device=device)


def _op_inputs(geometry, images):
    geometry = geo.get(geometry)
    return list(geometry.layer_offsets), geometry.feature_coordinates(dtype=images.dtype, device=images.device)


def _stats(features):
    """The op's (layer_stats, event_stats) rebuilt from a ShowerFeatures."""
    per_layer = (features.layer_energy, features.centroid_x, features.centroid_y, features.width_x,
                 features.width_y, features.sparsity)
    return torch.stack(per_layer, -1), torch.stack([features.total, features.max_fraction], -1)


def _reference(images, geometry, threshold=0.0):
    layer_stats, event_stats, _ = reference.shower_features(images, *_op_inputs(geometry, images), threshold)
    return layer_stats, event_stats


def _assert_close(got, expected, dtype):
    tol = tolerances(dtype)
    torch.testing.assert_close(got, expected, rtol=tol["rtol"], atol=tol["rtol"] * expected.abs().max().item() + tol["atol"])


def _weighted_sum(layer_stats, event_stats, seed=1):
    """A scalar that depends on every feature with its own random weight."""
    g = torch.Generator().manual_seed(seed)
    w_layer = torch.randn(layer_stats.shape, generator=g, dtype=torch.float64).to(layer_stats)
    w_event = torch.randn(event_stats.shape, generator=g, dtype=torch.float64).to(event_stats)
    return (layer_stats * w_layer).sum() + (event_stats * w_event).sum()


@pytest.mark.parametrize(("name", "n"), PRESETS, ids=[name for name, _ in PRESETS])
def test_values_and_gradients_match_reference(device, dtype, name, n):
    images = _showers(n, name, dtype, device)
    images[0, : geo.get(name).layer_offsets[1]] = 0  # an empty first layer
    ours_in, ref_in = images.clone().requires_grad_(), images.clone().requires_grad_()
    features = s2r.shower_features(ours_in, name, threshold=0.5)
    assert features.layer_energy.shape == (n, geo.get(name).n_layers) and features.total.dtype == dtype
    ours, ref = _stats(features), _reference(ref_in, name, threshold=0.5)
    for got, expected in zip(ours, ref):
        _assert_close(got, expected, dtype)
    grad_ours = torch.autograd.grad(_weighted_sum(*ours), ours_in)[0]
    grad_ref = torch.autograd.grad(_weighted_sum(*ref), ref_in)[0]
    _assert_close(grad_ours, grad_ref, dtype)


def test_matches_calochallenge_high_level_features():
    """An independent NumPy version of CaloChallenge's XMLHandler + HighLevelFeatures formulas."""
    geometry = geo.get("calochallenge-ds1-photons")
    images = _showers(64, geometry, torch.float64, "cpu", seed=3)
    images[images < 0.4] = 0  # sparse, as real showers
    data = images.numpy()
    features = s2r.shower_features(images, geometry)
    for l, layer in enumerate(geometry.layers):
        start, stop = geometry.layer_offsets[l], geometry.layer_offsets[l + 1]
        r_edges = np.array(layer.r_edges)
        r_mid = r_edges[:-1] + (r_edges[1:] - r_edges[:-1]) / 2
        alpha_edges = np.linspace(-math.pi, math.pi, layer.rows + 1)
        alpha_mid = alpha_edges[:-1] + (alpha_edges[1:] - alpha_edges[:-1]) / 2
        r = np.tile(r_mid, layer.rows)  # r fastest, then alpha
        alpha = np.repeat(alpha_mid, layer.cols)
        eta, phi = r * np.cos(alpha), r * np.sin(alpha)
        energy = data[:, start:stop]
        e_sum = energy.sum(-1)
        ec_eta = (eta * energy).sum(-1) / (e_sum + 1e-16)
        ec_phi = (phi * energy).sum(-1) / (e_sum + 1e-16)
        width_eta = np.sqrt(((eta * eta * energy).sum(-1) / (e_sum + 1e-16) - ec_eta**2).clip(min=0.0))
        width_phi = np.sqrt(((phi * phi * energy).sum(-1) / (e_sum + 1e-16) - ec_phi**2).clip(min=0.0))
        sparsity = 1.0 - (energy > 0).mean(-1)  # CaloChallenge's; ours is its complement
        for got, expected in [(features.layer_energy, e_sum), (features.centroid_x, ec_eta), (features.centroid_y, ec_phi),
                              (features.width_x, width_eta), (features.width_y, width_phi), (1 - features.sparsity, sparsity)]:
            # CaloChallenge's one-pass width cancels to ~sqrt(eps) |x| ~ 1e-5 mm where the true width is 0.
            np.testing.assert_allclose(got[:, l].numpy(), expected, rtol=1e-9, atol=1e-5)
    np.testing.assert_allclose(features.total.numpy(), data.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(features.max_fraction.numpy(), data.max(-1) / data.sum(-1), rtol=1e-12)


def test_definitions_on_a_hand_made_shower():
    """calogan layer_2 (12 x 6 cells of 40 x 80 mm): two cells, widths from the textbook formula."""
    geometry = geo.get("calogan")
    images = torch.zeros(1, geometry.n_cells, dtype=torch.float64)
    start = geometry.layer_offsets[2]
    images[0, start + 0] = 3.0  # row 0, col 0: x = -200 mm, y = -220 mm
    images[0, start + 6 * 1 + 2] = 1.0  # row 1, col 2: x = -40 mm, y = -180 mm
    f = s2r.shower_features(images, geometry, threshold=2.0)
    assert f.layer_energy[0].tolist() == [0.0, 0.0, 4.0]
    cx, cy = (3 * -200 + -40) / 4, (3 * -220 + -180) / 4
    torch.testing.assert_close(f.centroid_x[0, 2].item(), cx)
    torch.testing.assert_close(f.centroid_y[0, 2].item(), cy)
    torch.testing.assert_close(f.width_x[0, 2].item(), math.sqrt((3 * (-200 - cx) ** 2 + (-40 - cx) ** 2) / 4))
    torch.testing.assert_close(f.width_y[0, 2].item(), math.sqrt((3 * (-220 - cy) ** 2 + (-180 - cy) ** 2) / 4))
    assert f.sparsity[0].tolist() == [0.0, 0.0, 1 / 72]  # only the 3.0 cell is above 2.0
    assert f.total.item() == 4.0 and f.max_fraction.item() == 0.75


def test_zero_images_and_empty_layers_give_zeros_and_finite_gradients(device, dtype):
    geometry = geo.get("calogan")
    images = _showers(3, geometry, dtype, device)
    images[0] = 0  # an all-zero image
    images[1, geometry.layer_offsets[1]:geometry.layer_offsets[2]] = 0  # empty layer_1
    images.requires_grad_()
    f = s2r.shower_features(images, geometry)
    table = f.as_tensor()
    assert torch.isfinite(table).all()
    assert (table[0] == 0).all()
    for feature in (f.layer_energy, f.centroid_x, f.centroid_y, f.width_x, f.width_y, f.sparsity):
        assert feature[1, 1] == 0
    grad = torch.autograd.grad(_weighted_sum(*_stats(f)), images, retain_graph=True)[0]
    assert torch.isfinite(grad).all()
    # Centroids and widths of empty layers carry no gradient, nor does max_fraction where total == 0.
    grad = torch.autograd.grad((f.centroid_x + f.width_y).sum() + f.max_fraction[0], images)[0]
    assert (grad[0] == 0).all() and (grad[1, geometry.layer_offsets[1]:geometry.layer_offsets[2]] == 0).all()
    assert (grad[1, : geometry.layer_offsets[1]] != 0).any()


def test_single_cell_layer_has_zero_width_and_zero_width_gradient():
    geometry = geo.get("calogan")
    images = torch.zeros(1, geometry.n_cells, dtype=torch.float64)
    images[0, 7] = 2.0
    images.requires_grad_()
    f = s2r.shower_features(images, geometry)
    assert f.width_x[0, 0] == 0 and f.width_y[0, 0] == 0
    assert f.centroid_x[0, 0].item() == geometry.feature_coordinates(dtype=torch.float64)[7, 0].item()
    assert (torch.autograd.grad(f.width_x.sum(), images)[0] == 0).all()


def test_negative_energies(device, dtype):
    geometry = "calochallenge-ds1-pions"
    images = _showers(16, geometry, dtype, device) - 0.3  # about a quarter of the cells below 0
    assert (images < 0).any()
    ours_in, ref_in = images.clone().requires_grad_(), images.clone().requires_grad_()
    ours, ref = _stats(s2r.shower_features(ours_in, geometry)), _reference(ref_in, geometry)
    for got, expected in zip(ours, ref):
        _assert_close(got, expected, dtype)
    _assert_close(torch.autograd.grad(_weighted_sum(*ours), ours_in)[0],
                  torch.autograd.grad(_weighted_sum(*ref), ref_in)[0], dtype)


def test_non_contiguous_input(device, dtype):
    geometry = geo.get("calogan")
    images = _showers(20, geometry, dtype, device).T.contiguous().T[::2]  # column-major, every other row
    assert not images.is_contiguous()
    images.requires_grad_()
    f = s2r.shower_features(images, geometry)
    for got, expected in zip(_stats(f), _reference(images.detach().contiguous(), geometry)):
        _assert_close(got, expected, dtype)
    assert torch.autograd.grad(f.total.sum(), images)[0].shape == images.shape


def test_empty_batch(device, dtype):
    images = torch.zeros(0, 504, dtype=dtype, device=device, requires_grad=True)
    f = s2r.shower_features(images, "calogan")
    assert f.as_tensor().shape == (0, 2 + 6 * 3) and f.max_fraction.shape == (0,)
    assert torch.autograd.grad(f.as_tensor().sum(), images)[0].shape == (0, 504)


def test_only_some_outputs_used_matches_reference(device):
    """A None gradient for event_stats (or layer_stats) reaches the backward op as zeros."""
    images = _showers(4, "calogan", torch.float64, device)
    for pick in (lambda f: f.width_x.sum(), lambda f: f.total.sum() + f.max_fraction.sum()):
        ours_in, ref_in = images.clone().requires_grad_(), images.clone().requires_grad_()
        ours = torch.autograd.grad(pick(s2r.shower_features(ours_in, "calogan")), ours_in)[0]
        layer_stats, event_stats = _reference(ref_in, "calogan")
        ref_features = s2r.ShowerFeatures(event_stats[:, 0], *layer_stats.unbind(2), event_stats[:, 1], ())
        ref = torch.autograd.grad(pick(ref_features), ref_in)[0]
        _assert_close(ours, ref, torch.float64)


def test_max_fraction_gradient_goes_to_the_first_maximal_cell():
    images = torch.full((1, 504), 0.5, dtype=torch.float64)
    images[0, [10, 300]] = 2.0  # a tie: cell 10 is the first
    images.requires_grad_()
    f = s2r.shower_features(images, "calogan")
    total = images.sum().item()
    assert f.max_fraction.item() == pytest.approx(2.0 / total)
    grad = torch.autograd.grad(f.max_fraction.sum(), images)[0][0]
    assert grad[10].item() == pytest.approx(1 / total - 2.0 / total**2)
    assert grad[300].item() == pytest.approx(-2.0 / total**2)


@pytest.mark.parametrize("first", [True, False], ids=["nan-first", "nan-later"])
def test_max_cell_with_nan_matches_the_reference(device, dtype, first):
    """NaN counts as the largest value (the first NaN cell, as torch.argmax) on every path: CPU, CUDA
    and the reference give the same max_cell, and max_fraction is NaN."""
    images = _showers(4, "calogan", dtype, device)
    images[1, 0 if first else 300] = float("nan")
    images[1, 401] = float("nan")
    images[2, 7] = float("nan")
    offsets, coords = _op_inputs("calogan", images)
    _, event_stats, max_cell = torch.ops.sim2real_fast.shower_features(images, offsets, coords, 0.0)
    _, ref_event_stats, ref_max_cell = reference.shower_features(images, offsets, coords, 0.0)
    assert max_cell.tolist() == ref_max_cell.tolist()
    assert max_cell[1] == (0 if first else 300) and max_cell[2] == 7
    assert torch.isnan(event_stats[1:3, 1]).all() and torch.isnan(ref_event_stats[1:3, 1]).all()
    torch.testing.assert_close(event_stats[[0, 3]], ref_event_stats[[0, 3]], **tolerances(dtype))


def test_half_precision_is_computed_in_float32():
    images = _showers(4, "calogan", torch.float32, "cpu")
    f = s2r.shower_features(images.half(), "calogan")
    assert f.total.dtype == torch.float32
    torch.testing.assert_close(f.total, images.half().float().sum(1))


def test_feature_table_names_and_dict():
    geometry = geo.get("calogan")
    f = s2r.shower_features(_showers(5, geometry, torch.float32, "cpu"), geometry)
    names = f.names()
    assert names[:4] == ["energy_total", "energy_layer_0", "energy_layer_1", "energy_layer_2"]
    assert "centroid_y_layer_1" in names and "sparsity_layer_2" in names and names[-1] == "max_fraction"
    table = f.as_tensor()
    assert table.shape == (5, len(names)) == (5, 20)
    columns = f.as_dict()
    assert list(columns) == names
    torch.testing.assert_close(columns["width_x_layer_1"], f.width_x[:, 1])
    torch.testing.assert_close(columns["energy_total"], f.total)


def test_gradcheck_float64(device):
    images = _showers(2, "calochallenge-ds1-photons", torch.float64, device, low=0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: s2r.shower_features(x, "calochallenge-ds1-photons").as_tensor(), (images,))


def test_opcheck(device):
    images = _showers(3, "calogan", torch.float32, device)
    offsets, coords = _op_inputs("calogan", images)
    torch.library.opcheck(torch.ops.sim2real_fast.shower_features.default, (images.requires_grad_(), offsets, coords, 0.5))
    layer_stats, event_stats, max_cell = torch.ops.sim2real_fast.shower_features(images.detach(), offsets, coords, 0.5)
    args = (torch.randn_like(layer_stats), torch.randn_like(event_stats), images.detach(), offsets, coords,
            layer_stats, event_stats, max_cell)
    torch.library.opcheck(torch.ops.sim2real_fast._shower_features_backward.default, args)


def test_torch_compile_fullgraph():
    images = _showers(6, "calogan", torch.float32, "cpu").requires_grad_()

    def features(x):
        return s2r.shower_features(x, "calogan", threshold=0.1).as_tensor()

    expected = features(images)  # also fills the geometry's coordinate cache
    compiled = torch.compile(features, fullgraph=True, backend="aot_eager")
    out = compiled(images)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), images)[0], torch.autograd.grad(expected.sum(), images)[0])


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(4, 503), ValueError, r"images must be \(N, n_cells\) = \(N, 504\) for geometry 'calogan'"),
        (torch.rand(504), ValueError, r"got shape \(504,\)"),
        (torch.ones(4, 504, dtype=torch.int64), TypeError, "floating-point"),
        ([[0.0] * 504], TypeError, "must be a torch.Tensor"),
    ],
    ids=["wrong-n-cells", "1-d", "integer", "list"],
)
def test_bad_input_raises_a_clear_error(images, error, match):
    with pytest.raises(error, match=match):
        s2r.shower_features(images, "calogan")


def test_bad_geometry_and_threshold():
    with pytest.raises(geo.GeometryError, match="unknown geometry 'calogn'"):
        s2r.shower_features(torch.rand(2, 504), "calogn")
    with pytest.raises(TypeError, match="threshold must be a float"):
        s2r.shower_features(torch.rand(2, 504), "calogan", threshold="0")


def test_op_checks_its_arguments(device):
    """Bad input is an error on every device (on CUDA a bad max_cell is flagged by the kernel and
    raised by the host, never a device assert)."""
    images = torch.rand(2, 504, device=device)
    offsets, coords = _op_inputs("calogan", images)
    op = torch.ops.sim2real_fast.shower_features
    with pytest.raises(ValueError, match="layer_offsets must end at n_cells = 504"):
        op(images, [0, 288, 432, 500], coords, 0.0)
    with pytest.raises(ValueError, match="layer_offsets must be non-decreasing"):
        op(images, [0, 432, 288, 504], coords, 0.0)
    with pytest.raises(TypeError, match="coords must have the dtype of images"):
        op(images, offsets, coords.double(), 0.0)
    with pytest.raises(ValueError, match=r"coords must be \(n_cells, 2\)"):
        op(images, offsets, coords[:10], 0.0)
    with pytest.raises(TypeError, match="images must be a floating-point tensor"):
        op(images.half(), offsets, coords.half(), 0.0)
    layer_stats, event_stats, max_cell = op(images, offsets, coords, 0.0)
    backward = torch.ops.sim2real_fast._shower_features_backward
    with pytest.raises(IndexError, match="max_cell.* is out of range"):
        backward(layer_stats, event_stats, images, offsets, coords, layer_stats, event_stats, max_cell + 504)
    with pytest.raises(ValueError, match="grad_event_stats must have shape"):
        backward(layer_stats, event_stats[:1], images, offsets, coords, layer_stats, event_stats, max_cell)


# ---- Geometry.feature_coordinates -------------------------------------------------------------


def test_feature_coordinates_cartesian_in_mm():
    geometry = geo.get("calogan")
    xy = geometry.feature_coordinates(dtype=torch.float64)
    assert xy.shape == (504, 2) and xy.dtype == torch.float64 and xy.device.type == "cpu"
    torch.testing.assert_close(xy, geometry.cell_centres(dtype=torch.float64).flip(1))
    # layer_0: 3 rows x 96 cols of 160 x 5 mm; cell 1 is row 0, col 1.
    assert xy[1].tolist() == [-232.5, -160.0]


def test_feature_coordinates_without_cell_size_in_cells():
    xy = geo.get("hcal").feature_coordinates()
    assert xy.dtype == torch.get_default_dtype()
    assert xy[0].tolist() == [-41.5, -35.5]  # 72 rows (iphi) x 84 cols (ieta)
    assert xy[84 + 3].tolist() == [-38.5, -34.5]  # row 1, col 3


def test_feature_coordinates_cylindrical_as_calochallenge():
    geometry = geo.get("calochallenge-ds2")  # 16 alpha bins x 9 r bins, r_edges start 0, 4.65
    xy = geometry.feature_coordinates(dtype=torch.float64)
    alpha, r = -math.pi + math.pi / 16, 4.65 / 2
    torch.testing.assert_close(xy[0], torch.tensor([r * math.cos(alpha), r * math.sin(alpha)], dtype=torch.float64))
    radius = xy.norm(dim=1)
    centres = geometry.cell_centres(dtype=torch.float64)
    torch.testing.assert_close(radius, centres[:, 1])
    torch.testing.assert_close(torch.atan2(xy[:, 1], xy[:, 0]), centres[:, 0])
    photons = geo.get("calochallenge-ds1-photons").feature_coordinates()  # layer_0: one alpha bin
    assert (photons[:8, 1] == 0).all() and (photons[:8, 0] > 0).all()


def test_feature_coordinates_are_cached_and_returned_as_copies():
    geometry = geo.get("calogan")
    assert geometry._coordinates(torch.device("cpu"), torch.float32) is geometry._coordinates("cpu", torch.float32)
    xy = geometry.feature_coordinates(dtype=torch.float32)
    xy.zero_()
    assert geometry.feature_coordinates(dtype=torch.float32).abs().sum() > 0


def test_reference_fallback_without_the_compiled_op(monkeypatch):
    module = importlib.import_module("sim2real_fast.ops.shower_features")
    images = _showers(6, "calochallenge-ds1-photons", torch.float64, "cpu")
    expected = s2r.shower_features(images, "calochallenge-ds1-photons", threshold=1.0)
    monkeypatch.setattr(module._extension, "HAS_EXTENSION", False)
    images.requires_grad_()
    fallback = s2r.shower_features(images, "calochallenge-ds1-photons", threshold=1.0)
    torch.testing.assert_close(fallback.as_tensor(), expected.as_tensor())
    assert fallback.layer_names == expected.layer_names
    assert torch.autograd.grad(fallback.total.sum(), images)[0].eq(1).all()
