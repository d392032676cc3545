"""Renamed and moved names keep working for a while, with a warning saying what to use instead.

As MONAI does (``monai.utils.deprecated``), the old name works as before and warns with a
``FutureWarning`` (shown to users by default, unlike ``DeprecationWarning``) naming the new one. A
test holds each old name to both: it still works, and it warns.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

__all__ = ["warn_deprecated", "deprecated_alias"]


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (both as a user would write them)."""
    warnings.warn(f"{old} is deprecated: use {new} instead. The old name will be removed in segarch 0.3.",
                  FutureWarning, stacklevel=stacklevel)


def deprecated_alias(function: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """``function`` under an old name: it works as before and warns once per call site."""

    @functools.wraps(function)
    def alias(*args, **kwargs):
        warn_deprecated(old, new)
        return function(*args, **kwargs)

    alias.__doc__ = f"Deprecated: use ``{new}``.\n\n" + (function.__doc__ or "")
    return alias
