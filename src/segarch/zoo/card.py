"""The model card: what the registry knows about an architecture without building it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["ModelCard", "TASKS"]

#: What an architecture does. ``generator``: it makes images (SPADE, label map → image), it does not segment.
TASKS = ("semantic", "instance", "panoptic", "interactive", "backbone", "generator")


@dataclass(frozen=True)
class ModelCard:
    """Facts about one registered architecture.

    Attributes:
        name: the registry name passed to :func:`segarch.zoo.create`.
        full_name: the architecture's usual name.
        paper: the paper's title.
        reference: arXiv id (``"arXiv:1505.04597"``) or DOI (``"doi:..."``).
        year: publication year.
        task: one of ``semantic``, ``instance``, ``panoptic``, ``interactive``, ``backbone``, ``generator``.
        spatial_dims: the dimensionalities it builds in, e.g. ``(2, 3)``.
        size_divisor: every spatial input size must be a multiple of this.
        paper_config: keyword arguments of :func:`segarch.zoo.create` (``spatial_dims``,
            ``in_channels``, ``out_channels`` and options) that reproduce the paper's configuration.
        paper_params: parameters the paper's configuration has, in millions (``None`` when no
            figure exists; see ``paper_params_source``).
        paper_params_source: where ``paper_params`` comes from.
        test_config: small options for fast tests and demos (narrow widths).
        test_lr: the Adam learning rate at which the shared tests' few training steps run (nets
            without normalisation need a smaller one).
        notes: what the implementation chose where the paper leaves room.
        builder: the network's class, or a function building a variant of it (not shown in reprs).
    """

    name: str
    full_name: str
    paper: str
    reference: str
    year: int
    task: str
    spatial_dims: tuple[int, ...]
    size_divisor: int
    paper_config: dict[str, Any]
    paper_params: float | None
    paper_params_source: str
    test_config: dict[str, Any] = field(default_factory=dict)
    test_lr: float = 1e-2
    notes: str = ""
    builder: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"`task` of model card {self.name!r} must be one of {TASKS}, got {self.task!r}.")

    def summary(self) -> dict[str, Any]:
        """The card as plain data (JSON-serialisable), without the builder."""
        return {
            "name": self.name,
            "full_name": self.full_name,
            "paper": self.paper,
            "reference": self.reference,
            "year": self.year,
            "task": self.task,
            "spatial_dims": list(self.spatial_dims),
            "size_divisor": self.size_divisor,
            "paper_config": dict(self.paper_config),
            "paper_params": self.paper_params,
            "paper_params_source": self.paper_params_source,
            "notes": self.notes,
        }
