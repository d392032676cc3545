"""Train and measure the shipped instance models (``unet.nuclei2d_instances``, ``unet.nuclei3d_instances``).

Each model is trained by ``segarch.train(..., task="instance")`` on hard generated nuclei
(``segarch.synthetic.samples(..., hard=True)``: crowded, touching and overlapping nuclei, debris, uneven
illumination, blur and noise; in 3D anisotropic voxels, each volume with its own Z spacing, passed as
``pixel_size``), reproducibly from a seed on the CPU. It is then measured on fresh generated images it
never saw (other seeds) through ``segarch.instances.predict_instances`` (the tiled network, then the
block-wise decoder, as a user runs it): F1 at IoU 0.5, mean AP over IoU 0.5-0.9, and where the errors come
from (objects missed, merged with a neighbour, split, or found where there is none).

Writes ``src/segarch/models/weights/NAME.safetensors`` and ``NAME.json`` (the card), with the log
``NAME.csv``/``NAME.png`` beside them.

Usage::

    python scripts/train_instances.py                          # both models (each under an hour on 2 threads)
    python scripts/train_instances.py unet.nuclei2d_instances --steps 200 --out /tmp/try   # a quick try
    python scripts/train_instances.py unet.nuclei2d_instances --measure   # measure the shipped model again
    python scripts/train_instances.py unet.nuclei2d_instances --tune      # tune its decoder on a validation draw

``--threads`` sets PyTorch's CPU threads (default 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.instances import match, predict_instances
from segarch.instances.metrics import overlaps
from segarch.synthetic import samples

__all__ = ["RECIPES", "measure", "error_sources", "to_voxel_size", "main"]

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "segarch" / "models" / "weights"

#: What the generated data is, and where it is harder than most real data (on every card).
DATA_NOTE = (
    "Each image draws its own conditions: smallest nucleus radius 3-8 px in 2D (3-5.5 px in 3D), the largest "
    "1.3-2.5x that; 30-55% of the area covered (20-40% in 3D); 40-90% of nuclei placed against a neighbour; up "
    "to 40% of a nucleus on nuclei placed before it (the light adds, the shared pixels keep the first label: an "
    "order no image shows, though at IoU 0.5 it rarely decides a match); debris; patchy shading; blur sigma "
    "0.5-2.5 px (0.5-1.5 px in XY in 3D) drawn independently of the nucleus size; 10-1000 photons. Harder than "
    "most real data: crowds of nuclei 3-5 px in radius under a blur of 0.4-0.6x that radius, where touching "
    "nuclei show no dip between them and only their outline separates them; a microscope sampling nuclei that "
    "small rarely blurs them so much. 'by_size' scores the images whose smallest nuclei are under 5 px apart.")

#: Nuclei smaller than this radius (pixels) are scored apart as well (see ``measure``).
SMALL = 5.0

#: What each shipped model is: architecture, options, data, training and test settings.
RECIPES = {
    "unet.nuclei2d_instances": {
        "title": "2D nuclei (fluorescence), one label per nucleus",
        "arch": "unet",
        "options": {"features": [16, 32, 64, 128], "norm": "batch", "dropout": 0.0},
        "decoder": {"decoder": "distance", "bins": 4},
        "train_images": 160, "shape": [192, 192], "seed": 11,
        "patch": [96, 96], "batch_size": 8, "steps": 4000, "lr": 3e-3, "val_fraction": 0.05, "validations": 12,
        "test_images": 16, "test_shape": [256, 256], "test_seed": 9011,
    },
    "unet.nuclei3d_instances": {
        "title": "3D nuclei (fluorescence volumes, anisotropic voxels), one label per nucleus",
        "arch": "unet",
        # Half the 2D width: a 3D step costs far more, and the training must fit 45 min on a shared CPU.
        "options": {"features": [8, 16, 32, 64], "norm": "batch", "dropout": 0.0},
        # 2 bins (edge half / inner half): with 4 the network never predicted the two inner bins of these small
        # nuclei (each only a few voxels) and touching nuclei merged; the seeds (inner half) are the same either way.
        "decoder": {"decoder": "distance", "bins": 2},
        # Every volume has its own Z spacing (1-3x XY): each is resampled to this voxel size for training, which the
        # model records; predict_instances resamples a user's volume to it (and the labels back) the same way.
        "voxel_size": [2.0, 1.0, 1.0],
        "train_images": 48, "shape": [40, 96, 96], "seed": 12,
        "patch": [16, 64, 64], "batch_size": 2, "steps": 1200, "lr": 3e-3, "val_fraction": 0.1, "validations": 5,
        "test_images": 8, "test_shape": [40, 128, 128], "test_seed": 9012,
    },
}


def error_sources(truth: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Where the errors at IoU 0.5 come from.

    Unmatched true objects are ``missed`` (less than half of them predicted as any object), ``merged``
    (the predicted object covering most of them also covers most of another true object) or ``split``
    (covered, but by pieces or a poor outline); unmatched predicted objects are ``spurious`` (mostly on
    background: debris, noise) or ``fragments`` (mostly on a true object: a piece of a split one).
    """
    _, _, rows, cols, iou = overlaps(truth, pred)
    t_ids, t_area = np.unique(truth, return_counts=True)
    p_ids, p_area = np.unique(pred, return_counts=True)
    t_area = dict(zip(t_ids.tolist(), t_area.tolist()))
    p_area = dict(zip(p_ids.tolist(), p_area.tolist()))
    both = (truth > 0) & (pred > 0)
    pairs, shared = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    t_list, p_list = [t for t in t_ids.tolist() if t], [p for p in p_ids.tolist() if p]
    matched_t = {t_list[r] for r in rows[iou > 0.5]}
    matched_p = {p_list[c] for c in cols[iou > 0.5]}
    by_true: dict[int, list[tuple[int, int]]] = {}
    by_pred: dict[int, list[tuple[int, int]]] = {}
    for (t, p), n in zip(pairs.T.tolist(), shared.tolist()):
        by_true.setdefault(t, []).append((n, p))
        by_pred.setdefault(p, []).append((n, t))
    counts = {"missed": 0, "merged": 0, "split": 0, "spurious": 0, "fragments": 0}
    for t in t_list:
        if t in matched_t:
            continue
        parts = by_true.get(t, [])
        if sum(n for n, _ in parts) < 0.5 * t_area[t]:
            counts["missed"] += 1
            continue
        _, p = max(parts)
        holds = [u for n, u in by_pred[p] if n >= 0.5 * t_area[u]]
        counts["merged" if len(holds) >= 2 else "split"] += 1
    for p in p_list:
        if p not in matched_p:
            on_objects = sum(n for n, _ in by_pred.get(p, []))
            counts["spurious" if on_objects < 0.5 * p_area[p] else "fragments"] += 1
    return counts


