"""``segarch.train``: train or fine-tune a zoo architecture on annotated images: a semantic model on
patches, an extreme-point (interactive, DEXTR) model on the objects of instance labels.

:func:`train_iter` is the engine: a generator that yields a :class:`TrainEvent` after every step
and every validation, and returns the trained :class:`segarch.Model`. :func:`train` runs it to the
end, calling ``progress`` with each event. The napari Train widget runs the generator in a worker
thread; the CLI draws a progress bar from the events.

The loop here only steps the optimiser, validates, keeps the best weights, writes checkpoints and the
log, and reports; what differs between kinds of training (the data, the examples, the loss and the
metric) is the task's (:mod:`segarch.training.task`). The options are one :class:`TrainConfig`.

Cancelling (``cancel.set()`` on a :class:`threading.Event`, or Ctrl+C) stops within one step; the
model returned, and the file written to ``out``, is the best one validated so far.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import os
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np
import torch

from segarch.deprecation import deprecated_alias
from segarch.destinations import check_output_file
from segarch.devices import resolve_device as _resolve_device
from segarch.models.model import Model
from segarch.models.files import save_model
from segarch.training.adaptation import DomainAdaptation
from segarch.training.config import TrainConfig
from segarch.training.log import TrainingLog, plot_png
from segarch.training.start import starting_model
from segarch.training.task import TrainingTask, Validation

__all__ = ["TrainEvent", "train", "train_iter", "resolve_device", "log_paths"]

log = logging.getLogger("segarch.training")


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
        val_loss, val_dice, mean_dice: on ``validation`` events: the loss, the task's metric per class
            (background first) and its summary on the held-out examples: Dice per class and the mean
            foreground Dice for semantic and extreme-point models (``metric`` names it).
        best_dice, best_step: the best summary metric so far and its step.
        cancelled: the run was cancelled (``done`` only).
        message: a line for a log or a status bar.
        metric: the validation metric's name (``"Dice"``).
        domain_loss: with ``adapt_to``, on ``step`` events: the domain discriminator's loss of this step
            (about 0.69 when it cannot tell source from target outputs).
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
    metric: str = "Dice"
    domain_loss: float | None = None


#: Deprecated: :func:`segarch.devices.resolve_device` is the one device rule for prediction, training and prompts.
resolve_device = deprecated_alias(_resolve_device, "segarch.training.resolve_device", "segarch.devices.resolve_device")


def log_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The CSV log and PNG plot written next to the model file ``out``: ``NAME.csv`` and ``NAME.png``."""
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.stem
    return out.with_name(stem + ".csv"), out.with_name(stem + ".png")


