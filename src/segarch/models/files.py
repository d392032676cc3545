"""Model files: one ``.safetensors`` file per model, or a plain PyTorch state dict.

Our files are safetensors (no code is ever executed on load) whose metadata holds the
architecture, its options and everything in :meth:`segarch.Model.metadata`. Plain state dicts
(``.pt``/``.pth``) from elsewhere load with ``torch.load(weights_only=True)`` when the user names
the architecture; pickled Python objects are refused.

A model file is untrusted data: :func:`check_metadata` validates everything it declares before
anything is built (the pre-processing against :data:`segarch.preprocessing.ALLOWED_TRANSFORMS`,
options as plain bounded values), and the network is first built on PyTorch's ``meta`` device
(no memory) and compared with the tensor shapes the file really holds, so a file declaring absurd
layer widths is refused before any allocation.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from segarch import zoo
from segarch.models.model import Model, check_panoptic
from segarch.preprocessing import check_preprocessing

__all__ = ["save_model", "load_model", "read_metadata", "check_metadata", "FORMAT", "FORMAT_VERSION"]

FORMAT = "segarch"
FORMAT_VERSION = "1"
_STATE_DICT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "network", "net")
_PREFIXES = ("module.", "network.", "model.")
# What a model file may declare: plain values, bounded so a hostile file cannot ask for absurd networks.
_MAX_INT = 2 ** 16                  # widths, sizes, depths (the zoo's largest is 4096)
_MAX_LIST = 64
_MAX_DEPTH = 4
_MAX_CHANNELS = 4096
_TEXT = re.compile(r"^[A-Za-z0-9_.\- ]{0,64}$")   # option strings are names ("batch", "bilinear")
_PROMPT_KEYS = {"size": (int, 4, 1024), "margin": (float, 0.0, 10.0), "min_margin": (int, 0, 1024),
                "sigma": (float, 1e-4, 1.0), "corrections": (bool, False, True)}
# An instance model's decoder settings (segarch.instances.decode), as plain bounded values. The decoder is
# named, never imported from the file: the name must be one of these families, the rest numbers in range.
_INSTANCE_DECODERS = ("distance", "boundary")
_INSTANCE_KEYS = {"bins": (int, 2, 32), "seed_threshold": (float, 1e-6, 1 - 1e-6),
                  "foreground_threshold": (float, 1e-6, 1 - 1e-6), "min_size": (int, 0, 2 ** 31),
                  "width": (float, 1.0, 64.0), "seed_h": (float, 0.0, 1 - 1e-6)}


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
    meta = check_metadata(model.metadata(), where="the model to save")  # a loaded file's payload never spreads
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.network.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "segarch": json.dumps(meta)}
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
    """The segarch metadata of a ``.safetensors`` file, checked by :func:`check_metadata`, or ``None`` for
    a foreign safetensors file.

    Raises:
        ValueError: unreadable or corrupt, or metadata that :func:`check_metadata` refuses (the message
            names the entry, e.g. the pre-processing step).
    """
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
        raise ValueError(f"{str(path)!r} has segarch metadata without an 'arch' entry: {meta!r:.200}")
    return check_metadata(meta, where=repr(str(path)))


def check_metadata(meta: dict[str, Any], *, where: str = "the model file") -> dict[str, Any]:
    """Validate what a model file declares (see :meth:`segarch.Model.metadata`); returns a clean copy.

    Nothing is built, imported or run: the architecture must be a zoo name, the options plain bounded
    values (numbers, names, lists), channels and classes bounded, and the pre-processing only named
    MONAI transforms with plain arguments (:func:`segarch.preprocessing.check_preprocessing`).

    Raises:
        ValueError: naming ``where``, the entry and what is allowed.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"The segarch metadata of {where} must be a JSON object, got {type(meta).__name__}.")
    clean = dict(meta)
    arch = meta.get("arch")
    if not isinstance(arch, str) or not _TEXT.match(arch):
        raise ValueError(f"{where}: 'arch' must be a zoo architecture name, got {arch!r:.120}.")
    options = meta.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"{where}: 'options' must be a JSON object of architecture options, got {options!r:.120}.")
    clean["options"] = {key: _plain(value, f"{where}: option {key!r}") for key, value in options.items()}
    for key in options:
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{where}: option names must be plain identifiers, got {key!r:.120}.")
    for key, low, high in (("spatial_dims", 2, 3), ("in_channels", 1, _MAX_CHANNELS), ("out_channels", 1, _MAX_CHANNELS)):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{where}: {key!r} must be an integer from {low} to {high}, got {value!r:.120}.")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) > _MAX_CHANNELS
                              or not all(isinstance(n, str) and len(n) <= 200 for n in names)):
        raise ValueError(f"{where}: 'class_names' must be a list of short strings, got {names!r:.120}.")
    axes = meta.get("axes")
    if axes is not None and (not isinstance(axes, str) or len(axes) > 5 or set(axes) - set("TCZYX")):
        raise ValueError(f"{where}: 'axes' must be letters from TCZYX, got {axes!r:.120}.")
    size = meta.get("pixel_size")
    if size is not None and (not isinstance(size, list) or len(size) > 3 or not all(
            _is_number(v) and math.isfinite(v) and v > 0 for v in size)):
        raise ValueError(f"{where}: 'pixel_size' must be a list of positive numbers, got {size!r:.120}.")
    bands = meta.get("bands")
    if bands is not None and (not isinstance(bands, list) or len(bands) > _MAX_CHANNELS
                              or not all(isinstance(b, str) and 0 < len(b) <= 100 for b in bands)):
        raise ValueError(f"{where}: 'bands' must be a list of short band names, got {bands!r:.120}.")
    clean["preprocessing"] = check_preprocessing(meta.get("preprocessing", []), where=where)
    clean["prompt"] = _check_prompt(meta.get("prompt"), where)
    clean["instance"] = _check_instance(meta.get("instance"), where)
    clean["panoptic"] = check_panoptic(meta.get("panoptic"), meta.get("out_channels"), f"{where}: 'panoptic'")
    for key in ("trained",):
        if not isinstance(meta.get(key, False), bool):
            raise ValueError(f"{where}: {key!r} must be true or false, got {meta.get(key)!r:.120}.")
    if not isinstance(meta.get("description", ""), str):
        raise ValueError(f"{where}: 'description' must be text, got {type(meta.get('description')).__name__}.")
    return clean


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value, label: str, depth: int = 0):
    """A JSON option value that is plain data of bounded size, or a ValueError naming it."""
    if value is None or isinstance(value, bool):
        return value
    if _is_number(value):
        if not math.isfinite(value) or abs(value) > _MAX_INT:
            raise ValueError(f"{label} = {value!r} is out of bounds: numbers in a model file's options must be "
                             f"finite and at most {_MAX_INT} in size.")
        return value
    if isinstance(value, str):
        if not _TEXT.match(value):
            raise ValueError(f"{label} = {value!r:.120} was refused: option strings must be plain names "
                             "(letters, digits, '_', '.', '-', at most 64 characters).")
        return value
    if isinstance(value, (list, tuple)) and depth < _MAX_DEPTH:
        if len(value) > _MAX_LIST:
            raise ValueError(f"{label} has {len(value)} items; at most {_MAX_LIST} are allowed.")
        return [_plain(v, label, depth + 1) for v in value]
    if isinstance(value, dict) and depth < _MAX_DEPTH and "_target_" not in value:
        if len(value) > _MAX_LIST:
            raise ValueError(f"{label} has {len(value)} entries; at most {_MAX_LIST} are allowed.")
        return {str(k): _plain(v, f"{label}[{k!r}]", depth + 1) for k, v in value.items()}
    raise ValueError(f"{label} = {value!r:.120} was refused: options must be numbers, booleans, names, or "
                     f"lists and objects of them (nested at most {_MAX_DEPTH} deep).")


