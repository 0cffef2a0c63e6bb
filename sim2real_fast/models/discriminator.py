"""Domain discriminator head for adversarial adaptation (DANN, Ganin et al., JMLR 2016)."""

from __future__ import annotations

from torch import nn

from ..nn import GradientReversal

__all__ = ["DomainDiscriminator"]


class DomainDiscriminator(nn.Module):
    """MLP (N, n_features) -> (N,) logits; logit > 0 means "target domain".

    With ``grad_reverse=True`` the input first passes a :class:`~sim2real_fast.nn.GradientReversal`
    layer, so minimising the discriminator's loss trains the discriminator while the reversed gradient
    makes the features domain-invariant. The trainer sets the reversal strength every step with
    :meth:`set_alpha`, usually from :func:`sim2real_fast.dann_alpha` (the DANN schedule).

    Args:
        n_features: size of the feature vector.
        hidden: width of the hidden layers.
        layers: number of hidden Linear-ReLU(-Dropout) layers.
        dropout: dropout after each hidden layer.
        grad_reverse: put the gradient reversal layer in front.
    """

    def __init__(
        self, n_features: int, *, hidden: int = 64, layers: int = 2, dropout: float = 0.0, grad_reverse: bool = True
    ) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("hidden", hidden), ("layers", layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DomainDiscriminator: {name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DomainDiscriminator: dropout must be in [0, 1), got {dropout!r}")
        self.reverse = GradientReversal(1.0) if grad_reverse else None
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = hidden
        self.mlp = nn.Sequential(*blocks, nn.Linear(width, 1))

    def set_alpha(self, alpha: float) -> None:
        """Strength of the gradient reversal (ignored without it)."""
        if self.reverse is not None:
            self.reverse.alpha = float(alpha)

    def forward(self, features):
        """(N, n_features) -> (N,) domain logits."""
        if self.reverse is not None:
            features = self.reverse(features)
        return self.mlp(features).squeeze(-1)
