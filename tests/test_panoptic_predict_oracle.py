"""The tiled panoptic path against the whole-image decoding on fresh random scenes of many objects, for both
bottom-up architectures, with an *oracle* network: it returns the training targets of the objects in its input (a
tile), so every difference between tiled and whole-image results would be the tiling's, the blending's or the
block-wise grouping's. With ``blend="crop"`` each pixel comes from the tile it is most central in, where every
object around it lies whole (objects up to 16 pixels, tiles of 64 with overlap 0.5): the tiled heads are exact, and
grouping blocks with a halo larger than every object gives the whole image's objects, each with its class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segarch
from segarch import zoo
from segarch.instances import match
from segarch.instances.deeperlab import DeeperLabDecoder, keypoint_targets
from segarch.instances.panoptic import PanopticDeepLabDecoder, center_offset_targets
from segarch.models.model import Model


class OracleHeads(torch.nn.Module):
    """Input ``(B, 2, *S)``: instance ids and their classes; output: the heads of ``arch`` made from them (semantic
    logits ±10, targets for the rest), as the architecture's network returns them."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        real = zoo.create(arch, in_channels=2, out_channels=3, **zoo.card(arch).test_config)
        self.arch, self.heads, self.spatial_dims, self.size_divisor = arch, real.heads, 2, real.size_divisor
        self.scale = torch.nn.Parameter(torch.ones(()))  # a weight for the provenance's hash

    def forward(self, x):
        outs = [self._one(np.rint(x[i, 0].numpy()).astype(np.int64), np.rint(x[i, 1].numpy()).astype(np.int64))
                for i in range(x.shape[0])]
        return {h.name: torch.from_numpy(np.stack([o[h.name] for o in outs])).float() for h in self.heads}

    def _one(self, labels, classes):
        labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # ids 1..n within the tile
        semantic = 20 * np.stack([classes == c for c in range(3)]).astype(np.float32) - 10
        if self.arch == "deeperlab":
            return {"semantic": semantic, **keypoint_targets(labels, radius=3)}
        center, offset = center_offset_targets(labels, sigma=2)
        return {"semantic": semantic, "center": center, "offset": offset}


def random_scene(rng, size=160, count=14):
    labels = np.zeros((size, size), np.int64)
    classes = np.zeros_like(labels)
    placed = 0
    while placed < count:
        side = int(rng.integers(6, 15))
        y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if labels[max(0, y - 4):y + side + 4, max(0, x - 4):x + side + 4].any():
            continue
        placed += 1
        labels[y:y + side, x:x + side] = placed
        classes[y:y + side, x:x + side] = int(rng.integers(1, 3))
    return labels, classes


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
    whole = decoder(oracle._one(labels, classes))
    found = result.instances.astype(np.int64)
    assert report["objects"] == int(whole.instances.max()) == int(labels.max()), seed
    assert report["merged_across_seams"] > 0, seed
    matched = match(whole.instances, found, thresholds=(0.99,))
    assert matched.tp[0] == labels.max(), seed  # the same objects, pixel for pixel
    assert np.array_equal(result.classes, whole.semantic), seed  # each object with its class, stuff as stuff
    assert np.array_equal(result.classes, classes), seed
    counts = np.bincount([classes[labels == i][0] for i in range(1, labels.max() + 1)], minlength=3)
    assert report["objects_per_class"] == {"a": int(counts[1]), "b": int(counts[2])}, seed
