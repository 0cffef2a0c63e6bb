"""sim2real_fast.io datasets: map-style over Showers, iterable over ROOT files sharded across DataLoader workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from io_data import random_showers
from sim2real_fast import geometry
from sim2real_fast import io as sio


def _write_parts(folder, sizes):
    """Files of showers whose incident energy is the global event number (a unique id per event)."""
    first = 0
    for i, n in enumerate(sizes):
        images, labels, _ = random_showers(n, seed=i)
        ids = torch.arange(first, first + n, dtype=torch.float64)
        sio.write_showers_root(folder / f"part{i}.root", images, labels, ids)
        first += n
    return first


def test_map_style_dataset(tmp_path):
    images, labels, energy = random_showers(10)
    showers = sio.Showers(images, labels, energy, geometry.get("calogan"))
    dataset = sio.ShowersDataset(showers)
    assert len(dataset) == 10
    image, label, e = dataset[3]
    assert torch.equal(image, images[3]) and label == labels[3] and e == energy[3]
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert torch.equal(batch[0], images[:4])


@pytest.mark.parametrize(("sizes", "shard"), [((13, 8, 5), "auto"), ((23,), "auto"), ((9, 4), "entries")])
def test_iterable_dataset_two_workers_see_every_event_once(tmp_path, sizes, shard):
    total = _write_parts(tmp_path, sizes)
    dataset = sio.ShowersIterableDataset(str(tmp_path / "part*.root"), step_size=4, normalize="log1p", shard=shard)
    loader = DataLoader(dataset, batch_size=5, num_workers=2)
    ids = torch.cat([energy for _, _, energy in loader])
    assert sorted(ids.long().tolist()) == list(range(total))
    reference = sio.read_showers(str(tmp_path / "part*.root"), normalize="log1p")
    images = torch.cat([images for images, _, _ in DataLoader(dataset, batch_size=5, num_workers=2)])
    order = torch.cat([energy for _, _, energy in DataLoader(dataset, batch_size=5, num_workers=2)]).long()
    assert torch.equal(images, reference.images[order])


def test_iterable_dataset_batched_in_process(tmp_path):
    total = _write_parts(tmp_path, (6, 3))
    dataset = sio.ShowersIterableDataset(sorted(tmp_path.glob("*.root")), step_size=4, batched=True)
    batches = list(DataLoader(dataset, batch_size=None))
    assert [len(b[0]) for b in batches] == [4, 2, 3]
    assert torch.cat([b[2] for b in batches]).long().tolist() == list(range(total))
    with pytest.raises(ValueError, match="shard must be one of"):
        sio.ShowersIterableDataset(tmp_path / "part0.root", shard="rows")
