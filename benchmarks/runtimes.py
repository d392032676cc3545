"""Runtimes and constant-tile skipping, measured side by side in one run.

For the same image, model, tile, overlap and batch size, prints the median of ``--repeats`` runs of:

  (a) the eager floor: the pure forward of the engine's own torch runner (channels-last) over exactly the
      tiles the engine computes,
  (b) ``segarch.predict(..., runtime="torch")`` end to end (Zarr in, Zarr out),
  (c) ``segarch.predict(..., runtime="onnxruntime")`` end to end (the export cached beforehand: a one-off),
  (d) ``segarch.predict(..., runtime="openvino")`` end to end (when OpenVINO is installed),

timed round-robin (one run of each per round), each median as a ratio to (a), the fastest of them ÷ (a),
and for the fastest the labels' agreement with (b) and the
largest difference of the probabilities. Cases: the U-Net 16–256 in 2D (2048², tile 256) and 8–64 in 3D (256³,
tile 64), then three other families on a 1024² image (tile 256): DeepLabv3+ (Xception-65 at half width),
ENet (the paper's widths) and HRNetV2-W18. Then, on an image whose right 70% is empty (constant), ``predict``
with constant tiles computed once vs every tile sent to the network. Labels of an untrained network are
nearly one class, so agreement is also measured with the shipped ``unet.nuclei2d`` on a generated nuclei image.

Run: ``python benchmarks/runtimes.py [--repeats 3] [--size2d 2048] [--size3d 256] [--families-size 1024]
[--only 2D 3D deeplab_v3_plus enet hrnet_v2] [--no-extras]``
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.runtimes import ExportError, make_runner
from segarch.tiling import pipeline
from segarch.tiling.engine import check_tile
from segarch.tiling.runner import NetworkRunner
from tiling import engine_tile_count, median_time  # benchmarks/tiling.py: the same clock and tile count

FAST_RUNTIMES = ("onnxruntime",) + (("openvino",) if importlib.util.find_spec("openvino") else ())


def run_case(name, model, image, tile, repeats, workdir: Path, batch: int = 4, overlap: float = 0.25) -> dict:
    import zarr

    store = zarr.open_array(str(workdir / f"{name}_in.zarr"), mode="w", shape=image.shape, dtype=image.dtype,
                            chunks=(tile,) * image.ndim)
    store[:] = image
    tiles = check_tile(tile, image.ndim, model.size_divisor)
    count = engine_tile_count(image.shape, tiles, overlap, model.size_divisor, "gaussian")
    runner = NetworkRunner(model.network, torch.device("cpu"), amp=None)
    x = np.random.default_rng(0).random((batch, model.in_channels, *tiles), dtype=np.float32)
    runtimes = ["torch"]
    for runtime in FAST_RUNTIMES:  # the export (and its check), once, outside the timing
        try:
            make_runner(model, torch.device("cpu"), None, runtime, tiles)
            runtimes.append(runtime)
        except ExportError as err:  # refused (it would compute other logits): reported, not timed
            print(f"  {name}: {runtime} refused: {err}", flush=True)

    def floor():
        for _ in range(-(-count // batch)):
            runner(x, batch)

    def predict(runtime, output="labels"):
        return segarch.predict(model, store, tile=tile, overlap=overlap, batch_size=batch, device="cpu",
                               runtime=runtime, output=output, out=workdir / f"{name}_{runtime}.zarr",
                               overwrite=True)[:]

    # Warm-up, and the agreement: probabilities once per runtime, labels are their argmax.
    probabilities = {runtime: predict(runtime, "probabilities") for runtime in runtimes}
    # Round-robin: one run of each per round, so a change of the machine's load hits all of them alike.
    calls = {"floor": floor, **{runtime: (lambda r=runtime: predict(r)) for runtime in runtimes}}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(median_time(call, 1))
    result = {"tiles": count, **{name: statistics.median(t) for name, t in times.items()}}
    fastest = min(runtimes, key=result.get)
    eager = probabilities["torch"]
    result.update(fastest=fastest, agree=float((probabilities[fastest].argmax(0) == eager.argmax(0)).mean()),
                  diff=float(np.abs(probabilities[fastest] - eager).max()))
    return result


def run_empty(model, size: int, tile: int, repeats: int, runtime: str) -> dict:
    rng = np.random.default_rng(1)
    image = np.zeros((size, size), np.uint8)  # 70% empty: content in the left 30%
    image[:, : int(0.3 * size)] = rng.integers(0, 255, (size, int(0.3 * size)))
    results = {}

    def run(skip):
        pipeline.SKIP_CONSTANT_TILES = skip
        results[skip] = segarch.predict(model, image, tile=tile, overlap=0.25, batch_size=4, device="cpu",
                                        runtime=runtime)

    try:
        every = median_time(lambda: run(False), repeats)
        skipped = median_time(lambda: run(True), repeats)
    finally:
        pipeline.SKIP_CONSTANT_TILES = True
    return {"ratio": skipped / every, "equal": bool(np.array_equal(results[True], results[False]))}


def trained_agreement(size: int) -> dict[str, float]:
    """The share of labels each fast runtime gives as torch does, shipped ``unet.nuclei2d`` on generated nuclei;
    ``"foreground"``: the share of nuclei pixels."""
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d")
    image, _ = nuclei((size, size), seed=7)
    eager = segarch.predict(model, image, device="cpu", runtime="torch")
    agreement = {runtime: float((segarch.predict(model, image, device="cpu", runtime=runtime) == eager).mean())
                 for runtime in FAST_RUNTIMES}
    return {**agreement, "foreground": float((eager > 0).mean())}


def _families(rng, size: int) -> list:
    """DeepLabv3+, ENet and HRNetV2 on a ``size``² image (tile 256), single-channel input, 3 classes."""
    image = (rng.random((size, size)) * 255).astype(np.uint8)
    configs = [("deeplab_v3_plus", {"width": 0.5}), ("enet", {}), ("hrnet_v2", {"width": 18})]
    return [(name, segarch.Model.from_zoo(name, spatial_dims=2, out_channels=3, **options), image, 256)
            for name, options in configs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size2d", type=int, default=2048)
    parser.add_argument("--size3d", type=int, default=256)
    parser.add_argument("--families-size", type=int, default=1024)
    parser.add_argument("--only", nargs="*", help="cases to run: 2D, 3D, deeplab_v3_plus, enet, hrnet_v2")
    parser.add_argument("--no-extras", action="store_true", help="skip the trained-model and 70%%-empty runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    unet2d = segarch.Model.from_zoo("unet", spatial_dims=2, features=(16, 32, 64, 128, 256), norm="batch")
    unet3d = segarch.Model.from_zoo("unet", spatial_dims=3, features=(8, 16, 32, 64), norm="batch")
    cases = [("2D", unet2d, (rng.random((args.size2d,) * 2) * 255).astype(np.uint8), 256),
             ("3D", unet3d, (rng.random((args.size3d,) * 3) * 255).astype(np.uint8), 64)]
    cases += _families(rng, args.families_size)
    cases = [c for c in cases if not args.only or c[0] in args.only]
    print(f"CPU, fp32, overlap 0.25, batch 4, median of {args.repeats}; torch threads {torch.get_num_threads()}; "
          f"runtimes: torch, {', '.join(FAST_RUNTIMES)}; ratios to (a) the eager forward floor")
    columns = "".join(f"  {r + '/(a)':>16}" for r in ("torch", *FAST_RUNTIMES))
    print(f"{'case':<16} {'image':<13} {'tile':>4} {'tiles':>5}{columns}  {'fastest/(a)':>11}  {'fastest':<11}"
          f"  {'labels agree':>12}  {'max |Δp|':>9}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, image, tile in cases:
            model.preprocessing = []  # the raw image into the network, as benchmarks/tiling.py
            r = run_case(name, model, image, tile, args.repeats, Path(tmp))
            ratios = "".join(f"  {r[runtime] / r['floor']:>16.2f}" if runtime in r else f"  {'refused':>16}"
                             for runtime in ("torch", *FAST_RUNTIMES))
            print(f"{name:<16} {'×'.join(map(str, image.shape)):<13} {tile:>4} {r['tiles']:>5}{ratios}  "
                  f"{r[r['fastest']] / r['floor']:>11.2f}  {r['fastest']:<11}  {100 * r['agree']:>11.3f}%  "
                  f"{r['diff']:>9.1e}", flush=True)
    if args.no_extras:
        return
    agreement = trained_agreement(1024)
    print(f"shipped unet.nuclei2d on a generated 1024² nuclei image (foreground "
          f"{100 * agreement['foreground']:.0f}%): labels agree with torch "
          + ", ".join(f"{runtime} {100 * agreement[runtime]:.3f}%" for runtime in FAST_RUNTIMES))
    unet2d.preprocessing = []
    for runtime in ("torch", *FAST_RUNTIMES):
        e = run_empty(unet2d, args.size2d // 2, 256, args.repeats, runtime)
        print(f"70%-empty {args.size2d // 2}² image, {runtime}: constant tiles computed once ÷ every tile computed "
              f"= {e['ratio']:.2f}; labels identical: {e['equal']}")


if __name__ == "__main__":
    main()
