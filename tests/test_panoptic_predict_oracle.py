"""The tiled panoptic path against the whole-image decoding on fresh random scenes of many objects, for both
bottom-up architectures, with an *oracle* network: it returns the training targets of the objects in its input (a
tile), so every difference between tiled and whole-image results would be the tiling's, the blending's or the
block-wise grouping's. With ``blend="crop"`` each pixel comes from the tile it is most central in, where every
object around it lies whole (objects up to 16 pixels, tiles of 64 with overlap 0.5): the tiled heads are exact, and
grouping blocks with a halo larger than every object gives the whole image's objects, each with its class."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch.instances import match
from segarch.instances.deeperlab import DeeperLabDecoder
from segarch.instances.panoptic import PanopticDeepLabDecoder
from segarch.models.model import Model
from panoptic_helpers import OracleHeads, random_scene


@pytest.mark.parametrize("arch", ["panoptic_deeplab", "deeperlab"])
def test_tiled_panoptic_equals_whole_image_on_a_fresh_scene(arch):
    seed = int(np.random.default_rng().integers(1 << 31))
    labels, classes = random_scene(np.random.default_rng(seed))
    oracle = OracleHeads(arch)
    model = Model(oracle, arch, spatial_dims=2, in_channels=2, out_channels=3, preprocessing=[],
                  class_names=["background", "a", "b"])
    image = np.stack([labels, classes]).astype(np.float32)
    options = {"radius": 3, "keypoints_are_logits": False} if arch == "deeperlab" else {}
    result, report = segarch.predict(model, image, axes="CYX", output="panoptic", tile=64, overlap=0.5, blend="crop",
                                     device="cpu", instance_options={"block": 48, "halo": 24, "return_report": True,
                                                                     "decoder_options": options})
    decoder = (DeeperLabDecoder(radius=3, keypoints_are_logits=False) if arch == "deeperlab"
               else PanopticDeepLabDecoder(top_k=None))
    whole = decoder(oracle.heads_for(labels, classes))
    found = result.instances.astype(np.int64)
    assert report["objects"] == int(whole.instances.max()) == int(labels.max()), seed
    assert report["merged_across_seams"] > 0, seed
    matched = match(whole.instances, found, thresholds=(0.99,))
    assert matched.tp[0] == labels.max(), seed  # the same objects, pixel for pixel
    assert np.array_equal(result.classes, whole.semantic), seed  # each object with its class, stuff as stuff
    assert np.array_equal(result.classes, classes), seed
    counts = np.bincount([classes[labels == i][0] for i in range(1, labels.max() + 1)], minlength=3)
    assert report["objects_per_class"] == {"a": int(counts[1]), "b": int(counts[2])}, seed


@pytest.mark.slow  # about 25 s: the oracle's 3D targets per tile
@pytest.mark.parametrize("arch", ["panoptic_deeplab", "deeperlab"])
def test_tiled_panoptic_equals_whole_image_in_3d(arch):
    seed = int(np.random.default_rng().integers(1 << 31))
    labels, classes = random_scene(np.random.default_rng(seed), shape=(40, 72, 72), count=8, sides=(4, 9))
    oracle = OracleHeads(arch, spatial_dims=3)
    model = Model(oracle, arch, spatial_dims=3, in_channels=2, out_channels=3, preprocessing=[],
                  class_names=["background", "a", "b"])
    options = {"radius": 3, "keypoints_are_logits": False} if arch == "deeperlab" else {}
    result, report = segarch.predict(model, np.stack([labels, classes]).astype(np.float32), axes="CZYX",
                                     output="panoptic", tile=32, overlap=0.5, blend="crop", device="cpu",
                                     instance_options={"block": 24, "halo": 12, "return_report": True,
                                                       "decoder_options": options})
    decoder = (DeeperLabDecoder(radius=3, keypoints_are_logits=False) if arch == "deeperlab"
               else PanopticDeepLabDecoder(top_k=None))
    whole = decoder(oracle.heads_for(labels, classes))
    assert result.instances.shape == labels.shape and report["blocks"] == 2 * 3 * 3
    assert report["objects"] == int(whole.instances.max()) == 8, seed
    assert match(whole.instances, result.instances.astype(np.int64), thresholds=(0.99,)).tp[0] == 8, seed
    assert np.array_equal(result.classes, whole.semantic) and np.array_equal(result.classes, classes), seed
