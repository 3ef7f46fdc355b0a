"""Resource bounds: inputs that would exhaust memory are refused up front with a clear error.

* Boxes per image: the parsers refuse an image with more than ``max_boxes`` objects (default
  10,000, a keyword of ``load_coco`` / ``load_voc`` / ``load_yolo`` / ``load_split``), naming it
  and the count, before any box is built — the loss holds a boxes × anchors matrix per image.
* Image pixels: every image is refused past ``max_pixels`` from its header alone (100 MP by
  default; ``predict --max-megapixels``). The bombs here are header-only files, so a message about
  their size (rather than about missing pixel data) shows that nothing was decoded.
* Video length: ``predict`` refuses a video longer than ``max_video_frames`` (18,000 by default;
  ``predict --max-video-frames``) from its container's frame count before decoding, and stops one
  whose container under-declares it at the limit.
"""

import json
import re

import numpy as np
import pytest
from PIL import Image
from robust_builders import (
    DATASETS,
    MODEL_ARGS,
    VOC_OBJECT,
    assert_user_error,
    png_header_only,
    run_cli,
    voc_xml,
)

from efficientdet.data import DatasetError, load_dataset_yaml, load_split
from efficientdet.data.formats import DEFAULT_MAX_BOXES
from efficientdet.inference.sources import collect_sources
from efficientdet.inference.video import DEFAULT_MAX_VIDEO_FRAMES, VideoFrames, probe_video

OVER = DEFAULT_MAX_BOXES + 1


def crowd_a_png(fmt: str, root, count: int) -> None:
    """Give image a.png (48x32) of the small dataset ``count`` boxes."""
    if fmt == "coco":
        record = json.loads((root / "annotations.json").read_text())
        record["annotations"] = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in range(count)]
        (root / "annotations.json").write_text(json.dumps(record))
    elif fmt == "voc":
        (root / "VOC/Annotations/a.xml").write_text(voc_xml("a.png", VOC_OBJECT.format(name="square", x1=2, x2=9)
                                                            * count))
    else:
        (root / "labels/a.txt").write_text("0 0.5 0.5 0.1 0.1\n" * count)


WHERE = {"coco": "{root}/annotations.json: image id 1 (a.png)", "voc": "{root}/VOC/Annotations/a.xml",
         "yolo": "{root}/labels/a.txt"}


