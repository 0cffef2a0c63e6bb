"""Wall time and energy of a block of code: ``with EnergyMeter() as meter: train(...)``.

Three ways to get the energy, the first that works is used (``method="auto"``):

1. ``"codecarbon"``: codecarbon's ``OfflineEmissionsTracker`` (the optional extra
   ``sim2real_fast[energy]``) measures CPU, GPU and RAM energy its own way (RAPL, NVML or its
   TDP tables). It is imported only when a meter starts, and its logs are silenced.
2. ``"rapl"``: the CPU package counters of Linux's powercap interface
   (``/sys/class/powercap/intel-rapl:<n>/energy_uj``; Intel, and AMD on recent kernels). They
   are often readable by root only; a background thread reads them every ``poll_seconds`` so
   that counter wrap-arounds are all caught.
3. ``"estimate"``: the CPU time of the process (all threads, plus children that were waited
   for) times ``cpu_watts_per_core``.

With ``"rapl"`` and ``"estimate"`` the GPU energy is added once torch has initialised CUDA: for
every GPU visible to the process (``CUDA_VISIBLE_DEVICES``), the change of NVML's total-energy
counter (pynvml, Volta or newer) or else wall time times ``gpu_watts``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from pathlib import Path

import torch

__all__ = ["CPU_WATTS_PER_CORE", "EnergyMeter", "GPU_WATTS", "METHODS", "RAPL_ROOT"]

METHODS = ("auto", "codecarbon", "rapl", "estimate")
#: Power of one busy CPU core in the estimate (W). Server CPUs are rated 3.5 to 7.5 W per core
#: (thermal design power / cores: AMD EPYC 7742 225 W / 64, Intel Xeon Platinum 8380 270 W / 40,
#: Xeon Gold 6248 150 W / 20); 10 W rounds up to cover the memory and uncore share of a busy core.
CPU_WATTS_PER_CORE = 10.0
#: Power of a GPU in use when NVML cannot measure it (W): the board power of an NVIDIA V100 SXM2
#: or A100 PCIe 80 GB (an H100 SXM is rated 700 W, an L4 72 W).
GPU_WATTS = 300.0
RAPL_ROOT = "/sys/class/powercap"

_KWH = 3.6e6  # J


class _Unavailable(Exception):
    """A measurement method cannot be used on this machine (the message says why)."""


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads and of its waited-for children (s)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _CodeCarbon:
    """codecarbon's offline tracker (no network); energy in kWh converted to J."""

    method = "codecarbon"

    def __init__(self):
        try:
            from codecarbon import OfflineEmissionsTracker
        except Exception as error:  # ImportError, or a broken installation
            raise _Unavailable(f"codecarbon cannot be imported ({type(error).__name__}: {error})") from None
        logging.getLogger("codecarbon").setLevel(logging.CRITICAL)
        try:
            # The country only sets the carbon intensity of the emissions, which are not used here.
            self._tracker = OfflineEmissionsTracker(country_iso_code="USA", save_to_file=False, log_level="critical")
            self._tracker.start()
        except Exception as error:
            raise _Unavailable(f"codecarbon failed to start ({type(error).__name__}: {error})") from None

    def stop(self, seconds: float) -> tuple[float, dict]:
        self._tracker.stop()
        data = self._tracker.final_emissions_data
        details = {f"{part}_joules": float(getattr(data, f"{part}_energy")) * _KWH for part in ("cpu", "gpu", "ram")}
        return float(data.energy_consumed) * _KWH, details


