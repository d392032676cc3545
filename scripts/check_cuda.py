"""Check segarch's CUDA path on a machine with a GPU: the same calls on ``cuda`` and on ``cpu``, compared.

CI has no GPU, so this script is how the CUDA path is verified when one is lent (the README's *GPU* section
quotes its last output). Each check prints one line, ``ok`` or ``FAIL``, with what it compared; a JSON report
goes to ``--report``. Exit status 1 if any check failed.

Checks:
  * every zoo architecture (its paper configuration, 2D and where it has one 3D) runs on CUDA in eval mode and
    gives the CPU's output (fp32, TF32 off; relative difference of the outputs' tensors);
  * ``segarch.predict`` with shipped models, 2D and 3D: CUDA fp32 labels equal the CPU's, CUDA with autocast
    (the default there) agree on at least 99.5% of pixels;
  * an out-of-core run to Zarr on CUDA, cancelled part-way and resumed, equals an uninterrupted one;
  * ``output="instances"`` on CUDA finds the CPU's objects (F1 at IoU 0.5 between the two label images);
  * ``segment_from_points`` (2D, 3D, and a corrective click) on CUDA gives the CPU's mask;
  * ``segarch.train`` on CUDA (semantic, instance, interactive with corrections, a detector): the loss falls and the
    model comes back on the CPU and predicts.

Run: ``python scripts/check_cuda.py [--report cuda.json] [--zoo-seconds 150]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import segarch
from segarch import zoo
from segarch.instances.metrics import match
from segarch.layers.checks import padded_shape
from segarch.prompts import extreme_points, object_scene
from segarch.prompts.evaluate import iou
from segarch.synthetic import nuclei

RESULTS: list[dict] = []
GPU = "cuda"  # --device: the device checked against the CPU
REPORT: Path | None = None  # --report: rewritten after every check, so a run stopped by a time limit keeps its results


def check(name: str):
    """Run the decorated function as one check; it returns ``(passed, detail)``."""
    def wrap(function):
        start = time.perf_counter()
        try:
            passed, detail = function()
        except Exception as err:  # a crash is a failed check, reported, and the next check runs
            passed, detail = False, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
        seconds = time.perf_counter() - start
        RESULTS.append({"check": name, "passed": bool(passed), "detail": detail, "seconds": round(seconds, 1)})
        print(f"{'ok  ' if passed else 'FAIL'} {name} ({seconds:.1f} s): {detail}", flush=True)
        if REPORT is not None:
            REPORT.write_text(json.dumps({"torch": torch.__version__, "results": RESULTS}, indent=1))
        return function
    return wrap


def tensors(output) -> list[torch.Tensor]:
    """The tensors of a network's output (a tensor, a tuple/list/dict of them, nested)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for v in output.values() for t in tensors(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in tensors(v)]
    return []


def relative_difference(a, b) -> float:
    """Largest difference between two outputs' tensors, relative to the CPU output's scale; inf if they differ in
    structure (a detector keeping another number of boxes)."""
    ta, tb = tensors(a), tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        return float("inf")
    worst = 0.0
    for x, y in zip(ta, tb):
        x, y = x.float().cpu(), y.float().cpu()
        if x.numel():
            worst = max(worst, float((x - y).abs().max() / (x.abs().max() + 1e-6)))
    return worst


def zoo_checks(seconds: float, after: str = "") -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    deadline = time.perf_counter() + seconds
    for name in (n for n in zoo.names() if n > after):
        entry = zoo.card(name)
        for dims in sorted(entry.spatial_dims):
            if time.perf_counter() > deadline:
                RESULTS.append({"check": f"zoo {name} {dims}D", "passed": None, "detail": "not run: time budget"})
                continue

            @check(f"zoo {name} {dims}D")
            def _():
                torch.manual_seed(0)
                net = zoo.create(name, **dict(entry.paper_config, spatial_dims=dims, in_channels=1)).eval()
                size = 64 if dims == 2 else 32
                shape = padded_shape((size,) * dims, getattr(net, "size_divisor", 1) or 1)
                x = torch.rand(1, 1, *shape)
                with torch.inference_mode():
                    on_cpu = net(x)
                    on_gpu = net.to(GPU)(x.to(GPU))
                difference = relative_difference(on_cpu, on_gpu)
                net.cpu()
                return difference < 1e-3, f"input {tuple(shape)}, relative difference {difference:.2e}"


