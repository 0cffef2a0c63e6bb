"""Reading a ROOT event tree into log1p-normalised images: read_showers on 100,000 CaloGAN showers.

The file (100,000 showers of the calogan geometry, about 200 hits each: random cells and energies,
fixed seed) is written once per session by ``write_showers_root`` into a temporary folder (uproot's
default compression, ZLIB level 1; baskets of 10,000 entries). The timed call is
``read_showers(path, normalize="log1p")`` with the default step size ("100 MB"). extra_info gets
events/s and where the time goes, from ``Showers.timings`` summed over the steps and averaged over the rounds:
``read_s`` (uproot: decompression and deserialisation into awkward arrays), ``convert_s`` (awkward
layouts -> torch, checks of the hit energies, labels and incident energies), ``hits_to_image_s`` (the
kernel, or its reference when the extension has no hits_to_image), ``other_s`` (opening the file,
concatenating the steps).
"""

from __future__ import annotations

import time

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import io as sio

SEED = 0
N_EVENTS = 100_000
HITS_PER_EVENT = 200
ROUNDS = 3


@pytest.fixture(scope="session")
def calogan_file(tmp_path_factory):
    """100,000 CaloGAN showers, each cell hit with probability 200/504 (about 200 hits), energies U(0, 1000) MeV."""
    generator = torch.Generator().manual_seed(SEED)
    n_cells = s2r.geometry.get("calogan").n_cells
    hit = torch.rand(N_EVENTS, n_cells, generator=generator) < HITS_PER_EVENT / n_cells
    images = torch.rand(N_EVENTS, n_cells, generator=generator).mul_(1000).mul_(hit)
    labels = torch.randint(0, 3, (N_EVENTS,), generator=generator)
    energy = torch.rand(N_EVENTS, generator=generator, dtype=torch.float64) * 99 + 1
    path = tmp_path_factory.mktemp("io") / "calogan_100k.root"
    sio.write_showers_root(path, images, labels, energy)
    return path, int(hit.sum()), torch.log1p(images)


def test_read_showers(benchmark, calogan_file):
    path, n_hits, expected = calogan_file
    rounds = []

    def read():
        start = time.perf_counter()
        showers = sio.read_showers(path, normalize="log1p")
        rounds.append((time.perf_counter() - start, showers.timings))
        return showers

    benchmark.group = f"read_showers cpu n={N_EVENTS} calogan log1p"
    showers = benchmark.pedantic(read, rounds=ROUNDS, warmup_rounds=1)
    torch.testing.assert_close(showers.images, expected)
    rounds = rounds[1:]  # the warm-up round is not in the statistics
    total = sum(wall for wall, _ in rounds) / len(rounds)
    timings = {key: sum(t[key] for _, t in rounds) / len(rounds) for key in rounds[0][1]}
    benchmark.extra_info.update(
        op="read_showers",
        device="cpu",
        n=N_EVENTS,
        implementation="ours",
        hits=n_hits,
        file_mib=path.stat().st_size / 2**20,
        kernel="compiled" if s2r.HAS_EXTENSION else "reference",
        events_per_s=N_EVENTS / benchmark.stats.stats.mean,
        read_s=timings["read"],
        convert_s=timings["convert"],
        hits_to_image_s=timings["hits_to_image"],
        other_s=total - sum(timings.values()),
    )