@pytest.mark.parametrize("fmt", DATASETS)
def test_image_with_more_boxes_than_the_default_limit_is_refused_naming_it_and_the_count(fmt, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    data = DATASETS[fmt](root)
    crowd_a_png(fmt, root, OVER)
    result = run_cli(capsys, "train", *MODEL_ARGS, "--data", data, "--out", tmp_path / "run", "--scratch",
                     "--workers", "0")
    assert_user_error(result, "train", WHERE[fmt].format(root=root),
                      f"{OVER} boxes in one image, over the limit of {DEFAULT_MAX_BOXES} (max_boxes)")


@pytest.mark.parametrize("fmt", DATASETS)
def test_box_limit_is_a_parser_keyword_counted_per_image(fmt, tmp_path):
    """At the limit the split loads, one over it is refused; other images do not count."""
    root = tmp_path / "data"
    root.mkdir()
    spec = load_dataset_yaml(DATASETS[fmt](root))
    crowd_a_png(fmt, root, 3)
    assert len(load_split(spec, "train", max_boxes=3).samples[0].boxes) == 3
    message = f"{WHERE[fmt].format(root=root)}: 3 boxes in one image, over the limit of 2 (max_boxes)"
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_split(spec, "train", max_boxes=2)


def test_predict_pixel_limit_is_configurable_and_inclusive(lite0_weights, tmp_path, capsys):
    """--max-megapixels 1: a 1000x1000 image is processed, 1000x1001 refused by name; a header-only
    60000x60000 PNG is refused at the default 100 MP as well, without decoding."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (1000, 1000), (9, 9, 9)).save(folder / "exactly.png")
    Image.new("RGB", (1000, 1001), (9, 9, 9)).save(folder / "over.png")
    png_header_only(folder / "bomb.png", 60_000, 60_000)
    result = run_cli(capsys, "predict", *MODEL_ARGS, "--weights", lite0_weights, folder, "--out", tmp_path / "out",
                     "--workers", "0", "--quiet", "--max-megapixels", "1")
    assert result.code == 0 and "1 images and 0 video frames" in result.out and "2 files skipped" in result.out
    assert f"skipped {folder / 'over.png'}: 1000x1001 is " in result.err and "over the limit" in result.err
    assert f"skipped {folder / 'bomb.png'}: cannot read the image header" in result.err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_predict_refuses_a_pixel_limit_that_would_disable_the_guard(value, lite0_weights, tmp_path, capsys):
    result = run_cli(capsys, "predict", *MODEL_ARGS, "--weights", lite0_weights, tmp_path, "--out", tmp_path / "out",
                     "--max-megapixels", value)
    assert_user_error(result, "predict", "max megapixels must be a positive number")


def test_predict_pixel_limit_message_states_small_limits(lite0_weights, tmp_path, capsys):
    Image.new("RGB", (72, 48)).save(tmp_path / "small.png")
    result = run_cli(capsys, "predict", *MODEL_ARGS, "--weights", lite0_weights, tmp_path / "small.png",
                     "--out", tmp_path / "out", "--workers", "0", "--quiet", "--max-megapixels", "0.003")
    assert "3456 pixels" in result.err or "0.0035 MP" in result.err
    assert "0.003 MP" in result.err or "3000 pixels" in result.err


def grey_clip(path, frames: int):
    """An MPEG-4 clip of ``frames`` flat 64x48 frames; its container declares the count."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            pixels = np.full((48, 64, 3), 40 * i % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_predict_video_frame_limit_refuses_a_longer_video_by_name_and_keeps_the_rest(lite0_weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    grey_clip(folder / "long.mp4", 4)
    grey_clip(folder / "short.mp4", 3)
    Image.new("RGB", (72, 48), (9, 9, 9)).save(folder / "still.png")
    result = run_cli(capsys, "predict", *MODEL_ARGS, "--weights", lite0_weights, folder, "--out", tmp_path / "out",
                     "--workers", "0", "--quiet", "--max-video-frames", "3")
    assert result.code == 0 and "1 images and 3 video frames" in result.out and "1 files skipped" in result.out
    assert f"skipped {folder / 'long.mp4'}: 4 frames, over the limit of 3 (max_video_frames)" in result.err
    assert (tmp_path / "out" / "short.mp4").is_file() and not (tmp_path / "out" / "long.mp4").exists()


def test_video_frames_stop_at_the_limit_when_the_container_under_declares(tmp_path):
    """The decoder, not the header, has the last word: frame ``max_frames`` raises, naming the limit."""
    from efficientdet import get_config

    clip = grey_clip(tmp_path / "clip.mp4", 3)
    assert probe_video(clip, max_frames=3).frames == 3
    frames = VideoFrames(collect_sources([str(clip)])[0], get_config("efficientdet-lite0"), False, 10.0, max_frames=2)
    seen = []
    with pytest.raises(ValueError, match=r"more than 2 frames, over the limit \(max_video_frames\); the first 2"):
        for item in frames:
            seen.append(item.frame)
    assert seen == [0, 1]


def test_video_frame_limit_has_a_safe_default_and_refuses_disabling_it(lite0_weights, tmp_path, capsys):
    assert 0 < DEFAULT_MAX_VIDEO_FRAMES <= 100_000
    result = run_cli(capsys, "predict", *MODEL_ARGS, "--weights", lite0_weights, tmp_path, "--out", tmp_path / "out",
                     "--max-video-frames", "0")
    assert_user_error(result, "predict", "max video frames must be a positive number, got 0")
