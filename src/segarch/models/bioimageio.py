"""bioimage.io model packages as segarch models: read one (:func:`load_bioimageio`), and the translation of
segarch's pre-processing to bioimage.io pre-processing steps and back.

A package is a ``.zip`` (or a folder) holding ``bioimageio.yaml`` (older packages: ``rdf.yaml``), the weights
and test tensors. ``segarch export MODEL --format bioimageio`` writes one (:mod:`segarch.runtimes.export`);
this module reads such packages and others of the same shape:

- ONNX weights run through ONNX Runtime in the tiling engine (the network is an :class:`OnnxNetwork`);
- PyTorch state-dict weights are loaded with ``torch.load(weights_only=True)`` (never unpickled as objects)
  into a zoo architecture, named either by segarch's own metadata (``config.segarch``) or by an
  architecture entry ``import_from: segarch.zoo``, ``callable: create`` (nothing else is imported: a package
  never makes segarch run its code);
- other weights (TensorFlow, Keras, TorchScript, which is a pickled program) are refused with the reason.

The YAML is read with ``yaml.safe_load`` (plain data only) and everything the package declares about the
model goes through :func:`segarch.models.check_metadata`, as a model file's does.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segarch.models.files import check_metadata, load_model
from segarch.models.model import Model

__all__ = ["RDF_NAMES", "is_bioimageio_package", "load_bioimageio", "OnnxNetwork", "to_bioimageio_steps",
           "from_bioimageio_steps", "WEIGHT_PRIORITY"]

#: The description file's name in a package, the current one first.
RDF_NAMES = ("bioimageio.yaml", "rdf.yaml")
#: Which weights are used when a package holds several: ONNX first (it runs in ONNX Runtime, the fast CPU path).
WEIGHT_PRIORITY = ("onnx", "pytorch_state_dict")
_MAX_YAML_BYTES = 1 << 20
_SPATIAL = ("z", "y", "x")


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bioimage.io package: a zip or folder holding ``bioimageio.yaml``/``rdf.yaml``, or
    such a YAML file itself."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    if not path.is_file():
        return False
    if path.name in RDF_NAMES or path.name.endswith((".bioimageio.yaml", ".rdf.yaml")):
        return True
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name in archive.namelist() for name in RDF_NAMES)
    return False


class _Package:
    """The files of a package, zipped or in a folder, read by name (only names the YAML lists)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self._root = None
        else:
            self._zip = None
            self._root = path if path.is_dir() else path.parent
        rdf = next((n for n in ([path.name] if path.is_file() and self._zip is None else RDF_NAMES) if self.has(n)),
                   None)
        if rdf is None:
            raise ValueError(f"{str(path)!r} is not a bioimage.io package: it holds no {' or '.join(RDF_NAMES)}.")
        self.rdf_name = rdf

    def has(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip.namelist()
        return (self._root / name).is_file()

    def read(self, name: str, limit: int | None = None) -> bytes:
        name = str(name)
        if "://" in name:
            raise ValueError(f"{str(self.path)!r}: {name!r} is a remote file; segarch reads packages offline only "
                             "(download the package with its files first).")
        if name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise ValueError(f"{str(self.path)!r}: the file name {name!r} points outside the package.")
        if not self.has(name):
            raise ValueError(f"{str(self.path)!r} lists {name!r}, which the package does not hold.")
        if self._zip is not None:
            size = self._zip.getinfo(name).file_size
            if limit is not None and size > limit:
                raise ValueError(f"{str(self.path)!r}: {name!r} is {size} bytes, more than the {limit} allowed.")
            return self._zip.read(name)
        data = (self._root / name).read_bytes()
        if limit is not None and len(data) > limit:
            raise ValueError(f"{str(self.path)!r}: {name!r} is {len(data)} bytes, more than the {limit} allowed.")
        return data

    def rdf(self) -> dict[str, Any]:
        import yaml

        try:
            rdf = yaml.safe_load(self.read(self.rdf_name, limit=_MAX_YAML_BYTES))
        except yaml.YAMLError as err:
            raise ValueError(f"{str(self.path)!r}: {self.rdf_name} is not valid YAML: {err}") from None
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            raise ValueError(f"{str(self.path)!r}: {self.rdf_name} does not describe a model (type "
                             f"{rdf.get('type') if isinstance(rdf, dict) else rdf!r:.60}).")
        return rdf


def load_bioimageio(path: str | os.PathLike, *, weights: str | None = None) -> Model:
    """A bioimage.io model package (``.zip``, folder, or its ``bioimageio.yaml``) as a :class:`segarch.Model`.

    Args:
        path: the package.
        weights: ``"onnx"`` or ``"pytorch_state_dict"``; ``None``: the first the package holds of
            :data:`WEIGHT_PRIORITY`.

    Returns:
        A trained Model: its network a zoo architecture with the state dict loaded, or an :class:`OnnxNetwork`
        (run by ONNX Runtime in ``segarch.predict``); its pre-processing translated from the package's steps.

    Raises:
        ValueError: not a model package, a format older than 0.5, weights segarch does not load (named, with
            why), an architecture that is not segarch's, pre-processing without a segarch equivalent, or
            weights that do not match the architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No bioimage.io package at {str(path)!r}.")
    package = _Package(path)
    rdf = package.rdf()
    where = f"the bioimage.io package {str(path)!r}"
    version = str(rdf.get("format_version", ""))
    if not re.match(r"^0\.5\.", version):
        raise ValueError(f"{where} has format_version {version!r}; segarch reads bioimage.io model format 0.5.x "
                         "(update older packages with `bioimageio update-format`).")
    entries = rdf.get("weights") or {}
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{where} lists no weights.")
    choice = _weights_choice(entries, weights, where)
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{where} has {len(inputs)} input and {len(outputs)} output tensors; segarch runs models "
                         "of one input image and one output tensor.")
    meta = _metadata(rdf, inputs[0], outputs[0], entries.get("pytorch_state_dict"), where)
    entry = entries[choice]
    source = str(entry.get("source", ""))
    if choice == "onnx":
        tile = _fixed_tile(inputs[0], meta["spatial_dims"], where)
        network = OnnxNetwork(package.read(source), tile, meta["in_channels"], meta["out_channels"],
                              size_divisor=_size_divisor(meta))
        model = Model(network, meta["arch"], meta["options"], meta["spatial_dims"], meta["in_channels"],
                      meta["out_channels"], meta["class_names"])
    else:
        state = _state_dict(package.read(source), where, source)
        model = _from_state_dict(meta, state, where)
    model.axes = meta.get("axes") or model.axes
    model.pixel_size = meta.get("pixel_size")
    model.preprocessing = meta["preprocessing"]
    model.prompt, model.instance, model.bands = meta.get("prompt"), meta.get("instance"), meta.get("bands")
    model.panoptic = meta.get("panoptic")
    model.description = meta.get("description") or str(rdf.get("description", ""))
    model.trained = True
    model.name = path.name
    model.__post_init__()
    return model


def _weights_choice(entries: dict, weights: str | None, where: str) -> str:
    held = [k for k, v in entries.items() if v]
    if weights is not None:
        if weights not in WEIGHT_PRIORITY:
            raise ValueError(f"`weights` must be one of {WEIGHT_PRIORITY} (or None), got {weights!r}.")
        if weights not in held:
            raise ValueError(f"{where} holds no {weights!r} weights; it holds {', '.join(held)}.")
        return weights
    usable = [k for k in WEIGHT_PRIORITY if k in held]
    if not usable:
        reasons = {"torchscript": "TorchScript is a pickled program, which segarch never loads from a package",
                   "tensorflow_saved_model_bundle": "TensorFlow is not a segarch runtime",
                   "tensorflow_js": "TensorFlow.js is not a segarch runtime",
                   "keras_hdf5": "Keras is not a segarch runtime", "keras_v3": "Keras is not a segarch runtime"}
        why = "; ".join(f"{k}: {reasons.get(k, 'an unknown format')}" for k in held)
        raise ValueError(f"{where} holds no weights segarch can load ({why}). Supported: ONNX (run by ONNX Runtime) "
                         "and PyTorch state dicts of a segarch architecture.")
    return usable[0]


def _axes(tensor: dict, where: str) -> list[dict]:
    axes = tensor.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
        raise ValueError(f"{where}: tensor {tensor.get('id')!r} has no list of axes (bioimage.io 0.5 axes).")
    return axes


def _axis_kinds(tensor: dict, where: str) -> str:
    """The tensor's axes as a string of kinds: ``b`` batch, ``c`` channel, ``z``/``y``/``x`` space."""
    kinds = ""
    for axis in _axes(tensor, where):
        kind, name = axis.get("type"), str(axis.get("id", ""))
        if kind == "batch":
            kinds += "b"
        elif kind == "channel":
            kinds += "c"
        elif kind == "space" and name in _SPATIAL:
            kinds += name
        else:
            raise ValueError(f"{where}: tensor {tensor.get('id')!r} has a {kind} axis {name!r}; segarch runs "
                             "tensors of axes batch, channel and space z/y/x.")
    if kinds not in ("bcyx", "bczyx"):
        raise ValueError(f"{where}: tensor {tensor.get('id')!r} has axes {kinds!r} (b batch, c channel); segarch "
                         "needs batch, channel, then y, x or z, y, x.")
    return kinds


def _channels(tensor: dict, where: str) -> list[str]:
    axis = next(a for a in _axes(tensor, where) if a.get("type") == "channel")
    names = axis.get("channel_names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: the channel axis of {tensor.get('id')!r} names no channels.")
    return [str(n) for n in names]


def _metadata(rdf: dict, tensor_in: dict, tensor_out: dict, state_entry, where: str) -> dict[str, Any]:
    """What the package says about the model, checked as a model file's metadata is."""
    kinds = _axis_kinds(tensor_in, where)
    _axis_kinds(tensor_out, where)
    dims = len(kinds) - 2
    config = rdf.get("config") if isinstance(rdf.get("config"), dict) else {}
    ours = config.get("segarch")
    if isinstance(ours, dict):  # written by segarch: everything a model file holds
        meta = dict(ours)
    else:
        arch, options = "onnx", {}
        architecture = (state_entry or {}).get("architecture") if isinstance(state_entry, dict) else None
        if isinstance(architecture, dict):
            arch, options = _zoo_architecture(architecture, where)
        out_names = _channels(tensor_out, where)
        meta = {"arch": arch, "options": options, "spatial_dims": dims,
                "in_channels": len(_channels(tensor_in, where)), "out_channels": len(out_names),
                "class_names": out_names, "axes": "C" + kinds[2:].upper(),
                "preprocessing": from_bioimageio_steps(tensor_in.get("preprocessing") or [], where),
                "trained": True, "description": str(rdf.get("description", ""))[:2000]}
    meta = check_metadata(meta, where=where)
    if meta["spatial_dims"] != dims:
        raise ValueError(f"{where}: its segarch metadata says {meta['spatial_dims']}D, its input tensor is {dims}D.")
    return meta


def _zoo_architecture(architecture: dict, where: str) -> tuple[str, dict]:
    """A state dict's architecture entry, accepted only as ``segarch.zoo.create`` with plain arguments."""
    if architecture.get("import_from") != "segarch.zoo" or architecture.get("callable") != "create":
        origin = architecture.get("import_from") or architecture.get("source") or "?"
        raise ValueError(f"{where}: its PyTorch architecture is {architecture.get('callable')!r} from {origin!r}; "
                         "segarch builds only its own architectures (import_from: segarch.zoo, callable: create) "
                         "and never runs code from a package. Use its ONNX weights if it has them.")
    kwargs = dict(architecture.get("kwargs") or {})
    arch = kwargs.pop("name", None)
    for key in ("spatial_dims", "in_channels", "out_channels"):
        kwargs.pop(key, None)
    return arch, kwargs


def _fixed_tile(tensor: dict, dims: int, where: str) -> tuple[int, ...]:
    sizes = [a.get("size") for a in _axes(tensor, where) if a.get("type") == "space"]
    if len(sizes) != dims or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"{where}: segarch runs ONNX weights of a fixed tile size; the input's spatial sizes are "
                         f"{sizes!r}. Use its PyTorch state-dict weights instead.")
    return tuple(sizes)


