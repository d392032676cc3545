"""Which model a user meant: one catalogue for the zoo, the shipped weights, this session's models and files.

Every place that takes a model by name (``segarch.train``, ``segment_from_points``, the CLI's ``--model``,
the napari docks) resolves it here, in one order, and every model list is :func:`choices`. A reference
is text, the same everywhere (what a user types, what a dock stores, what ``--model`` takes):

====================================  ==========================================================
``unet``                              a zoo architecture: a new, untrained network
``unet.nuclei2d``                     shipped weights of an architecture (``ARCH.TAG``, as timm): trained
``session:unet 2D``                   a model trained or loaded in this session (the Train dock's)
``cells.safetensors``, ``./w.pt``     a model file (a model-file suffix, a path separator, or a file),
``cells.zip``                         or a bioimage.io model package (``.zip`` or folder, ONNX or state dict)
``zoo:unet``, ``shipped:unet.nuclei2d``, ``file:w.pt``  the same, with the kind spelled out
====================================  ==========================================================

A name means one thing: ``dextr_light`` is the architecture; its shipped weights are
``dextr_light.objects2d``. The shipped models' former names (``nuclei2d``, ``dextr_light3d``) still
resolve to them, with a ``FutureWarning``, where they are not an architecture's name.

Examples::

    >>> from segarch import models
    >>> models.parse("unet.nuclei2d")
    ModelRef(kind='shipped', name='unet.nuclei2d')
    >>> [str(r) for r in models.choices(task="interactive", kinds=("shipped",))]
    ['shipped:dextr_light.objects2d', 'shipped:dextr_light.objects3d']
    >>> model = models.resolve("unet.nuclei2d")          # a segarch.Model, trained
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from segarch.models.model import Model

# The zoo, the Model and model files import torch and every network (seconds): they are imported where a
# reference needs them, so listing shipped and session models (a napari dock starting) stays instant.

from segarch.models import pretrained
from segarch.models.session import SESSION

__all__ = ["ModelRef", "ModelInfo", "KINDS", "MODEL_FILE_SUFFIXES", "parse", "resolve", "choices", "describe",
           "is_model_file"]

#: The kinds of reference, in the order model lists show them.
KINDS = ("shipped", "session", "file", "zoo")
#: Suffixes that make a name a model file (``.safetensors``, a PyTorch state dict, a bioimage.io package).
MODEL_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".zip")
#: Zoo tasks whose architectures are models a user applies or trains (not backbones, not image generators).
MODEL_TASKS = ("semantic", "instance", "panoptic", "interactive")


@dataclass(frozen=True)
class ModelRef:
    """A model a user picked, before it is loaded: printable, comparable, hashable.

    Attributes:
        kind: ``"zoo"``, ``"shipped"``, ``"session"`` or ``"file"``.
        name: the architecture, the shipped model (``"unet.nuclei2d"``), the session name, or the file's
            path (``""``: a file still to be chosen).

    ``str(ref)`` is its canonical text (``"shipped:unet.nuclei2d"``), which :func:`parse` reads back;
    ``ref.text`` the shortest text that does; ``ref.label`` what a list shows.
    """

    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"`kind` of a model reference must be one of {KINDS}, got {self.kind!r}.")

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def text(self) -> str:
        """The shortest text :func:`parse` reads as this reference (``"unet.nuclei2d"``, ``"session:unet 2D"``)."""
        return str(self) if self.kind == "session" or (self.kind == "file" and not self.name) else self.name

    @property
    def label(self) -> str:
        """How a model list shows it."""
        if self.kind == "shipped":
            return f"{self.name} (shipped, trained)"
        if self.kind == "session":
            return f"{self.name} (trained in this session)"
        if self.kind == "file":
            return f"{self.name} (model file)" if self.name else "Model file…"
        return f"{self.name} (architecture, untrained)"


@dataclass(frozen=True)
class ModelInfo:
    """What a reference is, known without loading weights: dimensionality, channels, task, trained."""

    spatial_dims: int
    in_channels: int
    task: str
    trained: bool


def is_model_file(value: Any) -> bool:
    """Whether ``value`` names a model file: a path object, a model-file suffix, a path separator, or a file."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and bool(value) and (
        os.sep in value or "/" in value or value.lower().endswith(MODEL_FILE_SUFFIXES) or os.path.isfile(value)
        or os.path.isfile(os.path.join(value, "bioimageio.yaml")))


