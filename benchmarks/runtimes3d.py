"""Why the 3D U-Net is (or is not) at half the eager floor: every knob of the runtimes, side by side.

The forward pass alone (no tiling engine: that costs the same for every runtime), of the benchmark's 3D U-Net
8–64 (batch norm) and of the shipped ``unet.nuclei3d`` (8–32), over the same number of voxels for every
variant, timed round-robin (one call of each variant per round, so the machine's load hits all alike); the
median time per voxel of each variant is divided by eager PyTorch's (channels-last-3d, the engine's own
runner) at tile 64³, batch 4. Variants:

- eager PyTorch at other tile shapes / batch sizes; contiguous (not channels-last) memory;
- ONNX Runtime: graph optimisation ``all`` (the default) vs ``basic``, the memory arena off;
- OpenVINO fp32 at tiles 64³ (batch 4), 96³ and 128³ (batch 1), with the ``THROUGHPUT`` hint, without pinning
  its threads to cores;
- int8 (:mod:`segarch.runtimes.int8`: calibrated on tiles of a generated 3D nuclei image) under ONNX Runtime
  and OpenVINO, with the labels' agreement with fp32 for the trained ``unet.nuclei3d``.

Run: ``python benchmarks/runtimes3d.py [--rounds 5] [--model bench|nuclei3d]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.runtimes.int8 import agreement, quantise
from segarch.runtimes.onnx import OnnxRunner, cached_onnx
from segarch.runtimes.openvino import OpenVinoRunner
from segarch.tiling.runner import NetworkRunner


def _ort(path: Path, threads: int, level: str = "all", arena: bool = True) -> OnnxRunner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    options.enable_cpu_mem_arena = arena
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return OnnxRunner(session, path)


def _openvino(path: Path, threads: int, hint: str = "LATENCY", pinning: bool | None = None) -> OpenVinoRunner:
    runner = OpenVinoRunner(path, threads)
    runner._config["PERFORMANCE_HINT"] = hint
    if pinning is not None:
        runner._config["ENABLE_CPU_PINNING"] = pinning
    return runner


def _calibration(model, tile: int, count: int = 8) -> np.ndarray:
    from segarch.samples import nuclei

    image, _ = nuclei((2 * tile,) * 3, seed=11)
    x = np.asarray(model.preprocess(image[None].astype(np.float32)), np.float32) if model.preprocessing else \
        (image[None].astype(np.float32) / max(1.0, float(image.max())))
    corners = [(z, y, xx) for z in (0, tile) for y in (0, tile) for xx in (0, tile)][:count]
    return np.stack([x[:, z:z + tile, y:y + tile, xx:xx + tile] for z, y, xx in corners])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=("bench", "nuclei3d"), default="bench")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    if args.model == "bench":
        model = segarch.Model.from_zoo("unet", spatial_dims=3, features=(8, 16, 32, 64), norm="batch")
        model.preprocessing = []
    else:
        model = segarch.models.resolve("unet.nuclei3d")
    network = model.network.eval()
    shapes = {"64×4": (64, 4), "96×1": (96, 1), "128×1": (128, 1)}
    paths = {name: cached_onnx(model, (t,) * 3, threads) for name, (t, _) in shapes.items()}
    calibration = _calibration(model, 64)
    with tempfile.TemporaryDirectory() as scratch:
        int8_path = Path(scratch) / "int8.onnx"
        quantise(paths["64×4"], calibration, int8_path)
        eager = NetworkRunner(network, torch.device("cpu"), amp=None)
        contiguous = NetworkRunner(network, torch.device("cpu"), amp=None)
        contiguous._format = None  # the engine's runner without channels-last-3d
        contiguous._channels_last = lambda ndim: None
        variants = {
            "eager, channels-last-3d, 64³×4 (the floor)": (eager, "64×4"),
            "eager, channels-last-3d, 96³×1": (eager, "96×1"),
            "eager, channels-last-3d, 128³×1": (eager, "128×1"),
            "eager, contiguous, 64³×4": (contiguous, "64×4"),
            "onnxruntime, optimisation all, 64³×4": (_ort(paths["64×4"], threads), "64×4"),
            "onnxruntime, optimisation basic, 64³×4": (_ort(paths["64×4"], threads, "basic"), "64×4"),
            "onnxruntime, memory arena off, 64³×4": (_ort(paths["64×4"], threads, arena=False), "64×4"),
            "onnxruntime, 128³×1": (_ort(paths["128×1"], threads), "128×1"),
            "openvino, 64³×4": (_openvino(paths["64×4"], threads), "64×4"),
            "openvino, 96³×1": (_openvino(paths["96×1"], threads), "96×1"),
            "openvino, 128³×1": (_openvino(paths["128×1"], threads), "128×1"),
            "openvino, THROUGHPUT hint, 64³×4": (_openvino(paths["64×4"], threads, "THROUGHPUT"), "64×4"),
            "openvino, CPU pinning off, 64³×4": (_openvino(paths["64×4"], threads, pinning=False), "64×4"),
            "onnxruntime int8, 64³×4": (_ort(int8_path, threads), "64×4"),
            "openvino int8, 64³×4": (_openvino(int8_path, threads), "64×4"),
        }
        rng = np.random.default_rng(0)
        inputs = {name: rng.random((b, model.in_channels, t, t, t), dtype=np.float32)
                  for name, (t, b) in shapes.items()}
        for runner, shape in variants.values():  # warm-up (OpenVINO compiles per shape)
            runner(inputs[shape], len(inputs[shape]))
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (runner, shape) in variants.items():
                x = inputs[shape]
                start = time.perf_counter()
                runner(x, len(x))
                times[name].append((time.perf_counter() - start) / x[:, 0].size)
        agree = {name: agreement(eager(calibration[:4], 4), variants[name][0](calibration[:4], 4))
                 for name in ("onnxruntime int8, 64³×4", "openvino int8, 64³×4")}
    floor = statistics.median(times["eager, channels-last-3d, 64³×4 (the floor)"])
    print(f"3D U-Net {model.options.get('features')} ({args.model}), forward only, fp32 unless int8, torch threads "
          f"{threads}, median of {args.rounds} round-robin rounds; time per voxel ÷ eager channels-last-3d 64³×4")
    for name in variants:
        extra = f"   labels agree with eager {100 * agree[name]:.3f}%" if name in agree else ""
        print(f"  {name:<46} {statistics.median(times[name]) / floor:5.2f}{extra}", flush=True)


if __name__ == "__main__":
    main()
