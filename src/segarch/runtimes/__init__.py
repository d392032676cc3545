"""Which runtime runs the network inside ``segarch.predict``: eager PyTorch, ONNX Runtime or OpenVINO.

:func:`make_runner` turns a :class:`~segarch.Model` and a tile shape into the callable the tiling engine
calls on each batch of tiles (``runner(batch, batch_size) -> logits``, float32 NumPy), so tiles, blending,
output, resume, cancel and progress are the same whichever runtime computes the logits. With
``precision="int8"`` the export is quantised on the image's own tiles and kept only when its labels agree
with fp32's (:mod:`segarch.runtimes.int8`).
"""

from __future__ import annotations

import logging

import torch

from segarch.runtimes.onnx import (ExportError, RuntimeNotInstalled, cache_dir, onnx_runner, onnxruntime_available,
                                   weights_sha256)
from segarch.runtimes.int8 import AGREEMENT_BAR, PRECISIONS, check_precision, int8_runner
from segarch.runtimes.onnx_weights import is_onnx_weights, onnx_weights_runner
from segarch.runtimes.openvino import openvino_available, openvino_runner
from segarch.runtimes.torch_only import check_network_runtime, torch_only_reason

__all__ = ["RUNTIMES", "AUTO_ORDER", "AUTO_ORDER_2D_FP32", "auto_order", "PRECISIONS", "AGREEMENT_BAR", "make_runner",
           "check_runtime", "check_precision", "check_network_runtime", "ExportError", "RuntimeNotInstalled",
           "cache_dir", "weights_sha256"]

log = logging.getLogger("segarch.runtimes")

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
#: What ``auto`` tries on the CPU, fastest first, as ``benchmarks/runtimes.py`` measured it on this machine kind
#: (x86-64 with AVX-512, fp32): OpenVINO, then ONNX Runtime; the first installed one that runs the architecture
#: wins, torch otherwise. Re-measure and reorder for another machine kind.
AUTO_ORDER = ("openvino", "onnxruntime")
#: ``auto``'s order for 2D networks in fp32: ONNX Runtime first. ``benchmarks/runtimes2d.py`` (1 thread, shared
#: machine) measured the 2D U-Net's forward at 0.66 of eager under ONNX Runtime (NCHWc layouts) and 1.07 under
#: OpenVINO, and ``benchmarks/runtimes.py`` ENet at 0.79 against 1.66; in 3D and in int8 OpenVINO stays first.
AUTO_ORDER_2D_FP32 = ("onnxruntime", "openvino")
_AVAILABLE = {"onnxruntime": lambda: onnxruntime_available(), "openvino": lambda: openvino_available()}
_INSTALL_HINT = {"onnxruntime": "pip install 'napari-segarch[fast]'",
                 "openvino": "pip install 'napari-segarch[openvino]'"}
_BUILD = {"onnxruntime": lambda *a, **k: onnx_runner(*a, **k), "openvino": lambda *a, **k: openvino_runner(*a, **k)}


