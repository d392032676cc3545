"""int8: the checked fp32 ONNX export, statically quantised on the image's own tiles, kept only when its
labels agree with fp32's.

:func:`int8_runner` quantises the cached fp32 export (:func:`segarch.runtimes.onnx.cached_onnx`) with ONNX
Runtime's post-training static quantisation (QDQ format, int8 weights per output channel, uint8 activations,
ranges calibrated by min/max on the tiles given), runs the int8 graph and the fp32 graph under the chosen
runtime (ONNX Runtime or OpenVINO, which reads the QDQ graph and runs int8 kernels) on those same tiles, and
keeps the int8 graph only when at least :data:`AGREEMENT_BAR` of the labels agree; otherwise it returns
``None`` with the reason logged, and the caller runs fp32.

The int8 graph is cached beside the fp32 export, keyed by the fp32 graph, the calibration tiles and the ONNX
Runtime version (``<key>.int8.onnx``), with its SHA-256 in ``<key>.int8.json`` written last (a corrupted
entry is rebuilt) and the agreement measured per runtime in ``<key>.int8.<runtime>.json`` (a refusal is
remembered too: the same image does not quantise again to be refused again).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segarch.runtimes.onnx import OnnxRunner, file_sha256, cached_onnx, ort_session, write_atomic
from segarch.runtimes.openvino import OpenVinoRunner

__all__ = ["PRECISIONS", "AGREEMENT_BAR", "Int8Result", "check_precision", "int8_runner", "quantise", "agreement"]

log = logging.getLogger("segarch.runtimes")

PRECISIONS = ("fp32", "int8")
#: The share of labels the int8 graph must give as fp32 does, on the calibration tiles, to be used.
AGREEMENT_BAR = 0.995
_SETTINGS = {"format": "QDQ", "per_channel": True, "activations": "QUInt8", "weights": "QInt8", "calibrate": "MinMax"}


def check_precision(precision) -> str:
    """``precision`` checked against :data:`PRECISIONS` (a clear error naming what is allowed)."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    return precision


@dataclass
class Int8Result:
    """What :func:`int8_runner` decided: ``runner`` (``None``: refused, run fp32), the ``agreement`` of labels
    with fp32 on the calibration tiles, and ``reason`` (why it was refused, else empty)."""

    runner: object | None
    agreement: float
    tiles: int
    reason: str = ""


