"""Networks for detector images (features + classifier head) and batched inference."""

from .calo_cnn import CaloCNN
from .predict import Predictions, predict

__all__ = ["CaloCNN", "Predictions", "predict"]
