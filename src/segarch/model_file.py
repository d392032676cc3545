"""Deprecated: model files are read and written by :mod:`segarch.models` (``segarch.save_model`` and
``segarch.load_model`` are unchanged), and models are resolved by name by its catalogue.

``segarch.model_file.X`` still works and warns: ``resolve_model`` resolves as it did (a former shipped
name first, then files, shipped models and the zoo).
"""

from __future__ import annotations

from segarch.deprecation import warn_deprecated

__all__ = ["save_model", "load_model", "read_metadata", "check_metadata", "resolve_model", "FORMAT", "FORMAT_VERSION"]


def _resolve_model(spec, *, arch=None, **options):
    from segarch.models import catalog, pretrained

    if isinstance(spec, str) and spec in pretrained.FORMER_NAMES and not catalog.is_model_file(spec):
        return pretrained.load(spec)  # what the name meant here: the shipped model (warns with its new name)
    return catalog.resolve(spec, arch=arch, **options)


def __getattr__(name: str):
    if name == "resolve_model":
        warn_deprecated("segarch.model_file.resolve_model", "segarch.models.resolve")
        return _resolve_model
    if name in __all__:
        from segarch.models import files

        warn_deprecated(f"segarch.model_file.{name}", f"segarch.models.{name}")
        return getattr(files, name)
    raise AttributeError(f"module 'segarch.model_file' has no attribute {name!r}")