class _Rapl:
    """Sums the CPU package counters: zones ``<root>/intel-rapl:<n>`` named ``package-<n>``.

    Sub-zones (``intel-rapl:<n>:<m>``: cores, uncore, DRAM) are parts of a package or outside
    the CPU, and a ``psys`` zone (laptops) includes the packages: none of them is added.
    """

    method = "rapl"

    def __init__(self, root: str | os.PathLike, poll_seconds: float):
        try:
            zones = sorted(p for p in Path(root).glob("intel-rapl:*") if p.name.count(":") == 1)
            names = {zone: (zone / "name").read_text().strip() for zone in zones}
            self._zones = [zone for zone in zones if names[zone].startswith("package")]
            if not self._zones:
                raise _Unavailable(f"no RAPL package zones under {root}")
            self._names = [names[zone] for zone in self._zones]
            self._ranges = [int((zone / "max_energy_range_uj").read_text()) for zone in self._zones]
            self._last = self._read()
        except (OSError, ValueError) as error:  # PermissionError: energy_uj is root-only on most systems
            raise _Unavailable(f"RAPL counters under {root} are not readable ({type(error).__name__}: {error})") from None
        self._microjoules = [0] * len(self._zones)
        self._error: Exception | None = None
        self._stopped = threading.Event()
        self._poller = threading.Thread(target=self._poll, args=(poll_seconds,), name="EnergyMeter-rapl", daemon=True)
        self._poller.start()

    def _read(self) -> list[int]:
        return [int((zone / "energy_uj").read_text()) for zone in self._zones]

    def _accumulate(self) -> None:
        now = self._read()
        for i, (before, after) in enumerate(zip(self._last, now)):
            # The counter restarts from 0 after max_energy_range_uj; polling faster than it fills
            # (minutes at full load) means at most one wrap between two readings.
            self._microjoules[i] += after - before if after >= before else after + self._ranges[i] - before
        self._last = now

    def _poll(self, poll_seconds: float) -> None:
        try:
            while not self._stopped.wait(poll_seconds):
                self._accumulate()
        except (OSError, ValueError) as error:  # reported by stop()
            self._error = error

    def stop(self, seconds: float) -> tuple[float, dict]:
        self._stopped.set()
        self._poller.join()
        if self._error is not None:
            raise self._error
        self._accumulate()
        joules = [uj * 1e-6 for uj in self._microjoules]
        return sum(joules), {"cpu_joules": sum(joules), "rapl_zones": dict(zip(self._names, joules))}


class _Estimate:
    """CPU time x a constant power per core."""

    method = "estimate"

    def __init__(self, cpu_watts_per_core: float):
        self._watts = cpu_watts_per_core
        self._start = _cpu_seconds()

    def stop(self, seconds: float) -> tuple[float, dict]:
        cpu_seconds = _cpu_seconds() - self._start
        joules = cpu_seconds * self._watts
        return joules, {"cpu_joules": joules, "cpu_seconds": cpu_seconds, "cpu_watts_per_core": self._watts}


class _GpuEnergy:
    """Energy of the GPUs visible to torch while the block ran: NVML counters, else wall time x gpu_watts."""

    def __init__(self, gpu_watts: float):
        self._watts = gpu_watts
        self._nvml = None
        self._start_mj: dict[str, int] = {}
        if not torch.cuda.is_available():  # does not initialise CUDA
            return
        with contextlib.suppress(Exception):  # pynvml missing, no driver, or counters unsupported (pre-Volta)
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._start_mj = self._read()

    def _read(self) -> dict[str, int]:
        readings = {}
        for i in range(self._nvml.nvmlDeviceGetCount()):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
            with contextlib.suppress(self._nvml.NVMLError):
                uuid = self._nvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                readings[uuid] = self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # mJ
        return readings

    def stop(self, seconds: float) -> dict:
        if not torch.cuda.is_initialized():
            return {"gpu_joules": 0.0, "gpu_method": None, "gpus": 0}
        end_mj = {}
        if self._start_mj:
            with contextlib.suppress(Exception):
                end_mj = self._read()
        measured, estimated = 0.0, 0.0
        used = [f"GPU-{torch.cuda.get_device_properties(i).uuid}" for i in range(torch.cuda.device_count())]
        for uuid in used:
            if uuid in self._start_mj and uuid in end_mj:
                measured += (end_mj[uuid] - self._start_mj[uuid]) * 1e-3
            else:
                estimated += seconds * self._watts
        methods = [name for name, joules in (("nvml", measured), ("tdp", estimated)) if joules > 0]
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        return {"gpu_joules": measured + estimated, "gpu_method": "+".join(methods) or None, "gpus": len(used)}


