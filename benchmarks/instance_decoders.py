"""Which instance decoder family? A measurement on fresh generated nuclei, 2D and 3D.

THE EXPERIMENT (not the product's training): each family's targets are learnt by the same small
U-Net (``segarch.Model.from_zoo("unet", features=(16, 32, 64, 128), norm="batch")``), from the same
generated images (``segarch.synthetic.samples(..., hard=True)``: crowded, touching and overlapping
nuclei, debris, uneven illumination, blur and noise; anisotropic voxels in 3D), for the same number
of steps, with the same optimiser, patches and flips, in the short plain PyTorch loop below. Only the
head's width, the targets and the loss differ:

* ``distance``: background + 4 classes of normalised edge distance, softmax, Dice + cross-entropy;
  decoded by :class:`segarch.instances.DistanceDecoder` (seeded watershed on the expected distance).
* ``boundary``: background / interior / boundary, softmax, Dice + cross-entropy; decoded by
  :class:`segarch.instances.BoundaryDecoder`.
* ``regression``: a foreground logit (binary cross-entropy) and the normalised distance regressed
  by a sigmoid (mean squared error); decoded by the same seeded watershed as ``distance``. This one
  needs a loss of its own, so it could not train through ``segarch.train`` today; it is here to see
  what learning the distance as classes costs or gains.

The class families could equally train through ``segarch.train`` on the converted labels; the same
loop keeps the comparison fair. Each family's seed threshold is picked on held-out validation
images, then F1 at IoU 0.5 and mean AP (IoU 0.5-0.9) are measured on fresh test images (other seeds).

Run: ``python benchmarks/instance_decoders.py --dims 2 --steps 600`` (and ``--dims 3``); prints one
table and, with ``--json``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import segarch
from segarch.instances import BoundaryDecoder, DistanceDecoder, match_many, normalized_distance, seeded_watershed
from segarch.instances.targets import object_contacts
from segarch.synthetic import samples

FAMILIES = ("distance", "boundary", "regression")
SEEDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # seed thresholds tried on the validation images (2D picked 0.7)

SETTINGS = {  # per dimensionality: data, patch, batch
    2: {"train": (48, (192, 192)), "val": (4, (256, 256)), "test": (8, (256, 256)),
        "patch": (96, 96), "batch": 4},
    3: {"train": (16, (32, 96, 96)), "val": (2, (32, 128, 128)), "test": (4, (32, 128, 128)),
        "patch": (16, 48, 48), "batch": 2},
}


def normalise(image: np.ndarray) -> np.ndarray:
    """The shipped models' pre-processing: whole-image 1st/99th percentiles to [0, 1], clipped."""
    lo, hi = np.percentile(image, (1, 99))
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def family_targets(family: str, labels: np.ndarray, spacing) -> np.ndarray:
    if family == "distance":
        return DistanceDecoder().targets(labels, spacing)
    if family == "boundary":
        return BoundaryDecoder().targets(labels, spacing)
    distance = normalized_distance(labels, spacing)
    distance[object_contacts(labels)] = 0.0  # as the distance classes: touching objects' centres stay apart
    return np.stack([(labels > 0).astype(np.float32), distance])


def channels(family: str) -> int:
    return {"distance": DistanceDecoder().channels, "boundary": 3, "regression": 2}[family]


def loss_fn(family: str):
    if family == "regression":
        def regression(logits, target):
            return (F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0])
                    + F.mse_loss(torch.sigmoid(logits[:, 1]), target[:, 1]) * 10)
        return regression
    from monai.losses import DiceCELoss

    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    return lambda logits, target: dice_ce(logits, target[:, None].long())