def check_runtime(runtime) -> str:
    """``runtime`` checked against :data:`RUNTIMES` (a clear error naming what is allowed)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be one of {RUNTIMES}, got {runtime!r}.")
    return runtime


def auto_order(spatial_dims: int, precision: str = "fp32") -> tuple[str, ...]:
    """The runtimes ``auto`` tries, fastest first as measured here, for ``spatial_dims`` and ``precision``."""
    return AUTO_ORDER_2D_FP32 if spatial_dims == 2 and precision == "fp32" else AUTO_ORDER


def make_runner(model, device: torch.device, amp: bool | None, runtime: str, tile_shape: tuple[int, ...],
                precision: str = "fp32", calibration=None):
    """The engine's batch runner for ``model`` on tiles of ``tile_shape`` under ``runtime``.

    Args:
        model: a :class:`segarch.Model`.
        device: the resolved torch device (ONNX Runtime and OpenVINO run on the CPU only here).
        amp: autocast, for the torch runner; ``True`` keeps ``auto`` on torch (the others run fp32).
        runtime: ``"torch"``, ``"onnxruntime"``, ``"openvino"``, or ``"auto"``: on the CPU, the first of
            :func:`auto_order` (OpenVINO first; ONNX Runtime first for 2D in fp32) that is installed and runs the
            network; torch otherwise, with the reason logged.
        tile_shape: the spatial tile shape the engine feeds.
        precision: ``"fp32"``, or ``"int8"``: the export quantised on ``calibration`` and run by the chosen
            runtime when its labels agree with fp32's on at least :data:`AGREEMENT_BAR` of those tiles' pixels;
            fp32 otherwise, with the reason logged (:mod:`segarch.runtimes.int8`).
        calibration: for int8, a callable returning tiles of the image ``(N, C, *tile_shape)``, pre-processed.

    Returns:
        A callable ``runner(batch, batch_size)`` returning the logits of ``batch`` ``(B, C, *tile)`` as float32.

    Raises:
        ExportError: an explicit runtime and the architecture does not export (the message names it).
        RuntimeNotInstalled: an explicit runtime that is not installed (the message says how to install it).
        ValueError: ``onnxruntime`` or ``openvino`` on a GPU device, with ``amp`` on, or for a detector (Mask
            R-CNN's family, EfficientPS: :mod:`segarch.runtimes.torch_only`); ``precision``="int8" with
            ``runtime``="torch", a GPU device, ``amp``, ONNX weights or a detector.
    """
    from segarch.tiling.runner import NetworkRunner

    check_runtime(runtime)
    check_network_runtime(model.network, runtime, precision)
    if check_precision(precision) == "int8":
        _check_int8(model, device, amp, runtime, calibration)
    if is_onnx_weights(model):  # a bioimage.io package's ONNX graph: run as it is
        return onnx_weights_runner(model, device, amp, runtime)
    if runtime == "torch":
        return NetworkRunner(model.network, device, amp)
    reason = torch_only_reason(model.network)  # a detector: `auto` runs it in torch (an explicit runtime is refused)
    if reason is None and device.type != "cpu":
        reason = f"ONNX Runtime and OpenVINO run on the CPU here, the device is {device}"
    elif reason is None and amp:
        reason = "`amp`=True asks for autocast, which ONNX Runtime and OpenVINO (fp32 here) do not do"
    if reason is not None:
        if runtime != "auto":
            raise ValueError(f"`runtime`={runtime!r} cannot be used: {reason}. Use `runtime`='torch' or 'auto'.")
        log.info("runtime auto: torch (%s)", reason)
        return NetworkRunner(model.network, device, amp)
    candidates = auto_order(len(tile_shape), precision) if runtime == "auto" else (runtime,)
    reasons = []
    for candidate in candidates:
        if runtime == "auto" and not _AVAILABLE[candidate]():
            reasons.append(f"{candidate} is not installed: {_INSTALL_HINT[candidate]}")
            continue
        try:
            runner = _BUILD[candidate](model, tile_shape, threads=torch.get_num_threads())
        except (ExportError, RuntimeNotInstalled) as err:
            if runtime != "auto":
                raise
            reasons.append(str(err))
            continue
        if reasons:
            log.info("runtime auto: %s (%s)", candidate, "; ".join(reasons))
        if precision == "int8":
            decided = int8_runner(model, tile_shape, candidate, calibration(), threads=torch.get_num_threads())
            if decided.runner is None:
                log.warning("precision int8 refused, %s runs fp32: %s", candidate, decided.reason)
            else:
                log.info("runtime: %s int8 (%s; labels agree with fp32 on %.3f%% of %d calibration tiles)",
                         candidate, decided.runner.path.name, 100 * decided.agreement, decided.tiles)
                return decided.runner
        log.info("runtime: %s (%s)", candidate, runner.path.name)
        return runner
    log.warning("runtime auto: torch (%s)", "; ".join(reasons))
    return NetworkRunner(model.network, device, amp)


def _check_int8(model, device: torch.device, amp: bool | None, runtime: str, calibration) -> None:
    """int8 is ONNX Runtime's or OpenVINO's, on the CPU, for a network segarch exports: else a clear error."""
    problem = None
    if runtime == "torch":
        problem = "`runtime`='torch' runs fp32 (eager PyTorch has no int8 here)"
    elif device.type != "cpu":
        problem = f"int8 runs on the CPU here, the device is {device}"
    elif amp:
        problem = "`amp`=True asks for autocast"
    elif is_onnx_weights(model):
        problem = "the model's weights are an ONNX graph (a bioimage.io package), quantised by nobody here"
    elif calibration is None:
        problem = "int8 needs `calibration` tiles"
    if problem is not None:
        raise ValueError(f"`precision`='int8' cannot be used: {problem}. Use `runtime`='onnxruntime', 'openvino' "
                         f"or 'auto' on the CPU, or `precision`='fp32'.")
