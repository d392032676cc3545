"""Does ``segarch.train(..., adapt_to=...)`` (MADAN's feature-level adversarial alignment) help on another style?

A small U-Net learns generated nuclei of one imaging style (the *source*: bright nuclei on a dark
background, labelled). A second model trains the same way, same seed and steps, while it is aligned to
unlabelled images of another style (the *target*). Both are measured on fresh, labelled target-style images
(and on fresh source-style images: adaptation must not cost the source much), printed side by side:
foreground Dice and object F1 at IoU 0.5 (connected components of the foreground).

Target styles (``--target``):

- ``inverted``: the same microscope with inverted contrast (dark nuclei on a bright background, as in
  bright-field or phase images), which the training augmentation never shows;
- ``microscope``: a dim, blurred, noisy microscope with patchy illumination, haze and textured nuclei;
- ``shaded``: the source microscope with strongly uneven illumination (gradient, patchy shading, haze);
- ``blurred``: the source microscope out of focus and starved of light (blur sigma 3 px, 12 photons);
- ``camera``: the source microscope with another camera: pixels twice as large (each 2×2 block averaged, shown
  on the source's grid, so nuclei keep their size in pixels) and a noisier sensor with an offset (25 photons,
  read noise 0.08, background 0.15; defined before any measurement, see ``benchmarks/results/adaptation_plan.md``).

The last three keep the image content (bright nuclei of the same size on a dark background) while the
source-only model's outputs there are structurally wrong (merged, speckled or missing regions): the case
output-space alignment is meant for. (Larger nuclei, radius 12-20 px, cost the source-only model nothing,
Dice 0.989, so no such style is offered.)

``--discriminator`` is ``segarch.train``'s ``adapt_discriminator``: ``spatial`` (AdaptSegNet's, which sees the
layout of the outputs; weight 0.01) or ``per-place`` (MADAN's, ``segarch.train``'s default; weight 0.1).

Each seed (``--seeds``) trains both models afresh (initial weights, patches); the table gives each seed's
numbers, then the medians over seeds of target and source Dice and F1@0.5, before and after adaptation side
by side, the median gain with its spread (min to max), and on how many seeds adaptation raised the target
Dice. Several ``--target`` styles share each seed's source-only model. ``--data-seed`` draws other images
(labelled source images, unlabelled target images and fresh test images: seeds ``D``, ``D+1``, ``D+2``; the
first measurements used 1 with seeds 0 1 2 and 4 test images).

Run: ``python benchmarks/adaptation.py``: without arguments, the case where adaptation helps, the
pre-registered confirmation run (``benchmarks/results/adaptation_plan.md``): ``blurred`` target, spatial
discriminator, seeds 10-14, data seed 101, 8 test images (about 1 minute of one CPU core per seed).
``--target blurred shaded camera`` reproduces ``benchmarks/results/adaptation_fresh.log``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from skimage.measure import label as connected_components

import segarch
from segarch.instances import match_many
from segarch.synthetic import Conditions, nuclei
from segarch.training.adaptation import DISCRIMINATORS
from segarch.training.metrics import dice_per_class

SOURCE = Conditions(radius=(5.0, 9.0), coverage=0.3, brightness=(0.6, 1.0), texture=0.1, background=0.05,
                    gradient=0.05, haze=0.05, blur=1.0, photons=500.0, read_noise=0.01)
MICROSCOPE = Conditions(radius=(5.0, 9.0), coverage=0.3, brightness=(0.25, 0.6), texture=0.35, background=0.3,
                        gradient=0.3, haze=0.3, blur=2.2, photons=20.0, read_noise=0.06, shading=0.6)
#: Target styles whose image content is the source's but whose source-only outputs are structurally wrong.
STRUCTURAL = {
    "blurred": replace(SOURCE, blur=3.0, photons=12.0, read_noise=0.08),  # heavy blur, low signal-to-noise
    "shaded": replace(SOURCE, gradient=0.6, shading=0.9, haze=0.3),  # uneven illumination
}
#: A different camera: lower resolution (2×2 binning) and a noisier sensor with an offset.
CAMERA = replace(SOURCE, photons=25.0, read_noise=0.08, background=0.15)
STYLES = ("inverted", "microscope", *STRUCTURAL, "camera")


def binned(image: np.ndarray, factor: int = 2) -> np.ndarray:
    """``image`` seen by pixels ``factor`` times as large (each block averaged), shown on the same grid."""
    h, w = (s - s % factor for s in image.shape)
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    out = image.copy()
    out[:h, :w] = np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1)
    return out


def images_of_style(style: str, n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` generated images of ``style`` ("source" or one of :data:`STYLES`) with their instance labels."""
    conditions = {"microscope": MICROSCOPE, "camera": CAMERA}.get(style) or STRUCTURAL.get(style, SOURCE)
    pairs = [nuclei((size, size), seed=seed * 1000 + i, conditions=conditions) for i in range(n)]
    images = [image for image, _ in pairs]
    if style == "inverted":
        images = [float(image.max()) - image for image in images]
    if style == "camera":
        images = [binned(image) for image in images]
    return images, [labels for _, labels in pairs]