def _lr_factor(step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine down to 5% of `lr`


def train_iter(model_or_name: Any, images: Any, labels: Any, config: TrainConfig | None = None, *,
               cancel: threading.Event | None = None, **settings: Any) -> Generator[TrainEvent, None, Model]:
    """Train step by step, yielding a :class:`TrainEvent` after each step and validation; returns the model.

    Same arguments as :func:`train` (without ``progress``).
    """
    config = TrainConfig.build(config, settings)
    if config.out is not None:  # refused before any work: an existing file, an input, an unwritable folder
        check_output_file(config.out, overwrite=config.overwrite, companions=log_paths(config.out),
                          inputs=[images, labels, model_or_name])
    start_time = time.perf_counter()
    steps = int(config.steps)
    dev = _resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    model, sources, fresh, task = starting_model(model_or_name, images, labels, config)
    model = task.prepare(model, sources, rng)
    batch_size = task.batch_size
    val_every = int(config.val_every or max(10, min(250, steps // 20)))
    log.info("training %s (%s) on %s: %s, %s %s, batch %d, %d steps", model.arch, task.name, dev, task.data_summary,
             task.example, task.input_size, batch_size, steps)

    net = model.network.to(dev)
    adaptation = None if config.adapt_to is None else DomainAdaptation(config.adapt_to, model, task, config, dev)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, steps))
    history = TrainingLog(task.class_names, metric=task.metric_key, metric_name=task.metric)
    out = config.out
    csv_path, png_path = log_paths(out) if out is not None else (None, None)
    best: dict[str, Any] = {"dice": -1.0, "step": None, "state": None, "val_dice": None}
    validates = task.validation_size > 0

    def validate() -> Validation:
        net.eval()
        try:
            return task.validate(net, dev)
        finally:
            net.train()

    def snapshot(step: int, result: Validation) -> bool:
        score = -1.0 if math.isnan(result.score) else result.score
        if best["state"] is not None and score <= best["dice"]:
            return False
        best.update(dice=score, step=step, val_dice=result.per_class,
                    state={k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()})
        if out is not None:
            _write(model, task, best, out, history, csv_path, png_path, final=False)
        return True

    def event(kind, step, loss_value, **kw) -> TrainEvent:
        return TrainEvent(kind, step, steps, loss_value, optimiser.param_groups[0]["lr"],
                          time.perf_counter() - start_time,
                          best_dice=None if best["state"] is None else best["dice"], best_step=best["step"],
                          metric=task.metric, **kw)

    def validation_event(step: int, last_loss: float) -> TrainEvent:
        result = validate()
        improved = snapshot(step, result)
        history.add_validation(step, last_loss, result.loss, result.per_class, result.score)
        return event("validation", step, last_loss, val_loss=result.loss, val_dice=result.per_class,
                     mean_dice=result.score,
                     message=f"step {step}: validation "
                     # a detector has no validation loss (in eval mode it detects): its message names the metric only
                     + ("" if math.isnan(result.loss) else f"loss {result.loss:.4f}, ")
                     + f"{task.metric} {result.score:.3f}" + (" (best)" if improved else ""))

    step, last_loss, cancelled, last_validated = 0, math.nan, False, 0
    net.train()
    try:
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                cancelled, step = True, step - 1
                break
            x, y, m = task.batch(batch_size)
            x, y, m = x.to(dev), y.to(dev), m.to(dev)
            try:
                output = task.forward(net, x, y, m)
                value = task.loss(output, y, m)
                if adaptation is not None:  # MADAN's alignment: target outputs that pass for source ones
                    value = value + adaptation.alignment_loss(net, batch_size)
            except ValueError as err:
                if "more than 1 value per channel" not in str(err):
                    raise
                raise ValueError(f"`batch_size`={batch_size} with `patch`={task.input_size} leaves the batch norm of "
                                 f"{model.arch!r} a single value per channel (after global pooling): use `batch_size` "
                                 f">= 2 or a larger `patch`.") from err
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
            domain_loss = None if adaptation is None else adaptation.discriminator_step(output)
            last_loss = float(value.detach())
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"the loss became {last_loss} at step {step}: lower `lr` (now {config.lr}).")
            lr_now = optimiser.param_groups[0]["lr"]
            schedule.step()
            history.add(step, last_loss, lr_now, time.perf_counter() - start_time)
            yield event("step", step, last_loss, domain_loss=domain_loss,
                        message=f"step {step}/{steps}: loss {last_loss:.4f}"
                        + ("" if domain_loss is None else f", discriminator {domain_loss:.4f}"))
            if validates and (step % val_every == 0 or step == steps):
                yield validation_event(step, last_loss)
                last_validated = step
    except KeyboardInterrupt:  # Ctrl+C on the command line: stop here and keep the best model
        cancelled = True
    if validates and step and last_validated != step:
        yield validation_event(step, last_loss)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    elif not validates and step:
        best.update(step=step)
    net.eval().to("cpu")
    model.trained = step > 0
    measures, sentence = task.final_validation(model, trained=step > 0)
    origin = None if fresh else (f"{model_or_name}" if isinstance(model_or_name, (str, os.PathLike))
                                 else f"a {model.arch} model")
    model.description = _describe(model, task, config, sources, step, best, sentence, cancelled, origin,
                                  None if adaptation is None else adaptation.describe(step))
    model.history = history.rows  # the training log, also written to CSV next to `out`
    model.validation = {"best_step": best["step"], "patch_dice": best["val_dice"], **measures}
    if out is not None:
        _write(model, task, best, out, history, csv_path, png_path, final=True)
    summary = "" if best["val_dice"] is None else (f"; best validation {task.metric} {best['dice']:.3f} at step "
                                                   f"{best['step']}")
    yield event("done", step, last_loss, cancelled=cancelled, val_dice=best["val_dice"],
                mean_dice=None if best["val_dice"] is None else best["dice"],
                message=("cancelled" if cancelled else "finished") + f" after {step} steps" + summary)
    return model


def _describe(model: Model, task: TrainingTask, config: TrainConfig, sources, step: int, best, sentence: str,
              cancelled: bool, origin: str | None, adaptation: str | None = None) -> str:
    shapes = ", ".join("×".join(map(str, s.labels.shape)) for s in sources[:4]) + (" ..." if len(sources) > 4 else "")
    text = (f"Trained with segarch.train on {len(sources)} image(s) ({shapes}): {step} of {int(config.steps)} steps"
            f"{' (cancelled)' if cancelled else ''}, batch {task.batch_size}, patch "
            f"{'×'.join(map(str, task.input_size))}, loss {config.loss}, lr {config.lr:g}.")
    if best["val_dice"] is not None:
        text += (f" Held-out {task.example} {task.metric} at step {best['step']}: "
                 + ", ".join(f"{n} {d:.3f}" for n, d in zip(task.class_names[1:], best["val_dice"][1:])) + ".")
    if sentence:
        text += " " + sentence
    if adaptation is not None:
        text += " " + adaptation
    if origin is not None:
        text = f"Fine-tuned from {origin}. " + text
    return text


def _write(model: Model, task: TrainingTask, best, out, history: TrainingLog, csv_path, png_path, *,
           final: bool) -> None:
    if final:
        save_model(model, out)
    else:
        # A checkpoint: the best weights so far, marked trained, written atomically.
        snapshot = copy.copy(model)
        snapshot.network = copy.deepcopy(model.network).cpu()
        snapshot.network.load_state_dict(best["state"])
        snapshot.trained = True
        snapshot.description = (f"Checkpoint of segarch.train at step {best['step']} (validation {task.metric} "
                                f"{best['dice']:.3f}).")
        save_model(snapshot, out)
    history.write_csv(csv_path)
    plot_png(history, png_path, title=f"{model.arch}: training loss and validation {task.metric}")


def train(model_or_name: Any, images: Any, labels: Any, config: TrainConfig | None = None, *,
          progress: Callable[[TrainEvent], Any] | None = None, cancel: threading.Event | None = None,
          **settings: Any) -> Model:
    """Train a zoo architecture, or fine-tune a model, on annotated images.

    Semantic models learn the classes of every pixel from patches. Interactive (extreme-point) models,
    e.g. ``"dextr_light"`` or the shipped ``"dextr_light.objects2d"``/``"dextr_light.objects3d"``, learn from
    objects: each
    object of the instance labels becomes one example (its jittered extreme points, the crop around them
    and the heat map, :mod:`segarch.training.objects`); ``patch`` is their input size, ``mask`` and
    ``num_classes`` do not apply, and ``model.validation["object_iou"]`` is the mean IoU of held-out
    objects segmented from their extreme points. How each kind trains is its task
    (:mod:`segarch.training.task`); ``task=`` names one, by default the model's own.

    Args:
        model_or_name: what the model catalogue resolves (:mod:`segarch.models.catalog`): a zoo architecture
            name (a new network, built with ``options``), shipped weights to fine-tune (``"unet.nuclei2d"``,
            ``"dextr_light.objects2d"``: :mod:`segarch.pretrained`), ``"session:NAME"``, a model file
            (``.safetensors`` or a state dict path), or a :class:`segarch.Model` to fine-tune (copied).
        images: an array (NumPy, Dask, Zarr, e.g. a napari layer's ``data``), a list of them, a TIFF/Zarr
            path, or a folder of TIFF/Zarr files. Large arrays are read region by region.
        labels: the annotations, alike (folders are matched by file name, ``a.tif`` ↔ ``a.tif`` or
            ``a_labels.tif``): integer arrays, 0 = background. With ``num_classes=2`` (the default for a
            new model) any label > 0 is foreground, so instance labels work as they are.
        config: a :class:`TrainConfig` holding the options below (keywords given as well override it).
        progress: called with each :class:`TrainEvent`.
        cancel: a :class:`threading.Event`; when set, training stops within one step.
        **settings: the training options, the fields of :class:`TrainConfig`:

{options}

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
        >>> clicker = segarch.train("dextr_light.objects2d", my_images, my_instance_labels, steps=300)  # fine-tune
        >>> model = segarch.train("unet", images, labels, TrainConfig(steps=200, lr=3e-3))
    """
    cancel = cancel if cancel is not None else threading.Event()
    gen = train_iter(model_or_name, images, labels, config, cancel=cancel, **settings)
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


def _document_options() -> None:
    """Write :class:`TrainConfig`'s options into :func:`train`'s docstring and both functions' signatures,
    so ``help(segarch.train)`` shows every option while the options are written once."""
    doc = TrainConfig.__doc__ or ""
    args = doc.split("Args:", 1)[1].split("Raises:", 1)[0] if "Args:" in doc else ""
    train.__doc__ = (train.__doc__ or "").replace("{options}", textwrap.indent(textwrap.dedent(args).strip("\n"),
                                                                               " " * 12))
    fields = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
              for f in dataclasses.fields(TrainConfig)]
    for function in (train, train_iter):
        signature = inspect.signature(function)
        params = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        function.__signature__ = signature.replace(parameters=params + fields)


_document_options()
