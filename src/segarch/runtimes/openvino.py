"""The network run by OpenVINO on the CPU, compiled from the cached, checked ONNX export.

OpenVINO compiles the same ``.onnx`` file that :mod:`segarch.runtimes.onnx` exports and caches (so the export
and its check against eager PyTorch happen once for both runtimes), with fp32 inference precision forced: on
CPUs with bf16 support OpenVINO would otherwise run in bf16 and labels could change. One compiled model per
batch size (static shapes run faster than a dynamic batch axis); the last, smaller batch of a run gets its own.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from segarch.runtimes.onnx import ExportError, RuntimeNotInstalled, agrees_with_eager, compare_to_eager, onnx_runner

__all__ = ["OpenVinoRunner", "openvino_runner", "openvino_available", "INSTALL_OPENVINO"]

log = logging.getLogger("segarch.runtimes")

INSTALL_OPENVINO = "pip install 'napari-segarch[openvino]' (or: pip install openvino onnxruntime onnx)"


def openvino_available() -> bool:
    """Whether OpenVINO can be imported here."""
    return importlib.util.find_spec("openvino") is not None


class OpenVinoRunner:
    """OpenVINO as the engine's batch runner: ``runner(batch, batch_size) -> logits`` (float32 NumPy)."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino

        self.path = path
        self._core = openvino.Core()
        self._config = {"INFERENCE_NUM_THREADS": max(1, int(threads)), "INFERENCE_PRECISION_HINT": "f32",
                        "PERFORMANCE_HINT": "LATENCY"}
        self._compiled: dict[tuple[int, ...], object] = {}

    def _for_shape(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            network = self._core.read_model(str(self.path))
            network.reshape({network.inputs[0].any_name: list(shape)})
            self._compiled[shape] = self._core.compile_model(network, "CPU", self._config)
        return self._compiled[shape]

    def __call__(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        result = self._for_shape(tuple(x.shape))(x)
        return np.ascontiguousarray(result[0], dtype=np.float32)


def openvino_runner(model, tile_shape: tuple[int, ...], threads: int = 1) -> OpenVinoRunner:
    """An :class:`OpenVinoRunner` for ``model`` on tiles of ``tile_shape``, checked against eager PyTorch.

    Raises:
        RuntimeNotInstalled: OpenVINO (or ONNX Runtime and ``onnx``, which export and check the graph) is missing.
        ExportError: the architecture does not export, or OpenVINO computes something else than the network.
    """
    if not openvino_available():
        raise RuntimeNotInstalled(f"`runtime`='openvino' needs OpenVINO, which is not installed: {INSTALL_OPENVINO}.")
    path = onnx_runner(model, tile_shape, threads).path
    runner = OpenVinoRunner(path, threads)
    try:
        difference, scale = compare_to_eager(model, lambda x: runner(x, len(x)), tile_shape)
    except Exception as err:  # OpenVINO's errors (an operator it cannot compile) have no common base
        raise ExportError(f"The architecture {model.arch!r} exports to ONNX but OpenVINO cannot run it "
                          f"({type(err).__name__}: {str(err).strip()[:300]}); use `runtime`='onnxruntime'.") from None
    if not agrees_with_eager(difference, scale):
        raise ExportError(f"The architecture {model.arch!r} computes different logits under OpenVINO (largest "
                          f"difference {difference:.3g} on a random batch); use `runtime`='onnxruntime'.")
    return runner
