"""The network run by OpenVINO on the CPU, compiled from the cached, checked ONNX export.

OpenVINO compiles the same ``.onnx`` file that :mod:`segarch.runtimes.onnx` exports and caches (so the export
and its check against eager PyTorch happen once for both runtimes), with fp32 inference precision forced: on
CPUs with bf16 support OpenVINO would otherwise run in bf16 and labels could change. One compiled model per
batch shape (static shapes run faster than a dynamic batch axis; the last, smaller batch of a run gets its
own), kept in this process for the next ``predict`` (compiling takes about as long as a few batches).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from segarch.runtimes.onnx import (ExportError, RuntimeNotInstalled, agrees_with_eager, cached_onnx, compare_to_eager,
                                   write_atomic)

__all__ = ["OpenVinoRunner", "openvino_runner", "openvino_available", "INSTALL_OPENVINO"]

log = logging.getLogger("segarch.runtimes")

INSTALL_OPENVINO = "pip install 'napari-segarch[openvino]' (or: pip install openvino onnxruntime onnx)"


# Compiled models of this process by (graph file, input shape, compile settings), the least recently used dropped
# first.
_COMPILED: OrderedDict[tuple, object] = OrderedDict()
_COMPILED_KEPT = 8
_COMPILED_LOCK = threading.Lock()


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

    def _for_shape(self, shape: tuple[int, ...]):
        # Every setting is in the key: a runner compiled with other hints must not get this one's compilation.
        key = (str(self.path), shape, tuple(sorted((k, str(v)) for k, v in self._config.items())))
        with _COMPILED_LOCK:
            if key in _COMPILED:
                _COMPILED.move_to_end(key)
                return _COMPILED[key]
        network = self._core.read_model(str(self.path))
        network.reshape({network.inputs[0].any_name: list(shape)})
        compiled = self._core.compile_model(network, "CPU", self._config)
        with _COMPILED_LOCK:
            _COMPILED[key] = compiled
            while len(_COMPILED) > _COMPILED_KEPT:
                _COMPILED.popitem(last=False)
        return compiled

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
    path = cached_onnx(model, tile_shape, threads)
    runner = OpenVinoRunner(path, threads)
    # Checked against eager once per export and OpenVINO version (recorded beside the export), not every run.
    checked = path.with_name(path.stem + ".openvino.json")
    stamp = {"openvino": _version(), "onnx_sha256": json.loads(path.with_suffix(".json").read_text())["sha256"]}
    try:
        if {k: v for k, v in json.loads(checked.read_text()).items() if k in stamp} == stamp:
            return runner
    except (OSError, ValueError):
        pass  # not checked yet (or an unreadable record): checked now
    try:
        difference, scale = compare_to_eager(model, lambda x: runner(x, len(x)), tile_shape)
    except Exception as err:  # OpenVINO's errors (an operator it cannot compile) have no common base
        raise ExportError(f"The architecture {model.arch!r} exports to ONNX but OpenVINO cannot run it "
                          f"({type(err).__name__}: {str(err).strip()[:300]}); use `runtime`='onnxruntime'.") from None
    if not agrees_with_eager(difference, scale):
        raise ExportError(f"The architecture {model.arch!r} computes different logits under OpenVINO (largest "
                          f"difference {difference:.3g} on a random batch); use `runtime`='onnxruntime'.")
    write_atomic(checked, json.dumps(dict(stamp, max_abs_difference=difference)).encode())
    return runner


def _version() -> str:
    import openvino

    return str(openvino.__version__)
