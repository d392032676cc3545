"""How much memory a batch of tiles needs, found before anything is allocated.

The network runs once on PyTorch's ``meta`` device (shapes only, no data) while a dispatch mode
adds up the bytes of every tensor alive at each moment; the peak is what the real forward pass
holds at once (within a few per cent for the zoo's nets on the CPU). An absurd tile (or batch)
then gets a clear error with the estimate instead of a raw allocation failure minutes later.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
from torch import nn

__all__ = ["forward_peak_bytes", "available_bytes", "check_tile_memory"]

log = logging.getLogger("segarch.tiling")

_FRACTION = 0.9  # of the memory available now
# The first meta forward pass in a process costs ~1-2 s (PyTorch loads its meta kernels): skipped for
# small networks on tiles no bigger than predict's defaults, which need tens of MiB.
_DEFAULT_WORK = {2: 4 * 256 ** 2, 3: 4 * 96 ** 3}
_SMALL_NETWORK = 2_000_000


class _PeakBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of the tensors the operations create while they are alive; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_leaves

        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            # In-place results are their input, and views share its storage: neither is new memory.
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                nbytes = t.untyped_storage().nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, nbytes)
        return out


def forward_peak_bytes(skeleton: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Peak bytes of activations for one inference forward pass on ``input_shape``, and the output shape.

    ``skeleton`` must live on the ``meta`` device (e.g. built under ``with torch.device("meta")``).
    Raises whatever the network raises for ops without a meta implementation.
    """
    x = torch.empty(input_shape, device="meta")
    counter = _PeakBytes()
    with torch.inference_mode(), counter:
        y = skeleton(x)
    counter.peak += x.untyped_storage().nbytes()
    return counter.peak, tuple(y.shape)


def available_bytes(device: torch.device) -> int | None:
    """Memory available now on ``device`` (CUDA: free device memory; CPU: the OS's MemAvailable)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # pragma: no cover - a driver that cannot say
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _meta_skeleton(model, network: nn.Module) -> nn.Module | None:
    from segarch.models.model import Model

    if isinstance(model, Model):
        from segarch import zoo

        with torch.device("meta"):
            return zoo.create(model.arch, spatial_dims=model.spatial_dims, in_channels=model.in_channels,
                              out_channels=model.out_channels, **model.options).eval()
    return None


def check_tile_memory(model, network: nn.Module, device: torch.device, in_channels: int, tile: tuple[int, ...],
                      batch_size: int) -> int | None:
    """Refuse a tile (or batch) whose forward pass cannot fit in the memory available on ``device``.

    Returns the estimated bytes (``None`` when not estimated: a small network on a tile no bigger than
    the default, a bare module, or a network that cannot run on the meta device).

    Raises:
        ValueError: with the estimate, what is available and what to pass instead.
    """
    work = batch_size * in_channels * int(torch.tensor(tile).prod())
    if work <= _DEFAULT_WORK.get(len(tile), 0) and sum(p.numel() for p in network.parameters()) <= _SMALL_NETWORK:
        return None
    try:
        skeleton = _meta_skeleton(model, network)
        if skeleton is None:
            return None
        one, _ = forward_peak_bytes(skeleton, (1, in_channels, *tile))
        batch, _ = forward_peak_bytes(skeleton, (batch_size, in_channels, *tile)) if batch_size > 1 else (one, None)
    except Exception as err:  # an op without a meta kernel: no estimate, the run goes ahead as before
        log.debug("no memory estimate for %s: %s", type(network).__name__, err)
        return None
    free = available_bytes(device)
    # CUDA halves the batch when it runs out of memory, so there only a single tile must fit.
    needed = one if device.type == "cuda" else batch
    log.info("memory: a batch of %d tiles %s needs about %.2f GiB on %s (one tile %.2f GiB; %s available)",
             batch_size, "×".join(map(str, tile)), batch / 2 ** 30, device, one / 2 ** 30,
             "?" if free is None else f"{free / 2 ** 30:.1f} GiB")
    if free is not None and needed > _FRACTION * free:
        smaller = _smaller_tile(tile, needed, free)
        what = f"one tile of {'×'.join(map(str, tile))}" if needed == one else \
            f"a batch of {batch_size} tiles of {'×'.join(map(str, tile))} (one tile: {one / 2 ** 30:.2f} GiB)"
        raise ValueError(
            f"`tile`={tile!r} with `batch_size`={batch_size}: {what} needs about {needed / 2 ** 30:.2f} GiB on "
            f"{device} for the network's activations, more than the {free / 2 ** 30:.2f} GiB available; pass a "
            f"smaller `tile` (e.g. {smaller}) or `batch_size`.")
    return batch


def _smaller_tile(tile: tuple[int, ...], needed: int, free: int) -> int:
    # Activations grow with the tile's pixels: shrink every side by the same factor, to a power of two.
    factor = (0.5 * _FRACTION * free / needed) ** (1 / len(tile))
    side = max(16, int(min(tile) * factor))
    return 1 << (side.bit_length() - 1)
