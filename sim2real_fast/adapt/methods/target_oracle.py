"""``target_oracle``: cross-entropy on labelled real events, the upper reference (it reads target labels).

It takes as many optimiser steps as ``source_only`` (an epoch is a pass over the simulation's size,
cycling the labelled real set), so the two references differ in their data only.
"""

from .base import Method, register


@register
class TargetOracle(Method):
    name, order, standalone = "target_oracle", 1, True
    sees = frozenset({"target_labelled"})
    summary = "cross-entropy on the labelled real adaptation set, same steps as source_only: the upper reference"

    def labelled(self, run):
        return run.target_labelled
