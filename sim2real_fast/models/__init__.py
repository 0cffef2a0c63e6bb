"""Networks for detector images (features + classifier head), the domain discriminator, batched inference."""

from .calo_cnn import CaloCNN
from .discriminator import DomainDiscriminator
from .occupancy_cnn import OccupancyCNN
from .predict import Predictions, predict
from .vit import OccupancyViT

__all__ = ["CaloCNN", "DomainDiscriminator", "Predictions", "predict"]
__all__ += ["OccupancyCNN", "OccupancyViT"]
