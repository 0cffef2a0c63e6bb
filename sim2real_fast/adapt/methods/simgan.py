"""``simgan``: train on simulation refined by a SimGAN refiner (:class:`~sim2real_fast.translate.SimGAN`)."""

from .base import register
from .translated import TranslatedSource


@register
class SimGANSource(TranslatedSource):
    name = translator_name = "simgan"
    summary = "trains on the simulation refined to real by a SimGAN refiner fitted on sim and unlabelled real showers"
