"""How much a classifier trained on the plain simulation loses on the "real" detector.

:func:`domain_gap` trains :class:`~sim2real_fast.models.CaloCNN` to tell e+ / gamma / pi+ apart on
plain simulated showers and measures its accuracy on held-out plain showers ("sim") and on showers
seen through each preset's detector effects ("real"). A second training,
on domain-randomised showers (:func:`randomized_effects`: every knob drawn per event between its
smallest and largest preset value), is evaluated the same way and shows what randomisation buys.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence

import torch

from .. import geometry as _geometry
from .. import simulate
from ..models import CaloCNN
from ..simulate import PRESETS, DetectorEffects, Randomized

__all__ = ["TRAININGS", "domain_gap", "randomized_effects"]

#: Training domains: the plain simulation and the domain-randomised one.
TRAININGS = ("sim", "randomized")


def randomized_effects(presets: Sequence[str] = ("none", "mild", "default", "severe")) -> DetectorEffects:
    """DetectorEffects whose every knob is Randomized(min, max) over the given presets' values.

    ``zero_suppression_sigma`` spans only the presets with noise (it does nothing without). The
    fixed-detector knobs (miscalibration, dead and hot fractions) become randomised, so every event
    gets its own detector map.
    """
    unknown = [name for name in presets if name not in PRESETS]
    if not presets or unknown:
        raise ValueError(f"randomized_effects: expected preset names from {sorted(PRESETS)}, got {list(presets)}")
    chosen = [PRESETS[name] for name in presets]
    n_noise = max(len(p.noise_mev) if isinstance(p.noise_mev, tuple) else 1 for p in chosen)
    noise = [p.noise_mev if isinstance(p.noise_mev, tuple) else (p.noise_mev,) * n_noise for p in chosen]
    changes = {}
    for field in dataclasses.fields(DetectorEffects):
        if field.name in ("crosstalk_layer", "detector_seed"):
            continue
        values = [getattr(p, field.name) for p in chosen]
        if field.name == "noise_mev":
            changes["noise_mev"] = tuple(Randomized(min(c), max(c)) for c in zip(*noise))
            continue
        if field.name == "zero_suppression_sigma":
            noisy = [v for v, n in zip(values, noise) if any(s > 0 for s in n)]
            values = noisy or values
        changes[field.name] = Randomized(min(values), max(values))
    return DetectorEffects(**changes)


def _accuracy(model: CaloCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096) -> float:
    """Percentage of correctly classified showers."""
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
            for i in range(0, len(labels), batch_size)
        )
    return 100.0 * correct / len(labels)


def _train(
    images: torch.Tensor, labels: torch.Tensor, geometry, *, epochs: int, batch_size: int, lr: float, seed: int, bar
) -> CaloCNN:
    """A CaloCNN trained with Adam and cross-entropy on shuffled minibatches (initialisation and order from seed)."""
    torch.manual_seed(seed)
    model = CaloCNN(geometry, n_classes=len(simulate.PARTICLES))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=g).split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if bar is not None:
                bar.update(1)
    return model


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def domain_gap(
    *,
    events: int = 30_000,
    test_events: int = 10_000,
    presets: Sequence[str] = ("mild", "default", "severe"),
    seeds: Sequence[int] = (0,),
    epochs: int = 4,
    batch_size: int = 256,
    lr: float = 2e-3,
    trainings: Sequence[str] = TRAININGS,
    geometry: str | _geometry.Geometry = "calogan",
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Accuracy of CaloCNN on sim and on each preset's "real" detector, per training domain and seed.

    For every seed s: the training set is ``events`` showers (e+, gamma, pi+, 1-100 GeV) with seed
    1000 s + 1 (plain) or 1000 s + 2 (randomised); the test sets are ``test_events`` showers with seed
    1000 s + 3, plain and through each preset. Weights and batch order come from s.

    Args:
        presets: names from :data:`~sim2real_fast.simulate.PRESETS` (the "real" detectors).
        trainings: any of :data:`TRAININGS`.
        threads: torch threads while it runs (restored after); None keeps the current setting.
        progress: show a tqdm bar (stderr) over the training steps.

    Returns:
        ``{"config": {...}, "results": {training: {"per_seed": [{"seed", "sim_accuracy",
        "real_accuracy": {preset: %}, "drop": {preset: points}, "train_seconds"}], "summary":
        {"sim_accuracy": {"mean", "std"}, "real_accuracy": {preset: {"mean", "std"}}, "drop": {...}}}},
        "seconds": total}``; accuracies in %, drop = sim accuracy - real accuracy in points, std over
        seeds (sample, 0 for one seed).
    """
    presets, seeds, trainings = tuple(presets), tuple(int(s) for s in seeds), tuple(trainings)
    if not presets or any(p not in PRESETS for p in presets):
        raise ValueError(f"presets: expected names from {sorted(PRESETS)}, got {list(presets)}")
    if not trainings or any(t not in TRAININGS for t in trainings):
        raise ValueError(f"trainings: expected names from {list(TRAININGS)}, got {list(trainings)}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds: expected distinct non-negative ints, got {list(seeds)}")
    for name, value in (("events", events), ("test_events", test_events), ("epochs", epochs),
                        ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if not lr > 0 or (threads is not None and threads < 1):
        raise ValueError(f"expected lr > 0 and threads >= 1 (or None), got lr={lr!r}, threads={threads!r}")
    geometry = _geometry.get(geometry)
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    bar = None
    if progress:
        from tqdm import tqdm

        steps = len(seeds) * len(trainings) * epochs * math.ceil(events / batch_size)
        bar = tqdm(total=steps, desc="domain gap", unit=" steps", disable=None)
    effects = {"sim": None, "randomized": randomized_effects()}
    per_seed = {t: [] for t in trainings}
    try:
        for seed in seeds:
            test = {None: simulate.showers(test_events, geometry=geometry, seed=1000 * seed + 3)}
            for preset in presets:
                test[preset] = simulate.showers(test_events, geometry=geometry, effects=preset, seed=1000 * seed + 3)
            for training in trainings:
                t0 = time.perf_counter()
                train_seed = 1000 * seed + 1 + TRAININGS.index(training)
                train = simulate.showers(events, geometry=geometry, effects=effects[training], seed=train_seed)
                model = _train(train.images, train.labels, geometry, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, bar=bar)
                seconds = time.perf_counter() - t0
                sim_accuracy = _accuracy(model, test[None].images, test[None].labels)
                real = {p: _accuracy(model, test[p].images, test[p].labels) for p in presets}
                per_seed[training].append({
                    "seed": seed,
                    "sim_accuracy": sim_accuracy,
                    "real_accuracy": real,
                    "drop": {p: sim_accuracy - real[p] for p in presets},
                    "train_seconds": seconds,
                })
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(previous_threads)
    results = {}
    for training, runs in per_seed.items():
        results[training] = {
            "per_seed": runs,
            "summary": {
                "sim_accuracy": _mean_std([r["sim_accuracy"] for r in runs]),
                "real_accuracy": {p: _mean_std([r["real_accuracy"][p] for r in runs]) for p in presets},
                "drop": {p: _mean_std([r["drop"][p] for r in runs]) for p in presets},
            },
        }
    config = {
        "geometry": geometry.name, "events": events, "test_events": test_events, "presets": list(presets),
        "seeds": list(seeds), "epochs": epochs, "batch_size": batch_size, "lr": lr, "trainings": list(trainings),
        "threads": torch.get_num_threads() if threads is None else threads,
    }
    return {"config": config, "results": results, "seconds": time.perf_counter() - started}
