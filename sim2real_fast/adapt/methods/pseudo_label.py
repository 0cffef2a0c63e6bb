"""``pseudo_label``: self-training rounds on the model's confident, class-balanced predictions for real events."""

from __future__ import annotations

import torch

from ... import distributed
from ...models import predict
from ..domain import Domain
from .base import Extra, Method, Stage, register


def select_pseudo_labels(
    probs: torch.Tensor, *, threshold: float = 0.9, class_balance: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The confident events of (N, C) class probabilities and their predicted classes.

    An event is kept when its largest probability is >= ``threshold``. With ``class_balance``,
    every class keeps only its most confident events, as many as the rarest kept class has
    (a class nobody is confident about does not count, so it does not empty the set); ties in
    confidence go to the lower index.

    Returns:
        (index, labels): (K,) int64 event indices in increasing order and their (K,) int64 labels.
    """
    if probs.dim() != 2:
        raise ValueError(f"select_pseudo_labels: probs must be (N, C), got {tuple(probs.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"select_pseudo_labels: threshold must be in [0, 1], got {threshold!r}")
    confidence, labels = probs.max(1)
    kept = confidence >= threshold
    if class_balance and bool(kept.any()):
        counts = torch.bincount(labels[kept], minlength=probs.shape[1])
        quota = int(counts[counts > 0].min())
        keep = torch.zeros_like(kept)
        for c in labels[kept].unique().tolist():
            members = torch.nonzero(kept & (labels == c)).squeeze(1)
            order = torch.sort(confidence[members], descending=True, stable=True).indices
            keep[members[order[:quota]]] = True
        kept = keep
    index = torch.nonzero(kept).squeeze(1)
    return index, labels[index]


@register
class PseudoLabel(Method):
    name, order = "pseudo_label", 7
    sees = frozenset({"target"})
    summary = "self-training rounds: confident real predictions (class-balanced) join the training set"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.index: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self._kept: int | None = None

    def stages(self):
        c = self.config
        return (Stage("pseudo_label", 30, c.pseudo_epochs, c.lr, "train", rounds=c.pseudo_iterations),)

    def begin_epoch(self, run, stage, epoch, round_) -> None:
        if stage.name != "pseudo_label":
            return
        if (epoch - 1) % stage.epochs == 0:  # the first epoch of a round labels the target anew
            # each rank predicts its shard of the target; every rank selects from all the predictions
            probs = predict(run.model, distributed.shard(run.target.inputs)).probs
            probs = distributed.gather(probs.to(run.device)).cpu()
            self.index, self.labels = select_pseudo_labels(
                probs, threshold=self.config.pseudo_threshold, class_balance=self.config.pseudo_class_balance)
        self._kept = len(self.index)

    def extra(self, run, stage):
        if stage.name != "pseudo_label":
            return None
        target = run.target.subset(self.index)
        inputs, labels = target.inputs, self.labels
        k_shot = run.shared.get("k_shot")  # with few_shot, its labelled shots join the pseudo-labels
        if k_shot is not None:
            inputs, labels = torch.cat([inputs, k_shot.inputs]), torch.cat([labels, k_shot.labels])
        return Extra(Domain(inputs, labels, None, f"{run.target.name} (pseudo-labelled)"), "pseudo_ce")

    def epoch_record(self) -> dict:
        record = {} if self._kept is None else {"pseudo_kept": self._kept}
        self._kept = None
        return record

    def state(self):
        return None if self.index is None else {"index": self.index, "labels": self.labels}

    def load_state(self, state) -> None:
        if state is not None:
            self.index, self.labels = state["index"], state["labels"]
