"""Batched detection over image files, folders, globs and videos, with a choice of backend.

:class:`Predictor` runs preprocessed batches through one backend — ``eager`` (BN folded,
channels-last), ``compile`` (the same through ``torch.compile``) or ``onnxruntime`` (a file from
:mod:`efficientdet.export`) — then decoding and NMS. :meth:`Predictor.predict_sources` feeds it
from a ``DataLoader`` whose workers decode (:func:`~efficientdet.data.transforms.read_image`:
EXIF orientation, greyscale / palette / RGBA / CMYK / 16-bit, a pixel cap) and preprocess, so
that decoding overlaps the network. A file that cannot be read becomes a :class:`Failure` naming
it, and the run goes on with the next one. Videos are read frame by frame with PyAV.

:class:`OutputWriter` turns predictions into annotated images and videos, a COCO results file
and, on request, one JSON / text file per image or video.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .anchors import generate_anchors
from .coco import LabelSpace
from .config import ModelConfig, PostprocessConfig
from .data.transforms import DEFAULT_MAX_PIXELS, read_image
from .detector import clip_boxes, label_space, preprocess, to_chw_tensor
from .devices import default_device, resolve_device
from .fuse import fuse_model
from .model import EfficientDet
from .postprocess import Detections, postprocess
from .weights import stored_labels

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
BACKENDS = ("eager", "compile", "onnxruntime")
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Refuse longer videos: detections.json holds up to max_detections (100) results per frame in
# memory until the run ends, ~40 MB per 1,000 frames; 18,000 frames is 10 minutes at 30 fps.
DEFAULT_MAX_VIDEO_FRAMES = 18_000

Network = Callable[[torch.Tensor], Any]


@dataclasses.dataclass(frozen=True)
class Source:
    """One input file and the unique file name (suffix kept) its outputs are written under."""

    path: Path
    name: str

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


@dataclasses.dataclass
class Prediction:
    """Detections of one image or video frame; boxes ``[K, 4]`` xyxy in original pixels."""

    source: Source
    frame: int | None  # index in the video, None for an image
    height: int
    width: int
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor  # label ids (COCO category ids for an official model)
    names: list[str]
    image: torch.Tensor | None = None  # [3, H, W] uint8, kept only for drawing
    fps: float | None = None  # videos only


@dataclasses.dataclass(frozen=True)
class Failure:
    """A file (or the rest of a video) that could not be read; the run continues without it."""

    source: Source
    error: str


def collect_sources(inputs: Sequence[str | os.PathLike]) -> list[Source]:
    """The sources of :func:`scan_inputs`, without the files it left out."""
    return scan_inputs(inputs)[0]


def scan_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Source], list[Path]]:
    """(sources, files left out): files as given, globs as their matches, folders as the image and
    video files in them and in all their subfolders (sorted); a folder's other files are left out.

    A path that does not exist, or a folder / glob with no image or video in it, is a user
    error (``ValueError``): nothing would be processed for it. Output names are unique: a file
    in a folder keeps its path below that folder (``sub/a.jpg``), and a name already taken gets
    ``_1``, ``_2``, … before its suffix.
    """
    found: list[tuple[Path, str]] = []
    left_out: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            media = [p for p in files if p.suffix.lower() in MEDIA_SUFFIXES]
            if not media:
                raise ValueError(f"{path}: no image or video files in this folder or its subfolders")
            left_out.extend(p for p in files if p.suffix.lower() not in MEDIA_SUFFIXES)
            found.extend((p, p.relative_to(path).as_posix()) for p in media)
        elif path.exists():
            found.append((path, path.name))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"{text}: no file matches this pattern")
            found.extend((p, p.name) for p in matches)
        else:
            raise ValueError(f"{path}: no such file or directory")
    return _unique_names(found), left_out


def drawn_name(name: str) -> str:
    """Where the annotated copy of ``name`` goes: a video as MP4, an image other than JPEG / PNG as PNG."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return str(PurePosixPath(name).with_suffix(".mp4"))
    return name if suffix in (".jpg", ".jpeg", ".png") else f"{name}.png"


