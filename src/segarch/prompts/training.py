"""Training and fine-tuning of extreme-point models on (input, target) pairs or on instance labels.

:func:`segarch.train` takes semantic models only (its patches are cut from whole images; a prompt
model's input is one object's crop with its heat map), so this is its loop in small: the project's
Dice + cross-entropy loss and training log, AdamW with 5% warm-up and cosine decay, flips and 90°
rotations (image, heat map and target move together; intensity changes would corrupt the heat map),
the best weights on 10% held-out pairs kept.

Examples::

    >>> model = segarch.pretrained.load("dextr_light")
    >>> tuned = fine_tune(model, [image], [instance_labels], steps=200)   # your objects, jittered points
    >>> segarch.save_model(tuned, "my_dextr.safetensors")
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["fit_pairs", "fine_tune", "augment_pairs", "crop_iou"]

log = logging.getLogger("segarch.prompts")


def augment_pairs(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and 90° rotations (in the Y-X plane) per pair ``(C, *spatial)`` / ``(*spatial)``."""
    xs, ys = [], []
    dims = y.ndim - 1
    for xi, yi in zip(x, y):
        k = int(rng.integers(4))
        xi, yi = torch.rot90(xi, k, (dims - 1, dims)), torch.rot90(yi, k, (dims - 2, dims - 1))
        for axis in range(dims):
            if rng.integers(2):
                xi, yi = xi.flip(axis + 1), yi.flip(axis)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def crop_iou(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean IoU of the object over pairs, at the network's resolution (class 1 of the argmax)."""
    was_training = net.training
    net.eval()
    ious = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            pred = net(x[i:i + 64]).argmax(1).bool()
            t = y[i:i + 64].bool()
            inter = (pred & t).flatten(1).sum(1).float()
            union = (pred | t).flatten(1).sum(1).float().clamp_min(1)
            ious.extend((inter / union).tolist())
    net.train(was_training)
    return float(np.mean(ious))


def fit_pairs(model, inputs: np.ndarray, targets: np.ndarray, *, steps: int, batch_size: int = 16, lr: float = 3e-3,
              loss: str = "dice_ce", seed: int = 0, val_every: int = 50, cpu_seconds: float | None = None,
              progress: Callable[[dict[str, Any]], Any] | None = None):
    """Train ``model`` (a 2-class :class:`segarch.Model`, in place) on pairs of :func:`~segarch.prompts.training_pairs`.

    Args:
        inputs, targets: ``(N, C + 1, *size)`` float32 and ``(N, *size)`` uint8; 10% are held out.
        steps: optimisation steps.
        batch_size, lr, loss, seed: as in :func:`segarch.train`.
        val_every: steps between validations (held-out IoU).
        cpu_seconds: stop after this much CPU time (the best weights are kept).
        progress: called with ``{"step", "steps", "loss", "val_iou", "best_iou", "best_step"}`` after each validation.

    Returns:
        ``(history, steps_done, best)``: the :class:`~segarch.training.log.TrainingLog` (``val_dice`` holds
        the held-out IoU), the steps done and ``{"iou", "step", "pairs"}`` of the best validation.
    """
    from segarch.training.log import TrainingLog
    from segarch.training.losses import SegmentationLoss

    if model.out_channels != 2:
        raise ValueError(f"`model` must have 2 output channels (background, object) to train, "
                         f"got {model.out_channels}.")
    if len(inputs) < 2 or len(inputs) != len(targets):
        raise ValueError(f"`inputs` and `targets` must hold the same number (at least 2) of pairs, "
                         f"got {len(inputs)} and {len(targets)}.")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    order = rng.permutation(len(inputs))
    n_val = max(1, len(inputs) // 10)
    val_x = torch.from_numpy(np.ascontiguousarray(inputs[order[:n_val]]))
    val_y = torch.from_numpy(targets[order[:n_val]].astype(np.int64))
    train_x = torch.from_numpy(np.ascontiguousarray(inputs[order[n_val:]]))
    train_y = torch.from_numpy(targets[order[n_val:]].astype(np.int64))
    net = model.network
    net.train()
    criterion = SegmentationLoss(loss, 2)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    warm = max(1, steps // 20)

    def factor(s: int) -> float:
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    history = TrainingLog(["background", "object"])
    best: dict[str, Any] = {"iou": -1.0, "step": 0, "state": None, "pairs": n_val}
    cpu0, t0 = time.process_time(), time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(train_x), batch_size)
        x, y = augment_pairs(train_x[idx], train_y[idx], rng)
        optimiser.zero_grad()
        value = criterion(net(x), y[:, None], torch.ones_like(y[:, None], dtype=torch.float32))
        value.backward()
        optimiser.step()
        rate = schedule.get_last_lr()[0]
        schedule.step()
        history.add(step, value.item(), rate, time.perf_counter() - t0)
        out_of_time = cpu_seconds is not None and time.process_time() - cpu0 > cpu_seconds
        if step % val_every == 0 or step == steps or out_of_time:
            score = crop_iou(net, val_x, val_y)
            history.rows[-1].update(val_dice=score)
            if score > best["iou"]:
                best.update(iou=score, step=step, state={k: v.detach().clone() for k, v in net.state_dict().items()})
            log.info("step %d/%d loss %.4f held-out crop IoU %.4f (best %.4f at %d), %.0f s CPU", step, steps,
                     value.item(), score, best["iou"], best["step"], time.process_time() - cpu0)
            if progress is not None:
                progress({"step": step, "steps": steps, "loss": value.item(), "val_iou": score,
                          "best_iou": best["iou"], "best_step": best["step"]})
        if out_of_time:
            break
    net.load_state_dict(best.pop("state"))
    net.eval()
    return history, step, best


def fine_tune(model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, steps: int = 200,
              batch_size: int = 16, lr: float = 1e-3, jitter: float | None = None, seed: int = 0,
              progress: Callable[[dict[str, Any]], Any] | None = None):
    """Fine-tune an extreme-point model on instance labels: each object becomes a pair with jittered points.

    Args:
        model: a 2-class interactive :class:`segarch.Model` (e.g. ``pretrained.load("dextr_light")``),
            a model file or a shipped model's name; it is copied, not changed.
        images: images ``(*spatial)`` or ``(C, *spatial)``.
        labels: their instance labels (0 = background, one id per object).
        steps, batch_size, lr, seed, progress: see :func:`fit_pairs`.
        jitter: see :func:`~segarch.prompts.training_pairs`.

    Returns:
        The fine-tuned copy (``model.validation`` holds the held-out crop IoU and its step).
    """
    from segarch.prompts.data import training_pairs
    from segarch.prompts.recipe import DEFAULTS
    from segarch.prompts.segment import resolve_prompt_model, settings_for

    model = copy.deepcopy(resolve_prompt_model(model))
    settings = settings_for(model) if model.arch in DEFAULTS else None
    inputs, targets = training_pairs(images, labels, spatial_dims=model.spatial_dims, settings=settings,
                                     jitter=jitter, seed=seed)
    if inputs.shape[1] != model.in_channels:
        raise ValueError(f"The images have {inputs.shape[1] - 1} channel(s); the model takes {model.in_channels - 1}.")
    history, done, best = fit_pairs(model, inputs, targets, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                    progress=progress)
    model.trained = True
    model.history = history.rows
    model.validation = {"crop_iou": best["iou"], "best_step": best["step"], "pairs": best["pairs"], "steps": done}
    return model
