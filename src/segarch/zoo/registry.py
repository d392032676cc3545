"""The architecture registry: names → cards → networks.

Each module in :mod:`segarch.nets` and :mod:`segarch.backbones` registers its architectures with :func:`register` when
imported; the registry imports them all on first use, so a new architecture is a new file.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from functools import lru_cache
from typing import Any, Callable

from segarch.zoo.card import TASKS, ModelCard

__all__ = ["register", "names", "card", "create", "parameter_count", "cards"]

_REGISTRY: dict[str, ModelCard] = {}
_RESERVED = ("spatial_dims", "in_channels", "out_channels")


def register(**card_fields: Any) -> Callable:
    """Decorator registering an architecture under a card (the fields of :class:`ModelCard`).

    It decorates the network's class itself, ``Net(spatial_dims, in_channels, out_channels, **options)``,
    whose ``__init__`` keywords are the options :func:`create` accepts, or, for a variant that fixes some
    of a class's options (``hrnet_v2_w18_small``, ``resnet50``), a function with that signature. Either is
    returned unchanged.
    """

    def decorate(builder: Callable) -> Callable:
        params = list(inspect.signature(builder).parameters)
        if tuple(params[:3]) != _RESERVED:
            raise TypeError(f"a registered architecture takes {', '.join(_RESERVED)} first, "
                            f"{getattr(builder, '__name__', builder)!r} takes {params[:3]}")
        entry = ModelCard(builder=builder, **card_fields)
        if entry.name in _REGISTRY:
            raise RuntimeError(f"architecture {entry.name!r} is registered twice")
        _REGISTRY[entry.name] = entry
        return builder

    return decorate


@lru_cache(maxsize=None)
def _load_all() -> None:
    for package in ("segarch.backbones", "segarch.nets"):
        path = importlib.import_module(package).__path__
        for module in pkgutil.iter_modules(path):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package}.{module.name}")


def names(task: str | None = None) -> list[str]:
    """Registered architecture names, sorted; only those of ``task`` when given."""
    _load_all()
    if task is not None and task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS} or None, got {task!r}.")
    return sorted(n for n, c in _REGISTRY.items() if task is None or c.task == task)


def cards() -> list[ModelCard]:
    """All model cards, sorted by name."""
    return [card(n) for n in names()]


def card(name: str) -> ModelCard:
    """The :class:`ModelCard` of architecture ``name``; a ``ValueError`` suggests close names."""
    _load_all()
    if not isinstance(name, str) or name not in _REGISTRY:
        key = str(name).lower().replace("-", "_").replace(" ", "_")
        if key in _REGISTRY:
            return _REGISTRY[key]
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown architecture `name`={name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def _options_of(entry: ModelCard) -> list[str]:
    params = inspect.signature(entry.builder).parameters
    return [p for p in params if p not in _RESERVED]


def create(name: str, *, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **options: Any):
    """Build architecture ``name`` as a ``torch.nn.Module``.

    Args:
        name: a registry name (see :func:`names`).
        spatial_dims: 2 or 3, among those the card supports.
        in_channels: input channels.
        out_channels: output channels (classes, for semantic models).
        **options: architecture options (see the architecture's docstring and ``card(name).paper_config``).

    Returns:
        The network. Semantic networks map ``(B, in_channels, *spatial)`` to logits
        ``(B, out_channels, *spatial)``; spatial sizes must be multiples of ``card(name).size_divisor``.

    Raises:
        ValueError: unknown name, unsupported ``spatial_dims``, bad channel counts or options.
    """
    entry = card(name)
    if spatial_dims not in entry.spatial_dims:
        raise ValueError(
            f"`spatial_dims` must be one of {entry.spatial_dims} for {entry.name!r}, got {spatial_dims!r}."
        )
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
    allowed = _options_of(entry)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {', '.join(unknown)} for {entry.name!r}; "
                         f"allowed options: {', '.join(allowed) or 'none'}.")
    return entry.builder(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **options)


def parameter_count(name: str, **config: Any) -> int:
    """Parameters of ``name`` built with ``config`` (default: the paper's configuration).

    Built on PyTorch's ``meta`` device, so no memory is allocated even for large networks.
    """
    if not config:
        return _paper_parameter_count(card(name).name)
    return _count(name, config)


@lru_cache(maxsize=None)
def _paper_parameter_count(name: str) -> int:
    from segarch.zoo.counts import stored_count  # counted once and stored (zoo/counts.py)

    stored = stored_count(card(name))
    return stored if stored is not None else _count(name, card(name).paper_config)


def _count(name: str, config: dict[str, Any]) -> int:
    import torch

    with torch.device("meta"):
        net = create(name, **dict(config))
    return sum(p.numel() for p in net.parameters())
