"""Panoptic output at another pixel size: objects found on fresh scenes taken at 2x, 2.5x or anisotropic pixels.

An oracle network (``tests/panoptic_resample_helpers.MaskOracleHeads``: the exact heads of the objects in its
tile, read from class masks) trained, so to say, at pixel size 1 is given the same scene taken with larger pixels
(masks averaged over each pixel); ``segarch.predict(..., output="panoptic", pixel_size=...)`` resamples it to the
model's pixel size, brings the heads back and groups them on the image's grid. Printed per architecture and pixel
size, over ``--scenes`` fresh scenes: the median and minimum F1@0.5 against the scene's objects on the image's
grid, and the pixel share with the right class; beside it the same without rescaling the offsets, and without
scaling the decoder's lengths (the two choices ``segarch.instances.panoptic_resample`` makes).

Usage::

    python scripts/panoptic_pixel_size.py --scenes 5
    python scripts/panoptic_pixel_size.py --scenes 3 --3d
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import segarch  # noqa: E402
import segarch.instances.panoptic_resample as panoptic_resample  # noqa: E402
from segarch.instances import match  # noqa: E402
from segarch.models.model import Model  # noqa: E402
from panoptic_helpers import random_scene  # noqa: E402
from panoptic_resample_helpers import MaskOracleHeads, at_pixel_size  # noqa: E402

RADIUS = {"panoptic_deeplab": 3, "deeperlab": 8}  # DeeperLab's keypoint disk, in the model's pixels


def run(arch: str, factors, seed: int, variant: str):
    dims = len(factors)
    shape, sides, count = ((256, 256), (12, 25), 16) if dims == 2 else ((64, 96, 96), (8, 15), 8)
    labels, classes = random_scene(np.random.default_rng(seed), shape=shape, count=count, sides=sides)
    radius = RADIUS[arch] if dims == 2 else 6
    model = Model(MaskOracleHeads(arch, dims, radius), arch, spatial_dims=dims, in_channels=2, out_channels=3,
                  preprocessing=[], class_names=["background", "a", "b"], pixel_size=[1.0] * dims)
    image, truth, truth_classes = at_pixel_size(labels, classes, factors)
    options = {"radius": radius, "keypoints_are_logits": False} if arch == "deeperlab" else {}
    kept = panoptic_resample.channel_factors, panoptic_resample.scale_decoder_options
    if variant == "offsets as is":
        panoptic_resample.channel_factors = lambda heads, scale: None
    if variant == "lengths as is":
        panoptic_resample.scale_decoder_options = lambda arch, decoder, options, scale: options
    try:
        result = segarch.predict(model, image, axes="CYX" if dims == 2 else "CZYX", output="panoptic",
                                 tile=96 if dims == 2 else 48, overlap=0.5, blend="crop", device="cpu",
                                 pixel_size=list(factors),
                                 instance_options={"block": 48 if dims == 2 else 24, "halo": 24 if dims == 2 else 12,
                                                   "decoder_options": options})
    finally:
        panoptic_resample.channel_factors, panoptic_resample.scale_decoder_options = kept
    return (match(truth, result.instances.astype(np.int64)).f1(0.5),
            float((np.asarray(result.classes) == truth_classes).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--3d", dest="three_d", action="store_true", help="volumes with a Z step 2.5x and 3x")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(2.5, 1.0, 1.0), (3.0, 1.0, 1.0)] if args.three_d else [(2.0, 2.0), (2.5, 2.5)]
    seeds = [int(s) for s in np.random.default_rng().integers(1 << 31, size=args.scenes)]
    print(f"{args.scenes} fresh scenes (seeds {seeds}); F1@0.5 median / min, class accuracy median")
    print(f"{'architecture':18} {'pixel size':16} {'resampled':24} {'offsets as is':24} {'lengths as is':24}")
    for arch in ("panoptic_deeplab", "deeperlab"):
        for factors in sizes:
            cells = []
            for variant in ("resampled", "offsets as is", "lengths as is"):
                scores = [run(arch, factors, seed, variant) for seed in seeds]
                f1 = [s[0] for s in scores]
                cells.append(f"{statistics.median(f1):.3f} / {min(f1):.3f}, "
                             f"{statistics.median(s[1] for s in scores):.3f}")
            print(f"{arch:18} {str(factors):16} " + " ".join(f"{c:24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
