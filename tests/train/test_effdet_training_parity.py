"""A training step of ours equals effdet's, stochastic depth included.

With the same weights, the same batch and targets, and the same stochastic-depth masks (drawn from
one seeded generator in both, block by block), the training-mode loss and every gradient of our
Lite0 equal those of effdet's ``tf_efficientdet_lite0``. So training differences between the two
come from random draws (masks, initialisation) and float summation order, not from the networks:
benchmarks/bench_training.py compares whole runs.
"""

import pytest
import torch

import efficientdet.backbone as backbone
from efficientdet import create_model
from efficientdet.anchors import generate_anchors
from efficientdet.assign import assign_targets
from efficientdet.loss import LossConfig, detection_loss
from efficientdet.weights.effdet import effdet_names

effdet = pytest.importorskip("effdet", reason="effdet is a test extra: pip install 'efficientdet[test]'")


def effdet_lite0(ours, drop_path_rate: float):
    config = effdet.get_efficientdet_config("tf_efficientdet_lite0")
    config.num_classes = ours.config.num_classes
    config.image_size = tuple(ours.config.image_size)
    config.backbone_args = dict(drop_path_rate=drop_path_rate)
    net = effdet.EfficientDet(config, pretrained_backbone=False)
    state = ours.state_dict()
    net.load_state_dict({theirs: state[k] for k, theirs in effdet_names(ours).items()}, strict=False)
    return net


def test_training_step_equals_effdets_with_the_same_drop_path_masks(monkeypatch):
    torch.manual_seed(0)
    ours = create_model("efficientdet-lite0", num_classes=4, image_size=128).train()
    survival = ours.config.backbone.survival_prob
    net = effdet_lite0(ours, 1.0 - survival).train()
    generators, keeps = {}, {"ours": [], "effdet": []}

    def masked(who, x, keep):
        keeps[who].append(round(keep, 6))
        draw = torch.rand(x.shape[0], 1, 1, 1, generator=generators[who]) < keep
        return x * draw / keep

    monkeypatch.setattr(backbone, "drop_path", lambda x, p, training: masked("ours", x, p) if training else x)
    for m in net.modules():
        if type(m).__name__ == "DropPath":
            monkeypatch.setattr(m, "forward", lambda x, m=m: masked("effdet", x, 1.0 - m.drop_prob))

    images = torch.randn(2, 3, 128, 128)
    boxes = torch.tensor([[[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]], [[5.0, 5.0, 40.0, 100.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 3], [2, -1]])
    anchors = generate_anchors(ours.config)
    targets = assign_targets(anchors, boxes, labels)
    losses = {}
    for who, model in (("ours", ours), ("effdet", net)):
        generators[who] = torch.Generator().manual_seed(5)
        cls_out, box_out = model(images)
        losses[who] = detection_loss(list(cls_out), list(box_out), anchors, targets, LossConfig())["loss"]
        losses[who].backward()

    assert keeps["ours"] == keeps["effdet"] and len(keeps["ours"]) == 9  # Lite0's residual blocks
    assert torch.allclose(losses["ours"], losses["effdet"], rtol=1e-6)
    theirs = dict(net.named_parameters())
    for key, p in ours.named_parameters():
        q = theirs[effdet_names(ours)[key]].grad.view_as(p.grad)
        assert torch.allclose(p.grad, q, rtol=1e-4, atol=1e-6), key