def _unique_names(found: list[tuple[Path, str]]) -> list[Source]:
    used: set[str] = set()
    sources = []
    for path, name in found:
        stem, count, candidate = name[: len(name) - len(path.suffix)], 0, name
        # Case-insensitively, outputs may land on such a file system; the drawn copy counts too.
        while {candidate.lower(), drawn_name(candidate).lower()} & used:
            count += 1
            candidate = f"{stem}_{count}{path.suffix}"
        used |= {candidate.lower(), drawn_name(candidate).lower()}
        sources.append(Source(path, candidate))
    return sources


def check_out_dir(out_dir: str | os.PathLike, sources: Sequence[Source]) -> None:
    """Refuse an output folder that is a file, or that holds an input at any depth: the outputs
    written there (annotated copies, ``detections.json``, ``labels/``) could overwrite it."""
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder; the output must go to a folder")
    for source in sources:
        if out in source.path.resolve().parents:
            raise ValueError(f"output folder {out_dir} holds the input {source.path}; "
                             f"choose another output folder so that no input can be overwritten")


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """float16 convolutions exist on CUDA only; bfloat16 runs on both (fast on CPUs with AVX-512 BF16/AMX)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "float16" and device.type != "cuda":
        raise ValueError("float16 (--half) needs a CUDA device; on the CPU use bfloat16 (--bf16)")
    return PRECISIONS[precision]


def torch_network(model: EfficientDet, backend: str = "eager", device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32, channels_last: bool = True) -> Network:
    """The model as a fast inference function: BN folded, cast, channels-last, optionally compiled.

    Channels-last (NHWC) lets oneDNN / cuDNN run the depthwise and 1×1 convolutions, which are
    most of EfficientDet's, without layout conversions in between.
    """
    device = device or default_device()
    fused = fuse_model(model).to(device=device, dtype=dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    fused = fused.to(memory_format=memory_format)
    if backend == "compile":
        # Freezing lets inductor treat the weights as constants: it pre-packs them for oneDNN.
        fused = torch.compile(fused, options={"freezing": True} if device.type == "cpu" else None)
    elif backend != "eager":
        raise ValueError(f"unknown torch backend {backend!r}; valid: eager, compile")

    def run(batch: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = batch.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
        cls_out, box_out = fused(x)
        return [c.float() for c in cls_out], [b.float() for b in box_out]

    return run


def onnx_session(path: str | os.PathLike, device: torch.device, threads: int | None = None) -> Any:
    """An ONNX Runtime session on ``device`` (CUDA provider when asked for and installed)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("the onnxruntime backend needs onnxruntime: pip install 'efficientdet[export]'") from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: spinning ones hold the cores through the
    # decoding and NMS that follow each run, which then take markedly longer.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("onnxruntime has no CUDA provider here: install onnxruntime-gpu or use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def onnx_network(session: Any, config: ModelConfig, graph_nms: bool) -> Network:
    """An ONNX Runtime session as a network: raw per-level outputs, or Detections when NMS is inside."""
    input_name = session.get_inputs()[0].name
    levels = len(config.levels)

    def run(batch: torch.Tensor) -> Any:
        outputs = [torch.from_numpy(o) for o in session.run(None, {input_name: batch.float().cpu().numpy()})]
        if graph_nms:
            return Detections(*outputs)
        return outputs[:levels], outputs[levels:]

    return run


