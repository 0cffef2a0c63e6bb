"""How much a classifier trained on the sim domain loses on the "real" detectors.

:func:`domain_gap` trains :class:`~sim2real_fast.models.CaloCNN` to tell e+ / gamma / pi+ apart on
showers of the sim domain (preset ``nominal``) and measures its accuracy, and its e+-vs-gamma AUC, on
held-out sim showers and on showers seen through each "real" preset (``realistic``, ``dev``,
``stress``). A second training, on domain-randomised showers (:data:`~sim2real_fast.simulate.PRIOR`:
every residual drawn per event over its published range), is evaluated the same way and shows what
randomisation buys.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

import torch

from .. import geometry as _geometry
from .. import simulate
from ..models import CaloCNN
from ..simulate import PRESETS, DetectorEffects

__all__ = ["TRAININGS", "domain_gap", "randomized_effects"]

#: Training domains: the sim domain (``nominal``) and the domain-randomised one (:data:`~sim2real_fast.simulate.PRIOR`).
TRAININGS = ("sim", "randomized")

#: The sim domain's detector.
SIM_PRESET = "nominal"


def randomized_effects() -> DetectorEffects:
    """The domain-randomisation prior, :data:`sim2real_fast.simulate.PRIOR`."""
    return simulate.prior_effects()


def _scores(model: CaloCNN, images: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """(N, classes) logits, in evaluation mode without gradients."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of correctly classified showers."""
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def _electron_photon_auc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of e+ (label 0) against gamma (label 1) by the score logit_e+ - logit_gamma (Mann-Whitney)."""
    chosen = labels <= 1
    score = (logits[chosen, 0] - logits[chosen, 1]).double()
    positive = labels[chosen] == 0
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = torch.empty_like(score)
    ranks[score.argsort()] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
    presets: Sequence[str] = ("realistic", "dev", "stress"),
    seeds: Sequence[int] = (0,),
    epochs: int = 4,
    batch_size: int = 256,
    lr: float = 2e-3,
    trainings: Sequence[str] = TRAININGS,
    geometry: str | _geometry.Geometry = "calogan",
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Accuracy and e+/gamma AUC of CaloCNN on sim and on each "real" preset, per training domain and seed.

    For every seed s: the training set is ``events`` showers (e+, gamma, pi+, 1-100 GeV) with seed
    1000 s + 1 (sim, ``nominal``) or 1000 s + 2 (randomised, the prior); the test sets are
    ``test_events`` showers with seed 1000 s + 3 through ``nominal`` and each preset, except ``dev``,
    which has its own event seed 1000 s + 4. Weights and batch order come from s.

    Args:
        presets: names from :data:`~sim2real_fast.simulate.PRESETS` (the "real" detectors).
        trainings: any of :data:`TRAININGS`.
        threads: torch threads while it runs (restored after); None keeps the current setting.
        progress: show a tqdm bar (stderr) over the training steps.

    Returns:
        ``{"config": {...}, "results": {training: {"per_seed": [{"seed", "sim_accuracy", "sim_auc",
        "real_accuracy": {preset: %}, "real_auc": {preset: AUC}, "drop": {preset: points},
        "auc_drop": {preset: AUC}, "train_seconds"}], "summary": {"sim_accuracy": {"mean", "std"},
        "sim_auc": {...}, "real_accuracy": {preset: {"mean", "std"}}, "real_auc": {...}, "drop": {...},
        "auc_drop": {...}}}}, "seconds": total}``; accuracies in %, drop = sim accuracy - real accuracy in
        points, AUC of e+ against gamma, auc_drop = sim AUC - real AUC, std over seeds (sample, 0 for one seed).
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
    effects = {"sim": SIM_PRESET, "randomized": randomized_effects()}
    per_seed = {t: [] for t in trainings}
    try:
        for seed in seeds:
            test = {None: simulate.showers(test_events, geometry=geometry, effects=SIM_PRESET, seed=1000 * seed + 3)}
            for preset in presets:
                event_seed = 1000 * seed + (4 if preset == "dev" else 3)
                test[preset] = simulate.showers(test_events, geometry=geometry, effects=preset, seed=event_seed)
            for training in trainings:
                t0 = time.perf_counter()
                train_seed = 1000 * seed + 1 + TRAININGS.index(training)
                train = simulate.showers(events, geometry=geometry, effects=effects[training], seed=train_seed)
                model = _train(train.images, train.labels, geometry, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, bar=bar)
                seconds = time.perf_counter() - t0
                logits = {key: _scores(model, data.images) for key, data in test.items()}
                sim_accuracy = _accuracy(logits[None], test[None].labels)
                sim_auc = _electron_photon_auc(logits[None], test[None].labels)
                real = {p: _accuracy(logits[p], test[p].labels) for p in presets}
                real_auc = {p: _electron_photon_auc(logits[p], test[p].labels) for p in presets}
                per_seed[training].append({
                    "seed": seed,
                    "sim_accuracy": sim_accuracy,
                    "sim_auc": sim_auc,
                    "real_accuracy": real,
                    "real_auc": real_auc,
                    "drop": {p: sim_accuracy - real[p] for p in presets},
                    "auc_drop": {p: sim_auc - real_auc[p] for p in presets},
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
                "sim_auc": _mean_std([r["sim_auc"] for r in runs]),
                **{key: {p: _mean_std([r[key][p] for r in runs]) for p in presets}
                   for key in ("real_accuracy", "real_auc", "drop", "auc_drop")},
            },
        }
    config = {
        "sim_preset": SIM_PRESET, "geometry": geometry.name, "events": events, "test_events": test_events, "presets": list(presets),
        "seeds": list(seeds), "epochs": epochs, "batch_size": batch_size, "lr": lr, "trainings": list(trainings),
        "threads": torch.get_num_threads() if threads is None else threads,
    }
    return {"config": config, "results": results, "seconds": time.perf_counter() - started}
