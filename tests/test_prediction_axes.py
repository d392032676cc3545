"""What predict returns says what it is: its axes follow one rule (segarch.axes.output_axes), in the order
OME-NGFF requires (T, C, then space), and the image's pixel size reaches the stored result's metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import segarch
from segarch.axes import output_axes


@pytest.mark.parametrize("axes, dims, output, expected", [
    ("YX", 2, "probabilities", "CYX"),
    ("ZYX", 2, "probabilities", "CZYX"),      # a 2D model over a stack: was ZCYX, which NGFF forbids
    ("TZYX", 2, "probabilities", "TCZYX"),
    ("TCZYX", 3, "probabilities", "TCZYX"),
    ("ZYXC", 2, "labels", "ZYX"),
    ("TZYX", 2, "labels", "TZYX"),
])
def test_output_axes(axes, dims, output, expected):
    assert output_axes(axes, dims, output) == expected


def test_probabilities_of_a_stack_are_stored_in_ngff_order_with_the_image_pixel_size(tmp_path):
    rng = np.random.default_rng()
    torch.manual_seed(int(rng.integers(1 << 30)))
    net = torch.nn.Conv2d(1, 3, 3, padding=1).eval()
    model = segarch.models.as_model(net, out_channels=3)
    stack = rng.normal(size=(2, 4, 40, 36)).astype(np.float32)
    image = tmp_path / "stack.zarr"
    segarch.io.write_ome_zarr(image, stack, axes="TZYX", scale=(1.0, 2.5, 0.4, 0.4))
    out = segarch.predict(model, str(image), tile=32, overlap=4, blend="crop", output="probabilities",
                          out=tmp_path / "probs.zarr")
    assert out.shape == (2, 3, 4, 40, 36)  # T, C, Z, Y, X
    with torch.inference_mode():
        for t in range(2):
            for z in range(4):
                expected = torch.softmax(net(torch.from_numpy(stack[t, z])[None, None]), 1)[0].numpy()
                np.testing.assert_allclose(out[t, :, z], expected, atol=1e-5)
    meta = zarr.open_group(str(tmp_path / "probs.zarr"), mode="r").attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in meta["axes"]] == list("tczyx")
    scale = meta["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-2:] == [0.4, 0.4]  # the image's pixel size, carried through
