"""``cyclegan``: train on simulation translated to real by a CycleGAN (:class:`~sim2real_fast.translate.CycleGAN`)."""

from .base import register
from .translated import TranslatedSource


@register
class CycleGANSource(TranslatedSource):
    name = translator_name = "cyclegan"
    summary = "trains on the simulation translated to real by a CycleGAN fitted on sim and unlabelled real showers"
