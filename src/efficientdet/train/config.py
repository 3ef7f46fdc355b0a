"""``TrainConfig``: every setting of a training run, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import get_config, list_models, min_input_size
from ..data.formats import DEFAULT_MAX_BOXES
from ..loss import LossConfig


@dataclass(frozen=True)
class TrainConfig:
    """The official recipe by default (hparams_config.py); every field settable by ``--set``."""

    model: str = "efficientdet-lite0"
    data: str = ""  # dataset YAML
    out: str = "runs/train"
    epochs: int = 12
    batch_size: int = 8  # per process
    image_size: tuple[int, int] | None = None  # (height, width), an int meaning square; default: the model's
    weights: str | None = None  # start from these (any create_model format); class head re-initialised if needed
    backbone_weights: str | None = "imagenet"  # "imagenet" (packaged Lite0-2), a file, or None (scratch)
    freeze_backbone: bool = False
    freeze_bn: bool = False  # loaded BN layers in inference mode: fixed statistics, no BN parameter updates
    optimizer: str = "sgd"
    lr: float = 0.08  # per 64 images, scaled linearly (AdamW: 0.008 is the official equivalent)
    warmup_init: float = 0.008
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 4e-5
    clip_grad_norm: float = 10.0
    ema_decay: float = 0.9998
    scale_range: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    photometric: bool = False
    mosaic: float = 0.0  # probability of a 4-image mosaic per training image (not in the official recipe)
    max_boxes: int = DEFAULT_MAX_BOXES  # objects per image; a dataset image with more is an error naming it
    amp: bool | None = None  # default: on for CUDA
    channels_last: bool = True  # NHWC activations: oneDNN's fast layout on CPU
    sync_bn: bool = False
    workers: int = 2
    seed: int = 0
    eval_every: int = 1
    eval_batch_size: int = 8
    device: str | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    resume: bool = False
    exist_ok: bool = False  # train into a non-empty --out: the previous run's files are removed first
    max_steps: int | None = None  # stop after this many steps (tests, smoke runs)

    def __post_init__(self) -> None:
        """Refuse values that would only fail (or silently do nothing) hours into a run."""
        at_least = dict(epochs=1, batch_size=1, eval_batch_size=1, eval_every=1, workers=0, max_boxes=1,
                        warmup_epochs=0, warmup_init=0, weight_decay=0, lr=0)
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"TrainConfig.{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("hflip", "mosaic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("momentum", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.clip_grad_norm > 0:  # inf turns clipping off
            raise ValueError(f"TrainConfig.clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"TrainConfig.scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be >= 1 or None, got {self.max_steps}")
        if self.image_size is not None:
            self._resolve_image_size()
        if self.resume and self.exist_ok:
            raise ValueError("TrainConfig.resume continues the run in out, exist_ok replaces it: give one of them")

    def _resolve_image_size(self) -> None:
        """``image_size`` as (height, width), each side at least the model's minimum; an error
        repeats the value as given."""
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(side, int) for side in size)):
            raise ValueError(f"TrainConfig.image_size must be an int or (height, width), got {self.image_size}")
        if self.model in list_models():
            low = min_input_size(get_config(self.model))
            if min(size) < low:
                raise ValueError(f"TrainConfig.image_size must be >= {low} for {self.model} (or None: the "
                                 f"model's own), got {self.image_size}")
        object.__setattr__(self, "image_size", tuple(size))  # frozen: set once, here


def validates(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether a run of ``epochs`` validates after ``epoch``: every ``eval_every``-th, and the last,
    so that the final weights are always scored."""
    return epoch % eval_every == 0 or epoch == epochs
