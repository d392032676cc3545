"""How far the generated nuclei can be separated at all: instance decoders given parts of the truth.

On hard generated images (``samples(..., hard=True)``; a validation seed, neither a training nor a test
seed of ``scripts/train_instances.py``) the script scores, at F1@0.5 and mean AP:

* ``targets``: the distance decoder on the *true* class targets (one-hot): the ceiling of the shipped
  representation and decoder (in 3D the targets are made at the model's voxel size and resampled back,
  as ``predict_instances`` does with the network's output).
* ``intensity``: the true foreground and one ideal seed per nucleus (its inner pixels), grown by a
  watershed over the noise-free image: what intensity alone separates, even with perfect seeds.
* ``outline``: the true foreground only (the union of all nuclei), seeds from the peaks of its distance
  transform (h-maxima): what the outline alone separates, with no intensity and no truth about objects.

Usage::

    python scripts/instances_oracle.py 2d            # 16 images 256x256
    python scripts/instances_oracle.py 3d --images 6  # volumes 40x128x128, targets at voxel size 2x1x1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nuclei_contrast import noise_free  # noqa: E402
from train_instances import RECIPES, to_voxel_size  # noqa: E402

from segarch.instances import get_decoder, match_many  # noqa: E402
from segarch.instances.decode import seeded_watershed  # noqa: E402
from segarch.instances.resample import resample_spatial  # noqa: E402
from segarch.instances.targets import edge_distance, normalized_distance  # noqa: E402
from segarch.synthetic import samples  # noqa: E402


def targets_oracle(sample, decoder, voxel_size) -> np.ndarray:
    """The decoder run on one-hot true targets (made at ``voxel_size`` and resampled back when given)."""
    labels, spacing = sample.labels, sample.spacing[-sample.labels.ndim:]
    if voxel_size is not None:
        _, labels = to_voxel_size(sample, voxel_size)
        spacing = voxel_size
    classes = decoder.targets(labels, spacing)
    onehot = np.stack([(classes == k).astype(np.float32) for k in range(decoder.channels)])
    if voxel_size is not None:
        axes = "ZYX"[-labels.ndim:]
        onehot = resample_spatial(onehot, "C" + axes, axes, sample.labels.shape)
    return decoder.decode(onehot)


def intensity_oracle(sample, clean: np.ndarray) -> np.ndarray:
    """True foreground, one seed per true nucleus (normalised edge distance > 0.7), grown over the clean image."""
    spacing = sample.spacing[-sample.labels.ndim:]
    seeds = normalized_distance(sample.labels, spacing) > 0.7
    image = clean.astype(np.float32)
    return seeded_watershed(sample.labels > 0, image, seeds)


def outline_oracle(sample, h: float) -> np.ndarray:
    """True foreground only; seeds are the h-maxima of its edge distance (pixels)."""
    from skimage.morphology import h_maxima

    spacing = sample.spacing[-sample.labels.ndim:]
    distance = edge_distance((sample.labels > 0).astype(np.uint32), spacing)
    return seeded_watershed(sample.labels > 0, distance, h_maxima(distance, h).astype(bool))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dims", choices=["2d", "3d"])
    parser.add_argument("--images", type=int, default=None, help="images (default 16 in 2D, 6 in 3D)")
    parser.add_argument("--seed", type=int, default=5011, help="seed of the draw (default 5011, a validation seed)")
    args = parser.parse_args(argv)
    name = f"unet.nuclei{args.dims}_instances"
    recipe = RECIPES[name]
    if args.seed in (recipe["seed"], recipe["test_seed"]):
        parser.error(f"--seed {args.seed} is the training's or the test's seed of {name}; pick another.")
    shape = tuple(recipe["test_shape"])
    images = args.images or (16 if args.dims == "2d" else 6)
    drawn = samples(images, shape, seed=args.seed, hard=True)
    # The clean images: the same nuclei, blur and shading without noise (each sample's seed, as samples() draws it).
    clean = [noise_free(shape, args.seed * 100003 + i).image for i in range(images)]
    voxel_size = recipe.get("voxel_size")
    truths = [s.labels for s in drawn]
    rows = {}
    for setting in (0.5, 0.65):
        decoder = get_decoder(recipe["decoder"], seed_threshold=setting)
        rows[f"targets (seed_threshold {setting})"] = [targets_oracle(s, decoder, voxel_size) for s in drawn]
    rows["intensity (true foreground + ideal seeds)"] = [intensity_oracle(s, c) for s, c in zip(drawn, clean)]
    for h in (0.5, 1.0, 2.0):
        rows[f"outline (true foreground, h={h:g})"] = [outline_oracle(s, h) for s in drawn]
    for label, preds in rows.items():
        scores = match_many(truths, preds).summary()
        print(json.dumps({"oracle": label, "images": images, "shape": list(shape), "seed": args.seed,
                          "f1@0.5": round(scores["f1@0.5"], 4), "mean_ap": round(scores["mean_ap"], 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
