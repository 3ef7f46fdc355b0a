"""Videos through PyAV: probing a container, decoding its frames in a worker, writing annotated MP4s."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..config import ModelConfig
from ..data.images import DEFAULT_MAX_PIXELS
from .loading import Loaded, load_item
from .sources import Source

# Refuse longer videos: detections.json holds up to max_detections (100) results per frame in
# memory until the run ends, ~40 MB per 1,000 frames; 18,000 frames is 10 minutes at 30 fps.
DEFAULT_MAX_VIDEO_FRAMES = 18_000


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # counted by the container, else estimated from its duration; 0 when it says neither
    width: int
    height: int


def import_av() -> Any:
    """PyAV, an optional extra: imported only once a video is met."""
    try:
        import av
    except ImportError as e:
        raise ImportError("videos need PyAV: pip install 'efficientdet[video]'") from e
    return av


def probe_video(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> VideoInfo:
    """Frame rate, frame count and size from the container, without decoding; ``ValueError`` naming
    ``path`` when it has no readable video stream, its frames are over ``max_pixels`` or it has
    more than ``max_frames`` (counted, or estimated from its duration where the container does not
    count them; :class:`VideoFrames` stops any video that runs on past the limit all the same)."""
    av = import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate or 25
            frames = int(stream.frames or 0)
            if not frames and container.duration:  # microseconds (av.time_base)
                frames = math.ceil(container.duration / 1e6 * float(rate))
            info = VideoInfo(float(rate), frames, stream.codec_context.width, stream.codec_context.height)
    except (av.FFmpegError, OSError) as e:
        raise ValueError(f"{path}: cannot read the video ({e})") from None
    if info.width * info.height > max_pixels:
        raise ValueError(f"{path}: frames of {info.width}x{info.height} are over the limit of "
                         f"{max_pixels / 1e6:.1f} MP (max_pixels)")
    if info.frames > max_frames:
        raise ValueError(f"{path}: {info.frames} frames, over the limit of {max_frames} (max_video_frames)")
    return info


class VideoFrames(IterableDataset):
    """The frames of one video, decoded (PyAV, in a worker) and preprocessed, in order."""

    def __init__(self, source: Source, config: ModelConfig, keep_images: bool, fps: float,
                 max_frames: int = DEFAULT_MAX_VIDEO_FRAMES):
        self.source = source
        self.config = config
        self.keep_images = keep_images
        self.fps = fps
        self.max_frames = max_frames

    def __iter__(self) -> Iterator[Loaded]:
        av = import_av()
        with av.open(str(self.source.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index == self.max_frames:
                    raise ValueError(f"more than {self.max_frames} frames, over the limit (max_video_frames); "
                                     f"the first {self.max_frames} were processed")
                image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                yield load_item(self.source, index, image, self.config, self.keep_images, self.fps)


class VideoWriter:
    """Annotated frames → H.264 MP4 (MPEG-4 part 2 where PyAV lacks libx264), even-sized as yuv420p needs."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        av = import_av()
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        self._frame_type = av.VideoFrame

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame[: self.stream.height, : self.stream.width])
        for packet in self.stream.encode(self._frame_type.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
