"""Which runtime runs the network inside ``segarch.predict``: eager PyTorch or ONNX Runtime.

:func:`make_runner` turns a :class:`~segarch.Model` and a tile shape into the callable the tiling engine
calls on each batch of tiles (``runner(batch, batch_size) -> logits``, float32 NumPy), so tiles, blending,
output, resume, cancel and progress are the same whichever runtime computes the logits.
"""

from __future__ import annotations

import logging

import torch

from segarch.runtimes.onnx import (ExportError, RuntimeNotInstalled, cache_dir, onnx_runner, onnxruntime_available,
                                   weights_sha256)
from segarch.runtimes.onnx_weights import is_onnx_weights, onnx_weights_runner

__all__ = ["RUNTIMES", "make_runner", "check_runtime", "ExportError", "RuntimeNotInstalled", "cache_dir",
           "weights_sha256"]

log = logging.getLogger("segarch.runtimes")

RUNTIMES = ("auto", "torch", "onnxruntime")


def check_runtime(runtime) -> str:
    """``runtime`` checked against :data:`RUNTIMES` (a clear error naming what is allowed)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be one of {RUNTIMES}, got {runtime!r}.")
    return runtime


def make_runner(model, device: torch.device, amp: bool | None, runtime: str, tile_shape: tuple[int, ...]):
    """The engine's batch runner for ``model`` on tiles of ``tile_shape`` under ``runtime``.

    Args:
        model: a :class:`segarch.Model`.
        device: the resolved torch device (ONNX Runtime runs on the CPU only here).
        amp: autocast, for the torch runner; ``True`` keeps ``auto`` on torch (ONNX runs fp32).
        runtime: ``"torch"``, ``"onnxruntime"``, or ``"auto"`` (ONNX Runtime when it is installed, the device
            is the CPU and the network exports; torch otherwise, with the reason logged).
        tile_shape: the spatial tile shape the engine feeds.

    Returns:
        A callable ``runner(batch, batch_size)`` returning the logits of ``batch`` ``(B, C, *tile)`` as float32.

    Raises:
        ExportError: ``runtime="onnxruntime"`` and the architecture does not export (the message names it).
        RuntimeNotInstalled: ``runtime="onnxruntime"`` without ONNX Runtime (the message says how to install it).
        ValueError: ``runtime="onnxruntime"`` on a GPU device or with ``amp`` on.
    """
    from segarch.tiling.runner import NetworkRunner

    check_runtime(runtime)
    if is_onnx_weights(model):  # a bioimage.io package's ONNX graph: run as it is
        return onnx_weights_runner(model, device, amp, runtime)
    if runtime == "torch":
        return NetworkRunner(model.network, device, amp)
    reason = None
    if device.type != "cpu":
        reason = f"ONNX Runtime runs on the CPU here, the device is {device}"
    elif amp:
        reason = "`amp`=True asks for autocast, which ONNX Runtime (fp32 here) does not do"
    if reason is not None:
        if runtime == "onnxruntime":
            raise ValueError(f"`runtime`='onnxruntime' cannot be used: {reason}. Use `runtime`='torch' or 'auto'.")
        log.info("runtime auto: torch (%s)", reason)
        return NetworkRunner(model.network, device, amp)
    if runtime == "auto" and not onnxruntime_available():
        log.info("runtime auto: torch (ONNX Runtime is not installed: pip install 'napari-segarch[fast]')")
        return NetworkRunner(model.network, device, amp)
    try:
        runner = onnx_runner(model, tile_shape, threads=torch.get_num_threads())
    except (ExportError, RuntimeNotInstalled) as err:
        if runtime == "onnxruntime":
            raise
        log.warning("runtime auto: torch (%s)", err)
        return NetworkRunner(model.network, device, amp)
    log.info("runtime: onnxruntime (%s)", runner.path.name)
    return runner