def _size_divisor(meta: dict) -> int:
    """What the network's input sizes must be multiples of: the architecture's, as built with these options (a
    skeleton on the ``meta`` device, no memory), so the engine tiles as it does for the PyTorch network."""
    from segarch import zoo

    if meta["arch"] not in zoo.names():
        return 1
    try:
        with torch.device("meta"):
            network = zoo.create(meta["arch"], spatial_dims=meta["spatial_dims"], in_channels=meta["in_channels"],
                                 out_channels=meta["out_channels"], **meta["options"])
    except (TypeError, ValueError):
        return zoo.card(meta["arch"]).size_divisor
    return int(getattr(network, "size_divisor", None) or zoo.card(meta["arch"]).size_divisor or 1)


def _state_dict(data: bytes, where: str, name: str) -> dict[str, torch.Tensor]:
    import pickle

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{where}: {name!r} was refused: it holds pickled Python objects, not only tensors, and "
                         f"loading it could run code. Detail: {str(err).splitlines()[0][:200]}") from None
    except Exception as err:
        raise ValueError(f"{where}: {name!r} is not a readable PyTorch state dict: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: {name!r} holds a {type(state).__name__}, not a state dict of tensors.")
    return state


def _from_state_dict(meta: dict, state: dict[str, torch.Tensor], where: str) -> Model:
    """The zoo network the metadata names, the state dict loaded (shapes checked before anything is allocated)."""
    import tempfile

    from safetensors.torch import save_file

    if meta["arch"] == "onnx":
        raise ValueError(f"{where} has PyTorch weights but names no segarch architecture (no config.segarch, no "
                         "architecture from segarch.zoo); use its ONNX weights.")
    # load_model checks the tensors' shapes against the architecture on the meta device before building it
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        try:
            return load_model(path, arch=meta["arch"], spatial_dims=meta["spatial_dims"],
                              in_channels=meta["in_channels"], out_channels=meta["out_channels"],
                              class_names=meta.get("class_names"), **meta["options"])
        except ValueError as err:
            raise ValueError(f"{where}: {str(err).replace(repr(str(path)), 'its state dict')}") from None


