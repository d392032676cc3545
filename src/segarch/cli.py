"""The ``segarch`` command line: ``zoo``, ``card NAME``, ``info FILE``, ``predict IN OUT``, ``convert``, ``demo``,
``export MODEL OUT``."""

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
    print(json.dumps(summary, indent=2, default=list, ensure_ascii=False))
    return 0


def _info(args) -> int:
    from pathlib import Path

    from segarch.models import pretrained
    from segarch.models.files import read_metadata

    path, card = Path(args.file), None
    if not path.exists():  # a shipped model, by name (its former name too, with a warning)
        try:
            name = pretrained.canonical(args.file)
        except ValueError as err:
            raise ValueError(f"No model file at {args.file!r}, and {str(err)[len('`name` '):]}") from None
        path, card = pretrained.path(name), pretrained.card(name)
    meta = read_metadata(path)  # checked: a hostile file is refused here too
    if meta is None:
        print(f"{path}: a safetensors file without segarch metadata (a plain state dict).")
        return 0
    if card is not None:
        meta = {"shipped_model": card["name"], "card": card, **meta}
    print(json.dumps(meta, indent=2, ensure_ascii=False))
    return 0


def _demo(args) -> int:
    from segarch import destinations

    if args.out:  # checked before the work, as everywhere
        destinations.check_output_file(args.out, overwrite=args.overwrite, name="--out")
    import numpy as np
    import torch

    import segarch
    from segarch.devices import resolve_device
    from segarch.models import catalog
    from segarch.samples import nuclei

    torch.manual_seed(args.seed)
    default = {2: "unet.nuclei2d", 3: "unet.nuclei3d"}[args.dims]  # shipped by default
    # Objects, not only pixels: a shipped nuclei instance model of this dimensionality, once one ships.
    from segarch.models import pretrained

    shipped_instances = [n for n in pretrained.names() if "instance" in n and f"nuclei{args.dims}d" in n]
    ref = catalog.parse(args.model or (shipped_instances[0] if shipped_instances else default))
    if ref.kind == "zoo":
        options = {} if args.paper_size else dict(segarch.zoo.card(ref.name).test_config)
        model = catalog.resolve(ref, spatial_dims=args.dims, in_channels=1, out_channels=2,
                                class_names=["background", "nucleus"], **options)
    else:
        model = catalog.resolve(ref, task=("semantic", "instance"))
        if model.spatial_dims != args.dims:
            raise ValueError(f"--model {ref.text!r} is a {model.spatial_dims}D model; pass --dims {model.spatial_dims}.")
    model.network.eval()
    size = args.size if args.size is not None else {2: 512, 3: 96}[args.dims]
    if size < 16:
        raise ValueError(f"--size {size}: the generated image needs at least 16 pixels along each axis.")
    shape = (size,) * args.dims
    image, truth = nuclei(shape, seed=args.seed)
    print(f"image: generated nuclei {'×'.join(map(str, shape))} (seed {args.seed}), {int(truth.max())} nuclei")
    print(f"model: {model}")
    tile = 256 if args.dims == 2 else 64
    device = resolve_device(args.device)
    if _is_instance_model(model):
        return _demo_instances(args, model, image, truth, tile, device)
    tiles = []
    start = time.perf_counter()
    labels = segarch.predict(model, image, tile=tile, overlap=0.25, device=device,
                             progress=lambda d, t: tiles.append(t))
    seconds = time.perf_counter() - start
    fractions = ", ".join(f"{name} {np.mean(labels == i):.1%}" for i, name in enumerate(model.class_names))
    where = "the CPU" if device.type == "cpu" else str(device)
    print(f"segarch.predict: {tiles[-1]} tiles of {tile} px (overlap 0.25, Gaussian blending, inputs padded to a "
          f"multiple of {model.size_divisor}), {seconds:.2f} s on {where}")
    print(f"labels: {labels.dtype} {labels.shape}; {fractions}")
    if not model.trained:
        print("note: this architecture is untrained, so its labels are meaningless until it is trained.")
    else:
        from segarch.training.metrics import dice_per_class

        print(f"Dice of the labels against the generated ground truth: "
              f"{dice_per_class(labels > 0, truth > 0, num_classes=2)[1]:.3f}")
    if args.out:
        from segarch import io

        io.write_tiff(args.out, labels, axes="ZYX"[-args.dims:], labels=True, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0


def _is_instance_model(model) -> bool:
    from segarch.instances.predict import decoder_for

    try:
        decoder_for(model)
    except ValueError:
        return False
    return True


def _demo_instances(args, model, image, truth, tile, device) -> int:
    """The demo of an instance model: objects, their count and F1 against the generated nuclei."""
    import segarch
    from segarch.instances import match

    start = time.perf_counter()
    # The generated image's pixels are isotropic, one unit each: a model trained at another voxel size (the 3D
    # model's Z step is 2) gets the image resampled to its own, and the labels back on the image's grid.
    labels, report = segarch.predict(model, image, tile=tile, overlap=0.25, device=device, output="instances",
                                     pixel_size=(1.0,) * args.dims, instance_options={"return_report": True})
    seconds = time.perf_counter() - start
    where = "the CPU" if device.type == "cpu" else str(device)
    print(f"segarch.predict(output='instances'): network tiles of {tile} px, then seeded-watershed decoding block by "
          f"block, {seconds:.2f} s on {where}")
    print(f"instances: {labels.dtype} {labels.shape}; {report['objects']} objects ({int(truth.max())} generated), "
          f"{report['merged_across_seams']} merged across block seams, {report['touching_border']} touching the "
          f"border")
    if report.get("pixel_size") and report["pixel_size"].get("note"):
        print(f"pixel size: {report['pixel_size']['note']}")
    if not model.trained:
        print("note: this model is untrained, so its objects are meaningless until it is trained.")
    matching = match(truth, labels)
    print(f"F1 at IoU 0.5 against the generated truth: {matching.f1(0.5):.3f} "
          f"(precision {matching.precision(0.5):.3f}, recall {matching.recall(0.5):.3f}); "
          f"mean AP over IoU 0.5-0.9: {matching.mean_ap:.3f}")
    if args.out:
        from segarch import io

        io.write_tiff(args.out, labels, axes="ZYX"[-args.dims:], labels=True, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0


class _Console:
    """Progress bars and log lines on stderr that never share a line.

    A bar redraws its own line (``\r``); a log line (``-v``) or a message first ends the bar's line, and
    the bar is drawn again at its next update.
    """

    def __init__(self) -> None:
        self.bar_open = False

    def bar(self, text: str) -> None:
        print("\r" + text, end="", file=sys.stderr, flush=True)
        self.bar_open = True

    def line(self, text: str = "") -> None:
        if self.bar_open:
            print(file=sys.stderr)
            self.bar_open = False
        if text:
            print(text, file=sys.stderr, flush=True)


CONSOLE = _Console()


class _LogHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        CONSOLE.line()
        super().emit(record)


class _ProgressBar:
    """A one-line text progress bar on stderr (no dependency); ``total`` is the tiles this run computes."""

    def __init__(self, label: str) -> None:
        self.label, self.start = label, time.perf_counter()
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if total == 0:
            return  # a resumed run with nothing left: no bar
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = time.perf_counter() - self.start
        CONSOLE.bar(f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} tiles, {elapsed:.0f} s")


def _overlap(text: str):
    """``--overlap``: a fraction (``0.25``) or an int halo in pixels (``32``)."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1) such as 0.25, or a halo in pixels such as 32; "
                                         f"got {text!r}") from None


def _jobs(args) -> tuple[list[tuple], dict]:
    """``[(source, target), ...]`` of a predict run and the problems found before any work (by source).

    Only paths are looked at here (no torch import): a mistake is reported in a second, not after the imports.
    """
    from pathlib import Path

    from segarch import destinations

    source = Path(args.input)
    if not source.exists():
        raise ValueError(f"INPUT {args.input!r} does not exist.")
    output = Path(args.output)
    if source.is_dir() and not source.name.lower().rstrip("/").endswith(".zarr"):  # a folder of images
        from segarch.io.api import EXTENSIONS, format_of  # segarch.io imports Dask: only for a folder
        from segarch.io.image import stem

        destinations.check_not_an_input(output, [source], name="OUTPUT")
        inputs = sorted(p for p in source.iterdir() if format_of(p) is not None and not p.name.startswith("."))
        if not inputs:
            raise ValueError(f"INPUT folder {args.input!r} holds no image ({', '.join(EXTENSIONS)}).")
        if output.exists() and not output.is_dir():
            raise ValueError(f"OUTPUT {args.output!r} is a file; a folder run writes one .zarr per image into a "
                             "folder.")
        stems = [stem(p) for p in inputs]
        # a.tif and a.npy would both become a.zarr: colliding names keep their extension (a.tif.zarr, a.npy.zarr).
        suffix = "." + getattr(args, "format", "zarr")
        names = [(p.name if stems.count(s) > 1 else s) + suffix for p, s in zip(inputs, stems)]
        jobs = [(p, output / n) for p, n in zip(inputs, names)]
    else:
        jobs = [(source, output)]
    problems = {}
    for src, target in jobs:
        if _complete_tiff(target, args):
            continue  # a rerun with --resume: this file is done (reported as such)
        try:
            _check_target(src, target, args)
        except ValueError as err:
            if len(jobs) == 1:
                raise
            problems[src] = str(err)
    return jobs, problems


def _complete_tiff(target, args) -> bool:
    """A ``.tif`` result that a previous run finished (it exists and no partial store is left), with --resume."""
    return (bool(getattr(args, "resume", False)) and target.suffix.lower() in (".tif", ".tiff") and target.is_file()
            and not _partial(target).exists())


def _partial(target):
    """The resumable store a ``.tif`` result is computed into before it is converted."""
    from segarch.batch import partial_store

    return partial_store(target)


def _check_target(source, target, args) -> None:
    from segarch import destinations

    destinations.check_not_an_input(target, [source], name="OUTPUT")
    suffix = target.suffix.lower()
    if suffix == ".zarr":
        destinations.check_output_store(target, overwrite=args.overwrite, resume=args.resume, inputs=[source],
                                        name="OUTPUT")
    elif suffix in (".tif", ".tiff"):
        destinations.check_output_file(target, overwrite=args.overwrite, inputs=[source], name="OUTPUT")
        partial = _partial(target)
        if partial.exists() and not (args.resume or args.overwrite):
            raise ValueError(f"{str(partial)!r} holds the unfinished result of an interrupted run for OUTPUT "
                             f"{str(target)!r}: pass --resume to continue it or --overwrite to start again.")
        destinations.check_output_store(partial, overwrite=args.overwrite, resume=args.resume, inputs=[source],
                                        name="OUTPUT")
    else:
        raise ValueError(f"OUTPUT {str(target)!r} must end in .zarr (resumable), .tif or .tiff.")


def _predict(args) -> int:
    jobs, problems = _jobs(args)  # paths checked before the heavy imports
    from pathlib import Path

    from segarch.batch import BatchInterrupted, open_client, predict_file, predict_files
    from segarch.models import catalog
    from segarch.tiling.report import ReportRow, write_report

    model = catalog.resolve(args.model, arch=args.arch)
    if not model.trained:
        CONSOLE.line(f"warning: {model.arch!r} is untrained: its labels are meaningless until it is trained "
                     "(see segarch train).")
    for source, problem in problems.items():
        CONSOLE.line(f"skipped {source.name}: {_cli_words(problem, 'predict')}")
    tile = tuple(args.tile) if args.tile and len(args.tile) > 1 else (args.tile[0] if args.tile else None)
    rows = [ReportRow(str(source), "skipped", error=problem) for source, problem in problems.items()]
    report = args.report or (str(jobs[0][1].parent / "segarch-report.csv") if len(jobs) > 1 else None)
    pixel_size = tuple(args.pixel_size) if args.pixel_size and len(args.pixel_size) > 1 else \
        (args.pixel_size[0] if args.pixel_size else None)
    bands = [int(b) if b.isdigit() else b for b in args.bands] if args.bands else None
    settings = dict(axes=args.axes, tile=tile, overlap=args.overlap, batch_size=args.batch_size, blend=args.blend,
                    device=args.device, output=args.output_kind, grey=args.grey, bands=bands, nodata=args.nodata,
                    pixel_size=pixel_size, tissue=args.tissue_only, runtime=args.runtime)
    if args.precision != "fp32":
        settings["precision"] = args.precision
    if args.thing_classes:
        if args.output_kind != "panoptic":
            raise ValueError(f"--thing-classes applies to --output panoptic only, got --output {args.output_kind}.")
        settings["instance_options"] = {"thing_classes": list(args.thing_classes)}
    if args.stuff_area is not None or args.stuff_regions is not None:
        if args.output_kind != "panoptic":
            raise ValueError(f"--stuff-area and --stuff-regions apply to --output panoptic only, got --output "
                             f"{args.output_kind}.")
        settings.setdefault("instance_options", {}).update(
            {"stuff_area": args.stuff_area, **({"stuff_regions": args.stuff_regions} if args.stuff_regions else {})})
    todo = []
    for source, target in jobs:
        if source in problems:
            continue
        if _complete_tiff(target, args):
            print(f"{source.name} -> {target}: already complete")
            rows.append(ReportRow(str(source), "complete", output=str(target)))
        else:
            todo.append((source, target))
    # A folder with --scheduler: one file per task on the cluster; one image: its tile regions on the cluster.
    client, owned = (None, False) if args.scheduler is None else open_client(args.scheduler)
    files_on_cluster = client is not None and len(jobs) > 1
    if client is not None and not files_on_cluster:
        settings["scheduler"] = client
    try:
        if len(jobs) == 1 and report is None and todo:  # one image: errors end the command (exit 2)
            source, target = todo[0]
            try:
                row = predict_file(model, source, target, settings, resume=args.resume, overwrite=args.overwrite,
                                   progress=_ProgressBar(source.name))
            except KeyboardInterrupt:
                CONSOLE.line(f"interrupted: the finished blocks of {source.name} are kept in "
                             f"{_partial(target) if target.suffix.lower() in ('.tif', '.tiff') else target}; run "
                             "the same command with --resume to continue.")
                return 130
            _print_row(row)
            return 0
        if files_on_cluster:
            print(f"{len(todo)} files on the cluster ({client.scheduler.address}), one task per file")
        rows += predict_files(model, todo, settings, scheduler=client if files_on_cluster else None,
                              resume=args.resume, overwrite=args.overwrite, on_row=_print_row,
                              progress=None if files_on_cluster else (lambda src: _ProgressBar(src.name)))
    except BatchInterrupted as stop:
        rows += stop.rows
        for row in stop.rows:
            if row.status == "interrupted":
                CONSOLE.line(f"interrupted: the finished blocks of {Path(row.file).name} are kept in {row.output}; "
                             "run the same command with --resume to continue.")
        _write_report(report, rows, write_report)
        return 130
    finally:
        if owned:
            client.close()
    for row in rows:
        if row.status == "failed":
            row.error = _cli_words(row.error, "predict")
    _write_report(report, rows, write_report)
    failed = [Path(r.file).name for r in rows if r.status in ("failed", "skipped")]
    written = sum(r.status in ("done", "complete") for r in rows)
    if len(jobs) > 1:
        print(f"{written} of {len(jobs)} images segmented" + (f"; failed: {', '.join(failed)}" if failed else "."))
    return 1 if failed else 0


def _print_row(row) -> None:
    """The CLI's line about a finished (or failed) file of a predict run."""
    from pathlib import Path

    name = Path(row.file).name
    if row.status == "failed":
        CONSOLE.line(f"failed {name}: {_cli_words(row.error, 'predict')}")  # the batch goes on
        return
    CONSOLE.line()
    extra = row.extra
    if row.status == "complete":
        what = "already complete (nothing left to compute)"
    elif extra.get("resumed"):
        what = f"resumed: {extra['tiles']} remaining tiles in {row.seconds:.1f} s"
    else:
        what = f"{row.pixels_per_s:,.0f} pixels/s, {row.seconds:.1f} s"
    print(f"{name} -> {row.output}: {extra['shape']} {extra['dtype']}, {what}")
    if extra.get("instances") is not None:
        print(_instance_summary(extra["instances"]))
        per_class = extra["instances"].get("objects_per_class")
        if per_class:
            print("  objects per class: " + ", ".join(f"{k}: {v}" for k, v in per_class.items()))


def _instance_summary(report: dict) -> str:
    """The CLI's lines about an instance result: objects, sizes, seams, border, pixel size, table."""
    size = report.get("median_size_pixels")
    lines = [f"  objects: {report['objects']}"
             + ("" if size is None else f", median size {size:g} pixels"
                + ("" if report.get("median_size") in (None, size) else f" ({report['median_size']:.4g} physical)"))
             + f"; {report['merged_across_seams']} merged across block seams, "
             f"{report['touching_border']} touching the image border"]
    note = (report.get("pixel_size") or {}).get("note")
    if note:
        lines.append(f"  pixel size: {note}")
    if report.get("table"):
        lines.append(f"  table: {report['table']}")
    return "\n".join(lines)


def _write_report(report, rows, write_report) -> None:
    if report is not None:
        write_report(report, rows)
        print(f"run report: {report}")


def _nodata(text: str):
    """``--nodata``: a number, ``nan``, ``none`` (ignore the file's nodata) or ``file`` (the default)."""
    if text.lower() in ("none", "file"):
        return None if text.lower() == "none" else "file"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, nan or none; got {text!r}") from None
    return int(value) if value.is_integer() else value


def _convert(args) -> int:
    from pathlib import Path

    from segarch import destinations
    from segarch.io.convert import convert_store, store_vectors

    store = Path(args.input)
    if not store.exists():
        raise ValueError(f"INPUT {args.input!r} does not exist.")
    if args.output is None and not args.vectors:
        raise ValueError("Pass OUTPUT (a .tif) and/or --vectors (a .gpkg or .geojson) to say what to write.")
    if args.output is not None:
        destinations.check_output_file(args.output, overwrite=args.overwrite, inputs=[store], name="OUTPUT")
    if args.vectors:
        destinations.check_output_file(args.vectors, overwrite=args.overwrite, inputs=[store], name="--vectors")
    if args.output is not None:
        print(f"wrote {convert_store(store, args.output, overwrite=args.overwrite)}")
    if args.vectors:
        path = store_vectors(store, args.vectors, qupath=True if args.qupath else None, overwrite=args.overwrite)
        print(f"wrote {path}")
    return 0


def _train(args) -> int:
    from segarch import destinations

    # Checked before the imports and the data: an existing model file (or its log) is never silently replaced.
    # (The log and plot names are segarch.training.log_paths's, spelled here so nothing heavy is imported yet.)
    stem = args.out[: -len(".safetensors")] if args.out.endswith(".safetensors") else args.out
    destinations.check_output_file(args.out, overwrite=args.overwrite, companions=[stem + ".csv", stem + ".png"],
                                   inputs=[args.images, args.labels, args.model], name="--out")
    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as err:
        raise ValueError(f"--options must be JSON, e.g. '{{\"features\": [16, 32, 64, 128]}}'; got {args.options!r} "
                         f"({err}).") from None
    import segarch

    patch = tuple(args.patch) if args.patch and len(args.patch) > 1 else (args.patch[0] if args.patch else None)
    state = {"cancelled": False, "start": time.perf_counter()}

    def progress(ev) -> None:
        if ev.kind == "done":
            state["cancelled"] = ev.cancelled
            CONSOLE.line(ev.message)
            return
        width = 30
        filled = int(width * ev.step / max(ev.steps, 1))
        best = "" if ev.best_dice is None else f", best Dice {ev.best_dice:.3f}"
        CONSOLE.bar(f"train [{'#' * filled}{'.' * (width - filled)}] {ev.step}/{ev.steps} steps, loss {ev.loss:.4f}"
                    f"{best}, {ev.seconds:.0f} s")

    extra = {} if args.task is None else {"task": args.task}
    if args.pixel_size:
        extra["pixel_size"] = tuple(args.pixel_size)
    if args.adapt_to is not None:
        extra["adapt_to"] = args.adapt_to
    for name in ("adapt_weight", "adapt_discriminator"):  # without --adapt-to: refused by name, not dropped
        if getattr(args, name) is not None:
            extra[name] = getattr(args, name)
    if args.thing_classes:
        extra["thing_classes"] = list(args.thing_classes)
    if args.label_divisor is not None:
        extra["label_divisor"] = args.label_divisor
    model = segarch.train(args.model, args.images, args.labels, axes=args.axes, num_classes=args.classes,
                          class_names=args.class_names, options=options, patch=patch, steps=args.steps,
                          batch_size=args.batch_size, val_fraction=args.val_fraction, loss=args.loss, lr=args.lr,
                          augment=args.augment, jitter=args.jitter, device=args.device, seed=args.seed, out=args.out,
                          overwrite=args.overwrite, progress=progress, **extra)
    from segarch.training import log_paths

    csv_path, png_path = log_paths(args.out)
    print(f"model: {model}\nwrote {args.out}, {csv_path.name} and {png_path.name}")
    if state["cancelled"]:
        CONSOLE.line("interrupted: the best model so far is kept in " + args.out)
        return 130
    return 0


def _export(args) -> int:
    from segarch.runtimes import ExportError, RuntimeNotInstalled
    from segarch.runtimes.export import export_model

    options = {"authors": args.author} if args.author else {}
    try:
        out = export_model(args.model, args.output, format=args.format, tile=_tile(args.tile), overwrite=args.overwrite,
                           license=args.license, **options)
    except (ExportError, RuntimeNotInstalled) as err:
        CONSOLE.line(f"segarch export: error: {_cli_words(str(err), 'export')}")
        return 2
    CONSOLE.line(f"wrote {out} ({args.format})")
    return 0


def _tile(values):
    return None if not values else (values[0] if len(values) == 1 else tuple(values))


def build_parser() -> argparse.ArgumentParser:
    from segarch.zoo.card import TASKS  # no network is imported for this

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log details (before or after the command)")
    parser = argparse.ArgumentParser(prog="segarch", description="Segmentation architectures and tiled inference.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("zoo", help="list the architectures", parents=[common])
    p.add_argument("--task", choices=TASKS, help="only this task")
    p.add_argument("--dims", type=int, choices=(2, 3), help="only architectures that build in this dimensionality")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(run=_zoo)

    p = sub.add_parser("card", help="print one architecture's card", parents=[common])
    p.add_argument("name")
    p.set_defaults(run=_card)

    p = sub.add_parser("info", help="print a model file's (or a shipped model's) metadata", parents=[common])
    p.add_argument("file", help="a .safetensors model file, or a shipped model's name (e.g. unet.nuclei2d)")
    p.set_defaults(run=_info)

    p = sub.add_parser("predict", help="segment an image (or a folder of images) of any size, tile by tile",
                       parents=[common])
    p.add_argument("input", help="image: .zarr, .tif/.tiff, .npy, or a folder of them")
    p.add_argument("output", help="result: .zarr (written block by block, resumable) or .tif (computed into a "
                   "resumable OUTPUT.partial.zarr, converted at the end); a folder for a folder")
    p.add_argument("--model", required=True, help="a model file (.safetensors, or .pt with --arch), shipped "
                   "weights (e.g. unet.nuclei2d) or a zoo architecture (untrained)")
    p.add_argument("--arch", help="the architecture of a plain state dict (.pt/.pth)")
    p.add_argument("--axes", help="the image's axes, e.g. YX, CYX, YXC, ZYX, TCZYX (default: from the file)")
    p.add_argument("--grey", action="store_true", help="convert an RGB(A) image to grey for a 1-channel model")
    p.add_argument("--tile", type=int, nargs="+", help="tile size (one value, or one per spatial axis)")
    p.add_argument("--overlap", type=_overlap, default=0.25,
                   help="fraction of the tile (e.g. 0.25) or an int halo in pixels (e.g. 32)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--blend", default="gaussian", choices=("gaussian", "constant", "crop"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--output", "--output-kind", dest="output_kind", default="labels",
                   choices=("labels", "probabilities", "instances", "panoptic"),
                   help="labels (a class per pixel), probabilities, or instances (one id per object, an instance "
                   "model only; the per-object table is written beside OUTPUT as OUTPUT-STEM_objects.csv), or "
                   "panoptic (a Panoptic-DeepLab, DeeperLab or EfficientPS model: OUTPUT.zarr holds two label images, classes "
                   "and instances; OUTPUT.tif one file whose bands are classes, instances; the table gets a "
                   "class column)")
    p.add_argument("--thing-classes", type=int, nargs="+", help="--output panoptic: the classes that are countable "
                   "objects (default: the model's settings, else every class but 0)")
    p.add_argument("--stuff-area", type=int, help="--output panoptic: stuff regions of fewer pixels become void (the "
                   "class after the last)")
    p.add_argument("--stuff-regions", choices=("class", "connected"), help="--output panoptic: what --stuff-area "
                   "counts: a class's stuff in the whole image (default, as the per-image decoders) or each "
                   "connected region")
    p.add_argument("--runtime", default="torch", choices=("auto", "torch", "onnxruntime", "openvino"),
                   help="what runs the network: torch (eager), onnxruntime (exported once and cached; CPU; "
                   "pip install 'napari-segarch[fast]'), openvino (that export compiled by OpenVINO; "
                   "pip install 'napari-segarch[openvino]'), or auto (the fastest installed one that runs the model)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="int8: the export quantised on the image's own tiles (with --runtime onnxruntime, openvino "
                   "or auto), used only when its labels agree with fp32's on >= 99.5%% of them, else fp32 (logged)")
    p.add_argument("--scheduler", help="run on a Dask cluster: an address (tcp://host:8786), or local / local:N "
                   "to start N worker processes here; a folder's files run in parallel (one task per file), a "
                   "single image's tile regions do")
    p.add_argument("--resume", action="store_true", help="continue a stopped run into the same OUTPUT (a folder "
                   "run skips the files already complete and resumes the partial ones)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result (never anything else)")
    p.add_argument("--bands", nargs="+", help="a multispectral raster's bands for the model, in its order: names "
                   "(red green blue nir) or numbers from 1 (default: the bands the model was trained on, by name)")
    p.add_argument("--nodata", type=_nodata, default="file", help="the input value of pixels to leave out (0 in "
                   "labels, never computed); default: the raster's own nodata; 'none' ignores it")
    p.add_argument("--pixel-size", type=float, nargs="+", help="the image's pixel size when the file does not "
                   "record it: µm per level-0 pixel of a slide (one value, or y x), or for --output instances per "
                   "spatial axis (Z Y X or Y X; resampled to the model's when it differs)")
    p.add_argument("--tissue-only", action="store_true", help="whole slides: compute only the tiles that hold "
                   "tissue (Otsu on a low level); the glass is 0")
    p.add_argument("--format", choices=("zarr", "tif"), default="zarr", help="a folder run's outputs: .zarr "
                   "(default) or .tif (a GeoTIFF/COG for georeferenced inputs)")
    p.add_argument("--report", help="write the run report here (.csv or .json; a folder run writes "
                   "OUTPUT/segarch-report.csv by default): file, status, error, time, pixels/s, objects, output")
    p.set_defaults(run=_predict)

    p = sub.add_parser("convert", help="turn a result store (.zarr) into a GeoTIFF/COG or OME-TIFF, and/or vectors",
                       parents=[common])
    p.add_argument("input", help="a .zarr result of segarch predict")
    p.add_argument("output", nargs="?", help="the .tif to write (a COG with the CRS when the result is "
                   "georeferenced)")
    p.add_argument("--vectors", help="also trace the labels into polygons: .gpkg/.geojson (map coordinates and CRS), "
                   "or QuPath GeoJSON for a slide")
    p.add_argument("--qupath", action="store_true", help="write --vectors as QuPath GeoJSON (slide level-0 pixels)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(run=_convert)

    p = sub.add_parser("train", help="train or fine-tune a model on annotated images (Ctrl+C keeps the best so far)",
                       parents=[common])
    p.add_argument("images", help="an image (.tif/.tiff/.zarr) or a folder of them")
    p.add_argument("labels", help="its labels (0 = background), or a folder matched by name (a.tif, a_labels.tif)")
    p.add_argument("--model", required=True, help="a zoo architecture (a new network), shipped weights (e.g. "
                   "unet.nuclei2d) or a model file to fine-tune (an extreme-point model such as dextr_light or "
                   "dextr_light.objects2d trains on the objects of instance labels)")
    p.add_argument("--out", required=True, help="the .safetensors model file to write (log .csv and plot .png beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and its log and plot)")
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
    p.add_argument("--task", choices=("semantic", "instance", "interactive", "panoptic"),
                   help="what the model learns (default: the model's own; a zoo name trains a semantic model): "
                   "instance = one label per object, from instance labels (0 background, 1..N objects); "
                   "panoptic = classes and objects (panoptic_deeplab, deeperlab), from panoptic ids "
                   "class * label divisor + instance")
    p.add_argument("--thing-classes", type=int, nargs="+", help="--task panoptic: the classes that have objects "
                   "(default: all but 0)")
    p.add_argument("--label-divisor", type=int, help="--task panoptic: the divisor of the panoptic ids (default 1000)")
    p.add_argument("--pixel-size", type=float, nargs="+", help="the images' pixel size per spatial axis (Z Y X or "
                   "Y X; default: from the files); recorded with the model")
    p.add_argument("--adapt-to", metavar="FOLDER", help="unlabelled images (a folder of .tif/.tiff/.zarr, or one "
                   "file) of the kind the model must work on: the network is aligned to them while it trains "
                   "(MADAN's feature-level adversarial alignment)")
    p.add_argument("--adapt-weight", type=float, help="weight of the alignment loss (with --adapt-to; default 0.1 "
                   "with the per-place discriminator, 0.01 with the spatial one)")
    p.add_argument("--adapt-discriminator", choices=("per-place", "spatial"),
                   help="with --adapt-to: MADAN's per-place domain discriminator (default) or AdaptSegNet's spatial one, which "
                   "judges the layout of the outputs (patches of 32 px or more)")
    p.set_defaults(run=_train)

    p = sub.add_parser("demo", help="segment a generated nuclei image with a shipped (or zoo) model, printing each step",
                       parents=[common])
    p.add_argument("--model", help="shipped weights, a model file or an architecture (default: the shipped nuclei "
                   "instance model once one ships, else unet.nuclei2d / unet.nuclei3d); an instance model shows "
                   "objects, their count and F1")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2)
    p.add_argument("--size", type=int, help="image size along each axis (default 512 in 2D, 96 in 3D: a 512³ "
                   "stack takes minutes on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--paper-size", action="store_true", help="build the paper's full widths, not the small demo widths")
    p.add_argument("--out", help="write the labels to this TIFF file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(run=_demo)

    p = sub.add_parser("export", help="write a model for other tools: an ONNX file or a bioimage.io package",
                       parents=[common])
    p.add_argument("model", help="a shipped model (e.g. unet.nuclei2d), a model file or a zoo architecture")
    p.add_argument("output", help="the .onnx file, or the bioimage.io package (.zip, or a folder)")
    p.add_argument("--format", default="onnx", choices=("onnx", "bioimageio"))
    p.add_argument("--tile", type=int, nargs="+", help="the graph's tile size (default: predict's default tile)")
    p.add_argument("--author", action="append", help="bioimage.io: an author's name (repeat for several)")
    p.add_argument("--license", default="MIT", help="bioimage.io: the licence, an SPDX id (default MIT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=_export)
    return parser


# The engine's messages name its Python parameters; on the command line the same things are flags.
_FLAGS = {"tile": "--tile", "overlap": "--overlap", "batch_size": "--batch-size", "blend": "--blend",
          "device": "--device", "axes": "--axes", "grey": "--grey", "scheduler": "--scheduler", "model": "--model",
          "output": "--output", "pixel_size": "--pixel-size", "task": "--task", "resume": "--resume",
          "overwrite": "--overwrite", "arch": "--arch", "bands": "--bands", "nodata": "--nodata",
          "tissue": "--tissue-only", "runtime": "--runtime", "precision": "--precision",
          "adapt_to": "--adapt-to", "adapt_weight": "--adapt-weight", "thing_classes": "--thing-classes",
          "adapt_discriminator": "--adapt-discriminator",
          "label_divisor": "--label-divisor", "stuff_area": "--stuff-area", "stuff_regions": "--stuff-regions"}
_POSITIONAL = {"predict": {"out": "OUTPUT", "image": "INPUT"},
               "train": {"out": "--out", "images": "IMAGES", "labels": "LABELS"},
    "convert": {"path": "OUTPUT"},
               "demo": {"out": "--out"}, "export": {"out": "OUTPUT", "model": "MODEL"}}


def _cli_words(message: str, command: str) -> str:
    """``message`` with the Python API's words (```tile```=…, ``pass resume=True``) as the command's flags."""
    import re

    names = {**_FLAGS, **_POSITIONAL.get(command, {})}

    def flag(match: re.Match) -> str:
        word = names.get(match.group(1), match.group(1) if match.group(1).isupper() else None)
        if word is None:
            return match.group(0)
        equals = match.group(2) or ""
        if equals.lower() == "=true":
            return word  # `resume`=True -> --resume
        return word + (("=" if word.startswith("--") else " ") if equals else "")

    message = re.sub(r"`(\w+)`(=true\b|=True\b|=)?", flag, message)
    message = re.sub(r"`(--[\w-]+)`(=)?", lambda m: m.group(1) + (m.group(2) or ""), message)  # already a flag
    return re.sub(r"\b(\w+)=True\b", lambda m: names.get(m.group(1), m.group(0)), message)


def _message(err: BaseException) -> str:
    if isinstance(err, OSError):
        from segarch.destinations import describe_os_error

        return describe_os_error(err)
    return str(err)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        handlers=[handler])
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, OSError) as err:  # one line naming the file and what to do, no traceback
        CONSOLE.line(f"segarch {args.command}: error: {_cli_words(_message(err), args.command)}")
        return 2
    except KeyboardInterrupt:
        CONSOLE.line(f"segarch {args.command}: interrupted.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
