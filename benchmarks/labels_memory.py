"""The Extreme points widget's labels layer on a huge slide: single-level Zarr store against a multiscale one.

For each kind, in a fresh process (a real napari viewer, shown; run under ``xvfb-run`` without a display): an empty
Zarr labels store of ``--size``² (``LabelStore.create``, ``multiscale=False`` / ``True``) is opened as the widget opens
it (``viewer.add_labels``, multiscale for the pyramid), and the peak resident memory above the process's before the
layer is printed, and what it still holds after. Then ``--objects`` discs (radius 20–28) are painted one by one
through the store as the widget paints them (single level: written through napari's ``Labels.data_setitem``;
multiscale: every level updated, then ``napari_segarch._labels_redraw.redraw_region``), median time per object.
For the multiscale layer it also times, per object, that partial redraw against ``Labels.refresh()`` (napari 0.9's
only refresh for a multiscale Labels layer: the whole shown tile read again), on the overview and zoomed in. Times
are of the calls (the canvas repaint that follows, Qt's event loop, is not in them).
Prints the ratios single ÷ multiscale (memory) and multiscale ÷ single (time per object).

Over napari's largest texture (16384² here) the single-level layer shows a downsampled texture, and napari's
partial update then refreshes the whole layer: every object reads the whole plane again (seconds per object at
20000²); ``--size 4000`` compares the write cost where napari's partial update of one level works.

The single-level layer reads the whole plane (20000²: 1.5 GiB of uint32, several times that at its peak): the run
refuses it when the machine has less than 6× the plane's size available (``--single-size`` measures it smaller).

Run: ``xvfb-run -a python benchmarks/labels_memory.py [--size 20000] [--single-size 20000] [--objects 20]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = r"""
import json, os, sys, threading, time
import numpy as np
from qtpy.QtWidgets import QApplication
import napari
from segarch.prompts.label_store import LabelStore
from napari_segarch._labels_redraw import redraw_region

size, multiscale, objects, path = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)

def settle():
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)

viewer = napari.Viewer(show=True)
settle()
store = LabelStore.create(path, (size, size), multiscale=multiscale)
before = peak[0] = rss()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
layer = viewer.add_labels(store.levels if multiscale else store.array, multiscale=multiscale, name="objects")
settle()
stop.set()
thread.join()
opened = {"peak_mib": (max(peak[0], rss()) - before) / 2 ** 20, "held_mib": (rss() - before) / 2 ** 20,
          "shown_mib": layer._slice.image.raw.nbytes / 2 ** 20}
if multiscale:
    store = LabelStore(list(layer.data), changed=lambda box: redraw_region(layer, box))
else:
    store = LabelStore(layer.data, write=layer.data_setitem)
rng = np.random.default_rng(0)
times, redraw, refresh = [], {"overview": [], "zoomed": []}, {"overview": [], "zoomed": []}
for n in range(objects):
    r = int(rng.integers(20, 29))
    y, x = (int(v) for v in rng.integers(r + 8, size - r - 8, 2))
    yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
    mask = yy ** 2 + xx ** 2 <= r * r
    view = "zoomed" if n % 2 else "overview"
    if multiscale:  # the camera on the object (level 0) or the whole slide (a coarse level)
        viewer.camera.center = (y, x) if view == "zoomed" else (size / 2, size / 2)
        viewer.camera.zoom = 2.0 if view == "zoomed" else 0.8 * 600 / size
        settle()
    t = time.perf_counter()
    store.paint(mask, (y - r, x - r))
    times.append(time.perf_counter() - t)
    QApplication.processEvents()
    if multiscale:
        box = store.history[-1].box
        t = time.perf_counter()
        redraw_region(layer, box)
        redraw[view].append(time.perf_counter() - t)
        QApplication.processEvents()
        t = time.perf_counter()
        layer.refresh()
        refresh[view].append(time.perf_counter() - t)
        QApplication.processEvents()
out = {"opened": opened, "write_s": float(np.median(times)), "levels": len(store.levels)}
if multiscale:
    out["redraw_s"] = {k: float(np.median(v)) for k, v in redraw.items()}
    out["refresh_s"] = {k: float(np.median(v)) for k, v in refresh.items()}
print("RESULT " + json.dumps(out))
viewer.close()
"""


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _run(size: int, multiscale: bool, objects: int, folder: Path) -> dict:
    path = folder / f"{'levels' if multiscale else 'single'}_{size}.zarr"
    done = subprocess.run([sys.executable, "-c", RUN, str(size), "1" if multiscale else "0", str(objects), str(path)],
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the {'multiscale' if multiscale else 'single-level'} run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="the slide's side in pixels (multiscale run)")
    parser.add_argument("--single-size", type=int, default=None, help="the single-level run's side (default: --size)")
    parser.add_argument("--objects", type=int, default=20)
    args = parser.parse_args(argv)
    single_size = args.single_size or args.size
    need = 6 * single_size ** 2 * 4
    if _available_bytes() < need:
        raise SystemExit(f"The single-level layer of {single_size}² would need about {need / 2 ** 30:.1f} GiB at its "
                         f"peak; {_available_bytes() / 2 ** 30:.1f} GiB are available. Pass a smaller --single-size.")
    with tempfile.TemporaryDirectory() as folder:
        levels = _run(args.size, True, args.objects, Path(folder))
        single = _run(single_size, False, args.objects, Path(folder))
    print(f"labels layer of an empty store, {args.objects} objects painted through it")
    for name, size, r in (("single-level", single_size, single), (f"multiscale ({levels['levels']} levels)",
                                                                  args.size, levels)):
        o = r["opened"]
        print(f"  {name:26s} {size}²: opening peak {o['peak_mib']:8.1f} MiB, held {o['held_mib']:8.1f} MiB, shown "
              f"tile {o['shown_mib']:7.1f} MiB; write per object {r['write_s'] * 1000:6.1f} ms (median)")
    ratio = single["opened"]["peak_mib"] / max(levels["opened"]["peak_mib"], 0.1)
    print(f"opening peak memory, single-level ÷ multiscale: ×{ratio:.1f}"
          + ("" if single_size == args.size else f" (single-level at {single_size}², multiscale at {args.size}²)"))
    print(f"write time per object, multiscale ÷ single-level: ×{levels['write_s'] / single['write_s']:.3g}")
    for view in ("overview", "zoomed"):
        a, b = levels["redraw_s"][view], levels["refresh_s"][view]
        print(f"multiscale redraw after a write ({view}): region {a * 1000:.2f} ms, Labels.refresh() {b * 1000:.2f} ms "
              f"(median), refresh ÷ region ×{b / a:.1f}")


if __name__ == "__main__":
    main()
