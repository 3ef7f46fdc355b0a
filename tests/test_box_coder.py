import torch

from efficientdet import box_coder


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(1000, 2, generator=g) * 500
    anchors = torch.cat([anchors, anchors + 1 + torch.rand(1000, 2, generator=g) * 200], 1)
    boxes = torch.rand(3, 1000, 2, generator=g) * 500
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(3, 1000, 2, generator=g) * 300], -1)
    back = box_coder.decode(box_coder.encode(boxes, anchors), anchors)
    assert torch.allclose(back, boxes, atol=1e-3)


def test_decode_is_official_formula():
    anchor = torch.tensor([[10.0, 20.0, 50.0, 100.0]])  # x1 y1 x2 y2: wa 40, ha 80, xc 30, yc 60
    codes = torch.tensor([[0.5, -0.25, 0.0, torch.log(torch.tensor(2.0))]])  # ty tx th tw
    # yc = 0.5*80+60 = 100, xc = -0.25*40+30 = 20, h = 80, w = 80
    assert torch.allclose(box_coder.decode(codes, anchor), torch.tensor([[-20.0, 60.0, 60.0, 140.0]]))


def test_zero_codes_give_anchors():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 32.0], [5.0, 5.0, 9.0, 7.0]])
    assert torch.allclose(box_coder.decode(torch.zeros(2, 4), anchors), anchors)