class OnnxNetwork(nn.Module):
    """ONNX weights as a network: ``segarch.predict`` runs them in ONNX Runtime (:mod:`segarch.runtimes`);
    called as a module, it runs them too (CPU, float32), padding a smaller tile up to the graph's fixed size.

    The graph is kept as a ``uint8`` buffer, so the weights' hash (what resumed results and caches are keyed
    by) tells two ONNX models apart.

    Attributes:
        tile_shape: the spatial input size the graph was exported for.
    """

    def __init__(self, graph: bytes, tile_shape: tuple[int, ...], in_channels: int, out_channels: int,
                 size_divisor: int = 1) -> None:
        super().__init__()
        self.register_buffer("onnx_graph", torch.frombuffer(bytearray(graph), dtype=torch.uint8))
        self.tile_shape = tuple(int(t) for t in tile_shape)
        self.spatial_dims = len(self.tile_shape)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.size_divisor = int(size_divisor)
        self._sessions: dict[int, Any] = {}

    def session(self, threads: int = 1):
        """An ONNX Runtime session of the graph (one per thread count, made once)."""
        if threads not in self._sessions:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ImportError("ONNX weights need ONNX Runtime, which is not installed: pip install "
                                  "'napari-segarch[fast]' (or: pip install onnxruntime).") from None
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, int(threads))
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._sessions[threads] = ort.InferenceSession(self.onnx_graph.cpu().numpy().tobytes(),
                                                           sess_options=options, providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def run(self, batch: np.ndarray, threads: int = 1) -> np.ndarray:
        """Logits of ``batch`` ``(B, C, *tile)`` as float32 NumPy; a tile smaller than :attr:`tile_shape` is
        padded (mirrored) up to it and the logits cropped back."""
        batch = np.asarray(batch, dtype=np.float32)
        spatial = batch.shape[2:]
        if len(spatial) != self.spatial_dims or any(s > t for s, t in zip(spatial, self.tile_shape)):
            raise ValueError(f"`tile` {tuple(spatial)} is larger than the ONNX graph's fixed tile "
                             f"{self.tile_shape}: pass `tile`={self.tile_shape} or smaller.")
        pad = [(0, 0), (0, 0)] + [(0, t - s) for s, t in zip(spatial, self.tile_shape)]
        if any(p for _, p in pad):
            mode = "reflect" if all(s > t - s for s, t in zip(spatial, self.tile_shape)) else "edge"
            batch = np.pad(batch, pad, mode=mode)
        session = self.session(threads)
        out = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch)})[0]
        return np.ascontiguousarray(out[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)],
                                    dtype=np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run(x.detach().float().cpu().numpy(), threads=torch.get_num_threads())
        return torch.from_numpy(out).to(x.device)


