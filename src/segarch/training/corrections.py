"""Iterative training with corrective clicks (Sofiiuk et al. 2021, arXiv:2102.06583, Sec. 3.2), for extreme-point
models whose recipe has ``corrections``: before a training step, the network (without gradients) predicts each
example of the batch a random number of times (0 to ``max_iterations``, one number per batch); after each
prediction a click goes to the centre of its largest error region (:func:`segarch.prompts.clicks.next_click`,
positive or negative) and the prediction becomes the "previous mask" input. The step then learns from the
clicks and mask the network itself would have led a user to. With 0 iterations an example is a plain
extreme-point one (no clicks, empty previous mask), which keeps the quality without corrections.
"""

from __future__ import annotations

import numpy as np
import torch

from segarch.prompts.clicks import next_click
from segarch.prompts.recipe import PromptSettings, heat_map

__all__ = ["simulate_corrections"]


def _probability(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)[:, 1]


def simulate_corrections(network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator,
                         settings: PromptSettings, max_iterations: int = 3) -> torch.Tensor:
    """Add simulated clicks and previous masks to a batch ``x`` ``(B, C + 4, *size)`` (the last three channels:
    positive clicks, negative clicks, previous mask) for targets ``y`` ``(B, 1, *size)``; returns a new tensor."""
    iterations = int(rng.integers(0, max_iterations + 1))
    if iterations == 0:
        return x
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    x = x.clone()
    positive, negative, previous = x.shape[1] - 3, x.shape[1] - 2, x.shape[1] - 1
    dims = y.ndim - 2
    truth = y[:, 0].numpy() > 0
    sigma = settings.sigma * settings.size
    try:
        with torch.no_grad():
            for _ in range(iterations):
                prediction = (_probability(network(x.to(device))) > 0.5).cpu().numpy()
                for b in range(len(x)):
                    click = next_click(prediction[b], truth[b])
                    x[b, previous] = torch.from_numpy(prediction[b].astype(np.float32))
                    if click is None:
                        continue
                    point, is_positive = click
                    channel = positive if is_positive else negative
                    x[b, channel] = torch.maximum(x[b, channel], heat_map(point[None], settings.size, dims, sigma))
    finally:
        network.train(was_training)
    return x
