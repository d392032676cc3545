"""``segarch.train``: train or fine-tune any semantic zoo architecture on annotated images, or an
extreme-point (interactive, DEXTR) model on instance labels.

:func:`train_iter` is the engine: a generator that yields a :class:`TrainEvent` after every step
and every validation, and returns the trained :class:`segarch.Model`. :func:`train` runs it to the
end, calling ``progress`` with each event. The napari Train widget runs the generator in a worker
thread; the CLI draws a progress bar from the events.

Cancelling (``cancel.set()`` on a :class:`threading.Event`, or Ctrl+C) stops within one step; the
model returned, and the file written to ``out``, is the best one validated so far.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np
import torch

from segarch import zoo
from segarch.model import Model
from segarch.training.data import as_sources, label_stats, make_items, read_region, split_items
from segarch.training.finetune import with_classes
from segarch.training.log import TrainingLog, plot_png
from segarch.training.losses import LOSSES, SegmentationLoss
from segarch.training.metrics import dice_per_class, mean_foreground_dice
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.objects import ObjectSampler, object_crops, object_iou, object_validation, split_objects
from segarch.training.sampler import PatchSampler, validation_patches

__all__ = ["TrainEvent", "train", "train_iter", "resolve_device", "log_paths", "TRAINABLE_TASKS"]

log = logging.getLogger("segarch.training")

_DEFAULT_PATCH = {2: (128, 128), 3: (32, 64, 64)}
_DEFAULT_BATCH = {2: 8, 3: 2}
_MAX_VAL_PATCHES = {2: 32, 3: 8}
_DEFAULT_OBJECT_BATCH = {2: 16, 3: 8}
_MAX_VAL_OBJECTS = 256
_WHOLE_IMAGE_VAL_VOXELS = 2 ** 24  # larger held-out images are validated by patches only


@dataclass
class TrainEvent:
    """What :func:`train_iter` reports.

    Attributes:
        kind: ``"step"`` (after each optimisation step), ``"validation"`` (after each validation) or
            ``"done"`` (once, at the end; ``cancelled`` says whether it stopped early).
        step, steps: the step just done and the planned number.
        loss: this step's training loss (the last one for ``validation``/``done``).
        lr: the learning rate of this step.
        seconds: time since training started.
        val_loss, val_dice, mean_dice: on ``validation`` events: loss, Dice per class (background first)
            and mean foreground Dice on the held-out patches.
        best_dice, best_step: the best mean foreground Dice so far and its step.
        cancelled: the run was cancelled (``done`` only).
        message: a line for a log or a status bar.
    """

    kind: str
    step: int
    steps: int
    loss: float
    lr: float
    seconds: float
    val_loss: float | None = None
    val_dice: list[float] | None = None
    mean_dice: float | None = None
    best_dice: float | None = None
    best_step: int | None = None
    cancelled: bool = False
    message: str = ""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA, else Apple MPS, else the CPU; anything else is checked by PyTorch."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but PyTorch sees no CUDA GPU here; use 'auto' or 'cpu'.")
    return dev


def log_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The CSV log and PNG plot written next to the model file ``out``: ``NAME.csv`` and ``NAME.png``."""
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return out.with_name(stem + ".csv"), out.with_name(stem + ".png")


def _is_model_file(value) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and (os.sep in value or "/" in value or value.endswith(
        (".safetensors", ".pt", ".pth", ".ckpt", ".bin")) or os.path.isfile(value))


