"""``coral``: Deep CORAL, the distance of the source and target feature covariances (Sun & Saenko, 2016)."""

from ...ops import coral
from .base import Method, register


@register
class CORAL(Method):
    name, order, aligns = "coral", 5, True
    sees = frozenset({"target"})
    summary = "Deep CORAL op on the features (||C_s - C_t||_F^2 / 4d^2)"

    def losses(self, run, step):
        return {"coral": (self.config.coral_weight, coral(step.f_labelled, step.f_target))}
