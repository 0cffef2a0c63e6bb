"""``mmd``: multi-kernel Gaussian MMD^2 between source and target features and/or logits (Long et al., DAN, 2015)."""

from ...ops import mmd
from .base import Method, register


@register
class MMD(Method):
    name, order, aligns = "mmd", 6, True
    sees = frozenset({"target"})
    summary = "multi-kernel MMD^2 op on the features (and/or logits)"

    def losses(self, run, step):
        head = run.model.head
        pairs = {"features": lambda: (step.f_labelled, step.f_target),
                 "logits": lambda: (head(step.f_labelled), head(step.f_target))}
        return {"mmd": (self.config.mmd_weight, sum(mmd(*pairs[on]()) for on in self.config.mmd_on))}
