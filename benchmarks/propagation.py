"""Slice-to-slice propagation against the 3D model on generated anisotropic stacks: IoU and clicks per object.

Run: ``python benchmarks/propagation.py [--spacings 2 3 4 5] [--stacks 3] [--seed 9300] [--refine 1]
[--scales 1]``.
Each stack (:func:`segarch.prompts.synthetic.anisotropic_stack`: 20-40 thick slices, z spacing 2-5x the xy
pixel, objects of 24-80 pixels across, seeds never used in training) has every object of at least 40 voxels
segmented twice: (a) its 4 extreme points clicked on its largest slice, then :func:`segarch.prompts.propagate`
with the 2D light model (4 clicks + one Propagate); (b) its 6 3D extreme points with the 3D light model
(:func:`segarch.prompts.segment_from_points`, 6 clicks). Prints the mean/median IoU of each per z spacing, the
share of objects where propagation wins, the slices found against the true ones, and the seconds per object.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from segarch import pretrained
from segarch.prompts import extreme_points, propagate, segment_from_points
from segarch.prompts.evaluate import iou
from segarch.prompts.synthetic import anisotropic_stack

__all__ = ["main", "measure"]


def measure(spacing: int, stacks: int, seed: int, refine: int, model2d, model3d, scales=(1.0,)) -> dict:
    """Per-object IoU and seconds of propagation (2D model) and the 3D model on ``stacks`` generated stacks."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(stacks):
        slices = int(rng.integers(20, 41))
        image, labels = anisotropic_stack(slices, spacing, seed=seed + 101 * spacing + s)
        for value in np.unique(labels)[1:]:
            truth = labels == value
            if truth.sum() < 40:
                continue
            areas = truth.sum(axis=(1, 2))
            z = int(areas.argmax())
            t = time.perf_counter()
            obj = propagate(model2d, image, z, points=extreme_points(truth[z]), refine=refine, scales=scales)
            t_prop = time.perf_counter() - t
            t = time.perf_counter()
            mask3d = segment_from_points(model3d, image, extreme_points(truth))
            t_3d = time.perf_counter() - t
            rows.append({"iou_propagate": iou(obj.volume(image.shape), truth), "iou_3d": iou(mask3d, truth),
                         "true_slices": int((areas > 0).sum()), "found_slices": len(obj.slices),
                         "seconds_propagate": t_prop, "seconds_3d": t_3d})
    return {"spacing": spacing, "objects": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacings", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--stacks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=9300)
    parser.add_argument("--refine", type=int, default=1)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="the previous slice's points moved in/out by these factors (1 alone: as they are)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model2d = pretrained.load("dextr_light.objects2d")
    model3d = pretrained.load("dextr_light.objects3d")
    print(f"propagation (dextr_light.objects2d, refine={args.refine}, scales {args.scales}; 4 clicks + Propagate) "
          f"vs 3D model (dextr_light.objects3d; 6 clicks), {args.stacks} stacks per z spacing, seed {args.seed}+")
    results, everything = {}, []
    for spacing in args.spacings:
        r = measure(spacing, args.stacks, args.seed, args.refine, model2d, model3d, tuple(args.scales))
        rows = r["objects"]
        everything += rows
        prop = np.array([o["iou_propagate"] for o in rows])
        three = np.array([o["iou_3d"] for o in rows])
        found = np.array([o["found_slices"] - o["true_slices"] for o in rows])
        print(f"  z spacing {spacing}x: {len(rows)} objects | IoU propagate mean {prop.mean():.3f} median "
              f"{np.median(prop):.3f} | 3D model mean {three.mean():.3f} median {np.median(three):.3f} | "
              f"propagation better on {np.mean(prop > three):.0%} | slices found - true: median "
              f"{np.median(found):+.0f} | s/object {np.median([o['seconds_propagate'] for o in rows]):.2f} vs "
              f"{np.median([o['seconds_3d'] for o in rows]):.2f}")
        results[spacing] = r
    prop = np.array([o["iou_propagate"] for o in everything])
    three = np.array([o["iou_3d"] for o in everything])
    print(f"  all: {len(everything)} objects | IoU propagate mean {prop.mean():.3f} | 3D model mean "
          f"{three.mean():.3f} | clicks per object: propagate 4 + 1 action, 3D model 6")
    return results


if __name__ == "__main__":
    main()
