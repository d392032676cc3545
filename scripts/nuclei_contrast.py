"""How visible the line between two touching generated nuclei is, and how often the shipped model merges them.

For each pair of touching nuclei in hard generated test images (``samples(..., hard=True)``, the 2D
model card's test seeds), the script draws the same image again without noise (same seed, same nuclei,
blur and shading; only the photon and read noise left out) and reads the intensity along the segment
between the two centroids. The *dip* is how far the darkest point of that segment falls below the
dimmer of the two nuclei's brightest points on it (0: no dip, the two look like one blob in intensity;
only their outline can still separate them). With the model's labels it then counts, per pair, whether
one predicted object covers most of both nuclei (a merge), and prints merge rates by dip and by size.

Usage::

    python scripts/nuclei_contrast.py                       # unet.nuclei2d_instances on the card's test draw
    python scripts/nuclei_contrast.py --images 4 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from segarch import pretrained, synthetic
from segarch.instances import predict_instances

#: A dip below this share of the dimmer peak counts as "no visible dip" (noise alone hides it).
FAINT_DIP = 0.05


def noise_free(shape, seed: int) -> synthetic.Sample:
    """The hard sample of ``seed`` drawn again with (practically) no photon or read noise: same nuclei."""
    original = synthetic.random_conditions

    def quiet(rng, dims=2, *, hard=False):
        return dataclasses.replace(original(rng, dims, hard=hard), photons=1e9, read_noise=0.0)

    synthetic.random_conditions = quiet  # nuclei_sample draws its conditions through this name
    try:
        return synthetic.nuclei_sample(shape, seed=seed, hard=True)
    finally:
        synthetic.random_conditions = original


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of labels that share a face (4-connected in 2D)."""
    pairs = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)[1:].ravel()
        b = np.moveaxis(labels, axis, 0)[:-1].ravel()
        keep = (a > 0) & (b > 0) & (a != b)
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[keep].tolist(), b[keep].tolist())}
    return pairs


def dip(clean: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> float:
    """1 - (darkest point between the centroids) / (the dimmer of the two halves' brightest points)."""
    from scipy.ndimage import map_coordinates

    t = np.linspace(0.0, 1.0, 41)
    points = c1[:, None] + (c2 - c1)[:, None] * t
    profile = map_coordinates(clean, points, order=1, mode="nearest")
    peak = min(profile[:21].max(), profile[20:].max())
    valley = profile[np.argmax(profile[:21]): 20 + np.argmax(profile[20:]) + 1].min()
    return float(1.0 - valley / peak) if peak > 0 else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet.nuclei2d_instances")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=9011, help="the draw's seed (default: the card's test seed)")
    parser.add_argument("--shape", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from scipy import ndimage

    model = pretrained.load(args.model)
    rows = []
    for i, sample in enumerate(synthetic.samples(args.images, tuple(args.shape), seed=args.seed, hard=True)):
        seed = args.seed * 100003 + i  # what samples() used
        quiet = noise_free(tuple(args.shape), seed)
        assert np.array_equal(quiet.labels, sample.labels), "the noise-free draw must hold the same nuclei"
        clean = quiet.image
        pred = predict_instances(model, sample.image, device="cpu")
        truth = sample.labels
        ids = np.arange(1, int(truth.max()) + 1)
        centroids = np.asarray(ndimage.center_of_mass(np.ones_like(truth), truth, ids))
        areas = np.bincount(truth.ravel(), minlength=ids.size + 1)
        both = (truth > 0) & (pred > 0)
        pairs, shared = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
        holder = {}  # true id -> (predicted id covering the most of it, that share)
        for (t, p), n in zip(pairs.T.tolist(), shared.tolist()):
            if n > holder.get(t, (0, 0))[1]:
                holder[t] = (p, n)
        for a, b in touching_pairs(truth):
            if areas[a] < 3 or areas[b] < 3:
                continue
            pa, na = holder.get(a, (0, 0))
            pb, nb = holder.get(b, (0, 0))
            merged = pa == pb and pa > 0 and na >= 0.5 * areas[a] and nb >= 0.5 * areas[b]
            rows.append({"image": i, "small": sample.conditions.radius[0] < 5.0, "blur": sample.conditions.blur,
                         "radius": float(np.sqrt(min(areas[a], areas[b]) / np.pi)),
                         "dip": dip(clean, centroids[a - 1], centroids[b - 1]), "merged": bool(merged)})
    dips = np.array([r["dip"] for r in rows])
    merged = np.array([r["merged"] for r in rows])
    small = np.array([r["small"] for r in rows])
    report = {"pairs": len(rows), "faint_dip": FAINT_DIP}
    for name, where in (("all", np.ones_like(small)), ("smallest radius < 5 px", small),
                        ("smallest radius >= 5 px", ~small)):
        faint = where & (dips < FAINT_DIP)
        clear = where & (dips >= FAINT_DIP)
        report[name] = {"pairs": int(where.sum()), "no_visible_dip": round(float(faint.sum() / max(1, where.sum())), 3),
                        "merged_if_no_dip": round(float(merged[faint].mean()) if faint.any() else 0.0, 3),
                        "merged_if_dip": round(float(merged[clear].mean()) if clear.any() else 0.0, 3),
                        "median_dip": round(float(np.median(dips[where])) if where.any() else 0.0, 3)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
