"""IoU and click-to-mask latency of extreme-point models on fresh generated objects, 2D and 3D.

Run: ``python benchmarks/prompts.py [--model dextr_light ...] [--scenes 40] [--seed 9100] [--threads 1]``.
By default every shipped extreme-point model is measured (``dextr_light`` on 160² scenes, ``dextr_light3d``
on 48×64×64 volumes). Every object of the generated scenes (:func:`segarch.prompts.object_scene`, seeds
never used in training) is prompted with its exact extreme points, then with the points moved by up to 2
pixels (as clicks are); prints mean/median/min IoU, the mean IoU by object size, and the median and
90th-percentile latency of the whole :func:`segarch.prompts.segment_from_points` call (crop, heat map,
network, paste), and, side by side, the network call as :func:`segarch.prompts.segment_from_points` makes it
against a plain batch-of-one forward pass (a single small 3D crop runs as two copies: PyTorch's oneDNN path).
Targets for the shipped light models: mean IoU >= 0.90, median latency <= 150 ms on a 2-core CPU. First, the
click latency under each runtime (``--runtimes``, ``segment_from_points(..., runtime=...)``) side by side.

For a model trained with corrective clicks, the clicks-to-IoU curve (:func:`segarch.prompts.evaluate.click_curve`):
each object gets its exact extreme points, then clicks at the centre of the largest error region; prints the mean
IoU after the extreme points and after 1, 2, 3 corrections, NoC@85 / NoC@90 (clicks, extreme points included, to
reach 85% / 90% IoU, capped at 20) and the latency per corrective click; in 3D also on volumes with thick slices
(Z spacing 2 and 4 times X/Y, 16 x 64 x 64; each crop resampled to the model's training voxel size when it
records one). For a 3D model, the IoU per anisotropy (Z spacing 1 to 5 times X/Y): the extreme points on volumes
with thick slices, each crop taken as it is and resampled to the model's voxel size (``pixel_size=``), side by
side on the same objects. Targets: 2D NoC@90 <= 5, 3D NoC@90 <= 8, 3D mean IoU >= 0.90
after two corrections, <= 100 ms per click.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import torch

from segarch import pretrained
from segarch.prompts.evaluate import click_curve, evaluate_prompts
from segarch.prompts.segment import object_probability, resolve_prompt_model, settings_for

__all__ = ["main", "SHAPES"]

#: Scene shape per dimensionality: the shapes the shipped models were measured on.
SHAPES = {2: (160, 160), 3: (48, 64, 64)}
#: Volumes with thick slices (the clicks-to-IoU curve per Z spacing).
ANISOTROPIC_SHAPE = (16, 64, 64)


def forward_ratio(model, repeats: int = 15) -> float:
    """Median time of the network call as ``segment_from_points`` makes it ÷ a plain batch-of-one forward pass."""
    size = settings_for(model).size
    x = torch.rand((1, model.in_channels) + (size,) * model.spatial_dims)
    net = model.network.eval()
    as_run, plain = [], []
    with torch.no_grad():
        object_probability(model, x), net(x)  # warm-up
        for _ in range(repeats):  # interleaved: both see the same machine load
            t = time.perf_counter()
            object_probability(model, x)
            as_run.append(time.perf_counter() - t)
            t = time.perf_counter()
            net(x)
            plain.append(time.perf_counter() - t)
    return float(np.median(as_run) / np.median(plain))


def click_times(model, runtimes, repeats: int = 15, seed: int = 9100) -> dict[str, float]:
    """Median milliseconds of a whole ``segment_from_points`` call on one generated object under each runtime,
    interleaved (the same machine load for all); exports and runners made before timing."""
    from segarch.prompts import extreme_points, object_scene, segment_from_points

    image, labels = object_scene(SHAPES[model.spatial_dims], seed=seed)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    points = extreme_points(labels == int(sizes.argmax()))
    times = {runtime: [] for runtime in runtimes}
    for runtime in runtimes:  # warm-up: the export (once, cached) and the runner
        segment_from_points(model, image, points, runtime=runtime)
    for _ in range(repeats):
        for runtime in runtimes:
            t = time.perf_counter()
            segment_from_points(model, image, points, runtime=runtime)
            times[runtime].append(time.perf_counter() - t)
    return {runtime: 1000 * float(np.median(t)) for runtime, t in times.items()}


def anisotropy_ious(model, scenes: int, seed: int, spacings=(1, 2, 3, 4, 5)) -> dict:
    """Print (and return) the mean IoU from the extreme points on volumes with thick slices, per Z spacing: the crop
    as it is, and resampled to the model's training voxel size (``segment_from_points(..., pixel_size=)``)."""
    from segarch.prompts import extreme_points, segment_from_points
    from segarch.prompts.evaluate import iou
    from segarch.prompts.synthetic import anisotropic_scene

    out = {}
    for z_spacing in spacings:
        plain, resampled = [], []
        for s in range(scenes):
            image, labels = anisotropic_scene(ANISOTROPIC_SHAPE, z_spacing=z_spacing, seed=seed + s)
            for value in range(1, int(labels.max()) + 1):
                mask = labels == value
                if mask.sum() < 12 or np.ptp(np.nonzero(mask)[0]) < 1:  # 6 points need 2 slices at least
                    continue
                points = extreme_points(mask)
                plain.append(iou(segment_from_points(model, image, points), mask))
                resampled.append(iou(segment_from_points(model, image, points, pixel_size=(z_spacing, 1, 1)), mask))
        out[z_spacing] = {"objects": len(plain), "as_is": float(np.mean(plain)),
                          "resampled": float(np.mean(resampled))}
        print(f"  Z spacing {z_spacing}x ({len(plain)} objects, {'x'.join(map(str, ANISOTROPIC_SHAPE))}): mean IoU "
              f"{np.mean(plain):.4f} as is, {np.mean(resampled):.4f} resampled to the model's voxels "
              f"(difference {np.mean(resampled) - np.mean(plain):+.4f})", flush=True)
    return out


