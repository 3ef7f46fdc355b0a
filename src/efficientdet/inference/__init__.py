"""Inference: :class:`Detector`, the one front end, and what ``predict`` builds around it.

* ``detector`` — :class:`Detector`: label space, preprocessing, a backend, un-padding;
* ``backends`` — the model as it is, BN-folded ``eager`` / ``compile``, ``onnxruntime``;
* ``sources`` — input files, globs and folders → sources with unique output names;
* ``loading`` / ``video`` — images and video frames decoded and preprocessed in DataLoader workers;
* ``stream`` — :func:`~.stream.predict_sources`: detection over files, failures named, not fatal;
* ``writer`` — annotated images and videos, COCO results, per-file labels.

Only :class:`Detector` is imported here: the file side reads images through :mod:`efficientdet.data`,
which ``import efficientdet`` should not pay for.
"""

from .detector import Detector

__all__ = ["Detector"]
