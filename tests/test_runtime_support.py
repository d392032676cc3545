"""The table of which zoo architectures run under ONNX Runtime (``scripts/runtime_support.py``) holds against
reality, and the layers that made PSPNet, SegNet, ENet ... exportable compute what PyTorch's own ops do."""

from __future__ import annotations

import datetime
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segarch
from segarch import zoo
from segarch.layers import exportable
from segarch.runtimes.support import STATUSES, TABLE_FILE, check_entry, entries

pytest.importorskip("onnxruntime")  # the `fast` extra (installed with `testing`)

TABLE = json.loads(TABLE_FILE.read_text())


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))


def test_the_table_lists_every_zoo_entry_once_with_a_known_status():
    rows = TABLE["entries"]
    assert [(r["name"], r["dims"]) for r in rows] == entries()  # regenerate with scripts/runtime_support.py
    for row in rows:
        assert row["status"] in STATUSES
        assert (row["reason"] == "") == (row["status"] == "runs"), row
        if row["status"] == "runs":
            assert row["max_rel_difference"] < 1e-3
        assert row["openvino"]["status"] in STATUSES  # the table was made with OpenVINO installed


def _sample() -> list[tuple[str, int]]:
    """Two cheap entries that run everywhere, picked afresh each day (the same in every pytest-xdist worker, which
    must collect the same tests), and every entry that fails somewhere and is cheap to check."""
    rows = TABLE["entries"]

    def runs_everywhere(row):
        return row["status"] == "runs" and row.get("openvino", {}).get("status", "runs") == "runs"

    cheap = [(r["name"], r["dims"]) for r in rows if runs_everywhere(r) and r["seconds"] < 3]
    failing = [(r["name"], r["dims"]) for r in rows if not runs_everywhere(r) and r["seconds"] < 15]
    return random.Random(datetime.date.today().toordinal()).sample(cheap, 2) + failing


@pytest.mark.parametrize("name,dims", _sample())
def test_the_table_holds_for_a_sample_of_entries(name, dims):
    stored = next(r for r in TABLE["entries"] if (r["name"], r["dims"]) == (name, dims))
    # The table's seed: an entry whose difference is near the tolerance gets the same inputs as the table did.
    fresh = check_entry(name, dims, seed=0)
    assert fresh["status"] == stored["status"], fresh["reason"]
    if "openvino" in fresh:
        assert fresh["openvino"]["status"] == stored["openvino"]["status"], fresh["openvino"]["reason"]


@pytest.mark.parametrize("name", ["pspnet", "segnet", "enet"])
def test_the_once_failing_architectures_give_the_same_labels_under_onnxruntime(name):
    torch.manual_seed(0)
    model = segarch.Model.from_zoo(name, spatial_dims=2, out_channels=3, **zoo.card(name).test_config)
    for module in model.network.modules():  # fresh statistics: logits that differ across the image
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    image = (np.random.default_rng().random((150, 170)) * 255).astype(np.uint8)
    tile = -(-96 // model.size_divisor) * model.size_divisor  # PSPNet's 3- and 6-bin levels do not divide it
    eager = segarch.predict(model, image, tile=tile, device="cpu", runtime="torch", output="probabilities")
    fast = segarch.predict(model, image, tile=tile, device="cpu", runtime="onnxruntime", output="probabilities")
    assert np.abs(fast - eager).max() < 1e-4
    np.testing.assert_array_equal(fast.argmax(0), eager.argmax(0))


@pytest.mark.parametrize("shape,bins", [((2, 3, 17, 23), 6), ((1, 2, 9, 13, 7), 3), ((2, 4, 5, 8), (2, 7))])
def test_the_export_time_adaptive_pooling_is_pytorchs(monkeypatch, shape, bins):
    x = torch.randn(*shape)
    eager = exportable.adaptive_avg_pool(x, bins)
    expected = (F.adaptive_avg_pool2d if x.ndim == 4 else F.adaptive_avg_pool3d)(x, bins)
    torch.testing.assert_close(eager, expected, rtol=0, atol=0)  # eager: PyTorch's own op
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(exportable.adaptive_avg_pool(x, bins), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spatial", [(16, 20), (6, 10, 8)])
def test_the_export_time_max_unpooling_is_pytorchs(monkeypatch, spatial):
    pool = F.max_pool2d if len(spatial) == 2 else F.max_pool3d
    unpool = F.max_unpool2d if len(spatial) == 2 else F.max_unpool3d
    y, indices = pool(torch.randn(2, 3, *spatial), 2, return_indices=True)
    expected = unpool(y, indices, 2, output_size=spatial)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(exportable.MaxUnpool(2)(y, indices, spatial), expected, rtol=0, atol=0)


def test_the_readme_table_is_what_the_script_prints():
    """README.md's table (inside its <details>) is ``python scripts/runtime_support.py --markdown-only``'s."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("runtime_support_script", root / "scripts" / "runtime_support.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table, summary = script.markdown(TABLE["entries"]).split("\n\n")
    readme = (root / "README.md").read_text()
    assert table in readme, "README.md's runtime table is out of date: paste scripts/runtime_support.py's over it"
    counts = summary.split(" entries: ")[1].split(", matching")[0]
    assert counts in readme, f"README.md's runtime summary should say {counts!r}"
