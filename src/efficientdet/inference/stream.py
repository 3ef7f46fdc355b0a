"""Detection over files: images, then every frame of every video, decoded in ``DataLoader`` workers.

A file that cannot be read becomes a :class:`~.sources.Failure` naming it, and the run goes on
with the next one; so does a video that breaks part-way, after the frames read before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.images import DEFAULT_MAX_PIXELS
from .detector import Detector
from .loading import ImageFiles, Loaded
from .sources import Failure, Prediction, Source
from .video import DEFAULT_MAX_VIDEO_FRAMES, VideoFrames, probe_video


def predict_sources(detector: Detector, sources: Sequence[Source], batch_size: int = 8, workers: int = 1,
                    keep_images: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False,
                    max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> Iterator[Prediction | Failure]:
    """Predictions (and failures) for every image, then every frame of every video, in order."""
    from tqdm import tqdm

    images = [s for s in sources if not s.is_video]
    videos = [s for s in sources if s.is_video]
    with tqdm(total=len(images), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        if images:
            dataset = ImageFiles(images, detector.config, keep_images, max_pixels)
            yield from _run(detector, _loader(dataset, batch_size, workers), bar)
        for source in videos:
            try:
                info = probe_video(source.path, max_pixels, max_video_frames)
            except ValueError as e:
                bar.total += 1
                bar.update(1)
                yield Failure(source, str(e))
                continue
            bar.total += info.frames
            bar.refresh()
            frames = VideoFrames(source, detector.config, keep_images, info.fps, max_video_frames)
            yield from _run(detector, _loader(frames, batch_size, min(workers, 1)), bar)


def _loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list,
                      persistent_workers=False, prefetch_factor=2 if workers else None)


def _run(detector: Detector, loader: DataLoader, bar: Any) -> Iterator[Prediction | Failure]:
    items: Iterator[list[Loaded | Failure]] = iter(loader)
    while True:
        try:
            batch = next(items)
        except StopIteration:
            return
        except Exception as e:  # a video that breaks mid-stream (the DataLoader re-raises it here)
            source = getattr(loader.dataset, "source", None)
            if source is None:
                raise
            bar.update(1)
            yield Failure(source, f"{source.path}: decoding stopped ({_last_line(e)})")
            return
        good = [item for item in batch if not isinstance(item, Failure)]
        found = iter(detector.predict(torch.stack([g.pixels for g in good]), torch.tensor([g.scale for g in good]),
                                      [(g.height, g.width) for g in good]) if good else [])
        for item in batch:
            bar.update(1)
            if isinstance(item, Failure):
                yield item
            else:
                yield Prediction(item.source, item.frame, item.height, item.width, *next(found), item.image, item.fps)


def _last_line(error: Exception) -> str:
    """The error itself, without the worker traceback a DataLoader puts in front of it."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
