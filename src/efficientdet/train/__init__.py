"""Training: the official recipe (SGD, warm-up + cosine, EMA, focal + Huber loss) on any dataset."""

from .engine import NonFiniteLoss, evaluate, train_one_epoch
from .trainer import Interrupted, TrainConfig, train

__all__ = ["Interrupted", "NonFiniteLoss", "TrainConfig", "evaluate", "train", "train_one_epoch"]
