"""The run folder: what a run writes, and the refusal that keeps two runs from mixing in one.

Rank 0 alone logs and writes: on the other ranks every method here does nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from torch import nn

from ..config import ModelConfig, config_to_dict
from ..data import DatasetSplit
from ..data.check import DatasetCheck
from ..weights import save_safetensors
from .config import TrainConfig
from .report import draw_predictions, plot_curves
from .state import TrainState

# What a run writes into its folder (trainer's docstring): --exist-ok removes these of the previous run.
RUN_FILES = ("config.json", "metrics.jsonl", "train_state.pt", "weights", "curves.png", "val_images", "data_check.json",
             "tensorboard")

# The per-epoch fields of the log line (metrics.jsonl has them all).
LOGGED = ("epoch", "loss", "images_per_s", "AP", "AP50")


class RunFolder:
    def __init__(self, out: Path, main: bool, log: Callable[[str], None]):
        self.out, self.main, self._log = out, main, log
        self.state_path = out / "train_state.pt"
        self.weights = out / "weights"
        self._labels: dict[str, str] = {}
        self._board = None

    def log(self, line: str) -> None:
        if self.main:
            self._log(line)

    def prepare(self, cfg: TrainConfig) -> None:
        """A non-empty folder is refused unless ``resume`` continues its run or ``exist_ok``
        replaces it (the previous run's files are removed): one run's weights never sit next to
        another's metrics."""
        out = self.out
        if not self.main:
            return
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out}: the run folder is a file; name a folder with --out")
        if cfg.resume or not out.is_dir() or not any(out.iterdir()):
            return
        if not cfg.exist_ok:
            raise FileExistsError(f"{out}: the run folder is not empty; continue its run with --resume, "
                                  "or replace it with --exist-ok")
        old = [out / name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()]
        for path in old:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if old:
            self.log(f"--exist-ok: removed the previous run's {', '.join(p.name for p in old)} from {self.out}")

    def start(self, cfg: TrainConfig, mcfg: ModelConfig, split: DatasetSplit, world: int, recipe: str,
              check: DatasetCheck) -> None:
        """config.json (the resolved configs, the recipe line, the label space), data_check.json (the
        dataset's warnings, statistics and anchor fit), the weights folder, TensorBoard."""
        # Stored with every weights file: the label space that create_model, predict and eval read back.
        self._labels = {"names": json.dumps(split.names), "label_ids": json.dumps(split.label_ids)}
        if not self.main:
            return
        self.weights.mkdir(parents=True, exist_ok=True)
        self.recipe = recipe
        self.write_config(cfg, mcfg, split, world)
        (self.out / "data_check.json").write_text(json.dumps(check.to_dict(), indent=2))
        self._board = _tensorboard(self.out)

    def write_config(self, cfg: TrainConfig, mcfg: ModelConfig, split: DatasetSplit, world: int) -> None:
        """config.json; written again when a plan fixes the run's length after its first epoch."""
        if self.main:
            (self.out / "config.json").write_text(json.dumps(
                {"train": config_to_dict(cfg), "model": config_to_dict(mcfg), "recipe": self.recipe,
                 "names": split.names, "label_ids": split.label_ids, "world_size": world}, indent=2, default=str))

    def saved_config(self) -> dict | None:
        """The config.json a previous start of this run wrote (None if there is none)."""
        path = self.out / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def checkpoint(self, state: TrainState) -> None:
        """The training state, and the EMA weights as ``last.safetensors``."""
        if not self.main:
            return
        state.save(self.state_path)
        self._save_weights(state.ema.module, "last", f"training step {state.step}")

    def save_best(self, state: TrainState) -> None:
        self._save_weights(state.ema.module, "best", f"epoch {state.epoch}, AP {state.best_ap:.4f}")

    def _save_weights(self, model: nn.Module, name: str, source: str) -> None:
        if self.main:
            save_safetensors(model, self.weights / f"{name}.safetensors", source=source, extra=self._labels)

    def record(self, record: dict) -> None:
        """An epoch's record: a line of metrics.jsonl, TensorBoard scalars, a log line."""
        if not self.main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._board is not None:
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    self._board.add_scalar(key, value, record["epoch"])
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                          if k in LOGGED))

    def finish(self, history: list[dict], split: DatasetSplit | None, results: list[dict] | None) -> None:
        """Curves of the run, and the last validation's predictions drawn on its images."""
        if self.main and history:
            plot_curves(history, self.out / "curves.png")
            if results is not None:
                draw_predictions(split, results, self.out / "val_images")
        if self._board is not None:
            self._board.close()


def _tensorboard(out: Path):
    """TensorBoard scalars when the ``tensorboard`` package is installed, else nothing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
