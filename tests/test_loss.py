import math
from model_builders import lively
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

import efficientdet
from efficientdet.anchors import generate_anchors
from efficientdet.assign import BACKGROUND, IGNORE, Targets, assign_targets
from efficientdet.config import ModelConfig
from efficientdet.loss import LossConfig, detection_loss, flatten_outputs, focal_loss, huber_loss, iou_box_loss

LN3 = math.log(3.0)
# Two anchors, two classes: anchor 0 is a positive of class 1 with logits (0, 0) (p = 1/2);
# anchor 1 is background with logits (ln 3, −ln 3) (p = 3/4, 1/4); anchor 2 is ignored.
LOGITS = torch.tensor([[[0.0, 0.0], [LN3, -LN3], [100.0, -100.0]]])
CLS = torch.tensor([[1, BACKGROUND, IGNORE]])
# α_t (1 − p_t)^1.5 CE, with α = 0.25, γ = 1.5, by hand:
FOCAL = (
    0.75 * 0.5**1.5 * math.log(2)  # anchor 0, class 0: y = 0, p_t = 1/2
    + 0.25 * 0.5**1.5 * math.log(2)  # anchor 0, class 1: y = 1, p_t = 1/2
    + 0.75 * 0.75**1.5 * math.log(4)  # anchor 1, class 0: y = 0, p = 3/4, p_t = 1/4
    + 0.75 * 0.25**1.5 * math.log(4 / 3)  # anchor 1, class 1: y = 0, p = 1/4, p_t = 3/4
)
# Label smoothing 0.1 changes only the cross-entropy, with y_smooth = 0.05 for y = 0 (0.95 for 1):
# at logit 0 the cross-entropy stays ln 2; at anchor 1 it becomes −(0.05 ln p + 0.95 ln(1 − p)).
FOCAL_SMOOTH = (
    0.75 * 0.5**1.5 * math.log(2)
    + 0.25 * 0.5**1.5 * math.log(2)
    - 0.75 * 0.75**1.5 * (0.05 * math.log(0.75) + 0.95 * math.log(0.25))
    - 0.75 * 0.25**1.5 * (0.05 * math.log(0.25) + 0.95 * math.log(0.75))
)
# Box codes: anchor 0 positive, errors (−0.05, 0.2, −0.2, ·); its tw target is exactly 0, which the
# official BoxLoss leaves out. Huber δ = 0.1: 0.5·0.05² + 2·(0.1·0.2 − 0.5·0.1²) = 0.03125.
BOX_PRED = torch.tensor([[[0.05, 0.3, 0.0, -0.5], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]])
BOX_TARGET = torch.tensor([[[0.1, 0.1, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
HUBER = 0.03125


def test_flatten_outputs_follow_anchor_order():
    g = torch.Generator().manual_seed(0)
    sizes = [(128 // 2**level, 128 // 2**level) for level in range(3, 8)]
    cls = [torch.randn(2, 9 * 3, h, w, generator=g) for h, w in sizes]
    box = [torch.randn(2, 36, h, w, generator=g) for h, w in sizes]
    logits, codes = flatten_outputs(cls, box, 3)
    assert logits.shape == (2, sum(9 * h * w for h, w in sizes), 3) and codes.shape == (2, logits.shape[1], 4)
    # location (y=1, x=2) of P3 (16x16), anchor 4, class 2 → channel 4*3+2
    assert logits[1, (1 * 16 + 2) * 9 + 4, 2] == cls[0][1, 14, 1, 2]
    assert codes[0, (3 * 16 + 0) * 9 + 8, 1] == box[0][0, 8 * 4 + 1, 3, 0]


def test_focal_loss_by_hand():
    assert focal_loss(LOGITS, CLS).item() == pytest.approx(FOCAL, rel=1e-6)
    assert focal_loss(LOGITS, CLS, label_smoothing=0.1).item() == pytest.approx(FOCAL_SMOOTH, rel=1e-6)


def test_focal_loss_equals_torchvision_without_smoothing():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 4, generator=gen) * 3
    cls = torch.randint(-1, 4, (2, 50), generator=gen)
    onehot = torch.nn.functional.one_hot(cls + 1, 5)[..., 1:].float()
    expected = sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=1.5, reduction="sum")
    torch.testing.assert_close(focal_loss(logits, cls), expected)


def test_ignored_anchors_contribute_nothing():
    assert focal_loss(LOGITS, CLS).item() == pytest.approx(focal_loss(LOGITS[:, :2], CLS[:, :2]).item())
    logits = LOGITS.clone().requires_grad_()
    focal_loss(logits, CLS).backward()
    assert (logits.grad[0, 2] == 0).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradients_finite_for_extreme_logits(smoothing):
    logits = torch.tensor([[[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0]]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([[0, 0, BACKGROUND]]), label_smoothing=smoothing)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_huber_loss_by_hand():
    positive = torch.tensor([[True, False, False]])
    assert huber_loss(BOX_PRED, BOX_TARGET, positive, delta=0.1).item() == pytest.approx(HUBER, rel=1e-6)


def _one_level(logits, codes):
    """``[1, N, C]`` / ``[1, N, 4]`` as a single level of H=1, W=N, one anchor per location."""
    return [logits.permute(0, 2, 1)[:, :, None]], [codes.permute(0, 2, 1)[:, :, None]]


def test_detection_loss_normalisers_by_hand():
    cls_out, box_out = _one_level(LOGITS, BOX_PRED)
    targets = Targets(CLS, BOX_TARGET, torch.tensor([1.0]))
    out = detection_loss(cls_out, box_out, torch.zeros(3, 4), targets, LossConfig())
    # (P + 1) = 2 for the classes, (P + 1) · 4 = 8 for the boxes, box weight 50.
    assert out["cls_loss"].item() == pytest.approx(FOCAL / 2, rel=1e-6)
    assert out["box_loss"].item() == pytest.approx(HUBER / 8, rel=1e-6)
    assert out["loss"].item() == pytest.approx(FOCAL / 2 + 50 * HUBER / 8, rel=1e-6)
    assert out["box_iou_loss"].item() == 0.0
    out = detection_loss(cls_out, box_out, torch.zeros(3, 4), targets, num_positives_override=torch.tensor(3.0))
    assert out["loss"].item() == pytest.approx(FOCAL / 4 + 50 * HUBER / 16, rel=1e-6)


def test_iou_loss_by_hand():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    # Target box (0, 0, 20, 10) against anchor 0: (ty, tx, th, tw) = (0, 0.5, 0, ln 2); prediction = anchor.
    target = torch.tensor([[[0.0, 0.5, 0.0, math.log(2)], [0.0, 0.0, 0.0, 0.0]]])
    pred = torch.zeros(1, 2, 4)
    positive = torch.tensor([[True, False]])
    # IoU = 100/200 and the enclosing box is the union: GIoU = 0.5.
    assert iou_box_loss(pred, target, anchors, positive, "giou").item() == pytest.approx(0.5, rel=1e-5)
    # CIoU: + centre distance² / diagonal² = 25/500, + α·v with v = (4/π²)(atan 2 − atan 1)².
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    ciou = 0.5 + 25 / 500 + v / (0.5 + v) * v
    assert iou_box_loss(pred, target, anchors, positive, "ciou").item() == pytest.approx(ciou, rel=1e-5)
    cls_out, box_out = _one_level(torch.zeros(1, 2, 1), pred)
    out = detection_loss(cls_out, box_out, anchors, Targets(torch.tensor([[0, BACKGROUND]]), target,
                                                               torch.tensor([1.0])),
                         LossConfig(iou_loss_type="giou", iou_loss_weight=2.0))
    assert out["box_iou_loss"].item() == pytest.approx(0.5 / 8, rel=1e-5)
    assert out["loss"].item() == pytest.approx(
        (out["cls_loss"] + 50 * out["box_loss"] + 2 * out["box_iou_loss"]).item(), rel=1e-6)


def test_loss_config_validates():
    with pytest.raises(ValueError, match="iou_loss_type"):
        LossConfig(iou_loss_type="diou")
    with pytest.raises(ValueError, match="unmatched_threshold"):
        LossConfig(match_threshold=0.4, unmatched_threshold=0.5)


# --- cross-check against effdet (rwightman/efficientdet-pytorch), which follows the official code ---

IMAGE = (128, 128)
NUM_CLASSES = 4


def _random_batch(seed: int, batch: int = 3, num_boxes: int = 8, centred: bool = False):
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 128, (batch, num_boxes, 2))
    size = np.where(rng.random((batch, num_boxes, 1)) < 0.3, rng.uniform(2, 6, (batch, num_boxes, 2)),
                    rng.uniform(10, 100, (batch, num_boxes, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1).clip(0, 128).astype(np.float32)
    boxes[:, 1] = boxes[:, 0]  # a duplicate
    if centred:  # on a P3 anchor, so that ty, tx are 0 or an ulp away, depending on rounding
        boxes[:, 2] = np.array([0.0, 0.0, 24.0, 24.0])
    labels = rng.integers(0, NUM_CLASSES, (batch, num_boxes))
    labels[:, -2:] = -1  # padding
    labels[0] = -1  # an image without boxes
    return torch.from_numpy(boxes), torch.from_numpy(labels)


def _flat_levels(per_level: list[torch.Tensor], last: int) -> torch.Tensor:
    return torch.cat([x.reshape(x.shape[0], -1, last) for x in per_level], 1)


@pytest.mark.parametrize("seed,smoothing,centred", [(0, 0.0, False), (1, 0.0, False), (2, 0.1, False),
                                                      (3, 0.0, True)])  # 3: centred, codes exactly 0
def test_matches_effdet(seed, smoothing, centred):
    effdet_anchors = pytest.importorskip("effdet.anchors")
    effdet_loss = pytest.importorskip("effdet.loss")
    anchors = generate_anchors(ModelConfig("anchors", IMAGE))
    # effdet's own anchors round the aspect ratios (1.4, 0.7); give it ours, in its yxyx layout.
    reference_anchors = effdet_anchors.Anchors(3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, IMAGE)
    reference_anchors.boxes = anchors[:, [1, 0, 3, 2]].clone()
    labeler = effdet_anchors.AnchorLabeler(reference_anchors, NUM_CLASSES, match_threshold=0.5)
    boxes, labels = _random_batch(seed, centred=centred)
    # effdet takes yxyx boxes and 1-based classes (it subtracts 1), padding < 0.
    ref_cls, ref_box, ref_npos = labeler.batch_label_anchors(boxes[..., [1, 0, 3, 2]],
                                                             torch.where(labels >= 0, labels + 1, -1))
    targets = assign_targets(anchors, boxes, labels)
    torch.testing.assert_close(targets.cls, _flat_levels(ref_cls, 1)[..., 0])
    torch.testing.assert_close(targets.box, _flat_levels(ref_box, 4), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(targets.num_positives, ref_npos)
    assert targets.num_positives[0] == 0 and (targets.num_positives[1:] > 0).all()

    gen = torch.Generator().manual_seed(seed)
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    cls_out = [torch.randn(3, 9 * NUM_CLASSES, h, w, generator=gen) * 2 - 2 for h, w in sizes]
    box_out = [torch.randn(3, 9 * 4, h, w, generator=gen) * 0.2 for h, w in sizes]
    config = LossConfig(label_smoothing=smoothing)
    ours = detection_loss(cls_out, box_out, anchors, targets, config)
    reference = effdet_loss.DetectionLoss(SimpleNamespace(
        num_classes=NUM_CLASSES, alpha=config.alpha, gamma=config.gamma, delta=config.delta,
        box_loss_weight=config.box_loss_weight, label_smoothing=smoothing, legacy_focal=False, jit_loss=False))
    total, cls_loss, box_loss = reference(cls_out, box_out, ref_cls, ref_box, ref_npos)
    for name, value in (("loss", total), ("cls_loss", cls_loss), ("box_loss", box_loss)):
        assert ours[name].item() == pytest.approx(value.item(), rel=1e-4), name


# --- end to end on a real model ---


def test_end_to_end_training_steps_reduce_loss():
    torch.manual_seed(0)
    model = lively(efficientdet.create_model("efficientdet-lite0", num_classes=3, image_size=128)).eval()
    config = model.config
    anchors = generate_anchors(config)
    image = torch.randn(1, 3, 128, 128)
    targets = assign_targets(anchors, torch.tensor([[[20.0, 30.0, 90.0, 100.0]]]), torch.tensor([[2]]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005)
    losses = []
    for _ in range(3):
        out = detection_loss(*model(image), anchors, targets, LossConfig())
        assert all(torch.isfinite(v) for v in out.values())
        optimizer.zero_grad()
        out["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.75 * losses[0], losses
