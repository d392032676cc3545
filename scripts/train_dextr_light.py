"""Train the shipped extreme-point models ``dextr_light.objects2d`` (2D) and ``dextr_light.objects3d`` on the CPU,
from a seed.

Data: generated scenes (:func:`segarch.prompts.object_scene`: blobs, star-convex cells, polygons, bent
rods, touching neighbours; textures, brightness, backgrounds, blur, noise) with their instance labels.
Training is the project's pipeline, :func:`segarch.train` (as ``segarch train`` and the Train widget run
it): for an interactive model every object is one example, its extreme points jittered afresh each time
it is drawn, the crop resized and given the heat map; Dice + cross-entropy, AdamW with warm-up and cosine
decay, flips and 90° rotations, the best weights on 10% held-out objects kept. Training stops at
``--cpu-seconds`` of CPU time (cancelled: the best validated weights are kept), then the model is measured
on fresh scenes (other seeds) through :func:`segarch.prompts.segment_from_points`, and written with its
card to ``src/segarch/models/weights/NAME.{safetensors,json,csv,png}``.

Usage::

    python scripts/train_dextr_light.py                 # the shipped 2D model
    python scripts/train_dextr_light.py --dims 3        # the shipped 3D model (6 points, 32³ crops)
    python scripts/train_dextr_light.py --steps 50 --out /tmp/w   # a quick try
    python scripts/train_dextr_light.py --dims 3 --remeasure     # the shipped model's test results again
    python scripts/train_dextr_light.py --corrections --out /tmp/c        # fine-tune the shipped 2D model to take
    python scripts/train_dextr_light.py --dims 3 --corrections --out /tmp/c   # corrective clicks (2D, 3D)
    python scripts/train_dextr_light.py --dims 3 --corrections --start /tmp/c/dextr_light.clicks3d.safetensors \
        --out /tmp/c2 --wall-seconds 3600                                     # ... trained longer
    python scripts/train_dextr_light.py --dims 3 --corrections --isotropic --scenes 160 --seed 23 --lr 3e-4 \
        --start /tmp/c/dextr_light.clicks3d.safetensors --out /tmp/c3   # ... fresh isotropic volumes, lower rate

``--corrections``: the shipped model gets three more input channels (positive clicks, negative clicks, previous
mask; their weights start at zero, see :func:`segarch.training.with_corrections`) and is fine-tuned by
:func:`segarch.train` with simulated clicks (Sofiiuk et al. 2021 iterative training); it is written as
``dextr_light.clicks{2,3}d``. In 3D half of the scenes then have thick slices (Z spacing 2 to 5 times the X/Y
spacing, :func:`segarch.prompts.synthetic.anisotropic_scene`), resampled back to isotropic voxels as
``segment_from_points(..., pixel_size=)`` resamples a crop, with the isotropic truth as the target; the model
records ``pixel_size`` [1, 1, 1], its training voxel size.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch.prompts import DEFAULTS, object_scene
from segarch.prompts.evaluate import click_curve, evaluate_prompts
from segarch.prompts.voxels import resample
from segarch.training import with_corrections

__all__ = ["RECIPE", "RECIPE_3D", "main", "measure", "remeasure"]

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "segarch" / "models" / "weights"

RECIPE = {
    "name": "dextr_light.objects2d",
    "arch": "dextr_light",
    "options": {"features": [16, 32, 64, 128], "bins": [1, 2, 4]},
    "scenes": 500, "shape": [160, 160], "seed": 11,
    "batch_size": 16, "steps": 1800, "lr": 3e-3, "loss": "dice_ce",
    "test_scenes": 40, "test_seed": 7001,
}

#: ``--dims 3``: the same recipe on generated volumes, 6 points per object, 32³ crops.
RECIPE_3D = {
    "name": "dextr_light.objects3d",
    "arch": "dextr_light",
    "options": {"features": [16, 32, 64, 128], "bins": [1, 2, 4]},
    "scenes": 600, "shape": [48, 64, 64], "seed": 12,
    "batch_size": 8, "steps": 4000, "lr": 3e-3, "loss": "dice_ce",
    "test_scenes": 40, "test_seed": 7002, "half": True,  # 1.4M weights: float16 keeps the file under 3 MB
}

#: ``--corrections``: fine-tuning of the shipped models with simulated corrective clicks (changes to the recipe).
CORRECTIONS = {2: {"steps": 1500, "lr": 1e-3, "seed": 21},
               3: {"steps": 700, "lr": 1e-3, "seed": 22, "anisotropic_shape": [16, 64, 64], "z_spacing": [2, 3, 4, 5]}}


VOXEL_SIZE_3D = ("isotropic (the model's pixel_size [1, 1, 1]); half of the volumes were made with thick slices (Z "
                 "spacing 2, 3, 4, 5 times the Y/X spacing, 16 slices) and resampled to isotropic voxels as "
                 "segment_from_points(..., pixel_size=) resamples a crop, with the isotropic truth as target")


def thick_slice_scene(shape, z_spacing: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A volume of ``shape`` with thick slices (:func:`anisotropic_scene`) resampled back to isotropic voxels the way
    :func:`segarch.prompts.segment_from_points` resamples a crop to the model's voxel size, and the isotropic labels
    (the object's true shape between the slices)."""
    depth = int(shape[0]) * z_spacing
    image, labels = object_scene((depth,) + tuple(shape[1:]), seed=seed)
    thick = image.reshape((int(shape[0]), z_spacing) + image.shape[1:]).mean(axis=1)
    return resample(thick, image.shape), labels


