"""Fuzz targets shared by the suite (``test_robust_fuzz.py``, a few examples each) and the long run
(``benchmarks/fuzz.py``, thousands): a hypothesis strategy and a check per target.

A check feeds one generated input to the code under test and returns ``"refused"`` or
``"accepted"``. An input may be refused only with the target's documented error type
(``Target.allowed``), whose message must name the file; whatever is accepted must satisfy the
properties asserted here. Anything else — another exception, an AssertionError — is a crash.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import yaml
from hypothesis import strategies as st
from PIL import Image

from efficientdet import box_coder
from efficientdet.assign import batched_iou
from efficientdet.config import PostprocessConfig
from efficientdet.data import DatasetError, load_coco, load_dataset_yaml, load_voc, load_yolo
from efficientdet.nms import compiled_greedy, nms
from efficientdet.weights import tf_checkpoint as tfc
from efficientdet.weights.tf_checkpoint import bundle as tf_bundle
from efficientdet.weights.tf_checkpoint import wire as tf_wire
from efficientdet.weights.tf_checkpoint import writer as tf_writer

NAMES = ["circle", "square", "triangle", "star"]
WIDTH, HEIGHT = 48, 32  # the one image the annotation targets describe
MAX_BOXES = 5  # small, so that the per-image box limit is reached too


class Target(NamedTuple):
    strategy: st.SearchStrategy
    check: Callable[[Any, Path], str]  # (example, a work folder of its own) → "refused" / "accepted"
    allowed: tuple[type[Exception], ...]  # the documented errors the check lets through as "refused"


def prepare(workdir: Path) -> Path:
    """The image every annotation target points at, in the layouts the parsers expect."""
    for folder in ("images", "VOC/JPEGImages"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (WIDTH, HEIGHT), (90, 20, 200)).save(workdir / folder / "a.png")
    (workdir / "labels").mkdir(exist_ok=True)
    (workdir / "VOC/Annotations").mkdir(exist_ok=True)
    return workdir


def assert_valid_split(split, images: Path) -> None:
    """What a parser returns is usable as is: boxes finite, inside their image, non-empty, labels
    in range, at most MAX_BOXES per image, images inside the image folder."""
    for sample in split.samples:
        boxes = sample.boxes
        assert sample.image_path.resolve().is_relative_to(images.resolve()), sample.image_path
        assert len(boxes) <= MAX_BOXES and np.isfinite(boxes).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all()
        assert (boxes[:, 2] <= sample.width).all() and (boxes[:, 3] <= sample.height).all()
        assert ((0 <= sample.labels) & (sample.labels < split.num_classes)).all()


def refusal(error: Exception, *paths: Path) -> str:
    """A documented error is a valid answer when it names the file (or one under the folder) at fault."""
    assert any(str(path) in str(error) for path in paths), (paths, str(error))
    return "refused"


# ---------------------------------------------------------------- TF checkpoint reader


@st.composite
def tf_bundles(draw):
    """A data file and index entries with arbitrary fields: dtype, shape, shard, offset, size, CRC
    (correct or not); string tensors laid out as TF does under a shape that may not fit them; and
    sometimes an odd bundle header."""
    data = draw(st.binary(max_size=256))
    entries = {}
    for name in draw(st.lists(st.text(min_size=1, max_size=4), max_size=4, unique=True)):
        if draw(st.booleans()):  # a string tensor, laid out as TF does
            strings = draw(st.lists(st.binary(max_size=6), max_size=4))
            payload, crc = tf_writer.encode_strings(strings)
            offset, size = len(data), len(payload)
            data += payload
            dtype, shape = 7, draw(st.sampled_from([(len(strings),), (1, len(strings)), ()]))
        else:
            dtype = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 9, 10, 14, 17, 19, 22, 23]), st.integers(0, 40)))
            shape = tuple(draw(st.lists(st.one_of(st.integers(0, 4), st.integers(-2, 2**63 - 1)), max_size=40)))
            offset = draw(st.one_of(st.integers(0, len(data)), st.integers(-(2**63), 2**63 - 1)))
            itemsize = tf_bundle.DISK_DTYPES[dtype].itemsize if dtype in tf_bundle.DISK_DTYPES else 1
            size = draw(st.one_of(st.just(math.prod(shape) * itemsize), st.integers(-(2**63), 2**63 - 1)))
            window = data[offset:offset + size] if 0 <= offset and 0 <= size else b""
            crc = tf_wire.masked_crc(window) if draw(st.booleans()) else draw(st.integers(0, 2**32 - 1))
        entries[name] = tf_writer.encode_entry(dtype, shape, draw(st.sampled_from([0, 0, 0, 1, -1])), offset,
                                          size, crc)
    header = draw(st.one_of(st.just(tf_writer.encode_header()),
                            st.builds(tf_writer.encode_header, st.integers(-(2**63), 2**63 - 1)),
                            st.binary(max_size=12)))
    return header, entries, data


def check_tf_bundle(example, workdir: Path) -> str:
    header, entries, data = example
    items = [(b"", header)] + sorted((name.encode("utf-8"), entry) for name, entry in entries.items())
    (workdir / "model.index").write_bytes(tf_writer.build_table(items))
    (workdir / "model.data-00000-of-00001").write_bytes(data)
    try:
        checkpoint = tfc.TFCheckpoint(workdir / "model")
        arrays = {name: (checkpoint.info(name), checkpoint.read(name)) for name in checkpoint.keys()}
    except tfc.CheckpointError as error:
        return refusal(error, workdir)
    for info, array in arrays.values():  # what reads is what the entry declares, within the file
        assert array.shape == info.shape and info.offset + info.size <= len(data)
        if isinstance(info.dtype, str):
            assert array.dtype == object
        else:
            assert array.dtype == info.dtype and array.nbytes <= 2 * info.size  # bfloat16 is widened 2×
    return "accepted"


def check_tf_state_file(text: bytes, workdir: Path) -> str:
    """A ``checkpoint`` state file with any content names an existing prefix or is refused."""
    (workdir / "model.index").write_bytes(b"")
    (workdir / "checkpoint").write_bytes(text)
    try:
        prefix = tfc.resolve_checkpoint_prefix(workdir)
    except tfc.CheckpointError as error:
        return refusal(error, workdir)
    assert Path(f"{prefix}.index").is_file()
    return "accepted"


STATE_NAMES = st.sampled_from([b"model", b"./model", b"../model", b"\\155odel", b"mo\\x64el", b"\\", b"/abs/model",
                               b"mod\\\"el", b"\\377", b"model\\n"])
STATE_FILES = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda lead, name, tail: lead + b'model_checkpoint_path: "' + name + b'"' + tail,
              st.sampled_from([b"", b"  ", b"# c\n", b'all_model_checkpoint_paths: "x"\n']),
              st.one_of(STATE_NAMES, STATE_NAMES, st.binary(max_size=12)),
              st.sampled_from([b"\n", b"", b" \n", b"x\n", b"\r\n"])),
)


# ---------------------------------------------------------------- annotation parsers

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 60), st.floats(),
                        st.text(max_size=6), st.sampled_from(["a.png", "../a.png", "/etc/passwd", "", "a.png\0"]),
                        st.lists(st.floats(-10, 80), min_size=4, max_size=4))  # a plausible bbox
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)
COCO_KEYS = ["id", "image_id", "category_id", "bbox", "iscrowd", "file_name", "width", "height", "name", "area"]


def coco_record() -> dict:
    return {"images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1 + i % 4, "bbox": [4 * i, 2, 10, 8]}
                            for i in range(3)],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]}


@st.composite
def coco_mutations(draw):
    """Edits anywhere in a valid record: replace or delete a key, append copies of records (over
    the box limit, duplicate ids), or replace a whole table; sometimes the JSON text is cut short."""
    record = coco_record()
    for _ in range(draw(st.integers(1, 4))):
        table = draw(st.sampled_from(["images", "annotations", "annotations", "categories", "categories", None]))
        if table is None:
            record[draw(st.sampled_from(["images", "annotations", "categories", "info"]))] = draw(JSON_VALUES)
            continue
        rows = record.get(table)
        if not isinstance(rows, list) or not rows:
            continue
        row = rows[draw(st.integers(0, len(rows) - 1))]
        action = draw(st.sampled_from(["set", "delete", "copy"]))
        if action == "copy":
            rows.extend(json.loads(json.dumps(row)) for _ in range(draw(st.integers(1, 4))))
        elif isinstance(row, dict):
            key = draw(st.one_of(st.sampled_from(COCO_KEYS), st.text(max_size=3)))
            if action == "delete":
                row.pop(key, None)
            else:
                row[key] = draw(JSON_VALUES)
    text = json.dumps(record)
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(text))))
    return text if cut is None else text[:cut]


def check_coco(text: str, workdir: Path) -> str:
    path = workdir / "annotations.json"
    path.write_text(text)
    try:
        split = load_coco(workdir / "images", path, max_boxes=MAX_BOXES)
    except DatasetError as error:
        return refusal(error, path)
    assert_valid_split(split, workdir / "images")
    return "accepted"


YOLO_TOKENS = st.one_of(st.integers(-2, 5).map(str), st.floats(-0.5, 1.5).map(repr), st.floats().map(repr),
                        st.text(max_size=4), st.sampled_from(["nan", "inf", "1e999", "0x1", "1_0", "٣", "0.5"]))


def check_yolo(text: bytes, workdir: Path) -> str:
    path = workdir / "labels" / "a.txt"
    path.write_bytes(text)
    try:
        split = load_yolo(workdir / "images", workdir / "labels", NAMES, max_boxes=MAX_BOXES)
    except DatasetError as error:
        return refusal(error, path)
    assert_valid_split(split, workdir / "images")
    return "accepted"


YOLO_LINES = st.one_of(
    st.tuples(st.integers(0, 3), *[st.floats(0, 1)] * 4).map(lambda v: " ".join(map(str, v))),  # a valid line
    st.lists(YOLO_TOKENS, max_size=7).map(" ".join),
    st.sampled_from(["", "   ", "\t"]),
)
YOLO_FILES = st.one_of(
    st.lists(YOLO_LINES, max_size=MAX_BOXES + 3).map(lambda lines: "\n".join(lines).encode()),
    st.binary(max_size=40),
)

XML_TEXT = st.one_of(st.integers(-5, 80).map(str), st.floats().map(repr),
                     st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=5), st.text(max_size=5),
                     st.sampled_from(["", " 7 ", "nan", "inf", "1e999", "a.png", "../a.png", "/etc/passwd",
                                      "square", "dog", "0", "1", "2", "&amp;", "<", "&e;"]))
XML_NUMBER = st.one_of(st.integers(-2, 60).map(str), st.floats(-5, 60).map(str))
DOCTYPES = st.sampled_from(["", "", "", '<?xml version="1.0"?>', '<!DOCTYPE a [<!ENTITY e "x">]>',
                            '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>', "<!-- c -->", "\ufeff"])


def xml_element(tag: str, body: str | None) -> str:
    return "" if body is None else f"<{tag}>{body}</{tag}>"


@st.composite
def voc_documents(draw):
    """A VOC annotation with every part optional and every value arbitrary (escaped or raw)."""
    text = draw(XML_TEXT).replace("&", "&amp;").replace("<", "&lt;") if draw(st.integers(0, 3)) else draw(XML_TEXT)
    # Mostly plausible values, so that most documents get past the first check; text escaped.
    value = lambda plausible: draw(st.one_of(plausible, plausible, plausible, st.none(),  # noqa: E731
                                             XML_TEXT.map(lambda t: t.replace("&", "&amp;").replace("<", "&lt;"))))
    objects = []
    for _ in range(draw(st.integers(0, MAX_BOXES + 2))):
        corners = sorted(draw(st.lists(XML_NUMBER, min_size=4, max_size=4)), key=float)  # xmin ≤ xmax mostly
        corners = [corners[0], corners[1], corners[3], corners[2]] if draw(st.integers(0, 3)) else corners
        box = "".join(xml_element(t, value(st.just(c))) for t, c in zip(("xmin", "ymin", "xmax", "ymax"), corners))
        objects.append(xml_element("object", xml_element("name", value(st.sampled_from(NAMES)))
                                   + xml_element("bndbox", box if draw(st.integers(0, 5)) else None)
                                   + xml_element("difficult", value(st.sampled_from(["0", "1"])))))
    size = xml_element("size", xml_element("width", value(st.just(str(WIDTH))))
                       + xml_element("height", value(st.just(str(HEIGHT)))))
    body = xml_element("filename", value(st.sampled_from(["a.png", text]))) + size + "".join(objects)
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 400)))
    return draw(DOCTYPES) + f"<annotation>{body}</annotation>"[:cut]


def check_voc(document: str, workdir: Path) -> str:
    path = workdir / "VOC/Annotations/a.xml"
    path.write_text(document, encoding="utf-8")
    try:
        split = load_voc(workdir / "VOC", names=NAMES, max_boxes=MAX_BOXES)
    except DatasetError as error:  # a missing size is read from the image, which may be the one at fault
        return refusal(error, path, workdir / "VOC/JPEGImages")
    assert_valid_split(split, workdir / "VOC/JPEGImages")
    return "accepted"


SPLIT_KEYS = {"coco": ("images", "annotations"), "voc": ("root", "split"), "yolo": ("images", "labels")}
PLAUSIBLE = {"images": "images", "annotations": "images/a.png", "root": "VOC", "split": "train", "labels": "labels"}
PATHS = st.sampled_from(["images", "labels", "VOC", "images/a.png", "nowhere", "", 1, None, "../images"])


@st.composite
def dataset_yaml_documents(draw):
    """A spec of a random format with its split keys (values mostly paths that exist), plus
    random extra, missing or wrong keys, dumped as YAML."""
    fmt = draw(st.sampled_from(["coco", "voc", "yolo", "kitti"]))
    spec = {"format": fmt}
    for split in draw(st.lists(st.sampled_from(["train", "val", "test"]), min_size=1, max_size=3, unique=True)):
        keys = SPLIT_KEYS.get(fmt, ("images",))
        spec[split] = {k: draw(st.sampled_from([PLAUSIBLE.get(k, "images")] * 3) | PATHS)
                       for k in keys if draw(st.integers(0, 5))}
    for key in draw(st.lists(st.sampled_from(["root", "names", "format", "train", "extra"]), max_size=2)):
        spec[key] = draw(st.one_of(st.just(NAMES), PATHS, JSON_VALUES))
    if fmt == "yolo" and draw(st.integers(0, 3)):
        spec["names"] = NAMES
    return yaml.safe_dump(spec, allow_unicode=True)


YAML_DOCUMENTS = st.one_of(
    dataset_yaml_documents(), dataset_yaml_documents(),
    st.text(max_size=60),
    st.sampled_from(["!!python/object/apply:os.system ['true']", "a: &x [*x]", "{", "- - -", "format: coco\n\t"]),
)


def check_dataset_yaml(text: str, workdir: Path) -> str:
    path = workdir / "data.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        spec = load_dataset_yaml(path)
    except DatasetError as error:
        return refusal(error, path)
    assert spec.format in ("coco", "voc", "yolo") and spec.splits
    for args in spec.splits.values():
        assert all(Path(v).exists() for k, v in args.items() if k != "split")
    return "accepted"


# ---------------------------------------------------------------- box ops

COORD = st.floats(-1e3, 1e3, width=32)


def proper_boxes(min_size: float):
    """xyxy boxes with both sides at least ``min_size`` (0: empty, or at least 1e-3, so that no
    area is below float32's smallest normal number and reads 0 in float32 but not in float64)."""
    side = st.floats(min_size, 500) if min_size else st.one_of(st.just(0.0), st.floats(1e-3, 500))
    return st.builds(lambda x, y, w, h: [x, y, x + w, y + h], COORD, COORD, side, side)


@st.composite
def coder_cases(draw):
    n = draw(st.integers(1, 6))
    return (draw(st.lists(proper_boxes(1e-2), min_size=n, max_size=n)),
            draw(st.lists(proper_boxes(1e-3), min_size=n, max_size=n)),
            draw(st.lists(st.lists(st.floats(-10, 10), min_size=4, max_size=4), min_size=n, max_size=n)))


def check_box_coder(example, _workdir: Path) -> str:
    """decode ∘ encode is the identity, and any bounded code decodes to a finite, proper box."""
    anchors, boxes, codes = (torch.tensor(v, dtype=torch.float64) for v in example)
    back = box_coder.decode(box_coder.encode(boxes, anchors), anchors)
    scale = boxes.abs().max() + 1
    assert torch.allclose(back, boxes, rtol=0, atol=1e-9 * float(scale)), (back, boxes)
    decoded = box_coder.decode(codes, anchors)
    assert torch.isfinite(decoded).all() and (decoded[:, 2:] >= decoded[:, :2]).all()
    return "accepted"


ANY_BOXES = st.lists(st.lists(COORD, min_size=4, max_size=4), min_size=1, max_size=6)  # inverted, empty too


def check_batched_iou(example, _workdir: Path) -> str:
    """Any finite boxes, even empty or inverted: IoU finite in [0, 1], symmetric, 1 with itself."""
    boxes, anchors = (torch.tensor(v, dtype=torch.float32) for v in example)
    iou = batched_iou(boxes[None], anchors)[0]
    assert torch.isfinite(iou).all() and (iou >= 0).all() and (iou <= 1 + 1e-6).all(), iou
    assert torch.allclose(iou, batched_iou(anchors[None], boxes)[0].T, atol=1e-6)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    proper = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (area > 1e-3)
    self_iou = batched_iou(boxes[None], boxes)[0].diagonal()
    assert torch.allclose(self_iou[proper], torch.ones(int(proper.sum())), atol=1e-5)
    return "accepted"


def iou64(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@st.composite
def nms_cases(draw):
    """One or two images of up to 24 boxes (some empty), scores, classes, any NMS configuration, and
    the size of nms's first window."""
    config = PostprocessConfig(method=draw(st.sampled_from(["gaussian", "hard"])),
                               iou_threshold=draw(st.floats(0.05, 0.95)), score_threshold=draw(st.floats(0, 0.5)),
                               soft_nms_sigma=draw(st.floats(0.05, 2)), max_detections=draw(st.integers(1, 30)),
                               class_agnostic=draw(st.booleans()))
    images, k = draw(st.integers(1, 2)), draw(st.integers(1, 24))
    box = proper_boxes(0.0)
    per_image = lambda strategy: [draw(st.lists(strategy, min_size=k, max_size=k)) for _ in range(images)]  # noqa: E731
    # Scores are sigmoid outputs, never exactly 0: 0 is the padding marker of Detections.
    return (per_image(box), per_image(st.floats(2.0 ** -20, 1, width=32)), per_image(st.integers(0, 2)), config,
            draw(st.integers(1, 8)))


def check_nms(example, _workdir: Path) -> str:
    """Soft and hard NMS against their definitions, per image and tie-robustly, and nms on a first
    window of a few boxes (grown until provably equal) against one window of every box."""
    raw_boxes, raw_scores, raw_classes, config, candidates = example
    boxes = torch.tensor(raw_boxes, dtype=torch.float32)
    scores = torch.tensor(raw_scores, dtype=torch.float32)
    classes = torch.tensor(raw_classes)
    full_idx, full_scores = nms(boxes, scores, classes, config, window=scores.shape[1], compiled=False)  # all
    top_idx, top_scores = nms(boxes, scores, classes, config, window=candidates, compiled=False)
    real = full_scores > 0  # the rest is padding, whose index means nothing
    assert torch.equal(top_scores, full_scores) and torch.equal(top_idx[real], full_idx[real])
    if compiled_greedy() is not None:  # the compiled lazy greedy: the same selections, to the bit
        kernel_idx, kernel_scores = nms(boxes, scores, classes, config, compiled=True)
        assert torch.equal(kernel_scores, full_scores) and torch.equal(kernel_idx[real], full_idx[real])
    tolerance = 1e-5
    for image in range(len(raw_boxes)):
        picked, picked_scores = full_idx[image][real[image]].tolist(), full_scores[image][real[image]].tolist()
        assert len(picked) == len(set(picked)) <= config.max_detections
        assert all(s > config.score_threshold for s in picked_scores)
        assert picked_scores == sorted(picked_scores, reverse=True)
        b, s = boxes[image].double().numpy(), scores[image].double().numpy()
        if config.method == "hard":
            check_hard_nms(b, s, raw_classes[image], config, picked, picked_scores, tolerance)
        elif config.class_agnostic:
            check_soft_nms(b, s, config, picked, picked_scores)
    return "accepted"


def check_hard_nms(b, s, classes, config, picked, picked_scores, tolerance: float) -> None:
    same_group = lambda i, j: config.class_agnostic or classes[i] == classes[j]  # noqa: E731
    assert picked_scores == [float(np.float32(s[i])) for i in picked]
    for n, i in enumerate(picked):  # kept boxes do not overlap beyond the threshold
        overlaps = [(j, iou64(b[i], b[j])) for j in picked[:n] if same_group(i, j)]
        assert all(iou <= config.iou_threshold + tolerance for _, iou in overlaps), (i, overlaps)
    if len(picked) < config.max_detections:  # every box left out is above threshold over a kept one
        for i in set(range(len(s))) - set(picked):
            if s[i] <= config.score_threshold + 1e-6:
                continue  # never a candidate
            assert any(iou64(b[i], b[j]) > config.iou_threshold - tolerance and s[j] >= s[i]
                       for j in picked if same_group(i, j)), i


def check_soft_nms(b, s, config, picked, picked_scores) -> None:
    """Each pick is the best remaining decayed score, and its score is its own decayed by every
    earlier pick: exp(-IoU² / σ) each (Bodla et al.)."""
    live = s.copy()
    for i, score in zip(picked, picked_scores):
        remaining = [j for j in range(len(s)) if j not in picked[:picked.index(i)]]
        assert math.isclose(score, live[i], rel_tol=1e-4, abs_tol=1e-6), (score, live[i])
        assert all(live[i] >= live[j] - 1e-4 for j in remaining)
        live = live * np.array([math.exp(-iou64(b[i], b[j]) ** 2 / config.soft_nms_sigma) for j in range(len(s))])
        live[i] = -1.0
    if len(picked) < config.max_detections:  # stopped because nothing left passes the threshold
        assert all(v <= config.score_threshold + 1e-5 for v in live)


# ---------------------------------------------------------------- the registry

TARGETS: dict[str, Target] = {
    "tf_checkpoint_bundle": Target(tf_bundles(), check_tf_bundle, (tfc.CheckpointError,)),
    "tf_checkpoint_state_file": Target(STATE_FILES, check_tf_state_file, (tfc.CheckpointError,)),
    "coco_parser": Target(coco_mutations(), check_coco, (DatasetError,)),
    "yolo_parser": Target(YOLO_FILES, check_yolo, (DatasetError,)),
    "voc_parser": Target(voc_documents(), check_voc, (DatasetError,)),
    "dataset_yaml": Target(YAML_DOCUMENTS, check_dataset_yaml, (DatasetError,)),
    "box_coder": Target(coder_cases(), check_box_coder, ()),
    "batched_iou": Target(st.tuples(ANY_BOXES, ANY_BOXES), check_batched_iou, ()),
    "nms": Target(nms_cases(), check_nms, ()),
}