def measure(model: segarch.Model, recipe: dict) -> dict:
    """F1@0.5, mean AP and error sources on fresh generated images (seeds never used for training), each
    segmented by ``predict_instances`` as a user would."""
    test = samples(recipe["test_images"], tuple(recipe["test_shape"]), seed=recipe["test_seed"], hard=True)
    total, per_image, errors, by_size = None, [], {}, {}
    for s in test:
        # The image's own voxel size, as a user passes it (or its metadata says): 3D volumes are resampled.
        pred = predict_instances(model, s.image, pixel_size=s.spacing, device="cpu")
        m = match(s.labels, pred)
        total = m if total is None else total + m
        # Crowds of the smallest nuclei (radius < 5 px) hold most objects and most errors: scored apart too.
        size = f"smallest radius {'<' if s.conditions.radius[0] < SMALL else '>='} {SMALL:g} px"
        by_size[size] = m if size not in by_size else by_size[size] + m
        found = error_sources(s.labels, pred)
        errors = {k: errors.get(k, 0) + v for k, v in found.items()}
        c = s.conditions
        per_image.append({"objects": m.n_true, "f1@0.5": round(m.f1(0.5), 4), "mean_ap": round(m.mean_ap, 4),
                          "radius": [round(r, 2) for r in c.radius], "blur": round(c.blur, 2),
                          "photons": round(c.photons, 1), "overlap": round(c.overlap, 3),
                          "spacing": [round(v, 3) for v in s.spacing], **found})
    summary = total.summary()
    sizes = {k: {"images": sum(1 for p in per_image if (p["radius"][0] < SMALL) == ("<" in k)),
                 "n_true": v.n_true, "f1@0.5": round(v.f1(0.5), 4), "mean_ap": round(v.mean_ap, 4)}
             for k, v in sorted(by_size.items())}
    return {**summary, "errors": errors, "images": recipe["test_images"], "shape": recipe["test_shape"],
            "seed": recipe["test_seed"], "by_size": sizes, "per_image": per_image}


