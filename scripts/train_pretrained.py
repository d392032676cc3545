"""Train the models that ship with segarch, reproducibly from a seed, on the CPU.

Each model is trained by :func:`segarch.train` on images from :mod:`segarch.synthetic` (every image
with its own imaging conditions), then measured with :func:`segarch.predict` on fresh generated
images it has never seen (other seeds). Writes ``src/segarch/models/weights/NAME.safetensors``,
``NAME.json`` (the card: data, training, measured Dice) and ``NAME.csv``/``NAME.png`` (the log).

Usage::

    python scripts/train_pretrained.py                 # every model
    python scripts/train_pretrained.py unet.nuclei2d --steps 100 --out /tmp/weights   # a quick try

Single-threaded PyTorch by default: on a shared or small CPU, extra threads slow each step down.
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
from segarch.synthetic import dataset
from segarch.training.metrics import dice_per_class

__all__ = ["RECIPES", "main"]

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "segarch" / "models" / "weights"

#: What each shipped model is: architecture, options, data, and training settings.
RECIPES = {
    "unet.nuclei2d": {
        "title": "2D nuclei (fluorescence), foreground vs background",
        "arch": "unet",
        "options": {"features": [8, 16, 32, 64], "norm": "batch", "dropout": 0.0},
        "train_images": 64, "shape": [192, 192], "seed": 1,
        "patch": [96, 96], "batch_size": 8, "steps": 1200, "lr": 3e-3,
        "test_images": 16, "test_shape": [256, 256], "test_seed": 9001,
    },
    "unet.nuclei3d": {
        "title": "3D nuclei (fluorescence volumes), foreground vs background",
        "arch": "unet",
        "options": {"features": [8, 16, 32], "norm": "batch", "dropout": 0.0},
        "train_images": 16, "shape": [48, 96, 96], "seed": 2,
        "patch": [32, 48, 48], "batch_size": 2, "steps": 500, "lr": 3e-3,
        "test_images": 6, "test_shape": [48, 128, 128], "test_seed": 9002,
    },
}


def evaluate(model: segarch.Model, recipe: dict) -> dict:
    """Dice on fresh generated images (seeds never used for training), predicted whole by the tiling engine."""
    images, labels = dataset(recipe["test_images"], tuple(recipe["test_shape"]), seed=recipe["test_seed"])
    preds, truths, per_image = [], [], []
    for image, truth in zip(images, labels):
        pred = np.asarray(segarch.predict(model, image, device="cpu", output="labels"))
        per_image.append(dice_per_class(pred, truth > 0, num_classes=2)[1])
        preds.append(pred.reshape(-1))
        truths.append((truth > 0).reshape(-1))
    pooled = dice_per_class(np.concatenate(preds), np.concatenate(truths), num_classes=2)
    return {"dice_nucleus": round(pooled[1], 4), "dice_background": round(pooled[0], 4),
            "dice_nucleus_per_image_min": round(float(np.nanmin(per_image)), 4),
            "dice_nucleus_per_image_mean": round(float(np.nanmean(per_image)), 4),
            "images": recipe["test_images"], "shape": recipe["test_shape"], "seed": recipe["test_seed"]}


def train_one(name: str, recipe: dict, out_dir: Path, steps: int | None) -> dict:
    torch.manual_seed(recipe["seed"])
    images, labels = dataset(recipe["train_images"], tuple(recipe["shape"]), seed=recipe["seed"])
    out = out_dir / f"{name}.safetensors"
    steps = int(steps or recipe["steps"])
    started = time.perf_counter()
    last = [0.0]

    def progress(ev):
        if ev.kind == "validation" or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"[{name}] {ev.message} ({ev.seconds:.0f} s)", flush=True)

    model = segarch.train(recipe["arch"], images, labels, options=recipe["options"], mask=True,
                          class_names=["background", "nucleus"], patch=recipe["patch"], steps=steps,
                          batch_size=recipe["batch_size"], lr=recipe["lr"], val_fraction=0.1, device="cpu",
                          seed=recipe["seed"], out=out, progress=progress)
    seconds = time.perf_counter() - started
    test = evaluate(model, recipe)
    card = {
        "name": name,
        "title": recipe["title"],
        "arch": model.arch,
        "task": model.task,
        "options": recipe["options"],
        "spatial_dims": model.spatial_dims,
        "in_channels": model.in_channels,
        "parameters": model.num_parameters,
        "classes": model.class_names,
        "trained_on": (f"{recipe['train_images']} generated images {'×'.join(map(str, recipe['shape']))} "
                       f"(segarch.synthetic.dataset, seed {recipe['seed']}): nuclei of varied size, shape, "
                       f"density, touching neighbours, brightness and texture; uneven background and haze; "
                       f"blur; Poisson and read noise; random camera gain. 10% of them held out for validation."),
        "training": {"steps": steps, "batch_size": recipe["batch_size"], "patch": recipe["patch"],
                     "lr": recipe["lr"], "loss": "dice_ce", "augment": "default", "seed": recipe["seed"],
                     "seconds": round(seconds), "device": "cpu (1 thread)",
                     "torch": torch.__version__, "python": platform.python_version(),
                     "held_out_patch_dice": model.validation["patch_dice"],
                     "held_out_whole_image_dice": model.validation["whole_image_dice"]},
        "test": test,
        "script": "scripts/train_pretrained.py",
    }
    model.description = (f"segarch pretrained model {name!r}: {recipe['title']}. Trained on {card['trained_on']} "
                         f"Dice (nucleus) on {test['images']} fresh generated images: {test['dice_nucleus']:.3f}.")
    segarch.save_model(model, out)
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"[{name}] done in {seconds:.0f} s; test Dice (nucleus) {test['dice_nucleus']:.3f}", flush=True)
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(RECIPES), help=f"models to train (default: {list(RECIPES)})")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="output folder (default: the package's weights)")
    parser.add_argument("--steps", type=int, help="override the recipe's steps (for a quick try)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("segarch.tiling").setLevel(logging.WARNING)
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {list(RECIPES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        train_one(name, RECIPES[name], args.out, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