def batches(images, targets, patch, batch, rng):
    """Random patches with random flips (and 90° turns in the XY plane when it is square)."""
    dims = len(patch)
    while True:
        xs, ys = [], []
        for _ in range(batch):
            i = rng.integers(len(images))
            image, target = images[i], targets[i]
            start = [rng.integers(0, s - p + 1) for s, p in zip(image.shape, patch)]
            box = tuple(slice(a, a + p) for a, p in zip(start, patch))
            x, y = image[box], target[(Ellipsis,) + box]
            for axis in range(dims):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, y.ndim - dims + axis)
            if patch[-1] == patch[-2] and rng.random() < 0.5:
                x, y = np.swapaxes(x, -1, -2), np.swapaxes(y, -1, -2)  # distance maps are rotation-invariant
            xs.append(np.ascontiguousarray(x)[None])
            ys.append(np.ascontiguousarray(y))
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def train(family: str, dims: int, steps: int, data, seed: int) -> tuple[segarch.Model, float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = SETTINGS[dims]
    model = segarch.Model.from_zoo("unet", spatial_dims=dims, in_channels=1, out_channels=channels(family),
                                   features=(16, 32, 64, 128), norm="batch")
    images = [normalise(s.image) for s in data]
    targets = [family_targets(family, s.labels, s.spacing) for s in data]
    net = model.network
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    loss = loss_fn(family)
    stream = batches(images, targets, cfg["patch"], cfg["batch"], rng)
    net.train()
    started = time.perf_counter()
    for step in range(steps):
        x, y = next(stream)
        optimiser.zero_grad()
        value = loss(net(x), y)
        value.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  [{dims}D {family}] step {step + 1}/{steps} loss {value.item():.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    net.eval()
    return model, time.perf_counter() - started


@torch.no_grad()
def forward(model: segarch.Model, image: np.ndarray) -> np.ndarray:
    """The network on the whole image (padded to the size divisor): the family's output maps."""
    divisor = model.size_divisor
    x = normalise(image)
    pad = [(0, -s % divisor) for s in x.shape]
    x = np.pad(x, pad, mode="reflect")
    logits = model.network(torch.from_numpy(x)[None, None])[0]
    logits = logits[(slice(None),) + tuple(slice(0, s) for s in image.shape)]
    return logits.numpy()


def decode(family: str, logits: np.ndarray, seed_threshold: float) -> np.ndarray:
    if family == "regression":
        foreground = 1 / (1 + np.exp(-logits[0])) > 0.5
        distance = 1 / (1 + np.exp(-logits[1]))
        return seeded_watershed(foreground, distance, distance > seed_threshold)
    probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
    decoder = DistanceDecoder(seed_threshold=seed_threshold) if family == "distance" else \
        BoundaryDecoder(seed_threshold=seed_threshold)
    return decoder.decode(probs)


def run(dims: int, steps: int, families, seed: int, save: Path | None = None) -> list[dict]:
    cfg = SETTINGS[dims]
    train_data = samples(cfg["train"][0], cfg["train"][1], seed=100 + dims, hard=True)
    val = samples(cfg["val"][0], cfg["val"][1], seed=200 + dims, hard=True)
    test = samples(cfg["test"][0], cfg["test"][1], seed=300 + dims, hard=True)
    rows = []
    for family in families:
        model, seconds = train(family, dims, steps, train_data, seed)
        if save is not None:  # to look at the errors later; the class families load as instance models
            save.mkdir(parents=True, exist_ok=True)
            if family != "regression":
                model.class_names = (DistanceDecoder() if family == "distance" else BoundaryDecoder()).class_names
            model.trained = True
            segarch.save_model(model, save / f"{dims}d_{family}_{steps}.safetensors")
        val_logits = [forward(model, s.image) for s in val]
        scores = {t: match_many([s.labels for s in val], [decode(family, lg, t) for lg in val_logits]).f1(0.5)
                  for t in SEEDS}
        best = max(scores, key=scores.get)
        test_logits = [forward(model, s.image) for s in test]
        started = time.perf_counter()
        preds = [decode(family, lg, best) for lg in test_logits]
        decode_s = (time.perf_counter() - started) / len(test)
        result = match_many([s.labels for s in test], preds).summary()
        rows.append({"dims": dims, "family": family, "steps": steps, "train_seconds": round(seconds),
                     "seed_threshold": best, "val_f1_by_seed": {str(k): round(v, 4) for k, v in scores.items()},
                     "decode_seconds_per_image": round(decode_s, 3),
                     "test_images": cfg["test"][0], "test_shape": list(cfg["test"][1]),
                     "test_spacing": [list(s.spacing) for s in test], **result})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), nargs="+", default=[2, 3])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--save", type=Path, help="save each trained model in this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for dims in args.dims:
        rows += run(dims, args.steps, args.families, args.seed, args.save)
    print(f"\n{'dims':>4} {'family':>10} {'steps':>5} {'F1@0.5':>7} {'AP@0.5':>7} {'mean AP':>7} {'seed':>5} "
          f"{'train s':>7} {'decode s':>8}")
    for r in rows:
        print(f"{r['dims']:>4} {r['family']:>10} {r['steps']:>5} {r['f1@0.5']:>7.3f} {r['ap@0.5']:>7.3f} "
              f"{r['mean_ap']:>7.3f} {r['seed_threshold']:>5} {r['train_seconds']:>7} "
              f"{r['decode_seconds_per_image']:>8}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
