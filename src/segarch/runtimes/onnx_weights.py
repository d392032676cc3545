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
    """The runner of a model with ONNX weights: ONNX Runtime on the CPU whatever ``runtime`` says (there is no
    PyTorch network to run; the log says so when another runtime or device was asked for)."""
    name = model.name or model.arch
    if runtime == "torch" or device.type != "cpu" or amp:
        log.warning("%s has ONNX weights only: ONNX Runtime runs them on the CPU in float32 (asked: runtime %r, "
                    "device %s%s)", name, runtime, device, ", amp" if amp else "")
    else:
        log.info("runtime: onnxruntime (ONNX weights of %s)", name)
    return OnnxWeightsRunner(model.network, threads=torch.get_num_threads())