def parse(reference: "str | os.PathLike | ModelRef") -> ModelRef:
    """The :class:`ModelRef` a user's text means (see the module's table).

    Raises:
        ValueError: no model of that name, with close names and where to find the others.
    """
    if isinstance(reference, ModelRef):
        return reference
    if isinstance(reference, os.PathLike):
        return ModelRef("file", os.fspath(reference))
    if not isinstance(reference, str):
        raise ValueError(f"`model` must be a model name, a model file or a segarch.Model, got "
                         f"{type(reference).__name__}.")
    from segarch import zoo

    text = reference.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind in KINDS:
        return _checked(ModelRef(kind, rest if kind == "file" else rest.strip()))
    if is_model_file(text):
        return ModelRef("file", text)
    if text in pretrained.names():
        return ModelRef("shipped", text)
    if text in zoo.names():
        return ModelRef("zoo", text)
    if text in pretrained.FORMER_NAMES:
        return ModelRef("shipped", pretrained.canonical(text, stacklevel=5))
    shipped, architectures = pretrained.names(), zoo.names()
    close = difflib.get_close_matches(text, shipped + architectures + [f"session:{n}" for n in SESSION.names()], n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"`model`={text!r} is not a model file, a shipped model or a zoo architecture.{hint} "
                     f"Shipped (trained): {', '.join(shipped)}; architectures (untrained): see `segarch zoo`.")


def _checked(ref: ModelRef) -> ModelRef:
    if ref.kind == "zoo":
        from segarch import zoo

        zoo.card(ref.name)  # raises with close names
    elif ref.kind == "shipped":
        return ModelRef("shipped", pretrained.canonical(ref.name, stacklevel=6))
    elif ref.kind == "session" and ref.name not in SESSION.names():
        SESSION.get(ref.name)  # raises, listing the session's models
    return ref


def resolve(reference: Any, *, task: str | Iterable[str] | None = None, trained: bool = False,
            arch: str | None = None, **options: Any) -> Model:
    """The :class:`segarch.Model` behind ``reference``: a Model (returned as it is), a bare
    ``torch.nn.Module`` (wrapped, :func:`segarch.models.as_model`; ``options`` may give ``out_channels``),
    or a reference (:func:`parse`).

    Args:
        task: the task(s) the model must have (``"semantic"``, ``"interactive"``, ...), checked with a message.
        trained: refuse a zoo architecture (an untrained network), naming the shipped weights of it if any:
            for inference-only callers such as ``segment_from_points``.
        arch, options: for a file, :func:`segarch.load_model`'s (the architecture and options of a plain state
            dict); for a zoo architecture, :meth:`segarch.Model.from_zoo`'s (``spatial_dims``, ``in_channels``,
            ``out_channels``, ``class_names`` and the architecture's options).

    Raises:
        ValueError: an unknown name (with close names), a model of another task, an untrained architecture where
            ``trained`` is asked, or a model file that cannot be loaded (the message says why).
    """
    from segarch.models.model import Model, as_model

    if isinstance(reference, Model):
        model = reference
    elif _is_module(reference):
        model = as_model(reference, **options)
    else:
        ref = parse(reference)
        if ref.kind == "zoo":
            if trained:
                raise ValueError(_untrained_message(ref.name))
            model = Model.from_zoo(ref.name, **options)
        elif ref.kind == "shipped":
            model = pretrained.load(ref.name)
        elif ref.kind == "session":
            model = SESSION.get(ref.name)
        else:
            if not ref.name:
                raise ValueError("Choose a model file (.safetensors, or .pt/.pth with its architecture).")
            model = _load_file(Path(ref.name), arch=arch or None, **options)
    _check_task(model, task)
    return model