def _resolve_model(model_or_name, images, labels, *, axes, mask, options, num_classes_hint):
    """The starting model (a copy, never the caller's object) and the data sources it fits."""
    from segarch import pretrained

    if isinstance(model_or_name, Model):
        model = copy.deepcopy(model_or_name)
    elif isinstance(model_or_name, str) and model_or_name in pretrained.names() and (
            options is None or model_or_name not in zoo.names()):
        # A name that is both (``dextr_light``) is the shipped model, unless `options` asks for a new network.
        model = pretrained.load(model_or_name)  # fine-tune a shipped model
    elif _is_model_file(model_or_name):
        from segarch.model_file import load_model

        model = load_model(model_or_name)
    elif isinstance(model_or_name, str):
        card = zoo.card(model_or_name)  # raises with the closest names if unknown
        if card.task not in TRAINABLE_TASKS:
            raise ValueError(f"`model` {card.name!r} is a {card.task} architecture; training supports semantic "
                             f"and interactive architectures: {', '.join(_trainable_names())}.")
        sources = as_sources(images, labels, axes=axes, mask=mask, spatial_dims=None, in_channels=None)
        dims = sources[0].spatial_dims
        if dims not in card.spatial_dims:
            if 2 not in card.spatial_dims:
                raise ValueError(f"{card.name!r} builds in {card.spatial_dims}D only, the data is {dims}D.")
            dims = 2  # a 2D-only architecture trains on the Z-slices of volumes
            sources = as_sources(images, labels, axes=axes, mask=mask, spatial_dims=2, in_channels=None)
        channels = int(sources[0].image.shape[sources[0].n_stack])
        if card.task == "interactive":  # the image's channels + the heat map in; background and object out
            model = Model.from_zoo(card.name, spatial_dims=dims, in_channels=channels + 1, out_channels=2,
                                   class_names=["background", "object"], **dict(options or {}))
        else:
            model = Model.from_zoo(card.name, spatial_dims=dims, in_channels=channels,
                                   out_channels=num_classes_hint or 2, **dict(options or {}))
        return model, sources, True
    else:
        raise ValueError(f"`model` must be a zoo architecture name, a model file or a segarch.Model, "
                         f"got {type(model_or_name).__name__}.")
    if options:
        raise ValueError("`options` applies to a zoo architecture name only; a model file or Model keeps its own.")
    task = model.card.task
    if task not in TRAINABLE_TASKS:
        raise ValueError(f"`model` is a {task} model ({model.arch!r}); training supports semantic and interactive "
                         f"models.")
    image_channels = model.in_channels - 1 if task == "interactive" else model.in_channels
    sources = as_sources(images, labels, axes=axes, mask=mask, spatial_dims=model.spatial_dims,
                         in_channels=image_channels)
    return model, sources, False


#: The tasks whose models train here: semantic (patches) and interactive (extreme-point objects).
TRAINABLE_TASKS = ("semantic", "interactive")


def _trainable_names() -> list[str]:
    return [n for task in TRAINABLE_TASKS for n in zoo.names(task=task)]