def _check_prompt(prompt, where: str):
    if prompt is None:
        return None
    if not isinstance(prompt, dict) or set(prompt) - set(_PROMPT_KEYS):
        raise ValueError(f"{where}: 'prompt' must be an object with keys from {', '.join(_PROMPT_KEYS)}, "
                         f"got {prompt!r:.120}.")
    for key, value in prompt.items():
        kind, low, high = _PROMPT_KEYS[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: prompt {key!r} must be true or false, got {value!r:.120}.")
            continue
        ok = _is_number(value) and (kind is float or isinstance(value, int)) and math.isfinite(value)
        if not ok or not low <= value <= high:
            raise ValueError(f"{where}: prompt {key!r} must be a{'n integer' if kind is int else ' number'} from "
                             f"{low} to {high}, got {value!r:.120}.")
    return dict(prompt)


def _check_instance(instance, where: str):
    """An instance model's decoder settings: a known decoder name and bounded numbers, nothing else."""
    if instance is None:
        return None
    if not isinstance(instance, dict) or instance.get("decoder") not in _INSTANCE_DECODERS:
        raise ValueError(f"{where}: 'instance' must be an object whose 'decoder' is one of "
                         f"{', '.join(_INSTANCE_DECODERS)}, got {instance!r:.120}.")
    unknown = set(instance) - set(_INSTANCE_KEYS) - {"decoder"}
    if unknown:
        raise ValueError(f"{where}: 'instance' was refused: unknown settings {sorted(map(str, unknown))!r:.120}; "
                         f"allowed: decoder, {', '.join(_INSTANCE_KEYS)}.")
    for key, value in instance.items():
        if key == "decoder":
            continue
        kind, low, high = _INSTANCE_KEYS[key]
        ok = _is_number(value) and (kind is float or isinstance(value, int)) and math.isfinite(value)
        if not ok or not low <= value <= high:
            raise ValueError(f"{where}: instance {key!r} must be a{'n integer' if kind is int else ' number'} from "
                             f"{low:g} to {high:g}, got {value!r:.120}.")
    return dict(instance)


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
        if meta is not None:
            if arch is not None and zoo.card(arch).name != meta["arch"]:
                raise ValueError(
                    f"{str(path)!r} holds a {meta['arch']!r} model, not {arch!r} as requested by `arch`."
                )
            model = _model_from_metadata(meta, path, _safetensors_shapes(path))
            _load_state(model, _read_safetensors(path), path)
            model.name = path.name
            return model
        state = _read_safetensors(path)
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
    _check_shapes_before_building(arch, dict(spatial_dims=spatial_dims or 2, in_channels=in_channels or 1,
                                             out_channels=out_channels, **options),
                                  {k: tuple(v.shape) for k, v in state.items()}, path)
    model = Model.from_zoo(arch, spatial_dims=spatial_dims or 2, in_channels=in_channels or 1,
                           out_channels=out_channels, class_names=class_names, **options)
    _load_state(model, state, path)
    model.trained = True
    model.name = path.name
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


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the file's header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}") from None


def _check_shapes_before_building(arch: str, config: dict[str, Any], shapes: Mapping[str, tuple[int, ...]],
                                  path: Path) -> None:
    """Build ``arch`` on the ``meta`` device (no memory) and compare it with the file's tensors.

    What a file declares is bounded by what it holds: a file asking for absurd widths is refused
    here, naming the tensors that differ, before a real network is allocated.
    """
    try:
        with torch.device("meta"):
            skeleton = zoo.create(arch, **config)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} describes a model this version cannot build: {err}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    what = (f"{arch!r} ({config.get('spatial_dims')}D, {config.get('in_channels')}→{config.get('out_channels')} "
            f"channels, options { {k: v for k, v in config.items() if k not in _DIMS} })")
    _raise_if_mismatched(expected, dict(shapes), what, path)