def predict_checks() -> None:
    image2d, truth2d = nuclei((1024, 1024), seed=int(np.random.default_rng().integers(1 << 30)))
    image3d, _ = nuclei((64, 192, 192), seed=int(np.random.default_rng().integers(1 << 30)))

    for name, image in (("unet.nuclei2d", image2d), ("unet.nuclei3d", image3d)):
        @check(f"predict {name}: cuda fp32 and bf16 autocast against cpu")
        def _():
            cpu = segarch.predict(name, image, device="cpu")
            fp32 = segarch.predict(name, image, device=GPU, amp=False)
            autocast = segarch.predict(name, image, device=GPU)
            same = float((cpu == fp32).mean())
            agree = float((cpu == autocast).mean())
            return same > 0.9999 and agree >= 0.995, f"fp32 labels equal on {same:.5f}, autocast on {agree:.5f}"

    @check("predict to Zarr on cuda: cancelled at tile 5, resumed = uninterrupted")
    def _():
        with tempfile.TemporaryDirectory() as folder:
            whole = segarch.predict("unet.nuclei2d", image2d, device=GPU, tile=256, out=Path(folder) / "a.zarr")
            cancel = threading.Event()

            def progress(done, total):
                if done >= 5:
                    cancel.set()
            try:
                segarch.predict("unet.nuclei2d", image2d, device=GPU, tile=256, out=Path(folder) / "b.zarr",
                                progress=progress, cancel=cancel)
                return False, "the run was not cancelled"
            except segarch.PredictionCancelled:
                pass
            resumed = segarch.predict("unet.nuclei2d", image2d, device=GPU, tile=256,
                                      out=Path(folder) / "b.zarr", resume=True)
            same = bool(np.array_equal(np.asarray(whole), np.asarray(resumed)))
            return same, f"resumed labels {'equal' if same else 'differ from'} the uninterrupted run's"

    @check("predict output='instances' on cuda against cpu")
    def _():
        cpu = segarch.predict("unet.nuclei2d_instances", image2d, output="instances", device="cpu")
        gpu = segarch.predict("unet.nuclei2d_instances", image2d, output="instances", device=GPU)
        f1 = match(cpu, gpu).f1(0.5)
        truth_f1 = match(truth2d, gpu).f1(0.5)
        return f1 >= 0.99, (f"{int(cpu.max())} objects on cpu, {int(gpu.max())} on cuda, F1 between them "
                            f"{f1:.4f}; cuda's F1 against the truth {truth_f1:.3f}")


