"""``source_only``: cross-entropy on the labelled simulation, the baseline every method is compared with."""

from .base import Method, register


@register
class SourceOnly(Method):
    name, order, standalone = "source_only", 0, True
    summary = "cross-entropy on labelled simulation: the baseline"
