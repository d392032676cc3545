"""The shipped instance models: carded, loadable as instance models, and as good on fresh generated nuclei as
their cards say, used as a user would (``predict_instances`` on a generated image, the decoder from the file)."""

from __future__ import annotations

import numpy as np
import pytest

from segarch import pretrained
from segarch.instances import match, match_many, predict_instances
from segarch.synthetic import samples

INSTANCE_MODELS = ("unet.nuclei2d_instances", "unet.nuclei3d_instances")
#: Fresh images differ from the card's test set (each image draws its own conditions, and the hardest ones
#: pull the pooled F1 down): the card's F1@0.5 minus this must hold on them.
MARGIN = 0.08
#: The 3D model's volumes spread far more (0.32-0.85 per volume on its card) and its test draws only 3.
MARGIN_3D = 0.15


@pytest.mark.parametrize("name", INSTANCE_MODELS)
def test_instance_cards_and_files(name):
    assert name in pretrained.names()
    card = pretrained.card(name)
    assert card["name"] == name and card["task"] == "instance"  # a zoo U-Net, trained on a decoder's targets
    model = pretrained.load(name)
    assert model.trained and model.instance == card["instance"] and model.instance["decoder"] == "distance"
    assert model.class_names == card["classes"] and model.num_parameters == card["parameters"]
    assert model.pixel_size == pytest.approx(card["pixel_size"]) and len(model.pixel_size) == model.spatial_dims
    assert pretrained.path(name).stat().st_size < 5 * 2 ** 20  # a few MB at most
    test = card["test"]
    assert 0 < test["mean_ap"] < test["f1@0.5"] <= 1 and test["n_true"] > 100
    assert sum(test["errors"].values()) > 0 and len(test["per_image"]) == test["images"]
    parts = test["by_size"].values()  # the images of the smallest nuclei, and the others, scored apart
    assert sum(p["images"] for p in parts) == test["images"] and sum(p["n_true"] for p in parts) == test["n_true"]
    assert min(p["f1@0.5"] for p in parts) <= test["f1@0.5"] <= max(p["f1@0.5"] for p in parts)
    assert card["training"]["seconds"] < 3600 and card["script"] == "scripts/train_instances.py"


@pytest.mark.parametrize("name, n, shape", [("unet.nuclei2d_instances", 8, (256, 256)),
                                             ("unet.nuclei3d_instances", 3, (40, 128, 128))])
def test_shipped_instance_models_reach_their_stated_f1_on_fresh_data(name, n, shape):
    model = pretrained.load(name)
    stated = pretrained.card(name)["test"]["f1@0.5"]
    drawn = samples(n, shape, seed=777, hard=True)  # seeds used neither for training nor for the card
    # Each image at its own pixel size (3D: Z spacing 1-3x XY), resampled to the model's as a user gets it.
    preds = [predict_instances(model, s.image, pixel_size=s.spacing, device="cpu") for s in drawn]
    assert all(p.dtype == np.uint32 and p.shape == s.labels.shape for p, s in zip(preds, drawn))
    f1 = match_many([s.labels for s in drawn], preds).f1(0.5)
    margin = MARGIN_3D if model.spatial_dims == 3 else MARGIN
    assert f1 >= stated - margin, f"{name}: F1@0.5 {f1:.3f} on fresh data, the card states {stated:.3f}"


def test_the_demo_image_comes_out_one_label_per_nucleus():
    # The demo's own generated image (segarch.samples.nuclei), as `segarch demo` would draw it.
    from segarch.samples import nuclei

    image, truth = nuclei((256, 256), seed=5)
    labels = predict_instances(pretrained.load("unet.nuclei2d_instances"), image, device="cpu")
    scores = match(truth, labels)
    assert scores.f1(0.5) > 0.8, scores.summary()
    assert abs(int(labels.max()) - scores.n_true) <= 0.2 * scores.n_true  # about one label per nucleus


def test_the_3d_model_records_its_voxel_size_and_the_3d_demo_resamples_to_it(capsys):
    from segarch.cli import main

    model = pretrained.load("unet.nuclei3d_instances")
    assert model.spatial_dims == 3 and model.pixel_size == pytest.approx([2.0, 1.0, 1.0])  # Z step twice XY
    assert main(["demo", "--dims", "3", "--size", "64", "--device", "cpu"]) == 0  # no --model: the shipped one
    out = capsys.readouterr().out
    assert "resampled the image from pixel size (1, 1, 1) (pixel_size=) to the model's (2, 1, 1)" in out
    found = int(out.split("instances: uint32 (64, 64, 64); ")[1].split(" objects")[0])
    generated = int(out.split(" objects (")[1].split(" generated")[0])
    f1 = float(out.split("F1 at IoU 0.5 against the generated truth: ")[1].split(" ")[0])
    # The shipped 3D model is weak (its card: F1@0.5 0.48 on hard volumes; the demo volume, seed 0, scores 0.50):
    # these bounds hold what it does, with margin, not the target.
    assert f1 > 0.2 and 0.4 * generated <= found <= 1.3 * generated
