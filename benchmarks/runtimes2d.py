"""Why the 2D U-Net is (or is not) at half the eager floor: the runtimes' knobs and the engine's overhead.

The benchmark's 2D U-Net 16–256 (batch norm, fp32) on a 2048² image, tile 256, overlap 0.25 (121 tiles): the
floor (a) is the engine's own eager forward (channels-last) over those tiles in batches of 4.

Part 1, the forward alone, timed round-robin (one call of each variant per round, so the machine's load hits all
alike). Each variant's median time per tile times the number of tiles it needs for the whole image (121 at tile
256, 25 at tile 512: fewer halo pixels per output pixel) is divided by the floor's. Variants: eager at other
batch sizes and at tile 512; ONNX Runtime with graph optimisation ``all`` (the default, with the NCHWc layout
transform), ``extended`` (without it) and ``basic``, a static-shape export, batch 1/8/16; OpenVINO with the
``LATENCY`` (the default) and ``THROUGHPUT`` hints, ``NUM_STREAMS`` 1, its threads not pinned to cores,
denormals flushed, batch 1/8/16, tile 512; and one 2-thread pair (eager vs OpenVINO, both on 2 threads).
``INFERENCE_PRECISION_HINT`` is ``f32`` for every OpenVINO variant (fp32 kept).

Part 2, end to end (``segarch.predict``, uint8 Zarr in, Zarr out, round-robin, median): the floor, ``runtime=
"torch"``, ``"openvino"`` (tile 256), and the time the network calls take inside each predict
(the runner wrapped with a clock): ``predict ÷ its own network time`` is the engine's overhead factor (reading,
blending, writing, queueing). Labels of each are compared with ``runtime="torch"`` at the same tile when that
is a case too, else at tile 256.

Run: ``python benchmarks/runtimes2d.py [--rounds 5] [--repeats 3] [--threads 1] [--size 2048] [--only forward|predict]
[--variants 512 ...] [--cases "openvino 256" "onnxruntime 512" ...]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import segarch
import segarch.tiling.engine as engine_module
from segarch.runtimes.onnx import OnnxRunner, cached_onnx
from segarch.runtimes.openvino import OpenVinoRunner
from segarch.tiling.runner import NetworkRunner
from tiling import engine_tile_count  # benchmarks/tiling.py: the engine's tile count

OVERLAP = 0.25


def _ort(path: Path, threads: int, level: str = "all") -> OnnxRunner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return OnnxRunner(session, path)


def _openvino(path: Path, threads: int, **config) -> OpenVinoRunner:
    runner = OpenVinoRunner(path, threads)
    runner._config.update(config)
    return runner


def _static_export(model, tile: int, batch: int, folder: Path) -> Path:
    """The network exported with every axis fixed (the cache's export leaves the batch axis free)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.network.eval(), (torch.zeros(batch, model.in_channels, tile, tile),), buffer,
                          dynamo=False, opset_version=17, input_names=["tiles"], output_names=["logits"])
    path = folder / f"static_{tile}x{batch}.onnx"
    path.write_bytes(buffer.getvalue())
    return path


class _Threads:
    """A runner called with torch on ``threads`` threads, the previous count restored after."""

    def __init__(self, runner, threads: int) -> None:
        self.runner, self.threads = runner, threads

    def __call__(self, batch, batch_size):
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.runner(batch, batch_size)
        finally:
            torch.set_num_threads(before)


def forward_sweep(model, size: int, threads: int, rounds: int, folder: Path, keep: list[str] | None = None) -> None:
    network = model.network.eval()
    counts = {t: engine_tile_count((size, size), (t, t), OVERLAP, model.size_divisor, "gaussian") for t in (256, 512)}
    path = {t: cached_onnx(model, (t, t), threads) for t in (256, 512)}
    eager = NetworkRunner(network, torch.device("cpu"), amp=None)
    variants = {  # name: (runner, tile, batch)
        "eager 256×4 (the floor)": (eager, 256, 4),
        "eager 256×1": (eager, 256, 1),
        "eager 256×16": (eager, 256, 16),
        "eager 512×4": (eager, 512, 4),
        "onnxruntime all (NCHWc) 256×4": (_ort(path[256], threads), 256, 4),
        "onnxruntime extended (no NCHWc) 256×4": (_ort(path[256], threads, "extended"), 256, 4),
        "onnxruntime basic 256×4": (_ort(path[256], threads, "basic"), 256, 4),
        "onnxruntime static shape 256×4": (_ort(_static_export(model, 256, 4, folder), threads), 256, 4),
        "onnxruntime 256×1": (_ort(path[256], threads), 256, 1),
        "onnxruntime 256×16": (_ort(path[256], threads), 256, 16),
        "onnxruntime 512×4": (_ort(path[512], threads), 512, 4),
        "openvino LATENCY 256×4 (default)": (_openvino(path[256], threads), 256, 4),
        "openvino THROUGHPUT 256×4": (_openvino(path[256], threads, PERFORMANCE_HINT="THROUGHPUT"), 256, 4),
        "openvino NUM_STREAMS 1 256×4": (_openvino(path[256], threads, PERFORMANCE_HINT="THROUGHPUT",
                                                   NUM_STREAMS=1), 256, 4),
        "openvino CPU pinning off 256×4": (_openvino(path[256], threads, ENABLE_CPU_PINNING=False), 256, 4),
        "openvino denormals flushed 256×4": (_openvino(path[256], threads, CPU_DENORMALS_OPTIMIZATION=True), 256, 4),
        "openvino 256×1": (_openvino(path[256], threads), 256, 1),
        "openvino 256×8": (_openvino(path[256], threads), 256, 8),
        "openvino 256×16": (_openvino(path[256], threads), 256, 16),
        "openvino 512×1": (_openvino(path[512], threads), 512, 1),
        "openvino 512×4": (_openvino(path[512], threads), 512, 4),
        "eager 256×4, 2 threads": (_Threads(eager, 2), 256, 4),
        "openvino 256×4, 2 threads": (_openvino(path[256], 2), 256, 4),
    }
    if keep:  # the floor, and the variants whose name contains one of ``keep``
        variants = {name: v for i, (name, v) in enumerate(variants.items()) if i == 0 or any(k in name for k in keep)}
    rng = np.random.default_rng()
    inputs = {(t, b): rng.random((b, model.in_channels, t, t), dtype=np.float32) for _, t, b in variants.values()}
    reference = {}
    for name, (runner, tile, batch) in variants.items():  # warm-up (OpenVINO compiles per shape), agreement
        y = runner(inputs[tile, batch], batch)
        reference.setdefault((tile, batch), eager(inputs[tile, batch], batch))
        agree = float((y.argmax(1) == reference[tile, batch].argmax(1)).mean())
        variants[name] = (runner, tile, batch, agree)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (runner, tile, batch, _) in variants.items():
            x = inputs[tile, batch]
            start = time.perf_counter()
            runner(x, batch)
            times[name].append((time.perf_counter() - start) / batch * counts[tile])  # whole image's worth
    floor = statistics.median(times["eager 256×4 (the floor)"])
    print(f"Part 1: forward only, {size}² image's worth of tiles ({counts[256]} at 256, {counts[512]} at 512), threads "
          f"{threads} unless said, median of {rounds} round-robin rounds, ÷ eager 256×4 channels-last")
    for name, (_, _, _, agree) in variants.items():
        print(f"  {name:<42} {statistics.median(times[name]) / floor:5.2f}   argmax agrees with eager "
              f"{100 * agree:.3f}%", flush=True)