def prompt_checks() -> None:
    for name, shape in (("dextr_light.objects2d", (160, 160)), ("dextr_light.objects3d", (48, 64, 64)),
                        ("dextr_light.clicks2d", (160, 160))):
        @check(f"segment_from_points {name} on cuda against cpu")
        def _():
            image, labels = object_scene(shape, seed=int(np.random.default_rng().integers(1 << 30)))
            ious, agreements = [], []
            for value in range(1, int(labels.max()) + 1):
                mask = labels == value
                if mask.sum() < 12:
                    continue
                points = extreme_points(mask)
                cpu = segarch.prompts.segment_from_points(name, image, points, device="cpu")
                gpu = segarch.prompts.segment_from_points(name, image, points, device=GPU)
                if name.startswith("dextr_light.clicks"):  # one corrective click at a missed or wrong pixel
                    wrong = np.argwhere(cpu != mask)
                    if len(wrong):
                        click = wrong[len(wrong) // 2][None]
                        key = "positive" if mask[tuple(click[0])] else "negative"
                        cpu = segarch.prompts.segment_from_points(name, image, points, previous=cpu, device="cpu",
                                                                  **{key: click})
                        gpu = segarch.prompts.segment_from_points(name, image, points, previous=gpu, device=GPU,
                                                                  **{key: click})
                agreements.append(iou(cpu, gpu))
                ious.append(iou(gpu, mask))
            return min(agreements) >= 0.99, (f"{len(ious)} objects, IoU cuda vs cpu min {min(agreements):.4f}, "
                                             f"cuda against truth mean {np.mean(ious):.3f}")


def train_checks() -> None:
    rng = np.random.default_rng()
    pairs = [nuclei((128, 128), seed=int(s)) for s in rng.integers(1 << 30, size=6)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    cases = [("semantic", "unet", dict(features=[8, 16, 32, 64, 128], loss="dice_ce"), (labels_to_classes(labels))),
             ("instance", "unet", dict(features=[8, 16, 32, 64, 128], task="instance"), labels),
             ("detection", "mask_rcnn", dict(task="instance", options=dict(zoo.card("mask_rcnn").test_config)), labels)]
    for task, arch, settings, targets in cases:
        @check(f"train {task} ({arch}) on cuda, 30 steps")
        def _():
            options = settings.get("options") or {"features": settings["features"]}
            extra = {k: v for k, v in settings.items() if k not in ("features", "options")}
            model = segarch.train(arch, images, targets, options=options, steps=30, batch_size=4, lr=2e-3,
                                  device=GPU, val_every=1000, **extra)
            losses = [row["loss"] for row in model.history if row.get("loss") is not None]
            first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
            device = next(model.network.parameters()).device.type
            result = segarch.predict(model, images[0], output="instances" if task != "semantic" else "labels",
                                     device=GPU)
            return last < first and device == "cpu", (f"loss {first:.3f} -> {last:.3f}, model back on {device}, "
                                                     f"predicts {result.shape} {result.dtype}")

    @check("train interactive with corrections (dextr_light.objects3d) on cuda, 20 steps")
    def _():
        from segarch.training import with_corrections
        scenes = [object_scene((48, 64, 64), seed=int(s)) for s in rng.integers(1 << 30, size=4)]
        model = segarch.train(with_corrections(segarch.pretrained.load("dextr_light.objects3d")),
                              [s[0] for s in scenes], [s[1] for s in scenes], steps=20, batch_size=8, lr=1e-4,
                              device=GPU, val_every=1000)
        losses = [row["loss"] for row in model.history if row.get("loss") is not None]
        return all(np.isfinite(losses)), f"{len(losses)} steps, losses {losses[0]:.3f} ... {losses[-1]:.3f}"


def labels_to_classes(labels):
    return [(lab > 0).astype(np.uint8) for lab in labels]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--zoo-seconds", type=float, default=150.0, help="stop the zoo checks after this long")
    parser.add_argument("--skip", nargs="*", default=[], choices=["zoo", "predict", "prompts", "train"])
    parser.add_argument("--zoo-after", default="", help="check only the zoo entries named after this one (a rerun)")
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (cpu: a dry run)")
    args = parser.parse_args(argv)
    global GPU, REPORT
    GPU, REPORT = args.device, args.report
    if GPU.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if GPU.startswith("cuda") else GPU
    print(f"torch {torch.__version__}, {name}, segarch from {Path(segarch.__file__).parent}")
    for part, run in (("predict", predict_checks), ("prompts", prompt_checks), ("train", train_checks),
                      ("zoo", lambda: zoo_checks(args.zoo_seconds, args.zoo_after))):
        if part not in args.skip:
            run()
    failed = [r["check"] for r in RESULTS if r["passed"] is False]
    skipped = [r["check"] for r in RESULTS if r["passed"] is None]
    print(f"{len(RESULTS) - len(failed) - len(skipped)} passed, {len(failed)} failed, {len(skipped)} not run")
    if args.report:
        args.report.write_text(json.dumps({"torch": torch.__version__, "device": name,
                                           "results": RESULTS}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