def _run(job):
    function, args, kwargs = job
    return function(*args, **kwargs)


def measure(model, recipe: dict) -> dict:
    """The card's ``test`` block: IoU on the recipe's fresh test scenes (exact and ±2 px points), latency."""
    torch.set_num_threads(1)  # latency as a user's interactive call would see it on a busy CPU
    shape = tuple(recipe["shape"])
    test = evaluate_prompts(model, scenes=recipe["test_scenes"], seed=recipe["test_seed"], shape=shape)
    corrections = None
    if (model.prompt or {}).get("corrections"):
        curve = click_curve(model, scenes=recipe["test_scenes"] // 2, seed=recipe["test_seed"], shape=shape)
        corrections = {"mean_iou_by_corrections": [round(v, 4) for v in curve["mean_iou"]],
                       "noc85": round(curve["noc85"], 2), "noc90": round(curve["noc90"], 2),
                       "median_click_ms": round(curve["median_ms"], 1), "objects": curve["objects"],
                       "scenes": recipe["test_scenes"] // 2, "simulation": "each click at the centre of the largest "
                       "error region; NoC counts the extreme points, capped at 20"}
        logging.info("corrections: mean IoU after 0-3 %s, NoC@85 %.2f, NoC@90 %.2f", corrections[
            "mean_iou_by_corrections"], curve["noc85"], curve["noc90"])
    jittered = evaluate_prompts(model, scenes=recipe["test_scenes"] // 2, seed=recipe["test_seed"] + 500, jitter=2.0,
                                shape=shape)
    logging.info("held-out: %d objects, mean IoU %.4f (median %.4f, min %.4f), median %.1f ms; jitter 2 px: %.4f",
                 test["objects"], test["mean_iou"], test["median_iou"], test["min_iou"], test["median_ms"],
                 jittered["mean_iou"])
    return {
        "mean_iou": round(test["mean_iou"], 4), "median_iou": round(test["median_iou"], 4),
        "min_iou": round(test["min_iou"], 4), "objects": test["objects"], "scenes": recipe["test_scenes"],
        "shape": recipe["shape"], "seed": recipe["test_seed"], "points": "exact extreme points",
        "mean_iou_jitter_2px": round(jittered["mean_iou"], 4),
        "iou_by_extent": [{"extent_px": [lo, hi], "objects": n, "mean_iou": round(v, 4)}
                          for lo, hi, n, v in test["by_extent"]],
        "median_latency_ms": round(test["median_ms"], 1),
        "latency_note": "click to mask (crop, network, paste), 1 thread, on a shared 2-core CPU",
        **({"corrections": corrections} if corrections else {}),
    }


def remeasure(dims: int, folder: Path, corrections: bool = False) -> dict:
    """Measure the model already in ``folder`` again (same test scenes) and rewrite its card's ``test`` block
    (``corrections``: the ``dextr_light.clicks{2,3}d`` model)."""
    recipe = dict(RECIPE if dims == 2 else RECIPE_3D)
    if corrections:
        recipe["name"] = f"dextr_light.clicks{dims}d"
    card_path = folder / f"{recipe['name']}.json"
    card = json.loads(card_path.read_text())
    card["test"] = measure(segarch.load_model(folder / f"{recipe['name']}.safetensors"), recipe)
    card_path.write_text(json.dumps(card, indent=2, default=float) + "\n")
    logging.info("re-measured %s", card_path)
    return card


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--scenes", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--cpu-seconds", type=float, default=600.0, help="stop after this much CPU time")
    parser.add_argument("--wall-seconds", type=float, default=None, help="also stop after this much wall-clock time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--workers", type=int, default=1, help="processes that generate the training scenes")
    parser.add_argument("--fit-steps", action="store_true",
                        help="with --wall-seconds: time 30 steps first and plan as many steps as fit in the time, so "
                             "the learning rate's cosine decay ends with the run instead of being cut off")
    parser.add_argument("--no-test", action="store_true",
                        help="write the model and card without measuring it (e.g. trained on a lent GPU: measure it "
                             "on the CPU it ships for with --remeasure)")
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=None, help="seed of the training scenes; default: the recipe's")
    parser.add_argument("--isotropic", action="store_true",
                        help="with --corrections --dims 3: isotropic volumes only (no thick-slice half)")
    parser.add_argument("--features", type=int, nargs="+", default=None, help="default: the recipe's")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--corrections", action="store_true",
                        help="fine-tune the shipped model (in --start) to take corrective clicks")
    parser.add_argument("--start", type=Path, default=WEIGHTS,
                        help="folder of the model --corrections starts from, or its .safetensors file (e.g. an "
                             "earlier corrections run, to train it longer)")
    parser.add_argument("--remeasure", action="store_true",
                        help="do not train: measure the model in --out again and rewrite its card's test results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.remeasure:
        return remeasure(args.dims, args.out, args.corrections)
    torch.set_num_threads(args.threads)
    dims = args.dims
    recipe = dict(RECIPE if dims == 2 else RECIPE_3D)
    start_name = recipe["name"]
    if args.corrections:
        recipe.update(CORRECTIONS[dims], name=f"dextr_light.clicks{dims}d")
    recipe["options"] = dict(recipe["options"], features=list(args.features or recipe["options"]["features"]))
    recipe["lr"] = args.lr or recipe["lr"]
    recipe["seed"] = args.seed if args.seed is not None else recipe["seed"]
    recipe["batch_size"] = args.batch_size or recipe["batch_size"]
    args.steps = args.steps or recipe["steps"]
    args.scenes = args.scenes or recipe["scenes"]
    settings = DEFAULTS["dextr_light"][dims]

    t0 = time.perf_counter()
    shape = tuple(recipe["shape"])
    jobs = [(object_scene, (shape,), {"seed": recipe["seed"] * 100003 + s}) for s in range(args.scenes)]
    if args.corrections and dims == 3 and not args.isotropic:  # half of the volumes get thick slices
        spacings = recipe["z_spacing"]
        for s in range(args.scenes // 2):
            jobs[2 * s] = (thick_slice_scene, (tuple(recipe["anisotropic_shape"]), spacings[s % len(spacings)]),
                           {"seed": recipe["seed"] * 100003 + 50000 + s})
    with ProcessPoolExecutor(max(1, args.workers)) as pool:  # the same scenes whatever the number of workers
        scenes = list(pool.map(_run, jobs, chunksize=8))
    images, labels = [image for image, _ in scenes], [lab for _, lab in scenes]
    n_objects = int(sum(len(np.unique(lab[lab > 0])) for lab in labels))
    logging.info("%d objects in %d scenes, generated in %.0f s", n_objects, args.scenes, time.perf_counter() - t0)

    cancel = threading.Event()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()

    def stop_when_out_of_time(event) -> None:
        if event.kind == "validation":
            logging.info("%s (%.0f s CPU)", event.message, time.process_time() - cpu0)
        if time.process_time() - cpu0 > args.cpu_seconds:
            cancel.set()
        if args.wall_seconds is not None and time.perf_counter() - wall0 > args.wall_seconds:
            cancel.set()

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{recipe['name']}.safetensors"
    start = time.perf_counter()
    start_from = recipe["arch"]
    extra = {"options": recipe["options"]}
    if args.corrections:
        start_file = args.start if args.start.suffix == ".safetensors" else args.start / f"{start_name}.safetensors"
        start_from, extra = with_corrections(segarch.load_model(start_file)), {}
    common = dict(batch_size=recipe["batch_size"], lr=recipe["lr"], loss=recipe["loss"], seed=recipe["seed"],
                  device=args.device)
    if args.fit_steps and args.wall_seconds:  # the rate of this machine, on the run's own data and batch
        stamps = {}

        def time_steps(event) -> None:
            if event.kind == "step" and event.step in (10, 40):
                stamps[event.step] = time.perf_counter()
        segarch.train(with_corrections(segarch.load_model(start_file)) if args.corrections else start_from,
                      images[:60], labels[:60], **extra, steps=40, val_every=1000, progress=time_steps, **common)
        per_step = (stamps[40] - stamps[10]) / 30
        # validations (every steps/20), the final validation and the save take about a fifth of the time
        args.steps = max(50, int(0.8 * (args.wall_seconds - (time.perf_counter() - wall0)) / per_step))
        logging.info("%.3f s per step (steps 10-40 of a probe): planning %d steps", per_step, args.steps)
    model = segarch.train(start_from, images, labels, **extra, steps=args.steps, **common,
                          progress=stop_when_out_of_time, cancel=cancel, out=target)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu0
    steps_done = max(r["step"] for r in model.history)
    validation = model.validation
    model.preprocessing = []
    model.trained = True
    if dims == 3:  # the voxel size it was trained at: segment_from_points resamples other stacks' crops to it
        model.pixel_size = [1.0, 1.0, 1.0]
    model.description = ("DEXTR-style extreme-point model (grey image + heat map -> object), trained on generated "
                         "objects by scripts/train_dextr_light.py.")

    # Measured as shipped: saved (float16 where the recipe says so) and loaded back.
    segarch.save_model(model, target, half=recipe.get("half", False))
    model = segarch.load_model(target)
    test = None if args.no_test else measure(model, recipe)

    # The model file was written above, with its description; the log (.csv) and plot (.png) are segarch.train's.
    card = {
        "name": recipe["name"],
        "title": f"Extreme points to object mask (DEXTR-style, light), {dims}D, grey images",
        "arch": recipe["arch"],
        "task": model.task,
        "options": recipe["options"],
        "spatial_dims": dims,
        "in_channels": model.in_channels,
        "parameters": model.num_parameters,
        "weights": "float16" if recipe.get("half") else "float32",
        "classes": ["background", "object"],
        "prompt": {"points": 2 * dims, **model.prompt},  # the crop recipe segarch.train recorded
        "trained_on": (f"{n_objects} objects from {args.scenes} generated scenes {'x'.join(map(str, recipe['shape']))} "
                       f"(segarch.prompts.object_scene, seed {recipe['seed']}): blobs, star-convex cells, polygons, "
                       "bent rods, touching and partly covered neighbours; object and background texture, brighter and "
                       "darker objects, illumination gradient, clutter, blur, Poisson and Gaussian noise. Extreme "
                       "points jittered afresh at every draw by up to 2% of the object's size (at least 1 px). 10% of "
                       "the objects held out for validation."),
        **({"voxel_size": VOXEL_SIZE_3D if args.corrections and not args.isotropic else "isotropic",
            "pixel_size": model.pixel_size} if dims == 3 else {}),
        **({"corrections": (f"fine-tuned from {start_file.name} ({args.start}) with three more input channels "
                            "(positive clicks, negative clicks, previous mask; weights started at zero): Sofiiuk et "
                            "al. 2021 iterative training, 0-3 simulated clicks per batch at the centre of the largest "
                            "error region")} if args.corrections else {}),
        "training": {
            "steps": steps_done, "planned_steps": args.steps, "batch_size": recipe["batch_size"],
            "patch": [settings.size] * dims, "lr": recipe["lr"], "loss": recipe["loss"],
            "augment": "flips and 90-degree rotations", "optimizer": "AdamW, 5% warm-up, cosine decay to 5%",
            "seed": recipe["seed"], "seconds": round(seconds), "cpu_seconds": round(cpu_seconds),
            "device": (f"cpu ({args.threads} thread{'s' if args.threads > 1 else ''}, shared)" if args.device == "cpu"
                       else f"{args.device} ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda")
                       else args.device),
            "torch": torch.__version__, "python": platform.python_version(),
            "trainer": "segarch.train", "held_out_objects": validation["held_out_objects"],
            "held_out_iou": round(validation["object_iou"], 4),
            "held_out_crop_dice": round(validation["patch_dice"][1], 4),
            "best_step": validation["best_step"], "stopped": "time budget" if cancel.is_set() else "planned steps",
        },
        "test": test,
        "script": "scripts/train_dextr_light.py",
    }
    (args.out / f"{recipe['name']}.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    logging.info("wrote %s", args.out / f"{recipe['name']}.safetensors")
    return card


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