_DIMS = ("spatial_dims", "in_channels", "out_channels")


def _model_from_metadata(meta: dict[str, Any], path: Path, shapes: Mapping[str, tuple[int, ...]]) -> Model:
    config = {"spatial_dims": meta["spatial_dims"], "in_channels": meta["in_channels"],
              "out_channels": meta["out_channels"], **meta.get("options", {})}
    _check_shapes_before_building(meta["arch"], config, shapes, path)
    try:
        model = Model.from_zoo(meta["arch"], class_names=meta.get("class_names"), **config)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} describes a model this version cannot build: {err}") from None
    model.axes = meta.get("axes") or model.axes
    model.pixel_size = meta.get("pixel_size")
    model.preprocessing = meta.get("preprocessing", model.preprocessing)
    model.trained = bool(meta.get("trained", False))
    model.description = meta.get("description", "")
    model.prompt = meta.get("prompt")
    model.instance = meta.get("instance")
    model.panoptic = meta.get("panoptic")
    model.bands = meta.get("bands")
    model.__post_init__()  # re-validate what the file said
    return model


def _load_state(model: Model, state: Mapping[str, torch.Tensor], path: Path) -> None:
    what = f"{model.arch!r} ({model.spatial_dims}D, {model.in_channels}→{model.out_channels} channels, options {model.options})"
    _raise_if_mismatched({k: tuple(v.shape) for k, v in model.network.state_dict().items()},
                         {k: tuple(v.shape) for k, v in state.items()}, what, path)
    model.network.load_state_dict(state, strict=True)
    model.network.eval()


def _raise_if_mismatched(expected: Mapping[str, tuple], found: Mapping[str, tuple], what: str, path: Path) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [(k, found[k], v) for k, v in expected.items() if k in found and found[k] != v]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors the architecture does not have (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. " + ", ".join(
                f"{k}: file {a} vs model {b}" for k, a, b in wrong[:3]) + ")")
        raise ValueError(f"{str(path)!r} does not match architecture {what}: " + "; ".join(parts) + ".")