#: The decoder settings ``--tune`` tries (every combination).
TUNE_GRID = {
    "seed_threshold": [0.35, 0.45, 0.55, 0.6, 0.65, 0.75],
    "foreground_threshold": [0.4, 0.5, 0.6],
    "min_size": [0, 8, 16],
    "seed_h": [0.0, 0.02, 0.03, 0.05, 0.1],  # 0: seed regions above the threshold; above 0: peaks (h-maxima)
}


def tune(model: segarch.Model, recipe: dict, images: int, seed: int, grid: dict | None = None
         ) -> tuple[dict, list[dict]]:
    """The decoder settings with the best F1@0.5 (ties: mean AP) on a validation draw of ``images`` fresh
    generated images from ``seed`` (neither the training's nor the test's seeds), and every setting's scores.

    The network runs once per image (``segarch.predict``, the probabilities); only the decoder is repeated.
    ``grid`` replaces :data:`TUNE_GRID`'s entries it names.
    """
    from itertools import product

    from segarch.instances import get_decoder, match_many

    if seed in (recipe["seed"], recipe["test_seed"]):
        raise ValueError(f"--tune-seed {seed} is the training's or the test's seed; pick another.")
    drawn = samples(images, tuple(recipe["test_shape"]), seed=seed, hard=True)
    probabilities = [probabilities_at_own_grid(model, s) for s in drawn]
    truths = [s.labels for s in drawn]
    grid = {**TUNE_GRID, **(grid or {})}
    rows = []
    for values in product(*grid.values()):
        decoder = get_decoder(model.instance, **dict(zip(grid, values)))
        preds = [decoder.decode(p) for p in probabilities]
        scores = match_many(truths, preds).summary()
        errors: dict[str, int] = {}
        for t, pr in zip(truths, preds):
            errors = {k: errors.get(k, 0) + v for k, v in error_sources(t, pr).items()}
        rows.append({**dict(zip(grid, values)), "f1@0.5": scores["f1@0.5"], "mean_ap": scores["mean_ap"],
                     **errors})
    best = max(rows, key=lambda r: (r["f1@0.5"], r["mean_ap"]))
    return get_decoder(model.instance, **{k: best[k] for k in grid}).settings(), rows


def probabilities_at_own_grid(model: segarch.Model, sample) -> np.ndarray:
    """The network's class probabilities for a sample on its own grid, as ``predict_instances`` makes them
    before decoding: a volume of another voxel size is resampled to the model's and the output back."""
    from segarch.instances.resample import TOLERANCE, resample_spatial

    if not model.pixel_size or np.all(np.abs(np.divide(sample.spacing, model.pixel_size) - 1) <= TOLERANCE):
        return np.asarray(segarch.predict(model, sample.image, output="probabilities", device="cpu"))
    image, _ = to_voxel_size(sample, model.pixel_size)
    p = np.asarray(segarch.predict(model, image, output="probabilities", device="cpu"))
    axes = "ZYX"[-sample.image.ndim:]
    return resample_spatial(p, "C" + axes, axes, sample.image.shape)


