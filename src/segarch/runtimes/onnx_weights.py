"""Models whose weights are an ONNX graph (a bioimage.io package's ONNX weights): run as they are by ONNX
Runtime in the tiling engine; there is nothing to export, and no PyTorch network to run instead."""

from __future__ import annotations

import logging

import numpy as np
import torch

from segarch.models.bioimageio import OnnxNetwork

__all__ = ["is_onnx_weights", "onnx_weights_runner"]

log = logging.getLogger("segarch.runtimes")


def is_onnx_weights(model) -> bool:
    """Whether ``model``'s network is an ONNX graph (:class:`segarch.models.bioimageio.OnnxNetwork`)."""
    return isinstance(getattr(model, "network", None), OnnxNetwork)


class OnnxWeightsRunner:
    """The engine's batch runner for ONNX weights: ``runner(batch, batch_size) -> logits`` (float32 NumPy)."""

    def __init__(self, network: OnnxNetwork, threads: int) -> None:
        self.network = network
        self.threads = threads

    def __call__(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        return self.network.run(batch, threads=self.threads)


def onnx_weights_runner(model, device: torch.device, amp: bool | None, runtime: str) -> OnnxWeightsRunner:
    """The runner of a model with ONNX weights under ``runtime`` (``"auto"`` or ``"onnxruntime"``).

    Raises:
        ValueError: ``runtime="torch"`` (there is no PyTorch network), or a GPU device with ``runtime="onnxruntime"``.
    """
    name = model.name or model.arch
    if runtime == "torch":
        raise ValueError(f"`runtime`='torch' cannot run {name!r}: its weights are an ONNX graph, run by ONNX "
                         "Runtime. Use `runtime`='auto' or 'onnxruntime' (or load its PyTorch weights).")
    if device.type != "cpu" or amp:
        if runtime == "onnxruntime":
            raise ValueError(f"`runtime`='onnxruntime' runs on the CPU in float32 here; {name!r} has ONNX weights: "
                             "use `device`='cpu' (and no `amp`).")
        log.info("runtime auto: onnxruntime on the CPU (%s has ONNX weights only)", name)
    log.info("runtime: onnxruntime (ONNX weights of %s)", name)
    return OnnxWeightsRunner(model.network, threads=torch.get_num_threads())