class Predictor:
    """Preprocess → network (any backend) → decode + NMS, in batches; boxes in original pixels.

    Build it with :meth:`from_model` (eager / compile) or :meth:`from_onnx`; ``predictor(images)``
    works like :class:`~efficientdet.detector.Detector`, :meth:`predict_sources` streams files.
    """

    def __init__(self, config: ModelConfig, network: Network, postprocess_config: PostprocessConfig | None = None,
                 device: torch.device | None = None, label_ids: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None, graph_nms: bool = False, labels: LabelSpace | None = None):
        self.config = config
        self.network = network
        self.postprocess_config = postprocess_config or config.postprocess
        self.device = device or torch.device("cpu")
        self.graph_nms = graph_nms
        self.anchors = generate_anchors(config.image_size, config.min_level, config.max_level,
                                        config.anchors).to(self.device)
        # ``labels``: those stored with the weights; ``label_ids`` / ``class_names`` replace them.
        self.label_ids, self.class_names = label_space(config.num_classes, labels, label_ids, class_names)

    @classmethod
    def from_model(cls, model: EfficientDet, backend: str = "eager", device: str | torch.device | None = None,
                   precision: str = "float32", postprocess_config: PostprocessConfig | None = None,
                   channels_last: bool = True, **labels: Any) -> "Predictor":
        device = resolve_device(device)
        dtype = check_precision(precision, device)
        network = torch_network(model.eval(), backend, device, dtype, channels_last)
        return cls(model.config, network, postprocess_config, device, labels=stored_labels(model), **labels)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                  postprocess_config: PostprocessConfig | None = None, threads: int | None = None,
                  **labels: Any) -> "Predictor":
        """A file from :func:`efficientdet.export.export_onnx`; its config comes from its metadata.

        With NMS in the graph, that NMS (hard, fixed at export) is used and ``postprocess_config``
        may not ask for another kind.
        """
        from .export import read_onnx_labels, read_onnx_metadata

        config, graph_post = read_onnx_metadata(path)
        device = resolve_device(device or "cpu")
        if graph_post is not None and postprocess_config is not None and postprocess_config != graph_post:
            raise ValueError(f"{path} has hard NMS inside (IoU {graph_post.iou_threshold}, score "
                             f"{graph_post.score_threshold}); other NMS settings need a file exported without --nms")
        graph_nms = graph_post is not None
        network = onnx_network(onnx_session(path, device, threads), config, graph_nms)
        # Outputs come back as numpy on the host: postprocessing runs there.
        return cls(config, network, graph_post or postprocess_config, torch.device("cpu"), graph_nms=graph_nms,
                   labels=read_onnx_labels(path), **labels)

    def preprocess(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocess(list(images), self.config.image_size, self.config.preprocess)

    @torch.inference_mode()
    def detect(self, batch: torch.Tensor, image_scales: torch.Tensor | None = None) -> Detections:
        """Preprocessed ``[B, 3, H, W]`` → padded :class:`Detections` (original pixels given ``image_scales``)."""
        if self.graph_nms:
            dets = self.network(batch)
            if image_scales is not None:
                dets = dets._replace(boxes=dets.boxes * image_scales.to(dets.boxes.dtype)[:, None, None])
            return dets
        cls_out, box_out = self.network(batch)
        cls_out = [c.to(self.device) for c in cls_out]
        box_out = [b.to(self.device) for b in box_out]
        scales = image_scales.to(self.device) if image_scales is not None else None
        return postprocess(cls_out, box_out, self.anchors, self.postprocess_config, self.config.image_size, scales)

    def __call__(self, images: Any) -> Any:
        """One image → a dict, a list → a list of dicts, as :class:`Detector` returns them."""
        single = not isinstance(images, (list, tuple))
        tensors = [to_chw_tensor(i) for i in ([images] if single else images)]
        dets = self.detect(*self.preprocess(tensors))
        results = [self._unpad(dets, b, t.shape[1], t.shape[2]) for b, t in enumerate(tensors)]
        results = [{"boxes": r[0], "scores": r[1], "labels": r[2], "names": r[3]} for r in results]
        return results[0] if single else results

    def _unpad(self, dets: Detections, b: int, height: int,
               width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Image ``b``'s valid rows: boxes clipped to its ``height`` × ``width``, classes as label ids and names."""
        n = int(dets.num_valid[b])
        classes = dets.classes[b, :n].cpu().tolist()
        labels = torch.tensor([self.label_ids[c] for c in classes], dtype=torch.int64)
        boxes = clip_boxes(dets.boxes[b, :n].cpu(), height, width)
        return boxes, dets.scores[b, :n].cpu(), labels, [self.class_names[c] for c in classes]

    def predict_sources(self, sources: Sequence[Source], batch_size: int = 8, workers: int = 1,
                        keep_images: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                        progress: bool = False,
                        max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> Iterator[Prediction | Failure]:
        """Predictions (and failures) for every image, then every frame of every video, in order."""
        from tqdm import tqdm

        images = [s for s in sources if not s.is_video]
        videos = [s for s in sources if s.is_video]
        with tqdm(total=len(images), unit="img", disable=not progress, dynamic_ncols=True) as bar:
            if images:
                dataset = ImageFiles(images, self.config, keep_images, max_pixels)
                yield from self._run(self._loader(dataset, batch_size, workers), bar)
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
                frames = VideoFrames(source, self.config, keep_images, info.fps, max_video_frames)
                yield from self._run(self._loader(frames, batch_size, min(workers, 1)), bar)

    def _loader(self, dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list,
                          persistent_workers=False, prefetch_factor=2 if workers else None)

    def _run(self, loader: DataLoader, bar: Any) -> Iterator[Prediction | Failure]:
        items: Iterator[list[Any]] = iter(loader)
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
            if good:
                dets = self.detect(torch.stack([g.pixels for g in good]), torch.tensor([g.scale for g in good]))
            row = 0  # of the item in ``dets``: failures have none
            for item in batch:
                bar.update(1)
                if isinstance(item, Failure):
                    yield item
                    continue
                boxes, scores, labels, names = self._unpad(dets, row, item.height, item.width)
                row += 1
                yield Prediction(item.source, item.frame, item.height, item.width, boxes, scores, labels, names,
                                 item.image, item.fps)


def _last_line(error: Exception) -> str:
    """The error itself, without the worker traceback a DataLoader puts in front of it."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


@dataclasses.dataclass
class _Loaded:
    """A decoded, preprocessed image or frame on its way from a DataLoader worker to the network."""

    source: Source
    frame: int | None
    pixels: torch.Tensor  # [3, H, W] float, preprocessed
    scale: float
    height: int
    width: int
    image: torch.Tensor | None
    fps: float | None = None


def _load(source: Source, frame: int | None, image: torch.Tensor, config: ModelConfig, keep_image: bool,
          fps: float | None = None) -> _Loaded:
    pixels, scales = preprocess([image], config.image_size, config.preprocess)
    return _Loaded(source, frame, pixels[0], float(scales[0]), image.shape[1], image.shape[2],
                   image if keep_image else None, fps)


class ImageFiles(Dataset):
    """``dataset[i]`` → the i-th image decoded and preprocessed, or a :class:`Failure` naming it."""

    def __init__(self, sources: Sequence[Source], config: ModelConfig, keep_images: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.sources = list(sources)
        self.config = config
        self.keep_images = keep_images
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> _Loaded | Failure:
        source = self.sources[index]
        try:
            image = read_image(source.path, self.max_pixels)
        except (ValueError, OSError) as e:  # ImageError is a ValueError; a vanished file an OSError
            message = str(e)
            return Failure(source, message if str(source.path) in message else f"{source.path}: {message}")
        return _load(source, None, image, self.config, self.keep_images)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # counted by the container, else estimated from its duration; 0 when it says neither
    width: int
    height: int


def _import_av() -> Any:
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
    av = _import_av()
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

    def __iter__(self) -> Iterator[_Loaded]:
        av = _import_av()
        with av.open(str(self.source.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index == self.max_frames:
                    raise ValueError(f"more than {self.max_frames} frames, over the limit (max_video_frames); "
                                     f"the first {self.max_frames} were processed")
                image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                yield _load(self.source, index, image, self.config, self.keep_images, self.fps)


# Distinct, readable colours; class c gets PALETTE[c % len(PALETTE)].
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40),
           (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128))


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                    names: Sequence[str], threshold: float = 0.4) -> np.ndarray:
    """``[3, H, W]`` uint8 → ``[H, W, 3]`` uint8 with the detections scoring ≥ ``threshold`` drawn:
    a box per object in its class colour and "name score" on a filled tag, sized to the image."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    draw = ImageDraw.Draw(canvas)
    side = min(canvas.size)
    line = max(1, round(side / 300))
    font = ImageFont.load_default(size=max(10, round(side / 40)))
    keep = (scores >= threshold).nonzero().flatten().tolist()
    for i in reversed(keep):  # the best box drawn last, on top
        colour = PALETTE[int(labels[i]) % len(PALETTE)]
        x1, y1, x2, y2 = boxes[i].tolist()
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = f"{names[i]} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        th, tw = bottom - top + 2 * line, right - left + 2 * line
        ty = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + tw, ty + th), fill=colour)
        ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
        draw.text((x1 + line - left, ty + line - top), text, fill=ink, font=font)
    return np.asarray(canvas)


class VideoWriter:
    """Annotated frames → H.264 MP4 (MPEG-4 part 2 where PyAV lacks libx264), even-sized as yuv420p needs."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        av = _import_av()
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


def _detections_json(pred: Prediction) -> list[dict[str, Any]]:
    return [{"box": [round(v, 2) for v in box], "score": round(score, 5), "category_id": label, "name": name}
            for box, score, label, name in zip(pred.boxes.tolist(), pred.scores.tolist(), pred.labels.tolist(),
                                               pred.names)]


class OutputWriter:
    """Writes predictions under ``out_dir`` as they arrive; :meth:`close` writes the JSON summaries.

    * ``<name>`` — the image with its detections drawn (``<stem>.mp4`` for a video), unless ``draw`` is off;
      ``<name>`` keeps a file's path below the input folder it was found in (``sub/a.jpg``);
    * ``detections.json`` — COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``), and
      ``images.json`` — the COCO ``images`` entries naming each ``image_id``'s file (and frame): the id is
      the file name's number when every image name is one (COCO's own files), else a running index;
    * ``labels/<name>.json`` / ``labels/<name>.txt`` on request (``category_id score x1 y1 x2 y2`` per
      line, the frame index first for a video).
    """

    def __init__(self, out_dir: str | os.PathLike, draw: bool = True, draw_threshold: float = 0.4,
                 save_json: bool = False, save_txt: bool = False, numeric_ids: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.draw, self.draw_threshold = draw, draw_threshold
        self.save_json, self.save_txt = save_json, save_txt
        self.numeric_ids = numeric_ids
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self._video: tuple[Source, VideoWriter | None, list[dict[str, Any]], list[str]] | None = None
        if save_json or save_txt:
            (self.out_dir / "labels").mkdir(exist_ok=True)

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, pred: Prediction) -> None:
        image_id = int(Path(pred.source.name).stem) if self.numeric_ids and pred.frame is None else len(self.images)
        entry = {"id": image_id, "file_name": pred.source.name, "width": pred.width, "height": pred.height}
        if pred.frame is not None:
            entry["frame"] = pred.frame
        self.images.append(entry)
        for box, score, label in zip(pred.boxes.tolist(), pred.scores.tolist(), pred.labels.tolist()):
            x1, y1, x2, y2 = box
            self.results.append({"image_id": image_id, "category_id": label, "score": round(score, 5),
                                 "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]})
        if pred.frame is None:
            self._finish_video()
            self._write_image(pred)
        else:
            self._write_frame(pred)

    def _drawn(self, pred: Prediction) -> np.ndarray:
        if pred.image is None:
            raise ValueError("predictions carry no image to draw: predict with keep_images=True")
        return draw_detections(pred.image, pred.boxes, pred.scores, pred.labels, pred.names, self.draw_threshold)

    def _path(self, name: str) -> Path:
        """``out_dir / name``, its folder created: names keep an input's path below its folder."""
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write_image(self, pred: Prediction) -> None:
        from PIL import Image

        if self.draw:
            path = self._path(drawn_name(pred.source.name))
            fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
            Image.fromarray(self._drawn(pred)).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        if self.save_json:
            record = {"file": str(pred.source.path), "width": pred.width, "height": pred.height,
                      "detections": _detections_json(pred)}
            self._path(f"labels/{pred.source.name}.json").write_text(json.dumps(record, indent=1))
        if self.save_txt:
            lines = [_txt_line(pred, i) for i in range(len(pred.scores))]
            self._path(f"labels/{pred.source.name}.txt").write_text("".join(lines))

    def _write_frame(self, pred: Prediction) -> None:
        if self._video is None or self._video[0] != pred.source:
            self._finish_video()
            writer = None
            if self.draw:
                writer = VideoWriter(self._path(drawn_name(pred.source.name)), pred.fps or 25.0, pred.width,
                                     pred.height)
            self._video = (pred.source, writer, [], [])
        _, writer, frames, lines = self._video
        if writer is not None:
            writer.write(self._drawn(pred))
        if self.save_json:
            frames.append({"frame": pred.frame, "detections": _detections_json(pred)})
        if self.save_txt:
            lines.extend(f"{pred.frame} {_txt_line(pred, i)}" for i in range(len(pred.scores)))

    def _finish_video(self) -> None:
        if self._video is None:
            return
        source, writer, frames, lines = self._video
        self._video = None
        if writer is not None:
            writer.close()
        if self.save_json:
            record = {"file": str(source.path), "frames": frames}
            self._path(f"labels/{source.name}.json").write_text(json.dumps(record, indent=1))
        if self.save_txt:
            self._path(f"labels/{source.name}.txt").write_text("".join(lines))

    def close(self) -> None:
        self._finish_video()
        (self.out_dir / "detections.json").write_text(json.dumps(self.results))
        (self.out_dir / "images.json").write_text(json.dumps(self.images, indent=1))


