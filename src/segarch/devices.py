"""Which device a network runs on: one strict ``resolve_device`` for prediction, training and prompts.

``device`` is what a user passes everywhere (``segarch.predict``, ``segarch.train``,
``segment_from_points``, the CLI's ``--device`` and the widgets' Device lists): ``"auto"`` (CUDA, then
Apple MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a ``torch.device``. A device
that is not there is refused at once, naming it and what is there, instead of failing at the first
forward pass.

Examples::

    >>> from segarch.devices import available_devices, resolve_device
    >>> available_devices()
    ['auto', 'cpu']
    >>> resolve_device("auto")
    device(type='cpu')
"""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def available_devices() -> list[str]:
    """The ``device`` values this machine accepts: ``auto``, ``cpu``, each CUDA device, and ``mps`` if present."""
    devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``device``: ``"auto"`` (or ``None``) picks CUDA, then MPS, then the CPU;
    anything else must name a device this machine has.

    Raises:
        ValueError: not a device name, or a device that is not available here (the message lists those
            that are).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}.") from None
    cuda_missing = not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()
    if resolved.type == "cuda" and cuda_missing:
        raise ValueError(f"`device`={device!r} is not available here (CUDA devices: {torch.cuda.device_count()}); "
                         f"available: {', '.join(available_devices())}.")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"`device`={device!r} is not available here; available: {', '.join(available_devices())}.")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"`device`={device!r} is not supported: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    return resolved
