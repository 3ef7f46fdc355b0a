"""``TrainState``: where a run is, and everything that continues it exactly (``train_state.pt``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model import EfficientDet
from .checkpoint import atomic_torch_save, load_training_state, rng_state, set_rng_state
from .ema import ModelEMA


@dataclass
class TrainState:
    """The model, its EMA, the optimiser and AMP scaler, the run's length (``epochs``, which the
    learning-rate schedule decays over), the position (``epoch`` and the batches of it done,
    ``step``), the best AP and the per-epoch records; :meth:`save` adds the RNG states.

    A run resumed by :meth:`load` sees exactly the batches, draws and weights it would have seen.
    """

    model: EfficientDet
    ema: ModelEMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None
    epochs: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_ap: float = -1.0
    history: list[dict] = field(default_factory=list)

    def save(self, path: Path) -> None:
        """Written atomically: a crash or a full disk leaves the previous state whole."""
        atomic_torch_save({
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None, "epochs": self.epochs,
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step, "best_ap": self.best_ap,
            "history": self.history, "rng": rng_state(),
        }, path)

    def load(self, path: Path) -> None:
        """Everything :meth:`save` wrote, RNG states included: the run continues where it stopped."""
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no training state at {path}")
        state = load_training_state(path)
        _load_run_model(self.model, state["model"], path)
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        # A state saved before the length was saved keeps the length it is given.
        self.epochs = state.get("epochs", self.epochs)
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.best_ap, self.history = state["best_ap"], state["history"]
        set_rng_state(state["rng"])


def _load_run_model(model: EfficientDet, saved: dict, path: Path) -> None:
    """The resumed run's weights; a dataset with another class count is named, not a shape traceback."""
    key = "class_net.predict.pointwise.bias"  # [anchors * classes]
    if key in saved and saved[key].shape != model.state_dict()[key].shape:
        per_class = model.state_dict()[key].shape[0] // model.config.num_classes
        raise ValueError(f"{path}: the run has {saved[key].shape[0] // per_class} classes, the dataset "
                         f"{model.config.num_classes}; --resume needs the run's dataset (or train into a new --out)")
    try:
        model.load_state_dict(saved)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a training state of {model.config.name} "
                         f"({str(e).splitlines()[0]})") from None
