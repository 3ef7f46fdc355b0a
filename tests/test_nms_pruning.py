"""The speed-ups inside ``postprocess`` change no result: the per-level best logit and the late
class look-up against the plain computations."""

import dataclasses

import torch

from efficientdet import postprocess as pp
from efficientdet.config import PostprocessConfig


def test_per_level_best_logit_and_late_class_lookup_equal_the_flattened_ones():
    g = torch.Generator().manual_seed(0)
    cls = [torch.randn(2, 9 * 7, s, s + 1, generator=g) for s in (16, 8, 4, 2, 1)]
    cls = [cls[0].contiguous(memory_format=torch.channels_last)] + cls[1:]  # either layout
    logits = pp.flatten_levels(cls, 7)
    assert torch.equal(pp.best_logit_per_anchor(cls, 7), logits.max(-1).values)
    best, classes = pp.best_class_per_anchor(cls, 7)
    assert torch.equal(best, logits.max(-1).values) and torch.equal(classes, logits.max(-1).indices)
    index = torch.randint(0, logits.shape[1], (2, 50), generator=g)
    assert torch.equal(pp.class_logits_at(cls, index, 7), logits.gather(1, index[..., None].expand(-1, -1, 7)))


def test_postprocess_with_a_pre_nms_top_k_names_the_right_classes():
    g = torch.Generator().manual_seed(3)
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    cls = [torch.randn(1, 9 * 4, h, w, generator=g) for h, w in sizes]
    box = [torch.randn(1, 36, h, w, generator=g) * 0.1 for h, w in sizes]
    from efficientdet.anchors import generate_anchors
    from efficientdet.config import ModelConfig

    anchors = generate_anchors(ModelConfig("anchors", (128, 128)))
    config = dataclasses.replace(PostprocessConfig(method="hard"), pre_nms_top_k=50)
    det = pp.postprocess(cls, box, anchors, config, (128, 128))
    logits = pp.flatten_levels(cls, 4)
    n = int(det.num_valid[0])
    top_scores = torch.sigmoid(logits[0].max(-1).values)
    for score, label in zip(det.scores[0, :n].tolist(), det.classes[0, :n].tolist()):
        anchor = int((top_scores - score).abs().argmin())
        assert logits[0, anchor].argmax().item() == label
