"""Shared benchmark machinery: the ``fwd_bwd`` fixture (timing plus peak extra memory) and the run's metadata.

Peak extra memory is what a call needs above what was in use just before it:
- CPU: the process's resident-set high-water mark, reset by writing "5" to /proc/self/clear_refs, minus
  VmRSS before the call (Linux). glibc is told to serve blocks over 128 KiB by mmap and the heap is
  trimmed first, so memory freed by earlier calls is returned and does not hide a new peak (the timed
  rounds run under the same setting; glibc mmaps blocks over 32 MiB by default anyway).
- CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocated bytes before the call.

The JSON of the run also gets the machine (CPU model, memory, GPU), torch and sim2real_fast build facts,
the peers' versions, and the tests that were skipped or failed, so run.py needs nothing else.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from pathlib import Path

import pytest
import torch

# pyproject's --import-mode=importlib keeps benchmarks/ off sys.path; the test modules import peers.
sys.path.insert(0, str(Path(__file__).parent))

import peers  # noqa: E402

import sim2real_fast  # noqa: E402

MIB = 2**20
_M_MMAP_THRESHOLD = -3

try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
except OSError:  # not glibc: freed memory may stay resident and the CPU peak can read low
    _LIBC = None


def _proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (e.g. "VmRSS"), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakMemory:
    """Largest extra memory over the calls bracketed by start() and stop()."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.peak_bytes: int | None = None

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _proc_status_bytes("VmRSS")

    def stop(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _proc_status_bytes("VmHWM")
        self.peak_bytes = max(self.peak_bytes or 0, peak - self.base)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def device(request) -> torch.device:
    """The torch.device named by the (indirect) parameter; skips CUDA without a GPU."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture
def fwd_bwd(benchmark):
    """Times ``loss_fn(*inputs).backward(grad)`` (grads cleared before each round, CUDA synchronised).

    Call as ``fwd_bwd(loss_fn, inputs, rounds=..., warmup_rounds=..., grad=None, **extra_info)``;
    the peak extra memory (MiB, max over all rounds) lands in ``benchmark.extra_info["peak_extra_mib"]``.
    """

    def run(loss_fn, inputs, *, rounds: int, warmup_rounds: int = 1, grad: torch.Tensor | None = None, **extra_info):
        device = inputs[0].device
        memory = PeakMemory(device)

        def setup():
            for tensor in inputs:
                tensor.grad = None
            memory.start()

        def step():
            loss_fn(*inputs).backward(grad)
            synchronize(device)

        benchmark.pedantic(step, setup=setup, teardown=memory.stop, rounds=rounds, warmup_rounds=warmup_rounds)
        peak = None if memory.peak_bytes is None else memory.peak_bytes / MIB
        benchmark.extra_info.update(extra_info, peak_extra_mib=peak)

    return run


_OUTCOMES: dict[str, list[dict]] = {"skipped": [], "failed": []}


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _OUTCOMES["skipped"].append({"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")})
    elif report.failed:
        _OUTCOMES["failed"].append({"test": report.nodeid, "when": report.when, "error": str(report.longrepr)[-2000:]})


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def pytest_benchmark_update_machine_info(config, machine_info):
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    machine_info["sim2real_fast"] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "version": sim2real_fast.__version__,
        "build_info": sim2real_fast.build_info(),
        "peers": peers.versions(),
        "load_average_start": _AT_START["load"],
        "other_busy_processes": _AT_START["busy"],
    }


_AT_START: dict = {}


def pytest_sessionstart(session):
    """The machine's load when the run starts (machine info is written at the end)."""
    _AT_START.update(load=os.getloadavg()[0], busy=_busy_processes())


def _busy_processes() -> int:
    """Processes of other programs using more than half a core over one second (from /proc)."""

    def cpu_ticks() -> dict[int, int]:
        ticks = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks

    import time

    before = cpu_ticks()
    time.sleep(1.0)
    after = cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    return sum(1 for pid, t in after.items() if pid != os.getpid() and t - before.get(pid, t) > hz // 2)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["pytest_args"] = list(config.invocation_params.args)
    output_json["load_average_end"] = os.getloadavg()[0]
    output_json.update(_OUTCOMES)
