"""The one error type of weight loading."""


class WeightsError(ValueError):
    """Weights that do not fit the model; the message names the file or tensor and the problem."""
