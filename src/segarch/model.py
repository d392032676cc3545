"""Deprecated: :class:`segarch.Model` lives in :mod:`segarch.models` (``segarch.Model`` is unchanged).

``from segarch.model import Model`` still works and warns.
"""

from __future__ import annotations

from segarch.deprecation import warn_deprecated

__all__ = ["Model"]


def __getattr__(name: str):
    if name in __all__:
        from segarch.models import model

        warn_deprecated(f"segarch.model.{name}", f"segarch.models.{name}")
        return getattr(model, name)
    raise AttributeError(f"module 'segarch.model' has no attribute {name!r}")
