"""Model files: one ``.safetensors`` file per model, or a plain PyTorch state dict.

Our files are safetensors (no code is ever executed on load) whose metadata holds the
architecture, its options and everything in :meth:`segarch.Model.metadata`. Plain state dicts
(``.pt``/``.pth``) from elsewhere load with ``torch.load(weights_only=True)`` when the user names
the architecture; pickled Python objects are refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from segarch import zoo
from segarch.model import Model

__all__ = ["save_model", "load_model", "read_metadata", "resolve_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "segarch"
FORMAT_VERSION = "1"
_STATE_DICT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "network", "net")
_PREFIXES = ("module.", "network.", "model.")


def save_model(model: Model, path: str | os.PathLike, *, half: bool = False) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``); returns the path.

    The file is written to a temporary name and renamed, so an interrupted save never leaves a
    truncated model behind. ``half=True`` stores floating-point weights as float16 (half the size);
    :func:`load_model` reads them back into the float32 network.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"`path` must end in '.safetensors', got {str(path)!r}.")
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.network.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "segarch": json.dumps(model.metadata())}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a model file is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The segarch metadata of a ``.safetensors`` file, or ``None`` for a foreign safetensors file."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    if raw.get("format") != FORMAT or "segarch" not in raw:
        return None
    try:
        meta = json.loads(raw["segarch"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} has corrupt segarch metadata: {err}") from None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise ValueError(f"{str(path)!r} has segarch metadata without an 'arch' entry: {meta!r}")
    return meta


def load_model(path: str | os.PathLike, *, arch: str | None = None, spatial_dims: int | None = None,
               in_channels: int | None = None, out_channels: int | None = None,
               class_names: list[str] | None = None, **options: Any) -> Model:
    """Load a model file.

    Args:
        path: a segarch ``.safetensors`` file, or a state dict (``.pt``/``.pth``/``.ckpt``/``.bin``, or a
            foreign ``.safetensors``) of a zoo architecture.
        arch: the architecture; required for state dicts, checked against the file for our files.
        spatial_dims, in_channels, out_channels, class_names, **options: how to build ``arch`` for a
            state dict (defaults: 2D, 1 input channel, and the output channels the weights imply).

    Returns:
        A :class:`segarch.Model` on the CPU in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt or truncated, holds pickled objects, is for another
            architecture, or its tensors don't match the architecture (names and shapes are listed).
    """
    path = _existing(path)
    if path.suffix == ".safetensors":
        meta = read_metadata(path)
        state = _read_safetensors(path)
        if meta is not None:
            if arch is not None and zoo.card(arch).name != meta["arch"]:
                raise ValueError(
                    f"{str(path)!r} holds a {meta['arch']!r} model, not {arch!r} as requested by `arch`."
                )
            model = _model_from_metadata(meta, path)
            _load_state(model, state, path)
            return model
    elif path.suffix in _STATE_DICT_SUFFIXES:
        state = _read_torch_state_dict(path)
    else:
        raise ValueError(
            f"`path` {str(path)!r} has an unknown suffix {path.suffix!r}; allowed: .safetensors, "
            + ", ".join(_STATE_DICT_SUFFIXES) + "."
        )
    if arch is None:
        raise ValueError(
            f"{str(path)!r} is a plain state dict ({len(state)} tensors) with no segarch metadata; "
            f"pass `arch` (one of {', '.join(zoo.names())}) and its options to load it."
        )
    if out_channels is None:
        out_channels = _infer_out_channels(state, arch, spatial_dims or 2, in_channels or 1, options)
    model = Model.from_zoo(arch, spatial_dims=spatial_dims or 2, in_channels=in_channels or 1,
                           out_channels=out_channels, class_names=class_names, **options)
    _load_state(model, state, path)
    model.trained = True
    return model


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}") from None


def _read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{str(path)!r} was refused: it holds pickled Python objects, not only tensors, and loading it "
            f"could run code. Save a plain state dict (`torch.save(net.state_dict(), ...)`). Detail: {err}"
        ) from None
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable PyTorch file (truncated or corrupt?): {err}") from None
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:  # training checkpoints nest the weights one level down
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict of tensors.")
    state = dict(obj)
    for prefix in _PREFIXES:  # DataParallel / wrapper modules prefix every key
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _infer_out_channels(state: Mapping[str, torch.Tensor], arch: str, spatial_dims: int, in_channels: int,
                        options: dict[str, Any]) -> int:
    """Read the class count off the tensors whose shape depends on it (found by building twice on ``meta``)."""
    with torch.device("meta"):
        one, two = (zoo.create(arch, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=n, **options)
                    .state_dict() for n in (1, 2))
    for key, tensor in one.items():
        if key in state and tensor.shape != two[key].shape and tensor.shape[0] != two[key].shape[0]:
            return int(state[key].shape[0])
    return 2


def _model_from_metadata(meta: dict[str, Any], path: Path) -> Model:
    try:
        model = Model.from_zoo(meta["arch"], spatial_dims=meta["spatial_dims"], in_channels=meta["in_channels"],
                               out_channels=meta["out_channels"], class_names=meta.get("class_names"),
                               **meta.get("options", {}))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} describes a model this version cannot build: {err}") from None
    model.axes = meta.get("axes") or model.axes
    model.pixel_size = meta.get("pixel_size")
    model.preprocessing = meta.get("preprocessing", model.preprocessing)
    model.trained = bool(meta.get("trained", False))
    model.description = meta.get("description", "")
    model.prompt = meta.get("prompt")
    model.__post_init__()  # re-validate what the file said
    return model


def _load_state(model: Model, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = model.network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        what = f"{model.arch!r} ({model.spatial_dims}D, {model.in_channels}→{model.out_channels} channels, options {model.options})"
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors the architecture does not have (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. " + ", ".join(
                f"{k}: file {a} vs model {b}" for k, a, b in wrong[:3]) + ")")
        raise ValueError(f"{str(path)!r} does not match architecture {what}: " + "; ".join(parts) + ".")
    model.network.load_state_dict(state, strict=True)
    model.network.eval()


def resolve_model(spec: "str | os.PathLike | Model", *, arch: str | None = None, **options: Any) -> Model:
    """A model from what a user typed: a :class:`Model`, a model file, a shipped model's name
    (see :mod:`segarch.pretrained`), or a zoo architecture name.

    A zoo name builds an untrained network (``model.trained`` is False): its output is meaningless
    until it is trained. ``arch`` and ``options`` are passed to :func:`load_model` for state dicts, or
    to :meth:`Model.from_zoo` for names.
    """
    if isinstance(spec, Model):
        return spec
    path = Path(spec)
    if path.suffix in (".safetensors",) + _STATE_DICT_SUFFIXES or path.exists():
        return load_model(path, arch=arch, **options)
    from segarch import pretrained

    if str(spec) in pretrained.names():
        return pretrained.load(str(spec))
    try:
        return Model.from_zoo(str(spec), **options)
    except ValueError as err:
        raise ValueError(f"`model`={str(spec)!r} is neither a model file nor a zoo architecture: {err}") from None