def _load_file(path: Path, **options: Any) -> Model:
    """A model file, or a bioimage.io model package (a .zip or folder with its bioimageio.yaml)."""
    from segarch.models.bioimageio import is_bioimageio_package, load_bioimageio
    from segarch.models.files import load_model

    if is_bioimageio_package(path):
        return load_bioimageio(path)
    return load_model(path, **options)


def _is_module(value: Any) -> bool:
    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(value, nn.Module)


def _untrained_message(name: str) -> str:
    shipped = [n for n in pretrained.names() if pretrained.card(n)["arch"] == name]
    where = (f" Its shipped trained weights: {', '.join(map(repr, shipped))}." if shipped
             else " Train it first (segarch.train, `segarch train` or the Train dock), or pass a model file.")
    return f"`model`={name!r} names an architecture: a new, untrained network, which this needs trained.{where}"


def _check_task(model: "Model", task) -> None:
    if task is None:
        return
    tasks = (task,) if isinstance(task, str) else tuple(task)
    if model.task not in tasks:
        kinds = {"interactive": "an extreme-point (interactive) model", "semantic": "a semantic segmentation model"}
        wanted = " or ".join(kinds.get(t, f"a {t} model") for t in tasks)
        raise ValueError(f"`model` must be {wanted}; {model.name or model.arch!r} is a {model.task} model.")


def choices(*, task: str | Iterable[str] | None = None, kinds: Iterable[str] = KINDS,
            dims: int | None = None) -> list[ModelRef]:
    """Every model a list offers, in :data:`KINDS` order (shipped, this session's, a file to choose, the zoo).

    Args:
        task: only models of this task (or these tasks); by default every model task (architectures that are
            backbones or image generators are never offered).
        kinds: which kinds to list (e.g. ``("shipped", "session")`` for trained models only).
        dims: only models that work in 2D or 3D (a file's is not known until it is read: always listed).
    """
    tasks = MODEL_TASKS if task is None else ((task,) if isinstance(task, str) else tuple(task))
    wanted = set(kinds)
    found: list[ModelRef] = []
    for kind in KINDS:
        if kind not in wanted:
            continue
        if kind == "shipped":
            refs = [ModelRef("shipped", n) for n in pretrained.names()]
        elif kind == "session":
            refs = [ModelRef("session", n) for n in SESSION.names()]
        elif kind == "file":
            refs = [ModelRef("file", "")]
        else:
            from segarch import zoo

            refs = [ModelRef("zoo", n) for t in tasks if t in zoo.TASKS for n in zoo.names(task=t)]
        for ref in refs:
            info = describe(ref)
            if info is None or (info.task in tasks and (dims is None or _has_dims(ref, info, dims))):
                found.append(ref)
    return found


def _has_dims(ref: ModelRef, info: ModelInfo, dims: int) -> bool:
    from segarch import zoo

    return dims in zoo.card(ref.name).spatial_dims if ref.kind == "zoo" else info.spatial_dims == dims


def describe(reference: "str | ModelRef") -> ModelInfo | None:
    """:class:`ModelInfo` from the cards (no weights are read); ``None`` for a model file (unknown until read).

    A zoo architecture is described by its first dimensionality and one input channel (how it is built
    by default). A shipped model's card says all (no zoo or torch import: a dock lists them at once).
    """
    ref = parse(reference)
    if ref.kind == "shipped":
        card = pretrained.card(ref.name)
        return ModelInfo(int(card["spatial_dims"]), int(card.get("in_channels", 1)), pretrained.task_of(card), True)
    if ref.kind == "session":
        model = SESSION.get(ref.name)
        return ModelInfo(model.spatial_dims, model.in_channels, model.task, model.trained)
    if ref.kind == "zoo":
        from segarch import zoo

        card = zoo.card(ref.name)
        return ModelInfo(min(card.spatial_dims), 1, card.task, False)
    return None