def train_one(name: str, recipe: dict, out_dir: Path, steps: int | None, threads: int) -> dict:
    torch.manual_seed(recipe["seed"])
    data = samples(recipe["train_images"], tuple(recipe["shape"]), seed=recipe["seed"], hard=True)
    images, labels = [s.image for s in data], [s.labels for s in data]
    spacing = [s.spacing for s in data]
    if recipe.get("voxel_size"):
        images, labels = zip(*[to_voxel_size(s, recipe["voxel_size"]) for s in data])
        spacing = [tuple(recipe["voxel_size"])] * len(data)
    out = out_dir / f"{name}.safetensors"
    steps = int(steps or recipe["steps"])
    started = time.perf_counter()
    last = [0.0]

    def progress(ev):
        if ev.kind == "validation" or time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"[{name}] {ev.message} ({ev.seconds:.0f} s)", flush=True)

    model = segarch.train(recipe["arch"], list(images), list(labels), task="instance",
                          decoder=recipe["decoder"], pixel_size=spacing, options=recipe["options"],
                          patch=recipe["patch"], steps=steps, batch_size=recipe["batch_size"], lr=recipe["lr"],
                          val_fraction=recipe["val_fraction"], val_every=max(10, steps // recipe["validations"]),
                          device="cpu",
                          seed=recipe["seed"], out=out, overwrite=True, progress=progress)
    seconds = time.perf_counter() - started
    test = measure(model, recipe)
    card = {
        "name": name,
        "title": recipe["title"],
        "task": "instance",  # a zoo U-Net (semantic), trained on the decoder's targets: labels come from the decoder
        "arch": model.arch,
        "options": recipe["options"],
        "spatial_dims": model.spatial_dims,
        "parameters": model.num_parameters,
        "classes": model.class_names,
        "instance": model.instance,
        "pixel_size": model.pixel_size,
        "trained_on": _data_sentence(recipe),
        "data": DATA_NOTE,
        "training": {"steps": steps, "batch_size": recipe["batch_size"], "patch": recipe["patch"],
                     "lr": recipe["lr"], "loss": "dice_ce", "augment": "default", "seed": recipe["seed"],
                     "seconds": round(seconds),
                     "device": f"cpu ({threads} thread{'s' * (threads > 1)}, shared machine)",
                     "torch": torch.__version__, "python": platform.python_version(),
                     "held_out": model.validation.get("objects")},
        "test": test,
        "script": "scripts/train_instances.py",
    }
    model.description = (f"segarch pretrained model {name!r}: {recipe['title']}. Trained on {card['trained_on']} "
                         f"On {test['images']} fresh generated images: F1@0.5 {test['f1@0.5']:.3f}, mean AP "
                         f"{test['mean_ap']:.3f}.")
    segarch.save_model(model, out)
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"[{name}] done in {seconds:.0f} s; test F1@0.5 {test['f1@0.5']:.3f}, mean AP {test['mean_ap']:.3f}, "
          f"errors {test['errors']}", flush=True)
    return card