# --- pre-processing: segarch's MONAI steps <-> bioimage.io steps --------------------------------------------

def to_bioimageio_steps(preprocessing: list[dict[str, Any]], axes: str) -> list[dict[str, Any]]:
    """segarch's pre-processing steps as bioimage.io 0.5 pre-processing steps of an input of ``axes``
    (``"CYX"``/``"CZYX"``; the package's tensor has a batch axis in front).

    Raises:
        ValueError: a step with no bioimage.io equivalent (named, with the ones that have one).
    """
    spatial = [a.lower() for a in axes if a != "C"]
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    for i, step in enumerate(preprocessing):
        name, kw = step["_target_"], step
        per_channel = bool(kw.get("channel_wise", False))
        reduce = spatial if per_channel else ["channel", *spatial]
        if name == "ScaleIntensityRangePercentiles" and not kw.get("relative", False):
            steps.append({"id": "scale_range", "kwargs": {"axes": reduce, "min_percentile": float(kw["lower"]),
                                                          "max_percentile": float(kw["upper"])}})
            b_min, b_max = kw.get("b_min", 0.0), kw.get("b_max", 1.0)
            if b_min is not None and b_max is not None and (b_min, b_max) != (0.0, 1.0):
                steps.append(_linear(float(b_max) - float(b_min), float(b_min)))
            if kw.get("clip", False) and b_min is not None and b_max is not None:
                steps.append({"id": "clip", "kwargs": {"min": float(b_min), "max": float(b_max)}})
        elif name == "ScaleIntensityRange":
            gain = (float(kw["b_max"]) - float(kw["b_min"])) / (float(kw["a_max"]) - float(kw["a_min"]))
            steps.append(_linear(gain, float(kw["b_min"]) - float(kw["a_min"]) * gain))
            if kw.get("clip", False):
                low, high = sorted((float(kw["b_min"]), float(kw["b_max"])))
                steps.append({"id": "clip", "kwargs": {"min": low, "max": high}})
        elif name == "NormalizeIntensity" and not kw.get("nonzero", False):
            mean, std = kw.get("subtrahend"), kw.get("divisor")
            if mean is None and std is None:
                steps.append({"id": "zero_mean_unit_variance", "kwargs": {"axes": reduce, "eps": 1e-8}})
            elif mean is not None and std is not None and np.size(mean) == 1 and np.size(std) == 1:
                steps.append({"id": "fixed_zero_mean_unit_variance",
                              "kwargs": {"mean": float(np.ravel(mean)[0]), "std": float(np.ravel(std)[0])}})
            else:
                raise ValueError(_untranslatable(i, name, "a per-channel or one-sided fixed normalisation"))
        elif name == "ShiftIntensity":
            steps.append(_linear(1.0, float(kw["offset"])))
        else:
            raise ValueError(_untranslatable(i, name, "these arguments" if name in (
                "ScaleIntensityRangePercentiles", "NormalizeIntensity") else "this transform"))
    return steps