def end_to_end(model, size: int, threads: int, repeats: int, folder: Path, cases: list[str]) -> None:
    import zarr

    image = (np.random.default_rng().random((size, size)) * 255).astype(np.uint8)
    store = zarr.open_array(str(folder / "in.zarr"), mode="w", shape=image.shape, dtype=image.dtype, chunks=(256, 256))
    store[:] = image
    count = engine_tile_count(image.shape, (256, 256), OVERLAP, model.size_divisor, "gaussian")
    eager = NetworkRunner(model.network, torch.device("cpu"), amp=None)
    x = np.random.default_rng(0).random((4, model.in_channels, 256, 256), dtype=np.float32)
    network_time = [0.0]
    make_runner = engine_module.make_runner

    def timed_make_runner(*args, **kwargs):
        runner = make_runner(*args, **kwargs)

        def timed(batch, batch_size):
            start = time.perf_counter()
            try:
                return runner(batch, batch_size)
            finally:
                network_time[0] += time.perf_counter() - start
        return timed

    engine_module.make_runner = timed_make_runner
    cases = {name: (name.split()[0], int(name.split()[1])) for name in ["torch 256", *cases]}
    labels = {}

    def predict(name):
        runtime, tile = cases[name]
        network_time[0] = 0.0
        start = time.perf_counter()
        labels[name] = segarch.predict(model, store, tile=tile, overlap=OVERLAP, batch_size=4, device="cpu",
                                       runtime=runtime, out=folder / f"{name.replace(' ', '_')}.zarr",
                                       overwrite=True)[:]
        return time.perf_counter() - start, network_time[0]

    try:
        for name in cases:  # warm-up: exports, compilations
            predict(name)
        times: dict[str, list] = {"floor": [], **{name: [] for name in cases}}
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(-(-count // 4)):
                eager(x, 4)
            times["floor"].append((time.perf_counter() - start, 0.0))
            for name in cases:
                times[name].append(predict(name))
    finally:
        engine_module.make_runner = make_runner
    floor = statistics.median(t for t, _ in times["floor"])
    print(f"Part 2: segarch.predict end to end, {size}² uint8 Zarr → Zarr, batch 4, threads {threads}, median of "
          f"{repeats} round-robin rounds; ÷ (a) the eager floor (tile 256, {count} tiles)")
    for name in cases:
        total = statistics.median(t for t, _ in times[name])
        net = statistics.median(n for _, n in times[name])
        tile = cases[name][1]
        baseline = f"torch {tile}" if f"torch {tile}" in labels else "torch 256"  # the same tiles where run
        same = float((labels[name] == labels[baseline]).mean())
        print(f"  {name:<16} predict ÷ (a) {total / floor:5.2f}   its network calls ÷ (a) {net / floor:5.2f}   "
              f"predict ÷ its network calls {total / net:5.2f}   labels as {baseline}: {100 * same:.3f}%", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--only", choices=("forward", "predict"))
    parser.add_argument("--variants", nargs="*", help="part 1: only the variants whose name contains one of these")
    parser.add_argument("--cases", nargs="*", default=["openvino 256"],
                        help="part 2: 'RUNTIME TILE' pairs run beside 'torch 256' (default: 'openvino 256')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", spatial_dims=2, features=(16, 32, 64, 128, 256), norm="batch")
    model.preprocessing = []  # the raw image into the network, as benchmarks/tiling.py and runtimes.py
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "predict":
            forward_sweep(model, args.size, args.threads, args.rounds, Path(tmp), args.variants)
        if args.only != "forward":
            end_to_end(model, args.size, args.threads, args.repeats, Path(tmp), args.cases)


if __name__ == "__main__":
    main()
