"""Models that ship trained with segarch (no downloads), named as weights of an architecture: ``ARCH.TAG``.

Each model is a model file ``weights/ARCH.TAG.safetensors`` with its card ``weights/ARCH.TAG.json``, both
written by ``scripts/train_pretrained.py`` (the nuclei models) or ``scripts/train_dextr_light.py`` (the
extreme-point models), reproducible from a seed on the CPU. The card says what the model was trained on,
how, and its Dice or IoU measured on fresh generated images. As in timm (``resnet50.a1_in1k``), the name
says the architecture first: ``unet.nuclei2d`` is U-Net weights for 2D nuclei, and ``dextr_light`` alone is
always the architecture (a new network), never shipped weights.

``segarch.pretrained`` is this module. The names before this scheme (``nuclei2d``, ``nuclei3d``,
``dextr_light``, ``dextr_light3d``) still load here, with a ``FutureWarning`` naming the new one.

Examples::

    >>> from segarch import pretrained
    >>> pretrained.names()
    ['dextr_light.clicks2d', 'dextr_light.objects2d', 'dextr_light.objects3d', 'unet.nuclei2d', 'unet.nuclei3d']
    >>> pretrained.names(task="semantic")
    ['unet.nuclei2d', 'unet.nuclei3d']
    >>> model = pretrained.load("unet.nuclei2d")
    >>> labels = segarch.predict(model, image)
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from segarch.deprecation import warn_deprecated

__all__ = ["names", "card", "load", "path", "canonical", "task_of", "WEIGHTS", "FORMER_NAMES"]

WEIGHTS = Path(__file__).resolve().parent / "weights"

#: The shipped models' names before they were named as weights of an architecture: old name → new name.
FORMER_NAMES = {"nuclei2d": "unet.nuclei2d", "nuclei3d": "unet.nuclei3d", "dextr_light": "dextr_light.objects2d",
                "dextr_light3d": "dextr_light.objects3d"}


def names(task: str | None = None) -> list[str]:
    """The shipped models (those with both weights and a card), sorted; only those whose architecture's
    task is ``task`` (``"semantic"``, ``"interactive"``, ...) when given."""
    if not WEIGHTS.is_dir():
        return []
    found = sorted(p.name[: -len(".safetensors")] for p in WEIGHTS.glob("*.safetensors")
                   if (WEIGHTS / (p.name[: -len(".safetensors")] + ".json")).is_file())
    if task is None:
        return found
    return [n for n in found if task_of(card(n)) == task]


def task_of(model_card: dict[str, Any]) -> str:
    """The task of a shipped model's card (written on it; else its architecture's, from the zoo)."""
    if "task" in model_card:
        return str(model_card["task"])
    from segarch import zoo

    return zoo.card(model_card["arch"]).task


def canonical(name: str, *, stacklevel: int = 4) -> str:
    """``name`` as the shipped model's current name: a former name (``"nuclei2d"``) warns and gives the new one.

    Raises:
        ValueError: not a shipped model (with close names and the list).
    """
    available = names()
    if isinstance(name, str) and name not in available and name in FORMER_NAMES and FORMER_NAMES[name] in available:
        warn_deprecated(f"The shipped model name {name!r}", repr(FORMER_NAMES[name]), stacklevel=stacklevel)
        return FORMER_NAMES[name]
    if not isinstance(name, str) or name not in available:
        close = difflib.get_close_matches(str(name), available, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"`name` {name!r} is not a shipped model.{hint} Available: {', '.join(available) or 'none'}.")
    return name


def path(name: str) -> Path:
    """The model file of ``name``."""
    return WEIGHTS / f"{canonical(name)}.safetensors"


def card(name: str) -> dict[str, Any]:
    """The card of ``name``: title, architecture, parameters, data, training settings and measured Dice."""
    return json.loads((WEIGHTS / f"{canonical(name)}.json").read_text())


def load(name: str):
    """The shipped model ``name`` as a :class:`segarch.Model` (CPU, eval mode)."""
    from segarch.models.files import load_model  # here: listing names and cards needs no torch

    name = canonical(name)
    model = load_model(WEIGHTS / f"{name}.safetensors")
    model.name = name  # provenance names the shipped model, not only its architecture
    return model