def _linear(gain: float, offset: float) -> dict[str, Any]:
    return {"id": "scale_linear", "kwargs": {"gain": gain, "offset": offset}}


def _untranslatable(i: int, name: str, what: str) -> str:
    return (f"`preprocessing[{i}]` ({name}) has no bioimage.io pre-processing step for {what}; bioimage.io "
            "packages take ScaleIntensityRangePercentiles (absolute), ScaleIntensityRange, NormalizeIntensity "
            "(whole-image or one fixed mean/std, not nonzero) and ShiftIntensity.")


def from_bioimageio_steps(steps: list, where: str) -> list[dict[str, Any]]:
    """bioimage.io 0.5 pre-processing steps as segarch's MONAI steps (for packages not written by segarch).

    Raises:
        ValueError: a step without a segarch equivalent (named).
    """
    out: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        kind = step.get("id") if isinstance(step, dict) else None
        kw = step.get("kwargs") or {} if isinstance(step, dict) else {}
        per_channel = "channel" not in (kw.get("axes") or ["channel"])
        if kind == "ensure_dtype":
            continue
        if kind == "scale_range" and kw.get("reference_tensor") is None:
            out.append({"_target_": "ScaleIntensityRangePercentiles", "lower": float(kw.get("min_percentile", 0.0)),
                        "upper": float(kw.get("max_percentile", 100.0)), "b_min": 0.0, "b_max": 1.0,
                        "clip": False, "channel_wise": per_channel})
        elif kind == "zero_mean_unit_variance":
            out.append({"_target_": "NormalizeIntensity", "channel_wise": per_channel})
        elif kind == "fixed_zero_mean_unit_variance" and np.size(kw.get("mean")) == 1:
            out.append({"_target_": "NormalizeIntensity", "subtrahend": [float(np.ravel(kw["mean"])[0])],
                        "divisor": [float(np.ravel(kw["std"])[0])]})
        elif kind == "scale_linear" and np.size(kw.get("gain", 1.0)) == 1 and np.size(kw.get("offset", 0.0)) == 1:
            gain, offset = float(np.ravel(kw.get("gain", 1.0))[0]), float(np.ravel(kw.get("offset", 0.0))[0])
            # y = gain·x + offset, as ScaleIntensityRange from [0, 1] to [offset, gain + offset]
            out.append({"_target_": "ScaleIntensityRange", "a_min": 0.0, "a_max": 1.0, "b_min": offset,
                        "b_max": gain + offset, "clip": False})
        elif kind == "clip" and kw.get("min") is not None and kw.get("max") is not None:
            low, high = float(kw["min"]), float(kw["max"])
            out.append({"_target_": "ThresholdIntensity", "threshold": low, "above": True, "cval": low})
            out.append({"_target_": "ThresholdIntensity", "threshold": high, "above": False, "cval": high})
        else:
            raise ValueError(f"{where}: input pre-processing step {i} ({kind!r} with {kw!r:.120}) has no segarch "
                             "equivalent; segarch reads scale_range, zero_mean_unit_variance, "
                             "fixed_zero_mean_unit_variance, scale_linear, clip and ensure_dtype.")
    return out
