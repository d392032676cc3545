"""Running a network on batches of tiles: device choice, mixed precision, and out-of-memory retries."""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from segarch.model import Model
from segarch.preprocessing import build_preprocessing

__all__ = ["NetworkRunner", "Preprocessor", "spread_indices"]

log = logging.getLogger("segarch.tiling")


def spread_indices(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)`` (where to sample an image for its percentiles)."""
    return sorted({int(v) for v in np.linspace(0, n - 1, num=min(n, k)).round()})


@dataclass
class Preprocessor:
    """A model's pre-processing made tile-independent.

    Percentile normalisation computed per tile would give every tile its own contrast (seams), so
    its percentiles are measured once on the whole image and frozen as per-channel ranges; the
    remaining transforms (pointwise ones) are applied per tile.
    """

    ranges: list[tuple[float, float]] | None = None  # per channel (lo, hi) of the frozen percentiles
    target: tuple[float, float, bool] = (0.0, 1.0, True)  # b_min, b_max, clip
    rest: list[dict[str, Any]] = field(default_factory=list)
    _compose: Any = field(default=None, repr=False, compare=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32, copy=False)
        if self.ranges is not None:
            b_min, b_max, clip = self.target
            lo = np.array([r[0] for r in self.ranges], np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
            hi = np.array([r[1] for r in self.ranges], np.float32).reshape(lo.shape)
            scale = np.where(hi > lo, (b_max - b_min) / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)
            x = (x - lo) * scale + b_min
            if clip:
                x = np.clip(x, b_min, b_max)
        if self.rest:
            if self._compose is None:
                self._compose = build_preprocessing(self.rest)
            x = self._compose(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compose"] = None
        return state

    @classmethod
    def calibrate(cls, config: list[dict[str, Any]], sample: np.ndarray) -> "Preprocessor":
        """Freeze percentile steps of ``config`` on ``sample`` (``(C, ...)`` values drawn from the whole image)."""
        ranges, target, rest = None, (0.0, 1.0, True), []
        for step in config:
            name = str(step.get("_target_", "")).rsplit(".", 1)[-1]
            if name == "ScaleIntensityRangePercentiles" and ranges is None and not rest:
                lower, upper = float(step.get("lower", 0)), float(step.get("upper", 100))
                if step.get("channel_wise", False):
                    ranges = [tuple(float(v) for v in np.percentile(c, [lower, upper])) for c in sample]
                else:
                    lo, hi = np.percentile(sample, [lower, upper])
                    ranges = [(float(lo), float(hi))] * sample.shape[0]
                target = (float(step.get("b_min", 0.0)), float(step.get("b_max", 1.0)), bool(step.get("clip", False)))
            else:
                rest.append(step)
        return cls(ranges, target, rest)


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


def network_of(model: Model | nn.Module) -> nn.Module:
    return model.network if isinstance(model, Model) else model
