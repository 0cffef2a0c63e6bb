"""``domain_randomization``: train on simulation whose detector effects were drawn per event from prior ranges."""

from .base import Method, register


@register
class DomainRandomization(Method):
    name, order = "domain_randomization", 10
    sees = frozenset({"randomized_source"})
    summary = "trains on simulation with every detector residual drawn per event from its documented prior range"

    def labelled(self, run):
        return run.randomized_source
