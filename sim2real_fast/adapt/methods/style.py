"""``style``: train on simulation translated by a style-transfer network (:class:`~sim2real_fast.translate.StyleTransfer`)."""

from .base import register
from .translated import TranslatedSource


@register
class StyleSource(TranslatedSource):
    name = translator_name = "style"
    summary = ("trains on the simulation translated to real by content and Gram-matrix style losses on the "
               "features of a CaloCNN trained on the labelled simulation")
