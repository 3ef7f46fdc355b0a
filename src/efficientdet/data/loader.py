"""Samples → batches: :class:`DetectionDataset`, :func:`collate` and :func:`build_loader`.

Corrupt images: ``__getitem__`` raises :class:`ImageError` naming the file (also when the decoded
size differs from the annotation's, where the boxes would land in the wrong place). The
DataLoader re-raises it in the main process with the same type, so an epoch stops at the first
bad file instead of silently training around it. ``validate=True`` reads every image header up
front (no pixel decoding, threaded) and reports every unreadable, oversized or mis-sized file
in one ``ImageError``, before any worker starts.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .sample import SIZE_MISMATCH, ImageError, Sample
from .images import DEFAULT_MAX_PIXELS, check_images, read_image, size_mismatch
from .transforms import Transformed, mosaic


class DetectionDataset(Dataset):
    """``dataset[i]`` → ``(image [3, H, W] float32, target)``; ``target`` holds ``boxes [N, 4]``
    float32 xyxy network pixels, ``labels [N]`` int64, ``image_id``, ``image_scale`` (network →
    original pixels) and ``orig_size (h, w)``.

    Crowd / difficult objects are left out of the targets, as the official trainer does
    (``skip_crowd_during_training``); an evaluator reads them from :attr:`samples`. With
    ``mosaic`` > 0 (training only) that share of items is a :func:`~.transforms.mosaic` of the
    image and three random others, at the transform's ``image_size`` per cell.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[..., Transformed], *,
                 validate: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, mosaic: float = 0.0):
        self.samples = list(samples)
        self.transform = transform
        self.max_pixels = max_pixels
        if mosaic and not (hasattr(transform, "image_size") and hasattr(transform, "fill")):
            raise ValueError("mosaic needs a transform with an image_size (the cell size) and a fill colour, "
                             "as TrainTransform has")
        self.mosaic = mosaic
        if validate:
            check_images([s.image_path for s in self.samples], max_pixels,
                         [(s.width, s.height) for s in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image ``index`` as decoded (uint8), its non-crowd boxes and labels."""
        sample = self.samples[index]
        image = read_image(sample.image_path, self.max_pixels)
        height, width = image.shape[-2:]
        problem = size_mismatch(sample.image_path, (width, height), (sample.width, sample.height))
        if problem:
            raise ImageError(problem, SIZE_MISMATCH)
        keep = ~sample.crowd
        return image, torch.from_numpy(sample.boxes[keep]), torch.from_numpy(sample.labels[keep])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, boxes, labels = self.load(index)
        if self.mosaic and torch.rand(()) < self.mosaic:
            # Three more images drawn from torch's generator: reproducible under SeededDataset.
            parts = [(image, boxes, labels)] + [self.load(int(i)) for i in torch.randint(len(self), (3,))]
            cell = self.transform.image_size
            center = tuple(int(c * (0.5 + torch.rand(()).item())) for c in cell)
            image, boxes, labels = mosaic(*zip(*parts), cell, center, self.transform.fill)
        out = self.transform(image, boxes, labels)
        return out.image, {"boxes": out.boxes, "labels": out.labels, "image_id": self.samples[index].image_id,
                           "image_scale": out.image_scale, "orig_size": tuple(image.shape[-2:])}


class Batch(NamedTuple):
    images: torch.Tensor  # [B, 3, H, W]
    targets: list[dict[str, Any]]  # per image, as DetectionDataset returns them
    boxes: torch.Tensor  # [B, M, 4] float32, padded with zeros
    labels: torch.Tensor  # [B, M] int64, padded with -1


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> Batch:
    """Stack the images; pad boxes/labels to the batch's most boxes ``M`` for batched target
    assignment. ``M >= 1`` so that reductions over boxes never meet an empty axis; a padding row
    has label -1 and a zero-area box (IoU 0 with every anchor)."""
    images = torch.stack([image for image, _ in batch])
    targets = [target for _, target in batch]
    most = max([1] + [len(t["labels"]) for t in targets])
    boxes = torch.zeros(len(batch), most, 4)
    labels = torch.full((len(batch), most), -1, dtype=torch.int64)
    for i, target in enumerate(targets):
        n = len(target["labels"])
        boxes[i, :n] = target["boxes"]
        labels[i, :n] = target["labels"]
    return Batch(images, targets, boxes, labels)


def ignore_interrupts(worker_id: int = 0) -> None:
    """A DataLoader worker's ``worker_init_fn``: Ctrl-C, which reaches the whole foreground process
    group, is left to the main process, which stops at a step boundary and checkpoints.

    SIGTERM is not ignored: it is how a worker is ended when its loader is not shut down in order
    (multiprocessing terminates leftover workers at exit, after an error say), and a worker deaf
    to it would hang that exit. A SIGTERM sent to the group (GNU timeout, SLURM scancel) kills the
    workers; the trainer finds that between steps and checkpoints all the same.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset: Dataset, batch_size: int, *, workers: int = 0, sampler: Sampler | None = None,
                 seed: int = 0, pin_memory: bool | None = None) -> DataLoader:
    """A DataLoader of :class:`Batch` es, in the dataset's order or in ``sampler``'s (training's
    ``EpochSampler``, which yields whole batches only).

    ``seed`` seeds the loader's own generator (the workers' base seed), so that loading leaves
    torch's global generator, the model's, untouched. Workers persist across epochs and leave
    Ctrl-C to the main process (:func:`ignore_interrupts`). ``pin_memory`` defaults to whether
    CUDA is available.
    """
    return DataLoader(dataset, batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      persistent_workers=workers > 0, worker_init_fn=ignore_interrupts,
                      generator=torch.Generator().manual_seed(seed))
