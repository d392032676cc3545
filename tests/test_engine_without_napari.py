"""The engine installs and runs without napari (issue 15, item 6).

napari, magicgui, npe2 and a Qt binding come with the ``napari`` extra; the engine (``segarch``, the
``segarch`` command, Dask workers) needs only its own dependencies. The runtime check hides, in a fresh
interpreter and in every Dask worker it starts, each importable package that the engine's dependencies do
not bring (napari, Qt and everything that came only with them): a module of the engine that needs one of
them fails there, as it would on a cluster worker installed with ``pip install napari-segarch``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
GUI_DISTRIBUTIONS = ("napari", "magicgui", "npe2", "qtpy", "pyqt5", "pyqt6", "pyside2", "pyside6", "vispy", "superqt")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(Requirement(text).name) for text in requirements}


def test_napari_and_qt_are_only_in_the_napari_extra():
    core = _requirement_names(PROJECT["dependencies"])
    assert not core & set(GUI_DISTRIBUTIONS), f"the engine's dependencies bring the GUI: {core}"
    extras = PROJECT["optional-dependencies"]
    napari_extra = {_normalise(Requirement(text).name): Requirement(text) for text in extras["napari"]}
    assert {"napari", "magicgui", "npe2"} <= set(napari_extra)
    # The Qt binding napari defaults to from 0.9 on (napari deprecates PyQt5).
    assert napari_extra["napari"].extras == {"pyqt6"}
    assert "napari-segarch[napari]" in extras["testing"] and "napari-segarch[napari]" in extras["gui"]


def _engine_closure() -> set[str]:
    """The installed distributions the engine's dependencies pull in (markers evaluated, no extras)."""
    seen: set[str] = {"napari-segarch"}
    todo = list(PROJECT["dependencies"])
    while todo:
        requirement = Requirement(todo.pop())
        name = _normalise(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for text in distribution.requires or []:
            sub = Requirement(text)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}) or any(
                    sub.marker.evaluate({"extra": e}) for e in requirement.extras):
                todo.append(text)
    return seen


def _foreign_modules() -> list[str]:
    """Top-level modules installed here only by distributions outside the engine's dependencies."""
    closure = _engine_closure()
    return sorted(module for module, distributions in metadata.packages_distributions().items()
                  if not any(_normalise(d) in closure for d in distributions))


# Hides the modules named in $SEGARCH_HIDDEN_MODULES from this interpreter (``import`` raises
# ModuleNotFoundError, ``importlib.util.find_spec`` answers None). Python runs it at start-up from PYTHONPATH,
# so the Dask worker processes started below hide them too.
SITECUSTOMIZE = """
import json, os, sys
for _name in json.loads(os.environ.get("SEGARCH_HIDDEN_MODULES", "[]")):
    if _name not in sys.modules:
        sys.modules[_name] = None
"""

ENGINE_JOBS = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import numpy as np
    import tifffile
    import zarr

    import segarch
    from segarch.cli import main
    from segarch.samples import nuclei

    tmp = Path(sys.argv[1])
    hidden = []
    for name in ("napari", "magicgui", "npe2", "qtpy", "PyQt5", "PyQt6", "vispy"):
        try:
            __import__(name)
        except ImportError:
            hidden.append(name)
    try:
        import napari_segarch
        plugin = "imported"
    except ImportError as err:
        plugin = str(err)

    image, labels = nuclei((96, 96), seed=int(sys.argv[2]))
    tifffile.imwrite(tmp / "image.tif", image)
    tifffile.imwrite(tmp / "labels.tif", (labels > 0).astype(np.uint8))
    # Training through the command line (MONAI transforms, the loop, the model file).
    trained = main(["train", str(tmp / "image.tif"), str(tmp / "labels.tif"), "--model", "unet", "--options",
                    '{"features": [4, 8]}', "--steps", "3", "--patch", "32", "--batch-size", "2",
                    "--out", str(tmp / "model.safetensors")])
    # Prediction on a Dask cluster of worker processes, through the command line. (A Zarr input: a TIFF input
    # cannot go to a cluster yet, its open file does not pickle.)
    zarr.save_array(str(tmp / "image.zarr"), image)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
            Client(cluster) as client:
        def worker_sees_napari():
            try:
                import napari  # noqa: F401
                return True
            except ImportError:
                return False
        worker_napari = list(client.run(worker_sees_napari).values())
        predicted = main(["predict", str(tmp / "image.zarr"), str(tmp / "labels.zarr"), "--model", "unet.nuclei2d",
                          "--tile", "64", "--scheduler", cluster.scheduler_address])
    local = segarch.predict(segarch.pretrained.load("unet.nuclei2d"), image, axes="YX", tile=64)
    same = bool(np.array_equal(zarr.open_group(str(tmp / "labels.zarr"), mode="r")["0"][:], local))
    leaked = sorted(m for m in ("napari", "qtpy", "PyQt5", "PyQt6", "magicgui") if sys.modules.get(m))
    print(json.dumps(dict(hidden=hidden, plugin=plugin, trained=trained, predicted=predicted,
                          worker_napari=worker_napari, same=same, foreground=float((local > 0).mean()),
                          model_file=(tmp / "model.safetensors").is_file(), leaked=leaked)))
""")


@pytest.mark.slow
def test_engine_trains_and_predicts_on_a_cluster_with_napari_and_qt_absent(tmp_path):
    hidden = _foreign_modules()
    assert {"napari", "magicgui", "npe2"} <= set(hidden), "napari is not installed here: nothing to hide"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, SEGARCH_HIDDEN_MODULES=json.dumps(hidden),
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    seed = int.from_bytes(os.urandom(2), "little")
    result = subprocess.run([sys.executable, "-c", ENGINE_JOBS, str(work), str(seed)], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, f"seed {seed}:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The packages really were absent, in the main process and in the worker process.
    assert report["hidden"] == ["napari", "magicgui", "npe2", "qtpy", "PyQt5", "PyQt6", "vispy"]
    assert report["worker_napari"] == [False]
    assert report["leaked"] == []
    # The engine's jobs ran: training wrote its model, the cluster's labels equal the in-process ones.
    assert report["trained"] == 0 and report["model_file"]
    assert report["predicted"] == 0 and report["same"], f"seed {seed}"
    assert 0.05 < report["foreground"] < 0.9, f"seed {seed}: the shipped model found {report['foreground']:.2f}"
    # The plugin says what to install instead of failing deep inside a widget.
    assert 'pip install "napari-segarch[napari]"' in report["plugin"] and "napari" in report["plugin"]
