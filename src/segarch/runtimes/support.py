"""Which zoo architectures export to ONNX and run under ONNX Runtime and OpenVINO, checked against eager PyTorch.

:func:`check_entry` builds one registered architecture at the size the zoo's shared tester uses (its card's
``test_config``, the tester's odd input sizes padded to the size divisor), exports it with a free batch axis,
runs a random batch of two through ONNX Runtime (and, when installed, OpenVINO: fp32, the same graph) and
compares every output to eager PyTorch. The table of all
entries is written by ``scripts/runtime_support.py`` into :data:`TABLE_FILE`; ``tests/test_runtime_support.py``
re-checks a sample of it against reality.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segarch import zoo
from segarch.layers.checks import padded_shape
from segarch.runtimes.onnx import ExportError, export_network, ort_session
from segarch.runtimes.openvino import openvino_available

__all__ = ["TABLE_FILE", "TEST_SIZES", "STATUSES", "TOLERANCE", "check_entry", "entries"]

TABLE_FILE = Path(__file__).with_name("runtime_support.json")
#: The shared zoo tester's odd input sizes (tests/test_zoo_models.py), padded to each entry's size divisor.
TEST_SIZES = {2: (33, 47), 3: (17, 33, 19)}
#: ``runs``: exports and matches eager; ``differs``: exports but computes something else; ``no export``: the
#: exporter refuses it; ``no run``: ONNX Runtime cannot load or run the graph.
STATUSES = ("runs", "differs", "no export", "no run")
#: Largest difference allowed, relative to the largest eager output (fp32 summation order differs, ~1e-6).
TOLERANCE = 1e-3


def entries() -> list[tuple[str, int]]:
    """Every (registry name, spatial dims) the zoo builds."""
    return [(name, dims) for name in zoo.names() for dims in zoo.card(name).spatial_dims]


def _outputs(y) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(y, dict):
        return [str(k) for k in y], [v.detach().float().numpy() for v in y.values()]
    if isinstance(y, (tuple, list)):
        return [f"output{i}" for i in range(len(y))], [v.detach().float().numpy() for v in y]
    return ["logits"], [y.detach().float().numpy()]


def check_entry(name: str, dims: int, seed: int = 0) -> dict:
    """Export zoo entry ``name`` in ``dims`` D at its test size and run it under ONNX Runtime.

    Returns:
        ``{"name", "dims", "task", "shape", "status", "max_rel_difference", "reason", "seconds"}`` for ONNX
        Runtime, where ``status`` is one of :data:`STATUSES` and ``reason`` the exporter's or runtime's first
        line ("" when it runs); with OpenVINO installed, ``"openvino": {"status", "max_rel_difference",
        "reason"}`` too.
    """
    card = zoo.card(name)
    started = time.perf_counter()
    torch.manual_seed(seed)
    network = zoo.create(name, spatial_dims=dims, in_channels=1, out_channels=3, **card.test_config).eval()
    shape = padded_shape(TEST_SIZES[dims], card.size_divisor)
    x = np.random.default_rng(seed).standard_normal((2, 1, *shape)).astype(np.float32)
    with torch.no_grad():
        out = network(torch.from_numpy(x))
    row = {"name": name, "dims": dims, "task": card.task, "shape": list(shape), "status": "runs",
           "max_rel_difference": None, "reason": ""}
    if isinstance(out, (list, tuple)):  # a detector: a variable number of detections per image, no fixed graph
        why = "a detector (per image a variable number of boxes and masks): not exported, it runs in torch"
        row.update(status="no export", reason=why, seconds=round(time.perf_counter() - started, 2))
        if openvino_available():
            row["openvino"] = dict(status="no export", max_rel_difference=None, reason=why)
        return row
    names, expected = _outputs(out)
    try:
        graph = export_network(network, torch.from_numpy(x[:1]), name, tuple(names))
    except ExportError as err:
        why = str(err).split(" does not export to ONNX (", 1)[-1].removesuffix("); use `runtime`='torch'.")
        row.update(status="no export", reason=why)
        graph = None
    else:
        row.update(_run(lambda: ort_session(graph, threads=torch.get_num_threads()).run(None, {"tiles": x}),
                        expected))
    if openvino_available():
        row["openvino"] = _run(lambda: _openvino_outputs(graph, x), expected) if graph else dict(
            status="no export", max_rel_difference=None, reason=row["reason"])
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def _run(outputs, expected: list[np.ndarray]) -> dict:
    try:
        got = outputs()
    except Exception as err:  # the runtimes' errors (unsupported node, shape inference) have no common base
        said = " ".join(str(err).split()) or type(err).__name__  # OpenVINO's first line is only a source location
        return {"status": "no run", "max_rel_difference": None, "reason": said[:300]}
    return {"status": "runs", "max_rel_difference": None, "reason": "", **_compare(expected, got)}


def _openvino_outputs(graph: bytes, x: np.ndarray) -> list[np.ndarray]:
    import openvino

    core = openvino.Core()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.onnx"
        path.write_bytes(graph)
        network = core.read_model(str(path))
        network.reshape({network.inputs[0].any_name: list(x.shape)})
        compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                       "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        result = compiled(x)
        return [np.asarray(result[output]) for output in compiled.outputs]


def _compare(expected: list[np.ndarray], got: list[np.ndarray]) -> dict:
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        return {"status": "differs", "reason": f"output shapes {[g.shape for g in got]}, eager "
                                               f"{[e.shape for e in expected]}"}
    relative = max(float(np.abs(g - e).max()) / max(1.0, float(np.abs(e).max())) for g, e in zip(got, expected))
    if not relative <= TOLERANCE:  # NaN included
        return {"status": "differs", "max_rel_difference": relative,
                "reason": f"largest difference {relative:.3g} of the output's scale on a random batch"}
    return {"status": "runs", "max_rel_difference": relative}