def measure(model, images, labels) -> tuple[float, float]:
    """Foreground Dice (pooled over the images) and object F1 at IoU 0.5 (connected components)."""
    preds = [np.asarray(segarch.predict(model, image, output="labels", device="cpu")) for image in images]
    dice = dice_per_class(np.concatenate([p.reshape(-1) for p in preds]),
                          np.concatenate([(t > 0).reshape(-1).astype(np.int64) for t in labels]),
                          np.ones(sum(p.size for p in preds), bool), num_classes=2)[1]
    objects = match_many(labels, [connected_components(p > 0) for p in preds], thresholds=(0.5,))
    return float(dice), float(objects.f1(0.5))


def _report(event, domain_losses: list[float]) -> None:
    if event.domain_loss is not None:
        domain_losses.append(event.domain_loss)
    if event.kind == "validation" or event.step % 50 == 0:
        print(f"  {event.message} ({event.seconds:.0f} s)", file=sys.stderr, flush=True)


def _spread(values) -> str:
    return f"{np.median(values):+.3f} [{min(values):+.3f}, {max(values):+.3f}]"


def _print_style(style: str, seeds, results, discrimination, seconds, args) -> dict:
    """One target style's table: each seed's numbers, then medians over seeds; returns its summary."""
    print(f"\n== target style {style!r}: U-Net (8-64), {args.steps} steps on {args.images} labelled source images "
          f"({args.size} px), {args.images} unlabelled target images, adapt_weight {args.adapt_weight:g}, "
          f"{args.discriminator} discriminator; measured on {args.test} fresh labelled images per style; data "
          f"seed {args.data_seed}; seeds {' '.join(map(str, seeds))}")
    print(f"{'seed':>4} {'model':<13} {'target Dice':>11} {'target F1@0.5':>13} {'source Dice':>11} "
          f"{'source F1@0.5':>13}")
    keys = {"source only": "source only", "adapted": f"adapted to {style}"}
    for seed in seeds:
        for name, key in keys.items():
            (t_dice, t_f1), (s_dice, s_f1) = results[seed][key][style], results[seed][key]["source"]
            print(f"{seed:>4} {name:<13} {t_dice:>11.3f} {t_f1:>13.3f} {s_dice:>11.3f} {s_f1:>13.3f}")
        if (seed, style) in discrimination:
            print(f"{'':>4} {discrimination[seed, style]}")
    print(f"{'median':<18} {'target Dice':>11} {'target F1@0.5':>13} {'source Dice':>11} {'source F1@0.5':>13}")
    for name, key in keys.items():
        row = [np.median([results[s][key][domain][k] for s in seeds])
               for domain, k in ((style, 0), (style, 1), ("source", 0), ("source", 1))]
        print(f"{name:<18} " + " ".join(f"{v:>{w}.3f}" for v, w in zip(row, (11, 13, 11, 13))))
    gains = [results[s][keys["adapted"]][style][0] - results[s]["source only"][style][0] for s in seeds]
    f1_gains = [results[s][keys["adapted"]][style][1] - results[s]["source only"][style][1] for s in seeds]
    costs = [results[s][keys["adapted"]]["source"][0] - results[s]["source only"]["source"][0] for s in seeds]
    print(f"target Dice gain from adaptation: median {_spread(gains)} (min, max); higher on "
          f"{sum(g > 0 for g in gains)} of {len(gains)} seeds; target F1@0.5 gain {_spread(f1_gains)}; "
          f"source Dice change {_spread(costs)}; training time ratio adapted / source only: "
          f"{np.median(seconds[style]) / np.median(seconds['source only']):.2f}", flush=True)
    return {"target_dice_gain": gains, "target_f1_gain": f1_gains, "source_dice_change": costs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=STYLES, nargs="+", default=["blurred"],
                        help="target style(s); several share each seed's source-only model")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=96, help="side of the generated images")
    parser.add_argument("--images", type=int, default=6, help="labelled source and unlabelled target images")
    parser.add_argument("--test", type=int, default=8, help="fresh labelled images per style to measure on")
    parser.add_argument("--adapt-weight", type=float,
                        help="weight of the alignment loss (default: the discriminator's, 0.1 per-place, 0.01 spatial)")
    parser.add_argument("--discriminator", choices=("per-place", "spatial"), default="spatial",
                        help="segarch.train's adapt_discriminator: AdaptSegNet's spatial one or MADAN's per-place "
                        "one (segarch.train's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14], help="training seeds")
    parser.add_argument("--data-seed", type=int, default=101,
                        help="images: labelled source D, unlabelled target D+1, fresh test D+2")
    parser.add_argument("--json", help="also write every seed's numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.adapt_weight is None:
        args.adapt_weight = DISCRIMINATORS[args.discriminator][1]

    styles = list(dict.fromkeys(args.target))
    source_images, source_labels = images_of_style("source", args.images, args.size, seed=args.data_seed)
    fresh = {style: images_of_style(style, args.test, args.size, seed=args.data_seed + 2)
             for style in ("source", *styles)}
    results: dict[int, dict[str, dict[str, tuple[float, float]]]] = {}
    seconds: dict[str, list[float]] = {"source only": [], **{style: [] for style in styles}}
    discrimination: dict[tuple[int, str], str] = {}  # per seed and style: aligned steps, discriminator's loss

    def settings(seed: int) -> dict:
        return dict(options={"features": (8, 16, 32, 64)}, steps=args.steps, patch=48, batch_size=4, seed=seed,
                    lr=2e-3, device="cpu",
                    val_fraction=0)  # both keep their last weights: source validation would not see the target

    for seed in args.seeds:  # the source-only models, measured on every style
        start = time.perf_counter()
        model = segarch.train("unet", source_images, source_labels, **settings(seed),
                              progress=lambda event: _report(event, []))
        seconds["source only"].append(time.perf_counter() - start)
        results[seed] = {"source only": {style: measure(model, *data) for style, data in fresh.items()}}
    summaries = {}
    for style in styles:  # style by style, so that each table prints as soon as its seeds are done
        target_unlabelled, _ = images_of_style(style, args.images, args.size, seed=args.data_seed + 1)  # unlabelled
        for seed in args.seeds:
            start = time.perf_counter()
            domain_losses: list[float] = []
            model = segarch.train("unet", source_images, source_labels, **settings(seed),
                                  adapt_to=target_unlabelled, adapt_weight=args.adapt_weight,
                                  adapt_discriminator=args.discriminator,
                                  progress=lambda event: _report(event, domain_losses))
            seconds[style].append(time.perf_counter() - start)
            if domain_losses:  # ~0.69 when the discriminator cannot tell the domains apart
                counted = re.search(r"counted on (\d+ of \d+) steps", model.description)
                discrimination[seed, style] = (
                    f"alignment counted on {counted.group(1) if counted else '?'} steps; discriminator loss "
                    f"{np.mean(domain_losses[:20]):.3f} (first 20 steps) -> {np.mean(domain_losses[-20:]):.3f} "
                    f"(last 20)")
            results[seed][f"adapted to {style}"] = {s: measure(model, *fresh[s]) for s in ("source", style)}
        summaries[style] = _print_style(style, args.seeds, results, discrimination, seconds, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k != "json"},
                       "results": {str(seed): {name: {style: {"dice": d, "f1": f1} for style, (d, f1) in by.items()}
                                               for name, by in by_model.items()}
                                   for seed, by_model in results.items()},
                       "summaries": summaries}, f, indent=1)


if __name__ == "__main__":
    main()