def print_click_curves(model, scenes: int, seed: int) -> dict:
    """Print (and return) the clicks-to-IoU curve, in 3D also per Z spacing."""
    dims = model.spatial_dims
    runs = {1: SHAPES[dims]} if dims == 2 else {1: SHAPES[3], 2: ANISOTROPIC_SHAPE, 4: ANISOTROPIC_SHAPE}
    out = {}
    for z_spacing, shape in runs.items():
        voxels = (z_spacing, 1, 1) if dims == 3 and model.pixel_size else None
        c = click_curve(model, scenes=scenes, seed=seed, shape=shape, z_spacing=z_spacing, pixel_size=voxels)
        where = f"{'x'.join(map(str, shape))}" + (f", Z spacing {z_spacing}x" if dims == 3 else "")
        curve = "  ".join(f"{k}: {v:.4f}" for k, v in enumerate(c["mean_iou"]))
        print(f"  corrective clicks ({c['objects']} objects, {where}): mean IoU after corrections {curve}")
        print(f"    NoC@85 {c['noc85']:.2f} (never: {c['missed85']})  NoC@90 {c['noc90']:.2f} (never: "
              f"{c['missed90']})  | per click median {c['median_ms']:.1f} ms  p90 {c['p90_ms']:.1f} ms")
        out[z_spacing] = c
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", help="shipped model names or model files (default: every shipped "
                        "extreme-point model)")
    parser.add_argument("--scenes", type=int, default=None, help="default: 40 in 2D, 12 in 3D")
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jitter", type=float, default=2.0)
    parser.add_argument("--runtimes", nargs="*", default=["torch", "onnxruntime", "openvino"],
                        help="runtimes whose click latency is compared side by side (the installed ones)")
    parser.add_argument("--clicks-only", action="store_true", help="only the runtimes' click latency")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.model or [n for n in pretrained.names(task="interactive")]
    results = {}
    for name in names:
        model = resolve_prompt_model(name)
        dims = model.spatial_dims
        runtimes = [r for r in args.runtimes if r == "torch" or importlib.util.find_spec(r)]
        clicks = click_times(model, runtimes)
        print(f"model {name}: click latency median, {args.threads} thread(s): " + ", ".join(
            f"{r} {ms:.1f} ms ({ms / clicks['torch']:.2f} of torch)" for r, ms in clicks.items()), flush=True)
        results[name] = {"clicks_ms": clicks}
        if args.clicks_only:
            continue
        scenes = args.scenes or (40 if dims == 2 else 12)
        shape = SHAPES[dims]
        exact = evaluate_prompts(model, scenes=scenes, seed=args.seed, shape=shape)
        jittered = evaluate_prompts(model, scenes=scenes, seed=args.seed, jitter=args.jitter, shape=shape)
        print(f"model {name} ({dims}D, {model.num_parameters / 1e6:.2f}M parameters), {args.threads} thread(s), "
              f"{exact['objects']} objects in {scenes} generated scenes {'x'.join(map(str, shape))} "
              f"(seed {args.seed}+)")
        for what, r in (("exact extreme points", exact), (f"points jittered by <= {args.jitter:g} px", jittered)):
            print(f"  {what:32s} IoU mean {r['mean_iou']:.4f}  median {r['median_iou']:.4f}  min {r['min_iou']:.4f}"
                  f"  | latency median {r['median_ms']:.1f} ms  p90 {r['p90_ms']:.1f} ms")
        sizes = ", ".join(f"{lo}-{hi if hi else '...'} px: {iou:.3f} ({n})" for lo, hi, n, iou in exact["by_extent"])
        print(f"  mean IoU by object extent (exact points): {sizes}")
        ratio = forward_ratio(model)
        print(f"  network call as segment_from_points makes it / plain batch-of-one forward: {ratio:.2f}")
        results[name].update({"exact": exact, "jittered": jittered, "forward_ratio": ratio})
        if dims == 3 and model.pixel_size:
            results[name]["anisotropy"] = anisotropy_ious(model, scenes, args.seed)
        if (model.prompt or {}).get("corrections"):
            results[name]["clicks"] = print_click_curves(model, scenes, args.seed)
    return results


if __name__ == "__main__":
    main()
