"""Box coding of the official model (Faster R-CNN style, no variance scaling, no clamp).

Regression values are (ty, tx, th, tw), the official channel order; boxes are xyxy.
"""

from __future__ import annotations

import torch

# Official ``faster_rcnn_box_coder`` floors sizes at this before dividing / taking logs in encode.
_EPS = 1e-8


def _center_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1


def decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``codes [..., N, 4]`` (ty, tx, th, tw) against ``anchors [N, 4]`` → boxes ``[..., N, 4]`` xyxy."""
    yca, xca, ha, wa = _center_size(anchors)
    ty, tx, th, tw = codes.unbind(-1)
    yc, xc = ty * ha + yca, tx * wa + xca
    h, w = torch.exp(th) * ha, torch.exp(tw) * wa
    return torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], -1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decode`: ``boxes [..., N, 4]`` xyxy → (ty, tx, th, tw).

    As the official ``FasterRcnnBoxCoder._encode``: centres as ``min + size / 2`` (not the
    ``(min + max) / 2`` of decode; the last bit matters because the official box loss skips
    codes that are exactly 0) and sizes floored at a tiny epsilon.
    """
    def center_size(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x1, y1, x2, y2 = b.unbind(-1)
        h, w = y2 - y1, x2 - x1
        return y1 + h / 2, x1 + w / 2, h.clamp(min=_EPS), w.clamp(min=_EPS)

    yca, xca, ha, wa = center_size(anchors)
    yc, xc, h, w = center_size(boxes)
    return torch.stack([(yc - yca) / ha, (xc - xca) / wa, torch.log(h / ha), torch.log(w / wa)], -1)
