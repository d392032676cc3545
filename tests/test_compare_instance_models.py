"""scripts/compare_instance_models.py: the scoring path on hand-made segmentations of fresh generated nuclei
(exact values), and the side-by-side comparison of the shipped model through predict_instances."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import compare_instance_models as cmp  # noqa: E402
from segarch.instances import match  # noqa: E402
from segarch.synthetic import samples  # noqa: E402


@pytest.fixture
def test_draw():
    seed = int(np.random.default_rng().integers(10_000, 1_000_000))
    return samples(3, (96, 96), seed=seed, hard=True)


def _drop_every_other(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)[1:]
    return np.where(np.isin(labels, ids[::2]), labels, 0)


def test_score_of_perfect_and_half_segmentations(test_draw):
    lookup = {id(s.image): s.labels for s in test_draw}
    perfect = cmp.score(lambda image, spacing: lookup[id(image)], test_draw)
    n_true = sum(len(np.unique(s.labels)) - 1 for s in test_draw)
    assert perfect["n_true"] == perfect["n_pred"] == n_true
    assert perfect["f1@0.5"] == perfect["mean_ap"] == perfect["precision@0.5"] == perfect["recall@0.5"] == 1.0

    half = cmp.score(lambda image, spacing: _drop_every_other(lookup[id(image)]), test_draw)
    kept = sum(len(np.unique(_drop_every_other(s.labels))) - 1 for s in test_draw)
    assert half["n_pred"] == kept and half["precision@0.5"] == 1.0
    assert half["recall@0.5"] == pytest.approx(kept / n_true, abs=1e-4)
    assert half["f1@0.5"] == pytest.approx(2 * kept / (kept + n_true), abs=1e-4)
    # The size groups partition the images: their objects add up to all of them.
    assert sum(g["n_true"] for g in half["by_size"].values()) == n_true
    assert sum(g["n_pred"] for g in half["by_size"].values()) == kept

    nothing = cmp.score(lambda image, spacing: np.zeros_like(lookup[id(image)]), test_draw)
    assert nothing["n_pred"] == 0 and nothing["recall@0.5"] == 0.0 and nothing["f1@0.5"] == 0.0

    text = cmp.table({"perfect": perfect, "half": half})
    first = text.splitlines()[0]
    assert "perfect" in first and "half" in first
    f1_line = next(line for line in text.splitlines() if line.strip().startswith("F1@0.5"))
    assert f1_line.split()[1:] == ["1.000", f"{half['f1@0.5']:.3f}"]


def test_compare_scores_the_shipped_model_on_one_draw():
    import segarch
    from segarch.instances import predict_instances

    seed = int(np.random.default_rng().integers(10_000, 1_000_000))
    model = segarch.pretrained.load(cmp.SHIPPED)
    results = cmp.compare({"shipped": model}, 1, (128, 128), seed)
    (s,) = samples(1, (128, 128), seed=seed, hard=True)
    direct = match(s.labels, predict_instances(model, s.image, pixel_size=s.spacing, device="cpu")).summary()
    assert {k: results["shipped"][k] for k in direct} == direct
    assert results["shipped"]["f1@0.5"] > 0.3  # the shipped model finds nuclei (0.77 on its card's test draw)
