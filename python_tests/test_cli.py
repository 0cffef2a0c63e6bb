"""The sim2real command: `simulate` writes readable, deterministic files and refuses bad arguments."""

import pytest
import torch

from sim2real_fast import cli, io


def _simulate(out, *extra):
    return cli.main(["simulate", "--out", str(out), "--events", "300", "--lumisections", "4", *extra])


def test_simulate_writes_both_domains_and_dqm_maps(tmp_path, capsys):
    assert _simulate(tmp_path, "--hdf5", "--seed", "3") == 0
    printed = capsys.readouterr().out
    assert "300 showers per domain" in printed and "pi+" in printed and "real preset 'realistic'" in printed
    sim, real = io.read_showers(tmp_path / "sim.root"), io.read_showers(tmp_path / "real.root")
    assert len(sim) == len(real) == 300 and sim.geometry.name == "calogan"
    assert set(sim.labels.tolist()) == {0, 1, 2} and bool((sim.energy >= 1).all() & (sim.energy <= 100).all())
    assert not torch.equal(sim.images, real.images)
    from_hdf5 = io.read_calogan(tmp_path / "sim.h5")
    torch.testing.assert_close(from_hdf5.images, sim.images)
    assert torch.equal(from_hdf5.labels, sim.labels)
    for domain in ("sim", "real"):
        maps = io.read_maps(tmp_path / f"dqm_{domain}.root", tree="maps", geometry="hcal", lumi_section_branch="lumi_section")
        assert maps.maps.shape == (4, 42336)
        assert torch.equal(io.read_hcal_dqm(tmp_path / f"dqm_{domain}.h5").maps, maps.maps)


def test_simulate_is_deterministic_and_the_seed_matters(tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        _simulate(tmp_path / name, "--seed", seed, "--dqm-format", "th2")
    a, b, c = (io.read_showers(tmp_path / name / "real.root").images for name in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)
    th2 = io.read_th2(tmp_path / "a" / "dqm_sim.root", "ls*_depth1")
    assert th2.values.shape == (4, 72, 84)


@pytest.mark.parametrize("arguments", [["--events", "0"], ["--preset", "default"], ["--lumisections", "-1"]])
def test_bad_arguments_exit_with_a_message(tmp_path, arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["simulate", "--out", str(tmp_path), *arguments])
    assert exit_info.value.code == 2
    assert "sim2real" in capsys.readouterr().err
