"""Read TensorFlow V2 "tensor bundle" checkpoints without TensorFlow.

No well-kept library reads this format without TensorFlow, so it is decoded by hand
here and TensorFlow never becomes a dependency.

A checkpoint with prefix ``dir/model`` is three kinds of file:

* ``dir/checkpoint``: text state file, ``model_checkpoint_path: "model"`` (:mod:`.paths`).
* ``dir/model.index``: a LevelDB-style sorted table (:mod:`.table`). The key ``""`` holds a
  ``BundleHeaderProto``; every other key is a tensor name whose value is a
  ``BundleEntryProto`` (:mod:`.bundle`).
* ``dir/model.data-00000-of-00001``: raw little-endian tensor bytes.

Everything read is verified (block and tensor CRCs, sizes against dtype x shape and
against the file sizes) and every problem raises :class:`CheckpointError` (a
``WeightsError``) naming the file and tensor. ``DT_BFLOAT16`` tensors are returned widened
to float32 (exact), because numpy has no bfloat16; ``DT_STRING`` tensors come back as
object arrays of ``bytes``.

Writing (for tests and fixtures) is :func:`.writer.write_tf_checkpoint`, kept out of the
reader's imports.
"""

from ..errors import CheckpointError
from .paths import resolve_checkpoint_prefix
from .reader import TensorInfo, TFCheckpoint

__all__ = ["CheckpointError", "TFCheckpoint", "TensorInfo", "resolve_checkpoint_prefix"]
