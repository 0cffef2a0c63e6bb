"""Networks for calorimeter images: :class:`CaloCNN` (features + classifier head)."""

from .calo_cnn import CaloCNN

__all__ = ["CaloCNN"]