class EnergyMeter:
    """Context manager measuring the wall time (s) and the energy (J) of its block.

    ``with EnergyMeter() as meter: ...`` then ``meter.seconds``, ``meter.joules``,
    ``meter.method`` (``"codecarbon"``, ``"rapl"`` or ``"estimate"``) and ``meter.details``
    (the parts: ``cpu_joules``, ``gpu_joules``, ..., and in ``fallbacks`` why earlier methods
    were not used). See the module docstring for the methods. ``method`` forces one
    (RuntimeError if it is unavailable); ``rapl_root`` is the powercap folder;
    ``poll_seconds`` how often RAPL counters are read; ``cpu_watts_per_core`` (W, default
    :data:`CPU_WATTS_PER_CORE`) and ``gpu_watts`` (W per GPU, default :data:`GPU_WATTS`) are the
    constants of the estimates. If the chosen method fails when the block ends, the estimate is
    reported instead. A meter can be used once; the block's exceptions propagate.
    """

    def __init__(
        self,
        *,
        method: str = "auto",
        rapl_root: str | os.PathLike = RAPL_ROOT,
        poll_seconds: float = 1.0,
        cpu_watts_per_core: float = CPU_WATTS_PER_CORE,
        gpu_watts: float = GPU_WATTS,
    ):
        if method not in METHODS:
            raise ValueError(f"EnergyMeter: method must be one of {METHODS}, got {method!r}")
        for name, value in (("poll_seconds", poll_seconds), ("cpu_watts_per_core", cpu_watts_per_core), ("gpu_watts", gpu_watts)):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"EnergyMeter: {name} must be a positive number, got {value!r}")
        self._choice = method
        self._rapl_root = rapl_root
        self._poll_seconds = float(poll_seconds)
        self._cpu_watts = float(cpu_watts_per_core)
        self._gpu_watts = float(gpu_watts)
        self.seconds = float("nan")
        self.joules = float("nan")
        self.method: str | None = None
        self.details: dict = {}
        self._started = False

    def _start_backend(self, method: str):
        if method == "codecarbon":
            return _CodeCarbon()
        if method == "rapl":
            return _Rapl(self._rapl_root, self._poll_seconds)
        return _Estimate(self._cpu_watts)

    def __enter__(self) -> EnergyMeter:
        if self._started:
            raise RuntimeError("EnergyMeter: a meter measures one block; create a new one")
        self._started = True
        fallbacks = {}
        candidates = ("codecarbon", "rapl", "estimate") if self._choice == "auto" else (self._choice,)
        for method in candidates:
            try:
                self._backend = self._start_backend(method)
                break
            except _Unavailable as why:
                if self._choice != "auto":
                    raise RuntimeError(f"EnergyMeter: method {method!r} is unavailable: {why}") from None
                fallbacks[method] = str(why)
        self._fallbacks = fallbacks
        self._gpu = _GpuEnergy(self._gpu_watts)  # used unless codecarbon (which measures GPUs) succeeds
        self._estimate = self._backend if isinstance(self._backend, _Estimate) else _Estimate(self._cpu_watts)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self._t0
        backend = self._backend
        try:
            joules, details = backend.stop(self.seconds)
        except Exception as error:
            self._fallbacks[backend.method] = f"failed when stopping ({type(error).__name__}: {error})"
            backend = self._estimate
            joules, details = backend.stop(self.seconds)
        if backend.method != "codecarbon":
            gpu = self._gpu.stop(self.seconds)
            joules += gpu["gpu_joules"]
            details.update(gpu)
        if self._fallbacks:
            details["fallbacks"] = self._fallbacks
        self.method, self.joules, self.details = backend.method, float(joules), details

    def __repr__(self) -> str:
        return f"EnergyMeter(method={self.method!r}, seconds={self.seconds:.3f}, joules={self.joules:.1f})"
