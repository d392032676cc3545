"""Models for other tools: an ONNX file, or a bioimage.io model package.

:func:`export_model` writes either. The ONNX graph is the one ``segarch.predict(..., runtime="onnxruntime")``
runs (:func:`segarch.runtimes.onnx.onnx_runner`: exported once per weights and tile, checked against eager
PyTorch before it is kept). A bioimage.io package (format 0.5) holds:

- ``bioimageio.yaml``: the description, the pre-processing as bioimage.io steps (``scale_range``, ``clip``,
  ``zero_mean_unit_variance``, ...), the classes as the output's channel names, and everything a segarch
  model file holds under ``config.segarch`` (so the package loads back as the same model);
- ``weights.onnx`` (ONNX) and ``weights.pt`` (a plain PyTorch state dict whose architecture is
  ``segarch.zoo.create`` with the zoo name and options);
- ``test_input.npy``/``test_output.npy``: a generated image and the network's logits for it (after the
  pre-processing), which bioimage.io tools run to check the package;
- ``cover.png`` (the test image beside its labels) and ``README.md``.

Examples::

    >>> from segarch.runtimes.export import export_model
    >>> export_model("unet.nuclei2d", "unet.onnx")                               # doctest: +SKIP
    >>> export_model("cells.safetensors", "cells.zip", format="bioimageio")      # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from segarch.models import resolve
from segarch.models.bioimageio import to_bioimageio_steps
from segarch.runtimes.onnx import OPSET, ExportError, export_onnx, onnx_runner, onnxruntime_available

__all__ = ["FORMATS", "export_model", "default_export_tile"]

log = logging.getLogger("segarch.runtimes")

FORMATS = ("onnx", "bioimageio")
#: The bioimage.io model format written (read by bioimage.io tools of spec 0.5.x).
BIOIMAGEIO_FORMAT_VERSION = "0.5.4"


def default_export_tile(model) -> tuple[int, ...]:
    """The tile an export is made for by default: ``segarch.predict``'s default tile (256² in 2D, 96³ in 3D,
    rounded up to the model's size divisor)."""
    base = 256 if model.spatial_dims == 2 else 96
    divisor = model.size_divisor
    return (-(-base // divisor) * divisor,) * model.spatial_dims


def export_model(model: Any, out: str | os.PathLike, *, format: str = "onnx", tile: int | Sequence[int] | None = None,
                 overwrite: bool = False, authors: Sequence[str] = ("segarch user",), license: str = "MIT",
                 sample: np.ndarray | None = None, name: str | None = None) -> Path:
    """Write ``model`` for other tools; returns the path written.

    Args:
        model: a :class:`segarch.Model`, or anything :func:`segarch.models.resolve` takes (a shipped model such
            as ``"unet.nuclei2d"``, a model file, a zoo architecture: untrained).
        out: for ``"onnx"``, the ``.onnx`` file; for ``"bioimageio"``, a ``.zip`` (or a folder).
        format: ``"onnx"`` or ``"bioimageio"``.
        tile: the spatial input size of the graph (one int or one per axis; default
            :func:`default_export_tile`); the batch size is free.
        overwrite: replace an existing ``out``.
        authors, license, name: bioimage.io: who trained it, the licence (an SPDX id), the package's name.
        sample: bioimage.io: the test image ``(C, *tile)`` (default: a generated nuclei image).

    Raises:
        ValueError: a bad parameter (named), an existing ``out`` without ``overwrite``, or a pre-processing step
            with no bioimage.io equivalent.
        segarch.runtimes.ExportError: the architecture does not export to ONNX (named, with the reason).
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    model = resolve(model)
    if not model.trained:
        log.warning("exporting %s, an untrained network (a zoo architecture, not trained weights)", model.arch)
    out = Path(out)
    if format == "onnx" and out.suffix != ".onnx":
        raise ValueError(f"`out` must end in '.onnx' for `format`='onnx', got {str(out)!r}.")
    if out.exists() and not overwrite:
        raise ValueError(f"`out` {str(out)!r} exists; pass `overwrite`=True to replace it.")
    tile = _check_tile(tile, model)
    graph = _verified_graph(model, tile)
    if format == "onnx":
        _replace(out, lambda tmp: Path(tmp).write_bytes(graph))
        return out
    files = _bioimageio_files(model, graph, tile, authors=list(authors), license=license, sample=sample,
                              name=name or _package_name(model))
    if out.suffix == ".zip":
        _replace(out, lambda tmp: _write_zip(tmp, files))
    else:
        _replace(out, lambda tmp: _write_folder(tmp, files), folder=True)
    return out


def _check_tile(tile, model) -> tuple[int, ...]:
    if tile is None:
        return default_export_tile(model)
    tiles = (tile,) * model.spatial_dims if isinstance(tile, (int, np.integer)) else tuple(tile)
    divisor = model.size_divisor
    if len(tiles) != model.spatial_dims or not all(isinstance(t, (int, np.integer)) and t > 0 for t in tiles):
        raise ValueError(f"`tile` must be a positive int or {model.spatial_dims} positive ints, got {tile!r}.")
    if any(t % divisor for t in tiles):
        raise ValueError(f"`tile`={tile!r} must be a multiple of the model's size_divisor {divisor}.")
    return tuple(int(t) for t in tiles)


def _verified_graph(model, tile: tuple[int, ...]) -> bytes:
    """The ONNX graph, checked against eager PyTorch by ONNX Runtime when it is installed (and cached)."""
    try:
        if onnxruntime_available():
            return Path(onnx_runner(model, tile).path).read_bytes()
        log.warning("ONNX Runtime is not installed: the ONNX export of %s is not checked against PyTorch", model.arch)
        return export_onnx(model, tile)
    except ExportError as err:  # the runtimes' advice (use torch) is about predicting, not exporting
        raise ExportError(str(err).replace("; use `runtime`='torch'.", ": it runs in segarch with `runtime`="
                                           "'torch', but cannot be exported.")) from None


def _replace(out: Path, write, folder: bool = False) -> None:
    """Write through a temporary name beside ``out`` and rename: no half-written export is ever left."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.")) / out.name
    try:
        write(tmp)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists() and folder:
            out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def _write_folder(path: Path, files: dict[str, bytes]) -> None:
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)


