"""Running a network on batches of tiles: channels-last, mixed precision, and out-of-memory retries."""

from __future__ import annotations

import contextlib
import copy
import logging

import numpy as np
import torch
from torch import nn


__all__ = ["NetworkRunner"]

log = logging.getLogger("segarch.tiling")


class NetworkRunner:
    """Wraps a network for inference on batches of tiles.

    Args:
        network: the ``torch.nn.Module``.
        device: a resolved ``torch.device``.
        amp: autocast (bf16 where supported, else fp16) — on by default on CUDA only.
    """

    def __init__(self, network: nn.Module, device: torch.device, amp: bool | None) -> None:
        self.device = device
        self.network = network.to(device).eval()
        self._source = network
        self._format: torch.memory_format | None = None
        self.amp = (device.type == "cuda") if amp is None else bool(amp)
        if self.amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.amp_dtype = torch.bfloat16
        self.pin = device.type == "cuda"

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def __call__(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        """Logits for ``batch`` ``(B, C, *tile)`` as float32 NumPy; halves the batch on CUDA out-of-memory."""
        chunk = batch_size
        while True:
            try:
                outputs = [self._forward(batch[i: i + chunk]) for i in range(0, len(batch), chunk)]
                return np.concatenate(outputs) if len(outputs) > 1 else outputs[0]
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                torch.cuda.empty_cache()
                chunk = max(1, chunk // 2)
                log.warning("CUDA out of memory: retrying with a batch of %d tiles", chunk)

    def _channels_last(self, ndim: int) -> torch.memory_format | None:
        """Run convolutions channels-last (faster on CPUs and tensor cores), on a copy of the network."""
        if self._format is None and self.device.type in ("cpu", "cuda") and ndim in (4, 5):
            self._format = torch.channels_last if ndim == 4 else torch.channels_last_3d
            self.network = copy.deepcopy(self._source).to(self.device).eval().to(memory_format=self._format)
        return self._format

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        if self.pin:
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        fmt = self._channels_last(x.ndim)
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
        with torch.inference_mode(), self._autocast():
            y = self.network(x)
        return np.ascontiguousarray(y.float().cpu().numpy())
