"""One catalogue decides which model a user meant (segarch.models): the zoo, shipped weights (ARCH.TAG), this
session's models and model files, resolved in one place by the CLI, train, segment_from_points and the docks."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import segarch
from segarch import models
from segarch.models import SESSION, ModelRef


@pytest.fixture
def session():
    SESSION.clear()
    yield SESSION
    SESSION.clear()


@pytest.mark.parametrize("text, kind, name", [
    ("unet", "zoo", "unet"),
    ("dextr_light", "zoo", "dextr_light"),            # an architecture's name is the architecture, always
    ("unet.nuclei2d", "shipped", "unet.nuclei2d"),
    ("dextr_light.objects3d", "shipped", "dextr_light.objects3d"),
    ("zoo:unet", "zoo", "unet"),
    ("shipped:dextr_light.objects2d", "shipped", "dextr_light.objects2d"),
    ("cells.safetensors", "file", "cells.safetensors"),
    ("weights/w", "file", "weights/w"),
    ("file:w.pt", "file", "w.pt"),
    ("file:", "file", ""),
])
def test_one_reading_of_every_reference(text, kind, name):
    ref = models.parse(text)
    assert ref == ModelRef(kind, name)
    assert models.parse(str(ref)) == ref and models.parse(ref.text) == ref  # canonical and short text read back
    assert models.parse(Path("w.safetensors")) == ModelRef("file", "w.safetensors")


def test_session_models_are_references_too(session):
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16))
    name = session.add("unet 2D", model)
    ref = models.parse(f"session:{name}")
    assert ref.text == "session:unet 2D" and models.resolve(ref) is model
    assert models.describe(ref).task == "semantic"
    assert ref in models.choices(task="semantic") and ref not in models.choices(task="interactive")
    with pytest.raises(ValueError, match=r"No model 'other' in this session \(there: 'unet 2D'\)"):
        models.parse("session:other")


def test_choices_are_one_list_in_one_order(session):
    semantic = models.choices(task="semantic")
    kinds = [ref.kind for ref in semantic]
    assert kinds == sorted(kinds, key=models.KINDS.index)  # shipped, session, file, zoo
    assert ModelRef("shipped", "unet.nuclei2d") in semantic and ModelRef("file", "") in semantic
    assert ModelRef("zoo", "unet") in semantic and ModelRef("zoo", "spade") not in semantic  # a generator
    assert all(r.kind != "shipped" or r.name.startswith("unet.") for r in semantic)
    clickers = models.choices(task="interactive", kinds=("shipped", "session"))
    assert [str(r) for r in clickers] == ["shipped:dextr_light.clicks2d", "shipped:dextr_light.clicks3d",
                                         "shipped:dextr_light.objects2d", "shipped:dextr_light.objects3d"]
    assert [r.name for r in models.choices(task="semantic", kinds=("shipped",), dims=3)] == ["unet.nuclei3d"]
    assert segarch.zoo.card("spade").task == "generator" and "spade" not in segarch.zoo.names(task="semantic")


def test_resolve_gives_models_and_checks_what_the_caller_needs(tmp_path):
    shipped = models.resolve("unet.nuclei2d")
    assert shipped.trained and shipped.name == "unet.nuclei2d"
    fresh = models.resolve("unet", in_channels=3, features=(4, 8, 16))
    assert not fresh.trained and fresh.in_channels == 3
    path = segarch.save_model(fresh, tmp_path / "fresh.safetensors")
    assert models.resolve(str(path)).in_channels == 3 and models.resolve(path).arch == "unet"
    with pytest.raises(ValueError, match=r"'dextr_light' names an architecture: a new, untrained network.*"
                                         r"'dextr_light.objects2d'"):
        models.resolve("dextr_light", trained=True)
    with pytest.raises(ValueError, match="must be an extreme-point .*'unet.nuclei2d' is a semantic model"):
        models.resolve("unet.nuclei2d", task="interactive")
    with pytest.raises(ValueError, match=r"`model`='unet.nuclei_2d' is not .* Did you mean 'unet.nuclei2d'"):
        models.resolve("unet.nuclei_2d")


def test_dextr_light_means_the_architecture_everywhere():
    from segarch.prompts import extreme_points, object_scene, segment_from_points

    image, truth = object_scene((64, 64), seed=5)
    points = extreme_points(truth == 1)
    with pytest.raises(ValueError, match="names an architecture.*'dextr_light.objects2d'"):
        segment_from_points("dextr_light", image, points)
    assert segment_from_points("dextr_light.objects2d", image, points).shape == image.shape
    shipped = segarch.pretrained.load("dextr_light.objects2d")
    with pytest.warns(FutureWarning, match="names the architecture: a new network is trained.*'dextr_light.objects2d'"):
        new = segarch.train("dextr_light", [image], [truth], steps=1, batch_size=2)
    assert new.description.startswith("Trained with segarch.train")  # not "Fine-tuned from"
    same = {k: torch.equal(v, shipped.network.state_dict()[k]) for k, v in new.network.state_dict().items()
            if k in shipped.network.state_dict() and v.shape == shipped.network.state_dict()[k].shape}
    assert not all(same.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # options (even {}) say "a new network": no warning
        segarch.train("dextr_light", [image], [truth], steps=1, batch_size=2, options={"features": [4, 8, 16, 32]})


def test_former_shipped_names_resolve_with_a_warning():
    with pytest.warns(FutureWarning, match="'nuclei3d' is deprecated: use 'unet.nuclei3d'"):
        assert models.parse("nuclei3d") == ModelRef("shipped", "unet.nuclei3d")
    with pytest.warns(FutureWarning, match="'dextr_light3d' is deprecated: use 'dextr_light.objects3d'"):
        assert models.resolve("dextr_light3d").name == "dextr_light.objects3d"


def test_the_old_modules_still_work_and_warn():
    import segarch.model
    import segarch.model_file

    with pytest.warns(FutureWarning, match="segarch.model.Model is deprecated: use segarch.models.Model"):
        assert segarch.model.Model is segarch.Model
    with pytest.warns(FutureWarning,
                      match="segarch.model_file.load_model is deprecated: use segarch.models.load_model"):
        assert segarch.model_file.load_model is segarch.load_model
    with pytest.warns(FutureWarning, match="resolve_model is deprecated: use segarch.models.resolve"):
        resolve_model = segarch.model_file.resolve_model
    with pytest.warns(FutureWarning, match="'dextr_light' is deprecated: use 'dextr_light.objects2d'"):
        assert resolve_model("dextr_light").trained  # what the name meant there: the shipped model
    assert resolve_model("unet", features=(4, 8, 16)).arch == "unet"
    import segarch.pretrained

    assert segarch.pretrained is models.pretrained  # one module under its first name, no warning


def test_bare_modules_become_models_at_the_door():
    from segarch.nets.dextr import DEXTRLight

    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(4, 3, 1))
    model = models.as_model(net, out_channels=3)
    assert (model.arch, model.spatial_dims, model.in_channels, model.out_channels) == ("Sequential", 3, 2, 3)
    assert model.preprocessing == [] and model.trained and model.task == "semantic" and model.size_divisor == 1
    clicker = models.as_model(DEXTRLight(2, 2, 2, features=(4, 8)), out_channels=2)
    assert clicker.arch == "dextr_light" and clicker.task == "interactive" and clicker.size_divisor == 2
    with pytest.raises(ValueError, match="`out_channels` is needed"):
        models.as_model(net)
    with pytest.raises(ValueError, match="must be a segarch.Model or a torch.nn.Module"):
        models.as_model(np.zeros(3))


def test_listing_trained_models_imports_no_torch():
    # The Extreme points dock lists its models on the GUI thread: from the cards, without torch or the zoo.
    code = ("import sys\nfrom segarch.models import catalog\n"
            "refs = catalog.choices(task='interactive', kinds=('shipped', 'session'))\n"
            "assert [catalog.describe(r).spatial_dims for r in refs] == [2, 3, 2, 3], refs\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
