"""The ``segarch`` command line: ``zoo``, ``card NAME``, ``info FILE``, ``predict IN OUT``, ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

__all__ = ["main"]

log = logging.getLogger("segarch")


def _zoo(args) -> int:
    from segarch import zoo

    rows = []
    for entry in zoo.cards():
        if args.task and entry.task != args.task:
            continue
        if args.dims and args.dims not in entry.spatial_dims:
            continue
        params = zoo.parameter_count(entry.name) / 1e6
        rows.append({
            "name": entry.name, "task": entry.task, "dims": "/".join(f"{d}D" for d in entry.spatial_dims),
            "params_m": round(params, 2), "paper_params_m": entry.paper_params,
            "pinned": "pinned" in entry.paper_params_source.lower(),
            "paper": f"{entry.full_name} ({entry.year}, {entry.reference})",
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.markdown:  # the README's zoo table
        print("| name | task | dims | parameters (paper config) | paper reports | paper |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            paper = "—" if r["paper_params_m"] is None else f"{r['paper_params_m']:.2f}M"
            paper = f"none given (pinned {paper})" if r["pinned"] else paper
            print(f"| `{r['name']}` | {r['task']} | {r['dims']} | {r['params_m']:.2f}M | {paper} | {r['paper']} |")
        return 0
    header = ("name", "task", "dims", "params (M)", "paper (M)", "paper")
    table = [header] + [(r["name"], r["task"], r["dims"], f"{r['params_m']:.2f}",
                         "—" if r["paper_params_m"] is None else f"{r['paper_params_m']:.2f}", r["paper"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n{len(rows)} architectures; parameters counted at each paper's configuration.")
    return 0


def _card(args) -> int:
    from segarch import zoo

    summary = zoo.card(args.name).summary()
    summary["params_at_paper_config"] = zoo.parameter_count(args.name)
    print(json.dumps(summary, indent=2, default=list))
    return 0


def _info(args) -> int:
    from segarch.model_file import read_metadata

    meta = read_metadata(args.file)
    if meta is None:
        print(f"{args.file}: a safetensors file without segarch metadata (a plain state dict).")
        return 0
    print(json.dumps(meta, indent=2))
    return 0


def _demo(args) -> int:
    import numpy as np
    import torch

    import segarch
    from segarch import pretrained
    from segarch.samples import nuclei

    torch.manual_seed(args.seed)
    shipped = args.model or {2: "nuclei2d", 3: "nuclei3d"}[args.dims]  # a shipped trained model by default
    if shipped in pretrained.names():
        model = pretrained.load(shipped)
        if model.spatial_dims != args.dims:
            raise ValueError(f"`--model` {shipped!r} is a {model.spatial_dims}D model; pass --dims {model.spatial_dims}.")
    else:
        name = args.model or "unet"
        options = {} if args.paper_size else dict(segarch.zoo.card(name).test_config)
        model = segarch.Model.from_zoo(name, spatial_dims=args.dims, in_channels=1, out_channels=2,
                                       class_names=["background", "nucleus"], **options)
    model.network.eval()
    shape = (args.size,) * args.dims
    image, truth = nuclei(shape, seed=args.seed)
    print(f"image: generated nuclei {'×'.join(map(str, shape))} (seed {args.seed}), {int(truth.max())} nuclei")
    print(f"model: {model}")
    tile = 256 if args.dims == 2 else 64
    tiles = []
    start = time.perf_counter()
    labels = segarch.predict(model, image, tile=tile, overlap=0.25, progress=lambda d, t: tiles.append(t))
    seconds = time.perf_counter() - start
    fractions = ", ".join(f"{name} {np.mean(labels == i):.1%}" for i, name in enumerate(model.class_names))
    print(f"segarch.predict: {tiles[-1]} tiles of {tile} px (overlap 0.25, Gaussian blending, inputs padded to a "
          f"multiple of {model.size_divisor}), {seconds:.2f} s on the CPU")
    print(f"labels: {labels.dtype} {labels.shape}; {fractions}")
    if not model.trained:
        print("note: this architecture is untrained, so its labels are meaningless until it is trained.")
    else:
        from segarch.training.metrics import dice_per_class

        print(f"Dice of the labels against the generated ground truth: "
              f"{dice_per_class(labels > 0, truth > 0, num_classes=2)[1]:.3f}")
    if args.out:
        import tifffile

        tifffile.imwrite(args.out, labels)
        print(f"wrote {args.out}")
    return 0


class _ProgressBar:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, label: str) -> None:
        self.label, self.start = label, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = time.perf_counter() - self.start
        print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} tiles, {elapsed:.0f} s",
              end="", file=sys.stderr, flush=True)


def _predict(args) -> int:
    from pathlib import Path

    import numpy as np

    import segarch
    from segarch import io
    from segarch.model_file import resolve_model

    model = resolve_model(args.model, arch=args.arch)
    if not model.trained:
        print(f"warning: {model.arch!r} is untrained: its labels are meaningless until it is trained "
              "(see segarch train).", file=sys.stderr)
    inputs = [Path(args.input)]
    if inputs[0].is_dir() and io.format_of(inputs[0]) is None:  # a folder of images, not a .zarr store
        inputs = sorted(p for p in inputs[0].iterdir() if io.format_of(p) is not None)
        if not inputs:
            raise ValueError(f"`INPUT` folder {args.input!r} holds no image ({', '.join(io.EXTENSIONS)}).")
        Path(args.output).mkdir(parents=True, exist_ok=True)
        targets = [Path(args.output) / (io.image.stem(p) + ".zarr") for p in inputs]
    else:
        targets = [Path(args.output)]
    tile = tuple(args.tile) if args.tile and len(args.tile) > 1 else (args.tile[0] if args.tile else None)
    overlap = float(args.overlap) if "." in args.overlap else int(args.overlap)
    for source, target in zip(inputs, targets):
        start = time.perf_counter()
        to_zarr = target.suffix == ".zarr"
        if not to_zarr and target.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"`OUTPUT` {str(target)!r} must end in .zarr, .tif or .tiff.")
        bar = _ProgressBar(source.name)
        try:
            result = segarch.predict(
                model, str(source), axes=args.axes, tile=tile, overlap=overlap, batch_size=args.batch_size,
                blend=args.blend, device=args.device, output=args.output_kind, out=str(target) if to_zarr else None,
                resume=args.resume, overwrite=args.overwrite, scheduler=args.scheduler, progress=bar)
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished blocks are kept in {target}; re-run with --resume to continue.",
                  file=sys.stderr)
            return 130
        print(file=sys.stderr)
        if not to_zarr:
            axes = "".join(a for a in (args.axes or io.open_image(source).axes) if a != "C")
            io.write_tiff(target, result, axes=axes if len(axes) == result.ndim else None,
                          labels=args.output_kind == "labels", name=target.stem)
        seconds = time.perf_counter() - start
        pixels = int(np.prod(result.shape))
        print(f"{source.name} -> {target}: {result.shape} {result.dtype}, {pixels / seconds:,.0f} pixels/s, "
              f"{seconds:.1f} s")
    return 0


def _train(args) -> int:
    import segarch

    options = json.loads(args.options) if args.options else None
    patch = tuple(args.patch) if args.patch and len(args.patch) > 1 else (args.patch[0] if args.patch else None)
    state = {"cancelled": False, "start": time.perf_counter()}

    def progress(ev) -> None:
        if ev.kind == "done":
            state["cancelled"] = ev.cancelled
            print(file=sys.stderr)
            print(ev.message, file=sys.stderr)
            return
        width = 30
        filled = int(width * ev.step / max(ev.steps, 1))
        best = "" if ev.best_dice is None else f", best Dice {ev.best_dice:.3f}"
        print(f"\rtrain [{'#' * filled}{'.' * (width - filled)}] {ev.step}/{ev.steps} steps, loss {ev.loss:.4f}"
              f"{best}, {ev.seconds:.0f} s", end="", file=sys.stderr, flush=True)

    model = segarch.train(args.model, args.images, args.labels, axes=args.axes, num_classes=args.classes,
                          class_names=args.class_names, options=options, patch=patch, steps=args.steps,
                          batch_size=args.batch_size, val_fraction=args.val_fraction, loss=args.loss, lr=args.lr,
                          augment=args.augment, jitter=args.jitter, device=args.device, seed=args.seed, out=args.out,
                          progress=progress)
    from segarch.training import log_paths

    csv_path, png_path = log_paths(args.out)
    print(f"model: {model}\nwrote {args.out}, {csv_path.name} and {png_path.name}")
    if state["cancelled"]:
        print("interrupted: the best model so far is kept in " + args.out, file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segarch", description="Segmentation architectures and tiled inference.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("zoo", help="list the architectures")
    p.add_argument("--task", help="only this task (semantic, instance, panoptic, interactive, backbone)")
    p.add_argument("--dims", type=int, choices=(2, 3), help="only architectures that build in this dimensionality")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(run=_zoo)

    p = sub.add_parser("card", help="print one architecture's card")
    p.add_argument("name")
    p.set_defaults(run=_card)

    p = sub.add_parser("info", help="print a model file's metadata")
    p.add_argument("file")
    p.set_defaults(run=_info)

    p = sub.add_parser("predict", help="segment an image (or a folder of images) of any size, tile by tile")
    p.add_argument("input", help="image: .zarr, .tif/.tiff, .npy, or a folder of them")
    p.add_argument("output", help="result: .zarr (written block by block, resumable) or .tif; a folder for a folder")
    p.add_argument("--model", required=True, help="a model file (.safetensors, or .pt with --arch) or a zoo name")
    p.add_argument("--arch", help="the architecture of a plain state dict (.pt/.pth)")
    p.add_argument("--axes", help="the image's axes, e.g. YX, CYX, ZYX, TCZYX (default: from the file)")
    p.add_argument("--tile", type=int, nargs="+", help="tile size (one value, or one per spatial axis)")
    p.add_argument("--overlap", default="0.25", help="fraction of the tile (e.g. 0.25) or an int halo in pixels")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--blend", default="gaussian", choices=("gaussian", "constant", "crop"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--output-kind", default="labels", choices=("labels", "probabilities"))
    p.add_argument("--scheduler", help="a Dask scheduler address to run on a cluster")
    p.add_argument("--resume", action="store_true", help="continue a stopped run into the same .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=_predict)

    p = sub.add_parser("train", help="train or fine-tune a model on annotated images (Ctrl+C keeps the best so far)")
    p.add_argument("images", help="an image (.tif/.tiff/.zarr) or a folder of them")
    p.add_argument("labels", help="its labels (0 = background), or a folder matched by name (a.tif, a_labels.tif)")
    p.add_argument("--model", required=True, help="a zoo architecture, a shipped model or a model file to fine-tune "
                   "(an extreme-point model such as dextr_light trains on the objects of instance labels)")
    p.add_argument("--out", required=True, help="the .safetensors model file to write (log .csv and plot .png beside it)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, help="patches per step (default 8 in 2D, 2 in 3D; objects for "
                   "extreme-point models: 16 in 2D, 8 in 3D)")
    p.add_argument("--patch", type=int, nargs="+", help="patch size (one value, or one per spatial axis)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", default="dice_ce", choices=("dice_ce", "dice", "ce", "focal"))
    p.add_argument("--axes", help="the image's axes, e.g. YX, CYX, ZYX, TYX (default: from the shapes)")
    p.add_argument("--classes", type=int, help="classes including background (default 2: any label > 0 is foreground)")
    p.add_argument("--class-names", nargs="+", help="one name per class, background first")
    p.add_argument("--options", help='architecture options as JSON, e.g. \'{"features": [16, 32, 64, 128]}\'')
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--augment", default="default", choices=("default", "none"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--jitter", type=float, help="extreme-point models: how far (pixels) the points move from the "
                   "true extremes (default: 2%% of each object's size, at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_train)

    p = sub.add_parser("demo", help="segment a generated nuclei image with a shipped (or zoo) model, printing each step")
    p.add_argument("--model", help="a shipped model or an architecture name (default: the shipped nuclei2d/nuclei3d "
                   "model, else an untrained unet)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2)
    p.add_argument("--size", type=int, default=512, help="image size along each axis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-size", action="store_true", help="build the paper's full widths, not the small demo widths")
    p.add_argument("--out", help="write the labels to this TIFF file")
    p.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"segarch {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
