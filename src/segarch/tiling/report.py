"""The run report of a batch ``segarch predict``: one row per input file, as CSV or JSON.

Each row says what happened to a file (``done``, ``complete`` when a rerun found it finished, ``failed``,
``skipped``), the error, the seconds spent, pixels per second, the objects found per class and where the
result is, so a batch over hundreds of scenes can be checked (and re-run) without reading its log.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ReportRow", "write_report", "count_objects", "REPORT_FIELDS"]

REPORT_FIELDS = ("file", "status", "error", "seconds", "pixels_per_s", "objects", "class_pixels", "output")
_MAX_LABEL_PIXELS = 2 ** 26  # connected regions are counted up to this size (in memory); pixels always


@dataclass
class ReportRow:
    """One input file of a batch run."""

    file: str
    status: str
    error: str = ""
    seconds: float | None = None
    pixels_per_s: float | None = None
    objects: dict[str, int] | None = None
    class_pixels: dict[str, int] | None = None
    output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def count_objects(labels, class_names: list[str] | None = None) -> tuple[dict[str, int] | None, dict[str, int]]:
    """``(objects per class, pixels per class)`` of a labels array (NumPy, Zarr or Dask), background left out.

    Pixels are counted chunk by chunk for any size; connected regions (4-connected) up to 2**26 pixels.
    """
    import dask.array as da
    from scipy import ndimage

    arr = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=getattr(labels, "chunks", "auto"))
    counts = np.asarray(da.bincount(arr.ravel().astype(np.int64)).compute())

    def name(v: int) -> str:
        return class_names[v] if class_names and v < len(class_names) else str(v)

    pixels = {name(v): int(n) for v, n in enumerate(counts) if v > 0 and n > 0}
    if arr.size > _MAX_LABEL_PIXELS:
        return None, pixels
    data = np.asarray(arr)
    objects = {}
    for v in np.flatnonzero(counts):
        if v == 0:
            continue
        _, n = ndimage.label(data == v)
        objects[name(int(v))] = int(n)
    return objects, pixels


def write_report(path: str | os.PathLike, rows: list[ReportRow]) -> Path:
    """Write ``rows`` as CSV (``.csv``; dict columns as JSON text) or JSON (``.json``), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"The run report {str(path)!r} must end in .csv or .json.")
    records = [{k: asdict(r)[k] for k in REPORT_FIELDS} for r in rows]
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if suffix == ".json":
            json.dump(records, f, indent=2)
        else:
            writer = csv.DictWriter(f, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            for rec in records:
                writer.writerow({k: json.dumps(v) if isinstance(v, dict) else ("" if v is None else v)
                                 for k, v in rec.items()})
    os.replace(tmp, path)
    return path