def _package_name(model) -> str:
    return f"segarch {model.name or model.arch}".replace(".safetensors", "")


def _rdf_name(name: str) -> str:
    """``name`` in the characters a bioimage.io name may hold (letters, digits, space, ``_+-()``)."""
    return re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip()[:128] or "segarch model"


def _identifier(text: str, fallback: str) -> str:
    """A bioimage.io identifier (letters, digits, ``_``, starting with a letter) made from ``text``."""
    word = re.sub(r"\W+", "_", text).strip("_").lower()
    return word if re.match(r"^[a-z]\w*$", word or "") else fallback


def _sample(model, tile: tuple[int, ...], sample) -> np.ndarray:
    if sample is None:
        from segarch.synthetic import nuclei

        image, _ = nuclei(tile, seed=int(np.random.default_rng().integers(2 ** 31)))
        return np.repeat(image[None], model.in_channels, axis=0).astype(np.float32)
    sample = np.asarray(sample, dtype=np.float32)
    if sample.shape != (model.in_channels, *tile):
        raise ValueError(f"`sample` must have shape {(model.in_channels, *tile)} (channels, then the tile), got "
                         f"{sample.shape}.")
    return sample


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _state_dict_bytes(model) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}, buffer)
    return buffer.getvalue()


def _cover(image: np.ndarray, labels: np.ndarray) -> bytes:
    """The first channel (middle slice in 3D) beside its labels, as a 2:1 PNG."""
    from PIL import Image

    if image.ndim == 4:
        image, labels = image[:, image.shape[1] // 2], labels[labels.shape[0] // 2]
    grey = image[0]
    low, high = np.percentile(grey, (1, 99.5))
    grey = (np.clip((grey - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    palette = np.array([[0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178],
                        [213, 94, 0], [204, 121, 167]], np.uint8)
    coloured = palette[labels % len(palette)]
    picture = np.concatenate([np.repeat(grey[..., None], 3, axis=-1), coloured], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(picture).resize((512, 256), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def _citation(card) -> dict[str, str]:
    """The architecture's paper as a bioimage.io citation (a URL from its arXiv id or DOI)."""
    reference = card.reference
    if reference.startswith("arXiv:"):
        url = f"https://arxiv.org/abs/{reference.split(':', 1)[1]}"
    elif reference.startswith("10."):
        url = f"https://doi.org/{reference}"
    else:
        url = reference if reference.startswith("http") else f"https://arxiv.org/a/search?query={card.name}"
    return {"text": f"{card.paper} ({card.year})", "url": url}


def _bioimageio_files(model, graph: bytes, tile: tuple[int, ...], *, authors: list[str], license: str, sample,
                      name: str) -> dict[str, bytes]:
    import yaml

    from segarch import zoo

    steps = to_bioimageio_steps(model.preprocessing, model.axes)
    image = _sample(model, tile, sample)
    network = model.network.eval()
    with torch.inference_mode():
        logits = network(torch.from_numpy(model.preprocess(image))[None]).float().cpu().numpy()
    space = [a.lower() for a in model.axes if a != "C"]
    bands = model.bands or [f"channel{i}" for i in range(model.in_channels)]
    channel_names = [_identifier(n, f"channel{i}") for i, n in enumerate(bands)]
    class_names = [_identifier(n, f"class{i}") for i, n in enumerate(model.class_names)]
    if len(set(class_names)) != len(class_names):
        class_names = [f"class{i}" for i in range(len(class_names))]
    if len(set(channel_names)) != len(channel_names):
        channel_names = [f"channel{i}" for i in range(len(channel_names))]
    input_axes = [{"type": "batch"}, {"type": "channel", "channel_names": channel_names},
                  *({"type": "space", "id": a, "size": int(t)} for a, t in zip(space, tile))]
    output_axes = [{"type": "batch"}, {"type": "channel", "channel_names": class_names},
                   *({"type": "space", "id": a, "size": int(t)} for a, t in zip(space, tile))]
    card = zoo.card(model.arch) if model.arch in zoo.names() else None
    metadata = dict(model.metadata(), trained=bool(model.trained))
    from segarch import __version__

    rdf = {
        "format_version": BIOIMAGEIO_FORMAT_VERSION,
        "type": "model",
        "name": _rdf_name(name),
        "description": (model.description or f"{card.full_name if card else model.arch} "
                        f"({model.spatial_dims}D semantic segmentation), exported by segarch")[:1024],
        "authors": [{"name": a} for a in authors],
        "cite": [_citation(card)] if card else [],
        "license": license,
        "tags": ["segarch", model.arch, f"{model.spatial_dims}d", "semantic-segmentation"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [{"id": "input", "description": "the image, channels first", "axes": input_axes,
                    "test_tensor": {"source": "test_input.npy"},
                    "data": {"type": "float32"}, "preprocessing": steps}],
        "outputs": [{"id": "logits", "description": "one score per class; the labels are their argmax",
                     "axes": output_axes, "test_tensor": {"source": "test_output.npy"},
                     "data": {"type": "float32"}}],
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt",
                "architecture": {"callable": "create", "import_from": "segarch.zoo",
                                 "kwargs": {"name": model.arch, "spatial_dims": model.spatial_dims,
                                            "in_channels": model.in_channels, "out_channels": model.out_channels,
                                            **metadata["options"]}},
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "onnx": {"source": "weights.onnx", "opset_version": OPSET, "parent": "pytorch_state_dict"},
        },
        "config": {"segarch": metadata, "segarch_version": __version__},
    }
    readme = (f"# {name}\n\n{rdf['description']}\n\nExported by segarch {__version__} from the {model.arch!r} "
              f"architecture ({model.spatial_dims}D, {model.in_channels} input channel(s), classes "
              f"{', '.join(model.class_names)}).\n\n## Usage\n\nThe input is one image with a batch and a channel "
              f"axis, tiles of {'×'.join(map(str, tile))}; the output holds one score per class, and the labels are "
              "their argmax over the channel axis. In segarch: `segarch predict IMAGE OUT --model THIS.zip`.\n\n"
              "## Validation\n\n`test_input.npy` is a generated image; `test_output.npy` is what the network computes "
              "for it after the pre-processing listed in bioimageio.yaml.\n")
    return {"bioimageio.yaml": yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode(),
            "weights.onnx": graph, "weights.pt": _state_dict_bytes(model),
            "test_input.npy": _npy(image[None]), "test_output.npy": _npy(logits),
            "cover.png": _cover(image, logits[0].argmax(0)), "README.md": readme.encode()}
