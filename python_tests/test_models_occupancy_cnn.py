"""OccupancyCNN: shapes, cost, the features/head split, padding, iphi periodicity, training, export, bad arguments."""

import pytest
import torch
from torch import nn

from helpers import one_thread  # noqa: F401  (an autouse fixture)
from sim2real_fast.adapt import AdaptConfig, Domain, fit
from sim2real_fast.export import export_model
from sim2real_fast.models import OccupancyCNN, occupancy_cnn

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # torch >= 2.13


def small(**kwargs):
    options = dict(image_size=(20, 30), in_channels=2, channels=(4, 8), n_features=8)
    return OccupancyCNN(**{**options, **kwargs})


def multiply_adds(model, maps):
    """Multiply-adds of one map through every Conv2d and Linear, from the shapes they see."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * kernel
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(maps[:1])
    for hook in hooks:
        hook.remove()
    return total


def test_hcal_default_shapes_and_flat_inputs():
    torch.manual_seed(0)
    model = OccupancyCNN(log_scale=8.0).eval()
    assert (model.n_features, model.n_classes, model.in_channels) == (64, 2, 7)
    assert model.padded_size == (72, 84)
    maps = torch.poisson(torch.full((3, 7, 72, 84), 500.0))
    features = model.features(maps)
    assert features.shape == (3, 64)
    torch.testing.assert_close(model(maps), model.head(features))
    torch.testing.assert_close(model(maps.flatten(1)), model(maps))  # the hcal flat order
    assert model(torch.zeros(0, 7 * 72 * 84)).shape == (0, 2)
    assert OccupancyCNN(n_classes=6)(maps).shape == (3, 6)


def test_cost_at_the_defaults_is_the_documented_one():
    model = OccupancyCNN()
    assert multiply_adds(model, torch.rand(1, 7, 72, 84)) == 3_529_344 <= 5_000_000
    assert sum(p.numel() for p in model.parameters()) == 18_962
    assert "3,529,344 multiply-adds" in occupancy_cnn.__doc__ and "18,962 parameters" in occupancy_cnn.__doc__


def test_no_batch_statistics():
    """A map's features do not depend on the rest of its batch, nor on train / eval mode."""
    torch.manual_seed(1)
    model = small().train()
    maps = torch.randn(5, 2, 20, 30)
    together = model.features(maps)
    alone = torch.cat([model.features(maps[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone)
    torch.testing.assert_close(model.eval().features(maps), together)


def test_padding_is_zero_extension():
    torch.manual_seed(2)
    model = small(patch_size=(4, 8)).eval()
    assert model.padded_size == (20, 32)
    padded = small(image_size=(20, 32), patch_size=(4, 8)).eval()
    padded.load_state_dict(model.state_dict())
    maps = torch.rand(4, 2, 20, 30)
    torch.testing.assert_close(model(maps), padded(torch.nn.functional.pad(maps, (0, 2, 0, 0))))


def test_log_scale_is_log1p_of_the_clamped_counts():
    torch.manual_seed(3)
    scaled, plain = small(log_scale=4.0).eval(), small().eval()
    plain.load_state_dict(scaled.state_dict())
    counts = torch.randint(-3, 2000, (5, 2, 20, 30)).float()
    torch.testing.assert_close(scaled(counts), plain(torch.log1p(counts.clamp_min(0)) / 4.0))


def test_gradients_reach_every_cell_and_every_parameter():
    torch.manual_seed(4)
    model = small(image_size=(21, 30), n_classes=3)  # padded to (24, 32): the last row and column are partial patches
    maps = torch.randn(6, 2, 21, 30, requires_grad=True)
    model(maps).logsumexp(1).sum().backward()
    assert torch.isfinite(maps.grad).all() and (maps.grad != 0).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cell", [(0, 0, 0), (6, 71, 83), (3, 37, 42), (1, 5, 82)])
def test_a_single_hot_cell_changes_the_features(cell):
    torch.manual_seed(5)
    model = OccupancyCNN().eval()
    empty = torch.zeros(1, 7, 72, 84)
    hot = empty.clone()
    hot[(0, *cell)] = 1.0
    assert (model.features(hot) - model.features(empty)).abs().max() > 1e-3


def test_features_are_invariant_to_iphi_rolls_by_the_total_stride():
    """patch 4 x stride 2 = 8 rows; iphi (rows) wraps, ieta (columns) does not."""
    torch.manual_seed(6)
    model = OccupancyCNN(in_channels=2, channels=(4, 8), n_features=8).eval()
    maps = torch.rand(2, 2, 72, 84)
    features = model.features(maps)
    for shift in (8, 16, -24):
        torch.testing.assert_close(model.features(maps.roll(shift, 2)), features, atol=1e-5, rtol=1e-5)
    assert (model.features(maps.roll(8, 3)) - features).abs().max() > 1e-3


def test_same_seed_same_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return small().state_dict()

    first, again, other = weights(7), weights(7), weights(8)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["stem.cell.weight"], other["stem.cell.weight"])


def hot_block_maps(n, seed):
    """(n, 3, 24, 28) noise maps and labels: class 1 has one depth's random 4 x 4 block at 5."""
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, 3, 24, 28, generator=generator)
    labels = torch.arange(n) % 2
    depth = torch.randint(0, 3, (n,), generator=generator)
    rows, cols = torch.randint(0, 21, (n,), generator=generator), torch.randint(0, 25, (n,), generator=generator)
    for i in labels.nonzero().flatten().tolist():
        maps[i, depth[i], rows[i] : rows[i] + 4, cols[i] : cols[i] + 4] = 5.0
    return maps, labels


def test_trains_on_a_toy_two_class_problem():
    maps, labels = hot_block_maps(64, seed=9)
    torch.manual_seed(9)
    model = OccupancyCNN((24, 28), 3, channels=(8, 16), n_features=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(maps), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses


@pytest.mark.parametrize("method", ["source_only", "dann"])
def test_adapt_fit_trains_it(method):
    maps, labels = hot_block_maps(48, seed=10)
    source = Domain(maps.flatten(1), labels, name="sim")
    target = Domain(hot_block_maps(32, seed=11)[0].flatten(1) * 1.1, name="real")
    torch.manual_seed(10)
    model = OccupancyCNN((24, 28), 3, channels=(8, 16), n_features=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(method, model, source=source, target=target, config=AdaptConfig(epochs=2, batch_size=16))
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert ("dann" in result.history[0]) == (method == "dann")  # the target batch went through features
    assert not torch.equal(before["stem.cell.weight"], result.model.state_dict()["stem.cell.weight"])


def test_export_reproduces_the_eager_model(tmp_path):
    torch.manual_seed(12)
    model = small(log_scale=8.0).eval()
    try:
        import onnxruntime  # noqa: F401

        formats = ("torchscript", "onnx")
    except ImportError:
        formats = ("torchscript",)
    maps = torch.poisson(torch.full((4, 2, 20, 30), 300.0))
    paths = export_model(model, maps[:2], tmp_path, name="cnn", formats=formats)  # verified against eager
    loaded = torch.jit.load(str(paths["torchscript"]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(maps), torch.softmax(model(maps), 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": (0, 30)}, "image_size"),
        ({"image_size": (20, 30, 1)}, "image_size"),
        ({"patch_size": (4, 0)}, "patch_size"),
        ({"patch_size": True}, "patch_size"),
        ({"in_channels": 0}, "in_channels"),
        ({"n_classes": 0}, "n_classes"),
        ({"n_features": 2.0}, "n_features"),
        ({"channels": (8,)}, "channels"),
        ({"channels": (8, 0)}, "channels"),
        ({"log_scale": 0.0}, "log_scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"OccupancyCNN: {match}"):
        small(**kwargs)


@pytest.mark.parametrize("shape", [(2, 3, 20, 30), (2, 2, 30, 20), (2, 1199), (2, 20, 30)])
def test_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=r"OccupancyCNN: expected maps \(N, 2, 20, 30\) or \(N, 1200\)"):
        small()(torch.zeros(shape))