def _check_patch(patch, dims: int, divisor: int, items) -> tuple[int, ...]:
    if patch is None:
        largest = np.max([it.shape for it in items], axis=0)
        # Default: the usual size, or the whole image rounded up to the divisor when smaller.
        return tuple(int(min(p, -(-int(n) // divisor) * divisor)) for p, n in zip(_DEFAULT_PATCH[dims], largest))
    values = (int(patch),) * dims if np.isscalar(patch) else tuple(int(p) for p in patch)
    if len(values) != dims or min(values) < 1:
        raise ValueError(f"`patch` must be one size or {dims} sizes (positive), got {patch!r}.")
    bad = [p for p in values if p % divisor]
    if bad:
        fixed = tuple(-(-p // divisor) * divisor for p in values)
        raise ValueError(f"`patch` sizes must be multiples of the model's size divisor {divisor}, got {values}; "
                         f"use e.g. {fixed}.")
    return values


def _lr_factor(step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine down to 5% of `lr`


def _predict_whole(model: Model, image: np.ndarray, patch: Sequence[int], device: torch.device,
                   batch_size: int) -> np.ndarray:
    """Class map of a whole image ``(C, *spatial)``: through ``segarch.predict`` (the tiling engine)."""
    from segarch.tiling import predict

    return np.asarray(predict(model, image, axes=model.axes, tile=tuple(patch), batch_size=batch_size,
                              device=str(device), output="labels"))


def train_iter(
    model_or_name: Any,
    images: Any,
    labels: Any,
    *,
    axes: str | None = None,
    mask: Any = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    options: dict | None = None,
    patch: int | Sequence[int] | None = None,
    steps: int = 500,
    batch_size: int | None = None,
    val_fraction: float = 0.1,
    val_every: int | None = None,
    loss: str = "dice_ce",
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    augment: Any = "default",
    jitter: float | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    out: str | os.PathLike | None = None,
    cancel: threading.Event | None = None,
) -> Generator[TrainEvent, None, Model]:
    """Train step by step, yielding a :class:`TrainEvent` after each step and validation; returns the model.

    Same arguments as :func:`train` (without ``progress``).
    """
    start_time = time.perf_counter()
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}.")
    if int(steps) < 1:
        raise ValueError(f"`steps` must be at least 1, got {steps!r}.")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    if num_classes is not None and int(num_classes) < 2:
        raise ValueError(f"`num_classes` must be at least 2 (background and one class), got {num_classes!r}.")
    if out is not None and not str(out).endswith(".safetensors"):
        raise ValueError(f"`out` must be a '.safetensors' path, got {str(out)!r}.")
    steps = int(steps)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    model, sources, fresh = _resolve_model(model_or_name, images, labels, axes=axes, mask=mask, options=options,
                                           num_classes_hint=num_classes)
    dims = model.spatial_dims
    interactive = model.card.task == "interactive"
    if interactive:
        n_classes, model = 2, with_classes(model, 2, class_names or ["background", "object"])
        batch_size = int(batch_size or _DEFAULT_OBJECT_BATCH[dims])
        sampler, val, val_items, patch = _object_data(model, sources, mask=mask, num_classes=num_classes, patch=patch,
                                                      val_fraction=val_fraction, augment=augment, jitter=jitter,
                                                      seed=seed, rng=rng)
        what = f"{len(sampler.objects)} training object(s), {len(val)} held out"
    else:
        if jitter is not None:
            raise ValueError("`jitter` applies to interactive (extreme-point) models only.")
        _, high = label_stats(sources)  # extreme-point training checks its labels while finding the objects
        n_classes = int(num_classes or (2 if fresh else model.out_channels))
        if n_classes > 2 and high >= n_classes:
            raise ValueError(f"`labels` hold class {high}, but the model has {n_classes} classes "
                             f"(0..{n_classes - 1}); pass `num_classes={high + 1}` (or 2 to train foreground vs "
                             f"background).")
        model = with_classes(model, n_classes, class_names)
        items = make_items(sources)
        patch = _check_patch(patch, dims, model.size_divisor, items)
        batch_size = int(batch_size or _DEFAULT_BATCH[dims])
        train_items, val_items = split_items(items, val_fraction, patch, rng)
        # Percentiles frozen per image, as predict() freezes them: a region's own would stretch background noise.
        preprocess = PerImagePreprocessing(model.preprocessing, sources, [2 * p for p in patch])
        sampler = PatchSampler(train_items, patch, preprocess, n_classes, augment, seed=seed)
        val = validation_patches(val_items, patch, preprocess, n_classes, _MAX_VAL_PATCHES[dims], seed=seed)
        what = f"{len(train_items)} training item(s), {len(val)} validation patch(es)"
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    val_every = int(val_every or max(10, min(250, steps // 20)))
    log.info("training %s on %s: %s, patch %s, batch %d, %d steps", model.arch, dev, what, patch, batch_size, steps)

    net = model.network.to(dev)
    criterion = SegmentationLoss(loss, n_classes)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, steps))
    history = TrainingLog(model.class_names)
    csv_path, png_path = log_paths(out) if out is not None else (None, None)
    best: dict[str, Any] = {"dice": -1.0, "step": None, "state": None, "val_dice": None}

    def validate() -> tuple[float, list[float], float]:
        net.eval()
        losses, preds = [], []
        with torch.inference_mode():
            for i in range(0, len(val), batch_size):
                chunk = val[i: i + batch_size]
                x = torch.from_numpy(np.stack([r.image for r in chunk])).to(dev)
                y = torch.from_numpy(np.stack([r.target for r in chunk]))[:, None].to(dev)
                m = torch.from_numpy(np.stack([r.mask for r in chunk]))[:, None].float().to(dev)
                logits = net(x)
                losses.append(float(criterion(logits, y, m)) * len(chunk))
                preds.append(logits.argmax(1).cpu().numpy())
        net.train()
        pred = np.concatenate([p.reshape(-1) for p in preds])
        target = np.concatenate([r.target.reshape(-1) for r in val])
        keep = np.concatenate([r.mask.reshape(-1) for r in val])
        dice = dice_per_class(pred, target, keep, num_classes=n_classes)
        return sum(losses) / len(val), dice, mean_foreground_dice(dice)

    def snapshot(step: int, dice: list[float] | None, mean: float) -> bool:
        score = -1.0 if math.isnan(mean) else mean
        if best["state"] is not None and score <= best["dice"]:
            return False
        best.update(dice=score, step=step, val_dice=dice,
                    state={k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()})
        if out is not None:
            _write(model, best, out, history, csv_path, png_path, final=False)
        return True

    def event(kind, step, loss_value, **kw) -> TrainEvent:
        return TrainEvent(kind, step, steps, loss_value, optimiser.param_groups[0]["lr"],
                          time.perf_counter() - start_time,
                          best_dice=None if best["state"] is None else best["dice"], best_step=best["step"], **kw)

    step, last_loss, cancelled, last_validated = 0, math.nan, False, 0
    net.train()
    try:
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                cancelled, step = True, step - 1
                break
            x, y, m = sampler.batch(batch_size)
            x, y, m = x.to(dev), y.to(dev), m.to(dev)
            try:
                value = criterion(net(x), y, m)
            except ValueError as err:
                if "more than 1 value per channel" not in str(err):
                    raise
                raise ValueError(f"`batch_size`={batch_size} with `patch`={patch} leaves the batch norm of {model.arch!r} "
                                 f"a single value per channel (after global pooling): use `batch_size` >= 2 or a "
                                 f"larger `patch`.") from err
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
            last_loss = float(value.detach())
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"the loss became {last_loss} at step {step}: lower `lr` (now {lr}).")
            lr_now = optimiser.param_groups[0]["lr"]
            schedule.step()
            history.add(step, last_loss, lr_now, time.perf_counter() - start_time)
            yield event("step", step, last_loss, message=f"step {step}/{steps}: loss {last_loss:.4f}")
            if val and (step % val_every == 0 or step == steps):
                yield _validation_event(step, validate, snapshot, history, event, last_loss)
                last_validated = step
    except KeyboardInterrupt:  # Ctrl+C on the command line: stop here and keep the best model
        cancelled = True
    if val and step and last_validated != step:
        yield _validation_event(step, validate, snapshot, history, event, last_loss)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    elif not val and step:
        best.update(step=step)
    net.eval().to("cpu")
    model.trained = step > 0
    if interactive:
        whole = None
        object_iou_value = object_iou(model, val_items) if val_items and step else None
    else:
        whole = (_whole_image_dice(model, val_items, patch, n_classes, batch_size, preprocess)
                 if val_items and step else None)
    origin = None if fresh else (f"{model_or_name}" if isinstance(model_or_name, (str, os.PathLike))
                                 else f"a {model.arch} model")
    model.description = _describe(model, sources, step, steps, batch_size, patch, loss, lr, best, whole, cancelled,
                                  origin)
    model.history = history.rows  # the training log, also written to CSV next to `out`
    model.validation = {"best_step": best["step"], "patch_dice": best["val_dice"], "whole_image_dice": whole}
    if interactive:
        model.validation.update(object_iou=object_iou_value, objects=len(sampler.objects) + len(val_items),
                                held_out_objects=len(val_items))
        if object_iou_value is not None:
            model.description += (f" Held-out objects ({len(val_items)}), segmented from their exact extreme "
                                  f"points: mean IoU {object_iou_value:.3f}.")
    if out is not None:
        _write(model, best, out, history, csv_path, png_path, final=True)
    done = event("done", step, last_loss, cancelled=cancelled, mean_dice=None if best["val_dice"] is None
                 else mean_foreground_dice(best["val_dice"]), val_dice=best["val_dice"],
                 message=("cancelled" if cancelled else "finished") + f" after {step} steps" +
                 ("" if best["val_dice"] is None else f"; best validation Dice {best['dice']:.3f} at step {best['step']}"))
    yield done
    return model


def _validation_event(step, validate, snapshot, history, event, last_loss) -> TrainEvent:
    vloss, dice, mean = validate()
    improved = snapshot(step, dice, mean)
    row = history.rows[-1] if history.rows and history.rows[-1]["step"] == step else None
    if row is not None:
        row.update(val_loss=vloss, val_dice=mean, **{f"dice_{n}": d for n, d in zip(history.class_names, dice)})
    else:
        history.add(step, last_loss, math.nan, 0.0, val_loss=vloss, val_dice=dice, mean_dice=mean)
    return event("validation", step, last_loss, val_loss=vloss, val_dice=dice, mean_dice=mean,
                 message=f"step {step}: validation loss {vloss:.4f}, Dice {mean:.3f}" + (" (best)" if improved else ""))


def _object_data(model: Model, sources, *, mask, num_classes, patch, val_fraction, augment, jitter, seed, rng):
    """Sampler, validation pairs, held-out objects and crop size for an interactive (extreme-point) model."""
    from segarch.prompts.segment import settings_for

    if mask is not None:
        raise ValueError("`mask` applies to semantic models only: an extreme-point model trains on every labelled "
                         "object, and nothing else.")
    if num_classes not in (None, 2):
        raise ValueError(f"`num_classes` of an extreme-point model is 2 (background, object), got {num_classes!r}.")
    if augment not in ("default", "none"):
        raise ValueError(f"`augment` of an extreme-point model must be 'default' (flips, rotations) or 'none', "
                         f"got {augment!r}.")
    if jitter is not None and (isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0):
        raise ValueError(f"`jitter` must be a number of pixels >= 0 (or None: 2% of each object's size), "
                         f"got {jitter!r}.")
    settings = settings_for(model)
    size = (settings.size,) * model.spatial_dims
    if patch is not None and tuple(np.broadcast_to(np.asarray(patch), (model.spatial_dims,))) != size:
        raise ValueError(f"`patch` of an extreme-point model is its input size {size} (each object's crop is "
                         f"resized to it), got {patch!r}; leave it unset.")
    model.prompt = dataclasses.asdict(settings)  # saved with the model: inference crops the same way
    objects = object_crops(sources, settings, jitter=jitter)
    train_objects, val_objects = split_objects(objects, val_fraction, rng)
    sampler = ObjectSampler(train_objects, settings, jitter=jitter, augment=augment == "default", seed=seed)
    val = object_validation(val_objects[:_MAX_VAL_OBJECTS], settings, jitter=jitter, seed=seed)
    return sampler, val, val_objects[:_MAX_VAL_OBJECTS], size


def _whole_image_dice(model: Model, items, patch, num_classes: int, batch_size: int,
                      preprocess: PerImagePreprocessing) -> list[float] | None:
    """Dice per class of the whole held-out images (or strips), predicted through the tiling engine.

    A held-out strip is pre-processed with its whole image's frozen percentiles (as training and a
    prediction of the whole image see it), then predicted without further pre-processing.
    """
    total = sum(float(np.prod(it.shape)) for it in items)
    if total > _WHOLE_IMAGE_VAL_VOXELS:
        log.info("held-out images hold %.0f voxels: validated by patches only", total)
        return None
    plain = dataclasses.replace(model, preprocessing=[])
    preds, targets, masks = [], [], []
    for it in items:
        region = read_region(it, [b.start for b in it.bounds], it.shape, preprocess=preprocess, num_classes=num_classes)
        tile = tuple(min(p, -(-s // model.size_divisor) * model.size_divisor) for p, s in zip(patch, it.shape))
        pred = _predict_whole(plain, region.image, tile, torch.device("cpu"), batch_size)
        preds.append(np.asarray(pred).reshape(-1))
        targets.append(region.target.reshape(-1))
        masks.append(region.mask.reshape(-1))
    return dice_per_class(np.concatenate(preds), np.concatenate(targets), np.concatenate(masks), num_classes=num_classes)


def _describe(model, sources, step, steps, batch_size, patch, loss, lr, best, whole, cancelled, origin) -> str:
    shapes = ", ".join("×".join(map(str, s.labels.shape)) for s in sources[:4]) + (" ..." if len(sources) > 4 else "")
    text = (f"Trained with segarch.train on {len(sources)} image(s) ({shapes}): {step} of {steps} steps"
            f"{' (cancelled)' if cancelled else ''}, batch {batch_size}, patch {'×'.join(map(str, patch))}, "
            f"loss {loss}, lr {lr:g}.")
    if best["val_dice"] is not None:
        names = model.class_names[1:]
        kind = "object crop" if model.card.task == "interactive" else "patch"
        text += (f" Held-out {kind} Dice at step {best['step']}: "
                 + ", ".join(f"{n} {d:.3f}" for n, d in zip(names, best["val_dice"][1:])) + ".")
    if whole is not None:
        text += " Whole held-out images: " + ", ".join(f"{n} {d:.3f}" for n, d in zip(model.class_names[1:], whole[1:])) + "."
    if origin is not None:
        text = f"Fine-tuned from {origin}. " + text
    return text


def _write(model: Model, best, out, history: TrainingLog, csv_path, png_path, *, final: bool) -> None:
    from segarch.model_file import save_model

    if final:
        save_model(model, out)
    else:
        # A checkpoint: the best weights so far, marked trained, written atomically.
        snapshot = copy.copy(model)
        snapshot.network = copy.deepcopy(model.network).cpu()
        snapshot.network.load_state_dict(best["state"])
        snapshot.trained = True
        snapshot.description = f"Checkpoint of segarch.train at step {best['step']} (validation Dice {best['dice']:.3f})."
        save_model(snapshot, out)
    history.write_csv(csv_path)
    plot_png(history, png_path, title=f"{model.arch}: training loss and validation Dice")


def train(
    model_or_name: Any,
    images: Any,
    labels: Any,
    *,
    axes: str | None = None,
    mask: Any = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    options: dict | None = None,
    patch: int | Sequence[int] | None = None,
    steps: int = 500,
    batch_size: int | None = None,
    val_fraction: float = 0.1,
    val_every: int | None = None,
    loss: str = "dice_ce",
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    augment: Any = "default",
    jitter: float | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    out: str | os.PathLike | None = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    cancel: threading.Event | None = None,
) -> Model:
    """Train a zoo architecture, or fine-tune a model, on annotated images.

    Semantic models learn the classes of every pixel from patches. Interactive (extreme-point) models,
    e.g. ``"dextr_light"`` or the shipped ``"dextr_light"``/``"dextr_light3d"``, learn from objects: each
    object of the instance labels becomes one example (its jittered extreme points, the crop around them
    and the heat map, :mod:`segarch.training.objects`); ``patch`` is their input size, ``mask`` and
    ``num_classes`` do not apply, and ``model.validation["object_iou"]`` is the mean IoU of held-out
    objects segmented from their extreme points.

    Args:
        model_or_name: a zoo architecture name (built fresh with ``options``), a shipped model's name
            (:mod:`segarch.pretrained`; ``"dextr_light"`` names both: the shipped model, or a new network
            when ``options`` is given, even ``{}``), a model file (``.safetensors`` or a state dict path) or a
            :class:`segarch.Model` to fine-tune (copied).
        images: an array (NumPy, Dask, Zarr, e.g. a napari layer's ``data``), a list of them, a TIFF/Zarr
            path, or a folder of TIFF/Zarr files. Large arrays are read region by region.
        labels: the annotations, alike (folders are matched by file name, ``a.tif`` ↔ ``a.tif`` or
            ``a_labels.tif``): integer arrays, 0 = background. With ``num_classes=2`` (the default for a
            new model) any label > 0 is foreground, so instance labels work as they are.
        axes: the image's axes, e.g. ``"YX"``, ``"CYX"``, ``"ZYX"``, ``"TYX"`` (default: from the shapes; a
            channel axis is found where image and labels differ).
        mask: which pixels are annotated: ``None`` (slices holding at least one label), ``True`` (all), or
            boolean arrays shaped like the labels.
        num_classes: output classes including background (default: the model's, or 2 for a new model);
            a model with another count gets a new, re-initialised head.
        class_names: one name per class (background first).
        options: architecture options for a new model, e.g. ``{"features": (16, 32, 64, 128)}``.
        patch: training patch size (one or per axis, multiples of the model's size divisor; default
            128×128 in 2D, 32×64×64 in 3D, or the image size when smaller).
        steps: optimisation steps.
        batch_size: patches per step (default 8 in 2D, 2 in 3D; objects: 16 in 2D, 8 in 3D).
        val_fraction: the share of images (or, for one image, of its width) held out for validation.
        val_every: steps between validations (default: 20 per run, every 10 to 250 steps).
        loss: ``"dice_ce"`` (MONAI Dice + cross-entropy), ``"dice"``, ``"ce"`` or ``"focal"``.
        lr: AdamW's peak learning rate (warm-up over 5% of the steps, then cosine decay).
        weight_decay: AdamW's weight decay.
        augment: ``"default"`` (flips, 90° rotations, elastic, intensity, noise, blur; flips and rotations for
            interactive models), ``"none"`` or a list of MONAI transform configs (semantic models).
        jitter: interactive models only: how far (pixels) each extreme point may move from the true one, drawn
            afresh each time an object is used (default: 2% of the object's largest extent, at least 1).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        seed: random seed (patches, augmentation, initial weights of a new model).
        out: a ``.safetensors`` path: the best model is saved there at each improvement and at the end,
            with ``NAME.csv`` (the log) and ``NAME.png`` (loss and validation Dice) beside it.
        progress: called with each :class:`TrainEvent`.
        cancel: a :class:`threading.Event`; when set, training stops within one step.

    Returns:
        The trained :class:`segarch.Model` (the best validated weights, on the CPU, in eval mode), with
        ``model.history`` (the log rows) and ``model.validation`` (Dice per class on held-out patches
        and on whole held-out images).

    Raises:
        ValueError: unknown architecture, images and labels that don't match, labels that are not
            non-negative integers, no annotated pixel, or a bad option (the message says which).

    Examples::

        >>> from segarch.synthetic import dataset
        >>> images, labels = dataset(8, (128, 128))
        >>> model = segarch.train("unet", images, labels, options={"features": (8, 16, 32, 64)}, steps=200,
        ...                       out="nuclei.safetensors")
        >>> clicker = segarch.train("dextr_light", my_images, my_instance_labels, steps=300)   # fine-tune
    """
    cancel = cancel if cancel is not None else threading.Event()
    gen = train_iter(model_or_name, images, labels, axes=axes, mask=mask, num_classes=num_classes,
                     class_names=class_names, options=options, patch=patch, steps=steps, batch_size=batch_size,
                     val_fraction=val_fraction, val_every=val_every, loss=loss, lr=lr, weight_decay=weight_decay,
                     augment=augment, jitter=jitter, device=device, seed=seed, out=out, cancel=cancel)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        try:
            if progress is not None:
                progress(ev)
        except KeyboardInterrupt:  # Ctrl+C while drawing progress: stop at the next step, keep the best
            cancel.set()
