"""The tiled, chunked inference engine: :func:`predict`."""

from segarch.tiling.engine import OUTPUTS, PredictionCancelled, predict

__all__ = ["predict", "PredictionCancelled", "OUTPUTS"]