def agreement(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> float:
    """The share of pixels whose label (argmax over channels; ``> 0`` for one channel, as ``predict``) is the same."""
    if fp32_logits.shape[1] == 1:
        return float(((fp32_logits[:, 0] > 0) == (int8_logits[:, 0] > 0)).mean())
    return float((fp32_logits.argmax(1) == int8_logits.argmax(1)).mean())


def quantise(fp32_path: Path, calibration: np.ndarray, out: Path) -> None:
    """Write to ``out`` the int8 QDQ graph of the fp32 ONNX graph at ``fp32_path``, its activation ranges
    calibrated on ``calibration`` ``(N, C, *tile)`` (one tile per calibration run)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    name = ort_session(fp32_path, 1).get_inputs()[0].name

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(calibration)

        def get_next(self):
            tile = next(self.rest, None)
            return None if tile is None else {name: np.ascontiguousarray(tile[None], np.float32)}

    quiet = _QuantiserAdvice()
    logging.getLogger().addFilter(quiet)  # the quantiser advises on the root logger, once per graph
    try:
        with tempfile.TemporaryDirectory() as scratch:  # the calibrator writes an augmented model: not in the cache
            staged = Path(scratch) / "int8.onnx"
            quantize_static(str(fp32_path), str(staged), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibTensorRangeSymmetric": False})
            write_atomic(out, staged.read_bytes())
    finally:
        logging.getLogger().removeFilter(quiet)
    if quiet.dropped:
        log.debug("ONNX Runtime's quantiser said: %s", "; ".join(sorted(set(quiet.dropped))))


class _QuantiserAdvice(logging.Filter):
    """Keeps ONNX Runtime's quantiser's root-logger advice (pre-processing, non-constant biases left fp32) for
    segarch's debug log instead of the user's console."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and "quantization" in record.pathname:
            self.dropped.append(record.getMessage()[:120])
            return False
        return True


def _run_all(runner, tiles: np.ndarray, batch: int = 4) -> np.ndarray:
    return np.concatenate([runner(tiles[i:i + batch], len(tiles[i:i + batch])) for i in range(0, len(tiles), batch)])


def _runner_for(runtime: str, path: Path, threads: int):
    if runtime == "openvino":
        return OpenVinoRunner(path, threads)
    return OnnxRunner(ort_session(path, threads), path)


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def int8_runner(model, tile_shape: tuple[int, ...], runtime: str, calibration: np.ndarray,
                threads: int = 1) -> Int8Result:
    """The int8 runner of ``model`` on tiles of ``tile_shape`` under ``runtime``, or a refusal.

    Args:
        model: a :class:`segarch.Model` that exports (the fp32 export is made and checked first).
        tile_shape: the spatial tile shape the engine feeds.
        runtime: ``"onnxruntime"`` or ``"openvino"``: what runs both graphs (agreement is measured there).
        calibration: tiles of the image ``(N, C, *tile_shape)``, pre-processed as the engine feeds them.
        threads: intra-op threads.

    Returns:
        An :class:`Int8Result`: its ``runner`` is ``None`` when fewer than :data:`AGREEMENT_BAR` of the labels
        agree with fp32 on ``calibration`` (or there is nothing to calibrate on); ``reason`` says why.

    Raises:
        RuntimeNotInstalled, ExportError: as :func:`segarch.runtimes.onnx.cached_onnx`.
    """
    if runtime not in ("onnxruntime", "openvino"):
        raise ValueError(f"int8 runs under 'onnxruntime' or 'openvino', got `runtime`={runtime!r}.")
    calibration = np.ascontiguousarray(calibration, np.float32)
    if calibration.ndim != 2 + len(tile_shape) or len(calibration) == 0 or not np.isfinite(calibration).all():
        return Int8Result(None, 0.0, len(calibration), "no usable calibration tiles (the image's tiles are all "
                          "constant or left out)")
    fp32_path = cached_onnx(model, tile_shape, threads)
    recorded = json.loads(fp32_path.with_suffix(".json").read_text())
    what = {"fp32_sha256": recorded["sha256"], "calibration_sha256": hashlib.sha256(calibration.tobytes()).hexdigest(),
            "calibration_shape": list(calibration.shape), "onnxruntime": _ort_version(), **_SETTINGS}
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]
    path = fp32_path.parent / f"{key}.int8.onnx"
    meta, checked = path.with_suffix(".json"), path.with_name(f"{key}.int8.{runtime}.json")
    valid = False
    if path.exists() and meta.exists():
        try:
            valid = json.loads(meta.read_text()).get("sha256") == file_sha256(path)
            if not valid:
                raise ValueError("the file does not match its recorded SHA-256")
        except Exception as err:  # a corrupted entry: quantised again
            log.warning("int8 cache entry %s is unusable (%s): quantising again", path, err)
    if valid:
        try:
            record = json.loads(checked.read_text())
            if record.get("sha256") == json.loads(meta.read_text())["sha256"]:
                return _decide(record["agreement"], runtime, path, threads, len(calibration))
        except (OSError, ValueError, KeyError):
            pass  # not measured under this runtime yet
    else:
        checked.unlink(missing_ok=True)
        quantise(fp32_path, calibration, path)
        write_atomic(meta, json.dumps(dict(what, sha256=file_sha256(path)), indent=1).encode())
    int8 = _runner_for(runtime, path, threads)
    share = agreement(_run_all(_runner_for(runtime, fp32_path, threads), calibration), _run_all(int8, calibration))
    sha = json.loads(meta.read_text())["sha256"]
    write_atomic(checked, json.dumps({"sha256": sha, "agreement": share, "tiles": len(calibration)}).encode())
    log.info("int8 %s of %s: labels agree with fp32 on %.3f%% of %d calibration tiles' pixels (bar %.1f%%)",
             runtime, model.arch, 100 * share, len(calibration), 100 * AGREEMENT_BAR)
    return _decide(share, runtime, path, threads, len(calibration), int8)


def _decide(share: float, runtime: str, path: Path, threads: int, tiles: int, runner=None) -> Int8Result:
    if share < AGREEMENT_BAR:
        return Int8Result(None, share, tiles, f"int8 labels agree with fp32 on {100 * share:.3f}% of the "
                          f"calibration tiles' pixels, under the {100 * AGREEMENT_BAR:.1f}% bar")
    return Int8Result(runner or _runner_for(runtime, path, threads), share, tiles)


def quantisation_available() -> bool:
    """Whether ONNX Runtime's quantisation tools can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