def _txt_line(pred: Prediction, i: int) -> str:
    x1, y1, x2, y2 = pred.boxes[i].tolist()
    return f"{int(pred.labels[i])} {float(pred.scores[i]):.5f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}\n"


def numeric_names(sources: Sequence[Source]) -> bool:
    """Whether every image is named by a distinct number (COCO's ``000000397133.jpg``): then that
    number is its ``image_id``, so the results file scores against the dataset's annotations."""
    if any(s.is_video for s in sources):  # frames are numbered by a running index, which could collide
        return False
    stems = [Path(s.name).stem for s in sources]
    # ASCII digits only: str.isdigit() also accepts '²' or '١', which int() may refuse or misread.
    numeric = all(s.isascii() and s.isdigit() for s in stems)
    return bool(stems) and numeric and len({int(s) for s in stems}) == len(stems)


def pixel_budget(max_megapixels: float) -> int:
    """``--max-megapixels`` → a pixel count, refusing values that would disable the memory guard."""
    if not math.isfinite(max_megapixels) or max_megapixels <= 0:
        raise ValueError(f"max megapixels must be a positive number, got {max_megapixels}")
    return int(max_megapixels * 1e6)


def frame_budget(max_video_frames: int) -> int:
    """``--max-video-frames``, refusing values that would disable the memory guard."""
    if max_video_frames < 1:
        raise ValueError(f"max video frames must be a positive number, got {max_video_frames}")
    return max_video_frames
