import pytest
import torch

from efficientdet.config import PostprocessConfig
from efficientdet.postprocess import postprocess


def _outputs(num_classes=3, size=(128, 128), seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(size[0] // 2**lvl, size[1] // 2**lvl) for lvl in range(3, 8)]
    cls = [torch.randn(2, 9 * num_classes, h, w, generator=g) * 2 - 3 for h, w in sizes]
    box = [torch.randn(2, 36, h, w, generator=g) * 0.2 for h, w in sizes]
    return cls, box


@pytest.mark.parametrize("method", ["gaussian", "hard"])
@pytest.mark.parametrize("agnostic", [True, False])
def test_postprocess_shapes_padding_and_clipping(method, agnostic):
    from efficientdet.anchors import generate_anchors
    from efficientdet.config import ModelConfig

    cls, box = _outputs()
    anchors = generate_anchors(ModelConfig("anchors", (128, 128)))
    cfg = PostprocessConfig(method=method, class_agnostic=agnostic, max_detections=30, score_threshold=0.05)
    scales = torch.tensor([1.0, 2.5])
    det = postprocess(cls, box, anchors, cfg, (128, 128), scales)
    assert det.boxes.shape == (2, 30, 4) and det.scores.shape == (2, 30) and det.classes.shape == (2, 30)
    for b in range(2):
        n = int(det.num_valid[b])
        assert 0 < n <= 30
        assert (det.scores[b, :n] > 0.05).all() and (det.scores[b, n:] == 0).all()
        assert (det.classes[b, :n] >= 0).all() and (det.classes[b, :n] < 3).all() and (det.classes[b, n:] == -1).all()
        assert (det.scores[b, :n].diff() <= 0).all()  # descending
        assert det.boxes[b, :n].min() >= 0 and det.boxes[b, :n].max() <= 128 * scales[b] + 1e-4


def test_pre_nms_top_k_limits_candidates():
    from efficientdet.anchors import generate_anchors
    from efficientdet.config import ModelConfig

    cls, box = _outputs()
    anchors = generate_anchors(ModelConfig("anchors", (128, 128)))
    full = postprocess(cls, box, anchors, PostprocessConfig(method="hard", score_threshold=0.0), (128, 128))
    top = postprocess(cls, box, anchors, PostprocessConfig(method="hard", pre_nms_top_k=5, score_threshold=0.0),
                      (128, 128))
    assert top.num_valid.max() <= 5
    assert torch.allclose(top.scores[:, 0], full.scores[:, 0])  # the best box survives


def test_anchor_count_mismatch_is_an_error():
    cls, box = _outputs()
    with pytest.raises(ValueError, match="anchors"):
        postprocess(cls, box, torch.zeros(10, 4), PostprocessConfig(), (128, 128))
