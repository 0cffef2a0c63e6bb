"""evaluate.EnergyMeter: the CPU-time estimate, RAPL counters in a fake powercap folder, codecarbon through a stand-in."""

import os
import sys
import time
import types

import pytest
import torch

from sim2real_fast.evaluate import EnergyMeter
from sim2real_fast.evaluate.energy import CPU_WATTS_PER_CORE


def busy(cpu_seconds: float = 0.2) -> None:
    """Work until this process has used ``cpu_seconds`` of CPU (however busy the machine is)."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        sum(range(1000))


def write(path, value) -> None:
    """Atomic, as sysfs reads are: the meter's poller never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


@pytest.fixture
def powercap(tmp_path):
    """Package zones intel-rapl:0 and :1, a core sub-zone and a psys zone (both must be ignored)."""
    zones = {"intel-rapl:0": "package-0", "intel-rapl:1": "package-1", "intel-rapl:0:0": "core", "intel-rapl:2": "psys"}
    for zone, name in zones.items():
        (tmp_path / zone).mkdir()
        write(tmp_path / zone / "name", name)
        write(tmp_path / zone / "max_energy_range_uj", 10_000_000)
        write(tmp_path / zone / "energy_uj", 1_000_000)
    return tmp_path


@pytest.fixture
def no_codecarbon(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import fails even where it is installed


def test_estimate_is_cpu_time_times_the_power_per_core():
    with EnergyMeter(method="estimate", cpu_watts_per_core=4.0) as meter:
        busy()
    assert meter.method == "estimate" and meter.seconds >= 0.2
    cpu_seconds = meter.details["cpu_seconds"]
    assert 0.05 < cpu_seconds < 10 * meter.seconds
    assert meter.joules == pytest.approx(4.0 * cpu_seconds)
    assert meter.details["gpu_joules"] == 0.0 or torch.cuda.is_initialized()
    assert CPU_WATTS_PER_CORE == 10.0 and "EnergyMeter(method='estimate'" in repr(meter)


def test_auto_falls_back_to_the_estimate_and_says_why(no_codecarbon, tmp_path):
    with EnergyMeter(rapl_root=tmp_path) as meter:
        busy(0.05)
    assert meter.method == "estimate" and meter.joules > 0
    assert set(meter.details["fallbacks"]) == {"codecarbon", "rapl"}
    assert "no RAPL package zones" in meter.details["fallbacks"]["rapl"]


def test_rapl_sums_the_packages_across_a_wrap_around(powercap, no_codecarbon):
    with EnergyMeter(rapl_root=powercap, poll_seconds=60) as meter:  # the poller never fires
        write(powercap / "intel-rapl:0" / "energy_uj", 3_500_000)  # +2.5 J
        write(powercap / "intel-rapl:1" / "energy_uj", 500_000)  # wrapped: +9.5 J
        write(powercap / "intel-rapl:0:0" / "energy_uj", 9_000_000)  # sub-zone: ignored
        write(powercap / "intel-rapl:2" / "energy_uj", 9_000_000)  # psys: ignored
    assert meter.method == "rapl"
    assert meter.details["rapl_zones"] == pytest.approx({"package-0": 2.5, "package-1": 9.5})
    assert meter.joules == pytest.approx(12.0 + meter.details["gpu_joules"])


def test_rapl_poller_catches_every_wrap_around(powercap):
    counter = powercap / "intel-rapl:0" / "energy_uj"
    with EnergyMeter(method="rapl", rapl_root=powercap, poll_seconds=0.01) as meter:
        for value in (8_000_000, 3_000_000, 9_000_000, 2_000_000):  # +7, +5 (wrap), +6, +3 (wrap) J
            write(counter, value)
            time.sleep(0.3)
    assert meter.details["rapl_zones"]["package-0"] == pytest.approx(21.0)


def test_unreadable_rapl_counters_are_reported(powercap, no_codecarbon):
    counter = powercap / "intel-rapl:1" / "energy_uj"
    counter.unlink()
    counter.mkdir()  # reading it raises IsADirectoryError, as a root-only file raises PermissionError
    with EnergyMeter(rapl_root=powercap) as meter:
        pass
    assert meter.method == "estimate" and "not readable" in meter.details["fallbacks"]["rapl"]
    with pytest.raises(RuntimeError, match="method 'rapl' is unavailable: RAPL counters .* not readable"):
        with EnergyMeter(method="rapl", rapl_root=powercap):
            pass


class FakeTracker:
    """codecarbon.OfflineEmissionsTracker stand-in reporting 1 Wh (kWh units, as codecarbon)."""

    fail_on_stop = False

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        FakeTracker.last = self

    def start(self):
        pass

    def stop(self):
        if self.fail_on_stop:
            raise RuntimeError("no measurements")
        self.final_emissions_data = types.SimpleNamespace(energy_consumed=1e-3, cpu_energy=6e-4, gpu_energy=3e-4, ram_energy=1e-4)
        return 0.0


@pytest.fixture
def codecarbon(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", types.SimpleNamespace(OfflineEmissionsTracker=FakeTracker))
    monkeypatch.setattr(FakeTracker, "fail_on_stop", False)
    return FakeTracker


def test_codecarbon_energy_in_joules(codecarbon):
    with EnergyMeter() as meter:
        busy(0.01)
    assert meter.method == "codecarbon" and meter.joules == pytest.approx(3600.0)
    assert meter.details == pytest.approx({"cpu_joules": 2160.0, "gpu_joules": 1080.0, "ram_joules": 360.0})
    assert codecarbon.last.kwargs["save_to_file"] is False and codecarbon.last.kwargs["log_level"] == "critical"


def test_a_method_failing_at_the_end_gives_the_estimate(codecarbon):
    codecarbon.fail_on_stop = True
    with EnergyMeter() as meter:
        busy(0.05)
    assert meter.method == "estimate" and meter.joules > 0
    assert "failed when stopping (RuntimeError: no measurements)" in meter.details["fallbacks"]["codecarbon"]


def test_the_block_exception_propagates_and_the_meter_is_filled():
    meter = EnergyMeter(method="estimate")
    with pytest.raises(KeyError):
        with meter:
            raise KeyError("boom")
    assert meter.seconds >= 0 and meter.joules >= 0
    with pytest.raises(RuntimeError, match="one block"):
        with meter:
            pass


@pytest.mark.parametrize(
    "kwargs, match",
    [({"method": "watts"}, "method must be one of"), ({"poll_seconds": 0}, "poll_seconds"), ({"gpu_watts": -1.0}, "gpu_watts")],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyMeter(**kwargs)
