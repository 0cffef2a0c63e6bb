"""simulate.showers: output, determinism, batching, geometries, argument errors."""

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import simulate
from sim2real_fast.geometry import Geometry, Layer


def test_output_types_shapes_and_units():
    out = simulate.showers(600, seed=0, energy_range=(5, 50))
    geometry = s2r.geometry.get("calogan")
    assert out.images.shape == (600, geometry.n_cells) and out.images.dtype == torch.float32
    assert out.labels.dtype == torch.int64 and set(out.labels.tolist()) == {0, 1, 2}
    assert out.energy.dtype == torch.float64 and 5 <= out.energy.min() and out.energy.max() <= 50
    assert out.overflow.shape == (600,) and (out.overflow >= 0).all()
    assert out.geometry is geometry
    # sparse, in MeV, above the readout threshold
    assert ((out.images == 0) | (out.images >= 1.0)).all()
    assert (out.images == 0).float().mean() > 0.5
    electrons = out.labels == 0
    ratio = out.images[electrons].sum(1) / (1000 * out.energy[electrons])
    assert ratio.mean().item() == pytest.approx(0.99, abs=0.02)
    # overflow: the energy behind the 31 X0 / 1.3 lambda_I: tiny for electrons, large for pions
    leak = out.overflow / (1000 * out.energy)
    assert leak[electrons].mean() < 0.005 and leak[out.labels == 2].mean() > 0.15


@pytest.mark.parametrize("geometry", ["calogan", "calochallenge-ds1-pions", "calochallenge-ds2"])
def test_same_seed_same_output_other_seed_other_output(geometry):
    a = simulate.showers(300, geometry=geometry, seed=5, effects="realistic")
    b = simulate.showers(300, geometry=geometry, seed=5, effects="realistic")
    c = simulate.showers(300, geometry=geometry, seed=6, effects="realistic")
    for x, y in zip(a[:3], b[:3]):
        assert torch.equal(x, y)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.energy, c.energy)


def test_batches_cover_all_events():
    out = simulate.showers(1000, seed=1, batch_size=300)
    assert out.images.shape[0] == 1000
    assert (out.images.sum(1) > 0).all()
    assert simulate.showers(0).images.shape == (0, 504)


def test_particles_energy_distribution_and_threshold():
    out = simulate.showers(400, particles=["gamma"], energy_distribution="log-uniform", energy_range=(1, 100))
    assert (out.labels == 1).all()
    assert (out.energy < 10).float().mean().item() == pytest.approx(0.5, abs=0.1)
    strict = simulate.showers(400, particles="e+", threshold_mev=50.0, seed=2)
    assert ((strict.images == 0) | (strict.images >= 50.0)).all()


def test_any_cartesian_geometry_with_sizes_and_depths():
    geometry = Geometry("two", (
        Layer("front", 8, 8, cell_size=(20.0, 20.0), depth_mm=100.0),
        Layer("back", 4, 4, cell_size=(60.0, 60.0), depth_mm=400.0),
    ))
    out = simulate.showers(300, geometry=geometry, particles="e+", energy_range=(10, 10))
    assert out.images.shape == (300, 80)
    assert out.images.sum(1).mean().item() == pytest.approx(9700, rel=0.05)


def test_cylindrical_layers_bin_by_r_and_alpha():
    geometry = Geometry("cyl", tuple(
        Layer(f"layer_{i}", 16, 5, kind="cylindrical", r_edges=(0.0, 5.0, 15.0, 40.0, 100.0, 300.0), depth_mm=80.0)
        for i in range(6)
    ))
    on_axis = simulate.ShowerPhysics(beam_spot_cells=0.0, beam_divergence_mrad=0.0)
    out = simulate.showers(400, geometry=geometry, particles="e+", energy_range=(20, 20), threshold_mev=0.0,
                           physics=on_axis)
    assert out.images.sum(1).mean().item() == pytest.approx(19_900, rel=0.03)
    features = s2r.shower_features(out.images, geometry)
    # azimuthally uniform: showers on the axis are centred, and energy falls with r
    assert features.centroid_x.mean(0).abs().max() < 3.0 and features.centroid_y.mean(0).abs().max() < 3.0
    per_r = out.images.view(400, 6, 16, 5).sum((0, 1, 2))
    assert per_r[0] > per_r[3] > per_r[4]
    no_depth = Geometry("flat", (Layer("layer_0", 16, 5, kind="cylindrical", r_edges=(0.0, 5.0, 15.0, 40.0, 100.0, 300.0)),))
    with pytest.raises(ValueError, match="depth_mm"):
        simulate.showers(10, geometry=no_depth)


@pytest.mark.parametrize("name", ["calochallenge-ds1-photons", "calochallenge-ds1-pions", "calochallenge-ds2",
                                  "calochallenge-ds3"])
def test_every_calochallenge_geometry_simulates(name):
    geometry = s2r.geometry.get(name)
    out = simulate.showers(60, geometry=name, seed=1, particles="e+", energy_range=(20, 20))
    assert out.images.shape == (60, geometry.n_cells) and out.geometry is geometry
    assert out.images.sum(1).mean().item() == pytest.approx(19_700, rel=0.03)  # ~1% leaks sideways in ds2/ds3
    for preset in simulate.PRESETS:
        real = simulate.showers(60, geometry=name, seed=1, effects=preset)
        assert real.images.shape == (60, geometry.n_cells) and (real.images >= 0).all()


def test_unknown_medium_names_the_layer_and_the_known_media():
    geometry = Geometry("odd", (Layer("front", 2, 2, cell_size=(10.0, 10.0), depth_mm=50.0, medium="lead_glass"),))
    with pytest.raises(s2r.geometry.GeometryError, match=r"layer 'front': unknown medium 'lead_glass'.*fe_scint"):
        simulate.showers(10, geometry=geometry)


def test_bad_arguments():
    with pytest.raises(ValueError, match="particles"):
        simulate.showers(10, particles=("e-",))
    with pytest.raises(ValueError, match="energy_range"):
        simulate.showers(10, energy_range=(0, 10))
    with pytest.raises(ValueError, match="energy_distribution"):
        simulate.showers(10, energy_distribution="gaussian")
    with pytest.raises(ValueError, match="geometry 'hcal' layer 'depth1' needs depth_mm and cell_size"):
        simulate.showers(10, geometry="hcal")
