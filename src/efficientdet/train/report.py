"""What a person looks at after training: curves, and validation images with boxes drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from ..data import DatasetSplit, read_image


def plot_curves(history: list[dict], path: Path) -> Path | None:
    """Loss and AP/AP50 per epoch as one PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    evals = [h for h in history if "AP" in h]
    for key in ("AP", "AP50"):
        ax_ap.plot([h["epoch"] for h in evals], [h[key] for h in evals], marker="o", label=key)
    ax_ap.set(xlabel="epoch", ylabel="COCO metric", title="validation", ylim=(0, 1))
    ax_ap.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_predictions(split: DatasetSplit, results: list[dict], out: Path, count: int = 6,
                     score_threshold: float = 0.3) -> list[Path]:
    """Ground truth in green, predictions (score ≥ threshold) in red, for the first ``count`` images."""
    out.mkdir(parents=True, exist_ok=True)
    name_of = dict(zip(split.label_ids, split.names))
    paths = []
    for sample in split.samples[:count]:
        image = read_image(sample.image_path)
        dets = [r for r in results if r["image_id"] == sample.image_id and r["score"] >= score_threshold]
        if len(sample.boxes):
            image = draw_bounding_boxes(image, torch.from_numpy(sample.boxes),
                                        [split.names[c] for c in sample.labels], colors="lime", width=2)
        if dets:
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)])
            labels = [f"{name_of[d['category_id']]} {d['score']:.2f}" for d in dets]
            image = draw_bounding_boxes(image, boxes, labels, colors="red", width=2)
        path = out / f"{sample.image_path.stem}.png"
        Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(path)
        paths.append(path)
    return paths
