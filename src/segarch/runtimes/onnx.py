"""The network exported to ONNX once per (architecture, weights, tile shape, dtype), cached on disk, run by
ONNX Runtime.

The cache lives in ``$SEGARCH_CACHE_DIR/onnx`` (default: the user's cache folder, e.g. ``~/.cache/segarch``).
Each entry is ``<key>.onnx`` plus ``<key>.json``, the latter written last and holding the ``.onnx`` file's
SHA-256: an entry whose file does not match it (truncated, overwritten, half-written) is rebuilt. An export
is checked against eager PyTorch on a random batch before it is kept, so a graph the tracer got wrong
(data-dependent Python control flow) is refused, not cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from segarch.models.model import weights_sha256

__all__ = ["ExportError", "RuntimeNotInstalled", "OnnxRunner", "onnx_runner", "onnxruntime_available", "cache_dir",
           "weights_sha256", "file_sha256", "export_onnx", "export_network", "ort_session",
           "compare_to_eager", "agrees_with_eager", "cached_onnx", "write_atomic"]

log = logging.getLogger("segarch.runtimes")

OPSET = 17
_INSTALL = "pip install 'napari-segarch[fast]' (or: pip install onnxruntime onnx)"
# Export is kept only when ONNX Runtime's logits match eager PyTorch's on a random batch within this
# (relative to the logits' scale): fp32 kernels differ in summation order, never by more than ~1e-5.
_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    """The architecture does not export to ONNX, or its export does not compute what the network does."""


class RuntimeNotInstalled(ImportError):
    """The runtime asked for is not installed; the message says how to install it."""


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    """The folder of exported networks: ``$SEGARCH_CACHE_DIR/onnx``, else the user's cache folder's ``segarch/onnx``."""
    root = os.environ.get("SEGARCH_CACHE_DIR")
    if not root:
        try:
            import platformdirs

            root = platformdirs.user_cache_dir("segarch", appauthor=False)
        except ImportError:  # platformdirs is not a dependency of the engine: the XDG default
            root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "segarch")
    return Path(root) / "onnx"


def _key(model, tile_shape: tuple[int, ...]) -> tuple[str, dict]:
    what = {"arch": model.arch, "network": type(model.network).__qualname__,
            "options": json.loads(json.dumps(model.options or {}, sort_keys=True, default=str)),
            "weights_sha256": weights_sha256(model.network), "in_channels": int(model.in_channels),
            "tile": [int(t) for t in tile_shape], "dtype": "float32", "opset": OPSET, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32], what


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_onnx(model, tile_shape: tuple[int, ...]) -> bytes:
    """``model``'s network as an ONNX graph (bytes) for tiles of ``tile_shape``, any batch size.

    Raises:
        ExportError: the architecture does not export (its name and the exporter's reason).
    """
    network = model.network.eval()
    device = next(iter(network.parameters()), torch.zeros(())).device
    example = torch.zeros((1, int(model.in_channels), *tile_shape), device=device)
    return export_network(network, example, model.arch)


def export_network(network, example: torch.Tensor, name: str, output_names: tuple[str, ...] = ("logits",)) -> bytes:
    """``network`` traced on ``example`` as an ONNX graph (bytes) whose batch axis (the first) is free.

    ``output_names`` names the outputs in order (a network returning a dict of heads has one per head).

    Raises:
        ExportError: the exporter refuses the network (``name`` and the exporter's reason in the message).
        RuntimeNotInstalled: the exporter's dependency (``onnx``) is missing.
    """
    buffer = io.BytesIO()
    free_batch = {n: {0: "batch"} for n in ("tiles", *output_names)}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(network.eval(), (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=["tiles"], output_names=list(output_names), dynamic_axes=free_batch)
    except ModuleNotFoundError as err:
        raise RuntimeNotInstalled(f"Exporting to ONNX needs {err.name!r}: {_INSTALL}.") from None
    except Exception as err:  # the exporter raises many kinds (unsupported operator, tracer, shape errors)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(f"The architecture {name!r} does not export to ONNX ({type(err).__name__}: "
                          f"{first[:300]}); use `runtime`='torch'.") from None
    return _positive_permutations(buffer.getvalue())


def _positive_permutations(graph: bytes) -> bytes:
    """The graph with every Transpose's ``perm`` made non-negative.

    The TorchScript exporter folds consecutive transposes (a ``movedim(-1, 1)`` next to a ``permute``) into one
    whose ``perm`` keeps negative axes, which ONNX Runtime rejects (Swin-UPerNet, HRFormer); ``perm`` has one
    entry per axis, so ``p % len(perm)`` is the axis meant.
    """
    import onnx

    proto = onnx.load_from_string(graph)
    changed = False
    for node in proto.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Transpose" and attribute.name == "perm" and any(p < 0 for p in attribute.ints):
                fixed = [p % len(attribute.ints) for p in attribute.ints]
                del attribute.ints[:]
                attribute.ints.extend(fixed)
                changed = True
    return proto.SerializeToString() if changed else graph


class OnnxRunner:
    """An ONNX Runtime session as the engine's batch runner: ``runner(batch, batch_size) -> logits``."""

    def __init__(self, session, path: Path) -> None:
        self.session = session
        self.path = path
        self._input = session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        """Logits for ``batch`` ``(B, C, *tile)`` as float32 NumPy (the whole batch in one run)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.ascontiguousarray(self.session.run(None, {self._input: x})[0], dtype=np.float32)


def ort_session(path: Path | bytes, threads: int):
    """An ONNX Runtime CPU session on the graph at ``path`` (or its bytes) with ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeNotInstalled(f"`runtime`='onnxruntime' needs ONNX Runtime, which is not installed: "
                                  f"{_INSTALL}.") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the engine logs what matters
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_runner(model, tile_shape: tuple[int, ...], threads: int = 1) -> OnnxRunner:
    """An :class:`OnnxRunner` for ``model`` on tiles of ``tile_shape``, exported once and cached on disk.

    Raises:
        RuntimeNotInstalled: ONNX Runtime (or the exporter's dependency) is missing.
        ExportError: the architecture does not export, or its export computes something else than the network.
    """
    path = cached_onnx(model, tile_shape, threads)
    return OnnxRunner(ort_session(path, threads), path)


def cached_onnx(model, tile_shape: tuple[int, ...], threads: int = 1) -> Path:
    """The cache's ``.onnx`` file of ``model`` on tiles of ``tile_shape``: exported, checked against eager
    PyTorch under ONNX Runtime and recorded the first time; rebuilt when the entry is corrupted.

    Raises:
        RuntimeNotInstalled: ONNX Runtime (or the exporter's dependency) is missing.
        ExportError: the architecture does not export, or its export computes something else than the network.
    """
    if not onnxruntime_available():
        raise RuntimeNotInstalled(f"`runtime`='onnxruntime' needs ONNX Runtime, which is not installed: {_INSTALL}.")
    key, what = _key(model, tile_shape)
    folder = cache_dir()
    path, meta = folder / f"{key}.onnx", folder / f"{key}.json"
    if meta.exists() and path.exists():
        try:
            recorded = json.loads(meta.read_text())
            if recorded.get("sha256") != file_sha256(path):
                raise ValueError("the file does not match its recorded SHA-256")
            return path
        except Exception as err:  # a corrupted entry: rebuilt below
            log.warning("ONNX cache entry %s is unusable (%s): exporting again", path, err)
    graph = export_onnx(model, tile_shape)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, graph)
    session = ort_session(path, threads)
    if not session.get_inputs():  # data-dependent control flow traced as constants: the graph ignores the tiles
        path.unlink(missing_ok=True)
        raise ExportError(f"The architecture {model.arch!r} exports to ONNX as a graph that does not read its input "
                          f"(the tracer followed one data-dependent path); use `runtime`='torch'.")
    difference, scale = compare_to_eager(model, lambda x: session.run(None, {session.get_inputs()[0].name: x})[0],
                                         tile_shape)
    if not agrees_with_eager(difference, scale):
        path.unlink(missing_ok=True)
        raise ExportError(f"The architecture {model.arch!r} exports to ONNX but computes different logits (largest "
                          f"difference {difference:.3g} on a random batch); use `runtime`='torch'.")
    record = dict(what, sha256=file_sha256(path), max_abs_difference=float(difference))
    write_atomic(meta, json.dumps(record, indent=1).encode())  # last: it makes the entry valid
    log.info("exported %s to ONNX (%s, largest difference to eager %.2g)", model.arch, path, difference)
    return path


def compare_to_eager(model, run, tile_shape) -> tuple[float, float]:
    """Largest absolute difference between ``run(x)``'s logits and eager PyTorch's on a random batch of 2, and the
    largest eager logit (the scale the difference is judged against)."""
    rng = np.random.default_rng()
    x = rng.standard_normal((2, int(model.in_channels), *tile_shape)).astype(np.float32)
    network = model.network.eval()
    device = next(iter(network.parameters()), torch.zeros(())).device
    with torch.inference_mode():
        expected = network(torch.from_numpy(x).to(device)).float().cpu().numpy()
    got = run(x)
    if got.shape != expected.shape:
        return float("inf"), 0.0
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


def agrees_with_eager(difference: float, scale: float) -> bool:
    """Whether a runtime's largest difference to eager PyTorch is within :data:`_TOLERANCE` of the logits' scale."""
    return difference <= _TOLERANCE * max(1.0, scale)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
