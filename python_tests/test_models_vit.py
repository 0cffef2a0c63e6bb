"""OccupancyViT: shapes, the features/head split, padding, log scaling, training, seeding, bad arguments."""

import sys

import pytest
import torch

from sim2real_fast.models import OccupancyViT

try:
    import timm  # noqa: F401

    HAS_TIMM = True
except Exception:  # a torchvision built for another torch raises RuntimeError, not ImportError
    HAS_TIMM = False

requires_timm = pytest.mark.skipif(not HAS_TIMM, reason='timm is not importable: pip install "sim2real_fast[vit]"')


def small(**kwargs):
    options = dict(image_size=(20, 30), patch_size=(6, 8), embed_dim=16, depth=2, num_heads=2)
    return OccupancyViT(**{**options, **kwargs})


@requires_timm
def test_hcal_default_shapes_and_flat_inputs():
    torch.manual_seed(0)
    model = OccupancyViT((72, 84), in_channels=7, log_scale=8.0).eval()
    assert model.n_tokens == 42 and model.padded_size == (72, 84)
    assert (model.n_features, model.n_classes) == (64, 2)
    maps = torch.poisson(torch.full((3, 7, 72, 84), 500.0))
    features = model.features(maps)
    assert features.shape == (3, 64)
    torch.testing.assert_close(model(maps), model.head(features))
    torch.testing.assert_close(model(maps.flatten(1)), model(maps))  # the hcal flat order
    assert model(torch.zeros(0, 7, 72, 84)).shape == (0, 2)


@requires_timm
def test_padding_is_zero_extension():
    torch.manual_seed(1)
    model = small().eval()
    assert model.padded_size == (24, 32) and model.n_tokens == 4 * 4
    padded = small(image_size=(24, 32)).eval()
    padded.load_state_dict(model.state_dict())
    maps = torch.rand(4, 1, 20, 30)
    torch.testing.assert_close(model(maps), padded(torch.nn.functional.pad(maps, (0, 2, 0, 4))))


@requires_timm
def test_log_scale_is_log1p_of_the_clamped_counts():
    torch.manual_seed(2)
    scaled, plain = small(log_scale=4.0).eval(), small().eval()
    plain.load_state_dict(scaled.state_dict())
    counts = torch.randint(-3, 2000, (5, 1, 20, 30)).float()
    torch.testing.assert_close(scaled(counts), plain(torch.log1p(counts.clamp_min(0)) / 4.0))


@requires_timm
def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    model = small(in_channels=2, n_classes=3)
    model(torch.rand(6, 2, 20, 30)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@requires_timm
def test_trains_on_a_toy_two_class_problem():
    """Class 1 maps have a dead (zero) 10 x 10 region somewhere; 50 Adam steps must halve the loss."""
    generator = torch.Generator().manual_seed(4)
    maps = torch.poisson(torch.full((64, 1, 20, 30), 50.0), generator=generator)
    labels = torch.arange(64) % 2
    rows, cols = torch.randint(0, 11, (64,), generator=generator), torch.randint(0, 21, (64,), generator=generator)
    for i in labels.nonzero().flatten().tolist():
        maps[i, 0, rows[i] : rows[i] + 10, cols[i] : cols[i] + 10] = 0
    torch.manual_seed(4)
    model = small(log_scale=4.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(model(maps), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@requires_timm
def test_same_seed_same_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return small().state_dict()

    first, again, other = weights(5), weights(5), weights(6)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["encoder.pos_embed"], other["encoder.pos_embed"])


@requires_timm
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": (0, 30)}, "image_size"),
        ({"image_size": (20, 30, 1)}, "image_size"),
        ({"patch_size": (6, 0)}, "patch_size"),
        ({"in_channels": 0}, "in_channels"),
        ({"n_classes": 0}, "n_classes"),
        ({"depth": 0}, "depth"),
        ({"embed_dim": 18, "num_heads": 4}, "multiple of num_heads"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"dropout": 1.0}, "dropout"),
        ({"log_scale": 0.0}, "log_scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


@requires_timm
@pytest.mark.parametrize("shape", [(2, 2, 20, 30), (2, 1, 30, 20), (2, 599), (1, 20, 30)])
def test_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=r"OccupancyViT: expected maps \(N, 1, 20, 30\) or \(N, 600\)"):
        small()(torch.zeros(shape))


def test_unimportable_timm_is_an_import_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm.models.vision_transformer", None)
    with pytest.raises(ImportError, match=r'pip install "sim2real_fast\[vit\]"'):
        small()


@pytest.mark.skipif(HAS_TIMM, reason="timm is importable")
def test_broken_timm_is_an_import_error_with_the_install_hint():
    with pytest.raises(ImportError, match=r'pip install "sim2real_fast\[vit\]"'):
        small()
