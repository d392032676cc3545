"""The CUDA path of the tiling engine's runner (segarch.tiling.runner), exercised where no GPU is: the batch halved
on out-of-memory, autocast through ``amp``, and pinned memory only on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import segarch
from segarch.tiling.runner import NetworkRunner


class _RunsOutOfMemoryAbove(nn.Module):
    """A 1×1 convolution that raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(2, 3, 1)
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (forced by the test)")
        return self.conv(x)


@pytest.mark.parametrize("limit", [1, 3])
def test_out_of_memory_halves_the_batch_and_gives_the_same_logits(limit, caplog):
    network = _RunsOutOfMemoryAbove(limit)
    runner = NetworkRunner(network, torch.device("cpu"), amp=False)
    batch = np.random.default_rng().standard_normal((8, 2, 16, 16)).astype(np.float32)
    with caplog.at_level("WARNING", logger="segarch.tiling"):
        logits = runner(batch, 8)
    with torch.inference_mode():
        expected = network.conv(torch.from_numpy(batch)).numpy()
    assert runner.network.batches[:2] == [8, 4]  # the whole batch, then half of it, ran out of memory
    fitted = [b for b in runner.network.batches if b <= limit]
    assert fitted == [{1: 1, 3: 2}[limit]] * {1: 8, 3: 4}[limit]  # halved to the first size that fits, each tile once
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert "CUDA out of memory: retrying with a batch of" in caplog.text


def test_out_of_memory_at_a_batch_of_one_is_raised():
    runner = NetworkRunner(_RunsOutOfMemoryAbove(0), torch.device("cpu"), amp=False)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        runner(np.zeros((4, 2, 8, 8), np.float32), 4)


def test_amp_autocasts_and_keeps_the_labels(caplog):
    """``amp=True`` runs under autocast (bf16 on the CPU, the CUDA path's mechanism), returns float32 logits whose
    labels agree with fp32's; CUDA's defaults (amp on, pinned memory) are CUDA's only."""
    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", spatial_dims=2, features=(8, 16, 32), out_channels=3)
    batch = np.random.default_rng().standard_normal((2, 1, 64, 64)).astype(np.float32)
    fp32 = NetworkRunner(model.network, torch.device("cpu"), amp=None)
    mixed = NetworkRunner(model.network, torch.device("cpu"), amp=True)
    assert not fp32.amp and not fp32.pin and mixed.amp and mixed.amp_dtype == torch.bfloat16 and not mixed.pin
    seen = []
    hook = mixed._source.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        low = mixed(batch, 2)
    finally:
        hook.remove()
    high = fp32(batch, 2)
    assert low.dtype == np.float32 and seen == [torch.bfloat16]  # computed in bf16, handed back as float32
    assert not np.array_equal(low, high)  # really another precision
    assert (low.argmax(1) == high.argmax(1)).mean() > 0.9
    np.testing.assert_allclose(low, high, atol=0.1 * np.abs(high).max())
