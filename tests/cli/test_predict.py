import json
import zlib
from model_builders import lively
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from efficientdet import Detector, create_model
from efficientdet.cli import main
from efficientdet.weights import save_safetensors

PHOTOS = ("astronaut", "chelsea", "coffee")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def d0_weights(official_d0, tmp_path_factory) -> Path:
    """The official-format D0 fixture as our safetensors (read once, loads fast)."""
    return save_safetensors(create_model("efficientdet-d0", weights=official_d0),
                            tmp_path_factory.mktemp("w") / "d0.safetensors")


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_safetensors(lively(create_model("efficientdet-lite0")),
                           tmp_path_factory.mktemp("w") / "lite0.safetensors")


def write_video(path: Path, frames: int = 5, size: tuple[int, int] = (160, 120)) -> Path:
    """A short H.264 clip of the cat photo panning sideways."""
    import av

    base = np.asarray(Image.fromarray(data.chelsea()).resize(size))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)  # PyAV's wheels bundle it
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv444p"  # 4:4:4 allows odd sizes
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(base, 4 * i, axis=1)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def huge_png_header(path: Path, side: int = 12_000) -> Path:
    """A PNG whose header claims side×side pixels (144 MP) but holds almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def lite0_cli(weights: Path, *args: str) -> list[str]:
    return ["predict", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "128",
            "--workers", "0", "--quiet", *args]


def assert_same_detections(got: dict, ref: dict, top: int, score_tol: float = 1e-4, box_tol: float = 0.05) -> None:
    """``ref``'s ``top`` best detections are all among ``got``'s best, as sets: a near-tie of two
    scores may order them differently once the arithmetic changes (BN folded, batch size)."""
    pool = list(zip(got["labels"][:top + 10].tolist(), got["scores"][:top + 10].tolist(),
                    got["boxes"][:top + 10].tolist()))
    best = zip(ref["labels"][:top].tolist(), ref["scores"][:top].tolist(), ref["boxes"][:top].tolist())
    for label, score, box in best:
        match = [p for p in pool if p[0] == label and abs(p[1] - score) <= score_tol
                 and np.allclose(p[2], box, atol=box_tol)]
        assert match, (label, score, box)
        pool.remove(match[0])


def coco_to_dict(results: list[dict]) -> dict:
    return {"labels": torch.tensor([r["category_id"] for r in results]),
            "scores": torch.tensor([r["score"] for r in results]),
            "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)])}


def test_photos_give_annotated_images_and_coco_results_like_the_detector(photos, d0_weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", "efficientdet-d0", "--weights", str(d0_weights), str(photos / "*.jpg"),
                 "--out", str(out), "--batch-size", "2", "--workers", "0", "--quiet", "--save-json",
                 "--save-txt"]) == 0
    assert "3 images and 0 video frames" in capsys.readouterr().out
    images = json.loads((out / "images.json").read_text())
    results = json.loads((out / "detections.json").read_text())
    assert [i["file_name"] for i in images] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    detector = Detector(create_model("efficientdet-d0", weights=d0_weights))
    for entry, name in zip(images, PHOTOS):
        photo = getattr(data, name)()
        assert (entry["height"], entry["width"]) == photo.shape[:2]
        assert Image.open(out / entry["file_name"]).size == (photo.shape[1], photo.shape[0])
        mine = [r for r in results if r["image_id"] == entry["id"]]
        assert len(mine) == 100 and {"image_id", "category_id", "bbox", "score"} <= set(mine[0])
        ref = detector(np.asarray(Image.open(photos / f"{name}.jpg")))  # the JPEG's pixels, not the original's
        assert_same_detections(coco_to_dict(mine), ref, top=20)
        per_image = json.loads((out / "labels" / f"{name}.jpg.json").read_text())
        assert len(per_image["detections"]) == 100 and per_image["detections"][0]["name"]
        assert len((out / "labels" / f"{name}.jpg.txt").read_text().splitlines()) == 100


def _variants(folder: Path) -> dict[str, np.ndarray]:
    """Files that need conversion to upright RGB, and the upright RGB image each should decode to."""
    rgb = data.chelsea()  # 451 wide, 300 high: a lost rotation shows in the size
    grey = (rgb.mean(-1)).astype(np.uint8)
    expected = {}
    Image.fromarray(grey).save(folder / "grey.png")
    expected["grey.png"] = np.repeat(grey[..., None], 3, -1)
    rgba = np.dstack([rgb, np.full(grey.shape, 90, np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    expected["rgba.png"] = rgb
    palette = Image.fromarray(rgb).quantize(64)
    palette.save(folder / "palette.png")
    expected["palette.png"] = np.asarray(palette.convert("RGB"))
    deep = grey.astype(np.uint16) * 257 + 3
    Image.fromarray(deep).save(folder / "deep16.png")
    expected["deep16.png"] = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=100)
    expected["cmyk.jpg"] = rgb
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))  # stored turned; EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "exif6.jpg", quality=100, exif=exif.tobytes())
    expected["exif6.jpg"] = rgb
    return expected


def test_image_variants_give_the_upright_rgb_detections(d0_weights, tmp_path):
    folder = tmp_path / "variants"
    folder.mkdir()
    expected = _variants(folder)
    model = create_model("efficientdet-d0", weights=d0_weights)
    detector = Detector.from_model(model, device="cpu")
    from efficientdet.inference.sources import collect_sources
    from efficientdet.inference.stream import predict_sources

    # Batch size 1 as for the reference: the same pixels then give bit-identical detections.
    preds = {p.source.name: p for p in predict_sources(detector, collect_sources([folder]), batch_size=1, workers=0)}
    assert set(preds) == set(expected)
    for name, image in expected.items():
        pred, ref = preds[name], detector(image)
        assert (pred.height, pred.width) == (300, 451), name
        got = {"labels": pred.labels, "scores": pred.scores, "boxes": pred.boxes}
        if name.endswith(".jpg"):  # re-encoded: the best few, close to the photo's
            assert_same_detections(got, ref, top=5, score_tol=0.02, box_tol=3.0)
        else:
            assert all(torch.equal(got[k], ref[k]) for k in got), name


def test_mixed_folder_reports_bad_files_by_name_and_processes_every_good_one(photos, lite0_weights, tmp_path,
                                                                           capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in PHOTOS:
        (folder / f"{name}.jpg").write_bytes((photos / f"{name}.jpg").read_bytes())
    (folder / "truncated.jpg").write_bytes((photos / "coffee.jpg").read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    (folder / "broken.mp4").write_bytes(b"\x00" * 4096)
    huge_png_header(folder / "bomb.png")
    write_video(folder / "clip.mp4", frames=3)
    bad = ["bomb.png", "broken.mp4", "empty.png", "notes.png", "truncated.jpg"]
    for strict, code in ((False, 0), (True, 1)):
        out = tmp_path / f"out-{strict}"
        args = lite0_cli(lite0_weights, str(folder), "--out", str(out), "--workers", "1")
        assert main(args + (["--strict"] if strict else [])) == code
        captured = capsys.readouterr()
        for name in bad:
            assert f"skipped {folder / name}" in captured.err, name
        assert "over the limit" in captured.err  # the 144-MP header is refused, not decoded
        assert "3 images and 3 video frames" in captured.out and "5 files skipped" in captured.out
        names = [i["file_name"] for i in json.loads((out / "images.json").read_text())]
        assert names == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "clip.mp4", "clip.mp4", "clip.mp4"]


def test_video_gives_an_annotated_video_and_per_frame_detections(lite0_weights, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", frames=5, size=(161, 120))  # odd width: encoder needs even
    out = tmp_path / "out"
    assert main(lite0_cli(lite0_weights, str(clip), "--out", str(out), "--batch-size", "2", "--save-json",
                          "--draw-threshold", "0")) == 0
    frames = read_video(out / "clip.mp4")
    assert len(frames) == 5 and frames[0].shape == (120, 160, 3)
    images = json.loads((out / "images.json").read_text())
    assert [i["frame"] for i in images] == [0, 1, 2, 3, 4] and images[0]["width"] == 161  # the source's size
    per_video = json.loads((out / "labels" / "clip.mp4.json").read_text())
    assert [f["frame"] for f in per_video["frames"]] == [0, 1, 2, 3, 4]
    assert all(len(f["detections"]) == 100 for f in per_video["frames"])
    source = read_video(clip)
    assert np.abs(frames[0].astype(int) - source[0][:, :160].astype(int)).mean() > 1  # boxes were drawn


def test_numeric_file_names_become_coco_image_ids(photos, lite0_weights, tmp_path):
    folder = tmp_path / "coco"
    folder.mkdir()
    for i, name in enumerate(PHOTOS):
        (folder / f"{397133 + i:012d}.jpg").write_bytes((photos / f"{name}.jpg").read_bytes())
    out = tmp_path / "out"
    assert main(lite0_cli(lite0_weights, str(folder), "--out", str(out), "--no-draw")) == 0
    ids = {r["image_id"] for r in json.loads((out / "detections.json").read_text())}
    assert ids == {397133, 397134, 397135}
    assert not list(out.glob("*.jpg"))  # --no-draw


@pytest.mark.parametrize("names, numeric", [
    (["1.jpg", "02.jpg"], True), (["1.jpg", "01.jpg"], False), (["1.jpg", "².jpg"], False),
    (["1.jpg", "١.jpg"], False), (["1.jpg", "a.jpg"], False),
])
def test_only_ascii_digit_names_become_image_ids(names, numeric):
    from efficientdet.inference.sources import Source
    from efficientdet.inference.writer import numeric_names

    assert numeric_names([Source(Path(n), n) for n in names]) is numeric


def test_pixel_limit_refuses_large_images(photos, lite0_weights, tmp_path, capsys):
    assert main(lite0_cli(lite0_weights, str(photos / "astronaut.jpg"), "--out", str(tmp_path),
                          "--max-megapixels", "0.1", "--strict")) == 1
    assert "over the limit of 100000 (max_pixels, 0.1 MP)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "efficientdet-d9"], "unknown model 'efficientdet-d9'"),
    (["--half", "--device", "cpu"], "float16 (--half) needs a CUDA device"),
    (["--image-size", "12x"], "--image-size must be N or HxW"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_user_errors_are_one_line(photos, lite0_weights, tmp_path, capsys, args, message):
    base = {"--model": "efficientdet-lite0"}
    argv = ["predict", "--weights", str(lite0_weights), str(photos), "--out", str(tmp_path), "--quiet"]
    argv += args if "--model" in args else ["--model", base["--model"], *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_inputs_are_user_errors(lite0_weights, tmp_path, capsys):
    for missing in (tmp_path / "nope.jpg", tmp_path / "*.png"):
        assert main(lite0_cli(lite0_weights, str(missing), "--out", str(tmp_path / "out"))) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(missing) in err


@pytest.fixture(scope="module")
def trained_ab(tmp_path_factory) -> tuple[Path, Path]:
    """A COCO dataset whose category ids are 1, 2 named a, b (images 160×90: padded at the bottom
    at 128², and named by their ids) and Lite0 weights as training writes them for it."""
    root = tmp_path_factory.mktemp("ab")
    (root / "images").mkdir()
    record = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for i in (1, 2):
        pixels = np.random.default_rng(i).integers(0, 256, (90, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        record["images"].append({"id": i, "file_name": f"{i}.png", "width": 160, "height": 90})
        record["annotations"].append({"id": i, "image_id": i, "category_id": i, "bbox": [40, 20, 60, 40],
                                      "area": 2400, "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps(record))
    split = {"images": "images", "annotations": "annotations.json"}
    (root / "data.yaml").write_text(json.dumps({"format": "coco", "train": split, "val": split}))
    model = lively(create_model("efficientdet-lite0", num_classes=2, image_size=128))
    labels = {"names": json.dumps(["a", "b"]), "label_ids": json.dumps([1, 2])}  # as the trainer writes them
    return root, save_safetensors(model, root / "ab.safetensors", extra=labels)


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_predict_gives_the_label_space_stored_with_the_weights_and_boxes_within_the_image(trained_ab, backend,
                                                                                          tmp_path, capsys):
    root, weights = trained_ab
    model_args = ["--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "128"]
    if backend == "onnxruntime":
        onnx = tmp_path / "ab.onnx"
        assert main(["export", *model_args, "--format", "onnx", "--out", str(onnx)]) == 0
        model_args = ["--backend", "onnxruntime", "--weights", str(onnx)]
    out = tmp_path / "out"
    assert main(["predict", *model_args, str(root / "images"), "--out", str(out), "--workers", "0", "--quiet",
                 "--save-json"]) == 0
    results = json.loads((out / "detections.json").read_text())
    for r in results:  # within the 160×90 image, though the network saw it padded to 128×128
        x, y, w, h = r["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 160 + 0.01 and y + h <= 90 + 0.01, r
    assert {r["category_id"] for r in results} == {1, 2}
    named = {(d["category_id"], d["name"]) for name in ("1.png", "2.png")
             for d in json.loads((out / "labels" / f"{name}.json").read_text())["detections"]}
    assert named == {(1, "a"), (2, "b")}
    assert main(["eval", "--data", str(root / "data.yaml"), "--predictions", str(out / "detections.json")]) == 0
    assert "AP50" in capsys.readouterr().out


def test_python_api_uses_the_stored_label_space_unless_given_another(trained_ab):
    root, weights = trained_ab
    model = create_model("efficientdet-lite0", weights=weights, image_size=128)
    image = np.asarray(Image.open(root / "images" / "1.png"))
    for run in (Detector(model), Detector.from_model(model, device="cpu")):
        result = run(image)
        assert set(result["labels"].tolist()) == {1, 2}
        assert {(int(i), n) for i, n in zip(result["labels"], result["names"])} == {(1, "a"), (2, "b")}
        assert result["boxes"][:, 2].max() <= 160 and result["boxes"][:, 3].max() <= 90
        assert result["boxes"].min() >= 0
    given = Detector(model, label_ids=[7, 8], class_names=["x", "y"])(image)
    assert set(given["labels"].tolist()) == {7, 8} and set(given["names"]) == {"x", "y"}
