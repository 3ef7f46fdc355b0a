"""Training: the official recipe (SGD, warm-up + cosine, EMA, focal + Huber loss) on any dataset."""

from .config import TrainConfig
from .engine import NonFiniteLoss, train_one_epoch
from .signals import Interrupted
from .state import TrainState
from .trainer import train

__all__ = ["Interrupted", "NonFiniteLoss", "TrainConfig", "TrainState", "train", "train_one_epoch"]
