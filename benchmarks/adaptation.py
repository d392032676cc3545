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
- ``blurred``: the source microscope out of focus and starved of light (blur sigma 3 px, 12 photons).

The last two keep the image content (bright nuclei of the same size on a dark background) while the
source-only model's outputs there are structurally wrong (merged, speckled or missing regions): the case
output-space alignment is meant for. (Larger nuclei, radius 12-20 px, cost the source-only model nothing,
Dice 0.989, so no such style is offered.)

``--discriminator spatial`` swaps MADAN's per-place discriminator (``segarch.train``'s) for AdaptSegNet's,
which sees the layout of the outputs: an experiment, the library's default stays the per-place one.

Each seed (``--seeds``, default 0 1 2) trains both models afresh (initial weights, patches); the table gives
each seed's numbers, then the median and the spread (min to max) over seeds, and on how many seeds adaptation
raised the target Dice.

Run: ``python benchmarks/adaptation.py`` (about 1.5 minutes of one CPU core per seed with the defaults).
"""

from __future__ import annotations

import argparse
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
from segarch.training.adaptation import DomainAdaptation, SpatialDomainDiscriminator
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
STYLES = ("inverted", "microscope", *STRUCTURAL)


def images_of_style(style: str, n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` generated images of ``style`` ("source", "inverted" or "microscope") with their instance labels."""
    conditions = MICROSCOPE if style == "microscope" else STRUCTURAL.get(style, SOURCE)
    pairs = [nuclei((size, size), seed=seed * 1000 + i, conditions=conditions) for i in range(n)]
    images = [image for image, _ in pairs]
    if style == "inverted":
        images = [float(image.max()) - image for image in images]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=STYLES, default="inverted")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=96, help="side of the generated images")
    parser.add_argument("--images", type=int, default=6, help="labelled source and unlabelled target images")
    parser.add_argument("--test", type=int, default=4, help="fresh labelled images per style to measure on")
    parser.add_argument("--adapt-weight", type=float, default=0.1)
    parser.add_argument("--discriminator", choices=("per-place", "spatial"), default="per-place",
                        help="MADAN's per-place discriminator (segarch's default) or AdaptSegNet's spatial one")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.discriminator == "spatial":  # an experiment: segarch.train itself keeps the per-place one
        DomainAdaptation.discriminator_type = SpatialDomainDiscriminator

    source_images, source_labels = images_of_style("source", args.images, args.size, seed=1)
    target_unlabelled, _ = images_of_style(args.target, args.images, args.size, seed=2)  # their labels unused
    fresh = {style: images_of_style(style, args.test, args.size, seed=3) for style in ("source", args.target)}
    results: dict[int, dict[str, dict[str, tuple[float, float]]]] = {}
    seconds: dict[str, list[float]] = {"source only": [], "adapted": []}
    discrimination: dict[int, str] = {}  # per seed: aligned steps and the discriminator's loss
    for seed in args.seeds:
        settings = dict(options={"features": (8, 16, 32, 64)}, steps=args.steps, patch=48, batch_size=4,
                        seed=seed, lr=2e-3, device="cpu",
                        val_fraction=0)  # both keep their last weights: source validation would not see the target
        results[seed] = {}
        for name, extra in (("source only", {}),
                            ("adapted", {"adapt_to": target_unlabelled, "adapt_weight": args.adapt_weight})):
            start = time.perf_counter()
            domain_losses: list[float] = []
            model = segarch.train("unet", source_images, source_labels, **settings, **extra,
                                  progress=lambda event: _report(event, domain_losses))
            seconds[name].append(time.perf_counter() - start)
            if domain_losses:  # ~0.69 when the discriminator cannot tell the domains apart
                counted = re.search(r"counted on (\d+ of \d+) steps", model.description)
                discrimination[seed] = (f"alignment counted on {counted.group(1) if counted else '?'} steps; "
                                        f"discriminator loss {np.mean(domain_losses[:20]):.3f} (first 20 steps) -> "
                                        f"{np.mean(domain_losses[-20:]):.3f} (last 20)")
            results[seed][name] = {style: measure(model, *data) for style, data in fresh.items()}

    print(f"U-Net (8-64), {args.steps} steps on {args.images} labelled source images ({args.size} px); target "
          f"style {args.target!r} ({args.images} unlabelled images, adapt_weight {args.adapt_weight:g}, "
          f"{args.discriminator} discriminator); measured on {args.test} fresh labelled images per style; seeds "
          f"{' '.join(map(str, args.seeds))}")
    print(f"{'seed':>4} {'model':<13} {'target Dice':>11} {'target F1@0.5':>13} {'source Dice':>11} "
          f"{'source F1@0.5':>13}")
    for seed, by_model in results.items():
        for name, by_style in by_model.items():
            (t_dice, t_f1), (s_dice, s_f1) = by_style[args.target], by_style["source"]
            print(f"{seed:>4} {name:<13} {t_dice:>11.3f} {t_f1:>13.3f} {s_dice:>11.3f} {s_f1:>13.3f}")
        if seed in discrimination:
            print(f"{'':>4} {discrimination[seed]}")

    def spread(values) -> str:
        return f"{np.median(values):+.3f} [{min(values):+.3f}, {max(values):+.3f}]"

    for name in ("source only", "adapted"):
        target = [results[s][name][args.target][0] for s in args.seeds]
        source = [results[s][name]["source"][0] for s in args.seeds]
        print(f"{name:<13} target Dice median {np.median(target):.3f} [{min(target):.3f}, {max(target):.3f}], "
              f"source Dice median {np.median(source):.3f} [{min(source):.3f}, {max(source):.3f}]")
    gains = [results[s]["adapted"][args.target][0] - results[s]["source only"][args.target][0] for s in args.seeds]
    print(f"target Dice gain from adaptation: median {spread(gains)} (min, max); higher on "
          f"{sum(g > 0 for g in gains)} of {len(gains)} seeds; training time ratio adapted / source only: "
          f"{np.median(seconds['adapted']) / np.median(seconds['source only']):.2f}")


if __name__ == "__main__":
    main()
