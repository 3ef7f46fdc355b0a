"""The one error type of weight loading (a ValueError: bad input, not a bug)."""


class WeightsError(ValueError):
    """Weights that do not fit the model; the message names the file or tensor and the problem."""


class CheckpointError(WeightsError):
    """A TF checkpoint is missing, malformed, corrupt or uses an unsupported feature."""