def to_voxel_size(sample, voxel_size) -> tuple[np.ndarray, np.ndarray]:
    """A generated sample's image (linear) and labels (nearest) resampled from its voxel size to ``voxel_size``,
    on the grid ``predict_instances`` gives the network for an image of that voxel size."""
    from skimage.transform import resize

    from segarch.instances.resample import resample_spatial

    shape = [max(1, int(round(n * a / b))) for n, a, b in zip(sample.labels.shape, sample.spacing, voxel_size)]
    axes = "ZYX"[-len(shape):]
    image = resample_spatial(sample.image, axes, axes, shape)
    labels = resize(sample.labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    return image, labels.astype(sample.labels.dtype)


def _data_sentence(recipe: dict) -> str:
    dims = len(recipe["shape"])
    return (f"{recipe['train_images']} generated {'volumes' if dims == 3 else 'images'} "
            f"{'×'.join(map(str, recipe['shape']))} (segarch.synthetic.samples, hard=True, seed {recipe['seed']}): "
            f"crowded nuclei of widely varied size, shape and brightness, many touching and overlapping; debris; "
            f"uneven, patchy illumination; blur; Poisson and read noise; random camera gain"
            + ("; anisotropic voxels, Z spacing 1-3× XY with a longer axial blur" if dims == 3 else "")
            + (f", each volume resampled to voxel size {recipe['voxel_size']} (the model's)"
               if recipe.get("voxel_size") else "")
            + f". {round(100 * recipe['val_fraction'])}% held out for validation.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(RECIPES), help=f"models (default: {list(RECIPES)})")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="output folder (default: the package's weights)")
    parser.add_argument("--steps", type=int, help="override the recipe's steps (for a quick try)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2)")
    parser.add_argument("--measure", action="store_true", help="measure the model in --out again, and update its card")
    parser.add_argument("--tune", action="store_true",
                        help="tune the decoder of the model in --out on a validation draw, save it, and measure again")
    parser.add_argument("--tune-images", type=int, default=16, help="images in the validation draw (default 16)")
    parser.add_argument("--tune-seed", type=int, default=5011, help="seed of the validation draw (default 5011)")
    parser.add_argument("--tune-grid", type=json.loads, default=None, metavar="JSON",
                        help='replace entries of the decoder grid, e.g. \'{"min_size": [0, 32]}\'')
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="override recipe entries for a trial, e.g. steps=500 'patch=[96, 96]'")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("segarch.tiling").setLevel(logging.WARNING)
    logging.getLogger("segarch.instances").setLevel(logging.WARNING)
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {list(RECIPES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        recipe = dict(RECIPES[name])
        for item in args.set:
            key, _, value = item.partition("=")
            if key not in recipe:
                parser.error(f"--set {key!r}: not a recipe entry ({', '.join(recipe)})")
            recipe[key] = json.loads(value)
        if args.tune:
            path = args.out / f"{name}.safetensors"
            model = segarch.load_model(path)
            before = dict(model.instance)
            model.instance, rows = tune(model, recipe, args.tune_images, args.tune_seed, args.tune_grid)
            grid = {**TUNE_GRID, **(args.tune_grid or {})}
            ranked = sorted(rows, key=lambda r: (r["f1@0.5"], r["mean_ap"]), reverse=True)
            for row in ranked[:10]:
                print(json.dumps(row), flush=True)
            print(f"[{name}] decoder {before} -> {model.instance}", flush=True)
            segarch.save_model(model, path)
            card_path = args.out / f"{name}.json"
            card = json.loads(card_path.read_text())
            card["instance"] = model.instance
            card["decoder_tuning"] = {
                "images": args.tune_images, "shape": recipe["test_shape"], "seed": args.tune_seed,
                "grid": grid, "before": before, "best": ranked[0],
                "at_training_settings": next((r for r in rows
                                              if all(r[k] == before.get(k, 0.0) for k in grid)), None),
            }
            card_path.write_text(json.dumps(card, indent=2) + "\n")
        if args.measure or args.tune:
            card_path = args.out / f"{name}.json"
            card = json.loads(card_path.read_text())
            card["test"] = measure(segarch.load_model(args.out / f"{name}.safetensors"), recipe)
            card["data"] = DATA_NOTE
            card_path.write_text(json.dumps(card, indent=2) + "\n")
            print(json.dumps({k: v for k, v in card["test"].items() if k != "per_image"}), flush=True)
        else:
            train_one(name, recipe, args.out, args.steps, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
